"""``pipeline classify INPUT OUTPUT.npy --model_def deploy.prototxt --pretrained_model w.caffemodel [...]``.

Caffe's ``python/classify.py`` with its flags and defaults: ``--center_only``,
``--images_dim 256,256``, ``--mean_file`` (``.npy`` C×H×W as pycaffe, or a
``.binaryproto``; reduced to its per-channel mean as classify.py does),
``--input_scale``, ``--raw_scale 255``, ``--channel_swap 2,1,0`` (RGB -> BGR),
``--ext jpg``, ``--gpu``, ``--labels_file``/``--print_results``. INPUT is an image,
a folder (every ``*.EXT`` in it) or a ``.npy`` array of (H, W, K) images; the
(N, classes) predictions are saved with ``np.save`` (``.npy`` appended when the
name lacks it, as numpy does), written atomically.

Differences from classify.py: ``--model_def`` and ``--pretrained_model`` have no
default (Caffe points into its source tree). Without ``--mean_file`` the mean
subtracted is ILSVRC 2012's per-channel BGR mean (104.00698793, 116.66876762,
122.67891434), which is what Caffe's default ``ilsvrc_2012_mean.npy`` reduces to;
``--mean_file ''`` subtracts none. A folder's images are taken in sorted order
(Caffe: glob's order). ``--print_results`` prints without pandas and still saves.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..formats.atomic import atomic_path
from .flags import Parser

ILSVRC_2012_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
_DEFAULT_MEAN = "<ilsvrc_2012_mean>"


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--{flag} {text}: expected integers separated by ','") from None


def load_mean(path) -> np.ndarray:
    """A mean file (``.npy`` C×H×W, or ``.binaryproto``) reduced to its (C,) per-channel mean."""
    path = str(path)
    if path.endswith(".binaryproto"):
        from ..data.transform import load_mean_file

        mean = load_mean_file(path)
    else:
        try:
            mean = np.load(path)
        except FileNotFoundError:
            raise DataError(f"{path}: no such mean file") from None
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a .npy mean file ({e})") from None
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise DataError(f"{path}: expected a C×H×W mean, got shape {mean.shape}")
    return mean.mean(1).mean(1)


def load_inputs(input_file: str, ext: str) -> list:
    """An image, a folder of ``*.ext`` images (sorted) or a ``.npy`` array of images."""
    from .. import io as caffe_io

    input_file = os.path.expanduser(input_file)
    if input_file.endswith("npy"):
        print(f"Loading file: {input_file}")
        try:
            return list(np.load(input_file))
        except FileNotFoundError:
            raise DataError(f"{input_file}: no such file") from None
        except (ValueError, OSError) as e:
            raise DataError(f"{input_file}: not a .npy array ({e})") from None
    if os.path.isdir(input_file):
        print(f"Loading folder: {input_file}")
        files = sorted(Path(input_file).glob(f"*.{ext}"))
        if not files:
            raise DataError(f"{input_file}: no *.{ext} images in this folder")
        return [caffe_io.load_image(str(f)) for f in files]
    print(f"Loading file: {input_file}")
    return [caffe_io.load_image(input_file)]


def _labels(path) -> list[str]:
    """synset_words.txt: 'n01440764 tench, Tinca tinca' lines, sorted by synset id; first name each."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read the labels file ({e.strerror})") from None
    rows = sorted((ln.split(" ")[0], " ".join(ln.split(" ")[1:]).split(",")[0]) for ln in lines)
    return [name for _, name in rows]


def classify(argv) -> int:
    p = Parser(prog="pipeline classify", description="Classify images with a Caffe model (Caffe's classify.py).")
    p.add_argument("input_file", help="Input image, directory, or npy.")
    p.add_argument("output_file", help="Output npy filename.")
    p.add_argument("--model_def", default="", help="Model definition file.")
    p.add_argument("--pretrained_model", default="", help="Trained model weights file.")
    p.add_argument("--gpu", action="store_true", help="Switch for gpu computation.")
    p.add_argument("--center_only", action="store_true",
                   help="Switch for prediction from center crop alone instead of averaging predictions "
                        "across crops (default).")
    p.add_argument("--images_dim", default="256,256", help="Canonical 'height,width' dimensions of input images.")
    p.add_argument("--mean_file", default=_DEFAULT_MEAN,
                   help="Data set image mean of [Channels x Height x Width] dimensions (.npy or .binaryproto). "
                        "Default: ILSVRC 2012's per-channel mean. Set to '' for no mean subtraction.")
    p.add_argument("--input_scale", type=float, help="Multiply input features by this scale to finish preprocessing.")
    p.add_argument("--raw_scale", type=float, default=255.0,
                   help="Multiply raw input by this scale before preprocessing.")
    p.add_argument("--channel_swap", default="2,1,0",
                   help="Order to permute input channels. The default converts RGB -> BGR since BGR is the "
                        "Caffe default by way of OpenCV.")
    p.add_argument("--ext", default="jpg",
                   help="Image file extension to take as input when a directory is given as the input file.")
    p.add_argument("--labels_file", default="", help="Readable label definition file (synset_words.txt).")
    p.add_argument("--print_results", action="store_true", help="Print the top 5 labels of the first input.")
    a = p.parse_args(argv)
    if not a.model_def:
        raise ConfigError("Need a model definition (--model_def deploy.prototxt)")
    if a.print_results and not a.labels_file:
        raise ConfigError("--print_results needs --labels_file (synset_words.txt)")

    image_dims = _ints(a.images_dim, "images_dim")
    if len(image_dims) != 2:
        raise ConfigError(f"--images_dim {a.images_dim}: expected 'height,width'")
    mean = None
    if a.mean_file == _DEFAULT_MEAN:
        mean = np.array(ILSVRC_2012_MEAN_BGR)
    elif a.mean_file:
        mean = load_mean(a.mean_file)
    channel_swap = _ints(a.channel_swap, "channel_swap") if a.channel_swap else None

    from ..classifier import Classifier  # torch and the layers load only when the command runs

    print("GPU mode" if a.gpu else "CPU mode")
    classifier = Classifier(a.model_def, a.pretrained_model or None, image_dims=image_dims, mean=mean,
                            input_scale=a.input_scale, raw_scale=a.raw_scale, channel_swap=channel_swap,
                            device="cuda" if a.gpu else "cpu")
    inputs = load_inputs(a.input_file, a.ext)
    print(f"Classifying {len(inputs)} inputs.")
    start = time.time()
    predictions = classifier.predict(inputs, not a.center_only)
    print(f"Done in {time.time() - start:.2f} s.")

    if a.print_results:
        labels = _labels(a.labels_file)
        top = (-predictions[0]).argsort()[:5]
        for i in top:
            name = labels[i] if i < len(labels) else f"class {i}"
            print(f"{name}: {predictions[0][i]:.5f}")

    out = a.output_file if a.output_file.endswith(".npy") else a.output_file + ".npy"
    print(f"Saving results into {out}")
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, predictions)
    sys.stdout.flush()
    return 0
