"""FindItem / FindFolder restrictions compiled to predicates over stored values.

String comparisons ignore case, as Exchange's do under its default collation. A missing
property makes every comparison false (MAPI semantics); ``Not`` and ``Exists`` see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree

from . import xmlio
from .fields import Path, PathError, base_type_of, parse_path, values_of
from .schema import T_NS, Model

TP = f"{{{T_NS}}}"
Predicate = Callable[[dict[str, Any], dict[str, Any]], bool]

_PATH_TAGS = {TP + "FieldURI", TP + "IndexedFieldURI", TP + "ExtendedFieldURI"}
# Values are stored (JSON-like) values of any property type.
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "IsEqualTo": lambda a, b: a == b,
    "IsNotEqualTo": lambda a, b: a != b,
    "IsGreaterThan": lambda a, b: a > b,
    "IsGreaterThanOrEqualTo": lambda a, b: a >= b,
    "IsLessThan": lambda a, b: a < b,
    "IsLessThanOrEqualTo": lambda a, b: a <= b,
}


def _norm(v: Any) -> Any:
    return v.casefold() if isinstance(v, str) else v


def compile_restriction(
    model: Model, type_name: str, restriction: etree._Element | None, tz: str | None
) -> Predicate:
    if restriction is None:
        return lambda view, ext: True
    children = [c for c in restriction if isinstance(c.tag, str)]
    if not children:
        return lambda view, ext: True
    return _compile(model, type_name, children[0], tz)


def _path_of(el: etree._Element) -> Path:
    for c in el:
        if c.tag in _PATH_TAGS:
            return parse_path(c)
    raise PathError("ErrorInvalidRequest", "The restriction has no property path.")


def _compile(model: Model, type_name: str, el: etree._Element, tz: str | None) -> Predicate:
    op = etree.QName(el).localname
    subs = [c for c in el if isinstance(c.tag, str)]
    if op == "And":
        preds = [_compile(model, type_name, c, tz) for c in subs]
        return lambda view, ext: all(p(view, ext) for p in preds)
    if op == "Or":
        preds = [_compile(model, type_name, c, tz) for c in subs]
        return lambda view, ext: any(p(view, ext) for p in preds)
    if op == "Not":
        inner = _compile(model, type_name, subs[0], tz)
        return lambda view, ext: not inner(view, ext)
    if op == "Exists":
        path = _path_of(el)
        return lambda view, ext: bool(values_of(view, ext, path))
    path = _path_of(el)
    base = base_type_of(model, type_name, path)

    def typed(text: str) -> Any:
        try:
            return _norm(xmlio.to_scalar(text, base, tz))
        except (ValueError, TypeError) as exc:
            raise PathError(
                "ErrorInvalidRequest", f"The constant {text!r} does not fit the property type."
            ) from exc

    if op in _OPS:
        cmp = _OPS[op]
        holder = el.find(TP + "FieldURIOrConstant")
        const = holder.find(TP + "Constant") if holder is not None else None
        if const is not None:
            want = typed(const.get("Value", ""))

            def pred(view: dict[str, Any], ext: dict[str, Any], want: Any = want) -> bool:
                try:
                    return any(cmp(_norm(v), want) for v in values_of(view, ext, path))
                except TypeError:
                    return False

            return pred
        other = _path_of(holder) if holder is not None else None
        if other is None:
            raise PathError("ErrorInvalidRequest", "The comparison has no constant.")

        def pred2(view: dict[str, Any], ext: dict[str, Any]) -> bool:
            rights = [_norm(v) for v in values_of(view, ext, other)]
            try:
                return any(cmp(_norm(v), r) for v in values_of(view, ext, path) for r in rights)
            except TypeError:
                return False

        return pred2
    if op == "Contains":
        const = el.find(TP + "Constant")
        needle = const.get("Value", "") if const is not None else ""
        mode = el.get("ContainmentMode", "Substring")
        comparison = el.get("ContainmentComparison", "Exact")
        fold = "IgnoreCase" in comparison or "Loose" in comparison
        if fold:
            needle = needle.casefold()

        def contains(view: dict[str, Any], ext: dict[str, Any]) -> bool:
            for v in values_of(view, ext, path):
                s = str(v).casefold() if fold else str(v)
                if mode == "FullString" and s == needle:
                    return True
                if mode == "Prefixed" and s.startswith(needle):
                    return True
                if mode in ("Substring", "ExactPhrase") and needle in s:
                    return True
                if mode in ("PrefixOnWords", "PrefixOnWordsExactPhrase") and any(
                    w.startswith(needle) for w in s.split()
                ):
                    return True
            return False

        return contains
    if op == "Excludes":
        mask_el = el.find(TP + "Bitmask")
        raw = mask_el.get("Value", "0") if mask_el is not None else "0"
        mask = int(raw, 16) if raw.lower().startswith("0x") else int(raw)
        return lambda view, ext: any(
            isinstance(v, int) and not (v & mask) for v in values_of(view, ext, path)
        )
    raise PathError("ErrorUnsupportedQueryFilter", f"The restriction {op} is not supported.")


SortKey = Callable[[tuple[dict[str, Any], dict[str, Any]]], tuple[bool, Any]]


def sort_key(path: Path, descending: bool) -> SortKey:
    def key(pair: tuple[dict[str, Any], dict[str, Any]]) -> tuple[bool, Any]:
        view, ext = pair
        vals = values_of(view, ext, path)
        v = _norm(vals[0]) if vals else None
        return (v is not None, v if v is not None else 0)

    return key
