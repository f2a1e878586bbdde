"""psycopg2: no protocol-level prepare (it interpolates parameters client
side), so parameterised queries, an error in a transaction, copy_expert in
and out, execute_values / execute_batch."""
import io

import psycopg2
import psycopg2.extras
from psycopg2 import errors

from _common import BYTEA, INT, NUMERIC, TEXT, TS, TSTZ, Transcript, target

t = target()
out = Transcript()
conn = psycopg2.connect(host=t["host"], port=t["port"], user=t["user"],
                        password=t["password"], dbname=t["dbname"])
cur = conn.cursor()


def one(sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()


out("connect", one("select current_database(), current_user"))
out("params", one("select %s::int, %s::text, %s::text, %s::bytea, %s::numeric, "
                  "%s::timestamp, %s::timestamptz, %s::bool, %s::float8",
                  (INT, TEXT, None, psycopg2.Binary(BYTEA), NUMERIC, TS, TSTZ, True, 1.5)))
conn.commit()

cur.execute("drop table if exists psycopg2_t")
cur.execute("create table psycopg2_t (id int primary key, name text, data bytea, "
            "amount numeric, at timestamptz)")
conn.commit()
for i in range(12):
    cur.execute("insert into psycopg2_t values (%s, %s, %s, %s, %s)",
                (i, f"row {i}", psycopg2.Binary(bytes([i, 255 - i])), NUMERIC + i, TSTZ))
    out(f"query-{i}", one("select %s * 2, %s || '!', (select name from psycopg2_t where id = %s)",
                          (i, f"v{i}", i)))
conn.commit()

# An error inside a transaction (psycopg2 opens one implicitly), rollback.
cur.execute("insert into psycopg2_t values (100, 'doomed', null, null, null)")
try:
    cur.execute("select 1 / %s", (0,))
    out("error", "none")
except errors.DivisionByZero as e:
    out("error", [e.pgcode, e.diag.message_primary])
out("status-after-error", conn.info.transaction_status)
try:
    cur.execute("select 1")
    out("in-failed-tx", "none")
except errors.InFailedSqlTransaction as e:
    out("in-failed-tx", e.pgcode)
conn.rollback()
out("after-rollback", one("select count(*), max(id) from psycopg2_t"))
conn.commit()

# copy_expert in and out.
cur.execute("drop table if exists psycopg2_copy")
cur.execute("create table psycopg2_copy (id int, name text, at timestamp)")
buf = io.StringIO("".join(f"{i},\"n{i}, with comma\",2024-01-0{1 + i % 9} 10:00:00\n"
                          for i in range(150)))
cur.copy_expert("copy psycopg2_copy from stdin (format csv)", buf)
out("copy-in-rowcount", cur.rowcount)
conn.commit()
dst = io.StringIO()
cur.copy_expert("copy (select * from psycopg2_copy where id % 30 = 0 order by id) to stdout", dst)
out("copy-out", dst.getvalue())
conn.commit()

# Client-side batches.
psycopg2.extras.execute_values(cur, "insert into psycopg2_copy (id, name) values %s",
                               [(1000 + i, f"v{i}") for i in range(50)])
psycopg2.extras.execute_batch(cur, "insert into psycopg2_copy (id, name) values (%s, %s)",
                              [(2000 + i, f"b{i}") for i in range(50)], page_size=10)
conn.commit()
out("batch-count", one("select count(*), sum(id) from psycopg2_copy"))
conn.commit()

# Autocommit with an explicit transaction block.
conn.autocommit = True
cur.execute("begin")
cur.execute("delete from psycopg2_copy where id >= 2000")
try:
    cur.execute("select 'x'::int")
except errors.InvalidTextRepresentation as e:
    out("error-2", e.pgcode)
cur.execute("rollback")
out("after-rollback-2", one("select count(*) from psycopg2_copy where id >= 2000"))
conn.close()
out("done", True)
