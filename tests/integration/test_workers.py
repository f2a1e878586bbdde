"""workers = N: several event loops, each with its own clients, servers and
copy of every pool; the main loop hands connections out in turn and keeps
the copies' credentials in step. What must hold across loops: the pool
size bounds them all together, one Vault lease per rotation (not one per
loop), cancel requests reach the loop that owns the key, the console and
/metrics add every loop up, and shutdown revokes every lease."""
import re
import subprocess
import threading
import time

import psycopg
import pytest

from pglease_proc import PgLease
from test_vault_rotation import Sampler, start_proxy, vault_roles

WORKERS = 2


@pytest.fixture(scope="module")
def wdb(pg):
    conninfo = pg.owned_database("pgl_workers", "workers-owner-pw", "workersdb")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo], check=True, capture_output=True,
                   timeout=120)
    yield (f"host=127.0.0.1 port={pg.port} dbname=workersdb user=pgl_workers "
           "password=workers-owner-pw")
    pg.sql("DROP DATABASE IF EXISTS workersdb WITH (FORCE)")


def backends(pg):
    return pg.sql("select count(*) from pg_stat_activity where datname = 'workersdb' "
                  "and usename = 'pgl_workers'")[0][0]


def loops_of(ids):
    """Loop k's ids are k+1, k+1+N, ... (pgl_loop_next_id)."""
    return {(i - 1) % WORKERS for i in ids}


def test_pgbench_on_every_loop_within_one_pool_size(pg, wdb):
    p = PgLease({"app": wdb}, settings={"workers": WORKERS, "default_pool_size": 4}).start()
    most, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            most[0] = max(most[0], backends(pg))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    try:
        r = subprocess.run(["pgbench", "-n", "-S", "-c", "8", "-j", "2", "-T", "5", p.dsn()],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "number of failed transactions: 0 " in r.stdout, r.stdout
        servers = p.admin_rows("SHOW SERVERS")
        clients = [c for c in p.admin_rows("SHOW CLIENTS") if c["database"] == "pglease"]
        print(f"\nworkers = {WORKERS}: {re.search(r'tps = [0-9.]+', r.stdout).group(0)}, "
              f"{len(servers)} servers, at most {most[0]} backends, loops with servers "
              f"{sorted(loops_of(s['id'] for s in servers))}, "
              f"{p.log().count('its slot goes to a client of another worker')} server(s) moved")
        # Both loops served, and the pool's size bounded them together.
        assert loops_of(s["id"] for s in servers) == set(range(WORKERS)), servers
        assert len(servers) <= 4 and most[0] <= 4, (servers, most)
        assert clients, "the console sees itself"
    finally:
        stop.set()
        t.join()
        assert p.stop() == 0


def test_console_and_metrics_add_up_every_loop(pg, wdb):
    import urllib.request

    from pglease_proc import free_port
    from prometheus_client.parser import text_string_to_metric_families
    http = free_port()
    p = PgLease({"app": wdb}, settings={"workers": WORKERS, "default_pool_size": 4,
                                        "http_listen": f"127.0.0.1:{http}"}).start()
    conns = []
    try:
        conns = [psycopg.connect(p.dsn(), autocommit=True) for _ in range(4)]
        for c in conns:
            c.execute("select 1")
        rows = {r["id"]: r for r in p.admin_rows("SHOW CLIENTS") if r["database"] == "app"}
        assert len(rows) == 4 and loops_of(rows) == set(range(WORKERS)), rows
        pool = p.admin_rows("SHOW POOLS")[0]
        assert pool["cl_active"] == 4, pool
        total = p.admin_rows("SHOW STATS_TOTALS")[0]
        assert total["xact_count"] >= 4, total
        body = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(body.decode())
                   for s in f.samples}
        assert samples[("pglease_clients", (("database", "app"), ("state", "idle")))] == 4
        assert samples[("pglease_transactions_total", (("database", "app"),))] >= 4
    finally:
        for c in conns:
            c.close()
        assert p.stop() == 0


def test_cancel_reaches_the_loop_that_owns_the_key(wdb):
    p = PgLease({"app": wdb}, settings={"workers": WORKERS}).start()
    try:
        # Connections go to the loops in turn: the cancel request's own
        # connection comes after the client's, so another loop gets it.
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            threading.Timer(0.5, c.cancel).start()
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("select pg_sleep(20)")
            assert time.monotonic() - t0 < 5
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        assert p.stop() == 0


