"""Solver snapshots in Caffe's files, plus the sidecar that makes resuming exact.

Caffe writes, after ``N`` updates (``Solver::Snapshot``)::

    <snapshot_prefix>_iter_N.caffemodel       the train net (binary NetParameter)
    <snapshot_prefix>_iter_N.solverstate      SolverState: iter, learned_net (the
                                              .caffemodel path), current_step, and
                                              history: one BlobProto (shape + data)
                                              per learnable parameter per history slot,
                                              in ``net.learnable_params`` order
                                              (AdaDelta/Adam: 2 x params, moments last)

or ``.caffemodel.h5`` / ``.solverstate.h5`` with ``snapshot_format: HDF5``
(``/iter``, ``/learned_net``, ``/current_step``, ``/history/<i>``).

What Caffe does not save, and an exact resume needs, goes into a **sidecar** file
``<solverstate path>.pipeline`` (an ``.npz`` archive; Caffe never reads it, and a
state without one still resumes as in Caffe): the torch CPU (and CUDA) generator
states, numpy's and Python's global generator states, and the read position of
every data layer that offers ``get_position()`` / ``set_position(value)``. A
position must be JSON data (dicts, lists, numbers, strings; numpy scalars and
arrays are stored as plain numbers and lists).

Every file is written atomically and ``Solver.snapshot`` writes the state last, so a
``.solverstate`` under its final name means a whole snapshot; ``newest_complete``
and ``resolve_resume`` find the newest one of a prefix that reads back (``pipeline
train --snapshot <prefix>``), skipping any damaged later.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import ParseError, ShapeError
from ..formats import binary, hdf5
from ..formats.atomic import atomic_write_bytes
from ..formats.blob import array_to_blobproto, blobproto_to_array
from ..proto import caffe_pb2

log = logging.getLogger("pipeline.solver")

SIDECAR_SUFFIX = ".pipeline"
SIDECAR_FORMAT = 1


def snapshot_filename(prefix: str, it: int, extension: str) -> str:
    """``<prefix>_iter_<it><extension>`` (Caffe's ``SnapshotFilename``)."""
    return f"{prefix}_iter_{it}{extension}"


# ------------------------------------------------------------- solver state
def write_state(path, it: int, learned_net: str, current_step: int, history, hdf5_format: bool = False) -> None:
    """Write a SolverState (binary or HDF5), atomically. ``history``: float32 arrays."""
    arrays = [np.asarray(h, np.float32) for h in history]
    if hdf5_format:
        hdf5.write_solver_state(path, it, learned_net, arrays, current_step)
        return
    state = caffe_pb2.SolverState()
    state.iter = int(it)
    state.learned_net = learned_net
    state.current_step = int(current_step)
    for a in arrays:
        state.history.add().CopyFrom(array_to_blobproto(a))
    binary.write_solverstate(state, path)


def read_state(path) -> dict:
    """Read a ``.solverstate`` (or ``.solverstate.h5``, chosen by the ``.h5`` ending as
    Caffe does): dict with iter, learned_net (None when absent), current_step, history."""
    path = str(path)
    if path.endswith(".h5"):
        st = hdf5.read_solver_state(path)
        st["learned_net"] = st["learned_net"] or None
        return st
    state = binary.read_solverstate(path)
    return {
        "iter": state.iter,
        "learned_net": state.learned_net if state.HasField("learned_net") and state.learned_net else None,
        "current_step": state.current_step,
        "history": [blobproto_to_array(b, what=f"{path}: history[{i}]") for i, b in enumerate(state.history)],
    }


def fit_history(arrays, tensors, names, path) -> None:
    """Copy state arrays into the history tensors; counts must agree (a legacy 4-d
    shape of the same count is accepted, as Caffe's count-based updates accept it)."""
    if len(arrays) != len(tensors):
        raise ShapeError(
            f"{path}: Incorrect length of history blobs: the state has {len(arrays)}, this solver needs "
            f"{len(tensors)} ({len(names)} learnable parameters x {len(tensors) // max(len(names), 1)})"
        )
    with torch.no_grad():
        for i, (a, t) in enumerate(zip(arrays, tensors)):
            if a.size != t.numel():
                name = names[i % len(names)] if names else f"#{i}"
                raise ShapeError(
                    f"{path}: history[{i}] (parameter {name}) has shape {tuple(a.shape)}, the net's parameter "
                    f"has shape {tuple(t.shape)}"
                )
            t.copy_(torch.from_numpy(np.ascontiguousarray(a, np.float32)).reshape(t.shape))


# ---------------------------------------------------------------- sidecar
def sidecar_path(state_path) -> str:
    return str(state_path) + SIDECAR_SUFFIX


def _plain(x):
    """numpy values -> JSON values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _positions(net) -> dict:
    return {
        name: _plain(layer.get_position())
        for name, layer in zip(net._layer_names, net.module)
        if callable(getattr(layer, "get_position", None))
    }


def _set_positions(net, positions: dict) -> list[str]:
    done = []
    for name, layer in zip(net._layer_names, net.module):
        if name in positions and callable(getattr(layer, "set_position", None)):
            layer.set_position(positions[name])
            done.append(name)
    return done


def write_sidecar(path, it: int, train_net, test_nets, cuda: bool) -> None:
    """Generator states and data positions beside a solver state, atomically."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "format": SIDECAR_FORMAT,
        "iter": int(it),
        "numpy": {"kind": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "gauss_next": py_state[2]},
        "positions": {"train": _positions(train_net), "test": [_positions(n) for n in test_nets]},
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
        "torch": torch.get_rng_state().numpy(),
        "numpy_keys": np.asarray(np_state[1], np.uint32),
        "python_state": np.asarray(py_state[1], np.uint64),
    }
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"cuda_{i}"] = s.numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_sidecar(path) -> dict:
    """The sidecar's contents (raises ParseError naming the file if unreadable)."""
    try:
        with np.load(str(path), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode("utf-8"))
    except (OSError, ValueError, KeyError) as e:
        raise ParseError(path, f"not a pipeline solver sidecar ({e})") from None
    if meta.get("format") != SIDECAR_FORMAT:
        raise ParseError(path, f"sidecar format {meta.get('format')!r}, expected {SIDECAR_FORMAT}")
    data["meta"] = meta
    return data


