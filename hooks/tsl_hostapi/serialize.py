"""JSON for the frozen dataclasses of :mod:`tsl_hostapi.types`.

The reference host stores its records this way and the plugin keeps queue
snapshots this way, so the format is deliberately plain: a dataclass is an
object of its fields, tuples are arrays, dates and datetimes are ISO 8601
strings. Decoding is driven by the type hints of the target class, so no type
names are stored, except where a field may hold one of several dataclasses
(``RecordEvent.record``): there the object carries ``"__type__"``.

Unknown keys are ignored and missing fields with a default take the default,
so a snapshot written by an older or newer version still loads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import types
import typing
from typing import Any

TYPE_KEY = "__type__"


def to_json(obj: Any) -> str:
    """Serialise a dataclass (or a tuple/list/dict of them, or a plain value) to compact, stable JSON."""
    return json.dumps(_encode(obj, type(obj)), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def from_json(cls: Any, text: str | bytes) -> Any:
    """The inverse of :func:`to_json`. ``cls`` is a dataclass or a type hint such as ``tuple[Contact, ...]``.

    Raises :class:`ValueError` (German message) when the text does not fit ``cls``.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Kein gültiges JSON: {exc}") from exc
    return from_data(cls, data)


def to_data(obj: Any) -> Any:
    """Like :func:`to_json` but returns the JSON-ready Python structure."""
    return _encode(obj, type(obj))


def from_data(cls: Any, data: Any) -> Any:
    """Like :func:`from_json` for an already parsed structure."""
    return _decoder(cls)(data, cls.__name__ if isinstance(cls, type) else str(cls))


# --------------------------------------------------------------------------- helpers


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _union_dataclasses(hint: Any) -> list[type]:
    return [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]


@functools.cache
def _elem_hint(hint: Any, index: int) -> Any:
    """The hint for element ``index`` of a tuple/list hint."""
    args = typing.get_args(hint)
    if not args:
        return Any
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return args[index] if index < len(args) else Any
    return args[0]


# --------------------------------------------------------------------------- encode


_PRIMITIVES = (bool, int, float, str)
_TEMPORAL = (dt.datetime, dt.date, dt.time)


@functools.cache
def _field_plan(cls: type) -> tuple[tuple[str, Any], ...]:
    # Resolving type hints is the costly part of encoding; records are encoded on the host's
    # save path, so do it once per class.
    hints = _hints(cls)
    return tuple((f.name, hints.get(f.name, Any)) for f in dataclasses.fields(cls))


