"""``pipeline test``: Caffe's per-batch lines, means, loss and order, against a float64 reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from source_nets import GLOG_LINE, classifier_net, glog_messages, softmax_loss_and_accuracy

from pipeline.commands import cli
from pipeline.commands import test as test_cmd

NUM = r"([-+0-9.eEinfa]+)"


def _reference(cn, iterations):
    """Per batch: (loss, accuracy, 2·logits) in float64."""
    out = []
    for k in range(iterations):
        x, y = cn.batch_items(k)
        logits = x @ cn.w.T + cn.b
        loss, acc = softmax_loss_and_accuracy(logits, y)
        out.append((loss, acc, 2 * logits))
    return out


def test_scores_every_batch_and_the_means_as_caffe_prints_them(tmp_path, capsys):
    cn = classifier_net(tmp_path, items=12, batch=4, loss_weight=0.5)
    iterations = 5  # wraps around the 3 batches of data
    rc = cli.main(["test", "--model", str(cn.model), "--weights", str(cn.weights), "--iterations", str(iterations)])
    assert rc == 0
    msgs = glog_messages(capsys.readouterr().err)
    assert msgs[0] == "Use CPU." and msgs[1] == f"Running for {iterations} iterations."
    ref = _reference(cn, iterations)

    batch_lines = [m for m in msgs if m.startswith("Batch ")]
    per_batch = 1 + 1 + 4 * cn.batch  # a_loss, scaled (batch x classes), z_acc
    assert len(batch_lines) == iterations * per_batch
    for k in range(iterations):
        lines = batch_lines[k * per_batch : (k + 1) * per_batch]
        parsed = [re.fullmatch(rf"Batch (\d+), (\S+) = {NUM}", s).groups() for s in lines]
        assert {int(i) for i, _, _ in parsed} == {k}
        # Caffe's output order is the sorted blob names, not the order the layers made them
        assert [n for _, n, _ in parsed] == ["a_loss"] + ["scaled"] * (4 * cn.batch) + ["z_acc"]
        loss, acc, scaled = ref[k]
        values = np.array([float(v) for _, _, v in parsed])
        np.testing.assert_allclose(values[0], loss, rtol=1e-5)
        np.testing.assert_allclose(values[1:-1], scaled.ravel(), rtol=1e-5, atol=1e-5)
        assert values[-1] == pytest.approx(acc, abs=1e-6)

    mean_loss = np.mean([r[0] for r in ref])
    mean_acc = np.mean([r[1] for r in ref])
    tail = msgs[-(2 + 4 * cn.batch) - 1 :]
    m = re.fullmatch(rf"Loss: {NUM}", tail[0])
    assert m and float(m.group(1)) == pytest.approx(0.5 * mean_loss, rel=1e-5)
    m = re.fullmatch(rf"a_loss = {NUM} \(\* 0\.5 = {NUM} loss\)", tail[1])
    assert m, tail[1]
    assert float(m.group(1)) == pytest.approx(mean_loss, rel=1e-5)
    assert float(m.group(2)) == pytest.approx(0.5 * mean_loss, rel=1e-5)
    scaled_means = np.mean([r[2] for r in ref], axis=0).ravel()
    for s, expect in zip(tail[2:-1], scaled_means):
        m = re.fullmatch(rf"scaled = {NUM}", s)  # no loss weight, no "(* w = ...)"
        assert m and float(m.group(1)) == pytest.approx(expect, rel=1e-4, abs=1e-5)
    m = re.fullmatch(rf"z_acc = {NUM}", tail[-1])
    assert m and float(m.group(1)) == pytest.approx(mean_acc, abs=1e-6)


def test_score_returns_the_means_in_float32_arithmetic(tmp_path):
    import pipeline as caffe

    cn = classifier_net(tmp_path, items=8, batch=4, loss_weight=1.0)
    net = caffe.Net(str(cn.model), str(cn.weights), caffe.TEST)
    lines = []
    result = test_cmd.score(net, 4, lines.append)
    ref = _reference(cn, 4)
    means = result.means()
    assert means["a_loss"] == pytest.approx(np.mean([r[0] for r in ref]), rel=1e-5)
    assert means["z_acc"] == pytest.approx(np.mean([r[1] for r in ref]), abs=1e-6)
    assert len(means["scaled"]) == 4 * cn.batch
    assert result.loss == pytest.approx(means["a_loss"], rel=1e-6)
    assert lines[-1].startswith("z_acc = ")


def test_stage_and_phase_select_the_layers(tmp_path, capsys):
    extra = (
        'layer { name: "staged" type: "Power" bottom: "ip" top: "staged" include { stage: "extra" } }\n'
        'layer { name: "trainonly" type: "Power" bottom: "ip" top: "trainonly" include { phase: TRAIN } }\n'
    )
    cn = classifier_net(tmp_path, extra=extra)
    base = ["test", "--model", str(cn.model), "--weights", str(cn.weights), "--iterations", "1"]
    assert cli.main(base) == 0
    names = {m.split(" = ")[0] for m in glog_messages(capsys.readouterr().err) if " = " in m}
    assert "staged" not in names and "trainonly" not in names
    assert cli.main(base + ["-stage", "extra", "-phase=TRAIN"]) == 0
    names = {m.split(" = ")[0] for m in glog_messages(capsys.readouterr().err) if " = " in m}
    assert {"staged", "trainonly"} <= names


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "w.caffemodel"], "Need a model definition to score"),
        (["--model", "{model}"], "Need model weights to score"),
        (["--model", "{model}", "--weights", "{weights}", "--phase", "VALIDATE"], 'phase must be "TRAIN" or "TEST"'),
        (["--model", "{model}", "--weights", "{weights}", "--iterations", "0"], "need at least 1"),
        (["--model", "{model}", "--weights", "{weights}", "--gpu", "7"], "--gpu 7"),
        (["--model", "{model}", "--weights", "{tmp}/missing.caffemodel"], "missing.caffemodel"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys, args, message):
    if "--gpu" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    cn = classifier_net(tmp_path)
    argv = [a.format(model=cn.model, weights=cn.weights, tmp=tmp_path) for a in args]
    assert cli.main(["test"] + argv) == 1
    err = [
        s for s in capsys.readouterr().err.strip().splitlines() if not GLOG_LINE.match(s)
    ]  # log lines may come first
    assert len(err) == 1 and err[0].startswith("pipeline test: error:") and message in err[0], err


@pytest.mark.gpu
def test_scores_on_the_gpu_equal_the_cpu(tmp_path, capsys):
    cn = classifier_net(tmp_path)
    base = ["test", "--model", str(cn.model), "--weights", str(cn.weights), "--iterations", "3"]
    assert cli.main(base) == 0
    cpu = [m for m in glog_messages(capsys.readouterr().err) if " = " in m or m.startswith("Loss")]
    assert cli.main(base + ["--gpu", "0"]) == 0
    msgs = glog_messages(capsys.readouterr().err)
    assert msgs[0] == "Use GPU with device ID 0" and msgs[1].startswith("GPU device name: ")
    gpu = [m for m in msgs if " = " in m or m.startswith("Loss")]
    assert len(gpu) == len(cpu)
    for a, b in zip(cpu, gpu):
        name_a, va = a.rsplit(" ", 1) if a.startswith("Loss") else a.split(" = ", 1)
        name_b, vb = b.rsplit(" ", 1) if b.startswith("Loss") else b.split(" = ", 1)
        assert name_a == name_b
        assert float(va.split()[0]) == pytest.approx(float(vb.split()[0]), rel=1e-4, abs=1e-5)
