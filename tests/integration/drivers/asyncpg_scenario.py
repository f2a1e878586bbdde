"""asyncpg: every query is a named prepared statement (its statement cache),
explicit prepare(), an error inside a transaction, COPY both ways,
executemany."""
import asyncio
import io
import sys

import asyncpg

from _common import BYTEA, INT, NUMERIC, TEXT, TS, TSTZ, Transcript, target

t = target()
out = Transcript()


async def main():
    conn = await asyncpg.connect(host=t["host"], port=t["port"], user=t["user"],
                                 password=t["password"], database=t["dbname"], ssl=False)
    out("connect", list(await conn.fetchrow("select current_database(), current_user")))
    out("params", list(await conn.fetchrow(
        "select $1::int, $2::text, $3::text, $4::bytea, $5::numeric, $6::timestamp, "
        "$7::timestamptz, $8::bool, $9::float8",
        INT, TEXT, None, BYTEA, NUMERIC, TS, TSTZ, True, 1.5)))

    await conn.execute("drop table if exists asyncpg_t")
    await conn.execute("create table asyncpg_t (id int primary key, name text, data bytea, "
                       "amount numeric, at timestamptz)")
    ins = await conn.prepare("insert into asyncpg_t values ($1, $2, $3, $4, $5)")
    sel = await conn.prepare("select $1::int * 2, $2::text || '!', "
                             "(select name from asyncpg_t where id = $1)")
    for i in range(12):
        await ins.fetch(i, f"row {i}", bytes([i, 255 - i]), NUMERIC + i, TSTZ)
        out(f"prepared-{i}", list(await sel.fetchrow(i, f"v{i}")))
        # the statement cache: the same text again and again
        out(f"cached-{i}", await conn.fetchval("select $1::text || $2::text", "a", str(i)))
        sys.stderr.write(f"backend_pid {await conn.fetchval('select pg_backend_pid()')}\n")
    if t.get("check_prepared"):
        names = [r[0] for r in await conn.fetch("select name from pg_prepared_statements")]
        assert any(n.startswith("__asyncpg_") for n in names), names

    # Error inside a transaction, rollback, a good query.
    tr = conn.transaction()
    await tr.start()
    await conn.execute("insert into asyncpg_t values (100, 'doomed', null, null, null)")
    try:
        await conn.fetchval("select 1 / $1::int", 0)
        out("error", "none")
    except asyncpg.DivisionByZeroError as e:
        out("error", [e.sqlstate, str(e)])
    await tr.rollback()
    out("after-rollback", list(await conn.fetchrow("select count(*), max(id) from asyncpg_t")))
    try:
        async with conn.transaction():
            await conn.execute("update asyncpg_t set name = 'x'")
            await conn.execute("select 'x'::int")
    except asyncpg.InvalidTextRepresentationError as e:
        out("error-2", e.sqlstate)
    out("after-rollback-2", await conn.fetchval("select count(*) from asyncpg_t where name = 'x'"))
    async with conn.transaction():
        await conn.execute("update asyncpg_t set name = name || '+' where id < $1", 3)
    out("after-commit", await conn.fetchval(
        "select array_agg(name order by id) from asyncpg_t where id < 4"))

    # COPY in: records (binary) and a text file; COPY out: a query to a file.
    await conn.execute("drop table if exists asyncpg_copy")
    await conn.execute("create table asyncpg_copy (id int, name text, data bytea, "
                       "at timestamp)")
    r = await conn.copy_records_to_table(
        "asyncpg_copy", records=[(i, f"r{i}", bytes([i % 256]) * 2, TS) for i in range(150)])
    out("copy-records", r)
    src = io.BytesIO("".join(f"{1000 + i}\tt{i}\t\\N\t2024-03-01 00:00:0{i % 10}\n"
                             for i in range(100)).encode())
    r = await conn.copy_to_table("asyncpg_copy", source=src)
    out("copy-to-table", r)
    dst = io.BytesIO()
    r = await conn.copy_from_query("select * from asyncpg_copy where id % 25 = 0 order by id",
                                   output=dst)
    out("copy-from-query", [r, dst.getvalue().decode()])

    # executemany: one Parse, many Bind/Execute, one Sync.
    await conn.executemany("insert into asyncpg_copy (id, name) values ($1, $2)",
                           [(5000 + i, f"m{i}") for i in range(300)])
    out("executemany-count", list(await conn.fetchrow(
        "select count(*), sum(id) from asyncpg_copy")))
    try:
        await conn.executemany("insert into asyncpg_t (id, name) values ($1, $2)",
                               [(500, "a"), (500, "dup")])
    except asyncpg.UniqueViolationError as e:
        out("executemany-error", e.sqlstate)
    out("after-executemany-error", await conn.fetchval(
        "select count(*) from asyncpg_t where id = 500"))

    # A cursor (needs a transaction).
    async with conn.transaction():
        rows = [list(r) async for r in conn.cursor(
            "select id, name from asyncpg_copy where id >= $1 order by id limit 5", 5000)]
    out("cursor", rows)
    for i in range(10):
        out(f"again-{i}", list(await sel.fetchrow(i, f"v{i}")))
        sys.stderr.write(f"backend_pid {await conn.fetchval('select pg_backend_pid()')}\n")
    await conn.close()
    out("done", True)


asyncio.run(main())
