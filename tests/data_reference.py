"""Independent references for the data-path tests: a pure-Python mt19937 and Caffe's
DataTransformer::Transform written as its C++ loops (float32 scalar arithmetic)."""

from __future__ import annotations

import numpy as np

TRAIN, TEST = 0, 1
GOLDEN = 0x9E3779B9  # sub-stream spacing of pipeline.data.rng.CaffeRNG


class MT19937:
    """``std::mt19937`` / ``boost::mt19937``: init_genrand(seed), then 32-bit words."""

    def __init__(self, seed: int, stream: int = 0):
        seed = (seed + stream * GOLDEN) % 2**32
        self.mt = [seed]
        for i in range(1, 624):
            prev = self.mt[-1]
            self.mt.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
        self.idx = 624

    def _twist(self):
        mt = self.mt
        for i in range(624):
            y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7FFFFFFF)
            mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        self.idx = 0

    def __call__(self) -> int:
        if self.idx >= 624:
            self._twist()
        y = self.mt[self.idx]
        self.idx += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y


def caffe_transform(x, rng, phase=TRAIN, crop=0, mirror=False, scale=1.0, mean=None, mean_values=()):
    """One C×H×W item through Caffe's Transform loops; ``rng()`` gives mt19937 words."""
    f = np.float32
    C, H, W = x.shape
    do_mirror = mirror and rng() % 2 == 1  # mirror && Rand(2)
    h_off = w_off = 0
    height, width = H, W
    if crop:
        height = width = crop
        if phase == TRAIN:
            h_off = rng() % (H - crop + 1)
            w_off = rng() % (W - crop + 1)
        else:
            h_off, w_off = (H - crop) // 2, (W - crop) // 2
    mv = list(mean_values)
    if len(mv) == 1:
        mv = mv * C
    out = np.empty((C, height, width), np.float32)
    for c in range(C):
        for h in range(height):
            for w in range(width):
                e = f(x[c, h_off + h, w_off + w])
                if mean is not None:
                    v = (e - f(mean[c, h_off + h, w_off + w])) * f(scale)
                elif mv:
                    v = (e - f(mv[c])) * f(scale)
                else:
                    v = e * f(scale)
                out[c, h, width - 1 - w if do_mirror else w] = v
    return out


def write_lmdb(path, datums, keys=None):
    """Plain lmdb + caffe_pb2: one Datum per record, keys ``%08d`` (sorted = insertion order)."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, d in enumerate(datums):
            key = keys[i] if keys else f"{i:08d}"
            txn.put(key.encode(), d.SerializeToString())
    env.close()
    return str(path)


def raw_datum(arr, label):
    from pipeline.proto import caffe_pb2

    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = arr.shape
    if arr.dtype == np.uint8:
        d.data = arr.tobytes()
    else:
        d.float_data.extend(arr.ravel().tolist())
    d.label = int(label)
    return d
