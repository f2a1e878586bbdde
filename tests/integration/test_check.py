"""`pglease --check` and start-up refuse configurations whose files cannot
be read (secret files, userlist, TLS key) and warn about secret files their
group or others may read."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pglease_proc import PgLease, build_dir

PGLEASE = build_dir() / "proxy" / "pglease"


def run(*args, user=None, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PGLEASE_", "VAULT_"))}
    cmd = [str(PGLEASE), *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def d():
    """A directory every user may enter (pytest's tmp_path is root-only)."""
    p = Path(tempfile.mkdtemp(prefix="pglease-check-"))
    p.chmod(0o755)
    yield p
    shutil.rmtree(p, ignore_errors=True)


def secret(path, text="s3cr3t\n", mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def write_conf(d, vault="", pglease="", auth_mode=0o600):
    users = secret(d / "userlist.txt", '"alice" "secret"\n', auth_mode)
    conf = d / "pglease.ini"
    conf.write_text(f"[pglease]\nauth_file = {users}\nlisten_addr = 127.0.0.1\nlisten_port = 1\n"
                    f"unix_socket_dir =\nhttp_listen =\n{pglease}"
                    "\n[databases]\n"
                    "app = host=127.0.0.1 port=5432 dbname=app creds=database/creds/app\n"
                    f"\n[vault]\naddr = http://127.0.0.1:1\n{vault}")
    conf.chmod(0o644)
    return conf


def approle(d):
    return (f"auth_method = approle\nrole_id_file = {d / 'role-id'}\n"
            f"secret_id_file = {d / 'secret-id'}\n")


def test_valid_private_files_pass_without_warning(d):
    secret(d / "role-id")
    secret(d / "secret-id")
    r = run("--check", "-c", str(write_conf(d, approle(d))))
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr


@pytest.mark.parametrize("key,vault", [
    ("secret_id_file", "approle"),
    ("role_id_file", "approle"),
    ("token_file", "token"),
    ("jwt_file", "kubernetes"),
    ("jwt_file", "jwt"),
])
def test_missing_vault_file_fails_check_and_start(d, key, vault):
    if vault == "approle":
        section = approle(d)
        for k in ("role_id_file", "secret_id_file"):
            if k != key:
                secret(d / k.replace("_file", "").replace("_", "-"))
    elif vault == "token":
        section = f"auth_method = token\ntoken_file = {d / 'token'}\n"
    elif vault == "jwt":
        section = f"auth_method = jwt\njwt_role = app\njwt_file = {d / 'jwt'}\n"
    else:
        section = (f"auth_method = kubernetes\nkubernetes_role = app\n"
                   f"jwt_file = {d / 'jwt'}\n")
    conf = write_conf(d, section)
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{conf}: [vault] {key}: cannot read" in r.stderr
    assert "No such file" in r.stderr
    # Start-up refuses with the same message instead of reporting ready.
    r = run("-c", str(conf), timeout=15)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"[vault] {key}: cannot read" in r.stderr


def test_vault_client_key_checked(d):
    """auth_method = cert: the key is a secret (warned about when others may
    read it) and must be there; the certificate is public."""
    cert = secret(d / "vault-client.pem", "not parsed by --check", 0o644)
    key = secret(d / "vault-client.key", mode=0o640)
    section = (f"auth_method = cert\nclient_cert_file = {cert}\n"
               f"client_key_file = {key}\n")
    conf = write_conf(d, section)
    conf.write_text(conf.read_text().replace("addr = http://127.0.0.1:1",
                                             "addr = https://127.0.0.1:1"))
    r = run("--check", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert "[vault] client_key_file" in r.stderr and "group-readable (mode 0640)" in r.stderr
    assert "client_cert_file" not in r.stderr
    key.unlink()
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{conf}: [vault] client_key_file: cannot read" in r.stderr


def test_missing_tls_key_fails(d):
    cert = secret(d / "server.crt", "not checked here", 0o644)
    conf = write_conf(d, approle(d), pglease=(f"client_tls_sslmode = require\n"
                                              f"client_tls_cert_file = {cert}\n"
                                              f"client_tls_key_file = {d / 'server.key'}\n"))
    secret(d / "role-id")
    secret(d / "secret-id")
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1
    assert "client_tls_key_file" in r.stderr and "server.key" in r.stderr


def test_unreadable_secret_file_fails_for_a_non_root_user(d):
    """Root reads any file; the user pglease runs as may not."""
    secret(d / "role-id", mode=0o644)
    secret(d / "secret-id", mode=0o600)  # root's, unreadable by postgres
    users = d / "userlist.txt"
    conf = write_conf(d, approle(d))
    users.chmod(0o644)
    r = run("--check", "-c", str(conf), user="postgres")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{conf}: [vault] secret_id_file: cannot read" in r.stderr
    assert "Permission denied" in r.stderr
    # Root can read it: only warnings (world-readable role_id and userlist).
    r = run("--check", "-c", str(conf))
    assert r.returncode == 0, r.stderr


def test_unreadable_userlist_fails_for_a_non_root_user(d):
    secret(d / "role-id", mode=0o644)
    secret(d / "secret-id", mode=0o644)
    conf = write_conf(d, approle(d))  # userlist 0600, root's
    r = run("--check", "-c", str(conf), user="postgres")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "auth_file" in r.stderr and "Permission denied" in r.stderr


@pytest.mark.parametrize("mode,what", [(0o640, "group"), (0o604, "world"),
                                       (0o644, "group- and world")])
def test_loose_secret_file_warns_once(d, mode, what):
    secret(d / "role-id")
    secret(d / "secret-id", mode=mode)
    r = run("--check", "-c", str(write_conf(d, approle(d))))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(lines) == 1, r.stderr
    assert "[vault] secret_id_file" in lines[0] and f"{what}-readable" in lines[0]
    assert oct(mode)[2:] in lines[0]


def test_loose_userlist_warns(d):
    secret(d / "role-id")
    secret(d / "secret-id")
    r = run("--check", "-c", str(write_conf(d, approle(d), auth_mode=0o644)))
    assert r.returncode == 0, r.stderr
    assert "[pglease] auth_file" in r.stderr and "world-readable" in r.stderr


def test_loose_userlist_warns_at_start(pg):
    upstream = pg.owned_database("check_owner", "check-owner-pw", "check_owned")
    p = PgLease({"app": upstream})
    (p.dir / "userlist.txt").chmod(0o644)
    p.start()
    try:
        assert "[pglease] auth_file" in p.log() and "world-readable" in p.log()
    finally:
        assert p.stop() == 0
    p = PgLease({"app": upstream})
    (p.dir / "userlist.txt").chmod(0o600)
    p.start()
    try:
        assert "auth_file" not in p.log()
    finally:
        assert p.stop() == 0
