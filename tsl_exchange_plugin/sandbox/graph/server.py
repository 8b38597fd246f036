"""The Graph sandbox's HTTP side: token endpoint, Graph REST routes, $batch, throttling, faults.

What it imitates, and where that is written down (``shared/graph-reference/NOTES.md``):

- **Tokens** (§13): ``/{tenant}/v2.0/.well-known/openid-configuration`` for msal's discovery and
  ``/{tenant}/oauth2/v2.0/token`` for client credentials with a secret or a certificate
  assertion (a JWT signed with the registered certificate's key; ``aud``/``iss``/``sub``/``exp``
  checked). A wrong secret answers 401 ``invalid_client`` AADSTS7000215, an unknown app 400
  ``unauthorized_client`` AADSTS700016. An app without admin consent still gets a token, but
  without ``roles``, and Graph answers 403. Tokens are JWTs the sandbox signs itself.
- **Mailbox scoping** (§14): an app may be limited to some mailboxes; others answer 403
  ``ErrorAccessDenied``. A mailbox marked as on-premises answers 404 ``MailboxNotEnabledForRESTAPI``.
- **Throttling** (§3): per (app, mailbox) at most 4 requests at once (a ``$batch`` holds one slot
  per inner Outlook request, at most 4) and a request budget per window; both answer 429 with
  ``Retry-After`` in seconds.
- **$batch** (§4): at most 20 requests, unique ids, relative urls, answers in a different order
  than asked, ``dependsOn`` failures as 424, a throttled inner request as an inner 429.
- **Faults** (injected by tests): an answer with a status (503, 429, 500, 504), a dropped
  connection before the request is processed, a write that commits and then loses its answer
  (dropped or held until the test releases it).
- **Validation**: with ``validate`` every request and response body (inner $batch ones too) is
  checked against the OpenAPI subset; a violation is recorded and fails the test fixture.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import random
import secrets
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .. import ids, xmlio
from ..engine_ctx import new_folder
from ..ops_items import defaults, normalize
from . import convert as cv
from . import recurrence as rc
from .convert import GraphError, bad

if TYPE_CHECKING:
    from ..engine import SandboxEngine
    from ..fields import Kind

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (or None)

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
ROLES = ("Contacts.ReadWrite", "Calendars.ReadWrite", "Tasks.ReadWrite.All")
DEFAULT_PAGE = 10
MAX_PAGE = 1000
MAX_BATCH = 20
TOKEN_SECONDS = 3599


@dataclass
class GraphApp:
    """An app registration in the sandbox's tenant."""

    client_id: str
    tenant: str
    secret: str | None = None
    certificate_pem: str | None = None  # public certificate for assertions
    consented: bool = True
    mailboxes: set[str] | None = None  # None: every mailbox (no access policy)


@dataclass
class GraphFault:
    """One injected fault. ``kind``: status | drop | drop_after_commit | hang_after_commit."""

    kind: str
    status: int = 503
    retry_after: int | None = None
    mailbox: str | None = None
    method: str | None = None  # applies to requests with this method (a $batch: an inner one)
    path_contains: str | None = None
    count: int | None = 1
    inner: bool = False  # applies to one inner request of a $batch instead of the HTTP request
    code: str = ""
    fired: int = 0
    probability: float = 1.0  # a matching request meets the fault with this chance (count: None)


@dataclass
class _Call:
    app: GraphApp | None
    method: str
    path: str  # below /v1.0, unquoted
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    base: str  # absolute URL of /v1.0


@dataclass
class LoggedRequest:
    """One HTTP request as the sandbox saw it. ``started``/``finished``: UNIX seconds when it
    arrived and when its answer went out (before the first byte, so a client cannot have read
    it earlier); ``back_off``: the longest ``Retry-After`` of the answer, outer or inner;
    ``throttled``: inner requests answered 429 or 503; ``faults``: injected faults that fired."""

    method: str
    path: str
    mailbox: str
    inner: int = 0  # requests inside a $batch
    status: int = 0
    at: float = field(default_factory=time.monotonic)
    parts: list[tuple[str, str]] = field(default_factory=list)  # a $batch: (method, path) of each request
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    back_off: float | None = None
    throttled: int = 0
    faults: tuple[str, ...] = ()


