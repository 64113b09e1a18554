"""Deploy without Python: a Net's TEST forward as ONNX or TorchScript.

``NetForward(net)`` is a plain ``nn.Module`` that runs the net's own layer modules
in the net's order (``net.layer_steps()``, the loop of ``Net._run``) on tensors:
``forward(*inputs) -> tuple of outputs``, inputs in ``net.inputs`` order, outputs in
``net.outputs`` order. It holds the net's layers (shared, not copied), so what it
computes is exactly what ``net.forward()`` computes. The exporters trace it:

- ``export_onnx(net, path, opset=18)``: ``torch.onnx.export`` with the
  ``torch.export``-based ("dynamo") exporter (needs the ``onnx`` and ``onnxscript``
  packages: ``pip install 'pipeline[export]'``). Graph inputs and outputs carry the
  Caffe blob names (``data`` -> ``prob``); axis 0 of every input whose first
  dimension is the batch is the symbolic dimension ``batch``. Opset 18 is the
  exporter's own; lower opsets go through ONNX's version converter, which refuses
  some ops (GoogLeNet's Pad below 18: an error says so). One self-contained
  ``.onnx`` file (weights inside) up to protobuf's 2 GB; larger models keep their
  weights in external data beside it.
- ``export_torchscript(net, path)``: ``torch.jit.trace`` of ``NetForward``, saved
  with ``torch.jit.save``; ``torch.jit.load(path)(x)`` in Python or
  ``torch::jit::load`` in C++ (libtorch) runs it, without this package. (torch 2.13
  marks TorchScript deprecated in favour of ``torch.export``; it still works.)

Only the batch axis is dynamic: spatial sizes are fixed at the prototxt's input
shape, because Caffe's pooling geometry (ceil rounding and its clip rule) is
computed in Python from them. A layer that bakes the batch size into the graph is
caught (ONNX: the input's batch came out fixed; TorchScript: the trace, checked at
a second batch size, disagrees with the net) and reported; ``dynamic_batch=False``
(``--static_batch``) exports at the prototxt's batch instead. Nets whose layers read
data (Data, ImageData, HDF5Data, MemoryData, WindowData, DummyData), run Python
code (``type: "Python"``) or write files (HDF5Output) cannot be exported: give the
deploy prototxt (Input layers). Exporting never changes the net.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError
from .formats.atomic import atomic_path, atomic_write_bytes

DEFAULT_OPSET = 18
BATCH = "batch"
_SOURCES_OK = ("Input", "Parameter")  # layers without bottoms that export fine
_NOT_EXPORTABLE = {"Python": "runs Python (numpy) code", "HDF5Output": "writes files"}
_SINGLE_FILE_BYTES = 1_900_000_000  # protobuf's 2 GB limit, less room for the graph


class NetForward(nn.Module):
    """A Net's forward as a module of tensors: ``forward(*inputs) -> tuple(outputs)``.

    Args:
        net: a built ``pipeline.Net`` (normally for TEST).
        outputs: blob names to return (default ``net.outputs``).

    Shape: input i is ``net.inputs[i]``'s blob, e.g. (N, 3, 227, 227); output j is
    ``outputs[j]``'s, e.g. (N, 1000). The layers are the net's modules, so weight
    changes in the net show here.
    """

    def __init__(self, net, outputs=None):
        super().__init__()
        self.input_names = list(net.inputs)
        self.output_names = list(outputs) if outputs else list(net.outputs)
        steps = net.layer_steps()
        for name, layer, bottoms, tops, _ in steps:
            why = _NOT_EXPORTABLE.get(layer.type)
            if why is None and not bottoms and layer.type not in _SOURCES_OK:
                why = "reads its data outside the graph"
            if why:
                raise ConfigError(
                    f"{net.source}: layer '{name}' ({layer.type}) {why} and cannot be exported; "
                    f"export a deploy net whose inputs are Input layers"
                )
        if not self.input_names:
            raise ConfigError(f"{net.source}: the net has no Input layer to export as a graph input")
        known = {t for _, _, _, tops, _ in steps for t in tops}
        for o in self.output_names:
            if o not in known:
                raise ConfigError(f"{net.source}: '{o}' is not a blob of this net")
        self.layers = nn.ModuleList([layer for _, layer, _, _, _ in steps])
        self._steps = [
            (i, tuple(bottoms), tuple(tops))
            for i, (_, layer, bottoms, tops, _) in enumerate(steps)
            if not getattr(layer, "is_input", False)
        ]
        self.source = net.source

    def forward(self, *inputs: torch.Tensor):
        vals = dict(zip(self.input_names, inputs))
        for i, bottoms, tops in self._steps:
            out = self.layers[i](*[vals[b] for b in bottoms])
            if isinstance(out, torch.Tensor):
                vals[tops[0]] = out
            else:
                for t, o in zip(tops, out):
                    vals[t] = o
        return tuple(vals[o] for o in self.output_names)


@dataclass
class ExportInfo:
    """What an export wrote: the file(s), the graph's inputs and outputs with their
    shapes (``'batch'`` for the dynamic axis), and the ONNX opset (None for TorchScript)."""

    path: str
    format: str
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    opset: int | None = None
    external_data: str | None = None

    def describe(self) -> str:
        def fmt(blobs):
            return ", ".join(f"{n} ({', '.join(str(d) for d in s)})" for n, s in blobs.items())

        what = f"ONNX opset {self.opset}" if self.format == "onnx" else "TorchScript"
        extra = f" + weights in {self.external_data}" if self.external_data else ""
        return f"{what}: {self.path}{extra}; inputs {fmt(self.inputs)}; outputs {fmt(self.outputs)}"


def _batched(net) -> list[bool]:
    """Which inputs have the batch on axis 0: those whose first dim equals the first input's."""
    shapes = [net.blobs[n].shape for n in net.inputs]
    first = shapes[0][0] if shapes and shapes[0] else None
    return [bool(s) and s[0] == first for s in shapes]


