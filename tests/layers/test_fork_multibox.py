"""SSD's MultiBoxLoss against a literal transcription of the fork's loops
(``multibox_loss_layer.cpp`` and ``bbox_util.cpp``: GetGroundTruth, MatchBBox,
FindMatches, MineHardExamples, EncodeLocPrediction, EncodeConfPrediction), plus
numeric gradient checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import make_layer, run
from ssd_reference import ref_decode as decode
from ssd_reference import ref_encode as encode
from ssd_reference import ref_iou as iou

from pipeline.errors import ConfigError, DataError

FLT_MIN = float(np.finfo(np.float32).tiny)


def match_bbox(gts, preds, label, match, overlap, cross):
    idx, ovs = [-1] * len(preds), [0.0] * len(preds)
    gi = [g for g in range(len(gts)) if label == -1 or gts[g][1] == label]
    if not gi:
        return idx, ovs
    table = {}
    for i, pb in enumerate(preds):
        if cross and any(v < 0 or v > 1 for v in pb):
            idx[i] = -2
            continue
        for jj, g in enumerate(gi):
            o = iou(pb, gts[g][0])
            if o > 1e-6:
                ovs[i] = max(ovs[i], o)
                table.setdefault(i, {})[jj] = o
    pool = list(range(len(gi)))
    while pool:
        best = (-1, -1, -1.0)
        for i in sorted(table):
            if idx[i] != -1:
                continue
            for jj in pool:
                if jj in table[i] and table[i][jj] > best[2]:
                    best = (i, jj, table[i][jj])
        if best[0] == -1:
            break
        idx[best[0]], ovs[best[0]] = gi[best[1]], best[2]
        pool.remove(best[1])
    if match == "PER_PREDICTION":
        for i in sorted(table):
            if idx[i] != -1:
                continue
            bj, bo = -1, -1.0
            for jj in range(len(gi)):
                if jj in table[i] and table[i][jj] >= overlap and table[i][jj] > bo:
                    bj, bo = jj, table[i][jj]
            if bj != -1:
                idx[i], ovs[i] = gi[bj], bo
    return idx, ovs


def ref_multibox(loc, conf, prior, gt, classes, share=True, match="PER_PREDICTION", overlap=0.5,
                 use_prior=True, bg=0, use_difficult=True, mining="MAX_NEGATIVE", ratio=3.0, neg_overlap=0.5,
                 code="CORNER", in_target=False, agnostic=False, cross=False, loc_type="SMOOTH_L1",
                 conf_type="SOFTMAX", loc_weight=1.0, norm="VALID", pd=(True, True)):
    n, p = loc.shape[0], prior.shape[-1] // 4
    lc = 1 if share else classes
    pri = prior.reshape(2, p, 4).tolist()
    loc4 = loc.reshape(n, p, lc, 4)
    conf3 = conf.reshape(n, p, classes)
    gts = {}
    for row in gt.reshape(-1, 8):
        if int(row[0]) == -1 or (not use_difficult and row[7]):
            continue
        gts.setdefault(int(row[0]), []).append((row[3:7].tolist(), int(row[1])))
    matches = []
    for i in range(n):
        m = {}
        if i in gts:
            if use_prior:
                idx, ovs = match_bbox(gts[i], pri[0], -1, match, overlap, cross)
                if share:
                    m[-1] = (idx, ovs)
                else:
                    for c in range(classes):
                        if c != bg:
                            m[c] = ([g if g > -1 and gts[i][g][1] == c else -1 for g in idx], ovs)
            else:
                for c in range(lc):
                    label = -1 if share else c
                    if share or label != bg:
                        preds = [decode(pri[0][j], pri[1][j], loc4[i, j, c], code, in_target) for j in range(p)]
                        m[label] = match_bbox(gts[i], preds, label, match, overlap, cross)
        matches.append(m)
    num_matches = sum(g > -1 for m in matches for idx, _ in m.values() for g in idx)
    negs = []
    for i in range(n):
        neg = []
        if matches[i] and mining == "MAX_NEGATIVE":
            losses = []
            for j in range(p):
                x = conf3[i, j]
                if conf_type == "SOFTMAX":
                    e = np.exp(x - x.max())
                    losses.append(float(np.float32(-math.log(max(e[bg] / e.sum(), FLT_MIN)))))
                else:
                    t = (np.arange(classes) == bg)
                    pos = x >= 0
                    losses.append(float(np.float32(-(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos))).sum())))
            for label in sorted(matches[i]):
                idx, ovs = matches[i][label]
                elig = sorted(((losses[j], j) for j in range(p) if idx[j] == -1 and ovs[j] < neg_overlap),
                              key=lambda t: -t[0])
                k = min(int(sum(g > -1 for g in idx) * ratio), len(elig))
                chosen = {j for _, j in elig[:k]}
                neg += [j for j in range(p) if idx[j] == -1 and j in chosen]
        negs.append(neg)
    loc_loss = 0.0
    for i in range(n):
        for label in sorted(matches[i]):
            idx, _ = matches[i][label]
            for j in range(p):
                if idx[j] > -1:
                    pred = np.array(loc4[i, j, 0 if share else label])
                    target = np.array(encode(pri[0][j], pri[1][j], gts[i][idx[j]][0], code, in_target))
                    if in_target:
                        pred, target = pred / np.array(pri[1][j]), target / np.array(pri[1][j])
                    for d in pred - target:
                        if loc_type == "L2" or abs(d) < 1:
                            loc_loss += 0.5 * d * d
                        else:
                            loc_loss += abs(d) - 0.5
    rows = []  # (image, prior, target vector over classes or label)
    if mining != "NONE":
        for i in range(n):
            if not matches[i]:
                continue
            for label in sorted(matches[i]):
                idx, _ = matches[i][label]
                rows += [(i, j, bg + 1 if agnostic else gts[i][idx[j]][1]) for j in range(p) if idx[j] > -1]
            rows += [(i, j, bg) for j in negs[i]]
    conf_loss = 0.0
    if conf_type == "SOFTMAX":
        if mining == "NONE":
            labels = [[bg] * p for _ in range(n)]
            for i in range(n):
                for label in sorted(matches[i]):
                    idx, _ = matches[i][label]
                    for j in range(p):
                        if idx[j] > -1:
                            labels[i][j] = bg + 1 if agnostic else gts[i][idx[j]][1]
            rows = [(i, j, labels[i][j]) for i in range(n) for j in range(p)]
        for i, j, lab in rows:
            x = conf3[i, j]
            e = np.exp(x - x.max())
            conf_loss -= math.log(max(e[lab] / e.sum(), FLT_MIN))
    else:
        if mining == "NONE":
            flat = np.full(n * p * classes, float(bg))
            for i in range(n):
                for label in sorted(matches[i]):
                    idx, _ = matches[i][label]
                    for j in range(p):
                        if idx[j] > -1:  # SSD advances the target pointer by p per image
                            flat[i * p + j * classes + (bg + 1 if agnostic else gts[i][idx[j]][1])] = 1
            targets = flat.reshape(n * p, classes)
            xs = conf3.reshape(n * p, classes)
        else:
            targets = np.full((len(rows), classes), float(bg))
            for k, (_, _, lab) in enumerate(rows):
                targets[k, lab] = 1
            xs = np.array([conf3[i, j] for i, j, _ in rows]).reshape(-1, classes)
        pos = xs >= 0
        conf_loss = -(xs * (targets - pos) - np.log1p(np.exp(xs - 2 * xs * pos))).sum()
    z = max({"FULL": n * p, "VALID": num_matches, "BATCH_SIZE": n, "NONE": 1}[norm], 1)
    return pd[0] * loc_weight * loc_loss / z + pd[1] * conf_loss / z


def inputs(n=3, p=12, classes=4, lc=1, seed=0):
    """Priors on a 3 x 4 grid of overlapping boxes; ground truth for images 0 and 1 only."""
    g = np.random.default_rng(seed)
    cx, cy = np.meshgrid((np.arange(4) + 0.5) / 4, (np.arange(3) + 0.5) / 3)
    cx, cy = cx.reshape(-1)[:p], cy.reshape(-1)[:p]
    w, h = np.tile([0.5, 0.3, 0.7], 4)[:p], np.tile([0.4, 0.6], 6)[:p]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes[0] = [0.04, 0.07, 0.44, 0.43]  # two priors near ground truth 0: PER_PREDICTION matches both,
    boxes[4] = [0.07, 0.05, 0.47, 0.42]  # BIPARTITE one
    boxes[9] = [0.52, 0.32, 0.95, 0.88]
    var = np.tile([0.1, 0.1, 0.2, 0.2], (p, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)])[None]
    gt = np.array([
        [0, 1, 0, 0.05, 0.05, 0.45, 0.4, 0],
        [0, 2, 1, 0.5, 0.3, 0.95, 0.9, 0],
        [1, 3, 0, 0.2, 0.4, 0.6, 0.95, 0],
        [1, 1, 1, 0.6, 0.0, 0.9, 0.3, 1],   # difficult
        [-1, -1, -1, -1, -1, -1, -1, -1],   # padding row
    ])[None, None]
    gt[..., 1] = np.minimum(gt[..., 1], classes - 1)
    loc = g.normal(0, 0.4, size=(n, p * lc * 4))
    conf = g.normal(0, 1.5, size=(n, p * classes))
    return loc, conf, prior, gt


CASES = [
    ("ssd_defaults_center_size", "code_type: CENTER_SIZE", {"code": "CENTER_SIZE"}, {}),
    ("bipartite_corner_l2_ratio1", "match_type: BIPARTITE code_type: CORNER loc_loss_type: L2 "
     "neg_pos_ratio: 1 loc_weight: 2", {"match": "BIPARTITE", "code": "CORNER", "loc_type": "L2", "ratio": 1.0,
                                        "loc_weight": 2.0}, {}),
    ("no_mining_logistic_full", "mining_type: NONE conf_loss_type: LOGISTIC code_type: CENTER_SIZE",
     {"mining": "NONE", "conf_type": "LOGISTIC", "code": "CENTER_SIZE", "norm": "FULL"},
     {"loss": "normalization: FULL"}),
    ("match_decoded_corner_size", "use_prior_for_matching: false code_type: CORNER_SIZE overlap_threshold: 0.3",
     {"use_prior": False, "code": "CORNER_SIZE", "overlap": 0.3}, {}),
    ("not_shared_no_mining", "share_location: false mining_type: NONE code_type: CENTER_SIZE",
     {"share": False, "mining": "NONE", "code": "CENTER_SIZE"}, {"lc": True}),
    ("variance_in_target_batch_no_difficult", "encode_variance_in_target: true use_difficult_gt: false "
     "code_type: CENTER_SIZE neg_overlap: 0.3", {"in_target": True, "use_difficult": False,
                                                 "code": "CENTER_SIZE", "neg_overlap": 0.3, "norm": "BATCH_SIZE"},
     {"loss": "normalization: BATCH_SIZE"}),
    ("agnostic_cross_boundary_legacy_normalize", "map_object_to_agnostic: true ignore_cross_boundary_bbox: true",
     {"agnostic": True, "cross": True, "classes": 2, "norm": "BATCH_SIZE"},
     {"classes": 2, "loss": "normalize: false"}),
    ("only_loc_term", "code_type: CENTER_SIZE", {"code": "CENTER_SIZE", "pd": (True, False)},
     {"pd": "propagate_down: true propagate_down: false propagate_down: false propagate_down: false"}),
]


def _case(c):
    _, params, kw, extra = c
    classes = extra.get("classes", 4)
    lc = classes if extra.get("lc") else 1
    loc, conf, prior, gt = inputs(classes=classes, lc=lc, seed=len(params))
    snippet = (f"name: 'mbox' type: 'MultiBoxLoss' {extra.get('pd', '')} "
               f"loss_param {{ {extra.get('loss', '')} }} "
               f"multibox_loss_param {{ num_classes: {classes} {params} }}")
    kw = dict(kw)
    kw.setdefault("classes", classes)
    return snippet, (loc, conf, prior, gt), kw


@pytest.mark.parametrize("c", CASES, ids=[c[0] for c in CASES])
def test_loss_matches_caffes_loops(c):
    snippet, arrays, kw = _case(c)
    layer, tops = make_layer(snippet, [a.shape for a in arrays])
    assert tops == [()]
    (y,) = run(layer, *(torch.from_numpy(a) for a in arrays))
    want = ref_multibox(*arrays, **kw)
    assert want > 0
    np.testing.assert_allclose(y.item(), want, rtol=1e-12)


@pytest.mark.parametrize("c", [c for c in CASES if "variance_in_target" not in c[0]], ids=lambda c: c[0])
def test_gradient(c):
    snippet, arrays, _ = _case(c)
    layer, _ = make_layer(snippet, [a.shape for a in arrays])
    assert check_gradient(layer, [torch.from_numpy(a) for a in arrays], check_bottoms=[0, 1],
                          max_elements=36) > 0


def test_variance_in_target_gradient_skips_the_variance_like_caffe():
    """Caffe scales loc by 1/variance in forward but copies the diff back unscaled: the
    location gradient is the true one times the variance."""
    c = next(c for c in CASES if "variance_in_target" in c[0])
    snippet, arrays, _ = _case(c)
    layer, _ = make_layer(snippet, [a.shape for a in arrays])
    loc = torch.from_numpy(arrays[0]).requires_grad_()
    run(layer, loc, *(torch.from_numpy(a) for a in arrays[1:]))[0].backward()
    var = np.tile([0.1, 0.1, 0.2, 0.2], arrays[0].size // 4).reshape(arrays[0].shape)
    numeric = np.zeros_like(arrays[0])
    for k in np.flatnonzero(loc.grad.numpy()):
        for sign in (1, -1):
            a = arrays[0].copy()
            a.reshape(-1)[k] += sign * 1e-6
            numeric.reshape(-1)[k] += sign * run(layer, torch.from_numpy(a), *(torch.from_numpy(x)
                                                 for x in arrays[1:]))[0].item() / 2e-6
    assert np.count_nonzero(loc.grad.numpy()) >= 8
    np.testing.assert_allclose(loc.grad.numpy(), numeric * var, rtol=1e-5, atol=1e-8)


def test_gradients_only_reach_matched_and_mined_rows():
    snippet, arrays, _ = _case(CASES[0])
    layer, _ = make_layer(snippet, [a.shape for a in arrays])
    loc, conf = (torch.from_numpy(a).requires_grad_() for a in arrays[:2])
    run(layer, loc, conf, *(torch.from_numpy(a) for a in arrays[2:]))[0].backward()
    rows_loc = np.abs(loc.grad.numpy().reshape(3, 12, 4)).sum(axis=2) > 0
    rows_conf = np.abs(conf.grad.numpy().reshape(3, 12, 4)).sum(axis=2) > 0
    assert not rows_loc[2].any() and not rows_conf[2].any()  # image 2 has no ground truth
    assert rows_loc.sum() >= 3 and rows_conf.sum() > rows_loc.sum()  # negatives join the positives
    assert (rows_conf | ~rows_loc).all()  # every matched prior is also in the confidence loss


def test_no_ground_truth_at_all_gives_zero():
    snippet, (loc, conf, prior, gt), _ = _case(CASES[0])
    gt = -np.ones_like(gt)
    layer, _ = make_layer(snippet, [loc.shape, conf.shape, prior.shape, gt.shape])
    (y,) = run(layer, *(torch.from_numpy(a) for a in (loc, conf, prior, gt)))
    assert y.item() == 0.0


ERRORS = [
    ("no_num_classes", "multibox_loss_param { }", ConfigError, ["num_classes is required"]),
    ("hard_example", "multibox_loss_param { num_classes: 4 mining_type: HARD_EXAMPLE }", ConfigError,
     ["HARD_EXAMPLE is not supported"]),
    ("bp_inside", "multibox_loss_param { num_classes: 4 bp_inside: true }", ConfigError, ["bp_inside"]),
    ("mining_nms", "multibox_loss_param { num_classes: 4 nms_param { nms_threshold: 0.5 } }", ConfigError,
     ["nms_param"]),
    ("do_neg_mining_contradiction", "multibox_loss_param { num_classes: 4 do_neg_mining: false }", ConfigError,
     ["do_neg_mining=False", "MAX_NEGATIVE"]),
    ("mining_not_shared", "multibox_loss_param { num_classes: 4 share_location: false }", ConfigError,
     ["share_location"]),
    ("agnostic_classes", "multibox_loss_param { num_classes: 4 map_object_to_agnostic: true }", ConfigError,
     ["num_classes 2"]),
]


@pytest.mark.parametrize("params, error, fragments", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_config_errors_name_the_layer(params, error, fragments):
    with pytest.raises(error) as info:
        make_layer(f"name: 'mbox' type: 'MultiBoxLoss' {params}", [(3, 48), (3, 48), (1, 2, 48), (1, 1, 5, 8)])
    assert "MultiBoxLoss layer 'mbox'" in str(info.value)
    for f in fragments:
        assert f in str(info.value)


def test_shape_and_data_errors():
    loc, conf, prior, gt = inputs()
    with pytest.raises(Exception, match="12 priors .* need 48 location values"):
        make_layer("name: 'm' type: 'MultiBoxLoss' multibox_loss_param { num_classes: 4 }",
                   [(3, 40), conf.shape, prior.shape, gt.shape])
    layer, _ = make_layer("name: 'm' type: 'MultiBoxLoss' multibox_loss_param { num_classes: 4 }",
                          [loc.shape, conf.shape, prior.shape, gt.shape])
    gt[0, 0, 0, 1] = 0  # the background label on a ground-truth box
    with pytest.raises(DataError, match="background label 0"):
        run(layer, *(torch.from_numpy(a) for a in (loc, conf, prior, gt)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    snippet, arrays, _ = _case(CASES[0])
    layer, _ = make_layer(snippet, [a.shape for a in arrays])
    xs = [torch.from_numpy(a).float() for a in arrays]
    cpu = run(layer, *xs)[0]
    loc = xs[0].cuda().requires_grad_()
    gpu = run(layer.cuda(), loc, *(x.cuda() for x in xs[1:]))[0]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    gpu.backward()
    assert loc.grad.device.type == "cuda" and loc.grad.abs().sum() > 0
