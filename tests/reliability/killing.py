"""Kill-anywhere harness: SIGKILL ``pipeline train`` / ``convert_imageset`` and check what is left.

``kill_training`` trains a small net in a subprocess, kills it ``kills`` times
(every third kill the moment a snapshot's temporary file appears, i.e. during a
snapshot; the others at a random moment once training is under way), resumes each
time with ``--snapshot <prefix>`` (the newest complete snapshot) and finally lets it
finish. After every kill each ``*.solverstate`` under its final name must read back
whole with its ``.caffemodel``; at the end the weights must equal an uninterrupted
run's, bit for bit. ``kill_convert`` does the same for ``convert_imageset``: after a
kill the database is absent or holds every record.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from pipeline.errors import PipelineError
from pipeline.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

NET = """name: "killme"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 256 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 3.99 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 512 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.2 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


@dataclass
class KillStats:
    kills: int = 0
    kills_during_snapshot: int = 0
    resumes: int = 0
    incomplete_snapshots: list = field(default_factory=list)  # final-name files that did not read back
    final_matches: bool | None = None

    def line(self) -> str:
        return (f"train: {self.kills} SIGKILLs ({self.kills_during_snapshot} during a snapshot), "
                f"{self.resumes} resumes, {len(self.incomplete_snapshots)} incomplete snapshots, "
                f"final weights equal to an uninterrupted run: {self.final_matches}")


def write_solver(root: Path, name: str, max_iter: int, snapshot: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "net.prototxt").write_text(NET)
    p = caffe_pb2.SolverParameter(
        net=str(root / "net.prototxt"), base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="step",
        gamma=0.5, stepsize=7, display=0, max_iter=max_iter, snapshot=snapshot,
        snapshot_prefix=str(root / name), random_seed=11, solver_mode=caffe_pb2.SolverParameter.CPU,
    )
    path = root / "solver.prototxt"
    path.write_text(text_format.MessageToString(p))
    return path


def weights_of(model_path) -> dict:
    from pipeline.formats import binary
    from pipeline.formats.blob import blobproto_to_array

    net = binary.read_caffemodel(model_path)
    return {lp.name: [blobproto_to_array(b) for b in lp.blobs] for lp in net.layer if lp.blobs}


def reference_weights(root: Path, max_iter: int) -> dict:
    """An uninterrupted run, in a subprocess exactly like the killed ones."""
    solver = write_solver(root, "ref", max_iter)
    subprocess.run([sys.executable, "-m", "pipeline", "train", "--solver", str(solver)], env=ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return weights_of(root / f"ref_iter_{max_iter}.caffemodel")


def _check_snapshots(prefix: str, stats: KillStats) -> None:
    from pipeline.solvers import snapshot as snap

    for it, path in snap.snapshot_iters(prefix):
        try:
            snap.check_complete(path)
        except PipelineError as e:
            stats.incomplete_snapshots.append(f"{path}: {e}")


def _start(solver: Path, prefix: str) -> subprocess.Popen:
    from pipeline.solvers import snapshot as snap

    cmd = [sys.executable, "-m", "pipeline", "train", "--solver", str(solver)]
    if snap.snapshot_iters(prefix):
        cmd += ["--snapshot", prefix]  # the newest complete snapshot of the prefix
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_until_training(proc, root: Path, name: str, deadline: float) -> bool:
    """Poll until the process has written something of this run (a snapshot file or temporary)."""
    while time.monotonic() < deadline and proc.poll() is None:
        if any(n.startswith((f"{name}_iter_", f".{name}_iter_")) for n in os.listdir(root)):
            return True
        time.sleep(0.002)
    return False


def _wait_for_tmp(proc, root: Path, deadline: float) -> bool:
    """Poll until a snapshot's temporary file exists (a snapshot is being written)."""
    while time.monotonic() < deadline and proc.poll() is None:
        with os.scandir(root) as it:
            if any(e.name.endswith(".tmp") for e in it):
                return True
        time.sleep(0.0005)
    return False


def kill_training(root: Path, kills: int, seed: int, max_iter: int = 40, reference: dict | None = None) -> KillStats:
    rng = random.Random(seed)
    stats = KillStats()
    solver = write_solver(root, "run", max_iter)
    prefix = str(root / "run")
    for k in range(kills):
        proc = _start(solver, prefix)
        stats.resumes += "--snapshot" in proc.args
        during = k % 3 == 2
        deadline = time.monotonic() + 120
        if during:
            hit = _wait_for_tmp(proc, root, deadline)
        else:
            hit = _wait_until_training(proc, root, "run", deadline)
            time.sleep(rng.uniform(0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            stats.kills += 1
            stats.kills_during_snapshot += during and hit
        proc.wait()
        proc.stderr.close()
        _check_snapshots(prefix, stats)
        if (root / f"run_iter_{max_iter}.solverstate").exists():
            break  # it finished before we could kill it
    final = _start(solver, prefix)
    stats.resumes += "--snapshot" in final.args
    _, err = final.communicate(timeout=300)
    if final.returncode != 0:
        raise AssertionError(f"the final resumed run failed: {err.decode()[-2000:]}")
    _check_snapshots(prefix, stats)
    if reference is not None:
        got = weights_of(root / f"run_iter_{max_iter}.caffemodel")
        stats.final_matches = got.keys() == reference.keys() and all(
            len(got[n]) == len(reference[n]) and all(np.array_equal(a, b) for a, b in zip(got[n], reference[n]))
            for n in got
        )
    return stats


# ------------------------------------------------------------ convert_imageset
@dataclass
class ConvertStats:
    kills: int = 0
    whole_after_kill: int = 0  # the database existed after the kill and held every record
    absent_after_kill: int = 0
    looked_whole_but_was_not: list = field(default_factory=list)

    def line(self) -> str:
        return (f"convert_imageset: {self.kills} SIGKILLs, database absent {self.absent_after_kill}x, "
                f"whole {self.whole_after_kill}x, partial-but-present {len(self.looked_whole_but_was_not)}x")


def make_images(root: Path, n: int) -> Path:
    from PIL import Image

    rs = np.random.RandomState(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.fromarray((rs.rand(24, 24, 3) * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(f"{i}.png {i % 10}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


def _count_records(db: Path) -> int:
    import lmdb

    env = lmdb.open(str(db), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def kill_convert(root: Path, kills: int, seed: int, n_images: int = 600) -> ConvertStats:
    rng = random.Random(seed)
    stats = ConvertStats()
    listfile = make_images(root, n_images)
    for k in range(kills):
        db = root / f"db{k}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "convert_imageset", "--resize_height", "32", "--resize_width", "32",
             f"{root / 'img'}/", str(listfile), str(db)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(n.startswith(f".db{k}.") for n in os.listdir(root)):
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.1))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            stats.kills += 1
        proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # worker processes the parent forked, if any are left
        except ProcessLookupError:
            pass
        if not db.exists():
            stats.absent_after_kill += 1
        elif _count_records(db) == n_images:
            stats.whole_after_kill += 1
        else:
            stats.looked_whole_but_was_not.append(str(db))
    return stats
