"""Running the Vault stand-in (tests/vaultsim/vaultsim.py) in tests: a random
root token, a free port, a log file; always stopped."""
import json
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pglease_proc import REPO, free_port

VAULTSIM = REPO / "tests" / "vaultsim" / "vaultsim.py"


class VaultSim:
    def __init__(self, tls=None):
        """tls: (cert_file, key_file, ca_file) to serve https."""
        self.dir = Path(tempfile.mkdtemp(prefix="vaultsim-"))
        self.port = free_port()
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.root_token = "root-" + secrets.token_hex(8)
        self.log_path = self.dir / "vaultsim.log"
        self._log = open(self.log_path, "ab")
        self._ssl = None
        args = []
        if tls:
            import ssl
            self._ssl = ssl.create_default_context(cafile=str(tls[2]))
            args = [f"-tls-cert-file={tls[0]}", f"-tls-key-file={tls[1]}"]
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(VAULTSIM), f"-dev-root-token-id={self.root_token}",
             f"-dev-listen-address=127.0.0.1:{self.port}", *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.request("GET", "sys/health")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("vaultsim did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def request(self, method, path, body=None, token=None, headers=None):
        """Raw API call: (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        req.add_header("X-Vault-Request", "true")
        if token is not False:
            req.add_header("X-Vault-Token", token or self.root_token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=15, context=self._ssl) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def api(self, method, path, body=None, token=None, headers=None):
        status, obj = self.request(method, path, body, token, headers)
        if status >= 300:
            raise AssertionError(f"{method} {path}: {status} {obj}")
        return obj

    def client(self, token=None):
        import hvac
        return hvac.Client(url=self.addr, token=token or self.root_token)

    def fault(self, what, **body):
        return self.api("POST", f"sys/vaultsim/{what}", body)

    def state(self):
        return self.api("GET", "sys/vaultsim/state")["data"]

    def setup_database(self, pg, superuser, superpass, role="app-rw", db_name="pg",
                       dbname="postgres", default_ttl="1h", max_ttl="24h", mount="database",
                       creation=None):
        """Database engine with one connection and one dynamic role, configured
        through the API as an operator would."""
        self.api("POST", f"sys/mounts/{mount}", {"type": "database"})
        self.api("POST", f"{mount}/config/{db_name}", {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:"
                              f"{pg.port}/{dbname}?sslmode=disable",
            "username": superuser, "password": superpass, "allowed_roles": "*"})
        self.api("POST", f"{mount}/roles/{role}", {
            "db_name": db_name,
            "creation_statements": creation or [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                "VALID UNTIL '{{expiration}}';",
                f"GRANT CONNECT ON DATABASE \"{dbname}\" TO \"{{{{name}}}}\";"],
            "default_ttl": default_ttl, "max_ttl": max_ttl})

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
