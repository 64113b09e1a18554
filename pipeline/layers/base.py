"""The layer contract every registered layer follows.

A layer is a ``torch.nn.Module`` registered under Caffe's type string. Its life,
as in Caffe's ``Layer`` (LayerSetUp / Reshape / Forward), is:

1. ``from_param(param, phase)`` - read the ``caffe_pb2.LayerParameter`` into plain
   constructor arguments. ``__init__`` takes only plain Python values, so a layer
   can be built and tested without protobuf.
2. The net sets ``num_bottoms`` / ``num_tops`` (how many blobs are wired) and calls
   ``check_arity()``.
3. ``setup(bottom_shapes)`` - once: create the learnable blobs whose shapes depend
   on the inputs, appended to ``self.blobs`` in Caffe's order (weight, then bias),
   so ``.caffemodel`` blobs load by position. Fillers come from
   ``pipeline.fillers``.
4. ``reshape(bottom_shapes) -> top_shapes`` - validate the input shapes (raise
   ``ShapeError`` / ``ConfigError`` naming the layer and the rule) and return the
   output shapes. Called at build time and whenever input shapes change, so bad
   shapes fail before any data flows.
5. ``forward(*bottoms)`` - torch ops on tensors (N, C, H, W, ...); returns one tensor
   or a tuple with one tensor per top. Autograd supplies Caffe's Backward; a
   hand-written ``torch.autograd.Function`` is allowed only with a gradient-check
   test beside it.

Shapes are tuples of ints; a loss's top has shape ``()`` (a scalar).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

Shape = tuple  # tuple[int, ...]


class Blobs(nn.ParameterList):
    """``nn.ParameterList`` with a direct path for ``blobs[i]`` (i >= 0): layers read their
    blobs on every forward, and the generic lookup costs several microseconds."""

    def __getitem__(self, idx):
        if type(idx) is int and idx >= 0:
            p = self._parameters.get(str(idx))
            if p is not None:
                return p
        return super().__getitem__(idx)


class Layer(nn.Module):
    """Base class of all layers.

    Class attributes (arity, checked by ``check_arity``):
        type: Caffe's type string, the registry key.
        exact_bottoms / min_bottoms / max_bottoms: allowed number of bottom blobs
            (None means no bound).
        exact_tops / min_tops / max_tops: the same for top blobs.
        is_loss: a loss layer; its first top gets loss_weight 1 by default.

    Attributes:
        name: the layer's name in the prototxt.
        phase: ``TRAIN`` (0) or ``TEST`` (1).
        blobs: ``nn.ParameterList`` of learnable blobs, Caffe's order.
        num_bottoms, num_tops: set by the net before ``setup``.
    """

    type = ""
    exact_bottoms: int | None = None
    min_bottoms: int | None = None
    max_bottoms: int | None = None
    exact_tops: int | None = None
    min_tops: int | None = None
    max_tops: int | None = None
    is_loss = False

    def __init__(self, name: str = "", phase: int = TRAIN):
        super().__init__()
        self.name = name
        self.phase = phase
        self.blobs = Blobs()
        self.num_bottoms = 0
        self.num_tops = 0

    # -- construction -------------------------------------------------------
    @classmethod
    def from_param(cls, param, phase: int = TRAIN) -> "Layer":
        """Build from a ``LayerParameter``; subclasses read their ``*_param``."""
        return cls(name=param.name, phase=phase)

    def check_arity(self) -> None:
        """Raise ConfigError when the wired bottom/top counts break the declared arity."""
        for what, n, exact, lo, hi in (
            ("bottom", self.num_bottoms, self.exact_bottoms, self.min_bottoms, self.max_bottoms),
            ("top", self.num_tops, self.exact_tops, self.min_tops, self.max_tops),
        ):
            if exact is not None and n != exact:
                raise ConfigError(
                    f"{self.type} layer '{self.name}' takes {exact} {what} blob(s), got {n}"
                )
            if lo is not None and n < lo:
                raise ConfigError(
                    f"{self.type} layer '{self.name}' takes at least {lo} {what} blob(s), got {n}"
                )
            if hi is not None and n > hi:
                raise ConfigError(
                    f"{self.type} layer '{self.name}' takes at most {hi} {what} blob(s), got {n}"
                )

    def setup(self, bottom_shapes: list[Shape]) -> None:
        """Create learnable blobs from the input shapes (default: none)."""

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        """Validate inputs and return the top shapes (default: same as bottom 0)."""
        return [tuple(bottom_shapes[0])] * max(self.num_tops, 1)

    def forward(self, *bottoms: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.forward")

    # -- helpers for subclasses ---------------------------------------------
    def fail(self, message: str, error=ShapeError):
        """Raise ``error`` with the layer's type and name in front of ``message``."""
        raise error(f"{self.type} layer '{self.name}': {message}")

    def add_blob(self, tensor: torch.Tensor) -> nn.Parameter:
        """Append a learnable blob (Caffe order) and return it."""
        p = nn.Parameter(tensor)
        self.blobs.append(p)
        return p

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def canonical_axis(axis: int, ndim: int, layer: Layer | None = None, field: str = "axis") -> int:
    """Caffe's ``CanonicalAxisIndex``: negative axes count from the end."""
    if not -ndim <= axis < max(ndim, 1):
        msg = f"{field}={axis} is out of range for a {ndim}-axis blob"
        if layer is not None:
            layer.fail(msg, ConfigError)
        raise ConfigError(msg)
    return axis + ndim if axis < 0 else axis


def count(shape, start: int = 0, end: int | None = None) -> int:
    """Product of ``shape[start:end]`` (1 for an empty range).

    Symbolic sizes (``torch.export``'s SymInt, ``jit.trace``'s traced sizes) stay
    symbolic, so an exported graph keeps its batch axis dynamic (``pipeline.export``).
    """
    n = 1
    for d in tuple(shape)[start:end]:
        n *= d if isinstance(d, (torch.SymInt, torch.Tensor)) else int(d)
    return n
