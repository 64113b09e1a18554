"""Tests for the neuron (element-wise) layers in pipeline/layers/neuron.py.

One table drives the shape, forward (against numpy float64 references written here
from Caffe's formulas) and numeric-gradient tests; layer-specific behaviour
(Threshold's missing gradient, Dropout's randomness, overflow-free BNLL, Clip's
boundaries, Caffe's blob shapes) and error messages are tested below it.
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


# -- numpy references (float64, Caffe's formulas) ------------------------------
def f32(v: float) -> float:
    """A prototxt float as the layer sees it (protobuf stores float32)."""
    return float(np.float32(v))


def np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def np_prelu(x, blobs):
    a = blobs[0]
    if a.ndim == 1:  # per channel on axis 1
        a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.maximum(x, 0) + a * np.minimum(x, 0)


def np_bnll(x):
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        out[i] = v + np.log(1 + np.exp(-v)) if v > 0 else np.log(1 + np.exp(v))
    return out


@dataclass
class Case:
    id: str
    snippet: str
    shape: tuple
    ref: object  # (x, blobs) -> y
    low: float = -1.0
    high: float = 1.0
    grad: dict | None = field(default_factory=dict)  # check_gradient kwargs; None: no grad
    phase: int = TRAIN


CASES = [
    Case("relu", snip("ReLU"), (2, 3, 4, 5), lambda x, b: np.maximum(x, 0),
         grad=dict(kink=0.0, kink_range=0.01)),
    Case("relu_leaky", snip("ReLU", "relu_param { negative_slope: 0.1 }"), (2, 3, 4),
         lambda x, b: np.where(x > 0, x, f32(0.1) * x), grad=dict(kink=0.0, kink_range=0.01)),
    Case("prelu", snip("PReLU", 'prelu_param { filler { type: "uniform" min: -0.5 max: 0.5 } }'),
         (2, 3, 4, 5), np_prelu, grad=dict(kink=0.0, kink_range=0.01)),
    Case("prelu_default_filler", snip("PReLU"), (2, 3, 2, 2), np_prelu,
         grad=dict(kink=0.0, kink_range=0.01)),
    Case("prelu_shared", snip("PReLU", "prelu_param { channel_shared: true }"), (2, 3, 4),
         np_prelu, grad=dict(kink=0.0, kink_range=0.01)),
    Case("prelu_2d", snip("PReLU", 'prelu_param { filler { type: "gaussian" } }'), (4, 5),
         np_prelu, grad=dict(kink=0.0, kink_range=0.01)),
    Case("prelu_5d", snip("PReLU", 'prelu_param { filler { type: "gaussian" } }'),
         (2, 3, 2, 2, 2), np_prelu, grad=dict(kink=0.0, kink_range=0.01)),
    Case("elu", snip("ELU", "elu_param { alpha: 0.5 }"), (2, 3, 4),
         lambda x, b: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)), low=-3, high=3,
         grad=dict(kink=0.0, kink_range=0.01)),
    Case("elu_default", snip("ELU"), (3, 4), lambda x, b: np.where(x > 0, x, np.exp(x) - 1),
         low=-3, high=3),
    Case("sigmoid", snip("Sigmoid"), (2, 3, 4), lambda x, b: np_sigmoid(x), low=-5, high=5),
    Case("tanh", snip("TanH"), (2, 3, 4), lambda x, b: np.tanh(x), low=-3, high=3),
    Case("absval", snip("AbsVal"), (2, 3, 4), lambda x, b: np.abs(x),
         grad=dict(kink=0.0, kink_range=0.01)),
    Case("bnll", snip("BNLL"), (2, 3, 4), lambda x, b: np_bnll(x), low=-8, high=8),
    Case("power", snip("Power", "power_param { power: 2.5 scale: 0.5 shift: 1 }"), (2, 3, 4),
         lambda x, b: (1 + 0.5 * x) ** 2.5, low=0.1, high=2),
    Case("power_square", snip("Power", "power_param { power: 2 scale: -1.5 shift: 0.3 }"),
         (2, 3, 4), lambda x, b: (f32(0.3) - 1.5 * x) ** 2),
    Case("power_affine", snip("Power", "power_param { power: 1 scale: 3 shift: -1 }"), (3, 4),
         lambda x, b: 3 * x - 1),
    Case("power_recip", snip("Power", "power_param { power: -1 scale: 1 shift: 2 }"), (3, 4),
         lambda x, b: 1.0 / (2 + x)),
    Case("power_noshift", snip("Power", "power_param { power: 3 scale: 2 }"), (3, 4),
         lambda x, b: (2 * x) ** 3),
    Case("power_zero_power", snip("Power", "power_param { power: 0 scale: 2 shift: 5 }"),
         (3, 4), lambda x, b: np.ones_like(x)),
    Case("power_zero_scale", snip("Power", "power_param { power: 3 scale: 0 shift: 2 }"),
         (3, 4), lambda x, b: np.full_like(x, 8.0)),
    Case("exp", snip("Exp"), (2, 3, 4), lambda x, b: np.exp(x), low=-2, high=2),
    Case("exp_base2", snip("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }"), (2, 3, 4),
         lambda x, b: 2.0 ** (1 + 0.5 * x), low=-2, high=2),
    Case("exp_e_shift", snip("Exp", "exp_param { scale: -1 shift: 0.5 }"), (3, 4),
         lambda x, b: np.exp(0.5 - x)),
    Case("log", snip("Log"), (2, 3, 4), lambda x, b: np.log(x), low=0.2, high=3),
    Case("log_base10", snip("Log", "log_param { base: 10 scale: 2 shift: 1 }"), (2, 3, 4),
         lambda x, b: np.log10(1 + 2 * x), low=0.0, high=3),
    Case("threshold", snip("Threshold", "threshold_param { threshold: 0.2 }"), (2, 3, 4),
         lambda x, b: (x > f32(0.2)).astype(np.float64), grad=None),
    Case("threshold_default", snip("Threshold"), (3, 4),
         lambda x, b: (x > 0).astype(np.float64), grad=None),
    Case("clip", snip("Clip", "clip_param { min: -0.5 max: 0.25 }"), (2, 3, 4),
         lambda x, b: np.maximum(-0.5, np.minimum(x, 0.25))),  # make_input avoids the kinks
    Case("swish", snip("Swish"), (2, 3, 4), lambda x, b: x * np_sigmoid(x), low=-4, high=4),
    Case("swish_beta", snip("Swish", "swish_param { beta: 0.5 }"), (2, 3, 4),
         lambda x, b: x * np_sigmoid(0.5 * x), low=-4, high=4),
    Case("dropout_test", snip("Dropout", "dropout_param { dropout_ratio: 0.3 }"), (2, 3, 4),
         lambda x, b: x, phase=TEST),
]
IDS = [c.id for c in CASES]


def make_input(case: Case, seed: int = 0) -> torch.Tensor:
    x = rand(*case.shape, seed=seed, low=case.low, high=case.high)
    if case.id == "clip":  # keep clear of the two kinks (min and max)
        for edge in (-0.5, 0.25):
            near = (x - edge).abs() < 0.01
            x[near] = edge + 0.02
    return x


def build(case: Case):
    return make_layer(case.snippet, [case.shape], phase=case.phase)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_top_shape(case):
    layer, tops = build(case)
    assert tops == [tuple(case.shape)]
    assert layer.type in case.snippet
    (y,) = run(layer, make_input(case).float())
    assert tuple(y.shape) == tuple(case.shape)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case):
    layer, _ = build(case)
    layer = layer.double()
    x = make_input(case)
    blobs = [b.detach().numpy().copy() for b in layer.blobs]
    (y,) = run(layer, x)
    expected = case.ref(x.numpy().copy(), blobs)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


GRAD_CASES = [c for c in CASES if c.grad is not None]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradient(case):
    layer, _ = build(case)
    checked = check_gradient(layer, [make_input(case, seed=1)], **case.grad)
    assert checked > 0


# -- layer specifics -------------------------------------------------------------
def test_prelu_blob_shapes_and_default_filler():
    layer, _ = make_layer(snip("PReLU"), [(2, 3, 4, 5)])
    assert len(layer.blobs) == 1
    assert tuple(layer.blobs[0].shape) == (3,)
    assert torch.all(layer.blobs[0] == 0.25)
    assert layer.blobs[0].requires_grad
    shared, _ = make_layer(snip("PReLU", "prelu_param { channel_shared: true }"), [(2, 3, 4)])
    assert tuple(shared.blobs[0].shape) == ()  # Caffe: a 0-axis blob holding one value
    assert shared.blobs[0].item() == 0.25


def test_prelu_slope_gradient_is_caffes_sum():
    layer, _ = make_layer(snip("PReLU"), [(2, 3, 4)])
    layer = layer.double()
    x = rand(2, 3, 4, seed=3)
    g = rand(2, 3, 4, seed=4)
    (y,) = run(layer, x)
    (y * g).sum().backward()
    xn, gn = x.numpy(), g.numpy()
    expected = (gn * xn * (xn <= 0)).sum(axis=(0, 2))
    np.testing.assert_allclose(layer.blobs[0].grad.numpy(), expected, rtol=1e-12)


def test_relu_gradient_at_zero_is_negative_slope():
    layer, _ = make_layer(snip("ReLU", "relu_param { negative_slope: 0.2 }"), [(3,)])
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    layer.double()(x).sum().backward()
    assert x.grad.tolist() == pytest.approx([0.2, 0.2, 1.0])


def test_clip_gradient_passes_at_both_bounds():
    layer, _ = make_layer(snip("Clip", "clip_param { min: -0.5 max: 0.25 }"), [(5,)])
    x = torch.tensor([-1.0, -0.5, 0.0, 0.25, 1.0], dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_bnll_large_inputs_do_not_overflow():
    layer, _ = make_layer(snip("BNLL"), [(6,)])
    x = torch.tensor([-1000.0, -60.0, 0.0, 60.0, 100.0, 1000.0], requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert y[-1].item() == pytest.approx(1000.0)
    assert y[2].item() == pytest.approx(np.log(2.0))
    # Caffe's Backward: sigmoid(x)
    np.testing.assert_allclose(x.grad.numpy(), np_sigmoid(x.detach().double().numpy()),
                               rtol=1e-6, atol=1e-30)


def test_power_constant_output_has_zero_gradient():
    layer, _ = make_layer(snip("Power", "power_param { power: 0 scale: 3 }"), [(4,)])
    x = torch.tensor([1.0, -2.0, 0.0, 5.0], requires_grad=True)
    y = layer(x)
    assert y.tolist() == [1.0] * 4
    y.sum().backward()
    assert x.grad.tolist() == [0.0] * 4


def test_threshold_does_not_backpropagate():
    layer, _ = make_layer(snip("Threshold"), [(2, 3)])
    x = rand(2, 3, dtype=torch.float32).requires_grad_()
    y = layer(x)
    assert not y.requires_grad and y.grad_fn is None
    # a net that also uses x elsewhere still back-propagates through the other path
    (y * x).sum().backward()
    assert torch.equal(x.grad, y)


def test_dropout_train_mask_and_scale():
    torch.manual_seed(0)
    layer, _ = make_layer(snip("Dropout", "dropout_param { dropout_ratio: 0.3 }"), [(200, 50)])
    x = rand(200, 50, low=0.5, high=1.5).requires_grad_()
    y = layer.double()(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept].detach().numpy(), x[kept].detach().numpy() / (1 - f32(0.3)),
                               rtol=1e-12)
    assert abs(1 - kept.double().mean().item() - 0.3) < 0.02
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept.double().numpy() / (1 - f32(0.3)), rtol=1e-12)
    y2 = layer(x)
    assert not torch.equal(y2 != 0, kept)  # a new mask each forward


def test_dropout_default_ratio_and_zero_ratio():
    layer, _ = make_layer(snip("Dropout"), [(4,)])
    assert layer.dropout_ratio == 0.5
    zero, _ = make_layer(snip("Dropout", "dropout_param { dropout_ratio: 0 }"), [(100,)])
    x = rand(100)
    assert torch.equal(zero(x), x)


def test_layers_built_without_protobuf():
    from pipeline.layers.neuron import PReLU, ReLU

    relu = ReLU(negative_slope=0.5, name="r")
    assert relu(torch.tensor([-2.0])).item() == -1.0
    prelu = PReLU(filler={"type": "constant", "value": 0.5}, name="p")
    prelu.setup([(1, 2)])
    assert prelu(torch.tensor([[-2.0, 2.0]])).tolist() == [[-1.0, 2.0]]


# -- errors ----------------------------------------------------------------------
ERROR_CASES = [
    ("prelu_1d", snip("PReLU"), [(5,)], ShapeError, "at least 2 axes"),
    ("exp_negative_base", snip("Exp", "exp_param { base: -2 }"), [(3,)], ConfigError,
     "strictly positive"),
    ("exp_zero_base", snip("Exp", "exp_param { base: 0 }"), [(3,)], ConfigError,
     "strictly positive"),
    ("log_negative_base", snip("Log", "log_param { base: -3 }"), [(3,)], ConfigError,
     "strictly positive"),
    ("log_base_one", snip("Log", "log_param { base: 1 }"), [(3,)], ConfigError, "infinite"),
    ("clip_min_gt_max", snip("Clip", "clip_param { min: 1 max: 0 }"), [(3,)], ConfigError,
     "greater than"),
    ("clip_missing_max", snip("Clip", "clip_param { min: 1 }"), [(3,)], ConfigError,
     "clip_param.max is required"),
    ("clip_missing_param", snip("Clip"), [(3,)], ConfigError, "min and max is required"),
    ("dropout_one", snip("Dropout", "dropout_param { dropout_ratio: 1 }"), [(3,)], ConfigError,
     "[0, 1)"),
    ("dropout_negative", snip("Dropout", "dropout_param { dropout_ratio: -0.1 }"), [(3,)],
     ConfigError, "[0, 1)"),
    ("relu_two_bottoms", snip("ReLU", 'bottom: "z"'), [(3,), (3,)], ConfigError, "bottom"),
    ("sigmoid_two_tops", snip("Sigmoid", 'top: "w"'), [(3,)], ConfigError, "top"),
]


@pytest.mark.parametrize("snippet,shapes,error,text", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_layer(snippet, shapes, error, text):
    with pytest.raises(error) as info:
        make_layer(snippet, shapes)
    assert "'lyr'" in str(info.value)
    assert text in str(info.value)


def test_prelu_slope_size_mismatch_on_reshape():
    layer, _ = make_layer(snip("PReLU"), [(2, 3, 4)])
    with pytest.raises(ShapeError, match="'lyr'.*inconsistent"):
        layer.reshape([(2, 4, 4)])


# -- CUDA ------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for case in [c for c in CASES if c.id in ("prelu", "bnll", "elu", "power", "swish", "clip")]:
        layer, _ = build(case)
        x = make_input(case).float().requires_grad_()
        (y_cpu,) = run(layer, x)
        y_cpu.sum().backward()
        g_cpu = x.grad.clone()
        layer_gpu = layer.cuda()
        xg = x.detach().cuda().requires_grad_()
        (y_gpu,) = run(layer_gpu, xg)
        y_gpu.sum().backward()
        torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xg.grad.cpu(), g_cpu, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    layer, _ = make_layer(snip("Dropout"), [(1000,)])
    y = layer.cuda()(torch.ones(1000, device="cuda"))
    assert y.device.type == "cuda" and set(y.unique().tolist()) <= {0.0, 2.0}
