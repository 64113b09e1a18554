#!/usr/bin/env python3
"""Benchmark suite (issue 7): pipeline.Net vs hand-written PyTorch vs OpenCV dnn.

For LeNet (batch 64), CaffeNet (16), GoogLeNet (8) and ResNet-50 (4) from ``models/``,
in one process and one run:

train rows   The deploy net with its final Softmax replaced by ``SoftmaxWithLoss`` on
             random labels (an ``Input`` blob ``label`` of shape (N,)), TRAIN phase
             (Dropout active, BatchNorm on batch statistics), against the plain module
             (``tools/plain_nets.py``) in ``train()`` mode with ``F.cross_entropy``:
  fwd        ours ``net._run`` with autograd + ``net.loss()``; plain ``cross_entropy(logits)``.
  bwd        the loss's backward only (the forward is done untimed before each run).
  step       a whole SGD iteration: ours zero the diffs (``_foreach_zero_``, as Solver),
             ``net.forward_backward()``, ``pipeline.solvers.rules.apply_update`` (Caffe's
             SGD: L2 decay 5e-4, momentum 0.9, lr 0.01); plain ``opt.zero_grad()``,
             loss, ``backward()``, ``torch.optim.SGD(momentum=0.9, weight_decay=5e-4).step()``.
infer rows   The deploy net, TEST phase, batch as above (GoogLeNet 4 and ResNet-50 1, the
             OpenCV comparison's batches): ours layer by layer (``fuse=False``), ours
             folded (``fuse=True, channels_last=True``: BatchNorm+Scale folded into the
             convolution, ReLU fused), the plain module under ``inference_mode`` and, for
             GoogLeNet and ResNet-50, ``cv2.dnn.readNetFromCaffe`` on the same prototxt
             with the weights our ``Net.save`` wrote (OpenCV threads = torch threads).
             Outputs (logits and prob) are checked to agree across all of them.

Weights are random but not degenerate (``plain_nets.randomize``: He-normal filters,
random BatchNorm statistics, last layer rescaled so the logits have std ~ 3, so every
input gets its own distribution); the check also requires the prob rows of a batch to
differ.

Times: median of ``--repeats`` runs (more, up to 200, until each case has run ``--min-ms``
in all: cheap cases such as LeNet get dozens of runs) after ``--warmup``, runs of ours and the baselines
interleaved (``bench_net.time_pair``); ratio = ours / baseline (median), and the ratio
of the fastest runs ("min ratio", steadier on a busy machine).

Peak memory (``--mem``, default on): one fresh subprocess per (net, implementation,
mode). It imports everything (and runs a tiny optimizer step so torch's lazy imports
are paid up front), reads ``VmRSS`` from /proc/self/status, builds the net
(and optimizer), runs two iterations (train step or forward), then reads ``VmHWM`` (the
resident-set high-water mark). Peak = VmHWM - VmRSS after imports: weights, gradients,
optimizer history, activations and allocator slack of that implementation alone, in
MiB. (tracemalloc misses torch's allocations; a fresh process per measurement keeps one
implementation's freed-but-cached memory from hiding the other's peak; the child runs with
``MALLOC_MMAP_THRESHOLD_=131072`` so that freed tensors leave the resident set at once.)

Usage:
    .venv/bin/python tools/benchmark.py [--nets lenet,caffenet,googlenet,resnet50]
        [--repeats 3] [--warmup 1] [--device cpu|cuda] [--channels-last] [--precision bf16]
        [--compile] [--no-mem] [--no-opencv] [--json out.json]

The fast-path flags (``--channels-last``, ``--precision``, ``--compile``) apply to our
train net and to the plain module alike (plain: ``.to(memory_format=channels_last)``,
``torch.autocast``, ``torch.compile``). Exit status 1 when outputs disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_net import time_pair
from plain_nets import CaffeNetPlain, GoogLeNetPlain, LeNetPlain, ResNet50Plain, copy_from_net, randomize

import pipeline
from pipeline.fastpath import PRECISIONS
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2
from pipeline.registry import SOLVERS
from pipeline.solvers import rules

REPO = Path(__file__).resolve().parents[1]
NETS = {  # key: (models/ folder, plain class, logits blob, train batch, inference batch)
    "lenet": ("lenet", LeNetPlain, "ip2", 64, 64),
    "caffenet": ("caffenet", CaffeNetPlain, "fc8", 16, 16),
    "googlenet": ("googlenet", GoogLeNetPlain, "loss3/classifier", 8, 4),
    "resnet50": ("resnet50", ResNet50Plain, "fc1000", 4, 1),
}
OPENCV = ("googlenet", "resnet50")
LR, MOMENTUM, DECAY = 0.01, 0.9, 5e-4
AGREE_TOL = 1e-3  # max |logits diff| / max |logits| across implementations


# ------------------------------------------------------------------ net definitions
def deploy_param(key: str, batch: int) -> caffe_pb2.NetParameter:
    """models/<key>/deploy.prototxt with the Input batch set to ``batch``."""
    p = prototxt.read_net(REPO / "models" / NETS[key][0] / "deploy.prototxt")
    p.layer[0].input_param.shape[0].dim[0] = batch
    return p


def train_param(key: str, batch: int) -> caffe_pb2.NetParameter:
    """The deploy net with Softmax -> SoftmaxWithLoss(logits, label) and a label Input."""
    p = deploy_param(key, batch)
    last = p.layer[-1]
    assert last.type == "Softmax", last.type
    logits = last.bottom[0]
    del p.layer[-1]
    label = p.layer.add(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    p.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[logits, "label"], top=["loss"])
    return p


def make_weights(key: str, tmp: Path, seed: int) -> Path:
    """Random non-degenerate weights (logit std ~ 3), saved with Net.save; returns the path."""
    net = pipeline.Net(deploy_param(key, 2), pipeline.TEST, fuse=False)
    gen = torch.Generator().manual_seed(seed)
    randomize(net, gen)
    x = torch.randn(tuple(net.blobs["data"].shape), generator=gen).numpy()
    net.forward(data=x)
    std = float(np.asarray(net.blobs[NETS[key][2]].data).std())
    last = [n for n in net.params][-1]
    with torch.no_grad():
        for b in net.layer_dict[last].module.blobs:
            b.mul_(3.0 / max(std, 1e-12))
    path = tmp / f"{key}.caffemodel"
    net.save(str(path))
    return path


def plain_model(key, weights, device, train, channels_last=False):
    net = pipeline.Net(deploy_param(key, 1), str(weights), pipeline.TEST, fuse=False)
    model = NETS[key][1]()
    copy_from_net(net, model)
    model = model.to(device).train(train)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ------------------------------------------------------------------ the cases
class TrainCases:
    """Ours and plain training net on the same weights, input and labels."""

    def __init__(self, key, weights, device, args, gen, sides=("ours", "plain")):
        batch = NETS[key][3]
        self.net = None if "ours" not in sides else pipeline.Net(train_param(key, batch), str(weights), pipeline.TRAIN, device=device,
                                channels_last=args.channels_last, compile=args.compile,
                                precision=args.precision)
        shape = (batch,) + tuple(deploy_param(key, 1).layer[0].input_param.shape[0].dim[1:])
        ncls = {"lenet": 10}.get(key, 1000)
        self.x = torch.randn(shape, generator=gen)
        self.y = torch.randint(0, ncls, (batch,), generator=gen)
        if self.net is not None:
            self.net.blobs["data"].data[...] = self.x.numpy()
            self.net.blobs["label"].data[...] = self.y.numpy().astype(np.float32)
            self.params = self.net.learnable_params
            self.rule = SOLVERS.get("SGD")
            self.history = [torch.zeros_like(p) for p in self.params]
            for p in self.params:  # every diff exists, as in Caffe (BatchNorm's statistics get none)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        if "plain" not in sides:
            return
        self.model = plain_model(key, weights, device, True, args.channels_last)
        if args.compile:
            self.fwd_logits = torch.compile(self.model.logits)
        else:
            self.fwd_logits = self.model.logits
        self.xd, self.yd = self.x.to(device), self.y.to(device)
        if args.channels_last:
            self.xd = self.xd.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=DECAY)
        self.autocast = (lambda: torch.autocast(device.type, dtype=PRECISIONS[args.precision])) \
            if args.precision != "fp32" else contextlib.nullcontext
        self._loss = None

    # ours
    def ours_zero(self):
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    def ours_fwd(self):
        self.net._sync_host()
        self.net._run(0, len(self.net._steps) - 1, True)
        self._loss = self.net.loss()

    def ours_bwd(self):
        self._loss.backward()
        self._loss = None

    def ours_update(self):
        rules.apply_update(self.rule, self.params, [p.grad for p in self.params], self.history,
                           rate=LR, lr_mults=self.net.lr_mults, decay_mults=self.net.decay_mults,
                           weight_decay=DECAY, regularization_type="L2", clip=-1.0, iter_size=1,
                           hyper={"momentum": MOMENTUM})

    def ours_step(self):
        self.ours_zero()
        self.net.forward_backward()
        self.ours_update()

    # plain
    def plain_fwd(self):
        with self.autocast():
            self._loss = F.cross_entropy(self.fwd_logits(self.xd).float(), self.yd)

    def plain_bwd(self):
        self._loss.backward()
        self._loss = None

    def plain_step(self):
        self.opt.zero_grad()
        self.plain_fwd()
        self.plain_bwd()
        self.opt.step()

    def phases(self):
        noop = lambda: None
        return {
            "train fwd": {"ours": (noop, self.ours_fwd), "plain": (noop, self.plain_fwd)},
            "train bwd": {"ours": (lambda: (self.ours_zero(), self.ours_fwd()), self.ours_bwd),
                          "plain": (lambda: (self.opt.zero_grad(), self.plain_fwd()), self.plain_bwd)},
            "train step": {"ours": (noop, self.ours_step), "plain": (noop, self.plain_step)},
        }


class InferCases:
    """Deploy net, TEST phase: ours (fuse=False), ours folded, plain, OpenCV."""

    def __init__(self, key, weights, device, args, gen):
        batch = NETS[key][4]
        param = deploy_param(key, batch)
        self.key, self.logits_blob = key, NETS[key][2]
        self.net = pipeline.Net(param, str(weights), pipeline.TEST, device=device, fuse=False)
        self.fused = pipeline.Net(param, str(weights), pipeline.TEST, device=device, fuse=True,
                                  channels_last=True)
        self.x = torch.randn(tuple(self.net.blobs["data"].shape), generator=gen)
        xn = self.x.numpy()
        self.net.blobs["data"].data[...] = xn
        self.fused.blobs["data"].data[...] = xn
        self.model = plain_model(key, weights, device, False)
        self.xd = self.x.to(device)
        self.cv = None
        if key in OPENCV and args.opencv and device.type == "cpu":
            import cv2
            cv2.setNumThreads(torch.get_num_threads())
            with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
                f.write(prototxt.to_text(param))
            self.cv = cv2.dnn.readNetFromCaffe(f.name, str(weights))
            Path(f.name).unlink()
            self.cv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self.cv_out = self.cv.getUnconnectedOutLayersNames()[0]

    def plain_fwd(self):
        with torch.inference_mode():
            return self.model(self.xd).cpu().numpy()

    def cv_fwd(self):
        self.cv.setInput(self.x.numpy())
        return self.cv.forward(self.cv_out)

    def check(self) -> dict:
        """Logits and prob of every implementation against ours (fuse=False)."""
        ref = self.net.forward()["prob"]
        ref_l = np.array(self.net.blobs[self.logits_blob].data)
        outs = {"ours fused": (self.fused.forward()["prob"],
                               np.array(self.fused.blobs[self.logits_blob].data))}
        with torch.inference_mode():
            outs["plain"] = (self.plain_fwd(), self.model.logits(self.xd).cpu().numpy())
        if self.cv is not None:
            self.cv.setInput(self.x.numpy())
            p, lg = self.cv.forward([self.cv_out, self.logits_blob])
            outs["opencv"] = (p.reshape(ref.shape), lg.reshape(ref_l.shape))
        scale = float(np.abs(ref_l).max())
        res = {k: {"logits_max_rel_diff": float(np.abs(lg - ref_l).max() / scale),
                   "prob_max_abs_diff": float(np.abs(p - ref).max())} for k, (p, lg) in outs.items()}
        distinct = ref.shape[0] < 2 or float(np.abs(ref[0] - ref[1]).max()) > 1e-3
        ok = distinct and all(r["logits_max_rel_diff"] < AGREE_TOL for r in res.values())
        print(f"check {self.key} inference: " + ", ".join(
            f"{k} logits {r['logits_max_rel_diff']:.1e}" for k, r in res.items())
            + f" (< {AGREE_TOL:g}); prob rows differ: {distinct} -> {'OK' if ok else 'MISMATCH'}",
            flush=True)
        res["ok"] = ok
        return res

    def cases(self):
        noop = lambda: None
        c = {"ours": (noop, lambda: self.net.forward()),
             "ours fused": (noop, lambda: self.fused.forward()),
             "plain": (noop, self.plain_fwd)}
        if self.cv is not None:
            c["opencv"] = (noop, self.cv_fwd)
        return c


# ------------------------------------------------------------------ peak memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def mem_child(key, impl, mode, weights, device, args) -> float:
    """Build one implementation, run two iterations; (VmHWM - VmRSS after imports) MiB."""
    if impl == "opencv":
        import cv2
    # Lazy imports (torch.optim's first step pulls in torch._dynamo, ~60 MiB) are paid
    # before the baseline, by every implementation alike, so they are not counted.
    w = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=1e-4)
    F.cross_entropy(w.view(1, 4), torch.zeros(1, dtype=torch.long)).backward()
    opt.step()
    del w, opt
    base = _status_kib("VmRSS")
    gen = torch.Generator().manual_seed(args.seed)
    if mode == "train":  # only the measured side is built
        c = TrainCases(key, weights, device, args, gen, sides=(impl,))
        run = c.ours_step if impl == "ours" else c.plain_step
    else:
        if impl == "plain":
            model = plain_model(key, weights, device, False)
            shape = (NETS[key][4],) + tuple(deploy_param(key, 1).layer[0].input_param.shape[0].dim[1:])
            x = torch.randn(shape, generator=gen).to(device)

            def run():
                with torch.inference_mode():
                    model(x).cpu().numpy()
        elif impl == "opencv":
            c = InferCases.__new__(InferCases)
            import cv2
            param = deploy_param(key, NETS[key][4])
            with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
                f.write(prototxt.to_text(param))
            c.cv = cv2.dnn.readNetFromCaffe(f.name, str(weights))
            Path(f.name).unlink()
            c.cv_out = c.cv.getUnconnectedOutLayersNames()[0]
            c.x = torch.randn(tuple(param.layer[0].input_param.shape[0].dim), generator=gen)
            run = c.cv_fwd
        else:
            net = pipeline.Net(deploy_param(key, NETS[key][4]), str(weights), pipeline.TEST,
                               device=device, fuse=impl == "ours fused",
                               channels_last=impl == "ours fused")
            net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal(
                net.blobs["data"].data.shape).astype(np.float32)
            run = net.forward
    for _ in range(2):
        run()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return (_status_kib("VmHWM") - base) / 1024


def measure_memory(key, impl, mode, weights, args) -> float | None:
    cmd = [sys.executable, __file__, "--_mem", f"{key}:{impl}:{mode}:{weights}", "--device", args.device,
           "--seed", str(args.seed), "--threads", str(torch.get_num_threads())]
    if args.channels_last and mode == "train":
        cmd.append("--channels-last")
    if args.precision != "fp32" and mode == "train":
        cmd += ["--precision", args.precision]
    # glibc's malloc raises its mmap threshold as big blocks are freed, after which freed
    # tensors stay in the heap for a while: the high-water mark then depends on the order
    # of frees and varies by +-20 % between runs. A fixed threshold maps every block over
    # 128 KiB on its own and unmaps it when freed, so VmHWM follows live memory.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        print(f"  memory {key} {impl} {mode}: child failed: {r.stderr.strip().splitlines()[-1:]}")
        return None
    return float(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main
def summarize(key, phase, batch, times, rows) -> None:
    base_keys = [k for k in times if k not in ("ours", "ours fused")]
    for ours in [k for k in ("ours", "ours fused") if k in times]:
        for b in base_keys:
            o, p = statistics.median(times[ours]), statistics.median(times[b])
            rows.append({"net": key, "phase": phase, "batch": batch, "ours": ours, "baseline": b,
                         "ours_ms": o, "baseline_ms": p, "ratio": o / p,
                         "min_ratio": min(times[ours]) / min(times[b]),
                         "ours_runs_ms": times[ours], "baseline_runs_ms": times[b]})
            print(f"  {phase:<11} {ours:<10} {o:9.1f} ms  {b:<7} {p:9.1f} ms  ratio {o / p:5.3f}",
                  flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma list of: " + ", ".join(NETS))
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--channels-last", action="store_true", help="train nets in channels_last")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--min-ms", dest="min_ms", type=float, default=1000.0,
                    help="keep repeating (up to 200 runs) until each case has run this long in all")
    ap.add_argument("--compile", action="store_true", help="torch.compile ours and plain (train)")
    ap.add_argument("--no-mem", dest="mem", action="store_false", help="skip peak-memory subprocesses")
    ap.add_argument("--mem-only", action="store_true", help="only the peak-memory subprocesses")
    ap.add_argument("--no-opencv", dest="opencv", action="store_false", help="skip OpenCV dnn")
    ap.add_argument("--no-infer", dest="infer", action="store_false", help="skip inference rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--_mem", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    if args._mem:
        key, impl, mode, weights = args._mem.split(":", 3)
        print(mem_child(key, impl, mode, weights, device, args))
        return 0
    keys = [k.strip() for k in args.nets.split(",") if k.strip()]
    for k in keys:
        if k not in NETS:
            ap.error(f"unknown net {k!r} (known: {', '.join(NETS)})")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, repeats "
          f"{args.repeats} (or {args.min_ms:.0f} ms), warmup {args.warmup}, precision {args.precision}, channels_last "
          f"{args.channels_last}, compile {args.compile}", flush=True)

    rows, checks, mem = [], {}, []
    ok = True
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            gen = torch.Generator().manual_seed(args.seed)
            weights = make_weights(key, Path(tmp), args.seed)
            print(f"{key}: train batch {NETS[key][3]}, inference batch {NETS[key][4]}", flush=True)
            if not args.mem_only:
                tc = TrainCases(key, weights, device, args, gen)
                for phase, cases in tc.phases().items():
                    summarize(key, phase, NETS[key][3], time_pair(cases, args.warmup, args.repeats, sync, args.min_ms),
                              rows)
                del tc
            if args.infer and not args.mem_only:
                ic = InferCases(key, weights, device, args, gen)
                checks[key] = ic.check()
                ok &= checks[key]["ok"]
                summarize(key, "infer", NETS[key][4],
                          time_pair(ic.cases(), args.warmup, args.repeats, sync, args.min_ms), rows)
                del ic
            if args.mem or args.mem_only:
                impls = [("ours", "train"), ("plain", "train")]
                if args.infer:
                    impls += [("ours", "infer"), ("ours fused", "infer"), ("plain", "infer")]
                    if key in OPENCV and args.opencv and device.type == "cpu":
                        impls.append(("opencv", "infer"))
                got = {(i, m): measure_memory(key, i, m, weights, args) for i, m in impls}
                for (i, m), v in got.items():
                    base = got.get(("plain", m))
                    mem.append({"net": key, "mode": m, "impl": i, "peak_mib": v,
                                "ratio_vs_plain": (v / base) if v and base else None})
                print("  peak MiB: " + ", ".join(f"{m} {i} {v:.0f}" for (i, m), v in got.items()
                                                  if v is not None), flush=True)
    total = time.perf_counter() - t0
    print_table(rows, mem, total)
    if args.json:
        meta = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                "repeats": args.repeats, "min_ms": args.min_ms, "warmup": args.warmup, "precision": args.precision,
                "channels_last": args.channels_last, "compile": args.compile,
                "machine": platform.platform(), "total_s": total}
        if device.type == "cuda":
            meta["gpu"] = torch.cuda.get_device_name(device)
        with contextlib.suppress(ImportError):
            import cv2
            meta["opencv"] = cv2.__version__
        from pipeline.formats.atomic import atomic_write_bytes
        atomic_write_bytes(args.json, (json.dumps({"meta": meta, "checks": checks, "rows": rows,
                                                   "memory": mem}, indent=1) + "\n").encode())
    return 0 if ok else 1


def print_table(rows, mem, total) -> None:
    print(f"\n{'net':<10} {'phase':<11} {'batch':>5} {'ours':<10} {'ms':>9} {'baseline':<8} {'ms':>9}"
          f" {'ratio':>6} {'min':>6}")
    for r in rows:
        flag = "  noisy" if max(r["ours_runs_ms"]) > 1.5 * min(r["ours_runs_ms"]) or \
            max(r["baseline_runs_ms"]) > 1.5 * min(r["baseline_runs_ms"]) else ""
        print(f"{r['net']:<10} {r['phase']:<11} {r['batch']:>5} {r['ours']:<10} {r['ours_ms']:9.1f} "
              f"{r['baseline']:<8} {r['baseline_ms']:9.1f} {r['ratio']:6.3f} {r['min_ratio']:6.3f}{flag}")
    if mem:
        print(f"\n{'net':<10} {'mode':<6} {'impl':<11} {'peak MiB':>9} {'vs plain':>9}")
        for m in mem:
            pk = "failed" if m["peak_mib"] is None else f"{m['peak_mib']:9.1f}"
            rt = "" if m["ratio_vs_plain"] is None else f"{m['ratio_vs_plain']:9.3f}"
            print(f"{m['net']:<10} {m['mode']:<6} {m['impl']:<11} {pk:>9} {rt:>9}")
    print(f"(total {total:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
