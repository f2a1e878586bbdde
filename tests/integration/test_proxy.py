"""pglease as a Postgres proxy: real clients (psql, psycopg, pgbench)
through it against a real PostgreSQL, in transaction and session mode,
with the failures a production proxy must survive."""
import signal
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from pglease_proc import PgLease
from pgraw import connect as raw_connect
from pgraw import error_fields as pgraw_fields
from pgraw import read_message as pgraw_read
from pgraw import send as pgraw_send
from pgraw import ServerError, login_sqlstate, query_value

UPSTREAM_USER = "pgl_app"
UPSTREAM_PASSWORD = "upstream-pw-1"


def superuser(pg, dbname="postgres"):
    return psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres",
                           dbname=dbname, autocommit=True)


@pytest.fixture(scope="module")
def upstream(pg):
    """A login role owning database `proxied`, with pgbench tables."""
    conninfo = pg.owned_database(UPSTREAM_USER, UPSTREAM_PASSWORD, "proxied")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo],
                   check=True, capture_output=True, timeout=120)
    return conninfo


@pytest.fixture
def proxy(upstream, request):
    """pglease in the mode given by @pytest.mark.parametrize('proxy', [...],
    indirect=True), transaction by default; settings may be a dict."""
    param = getattr(request, "param", "transaction")
    settings = {"pool_mode": param} if isinstance(param, str) else dict(param)
    settings.setdefault("default_pool_size", 20)
    p = PgLease({"app": upstream}, settings=settings)
    p.start()
    yield p
    rc = p.stop()
    assert rc == 0, p.log()
    assert "bug:" not in p.log()


def psql(p, sql, user="alice", dbname="app", password=None):
    return subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql,
                           p.dsn(user=user, dbname=dbname, password=password)],
                          capture_output=True, text=True, timeout=30)


def pgbench(p, *args, timeout=120):
    r = subprocess.run(["pgbench", "-n", *args, p.dsn()], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("proxy", ["transaction", "session"], indirect=True)
def test_psql_and_psycopg(proxy):
    r = psql(proxy, "select current_user, 40 + 2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{UPSTREAM_USER}|42"
    with psycopg.connect(proxy.dsn()) as c:
        for i in range(20):
            assert c.execute("select %s::int * 2", (i,)).fetchone()[0] == i * 2
        with c.transaction():
            c.execute("create temp table if not exists t(x int)" if False else "select 1")
        assert c.info.parameter_status("server_version").startswith("15")


def test_session_parameters_follow_the_client(upstream):
    """Transaction mode with one server: two clients with different
    TimeZone/application_name take turns on it and each sees its own; a
    third that never set TimeZone keeps the server's default."""
    # One loop: both clients must take turns on the very same server.
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction", "workers": 1,
                                             "default_pool_size": 1}).start()
    try:
        a = psycopg.connect(p.dsn(application_name="client-a"), autocommit=True)
        b = psycopg.connect(p.dsn(application_name="client-b"), autocommit=True)
        c = psycopg.connect(p.dsn(), autocommit=True)
        default_tz = c.execute("show timezone").fetchone()[0]
        assert default_tz not in ("Asia/Tokyo", "America/New_York")
        a.execute("set timezone = 'Asia/Tokyo'")
        b.execute("set timezone = 'America/New_York'")
        for _ in range(5):
            assert a.execute("show timezone").fetchone()[0] == "Asia/Tokyo"
            assert a.execute("select current_setting('application_name')").fetchone()[0] \
                == "client-a"
            assert b.execute("show timezone").fetchone()[0] == "America/New_York"
            assert b.execute("select current_setting('application_name')").fetchone()[0] \
                == "client-b"
            assert c.execute("show timezone").fetchone()[0] == default_tz
        backends = {a.execute("select pg_backend_pid()").fetchone()[0],
                    b.execute("select pg_backend_pid()").fetchone()[0]}
        assert len(backends) == 1, "both clients should share the single server"
        a.close()
        b.close()
        c.close()
    finally:
        assert p.stop() == 0


