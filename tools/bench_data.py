#!/usr/bin/env python3
"""Benchmark the Data layer against a minimal hand-written LMDB loop, side by side.

In a temporary directory this builds two LMDBs of ``--n`` (512) records of
``--size``×``--size`` (256×256) colour images — raw uint8 Datums and JPEG-encoded
Datums (quality 95, what ``convert_imageset --encoded`` stores) — and their mean
``.binaryproto``, with ``pipeline.data`` (``db.open_writer``, ``datum``,
``image.encode_image``). The images are smooth random fields with fine noise,
so the JPEGs have a photo's size (about 30 KB) and decode like photos. Then, for
each format, it measures images/s of:

    Data layer    ``pipeline.layers.data_sources.Data`` in TRAIN with crop_size
                  227, mirror and mean_file, batch_size 64, driven through
                  ``forward()`` as the net drives it (tops come back as torch
                  tensors), with 1 worker and with each of ``--workers``;
    minimal loop  a plain ``lmdb`` cursor, ``caffe_pb2.Datum.ParseFromString``,
                  decode (``np.frombuffer`` for raw records; Pillow for JPEG, RGB
                  -> BGR channel-first) and a numpy random crop, mirror and mean
                  subtraction into a new float32 batch, on the calling thread.

Timing: each figure is one run of ``--batches`` (16) batches after warm-up
batches (1 for the loop; for the layer enough to fill its prefetch queue, its
workers and its recycled batch arrays, so the steady state is timed). The runs
of all configurations are interleaved (ABC, CBA, ...) ``--repeats`` (5) times so
that background load hits all alike; the table gives the median, min and max
images/s, the ratio of medians to the minimal loop, CPU milliseconds per image
(all threads; steadier than images/s on a busy machine) and the cores used
(images/s × CPU s per image). "two GIL-free threads get N cores" measures, before
and after, how many cores the machine actually lends this process: on a busy
machine more workers cannot go faster than that.

Checks (exit status 1 on a mismatch): the layer's first batch equals the plain
numpy computation from the records with Caffe's draws for its seed (mirror,
h_off, w_off = mt19937 words % 2, % (H-226), % (W-226)), and the batches with
more workers equal the 1-worker batches bit for bit.

On a shared machine ``--wait-idle S`` waits (up to S seconds) before each repeat
until two GIL-free threads get 1.8 cores, so that the scaling with workers can be
seen at all; the probe of each repeat goes into the JSON.

Usage:
    .venv/bin/python tools/bench_data.py [--n 512] [--batches 16] [--repeats 5]
        [--workers 2[,4...]] [--formats raw,jpeg] [--json out.json] [--keep DIR]
        [--verbose] [--wait-idle S]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.data.datum import array_to_datum
from pipeline.data.db import open_writer
from pipeline.data.image import encode_image, resize_bilinear
from pipeline.formats.binary import write_binary
from pipeline.formats.blob import array_to_blobproto
from pipeline.proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN


# ------------------------------------------------------------------ databases
def synthetic_images(n: int, size: int, seed: int = 0):
    """``n`` (size, size, 3) uint8 BGR images: smooth random fields plus fine noise (photo-like JPEGs)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        coarse = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
        img = resize_bilinear(coarse, size, size).astype(np.int16)
        img += rng.integers(-12, 13, img.shape, dtype=np.int16)
        yield np.clip(img, 0, 255).astype(np.uint8)


def build_databases(root: Path, n: int, size: int) -> dict:
    """Write ``raw_lmdb``, ``jpeg_lmdb`` and ``mean.binaryproto`` under ``root``; return their paths."""
    raw, jpeg = root / "raw_lmdb", root / "jpeg_lmdb"
    total = np.zeros((3, size, size), np.float64)
    jpeg_bytes = 0
    with open_writer(raw) as wr, open_writer(jpeg) as wj:
        for i, img in enumerate(synthetic_images(n, size)):
            chw = np.ascontiguousarray(img.transpose(2, 0, 1))
            key = f"{i:08d}_img{i}.jpg"
            wr.put(key, array_to_datum(chw, label=i % 1000).SerializeToString())
            d = caffe_pb2.Datum(channels=3, height=size, width=size, label=i % 1000, encoded=True)
            d.data = encode_image(img, "jpg")
            jpeg_bytes += len(d.data)
            wj.put(key, d.SerializeToString())
            total += chw
    mean = (total / n).astype(np.float32)[None]
    write_binary(array_to_blobproto(mean), root / "mean.binaryproto")
    return {
        "raw": str(raw),
        "jpeg": str(jpeg),
        "mean_file": str(root / "mean.binaryproto"),
        "jpeg_kb_per_image": jpeg_bytes / n / 1024,
    }


