"""Kill anywhere: SIGKILLed training resumes from the newest complete snapshot and ends
equal to an uninterrupted run; an interrupted convert_imageset leaves no database
that looks whole (harness: killing.py)."""

from __future__ import annotations

import pytest
from killing import kill_convert, kill_training, reference_weights, write_solver

import pipeline as caffe
from pipeline.errors import ParseError
from pipeline.solvers import snapshot as snap


def test_sigkill_during_training_and_snapshots_loses_nothing(tmp_path):
    # Enough iterations that a quiet machine does not finish before the third kill.
    ref = reference_weights(tmp_path / "ref", 300)
    stats = kill_training(tmp_path / "k", kills=3, seed=0, max_iter=300, reference=ref)
    assert stats.incomplete_snapshots == []
    assert stats.kills >= 2 and stats.resumes >= 2
    assert stats.final_matches is True


def test_sigkill_convert_imageset_never_leaves_a_partial_database(tmp_path):
    stats = kill_convert(tmp_path, kills=2, seed=0, n_images=400)
    assert stats.kills >= 1
    assert stats.looked_whole_but_was_not == []
    assert stats.absent_after_kill + stats.whole_after_kill == 2


@pytest.mark.slow
def test_many_kills(tmp_path):
    ref = reference_weights(tmp_path / "ref", 60)
    for seed in range(3):
        stats = kill_training(tmp_path / f"k{seed}", kills=12, seed=seed, max_iter=60, reference=ref)
        assert stats.incomplete_snapshots == [] and stats.final_matches is True
    conv = kill_convert(tmp_path / "c", kills=10, seed=1, n_images=600)
    assert conv.looked_whole_but_was_not == []


def test_resume_from_a_prefix_takes_the_newest_complete_snapshot(tmp_path):
    solver_path = write_solver(tmp_path, "p", max_iter=6, snapshot=2)
    solver = caffe.get_solver(str(solver_path))
    solver.solve()
    prefix = str(tmp_path / "p")
    assert [it for it, _ in snap.snapshot_iters(prefix)] == [6, 4, 2]
    # what a crash could leave: a temporary file, and a state whose bytes were cut short
    (tmp_path / ".p_iter_8.solverstate.ab12.tmp").write_bytes(b"\x08")
    data = (tmp_path / "p_iter_6.solverstate").read_bytes()
    (tmp_path / "p_iter_6.solverstate").write_bytes(data[: len(data) // 2])
    assert snap.resolve_resume(prefix) == str(tmp_path / "p_iter_4.solverstate")
    (tmp_path / "p_iter_4.caffemodel").unlink()  # a state whose net is gone is not complete either
    assert snap.newest_complete(prefix) == str(tmp_path / "p_iter_2.solverstate")
    again = caffe.get_solver(str(solver_path))
    again.restore(prefix)
    assert again.iter == 2
    with pytest.raises(ParseError, match="no complete snapshot"):
        snap.resolve_resume(str(tmp_path / "nothing"))
