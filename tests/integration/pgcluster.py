"""A throwaway PostgreSQL 15 cluster for tests: initdb as the unprivileged
`postgres` user in a temp dir, a free loopback port, SCRAM for TCP, trust on
its private unix socket directory; always stopped and removed."""
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PGBIN = Path("/usr/lib/postgresql/15/bin")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user():
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)


class PgCluster:
    def __init__(self):
        _ensure_user()
        self.root = Path(tempfile.mkdtemp(prefix="pglease-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres")
        shutil.chown(self.socket_dir, "postgres")
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.logfile = self.root / "postgres.log"
        self._as_postgres(PGBIN / "initdb", "-D", self.data, "-U", "postgres",
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                          "--locale=C.UTF-8")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.socket_dir}'\n"
                    "password_encryption = scram-sha-256\nmax_connections = 300\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "shared_buffers = 64MB\n")
        self.running = False
        self.start()
        # A password-authenticated superuser over TCP, as Vault's database
        # engine would be given.
        self.vault_user = "vaultadmin"
        self.vault_password = "va-" + secrets.token_hex(12)
        self.sql(f"CREATE ROLE {self.vault_user} SUPERUSER LOGIN PASSWORD "
                 f"'{self.vault_password}'")

    def connect(self, dbname="postgres"):
        """A superuser connection over the private unix socket (trust)."""
        import psycopg
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres",
                               dbname=dbname, autocommit=True)

    def sql(self, query, params=None, dbname="postgres"):
        with self.connect(dbname) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None

    def _as_postgres(self, *args, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)],
                              check=check, capture_output=True, text=True, timeout=120,
                              cwd="/")

    def start(self):
        self._as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "start")
        self.running = True

    def restart(self):
        self._as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-l", self.logfile, "-m", "fast", "-w",
                          "restart")

    def stop(self):
        if self.running:
            self._as_postgres(PGBIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w",
                              "stop", check=False)
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)
