"""pycaffe's ``net_spec``: write a net in Python, get a ``NetParameter``.

::

    import pipeline as caffe
    from pipeline import layers as L, params as P

    n = caffe.NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2,
                             transform_param=dict(scale=1.0 / 256))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=500, param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    net_param = n.to_proto()        # a caffe_pb2.NetParameter

Semantics follow BVLC ``python/caffe/net_spec.py``:

- ``L.<Type>(*bottoms, **kwargs)`` describes one layer. It returns its one top, a
  tuple of tops (``ntop=k``), or the layer itself (``ntop=0``). ``in_place=True``
  makes the tops the bottoms.
- Assigning a top to ``n.<name>`` names the blob; a layer is named after its first
  top. Unnamed tops get ``<Type><k>`` names (``Convolution1``) in ``to_proto`` order.
- A keyword goes into the layer type's ``*_param`` message when that message has
  the field (``'InnerProduct'`` -> ``inner_product_param``), else into the
  ``LayerParameter`` (``param``, ``include``, ``loss_weight``, ``name``, ...).
  Keywords ending in ``param`` always go to the ``LayerParameter``. Dicts become
  messages, lists become repeated fields, a single value for a repeated field
  becomes a one-element list (``kernel_size=5``).

Differences from pycaffe, on purpose:

- Names are checked at the call, not at ``to_proto``: an unknown layer type
  (``L.Convlution``) raises ``AttributeError`` (an ``UnknownTypeError``) naming
  the close matches; an unknown keyword, nested field, enum name or a value of the
  wrong type raises ``ConfigError`` naming the field path and the valid names.
  Layer types are those the registry knows plus Caffe's data layers; the number
  of bottoms and tops is checked against the layer's declared arity.
- ``Deconvolution`` and ``Im2col`` keywords go to ``convolution_param``, ``LSTM``
  and ``RNN`` keywords to ``recurrent_param`` (pycaffe has no such mapping and
  fails for them); enum fields also take their value names (``pool="MAX"``), and
  tuples work like lists.
- ``top=``, ``bottom=`` and ``type=`` keywords are refused (pycaffe would append
  them to the tops the NetSpec already writes).
- One blob with several producers (one per phase, as the two ``Data`` layers of
  ``lenet_train_test.prototxt``): assign a tuple of tops from different layers,
  each with ``include``/``exclude`` rules, to one name; every producer is written,
  in order, with that top name::

      n.data, n.label = zip(L.Data(..., include=dict(phase=caffe.TRAIN), ntop=2),
                            L.Data(..., include=dict(phase=caffe.TEST), ntop=2))
"""

from __future__ import annotations

import difflib
from collections import Counter, OrderedDict

from google.protobuf.message import Message

from .errors import ConfigError, UnknownTypeError
from .formats import forks
from .proto import caffe_pb2

# Caffe's data layers: valid types for a NetSpec even before their runtime is registered.
DATA_LAYER_TYPES = ("Data", "ImageData", "HDF5Data", "HDF5Output", "MemoryData", "WindowData")

# Types whose parameters live in another type's message (Caffe reads them from there).
_SHARED_PARAM_FIELDS = {
    "Deconvolution": "convolution_param",
    "Im2col": "convolution_param",
    "LSTM": "recurrent_param",
    "RNN": "recurrent_param",
}

# LayerParameter fields the NetSpec writes itself.
_RESERVED = {"type": "the builder sets it", "bottom": "pass bottoms as arguments",
             "top": "name tops by assigning them to the NetSpec (n.name = ...)"}


class UnknownLayerTypeError(UnknownTypeError, AttributeError):
    """``L.<Type>`` for a type Caffe does not have (an AttributeError, so ``hasattr`` works)."""


def param_name_dict() -> dict[str, str]:
    """pycaffe's table: layer type -> prefix of its ``*_param`` field.

    Built from ``LayerParameter``: the field ``inner_product_param`` has message type
    ``InnerProductParameter``, so ``'InnerProduct' -> 'inner_product'``.
    """
    out = {}
    for fd in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if fd.name.endswith("_param") and fd.message_type is not None:
            out[fd.message_type.name[: -len("Parameter")]] = fd.name[: -len("_param")]
    return out


_PARAM_NAMES = param_name_dict()


def param_field(type_name: str) -> str | None:
    """The ``LayerParameter`` field holding ``type_name``'s parameters, or None."""
    if type_name in _SHARED_PARAM_FIELDS:
        return _SHARED_PARAM_FIELDS[type_name]
    prefix = _PARAM_NAMES.get(type_name)
    return prefix + "_param" if prefix else None


