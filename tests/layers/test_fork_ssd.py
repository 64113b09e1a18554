"""SSD's Normalize, PriorBox, Permute and DetectionOutput against literal numpy
transcriptions of the fork's loops (``normalize_layer.cpp``, ``prior_box_layer.cpp``,
``permute_layer.cpp``, ``detection_output_layer.cpp`` + ``bbox_util.cpp``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import make_layer, rand, run
from ssd_reference import ref_detection_output, ref_nms

from pipeline.errors import ConfigError, ShapeError
from pipeline.layers import ssd_boxes

# -- Normalize ------------------------------------------------------------------------


def ref_normalize(across, eps, scale):
    def ref(bs):
        (x,) = bs
        n, c = x.shape[:2]
        v = x.reshape(n, c, -1)
        top = np.empty_like(v)
        for i in range(n):
            if across:
                top[i] = v[i] * (1.0 / math.sqrt((v[i] ** 2).sum() + eps))
            else:
                for p in range(v.shape[2]):
                    top[i, :, p] = v[i, :, p] / math.sqrt(eps + (v[i, :, p] ** 2).sum())
        s = np.asarray(scale, dtype=np.float64).reshape(1, -1, 1) if np.ndim(scale) else scale
        return [(top * s).reshape(x.shape)]
    return ref


def away_from_zero(*shape, seed=0):
    x = rand(*shape, seed=seed)
    return torch.sign(x) * (0.5 + x.abs())


NORM_CASES = [
    ("across_shared", "norm_param { }", (2, 3, 4, 5), ref_normalize(True, 1e-10, 1.0)),
    ("position_per_channel_20", "norm_param { across_spatial: false channel_shared: false "
     "scale_filler { type: 'constant' value: 20 } }", (2, 3, 4, 5), ref_normalize(False, 1e-10, [20.0] * 3)),
    ("across_per_channel", "norm_param { channel_shared: false eps: 0.5 }", (2, 4, 3, 2),
     ref_normalize(True, 0.5, [1.0] * 4)),
    ("position_shared_2d", "norm_param { across_spatial: false scale_filler { type: 'constant' value: 3 } }",
     (3, 5), ref_normalize(False, 1e-10, 3.0)),
]


@pytest.mark.parametrize("params, shape, ref", [pytest.param(*c[1:], id=c[0]) for c in NORM_CASES])
def test_normalize_forward_and_gradient(params, shape, ref):
    layer, tops = make_layer(f"name: 'n' type: 'Normalize' {params}", [shape])
    assert tops == [shape]
    x = away_from_zero(*shape)
    (y,) = run(layer.double(), x)
    np.testing.assert_allclose(y.detach().numpy(), ref([x.numpy()])[0], rtol=1e-12, atol=1e-12)
    assert check_gradient(layer, [x], stepsize=1e-4, max_elements=40) > 0


def test_normalize_scale_blob_shapes():
    shared, _ = make_layer("name: 'n' type: 'Normalize'", [(1, 3, 2, 2)])
    per, _ = make_layer("name: 'n' type: 'Normalize' norm_param { channel_shared: false }", [(1, 3, 2, 2)])
    assert tuple(shared.blobs[0].shape) == () and tuple(per.blobs[0].shape) == (3,)
    assert float(shared.blobs[0].detach()) == 1.0


# -- PriorBox ---------------------------------------------------------------------------


def ref_priors(lh, lw, ih, iw, min_sizes, max_sizes=(), ars=(), flip=True, clip=False, variance=(0.1,),
               step=None, offset=0.5):
    """prior_box_layer.cpp's Forward_cpu line by line (float where Caffe has float)."""
    f32 = np.float32
    ratios = [1.0]
    for r in ars:
        if any(abs(float(f32(r)) - a) < 1e-6 for a in ratios):
            continue
        ratios.append(float(f32(r)))
        if flip:
            ratios.append(float(f32(1.0 / float(f32(r)))))
    sw = f32(step[1]) if step else f32(iw) / f32(lw)
    sh = f32(step[0]) if step else f32(ih) / f32(lh)
    out = []
    for h in range(lh):
        for w in range(lw):
            cx, cy = float(f32(f32(w) + f32(offset)) * sw), float(f32(f32(h) + f32(offset)) * sh)
            for s, mn in enumerate(min_sizes):
                mn = int(mn)
                boxes = [(mn, mn)]
                if max_sizes:
                    side = float(f32(math.sqrt(mn * int(max_sizes[s]))))
                    boxes.append((side, side))
                for r in ratios:
                    if abs(r - 1.0) < 1e-6:
                        continue
                    base = math.sqrt(mn * int(max_sizes[s])) if max_sizes else mn
                    boxes.append((float(f32(base * math.sqrt(r))), float(f32(base / math.sqrt(r)))))
                for bw, bh in boxes:
                    out += [(cx - bw / 2.0) / iw, (cy - bh / 2.0) / ih, (cx + bw / 2.0) / iw, (cy + bh / 2.0) / ih]
    boxes = np.array(out, dtype=np.float32)
    if clip:
        boxes = np.minimum(np.maximum(boxes, 0), 1)
    var = np.array([variance[k % len(variance)] for k in range(len(boxes))], dtype=np.float32)
    return np.stack([boxes, var])[None]


