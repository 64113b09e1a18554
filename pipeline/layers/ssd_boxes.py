"""Box arithmetic of SSD's ``bbox_util.cpp`` (weiliu89/caffe, branch ssd), in numpy.

Shared by the SSD layers (``fork_ssd.py``: DetectionOutput, ``fork_multibox.py``:
MultiBoxLoss). Boxes are rows ``(xmin, ymin, xmax, ymax)`` in the normalized [0, 1]
image frame; every function keeps the dtype of its inputs (float32 for float32
blobs, as Caffe computes in ``float``; ``exp`` and ``log`` in double, as C's are),
so comparisons and sort orders follow Caffe's single-precision values. Matching, NMS and mining choose *indices*; they
are not differentiated (Caffe has no gradient through them either).

Formulas (SSD's, ``BBoxSize`` / ``JaccardOverlap`` with ``normalized = true``):

- size = (xmax - xmin) * (ymax - ymin), 0 when xmax < xmin or ymax < ymin;
- IoU = |A n B| / (size_A + size_B - |A n B|); boxes that do not touch (strict
  comparisons) or whose intersection has zero width/height give 0;
- CENTER_SIZE decoding with prior (center p, size s) and variance v:
  center = v_xy * loc_xy * s + p, size = exp(v_wh * loc_wh) * s (without ``v`` when
  ``variance_encoded_in_target``); CORNER adds ``v * loc`` to the corners,
  CORNER_SIZE adds ``v * loc * s``. Encoding is the inverse.
"""

from __future__ import annotations

import numpy as np

CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")  # enum values 1, 2, 3


def _wide(a, dtype=np.float64):
    """``a`` as ``dtype``: Caffe calls C's double ``exp`` / ``log`` on float values and
    rounds the double result back to float when it stores it."""
    return np.asarray(a).astype(dtype)


