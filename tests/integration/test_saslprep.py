"""SASLprep of plaintext userlist passwords: a non-ASCII plaintext password
in pglease's userlist must accept exactly the logins Postgres accepts for a
role given the same password (password_encryption = scram-sha-256).

Postgres and libpq both SASLprep the password (RFC 4013: non-ASCII spaces
become U+0020, soft hyphens and the like vanish, NFKC), and both keep the
raw bytes when SASLprep refuses it (prohibited or unassigned code point,
bidi rule). Each case is tried against the real Postgres first, which
proves the expectation, then through pglease, with two clients: psycopg
(libpq, prepares the password) and pgraw (sends the bytes as they are)."""
import socket
import struct

import psycopg
import pytest
from psycopg import sql

from pglease_proc import PgLease
from pgraw import ServerError, login_sqlstate
from pgraw import connect as pgraw_connect
from pgraw import read_message as pgraw_read

# (case id, password, its SASLprep form, or None where Postgres keeps the
# raw bytes because SASLprep refuses the password)
CASES = [
    ("soft-hyphen", "I\u00adX", "IX"),              # U+00AD maps to nothing
    ("roman-nine", "\u2168", "IX"),                 # NFKC
    ("nbsp", "pass\u00a0word", "pass word"),        # U+00A0 maps to a space
    ("combining", "cafe\u0301", "caf\u00e9"),       # NFKC composes
    ("fullwidth", "\uff21\uff22c", "ABc"),          # NFKC
    ("unassigned", "I\u00adX\u0221", None),         # U+0221 unassigned in Unicode 3.2
    ("prohibited", "a\u0340", None),                # C.8, checked before NFKC
    ("bidi", "\u05d0a", None),                      # right-to-left with left-to-right
    ("control", "\u00e9\u0007", None),              # C.2.1 in a non-ASCII password
]
USERS = {f"sasl_{i}": pw for i, (_, pw, _) in enumerate(CASES)}


def role(case_id):
    return f"sasl_{[c[0] for c in CASES].index(case_id)}"


def libpq_login(port, user, password):
    """True when psycopg (libpq) logs in, False on a password failure."""
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password,
                             dbname="app", sslmode="disable", connect_timeout=10) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        return True
    except psycopg.OperationalError as e:
        assert "password authentication failed" in str(e), str(e)
        return False


def raw_login(port, user, password):
    """None when a client sending the password's bytes as given logs in,
    else the SQLSTATE."""
    return login_sqlstate(port, user, "app", password)


def attempts(password, prepared):
    """(client, attempt, expected) for one case."""
    out = [
        ("libpq", password, True),
        ("libpq", password + "x", False),
        ("raw", password + "x", "28P01"),
    ]
    if prepared is not None:
        # The server holds the prepared form: libpq's own preparation of
        # either spelling matches, the unprepared bytes do not.
        out += [("libpq", prepared, True), ("raw", prepared, None), ("raw", password, "28P01")]
    else:
        out += [("raw", password, None)]
    return out


def check(port, user, password, prepared):
    for client, attempt, expected in attempts(password, prepared):
        got = libpq_login(port, user, attempt) if client == "libpq" else \
            raw_login(port, user, attempt)
        assert got == expected, f"{client} login with {attempt!r}: {got!r} != {expected!r}"


@pytest.fixture(scope="module")
def roles(pg):
    with pg.connect("postgres") as c:
        c.execute("SET password_encryption = 'scram-sha-256'")
        for user, password in USERS.items():
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
            c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password)))
        rows = c.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'sasl\\_%'")
        assert all(p.startswith("SCRAM-SHA-256$") for _, p in rows.fetchall())
    yield
    with pg.connect("postgres") as c:
        for user in USERS:
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


@pytest.fixture(scope="module")
def proxy(pg, roles):
    p = PgLease({"app": pg.dsn(dbname="app")},
                users={"admin": "adminpw"}, settings={"auth_type": "scram-sha-256"})
    # The userlist in UTF-8 whatever the locale, with the non-ASCII passwords.
    p.users = {"admin": "adminpw", **USERS}
    (p.dir / "userlist.txt").write_bytes("".join(
        f'"{u}" "{pw}"\n' for u, pw in p.users.items()).encode("utf-8"))
    p.start()
    yield p
    rc = p.stop()
    assert rc == 0, p.log()
    log = p.log()
    assert "bug:" not in log
    for pw in USERS.values():
        assert pw not in log  # secrets are never logged


def test_pglease_offers_scram(proxy):
    """The plaintext userlist is served with SCRAM-SHA-256, not in clear."""
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        body = struct.pack("!I", 196608) + b"user\0sasl_0\0database\0app\0\0"
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        t, b = pgraw_read(s)
        assert t == b"R" and struct.unpack("!I", b[:4])[0] == 10, (t, b)
        assert b"SCRAM-SHA-256\0" in b[4:]
    finally:
        s.close()


@pytest.mark.parametrize("case_id,password,prepared", CASES, ids=[c[0] for c in CASES])
def test_postgres_accepts(pg, roles, case_id, password, prepared):
    """What Postgres itself accepts: proves the expectations."""
    check(pg.port, role(case_id), password, prepared)


@pytest.mark.parametrize("case_id,password,prepared", CASES, ids=[c[0] for c in CASES])
def test_pglease_accepts_the_same(proxy, case_id, password, prepared):
    check(proxy.port, role(case_id), password, prepared)


def test_wrong_password_refused(proxy):
    assert raw_login(proxy.port, "sasl_0", "IY") == "28P01"
    assert raw_login(proxy.port, "nobody", "IX") == "28P01"
    with pytest.raises(ServerError) as e:
        pgraw_connect(proxy.port, "sasl_1", "app", "\u2167").close()  # ROMAN NUMERAL EIGHT
    assert e.value.sqlstate == "28P01"
