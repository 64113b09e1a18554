"""The Solver: nets from the solver file, the Step loop, testing, signals, pycaffe's API."""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import pytest
import torch
from solver_files import TINY, files_fixture  # noqa: F401  (provides the `files` fixture)

import pipeline as caffe
from pipeline.errors import ConfigError
from pipeline.proto import caffe_pb2
from pipeline.solvers import glog

CONSTANT = TINY.replace('data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 }',
                        'data_filler { type: "constant" value: 0.7 } data_filler { type: "constant" value: 2 }')
CONSTANT = CONSTANT.replace("dropout_ratio: 0.3", "dropout_ratio: 0.0")


@pytest.fixture
def logs():
    """The package's log lines (glog format) while a test runs."""
    stream = io.StringIO()
    handler = glog.install(stream=stream)
    yield stream
    glog.remove(handler)


def lines(stream) -> list[str]:
    return [ln.split("] ", 1)[1] for ln in stream.getvalue().splitlines() if "] " in ln]


# ------------------------------------------------------------ pycaffe API
@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_get_solver_picks_the_class_named_by_type(files, kind):
    extra = {"momentum": 0.0} if kind in ("AdaGrad", "RMSProp") else {}
    solver = caffe.get_solver(str(files.solver(type=kind, **extra)))
    assert type(solver) is getattr(caffe, f"{kind}Solver") and solver.rule.type == kind
    assert solver.iter == 0 and len(solver.test_nets) == 1 and solver.net.phase == caffe.TRAIN


def test_a_solver_class_uses_its_own_rule_whatever_the_file_says(files):
    solver = caffe.AdamSolver(str(files.solver()))  # the file says SGD (the default)
    assert solver.rule.type == "Adam" and len(solver.history) == 8


def test_solve_runs_to_max_iter_tests_and_snapshots(files, logs):
    solver = caffe.get_solver(str(files.solver()))
    solver.solve()
    assert solver.iter == 10
    prefix = files.root / "snap" / "tiny"
    assert os.path.exists(f"{prefix}_iter_10.caffemodel") and os.path.exists(f"{prefix}_iter_10.solverstate")
    text = lines(logs)
    tests = [ln for ln in text if "Testing net" in ln]
    assert tests == [f"Iteration {i}, Testing net (#0)" for i in (0, 4, 8)]  # 10 % 4 != 0: no final test
    assert text[-1] == "Optimization Done."
    assert "Solving tiny" in text and "Learning Rate Policy: multistep" in text
    assert "MultiStep Status: Iteration 3, step = 1" in text and "MultiStep Status: Iteration 7, step = 2" in text


def test_solve_resume_file_and_snapshot_after_train_false(files):
    path = files.solver(snapshot=4, snapshot_after_train=False)
    caffe.get_solver(str(path)).solve()
    names = sorted(os.listdir(files.root / "snap"))
    assert [n for n in names if n.endswith(".solverstate")] == ["tiny_iter_4.solverstate", "tiny_iter_8.solverstate"]
    again = caffe.get_solver(str(path))
    again.solve(str(files.root / "snap" / "tiny_iter_8.solverstate"))
    assert again.iter == 10


def test_random_seed_makes_a_run_repeatable(files):
    a = caffe.get_solver(str(files.solver()))
    first = a.net.learnable_params[0].detach().clone()
    a.step(3)  # seeding is global (as Caffe's): run one solver after the other
    b = caffe.get_solver(str(files.solver()))
    assert torch.equal(first, b.net.learnable_params[0])
    b.step(3)
    assert torch.equal(a.net.learnable_params[2], b.net.learnable_params[2])
    c = caffe.get_solver(str(files.solver(random_seed=8, name="other.prototxt")))
    assert not torch.equal(first, c.net.learnable_params[0])


def test_iter_size_accumulates_then_divides(files):
    net = files.net(CONSTANT, "constant.prototxt")
    one = caffe.get_solver(str(files.solver(net_path=net, name="one.prototxt")))
    two = caffe.get_solver(str(files.solver(net_path=net, name="two.prototxt", iter_size=2)))
    one.step(3)
    two.step(3)
    for a, b in zip(one.net.learnable_params, two.net.learnable_params):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)
    three = caffe.get_solver(str(files.solver(net_path=net, name="three.prototxt", iter_size=2, base_lr=0.05)))
    three.step(1)
    assert not np.allclose(three.net.learnable_params[0].detach().numpy(),
                           one.net.learnable_params[0].detach().numpy())


