#!/usr/bin/python3
"""vaultsim: a stand-in for `vault server -dev`, for tests and the demo.

    /usr/bin/python3 tests/vaultsim/vaultsim.py -dev-root-token-id=ROOT \
        -dev-listen-address=127.0.0.1:8200

It speaks Vault's HTTP API (paths under /v1/, JSON shapes, status codes,
lease semantics) closely enough that clients and scripts written for real
Vault, hvac included, work unchanged; the database secrets engine really
runs the role's SQL against PostgreSQL. What it does not do, and where it
differs, is listed in docs/vaultsim.md. Test-only fault injection lives
under /v1/sys/vaultsim/ and needs the root token.

Standard library plus psycopg (Debian's python3-psycopg).
"""
import base64
import datetime
import json
import re
import secrets
import string
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import psycopg
except ImportError:  # the database engine then answers 500; the rest works
    psycopg = None

VERSION = "1.15.0+vaultsim"
SYSTEM_MAX_TTL = 768 * 3600  # Vault's default and maximum lease TTL: 32 days
LOCK = threading.RLock()
LOG = sys.stderr


def log(msg):
    print(f"{datetime.datetime.utcnow().isoformat(timespec='milliseconds')}Z {msg}",
          file=LOG, flush=True)


# ---------------------------------------------------------------- helpers

class VaultError(Exception):
    def __init__(self, status, *errors, headers=None):
        super().__init__(errors)
        self.status = status
        self.errors = list(errors)
        self.headers = headers or {}


def permission_denied():
    return VaultError(403, "1 error occurred:\n\t* permission denied\n\n")


def parse_duration(v, default=0):
    """Vault accepts ints (seconds) and Go-style duration strings."""
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        raise VaultError(400, f"invalid duration {v!r}")
    if isinstance(v, (int, float)):
        return int(v)
    s = str(v).strip()
    if re.fullmatch(r"\d+", s):
        return int(s)
    total, pos = 0.0, 0
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d)", s):
        if m.start() != pos:
            raise VaultError(400, f"invalid duration {s!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise VaultError(400, f"time: invalid duration \"{s}\"")
    return int(total)


def _go_str(x):
    """How mapstructure's weak decoding turns a JSON scalar into a string."""
    if isinstance(x, bool):
        return "1" if x else "0"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    if isinstance(x, (list, dict)) or x is None:
        raise VaultError(400, f"invalid value {json.dumps(x)!r} in a list of strings")
    return str(x)


def comma_list(v):
    """Vault's framework.TypeCommaStringSlice (parseutil.ParseCommaStringSlice):
    a JSON list is taken element by element, a string is split on commas; every
    element is then trimmed of spaces (strutil.TrimStrings). "" is []. Empty
    elements ("a,,b") are kept, as Vault keeps them."""
    if v is None or v == "":
        return []
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        v = _go_str(v).split(",")
    elif not isinstance(v, list):
        v = [v]
    return [_go_str(x).strip() for x in v]


def string_list(v):
    """Vault's framework.TypeStringSlice (mapstructure.WeakDecode to []string,
    then strutil.TrimStrings): a string becomes ONE element, commas and all
    (e.g. a creation_statements string with several ';'-separated statements);
    "" is []."""
    if v is None or v == "":
        return []
    if not isinstance(v, list):
        v = [v]
    return [_go_str(x).strip() for x in v]


def sanitize_policies(policies, add_default=False):
    """policyutil.SanitizePolicies: trim, lowercase, drop empty names, 'root'
    alone wins, then strutil.RemoveDuplicates (sorted, unique)."""
    out = []
    for p in policies:
        p = p.strip().lower()
        if not p:
            continue
        if p == "root":
            return ["root"]
        out.append(p)
    if add_default and "default" not in out:
        out.append("default")
    return sorted(set(out))


def str_list(v):
    # Kept for callers that want the comma form; see comma_list.
    return [x for x in comma_list(v) if x]


