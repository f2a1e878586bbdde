"""A KV v2 secret as the upstream credential (creds=kv:<mount>/data/<path>):
pglease polls the secret's version (<mount>/metadata/<path>) every
kv_poll_interval and treats a new version as a new generation (warm, take
over, drain) under pgbench load; a secret that can no longer be read keeps
the last credential serving and says why. No lease: nothing renewed or
revoked."""
import re
import secrets
import subprocess
import time
import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pglease_proc import PgLease, free_port
from test_vault_rotation import approle as vault_rotation_approle

DB = "kvdb"
SECRET = "pglease/app"
ROLES = ("kv_one", "kv_two")
POLICY = (f'path "secret/data/{SECRET}" {{ capabilities = ["read"] }}\n'
          f'path "secret/metadata/{SECRET}" {{ capabilities = ["read"] }}\n')


@pytest.fixture(scope="module", autouse=True)
def kvdb(pg):
    pg.sql(f"CREATE DATABASE {DB}")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", str(pg.socket_dir), "-p",
                    str(pg.port), "-U", "postgres", DB], check=True, capture_output=True,
                   timeout=120)
    for r in ROLES:
        pg.sql(f"DROP ROLE IF EXISTS {r}")
        pg.sql(f"CREATE ROLE {r} LOGIN PASSWORD '{secrets.token_hex(8)}'")
        pg.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}", dbname=DB)
    yield
    pg.sql(f"DROP DATABASE IF EXISTS {DB}")
    for r in ROLES:
        pg.sql(f"DROP ROLE IF EXISTS {r}")


def approle(vault, tmp_path):
    return vault_rotation_approle(vault, tmp_path, policy=POLICY)


def set_password(pg, role):
    pw = "kv-" + secrets.token_hex(12)
    pg.sql(f"ALTER ROLE {role} PASSWORD '{pw}'")
    return pw


def write_secret(vault, data):
    return vault.api("POST", f"secret/data/{SECRET}", {"data": data})["data"]["version"]


def show_leases(p):
    return p.admin_rows("SHOW LEASES")


def wait_for(p, what, count=1, timeout=30):
    p.wait_log(what, count, timeout)


def backends(pg, role):
    with pg.connect(dbname=DB) as c:
        return c.execute("select count(*) from pg_stat_activity where usename = %s",
                         (role,)).fetchone()[0]


def start(pg, vault, tmp_path, fields="", settings=None):
    users = {"alice": "pw-" + secrets.token_hex(10), "admin": "pw-" + secrets.token_hex(10)}
    s = {"pool_mode": "transaction", "default_pool_size": "4", "kv_poll_interval": "1"}
    s.update(settings or {})
    return PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} "
                           f"creds=kv:secret/data/{SECRET}{fields}"},
                   users=users, extra_sections=approle(vault, tmp_path), settings=s).start()


