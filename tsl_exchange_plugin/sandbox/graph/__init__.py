"""The Graph sandbox: Microsoft Graph's REST shape over the EWS sandbox's mailboxes.

Tests and the demo read back through either protocol what the other wrote, because both serve
one store (``sandbox/store.py``). ``contract`` validates bodies against the OpenAPI subset in
``shared/graph-reference``; ``convert`` maps stored items to Graph JSON and back; ``server`` is
the HTTP side with the token endpoint, throttling, faults and the inspection API.
"""

from .server import GraphApp, GraphSandbox

__all__ = ["GraphApp", "GraphSandbox"]
