"""Net: a prototxt made into a running network, with pycaffe's API.

Build (``Net::Init``): upgrade -> ``netgraph.filter_net`` for the state ->
``netgraph.plan_layers`` -> one registered layer per plan (``from_param``,
``setup``, ``reshape``) -> parameter specs (sharing by name, lr/decay multipliers)
-> output blobs. Run: layers in order on torch tensors; autograd gives Backward.

Differences from Caffe, on purpose: no split layers are inserted (autograd sums
the gradients of a blob's consumers); a blob rebound by an in-place layer holds
the in-place layer's output, and its ``diff`` after ``backward`` is the gradient
with respect to that output.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import layers as _layers  # noqa: F401  (fills the LAYERS registry)
from . import fastpath, netgraph
from .blob import Blob, LayerView, ParamBlob, _HostMirror
from .errors import ConfigError, GraphError, PipelineError, ShapeError, UnknownTypeError
from .formats import forks, prototxt
from .formats import upgrade as _upgrade
from .mode import resolve_device
from .proto import caffe_pb2
from .registry import LAYERS
from . import weights as _weights


def _load_param(model) -> tuple[caffe_pb2.NetParameter, str]:
    if isinstance(model, caffe_pb2.NetParameter):
        param = caffe_pb2.NetParameter()
        param.CopyFrom(model)
        source = f"<net '{param.name}'>" if param.name else "<net>"
        _upgrade.upgrade_net(param, source)
        return param, source
    if isinstance(model, (str, Path)):
        return prototxt.read_net(model), str(model)
    raise ConfigError(f"Net needs a prototxt path or a NetParameter, got {type(model).__name__}")


class Net:
    """A network built from a prototxt for one phase, level and set of stages.

    Args (pycaffe's forms): ``Net(model, phase)``, ``Net(model, weights, phase)``,
    ``Net(model, phase, weights=..., level=..., stages=[...])``.
        model: prototxt path or ``caffe_pb2.NetParameter``.
        phase: ``TRAIN`` (0) or ``TEST`` (1).
        weights: optional ``.caffemodel`` or ``.h5`` to copy in by layer name.
        channels_last, compile, precision, fuse: fast paths (``pipeline.fastpath``; fuse
            defaults to on for nets without backward).
        device: torch device (default: pycaffe's mode, see ``set_mode_gpu``).
        state: a full ``NetState`` (the solver passes its train/test states).
        python_layers: False refuses ``type: "Python"`` layers with a ConfigError. A Python
            layer imports the module its ``python_param`` names and runs it: a prototxt
            is code when it has one. Weights files never run code (protobuf/HDF5 only).

    Attributes:
        blobs: OrderedDict name -> Blob, in order of production.
        params: OrderedDict layer name -> list of ParamBlob (layers with blobs).
        layers, layer_dict, inputs, outputs, top_names, bottom_names.
        learnable_params: unique torch Parameters in Caffe's learnable order, with
            ``lr_mults`` / ``decay_mults`` alongside (for the solver).
    """

    def __init__(self, model, *args, phase=None, weights=None, level=0, stages=(), device=None, state=None,
                 python_layers=True, channels_last=False, compile=False, precision="fp32", fuse=None):
        if len(args) == 1:
            phase = args[0]
        elif len(args) == 2:
            weights, phase = args
        elif args:
            raise TypeError("Net(model, phase) or Net(model, weights, phase)")
        param, self.source = _load_param(model)
        if state is None:
            if phase is None:
                raise ConfigError(f"{self.source}: Net needs a phase (caffe.TRAIN or caffe.TEST)")
            state = caffe_pb2.NetState()
            state.CopyFrom(param.state)
            state.phase = int(phase)
            state.level = int(level)
            state.stage.extend(stages)
        self.state = state
        self.phase = state.phase
        self.device = resolve_device(device)
        self.param = netgraph.filter_net(param, state, self.source)
        self.name = self.param.name
        self.force_backward = self.param.force_backward
        self._host = _HostMirror()
        self.python_layers = bool(python_layers)  # False: refuse type "Python" (they run the prototxt's code)
        self._build()
        if weights:
            self.copy_from(weights)
        fastpath.configure(self, channels_last, compile, precision, fuse)  # channels_last, fusion, compile, autocast

    # ------------------------------------------------------------------ build
    def _make_layer(self, plan: netgraph.LayerPlan) -> nn.Module:
        lp = plan.param
        try:
            cls = LAYERS.get(lp.type, where=f"layer '{plan.name}', {self.source}")
        except UnknownTypeError as e:
            raise UnknownTypeError(str(e) + forks.fork_hint_for_type(lp.type)) from None
        phase = lp.phase if lp.HasField("phase") else self.phase
        if lp.type == "Python" and not self.python_layers:
            pp = lp.python_param
            raise ConfigError(f"{self.source}: layer '{plan.name}' is a Python layer, which would import and run "
                              f"module '{pp.module}' (class '{pp.layer}'); refused because Python layers are "
                              "disabled (--no-python-layers / python_layers=False)")
        if cls.is_loss and not plan.tops:
            # Caffe's AutoTopBlobs: a loss layer without a top still gets one (and counts).
            plan.tops = [f"{plan.name} (automatic)"]
        layer = cls.from_param(lp, phase)
        layer.num_bottoms, layer.num_tops = len(plan.bottoms), len(plan.tops)
        layer.check_arity()
        return layer

    def _build(self) -> None:
        self._plans = netgraph.plan_layers(self.param, self.source)
        self._blob_shapes: dict[str, tuple] = {}
        self._values: dict[str, torch.Tensor] = {}
        self._diffs: dict[str, torch.Tensor] = {}
        self._inputs: dict[str, torch.Tensor] = {}
        self._owners: dict[str, tuple] = {}  # shared param name -> (layer, index, learnable id)
        self.learnable_params: list[nn.Parameter] = []
        self.lr_mults: list[float] = []
        self.decay_mults: list[float] = []
        self.learnable_names: list[str] = []
        self._has_lr: list[bool] = []
        self._has_decay: list[bool] = []
        modules = []
        for plan in self._plans:
            try:
                layer = self._make_layer(plan)
                shapes = [self._blob_shapes[b] for b in plan.bottoms]
                layer.setup(shapes)
                tops = layer.reshape(shapes)
            except PipelineError as e:
                raise (e if self.source in str(e) else e.prefixed(self.source)) from None
            for t, s in zip(plan.tops, tops):
                self._blob_shapes[t] = tuple(int(d) for d in s)
            self._append_params(plan, layer)
            modules.append(layer)
        self.module = nn.ModuleList(modules).to(self.device)
        self._finish_params()
        self._setup_losses()
        self.inputs = [t for p, m in zip(self._plans, modules) if getattr(m, "is_input", False) for t in p.tops]
        self.outputs = netgraph.output_blobs(self._plans)
        for name in self.inputs:
            self._inputs[name] = torch.zeros(self._blob_shapes[name], device=self.device)
        self.blobs = OrderedDict((n, Blob(self, n)) for p in self._plans for n in p.tops)
        self._steps = [
            (m, p.bottoms, p.tops, [not d for d in p.propagate_down], getattr(m, "is_input", False))
            for p, m in zip(self._plans, modules)
        ]
        for i in netgraph.in_place_activations(self._plans):
            modules[i].in_place = True
        # in-place BatchNorm + Scale pairs run as one batch_norm (fastpath.BatchNormScale)
        self._merged_steps, self._merged_spans = fastpath.fuse_batchnorm_scale(self._steps)
        self._layer_index = {p.name: i for i, p in enumerate(self._plans)}
        self._shapes_dirty = False
        self._recorded = False

    def _append_params(self, plan, layer) -> None:
        """Sharing by ``param { name }`` and lr/decay multipliers, one layer at a time, right
        after its setup (Caffe's AppendParam)."""
        owners, has_lr, has_decay = self._owners, self._has_lr, self._has_decay
        specs = list(plan.param.param)
        for i in range(len(layer.blobs)):
            spec = specs[i] if i < len(specs) else caffe_pb2.ParamSpec()
            p = layer.blobs[i]
            fixed = not p.requires_grad  # the layer keeps it out of learning (BatchNorm stats)
            if spec.name and spec.name in owners:
                owner_layer, owner_i, lid = owners[spec.name]
                owner = self.learnable_params[lid]
                self._share(layer, i, owner, spec, plan.name, owner_layer)
                for has, vals, field in ((has_lr, self.lr_mults, "lr_mult"), (has_decay, self.decay_mults, "decay_mult")):
                    if spec.HasField(field):
                        if has[lid] and vals[lid] != getattr(spec, field):
                            raise ConfigError(
                                f"{self.source}: Shared param '{spec.name}' has mismatched {field} "
                                f"(layer '{owner_layer}': {vals[lid]}, layer '{plan.name}': {getattr(spec, field)})"
                            )
                        has[lid], vals[lid] = True, getattr(spec, field)
                continue
            lid = len(self.learnable_params)
            if spec.name:
                owners[spec.name] = (plan.name, i, lid)
            self.learnable_params.append(p)
            self.learnable_names.append(f"{plan.name}[{i}]")
            self.lr_mults.append(0.0 if fixed else spec.lr_mult)
            self.decay_mults.append(0.0 if fixed else spec.decay_mult)
            has_lr.append(spec.HasField("lr_mult") or fixed)
            has_decay.append(spec.HasField("decay_mult") or fixed)

    def _finish_params(self) -> None:
        for p, lr in zip(self.learnable_params, self.lr_mults):
            p.requires_grad_(lr != 0)  # lr_mult 0: Caffe computes no gradient for it
        self.params = OrderedDict(
            (plan.name, [ParamBlob(self, layer, i) for i in range(len(layer.blobs))])
            for plan, layer in zip(self._plans, self.module)
            if len(layer.blobs)
        )

    def _share(self, layer, i, owner, spec, layer_name, owner_layer) -> None:
        mine = tuple(layer.blobs[i].shape)
        theirs = tuple(owner.shape)
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if permissive:
            if int(np.prod(mine)) != int(np.prod(theirs)):
                raise ShapeError(
                    f"{self.source}: Cannot share param '{spec.name}' owned by layer '{owner_layer}' with layer "
                    f"'{layer_name}'; count mismatch. Owner layer param shape is {theirs}; sharing layer shape is {mine}"
                )
        elif mine != theirs:
            raise ShapeError(
                f"{self.source}: Cannot share param '{spec.name}' owned by layer '{owner_layer}' with layer "
                f"'{layer_name}'; shape mismatch. Owner layer param shape is {theirs}; sharing layer expects "
                f"shape {mine}"
            )
        if mine == theirs:
            layer.blobs[i] = owner
        else:  # PERMISSIVE with another shape: a reshaped view of the owner's data
            from torch.nn.utils import parametrize

            layer.blobs[i] = nn.Parameter(owner.detach().clone(), requires_grad=owner.requires_grad)
            parametrize.register_parametrization(layer.blobs, str(i), _View(mine), unsafe=True)
            layer.blobs.parametrizations[str(i)].original = owner

    def _setup_losses(self) -> None:
        """Caffe's loss weights: explicit per top, else 1 on top 0 of loss layers."""
        self._loss_tops: list[tuple[str, float]] = []
        for plan, layer in zip(self._plans, self.module):
            weights = plan.loss_weights or ([1.0] + [0.0] * (len(plan.tops) - 1) if layer.is_loss else [])
            for t, w in zip(plan.tops, weights):
                if w:
                    self._loss_tops.append((t, float(w)))

    # ------------------------------------------------------------- blob state
    def _value(self, name: str) -> torch.Tensor:
        if name in self._inputs:
            return self._inputs[name]
        t = self._values.get(name)
        if t is None or tuple(t.shape) != self._blob_shapes[name]:
            t = torch.zeros(self._blob_shapes[name], device=self.device)
            self._values[name] = t
        return t

    def _diff(self, name: str) -> torch.Tensor:
        t = self._diffs.get(name)
        if t is None or tuple(t.shape) != self._blob_shapes[name]:
            t = torch.zeros(self._blob_shapes[name], device=self.device)
            self._diffs[name] = t
        return t

    def _reshape_blob(self, name: str, shape: tuple) -> None:
        if name not in self._blob_shapes:
            raise KeyError(name)
        self._blob_shapes[name] = shape
        if name in self._inputs and tuple(self._inputs[name].shape) != shape:
            self._inputs[name] = torch.zeros(shape, device=self.device)
        self._shapes_dirty = True

    def reshape(self) -> None:
        """Propagate input shapes through every layer (Caffe's Net::Reshape)."""
        self._host.upload()
        for (layer, bottoms, tops, _, is_input), plan in zip(self._steps, self._plans):
            if is_input:
                continue
            try:
                shapes = layer.reshape([self._blob_shapes[b] for b in bottoms])
            except PipelineError as e:
                raise e.prefixed(self.source) from None
            for t, s in zip(tops, shapes):
                self._blob_shapes[t] = tuple(int(d) for d in s)
        self._shapes_dirty = False

    def _sync_host(self) -> None:
        self._host.upload()
        if self._shapes_dirty:
            self.reshape()

    # ---------------------------------------------------------------- running
    def _index(self, layer_name, default):
        if layer_name is None:
            return default
        try:
            return self._layer_index[layer_name]
        except KeyError:
            raise GraphError(f"{self.source}: no layer named '{layer_name}'") from None

    def _run(self, i0: int, i1: int, grad: bool) -> None:
        if i0 == 0 and i1 == len(self._steps) - 1:  # every blob is recomputed: let the last
            self._values.clear()                      # pass's tensors go first (peak memory)
        if getattr(self, "_fast", None) is not None:
            return self._fast.run(self, i0, i1, grad)
        steps = self._steps if fastpath.splits(self._merged_spans, i0, i1) else self._merged_steps
        with torch.set_grad_enabled(grad):
            self._run_steps(steps[i0 : i1 + 1], grad)
        self._recorded = grad

    def _run_steps(self, steps, grad: bool) -> None:
        """Run ``steps`` (entries of ``self._steps``) in order into ``self._values``; the
        fast path (``pipeline.fastpath``) runs its step lists through this too."""
        vals = self._values
        for layer, bottoms, tops, detach, is_input in steps:
            if is_input:
                for t in tops:
                    x = self._inputs[t]
                    if grad and self.force_backward and not x.requires_grad:
                        x.requires_grad_(True)
                    vals[t] = x
                continue
            args = [vals[b] for b in bottoms]
            if any(detach):
                args = [a.detach() if d else a for a, d in zip(args, detach)]
            out = layer(*args)
            if not bottoms:  # a source layer: its tops come from the host
                out = _to_device(out, self.device)
            for t, o in zip(tops, (out,) if isinstance(out, torch.Tensor) else out):
                vals[t] = o
                if o.shape != self._blob_shapes.get(t):  # top reshaped in Forward, as Caffe's
                    self._blob_shapes[t] = tuple(o.shape)  # DetectionOutput and Filter do

    def _after_forward(self) -> None:
        self._host.forget()
        self._diffs = {}
        for name, w in self._loss_tops:
            self._diffs[name] = torch.full(self._blob_shapes[name], w, device=self.device)

    def _needs_graph(self) -> bool:
        return self.phase == caffe_pb2.TRAIN or self.force_backward

    def _feed(self, kwargs) -> None:
        for name, arr in kwargs.items():
            if name not in self.blobs:
                raise GraphError(f"{self.source}: forward got '{name}', which is not a blob of this net")
            arr = np.asarray(arr, dtype=np.float32)
            if tuple(arr.shape) != self._blob_shapes[name]:
                self._reshape_blob(name, tuple(arr.shape))
            self._sync_host()
            with torch.no_grad():
                self._value(name).copy_(torch.from_numpy(arr))

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Run layers ``start``..``end`` (default all); returns {output blob: data array}.

        Keyword arguments set input blobs first (an array of another shape reshapes
        the blob). ``blobs`` names extra blobs to return.
        """
        self._feed(kwargs)
        self._sync_host()
        n = len(self._steps)
        i0, i1 = self._index(start, 0), self._index(end, n - 1)
        self._run(i0, i1, self._needs_graph())
        self._after_forward()
        names = list(self._plans[i1].tops) if end is not None else list(self.outputs)
        names += [b for b in (blobs or []) if b not in names]
        return {b: self.blobs[b].data for b in names}

    def loss(self) -> torch.Tensor:
        """The weighted sum of the loss tops from the last forward (a 0-d tensor)."""
        terms = [w * self._values[name].sum() for name, w in self._loss_tops if name in self._values]
        return sum(terms) if terms else torch.zeros((), device=self.device)

    def forward_backward(self) -> float:
        """One training pass (solver's fast path): forward with autograd, then the loss's
        backward into the parameters' ``.grad`` (accumulating). Returns the loss."""
        self._sync_host()
        self._run(0, len(self._steps) - 1, True)
        loss = self.loss()
        if loss.requires_grad:
            loss.backward()
        self._after_forward()
        self._recorded = False  # the graph was consumed; a later backward() re-runs forward
        return float(loss.detach())

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Back-propagate from ``start`` (default: the last layer) down to ``end``.

        Seeds are the loss tops (their diff is the loss weight, as in Caffe), the
        diffs of output blobs (set through ``blob.diff`` or as keyword arguments).
        Fills every blob's ``diff`` and the parameters' gradients (accumulating, as
        Caffe's param diffs do). Returns {input blob (or end's bottoms): diff}.
        """
        for name, arr in kwargs.items():
            if name not in self.blobs:
                raise GraphError(f"{self.source}: backward got '{name}', which is not a blob of this net")
            self._diff(name).copy_(torch.as_tensor(np.asarray(arr, np.float32), device=self.device))
        self._host.upload()
        n = len(self._steps)
        i0, i1 = self._index(end, 0), self._index(start, n - 1)
        if not self._recorded:
            saved = dict(self._diffs)
            self._run(0, n - 1, True)
            self._diffs.update(saved)
        seeds = [b for b in (self._plans[i1].tops if start is not None else self.outputs)]
        seeds += [name for name, _ in self._loss_tops if name not in seeds]
        tensors, grads = [], []
        for name in seeds:
            t = self._values.get(name)
            if t is not None and t.requires_grad and name in self._diffs:
                tensors.append(t)
                grads.append(self._diffs[name])
        for t in self._values.values():
            if t.requires_grad and t.grad_fn is not None:
                t.retain_grad()
        for name in self.inputs:
            self._inputs[name].grad = None
        if tensors:
            inputs = None
            if start is not None or end is not None:
                inputs = [p for m in self.module[i0 : i1 + 1] for p in m.parameters() if p.requires_grad]
                inputs += [self._values[b] for b in self._plans[i0].bottoms if self._values[b].requires_grad]
                if end is None:  # down to the net's inputs (force_backward), as pycaffe's backward(start=...)
                    inputs += [t for t in self._inputs.values() if t.requires_grad]
            torch.autograd.backward(tensors, grads, inputs=inputs or None)
        for name, t in self._values.items():
            if t.grad is not None:
                self._diffs[name] = t.grad
        self._host.forget()
        self._recorded = False
        names = list(self._plans[i0].bottoms) if end is not None else list(self.inputs)
        names += [d for d in (diffs or []) if d not in names]
        return {b: self.blobs[b].diff for b in names}

    def _batches(self, arrays: dict):
        first = next(iter(self.inputs), None)
        bs = self._blob_shapes[first][0] if first else 1
        total = len(next(iter(arrays.values()))) if arrays else bs
        for i in range(0, total, bs):
            yield i, min(i + bs, total), {k: v[i : i + bs] for k, v in arrays.items()}

    def forward_all(self, blobs=None, **kwargs):
        """Forward whole arrays batch by batch; returns {output: concatenated array}.

        A last partial batch is padded with zeros and the padding dropped, as pycaffe.
        """
        outs: dict[str, list] = {}
        for lo, hi, batch in self._batches(kwargs):
            padded = {k: _pad_to(v, self._blob_shapes[k][0]) for k, v in batch.items()}
            res = self.forward(blobs=blobs, **padded)
            for k, v in res.items():
                outs.setdefault(k, []).append(np.array(v[: hi - lo], copy=True))
        return {k: np.concatenate(v) for k, v in outs.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all and backward_all together; returns (outputs, input diffs)."""
        fwd_in = {k: v for k, v in kwargs.items() if k in self.inputs}
        bwd_in = {k: v for k, v in kwargs.items() if k not in self.inputs}
        outs: dict[str, list] = {}
        douts: dict[str, list] = {}
        for lo, hi, batch in self._batches({**fwd_in, **bwd_in}):
            n = self._blob_shapes[self.inputs[0]][0] if self.inputs else hi - lo
            fb = {k: _pad_to(v, n) for k, v in batch.items() if k in fwd_in}
            bb = {k: _pad_to(v, n) for k, v in batch.items() if k in bwd_in}
            for k, v in self.forward(blobs=blobs, **fb).items():
                outs.setdefault(k, []).append(np.array(v[: hi - lo], copy=True))
            for k, v in self.backward(diffs=diffs, **bb).items():
                douts.setdefault(k, []).append(np.array(v[: hi - lo], copy=True))
        return (
            {k: np.concatenate(v) for k, v in outs.items()},
            {k: np.concatenate(v) for k, v in douts.items()},
        )

    # --------------------------------------------------------------- pycaffe
    @property
    def layers(self) -> list:
        return [LayerView(self, m) for m in self.module]

    @property
    def layer_dict(self) -> "OrderedDict[str, LayerView]":
        return OrderedDict((p.name, LayerView(self, m)) for p, m in zip(self._plans, self.module))

    @property
    def _layer_names(self) -> list:
        return [p.name for p in self._plans]

    @property
    def _blob_names(self) -> list:
        return list(self.blobs)

    @property
    def top_names(self) -> "OrderedDict[str, list]":
        return OrderedDict((p.name, list(p.tops)) for p in self._plans)

    @property
    def bottom_names(self) -> "OrderedDict[str, list]":
        return OrderedDict((p.name, list(p.bottoms)) for p in self._plans)

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        """pycaffe's ``blob_loss_weights``: each blob's loss weight (0 for blobs that are no loss)."""
        weights = dict(self._loss_tops)
        return OrderedDict((name, weights.get(name, 0.0)) for name in self.blobs)

    def layer_steps(self) -> list:
        """The forward loop one layer at a time (Caffe's ``layers()``, ``bottom_vecs()``,
        ``top_vecs()``): ``(name, layer, bottoms, tops, propagate_down)`` per layer, in order.
        For tools that run or time each layer on its own (``pipeline time``)."""
        return [
            (p.name, layer, list(bottoms), list(tops), [not d for d in detach])
            for p, (layer, bottoms, tops, detach, _) in zip(self._plans, self._steps)
        ]

    def to(self, device) -> "Net":
        """Move every parameter and blob to ``device``."""
        self.device = resolve_device(device)
        self._host.upload()
        self.module.to(self.device)
        self._inputs = {k: v.detach().to(self.device) for k, v in self._inputs.items()}
        self._values, self._diffs, self._recorded = {}, {}, False
        return self

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData layer (lands with the data layers)."""
        for layer in self.module:
            if hasattr(layer, "set_input_arrays"):
                return layer.set_input_arrays(data, labels)
        raise ConfigError(f"{self.source}: set_input_arrays needs a MemoryData layer")

    # ---------------------------------------------------------------- weights
    def copy_from(self, path) -> None:
        """Copy weights by layer name from a ``.caffemodel`` or ``.h5`` file."""
        _weights.copy_from(self, path)

    def load_hdf5(self, path) -> None:
        _weights.copy_from(self, path, hdf5=True)

    def save(self, path) -> None:
        """Write the net and its weights as a binary ``.caffemodel``."""
        _weights.save(self, path)

    def save_hdf5(self, path) -> None:
        """Write the weights in Caffe's HDF5 layout (``/data/<layer>/<i>``)."""
        _weights.save_hdf5(self, path)

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s parameters for every same-named layer (ShareTrainedLayersWith)."""
        _weights.share_with(self, other)

    def __repr__(self):
        return f"<Net '{self.name}' phase={'TRAIN' if self.phase == 0 else 'TEST'} layers={len(self._plans)}>"


class _View(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(self.shape)


def _to_device(out, device):
    if isinstance(out, torch.Tensor):
        return out if out.device == device else out.to(device, non_blocking=True)
    return tuple(o if o.device == device else o.to(device, non_blocking=True) for o in out)


def _pad_to(arr, n: int):
    arr = np.asarray(arr)
    if len(arr) >= n:
        return arr
    pad = np.zeros((n - len(arr),) + arr.shape[1:], arr.dtype)
    return np.concatenate([arr, pad])
