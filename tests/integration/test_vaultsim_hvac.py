"""The Vault stand-in checked with hvac, the client the Vault docs use: the
flows pglease depends on must behave as against real Vault."""
import base64
import json
import time

import hvac
import psycopg
import pytest


APP_POLICY = """
path "database/creds/app-rw" { capabilities = ["read"] }
path "sys/leases/*" { capabilities = ["update"] }
"""


def role_exists(pg, name):
    return bool(pg.sql("select 1 from pg_roles where rolname = %s", (name,)))


def valid_until(pg, name):
    return pg.sql("select rolvaliduntil from pg_roles where rolname = %s", (name,))[0][0]


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def approle_client(vault, policy=APP_POLICY, **role):
    root = vault.client()
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy("app", policy)
    root.auth.approle.create_or_update_approle("pglease", token_policies=["app"], **role)
    role_id = root.auth.approle.read_role_id("pglease")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("pglease")["data"]["secret_id"]
    return role_id, secret_id


def test_approle_dynamic_credentials_lifecycle(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password, default_ttl="1h", max_ttl="2h")
    role_id, secret_id = approle_client(vault)
    app = hvac.Client(url=vault.addr)
    login = app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert login["auth"]["client_token"] and "app" in login["auth"]["policies"]
    assert app.is_authenticated()

    creds = app.secrets.database.generate_credentials("app-rw")
    user, password = creds["data"]["username"], creds["data"]["password"]
    assert creds["lease_id"].startswith("database/creds/app-rw/")
    assert creds["renewable"] is True and creds["lease_duration"] == 3600
    assert user.startswith("v-approle-app-rw-") and len(user) <= 63
    assert len(password) == 20
    with psycopg.connect(host="127.0.0.1", port=pg.port, user=user, password=password,
                         dbname="postgres") as c:
        assert c.execute("select current_user").fetchone()[0] == user

    before = valid_until(pg, user)
    renewed = app.sys.renew_lease(creds["lease_id"], increment=5400)
    assert renewed["lease_id"] == creds["lease_id"]
    assert 5395 <= renewed["lease_duration"] <= 5400
    assert valid_until(pg, user) > before

    lookup = app.sys.read_lease(creds["lease_id"])
    assert lookup["data"]["id"] == creds["lease_id"] and lookup["data"]["renewable"]
    assert 5300 < lookup["data"]["ttl"] <= 5400

    app.sys.revoke_lease(creds["lease_id"])
    assert not role_exists(pg, user)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        app.sys.read_lease(creds["lease_id"])


def test_renew_is_capped_by_max_ttl(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password, default_ttl="60s", max_ttl="90s")
    root = vault.client()
    creds = root.secrets.database.generate_credentials("app-rw")
    assert creds["lease_duration"] == 60
    renewed = root.sys.renew_lease(creds["lease_id"], increment=3600)
    assert 85 <= renewed["lease_duration"] <= 90  # what is left of max_ttl, not 3600


def test_lease_expires_by_itself_and_role_is_dropped(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password, default_ttl="2s", max_ttl="2s")
    creds = vault.client().secrets.database.generate_credentials("app-rw")
    user = creds["data"]["username"]
    assert role_exists(pg, user)
    assert wait_until(lambda: not role_exists(pg, user), 4.0), "role outlived its lease"


def test_token_lifecycle_and_its_leases(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password)
    root = vault.client()
    root.sys.create_or_update_policy("app", APP_POLICY)
    tok = root.auth.token.create(policies=["app"], ttl="10m", explicit_max_ttl="15m")
    t = tok["auth"]["client_token"]
    app = vault.client(token=t)
    me = app.auth.token.lookup_self()["data"]
    assert me["policies"] == ["app", "default"] and 595 <= me["ttl"] <= 600
    assert me["explicit_max_ttl"] == 900
    renewed = app.auth.token.renew_self(increment="1h")
    assert 895 <= renewed["auth"]["lease_duration"] <= 900  # capped by explicit_max_ttl
    user = app.secrets.database.generate_credentials("app-rw")["data"]["username"]
    assert role_exists(pg, user)
    app.auth.token.revoke_self()
    assert not role_exists(pg, user), "revoking a token must revoke its leases"
    with pytest.raises(hvac.exceptions.Forbidden):
        app.auth.token.lookup_self()


