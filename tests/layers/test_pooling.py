"""Pooling and SPP against a numpy float64 loop port of Caffe's PoolingLayer::Forward_cpu."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import TEST, TRAIN, make_layer, rand, run

from pipeline.errors import ConfigError, PipelineError, ShapeError
from pipeline.proto import caffe_pb2
from pipeline.registry import LAYERS

FLT_MIN = np.float32(np.finfo(np.float32).tiny).item()




# -- numpy reference: Caffe's Reshape + Forward_cpu (and Forward_gpu for STOCHASTIC TEST) -
def np_out_size(size, k, s, p, ceil, any_pad):
    v = (size + 2 * p - k) / s
    out = int(math.ceil(v) if ceil else math.floor(v)) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def np_pool(x, method, k, s, p, ceil=True):
    """x (N, C, H, W) float64 -> (top, mask); k, s, p are (h, w) pairs."""
    n, c, h, w = x.shape
    any_pad = p[0] > 0 or p[1] > 0
    oh = np_out_size(h, k[0], s[0], p[0], ceil, any_pad)
    ow = np_out_size(w, k[1], s[1], p[1], ceil, any_pad)
    top = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            if method == "MAX":
                he, we = min(hs + k[0], h), min(ws + k[1], w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
                a = win.argmax(-1)  # first maximum in row-major order, as Caffe's strict '>'
                top[:, :, i, j] = win.max(-1)
                mask[:, :, i, j] = (hs + a // (we - ws)) * w + ws + a % (we - ws)
            elif method == "AVE":
                he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                top[:, :, i, j] = x[:, :, hs:he, ws:we].sum((-1, -2)) / size
            else:  # STOCHASTIC, TEST phase (no padding)
                win = x[:, :, i * s[0]:min(i * s[0] + k[0], h), j * s[1]:min(j * s[1] + k[1], w)]
                top[:, :, i, j] = (win**2).sum((-1, -2)) / (FLT_MIN + win.sum((-1, -2)))
    return top, mask


def np_spp(x, height, method):
    n, c, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2**level
        k = [-(-h // bins), -(-w // bins)]
        p = [(k[0] * bins - h + 1) // 2, (k[1] * bins - w + 1) // 2]
        parts.append(np_pool(x, method, k, k, p)[0])
    if height == 1:
        return parts[0]
    return np.concatenate([q.reshape(n, -1) for q in parts], axis=1)


def distinct(*shape, seed=0):
    """Values 0.01 apart in random order: no ties within the checker's step size."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    return (torch.randperm(n, generator=g).to(torch.float64) * 0.01 - n * 0.005).reshape(shape)