def example_inputs(net, batch: int | None = 2) -> tuple:
    """Random inputs of the net's input shapes with ``batch`` on the batched axes
    (None: the prototxt's own batch).

    A batch of 2 (not 1) keeps ``torch.export`` from specialising the batch axis.
    """
    gen = torch.Generator().manual_seed(1701)
    out = []
    for name, batched in zip(net.inputs, _batched(net)):
        shape = tuple(net.blobs[name].shape)
        if batched and batch is not None:
            shape = (batch,) + shape[1:]
        out.append(torch.randn(shape, generator=gen).to(net.device))
    return tuple(out)


def _shapes(net, names, batched_names, outputs=None) -> dict:
    res = {}
    for n in names:
        s = list(outputs[n] if outputs is not None else net.blobs[n].shape)
        if n in batched_names and s:
            s[0] = BATCH
        res[n] = tuple(s)
    return res


def _describe(net, module: NetForward, path, fmt, opset=None, external=None, dynamic=True) -> ExportInfo:
    batched = {n for n, b in zip(net.inputs, _batched(net)) if b} if dynamic else set()
    x = example_inputs(net, batch=2 if dynamic else None)
    with torch.no_grad():
        outs = module(*x)
    out_shapes, out_batched = {}, set()
    for n, o in zip(module.output_names, outs):
        out_shapes[n] = tuple(o.shape)
        if o.dim() and batched and o.shape[0] == 2:
            out_batched.add(n)
    return ExportInfo(
        path=str(path),
        format=fmt,
        inputs=_shapes(net, net.inputs, batched),
        outputs=_shapes(net, module.output_names, out_batched, out_shapes),
        opset=opset,
        external_data=external,
    )


# The exporter logs every torchvision op it cannot register, and a traceback when the
# opset converter gives up (reported by export_onnx as one line): not ours to show.
_EXPORTER_LOGGERS = (
    "torch.onnx._internal.exporter._registration",
    "torch.onnx._internal.exporter._compat",
    "onnxscript.version_converter",
)


@contextmanager
def _quiet(names):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _onnx_program(net, module: NetForward, opset: int, dynamic_batch: bool):
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"ONNX export needs the 'onnx' and 'onnxscript' packages ({e}); pip install 'pipeline[export]'"
        ) from None
    x = example_inputs(net, batch=2 if dynamic_batch else None)
    dims = None
    if dynamic_batch:
        batch = torch.export.Dim(BATCH)
        dims = (tuple({0: batch} if b else None for b in _batched(net)),)
    with torch.no_grad(), warnings.catch_warnings(), _quiet(_EXPORTER_LOGGERS):
        warnings.simplefilter("ignore")
        try:
            return torch.onnx.export(
                module,
                x,
                None,
                input_names=list(net.inputs),
                output_names=list(module.output_names),
                opset_version=int(opset),
                dynamo=True,
                dynamic_shapes=dims,
                verbose=False,
            )
        except Exception as e:  # the exporter raises many types; report one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = " (a layer fixes the batch size; try --static_batch)" if dynamic_batch else ""
            raise ConfigError(f"{net.source}: ONNX export failed: {first}{hint}") from e