PRIOR_CASES = [
    ("ssd300_conv4_3", "min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false "
     "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 offset: 0.5",
     (38, 38), (300, 300), dict(min_sizes=[30], max_sizes=[60], ars=[2], variance=(0.1, 0.1, 0.2, 0.2),
                                step=(8, 8))),
    ("mobilenet_conv11_no_max", "min_size: 60 aspect_ratio: 2 variance: 0.1 variance: 0.1 variance: 0.2 "
     "variance: 0.2", (19, 19), (300, 300), dict(min_sizes=[60], ars=[2], variance=(0.1, 0.1, 0.2, 0.2))),
    ("two_sizes_flip_off_clip", "min_size: 20 min_size: 45.7 max_size: 40 max_size: 80 aspect_ratio: 3 "
     "aspect_ratio: 0.5 flip: false clip: true", (3, 5), (40, 70),
     dict(min_sizes=[20, 45.7], max_sizes=[40, 80], ars=[3, 0.5], flip=False, clip=True)),
    ("duplicate_ratios_img_hw_step_hw_offset", "min_size: 10 aspect_ratio: 2 aspect_ratio: 0.5 "
     "aspect_ratio: 1 aspect_ratio: 2 img_h: 100 img_w: 50 step_h: 9.5 step_w: 7 offset: 0",
     (4, 3), (100, 50), dict(min_sizes=[10], ars=[2, 0.5, 1, 2], step=(9.5, 7), offset=0.0)),
]


@pytest.mark.parametrize("params, feat, img, kw", [pytest.param(*c[1:], id=c[0]) for c in PRIOR_CASES])
def test_prior_box_matches_caffes_loops(params, feat, img, kw):
    snippet = f"name: 'p' type: 'PriorBox' prior_box_param {{ {params} }}"
    image = (2, 3, 17, 23) if "img_h" in params else (2, 3, *img)  # img_h/img_w override bottom 1
    layer, tops = make_layer(snippet, [(2, 8, *feat), image])
    (y,) = run(layer, torch.zeros(2, 8, *feat), torch.zeros(image))
    want = ref_priors(*feat, *img, **kw)
    assert tops == [want.shape]
    assert tuple(y.shape) == want.shape and y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), want, rtol=2e-7, atol=1e-7)


