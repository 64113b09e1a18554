"""Small fork layers: Upsample (SegNet, YOLOv3 ports), Interp (DeepLab), ShuffleChannel,
ReLU6, Axpy (SENet).

One table (CASES) drives the top-shape, forward and gradient tests; the numpy
references below follow each fork's Forward_cpu loops, element by element.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradient_check import check_gradient
from layer_harness import make_layer, rand, run

from pipeline.errors import ConfigError, DataError, ShapeError

# -- numpy references ------------------------------------------------------------


def ref_unpool(uh, uw):
    """SegNet's Forward_cpu: top[mask[i]] = bottom[i], plane by plane."""
    def ref(bs):
        x, mask = bs
        n, c = x.shape[:2]
        top = np.zeros((n, c, uh * uw))
        for i in range(n):
            for j in range(c):
                for k, v in enumerate(x[i, j].reshape(-1)):
                    top[i, j, int(mask[i, j].reshape(-1)[k])] = v
        return [top.reshape(n, c, uh, uw)]
    return ref


def ref_nearest(s):
    def ref(bs):
        (x,) = bs
        n, c, h, w = x.shape
        top = np.empty((n, c, h * s, w * s))
        for hh in range(h * s):
            for ww in range(w * s):
                top[:, :, hh, ww] = x[:, :, hh // s, ww // s]
        return [top]
    return ref


def ref_interp(out_hw, pad_beg=0, pad_end=0):
    """DeepLab's caffe_cpu_interp2 (float32 ratios, as the fork) on the cropped input."""
    def ref(bs):
        x = bs[0]
        b = -pad_beg
        h_in, w_in = x.shape[2] + pad_beg + pad_end, x.shape[3] + pad_beg + pad_end
        x = x[:, :, b : b + h_in, b : b + w_in]
        h2, w2 = out_hw
        top = np.empty(x.shape[:2] + (h2, w2))
        rh = np.float32(h_in - 1) / np.float32(h2 - 1) if h2 > 1 else np.float32(0)
        rw = np.float32(w_in - 1) / np.float32(w2 - 1) if w2 > 1 else np.float32(0)
        for i in range(h2):
            h1r = np.float32(rh * np.float32(i))
            h1 = int(h1r)
            hp = 1 if h1 < h_in - 1 else 0
            l1 = float(np.float32(h1r - np.float32(h1)))
            for j in range(w2):
                w1r = np.float32(rw * np.float32(j))
                w1 = int(w1r)
                wp = 1 if w1 < w_in - 1 else 0
                m1 = float(np.float32(w1r - np.float32(w1)))
                top[:, :, i, j] = (1 - l1) * ((1 - m1) * x[:, :, h1, w1] + m1 * x[:, :, h1, w1 + wp]) \
                    + l1 * ((1 - m1) * x[:, :, h1 + hp, w1] + m1 * x[:, :, h1 + hp, w1 + wp])
        return [top]
    return ref


def ref_shuffle(g):
    def ref(bs):
        (x,) = bs
        c = x.shape[1]
        k = c // g
        top = np.empty_like(x)
        for i in range(g):
            for j in range(k):
                top[:, j * g + i] = x[:, i * k + j]
        return [top]
    return ref


def ref_relu6(bs):
    return [np.minimum(np.maximum(bs[0], 0), 6)]


def ref_axpy(bs):
    a, x, y = bs
    a = a.reshape(a.shape[0], a.shape[1], *([1] * (x.ndim - 2)))
    return [a * x + y]


# -- inputs ------------------------------------------------------------------------


def pool_mask(n, c, h, w, seed, out=None):
    """A MAX 2x2/2 pooling mask over an ``out`` plane (default (2h, 2w)): one cell per
    window, windows clipped at the edge (Caffe's ceil pooling of an odd size)."""
    oh, ow = out or (2 * h, 2 * w)
    g = np.random.default_rng(seed)
    dh, dw = g.integers(0, 2, size=(n, c, h, w)), g.integers(0, 2, size=(n, c, h, w))
    rows = np.minimum(2 * np.arange(h)[:, None] + dh, oh - 1)
    cols = np.minimum(2 * np.arange(w)[None, :] + dw, ow - 1)
    return torch.tensor(rows * ow + cols, dtype=torch.float64)


def away_from(x, points, gap=0.05):
    """Move values within ``gap`` of a kink of the function to ``point + 2 gap``."""
    for p in points:
        x = torch.where((x - p).abs() < gap, p + 2 * gap, x)
    return x


MASK = pool_mask(2, 3, 3, 4, seed=1)

CASES = [
    ("upsample_segnet_scale", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' upsample_param { scale: 2 }",
     [(2, 3, 3, 4), (2, 3, 3, 4)], [(2, 3, 6, 8)], ref_unpool(6, 8), [rand(2, 3, 3, 4), MASK], [0]),
    ("upsample_segnet_explicit", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' "
     "upsample_param { upsample_h: 5 upsample_w: 7 }",
     [(2, 3, 3, 4), (2, 3, 3, 4)], [(2, 3, 5, 7)], ref_unpool(5, 7),
     [rand(2, 3, 3, 4), pool_mask(2, 3, 3, 4, seed=4, out=(5, 7))], [0]),
    ("upsample_segnet_pad_out", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' "
     "upsample_param { scale: 2 pad_out_h: true }",
     [(2, 3, 3, 4), (2, 3, 3, 4)], [(2, 3, 5, 8)], ref_unpool(5, 8),
     [rand(2, 3, 3, 4), pool_mask(2, 3, 3, 4, seed=2, out=(5, 8))], [0]),
    ("upsample_nearest_yolo", "name: 'u' type: 'Upsample' upsample_param { scale: 2 }",
     [(1, 2, 3, 3)], [(1, 2, 6, 6)], ref_nearest(2), None, None),
    ("upsample_nearest_3", "name: 'u' type: 'Upsample' upsample_param { scale: 3 }",
     [(2, 1, 2, 3)], [(2, 1, 6, 9)], ref_nearest(3), None, None),
    ("interp_zoom", "name: 'i' type: 'Interp' interp_param { zoom_factor: 3 }",
     [(1, 2, 4, 5)], [(1, 2, 10, 13)], ref_interp((10, 13)), None, None),
    ("interp_shrink", "name: 'i' type: 'Interp' interp_param { shrink_factor: 2 }",
     [(1, 2, 9, 8)], [(1, 2, 5, 4)], ref_interp((5, 4)), None, None),
    ("interp_size", "name: 'i' type: 'Interp' interp_param { height: 7 width: 3 }",
     [(2, 1, 4, 6)], [(2, 1, 7, 3)], ref_interp((7, 3)), None, None),
    ("interp_shrink_zoom_crop", "name: 'i' type: 'Interp' "
     "interp_param { shrink_factor: 2 zoom_factor: 3 pad_beg: -1 pad_end: -1 }",
     [(1, 2, 11, 9)], [(1, 2, 13, 10)], ref_interp((13, 10), -1, -1), None, None),
    ("interp_to_one", "name: 'i' type: 'Interp' interp_param { height: 1 width: 4 }",
     [(1, 2, 3, 4)], [(1, 2, 1, 4)], ref_interp((1, 4)), None, None),
    ("interp_two_bottoms_pspnet", "name: 'i' type: 'Interp' bottom: 'x' bottom: 'ref'",
     [(1, 2, 4, 4), (1, 5, 9, 6)], [(1, 2, 9, 6)], ref_interp((9, 6)), None, [0]),
    ("shuffle_g3", "name: 's' type: 'ShuffleChannel' shuffle_channel_param { group: 3 }",
     [(2, 12, 2, 3)], [(2, 12, 2, 3)], ref_shuffle(3), None, None),
    ("shuffle_g2_2d", "name: 's' type: 'ShuffleChannel' shuffle_channel_param { group: 2 }",
     [(3, 8)], [(3, 8)], ref_shuffle(2), None, None),
    ("relu6", "name: 'r' type: 'ReLU6'", [(4, 5, 3)], [(4, 5, 3)], ref_relu6,
     [away_from(rand(4, 5, 3, low=-3, high=9), (0.0, 6.0))], None),
    ("axpy_4d_scale", "name: 'a' type: 'Axpy'", [(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)], [(2, 3, 4, 5)],
     ref_axpy, None, None),
    ("axpy_2d_scale", "name: 'a' type: 'Axpy'", [(2, 3), (2, 3, 4, 5), (2, 3, 4, 5)], [(2, 3, 4, 5)],
     ref_axpy, None, None),
]


def _inputs(c):
    _, _, bottoms, _, _, inputs, _ = c
    if inputs is not None:
        return [t.clone() for t in inputs]
    return [rand(*s, seed=i) for i, s in enumerate(bottoms)]


IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_top_shapes(c):
    _, snippet, bottoms, tops, *_ = c
    _, got = make_layer(snippet, bottoms)
    assert got == tops


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_forward_matches_numpy(c):
    _, snippet, bottoms, tops, ref, *_ = c
    layer, _ = make_layer(snippet, bottoms)
    xs = _inputs(c)
    (y,) = run(layer, *xs)
    (want,) = ref([x.numpy() for x in xs])
    assert tuple(y.shape) == tops[0] and y.dtype == torch.float64
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_gradient(c):
    _, snippet, bottoms, *_, check = c
    layer, _ = make_layer(snippet, bottoms)
    assert check_gradient(layer, _inputs(c), check_bottoms=check, max_elements=60) > 0


# -- behaviour beyond the table ------------------------------------------------------


def test_interp_zoom_equals_align_corners_bilinear():
    """An independent implementation: torch's align_corners=True bilinear resize."""
    layer, _ = make_layer("name: 'i' type: 'Interp' interp_param { zoom_factor: 4 }", [(2, 3, 5, 6)])
    x = rand(2, 3, 5, 6)
    (y,) = run(layer, x)
    want = F.interpolate(x, size=(17, 21), mode="bilinear", align_corners=True)
    torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)


