"""Caffe's fillers: exact formulas for deterministic ones, statistics for random ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.errors import UnknownTypeError
from pipeline.fillers import Filler, fill
from pipeline.proto import caffe_pb2


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1701)


def test_default_filler_is_constant_zero():
    fp = caffe_pb2.FillerParameter()
    assert Filler.from_param(fp) == Filler()
    assert torch.count_nonzero(fill(fp, (3, 4))) == 0


def test_constant_value():
    assert torch.all(fill({"type": "constant", "value": 0.25}, (2, 5)) == 0.25)


def test_uniform_range_and_mean():
    w = fill({"type": "uniform", "min": -2.0, "max": 3.0}, (200, 100)).double()
    assert w.min() >= -2 and w.max() < 3
    assert abs(w.mean().item() - 0.5) < 0.05


def test_gaussian_moments():
    w = fill({"type": "gaussian", "mean": 1.0, "std": 0.5}, (300, 100)).double()
    assert abs(w.mean().item() - 1.0) < 0.01 and abs(w.std().item() - 0.5) < 0.01


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    w = fill({"type": "gaussian", "std": 1.0, "sparse": 5}, (50, 2000))
    frac = (w != 0).double().mean().item()
    assert abs(frac - 5 / 50) < 0.01


def test_positive_unitball_rows_sum_to_one():
    w = fill({"type": "positive_unitball"}, (6, 2, 3, 3)).double()
    assert torch.all(w >= 0)
    np.testing.assert_allclose(w.reshape(6, -1).sum(1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("norm, n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 64 * 5 * 5), ("AVERAGE", (75 + 1600) / 2)])
def test_xavier_is_uniform_with_caffes_fan(norm, n):
    w = fill({"type": "xavier", "variance_norm": norm}, (64, 3, 5, 5)).double()
    bound = math.sqrt(3.0 / n)
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.95 * bound
    assert abs(w.var().item() - bound**2 / 3) < 0.1 * bound**2 / 3


@pytest.mark.parametrize("norm, n", [("FAN_IN", 3 * 3 * 3), ("FAN_OUT", 128 * 3 * 3)])
def test_msra_std(norm, n):
    w = fill({"type": "msra", "variance_norm": norm}, (128, 3, 3, 3)).double()
    assert abs(w.std().item() - math.sqrt(2.0 / n)) < 0.05 * math.sqrt(2.0 / n)
    assert abs(w.mean().item()) < 0.1 * math.sqrt(2.0 / n)  # ~6 standard errors


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_bilinear_matches_caffes_formula(k):
    w = fill({"type": "bilinear"}, (2, 1, k, k)).double().numpy()
    f = math.ceil(k / 2.0)
    c = (k - 1) / (2.0 * f)
    ref = np.empty((k, k))
    for i in range(k * k):  # Caffe's loop over the flattened kernel
        x, y = i % k, (i // k) % k
        ref.flat[i] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    for n in range(2):
        np.testing.assert_allclose(w[n, 0], ref, rtol=1e-6)


def test_unknown_filler_lists_known_ones():
    with pytest.raises(UnknownTypeError, match="unknown filler type 'xavir'.*did you mean 'xavier'"):
        fill({"type": "xavir"}, (2, 2))
