"""pycaffe's ``caffe.Classifier``: a Net that classifies images, with its preprocessing.

``Classifier(model_file, pretrained_file, image_dims=None, mean=None,
input_scale=None, raw_scale=None, channel_swap=None)`` builds the net for TEST and
a ``caffe.io.Transformer`` for its first input (transpose H×W×C -> C×H×W, then the
given channel swap, raw scale, mean and input scale, in pycaffe's order).

``predict(inputs, oversample=True)``, as ``python/caffe/classifier.py``:

1. every (H, W, K) image is resized to ``image_dims`` (default: the net's input
   H×W) with ``caffe.io.resize_image``;
2. ``oversample``: ten crops of the net's input size per image (4 corners + centre
   and their mirrors, ``caffe.io.oversample``); otherwise the centre crop
   ``[⌊h/2 − ch/2⌋, ⌊h/2 + ch/2⌋) × [⌊w/2 − cw/2⌋, ⌊w/2 + cw/2⌋)``;
3. each crop is preprocessed and the net runs with ``forward_all`` (batches of
   the prototxt's batch size, the last one padded);
4. the first output (``prob``) is returned, (N, classes); with oversampling the
   ten crops' predictions of each image are averaged.
"""

from __future__ import annotations

import numpy as np

from . import io as caffe_io
from .errors import ConfigError, ShapeError
from .net import Net
from .proto import caffe_pb2


class Classifier(Net):
    """A TEST-phase Net with pycaffe's image classification preprocessing.

    Args:
        model_file: deploy prototxt (its first input is the image blob, N×C×H×W).
        pretrained_file: ``.caffemodel`` / ``.h5`` weights (None: the fillers' values).
        image_dims: (height, width) images are resized to before cropping
            (default: the input blob's H×W, i.e. the whole image is the crop).
        mean: per-channel (C,) or (C, H, W) mean, in the net's channel order.
        input_scale: multiplier after mean subtraction.
        raw_scale: multiplier before it (255 for [0, 1] images into a 0..255 net).
        channel_swap: channel order, e.g. (2, 1, 0) for RGB images into a BGR net.
        device: torch device (default: the pycaffe mode's).

    Attributes:
        transformer: the ``caffe.io.Transformer``; crop_dims: the input's (H, W);
        image_dims: the resize target.
    """

    def __init__(self, model_file, pretrained_file=None, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, device=None):
        super().__init__(model_file, caffe_pb2.TEST, weights=pretrained_file or None, device=device)
        if not self.inputs:
            raise ConfigError(f"{self.source}: Classifier needs a net with an Input layer (a deploy prototxt)")
        in_ = self.inputs[0]
        shape = self.blobs[in_].data.shape
        if len(shape) != 4:
            raise ShapeError(f"{self.source}: Classifier needs a 4-axis image input (N, C, H, W); "
                             f"'{in_}' has shape {shape}")
        self.transformer = caffe_io.Transformer({in_: shape})
        self.transformer.set_transpose(in_, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(in_, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(in_, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(in_, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(in_, channel_swap)
        self.crop_dims = np.array(shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = np.array([int(d) for d in image_dims])
        if self.image_dims.shape != (2,):
            raise ConfigError(f"image_dims must be (height, width), got {tuple(image_dims)}")

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """Class probabilities of ``inputs``, an iterable of (H, W, K) images.

        Returns (N, C) float32: the first output of the net for each image
        (averaged over the ten crops when ``oversample``).
        """
        inputs = list(inputs)
        if not inputs:
            raise ConfigError("Classifier.predict: no images given")
        first = np.asarray(inputs[0])
        if first.ndim != 3:
            raise ShapeError(f"Classifier.predict: images must be (H, W, K) arrays; image 0 has shape {first.shape}")
        k = first.shape[2]
        channels = self.blobs[self.inputs[0]].shape[1]
        if k != channels:
            raise ShapeError(f"Classifier.predict: the images have {k} channel(s) but the net's input "
                             f"'{self.inputs[0]}' takes {channels}")
        h, w = (int(d) for d in self.image_dims)
        images = np.zeros((len(inputs), h, w, k), dtype=np.float32)
        for ix, im in enumerate(inputs):
            im = np.asarray(im)
            if im.ndim != 3 or im.shape[2] != k:
                raise ShapeError(f"Classifier.predict: image {ix} has shape {im.shape}; "
                                 f"every image must be (H, W, {k}) like the first")
            images[ix] = caffe_io.resize_image(im, (h, w))
        ch, cw = (int(d) for d in self.crop_dims)
        if oversample:
            if h < ch or w < cw:
                raise ShapeError(f"Classifier.predict: image_dims {h}x{w} are smaller than the "
                                 f"net's input {ch}x{cw}; ten crops need room")
            crops = caffe_io.oversample(images, (ch, cw))
        else:
            center = np.array([h, w]) / 2.0
            box = (np.tile(center, 2) + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])).astype(int)
            crops = images[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops), k, ch, cw), dtype=np.float32)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