def test_interp_same_size_copies():
    layer, tops = make_layer("name: 'i' type: 'Interp' interp_param { height: 4 width: 5 }", [(1, 2, 4, 5)])
    x = rand(1, 2, 4, 5)
    assert tops == [(1, 2, 4, 5)] and torch.equal(run(layer, x)[0], x)


def test_upsample_undoes_caffe_max_pooling_in_a_net():
    """SegNet's pairing: Pooling (MAX, mask top) -> Upsample puts each max back in place."""
    from google.protobuf import text_format

    import pipeline as caffe
    from pipeline.proto import caffe_pb2

    net_text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 8 } } }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
            pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" upsample_param { scale: 2 } }
    """
    net = caffe.Net(text_format.Parse(net_text, caffe_pb2.NetParameter()), caffe.TEST)
    x = np.random.default_rng(3).standard_normal((1, 2, 6, 8)).astype(np.float32)
    up = net.forward(data=x)["up"]
    windows = x.reshape(1, 2, 3, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 3, 4, 4)
    keep = windows == windows.max(axis=-1, keepdims=True)
    want = np.where(keep, windows, 0).reshape(1, 2, 3, 4, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 6, 8)
    np.testing.assert_array_equal(up, want)


def test_upsample_gradient_reads_the_top_at_the_mask():
    """SegNet's Backward_cpu: bottom_diff[i] = top_diff[mask[i]], also for repeated indices."""
    layer, _ = make_layer("name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' upsample_param { scale: 2 }",
                          [(1, 1, 1, 2), (1, 1, 1, 2)])
    x = torch.tensor([[[[3.0, 3.0]]]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[[[1.0, 1.0]]]], dtype=torch.float64)  # overlapping windows: same argmax
    (y,) = run(layer, x, mask)
    seed = torch.arange(8, dtype=torch.float64).reshape(1, 1, 2, 4)
    y.backward(seed)
    np.testing.assert_array_equal(x.grad.numpy().reshape(-1), [1.0, 1.0])
    np.testing.assert_array_equal(y.detach().numpy().reshape(-1), [0, 3, 0, 0, 0, 0, 0, 0])