def rfc3339(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def pg_expiration(ts):
    # The database plugin's {{expiration}}: Go layout "2006-01-02 15:04:05-0700".
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S+0000")


def rand_alnum(n):
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def gen_password():
    """Vault's default password policy: 20 characters, at least one lower,
    upper, digit and '-'."""
    pools = [string.ascii_lowercase, string.ascii_uppercase, string.digits, "-"]
    chars = [secrets.choice(p) for p in pools]
    alphabet = "".join(pools)
    chars += [secrets.choice(alphabet) for _ in range(20 - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def split_statements(stmts):
    """The plugin runs each list entry split on ';', in order."""
    items = [stmts] if isinstance(stmts, str) else list(stmts or [])
    return [part.strip() for s in items for part in str(s).split(";") if part.strip()]


def fill(template, **values):
    for k, v in values.items():
        template = template.replace("{{" + k + "}}", v).replace("{{ " + k + " }}", v)
    return template


def envelope(data=None, auth=None, lease_id="", lease_duration=0, renewable=False,
             warnings=None, wrap_info=None, mount_type=""):
    return {"request_id": str(uuid.uuid4()), "lease_id": lease_id, "renewable": renewable,
            "lease_duration": lease_duration, "data": data, "wrap_info": wrap_info,
            "warnings": warnings, "auth": auth, "mount_type": mount_type}


# ---------------------------------------------------------------- policies

DEFAULT_POLICY = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "sys/wrapping/lookup" { capabilities = ["update"] }
path "sys/wrapping/unwrap" { capabilities = ["update"] }
path "sys/wrapping/wrap" { capabilities = ["update"] }
path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }
"""


def parse_policy(text):
    rules = []
    for m in re.finditer(r'path\s+"([^"]*)"\s*\{([^}]*)\}', text, re.S):
        caps = re.search(r"capabilities\s*=\s*\[([^\]]*)\]", m.group(2))
        if caps is None:
            raise VaultError(400, f"failed to parse policy: path {m.group(1)!r}: no capabilities")
        rules.append((m.group(1), set(re.findall(r'"([^"]*)"', caps.group(1)))))
    if not rules and text.strip():
        raise VaultError(400, "failed to parse policy: no path stanzas")
    return rules


def glob_match(pattern, path):
    """Vault's policy globs: a trailing '*' is a prefix match, '+' one segment."""
    prefix = pattern.endswith("*")
    pat = pattern[:-1] if prefix else pattern
    pparts, parts = pat.split("/"), path.split("/")
    if prefix:
        if len(parts) < len(pparts):
            return False
        for i, pp in enumerate(pparts):
            last = i == len(pparts) - 1
            if pp == "+":
                continue
            if last:
                if not parts[i].startswith(pp):
                    return False
            elif pp != parts[i]:
                return False
        return True
    if len(pparts) != len(parts):
        return False
    return all(pp == "+" or pp == p for pp, p in zip(pparts, parts))


def capabilities(policy_names, path):
    if "root" in policy_names:
        return {"root"}
    best, best_key = None, None
    for name in policy_names:
        for pattern, caps in STATE.policies.get(name, {}).get("rules", []):
            if not glob_match(pattern, path):
                continue
            # More specific wins: no wildcard, then fewer '+', then longer.
            key = (not pattern.endswith("*"), -pattern.count("+"), len(pattern))
            if best_key is None or key > best_key:
                best, best_key = set(caps), key
            elif key == best_key:
                best |= caps
    return best or set()


# ---------------------------------------------------------------- state

class Token:
    def __init__(self, policies, ttl, explicit_max_ttl=0, renewable=True, parent=None,
                 display_name="token", meta=None, num_uses=0, period=0, root=False,
                 path="auth/token/create", no_default_policy=False, max_ttl=0):
        self.id = ("hvs." + rand_alnum(24)) if not root else None
        self.accessor = rand_alnum(24)
        pol = sanitize_policies(policies)
        if not root and not no_default_policy and "default" not in pol and pol != ["root"]:
            pol = sorted(pol + ["default"])
        self.policies = pol
        self.created = time.time()
        self.creation_ttl = 0 if root else ttl
        self.ttl = self.creation_ttl
        self.expire = None if root or ttl == 0 else self.created + ttl
        self.explicit_max_ttl = explicit_max_ttl
        # The effective max: explicit_max_ttl, the role's token_max_ttl and the
        # system max (32 days), whichever is smallest.
        cap = min([x for x in (explicit_max_ttl, max_ttl) if x] + [SYSTEM_MAX_TTL])
        self.max_expire = None if root else self.created + cap
        self.renewable = renewable and not root
        self.parent = parent
        self.children = set()
        self.display_name = display_name
        self.meta = meta or {}
        self.num_uses = num_uses
        self.period = period
        self.path = path
        self.leases = set()

    def lookup(self):
        now = time.time()
        return {
            "accessor": self.accessor, "creation_time": int(self.created),
            "creation_ttl": self.creation_ttl, "display_name": self.display_name,
            "entity_id": "", "expire_time": rfc3339(self.expire),
            "explicit_max_ttl": self.explicit_max_ttl, "id": self.id,
            "issue_time": rfc3339(self.created), "meta": self.meta or None,
            "num_uses": self.num_uses, "orphan": self.parent is None, "path": self.path,
            "period": self.period or None, "policies": self.policies,
            "renewable": self.renewable,
            "ttl": 0 if self.expire is None else max(0, int(round(self.expire - now))),
            "type": "service"}

    def auth_block(self):
        return {"client_token": self.id, "accessor": self.accessor,
                "policies": self.policies,
                "token_policies": self.policies, "metadata": self.meta or None,
                "lease_duration": self.ttl, "renewable": self.renewable,
                "entity_id": "", "token_type": "service", "orphan": self.parent is None,
                "mfa_requirement": None, "num_uses": self.num_uses}


class Lease:
    def __init__(self, lease_id, mount, role, db_name, username, ttl, max_ttl, token_id,
                 revoke_stmts, renew_stmts, password=None):
        self.id = lease_id
        self.password = password  # kept for the test-only state endpoint
        self.mount = mount
        self.role = role
        self.db_name = db_name
        self.username = username
        self.issued = time.time()
        self.expire = self.issued + ttl
        self.max_expire = self.issued + max_ttl
        self.last_renewal = None
        self.renewable = True
        self.token_id = token_id
        self.revoke_stmts = revoke_stmts
        self.renew_stmts = renew_stmts
        self.revoking = False


class State:
    def __init__(self):
        self.sealed = False
        self.root_token = None
        self.tokens = {}
        self.mounts = {}        # "secret/" -> dict(type, options, config, data)
        self.auth = {}          # "approle/" -> dict(type, ...)
        self.policies = {}
        self.leases = {}
        self.wrapped = {}       # wrapping token -> (expire, response dict, creation_path)
        self.faults = []        # Fault: injected failures and hangs (sys/vaultsim/)
        self.fault_seq = 0
        self.latency_ms = 0
        self.k8s_tokens = set()
        self.issued_secrets = []  # passwords, tokens, secret_ids: for log-leak tests

    def add_policy(self, name, text):
        self.policies[name] = {"text": text, "rules": parse_policy(text)}


STATE = State()


class Fault:
    """One injected fault, matched against the request path (relative to
    /v1/, never sys/vaultsim/*) by prefix. kind "fail": answer `status` with
    Vault's error body; kind "hang": hold the request without answering
    until the fault ends (its `seconds` pass, or it is cleared), then answer
    it normally (after="answer") or close the connection without an answer
    ("close") or with a TCP reset ("reset"). A fault matches while it has
    requests left (count, None = any number) and its window is open
    (seconds from injection, None = until cleared)."""

    def __init__(self, kind, prefix, count=None, seconds=None, status=None, message=None,
                 retry_after=None, after="answer"):
        STATE.fault_seq += 1
        self.id = STATE.fault_seq
        self.kind = kind
        self.prefix = prefix
        self.count = count
        self.seconds = seconds
        self.until = None if seconds is None else time.monotonic() + seconds
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.after = after
        self.released = threading.Event()
        self.matched = 0
        self.holding = 0

    def matches(self, path, now):
        return (not self.released.is_set() and (self.count is None or self.count > 0) and
                (self.until is None or now < self.until) and path.startswith(self.prefix))

    def live(self, now):
        return self.holding > 0 or (
            not self.released.is_set() and (self.count is None or self.count > 0) and
            (self.until is None or now < self.until))

    def take(self):
        self.matched += 1
        if self.count is not None:
            self.count -= 1

    def describe(self, now):
        d = {"id": self.id, "kind": self.kind, "path_prefix": self.prefix,
             "count_left": self.count,
             "seconds_left": None if self.until is None else max(0.0, round(self.until - now, 3)),
             "matched": self.matched}
        if self.kind == "fail":
            d.update(status=self.status, message=self.message, retry_after=self.retry_after)
        else:
            d.update(holding=self.holding, after=self.after)
        return d

    def error(self, path):
        msg = self.message
        if msg is None:
            msg = {503: "Vault is sealed",
                   429: f"request path \"{path}\": rate limit quota exceeded"}.get(
                self.status, f"vaultsim: injected failure ({self.status})")
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return VaultError(self.status, msg, headers=headers)


def prune_faults(now):
    STATE.faults = [f for f in STATE.faults if f.live(now)]


def clear_faults(kind=None, fault_id=None):
    """Ends faults (all, one kind, or one id); held requests are let go."""
    n = 0
    keep = []
    for f in STATE.faults:
        if (kind is None or f.kind == kind) and (fault_id is None or f.id == fault_id):
            f.released.set()
            n += 1
        else:
            keep.append(f)
    STATE.faults = keep
    if fault_id is None and kind in (None, "latency") and STATE.latency_ms:
        STATE.latency_ms = 0
        n += 1
    if fault_id is None and kind in (None, "seal") and STATE.sealed:
        STATE.sealed = False
        n += 1
    return n


def mount_for(path, table):
    """Longest mount prefix of `path` in table; (mount, rest)."""
    best = None
    for m in table:
        if (path + "/").startswith(m) and (best is None or len(m) > len(best)):
            best = m
    if best is None:
        return None, None
    return best, path[len(best):]


# ---------------------------------------------------------------- databases

def db_connect(conf, user=None, password=None):
    if psycopg is None:
        raise VaultError(500, "vaultsim: python3-psycopg is not installed")
    url = fill(conf["connection_url"],
               username=urllib.parse.quote(user or conf.get("username", ""), safe=""),
               password=urllib.parse.quote(password or conf.get("password", ""), safe=""))
    return psycopg.connect(url, connect_timeout=5)


# Vault's database plugin keeps its connections open (a Go sql.DB pool) and
# does not log in for each request: a loaded database can take seconds to
# accept a login, which would stall renewals past a lease's end. One open
# connection per configuration here; every use is under LOCK.
POOL = {}


def with_pooled(conf, work):
    """Runs work(conn) on the configuration's open autocommit connection,
    opening it if needed; a connection found broken is replaced once."""
    key = (conf["connection_url"], conf.get("username", ""), conf.get("password", ""))
    for attempt in (1, 2):
        conn = POOL.pop(key, None)
        reused = conn is not None and not conn.closed
        if not reused:
            conn = db_connect(conf)
            conn.autocommit = True
        try:
            result = work(conn)
        except psycopg.OperationalError:
            conn.close()
            if reused and attempt == 1:
                continue  # the database restarted or dropped it: log in again
            raise
        except Exception:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
            else:
                POOL[key] = conn
            raise
        POOL[key] = conn
        return result


def run_in_transaction(conf, statements):
    def work(conn):
        with conn.transaction():
            for s in statements:
                conn.execute(s)
    with_pooled(conf, work)


def default_revoke(conf, username):
    """The postgresql plugin's default revocation: statements outside a
    transaction, continuing past errors, ending with DROP ROLE IF EXISTS."""
    with_pooled(conf, lambda conn: _default_revoke(conn, username))


def _default_revoke(conn, username):
    """Mirrors defaultDeleteUser in hashicorp/vault
    plugins/database/postgresql/postgresql.go (v1.15; unchanged in substance
    since 0.9): if the role exists, REVOKE ALL PRIVILEGES ON ALL TABLES IN
    SCHEMA + REVOKE USAGE ON SCHEMA for each schema listed for the role in
    information_schema.role_column_grants, then for schema public: tables,
    sequences and USAGE, then REVOKE CONNECT ON DATABASE <current db>; each
    statement on its own outside a transaction, going on past errors. If any
    of them failed the plugin returns "could not perform all revocation
    statements" and does NOT drop the role (Vault keeps the lease and retries
    the revocation); otherwise DROP ROLE IF EXISTS. Nothing else: no
    FUNCTIONS, no REASSIGN/DROP OWNED (a role that owns objects fails at DROP
    ROLE), and no pg_terminate_backend: sessions the role has open stay
    connected after the role is dropped (Postgres does not end them), they
    just lose the revoked privileges."""
    ident = '"' + username.replace('"', '""') + '"'
    exists = conn.execute("SELECT exists (SELECT rolname FROM pg_roles WHERE rolname=%s)",
                          (username,)).fetchone()[0]
    if not exists:
        return
    schemas = [r[0] for r in conn.execute(
        "SELECT DISTINCT table_schema FROM information_schema.role_column_grants "
        "WHERE grantee=%s", (username,))]
    stmts = []
    for sch in schemas:
        q = '"' + sch.replace('"', '""') + '"'
        stmts += [f"REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {q} FROM {ident}",
                  f"REVOKE USAGE ON SCHEMA {q} FROM {ident}"]
    stmts += [f"REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM {ident}",
              f"REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM {ident}",
              f"REVOKE USAGE ON SCHEMA public FROM {ident}"]
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    if dbname is not None:
        dbq = '"' + dbname.replace('"', '""') + '"'
        stmts.append(f"REVOKE CONNECT ON DATABASE {dbq} FROM {ident}")
    last_error = None
    for s in stmts:
        try:
            conn.execute(s)
        except Exception as e:  # go on, to remove as much access as possible
            last_error = e
    if last_error is not None:
        raise VaultError(500, "could not perform all revocation statements: "
                              f"{str(last_error).strip()}")
    conn.execute(f"DROP ROLE IF EXISTS {ident}")


def revoke_lease(lease, reason):
    """Runs the revocation and forgets the lease. Caller holds LOCK."""
    if lease.revoking:
        return
    lease.revoking = True
    mount = STATE.mounts.get(lease.mount)
    try:
        if mount is not None:
            conf = mount["data"]["config"].get(lease.db_name)
            if conf is not None:
                if lease.revoke_stmts:
                    run_in_transaction(conf, [fill(s, name=lease.username,
                                                   username=lease.username)
                                              for s in split_statements(lease.revoke_stmts)])
                else:
                    default_revoke(conf, lease.username)
    except Exception as e:
        # Like Vault: the lease stays and revocation is retried later.
        lease.revoking = False
        lease.expire = time.time() + 1
        log(f"lease revocation failed ({reason}), will retry: {e}")
        return
    STATE.leases.pop(lease.id, None)
    tok = STATE.tokens.get(lease.token_id)
    if tok:
        tok.leases.discard(lease.id)
    log(f"lease revoked ({reason}): {lease.mount}creds/{lease.role}/... user {lease.username}")


def revoke_token(tok, reason):
    for child in list(tok.children):
        ct = STATE.tokens.get(child)
        if ct:
            revoke_token(ct, "parent revoked")
    for lid in list(tok.leases):
        lease = STATE.leases.get(lid)
        if lease:
            revoke_lease(lease, f"token {reason}")
    STATE.tokens.pop(tok.id, None)
    if tok.parent and tok.parent in STATE.tokens:
        STATE.tokens[tok.parent].children.discard(tok.id)


def reaper():
    while True:
        time.sleep(0.1)
        with LOCK:
            now = time.time()
            for tok in list(STATE.tokens.values()):
                if tok.expire is not None and tok.expire <= now:
                    log(f"token expired: accessor {tok.accessor}")
                    revoke_token(tok, "expired")
            for lease in list(STATE.leases.values()):
                if lease.expire <= now:
                    revoke_lease(lease, "expired")
            for wt, (exp, _, _) in list(STATE.wrapped.items()):
                if exp <= now:
                    STATE.wrapped.pop(wt, None)
            for mpath, m in STATE.mounts.items():
                if m["type"] != "database":
                    continue
                for name, sr in m["data"]["static"].items():
                    if now >= sr["last_rotation"] + sr["rotation_period"]:
                        try:
                            rotate_static(m, sr)
                        except Exception as e:
                            sr["last_rotation"] = now - sr["rotation_period"] + 1
                            log(f"static role {name} rotation failed, will retry: {e}")


# ---------------------------------------------------------------- engines

def handle_database(mount_path, mount, rest, method, body, token):
    d = mount["data"]
    parts = rest.split("/", 1)
    kind, name = parts[0], (parts[1] if len(parts) > 1 else "")
    if kind == "config" and name:
        if method in ("POST", "PUT"):
            plugin = body.get("plugin_name", "")
            if plugin != "postgresql-database-plugin":
                raise VaultError(400, f"error creating database object: invalid database "
                                      f"version: unsupported plugin {plugin!r} (vaultsim "
                                      f"supports postgresql-database-plugin only)")
            conf = {"plugin_name": plugin, "connection_url": body.get("connection_url", ""),
                    "username": body.get("username", ""), "password": body.get("password", ""),
                    "allowed_roles": comma_list(body.get("allowed_roles")),
                    "verify_connection": body.get("verify_connection", True),
                    "password_authentication": body.get("password_authentication", "password"),
                    "root_rotation_statements": string_list(
                        body.get("root_rotation_statements"))}
            if conf["verify_connection"] not in (False, "false"):
                try:
                    db_connect(conf).close()
                except VaultError:
                    raise
                except Exception as e:
                    raise VaultError(400, f"error creating database object: error verifying "
                                          f"connection: {str(e).strip()}")
            d["config"][name] = conf
            return 204, None
        if method == "GET":
            conf = d["config"].get(name)
            if conf is None:
                raise VaultError(404)
            shown = {k: v for k, v in conf.items() if k not in ("password",)}
            shown["connection_details"] = {"connection_url": conf["connection_url"],
                                           "username": conf["username"]}
            return 200, envelope(shown)
        if method == "DELETE":
            d["config"].pop(name, None)
            return 204, None
    if kind == "roles":
        if method == "LIST" or (method == "GET" and not name):
            return 200, envelope({"keys": sorted(d["roles"])})
        if method in ("POST", "PUT"):
            db_name = body.get("db_name")
            if not db_name:
                raise VaultError(400, "empty database name attribute")
            # The statements are TypeStringSlice: a JSON list, or one string
            # kept as ONE element (it may hold several ';'-separated statements).
            creation = string_list(body.get("creation_statements"))
            if not creation:
                raise VaultError(400, "creation_statements are required")
            d["roles"][name] = {
                "db_name": db_name, "creation_statements": creation,
                "revocation_statements": string_list(body.get("revocation_statements")),
                "renew_statements": string_list(body.get("renew_statements")),
                "rollback_statements": string_list(body.get("rollback_statements")),
                "default_ttl": parse_duration(body.get("default_ttl")),
                "max_ttl": parse_duration(body.get("max_ttl"))}
            return 204, None
        role = d["roles"].get(name)
        if method == "GET":
            if role is None:
                raise VaultError(404)
            return 200, envelope(dict(role))
        if method == "DELETE":
            d["roles"].pop(name, None)
            return 204, None
    if kind == "creds" and name and method == "GET":
        return creds(mount_path, mount, name, token)
    if kind == "static-roles":
        if method == "LIST" or (method == "GET" and not name):
            return 200, envelope({"keys": sorted(d["static"])})
        if method in ("POST", "PUT"):
            db_name = body.get("db_name")
            if db_name not in d["config"]:
                raise VaultError(400, f"no database connection named {db_name!r}")
            period = parse_duration(body.get("rotation_period"))
            if period < 5:
                raise VaultError(400, "rotation_period must be 5 seconds or more")
            sr = {"name": name, "db_name": db_name, "username": body.get("username"),
                  "rotation_period": period,
                  "rotation_statements": string_list(body.get("rotation_statements")),
                  "password": None, "last_rotation": 0}
            if not sr["username"]:
                raise VaultError(400, "username is a required field to create a static account")
            rotate_static(mount, sr)  # Vault rotates the password when the role is created
            d["static"][name] = sr
            return 204, None
        sr = d["static"].get(name)
        if method == "GET":
            if sr is None:
                raise VaultError(404)
            return 200, envelope({k: sr[k] for k in ("db_name", "username", "rotation_period",
                                                      "rotation_statements")}
                                 | {"last_vault_rotation": rfc3339(sr["last_rotation"])})
        if method == "DELETE":
            d["static"].pop(name, None)
            return 204, None
    if kind == "static-creds" and name and method == "GET":
        sr = d["static"].get(name)
        if sr is None:
            raise VaultError(400, "unknown role: " + name)
        now = time.time()
        return 200, envelope({
            "username": sr["username"], "password": sr["password"],
            "last_vault_rotation": rfc3339(sr["last_rotation"]),
            "rotation_period": sr["rotation_period"],
            "ttl": max(0, int(sr["last_rotation"] + sr["rotation_period"] - now))})
    if kind == "rotate-role" and name and method in ("POST", "PUT"):
        sr = d["static"].get(name)
        if sr is None:
            raise VaultError(400, "no static role found for role name")
        rotate_static(mount, sr)
        return 204, None
    if kind == "rotate-root" and name and method in ("POST", "PUT"):
        conf = d["config"].get(name)
        if conf is None:
            raise VaultError(400, "failed to find entry for connection with name: " + name)
        new = gen_password()
        stmts = conf["root_rotation_statements"] or \
            ['ALTER ROLE "{{username}}" WITH PASSWORD \'{{password}}\'']
        run_in_transaction(conf, [fill(s, username=conf["username"], name=conf["username"],
                                       password=new) for s in split_statements(stmts)])
        old = POOL.pop((conf["connection_url"], conf["username"], conf["password"]), None)
        if old is not None:
            old.close()  # logged in with the password that just stopped existing
        conf["password"] = new
        return 204, None
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


def rotate_static(mount, sr):
    conf = mount["data"]["config"][sr["db_name"]]
    new = gen_password()
    stmts = sr["rotation_statements"] or ['ALTER ROLE "{{name}}" WITH PASSWORD \'{{password}}\'']
    run_in_transaction(conf, [fill(s, name=sr["username"], username=sr["username"],
                                   password=new) for s in split_statements(stmts)])
    sr["password"] = new
    sr["last_rotation"] = time.time()


def creds(mount_path, mount, role_name, token):
    d = mount["data"]
    role = d["roles"].get(role_name)
    if role is None:
        raise VaultError(400, f"unknown role: {role_name}")
    conf = d["config"].get(role["db_name"])
    if conf is None:
        raise VaultError(500, f"1 error occurred:\n\t* plugin {role['db_name']} not found\n\n")
    allowed = conf["allowed_roles"]
    if not ("*" in allowed or role_name in allowed):
        raise VaultError(400, f"\"{role_name}\" is not an allowed role")
    ttl = role["default_ttl"] or SYSTEM_MAX_TTL
    max_ttl = role["max_ttl"] or SYSTEM_MAX_TTL
    ttl = min(ttl, max_ttl)
    display = (token.display_name if token else "root")
    username = "v-{}-{}-{}-{}".format(display[:8], role_name[:8], rand_alnum(20),
                                      int(time.time()))[:63]
    password = gen_password()
    expiration = pg_expiration(time.time() + ttl)
    stmts = [fill(s, name=username, username=username, password=password,
                  expiration=expiration) for s in split_statements(role["creation_statements"])]
    try:
        run_in_transaction(conf, stmts)
    except VaultError:
        raise
    except Exception as e:
        raise VaultError(500, f"1 error occurred:\n\t* {str(e).strip()}\n\n")
    lease_id = f"{mount_path}creds/{role_name}/{rand_alnum(24)}"
    lease = Lease(lease_id, mount_path, role_name, role["db_name"], username, ttl, max_ttl,
                  token.id if token else None, role["revocation_statements"],
                  role["renew_statements"], password)
    STATE.leases[lease_id] = lease
    STATE.issued_secrets.append(password)
    if token:
        token.leases.add(lease_id)
    log(f"lease issued: {mount_path}creds/{role_name}/... user {username} ttl {ttl}s")
    return 200, envelope({"username": username, "password": password}, lease_id=lease_id,
                         lease_duration=ttl, renewable=True)


def renew_lease(lease, increment):
    mount = STATE.mounts.get(lease.mount)
    role = mount["data"]["roles"].get(lease.role, {}) if mount else {}
    ttl = increment or role.get("default_ttl") or SYSTEM_MAX_TTL
    now = time.time()
    new_expire = min(now + ttl, lease.max_expire)
    if new_expire <= now:
        raise VaultError(400, "lease expired")
    conf = mount["data"]["config"].get(lease.db_name) if mount else None
    if conf is not None:
        stmts = lease.renew_stmts or ['ALTER ROLE "{{name}}" VALID UNTIL \'{{expiration}}\'']
        run_in_transaction(conf, [fill(s, name=lease.username, username=lease.username,
                                       expiration=pg_expiration(new_expire))
                                  for s in split_statements(stmts)])
    lease.expire = new_expire
    lease.last_renewal = now
    return int(round(new_expire - now))


def handle_kv(mount_path, mount, rest, method, body, query):
    store = mount["data"]
    if mount["options"].get("version") != "2":
        if method == "GET":
            if rest not in store:
                raise VaultError(404)
            return 200, envelope(store[rest], lease_duration=2764800)
        if method in ("POST", "PUT"):
            store[rest] = body
            return 204, None
        if method == "DELETE":
            store.pop(rest, None)
            return 204, None
        if method == "LIST":
            # Vault lists "a" as "a/" (http/logical.go appends the slash).
            pre = rest + "/" if rest and not rest.endswith("/") else rest
            keys = sorted({k[len(pre):].split("/")[0] + ("/" if "/" in k[len(pre):] else "")
                           for k in store if k.startswith(pre)})
            if not keys:
                raise VaultError(404)
            return 200, envelope({"keys": keys})
    kind, _, path = rest.partition("/")
    secrets_ = store.setdefault("__kv2__", {})
    if kind == "config":
        return 200, envelope({"cas_required": False, "delete_version_after": "0s",
                              "max_versions": 0})
    if kind == "data":
        entry = secrets_.get(path)
        if method == "GET":
            if entry is None:
                raise VaultError(404)
            v = int(query.get("version", ["0"])[0]) or entry["current"]
            ver = entry["versions"].get(v)
            if ver is None or ver["deletion_time"] or ver["destroyed"]:
                raise VaultError(404)
            return 200, envelope({"data": ver["data"], "metadata": kv_meta(ver)})
        if method in ("POST", "PUT"):
            if not isinstance(body.get("data"), dict):
                raise VaultError(400, "no data provided")
            cas = (body.get("options") or {}).get("cas")
            current = entry["current"] if entry else 0
            if cas is not None and int(cas) != current:
                raise VaultError(400, "check-and-set parameter did not match the current "
                                      "version")
            if entry is None:
                entry = secrets_[path] = {"current": 0, "versions": {},
                                          "created": time.time()}
            entry["current"] += 1
            ver = {"version": entry["current"], "data": body["data"],
                   "created_time": time.time(), "deletion_time": "", "destroyed": False}
            entry["versions"][entry["current"]] = ver
            entry["updated"] = time.time()
            return 200, envelope(kv_meta(ver))
        if method == "DELETE":
            if entry and entry["current"] in entry["versions"]:
                entry["versions"][entry["current"]]["deletion_time"] = rfc3339(time.time())
            return 204, None
    if kind == "metadata":
        if method == "LIST":
            pre = path + "/" if path and not path.endswith("/") else path
            keys = sorted({k[len(pre):].split("/")[0] + ("/" if "/" in k[len(pre):] else "")
                           for k in secrets_ if k.startswith(pre)})
            if not keys:
                raise VaultError(404)
            return 200, envelope({"keys": keys})
        entry = secrets_.get(path)
        if method == "GET":
            if entry is None:
                raise VaultError(404)
            return 200, envelope({
                "current_version": entry["current"], "oldest_version": 0,
                "created_time": rfc3339(entry["created"]),
                "updated_time": rfc3339(entry["updated"]), "max_versions": 0,
                "cas_required": False, "delete_version_after": "0s", "custom_metadata": None,
                "versions": {str(k): {"created_time": rfc3339(v["created_time"]),
                                      "deletion_time": v["deletion_time"],
                                      "destroyed": v["destroyed"]}
                             for k, v in entry["versions"].items()}})
        if method == "DELETE":
            secrets_.pop(path, None)
            return 204, None
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


def kv_meta(ver):
    return {"created_time": rfc3339(ver["created_time"]), "custom_metadata": None,
            "deletion_time": ver["deletion_time"], "destroyed": ver["destroyed"],
            "version": ver["version"]}


# ---------------------------------------------------------------- auth methods

def token_from_role(role, display_name, meta):
    policies = str_list(role.get("token_policies")) or str_list(role.get("policies"))
    max_ttl = role.get("token_max_ttl") or 0
    explicit = role.get("token_explicit_max_ttl") or 0
    period = role.get("token_period") or 0
    ttl = period or role.get("token_ttl") or max_ttl or SYSTEM_MAX_TTL
    cap = min([x for x in (max_ttl, explicit) if x] or [0])
    tok = Token(policies, min(ttl, cap) if cap else ttl, explicit_max_ttl=explicit,
                max_ttl=max_ttl, period=period,
                display_name=display_name, meta=meta, num_uses=role.get("token_num_uses", 0),
                path="auth/" + display_name + "/login",
                no_default_policy=bool(role.get("token_no_default_policy")))
    STATE.tokens[tok.id] = tok
    STATE.issued_secrets.append(tok.id)
    return tok


def role_fields(body, old=None):
    r = dict(old or {})
    # tokenutil's fields are TypeCommaStringSlice: a JSON list or "a, b".
    # "policies" is the pre-1.2 name: given alone it sets token_policies too
    # (tokenutil.UpgradeValue); token_policies given clears it.
    if "token_policies" in body:
        r["token_policies"] = comma_list(body["token_policies"])
        r.pop("policies", None)
    elif "policies" in body:
        r["token_policies"] = r["policies"] = comma_list(body["policies"])
    for k in ("token_bound_cidrs", "secret_id_bound_cidrs"):
        if k in body:
            r[k] = comma_list(body[k])
    for k in ("token_ttl", "token_max_ttl", "secret_id_ttl", "token_explicit_max_ttl",
              "token_period"):
        if k in body:
            r[k] = parse_duration(body[k])
    for old_k, new_k in (("ttl", "token_ttl"), ("max_ttl", "token_max_ttl"),
                         ("period", "token_period")):
        if old_k in body:
            r[new_k] = parse_duration(body[old_k])
    for k in ("secret_id_num_uses", "token_num_uses"):
        if k in body:
            r[k] = int(body[k])
    for k in ("bind_secret_id", "token_no_default_policy"):
        if k in body:
            r[k] = body[k] in (True, "true", 1, "1")
    if "token_type" in body:
        r["token_type"] = body["token_type"] or "default"
    return r


def handle_approle(mount_path, m, rest, method, body):
    roles = m["roles"]
    if rest == "login" and method in ("POST", "PUT"):
        role_id = body.get("role_id")
        if not role_id:
            raise VaultError(400, "missing role_id")
        name = next((n for n, r in roles.items() if r["role_id"] == role_id), None)
        if name is None:
            raise VaultError(400, "invalid role or secret ID")
        role = roles[name]
        if role.get("bind_secret_id", True):
            sid = role["secret_ids"].get(body.get("secret_id") or "")
            now = time.time()
            if sid is None or (sid["expire"] and sid["expire"] <= now):
                raise VaultError(400, "invalid role or secret ID")
            if sid["uses_left"] is not None:
                sid["uses_left"] -= 1
                if sid["uses_left"] <= 0:
                    role["secret_ids"].pop(body["secret_id"], None)
        tok = token_from_role(role, mount_path.rstrip("/"), {"role_name": name})
        return 200, envelope(auth=tok.auth_block())
    parts = rest.split("/")
    if parts[0] != "role":
        raise VaultError(404, f"no handler for route \"{mount_path}{rest}\". route entry not found.")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] == ""):
        if method in ("LIST", "GET"):
            return 200, envelope({"keys": sorted(roles)})
    name = parts[1]
    sub = "/".join(parts[2:])
    if sub == "":
        if method in ("POST", "PUT"):
            old = roles.get(name)
            r = role_fields(body, old)
            r.setdefault("bind_secret_id", True)
            r.setdefault("role_id", str(uuid.uuid4()))
            r.setdefault("secret_ids", {})
            roles[name] = r
            return 204, None
        if method == "GET":
            if name not in roles:
                raise VaultError(404)
            r = roles[name]
            return 200, envelope({k: v for k, v in r.items()
                                  if k not in ("secret_ids", "role_id")})
        if method == "DELETE":
            roles.pop(name, None)
            return 204, None
    role = roles.get(name)
    if role is None:
        raise VaultError(400, f"invalid role name \"{name}\"")
    if sub == "role-id":
        if method == "GET":
            return 200, envelope({"role_id": role["role_id"]})
        if method in ("POST", "PUT"):
            role["role_id"] = body.get("role_id") or role["role_id"]
            return 204, None
    if sub == "secret-id" and method in ("POST", "PUT"):
        sid = str(uuid.uuid4())
        STATE.issued_secrets.append(sid)
        ttl = parse_duration(body.get("ttl"), role.get("secret_id_ttl", 0))
        uses = int(body.get("num_uses", role.get("secret_id_num_uses", 0)))
        role["secret_ids"][sid] = {"accessor": str(uuid.uuid4()),
                                   "expire": time.time() + ttl if ttl else None,
                                   "uses_left": uses if uses else None}
        return 200, envelope({"secret_id": sid,
                              "secret_id_accessor": role["secret_ids"][sid]["accessor"],
                              "secret_id_ttl": ttl, "secret_id_num_uses": uses})
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


