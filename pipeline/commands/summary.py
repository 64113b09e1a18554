"""``pipeline summary NET.prototxt [--phase TRAIN|TEST] [--level N] [--stage a,b]``.

Builds the net for the state (default phase TEST) and prints one row per layer:
name, type, ``bottoms -> tops`` with their shapes, parameter count and
multiply-adds, then the totals. Shapes come from the built net (each layer's
Reshape), never from guessing.

Multiply-adds (for the batch as built; one MAC = one multiply and one add):

- Convolution: ``count(top) * C_in/group * prod(kernel)``, i.e. top count times
  the weight blob's per-output size ``prod(weight.shape[1:])``;
- Deconvolution: ``count(bottom) * C_out/group * prod(kernel)`` (each input pixel
  scatters one kernel), i.e. ``count(bottom) * prod(weight.shape[1:])``;
- InnerProduct: ``M * K * N = count(bottom) * num_output``;
- RNN / LSTM (an estimate): ``T * N * (sum of the 2-D weight blobs' sizes)``, the
  input and recurrent matrix products of every time step;
- Scale: one multiply per element, ``count(top)``;
- every other layer (element-wise, pooling, normalisation, losses, data): 0.

Biases are counted as parameters, not as multiply-adds. Parameters shared between
layers (``param { name }``) appear in each sharing layer's row but once in the
total; "learnable" excludes blobs with ``lr_mult: 0`` and statistics such as
BatchNorm's. Layers whose type comes from a known Caffe fork
(``pipeline.formats.forks``) are marked ``fork: <name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..formats import forks
from .common import phase_from_flag, stages_from_flag
from .flags import Parser


@dataclass
class LayerRow:
    name: str
    type: str
    bottoms: list[tuple[str, tuple]]
    tops: list[tuple[str, tuple]]
    params: int
    macs: int
    note: str = ""


@dataclass
class Summary:
    name: str
    phase: str
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    learnable_params: int = 0
    total_macs: int = 0
    batch: int | None = None  # first axis of the first input, when one is known


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def multiply_adds(type_name: str, lp, bottom_shapes, top_shapes, blob_shapes) -> int:
    """Multiply-adds of one layer for the batch as built (see the module docstring)."""
    if type_name == "Convolution" and blob_shapes:
        return _count(top_shapes[0]) * _count(blob_shapes[0][1:])
    if type_name == "Deconvolution" and blob_shapes:
        return _count(bottom_shapes[0]) * _count(blob_shapes[0][1:])
    if type_name == "InnerProduct":
        return _count(bottom_shapes[0]) * int(lp.inner_product_param.num_output)
    if type_name in ("RNN", "LSTM") and bottom_shapes and len(bottom_shapes[0]) >= 2:
        steps = int(bottom_shapes[0][0]) * int(bottom_shapes[0][1])
        return steps * sum(_count(s) for s in blob_shapes if len(s) == 2)
    if type_name == "Scale" and top_shapes:
        return _count(top_shapes[0])
    return 0


def summarize(net) -> Summary:
    """The per-layer table and totals of a built ``pipeline.net.Net``."""
    from ..proto import caffe_pb2

    shapes = {name: tuple(b.shape) for name, b in net.blobs.items()}
    out = Summary(net.name or "Net", caffe_pb2.Phase.Name(net.phase))
    names = net._layer_names
    bottoms, tops = net.bottom_names, net.top_names
    params_by_layer = {lp.name: lp for lp in net.param.layer}
    for name, view in zip(names, net.layers):
        lp = params_by_layer.get(name, caffe_pb2.LayerParameter())
        b = [(x, shapes.get(x, ())) for x in bottoms[name]]
        t = [(x, shapes.get(x, ())) for x in tops[name]]
        blob_shapes = [tuple(p.shape) for p in view.blobs]
        macs = multiply_adds(view.type, lp, [s for _, s in b], [s for _, s in t], blob_shapes)
        fork = forks.FORK_LAYER_TYPES.get(view.type)
        out.rows.append(LayerRow(name, view.type, b, t, sum(_count(s) for s in blob_shapes), macs,
                                 f"fork: {fork}" if fork else ""))
        if out.batch is None and not b and t and t[0][1]:
            out.batch = int(t[0][1][0])
    seen = {}
    for p, lr in zip(net.learnable_params, net.lr_mults):
        seen[id(p)] = (p.numel(), lr != 0 and p.requires_grad)
    out.total_params = sum(n for n, _ in seen.values())
    out.learnable_params = sum(n for n, learn in seen.values() if learn)
    out.total_macs = sum(r.macs for r in out.rows)
    return out


def _shape(s) -> str:
    return "x".join(str(d) for d in s) if s else "()"


def _blobs(items) -> str:
    return ", ".join(f"{n} {_shape(s)}" for n, s in items)


def format_summary(s: Summary) -> str:
    """The table as text: one row per layer, then the totals."""
    head = ("layer", "type", "bottoms -> tops", "params", "multiply-adds")
    rows = []
    for r in s.rows:
        flow = (_blobs(r.bottoms) + " -> " if r.bottoms else "-> ") + _blobs(r.tops)
        kind = r.type + (f" ({r.note})" if r.note else "")
        rows.append((r.name, kind, flow, f"{r.params:,}", f"{r.macs:,}"))
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(5)]

    def line(cells):
        left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3])]
        right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    lines = [f"{s.name} (phase {s.phase}, {len(s.rows)} layers)", line(head)]
    lines += [line(r) for r in rows]
    macs = f"{s.total_macs:,} multiply-adds"
    if s.batch and s.batch > 1:
        macs += f" per batch of {s.batch} ({s.total_macs // s.batch:,} per item)"
    lines.append(f"total: {s.total_params:,} parameters ({s.learnable_params:,} learnable), {macs}")
    return "\n".join(lines) + "\n"


def summary(argv) -> int:
    p = Parser(prog="pipeline summary",
               description="Per-layer shapes, parameters and multiply-adds of a net, from building it.")
    p.add_argument("model", help="The model definition protocol buffer text file.")
    p.add_argument("--phase", default="", help="Optional; network phase (TRAIN or TEST; default TEST).")
    p.add_argument("--level", type=int, default=0, help="Optional; network level.")
    p.add_argument("--stage", default="", help="Optional; network stages, separated by ','.")
    a = p.parse_args(argv)
    from ..net import Net  # local: torch loads only when the command runs
    from ..proto import caffe_pb2

    net = Net(a.model, phase_from_flag(a.phase, caffe_pb2.TEST), level=a.level,
              stages=stages_from_flag(a.stage), device="cpu")
    print(format_summary(summarize(net)), end="")
    return 0
