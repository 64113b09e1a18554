"""Tests of the affine layers: InnerProduct, Scale, Bias, Embed, Parameter.

One table (CASES) drives the top-shape, blob-shape, forward and gradient tests.
Forward references are independent numpy float64 versions of Caffe's formulas
(Scale/Bias follow Caffe's outer x scale_dim x inner loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import make_layer, rand, run

import pipeline.layers.affine  # noqa: F401  (registers the layers)
from pipeline.errors import ConfigError, DataError, ShapeError
from pipeline.layers.affine import Bias, Embed, InnerProduct, Parameter, Scale
from pipeline.registry import LAYERS


# -- numpy references ----------------------------------------------------------
def ref_inner_product(axis, transpose, bias):
    def f(b, w):
        x = b[0]
        a = axis % x.ndim
        m = math.prod(x.shape[:a])
        xm = x.reshape(m, -1)  # (M, K)
        wt = w[0].T if transpose else w[0]  # (N, K)
        y = np.zeros((m, wt.shape[0]))
        for i in range(m):
            for n in range(wt.shape[0]):
                y[i, n] = np.dot(xm[i], wt[n]) + (w[1][n] if bias else 0.0)
        return [y.reshape(x.shape[:a] + (wt.shape[0],))]

    return f


def caffe_broadcast(x, p, axis, op):
    """Caffe's Scale/Bias loop: x as (outer, p.size, inner), p applied per middle index."""
    a = 0 if p.ndim == 0 else axis % x.ndim
    outer = math.prod(x.shape[:a])
    inner = math.prod(x.shape[a + p.ndim :])
    xs = x.reshape(outer, p.size, inner)
    flat = p.reshape(-1)
    out = np.empty_like(xs)
    for n in range(outer):
        for d in range(p.size):
            out[n, d] = op(xs[n, d], flat[d])
    return out.reshape(x.shape)


def ref_scale(axis, bias):
    def f(b, w):
        gamma = b[1] if len(b) > 1 else w[0]
        y = caffe_broadcast(b[0], gamma, axis, np.multiply)
        if bias:
            y = caffe_broadcast(y, w[-1], axis, np.add)
        return [y]

    return f


def ref_bias(axis):
    def f(b, w):
        beta = b[1] if len(b) > 1 else w[0]
        return [caffe_broadcast(b[0], beta, axis, np.add)]

    return f


def ref_embed(bias):
    def f(b, w):
        idx = b[0].astype(np.int64)
        y = np.stack([w[0][i] for i in idx.reshape(-1)]).reshape(idx.shape + (w[0].shape[1],))
        return [y + w[1] if bias else y]

    return f


def ref_parameter(b, w):
    return [w[0]]


def indices(*shape, high=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=g).to(torch.float64)


# -- the table -------------------------------------------------------------------
@dataclass
class Case:
    id: str
    snippet: str
    bottoms: list
    tops: list
    blobs: list
    ref: object
    inputs: object = None  # callable -> list of tensors (default: rand per bottom)
    grad: dict = field(default_factory=dict)  # extra check_gradient kwargs; None = no check


def ip(body, name="ip"):
    return f"name: '{name}' type: 'InnerProduct' inner_product_param {{ {body} }}"


def scale(body="", name="sc"):
    return f"name: '{name}' type: 'Scale' scale_param {{ {body} }}"


def bias(body="", name="bi"):
    return f"name: '{name}' type: 'Bias' bias_param {{ {body} }}"


def embed(body, name="em"):
    return f"name: '{name}' type: 'Embed' embed_param {{ {body} }}"


