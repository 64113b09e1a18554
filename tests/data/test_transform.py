"""DataTransformer against Caffe's Transform loops (tests/data_reference.py) for fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
from data_reference import MT19937, TEST, TRAIN, caffe_transform

from pipeline.data.rng import CaffeRNG
from pipeline.data.transform import DataTransformer, load_mean_file, transform_options
from pipeline.errors import ConfigError, DataError, ShapeError
from pipeline.formats.blob import array_to_blobproto
from pipeline.proto import caffe_pb2


def _items(n, shape=(3, 7, 9), seed=0, dtype=np.uint8):
    r = np.random.default_rng(seed)
    if dtype == np.uint8:
        return [r.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
    return [r.normal(0, 10, shape).astype(np.float32) for _ in range(n)]


def _reference(items, seed, **kw):
    rng = MT19937(seed)
    return np.stack([caffe_transform(x, rng, **kw) for x in items])


def test_caffe_rng_is_mt19937_with_modulo():
    r, ref = CaffeRNG(5489), MT19937(5489)
    words = r.words(700)  # crosses a twist
    assert int(words[0]) == 3499211612  # std::mt19937's first word for its default seed
    assert [int(w) for w in words] == [ref() for _ in range(700)]
    r2, ref2 = CaffeRNG(42, stream=3), MT19937(42, stream=3)
    assert [r2.rand(7) for _ in range(20)] == [ref2() % 7 for _ in range(20)]


def test_rng_state_round_trip_is_plain_data():
    import json

    r = CaffeRNG(9)
    r.words(5)
    st = json.loads(json.dumps(r.get_state()))
    a = r.words(10)
    r.set_state(st)
    np.testing.assert_array_equal(r.words(10), a)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_crop_mirror_mean_file_scale_match_caffe(phase):
    items = _items(6)
    mean = np.random.default_rng(1).uniform(0, 255, (3, 7, 9)).astype(np.float32)
    t = DataTransformer(scale=0.0078125, mirror=True, crop_size=5, mean=mean, phase=phase, seed=123)
    out = t.transform_batch(items)
    ref = _reference(items, 123, phase=phase, crop=5, mirror=True, scale=0.0078125, mean=mean)
    assert out.dtype == np.float32 and out.shape == (6, 3, 5, 5)
    np.testing.assert_array_equal(out, ref)
    # a second batch continues the same stream
    np.testing.assert_array_equal(
        t.transform_batch(items),
        _reference(items * 2, 123, phase=phase, crop=5, mirror=True, scale=0.0078125, mean=mean)[6:],
    )


def test_mirror_is_random_in_test_and_crop_is_centred():
    items = _items(16, (1, 6, 6))
    t = DataTransformer(mirror=True, crop_size=4, phase=TEST, seed=5)
    out = t.transform_batch(items)
    centre = np.stack([x[:, 1:5, 1:5] for x in items]).astype(np.float32)
    flipped = [bool(np.array_equal(o, c[:, :, ::-1])) and not np.array_equal(o, c) for o, c in zip(out, centre)]
    plain = [bool(np.array_equal(o, c)) for o, c in zip(out, centre)]
    assert all(f or p for f, p in zip(flipped, plain))
    assert 0 < sum(flipped) < 16  # both outcomes occur: Rand(2) per item


@pytest.mark.parametrize("mean_values", [[104.0], [104.0, 117.0, 123.0]])
def test_mean_values_one_broadcast_or_per_channel(mean_values):
    items = _items(3, (3, 4, 4))
    t = DataTransformer(scale=2.0, mean_values=mean_values, seed=0)
    ref = _reference(items, 0, mean_values=mean_values, scale=2.0)
    np.testing.assert_array_equal(t.transform_batch(items), ref)


def test_float_data_items_and_train_crop_without_mirror():
    items = _items(4, (2, 8, 8), dtype=np.float32)
    t = DataTransformer(crop_size=3, mean_values=[0.5, -1.0], scale=3.0, phase=TRAIN, seed=77)
    np.testing.assert_array_equal(
        t.transform_batch(items), _reference(items, 77, crop=3, mean_values=[0.5, -1.0], scale=3.0)
    )


def test_items_of_different_sizes_crop_to_one_batch():
    items = [_items(1, (3, 6, 6))[0], _items(1, (3, 9, 7), seed=1)[0]]
    t = DataTransformer(crop_size=5, mirror=True, seed=3)
    np.testing.assert_array_equal(t.transform_batch(items), _reference(items, 3, crop=5, mirror=True))
    with pytest.raises(DataError, match="item 1 has shape"):
        DataTransformer(seed=3).transform_batch(items)


def test_no_random_draws_without_mirror_or_train_crop():
    t = DataTransformer(crop_size=2, phase=TEST, seed=11)
    assert not t.needs_rand
    t.transform_batch(_items(3))
    assert int(t.rng.words(1)[0]) == MT19937(11)()


def test_shape_and_config_errors():
    with pytest.raises(ConfigError, match="Cannot specify mean_file and mean_value"):
        DataTransformer(mean=np.zeros((3, 2, 2)), mean_values=[1.0])
    with pytest.raises(ConfigError, match="force_color and force_gray"):
        DataTransformer(force_color=True, force_gray=True)
    t = DataTransformer(crop_size=10)
    with pytest.raises(ShapeError, match="crop_size 10 is larger"):
        t.infer_shape((3, 7, 9))
    with pytest.raises(ShapeError, match="mean_file has shape"):
        DataTransformer(mean=np.zeros((3, 8, 9))).infer_shape((3, 7, 9))
    with pytest.raises(ConfigError, match="Specify either 1 mean_value or as many as channels: 3"):
        DataTransformer(mean_values=[1, 2]).infer_shape((3, 7, 9))
    assert DataTransformer(crop_size=5).infer_shape((1, 7, 9)) == (1, 5, 5)


def test_mean_file_and_legacy_options(tmp_path):
    mean = np.arange(3 * 7 * 9, dtype=np.float32).reshape(1, 3, 7, 9)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(array_to_blobproto(mean).SerializeToString())
    np.testing.assert_array_equal(load_mean_file(path), mean[0])
    tp = caffe_pb2.TransformationParameter(mean_file=str(path), mirror=True)
    dp = caffe_pb2.DataParameter(crop_size=4, scale=0.5, mirror=False)
    opts = transform_options(tp, dp)
    assert opts["crop_size"] == 4 and opts["scale"] == 0.5 and opts["mirror"] is True  # transform_param wins
    t = DataTransformer.create(opts, TRAIN, seed=8)
    items = _items(2)
    np.testing.assert_array_equal(
        t.transform_batch(items), _reference(items, 8, crop=4, mirror=True, scale=0.5, mean=mean[0])
    )
    with pytest.raises(ConfigError, match="Cannot specify mean_file and mean_value"):
        DataTransformer.from_param(caffe_pb2.TransformationParameter(mean_file=str(path), mean_value=[1]))
