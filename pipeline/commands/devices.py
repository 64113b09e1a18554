"""Devices for the commands: Caffe's ``--gpu`` flag, the single-GPU choice and Caffe's Timer.

``parse_gpus`` is ``tools/caffe.cpp``'s ``get_gpus``: ``""`` means the CPU, ``"all"``
every CUDA device, ``"0,2"`` those ids. Unlike Caffe (which aborts inside CUDA), an id
this machine does not have is a ``ConfigError`` naming the flag and the devices there are.
"""

from __future__ import annotations

import time as _time

import torch

from ..errors import ConfigError


def cuda_count() -> int:
    """Number of CUDA devices torch sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(text: str, flag: str = "--gpu") -> list[int]:
    """``--gpu`` as Caffe reads it: '' -> [], 'all' -> [0..n-1], '0,1' -> [0, 1].

    Raises ConfigError for text that is not ids separated by ',' and for ids this
    machine does not have (or any id when CUDA is not available).
    """
    text = (text or "").strip()
    if not text:
        return []
    n = cuda_count()
    if text == "all":
        if n == 0:
            raise ConfigError(f"{flag} all: no CUDA device is available (torch.cuda.is_available() is False)")
        return list(range(n))
    ids = []
    for part in text.split(","):
        try:
            ids.append(int(part.strip()))
        except ValueError:
            raise ConfigError(
                f"{flag} {text!r}: expected device ids separated by ',' (e.g. 0 or 0,1) or 'all'"
            ) from None
    for i in ids:
        if n == 0:
            raise ConfigError(f"{flag} {text}: no CUDA device is available (torch.cuda.is_available() is False)")
        if not 0 <= i < n:
            have = ", ".join(str(d) for d in range(n))
            raise ConfigError(f"{flag} {text}: there is no CUDA device {i}; this machine has {n} ({have})")
    return ids


def single_device(gpus: list[int], log) -> torch.device:
    """The device of a single-GPU function (``caffe test``/``time``), logged as Caffe does.

    Extra ids are dropped from the end with "Not using GPU #i for single-GPU function".
    """
    gpus = list(gpus)
    while len(gpus) > 1:
        log(f"Not using GPU #{gpus.pop()} for single-GPU function")
    if not gpus:
        log("Use CPU.")
        return torch.device("cpu")
    log(f"Use GPU with device ID {gpus[0]}")
    log(f"GPU device name: {torch.cuda.get_device_name(gpus[0])}")
    torch.cuda.set_device(gpus[0])
    return torch.device(f"cuda:{gpus[0]}")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Caffe's ``Timer``: ``start()``, then ``milliseconds()`` / ``microseconds()`` stop it
    and give the time since ``start``.

    On a CUDA device it records CUDA events on the current stream and waits for the
    stop event (as Caffe's GPU timer does), so it measures the device work queued
    between the two calls; on the CPU it reads ``time.perf_counter``.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._stop = torch.cuda.Event(enable_timing=True)
        self._t0 = None
        self._elapsed_ms = 0.0
        self.running = False

    def start(self) -> None:
        if self.cuda:
            self._start.record(torch.cuda.current_stream(self.device))
        else:
            self._t0 = _time.perf_counter()
        self.running = True

    def stop(self) -> None:
        if not self.running:
            return
        if self.cuda:
            self._stop.record(torch.cuda.current_stream(self.device))
            self._stop.synchronize()
            self._elapsed_ms = self._start.elapsed_time(self._stop)
        else:
            self._elapsed_ms = (_time.perf_counter() - self._t0) * 1e3
        self.running = False

    def milliseconds(self) -> float:
        self.stop()
        return self._elapsed_ms

    def microseconds(self) -> float:
        return self.milliseconds() * 1e3
