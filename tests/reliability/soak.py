"""Soak harness: train a small net for many iterations with snapshots and tests, watching
the process's resident memory (``/proc/self/statm``) and open file descriptors
(``/proc/self/fd``) after a warm-up; both must stay flat."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

import pipeline as caffe
from pipeline.proto import caffe_pb2

NET = """name: "soak"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 16 dim: 32 } shape { dim: 16 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 4.99 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 64 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { phase: TEST } }
"""


@dataclass
class SoakStats:
    iterations: int
    snapshots: int
    rss_start_mb: float
    rss_end_mb: float
    fds_start: int
    fds_end: int

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb

    def line(self) -> str:
        return (f"soak: {self.iterations} iterations, {self.snapshots} snapshots, RSS {self.rss_start_mb:.1f} -> "
                f"{self.rss_end_mb:.1f} MB ({self.rss_growth_mb:+.1f} MB), open fds {self.fds_start} -> {self.fds_end}")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def soak(root: Path, iterations: int, snapshot: int = 50, test_interval: int = 25, warmup: int = 100) -> SoakStats:
    root.mkdir(parents=True, exist_ok=True)
    (root / "net.prototxt").write_text(NET)
    p = caffe_pb2.SolverParameter(
        net=str(root / "net.prototxt"), base_lr=0.01, momentum=0.9, lr_policy="fixed", display=0,
        max_iter=iterations + warmup, snapshot=snapshot, snapshot_prefix=str(root / "s"), random_seed=2,
        test_interval=test_interval, solver_mode=caffe_pb2.SolverParameter.CPU,
    )
    p.test_iter.append(3)
    (root / "solver.prototxt").write_text(text_format.MessageToString(p))
    solver = caffe.get_solver(str(root / "solver.prototxt"))
    solver.metrics_path = str(root / "metrics.jsonl")
    solver.step(warmup)
    gc.collect()
    rss0, fd0 = rss_mb(), fd_count()
    done = 0
    while done < iterations:
        n = min(snapshot * 4, iterations - done)
        solver.step(n)
        done += n
        for f in root.glob("s_iter_*"):  # keep the disk small: the newest snapshot is enough here
            if f"_iter_{solver.iter}." not in f.name:
                f.unlink()
    gc.collect()
    return SoakStats(done, (done + warmup) // snapshot, rss0, rss_mb(), fd0, fd_count())
