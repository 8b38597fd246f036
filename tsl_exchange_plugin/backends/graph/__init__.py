"""The Microsoft Graph backend (Microsoft 365 mailboxes): the only package that imports httpx and msal.

``wire`` turns the mapping's plain items into Graph JSON (no HTTP), ``auth`` gets app-only tokens
with msal, ``backend`` is the ``ExchangeBackend`` the worker talks to.
"""
