"""Input and DummyData: the source layers the runtime needs (database layers are tested with the data issue)."""

from __future__ import annotations

import pytest
import torch

from layer_harness import TRAIN, make_layer, run
from pipeline.errors import ConfigError


def test_input_one_shape_for_all_tops_or_one_each():
    _, tops = make_layer('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } }', [])
    assert tops == [(2, 3), (2, 3)]
    _, tops = make_layer('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 } shape { dim: 4 dim: 1 } }', [])
    assert tops == [(2,), (4, 1)]
    with pytest.raises(ConfigError, match="Input layer 'i'"):
        make_layer('name: "i" type: "Input" top: "a" top: "b" top: "c" '
                   'input_param { shape { dim: 2 } shape { dim: 4 } }', [])


def test_dummy_data_constant_is_filled_once_and_random_refilled():
    snippet = ('type: "DummyData" top: "c" top: "g" dummy_data_param { shape { dim: 2 dim: 3 } '
               'data_filler { type: "constant" value: 1.5 } data_filler { type: "gaussian" std: 2 } }')
    layer, tops = make_layer(snippet, [], phase=TRAIN)
    assert tops == [(2, 3), (2, 3)]
    torch.manual_seed(0)
    c1, g1 = run(layer)
    c2, g2 = run(layer)
    assert torch.all(c1 == 1.5) and c1 is c2  # constant: filled once (Caffe's refill_ = false)
    assert not torch.equal(g1, g2)  # random: refilled every forward


def test_dummy_data_legacy_dims_and_default_zero_filler():
    layer, tops = make_layer('type: "DummyData" top: "a" top: "b" dummy_data_param { num: 5 num: 6 channels: 3 '
                             'height: 2 width: 1 }', [])
    assert tops == [(5, 3, 2, 1), (6, 3, 2, 1)]
    a, b = run(layer)
    assert torch.count_nonzero(a) == 0 and b.shape == (6, 3, 2, 1)


def test_dummy_data_errors():
    with pytest.raises(ConfigError, match="DummyData layer 'd': data_filler must be given once or once per top"):
        make_layer('name: "d" type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { shape { dim: 1 } '
                   'data_filler { type: "constant" } data_filler { type: "constant" } }', [])
    with pytest.raises(ConfigError, match="needs a shape"):
        make_layer('name: "d" type: "DummyData" top: "a"', [])
