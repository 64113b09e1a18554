"""``pipeline train``: Caffe's flags, log lines (read with parse_log's regexes), resume, finetune, signals."""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from pipeline.commands import cli
from pipeline.formats import binary
from pipeline.formats.blob import blobproto_to_array
from pipeline.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[2]

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" include { stage: "relu" } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
"""


def write_solver(root: Path, **fields) -> Path:
    (root / "net.prototxt").write_text(NET)
    p = caffe_pb2.SolverParameter(
        net=str(root / "net.prototxt"), base_lr=0.05, momentum=0.9, weight_decay=0.001, lr_policy="inv",
        gamma=0.01, power=0.75, display=2, max_iter=6, test_interval=3, snapshot=3,
        snapshot_prefix=str(root / "tiny"), random_seed=3, solver_mode=caffe_pb2.SolverParameter.CPU,
    )
    p.test_iter.append(2)
    for k, v in fields.items():
        setattr(p, k, v)
    path = root / "solver.prototxt"
    path.write_text(text_format.MessageToString(p))
    return path


def train(*args) -> int:
    return cli.main(["train", *[str(a) for a in args]])


# ------------------------------------------- Caffe's tools/extra/parse_log.py, transcribed
REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def extract_datetime_from_line(line: str, year: int) -> datetime.datetime:
    """extract_seconds.py: 'I0210 13:39:22.381027 25210 solver.cpp:204] ...'."""
    fields = line.strip().split()
    month, day = int(fields[0][1:3]), int(fields[0][3:])
    stamp = fields[1]
    pos = stamp.rfind(".")
    hour, minute, second = (int(x) for x in stamp[:pos].split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(stamp[pos + 1:]))


def parse_log(text: str):
    """parse_log.py's parse_log: (train rows, test rows)."""
    year = datetime.datetime.now().year
    lines = text.splitlines()
    start = next(extract_datetime_from_line(ln, year) for ln in lines if "Solving" in ln)
    iteration, lr = -1, float("nan")
    train, test = [], []
    rows = {"train": None, "test": None}

    def output(regex, kind, out, line, seconds):
        m = regex.search(line)
        row = rows[kind]
        if m:
            if not row or row["NumIters"] != iteration:
                if row:
                    out.append(row)
                row = OrderedDict([("NumIters", iteration), ("Seconds", seconds), ("LearningRate", lr)])
            row[m.group(2)] = float(m.group(3))
        if row and len(out) >= 1 and len(row) == len(out[0]):
            out.append(row)
            row = None
        rows[kind] = row

    for line in lines:
        m = REGEX_ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        seconds = (extract_datetime_from_line(line, year) - start).total_seconds()
        m = REGEX_LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
        output(REGEX_TRAIN_OUTPUT, "train", train, line, seconds)
        output(REGEX_TEST_OUTPUT, "test", test, line, seconds)
    for out in (train, test):
        if len(out) > 1:
            out[0]["LearningRate"] = out[1]["LearningRate"]
    return train, test


# ------------------------------------------------------------------ tests
def test_train_runs_tests_snapshots_and_logs_what_parse_log_reads(tmp_path, capsys):
    solver = write_solver(tmp_path)
    assert train("--solver", solver) == 0
    err = capsys.readouterr().err
    for n in (3, 6):
        for ext in ("caffemodel", "solverstate"):
            assert (tmp_path / f"tiny_iter_{n}.{ext}").is_file()
    glog = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")
    lines = err.splitlines()
    body = lines[next(i for i, ln in enumerate(lines) if "Solving" in ln):]
    assert all(glog.match(ln) for ln in body), [ln for ln in body if not glog.match(ln)][:3]
    for needle in ("Use CPU.", "Starting Optimization", "Solving tiny", "Learning Rate Policy: inv",
                   "Iteration 0, Testing net (#0)",
                   f"Snapshotting to binary proto file {tmp_path}/tiny_iter_3.caffemodel",
                   f"Snapshotting solver state to binary proto file {tmp_path}/tiny_iter_3.solverstate",
                   "Optimization Done."):
        assert needle in err, needle
    train_rows, test_rows = parse_log(err)
    assert [r["NumIters"] for r in train_rows] == [0, 2, 4]
    assert [r["NumIters"] for r in test_rows] == [0, 3, 6]
    lr = lambda it: 0.05 * (1 + 0.01 * it) ** -0.75  # noqa: E731
    for row in train_rows:  # parse_log pairs outputs with the last rate logged before them
        assert row["LearningRate"] == pytest.approx(lr(max(row["NumIters"] - 2, 0)), rel=1e-5)
        assert 0 < row["loss"] < 10
    for row in test_rows:
        assert set(row) == {"NumIters", "Seconds", "LearningRate", "accuracy", "loss"}
        assert 0 <= row["accuracy"] <= 1 and row["Seconds"] >= 0
    records = [json.loads(ln) for ln in open(tmp_path / "tiny_metrics.jsonl")]
    tests = [r for r in records if r["phase"] == "test"]
    assert [r["outputs"]["accuracy"] for r in tests] == pytest.approx([r["accuracy"] for r in test_rows], abs=1e-5)