def role_endpoint(m, name, method, body, build):
    """An auth method's role/<name> (certs/<name> for cert): LIST, GET and
    DELETE as every method does them; POST/PUT stores what `build(body,
    old)` makes of the body (old: the stored role or None)."""
    if not name and method in ("LIST", "GET"):
        return 200, envelope({"keys": sorted(m["roles"])})
    if method in ("POST", "PUT"):
        m["roles"][name] = build(body, m["roles"].get(name))
        return 204, None
    if method == "GET":
        if name not in m["roles"]:
            raise VaultError(404)
        return 200, envelope(m["roles"][name])
    if method == "DELETE":
        m["roles"].pop(name, None)
        return 204, None
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


def jwt_claims(jwt):
    try:
        payload = jwt.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except Exception:
        raise VaultError(400, "failed to parse JWT")


def handle_kubernetes(mount_path, m, rest, method, body):
    if rest == "config":
        if method in ("POST", "PUT"):
            if not body.get("kubernetes_host"):
                raise VaultError(400, "no host provided")
            m["config"] = {k: v for k, v in body.items() if k != "token_reviewer_jwt"}
            return 204, None
        if method == "GET":
            return 200, envelope(m.get("config") or {})
    if rest == "login" and method in ("POST", "PUT"):
        name, jwt = body.get("role"), body.get("jwt")
        if not name:
            raise VaultError(400, "missing role")
        if not jwt:
            raise VaultError(400, "missing jwt")
        role = m["roles"].get(name)
        if role is None:
            raise VaultError(400, f"invalid role name \"{name}\"")
        if not m.get("config"):
            raise VaultError(400, "could not load backend configuration")
        claims = jwt_claims(jwt)
        nested = claims.get("kubernetes.io") or {}
        sa = claims.get("kubernetes.io/serviceaccount/service-account.name") or \
            (nested.get("serviceaccount") or {}).get("name")
        ns = claims.get("kubernetes.io/serviceaccount/namespace") or nested.get("namespace")
        uid = claims.get("kubernetes.io/serviceaccount/service-account.uid") or \
            (nested.get("serviceaccount") or {}).get("uid", "")
        # Stand-in for the TokenReview call: tokens a test registered, if any.
        if STATE.k8s_tokens and jwt not in STATE.k8s_tokens:
            raise permission_denied()
        names = role["bound_service_account_names"]
        namespaces = role["bound_service_account_namespaces"]
        if "*" not in names and sa not in names:
            raise VaultError(403, "service account name not authorized")
        if "*" not in namespaces and ns not in namespaces:
            raise VaultError(403, "namespace not authorized")
        tok = token_from_role(role, f"{mount_path.rstrip('/')}-{ns}-{sa}",
                              {"role": name, "service_account_name": sa,
                               "service_account_namespace": ns,
                               "service_account_uid": uid})
        return 200, envelope(auth=tok.auth_block())
    parts = rest.split("/", 1)
    if parts[0] == "role":
        def build(body, old):
            r = role_fields(body, old)
            # Both TypeCommaStringSlice in vault-plugin-auth-kubernetes.
            r["bound_service_account_names"] = comma_list(
                body.get("bound_service_account_names"))
            r["bound_service_account_namespaces"] = comma_list(
                body.get("bound_service_account_namespaces"))
            if not r["bound_service_account_names"] or not r["bound_service_account_namespaces"]:
                raise VaultError(400, "\"bound_service_account_names\" and "
                                      "\"bound_service_account_namespaces\" can not be empty")
            return r
        return role_endpoint(m, parts[1] if len(parts) > 1 else "", method, body, build)
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


