"""creds=exec:: a helper prints the credential (an RDS/Cloud SQL IAM-style
token that is valid for a short time). The stub helper mints real Postgres
roles with VALID UNTIL; pglease runs it again before each expires and the
new role replaces the old one as a rotation does."""
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from harness import PgCluster
from pglease_proc import PgLease
from test_faults import pgbench_during
from tlscerts import CA

HELPER = Path(__file__).resolve().parent / "helpers" / "mint_role.py"


@pytest.fixture(scope="module")
def execdb(pg):
    conninfo = pg.owned_database("pgl_exec", "exec-owner-pw", "execdb")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo], check=True, capture_output=True,
                   timeout=120)
    yield f"host=127.0.0.1 port={pg.port} dbname=execdb"
    pg.sql("DROP DATABASE IF EXISTS execdb WITH (FORCE)")
    for (r,) in pg.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgl\\_exec\\_%'"):
        pg.sql(f"DROP ROLE IF EXISTS {r}")


def helper(pg, ttl, mode=""):
    return f"creds='exec:/usr/bin/python3 {HELPER} {pg.socket_dir} {pg.port} {ttl} {mode}'"


def minted(pg):
    return {r[0] for r in pg.sql("SELECT DISTINCT usename FROM pg_stat_activity WHERE "
                                 "datname = 'execdb' AND usename LIKE 'pgl\\_exec\\_%'")}


def test_short_lived_tokens_rotate_under_load(pg, execdb):
    # rotate_before = half the token's life: room for a slow helper on a
    # busy machine (an IAM token lives 15 minutes and rotates minutes early).
    p = PgLease({"app": f"{execdb} {helper(pg, 12)}"},
                settings={"default_pool_size": 4, "rotate_before": 6}).start()
    try:
        p.wait_served(15)
        try:
            failed, done, lat_max, out = pgbench_during(p, 16, lambda: None, at=0.1)
        except AssertionError as e:
            raise AssertionError("\n".join(l for l in p.log().splitlines()
                                           if "C-" not in l)[-4000:]) from e
        log = p.log()
        gens = log.count("credential helper: generation")
        print(f"\npgbench -S -c 4 for 16 s with 12 s tokens: {done} transactions, {failed} "
              f"failed, latency max {lat_max:.0f} ms, {gens} generations")
        assert failed == 0, out
        assert gens >= 3, "\n".join(l for l in log.splitlines()
                                     if "generation" in l and "logged in" not in l)
        # Nothing past its VALID UNTIL is in use.
        expired = pg.sql("SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r ON "
                         "r.rolname = a.usename WHERE a.datname = 'execdb' AND "
                         "r.rolvaliduntil < now()")[0][0]
        assert expired == 0
        # The helper's stderr is logged, its password masked.
        assert "credential helper says: minted pgl_exec_" in log
        assert "with password ****" in log
    finally:
        assert p.stop() == 0


# TCP only with TLS: what an RDS instance with rds.force_ssl = 1 accepts.
TLS_HBA = ("local all all trust\n"
           "hostssl all all 127.0.0.1/32 scram-sha-256\n"
           "hostnossl all all 127.0.0.1/32 reject\n")
TLS_OWNER_PW = "exec-tls-owner-pw"


@pytest.fixture(scope="module")
def tlspg(tmp_path_factory):
    """A cluster of its own (the session one stays plain): ssl = on with a
    server certificate from a throwaway CA, and pg_hba.conf that rejects
    TCP without TLS. execdb with pgbench's tables, owned by pgl_exec."""
    certs = tmp_path_factory.mktemp("pgtls")
    cert, key = CA(certs, "pgtls").issue("localhost", san="IP:127.0.0.1,DNS:localhost")

    def install_cert(cluster):
        # Postgres wants its key owned by itself and not readable by others.
        for src, dst, mode in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)]:
            shutil.copyfile(src, cluster.data / dst)
            shutil.chown(cluster.data / dst, "postgres", "postgres")
            (cluster.data / dst).chmod(mode)

    cluster = PgCluster(conf_extra="ssl = on\nssl_cert_file = 'server.crt'\n"
                                   "ssl_key_file = 'server.key'\nlog_connections = on\n",
                        hba=TLS_HBA, before_start=install_cert)
    try:
        conninfo = cluster.owned_database("pgl_exec", TLS_OWNER_PW, "execdb")
        subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo + " sslmode=require"],
                       check=True, capture_output=True, timeout=120)
        yield cluster
    finally:
        cluster.stop()


