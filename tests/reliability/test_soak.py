"""Long runs: memory stays flat and file handles do not leak (harness: soak.py)."""

from __future__ import annotations

import pytest
from soak import soak


def test_short_soak_memory_and_fds_flat(tmp_path):
    stats = soak(tmp_path, iterations=400, snapshot=20, test_interval=10, warmup=60)
    assert stats.fds_end == stats.fds_start, stats.line()
    assert stats.rss_growth_mb < 20, stats.line()
    assert len(list(tmp_path.glob("s_iter_*.solverstate"))) == 1


@pytest.mark.slow
def test_long_soak(tmp_path):
    stats = soak(tmp_path, iterations=5000, snapshot=50, test_interval=25, warmup=200)
    assert stats.fds_end == stats.fds_start, stats.line()
    assert stats.rss_growth_mb < 20, stats.line()
