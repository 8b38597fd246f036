"""The sync core for one host: the composition root, the enqueue path, subscriptions, accounts,
cleanup, the reconcile sweep and the deadline parity report. Hands work to ``outbox`` and
``worker``; never imports ``ui``."""
