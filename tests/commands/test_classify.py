"""``pipeline classify``: Caffe's classify.py flags over an image, a folder and a .npy array."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline as caffe
from pipeline.commands import cli
from pipeline.commands.classify import ILSVRC_2012_MEAN_BGR
from pipeline.fillers import Filler, fill
from pipeline.formats.atomic import atomic_write_bytes


@pytest.fixture
def model(caffe_zoo, tmp_path):
    """(prototxt, caffemodel, photos): CIFAR-10 quick deploy net with filler weights, zoo photos."""
    proto = caffe_zoo / "BVLC__caffe" / "examples" / "cifar10" / "cifar10_quick.prototxt"
    net = caffe.Net(str(proto), caffe.TEST)
    caffe.set_random_seed(3)
    for blobs in net.params.values():
        for i, b in enumerate(blobs):
            b.data[...] = fill(Filler(type="msra") if i == 0 else Filler(type="gaussian", std=0.1), b.shape).numpy()
    net.save(str(tmp_path / "quick.caffemodel"))
    photos = sorted((caffe_zoo / "BVLC__caffe" / "examples" / "images").glob("*.jpg"))
    return str(proto), str(tmp_path / "quick.caffemodel"), photos


def api(proto, weights, images, mean, oversample=True, dims=(36, 36)):
    c = caffe.Classifier(proto, weights, image_dims=dims, mean=mean, raw_scale=255.0, channel_swap=[2, 1, 0])
    return c.predict(images, oversample)


def test_folder_with_binaryproto_mean(model, tmp_path, capsys):
    proto, weights, photos = model
    mean_img = np.random.default_rng(0).uniform(90, 130, (1, 3, 32, 32)).astype(np.float32)
    atomic_write_bytes(tmp_path / "mean.binaryproto", caffe.io.array_to_blobproto(mean_img).SerializeToString())
    folder = photos[0].parent
    rc = cli.main(["classify", str(folder), str(tmp_path / "out"), "--model_def", proto, "--pretrained_model",
                   weights, "--images_dim", "36,36", "--mean_file", str(tmp_path / "mean.binaryproto")])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"Classifying {len(photos)} inputs." in out and f"Saving results into {tmp_path / 'out.npy'}" in out
    got = np.load(tmp_path / "out.npy")
    images = [caffe.io.load_image(str(p)) for p in photos]
    want = api(proto, weights, images, mean_img[0].astype(np.float64).mean(1).mean(1))  # classify.py's per-channel reduction
    assert got.shape == (len(photos), 10)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_npy_input_center_only_and_npy_mean(model, tmp_path, capsys):
    proto, weights, photos = model
    images = np.stack([caffe.io.resize_image(caffe.io.load_image(str(p)), (48, 48)) for p in photos])
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "mean.npy", np.full((3, 8, 8), 100.0))
    rc = cli.main(["classify", str(tmp_path / "images.npy"), str(tmp_path / "pred.npy"), "-model_def=" + proto,
                   "-pretrained_model", weights, "--center_only", "--images_dim=40,40",
                   "--mean_file", str(tmp_path / "mean.npy")])
    assert rc == 0, capsys.readouterr().err
    got = np.load(tmp_path / "pred.npy")
    np.testing.assert_allclose(got, api(proto, weights, list(images), np.full(3, 100.0), False, (40, 40)), rtol=1e-6)


def test_single_image_default_mean(model, tmp_path, capsys):
    """No --mean_file: ILSVRC 2012's per-channel mean, the value Caffe's default file reduces to."""
    proto, weights, photos = model
    rc = cli.main(["classify", str(photos[0]), str(tmp_path / "one.npy"), "--model_def", proto,
                   "--pretrained_model", weights, "--images_dim", "36,36"])
    assert rc == 0
    want = api(proto, weights, [caffe.io.load_image(str(photos[0]))], np.array(ILSVRC_2012_MEAN_BGR))
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), want, rtol=1e-6)
    assert "CPU mode" in capsys.readouterr().out


def test_print_results(model, tmp_path, capsys):
    proto, weights, photos = model
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"n{9 - i:08d} class{9 - i}, extra\n" for i in range(10)))  # unsorted ids
    rc = cli.main(["classify", str(photos[0]), str(tmp_path / "p.npy"), "--model_def", proto, "--pretrained_model",
                   weights, "--images_dim", "36,36", "--labels_file", str(labels), "--print_results"])
    assert rc == 0
    pred = np.load(tmp_path / "p.npy")[0]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("class")]
    top = np.argsort(-pred)[:5]
    assert lines == [f"class{i}: {pred[i]:.5f}" for i in top]


def test_errors_are_one_line(model, tmp_path, capsys):
    proto, weights, photos = model
    cases = [
        (["classify", str(photos[0]), "o.npy", "--pretrained_model", weights], "--model_def"),
        (["classify", str(tmp_path), str(tmp_path / "o.npy"), "--model_def", proto], "no *.jpg images"),
        (["classify", str(photos[0]), str(tmp_path / "o.npy"), "--model_def", proto, "--mean_file",
          str(tmp_path / "missing.npy")], "no such mean file"),
        (["classify", str(photos[0]), str(tmp_path / "o.npy"), "--model_def", proto, "--images_dim", "3x4"],
         "--images_dim 3x4"),
    ]
    for argv, needle in cases:
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.npy").exists()
