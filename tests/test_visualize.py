"""pipeline.visualize: saliency maps against numpy's gradients of a linear net, and the pictures."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline as caffe
from pipeline import visualize
from pipeline.errors import ConfigError

NET = """
name: "linear"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 2 dim: 2 dim: 3 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""


@pytest.fixture
def linear_net(tmp_path):
    path = tmp_path / "linear.prototxt"
    path.write_text(NET)
    caffe.set_random_seed(3)
    return caffe.Net(str(path), caffe.TEST)


def test_saliency_of_scores_and_of_softmax_match_numpy(linear_net):
    net = linear_net
    W = net.params["score"][0].data.astype(np.float64)  # (4, 12)
    b = net.params["score"][1].data.astype(np.float64)
    x = np.random.default_rng(0).normal(size=(3, 2, 2, 3)).astype(np.float32)
    s = x.reshape(3, -1).astype(np.float64) @ W.T + b
    pred = s.argmax(axis=1)

    maps, preds, scores = visualize.saliency_maps(net, x, output="score")  # d s_c / dx = W_c
    assert preds.tolist() == pred.tolist() and np.allclose(scores, s, atol=1e-5)
    expected = np.abs(W[pred].reshape(3, 2, 2, 3)).max(axis=1)
    assert maps.shape == (3, 2, 3) and np.allclose(maps, expected, rtol=1e-5, atol=1e-6)

    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    maps, preds, _ = visualize.saliency_maps(net, x, output="prob")  # d p_c / dx = p_c (W_c - sum_k p_k W_k)
    grad = p[np.arange(3), pred][:, None] * (W[pred] - p @ W)
    assert preds.tolist() == pred.tolist()
    assert np.allclose(maps, np.abs(grad.reshape(3, 2, 2, 3)).max(axis=1), rtol=1e-4, atol=1e-7)


def test_saliency_needs_force_backward_and_a_known_blob(tmp_path, linear_net):
    with pytest.raises(ConfigError, match="no blob 'ip2'"):
        visualize.saliency_maps(linear_net, np.zeros((3, 2, 2, 3), np.float32), output="ip2")
    path = tmp_path / "plain.prototxt"
    path.write_text(NET.replace("force_backward: true", ""))
    with pytest.raises(ConfigError, match="force_backward: true"):
        visualize.saliency_maps(caffe.Net(str(path), caffe.TEST), np.zeros((3, 2, 2, 3), np.float32))


def test_plot_saliency_and_curves_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    rng = np.random.default_rng(1)
    png = visualize.plot_saliency(rng.integers(0, 255, (4, 28, 28)), rng.random((4, 28, 28)),
                                  ["a", "b", "c", "d"], tmp_path / "s.png", title="t")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (680, 360)
    png = visualize.plot_curves({"loss": ([0, 1, 2], [3.0, 2.0, 1.0])}, {}, tmp_path / "c.png")
    with Image.open(png) as im:
        assert im.size == (600, 420)
    with pytest.raises(ConfigError, match="nothing to plot"):
        visualize.plot_curves({}, {"acc": ([], [])}, tmp_path / "e.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "s.png"]  # no temporaries left
