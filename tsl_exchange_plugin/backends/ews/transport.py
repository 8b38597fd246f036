"""How requests reach the server: the create and update services that answer per item, the
protocol subclasses for the lanes' turns and for an allowed self-signed certificate. (The limit
of requests in flight per server is ``ServerLimit`` in ``backends/slots.py``.)

- **Per-item answers.** exchangelib raises an answer about one item's values out of
  ``bulk_create``/``bulk_update`` and so drops the answers of every other item, written ones
  included; ``CreateItems``/``UpdateItems`` return them per item instead.
- **TLS.** ``verify_tls=False`` (an administrator allowed a self-signed certificate for this
  server) must not switch verification off for every other server. exchangelib's
  ``HTTP_ADAPTER_CLS`` is a class attribute of the protocol, read by class methods, so the
  session moves only the cached protocol object of that endpoint and credentials to
  ``NoVerifyProtocol``. Limitation: exchangelib caches protocols per (endpoint, credentials);
  two accounts with the same URL and credentials but different ``verify_tls`` share one
  protocol, and the last session opened decides.
"""

from __future__ import annotations

from typing import Any

from exchangelib import NoVerifyHTTPAdapter
from exchangelib.protocol import Protocol
from exchangelib.services import CreateItem, UpdateItem

from .. import turns
from .errors import ITEM_VALUE_ERRORS


class CreateItems(CreateItem):
    """CreateItem that returns an item's value error in its place instead of raising it."""

    ERRORS_TO_CATCH_IN_RESPONSE = CreateItem.ERRORS_TO_CATCH_IN_RESPONSE + ITEM_VALUE_ERRORS


class UpdateItems(UpdateItem):
    """UpdateItem that returns an item's value error in its place instead of raising it."""

    ERRORS_TO_CATCH_IN_RESPONSE = UpdateItem.ERRORS_TO_CATCH_IN_RESPONSE + ITEM_VALUE_ERRORS


# --------------------------------------------------------------------------- protocol and TLS


class TurnTakingProtocol(Protocol):
    """exchangelib's protocol, telling the worker's lanes when a request waits for the server.

    ``get_session`` is called once the request body is built, just before it is posted;
    ``release_session`` once the answer is read (``retire_session`` ends there too).
    """

    def get_session(self) -> Any:
        turns.pause()
        return super().get_session()

    def release_session(self, session: Any) -> None:
        super().release_session(session)
        turns.resume()


class NoVerifyProtocol(TurnTakingProtocol):
    """The cached protocol of an endpoint whose self-signed certificate an administrator allowed."""

    HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter
