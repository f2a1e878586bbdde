"""Faults of Vault and Postgres, with clients running through them: a lease
revoked or a role dropped while servers are live, Vault hung past a lease's
end, Postgres full or restarting. Each test asserts what the clients saw."""
import re
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from pglease_proc import PgLease
from test_vault_rotation import DB, approle, start_proxy, wait_until_served


@pytest.fixture(scope="module", autouse=True)
def vdb(pg):
    """test_vault_rotation's database, made here and dropped after (that
    module makes its own)."""
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {DB}")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", str(pg.socket_dir), "-p",
                    str(pg.port), "-U", "postgres", DB], check=True, capture_output=True,
                   timeout=120)
    yield
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


class Load:
    """Threads running one short query after another; each outcome is kept
    with the wall-clock time the query started."""

    def __init__(self, p, n=4, sql="select count(*) from pgbench_branches"):
        self.p, self.sql = p, sql
        self.results = []  # (start, ok, error text)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        c = None
        while not self.stopping.is_set():
            start = time.time()
            try:
                if c is None:
                    c = psycopg.connect(self.p.dsn(), autocommit=True, connect_timeout=10)
                c.execute(self.sql).fetchone()
                ok, err = True, None
            except psycopg.Error as e:
                ok, err = False, f"{e.sqlstate} {e}".strip()
                if c is not None and c.closed:
                    c = None
            with self.lock:
                self.results.append((start, ok, err))
            if not ok:
                time.sleep(0.02)
        if c is not None:
            c.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads)
        return self.results


def log_time(log, pattern):
    """Wall-clock time of the first log line matching `pattern`."""
    for line in log.splitlines():
        if re.search(pattern, line):
            stamp = line.split(" ", 1)[0]
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc).timestamp()
    raise AssertionError(f"no log line matches {pattern!r}")


DETECTED = r"no longer works: after a permission error on a live server, a test login was rejected"


def revoke_and_measure(pg, vault, tmp_path, how):
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", {"default_pool_size": 4})
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            first = c.execute("select current_user").fetchone()[0]
        load = Load(p)
        time.sleep(1.5)
        t0 = time.time()
        how(first)
        time.sleep(4)
        results = load.stop()
        log = p.log()
        detected = log_time(log, DETECTED)
        after = [r for r in results if r[0] > detected + 0.05]
        failed_after = [r for r in after if not r[1]]
        failed = [r for r in results if not r[1]]
        last_failed = max((r[0] for r in failed), default=t0)
        back = min(r[0] for r in results if r[0] > last_failed and r[1])
        print(f"\n{how.__name__}: detected {detected - t0:.3f} s after the revocation; "
              f"transactions succeed again {back - t0:.3f} s after; {len(failed)} failed before "
              f"detection ({failed[:1]}), {len(failed_after)} after, "
              f"{len(after)} transactions after")
        assert all("42501" in r[2] or "28" in r[2][:2] for r in failed), failed[:5]
        assert failed_after == [], failed_after[:5]
        assert len(after) > 100
        assert detected - t0 < 3, detected - t0
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0] != first
        # One clear line naming the database, the generation and the cause.
        line = next(l for l in log.splitlines() if re.search(DETECTED, l))
        # (A worker loop's copy of the pool says which: "app@w1".)
        assert re.search(r" app(@w\d+)?: generation 1 \(user ", line), line
        return line
    finally:
        assert p.stop() == 0


def test_revoked_lease_is_detected_on_live_servers(pg, vault, tmp_path):
    """The operator revokes the live lease (Vault drops the role) while
    clients run: the first statement that hits the dead role fails with it,
    a test login confirms, and every transaction after that succeeds on a
    new credential."""
    def revoke_lease(user):
        lease = next(l for l in vault.state()["leases"] if l["username"] == user)
        vault.fault("revoke-lease", lease_id=lease["lease_id"])
    line = revoke_and_measure(pg, vault, tmp_path, revoke_lease)
    assert "generation 1 (user v-" in line


