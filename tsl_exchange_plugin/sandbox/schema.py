"""Microsoft's EWS schema, loaded once per process: a validator and a small type model.

The validator checks SOAP header blocks and the Body payload separately, because the
schema files contain no SOAP envelope. The type model (element order, repeatable
children, attribute and leaf types) is read from ``types.xsd`` itself, so the sandbox
serialises in the order the schema demands instead of an order copied from a client.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

log = logging.getLogger(__name__)

XS = "http://www.w3.org/2001/XMLSchema"
T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
M_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
XML_NS = "http://www.w3.org/XML/1998/namespace"

_XS = f"{{{XS}}}"

# libxml2 cannot fetch the W3C xml.xsd (no network, no catalog); this declares what types.xsd uses.
_XML_XSD = f"""<?xml version="1.0"?>
<xs:schema xmlns:xs="{XS}" targetNamespace="{XML_NS}">
  <xs:attribute name="lang" type="xs:language"/>
  <xs:attribute name="space"><xs:simpleType><xs:restriction base="xs:NCName">
    <xs:enumeration value="default"/><xs:enumeration value="preserve"/></xs:restriction></xs:simpleType></xs:attribute>
</xs:schema>
"""


class SchemaNotFound(RuntimeError):
    pass


SCHEMA_DIR_ENV = "TSL_EWS_SCHEMA_DIR"
# The type model (element order, repeatable children, value types) digested from the schema, so an
# installed package runs without Microsoft's files; it holds no schema text, only what the sandbox
# needs to read and write values. A test keeps it equal to a fresh digest of the schema.
MODEL_SNAPSHOT = Path(__file__).resolve().parent / "ews_model.json.gz"


def find_schema_dir() -> Path:
    """TSL_EWS_SCHEMA_DIR, else ``shared/ews-schema`` beside (or inside) a checkout of the project.

    Only the checkout this module was loaded from is looked at: after a wheel install there is
    no project folder to walk up from, and the working directory says nothing about the schema."""
    env = os.environ.get(SCHEMA_DIR_ENV)
    if env:
        p = Path(env)
        if (p / "messages.xsd").is_file() and (p / "types.xsd").is_file():
            return p
        raise SchemaNotFound(
            f"{SCHEMA_DIR_ENV}={env} enthält keine messages.xsd und types.xsd. Bitte den Ordner mit "
            "Microsofts EWS-Schema angeben."
        )
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        # A shared folder beside the checkout, or beside a folder of several checkouts (worktrees).
        for d in (checkout, *checkout.parents):
            cand = d / "shared" / "ews-schema"
            if (cand / "messages.xsd").is_file():
                return cand
    raise SchemaNotFound(
        "Microsofts EWS-Schema (messages.xsd, types.xsd) ist nicht vorhanden. Für die Schema-Prüfung "
        f"{SCHEMA_DIR_ENV} auf den Ordner mit beiden Dateien setzen."
    )


def schema_dir() -> Path | None:
    """The schema folder, or None when it is not available (an installed package without it)."""
    try:
        return find_schema_dir()
    except SchemaNotFound:
        return None


# ---------------------------------------------------------------------------------------------
# validation


@dataclass(frozen=True)
class ValidationError:
    message: str
    line: int
    column: int


class Validator:
    """lxml XMLSchema if it loads, xmlschema otherwise. ``check`` returns None or the first error."""

    def __init__(self, schema_dir: Path):
        self.backend = ""
        self._lxml: etree.XMLSchema | None = None
        self._xs = None
        self._lock = threading.Lock()  # lxml schema objects are not documented as thread-safe
        try:
            self._lxml = self._load_lxml(schema_dir)
            self.backend = "lxml"
        except Exception as exc:  # fall back: slower but more forgiving loader
            log.warning("lxml could not load the EWS schema (%s); using xmlschema", exc)
            import xmlschema

            self._xs = xmlschema.XMLSchema(str(schema_dir / "messages.xsd"))
            self.backend = "xmlschema"

    @staticmethod
    def _load_lxml(schema_dir: Path) -> etree.XMLSchema:
        tmp = Path(tempfile.gettempdir()) / f"tsl-ews-xml-{os.getuid()}.xsd"
        if not tmp.is_file() or tmp.read_text() != _XML_XSD:
            tmp.write_text(_XML_XSD)
        # A wrapper imports the xml namespace from our local file first, so the location-less
        # import inside types.xsd is satisfied without network access.
        wrapper = f"""<xs:schema xmlns:xs="{XS}" targetNamespace="urn:tsl:ews-wrapper">
          <xs:import namespace="{XML_NS}" schemaLocation="{tmp.as_uri()}"/>
          <xs:import namespace="{M_NS}" schemaLocation="{(schema_dir / "messages.xsd").resolve().as_uri()}"/>
        </xs:schema>"""
        return etree.XMLSchema(etree.fromstring(wrapper.encode()))

    def check(self, element: etree._Element) -> ValidationError | None:
        if self._lxml is not None:
            with self._lock:
                ok = self._lxml.validate(element)
                if ok:
                    return None
                err = self._lxml.error_log.last_error
                errors = [e for e in self._lxml.error_log]
                first = errors[0] if errors else err
                return ValidationError(first.message, first.line, first.column)
        try:
            self._xs.validate(element)  # type: ignore[union-attr]  # one of the two validators is always set
            return None
        except Exception as exc:  # xmlschema raises XMLSchemaValidationError
            line = getattr(getattr(exc, "elem", None), "sourceline", None) or 0
            return ValidationError(str(getattr(exc, "reason", exc)), int(line), 0)


_validator: Validator | None = None
_validator_lock = threading.Lock()
_any_uri: frozenset[str] | None = None


def any_uri_elements() -> frozenset[str]:
    """Local names of the types-namespace elements declared as xs:anyURI (BusinessHomePage):
    libxml2 checks them too leniently, so the engine checks them again (``uris.py``)."""
    global _any_uri
    with _validator_lock:
        if _any_uri is None:
            root = etree.parse(str(find_schema_dir() / "types.xsd")).getroot()
            _any_uri = frozenset(
                el.get("name")
                for el in root.iter(_XS + "element")
                if el.get("name") and (el.get("type") or "").endswith(":anyURI")
            )
        return _any_uri


def validator() -> Validator:
    global _validator
    with _validator_lock:
        if _validator is None:
            _validator = Validator(find_schema_dir())
        return _validator


# ---------------------------------------------------------------------------------------------
# type model


@dataclass
class Child:
    name: str
    type: str  # "{ns}Name" of the type; "" when unknown (xs:any etc.)
    repeat: bool


@dataclass
class TypeInfo:
    name: str
    simple: str | None = None  # builtin base for simple types and simple content ("boolean", "dateTime", ...)
    children: list[Child] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)  # attribute name -> builtin base
    enum: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.index: dict[str, Child] = {}
        self.order: dict[str, int] = {}

    def finish(self) -> None:
        self.index = {c.name: c for c in self.children}
        self.order = {c.name: i for i, c in enumerate(self.children)}


class Model:
    """The subset of XSD semantics the sandbox needs to read and write values canonically."""

    def __init__(self, schema_dir: Path):
        self._defs: dict[str, etree._Element] = {}
        self._groups: dict[str, etree._Element] = {}
        self._attr_groups: dict[str, etree._Element] = {}
        self.elements: dict[str, str] = {}  # global element "{ns}Name" -> type
        self.types: dict[str, TypeInfo] = {}
        for fname in ("types.xsd", "messages.xsd"):
            root = etree.parse(str(schema_dir / fname)).getroot()
            tns = root.get("targetNamespace")
            for node in root:
                if not isinstance(node.tag, str):
                    continue
                name = node.get("name")
                key = f"{{{tns}}}{name}"
                tag = etree.QName(node).localname
                if tag in ("complexType", "simpleType"):
                    self._defs[key] = node
                elif tag == "group":
                    self._groups[key] = node
                elif tag == "attributeGroup":
                    self._attr_groups[key] = node
                elif tag == "element":
                    t = node.get("type")
                    if t:
                        self.elements[key] = self._qname(node, t)
                    else:
                        anon = key + "#anon"
                        inline = [c for c in node if isinstance(c.tag, str) and c.tag != _XS + "annotation"]
                        if inline:
                            self._defs[anon] = inline[0]
                        self.elements[key] = anon
        self._lock = threading.RLock()

    @staticmethod
    def _qname(node: etree._Element, value: str) -> str:
        prefix, _, local = value.rpartition(":")
        ns = node.nsmap.get(prefix or None)
        return f"{{{ns}}}{local}"

    def type_of(self, name: str) -> TypeInfo:
        """``type`` for a name the sandbox itself uses (an item kind's, a folder's): always there."""
        info = self.type(name)
        if info is None:
            raise KeyError(f"schema type {name!r} is not in the model")
        return info

    def type(self, name: str) -> TypeInfo | None:
        if not name:
            return None
        info = self.types.get(name)
        if info is not None:
            return info
        with self._lock:
            info = self.types.get(name)
            if info is None:
                info = self._build(name)
                if info is not None:
                    self.types[name] = info
            return info

    def simple_base(self, name: str) -> str:
        """The builtin a simple type reduces to ("string" for lists, unions and unknowns)."""
        if name.startswith(f"{{{XS}}}"):
            return name.split("}", 1)[1]
        info = self.type(name)
        return (info.simple if info else None) or "string"

    def element_type(self, qname: str) -> str:
        return self.elements.get(qname, "")

    # -- building ------------------------------------------------------------------------------

    def _build(self, name: str) -> TypeInfo | None:
        if name.startswith(f"{{{XS}}}"):
            return TypeInfo(name, simple=name.split("}", 1)[1])
        node = self._defs.get(name)
        if node is None:
            return None
        info = TypeInfo(name)
        self.types[name] = info  # recursion guard for self-referencing types
        tag = etree.QName(node).localname
        if tag == "simpleType":
            self._simple(node, info)
        else:
            self._complex(node, info, name)
        info.finish()
        return info

    def _simple(self, node: etree._Element, info: TypeInfo) -> None:
        for c in node:
            if c.tag == _XS + "restriction":
                base = c.get("base")
                if base:
                    info.simple = self.simple_base(self._qname(c, base))
                else:
                    inner = c.find(_XS + "simpleType")
                    info.simple = "string"
                    if inner is not None:
                        sub = TypeInfo("anon")
                        self._simple(inner, sub)
                        info.simple = sub.simple
                info.enum = tuple(e.get("value") for e in c.findall(_XS + "enumeration"))
                return
            if c.tag in (_XS + "list", _XS + "union"):
                info.simple = "string"
                return
        info.simple = "string"

    def _complex(self, node: etree._Element, info: TypeInfo, name: str) -> None:
        for c in node:
            if not isinstance(c.tag, str):
                continue
            if c.tag == _XS + "complexContent":
                for d in c:
                    if d.tag in (_XS + "extension", _XS + "restriction"):
                        base = self.type(self._qname(d, d.get("base")))
                        if base is not None:
                            info.attrs.update(base.attrs)
                            if d.tag == _XS + "extension":
                                info.children.extend(base.children)
                        self._particles(d, info, False, name)
                        self._attributes(d, info)
            elif c.tag == _XS + "simpleContent":
                for d in c:
                    if d.tag in (_XS + "extension", _XS + "restriction"):
                        bname = self._qname(d, d.get("base"))
                        base = self.type(bname)
                        if base is not None:
                            info.simple = base.simple
                            info.attrs.update(base.attrs)
                        else:
                            info.simple = "string"
                        self._attributes(d, info)
            elif c.tag in (_XS + "sequence", _XS + "choice", _XS + "all", _XS + "group"):
                self._particle(c, info, False, name)
        self._attributes(node, info)

    def _particles(self, node: etree._Element, info: TypeInfo, repeat: bool, owner: str) -> None:
        for c in node:
            if isinstance(c.tag, str) and c.tag in (
                _XS + "sequence",
                _XS + "choice",
                _XS + "all",
                _XS + "group",
            ):
                self._particle(c, info, repeat, owner)

    def _particle(self, node: etree._Element, info: TypeInfo, repeat: bool, owner: str) -> None:
        rep = repeat or node.get("maxOccurs", "1") != "1"
        if node.tag == _XS + "group":
            grp = self._groups.get(self._qname(node, node.get("ref")))
            if grp is not None:
                self._particles(grp, info, rep, owner)
            return
        for c in node:
            if not isinstance(c.tag, str):
                continue
            if c.tag == _XS + "element":
                crep = rep or c.get("maxOccurs", "1") != "1"
                if c.get("ref"):
                    q = self._qname(c, c.get("ref"))
                    info.children.append(Child(q.split("}", 1)[1], self.elements.get(q, ""), crep))
                    continue
                cname = c.get("name")
                t = c.get("type")
                if t:
                    ctype = self._qname(c, t)
                else:
                    ctype = f"{owner}/{cname}#anon"
                    inline = [x for x in c if isinstance(x.tag, str) and x.tag != _XS + "annotation"]
                    if inline:
                        self._defs[ctype] = inline[0]
                    else:
                        ctype = ""
                info.children.append(Child(cname, ctype, crep))
            elif c.tag in (_XS + "sequence", _XS + "choice", _XS + "all", _XS + "group"):
                self._particle(c, info, rep, owner)

    def _attributes(self, node: etree._Element, info: TypeInfo) -> None:
        for c in node:
            if c.tag == _XS + "attribute" and c.get("name"):
                t = c.get("type")
                info.attrs[c.get("name")] = self.simple_base(self._qname(c, t)) if t else "string"
            elif c.tag == _XS + "attributeGroup" and c.get("ref"):
                grp = self._attr_groups.get(self._qname(c, c.get("ref")))
                if grp is not None:
                    self._attributes(grp, info)

    # -- snapshot --------------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Every type built, as plain data (what ``from_snapshot`` reads)."""
        seen: set[str] = set()
        while True:
            todo = sorted(k for k in list(self._defs) if k not in seen)
            if not todo:
                break
            for name in todo:
                seen.add(name)
                self.type(name)
        for name in list(self.elements.values()):
            self.type(name)
        return {
            "elements": dict(sorted(self.elements.items())),
            "types": {
                n: [i.simple, [[c.name, c.type, c.repeat] for c in i.children], i.attrs, list(i.enum)]
                for n, i in sorted(self.types.items())
            },
        }

    @classmethod
    def from_snapshot(cls, path: Path) -> Model:
        data = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        self = cls.__new__(cls)
        self._defs, self._groups, self._attr_groups = {}, {}, {}
        self._lock = threading.RLock()
        self.elements = dict(data["elements"])
        self.types = {}
        for name, (simple, children, attrs, enum) in data["types"].items():
            info = TypeInfo(
                name, simple, [Child(c, t, bool(r)) for c, t, r in children], dict(attrs), tuple(enum)
            )
            info.finish()
            self.types[name] = info
        return self


def write_snapshot(path: Path = MODEL_SNAPSHOT) -> None:
    """Digest the schema into ``path`` (run after the schema changes: ``python -m ...sandbox.schema``)."""
    data = Model(find_schema_dir()).export()
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    path.write_bytes(gzip.compress(raw, mtime=0))


_model: Model | None = None
_model_lock = threading.Lock()


def model() -> Model:
    global _model
    with _model_lock:
        if _model is None:
            found = schema_dir()
            _model = Model(found) if found is not None else Model.from_snapshot(MODEL_SNAPSHOT)
        return _model


def t(name: str) -> str:
    return f"{{{T_NS}}}{name}"


if __name__ == "__main__":  # pragma: no cover - a maintainer's step after a schema update
    write_snapshot()