def test_startup_search_path_stays_with_its_client(upstream):
    """A search_path from the startup packet (as pgjdbc's currentSchema sends
    it) follows its client from server to server, and a client without one
    gets the server's own default back, not the previous client's: Postgres
    15 does not report search_path, so pglease must remember what it set."""
    # One loop: both clients must take turns on the very same server.
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction", "workers": 1,
                                             "default_pool_size": 1}).start()
    a = b = None
    try:
        b = raw_connect(p.port, "alice", "app", p.users["alice"])
        default = query_value(b, "show search_path")
        a = raw_connect(p.port, "alice", "app", p.users["alice"],
                        params={"search_path": "a_schema, public"})
        for _ in range(3):
            assert query_value(a, "show search_path") == "a_schema, public"
            assert query_value(b, "show search_path") == default
        assert query_value(a, "select pg_backend_pid()") == \
            query_value(b, "select pg_backend_pid()"), "both should share the single server"
    finally:
        for s in (a, b):
            if s is not None:
                s.close()
        assert p.stop() == 0


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_startup_settings_are_applied_and_stay_with_their_client(upstream, mode):
    """`options` (-c / --name=value, as PGOPTIONS sends them) and any GUC
    sent as a startup parameter (asyncpg server_settings, node-postgres
    statement_timeout) apply to the client's session, and never to the next
    client of the same server."""
    p = PgLease({"app": upstream}, settings={"pool_mode": mode,
                                             "default_pool_size": 1}).start()
    a = b = None
    try:
        a = raw_connect(p.port, "alice", "app", p.users["alice"],
                        params={"options": r"-c statement_timeout=1234 --lock-timeout=4321 "
                                           r"-c application_name=with\ space",
                                "jit": "off", "myapp.tenant": "t1"})
        for _ in range(3):
            assert query_value(a, "show statement_timeout") == "1234ms"
            assert query_value(a, "show lock_timeout") == "4321ms"
            assert query_value(a, "show jit") == "off"
            assert query_value(a, "select current_setting('myapp.tenant')") == "t1"
            assert query_value(a, "select current_setting('application_name')") == "with space"
            if mode == "session":
                break  # the one server is a's until it leaves
            b = b or raw_connect(p.port, "alice", "app", p.users["alice"])
            assert query_value(b, "show statement_timeout") == "0"
            assert query_value(b, "show lock_timeout") == "0"
            assert query_value(b, "show jit") == "on"
            assert query_value(b, "select current_setting('myapp.tenant', true)") in (None, "")
        a.close()
        a = None
        b = b or raw_connect(p.port, "alice", "app", p.users["alice"])
        assert query_value(b, "show statement_timeout") == "0"
        assert query_value(b, "show jit") == "on"
    finally:
        for s in (a, b):
            if s is not None:
                s.close()
        assert p.stop() == 0


def test_startup_settings_postgres_refuses(upstream):
    """What Postgres would refuse at login is refused with its own error:
    an unknown GUC (42704, at the client's first statement), a malformed
    `options` (42601, at login). ignore_startup_parameters drops a name."""
    p = PgLease({"app": upstream},
                settings={"ignore_startup_parameters": "no_such_thing, other_thing"}).start()
    try:
        s = raw_connect(p.port, "alice", "app", p.users["alice"], params={"no_such_guc": "1"})
        pgraw_send(s, b"Q", b"select 1\0")
        t, body = pgraw_read(s)  # FATAL: no ReadyForQuery follows
        fields = pgraw_fields(body)
        assert (t, fields["S"], fields["C"]) == (b"E", "FATAL", "42704")
        assert fields["M"] == 'unrecognized configuration parameter "no_such_guc"'
        s.close()
        for options, message in [("-x", "invalid command-line argument for server process: -x"),
                                 ("-c statement_timeout", "-c statement_timeout requires a value"),
                                 ("-c", "-c requires a value")]:
            with pytest.raises(ServerError) as e:
                raw_connect(p.port, "alice", "app", p.users["alice"], params={"options": options})
            assert (e.value.sqlstate, e.value.fields["M"]) == ("42601", message)
        s = raw_connect(p.port, "alice", "app", p.users["alice"],
                        params={"no_such_thing": "x", "Other_Thing": "y"})
        assert query_value(s, "select 5") == "5"
        s.close()
        assert psycopg.connect(p.dsn()).execute("select 6").fetchone()[0] == 6
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("args", [["-S"], [], ["-M", "extended"]],
                         ids=["select-only", "tpcb", "extended"])
