"""psycopg 3 with its defaults (prepare_threshold = 5): parameters of every
common type, statements run often enough to be prepared, an error inside a
transaction, COPY in and out, pipeline mode."""
import sys

import psycopg
from psycopg import errors

from _common import BYTEA, INT, NUMERIC, TEXT, TS, TSTZ, Transcript, target

t = target()


def backend_pid(conn):
    """Which server ran the last statement: to stderr, not the transcript."""
    sys.stderr.write(f"backend_pid {conn.execute('select pg_backend_pid()').fetchone()[0]}\n")


out = Transcript()
conn = psycopg.connect(host=t["host"], port=t["port"], user=t["user"],
                       password=t["password"], dbname=t["dbname"], autocommit=True)
assert conn.prepare_threshold == 5, conn.prepare_threshold
with conn:
    out("connect", conn.execute("select current_database(), current_user, "
                                "current_setting('server_encoding')").fetchone())
    out("params", conn.execute(
        "select %s::int, %s::text, %s::text, %s::bytea, %s::numeric, %s::timestamp, "
        "%s::timestamptz, %s::bool, %s::float8",
        (INT, TEXT, None, BYTEA, NUMERIC, TS, TSTZ, True, 1.5)).fetchone())
    out("params-binary", conn.cursor(binary=True).execute(
        "select %b::int, %b::text, %b::bytea, %b::numeric, %b::timestamptz",
        (INT, TEXT, BYTEA, NUMERIC, TSTZ)).fetchone())

    conn.execute("drop table if exists psycopg3_t")
    conn.execute("create table psycopg3_t (id int primary key, name text, data bytea, "
                 "amount numeric, at timestamptz)")

    # Prepared above the threshold: the same statements 12 times each.
    for i in range(12):
        conn.execute("insert into psycopg3_t values (%s, %s, %s, %s, %s)",
                     (i, f"row {i}", bytes([i, 255 - i]), NUMERIC + i, TSTZ))
        out(f"prepared-{i}", conn.execute(
            "select %s::int * 2, %s::text || '!', (select name from psycopg3_t where id = %s)",
            (i, f"v{i}", i)).fetchone())
        backend_pid(conn)
    if t.get("check_prepared"):
        names = [r[0] for r in conn.execute("select name from pg_prepared_statements")]
        assert any(n.startswith("_pg3_") for n in names), names

    # A transaction with an error, rolled back, then a good query.
    conn.execute("begin")
    conn.execute("insert into psycopg3_t values (100, 'doomed', null, null, null)")
    try:
        conn.execute("select 1 / %s::int", (0,))
        out("error", "none")
    except errors.DivisionByZero as e:
        out("error", [e.sqlstate, e.diag.message_primary])
    out("txstatus-after-error", conn.info.transaction_status.name)
    conn.execute("rollback")
    out("txstatus-after-rollback", conn.info.transaction_status.name)
    out("after-rollback", conn.execute("select count(*), max(id) from psycopg3_t").fetchone())

    # A transaction block that commits, with the context manager.
    with conn.transaction():
        conn.execute("update psycopg3_t set name = name || '+' where id < %s", (3,))
    out("after-commit", conn.execute(
        "select array_agg(name order by id) from psycopg3_t where id < 4").fetchone())

    # COPY in and out.
    conn.execute("drop table if exists psycopg3_copy")
    conn.execute("create table psycopg3_copy (id int, name text, data bytea, at timestamp)")
    with conn.cursor() as cur:
        with cur.copy("copy psycopg3_copy (id, name, data, at) from stdin") as cp:
            for i in range(200):
                cp.write_row((i, f"c{i}\t'q'\n" if i % 7 == 0 else f"c{i}",
                              bytes([i % 256]) * 3, TS))
        out("copy-in-rowcount", cur.rowcount)
        rows = []
        with cur.copy("copy (select * from psycopg3_copy where id % 50 = 0 order by id) "
                      "to stdout") as cp:
            for row in cp.rows():
                rows.append(row)
        out("copy-out", rows)
        with cur.copy("copy (select id, name from psycopg3_copy order by id) to stdout "
                      "(format csv)") as cp:
            data = b"".join(bytes(b) for b in cp)
        out("copy-out-csv-bytes", [len(data), data[:60].decode()])
    out("copy-count", conn.execute("select count(*), sum(id) from psycopg3_copy").fetchone())

    # Pipeline mode: many statements, one sync; results read afterwards.
    with conn.pipeline():
        curs = []
        for i in range(15):
            c = conn.cursor()
            c.execute("select %s::int + 1000, %s::text", (i, f"p{i}"))
            curs.append(c)
        ins = conn.cursor()
        ins.executemany("insert into psycopg3_copy (id, name) values (%s, %s)",
                        [(1000 + i, f"pipe{i}") for i in range(20)])
        cnt = conn.cursor()
        cnt.execute("select count(*) from psycopg3_copy where id >= 1000")
    out("pipeline", [c.fetchone() for c in curs])
    out("pipeline-count", cnt.fetchone())

    # An error inside a pipeline, then the pipeline carries on.
    try:
        with conn.pipeline():
            conn.execute("select 1")
            conn.execute("select 1 / 0")
            conn.execute("select 2")
        out("pipeline-error", "none")
    except errors.DivisionByZero as e:
        out("pipeline-error", e.sqlstate)
    out("after-pipeline-error", conn.execute("select %s::int", (7,)).fetchone())

    # Same statement again, many times: still the prepared one.
    for i in range(10):
        out(f"again-{i}", conn.execute("select %s::int * 2, %s::text || '!', "
                                       "(select name from psycopg3_t where id = %s)",
                                       (i, f"v{i}", i)).fetchone())
        backend_pid(conn)
out("done", True)
