"""The Solver: Caffe's training loop (``Solver::Step``), testing, snapshots and resume.

One iteration of :meth:`Solver.step` is, as in Caffe::

    clear the parameter gradients
    test every test net            if test_interval divides iter (iter 0 only with test_initialization)
    iter_size x forward_backward   gradients accumulate; loss = mean of the iter_size losses
    smooth the loss                mean of the last average_loss losses
    log                            every display iterations (loss, each train net output)
    apply_update                   rate from lr_policy; clip, normalize, regularize, rule, w -= g
    iter += 1
    snapshot                       every snapshot iterations, or when a signal asks for one
    stop                           when a signal asks for it

Nets come from the solver file as Caffe reads them (``net``/``net_param``/
``train_net``/``train_net_param``; ``test_net``/``test_net_param`` or the generic net
once per remaining ``test_iter``), with states merged in Caffe's order (phase, then
the net's own ``state``, then ``train_state``/``test_state``). Relative paths are
resolved from the current directory, as Caffe does; a missing ``snapshot_prefix``
becomes the solver file's path without its extension, and a prefix that is a
directory gets the solver file's stem appended (``UpgradeSnapshotPrefixProperty``).
Test nets share the training net's parameter tensors (``ShareTrainedLayersWith``).

Differences from Caffe: with ``solver_mode: GPU`` and no CUDA device the command
line falls back to the CPU (Caffe aborts); ``restore`` also looks for the
``learned_net`` file beside the ``.solverstate`` when its recorded path does not
exist (e.g. resuming from another directory); ``.pipeline`` sidecars make resume
bit-exact (see ``snapshot.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import mode
from ..errors import ConfigError, WriteError
from ..formats import prototxt
from ..net import Net
from ..proto import caffe_pb2
from ..registry import SOLVERS
from . import lr_policies, numeric, rules
from . import snapshot as snap
from .glog import num

log = logging.getLogger("pipeline.solver")

NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"  # Caffe's SolverAction
_TRAIN_FIELDS = ("net", "net_param", "train_net", "train_net_param")


def upgrade_snapshot_prefix(param: caffe_pb2.SolverParameter, solver_file: str) -> None:
    """Caffe's UpgradeSnapshotPrefixProperty: default and directory prefixes."""
    path = Path(solver_file)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = str(path.with_suffix(""))
        log.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix)
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = str(Path(param.snapshot_prefix) / path.stem)
        log.info("snapshot_prefix was a directory and is replaced to %s", param.snapshot_prefix)


def read_solver_file(path) -> caffe_pb2.SolverParameter:
    """A solver prototxt as Caffe's ReadSolverParamsFromTextFileOrDie reads it."""
    param = prototxt.read_solver(path)
    upgrade_snapshot_prefix(param, str(path))
    return param


