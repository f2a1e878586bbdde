"""Transaction mode: session state one client leaves on a server never
reaches another client. With track_session_state = pin (the default) the
client that left it keeps its server and its state; reset gives the server
back clean; off is PgBouncer's behaviour (nothing checked)."""
import time

import psycopg
import pytest

from pglease_proc import PgLease


@pytest.fixture(scope="module")
def upstream(pg):
    """A login role owning its own database."""
    return pg.owned_database("pgl_sstate", "sstate-pw", "sstate")


def connect(p, **kw):
    return psycopg.connect(p.dsn(), autocommit=True, **kw)


def value(c, sql):
    return c.execute(sql).fetchone()[0]


# (what a leaves behind, a query, what a sees, what any other client sees,
#  whether a keeps its server: settings are carried to its next servers instead)
PROBES = [
    ("set work_mem = '77MB'", "show work_mem", "77MB", "4MB", False),
    ("set search_path = pg_catalog", "show search_path", "pg_catalog", '"$user", public', False),
    ("select set_config('statement_timeout', '4321', false)", "show statement_timeout",
     "4321ms", "0", False),
    ("set extra_float_digits = 3", "show extra_float_digits", "3", "1", False),
    ("set role pgl_sstate", "select current_setting('role')", "pgl_sstate", "none", True),
    # Not counting pglease's shared protocol-level statements (PGL_<n>).
    ("prepare stmt_a as select 41", "select count(*) from pg_prepared_statements "
     "where not starts_with(name, 'PGL_')", 1, 0, True),
    ("create temp table tt(x int)", "select to_regclass('pg_temp.tt') is not null", True, False,
     True),
    ("select pg_advisory_lock(4242)",
     "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()", 1, 0,
     True),
    ("listen chan_a", "select count(*) from pg_listening_channels()", 1, 0, True),
    # The unnamed portal of a prepared query is listed too (as directly).
    ("declare cur_a cursor with hold for select 1",
     "select count(*) from pg_cursors where name <> ''", 1, 0, True),
]


@pytest.fixture
def pinning(upstream):
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction",
                                             "default_pool_size": 2}).start()
    yield p
    assert p.stop() == 0
    assert "bug:" not in p.log()


@pytest.mark.parametrize("setup,check,mine,others,pins", PROBES,
                         ids=[p[0].split()[0] + "-" + p[0].split()[1] for p in PROBES])
def test_state_stays_with_its_client(pinning, setup, check, mine, others, pins):
    a = connect(pinning)
    b = connect(pinning)
    a.execute(setup)
    for _ in range(40):
        assert value(b, check) == others
        assert value(a, check) == mine
    clients = pinning_clients(pinning)
    if pins:
        assert clients == {"yes": 1, "no": 1}, clients
        assert pool_column(pinning, "cl_pinned") == "1"
        assert "keeps its server for the rest of its session" in pinning.log()
    else:
        # Carried: a moves between servers and still has it.
        assert clients == {"no": 2}, clients
        assert pool_column(pinning, "cl_pinned") == "0"
        pids = {value(a, "select pg_backend_pid()") for _ in range(30)}
        c = connect(pinning)
        for _ in range(30):
            pids.add(value(a, "select pg_backend_pid()"))
            assert value(a, check) == mine
            assert value(c, check) == others
        c.close()
    a.close()
    # The server a kept is reset before anyone else gets it.
    for _ in range(40):
        c = connect(pinning)
        assert value(c, check) == others
        c.close()
        assert value(b, check) == others
    b.close()


def pinning_clients(p):
    import subprocess
    r = subprocess.run(["psql", "-XAtq", "-c", "show clients",
                        p.dsn(user="admin", dbname="pglease")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.splitlines()]
    counts = {}
    for row in rows:
        if row[2] == "app":  # database; pinned is pglease's column after PgBouncer's 18
            counts[row[19]] = counts.get(row[19], 0) + 1
    return counts


def pool_column(p, name):
    """A SHOW POOLS column of database app."""
    import subprocess
    r = subprocess.run(["psql", "-XAq", "-c", "show pools",
                        p.dsn(user="admin", dbname="pglease")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = lines[0].split("|")
    for line in lines[1:]:
        row = dict(zip(header, line.split("|")))
        if row.get("database") == "app":
            return row[name]
    raise AssertionError(r.stdout)


def test_advisory_lock_released_when_its_client_leaves(pinning):
    a = connect(pinning)
    a.execute("select pg_advisory_lock(777)")
    b = connect(pinning)
    assert value(b, "select pg_try_advisory_lock(777)") is False
    a.close()
    deadline = time.monotonic() + 5
    while not value(b, "select pg_try_advisory_lock(777)") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value(b, "select pg_advisory_unlock(777)") is True
    b.close()


def test_psycopg_default_prepare_threshold_works(pinning):
    """psycopg prepares a statement it ran 5 times (a named Parse, shared
    between servers): no client is pinned for it, and other clients never
    see a statement of the same name."""
    conns = [connect(pinning) for _ in range(4)]
    for i in range(20):
        for c in conns:
            assert c.execute("select %s::int + 1", (i,)).fetchone()[0] == i + 1
    assert pinning_clients(pinning) == {"no": 4}
    for c in conns:
        c.close()


def test_sql_prepare_from_many_clients_never_collides(upstream):
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction",
                                             "default_pool_size": 10}).start()
    try:
        conns = [connect(p) for _ in range(10)]
        for n, c in enumerate(conns):
            c.execute(f"prepare same_name as select {n}")
        for _ in range(5):
            for n, c in enumerate(conns):
                assert value(c, "execute same_name") == n
        for c in conns:
            c.close()
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("track,setup,check,b_sees,a_keeps,logged", [
    ("reset", "create temp table tt(x int)", "select to_regclass('pg_temp.tt') is not null",
     False, False, "resetting the session a transaction left temporary objects in"),
    ("off", "set work_mem = '77MB'", "show work_mem", "77MB", "77MB", None),
])
def test_reset_and_off(upstream, track, setup, check, b_sees, a_keeps, logged):
    """reset: the server goes back clean and the client loses what it left
    there; off: nothing is checked, as in PgBouncer (the next client sees
    it)."""
    # One loop: b must get the very server a used.
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction", "workers": 1,
                                             "default_pool_size": 1,
                                             "track_session_state": track,
                                             # the reset line is per transaction: debug
                                             "log_level": "debug"}).start()
    try:
        a = connect(p)
        b = connect(p)
        a.execute(setup)
        assert value(b, check) == b_sees
        assert value(a, check) == a_keeps
        a.close()
        b.close()
        if logged:
            # Logged when the server went back, which may be just after
            # the client had its answer.
            deadline = time.monotonic() + 5
            while logged not in p.log():
                assert time.monotonic() < deadline, p.log()[-2000:]
                time.sleep(0.05)
    finally:
        assert p.stop() == 0
