"""creds=file:/path: a credential file something else writes (Vault Agent's
template, a CSI driver), followed with inotify. Each new credential is a
generation that replaces the old one as a rotation does; a broken or
vanished file keeps the last valid credential and the log says why."""
import json
import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from pglease_proc import PgLease, free_port
from test_faults import pgbench_during

ROLE, PW = "pgl_file", "file-pw-1"


@pytest.fixture(scope="module")
def filedb(pg):
    conninfo = pg.owned_database(ROLE, PW, "filedb")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo], check=True, capture_output=True,
                   timeout=120)
    pg.sql("DROP ROLE IF EXISTS pgl_file2")
    pg.sql("CREATE ROLE pgl_file2 LOGIN PASSWORD 'file-pw-2' IN ROLE pgl_file")
    yield f"host=127.0.0.1 port={pg.port} dbname=filedb"
    pg.sql("DROP DATABASE IF EXISTS filedb WITH (FORCE)")
    pg.sql("DROP ROLE IF EXISTS pgl_file2")
    pg.sql(f"ALTER ROLE {ROLE} PASSWORD '{PW}'")


def write(path, obj):
    """As a careful writer does: a new file renamed into place."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    tmp.chmod(0o600)
    os.replace(tmp, path)


def users_of(pg):
    return {r[0] for r in pg.sql("SELECT DISTINCT usename FROM pg_stat_activity WHERE "
                                 "datname = 'filedb' AND usename LIKE 'pgl_file%%'")}


def wait_for(cond, what, timeout=15):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_new_credentials_in_the_file_rotate_under_load(pg, filedb, tmp_path):
    creds = tmp_path / "db-creds.json"
    write(creds, {"username": ROLE, "password": PW})
    http = free_port()
    p = PgLease({"app": f"{filedb} creds=file:{creds}"},
                settings={"default_pool_size": 4, "http_listen": f"127.0.0.1:{http}"}).start()
    try:
        p.wait_served(10)

        def changes():
            # Another user, then the first user with a new password (the
            # old one stops working: sessions stay, as Postgres keeps them).
            write(creds, {"username": "pgl_file2", "password": "file-pw-2"})
            wait_for(lambda: users_of(pg) == {"pgl_file2"}, f"still {users_of(pg)}")
            pg.sql(f"ALTER ROLE {ROLE} PASSWORD 'file-pw-3'")
            write(creds, {"username": ROLE, "password": "file-pw-3"})
        failed, done, lat_max, out = pgbench_during(p, 10, changes, at=2.0)
        print(f"\npgbench -S -c 4 across two credential file changes: {done} transactions, "
              f"{failed} failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        wait_for(lambda: users_of(pg) == {ROLE}, f"still {users_of(pg)}")
        log = p.log()
        assert "credential file: generation 2: user pgl_file2" in log
        assert f"credential file: generation 3: user {ROLE}" in log
        assert "file-pw" not in log
        # /metrics and SHOW LEASES cover this source too.
        import urllib.request
        from prometheus_client.parser import text_string_to_metric_families
        text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text.decode()) for s in f.samples}
        assert samples[("pglease_rotations_total", (("database", "app"),))] == 2
        assert samples[("pglease_credentials_fetched_total", (("database", "app"),))] == 3
        assert samples[("pglease_generations", (("database", "app"), ("state", "active")))] == 1
        leases = p.admin_rows("SHOW LEASES")
        assert [r["lease_id"] for r in leases if r["state"] == "active"] == ["(credential file)"]
    finally:
        pg.sql(f"ALTER ROLE {ROLE} PASSWORD '{PW}'")
        assert p.stop() == 0


def test_a_broken_or_vanished_file_keeps_the_last_credential(pg, filedb, tmp_path):
    creds = tmp_path / "db-creds.json"
    write(creds, {"username": ROLE, "password": PW})
    p = PgLease({"app": f"{filedb} creds=file:{creds}"}).start()
    try:
        p.wait_served(10)
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            for broken, says in [('{"username": "x", "pass', "is not valid JSON"),
                                 ({"username": ROLE}, 'has no "username" and "password"'),
                                 ({"username": ROLE, "password": "p",
                                   "expires_at": "2001-01-01T00:00:00Z"}, "has expired"),
                                 (None, "cannot open")]:
                if broken is None:
                    creds.unlink()
                else:
                    write(creds, broken)
                wait_for(lambda: says in p.log(), f"no log line saying {says!r}")
                assert c.execute("select current_user").fetchone()[0] == ROLE
                with psycopg.connect(p.dsn(), autocommit=True) as fresh:
                    assert fresh.execute("select 1").fetchone()[0] == 1
            assert "the current credential stays" in p.log()
            # Fixed again, in the shape of a Vault secret rendered whole.
            write(creds, {"data": {"username": "pgl_file2", "password": "file-pw-2"},
                          "lease_duration": 3600})
            wait_for(lambda: "credential file: generation 2: user pgl_file2, expires" in p.log(),
                     "the fixed file was not taken")
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            wait_for(lambda: c.execute("select current_user").fetchone()[0] == "pgl_file2",
                     "new generation not serving")
    finally:
        assert p.stop() == 0


def test_clients_wait_for_a_file_that_appears_later(pg, filedb, tmp_path):
    creds = tmp_path / "later.json"
    p = PgLease({"app": f"{filedb} creds=file:{creds}"},
                settings={"query_wait_timeout": 20}).start()
    try:
        assert "no credential yet" in p.log()
        result = {}

        def client():
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                result["user"] = c.execute("select current_user").fetchone()[0]
        import threading
        t = threading.Thread(target=client)
        t.start()
        time.sleep(1)
        assert "user" not in result
        write(creds, {"username": ROLE, "password": PW})
        t.join(20)
        assert result.get("user") == ROLE, result
    finally:
        assert p.stop() == 0


def test_conf_refuses_a_relative_path(tmp_path, filedb):
    p = PgLease({"app": f"{filedb} creds=file:relative.json"})
    proc = subprocess.run([str(Path(os.environ.get("PGLEASE_BUILD_DIR", "build")) / "proxy" /
                           "pglease"), "--check", "-c", str(p.config)],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1
    assert "file: needs an absolute path" in proc.stderr, proc.stderr
