"""Request and response bodies checked against the OpenAPI subset of Graph (the sandbox variant).

The subset lives in ``shared/graph-reference/openapi-v1.0-subset.sandbox.yaml`` beside the project
(or in ``TSL_GRAPH_REFERENCE_DIR``). A body that breaks it is a test failure, whichever side sent
it: the backend's request or the sandbox's own answer.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

CONTRACT_FILE = "openapi-v1.0-subset.sandbox.yaml"
# Documented operations the subset leaves out, checked against the operation whose bodies they
# share: the instances of a series are an event collection like calendarView (event-list-instances).
# Items in a named folder (contactFolders/{id}/contacts, calendars/{id}/events and calendarView) are
# the same resources as in the default folder (contact-post, calendar-post-events, calendar-list-
# calendarview).
_U = "/users/{user-id}"
_CF = _U + "/contactFolders/{contactFolder-id}"
_CAL = _U + "/calendars/{calendar-id}"
ALIASES = {
    ("GET", _U + "/events/{event-id}/instances"): ("GET", _U + "/calendarView"),
    ("GET", _CF + "/contacts"): ("GET", _U + "/contacts"),
    ("POST", _CF + "/contacts"): ("POST", _U + "/contacts"),
    ("GET", _CF + "/contacts/{contact-id}"): ("GET", _U + "/contacts/{contact-id}"),
    ("PATCH", _CF + "/contacts/{contact-id}"): ("PATCH", _U + "/contacts/{contact-id}"),
    ("DELETE", _CF + "/contacts/{contact-id}"): ("DELETE", _U + "/contacts/{contact-id}"),
    ("GET", _CAL + "/events"): ("GET", _U + "/events"),
    ("POST", _CAL + "/events"): ("POST", _U + "/events"),
    ("GET", _CAL + "/events/{event-id}"): ("GET", _U + "/events/{event-id}"),
    ("PATCH", _CAL + "/events/{event-id}"): ("PATCH", _U + "/events/{event-id}"),
    ("DELETE", _CAL + "/events/{event-id}"): ("DELETE", _U + "/events/{event-id}"),
    ("GET", _CAL + "/calendarView"): ("GET", _U + "/calendarView"),
}

# Folder operations the subset leaves out, with their bodies as Microsoft documents them
# (user-list-contactfolders, user-post-contactfolders, contactfolder-list/post-childfolders,
# user-list-calendars, user-post-calendars). The calendar resource is in the subset; the
# contactFolder resource is not, so its documented properties are written here.
_CONTACT_FOLDER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "displayName": {"type": "string", "nullable": True},
        "parentFolderId": {"type": "string", "nullable": True},
    },
}
_CALENDAR = {"$ref": "#/components/schemas/microsoft.graph.calendar"}


def _listing(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "value": {"type": "array", "items": schema},
            "@odata.nextLink": {"type": "string", "nullable": True},
        },
    }


FOLDER_OPERATIONS = {
    ("GET", _U + "/contactFolders"): (None, _listing(_CONTACT_FOLDER)),
    ("POST", _U + "/contactFolders"): (_CONTACT_FOLDER, _CONTACT_FOLDER),
    ("GET", _CF): (None, _CONTACT_FOLDER),
    ("GET", _CF + "/childFolders"): (None, _listing(_CONTACT_FOLDER)),
    ("POST", _CF + "/childFolders"): (_CONTACT_FOLDER, _CONTACT_FOLDER),
    ("GET", _U + "/calendars"): (None, _listing(_CALENDAR)),
    ("POST", _U + "/calendars"): (_CALENDAR, _CALENDAR),
    ("GET", _CAL): (None, _CALENDAR),
    ("DELETE", _CF): (None, None),
    ("DELETE", _CAL): (None, None),
}


class ContractNotFound(RuntimeError):
    pass


def find_contract() -> Path:
    env = os.environ.get("TSL_GRAPH_REFERENCE_DIR")
    if env:
        p = Path(env) / CONTRACT_FILE
        if p.is_file():
            return p
        raise ContractNotFound(f"TSL_GRAPH_REFERENCE_DIR={env} enthält keine {CONTRACT_FILE}")
    here = Path(__file__).resolve().parent
    cwd = Path.cwd().resolve()
    for d in [here, *here.parents, cwd, *cwd.parents]:
        for cand in (d / "shared" / "graph-reference", d.parent / "shared" / "graph-reference"):
            if (cand / CONTRACT_FILE).is_file():
                return cand / CONTRACT_FILE
    raise ContractNotFound(
        "Die Graph-Referenz (shared/graph-reference) wurde nicht gefunden; die Sandbox braucht sie zur "
        "Prüfung. Im Projektordner starten oder TSL_GRAPH_REFERENCE_DIR setzen, oder ohne Prüfung starten."
    )


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    request: dict[str, Any] | None  # schema of the JSON request body
    response: dict[str, Any] | None  # schema of a 2XX JSON answer


class Contract:
    def __init__(self, path: Path | None = None):
        import yaml

        self.path = path or find_contract()
        with open(self.path, encoding="utf-8") as fh:
            self.doc = yaml.safe_load(fh)
        self.components = self.doc["components"]
        self.operations: list[Operation] = []
        for template, item in self.doc["paths"].items():
            clean = template.replace("()", "")
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(clean)) + "$"
            for method, op in item.items():
                if method.upper() not in ("GET", "POST", "PATCH", "PUT", "DELETE"):
                    continue
                req = (
                    ((op.get("requestBody") or {}).get("content") or {}).get("application/json") or {}
                ).get("schema")
                resp = None
                for code, answer in (op.get("responses") or {}).items():
                    if str(code).startswith("2"):
                        answer = self._deref(answer)
                        resp = ((answer.get("content") or {}).get("application/json") or {}).get("schema")
                        break
                self.operations.append(Operation(method.upper(), clean, re.compile(regex), req, resp))
        for (method, template), (req, resp) in FOLDER_OPERATIONS.items():
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.operations.append(Operation(method, template, re.compile(regex), req, resp))
        self._error_schema = self._deref(self.components["responses"]["error"])["content"][
            "application/json"
        ]["schema"]
        self._validators: dict[int, Validator] = {}
        self._lock = threading.Lock()

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not ref:
            return node
        target: Any = self.doc
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        resolved: dict[str, Any] = target
        return resolved

    def operation(self, method: str, path: str) -> Operation | None:
        for op in self.operations:
            if op.method == method and op.pattern.match(path):
                return op
        for (alias_method, template), (method_to, template_to) in ALIASES.items():
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if alias_method == method and re.match(regex, path):
                return next(
                    (o for o in self.operations if o.method == method_to and o.template == template_to), None
                )
        return None

    def _validator(self, schema: dict[str, Any]) -> Validator:
        key = id(schema)
        with self._lock:
            v = self._validators.get(key)
            if v is None:
                from openapi_schema_validator import OAS30Validator

                v = OAS30Validator({**schema, "components": self.components})
                self._validators[key] = v
        return v

    def errors(self, schema: dict[str, Any] | None, instance: Any) -> list[str]:
        if schema is None or instance is None:
            return []
        out = []
        for err in self._validator(schema).iter_errors(instance):
            where = "/".join(str(p) for p in err.absolute_path) or "(Wurzel)"
            out.append(f"{where}: {err.message[:300]}")
        return out

    def request_errors(self, method: str, path: str, body: Any) -> list[str]:
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: kein Pfad im Vertrag"]
        return self.errors(op.request, body)

    def response_errors(self, method: str, path: str, status: int, body: Any) -> list[str]:
        if status >= 400:
            return self.errors(self._error_schema, body)
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: kein Pfad im Vertrag"]
        return self.errors(op.response, body)