def test_expired_token_takes_its_leases(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password)
    root = vault.client()
    root.sys.create_or_update_policy("app", APP_POLICY)
    t = root.auth.token.create(policies=["app"], ttl="2s")["auth"]["client_token"]
    user = vault.client(token=t).secrets.database.generate_credentials("app-rw")["data"][
        "username"]
    assert wait_until(lambda: not role_exists(pg, user), 4.0)


def test_kv_v2_versions(vault):
    c = vault.client()
    c.secrets.kv.v2.create_or_update_secret(path="app/config", secret={"a": "1"})
    r = c.secrets.kv.v2.create_or_update_secret(path="app/config", secret={"a": "2"})
    assert r["data"]["version"] == 2
    assert c.secrets.kv.v2.read_secret_version(path="app/config")["data"]["data"] == {"a": "2"}
    assert c.secrets.kv.v2.read_secret_version(path="app/config", version=1)["data"]["data"] \
        == {"a": "1"}
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.secrets.kv.v2.create_or_update_secret(path="app/config", secret={"a": "3"}, cas=1)
    with pytest.raises(hvac.exceptions.InvalidPath):
        c.secrets.kv.v2.read_secret_version(path="app/none")


def test_wrong_secret_id_and_denied_path(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password)
    role_id, _ = approle_client(vault)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        hvac.Client(url=vault.addr).auth.approle.login(role_id=role_id, secret_id="wrong")
    assert "invalid role or secret ID" in str(e.value)
    _, secret_id = role_id, vault.client().auth.approle.generate_secret_id("pglease")[
        "data"]["secret_id"]
    app = hvac.Client(url=vault.addr)
    app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v2.read_secret_version(path="app/config")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.sys.enable_secrets_engine("kv", path="mine")


def test_secret_id_uses_and_wrapping(vault):
    root = vault.client()
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("r", token_policies=["default"],
                                               secret_id_num_uses=1, token_ttl="20m",
                                               token_max_ttl="30m")
    role_id = root.auth.approle.read_role_id("r")["data"]["role_id"]
    # An orchestrator asks for a response-wrapped secret_id...
    status, wrapped = vault.request("POST", "auth/approle/role/r/secret-id",
                                    headers={"X-Vault-Wrap-TTL": "60s"})
    assert status == 200 and wrapped["data"] is None
    wtoken = wrapped["wrap_info"]["token"]
    assert wrapped["wrap_info"]["ttl"] == 60
    assert wrapped["wrap_info"]["creation_path"] == "auth/approle/role/r/secret-id"
    # ...which is unwrapped exactly once.
    unwrapped = hvac.Client(url=vault.addr, token=wtoken).sys.unwrap()
    secret_id = unwrapped["data"]["secret_id"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=vault.addr, token=wtoken).sys.unwrap()
    login = hvac.Client(url=vault.addr).auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert login["auth"]["lease_duration"] == 1200
    # secret_id_num_uses = 1: a second login with it fails.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=vault.addr).auth.approle.login(role_id=role_id, secret_id=secret_id)


