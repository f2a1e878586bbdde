"""Configuration reload (SIGHUP) against a real Postgres, under load where it
matters: what a reload changes takes effect, a broken file changes nothing,
and no client of a database that stays is dropped."""
import re
import subprocess
import threading
import time

import psycopg
import pytest

from pglease_proc import PgLease, free_port
from test_faults import pgbench_during

ROLE, PW = "pgl_reload", "reload-pw"


@pytest.fixture(scope="module")
def dbs(pg):
    """Two databases of one role (pgbench tables in the first), and a second
    role that may use them (a changed upstream user)."""
    conninfo = pg.owned_database(ROLE, PW, "reloaddb", "reloaddb2")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo], check=True, capture_output=True,
                   timeout=120)
    pg.sql("DROP ROLE IF EXISTS pgl_reload2")
    pg.sql("CREATE ROLE pgl_reload2 LOGIN PASSWORD 'reload2-pw' IN ROLE pgl_reload")
    yield conninfo, conninfo.replace("dbname=reloaddb ", "dbname=reloaddb2 ")
    pg.sql("DROP DATABASE IF EXISTS reloaddb WITH (FORCE)")
    pg.sql("DROP DATABASE IF EXISTS reloaddb2 WITH (FORCE)")
    pg.sql("DROP ROLE IF EXISTS pgl_reload2")
    pg.sql(f"DROP ROLE IF EXISTS {ROLE}")


def backends(pg, db, user=ROLE):
    return int(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                      "usename = %s", (db, user))[0][0])


def wait_for(cond, what, timeout=15):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def admin(p, sql):
    with psycopg.connect(p.dsn(user="admin", dbname="pglease"), autocommit=True) as c:
        return c.execute(sql).fetchall()


