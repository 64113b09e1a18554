"""Convolution, Deconvolution and Im2col against numpy float64 references of Caffe's math."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import TEST, make_layer, rand, run

from pipeline.errors import ConfigError, PipelineError, ShapeError
from pipeline.proto import caffe_pb2
from pipeline.registry import LAYERS





GAUSS = 'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'


# -- independent numpy references (loops over output positions) -----------------------
def _geometry(cp: dict, nsp: int):
    def per_axis(v, default):
        v = list(v) if isinstance(v, (list, tuple)) else ([v] if v is not None else [])
        return [default] * nsp if not v else (v * nsp if len(v) == 1 else v)

    return (per_axis(cp["k"], None), per_axis(cp.get("s"), 1), per_axis(cp.get("p"), 0),
            per_axis(cp.get("d"), 1))


def np_conv(x, w, b, stride, pad, dil, group):
    """Caffe Convolution: x (num, C, *S), w (O, C/g, *K) -> (num, O, *out)."""
    num, c = x.shape[:2]
    o, cg, *k = w.shape
    nsp = len(k)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(x.shape[2 + i] + 2 * pad[i] - (dil[i] * (k[i] - 1) + 1)) // stride[i] + 1
           for i in range(nsp)]
    y = np.zeros((num, o, *out))
    og = o // group
    for pos in itertools.product(*[range(n) for n in out]):
        sl = tuple(slice(pos[i] * stride[i], pos[i] * stride[i] + dil[i] * (k[i] - 1) + 1,
                         dil[i]) for i in range(nsp))
        patch = xp[(slice(None), slice(None), *sl)]  # (num, C, *K)
        for g in range(group):
            pg = patch[:, g * cg:(g + 1) * cg].reshape(num, -1)
            wg = w[g * og:(g + 1) * og].reshape(og, -1)
            y[(slice(None), slice(g * og, (g + 1) * og), *pos)] = pg @ wg.T
    if b is not None:
        y += b.reshape(1, -1, *([1] * nsp))
    return y


def np_deconv(x, w, b, stride, pad, dil, group):
    """Caffe Deconvolution by scattering: w (C, O/g, *K) -> (num, O, *out)."""
    num, c, *size = x.shape
    _, og, *k = w.shape
    nsp = len(k)
    full = [stride[i] * (size[i] - 1) + dil[i] * (k[i] - 1) + 1 for i in range(nsp)]
    y = np.zeros((num, og * group, *full))
    cg = c // group
    for pos in itertools.product(*[range(n) for n in size]):
        for kk in itertools.product(*[range(n) for n in k]):
            tgt = tuple(pos[i] * stride[i] + kk[i] * dil[i] for i in range(nsp))
            for g in range(group):
                xin = x[(slice(None), slice(g * cg, (g + 1) * cg), *pos)]  # (num, cg)
                wk = w[(slice(g * cg, (g + 1) * cg), slice(None), *kk)]  # (cg, og)
                y[(slice(None), slice(g * og, (g + 1) * og), *tgt)] += xin @ wk
    crop = tuple(slice(pad[i], full[i] - pad[i]) for i in range(nsp))
    y = y[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * nsp))
    return y


def np_im2col(x, kernel, stride, pad, dil):
    """Caffe im2col: row c*prod(K) + (row-major kernel offset), zero outside the image."""
    num, c, *size = x.shape
    nsp = len(size)
    out = [(size[i] + 2 * pad[i] - (dil[i] * (kernel[i] - 1) + 1)) // stride[i] + 1
           for i in range(nsp)]
    kk = math.prod(kernel)
    y = np.zeros((num, c * kk, *out))
    for ci in range(c):
        for r, off in enumerate(itertools.product(*[range(n) for n in kernel])):
            for pos in itertools.product(*[range(n) for n in out]):
                src = [pos[i] * stride[i] - pad[i] + off[i] * dil[i] for i in range(nsp)]
                if all(0 <= src[i] < size[i] for i in range(nsp)):
                    y[(slice(None), ci * kk + r, *pos)] = x[(slice(None), ci, *src)]
    return y


# -- case tables -----------------------------------------------------------------------
# (id, type, convolution_param body, geometry for the reference, bottom shapes, top shapes,
#  gradient check?)
CONV_CASES = [
    ("alexnet_conv1", "Convolution", f"num_output: 96 kernel_size: 11 stride: 4 {GAUSS}",
     dict(k=11, s=4), [(1, 3, 227, 227)], [(1, 96, 55, 55)], False),
    ("pad_stride", "Convolution", f"num_output: 4 kernel_size: 3 stride: 2 pad: 1 {GAUSS}",
     dict(k=3, s=2, p=1), [(2, 3, 6, 5)], [(2, 4, 3, 3)], True),
    ("group_dilation", "Convolution",
     f"num_output: 6 kernel_size: 3 dilation: 2 pad: 1 group: 2 {GAUSS}",
     dict(k=3, p=1, d=2), [(2, 4, 7, 6)], [(2, 6, 5, 4)], True),
    ("group4_depthwise", "Convolution", f"num_output: 4 kernel_size: 3 group: 4 {GAUSS}",
     dict(k=3), [(1, 4, 5, 5)], [(1, 4, 3, 3)], True),
    ("hw_forms", "Convolution",
     f"num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 {GAUSS}",
     dict(k=[3, 2], s=[2, 1], p=[1, 0]), [(2, 2, 7, 5)], [(2, 3, 4, 4)], True),
    ("per_axis", "Convolution",
     f"num_output: 2 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 pad: 0 pad: 1 "
     f"dilation: 1 dilation: 2 {GAUSS}",
     dict(k=[3, 2], s=[1, 2], p=[0, 1], d=[1, 2]), [(1, 2, 6, 7)], [(1, 2, 4, 4)], True),
    ("no_bias_1x1", "Convolution",
     'num_output: 5 kernel_size: 1 bias_term: false weight_filler { type: "gaussian" }',
     dict(k=1), [(2, 3, 4, 4)], [(2, 5, 4, 4)], True),
    ("conv1d", "Convolution", f"num_output: 3 kernel_size: 3 stride: 2 {GAUSS}",
     dict(k=3, s=2), [(2, 2, 9)], [(2, 3, 4)], True),
    ("conv3d", "Convolution",
     f"num_output: 2 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 {GAUSS}",
     dict(k=[2, 3, 2], p=1), [(1, 2, 3, 4, 3)], [(1, 2, 4, 4, 4)], True),
    ("axis2_lead_dims", "Convolution", f"num_output: 2 kernel_size: 2 axis: 2 {GAUSS}",
     dict(k=2), [(2, 2, 3, 4, 3)], [(2, 2, 2, 3, 2)], True),
    ("two_bottoms", "Convolution", f"num_output: 2 kernel_size: 3 pad: 1 {GAUSS}",
     dict(k=3, p=1), [(1, 2, 4, 4), (1, 2, 4, 4)], [(1, 2, 4, 4), (1, 2, 4, 4)], True),
    ("deconv_s2", "Deconvolution", f"num_output: 3 kernel_size: 3 stride: 2 pad: 1 {GAUSS}",
     dict(k=3, s=2, p=1), [(2, 4, 3, 4)], [(2, 3, 5, 7)], True),
    ("deconv_group_dilation", "Deconvolution",
     f"num_output: 4 kernel_size: 3 stride: 2 dilation: 2 pad: 1 group: 2 {GAUSS}",
     dict(k=3, s=2, p=1, d=2), [(1, 4, 3, 3)], [(1, 4, 7, 7)], True),
    ("deconv_bilinear_up", "Deconvolution",
     'num_output: 3 group: 3 kernel_size: 4 stride: 2 pad: 1 bias_term: false '
     'weight_filler { type: "bilinear" }',
     dict(k=4, s=2, p=1), [(1, 3, 5, 5)], [(1, 3, 10, 10)], True),
    ("deconv1d", "Deconvolution", f"num_output: 2 kernel_size: 4 stride: 3 {GAUSS}",
     dict(k=4, s=3), [(2, 3, 4)], [(2, 2, 13)], True),
    ("im2col_basic", "Im2col", "kernel_size: 3 pad: 1 stride: 2",
     dict(k=3, s=2, p=1), [(2, 3, 5, 6)], [(2, 27, 3, 3)], True),
    ("im2col_rect_dilated", "Im2col", "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 dilation: 2",
     dict(k=[2, 3], s=[1, 2], d=2), [(1, 2, 5, 7)], [(1, 12, 3, 2)], True),
    ("im2col_1d", "Im2col", "kernel_size: 3 pad: 2 stride: 2",
     dict(k=3, s=2, p=2), [(2, 2, 6)], [(2, 6, 4)], True),
    ("im2col_3d", "Im2col", "kernel_size: 2 stride: 2 pad: 1 dilation: 1",
     dict(k=2, s=2, p=1), [(1, 2, 3, 4, 3)], [(1, 16, 2, 3, 2)], True),
]
IDS = [c[0] for c in CONV_CASES]


def _build(case, phase=TEST):
    _, typ, body, _, shapes, _, _ = case
    snippet = f'name: "{case[0]}" type: "{typ}" convolution_param {{ {body} }}'
    snippet += "".join(f' top: "t{i}"' for i in range(len(shapes)))
    torch.manual_seed(0)
    return make_layer(snippet, shapes, phase)


def _reference(case, layer, xs):
    _, typ, _, geo, _, _, _ = case
    outs = []
    for x in xs:
        ax = layer.channel_axis
        lead = x.shape[:ax]
        xv = x.reshape(-1, *x.shape[ax:]).numpy()
        k, s, p, d = _geometry(geo, xv.ndim - 2)
        if typ == "Im2col":
            y = np_im2col(xv, k, s, p, d)
        else:
            w = layer.blobs[0].detach().double().numpy()
            b = layer.blobs[1].detach().double().numpy() if layer.bias_term else None
            fn = np_conv if typ == "Convolution" else np_deconv
            y = fn(xv, w, b, s, p, d, layer.group)
        outs.append(y.reshape(*lead, *y.shape[1:]))
    return outs


@pytest.mark.parametrize("case", CONV_CASES, ids=IDS)
def test_top_shapes(case):
    layer, tops = _build(case)
    assert tops == [tuple(t) for t in case[5]]


@pytest.mark.parametrize("case", CONV_CASES, ids=IDS)
def test_forward_matches_numpy(case):
    layer, tops = _build(case)
    layer = layer.double()
    xs = [rand(*s, seed=i + 1) for i, s in enumerate(case[4])]
    got = run(layer, *xs)
    want = _reference(case, layer, xs)
    assert [tuple(g.shape) for g in got] == tops
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[6]],
                         ids=[c[0] for c in CONV_CASES if c[6]])
def test_gradient(case):
    layer, _ = _build(case)
    xs = [rand(*s, seed=i + 1) for i, s in enumerate(case[4])]
    assert check_gradient(layer, xs, max_elements=150) > 0


def test_alexnet_conv1_gradient_subsampled():
    layer, _ = make_layer(f'name: "conv1" type: "Convolution" convolution_param {{ '
                          f'num_output: 4 kernel_size: 11 stride: 4 {GAUSS} }}', [(1, 3, 31, 31)])
    assert check_gradient(layer, [rand(1, 3, 31, 31)], max_elements=60) > 0


def test_blob_shapes_and_default_fillers():
    layer, _ = make_layer('name: "c" type: "Convolution" convolution_param { num_output: 6 '
                          'kernel_size: 3 group: 2 }', [(1, 4, 5, 5)])
    assert [tuple(b.shape) for b in layer.blobs] == [(6, 2, 3, 3), (6,)]
    assert all(float(b.detach().abs().sum()) == 0 for b in layer.blobs)  # Caffe default: constant 0
    layer, _ = make_layer('name: "d" type: "Deconvolution" convolution_param { num_output: 6 '
                          'kernel_size: 3 group: 2 bias_term: false '
                          'bias_filler { type: "constant" value: 1 } }', [(1, 4, 5, 5)])
    assert [tuple(b.shape) for b in layer.blobs] == [(4, 3, 3, 3)]
    layer, _ = make_layer('name: "c" type: "Convolution" convolution_param { num_output: 2 '
                          'kernel_size: 1 bias_filler { type: "constant" value: 0.5 } }',
                          [(1, 3, 2, 2)])
    assert torch.all(layer.blobs[1] == 0.5)


def test_unfold_row_order_is_caffes():
    """Row r of im2col is c*kh*kw + i*kw + j: check one entry by hand."""
    layer, _ = make_layer('name: "i" type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 }',
                          [(1, 2, 4, 5)])
    x = torch.arange(40, dtype=torch.float64).reshape(1, 2, 4, 5)
    y = layer(x)
    c, i, j, oh, ow = 1, 1, 2, 2, 1
    assert y[0, c * 6 + i * 3 + j, oh, ow] == x[0, c, oh + i, ow + j]


def test_from_default_param_does_not_raise():
    for typ in ("Convolution", "Deconvolution", "Im2col"):
        lp = caffe_pb2.LayerParameter(name="x", type=typ)
        assert LAYERS.get(typ).from_param(lp).type == typ


# -- errors: each names the layer and the rule --------------------------------------------
ERROR_CASES = [
    ("Convolution", "num_output: 6 kernel_size: 3 group: 4", [(1, 8, 5, 5)], ConfigError,
     "num_output (6) must be divisible by group"),
    ("Convolution", "num_output: 4 kernel_size: 3 group: 3", [(1, 4, 5, 5)], ConfigError,
     "input channels (4) must be divisible by group"),
    ("Deconvolution", "num_output: 4 kernel_size: 3 group: 3", [(1, 6, 5, 5)], ConfigError,
     "group=3"),
    ("Convolution", "kernel_size: 3", [(1, 4, 5, 5)], ConfigError, "num_output=0"),
    ("Convolution", "num_output: 2", [(1, 4, 5, 5)], ConfigError, "kernel_size must be given"),
    ("Convolution", "num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", [(1, 4, 5, 5)],
     ConfigError, "either kernel_size or kernel_h/kernel_w"),
    ("Convolution", "num_output: 2 kernel_h: 3 kernel_w: 3", [(1, 4, 5, 5, 5)], ConfigError,
     "kernel_h/kernel_w can only be used with 2 spatial"),
    ("Convolution", "num_output: 2 kernel_h: 3", [(1, 4, 5, 5)], ConfigError, "must be > 0"),
    ("Convolution", "num_output: 2 kernel_size: 3 kernel_size: 3", [(1, 4, 5, 5, 5)],
     ConfigError, "given 2 times for 3 spatial axes"),
    ("Convolution", "num_output: 2 kernel_size: 3 stride: 0", [(1, 4, 5, 5)], ConfigError,
     "stride"),
    ("Convolution", "num_output: 2 kernel_size: 3 pad: 1 pad_h: 1", [(1, 4, 5, 5)],
     ConfigError, "either pad or pad_h/pad_w"),
    ("Convolution", "num_output: 2 kernel_size: 1", [(1, 4, 2, 2, 2, 2)], ShapeError,
     "1 to 3 spatial axes"),
    ("Convolution", "num_output: 2 kernel_size: 5 dilation: 2", [(1, 4, 6, 6)], ShapeError,
     "kernel extent 9"),
    ("Convolution", "num_output: 2 kernel_size: 3", [(1, 4, 5, 5), (1, 4, 5, 6)], ShapeError,
     "same shape"),
    ("Convolution", "num_output: 2 kernel_size: 3 axis: 4", [(1, 4, 5, 5)], ConfigError,
     "axis=4"),
    ("Deconvolution", "num_output: 2 kernel_size: 1 pad: 1", [(1, 4, 1, 1)], ShapeError,
     "must be > 0"),
    ("Im2col", "kernel_size: 3", [(4, 3)], ShapeError, "spatial axes"),
]


@pytest.mark.parametrize("typ,body,shapes,err,text", ERROR_CASES,
                         ids=[f"{e[0]}:{e[4][:30]}" for e in ERROR_CASES])
def test_errors_name_layer_and_rule(typ, body, shapes, err, text):
    tops = "".join(f' top: "t{i}"' for i in range(len(shapes)))
    with pytest.raises(err) as info:
        make_layer(f'name: "bad_{typ}" type: "{typ}" convolution_param {{ {body} }}{tops}',
                   shapes)
    msg = str(info.value)
    assert f"'bad_{typ}'" in msg and typ in msg
    assert text in msg


def test_reshape_rejects_changed_channels_and_axes():
    layer, _ = make_layer('name: "c" type: "Convolution" convolution_param { num_output: 2 '
                          'kernel_size: 1 }', [(1, 4, 3, 3)])
    with pytest.raises(ShapeError, match="'c'.*3 channels"):
        layer.reshape([(1, 3, 3, 3)])
    with pytest.raises(ShapeError, match="'c'.*keep 4 axes"):
        layer.reshape([(1, 4, 3, 3, 3)])
    assert layer.reshape([(5, 4, 7, 2)]) == [(5, 2, 7, 2)]


def test_tops_must_match_bottoms():
    with pytest.raises(PipelineError, match="as many tops as bottoms"):
        make_layer('name: "c" type: "Convolution" top: "a" convolution_param { num_output: 2 '
                   'kernel_size: 1 }', [(1, 4, 3, 3), (1, 4, 3, 3)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for case in (CONV_CASES[2], CONV_CASES[8], CONV_CASES[12], CONV_CASES[16], CONV_CASES[18]):
        layer, _ = _build(case)
        layer = layer.double()
        xs = [rand(*s, seed=3) for s in case[4]]
        cpu = run(layer, *xs)
        gpu = run(layer.cuda(), *[x.cuda() for x in xs])
        for a, b in zip(cpu, gpu):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b.cpu(), a, rtol=1e-9, atol=1e-9)
