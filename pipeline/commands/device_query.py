"""``pipeline device_query``: what this machine offers, as ``caffe device_query`` reports it.

    pipeline device_query [--gpu N|N,M|all]

Caffe's command prints ``Caffe::DeviceQuery()`` for each GPU named by ``--gpu``
(src/caffe/common.cpp). We print the CPU first (model, cores, memory, torch's
threads and vector capability) — the CPU is a device here too — then, when CUDA is
available, Caffe's fields for every GPU named by ``--gpu`` (every GPU when the flag
is absent, where Caffe queries none). Only the fields torch exposes are printed:
``cudaDeviceProp`` entries torch does not read (memory pitch, texture alignment,
grid and block limits, kernel timeout, ...) are left out, and a few torch does read
that Caffe did not print (free memory, L2 cache, threads per multiprocessor) are
added. A GPU id this machine does not have is a one-line error and exit status 1.
"""

from __future__ import annotations

import logging
import os
import platform

import torch

from .common import glog_to_stderr
from .devices import cuda_count, parse_gpus
from .flags import Parser

_LOG = logging.getLogger("pipeline.device_query")

_LABEL_WIDTH = 31  # Caffe pads "Name:" etc. to the width of "Total shared memory per block: "


def _line(label: str, value) -> str:
    return f"{label + ':':<{_LABEL_WIDTH}}{value}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for text in f:
                if text.startswith("model name"):
                    return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for text in f:
                if text.startswith("MemTotal:"):
                    return int(text.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_lines() -> list[str]:
    """The CPU's description, one ``label: value`` per line."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    mem = _memory_bytes()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = "unknown"
    lines = [
        _line("CPU", _cpu_model()),
        _line("Architecture", platform.machine()),
        _line("Logical cores", f"{os.cpu_count()} ({usable} usable by this process)"),
    ]
    if mem is not None:
        lines.append(_line("Total memory", f"{mem} ({mem / 2**30:.1f} GiB)"))
    lines += [
        _line("torch", f"{torch.__version__}, {torch.get_num_threads()} threads, CPU capability {capability}"),
    ]
    return lines


def gpu_lines(device_id: int) -> list[str]:
    """Caffe's ``DeviceQuery`` fields for one CUDA device, as far as torch exposes them."""
    prop = torch.cuda.get_device_properties(device_id)
    lines = [
        _line("Device id", device_id),
        _line("Major revision number", prop.major),
        _line("Minor revision number", prop.minor),
        _line("Name", prop.name),
        _line("Total global memory", prop.total_memory),
    ]
    optional = [
        ("Total shared memory per block", "shared_memory_per_block"),
        ("Total registers per block", "regs_per_block"),
        ("Warp size", "warp_size"),
        ("Maximum threads per block", "max_threads_per_block"),
        ("Clock rate", "clock_rate"),
    ]
    for label, attr in optional:
        value = getattr(prop, attr, None)
        if value is not None:
            lines.append(_line(label, value))
    lines.append(_line("Number of multiprocessors", prop.multi_processor_count))
    extras = [
        ("Max threads per multiprocessor", "max_threads_per_multi_processor"),
        ("L2 cache size", "L2_cache_size"),
    ]
    for label, attr in extras:
        value = getattr(prop, attr, None)
        if value is not None:
            lines.append(_line(label, value))
    try:
        free, _ = torch.cuda.mem_get_info(device_id)
        lines.append(_line("Free global memory", free))
    except RuntimeError:
        pass
    return lines


def device_query(argv) -> int:
    """``pipeline device_query``: returns 0 after logging the devices."""
    p = Parser(prog="pipeline device_query", description="Show the CPU and GPU diagnostic information.")
    p.add_argument("--gpu", default="", help="Optional; GPU ids separated by ',' or 'all' (default: every GPU).")
    a = p.parse_args(argv)
    gpus = parse_gpus(a.gpu)  # a missing id fails here, before anything is printed
    with glog_to_stderr():
        for text in query_lines(gpus, a.gpu):
            _LOG.info(text)
    return 0


def query_lines(gpus: list[int], flag: str = "") -> list[str]:
    """Everything ``device_query`` reports: the CPU, then each GPU in ``gpus`` (all when empty)."""
    lines = [f"Querying GPUs {flag}" if flag else "Querying devices"] + cpu_lines()
    n = cuda_count()
    if n == 0:
        return lines + [_line("CUDA", "not available (torch.cuda.is_available() is False)")]
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    lines.append(_line("CUDA", f"{torch.version.cuda}, cuDNN {cudnn}, {n} device(s)"))
    for i in gpus or range(n):
        lines += gpu_lines(i)
    return lines
