"""pglease logs in to Vault with the jwt and cert auth methods (issue 16),
against the Vault stand-in, and serves queries with the credentials it
then gets; a login Vault refuses is logged and clients are told."""
import time

import psycopg
import pytest

import pgraw

from jwtkeys import KeyPair
from test_vault_rotation import DB, assert_no_secrets, start_proxy

POLICY = ('path "database/creds/app-rw" { capabilities = ["read"] }\n'
          'path "sys/leases/*" { capabilities = ["update"] }')


# The database start_proxy serves (conftest.py).
pytestmark = pytest.mark.usefixtures("vdb")


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def jwt_vault(vault, key, **role):
    vault.api("POST", "sys/auth/jwt", {"type": "jwt"})
    vault.api("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [key.public_pem],
                                          "bound_issuer": "https://idp.example"})
    vault.api("PUT", "sys/policies/acl/pglease", {"policy": POLICY})
    fields = {"role_type": "jwt", "user_claim": "sub", "bound_audiences": "vault",
              "token_policies": "pglease", "token_ttl": "1h"}
    fields.update(role)
    vault.api("POST", "auth/jwt/role/pglease", fields)


def jwt_section(vault, path):
    return (f"\n[vault]\naddr = {vault.addr}\nauth_method = jwt\n"
            f"jwt_role = pglease\njwt_file = {path}\n")


def test_jwt_auth(pg, vault, tmp_path):
    key = KeyPair("ES256")
    # A short token max TTL makes pglease log in again every few seconds.
    jwt_vault(vault, key, token_ttl="3s", token_max_ttl="3s")
    first = key.sign()
    (tmp_path / "jwt").write_text(first + "\n")
    p = start_proxy(pg, vault, tmp_path, "60s", "120s",
                    vault_section=jwt_section(vault, tmp_path / "jwt"))
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0].startswith("v-jwt-")
        # The issuer rotates its key and the token file: the next login
        # works only with the file read again.
        key2 = KeyPair("RS256")
        vault.api("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [key2.public_pem],
                                              "bound_issuer": "https://idp.example"})
        second = key2.sign()
        (tmp_path / "jwt").write_text(second)
        since = len(vault.log())
        wait_for(lambda: "POST /v1/auth/jwt/login -> 200" in vault.log()[since:], 20,
                 "no login with the new JWT")
        p.wait_served(20)
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        assert "logged in (jwt)" in p.log()
        assert_no_secrets(p, vault, extra=[first, second, first.split(".")[2]])
    finally:
        assert p.stop() == 0


def test_jwt_auth_wrong_key(pg, vault, tmp_path):
    key = KeyPair("RS256")
    jwt_vault(vault, key)
    bad = KeyPair("RS256").sign()
    (tmp_path / "jwt").write_text(bad)
    p = start_proxy(pg, vault, tmp_path, "60s", "120s",
                    settings={"query_wait_timeout": "2"},
                    vault_section=jwt_section(vault, tmp_path / "jwt"))
    try:
        # pgraw: libpq keeps a login failure's SQLSTATE to itself. The first
        # client waits up to query_wait_timeout; once the pool has seen the
        # login fail, later ones are told at once.
        with pytest.raises(pgraw.ServerError) as e:
            pgraw.connect(p.port, "alice", "app", p.users["alice"]).close()
        assert e.value.sqlstate == "08006", str(e.value)
        assert "Vault" in str(e.value), str(e.value)
        assert ("vault: jwt login failed: HTTP 400: error validating token: error verifying "
                "token signature: no known key successfully validated the token signature"
                in p.log()), p.log()[-3000:]
        assert_no_secrets(p, vault, extra=[bad, bad.split(".")[2]])
    finally:
        assert p.stop() == 0


@pytest.fixture
def tls_vault(pg, tmp_path):
    """The stand-in over https (its certificate from its own CA), and a CA
    for client certificates."""
    from harness import VaultSim, drop_vault_roles
    from tlscerts import CA
    server_ca = CA(tmp_path, "server")
    cert, key = server_ca.issue("127.0.0.1", san="IP:127.0.0.1")
    sim = VaultSim(tls=(cert, key, server_ca.cert))
    try:
        yield sim, server_ca, CA(tmp_path, "clients")
    finally:
        sim.stop()
        drop_vault_roles(pg)


def cert_section(vault, server_ca, cert, key, role="pglease"):
    return (f"\n[vault]\naddr = {vault.addr}\nca_cert = {server_ca.cert}\n"
            f"auth_method = cert\nclient_cert_file = {cert}\nclient_key_file = {key}\n"
            + (f"cert_role = {role}\n" if role else ""))


def cert_vault(vault, clients):
    vault.api("POST", "sys/auth/cert", {"type": "cert"})
    vault.api("PUT", "sys/policies/acl/pglease", {"policy": POLICY})
    vault.api("POST", "auth/cert/certs/pglease", {
        "certificate": clients.cert.read_text(), "allowed_common_names": "pglease.example",
        "token_policies": "pglease", "token_ttl": "1h"})


@pytest.mark.parametrize("role", ["pglease", None])
def test_cert_auth(pg, tmp_path, tls_vault, role):
    vault, server_ca, clients = tls_vault
    cert_vault(vault, clients)
    cert, key = clients.issue("pglease.example", client=True)
    p = start_proxy(pg, vault, tmp_path, "60s", "120s",
                    vault_section=cert_section(vault, server_ca, cert, key, role))
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0].startswith("v-cert-")
        assert "logged in (cert)" in p.log()
        assert_no_secrets(p, vault, extra=[key.read_text().split("\n")[1]])
    finally:
        assert p.stop() == 0


def test_cert_auth_other_ca(pg, tmp_path, tls_vault):
    from tlscerts import CA
    vault, server_ca, clients = tls_vault
    cert_vault(vault, clients)
    cert, key = CA(tmp_path, "stranger").issue("pglease.example", client=True)
    p = start_proxy(pg, vault, tmp_path, "60s", "120s",
                    settings={"query_wait_timeout": "2"},
                    vault_section=cert_section(vault, server_ca, cert, key))
    try:
        with pytest.raises(pgraw.ServerError) as e:
            pgraw.connect(p.port, "alice", "app", p.users["alice"]).close()
        assert e.value.sqlstate == "08006", str(e.value)
        assert "Vault" in str(e.value), str(e.value)
        assert ("vault: cert login failed: HTTP 400: invalid certificate or no client "
                "certificate supplied" in p.log()), p.log()[-3000:]
    finally:
        assert p.stop() == 0
