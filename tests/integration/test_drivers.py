"""The real driver matrix: each client library runs one scenario program
(tests/integration/drivers/) with its DEFAULT settings (no
prepare_threshold=None, no prepareThreshold=0, no statement_cache_size=0)
three times: straight at PostgreSQL, through pglease in session mode and
through pglease in transaction mode. The scenario prints a deterministic
transcript (one JSON value per line); the three transcripts must be
identical.

Drivers: psycopg 3, psycopg2, asyncpg, pgjdbc, node-postgres, psql; plus
pg_dump / pg_restore in session mode, and two load tests in transaction mode
(asyncpg: 60 clients over 20 servers, named prepared statements; psycopg 3
with its default prepare_threshold from 10 threads).

In transaction mode a scenario must also run without its client being
pinned to a server ("keeps its server for the rest of its session"): named
prepared statements follow the client to whichever server it gets. While a
scenario runs there, a few other clients keep taking servers so that the
scenario's client moves between servers.
"""
import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import psycopg2
import pytest

from pglease_proc import PgLease

HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "drivers"
PY = "/usr/bin/python3"
JDBC_JAR = "/usr/share/java/postgresql.jar"
ROLE, ROLE_PW = "pgl_drv", "drv-pw"
DB, DB_SRC, DB_DST = "drv", "drv_src", "drv_dst"
PIN_LINE = "keeps its server for the rest of its session"


# -- PostgreSQL and pglease -------------------------------------------------

def _admin(pg):
    return psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres",
                           dbname="postgres", autocommit=True)


def _conninfo(pg, dbname):
    return f"host=127.0.0.1 port={pg.port} dbname={dbname} user={ROLE} password={ROLE_PW}"


@pytest.fixture(scope="module")
def upstream(pg):
    """A login role owning the scenario database and the dump source and
    target databases."""
    pg.owned_database(ROLE, ROLE_PW, DB, DB_SRC, DB_DST)
    return {db: _conninfo(pg, db) for db in (DB, DB_SRC, DB_DST)}


def _start(upstream, request, **settings):
    p = PgLease(upstream, settings={"default_pool_size": 20, **settings}).start()
    yield p
    rc = p.stop()
    log = p.log()
    assert rc == 0, log[-4000:]
    assert "bug:" not in log, log[-4000:]


@pytest.fixture(scope="module")
def pgl_session(upstream, request):
    yield from _start(upstream, request, pool_mode="session")


@pytest.fixture(scope="module")
def pgl_txn(upstream, request):
    yield from _start(upstream, request, pool_mode="transaction", query_wait_timeout=20)


def target(mode, pg, pgl_session, pgl_txn, dbname=DB):
    if mode == "direct":
        return {"host": "127.0.0.1", "port": pg.port, "user": ROLE, "password": ROLE_PW,
                "dbname": dbname}
    p = pgl_session if mode == "session" else pgl_txn
    return {"host": "127.0.0.1", "port": p.port, "user": "alice",
            "password": p.users["alice"], "dbname": dbname}


# -- the drivers ----------------------------------------------------------

def _run(cmd, env=None, cwd=DRIVERS, timeout=120):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _python(script):
    def run(t):
        return _run([PY, str(DRIVERS / script), json.dumps(t)])
    return run


def _jdbc(url_params=""):
    def run(t):
        java = shutil.which("java")
        assert java, "java not found (scripts/deps installs default-jdk-headless)"
        return _run([java, "-cp", JDBC_JAR, str(DRIVERS / "Scenario.java"), t["host"],
                     str(t["port"]), t["user"], t["password"], t["dbname"],
                     "1" if t.get("check_prepared") else "0", url_params])
    return run


def _node(t):
    mod = DRIVERS / "node" / "node_modules" / "pg"
    assert mod.is_dir(), ("node-postgres is not installed: run "
                          "npm ci --prefix tests/integration/drivers/node (scripts/test does)")
    return _run(["node", str(DRIVERS / "node" / "scenario.js"), json.dumps(t)])


