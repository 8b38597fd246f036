"""Fixtures for the EWS backend tests: the real sandbox over HTTP, sessions for its mailboxes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tsl_exchange_plugin.backends.base import MailboxAccount
from tsl_exchange_plugin.backends.ews.backend import EwsBackend, EwsSession

# pytest refuses ``pytest_plugins`` in a non-root conftest; importing the fixtures is the equivalent.
from tsl_exchange_plugin.sandbox.testing import sandbox, sandbox_tls  # noqa: E402,F401

_keys = itertools.count(1)


def mailbox_account(server, email: str = "alice@kanzlei.test", **kw) -> MailboxAccount:
    from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS

    values = dict(
        mailbox=email.split("@")[0],
        email=email,
        ews_url=server.url,
        username=email,
        password=SANDBOX_PASSWORDS[email],
        auth_type="basic",
        timeout=5.0,
    )
    values.update(kw)
    return MailboxAccount(**values)


@pytest.fixture
def backend() -> EwsBackend:
    return EwsBackend()


@pytest.fixture
def session(sandbox, backend) -> Iterator[EwsSession]:  # noqa: F811 - the imported fixture
    s = backend.session(mailbox_account(sandbox))
    yield s
    s.close()


@pytest.fixture
def new_key():
    """Unique record keys, so that items of different tests never meet."""
    return lambda kind="contact": f"{kind}:{next(_keys)}"
