"""Test harness: a throwaway PostgreSQL 15 cluster and the Vault stand-in
(tests/vaultsim/vaultsim.py), both always stopped and removed.

Usage:

    pg = PgCluster()               # initdb + start, superuser vaultadmin, db "app"
    pg.sql("select 1")             # as postgres over the private unix socket
    pg.connect(user=u, password=p) # TCP 127.0.0.1 + SCRAM, autocommit
    v = VaultSim()                 # random root token, free port, log file
    v.setup_database(pg)           # database/ mount, config "pg", role "app-rw"
    v.client()                     # hvac.Client with the root token
    v.fault("seal")                # POST /v1/sys/vaultsim/seal
    v.stop(); pg.stop()            # idempotent
"""
import atexit
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VAULTSIM = REPO / "tests" / "vaultsim" / "vaultsim.py"
PGBIN = Path("/usr/lib/postgresql/15/bin")
PYTHON = "/usr/bin/python3"

# Everything started here is stopped at interpreter exit even if a fixture
# finalizer never ran (Ctrl-C, a crash in pytest itself).
_LIVE = set()


@atexit.register
def _stop_all():
    for obj in list(_LIVE):
        try:
            obj.stop()
        except Exception:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_postgres_user():
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)


def _as_postgres(*args, check=True, timeout=120):
    return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)],
                           check=check, capture_output=True, text=True, timeout=timeout,
                           cwd="/")


