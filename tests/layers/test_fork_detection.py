"""ROIPooling, PSROIPooling (py-faster-rcnn, R-FCN) and SmoothL1Loss.

The references follow the forks' Forward loops literally (float64, Caffe's ``round``
as half-away-from-zero); gradients are checked numerically on the feature maps and,
for the loss, on predictions and targets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import make_layer, rand, run

from pipeline.errors import ConfigError, DataError, ShapeError


def c_round(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def ref_roi_pool(ph_n, pw_n, scale):
    def ref(bs):
        x, rois = bs
        _, c, h, w = x.shape
        top = np.zeros((len(rois), c, ph_n, pw_n))
        for n, roi in enumerate(rois):
            b = int(roi[0])
            sw, sh, ew, eh = (c_round(v * scale) for v in roi[1:5])
            rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
            bh, bw = rh / ph_n, rw / pw_n
            for ph in range(ph_n):
                for pw in range(pw_n):
                    hs = min(max(math.floor(ph * bh) + sh, 0), h)
                    he = min(max(math.ceil((ph + 1) * bh) + sh, 0), h)
                    ws = min(max(math.floor(pw * bw) + sw, 0), w)
                    we = min(max(math.ceil((pw + 1) * bw) + sw, 0), w)
                    for ch in range(c):
                        if he <= hs or we <= ws:
                            top[n, ch, ph, pw] = 0
                        else:
                            best = -np.finfo(np.float32).max
                            for hh in range(hs, he):
                                for ww in range(ws, we):
                                    best = max(best, x[b, ch, hh, ww])
                            top[n, ch, ph, pw] = best
        return [top]
    return ref


def ref_psroi(out_dim, k, scale):
    def ref(bs):
        x, rois = bs
        _, _, h, w = x.shape
        top = np.zeros((len(rois), out_dim, k, k))
        for n, roi in enumerate(rois):
            b = int(roi[0])
            sw, sh = c_round(roi[1]) * scale, c_round(roi[2]) * scale
            ew, eh = c_round(roi[3] + 1.0) * scale, c_round(roi[4] + 1.0) * scale
            bh, bw = max(eh - sh, 0.1) / k, max(ew - sw, 0.1) / k
            for o in range(out_dim):
                for i in range(k):
                    for j in range(k):
                        hs = min(max(math.floor(i * bh + sh), 0), h)
                        he = min(max(math.ceil((i + 1) * bh + sh), 0), h)
                        ws = min(max(math.floor(j * bw + sw), 0), w)
                        we = min(max(math.ceil((j + 1) * bw + sw), 0), w)
                        ch = (o * k + i) * k + j
                        total = sum(x[b, ch, hh, ww] for hh in range(hs, he) for ww in range(ws, we))
                        area = (he - hs) * (we - ws)
                        top[n, o, i, j] = 0 if he <= hs or we <= ws else total / area
        return [top]
    return ref


def ref_smooth_l1(sigma):
    def ref(bs):
        pred, target, *w = bs
        d = pred - target
        if w:
            d = w[0] * d
        s2 = sigma * sigma
        f = np.where(np.abs(d) < 1 / s2, 0.5 * d * d * s2, np.abs(d) - 0.5 / s2)
        if len(w) == 2:
            f = w[1] * f
        return [np.array(f.sum() / pred.shape[0])]
    return ref


def spaced(*shape, seed=0):
    """Distinct values at least 2/n apart (n = count): max pooling's choice survives the
    gradient checker's +-1e-3 steps."""
    n = int(np.prod(shape))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(torch.float64)
    return (perm * (2.0 / n) - 1.0).reshape(shape)


ROIS = torch.tensor([
    [0, 0, 0, 15, 15],      # the whole map at scale 1/2
    [1, 3, 5, 12, 9],       # second image; 5 * 0.5 = 2.5 rounds to 3 (numpy.round gives 2)
    [0, 5, 5, 5, 5],        # a single pixel region
    [1, 9, 13, 2, 4],       # inverted corners: forced to 1 x 1
    [0, 10, 2, 40, 30],     # reaches past the map: clipped
    [1, 30, 30, 40, 40],    # entirely outside: empty bins give 0
], dtype=torch.float64)
PS_ROIS = torch.tensor([
    [0, 0, 0, 15, 15], [1, 2.5, 3.5, 12.2, 9.7], [0, 5, 5, 5, 5], [1, -3, -2, 6, 20], [0, 30, 30, 40, 40],
], dtype=torch.float64)

