"""pipeline parse_log: Caffe's tools/extra/parse_log.py tables from glog training logs."""

from __future__ import annotations

import io
import logging

import pytest

from pipeline.commands import cli
from pipeline.commands.parse_log import parse_log
from pipeline.errors import DataError

# What `caffe train --solver=examples/mnist/lenet_solver.prototxt 2>&1 | tee lenet.log` prints
# (glog lines; values shortened), with the last test round cut off after its first output.
CAFFE_LOG = """\
I0210 13:39:21.981027 25210 caffe.cpp:217] Using GPUs 0
I0210 13:39:22.101000 25210 solver.cpp:48] Initializing solver from parameters:
test_iter: 100
base_lr: 0.01
lr_policy: "inv"
I0210 13:39:22.381027 25210 solver.cpp:280] Solving LeNet
I0210 13:39:22.381040 25210 solver.cpp:281] Learning Rate Policy: inv
I0210 13:39:22.382000 25210 solver.cpp:338] Iteration 0, Testing net (#0)
I0210 13:39:23.100000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.0856
I0210 13:39:23.100010 25210 solver.cpp:406]     Test net output #1: loss = 2.35665 (* 1 = 2.35665 loss)
I0210 13:39:23.110000 25210 solver.cpp:229] Iteration 0, loss = 2.33174

I0210 13:39:23.110010 25210 solver.cpp:245]     Train net output #0: loss = 2.33174 (* 1 = 2.33174 loss)
I0210 13:39:23.110020 25210 sgd_solver.cpp:106] Iteration 0, lr = 0.01
I0210 13:39:24.500000 25210 solver.cpp:229] Iteration 100, loss = 0.226392
I0210 13:39:24.500010 25210 solver.cpp:245]     Train net output #0: loss = 0.226392 (* 1 = 0.226392 loss)
I0210 13:39:24.500020 25210 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I0210 13:39:25.900000 25210 solver.cpp:338] Iteration 200, Testing net (#0)
I0210 13:39:26.600000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.9634
I0210 13:39:26.600010 25210 solver.cpp:406]     Test net output #1: loss = 1.17e-01 (* 1 = 0.117 loss)
I0210 13:39:26.610000 25210 solver.cpp:229] Iteration 200, loss = 0.150254
I0210 13:39:26.610010 25210 solver.cpp:245]     Train net output #0: loss = 0.150254 (* 1 = 0.150254 loss)
I0210 13:39:26.610020 25210 sgd_solver.cpp:106] Iteration 200, lr = 0.00985258
I0210 13:39:28.000000 25210 solver.cpp:454] Snapshotting to binary proto file lenet_iter_300.caffemodel
I0210 13:39:28.100000 25210 solver.cpp:317] Iteration 300, Testing net (#0)
I0210 13:39:28.700000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.9701
I0210 13:39:28.800000 25210 solver.cpp:322] Optimization Done.
"""

# Worked by hand from parse_log.py's rules: Seconds are from the 'Solving' line
# (13:39:22.381027); the first row of each table takes the second row's rate; a
# row is stored once it is as wide as the first; iteration 300's half test row is dropped.
EXPECTED_TRAIN = (
    "NumIters,Seconds,LearningRate,loss\r\n"
    "0.0,0.728983,0.01,2.33174\r\n"
    "100.0,2.118983,0.01,0.226392\r\n"
    "200.0,4.228983,0.00992565,0.150254\r\n"
)
EXPECTED_TEST = (
    "NumIters,Seconds,LearningRate,accuracy,loss\r\n"
    "0.0,0.718973,0.00992565,0.0856,2.35665\r\n"
    "200.0,4.218973,0.00992565,0.9634,0.117\r\n"
)


def test_tables_match_caffes_script(tmp_path):
    log = tmp_path / "lenet.log"
    log.write_text(CAFFE_LOG)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["parse_log", str(log), str(out)]) == 0
    assert (out / "lenet.log.train").read_bytes() == EXPECTED_TRAIN.encode()
    assert (out / "lenet.log.test").read_bytes() == EXPECTED_TEST.encode()
    assert sorted(p.name for p in out.iterdir()) == ["lenet.log.test", "lenet.log.train"]


