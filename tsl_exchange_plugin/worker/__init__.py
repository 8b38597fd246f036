"""Pushing: claims under fenced leases, lanes, back-off per mailbox and server, one batch's plan.
Calls ``backends`` and ``mapping``; never imports ``core`` or ``ui``."""