def test_snapshot_resume_from_the_command_line_equals_one_run(tmp_path, capsys):
    one = tmp_path / "one"
    two = tmp_path / "two"
    one.mkdir(), two.mkdir()
    assert train("--solver", write_solver(one, snapshot=0)) == 0
    assert train("--solver", write_solver(two, max_iter=3, snapshot=0)) == 0
    capsys.readouterr()
    assert train("--solver", write_solver(two, snapshot=0), "-snapshot", two / "tiny_iter_3.solverstate") == 0
    err = capsys.readouterr().err
    assert f"Resuming from {two}/tiny_iter_3.solverstate" in err and "Restored random generator states" in err
    a = binary.read_caffemodel(one / "tiny_iter_6.caffemodel")
    b = binary.read_caffemodel(two / "tiny_iter_6.caffemodel")
    for la, lb in zip(a.layer, b.layer):
        for x, y in zip(la.blobs, lb.blobs):
            np.testing.assert_array_equal(blobproto_to_array(x), blobproto_to_array(y))
    sa = caffe_pb2.SolverState.FromString((one / "tiny_iter_6.solverstate").read_bytes())
    sb = caffe_pb2.SolverState.FromString((two / "tiny_iter_6.solverstate").read_bytes())
    assert [list(h.data) for h in sa.history] == [list(h.data) for h in sb.history]


def test_weights_finetunes_every_listed_model(tmp_path, capsys):
    assert train("--solver", write_solver(tmp_path, max_iter=3, snapshot=0, base_lr=0.0)) == 0
    model = tmp_path / "tiny_iter_3.caffemodel"
    capsys.readouterr()
    assert train("--solver", write_solver(tmp_path, max_iter=0, snapshot=0, base_lr=0.0, random_seed=99),
                 f"--weights={model},{model}") == 0
    err = capsys.readouterr().err
    assert err.count(f"Finetuning from {model}") == 4  # two models, into the train and the test net
    w0 = {lp.name: lp for lp in binary.read_caffemodel(model).layer}["ip1"].blobs[0]
    w1 = {lp.name: lp for lp in binary.read_caffemodel(tmp_path / "tiny_iter_0.caffemodel").layer}["ip1"].blobs[0]
    np.testing.assert_array_equal(blobproto_to_array(w0), blobproto_to_array(w1))


def test_snapshot_and_weights_together_is_an_error(tmp_path, capsys):
    assert train("--solver", write_solver(tmp_path), "--snapshot", "a.solverstate", "--weights", "b.caffemodel") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Give a snapshot to resume training or weights to finetune but not both" in err[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "Need a solver definition to train"),
        (["--sigint_effect", "quit"], 'Invalid signal effect "quit"'),
        (["--gpu", "0,1"], "--gpu 0,1"),
        (["--snapshot", "missing.solverstate"], "missing.solverstate: no such file"),
    ],
)
def test_bad_flags_give_one_line(tmp_path, capsys, args, needle):
    solver = [] if not args else ["--solver", write_solver(tmp_path)]
    assert train(*solver, *args) == 1
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("pipeline train")]
    assert len(err) == 1 and needle in err[0], err


def test_level_and_stage_reach_the_train_net(tmp_path, capsys):
    assert train("--solver", write_solver(tmp_path, max_iter=0, display=0), "--stage", "relu,other", "--level", 2) == 0
    err = capsys.readouterr().err
    assert 'stage: "relu"' in err and 'stage: "other"' in err and "level: 2" in err


def test_sigint_snapshots_and_exits_cleanly(tmp_path):
    solver = write_solver(tmp_path, max_iter=10**6, display=1, snapshot=0, test_interval=10**6,
                          test_initialization=False)
    exe = Path(sys.executable).parent / "pipeline"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]
    proc = subprocess.Popen(cmd + ["train", f"-solver={solver}"], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = []
    deadline = time.time() + 120
    for line in proc.stderr:
        seen.append(line)
        if "Iteration 5," in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 0, err[-2000:]
    assert "Optimization stopped early." in err
    states = sorted(tmp_path.glob("tiny_iter_*.solverstate"), key=lambda p: int(p.stem.split("_")[-1]))
    assert len(states) == 1
    state = caffe_pb2.SolverState.FromString(states[0].read_bytes())
    assert state.iter >= 5 and Path(state.learned_net).is_file()
    binary.read_caffemodel(state.learned_net)
    assert f"Snapshotting solver state to binary proto file {states[0]}" in err
