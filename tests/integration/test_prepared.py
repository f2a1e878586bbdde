"""Transaction mode: protocol-level named prepared statements shared between
server connections (proxy/pgl_stmt.h). Each client keeps its own names; a
statement is prepared on whichever server a client gets, before the Bind or
Describe that needs it; answers pglease added are never seen by the client,
and no client ever gets another client's statement."""
import random
import struct
import subprocess
import threading

import psycopg
import pytest

import pgraw
from pglease_proc import PgLease


@pytest.fixture(scope="module")
def upstream(pg):
    return pg.owned_database("pgl_prep", "prep-pw", "prep")


@pytest.fixture(scope="module")
def shared(upstream):
    """Two servers for many clients: statements must move between them."""
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction",
                                             "default_pool_size": 2}).start()
    yield p
    assert p.stop() == 0
    assert "bug:" not in p.log()


class Ext:
    """The extended protocol by hand, to send exactly what drivers send."""

    def __init__(self, p):
        self.s = pgraw.connect(p.port, "alice", "app", "secret")

    def msg(self, t, body):
        pgraw.send(self.s, t, body)

    def parse(self, name, sql, types=()):
        self.msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" +
                 struct.pack("!H", len(types)) + b"".join(struct.pack("!I", t) for t in types))

    def bind(self, stmt, params=(), portal=""):
        body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!HH", 0, len(params))
        for v in params:
            if v is None:
                body += struct.pack("!i", -1)
            else:
                b = str(v).encode()
                body += struct.pack("!i", len(b)) + b
        self.msg(b"B", body + struct.pack("!H", 0))

    def describe(self, kind, name):
        self.msg(b"D", kind + name.encode() + b"\0")

    def execute(self, portal=""):
        self.msg(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))

    def close(self, kind, name):
        self.msg(b"C", kind + name.encode() + b"\0")

    def sync(self):
        self.msg(b"S", b"")

    def results(self):
        """Messages up to ReadyForQuery: (type, value) with DataRow's first
        column and ErrorResponse's SQLSTATE and text."""
        out = []
        while True:
            t, b = pgraw.read_message(self.s)
            if t == b"D":
                (n,) = struct.unpack("!i", b[2:6])
                out.append(("D", b[6:6 + n].decode() if n >= 0 else None))
            elif t == b"E":
                f = pgraw.error_fields(b)
                out.append(("E", f["C"] + " " + f["M"]))
            elif t == b"Z":
                return out
            elif t not in (b"N", b"S"):
                out.append((t.decode(), None))

    def run(self, stmt, *params):
        self.bind(stmt, params)
        self.execute()
        self.sync()
        return self.results()

    def query(self, sql):
        return pgraw.query_value(self.s, sql)

    def end(self):
        self.msg(b"X", b"")
        self.s.close()


def test_same_names_different_queries_never_mix(shared):
    """Every client names its statement S_1, each with its own query: on
    two servers, every answer is the client's own (the wrong-result case of
    pgjdbc and asyncpg)."""
    clients = [Ext(shared) for _ in range(6)]
    for i, c in enumerate(clients):
        c.parse("S_1", f"SELECT $1::int + {i * 1000}", (23,))
        c.describe(b"S", "S_1")
        c.sync()
        assert c.results() == [("1", None), ("t", None), ("T", None)]
    rnd = random.Random(7)
    for n in range(300):
        i = rnd.randrange(len(clients))
        assert clients[i].run("S_1", n) == [("2", None), ("D", str(n + i * 1000)),
                                             ("C", None)], (i, n)
    for c in clients:
        c.end()


