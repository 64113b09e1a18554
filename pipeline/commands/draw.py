"""``pipeline draw NET.prototxt OUT.{png,svg,dot} [--rankdir LR] [--phase TRAIN|TEST|ALL] [--display_lrm]``.

Caffe's ``python/draw_net.py`` with the same arguments and defaults (``--rankdir
LR``, ``--phase ALL``). DOT text (``.dot``, ``.gv``, ``.raw``) is written by our own
code and needs nothing; images need Graphviz's ``dot`` and say so when it is
missing. Edges into blobs carry the blob shapes when the net builds for the phase
(both phases for ``ALL``); ``--no_shapes`` skips building it.
"""

from __future__ import annotations

import sys

from .. import drawing
from ..formats import prototxt
from ..proto import caffe_pb2
from .flags import Parser

_PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}


def draw(argv) -> int:
    p = Parser(prog="pipeline draw", description="Draw a network graph (Caffe's draw_net.py).")
    p.add_argument("input_net_proto_file", help="Input network prototxt file")
    p.add_argument("output_image_file", help="Output image file (.png, .svg, .pdf, ... or .dot for DOT text)")
    p.add_argument("--rankdir", default="LR", choices=drawing.RANKDIRS,
                   help="One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., horizontal), "
                        "LR (default) or BT (bottom-top).")
    p.add_argument("--phase", default="ALL", choices=list(_PHASES),
                   help="Which network phase to draw: can be TRAIN, TEST, or ALL. If ALL, then all "
                        "layers are drawn regardless of phase.")
    p.add_argument("--display_lrm", action="store_true",
                   help="Display learning rate multipliers for the learning layers.")
    p.add_argument("--no_shapes", action="store_true",
                   help="Do not build the net for blob shapes; label edges as Caffe does.")
    a = p.parse_args(argv)
    drawing.output_format(a.output_image_file)  # a bad extension fails before any work
    net = prototxt.read_net(a.input_net_proto_file)
    phase = _PHASES[a.phase]
    shapes = None
    if not a.no_shapes:
        phases = [caffe_pb2.TRAIN, caffe_pb2.TEST] if phase is None else [phase]
        shapes, why_not = drawing.blob_shapes(net, phases)
        if why_not:
            print(f"pipeline draw: note: no blob shapes on the edges (the net does not build: {why_not})",
                  file=sys.stderr)
    print(f"Drawing net to {a.output_image_file}")
    drawing.draw_net_to_file(net, a.output_image_file, a.rankdir, phase, a.display_lrm, shapes)
    return 0
