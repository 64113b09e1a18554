"""caffe.io: load_image, resize_image, oversample, Transformer and the Datum/BlobProto helpers,
against pycaffe's formulas written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pipeline as caffe
from pipeline.errors import ConfigError, DataError, ShapeError
from pipeline.proto import caffe_pb2


@pytest.fixture
def rgb(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(tmp_path / "rgb.png")
    return arr, str(tmp_path / "rgb.png")


def test_load_image_rgb_float_and_gray(rgb, tmp_path):
    arr, path = rgb
    img = caffe.io.load_image(path)
    assert img.dtype == np.float32 and img.shape == (5, 6, 3)
    np.testing.assert_allclose(img, arr / 255.0, rtol=1e-6)  # RGB order, skimage's img_as_float
    gray = caffe.io.load_image(path, color=False)
    ref = (arr / 255.0) @ np.array([0.2125, 0.7154, 0.0721])
    assert gray.shape == (5, 6, 1)
    np.testing.assert_allclose(gray[:, :, 0], ref, rtol=1e-6)
    g = arr[:, :, 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    tiled = caffe.io.load_image(str(tmp_path / "g.png"))
    assert tiled.shape == (5, 6, 3)
    np.testing.assert_allclose(tiled, np.repeat(g[:, :, None] / 255.0, 3, axis=2), rtol=1e-6)
    rgba = np.dstack([arr, np.full((5, 6), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "a.png")), arr / 255.0, rtol=1e-6)
    with pytest.raises(DataError, match="no such image file"):
        caffe.io.load_image(str(tmp_path / "none.png"))


def _bilinear_constant(im, h, w):
    """skimage resize(order=1, mode='constant', cval=0): centres (i + .5)·in/out − .5, zeros outside."""
    H, W = im.shape[:2]
    pad = np.zeros((H + 2, W + 2) + im.shape[2:])
    pad[1:-1, 1:-1] = im
    out = np.zeros((h, w) + im.shape[2:])
    for i in range(h):
        for j in range(w):
            y, x = (i + 0.5) * H / h - 0.5, (j + 0.5) * W / w - 0.5
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            fy, fx = y - y0, x - x0
            p = lambda a, b: pad[a + 1, b + 1] if -1 <= a <= H and -1 <= b <= W else 0.0
            out[i, j] = (
                (1 - fy) * (1 - fx) * p(y0, x0)
                + (1 - fy) * fx * p(y0, x0 + 1)
                + fy * (1 - fx) * p(y0 + 1, x0)
                + fy * fx * p(y0 + 1, x0 + 1)
            )
    return out


@pytest.mark.parametrize("dims", [(7, 9), (3, 2)])
def test_resize_image_is_skimage_constant_mode(dims):
    im = np.random.default_rng(1).uniform(-2, 5, (4, 5, 3)).astype(np.float32)
    out = caffe.io.resize_image(im, dims)
    lo, hi = im.min(), im.max()
    ref = np.clip(_bilinear_constant((im - lo) / (hi - lo), *dims), 0, 1) * (hi - lo) + lo
    assert out.dtype == np.float32 and out.shape == dims + (3,)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_resize_image_constant_and_other_channel_counts():
    out = caffe.io.resize_image(np.full((3, 3, 1), 0.25, np.float32), (5, 4))
    assert out.shape == (5, 4, 1) and np.all(out == 0.25)
    from scipy.ndimage import zoom

    im = np.random.default_rng(2).uniform(0, 1, (4, 6, 2))
    np.testing.assert_allclose(caffe.io.resize_image(im, (8, 3)), zoom(im, (2.0, 0.5, 1), order=1), rtol=1e-6)


def test_oversample_corners_centre_and_mirrors():
    im = np.arange(6 * 8 * 2, dtype=np.float32).reshape(6, 8, 2)
    crops = caffe.io.oversample([im, im + 1000], (4, 5))
    assert crops.shape == (20, 4, 5, 2)
    starts = [(0, 0), (0, 3), (2, 0), (2, 3), (1, 1)]  # centre: (3 - 2, 4 - 2.5) truncated
    for k, (y, x) in enumerate(starts):
        np.testing.assert_array_equal(crops[k], im[y : y + 4, x : x + 5])
        np.testing.assert_array_equal(crops[5 + k], im[y : y + 4, x : x + 5][:, ::-1])
    np.testing.assert_array_equal(crops[10:], crops[:10] + 1000)


def test_transformer_preprocess_and_deprocess():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    mean = np.array([104.0, 117.0, 123.0])
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    img = np.random.default_rng(3).uniform(0, 1, (4, 5, 3)).astype(np.float32)
    keep = img.copy()
    out = t.preprocess("data", img)
    ref = (img.transpose(2, 0, 1)[::-1] * 255 - mean[:, None, None]) * 0.5
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    np.testing.assert_array_equal(img, keep)  # the caller's array is not scaled in place
    np.testing.assert_allclose(t.deprocess("data", out[None]), img, rtol=1e-5, atol=1e-6)
    resized = t.preprocess("data", np.zeros((8, 10, 3), np.float32) + 0.5)  # another size: resized first
    assert resized.shape == (3, 4, 5)


def test_transformer_errors_and_elementwise_mean():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(ConfigError, match="nope is not one of the net inputs"):
        t.set_raw_scale("nope", 1)
    with pytest.raises(ShapeError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros(2))
    with pytest.raises(ShapeError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((3, 5, 4)))
    with pytest.raises(ShapeError, match="Channel swap needs"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ShapeError, match="Transpose order needs"):
        t.set_transpose("data", (1, 0))
    t.set_mean("data", np.arange(60.0).reshape(3, 4, 5))
    t.set_transpose("data", (2, 0, 1))
    np.testing.assert_allclose(t.preprocess("data", np.full((4, 5, 3), 3.0)), 3.0 - np.arange(60.0).reshape(3, 4, 5))


def test_datum_and_blobproto_helpers():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe.io.array_to_datum(arr, 5)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 5) and d.data == arr.tobytes()
    np.testing.assert_array_equal(caffe.io.datum_to_array(d), arr)
    f = caffe.io.array_to_datum(arr.astype(np.float64) / 7)
    np.testing.assert_allclose(caffe.io.datum_to_array(f), arr / 7, rtol=1e-6)
    blob = caffe.io.array_to_blobproto(arr.astype(np.float32))
    assert isinstance(blob, caffe_pb2.BlobProto) and list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), arr)
    s = caffe.io.arraylist_to_blobprotovector_str([arr, arr[:1] * 2])
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    np.testing.assert_array_equal(back[0], arr)
    np.testing.assert_array_equal(back[1], arr[:1] * 2)