# --------------------------------------------------------------- minimal loop
class MinimalLoop:
    """The hand-written reference: lmdb cursor + Datum parse + decode + numpy crop/mirror/mean.

    ``next()`` returns (data (N, 3, crop, crop) float32, label (N,) float32) as torch
    tensors, like the layer's tops. Offsets come from ``numpy.random.default_rng``.
    """

    def __init__(self, path: str, mean: np.ndarray, batch: int, crop: int, seed: int = 0):
        import lmdb
        import torch

        self.torch = torch
        self.env = lmdb.open(path, readonly=True, lock=False, readahead=False)
        self.txn = self.env.begin()
        self.cur = self.txn.cursor()
        self.cur.first()
        self.mean, self.batch, self.crop = mean, batch, crop
        self.rng = np.random.default_rng(seed)

    def decode(self, value: bytes) -> np.ndarray:
        from PIL import Image

        d = caffe_pb2.Datum()
        d.ParseFromString(value)
        if d.encoded:
            rgb = np.asarray(Image.open(io.BytesIO(d.data)).convert("RGB"))
            return rgb[:, :, ::-1].transpose(2, 0, 1), d.label  # BGR, channel-first (a view)
        return np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width), d.label

    def next(self):
        cs, n = self.crop, self.batch
        out = np.empty((n, 3, cs, cs), np.float32)
        labels = np.empty(n, np.float32)
        for i in range(n):
            img, labels[i] = self.decode(self.cur.value())
            if not self.cur.next():
                self.cur.first()
            _, h, w = img.shape
            mirror = self.rng.integers(2)
            ho, wo = self.rng.integers(h - cs + 1), self.rng.integers(w - cs + 1)
            src = img[:, ho : ho + cs, wo : wo + cs]
            m = self.mean[:, ho : ho + cs, wo : wo + cs]
            if mirror:
                src, m = src[:, :, ::-1], m[:, :, ::-1]
            np.subtract(src, m, out=out[i])
        return self.torch.from_numpy(out), self.torch.from_numpy(labels)

    def close(self):
        self.cur = None
        self.txn.abort()
        self.env.close()


# ------------------------------------------------------------------ the layer
def make_layer(path: str, mean_file: str, batch: int, crop: int, workers: int, seed: int = 1234):
    from pipeline.layers.data_sources import Data

    layer = Data(
        path,
        batch,
        "lmdb",
        transform={"crop_size": crop, "mirror": True, "mean_file": mean_file},
        seed=seed,
        workers=workers,
        name="data",
        phase=TRAIN,
    )
    layer.num_tops = 2
    layer.setup([])
    return layer


class LayerRun:
    def __init__(self, layer):
        self.layer = layer

    def next(self):
        return self.layer.forward()

    def close(self):
        self.layer.close()


# ------------------------------------------------------------------- timing
def time_run(runner, batches: int, warmup: int, batch: int) -> dict:
    """images/s (wall clock) and CPU ms per image (all threads) over ``batches`` batches after ``warmup``."""
    for _ in range(warmup):
        runner.next()
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        runner.next()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    n = batches * batch
    return {
        "images_per_s": n / wall,
        "cpu_ms_per_image": 1e3 * cpu / n,
        "sys_ms_per_image": 1e3 * (u1.ru_stime - u0.ru_stime) / n,
        "page_faults_per_image": (u1.ru_minflt - u0.ru_minflt) / n,
    }


def cores_available(seconds: float = 0.4) -> float:
    """How many cores two GIL-free threads get right now (2.0 on an idle 2-core machine).

    The threads hash 1 MB blocks (``hashlib`` releases the GIL; compute-bound, so
    memory bandwidth does not enter), and the figure is their rate over one thread's.
    """
    import hashlib
    import threading

    block = bytes(range(256)) * 4096

    def spin(counts, i, until):
        while time.perf_counter() < until:
            hashlib.sha256(block).digest()
            counts[i] += 1

    rates = []
    for k in (1, 2):
        counts = [0] * k
        until = time.perf_counter() + seconds
        threads = [threading.Thread(target=spin, args=(counts, i, until)) for i in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(counts))
    return rates[1] / max(rates[0], 1)


def wait_for_cores(wanted: float, timeout: float) -> float:
    """Poll ``cores_available`` until it reaches ``wanted`` or ``timeout`` seconds pass; the last figure."""
    until = time.perf_counter() + timeout
    while True:
        cores = cores_available(0.3)
        if cores >= wanted or time.perf_counter() >= until:
            return cores
        time.sleep(1.0)


