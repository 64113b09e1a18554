"""Caffe's weight fillers (``include/caffe/filler.hpp``).

Formulas (n is the fan chosen by ``variance_norm``: fan_in = count / shape[0],
fan_out = count / shape[1], AVERAGE = (fan_in + fan_out) / 2):

- constant:           w = value (default 0: an unspecified filler gives zeros)
- uniform:            w ~ U(min, max)
- gaussian:           w ~ N(mean, std); with ``sparse`` >= 0 each weight is kept with
                      probability sparse / shape[0] and zeroed otherwise
- positive_unitball:  w ~ U(0, 1), then each of the shape[0] rows scaled to sum 1
- xavier:             w ~ U(-sqrt(3 / n), +sqrt(3 / n))
- msra:               w ~ N(0, sqrt(2 / n))
- bilinear:           4-d square kernels: f = ceil(K / 2), c = (K - 1) / (2 f),
                      w[..., y, x] = (1 - |x / f - c|) * (1 - |y / f - c|)

Random draws use torch's global generator (seeded by ``caffe.set_random_seed`` or
the solver's ``random_seed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .proto import caffe_pb2
from .registry import FILLERS

_VARIANCE_NORMS = {0: "FAN_IN", 1: "FAN_OUT", 2: "AVERAGE"}


@dataclass(frozen=True)
class Filler:
    """A filler spec with Caffe's defaults (plain values, no protobuf)."""

    type: str = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    sparse: int = -1
    variance_norm: str = "FAN_IN"

    @classmethod
    def from_param(cls, fp) -> "Filler":
        """From a ``caffe_pb2.FillerParameter``."""
        return cls(
            type=fp.type,
            value=fp.value,
            min=fp.min,
            max=fp.max,
            mean=fp.mean,
            std=fp.std,
            sparse=fp.sparse,
            variance_norm=_VARIANCE_NORMS[fp.variance_norm],
        )

    @classmethod
    def coerce(cls, spec, default: "Filler | None" = None) -> "Filler":
        """Accept None (-> default or constant 0), a dict, a FillerParameter or a Filler."""
        if spec is None:
            return default if default is not None else cls()
        if isinstance(spec, Filler):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        if isinstance(spec, caffe_pb2.FillerParameter):
            return cls.from_param(spec)
        raise ConfigError(f"cannot use {spec!r} as a filler")


def filler_or_default(param, field: str, default: Filler | None = None) -> Filler:
    """The filler in ``param.<field>`` if set, else ``default`` (constant 0 by default)."""
    if param.HasField(field):
        return Filler.from_param(getattr(param, field))
    return default if default is not None else Filler()


def _fans(shape) -> tuple[int, int]:
    count = math.prod(shape) if shape else 1
    fan_in = count // shape[0] if shape else 1
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _norm_fan(f: Filler, shape) -> float:
    fan_in, fan_out = _fans(shape)
    if f.variance_norm == "FAN_OUT":
        return float(fan_out)
    if f.variance_norm == "AVERAGE":
        return (fan_in + fan_out) / 2.0
    return float(fan_in)


@FILLERS.register("constant")
def _constant(f: Filler, shape, dtype):
    return torch.full(shape, f.value, dtype=dtype)


@FILLERS.register("uniform")
def _uniform(f: Filler, shape, dtype):
    return torch.empty(shape, dtype=dtype).uniform_(f.min, f.max)


@FILLERS.register("gaussian")
def _gaussian(f: Filler, shape, dtype):
    w = torch.empty(shape, dtype=dtype).normal_(f.mean, f.std)
    if f.sparse >= 0:
        if len(shape) < 1:
            raise ConfigError("sparse gaussian filler needs a blob with at least one axis")
        p = f.sparse / shape[0]
        w *= torch.bernoulli(torch.full(shape, p, dtype=dtype))
    return w


@FILLERS.register("positive_unitball")
def _positive_unitball(f: Filler, shape, dtype):
    w = torch.rand(shape, dtype=dtype)
    rows = w.reshape(shape[0], -1) if shape else w.reshape(1, -1)
    rows /= rows.sum(dim=1, keepdim=True)
    return w


@FILLERS.register("xavier")
def _xavier(f: Filler, shape, dtype):
    scale = math.sqrt(3.0 / _norm_fan(f, shape))
    return torch.empty(shape, dtype=dtype).uniform_(-scale, scale)


@FILLERS.register("msra")
def _msra(f: Filler, shape, dtype):
    std = math.sqrt(2.0 / _norm_fan(f, shape))
    return torch.empty(shape, dtype=dtype).normal_(0.0, std)


@FILLERS.register("bilinear")
def _bilinear(f: Filler, shape, dtype):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ConfigError(f"bilinear filler needs a 4-d blob with square kernels, got {tuple(shape)}")
    k = shape[3]
    fc = math.ceil(k / 2.0)
    c = (k - 1) / (2.0 * fc)
    ramp = 1 - torch.abs(torch.arange(k, dtype=torch.float64) / fc - c)
    kernel = (ramp[:, None] * ramp[None, :]).to(dtype)
    return kernel.expand(shape).clone()


def fill(spec, shape, dtype=torch.float32) -> torch.Tensor:
    """A new tensor of ``shape`` filled as ``spec`` (Filler, FillerParameter, dict or None) says."""
    f = Filler.coerce(spec)
    shape = tuple(int(d) for d in shape)
    return FILLERS.get(f.type)(f, shape, dtype)
