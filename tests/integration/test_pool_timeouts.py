"""Pool sizing and the timeouts a production proxy needs: min_pool_size,
server_idle_timeout, server_lifetime, query_wait_timeout,
client_idle_timeout, server_connect_timeout."""
import socket
import threading
import time

import psycopg
import pytest

from pglease_proc import PgLease
import pgraw

USER, PASSWORD = "pgl_pool", "pool-pw-3"


@pytest.fixture(scope="module", autouse=True)
def pooled_db(pg):
    pg.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    pg.sql("CREATE DATABASE pooled OWNER " + USER)


def conninfo(pg):
    return f"host=127.0.0.1 port={pg.port} dbname=pooled user={USER} password={PASSWORD}"


def backends(pg):
    with psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres",
                         dbname="postgres", autocommit=True) as c:
        return sorted(r[0] for r in c.execute(
            "select pid from pg_stat_activity where usename = %s", (USER,)))


def wait_for(pred, timeout=10, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def test_min_pool_size_and_idle_timeout(pg):
    p = PgLease({"app": conninfo(pg)}, settings={
        "min_pool_size": 2, "default_pool_size": 6, "server_idle_timeout": "1s"}).start()
    try:
        # Warmed up without any client.
        assert wait_for(lambda: len(backends(pg)) == 2, 5), backends(pg)
        # A burst opens more servers...
        rc = []
        threads = [threading.Thread(target=lambda: rc.append(
            psycopg.connect(p.dsn(), autocommit=True).execute("select pg_sleep(0.5)")))
            for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(rc) == 5
        # ...which go back down to min_pool_size once idle past the timeout.
        assert wait_for(lambda: len(backends(pg)) == 2, 6), backends(pg)
    finally:
        assert p.stop() == 0


def test_server_lifetime(pg):
    p = PgLease({"app": conninfo(pg)}, settings={"server_lifetime": "1s",
                                                 "default_pool_size": 1}).start()
    try:
        c = psycopg.connect(p.dsn(), autocommit=True)
        first = c.execute("select pg_backend_pid()").fetchone()[0]
        changed = wait_for(
            lambda: c.execute("select pg_backend_pid()").fetchone()[0] != first, 6, 0.3)
        assert changed, "server outlived server_lifetime"
        c.close()
    finally:
        assert p.stop() == 0


def test_query_wait_timeout(pg):
    p = PgLease({"app": conninfo(pg)}, settings={"default_pool_size": 1,
                                                 "query_wait_timeout": "1s"}).start()
    try:
        holder = psycopg.connect(p.dsn())
        holder.execute("select 1")  # holds the only server inside a transaction
        waiter = psycopg.connect(p.dsn(), autocommit=True)
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as e:
            waiter.execute("select 1")
        assert 0.9 < time.monotonic() - t0 < 3.5
        assert "query_wait_timeout" in str(e.value)
        holder.rollback()
        assert psycopg.connect(p.dsn()).execute("select 1").fetchone()[0] == 1
        holder.close()
    finally:
        assert p.stop() == 0


def test_client_idle_timeout(pg):
    p = PgLease({"app": conninfo(pg)}, settings={"client_idle_timeout": "1s"}).start()
    try:
        c = psycopg.connect(p.dsn(), autocommit=True)
        c.execute("select 1")
        time.sleep(2.5)
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 1")
    finally:
        assert p.stop() == 0


def test_server_connect_timeout_reaches_the_client():
    # An upstream that accepts TCP connections but never says anything.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    # A timeout is transient: the client waits while logins retry, then is
    # told the last cause when query_wait_timeout runs out.
    p = PgLease({"app": f"host=127.0.0.1 port={port} dbname=x user=u password=p"},
                settings={"server_connect_timeout": "1s", "query_wait_timeout": "3s"}).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(pgraw.ServerError) as e:
            pgraw.connect(p.port, "alice", "app", "secret").close()
        elapsed = time.monotonic() - t0
        assert e.value.sqlstate.startswith("08"), e.value
        assert "query_wait_timeout (3 s)" in str(e.value) and "timeout" in str(e.value)
        assert 2.5 < elapsed < 8, elapsed
        assert "timeout" in p.log()
    finally:
        assert p.stop() == 0
        silent.close()


def test_upstream_login_failure_reaches_the_client(pg):
    p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname=pooled user={USER} "
                        f"password=wrong-password"}).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn())
        assert time.monotonic() - t0 < 5
        assert "password authentication failed" in str(e.value)
        assert "wrong-password" not in p.log()
    finally:
        assert p.stop() == 0