def test_pgbench_transaction_mode(proxy, args):
    rc, out = pgbench(proxy, *args, "-c", "8", "-j", "2", "-T", "4")
    assert rc == 0, out
    assert "number of failed transactions: 0 " in out, out


@pytest.mark.parametrize("proxy", ["session"], indirect=True)
def test_pgbench_session_mode(proxy):
    rc, out = pgbench(proxy, "-S", "-M", "prepared", "-c", "8", "-j", "2", "-T", "3")
    assert rc == 0, out
    assert "number of failed transactions: 0 " in out, out


@pytest.mark.parametrize("proxy", [{"default_pool_size": 20, "max_client_conn": 600}],
                         indirect=True)
def test_500_clients_on_20_servers(proxy, pg):
    rc, out = pgbench(proxy, "-S", "-c", "500", "-j", "2", "-t", "20", timeout=300)
    assert rc == 0, out
    assert "number of transactions actually processed: 10000/10000" in out, out
    with superuser(pg) as c:
        n = c.execute("select count(*) from pg_stat_activity where usename = %s",
                      (UPSTREAM_USER,)).fetchone()[0]
    assert n <= 20


def test_login_errors(proxy):
    port = proxy.port
    assert login_sqlstate(port, "alice", "app", "secret") is None
    assert login_sqlstate(port, "alice", "app", "wrong") == "28P01"
    assert login_sqlstate(port, "mallory", "app", "secret") == "28P01"
    assert login_sqlstate(port, "alice", "nosuchdb", "secret") == "3D000"
    assert login_sqlstate(port, "alice", "pglease", "secret") == "28000"  # not an admin
    # Same wording for unknown user and wrong password, apart from the name.
    msgs = []
    for user, pw in (("alice", "wrong"), ("mallory", "secret")):
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(proxy.dsn(user=user, password=pw))
        msgs.append(str(e.value).replace(user, "X"))
    assert msgs[0] == msgs[1]


@pytest.mark.parametrize("proxy", [{"max_client_conn": 2}], indirect=True)
def test_too_many_clients(proxy):
    a = psycopg.connect(proxy.dsn())
    b = psycopg.connect(proxy.dsn())
    assert login_sqlstate(proxy.port, "alice", "app", "secret") == "53300"
    a.close()
    b.close()
    time.sleep(0.2)
    psycopg.connect(proxy.dsn()).close()


def test_cancel(proxy):
    c = psycopg.connect(proxy.dsn(), autocommit=True)
    timer = threading.Timer(0.5, c.cancel)
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(psycopg.errors.QueryCanceled):
        c.execute("select pg_sleep(10)")
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5, elapsed  # 0.5 s before the cancel, then well under a second
    assert c.execute("select 1").fetchone()[0] == 1
    c.close()
    # A CancelRequest with a key nobody holds is dropped silently.
    s = socket.create_connection(("127.0.0.1", proxy.port))
    s.sendall(struct.pack("!IIII", 16, 80877102, 1, 2))
    assert s.recv(10) == b""
    s.close()


def test_admin_console(proxy):
    psycopg.connect(proxy.dsn()).execute("select 1")
    r = psql(proxy, "show pools", user="admin", dbname="pglease")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("app|"), r.stdout
    r = psql(proxy, "show nonsense", user="admin", dbname="pglease")
    assert r.returncode != 0 and "unknown admin console command" in r.stderr


def show(p, what):
    """SHOW <what> on the console, as a list of column lists."""
    r = psql(p, f"show {what}", user="admin", dbname="pglease")
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines()]


