"""Shape and routing layers: they move, copy, select or drop data, never compute on it.

Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Filter, BatchReindex, Silence.
Each follows BVLC Caffe's ``Reshape`` checks and top shapes
(``src/caffe/layers/<name>_layer.cpp``); autograd supplies the backward passes,
which in Caffe are plain copies (Concat, Slice, Crop, Filter), sums (Split, Tile,
BatchReindex) or shared diffs (Flatten, Reshape).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..registry import LAYERS
from .base import TRAIN, Layer, canonical_axis, count


def _fmt(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def _axis_param(layer: Layer, axis: int, legacy: int | None, legacy_name: str, ndim: int) -> int:
    """Resolve ``axis`` or its legacy unsigned form (``concat_dim`` / ``slice_dim``).

    The legacy field is never counted from the end (it is a uint32 in the schema).
    """
    if legacy is not None:
        if not 0 <= legacy < ndim:
            msg = f"{legacy_name}={legacy} is out of range for a {ndim}-axis blob"
            layer.fail(msg, ConfigError)
        return legacy
    return canonical_axis(axis, ndim, layer)


def _legacy_axis(param, sub: str, legacy_name: str) -> int | None:
    """The legacy axis field of ``param.<sub>`` if set; setting it and ``axis`` is an error."""
    msg = getattr(param, sub)
    if not msg.HasField(legacy_name):
        return None
    if msg.HasField("axis"):
        raise ConfigError(
            f"{param.type} layer '{param.name}': give {sub}.axis or the legacy "
            f"{legacy_name}, not both"
        )
    return int(getattr(msg, legacy_name))


@LAYERS.register()
class Concat(Layer):
    """Join the bottoms along one axis.

    Caffe: ``top = [bottom_0 | bottom_1 | ...]`` along ``axis``; every other
    dimension must agree. With a single bottom the top is the bottom itself.
    The gradient of each bottom is its slice of the top's gradient.

    Args:
        axis: the axis to join along (default 1, negative counts from the end).
        concat_dim: legacy form of ``axis`` (non-negative only); not both.

    Shape:
        bottoms ``(..., C_i, ...)`` -> top ``(..., sum_i C_i, ...)``.
    """

    type = "Concat"
    min_bottoms = 1
    exact_tops = 1

    def __init__(
        self, axis: int = 1, concat_dim: int | None = None, name: str = "", phase: int = TRAIN
    ):
        super().__init__(name, phase)
        self.axis = int(axis)
        self.concat_dim = concat_dim

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        legacy = _legacy_axis(param, "concat_param", "concat_dim")
        return cls(param.concat_param.axis, legacy, name=param.name, phase=phase)

    def _axis(self, ndim: int) -> int:
        return _axis_param(self, self.axis, self.concat_dim, "concat_dim", ndim)

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        axis = self._axis(len(first))
        top = list(first)
        for i, shape in enumerate(bottom_shapes[1:], start=1):
            shape = tuple(shape)
            same_rest = len(shape) == len(first) and all(
                a == b for j, (a, b) in enumerate(zip(shape, first)) if j != axis
            )
            if not same_rest:
                self.fail(
                    f"bottom {i} has shape {_fmt(shape)} but bottom 0 has {_fmt(first)}; all "
                    f"inputs must have the same number of axes and agree except at axis {axis}"
                )
            top[axis] += shape[axis]
        return [tuple(top)]

    def forward(self, *bottoms):
        if len(bottoms) == 1:
            return bottoms[0]
        return torch.cat(bottoms, dim=self._axis(bottoms[0].dim()))


@LAYERS.register()
class Slice(Layer):
    """Cut one bottom into several tops along one axis.

    Caffe: with ``slice_point`` = ``[p_1, ..., p_{n-1}]`` (strictly increasing), top
    ``k`` holds indices ``[p_k, p_{k+1})`` of the axis (``p_0 = 0``, ``p_n`` = the
    axis size); without it the axis is split into ``n`` equal parts, which must
    divide it evenly. ``n`` is the number of tops.

    Args:
        axis: the axis to cut (default 1, negative counts from the end).
        slice_point: the n-1 cut indices, or empty for an equal split.
        slice_dim: legacy form of ``axis`` (non-negative only); not both.

    Shape:
        bottom ``(..., C, ...)`` -> tops ``(..., C_k, ...)`` with ``sum_k C_k = C``.
    """

    type = "Slice"
    exact_bottoms = 1
    min_tops = 1

    def __init__(self, axis: int = 1, slice_point=(), slice_dim: int | None = None,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)
        self.slice_point = tuple(int(p) for p in slice_point)
        self.slice_dim = slice_dim

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.slice_param
        legacy = _legacy_axis(param, "slice_param", "slice_dim")
        return cls(p.axis, list(p.slice_point), legacy, name=param.name, phase=phase)

    def _sizes(self, shape) -> tuple[int, list[int]]:
        """(axis, size of each top along it), validated as Caffe's Reshape does."""
        axis = _axis_param(self, self.axis, self.slice_dim, "slice_dim", len(shape))
        dim = int(shape[axis])
        n = max(self.num_tops, 1)
        if self.slice_point:
            if len(self.slice_point) != n - 1:
                k = len(self.slice_point)
                self.fail(f"{k} slice_point value(s) need {k + 1} tops, got {n}", ConfigError)
            prev, sizes = 0, []
            for p in self.slice_point:
                if p <= prev:
                    self.fail(
                        f"slice_point {list(self.slice_point)} must be strictly increasing "
                        "and greater than 0",
                        ConfigError,
                    )
                sizes.append(p - prev)
                prev = p
            if prev >= dim:
                self.fail(
                    f"slice_point {prev} leaves no data for the last top: axis {axis} of "
                    f"bottom {_fmt(shape)} has size {dim}"
                )
            sizes.append(dim - prev)
            return axis, sizes
        if dim % n:
            self.fail(
                f"{n} tops do not evenly divide axis {axis} of size {dim} (bottom {_fmt(shape)}); "
                "give slice_point for an uneven split"
            )
        return axis, [dim // n] * n

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis, sizes = self._sizes(shape)
        return [shape[:axis] + (s,) + shape[axis + 1 :] for s in sizes]

    def forward(self, x):
        axis, sizes = self._sizes(tuple(x.shape))
        return tuple(torch.split(x, sizes, dim=axis))


@LAYERS.register()
class Split(Layer):
    """Copy one bottom to every top (Caffe inserts these where a blob feeds several layers).

    Caffe: ``top_k = bottom`` for each k; backward ``d bottom = sum_k d top_k``.
    Each top is a separate copy, so a layer that changes one top in place cannot
    change the others.

    Shape:
        bottom ``(*)`` -> each top ``(*)``.
    """

    type = "Split"
    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * max(self.num_tops, 1)

    def forward(self, x):
        return tuple(x.clone() for _ in range(max(self.num_tops, 1)))


@LAYERS.register()
class Flatten(Layer):
    """Merge the axes ``axis .. end_axis`` (inclusive) into one.

    Caffe: top shape = ``shape[:axis] + (count(shape[axis:end_axis+1]),) +
    shape[end_axis+1:]``; data and gradient are shared unchanged.

    Args:
        axis: first axis to merge (default 1, negative counts from the end).
        end_axis: last axis to merge (default -1, the last axis).

    Shape:
        ``(N, C, H, W)`` -> ``(N, C*H*W)`` with the defaults.
    """

    type = "Flatten"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, axis: int = 1, end_axis: int = -1, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)
        self.end_axis = int(end_axis)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.flatten_param
        return cls(axis=p.axis, end_axis=p.end_axis, name=param.name, phase=phase)

    def _top_shape(self, shape) -> tuple:
        shape = tuple(int(d) for d in shape)
        start = canonical_axis(self.axis, len(shape), self, "axis")
        end = canonical_axis(self.end_axis, len(shape), self, "end_axis")
        if end + 1 < start:  # Caffe's count(start, end + 1) needs start <= end + 1
            self.fail(
                f"end_axis={self.end_axis} (axis {end}) comes before axis={self.axis} "
                f"(axis {start}) for bottom {_fmt(shape)}",
                ConfigError,
            )
        return shape[:start] + (count(shape, start, end + 1),) + shape[end + 1 :]

    def reshape(self, bottom_shapes):
        return [self._top_shape(bottom_shapes[0])]

    def forward(self, x):
        return x.reshape(self._top_shape(x.shape))


