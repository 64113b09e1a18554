"""R-CNN window files and the WindowData sampler (Caffe's ``window_data_layer.cpp``).

Window file, whitespace separated, repeated per image::

    # image_index
    img_path
    channels height width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines, inclusive pixel boxes)

A window with ``overlap >= fg_threshold`` is foreground (its class must be > 0);
one with ``overlap < bg_threshold`` is background (label and overlap forced to 0);
others are dropped.

Each batch holds ``N - int(N * fg_fraction)`` background windows, then the
foreground ones, each drawn with replacement: ``window = list[word % len]``,
``do_mirror = mirror && word % 2`` (Caffe's ``PrefetchRand()``, one mt19937 word
each). The window, grown by ``context_pad`` (and made square with
``crop_mode: "square"``), is clipped to the image, warped with bilinear
``cv::resize`` to its share of ``crop_size × crop_size``, flipped when mirrored,
and written at its padding offset into a zero image::

    top[n, c, h + pad_h, w + pad_w] = (pixel - mean[c, h + mean_off + pad_h, w + mean_off + pad_w]) * scale
                                      (mean_off = (mean_width - crop_size) / 2; or mean_value[c]; or none)

All geometry is computed in float32 with C ``round`` (half away from zero), as Caffe's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .rng import CaffeRNG

# Columns of a window row.
IMAGE_INDEX, LABEL, OVERLAP, X1, Y1, X2, Y2 = range(7)


def read_window_file(path, root_folder="", fg_threshold=0.5, bg_threshold=0.5):
    """Parse a window file -> (images [(path, (C, H, W))], fg windows (K, 7), bg windows (M, 7)) float64."""
    try:
        tokens = Path(path).read_text().split()
    except OSError as e:
        raise DataError(f"{path}: Failed to open window file ({e.strerror or e})") from None
    if not tokens:
        raise DataError(f"{path}: Window file is empty")
    pos = 0

    def take(kind, what):
        nonlocal pos
        if pos >= len(tokens):
            raise DataError(f"{path}: window file ended early, expected {what} (token {pos + 1})")
        tok = tokens[pos]
        pos += 1
        try:
            return kind(tok)
        except ValueError:
            raise DataError(f"{path}: expected {what}, got {tok!r} (token {pos})") from None

    images, fg, bg = [], [], []
    while pos < len(tokens):
        tag = take(str, "'#'")
        if tag != "#":
            raise DataError(f"{path}: expected '#' to start image {len(images)}, got {tag!r} (token {pos})")
        index = take(int, "an image index")
        if index != len(images):
            raise DataError(
                f"{path}: image index {index} out of order (expected {len(images)}); WindowData "
                f"looks images up by this index"
            )
        img_path = root_folder + take(str, "an image path")
        size = tuple(take(int, f"image {index} {d}") for d in ("channels", "height", "width"))
        images.append((img_path, size))
        for _ in range(take(int, f"image {index} num_windows")):
            label = take(int, "a class index")
            overlap = take(float, "an overlap")
            box = [take(int, c) for c in ("x1", "y1", "x2", "y2")]
            row = [index, label, overlap] + box
            if overlap >= fg_threshold:
                if label <= 0:
                    raise DataError(
                        f"{path}: image {index}: foreground window (overlap {overlap}) needs a class "
                        f"index > 0, got {label}"
                    )
                fg.append(row)
            elif overlap < bg_threshold:
                row[LABEL] = row[OVERLAP] = 0
                bg.append(row)
    as_arr = lambda rows: np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return images, as_arr(fg), as_arr(bg)


def _cround(x: np.float32) -> int:
    """C's ``round`` (half away from zero) of a float32, as int."""
    return int(np.copysign(np.floor(np.abs(x) + np.float32(0.5)), x))


