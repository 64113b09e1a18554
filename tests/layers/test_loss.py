"""Loss layers and Accuracy against independent numpy float64 versions of Caffe's formulas.

One table (CASES) drives the top-shape, forward and gradient tests; the references
below are written from BVLC's ``*_loss_layer.cpp`` / ``accuracy_layer.cpp`` loops
(``int(v)`` truncation of labels, FLT_MIN / 1e-20 clamps, get_normalizer floored at 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import layer_param, make_layer, rand, run

from pipeline.errors import ConfigError, DataError, ParseError, ShapeError
from pipeline.layers.loss import InfogainLoss, SoftmaxWithLoss
from pipeline.proto import caffe_pb2
from pipeline.registry import LAYERS

FLT_MIN = float(np.finfo(np.float32).tiny)


# --- numpy references ---------------------------------------------------------------


def np_normalizer(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


def np_split(x, axis):
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1 :]))
    return x.reshape(outer, x.shape[axis], inner), outer, inner


def np_softmax(col):
    e = np.exp(col - col.max())
    return e / e.sum()


def ref_softmax_loss(
    x, lab, axis=1, ignore=None, norm="VALID", clamp=FLT_MIN, H=None, two_tops=False
):
    """SoftmaxWithLoss; with H given, BVLC master's InfogainLoss (clamp 1e-20)."""
    x3, outer, inner = np_split(x, axis % x.ndim)
    lab = lab.reshape(outer, inner)
    probs = np.zeros_like(x3)
    loss, cnt = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            p = np_softmax(x3[i, :, j])
            probs[i, :, j] = p
            v = int(lab[i, j])
            if ignore is not None and v == ignore:
                continue
            if H is None:
                loss -= math.log(max(p[v], clamp))
            else:
                loss -= sum(H[v, c] * math.log(max(p[c], clamp)) for c in range(len(p)))
            cnt += 1
    out = [np.array(loss / np_normalizer(norm, outer, inner, cnt))]
    return out + [probs.reshape(x.shape)] if two_tops else out


def ref_euclidean(a, b):
    d = a.reshape(-1) - b.reshape(-1)
    return [np.array(np.dot(d, d) / a.shape[0] / 2)]