# ------------------------------------------------------------------- checks
def check_layer(paths: dict, fmt: str, args, workers_list, mean: np.ndarray) -> list[str]:
    """The layer's first batches against plain arithmetic, and k-worker batches against 1-worker ones.

    Expected values: each record decoded as the minimal loop decodes it, cropped and
    mirrored with Caffe's draws (``Rand(n) = mt19937() % n``: mirror, h_off, w_off per
    item, from the layer's seed) and the mean subtracted in float32.
    """
    from pipeline.data.rng import CaffeRNG

    problems = []
    seed, cs = 1234, args.crop
    layer = make_layer(paths[fmt], paths["mean_file"], args.batch, cs, 1, seed=seed)
    ref = [tuple(t.numpy().copy() for t in layer.forward()) for _ in range(2)]
    layer.close()
    loop = MinimalLoop(paths[fmt], mean, args.batch, cs)
    rng = CaffeRNG(seed)
    for i in range(args.batch):
        img, label = loop.decode(loop.cur.value())
        loop.cur.next()
        mirror, hw, ww = (int(w) for w in rng.words(3))
        _, h, w = img.shape
        ho, wo = hw % (h - cs + 1), ww % (w - cs + 1)
        want = img[:, ho : ho + cs, wo : wo + cs].astype(np.float32) - mean[:, ho : ho + cs, wo : wo + cs]
        if mirror % 2:
            want = want[:, :, ::-1]
        if ref[0][1][i] != label or not np.array_equal(ref[0][0][i], want):
            problems.append(f"{fmt}: item {i} of the layer's first batch differs from the plain computation")
            break
    loop.close()
    for k in workers_list:
        layer = make_layer(paths[fmt], paths["mean_file"], args.batch, cs, k, seed=seed)
        for b in range(2):
            got = tuple(t.numpy() for t in layer.forward())
            if not all(np.array_equal(g, w) for g, w in zip(got, ref[b])):
                problems.append(f"{fmt}: batch {b} with {k} workers differs from the 1-worker batch")
        layer.close()
    return problems