class WindowSource:
    """Batches of warped windows (see module docstring).

    Args:
        images, fg, bg: from ``read_window_file``.
        batch_size, crop_size (> 0), mirror, scale, mean (C×H×W or None), mean_values.
        fg_fraction, context_pad, crop_mode ("warp" or "square"), cache_images.
        seed: the sampler's generator (stream 6).

    State: ``{"rng": generator state}`` (windows are drawn with replacement).
    """

    def __init__(
        self,
        images,
        fg,
        bg,
        batch_size,
        crop_size,
        mirror=False,
        scale=1.0,
        mean=None,
        mean_values=(),
        fg_fraction=0.25,
        context_pad=0,
        crop_mode="warp",
        cache_images=False,
        seed=0,
        where="",
    ):
        self.images, self.fg, self.bg, self.where = images, fg, bg, where
        self.batch_size, self.crop_size, self.mirror = int(batch_size), int(crop_size), bool(mirror)
        self.scale = np.float32(scale)
        self.fg_fraction, self.context_pad = float(fg_fraction), int(context_pad)
        if crop_mode not in ("warp", "square"):
            raise ConfigError(f"{where}window_data_param.crop_mode must be 'warp' or 'square', got {crop_mode!r}")
        self.square = crop_mode == "square"
        if self.crop_size <= 0:
            raise ConfigError(f"{where}WindowData needs transform_param.crop_size > 0")
        if 2 * self.context_pad >= self.crop_size:
            raise ConfigError(f"{where}context_pad {self.context_pad} leaves nothing of crop_size {self.crop_size}")
        self.channels = images[-1][1][0] if images else 3
        if self.channels != 3:
            raise DataError(
                f"{where}window file gives {self.channels} channels; WindowData reads images in colour (3 channels)"
            )
        if mean is not None and len(mean_values):
            raise ConfigError(f"{where}Cannot specify mean_file and mean_value at the same time")
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        if self.mean is not None:
            mc, mh, mw = self.mean.shape
            self.mean_off = (mw - self.crop_size) // 2
            if mc != 3 or min(mh, mw) - self.mean_off < self.crop_size or self.mean_off < 0:
                raise DataError(
                    f"{where}mean_file of shape {self.mean.shape} cannot cover a centred "
                    f"{self.crop_size}×{self.crop_size} crop of 3 channels"
                )
        mv = np.asarray(mean_values, np.float32).reshape(-1)
        if len(mv) not in (0, 1, 3):
            raise ConfigError(f"{where}Specify either 1 mean_value or as many as channels: 3 (got {len(mv)})")
        self.mean_values = np.broadcast_to(mv, (3,)).copy() if len(mv) == 1 else mv
        self.rng = CaffeRNG(seed, stream=6)
        self._cache = [Path(p).read_bytes() for p, _ in images] if cache_images else None

    def top_shapes(self) -> list[tuple]:
        return [(self.batch_size, self.channels, self.crop_size, self.crop_size), (self.batch_size,)]

    def _image(self, index: int) -> np.ndarray:
        from .image import decode_image, read_image

        path = self.images[index][0]
        try:
            if self._cache is not None:
                return decode_image(self._cache[index], True, what=path)
            return read_image(path, True)
        except DataError as e:
            raise DataError(f"{self.where}Could not open or find file {path}: {e}") from None

    def warp(self, img: np.ndarray, window, do_mirror: bool):
        """(warped H'×W'×3 uint8 window, pad_h, pad_w) for one window row."""
        crop = self.crop_size
        x1, y1, x2, y2 = (int(window[k]) for k in (X1, Y1, X2, Y2))
        rows, cols = img.shape[:2]
        out_h = out_w = crop
        pad_h = pad_w = 0
        f32 = np.float32
        if self.context_pad > 0 or self.square:
            context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
            half_h, half_w = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
            cx, cy = f32(x1) + half_w, f32(y1) + half_h
            if self.square:
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _cround(cx - half_w * context_scale), _cround(cx + half_w * context_scale)
            y1, y2 = _cround(cy - half_h * context_scale), _cround(cy + half_h * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x, scale_y = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
            out_w = _cround(f32(x2 - x1 + 1) * scale_x)
            out_h = _cround(f32(y2 - y1 + 1) * scale_y)
            pad_x1, pad_x2 = _cround(f32(pad_x1) * scale_x), _cround(f32(pad_x2) * scale_x)
            pad_y1 = _cround(f32(pad_y1) * scale_y)
            pad_h = pad_y1
            pad_w = pad_x2 if do_mirror else pad_x1  # a mirrored window mirrors its padding too
            out_h = min(out_h, crop - pad_h)
            out_w = min(out_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or out_h < 1 or out_w < 1:
            raise DataError(
                f"{self.where}window {[int(v) for v in window[X1:]]} of image "
                f"{self.images[int(window[IMAGE_INDEX])][0]} ({rows}×{cols}) is empty or outside it"
            )
        from .image import resize_bilinear

        patch = resize_bilinear(img[y1 : y2 + 1, x1 : x2 + 1], out_h, out_w)
        if do_mirror:
            patch = patch[:, ::-1]
        return patch, pad_h, pad_w

    def next_batch(self):
        n, crop = self.batch_size, self.crop_size
        if len(self.fg) == 0 or len(self.bg) == 0:
            raise DataError(
                f"{self.where}WindowData needs foreground and background windows "
                f"(has {len(self.fg)} and {len(self.bg)})"
            )
        num_fg = int(np.float32(n) * np.float32(self.fg_fraction))
        data = np.zeros((n, self.channels, crop, crop), np.float32)
        labels = np.zeros(n, np.float32)
        item = 0
        for pool, count in ((self.bg, n - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = pool[int(self.rng.words(1)[0]) % len(pool)]
                do_mirror = self.mirror and self.rng.rand(2) == 1
                img = self._image(int(window[IMAGE_INDEX]))
                patch, ph, pw = self.warp(img, window, do_mirror)
                h, w = patch.shape[:2]
                x = patch.transpose(2, 0, 1).astype(np.float32)  # (3, h, w)
                if self.mean is not None:
                    o = self.mean_off
                    x = x - self.mean[:, o + ph : o + ph + h, o + pw : o + pw + w]
                elif len(self.mean_values):
                    x = x - self.mean_values[:, None, None]
                if self.scale != 1:
                    x = x * self.scale
                data[item, :, ph : ph + h, pw : pw + w] = x
                labels[item] = window[LABEL]
                item += 1
        return data, labels

    def state(self) -> dict:
        return {"rng": self.rng.get_state()}

    def set_state(self, state: dict) -> None:
        self.rng.set_state(state["rng"])

    def release(self) -> None:
        pass
