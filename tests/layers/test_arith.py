"""Tests of the arithmetic layers: Eltwise, Reduction, ArgMax, Softmax.

One table (CASES) drives the top-shape, forward and gradient tests; forward
references are independent numpy float64 versions of Caffe's formulas (ArgMax's
order comes from Python's tuple ordering of (value, index) pairs, which is
std::greater's order on std::pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import make_layer, rand, run

import pipeline.layers.arith  # noqa: F401  (registers the layers)
from pipeline.errors import ConfigError, ShapeError
from pipeline.layers.arith import ArgMax, Eltwise, Reduction, Softmax
from pipeline.registry import LAYERS


# -- numpy references ------------------------------------------------------------------
def ref_eltwise(op, coeff=None):
    def f(b):
        if op == "SUM":
            c = coeff or [1.0] * len(b)
            return [sum(ci * x for ci, x in zip(c, b))]
        if op == "PROD":
            return [math.prod(b[1:], start=b[0])]
        # Caffe's CPU loop, element by element
        a, bb = b[0].reshape(-1), b[1].reshape(-1)
        y = np.array([a[i] if a[i] > bb[i] else bb[i] for i in range(a.size)])
        for x in b[2:]:
            x = x.reshape(-1)
            y = np.array([x[i] if x[i] > y[i] else y[i] for i in range(y.size)])
        return [y.reshape(b[0].shape)]

    return f


def ref_reduction(op, axis, coeff):
    def f(b):
        x = b[0]
        a = axis % x.ndim if x.ndim else 0
        rows = x.reshape(math.prod(x.shape[:a]), -1)
        out = []
        for r in rows:
            if op == "SUM":
                v = r.sum()
            elif op == "ASUM":
                v = np.abs(r).sum()
            elif op == "SUMSQ":
                v = (r**2).sum()
            else:
                v = r.sum() / r.size
            out.append(v * coeff)
        return [np.array(out).reshape(x.shape[:a])]

    return f


def caffe_order(values):
    """(value, index) pairs sorted as std::partial_sort with std::greater would."""
    return sorted(((float(v), j) for j, v in enumerate(values)), reverse=True)


def ref_argmax(out_max_val, top_k, axis=None):
    def f(b):
        x = b[0]
        if axis is None:
            n = x.shape[0]
            out = np.zeros((n, 2 if out_max_val else 1, top_k))
            for i, row in enumerate(x.reshape(n, -1)):
                for j, (v, idx) in enumerate(caffe_order(row)[:top_k]):
                    out[i, 0, j] = idx
                    if out_max_val:
                        out[i, 1, j] = v
            return [out.reshape(out.shape + (1,) * (x.ndim - 3))]
        a = axis % x.ndim
        xm = np.moveaxis(x, a, -1)
        out = np.zeros(xm.shape[:-1] + (top_k,))
        for pos in np.ndindex(*xm.shape[:-1]):
            best = caffe_order(xm[pos])[:top_k]
            out[pos] = [v if out_max_val else idx for v, idx in best]
        return [np.moveaxis(out, -1, a)]

    return f


def ref_softmax(axis):
    def f(b):
        x = b[0]
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return [e / e.sum(axis=axis, keepdims=True)]

    return f


def distinct(*shapes, seed=0):
    """Bottoms whose values are all different by at least 0.05 (no MAX ties nearby)."""
    n = sum(math.prod(s) for s in shapes)
    g = torch.Generator().manual_seed(seed)
    vals = (torch.randperm(n, generator=g).to(torch.float64) - n / 2) * 0.05
    out, k = [], 0
    for s in shapes:
        out.append(vals[k : k + math.prod(s)].reshape(s))
        k += math.prod(s)
    return out


def small_ints(*shape, seed=0):
    """Values from {0, 1, 2}: many ties, to pin down ArgMax's tie order."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 3, shape, generator=g).to(torch.float64)]