def test_answers_in_a_pipeline_are_exactly_the_clients(shared):
    """Parse of a statement the server already has, Binds that need a Parse
    added, Close: the client gets one answer per message it sent, in order,
    and nothing else."""
    a, b = Ext(shared), Ext(shared)
    a.parse("q", "SELECT $1::text || '!'", (25,))
    a.sync()
    assert a.results() == [("1", None)]
    # b prepares the same query under another name: the server may have it.
    b.parse("mine", "SELECT $1::text || '!'", (25,))
    b.bind("mine", ["x"])
    b.execute()
    b.close(b"S", "mine")
    b.parse("mine", "SELECT $1::text || '?'", (25,))
    b.bind("mine", ["y"])
    b.execute()
    b.sync()
    assert b.results() == [("1", None), ("2", None), ("D", "x!"), ("C", None), ("3", None),
                           ("1", None), ("2", None), ("D", "y?"), ("C", None)]
    for n in range(20):
        assert a.run("q", n) == [("2", None), ("D", f"{n}!"), ("C", None)]
        assert b.run("mine", n) == [("2", None), ("D", f"{n}?"), ("C", None)]
    a.end()
    b.end()


def test_close_and_deallocate_behave_as_postgres(shared):
    c = Ext(shared)
    c.parse("s", "SELECT 1")
    c.sync()
    assert c.results() == [("1", None)]
    c.close(b"S", "s")
    c.sync()
    assert c.results() == [("3", None)]
    # Closed for this client, with Postgres's own error; closing it again
    # is not an error, as in Postgres.
    assert c.run("s") == [("E", '26000 prepared statement "s" does not exist')]
    c.close(b"S", "s")
    c.sync()
    assert c.results() == [("3", None)]
    # DEALLOCATE ALL and DISCARD ALL forget the client's statements.
    for forget in ("DEALLOCATE ALL", "DISCARD ALL"):
        c.parse("t", "SELECT 2")
        c.sync()
        assert c.results() == [("1", None)]
        assert c.run("t") == [("2", None), ("D", "2"), ("C", None)]
        c.query(forget)
        assert c.run("t") == [("E", '26000 prepared statement "t" does not exist')]
    # Others sharing the same query are not affected.
    d = Ext(shared)
    d.parse("u", "SELECT 2")
    d.sync()
    assert d.results() == [("1", None)]
    c.parse("t", "SELECT 2")
    c.sync()
    c.results()
    c.query("DISCARD ALL")
    assert d.run("u") == [("2", None), ("D", "2"), ("C", None)]
    c.end()
    d.end()


def test_error_in_a_pipeline_skips_to_the_next_sync(shared):
    c = Ext(shared)
    c.parse("good", "SELECT $1::int * 2", (23,))
    c.bind("good", [21])
    c.execute()
    c.parse("bad", "SELEKT 1")
    c.parse("later", "SELECT 3")
    c.bind("good", [1])
    c.execute()
    c.sync()
    got = c.results()
    assert got[:3] == [("1", None), ("2", None), ("D", "42")]
    assert got[4][0] == "E" and got[4][1].startswith("42601")
    assert len(got) == 5
    # Postgres skipped "bad" and "later"; pglease still knows their
    # definitions (docs/operations.md), so a Bind prepares them: "bad"
    # fails as its Parse did, "later" works. "good" works on whichever
    # server comes next.
    assert c.run("bad")[0][1].startswith("42601")
    assert c.run("later") == [("2", None), ("D", "3"), ("C", None)]
    for n in range(10):
        assert c.run("good", n) == [("2", None), ("D", str(2 * n)), ("C", None)]
    c.end()


def test_eviction_keeps_each_server_within_max_prepared_statements(upstream):
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction", "default_pool_size": 1,
                                             "max_prepared_statements": 3}).start()
    try:
        c = Ext(p)
        for i in range(10):
            c.parse(f"s{i}", f"SELECT {i} AS n")
        c.sync()
        assert c.results() == [("1", None)] * 10
        for rnd in range(3):
            for i in reversed(range(10)):
                assert c.run(f"s{i}") == [("2", None), ("D", str(i)), ("C", None)]
                # One server: what it holds is what pglease evicted down to.
                n = int(c.query("SELECT count(*) FROM pg_prepared_statements "
                                "WHERE name LIKE 'PGL\\_%'"))
                assert n <= 3
        c.end()
    finally:
        assert p.stop() == 0
    assert "bug:" not in p.log()


def test_psycopg_default_prepare_threshold(shared):
    """psycopg 3 prepares a query after 5 executions (as _pg3_0, _pg3_1 ...
    in every connection): six connections on two servers."""
    conns = [psycopg.connect(shared.dsn(), autocommit=True) for _ in range(6)]
    for n in range(40):
        for i, c in enumerate(conns):
            assert c.execute("SELECT %s::int + %s::int", (n, i)).fetchone()[0] == n + i
            assert c.execute("SELECT %s::text || '-' || %s::text",
                             (f"c{i}", n)).fetchone()[0] == f"c{i}-{n}"
    for c in conns:
        c.close()


def test_threads_with_named_statements(shared):
    """Many clients, fewer servers, statements moving all the time."""
    errors = []

    def worker(k):
        try:
            with psycopg.connect(shared.dsn(), autocommit=True) as c:
                for n in range(150):
                    got = c.execute(f"SELECT %s::int * {k}", (n,)).fetchone()[0]
                    if got != n * k:
                        errors.append((k, n, got))
        except Exception as e:  # noqa: BLE001
            errors.append((k, repr(e)))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(1, 11)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []


def test_pgbench_prepared_in_transaction_mode(shared, tmp_path):
    env = {"PGPASSWORD": "secret", "PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin"}
    common = ["-h", "127.0.0.1", "-p", str(shared.port), "-U", "alice"]
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", *common, "app"], env=env, check=True,
                   capture_output=True, timeout=120)
    # One thread per client: pgbench prepares with the blocking PQprepare,
    # which would stall a thread's other clients, holding servers mid
    # transaction, until a server is free (with any pooler).
    r = subprocess.run(["pgbench", "-M", "prepared", "-c", "8", "-j", "8", "-t", "300", *common,
                        "app"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of transactions actually processed: 2400/2400" in r.stdout, r.stdout
    assert "number of failed transactions: 0 " in r.stdout, r.stdout


def test_off_when_max_prepared_statements_is_zero(upstream):
    """0 turns sharing off (PgBouncer's meaning): a client that prepares a
    named statement keeps its server instead (track_session_state = pin)."""
    p = PgLease({"app": upstream}, settings={"pool_mode": "transaction", "default_pool_size": 2,
                                             "max_prepared_statements": 0}).start()
    try:
        c = Ext(p)
        c.parse("S_1", "SELECT 5")
        c.sync()
        assert c.results() == [("1", None)]
        for _ in range(5):
            assert c.run("S_1") == [("2", None), ("D", "5"), ("C", None)]
        assert "keeps its server" in p.log()
        c.end()
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("msg", [
    (b"P", b""), (b"P", b"name"), (b"P", b"n\0SELECT 1"), (b"P", b"n\0SELECT 1\0\xff\xff"),
    (b"B", b""), (b"B", b"portal"), (b"B", b"\0name"), (b"D", b""), (b"D", b"Sname"),
    (b"C", b""), (b"C", b"S"), (b"C", b"Sx"),
], ids=lambda m: (m[0] + m[1][:12]).decode(errors="replace"))
def test_malformed_messages_get_postgres_answer(shared, msg):
    """What pglease reads to rewrite names may be truncated or malformed:
    it passes such a message on unchanged, Postgres answers 08P01, and the
    session (and the pool) go on."""
    c = Ext(shared)
    c.msg(*msg)
    c.sync()
    got = c.results()
    assert len(got) == 1 and got[0][0] == "E" and got[0][1].startswith("08P01"), got
    c.parse("after", "SELECT 7")
    c.bind("after")
    c.execute()
    c.sync()
    assert c.results() == [("1", None), ("2", None), ("D", "7"), ("C", None)]
    c.end()