def _psql(t):
    env = {"PGPASSWORD": t["password"], "PGCONNECT_TIMEOUT": "10", "PGSSLMODE": "disable"}
    conn = ["-h", t["host"], "-p", str(t["port"]), "-U", t["user"], "-d", t["dbname"]]
    a = _run(["psql", "-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", *conn,
              "-f", str(DRIVERS / "scenario.sql")], env=env)
    if a.returncode != 0:
        return a
    b = _run(["psql", "-v", "ON_ERROR_STOP=0", "-X", "-A", "-t", *conn,
              "-f", str(DRIVERS / "scenario_error.sql")], env=env)
    # NOTICEs (drop table if exists on a first run) are not part of the result.
    errs = [line for line in b.stderr.splitlines() if "NOTICE:" not in line]
    assert any("ERROR:  division by zero" in e for e in errs), b.stderr
    assert any("current transaction is aborted" in e for e in errs), b.stderr
    assert any("invalid input syntax for type integer" in e for e in errs), b.stderr
    out = a.stdout + "-- scenario_error.sql\n" + b.stdout + "-- stderr\n" + "\n".join(errs)
    return subprocess.CompletedProcess(b.args, b.returncode, out, a.stderr + b.stderr)


SCENARIOS = {
    "psycopg3": _python("psycopg3_scenario.py"),
    "psycopg2": _python("psycopg2_scenario.py"),
    "asyncpg": _python("asyncpg_scenario.py"),
    "node-pg": _node,
    "psql": _psql,
    # pgjdbc last in each mode: in transaction mode a server it used may be
    # left with extra_float_digits (source "session") after pglease put the
    # setting back, and the next client there to run e.g. CREATE TABLE would
    # then be pinned for a setting it never made.
    "pgjdbc": _jdbc(),
    # The same, but pgjdbc sends extra_float_digits in its startup packet
    # instead of running SET extra_float_digits = 3 after login.
    "pgjdbc-assumemin": _jdbc("assumeMinServerVersion=9.0"),
}
MODES = ("direct", "session", "transaction")
# Direct and session runs of every driver first, transaction mode last.
CASES = [(m, d) for m in MODES for d in SCENARIOS]

_direct = {}


def run_scenario(driver, t):
    r = SCENARIOS[driver](t)
    assert r.returncode == 0, (f"{driver} scenario failed (rc {r.returncode}) against "
                               f"port {t['port']}:\n--- stdout\n{r.stdout[-6000:]}\n"
                               f"--- stderr\n{r.stderr[-6000:]}")
    assert r.stdout.strip(), f"{driver}: empty transcript\n{r.stderr[-4000:]}"
    return r.stdout, r.stderr


def direct_transcript(driver, pg):
    if driver not in _direct:
        t = target("direct", pg, None, None)
        t["check_prepared"] = True
        _direct[driver] = run_scenario(driver, t)[0]
    return _direct[driver]


class Churn:
    """Other clients taking short transactions in transaction mode, so that
    the client under test moves between servers. psycopg2 uses the simple
    query protocol: these clients never leave state behind."""

    def __init__(self, p, threads=4):
        self.p, self.n = p, threads
        self.stop_ev = threading.Event()
        self.errors, self.count = [], 0

    def _loop(self):
        try:
            c = psycopg2.connect(self.p.dsn(dbname=DB))
            c.autocommit = True
            cur = c.cursor()
            while not self.stop_ev.is_set():
                cur.execute("select pg_sleep(0.001)")
                self.count += 1
            c.close()
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))

    def __enter__(self):
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.n)]
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for th in self.threads:
            th.join(30)
        assert not self.errors, self.errors


def _diff(a, b):
    import difflib
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), "direct", "pglease",
                                          lineterm="", n=2))


# -- pg_dump / pg_restore (session mode) ------------------------------------

SRC_SQL = """
drop table if exists dump_a, dump_b cascade;
drop view if exists dump_v;
drop function if exists dump_f(int);
create table dump_a (id serial primary key, name text not null, data bytea,
                     amount numeric(20, 4), at timestamptz, tags text[], doc jsonb);
create table dump_b (a_id int references dump_a(id), n int, note text);
create index dump_b_n on dump_b (n);
insert into dump_a (name, data, amount, at, tags, doc)
  select 'name ' || g || E'\\ttab ''q''', decode(md5(g::text), 'hex'), g * 1.2345,
         '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
         array['t' || g, 'u'], jsonb_build_object('g', g, 's', 'x' || g)
  from generate_series(1, 3000) g;
insert into dump_b select (g % 3000) + 1, g, case when g % 5 = 0 then null else 'n' || g end
  from generate_series(1, 5000) g;
create view dump_v as select a.id, count(b.*) as nb from dump_a a left join dump_b b
  on b.a_id = a.id group by a.id;
create function dump_f(x int) returns int language sql immutable as 'select x * 2';
comment on table dump_a is 'dump source';
"""