class GraphSandbox:
    """A Graph endpoint over the store of an EWS sandbox (``engine``), on a loopback port."""

    def __init__(
        self,
        engine: SandboxEngine,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        data_dir: str | Path | None = None,
        validate: bool = True,
        delay_ms: float = 0.0,
        concurrency: int = 4,
        budget: tuple[int, float] = (10_000, 600.0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.validate = validate
        self.contract = None
        if validate:
            from .contract import Contract

            self.contract = Contract()
        self.delay = delay_ms / 1000.0
        self.concurrency = concurrency
        self.budget = budget
        self.clock = clock
        self.apps: dict[str, GraphApp] = {}
        self.onprem: set[str] = set()
        self.duplicate_transaction = 201  # or 409: what a repeated transactionId answers (UNCONFIRMED)
        # What writing a different recurrence does to a series' exceptions (recurrence.py): keep | reset.
        self.recurrence_edits = "keep"
        self.faults: list[GraphFault] = []
        self.requests: list[LoggedRequest] = []
        self.violations: list[str] = []
        self.internal_errors: list[str] = []
        self.token_requests = 0
        self.peak_in_flight: dict[str, int] = {}
        # Requests refused because the mailbox already had ``concurrency`` in flight: a client
        # that keeps Exchange Online's limit never meets this.
        self.concurrency_refusals: dict[str, int] = {}
        self._rng = random.Random(7)
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = {}
        self._window: dict[tuple[str, str], deque[Any]] = {}
        self._transactions: dict[tuple[str, str], str] = {}
        self._release = threading.Event()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        directory = Path(data_dir or self.store.path.parent) / "graph"
        self._ssl = None
        self.cert_pem_path: str | None = None
        if tls:
            from .. import tls as tls_mod

            files = tls_mod.generate_self_signed(directory / "tls")
            self._ssl = tls_mod.server_context(files)
            self.cert_pem_path = files.cert_pem_path
        self._httpd = _Server((host, port), self)
        bound = self._httpd.server_address
        self.port = bound[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.graph_url = self.url + "/v1.0"
        self.authority_host = self.url
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GraphSandbox:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="graph-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._release.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> GraphSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ set-up for tests
    def add_app(self, app: GraphApp) -> GraphApp:
        self.apps[app.client_id] = app
        return app

    def authority(self, tenant: str) -> str:
        return f"{self.url}/{tenant}"

    def inject(self, kind: str, **kw: Any) -> GraphFault:
        fault = GraphFault(kind, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def release_held(self) -> None:
        """Let answers held by ``hang_after_commit`` go (they find their connection closed)."""
        self._release.set()

    def log(self, mailbox: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if mailbox is None or r.mailbox == mailbox.lower()]

    # ------------------------------------------------------------------ inspection / phone
    def items(self, mailbox: str, kind: str) -> list[dict[str, Any]]:
        """Graph JSON of every item of ``kind`` (contacts, events, tasks) with our key expanded."""
        mb = mailbox.lower()
        with self.store.lock:
            if kind == "tasks":
                out = []
                for folder in self._task_folders(mb):
                    for row in self.store.items(mb, folder["id"]):
                        item = cv.task_out(row, True)
                        item["listId"] = cv.rest_id(folder["id"])
                        out.append(item)
                return out
            known = self._distinguished(mb, "contacts" if kind == "contacts" else "calendar")
            rows = self.store.items(mb, known["id"])
        prop = "String {00020329-0000-0000-C000-000000000046} Name tslRecordId"
        if kind == "contacts":
            return [cv.contact_out(r, prop) for r in rows]
        return [rc.event_view(r, None, "UTC", prop, None) for r in rows]

    def phone_delete(self, mailbox: str, rest: str) -> None:
        with self.store.lock:
            with self.store.transaction():
                self.store.delete_item(cv.ews_id(rest))

    def phone_edit(self, mailbox: str, rest: str, body: dict[str, Any]) -> None:
        """Change an item as a phone would (Graph field names); it gets a new change key."""
        mb = mailbox.lower()
        with self.store.lock:
            row = self.store.item(mb, cv.ews_id(rest))
            if row is None:
                raise KeyError(rest)
            apply = {"Contact": cv.contact_apply, "CalendarItem": cv.event_apply, "Task": cv.task_apply}
            apply[row["kind"]](row, body)
            row["change_key"] = ids.new_change_key()
            row["modified"] = xmlio.utc_now()
            with self.store.transaction():
                self.store.update_item(row)

    # ------------------------------------------------------------------ tokens
    def _issue(self, app: GraphApp) -> dict[str, Any]:
        import jwt

        now = int(self.clock())
        claims = {
            "aud": "https://graph.microsoft.com",
            "iss": f"{self.url}/{app.tenant}/v2.0",
            "appid": app.client_id,
            "tid": app.tenant,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_SECONDS,
            "jti": uuid.uuid4().hex,
        }
        if app.consented:
            claims["roles"] = list(ROLES)
        token = jwt.encode(claims, self._signing_key, algorithm="HS256")
        return {
            "token_type": "Bearer",
            "expires_in": TOKEN_SECONDS,
            "ext_expires_in": TOKEN_SECONDS,
            "access_token": token,
        }

    def token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if form.get("grant_type") != "client_credentials":
            return _aad(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("scope") != GRAPH_SCOPE:
            return _aad(
                400,
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid.",
            )
        if app is None or app.tenant != tenant:
            return _aad(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
            )
        if "client_assertion" in form:
            problem = self._check_assertion(app, tenant, form)
            if problem:
                return _aad(401, "invalid_client", 700027, problem)
            return 200, self._issue(app)
        if app.secret is None or not secrets.compare_digest(form.get("client_secret", ""), app.secret):
            return _aad(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                "secret value, not the client secret ID.",
            )
        return 200, self._issue(app)

    def _check_assertion(self, app: GraphApp, tenant: str, form: dict[str, str]) -> str:
        import jwt
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return "Invalid client assertion type."
        if not app.certificate_pem:
            return "No certificate is registered for this application."
        cert = x509.load_pem_x509_certificate(app.certificate_pem.encode())
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            # RS256, PS256 and ES256 are the algorithms accepted below.
            return "Client assertion failed signature validation. (the certificate has neither an RSA nor an EC key)"
        try:
            claims = jwt.decode(
                form["client_assertion"],
                key,
                algorithms=["RS256", "PS256", "ES256"],
                audience=[f"{self.url}/{tenant}/oauth2/v2.0/token"],
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            return f"Client assertion failed signature validation. ({type(exc).__name__})"
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return "Client assertion issuer or subject does not match the client id."
        return ""

    def _app_of(self, headers: dict[str, str]) -> GraphApp:
        import jwt

        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = jwt.decode(
                auth[7:].strip(),
                self._signing_key,
                algorithms=["HS256"],
                audience="https://graph.microsoft.com",
                # Time is checked below against the sandbox's clock, which tests may move.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed.") from None
        if claims["exp"] <= self.clock():
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."
            )
        app = self.apps.get(claims.get("appid", ""))
        if app is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        if not claims.get("roles"):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return app

    # ------------------------------------------------------------------ throttling
    def _admit(self, app: GraphApp, mailbox: str, slots: int, requests: int) -> GraphError | None:
        key = (app.client_id, mailbox)
        now = time.monotonic()
        limit, window = self.budget
        with self._lock:
            used = self._window.setdefault(key, deque())
            while used and used[0] <= now - window:
                used.popleft()
            if len(used) + requests > limit:
                wait = max(1, int(used[0] + window - now) + 1) if used else int(window)
                return GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxRequests limit.",
                    {"Retry-After": str(wait)},
                )
            current = self._in_flight.get(key, 0)
            if current + slots > self.concurrency:
                self.concurrency_refusals[mailbox] = self.concurrency_refusals.get(mailbox, 0) + 1
                return GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": "1"},
                )
            self._in_flight[key] = current + slots
            self.peak_in_flight[mailbox] = max(self.peak_in_flight.get(mailbox, 0), current + slots)
            used.extend([now] * requests)
        return None

    def _leave(self, app: GraphApp, mailbox: str, slots: int) -> None:
        with self._lock:
            key = (app.client_id, mailbox)
            self._in_flight[key] = self._in_flight.get(key, 0) - slots

    def _fault(
        self, method: str, path: str, mailbox: str, inner: bool, parts: list[tuple[str, str]] | None = None
    ) -> GraphFault | None:
        """The next armed fault for this request. A $batch (``parts``: its requests' methods and
        paths) matches a fault's method and path if one of its requests does."""
        wanted = parts if parts else [(method, path)]
        with self._lock:
            for f in self.faults:
                if f.count is not None and f.fired >= f.count:
                    continue
                if f.inner != inner:
                    continue
                if f.mailbox and f.mailbox.lower() != mailbox:
                    continue
                if not any(
                    (not f.method or f.method == m) and (not f.path_contains or f.path_contains in p)
                    for m, p in wanted
                ):
                    continue
                if f.probability < 1.0 and self._rng.random() >= f.probability:
                    continue
                f.fired += 1
                return f
        return None

    # ------------------------------------------------------------------ Graph dispatch
    def handle(self, call: _Call) -> Answer:
        """One Graph request (outer or inside a $batch) -> (status, headers, JSON body)."""
        try:
            if self.contract is not None and call.body is not None and call.method in ("POST", "PATCH"):
                template = "/$batch" if call.path == "/$batch" else call.path
                for problem in self.contract.request_errors(call.method, template, call.body):
                    self._violation(f"Anfrage {call.method} {call.path}: {problem}")
            status, headers, body = self._route(call)
        except GraphError as err:
            status, headers, body = err.status, dict(err.headers), _error_body(err, call.headers)
        if self.contract is not None and body is not None and call.path != "/$batch":
            for problem in self.contract.response_errors(call.method, call.path, status, body):
                self._violation(f"Antwort {call.method} {call.path} {status}: {problem}")
        return status, headers, body

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def _route(self, call: _Call) -> Answer:
        parts = [unquote(p) for p in call.path.strip("/").split("/")]
        if len(parts) < 3 or parts[0] != "users":
            raise bad("BadRequest", f"Resource not found for the segment '{parts[0] if parts else ''}'.", 400)
        mailbox = parts[1].lower()
        app = call.app
        assert app is not None
        if not self.engine.has_mailbox(mailbox):
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{parts[1]}' is invalid.")
        if mailbox in self.onprem:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        if app.mailboxes is not None and mailbox not in {m.lower() for m in app.mailboxes}:
            raise GraphError(
                403,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
            )
        rest = parts[2:]
        m = call.method
        with self.store.lock:
            if rest == ["contacts"]:
                return (
                    self._collection(call, mailbox, "contacts")
                    if m == "GET"
                    else self._create(call, mailbox, "Contact")
                )
            if rest[0] == "contacts" and len(rest) == 2:
                return self._item(call, mailbox, "Contact", rest[1])
            if rest == ["events"]:
                return (
                    self._collection(call, mailbox, "events")
                    if m == "GET"
                    else self._create(call, mailbox, "CalendarItem")
                )
            if rest[0] == "events" and len(rest) == 2:
                return self._item(call, mailbox, "CalendarItem", rest[1])
            if rest[0] == "events" and rest[2:] == ["instances"] and m == "GET":
                return self._instances(call, mailbox, rest[1])
            if rest == ["calendarView"] and m == "GET":
                return self._collection(call, mailbox, "calendarView")
            if rest[:2] == ["todo", "lists"]:
                return self._todo(call, mailbox, rest[2:])
            if rest[0] == "contactFolders":
                return self._contact_folders(call, mailbox, rest[1:])
            if rest[0] == "calendars":
                return self._calendars(call, mailbox, rest[1:])
        raise bad("BadRequest", f"Resource not found for the segment '{rest[-1]}'.", 400)

    # -------------------------------------------------------------- items
    def _folder_for(self, mailbox: str, kind: str) -> dict[str, Any]:
        name = {"Contact": "contacts", "CalendarItem": "calendar"}[kind]
        return self._distinguished(mailbox, name)

    def _distinguished(self, mailbox: str, name: str) -> dict[str, Any]:
        """A well-known folder; every sandbox mailbox is made with all of them."""
        folder = self.store.distinguished(mailbox, name)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified folder was not found in the store.")
        return folder

    def _out(self, row: dict[str, Any], call: _Call, occ: Any = None) -> dict[str, Any]:
        expand = _expand_ext(call.query.get("$expand"))
        if row["kind"] == "Contact":
            return cv.contact_out(row, expand)
        if row["kind"] == "CalendarItem":
            zone = _prefer_zone(call.headers)
            txn = self._transaction_of(row) if occ is None else None
            out = rc.event_view(row, occ, zone, expand, txn)
            if occ is None and rc.is_master(row):
                # Returned only when asked for, on a GET of the master (event resource).
                if "cancelledOccurrences" in (call.query.get("$select") or ""):
                    out["cancelledOccurrences"] = rc.cancelled_ids(row)
                if "exceptionOccurrences" in (call.query.get("$expand") or ""):
                    out["exceptionOccurrences"] = [
                        rc.event_view(row, o, zone, None, None) for o in rc.exception_occurrences(row)
                    ]
            return out
        return cv.task_out(row, "linkedResources" in (call.query.get("$expand") or ""))

    def _transaction_of(self, row: dict[str, Any]) -> str | None:
        for (mb, txn), item_id in self._transactions.items():
            if item_id == row["id"] and mb == row["mailbox"]:
                return txn
        return None

    def _create(
        self, call: _Call, mailbox: str, kind: str, folder: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        if call.method != "POST":
            raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
        body = call.body if isinstance(call.body, dict) else None
        if body is None:
            raise bad("BadRequest", "Empty Payload. JSON content expected.")
        txn = body.get("transactionId") if kind == "CalendarItem" else None
        if txn:
            existing = self._transactions.get((mailbox, txn))
            earlier = self.store.item(mailbox, existing) if existing else None
            if earlier is not None:
                if self.duplicate_transaction == 409:
                    raise GraphError(
                        409,
                        "ErrorDuplicateTransactionId",
                        "A request with this transactionId was already processed.",
                    )
                return 201, {}, self._out(earlier, call)
        folder = folder or self._folder_for(mailbox, kind)
        now = xmlio.utc_now()
        row = {
            "id": ids.new_item_id(),
            "mailbox": mailbox,
            "folder_id": folder["id"],
            "kind": kind,
            "change_key": ids.new_change_key(),
            "data": {},
            "ext": {},
            "created": now,
            "modified": now,
        }
        self._apply(row, body)
        defaults(_KIND[kind], row["data"])
        with self.store.transaction():
            self.store.insert_item(row)
        if txn:
            self._transactions[(mailbox, txn)] = row["id"]
        return 201, {"Location": f"{call.base}{call.path}/{cv.rest_id(row['id'])}"}, self._out(row, call)

    def _apply(self, row: dict[str, Any], body: dict[str, Any]) -> None:
        before = copy.deepcopy(row["data"])
        if row["kind"] == "Contact":
            cv.contact_apply(row, body)
        elif row["kind"] == "CalendarItem":
            cv.event_apply(row, body)
            rc.apply(row, body, before, self.recurrence_edits)
        else:
            cv.task_apply(row, body)
        changed = {k for k in set(before) | set(row["data"]) if before.get(k) != row["data"].get(k)}
        try:
            normalize(_KIND[row["kind"]], row["data"], changed)
        except Exception as exc:
            raise bad("ErrorInvalidRequest", str(exc)) from None

    def _item(
        self, call: _Call, mailbox: str, kind: str, rest_id: str, folder: dict[str, Any] | None = None
    ) -> Answer:
        if kind == "CalendarItem":
            instance = rc.parse_instance_id(cv.ews_id(rest_id))
            if instance is not None:
                return self._instance(call, mailbox, *instance)
        row = self.store.item(mailbox, cv.ews_id(rest_id))
        if row is None or row["kind"] != kind or (folder is not None and row["folder_id"] != folder["id"]):
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if call.method == "GET":
            return 200, {}, self._out(row, call)
        if call.method == "DELETE":
            match = call.headers.get("if-match")
            if match and match != "*" and match != cv.etag(row["change_key"]):
                raise GraphError(
                    412,
                    "ErrorIrresolvableConflict",
                    "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                )
            with self.store.transaction():
                self.store.delete_item(row["id"])
            return 204, {}, None
        if call.method == "PATCH":
            if not isinstance(call.body, dict):
                raise bad("BadRequest", "Empty Payload. JSON content expected.")
            if "transactionId" in call.body:
                raise bad("ErrorInvalidRequest", "transactionId cannot be changed.")
            match = call.headers.get("if-match")
            if match and match != "*" and match != cv.etag(row["change_key"]):
                raise GraphError(
                    412,
                    "ErrorIrresolvableConflict",
                    "The change key passed in the request does not match the current change key for the item.",
                )
            self._apply(row, call.body)
            row["change_key"] = ids.new_change_key()
            row["modified"] = xmlio.utc_now()
            with self.store.transaction():
                self.store.update_item(row)
            return 200, {}, self._out(row, call)
        raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")

    def _master(self, mailbox: str, master_id: str) -> dict[str, Any]:
        row = self.store.item(mailbox, master_id)
        if row is None or row["kind"] != "CalendarItem" or not rc.is_master(row):
            raise GraphError(404, "ErrorItemNotFound", rc.NOT_FOUND)
        return row

    def _instance(self, call: _Call, mailbox: str, master_id: str, index: int) -> Answer:
        """GET, PATCH (makes an exception) or DELETE (cancels) one instance of a series."""
        row = self._master(mailbox, master_id)
        if call.method == "GET":
            return 200, {}, self._out(row, call, rc.occurrence(row, index))
        row = copy.deepcopy(row)
        if call.method == "PATCH":
            if not isinstance(call.body, dict):
                raise bad("BadRequest", "Empty Payload. JSON content expected.")
            occ = rc.update_instance(row, index, call.body, cv.event_apply)
        elif call.method == "DELETE":
            rc.cancel_instance(row, index)
            occ = None
        else:
            raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
        # An exception lives in its master: the master's change key moves.
        row["change_key"] = ids.new_change_key()
        row["modified"] = xmlio.utc_now()
        with self.store.transaction():
            self.store.update_item(row)
        if occ is None:
            return 204, {}, None
        return 200, {}, self._out(row, call, occ)

    @staticmethod
    def _time_window(call: _Call) -> tuple[datetime, datetime]:
        start = call.query.get("startDateTime")
        end = call.query.get("endDateTime")
        if not start or not end:
            raise bad(
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
            )
        try:
            return xmlio.parse_datetime(start), xmlio.parse_datetime(end)
        except ValueError:
            raise bad("ErrorInvalidParameter", "Invalid startDateTime or endDateTime.") from None

    def _instances(self, call: _Call, mailbox: str, rest_id: str) -> Answer:
        """``/events/{id}/instances``: a master's occurrences and exceptions in the window."""
        lo, hi = self._time_window(call)
        ews = cv.ews_id(rest_id)
        row = self.store.item(mailbox, ews)
        if row is None or row["kind"] != "CalendarItem":
            raise GraphError(404, "ErrorItemNotFound", rc.NOT_FOUND)
        entries = [(row, o) for o in rc.expand(row, lo, hi)] if rc.is_master(row) else []
        return self._page(call, "instances", entries)

    def _collection(
        self, call: _Call, mailbox: str, what: str, folder: dict[str, Any] | None = None
    ) -> Answer:
        if what == "tasks":
            assert folder is not None  # a To Do list's tasks
            rows = self.store.items(mailbox, folder["id"])
        else:
            f = folder or self._distinguished(mailbox, "contacts" if what == "contacts" else "calendar")
            rows = self.store.items(mailbox, f["id"])
        flt = call.query.get("$filter")
        if flt:
            test = _filter(flt)
            rows = [r for r in rows if test(r)]
        entries: list[tuple[dict[str, Any], Any]] = [(r, None) for r in rows]
        if what == "calendarView":
            lo, hi = self._time_window(call)
            entries = []
            for r in rows:
                if rc.is_master(r):
                    # The view shows a series as its instances, never the master (calendarView).
                    entries += [(r, o) for o in rc.expand(r, lo, hi)]
                elif cv.event_span(r)[0] < hi and cv.event_span(r)[1] > lo:
                    entries.append((r, None))
            entries.sort(key=lambda e: (e[1].data if e[1] is not None else e[0]["data"]).get("Start") or "")
        return self._page(call, what, entries)

    def _page(self, call: _Call, what: str, entries: list[tuple[dict[str, Any], Any]]) -> Answer:
        try:
            top = min(MAX_PAGE, int(call.query.get("$top") or DEFAULT_PAGE))
        except ValueError:
            raise bad("BadRequest", "Invalid $top.") from None
        offset = _skip_offset(call.query.get("$skiptoken"))
        page = entries[offset : offset + top]
        out: dict[str, Any] = {
            "@odata.context": f"{call.base}/$metadata#{what}",
            "value": [self._out(r, call, o) for r, o in page],
        }
        if offset + top < len(entries):
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = base64.urlsafe_b64encode(json.dumps({"o": offset + top}).encode()).decode()
            out["@odata.nextLink"] = f"{call.base}{call.path}?" + "&".join(
                f"{k}={quote(v, safe='()$=,:')}" for k, v in query.items()
            )
        return 200, {}, out

    # -------------------------------------------------------------- folders
    # Contact folders and calendars are folders of the one store behind both sandboxes: a
    # subfolder made over EWS is the same folder here, and the other way round.
    def _child_folders(self, mailbox: str, parent: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        return [
            f
            for f in self.store.folders(mailbox)
            if f["parent_id"] == parent["id"] and (f["folder_class"] or "").startswith(prefix)
        ]

    def _new_child(self, mailbox: str, parent: dict[str, Any], name: str, prefix: str) -> dict[str, Any]:
        name = name.strip()
        if not name:
            raise bad("ErrorInvalidRequest", "The folder name is missing.")
        # Exchange keeps sibling folder names unique, ignoring case (as CreateFolder over EWS).
        if any(
            f["display_name"].casefold() == name.casefold()
            for f in self.store.folders(mailbox)
            if f["parent_id"] == parent["id"]
        ):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        folder = new_folder(mailbox, parent["id"], name, prefix, None)
        with self.store.transaction():
            self.store.insert_folder(folder)
        return folder

    def _delete_folder(self, folder: dict[str, Any]) -> Answer:
        """A folder deleted (in Outlook, on a phone), with what it holds."""
        with self.store.transaction():
            self.store.delete_folder(folder["id"])
        return 204, {}, None

    def _contact_folder_out(self, folder: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": cv.rest_id(folder["id"]),
            "displayName": folder["display_name"],
            "parentFolderId": cv.rest_id(folder["parent_id"]),
        }

    def _contact_folders(self, call: _Call, mailbox: str, rest: list[str]) -> Answer:
        """``/contactFolders`` (the children of the default contacts folder), one folder, its
        ``childFolders`` and its ``contacts``."""
        m = call.method
        default = self._distinguished(mailbox, "contacts")
        parent = default
        if rest:
            found = next((f for f in self.store.folders(mailbox) if cv.rest_id(f["id"]) == rest[0]), None)
            if found is None or not (found["folder_class"] or "").startswith("IPF.Contact"):
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            parent = found
        if not rest or rest[1:] == ["childFolders"]:
            if m == "GET":
                values = [
                    self._contact_folder_out(f) for f in self._child_folders(mailbox, parent, "IPF.Contact")
                ]
                return 200, {}, {"@odata.context": f"{call.base}/$metadata#contactFolders", "value": values}
            if m == "POST":
                name = str((call.body or {}).get("displayName") or "")
                return (
                    201,
                    {},
                    self._contact_folder_out(self._new_child(mailbox, parent, name, "IPF.Contact")),
                )
        elif len(rest) == 1 and m == "GET":
            return 200, {}, self._contact_folder_out(parent)
        elif len(rest) == 1 and m == "DELETE" and parent is not default:
            return self._delete_folder(parent)
        elif rest[1:] == ["contacts"]:
            if m == "GET":
                return self._collection(call, mailbox, "contacts", parent)
            return self._create(call, mailbox, "Contact", parent)
        elif len(rest) == 3 and rest[1] == "contacts":
            return self._item(call, mailbox, "Contact", rest[2], parent)
        raise bad("BadRequest", "Resource not found.", 400)

    def _calendar_out(self, folder: dict[str, Any]) -> dict[str, Any]:
        default = folder["distinguished"] == "calendar"
        return {
            "id": cv.rest_id(folder["id"]),
            "name": folder["display_name"],
            "changeKey": folder.get("change_key") or "",
            "color": "auto",
            "isDefaultCalendar": default,
            "canEdit": True,
            "canShare": True,
            "canViewPrivateItems": True,
            "isRemovable": not default,
        }

    def _calendars(self, call: _Call, mailbox: str, rest: list[str]) -> Answer:
        """``/calendars``: the default calendar and its subfolders (Exchange Online shows them in the
        default calendar group); one calendar's ``events`` and ``calendarView``."""
        m = call.method
        default = self._distinguished(mailbox, "calendar")
        if not rest:
            if m == "GET":
                folders = [default] + self._child_folders(mailbox, default, "IPF.Appointment")
                values = [self._calendar_out(f) for f in folders]
                return 200, {}, {"@odata.context": f"{call.base}/$metadata#calendars", "value": values}
            if m == "POST":
                name = str((call.body or {}).get("name") or "")
                return 201, {}, self._calendar_out(self._new_child(mailbox, default, name, "IPF.Appointment"))
        folder = next(
            (
                f
                for f in [default] + self._child_folders(mailbox, default, "IPF.Appointment")
                if cv.rest_id(f["id"]) == rest[0]
            ),
            None,
        )
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if len(rest) == 1 and m == "GET":
            return 200, {}, self._calendar_out(folder)
        if len(rest) == 1 and m == "DELETE" and folder is not default:
            return self._delete_folder(folder)
        if rest[1:] == ["events"]:
            if m == "GET":
                return self._collection(call, mailbox, "events", folder)
            return self._create(call, mailbox, "CalendarItem", folder)
        if rest[1:] == ["calendarView"] and m == "GET":
            return self._collection(call, mailbox, "calendarView", folder)
        if len(rest) == 3 and rest[1] == "events":
            return self._item(call, mailbox, "CalendarItem", rest[2], folder)
        raise bad("BadRequest", "Resource not found.", 400)

    # -------------------------------------------------------------- To Do
    def _task_folders(self, mailbox: str) -> list[dict[str, Any]]:
        return [f for f in self.store.folders(mailbox) if (f["folder_class"] or "").startswith("IPF.Task")]

    def _list_out(self, folder: dict[str, Any]) -> dict[str, Any]:
        default = folder["distinguished"] == "tasks"
        return {
            "id": cv.rest_id(folder["id"]),
            "displayName": folder["display_name"],
            "isOwner": True,
            "isShared": False,
            "wellknownListName": "defaultList" if default else "none",
        }

    def _todo(self, call: _Call, mailbox: str, rest: list[str]) -> Answer:
        m = call.method
        if not rest:
            if m == "GET":
                lists = [self._list_out(f) for f in self._task_folders(mailbox)]
                return 200, {}, {"@odata.context": f"{call.base}/$metadata#lists", "value": lists}
            if m == "POST":
                name = str((call.body or {}).get("displayName") or "").strip()
                if not name:
                    raise bad("BadRequest", "displayName is required.")
                root = self._distinguished(mailbox, "msgfolderroot")
                created = new_folder(mailbox, root["id"], name, "IPF.Task", None)
                with self.store.transaction():
                    self.store.insert_folder(created)
                return 201, {}, self._list_out(created)
        folder: dict[str, Any] | None = next(
            (f for f in self._task_folders(mailbox) if cv.rest_id(f["id"]) == rest[0]), None
        )
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if len(rest) == 1:
            if m == "GET":
                return 200, {}, self._list_out(folder)
            if m == "DELETE":
                with self.store.transaction():
                    self.store.delete_folder(folder["id"])
                return 204, {}, None
        if rest[1:] == ["tasks"]:
            if m == "GET":
                return self._collection(call, mailbox, "tasks", folder)
            return self._create(call, mailbox, "Task", folder)
        if len(rest) == 3 and rest[1] == "tasks":
            return self._item(call, mailbox, "Task", rest[2], folder)
        raise bad("BadRequest", "Resource not found.", 400)

    # -------------------------------------------------------------- $batch
    def batch(self, call: _Call) -> tuple[int, dict[str, Any], Any]:
        body = call.body
        if self.contract is not None:
            for problem in self.contract.request_errors("POST", "/$batch", body):
                self._violation(f"Anfrage POST /$batch: {problem}")
        reqs = (body or {}).get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs:
            raise bad("BadRequest", "Invalid batch payload format.")
        if len(reqs) > MAX_BATCH:
            raise bad("BadRequest", f"Number of batch request steps exceeds the maximum of {MAX_BATCH}.")
        seen = set()
        for r in reqs:
            rid = str(r.get("id", "")).lower()
            if not rid or rid in seen:
                raise bad("BadRequest", "Batch request contains duplicate or missing ids.")
            seen.add(rid)
            if str(r.get("url", "")).startswith(("http", "/v1.0")):
                raise bad("BadRequest", "Invalid request URI: batch urls must be relative.")
            if "body" in r and "content-type" not in {k.lower() for k in (r.get("headers") or {})}:
                raise bad("BadRequest", "Content-Type header is required when a body is present.")
        status_of: dict[str, int] = {}
        answers = []
        for r in reqs:
            rid = str(r["id"])
            failed_dep = [d for d in r.get("dependsOn") or () if not 200 <= status_of.get(str(d), 0) < 300]
            if failed_dep:
                headers: dict[str, Any]
                status, headers, rbody = (
                    424,
                    {},
                    _error_body(GraphError(424, "FailedDependency", "A request it depends on failed."), {}),
                )
            else:
                status, headers, rbody = self._inner(call, r)
            status_of[rid] = status
            item = {"id": rid, "status": status, "headers": {"Content-Type": "application/json", **headers}}
            if rbody is not None:
                item["body"] = rbody
            answers.append(item)
        answers.reverse()  # Graph does not keep the order; clients must correlate by id
        out = {"responses": answers}
        if self.contract is not None:
            for problem in self.contract.response_errors("POST", "/$batch", 200, out):
                self._violation(f"Antwort POST /$batch: {problem}")
        return 200, {}, out

    def _inner(self, outer: _Call, r: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
        url = urlsplit(str(r.get("url", "")))
        path = unquote(url.path)
        mailbox = _mailbox_of(path)
        fault = self._fault(str(r.get("method", "")).upper(), path, mailbox, True)
        if fault is not None:
            err = GraphError(fault.status, fault.code or _code_for(fault.status), "Injected fault.")
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return fault.status, headers, _error_body(err, {})
        headers = {k.lower(): v for k, v in (r.get("headers") or {}).items()}
        headers.setdefault("authorization", outer.headers.get("authorization", ""))
        call = _Call(
            outer.app,
            str(r.get("method", "")).upper(),
            path,
            _query(url.query),
            headers,
            r.get("body"),
            outer.base,
        )
        return self.handle(call)


_KIND: dict[str, Kind] = {}


def _kinds() -> None:
    from ..fields import KINDS

    _KIND.update({k: v for k, v in KINDS.items()})


_kinds()


def _aad(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
    trace = uuid.uuid4()
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {uuid.uuid4()}\r\nTimestamp: {xmlio.utc_now()}",
        "error_codes": [code],
        "timestamp": xmlio.utc_now(),
        "trace_id": str(trace),
        "correlation_id": str(uuid.uuid4()),
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _note_inner_throttling(entry: LoggedRequest, out: Any) -> None:
    """Inner answers of a $batch that asked the client to wait, into the log entry."""
    if not isinstance(out, dict):
        return
    for item in out.get("responses") or ():
        if item.get("status") not in (429, 503):
            continue
        entry.throttled += 1
        raw = (item.get("headers") or {}).get("Retry-After")
        try:
            wait = float(raw) if raw is not None else None
        except ValueError:
            wait = None
        if wait is not None and (entry.back_off is None or wait > entry.back_off):
            entry.back_off = wait


def _code_for(status: int) -> str:
    return {
        429: "TooManyRequests",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
        500: "InternalServerError",
    }.get(status, "UnknownError")


def _error_body(err: GraphError, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "error": {
            "code": err.code,
            "message": err.message,
            "innerError": {
                "date": xmlio.utc_now().rstrip("Z"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": headers.get("client-request-id", str(uuid.uuid4())),
            },
        }
    }


def _query(text: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _mailbox_of(path: str) -> str:
    parts = path.strip("/").split("/")
    return parts[1].lower() if len(parts) > 1 and parts[0] == "users" else ""


def _prefer_zone(headers: dict[str, str]) -> str:
    prefer = headers.get("prefer", "")
    for part in prefer.split(","):
        part = part.strip()
        if part.lower().startswith("outlook.timezone="):
            return part.split("=", 1)[1].strip().strip('"')
    return "UTC"


def _skip_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except Exception:
        raise bad("BadRequest", "Invalid $skiptoken.") from None


_ANY = "singlevalueextendedproperties/any(ep:"


def _expand_ext(expand: str | None) -> str | None:
    """The property id of ``singleValueExtendedProperties($filter=id eq '...')``, or None."""
    if not expand:
        return None
    prefix = "singleValueExtendedProperties($filter=id eq "
    for part in _split_top(expand):
        if part.startswith(prefix) and part.endswith(")"):
            return _unquote_literal(part[len(prefix) : -1].strip())
        if part.startswith("singleValueExtendedProperties"):
            raise bad("BadRequest", "Parsing Select and Expand failed.")
    return None


def _split_top(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _unquote_literal(text: str) -> str:
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        raise bad("BadRequest", f"Invalid literal {text!r}.")
    return text[1:-1].replace("''", "'")


def _literal_at(text: str, pos: int) -> tuple[str, int]:
    """The quoted literal starting at ``text[pos]`` and the index after it."""
    if pos >= len(text) or text[pos] != "'":
        raise bad("BadRequest", "Invalid filter clause: a quoted value was expected.")
    i = pos + 1
    out = ""
    while i < len(text):
        if text[i] == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out += "'"
                i += 2
                continue
            return out, i + 1
        out += text[i]
        i += 1
    raise bad("BadRequest", "Invalid filter clause: unterminated literal.")


def _filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """The extended-property filters Graph documents (NOTES §6) -> a row predicate."""
    t = text.strip()
    low = t.lower()
    if low.startswith("id eq") or low.startswith("id "):
        raise bad("ErrorInvalidProperty", "The property 'Id' does not support filtering.")
    if not low.startswith(_ANY) or not t.endswith(")"):
        raise bad("BadRequest", f"Invalid filter clause: {t[:80]}")
    inner = t[len(_ANY) : -1].strip()
    if not inner.startswith("ep/id eq "):
        raise bad("BadRequest", "Invalid filter clause: ep/id eq '...' expected.")
    prop, pos = _literal_at(inner, len("ep/id eq "))
    key, _ = cv.parse_ext_id(prop)
    rest = inner[pos:].strip()
    if not rest.lower().startswith("and "):
        return lambda row: key in row["ext"]
    cond = rest[4:].strip()
    for op in ("eq", "ne"):
        head = f"ep/value {op} "
        if cond.startswith(head):
            value, end = _literal_at(cond, len(head))
            if cond[end:].strip():
                raise bad("BadRequest", "Invalid filter clause.")
            v = value.lower()
            if op == "eq":
                return lambda row: key in row["ext"] and str(row["ext"][key].get("value", "")).lower() == v
            return lambda row: key in row["ext"] and str(row["ext"][key].get("value", "")).lower() != v
    for fn in ("startswith", "contains"):
        head = f"{fn}(ep/value,"
        if cond.replace(", ", ",").startswith(head):
            c = cond.replace(", ", ",", 1)
            value, end = _literal_at(c, len(head))
            if c[end:].strip() != ")":
                raise bad("BadRequest", "Invalid filter clause.")
            v = value.lower()
            if fn == "startswith":
                return lambda row: (
                    key in row["ext"] and str(row["ext"][key].get("value", "")).lower().startswith(v)
                )
            return lambda row: key in row["ext"] and v in str(row["ext"][key].get("value", "")).lower()
    raise bad("BadRequest", f"Invalid filter clause: {cond[:80]}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: GraphSandbox):
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.sandbox._ssl is not None:
            sock = self.sandbox._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("graph sandbox connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _entry: LoggedRequest | None = None  # the request being answered, for its log entry

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(120)
        with self.server.sandbox._lock:
            self.server.sandbox._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sandbox._lock:
                self.server.sandbox._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self._finished()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _finished(self) -> None:
        entry = getattr(self, "_entry", None)
        if entry is not None:
            entry.finished = time.time()
            self._entry = None

    def _drop(self) -> None:
        self._finished()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802
        self._safe()

    def do_POST(self) -> None:  # noqa: N802
        self._safe()

    def do_PATCH(self) -> None:  # noqa: N802
        self._safe()

    def do_DELETE(self) -> None:  # noqa: N802
        self._safe()

    def _safe(self) -> None:
        sb = self.server.sandbox
        try:
            self._dispatch()
        except Exception:
            text = traceback.format_exc()
            with sb._lock:
                sb.internal_errors.append(text)
            log.error("graph sandbox internal error: %s", text)
            try:
                self._send(500, _error_body(GraphError(500, "InternalServerError", "Sandbox error."), {}))
            except OSError:
                pass

    def _dispatch(self) -> None:
        sb = self.server.sandbox
        url = urlsplit(self.path)
        path = unquote(url.path)
        raw = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/sandbox/api/"):
            return self._api(path, url.query, raw)
        segs = path.strip("/").split("/")
        if len(segs) >= 2 and path.endswith("/v2.0/.well-known/openid-configuration"):
            tenant = segs[0]
            base = f"{sb.url}/{tenant}"
            return self._send(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
            )
        if len(segs) == 4 and segs[1:] == ["oauth2", "v2.0", "token"] and self.command == "POST":
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            status, body = sb.token(segs[0], form)
            return self._send(status, body)
        if not path.startswith("/v1.0/"):
            return self._send(404, _error_body(GraphError(404, "BadRequest", "Invalid version."), headers))
        gpath = path[len("/v1.0") :]
        payload: Any = None  # the parsed JSON request body
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                return self._send(
                    400, _error_body(bad("BadRequest", "Unable to read JSON request payload."), headers)
                )
        mailbox = _mailbox_of(gpath)
        inner = (
            len((payload or {}).get("requests") or [])
            if gpath == "/$batch" and isinstance(payload, dict)
            else 0
        )
        if inner:
            # A batch is logged (and faults match) by the mailbox of its first request.
            first = payload["requests"][0]
            mailbox = _mailbox_of(unquote(urlsplit(str((first or {}).get("url", ""))).path))
        parts = [
            (str(r.get("method", "")).upper(), unquote(urlsplit(str(r.get("url", ""))).path))
            for r in ((payload or {}).get("requests") or [] if inner else [])
            if isinstance(r, dict)
        ]
        entry = self._entry = LoggedRequest(self.command, gpath, mailbox, inner, parts=parts)
        with sb._lock:
            sb.requests.append(entry)
        fault = sb._fault(self.command, gpath, mailbox, False, parts)
        if fault is not None:
            entry.faults = (fault.kind,)
        if fault is not None and fault.kind == "drop":
            return self._drop()
        if fault is not None and fault.kind == "status":
            h = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            entry.status = fault.status
            entry.back_off = float(fault.retry_after) if fault.retry_after is not None else None
            return self._send(
                fault.status,
                _error_body(
                    GraphError(fault.status, fault.code or _code_for(fault.status), "Injected fault."),
                    headers,
                ),
                h,
            )
        try:
            app = sb._app_of(headers)
        except GraphError as err:
            entry.status = err.status
            return self._send(err.status, _error_body(err, headers), err.headers)
        call = _Call(app, self.command, gpath, _query(url.query), headers, payload, sb.graph_url)
        # Throttling: one slot per plain request; a batch holds one per inner request up to 4 (NOTES §4).
        mailboxes: dict[str, int] = {}
        if gpath == "/$batch":
            for r in (payload or {}).get("requests") or []:
                mb = _mailbox_of(unquote(urlsplit(str(r.get("url", ""))).path))
                mailboxes[mb] = mailboxes.get(mb, 0) + 1
        else:
            mailboxes[mailbox] = 1
        admitted: list[tuple[str, int]] = []
        try:
            for mb, n in mailboxes.items():
                slots = min(sb.concurrency, n)
                refused = sb._admit(app, mb, slots, n)
                if refused is not None:
                    entry.status = 429
                    entry.back_off = float(refused.headers.get("Retry-After", 0)) or None
                    return self._send(429, _error_body(refused, headers), refused.headers)
                admitted.append((mb, slots))
            if sb.delay:
                time.sleep(sb.delay)  # the round trip of a hosted service (benchmarks, --delay-ms)
            if gpath == "/$batch":
                try:
                    status, h, out = sb.batch(call)
                except GraphError as err:
                    status, h, out = err.status, dict(err.headers), _error_body(err, headers)
            else:
                status, h, out = sb.handle(call)
        finally:
            for mb, slots in admitted:
                sb._leave(app, mb, slots)
        entry.status = status
        _note_inner_throttling(entry, out if gpath == "/$batch" else None)
        if fault is not None and fault.kind == "drop_after_commit":
            return self._drop()
        if fault is not None and fault.kind == "hang_after_commit":
            sb._release.wait()
            return self._drop()
        self._send(status, out, h)

    def _api(self, path: str, query: str, raw: bytes) -> None:
        sb = self.server.sandbox
        parts = path[len("/sandbox/api/") :].strip("/").split("/")
        if parts == ["mailboxes"]:
            with sb.store.lock:
                rows = sb.store.db.execute("SELECT email FROM mailboxes ORDER BY email").fetchall()
            return self._send(200, [r[0] for r in rows])
        if len(parts) == 3 and parts[0] == "mailboxes" and self.command == "GET":
            return self._send(200, sb.items(parts[1], parts[2]))
        if len(parts) == 4 and parts[0] == "mailboxes" and self.command == "DELETE":
            sb.phone_delete(parts[1], parts[3])
            return self._send(204, None)
        if len(parts) == 4 and parts[0] == "mailboxes" and self.command == "PATCH":
            sb.phone_edit(parts[1], parts[3], json.loads(raw or b"{}"))
            return self._send(204, None)
        return self._send(404, {"error": "unknown sandbox api path"})


def certificate_thumbprint(cert_pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()  # noqa: S324 - x5t is SHA-1
