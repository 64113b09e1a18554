"""Start the processes of a data-parallel ``pipeline train`` on this machine.

``pipeline train --nproc N`` (CPU, gloo) or ``--gpu 0,1`` / ``--gpu all`` (one process per
GPU, NCCL) starts N copies of the command with torch.multiprocessing (``spawn``), each
with the variables ``torchrun`` would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and a ``file://`` rendezvous in a temporary directory
(``PIPELINE_INIT_METHOD``); each copy then sees those
variables and runs as one rank (``pipeline.solvers.distributed``). Under ``torchrun``
nothing is started here: the variables are already set, so several machines work::

    # machine 0 of 2 (machine 1: --node_rank 1), 4 GPUs each: 8 ranks
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --master_addr 10.0.0.1 --master_port 29500 \\
        -m pipeline train --solver solver.prototxt --gpu all

The parent ignores SIGINT while it waits: Ctrl-C reaches every rank (one process
group), rank 0 turns it into a stop or snapshot that all ranks follow. When a rank
fails, the others are stopped and the command exits 1 (the rank printed why).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

import torch
import torch.multiprocessing as mp

from ..solvers.distributed import free_port


def _worker(local_rank: int, argv: list, nprocs: int, port: int, store: str) -> None:
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      PIPELINE_INIT_METHOD=f"file://{store}")
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of N x all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nprocs))
    from .cli import run_command
    from .train import train

    code = run_command("pipeline train", train, argv)
    sys.stderr.flush()
    if code:
        sys.exit(code)


def spawn_training(argv: list, nprocs: int) -> int:
    """Run ``pipeline train argv`` as ``nprocs`` ranks on this machine; 0 when all succeed."""
    tmp = tempfile.mkdtemp(prefix="pipeline-rendezvous-")
    store = os.path.join(tmp, "store")  # a file rendezvous: concurrent runs cannot meet by a shared port
    ctx = mp.start_processes(_worker, args=(list(argv), nprocs, free_port(), store), nprocs=nprocs, join=False,
                             start_method="spawn")
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # after the start: the ranks keep Python's handler
    try:
        try:
            while not ctx.join():
                pass
        except mp.ProcessExitedException as e:
            return 130 if e.exit_code == 130 else 1
        except mp.ProcessRaisedException as e:  # not a PipelineError: show where it came from
            print(f"pipeline train: error: {e}", file=sys.stderr)
            return 1
    finally:
        signal.signal(signal.SIGINT, old)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