# -- case table: (id, pooling_param body, method, k, s, p, ceil, bottom, top, grad) ------
POOL_CASES = [
    ("googlenet_pool1_112", "kernel_size: 3 stride: 2", "MAX", (3, 3), (2, 2), (0, 0), True,
     (1, 2, 112, 112), (1, 2, 56, 56), True),
    ("alexnet_pool1_55", "pool: MAX kernel_size: 3 stride: 2", "MAX", (3, 3), (2, 2), (0, 0),
     True, (1, 2, 55, 55), (1, 2, 27, 27), False),
    ("googlenet_pool2_56", "pool: MAX kernel_size: 3 stride: 2", "MAX", (3, 3), (2, 2), (0, 0),
     True, (1, 1, 56, 56), (1, 1, 28, 28), False),
    ("inception_pool_s1_p1", "pool: MAX kernel_size: 3 stride: 1 pad: 1", "MAX", (3, 3),
     (1, 1), (1, 1), True, (1, 2, 6, 6), (1, 2, 6, 6), True),
    ("max_pad1_k3_s2", "pool: MAX kernel_size: 3 stride: 2 pad: 1", "MAX", (3, 3), (2, 2),
     (1, 1), True, (2, 2, 7, 8), (2, 2, 4, 5), True),
    ("ave_pad1_k3_s2", "pool: AVE kernel_size: 3 stride: 2 pad: 1", "AVE", (3, 3), (2, 2),
     (1, 1), True, (2, 2, 7, 8), (2, 2, 4, 5), True),
    ("max_clip_rule_k2_p1", "pool: MAX kernel_size: 2 stride: 2 pad: 1", "MAX", (2, 2),
     (2, 2), (1, 1), True, (1, 2, 5, 5), (1, 2, 3, 3), True),
    ("ave_clip_rule_k2_p1", "pool: AVE kernel_size: 2 stride: 2 pad: 1", "AVE", (2, 2),
     (2, 2), (1, 1), True, (1, 2, 5, 5), (1, 2, 3, 3), True),
    ("ave_global", "pool: AVE global_pooling: true", "AVE", (7, 7), (1, 1), (0, 0), True,
     (2, 3, 7, 7), (2, 3, 1, 1), True),
    ("max_global_rect", "pool: MAX global_pooling: true", "MAX", (5, 3), (1, 1), (0, 0), True,
     (1, 2, 5, 3), (1, 2, 1, 1), True),
    ("googlenet_pool5_ave7", "pool: AVE kernel_size: 7 stride: 1", "AVE", (7, 7), (1, 1),
     (0, 0), True, (1, 4, 7, 7), (1, 4, 1, 1), False),
    ("ave_overhang_no_pad", "pool: AVE kernel_size: 3 stride: 2", "AVE", (3, 3), (2, 2),
     (0, 0), True, (1, 2, 6, 8), (1, 2, 3, 4), True),
    ("ave_explicit_p2_k3", "pool: AVE kernel_size: 3 stride: 2 pad: 2", "AVE", (3, 3), (2, 2),
     (2, 2), True, (1, 2, 7, 8), (1, 2, 5, 5), True),
    ("max_explicit_p2_k3", "pool: MAX kernel_size: 3 stride: 2 pad: 2", "MAX", (3, 3), (2, 2),
     (2, 2), True, (1, 2, 7, 8), (1, 2, 5, 5), True),
    ("max_explicit_p3_k4_s3", "pool: MAX kernel_size: 4 stride: 3 pad: 3", "MAX", (4, 4),
     (3, 3), (3, 3), True, (1, 1, 5, 6), (1, 1, 3, 3), True),
    ("ave_explicit_p3_k4_s3", "pool: AVE kernel_size: 4 stride: 3 pad: 3", "AVE", (4, 4),
     (3, 3), (3, 3), True, (1, 1, 5, 6), (1, 1, 3, 3), True),
    ("max_rect_hw", "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 "
     "pad_w: 1", "MAX", (3, 2), (2, 1), (1, 1), True, (1, 2, 6, 5), (1, 2, 4, 6), True),
    ("ave_rect_hw", "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 "
     "pad_w: 1", "AVE", (3, 2), (2, 1), (1, 1), True, (1, 2, 6, 5), (1, 2, 4, 6), True),
    ("max_pad_h_only", "pool: MAX kernel_h: 2 kernel_w: 1 stride: 2 pad_h: 1 pad_w: 0", "MAX",
     (2, 1), (2, 2), (1, 0), True, (1, 2, 4, 4), (1, 2, 3, 2), True),
    ("max_floor", "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", "MAX", (3, 3),
     (2, 2), (0, 0), False, (1, 2, 8, 8), (1, 2, 3, 3), True),
    ("max_ceil_same_input", "pool: MAX kernel_size: 3 stride: 2", "MAX", (3, 3), (2, 2),
     (0, 0), True, (1, 2, 8, 8), (1, 2, 4, 4), True),
    ("ave_floor_pad1", "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", "AVE",
     (3, 3), (2, 2), (1, 1), False, (1, 2, 8, 8), (1, 2, 4, 4), True),
    ("max_kernel_over_input", "pool: MAX kernel_size: 3 stride: 2", "MAX", (3, 3), (2, 2),
     (0, 0), True, (1, 2, 2, 2), (1, 2, 1, 1), True),
    ("ave_kernel_over_input", "pool: AVE kernel_size: 3 stride: 2", "AVE", (3, 3), (2, 2),
     (0, 0), True, (1, 2, 2, 2), (1, 2, 1, 1), True),
    ("stochastic_test", "pool: STOCHASTIC kernel_size: 3 stride: 2", "STOCHASTIC", (3, 3),
     (2, 2), (0, 0), True, (1, 2, 7, 8), (1, 2, 3, 4), False),
]
IDS = [c[0] for c in POOL_CASES]


