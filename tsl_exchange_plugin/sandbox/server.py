"""The HTTP side of the EWS sandbox: IIS-like transport, authentication, transport faults, inspection API.

One ``SandboxServer`` serves ``/EWS/Exchange.asmx`` over HTTP/1.1 with keep-alive (NTLM authenticates a
connection, so connections must persist), one thread per connection. SOAP is the engine's job
(``engine.py``); this module decides who is asking, whether the request is well-formed HTTP, and
which transport fault (``faults.py``) to play.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import ipaddress
import json
import logging
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import tls as tls_mod
from .auth import (
    CredentialStore,
    NtlmFailure,
    NtlmHandshake,
    ntlm_message_type,
    parse_basic,
    www_authenticate,
)
from .faults import Fault, FaultKind, FaultPlan

log = logging.getLogger(__name__)

EWS_PATH = "/ews/exchange.asmx"
API_PREFIX = "/sandbox/api/"
REQUEST_LOG_SIZE = 200_000  # the newest requests the log keeps
MAX_BODY = 20 * 1024 * 1024  # bytes; larger requests get 413 without being read
IDLE_TIMEOUT = 120.0  # seconds a kept-alive connection may sit idle (IIS connectionTimeout default)
REALM = "127.0.0.1"

_IIS_500 = (
    '<!DOCTYPE html>\r\n<html>\r\n<head><title>Runtime Error</title></head>\r\n<body bgcolor="white">\r\n'
    "<span><h1>Server Error in '/EWS' Application.<hr width=100% size=1 color=silver></h1>\r\n"
    "<h2> <i>Runtime Error</i> </h2></span>\r\n"
    "<b> Description: </b>An application error occurred on the server.\r\n</body>\r\n</html>\r\n"
)
_IIS_401 = (
    "<!DOCTYPE html>\r\n<html><head><title>401 - Unauthorized: Access is denied due to invalid credentials."
    "</title></head>\r\n<body><h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>\r\n"
    "<h3>You do not have permission to view this directory or page using the credentials that you supplied."
    "</h3></body></html>\r\n"
)
_IIS_GET = (
    "<!DOCTYPE html>\r\n<html><head><title>Exchange Web Services</title></head>\r\n"
    "<body><h1>Exchange Web Services</h1><p>This endpoint accepts SOAP requests by POST "
    "(Content-Type: text/xml; charset=utf-8).</p></body></html>\r\n"
)


def _soap_fault(code: str, message: str) -> bytes:
    """A SOAP 1.1 Fault in the form Exchange uses (``detail/e:ResponseCode``), which exchangelib maps to ``code``."""
    esc = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        '<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:'
        f"{code}</faultcode>"
        f'<faultstring xml:lang="en-US">{esc}</faultstring><detail>'
        '<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        f"{code}</e:ResponseCode>"
        '<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        f"{esc}</e:Message></detail></s:Fault></s:Body></s:Envelope>"
    ).encode()


def _impersonated_address(body: bytes) -> str | None:
    """The SMTP address in an ``ExchangeImpersonation`` SOAP header, if the request has one."""
    if b"ExchangeImpersonation" not in body:
        return None
    from lxml import etree  # local import: only the rare impersonation request pays for it

    try:
        root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    tns = "http://schemas.microsoft.com/exchange/services/2006/types"
    for imp in root.iter(f"{{{tns}}}ExchangeImpersonation"):
        for tag in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
            el = imp.find(f".//{{{tns}}}{tag}")
            if el is not None and el.text:
                return str(el.text).strip()
    return ""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request (the fault tests do that on purpose) are not server errors.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The stdlib default "HTTP/0.9" makes error answers to garbage request lines bare bodies without a
    # status line; answer them as HTTP/1.0 so a client sees a clear "400 Bad Request".
    default_request_version = "HTTP/1.0"
    timeout = IDLE_TIMEOUT
    server: _HTTPServer
    error_content_type = "text/html; charset=utf-8"

    # --- connection lifecycle ------------------------------------------------------------------
    def setup(self) -> None:
        sb = self.server.sandbox
        self._ntlm: NtlmHandshake | None = None
        self._conn_email: str | None = None  # set once NTLM authenticated this connection
        self._conn_generation = -1
        try:
            # Headers and body go out in two writes; with Nagle on, the second waits for the
            # client's delayed ACK (40 ms on Linux loopback) and every request pays for it.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if sb._ssl_context is not None:
            raw = self.request
            sb._track(raw, True)
            try:
                raw.settimeout(10)  # a client that never finishes the handshake must not pin a thread
                # wrap_socket detaches ``raw``; the TLS socket is closed in finish().
                self.request = sb._ssl_context.wrap_socket(raw, server_side=True)
            finally:
                sb._track(raw, False)
        sb._track(self.request, True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._track(self.request, False)
            if self.server.sandbox._ssl_context is not None:
                try:
                    self.request.close()
                except OSError:
                    pass

    def version_string(self) -> str:
        return "Microsoft-IIS/10.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # --- responses ------------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/html; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
        *,
        close: bool = False,
    ) -> None:
        log_entry = getattr(self, "_log", None)
        if log_entry is not None:
            log_entry.update(status=status, body=body)
            log_entry["retry"] = next((v for k, v in headers or [] if k == "Retry-After"), "")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("X-Powered-By", "ASP.NET")
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_text(self, status: int, text: str, *, close: bool = False) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", close=close)

    def _send_json(self, status: int, data: Any) -> None:
        body = json.dumps(data, default=str, ensure_ascii=False, indent=1).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _reject_unread(self, status: int, text: str) -> None:
        """Answer and close without reading the (remaining) body, then drain briefly.

        Closing a socket with unread input makes the kernel send RST, which can destroy our answer in
        flight; a short lingering drain (as Apache does) lets the client read it first.
        """
        self._send_text(status, text, close=True)
        self.server.sandbox.stats_inc("rejected")
        try:
            self.request.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + 1.0
        drained = 0
        try:
            self.request.settimeout(0.2)
            while time.monotonic() < deadline and drained < 4 * 1024 * 1024:
                chunk = self.request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except (OSError, ValueError):
            pass

    def _drop(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- request body ---------------------------------------------------------------------------
    def handle_expect_100(self) -> bool:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            self._reject_unread(413, _too_large_text(int(length)))
            return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes | None:
        """The whole body, or None after a 400/413 answer (connection then closes)."""
        te = self.headers.get("Transfer-Encoding")
        cl = self.headers.get_all("Content-Length") or []
        if te is not None:
            if cl:
                self._reject_unread(400, "Bad Request: both Content-Length and Transfer-Encoding are set.")
                return None
            if te.strip().lower() != "chunked":
                self._reject_unread(400, f"Bad Request: unsupported Transfer-Encoding {te!r}.")
                return None
            return self._read_chunked()
        if not cl:
            self._reject_unread(400, "Bad Request: the request has no Content-Length (and is not chunked).")
            return None
        if len(set(cl)) != 1 or not cl[0].strip().isdigit():
            self._reject_unread(400, f"Bad Request: invalid Content-Length {', '.join(cl)!r}.")
            return None
        length = int(cl[0])
        if length > MAX_BODY:
            self._reject_unread(413, _too_large_text(length))
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True  # client went away mid-body; nothing to answer
            return None
        return body

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._reject_unread(400, "Bad Request: malformed chunked encoding.")
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                self._reject_unread(413, _too_large_text(total))
                return None
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                self._reject_unread(400, "Bad Request: malformed chunked encoding.")
                return None
            parts.append(chunk)

    # --- authentication ---------------------------------------------------------------------------
    def _unauthorized(self, token: str | None = None) -> None:
        sb = self.server.sandbox
        if token is not None:
            headers = [("WWW-Authenticate", f"NTLM {token}")]
        else:
            headers = [
                ("WWW-Authenticate", v) for v in www_authenticate(ntlm=sb.ntlm, basic=sb.basic, realm=REALM)
            ]
            sb.stats_inc("auth_challenges")
        self._send(401, _IIS_401.encode(), headers=headers)

    def _authenticate(self) -> tuple[str, str] | None:
        """``(email, method)`` of the caller, or None after a 401 answer."""
        sb = self.server.sandbox
        header = self.headers.get("Authorization")
        if not header:
            if self._conn_email and sb.credentials.generation(self._conn_email) == self._conn_generation:
                return self._conn_email, "ntlm"
            self._conn_email = None
            self._unauthorized()
            return None
        scheme, _, token = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and sb.basic:
            parsed = parse_basic(token)
            email = sb.credentials.check_basic(*parsed) if parsed else None
            if email is None:
                sb.stats_inc("auth_failures")
                self._unauthorized()
                return None
            return email, "basic"
        if scheme == "ntlm" and sb.ntlm:
            try:
                raw = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            kind = ntlm_message_type(raw)
            try:
                if kind == 1:
                    self._conn_email = None
                    self._ntlm = NtlmHandshake(sb.credentials, cert_hash=sb._cert_hash)
                    challenge = self._ntlm.negotiate(raw)
                    self._unauthorized(base64.b64encode(challenge).decode())
                    return None
                if kind == 3 and self._ntlm is not None:
                    handshake, self._ntlm = self._ntlm, None
                    email = handshake.authenticate(raw)
                    if sb._consume_ntlm_rejection(email):
                        raise NtlmFailure("rejected by an injected 401 fault")
                    self._conn_email = email
                    self._conn_generation = sb.credentials.generation(email)
                    return email, "ntlm"
                raise NtlmFailure(f"unexpected NTLM message type {kind}")
            except NtlmFailure as exc:
                log.info("NTLM authentication failed: %s", exc)
                self._ntlm = None
                self._conn_email = None
                sb.stats_inc("auth_failures")
                self._unauthorized()
                return None
        sb.stats_inc("auth_failures")
        self._unauthorized()
        return None

    # --- methods ----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle_safe(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle_safe(self._get)

    def do_POST(self) -> None:  # noqa: N802
        start = time.perf_counter()
        sb = self.server.sandbox
        sb._enter()
        sb.faults.begin_request()
        self._log = {
            "started": time.time(),
            "mailbox": "",
            "operation": "",
            "status": 0,
            "body": b"",
            "retry": "",
        }
        try:
            self._handle_safe(self._post)
        finally:
            sb._add_busy(time.perf_counter() - start)
            sb._log_request(self._log, sb.faults.fired_in_request())

    def _handle_safe(self, fn: Any) -> None:
        try:
            fn()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True
        except Exception:  # a bug in the sandbox: record it, answer like IIS, keep serving
            self.server.sandbox._record_internal_error(traceback.format_exc())
            try:
                self._send(500, _IIS_500.encode(), close=True)
            except OSError:
                self.close_connection = True

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path.lower().startswith(API_PREFIX):
            self._api(path, urlsplit(self.path).query)
            return
        if self.headers.get("Content-Length") not in (None, "0"):
            self._reject_unread(400, "Bad Request: a GET request must not have a body.")
            return
        if path.lower() != EWS_PATH:
            self._send(404, b"<html><body><h2>404 - File or directory not found.</h2></body></html>")
            return
        if self._authenticate() is None:
            return
        self._send(200, _IIS_GET.encode())

    def _post(self) -> None:
        sb = self.server.sandbox
        sb.stats_inc("requests")
        path = urlsplit(self.path).path
        if path.lower() != EWS_PATH:
            self._reject_unread(404, f"Not Found: {path} (the EWS endpoint is /EWS/Exchange.asmx).")
            return
        body = self._read_body()
        if body is None:
            return
        auth = self._authenticate()
        if auth is None:
            return
        email, method = auth
        self._log["mailbox"] = email.lower()
        ctype = (self.headers.get("Content-Type") or "").lower()
        media, _, params = ctype.partition(";")
        if media.strip() != "text/xml" or ("charset" in params and "utf-8" not in params):
            sb.stats_inc("rejected")
            self._send_text(
                400,
                f"Bad Request: Content-Type must be 'text/xml; charset=utf-8', got {ctype or 'none'!r}.",
            )
            return
        anchor = self.headers.get("X-AnchorMailbox")
        impersonated = _impersonated_address(body)
        for other in (anchor, impersonated):
            if other is not None and other.strip().lower() != email.lower():
                sb.stats_inc("access_denied")
                self._send(
                    500,
                    _soap_fault(
                        "ErrorAccessDenied",
                        f"The account does not have permission to access mailbox {other.strip()!r}.",
                    ),
                    "text/xml; charset=utf-8",
                )
                return
        operation = sb.engine.operation_of(body)
        self._log["operation"] = operation or ""
        fault = sb.faults.take(email, operation, "transport")
        if fault is not None:
            sb.stats_inc("faults_fired")
            if not self._play_fault(fault, email, method, body):
                return
        status, payload = sb.engine.handle(email, body)
        self._send(status, payload, "text/xml; charset=utf-8")

    def _wait(self, fault: Fault) -> None:
        """A fault's pause: ``seconds``, or until its ``hold`` event is set (or the server stops)."""
        sb = self.server.sandbox
        if fault.hold is None:
            sb._stopping.wait(fault.seconds)
            return
        deadline = time.monotonic() + fault.seconds if fault.seconds > 0 else None
        while not fault.hold.wait(0.05) and not sb._stopping.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _play_fault(self, fault: Fault, email: str, method: str, body: bytes) -> bool:
        """Act out a transport fault. True: go on and process the request normally."""
        sb = self.server.sandbox
        if fault.kind == "delay":
            self._wait(fault)
            return True
        if fault.kind == "drop_connection":
            self._drop()
            return False
        if fault.kind == "commit_then_hang":
            sb.engine.handle(email, body)  # committed; the answer never leaves
            self._wait(fault)
            self._drop()
            return False
        # http_status
        headers = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", str(fault.retry_after)))
        status = fault.status
        if status == 401:
            if method == "ntlm":
                # requests_ntlm answers a 401 on an authenticated connection with a new handshake;
                # fail that one too, or the client would never see the 401.
                sb._arm_ntlm_rejection(email)
                self._conn_email = None
            headers += [
                ("WWW-Authenticate", v) for v in www_authenticate(ntlm=sb.ntlm, basic=sb.basic, realm=REALM)
            ]
            self._send(401, _IIS_401.encode(), headers=headers)
        elif status == 500:
            self._send(500, _IIS_500.encode(), headers=headers)
        elif status == 503:
            self._send(503, b"Service Unavailable", "text/plain; charset=utf-8", headers)
        else:
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            self._send(status, phrase.encode(), "text/plain; charset=utf-8", headers)
        return False

    # --- inspection API ---------------------------------------------------------------------------
    def _api(self, path: str, query: str) -> None:
        sb = self.server.sandbox
        try:
            loopback = ipaddress.ip_address(self.client_address[0].split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            self._send_json(403, {"error": "the inspection API answers loopback clients only"})
            return
        parts = [unquote(p) for p in path[len(API_PREFIX) :].split("/") if p]
        if parts == ["stats"]:
            self._send_json(200, sb.stats())
            return
        if parts == ["mailboxes"]:
            self._send_json(200, sb.mailboxes())
            return
        if parts == ["requests"]:
            mailbox = parse_qs(query).get("mailbox", [None])[0]
            self._send_json(200, [dataclasses.asdict(r) for r in sb.requests(mailbox)])
            return
        if len(parts) == 3 and parts[0] == "mailboxes" and parts[2] in ("folders", "items"):
            email = parts[1]
            acc = sb.credentials.account(email)
            if acc is None or not sb.engine.has_mailbox(acc.email):
                self._send_json(404, {"error": f"unknown mailbox {email!r}"})
                return
            if parts[2] == "folders":
                self._send_json(200, sb.engine.list_folders(acc.email))
            else:
                folder = parse_qs(query).get("folder", ["contacts"])[0]
                self._send_json(200, sb.engine.list_items(acc.email, folder))
            return
        self._send_json(404, {"error": f"unknown API path {path!r}"})


def _too_large_text(length: int) -> str:
    return (
        f"Request Entity Too Large: the body has {length} bytes; "
        f"the EWS sandbox accepts at most {MAX_BODY} bytes (20 MB)."
    )


_RESPONSE_CODE = re.compile(rb"ResponseCode(?:\s[^>]*)?>(\w+)<")
_FAULT_CODE = re.compile(rb"faultcode(?:\s[^>]*)?>(?:\w+:)?(\w+)<")
_BACK_OFF_MS = re.compile(rb'Name="BackOffMilliseconds">(\d+)<')


@dataclass(frozen=True)
class RequestRecord:
    """One EWS POST as the server saw it (the request log, for tests and the demo).

    ``started``/``finished``: UNIX seconds when the request arrived and when its answer was
    sent; ``response``: the first ResponseCode other than NoError ("NoError" if none), the
    SOAP fault's code, or "HTTP <status>" for an answer without SOAP; ``back_off``: seconds
    the answer asked the client to wait (BackOffMilliseconds or Retry-After), else None;
    ``faults``: the kinds of the injected faults that fired for it."""

    started: float
    finished: float
    mailbox: str  # "" when the request did not authenticate
    operation: str
    status: int  # 0: no answer was sent (a dropped connection)
    response: str
    back_off: float | None
    faults: tuple[str, ...]


def _response_class(status: int, body: bytes) -> str:
    if status == 0:
        return "no answer"
    codes = _RESPONSE_CODE.findall(body)
    if codes:
        code: bytes = next((c for c in codes if c != b"NoError"), codes[0])
        return code.decode()
    fault = _FAULT_CODE.search(body)
    if fault:
        return fault.group(1).decode()
    return f"HTTP {status}"


class SandboxServer:
    """An EWS sandbox on a loopback port, serving in a background thread."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        mailboxes: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        validate: bool = True,
        ntlm: bool = True,
        basic: bool = True,
        seed: int | None = None,
        engine: Any | None = None,
    ):
        """``engine``: a ready engine object (tests of the HTTP layer); by default a ``SandboxEngine``."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ntlm = ntlm
        self.basic = basic
        self.faults = FaultPlan(seed)
        if engine is None:
            from .engine import SandboxEngine

            engine = SandboxEngine(self.data_dir, validate=validate, faults=self.faults)
        self.engine = engine
        self.credentials = CredentialStore(self.data_dir / "ntlm-users.smbpasswd")
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self._busy = 0.0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._internal_errors: list[str] = []
        # The request log; bounded so a long benchmark cannot grow it without end.
        self._requests: collections.deque[RequestRecord] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._ntlm_rejections: dict[str, int] = {}
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ssl_context = None
        self._cert_hash: bytes | None = None
        self.cert_pem_path: str | None = None
        if tls:
            files = tls_mod.generate_self_signed(self.data_dir / "tls")
            self._ssl_context = tls_mod.server_context(files)
            self._cert_hash = tls_mod.endpoint_binding_hash(files.cert_der)
            self.cert_pem_path = files.cert_pem_path
        self._httpd = _HTTPServer((host, port), self)
        bound_host, bound_port = self._httpd.server_address[:2]
        assert isinstance(bound_host, str)  # an IPv4 or IPv6 socket's address
        self.port: int = bound_port
        self.host_port = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        self.url = f"{'https' if tls else 'http'}://{self.host_port}/EWS/Exchange.asmx"
        for email, password in (mailboxes or {}).items():
            self.add_mailbox(email, password)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="ews-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # kept-alive client connections would otherwise outlive the server
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.engine.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- mailboxes and faults --------------------------------------------------------------------
    def add_mailbox(
        self, email: str, password: str, *, username: str | None = None, domain: str = "KANZLEI"
    ) -> None:
        self.credentials.add(email, password, username=username, domain=domain)
        if not self.engine.has_mailbox(email):
            self.engine.add_mailbox(email)

    def set_password(self, email: str, password: str) -> None:
        """Change a mailbox password; connections NTLM-authenticated with the old one must authenticate again."""
        self.credentials.set_password(email, password)

    def inject(self, kind: FaultKind, **kw: Any) -> Fault:
        return self.faults.add(Fault(kind, **kw))

    def mailboxes(self) -> list[dict[str, str]]:
        out = []
        for email in self.credentials.emails():
            acc = self.credentials.account(email)
            if acc is not None:
                out.append({"email": acc.email, "username": acc.username, "domain": acc.domain})
        return out

    # --- statistics -------------------------------------------------------------------------------
    def stats_inc(self, key: str) -> None:
        with self._lock:
            self._stats[key] = self._stats.get(key, 0) + 1

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of exceptions the sandbox itself raised while serving (bugs, never client errors)."""
        with self._lock:
            return list(self._internal_errors)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            http = dict(self._stats)
            errors = len(self._internal_errors)
        return {
            "http": http,
            "busy_seconds": round(self.busy_seconds, 3),
            "peak_in_flight": self.peak_in_flight,
            "internal_errors": errors,
            "operations": self.engine.request_counts(),
            "per_mailbox": {e: self.engine.request_counts(e) for e in self.credentials.emails()},
            "violations": self.engine.violations,
            "violation_details": self.engine.violation_details(),
            "faults_armed": len(self.faults.armed()),
        }

    @property
    def busy_seconds(self) -> float:
        """Wall time spent serving EWS POSTs (summed over threads): the sandbox's share of a benchmark."""
        with self._lock:
            return self._busy

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def _add_busy(self, seconds: float) -> None:
        """One POST has been answered (or failed): its time counts, it is no longer in flight."""
        with self._lock:
            self._busy += seconds
            self._in_flight -= 1

    @property
    def peak_in_flight(self) -> int:
        """The most POSTs this server was serving at the same moment (since start or the last reset)."""
        with self._lock:
            return self._peak_in_flight

    def reset_peak_in_flight(self) -> None:
        with self._lock:
            self._peak_in_flight = self._in_flight

    def _record_internal_error(self, text: str) -> None:
        log.error("EWS sandbox internal error:\n%s", text)
        with self._lock:
            self._internal_errors.append(text)

    # --- helpers for the handler -----------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _arm_ntlm_rejection(self, email: str) -> None:
        with self._lock:
            key = email.lower()
            self._ntlm_rejections[key] = self._ntlm_rejections.get(key, 0) + 1

    def _consume_ntlm_rejection(self, email: str) -> bool:
        with self._lock:
            key = email.lower()
            if self._ntlm_rejections.get(key, 0) > 0:
                self._ntlm_rejections[key] -= 1
                return True
            return False

    # --- the request log ------------------------------------------------------------------------
    def _log_request(self, entry: dict[str, Any], faults: list[str]) -> None:
        status, body = entry["status"], entry["body"]
        back_off: float | None = None
        match = _BACK_OFF_MS.search(body)
        if match:
            back_off = int(match.group(1)) / 1000
        elif entry["retry"]:
            try:
                back_off = float(entry["retry"])
            except ValueError:
                back_off = None
        record = RequestRecord(
            started=entry["started"],
            finished=time.time(),
            mailbox=entry["mailbox"],
            operation=entry["operation"],
            status=status,
            response=_response_class(status, body),
            back_off=back_off,
            faults=tuple(faults),
        )
        with self._lock:
            self._requests.append(record)

    def requests(self, mailbox: str | None = None) -> list[RequestRecord]:
        """Every EWS POST since start (or ``clear_requests``), in the order their answers went out."""
        with self._lock:
            records = list(self._requests)
        if mailbox is not None:
            records = [r for r in records if r.mailbox == mailbox.lower()]
        return records

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