CASES = [
    Case("ip", ip("num_output: 4"), [(2, 3, 2, 2)], [(2, 4)], [(4, 12), (4,)],
         ref_inner_product(1, False, True)),
    Case("ip_transpose", ip("num_output: 4 transpose: true"), [(2, 3, 2, 2)], [(2, 4)],
         [(12, 4), (4,)], ref_inner_product(1, True, True)),
    Case("ip_axis2", ip("num_output: 5 axis: 2"), [(2, 3, 4)], [(2, 3, 5)], [(5, 4), (5,)],
         ref_inner_product(2, False, True)),
    Case("ip_axis2_transpose_nobias", ip("num_output: 5 axis: -1 transpose: true bias_term: false"),
         [(2, 3, 4)], [(2, 3, 5)], [(4, 5)], ref_inner_product(-1, True, False)),
    Case("ip_axis0", ip("num_output: 3 axis: 0"), [(2, 3)], [(3,)], [(3, 6), (3,)],
         ref_inner_product(0, False, True)),
    Case("scale", scale(), [(2, 3, 4)], [(2, 3, 4)], [(3,)], ref_scale(1, False)),
    Case("scale_2axes_bias", scale("num_axes: 2 bias_term: true"), [(2, 3, 4, 2)],
         [(2, 3, 4, 2)], [(3, 4), (3, 4)], ref_scale(1, True)),
    Case("scale_all_axes", scale("axis: 2 num_axes: -1"), [(2, 3, 4, 2)], [(2, 3, 4, 2)],
         [(4, 2)], ref_scale(2, False)),
    Case("scale_scalar_bias", scale("axis: 2 num_axes: 0 bias_term: true"), [(2, 3, 2)],
         [(2, 3, 2)], [(), ()], ref_scale(2, True)),
    Case("scale_2bottoms", scale(), [(2, 3, 4), (3,)], [(2, 3, 4)], [], ref_scale(1, False)),
    Case("scale_2bottoms_bias", scale("axis: 0 bias_term: true"), [(2, 3, 4), (2, 3)],
         [(2, 3, 4)], [(2, 3)], ref_scale(0, True)),
    Case("scale_2bottoms_scalar_bias", scale("axis: -1 bias_term: true"), [(2, 3), ()],
         [(2, 3)], [()], ref_scale(-1, True)),
    Case("bias", bias(), [(2, 3, 4)], [(2, 3, 4)], [(3,)], ref_bias(1)),
    Case("bias_2axes", bias("axis: -2 num_axes: 2"), [(2, 3, 4)], [(2, 3, 4)], [(3, 4)],
         ref_bias(-2)),
    Case("bias_2bottoms", bias(), [(2, 3, 4), (3, 4)], [(2, 3, 4)], [], ref_bias(1)),
    Case("bias_2bottoms_axis0", bias("axis: 0 num_axes: 3"), [(2, 3, 4), (2,)], [(2, 3, 4)],
         [], ref_bias(0)),
    Case("embed", embed("num_output: 3 input_dim: 5"), [(2, 3)], [(2, 3, 3)], [(5, 3), (3,)],
         ref_embed(True), inputs=lambda: [indices(2, 3)], grad=dict(check_bottoms=[])),
    Case("embed_nobias", embed("num_output: 3 input_dim: 5 bias_term: false"), [(4,)], [(4, 3)],
         [(5, 3)], ref_embed(False), inputs=lambda: [indices(4, seed=1)],
         grad=dict(check_bottoms=[])),
    Case("parameter", "name: 'pa' type: 'Parameter' parameter_param { shape { dim: 2 dim: 3 } }",
         [], [(2, 3)], [(2, 3)], ref_parameter),
]
IDS = [c.id for c in CASES]


def build(case):
    layer, tops = make_layer(case.snippet, case.bottoms)
    return layer, tops


def randomize(layer, seed=7):
    """Random blob values, so forward and gradients depend on every blob."""
    layer.double()
    with torch.no_grad():
        for j, p in enumerate(layer.blobs):
            p.copy_(rand(*p.shape, seed=seed + j))


def inputs(case):
    if case.inputs is not None:
        return case.inputs()
    return [rand(*s, seed=i + 1) for i, s in enumerate(case.bottoms)]


# -- table-driven tests --------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_top_and_blob_shapes(case):
    layer, tops = build(case)
    assert tops == case.tops
    assert [tuple(p.shape) for p in layer.blobs] == case.blobs
    assert layer.type == LAYERS.get(layer.type).type


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case):
    layer, tops = build(case)
    randomize(layer)
    xs = inputs(case)
    out = run(layer, *xs)
    want = case.ref([x.numpy() for x in xs], [p.detach().numpy() for p in layer.blobs])
    assert [tuple(o.shape) for o in out] == tops
    for o, w in zip(out, want):
        np.testing.assert_allclose(o.detach().numpy(), w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c.grad is not None], ids=lambda c: c.id)
