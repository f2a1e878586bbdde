"""Secrets on the host: the Vault token leaves the process environment block
(/proc/<pid>/environ), core dumps are off (RLIMIT_CORE 0, not dumpable)
unless --allow-core-dumps, with the Vault stand-in and a real Postgres."""
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from pglease_proc import PgLease, build_dir, free_port

DB = "hsdb"
CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT CONNECT ON DATABASE hsdb TO \"{{name}}\";",
]
POLICY = ('path "database/creds/app-rw" { capabilities = ["read"] }\n'
          'path "sys/leases/*" { capabilities = ["update"] }')


@pytest.fixture(scope="module", autouse=True)
def hsdb(pg):
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {DB}")


def environ_of(pid):
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_vault_token_is_wiped_from_the_environment_block(pg, vault):
    vault.setup_database(pg, pg.vault_user, pg.vault_password, dbname=DB, default_ttl="1h",
                         max_ttl="2h", creation=CREATION)
    vault.api("PUT", "sys/policies/acl/pglease", {"policy": POLICY})
    token = vault.api("POST", "auth/token/create", {"policies": ["pglease"], "ttl": "1h"})[
        "auth"]["client_token"]
    pgpassword = "pgpw-not-to-be-seen-4711"
    conn_pw = "connpw-not-to-be-seen-0815"
    p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} creds=database/creds/app-rw"},
                extra_sections=f"\n[vault]\naddr = {vault.addr}\nauth_method = token\n")
    p.start(env={"VAULT_TOKEN": token, "PGPASSWORD": pgpassword,
                 "PGLEASE_DATABASES_OTHER": f"host=127.0.0.1 port={pg.port} dbname={DB} "
                                            f"user=postgres password={conn_pw}",
                 "HARMLESS_VAR": "still-here"})
    try:
        # The token is used (the first login happens after the wipe) ...
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0].startswith("v-token-")
        # ... and nowhere in the block the kernel shows, nor in environ[].
        env = environ_of(p.proc.pid)
        assert token.encode() not in env
        assert pgpassword.encode() not in env
        assert conn_pw.encode() not in env
        assert b"HARMLESS_VAR=still-here" in env
        assert "wiped 3 secret variable(s)" in p.log()
        assert token not in p.log()
    finally:
        assert p.stop() == 0


def core_limit(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit line")


def test_core_dumps_off_by_default(upstream_conninfo):
    p = PgLease({"app": upstream_conninfo})
    p.start()
    try:
        assert core_limit(p.proc.pid) == ["0", "0"]
    finally:
        assert p.stop() == 0
    p = PgLease({"app": upstream_conninfo})
    p.start("--allow-core-dumps")
    try:
        assert core_limit(p.proc.pid) != ["0", "0"]
        assert "core dumps allowed" in p.log()
    finally:
        assert p.stop() == 0


@pytest.fixture
def upstream_conninfo(pg):
    return pg.owned_database("hs_owner", "hs-owner-pw", "hs_owned")


def start_as_postgres(conninfo, *args):
    """pglease run as user postgres (non-root), trust auth, in a directory it
    owns; returns (proc, port, dir)."""
    pw = pwd.getpwnam("postgres")
    d = Path(tempfile.mkdtemp(prefix="pglease-hs-"))
    port = free_port()
    conf = d / "pglease.ini"
    conf.write_text(f"[pglease]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                    f"unix_socket_dir =\nauth_type = trust\nhttp_listen =\n"
                    f"\n[databases]\napp = {conninfo}\n")
    conf.chmod(0o600)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chown(conf, pw.pw_uid, pw.pw_gid)
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--",
                             str(build_dir() / "proxy" / "pglease"), *args, "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    return proc, port, d


def pglease_pid(runuser_pid):
    """runuser forks the command: its child is pglease."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{runuser_pid}/task/{runuser_pid}/children").read_text().split()
        for k in kids:
            try:
                if Path(f"/proc/{k}/exe").resolve().name == "pglease":
                    return int(k)
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("pglease did not start")


def wait_listening(port):
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(host="127.0.0.1", port=port, user="x", dbname="app",
                            connect_timeout=2).close()
            return
        except psycopg.OperationalError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"pglease not serving: {e}")
            time.sleep(0.1)


@pytest.mark.parametrize("allow", [False, True])
def test_not_dumpable_as_non_root(upstream_conninfo, allow):
    """A non-dumpable process's /proc files belong to root: the same user
    can no longer read its environment or memory, nor ptrace it."""
    proc, port, d = start_as_postgres(upstream_conninfo,
                                      *(["--allow-core-dumps"] if allow else []))
    try:
        pid = pglease_pid(proc.pid)
        wait_listening(port)
        owner = os.stat(f"/proc/{pid}/environ").st_uid
        postgres_uid = pwd.getpwnam("postgres").pw_uid
        assert owner == (postgres_uid if allow else 0)
        r = subprocess.run(["runuser", "-u", "postgres", "--", "cat", f"/proc/{pid}/environ"],
                           capture_output=True, timeout=10)
        assert (r.returncode == 0) == allow, r.stderr
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)
