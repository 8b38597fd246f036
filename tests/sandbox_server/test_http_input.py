"""Bad input over raw HTTP: the server answers clearly, stores nothing, and keeps serving."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from pathlib import Path

import pytest

from tsl_exchange_plugin.sandbox.schema import find_schema_dir

ALICE = "alice@kanzlei.test"

# The shared reference material (beside the schema the sandbox validates against).
PROBE = (
    find_schema_dir().parent / "ews-reference" / "requests" / "00-ConvertId-version-probe.xml"
).read_bytes()


def _basic(server, email: str = ALICE) -> str:
    pw = server.credentials.account(email).password
    return "Basic " + base64.b64encode(f"{email}:{pw}".encode()).decode()


def _post(server, body: bytes = PROBE, *, path="/EWS/Exchange.asmx", headers=None, auth=True):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    hdrs = {"Content-Type": "text/xml; charset=utf-8", "X-AnchorMailbox": ALICE}
    if auth:
        hdrs["Authorization"] = _basic(server)
    hdrs.update(headers or {})
    conn.request("POST", path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def _raw(server, payload: bytes, *, shut: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(payload)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _works(server) -> None:
    before = server.engine.request_counts(ALICE).get("ConvertId", 0)
    resp, data = _post(server)
    assert resp.status == 200, data
    assert b"ServerVersionInfo" in data
    assert server.engine.request_counts(ALICE).get("ConvertId", 0) == before + 1


def test_normal_request(server):
    _works(server)


def test_body_over_20mb_gets_413_without_being_read(server):
    head = (
        f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"Authorization: {_basic(server)}\r\nContent-Length: {25 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = _raw(server, head + b"<" * 4096)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"20 MB" in answer and b"26214400" in answer
    assert server.engine.request_counts(ALICE) == {}
    _works(server)


def test_full_21mb_upload_with_http_client(server):
    body = b"<" + b"x" * (21 * 1024 * 1024)
    try:
        resp, data = _post(server, body)
        assert resp.status == 413 and b"20 MB" in data
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed after answering; the client may not get to read it while still sending
    assert server.engine.request_counts(ALICE) == {}
    _works(server)


def test_chunked_over_limit_gets_413(server):
    head = (
        f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        f"Authorization: {_basic(server)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = _raw(server, head + b"1400001\r\n" + b"x" * 100)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    _works(server)


def test_chunked_request_is_accepted(server):
    head = (
        f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"X-AnchorMailbox: {ALICE}\r\nAuthorization: {_basic(server)}\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    half = len(PROBE) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (PROBE[:half], PROBE[half:])) + b"0\r\n\r\n"
    answer = _raw(server, head + chunks)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b"ServerVersionInfo" in answer


@pytest.mark.parametrize(
    "payload",
    [
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST /EWS/Exchange.asmx HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /EWS/Exchange.asmx HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /EWS/Exchange.asmx HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
        b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nThis line is no header\r\n\r\n",
    ],
)
def test_garbage_gets_400(server, payload):
    answer = _raw(server, payload, shut=True)
    assert answer.split(b" ", 2)[1] in (b"400", b"505"), answer[:200]
    assert server.engine.request_counts() == {}
    _works(server)


def test_missing_content_length_is_400_with_reason(server):
    answer = _raw(
        server,
        f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nAuthorization: {_basic(server)}\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Length" in answer
    _works(server)


def test_wrong_path_is_404(server):
    resp, data = _post(server, path="/owa/")
    assert resp.status == 404
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/favicon.ico")
    assert conn.getresponse().status == 404
    conn.close()
    _works(server)


def test_ews_path_is_case_insensitive(server):
    resp, data = _post(server, path="/ews/exchange.ASMX")
    assert resp.status == 200


def test_get_on_ews_path_answers_like_iis(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/EWS/Exchange.asmx")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401
    assert "NTLM" in resp.headers.get_all("WWW-Authenticate")
    conn.request("GET", "/EWS/Exchange.asmx", headers={"Authorization": _basic(server)})
    resp = conn.getresponse()
    assert resp.status == 200 and b"<html>" in resp.read()
    assert resp.headers["Server"].startswith("Microsoft-IIS")
    conn.close()


def test_unauthenticated_post_lists_both_methods(server):
    resp, data = _post(server, auth=False)
    assert resp.status == 401
    values = resp.headers.get_all("WWW-Authenticate")
    assert values == ["NTLM", 'Basic realm="127.0.0.1"']
    assert server.engine.request_counts() == {}


def test_wrong_content_type_is_400(server):
    resp, data = _post(server, b'{"hello": 1}', headers={"Content-Type": "application/json"})
    assert resp.status == 400 and b"text/xml" in data
    assert server.engine.request_counts() == {}
    _works(server)


def test_non_soap_xml_is_refused_and_changes_nothing(server):
    before = json.dumps(server.engine.list_items(ALICE, "contacts"), default=str)
    resp, data = _post(server, b"this is not XML at all <<<")
    assert resp.status >= 400
    resp, data = _post(server, b"<?xml version='1.0'?><hello/>")
    assert resp.status >= 400
    assert json.dumps(server.engine.list_items(ALICE, "contacts"), default=str) == before
    _works(server)


def test_anchor_mailbox_of_someone_else_is_access_denied(server):
    resp, data = _post(server, headers={"X-AnchorMailbox": "bob@kanzlei.test"})
    assert resp.status == 500
    assert b"ErrorAccessDenied" in data
    assert server.engine.request_counts() == {}


def test_inspection_api(server):
    _works(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def get(path):
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    status, boxes = get("/sandbox/api/mailboxes")
    assert status == 200
    assert sorted(b["email"] for b in boxes) == [
        "alice@kanzlei.test",
        "bob@kanzlei.test",
        "carol@kanzlei.test",
    ]
    assert all("password" not in b for b in boxes)
    status, stats = get("/sandbox/api/stats")
    assert status == 200 and stats["violations"] == 0
    assert stats["per_mailbox"][ALICE]["ConvertId"] == 1
    status, folders = get("/sandbox/api/mailboxes/alice%40kanzlei.test/folders")
    assert status == 200 and isinstance(folders, list)
    status, items = get("/sandbox/api/mailboxes/alice@kanzlei.test/items?folder=contacts")
    assert status == 200 and isinstance(items, list)
    status, err = get("/sandbox/api/mailboxes/mallory@kanzlei.test/items")
    assert status == 404 and "mallory" in err["error"]
    conn.close()


def test_ntlm_with_wrong_channel_binding_is_rejected(make_server):
    """Over HTTPS the NTLM Type-3 must carry the hash of the sandbox certificate (Extended Protection)."""
    import ssl

    import spnego
    from spnego.channel_bindings import GssChannelBindings

    srv = make_server(tls=True)
    ctx = ssl.create_default_context(cafile=srv.cert_pem_path)

    def handshake(bindings):
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
        client = spnego.client(
            "KANZLEI\\alice",
            srv.credentials.account(ALICE).password,
            protocol="ntlm",
            channel_bindings=bindings,
            options=spnego.NegotiateOptions.use_ntlm,
        )
        hdrs = {"Content-Type": "text/xml; charset=utf-8", "X-AnchorMailbox": ALICE}
        conn.request(
            "POST",
            "/EWS/Exchange.asmx",
            PROBE,
            {**hdrs, "Authorization": "NTLM " + base64.b64encode(client.step()).decode()},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 401
        challenge = resp.headers["WWW-Authenticate"].split(" ", 1)[1]
        token = client.step(base64.b64decode(challenge))
        conn.request(
            "POST",
            "/EWS/Exchange.asmx",
            PROBE,
            {**hdrs, "Authorization": "NTLM " + base64.b64encode(token).decode()},
        )
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status

    assert handshake(GssChannelBindings(application_data=b"tls-server-end-point:" + b"\x00" * 32)) == 401
    from tsl_exchange_plugin.sandbox.tls import endpoint_binding_hash

    der = ssl.PEM_cert_to_DER_cert(Path(srv.cert_pem_path).read_text())
    good = GssChannelBindings(application_data=b"tls-server-end-point:" + endpoint_binding_hash(der))
    assert handshake(good) == 200


@pytest.mark.parametrize(
    ("status", "retry_after", "expect"),
    [
        (503, 7, b"Service Unavailable"),
        (500, None, b"Server Error in '/EWS' Application"),
        (429, 2, b"Too Many Requests"),
        (401, None, b"401 - Unauthorized"),
    ],
)
def test_http_status_faults_on_the_wire(server, status, retry_after, expect):
    server.inject("http_status", status=status, retry_after=retry_after, operation="ConvertId")
    resp, data = _post(server)
    assert resp.status == status
    assert expect in data
    assert resp.headers.get("Retry-After") == (str(retry_after) if retry_after is not None else None)
    if status == 401:
        assert resp.headers.get_all("WWW-Authenticate") == ["NTLM", 'Basic realm="127.0.0.1"']
    assert server.engine.request_counts() == {}  # the body was never processed
    _works(server)
