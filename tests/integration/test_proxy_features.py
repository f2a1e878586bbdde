"""Client TLS, every local auth_type, COPY in both directions, large rows and
session-mode reset, through pglease against a real Postgres."""
import subprocess
import threading

import psycopg
import pytest

from pglease_proc import PgLease
from pgraw import login_sqlstate

USER, PASSWORD = "pgl_feat", "feat-pw-2"


@pytest.fixture(scope="module")
def upstream(pg):
    return pg.owned_database(USER, PASSWORD, "feat")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate for
    CN=alice; the server chain file carries the CA too (cert auth trusts it)."""
    d = tmp_path_factory.mktemp("certs")

    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
         "-days", "2", "-subj", "/CN=pglease test CA")
    for name, cn in (("server", "127.0.0.1"), ("client", "alice"), ("bob", "bob")):
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", f"/CN={cn}")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2")
    (d / "chain.crt").write_text((d / "server.crt").read_text() + (d / "ca.crt").read_text())
    for f in d.glob("*.key"):
        f.chmod(0o600)
    return d


def start(upstream, **settings):
    return PgLease({"app": upstream}, settings=settings).start()


def test_tls_with_channel_binding(upstream, certs):
    p = start(upstream, client_tls_sslmode="require",
              client_tls_cert_file=certs / "chain.crt",
              client_tls_key_file=certs / "server.key")
    try:
        with psycopg.connect(p.dsn(sslmode="verify-ca", sslrootcert=certs / "ca.crt",
                                   channel_binding="require")) as c:
            assert c.execute("select 1").fetchone()[0] == 1
            assert c.pgconn.ssl_in_use
        # sslmode=require refuses clients without TLS.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(sslmode="disable"))
        assert "TLS" in p.log()
    finally:
        assert p.stop() == 0


def test_tls_allow_serves_both(upstream, certs):
    p = start(upstream, client_tls_sslmode="allow",
              client_tls_cert_file=certs / "chain.crt",
              client_tls_key_file=certs / "server.key")
    try:
        for mode in ("disable", "require"):
            with psycopg.connect(p.dsn(sslmode=mode)) as c:
                assert c.execute("select 1").fetchone()[0] == 1
                assert c.pgconn.ssl_in_use == (mode == "require")
    finally:
        assert p.stop() == 0


def test_auth_md5(upstream):
    p = start(upstream, auth_type="md5")
    try:
        assert login_sqlstate(p.port, "alice", "app", "secret") is None
        assert login_sqlstate(p.port, "alice", "app", "nope") == "28P01"
        assert login_sqlstate(p.port, "nobody", "app", "secret") == "28P01"
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        assert p.stop() == 0


def test_auth_trust(upstream):
    p = start(upstream, auth_type="trust")
    try:
        with psycopg.connect(p.dsn(password="anything")) as c:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        assert p.stop() == 0


def test_auth_cert(upstream, certs):
    p = start(upstream, auth_type="cert", client_tls_sslmode="require",
              client_tls_cert_file=certs / "chain.crt",
              client_tls_key_file=certs / "server.key")
    try:
        ok = p.dsn(sslmode="require", sslcert=certs / "client.crt", sslkey=certs / "client.key")
        with psycopg.connect(ok) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        # A valid certificate for another name does not log in as alice.
        wrong = p.dsn(sslmode="require", sslcert=certs / "bob.crt", sslkey=certs / "bob.key")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(wrong)
        # No certificate at all: refused.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(sslmode="require"))
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_copy_both_ways_and_large_rows(upstream, mode):
    p = start(upstream, pool_mode=mode)
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            c.execute("drop table if exists big; create table big(id int, payload text)")
            rows = 20000
            with c.cursor().copy("copy big from stdin") as cp:
                for i in range(rows):
                    cp.write_row((i, "y" * 500))
            assert c.execute("select count(*), sum(length(payload)) from big").fetchone() == \
                (rows, rows * 500)
            out = bytearray()
            with c.cursor().copy("copy big to stdout") as cp:
                for chunk in cp:
                    out += chunk
            assert out.count(b"\n") == rows
            # One row far larger than any buffer pglease keeps.
            size = 20 * 1024 * 1024
            got = c.execute("select repeat('z', %s)", (size,)).fetchone()[0]
            assert len(got) == size
            sent = c.execute("select length(%s::text)", ("q" * size,)).fetchone()[0]
            assert sent == size
            c.execute("drop table big")
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_pipeline_of_200_statements_returns_in_order(upstream, mode):
    """Several Syncs in flight: the server stays with the client until the
    last ReadyForQuery, while another client competes for the only server."""
    # One loop: with several, a pool of one server is shared between loops
    # by moving it (operations.md, "Several cores"), which a client that
    # pipelines without pause starves the other of.
    p = start(upstream, pool_mode=mode, default_pool_size=1, workers=1)
    stop = threading.Event()
    other_results = []

    def other_client():
        try:
            with psycopg.connect(p.dsn(), autocommit=True) as o:
                while not stop.is_set():
                    other_results.append(o.execute("select 'other'").fetchone()[0])
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            other_results.append(repr(e))

    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            t = threading.Thread(target=other_client) if mode == "transaction" else None
            if t:
                t.start()
            for _ in range(3):
                with c.pipeline():
                    curs = [c.execute("select %s::int", (i,)) for i in range(200)]
                assert [cur.fetchone()[0] for cur in curs] == list(range(200))
            # An error inside a pipeline skips to the next Sync, as in Postgres.
            with pytest.raises(psycopg.errors.DivisionByZero):
                with c.pipeline():
                    c.execute("select 1")
                    c.execute("select 1/0")
                    c.execute("select 2")
            assert c.execute("select 3").fetchone()[0] == 3
            stop.set()
            if t:
                t.join(10)
                assert other_results and set(other_results) == {"other"}
    finally:
        stop.set()
        assert p.stop() == 0


def test_session_mode_resets_between_clients(upstream):
    # One loop: the second client must get the very server the first left.
    p = start(upstream, pool_mode="session", default_pool_size=1, workers=1)
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as a:
            pid = a.execute("select pg_backend_pid()").fetchone()[0]
            a.execute("set work_mem = '77MB'")
            a.execute("create temp table scratch(x int)")
            a.execute("prepare st as select 1")
        with psycopg.connect(p.dsn(), autocommit=True) as b:
            assert b.execute("select pg_backend_pid()").fetchone()[0] == pid
            assert b.execute("show work_mem").fetchone()[0] != "77MB"
            assert b.execute("select count(*) from pg_prepared_statements").fetchone()[0] == 0
            assert b.execute(
                "select count(*) from pg_class where relname = 'scratch'").fetchone()[0] == 0
    finally:
        assert p.stop() == 0


def raw_startup_reply(port, packet, read=4096):
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(packet)
    data = b""
    try:
        while len(data) < read:
            chunk = s.recv(read)
            if not chunk:
                break
            data += chunk
            if data[:1] in (b"N", b"S") and len(data) == 1:
                break
    finally:
        s.close()
    return data


def test_protocol_edge_cases(upstream):
    import struct
    p = start(upstream, max_packet_size="64kB")
    try:
        # GSSENCRequest and SSLRequest without TLS configured: 'N'.
        assert raw_startup_reply(p.port, struct.pack("!II", 8, 80877104)) == b"N"
        assert raw_startup_reply(p.port, struct.pack("!II", 8, 80877103)) == b"N"
        # Protocol 2 and a garbage length: clean ErrorResponses.
        reply = raw_startup_reply(p.port, struct.pack("!II", 9, 2 << 16) + b"\0")
        assert reply[:1] == b"E" and b"C0A000" in reply
        reply = raw_startup_reply(p.port, struct.pack("!I", 3) + b"xxxx")
        assert reply[:1] == b"E" and b"C08P01" in reply
        # A startup packet longer than Postgres allows is refused at its
        # length word (sent alone: unread bytes would reset the socket)...
        reply = raw_startup_reply(p.port, struct.pack("!I", 70004))
        assert reply[:1] == b"E" and b"C08P01" in reply
        # ...while a forwarded message above it streams through (Postgres's
        # own limits apply), others unharmed.
        from pgraw import connect, query_value
        other = psycopg.connect(p.dsn(), autocommit=True)
        s = connect(p.port, "alice", "app", "secret")
        assert query_value(s, "select length('" + "x" * 70000 + "')") == "70000"
        s.close()
        assert other.execute("select 1").fetchone()[0] == 1
        other.close()
    finally:
        assert p.stop() == 0


def test_listen_ipv6_and_unix_socket(upstream):
    import socket
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    p = PgLease({"app": upstream}, settings={"listen_addr": "127.0.0.1,::1"}).start()
    try:
        with psycopg.connect(p.dsn(host="::1")) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        with psycopg.connect(p.dsn(host=str(p.dir))) as c:
            assert c.execute("select 2").fetchone()[0] == 2
    finally:
        assert p.stop() == 0


def test_libpq_environment_does_not_leak_upstream(upstream, tmp_path):
    """PG* variables in pglease's environment must not change upstream logins."""
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:*:not-the-password\n")
    passfile.chmod(0o600)
    p = PgLease({"app": upstream})
    p.start(env={"PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "1", "PGOPTIONS": "-c x=y",
                 "PGPASSFILE": str(passfile), "PGAPPNAME": "leaked"})
    try:
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        assert "ignoring 5 PG* environment variable(s)" in p.log()
    finally:
        assert p.stop() == 0
