#!/usr/bin/env python3
"""Benchmark ``pipeline.Net`` against the same network hand-written in plain PyTorch.

For CaffeNet and GoogLeNet (the BVLC deploy prototxts) this builds our Net (TEST
phase, float32), builds the same network as an ordinary ``nn.Module``, copies our
Net's weights into it, checks that both compute the same outputs and gradients,
then times forward (no autograd) and forward+backward (the output seeded with a
fixed random gradient; gradients for every parameter and for the input). Each
measurement is the median of ``--repeats`` runs after ``--warmup`` runs, with ours
and plain interleaved (ABAB, BABA, ...) so background load hits both alike; the
table also gives the ratio of the fastest runs ("min ratio"), steadier on a busy
machine, and the spread (a row whose slowest run is over 1.5 x its fastest is
marked noisy).

The plain nets are what one would write by hand: ``nn.Conv2d``, in-place ``nn.ReLU``,
``nn.MaxPool2d(ceil_mode=True)``, ``nn.LocalResponseNorm``, ``nn.Linear``, ``torch.cat``.
``--plain-lrn sum`` swaps ``nn.LocalResponseNorm`` (avg_pool3d inside) for the same
unfold-sum formula our LRN layer uses, so that the ratio isolates the Net's overhead.

What is timed:
    fwd       ours: ``net.forward()`` (public API; input already fed, output handed
              back as numpy);  plain: ``model(x)`` under ``torch.inference_mode``,
              output copied to a host numpy array.
    fwd+bwd   ours: the training path (``Net._run`` with autograd, then backward of
              the output blob);  plain: ``model(x).backward(g)``. Gradients are set
              to None before each run (untimed) on both sides.
    fwd+bwd (pycaffe)   with ``--pycaffe-api``: ours through ``net.forward()`` +
              ``net.backward(prob=g)`` (every blob's diff kept), against the same plain run.

Usage:
    .venv/bin/python tools/bench_net.py [--batch N] [--repeats 5] [--warmup 2]
        [--device cpu|cuda] [--nets caffenet,googlenet] [--zoo DIR] [--json out.json]
        [--plain-lrn nn|sum] [--pycaffe-api] [--profile]

Exit status 1 when the outputs or gradients of the two implementations disagree.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pipeline

REPO = Path(__file__).resolve().parents[1]
OUT_TOL = 1e-4  # max abs diff allowed between the two outputs (softmax probabilities)
LOGIT_TOL = 1e-4  # max abs diff of the logits, relative to their largest magnitude
# Gradients: ||ours - plain|| / ||plain||. Not an element-wise bound: a forward difference
# at rounding level can flip a max-pool argmax between two near-equal cells, which moves
# one gradient entry elsewhere (seen: 2e-3 on CaffeNet's conv1/data, where torch's own
# nn.LocalResponseNorm is the one farther from a float64 run); a wrong formula gives O(1).
GRAD_TOL = 1e-2


# ------------------------------------------------------------------ plain PyTorch nets
# The hand-written modules live in tools/plain_nets.py (shared with tools/benchmark.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_nets import CaffeNetPlain, ChannelSumLRN, GoogLeNetPlain, make_lrn  # noqa: F401

NETS = {  # key: (zoo path, plain class, logits blob)
    "caffenet": ("BVLC__caffe/models/bvlc_reference_caffenet/deploy.prototxt", CaffeNetPlain, "fc8"),
    "googlenet": ("BVLC__caffe/models/bvlc_googlenet/deploy.prototxt", GoogLeNetPlain,
                  "loss3/classifier"),
}


# ------------------------------------------------------------------ helpers
def copy_weights(net, model) -> None:
    """Copy our Net's learnable blobs into the plain model, checking names and shapes."""
    mapped = model.caffe_layers()
    ours = {name for name in net.params}
    missing = ours - {n for n, _ in mapped}
    if missing:
        raise SystemExit(f"plain model has no layer for: {sorted(missing)}")
    with torch.no_grad():
        for name, mod in mapped:
            blobs = net.layer_dict[name].module.blobs
            for src, dst in zip(blobs, (mod.weight, mod.bias)):
                if tuple(src.shape) != tuple(dst.shape):
                    raise SystemExit(f"{name}: our blob {tuple(src.shape)} vs plain "
                                     f"{tuple(dst.shape)}")
                dst.copy_(src)


def randomize(net, gen) -> None:
    """He-normal weights and small random biases in our Net (deploy fillers may be 0)."""
    with torch.no_grad():
        for name in net.params:
            blobs = net.layer_dict[name].module.blobs
            w = blobs[0]
            fan_in = w[0].numel()
            w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            for b in list(blobs)[1:]:
                b.copy_(torch.randn(b.shape, generator=gen) * 0.01)


