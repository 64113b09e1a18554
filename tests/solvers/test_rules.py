"""Update rules against float64 references of Caffe's ApplyUpdate, and where torch.optim differs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim import adadelta, adagrad, adam, rmsprop, sgd

from pipeline.errors import ConfigError
from pipeline.proto import caffe_pb2
from pipeline.registry import SOLVERS
from pipeline.solvers import rules

SHAPES = [(3, 4), (4,), (2, 2, 2)]
LR_MULTS = [1.0, 2.0, 0.0]  # the last parameter is frozen (lr_mult: 0)
DECAY_MULTS = [1.0, 0.0, 1.0]
HYPER = dict(momentum=0.9, momentum2=0.999, delta=1e-8, rms_decay=0.98)


def f(x):
    return float(np.float32(x))


# ----------------------------------------------------- float64 reference
def reference(kind, ws, grads_per_iter, rates, *, wd=0.01, reg="L2", clip=-1.0, iter_size=1, **hp):
    """Caffe's ApplyUpdate in float64: clip, normalize, regularize, rule, w -= update."""
    ws = [w.astype(np.float64) for w in ws]
    n = len(ws)
    slots = 2 if kind in ("AdaDelta", "Adam") else 1
    hist = [np.zeros_like(w) for _ in range(slots) for w in ws]
    m, m2, delta, d = (f(hp[k]) for k in ("momentum", "momentum2", "delta", "rms_decay"))
    for it, (gs, rate) in enumerate(zip(grads_per_iter, rates)):
        gs = [g.astype(np.float64) for g in gs]
        if clip >= 0:
            norm = np.sqrt(sum((g**2).sum() for g in gs))
            if norm > clip:
                gs = [g * clip / norm for g in gs]
        gs = [g / iter_size for g in gs]
        for i in range(n):
            local = f(wd) * DECAY_MULTS[i]
            gs[i] = gs[i] + local * (ws[i] if reg == "L2" else np.sign(ws[i]))
        for i in range(n):
            g, lr = gs[i], rate * LR_MULTS[i]
            if kind == "SGD":
                hist[i] = m * hist[i] + lr * g
                step = hist[i]
            elif kind == "Nesterov":
                old = hist[i]
                hist[i] = m * old + lr * g
                step = (1 + m) * hist[i] - m * old
            elif kind == "AdaGrad":
                hist[i] = hist[i] + g * g
                step = lr * g / (np.sqrt(hist[i]) + delta)
            elif kind == "RMSProp":
                hist[i] = (1 - d) * g * g + d * hist[i]
                step = lr * g / (np.sqrt(hist[i]) + delta)
            elif kind == "AdaDelta":
                hist[i] = (1 - m) * g * g + m * hist[i]
                upd = g * np.sqrt((hist[n + i] + delta) / (hist[i] + delta))
                hist[n + i] = (1 - m) * upd * upd + m * hist[n + i]
                step = lr * upd
            elif kind == "Adam":
                t = it + 1
                hist[i] = (1 - m) * g + m * hist[i]
                hist[n + i] = (1 - m2) * g * g + m2 * hist[n + i]
                corr = np.sqrt(1 - m2**t) / (1 - m**t)
                step = lr * corr * hist[i] / (np.sqrt(hist[n + i]) + delta)
            ws[i] = ws[i] - step
    return ws, hist


def run_ours(kind, ws, grads_per_iter, rates, *, wd=0.01, reg="L2", clip=-1.0, iter_size=1, **hp):
    rule = SOLVERS.get(kind)
    params = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float32)) for w in ws]
    hist = [torch.zeros_like(p.detach()) for _ in range(rule.history_per_param) for p in params]
    p = caffe_pb2.SolverParameter(**{k: v for k, v in hp.items()})
    for it, (gs, rate) in enumerate(zip(grads_per_iter, rates)):
        grads = [torch.tensor(g, dtype=torch.float32) for g in gs]
        rules.apply_update(rule, params, grads, hist, rate=f(rate), lr_mults=LR_MULTS, decay_mults=DECAY_MULTS,
                           weight_decay=wd, regularization_type=reg, clip=clip, iter_size=iter_size,
                           hyper=rule.hyperparameters(p, it))
    return [q.detach().numpy() for q in params], [h.numpy() for h in hist]