def bbox_size(boxes: np.ndarray) -> np.ndarray:
    """SSD's BBoxSize for rows of boxes: area, or 0 for an inverted box."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return np.where(bad, np.zeros_like(w), w * h)


def jaccard(a: np.ndarray, size_a, b: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with each row of ``b`` (M, 4); sizes as SSD stores them."""
    apart = (b[:, 0] > a[2]) | (b[:, 2] < a[0]) | (b[:, 1] > a[3]) | (b[:, 3] < a[1])
    iw = np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])
    ih = np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])
    inter = iw * ih
    ok = ~apart & (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (size_a + size_b - inter)
    return np.where(ok, iou, np.zeros_like(iou))


def decode(priors, variances, loc, code_type: str, variance_in_target: bool) -> np.ndarray:
    """SSD's DecodeBBox for every prior at once: (P, 4) predictions -> (P, 4) boxes."""
    dt = loc.dtype
    priors, variances = priors.astype(dt, copy=False), variances.astype(dt, copy=False)
    v = np.ones_like(variances) if variance_in_target else variances
    if code_type == "CORNER":
        return priors + v * loc
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if code_type == "CORNER_SIZE":
        scale = np.stack([pw, ph, pw, ph], axis=1)
        return priors + v * loc * scale
    pcx = (priors[:, 0] + priors[:, 2]) / dt.type(2)
    pcy = (priors[:, 1] + priors[:, 3]) / dt.type(2)
    cx = v[:, 0] * loc[:, 0] * pw + pcx
    cy = v[:, 1] * loc[:, 1] * ph + pcy
    w = _wide(np.exp(_wide(v[:, 2] * loc[:, 2])) * _wide(pw), dt)  # C's exp(double) on floats
    h = _wide(np.exp(_wide(v[:, 3] * loc[:, 3])) * _wide(ph), dt)
    half_w, half_h = w / dt.type(2), h / dt.type(2)
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def encode(prior, variance, gt, code_type: str, variance_in_target: bool) -> np.ndarray:
    """SSD's EncodeBBox of one ground-truth box against one prior: the loc target (4,)."""
    dt = gt.dtype
    prior, variance = prior.astype(dt, copy=False), variance.astype(dt, copy=False)
    v = np.ones_like(variance) if variance_in_target else variance
    if code_type == "CORNER":
        return (gt - prior) / v
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code_type == "CORNER_SIZE":
        return (gt - prior) / np.array([pw, ph, pw, ph], dtype=dt) / v
    pcx, pcy = (prior[0] + prior[2]) / dt.type(2), (prior[1] + prior[3]) / dt.type(2)
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    gcx, gcy = (gt[0] + gt[2]) / dt.type(2), (gt[1] + gt[3]) / dt.type(2)
    return np.array([(gcx - pcx) / pw / v[0], (gcy - pcy) / ph / v[1],
                     np.log(np.float64(gw / pw)) / np.float64(v[2]),  # C's log(double)
                     np.log(np.float64(gh / ph)) / np.float64(v[3])], dtype=dt)


def nms_fast(boxes, sizes, scores, score_threshold, nms_threshold, eta, top_k) -> list[int]:
    """SSD's ApplyNMSFast: greedy NMS over the boxes scoring above ``score_threshold``.

    Candidates are the scores strictly above the threshold, sorted by score
    descending (stable, as ``std::stable_sort``), cut to ``top_k`` (-1: all); a
    candidate is kept when its IoU with every box kept so far is <= the (adaptive)
    threshold, which is multiplied by ``eta`` after each kept box while above 0.5.
    Returns the kept indices in order of decreasing score.
    """
    cand = np.flatnonzero(scores > score_threshold)
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    if top_k is not None and top_k > -1:
        cand = cand[:top_k]
    kept: list[int] = []
    if len(cand) == 0:
        return kept
    cb, cs = boxes[cand], sizes[cand]
    thr = np.float32(nms_threshold)
    keep_mask = np.zeros(len(cand), dtype=bool)
    for k in range(len(cand)):
        if kept:
            ious = jaccard(cb[k], cs[k], cb[keep_mask], cs[keep_mask])
            if np.any(ious > thr):
                continue
        keep_mask[k] = True
        kept.append(int(cand[k]))
        if eta < 1 and thr > 0.5:
            thr = np.float32(thr * np.float32(eta))
    return kept


def cross_boundary(boxes: np.ndarray) -> np.ndarray:
    """SSD's IsCrossBoundaryBBox: a coordinate outside [0, 1]."""
    return np.any((boxes < 0) | (boxes > 1), axis=1)


def match_bbox(gt_boxes, gt_labels, preds, label: int, match_type: str, overlap_threshold: float,
               ignore_cross_boundary: bool):
    """SSD's MatchBBox: (match index per prediction, its best overlap).

    Index -1: unmatched, -2: ignored cross-boundary prediction, else the row of
    ``gt_boxes``. ``label`` -1 matches against every ground truth, otherwise only
    against those of that label. First a greedy bipartite pass: repeatedly the
    unmatched (prediction, ground truth) pair of largest IoU, each ground truth
    once; then, for PER_PREDICTION, every still unmatched prediction takes its best
    ground truth with IoU >= ``overlap_threshold``. Overlaps <= 1e-6 count as none;
    ``overlaps`` keeps each prediction's best IoU with any ground truth.
    """
    num_pred = len(preds)
    match = np.full(num_pred, -1, dtype=np.int64)
    overlaps = np.zeros(num_pred, dtype=preds.dtype)
    gt_idx = np.arange(len(gt_boxes)) if label == -1 else np.flatnonzero(gt_labels == label)
    if len(gt_idx) == 0:
        return match, overlaps
    ov = np.full((num_pred, len(gt_idx)), -1.0, dtype=preds.dtype)  # -1: no stored overlap
    psize = bbox_size(preds)
    gsize = bbox_size(gt_boxes[gt_idx])
    skip = cross_boundary(preds) if ignore_cross_boundary else np.zeros(num_pred, dtype=bool)
    match[skip] = -2
    for j, g in enumerate(gt_idx):
        iou = jaccard(gt_boxes[g], gsize[j], preds, psize)
        ov[:, j] = np.where((iou > 1e-6) & ~skip, iou, -1.0)
    has = ov > -1
    overlaps = np.where(has.any(axis=1), np.where(has, ov, 0).max(axis=1), 0).astype(preds.dtype)
    pool = np.ones(len(gt_idx), dtype=bool)
    while pool.any():
        live = np.where((match == -1)[:, None] & pool[None, :], ov, -1.0)
        flat = int(np.argmax(live))  # first maximum in (prediction, ground truth) order
        i, j = divmod(flat, len(gt_idx))
        if live[i, j] <= -1:
            break
        match[i] = gt_idx[j]
        overlaps[i] = ov[i, j]
        pool[j] = False
    if match_type == "PER_PREDICTION":
        for i in np.flatnonzero((match == -1) & has.any(axis=1)):
            cand = np.where((ov[i] > -1) & (ov[i] >= overlap_threshold), ov[i], -1.0)
            j = int(np.argmax(cand))
            if cand[j] > -1:
                match[i] = gt_idx[j]
                overlaps[i] = ov[i, j]
    return match, overlaps
