"""Vault-issued upstream credentials under load: renewal, rotation, drain,
hard deadline, revocation, Vault outages and early revocation, with the
Vault stand-in and a real Postgres."""
import secrets
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from pglease_proc import PgLease

DB = "vdb"
CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT CONNECT ON DATABASE vdb TO \"{{name}}\";",
    "GRANT USAGE ON SCHEMA public TO \"{{name}}\";",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
]
POLICY = ('path "database/creds/app-rw" { capabilities = ["read"] }\n'
          'path "sys/leases/*" { capabilities = ["update"] }')


@pytest.fixture(scope="module", autouse=True)
def vdb(pg):
    pg.sql(f"CREATE DATABASE {DB}")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", str(pg.socket_dir), "-p",
                    str(pg.port), "-U", "postgres", DB], check=True, capture_output=True,
                   timeout=120)


def approle(vault, tmp_path, wrapped=False, policy=POLICY):
    """AppRole login for pglease with `policy`; the [vault] section."""
    vault.api("POST", "sys/auth/approle", {"type": "approle"})
    vault.api("PUT", "sys/policies/acl/pglease", {"policy": policy})
    vault.api("POST", "auth/approle/role/pglease", {"token_policies": ["pglease"],
                                                    "token_ttl": "1h", "token_max_ttl": "4h"})
    role_id = vault.api("GET", "auth/approle/role/pglease/role-id")["data"]["role_id"]
    if wrapped:
        resp = vault.api("POST", "auth/approle/role/pglease/secret-id",
                         headers={"X-Vault-Wrap-TTL": "120s"})
        secret = resp["wrap_info"]["token"]
    else:
        secret = vault.api("POST", "auth/approle/role/pglease/secret-id")["data"]["secret_id"]
    (tmp_path / "secret-id").write_text(secret + "\n")
    (tmp_path / "secret-id").chmod(0o600)
    return (f"\n[vault]\naddr = {vault.addr}\nauth_method = approle\nrole_id = {role_id}\n"
            f"secret_id_file = {tmp_path / 'secret-id'}\n"
            f"secret_id_wrapped = {'yes' if wrapped else 'no'}\n")


def start_proxy(pg, vault, tmp_path, ttl, max_ttl, settings=None, vault_section=None):
    vault.setup_database(pg, pg.vault_user, pg.vault_password, dbname=DB, default_ttl=ttl,
                         max_ttl=max_ttl, creation=CREATION)
    section = vault_section or approle(vault, tmp_path)
    # Unguessable local passwords, so the log-leak check can look for them.
    users = {"alice": "pw-" + secrets.token_hex(10), "admin": "pw-" + secrets.token_hex(10)}
    p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} "
                        f"creds=database/creds/app-rw"},
                users=users, settings=settings or {}, extra_sections=section)
    return p.start()


def backends_of(pg, user):
    return [r[0] for r in pg.sql("select pid from pg_stat_activity where usename = %s",
                                 (user,))]


def terminate(pg, pids):
    for pid in pids:
        pg.sql("select pg_terminate_backend(%s)", (pid,))


def wait_until_served(p, timeout):
    p.wait_served(timeout)


def vault_roles(pg):
    return {r[0] for r in pg.sql("select rolname from pg_roles where rolname like 'v-%'")}


class Sampler(threading.Thread):
    """Watches pg_stat_activity: which Vault users have backends, and whether
    any backend is alive past its role's VALID UNTIL."""

    def __init__(self, pg):
        super().__init__(daemon=True)
        self.pg = pg
        self.users = set()
        self.violations = []
        self.stop_flag = threading.Event()
        self.samples = 0
        self.most_backends = 0

    def run(self):
        with self.pg.connect() as c:
            while not self.stop_flag.is_set():
                rows = c.execute(
                    "select a.usename, a.pid, r.rolvaliduntil, clock_timestamp() "
                    "from pg_stat_activity a join pg_roles r on r.rolname = a.usename "
                    "where a.usename like 'v-%'").fetchall()
                self.most_backends = max(self.most_backends, len(rows))
                for user, pid, valid_until, now in rows:
                    self.users.add(user)
                    if valid_until is not None and now >= valid_until:
                        self.violations.append((user, pid, valid_until, now))
                self.samples += 1
                time.sleep(0.1)

    def stop(self):
        self.stop_flag.set()
        self.join(10)


def assert_no_secrets(p, vault, extra=()):
    logs = p.log() + vault.log()
    secrets = list(vault.state()["issued_secrets"]) + list(p.users.values()) + list(extra)
    leaked = [s for s in secrets if s and s in logs]
    assert not leaked, f"{len(leaked)} secret(s) found in the logs"