def test_iam_style_tokens_rotate_over_required_tls(tlspg):
    """The issue's case: an IAM-style token (15 minutes, scaled down to 12 s
    as above) against a server that only takes TLS (sslmode=require in the
    conninfo): two or more new tokens under pgbench load, 0 failed
    transactions, every backend pglease holds encrypted."""
    # The server refuses TCP without TLS, and takes the same login with it.
    plain = dict(host="127.0.0.1", port=tlspg.port, dbname="execdb", user="pgl_exec",
                 password=TLS_OWNER_PW, connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(**plain, sslmode="disable").close()
    with psycopg.connect(**plain, sslmode="require") as c:
        assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                         ).fetchone() == (True,)

    p = PgLease({"app": f"host=127.0.0.1 port={tlspg.port} dbname=execdb sslmode=require "
                        f"{helper(tlspg, 12)}"},
                settings={"default_pool_size": 4, "rotate_before": 6}).start()
    seen = {}  # minted user -> set of pg_stat_ssl.ssl values of its backends
    samples = 0

    def watch(seconds=15.0):
        # Postgres' view of pglease's backends while pgbench runs.
        nonlocal samples
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for user, ssl in tlspg.sql(
                    "SELECT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s "
                    "ON s.pid = a.pid WHERE a.datname = 'execdb' "
                    "AND a.usename LIKE 'pgl\\_exec\\_%'"):
                seen.setdefault(user, set()).add(ssl)
            samples += 1
            time.sleep(0.25)

    try:
        p.wait_served(15)
        try:
            failed, done, lat_max, out = pgbench_during(p, 16, watch, at=0.1)
        except AssertionError as e:
            raise AssertionError("\n".join(l for l in p.log().splitlines()
                                           if "C-" not in l)[-4000:]) from e
        log = p.log()
        gens = log.count("credential helper: generation")
        print(f"\npgbench -S -c 4 for 16 s, 12 s tokens, sslmode=require upstream: {done} "
              f"transactions, {failed} failed, latency max {lat_max:.0f} ms, {gens} "
              f"generations, {len(seen)} minted users seen in {samples} samples")
        assert failed == 0, out
        assert done > 0, out
        assert gens >= 3, "\n".join(l for l in log.splitlines()
                                     if "generation" in l and "logged in" not in l)
        assert len(seen) >= 2, seen
        assert all(v == {True} for v in seen.values()), seen
        # Every login a minted user made reached Postgres over TLS.
        logins = [l for l in tlspg.log().splitlines()
                  if "connection authorized: user=pgl_exec_" in l]
        assert len({l.split("user=")[1].split()[0] for l in logins}) >= 2, logins
        assert all("SSL enabled" in l for l in logins), logins
        assert "with password ****" in log
    finally:
        assert p.stop() == 0


def test_a_failing_or_hanging_helper_keeps_the_last_credential(pg, execdb, tmp_path):
    p = PgLease({"app": f"{execdb} {helper(pg, 3600)}"}, settings={"exec_timeout": 2}).start()
    try:
        p.wait_served(15)
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            first = c.execute("select current_user").fetchone()[0]
        for mode, says in [("fail", "exited with status 3"),
                           ("hang", "did not finish within exec_timeout (2 s); killed")]:
            p.reload(databases={"app": f"{execdb} {helper(pg, 3600, mode)}"})
            deadline = time.monotonic() + 15
            while says not in p.log():
                assert time.monotonic() < deadline, p.log()[-2000:]
                time.sleep(0.1)
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                assert c.execute("select current_user").fetchone()[0] == first
        assert "credential helper says: cannot reach the token service" in p.log()
    finally:
        assert p.stop() == 0


def test_conf_wants_an_absolute_helper_path(execdb):
    p = PgLease({"app": f"{execdb} creds='exec:helper --x'"})
    proc = subprocess.run([str(p.binary if hasattr(p, "binary") else
                               Path(__file__).resolve().parents[2] / "build" / "proxy" /
                               "pglease"), "--check", "-c", str(p.config)],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1 and "exec: needs the helper's absolute path" in proc.stderr


@pytest.mark.parametrize("helper_name,args,cli,token", [
    ("rds-iam-credentials", ["db.example", "5432", "app_user", "eu-west-1"], "aws",
     "db.example:5432/?Action=connect&DBUser=app_user&X-Amz-Signature=abc"),
    ("cloudsql-iam-credentials", ["app-sa@project.iam"], "gcloud", "ya29.a0AfB_token"),
])
def test_contrib_helpers_print_what_pglease_reads(tmp_path, helper_name, args, cli, token):
    """The cloud CLIs are not installed here: a stub on PATH stands in for
    each, and what the helper prints must be pglease's credential JSON."""
    import json
    import os
    from datetime import datetime, timezone
    stub = tmp_path / cli
    stub.write_text(f"#!/bin/sh\necho \"$*\" > {tmp_path}/args\necho '{token}'\n")
    stub.chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "contrib" / helper_name
    out = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=10,
                         env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["password"] == token
    assert doc["username"] == args[2] if cli == "aws" else args[0]
    left = datetime.strptime(doc["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc) - datetime.now(timezone.utc)
    assert 0 < left.total_seconds() <= 3600
    if cli == "aws":
        assert "generate-db-auth-token" in (tmp_path / "args").read_text()
    # Missing arguments: a usage line and a failure pglease reports.
    bad = subprocess.run([str(script)], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "usage" in bad.stderr
