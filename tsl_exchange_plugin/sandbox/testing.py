"""pytest fixtures for tests that talk to the EWS sandbox with unmodified exchangelib.

Use from a conftest: ``pytest_plugins = ["tsl_exchange_plugin.sandbox.testing"]`` (root conftest) or
``from tsl_exchange_plugin.sandbox.testing import sandbox, sandbox_tls  # noqa: F401``.

- ``sandbox``: a started ``SandboxServer`` (HTTP) on a free loopback port with a fresh data directory and
  the mailboxes of ``SANDBOX_PASSWORDS``. Teardown fails the test if the engine saw a schema violation
  or the server hit an internal error.
- ``sandbox_tls``: the same over HTTPS with a generated self-signed certificate.
- ``exchangelib_account(server, email, ...)``: an ``exchangelib.Account`` configured as in NOTES §1.
- ``sandbox_process(data_dir, mailboxes, ...)``: ``tsl-exchange sandbox`` as its own process (benchmarks).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .server import SandboxServer

SANDBOX_PASSWORDS: dict[str, str] = {
    "alice@kanzlei.test": "Alice-Sandbox-1!",
    "bob@kanzlei.test": "Bob-Sandbox-2!",
    "carol@kanzlei.test": "Carol-Sandbox-3!",
}
SANDBOX_DOMAIN = "KANZLEI"
SANDBOX_BUILD = (15, 1, 2507, 6)

# --- trusting the sandbox's self-signed certificate -------------------------------------------
_trust_lock = threading.Lock()
_trusted: dict[str, str] = {}  # "127.0.0.1:PORT" -> certificate PEM path
_original_adapter: Any = None


def _trust_adapter_cls() -> type:
    import requests
    import requests.adapters

    class SandboxTrustAdapter(requests.adapters.HTTPAdapter):
        """Verifies sandbox endpoints against their own certificate; everything else as usual."""

        def send(
            self,
            request: requests.PreparedRequest,
            stream: bool = False,
            timeout: float | tuple[float | None, float | None] | None = None,
            verify: bool | str = True,
            cert: str | tuple[str, str] | None = None,
            proxies: dict[str, str] | None = None,
        ) -> requests.Response:
            from urllib.parse import urlsplit

            with _trust_lock:
                own = _trusted.get(urlsplit(request.url or "").netloc)
            # verify may already be a path (REQUESTS_CA_BUNDLE); only an explicit False is left alone.
            if own is not None and verify is not False:
                verify = own
            return super().send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )

    return SandboxTrustAdapter


def _install_adapter(cls: type) -> None:
    """Swap exchangelib's process-global adapter class; ``restore_http_adapter`` undoes it."""
    global _original_adapter
    from exchangelib.protocol import BaseProtocol

    with _trust_lock:
        if _original_adapter is None:
            _original_adapter = BaseProtocol.HTTP_ADAPTER_CLS
        BaseProtocol.HTTP_ADAPTER_CLS = cls


def restore_http_adapter() -> None:
    global _original_adapter
    from exchangelib.protocol import BaseProtocol

    with _trust_lock:
        if _original_adapter is not None:
            BaseProtocol.HTTP_ADAPTER_CLS = _original_adapter
            _original_adapter = None


