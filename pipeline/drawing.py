"""Draw a net as Caffe's ``python/draw_net.py`` does, as Graphviz DOT text.

The graph (``net_graph``) has one node per layer and one per blob, an edge from
each bottom blob to its layer and from each layer to its top blobs:

- layer nodes are records labelled ``name``, ``(Type)`` (``(Pooling MAX)`` for
  pooling), ``kernel size / stride / pad`` for Convolution, Deconvolution and
  Pooling, and with ``display_lrm`` the weight and bias ``lr mult`` of
  Convolution, Deconvolution and InnerProduct layers; parts are joined by a space
  when the graph runs vertically (``TB``/``BT``), else by a line break;
- colours per kind, as Caffe's: Convolution/Deconvolution ``#FF5050``, Pooling
  ``#FF9900``, InnerProduct ``#CC33FF``, other layers ``#6495ED``, and in-place
  layers (one bottom that is also its one top) ``#90EE90``; blobs are grey
  octagons where a layer reads them (a blob only ever written stays a plain
  ellipse, as in Caffe);
- an edge into a top is labelled with the blob's shape when the net can be built
  for the phase (``blob_shapes``); otherwise with Caffe's label (``Batch N`` for a
  Data layer, ``num_output`` for Convolution/Deconvolution/InnerProduct).

``to_dot`` writes the DOT text itself (no pydot); ``render`` runs Graphviz's
``dot`` for images and raises ``GraphvizMissing`` when it is not installed.

Differences from Caffe's draw.py, on purpose: include/exclude rules without a
``phase`` match every phase (Caffe's compares the unset phase, i.e. TRAIN);
``kernel_h``/``kernel_w`` (and the stride/pad pairs) and ``global_pooling`` are
shown instead of Caffe's placeholder 1/0; labels are escaped for DOT records
(``{ } | < > "`` in names broke Caffe's drawings); edges carry blob shapes.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, PipelineError
from .formats.atomic import atomic_write_bytes
from .proto import caffe_pb2

LAYER_STYLE = {"shape": "record", "style": "filled", "fillcolor": "#6495ED"}
NEURON_LAYER_STYLE = {"shape": "record", "style": "filled", "fillcolor": "#90EE90"}
BLOB_STYLE = {"shape": "octagon", "style": "filled", "fillcolor": "#E0E0E0"}
LAYER_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                "InnerProduct": "#CC33FF"}
RANKDIRS = ("LR", "TB", "BT", "RL")
DOT_FORMATS = ("dot", "gv", "raw")  # written as DOT text by us
IMAGE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "gif", "ps")  # rendered by Graphviz's dot


class GraphvizMissing(PipelineError):
    """An image was asked for but Graphviz's ``dot`` program is not installed."""


@dataclass
class Graph:
    """Nodes (id -> attributes, in first-mention order) and edges (src, dst, label)."""

    name: str
    rankdir: str
    nodes: dict[str, dict] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)


def _in_phase(layer: caffe_pb2.LayerParameter, phase) -> bool:
    """draw_net's phase filter: include rules (any matches) or exclude rules (none match)."""
    if phase is None:
        return True
    if layer.include and layer.exclude:
        raise ConfigError(f"layer '{layer.name}' specifies both include and exclude rules; use one kind")

    def matches(rule):
        return not rule.HasField("phase") or rule.phase == phase

    if layer.include:
        return any(matches(r) for r in layer.include)
    return not any(matches(r) for r in layer.exclude)


def _pair(kernel, h, w, default):
    """A spatial field as text: ``h x w`` when the _h/_w pair is set, else the single value."""
    if h or w:
        return f"{h}x{w}"
    return str(kernel if kernel is not None else default)


def _spatial(layer) -> list[str]:
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel = "global" if p.global_pooling else _pair(p.kernel_size, p.kernel_h, p.kernel_w, 0)
        stride = _pair(p.stride, p.stride_h, p.stride_w, 1)
        pad = _pair(p.pad, p.pad_h, p.pad_w, 0)
    else:
        p = layer.convolution_param

        def first(rep):
            return rep[0] if len(rep) else None

        kernel = _pair(first(p.kernel_size), p.kernel_h, p.kernel_w, 1)
        stride = _pair(first(p.stride), p.stride_h, p.stride_w, 1)
        pad = _pair(first(p.pad), p.pad_h, p.pad_w, 0)
    return [f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]


def lr_mults(layer) -> tuple[float, float]:
    """The weight and bias ``lr_mult`` (1 where no ``param {}`` gives one), as draw.py."""
    specs = list(layer.param)
    return (specs[0].lr_mult if specs else 1.0, specs[1].lr_mult if len(specs) > 1 else 1.0)


def layer_label(layer, rankdir: str = "LR", display_lrm: bool = False) -> list[str]:
    """The parts of a layer node's label (joined by the caller for the orientation)."""
    if layer.type == "Pooling":
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
        parts = [layer.name, f"({layer.type} {method})"]
    else:
        parts = [layer.name, f"({layer.type})"]
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        parts += _spatial(layer)
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        w, b = lr_mults(layer)
        if w or b:
            parts.append(f"lr mult: {w:.1f}, {b:.1f}")
    return parts


def caffe_edge_label(layer) -> str:
    """draw.py's label for an edge into a top: batch size, or the number of outputs."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def shape_text(shape) -> str:
    """``(64, 20, 24, 24)`` -> ``64x20x24x24``; a scalar is ``()``."""
    return "x".join(str(d) for d in shape) if len(shape) else "()"


def blob_shapes(net_param: caffe_pb2.NetParameter, phases) -> tuple[dict[str, str], str]:
    """Shapes of the blobs of the net built for each phase: ``({blob: text}, why_not)``.

    A blob whose shape differs between phases reads ``64x1x28x28 (TRAIN), 100x1x28x28
    (TEST)``. When no phase builds, the dict is empty and ``why_not`` says why.
    """
    from .net import Net  # local: torch is only needed when shapes are wanted

    found: dict[str, dict[int, tuple]] = {}
    problems = []
    for phase in phases:
        try:
            net = Net(net_param, phase, device="cpu")
        except PipelineError as e:
            problems.append(f"{caffe_pb2.Phase.Name(phase)}: {e}")
            continue
        except Exception as e:  # noqa: BLE001  (shapes are optional: a drawing never fails for them)
            problems.append(f"{caffe_pb2.Phase.Name(phase)}: {type(e).__name__}: {e}")
            continue
        for name, blob in net.blobs.items():
            found.setdefault(name, {})[phase] = blob.shape
    texts = {}
    for name, by_phase in found.items():
        distinct = set(by_phase.values())
        if len(distinct) == 1:
            texts[name] = shape_text(next(iter(distinct)))
        else:
            texts[name] = ", ".join(f"{shape_text(s)} ({caffe_pb2.Phase.Name(p)})" for p, s in by_phase.items())
    return texts, ("" if texts else "; ".join(problems))


def net_graph(net_param, rankdir: str = "LR", phase=None, display_lrm: bool = False,
              shapes: dict[str, str] | None = None, label_edges: bool = True) -> Graph:
    """The drawing of ``net_param`` (layers of ``phase``, or all when None)."""
    if rankdir not in RANKDIRS:
        raise ConfigError(f"rankdir {rankdir!r}: expected one of {', '.join(RANKDIRS)}")
    sep = " " if rankdir in ("TB", "BT") else "\n"
    g = Graph(net_param.name or "Net", rankdir)
    for layer in net_param.layer:
        if not _in_phase(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}"
        label = sep.join(layer_label(layer, rankdir, display_lrm))
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        if in_place:
            style = NEURON_LAYER_STYLE
        else:
            style = {**LAYER_STYLE, "fillcolor": LAYER_COLORS.get(layer.type, LAYER_STYLE["fillcolor"])}
        g.nodes[node] = {**style, "label": label, "_record": True}
        for b in layer.bottom:
            g.nodes[f"{b}_blob"] = {**BLOB_STYLE, "label": b}
            g.edges.append((f"{b}_blob", node, ""))
        for t in layer.top:
            g.nodes[f"{t}_blob"] = {"label": t}
            if not label_edges:
                text = ""
            elif shapes and t in shapes:
                text = shapes[t]
            else:
                text = caffe_edge_label(layer)
            g.edges.append((node, f"{t}_blob", text))
    return g


def _quote(text: str, record: bool = False) -> str:
    """A DOT double-quoted string; line breaks become ``\\n``; record labels escape
    their field syntax (``{ } | < >``)."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif record and ch in "{}|<>":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def to_dot(g: Graph) -> str:
    """The graph as DOT text (``digraph``), nodes then edges, in drawing order."""
    lines = [f"digraph {_quote(g.name)} {{", f"  rankdir={g.rankdir};"]
    for node, attrs in g.nodes.items():
        record = attrs.get("_record", False)
        items = [f"{k}={_quote(v, record and k == 'label')}" for k, v in attrs.items() if not k.startswith("_")]
        lines.append(f"  {_quote(node)} [{', '.join(items)}];")
    for src, dst, label in g.edges:
        attr = f" [label={_quote(label)}]" if label else ""
        lines.append(f"  {_quote(src)} -> {_quote(dst)}{attr};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str) -> bytes:
    """Run Graphviz's ``dot -T<fmt>`` on ``dot_text`` and return the image bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(
            f"drawing a .{fmt} needs Graphviz's 'dot' program, which is not installed (not on PATH); "
            "install Graphviz (e.g. apt-get install graphviz) or write a .dot file, which needs nothing"
        )
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0:
        first = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[0]
        raise PipelineError(f"Graphviz's dot failed to draw .{fmt} (exit {proc.returncode}): {first}")
    return proc.stdout


def output_format(path) -> str:
    """The format named by ``path``'s extension (checked)."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in DOT_FORMATS + IMAGE_FORMATS:
        raise ConfigError(
            f"{path}: cannot tell what to draw from the extension {('.' + ext) if ext else '(none)'}; "
            f"use one of {', '.join('.' + e for e in DOT_FORMATS + IMAGE_FORMATS)}"
        )
    return ext


def draw_net_to_file(net_param, path, rankdir: str = "LR", phase=None, display_lrm: bool = False,
                     shapes: dict[str, str] | None = None) -> None:
    """Write the drawing to ``path`` (DOT text for .dot/.gv/.raw, else an image), atomically."""
    fmt = output_format(path)
    text = to_dot(net_graph(net_param, rankdir, phase, display_lrm, shapes))
    data = text.encode("utf-8") if fmt in DOT_FORMATS else render(text, "jpg" if fmt == "jpeg" else fmt)
    atomic_write_bytes(path, data)