def pgbench(p, *args, timeout=200):
    r = subprocess.run(["pgbench", "-n", *args, p.dsn()], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def test_rotation_under_pgbench(pg, vault, tmp_path):
    p = start_proxy(pg, vault, tmp_path, "10s", "20s",
                    {"pool_mode": "transaction", "default_pool_size": "4"})
    sampler = Sampler(pg)
    sampler.start()
    try:
        rc, out = pgbench(p, "-c", "8", "-j", "2", "-T", "60")
    finally:
        sampler.stop()
    assert rc == 0, out + p.log()[-3000:]
    assert "number of failed transactions: 0 " in out, out
    tps = next((line for line in out.splitlines() if line.startswith("tps")), "")
    print(f"\nrotation under pgbench: {len(sampler.users)} upstream users, "
          f"{sampler.samples} samples, {len(sampler.violations)} past VALID UNTIL, {tps}")
    assert len(sampler.users) >= 4, sampler.users
    assert sampler.samples > 100
    assert not sampler.violations, sampler.violations[:5]
    # Make-before-break: the old generation serves until new servers replace
    # its own one by one, at most 2 logins beyond the pool size at a time.
    log = p.log()
    takeovers = log.count(") takes over")
    assert takeovers >= 3, log[-3000:]
    assert log.count("replaced by a server with the new credential") >= takeovers
    assert sampler.most_backends <= 4 + 2, sampler.most_backends
    # Retired generations are revoked once drained: only the current one
    # (and perhaps its successor warming up) remain.
    time.sleep(1)
    assert len(vault_roles(pg)) <= 2, vault_roles(pg)
    p.signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    assert vault_roles(pg) == set(), "SIGTERM must revoke every lease"
    assert vault.state()["leases"] == []
    assert_no_secrets(p, vault, [vault.root_token, pg.vault_password])


def test_rotation_when_postgres_has_no_spare_connection_slot(pg, vault, tmp_path):
    """With the database's CONNECTION LIMIT equal to the pool size (the
    Vault stand-in's own connection takes one of its slots), the new
    credential's logins find no slot: old servers make room one at a time
    and no client sees an error."""
    pg.sql(f"ALTER DATABASE {DB} CONNECTION LIMIT 4")
    try:
        p = start_proxy(pg, vault, tmp_path, "10s", "20s",
                        {"pool_mode": "transaction", "default_pool_size": "4"})
        rc, out = pgbench(p, "-S", "-c", "8", "-j", "2", "-T", "30")
        assert rc == 0, out + p.log()[-3000:]
        assert "number of failed transactions: 0 " in out, out
        log = p.log()
        assert log.count(") takes over") >= 1, log[-3000:]
        assert "53300" in log, "the limit was never reached: the test tests nothing"
        assert p.stop() == 0
    finally:
        pg.sql(f"ALTER DATABASE {DB} CONNECTION LIMIT -1")


def test_drain_timeout_ends_a_transaction_left_open(pg, vault, tmp_path):
    """After a rotation, a transaction left open on the old generation is cut
    when drain_timeout ends, with a clear 57P01; another client never notices."""
    p = start_proxy(pg, vault, tmp_path, "10s", "20s",
                    {"pool_mode": "transaction", "drain_timeout": "2"})
    # No server-side prepared statements: transaction mode does not keep them.
    held = psycopg.connect(p.dsn())  # first query opens a transaction
    other = psycopg.connect(p.dsn(), autocommit=True)
    try:
        first_user = held.execute("select current_user").fetchone()[0]
        deadline = time.monotonic() + 30
        while ") takes over" not in p.log():
            other.execute("select 1")
            assert time.monotonic() < deadline, p.log()[-3000:]
            time.sleep(0.05)
        past_timeout = time.monotonic() + 3.5
        while time.monotonic() < past_timeout:
            other.execute("select 1")
            time.sleep(0.05)
        assert other.execute("select current_user").fetchone()[0] != first_user
        with pytest.raises(psycopg.OperationalError) as e:
            held.execute("select 1")
        assert "drain_timeout reached" in str(e.value), e.value
    finally:
        held.close()
        other.close()
        assert p.stop() == 0


def test_vault_outage_while_leases_are_valid(pg, vault, tmp_path):
    p = start_proxy(pg, vault, tmp_path, "60s", "120s")
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(
            zip(("rc", "out"), pgbench(p, "-S", "-c", "4", "-j", "2", "-T", "30"))))
        t.start()
        time.sleep(3)
        vault.proc.send_signal(signal.SIGSTOP)  # Vault unreachable for 20 s
        time.sleep(20)
        vault.proc.send_signal(signal.SIGCONT)
        t.join(60)
        assert result["rc"] == 0, result["out"]
        assert "number of failed transactions: 0 " in result["out"], result["out"]
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        vault.proc.send_signal(signal.SIGCONT)
        assert p.stop() == 0


