"""A numeric gradient checker in the manner of Caffe's GradientChecker.

Every layer test uses this one checker. It runs in float64: the analytic gradient
(autograd, or a layer's own backward) of a fixed random linear objective
``L = sum_k <W_k, top_k>`` is compared with central finite differences

    (L(x + h) - L(x - h)) / 2h

for every element of every bottom that needs a gradient and of every learnable
blob. Elements within ``kink_range`` of ``kink`` (e.g. 0 for ReLU or AbsVal) are
skipped, as Caffe does, because the function is not differentiable there. The
tolerance is ``threshold * max(|analytic|, |numeric|, 1)``.
"""

from __future__ import annotations

import torch

STEPSIZE = 1e-3
THRESHOLD = 1e-4
SEED = 1701


def _tops(layer, bottoms):
    out = layer(*bottoms)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_gradient(
    layer,
    bottoms,
    *,
    check_bottoms=None,
    check_blobs=True,
    top_ids=None,
    stepsize=STEPSIZE,
    threshold=THRESHOLD,
    kink=0.0,
    kink_range=-1.0,
    max_elements=None,
):
    """Assert analytic == numeric gradients for ``layer`` on ``bottoms`` (float64).

    Args:
        layer: a module; its floating parameters are moved to float64.
        bottoms: list of tensors; floating ones are checked unless excluded.
        check_bottoms: indices of bottoms to check (default: every float bottom).
        check_blobs: also check the layer's learnable parameters.
        top_ids: which tops enter the objective (default: all float tops).
        max_elements: check at most this many elements per tensor (evenly spaced).
    Raises:
        AssertionError naming the tensor, index, analytic and numeric values.
    """
    layer = layer.double()
    bottoms = [b.double() if torch.is_floating_point(b) else b for b in bottoms]
    if check_bottoms is None:
        check_bottoms = [i for i, b in enumerate(bottoms) if torch.is_floating_point(b)]
    gen = torch.Generator().manual_seed(SEED)

    with torch.no_grad():
        tops0 = _tops(layer, bottoms)
    ids = top_ids if top_ids is not None else [
        i for i, t in enumerate(tops0) if torch.is_floating_point(t)
    ]
    weights = {i: torch.randn(tops0[i].shape, generator=gen, dtype=torch.float64) for i in ids}

    def objective(bs):
        tops = _tops(layer, bs)
        return sum((tops[i] * weights[i]).sum() for i in ids)

    targets = []  # (label, tensor-to-perturb)
    leaves = [b.clone().requires_grad_(i in check_bottoms) for i, b in enumerate(bottoms)]
    for i in check_bottoms:
        targets.append((f"bottom[{i}]", leaves[i]))
    if check_blobs:
        for j, p in enumerate(getattr(layer, "blobs", [])):
            if p.requires_grad:
                targets.append((f"blob[{j}]", p))
    if not targets:
        raise AssertionError("nothing to check: no float bottoms and no learnable blobs")

    loss = objective(leaves)
    grads = torch.autograd.grad(loss, [t for _, t in targets], allow_unused=True)

    checked = 0
    for (label, t), g in zip(targets, grads):
        g = torch.zeros_like(t) if g is None else g
        flat = t.data.view(-1)
        n = flat.numel()
        idx = range(n)
        if max_elements is not None and n > max_elements:
            stride = max(n // max_elements, 1)
            idx = range(0, n, stride)
        for k in idx:
            x = flat[k].item()
            if kink_range > 0 and abs(x - kink) < kink_range:
                continue
            with torch.no_grad():
                flat[k] = x + stepsize
                plus = objective(leaves).item()
                flat[k] = x - stepsize
                minus = objective(leaves).item()
                flat[k] = x
            numeric = (plus - minus) / (2 * stepsize)
            analytic = g.reshape(-1)[k].item()
            scale = max(abs(analytic), abs(numeric), 1.0)
            if abs(analytic - numeric) > threshold * scale:
                raise AssertionError(
                    f"{getattr(layer, 'type', type(layer).__name__)} {label} element {k}: "
                    f"analytic {analytic:.8g} vs numeric {numeric:.8g}"
                )
            checked += 1
    return checked