# -- the table -------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    snippet: str
    bottoms: list
    tops: list
    ref: object
    inputs: object = None  # callable -> list of tensors (default: rand per bottom)
    grad: dict | None = field(default_factory=dict)  # check_gradient kwargs; None = no check


def elt(body, name="el"):
    return f"name: '{name}' type: 'Eltwise' eltwise_param {{ {body} }}"


def red(body, name="re"):
    return f"name: '{name}' type: 'Reduction' reduction_param {{ {body} }}"


def am(body, name="am"):
    return f"name: '{name}' type: 'ArgMax' argmax_param {{ {body} }}"


def sm(body="", name="sm"):
    return f"name: '{name}' type: 'Softmax' softmax_param {{ {body} }}"


S = (2, 3, 4)
CASES = [
    Case("eltwise_sum", elt(""), [S, S], [S], ref_eltwise("SUM")),
    Case("eltwise_sum_coeff", elt("coeff: 1 coeff: -0.5 coeff: 2"), [S, S, S], [S],
         ref_eltwise("SUM", [1.0, -0.5, 2.0])),
    Case("eltwise_prod", elt("operation: PROD"), [S, S, S], [S], ref_eltwise("PROD")),
    Case("eltwise_max", elt("operation: MAX"), [S, S, S], [S], ref_eltwise("MAX"),
         inputs=lambda: distinct(S, S, S)),
    Case("eltwise_max_coeff_ignored", elt("operation: MAX coeff: 3 coeff: 5"), [S, S], [S],
         ref_eltwise("MAX"), inputs=lambda: distinct(S, S, seed=1)),
    Case("reduction_sum", red(""), [S], [()], ref_reduction("SUM", 0, 1.0)),
    Case("reduction_asum", red("operation: ASUM axis: 1 coeff: 2"), [S], [(2,)],
         ref_reduction("ASUM", 1, 2.0), grad=dict(kink=0.0, kink_range=0.01)),
    Case("reduction_asum_zeros", red("operation: ASUM axis: 0"), [(2, 5)], [()],
         ref_reduction("ASUM", 0, 1.0),
         inputs=lambda: [torch.tensor([[0.0, 1.0, -2.0, 0.0, 0.5], [-0.25, 0.0, 3.0, 0.0, -1.0]],
                                      dtype=torch.float64)],
         grad=dict(kink=0.0, kink_range=0.01)),
    Case("reduction_sumsq", red("operation: SUMSQ axis: -1"), [S], [(2, 3)],
         ref_reduction("SUMSQ", -1, 1.0)),
    Case("reduction_mean", red("operation: MEAN axis: 1 coeff: -0.5"), [S], [(2,)],
         ref_reduction("MEAN", 1, -0.5)),
    Case("reduction_mean_all", red("operation: MEAN"), [(3, 2)], [()],
         ref_reduction("MEAN", 0, 1.0)),
    Case("argmax", am(""), [(3, 5)], [(3, 1, 1)], ref_argmax(False, 1),
         inputs=lambda: small_ints(3, 5), grad=None),
    Case("argmax_top3_4d", am("top_k: 3"), [(2, 3, 2, 2)], [(2, 1, 3, 1)], ref_argmax(False, 3),
         inputs=lambda: small_ints(2, 3, 2, 2, seed=1), grad=None),
    Case("argmax_max_val", am("out_max_val: true top_k: 2"), [(2, 3, 2, 2)], [(2, 2, 2, 1)],
         ref_argmax(True, 2), inputs=lambda: small_ints(2, 3, 2, 2, seed=2), grad=None),
    Case("argmax_axis", am("axis: 1 top_k: 2"), [(2, 5, 3)], [(2, 2, 3)],
         ref_argmax(False, 2, 1), inputs=lambda: small_ints(2, 5, 3, seed=3), grad=None),
    Case("argmax_axis_max_val", am("axis: -1 top_k: 3 out_max_val: true"), [(2, 3, 4)],
         [(2, 3, 3)], ref_argmax(True, 3, -1), inputs=lambda: small_ints(2, 3, 4, seed=4),
         grad=None),
    Case("argmax_axis0", am("axis: 0"), [(4, 3)], [(1, 3)], ref_argmax(False, 1, 0),
         inputs=lambda: small_ints(4, 3, seed=5), grad=None),
    Case("softmax", sm(), [S], [S], ref_softmax(1)),
    Case("softmax_last_axis", sm("axis: -1"), [S], [S], ref_softmax(-1)),
    Case("softmax_axis0", sm("axis: 0"), [(3, 2)], [(3, 2)], ref_softmax(0)),
]
IDS = [c.id for c in CASES]