def restore_sidecar(data: dict, train_net, test_nets) -> list[str]:
    """Put generator states and data positions back; returns the layers repositioned."""
    meta = data["meta"]
    torch.set_rng_state(torch.from_numpy(np.ascontiguousarray(data["torch"])))
    cuda = sorted((k for k in data if k.startswith("cuda_")), key=lambda k: int(k[5:]))
    if cuda and torch.cuda.is_available():
        states = [torch.from_numpy(np.ascontiguousarray(data[k])) for k in cuda]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    n = meta["numpy"]
    np.random.set_state((n["kind"], data["numpy_keys"].astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(int(v) for v in data["python_state"]), p["gauss_next"]))
    pos = meta.get("positions", {})
    done = [f"train net: {n}" for n in _set_positions(train_net, pos.get("train", {}))]
    for i, (net, positions) in enumerate(zip(test_nets, pos.get("test", []))):
        done += [f"test net #{i}: {n}" for n in _set_positions(net, positions)]
    return done


def existing(path) -> bool:
    return Path(path).is_file()


# ------------------------------------------------------- finding a snapshot
_STATE_ENDINGS = (".solverstate", ".solverstate.h5")


def snapshot_iters(prefix: str) -> list[tuple[int, str]]:
    """``(iter, state path)`` for every ``<prefix>_iter_N.solverstate[.h5]``, newest first.

    Temporary files from an interrupted write (``.<name>.XXXX.tmp``) never match.
    """
    base = Path(prefix)
    parent = base.parent if str(base.parent) else Path(".")
    stem = base.name + "_iter_"
    found = []
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    for name in names:
        if not name.startswith(stem):
            continue
        for ending in _STATE_ENDINGS:
            digits = name[len(stem): -len(ending)]
            if name.endswith(ending) and digits.isdigit():
                found.append((int(digits), str(parent / name)))
    return sorted(found, reverse=True)


def check_complete(state_path) -> None:
    """Raise ParseError/ShapeError unless ``state_path`` and the net it names read back whole."""
    st = read_state(state_path)
    learned = st["learned_net"]
    if learned:
        if not os.path.isfile(learned):
            beside = Path(state_path).parent / Path(learned).name
            if not beside.is_file():
                raise ParseError(state_path, f"its learned_net '{learned}' does not exist")
            learned = str(beside)
        if learned.endswith(".h5"):
            hdf5.read_weights(learned)
        else:
            binary.read_caffemodel(learned, upgrade=False)


def newest_complete(prefix: str) -> str | None:
    """The newest snapshot of ``prefix`` whose state and net both read back; None if none.

    Writes are atomic, so an interrupted snapshot leaves no file under a final name;
    this also skips states damaged later (or whose ``.caffemodel`` was deleted),
    logging why, so that resuming from a prefix always takes a whole snapshot.
    """
    for it, path in snapshot_iters(prefix):
        try:
            check_complete(path)
        except (ParseError, ShapeError) as e:
            log.warning("skipping snapshot %s (iteration %d): %s", path, it, e)
            continue
        return path
    return None


def resolve_resume(path: str) -> str:
    """A ``--snapshot`` argument: a solver state file, or a snapshot prefix meaning its
    newest complete snapshot. Raises ParseError when neither exists."""
    path = str(path)
    if os.path.exists(path) or path.endswith(_STATE_ENDINGS):
        return path
    found = newest_complete(path)
    if found is None:
        raise ParseError(path, "no such solver state, and no complete snapshot "
                               f"'{path}_iter_N.solverstate' with this prefix")
    log.info("Newest complete snapshot of prefix %s: %s", path, found)
    return found