def test_relu6_gradient_is_zero_at_both_kinks():
    layer, _ = make_layer("name: 'r' type: 'ReLU6'", [(5,)])
    x = torch.tensor([-1.0, 0.0, 3.0, 6.0, 7.0], dtype=torch.float64, requires_grad=True)
    run(layer, x)[0].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 1, 0, 0])


def test_axpy_gradients_are_senets_formulas():
    layer, _ = make_layer("name: 'a' type: 'Axpy'", [(2, 3, 1, 1), (2, 3, 4, 4), (2, 3, 4, 4)])
    a, x, y = (rand(*s, seed=i).requires_grad_() for i, s in enumerate([(2, 3, 1, 1), (2, 3, 4, 4), (2, 3, 4, 4)]))
    dtop = rand(2, 3, 4, 4, seed=9)
    run(layer, a, x, y)[0].backward(dtop)
    np.testing.assert_allclose(a.grad.numpy(), (x * dtop).sum(dim=(2, 3), keepdim=True).detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), (a * dtop).detach().numpy())
    np.testing.assert_array_equal(y.grad.numpy(), dtop.numpy())


def test_plain_constructor_defaults():
    from pipeline.layers.fork_misc import Interp, ShuffleChannel, Upsample

    assert Upsample().scale is None and Upsample().pad_out == (False, False)
    assert ShuffleChannel().group == 1
    assert (Interp().pad_beg, Interp().pad_end) == (0, 0)


