"""Secrets Postgres itself stored (password_encryption = scram-sha-256) verify
with pglease's SCRAM code, and wrong passwords do not."""
import subprocess

import pytest

from pglease_proc import build_dir

PASSWORDS = ["pencil", "correct horse battery staple", "p@ss'w\"ord;--", "x" * 100,
             "ünïcödé-NFC"]


@pytest.fixture(scope="module")
def secrets(pg):
    out = {}
    with pg.connect() as c:
        for i, pw in enumerate(PASSWORDS):
            quoted = "'" + pw.replace("'", "''") + "'"
            c.execute(f"CREATE ROLE scram_{i} LOGIN PASSWORD {quoted}")
            out[pw] = c.execute("select rolpassword from pg_authid where rolname = %s",
                                (f"scram_{i}",)).fetchone()[0]
    return out


def verify(secret, password):
    tool = build_dir() / "tests" / "unit" / "pgwire" / "pgl-scram-verify"
    return subprocess.run([str(tool), secret, password], capture_output=True, text=True,
                          timeout=30).returncode


@pytest.mark.parametrize("password", PASSWORDS)
def test_postgres_secret_verifies(secrets, password):
    secret = secrets[password]
    assert secret.startswith("SCRAM-SHA-256$4096:")
    assert verify(secret, password) == 0
    assert verify(secret, password + "x") == 1
    assert verify(secret, "") == 1