# Leeways of vault-plugin-auth-jwt's roles (clock_skew_leeway,
# expiration_leeway, not_before_leeway defaults), in seconds.
JWT_CLOCK_SKEW_LEEWAY = 60
JWT_EXPIRATION_LEEWAY = 150
JWT_NOT_BEFORE_LEEWAY = 150


def jwt_verify(token, pubkeys):
    """Claims of `token` once its signature checks against one of the PEM
    public keys (RS256 or ES256), like jwt_validation_pubkeys. Time claims
    are checked by the caller, with Vault's leeways."""
    import jwt as pyjwt  # Debian's python3-jwt (PyJWT)
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError:
        raise VaultError(400, "error validating token: malformed JWT")
    if header.get("alg") not in ("RS256", "ES256"):
        raise VaultError(400, f"error validating token: unsupported signing algorithm "
                              f"\"{header.get('alg')}\"")
    for pem in pubkeys:
        try:
            return pyjwt.decode(token, pem, algorithms=[header["alg"]],
                                options={"verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False, "verify_aud": False,
                                         "verify_iss": False})
        except pyjwt.InvalidSignatureError:
            continue
        except (pyjwt.PyJWTError, ValueError, TypeError):
            continue
    raise VaultError(400, "error validating token: error verifying token signature: "
                          "no known key successfully validated the token signature")