def problem(iters=6, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    grads = [[(scale * rng.normal(size=s)).astype(np.float32) for s in SHAPES] for _ in range(iters)]
    return ws, grads


RATES = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]  # a step schedule: the rate drops mid-run


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
@pytest.mark.parametrize("reg", ["L2", "L1"])
def test_rule_matches_caffes_formula_with_an_lr_change_mid_run(kind, reg):
    hp = dict(HYPER)
    if kind in ("AdaGrad", "RMSProp"):
        hp["momentum"] = 0.0
    if kind == "AdaDelta":
        hp["momentum"], hp["delta"] = 0.95, 1e-6
    ws, grads = problem()
    rates = [1.0] * 6 if kind == "AdaDelta" else RATES
    ours_w, ours_h = run_ours(kind, ws, grads, rates, reg=reg, **hp)
    ref_w, ref_h = reference(kind, ws, grads, rates, reg=reg, **hp)
    for a, b in zip(ours_w, ref_w):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    for a, b in zip(ours_h, ref_h):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(ours_w[2], ws[2])  # lr_mult 0: frozen under every rule
    assert not np.array_equal(ours_w[0], ws[0])  # it did move


def test_frozen_parameter_is_unchanged_though_it_decays():
    ws, grads = problem()
    for kind in ("SGD", "Adam"):
        out, hist = run_ours(kind, ws, grads, RATES, **HYPER)
        np.testing.assert_array_equal(out[2], ws[2])  # lr_mult 0
        if kind == "Adam":  # Caffe still runs the rule on it: the moments see the decay
            assert np.abs(hist[2]).sum() > 0


def torch_optim(kind, ws, grads, lr_of, *, momentum=0.9, beta2=0.999, eps=1e-8, alpha=0.98):
    """torch.optim's update (the functional form its optimizer classes call), one parameter at a
    time so each can have its own rate ``lr_of(it, i)``; no weight decay."""
    params = [torch.tensor(w) for w in ws]
    states = [{"buf": [None], "a": torch.zeros_like(p), "b": torch.zeros_like(p), "step": torch.tensor(0.0)}
              for p in params]
    for it, gs in enumerate(grads):
        for i, (p, g, st) in enumerate(zip(params, gs, states)):
            g, lr, common = torch.tensor(g), lr_of(it, i), dict(weight_decay=0.0, maximize=False)
            if kind in ("SGD", "Nesterov"):
                sgd.sgd([p], [g], st["buf"], momentum=momentum, lr=lr, dampening=0.0, nesterov=kind == "Nesterov",
                        **common)
            elif kind == "AdaGrad":
                adagrad.adagrad([p], [g], [st["a"]], [st["step"]], lr=lr, lr_decay=0.0, eps=eps, **common)
            elif kind == "RMSProp":
                rmsprop.rmsprop([p], [g], [st["a"]], [], [], [st["step"]], lr=lr, alpha=alpha, eps=eps,
                                weight_decay=0.0, momentum=0.0, centered=False)
            elif kind == "AdaDelta":
                adadelta.adadelta([p], [g], [st["a"]], [st["b"]], [st["step"]], lr=lr, rho=momentum, eps=eps,
                                  **common)
            elif kind == "Adam":
                adam.adam([p], [g], [st["a"]], [st["b"]], [], [st["step"]], amsgrad=False, beta1=momentum,
                          beta2=beta2, lr=lr, eps=eps, **common)
    return [p.numpy() for p in params]


def test_sgd_history_keeps_the_old_rate_unlike_torch_optim():
    ws, grads = problem()
    ours, _ = run_ours("SGD", ws, grads, RATES, wd=0.0, **HYPER)
    ref, _ = reference("SGD", ws, grads, RATES, wd=0.0, **HYPER)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    theirs = torch_optim("SGD", ws, grads, lambda it, i: RATES[it] * LR_MULTS[i])
    # torch rescales the whole momentum buffer when the rate changes; Caffe's history keeps the old rate
    assert np.abs(theirs[0] - ours[0]).max() > 1e-2
    before, _ = run_ours("SGD", ws, grads[:3], RATES[:3], wd=0.0, **HYPER)
    theirs_before = torch_optim("SGD", ws, grads[:3], lambda it, i: RATES[it] * LR_MULTS[i])
    np.testing.assert_allclose(before[0], theirs_before[0], rtol=1e-5)  # the same while the rate is constant


