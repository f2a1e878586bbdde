"""A minimal raw Postgres protocol client for tests that must see exactly
what the server sent: SQLSTATEs of login failures (libpq keeps them to
itself), ReadyForQuery bytes, a client that stops reading."""
import base64
import hashlib
import hmac
import os
import socket
import struct


class ServerError(Exception):
    def __init__(self, fields):
        self.fields = fields
        self.sqlstate = fields.get("C")
        super().__init__(f"{fields.get('S')} {self.sqlstate}: {fields.get('M')}")


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def read_message(s):
    hdr = _recv_exact(s, 5)
    (length,) = struct.unpack("!I", hdr[1:])
    return hdr[:1], _recv_exact(s, length - 4)


def send(s, type_, body):
    s.sendall(type_ + struct.pack("!I", len(body) + 4) + body)


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


def connect(port, user, dbname, password=None, host="127.0.0.1", params=None):
    """Log in (trust, md5 or SCRAM-SHA-256), with extra startup `params`
    (what libpq cannot send, e.g. search_path as pgjdbc does); returns the
    socket after the first ReadyForQuery, or raises ServerError."""
    s = socket.create_connection((host, port), timeout=10)
    extra = "".join(f"{k}\0{v}\0" for k, v in (params or {}).items())
    body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{dbname}\0{extra}\0".encode()
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    scram = None
    while True:
        t, b = read_message(s)
        if t == b"E":
            s.close()
            raise ServerError(error_fields(b))
        if t == b"Z":
            return s
        if t != b"R":
            continue
        (code,) = struct.unpack("!I", b[:4])
        if code == 5:
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
            outer = "md5" + hashlib.md5(inner.encode() + b[4:8]).hexdigest()
            send(s, b"p", outer.encode() + b"\0")
        elif code == 10:
            nonce = base64.b64encode(os.urandom(18)).decode()
            first_bare = f"n=,r={nonce}"
            scram = {"first_bare": first_bare}
            msg = ("n,," + first_bare).encode()
            send(s, b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(msg)) + msg)
        elif code == 11:
            server_first = b[4:].decode()
            attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                         base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            stored = hashlib.sha256(client_key).digest()
            without_proof = f"c=biws,r={attrs['r']}"
            auth = f"{scram['first_bare']},{server_first},{without_proof}".encode()
            sig = hmac.new(stored, auth, "sha256").digest()
            proof = bytes(a ^ b_ for a, b_ in zip(client_key, sig))
            send(s, b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
        elif code in (0, 12):
            continue
        else:
            raise RuntimeError(f"unsupported auth request {code}")


def query_value(s, sql):
    """Runs one simple query; returns the first column of its first row as
    text (None for no row or NULL), or raises ServerError."""
    send(s, b"Q", sql.encode() + b"\0")
    value, error = None, None
    while True:
        t, b = read_message(s)
        if t == b"D" and value is None:
            (length,) = struct.unpack("!i", b[2:6])
            value = b[6:6 + length].decode() if length >= 0 else None
        elif t == b"E":
            error = ServerError(error_fields(b))
        elif t == b"Z":
            if error is not None:
                raise error
            return value


def login_sqlstate(port, user, dbname, password):
    """The SQLSTATE a login attempt fails with, or None when it succeeds."""
    try:
        connect(port, user, dbname, password).close()
        return None
    except ServerError as e:
        return e.sqlstate