def fake_jwt(namespace, name):
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return ".".join([b64({"alg": "RS256"}), b64({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1"}), "sig"])


def test_kubernetes_login(vault):
    root = vault.client()
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(kubernetes_host="https://kubernetes.default.svc")
    root.auth.kubernetes.create_role("app", bound_service_account_names=["app-sa"],
                                     bound_service_account_namespaces=["prod"],
                                     policies=["default"], ttl="1h")
    ok = fake_jwt("prod", "app-sa")
    login = hvac.Client(url=vault.addr).auth.kubernetes.login("app", ok)
    assert login["auth"]["metadata"]["service_account_namespace"] == "prod"
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=vault.addr).auth.kubernetes.login("app", fake_jwt("dev", "app-sa"))
    # Once a test registers the tokens the "TokenReview" accepts, others fail.
    vault.fault("k8s-tokens", jwt=ok)
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=vault.addr).auth.kubernetes.login("app", fake_jwt("prod", "app-sa") + "x")
    hvac.Client(url=vault.addr).auth.kubernetes.login("app", ok)


def test_static_role_rotation(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password)
    pg.sql("DROP ROLE IF EXISTS static_app")
    pg.sql("CREATE ROLE static_app LOGIN PASSWORD 'initial'")
    try:
        root = vault.client()
        status, _ = vault.request("POST", "database/static-roles/reports", {
            "db_name": "pg", "username": "static_app", "rotation_period": "1h"})
        assert status == 204
        first = root.secrets.database.get_static_credentials("reports")["data"]
        assert first["username"] == "static_app" and 3590 <= first["ttl"] <= 3600

        def login(pw):
            return psycopg.connect(host="127.0.0.1", port=pg.port, user="static_app",
                                   password=pw, dbname="postgres").close()
        login(first["password"])
        with pytest.raises(psycopg.OperationalError):
            login("initial")
        vault.api("POST", "database/rotate-role/reports")
        second = root.secrets.database.get_static_credentials("reports")["data"]
        assert second["password"] != first["password"]
        login(second["password"])
        with pytest.raises(psycopg.OperationalError):
            login(first["password"])
    finally:
        pg.sql("DROP ROLE IF EXISTS static_app")


def test_sealed_and_fault_injection(vault):
    c = vault.client()
    vault.fault("seal")
    assert c.sys.read_health_status(method="GET").status_code == 503
    with pytest.raises(hvac.exceptions.VaultDown):
        c.auth.token.lookup_self()
    vault.fault("unseal")
    c.auth.token.lookup_self()
    vault.fault("fail", count=2, status=500, path_prefix="auth/token/lookup-self")
    for _ in range(2):
        with pytest.raises(hvac.exceptions.InternalServerError):
            c.auth.token.lookup_self()
    c.auth.token.lookup_self()
    vault.fault("latency", ms=300)
    t0 = time.monotonic()
    c.auth.token.lookup_self()
    assert time.monotonic() - t0 >= 0.3
    vault.fault("latency", ms=0)


def test_operator_revokes_and_shortens_leases(vault, pg):
    vault.setup_database(pg, pg.vault_user, pg.vault_password)
    c = vault.client()
    a = c.secrets.database.generate_credentials("app-rw")
    b = c.secrets.database.generate_credentials("app-rw")
    vault.fault("revoke-lease", lease_id=a["lease_id"])
    assert not role_exists(pg, a["data"]["username"])
    vault.fault("shorten-lease", lease_id=b["lease_id"], ttl=1)
    assert wait_until(lambda: not role_exists(pg, b["data"]["username"]), 3.0)
    # revoke-prefix, as an operator cleaning up a role
    d = c.secrets.database.generate_credentials("app-rw")
    assert vault.request("PUT", "sys/leases/revoke-prefix/database/creds/app-rw")[0] == 204
    assert not role_exists(pg, d["data"]["username"])


def test_raw_envelope_and_errors(vault):
    status, obj = vault.request("GET", "auth/token/lookup-self")
    assert status == 200
    assert set(obj) >= {"request_id", "lease_id", "renewable", "lease_duration", "data",
                        "wrap_info", "warnings", "auth"}
    status, obj = vault.request("GET", "no/such/mount")
    assert status == 404 and isinstance(obj["errors"], list) and obj["errors"]
    status, obj = vault.request("GET", "auth/token/lookup-self", token="nope")
    assert status == 403 and "permission denied" in obj["errors"][0]
    status, obj = vault.request("GET", "auth/token/lookup-self", token=False)
    assert status == 403
    status, obj = vault.request("PUT", "sys/leases/renew", {"lease_id": "database/creds/x/y"})
    assert status == 400 and obj["errors"]