def test_new_versions_rotate_under_pgbench(pg, vault, tmp_path):
    """Version 1 (kv_one), then 2 (another role, kv_two), then 3 (kv_one
    with a changed password, ALTER ROLE first) while pgbench runs: each new
    version warms, takes over and drains the old generation; 0 failed
    transactions; Postgres sees the new user. Field names configured."""
    pw = {1: set_password(pg, "kv_one"), 2: set_password(pg, "kv_two")}
    assert write_secret(vault, {"user": "kv_one", "pass": pw[1], "other": "x"}) == 1
    p = start(pg, vault, tmp_path, " kv_username_field=user kv_password_field=pass")
    try:
        wait_for(p, "user kv_one, secret/data/pglease/app version 1 (no lease)")
        bench = subprocess.Popen(["pgbench", "-n", "-S", "-c", "4", "-j", "2", "-T", "12",
                                  p.dsn()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        wait_for(p, "logged in as generation 1")
        assert write_secret(vault, {"user": "kv_two", "pass": pw[2]}) == 2
        wait_for(p, "generation 2 (user kv_two) takes over")
        wait_for(p, "generation 1 drained")
        assert backends(pg, "kv_two") >= 1
        pw[3] = set_password(pg, "kv_one")
        assert write_secret(vault, {"user": "kv_one", "pass": pw[3]}) == 3
        wait_for(p, "generation 3 (user kv_one) takes over")
        wait_for(p, "generation 2 drained")
        (lease,) = [l for l in show_leases(p) if l["state"] == "active"]
        assert lease["username"] == "kv_one" and lease["lease_id"] == "(kv version 3)"
        assert lease["expires"] is None and lease["ttl"] is None and not lease["renewable"]
        with psycopg.connect(p.dsn(user="admin", dbname="pglease"), autocommit=True,
                             prepare_threshold=None) as c:
            cur = c.execute("SHOW DATABASES")
            col = [d.name for d in cur.description].index("credentials")
            assert [r[col] for r in cur.fetchall()] == [f"kv:secret/data/{SECRET}"]
        out, _ = bench.communicate(timeout=120)
        log = p.log()
        assert bench.returncode == 0, out + log[-4000:]
        assert "number of failed transactions: 0 " in out, out + log[-4000:]
        done = int(re.search(r"actually processed: (\d+)", out).group(1))
        print(f"\nKV v2 source under pgbench: {done} transactions, 0 failed, 2 new versions")
        assert backends(pg, "kv_one") >= 1 and backends(pg, "kv_two") == 0
        assert "version 3 (no lease)" in log and "generation 4" not in log
        # No lease: nothing renewed, nothing revoked.
        assert "renewed" not in log and "revoke" not in log
    finally:
        assert p.stop() == 0
    logs = p.log() + vault.log()
    assert not [s for s in [*pw.values(), *p.users.values()] if s in logs], \
        "a password reached the logs"


def test_deleted_secret_keeps_the_last_credential(pg, vault, tmp_path):
    """The secret's metadata deleted (every version gone): pglease says why
    it cannot read it and serves on with the credential it has, new upstream
    logins included; written again with the same user and password, it is
    read and kept, not switched to."""
    pw = set_password(pg, "kv_one")
    write_secret(vault, {"username": "kv_one", "password": pw})
    # server_lifetime = 1: servers log in again and again with the last
    # credential while the secret is gone.
    p = start(pg, vault, tmp_path, settings={"server_lifetime": "1"})
    try:
        wait_for(p, "user kv_one, secret/data/pglease/app version 1 (no lease)")
        mark = len(p.log())
        vault.api("DELETE", f"secret/metadata/{SECRET}")
        wait_for(p, "cannot read secret/metadata/pglease/app")
        line = next(l for l in p.log().splitlines() if "cannot read secret/metadata" in l)
        assert "generation 1 (user kv_one) serves on" in line, line
        r = subprocess.run(["pgbench", "-n", "-S", "-c", "4", "-j", "2", "-T", "4", p.dsn()],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "number of failed transactions: 0 " in r.stdout, r.stdout
        log = p.log()
        assert "logged in as generation 1" in log[mark:], log[-3000:]
        assert "generation 2" not in log
        # The secret is back (its version counting from 1 again): read once
        # more, found to hold the same credential, kept.
        write_secret(vault, {"username": "kv_one", "password": pw})
        wait_for(p, "version 1 has generation 1's user and password: kept")
        assert "generation 2" not in p.log()
    finally:
        assert p.stop() == 0
    assert pw not in p.log() + vault.log()


def credential_metrics(port):
    """/metrics' credential counters and generation gauges for database app."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    app = (("database", "app"),)
    return {"fetched": samples[("pglease_credentials_fetched_total", app)],
            "rotations": samples[("pglease_rotations_total", app)],
            "active": samples[("pglease_generations", app + (("state", "active"),))]}


def test_new_versions_count_in_metrics(pg, vault, tmp_path):
    """Each KV version that becomes a generation counts as a credential
    fetched and a rotation, as a Vault lease does; a version with the same
    user and password (kept, no new generation) counts neither."""
    pw = {1: set_password(pg, "kv_one"), 2: set_password(pg, "kv_two")}
    assert write_secret(vault, {"username": "kv_one", "password": pw[1]}) == 1
    http = free_port()
    p = start(pg, vault, tmp_path, settings={"http_listen": f"127.0.0.1:{http}"})
    try:
        wait_for(p, "user kv_one, secret/data/pglease/app version 1 (no lease)")
        p.wait_served(10)
        first = credential_metrics(http)
        assert first == {"fetched": 1, "rotations": 0, "active": 1}, first
        assert write_secret(vault, {"username": "kv_two", "password": pw[2]}) == 2
        wait_for(p, "generation 2 (user kv_two) takes over")
        pw[3] = set_password(pg, "kv_one")
        assert write_secret(vault, {"username": "kv_one", "password": pw[3]}) == 3
        wait_for(p, "generation 3 (user kv_one) takes over")
        wait_for(p, "generation 2 drained")
        # Version 4 holds what version 3 held: read, kept, not counted.
        assert write_secret(vault, {"username": "kv_one", "password": pw[3]}) == 4
        wait_for(p, "version 4 has generation 3's user and password: kept")
        last = credential_metrics(http)
        moved = {k: last[k] - first[k] for k in ("fetched", "rotations")}
        print(f"\nKV v2 source, versions 1 to 4: /metrics {first} -> {last}")
        assert moved == {"fetched": 2, "rotations": 2}, (first, last)
        assert last["active"] == 1, last
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0] == "kv_one"
    finally:
        assert p.stop() == 0
    assert not [s for s in pw.values() if s in p.log()], "a password reached the log"
