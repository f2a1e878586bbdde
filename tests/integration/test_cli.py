"""The pglease command line: flags, exit codes and config errors that name
file, line and key."""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PGLEASE_BUILD_DIR", REPO / "build"))
PGLEASE = BUILD / "proxy" / "pglease"


def run(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PGLEASE_", "VAULT_"))}
    e.update(env or {})
    return subprocess.run([str(PGLEASE), *args], capture_output=True, text=True, timeout=30,
                          env=e, stdin=subprocess.DEVNULL)


@pytest.fixture
def userlist(tmp_path):
    p = tmp_path / "userlist.txt"
    p.write_text('"alice" "secret"\n')
    return p


def write_conf(tmp_path, userlist, extra_pglease="", extra=""):
    p = tmp_path / "pglease.ini"
    p.write_text(
        "[pglease]\n"
        f"auth_file = {userlist}\n"
        f"{extra_pglease}"
        "\n[databases]\n"
        "app = host=127.0.0.1 port=5432 dbname=app user=u password=p\n"
        f"{extra}")
    return p


def test_binary_exists():
    assert PGLEASE.is_file(), f"build pglease first: {PGLEASE} missing"


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("pglease ")
    r = run("--help")
    assert r.returncode == 0
    assert "--config" in r.stdout and "--check" in r.stdout


def test_wrong_flag_exits_2_with_usage():
    r = run("--no-such-flag")
    assert r.returncode == 2
    assert "usage" in r.stderr.lower()


def test_check_valid_config(tmp_path, userlist):
    conf = write_conf(tmp_path, userlist)
    r = run("--check", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    r = run("--check", "--config", str(conf))
    assert r.returncode == 0, r.stderr


def test_check_unknown_key_names_file_line_key(tmp_path, userlist):
    conf = write_conf(tmp_path, userlist, extra_pglease="listen_prot = 6432\n")
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1
    assert f"{conf}:3:" in r.stderr
    assert "listen_prot" in r.stderr


@pytest.mark.parametrize("line,key", [
    ("listen_port = 70000", "listen_port"),
    ("pool_mode = statement", "pool_mode"),
    ("auth_type = kerberos", "auth_type"),
    ("query_wait_timeout = soon", "query_wait_timeout"),
])
def test_check_bad_value(tmp_path, userlist, line, key):
    conf = write_conf(tmp_path, userlist, extra_pglease=line + "\n")
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1
    assert f"{conf}:3:" in r.stderr and key in r.stderr


def test_check_unknown_section_and_duplicate_db(tmp_path, userlist):
    conf = write_conf(tmp_path, userlist, extra="\n[pgbouncer]\nx = 1\n")
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1 and "pgbouncer" in r.stderr and f"{conf}:" in r.stderr
    conf = write_conf(tmp_path, userlist, extra="app = host=127.0.0.1 dbname=other user=u password=p\n")
    r = run("--check", "-c", str(conf))
    assert r.returncode == 1 and "app" in r.stderr and f"{conf}:6:" in r.stderr and "duplicate" in r.stderr


def test_check_missing_file(tmp_path):
    r = run("--check", "-c", str(tmp_path / "nope.ini"))
    assert r.returncode == 1
    assert "nope.ini" in r.stderr


def test_env_override_is_validated(tmp_path, userlist):
    conf = write_conf(tmp_path, userlist)
    r = run("--check", "-c", str(conf), env={"PGLEASE_PGLEASE_LISTEN_PORT": "0"})
    assert r.returncode == 1
    assert "PGLEASE_PGLEASE_LISTEN_PORT" in r.stderr