@pytest.mark.parametrize("kind", ["Nesterov", "AdaGrad", "RMSProp", "AdaDelta"])
def test_rules_equal_torch_optim_where_caffe_and_torch_agree(kind):
    hp = dict(HYPER, momentum=0.0 if kind in ("AdaGrad", "RMSProp") else 0.9)
    ws, grads = problem()
    ours, _ = run_ours(kind, ws, grads, [0.05] * 6, wd=0.0, **hp)
    theirs = torch_optim(kind, ws[:2], grads, lambda it, i: 0.05 * LR_MULTS[i])
    for a, b in zip(ours[:2], theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adam_adds_epsilon_before_the_bias_correction():
    hp = dict(HYPER, delta=1e-3)
    ws, grads = problem(iters=3, scale=1e-3)
    ours, _ = run_ours("Adam", ws, grads, [0.1] * 3, wd=0.0, **hp)
    ref, _ = reference("Adam", ws, grads, [0.1] * 3, wd=0.0, **hp)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-7)
    theirs = torch_optim("Adam", ws[:1], grads, lambda it, i: 0.1, eps=1e-3)
    moved_ours = np.abs(ours[0] - ws[0]).mean()
    moved_torch = np.abs(theirs[0] - ws[0]).mean()
    assert moved_torch > 5 * moved_ours  # torch's epsilon is effectively delta * sqrt(1 - b2^t)


def test_clipping_uses_the_accumulated_gradient_before_dividing_by_iter_size():
    ws, grads = problem(iters=1)
    g = grads[0]
    norm = np.sqrt(sum((x.astype(np.float64) ** 2).sum() for x in g))
    clip = 0.75 * norm  # clips the accumulated gradient, would not clip it after / iter_size
    ours, _ = run_ours("SGD", ws, [g], [0.1], wd=0.0, clip=clip, iter_size=2, **HYPER)
    ref, _ = reference("SGD", ws, [g], [0.1], wd=0.0, clip=clip, iter_size=2, **HYPER)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
    unclipped, _ = reference("SGD", ws, [g], [0.1], wd=0.0, iter_size=2, **HYPER)
    step_ours = ws[0] - ours[0]
    step_unclipped = ws[0] - unclipped[0]
    np.testing.assert_allclose(step_ours, 0.75 * step_unclipped, rtol=1e-5, atol=1e-7)


def test_clip_returns_the_norm_only_when_it_scales():
    grads = [torch.tensor([3.0, 4.0])]
    assert rules.clip_gradients(grads, 10.0) is None
    assert rules.clip_gradients(grads, -1) is None
    assert rules.clip_gradients(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads[0].numpy(), [0.6, 0.8], rtol=1e-6)


def test_gradient_holds_the_update_value_afterwards_as_caffes_diff():
    ws, grads = problem(iters=1)
    rule = SOLVERS.get("SGD")
    params = [torch.nn.Parameter(torch.tensor(w)) for w in ws]
    gs = [torch.tensor(g) for g in grads[0]]
    hist = [torch.zeros_like(g) for g in gs]
    rules.apply_update(rule, params, gs, hist, rate=0.1, lr_mults=LR_MULTS, decay_mults=DECAY_MULTS,
                       weight_decay=0.0, regularization_type="L2", clip=-1, iter_size=1,
                       hyper={"momentum": 0.9})
    np.testing.assert_array_equal(gs[0].numpy(), hist[0].numpy())
    np.testing.assert_array_equal(params[0].detach().numpy(), ws[0] - gs[0].numpy())


def test_table_of_rules():
    assert list(SOLVERS) == sorted(["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
    assert {k: SOLVERS.get(k).history_per_param for k in SOLVERS} == {
        "SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}


@pytest.mark.parametrize(
    "kind, fields, needle",
    [
        ("AdaGrad", dict(momentum=0.9), "Momentum cannot be used with AdaGrad"),
        ("RMSProp", dict(momentum=0.9), "Momentum cannot be used with RMSProp"),
        ("RMSProp", dict(rms_decay=1.0), r"rms_decay should lie in \[0, 1\)"),
    ],
)
def test_caffes_checks_are_config_errors(kind, fields, needle):
    with pytest.raises(ConfigError, match=needle):
        SOLVERS.get(kind).check(caffe_pb2.SolverParameter(**fields), "s.prototxt")


def test_unknown_regularization_is_an_error():
    with pytest.raises(ConfigError, match="Unknown regularization type"):
        rules.regularize([torch.zeros(2)], [torch.zeros(2)], [0.1], "L3")