@LAYERS.register()
class Reshape(Layer):
    """Give the bottom a new shape without touching its data.

    Caffe: the input axes ``[axis, axis + num_axes)`` are replaced by ``shape``,
    where a ``0`` copies the input dimension at the same position (counted from
    ``axis``) and one ``-1`` is inferred so that the count is preserved. Data and
    gradient are shared unchanged.

    Args:
        shape: the new dimensions (``reshape_param.shape.dim``).
        axis: first input axis replaced (default 0; negative counts from the end,
            with -1 meaning "after the last axis").
        num_axes: number of input axes replaced (default -1: all from ``axis``).

    Shape:
        e.g. ``(N, C*H*W)`` with ``shape {dim: 0 dim: -1 dim: 4 dim: 4}``
        -> ``(N, C*H*W/16, 4, 4)``.
    """

    type = "Reshape"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, shape=(), axis: int = 0, num_axes: int = -1, name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        self.shape = tuple(int(d) for d in shape)
        self.axis = int(axis)
        self.num_axes = int(num_axes)
        dims = list(self.shape)
        if dims.count(-1) > 1:
            self.fail(f"shape {dims} has more than one -1 (only one dim is inferred)", ConfigError)
        if any(d < -1 for d in dims):
            self.fail(f"shape {dims} has a dimension below -1", ConfigError)
        if self.num_axes < -1:
            self.fail(f"num_axes={self.num_axes} must be >= 0, or -1 for all", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.reshape_param
        return cls(list(p.shape.dim), p.axis, p.num_axes, name=param.name, phase=phase)

    def _top_shape(self, shape) -> tuple:
        shape = tuple(int(d) for d in shape)
        ndim = len(shape)
        start = self.axis if self.axis >= 0 else ndim + self.axis + 1
        if not 0 <= start <= ndim:
            msg = f"axis={self.axis} is out of range for a {ndim}-axis bottom {_fmt(shape)}"
            self.fail(msg, ConfigError)
        end = ndim if self.num_axes == -1 else start + self.num_axes
        if end > ndim:
            self.fail(
                f"axis={self.axis} + num_axes={self.num_axes} runs past the {ndim} axes of "
                f"bottom {_fmt(shape)}",
                ConfigError,
            )
        new = list(self.shape)
        for i, d in enumerate(new):
            if d == 0:
                if start + i >= ndim:
                    self.fail(
                        f"shape {list(self.shape)} has a 0 at position {i} but bottom "
                        f"{_fmt(shape)} has no axis {start + i} to copy"
                    )
                new[i] = shape[start + i]
        if -1 in new:
            known = count(shape[:start]) * count(shape[end:]) * count([d for d in new if d != -1])
            total = count(shape)
            if known == 0 or total % known:
                self.fail(
                    f"cannot infer the -1 in shape {list(self.shape)}: bottom {_fmt(shape)} has "
                    f"count {total}, not divisible by the product of the other dimensions ({known})"
                )
            new[new.index(-1)] = total // known
        top = shape[:start] + tuple(new) + shape[end:]
        if count(top) != count(shape):
            self.fail(
                f"top shape {_fmt(top)} (count {count(top)}) does not match bottom {_fmt(shape)} "
                f"(count {count(shape)}); reshape must keep the count"
            )
        return top

    def reshape(self, bottom_shapes):
        return [self._top_shape(bottom_shapes[0])]

    def forward(self, x):
        return x.reshape(self._top_shape(x.shape))


@LAYERS.register()
class Crop(Layer):
    """Crop bottom 0 to the shape of bottom 1 on the axes from ``axis`` on.

    Caffe: ``top = bottom0[..., o_a : o_a + S_a, ..., o_{n-1} : o_{n-1} + S_{n-1}]``
    with ``S = bottom1.shape``; axes before ``axis`` are kept whole. ``offset``:
    none -> 0 everywhere, one value -> used for every cropped axis, else one value
    per cropped axis. Bottom 1 supplies only its shape and gets no gradient.

    Args:
        axis: first cropped axis (default 2, negative counts from the end).
        offset: crop offsets as described above (default none).

    Shape:
        bottom0 ``(N, C, H, W)``, bottom1 ``(N', C', h, w)`` -> top ``(N, C, h, w)``
        with the default ``axis`` 2.
    """

    type = "Crop"
    exact_bottoms = 2
    exact_tops = 1

    def __init__(self, axis: int = 2, offset=(), name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)
        self.offset = tuple(int(o) for o in offset)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.crop_param
        return cls(axis=p.axis, offset=list(p.offset), name=param.name, phase=phase)

    def _window(self, shape, ref) -> tuple[list[int], tuple]:
        """(offset per axis, top shape) for data ``shape`` cropped to ``ref``."""
        shape, ref = tuple(int(d) for d in shape), tuple(int(d) for d in ref)
        ndim = len(shape)
        start = canonical_axis(self.axis, ndim, self)
        ncrop = ndim - start
        if len(self.offset) > 1 and len(self.offset) != ncrop:
            self.fail(
                f"{len(self.offset)} offsets given but axis={self.axis} crops {ncrop} axes of "
                f"bottom {_fmt(shape)}; give none, one, or one per cropped axis",
                ConfigError,
            )
        if len(ref) < ndim:
            self.fail(f"bottom 1 {_fmt(ref)} has fewer axes than bottom 0 {_fmt(shape)}")
        offsets, top = [0] * ndim, list(shape)
        for i in range(start, ndim):
            if not self.offset:
                o = 0
            elif len(self.offset) == 1:
                o = self.offset[0]
            else:
                o = self.offset[i - start]
            if o + ref[i] > shape[i]:
                self.fail(
                    f"crop of axis {i} is out of bounds: offset {o} + size {ref[i]} > {shape[i]} "
                    f"(bottom 0 {_fmt(shape)}, bottom 1 {_fmt(ref)})"
                )
            offsets[i], top[i] = o, ref[i]
        return offsets, tuple(top)

    def reshape(self, bottom_shapes):
        return [self._window(bottom_shapes[0], bottom_shapes[1])[1]]

    def forward(self, x, ref):
        offsets, top = self._window(x.shape, ref.shape)
        return x[tuple(slice(o, o + s) for o, s in zip(offsets, top))]


@LAYERS.register()
class Tile(Layer):
    """Repeat the bottom ``tiles`` times along ``axis``.

    Caffe copies, for each outer index, the whole block ``bottom[outer, axis:]``
    ``tiles`` times in a row, so ``top[..., j, ...] = bottom[..., j mod C, ...]``
    on the tiled axis (``numpy.tile`` on that axis). Backward sums the tiles.

    Args:
        axis: the axis to repeat along (default 1, negative counts from the end).
        tiles: number of copies (required, > 0).

    Shape:
        ``(..., C, ...)`` -> ``(..., C * tiles, ...)``.
    """

    type = "Tile"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, tiles: int | None = None, axis: int = 1, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.tiles = None if tiles is None else int(tiles)
        self.axis = int(axis)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.tile_param
        tiles = p.tiles if p.HasField("tiles") else None
        return cls(tiles=tiles, axis=p.axis, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        # Checked here rather than in __init__, as Caffe does in Reshape.
        if self.tiles is None:
            self.fail("tile_param.tiles must be specified", ConfigError)
        if self.tiles <= 0:
            self.fail(f"tile_param.tiles={self.tiles} must be positive", ConfigError)
        shape = tuple(bottom_shapes[0])
        axis = canonical_axis(self.axis, len(shape), self)
        return [shape[:axis] + (shape[axis] * self.tiles,) + shape[axis + 1 :]]

    def forward(self, x):
        axis = canonical_axis(self.axis, x.dim(), self)
        reps = [1] * x.dim()
        reps[axis] = self.tiles
        return x.repeat(*reps)


@LAYERS.register()
class Filter(Layer):
    """Keep the rows (first-axis items) whose selector is non-zero.

    Caffe: bottoms ``0 .. K-1`` are data, bottom ``K`` is the selector of shape
    ``(N,)`` or ``(N, 1, ...)``; top ``k`` = ``bottom_k[i for i in range(N) if
    selector[i] != 0]``, in order. The selector gets no gradient; each data bottom
    gets the top's gradient at the kept rows and 0 elsewhere.

    ``reshape`` cannot know how many rows will be kept (that depends on the
    selector's values), so it returns the full ``N``, as Caffe does before its
    first forward; ``forward`` returns tops with the actual number of kept rows.

    Shape:
        data ``(N, *)``, selector ``(N, 1, ...)`` -> top ``(M, *)``, ``M <= N``.
    """

    type = "Filter"
    min_bottoms = 2
    min_tops = 1

    def reshape(self, bottom_shapes):
        shapes = [tuple(s) for s in bottom_shapes]
        if self.num_tops != len(shapes) - 1:
            self.fail(
                f"takes one top per data bottom ({len(shapes) - 1} data bottoms plus the "
                f"selector), got {self.num_tops} top(s)",
                ConfigError,
            )
        sel = shapes[-1]
        if len(sel) == 0 or any(d != 1 for d in sel[1:]):
            self.fail(f"selector (last bottom) has shape {_fmt(sel)}, not (N,) or (N, 1, ...)")
        for i, s in enumerate(shapes[:-1]):
            if len(s) == 0 or s[0] != sel[0]:
                self.fail(
                    f"bottom {i} has shape {_fmt(s)} but the selector has {_fmt(sel)}; "
                    "every bottom must have the selector's first dimension"
                )
        return shapes[:-1]

    def forward(self, *bottoms):
        *data, sel = bottoms
        keep = torch.nonzero(sel.reshape(sel.shape[0], -1)[:, 0] != 0).squeeze(1)
        return tuple(torch.index_select(b, 0, keep) for b in data)


@LAYERS.register()
class BatchReindex(Layer):
    """Gather rows of bottom 0 by the indices in bottom 1.

    Caffe: ``top[i] = bottom0[int(idx[i])]``; indices are stored as floats and cast
    toward zero; each must satisfy ``0 <= idx < N``. Backward adds the top's
    gradient into every row it came from (repeated indices sum); the index bottom
    gets no gradient.

    Shape:
        bottom0 ``(N, *)``, indices ``(M,)`` -> top ``(M, *)``.
    """

    type = "BatchReindex"
    exact_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom_shapes):
        data, idx = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(idx) != 1:
            self.fail(f"the index bottom must be 1-D, got shape {_fmt(idx)}")
        if len(data) == 0:
            self.fail("bottom 0 must have at least one axis to index")
        return [(idx[0],) + data[1:]]

    def forward(self, x, idx):
        n = x.shape[0]
        idx = idx.detach().reshape(-1)
        bad = ~((idx >= 0) & (idx < n))
        if bool(bad.any()):
            first = idx[bad][0].item()
            self.fail(f"index {first} is out of range for bottom 0 with first dimension {n}")
        return torch.index_select(x, 0, idx.to(torch.long))


@LAYERS.register()
class Silence(Layer):
    """Consume bottoms so they are not reported as net outputs; produces nothing.

    Caffe's backward writes zero gradients to its bottoms; here the bottoms are
    simply not used, which gives them no gradient from this layer.

    Shape:
        any bottoms -> no tops.
    """

    type = "Silence"
    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottom_shapes):
        return []

    def forward(self, *bottoms):
        return ()
