"""Vault database static roles (creds=<mount>/static-creds/<role>) under
pgbench load: Vault rotates the role's password when its rotation_period
runs out and when an operator forces rotate-role; pglease reads the new
password, switches generations and drains the old one without a client
noticing. Static roles have no lease: nothing is renewed or revoked."""
import re
import secrets
import subprocess
import time

import psycopg
import pytest

from pglease_proc import PgLease
from test_vault_rotation import approle as vault_rotation_approle

DB = "sdb"
ROLE = "static_app"
POLICY = 'path "database/static-creds/app" { capabilities = ["read"] }\n'


@pytest.fixture(scope="module", autouse=True)
def sdb(pg):
    pg.sql(f"CREATE DATABASE {DB}")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", str(pg.socket_dir), "-p",
                    str(pg.port), "-U", "postgres", DB], check=True, capture_output=True,
                   timeout=120)
    pg.sql(f"DROP ROLE IF EXISTS {ROLE}")
    pg.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'before-vault'")
    pg.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}", dbname=DB)
    yield
    pg.sql(f"DROP DATABASE IF EXISTS {DB}")
    pg.sql(f"DROP ROLE IF EXISTS {ROLE}")


def approle(vault, tmp_path):
    return vault_rotation_approle(vault, tmp_path, policy=POLICY)


def show_leases(p):
    return p.admin_rows("SHOW LEASES")


def wait_for(p, what, count=1, timeout=30):
    p.wait_log(what, count, timeout)


def takeovers(log):
    return re.findall(r"generation (\d+) \(user " + ROLE + r"\) takes over", log)


def test_static_role_rotations_under_pgbench(pg, vault, tmp_path):
    """Vault rotates the password twice while pgbench runs: once when the
    rotation_period runs out (pglease re-reads just after Vault's ttl), once
    forced with rotate-role before the ttl said so (pglease learns it from a
    refused login, 28P01, and re-reads at once). 0 failed transactions, each
    generation switch in the log, the old servers drained, not cut."""
    vault.setup_database(pg, dbname=DB)
    vault.api("POST", "database/static-roles/app", {
        "db_name": "pg", "username": ROLE, "rotation_period": "8s"})
    users = {"alice": "pw-" + secrets.token_hex(10), "admin": "pw-" + secrets.token_hex(10)}
    # Two pgbench clients on a pool kept at 4 servers that live 1 s: idle
    # servers keep closing and logging in again, so a password changed
    # behind pglease's back shows at a login within a second or two.
    p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} "
                        f"creds=database/static-creds/app"},
                users=users, extra_sections=approle(vault, tmp_path),
                settings={"pool_mode": "transaction", "default_pool_size": "4",
                          "min_pool_size": "4", "server_lifetime": "1"}).start()
    try:
        wait_for(p, "static role (no lease)")
        bench = subprocess.Popen(["pgbench", "-n", "-S", "-c", "2", "-j", "2", "-T", "24",
                                  p.dsn()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        # 1. The rotation_period runs out: re-read after the ttl, new generation.
        wait_for(p, f"(user {ROLE}) takes over", 2)
        # (A login refused between Vault's rotation and the re-read a second
        # later may have triggered that re-read: counted from here.)
        refused = p.log().count("its password changed")
        # 2. Forced, long before the ttl: a refused login says so.
        before = vault.api("GET", "database/static-creds/app")["data"]
        mark = len(p.log())
        vault.api("POST", "database/rotate-role/app")
        after = vault.api("GET", "database/static-creds/app")["data"]
        assert after["password"] != before["password"]
        wait_for(p, f"(user {ROLE}) takes over", 3)
        leases = [l for l in show_leases(p) if l["state"] == "active"]
        assert [(l["username"], l["lease_id"], l["expires"], l["renewable"]) for l in leases] \
            == [(ROLE, "(static role)", None, False)]
        out, _ = bench.communicate(timeout=120)
        log = p.log()
        assert bench.returncode == 0, out + log[-4000:]
        assert "number of failed transactions: 0 " in out, out + log[-4000:]
        done = int(re.search(r"actually processed: (\d+)", out).group(1))
        print(f"\nstatic role under pgbench: {done} transactions, 0 failed, "
              f"takeovers {takeovers(log)}")
        ids = [int(i) for i in takeovers(log)]
        assert ids == sorted(ids) and len(ids) >= 3, log[-4000:]
        # The forced rotation was noticed by a refused login, before the
        # ttl's re-read, and nothing killed the generation or its clients.
        assert log.count("its password changed") > refused, log[-4000:]
        # ... and that refusal, not the re-read at the old ttl, brought the
        # next generation.
        tail = log[mark:]
        assert "its password changed" in tail, tail
        assert tail.index("its password changed") < tail.index("vault: generation"), tail
        forced = log.index("its password changed", mark)
        assert "28P01" in log[forced - 200:forced + 200]
        assert "no longer works" not in log
        assert "terminating connection" not in log
        assert "drained" in log
        # No lease: nothing renewed, nothing revoked.
        assert "renewed" not in log and "revoke" not in log
        assert vault.state()["leases"] == []
        # Postgres serves the current password's user.
        with pg.connect(dbname=DB) as c:
            rows = c.execute("select count(*) from pg_stat_activity where usename = %s",
                             (ROLE,)).fetchone()
        assert rows[0] >= 1
    finally:
        assert p.stop() == 0
    logs = p.log() + vault.log()
    pw = [after["password"], before["password"], *users.values()]
    assert not [s for s in pw if s in logs], "a password reached the logs"