ERRORS = [
    ("upsample_mask_shape", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm'", [(1, 2, 3, 3), (1, 2, 3, 4)],
     ShapeError, ["Upsample layer 'u'", "mask"]),
    ("upsample_scale_1", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' upsample_param { scale: 1 }",
     [(1, 2, 3, 3), (1, 2, 3, 3)], ConfigError, ["Upsample layer 'u'", "> 1"]),
    ("upsample_pad_out_scale_3", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' "
     "upsample_param { scale: 3 pad_out_w: true }", [(1, 2, 3, 3), (1, 2, 3, 3)],
     ConfigError, ["pad_out_w", "scale_w == 2"]),
    ("upsample_scale_and_scale_h", "name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' "
     "upsample_param { scale: 2 scale_h: 2 scale_w: 2 }", [(1, 2, 3, 3), (1, 2, 3, 3)],
     ConfigError, ["Upsample layer 'u'", "upsample_h"]),
    ("upsample_nearest_with_size", "name: 'u' type: 'Upsample' upsample_param { upsample_h: 4 upsample_w: 4 }",
     [(1, 2, 2, 2)], ConfigError, ["one bottom", "scale"]),
    ("upsample_3d", "name: 'u' type: 'Upsample'", [(1, 2, 3)], ShapeError, ["4-d"]),
    ("interp_positive_pad", "name: 'i' type: 'Interp' interp_param { zoom_factor: 2 pad_beg: 1 }",
     [(1, 2, 3, 3)], ConfigError, ["Interp layer 'i'", "non-positive padding"]),
    ("interp_no_size", "name: 'i' type: 'Interp'", [(1, 2, 3, 3)], ConfigError,
     ["Interp layer 'i'", "shrink_factor", "height and width"]),
    ("interp_zoom_0", "name: 'i' type: 'Interp' interp_param { zoom_factor: 0 }", [(1, 2, 3, 3)],
     ConfigError, ["zoom_factor=0"]),
    ("interp_crop_too_much", "name: 'i' type: 'Interp' interp_param { zoom_factor: 2 pad_beg: -2 pad_end: -2 }",
     [(1, 2, 3, 3)], ShapeError, ["Interp layer 'i'", "positive"]),
    ("shuffle_indivisible", "name: 's' type: 'ShuffleChannel' shuffle_channel_param { group: 4 }",
     [(1, 6, 2, 2)], ShapeError, ["ShuffleChannel layer 's'", "divisible by group 4"]),
    ("shuffle_group_0", "name: 's' type: 'ShuffleChannel' shuffle_channel_param { group: 0 }",
     [(1, 6, 2, 2)], ConfigError, ["group must be > 0"]),
    ("axpy_scale_not_1x1", "name: 'a' type: 'Axpy'", [(2, 3, 2, 2), (2, 3, 4, 4), (2, 3, 4, 4)],
     ShapeError, ["Axpy layer 'a'", "(2, 3, 2, 2)"]),
    ("axpy_xy_differ", "name: 'a' type: 'Axpy'", [(2, 3, 1, 1), (2, 3, 4, 4), (2, 3, 4, 5)],
     ShapeError, ["Axpy layer 'a'", "same shape"]),
]


@pytest.mark.parametrize("snippet, shapes, error, fragments", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_errors_name_the_layer(snippet, shapes, error, fragments):
    with pytest.raises(error) as info:
        make_layer(snippet, shapes)
    for f in fragments:
        assert f in str(info.value)


def test_upsample_mask_index_out_of_range():
    layer, _ = make_layer("name: 'u' type: 'Upsample' bottom: 'x' bottom: 'm' upsample_param { scale: 2 }",
                          [(1, 1, 2, 2), (1, 1, 2, 2)])
    with pytest.raises(DataError, match="Upsample layer 'u'.*mask index 16"):
        run(layer, rand(1, 1, 2, 2), torch.tensor([[[[0.0, 1.0], [2.0, 16.0]]]], dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for c in CASES:
        _, snippet, bottoms, *_ = c
        layer, _ = make_layer(snippet, bottoms)
        xs = [x.float() for x in _inputs(c)]
        cpu = run(layer, *xs)[0]
        xs_gpu = [x.cuda().requires_grad_(i == 0) for i, x in enumerate(xs)]
        gpu = run(layer.cuda(), *xs_gpu)[0]
        assert gpu.device.type == "cuda", c[0]
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
        gpu.sum().backward()
        assert xs_gpu[0].grad is not None and xs_gpu[0].grad.device.type == "cuda"