def _build(case, num_tops=1, phase=TEST):
    tops = "".join(f' top: "t{i}"' for i in range(num_tops))
    return make_layer(f'name: "{case[0]}" type: "Pooling"{tops} pooling_param {{ {case[1]} }}',
                      [case[7]], phase)


def _input(case):
    if case[2] == "MAX":
        return distinct(*case[7], seed=1)
    return rand(*case[7], seed=1, low=0.0 if case[2] == "STOCHASTIC" else -1.0)


@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_top_shapes(case):
    assert _build(case)[1] == [case[8]]
    if case[2] == "MAX":
        assert _build(case, num_tops=2)[1] == [case[8], case[8]]


@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_forward_matches_caffe_loops(case):
    num_tops = 2 if case[2] == "MAX" else 1
    layer, tops = _build(case, num_tops)
    x = _input(case)
    got = run(layer, x)
    want_top, want_mask = np_pool(x.numpy(), case[2], case[3], case[4], case[5], case[6])
    assert want_top.shape == case[8] == tuple(got[0].shape)
    np.testing.assert_allclose(got[0].numpy(), want_top, rtol=1e-12, atol=1e-12)
    if num_tops == 2:
        assert got[1].dtype == x.dtype
        np.testing.assert_array_equal(got[1].numpy(), want_mask)


@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[9]],
                         ids=[c[0] for c in POOL_CASES if c[9]])
def test_gradient(case):
    layer, _ = _build(case)
    assert check_gradient(layer, [_input(case)], max_elements=300) > 0


def test_gradient_with_mask_top():
    layer, _ = _build(POOL_CASES[4], num_tops=2)
    assert check_gradient(layer, [_input(POOL_CASES[4])], top_ids=[0]) > 0


def test_max_ties_pick_first_cell_like_caffe():
    layer, _ = make_layer('name: "p" type: "Pooling" top: "a" top: "m" pooling_param { '
                          'kernel_size: 2 stride: 2 pad: 1 }', [(1, 1, 4, 4)])
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    top, mask = run(layer, x)
    _, want = np_pool(x.numpy(), "MAX", (2, 2), (2, 2), (1, 1))
    np.testing.assert_array_equal(mask.numpy(), want)
    assert torch.all(top == 1)


def test_ave_divisor_counts_pad_not_overrun():
    """One hand-computed value: 3x3 s2 p1 on 4x4 of ones; last window overruns H + p."""
    layer, tops = make_layer('name: "p" type: "Pooling" pooling_param { pool: AVE '
                             'kernel_size: 3 stride: 2 pad: 1 }', [(1, 1, 4, 4)])
    assert tops == [(1, 1, 3, 3)]  # ceil(3/2)+1 = 3, (3-1)*2 = 4 < 5 keeps 3
    y = run(layer, torch.ones(1, 1, 4, 4, dtype=torch.float64))[0]
    # corner: 4 image cells / 9; last row/col window [3, 6) is cut to [3, 5): 2 rows.
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert y[0, 0, 2, 2] == pytest.approx(1 / 4)  # 1 image cell / (2 * 2)
    assert y[0, 0, 0, 2] == pytest.approx(2 / 6)


# -- STOCHASTIC ---------------------------------------------------------------------------
def test_stochastic_train_frequencies_follow_values():
    layer, tops = make_layer('name: "sp" type: "Pooling" pooling_param { pool: STOCHASTIC '
                             'kernel_size: 2 stride: 2 }', [(20000, 1, 2, 2)], TRAIN)
    assert tops == [(20000, 1, 1, 1)]
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).reshape(1, 1, 2, 2)
    torch.manual_seed(7)
    y = run(layer, x.expand(20000, 1, 2, 2).contiguous())[0].flatten()
    freq = torch.stack([(y == v).double().mean() for v in (1.0, 2.0, 3.0, 4.0)])
    assert float(freq.sum()) == 1.0
    np.testing.assert_allclose(freq.numpy(), [0.1, 0.2, 0.3, 0.4], atol=0.02)