class PgCluster:
    """PostgreSQL 15: trust on its private unix socket, SCRAM on 127.0.0.1."""

    default_db = "app"

    def __init__(self, dbname="app", conf_extra="", hba=None, before_start=None):
        """conf_extra: lines added to postgresql.conf; hba: the whole
        pg_hba.conf instead of initdb's (keep a `local` trust line: sql()
        and connect() without a user use the unix socket); before_start:
        called with the cluster after initdb, before the first start (to
        put files such as a server certificate into self.data)."""
        _ensure_postgres_user()
        self.root = Path(tempfile.mkdtemp(prefix="pglease-pg-"))
        shutil.chown(self.root, "postgres")
        os.chmod(self.root, 0o700)
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        shutil.chown(self.socket_dir, "postgres")
        self.logfile = self.root / "postgres.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dbname = dbname
        self.running = False
        self._stopped = False
        _LIVE.add(self)
        try:
            _as_postgres(PGBIN / "initdb", "-D", self.data, "-U", "postgres",
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                         "--locale=C.UTF-8")
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"port = {self.port}\n"
                        "listen_addresses = '127.0.0.1'\n"
                        f"unix_socket_directories = '{self.socket_dir}'\n"
                        "password_encryption = scram-sha-256\n"
                        "max_connections = 300\n"
                        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                        "shared_buffers = 32MB\n" + conf_extra)
            if hba is not None:
                (self.data / "pg_hba.conf").write_text(hba)
            if before_start is not None:
                before_start(self)
            self.start()
            # A password-authenticated superuser over TCP, as Vault's database
            # engine is given.
            self.vault_user = "vaultadmin"
            self.vault_password = "va-" + secrets.token_hex(12)
            self.sql(f"CREATE ROLE {self.vault_user} WITH LOGIN SUPERUSER PASSWORD "
                     f"'{self.vault_password}'", dbname="postgres")
            self.sql(f'CREATE DATABASE "{dbname}"', dbname="postgres")
        except BaseException:
            self.stop()
            raise

    # -- connection strings ------------------------------------------------
    @property
    def superuser_dsn(self):
        """libpq DSN for the postgres superuser over the unix socket (trust)."""
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={self.dbname}"

    def dsn(self, user=None, password=None, dbname=None):
        """TCP DSN (SCRAM) for user/password; default the vault admin."""
        return (f"host={self.host} port={self.port} dbname={dbname or self.dbname} "
                f"user={user or self.vault_user} password={password or self.vault_password} "
                "sslmode=disable")

    def connect(self, dbname=None, user=None, password=None, **kw):
        """An autocommit psycopg connection: as postgres over the unix socket
        when no user is given, else as `user` over TCP with SCRAM."""
        import psycopg
        dbname = dbname or self.default_db
        if user is None:
            return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres",
                                   dbname=dbname, autocommit=True, **kw)
        return psycopg.connect(host=self.host, port=self.port, user=user,
                               password=password or "", dbname=dbname, sslmode="disable",
                               autocommit=True, connect_timeout=5, **kw)

    def owned_database(self, role, password, *dbnames):
        """A fresh login role owning fresh databases (dropped first if a
        previous run left them); the TCP conninfo of the first one."""
        with self.connect("postgres") as c:
            for db in dbnames:
                c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"DROP ROLE IF EXISTS {role}")
            c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            for db in dbnames:
                c.execute(f"CREATE DATABASE {db} OWNER {role}")
        return (f"host=127.0.0.1 port={self.port} dbname={dbnames[0]} user={role} "
                f"password={password}")

    def fresh_database(self, name, pgbench=False):
        """Drops `name` if a previous run left it, makes it again (owned by
        postgres), optionally with pgbench's tables (scale 1)."""
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {name}")
        if pgbench:
            subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", str(self.socket_dir), "-p",
                            str(self.port), "-U", "postgres", name], check=True,
                           capture_output=True, timeout=120)

    def sql(self, query, *args, dbname=None):
        """Runs one statement as postgres; rows (list of tuples) or None.
        Parameters: sql(q, (a, b)), sql(q, {"k": v}) or sql(q, a, b)."""
        if len(args) == 1 and isinstance(args[0], (tuple, list, dict)):
            params = args[0]
        else:
            params = args or None
        with self.connect(dbname) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        _as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "start")
        self.running = True

    def restart(self):
        _as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-l", self.logfile, "-m", "fast",
                     "-w", "restart")
        self.running = True

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """Idempotent: fast shutdown (immediate if that hangs), then rm -rf."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.running:
                r = _as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w",
                                 "-t", "20", "stop", check=False, timeout=40)
                if r.returncode != 0:
                    _as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w",
                                 "stop", check=False, timeout=40)
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)


class VaultSim:
    """tests/vaultsim/vaultsim.py on a free port with a random root token;
    its stdout and stderr go to self.log_path."""

    def __init__(self, tls=None, extra_args=()):
        """tls: (cert_file, key_file, ca_file) to serve https."""
        self.dir = Path(tempfile.mkdtemp(prefix="vaultsim-"))
        self.port = free_port()
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.root_token = "root-" + secrets.token_hex(12)
        self.log_path = self.dir / "vaultsim.log"
        self._log = open(self.log_path, "ab")
        self._ssl = None
        self._stopped = False
        self.tls = tls
        args = list(extra_args)
        if tls:
            import ssl
            self._ssl = ssl.create_default_context(cafile=str(tls[2]))
            args += [f"-tls-cert-file={tls[0]}", f"-tls-key-file={tls[1]}"]
        self.proc = subprocess.Popen(
            [PYTHON, str(VAULTSIM), f"-dev-root-token-id={self.root_token}",
             f"-dev-listen-address=127.0.0.1:{self.port}", *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _LIVE.add(self)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.request("GET", "sys/health", token=False)[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("vaultsim did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- raw API -------------------------------------------------------------
    def request(self, method, path, body=None, token=None, headers=None, timeout=15):
        """Raw API call: (status, parsed JSON or None). token=False: none."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        req.add_header("X-Vault-Request", "true")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token is not False:
            req.add_header("X-Vault-Token", token or self.root_token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else None
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}

    def api(self, method, path, body=None, token=None, headers=None):
        status, obj = self.request(method, path, body, token, headers)
        if status >= 300:
            raise AssertionError(f"{method} {path}: {status} {obj}")
        return obj

    def client(self, token=None):
        import hvac
        return hvac.Client(url=self.addr, token=token or self.root_token,
                           verify=str(self.tls[2]) if self.tls else True)

    # -- test-only API -------------------------------------------------------
    def fault(self, what, **body):
        """POST /v1/sys/vaultsim/<what>: fail, latency, seal, unseal,
        revoke-lease, shorten-lease, k8s-tokens."""
        return self.api("POST", f"sys/vaultsim/{what}", body)

    def fail_next(self, count=1, status=500, path_prefix=""):
        return self.fault("fail", count=count, status=status, path_prefix=path_prefix)

    def latency(self, ms):
        return self.fault("latency", ms=ms)

    def seal(self):
        return self.fault("seal")

    def unseal(self):
        return self.fault("unseal")

    def fail_for(self, seconds, status=503, path_prefix="", message=None, retry_after=None):
        """Every request under path_prefix (relative to /v1/, "" = all but
        sys/vaultsim/*) is answered `status` with Vault's {"errors": [...]}
        body for `seconds` from now (503: "Vault is sealed", 429: "... rate
        limit quota exceeded", unless message is given; retry_after: a
        Retry-After header). Returns the fault's id."""
        return self.fault("fail", seconds=seconds, status=status, path_prefix=path_prefix,
                          message=message, retry_after=retry_after)["data"]["id"]

    def hang(self, seconds=None, path_prefix="", count=None, after="answer"):
        """Requests under path_prefix get no answer while the fault lasts:
        `seconds` from now, or until clear_faults() when None. count: only
        the next `count` matching requests are held (None: all). When the
        fault ends a held request is answered normally (after="answer"), or
        its connection is closed ("close") or reset ("reset") unanswered.
        Only HTTP answers wait: leases still expire on time (for a frozen
        process use sigstop()). Returns the fault's id."""
        return self.fault("hang", seconds=seconds, path_prefix=path_prefix, count=count,
                          after=after)["data"]["id"]

    def faults(self):
        """The active faults, each a dict: kind "fail" (id, path_prefix,
        status, message, retry_after, count_left, seconds_left, matched),
        "hang" (id, path_prefix, after, count_left, seconds_left, matched,
        holding = requests held now), "latency" (ms) or "seal".
        count_left/seconds_left are None when unbounded."""
        return self.api("GET", "sys/vaultsim/faults")["data"]["faults"]

    def clear_faults(self, kind=None, fault_id=None):
        """Ends all faults, or those of one kind ("fail", "hang", "latency",
        "seal"), or the one with fault_id; held requests are let go at once
        and latency/seal are reset. Returns how many were cleared."""
        body = {}
        if kind is not None:
            body["kind"] = kind
        if fault_id is not None:
            body["id"] = fault_id
        return self.api("POST", "sys/vaultsim/faults/clear", body)["data"]["cleared"]

    def sigstop(self):
        """Freezes the whole stand-in (SIGSTOP): no answers, no lease expiry."""
        self.proc.send_signal(signal.SIGSTOP)

    def sigcont(self):
        self.proc.send_signal(signal.SIGCONT)

    def state(self):
        return self.api("GET", "sys/vaultsim/state")["data"]

    def leases(self):
        return self.state()["leases"]

    # -- setup helpers -------------------------------------------------------
    def setup_database(self, pg, superuser=None, superpass=None, *, role="app-rw",
                       db_name="pg", dbname=None, default_ttl="1h", max_ttl="24h",
                       mount="database", creation=None, enable_mount=True, **role_extra):
        """Database engine with one connection and one dynamic role, configured
        through the API as an operator would. The admin is pg.vault_user
        unless superuser/superpass are given."""
        dbname = dbname or getattr(pg, "dbname", "postgres")
        if enable_mount:
            status, obj = self.request("GET", "sys/mounts")
            if f"{mount}/" not in (obj or {}).get("data", {}):
                self.api("POST", f"sys/mounts/{mount}", {"type": "database"})
        self.api("POST", f"{mount}/config/{db_name}", {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:"
                              f"{pg.port}/{dbname}?sslmode=disable",
            "username": superuser or pg.vault_user,
            "password": superpass or pg.vault_password,
            "allowed_roles": "*"})
        self.api("POST", f"{mount}/roles/{role}", dict({
            "db_name": db_name,
            "creation_statements": creation or [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                "VALID UNTIL '{{expiration}}';",
                f"GRANT CONNECT ON DATABASE \"{dbname}\" TO \"{{{{name}}}}\";"],
            "default_ttl": default_ttl, "max_ttl": max_ttl}, **role_extra))

    # -- lifecycle -------------------------------------------------------------
    def stop(self):
        """Idempotent: SIGTERM, SIGKILL after 5 s. The log file stays (its
        path is self.log_path) so a failing test can show it."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self._log.close()
            _LIVE.discard(self)


def drop_vault_roles(pg, pattern="v-%"):
    """Drops roles a test left behind (leases never revoked), with anything
    they own or were granted, in every database."""
    for (name,) in pg.sql("select rolname from pg_roles where rolname like %s", (pattern,),
                          dbname="postgres"):
        q = '"' + name.replace('"', '""') + '"'
        for (db,) in pg.sql("select datname from pg_database where datallowconn",
                            dbname="postgres"):
            try:
                pg.sql(f"DROP OWNED BY {q}", dbname=db)
            except Exception:
                pass
        pg.sql(f"DROP ROLE IF EXISTS {q}", dbname="postgres")