def test_prior_box_first_boxes_by_hand():
    """SSD300 conv4_3 cell (0, 0): centre (4, 4) px; squares 30 and sqrt(30 * 60), then ratio 2 and
    1/2 boxes on the sqrt(30 * 60) base: 60 x 30 and 30 x 60."""
    layer, _ = make_layer("name: 'p' type: 'PriorBox' prior_box_param { min_size: 30 max_size: 60 "
                          "aspect_ratio: 2 step: 8 }", [(1, 1, 38, 38), (1, 3, 300, 300)])
    (y,) = run(layer, torch.zeros(1, 1, 38, 38), torch.zeros(1, 3, 300, 300))
    s = math.sqrt(1800)
    w, h = s * math.sqrt(2), s / math.sqrt(2)  # 60, 30
    want = [4 - 15, 4 - 15, 4 + 15, 4 + 15, 4 - s / 2, 4 - s / 2, 4 + s / 2, 4 + s / 2,
            4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2, 4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2]
    np.testing.assert_allclose(y[0, 0, :16].numpy() * 300, want, rtol=1e-5)
    assert y.shape == (1, 2, 38 * 38 * 4 * 4)
    np.testing.assert_allclose(y[0, 1, :8].numpy(), [0.1] * 8, rtol=1e-7)


# -- Permute -----------------------------------------------------------------------------

PERMUTES = [("ssd_nchw_to_nhwc", [0, 2, 3, 1], (2, 3, 4, 5)), ("partial_order", [2], (2, 3, 4)),
            ("reverse", [3, 2, 1, 0], (2, 1, 3, 2))]


@pytest.mark.parametrize("order, shape", [pytest.param(*c[1:], id=c[0]) for c in PERMUTES])
def test_permute(order, shape):
    orders = order + [i for i in range(len(shape)) if i not in order]
    layer, tops = make_layer("name: 'p' type: 'Permute' permute_param { "
                             + " ".join(f"order: {o}" for o in order) + " }", [shape])
    x = rand(*shape)
    (y,) = run(layer, x)
    assert tops == [tuple(shape[o] for o in orders)]
    np.testing.assert_array_equal(y.numpy(), np.transpose(x.numpy(), orders))
    assert y.is_contiguous()
    assert check_gradient(layer, [x]) > 0


def test_permute_identity_shares_the_bottom():
    layer, _ = make_layer("name: 'p' type: 'Permute' permute_param { order: 0 order: 1 }", [(2, 3)])
    x = rand(2, 3)
    assert run(layer, x)[0] is x


# -- DetectionOutput ---------------------------------------------------------------------


def _det_inputs(n, p, classes, lc, seed):
    g = np.random.default_rng(seed)
    centers = g.uniform(0.1, 0.9, size=(p, 2))
    sizes = g.uniform(0.1, 0.5, size=(p, 2))
    prior = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    prior[::3, :] = prior[0]  # identical priors: NMS has something to suppress
    var = np.tile([0.1, 0.1, 0.2, 0.2], (p, 1))
    prior_blob = np.stack([prior.reshape(-1), var.reshape(-1)])[None]
    loc = g.normal(0, 1, size=(n, p * lc * 4))
    logits = g.normal(0, 2, size=(n, p, classes))
    conf = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return loc, conf.reshape(n, -1), prior_blob


DET_CASES = [
    ("center_size_basic", dict(classes=3, code="CENTER_SIZE", nms=0.45)),
    ("corner_keep_top_k", dict(classes=4, code="CORNER", nms=0.3, keep_top_k=5)),
    ("corner_size_threshold_topk", dict(classes=3, code="CORNER_SIZE", nms=0.5, top_k=4, conf_thr=0.2)),
    ("not_shared_bg2", dict(classes=3, share=False, bg=2, code="CENTER_SIZE", nms=0.4)),
    ("variance_in_target_eta", dict(classes=3, code="CENTER_SIZE", in_target=True, nms=0.9, eta=0.7)),
    ("no_background", dict(classes=2, share=False, bg=-1, code="CORNER", nms=0.5)),
    ("nothing_passes", dict(classes=3, code="CENTER_SIZE", conf_thr=0.999)),
]