def test_stochastic_train_picks_window_values_and_routes_gradient():
    layer, tops = make_layer('name: "sp" type: "Pooling" pooling_param { pool: STOCHASTIC '
                             'kernel_size: 3 stride: 2 }', [(3, 2, 7, 8)], TRAIN)
    x = rand(3, 2, 7, 8, seed=5, low=0.1, high=1.0).requires_grad_(True)
    torch.manual_seed(3)
    y = run(layer, x)[0]
    assert tuple(y.shape) == tops[0] == (3, 2, 3, 4)
    xv, yv = x.detach().numpy(), y.detach().numpy()
    for i in range(3):
        for j in range(4):  # the last column window hangs over the edge: cols 6..7 only
            win = xv[:, :, 2 * i:min(2 * i + 3, 7), 2 * j:min(2 * j + 3, 8)].reshape(3, 2, -1)
            assert np.all(np.any(win == yv[:, :, i, j][..., None], axis=-1))
    y.sum().backward()
    assert float(x.grad.sum()) == y.numel()  # one unit of gradient per window
    assert float((x.grad * x.detach()).sum()) == pytest.approx(float(y.detach().sum()))


def test_stochastic_zero_windows_give_zero():
    for phase in (TRAIN, TEST):
        layer, _ = make_layer('name: "sp" type: "Pooling" pooling_param { pool: STOCHASTIC '
                              'kernel_size: 2 stride: 1 }', [(1, 1, 3, 3)], phase)
        y = run(layer, torch.zeros(1, 1, 3, 3, dtype=torch.float64))[0]
        assert torch.all(y == 0)


# -- SPP ----------------------------------------------------------------------------------
SPP_CASES = [
    ("spp_net_13_max", 3, "MAX", (2, 3, 13, 13), (2, 63)),
    ("spp_rect_ave", 3, "AVE", (1, 2, 10, 7), (1, 42)),
    ("spp_height1", 1, "MAX", (2, 3, 5, 6), (2, 3, 1, 1)),
    ("spp_height4_ave", 4, "AVE", (1, 2, 16, 16), (1, 170)),
]


def _spp(case, phase=TEST):
    name, height, method, shape, _ = case
    return make_layer(f'name: "{name}" type: "SPP" spp_param {{ pyramid_height: {height} '
                      f'pool: {method} }}', [shape], phase)


@pytest.mark.parametrize("case", SPP_CASES, ids=[c[0] for c in SPP_CASES])
def test_spp_shape_forward_gradient(case):
    layer, tops = _spp(case)
    assert tops == [case[4]]
    x = distinct(*case[3], seed=2) if case[2] == "MAX" else rand(*case[3], seed=2)
    y = run(layer, x)[0]
    np.testing.assert_allclose(y.numpy(), np_spp(x.numpy(), case[1], case[2]), rtol=1e-12)
    assert check_gradient(layer, [x], max_elements=120) > 0


def test_spp_stochastic_samples_even_in_test_phase():
    layer, tops = make_layer('name: "s" type: "SPP" spp_param { pyramid_height: 2 '
                             'pool: STOCHASTIC }', [(1, 1, 4, 4)], TEST)
    assert tops == [(1, 5)]
    x = rand(1, 1, 4, 4, seed=4, low=0.1, high=1.0)
    y = run(layer, x)[0]
    assert all(float(v) in x.flatten().tolist() for v in y.flatten())


# -- errors --------------------------------------------------------------------------------
ERROR_CASES = [
    ("pool: MAX", (1, 1, 4, 4), 1, ConfigError, "give kernel_size, or both kernel_h"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 1, 4, 4), 1, ConfigError,
     "give kernel_size, or both"),
    ("kernel_h: 3", (1, 1, 4, 4), 1, ConfigError, "give kernel_size, or both"),
    ("kernel_size: 0", (1, 1, 4, 4), 1, ConfigError, "must be > 0"),
    ("kernel_size: 3 pad: 3", (1, 1, 4, 4), 1, ConfigError, "must be smaller than kernel"),
    ("kernel_size: 3 pad_h: 1", (1, 1, 4, 4), 1, ConfigError, "give pad, or both pad_h"),
    ("kernel_size: 3 stride: 2 stride_h: 2 stride_w: 2", (1, 1, 4, 4), 1, ConfigError,
     "give stride, or both"),
    ("global_pooling: true kernel_size: 3", (1, 1, 4, 4), 1, ConfigError,
     "kernel size cannot be given"),
    ("global_pooling: true stride: 2", (1, 1, 4, 4), 1, ConfigError,
     "only pad 0 and stride 1"),
    ("pool: STOCHASTIC kernel_size: 3 pad: 1", (1, 1, 4, 4), 1, ConfigError,
     "only for MAX and AVE"),
    ("pool: AVE kernel_size: 2", (1, 1, 4, 4), 2, ConfigError, "second (mask) top"),
    ("kernel_size: 2", (1, 1, 4, 4), 3, ConfigError, "at most 2 top"),
    ("kernel_size: 1 stride: 2", (1, 1, 4, 4), 1, ShapeError, "outside the input"),
    ("kernel_size: 5", (1, 1, 3, 3), 1, ShapeError, "does not fit"),
    ("kernel_size: 2", (1, 4, 4), 1, ShapeError, "4 axes"),
]


@pytest.mark.parametrize("body,shape,num_tops,err,text", ERROR_CASES,
                         ids=[e[0] for e in ERROR_CASES])
def test_pooling_errors_name_layer_and_rule(body, shape, num_tops, err, text):
    tops = "".join(f' top: "t{i}"' for i in range(num_tops))
    with pytest.raises(err) as info:
        make_layer(f'name: "pool_bad" type: "Pooling"{tops} pooling_param {{ {body} }}', [shape])
    assert "Pooling layer 'pool_bad'" in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize("body,shape,text", [
    ("pool: MAX", (1, 1, 4, 4), "pyramid_height=0"),
    ("pyramid_height: 3", (1, 1, 5, 5), "pad (2, 2) >= kernel (2, 2)"),
    ("pyramid_height: 2 pool: STOCHASTIC", (1, 1, 13, 13), "STOCHASTIC pooling has no padding"),
    ("pyramid_height: 2", (1, 13, 13), "4 axes"),
])
def test_spp_errors(body, shape, text):
    with pytest.raises(PipelineError) as info:
        make_layer(f'name: "spp_bad" type: "SPP" spp_param {{ {body} }}', [shape])
    assert "SPP layer 'spp_bad'" in str(info.value) and text in str(info.value)


def test_from_default_param_does_not_raise():
    for typ in ("Pooling", "SPP"):
        lp = caffe_pb2.LayerParameter(name="x", type=typ)
        assert LAYERS.get(typ).from_param(lp).type == typ


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for case in (POOL_CASES[4], POOL_CASES[5], POOL_CASES[12], POOL_CASES[13],
                 POOL_CASES[24]):
        num_tops = 2 if case[2] == "MAX" else 1
        layer, _ = _build(case, num_tops)
        x = _input(case)
        for a, b in zip(run(layer, x), run(layer.cuda(), x.cuda())):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-12)
    layer, _ = _spp(SPP_CASES[1])
    x = rand(*SPP_CASES[1][3], seed=2)
    torch.testing.assert_close(run(layer.cuda(), x.cuda())[0].cpu(), run(layer.cpu(), x)[0])
    layer, _ = make_layer('name: "sp" type: "Pooling" pooling_param { pool: STOCHASTIC '
                          'kernel_size: 3 stride: 2 }', [(2, 2, 7, 8)], TRAIN)
    x = rand(2, 2, 7, 8, seed=5, low=0.1, high=1.0).cuda().requires_grad_(True)
    y = run(layer.cuda(), x)[0]
    y.sum().backward()
    assert y.shape == (2, 2, 3, 4) and float(x.grad.sum()) == y.numel()