CASES = [
    ("roi_pool_2x2_half_scale", "name: 'r' type: 'ROIPooling' "
     "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 }",
     [(2, 3, 8, 8), (6, 5)], [(6, 3, 2, 2)], ref_roi_pool(2, 2, 0.5), [spaced(2, 3, 8, 8), ROIS], [0]),
    ("roi_pool_3x2_scale_1", "name: 'r' type: 'ROIPooling' "
     "roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 1 }",
     [(2, 2, 7, 9), (6, 1, 1, 5)], [(6, 2, 3, 2)], ref_roi_pool(3, 2, 1.0),
     [spaced(2, 2, 7, 9, seed=3), ROIS.reshape(6, 1, 1, 5) / 2], [0]),
    ("roi_pool_7x7_sixteenth", "name: 'r' type: 'ROIPooling' "
     "roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 }",
     [(1, 2, 12, 14), (2, 5)], [(2, 2, 7, 7)], ref_roi_pool(7, 7, 0.0625),
     [spaced(1, 2, 12, 14, seed=5), torch.tensor([[0, 8, 8, 180, 150], [0, 40.5, 0, 99.5, 90]],
                                               dtype=torch.float64)], [0]),
    ("psroi_k3", "name: 'p' type: 'PSROIPooling' "
     "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 }",
     [(2, 18, 8, 8), (5, 5)], [(5, 2, 3, 3)], ref_psroi(2, 3, 0.5), [rand(2, 18, 8, 8), PS_ROIS], [0]),
    ("psroi_k2_scale_1", "name: 'p' type: 'PSROIPooling' "
     "psroi_pooling_param { spatial_scale: 1 output_dim: 3 group_size: 2 }",
     [(2, 12, 6, 7), (5, 5)], [(5, 3, 2, 2)], ref_psroi(3, 2, 1.0),
     [rand(2, 12, 6, 7, seed=2), PS_ROIS / 3], [0]),
    ("smooth_l1_plain", "name: 's' type: 'SmoothL1Loss'", [(4, 8), (4, 8)], [()], ref_smooth_l1(1.0),
     [rand(4, 8, low=-2, high=2), rand(4, 8, seed=1, low=-2, high=2)], [0, 1]),
    ("smooth_l1_rpn_sigma3_weights", "name: 's' type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 3 }",
     [(2, 36, 3, 4)] * 4, [()], ref_smooth_l1(3.0),
     [rand(2, 36, 3, 4), rand(2, 36, 3, 4, seed=1), (rand(2, 36, 3, 4, seed=2) > 0).double(),
      rand(2, 36, 3, 4, seed=3, low=0, high=1)], [0, 1]),
    ("smooth_l1_ssd_inside_weights", "name: 's' type: 'SmoothL1Loss'", [(3, 4, 2)] * 3, [()],
     ref_smooth_l1(1.0), [rand(3, 4, 2, low=-2, high=2), rand(3, 4, 2, seed=1), rand(3, 4, 2, seed=2, low=0)],
     [0, 1]),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_top_shapes(c):
    _, snippet, bottoms, tops, *_ = c
    assert make_layer(snippet, bottoms)[1] == tops


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_forward_matches_numpy(c):
    _, snippet, bottoms, tops, ref, inputs, _ = c
    layer, _ = make_layer(snippet, bottoms)
    (y,) = run(layer, *[t.clone() for t in inputs])
    (want,) = ref([t.numpy().reshape(t.shape[0], -1) if t.shape[-1] == 5 and i == 1 else t.numpy()
                   for i, t in enumerate(inputs)])
    assert tuple(y.shape) == tops[0]
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_gradient(c):
    _, snippet, bottoms, _, _, inputs, check = c
    layer, _ = make_layer(snippet, bottoms)
    assert check_gradient(layer, [t.clone() for t in inputs], check_bottoms=check, max_elements=80) > 0


def test_roi_pooling_gradient_goes_to_the_first_maximum():
    """Fast R-CNN's argmax: the first maximum in row-major order gets the whole gradient."""
    layer, _ = make_layer("name: 'r' type: 'ROIPooling' roi_pooling_param { pooled_h: 1 pooled_w: 1 }",
                          [(1, 1, 2, 3), (1, 5)])
    x = torch.tensor([[[[1.0, 5.0, 2.0], [5.0, 0.0, 5.0]]]], dtype=torch.float64, requires_grad=True)
    (y,) = run(layer, x, torch.tensor([[0, 0, 0, 2, 1]], dtype=torch.float64))
    y.sum().backward()
    assert y.item() == 5.0
    np.testing.assert_array_equal(x.grad.numpy().reshape(-1), [0, 1, 0, 0, 0, 0])


def test_psroi_gradient_spreads_evenly_over_the_bin():
    layer, _ = make_layer("name: 'p' type: 'PSROIPooling' psroi_pooling_param "
                          "{ spatial_scale: 1 output_dim: 1 group_size: 1 }", [(1, 1, 3, 4), (1, 5)])
    x = rand(1, 1, 3, 4).requires_grad_()
    run(layer, x, torch.tensor([[0, 1, 0, 2, 1]], dtype=torch.float64))[0].sum().backward()
    want = np.zeros((3, 4))
    want[0:2, 1:3] = 0.25
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], want)


