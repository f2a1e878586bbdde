"""systemd's notify protocol (Type=notify): pglease sends READY=1 when it
logs its "ready" line (at start without Vault, once every database has a
credential with Vault) and STOPPING=1 when SIGTERM starts the drain, to the
unix datagram socket named by NOTIFY_SOCKET. Here the test owns that socket,
as systemd would."""
import signal
import socket
import subprocess

import pytest

from pglease_proc import PgLease

UPSTREAM_USER = "pgl_notify"
UPSTREAM_PASSWORD = "notify-pw-1"


@pytest.fixture(scope="module")
def upstream(pg):
    return pg.owned_database(UPSTREAM_USER, UPSTREAM_PASSWORD, "notified")


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(30)  # a bound on a hang, not a measurement
    yield s, str(path)
    s.close()


def fields(datagram):
    """sd_notify's "KEY=VALUE\\n..." as a dict."""
    return dict(line.split("=", 1) for line in datagram.decode().splitlines() if "=" in line)


def queued(sock):
    """The datagrams already waiting, without blocking."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(30)
    return out


def test_ready_then_stopping_on_sigterm(upstream, notify_socket):
    sock, path = notify_socket
    p = PgLease({"app": upstream})
    p.start(env={"NOTIFY_SOCKET": path})
    try:
        ready = fields(sock.recv(4096))
        assert ready.get("READY") == "1", ready
        # Sent when the ready line is written, not before.
        assert " ready: 1 database(s)" in p.log()
        # It serves once it said so.
        r = subprocess.run(["psql", "-XAtq", "-c", "select 1", p.dsn()], capture_output=True,
                           text=True, timeout=30)
        assert r.stdout.strip() == "1", r.stderr
        assert queued(sock) == []  # nothing more while it runs

        p.signal(signal.SIGTERM)
        stopping = fields(sock.recv(4096))
        assert stopping.get("STOPPING") == "1", stopping
        assert "READY" not in stopping
        assert p.proc.wait(30) == 0, p.log()
        assert "graceful shutdown" in p.log()
        assert queued(sock) == []  # STOPPING once, nothing after
    finally:
        p.stop()


def test_ready_waits_for_vault_credentials(pg, vault, notify_socket, tmp_path):
    """With Vault, READY=1 only once every database has a credential: not
    while Vault is sealed, at once when it comes back."""
    sock, path = notify_socket
    vault.setup_database(pg, pg.vault_user, pg.vault_password, dbname=pg.dbname)
    token = tmp_path / "token"
    token.write_text(vault.root_token + "\n")
    token.chmod(0o600)
    section = (f"\n[vault]\naddr = {vault.addr}\nauth_method = token\n"
               f"token_file = {token}\n")
    p = PgLease({"app": f"host=127.0.0.1 port={pg.port} dbname={pg.dbname} "
                        "creds=database/creds/app-rw"}, extra_sections=section)
    vault.seal()
    p.start(env={"NOTIFY_SOCKET": path})
    try:
        # Its "not ready" line comes 2 s in; READY would have been queued by then.
        sock_wait_log(p, "not ready: no upstream credential yet")
        assert "started, waiting for credentials" in p.log()
        assert queued(sock) == []
        vault.unseal()
        ready = fields(sock.recv(4096))
        assert ready.get("READY") == "1", ready
        assert "pglease ready: every database has an upstream credential" in p.log()
        p.signal(signal.SIGTERM)
        assert fields(sock.recv(4096)).get("STOPPING") == "1"
        assert p.proc.wait(30) == 0, p.log()
    finally:
        p.stop()


def test_unreachable_notify_socket_is_a_warning(upstream, tmp_path):
    p = PgLease({"app": upstream})
    p.start(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    try:
        r = subprocess.run(["psql", "-XAtq", "-c", "select 1", p.dsn()], capture_output=True,
                           text=True, timeout=30)
        assert r.stdout.strip() == "1", r.stderr
    finally:
        rc = p.stop()
    assert rc == 0, p.log()
    assert p.log().count("cannot notify the service manager (NOTIFY_SOCKET)") == 1, p.log()


def sock_wait_log(p, text, timeout=30):
    """Waits (bounded) for a line in pglease's log."""
    import time
    deadline = time.monotonic() + timeout
    while text not in p.log():
        assert p.proc.poll() is None, p.log()
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.1)


def test_reload_sends_reloading_then_ready(upstream, notify_socket):
    """SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 once the reload
    is applied; the same pair when the file is broken and the old
    configuration stays (systemd must not wait for a READY that never
    comes)."""
    import time
    sock, path = notify_socket
    p = PgLease({"app": upstream})
    p.start(env={"NOTIFY_SOCKET": path})
    try:
        assert fields(sock.recv(4096)).get("READY") == "1"
        for broken in (False, True):
            if broken:
                p.config.write_text(p.config.read_text() + "\n[pglease]\nlisten_port = 0\n")
            before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            p.signal(signal.SIGHUP)
            reloading = fields(sock.recv(4096))
            assert reloading.get("RELOADING") == "1", reloading
            assert before_us <= int(reloading["MONOTONIC_USEC"]) \
                <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert fields(sock.recv(4096)).get("READY") == "1"
        assert "failed, the running configuration stays" in p.log()
        r = subprocess.run(["psql", "-XAtq", "-c", "select 1", p.dsn()], capture_output=True,
                           text=True, timeout=30)
        assert r.stdout.strip() == "1", r.stderr
    finally:
        assert p.stop() == 0, p.log()
