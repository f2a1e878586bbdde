"""[users]: a local user names its own upstream credential source (and pool
size and mode), so two applications on one database log in upstream as two
different Vault roles with their own privileges; each such (database, user)
pool rotates on its own lease."""
import secrets
import subprocess
import threading

import psycopg
import pytest

from pglease_proc import PgLease
from test_vault_rotation import CREATION, DB, Sampler, approle, assert_no_secrets

# The least-privilege pair from docs/configuration.md: the reporting role
# may only read, and its lease's end is its VALID UNTIL; revocation drops
# what the role owns and the role.
RO_CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    f"GRANT CONNECT ON DATABASE {DB} TO \"{{{{name}}}}\";",
    "GRANT USAGE ON SCHEMA public TO \"{{name}}\";",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
]
RO_REVOCATION = [
    "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM \"{{name}}\";",
    "REVOKE USAGE ON SCHEMA public FROM \"{{name}}\";",
    f"REVOKE CONNECT ON DATABASE {DB} FROM \"{{{{name}}}}\";",
    "DROP ROLE IF EXISTS \"{{name}}\";",
]
POLICY = ('path "database/creds/app-rw" { capabilities = ["read"] }\n'
          'path "database/creds/app-ro" { capabilities = ["read"] }\n'
          'path "sys/leases/*" { capabilities = ["update"] }')
USERS_SECTION = "\n[users]\nreporting = creds=database/creds/app-ro pool_size=2\n"


def start(pg, vault, tmp_path, ttl="1h", max_ttl="24h", settings=None, users_section=USERS_SECTION):
    for role, creation, extra in (("app-rw", CREATION, {}),
                                  ("app-ro", RO_CREATION,
                                   {"revocation_statements": RO_REVOCATION})):
        vault.setup_database(pg, pg.vault_user, pg.vault_password, dbname=DB, role=role,
                             default_ttl=ttl, max_ttl=max_ttl, creation=creation, **extra)
    users = {u: "pw-" + secrets.token_hex(10) for u in ("alice", "reporting", "admin")}
    p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} creds=database/creds/app-rw"},
                users=users, settings=settings or {},
                extra_sections=approle(vault, tmp_path, policy=POLICY) + users_section)
    return p.start()


def lease_roles(vault):
    """The role of each live lease (its id is "<mount>/creds/<role>/<id>")."""
    return sorted(lease["lease_id"].split("/")[2] for lease in vault.state()["leases"])


def upstream_user(c):
    return c.execute("select current_user").fetchone()[0]


def test_two_users_two_vault_roles_each_with_its_privileges(pg, vault, vdb, tmp_path):
    p = start(pg, vault, tmp_path)
    try:
        # A wrong password never opens the user's pool: no lease for a stranger.
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn(user="reporting", password="wrong"))
        assert "password authentication failed" in str(e.value), e.value
        with psycopg.connect(p.dsn(), autocommit=True) as app:
            assert upstream_user(app).startswith("v-")
        assert "pool opened" not in p.log()
        assert lease_roles(vault) == ["app-rw"]

        with psycopg.connect(p.dsn(), autocommit=True) as app, \
                psycopg.connect(p.dsn(user="reporting"), autocommit=True) as rep:
            app_user, rep_user = upstream_user(app), upstream_user(rep)
            assert "-app-rw-" in app_user and "-app-ro-" in rep_user, (app_user, rep_user)
            # Postgres sees both, each on the database through its own role.
            active = {r[0] for r in pg.sql("select usename from pg_stat_activity "
                                          "where datname = %s and usename like 'v-%%'", (DB,))}
            assert {app_user, rep_user} <= active, active
            # Each has its own privileges.
            assert rep.execute("select count(*) from pgbench_branches").fetchone()[0] > 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rep.execute("insert into pgbench_history (tid, bid, aid, delta) "
                            "values (1, 1, 1, 0)")
            with app.transaction(force_rollback=True):
                app.execute("insert into pgbench_history (tid, bid, aid, delta) "
                            "values (1, 1, 1, 0)")
        assert lease_roles(vault) == ["app-ro", "app-rw"]
        assert "app/reporting: pool opened for user reporting's first login" in p.log()

        pools = {(r["database"], r["user"]): r for r in p.admin_rows("SHOW POOLS")}
        assert ("app/reporting", rep_user) in pools and ("app", app_user) in pools, pools
        dbs = {r["name"]: r for r in p.admin_rows("SHOW DATABASES")}
        assert dbs["app/reporting"]["credentials"] == "database/creds/app-ro"
        assert dbs["app/reporting"]["pool_size"] == 2
        assert dbs["app"]["credentials"] == "database/creds/app-rw"
        leases = {r["database"]: r["username"] for r in p.admin_rows("SHOW LEASES")}
        assert leases == {"app": app_user, "app/reporting": rep_user}, leases
        # The user's pool_size bounds its servers: 3 clients, 2 servers.
        conns = [psycopg.connect(p.dsn(user="reporting"), autocommit=True) for _ in range(3)]
        try:
            # Two open transactions hold both servers.
            for c in conns[:2]:
                c.execute("begin")
                c.execute("select 1")
            barrier = threading.Barrier(2)
            done = []

            def third():
                barrier.wait()
                done.append(conns[2].execute("select 1").fetchone()[0])

            t = threading.Thread(target=third)
            t.start()
            barrier.wait()
            t.join(1.0)
            assert done == [], "a third server opened past pool_size = 2"
            conns[0].execute("commit")
            t.join(10)
            assert done == [1]
        finally:
            for c in conns:
                c.close()
        assert sum(1 for r in pg.sql("select usename from pg_stat_activity where usename = %s",
                                     (rep_user,))) <= 2
        # SIGTERM revokes every lease of every pool (the read-only role's
        # revocation statements drop it).
        p.signal(15)
        assert p.proc.wait(30) == 0
        assert vault.state()["leases"] == []
        assert pg.sql("select count(*) from pg_roles where rolname like 'v-%'")[0][0] == 0
        assert_no_secrets(p, vault, [vault.root_token, pg.vault_password])
    finally:
        p.stop()