def _det_snippet(kw):
    code = kw.get("code", "CORNER")
    conf_thr = f"confidence_threshold: {kw['conf_thr']}" if "conf_thr" in kw else ""
    top_k = f"top_k: {kw['top_k']}" if "top_k" in kw else ""
    return (f"name: 'det' type: 'DetectionOutput' detection_output_param {{ num_classes: {kw['classes']} "
            f"share_location: {str(kw.get('share', True)).lower()} background_label_id: {kw.get('bg', 0)} "
            f"nms_param {{ nms_threshold: {kw.get('nms', 0.3)} {top_k} eta: {kw.get('eta', 1.0)} }} "
            f"code_type: {code} variance_encoded_in_target: {str(kw.get('in_target', False)).lower()} "
            f"keep_top_k: {kw.get('keep_top_k', -1)} {conf_thr} }}")


@pytest.mark.parametrize("kw", [pytest.param(c[1], id=c[0]) for c in DET_CASES])
def test_detection_output_matches_caffes_loops(kw):
    n, p = 2, 12
    lc = 1 if kw.get("share", True) else kw["classes"]
    loc, conf, prior = _det_inputs(n, p, kw["classes"], lc, seed=len(str(kw)))
    layer, tops = make_layer(_det_snippet(kw), [loc.shape, conf.shape, prior.shape])
    assert tops == [(1, 1, 1, 7)]
    (y,) = run(layer, *(torch.from_numpy(a) for a in (loc, conf, prior)))
    want = ref_detection_output(loc, conf, prior, **kw)
    assert y.shape == want.shape and y.dtype == torch.float64
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)
    if kw.get("conf_thr", 0) < 0.99:
        assert y.shape[2] >= 2  # something was detected (and, in several cases, suppressed)


def test_nms_fast_float32_matches_the_loop_on_many_boxes():
    g = np.random.default_rng(7)
    xy = g.uniform(0, 0.8, size=(300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + g.uniform(0.05, 0.3, size=(300, 2)).astype(np.float32)], axis=1)
    scores = g.uniform(0, 1, size=300).astype(np.float32)
    got = ssd_boxes.nms_fast(boxes, ssd_boxes.bbox_size(boxes), scores, 0.1, 0.45, 1.0, 200)
    assert got == ref_nms(boxes.tolist(), scores.tolist(), 0.1, 0.45, 1.0, 200)
    assert 10 < len(got) < 200


@pytest.mark.parametrize("code", ["CORNER", "CENTER_SIZE", "CORNER_SIZE"])
@pytest.mark.parametrize("in_target", [False, True])
def test_encode_inverts_decode(code, in_target):
    _, _, prior = _det_inputs(1, 6, 2, 1, seed=3)
    pri, var = prior[0, 0].reshape(6, 4), prior[0, 1].reshape(6, 4)
    loc = np.random.default_rng(1).normal(0, 0.5, size=(6, 4))
    boxes = ssd_boxes.decode(pri, var, loc, code, in_target)
    back = np.stack([ssd_boxes.encode(pri[j], var[j], boxes[j], code, in_target) for j in range(6)])
    np.testing.assert_allclose(back, loc, rtol=1e-9, atol=1e-12)


def test_detection_output_has_no_gradient():
    layer, _ = make_layer(_det_snippet(dict(classes=3, code="CENTER_SIZE")), [(1, 48), (1, 36), (1, 2, 48)])
    loc, conf, prior = (torch.from_numpy(a) for a in _det_inputs(1, 12, 3, 1, seed=1))
    (y,) = run(layer, loc.requires_grad_(), conf, prior)
    assert not y.requires_grad


