"""Tests for LRN, BatchNorm and MVN (pipeline/layers/normalization.py).

A table of cases drives shape, forward (numpy float64 loops written from Caffe's
formulas, not from the layer code) and numeric-gradient tests. BatchNorm's
statistics blobs, its phase defaults and Caffe's Backward formula, and MVN's
eps placement and degenerate planes are tested separately, then the errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import TEST, TRAIN, make_layer, rand, run

from pipeline.errors import ConfigError, ShapeError


def snip(type_: str, body: str = "") -> str:
    return f'name: "lyr" type: "{type_}" bottom: "x" top: "y" {body}'


def f32(v: float) -> float:
    """A prototxt float as the layer sees it (protobuf stores float32)."""
    return float(np.float32(v))


# -- numpy references --------------------------------------------------------------
def np_lrn_across(x, n, alpha, beta, k):
    N, C, H, W = x.shape
    half = (n - 1) // 2
    y = np.empty_like(x)
    for b in range(N):
        for c in range(C):
            s = np.zeros((H, W))
            for cc in range(c - half, c + half + 1):
                if 0 <= cc < C:
                    s += x[b, cc] ** 2
            y[b, c] = x[b, c] * (k + alpha / n * s) ** (-beta)
    return y


def np_lrn_within(x, n, alpha, beta):
    N, C, H, W = x.shape
    half = (n - 1) // 2
    y = np.empty_like(x)
    for b in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    s = 0.0
                    for hh in range(h - half, h + half + 1):
                        for ww in range(w - half, w + half + 1):
                            if 0 <= hh < H and 0 <= ww < W:
                                s += x[b, c, hh, ww] ** 2
                    y[b, c, h, w] = x[b, c, h, w] * (1 + alpha / n**2 * s) ** (-beta)
    return y


def np_batch_stats(x):
    """Per-channel mean and biased variance over every axis but 1."""
    xc = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    return xc.mean(axis=1), xc.var(axis=1)


def bcast(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def np_batchnorm_batch(x, eps):
    mu, var = np_batch_stats(x)
    return (x - bcast(mu, x.ndim)) / np.sqrt(bcast(var, x.ndim) + eps)


def np_mvn(x, normalize_variance, across_channels, eps):
    shape4 = tuple(x.shape) + (1,) * (4 - x.ndim)
    x4 = x.reshape(shape4)
    y = np.empty_like(x4)
    for n in range(shape4[0]):
        groups = [slice(None)] if across_channels else [slice(c, c + 1) for c in range(shape4[1])]
        for g in groups:
            v = x4[n, g]
            d = v - v.mean()
            if normalize_variance:
                d = d / (np.sqrt((d**2).mean()) + eps)
            y[n, g] = d
    return y


@dataclass
class Case:
    id: str
    snippet: str
    shape: tuple
    top: tuple
    ref: object  # x -> y
    phase: int = TRAIN
    grad: dict = field(default_factory=dict)


CASES = [
    Case("lrn_across", snip("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }"),
         (2, 4, 3, 3), (2, 4, 3, 3), lambda x: np_lrn_across(x, 3, 0.5, 0.75, 2.0)),
    Case("lrn_across_default", snip("LRN"), (2, 7, 2, 3), (2, 7, 2, 3),
         lambda x: np_lrn_across(x, 5, 1.0, 0.75, 1.0)),
    Case("lrn_across_wide", snip("LRN", "lrn_param { local_size: 7 alpha: 3 beta: 1.5 }"),
         (1, 3, 2, 2), (1, 3, 2, 2), lambda x: np_lrn_across(x, 7, 3.0, 1.5, 1.0)),
    Case("lrn_within", snip("LRN", "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 "
                                   "alpha: 2 beta: 0.75 k: 5 }"),
         (2, 2, 3, 4), (2, 2, 3, 4), lambda x: np_lrn_within(x, 3, 2.0, 0.75)),
    Case("lrn_within_5", snip("LRN", "lrn_param { norm_region: WITHIN_CHANNEL alpha: 4 "
                                     "beta: 0.5 }"),
         (1, 2, 3, 6), (1, 2, 3, 6), lambda x: np_lrn_within(x, 5, 4.0, 0.5)),
    Case("bn_train", snip("BatchNorm"), (2, 3, 4, 5), (2, 3, 4, 5),
         lambda x: np_batchnorm_batch(x, f32(1e-5))),
    Case("bn_train_2d", snip("BatchNorm", "batch_norm_param { eps: 0.001 }"), (6, 4), (6, 4),
         lambda x: np_batchnorm_batch(x, f32(1e-3))),
    Case("bn_train_3d", snip("BatchNorm"), (3, 2, 5), (3, 2, 5),
         lambda x: np_batchnorm_batch(x, f32(1e-5))),
    Case("bn_train_5d", snip("BatchNorm"), (2, 3, 2, 2, 3), (2, 3, 2, 2, 3),
         lambda x: np_batchnorm_batch(x, f32(1e-5))),
    Case("bn_test_batch_stats", snip("BatchNorm", "batch_norm_param { use_global_stats: false }"),
         (4, 3, 2), (4, 3, 2), lambda x: np_batchnorm_batch(x, f32(1e-5)), phase=TEST),
    Case("mvn", snip("MVN"), (2, 3, 4, 5), (2, 3, 4, 5),
         lambda x: np_mvn(x, True, False, f32(1e-9))),
    Case("mvn_across", snip("MVN", "mvn_param { across_channels: true }"), (2, 3, 2, 3),
         (2, 3, 2, 3), lambda x: np_mvn(x, True, True, f32(1e-9))),
    Case("mvn_mean_only", snip("MVN", "mvn_param { normalize_variance: false }"), (2, 3, 2, 3),
         (2, 3, 2, 3), lambda x: np_mvn(x, False, False, 0.0)),
    Case("mvn_big_eps", snip("MVN", "mvn_param { eps: 0.5 }"), (2, 2, 3, 3), (2, 2, 3, 3),
         lambda x: np_mvn(x, True, False, 0.5)),
    Case("mvn_3d", snip("MVN"), (2, 3, 4), (2, 3, 4, 1),
         lambda x: np_mvn(x, True, False, f32(1e-9))),
    Case("mvn_2d_across", snip("MVN", "mvn_param { across_channels: true }"), (3, 5),
         (3, 5, 1, 1), lambda x: np_mvn(x, True, True, f32(1e-9))),
]
IDS = [c.id for c in CASES]


def build(case):
    return make_layer(case.snippet, [case.shape], phase=case.phase)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_top_shape(case):
    layer, tops = build(case)
    assert tops == [case.top]
    (y,) = run(layer, rand(*case.shape, dtype=torch.float32))
    assert tuple(y.shape) == case.top and y.dtype == torch.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case):
    layer, _ = build(case)
    x = rand(*case.shape, seed=2, low=-2.0, high=2.0)
    (y,) = run(layer.double(), x)
    expected = case.ref(x.numpy().copy()).reshape(case.top)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient(case):
    # BatchNorm in batch-statistics mode updates its blobs on every forward, but its
    # output does not read them, so the finite differences see a fixed function.
    layer, _ = build(case)
    assert check_gradient(layer, [rand(*case.shape, seed=5, low=-2.0, high=2.0)],
                          **case.grad) > 0


# -- BatchNorm -----------------------------------------------------------------------
def test_batchnorm_blobs():
    layer, _ = make_layer(snip("BatchNorm"), [(2, 3, 4, 5)])
    assert [tuple(b.shape) for b in layer.blobs] == [(3,), (3,), (1,)]
    assert all(not b.requires_grad and torch.all(b == 0) for b in layer.blobs)
    assert layer.use_global_stats is False
    test_layer, _ = make_layer(snip("BatchNorm"), [(2, 3)], phase=TEST)
    assert test_layer.use_global_stats is True
    forced, _ = make_layer(snip("BatchNorm", "batch_norm_param { use_global_stats: true }"),
                           [(2, 3)], phase=TRAIN)
    assert forced.use_global_stats is True
    assert layer.eps == f32(1e-5) and layer.moving_average_fraction == f32(0.999)


def test_batchnorm_statistics_update():
    layer, _ = make_layer(snip("BatchNorm", "batch_norm_param { moving_average_fraction: 0.9 }"),
                          [(2, 3, 4, 5)])
    layer = layer.double()
    maf = f32(0.9)
    x1, x2 = rand(2, 3, 4, 5, seed=1), rand(2, 3, 4, 5, seed=2, low=0.0, high=3.0)
    mu1, var1 = np_batch_stats(x1.numpy())
    mu2, var2 = np_batch_stats(x2.numpy())
    m = 2 * 4 * 5
    layer(x1)
    np.testing.assert_allclose(layer.blobs[0].detach().numpy(), mu1, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].detach().numpy(), var1 * m / (m - 1), rtol=1e-12)
    assert layer.blobs[2].item() == 1.0
    layer(x2)
    np.testing.assert_allclose(layer.blobs[0].detach().numpy(), maf * mu1 + mu2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].detach().numpy(),
                               (maf * var1 + var2) * m / (m - 1), rtol=1e-12)
    assert layer.blobs[2].item() == pytest.approx(maf + 1, rel=1e-12)


def test_batchnorm_single_value_per_channel_has_no_correction():
    layer, _ = make_layer(snip("BatchNorm"), [(1, 3)])
    layer(torch.tensor([[1.0, 2.0, 3.0]]))
    assert layer.blobs[0].tolist() == [1.0, 2.0, 3.0]
    assert layer.blobs[1].tolist() == [0.0, 0.0, 0.0]  # m = 1: factor 1, not 1/0


def test_batchnorm_global_stats():
    layer, _ = make_layer(snip("BatchNorm"), [(2, 3, 4)], phase=TEST)
    layer = layer.double()
    b0, b1, b2 = np.array([1.0, -2.0, 0.5]), np.array([4.0, 1.0, 0.25]), 2.0
    with torch.no_grad():
        layer.blobs[0].copy_(torch.from_numpy(b0))
        layer.blobs[1].copy_(torch.from_numpy(b1))
        layer.blobs[2].fill_(b2)
    x = rand(2, 3, 4, seed=7, low=-3, high=3)
    (y,) = run(layer, x)
    expected = (x.numpy() - bcast(b0 / b2, 3)) / np.sqrt(bcast(b1 / b2, 3) + f32(1e-5))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    assert layer.blobs[2].item() == b2 and layer.blobs[0].tolist() == b0.tolist()  # unchanged
    assert check_gradient(layer, [x]) > 0


def test_batchnorm_global_stats_with_zero_weight():
    layer, _ = make_layer(snip("BatchNorm"), [(2, 3)], phase=TEST)
    with torch.no_grad():
        layer.blobs[0].fill_(5.0)
        layer.blobs[1].fill_(7.0)
    x = rand(2, 3, dtype=torch.float32)
    (y,) = run(layer, x)  # factor 0: mean 0, variance 0
    np.testing.assert_allclose(y.numpy(), x.numpy() / np.sqrt(f32(1e-5)), rtol=1e-6)


def test_batchnorm_gradient_equals_caffe_backward():
    layer, _ = make_layer(snip("BatchNorm"), [(3, 2, 2, 3)])
    layer = layer.double()
    x = rand(3, 2, 2, 3, seed=11).requires_grad_()
    g = rand(3, 2, 2, 3, seed=12).numpy()
    y = layer(x)
    y.backward(torch.from_numpy(g))
    # Caffe: dx = (g - mean(g) - mean(g * y) * y) / sqrt(var + eps), means over all but axis 1
    yn = y.detach().numpy()
    _, var = np_batch_stats(x.detach().numpy())
    axes = (0, 2, 3)
    dx = (g - g.mean(axis=axes, keepdims=True) - (g * yn).mean(axis=axes, keepdims=True) * yn)
    dx /= np.sqrt(bcast(var, 4) + f32(1e-5))
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-9, atol=1e-12)


# -- MVN -------------------------------------------------------------------------------
def test_mvn_adds_eps_to_the_standard_deviation():
    layer, _ = make_layer(snip("MVN", "mvn_param { eps: 1 across_channels: true }"), [(1, 2)])
    (y,) = run(layer.double(), torch.tensor([[1.0, 3.0]], dtype=torch.float64))
    # mean 2, std 1: (x - 2) / (1 + 1), not / sqrt(1 + 1)
    assert y.flatten().tolist() == [-0.5, 0.5]


def test_mvn_constant_planes_give_zero_and_finite_gradient():
    layer, _ = make_layer(snip("MVN"), [(2, 3)])
    x = rand(2, 3).requires_grad_()
    (y,) = run(layer.double(), x)
    assert tuple(y.shape) == (2, 3, 1, 1) and torch.all(y == 0)
    (y.flatten() * rand(6, seed=3)).sum().backward()
    assert torch.all(x.grad == 0)  # Caffe: (g - mean(g) - mean(g*y)*y) / eps = 0


def test_mvn_gradient_matches_caffe_backward():
    layer, _ = make_layer(snip("MVN"), [(2, 3, 2, 4)])
    x = rand(2, 3, 2, 4, seed=21).requires_grad_()
    g = rand(2, 3, 2, 4, seed=22).numpy()
    (y,) = run(layer.double(), x)
    y.backward(torch.from_numpy(g))
    yn = y.detach().numpy()
    d = x.detach().numpy() - x.detach().numpy().mean(axis=(2, 3), keepdims=True)
    std = np.sqrt((d**2).mean(axis=(2, 3), keepdims=True))
    axes = (2, 3)
    dx = (g - g.mean(axis=axes, keepdims=True) - (g * yn).mean(axis=axes, keepdims=True) * yn)
    dx /= std + f32(1e-9)
    # Caffe's formula uses std + eps where the exact derivative has std: O(eps / std)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-7, atol=1e-9)


# -- errors ----------------------------------------------------------------------------
ERROR_CASES = [
    ("lrn_even", snip("LRN", "lrn_param { local_size: 4 }"), [(1, 3, 2, 2)], ConfigError, "odd"),
    ("lrn_zero", snip("LRN", "lrn_param { local_size: 0 }"), [(1, 3, 2, 2)], ConfigError, "odd"),
    ("lrn_3d", snip("LRN"), [(1, 3, 2)], ShapeError, "4 axes"),
    ("lrn_within_5d", snip("LRN", "lrn_param { norm_region: WITHIN_CHANNEL }"),
     [(1, 3, 2, 2, 2)], ShapeError, "4 axes"),
    ("bn_lr_mult", snip("BatchNorm", "param { lr_mult: 1 }"), [(2, 3)], ConfigError,
     "Cannot configure batch normalization statistics as layer parameters"),
    ("bn_third_lr_mult", snip("BatchNorm", "param { lr_mult: 0 } param { lr_mult: 0 } "
                                           "param { lr_mult: 0.5 }"),
     [(2, 3)], ConfigError, "param[2].lr_mult"),
    ("bn_default_lr_mult", snip("BatchNorm", 'param { name: "shared" }'), [(2, 3)], ConfigError,
     "Cannot configure batch normalization statistics"),
    ("bn_1d", snip("BatchNorm"), [(5,)], ShapeError, "at least 2 axes"),
    ("bn_two_bottoms", snip("BatchNorm", 'bottom: "z"'), [(2, 3), (2, 3)], ConfigError, "bottom"),
    ("mvn_5d", snip("MVN"), [(1, 2, 2, 2, 2)], ShapeError, "1 to 4 axes"),
]


@pytest.mark.parametrize("snippet,shapes,error,text", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_layer(snippet, shapes, error, text):
    with pytest.raises(error) as info:
        make_layer(snippet, shapes)
    assert "'lyr'" in str(info.value)
    assert text in str(info.value)


def test_batchnorm_zero_lr_mult_accepted():
    snippet = snip("BatchNorm", "param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }")
    layer, tops = make_layer(snippet, [(2, 3)])
    assert tops == [(2, 3)] and len(layer.blobs) == 3


def test_batchnorm_channel_change_on_reshape():
    layer, _ = make_layer(snip("BatchNorm"), [(2, 3, 4)])
    with pytest.raises(ShapeError, match="'lyr'.*4 channels"):
        layer.reshape([(2, 4, 4)])


# -- CUDA --------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for case in [c for c in CASES if c.id in ("lrn_across", "lrn_within", "bn_train", "mvn")]:
        layer, _ = build(case)
        x = rand(*case.shape, seed=2, dtype=torch.float32).requires_grad_()
        (y_cpu,) = run(layer, x)
        y_cpu.sum().backward()
        g_cpu = x.grad.clone()
        blobs_cpu = [b.detach().clone() for b in layer.blobs]
        layer_gpu, _ = build(case)
        layer_gpu = layer_gpu.cuda()
        xg = x.detach().cuda().requires_grad_()
        (y_gpu,) = run(layer_gpu, xg)
        (y_gpu * 1.0).sum().backward()
        torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(xg.grad.cpu(), g_cpu, rtol=1e-4, atol=1e-4)
        for bg, bc in zip(layer_gpu.blobs, blobs_cpu):
            torch.testing.assert_close(bg.detach().cpu(), bc, rtol=1e-5, atol=1e-6)
    test_layer, _ = make_layer(snip("BatchNorm"), [(2, 3, 4)], phase=TEST)
    with torch.no_grad():
        test_layer.blobs[2].fill_(2.0)
        test_layer.blobs[1].fill_(1.0)
    x = rand(2, 3, 4, dtype=torch.float32)
    torch.testing.assert_close(test_layer.cuda()(x.cuda()).cpu(), test_layer.cpu()(x))