# --------------------------------------------------------------------- main
def _label(kind: str) -> str:
    if kind == "minimal":
        return "minimal loop"
    k = int(kind[5:])
    return f"Data, {k} worker" + ("s" if k > 1 else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=512, help="records per database (default 512)")
    ap.add_argument("--size", type=int, default=256, help="image side (default 256)")
    ap.add_argument("--crop", type=int, default=227, help="crop_size (default 227)")
    ap.add_argument("--batch", type=int, default=64, help="batch_size (default 64)")
    ap.add_argument("--batches", type=int, default=16, help="timed batches per run (default 16)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (default 5)")
    ap.add_argument("--workers", default="2", help="comma-separated worker counts besides 1 (default 2)")
    ap.add_argument("--formats", default="raw,jpeg", help="raw, jpeg or both (default raw,jpeg)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--keep", help="build the databases in this directory (reused when there) instead of a temporary one"
    )
    ap.add_argument("--no-check", action="store_true", help="skip the bit-exactness checks")
    ap.add_argument("--verbose", action="store_true", help="print every timed run")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each repeat wait up to S seconds for 2 free cores (to see the workers scale on a shared machine)",
    )
    args = ap.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",") if w.strip() and int(w) > 1})
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in ("raw", "jpeg") for f in formats):
        ap.error(f"--formats takes raw and/or jpeg, got {args.formats!r}")
    from pipeline.data.transform import load_mean_file

    started = time.perf_counter()
    kinds = ["minimal"] + [f"layer{k}" for k in [1] + workers]
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = _existing(root) if (root / "raw_lmdb").exists() else build_databases(root, args.n, args.size)
        build_s = time.perf_counter() - t0
        mean = load_mean_file(paths["mean_file"])
        cores_before = cores_available()
        print(
            f"{args.n} records of {args.size}x{args.size}x3 (JPEG {paths['jpeg_kb_per_image']:.1f} KB each), "
            f"crop {args.crop}, mirror, mean_file, batch {args.batch}, TRAIN; databases built in {build_s:.1f} s\n"
            f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; "
            f"two GIL-free threads get {cores_before:.2f} cores",
            flush=True,
        )
        problems = []
        if not args.no_check:
            for fmt in formats:
                problems += check_layer(paths, fmt, args, workers, mean)
        configs = [(fmt, kind) for fmt in formats for kind in kinds]
        runs = {c: [] for c in configs}
        probes = []
        for rep in range(args.repeats):
            if args.wait_idle > 0:
                probes.append(wait_for_cores(min(2, os.cpu_count() or 1) * 0.9, args.wait_idle))
                if args.verbose:
                    print(f"  repeat {rep + 1}: two GIL-free threads get {probes[-1]:.2f} cores", flush=True)
            for fmt, kind in configs if rep % 2 == 0 else configs[::-1]:  # ABAB, BABA: load hits all alike
                if kind == "minimal":
                    runner, warm = MinimalLoop(paths[fmt], mean, args.batch, args.crop, seed=rep), 1
                else:
                    k = int(kind[5:])
                    layer = make_layer(paths[fmt], paths["mean_file"], args.batch, args.crop, k, seed=rep)
                    # Warm-up fills the pipeline: the prefetch queue, the batches in the workers'
                    # hands and the recycled batch arrays, whose first fill page-faults them in
                    # (2 MB zeroed pages); the timed batches then show the steady state.
                    runner, warm = LayerRun(layer), layer.prefetch + k + 4
                try:
                    runs[(fmt, kind)].append(time_run(runner, args.batches, warm, args.batch))
                finally:
                    runner.close()
                if args.verbose:
                    r = runs[(fmt, kind)][-1]
                    print(
                        f"  run {rep + 1} {fmt:4} {_label(kind):17} {r['images_per_s']:7.0f} img/s "
                        f"{r['cpu_ms_per_image']:.3f} CPU ms/img ({r['sys_ms_per_image']:.3f} system), "
                        f"{r['page_faults_per_image']:.1f} page faults/img",
                        flush=True,
                    )
        cores_after = cores_available()
        load_after = os.getloadavg()[0]
    rows = []
    print()
    print(
        f"{'records':8} {'reader':17} {'img/s median':>12} {'min':>7} {'max':>7} {'vs minimal':>10}"
        f" {'CPU ms/img':>10} {'cores':>6}"
    )
    for fmt in formats:
        base = statistics.median(r["images_per_s"] for r in runs[(fmt, "minimal")])
        for kind in kinds:
            rates = [r["images_per_s"] for r in runs[(fmt, kind)]]
            cpu = statistics.median(r["cpu_ms_per_image"] for r in runs[(fmt, kind)])
            med = statistics.median(rates)
            cores = med * cpu / 1e3
            print(
                f"{fmt:8} {_label(kind):17} {med:12.0f} {min(rates):7.0f} {max(rates):7.0f} {med / base:9.2f}x"
                f" {cpu:10.3f} {cores:6.2f}"
            )
            rows.append(
                {
                    "records": fmt,
                    "reader": "minimal_loop" if kind == "minimal" else "data_layer",
                    "workers": 1 if kind == "minimal" else int(kind[5:]),
                    "images_per_s": rates,
                    "median_images_per_s": med,
                    "ratio_to_minimal": med / base,
                    "cpu_ms_per_image": [r["cpu_ms_per_image"] for r in runs[(fmt, kind)]],
                }
            )
    if workers:
        best = {c: max(r["images_per_s"] for r in runs[c]) for c in configs}
        print(
            "best run with k workers / best run with 1 (the runs least slowed by other jobs): "
            + "; ".join(
                f"{fmt} k={k}: {best[(fmt, f'layer{k}')] / best[(fmt, 'layer1')]:.2f}x"
                for fmt in formats
                for k in workers
            )
        )
    total_s = time.perf_counter() - started
    print(
        f"\nload average at the end {load_after:.2f}; two GIL-free threads got {cores_after:.2f} cores; "
        f"{total_s:.0f} s in all"
    )
    print("checks: " + ("; ".join(problems) if problems else "skipped" if args.no_check else "batches bit-exact"))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": " ".join(["tools/bench_data.py"] + list(sys.argv[1:] if argv is None else argv)),
                    "n": args.n,
                    "size": args.size,
                    "crop": args.crop,
                    "batch": args.batch,
                    "batches": args.batches,
                    "repeats": args.repeats,
                    "jpeg_kb_per_image": paths["jpeg_kb_per_image"],
                    "cpus": os.cpu_count(),
                    "cores_available": [cores_before, cores_after],
                    "cores_before_each_repeat": probes,
                    "python": platform.python_version(),
                    "seconds": total_s,
                    "rows": rows,
                    "problems": problems,
                },
                indent=1,
            )
        )
    return 1 if problems else 0


def _existing(root: Path) -> dict:
    import lmdb

    env = lmdb.open(str(root / "jpeg_lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        sizes = [len(caffe_pb2.Datum.FromString(v).data) for _, v in txn.cursor()]
    env.close()
    return {
        "raw": str(root / "raw_lmdb"),
        "jpeg": str(root / "jpeg_lmdb"),
        "mean_file": str(root / "mean.binaryproto"),
        "jpeg_kb_per_image": sum(sizes) / len(sizes) / 1024,
    }


if __name__ == "__main__":
    sys.exit(main())