class Solver:
    """A solver from a solver prototxt (path) or a ``SolverParameter``.

    Args:
        param: solver prototxt path or ``caffe_pb2.SolverParameter``.
        device: torch device for the nets (default: pycaffe's mode, ``set_mode_gpu``).
        weights: extra ``.caffemodel`` files to finetune from, as ``--weights`` (comma lists allowed).
        allow_nonfinite: keep training when the loss is NaN or infinite, as Caffe does; by
            default training stops with a NumericError naming the iteration and the first
            layer whose output went non-finite (``numeric.py``).
        python_layers: False refuses ``type: "Python"`` layers (they import and run code
            named by the prototxt); see ``Net``.

    Attributes (pycaffe's): ``net``, ``test_nets``, ``iter``, ``param``; also
    ``history`` (tensors in Caffe's layout), ``current_step``, ``rule``,
    ``metrics_path`` (a JSON-lines file of displayed and tested values; None: off).
    """

    type: str | None = None  # fixed by the SGDSolver, ... subclasses; None: from the param

    def __init__(self, param, device=None, weights=(), source=None, allow_nonfinite=False, python_layers=True):
        self.allow_nonfinite, self.python_layers = bool(allow_nonfinite), bool(python_layers)
        self.last_snapshot: str | None = None  # newest solver state written or restored (NumericError names it)
        if isinstance(param, caffe_pb2.SolverParameter):
            self.param = caffe_pb2.SolverParameter()
            self.param.CopyFrom(param)
            self.source = str(source) if source else "<solver>"
        else:
            self.source = str(param)
            self.param = read_solver_file(param)
        p = self.param
        if weights:
            p.ClearField("weights")
            p.weights.extend([weights] if isinstance(weights, str) else list(weights))
        kind = self.type or p.type or "SGD"
        self.rule: rules.UpdateRule = SOLVERS.get(kind, where=f"{self.source}: type")
        log.info("Initializing solver from parameters: \n%s", prototxt.to_text(p))
        self._check()
        if p.random_seed >= 0:
            mode.set_random_seed(p.random_seed)
        self.device = mode.resolve_device(device)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.params = list(self.net.learnable_params)
        self.history = [torch.zeros_like(q.detach()) for _ in range(self.rule.history_per_param) for q in self.params]
        self._grads()
        self.requested_early_exit = False
        self.action_function = None
        self.metrics_path: str | None = None
        self.smoothed_loss = 0.0
        self._losses: list = []
        self.learning_rate = 0.0
        self._t0 = time.time()

    # ----------------------------------------------------------- building
    def _check(self) -> None:
        p, where = self.param, self.source
        if p.average_loss < 1:
            raise ConfigError(f"{where}: average_loss should be non-negative (>= 1), got {p.average_loss}")
        if p.iter_size < 1:
            raise ConfigError(f"{where}: iter_size must be >= 1, got {p.iter_size}")
        if p.regularization_type not in ("L2", "L1"):
            raise ConfigError(f"{where}: Unknown regularization type: {p.regularization_type!r} (known: L2, L1)")
        self.rule.check(p, where)
        lr_policies.check(p, where)
        if p.snapshot:
            if not p.snapshot_prefix:
                raise ConfigError(f"{where}: In solver params, snapshot is specified but snapshot_prefix is not")
            probe = snap.snapshot_filename(p.snapshot_prefix, 0, ".tempfile")
            try:
                with open(probe, "w"):
                    pass
                os.remove(probe)
            except OSError:
                raise ConfigError(
                    f"{where}: Cannot write to snapshot prefix '{p.snapshot_prefix}'. Make sure that the directory "
                    "exists and is writeable."
                ) from None

    def _file(self, path: str, field: str) -> str:
        if not os.path.isfile(path):
            hint = ""
            if self.source != "<solver>" and not os.path.isabs(path):
                beside = Path(self.source).parent / path
                if beside.is_file():
                    hint = (f"; it exists relative to the solver file ({beside}): run from there or give an "
                            "absolute path")
            raise ConfigError(
                f"{self.source}: {field}: '{path}' not found (relative paths are resolved from the current directory "
                f"{os.getcwd()}, as Caffe does){hint}"
            )
        return path

    def _make_net(self, spec, phase: int, extra_state) -> Net:
        """spec: a file path or a NetParameter; the state merges phase < net's state < extra_state."""
        param = prototxt.read_net(spec) if isinstance(spec, str) else spec
        state = caffe_pb2.NetState(phase=phase)
        state.MergeFrom(param.state)
        if extra_state is not None:
            state.MergeFrom(extra_state)
        net = Net(spec, state=state, device=self.device, python_layers=self.python_layers)
        for entry in self.param.weights:
            for name in (w.strip() for w in entry.split(",")):
                if name:
                    log.info("Finetuning from %s", name)
                    net.copy_from(self._file(name, "weights"))
        return net

    def _init_train_net(self) -> Net:
        p = self.param
        given = [f for f in _TRAIN_FIELDS if p.HasField(f)]
        if not given:
            raise ConfigError(f"{self.source}: SolverParameter must specify a train net using one of these fields: "
                              f"{', '.join(_TRAIN_FIELDS)}")
        if len(given) > 1:
            raise ConfigError(f"{self.source}: SolverParameter must not contain more than one of these fields "
                              f"specifying a train_net: {', '.join(_TRAIN_FIELDS)} (found {', '.join(given)})")
        field = given[0]
        if field in ("net", "train_net"):
            spec = self._file(getattr(p, field), field)
            log.info("Creating training net from %s file: %s", field, spec)
        else:
            spec = getattr(p, field)
            log.info("Creating training net specified in %s.", field)
        return self._make_net(spec, caffe_pb2.TRAIN, p.train_state)

    def _init_test_nets(self) -> list[Net]:
        p = self.param
        generic = p.HasField("net_param") + p.HasField("net")
        if generic > 1:
            raise ConfigError(f"{self.source}: Both net_param and net_file may not be specified.")
        n_specific = len(p.test_net_param) + len(p.test_net)
        if (generic and len(p.test_iter) < n_specific) or (not generic and len(p.test_iter) != n_specific):
            raise ConfigError(f"{self.source}: test_iter must be specified for each test network "
                              f"({n_specific} test nets, {len(p.test_iter)} test_iter)")
        n = max(len(p.test_iter), n_specific)
        if p.test_state and len(p.test_state) != n:
            raise ConfigError(f"{self.source}: test_state must be unspecified or specified once per test net "
                              f"({n} test nets, {len(p.test_state)} test_state)")
        if n and p.test_interval <= 0:
            raise ConfigError(f"{self.source}: test_interval must be > 0 when there are test nets "
                              f"(test_iter is given {len(p.test_iter)} times)")
        specs = [(tp, "test_net_param") for tp in p.test_net_param]
        specs += [(self._file(f, "test_net"), f"test_net file: {f}") for f in p.test_net]
        rest = len(p.test_iter) - len(specs)
        if p.HasField("net_param"):
            specs += [(p.net_param, "net_param")] * rest
        elif p.HasField("net"):
            specs += [(self._file(p.net, "net"), f"net file: {p.net}")] * rest
        nets = []
        for i, (spec, what) in enumerate(specs):
            log.info("Creating test net (#%d) specified by %s", i, what)
            net = self._make_net(spec, caffe_pb2.TEST, p.test_state[i] if p.test_state else None)
            net.share_with(self.net)
            nets.append(net)
        return nets

    # ------------------------------------------------------------ training
    def _grads(self) -> list:
        """Every learnable parameter's gradient tensor (Caffe's diff), created as zeros if
        missing (``lr_mult: 0`` parameters get one too: decay and the rule run on all)."""
        with torch.no_grad():
            for q in self.params:
                if q.grad is None:
                    q.grad = torch.zeros_like(q)
        return [q.grad for q in self.params]

    def set_action_function(self, func) -> None:
        """``func() -> "none" | "stop" | "snapshot"``, polled between iterations (signals)."""
        self.action_function = func

    def _requested_action(self) -> str:
        return self.action_function() if self.action_function else NONE

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (Caffe's ``Solver::Step``)."""
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self._losses, self.smoothed_loss = [], 0.0
        timer, iterations_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            torch._foreach_zero_(self._grads())
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break
            display = p.display and self.iter % p.display == 0
            loss = np.float32(0)
            for _ in range(p.iter_size):
                one = self.net.forward_backward()
                if not math.isfinite(one) and not self.allow_nonfinite:  # the only hot-path cost
                    raise numeric.loss_error(self.net, self.iter, one, self.last_snapshot)
                loss += np.float32(one)
            loss /= np.float32(p.iter_size)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            record = None
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iterations_last) / (lapse if lapse else 1)
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, num(per_s), num(lapse),
                         p.display, num(self.smoothed_loss))
                timer, iterations_last = time.perf_counter(), self.iter
                record = {"phase": "train", "iteration": self.iter, "loss": float(self.smoothed_loss),
                          "outputs": self._log_outputs(self.net, "Train", None)}
            self.apply_update()
            if record is not None:
                record["lr"] = self.learning_rate
                self._metric(record)
            self.iter += 1
            request = self._requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _update_smoothed_loss(self, loss, start_iter: int, average_loss: int) -> None:
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            n = len(self._losses)
            self.smoothed_loss = (np.float32(self.smoothed_loss) * np.float32(n - 1) + loss) / np.float32(n)
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss = np.float32(self.smoothed_loss) + (loss - self._losses[idx]) / np.float32(average_loss)
            self._losses[idx] = loss

    def _log_outputs(self, net: Net, kind: str, values) -> dict:
        """Caffe's ``    Train/Test net output #k: name = v (* w = l loss)`` lines; returns {name: value(s)}."""
        weights = dict(net._loss_tops)
        k, out = 0, {}
        for name in sorted(net.outputs):  # Caffe's outputs come out of a std::set: by name
            vec = np.ravel(net.blobs[name].data if values is None else values[name])
            w = weights.get(name, 0.0)
            for v in vec:
                extra = f" (* {num(w)} = {num(np.float32(w) * np.float32(v))} loss)" if w else ""
                log.info("    %s net output #%d: %s = %s%s", kind, k, name, num(v), extra)
                k += 1
            out[name] = float(vec[0]) if vec.size == 1 else [float(v) for v in vec]
        return out

    def apply_update(self) -> None:
        """Caffe's ``ApplyUpdate``: the rate for this iteration (logged on display
        iterations), then clip / normalize / regularize / rule / w -= g."""
        p = self.param
        old_step = self.current_step
        rate, self.current_step = lr_policies.learning_rate(p, self.iter, self.current_step, self.source)
        if p.lr_policy == "multistep" and self.current_step != old_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, self.current_step)
        self.learning_rate = rate
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, num(rate))
        scaler = getattr(self, "loss_scaler", None)  # fp16 (pipeline.fastpath): divide the loss scale out
        if scaler is not None and not scaler.unscale_(self._grads()):
            log.warning("Iteration %d: fp16 gradients overflowed; update skipped, loss scale now %g", self.iter,
                        scaler.scale)
            return
        norm = rules.apply_update(
            self.rule, self.params, self._grads(), self.history, rate=rate,
            lr_mults=self.net.lr_mults, decay_mults=self.net.decay_mults, weight_decay=p.weight_decay,
            regularization_type=p.regularization_type, clip=p.clip_gradients, iter_size=p.iter_size,
            hyper=self.rule.hyperparameters(p, self.iter),
        )
        if norm is not None:
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s", num(norm),
                     num(p.clip_gradients), num(p.clip_gradients / norm))
        self.net._host.forget()

    def solve(self, resume_file=None) -> None:
        """Train to ``max_iter`` (Caffe's ``Solver::Solve``), resuming from ``resume_file`` if given."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        self._t0 = time.time()
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            self.net.forward()
            loss = np.float32(float(self.net.loss().detach()))
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, num(self.smoothed_loss))
            self._metric({"phase": "train", "iteration": self.iter, "loss": float(self.smoothed_loss)})
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    # ------------------------------------------------------------- testing
    def test_all(self) -> None:
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id: int = 0) -> dict:
        """Mean of every test net output over ``test_iter`` batches (Caffe's ``Solver::Test``)."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        n_iter = p.test_iter[test_net_id]
        sums: dict = {}
        loss = np.float32(0)
        for _ in range(n_iter):
            request = self._requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                break
            result = net.forward()
            if p.test_compute_loss:
                loss += np.float32(float(net.loss().detach()))
            for name in sorted(net.outputs):
                v = np.ravel(result[name]).astype(np.float32)
                sums[name] = sums[name] + v if name in sums else v.copy()
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return {}
        record = {"phase": "test", "net": test_net_id, "iteration": self.iter}
        if p.test_compute_loss:
            loss /= np.float32(n_iter)
            log.info("Test loss: %s", num(loss))
            record["loss"] = float(loss)
        means = {k: v / np.float32(n_iter) for k, v in sums.items()}
        record["outputs"] = self._log_outputs(net, "Test", means) if means else {}
        self._metric(record)
        return record["outputs"]

    # ------------------------------------------------------ snapshot/restore
    def snapshot(self) -> tuple[str, str]:
        """Write the net and the solver state (Caffe's names); returns their paths.

        Each file is written atomically, the ``.pipeline`` sidecar before the state,
        so the ``.solverstate`` appearing is what completes a snapshot: a process
        killed part-way leaves only temporary files or an orphan ``.caffemodel``,
        never a state that resumes from half a snapshot. Non-finite parameters are
        never written (NumericError); a failed write (disk full) removes what this
        snapshot wrote and raises WriteError saying which snapshot is still intact.
        """
        p = self.param
        if not self.allow_nonfinite:
            numeric.check_params(self.net, self.iter, self.last_snapshot)
        h5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        prefix = p.snapshot_prefix
        ext, kind = ((".caffemodel.h5", ".solverstate.h5"), "HDF5 file") if h5 else \
            ((".caffemodel", ".solverstate"), "binary proto file")
        model = snap.snapshot_filename(prefix, self.iter, ext[0])
        state = snap.snapshot_filename(prefix, self.iter, ext[1])
        written = []
        try:
            log.info("Snapshotting to %s %s", kind, model)
            _save(self.net, model, h5, p.snapshot_diff)
            written.append(model)
            snap.write_sidecar(snap.sidecar_path(state), self.iter, self.net, self.test_nets,
                               cuda=self.device.type == "cuda")
            written.append(snap.sidecar_path(state))
            log.info("Snapshotting solver state to %s %s", kind, state)
            snap.write_state(state, self.iter, model, self.current_step,
                             [h.detach().cpu().numpy() for h in self.history], hdf5_format=h5)
        except OSError as e:
            for f in written:
                with contextlib.suppress(OSError):
                    os.remove(f)
            kept = (f"the previous snapshot {self.last_snapshot} is intact (resume with --snapshot "
                    f"{self.last_snapshot})" if self.last_snapshot else "no earlier snapshot was written")
            raise WriteError(f"iteration {self.iter}: cannot write snapshot {state} ({e.strerror or e}); "
                             f"nothing of it was kept and {kept}") from None
        self.last_snapshot = state
        return model, state

    def restore(self, state_file) -> None:
        """Resume from a ``.solverstate`` (or ``.solverstate.h5``): iter, current_step,
        history and the learned net; plus generator states and data positions from
        the ``.pipeline`` sidecar when there is one. A path that is not a file but a
        snapshot prefix resumes from that prefix's newest complete snapshot."""
        path = snap.resolve_resume(str(state_file))
        st = snap.read_state(path)
        self.iter = int(st["iter"])
        learned = st["learned_net"]
        if learned:
            if not os.path.isfile(learned):
                beside = Path(path).parent / Path(learned).name
                if not beside.is_file():
                    raise ConfigError(f"{path}: learned_net '{learned}' not found (nor {beside})")
                learned = str(beside)
            self.net.copy_from(learned)
        self.current_step = int(st["current_step"])
        names = list(self.net.learnable_names)
        snap.fit_history(st["history"], self.history, names, path)
        side = snap.sidecar_path(path)
        if snap.existing(side):
            data = snap.read_sidecar(side)
            if data["meta"].get("iter") != self.iter:
                log.warning("%s is for iteration %s, the state for %d; ignoring it", side,
                            data["meta"].get("iter"), self.iter)
            else:
                moved = snap.restore_sidecar(data, self.net, self.test_nets)
                log.info("Restored random generator states%s from %s",
                         f" and data positions ({', '.join(moved)})" if moved else "", side)
        for net in self.test_nets:
            net.share_with(self.net)
        self.last_snapshot = path

    # ------------------------------------------------------------- metrics
    def _metric(self, record: dict) -> None:
        if not self.metrics_path:
            return
        record["time"] = round(time.time() - self._t0, 6)
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            log.warning("cannot write metrics to %s (%s); metrics are off", self.metrics_path, e)
            self.metrics_path = None

    def __repr__(self):
        return f"<{type(self).__name__} type={self.rule.type} iter={self.iter} net='{self.net.name}'>"


def _save(net: Net, path: str, hdf5: bool, diff: bool) -> None:
    from .. import weights

    (weights.save_hdf5 if hdf5 else weights.save)(net, path, write_diff=diff)


class SGDSolver(Solver):
    type = "SGD"


class NesterovSolver(Solver):
    type = "Nesterov"


class AdaGradSolver(Solver):
    type = "AdaGrad"


class RMSPropSolver(Solver):
    type = "RMSProp"


class AdaDeltaSolver(Solver):
    type = "AdaDelta"


class AdamSolver(Solver):
    type = "Adam"


CLASSES = {c.type: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver)}


def get_solver(param, device=None, weights=(), source=None, **kwargs) -> Solver:
    """pycaffe's ``caffe.get_solver``: the solver class named by the file's ``type``.

    ``param``: a solver prototxt path or a ``SolverParameter`` (``source``: its file
    name for messages)."""
    if not isinstance(param, caffe_pb2.SolverParameter):
        source, param = str(param), read_solver_file(param)
    kind = param.type or "SGD"
    SOLVERS.get(kind, where=f"{source or '<solver>'}: type")  # a miss lists the known types
    return CLASSES[kind](param, device=device, weights=weights, source=source, **kwargs)


__all__ = [
    "Solver", "get_solver", "read_solver_file", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
    "AdaDeltaSolver", "AdamSolver",
]
