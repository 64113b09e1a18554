"""``pipeline train``: train or finetune a model, as ``caffe train`` does (tools/caffe.cpp ``train()``).

    pipeline train --solver S [--weights W1[,W2...]] [--snapshot X.solverstate] [--gpu 0|0,1|all]
                   [--nproc N] [--level N] [--stage a,b] [--sigint_effect stop|snapshot|none]
                   [--sighup_effect snapshot|stop|none]

- ``--weights`` replaces the solver's ``weights`` field: the listed models are copied
  into the train and test nets by layer name (finetuning). ``--snapshot`` resumes
  from a solver state (and clears ``weights``); giving both is an error.
- ``--level`` / ``--stage`` go into the solver's ``train_state``.
- Without ``--gpu``, an explicit ``solver_mode: GPU`` means GPU ``device_id`` (default 0)
  and an unset ``solver_mode`` the CPU, as in Caffe; when this machine has no CUDA
  device the run uses the CPU and says so (Caffe would abort).
- Data-parallel training (``pipeline.solvers.distributed``, ``launch.py``): ``--gpu 0,1`` /
  ``--gpu all`` starts one process per GPU (NCCL), ``--nproc N`` N CPU processes (gloo);
  under ``torchrun`` (``$WORLD_SIZE`` set) this process is one rank, on GPU
  ``ids[$LOCAL_RANK]`` of ``--gpu``. ``batch_size`` is per process, gradients are
  averaged, rank 0 tests, logs and snapshots.
- Signals are polled between iterations (and between test batches), as Caffe's
  ``SignalHandler``: SIGINT defaults to ``stop`` and SIGHUP to ``snapshot``. A stop
  still writes the final snapshot (``snapshot_after_train``), so Ctrl-C leaves a
  resumable ``.solverstate`` and exits 0. A second Ctrl-C before the first is handled
  interrupts at once (exit 130).
- ``--iterations`` is accepted and, as in Caffe, unused by ``train``.

Log lines go to stderr in glog's format (Caffe's text), and every displayed or tested
value is appended to ``<snapshot_prefix>_metrics.jsonl`` (one JSON object per line).
"""

from __future__ import annotations

import logging
import signal

import torch

from ..errors import ConfigError
from ..proto import caffe_pb2
from ..solvers import distributed
from ..solvers.solver import get_solver, read_solver_file
from .common import glog_to_stderr, stages_from_flag
from .devices import cuda_count, parse_gpus
from .fastflags import add_fast_flags, configure_solver
from .flags import Parser
from .launch import spawn_training

_LOG = logging.getLogger("pipeline.train")
EFFECTS = ("stop", "snapshot", "none")


def _effect(value: str, flag: str) -> str:
    if value not in EFFECTS:
        raise ConfigError(f'Invalid signal effect "{value}" was specified for {flag} (choose stop, snapshot or none)')
    return value