def test_rows_and_delimiter(tmp_path):
    log = tmp_path / "lenet.log"
    log.write_text(CAFFE_LOG)
    train, test = parse_log(log)
    assert [r["NumIters"] for r in train] == [0.0, 100.0, 200.0]
    assert list(test[1].items()) == [("NumIters", 200.0), ("Seconds", 4.218973), ("LearningRate", 0.00992565),
                                     ("accuracy", 0.9634), ("loss", 0.117)]
    assert cli.main(["parse_log", str(log), str(tmp_path), "--delimiter", ";"]) == 0
    assert (tmp_path / "lenet.log.train").read_text().splitlines()[1] == "0.0;0.728983;0.01;2.33174"


def test_new_year_and_glog_year_prefix(tmp_path):
    log = tmp_path / "year.log"
    log.write_text(
        "I1231 23:59:59.500000 1 solver.cpp:280] Solving net\n"
        "I1231 23:59:59.600000 1 solver.cpp:229] Iteration 0, loss = 1\n"
        "I1231 23:59:59.600001 1 solver.cpp:245]     Train net output #0: loss = 1\n"
        "I0101 00:00:00.250000 1 solver.cpp:229] Iteration 10, loss = 0.5\n"
        "I0101 00:00:00.250001 1 solver.cpp:245]     Train net output #0: loss = 0.5\n"
        "I20250101 00:00:01.500000 1 solver.cpp:229] Iteration 20, loss = 0.25\n"
        "I20250101 00:00:01.500001 1 solver.cpp:245]     Train net output #0: loss = 0.25\n"
    )
    train, test = parse_log(log)
    assert test == []
    assert [r["Seconds"] for r in train][:2] == [0.100001, 0.750001]
    # the year-prefixed line is read with its own year (2025); it is one full year and 2 s
    # after the Solving line only when the log was created in 2024, so check the time of day
    assert train[2]["Seconds"] % 86400 == pytest.approx(2.000001)
    assert cli.main(["parse_log", str(log), str(tmp_path)]) == 0
    assert not (tmp_path / "year.log.test").exists()  # an empty table is not written, as in Caffe


def test_our_glog_lines_parse(tmp_path):
    """Lines formatted by pipeline.solvers.glog (what `pipeline train` writes) give the same tables."""
    from pipeline.solvers.glog import GlogFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(GlogFormatter())
    logger = logging.getLogger("pipeline.test_parse_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("Solving LeNet")
        for it, loss, lr in ((0, 2.3, 0.01), (100, 0.5, 0.0099), (200, 0.25, 0.0098)):
            logger.info("Iteration %d, loss = %g", it, loss)
            logger.info("    Train net output #0: loss = %g (* 1 = %g loss)", loss, loss)
            logger.info("Iteration %d, lr = %g", it, lr)
    finally:
        logger.removeHandler(handler)
    log = tmp_path / "ours.log"
    log.write_text(stream.getvalue())
    train, _ = parse_log(log)
    assert [(r["NumIters"], r["loss"], r["LearningRate"]) for r in train] == [
        (0.0, 2.3, 0.01), (100.0, 0.5, 0.01), (200.0, 0.25, 0.0099)]
    assert all(0 <= r["Seconds"] < 60 for r in train)


def test_bad_input_is_one_line_error(tmp_path, capsys):
    log = tmp_path / "not_a_log.txt"
    log.write_text("hello\nIteration 1, loss = 3\n")
    with pytest.raises(DataError, match="no 'Solving' line"):
        parse_log(log)
    assert cli.main(["parse_log", str(log), str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not_a_log.txt" in err[0]
    assert cli.main(["parse_log", str(tmp_path / "missing.log"), str(tmp_path)]) == 1
    assert "no such log file" in capsys.readouterr().err
