"""The admin console: PgBouncer 1.18's SHOW columns (compared with a real
pgbouncer), the counters behind SHOW STATS, several commands in one query
string, stats_users, PAUSE/RESUME/KILL/RECONNECT/ROTATE/SHUTDOWN, and
Debian's prometheus-pgbouncer-exporter scraping pglease."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from harness import free_port
from pglease_proc import PgLease
from test_vault_rotation import DB, start_proxy

UPSTREAM_USER = "pgl_adm"
UPSTREAM_PASSWORD = "upstream-pw-adm"
PGBOUNCER = "/usr/sbin/pgbouncer"
EXPORTER = "/usr/bin/prometheus-pgbouncer-exporter"

SHOWS = ["POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "CLIENTS", "SERVERS",
         "DATABASES", "LISTS", "USERS", "CONFIG", "VERSION"]


@pytest.fixture(scope="module")
def upstream(pg):
    return pg.owned_database(UPSTREAM_USER, UPSTREAM_PASSWORD, "admdb")


@pytest.fixture
def proxy(upstream, request):
    settings = {"default_pool_size": 4, "stats_users": "watcher"}
    settings.update(getattr(request, "param", {}))
    p = PgLease({"app": upstream}, settings=settings,
                users={"alice": "secret", "admin": "adminpw", "watcher": "watchpw"})
    p.start()
    yield p
    rc = p.stop()
    assert rc == 0, p.log()
    assert "bug:" not in p.log()


def console(p, user="admin"):
    return psycopg.connect(p.dsn(user=user, dbname="pglease"), autocommit=True,
                           prepare_threshold=None)


def show(c, what):
    """Rows of SHOW <what> as dicts by column name."""
    cur = c.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def app_row(c, what, key="database"):
    (row,) = [r for r in show(c, what) if r[key] == "app"]
    return row


# -- PgBouncer's columns ------------------------------------------------------

@pytest.fixture
def pgbouncer(upstream):
    """A real PgBouncer 1.18 with the same database, admin and stats users."""
    d = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = free_port()
    (d / "users.txt").write_text('"admin" "adminpw"\n"watcher" "watchpw"\n')
    (d / "pgbouncer.ini").write_text(
        f"[databases]\napp = {upstream}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
        f"listen_port = {port}\nunix_socket_dir =\nauth_type = plain\n"
        f"auth_file = {d / 'users.txt'}\nadmin_users = admin\nstats_users = watcher\n"
        f"logfile = {d / 'pgbouncer.log'}\n")
    shutil.chown(d, "postgres")
    for f in d.iterdir():
        shutil.chown(f, "postgres")
    # pgbouncer drops root itself (-u), so the pid is its own.
    proc = subprocess.Popen([PGBOUNCER, "-u", "postgres", str(d / "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dsn = f"host=127.0.0.1 port={port} dbname=pgbouncer user=admin password=adminpw"
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(dsn, autocommit=True).close()
            break
        except psycopg.OperationalError:
            assert proc.poll() is None and time.monotonic() < deadline, "pgbouncer did not start"
            time.sleep(0.1)
    yield dsn
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


def description(c, what):
    cur = c.execute(f"SHOW {what}")
    cur.fetchall()
    return [(d.name, d.type_code) for d in cur.description], cur.statusmessage


@pytest.mark.parametrize("what", SHOWS)
def test_show_columns_match_pgbouncer_1_18(proxy, pgbouncer, what):
    """Same names, order and type OIDs as PgBouncer 1.18 (pglease's own
    columns only after them), and the same command tag."""
    psycopg.connect(proxy.dsn(), autocommit=True).execute("select 1").close()
    with psycopg.connect(pgbouncer, autocommit=True, prepare_threshold=None) as b, \
            console(proxy) as p:
        want, want_tag = description(b, what)
        got, got_tag = description(p, what)
    assert got[:len(want)] == want
    assert got_tag == want_tag == "SHOW"


# -- counters -----------------------------------------------------------------

@pytest.mark.parametrize("proxy", [{"pool_mode": "transaction"}, {"pool_mode": "session"}],
                         indirect=True)
def test_stats_count_what_clients_did(proxy):
    """Transactions and queries as PgBouncer counts them, in both modes (a
    session is not a transaction)."""
    with console(proxy) as adm:
        before = app_row(adm, "STATS_TOTALS")
        with psycopg.connect(proxy.dsn(), autocommit=True) as c:
            for _ in range(5):
                c.execute("select 1").fetchone()  # 5 transactions of 1 query
            with c.transaction():                 # 1 transaction of 3 queries
                c.execute("select 2").fetchone()
                c.execute("select pg_sleep(0.01)").fetchone()
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("select 1/0")
        after = app_row(adm, "STATS_TOTALS")
        stats = app_row(adm, "STATS")
    delta = {k: after[k] - before[k] for k in after if k != "database"}
    # BEGIN, 2 selects, COMMIT: 4 queries; the failed one is a transaction too.
    assert delta["xact_count"] == 5 + 1 + 1
    assert delta["query_count"] == 5 + 4 + 1
    assert delta["bytes_received"] > 0 and delta["bytes_sent"] > 0
    assert delta["query_time"] >= 10000  # the pg_sleep, in µs
    assert delta["xact_time"] >= 10000
    assert stats["total_query_count"] == after["query_count"]
    assert stats["total_requests"] == stats["total_query_count"]


@pytest.mark.parametrize("proxy", [{"stats_period": 1}], indirect=True)
def test_stats_averages_per_stats_period(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True) as c, console(proxy) as adm:
        deadline = time.monotonic() + 20
        while True:
            for _ in range(20):
                c.execute("select 1").fetchone()
            avg = app_row(adm, "STATS_AVERAGES")
            if avg["query_count"] > 0:
                break
            assert time.monotonic() < deadline, avg
            time.sleep(0.2)
        assert avg["xact_count"] > 0 and avg["bytes_received"] > 0
        stats = app_row(adm, "STATS")
        assert stats["avg_query_count"] >= 0


def test_show_clients_servers_lists_and_users(proxy):
    with psycopg.connect(proxy.dsn(application_name="stats-test"), autocommit=True) as c, \
            console(proxy) as adm:
        c.execute("begin")
        c.execute("select 1")
        (cl,) = [r for r in show(adm, "CLIENTS") if r["database"] == "app"]
        (sv,) = show(adm, "SERVERS")
        assert (cl["type"], cl["user"], cl["state"], cl["addr"]) == ("C", "alice", "active",
                                                                     "127.0.0.1")
        assert cl["application_name"] == "stats-test" and cl["link"] == sv["ptr"]
        assert (sv["type"], sv["database"], sv["state"], sv["user"]) == ("S", "app", "active",
                                                                        UPSTREAM_USER)
        assert sv["link"] == cl["ptr"] and sv["remote_pid"] > 0
        c.execute("commit")
        lists = {r["list"]: r["items"] for r in show(adm, "LISTS")}
        assert lists["databases"] == 1 and lists["pools"] == 1 and lists["used_servers"] == 1
        assert lists["users"] == 3
        assert {r["name"] for r in show(adm, "USERS")} == {"alice", "admin", "watcher"}
        (db,) = show(adm, "DATABASES")
        assert (db["name"], db["database"], db["pool_size"], db["paused"]) == ("app", "admdb", 4, 0)


# -- the query string -----------------------------------------------------------

def test_several_commands_in_one_query_string(proxy):
    with console(proxy) as adm:
        cur = adm.execute("SHOW VERSION; show lists ;SHOW USERS")
        assert cur.fetchone()[0].startswith("pglease ")
        assert cur.nextset()
        assert ("databases", 1) in cur.fetchall()
        assert cur.nextset()
        assert len(cur.fetchall()) == 3
        assert not cur.nextset()


def test_unknown_command_is_an_error_and_ends_the_string(proxy):
    with console(proxy) as adm:
        with pytest.raises(psycopg.errors.SyntaxError) as e:
            adm.execute("SHOW VERSION; FROB; SHOW LISTS")
        assert "unknown admin console command" in str(e.value)
        with pytest.raises(psycopg.errors.SyntaxError):
            adm.execute("SHOW NONSENSE")
        assert adm.execute("SHOW VERSION").fetchone()[0].startswith("pglease ")


def test_stats_users_may_only_show(proxy):
    with console(proxy, user="watcher") as w:
        assert app_row(w, "POOLS")["database"] == "app"
        for cmd in ["PAUSE", "RESUME app", "KILL app", "RECONNECT", "SHUTDOWN"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute(cmd)
    with console(proxy) as adm:
        assert app_row(adm, "DATABASES", key="name")["paused"] == 0
    assert proxy.proc.poll() is None


# -- commands -----------------------------------------------------------------------

def test_pause_waits_for_transactions_then_hands_out_nothing_until_resume(proxy):
    a = psycopg.connect(proxy.dsn(), autocommit=True)
    b = psycopg.connect(proxy.dsn(), autocommit=True)
    a.execute("begin")
    a.execute("select 1")  # holds a server
    adm, watch = console(proxy), console(proxy)
    paused = threading.Event()
    results = []

    def pause():
        cur = adm.execute("PAUSE app; SHOW VERSION")
        results.append(cur.statusmessage)
        results.append(cur.nextset() and cur.fetchone()[0])
        results.append(cur.nextset())  # nothing more: one answer per command
        paused.set()
    t = threading.Thread(target=pause)
    t.start()
    deadline = time.monotonic() + 10
    while app_row(watch, "DATABASES", key="name")["paused"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not paused.is_set()  # a's transaction still holds its server
    a.execute("commit")         # its own server: the transaction may end
    t.join(10)
    assert paused.is_set()
    assert results[0] == "PAUSE" and results[1].startswith("pglease ") and results[2] is None
    assert app_row(watch, "POOLS")["sv_active"] == 0
    done = threading.Event()
    t = threading.Thread(target=lambda: (b.execute("select 2"), done.set()))
    t.start()
    deadline = time.monotonic() + 10
    while app_row(watch, "POOLS")["cl_waiting"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not done.is_set()
    watch.execute("RESUME app")
    t.join(10)
    assert done.is_set()
    # A PAUSE that waits and ends its query string: one answer, nothing more.
    a.execute("begin")
    a.execute("select 1")
    results.clear()
    t = threading.Thread(target=lambda: results.append(adm.execute("PAUSE")))
    t.start()
    deadline = time.monotonic() + 10
    while app_row(watch, "DATABASES", key="name")["paused"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not results
    a.execute("commit")
    t.join(10)
    assert results[0].statusmessage == "PAUSE" and results[0].nextset() is None
    watch.execute("RESUME")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        watch.execute("RESUME")
    with pytest.raises(psycopg.errors.InvalidCatalogName):
        watch.execute("PAUSE nosuchdb")
    for c in (a, b, adm, watch):
        c.close()


def test_pause_then_more_commands_in_the_same_string(proxy):
    with console(proxy) as adm:
        cur = adm.execute("PAUSE; SHOW DATABASES; RESUME")
        assert cur.statusmessage == "PAUSE"
        assert cur.nextset() and cur.fetchone()[11] == 1  # paused
        assert cur.nextset() and cur.statusmessage == "RESUME"
        assert app_row(adm, "DATABASES", key="name")["paused"] == 0


def test_kill_drops_clients_and_servers_new_clients_wait_for_resume(proxy):
    a = psycopg.connect(proxy.dsn(), autocommit=True)
    a.execute("select 1")
    with console(proxy) as adm:
        adm.execute("KILL app")
        with pytest.raises(psycopg.OperationalError) as e:
            a.execute("select 1")
        assert "killed" in str(e.value)
        assert app_row(adm, "DATABASES", key="name")["current_connections"] == 0
        b = psycopg.connect(proxy.dsn(), autocommit=True)
        done = threading.Event()
        t = threading.Thread(target=lambda: (b.execute("select 3"), done.set()))
        t.start()
        deadline = time.monotonic() + 10
        while app_row(adm, "POOLS")["cl_waiting"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not done.is_set() and show(adm, "SERVERS") == []
        adm.execute("RESUME app")
        t.join(10)
        assert done.is_set()
        b.close()
        with pytest.raises(psycopg.errors.SyntaxError):
            adm.execute("KILL")


def test_reconnect_replaces_servers(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True) as c, console(proxy) as adm:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
        c.execute("begin")
        assert c.execute("select pg_backend_pid()").fetchone()[0] == pid
        adm.execute("RECONNECT app")
        (sv,) = show(adm, "SERVERS")
        assert sv["close_needed"] == 1  # busy: closes when released
        c.execute("commit")
        assert c.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_shutdown_stops_pglease(proxy):
    with console(proxy) as adm:
        assert adm.execute("SHUTDOWN").statusmessage == "SHUTDOWN"
    proxy.proc.wait(20)
    assert proxy.proc.returncode == 0
    assert "admin: SHUTDOWN" in proxy.log()


# -- Vault: SHOW LEASES and ROTATE -----------------------------------------------

def test_show_leases_and_rotate(pg, vault, vdb, tmp_path):
    p = start_proxy(pg, vault, tmp_path, ttl="1h", max_ttl="2h",
                    settings={"stats_users": "alice"})
    try:
        p.wait_served(20)
        with console(p) as adm:
            (lease,) = show(adm, "LEASES")
            assert lease["database"] == "app" and lease["state"] == "active"
            assert lease["username"].startswith("v-") and lease["renewable"] is True
            assert 3000 < lease["ttl"] <= 3600 and lease["servers"] >= 1
            full = [l["lease_id"] for l in vault.leases()] if hasattr(vault, "leases") else []
            assert lease["lease_id"].startswith("database/creds/app-rw/")
            assert lease["lease_id"] not in full and lease["lease_id"].endswith("…")
            adm.execute("ROTATE app")
            deadline = time.monotonic() + 20
            while True:
                gens = show(adm, "LEASES")
                active = [g for g in gens if g["state"] == "active"]
                if active and active[0]["generation"] > lease["generation"]:
                    break
                assert time.monotonic() < deadline, gens
                time.sleep(0.1)
            assert active[0]["username"] != lease["username"]
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0] == active[0]["username"]
        with console(p, user="alice") as w:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute("ROTATE")
    finally:
        assert p.stop() == 0, p.log()
    log = p.log()
    assert "rotating now (admin console)" in log


# -- prometheus-pgbouncer-exporter ---------------------------------------------------

def test_debian_pgbouncer_exporter_scrapes_pglease(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        for _ in range(3):
            c.execute("select 1").fetchone()
    port = free_port()
    env = {**os.environ, "PGPASSWORD": "watchpw"}
    log = Path(proxy.dir) / "exporter.log"
    with open(log, "wb") as out:
        exp = subprocess.Popen([EXPORTER, "--host", "127.0.0.1", "--port", str(port),
                                "--pgbouncer-host", "127.0.0.1",
                                "--pgbouncer-port", str(proxy.port),
                                "--pgbouncer-user", "watcher"],
                               stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 20
            while True:
                assert exp.poll() is None, log.read_text()
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                  timeout=5).read().decode()
                    break
                except OSError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
        finally:
            exp.terminate()
            exp.wait(10)
    from prometheus_client.parser import text_string_to_metric_families
    samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("pgbouncer_requests_total", (("database", "app"),))] >= 3
    assert samples[("pgbouncer_received_bytes_total", (("database", "app"),))] > 0
    assert samples[("pgbouncer_active_clients", (("database", "app"), ("user", UPSTREAM_USER)))] >= 0
    assert samples[("pgbouncer_pool_size", (("database", "admdb"),))] == 4
    assert samples[("pgbouncer_databases", ())] == 1
    assert "Traceback" not in log.read_text() and "Error" not in log.read_text()