ERRORS = [
    ("det_no_num_classes", "name: 'd' type: 'DetectionOutput'", [(1, 8), (1, 6), (1, 2, 8)], ConfigError,
     ["DetectionOutput layer 'd'", "num_classes is required"]),
    ("det_loc_count", "name: 'd' type: 'DetectionOutput' detection_output_param { num_classes: 3 }",
     [(1, 12), (1, 6), (1, 2, 8)], ShapeError, ["2 priors", "need 8 location values", "(1, 12)"]),
    ("det_conf_count", "name: 'd' type: 'DetectionOutput' detection_output_param { num_classes: 3 }",
     [(1, 8), (1, 7), (1, 2, 8)], ShapeError, ["need 6", "(1, 7)"]),
    ("det_shared_bg_minus_1", "name: 'd' type: 'DetectionOutput' detection_output_param "
     "{ num_classes: 3 background_label_id: -1 }", [(1, 8), (1, 6), (1, 2, 8)], ConfigError,
     ["background_label_id -1"]),
    ("det_eta", "name: 'd' type: 'DetectionOutput' detection_output_param "
     "{ num_classes: 3 nms_param { eta: 1.5 } }", [(1, 8), (1, 6), (1, 2, 8)], ConfigError, ["eta=1.5"]),
    ("prior_no_min", "name: 'p' type: 'PriorBox'", [(1, 1, 2, 2), (1, 3, 8, 8)], ConfigError,
     ["PriorBox layer 'p'", "min_size"]),
    ("prior_max_not_above_min", "name: 'p' type: 'PriorBox' prior_box_param { min_size: 30 max_size: 20 }",
     [(1, 1, 2, 2), (1, 3, 8, 8)], ConfigError, ["max_size 20 must be greater than min_size 30"]),
    ("prior_three_variances", "name: 'p' type: 'PriorBox' prior_box_param { min_size: 3 variance: 0.1 "
     "variance: 0.1 variance: 0.2 }", [(1, 1, 2, 2), (1, 3, 8, 8)], ConfigError, ["one variance or four"]),
    ("prior_step_both", "name: 'p' type: 'PriorBox' prior_box_param { min_size: 3 step: 8 step_h: 8 "
     "step_w: 8 }", [(1, 1, 2, 2), (1, 3, 8, 8)], ConfigError, ["step or step_h/step_w, not both"]),
    ("permute_repeat", "name: 'p' type: 'Permute' permute_param { order: 1 order: 1 }", [(2, 3)],
     ConfigError, ["Permute layer 'p'", "repeats axis 1"]),
    ("permute_axis_range", "name: 'p' type: 'Permute' permute_param { order: 3 }", [(2, 3)], ConfigError,
     ["order 3 is not an axis"]),
    ("normalize_5d", "name: 'n' type: 'Normalize'", [(1, 2, 3, 4, 5)], ShapeError,
     ["Normalize layer 'n'", "2 to 4 axes"]),
]


@pytest.mark.parametrize("snippet, shapes, error, fragments", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_errors_name_the_layer(snippet, shapes, error, fragments):
    with pytest.raises(error) as info:
        make_layer(snippet, shapes)
    for f in fragments:
        assert f in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    layer, _ = make_layer("name: 'n' type: 'Normalize' norm_param { across_spatial: false }", [(2, 3, 4, 5)])
    x = away_from_zero(2, 3, 4, 5).float()
    torch.testing.assert_close(run(layer.cuda(), x.cuda())[0].cpu(), run(layer.cpu(), x)[0], rtol=1e-5, atol=1e-6)
    layer, _ = make_layer("name: 'p' type: 'PriorBox' prior_box_param { min_size: 30 max_size: 60 "
                          "aspect_ratio: 2 step: 8 }", [(1, 1, 38, 38), (1, 3, 300, 300)])
    feat, img = torch.zeros(1, 1, 38, 38), torch.zeros(1, 3, 300, 300)
    gpu = run(layer, feat.cuda(), img.cuda())[0]
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), run(layer, feat, img)[0])
    kw = dict(classes=3, code="CENTER_SIZE", nms=0.45)
    arrays = [torch.from_numpy(a).float() for a in _det_inputs(2, 12, 3, 1, seed=5)]
    layer, _ = make_layer(_det_snippet(kw), [a.shape for a in arrays])
    gpu = run(layer, *(a.cuda() for a in arrays))[0]
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), run(layer, *arrays)[0])