def known_layer_types() -> list[str]:
    """Every type ``L`` builds: the registered layers plus Caffe's data layers."""
    from . import layers as _layers  # noqa: F401  (fills the registry)
    from .registry import LAYERS

    return sorted(set(LAYERS) | set(DATA_LAYER_TYPES))


def close_matches(name: str, choices, n: int = 3) -> list[str]:
    """Case-insensitive close matches of ``name`` among ``choices``."""
    lower = {}
    for c in choices:
        lower.setdefault(c.lower(), c)
    return [lower[m] for m in difflib.get_close_matches(str(name).lower(), lower, n=n, cutoff=0.6)]


def _did_you_mean(name: str, choices) -> str:
    close = close_matches(name, choices)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


# ------------------------------------------------------------ checked assignment
def _fields(message) -> list[str]:
    return [f.name for f in message.DESCRIPTOR.fields]


def _scalar(fd, value, path: str):
    """``value`` converted for the scalar field ``fd`` (enum names become numbers)."""
    if fd.enum_type is not None:
        names = [v.name for v in fd.enum_type.values]
        if isinstance(value, str):
            v = fd.enum_type.values_by_name.get(value)
            if v is None:
                raise ConfigError(f"{path}: no value {value!r}{_did_you_mean(value, names)}; valid: {', '.join(names)}")
            return v.number
        if isinstance(value, bool) or not isinstance(value, int) or value not in fd.enum_type.values_by_number:
            raise ConfigError(f"{path}: {value!r} is not a {fd.enum_type.name} value; valid: {', '.join(names)}")
    return value


def _kind(fd) -> str:
    if fd.message_type is not None:
        return f"a {fd.message_type.name} (a dict)"
    if fd.enum_type is not None:
        return f"a {fd.enum_type.name} value"
    return {
        fd.CPPTYPE_BOOL: "a bool", fd.CPPTYPE_STRING: "a string", fd.CPPTYPE_FLOAT: "a number",
        fd.CPPTYPE_DOUBLE: "a number", fd.CPPTYPE_INT32: "an integer", fd.CPPTYPE_INT64: "an integer",
        fd.CPPTYPE_UINT32: "a non-negative integer", fd.CPPTYPE_UINT64: "a non-negative integer",
    }.get(fd.cpp_type, "a value")


def assign(message, name: str, value, path: str = "") -> None:
    """pycaffe's ``assign_proto`` with every name and value checked.

    Dicts fill messages, lists (or tuples) fill repeated fields, a single value for
    a repeated field is a one-element list; messages may also be given as
    ``caffe_pb2`` instances. Raises ``ConfigError`` naming ``path`` and the valid
    field or enum names.
    """
    path = f"{path}.{name}" if path else name
    fd = message.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:
        fields = _fields(message)
        raise ConfigError(
            f"{path}: {message.DESCRIPTOR.name} has no field {name!r}{_did_you_mean(name, fields)}"
            f"{forks.fork_hint_for_field(name)}; fields: {', '.join(sorted(fields))}"
        )
    field = getattr(message, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, (list, tuple)):
        value = [value]
    try:
        if repeated and fd.message_type is not None:
            for i, item in enumerate(value):
                _fill(field.add(), item, f"{path}[{i}]", fd)
        elif repeated:
            field.extend([_scalar(fd, v, f"{path}[{i}]") for i, v in enumerate(value)])
        elif fd.message_type is not None:
            _fill(field, value, path, fd)
        else:
            setattr(message, name, _scalar(fd, value, path))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: expected {_kind(fd)}, got {value!r} ({e})") from None


