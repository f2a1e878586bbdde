"""Running pglease in tests: a generated config and userlist, a free port,
the process started and always stopped, its log kept for assertions."""
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from harness import REPO, free_port  # noqa: F401  (free_port: used by importers)


def build_dir():
    return Path(os.environ.get("PGLEASE_BUILD_DIR", REPO / "build"))


class PgLease:
    """One pglease process. `users` maps local user -> userlist secret;
    `databases` maps name -> conninfo; `settings` are extra [pglease] keys."""

    def __init__(self, databases, users=None, settings=None, extra_sections=""):
        self.dir = Path(tempfile.mkdtemp(prefix="pglease-"))
        self.port = free_port()
        self.config = self.dir / "pglease.ini"
        self.log_path = self.dir / "pglease.log"
        self.proc = None
        self.write_config(databases, users or {"alice": "secret", "admin": "adminpw"},
                          settings, extra_sections)

    def write_config(self, databases, users, settings=None, extra_sections=""):
        """(Re)writes the config and userlist (a reload reads them again)."""
        self.databases, self.users = dict(databases), dict(users)
        self.settings, self.extra_sections = dict(settings or {}), extra_sections
        userlist = self.dir / "userlist.txt"
        userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in self.users.items()))
        userlist.chmod(0o600)  # a secret: pglease warns about a readable one
        keys = {"listen_addr": "127.0.0.1", "listen_port": self.port,
                "unix_socket_dir": self.dir, "auth_file": userlist, "admin_users": "admin",
                # Off unless a test asks: the default port would be shared by
                # every pglease a test run starts at once.
                "http_listen": ""}
        # The whole suite also runs with several event loops (CI sets it).
        if os.environ.get("PGLEASE_TEST_WORKERS"):
            keys["workers"] = os.environ["PGLEASE_TEST_WORKERS"]
        keys.update(self.settings)
        lines = ["[pglease]"] + [f"{k} = {v}" for k, v in keys.items()]
        lines += ["", "[databases]"]
        lines += [f"{name} = {conninfo}" for name, conninfo in self.databases.items()]
        self.config.write_text("\n".join(lines) + "\n" + extra_sections)

    def reload(self, databases=None, users=None, settings=None, extra_sections=None,
               expect="reload (SIGHUP)"):
        """Rewrites what is given, sends SIGHUP, waits for the reload's log
        line (`expect`, counted past the ones already there)."""
        before = self.log().count(expect)
        self.write_config(self.databases if databases is None else databases,
                          self.users if users is None else users,
                          self.settings if settings is None else settings,
                          self.extra_sections if extra_sections is None else extra_sections)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log().count(expect) <= before:
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.05)
        return self.log()

    def start(self, *args, wait=True, env=None, wrapper=()):
        """`wrapper`: a command to run pglease under (e.g. prlimit ... --)."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*wrapper, str(build_dir() / "proxy" / "pglease"), *args, "-c", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})})
        if wait:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pglease exited {self.proc.returncode}:\n{self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError(f"pglease did not listen:\n{self.log()}")
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dsn(self, user="alice", dbname="app", password=None, **extra):
        parts = {"host": "127.0.0.1", "port": self.port, "user": user, "dbname": dbname,
                 "password": self.users.get(user, "x") if password is None else password,
                 "connect_timeout": 10}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def wait_served(self, timeout):
        """Retries a fresh client until pglease serves it (bounded)."""
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(connect_timeout=5), autocommit=True) as c:
                    assert c.execute("select 1").fetchone()[0] == 1
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, self.log()[-3000:]
                time.sleep(0.2)

    def admin_rows(self, sql):
        """A console command's rows, as dicts by column name."""
        import psycopg
        with psycopg.connect(self.dsn(user="admin", dbname="pglease"), autocommit=True,
                             prepare_threshold=None) as c:
            cur = c.execute(sql)
            names = [d.name for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def wait_log(self, what, count=1, timeout=30):
        """Waits (bounded) until the log holds `what` `count` times."""
        deadline = time.monotonic() + timeout
        while self.log().count(what) < count:
            assert time.monotonic() < deadline, f"no {what!r} x{count}:\n" + self.log()[-4000:]
            time.sleep(0.1)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def rss_kb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc
