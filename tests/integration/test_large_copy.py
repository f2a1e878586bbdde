"""Large and streaming traffic through pglease, in session and transaction
mode: 100 MB COPY in and out, COPY that fails half-way (the client gives up,
or the data is bad), a client that stops reading a 500 MB result (pglease
must not buffer it: back-pressure reaches Postgres), NOTICE and NOTIFY
delivery, and a psycopg pipeline with prepared statements and an error in
the middle.

Every figure is compared with what was sent, or with the same operation done
directly against Postgres."""
import hashlib
import select
import socket
import struct
import sys
import time

import psycopg
import psycopg.errors
import pytest

import pgraw
from pglease_proc import PgLease

MODES = ["session", "transaction"]

ROLE, ROLE_PW, DB = "pgl_big", "big-pw", "big"

# More than 100 MiB of COPY: 106_000 rows of ~1 KB.
COPY_ROWS = 106_000
MIB100 = 100 * 1024 * 1024
PAYLOAD_REPEAT = 31  # 31 x 32 hex chars = 992 characters per row


@pytest.fixture(scope="module")
def upstream(pg):
    """A login role owning its own database."""
    return pg.owned_database(ROLE, ROLE_PW, DB)


class _Proxies:
    """One pglease per pool mode, started on first use, shared by the module."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.running = {}

    def __call__(self, mode):
        if mode not in self.running:
            p = PgLease({DB: self.upstream},
                        settings={"pool_mode": mode, "default_pool_size": 4}).start()
            p.mode = mode
            self.running[mode] = p
        return self.running[mode]


@pytest.fixture(scope="module")
def proxies(upstream):
    px = _Proxies(upstream)
    yield px
    problems = []
    for mode, p in px.running.items():
        rc = p.stop()
        log = p.log()
        if rc != 0:
            problems.append(f"{mode}: pglease exited {rc}\n{log[-6000:]}")
        if "bug:" in log:
            problems.append(f"{mode}: pglease logged a bug:\n{log[-6000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request, proxies):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        running = list(proxies.running.items())
        if "pool_of_one" in request.fixturenames:
            one = request.getfixturevalue("pool_of_one")
            running.append((f"{one.mode}, pool of one", one))
        for mode, p in running:
            sys.stderr.write(f"\n--- pglease ({mode}) log tail ---\n{p.log()[-6000:]}\n")


def through(p, **kw):
    return psycopg.connect(p.dsn(dbname=DB), autocommit=True, **kw)


def direct(upstream, **kw):
    return psycopg.connect(upstream, autocommit=True, **kw)


def value(c, sql, params=None):
    return c.execute(sql, params).fetchone()[0]


def report(msg):
    sys.stdout.write(f"\n[figures] {msg}\n")


def fresh_table(upstream, name, columns):
    with direct(upstream) as d:
        d.execute(f"DROP TABLE IF EXISTS {name}")
        d.execute(f"CREATE TABLE {name} ({columns})")


def drop_table(upstream, name):
    with direct(upstream) as d:
        d.execute(f"DROP TABLE IF EXISTS {name}")


def other_clients_fine(p, n=8):
    """n clients one after another (more than the pool size): each gets a
    server that is idle, outside any transaction, and answers."""
    for i in range(n):
        with through(p) as c:
            assert value(c, "SELECT %s::int * 2", (i,)) == 2 * i
            # A server left inside a transaction would make now() older than
            # the statement, a server left in an aborted one would raise 25P02.
            assert value(c, "SELECT now() = statement_timestamp()") is True


# ---------------------------------------------------------------------------
# 1. COPY FROM STDIN, 100 MB

def payload(i):
    return hashlib.md5(str(i).encode()).hexdigest() * PAYLOAD_REPEAT


@pytest.mark.parametrize("mode", MODES)
def test_copy_from_stdin_100mb(proxies, upstream, mode):
    p = proxies(mode)
    table = f"copy_in_{mode}"
    fresh_table(upstream, table, "id int PRIMARY KEY, t text NOT NULL")
    digest = hashlib.md5()
    sent = 0
    start = time.monotonic()
    with through(p) as c:
        with c.cursor() as cur:
            with cur.copy(f"COPY {table} (id, t) FROM STDIN") as copy:
                chunk = []
                for i in range(1, COPY_ROWS + 1):
                    t = payload(i)
                    digest.update(t.encode())
                    chunk.append(f"{i}\t{t}\n")
                    if len(chunk) == 1000:
                        data = "".join(chunk).encode()
                        sent += len(data)
                        copy.write(data)
                        chunk = []
                if chunk:
                    data = "".join(chunk).encode()
                    sent += len(data)
                    copy.write(data)
            assert cur.rowcount == COPY_ROWS
        elapsed = time.monotonic() - start
        report(f"COPY FROM STDIN via pglease ({mode}): {sent / 1e6:.1f} MB in {elapsed:.2f} s")
        assert sent > MIB100
        check = (f"SELECT count(*), sum(length(t)), md5(string_agg(t, '' ORDER BY id)), "
                 f"min(id), max(id) FROM {table}")
        expected = (COPY_ROWS, COPY_ROWS * 32 * PAYLOAD_REPEAT, digest.hexdigest(), 1, COPY_ROWS)
        assert c.execute(check).fetchone() == expected
    with direct(upstream) as d:
        assert d.execute(check).fetchone() == expected
    drop_table(upstream, table)


# ---------------------------------------------------------------------------
# 2. COPY TO STDOUT, 100 MB

COPY_OUT = (f"COPY (SELECT i, repeat(md5(i::text), 31) FROM generate_series(1, {COPY_ROWS}) i) "
            "TO STDOUT")


def copy_out(conn):
    digest = hashlib.sha256()
    n = 0
    with conn.cursor() as cur:
        with cur.copy(COPY_OUT) as copy:
            for data in copy:
                n += len(data)
                digest.update(data)
    return n, digest.hexdigest()


@pytest.mark.parametrize("mode", MODES)
def test_copy_to_stdout_100mb(proxies, upstream, mode):
    p = proxies(mode)
    with direct(upstream) as d:
        t0 = time.monotonic()
        want = copy_out(d)
        t_direct = time.monotonic() - t0
    with through(p) as c:
        t0 = time.monotonic()
        got = copy_out(c)
        t_proxy = time.monotonic() - t0
        assert value(c, "SELECT 41 + 1") == 42
    report(f"COPY TO STDOUT ({mode}): {got[0] / 1e6:.1f} MB via pglease in {t_proxy:.2f} s, "
           f"direct in {t_direct:.2f} s")
    assert want[0] > MIB100
    assert got == want


# ---------------------------------------------------------------------------
# 3. COPY FROM STDIN failing half-way

def copy_rows(start, n):
    return "".join(f"{i}\t{payload(i)}\n" for i in range(start, start + n)).encode()


def read_until_ready(s):
    """Messages up to and including ReadyForQuery: [(type, body)]."""
    msgs = []
    while True:
        t, b = pgraw.read_message(s)
        msgs.append((t, b))
        if t == b"Z":
            return msgs


def errors_of(msgs):
    return [pgraw.error_fields(b) for t, b in msgs if t == b"E"]


@pytest.mark.parametrize("mode", MODES)
def test_copy_from_stdin_client_abort_raw(proxies, upstream, mode):
    """The client sends 10 MB, then CopyFail: it gets 57014 "COPY from stdin
    failed: <its message>", ReadyForQuery idle, no row is kept, and the same
    connection goes on."""
    p = proxies(mode)
    table = f"copy_abort_raw_{mode}"
    fresh_table(upstream, table, "id int PRIMARY KEY, t text NOT NULL")
    s = pgraw.connect(p.port, "alice", DB, "secret")
    s.settimeout(30)
    bystander = through(p)
    try:
        pgraw.send(s, b"Q", f"COPY {table} FROM STDIN\0".encode())
        t, _ = pgraw.read_message(s)
        assert t == b"G", t
        sent = 0
        i = 1
        while sent < 10_000_000:
            data = copy_rows(i, 1000)
            i += 1000
            pgraw.send(s, b"d", data)
            sent += len(data)
            if i % 5001 == 1:
                # Mid-COPY, another client is served (transaction mode: by
                # another server of the pool).
                assert value(bystander, "SELECT %s::int", (i,)) == i
        pgraw.send(s, b"f", b"client gave up\0")
        msgs = read_until_ready(s)
        errs = errors_of(msgs)
        assert [e.get("C") for e in errs] == ["57014"], msgs
        assert errs[0].get("M") == "COPY from stdin failed: client gave up", errs
        assert [t for t, _ in msgs] == [b"E", b"Z"], msgs
        assert msgs[-1][1] == b"I", msgs[-1]
        assert pgraw.query_value(s, "SELECT 1") == "1"
        assert pgraw.query_value(s, f"SELECT count(*) FROM {table}") == "0"
        assert value(bystander, "SELECT 7") == 7
    finally:
        s.close()
        bystander.close()
    with direct(upstream) as d:
        assert value(d, f"SELECT count(*) FROM {table}") == 0
    other_clients_fine(p)
    drop_table(upstream, table)


class GaveUp(Exception):
    pass


@pytest.mark.parametrize("mode", MODES)
def test_copy_from_stdin_client_abort_psycopg(proxies, upstream, mode):
    """An exception inside `with cursor.copy()`: psycopg sends CopyFail, the
    server answers 57014, which psycopg (3.1) raises; nothing is kept and the
    connection goes on."""
    p = proxies(mode)
    table = f"copy_abort_pg_{mode}"
    fresh_table(upstream, table, "id int PRIMARY KEY, t text NOT NULL")
    notices = []
    with through(p) as c:
        c.add_notice_handler(notices.append)
        with pytest.raises(psycopg.errors.QueryCanceled) as got:
            with c.cursor() as cur:
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    i = 1
                    while i < 10_000:
                        copy.write(copy_rows(i, 1000))
                        i += 1000
                    raise GaveUp("half-way")
        assert got.value.sqlstate == "57014"
        assert got.value.diag.message_primary == (
            "COPY from stdin failed: error from Python: GaveUp - half-way")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert value(c, "SELECT 1") == 1
        assert value(c, f"SELECT count(*) FROM {table}") == 0
        # and a COPY on the same connection works afterwards
        with c.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                copy.write(copy_rows(1, 10))
        assert value(c, f"SELECT count(*) FROM {table}") == 10
    assert notices == []
    other_clients_fine(p)
    drop_table(upstream, table)


def bad_copy(c, table, good_before, good_after):
    """~good_before bytes of integers, a non-integer, ~good_after more bytes."""
    block = "".join(f"{n}\n" for n in range(100_000)).encode()  # ~590 KB
    sent = 0
    with c.cursor() as cur:
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            while sent < good_before:
                copy.write(block)
                sent += len(block)
            copy.write(b"12\nnot-a-number\n13\n")
            after = 0
            while after < good_after:
                copy.write(block)
                after += len(block)
    return sent


@pytest.mark.parametrize("mode", MODES)
def test_copy_from_stdin_bad_data_half_way(proxies, upstream, mode):
    p = proxies(mode)
    table = f"copy_bad_{mode}"
    fresh_table(upstream, table, "n int")
    # Baseline: what psycopg sees from Postgres itself.
    with direct(upstream) as d:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as want:
            bad_copy(d, table, 10_000_000, 5_000_000)
        assert value(d, "SELECT 1") == 1
    with through(p) as c:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as got:
            bad_copy(c, table, 10_000_000, 5_000_000)
        assert got.value.sqlstate == "22P02"
        assert 'invalid input syntax for type integer: "not-a-number"' in str(got.value)
        assert got.value.diag.message_primary == want.value.diag.message_primary
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert value(c, "SELECT 1") == 1
        assert value(c, f"SELECT count(*) FROM {table}") == 0
        for i in range(10):
            assert value(c, "SELECT %s::int + 1", (i,)) == i + 1
    with direct(upstream) as d:
        assert value(d, f"SELECT count(*) FROM {table}") == 0
    other_clients_fine(p)
    drop_table(upstream, table)


@pytest.mark.parametrize("mode", MODES)
def test_copy_bad_data_raw_stray_copydata(proxies, upstream, mode):
    """Raw protocol: Postgres answers the bad row with ErrorResponse and
    ReadyForQuery while the client is still sending; the CopyData and
    CopyDone the client sends after that must be dropped (the protocol
    says so), never turned into an error or sent to anyone else. The client
    sees exactly E 22P02, Z, and then its next query works."""
    p = proxies(mode)
    table = f"copy_bad_raw_{mode}"
    fresh_table(upstream, table, "n int")
    block = "".join(f"{n}\n" for n in range(100_000)).encode()
    s = pgraw.connect(p.port, "alice", DB, "secret")
    s.settimeout(30)
    try:
        pgraw.send(s, b"Q", f"COPY {table} FROM STDIN\0".encode())
        t, _ = pgraw.read_message(s)
        assert t == b"G", t
        for _ in range(17):  # ~10 MB
            pgraw.send(s, b"d", block)
        pgraw.send(s, b"d", b"1\nbad\n2\n")
        for _ in range(8):  # ~5 MB the server will drop
            pgraw.send(s, b"d", block)
        pgraw.send(s, b"c", b"")
        msgs = read_until_ready(s)
        assert [t for t, _ in msgs] == [b"E", b"Z"], msgs
        err = errors_of(msgs)[0]
        assert err["C"] == "22P02", err
        assert err["M"] == 'invalid input syntax for type integer: "bad"', err
        assert msgs[-1][1] == b"I"
        assert pgraw.query_value(s, "SELECT 40 + 2") == "42"
        assert pgraw.query_value(s, f"SELECT count(*) FROM {table}") == "0"
        # nothing more arrives (no late error about the dropped messages)
        s.setblocking(False)
        try:
            extra = s.recv(65536)
        except BlockingIOError:
            extra = b"(none)"
        assert extra == b"(none)", extra
    finally:
        s.close()
    other_clients_fine(p)
    drop_table(upstream, table)


# ---------------------------------------------------------------------------
# 4. A client that stops reading a 500 MB result

STALL_ROWS = 500_000
STALL_WIDTH = 1000
# RowDescription of one text column "repeat" (32 bytes), the DataRows,
# CommandComplete "SELECT 500000" (19 bytes), ReadyForQuery (6 bytes).
STALL_BYTES = 32 + STALL_ROWS * (1 + 4 + 2 + 4 + STALL_WIDTH) + 19 + 6
RSS_LIMIT_KB = 64 * 1024


def stall_sql(tag):
    return (f"SELECT repeat('x', {STALL_WIDTH}) /* {tag} */ "
            f"FROM generate_series(1, {STALL_ROWS})")


def backend_wait(d, tag):
    row = d.execute("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE query LIKE %s AND pid <> pg_backend_pid()",
                    (f"%/* {tag} */%",)).fetchone()
    return row


def stall(p, upstream, tag, seconds=5.0):
    """Sends the big query on a raw socket and reads nothing for `seconds`;
    returns (socket, rss before, max rss during, the backend's wait rows)."""
    s = pgraw.connect(p.port, "alice", DB, "secret")
    # a small receive window, so the stall starts soon
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert pgraw.query_value(s, "SELECT 1") == "1"
    time.sleep(0.2)
    before = p.rss_kb()
    pgraw.send(s, b"Q", (stall_sql(tag) + "\0").encode())
    peak = before
    waits = []
    with direct(upstream) as d:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            peak = max(peak, p.rss_kb())
            waits.append(backend_wait(d, tag))
            time.sleep(0.1)
        peak = max(peak, p.rss_kb())
        final_wait = backend_wait(d, tag)
    return s, before, peak, waits, final_wait


@pytest.mark.parametrize("mode", MODES)
def test_stalled_reader_back_pressure(proxies, upstream, mode):
    p = proxies(mode)
    tag = f"stall-read-{mode}"
    s, before, peak, waits, final_wait = stall(p, upstream, tag)
    try:
        report(f"stalled reader ({mode}): pglease RSS {before} kB before, "
               f"max {peak} kB during a 5 s stall (+{peak - before} kB); "
               f"backend at the end: {final_wait}")
        assert peak - before < RSS_LIMIT_KB, (before, peak)
        # Back-pressure reached Postgres: its backend is blocked writing.
        assert final_wait == ("active", "Client", "ClientWrite"), (final_wait, waits[-5:])
        # Now read all of it: every byte arrives, ending with ReadyForQuery.
        s.settimeout(60)
        total = 0
        head = b""
        tail = b""
        buf = bytearray(1 << 20)
        read_peak = peak
        t0 = time.monotonic()
        last_sample = 0.0
        while total < STALL_BYTES:
            n = s.recv_into(buf)
            if n == 0:
                break
            if len(head) < 64:
                head += bytes(buf[:min(n, 64)])
            tail = (tail + bytes(buf[:n]))[-64:]
            total += n
            now = time.monotonic()
            if now - last_sample > 0.05:
                read_peak = max(read_peak, p.rss_kb())
                last_sample = now
        elapsed = time.monotonic() - t0
        report(f"stalled reader ({mode}): then read {total / 1e6:.1f} MB in {elapsed:.2f} s, "
               f"pglease RSS max {read_peak} kB while reading")
        assert total == STALL_BYTES, (total, STALL_BYTES)
        assert head[:1] == b"T" and head[32:33] == b"D", head
        assert tail.endswith(b"C\x00\x00\x00\x12SELECT 500000\x00Z\x00\x00\x00\x05I"), tail
        assert read_peak - before < RSS_LIMIT_KB, (before, read_peak)
        assert pgraw.query_value(s, "SELECT 'still here'") == "still here"
    finally:
        s.close()
    other_clients_fine(p)


@pytest.mark.parametrize("mode", MODES)
def test_stalled_reader_then_closes(proxies, upstream, mode):
    """The stalled client goes away mid-result: the backend stops (its query
    is cut or drained, never left blocked), and pglease serves new clients."""
    p = proxies(mode)
    tag = f"stall-close-{mode}"
    s, before, peak, waits, final_wait = stall(p, upstream, tag, seconds=3.0)
    report(f"stalled-then-closed ({mode}): pglease RSS {before} kB before, max {peak} kB "
           f"during a 3 s stall; backend: {final_wait}")
    assert peak - before < RSS_LIMIT_KB, (before, peak)
    assert final_wait == ("active", "Client", "ClientWrite"), (final_wait, waits[-5:])
    s.close()
    with direct(upstream) as d:
        deadline = time.monotonic() + 15
        row = backend_wait(d, tag)
        while row is not None and row[0] == "active" and time.monotonic() < deadline:
            time.sleep(0.1)
            row = backend_wait(d, tag)
        assert row is None or row[0] != "active", row
    other_clients_fine(p, n=10)
    assert p.rss_kb() - before < RSS_LIMIT_KB


# ---------------------------------------------------------------------------
# 5. NOTICE and NOTIFY

def wait_readable(conn, timeout):
    r, _, _ = select.select([conn.fileno()], [], [], timeout)
    return bool(r)


@pytest.mark.parametrize("notifier", ["through-pglease", "direct"])
def test_notify_reaches_idle_listener(proxies, upstream, notifier):
    """Session mode: a LISTENing client that sits idle gets the notification
    (pglease forwards it without being asked), with channel and payload."""
    p = proxies("session")
    got = []
    with through(p) as listener:
        listener.add_notify_handler(got.append)
        listener.execute("LISTEN big_chan")
        listener_pid = value(listener, "SELECT pg_backend_pid()")
        assert got == []
        other = through(p) if notifier == "through-pglease" else direct(upstream)
        with other:
            other.execute("SELECT pg_notify('big_chan', %s)", (f"payload {notifier} é",))
            other.execute("NOTIFY big_chan, 'second'")
            other.execute("NOTIFY other_chan, 'not for us'")
        assert wait_readable(listener, 5), "no notification reached the idle listener"
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            listener.execute("SELECT 1")
            if len(got) < 2:
                wait_readable(listener, 0.2)
        assert [(n.channel, n.payload) for n in got] == [
            ("big_chan", f"payload {notifier} é"), ("big_chan", "second")]
        assert all(n.pid != listener_pid for n in got)
        # A notification sent by the listener itself, within a query.
        listener.execute("NOTIFY big_chan, 'self'")
        assert [(n.channel, n.payload) for n in got][-1] == ("big_chan", "self")
        assert got[-1].pid == listener_pid


@pytest.mark.parametrize("mode", MODES)
def test_notice_reaches_client(proxies, mode):
    p = proxies(mode)
    notices = []
    with through(p) as c:
        # a Diagnostic is only valid inside the handler: keep its fields
        c.add_notice_handler(lambda d: notices.append(
            (d.severity, d.sqlstate, d.message_primary, d.message_detail)))
        c.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        assert notices == [("NOTICE", "00000", "hello 42", None)]
        rows = c.execute("SELECT x FROM generate_series(1, 3) x").fetchall()
        assert rows == [(1,), (2,), (3,)]
        c.execute("DO $$ BEGIN RAISE WARNING 'careful' USING DETAIL = 'details here'; END $$")
        assert notices[-1] == ("WARNING", "01000", "careful", "details here")
        assert len(notices) == 2


# ---------------------------------------------------------------------------
# 6. Transaction mode: a psycopg pipeline with prepared statements

def run_pipeline(conn, table, fail_at=None):
    """200 statements in one pipeline (SELECT %s::int, prepared by psycopg
    after 5 runs, and an INSERT every 40); statement `fail_at` divides by
    zero. Returns (the exception, [each cursor's rows or the exception
    fetching them])."""
    curs = []
    raised = None
    try:
        with conn.pipeline():
            for i in range(200):
                cur = conn.cursor()
                if i == fail_at:
                    cur.execute("SELECT 1 / %s::int", (0,))
                elif i % 40 == 39:
                    cur.execute(f"INSERT INTO {table} VALUES (%s) RETURNING n", (i,))
                else:
                    cur.execute("SELECT %s::int", (i,))
                curs.append(cur)
    except psycopg.Error as e:
        raised = e
    results = []
    for cur in curs:
        try:
            results.append(cur.fetchall())
        except psycopg.Error as e:
            results.append(e)
    return raised, results


@pytest.mark.parametrize("where", ["direct", "pglease"])
def test_pipeline_transaction_mode(proxies, upstream, where):
    p = proxies("transaction")
    table = f"pipe_{where}"
    fresh_table(upstream, table, "n int")
    conn = direct(upstream) if where == "direct" else through(p)
    with conn:
        raised, results = run_pipeline(conn, table)
        assert raised is None, raised
        assert results == [[(i,)] for i in range(200)]
        assert value(conn, f"SELECT array_agg(n ORDER BY n) FROM {table}") == [
            39, 79, 119, 159, 199]
        # psycopg did prepare the repeated statement
        assert value(conn, "SELECT count(*) FROM pg_prepared_statements") >= 1

        raised, results = run_pipeline(conn, table, fail_at=100)
        assert isinstance(raised, psycopg.errors.DivisionByZero), repr(raised)
        assert raised.diag.message_primary == "division by zero"
        assert results[:100] == [[(i,)] for i in range(100)]
        assert all(isinstance(r, psycopg.Error) for r in results[100:]), results[100:105]
        # The pipeline is one implicit transaction: its INSERTs before the
        # error are rolled back with it.
        assert value(conn, f"SELECT count(*) FROM {table}") == 5
        # The connection goes on, prepared statements included.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        for i in range(20):
            assert value(conn, "SELECT %s::int", (i,)) == i
        raised, results = run_pipeline(conn, table)
        assert raised is None, raised
        assert results == [[(i,)] for i in range(200)]
        assert value(conn, f"SELECT count(*) FROM {table}") == 10
    if where == "pglease":
        other_clients_fine(p)
    drop_table(upstream, table)


# ---------------------------------------------------------------------------
# 7. COPY over the extended protocol, as libpq sends it (PQexecParams: Parse,
#    Bind, Execute and Sync at once; then CopyData, CopyDone and one more
#    Sync). Postgres ignores the Sync that arrives during copy-in and answers
#    one ReadyForQuery in all. With a pool of one server, a server pglease
#    kept waiting for a second ReadyForQuery would block the next client.

def ext_query(sql):
    body = b""
    body += b"P" + struct.pack("!I", 4 + 1 + len(sql) + 1 + 2) + b"\0" + sql.encode() + b"\0" \
        + struct.pack("!H", 0)
    bind = b"\0\0" + struct.pack("!HHH", 0, 0, 0)
    body += b"B" + struct.pack("!I", 4 + len(bind)) + bind
    execute = b"\0" + struct.pack("!I", 0)
    body += b"E" + struct.pack("!I", 4 + len(execute)) + execute
    body += b"S" + struct.pack("!I", 4)
    return body


def read_types_until(s, stop):
    msgs = []
    while True:
        t, b = pgraw.read_message(s)
        msgs.append((t, b))
        if t in stop:
            return msgs


@pytest.fixture(scope="module", params=MODES)
def pool_of_one(request, upstream):
    p = PgLease({DB: upstream}, settings={"pool_mode": request.param, "default_pool_size": 1,
                                          "query_wait_timeout": 5}).start()
    p.mode = request.param
    yield p
    rc = p.stop()
    log = p.log()
    assert rc == 0, log[-6000:]
    assert "bug:" not in log, log[-6000:]


def other_client_count(p, table, n):
    """Transaction mode only (in session mode the one server is the first
    client's until it leaves): another client gets the server at once."""
    if p.mode != "transaction":
        return
    t0 = time.monotonic()
    with through(p) as other:
        assert value(other, f"SELECT count(*) FROM {table}") == n
    assert time.monotonic() - t0 < 3


def test_copy_extended_protocol_pool_of_one(pool_of_one, upstream):
    p = pool_of_one
    mode = p.mode
    table = f"copy_ext_{mode}"
    fresh_table(upstream, table, "n int")
    block = "".join(f"{n}\n" for n in range(100_000)).encode()  # 100_000 rows
    s = pgraw.connect(p.port, "alice", DB, "secret")
    s.settimeout(20)
    try:
        # A good COPY FROM STDIN.
        s.sendall(ext_query(f"COPY {table} FROM STDIN"))
        msgs = read_types_until(s, {b"G", b"E"})
        assert [t for t, _ in msgs] == [b"1", b"2", b"G"], msgs
        for _ in range(20):
            pgraw.send(s, b"d", block)
        pgraw.send(s, b"c", b"")
        pgraw.send(s, b"S", b"")
        msgs = read_until_ready(s)
        assert [(t, b) for t, b in msgs] == [(b"C", b"COPY 2000000\0"), (b"Z", b"I")], msgs
        # exactly one ReadyForQuery: the next answer is this query's
        assert pgraw.query_value(s, f"SELECT count(*) FROM {table}") == "2000000"
        # Transaction mode: the only server is free for another client.
        other_client_count(p, table, 2_000_000)

        # A COPY FROM STDIN with bad data: E, then Postgres drops everything
        # up to the client's last Sync and answers one ReadyForQuery.
        s.sendall(ext_query(f"COPY {table} FROM STDIN"))
        msgs = read_types_until(s, {b"G", b"E"})
        assert [t for t, _ in msgs] == [b"1", b"2", b"G"], msgs
        for _ in range(5):
            pgraw.send(s, b"d", block)
        pgraw.send(s, b"d", b"1\nbad\n")
        for _ in range(5):
            pgraw.send(s, b"d", block)
        pgraw.send(s, b"c", b"")
        pgraw.send(s, b"S", b"")
        msgs = read_until_ready(s)
        assert [t for t, _ in msgs] == [b"E", b"Z"], msgs
        assert errors_of(msgs)[0]["C"] == "22P02"
        assert msgs[-1][1] == b"I"
        assert pgraw.query_value(s, "SELECT 'after bad copy'") == "after bad copy"
        other_client_count(p, table, 2_000_000)

        # COPY TO STDOUT over the extended protocol.
        s.sendall(ext_query(f"COPY (SELECT n FROM {table} ORDER BY n LIMIT 300000) TO STDOUT"))
        msgs = read_types_until(s, {b"Z"})
        types = [t for t, _ in msgs]
        assert types[:3] == [b"1", b"2", b"H"], types[:5]
        assert types[-3:] == [b"c", b"C", b"Z"], types[-5:]
        assert types.count(b"d") == 300_000
        assert msgs[-2][1] == b"COPY 300000\0"
        assert pgraw.query_value(s, "SELECT 5") == "5"
    finally:
        s.close()
    with through(p) as other:
        assert value(other, f"SELECT count(*) FROM {table}") == 2_000_000
    drop_table(upstream, table)


def test_copy_libpq_exec_params_pool_of_one(pool_of_one, upstream):
    """The same through libpq itself: PQexecParams("COPY ... FROM STDIN"),
    PQputCopyData, PQputCopyEnd (libpq sends the second Sync), PQgetResult."""
    from psycopg.pq import ExecStatus
    p = pool_of_one
    table = f"copy_libpq_{p.mode}"
    fresh_table(upstream, table, "n int")
    with through(p) as c:
        pgconn = c.pgconn
        res = pgconn.exec_params(f"COPY {table} FROM STDIN".encode(), [])
        assert res.status == ExecStatus.COPY_IN, res.error_message
        block = "".join(f"{n}\n" for n in range(100_000)).encode()
        for _ in range(10):
            assert pgconn.put_copy_data(block) == 1
        assert pgconn.put_copy_end() == 1
        res = pgconn.get_result()
        assert res.status == ExecStatus.COMMAND_OK, res.error_message
        assert res.command_status == b"COPY 1000000"
        assert pgconn.get_result() is None
        res = pgconn.exec_(f"SELECT count(*) FROM {table}".encode())
        assert res.status == ExecStatus.TUPLES_OK, res.error_message
        assert res.get_value(0, 0) == b"1000000"
        other_client_count(p, table, 1_000_000)
    with through(p) as other:
        assert value(other, f"SELECT count(*) FROM {table}") == 1_000_000
    drop_table(upstream, table)
