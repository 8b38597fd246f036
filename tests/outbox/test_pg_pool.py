"""PostgreSQL connections come from a bounded pool; a thread holds one while it lives.

A thread that ends gives its connection back, so a full pool serves a waiting thread
as soon as another one has ended, and never opens more than ``pool_size``.
"""

from __future__ import annotations

import threading

import pytest

from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.testing import wait_for

from .conftest import PG_URL

pytestmark = pytest.mark.postgres


def test_a_full_pool_serves_a_waiting_thread_once_another_thread_has_ended(pg_schema):
    store = PostgresOutbox(PG_URL, schema=pg_schema, pool_size=2, connect_timeout=30)
    try:
        store.pending_count()  # this thread: one of the two
        used, finish = threading.Event(), threading.Event()

        def holder() -> None:
            store.pending_count()  # the other one, held while this thread lives
            used.set()
            finish.wait(30)

        first = threading.Thread(target=holder)
        first.start()
        assert used.wait(30)
        answers: list[int] = []
        waiting = threading.Thread(target=lambda: answers.append(store.pending_count()))
        waiting.start()
        # The pool is full: the third thread waits ...
        wait_for(lambda: store._pool.get_stats().get("requests_waiting", 0) == 1, what="a thread waiting")
        assert answers == []
        # ... until the holder has ended, then gets its connection.
        finish.set()
        first.join(30)
        waiting.join(30)
        assert answers == [0]
        assert store.open_connections() <= 2
    finally:
        store.close()


def test_a_thread_that_is_done_gives_its_connection_back(pg_schema):
    store = PostgresOutbox(PG_URL, schema=pg_schema, pool_size=2)
    try:
        store.pending_count()
        assert store.open_connections() == 1
        store.release_thread()
        assert store.open_connections() == 0
        assert store.pending_count() == 0  # and takes one again when needed
    finally:
        store.close()