def test_smooth_l1_gives_no_gradient_to_the_weights():
    layer, _ = make_layer("name: 's' type: 'SmoothL1Loss'", [(2, 3)] * 4)
    ws = [rand(2, 3, seed=s).requires_grad_() for s in (2, 3)]
    run(layer, rand(2, 3).requires_grad_(), rand(2, 3, seed=1), *ws)[0].backward()
    assert all(w.grad is None for w in ws)


def test_roi_pooling_float32_matches_float64():
    layer, _ = make_layer("name: 'r' type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 3 "
                          "spatial_scale: 0.5 }", [(2, 3, 8, 8), (6, 5)])
    x = rand(2, 3, 8, 8)
    a = run(layer, x, ROIS)[0]
    b = run(layer, x.float(), ROIS.float())[0]
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)


ERRORS = [
    ("roi_pooled_0", "name: 'r' type: 'ROIPooling' roi_pooling_param { pooled_w: 2 }", [(1, 2, 4, 4), (1, 5)],
     ConfigError, ["ROIPooling layer 'r'", "pooled_h and pooled_w must be > 0"]),
    ("roi_rois_4_values", "name: 'r' type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 }",
     [(1, 2, 4, 4), (3, 4)], ShapeError, ["ROIPooling layer 'r'", "5 values per region", "(3, 4)"]),
    ("roi_features_3d", "name: 'r' type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 }",
     [(2, 4, 4), (3, 5)], ShapeError, ["4-d"]),
    ("psroi_missing_output_dim", "name: 'p' type: 'PSROIPooling' psroi_pooling_param "
     "{ spatial_scale: 1 group_size: 2 }", [(1, 8, 4, 4), (1, 5)], ConfigError, ["output_dim is required"]),
    ("psroi_channels", "name: 'p' type: 'PSROIPooling' psroi_pooling_param "
     "{ spatial_scale: 1 output_dim: 3 group_size: 2 }", [(1, 8, 4, 4), (1, 5)], ShapeError,
     ["PSROIPooling layer 'p'", "8 channels", "needs 12"]),
    ("smooth_l1_shapes", "name: 's' type: 'SmoothL1Loss'", [(2, 3), (2, 4)], ShapeError,
     ["SmoothL1Loss layer 's'", "bottom 1 (targets)"]),
    ("smooth_l1_sigma_0", "name: 's' type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 0 }",
     [(2, 3), (2, 3)], ConfigError, ["sigma must not be 0"]),
]


@pytest.mark.parametrize("snippet, shapes, error, fragments", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_errors_name_the_layer(snippet, shapes, error, fragments):
    with pytest.raises(error) as info:
        make_layer(snippet, shapes)
    for f in fragments:
        assert f in str(info.value)


def test_region_batch_index_out_of_range():
    layer, _ = make_layer("name: 'r' type: 'ROIPooling' roi_pooling_param { pooled_h: 1 pooled_w: 1 }",
                          [(2, 1, 4, 4), (1, 5)])
    with pytest.raises(DataError, match="ROIPooling layer 'r'.*batch index 2"):
        run(layer, rand(2, 1, 4, 4), torch.tensor([[2.0, 0, 0, 1, 1]], dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for _, snippet, bottoms, _, _, inputs, _ in CASES:
        layer, _ = make_layer(snippet, bottoms)
        xs = [t.float() for t in inputs]
        cpu = run(layer, *xs)[0]
        xs_gpu = [x.cuda().requires_grad_(i == 0) for i, x in enumerate(xs)]
        gpu = run(layer.cuda(), *xs_gpu)[0]
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
        gpu.sum().backward()
        assert xs_gpu[0].grad.device.type == "cuda"
