"""pycaffe's ``caffe.params`` (``P``): the enum values of Caffe's parameter messages.

``P.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX`` (0), ``P.Data.LMDB`` is
``caffe_pb2.DataParameter.LMDB``, ``P.Eltwise.SUM``, ``P.Loss.VALID`` (the
``LossParameter.NormalizationMode`` values), and so on: ``P.<X>`` names the message
``<X>Parameter`` and its attributes are that message's enum values (and its nested
enum types). Unlike pycaffe, a misspelt message or value fails at once with an
``AttributeError`` naming the close matches::

    >>> from pipeline import params as P
    >>> P.Pooling.AVE
    1
    >>> P.Pooling.AVERAGE
    Traceback (most recent call last):
    AttributeError: P.Pooling has no value 'AVERAGE' (did you mean 'AVE'?); values: AVE, MAX, STOCHASTIC, ...
"""

from __future__ import annotations

import difflib

from .proto import caffe_pb2

_SUFFIX = "Parameter"


def _messages() -> list[str]:
    return sorted(n[: -len(_SUFFIX)] for n in caffe_pb2.DESCRIPTOR.message_types_by_name if n.endswith(_SUFFIX))


def _hint(name: str, choices) -> str:
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), lower, n=2)
    return f" (did you mean {' or '.join(repr(lower[c]) for c in close)}?)" if close else ""


class ParamEnums:
    """The enum values (and enum types) of one ``<name>Parameter`` message."""

    def __init__(self, name: str):
        self._name = name
        self._message = getattr(caffe_pb2, name + _SUFFIX)
        desc = self._message.DESCRIPTOR
        self._values = {v.name: v.number for e in desc.enum_types for v in e.values}
        self._enums = {e.name: getattr(self._message, e.name) for e in desc.enum_types}

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in self._values:
            return self._values[attr]
        if attr in self._enums:
            return self._enums[attr]
        names = sorted(self._values) + sorted(self._enums)
        what = ", ".join(names) if names else f"none ({self._name}{_SUFFIX} has no enums)"
        raise AttributeError(f"P.{self._name} has no value {attr!r}{_hint(attr, names)}; values: {what}")

    def __dir__(self):
        return sorted(self._values) + sorted(self._enums)

    def __repr__(self):
        return f"<P.{self._name}: {', '.join(sorted(self._values))}>"


_CACHE: dict[str, ParamEnums] = {}


def __getattr__(name: str) -> ParamEnums:
    if name.startswith("_"):
        raise AttributeError(f"module 'pipeline.params' has no attribute {name!r}")
    if name not in _CACHE:
        if not hasattr(caffe_pb2, name + _SUFFIX):
            known = _messages()
            raise AttributeError(f"P.{name}: there is no {name}{_SUFFIX} message{_hint(name, known)}; "
                                 f"known: {', '.join(known)}")
        _CACHE[name] = ParamEnums(name)
    return _CACHE[name]


def __dir__():
    return _messages()