def test_operator_revokes_the_live_lease(pg, vault, tmp_path):
    p = start_proxy(pg, vault, tmp_path, "60s", "120s")
    try:
        c = psycopg.connect(p.dsn(), autocommit=True)
        first = c.execute("select current_user").fetchone()[0]
        lease = next(l for l in vault.state()["leases"] if l["username"] == first)
        # The operator revokes the lease and kills the role's sessions.
        pids = backends_of(pg, first)
        vault.fault("revoke-lease", lease_id=lease["lease_id"])
        terminate(pg, pids)
        t0 = time.monotonic()
        deadline = t0 + 5
        while True:
            try:
                user = c.execute("select current_user").fetchone()[0]
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, p.log()[-3000:]
                c = psycopg.connect(p.dsn(), autocommit=True)
        elapsed = time.monotonic() - t0
        assert user != first
        assert elapsed < 1.0, f"recovered in {elapsed:.2f} s"
        c.close()
    finally:
        assert p.stop() == 0


def test_no_credential_left_gives_a_clear_error(pg, vault, tmp_path):
    """With no valid credential and Vault unable to give one, clients wait
    (query_wait_timeout, 3 s here), then are told Vault's error."""
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", {"query_wait_timeout": "3"})
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("select 1")
        user = next(iter(vault_roles(pg)))
        lease = next(l for l in vault.state()["leases"] if l["username"] == user)
        pids = backends_of(pg, user)
        vault.fault("revoke-lease", lease_id=lease["lease_id"])
        vault.fault("seal")  # Vault can't give a new one
        terminate(pg, pids)
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as e:
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                c.execute("select 1")
                c.execute("select 1")
        assert time.monotonic() - t0 < 10
        assert "Vault" in str(e.value) or "vault" in str(e.value), e.value
        vault.fault("unseal")
        wait_until_served(p, 15)  # it recovers by itself
    finally:
        vault.fault("unseal")
        assert p.stop() == 0


def test_session_mode_one_clean_disconnect_per_rotation(pg, vault, tmp_path):
    p = start_proxy(pg, vault, tmp_path, "6s", "12s", {"pool_mode": "session"})
    try:
        disconnects, other_errors, users = [0], [], set()

        def client():
            deadline = time.monotonic() + 30
            c = psycopg.connect(p.dsn(), autocommit=True)
            while time.monotonic() < deadline:
                try:
                    users.add(c.execute("select current_user").fetchone()[0])
                    time.sleep(0.05)
                except psycopg.OperationalError as e:
                    if "credentials rotated" in str(e):
                        disconnects[0] += 1
                    else:
                        other_errors.append(str(e))
                    c = psycopg.connect(p.dsn(), autocommit=True)
            c.close()

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not other_errors, other_errors[:3]
        rotations = len(users) - 1
        assert rotations >= 2, users
        assert disconnects[0] <= 3 * rotations, (disconnects[0], rotations)
    finally:
        assert p.stop() == 0


def test_wrapped_secret_id(pg, vault, tmp_path):
    section = approle(vault, tmp_path, wrapped=True)
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", vault_section=section)
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0].startswith("v-approle-")
        assert "unwrapped the secret_id" in p.log()
        assert_no_secrets(p, vault)
    finally:
        assert p.stop() == 0


def test_kubernetes_auth(pg, vault, tmp_path):
    import base64
    import json

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    jwt = ".".join([b64({"alg": "RS256"}), b64({
        "kubernetes.io/serviceaccount/namespace": "prod",
        "kubernetes.io/serviceaccount/service-account.name": "app"}), "sig"])
    (tmp_path / "token").write_text(jwt)
    vault.api("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
    vault.api("POST", "auth/kubernetes/config", {"kubernetes_host": "https://k8s.invalid"})
    vault.api("PUT", "sys/policies/acl/pglease", {"policy": POLICY})
    vault.api("POST", "auth/kubernetes/role/pglease", {
        "bound_service_account_names": "app", "bound_service_account_namespaces": "prod",
        "token_policies": ["pglease"], "token_ttl": "1h"})
    vault.fault("k8s-tokens", jwt=jwt)
    section = (f"\n[vault]\naddr = {vault.addr}\nauth_method = kubernetes\n"
               f"kubernetes_role = pglease\njwt_file = {tmp_path / 'token'}\n")
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", vault_section=section)
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0].startswith("v-kubernet")
        assert jwt not in p.log()
    finally:
        assert p.stop() == 0


