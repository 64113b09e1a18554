"""``caffe.Classifier``: pycaffe's resize -> crops -> preprocess -> forward -> average, on real photos.

The net is the caffe-zoo's CIFAR-10 "quick" deploy net (input 1×3×32×32) with random
weights from Caffe's fillers; the photos are examples/images/*.jpg. The reference
does each step by hand in numpy: the ten crops (corners, centre, mirrors) or the
centre crop by explicit slicing, RGB -> BGR, ×255, − mean, one forward per crop.
"""

from __future__ import annotations

import numpy as np
import pytest

import pipeline as caffe
from pipeline.errors import ConfigError, ShapeError
from pipeline.fillers import Filler, fill

MEAN = np.array([104.0, 117.0, 123.0])
DIMS = (40, 44)  # image_dims (height, width): room for 32×32 crops


def quick_net_path(zoo):
    return zoo / "BVLC__caffe" / "examples" / "cifar10" / "cifar10_quick.prototxt"


def photos(zoo):
    return sorted((zoo / "BVLC__caffe" / "examples" / "images").glob("*.jpg"))


def randomize(net):
    caffe.set_random_seed(7)
    for blobs in net.params.values():
        for i, b in enumerate(blobs):
            spec = Filler(type="msra") if i == 0 else Filler(type="gaussian", std=0.1)
            b.data[...] = fill(spec, b.shape).numpy()


@pytest.fixture
def classifier(caffe_zoo, tmp_path):
    net = caffe.Net(str(quick_net_path(caffe_zoo)), caffe.TEST)
    randomize(net)
    net.save(str(tmp_path / "quick.caffemodel"))
    return caffe.Classifier(str(quick_net_path(caffe_zoo)), str(tmp_path / "quick.caffemodel"), image_dims=DIMS,
                            mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))


def reference(net, images, oversample: bool) -> np.ndarray:
    """Hand-made pycaffe pipeline: float64 preprocessing, one forward per crop, mean over crops."""
    h, w = DIMS
    ch = cw = 32
    out = []
    for im in images:
        r = caffe.io.resize_image(im, DIMS).astype(np.float64)
        if oversample:
            boxes = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
            crops = [r[y : y + ch, x : x + cw] for y, x in boxes]
            crops += [c[:, ::-1] for c in crops]
        else:
            y, x = int(h / 2 - ch / 2), int(w / 2 - cw / 2)
            crops = [r[y : y + ch, x : x + cw]]
        probs = []
        for c in crops:
            blob = c.transpose(2, 0, 1)[::-1] * 255 - MEAN[:, None, None]
            probs.append(net.forward(data=blob[None].astype(np.float32))["prob"][0].astype(np.float64))
        out.append(np.mean(probs, axis=0))
    return np.array(out)


@pytest.mark.parametrize("oversample", [True, False])
def test_predict_matches_hand_pipeline(caffe_zoo, classifier, oversample):
    images = [caffe.io.load_image(str(p)) for p in photos(caffe_zoo)]
    got = classifier.predict(images, oversample=oversample)
    ref_net = caffe.Net(str(quick_net_path(caffe_zoo)), caffe.TEST)
    for name, blobs in classifier.params.items():
        for mine, theirs in zip(ref_net.params[name], blobs):
            mine.data[...] = theirs.data
    want = reference(ref_net, images, oversample)
    assert got.shape == (len(images), 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    assert got.max() > 0.2  # not uniform: the random weights matter


def test_oversample_differs_from_centre(caffe_zoo, classifier):
    images = [caffe.io.load_image(str(p)) for p in photos(caffe_zoo)]
    a = classifier.predict(images, oversample=True)
    b = classifier.predict(images, oversample=False)
    assert np.abs(a - b).max() > 1e-4


def test_defaults_and_errors(caffe_zoo, classifier):
    net = caffe.Classifier(str(quick_net_path(caffe_zoo)), None)
    assert tuple(net.image_dims) == (32, 32) and tuple(net.crop_dims) == (32, 32)
    assert isinstance(net, caffe.Net) and net.phase == caffe.TEST
    with pytest.raises(ShapeError, match="1 channel"):
        classifier.predict([np.zeros((40, 40, 1), np.float32)])
    with pytest.raises(ConfigError, match="no images"):
        classifier.predict([])
    small = caffe.Classifier(str(quick_net_path(caffe_zoo)), None, image_dims=(20, 20))
    with pytest.raises(ShapeError, match="smaller than"):
        small.predict([np.zeros((40, 40, 3), np.float32)])
