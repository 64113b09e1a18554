"""A NaN or infinite loss stops training, naming the iteration and the first bad layer,
and the newest snapshot on disk stays a good one (``solvers/numeric.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

import pipeline as caffe
from pipeline.commands import cli
from pipeline.errors import NumericError
from pipeline.proto import caffe_pb2
from pipeline.solvers import snapshot as snap

NET = """name: "blowup"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def solver_file(tmp_path, base_lr=1e30, max_iter=4):
    (tmp_path / "net.prototxt").write_text(NET)
    p = caffe_pb2.SolverParameter(net=str(tmp_path / "net.prototxt"), base_lr=base_lr, lr_policy="fixed",
                                  max_iter=max_iter, snapshot=1, snapshot_prefix=str(tmp_path / "b"),
                                  random_seed=5, display=0, solver_mode=caffe_pb2.SolverParameter.CPU)
    path = tmp_path / "solver.prototxt"
    path.write_text(text_format.MessageToString(p))
    return path


def _first_nonfinite_reference(data, params):
    """float32 numpy forward of ip1 -> ip2: the first layer whose output is not finite."""
    x = data.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for name in ("ip1", "ip2"):
            w, b = params[name]
            x = (x @ w.T + b).astype(np.float32)
            if not np.isfinite(x).all():
                return name
    return None


def test_nan_loss_stops_with_iteration_layer_and_last_good_snapshot(tmp_path):
    solver = caffe.get_solver(str(solver_file(tmp_path)))
    with pytest.raises(NumericError) as e:
        solver.solve()
    err = e.value
    # an lr of 1e30 takes the weights to ~1e29 after the first update: finite, so a
    # snapshot at iteration 1 is written; the forward at iteration 1 overflows.
    assert err.iteration == 1
    good = str(tmp_path / "b_iter_1.solverstate")
    assert err.snapshot == good
    params = {n: [p.data.copy() for p in ps] for n, ps in solver.net.params.items()}
    expected = _first_nonfinite_reference(solver.net.blobs["data"].data, params)
    assert expected is not None and err.layer == expected and err.top == expected
    msg = str(err)
    assert "iteration 1" in msg and f"'{expected}' (type InnerProduct" in msg and f"--snapshot {good}" in msg
    assert "--allow_nonfinite" in msg
    # nothing was written after the failure, and the good snapshot resumes
    assert [it for it, _ in snap.snapshot_iters(str(tmp_path / "b"))] == [1]
    again = caffe.get_solver(str(solver_file(tmp_path)))
    again.restore(good)
    assert again.iter == 1
    assert all(np.isfinite(p.data).all() for ps in again.net.params.values() for p in ps)


def test_nonfinite_parameters_are_never_snapshotted(tmp_path):
    solver = caffe.get_solver(str(solver_file(tmp_path, base_lr=0.01)))
    solver.step(1)  # writes b_iter_1
    solver.net.params["ip2"][1].data[2] = np.inf  # as a bad update would leave it
    with pytest.raises(NumericError, match=r"iteration 1: parameter ip2\[1\] is non-finite after the update, "
                                           r"so no snapshot was written; the last good snapshot is .*b_iter_1"):
        solver.snapshot()
    assert [it for it, _ in snap.snapshot_iters(str(tmp_path / "b"))] == [1]


def test_allow_nonfinite_carries_on_as_caffe(tmp_path):
    solver = caffe.get_solver(str(solver_file(tmp_path)), allow_nonfinite=True)
    solver.solve()
    assert solver.iter == 4
    assert not np.isfinite(solver.net.blobs["loss"].data).all()


def test_train_command_one_line_message_and_flag(tmp_path, capsys):
    path = solver_file(tmp_path)
    assert cli.main(["train", "--solver", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pipeline train: error: blowup: iteration 1: the loss is nan (NaN)")
    assert "b_iter_1.solverstate" in err
    assert cli.main(["train", "-solver", str(path), "-allow_nonfinite"]) == 0