def exchangelib_account(
    server: SandboxServer,
    email: str,
    *,
    auth: str | None = "basic",
    version: Any = True,
    tz: str = "Europe/Berlin",
    username: str | None = None,
    password: str | None = None,
    retry_policy: Any = None,
    verify: bool = True,
) -> Any:
    """An exchangelib ``Account`` for ``email`` on ``server`` (NOTES §1: FailFast, no autodiscover, one connection).

    ``auth``: "basic", "ntlm" or None (exchangelib probes). ``version``: True for the sandbox's build,
    None/False to let exchangelib probe, or an ``exchangelib.Version``. ``username`` defaults to the
    e-mail address; pass ``"KANZLEI\\\\alice"`` for the down-level form. ``password`` defaults to the one the
    server holds. Over TLS the sandbox certificate is trusted explicitly (``verify=True``) or
    verification is switched off with exchangelib's ``NoVerifyHTTPAdapter`` (``verify=False``).
    """
    from exchangelib import (
        BASIC,
        DELEGATE,
        NTLM,
        Account,
        Build,
        Configuration,
        Credentials,
        EWSTimeZone,
        FailFast,
        Version,
    )

    if password is None:
        acc = server.credentials.account(email)
        if acc is None:
            raise KeyError(f"the sandbox has no mailbox {email}")
        password = acc.password
    if version is True:
        version = Version(build=Build(*SANDBOX_BUILD))
    elif version is False:
        version = None
    auth_type = {"basic": BASIC, "ntlm": NTLM, None: None}[auth]
    if server.cert_pem_path is not None:
        if verify:
            with _trust_lock:
                _trusted[server.host_port] = server.cert_pem_path
            _install_adapter(_trust_adapter_cls())
        else:
            from exchangelib.protocol import NoVerifyHTTPAdapter

            _install_adapter(NoVerifyHTTPAdapter)
    config = Configuration(
        service_endpoint=server.url,
        credentials=Credentials(username or email, password),
        auth_type=auth_type,
        version=version,
        retry_policy=retry_policy or FailFast(),
        max_connections=1,
    )
    return Account(
        email,
        config=config,
        autodiscover=False,
        access_type=DELEGATE,
        default_timezone=EWSTimeZone(tz),
        locale="de_DE",
    )


def _close_exchangelib() -> None:
    try:
        from exchangelib.protocol import close_connections
    except ImportError:  # pragma: no cover - exchangelib is a dependency
        return
    close_connections()


def _serve(data_dir: Path, *, tls: bool) -> Iterator[SandboxServer]:
    from .schema import find_schema_dir

    find_schema_dir()  # tests validate every request and answer: a missing schema fails them
    server = SandboxServer(data_dir, mailboxes=dict(SANDBOX_PASSWORDS), tls=tls).start()
    assert server.engine.validate, "the test sandbox must validate against the schema"
    try:
        yield server
    finally:
        # exchangelib caches Protocol objects (and their pooled connections) per endpoint+credentials.
        _close_exchangelib()
        with _trust_lock:
            _trusted.pop(server.host_port, None)
        restore_http_adapter()
        violations = server.engine.violations
        details = server.engine.violation_details() if violations else []
        errors = server.internal_errors
        server.stop()
    assert not errors, "EWS sandbox internal errors:\n" + "\n".join(errors)
    assert violations == 0, "EWS sandbox schema violations:\n" + "\n".join(details)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """A started HTTP sandbox with alice, bob and carol (passwords: ``SANDBOX_PASSWORDS``)."""
    yield from _serve(tmp_path / "ews-sandbox", tls=False)


@pytest.fixture
def sandbox_tls(tmp_path: Path) -> Iterator[SandboxServer]:
    """A started HTTPS sandbox; ``sandbox_tls.cert_pem_path`` is its self-signed certificate."""
    yield from _serve(tmp_path / "ews-sandbox-tls", tls=True)


@contextlib.contextmanager
def sandbox_process(
    data_dir: str | Path, mailboxes: dict[str, str], *, delay_ms: float = 0.0, validate: bool = False
) -> Iterator[Any]:
    """``tsl-exchange sandbox`` in a process of its own on a free port, as a real server would be;
    yields what a client needs of it (``url``, ``cert_pem_path``, ``host_port``: enough for
    ``exchangelib_account`` with an explicit password). The process ends with the block."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "tsl_exchange_plugin.cli",
        "sandbox",
        "--port",
        str(port),
        "--data",
        str(data_dir),
    ]
    cmd += [arg for email, pw in mailboxes.items() for arg in ("--mailbox", f"{email}:{pw}")]
    cmd += ["--delay-ms", str(delay_ms)] + ([] if validate else ["--no-validate"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the sandbox process did not start") from None
                time.sleep(0.1)
        yield SimpleNamespace(
            url=f"http://127.0.0.1:{port}/EWS/Exchange.asmx",
            cert_pem_path=None,
            host_port=f"127.0.0.1:{port}",
        )
    finally:
        proc.terminate()
        proc.wait(10)
