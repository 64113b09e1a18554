"""pycaffe's process-wide mode (``set_mode_cpu/gpu``, ``set_device``, ``set_random_seed``).

Library code takes a device explicitly (``Net(..., device=...)``); this module only
supplies the default that pycaffe scripts expect from ``caffe.set_mode_gpu()``.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import ConfigError

_state = {"gpu": False, "device_id": 0}


def set_mode_cpu() -> None:
    _state["gpu"] = False


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        raise ConfigError("set_mode_gpu: no CUDA device is available (torch.cuda.is_available() is False)")
    _state["gpu"] = True


def set_device(device_id: int) -> None:
    if torch.cuda.is_available() and not 0 <= device_id < torch.cuda.device_count():
        raise ConfigError(f"set_device({device_id}): only {torch.cuda.device_count()} CUDA device(s)")
    _state["device_id"] = int(device_id)


def set_random_seed(seed: int) -> None:
    """Seed every generator the pipeline draws from (torch, numpy, random)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def default_device() -> torch.device:
    """cuda:<device_id> after set_mode_gpu(), else cpu."""
    return torch.device(f"cuda:{_state['device_id']}") if _state["gpu"] else torch.device("cpu")


def resolve_device(device) -> torch.device:
    """``None`` -> the pycaffe mode's device; strings/ints/devices -> torch.device."""
    if device is None:
        return default_device()
    if isinstance(device, int):
        return torch.device(f"cuda:{device}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {dev} requested but CUDA is not available")
    return dev