class SignalHandler:
    """Caffe's SignalHandler: SIGINT/SIGHUP set flags that ``action()`` turns into a
    solver action (``stop``/``snapshot``/``none``) when the solver polls."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot"):
        self.effects = {signal.SIGINT: sigint_effect}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = sighup_effect
        self.pending: dict = {}
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.pending.get(signum) and self.effects[signum] != "none":
            raise KeyboardInterrupt  # a second Ctrl-C before the first was handled
        self.pending[signum] = True

    def __enter__(self) -> SignalHandler:
        for sig in self.effects:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def action(self) -> str:
        """The requested action, once per signal received (SIGHUP first, as Caffe)."""
        for sig in sorted(self.effects, key=lambda s: s != getattr(signal, "SIGHUP", None)):
            if self.pending.pop(sig, False):
                return self.effects[sig]
        return "none"


def _device(gpu: str, param: caffe_pb2.SolverParameter, world=None) -> torch.device:
    if world is not None and gpu:  # one rank of a data-parallel run: its own GPU of the list
        gpus = parse_gpus(gpu)
        if world.local_rank >= len(gpus):
            raise ConfigError(f"--gpu {gpu}: LOCAL_RANK {world.local_rank} has no GPU of its own in this list")
        gpu = str(gpus[world.local_rank])
    if world is not None and not gpu:  # ranks without --gpu train on the CPU (gloo), whatever solver_mode says
        _LOG.info("Use CPU.")
        return torch.device("cpu")
    if not gpu and param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if cuda_count() == 0:
            _LOG.info("solver_mode is GPU but no CUDA device is available; using the CPU")
        else:
            gpu = str(param.device_id)
    gpus = parse_gpus(gpu)
    if len(gpus) > 1:
        raise ConfigError(
            f"--gpu {gpu}: training on several GPUs ({', '.join(map(str, gpus))}) is not supported yet; "
            "give one device, e.g. --gpu 0"
        )
    if not gpus:
        _LOG.info("Use CPU.")
        return torch.device("cpu")
    _LOG.info("Using GPUs %d", gpus[0])
    _LOG.info("GPU %d: %s", gpus[0], torch.cuda.get_device_name(gpus[0]))
    torch.cuda.set_device(gpus[0])
    param.device_id = gpus[0]
    return torch.device(f"cuda:{gpus[0]}")


def train(argv) -> int:
    p = Parser(prog="pipeline train", description="Train or finetune a model from a solver prototxt.")
    p.add_argument("--solver", default="", help="The solver definition protocol buffer text file.")
    p.add_argument("--weights", default="", help="Optional; the pretrained weights to initialize finetuning, "
                   "separated by ','. Cannot be set simultaneously with snapshot.")
    p.add_argument("--snapshot", default="", help="Optional; the snapshot solver state to resume training.")
    p.add_argument("--gpu", default="", help="Optional; run in GPU mode on the given device id.")
    p.add_argument("--level", type=int, default=0, help="Optional; network level.")
    p.add_argument("--stage", default="", help="Optional; network stages, separated by ','.")
    p.add_argument("--sigint_effect", default="stop", help="Optional; action on SIGINT: snapshot, stop or none.")
    p.add_argument("--sighup_effect", default="snapshot", help="Optional; action on SIGHUP: snapshot, stop or none.")
    p.add_argument("--iterations", type=int, default=50, help="Unused by train (as in Caffe).")
    p.add_argument("--nproc", type=int, default=0, help="Optional; data-parallel CPU processes (gloo).")
    add_fast_flags(p)
    p.add_argument("--allow_nonfinite", action="store_true", help="Optional; keep training when the loss is NaN "
                   "or infinite, as Caffe does (default: stop, naming the iteration and the first bad layer).")
    p.add_argument("--no-python-layers", "--no_python_layers", dest="no_python_layers", action="store_true",
                   help="Optional; refuse nets with type \"Python\" layers (they run code the prototxt names).")
    a = p.parse_args(argv)
    world = distributed.world_from_env()
    if world is None and (a.nproc > 1 or len(parse_gpus(a.gpu)) > 1):
        if a.nproc > 1 and a.gpu:
            raise ConfigError(f"Give --nproc {a.nproc} for CPU processes or --gpu {a.gpu} for one process per GPU, "
                              "not both")
        return spawn_training(argv, max(a.nproc, len(parse_gpus(a.gpu))))
    if not a.solver:
        raise ConfigError("Need a solver definition to train (--solver S.prototxt).")
    if a.snapshot and a.weights:
        raise ConfigError("Give a snapshot to resume training or weights to finetune but not both "
                          f"(--snapshot {a.snapshot}, --weights {a.weights}).")
    handler = SignalHandler(_effect(a.sigint_effect, "--sigint_effect"), _effect(a.sighup_effect, "--sighup_effect"))
    with glog_to_stderr():
        param = read_solver_file(a.solver)
        param.train_state.level = a.level
        param.train_state.stage.extend(stages_from_flag(a.stage))
        device = _device(a.gpu, param, world)
        if world is not None:
            distributed.init_process_group(world, "nccl" if device.type == "cuda" else "gloo")
            if world.rank != 0:  # Caffe's root solver logs; the others only warn
                logging.getLogger("pipeline").setLevel(logging.WARNING)
        if a.snapshot or a.weights:  # the flags replace the solver's own weights field
            param.ClearField("weights")
            if a.weights:
                param.weights.append(a.weights)
        with handler:
            make = get_solver if world is None else distributed.get_solver
            solver = make(param, device=device, source=a.solver, allow_nonfinite=a.allow_nonfinite,
                          python_layers=not a.no_python_layers)
            solver.metrics_path = f"{param.snapshot_prefix}_metrics.jsonl" if getattr(solver, "rank", 0) == 0 else None
            solver.set_action_function(handler.action)
            configure_solver(solver, a, device)
            if a.snapshot:
                _LOG.info("Resuming from %s", a.snapshot)
                solver.restore(a.snapshot)
            _LOG.info("Starting Optimization")
            try:
                solver.solve()
            finally:
                distributed.destroy_process_group()
        _LOG.info("Optimization Done.")
    return 0