def export_onnx(net, path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True, outputs=None) -> ExportInfo:
    """Write ``net``'s forward as an ONNX model (see the module docstring).

    Args:
        net: a built Net (its weights are what gets exported).
        path: the ``.onnx`` file, written atomically.
        opset: ONNX opset version (default 18, the exporter's native opset; others
            go through ONNX's version converter).
        dynamic_batch: make axis 0 of the batched inputs and outputs symbolic (``batch``).
        outputs: blob names to export as graph outputs (default ``net.outputs``).
    """
    module = NetForward(net, outputs).eval()
    program = _onnx_program(net, module, opset, dynamic_batch)
    path = Path(path)
    external = None
    actual = program.model.opset_imports.get("", None)
    if actual is not None and actual != int(opset):
        raise ConfigError(
            f"{net.source}: ONNX export: asked for opset {opset}, but the version converter could only "
            f"produce opset {actual}; use --opset {actual}"
        )
    if dynamic_batch:
        for value, batched in zip(program.model.graph.inputs, _batched(net)):
            if batched and isinstance(value.shape[0], int):  # torch.export specialised it silently
                raise ConfigError(
                    f"{net.source}: ONNX export: a layer fixes the batch size of input '{value.name}' "
                    f"(it became {value.shape[0]}); export with --static_batch"
                )
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if weight_bytes < _SINGLE_FILE_BYTES:
        atomic_write_bytes(path, program.model_proto.SerializeToString())
    else:
        # Weights in external data beside the model: save both in a temporary folder
        # beside the target, then move the data file(s) first and the model last.
        parent = path.parent if str(path.parent) else Path(".")
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
        try:
            program.save(str(tmpdir / path.name), external_data=True)
            data = sorted(p.name for p in tmpdir.iterdir() if p.name != path.name)
            for name in data:
                os.replace(tmpdir / name, parent / name)
            os.replace(tmpdir / path.name, path)
            external = ", ".join(data) or None
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return _describe(net, module, path, "onnx", opset=int(opset), external=external, dynamic=dynamic_batch)


def trace(net, outputs=None, batch: int | None = 2) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``NetForward(net)`` on random inputs of ``batch`` items
    (None: the prototxt's batch)."""
    module = NetForward(net, outputs).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the Python-side geometry is fixed
        try:
            return torch.jit.trace(module, example_inputs(net, batch), check_trace=False)
        except Exception as e:  # any tracing failure, reported as one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{net.source}: TorchScript trace failed: {first}") from e


def _check_free_batch(net, traced, module) -> None:
    """The trace ran at batch 2; it must also give the net's own answer at batch 3."""
    if not any(_batched(net)):
        return
    x = example_inputs(net, batch=3)
    with torch.no_grad():
        want = module(*x)
        try:
            got = traced(*x)
        except Exception as e:  # noqa: BLE001 - a size baked into the trace fails in the interpreter
            got, why = None, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    ok = got is not None and all(
        g.shape == w.shape and torch.allclose(g, w, rtol=1e-4, atol=1e-6 * float(w.abs().max()) + 1e-30)
        for g, w in zip(got, want)
    )
    if not ok:
        detail = f": {why}" if got is None else ""
        raise ConfigError(f"{net.source}: TorchScript export: a layer fixes the batch size in the trace{detail}")


def export_torchscript(net, path, outputs=None, dynamic_batch: bool = True) -> ExportInfo:
    """Write ``net``'s forward as a TorchScript archive (``torch.jit.load`` reads it).

    The module takes the inputs in ``net.inputs`` order and returns a tuple of the
    outputs in ``net.outputs`` order. With ``dynamic_batch`` the trace is checked at
    a second batch size (a layer that bakes the batch in is an error); without it
    the trace is made at the prototxt's batch and only that batch is supported.
    """
    traced = trace(net, outputs, batch=2 if dynamic_batch else None)
    if dynamic_batch:
        _check_free_batch(net, traced, NetForward(net, outputs))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks TorchScript deprecated
        torch.jit.save(traced, str(tmp))
    return _describe(net, NetForward(net, outputs), path, "torchscript", dynamic=dynamic_batch)
