"""SSD's MultiBoxLoss (weiliu89/caffe, branch ssd: ``multibox_loss_layer.cpp`` and
``bbox_util.cpp``'s FindMatches / MineHardExamples / Encode*Prediction).

Matching and mining pick indices in numpy (``ssd_boxes.py``); the loss is then
computed with torch ops on the picked predictions, so autograd gives Caffe's
backward: gradients reach the matched location rows and the picked confidence
rows only, never the priors or the ground truth.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..formats import forks
from ..proto import caffe_pb2
from ..registry import LAYERS
from . import ssd_boxes
from .base import TRAIN, Layer

_MBP = caffe_pb2.MultiBoxLossParameter
_NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")
_FLT_MIN = float(np.finfo(np.float32).tiny)


def _fmt(shape) -> str:
    return str(tuple(int(d) for d in shape))


def _legacy(shape, i: int) -> int:
    return int(shape[i]) if len(shape) > i else 1


def _choice(layer, value, names, field):
    if value not in names:
        layer.fail(f"multibox_loss_param.{field}={value!r} is not one of {', '.join(names)}", ConfigError)
    return value


@LAYERS.register()
class MultiBoxLoss(Layer):
    """SSD's training loss: match priors to ground truth, localisation + confidence loss.

    Caffe, per image with ground truth (rows of bottom 3:
    ``[image, label, instance, xmin, ymin, xmax, ymax, difficult]``, image -1 = none):

    1. *Match* (``use_prior_for_matching``: the priors, else the decoded
       predictions): greedy bipartite matching on IoU, then with PER_PREDICTION every
       other prior takes its best ground truth with IoU >= ``overlap_threshold``.
    2. *Mine* (MAX_NEGATIVE): among unmatched priors whose best IoU is below
       ``neg_overlap``, the ``int(num_pos * neg_pos_ratio)`` with the largest
       background loss ``-log p_background`` (softmax) become negatives.
    3. *Loss*: ``loc_weight * L_loc / Z + L_conf / Z`` with ``L_loc`` the sum over
       matched priors of SmoothL1 (|d| < 1: 0.5 d^2, else |d| - 0.5) or 0.5 d^2 (L2)
       between the predicted offsets and the encoded ground truth (``code_type``,
       prior variances), ``L_conf`` the summed softmax (or logistic) loss of the
       matched priors (their class) and the negatives (background) - or of every
       prior when ``mining_type`` is NONE - and ``Z`` the normalizer
       (``loss_param.normalization``, default VALID = number of matches, floored at 1).
       A term whose bottom has ``propagate_down: false`` (default: loc and conf true)
       is left out, as in Caffe.

    Caffe quirks kept: with ``encode_variance_in_target`` the gradient reaching the
    location bottom is that of the variance-scaled prediction (Caffe copies it back
    without the 1/variance factor); LOGISTIC without mining writes image i's targets
    at offset ``i * P`` in the (N * P, C) target array (Caffe advances the pointer by
    the prior count, not prior count x classes), and fills the targets of unmatched
    priors with ``background_label_id``. Differences: sorting ties keep prior order
    (Caffe's ``std::sort`` is unstable); HARD_EXAMPLE mining, ``nms_param`` during
    mining and ``bp_inside`` are refused with a ConfigError.

    Shape: loc (N, P * L * 4), conf (N, P * C), priors (1, 2, P * 4), ground truth
    (1, 1, G, 8) -> loss ().
    """

    type = "MultiBoxLoss"
    fork = forks.SSD
    exact_bottoms = 4
    exact_tops = 1
    is_loss = True

    def __init__(self, num_classes=None, loc_loss_type="SMOOTH_L1", conf_loss_type="SOFTMAX",
                 loc_weight=1.0, share_location=True, match_type="PER_PREDICTION",
                 overlap_threshold=0.5, use_prior_for_matching=True, background_label_id=0,
                 use_difficult_gt=True, mining_type="MAX_NEGATIVE", neg_pos_ratio=3.0,
                 neg_overlap=0.5, code_type="CORNER", encode_variance_in_target=False,
                 map_object_to_agnostic=False, ignore_cross_boundary_bbox=False,
                 normalization="VALID", propagate_down=(True, True), name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        if num_classes is None or int(num_classes) < 1:
            self.fail("multibox_loss_param.num_classes is required and must be >= 1", ConfigError)
        self.num_classes = int(num_classes)
        self.loc_loss_type = _choice(self, loc_loss_type, ("L2", "SMOOTH_L1"), "loc_loss_type")
        self.conf_loss_type = _choice(self, conf_loss_type, ("SOFTMAX", "LOGISTIC"), "conf_loss_type")
        self.match_type = _choice(self, match_type, ("BIPARTITE", "PER_PREDICTION"), "match_type")
        self.mining_type = _choice(self, mining_type, ("NONE", "MAX_NEGATIVE", "HARD_EXAMPLE"),
                                   "mining_type")
        self.code_type = _choice(self, code_type, ssd_boxes.CODE_TYPES, "code_type")
        if normalization not in _NORMALIZATIONS:
            self.fail(f"loss_param.normalization {normalization!r} is not one of {_NORMALIZATIONS}",
                      ConfigError)
        self.normalization = normalization
        self.loc_weight = float(loc_weight)
        self.share_location = bool(share_location)
        self.loc_classes = 1 if self.share_location else self.num_classes
        self.overlap_threshold = float(overlap_threshold)
        self.use_prior_for_matching = bool(use_prior_for_matching)
        self.background_label_id = int(background_label_id)
        self.use_difficult_gt = bool(use_difficult_gt)
        self.neg_pos_ratio, self.neg_overlap = float(neg_pos_ratio), float(neg_overlap)
        self.encode_variance_in_target = bool(encode_variance_in_target)
        self.map_object_to_agnostic = bool(map_object_to_agnostic)
        self.ignore_cross_boundary_bbox = bool(ignore_cross_boundary_bbox)
        self.propagate_down = tuple(bool(p) for p in propagate_down)[:2]
        if self.mining_type == "HARD_EXAMPLE":
            self.fail("mining_type HARD_EXAMPLE is not supported (MAX_NEGATIVE and NONE are)", ConfigError)
        if self.mining_type != "NONE" and not self.share_location:
            self.fail("negative mining needs share_location: true (as in Caffe)", ConfigError)
        if self.map_object_to_agnostic and self.num_classes != (2 if self.background_label_id >= 0 else 1):
            self.fail(f"map_object_to_agnostic needs num_classes 2 (1 without a background class), "
                      f"got {self.num_classes}", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.multibox_loss_param
        where = f"MultiBoxLoss layer '{param.name}'"
        mining = _MBP.MiningType.Name(p.mining_type)
        if p.HasField("do_neg_mining") and p.do_neg_mining != (mining != "NONE"):
            raise ConfigError(f"{where}: do_neg_mining={p.do_neg_mining} (deprecated) contradicts "
                              f"mining_type {mining}")
        if p.bp_inside:
            raise ConfigError(f"{where}: multibox_loss_param.bp_inside is not supported")
        if p.HasField("nms_param") and p.nms_param.nms_threshold > 0:
            raise ConfigError(f"{where}: NMS during hard-negative mining (multibox_loss_param.nms_param) "
                              "is not supported")
        lp = param.loss_param
        if lp.HasField("normalization"):
            norm = caffe_pb2.LossParameter.NormalizationMode.Name(lp.normalization)
        elif lp.HasField("normalize"):
            norm = "VALID" if lp.normalize else "BATCH_SIZE"
        else:
            norm = "VALID"
        pd = list(param.propagate_down) or [True, True, False, False]
        return cls(p.num_classes if p.HasField("num_classes") else None,
                   _MBP.LocLossType.Name(p.loc_loss_type), _MBP.ConfLossType.Name(p.conf_loss_type),
                   p.loc_weight, p.share_location, _MBP.MatchType.Name(p.match_type),
                   p.overlap_threshold, p.use_prior_for_matching, p.background_label_id,
                   p.use_difficult_gt, mining, p.neg_pos_ratio, p.neg_overlap,
                   caffe_pb2.PriorBoxParameter.CodeType.Name(p.code_type),
                   p.encode_variance_in_target, p.map_object_to_agnostic,
                   p.ignore_cross_boundary_bbox, norm, pd + [True] * (2 - len(pd)),
                   name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        loc, conf, prior, gt = (tuple(s) for s in bottom_shapes)
        if loc[0] != conf[0]:
            self.fail(f"loc {_fmt(loc)} and conf {_fmt(conf)} must have the same batch size")
        p = _legacy(prior, 2) // 4
        if p * self.loc_classes * 4 != _legacy(loc, 1):
            self.fail(f"{p} priors (bottom 2 {_fmt(prior)}) need {p * self.loc_classes * 4} location "
                      f"values per image, bottom 0 {_fmt(loc)} has {_legacy(loc, 1)}")
        if p * self.num_classes != _legacy(conf, 1):
            self.fail(f"{p} priors x {self.num_classes} classes need {p * self.num_classes} confidences "
                      f"per image, bottom 1 {_fmt(conf)} has {_legacy(conf, 1)}")
        if int(np.prod(gt)) < _legacy(gt, 2) * 8:
            self.fail(f"ground truth {_fmt(gt)} must hold (1, 1, G, 8) rows of "
                      "[image, label, instance, xmin, ymin, xmax, ymax, difficult]")
        return [()]

    # ------------------------------------------------------------------ indices
    def _ground_truth(self, gt: np.ndarray) -> dict:
        """image -> (boxes (G, 4), labels (G,)) (SSD's GetGroundTruth)."""
        out: dict[int, list] = {}
        for row in gt:
            item = int(row[0])
            if item == -1:
                continue
            label = int(row[1])
            if label == self.background_label_id:
                self.fail(f"ground truth row {row.tolist()} has the background label {label}", DataError)
            if not self.use_difficult_gt and bool(row[7]):
                continue
            out.setdefault(item, []).append((row[3:7], label))
        return {k: (np.stack([b for b, _ in v]), np.array([lab for _, lab in v])) for k, v in out.items()}

    def _match(self, gts, boxes_p, var_p, loc) -> list[dict]:
        """Per image: {loc label: (match index (P,), overlap (P,))} (SSD's FindMatches)."""
        all_matches = []
        for i in range(loc.shape[0]):
            matches: dict[int, tuple] = {}
            if i in gts:
                gt_boxes, gt_labels = gts[i]
                args = (self.match_type, self.overlap_threshold, self.ignore_cross_boundary_bbox)
                if self.use_prior_for_matching:
                    idx, ov = ssd_boxes.match_bbox(gt_boxes, gt_labels, boxes_p, -1, *args)
                    if self.share_location:
                        matches[-1] = (idx, ov)
                    else:
                        for c in range(self.loc_classes):
                            if c == self.background_label_id:
                                continue
                            safe = np.where(idx > -1, idx, 0)
                            own = (idx > -1) & (gt_labels[safe] == c)
                            matches[c] = (np.where(own, idx, -1), ov)
                else:
                    for c in range(self.loc_classes):
                        label = -1 if self.share_location else c
                        if not self.share_location and label == self.background_label_id:
                            continue
                        pred = ssd_boxes.decode(boxes_p, var_p, loc[i, :, c], self.code_type,
                                                self.encode_variance_in_target)
                        matches[label] = ssd_boxes.match_bbox(gt_boxes, gt_labels, pred, label, *args)
            all_matches.append(matches)
        return all_matches

    def _background_loss(self, conf_i: np.ndarray) -> np.ndarray:
        """Per prior, the loss of predicting the background (SSD's ComputeConfLoss), as float32."""
        bg = self.background_label_id
        if self.conf_loss_type == "SOFTMAX":
            shifted = conf_i - conf_i.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            prob = e[:, bg] / e.sum(axis=1)
            loss = -np.log(np.maximum(prob, conf_i.dtype.type(_FLT_MIN)))
        else:
            t = (np.arange(self.num_classes) == bg).astype(conf_i.dtype)
            x = conf_i
            pos = (x >= 0).astype(x.dtype)
            loss = -(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos))).sum(axis=1)
        return loss.astype(np.float32)

    def _mine(self, all_matches, conf) -> tuple[list, int]:
        """Per image, the negative prior indices (SSD's MineHardExamples, MAX_NEGATIVE)."""
        negs, total = [], 0
        for i, matches in enumerate(all_matches):
            neg: list[int] = []
            if matches and self.mining_type == "MAX_NEGATIVE":
                loss = self._background_loss(conf[i])
                for label in sorted(matches):
                    idx, ov = matches[label]
                    eligible = np.flatnonzero((idx == -1) & (ov < np.float32(self.neg_overlap)))
                    num_pos = int(np.count_nonzero(idx > -1))
                    num_sel = min(int(np.float32(num_pos) * np.float32(self.neg_pos_ratio)), len(eligible))
                    order = eligible[np.argsort(-loss[eligible], kind="stable")][:num_sel]
                    chosen = set(order.tolist())
                    neg += [m for m in range(len(idx)) if idx[m] == -1 and m in chosen]
            negs.append(neg)
            total += len(neg)
        return negs, total

    # --------------------------------------------------------------------- loss
    def _loc_loss(self, loc, all_matches, gts, boxes_p, var_p):
        rows, targets, variances = [], [], []
        for i, matches in enumerate(all_matches):
            for label in sorted(matches):
                idx, _ = matches[label]
                col = 0 if self.share_location else label
                for j in np.flatnonzero(idx > -1):
                    gt_box = gts[i][0][idx[j]]
                    targets.append(ssd_boxes.encode(boxes_p[j], var_p[j], gt_box, self.code_type,
                                                    self.encode_variance_in_target))
                    rows.append((i, j, col))
                    variances.append(var_p[j])
        if not rows:
            return None
        r = torch.tensor(rows, device=loc.device)
        pred = loc[r[:, 0], r[:, 1], r[:, 2]]
        target = torch.from_numpy(np.stack(targets)).to(device=loc.device, dtype=loc.dtype)
        if self.encode_variance_in_target:
            var = torch.from_numpy(np.stack(variances)).to(device=loc.device, dtype=loc.dtype)
            pred = pred + (pred / var - pred).detach()  # Caffe's backward skips the 1/variance
            target = target / var
        d = pred - target
        if self.loc_loss_type == "SMOOTH_L1":
            a = d.abs()
            return torch.where(a < 1, 0.5 * d * d, a - 0.5).sum()
        return 0.5 * (d * d).sum()

    def _conf_targets(self, all_matches, negs, gts, n: int, p: int):
        """Rows (image, prior) of the confidence loss and their targets (SSD's EncodeConfPrediction)."""
        bg = self.background_label_id

        def label_of(i, matches_idx):
            return bg + 1 if self.map_object_to_agnostic else int(gts[i][1][matches_idx])

        if self.mining_type != "NONE":
            rows, labels = [], []
            for i, matches in enumerate(all_matches):
                if not matches:
                    continue
                for label in sorted(matches):
                    idx, _ = matches[label]
                    for j in np.flatnonzero(idx > -1):
                        rows.append((i, j))
                        labels.append(label_of(i, idx[j]))
                for j in negs[i]:
                    rows.append((i, j))
                    labels.append(bg)
            return rows, labels, None
        rows = [(i, j) for i in range(n) for j in range(p)]
        if self.conf_loss_type == "SOFTMAX":
            labels = [bg] * (n * p)
            for i, matches in enumerate(all_matches):
                for label in sorted(matches):
                    idx, _ = matches[label]
                    for j in np.flatnonzero(idx > -1):
                        labels[i * p + j] = label_of(i, idx[j])
            return rows, labels, None
        flat = np.full(n * p * self.num_classes, float(bg))  # Caffe's fill with the background id
        for i, matches in enumerate(all_matches):
            for label in sorted(matches):
                idx, _ = matches[label]
                for j in np.flatnonzero(idx > -1):
                    flat[i * p + j * self.num_classes + label_of(i, idx[j])] = 1  # pointer quirk
        return rows, None, flat.reshape(n * p, self.num_classes)

    def _conf_loss(self, conf, rows, labels, dense):
        if not rows:
            return None
        r = torch.tensor(rows, device=conf.device)
        x = conf[r[:, 0], r[:, 1]]  # (R, C)
        if self.conf_loss_type == "SOFTMAX":
            lab = torch.tensor(labels, device=conf.device)
            if bool(((lab < 0) | (lab >= self.num_classes)).any()):
                self.fail(f"a confidence target is outside [0, {self.num_classes - 1}]", DataError)
            logp = F.log_softmax(x, dim=1).gather(1, lab[:, None])[:, 0]
            floor = math.log(_FLT_MIN)
            logp = logp + (logp.clamp_min(floor) - logp).detach()  # Caffe clamps the value only
            return -logp.sum()
        if dense is None:  # Caffe fills the targets with the background id, then sets the 1s
            dense = np.full((len(rows), self.num_classes), float(self.background_label_id))
            for k, lab in enumerate(labels):
                if 0 <= lab < self.num_classes:
                    dense[k, lab] = 1
        t = torch.from_numpy(dense).to(device=conf.device, dtype=conf.dtype)
        pos = (x >= 0).to(x.dtype)
        return -(x * (t - pos) - torch.log1p(torch.exp(x - 2 * x * pos))).sum()

    def forward(self, loc, conf, prior, gt):
        n = loc.shape[0]
        p = _legacy(prior.shape, 2) // 4
        dt = np.dtype(np.float64 if loc.dtype == torch.float64 else np.float32)
        pri = prior.detach().reshape(2, -1).cpu().numpy().astype(dt)
        boxes_p, var_p = pri[0].reshape(p, 4), pri[1].reshape(p, 4)
        gts = self._ground_truth(gt.detach().reshape(-1, 8)[: _legacy(gt.shape, 2)].cpu().numpy().astype(dt))
        loc4 = loc.reshape(n, p, self.loc_classes, 4)
        conf3 = conf.reshape(n, p, self.num_classes)
        all_matches = self._match(gts, boxes_p, var_p, loc4.detach().cpu().numpy())
        num_matches = sum(int(np.count_nonzero(m[0] > -1)) for ms in all_matches for m in ms.values())
        negs, _ = self._mine(all_matches, conf3.detach().cpu().numpy())
        z = {"FULL": n * p, "VALID": num_matches, "BATCH_SIZE": n, "NONE": 1}[self.normalization]
        z = float(max(z, 1))
        total = loc.new_zeros(())
        if self.propagate_down[0]:
            loc_loss = self._loc_loss(loc4, all_matches, gts, boxes_p, var_p)
            if loc_loss is not None:
                total = total + self.loc_weight * loc_loss / z
        if self.propagate_down[1]:
            rows, labels, dense = self._conf_targets(all_matches, negs, gts, n, p)
            conf_loss = self._conf_loss(conf3, rows, labels, dense)
            if conf_loss is not None:
                total = total + conf_loss / z
        return total