@functools.cache
def _init_plan(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = _hints(cls)
    return tuple((f.name, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init)


def _encode(value: Any, hint: Any) -> Any:
    if value is None or isinstance(value, _PRIMITIVES):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        out = {name: _encode(getattr(value, name), fhint) for name, fhint in _field_plan(cls)}
        # Name the class only where the declared type does not already say which one it is.
        if hint is not cls:
            out[TYPE_KEY] = cls.__name__
        return out
    if isinstance(value, _TEMPORAL):
        return value.isoformat()
    if isinstance(value, tuple | list):
        if not value:
            return []
        return [_encode(v, _elem_hint(hint, i)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        args = typing.get_args(hint)
        vhint = args[1] if len(args) == 2 else Any
        return {str(k): _encode(v, vhint) for k, v in value.items()}
    raise TypeError(f"Nicht als JSON darstellbar: {type(value).__name__}")


# --------------------------------------------------------------------------- decode
#
# Decoding compiles one function per type hint (cached), so a record's thousands of
# fields are not re-dispatched through ``typing`` one by one; the queue worker and the
# reference host decode every record they read. Error locations are built only when
# an error is raised: ``where`` is a string or a (parent, suffix) pair.

Where = Any
Decoder = typing.Callable[[Any, Where], Any]


def _place(where: Where) -> str:
    parts = []
    while isinstance(where, tuple):
        where, suffix = where
        parts.append(suffix)
    return str(where) + "".join(reversed(parts))


def _fail(where: Where, expected: str, data: Any) -> ValueError:
    shown = repr(data)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"{_place(where)}: erwartet {expected}, gefunden {shown}")


def _identity(data: Any, where: Where) -> Any:
    return data


def _decode_none(data: Any, where: Where) -> Any:
    if data is not None:
        raise _fail(where, "null", data)
    return None


def _decode_str(data: Any, where: Where) -> Any:
    if type(data) is str or isinstance(data, str):  # the common case first: records are mostly text
        return data
    raise _fail(where, "Text", data)


def _decode_bool(data: Any, where: Where) -> Any:
    if not isinstance(data, bool):
        raise _fail(where, "true/false", data)
    return data


def _decode_int(data: Any, where: Where) -> Any:
    if isinstance(data, bool) or not isinstance(data, int):
        raise _fail(where, "eine ganze Zahl", data)
    return data


def _decode_float(data: Any, where: Where) -> Any:
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise _fail(where, "eine Zahl", data)
    return float(data)


def _iso(parse: typing.Callable[[str], Any], expected: str) -> Decoder:
    def decode(data: Any, where: Where) -> Any:
        if not isinstance(data, str):
            raise _fail(where, expected, data)
        try:
            return parse(data)
        except ValueError as exc:
            raise _fail(where, expected, data) from exc

    return decode


def _decode_time(data: Any, where: Where) -> Any:
    try:
        return dt.time.fromisoformat(data)
    except (TypeError, ValueError) as exc:
        raise _fail(where, "Uhrzeit", data) from exc


_SIMPLE: dict[Any, Decoder] = {
    str: _decode_str,
    bool: _decode_bool,
    int: _decode_int,
    float: _decode_float,
    dt.datetime: _iso(dt.datetime.fromisoformat, "Datum mit Uhrzeit (ISO 8601)"),
    dt.date: _iso(dt.date.fromisoformat, "Datum (JJJJ-MM-TT)"),
    dt.time: _decode_time,
    type(None): _decode_none,
    Any: _identity,
    object: _identity,
}


@functools.cache
def _decoder(hint: Any) -> Decoder:
    simple = _SIMPLE.get(hint)
    if simple is not None:
        return simple
    origin = typing.get_origin(hint)
    if _is_union(hint):
        return _union_decoder(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)

        def decode_literal(data: Any, where: Where) -> Any:
            if data not in allowed:
                raise _fail(where, f"einen der Werte {allowed}", data)
            return data

        return decode_literal
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_decoder(hint)
    if origin in (tuple, list) or hint in (tuple, list):
        return _sequence_decoder(hint, (origin or hint) is tuple)
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        values = _decoder(args[1]) if len(args) == 2 else _identity

        def decode_dict(data: Any, where: Where) -> Any:
            if not isinstance(data, dict):
                raise _fail(where, "ein Objekt", data)
            return {k: values(v, (where, f".{k}")) for k, v in data.items()}

        return decode_dict

    def decode_other(data: Any, where: Where) -> Any:
        if isinstance(hint, type) and isinstance(data, hint):
            return data
        raise _fail(where, str(hint), data)

    return decode_other


def _sequence_decoder(hint: Any, as_tuple: bool) -> Decoder:
    args = typing.get_args(hint)
    fixed: list[Decoder] | None = None
    same: Decoder
    if not args:
        same = _identity
    elif typing.get_origin(hint) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        same = _identity  # beyond the declared positions: Any
        fixed = [_decoder(a) for a in args]
    else:
        same = _decoder(args[0])

    def decode_sequence(data: Any, where: Where) -> Any:
        if not isinstance(data, list):
            raise _fail(where, "eine Liste", data)
        if fixed is None:
            items = [same(v, (where, f"[{i}]")) for i, v in enumerate(data)]
        else:
            items = [(fixed[i] if i < len(fixed) else same)(v, (where, f"[{i}]")) for i, v in enumerate(data)]
        return tuple(items) if as_tuple else items

    return decode_sequence


def _union_decoder(hint: Any) -> Decoder:
    args = typing.get_args(hint)
    optional = type(None) in args
    by_name = {c.__name__: c for c in reversed(_union_dataclasses(hint))}
    names = " oder ".join(c.__name__ for c in _union_dataclasses(hint))
    others = [arg for arg in args if arg is not type(None)]

    def decode_union(data: Any, where: Where) -> Any:
        if data is None and optional:
            return None
        if isinstance(data, dict) and TYPE_KEY in data:
            cls = by_name.get(data[TYPE_KEY])
            if cls is None:
                raise _fail(where, names, data[TYPE_KEY])
            return _decoder(cls)(data, where)
        errors = []
        for arg in others:
            try:
                return _decoder(arg)(data, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors) or _fail(where, str(hint), data).args[0])

    return decode_union


def _dataclass_decoder(cls: type) -> Decoder:
    # The field decoders are resolved at the first call, so a dataclass may refer to itself.
    plan: tuple[tuple[str, str, Decoder], ...] | None = None

    def decode_dataclass(data: Any, where: Where) -> Any:
        nonlocal plan
        if not isinstance(data, dict):
            raise _fail(where, f"ein Objekt {cls.__name__}", data)
        if plan is None:
            plan = tuple((name, f".{name}", _decoder(hint)) for name, hint in _init_plan(cls))
        kwargs = {}
        for name, suffix, decode in plan:
            if name in data:
                kwargs[name] = decode(data[name], (where, suffix))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{_place(where)}: {cls.__name__} unvollständig ({exc})") from exc

    return decode_dataclass
