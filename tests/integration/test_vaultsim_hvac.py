"""The Vault stand-in checked with hvac, the client the Vault docs use: the
flows pglease depends on must behave as against real Vault."""
import base64
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

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


def approle_client(vaultsim, policy=APP_POLICY, **role):
    root = vaultsim.client()
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy("app", policy)
    root.auth.approle.create_or_update_approle("pglease", token_policies=["app"], **role)
    role_id = root.auth.approle.read_role_id("pglease")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("pglease")["data"]["secret_id"]
    return role_id, secret_id


def test_approle_dynamic_credentials_lifecycle(vaultsim, pg):
    vaultsim.setup_database(pg, default_ttl="1h", max_ttl="2h")
    role_id, secret_id = approle_client(vaultsim)
    app = hvac.Client(url=vaultsim.addr)
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
                         dbname="app") as c:
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


def test_database_plugin_keeps_its_connection_open(vaultsim, pg):
    """Like Vault's plugin (a Go sql.DB pool), the stand-in does not log in to
    Postgres for every request, and replaces a connection the server dropped."""
    vaultsim.setup_database(pg, default_ttl="1h", max_ttl="2h")
    root = vaultsim.client()
    leases = [root.secrets.database.generate_credentials("app-rw") for _ in range(3)]
    root.sys.renew_lease(leases[0]["lease_id"], increment=600)
    pids = pg.sql("select pid from pg_stat_activity where usename = %s", (pg.vault_user,))
    assert len(pids) == 1, pids
    pg.sql("select pg_terminate_backend(%s)", (pids[0][0],))
    root.sys.revoke_lease(leases[1]["lease_id"])
    assert not role_exists(pg, leases[1]["data"]["username"])
    assert role_exists(pg, leases[2]["data"]["username"])


def test_renew_is_capped_by_max_ttl(vaultsim, pg):
    vaultsim.setup_database(pg, default_ttl="60s", max_ttl="90s")
    root = vaultsim.client()
    creds = root.secrets.database.generate_credentials("app-rw")
    assert creds["lease_duration"] == 60
    renewed = root.sys.renew_lease(creds["lease_id"], increment=3600)
    assert 85 <= renewed["lease_duration"] <= 90  # what is left of max_ttl, not 3600


def test_lease_expires_by_itself_and_role_is_dropped(vaultsim, pg):
    vaultsim.setup_database(pg, default_ttl="2s", max_ttl="2s")
    creds = vaultsim.client().secrets.database.generate_credentials("app-rw")
    user = creds["data"]["username"]
    assert role_exists(pg, user)
    assert wait_until(lambda: not role_exists(pg, user), 4.0), "role outlived its lease"


def test_token_lifecycle_and_its_leases(vaultsim, pg):
    vaultsim.setup_database(pg)
    root = vaultsim.client()
    root.sys.create_or_update_policy("app", APP_POLICY)
    tok = root.auth.token.create(policies=["app"], ttl="10m", explicit_max_ttl="15m")
    t = tok["auth"]["client_token"]
    app = vaultsim.client(token=t)
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


def test_expired_token_takes_its_leases(vaultsim, pg):
    vaultsim.setup_database(pg)
    root = vaultsim.client()
    root.sys.create_or_update_policy("app", APP_POLICY)
    t = root.auth.token.create(policies=["app"], ttl="2s")["auth"]["client_token"]
    user = vaultsim.client(token=t).secrets.database.generate_credentials("app-rw")["data"][
        "username"]
    assert wait_until(lambda: not role_exists(pg, user), 4.0)


def test_kv_v2_versions(vaultsim):
    c = vaultsim.client()
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
    # What pglease's KV source relies on: data.metadata.version on a read,
    # current_version in the metadata, 404 once the metadata is deleted.
    read = c.secrets.kv.v2.read_secret_version(path="app/config")["data"]
    assert read["metadata"]["version"] == 2
    assert c.secrets.kv.v2.read_secret_metadata(path="app/config")["data"]["current_version"] == 2
    c.secrets.kv.v2.delete_metadata_and_all_versions(path="app/config")
    with pytest.raises(hvac.exceptions.InvalidPath):
        c.secrets.kv.v2.read_secret_metadata(path="app/config")


def test_wrong_secret_id_and_denied_path(vaultsim, pg):
    vaultsim.setup_database(pg)
    role_id, _ = approle_client(vaultsim)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        hvac.Client(url=vaultsim.addr).auth.approle.login(role_id=role_id, secret_id="wrong")
    assert "invalid role or secret ID" in str(e.value)
    _, secret_id = role_id, vaultsim.client().auth.approle.generate_secret_id("pglease")[
        "data"]["secret_id"]
    app = hvac.Client(url=vaultsim.addr)
    app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v2.read_secret_version(path="app/config")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.sys.enable_secrets_engine("kv", path="mine")


def test_secret_id_uses_and_wrapping(vaultsim):
    root = vaultsim.client()
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("r", token_policies=["default"],
                                               secret_id_num_uses=1, token_ttl="20m",
                                               token_max_ttl="30m")
    role_id = root.auth.approle.read_role_id("r")["data"]["role_id"]
    # An orchestrator asks for a response-wrapped secret_id...
    status, wrapped = vaultsim.request("POST", "auth/approle/role/r/secret-id",
                                    headers={"X-Vault-Wrap-TTL": "60s"})
    assert status == 200 and wrapped["data"] is None
    wtoken = wrapped["wrap_info"]["token"]
    assert wrapped["wrap_info"]["ttl"] == 60
    assert wrapped["wrap_info"]["creation_path"] == "auth/approle/role/r/secret-id"
    # ...which is unwrapped exactly once.
    unwrapped = hvac.Client(url=vaultsim.addr, token=wtoken).sys.unwrap()
    secret_id = unwrapped["data"]["secret_id"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=vaultsim.addr, token=wtoken).sys.unwrap()
    login = hvac.Client(url=vaultsim.addr).auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert login["auth"]["lease_duration"] == 1200
    # secret_id_num_uses = 1: a second login with it fails.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=vaultsim.addr).auth.approle.login(role_id=role_id, secret_id=secret_id)


