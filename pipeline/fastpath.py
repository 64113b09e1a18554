"""Fast paths of a Net: channels_last, BatchNorm folding and ReLU fusion, torch.compile, mixed precision.

``Net(..., channels_last=True, compile=True, precision="bf16", fuse=True)`` or
``configure(net, ...)`` on a built net (``pipeline train/time`` flags ``--channels_last``,
``--compile``, ``--precision``, ``--no_fuse``, ``--cudnn_benchmark``).

- **channels_last**: 4-d parameters (convolution filters) move to
  ``torch.channels_last``; convolutions then produce NHWC activations (oneDNN on CPU,
  cuDNN on GPU pick NHWC kernels). Values are those of the NCHW path within float
  rounding (another summation order inside the convolution), not bit for bit.
- **fuse** (default on for nets without a backward pass: TEST phase without
  ``force_backward``): a Convolution followed directly by *in-place* BatchNorm
  (global statistics), Scale and/or ReLU layers on its top -- ResNet's
  ``conv -> bn -> scale -> relu`` on one blob, CaffeNet's ``conv -> relu`` -- runs as one
  convolution with folded filters::

      s  = gamma / sqrt(var + eps)        (gamma = 1 without Scale; var, mean: BatchNorm's
      W' = W * s[o]                        blobs times its 1/b2 factor, as the layer)
      b' = (b - mean) * s + beta

  followed by an in-place ReLU. Folding is done in float64 and cached until a
  parameter changes (``copy_from``, numpy writes). Only in-place chains are fused, so
  every blob a user can read holds what Caffe's would (the in-place blob ends as the
  chain's output in Caffe too); values agree within float rounding. ``fuse=False``
  turns it off.
- **compile**: the layers after the inputs and data layers run as one
  ``torch.compile``d function (the whole forward; data layers stay eager). The first
  call compiles (seconds to minutes); a new input shape recompiles. ``compile`` is True
  (inductor), a mode (``"reduce-overhead"``: CUDA graphs for the fixed shapes of a net,
  ``"max-autotune"``, ...) or a backend name (``"aot_eager"``).
- **precision**: ``"fp32"`` (default) is strict float32: on CUDA it turns off TF32 in
  cuDNN convolutions and matmuls (``torch.backends.cudnn.allow_tf32``, which PyTorch
  leaves on), so GPU results match the CPU's within float32 rounding, as Caffe's do;
  ``"tf32"`` allows TF32 (faster on Ampere and later GPUs, about 1e-3 relative error).
  ``"bf16"`` or ``"fp16"`` runs the forward under ``torch.autocast`` (on
  CUDA; ``bf16`` also on the CPU); parameters, gradients, the solver's update and every
  blob a user reads stay float32 (blobs are cast back after the forward). ``"fp16"``
  adds dynamic loss scaling (``LossScaler``): the loss tops' gradient is multiplied by
  the scale during backward and the solver divides it out (and skips the update on an
  overflow, halving the scale) -- what ``torch.amp.GradScaler`` does for optimizers.

``cudnn_benchmark(True)`` sets ``torch.backends.cudnn.benchmark`` (cuDNN autotuning for
fixed shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blob import _HostMirror
from .errors import ConfigError

PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cudnn_benchmark(on: bool = True) -> None:
    """cuDNN autotuning: pick the fastest convolution algorithm per shape (GPU only)."""
    torch.backends.cudnn.benchmark = bool(on)


class LossScaler:
    """Dynamic loss scaling for fp16 (``GradScaler``'s rule): start at ``init``; an
    overflow halves the scale and skips the update; ``growth_interval`` clean steps
    double it."""

    def __init__(self, init: float = 2.0**16, growth_interval: int = 2000):
        self.scale = float(init)
        self.growth_interval = int(growth_interval)
        self._clean = 0

    def unscale_(self, grads) -> bool:
        """Divide the gradients by the scale; True when they are all finite."""
        inv = 1.0 / self.scale
        finite = True
        for g in grads:
            g.mul_(inv)
            finite = finite and bool(torch.isfinite(g).all())
        if finite:
            self._clean += 1
            if self._clean >= self.growth_interval:
                self.scale, self._clean = self.scale * 2.0, 0
        else:
            self.scale, self._clean = self.scale * 0.5, 0
        return finite


class _WatchedMirror(_HostMirror):
    """The net's host mirror, counting parameter views handed out: on the CPU a numpy
    view writes straight into the tensor (no version bump), so the folded filters are
    recomputed after any ``net.params[...]`` access."""

    def __init__(self, base: _HostMirror):
        super().__init__()
        self._arrays = base._arrays
        self.param_views = 0

    def view(self, key, tensor):
        if isinstance(key[0], tuple):  # ParamBlob keys: ((layer, index), "data"|"diff")
            self.param_views += 1
        return super().view(key, tensor)


class _Passthrough(nn.Module):
    """A fused layer's place in the run: its (in-place) top is its bottom."""

    def forward(self, x):
        return x


class FusedConv(nn.Module):
    """Convolution (+ BatchNorm) (+ Scale) (+ ReLU) as one convolution (module notes)."""

    def __init__(self, conv, bn=None, scale=None, relu=None, channels_last=False, mirror=None):
        super().__init__()
        self.mirror = mirror
        self.conv, self.bn, self.scale, self.relu = conv, bn, scale, relu
        self.channels_last = channels_last
        self._key = None
        self._w = self._b = None

    def _params(self):
        ps = list(self.conv.blobs)
        for m in (self.bn, self.scale):
            if m is not None:
                ps += list(m.blobs)
        return ps

    @torch.no_grad()
    def _fold(self):
        key = tuple((p.data_ptr(), p._version) for p in self._params())
        key += (self.mirror.param_views if self.mirror is not None else 0,)
        if key == self._key:
            return
        conv = self.conv
        w = conv.blobs[0].detach().double()
        o = w.shape[0]
        b = conv.blobs[1].detach().double() if conv.bias_term else torch.zeros(o, dtype=w.dtype, device=w.device)
        if self.bn is not None or self.scale is not None:
            s = torch.ones(o, dtype=w.dtype, device=w.device)
            shift = torch.zeros_like(s)
            if self.bn is not None:
                bn = self.bn.blobs
                b2 = bn[2].detach().double()
                f = torch.where(b2 == 0, torch.zeros_like(b2), b2.reciprocal())
                mean, var = bn[0].detach().double() * f, bn[1].detach().double() * f
                s = 1.0 / torch.sqrt(var + self.bn.eps)
                shift = -mean * s
            if self.scale is not None:
                gamma = self.scale.blobs[0].detach().double().reshape(-1)
                s, shift = s * gamma, shift * gamma
                if self.scale.bias_term:
                    shift = shift + self.scale.blobs[1].detach().double().reshape(-1)
            w = w * s.view(-1, *([1] * (w.dim() - 1)))
            b = b * s + shift
        w = w.float()
        if self.channels_last and w.dim() == 4:
            w = w.contiguous(memory_format=torch.channels_last)
        self._w, self._b, self._key = w, b.float(), key
        self._packed = {}

    def _onednn(self, x) -> bool:
        """CPU, float32, 2-d, channels_last, no autograd: oneDNN with filters packed once."""
        return (_ONEDNN_CONV and self.channels_last and self.conv.num_spatial == 2 and x.dtype == torch.float32
                and x.device.type == "cpu" and not torch.is_grad_enabled())

    def forward(self, x):
        self._fold()
        c = self.conv
        relu = self.relu is not None and self.relu.negative_slope == 0
        if self._onednn(x):
            # filters reordered into oneDNN's blocked layout once per input shape (what
            # torch.compile's freezing does), and the ReLU applied by the same primitive
            packed = self._packed.get(x.shape)
            if packed is None:
                if len(self._packed) > 8:
                    self._packed.clear()
                packed = self._packed[x.shape] = torch.ops.mkldnn._reorder_convolution_weight(
                    self._w, list(c.pads), list(c.strides), list(c.dilations), c.group, list(x.shape))
            y = torch.ops.mkldnn._convolution_pointwise(
                x, packed, self._b, list(c.pads), list(c.strides), list(c.dilations), c.group,
                "relu" if relu else "none", [], "")
        else:
            y = _CONV[c.num_spatial](x, self._w, self._b, c.strides, c.pads, c.dilations, c.group)
            if relu:
                y = F.relu_(y)
        if self.relu is not None and not relu:
            y = F.leaky_relu_(y, self.relu.negative_slope)
        return y


class BatchNormScale(nn.Module):
    """A BatchNorm and the in-place Scale right after it on the same blob, as one
    ``F.batch_norm`` with weight γ and bias β (training and testing alike; each layer's
    parameters keep their own gradients). The blob ends holding the Scale's output, as
    Caffe's in-place pair leaves it."""

    def __init__(self, bn, scale):
        super().__init__()
        self.bn, self.scale = bn, scale

    def forward(self, x):
        s = self.scale
        return self.bn(x, s.blobs[0], s.blobs[1] if s.bias_term else None)


# torch.compile modes (inductor); any other string names a backend
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_options(compile) -> dict:
    """torch.compile keywords for a ``compile`` value: True (inductor), a mode of
    ``COMPILE_MODES`` ("reduce-overhead": CUDA graphs replay the captured forward on the
    GPU) or a backend name ("aot_eager", ...)."""
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return {"backend": "inductor", "mode": compile}
    return {"backend": compile if isinstance(compile, str) else "inductor"}


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_ONEDNN_CONV = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
                and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight"))


def _in_place(step, blob) -> bool:
    _, bottoms, tops, _, is_input = step
    return not is_input and list(bottoms) == [blob] and list(tops) == [blob]


def _plain_scale(m) -> bool:
    """A one-bottom Scale over axis 1 alone: a per-channel affine map."""
    return m.num_bottoms == 1 and m.axis == 1 and m.num_axes == 1


def fuse_batchnorm_scale(steps: list) -> tuple[list, list]:
    """``steps`` with each in-place BatchNorm -> Scale pair merged (``BatchNormScale``); the
    Scale's place becomes a pass-through. Returns (steps, spans): spans are the (first, last)
    step indices of each merged pair, valid with and without autograd."""
    steps, spans = list(steps), []
    for i in range(len(steps) - 1):
        layer, bottoms, tops, detach, is_input = steps[i]
        scale = steps[i + 1][0]
        if (is_input or getattr(layer, "type", "") != "BatchNorm" or len(tops) != 1
                or not _in_place(steps[i], tops[0]) or any(detach)
                or getattr(scale, "type", "") != "Scale" or not _in_place(steps[i + 1], tops[0])
                or any(steps[i + 1][3]) or not _plain_scale(scale)):
            continue
        steps[i] = (BatchNormScale(layer, scale), bottoms, tops, detach, is_input)
        _, b, t, d, inp = steps[i + 1]
        steps[i + 1] = (_Passthrough(), b, t, d, inp)
        spans.append((i, i + 1))
    return steps, spans


def splits(spans, i0: int, i1: int) -> bool:
    """Whether running steps i0..i1 would cut one of the merged ``spans`` in two."""
    return any(a < i0 <= b or a <= i1 < b for a, b in spans)


def fuse_steps(steps: list, channels_last: bool = False, mirror=None, device=None) -> tuple[list, list]:
    """The net's run steps with in-place conv/BN/Scale/ReLU chains fused (inference only:
    the folded filters carry no gradient); returns (steps, spans of the fused chains).

    A convolution followed by a ReLU alone is fused only where one primitive then does
    both (oneDNN: CPU and channels_last); elsewhere it would run the same two kernels
    with more Python in between."""
    steps = list(steps)
    spans = []
    one_primitive = _ONEDNN_CONV and channels_last and (device is None or torch.device(device).type == "cpu")
    for i, (layer, bottoms, tops, detach, is_input) in enumerate(steps):
        if (is_input or getattr(layer, "type", "") != "Convolution" or len(bottoms) != 1 or len(tops) != 1
                or getattr(layer, "channel_axis", 1) != 1 or getattr(layer, "transposed", False)):
            continue
        blob, j, parts = tops[0], i + 1, {}
        for kind in ("BatchNorm", "Scale", "ReLU"):
            if j < len(steps) and getattr(steps[j][0], "type", "") == kind and _in_place(steps[j], blob):
                m = steps[j][0]
                if kind == "BatchNorm" and not m.use_global_stats:
                    break
                if kind == "Scale" and not _plain_scale(m):
                    break
                parts[kind] = j
                j += 1
        if not parts or (set(parts) == {"ReLU"} and not one_primitive):
            continue
        mods = {k: steps[idx][0] for k, idx in parts.items()}
        conv = FusedConv(layer, mods.get("BatchNorm"), mods.get("Scale"), mods.get("ReLU"), channels_last, mirror)
        steps[i] = (conv, bottoms, tops, detach, is_input)
        for idx in parts.values():
            _, b, t, d, inp = steps[idx]
            steps[idx] = (_Passthrough(), b, t, d, inp)
        spans.append((i, max(parts.values())))
    return steps, spans


class FastPath:
    """How one Net runs its forward (module notes); ``Net._run`` hands over to ``run``."""

    def __init__(self, net, channels_last=False, compile=False, precision="fp32", fuse=None):
        self.dtype = PRECISIONS[precision]  # checked by ``configure``
        self.precision = precision
        if self.dtype is torch.float16 and net.device.type != "cuda":
            raise ConfigError(f"{net.source}: precision fp16 needs a CUDA device (bf16 runs on the CPU too)")
        self.channels_last = bool(channels_last)
        if self.channels_last:
            net.module.to(memory_format=torch.channels_last)
        trains = net.phase == 0 or net.force_backward
        self.fuse = (not trains) if fuse is None else bool(fuse)
        if self.fuse and trains:
            raise ConfigError(f"{net.source}: fuse=True needs a net without backward (TEST phase, no force_backward)")
        steps, spans = list(net._steps), []
        if self.fuse:
            if not isinstance(net._host, _WatchedMirror):
                net._host = _WatchedMirror(net._host)
            steps, spans = fuse_steps(steps, self.channels_last, net._host, net.device)
        self.fused = len(spans)
        steps, bn_spans = fuse_batchnorm_scale(steps)
        self.steps, self.spans = steps, spans + bn_spans
        # with autograd (a backward on a fused net, for param diffs): the net's own merged steps
        self.grad_steps, self.grad_spans = net._merged_steps, net._merged_spans
        self.plain_steps = list(net._steps)  # a run that would cut a fused chain in two
        n_head = 0
        while n_head < len(steps) and (steps[n_head][4] or not steps[n_head][1]):
            n_head += 1  # inputs and data layers: always eager
        self.n_head = n_head
        self.compile = bool(compile)
        self._compiled = torch.compile(self._body, dynamic=False, **compile_options(compile)) if self.compile else None
        self.scaler = LossScaler() if self.dtype is torch.float16 and trains else None

    def _body(self, vals: dict) -> dict:
        vals = dict(vals)
        for layer, bottoms, tops, detach, is_input in self.steps[self.n_head:]:
            if is_input:  # fed before the call (``run``)
                continue
            args = [vals[b] for b in bottoms]
            if any(detach):
                args = [a.detach() if d else a for a, d in zip(args, detach)]
            out = layer(*args)
            for t, o in zip(tops, (out,) if isinstance(out, torch.Tensor) else out):
                vals[t] = o
        return vals

    def _run_steps(self, net, steps, vals, grad):
        net._run_steps(steps, grad)  # ``vals`` is ``net._values``

    def run(self, net, i0: int, i1: int, grad: bool) -> None:
        """Layers i0..i1 of ``net`` (as ``Net._run``), on the fast path."""
        vals = net._values
        whole = i0 == 0 and i1 == len(self.steps) - 1
        steps, spans = (self.grad_steps, self.grad_spans) if grad and self.fused else (self.steps, self.spans)
        if splits(spans, i0, i1):
            steps = self.plain_steps
        amp = (torch.autocast(net.device.type, dtype=self.dtype) if self.dtype is not None
               else torch.autocast(net.device.type, enabled=False))
        with torch.set_grad_enabled(grad), amp:
            if whole and self._compiled is not None and steps is self.steps:
                eager = self.steps[: self.n_head] + [s for s in self.steps[self.n_head:] if s[4]]
                self._run_steps(net, eager, vals, grad)
                try:
                    vals.update(self._compiled({k: vals[k] for s in eager for k in s[2]}))
                except RuntimeError:
                    # bad data (a label out of range) fails inside generated code with a bare
                    # kernel message: the eager layers raise the typed error naming the layer
                    self._run_steps(net, [s for s in self.steps[self.n_head:] if not s[4]], vals, grad)
                    raise
            else:
                self._run_steps(net, steps[i0 : i1 + 1], vals, grad)
        for t, v in vals.items():
            if v.dtype in (torch.float16, torch.bfloat16):
                vals[t] = v.float()
            if tuple(vals[t].shape) != net._blob_shapes.get(t, tuple(vals[t].shape)):
                net._blob_shapes[t] = tuple(vals[t].shape)
        if grad and self.scaler is not None:
            for name, _ in net._loss_tops:
                t = vals.get(name)
                if t is not None and t.requires_grad:
                    t.register_hook(lambda g, s=self.scaler: g * s.scale)
        net._recorded = grad


def configure(net, channels_last=False, compile=False, precision="fp32", fuse=None):
    """Put ``net`` on the fast path (module notes); returns the ``FastPath`` (also ``net._fast``).

    All defaults (and ``fuse`` None on a training net) leave the net's plain path."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{net.source}: precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if net.device.type == "cuda":
        # float32 means float32, as in Caffe: cuDNN's default TF32 convolutions round the
        # operands to 10-bit mantissas. precision="tf32" allows TF32 (process-wide flags).
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    if precision == "tf32":
        precision = "fp32"
    if not (channels_last or compile or precision != "fp32" or fuse is not None or net.phase == 1):
        net._fast = None
        return None
    fp = FastPath(net, channels_last, compile, precision, fuse)
    plain = not (fp.channels_last or fp.compile or fp.dtype is not None or fp.fused)
    net._fast = None if plain else fp
    return net._fast


__all__ = ["configure", "compile_options", "cudnn_benchmark", "COMPILE_MODES", "BatchNormScale", "FastPath", "FusedConv", "LossScaler",
           "fuse_batchnorm_scale", "fuse_steps", "splits", "PRECISIONS"]