def test_average_loss_is_the_mean_of_the_last_losses(files):
    single = caffe.get_solver(str(files.solver(average_loss=1)))
    losses = []
    for _ in range(6):
        single.step(1)
        losses.append(float(single.smoothed_loss))
    smooth = caffe.get_solver(str(files.solver(average_loss=4, name="smooth.prototxt")))
    smooth.step(6)
    assert float(smooth.smoothed_loss) == pytest.approx(np.mean(losses[-4:]), rel=1e-5)
    assert float(smooth.smoothed_loss) != pytest.approx(np.mean(losses), rel=1e-3)


def test_test_nets_share_the_weights_and_average_the_outputs(files):
    solver = caffe.get_solver(str(files.solver(test_compute_loss=True)))
    solver.step(2)
    test_net = solver.test_nets[0]
    assert test_net.layer_dict["ip1"].module.blobs[0] is solver.net.learnable_params[0]
    state = torch.get_rng_state()
    manual = [dict((k, float(np.ravel(v)[0])) for k, v in test_net.forward().items()) for _ in range(2)]
    torch.set_rng_state(state)
    scores = solver.test(0)
    assert sorted(scores) == ["acc", "loss"]
    for name in scores:
        assert scores[name] == pytest.approx(np.mean([m[name] for m in manual]), rel=1e-6)


def test_display_lines_are_caffes(files, logs):
    solver = caffe.get_solver(str(files.solver(display=2, test_interval=100, test_initialization=False)))
    solver.step(3)
    text = lines(logs)
    assert any(ln.startswith("Iteration 0 (") and " iter/s, " in ln and "s/2 iters), loss = " in ln for ln in text)
    out = [ln for ln in text if "Train net output" in ln]
    assert len(out) == 2 and out[0].startswith("    Train net output #0: loss = ") and out[0].endswith(" loss)")
    assert "Iteration 2, lr = 0.1" in text and "Iteration 0, lr = 0.1" in text


def test_metrics_file_records_display_and_test_values(files):
    solver = caffe.get_solver(str(files.solver(display=5)))
    solver.metrics_path = str(files.root / "metrics.jsonl")
    solver.step(6)
    records = [json.loads(ln) for ln in open(solver.metrics_path)]
    train = [r for r in records if r["phase"] == "train"]
    test = [r for r in records if r["phase"] == "test"]
    assert [r["iteration"] for r in train] == [0, 5] and [r["iteration"] for r in test] == [0, 4]
    assert train[1]["lr"] == pytest.approx(0.05) and set(train[0]["outputs"]) == {"loss"}
    assert set(test[0]["outputs"]) == {"acc", "loss"} and all(r["time"] >= 0 for r in records)


def test_action_function_snapshots_and_stops_between_iterations(files):
    solver = caffe.get_solver(str(files.solver(test_initialization=False)))
    actions = iter(["none", "snapshot", "none", "stop"])
    solver.set_action_function(lambda: next(actions, "none"))
    solver.solve()
    assert solver.iter == 4 and solver.requested_early_exit
    names = sorted(n for n in os.listdir(files.root / "snap") if n.endswith(".solverstate"))
    assert names == ["tiny_iter_2.solverstate", "tiny_iter_4.solverstate"]  # requested, then the final one


def test_gradient_clipping_is_logged(files, logs):
    solver = caffe.get_solver(str(files.solver(clip_gradients=1e-4)))
    solver.step(1)
    assert any(ln.startswith("Gradient clipping: scaling down gradients (L2 norm ") for ln in lines(logs))


# ----------------------------------------------------------- nets in a solver
SPLIT = TINY.replace('layer { name: "acc"', 'layer { name: "acc2" type: "Accuracy" bottom: "ip2" bottom: "label" '
                     'top: "acc2" include { phase: TEST stage: "extra" } }\nlayer { name: "acc"')