def test_reload_under_load_grows_the_pool_and_adds_a_database(pg, dbs):
    app, app2 = dbs
    p = PgLease({"app": app}, settings={"default_pool_size": 2}).start()
    try:
        def grow():
            p.reload(databases={"app": app, "app2": app2}, settings={"default_pool_size": 6})
        failed, done, lat_max, out = pgbench_during(p, 6, grow, at=2.0)
        print(f"\npgbench -S -c 4 across a reload (pool 2 -> 6, a database added): {done} "
              f"transactions, {failed} failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        # Four pgbench clients now get four servers (two before).
        assert backends(pg, "reloaddb") == 4, p.log()[-2000:]
        with psycopg.connect(p.dsn(dbname="app2"), autocommit=True) as c:
            assert c.execute("select current_database()").fetchone()[0] == "reloaddb2"
        line = re.search(r"reload \(SIGHUP\): .*", p.log()).group(0)
        assert "1 added, 0 removed" in line and "default_pool_size" in line, line
    finally:
        assert p.stop() == 0


def test_a_broken_file_changes_nothing(pg, dbs):
    app, _ = dbs
    p = PgLease({"app": app}, settings={"default_pool_size": 3}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("select 1")
            log = p.reload(settings={"default_pool_size": 5, "no_such_key": 1},
                           expect="reload (SIGHUP) failed")
            line = re.search(r"reload \(SIGHUP\) failed.*", log).group(0)
            assert str(p.config) in line and "no_such_key" in line, line
            assert re.search(r"pglease\.ini:\d+", line), line
            # The session goes on, new clients come in, and the old value holds.
            assert c.execute("select 2").fetchone()[0] == 2
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select 3").fetchone()[0] == 3
        config = {r[0]: r[1] for r in admin(p, "SHOW CONFIG")}
        assert config["default_pool_size"] == "3", config
        # A bad value of a known key too, and a database whose line is broken.
        p.reload(settings={"default_pool_size": "many"}, expect="reload (SIGHUP) failed")
        p.reload(databases={"app": app, "bad": "host=127.0.0.1 nonsense"},
                 settings={"default_pool_size": 3}, expect="reload (SIGHUP) failed")
        assert {r[0]: r[1] for r in admin(p, "SHOW CONFIG")}["default_pool_size"] == "3"
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select 4").fetchone()[0] == 4
    finally:
        assert p.stop() == 0


def test_a_changed_auth_file_password_applies_to_new_logins(pg, dbs):
    app, _ = dbs
    p = PgLease({"app": app}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as kept:
            p.reload(users={"alice": "new-secret", "admin": "adminpw"})
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(p.dsn(password="secret")).close()
            with psycopg.connect(p.dsn(password="new-secret"), autocommit=True) as c:
                assert c.execute("select 1").fetchone()[0] == 1
            # Logged in before: not dropped.
            assert kept.execute("select 2").fetchone()[0] == 2
    finally:
        assert p.stop() == 0


def test_a_changed_upstream_rotates_without_failures(pg, dbs):
    """The conninfo's user changes: servers of a new generation replace the
    old ones as they finish, as in a credential rotation."""
    app, _ = dbs
    p = PgLease({"app": app}, settings={"default_pool_size": 4}).start()
    new = app.replace(f"user={ROLE} password={PW}", "user=pgl_reload2 password=reload2-pw")
    try:
        failed, done, lat_max, out = pgbench_during(
            p, 6, lambda: p.reload(databases={"app": new}), at=2.0)
        print(f"\npgbench -S -c 4 across a reload that changes the upstream user: {done} "
              f"transactions, {failed} failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        assert "upstream changed by a reload: generation 2" in p.log()
        wait_for(lambda: backends(pg, "reloaddb") == 0, "old servers still open")
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0] == "pgl_reload2"
    finally:
        assert p.stop() == 0


def test_a_removed_database_drains_then_goes(pg, dbs):
    app, app2 = dbs
    p = PgLease({"app": app, "app2": app2}).start()
    try:
        idle = psycopg.connect(p.dsn(dbname="app2"), autocommit=True)
        idle.execute("select 1")
        busy = psycopg.connect(p.dsn(dbname="app2"))
        busy.execute("select 1")  # a transaction is open
        other = psycopg.connect(p.dsn(), autocommit=True)
        p.reload(databases={"app": app})
        # The open transaction finishes; then its client is told, as the
        # answer to its next query (a FATAL sent while the client is idle
        # would reach libpq's notice processor, not the application).
        assert busy.execute("select 2").fetchone()[0] == 2
        busy.commit()
        removed = "its database was removed from the configuration"
        with pytest.raises(psycopg.OperationalError, match=removed):
            busy.execute("select 3")
        with pytest.raises(psycopg.OperationalError, match=removed):
            idle.execute("select 4")
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            psycopg.connect(p.dsn(dbname="app2")).close()
        # Clients of the database that stays never noticed.
        assert other.execute("select 5").fetchone()[0] == 5
        other.close()
        wait_for(lambda: backends(pg, "reloaddb2") == 0, "servers of the removed database")
        wait_for(lambda: "removed database drained: pool closed" in p.log(), "pool freed")
        # Added back: a fresh pool.
        p.reload(databases={"app": app, "app2": app2})
        with psycopg.connect(p.dsn(dbname="app2"), autocommit=True) as c:
            assert c.execute("select 6").fetchone()[0] == 6
    finally:
        assert p.stop() == 0


def test_listeners_move_and_restart_only_keys_say_so(pg, dbs):
    app, _ = dbs
    p = PgLease({"app": app}).start()
    old_port = p.port
    try:
        kept = psycopg.connect(p.dsn(), autocommit=True)
        kept.execute("select 1")
        p.port = free_port()
        log = p.reload(settings={"pool_mode": "session"})
        assert "pool_mode changed in the file but changes only at restart" in log
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(port=old_port, connect_timeout=2)).close()
        assert kept.execute("select 2").fetchone()[0] == 2  # not dropped
        kept.close()
        # Transaction mode still: two clients share one server.
        pool = [r for r in admin(p, "SHOW DATABASES") if r[0] == "app"][0]
        assert "transaction" in pool, pool
    finally:
        assert p.stop() == 0


def test_a_port_taken_keeps_the_old_listeners(pg, dbs):
    app, _ = dbs
    p = PgLease({"app": app}).start()
    import socket
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        wanted = blocker.getsockname()[1]
        old = p.port
        p.port = wanted
        log = p.reload(expect="reload (SIGHUP) failed")
        assert "Address already in use" in log or "address" in log.lower()
        p.port = old
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        blocker.close()
        assert p.stop() == 0


# ---- Vault: a changed creds= and a changed [vault] section ---------------------------

def vault_users(pg, db):
    return {r[0] for r in pg.sql("SELECT DISTINCT usename FROM pg_stat_activity WHERE "
                                 "datname = %s AND usename LIKE 'v-%%'", (db,))}


def test_a_changed_creds_path_rotates_without_failures(pg, vault, tmp_path, vdb):
    from test_vault_rotation import CREATION, start_proxy
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", {"default_pool_size": 4})
    try:
        vault.setup_database(pg, pg.vault_user, pg.vault_password, dbname=vdb, role="app-ro",
                             default_ttl="60s", max_ttl="120s", creation=CREATION)
        vault.api("PUT", "sys/policies/acl/pglease", {"policy": (
            'path "database/creds/app-rw" { capabilities = ["read"] }\n'
            'path "database/creds/app-ro" { capabilities = ["read"] }\n'
            'path "sys/leases/*" { capabilities = ["update"] }')})
        p.wait_served(20)
        first = vault_users(pg, vdb)
        conninfo = p.databases["app"].replace("creds/app-rw", "creds/app-ro")
        failed, done, lat_max, out = pgbench_during(
            p, 6, lambda: p.reload(databases={"app": conninfo}), at=2.0)
        print(f"\npgbench -S -c 4 across a reload that changes creds=: {done} transactions, "
              f"{failed} failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        wait_for(lambda: vault_users(pg, vdb) and not (vault_users(pg, vdb) & first),
                 f"servers of the old role: {vault_users(pg, vdb)}")
        assert all("-app-ro-" in u for u in vault_users(pg, vdb)), vault_users(pg, vdb)
        # The old lease was revoked once drained (its role is gone).
        wait_for(lambda: not any(r[0] in first for r in pg.sql("SELECT rolname FROM pg_roles")),
                 "old role not revoked")
    finally:
        assert p.stop() == 0


def test_a_changed_vault_section_logs_in_again(pg, vault, tmp_path, vdb):
    from test_vault_rotation import start_proxy
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", {"default_pool_size": 4})
    try:
        p.wait_served(20)
        first = vault_users(pg, vdb)
        section = p.extra_sections.replace("auth_method = approle",
                                           "auth_method = approle\nrequest_timeout = 7")
        failed, done, lat_max, out = pgbench_during(
            p, 6, lambda: p.reload(extra_sections=section), at=2.0)
        print(f"\npgbench -S -c 4 across a reload of [vault]: {done} transactions, {failed} "
              f"failed, latency max {lat_max:.0f} ms")
        assert failed == 0, out
        assert "settings changed: vault.request_timeout" in p.log()
        # A credential of the new login replaced the old one.
        wait_for(lambda: vault_users(pg, vdb) and not (vault_users(pg, vdb) & first),
                 "old generation still serving")
    finally:
        assert p.stop() == 0


def test_console_reload(pg, dbs):
    """RELOAD on the admin console: the same reload, its outcome answered."""
    app, _ = dbs
    p = PgLease({"app": app}, settings={"default_pool_size": 3}).start()
    try:
        p.write_config(p.databases, p.users, {"default_pool_size": 7})
        with psycopg.connect(p.dsn(user="admin", dbname="pglease"), autocommit=True) as c:
            c.execute("RELOAD")
            assert {r[0]: r[1] for r in c.execute("SHOW CONFIG")}["default_pool_size"] == "7"
            p.write_config(p.databases, p.users, {"default_pool_size": "x"})
            with pytest.raises(psycopg.Error, match=r"reload failed.*default_pool_size"):
                c.execute("RELOAD")
        assert "reload (admin console): " in p.log()
        with psycopg.connect(p.dsn(user="admin", dbname="pglease"), autocommit=True) as c:
            assert {r[0]: r[1] for r in c.execute("SHOW CONFIG")}["default_pool_size"] == "7"
    finally:
        assert p.stop() == 0