def jwt_check_claims(claims, role, config):
    now = time.time()
    skew = role.get("clock_skew_leeway", JWT_CLOCK_SKEW_LEEWAY)
    exp_leeway = role.get("expiration_leeway", JWT_EXPIRATION_LEEWAY)
    nbf_leeway = role.get("not_before_leeway", JWT_NOT_BEFORE_LEEWAY)
    if "exp" not in claims:
        raise VaultError(400, "error validating token: exp claim is required")
    if now > float(claims["exp"]) + skew + exp_leeway:
        raise VaultError(400, "error validating token: invalid expiration time (exp) "
                              "claim: token is expired")
    if "nbf" in claims and now < float(claims["nbf"]) - skew - nbf_leeway:
        raise VaultError(400, "error validating token: invalid not before (nbf) claim: "
                              "token not yet valid")
    if "iat" in claims and now < float(claims["iat"]) - skew:
        raise VaultError(400, "error validating token: invalid issued at (iat) claim: "
                              "token issued in the future")
    iss = config.get("bound_issuer")
    if iss and claims.get("iss") != iss:
        raise VaultError(400, "error validating token: invalid issuer (iss) claim")
    aud = claims.get("aud")
    aud = [aud] if isinstance(aud, str) else (aud or [])
    bound_aud = role.get("bound_audiences") or []
    if bound_aud:
        if not set(aud) & set(bound_aud):
            raise VaultError(400, "error validating token: invalid audience (aud) claim: "
                                  "audience claim does not match any expected audience")
    elif aud:
        raise VaultError(400, "error validating token: audience claim found in JWT but no "
                              "audiences bound to the role")
    if role.get("bound_subject") and claims.get("sub") != role["bound_subject"]:
        raise VaultError(400, "error validating token: sub claim does not match bound "
                              "subject")
    for name, want in (role.get("bound_claims") or {}).items():
        want = want if isinstance(want, list) else [want]
        got = claims.get(name)
        got = got if isinstance(got, list) else [got]
        if not any(g in want for g in got):
            raise VaultError(400, f"error validating claims: claim \"{name}\" does not match "
                                  f"any associated bound claim values")


def handle_jwt(mount_path, m, rest, method, body):
    if rest == "config":
        if method in ("POST", "PUT"):
            if body.get("jwks_url") or body.get("oidc_discovery_url"):
                # Fetching keys is out of the stand-in's reach (no network).
                raise VaultError(400, "vaultsim: jwks_url and oidc_discovery_url are not "
                                      "supported; use jwt_validation_pubkeys")
            keys = comma_list(body.get("jwt_validation_pubkeys"))
            if not keys:
                raise VaultError(400, "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or "
                                      "'oidc_discovery_url' must be set")
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
            for k in keys:
                try:
                    load_pem_public_key(k.encode())
                except (ValueError, TypeError):
                    raise VaultError(400, "error parsing public key: failed to parse PEM "
                                          "public key")
            m["config"] = {"jwt_validation_pubkeys": keys,
                           "bound_issuer": body.get("bound_issuer", ""),
                           "jwks_url": "", "oidc_discovery_url": "",
                           "default_role": body.get("default_role", "")}
            return 204, None
        if method == "GET":
            if not m.get("config"):
                return 204, None
            return 200, envelope(m["config"])
    if rest == "login" and method in ("POST", "PUT"):
        config = m.get("config")
        if not config:
            raise VaultError(400, "could not load configuration")
        name = body.get("role") or config.get("default_role")
        if not name:
            raise VaultError(400, "missing role")
        role = m["roles"].get(name)
        if role is None:
            raise VaultError(400, f"role \"{name}\" could not be found")
        token = body.get("jwt")
        if not token:
            raise VaultError(400, "missing token")
        claims = jwt_verify(token, config["jwt_validation_pubkeys"])
        jwt_check_claims(claims, role, config)
        user = claims.get(role["user_claim"])
        if not isinstance(user, (str, int, float)) or user == "":
            raise VaultError(400, f"claim \"{role['user_claim']}\" not found in token")
        tok = token_from_role(role, f"{mount_path.rstrip('/')}-{user}", {"role": name})
        return 200, envelope(auth=tok.auth_block())
    parts = rest.split("/", 1)
    if parts[0] == "role":
        def build(body, old):
            old = old or {}
            r = role_fields(body, old)
            r["role_type"] = body.get("role_type", old.get("role_type", "oidc"))
            if r["role_type"] not in ("jwt", "oidc"):
                raise VaultError(400, "invalid 'role_type': " + str(r["role_type"]))
            if r["role_type"] == "oidc":
                raise VaultError(400, "vaultsim: only role_type \"jwt\" is supported")
            r["user_claim"] = body.get("user_claim", old.get("user_claim", ""))
            if not r["user_claim"]:
                raise VaultError(400, "a user claim must be defined on the role")
            r["bound_audiences"] = comma_list(body["bound_audiences"]) \
                if "bound_audiences" in body else old.get("bound_audiences", [])
            r["bound_subject"] = body.get("bound_subject", old.get("bound_subject", ""))
            bc = body.get("bound_claims", old.get("bound_claims", {}))
            if isinstance(bc, str):
                try:
                    bc = json.loads(bc) if bc else {}
                except ValueError:
                    raise VaultError(400, "error parsing bound_claims")
            if not isinstance(bc, dict):
                raise VaultError(400, "bound_claims must be a map")
            r["bound_claims"] = bc
            for k in ("clock_skew_leeway", "expiration_leeway", "not_before_leeway"):
                if k in body:
                    r[k] = parse_duration(body[k])
            if not (r["bound_audiences"] or r["bound_subject"] or r["bound_claims"] or
                    r.get("token_bound_cidrs")):
                raise VaultError(400, "must have at least one bound constraint when creating/"
                                      "updating a role")
            return r
        return role_endpoint(m, parts[1] if len(parts) > 1 else "", method, body, build)
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