def ref_sigmoid_ce(x, t, ignore=None, norm="BATCH_SIZE"):
    loss, cnt = 0.0, 0
    for xi, ti in zip(x.reshape(-1), t.reshape(-1), strict=True):
        if ignore is not None and int(ti) == ignore:
            continue
        pos = 1.0 if xi >= 0 else 0.0
        loss -= xi * (ti - pos) - math.log(1 + math.exp(xi - 2 * xi * pos))
        cnt += 1
    return [np.array(loss / np_normalizer(norm, x.shape[0], x.size // x.shape[0], cnt))]


def ref_hinge(x, lab, norm="L1"):
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    total = 0.0
    for i in range(n):
        for j in range(x2.shape[1]):
            t = 1.0 if j == int(lab.reshape(-1)[i]) else -1.0
            m = max(0.0, 1 - t * x2[i, j])
            total += m if norm == "L1" else m * m
    return [np.array(total / n)]


def ref_contrastive(a, b, y, margin=1.0, legacy=False):
    n = a.shape[0]
    a2, b2 = a.reshape(n, -1), b.reshape(n, -1)
    loss = 0.0
    for i in range(n):
        d2 = float(np.sum((a2[i] - b2[i]) ** 2))
        if int(y.reshape(-1)[i]):
            loss += d2
        elif legacy:
            loss += max(margin - d2, 0.0)
        else:
            loss += max(margin - math.sqrt(d2), 0.0) ** 2
    return [np.array(loss / n / 2)]


def ref_contrastive_grad_a(a, b, y, margin=1.0):
    """Caffe's Backward_cpu for bottom 0 (non-legacy), top diff 1."""
    n = a.shape[0]
    g = np.zeros_like(a.reshape(n, -1))
    for j in range(n):
        diff = a.reshape(n, -1)[j] - b.reshape(n, -1)[j]
        if int(y.reshape(-1)[j]):
            g[j] = diff / n
        else:
            dist = math.sqrt(float(np.dot(diff, diff)))
            mdist = margin - dist
            if mdist > 0:
                g[j] = -(1.0 / n) * mdist / (dist + 1e-4) * diff
    return g.reshape(a.shape)


def ref_multinomial(p, lab):
    n = p.shape[0]
    p2 = p.reshape(n, -1)
    loss = -sum(math.log(max(p2[i, int(lab.reshape(-1)[i])], 1e-20)) for i in range(n))
    return [np.array(loss / n)]


def ref_accuracy(x, lab, top_k=1, axis=1, ignore=None, two_tops=False):
    x3, outer, inner = np_split(x, axis % x.ndim)
    lab = lab.reshape(outer, inner)
    classes = x3.shape[1]
    acc, cnt = 0.0, 0
    hits, nums = np.zeros(classes), np.zeros(classes)
    for i in range(outer):
        for j in range(inner):
            v = int(lab[i, j])
            if ignore is not None and v == ignore:
                continue
            nums[v] += 1
            better = -1  # the true class also counts as "better"
            for k in range(classes):
                better += x3[i, k, j] >= x3[i, v, j]
            if better < top_k:
                acc += 1
                hits[v] += 1
            cnt += 1
    out = [np.array(0.0 if cnt == 0 else acc / cnt)]
    if two_tops:
        out.append(np.array([hits[c] / nums[c] if nums[c] else 0.0 for c in range(classes)]))
    return out


# --- inputs and the case table ----------------------------------------------------------


def labels(shape, classes, seed=1, ignore=None, every=3):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, classes, shape, generator=g).to(torch.float64)
    if ignore is not None:
        lab.view(-1)[::every] = ignore
    return lab


def away_from(x, points, gap=0.05):
    """Move values within ``gap`` of a kink a little further away."""
    for p in points:
        x = torch.where((x - p).abs() < gap, x + 3 * gap, x)
    return x


def snip(layer_type, extra="", name="l"):
    return f'name: "{name}" type: "{layer_type}" {extra}'


def sm(extra=""):
    return snip("SoftmaxWithLoss", extra)


def loss_param(mode=None, ignore=None, normalize=None):
    fields = [] if mode is None else [f"normalization: {mode}"]
    fields += [] if ignore is None else [f"ignore_label: {ignore}"]
    fields += [] if normalize is None else [f"normalize: {str(normalize).lower()}"]
    return "loss_param { " + " ".join(fields) + " }"


H3 = torch.tensor([[1.0, 0.5, 0.0], [0.2, 2.0, 0.1], [0.0, 0.3, 1.5]], dtype=torch.float64)
H4 = torch.eye(4, dtype=torch.float64) + 0.25 * rand(4, 4, seed=9, low=0.0, high=1.0)
ONLY_X = {"check_bottoms": [0]}
SCE, IG, CL = "SigmoidCrossEntropyLoss", "InfogainLoss", "ContrastiveLoss"
EU, ACC, MLL = "EuclideanLoss", "Accuracy", "MultinomialLogisticLoss"


class Case(NamedTuple):
    id: str
    snippet: str
    bottoms: list  # tensors (float64; labels hold integers)
    tops: list  # expected top shapes
    ref: Callable  # numpy inputs -> list of numpy tops
    grad: dict | None  # check_gradient options; None: no gradient (Accuracy)


def info_ref(**kw):
    return lambda x, y, h: ref_softmax_loss(x, y, clamp=1e-20, H=h, **kw)


# fmt: off
CASES = [
    Case("softmax_basic", sm(), [rand(4, 5), labels((4,), 5)], [()], ref_softmax_loss, {}),
    Case(
        "softmax_spatial_NHW", sm(), [rand(2, 3, 2, 3), labels((2, 2, 3), 3)], [()],
        ref_softmax_loss, {},
    ),
    Case(
        "softmax_spatial_N1HW", sm(), [rand(2, 3, 2, 3), labels((2, 1, 2, 3), 3)], [()],
        ref_softmax_loss, {},
    ),
    Case(
        "softmax_axis_last", sm("softmax_param { axis: -1 }"), [rand(2, 3, 4), labels((2, 3), 4)],
        [()], partial(ref_softmax_loss, axis=2), {},
    ),
    Case(
        "softmax_two_tops", sm('top: "loss" top: "prob"'), [rand(2, 4, 3), labels((2, 3), 4)],
        [(), (2, 4, 3)], partial(ref_softmax_loss, two_tops=True), {"top_ids": [0]},
    ),
    *[
        Case(
            f"softmax_ignore_{mode}", sm(loss_param(mode, 255)),
            [rand(2, 3, 2, 2), labels((2, 2, 2), 3, ignore=255)], [()],
            partial(ref_softmax_loss, ignore=255, norm=mode), {},
        )
        for mode in ("VALID", "FULL", "BATCH_SIZE", "NONE")
    ],
    Case(
        "softmax_legacy_normalize_true", sm(loss_param(ignore=0, normalize=True)),
        [rand(3, 4, 2), labels((3, 2), 4)], [()], partial(ref_softmax_loss, ignore=0), {},
    ),
    Case(
        "softmax_legacy_normalize_false", sm(loss_param(ignore=0, normalize=False)),
        [rand(3, 4, 2), labels((3, 2), 4)], [()],
        partial(ref_softmax_loss, ignore=0, norm="BATCH_SIZE"), {},
    ),
    Case(
        "softmax_all_ignored", sm(loss_param(ignore=-1)), [rand(2, 3), torch.full((2,), -1.0)],
        [()], partial(ref_softmax_loss, ignore=-1), {},
    ),
    Case("euclidean", snip(EU), [rand(4, 3), rand(4, 3, seed=2)], [()], ref_euclidean, {}),
    Case(
        "euclidean_reshaped_b", snip(EU), [rand(2, 3, 2, 2), rand(2, 12, seed=2)],
        [()], ref_euclidean, {"check_bottoms": [0, 1]},
    ),
    Case(
        "sigmoid_ce_default_batch", snip(SCE),
        [rand(3, 4, low=-4, high=4), rand(3, 4, seed=3, low=0, high=1)], [()], ref_sigmoid_ce,
        ONLY_X,
    ),
    *[
        Case(
            f"sigmoid_ce_ignore_{mode}", snip(SCE, loss_param(mode, -1)),
            [rand(3, 2, 2, low=-3, high=3), labels((3, 2, 2), 2, ignore=-1)], [()],
            partial(ref_sigmoid_ce, ignore=-1, norm=mode), ONLY_X,
        )
        for mode in ("VALID", "FULL", "BATCH_SIZE", "NONE")
    ],
    Case(
        "sigmoid_ce_legacy_normalize", snip(SCE, loss_param(normalize=True)),
        [rand(2, 5), rand(2, 5, seed=4, low=0, high=1)], [()],
        partial(ref_sigmoid_ce, norm="VALID"), ONLY_X,
    ),
    Case(
        "hinge_L1", snip("HingeLoss"),
        [away_from(rand(4, 5, low=-2, high=2), (-1.0, 1.0)), labels((4,), 5)], [()], ref_hinge,
        ONLY_X,
    ),
    Case(
        "hinge_L2", snip("HingeLoss", "hinge_loss_param { norm: L2 }"),
        [away_from(rand(4, 5, 1, 1, low=-2, high=2), (-1.0, 1.0)), labels((4, 1), 5)], [()],
        partial(ref_hinge, norm="L2"), ONLY_X,
    ),
    Case("infogain_H_bottom", snip(IG), [rand(4, 3), labels((4,), 3), H3], [()], info_ref(), {}),
    Case(
        "infogain_spatial_ignore_two_tops", snip(IG, 'top: "l" top: "p" ' + loss_param(ignore=1)),
        [rand(2, 4, 3), labels((2, 3), 4), H4], [(), (2, 4, 3)],
        info_ref(ignore=1, two_tops=True), {"check_bottoms": [0], "top_ids": [0]},
    ),
    Case(
        "infogain_axis_last_batch",
        snip(IG, "infogain_loss_param { axis: -1 } " + loss_param("BATCH_SIZE", 2)),
        [rand(2, 2, 3), labels((2, 2), 3, ignore=2), H3], [()],
        info_ref(axis=2, ignore=2, norm="BATCH_SIZE"), ONLY_X,
    ),
    # Caffe's backward divides by ||a - b|| + 1e-4, not ||a - b||: a relative 1e-4 / ||a - b||
    # from the exact gradient, hence the looser threshold.
    Case(
        "contrastive", snip(CL, "contrastive_loss_param { margin: 3 }"),
        [rand(6, 3), rand(6, 3, seed=5), torch.tensor([1.0, 0.6, 0, 1.5, 0, 0])], [()],
        partial(ref_contrastive, margin=3.0), {"check_bottoms": [0, 1], "threshold": 1e-3},
    ),
    Case(
        "contrastive_4d_legacy",
        snip(CL, "contrastive_loss_param { margin: 2 legacy_version: true }"),
        [rand(4, 3, 1, 1), rand(4, 3, 1, 1, seed=6), torch.tensor([0.0, 1, 0, 0]).view(4, 1, 1, 1)],
        [()], partial(ref_contrastive, margin=2.0, legacy=True), {"check_bottoms": [0, 1]},
    ),
    Case(
        "multinomial", snip(MLL),
        [torch.softmax(rand(4, 5), 1), labels((4,), 5)], [()], ref_multinomial, ONLY_X,
    ),
    Case("accuracy_top1", snip(ACC), [rand(6, 4), labels((6,), 4)], [()], ref_accuracy, None),
    Case(
        "accuracy_top2_per_class", snip(ACC, 'top: "a" top: "pc" accuracy_param { top_k: 2 }'),
        [rand(8, 5), labels((8,), 5, seed=4)], [(), (5,)],
        partial(ref_accuracy, top_k=2, two_tops=True), None,
    ),
    Case(
        "accuracy_spatial_ignore",
        snip(ACC, 'top: "a" top: "pc" accuracy_param { ignore_label: 2 }'),
        [rand(2, 3, 2, 2), labels((2, 1, 2, 2), 3, ignore=2)], [(), (3,)],
        partial(ref_accuracy, ignore=2, two_tops=True), None,
    ),
    Case(
        "accuracy_axis_last", snip(ACC, "accuracy_param { axis: -1 top_k: 2 }"),
        [rand(3, 2, 4), labels((3, 2), 4)], [()], partial(ref_accuracy, top_k=2, axis=2), None,
    ),
]
# fmt: on
GRAD_CASES = [c for c in CASES if c.grad is not None]


def _build(case):
    layer, shapes = make_layer(case.snippet, [tuple(b.shape) for b in case.bottoms])
    return layer, shapes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_top_shapes(case):
    layer, shapes = _build(case)
    assert shapes == case.tops
    out = run(layer, *case.bottoms)
    assert [tuple(t.shape) for t in out] == case.tops
    assert layer.is_loss == (layer.type != "Accuracy")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy(case):
    layer, _ = _build(case)
    out = run(layer, *case.bottoms)
    want = case.ref(*[b.numpy() for b in case.bottoms])
    assert len(out) == len(want)
    for got, exp in zip(out, want, strict=True):
        np.testing.assert_allclose(got.detach().numpy(), exp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_gradient(case):
    layer, _ = _build(case)
    opts = {"check_bottoms": [0], **case.grad}
    assert check_gradient(layer, case.bottoms, **opts) > 0


def test_float32_forward_matches():
    """Float32 inputs give Caffe's float32 values (loose tolerance) and float32 tops."""
    x, y = rand(4, 5, dtype=torch.float32), labels((4,), 5).float()
    layer, _ = make_layer(sm(), [(4, 5), (4,)])
    loss = run(layer, x, y)[0]
    assert loss.dtype == torch.float32 and loss.dim() == 0
    np.testing.assert_allclose(
        loss.item(), ref_softmax_loss(x.double().numpy(), y.numpy())[0], rtol=1e-6
    )


def test_labels_truncate_toward_zero():
    x = rand(3, 4)
    layer, _ = make_layer(sm(), [(3, 4), (3,)])
    a = run(layer, x, torch.tensor([0.9, 2.7, 3.2], dtype=torch.float64))[0]
    b = run(layer, x, torch.tensor([0.0, 2.0, 3.0], dtype=torch.float64))[0]
    assert a.item() == b.item()


# --- gradients that follow Caffe's hand-written backward, not the clamped forward ---------


def test_softmax_flt_min_clamp_keeps_caffe_gradient():
    x = torch.tensor([[0.0, 300.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 2.0], dtype=torch.float64)
    layer, _ = make_layer(sm(), [(2, 3), (2,)])
    loss = run(layer, x, y)[0]
    p = np.stack([np_softmax(r) for r in x.detach().numpy()])
    np.testing.assert_allclose(
        loss.item(), (-math.log(FLT_MIN) - math.log(p[1, 2])) / 2, rtol=1e-12
    )
    loss.backward()
    onehot = np.eye(3)[[0, 2]]
    np.testing.assert_allclose(x.grad.numpy(), (p - onehot) / 2, atol=1e-12)


def test_infogain_log_threshold_keeps_caffe_gradient():
    """p below 1e-20 is clamped in the value only; the gradient is p * rowsum(H) - H[label]."""
    x = torch.tensor([[0.0, 120.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 2.0], dtype=torch.float64)
    layer, _ = make_layer(snip(IG), [(2, 3), (2,), (3, 3)])
    loss = run(layer, x, y, H3)[0]
    want = ref_softmax_loss(x.detach().numpy(), y.numpy(), clamp=1e-20, H=H3.numpy())[0]
    np.testing.assert_allclose(loss.item(), want, rtol=1e-12)
    loss.backward()
    p = np.stack([np_softmax(r) for r in x.detach().numpy()])
    h = H3.numpy()
    grad = (p * h.sum(1)[[0, 2], None] - h[[0, 2]]) / 2
    np.testing.assert_allclose(x.grad.numpy(), grad, atol=1e-12)


def test_softmax_ignored_positions_get_zero_gradient():
    x = rand(3, 4).requires_grad_()
    y = torch.tensor([1.0, 7.0, 2.0], dtype=torch.float64)
    layer, _ = make_layer(sm(loss_param(ignore=7)), [(3, 4), (3,)])
    run(layer, x, y)[0].backward()
    assert torch.all(x.grad[1] == 0) and torch.all(x.grad[0] != 0)


def test_multinomial_clamp_gradient_is_caffes():
    p = torch.tensor([[1e-30, 0.5], [0.25, 0.75]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0], dtype=torch.float64)
    layer, _ = make_layer('name: "l" type: "MultinomialLogisticLoss"', [(2, 2), (2,)])
    loss = run(layer, p, y)[0]
    np.testing.assert_allclose(loss.item(), ref_multinomial(p.detach().numpy(), y.numpy())[0])
    loss.backward()
    want = np.array([[-1 / (2 * 1e-20), 0.0], [0.0, -1 / (2 * 0.75)]])
    np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-12)


def test_contrastive_backward_is_caffes_including_zero_distance():
    a = rand(5, 3).requires_grad_()
    b = rand(5, 3, seed=7)
    b[2] = a.detach()[2]  # identical dissimilar pair: Caffe's 1e-4 keeps the gradient finite (0)
    y = torch.tensor([1.0, 0, 0, 1, 0])
    layer, _ = make_layer(
        'name: "l" type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }',
        [(5, 3), (5, 3), (5,)],
    )
    run(layer, a, b, y)[0].backward()
    want = ref_contrastive_grad_a(a.detach().numpy(), b.numpy(), y.numpy(), margin=2.0)
    assert np.all(np.isfinite(a.grad.numpy()))
    np.testing.assert_allclose(a.grad.numpy(), want, rtol=1e-12, atol=1e-15)


def test_sigmoid_ce_gradient_at_zero_is_sigmoid_minus_target():
    x = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.25, 1.0]], dtype=torch.float64)
    layer, _ = make_layer('name: "l" type: "SigmoidCrossEntropyLoss"', [(2, 2), (2, 2)])
    run(layer, x, t)[0].backward()
    np.testing.assert_allclose(x.grad.numpy(), (0.5 - t.numpy()) / 2)


def test_accuracy_ties_count_against():
    x = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    layer, _ = make_layer('name: "a" type: "Accuracy"', [(3, 3), (3,)])
    assert run(layer, x, y)[0].item() == pytest.approx(1 / 3)  # only row 1: a tie is a miss
    layer2, _ = make_layer('name: "a" type: "Accuracy" accuracy_param { top_k: 2 }', [(3, 3), (3,)])
    assert run(layer2, x, y)[0].item() == pytest.approx(2 / 3)


def test_accuracy_all_ignored_is_zero_and_has_no_grad():
    x = rand(2, 3).requires_grad_()
    layer, _ = make_layer(
        'name: "a" type: "Accuracy" top: "a" top: "b" accuracy_param { ignore_label: 1 }',
        [(2, 3), (2,)],
    )
    acc, per = run(layer, x, torch.ones(2, dtype=torch.float64))
    assert acc.item() == 0 and torch.all(per == 0) and not acc.requires_grad


# --- InfogainLoss H from a file -----------------------------------------------------------


def _write_h(path, h, legacy=False):
    blob = caffe_pb2.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, 1, *h.shape
    else:
        blob.shape.dim.extend(h.shape)
    blob.data.extend(float(v) for v in h.reshape(-1))
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("legacy", [False, True])
def test_infogain_reads_source(tmp_path, legacy):
    path = tmp_path / "H.binaryproto"
    h = H3.float().double()
    _write_h(path, h, legacy)
    x, y = rand(5, 3), labels((5,), 3)
    layer, _ = make_layer(
        f'name: "l" type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }}', [(5, 3), (5,)]
    )
    got = run(layer, x, y)[0]
    np.testing.assert_allclose(
        got.item(), ref_softmax_loss(x.numpy(), y.numpy(), clamp=1e-20, H=h.numpy())[0]
    )
    assert "infogain" not in layer.state_dict() and len(layer.blobs) == 0
    check_gradient(layer, [x, y], check_bottoms=[0])


def test_infogain_identity_equals_softmax_loss():
    x, y = rand(2, 4, 3), labels((2, 3), 4)
    info = InfogainLoss(matrix=torch.eye(4), name="i")
    soft = SoftmaxWithLoss(name="s")
    np.testing.assert_allclose(info(x, y).item(), soft(x, y).item(), rtol=1e-12)


# --- errors -------------------------------------------------------------------------------


class Err(NamedTuple):
    id: str
    snippet: str
    shapes: list
    error: type
    words: list  # each must appear in the message, besides "<type> layer '<name>'"


# fmt: off
AXIS = "softmax_param { axis: %d }"
ERRORS = [
    Err("softmax_label_count", sm(), [(2, 3, 4), (2, 5)], ShapeError, ["(2, 3, 4)", "(2, 5)"]),
    Err("softmax_axis_range", sm(AXIS % 2), [(2, 3), (2,)], ConfigError, ["axis"]),
    Err("softmax_three_tops", sm('top: "a" top: "b" top: "c"'), [(2, 3), (2,)], ConfigError, ["2"]),
    Err("softmax_first_dim", sm(AXIS % 0), [(2, 3), (3,)], ShapeError, ["first"]),
    Err("euclidean_first_dim", snip(EU), [(4, 3), (5, 3)], ShapeError, ["(5, 3)"]),
    Err("euclidean_dim", snip(EU), [(4, 3), (4, 2)], ShapeError, ["per item"]),
    Err("euclidean_one_bottom", snip(EU), [(4, 3)], ConfigError, ["2 bottom"]),
    Err("sigmoid_count", snip(SCE), [(2, 3), (2, 4)], ShapeError, ["same count"]),
    Err("hinge_label", snip("HingeLoss"), [(4, 3), (4, 2)], ShapeError, ["one value per item"]),
    Err("infogain_H_size", snip(IG), [(2, 4), (2,), (3, 3)], ShapeError, ["4x4", "(3, 3)"]),
    Err("infogain_no_source", snip(IG), [(2, 4), (2,)], ConfigError, ["source"]),
    Err(
        "infogain_normalize", snip(IG, loss_param(normalize=True)), [(2, 4), (2,), (4, 4)],
        ConfigError, ["normalization"],
    ),
    Err("infogain_label_count", snip(IG), [(2, 4, 3), (2,), (4, 4)], ShapeError, ["(2, 4, 3)"]),
    Err("contrastive_channels", snip(CL), [(4, 3), (4, 2), (4,)], ShapeError, ["channels"]),
    Err("contrastive_spatial", snip(CL), [(4, 3, 2), (4, 3, 2), (4,)], ShapeError, ["(N, C)"]),
    Err("contrastive_y", snip(CL), [(4, 3), (4, 3), (4, 2)], ShapeError, ["(4, 2)"]),
    Err("contrastive_5d", snip(CL), [(4, 3, 1, 1, 1), (4, 3), (4,)], ShapeError, ["4 axes"]),
    Err("multinomial_label", snip(MLL), [(4, 3), (4, 3)], ShapeError, ["one"]),
    Err(
        "accuracy_top_k", snip(ACC, "accuracy_param { top_k: 5 }"), [(4, 3), (4,)],
        ConfigError, ["top_k=5", "3 classes"],
    ),
    Err(
        "accuracy_top_k_zero", snip(ACC, "accuracy_param { top_k: 0 }"), [(4, 3), (4,)],
        ConfigError, ["top_k=0"],
    ),
    Err("accuracy_label_count", snip(ACC), [(4, 3, 2), (4,)], ShapeError, ["(4,)"]),
]
# fmt: on


@pytest.mark.parametrize("case", ERRORS, ids=lambda e: e.id)
def test_errors(case):
    with pytest.raises(case.error) as info:
        make_layer(case.snippet, case.shapes)
    msg = str(info.value)
    layer_type = case.snippet.split('type: "')[1].split('"')[0]
    assert f"{layer_type} layer 'l'" in msg
    for w in case.words:
        assert w in msg


@pytest.mark.parametrize(
    "content, error", [(None, ParseError), (b"\xff\xff\xff not a blob", ParseError)]
)
def test_infogain_bad_source_names_file_and_layer(tmp_path, content, error):
    path = tmp_path / "H.binaryproto"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match="H.binaryproto") as info:
        make_layer(snip(IG, f'infogain_loss_param {{ source: "{path}" }}'), [(2, 3), (2,)])
    assert "InfogainLoss layer 'l'" in str(info.value)