def test_a_waiting_client_gets_a_slot_another_loop_frees(pg, wdb):
    """pool_size 2 across 2 loops: two open transactions hold both servers;
    the clients after them wait, on whichever loop, and are served as soon
    as a server is free anywhere."""
    p = PgLease({"app": wdb}, settings={"workers": WORKERS, "default_pool_size": 2}).start()
    conns = []
    try:
        conns = [psycopg.connect(p.dsn(), autocommit=True) for _ in range(4)]
        for c in conns[:2]:
            c.execute("begin")
            c.execute("select 1")
        done = []

        def run(c):
            done.append(c.execute("select 2").fetchone()[0])

        waiters = [threading.Thread(target=run, args=(c,)) for c in conns[2:]]
        for t in waiters:
            t.start()
        time.sleep(1.0)
        assert done == [] and backends(pg) <= 2
        conns[0].execute("commit")
        conns[1].execute("commit")
        for t in waiters:
            t.join(10)
        assert done == [2, 2]
        assert backends(pg) <= 2
    finally:
        for c in conns:
            c.close()
        assert p.stop() == 0


def test_rotation_under_load_one_lease_per_rotation(pg, vault, vdb, tmp_path):
    """Vault leases of 6 s (max 12 s) under pgbench on 2 loops: each
    rotation is one lease (the copies share it), 0 failed transactions, no
    backend outlives its VALID UNTIL, and SIGTERM revokes every lease."""
    p = start_proxy(pg, vault, tmp_path, "6s", "12s",
                    {"workers": str(WORKERS), "default_pool_size": "4"})
    sampler = Sampler(pg)
    sampler.start()
    try:
        r = subprocess.run(["pgbench", "-n", "-S", "-c", "8", "-j", "2", "-T", "20", p.dsn()],
                           capture_output=True, text=True, timeout=120)
    finally:
        sampler.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out + p.log()[-3000:]
    assert "number of failed transactions: 0 " in out, out
    log = p.log()
    issued = vault.log().count("lease issued")
    takeovers = log.count(") takes over")
    print(f"\nworkers = {WORKERS} under rotation: {len(sampler.users)} upstream users, "
          f"{issued} leases issued, {takeovers} takeovers (all loops), "
          f"at most {sampler.most_backends} backends, {len(sampler.violations)} past VALID UNTIL")
    assert len(sampler.users) >= 3, sampler.users
    # One lease per credential: as many as there were upstream users.
    assert issued == len(sampler.users) or issued == len(sampler.users) + 1, (issued,
                                                                             sampler.users)
    assert not sampler.violations, sampler.violations[:5]
    assert sampler.most_backends <= 4 + 2 * WORKERS, sampler.most_backends
    p.signal(15)
    assert p.proc.wait(30) == 0
    assert vault.state()["leases"] == []
    assert vault_roles(pg) == set()


def test_a_file_credential_that_expires_on_every_loop(tmp_path, wdb):
    """A credential file nobody renews: its deadline is reached on every
    loop's copy (whichever sees it first, the copies of a file credential
    have no Vault to ask); clients are told, and pglease keeps running and
    stops cleanly."""
    import datetime
    import json
    expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=6))
    cred = tmp_path / "db.json"
    cred.write_text(json.dumps({"username": "pgl_workers", "password": "workers-owner-pw",
                                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    conninfo = " ".join(kv for kv in wdb.split() if not kv.startswith(("user=", "password=")))
    p = PgLease({"app": f"{conninfo} creds=file:{cred}"},
                settings={"workers": WORKERS, "query_wait_timeout": 2}).start()
    try:
        conns = [psycopg.connect(p.dsn(), autocommit=True) for _ in range(2 * WORKERS)]
        for c in conns:
            assert c.execute("select 1").fetchone() == (1,)
        p.wait_log("reached its deadline", count=WORKERS, timeout=15)
        for c in conns:
            with pytest.raises(psycopg.OperationalError):
                c.execute("select 1")
            c.close()
        assert p.proc.poll() is None
        assert p.admin_rows("SHOW POOLS")[0]["sv_active"] == 0
    finally:
        assert p.stop() == 0