def test_role_dropped_by_hand_is_detected(pg, vault, tmp_path):
    def drop_role(user):
        q = f'"{user}"'
        pg.sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {q}", dbname=DB)
        pg.sql(f"REVOKE USAGE ON SCHEMA public FROM {q}", dbname=DB)
        pg.sql(f"REVOKE CONNECT ON DATABASE {DB} FROM {q}")
        pg.sql(f"DROP ROLE {q}")
    revoke_and_measure(pg, vault, tmp_path, drop_role)


def test_hung_vault_never_lets_a_backend_outlive_its_role(pg, vault, tmp_path):
    """Vault stopped for longer than a lease: pglease's own clock cuts the
    servers before the role's VALID UNTIL, whatever Vault does; clients
    wait, then are told Vault's error; service resumes by itself."""
    p = start_proxy(pg, vault, tmp_path, "6s", "60s",
                    {"default_pool_size": 2, "query_wait_timeout": "3"})
    try:
        load = Load(p, n=2)
        time.sleep(1)
        vault.proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        worst = []
        while time.time() - stopped < 12:
            rows = pg.sql("select count(*) from pg_stat_activity a join pg_roles r "
                          "on r.rolname = a.usename where r.rolvaliduntil < now()")
            worst.append(rows[0][0])
            time.sleep(0.5)
        vault.proc.send_signal(signal.SIGCONT)
        resumed = time.time()
        wait_until_served(p, 20)
        time.sleep(1)
        results = load.stop()
        print(f"\n{len(worst)} samples of pg_stat_activity, backends past VALID UNTIL: "
              f"{max(worst)}; served again {time.time() - resumed:.1f} s after Vault resumed")
        assert max(worst) == 0, worst
        # Cut at the deadline (57P01 naming the credential), or told after
        # query_wait_timeout that Vault has not delivered (08006).
        errors = {r[2] for r in results if not r[1]}
        assert all("Vault" in e or "upstream credential expires" in e for e in errors), \
            "\n".join(errors)
        assert any(r[1] for r in results if r[0] > resumed), "no success after Vault resumed"
        assert "reached its deadline without a successor" in p.log()
    finally:
        vault.proc.send_signal(signal.SIGCONT)
        assert p.stop() == 0


@pytest.fixture(scope="module")
def plain(pg):
    conninfo = pg.owned_database("pgl_fault", "fault-pw", "faultdb")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo], check=True, capture_output=True,
                   timeout=120)
    return conninfo