def fwd_bwd_ours(net, out: str, grad: torch.Tensor) -> None:
    """Forward with autograd and backward of ``out`` seeded with ``grad``.

    Net has no public call for this on a net without a loss (forward_backward seeds
    the loss); this is the body such a call would have.
    """
    net._run(0, len(net._steps) - 1, True)
    net._values[out].backward(grad)


def clear_grads(params, inputs) -> None:
    for p in params:
        p.grad = None
    for t in inputs:
        t.grad = None


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def check(name, net, model, x, grad, out_blob, logits_blob) -> dict:
    """Outputs, logits and gradients of ours vs plain; SystemExit(1) on disagreement."""
    ours = net.forward(data=x.cpu().numpy())[out_blob]
    ours_logits = np.array(net.blobs[logits_blob].data)
    with torch.inference_mode():
        plain = model(x).cpu().numpy()
        plain_logits = model.logits(x).cpu().numpy()
    out_diff = float(np.abs(ours - plain).max())
    logit_diff = float(np.abs(ours_logits - plain_logits).max() / np.abs(plain_logits).max())
    # Gradients: input and every parameter.
    data = net._inputs["data"]
    data.requires_grad_(True)
    clear_grads(net.learnable_params, [data])
    fwd_bwd_ours(net, out_blob, grad)
    xp = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model(xp).backward(grad)
    gdiff = {"data": rel_diff(data.grad, xp.grad)}
    for lname, mod in model.caffe_layers():
        blobs = net.layer_dict[lname].module.blobs
        gdiff[lname] = max(rel_diff(blobs[0].grad, mod.weight.grad),
                           rel_diff(blobs[1].grad, mod.bias.grad))
    worst = max(gdiff, key=gdiff.get)
    res = {"out_max_abs_diff": out_diff, "logits_max_rel_diff": logit_diff,
           "grad_norm_rel_diff": gdiff}
    ok = out_diff < OUT_TOL and logit_diff < LOGIT_TOL and gdiff[worst] < GRAD_TOL
    print(f"check {name}: output max|diff| {out_diff:.2e} (< {OUT_TOL:g}), logits max rel "
          f"{logit_diff:.2e} (< {LOGIT_TOL:g}), gradients ||diff||/||plain|| {gdiff[worst]:.2e} "
          f"(< {GRAD_TOL:g}; worst: {worst}) -> "
          f"{'OK' if ok else 'MISMATCH'}", flush=True)
    if not ok:
        raise SystemExit(1)
    return res