# The request being handled (per thread): the TLS client certificate, DER,
# or None. The cert auth method reads it; nothing else does.
REQUEST = threading.local()


def _load_ca(pem):
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError):
        raise VaultError(400, "failed to parse certificate")


def _issued_by(cert, ca):
    """The certificate is signed by `ca` (directly: the stand-in takes no
    intermediates) and both are within their validity."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    if cert.issuer != ca.subject:
        return False
    key = ca.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    now = datetime.datetime.utcnow()
    return all(c.not_valid_before <= now <= c.not_valid_after for c in (cert, ca))


def _common_name(cert):
    from cryptography.x509.oid import NameOID
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cns[0].value if cns else ""


def handle_cert(mount_path, m, rest, method, body):
    if rest == "login" and method in ("POST", "PUT"):
        der = getattr(REQUEST, "peer_cert", None)
        if der is None:
            raise VaultError(400, "client certificate must be supplied")
        from cryptography import x509
        client = x509.load_der_x509_certificate(der)
        name = body.get("name") or ""
        candidates = [name] if name else sorted(m["roles"])
        cn = _common_name(client)
        for n in candidates:
            role = m["roles"].get(n)
            if role is None or not _issued_by(client, _load_ca(role["certificate"])):
                continue
            allowed = role.get("allowed_common_names") or []
            if allowed and not any(glob_match(a, cn) for a in allowed):
                continue
            tok = token_from_role(role, f"{mount_path.rstrip('/')}-{role['display_name'] or n}",
                                  {"cert_name": n, "common_name": cn,
                                   "serial_number": str(client.serial_number)})
            return 200, envelope(auth=tok.auth_block())
        raise VaultError(400, "invalid certificate or no client certificate supplied")
    parts = rest.split("/", 1)
    if parts[0] == "certs":
        def build(body, old):
            old = old or {}
            r = role_fields(body, old)
            pem = body.get("certificate", old.get("certificate", ""))
            if not pem:
                raise VaultError(400, "missing certificate")
            _load_ca(pem)
            r["certificate"] = pem
            r["display_name"] = body.get("display_name", old.get("display_name", ""))
            r["allowed_common_names"] = comma_list(body["allowed_common_names"]) \
                if "allowed_common_names" in body else old.get("allowed_common_names", [])
            return r
        return role_endpoint(m, parts[1] if len(parts) > 1 else "", method, body, build)
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


def request_any_client_cert(ctx):
    """Asks TLS clients for a certificate and takes whatever they send, as
    a Vault listener does (Go's tls.RequestClientCert): the cert auth
    method checks it against its roles' CAs at login, so a certificate
    from an unknown CA reaches the handler and gets Vault's 400 instead of
    a failed handshake. Python's ssl verifies every presented certificate
    and offers no verify callback, so one is set through ctypes on the
    context's SSL_CTX (the pointer follows PyObject_HEAD in CPython's
    PySSLContext)."""
    import ctypes
    import ssl
    ctx.verify_mode = ssl.CERT_OPTIONAL
    libssl = ctypes.CDLL("libssl.so.3")
    cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    accept_all = cb_type(lambda ok, store: 1)
    ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, cb_type]
    libssl.SSL_CTX_set_verify(ssl_ctx, 0x01, accept_all)  # SSL_VERIFY_PEER
    ctx._pgl_accept_all = accept_all  # the callback must outlive the context


def handle_token(rest, method, body, tok):
    if rest in ("create", "create-orphan") and method in ("POST", "PUT"):
        if tok is None:
            raise permission_denied()
        # Without policies a child token inherits its parent's. The token
        # store decodes its body with mapstructure.WeakDecode into []string:
        # a string is ONE policy name, not split on commas (unlike the
        # TypeCommaStringSlice fields of roles); SanitizePolicies follows.
        policies = sanitize_policies(string_list(body.get("policies"))) or \
            [p for p in tok.policies if p != "default"]
        if "root" in policies and "root" not in tok.policies:
            raise permission_denied()
        ttl = parse_duration(body.get("ttl"))
        explicit = parse_duration(body.get("explicit_max_ttl"))
        period = parse_duration(body.get("period"))
        if period:
            ttl = period
        if not ttl:
            ttl = 0 if "root" in policies and tok.expire is None else SYSTEM_MAX_TTL
        if explicit:
            ttl = min(ttl, explicit) if ttl else explicit
        renewable = body.get("renewable", True) not in (False, "false")
        orphan = rest == "create-orphan" or body.get("no_parent") in (True, "true")
        new = Token(policies, ttl, explicit_max_ttl=explicit, renewable=renewable,
                    parent=None if orphan else tok.id,
                    display_name="token" + ("-" + body["display_name"]
                                            if body.get("display_name") else ""),
                    meta=body.get("meta"), num_uses=int(body.get("num_uses", 0)),
                    period=period, root="root" in policies and ttl == 0,
                    no_default_policy=body.get("no_default_policy") in (True, "true"))
        if new.id is None:  # a root token created by root
            new.id = "hvs." + rand_alnum(24)
        STATE.tokens[new.id] = new
        if not orphan:
            tok.children.add(new.id)
        return 200, envelope(auth=new.auth_block())
    if rest == "lookup-self" and method == "GET":
        return 200, envelope(tok.lookup())
    if rest == "lookup" and method in ("POST", "PUT", "GET"):
        other = STATE.tokens.get(body.get("token", ""))
        if other is None:
            raise VaultError(403, "bad token")
        return 200, envelope(other.lookup())
    if rest in ("renew-self", "renew") and method in ("POST", "PUT"):
        target = tok if rest == "renew-self" else STATE.tokens.get(body.get("token", ""))
        if target is None:
            raise VaultError(400, "invalid token")
        if not target.renewable:
            raise VaultError(400, "lease is not renewable")
        inc = parse_duration(body.get("increment")) or target.period or target.creation_ttl
        now = time.time()
        new_expire = now + inc
        warnings = None
        if target.max_expire is not None and new_expire > target.max_expire:
            new_expire = target.max_expire
            warnings = ["TTL of \"%ds\" exceeded the effective max_ttl of \"%ds\"; TTL value "
                        "is capped accordingly" % (inc, int(round(new_expire - now)))]
        target.expire = new_expire
        target.ttl = int(round(new_expire - now))
        return 200, envelope(auth=target.auth_block(), warnings=warnings)
    if rest == "revoke-self" and method in ("POST", "PUT"):
        revoke_token(tok, "revoked")
        return 204, None
    if rest == "revoke" and method in ("POST", "PUT"):
        other = STATE.tokens.get(body.get("token", ""))
        if other is not None:
            revoke_token(other, "revoked")
        return 204, None
    raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")


# ---------------------------------------------------------------- sys

def handle_sys(rest, method, body, tok, query):
    if rest == "mounts" and method == "GET":
        data = {p: {"type": m["type"], "options": m["options"] or None, "config": {},
                    "description": "", "accessor": m["accessor"], "local": False,
                    "seal_wrap": False} for p, m in STATE.mounts.items()}
        return 200, dict(envelope(data), **data)
    if rest.startswith("mounts/"):
        path = rest[len("mounts/"):].strip("/") + "/"
        if method in ("POST", "PUT"):
            if path in STATE.mounts:
                raise VaultError(400, f"path is already in use at {path}")
            typ = body.get("type", "")
            opts = {k: str(v) for k, v in (body.get("options") or {}).items()}
            if typ == "kv-v2":
                typ, opts["version"] = "kv", "2"
            if typ not in ("kv", "database", "cubbyhole"):
                raise VaultError(400, f"plugin not found in the catalog: {typ}")
            STATE.mounts[path] = new_mount(typ, opts)
            return 204, None
        if method == "DELETE":
            for lease in list(STATE.leases.values()):
                if lease.mount == path:
                    revoke_lease(lease, "mount disabled")
            STATE.mounts.pop(path, None)
            return 204, None
        if method == "GET":
            m = STATE.mounts.get(path)
            if m is None:
                raise VaultError(400, "cannot fetch sysview for path")
            return 200, envelope({"type": m["type"], "options": m["options"]})
    if rest == "auth" and method == "GET":
        data = {p: {"type": m["type"], "accessor": m["accessor"], "description": "",
                    "config": {}, "local": False} for p, m in STATE.auth.items()}
        return 200, dict(envelope(data), **data)
    if rest.startswith("auth/"):
        path = rest[len("auth/"):].strip("/") + "/"
        if method in ("POST", "PUT"):
            if path in STATE.auth:
                raise VaultError(400, f"path is already in use at {path}")
            typ = body.get("type", "")
            if typ not in ("approle", "cert", "kubernetes", "jwt", "token"):
                raise VaultError(400, f"plugin not found in the catalog: {typ}")
            STATE.auth[path] = {"type": typ, "accessor": f"auth_{typ}_{rand_alnum(8)}",
                                "roles": {}, "config": None}
            return 204, None
        if method == "DELETE":
            STATE.auth.pop(path, None)
            return 204, None
    for prefix in ("policies/acl", "policy"):
        if rest == prefix and method in ("GET", "LIST"):
            keys = sorted(STATE.policies) + ["root"]
            return 200, dict(envelope({"keys": keys, "policies": keys}), policies=keys,
                             keys=keys)
        if rest.startswith(prefix + "/"):
            name = rest[len(prefix) + 1:]
            if method in ("POST", "PUT"):
                if name in ("root",):
                    raise VaultError(400, "cannot update \"root\" policy")
                text = body.get("policy", body.get("rules", ""))
                STATE.add_policy(name, text)
                return 204, None
            if method == "GET":
                if name not in STATE.policies:
                    raise VaultError(404)
                p = STATE.policies[name]
                return 200, dict(envelope({"name": name, "policy": p["text"],
                                           "rules": p["text"]}), name=name, rules=p["text"])
            if method == "DELETE":
                STATE.policies.pop(name, None)
                return 204, None
    if rest in ("leases/renew", "renew") or rest.startswith(("leases/renew/", "renew/")):
        lid = body.get("lease_id") or rest.split("/", 2 if rest.startswith("leases") else 1)[-1]
        lease = STATE.leases.get(lid)
        if lease is None or lid in ("renew", "leases/renew"):
            raise VaultError(400, "lease not found")
        check_lease_owner(tok, lease)
        d = renew_lease(lease, parse_duration(body.get("increment")))
        return 200, envelope(None, lease_id=lid, lease_duration=d, renewable=True)
    if rest == "leases/lookup" and method in ("POST", "PUT"):
        # vault/logical_system.go handleLeaseLookup: 400 "lease_id must be
        # specified" / "invalid lease" (unknown, revoked, or expired and so
        # revoked); data id, issue_time, expire_time, last_renewal (null
        # until renewed), renewable (false once expired), ttl (seconds).
        lid = str(body.get("lease_id") or "")
        if not lid:
            raise VaultError(400, "lease_id must be specified")
        lease = STATE.leases.get(lid)
        if lease is None:
            raise VaultError(400, "invalid lease")
        now = time.time()
        return 200, envelope({"id": lease.id, "issue_time": rfc3339(lease.issued),
                              "expire_time": rfc3339(lease.expire),
                              "last_renewal": rfc3339(lease.last_renewal),
                              "renewable": lease.renewable and lease.expire > now,
                              "ttl": max(0, int(round(lease.expire - now)))})
    if rest in ("leases/revoke", "revoke") or rest.startswith(("leases/revoke/", "revoke/")):
        if rest.startswith(("leases/revoke-prefix", "revoke-prefix")):
            pass
        else:
            lid = body.get("lease_id") or rest.split("/", 2 if rest.startswith("leases") else 1)[-1]
            lease = STATE.leases.get(lid)
            if lease is not None:
                check_lease_owner(tok, lease)
                revoke_lease(lease, "revoked")
                if lease.id in STATE.leases:
                    raise VaultError(500, "failed to revoke lease")
            return 204, None
    if rest.startswith(("leases/revoke-prefix/", "revoke-prefix/")):
        prefix = rest.split("revoke-prefix/", 1)[1]
        if "root" not in tok.policies and "sudo" not in capabilities(tok.policies, "sys/" + rest):
            raise permission_denied()
        for lease in list(STATE.leases.values()):
            if lease.id.startswith(prefix):
                revoke_lease(lease, "revoke-prefix")
        return 204, None
    raise VaultError(404, f"no handler for route \"sys/{rest}\". route entry not found.")


def check_lease_owner(tok, lease):
    # Any token with the capability may renew or revoke; nothing more to check.
    return


def new_mount(typ, opts):
    m = {"type": typ, "options": opts, "accessor": f"{typ}_{rand_alnum(8)}", "data": {}}
    if typ == "database":
        m["data"] = {"config": {}, "roles": {}, "static": {}}
    return m


def handle_vaultsim(rest, method, body):
    """Fault injection for tests (root token only), under /v1/sys/vaultsim/:

    POST fail  {path_prefix, status=500, count, seconds, message, retry_after}
        answer `status` to matching requests: the next `count` (default 1
        when neither is given), or all arriving within `seconds` from now
        (both: whichever ends first) -> data {id, ...}
    POST hang  {path_prefix, seconds, count, after="answer"|"close"|"reset"}
        hold matching requests unanswered until `seconds` pass or the fault
        is cleared, then answer them (or close/reset the connection)
    POST latency {ms}; POST seal / unseal
    GET  faults -> data.faults: [{id, kind, path_prefix, count_left,
        seconds_left, matched, status|holding, ...}, {kind: latency, ms},
        {kind: seal}]
    POST faults/clear {kind?, id?} | DELETE faults | DELETE faults/<id>
        -> data.cleared (clearing all also unseals and zeroes latency)
    path_prefix is relative to /v1/ ("" = every path); sys/vaultsim/* itself
    is never failed, held or slowed."""
    if rest in ("fail", "hang"):
        prefix = str(body.get("path_prefix") or "").lstrip("/")
        if prefix.startswith("v1/"):
            prefix = prefix[3:]
        count = body.get("count")
        seconds = body.get("seconds")
        count = None if count is None else int(count)
        seconds = None if seconds is None else float(seconds)
        if rest == "fail":
            if count is None and seconds is None:
                count = 1  # the historical default: the next matching request
            f = Fault("fail", prefix, count, seconds, status=int(body.get("status", 500)),
                      message=body.get("message"), retry_after=body.get("retry_after"))
        else:
            after = body.get("after", "answer")
            if after not in ("answer", "close", "reset"):
                raise VaultError(400, "after must be answer, close or reset")
            f = Fault("hang", prefix, count, seconds, after=after)
        STATE.faults.append(f)
        log(f"fault {f.id} injected: {f.kind} {json.dumps(f.describe(time.monotonic()))}")
        return 200, envelope(f.describe(time.monotonic()))
    if rest == "faults" and method == "GET":
        now = time.monotonic()
        prune_faults(now)
        listed = [f.describe(now) for f in STATE.faults]
        if STATE.latency_ms:
            listed.append({"kind": "latency", "path_prefix": "", "ms": STATE.latency_ms})
        if STATE.sealed:
            listed.append({"kind": "seal"})
        return 200, envelope({"faults": listed})
    if (rest == "faults" and method == "DELETE") or rest == "faults/clear" or \
            (rest.startswith("faults/") and method == "DELETE"):
        kind = body.get("kind")
        fid = body.get("id")
        if rest.startswith("faults/") and rest != "faults/clear":
            fid = rest.split("/", 1)[1]
        if kind is not None and kind not in ("fail", "hang", "latency", "seal"):
            raise VaultError(400, "kind must be fail, hang, latency or seal")
        n = clear_faults(kind, None if fid is None else int(fid))
        log(f"faults cleared: {n} (kind {kind}, id {fid})")
        return 200, envelope({"cleared": n})
    if rest == "latency":
        STATE.latency_ms = int(body.get("ms", 0))
        return 204, None
    if rest == "seal":
        STATE.sealed = True
        return 204, None
    if rest == "unseal":
        STATE.sealed = False
        return 204, None
    if rest == "revoke-lease":
        lease = STATE.leases.get(body.get("lease_id", ""))
        if lease is None:
            raise VaultError(400, "lease not found")
        revoke_lease(lease, "operator")
        return 204, None
    if rest == "shorten-lease":
        lease = STATE.leases.get(body.get("lease_id", ""))
        if lease is None:
            raise VaultError(400, "lease not found")
        lease.expire = time.time() + float(body.get("ttl", 0))
        lease.max_expire = min(lease.max_expire, lease.expire)
        return 204, None
    if rest == "k8s-tokens":
        STATE.k8s_tokens.add(body["jwt"])
        return 204, None
    if rest == "state" and method == "GET":
        now = time.time()
        return 200, envelope({
            "leases": [{"lease_id": l.id, "username": l.username, "password": l.password,
                        "expire_time": rfc3339(l.expire), "ttl": l.expire - now,
                        "max_expire_time": rfc3339(l.max_expire)}
                       for l in STATE.leases.values()],
            "tokens": len(STATE.tokens), "sealed": STATE.sealed,
            "issued_secrets": STATE.issued_secrets})
    raise VaultError(404, f"no handler for route \"sys/vaultsim/{rest}\"")


# ---------------------------------------------------------------- dispatch

UNAUTHENTICATED = {"sys/health", "sys/seal-status", "sys/wrapping/unwrap"}


def required_capability(method, path):
    if method == "LIST":
        return "list"
    if method == "GET":
        return "read"
    if method == "DELETE":
        return "delete"
    return "update"


def dispatch(method, path, body, token_id, query):
    status, obj, mount_type = route(method, path, body, token_id, query)
    if isinstance(obj, dict) and "request_id" in obj and mount_type and \
            path != "sys/wrapping/unwrap":
        obj["mount_type"] = mount_type
    return status, obj


def route(method, path, body, token_id, query):
    """(status, body, mount type) of one request."""
    status, obj = _route(method, path, body, token_id, query)
    if path.startswith("sys/"):
        return status, obj, "system"
    if path.startswith("auth/"):
        m, _ = mount_for(path[len("auth/"):], STATE.auth)
        return status, obj, STATE.auth[m]["type"] if m in STATE.auth else ""
    m, _ = mount_for(path, STATE.mounts)
    return status, obj, STATE.mounts[m]["type"] if m in STATE.mounts else ""


def _route(method, path, body, token_id, query):
    if path == "sys/health":
        code = 503 if STATE.sealed else 200
        return code, {"initialized": True, "sealed": STATE.sealed, "standby": False,
                      "performance_standby": False, "replication_performance_mode": "disabled",
                      "replication_dr_mode": "disabled", "server_time_utc": int(time.time()),
                      "version": VERSION, "cluster_name": "vault-cluster-vaultsim",
                      "cluster_id": "00000000-0000-0000-0000-000000000000"}
    if path == "sys/seal-status":
        return 200, {"type": "shamir", "initialized": True, "sealed": STATE.sealed, "t": 1,
                     "n": 1, "progress": 0, "version": VERSION, "storage_type": "inmem"}
    tok = STATE.tokens.get(token_id) if token_id else None
    if path.startswith("sys/vaultsim/"):
        if tok is None or "root" not in tok.policies:
            raise permission_denied()
        return handle_vaultsim(path[len("sys/vaultsim/"):], method, body)
    if STATE.sealed:
        raise VaultError(503, "Vault is sealed")
    if path == "sys/wrapping/unwrap":
        wt = body.get("token") or token_id
        entry = STATE.wrapped.pop(wt, None) if wt else None
        if entry is None:
            raise VaultError(400, "wrapping token is not valid or does not exist")
        return 200, entry[1]

    auth_mount, rest = mount_for(path[len("auth/"):], STATE.auth) if path.startswith("auth/") \
        else (None, None)
    is_login = auth_mount is not None and rest == "login"
    if not is_login:
        if tok is None:
            raise permission_denied()
        caps = capabilities(tok.policies, path)
        need = required_capability(method, path)
        if "root" not in caps and ("deny" in caps or not (
                need in caps or (need == "update" and "create" in caps))):
            raise permission_denied()
        if tok.num_uses:
            tok.num_uses -= 1
            if tok.num_uses == 0:
                revoke_token(tok, "used up")
    if auth_mount is not None:
        m = STATE.auth[auth_mount]
        if m["type"] == "token":
            return handle_token(rest, method, body, tok)
        if m["type"] == "approle":
            return handle_approle(auth_mount, m, rest, method, body)
        if m["type"] == "kubernetes":
            return handle_kubernetes(auth_mount, m, rest, method, body)
        if m["type"] == "jwt":
            return handle_jwt(auth_mount, m, rest, method, body)
        if m["type"] == "cert":
            return handle_cert(auth_mount, m, rest, method, body)
    if path.startswith("sys/"):
        return handle_sys(path[4:], method, body, tok, query)
    mpath, rest = mount_for(path, STATE.mounts)
    if mpath is None:
        raise VaultError(404, f"no handler for route \"{path}\". route entry not found.")
    m = STATE.mounts[mpath]
    if m["type"] == "database":
        return handle_database(mpath, m, rest, method, body, tok)
    if m["type"] in ("kv", "cubbyhole"):
        return handle_kv(mpath, m, rest, method, body, query)
    raise VaultError(404, f"no handler for route \"{path}\". route entry not found.")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vaultsim"

    def log_message(self, fmt, *args):  # replaced by one line per request below
        pass

    def _respond(self, status, obj, extra=None):
        payload = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _handle(self, method):
        t0 = time.time()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, obj, extra = 500, None, {}
        path = url.path
        try:
            if not path.startswith("/v1/"):
                raise VaultError(404)
            path = path[4:].strip("/")
            if method == "GET" and query.get("list", [""])[0] in ("true", "1"):
                method = "LIST"
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise VaultError(400, "failed to parse JSON input: invalid character")
            if not isinstance(body, dict):
                body = {}
            test_only = path.startswith("sys/vaultsim")
            hang = None
            with LOCK:
                now = time.monotonic()
                prune_faults(now)
                if not test_only:
                    hang = next((f for f in STATE.faults
                                 if f.kind == "hang" and f.matches(path, now)), None)
                    if hang is not None:
                        hang.take()
                        hang.holding += 1
            if hang is not None:
                # Held without an answer, outside the lock, until the fault
                # ends (its window closes or it is cleared).
                log(f"{method} /v1/{path} held by fault {hang.id}")
                hang.released.wait(None if hang.until is None
                                   else max(0.0, hang.until - time.monotonic()))
                with LOCK:
                    hang.holding -= 1
                if hang.after != "answer":
                    log(f"{method} /v1/{path} -> connection closed by fault {hang.id} "
                        f"({hang.after}, {(time.time() - t0) * 1000:.0f} ms)")
                    self._drop(hang.after == "reset")
                    return
            with LOCK:
                now = time.monotonic()
                for f in STATE.faults:
                    if f.kind == "fail" and not test_only and f.matches(path, now):
                        f.take()
                        raise f.error(path)
                latency = STATE.latency_ms if not test_only else 0
            if latency:
                time.sleep(latency / 1000)
            try:
                REQUEST.peer_cert = self.connection.getpeercert(binary_form=True)
            except (AttributeError, ValueError):
                REQUEST.peer_cert = None  # plain http, or no certificate
            with LOCK:
                status, obj = dispatch(method, path, body,
                                       self.headers.get("X-Vault-Token"), query)
                wrap_ttl = self.headers.get("X-Vault-Wrap-TTL")
                if wrap_ttl and status == 200 and obj is not None and \
                        path != "sys/wrapping/unwrap":
                    ttl = parse_duration(wrap_ttl)
                    wt = "hvs." + rand_alnum(24)
                    STATE.issued_secrets.append(wt)
                    STATE.wrapped[wt] = (time.time() + ttl, obj, path)
                    obj = envelope(wrap_info={"token": wt, "accessor": rand_alnum(24),
                                              "ttl": ttl, "creation_time": rfc3339(time.time()),
                                              "creation_path": path, "wrapped_accessor": ""})
        except VaultError as e:
            status, obj, extra = e.status, {"errors": e.errors}, e.headers
        except Exception as e:  # a bug or a database failure: Vault says 500
            status, obj = 500, {"errors": [f"1 error occurred:\n\t* {e}\n\n"]}
            log(f"internal error on {method} {path}: {e!r}")
        log(f"{method} /v1/{path} -> {status} ({(time.time() - t0) * 1000:.0f} ms)")
        self._respond(status, obj, extra)

    def _drop(self, reset):
        """Ends the connection without an answer (a hung Vault given up on,
        or a proxy/load balancer cutting it)."""
        import socket
        import struct
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_LIST(self):
        self._handle("LIST")


def parse_args(argv):
    opts = {"dev-root-token-id": None, "dev-listen-address": "127.0.0.1:8200",
            "log-file": None, "tls-cert-file": None, "tls-key-file": None}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("server", "-dev", "--dev"):
            i += 1
            continue
        name = a.lstrip("-")
        if "=" in name:
            name, value = name.split("=", 1)
        elif i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        else:
            sys.exit(f"vaultsim: {a} needs a value")
        if name not in opts:
            sys.exit(f"vaultsim: unknown flag {a}")
        opts[name] = value
        i += 1
    return opts


def main(argv):
    global LOG
    opts = parse_args(argv)
    if opts["log-file"]:
        LOG = open(opts["log-file"], "a", buffering=1)
    root_id = opts["dev-root-token-id"] or ("hvs." + rand_alnum(24))
    root = Token(["root"], 0, root=True, display_name="root", path="auth/token/root")
    root.id = root_id
    STATE.tokens[root_id] = root
    STATE.root_token = root_id
    STATE.add_policy("default", DEFAULT_POLICY)
    STATE.mounts["secret/"] = new_mount("kv", {"version": "2"})
    STATE.mounts["cubbyhole/"] = new_mount("cubbyhole", {})
    STATE.auth["token/"] = {"type": "token", "accessor": "auth_token_" + rand_alnum(8),
                            "roles": {}, "config": None}
    host, _, port = opts["dev-listen-address"].rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    scheme = "http"
    if opts["tls-cert-file"]:
        # Like a Vault listener's tls_cert_file / tls_key_file.
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(opts["tls-cert-file"], opts["tls-key-file"])
        request_any_client_cert(ctx)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=reaper, daemon=True).start()
    print(f"==> Vault server (vaultsim {VERSION}) started! Listening on "
          f"{scheme}://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