LABELLED = ["SoftmaxWithLoss", "HingeLoss", "Accuracy", "MultinomialLogisticLoss", IG]


@pytest.mark.parametrize("layer_type", LABELLED)
def test_label_out_of_range(layer_type):
    bottoms = [rand(2, 3, low=0.1, high=1), torch.tensor([0.0, 3.0], dtype=torch.float64)]
    bottoms += [torch.eye(3, dtype=torch.float64)] if layer_type == IG else []
    layer, _ = make_layer(snip(layer_type), [tuple(b.shape) for b in bottoms])
    with pytest.raises(DataError, match=r"label 3 is outside \[0, 2\]") as info:
        run(layer, *bottoms)
    assert f"{layer_type} layer 'l'" in str(info.value)


def test_bad_normalization_name():
    with pytest.raises(ConfigError, match="SoftmaxWithLoss layer 's'.*MEAN"):
        SoftmaxWithLoss(normalization="MEAN", name="s")


@pytest.mark.parametrize("layer_type", ["EuclideanLoss", SCE, "ContrastiveLoss", *LABELLED])
def test_plain_defaults_match_proto_defaults(layer_type):
    """``__init__`` defaults are Caffe's: the same as building from an empty *_param."""
    cls = LAYERS.get(layer_type)
    plain, parsed = cls(name="l"), cls.from_param(layer_param(snip(layer_type)))
    assert {k: v for k, v in vars(plain).items() if not k.startswith("_")} == {
        k: v for k, v in vars(parsed).items() if not k.startswith("_")
    }
    if layer_type == SCE:
        assert plain.normalization == "BATCH_SIZE"


