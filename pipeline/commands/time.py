"""``pipeline time``: per-layer forward and backward times, as ``caffe time`` reports them.

    pipeline time --model M [--weights W] [--iterations 50] [--gpu 0] [--phase TRAIN]
                  [--level 0] [--stage a,b]

As in tools/caffe.cpp ``time()``: build the net (phase TRAIN unless ``--phase``), do one
untimed forward and backward ("Initial loss"), then for each of ``--iterations``
passes run every layer's forward in order and every layer's backward in reverse
order, timing each one. The report gives each layer's average forward and backward
milliseconds, ``Average Forward pass``, ``Average Backward pass``,
``Average Forward-Backward`` (the total wall time over the iterations) and
``Total Time``, in Caffe's words, on stderr in glog's format. The net's inputs (if it
has any) stay as they are (zeros), as Caffe assumes.

How a layer's backward is timed on its own (autograd has no per-layer Backward):
``LayerwiseRun`` runs the net as one autograd segment per layer. A layer's bottoms
are detached from the layers that made them (leaf tensors that require grad when
the producer's output does and the bottom propagates down), so each layer's graph
holds only its own ops. Backward of layer i is ``torch.autograd.backward`` of its
tops alone, seeded with the gradients its consumers handed down (plus the loss
weight on a loss top, Caffe's loss top diff; zeros on a top no consumer seeded,
where Caffe too runs Backward on whatever diff the top holds). That computes the
layer's parameter gradients (accumulated, as Caffe's param diffs are) and its bottom
gradients, which are added to the producers' seeds. The gradients are those of
``Net.forward_backward`` (tests check it); only the bookkeeping between layers is
extra. On a CUDA device each timing records CUDA events and waits for the stop
event (Caffe's GPU ``Timer``), so a layer's time includes its queued kernels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..net import Net
from ..proto import caffe_pb2
from ..solvers.glog import num
from .common import add_net_flags, glog_to_stderr, phase_from_flag, stages_from_flag
from .devices import Timer, parse_gpus, single_device
from .. import fastpath
from .fastflags import add_fast_flags, any_fast, fast_kwargs, time_whole_net
from .flags import Parser

_LOG = logging.getLogger("pipeline.time")


class LayerwiseRun:
    """A net run layer by layer, each layer its own autograd segment (see the module notes).

    ``forward(i)`` then, after every later layer's ``backward``, ``backward(i)``;
    ``forward_all()`` returns the loss (Σ loss weight × Σ top, Caffe's Forward loss).
    """

    def __init__(self, net: Net):
        self.net = net
        self.device = net.device
        self.steps = net.layer_steps()
        weights = net.blob_loss_weights
        self.loss_weights = [[weights.get(t, 0.0) for t in tops] for (_, _, _, tops, _) in self.steps]
        net.reshape()  # uploads host writes to the inputs and settles the shapes
        self.inputs = {}
        for name in net.inputs:
            x = torch.as_tensor(np.array(net.blobs[name].data, np.float32), device=self.device)
            self.inputs[name] = x.requires_grad_(bool(net.force_backward))
        self.current: dict[str, tuple] = {}  # blob -> (tensor, (layer index, top index))
        self.saved: list = [None] * len(self.steps)
        self.grads: dict[tuple, torch.Tensor] = {}  # (layer index, top index) -> seed

    def forward(self, i: int) -> None:
        """Run layer ``i`` on (detached) bottoms and record what its backward needs."""
        _, layer, bottoms, tops, propagate = self.steps[i]
        if getattr(layer, "is_input", False):
            outs = [self.inputs[t] for t in tops]
            leaves, producers = [], []
        else:
            leaves, producers = [], []
            for b, down in zip(bottoms, propagate):
                x, producer = self.current[b]
                leaf = x.detach()
                if down and x.requires_grad:
                    leaf.requires_grad_(True)
                leaves.append(leaf)
                producers.append(producer)
            with torch.enable_grad():
                out = layer(*leaves)
            outs = [out] if isinstance(out, torch.Tensor) else list(out)
            if not bottoms:  # a source layer's tops come from the host
                outs = [o.to(self.device, non_blocking=True) for o in outs]
        for k, (t, o) in enumerate(zip(tops, outs)):
            self.current[t] = (o, (i, k))
        self.saved[i] = (leaves, producers, outs)

    def backward(self, i: int) -> None:
        """Back-propagate layer ``i`` alone: param grads accumulate, bottom grads go to the producers."""
        leaves, producers, outs = self.saved[i]
        self.saved[i] = None
        tensors, seeds = [], []
        for k, o in enumerate(outs):
            g = self.grads.pop((i, k), None)
            if not o.requires_grad:
                continue
            w = self.loss_weights[i][k]
            if w:
                g = torch.full_like(o, w) if g is None else g + w
            tensors.append(o)
            seeds.append(torch.zeros_like(o) if g is None else g)
        if tensors:
            torch.autograd.backward(tensors, seeds)
        for leaf, producer in zip(leaves, producers):
            if leaf.grad is not None:
                prev = self.grads.get(producer)
                self.grads[producer] = leaf.grad if prev is None else prev + leaf.grad

    def forward_all(self) -> float:
        for i in range(len(self.steps)):
            self.forward(i)
        loss = 0.0
        for i, (leaves, producers, outs) in enumerate(self.saved):
            for o, w in zip(outs, self.loss_weights[i]):
                if w:
                    loss += w * float(o.detach().sum())
        return loss

    def backward_all(self) -> None:
        for i in reversed(range(len(self.steps))):
            self.backward(i)


@dataclass
class TimeReport:
    """Average milliseconds per iteration (``caffe time``'s figures)."""

    iterations: int
    initial_loss: float
    layers: list = field(default_factory=list)  # (name, forward ms, backward ms)
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    forward_backward_ms: float = 0.0
    total_ms: float = 0.0


def benchmark(net: Net, iterations: int, log=None) -> TimeReport:
    """Time ``iterations`` layer-by-layer forward and backward passes of ``net`` (``caffe time``).

    Logs Caffe's report and returns it as a ``TimeReport``; the parameters' ``.grad``
    are as they were before (the timed backward passes accumulate into them).
    """
    log = log or _LOG.info
    saved_grads = [p.grad for p in net.learnable_params]  # the timed passes accumulate into .grad
    for p in net.learnable_params:
        p.grad = None  # (in place into an existing one: keep the caller's tensors out of it)
    try:
        return _benchmark(net, iterations, log)
    finally:
        for p, g in zip(net.learnable_params, saved_grads):
            p.grad = g


def _benchmark(net: Net, iterations: int, log) -> TimeReport:
    run = LayerwiseRun(net)
    n = len(run.steps)
    log("Performing Forward")
    initial_loss = run.forward_all()
    log(f"Initial loss: {num(initial_loss)}")
    log("Performing Backward")
    run.backward_all()
    log("*** Benchmark begins ***")
    log(f"Testing for {iterations} iterations.")
    dev = net.device
    total_timer, forward_timer, backward_timer, timer, iter_timer = (Timer(dev) for _ in range(5))
    forward_us, backward_us = [0.0] * n, [0.0] * n
    forward_total = backward_total = 0.0
    total_timer.start()
    for j in range(iterations):
        iter_timer.start()
        forward_timer.start()
        for i in range(n):
            timer.start()
            run.forward(i)
            forward_us[i] += timer.microseconds()
        forward_total += forward_timer.microseconds()
        backward_timer.start()
        for i in reversed(range(n)):
            timer.start()
            run.backward(i)
            backward_us[i] += timer.microseconds()
        backward_total += backward_timer.microseconds()
        log(f"Iteration: {j + 1} forward-backward time: {num(iter_timer.milliseconds())} ms.")
    report = TimeReport(iterations, initial_loss)
    log("Average time per layer: ")
    for (name, *_), f_us, b_us in zip(run.steps, forward_us, backward_us):
        f_ms, b_ms = f_us / 1000 / iterations, b_us / 1000 / iterations
        log(f"{name:>10}\tforward: {num(f_ms)} ms.")
        log(f"{name:>10}\tbackward: {num(b_ms)} ms.")
        report.layers.append((name, f_ms, b_ms))
    total_timer.stop()
    report.forward_ms = forward_total / 1000 / iterations
    report.backward_ms = backward_total / 1000 / iterations
    report.total_ms = total_timer.milliseconds()
    report.forward_backward_ms = report.total_ms / iterations
    log(f"Average Forward pass: {num(report.forward_ms)} ms.")
    log(f"Average Backward pass: {num(report.backward_ms)} ms.")
    log(f"Average Forward-Backward: {num(report.forward_backward_ms)} ms.")
    log(f"Total Time: {num(report.total_ms)} ms.")
    log("*** Benchmark ends ***")
    return report


def time(argv) -> int:
    """``pipeline time``: returns 0 after logging the benchmark."""
    p = Parser(prog="pipeline time", description="Benchmark the execution time of a model, layer by layer.")
    add_net_flags(p, "Optional; network phase (TRAIN or TEST); default TRAIN.")
    p.add_argument("--weights", default="", help="Optional; weights (.caffemodel or .h5) to copy in first.")
    add_fast_flags(p)
    a = p.parse_args(argv)
    if not a.model:
        raise ConfigError("Need a model definition to time (--model).")
    if a.iterations < 1:
        raise ConfigError(f"--iterations {a.iterations}: need at least 1")
    phase = phase_from_flag(a.phase, caffe_pb2.TRAIN)
    gpus = parse_gpus(a.gpu)
    with glog_to_stderr():
        device = single_device(gpus, _LOG.info)
        if device.type == "cuda":
            fastpath.cudnn_benchmark(a.cudnn_benchmark)
        net = Net(a.model, phase, level=a.level, stages=stages_from_flag(a.stage), device=device,
                  python_layers=not a.no_python_layers, **fast_kwargs(a))
        if a.weights:
            net.copy_from(a.weights)
        if any_fast(a):  # fused / compiled / autocast: whole-net times (fastflags.time_whole_net)
            time_whole_net(net, a.iterations, _LOG.info)
        else:
            benchmark(net, a.iterations, _LOG.info)
    return 0