def pool_counts(p):
    """SHOW POOLS columns cl_active, cl_waiting, sv_active, sv_idle, sv_login
    (PgBouncer 1.18's order)."""
    (row,) = [r for r in show(p, "pools") if r[0] == "app"]
    return tuple(int(row[i]) for i in (2, 3, 6, 9, 12))


@pytest.mark.parametrize("proxy", [{"default_pool_size": 1}], indirect=True)
def test_console_counts_follow_client_and_server_states(proxy):
    a = psycopg.connect(proxy.dsn(), autocommit=True)
    b = psycopg.connect(proxy.dsn(), autocommit=True)
    a.execute("select 1")
    b.execute("select 1")
    assert pool_counts(proxy) == (2, 0, 0, 1, 0)
    a.execute("begin")
    a.execute("select 1")  # holds the only server
    assert pool_counts(proxy) == (2, 0, 1, 0, 0)
    done = threading.Event()
    t = threading.Thread(target=lambda: (b.execute("select 1"), done.set()))
    t.start()
    deadline = time.monotonic() + 10
    while pool_counts(proxy)[1] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool_counts(proxy) == (1, 1, 1, 0, 0)  # b waits: not active
    (waiting_row,) = [r for r in show(proxy, "pools") if r[0] == "app"]
    assert int(waiting_row[13]) * 1000000 + int(waiting_row[14]) > 0  # maxwait, maxwait_us
    a.execute("commit")
    t.join(10)
    assert done.is_set()
    assert pool_counts(proxy) == (2, 0, 0, 1, 0)
    servers = show(proxy, "servers")
    # database, generation (pglease's column after PgBouncer's), state
    assert [(r[2], r[19], r[3]) for r in servers] == [("app", "1", "idle")]
    assert len([r for r in show(proxy, "clients") if r[2] == "app"]) == 2
    a.close()
    b.close()


def backend_pids(p):
    return sorted(int(r[15]) for r in show(p, "servers") if r[15] != "0")  # remote_pid


def test_unknown_frontend_message_type_never_reaches_a_server(proxy):
    psycopg.connect(proxy.dsn(), autocommit=True).execute("select 1")
    before = backend_pids(proxy)
    s = raw_connect(proxy.port, "alice", "app", "secret")
    pgraw_send(s, b"Y", b"junk")
    t, body = pgraw_read(s)
    assert t == b"E"
    fields = pgraw_fields(body)
    assert (fields["C"], fields["M"]) == ("08P01", "invalid frontend message type 89")
    s.close()
    # The pooled server never saw it: same backend, still serving.
    assert backend_pids(proxy) == before
    assert psycopg.connect(proxy.dsn()).execute("select 2").fetchone()[0] == 2


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def test_values_larger_than_max_packet_size_stream_both_ways(proxy):
    """80 MB values (over the 64 MB max_packet_size) pass in both
    directions without pglease holding one whole."""
    size = 80 * 1024 * 1024
    c = psycopg.connect(proxy.dsn(), autocommit=True)
    c.execute("select 1")
    hwm = vm_hwm_kib(proxy.proc.pid)
    assert c.execute("select length(repeat('x', %s))", (size,)).fetchone()[0] == size
    got = c.execute("select repeat('x', %s)", (size,)).fetchone()[0]
    assert len(got) == size
    del got
    assert c.execute("select length(%s)", ("y" * size,)).fetchone()[0] == size
    assert c.execute("select 3").fetchone()[0] == 3
    c.close()
    assert vm_hwm_kib(proxy.proc.pid) - hwm < 32 * 1024


def test_pidfile_written_at_start_removed_at_exit(upstream, tmp_path):
    pidfile = tmp_path / "pglease.pid"
    p = PgLease({"app": upstream}, settings={"pidfile": str(pidfile)}).start()
    try:
        assert pidfile.read_text() == f"{p.proc.pid}\n"
    finally:
        assert p.stop() == 0
    assert not pidfile.exists()
    bad = PgLease({"app": upstream}, settings={"pidfile": str(tmp_path / "no" / "such.pid")})
    with pytest.raises(RuntimeError) as e:
        bad.start()
    assert "pidfile" in str(e.value) and "No such file or directory" in str(e.value)


