"""``pipeline export --model deploy.prototxt [--weights w.caffemodel] --onnx out.onnx [--opset N] [--torchscript out.pt]``.

Builds the net for TEST (``--level``/``--stage`` as in ``pipeline test``), copies
the weights in by layer name and writes its forward as ONNX (opset 18 unless
``--opset``; axis 0 of the inputs and outputs is the dynamic ``batch``) and/or as
TorchScript. Graph inputs and outputs keep the Caffe blob names. Without
``--weights`` the fillers' initial weights are exported (a note says so).
``--static_batch`` fixes the batch at the prototxt's input shape, for nets whose
layers tie the batch size (see ``pipeline.export``). Then, for example::

    python -c "import onnxruntime as ort, numpy as np; s = ort.InferenceSession('out.onnx'); \\
               print(s.run(None, {'data': np.zeros((1, 3, 227, 227), np.float32)})[0].argmax())"
"""

from __future__ import annotations

import sys

from .. import export as _export
from ..errors import ConfigError
from ..proto import caffe_pb2
from .common import stages_from_flag
from .flags import Parser


def export(argv) -> int:
    p = Parser(prog="pipeline export",
               description="Export a deploy net's TEST forward as ONNX and/or TorchScript.")
    p.add_argument("--model", default="", help="The model definition protocol buffer text file (deploy net).")
    p.add_argument("--weights", default="", help="Optional; trained weights (.caffemodel or .h5) to export.")
    p.add_argument("--onnx", default="", help="Write the ONNX model here (.onnx).")
    p.add_argument("--opset", type=int, default=_export.DEFAULT_OPSET,
                   help=f"ONNX opset version (default {_export.DEFAULT_OPSET}).")
    p.add_argument("--torchscript", default="", help="Write a TorchScript archive here (.pt).")
    p.add_argument("--static_batch", action="store_true",
                   help="Optional; keep the prototxt's batch size instead of a dynamic batch axis.")
    p.add_argument("--level", type=int, default=0, help="Optional; network level.")
    p.add_argument("--stage", default="", help="Optional; network stages, separated by ','.")
    a = p.parse_args(argv)
    if not a.model:
        raise ConfigError("Need a model definition to export (--model deploy.prototxt)")
    if not a.onnx and not a.torchscript:
        raise ConfigError("Nothing to write: give --onnx OUT.onnx and/or --torchscript OUT.pt")

    from ..net import Net  # torch and the layers load only when the command runs

    net = Net(a.model, caffe_pb2.TEST, level=a.level, stages=stages_from_flag(a.stage), device="cpu")
    _export.NetForward(net)  # refuses data, Python and output layers before any work
    if a.weights:
        net.copy_from(a.weights)
    else:
        print("pipeline export: note: no --weights given; exporting the fillers' initial weights", file=sys.stderr)
    if a.onnx:
        info = _export.export_onnx(net, a.onnx, opset=a.opset, dynamic_batch=not a.static_batch)
        print(f"Exported {info.describe()}")
    if a.torchscript:
        info = _export.export_torchscript(net, a.torchscript, dynamic_batch=not a.static_batch)
        print(f"Exported {info.describe()}")
    return 0