def time_pair(cases: dict, warmup: int, repeats: int, sync, min_ms: float = 0.0, max_repeats: int = 200) -> dict:
    """cases: label -> (prep, run). Interleaved runs; returns label -> list of ms.

    At least ``repeats`` runs each, more (up to ``max_repeats``) until every case has run
    for ``min_ms`` in all: fast cases get enough runs for a steady median."""
    for _ in range(warmup):
        for prep, run in cases.values():
            prep()
            run()
            sync()
    times = {k: [] for k in cases}
    labels = list(cases)
    r = 0
    while r < repeats or (r < max_repeats and min(sum(v) for v in times.values()) < min_ms):
        r += 1
        for k in (labels if r % 2 == 1 else labels[::-1]):
            prep, run = cases[k]
            prep()
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def profile(name, cases: dict, sync, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    for label, (prep, run) in cases.items():
        prep()
        with tprofile(activities=acts) as prof:
            run()
            sync()
        print(f"\n--- profile {name} {label}: top {top} ops by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


# ------------------------------------------------------------------ main
def bench_net(key, args, device, sync, rows, checks) -> None:
    rel, plain_cls, logits_blob = NETS[key]
    path = Path(args.zoo) / rel
    t0 = time.perf_counter()
    net = pipeline.Net(str(path), pipeline.TEST, device=device)
    build_ms = (time.perf_counter() - t0) * 1e3
    shape = list(net.blobs["data"].shape)
    if args.batch:
        shape[0] = args.batch
    out_blob = net.outputs[0]
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(shape, generator=gen).to(device)
    model = plain_cls(args.plain_lrn).to(device).eval()
    randomize(net, gen)
    copy_weights(net, model)
    net.forward(data=x.cpu().numpy())  # feeds (and reshapes) the input blob
    grad = torch.randn(net.blobs[out_blob].shape, generator=gen).to(device)
    print(f"{key}: {path.name} input {tuple(shape)}, {len(net.layers)} layers, "
          f"build {build_ms:.0f} ms", flush=True)
    checks[key] = check(key, net, model, x, grad, out_blob, logits_blob)

    # forward only
    data = net._inputs["data"]
    net.force_backward = False  # no graph in forward()
    data.requires_grad_(False)

    def plain_fwd():
        with torch.inference_mode():
            model(x).cpu().numpy()

    noop = lambda: None
    phases = {"fwd": {"ours": (noop, lambda: net.forward()), "plain": (noop, plain_fwd)}}

    # forward + backward
    xp = x.clone().requires_grad_(True)
    plain_params = list(model.parameters())

    def ours_prep():
        data.requires_grad_(True)
        clear_grads(net.learnable_params, [data])

    phases["fwd+bwd"] = {
        "ours": (ours_prep, lambda: fwd_bwd_ours(net, out_blob, grad)),
        "plain": (lambda: clear_grads(plain_params, [xp]), lambda: model(xp).backward(grad)),
    }
    if args.pycaffe_api:
        g_np = grad.cpu().numpy()

        def ours_api():
            net.forward()
            net.backward(**{out_blob: g_np})

        def api_prep():
            net.force_backward = True
            clear_grads(net.learnable_params, [])

        phases["fwd+bwd (pycaffe)"] = {"ours": (api_prep, ours_api),
                                       "plain": phases["fwd+bwd"]["plain"]}

    for phase, cases in phases.items():
        times = time_pair(cases, args.warmup, args.repeats, sync)
        o, p = statistics.median(times["ours"]), statistics.median(times["plain"])
        rows.append({"net": key, "phase": phase, "ours_ms": o, "plain_ms": p, "ratio": o / p,
                     "min_ratio": min(times["ours"]) / min(times["plain"]),
                     "ours_runs_ms": times["ours"], "plain_runs_ms": times["plain"]})
        print(f"  {phase:<18} ours {o:9.1f} ms  plain {p:9.1f} ms  ratio {o / p:5.3f}", flush=True)
        if args.profile:
            profile(key, cases, sync, args.profile_top)
    data.requires_grad_(False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default=str(REPO.parent / "shared" / "caffe-zoo"),
                    help="caffe-zoo folder (default: <repo>/../shared/caffe-zoo)")
    ap.add_argument("--nets", default="caffenet,googlenet", help="comma list of: " + ", ".join(NETS))
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: the prototxt's, 10)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per case first")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--plain-lrn", choices=("nn", "sum"), default="nn",
                    help="plain net's LRN: nn.LocalResponseNorm (default) or the same "
                         "unfold-sum formula our LRN layer uses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--pycaffe-api", action="store_true",
                    help="also time ours through net.forward() + net.backward(prob=g)")
    ap.add_argument("--profile", action="store_true",
                    help="after each phase, print torch.profiler's top ops for ours and plain")
    ap.add_argument("--profile-top", type=int, default=15)
    args = ap.parse_args(argv)

    keys = [k.strip() for k in args.nets.split(",") if k.strip()]
    for k in keys:
        if k not in NETS:
            ap.error(f"unknown net {k!r} (known: {', '.join(NETS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"repeats {args.repeats}, warmup {args.warmup}", flush=True)

    rows, checks = [], {}
    t0 = time.perf_counter()
    for k in keys:
        bench_net(k, args, device, sync, rows, checks)
    total = time.perf_counter() - t0

    print(f"\n{'net':<10} {'phase':<18} {'ours ms':>10} {'plain ms':>10} {'ours/plain':>11}"
          f" {'min ratio':>10}   spread ours / plain (min-max ms)")
    for r in rows:
        so = f"{min(r['ours_runs_ms']):.0f}-{max(r['ours_runs_ms']):.0f}"
        sp = f"{min(r['plain_runs_ms']):.0f}-{max(r['plain_runs_ms']):.0f}"
        flag = "" if r["ratio"] <= 1.10 else "  > 1.10"
        if max(r["ours_runs_ms"]) > 1.5 * min(r["ours_runs_ms"]) or \
                max(r["plain_runs_ms"]) > 1.5 * min(r["plain_runs_ms"]):
            flag += "  noisy: max > 1.5 x min, rerun or raise --repeats"
        print(f"{r['net']:<10} {r['phase']:<18} {r['ours_ms']:10.1f} {r['plain_ms']:10.1f} "
              f"{r['ratio']:11.3f} {r['min_ratio']:10.3f}   {so} / {sp}{flag}")
    print(f"(total {total:.0f} s)")
    if args.json:
        meta = {"torch": torch.__version__, "device": str(device),
                "threads": torch.get_num_threads(), "batch": args.batch or None,
                "plain_lrn": args.plain_lrn, "repeats": args.repeats, "warmup": args.warmup,
                "machine": platform.platform(), "total_s": total}
        if device.type == "cuda":
            meta["gpu"] = torch.cuda.get_device_name(device)
        Path(args.json).write_text(json.dumps({"meta": meta, "checks": checks, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
