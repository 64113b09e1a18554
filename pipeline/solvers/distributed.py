"""Data-parallel training over torch.distributed, with Caffe's multi-GPU semantics.

Every process (a *rank*) runs its own :class:`~pipeline.solvers.solver.Solver` on its
own device and its own share of the data; after the ``iter_size`` forward/backward
passes of an iteration the accumulated gradients are averaged over the ranks, then
each rank applies the identical update, so the weights stay the same everywhere.
This is Caffe's ``NCCL`` / ``P2PSync`` callback ``on_gradients_ready`` (sum, then
scale by ``1 / solver_count``) followed by ``ApplyUpdate``::

    iteration on every rank r of W:
        clear diffs; [rank 0: test]; iter_size x forward_backward on r's records
        g <- (1/W) * sum_r g_r                    all_reduce of the accumulated diffs
        clip -> normalize (/iter_size) -> regularize -> rule -> w -= v   (same on all ranks)

- ``batch_size`` in the prototxt is per process; the effective batch of one update
  is ``W x batch_size x iter_size``. With a loss normalised by the batch (Caffe's
  default ``VALID``/``BATCH_SIZE``), W processes with batch ``b`` give the gradient
  of one process with batch ``W x b`` (up to float summation order).
- Rank ``r`` reads the records with ``offset % W == r`` of a Data / ImageData /
  HDF5Data source (``pipeline.data.sources``), so the shares are disjoint and their
  union is the single-process stream.
- Seeds: with ``random_seed: s`` rank r seeds its generators with ``s + r``
  (Caffe's ``Solver::Init``), so crops and mirrors differ between ranks; the
  weights are then broadcast from rank 0 (Caffe's ``NCCL::Broadcast``), so every
  rank starts from rank 0's initialisation -- the single-process one.
- Rank 0 alone builds the test nets, tests, logs at INFO level and writes snapshots
  and metrics (Caffe's ``root_solver``); the others log warnings only. Signals are
  read by rank 0 and its decision (``stop`` / ``snapshot``) is broadcast every
  iteration, so all ranks stop or snapshot at the same iteration.
- Snapshots: rank 0 writes the ``.caffemodel`` / ``.solverstate`` (and its
  ``.pipeline`` sidecar); every other rank writes only
  ``<solverstate>.rank<r>.pipeline`` with its own data positions and generator
  states, so a resume (all ranks restoring the same ``.solverstate``) continues each
  rank's stream exactly. The snapshot directory must be visible to every rank
  (the same machine or a shared file system) for that; without its file a rank
  resumes at rank 0's position and says so.

Why an explicit ``all_reduce`` and not ``DistributedDataParallel``: DDP reduces
inside every ``backward()``, i.e. once per ``iter_size`` pass (or needs
``no_sync`` juggling), broadcasts module buffers at every forward, and wants one
``nn.Module`` whose ``forward`` it wraps, while the Net runs its layers itself. One
coalesced all_reduce of the accumulated diffs right before ``apply_update`` keeps
Caffe's exact order (clipping sees the averaged, not yet normalised diff, as in
Caffe). The cost: communication does not overlap the backward pass (Caffe's
``layer_wise_reduce``); gradients are reduced in buckets of ``BUCKET_BYTES``.

Only parameters with ``lr_mult != 0`` are reduced (the others have zero diffs on
every rank, and the fixed BatchNorm statistics are per rank, as in Caffe, where
only rank 0's are saved).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..proto import caffe_pb2
from ..registry import SOLVERS
from . import snapshot as snap
from .solver import CLASSES, NONE, SNAPSHOT, STOP, read_solver_file

log = logging.getLogger("pipeline.solver")

BUCKET_BYTES = 25 * 1024 * 1024
_ACTIONS = (NONE, STOP, SNAPSHOT)


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int
    world_size: int
    local_rank: int


def world_from_env(environ=None) -> World | None:
    """The ``torchrun`` variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) when
    ``WORLD_SIZE`` is set, else None. ``MASTER_ADDR`` / ``MASTER_PORT`` are read by
    ``init_process_group`` (``env://``)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        w = World(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env.get("RANK", "0"))))
    except ValueError:
        raise ConfigError(f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, "
                          f"LOCAL_RANK={env.get('LOCAL_RANK')!r} must be integers") from None
    if w.world_size < 1 or not 0 <= w.rank < w.world_size or w.local_rank < 0:
        raise ConfigError(f"torch.distributed environment: need 0 <= RANK < WORLD_SIZE, got RANK={w.rank}, "
                          f"WORLD_SIZE={w.world_size}, LOCAL_RANK={w.local_rank}")
    return w


def free_port() -> int:
    """A TCP port free on this machine now (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(world: World, backend: str) -> None:
    """``torch.distributed.init_process_group``: from ``$PIPELINE_INIT_METHOD`` when set
    (``pipeline train --nproc`` uses a ``file://`` rendezvous: no port to race for),
    else ``env://`` (``MASTER_ADDR`` / ``MASTER_PORT``, as torchrun sets them)."""
    if dist.is_initialized():
        return
    method = os.environ.get("PIPELINE_INIT_METHOD", "env://")
    if method == "env://":
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ConfigError(f"torch.distributed: ${var} is not set (launch with torchrun, or pipeline train "
                                  "--nproc / --gpu 0,1)")
    dist.init_process_group(backend=backend, init_method=method, rank=world.rank, world_size=world.world_size)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _buckets(tensors: list, limit: int):
    bucket, size = [], 0
    for t in tensors:
        if bucket and (size + t.numel() * t.element_size() > limit or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def _coalesced(tensors: list, op) -> None:
    """Apply a collective ``op(flat)`` to the tensors as flat buckets, then copy back."""
    for bucket in _buckets(tensors, BUCKET_BYTES):
        flat = torch.cat([t.detach().reshape(-1) for t in bucket])
        op(flat)
        offset = 0
        with torch.no_grad():
            for t in bucket:
                n = t.numel()
                t.copy_(flat[offset : offset + n].view(t.shape))
                offset += n


class DataParallelMixin:
    """Turns a Solver class into a rank of a data-parallel run (see the module notes).

    Needs an initialised default process group; ``self.rank`` / ``self.world_size``
    come from it. Overrides: ``apply_update`` (average the diffs first), ``test_all``
    (rank 0 only; its stop request is shared), ``_requested_action`` (rank 0 decides),
    ``snapshot`` / ``restore`` (rank 0 writes the files; other ranks their positions).
    """

    rank = 0
    world_size = 1

    def _parallel_setup(self) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._testing = False
        backend = dist.get_backend()
        self._comm_device = self.device if backend == "nccl" else torch.device("cpu")
        if self.rank != 0:
            self.metrics_path = None
        # Caffe's NCCL::Broadcast: every rank starts from rank 0's weights.
        _coalesced([q.data for q in self.net.learnable_params], lambda flat: dist.broadcast(flat, 0))
        log.info("Data-parallel training: %d processes (%s), batch per process as in the prototxt; "
                 "gradients averaged over the processes", self.world_size, backend)

    def _reduced(self) -> list:
        return [g for g, lr in zip(self._grads(), self.net.lr_mults) if lr != 0]

    def allreduce_gradients(self) -> None:
        """g <- (1/W) * sum over ranks of each rank's accumulated diff (Caffe's on_gradients_ready)."""
        if self.world_size == 1:
            return
        scale = 1.0 / self.world_size

        def op(flat):
            dist.all_reduce(flat)
            flat.mul_(scale)

        _coalesced(self._reduced(), op)

    def apply_update(self) -> None:
        self.allreduce_gradients()
        super().apply_update()

    def _broadcast_code(self, code: int) -> int:
        t = torch.tensor([code], dtype=torch.int64, device=self._comm_device)
        dist.broadcast(t, 0)
        return int(t.item())

    def _requested_action(self) -> str:
        local = super()._requested_action() if self.rank == 0 else NONE
        if self._testing:  # inside rank 0's test loop: the other ranks are not listening
            return local
        return _ACTIONS[self._broadcast_code(_ACTIONS.index(local))]

    def test_all(self) -> None:
        self._testing = True
        try:
            super().test_all()  # the other ranks have no test nets
        finally:
            self._testing = False
        self.requested_early_exit = bool(self._broadcast_code(int(self.requested_early_exit)))

    def _state_file(self) -> str:
        h5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        return snap.snapshot_filename(self.param.snapshot_prefix, self.iter, ".solverstate.h5" if h5 else ".solverstate")

    def rank_sidecar(self, state_file) -> str:
        return f"{state_file}.rank{self.rank}{snap.SIDECAR_SUFFIX}"

    def snapshot(self):
        if self.rank == 0:
            return super().snapshot()
        snap.write_sidecar(self.rank_sidecar(self._state_file()), self.iter, self.net, [],
                           cuda=self.device.type == "cuda")
        return None, None

    def restore(self, state_file) -> None:
        super().restore(state_file)
        if self.rank == 0:
            return
        side = self.rank_sidecar(state_file)
        data = snap.read_sidecar(side) if snap.existing(side) else None
        if data is None or data["meta"].get("iter") != self.iter:
            log.warning("rank %d: no data positions for iteration %d (%s); this rank continues from rank 0's "
                        "position", self.rank, self.iter, side)
            return
        snap.restore_sidecar(data, self.net, [])


_CLASS_CACHE: dict = {}


def parallel_class(base):
    """``base`` (a Solver class) with :class:`DataParallelMixin` in front."""
    if base not in _CLASS_CACHE:
        _CLASS_CACHE[base] = type(f"DataParallel{base.__name__}", (DataParallelMixin, base), {})
    return _CLASS_CACHE[base]


def get_solver(param, device=None, weights=(), source=None, **kwargs):
    """``get_solver`` for one rank of an initialised process group.

    The rank's copy of the parameters: ``random_seed`` + rank (when set), and on
    ranks other than 0 no test nets (``test_iter`` / ``test_net*`` / ``test_state``
    cleared)."""
    if not dist.is_initialized():
        raise ConfigError("distributed get_solver needs torch.distributed's process group (init_process_group)")
    if not isinstance(param, caffe_pb2.SolverParameter):
        source, param = str(param), read_solver_file(param)
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(param)
    rank = dist.get_rank()
    if p.random_seed >= 0:
        p.random_seed = p.random_seed + rank
    if rank != 0:
        for field in ("test_iter", "test_net", "test_net_param", "test_state"):
            p.ClearField(field)
    kind = p.type or "SGD"
    SOLVERS.get(kind, where=f"{source or '<solver>'}: type")
    solver = parallel_class(CLASSES[kind])(p, device=device, weights=weights, source=source, **kwargs)
    solver._parallel_setup()
    return solver


__all__ = ["World", "world_from_env", "free_port", "init_process_group", "destroy_process_group",
           "DataParallelMixin", "parallel_class", "get_solver", "BUCKET_BYTES"]
