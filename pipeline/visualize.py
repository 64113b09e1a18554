"""Pictures: training curves and input-gradient saliency maps, drawn with matplotlib (Agg).

matplotlib is an optional dependency (``pip install 'pipeline[plot]'`` or
``pip install matplotlib``); :func:`require_matplotlib` imports it with the
non-interactive Agg backend or raises a ConfigError saying how to install it.
Figures are written atomically (temporary name, then rename).

Saliency (Simonyan, Vedaldi, Zisserman 2014, "Deep inside convolutional networks"):
for an image x and class c, the map is ``M[h, w] = max_ch |d S_c / d x[ch, h, w]|``,
where ``S_c`` is the chosen blob (the class scores before the softmax, as in the paper,
or the net's ``prob``) for class c.
:func:`saliency_maps` gets the gradient from ``net.backward`` (the net needs
``force_backward: true``, as in Caffe, or the input gets no gradient).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, ShapeError
from .formats.atomic import atomic_path

INSTALL_HINT = "pip install 'pipeline[plot]' (or: pip install 'matplotlib>=3.7')"


def require_matplotlib():
    """``matplotlib.pyplot`` on the Agg backend; ConfigError with the install command when absent."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"plotting needs matplotlib, which is not installed; install it with: {INSTALL_HINT}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG at ``path`` atomically and close it."""
    plt = require_matplotlib()
    path = Path(path)
    if str(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _is_loss(name: str) -> bool:
    return "loss" in name.lower()


def plot_curves(train: dict, test: dict, out, title: str = "") -> Path:
    """Training curves as one PNG.

    Args:
        train: ``{output name: (iterations, values)}`` of the training net's outputs.
        test: ``{output name: (iterations, values)}`` of the test nets' outputs.
        out: PNG path.

    Left panel: every output whose name contains "loss" (train solid, test dashed
    with markers) against iteration. Right panel (when there are any): the other
    outputs, e.g. accuracy. Raises ConfigError when there is nothing to draw.
    """
    plt = require_matplotlib()
    series = [("train", k, v) for k, v in train.items()] + [("test", k, v) for k, v in test.items()]
    series = [s for s in series if len(s[2][0])]
    if not series:
        raise ConfigError(f"nothing to plot for {out}: no train or test outputs")
    losses = [s for s in series if _is_loss(s[1])]
    others = [s for s in series if not _is_loss(s[1])]
    panels = [(p, name) for p, name in ((losses, "loss"), (others, "other outputs")) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    for ax, (group, name) in zip(axes[0], panels):
        for phase, label, (its, vals) in group:
            style = {"linestyle": "-", "linewidth": 1.2}
            if phase == "test":
                style = {"linestyle": "--", "marker": "o", "markersize": 3.5, "linewidth": 1.2}
            final = f" (final {vals[-1]:.4g})" if phase == "test" else ""
            ax.plot(its, vals, label=f"{phase} {label}{final}", **style)
        ax.set_xlabel("iteration")
        ax.set_ylabel(name if name == "loss" else "value")
        ax.set_title(name if name == "loss" else ", ".join(sorted({s[1] for s in group})))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def saliency_maps(net, images, output: str = "prob", input_blob: str | None = None):
    """Input-gradient saliency maps of ``images`` for the net's predicted classes.

    Args:
        net: a ``pipeline.Net`` built with ``force_backward: true`` whose input blob takes
            a batch shaped like ``images``.
        images: float32 ``(N, C, H, W)`` already preprocessed as the net expects.
        output: the blob to differentiate, shape ``(N, K)``: a net output such as ``prob``,
            or an inner blob such as the class scores before the softmax (``ip2``, Simonyan et
            al.'s choice; then ``backward`` starts at the layer that makes it).
        input_blob: the input blob (default: the net's first input).

    Returns:
        ``(maps (N, H, W) float32, predictions (N,) int, scores (N, K) float32)`` with
        ``maps[n] = max_c |d output[n, pred_n] / d input[n, c]|`` and ``pred_n`` the argmax of
        ``output[n]``.
    """
    x = np.asarray(images, np.float32)
    name = input_blob or net.inputs[0]
    if x.ndim != 4:
        raise ShapeError(f"saliency_maps: images must be (N, C, H, W), got shape {x.shape}")
    if not net.force_backward:
        raise ConfigError(f"{net.source}: saliency needs input gradients; set 'force_backward: true' in the net")
    if output not in net.blobs:
        raise ConfigError(f"{net.source}: saliency_maps: no blob '{output}' (blobs: {', '.join(net.blobs)})")
    scores = np.array(net.forward(blobs=[output], **{name: x})[output], np.float32, copy=True).reshape(len(x), -1)
    preds = scores.argmax(axis=1)
    seed = np.zeros_like(scores)
    seed[np.arange(len(x)), preds] = 1.0
    start = None  # back-propagate from the net's end, or from the layer that makes an inner blob
    if output not in net.outputs:
        start = [layer for layer, tops in net.top_names.items() if output in tops][-1]
    grad = net.backward(start=start, **{output: seed.reshape(net.blobs[output].data.shape)})[name]
    maps = np.abs(np.asarray(grad, np.float32)).max(axis=1)
    return maps, preds, scores


def plot_saliency(images, maps, titles, out, title: str = "", map_label: str = "saliency") -> Path:
    """Each digit beside its saliency map: a 2-row grid (images on top, maps below), as PNG.

    Args:
        images: ``(N, H, W)`` (gray) arrays; maps: ``(N, H, W)`` non-negative arrays.
        titles: N strings shown above the images (e.g. "label 7, pred 7").
    """
    plt = require_matplotlib()
    n = len(images)
    if n == 0 or len(maps) != n or len(titles) != n:
        raise ShapeError(f"plot_saliency: got {n} images, {len(maps)} maps and {len(titles)} titles")
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 3.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray", interpolation="nearest")
        axes[0, i].set_title(titles[i], fontsize=8)
        m = np.asarray(maps[i], np.float64)
        axes[1, i].imshow(m / (m.max() or 1.0), cmap="hot", interpolation="nearest", vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("digit", fontsize=9)
    axes[1, 0].set_ylabel(map_label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