def inputs(case):
    if case.inputs is not None:
        return case.inputs()
    return [rand(*s, seed=i + 1) for i, s in enumerate(case.bottoms)]


# -- table-driven tests --------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_top_shapes(case):
    layer, tops = make_layer(case.snippet, case.bottoms)
    assert tops == case.tops
    assert len(layer.blobs) == 0
    assert layer.type == LAYERS.get(layer.type).type


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case):
    layer, tops = make_layer(case.snippet, case.bottoms)
    xs = inputs(case)
    out = run(layer, *xs)
    want = case.ref([x.numpy() for x in xs])
    assert [tuple(o.shape) for o in out] == tops
    for o, w in zip(out, want):
        np.testing.assert_allclose(o.detach().numpy(), w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c.grad is not None], ids=lambda c: c.id)
def test_gradient(case):
    layer, _ = make_layer(case.snippet, case.bottoms)
    assert check_gradient(layer, inputs(case), **case.grad) > 0


# -- specific behaviour -----------------------------------------------------------------------
def test_registration():
    for t, cls in (("Eltwise", Eltwise), ("Reduction", Reduction), ("ArgMax", ArgMax),
                   ("Softmax", Softmax)):
        assert LAYERS.get(t) is cls and cls.type == t


@pytest.mark.parametrize("a, b, c, winner", [
    (1.0, 1.0, 1.0, 1),  # a tie between bottoms 0 and 1 goes to bottom 1; 2 must be greater
    (2.0, 1.0, 2.0, 0),  # bottom 0 strictly beats 1; bottom 2 only ties: stays 0
    (1.0, 2.0, 2.0, 1),
    (1.0, 2.0, 3.0, 2),
])
def test_eltwise_max_gradient_goes_to_caffe_argmax(a, b, c, winner):
    layer, _ = make_layer(elt("operation: MAX"), [(1,), (1,), (1,)])
    xs = [torch.tensor([v], dtype=torch.float64, requires_grad=True) for v in (a, b, c)]
    grads = torch.autograd.grad(layer(*xs).sum(), xs)
    assert [g.item() for g in grads] == [1.0 if i == winner else 0.0 for i in range(3)]


def test_eltwise_prod_gradient_at_zero_is_product_of_others():
    layer, _ = make_layer(elt("operation: PROD stable_prod_grad: false"), [(2,), (2,)])
    a = torch.tensor([0.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([3.0, 0.0], dtype=torch.float64, requires_grad=True)
    ga, gb = torch.autograd.grad(layer(a, b).sum(), [a, b])
    assert ga.tolist() == [3.0, 0.0] and gb.tolist() == [0.0, 2.0]


def test_reduction_asum_gradient_at_zero_is_zero():
    layer, _ = make_layer(red("operation: ASUM coeff: 3"), [(3,)])
    x = torch.tensor([0.0, -2.0, 1.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x), [x])
    assert g.tolist() == [0.0, -3.0, 3.0]


def test_argmax_ties_larger_index_first():
    layer, _ = make_layer(am("top_k: 3 out_max_val: true"), [(1, 5)])
    (out,) = run(layer, torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]))
    assert out[0, 0].tolist() == [4.0, 2.0, 1.0]
    assert out[0, 1].tolist() == [3.0, 3.0, 3.0]