CHECK_SQL = """
select (select count(*) from dump_a),
       (select md5(string_agg(t::text, '|' order by id)) from dump_a t),
       (select count(*) from dump_b),
       (select md5(string_agg(t::text, '|' order by n)) from dump_b t),
       (select md5(string_agg(t::text, '|' order by id)) from dump_v t),
       (select dump_f(21)),
       (select obj_description('dump_a'::regclass)),
       (select (last_value, is_called)::text from dump_a_id_seq),
       (select count(*) from pg_indexes where tablename in ('dump_a', 'dump_b'))
"""


def test_pg_dump_restore_session_mode(pg, upstream, pgl_session, tmp_path):
    with psycopg.connect(upstream[DB_SRC], autocommit=True) as c:
        c.execute(SRC_SQL)
        want = c.execute(CHECK_SQL).fetchone()
    env = {**os.environ, "PGPASSWORD": pgl_session.users["alice"], "PGSSLMODE": "disable",
           "PGCONNECT_TIMEOUT": "10"}
    via = ["-h", "127.0.0.1", "-p", str(pgl_session.port), "-U", "alice"]
    dump = tmp_path / "src.dump"
    r = subprocess.run(["pg_dump", "-Fc", *via, "-d", DB_SRC, "-f", str(dump)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    # The same dump, plain, direct and through pglease: identical SQL.
    plain = []
    for args, pw in ((via, env["PGPASSWORD"]),
                     (["-h", "127.0.0.1", "-p", str(pg.port), "-U", ROLE], ROLE_PW)):
        r = subprocess.run(["pg_dump", "-Fp", *args, "-d", DB_SRC], capture_output=True,
                           text=True, timeout=120, env={**env, "PGPASSWORD": pw})
        assert r.returncode == 0, r.stderr
        # pg_dump >= 15.14 brackets the script with a random \\restrict key.
        plain.append("".join(line for line in r.stdout.splitlines(True)
                             if not line.startswith(("\\restrict ", "\\unrestrict "))))
    assert plain[0] == plain[1], _diff(plain[1], plain[0])
    # Restore through pglease, two jobs in parallel (two client connections).
    r = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-j", "2", *via,
                        "-d", DB_DST, str(dump)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(upstream[DB_DST], autocommit=True) as c:
        got = c.execute(CHECK_SQL).fetchone()
    assert got == want
    assert want[0] == 3000 and want[2] == 5000


# -- load, transaction mode -------------------------------------------------

def pinned_clients(p):
    r = subprocess.run(["psql", "-XAtq", "-c", "show clients",
                        p.dsn(user="admin", dbname="pglease")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.splitlines()]
    # database, pinned (pglease's column after PgBouncer's 18)
    return [row for row in rows if row[2] == DB and row[19] == "yes"]


def test_load_asyncpg_60_clients_20_servers(pgl_txn):
    """60 asyncpg clients, 20 servers: named prepared statements (explicit
    prepare() and the statement cache) in a loop for 10 s. A pinned client
    would keep a server: 40 clients would never get one."""
    import asyncpg

    nclients, seconds = 60, 10.0
    errors, wrong, iters = [], [], [0] * nclients

    async def client(i):
        try:
            conn = await asyncio.wait_for(asyncpg.connect(
                host="127.0.0.1", port=pgl_txn.port, user="alice",
                password=pgl_txn.users["alice"], database=DB, ssl=False), 20)
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i} connect: {e!r}")
            return
        try:
            plus = await asyncio.wait_for(conn.prepare("SELECT $1::int + 1"), 20)
            cat = await asyncio.wait_for(conn.prepare("SELECT $1::text || 'x'"), 20)
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                k = i * 1_000_000 + n
                got = await asyncio.wait_for(plus.fetchval(k), 20)
                if got != k + 1:
                    wrong.append((i, "plus", k, got))
                s = f"c{i}-{n}"
                got = await asyncio.wait_for(cat.fetchval(s), 20)
                if got != s + "x":
                    wrong.append((i, "cat", s, got))
                got = await asyncio.wait_for(conn.fetchval("SELECT $1::int * 3, $2::text",
                                                           k, s, column=0), 20)
                if got != k * 3:
                    wrong.append((i, "cache", k, got))
                if n % 10 == 0:
                    async with conn.transaction():
                        a = await plus.fetchval(k)
                        b = await conn.fetchval("SELECT $1::bigint - 1", k)
                    if (a, b) != (k + 1, k - 1):
                        wrong.append((i, "tx", k, (a, b)))
                n += 1
                iters[i] = n
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i} after {iters[i]} iterations: {e!r}")
        finally:
            try:
                await asyncio.wait_for(conn.close(), 10)
            except Exception:  # noqa: BLE001
                conn.terminate()

    async def main():
        await asyncio.gather(*(client(i) for i in range(nclients)))

    log_at = len(pgl_txn.log())
    t0 = time.monotonic()
    asyncio.run(main())
    took = time.monotonic() - t0
    total = sum(iters)
    pins = [line for line in pgl_txn.log()[log_at:].splitlines() if PIN_LINE in line]
    assert not errors, (f"{len(errors)} of {nclients} clients failed "
                        f"({total} iterations in {took:.1f}s):\n" + "\n".join(errors[:10])
                        + ("\npinned:\n" + "\n".join(pins[:5]) if pins else ""))
    assert not wrong, wrong[:10]
    assert not pins, pins[:5]
    assert min(iters) >= 20, sorted(iters)[:10]
    assert total >= 5000, (total, took)


def test_load_psycopg_default_prepare_threshold(pgl_txn):
    """psycopg 3 prepares a statement on its 6th run: 10 clients x 50
    iterations of the same parameterised queries, all results checked, no
    client pinned."""
    nthreads, iterations = 10, 50
    errors, wrong = [], []
    conns = [psycopg.connect(pgl_txn.dsn(dbname=DB), autocommit=True) for _ in range(nthreads)]
    barrier = threading.Barrier(nthreads)

    def work(i, c):
        try:
            assert c.prepare_threshold == 5
            barrier.wait(10)
            for n in range(iterations):
                k = i * 1000 + n
                got = c.execute("select %s::int + 1", (k,)).fetchone()[0]
                if got != k + 1:
                    wrong.append((i, "plus", k, got))
                s = f"t{i}-{n}"
                got = c.execute("select %s::text || 'x'", (s,)).fetchone()[0]
                if got != s + "x":
                    wrong.append((i, "cat", s, got))
                with c.transaction():
                    got = c.execute("select %s::int * 2, %s::text", (k, s)).fetchone()
                    got2 = c.execute("select %s::int + 1", (k,)).fetchone()[0]
                if got != (k * 2, s) or got2 != k + 1:
                    wrong.append((i, "tx", k, got, got2))
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {i}: {e!r}")

    log_at = len(pgl_txn.log())
    try:
        threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(conns)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not any(th.is_alive() for th in threads), "threads hung"
        assert not errors, errors[:10]
        assert not wrong, wrong[:10]
        prepared = [c._prepared._names for c in conns]  # psycopg's own bookkeeping
        assert all(len(names) >= 3 for names in prepared), prepared
        pinned = pinned_clients(pgl_txn)
        pins = [line for line in pgl_txn.log()[log_at:].splitlines() if PIN_LINE in line]
        assert not pinned and not pins, (pinned, pins[:5])
    finally:
        for c in conns:
            c.close()


# -- the matrix (last: with -x, the other tests have run) -------------------

@pytest.mark.parametrize("mode,driver", CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_driver_matrix(mode, driver, pg, upstream, pgl_session, pgl_txn):
    want = direct_transcript(driver, pg)
    assert '"done"' in want or driver == "psql", want[-2000:]
    if mode == "direct":
        # Twice against the server itself: the transcript is deterministic.
        again = run_scenario(driver, target("direct", pg, None, None))[0]
        assert again == want, _diff(want, again)
        return
    p = pgl_session if mode == "session" else pgl_txn
    t = target(mode, pg, pgl_session, pgl_txn)
    log_at = len(p.log())
    if mode == "transaction":
        with Churn(p):
            got, err = run_scenario(driver, t)
    else:
        got, err = run_scenario(driver, t)
    assert got == want, f"{driver} through pglease ({mode} mode) differs:\n{_diff(want, got)}"
    if mode == "transaction":
        new = p.log()[log_at:]
        pins = [line for line in new.splitlines() if PIN_LINE in line]
        assert not pins, f"{driver}: a client was pinned in transaction mode:\n" + "\n".join(pins)
    pids = [line.split()[1] for line in err.splitlines() if line.startswith("backend_pid ")]
    if mode == "transaction" and pids:
        # The client moved between servers: its prepared statements were
        # there on each of them.
        assert len(set(pids)) > 1, f"{driver}: always on one server {set(pids)}"
    elif pids:
        assert len(set(pids)) == 1, f"{driver}: session mode changed server {set(pids)}"
