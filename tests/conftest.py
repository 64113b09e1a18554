"""Shared fixtures: where the real Caffe files live, GPU skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests use small tensors: one thread avoids oversubscribing CI's two cores (and is
# many times faster there than torch's default thread pool for tiny ops).
torch.set_num_threads(1)


def caffe_zoo_dir() -> Path | None:
    """``../shared/caffe-zoo`` beside the checkout (or $PIPELINE_CAFFE_ZOO), if present."""
    env = os.environ.get("PIPELINE_CAFFE_ZOO")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "caffe-zoo"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def caffe_zoo() -> Path:
    d = caffe_zoo_dir()
    if d is None:
        pytest.skip("../shared/caffe-zoo is not present beside the checkout")
    return d


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
