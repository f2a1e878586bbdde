"""The HTTP endpoint on http_listen: /metrics parsed by prometheus_client's
text parser (Debian's python3-prometheus-client) with counters that move
with pgbench load, /healthz, /readyz through a Vault outage that outlives
the credential, and the bounds that keep scrapers from hurting the proxy."""
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port
from pglease_proc import PgLease
from test_vault_rotation import DB, start_proxy

UPSTREAM_USER = "pgl_met"
UPSTREAM_PASSWORD = "upstream-pw-met"


@pytest.fixture(scope="module")
def upstream(pg):
    conninfo = pg.owned_database(UPSTREAM_USER, UPSTREAM_PASSWORD, "metdb")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", conninfo],
                   check=True, capture_output=True, timeout=120)
    return conninfo


@pytest.fixture
def proxy(upstream):
    port = free_port()
    p = PgLease({"app": upstream}, settings={"default_pool_size": 4,
                                             "http_listen": f"127.0.0.1:{port}"})
    p.http = port
    p.start()
    yield p
    rc = p.stop()
    assert rc == 0, p.log()
    assert "bug:" not in p.log() and "handles open" not in p.log()


def get(p, path, timeout=10):
    """(status, content type, body) of GET path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p.http}{path}", timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def scrape(p):
    """{(sample name, frozenset of labels): value} and the family types."""
    status, ctype, body = get(p, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    samples, types = {}, {}
    for fam in text_string_to_metric_families(body):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def val(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_metrics_parse_and_counters_move_with_pgbench(proxy):
    before, types = scrape(proxy)
    assert val(before, "pglease_build_info", version=val_version(before)) == 1
    assert types["pglease_client_wait_seconds"] == "histogram"
    assert types["pglease_transactions"] == "counter"
    assert val(before, "pglease_ready") == 1
    r = subprocess.run(["pgbench", "-n", "-S", "-c", "4", "-j", "2", "-t", "50", proxy.dsn()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        for sql, err in [("select 1/0", psycopg.errors.DivisionByZero),
                         ("select * from no_such_table", psycopg.errors.UndefinedTable)]:
            with pytest.raises(err):
                c.execute(sql)
        c.execute("begin")
        c.execute("select 1")
        mid, _ = scrape(proxy)  # one client active with its server, in a transaction
    after, _ = scrape(proxy)
    db = {"database": "app"}

    def delta(name, **labels):
        # Error classes appear once counted: absent before means 0.
        key = (name, frozenset({**db, **labels}.items()))
        return after[key] - before.get(key, 0)
    assert delta("pglease_transactions_total") >= 200
    assert delta("pglease_queries_total") >= 200
    assert delta("pglease_client_received_bytes_total") > 0
    assert delta("pglease_client_sent_bytes_total") > 0
    assert delta("pglease_query_seconds_total") > 0
    assert delta("pglease_client_wait_seconds_count") >= 200
    assert val(after, "pglease_client_wait_seconds_bucket", **db, le="+Inf") == \
        val(after, "pglease_client_wait_seconds_count", **db)
    assert delta("pglease_server_errors_total", **{"class": "22"}) == 1
    assert delta("pglease_server_errors_total", **{"class": "42"}) == 1
    assert val(mid, "pglease_clients", **db, state="active") == 1
    assert val(mid, "pglease_servers", **db, state="active") == 1
    assert val(after, "pglease_servers", **db, state="active") == 0
    assert val(after, "pglease_servers", **db, state="idle") >= 1
    assert val(after, "pglease_generations", **db, state="active") == 1
    assert val(after, "pglease_reloads_total", result="ok") == 0
    with psycopg.connect(proxy.dsn(user="admin", dbname="pglease"), autocommit=True) as adm:
        cur = adm.execute("SHOW STATS_TOTALS")
        names = [d.name for d in cur.description]
        (row,) = [dict(zip(names, r)) for r in cur.fetchall() if r[0] == "app"]
    # The console and /metrics read the same counters.
    assert row["xact_count"] >= val(after, "pglease_transactions_total", **db)


def val_version(samples):
    (version,) = [dict(k[1])["version"] for k in samples if k[0] == "pglease_build_info"]
    return version


def test_healthz_readyz_and_unknown_paths(proxy):
    assert get(proxy, "/healthz")[:1] == (200,)
    status, _, body = get(proxy, "/readyz")
    assert (status, body) == (200, "ready\n")
    assert get(proxy, "/nope")[0] == 404
    assert get(proxy, "/metricsx")[0] == 404
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.http}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_silent_and_oversized_scrapers_do_not_hold_the_proxy(proxy):
    """Silent connections beyond the cap are refused, a header far over
    h2o's limit is refused, and through all of it clients are served."""
    silent = [socket.create_connection(("127.0.0.1", proxy.http)) for _ in range(40)]
    try:
        with psycopg.connect(proxy.dsn(), autocommit=True) as c:
            assert c.execute("select 42").fetchone()[0] == 42
        refused = 0
        for s in silent:
            s.settimeout(10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in silent:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            refused += data == b""
        assert refused >= 40 - 32  # beyond the cap: closed unanswered
    finally:
        for s in silent:
            s.close()
    big = socket.create_connection(("127.0.0.1", proxy.http))
    big.settimeout(10)
    try:
        big.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            while sent < 2 * 1024 * 1024:
                big.sendall(b"X-Filler: " + b"a" * 4000 + b"\r\n")
                sent += 4012
        except OSError:
            pass  # refused mid-way: what we want
        try:
            answer = big.recv(4096)
        except OSError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
    finally:
        big.close()
    deadline = time.monotonic() + 20
    while get(proxy, "/healthz")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        assert c.execute("select 43").fetchone()[0] == 43


# -- readiness through a Vault outage ---------------------------------------------

def wait_status(p, path, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = get(p, path)
        if status == want:
            return body
        assert time.monotonic() < deadline, (status, body, p.log()[-3000:])
        time.sleep(0.2)


def test_readyz_503_while_vault_is_down_and_the_credential_expired(pg, vault, vdb, tmp_path):
    port = free_port()
    p = start_proxy(pg, vault, tmp_path, "6s", "60s",
                    {"default_pool_size": 2, "http_listen": f"127.0.0.1:{port}"})
    p.http = port
    try:
        wait_status(p, "/readyz", 200, 20)
        samples, _ = scrape(p)
        assert 0 < val(samples, "pglease_lease_ttl_seconds", database="app") <= 6
        assert val(samples, "pglease_lease_expiry_timestamp_seconds", database="app") > time.time()
        assert val(samples, "pglease_credentials_fetched_total", database="app") >= 1
        vault.sigstop()
        try:
            body = wait_status(p, "/readyz", 503, 30)
            assert body.startswith("database app: no valid credential") and body.count("\n") == 1
            assert get(p, "/healthz")[0] == 200  # the process itself is fine
            samples, _ = scrape(p)
            assert val(samples, "pglease_ready") == 0
            assert val(samples, "pglease_generations", database="app", state="active") == 0
        finally:
            vault.sigcont()
        wait_status(p, "/readyz", 200, 40)
        samples, _ = scrape(p)
        assert val(samples, "pglease_ready") == 1
        assert val(samples, "pglease_credentials_fetched_total", database="app") >= 2
    finally:
        vault.sigcont()
        assert p.stop() == 0, p.log()