def test_train_net_and_test_net_files_and_inline_params(files):
    net = files.net(SPLIT, "split.prototxt")
    path = files.solver(name="files.prototxt", net=None, train_net=str(net), test_net=[str(net)])
    text = path.read_text()
    solver = caffe.get_solver(str(path))
    assert "acc" in solver.test_nets[0].outputs and "acc" not in solver.net.outputs
    from google.protobuf import text_format

    p = text_format.Parse(text, caffe_pb2.SolverParameter())
    inline = caffe_pb2.SolverParameter()
    inline.CopyFrom(p)
    inline.ClearField("train_net")
    inline.ClearField("test_net")
    text_format.Parse(SPLIT, inline.train_net_param)
    text_format.Parse(SPLIT, inline.test_net_param.add())
    solver = caffe.SGDSolver(inline)
    assert solver.net.name == "tiny" and len(solver.test_nets) == 1


def test_generic_net_gives_one_test_net_per_test_iter_with_test_states(files):
    net = files.net(SPLIT, "split.prototxt")
    path = files.solver(net_path=net, test_iter=[2, 3], extra='test_state { stage: "extra" } test_state { }')
    solver = caffe.get_solver(str(path))
    assert len(solver.test_nets) == 2
    assert "acc2" in solver.test_nets[0].outputs and "acc2" not in solver.test_nets[1].outputs


@pytest.mark.parametrize(
    "fields, extra, needle",
    [
        ({"net": None}, "", "must specify a train net using one of these fields: net, net_param"),
        ({}, 'train_net: "x.prototxt"', "must not contain more than one of these fields"),
        ({"test_iter": [1, 2]}, 'test_state { }', "test_state must be unspecified or specified once per test net"),
        ({"test_interval": 0}, "", "test_interval must be > 0"),
        ({"average_loss": 0}, "", "average_loss"),
        ({"type": "AdaGrad"}, "", "Momentum cannot be used with AdaGrad"),
        ({"type": "Adamm"}, "", "did you mean 'Adam'"),
        ({"lr_policy": "step"}, "", "stepsize > 0"),
        ({"snapshot": 10, "snapshot_prefix": "/nonexistent/dir/x"}, "", "Cannot write to snapshot prefix"),
    ],
)
def test_bad_solvers_fail_before_training_with_clear_errors(files, fields, extra, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        caffe.get_solver(str(files.solver(extra=extra, **fields)))


def test_relative_paths_resolve_from_the_current_directory(files, monkeypatch):
    files.net()
    path = files.solver(net_path="net.prototxt", snapshot_prefix=None)
    monkeypatch.chdir(files.root / "snap")
    with pytest.raises(ConfigError) as e:
        caffe.get_solver(str(path))
    assert "'net.prototxt' not found" in str(e.value) and "exists relative to the solver file" in str(e.value)
    monkeypatch.chdir(files.root)
    solver = caffe.get_solver("solver.prototxt")
    assert solver.param.snapshot_prefix == "solver"  # Caffe: the solver file's path without its extension


def test_a_directory_snapshot_prefix_gets_the_solver_stem(files, monkeypatch):
    monkeypatch.chdir(files.root)
    solver = caffe.get_solver(str(files.solver(snapshot_prefix="snap", name="lenet_solver.prototxt")))
    assert solver.param.snapshot_prefix == os.path.join("snap", "lenet_solver")


def test_solver_logs_go_nowhere_without_a_handler(files, capsys):
    logging.getLogger("pipeline").handlers.clear()
    caffe.get_solver(str(files.solver())).step(1)
    assert capsys.readouterr().err == ""


@pytest.mark.gpu
def test_gpu_training_matches_the_cpu_and_resumes_exactly(files):
    net = files.net(CONSTANT, "constant.prototxt")
    path = files.solver(net_path=net, name="gpu.prototxt", type="Adam", base_lr=0.01)
    cpu = caffe.get_solver(str(path), device="cpu")
    cpu.step(6)
    gpu = caffe.get_solver(str(path), device="cuda:0")
    gpu.step(6)
    for a, b in zip(cpu.net.learnable_params, gpu.net.learnable_params):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().cpu().numpy(), rtol=1e-4, atol=1e-5)
    first = caffe.get_solver(str(path), device="cuda:0")
    first.step(3)
    _, state = first.snapshot()
    resumed = caffe.get_solver(str(path), device="cuda:0")
    resumed.restore(state)
    resumed.step(3)
    for a, b in zip(resumed.history, gpu.history):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a, b, rtol=0, atol=0)
