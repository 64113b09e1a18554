"""``pipeline time``: the layer-by-layer run gives the net's gradients; Caffe's report lines add up."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from source_nets import glog_messages

import pipeline as caffe
from pipeline.commands import cli
from pipeline.commands import time as time_cmd

# Input -> ip1 -> relu (in place) -> {ip2, ip3} -> sum -> loss (weight 2) and accuracy;
# 'data' goes to two consumers, 'ip1' to two, and the label path does not propagate down.
BRANCHY = """
name: "branchy"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 5 } } }
layer { name: "label" type: "DummyData" top: "label"
  dummy_data_param { shape { dim: 6 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip3" type: "InnerProduct" bottom: "ip1" top: "ip3"
  param { lr_mult: 0 } param { lr_mult: 0 }
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "skip" type: "InnerProduct" bottom: "data" top: "skip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip2" bottom: "ip3" bottom: "skip" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" loss_weight: 2 }
layer { name: "acc" type: "Accuracy" bottom: "sum" bottom: "label" top: "acc" }
"""


def _net(tmp_path, text=BRANCHY, phase=caffe.TRAIN):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    caffe.set_random_seed(3)
    return path, caffe.Net(str(path), phase)


def test_layerwise_backward_gives_the_nets_gradients(tmp_path):
    _, net = _net(tmp_path)
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    params = net.learnable_params
    for p in params:
        p.grad = None
    want_loss = net.forward_backward()
    want = [None if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    run = time_cmd.LayerwiseRun(net)
    loss = run.forward_all()
    run.backward_all()
    assert loss == pytest.approx(want_loss, rel=1e-6)
    for name, p, g in zip(net.learnable_names, params, want):
        if g is None:  # lr_mult 0: no gradient at all
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6, msg=name)
    assert [n for n, p in zip(net.learnable_names, params) if p.grad is None] == ["ip3[0]", "ip3[1]"]

    # force_backward: the input's gradient sums what its two consumers (ip1, skip) send back
    net.forward()
    want_input = net.backward()["data"]
    assert np.abs(want_input).sum() > 0
    np.testing.assert_allclose(run.inputs["data"].grad.numpy(), want_input, rtol=1e-5, atol=1e-6)


def test_layerwise_loss_is_log_classes_times_weight_on_zero_input(tmp_path):
    # zero data and zero biases: every logit is 0, so the loss is ln(4) per item, times weight 2
    text = BRANCHY.replace('bias_filler { type: "gaussian" std: 0.5 }', "")
    _, net = _net(tmp_path, text)
    run = time_cmd.LayerwiseRun(net)
    assert run.forward_all() == pytest.approx(2 * math.log(4), rel=1e-6)


def test_report_lines_and_figures_add_up(tmp_path, capsys):
    path, _ = _net(tmp_path)
    iterations = 3
    assert cli.main(["time", "-model", str(path), "-iterations", str(iterations)]) == 0
    msgs = glog_messages(capsys.readouterr().err)
    layers = ["data", "label", "ip1", "relu1", "ip2", "ip3", "skip", "sum", "loss", "acc"]
    start = msgs.index("*** Benchmark begins ***")
    assert msgs[:start] == [
        "Use CPU.",
        "Performing Forward",
        f"Initial loss: {msgs[2].split(': ')[1]}",
        "Performing Backward",
    ]
    assert msgs[start + 1] == f"Testing for {iterations} iterations."
    for j in range(iterations):
        assert re.fullmatch(rf"Iteration: {j + 1} forward-backward time: [0-9.e+-]+ ms\.", msgs[start + 2 + j])
    at = start + 2 + iterations
    assert msgs[at] == "Average time per layer: "
    fwd, bwd = [], []
    for i, name in enumerate(layers):
        f = re.fullmatch(r"( *)(\S+)\tforward: ([0-9.e+-]+) ms\.", msgs[at + 1 + 2 * i])
        b = re.fullmatch(r"( *)(\S+)\tbackward: ([0-9.e+-]+) ms\.", msgs[at + 2 + 2 * i])
        assert f and b and f.group(2) == b.group(2) == name
        assert len(f.group(1) + name) == max(10, len(name))  # std::setw(10), right-aligned
        fwd.append(float(f.group(3)))
        bwd.append(float(b.group(3)))
    tail = msgs[at + 1 + 2 * len(layers) :]
    keys = ["Average Forward pass", "Average Backward pass", "Average Forward-Backward", "Total Time"]
    figures = {}
    for key, line in zip(keys, tail):
        m = re.fullmatch(rf"{key}: ([0-9.e+-]+) ms\.", line)
        assert m, line
        figures[key] = float(m.group(1))
    assert tail[-1] == "*** Benchmark ends ***" and len(tail) == 5
    assert all(v >= 0 for v in fwd + bwd) and sum(fwd) > 0 and sum(bwd) > 0
    # each pass's timer spans its layers' timers; the total spans both passes and the logging
    assert sum(fwd) <= figures["Average Forward pass"] * (1 + 1e-5)
    assert sum(bwd) <= figures["Average Backward pass"] * (1 + 1e-5)
    fb = figures["Average Forward-Backward"]
    assert figures["Average Forward pass"] + figures["Average Backward pass"] <= fb * (1 + 1e-5)
    assert figures["Total Time"] == pytest.approx(iterations * fb, rel=1e-5)
    # layers that need no gradient (the constant label source) have nothing to do backward
    assert bwd[layers.index("ip2")] > bwd[layers.index("label")]


def test_benchmark_returns_the_report_and_accepts_test_phase_and_weights(tmp_path, capsys):
    path, net = _net(tmp_path)
    net.save(str(tmp_path / "w.caffemodel"))
    argv = [
        "time",
        "--model",
        str(path),
        "--weights",
        str(tmp_path / "w.caffemodel"),
        "--iterations",
        "2",
        "--phase",
        "TEST",
    ]
    assert cli.main(argv) == 0
    assert "*** Benchmark ends ***" in glog_messages(capsys.readouterr().err)
    before = [torch.full_like(p, 0.25) for p in net.learnable_params]
    for p, g in zip(net.learnable_params, before):
        p.grad = g
    report = time_cmd.benchmark(net, 2, log=lambda s: None)
    for p, g in zip(net.learnable_params, before):  # the user's gradients are left as they were
        assert p.grad is g and bool((g == 0.25).all())
    assert [name for name, *_ in report.layers][:3] == ["data", "label", "ip1"]
    assert report.total_ms == pytest.approx(2 * report.forward_backward_ms)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iterations", "2"], "Need a model definition to time"),
        (["--model", "{model}", "--phase", "train"], 'phase must be "TRAIN" or "TEST"'),
        (["--model", "{model}", "--iterations", "-1"], "need at least 1"),
        (["--model", "{model}", "--gpu", "x"], "expected device ids"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys, argv, message):
    path, _ = _net(tmp_path)
    assert cli.main(["time"] + [a.format(model=path) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline time: error:") and message in err[0], err


@pytest.mark.gpu
def test_layerwise_gradients_on_the_gpu_match_the_cpu(tmp_path, capsys):
    _, net = _net(tmp_path)
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    run = time_cmd.LayerwiseRun(net)
    run.forward_all()
    run.backward_all()
    cpu = [None if p.grad is None else p.grad.clone() for p in net.learnable_params]
    for p in net.learnable_params:
        p.grad = None
    net.to("cuda:0")
    net.blobs["data"].data[...] = x
    run = time_cmd.LayerwiseRun(net)
    run.forward_all()
    run.backward_all()
    for p, g in zip(net.learnable_params, cpu):
        if g is not None:
            torch.testing.assert_close(p.grad.cpu(), g, rtol=1e-4, atol=1e-5)
    path = tmp_path / "net.prototxt"
    assert cli.main(["time", "--model", str(path), "--iterations", "2", "--gpu", "0"]) == 0
    msgs = glog_messages(capsys.readouterr().err)
    assert msgs[0] == "Use GPU with device ID 0" and "*** Benchmark ends ***" in msgs