def fake_jwt(namespace, name):
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return ".".join([b64({"alg": "RS256"}), b64({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1"}), "sig"])


def test_kubernetes_login(vaultsim):
    root = vaultsim.client()
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(kubernetes_host="https://kubernetes.default.svc")
    root.auth.kubernetes.create_role("app", bound_service_account_names=["app-sa"],
                                     bound_service_account_namespaces=["prod"],
                                     policies=["default"], ttl="1h")
    ok = fake_jwt("prod", "app-sa")
    login = hvac.Client(url=vaultsim.addr).auth.kubernetes.login("app", ok)
    assert login["auth"]["metadata"]["service_account_namespace"] == "prod"
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=vaultsim.addr).auth.kubernetes.login("app", fake_jwt("dev", "app-sa"))
    # Once a test registers the tokens the "TokenReview" accepts, others fail.
    vaultsim.fault("k8s-tokens", jwt=ok)
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=vaultsim.addr).auth.kubernetes.login("app", fake_jwt("prod", "app-sa") + "x")
    hvac.Client(url=vaultsim.addr).auth.kubernetes.login("app", ok)


def test_static_role_rotation(vaultsim, pg):
    vaultsim.setup_database(pg)
    pg.sql("DROP ROLE IF EXISTS static_app")
    pg.sql("CREATE ROLE static_app LOGIN PASSWORD 'initial'")
    try:
        root = vaultsim.client()
        status, _ = vaultsim.request("POST", "database/static-roles/reports", {
            "db_name": "pg", "username": "static_app", "rotation_period": "1h"})
        assert status == 204
        first = root.secrets.database.get_static_credentials("reports")["data"]
        assert first["username"] == "static_app" and 3590 <= first["ttl"] <= 3600
        # What pglease relies on: the ttl to the next rotation, the period,
        # the time of the last rotation (RFC 3339), and no lease at all.
        assert first["rotation_period"] == 3600 and first["last_vault_rotation"].endswith("Z")
        raw = vaultsim.api("GET", "database/static-creds/reports")
        assert raw["lease_id"] == "" and raw["lease_duration"] == 0 and not raw["renewable"]

        def login(pw):
            return psycopg.connect(host="127.0.0.1", port=pg.port, user="static_app",
                                   password=pw, dbname="app").close()
        login(first["password"])
        with pytest.raises(psycopg.OperationalError):
            login("initial")
        vaultsim.api("POST", "database/rotate-role/reports")
        second = root.secrets.database.get_static_credentials("reports")["data"]
        assert second["password"] != first["password"]
        assert second["ttl"] >= 3590
        assert second["last_vault_rotation"] >= first["last_vault_rotation"]
        login(second["password"])
        with pytest.raises(psycopg.OperationalError):
            login(first["password"])
    finally:
        pg.sql("DROP ROLE IF EXISTS static_app")


def test_sealed_and_fault_injection(vaultsim):
    c = vaultsim.client()
    vaultsim.fault("seal")
    assert c.sys.read_health_status(method="GET").status_code == 503
    with pytest.raises(hvac.exceptions.VaultDown):
        c.auth.token.lookup_self()
    vaultsim.fault("unseal")
    c.auth.token.lookup_self()
    vaultsim.fault("fail", count=2, status=500, path_prefix="auth/token/lookup-self")
    for _ in range(2):
        with pytest.raises(hvac.exceptions.InternalServerError):
            c.auth.token.lookup_self()
    c.auth.token.lookup_self()
    vaultsim.fault("latency", ms=300)
    t0 = time.monotonic()
    c.auth.token.lookup_self()
    assert time.monotonic() - t0 >= 0.3
    vaultsim.fault("latency", ms=0)


def test_operator_revokes_and_shortens_leases(vaultsim, pg):
    vaultsim.setup_database(pg)
    c = vaultsim.client()
    a = c.secrets.database.generate_credentials("app-rw")
    b = c.secrets.database.generate_credentials("app-rw")
    vaultsim.fault("revoke-lease", lease_id=a["lease_id"])
    assert not role_exists(pg, a["data"]["username"])
    vaultsim.fault("shorten-lease", lease_id=b["lease_id"], ttl=1)
    assert wait_until(lambda: not role_exists(pg, b["data"]["username"]), 3.0)
    # revoke-prefix, as an operator cleaning up a role
    d = c.secrets.database.generate_credentials("app-rw")
    assert vaultsim.request("PUT", "sys/leases/revoke-prefix/database/creds/app-rw")[0] == 204
    assert not role_exists(pg, d["data"]["username"])


def test_raw_envelope_and_errors(vaultsim):
    status, obj = vaultsim.request("GET", "auth/token/lookup-self")
    assert status == 200
    assert set(obj) >= {"request_id", "lease_id", "renewable", "lease_duration", "data",
                        "wrap_info", "warnings", "auth"}
    status, obj = vaultsim.request("GET", "no/such/mount")
    assert status == 404 and isinstance(obj["errors"], list) and obj["errors"]
    status, obj = vaultsim.request("GET", "auth/token/lookup-self", token="nope")
    assert status == 403 and "permission denied" in obj["errors"][0]
    status, obj = vaultsim.request("GET", "auth/token/lookup-self", token=False)
    assert status == 403
    status, obj = vaultsim.request("PUT", "sys/leases/renew", {"lease_id": "database/creds/x/y"})
    assert status == 400 and obj["errors"]


# ---------------------------------------------------------------- more of the API

def test_credentials_shape_and_lease_lookup(vaultsim, pg):
    vaultsim.setup_database(pg, default_ttl="10m", max_ttl="1h")
    role_id, secret_id = approle_client(vaultsim)
    app = hvac.Client(url=vaultsim.addr)
    app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    creds = app.secrets.database.generate_credentials("app-rw")
    user, password = creds["data"]["username"], creds["data"]["password"]
    # The plugin's default username template and Vault's default password policy.
    assert re.fullmatch(r"v-approle-app-rw-[A-Za-z0-9]{20}-\d{10}", user), user
    assert abs(int(user.rsplit("-", 1)[1]) - time.time()) < 5
    assert re.fullmatch(r"[A-Za-z0-9-]{20}", password) and re.search("[a-z]", password) and \
        re.search("[A-Z]", password) and re.search("[0-9]", password)
    assert re.fullmatch(r"database/creds/app-rw/[A-Za-z0-9]{24}", creds["lease_id"])
    assert creds["mount_type"] == "database"
    # VALID UNTIL is the lease end, from {{expiration}}.
    assert abs(valid_until(pg, user).timestamp() - (time.time() + 600)) < 5
    lk = app.sys.read_lease(creds["lease_id"])["data"]
    assert lk["last_renewal"] is None and lk["renewable"] is True
    rfc = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"
    assert re.fullmatch(rfc, lk["issue_time"]) and re.fullmatch(rfc, lk["expire_time"])
    app.sys.renew_lease(creds["lease_id"], increment="20m")
    lk = app.sys.read_lease(creds["lease_id"])["data"]
    assert re.fullmatch(rfc, lk["last_renewal"]) and 1190 <= lk["ttl"] <= 1200
    assert abs(valid_until(pg, user).timestamp() - (time.time() + 1200)) < 5
    # The app policy allows creds and leases, nothing else.
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.database.read_role("app-rw")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.sys.list_mounted_secrets_engines()


def test_wrapped_secret_id_with_hvac(vaultsim):
    root = vaultsim.client()
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("w", token_policies=["default"], token_ttl=300)
    role_id = root.auth.approle.read_role_id("w")["data"]["role_id"]
    wrapped = root.adapter.post("/v1/auth/approle/role/w/secret-id", wrap_ttl="2m")
    info = wrapped["wrap_info"]
    assert set(info) >= {"token", "accessor", "ttl", "creation_time", "creation_path"}
    assert info["ttl"] == 120 and wrapped["data"] is None and wrapped["auth"] is None
    # Unwrap with the token in the body (the root token authenticates the call).
    secret_id = root.sys.unwrap(token=info["token"])["data"]["secret_id"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.unwrap(token=info["token"])
    auth = hvac.Client(url=vaultsim.addr).auth.approle.login(role_id=role_id,
                                                              secret_id=secret_id)["auth"]
    assert auth["metadata"] == {"role_name": "w"} and auth["lease_duration"] == 300
    assert auth["token_type"] == "service" and auth["orphan"] is True
    assert auth["renewable"] is True and auth["accessor"]
    assert auth["policies"] == ["default"] and auth["token_policies"] == ["default"]
    # A wrapped token from auth/token/create unwraps to an auth block.
    w = root.auth.token.create(policies=["default"], ttl="1m", wrap_ttl="30s")
    inner = hvac.Client(url=vaultsim.addr, token=w["wrap_info"]["token"]).sys.unwrap()
    assert inner["auth"]["client_token"].startswith("hvs.")


def test_kubernetes_nested_claims_and_display_name(vaultsim, pg):
    vaultsim.setup_database(pg)
    root = vaultsim.client()
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(kubernetes_host="https://10.0.0.1:443")
    assert root.auth.kubernetes.read_config()["kubernetes_host"] == \
        "https://10.0.0.1:443"
    root.sys.create_or_update_policy("app", APP_POLICY)
    root.auth.kubernetes.create_role("app", bound_service_account_names="app-sa",
                                     bound_service_account_namespaces="prod,staging",
                                     policies=["app"], ttl="30m")

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    jwt = ".".join([b64({"alg": "RS256"}), b64({
        "iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:staging:app-sa",
        "kubernetes.io": {"namespace": "staging",
                          "serviceaccount": {"name": "app-sa", "uid": "u-2"}}}), "sig"])
    c = hvac.Client(url=vaultsim.addr)
    auth = c.auth.kubernetes.login("app", jwt)["auth"]
    assert auth["lease_duration"] == 1800 and "app" in auth["policies"]
    assert auth["metadata"]["service_account_name"] == "app-sa"
    user = c.secrets.database.generate_credentials("app-rw")["data"]["username"]
    assert user.startswith("v-kubernet-app-rw-")  # display name kubernetes-staging-app-sa
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.kubernetes.login("app", fake_jwt("prod", "other-sa"))
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.auth.kubernetes.login("nope", jwt)


def test_tokens_durations_children_and_default_policy(vaultsim, pg):
    vaultsim.setup_database(pg)
    root = vaultsim.client()
    root.sys.create_or_update_policy("app", APP_POLICY)
    # Creating child tokens needs auth/token/create, which "default" lacks.
    root.sys.create_or_update_policy("parent", 'path "auth/token/create" '
                                               '{ capabilities = ["update"] }')
    me = root.auth.token.lookup_self()["data"]
    assert me["policies"] == ["root"] and me["ttl"] == 0 and me["expire_time"] is None
    parent = root.auth.token.create(policies=["app", "parent"], ttl="1h30m")["auth"]
    assert parent["lease_duration"] == 5400 and parent["client_token"].startswith("hvs.")
    pc = vaultsim.client(token=parent["client_token"])
    with pytest.raises(hvac.exceptions.Forbidden):
        vaultsim.client(token=root.auth.token.create(policies=["app"])["auth"][
            "client_token"]).auth.token.create(ttl="1m")
    child = pc.auth.token.create(ttl="10m")["auth"]  # inherits the parent's policies
    assert child["policies"] == ["app", "default", "parent"] and child["orphan"] is False
    looked = root.auth.token.lookup(child["client_token"])["data"]
    assert looked["accessor"] == child["accessor"] and 590 <= looked["ttl"] <= 600
    user = vaultsim.client(token=child["client_token"]).secrets.database.generate_credentials(
        "app-rw")["data"]["username"]
    assert role_exists(pg, user)
    # Revoking the parent revokes the child, and the child's lease.
    root.auth.token.revoke(parent["client_token"])
    assert not role_exists(pg, user)
    with pytest.raises(hvac.exceptions.Forbidden):
        root.auth.token.lookup(child["client_token"])
    # Non-renewable tokens cannot be renewed.
    nr = root.auth.token.create(policies=["default"], ttl="5m", renewable=False)["auth"]
    assert nr["renewable"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest):
        vaultsim.client(token=nr["client_token"]).auth.token.renew_self()
    # The default policy: lookup-self yes, anything else no.
    d = vaultsim.client(token=nr["client_token"])
    assert d.auth.token.lookup_self()["data"]["policies"] == ["default"]
    with pytest.raises(hvac.exceptions.Forbidden):
        d.sys.list_mounted_secrets_engines()
    with pytest.raises(hvac.exceptions.Forbidden):
        d.secrets.kv.v2.read_secret_version(path="x")
    # num_uses: the token is gone after its uses.
    once = root.auth.token.create(policies=["default"], num_uses=1)["auth"]["client_token"]
    vaultsim.client(token=once).auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        vaultsim.client(token=once).auth.token.lookup_self()


def test_mounts_policies_and_listing(vaultsim):
    c = vaultsim.client()
    mounts = c.sys.list_mounted_secrets_engines()["data"]
    assert mounts["secret/"]["type"] == "kv" and mounts["secret/"]["options"]["version"] == "2"
    assert "token/" in c.sys.list_auth_methods()["data"]
    c.sys.enable_secrets_engine("kv", path="kv2", options={"version": "2"})
    c.sys.enable_auth_method("approle", path="ci")
    assert "ci/" in c.sys.list_auth_methods()["data"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.sys.enable_secrets_engine("kv", path="kv2")  # path in use
    for p in ("a/one", "a/two", "b"):
        c.secrets.kv.v2.create_or_update_secret(path=p, secret={"k": p}, mount_point="kv2")
    assert c.secrets.kv.v2.list_secrets(path="", mount_point="kv2")["data"]["keys"] == \
        ["a/", "b"]
    assert vaultsim.request("LIST", "kv2/metadata/a")[1]["data"]["keys"] == ["one", "two"]
    assert vaultsim.request("GET", "kv2/metadata/a?list=true")[1]["data"]["keys"] == \
        ["one", "two"]
    meta = c.secrets.kv.v2.read_secret_metadata(path="b", mount_point="kv2")["data"]
    assert meta["current_version"] == 1 and "1" in meta["versions"]
    c.secrets.kv.v2.delete_latest_version_of_secret(path="b", mount_point="kv2")
    with pytest.raises(hvac.exceptions.InvalidPath):
        c.secrets.kv.v2.read_secret_version(path="b", mount_point="kv2")
    # Policies: '+' matches one segment, '*' a prefix, deny by default.
    c.sys.create_or_update_policy("reader", """
        # a comment
        path "kv2/data/a/+" { capabilities = ["read"] }
        path "kv2/metadata/*" { capabilities = ["list"] }
    """)
    assert "reader" in c.sys.list_policies()["data"]["policies"]
    assert "kv2/data/a/+" in c.sys.read_policy("reader")["data"]["rules"]
    r = vaultsim.client(token=c.auth.token.create(policies=["reader"])["auth"]["client_token"])
    assert r.secrets.kv.v2.read_secret_version(path="a/one", mount_point="kv2")["data"][
        "data"] == {"k": "a/one"}
    r.secrets.kv.v2.list_secrets(path="a", mount_point="kv2")
    with pytest.raises(hvac.exceptions.Forbidden):
        r.secrets.kv.v2.read_secret_version(path="b", mount_point="kv2")
    with pytest.raises(hvac.exceptions.Forbidden):
        r.secrets.kv.v2.create_or_update_secret(path="a/one", secret={}, mount_point="kv2")
    c.sys.disable_secrets_engine("kv2")
    assert "kv2/" not in c.sys.list_mounted_secrets_engines()["data"]


def test_database_config_checks_and_rotate_root(vaultsim, pg):
    c = vaultsim.client()
    c.sys.enable_secrets_engine("database")
    url = "postgresql://{{username}}:{{password}}@127.0.0.1:%d/app?sslmode=disable" % pg.port
    # verify_connection (default true) really connects.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.secrets.database.configure("bad", "postgresql-database-plugin", connection_url=url,
                                     username=pg.vault_user, password="wrong")
    # allowed_roles is enforced when credentials are asked for.
    c.secrets.database.configure("narrow", "postgresql-database-plugin", connection_url=url,
                                 username=pg.vault_user, password=pg.vault_password,
                                 allowed_roles=["other"])
    c.secrets.database.create_role("ro", "narrow", ['CREATE ROLE "{{name}}" LOGIN'])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.secrets.database.generate_credentials("ro")
    # rotate-root with an admin of its own (the session admin must keep its password).
    pg.sql("DROP ROLE IF EXISTS vaultadmin2")
    pg.sql("CREATE ROLE vaultadmin2 LOGIN SUPERUSER PASSWORD 'first-pw'")
    try:
        c.secrets.database.configure("own", "postgresql-database-plugin", connection_url=url,
                                     username="vaultadmin2", password="first-pw",
                                     allowed_roles="tmp")
        c.secrets.database.create_role(
            "tmp", "own", "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}'; "
            "GRANT CONNECT ON DATABASE app TO \"{{name}}\";", default_ttl=60,
            revocation_statements=['REVOKE CONNECT ON DATABASE app FROM "{{name}}"; '
                                   'DROP ROLE IF EXISTS "{{name}}"'])
        c.secrets.database.rotate_root_credentials("own")
        with pytest.raises(psycopg.OperationalError):
            pg.connect(user="vaultadmin2", password="first-pw").close()
        creds = c.secrets.database.generate_credentials("tmp")
        assert creds["lease_duration"] == 60
        with pg.connect(user=creds["data"]["username"], password=creds["data"]["password"]) as x:
            assert x.execute("select current_user").fetchone()[0] == creds["data"]["username"]
        c.sys.revoke_lease(creds["lease_id"])  # custom revocation statements
        assert not role_exists(pg, creds["data"]["username"])
    finally:
        pg.sql("DROP ROLE IF EXISTS vaultadmin2")


def test_log_has_one_line_per_request_and_no_secrets(vaultsim, pg):
    vaultsim.setup_database(pg)
    role_id, secret_id = approle_client(vaultsim)
    app = hvac.Client(url=vaultsim.addr)
    app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    creds = app.secrets.database.generate_credentials("app-rw")
    app.sys.revoke_lease(creds["lease_id"])
    log = vaultsim.log()
    assert "POST /v1/auth/approle/login -> 200" in log
    assert "GET /v1/database/creds/app-rw -> 200" in log
    secrets_ = vaultsim.state()["issued_secrets"] + [vaultsim.root_token, secret_id,
                                                     creds["data"]["password"],
                                                     pg.vault_password, app.token]
    for s in secrets_:
        assert s not in log, "a secret leaked into the vaultsim log"


def test_command_line_forms_and_startup_line(tmp_path):
    from harness import PYTHON, VAULTSIM, free_port
    port = free_port()
    proc = subprocess.Popen([PYTHON, str(VAULTSIM), "server", "-dev", "--dev-root-token-id",
                             "tok-1", "--dev-listen-address", f"127.0.0.1:{port}",
                             f"-log-file={tmp_path / 'v.log'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        c = hvac.Client(url=f"http://127.0.0.1:{port}", token="tok-1")
        assert c.sys.read_health_status(method="GET")["initialized"] is True
        assert c.auth.token.lookup_self()["data"]["id"] == "tok-1"
        assert "GET /v1/auth/token/lookup-self -> 200" in (tmp_path / "v.log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def test_raw_api_with_urllib(vaultsim):
    base = vaultsim.addr + "/v1/"

    def call(method, path, body=None, token=vaultsim.root_token):
        req = urllib.request.Request(base + path, method=method,
                                     data=json.dumps(body).encode() if body else None)
        if token:
            req.add_header("X-Vault-Token", token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read()

    st, ctype, raw = call("GET", "sys/health", token=None)
    health = json.loads(raw)
    assert st == 200 and set(health) >= {"initialized", "sealed", "standby", "version",
                                         "cluster_name", "server_time_utc"}
    assert abs(health["server_time_utc"] - time.time()) < 5
    st, ctype, raw = call("GET", "auth/token/lookup-self")
    obj = json.loads(raw)
    assert st == 200 and ctype == "application/json"
    assert set(obj) == {"request_id", "lease_id", "renewable", "lease_duration", "data",
                        "wrap_info", "warnings", "auth", "mount_type"}
    assert obj["lease_id"] == "" and obj["lease_duration"] == 0 and obj["auth"] is None
    assert obj["mount_type"] == "token"
    st, ctype, raw = call("GET", "nothing/mounted/here")
    assert st == 404 and set(json.loads(raw)) == {"errors"}
    st, _, raw = call("GET", "secret/data/missing")
    assert st == 404 and json.loads(raw) == {"errors": []}
    st, _, raw = call("POST", "sys/policies/acl/p1", {"policy": 'path "x" { capabilities '
                                                                '= ["read"] }'})
    assert st == 204 and raw == b""
    st, _, raw = call("DELETE", "auth/token/lookup-self")
    assert st == 405 and json.loads(raw)["errors"]
    st, _, raw = call("POST", "auth/token/create", {"ttl": "forever"})
    assert st == 400 and json.loads(raw)["errors"]
    st, _, raw = call("GET", "sys/vaultsim/state", token="not-root")
    assert st == 403


# ---------------------------------------------------------------- issue 14

def test_faults_are_listed_and_cleared(vaultsim):
    c = vaultsim.client()
    assert vaultsim.faults() == []
    a = vaultsim.fail_next(count=3, status=500, path_prefix="/v1/database/creds")["data"]["id"]
    b = vaultsim.fail_for(5, status=429, path_prefix="auth/approle/login", retry_after=2)
    h = vaultsim.hang(seconds=30, path_prefix="kv/never")
    vaultsim.latency(5)
    vaultsim.seal()
    listed = vaultsim.faults()
    by_kind = {f["kind"]: f for f in listed}
    assert set(by_kind) == {"fail", "hang", "latency", "seal"} and len(listed) == 5
    fails = {f["id"]: f for f in listed if f["kind"] == "fail"}
    assert fails[a]["count_left"] == 3 and fails[a]["seconds_left"] is None
    assert fails[a]["path_prefix"] == "database/creds" and fails[a]["status"] == 500
    assert fails[b]["count_left"] is None and 4 < fails[b]["seconds_left"] <= 5
    assert fails[b]["retry_after"] == 2
    assert by_kind["hang"]["id"] == h and by_kind["hang"]["holding"] == 0
    assert by_kind["latency"]["ms"] == 5
    # Clear one kind, one id, then everything (unseals, latency back to 0).
    assert vaultsim.clear_faults(kind="hang") == 1
    assert vaultsim.clear_faults(fault_id=a) == 1
    assert {f["kind"] for f in vaultsim.faults()} == {"fail", "latency", "seal"}
    assert vaultsim.clear_faults() == 3
    assert vaultsim.faults() == []
    c.auth.token.lookup_self()
    # A fault used up or past its window leaves the list by itself.
    vaultsim.fail_next(count=1, path_prefix="auth/token/lookup-self")
    vaultsim.fail_for(0.3, status=503, path_prefix="sys/mounts")
    with pytest.raises(hvac.exceptions.InternalServerError):
        c.auth.token.lookup_self()
    time.sleep(0.4)
    assert vaultsim.faults() == []
    # Raw API: DELETE sys/vaultsim/faults clears; non-root tokens get 403.
    vaultsim.fail_next(count=5)
    assert vaultsim.request("DELETE", "sys/vaultsim/faults")[1]["data"]["cleared"] == 1
    assert vaultsim.request("GET", "sys/vaultsim/faults", token="nope")[0] == 403


def test_fail_for_a_time_window_503_and_429(vaultsim):
    c = vaultsim.client()
    vaultsim.fail_for(2.0, status=503, path_prefix="auth/token/lookup-self")
    t0 = time.monotonic()
    failed = 0
    while time.monotonic() - t0 < 1.0:
        with pytest.raises(hvac.exceptions.VaultDown) as e:
            c.auth.token.lookup_self()
        failed += 1
        time.sleep(0.1)
    assert failed >= 5 and "Vault is sealed" in str(e.value)
    c.sys.list_mounted_secrets_engines()  # another path is not affected
    time.sleep(max(0.0, 2.05 - (time.monotonic() - t0)))
    c.auth.token.lookup_self()  # the window closed
    # 429 with Vault's rate-limit text and a Retry-After header.
    vaultsim.fail_for(1.0, status=429, retry_after=1)
    with pytest.raises(hvac.exceptions.RateLimitExceeded):
        c.auth.token.lookup_self()
    req = urllib.request.Request(vaultsim.addr + "/v1/sys/health")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 429 and e.value.headers["Retry-After"] == "1"
    assert json.loads(e.value.read()) == {
        "errors": ['request path "sys/health": rate limit quota exceeded']}
    # The test-only API itself is never failed.
    assert vaultsim.faults()[0]["matched"] == 2


def test_hang_until_cleared_for_seconds_and_closed(vaultsim):
    import threading
    c = vaultsim.client()
    fid = vaultsim.hang(path_prefix="auth/token/lookup-self")
    done = {}

    def call():
        t = time.monotonic()
        done["data"] = vaultsim.client().auth.token.lookup_self()["data"]
        done["took"] = time.monotonic() - t
    th = threading.Thread(target=call)
    th.start()
    assert wait_until(lambda: vaultsim.faults() and vaultsim.faults()[0]["holding"] == 1, 3)
    th.join(0.7)
    assert th.is_alive() and not done, "a hung request was answered"
    c.sys.list_mounted_secrets_engines()  # other paths answer
    # A client with a timeout gives up on the hung path.
    with pytest.raises(Exception) as e:
        hvac.Client(url=vaultsim.addr, token=vaultsim.root_token,
                    timeout=0.5).auth.token.lookup_self()
    assert "timed out" in str(e.value).lower()
    f = vaultsim.faults()[0]
    assert f["id"] == fid and f["kind"] == "hang" and f["matched"] == 2
    assert f["seconds_left"] is None and f["count_left"] is None
    assert vaultsim.clear_faults(kind="hang") == 1
    th.join(5)
    assert done["data"]["id"] == vaultsim.root_token and done["took"] >= 0.7
    # For N seconds: held, then answered normally.
    vaultsim.hang(seconds=0.8)
    t = time.monotonic()
    c.auth.token.lookup_self()
    assert 0.7 <= time.monotonic() - t < 3
    assert vaultsim.faults() == []
    # Only the next `count` requests; after="close": no answer at all.
    vaultsim.hang(seconds=0.3, count=1, after="close")
    with pytest.raises(Exception) as e:
        c.auth.token.lookup_self()
    assert "connection" in str(e.value).lower() or "remote" in str(e.value).lower()
    c.auth.token.lookup_self()


def test_comma_string_slices_accept_list_or_string(vaultsim, pg):
    """Fields that Vault types framework.TypeCommaStringSlice take a JSON
    list or "a, b" (split on commas, spaces trimmed); TypeStringSlice fields
    (the database statements) keep a string as one element."""
    root = vaultsim.client()
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy("app", APP_POLICY)
    # hvac 0.11.2's approle helper always sends these as ONE comma-joined
    # string (utils.list_to_comma_delimited: ["a", "b"] -> "a,b"), so Vault
    # has to split it; given a str it would join its characters.
    root.auth.approle.create_or_update_approle(
        "s", token_policies=["app", " default"], token_bound_cidrs=["127.0.0.1/32", "10.0.0.0/8"],
        secret_id_bound_cidrs=["127.0.0.0/8"])
    r = root.auth.approle.read_role("s")["data"]
    assert r["token_policies"] == ["app", "default"]
    assert r["token_bound_cidrs"] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert r["secret_id_bound_cidrs"] == ["127.0.0.0/8"]
    # A JSON list goes element by element (no split inside, spaces trimmed).
    root.adapter.post("/v1/auth/approle/role/l",
                      json={"token_policies": ["app", " default "], "token_bound_cidrs": []})
    r = root.auth.approle.read_role("l")["data"]
    assert r["token_policies"] == ["app", "default"] and r["token_bound_cidrs"] == []
    # The old name "policies", as a comma string, also sets token_policies.
    assert vaultsim.request("POST", "auth/approle/role/old", {"policies": "app,default"})[0] \
        == 204
    old = root.auth.approle.read_role("old")["data"]
    assert old["token_policies"] == ["app", "default"] and old["policies"] == ["app", "default"]
    role_id = root.auth.approle.read_role_id("s")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("s")["data"]["secret_id"]
    auth = hvac.Client(url=vaultsim.addr).auth.approle.login(role_id=role_id,
                                                              secret_id=secret_id)["auth"]
    assert auth["policies"] == ["app", "default"]
    # Kubernetes roles.
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(kubernetes_host="https://10.0.0.1:443")
    # hvac's kubernetes helper sends JSON lists ("a, b" -> ["a", " b"]).
    root.auth.kubernetes.create_role("k", bound_service_account_names="app-sa, worker",
                                     bound_service_account_namespaces=["prod"],
                                     policies="app")
    k = root.auth.kubernetes.read_role("k")
    assert k["bound_service_account_names"] == ["app-sa", "worker"]
    assert k["bound_service_account_namespaces"] == ["prod"] and k["token_policies"] == ["app"]
    # The same fields as comma strings on the wire (the vault CLI's k=v form).
    root.adapter.post("/v1/auth/kubernetes/role/k2", json={
        "bound_service_account_names": "app-sa , worker", "token_policies": "app, default",
        "bound_service_account_namespaces": "prod,staging"})
    k2 = root.auth.kubernetes.read_role("k2")
    assert k2["bound_service_account_names"] == ["app-sa", "worker"]
    assert k2["bound_service_account_namespaces"] == ["prod", "staging"]
    assert k2["token_policies"] == ["app", "default"]
    auth = hvac.Client(url=vaultsim.addr).auth.kubernetes.login(
        "k2", fake_jwt("staging", "worker"))["auth"]
    assert auth["policies"] == ["app", "default"]
    # Database: allowed_roles is a comma slice, statements are string slices.
    root.sys.enable_secrets_engine("database")
    url = "postgresql://{{username}}:{{password}}@127.0.0.1:%d/app?sslmode=disable" % pg.port
    root.secrets.database.configure("pg", "postgresql-database-plugin", connection_url=url,
                                    username=pg.vault_user, password=pg.vault_password,
                                    allowed_roles="ro, rw")
    assert root.secrets.database.read_connection("pg")["data"]["allowed_roles"] == ["ro", "rw"]
    two = "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}'; " \
          "GRANT CONNECT ON DATABASE app TO \"{{name}}\";"
    rev = 'REVOKE CONNECT ON DATABASE app FROM "{{name}}"; DROP ROLE "{{name}}"'
    root.secrets.database.create_role("ro", "pg", two, revocation_statements=rev)
    ro = root.secrets.database.read_role("ro")["data"]
    assert ro["creation_statements"] == [two.strip()]  # one element, commas or not
    assert ro["revocation_statements"] == [rev]
    creds = root.secrets.database.generate_credentials("ro")
    assert role_exists(pg, creds["data"]["username"])
    root.sys.revoke_lease(creds["lease_id"])
    assert not role_exists(pg, creds["data"]["username"])
    root.secrets.database.configure("pg2", "postgresql-database-plugin", connection_url=url,
                                    username=pg.vault_user, password=pg.vault_password,
                                    allowed_roles=["ro"])
    assert root.secrets.database.read_connection("pg2")["data"]["allowed_roles"] == ["ro"]
    # auth/token/create decodes "policies" with mapstructure.WeakDecode: a
    # string is one policy name, not split.
    t = root.auth.token.create(policies="app,default", ttl="1m")["auth"]
    assert t["policies"] == ["app,default", "default"]
    t = root.auth.token.create(policies=["App", "default"], ttl="1m")["auth"]
    assert t["policies"] == ["app", "default"]


def test_lease_lookup_shape_and_errors(vaultsim, pg):
    vaultsim.setup_database(pg, default_ttl="2s", max_ttl="1h")
    c = vaultsim.client()
    creds = c.secrets.database.generate_credentials("app-rw")
    lk = c.sys.read_lease(creds["lease_id"])
    assert set(lk["data"]) == {"id", "issue_time", "expire_time", "last_renewal", "renewable",
                               "ttl"}
    assert lk["data"]["id"] == creds["lease_id"] and lk["data"]["renewable"] is True
    assert lk["data"]["last_renewal"] is None and 1 <= lk["data"]["ttl"] <= 2
    for bad in ("database/creds/app-rw/nope", "nothing"):
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            c.sys.read_lease(bad)
        assert e.value.errors == ["invalid lease"]
    st, obj = vaultsim.request("PUT", "sys/leases/lookup", {})
    assert st == 400 and obj == {"errors": ["lease_id must be specified"]}
    # Expired (and so revoked by Vault): "invalid lease".
    assert wait_until(lambda: not role_exists(pg, creds["data"]["username"]), 4)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        c.sys.read_lease(creds["lease_id"])
    assert e.value.errors == ["invalid lease"]
    # Revoked: the same.
    other = c.secrets.database.generate_credentials("app-rw")
    c.sys.renew_lease(other["lease_id"], increment=60)
    lk = c.sys.read_lease(other["lease_id"])["data"]
    assert lk["last_renewal"] and 55 <= lk["ttl"] <= 60
    c.sys.revoke_lease(other["lease_id"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.sys.read_lease(other["lease_id"])


def test_default_revocation_drops_role_but_not_its_sessions(vaultsim, pg):
    """With no revocation_statements the postgresql plugin's defaultDeleteUser
    runs (hashicorp/vault plugins/database/postgresql/postgresql.go): REVOKE
    ALL on tables in each schema with column grants + USAGE on it, then
    tables, sequences and USAGE in public, CONNECT on the database, each
    outside a transaction, then DROP ROLE IF EXISTS -- and no
    pg_terminate_backend. Postgres lets a connected role be dropped: the open
    session stays, loses what was revoked (42501), and no new login works."""
    pg.sql("DROP SCHEMA IF EXISTS rpt CASCADE")
    pg.sql("DROP TABLE IF EXISTS pub_t")
    pg.sql("CREATE SCHEMA rpt")
    pg.sql("CREATE TABLE rpt.t (id int, secret text)")
    pg.sql("CREATE TABLE pub_t (id int)")
    pg.sql("INSERT INTO pub_t VALUES (1)")
    try:
        vaultsim.setup_database(pg, creation=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            "VALID UNTIL '{{expiration}}';",
            'GRANT CONNECT ON DATABASE app TO "{{name}}"; '
            'GRANT USAGE ON SCHEMA rpt TO "{{name}}"; '
            'GRANT SELECT (id) ON rpt.t TO "{{name}}"; '
            'GRANT SELECT ON pub_t TO "{{name}}";'])
        c = vaultsim.client()
        assert "revocation_statements" not in c.secrets.database.read_role("app-rw")["data"] \
            or not c.secrets.database.read_role("app-rw")["data"]["revocation_statements"]
        creds = c.secrets.database.generate_credentials("app-rw")
        user, pw = creds["data"]["username"], creds["data"]["password"]
        conn = pg.connect(user=user, password=pw)
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert conn.execute("select id from rpt.t").fetchall() == []
        assert conn.execute("select id from pub_t").fetchall() == [(1,)]
        c.sys.revoke_lease(creds["lease_id"])
        assert not role_exists(pg, user)
        # The session is still there: Vault does not terminate it.
        assert pg.sql("select count(*) from pg_stat_activity where pid = %s", (pid,))[0][0] == 1
        assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select id from pub_t")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select id from rpt.t")
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            pg.connect(user=user, password=pw).close()
        with pytest.raises(hvac.exceptions.InvalidRequest):
            c.sys.read_lease(creds["lease_id"])

        # A statement that cannot be done keeps the role and the lease, as in
        # Vault ("could not perform all revocation statements" / a DROP ROLE
        # that fails): here the role owns a table, so DROP ROLE fails.
        creds = c.secrets.database.generate_credentials("app-rw")
        user = creds["data"]["username"]
        pg.sql('CREATE TABLE owned_t (id int)')
        pg.sql(f'ALTER TABLE owned_t OWNER TO "{user}"')
        with pytest.raises(hvac.exceptions.InternalServerError):
            c.sys.revoke_lease(creds["lease_id"])
        assert role_exists(pg, user)
        assert c.sys.read_lease(creds["lease_id"])["data"]["id"] == creds["lease_id"]
        pg.sql("DROP TABLE owned_t")  # the retried revocation then succeeds
        assert wait_until(lambda: not role_exists(pg, user), 4)
    finally:
        pg.sql("DROP TABLE IF EXISTS owned_t")
        pg.sql("DROP SCHEMA IF EXISTS rpt CASCADE")
        pg.sql("DROP TABLE IF EXISTS pub_t")


def jwt_mount(vaultsim, key, **role):
    root = vaultsim.client()
    root.sys.enable_auth_method("jwt")
    root.auth.jwt.configure(jwt_validation_pubkeys=[key.public_pem],
                            bound_issuer="https://idp.example")
    fields = dict(role_type="jwt", user_claim="sub", bound_audiences=["vault"],
                  token_policies=["default"], token_ttl="1h")
    fields.update(role)
    root.auth.jwt.create_role("app", allowed_redirect_uris=None, **fields)
    return root


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_jwt_login(vaultsim, alg):
    from jwtkeys import KeyPair
    key = KeyPair(alg)
    jwt_mount(vaultsim, key, bound_subject="system:serviceaccount:prod:app",
              bound_claims={"team": ["db", "ops"]})
    login = hvac.Client(url=vaultsim.addr).auth.jwt.jwt_login("app", key.sign(team="db"))
    assert login["auth"]["lease_duration"] == 3600
    assert "default" in login["auth"]["policies"]
    assert login["auth"]["metadata"]["role"] == "app"
    # Within Vault's leeway (60 s skew + 150 s) an expired token still works.
    hvac.Client(url=vaultsim.addr).auth.jwt.jwt_login(
        "app", key.sign(team="db", now=time.time() - 300, ttl=200))

    def rejected(token, text, role="app"):
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            hvac.Client(url=vaultsim.addr).auth.jwt.jwt_login(role, token)
        assert text in str(e.value), str(e.value)

    rejected(KeyPair(alg).sign(team="db"), "no known key successfully validated")
    rejected(key.sign(team="db", now=time.time() - 600, ttl=300), "token is expired")
    rejected(key.sign(team="db", aud="other"), "audience claim does not match")
    rejected(key.sign(team="db", iss="https://evil.example"), "invalid issuer")
    rejected(key.sign(team="db", sub="system:serviceaccount:dev:app"),
             "sub claim does not match bound subject")
    rejected(key.sign(team="web"), "claim \"team\" does not match")
    rejected(key.sign(team="db", nbf=int(time.time() + 600)), "not yet valid")
    rejected(key.sign(team="db"), "role \"nope\" could not be found", role="nope")
    rejected("", "missing token")
    # The role reads back with its lists (comma strings accepted too).
    root = vaultsim.client()
    root.write("auth/jwt/role/csv", role_type="jwt", user_claim="sub",
               bound_audiences="a, vault", token_policies="default,p2")
    role = root.read("auth/jwt/role/csv")["data"]
    assert role["bound_audiences"] == ["a", "vault"]
    assert role["token_policies"] == ["default", "p2"]
    hvac.Client(url=vaultsim.addr).auth.jwt.jwt_login("csv", key.sign())


def test_jwt_config_refused(vaultsim):
    root = vaultsim.client()
    root.sys.enable_auth_method("jwt")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not supported"):
        root.auth.jwt.configure(jwks_url="https://idp.example/keys")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="could not load configuration"):
        hvac.Client(url=vaultsim.addr).auth.jwt.jwt_login("app", "x.y.z")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="bound constraint"):
        root.write("auth/jwt/role/loose", role_type="jwt", user_claim="sub")


def test_cert_login(pg, tmp_path):
    from harness import VaultSim
    from tlscerts import CA
    server_ca = CA(tmp_path, "server")
    server_cert, server_key = server_ca.issue("127.0.0.1", san="IP:127.0.0.1")
    clients = CA(tmp_path, "clients")
    good = clients.issue("pglease.example", client=True)
    other = clients.issue("intruder.example", client=True)
    stranger = CA(tmp_path, "stranger").issue("pglease.example", client=True)
    sim = VaultSim(tls=(server_cert, server_key, server_ca.cert))
    try:
        ca = str(server_ca.cert)
        root = hvac.Client(url=sim.addr, token=sim.root_token, verify=ca)
        root.sys.enable_auth_method("cert")
        root.write("auth/cert/certs/pglease", certificate=clients.cert.read_text(),
                   allowed_common_names="pglease.example, *.internal",
                   token_policies="default", token_ttl="1h")
        assert root.read("auth/cert/certs/pglease")["data"]["allowed_common_names"] == \
            ["pglease.example", "*.internal"]

        def login(cert, name=""):
            c = hvac.Client(url=sim.addr, verify=ca, cert=tuple(map(str, cert)))
            return c.write("auth/cert/login", **({"name": name} if name else {}))

        auth = login(good)["auth"]
        assert auth["lease_duration"] == 3600
        assert auth["metadata"]["cert_name"] == "pglease"
        assert auth["metadata"]["common_name"] == "pglease.example"
        assert login(good, "pglease")["auth"]["client_token"]
        # Vault's answers: the TLS handshake takes any certificate; the
        # login checks it.
        for cert, name in ((stranger, ""), (other, ""), (good, "nope")):
            with pytest.raises(hvac.exceptions.InvalidRequest,
                               match="invalid certificate or no client certificate supplied"):
                login(cert, name)
        with pytest.raises(hvac.exceptions.InvalidRequest,
                           match="client certificate must be supplied"):
            hvac.Client(url=sim.addr, verify=ca).write("auth/cert/login")
    finally:
        sim.stop()
