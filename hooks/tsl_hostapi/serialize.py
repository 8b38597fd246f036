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
    return _decode(data, cls, cls.__name__ if isinstance(cls, type) else str(cls))


# --------------------------------------------------------------------------- helpers


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _union_dataclasses(hint: Any) -> list[type]:
    return [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]


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
        return [_encode(v, _elem_hint(hint, i)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        args = typing.get_args(hint)
        vhint = args[1] if len(args) == 2 else Any
        return {str(k): _encode(v, vhint) for k, v in value.items()}
    raise TypeError(f"Nicht als JSON darstellbar: {type(value).__name__}")


# --------------------------------------------------------------------------- decode


def _fail(where: str, expected: str, data: Any) -> ValueError:
    shown = repr(data)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"{where}: erwartet {expected}, gefunden {shown}")


def _decode(data: Any, hint: Any, where: str) -> Any:
    if hint is str and type(data) is str:  # the common case first: records are mostly text
        return data
    if hint is Any or hint is object:
        return data
    if hint is type(None):
        if data is not None:
            raise _fail(where, "null", data)
        return None
    origin = typing.get_origin(hint)
    if _is_union(hint):
        return _decode_union(data, hint, where)
    if origin is typing.Literal:
        if data not in typing.get_args(hint):
            raise _fail(where, f"einen der Werte {typing.get_args(hint)}", data)
        return data
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(data, hint, where)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(data, list):
            raise _fail(where, "eine Liste", data)
        items = [_decode(v, _elem_hint(hint, i), f"{where}[{i}]") for i, v in enumerate(data)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(data, dict):
            raise _fail(where, "ein Objekt", data)
        args = typing.get_args(hint)
        vhint = args[1] if len(args) == 2 else Any
        return {k: _decode(v, vhint, f"{where}.{k}") for k, v in data.items()}
    if hint is dt.datetime:
        if not isinstance(data, str):
            raise _fail(where, "Datum mit Uhrzeit (ISO 8601)", data)
        try:
            return dt.datetime.fromisoformat(data)
        except ValueError as exc:
            raise _fail(where, "Datum mit Uhrzeit (ISO 8601)", data) from exc
    if hint is dt.date:
        if not isinstance(data, str):
            raise _fail(where, "Datum (JJJJ-MM-TT)", data)
        try:
            return dt.date.fromisoformat(data)
        except ValueError as exc:
            raise _fail(where, "Datum (JJJJ-MM-TT)", data) from exc
    if hint is dt.time:
        try:
            return dt.time.fromisoformat(data)
        except (TypeError, ValueError) as exc:
            raise _fail(where, "Uhrzeit", data) from exc
    if hint is bool:
        if not isinstance(data, bool):
            raise _fail(where, "true/false", data)
        return data
    if hint is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise _fail(where, "eine ganze Zahl", data)
        return data
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise _fail(where, "eine Zahl", data)
        return float(data)
    if hint is str:
        if not isinstance(data, str):
            raise _fail(where, "Text", data)
        return data
    if isinstance(hint, type) and isinstance(data, hint):
        return data
    raise _fail(where, str(hint), data)


def _decode_union(data: Any, hint: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if data is None and type(None) in args:
        return None
    if isinstance(data, dict) and TYPE_KEY in data:
        for cls in _union_dataclasses(hint):
            if cls.__name__ == data[TYPE_KEY]:
                return _decode_dataclass(data, cls, where)
        raise _fail(where, " oder ".join(c.__name__ for c in _union_dataclasses(hint)), data[TYPE_KEY])
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _decode(data, arg, where)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError("; ".join(errors) or _fail(where, str(hint), data).args[0])


def _decode_dataclass(data: Any, cls: type, where: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(where, f"ein Objekt {cls.__name__}", data)
    kwargs = {}
    for name, hint in _init_plan(cls):
        if name in data:
            kwargs[name] = _decode(data[name], hint, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {cls.__name__} unvollständig ({exc})") from exc