def test_argmax_has_no_gradient():
    layer, _ = make_layer(am("axis: 1 out_max_val: true"), [(2, 3)])
    x = rand(2, 3).requires_grad_(True)
    assert not layer(x).requires_grad


def test_softmax_is_stable_for_large_inputs():
    layer, _ = make_layer(sm(), [(1, 3)])
    (out,) = run(layer, torch.tensor([[1000.0, 1000.0, -1000.0]], dtype=torch.float64))
    np.testing.assert_allclose(out.numpy(), [[0.5, 0.5, 0.0]])


def test_plain_construction_without_protobuf():
    e = Eltwise(operation="SUM", coeff=(2.0, -1.0), name="e")
    e.num_bottoms, e.num_tops = 2, 1
    e.check_arity()
    assert e.reshape([(3,), (3,)]) == [(3,)]
    assert e(torch.ones(3), torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    assert Reduction(operation="mean", axis=1, name="r").reshape([(2, 4)]) == [(2,)]
    assert ArgMax(top_k=2, axis=0, name="a").reshape([(3, 4)]) == [(2, 4)]
    assert Softmax(name="s").reshape([(2, 3)]) == [(2, 3)]


# -- errors -------------------------------------------------------------------------------------
ERRORS = [
    ("eltwise_one_bottom", elt("", name="bad"), [S], ConfigError, "at least 2"),
    ("eltwise_prod_coeff", elt("operation: PROD coeff: 1 coeff: 2", name="bad"), [S, S],
     ConfigError, "coeff"),
    ("eltwise_coeff_count", elt("coeff: 1 coeff: 2", name="bad"), [S, S, S], ConfigError,
     "one coefficient per bottom"),
    ("eltwise_shapes", elt("", name="bad"), [S, (2, 3, 5)], ShapeError, "bottom\\[1\\]"),
    ("reduction_axis", red("axis: 3", name="bad"), [S], ConfigError, "axis=3"),
    ("argmax_top_k_0", am("top_k: 0", name="bad"), [S], ConfigError, "top_k"),
    ("argmax_top_k_big", am("top_k: 13", name="bad"), [S], ShapeError, "top_k=13"),
    ("argmax_axis_top_k_big", am("axis: 1 top_k: 4", name="bad"), [S], ShapeError, "top_k=4"),
    ("argmax_axis_range", am("axis: -4", name="bad"), [S], ConfigError, "axis=-4"),
    ("softmax_axis", sm("axis: 2", name="bad"), [(2, 3)], ConfigError, "axis=2"),
    ("softmax_two_tops", sm("", name="bad") + " top: 'a' top: 'b'", [(2, 3)], ConfigError, "top"),
]


@pytest.mark.parametrize("snippet, bottoms, error, match", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_errors_name_the_layer(snippet, bottoms, error, match):
    with pytest.raises(error, match=match) as err:
        make_layer(snippet, bottoms)
    assert "'bad'" in str(err.value)


@pytest.mark.parametrize("cls, kwargs, match", [
    (Eltwise, dict(operation="MIN"), "operation"),
    (Reduction, dict(operation="MAX"), "operation"),
])
def test_unknown_operation(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        cls(name="bad", **kwargs)
    assert "'bad'" in str(err.value)


# -- CUDA ---------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    picks = ("eltwise_sum_coeff", "eltwise_max", "reduction_mean", "argmax_max_val",
             "argmax_axis", "softmax")
    for case in (c for c in CASES if c.id in picks):
        layer, _ = make_layer(case.snippet, case.bottoms)
        xs = [x.float() for x in inputs(case)]
        cpu = [t.detach() for t in run(layer, *xs)]
        gpu = [t.detach().cpu() for t in run(layer.cuda(), *[x.cuda() for x in xs])]
        for c, g in zip(cpu, gpu):
            torch.testing.assert_close(g, c, rtol=1e-5, atol=1e-6)