def test_short_lived_vault_token(pg, vault, tmp_path):
    """A token with a 10 s max TTL: its leases die with it, so pglease must
    log in again and rotate credentials before each token ends."""
    vault.api("POST", "sys/auth/approle", {"type": "approle"})
    vault.api("PUT", "sys/policies/acl/pglease", {"policy": POLICY})
    vault.api("POST", "auth/approle/role/pglease", {"token_policies": ["pglease"],
                                                    "token_ttl": "4s", "token_max_ttl": "10s"})
    role_id = vault.api("GET", "auth/approle/role/pglease/role-id")["data"]["role_id"]
    secret = vault.api("POST", "auth/approle/role/pglease/secret-id")["data"]["secret_id"]
    (tmp_path / "secret-id").write_text(secret)
    section = (f"\n[vault]\naddr = {vault.addr}\nrole_id = {role_id}\n"
               f"secret_id_file = {tmp_path / 'secret-id'}\n")
    p = start_proxy(pg, vault, tmp_path, "60s", "120s", vault_section=section)
    sampler = Sampler(pg)
    sampler.start()
    try:
        rc, out = pgbench(p, "-S", "-c", "4", "-j", "2", "-T", "25")
    finally:
        sampler.stop()
    try:
        assert rc == 0 and "number of failed transactions: 0 " in out, out + p.log()[-6000:]
        assert len(sampler.users) >= 3, (sampler.users, p.log()[-3000:])
        assert p.log().count("logging in again") >= 2
        assert_no_secrets(p, vault, [vault.root_token, pg.vault_password])
    finally:
        assert p.stop() == 0


@pytest.fixture
def tls_files(tmp_path):
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
         "-days", "2", "-subj", "/CN=vault test CA")
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "vault.key", "-out", "vault.csr",
         "-subj", "/CN=127.0.0.1")
    ossl("x509", "-req", "-in", "vault.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "vault.crt", "-days", "2", "-extfile", "san.cnf")
    return tmp_path / "vault.crt", tmp_path / "vault.key", tmp_path / "ca.crt"


def test_vault_over_tls_and_token_file(pg, tmp_path, tls_files):
    """Vault over https verified with ca_cert; token auth from a file that
    is re-read when it changes."""
    from harness import VaultSim
    vault = VaultSim(tls=tls_files)
    try:
        vault.api("PUT", "sys/policies/acl/pglease", {"policy": POLICY})
        tok1 = vault.api("POST", "auth/token/create", {"policies": ["pglease"], "ttl": "1h"})[
            "auth"]["client_token"]
        (tmp_path / "token").write_text(tok1)
        section = (f"\n[vault]\naddr = {vault.addr}\nca_cert = {tls_files[2]}\n"
                   f"auth_method = token\ntoken_file = {tmp_path / 'token'}\n")
        p = start_proxy(pg, vault, tmp_path, "60s", "120s", vault_section=section)
        try:
            with psycopg.connect(p.dsn(), autocommit=True) as c:
                assert c.execute("select current_user").fetchone()[0].startswith("v-token-")
            # The operator replaces the token file and revokes the old token
            # (which revokes its leases and drops the role).
            tok2 = vault.api("POST", "auth/token/create", {"policies": ["pglease"],
                                                           "ttl": "1h"})["auth"]["client_token"]
            (tmp_path / "token").write_text(tok2)
            deadline = time.monotonic() + 15
            while "changed; using the new token" not in p.log():
                assert time.monotonic() < deadline, p.log()[-3000:]
                time.sleep(0.2)
            vault.api("POST", "auth/token/revoke", {"token": tok1})
            wait_until_served(p, 10)
            assert_no_secrets(p, vault, [vault.root_token, tok1, tok2])
        finally:
            assert p.stop() == 0
        # Without the CA, the certificate is refused and said so.
        bad = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={DB} "
                              f"creds=database/creds/app-rw"},
                      extra_sections=section.replace(f"ca_cert = {tls_files[2]}\n", ""))
        bad.start()
        try:
            with pytest.raises(psycopg.OperationalError) as e:
                psycopg.connect(bad.dsn(), connect_timeout=15)
            assert "Vault" in str(e.value)
            assert "certificate" in bad.log().lower()
        finally:
            bad.stop()
    finally:
        vault.stop()