def _fill(sub, value, path, fd) -> None:
    if isinstance(value, Message):
        if value.DESCRIPTOR is not sub.DESCRIPTOR:
            raise ConfigError(f"{path}: expected {_kind(fd)}, got a {value.DESCRIPTOR.name}")
        sub.CopyFrom(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            assign(sub, k, v, path)
    else:
        raise ConfigError(f"{path}: expected {_kind(fd)}, got {value!r}")


def _check_arity(type_name: str, n_bottoms: int, n_tops: int, where: str) -> None:
    """The registered layer's declared bottom/top counts (Caffe's CheckBlobCounts), at the call."""
    from .registry import LAYERS

    if type_name not in LAYERS:
        return
    cls = LAYERS.get(type_name)
    checks = [("bottom", n_bottoms, cls.exact_bottoms, cls.min_bottoms, cls.max_bottoms)]
    if not (n_tops == 0 and cls.is_loss):  # a loss layer without tops gets one automatically
        checks.append(("top", n_tops, cls.exact_tops, cls.min_tops, cls.max_tops))
    for what, n, exact, lo, hi in checks:
        bad = (exact is not None and n != exact and f"exactly {exact}") or (
            lo is not None and n < lo and f"at least {lo}") or (hi is not None and n > hi and f"at most {hi}")
        if bad:
            hint = " (set ntop=)" if what == "top" else ""
            raise ConfigError(f"{where}: a {type_name} layer takes {bad} {what} blob(s), got {n}{hint}")


# ------------------------------------------------------------------ the graph
class Top:
    """One output blob of a layer (``fn``), the ``n``-th of its tops."""

    def __init__(self, fn: Function, n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)

    def _update(self, params: dict) -> None:
        self.fn._update(params)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Alternatives(tuple):
    """One blob produced by one of several layers, chosen by the net state (phase,
    level, stage): e.g. a TRAIN and a TEST ``Data`` layer. Every producer is written,
    in order, all with the same top name; consumers take it as one bottom."""

    def __new__(cls, tops, where: str = "NetSpec"):
        tops = tuple(tops)
        if len(tops) < 2 or not all(isinstance(t, Top) for t in tops):
            raise ConfigError(f"{where}: one blob with several producers needs two or more tops, got {tops!r}")
        if len({id(t.fn) for t in tops}) != len(tops):
            raise ConfigError(
                f"{where}: the tops come from the same layer; unpack them instead (n.a, n.b = L.Slice(..., ntop=2))"
            )
        for t in tops:
            if "include" not in t.fn.params and "exclude" not in t.fn.params:
                raise ConfigError(
                    f"{where}: the {t.fn.type_name} layer has no include/exclude rule; producers of one blob "
                    "must be for different phases or stages (include=dict(phase=caffe.TEST))"
                )
        return super().__new__(cls, tops)

    def _to_proto(self, layers, names, autonames) -> None:
        first = self[0]
        first._to_proto(layers, names, autonames)
        for t in self[1:]:
            names.setdefault(t, layers[first.fn].top[first.n])
            t._to_proto(layers, names, autonames)

    @property
    def fn(self):
        return self[0].fn

    @property
    def n(self):
        return self[0].n


class Function:
    """One layer: its type, bottoms (``inputs``) and keyword parameters.

    ``params`` keeps the keywords as given (pycaffe's attribute); they are checked
    and written into a ``LayerParameter`` template at once.
    """

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        where = f"L.{type_name}"
        for i, inp in enumerate(inputs):
            if not isinstance(inp, (Top, Alternatives)):
                raise ConfigError(
                    f"{where}: bottom {i} is a {type(inp).__name__}, expected a top (e.g. n.data or L.X(...))"
                )
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if isinstance(self.ntop, bool) or not isinstance(self.ntop, int) or self.ntop < 0:
            raise ConfigError(f"{where}: ntop must be a non-negative integer, got {self.ntop!r}")
        if self.in_place and not self.inputs:
            raise ConfigError(f"{where}: in_place=True needs a bottom to work in place on")
        if self.in_place and self.ntop > len(self.inputs):
            raise ConfigError(f"{where}: in_place=True writes its bottoms as tops ({len(self.inputs)}), "
                              f"got ntop={self.ntop}")
        # In place, the layer's tops are its bottoms (pycaffe), whatever ntop says.
        _check_arity(type_name, len(self.inputs), len(self.inputs) if self.in_place else self.ntop, where)
        self._template = self._build(self.params)
        self.tops = tuple(Top(self, i) for i in range(self.ntop))

    def _build(self, params: dict) -> caffe_pb2.LayerParameter:
        layer = caffe_pb2.LayerParameter()
        owner = param_field(self.type_name)
        own = getattr(layer, owner) if owner else None
        for k, v in params.items():
            try:
                if k.endswith("param"):
                    assign(layer, k, v)
                elif own is not None and k in own.DESCRIPTOR.fields_by_name:
                    assign(own, k, v, owner)
                elif k in _RESERVED:
                    raise ConfigError(f"'{k}' cannot be given as a keyword ({_RESERVED[k]})")
                elif k in layer.DESCRIPTOR.fields_by_name:
                    assign(layer, k, v)
                else:
                    raise ConfigError(self._unknown_keyword(k, own, owner, layer))
            except ConfigError as e:
                raise ConfigError(f"L.{self.type_name}: {e}") from None
        return layer

    def _unknown_keyword(self, k, own, owner, layer) -> str:
        common = [f for f in _fields(layer) if not f.endswith("_param") and f not in _RESERVED]
        blocks = [f for f in _fields(layer) if f.endswith("_param")]
        choices = (_fields(own) if own is not None else []) + common + blocks
        msg = f"no parameter {k!r}{_did_you_mean(k, choices)}{forks.fork_hint_for_field(k)}"
        if own is not None:
            msg += f"; {owner} takes: {', '.join(sorted(_fields(own)))}"
        else:
            msg += f"; a {self.type_name} layer has no {self.type_name} parameter message"
        return msg + f"; every layer takes: {', '.join(sorted(common))} and the *_param blocks"

    def _update(self, params: dict) -> None:
        merged = {**self.params, **params}
        self._template = self._build(merged)
        self.params = merged

    def _get_name(self, names, autonames) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _get_top_name(self, top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _to_proto(self, layers, names, autonames) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._get_top_name(t, names, autonames) for t in self.tops)
        layer.name = self._get_name(names, autonames)
        layer.MergeFrom(self._template)  # keywords last, as pycaffe (a name= keyword wins)
        layers[self] = layer

    def __repr__(self):
        return f"<Function {self.type_name} ntop={self.ntop}>"


def to_proto(*tops) -> caffe_pb2.NetParameter:
    """A NetParameter with every layer needed to compute ``tops`` (auto-named blobs)."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    names: dict = {}
    for top in tops:
        top._to_proto(layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops: ``n.conv1 = L.Convolution(n.data, ...)``; ``n.to_proto()`` writes
    every layer needed for the named tops, in the order they were assigned, with
    the assigned names. A tuple of tops from several (phase-specific) layers names
    one blob with several producers (see the module docstring)."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        if isinstance(value, (tuple, list)) and not isinstance(value, Alternatives):
            value = Alternatives(value, where=f"NetSpec.{name}")
        if not isinstance(value, (Top, Function, Alternatives)):
            raise ConfigError(
                f"NetSpec.{name}: expected a top (L.X(...)), got {type(value).__name__}; "
                "unpack several tops: n.a, n.b = L.X(..., ntop=2)"
            )
        self.tops[name] = value

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(
                f"NetSpec has no top {name!r}{_did_you_mean(name, self.tops)}; named: {', '.join(self.tops)}"
            ) from None

    def __delattr__(self, name):
        del self.tops[name]

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, key):
        return self.tops[key]

    def __delitem__(self, key):
        del self.tops[key]

    def __contains__(self, key):
        return key in self.tops

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name, params: dict) -> None:
        """Add or change keyword parameters of the layer producing ``name`` (checked)."""
        top = self.tops[name]
        for t in top if isinstance(top, Alternatives) else (top,):
            t._update(params)

    def to_proto(self) -> caffe_pb2.NetParameter:
        names: dict = {}
        for k, v in self.tops.items():
            for t in v if isinstance(v, Alternatives) else (v,):
                names[t] = k
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


# ------------------------------------------------------------- L.<Type> builders
_BUILDERS: dict[str, object] = {}


def layer_builder(type_name: str):
    """The function behind ``L.<type_name>``; an unknown type raises
    ``UnknownLayerTypeError`` (an AttributeError) with close matches."""
    fn = _BUILDERS.get(type_name)
    if fn is not None:
        return fn
    known = known_layer_types()
    if type_name not in known:
        raise UnknownLayerTypeError(
            f"unknown layer type {type_name!r}{_did_you_mean(type_name, known)}"
            f"{forks.fork_hint_for_type(type_name)}; known: {', '.join(known)}"
        )

    def build(*bottoms, **kwargs):
        f = Function(type_name, bottoms, kwargs)
        if f.ntop == 0:
            return f
        return f.tops[0] if f.ntop == 1 else f.tops

    owner = param_field(type_name)
    build.__name__ = build.__qualname__ = type_name
    own_fields = ", ".join(sorted(_fields(getattr(caffe_pb2.LayerParameter(), owner)))) if owner else ""
    build.__doc__ = (
        f"A {type_name} layer: L.{type_name}(*bottoms, ntop=1, in_place=False, **params).\n\n"
        + (f"Keywords: the fields of {owner} ({own_fields}), " if owner else "")
        + "and LayerParameter's (name, param, include, exclude, loss_weight, propagate_down, *_param)."
    )
    _BUILDERS[type_name] = build
    return build


class _Layers:
    """pycaffe's ``caffe.layers`` object, for code that wants an instance (``L = Layers()``)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return layer_builder(name)

    def __dir__(self):
        return known_layer_types()


layers = _Layers()

__all__ = ["NetSpec", "Top", "Function", "Alternatives", "to_proto", "layers", "layer_builder", "assign",
           "param_name_dict", "param_field", "known_layer_types", "UnknownLayerTypeError", "DATA_LAYER_TYPES"]