def test_gradient(case):
    layer, _ = build(case)
    randomize(layer)
    assert check_gradient(layer, inputs(case), **case.grad) > 0


# -- defaults and construction ---------------------------------------------------------
@pytest.mark.parametrize("snippet, bottoms, values", [
    (ip("num_output: 2"), [(2, 3)], [0.0, 0.0]),
    (scale("bias_term: true"), [(2, 3)], [1.0, 0.0]),
    (scale("filler { type: 'constant' value: 2.5 } bias_term: true "
           "bias_filler { type: 'constant' value: -0.5 }"), [(2, 3)], [2.5, -0.5]),
    (bias(), [(2, 3)], [0.0]),
    (bias("filler { type: 'constant' value: 3 }"), [(2, 3)], [3.0]),
    (embed("num_output: 2 input_dim: 3"), [(4,)], [0.0, 0.0]),
    (ip("num_output: 2 weight_filler { type: 'constant' value: 0.25 } "
        "bias_filler { type: 'constant' value: 1 }"), [(2, 3)], [0.25, 1.0]),
    ("name: 'pa' type: 'Parameter' parameter_param { shape { dim: 3 } }", [], [0.0]),
], ids=["ip", "scale", "scale_fillers", "bias", "bias_filler", "embed", "ip_fillers", "parameter"])
def test_default_and_given_fillers(snippet, bottoms, values):
    layer, _ = make_layer(snippet, bottoms)
    assert len(layer.blobs) == len(values)
    for p, v in zip(layer.blobs, values):
        assert torch.all(p == v), (tuple(p.shape), v)


def test_plain_construction_without_protobuf():
    layer = InnerProduct(num_output=3, axis=1, transpose=True, name="fc")
    layer.num_bottoms, layer.num_tops = 1, 1
    layer.check_arity()
    layer.setup([(2, 4)])
    assert layer.reshape([(2, 4)]) == [(2, 3)]
    assert tuple(layer.blobs[0].shape) == (4, 3)
    sc = Scale(num_axes=2, bias_term=True, name="s")
    sc.setup([(2, 3, 4)])
    assert [tuple(p.shape) for p in sc.blobs] == [(3, 4), (3, 4)]
    assert torch.all(sc.blobs[0] == 1) and torch.all(sc.blobs[1] == 0)
    assert Bias(name="b").filler.value == 0.0
    pa = Parameter(shape=(2,), name="p")
    pa.setup([])
    assert pa.reshape([]) == [(2,)]
    em = Embed(num_output=2, input_dim=4, bias_term=False, name="e")
    em.setup([(3,)])
    assert tuple(em(torch.tensor([0.0, 3.0, 1.0])).shape) == (3, 2)


def test_embed_gives_no_gradient_to_indices():
    layer, _ = make_layer(embed("num_output: 3 input_dim: 5"), [(2, 3)])
    randomize(layer)
    x = indices(2, 3).requires_grad_(True)
    y = layer(x)
    (gx,) = torch.autograd.grad(y.sum(), [x], allow_unused=True)
    assert gx is None
    gw, gb = torch.autograd.grad(layer(x).sum(), list(layer.blobs))
    # every looked-up row gets one count per lookup
    counts = np.bincount(x.detach().numpy().astype(int).reshape(-1), minlength=5)
    np.testing.assert_allclose(gw.numpy(), np.repeat(counts[:, None], 3, axis=1))
    np.testing.assert_allclose(gb.numpy(), np.full(3, 6.0))


def test_parameter_top_is_a_copy_that_back_propagates():
    layer, _ = make_layer(
        "name: 'pa' type: 'Parameter' parameter_param { shape { dim: 2 } }", [])
    top = layer()
    top.mul_(0.0)  # in-place use of the top must not touch the blob
    assert torch.all(layer.blobs[0] == 0)
    (layer() * torch.tensor([2.0, 3.0])).sum().backward()
    np.testing.assert_allclose(layer.blobs[0].grad.numpy(), [2.0, 3.0])