def test_killed_backend_is_replaced(proxy, pg):
    c = psycopg.connect(proxy.dsn(), autocommit=True)
    pid = c.execute("select pg_backend_pid()").fetchone()[0]
    with superuser(pg) as su:
        assert su.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    # The idle server died between transactions: the next query gets another.
    deadline = time.monotonic() + 5
    while True:
        try:
            new_pid = c.execute("select pg_backend_pid()").fetchone()[0]
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "client did not recover"
            c = psycopg.connect(proxy.dsn(), autocommit=True)
    assert new_pid != pid
    # Killed in the middle of a transaction: that client gets an error.
    c2 = psycopg.connect(proxy.dsn())
    pid = c2.execute("select pg_backend_pid()").fetchone()[0]
    with superuser(pg) as su:
        su.execute("select pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError) as e:
        c2.execute("select 1")
    # Postgres's own FATAL is forwarded, then pglease's 08006 (libpq keeps
    # only the text of a second error, so check the message).
    assert "server connection lost" in str(e.value), e.value
    c.close()


def startup_trust(port, user, dbname):
    """A raw protocol client: startup and wait for ReadyForQuery."""
    s = socket.create_connection(("127.0.0.1", port))
    body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{dbname}\0\0".encode()
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = b""
    while not buf.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = s.recv(65536)
        assert chunk, "connection closed during login"
        buf += chunk
    return s


def test_stalled_client_does_not_grow_memory(upstream):
    p = PgLease({"app": upstream}, settings={"auth_type": "trust"}).start()
    try:
        s = startup_trust(p.port, "alice", "app")
        sql = b"select repeat('x', 1000) from generate_series(1, 200000)\0"  # ~200 MB
        s.sendall(b"Q" + struct.pack("!I", len(sql) + 4) + sql)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        before = p.rss_kb()
        time.sleep(3)  # the client reads nothing: pglease must stop reading too
        grown = p.rss_kb() - before
        assert grown < 8 * 1024, f"pglease grew by {grown} kB for a stalled client"
        total = 0
        s.settimeout(60)
        tail = b""
        while True:
            chunk = s.recv(1 << 20)
            assert chunk
            total += len(chunk)
            tail = (tail + chunk)[-6:]
            if tail == b"Z\x00\x00\x00\x05I":
                break
        assert total > 200_000_000
        s.close()
    finally:
        assert p.stop() == 0


def test_postgres_restart_is_survived(upstream, pg):
    p = PgLease({"app": upstream}, settings={"default_pool_size": 4}).start()
    try:
        c = psycopg.connect(p.dsn(), autocommit=True)
        assert c.execute("select 1").fetchone()[0] == 1
        pg.restart()
        # The pool's servers died with Postgres; within a few seconds new
        # clients (and this one, after one error at most) are served again.
        deadline = time.monotonic() + 15
        errors = 0
        while True:
            try:
                assert c.execute("select 2").fetchone()[0] == 2
                break
            except psycopg.OperationalError:
                errors += 1
                assert time.monotonic() < deadline, p.log()
                time.sleep(0.2)
                try:
                    c = psycopg.connect(p.dsn(), autocommit=True)
                except psycopg.OperationalError:
                    pass
        assert errors <= 3
        rc, out = pgbench(p, "-S", "-c", "4", "-T", "2")
        assert rc == 0 and "number of failed transactions: 0 " in out, out
    finally:
        assert p.stop() == 0


def test_sigterm_lets_transactions_finish(upstream):
    p = PgLease({"app": upstream}, settings={"shutdown_timeout": 10}).start()
    try:
        busy = psycopg.connect(p.dsn())
        idle = psycopg.connect(p.dsn(), autocommit=True)
        idle.execute("select 1")
        busy.execute("select 1")  # transaction open
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        time.sleep(0.5)
        # The open transaction can still finish...
        busy.execute("select 2")
        busy.commit()
        # ...the idle client was told, and nobody new gets in.
        with pytest.raises(psycopg.OperationalError):
            idle.execute("select 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn())
        assert p.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        assert "57P01" in p.log()
    finally:
        p.stop()
