"""The fast-path flags ``pipeline train`` and ``pipeline time`` share (``pipeline.fastpath``).

    --channels_last              4-d parameters and activations in NHWC
    --compile [true|false|MODE|BACKEND]  torch.compile the whole forward (MODE: reduce-overhead for CUDA
                                 graphs, max-autotune; BACKEND: a torch.compile backend name)
    --precision fp32|tf32|bf16|fp16   strict float32 (default), TF32 on CUDA, or autocast
                                 (fp16: CUDA only, with dynamic loss scaling)
    --fuse true|false            fold BatchNorm/Scale into convolutions and fuse ReLUs in TEST nets (default true)
    --cudnn_benchmark true|false cuDNN autotuning on GPU (default true)
"""

from __future__ import annotations

import logging
import time as _time

from .. import fastpath
from .devices import synchronize
from .flags import gflag_bool


def _compile_value(text: str):
    try:
        return gflag_bool(text)
    except Exception:
        return text  # a mode ("reduce-overhead": CUDA graphs, ...) or a backend name ("aot_eager", ...)


def add_fast_flags(p) -> None:
    p.add_argument("--channels_last", nargs="?", const=True, default=False, type=gflag_bool,
                   help="Optional; channels_last (NHWC) memory format.")
    p.add_argument("--compile", nargs="?", const=True, default=False, type=_compile_value,
                   help="Optional; torch.compile the whole forward: true, a mode (reduce-overhead: CUDA "
                        "graphs; max-autotune) or a backend name.")
    p.add_argument("--precision", default="fp32", choices=sorted(fastpath.PRECISIONS),
                   help="Optional; fp32 (strict), tf32 (CUDA), bf16 or fp16 (autocast; fp16 with loss scaling).")
    p.add_argument("--fuse", default=True, type=gflag_bool,
                   help="Optional; fold BatchNorm/Scale/ReLU into convolutions in TEST nets (default true).")
    p.add_argument("--cudnn_benchmark", default=True, type=gflag_bool,
                   help="Optional; cuDNN autotuning on GPU (default true).")


def fast_kwargs(a) -> dict:
    """The Net keywords of the flags (``fuse`` None: the net's default, on for TEST nets)."""
    return {"channels_last": a.channels_last, "compile": a.compile, "precision": a.precision,
            "fuse": None if a.fuse else False}


def any_fast(a) -> bool:
    return bool(a.channels_last or a.compile or a.precision != "fp32")


def configure_solver(solver, a, device) -> None:
    """Apply the flags to a solver's train net and test nets."""
    if device.type == "cuda":
        fastpath.cudnn_benchmark(a.cudnn_benchmark)
    kw = fast_kwargs(a)
    train_kw = dict(kw, fuse=None)  # the train net has a backward: never fused
    fastpath.configure(solver.net, **train_kw)
    for net in solver.test_nets:
        fastpath.configure(net, **kw)
    if solver.net._fast is not None and solver.net._fast.scaler is not None:
        solver.loss_scaler = solver.net._fast.scaler


def time_whole_net(net, iterations: int, log) -> dict:
    """Whole-net forward and forward+backward averages (per-layer times mean nothing once
    layers are fused or compiled); logged in ``caffe time``'s words."""
    trains = net.phase == 0 or net.force_backward
    net.forward()
    if trains:
        net.forward_backward()
    synchronize(net.device)
    t0 = _time.perf_counter()
    for _ in range(iterations):
        net.forward()
    synchronize(net.device)
    fwd = (_time.perf_counter() - t0) * 1e3 / iterations
    log(f"Average Forward pass: {fwd:g} ms.")
    out = {"forward_ms": fwd}
    if trains:
        t0 = _time.perf_counter()
        for _ in range(iterations):
            net.forward_backward()
        synchronize(net.device)
        fb = (_time.perf_counter() - t0) * 1e3 / iterations
        log(f"Average Forward-Backward: {fb:g} ms.")
        out["forward_backward_ms"] = fb
    log("*** Benchmark ends ***")
    return out


_LOG = logging.getLogger("pipeline.time")