@pytest.mark.parametrize("x, what", [
    (torch.tensor([0.0, 5.0]), "index 5"),
    (torch.tensor([-1.0, 2.0]), "index -1"),
    (torch.tensor([1.5]), "not a whole number"),
])
def test_embed_bad_index_names_the_layer(x, what):
    layer, _ = make_layer(embed("num_output: 2 input_dim: 5", name="emb1"), [tuple(x.shape)])
    with pytest.raises(DataError, match=what) as err:
        layer(x)
    assert "'emb1'" in str(err.value) and "Embed" in str(err.value)


# -- errors -----------------------------------------------------------------------------
ERRORS = [
    ("ip_no_num_output", "name: 'bad' type: 'InnerProduct'", [(2, 3)], ConfigError, "num_output"),
    ("ip_axis_range", ip("num_output: 2 axis: 2", name="bad"), [(2, 3)], ConfigError, "axis=2"),
    ("ip_two_bottoms", ip("num_output: 2", name="bad"), [(2, 3), (2, 3)], ConfigError, "bottom"),
    ("scale_num_axes", scale("num_axes: -2", name="bad"), [(2, 3)], ConfigError, "num_axes"),
    ("scale_past_end", scale("num_axes: 3", name="bad"), [(2, 3)], ShapeError, "extends past"),
    ("scale_2b_mismatch", scale(name="bad"), [(2, 3, 4), (4,)], ShapeError, "mismatch"),
    ("scale_2b_past_end", scale(name="bad"), [(2, 3), (3, 4)], ShapeError, "extends past"),
    ("scale_3_bottoms", scale(name="bad"), [(2, 3), (3,), (3,)], ConfigError, "at most 2"),
    ("scale_axis_range", scale("axis: 3", name="bad"), [(2, 3)], ConfigError, "axis=3"),
    ("bias_num_axes", bias("num_axes: -3", name="bad"), [(2, 3)], ConfigError, "num_axes"),
    ("bias_past_end", bias("axis: 1 num_axes: 2", name="bad"), [(2, 3)], ShapeError,
     "extends past"),
    ("bias_2b_mismatch", bias(name="bad"), [(2, 3, 4), (3, 5)], ShapeError, "mismatch"),
    ("embed_no_input_dim", embed("num_output: 2", name="bad"), [(3,)], ConfigError, "input_dim"),
    ("embed_no_num_output", embed("input_dim: 2", name="bad"), [(3,)], ConfigError, "num_output"),
    ("parameter_bottom", "name: 'bad' type: 'Parameter' parameter_param { shape { dim: 2 } }",
     [(2,)], ConfigError, "0 bottom"),
    ("parameter_negative", "name: 'bad' type: 'Parameter' parameter_param { shape { dim: -2 } }",
     [], ConfigError, "non-negative"),
]


@pytest.mark.parametrize("snippet, bottoms, error, match", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_errors_name_the_layer(snippet, bottoms, error, match):
    with pytest.raises(error, match=match) as err:
        make_layer(snippet, bottoms)
    assert "'bad'" in str(err.value)


@pytest.mark.parametrize("snippet, first, second, match", [
    (ip("num_output: 2", name="bad"), (2, 3, 4), (2, 3, 5), "K=15"),
    (scale(name="bad"), (2, 3, 4), (2, 4, 4), "mismatch"),
    (scale("bias_term: true", name="bad"), (2, 3), (2, 4), "mismatch"),
    (bias(name="bad"), (2, 3, 4), (2, 2, 4), "mismatch"),
])
def test_reshape_to_incompatible_input(snippet, first, second, match):
    layer, _ = make_layer(snippet, [first])
    with pytest.raises(ShapeError, match=match) as err:
        layer.reshape([second])
    assert "'bad'" in str(err.value)


# -- CUDA ---------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for case in (CASES[1], CASES[2], CASES[10], CASES[16]):
        layer, _ = build(case)
        randomize(layer)
        layer.float()
        xs = [x.float() for x in inputs(case)]
        cpu = [t.detach() for t in run(layer, *xs)]
        layer.cuda()
        gpu = [t.detach().cpu() for t in run(layer, *[x.cuda() for x in xs])]
        for c, g in zip(cpu, gpu):
            torch.testing.assert_close(g, c, rtol=1e-5, atol=1e-5)
