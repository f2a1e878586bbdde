"""Out of file descriptors: pglease started under a low RLIMIT_NOFILE warns
at start, refuses or fails the clients it cannot serve with a clear error
(never a hang), logs the accept pause once per period, and serves again once
they leave."""
import collections
import os
import socket
import threading
import time

import psycopg
import pytest

from pglease_proc import PgLease

NOFILE = 256
CLIENTS = 400


@pytest.fixture
def upstream(pg):
    return pg.owned_database("fds_owner", "fds-owner-pw", "fds_db")


class LowLimit(PgLease):
    """PgLease under `prlimit --nofile=SOFT:HARD`."""

    def start(self, *args, nofile=NOFILE, hard=None, **kw):
        return super().start(*args, wrapper=["prlimit", f"--nofile={nofile}:{hard or nofile}",
                                             "--"], **kw)


def test_startup_warns_when_max_client_conn_cannot_fit(upstream):
    p = LowLimit({"app": upstream}, settings={"max_client_conn": 1000}).start()
    try:
        lines = [ln for ln in p.log().splitlines() if "open file limit" in ln]
        assert len(lines) == 1, p.log()
        assert "256" in lines[0] and "max_client_conn = 1000" in lines[0]
    finally:
        assert p.stop() == 0
    # Enough room: no warning (the soft limit is raised towards the hard one).
    p = LowLimit({"app": upstream}, settings={"max_client_conn": 100,
                                              "default_pool_size": 5})
    p.start(nofile=64, hard=1024)
    try:
        assert "open file limit" not in p.log()
        limits = open(f"/proc/{p.proc.pid}/limits").read()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert line.split()[3] == "169", line  # 100 clients + 5 servers + 64 spare
    finally:
        assert p.stop() == 0


def test_400_clients_under_256_descriptors(upstream):
    p = LowLimit({"app": upstream}, settings={"default_pool_size": 20,
                                              "query_wait_timeout": 3,
                                              "server_connect_timeout": 3})
    p.start()
    release = threading.Event()
    outcomes = collections.Counter()
    errors = collections.Counter()
    lock = threading.Lock()

    def client():
        try:
            with psycopg.connect(p.dsn(connect_timeout=8), autocommit=True) as c:
                c.execute("select 1")
                with lock:
                    outcomes["ok"] += 1
                release.wait(60)
        except psycopg.Error as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            with lock:
                outcomes["error"] += 1
                errors[msg[:150]] += 1

    try:
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        # Every client either holds a working connection or has its error,
        # within bounded time (connect_timeout, query_wait_timeout).
        deadline = time.monotonic() + 45
        while outcomes["ok"] + outcomes["error"] < CLIENTS:
            assert time.monotonic() < deadline, (outcomes, errors, p.log()[-3000:])
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        print(f"\n{outcomes} in {elapsed:.1f}s; errors: {dict(errors)}")
        assert outcomes["ok"] > 0 and outcomes["error"] > 0
        # Those that cannot be served are told so at once, as Postgres
        # tells a client when it is full, not left to time out.
        assert all("53300" in e or "too many clients already" in e for e in errors), errors
        assert elapsed < 8, elapsed
        release.set()
        for t in threads:
            t.join(10)
        # They left: a new client is served.
        p.wait_served(10)
        accept_lines = [ln for ln in p.log().splitlines() if "accept:" in ln]
        print(f"accept warnings: {len(accept_lines)}: {accept_lines[:2]}")
        assert len(accept_lines) <= 2 + elapsed / 10, accept_lines
    finally:
        release.set()
        assert p.stop() == 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid):
    """pglease's descriptor count once it has stopped moving for 0.3 s: just
    after the ready line, a descriptor of its start-up can still close, and
    an accepted client then leaves the count as it was."""
    last, since = fd_count(pid), time.monotonic()
    deadline = since + 5
    while time.monotonic() - since < 0.3:
        assert time.monotonic() < deadline, "pglease's descriptors kept changing"
        time.sleep(0.02)
        n = fd_count(pid)
        if n != last:
            last, since = n, time.monotonic()
    return last


def test_upstream_socket_out_of_descriptors_is_a_clear_error(upstream):
    """The client's own socket takes pglease's last descriptor: the upstream
    login cannot get a socket and the client gets a 53300-style error."""
    p = LowLimit({"app": upstream}, settings={"query_wait_timeout": 3,
                                              "server_connect_timeout": 3}).start(nofile=64)
    pid = p.proc.pid
    raw = []
    try:
        settled_fd_count(pid)
        while fd_count(pid) < 63:
            before = fd_count(pid)
            raw.append(socket.create_connection(("127.0.0.1", p.port), timeout=5))
            deadline = time.monotonic() + 2
            while fd_count(pid) == before:
                assert time.monotonic() < deadline, "pglease did not accept"
                time.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn(connect_timeout=20), autocommit=True).close()
        took = time.monotonic() - t0
        print(f"\nerror after {took:.1f}s: {e.value}")
        assert took < 15
        assert "too many connections" in str(e.value)
        assert "file descriptors" in str(e.value)
        for s in raw:
            s.close()
        raw = []
        p.wait_served(10)
    finally:
        for s in raw:
            s.close()
        assert p.stop() == 0