def test_every_type_registered():
    for t in ("EuclideanLoss", SCE, "ContrastiveLoss", *LABELLED):
        assert LAYERS.get(t).type == t


# --- CUDA ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    picks = {
        "softmax_ignore_VALID",
        "sigmoid_ce_ignore_VALID",
        "infogain_spatial_ignore_two_tops",
        "contrastive",
        "accuracy_spatial_ignore",
        "hinge_L2",
    }
    for case in [c for c in CASES if c.id in picks]:
        bottoms = [b.float() for b in case.bottoms]
        layer, _ = make_layer(case.snippet, [tuple(b.shape) for b in bottoms])
        grad = case.grad is not None
        cpu_in = [b.clone().requires_grad_(i == 0 and grad) for i, b in enumerate(bottoms)]
        gpu_in = [b.cuda().requires_grad_(i == 0 and grad) for i, b in enumerate(bottoms)]
        cpu_out = run(layer, *cpu_in)
        gpu_out = run(layer.cuda(), *gpu_in)
        for c, g in zip(cpu_out, gpu_out, strict=True):
            assert g.device.type == "cuda", case.id
            torch.testing.assert_close(g.cpu(), c, rtol=1e-5, atol=1e-6)
        if grad:
            cpu_out[0].backward()
            gpu_out[0].backward()
            torch.testing.assert_close(gpu_in[0].grad.cpu(), cpu_in[0].grad, rtol=1e-5, atol=1e-6)
        layer.cpu()
