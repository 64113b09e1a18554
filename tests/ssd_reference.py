"""Independent references for SSD's box code: literal Python transcriptions of
weiliu89/caffe's ``bbox_util.cpp`` (DecodeBBox, EncodeBBox, JaccardOverlap,
ApplyNMSFast) and ``detection_output_layer.cpp``'s Forward_cpu, one box at a time.
Shared by tests/layers/test_fork_ssd.py, test_fork_multibox.py and tests/test_fork_nets.py.
"""

from __future__ import annotations

import math

import numpy as np


def ref_decode(prior, var, loc, code, in_target):
    v = [1.0] * 4 if in_target else var
    if code == "CORNER":
        return [prior[k] + v[k] * loc[k] for k in range(4)]
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == "CORNER_SIZE":
        return [prior[k] + v[k] * loc[k] * (pw if k % 2 == 0 else ph) for k in range(4)]
    pcx, pcy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
    cx, cy = v[0] * loc[0] * pw + pcx, v[1] * loc[1] * ph + pcy
    w, h = math.exp(v[2] * loc[2]) * pw, math.exp(v[3] * loc[3]) * ph
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ref_size(b):
    return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])


def ref_iou(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (ref_size(a) + ref_size(b) - inter)


def ref_nms(boxes, scores, score_thr, nms_thr, eta, top_k):
    """bbox_util.cpp's ApplyNMSFast, loop by loop."""
    pairs = sorted(((s, i) for i, s in enumerate(scores) if s > score_thr), key=lambda p: -p[0])
    if top_k > -1:
        pairs = pairs[:top_k]
    kept, adaptive = [], nms_thr
    while pairs:
        idx = pairs.pop(0)[1]
        if all(ref_iou(boxes[idx], boxes[k]) <= adaptive for k in kept):
            kept.append(idx)
            if eta < 1 and adaptive > 0.5:
                adaptive *= eta
    return kept


def ref_detection_output(loc, conf, prior, classes, share=True, bg=0, nms=0.3, top_k=-1, eta=1.0,
                         code="CORNER", in_target=False, keep_top_k=-1, conf_thr=-3.4e38):
    n, p = loc.shape[0], prior.shape[-1] // 4
    lc = 1 if share else classes
    pri = prior.reshape(2, p, 4)
    rows = []
    for i in range(n):
        l4 = loc[i].reshape(p, lc, 4)
        c3 = conf[i].reshape(p, classes)
        boxes = {c: [ref_decode(pri[0, j], pri[1, j], l4[j, c], code, in_target) for j in range(p)]
                 for c in range(lc)}
        kept = {}
        for c in range(classes):
            if c == bg:
                continue
            kept[c] = ref_nms(boxes[0 if share else c], c3[:, c], conf_thr, nms, eta, top_k)
        if keep_top_k > -1 and sum(map(len, kept.values())) > keep_top_k:
            flat = sorted(((c3[j, c], c, j) for c in sorted(kept) for j in kept[c]), key=lambda t: -t[0])
            kept = {}
            for _, c, j in flat[:keep_top_k]:
                kept.setdefault(c, []).append(j)
        for c in sorted(kept):
            for j in kept[c]:
                b = boxes[0 if share else c][j]
                rows.append([i, c, c3[j, c]] + [min(max(v, 0.0), 1.0) for v in b])
    return np.array(rows).reshape(1, 1, -1, 7) if rows else -np.ones((1, 1, 1, 7))


def ref_encode(prior, var, gt, code, in_target):
    v = [1.0] * 4 if in_target else var
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == "CORNER":
        return [(gt[k] - prior[k]) / v[k] for k in range(4)]
    if code == "CORNER_SIZE":
        return [(gt[k] - prior[k]) / (pw, ph)[k % 2] / v[k] for k in range(4)]
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    return [((gt[0] + gt[2]) / 2 - (prior[0] + prior[2]) / 2) / pw / v[0],
            ((gt[1] + gt[3]) / 2 - (prior[1] + prior[3]) / 2) / ph / v[1],
            math.log(gw / pw) / v[2], math.log(gh / ph) / v[3]]