def pgbench_as(p, user, seconds, out):
    r = subprocess.run(["pgbench", "-n", "-S", "-c", "3", "-j", "1", "-T", str(seconds),
                        p.dsn(user=user)], capture_output=True, text=True, timeout=seconds + 60)
    out[user] = r.stdout + r.stderr
    assert r.returncode == 0, out[user]


def test_each_user_pool_rotates_on_its_own_lease_under_load(pg, vault, vdb, tmp_path):
    """Short leases (6 s, max 12 s): the database's pool and the user's
    rotate independently under pgbench for both users, 0 failed."""
    p = start(pg, vault, tmp_path, ttl="6s", max_ttl="12s",
              settings={"default_pool_size": "3"})
    sampler = Sampler(pg)
    sampler.start()
    out = {}
    try:
        runs = [threading.Thread(target=pgbench_as, args=(p, u, 20, out))
                for u in ("alice", "reporting")]
        for t in runs:
            t.start()
        for t in runs:
            t.join(120)
    finally:
        sampler.stop()
    try:
        for user in ("alice", "reporting"):
            assert "number of failed transactions: 0 " in out[user], out[user]
        log = p.log()
        app_takeovers = sum(1 for line in log.splitlines()
                            if " app: generation" in line and "takes over" in line)
        rep_takeovers = sum(1 for line in log.splitlines()
                            if " app/reporting: generation" in line and "takes over" in line)
        rw = {u for u in sampler.users if "-app-rw-" in u}
        ro = {u for u in sampler.users if "-app-ro-" in u}
        print(f"\n[users] under pgbench: alice {len(rw)} roles, reporting {len(ro)} roles, "
              f"{len(sampler.violations)} past VALID UNTIL; "
              + "; ".join(f"{u}: " + next((ln for ln in out[u].splitlines()
                                           if ln.startswith("tps")), "") for u in out))
        assert len(rw) >= 3 and len(ro) >= 3, (rw, ro)  # two credential changes each
        assert app_takeovers >= 2 and rep_takeovers >= 2, log[-3000:]
        assert not sampler.violations, sampler.violations[:5]
    finally:
        assert p.stop() == 0


def test_reload_adds_and_removes_a_user_entry(pg, vault, vdb, tmp_path):
    """Without its entry the user is the database's client again; with a
    new one, its next login gets its own pool. A logged-in session of a
    removed entry is told at its next query (57P01) and reconnects to the
    database's pool."""
    p = start(pg, vault, tmp_path, users_section="")
    try:
        with psycopg.connect(p.dsn(user="reporting"), autocommit=True) as c:
            assert "-app-rw-" in upstream_user(c)
        p.reload(extra_sections=p.extra_sections + USERS_SECTION)
        with psycopg.connect(p.dsn(user="reporting"), autocommit=True) as c:
            assert "-app-ro-" in upstream_user(c)
            p.reload(extra_sections=p.extra_sections.replace(USERS_SECTION, ""))
            with pytest.raises(psycopg.OperationalError) as e:
                c.execute("select 1")
            assert "[users] entry was removed" in str(e.value), e.value
        with psycopg.connect(p.dsn(user="reporting"), autocommit=True) as c:
            assert "-app-rw-" in upstream_user(c)
        p.wait_log("removed database drained: pool closed")
        assert [r["database"] for r in p.admin_rows("SHOW POOLS")] == ["app"]
        # A bad entry is refused with file, line and key; the running one stays.
        bad = p.extra_sections + "\n[users]\nreporting = host=elsewhere\n"
        p.reload(extra_sections=bad, expect="failed, the running configuration stays")
        assert 'reporting: host: unknown key "host"' in p.log()
    finally:
        assert p.stop() == 0