def pgbench_during(p, seconds, event, at=2.0):
    """pgbench -S for `seconds` with `event()` run `at` seconds in; returns
    (failed transactions, processed, latency max in ms, output)."""
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(["pgbench", "-n", "-S", "-c", "4", "-j", "2", "-T", str(seconds),
                                 "-l", "--log-prefix", f"{d}/tx", p.dsn()],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(at)
        event()
        out, _ = proc.communicate(timeout=seconds + 60)
        lat = [int(line.split()[2]) for f in Path(d).iterdir()
               for line in f.read_text().splitlines()]
    failed = re.search(r"number of failed transactions: (\d+)", out)
    done = re.search(r"actually processed: (\d+)", out)
    assert proc.returncode == 0 and failed and done, out
    return int(failed.group(1)), int(done.group(1)), max(lat) / 1000, out


def test_clients_wait_while_postgres_is_full(pg, plain):
    """No connection slot for a second (CONNECTION LIMIT 0) when pgbench's
    clients first need servers: they wait while the logins retry, and no
    transaction fails."""
    p = PgLease({"app": plain}, settings={"default_pool_size": 4}).start()
    try:
        pg.sql("ALTER DATABASE faultdb CONNECTION LIMIT 0")
        failed, done, lat_max, out = pgbench_during(
            p, 5, lambda: pg.sql("ALTER DATABASE faultdb CONNECTION LIMIT -1"), at=1.0)
        print(f"\npgbench starting against a full Postgres (1 s): {done} transactions, "
              f"{failed} failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        assert "53300" in p.log()
    finally:
        pg.sql("ALTER DATABASE faultdb CONNECTION LIMIT -1")
        assert p.stop() == 0


def test_clients_wait_through_a_postgres_restart(pg, plain):
    """pg_ctl restart -m fast under pgbench -S: queries that start while
    Postgres is down wait, and a query whose backend is killed before it
    answers runs again on a new server: 0 failed transactions."""
    p = PgLease({"app": plain}, settings={"default_pool_size": 4}).start()
    try:
        try:
            failed, done, lat_max, out = pgbench_during(p, 8, pg.restart, at=2.0)
        except AssertionError as e:
            lines = [l for l in p.log().splitlines() if "INFO" in l or "WARN" in l]
            raise AssertionError("\n".join(lines[-40:])) from e
        print(f"\npgbench -S across pg_ctl restart -m fast: {done} transactions, {failed} "
              f"failed, latency max {lat_max:.0f} ms; "
              f"{p.log().count('the request runs again')} requests ran again")
        assert failed == 0, out
        assert done > 1000, out
    finally:
        assert p.stop() == 0


KILLED = "terminating connection due to administrator command"


def in_flight(p, sql, results, key, **connect):
    """Runs `sql` on a fresh connection in a thread; results[key] gets the
    value or the error."""
    def run():
        try:
            with psycopg.connect(p.dsn(**connect), autocommit=True) as c:
                results[key] = c.execute(sql).fetchone()[0]
        except psycopg.Error as e:
            results[key] = f"error {e.sqlstate} {e}"
    t = threading.Thread(target=run)
    t.start()
    return t


def wait_running(pg, pattern, n=1):
    """Until `n` backends run a statement matching `pattern` (bounded)."""
    for _ in range(200):
        rows = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                      f"query LIKE '{pattern}'")
        if int(rows[0][0]) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no backend runs {pattern}")


def test_a_statement_killed_by_a_restart_runs_again(pg, plain):
    """Statements in flight when `pg_ctl restart -m fast` kills their
    backends: autocommit ones, simple and extended protocol, run again and
    answer; one inside a transaction and one in session mode get the error
    as they would directly."""
    p = PgLease({"app": plain, "appsess": plain + " pool_mode=session"},
                settings={"default_pool_size": 6}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as warm:
            warm.execute("select 1")
        results = {}
        threads = [in_flight(p, "select 42 from pg_sleep(1.5)", results, "extended")]

        def simple():
            # ClientCursor sends a simple Query.
            try:
                with psycopg.connect(p.dsn(), autocommit=True,
                                     cursor_factory=psycopg.ClientCursor) as conn:
                    results["simple"] = conn.execute("select 43 from pg_sleep(1.5)").fetchone()[0]
            except psycopg.Error as e:
                results["simple"] = f"error {e.sqlstate} {e}"

        def in_tx():
            try:
                with psycopg.connect(p.dsn()) as conn:
                    conn.execute("select 1")
                    results["transaction"] = conn.execute(
                        "select 44 from pg_sleep(1.5)").fetchone()[0]
            except psycopg.Error as e:
                results["transaction"] = f"error {e.sqlstate} {e}"
        for f in (simple, in_tx):
            threads.append(threading.Thread(target=f))
            threads[-1].start()
        threads.append(in_flight(p, "select 45 from pg_sleep(1.5)", results, "session",
                                 dbname="appsess"))
        wait_running(pg, "select 4_ from pg_sleep(1.5)", 4)
        pg.restart()
        for t in threads:
            t.join(60)
        print(f"\n{results}")
        assert results["extended"] == 42, results
        assert results["simple"] == 43, results
        assert KILLED in results["transaction"], results
        assert KILLED in results["session"], results
        assert p.log().count("the request runs again on another server (run 2") >= 2
    finally:
        assert p.stop() == 0


def test_terminated_backend_replay_rules(pg, plain):
    """pg_terminate_backend of a backend running an autocommit statement:
    the statement runs again (once more per kill, at most 3 runs), unless
    replay_terminated_statements is off; named prepared statements are not
    run again."""
    def kill_running(pattern):
        wait_running(pg, pattern)
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               f"WHERE state = 'active' AND query LIKE '{pattern}'")

    p = PgLease({"app": plain}, settings={"default_pool_size": 2}).start()
    try:
        results = {}
        t = in_flight(p, "select 7 from pg_sleep(1)", results, "once")
        kill_running("select 7 from pg_sleep(1)")
        t.join(30)
        assert results["once"] == 7, results

        # A statement that terminates its own backend every time (before
        # its row): it runs three times, then the client gets the FATAL.
        t = in_flight(p, "select pg_terminate_backend(pg_backend_pid()), pg_sleep(0.3)",
                      results, "self")
        t.join(30)
        assert KILLED in results["self"], results
        assert "(run 3 of at most 3)" in p.log()

        # A named (prepared) statement is not run again.
        def prepared():
            try:
                with psycopg.connect(p.dsn(), autocommit=True) as c:
                    results["prepared"] = c.execute("select 8 from pg_sleep(1)",
                                                    prepare=True).fetchone()[0]
            except psycopg.Error as e:
                results["prepared"] = f"error {e.sqlstate} {e}"
        t = threading.Thread(target=prepared)
        t.start()
        kill_running("select 8 from pg_sleep(1)")
        t.join(30)
        assert KILLED in str(results["prepared"]), results
    finally:
        assert p.stop() == 0

    p = PgLease({"app": plain}, settings={"default_pool_size": 2,
                                          "replay_terminated_statements": "no"}).start()
    try:
        t = in_flight(p, "select 9 from pg_sleep(1)", results, "off")
        kill_running("select 9 from pg_sleep(1)")
        t.join(30)
        assert KILLED in results["off"], results
        assert "runs again" not in p.log()
    finally:
        assert p.stop() == 0


def test_vault_503_at_the_rotation_point(pg, vault, tmp_path):
    """Vault answers 503 for 1.5 s just when the successor is fetched: the
    current credential serves on, the fetch is retried, the rotation
    happens late but before the deadline, and no transaction fails."""
    started = time.monotonic()
    p = start_proxy(pg, vault, tmp_path, "15s", "15s", {"default_pool_size": 4})
    try:
        def outage():
            # The lease ends 15 s after it was issued; the successor is
            # fetched a third of its life ahead: about 10 s in.
            time.sleep(max(0.0, 9.8 - (time.monotonic() - started)))
            vault.fail_for(1.5, status=503, path_prefix="database/creds")
        failed, done, lat_max, out = pgbench_during(p, 16, outage, at=0.5)
        log = p.log()
        print(f"\npgbench across a 1.5 s Vault 503 at the rotation point: {done} transactions, "
              f"{failed} failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        assert "503" in log, log[-3000:]
        assert "generation 2 (user" in log and "takes over" in log, log[-3000:]
    finally:
        vault.clear_faults()
        assert p.stop() == 0


def test_not_ready_until_a_credential_arrives(pg, vault, tmp_path):
    """Vault sealed at start: pglease starts but does not say ready, says
    why, and becomes ready by itself once Vault answers."""
    vault.setup_database(pg, pg.vault_user, pg.vault_password, dbname=DB, default_ttl="60s",
                         max_ttl="120s")
    section = approle(vault, tmp_path)
    vault.fault("seal")
    p = None
    try:
        p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} "
                            f"creds=database/creds/app-rw"}, extra_sections=section).start()
        deadline = time.monotonic() + 10
        while "not ready: no upstream credential yet: Vault:" not in p.log():
            assert time.monotonic() < deadline, p.log()
            time.sleep(0.2)
        assert "started, waiting for credentials" in p.log()
        assert "pglease ready" not in p.log()
        vault.fault("unseal")
        wait_until_served(p, 20)
        # Said at the credentials tick (every 200 ms) after the first one.
        deadline = time.monotonic() + 3
        while "pglease ready: every database has an upstream credential" not in p.log():
            assert time.monotonic() < deadline, p.log()[-3000:]
            time.sleep(0.1)
    finally:
        vault.fault("unseal")
        if p is not None:
            assert p.stop() == 0
