"""WindowData against Caffe's WindowDataLayer::load_batch written out with cv2 and a pure-Python mt19937."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from data_reference import MT19937
from layer_harness import make_layer, run

from pipeline.errors import DataError
from pipeline.formats.blob import array_to_blobproto


# --------------------------------------------------------------------- WindowData
def _round(x):
    return int(np.copysign(np.floor(abs(x) + np.float32(0.5)), x))


def _window_reference(img, box, crop, pad, square, mirror, mean_off, mean, scale):
    """Caffe's WindowDataLayer::load_batch for one window (float32 geometry, cv2 resize)."""
    f = np.float32
    x1, y1, x2, y2 = box
    pad_w = pad_h = 0
    size = (crop, crop)  # (height, width)
    if pad > 0 or square:
        cs = f(crop) / f(crop - 2 * pad)
        hh, hw = f(y2 - y1 + 1) / f(2), f(x2 - x1 + 1) / f(2)
        cx, cy = f(x1) + hw, f(y1) + hh
        if square:
            hh = hw = max(hh, hw)
        x1, x2, y1, y2 = _round(cx - hw * cs), _round(cx + hw * cs), _round(cy - hh * cs), _round(cy + hh * cs)
        uh, uw = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - img.shape[1] + 1), max(0, y2 - img.shape[0] + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f(crop) / f(uw), f(crop) / f(uh)
        w, h = _round(f(x2 - x1 + 1) * sx), _round(f(y2 - y1 + 1) * sy)
        px1, px2, py1 = _round(f(px1) * sx), _round(f(px2) * sx), _round(f(py1) * sy)
        pad_h, pad_w = py1, (px2 if mirror else px1)
        size = (min(h, crop - pad_h), min(w, crop - pad_w))
    patch = cv2.resize(img[y1 : y2 + 1, x1 : x2 + 1], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if mirror:
        patch = cv2.flip(patch, 1)
    out = np.zeros((3, crop, crop), np.float32)
    for h in range(patch.shape[0]):
        for w in range(patch.shape[1]):
            for c in range(3):
                m = mean[c, h + mean_off + pad_h, w + mean_off + pad_w]
                out[c, h + pad_h, w + pad_w] = (f(patch[h, w, c]) - m) * f(scale)
    return out


@pytest.mark.parametrize("pad,mode", [(0, "warp"), (2, "warp"), (1, "square")])
def test_window_data_matches_caffe(tmp_path, pad, mode):
    r = np.random.default_rng(11)
    imgs = [r.integers(0, 256, (12, 14, 3), dtype=np.uint8) for _ in range(2)]
    for i, im in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"w{i}.png"), im)
    windows = {
        0: [(1, 0.9, 2, 1, 9, 8), (0, 0.1, 0, 0, 5, 4), (3, 0.7, 6, 3, 13, 11), (2, 0.4, 1, 1, 3, 3)],
        1: [(2, 0.8, 0, 0, 13, 11), (0, 0.2, 4, 5, 10, 10)],
    }
    text = "".join(
        f"# {i}\nw{i}.png\n3 12 14\n{len(ws)}\n" + "".join(" ".join(map(str, w)) + "\n" for w in ws)
        for i, ws in windows.items()
    )
    (tmp_path / "windows.txt").write_text(text)
    mean = r.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())
    layer, tops = make_layer(
        f'type: "WindowData" top: "data" top: "label" window_data_param {{ source: "{tmp_path}/windows.txt" '
        f'root_folder: "{tmp_path}/" batch_size: 8 fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: 0.5 '
        f'context_pad: {pad} crop_mode: "{mode}" cache_images: {"true" if pad else "false"} }} '
        f'transform_param {{ crop_size: 6 mirror: true scale: 0.5 mean_file: "{tmp_path}/mean.binaryproto" }}',
        [],
    )
    assert tops == [(8, 3, 6, 6), (8,)]
    fg = [(i,) + w for i, ws in windows.items() for w in ws if w[1] >= 0.5]
    bg = [(i, 0, 0) + w[2:] for i, ws in windows.items() for w in ws if w[1] < 0.3]
    rng = MT19937(layer.seed, stream=6)
    data, label = run(layer)
    for item in range(8):
        pool = bg if item < 4 else fg
        win = pool[rng() % len(pool)]
        do_mirror = rng() % 2 == 1
        ref = _window_reference(imgs[win[0]], win[3:], 6, pad, mode == "square", do_mirror, 1, mean[0], 0.5)
        np.testing.assert_array_equal(data[item].numpy(), ref, err_msg=f"item {item}")
        assert label[item] == win[1]


def test_window_file_errors(tmp_path):
    from pipeline.data.windows import read_window_file

    (tmp_path / "w.txt").write_text("# 0\na.png\n3 4 4\n1\n0 0.9 0 0 1 1\n")
    with pytest.raises(DataError, match="foreground window .* needs a class index > 0"):
        read_window_file(tmp_path / "w.txt")
    (tmp_path / "w.txt").write_text("# 1\na.png\n3 4 4\n0\n")
    with pytest.raises(DataError, match="image index 1 out of order"):
        read_window_file(tmp_path / "w.txt")
    (tmp_path / "w.txt").write_text("# 0\na.png\n3 4\n")
    with pytest.raises(DataError, match="expected image 0 width"):
        read_window_file(tmp_path / "w.txt")
