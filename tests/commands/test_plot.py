"""pipeline plot: training curves from a Caffe-format log or a metrics file, as a PNG."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image

from pipeline.commands import cli
from pipeline.commands.plot import read_curves

# Real Caffe's glog lines (`caffe train ... 2>&1 | tee lenet.log`), shortened.
CAFFE_LOG = """\
I0210 13:39:21.981027 25210 caffe.cpp:217] Using GPUs 0
I0210 13:39:22.381027 25210 solver.cpp:280] Solving LeNet
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
I0210 13:39:26.600010 25210 solver.cpp:406]     Test net output #1: loss = 0.117 (* 1 = 0.117 loss)
I0210 13:39:26.610000 25210 solver.cpp:229] Iteration 200, loss = 0.150254
I0210 13:39:26.610010 25210 solver.cpp:245]     Train net output #0: loss = 0.150254 (* 1 = 0.150254 loss)
I0210 13:39:26.610020 25210 sgd_solver.cpp:106] Iteration 200, lr = 0.00985258
I0210 13:39:28.100000 25210 solver.cpp:317] Iteration 300, Testing net (#0)
I0210 13:39:28.700000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.9701
I0210 13:39:28.700010 25210 solver.cpp:406]     Test net output #1: loss = 0.0951 (* 1 = 0.0951 loss)
I0210 13:39:28.800000 25210 solver.cpp:322] Optimization Done.
"""


def metrics_lines(run):
    """The records `pipeline train` appends for one run: (iteration, train loss, test acc, test loss)."""
    out = []
    for it, train_loss, acc, test_loss in run:
        if acc is not None:
            out.append({"phase": "test", "net": 0, "iteration": it, "loss": test_loss,
                        "outputs": {"accuracy": acc, "loss": test_loss}, "time": 0.1})
        if train_loss is not None:
            out.append({"phase": "train", "iteration": it, "loss": train_loss, "outputs": {"loss": train_loss},
                        "lr": 0.01, "time": 0.2})
    return "".join(json.dumps(r) + "\n" for r in out)


def check_png(path, size):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
        pixels = np.asarray(im.convert("L"), np.float64)
    assert path.stat().st_size > 10_000
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.005  # lines and text, not a blank canvas


def test_plot_caffe_log(tmp_path, capsys):
    log = tmp_path / "lenet.log"
    log.write_text(CAFFE_LOG)
    train, test = read_curves(log)
    assert train == {"loss": ([0.0, 100.0, 200.0], [2.33174, 0.226392, 0.150254])}
    assert test == {"accuracy": ([0.0, 200.0, 300.0], [0.0856, 0.9634, 0.9701]),
                    "loss": ([0.0, 200.0, 300.0], [2.35665, 0.117, 0.0951])}
    assert cli.main(["plot", str(log)]) == 0
    assert "wrote" in capsys.readouterr().err
    check_png(tmp_path / "lenet.png", (1200, 420))  # two panels: loss, accuracy; 100 dpi


def test_plot_metrics_file_keeps_last_run(tmp_path):
    metrics = tmp_path / "lenet_metrics.jsonl"
    first = [(0, 2.3, 0.1, 2.3), (100, 0.5, None, None), (200, 0.3, 0.9, 0.35)]
    second = [(0, 2.2, 0.12, 2.25), (50, 0.6, None, None), (100, 0.2, 0.95, 0.18)]
    metrics.write_text(metrics_lines(first) + "\n" + metrics_lines(second))
    train, test = read_curves(metrics)
    assert train == {"loss": ([0.0, 50.0, 100.0], [2.2, 0.6, 0.2])}
    assert test == {"accuracy": ([0.0, 100.0], [0.12, 0.95]), "loss": ([0.0, 100.0], [2.25, 0.18])}
    out = tmp_path / "sub" / "curves.png"
    assert cli.main(["plot", str(metrics), "--out", str(out), "--title", "LeNet"]) == 0
    check_png(out, (1200, 420))


def test_plot_losses_only_is_one_panel_and_vector_outputs(tmp_path):
    metrics = tmp_path / "m.jsonl"
    recs = [{"phase": "train", "iteration": i, "outputs": {"loss": 1.0 / (i + 1)}} for i in range(0, 50, 10)]
    recs += [{"phase": "test", "net": 1, "iteration": 40, "outputs": {"per_class": [0.5, 0.25]}}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in recs))
    _, test = read_curves(metrics)
    assert test == {"net1/per_class[0]": ([40.0], [0.5]), "net1/per_class[1]": ([40.0], [0.25])}
    recs.pop()
    metrics.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert cli.main(["plot", str(metrics), f"--out={tmp_path / 'one.png'}"]) == 0
    check_png(tmp_path / "one.png", (600, 420))


@pytest.mark.parametrize("text, message", [
    ('{"phase": "train", "iteration": 0, "outputs": {}}\nnot json\n', "m.jsonl:2: not a JSON object"),
    ('{"phase": "val", "iteration": 0}\n', "m.jsonl:1: expected a metrics record"),
    ("I0210 13:39:22.381027 1 x.cpp:1] hello\n", "no 'Solving' line"),
    ("", "the file is empty"),
])
def test_plot_bad_input_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "m.jsonl").write_text(text)
    assert cli.main(["plot", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipeline plot: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "m.png").exists()


def test_plot_missing_file_and_overwrite(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path / "nope.log")]) == 1
    assert "nope.log: no such log or metrics file" in capsys.readouterr().err
    png = tmp_path / "x.png"
    png.write_text(CAFFE_LOG)
    assert cli.main(["plot", str(png)]) == 1
    assert "would overwrite the input" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    (tmp_path / "lenet.log").write_text(CAFFE_LOG)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert cli.main(["plot", str(tmp_path / "lenet.log")]) == 1
    err = capsys.readouterr().err
    assert "matplotlib, which is not installed" in err and "pip install 'pipeline[plot]'" in err
