"""Run the reliability suite's long parts and print its figures.

    .venv/bin/python tools/reliability_report.py [--fuzz N] [--kills K] [--soak ITERS] [--quick]

Fuzz cases per target (mutated zoo prototxts and package-written binaries, plus
random bytes; every failure must be a typed error naming the file), SIGKILLs of
``pipeline train`` (also during snapshots) and of ``convert_imageset`` with the
resumes that ended equal to an uninterrupted run, and a soak run's memory and file
handle growth. Exits 1 if any figure breaks its bound. ``--quick`` runs CI's sizes.
The harnesses live in tests/reliability (fuzzing.py, killing.py, soak.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests"), str(ROOT)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz", type=int, default=20000, help="cases per fuzz target")
    ap.add_argument("--kills", type=int, default=30, help="SIGKILLs of pipeline train")
    ap.add_argument("--soak", type=int, default=5000, help="soak iterations")
    ap.add_argument("--quick", action="store_true", help="CI's sizes (300 cases, 3 kills, 400 iterations)")
    a = ap.parse_args(argv)
    if a.quick:
        a.fuzz, a.kills, a.soak = 300, 3, 400

    import torch

    torch.set_num_threads(1)
    from conftest import caffe_zoo_dir
    from fuzzing import TARGETS, Seeds, run_target
    from killing import kill_convert, kill_training, reference_weights
    from soak import soak

    ok = True
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"== fuzzing: {a.fuzz} cases per target (seed 0; zoo: {caffe_zoo_dir() or 'absent'})")
        seeds = Seeds(tmp / "fuzz", caffe_zoo_dir(), all_zoo=not a.quick)
        total = unexpected = 0
        for target in TARGETS:
            st = run_target(target, a.fuzz, 0, seeds)
            total += st.cases
            unexpected += len(st.failures)
            print("  " + st.line())
            for f in st.failures[:3]:
                print(f"    case {f[0]} ({f[1]} bytes): {f[2]}")
        print(f"  total: {total} cases, {unexpected} unexpected exceptions/hangs")
        ok &= unexpected == 0

        print(f"== kill anywhere: {a.kills} SIGKILLs of pipeline train")
        max_iter = 60
        ref = reference_weights(tmp / "ref", max_iter)
        kills = resumes = matched = runs = 0
        lost = []
        per_run = 10
        for seed in range(max(1, (a.kills + per_run - 1) // per_run)):
            st = kill_training(tmp / f"kill{seed}", min(per_run, a.kills - seed * per_run), seed, max_iter, ref)
            print("  " + st.line())
            kills, resumes, runs = kills + st.kills, resumes + st.resumes, runs + 1
            matched += bool(st.final_matches)
            lost += st.incomplete_snapshots
        print(f"  total: {kills} kills survived, {resumes} resumes, {matched}/{runs} interrupted runs equal to an "
              f"uninterrupted one, {len(lost)} lost or partial snapshots")
        ok &= matched == runs and not lost
        cs = kill_convert(tmp / "convert", max(2, a.kills // 3), 0)
        print("  " + cs.line())
        ok &= not cs.looked_whole_but_was_not

        print(f"== soak: {a.soak} iterations")
        ss = soak(tmp / "soak", a.soak, snapshot=50, test_interval=25, warmup=200)
        print("  " + ss.line())
        ok &= ss.fds_end == ss.fds_start and ss.rss_growth_mb < 20
    print(f"== {'all figures hold' if ok else 'FAILED'} ({time.time() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
