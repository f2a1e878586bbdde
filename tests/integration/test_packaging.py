"""What an operator installs and deploys, checked as far as this machine
allows: `meson install` (binary, man page, sample config), the sample and
the Kubernetes ConfigMap passing `pglease --check`, the man page linted, the
systemd unit verified by systemd-analyze, the Kubernetes manifests and the
Dockerfile checked for what docs/deployment.md promises (building the image
and running a cluster are not possible here). Also the keys packaging leans
on: `log_level` (per-transaction lines only at debug, measured with
pgbench), `workers` (refused above 1) and long `[databases]` entries over
continuation lines."""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import REPO
from pglease_proc import PgLease, build_dir

PGLEASE = build_dir() / "proxy" / "pglease"
DEPLOY = REPO / "deploy"
SAMPLE = DEPLOY / "pglease.ini"


def clean_env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PGLEASE_", "VAULT_"))}
    e.update(extra)
    return e


def check(config, cwd=None, binary=PGLEASE, **env):
    return subprocess.run([str(binary), "--check", "-c", str(config)], capture_output=True,
                          text=True, timeout=30, cwd=cwd, env=clean_env(**env),
                          stdin=subprocess.DEVNULL)


def secret(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return path


def sample_files(d):
    """The files the sample names, relative to where pglease runs."""
    secret(d / "userlist.txt", '"app" "app-password"\n"admin" "admin-password"\n')
    secret(d / "role-id", "4a5b-role\n")
    secret(d / "secret-id", "6c7d-secret\n")


# ---- meson install ---------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`meson install --destdir` of the build under test; the list of files."""
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["meson", "install", "-C", str(build_dir()), "--no-rebuild",
                        "--destdir", str(dest)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    print("installed:", *files, sep="\n  ")
    return dest, files


def one(files, suffix):
    hits = [f for f in files if f.endswith(suffix)]
    assert len(hits) == 1, (suffix, files)
    return hits[0]


def test_meson_install_lists_binary_man_page_and_sample(installed):
    dest, files = installed
    binary = one(files, "/bin/pglease")
    man = one(files, "/share/man/man1/pglease.1")
    sample = one(files, "/share/doc/pglease/pglease.ini")
    prefix = binary[: -len("/bin/pglease")]
    # Everything under one prefix; the sample is documentation, not /etc.
    assert man.startswith(prefix) and sample.startswith(prefix), files
    assert not any(f.startswith("etc/") for f in files), files
    assert os.access(dest / binary, os.X_OK)
    assert (dest / sample).read_text() == SAMPLE.read_text()
    r = subprocess.run([str(dest / binary), "--version"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("pglease "), r


def test_installed_sample_passes_check(installed, tmp_path):
    dest, files = installed
    binary = dest / one(files, "/bin/pglease")
    sample = dest / one(files, "/share/doc/pglease/pglease.ini")
    sample_files(tmp_path)
    r = check(sample, cwd=tmp_path, binary=binary)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid (1 database)" in r.stdout
    assert r.stderr == "", r.stderr  # not even a warning


def test_sample_check_looks_at_the_files_it_names(tmp_path):
    """The check above is not vacuous: without the files it fails, naming them."""
    r = check(SAMPLE, cwd=tmp_path)
    assert r.returncode == 1
    assert "[pglease] auth_file: cannot read \"userlist.txt\"" in r.stderr, r.stderr
    sample_files(tmp_path)
    (tmp_path / "secret-id").unlink()
    r = check(SAMPLE, cwd=tmp_path)
    assert r.returncode == 1
    assert "[vault] secret_id_file: cannot read \"secret-id\"" in r.stderr, r.stderr


def table_keys():
    """(section, key) of every key in conf/pgl_conf.c's key table."""
    src = (REPO / "conf" / "pgl_conf.c").read_text()
    sec = {"PG": "pglease", "VA": "vault"}
    keys = [(sec[m[0]], m[1]) for m in re.findall(r"\{(PG|VA)\((\w+)\)", src)]
    assert len(keys) > 40
    return keys


def test_sample_documents_every_key():
    """Every key of the table is in the sample, set or commented out, in its
    section, with a comment line just above it."""
    section, seen, prev = None, {}, ""
    for line in SAMPLE.read_text().splitlines():
        m = re.match(r"\[(\w+)\]", line)
        if m:
            section = m[1]
            continue
        m = re.match(r";?(\w+) =( |$)", line)
        if m and section in ("pglease", "vault"):
            seen[(section, m[1])] = prev.startswith(";") and not re.match(r";?\w+ =( |$)", prev)
        prev = line
    missing = [k for k in table_keys() if k not in seen]
    assert missing == [], f"keys missing from deploy/pglease.ini: {missing}"
    undocumented = [k for k, commented in seen.items() if not commented]
    assert undocumented == [], f"keys without a comment above them: {undocumented}"
    unknown = [k for k in seen if k not in table_keys()]
    assert unknown == [], f"keys in the sample that pglease does not know: {unknown}"


# ---- man page ----------------------------------------------------------------------

def test_man_page_lints_clean():
    page = REPO / "man" / "pglease.1"
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "style", str(page)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    text = subprocess.run(["mandoc", "-T", "ascii", str(page)], capture_output=True,
                          text=True, timeout=30, check=True).stdout
    text = re.sub(r".\x08", "", text)
    for heading in ("SYNOPSIS", "OPTIONS", "SIGNALS", "FILES", "EXIT STATUS", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading
    # Every option --help prints is in the manual.
    usage = subprocess.run([str(PGLEASE), "--help"], capture_output=True, text=True,
                           timeout=10).stdout
    for opt in re.findall(r"(--[a-z][a-z-]+)", usage):
        assert opt in text, opt
    for sig in ("SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"):
        assert sig in text, sig
    # The page's version is the program's.
    version = subprocess.run([str(PGLEASE), "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()[1]
    assert f'"pglease {version}"' in page.read_text().split("\n.TH ", 1)[1].splitlines()[0]


def test_mandoc_lint_can_fail(tmp_path):
    bad = tmp_path / "bad.1"
    bad.write_text(".TH BAD 1\n.SH NAME\nbad \\- x\n.SH SYNOPSIS\n.BR\n")
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "style", str(bad)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 or r.stdout + r.stderr != ""


# ---- systemd unit ---------------------------------------------------------------------

def unit_settings(text):
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def verify_unit(tmp_path, text, installed):
    """systemd-analyze verify on a copy whose binary is the built one (the
    unit names /usr/bin/pglease, absent here) and whose man page is found."""
    dest, files = installed
    unit = tmp_path / "pglease.service"
    unit.write_text(text.replace("/usr/bin/pglease", str(PGLEASE)))
    man = dest / one(files, "/share/man/man1/pglease.1")
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "MANPATH": str(man.parent.parent)})


def test_systemd_unit_verifies(tmp_path, installed):
    text = (DEPLOY / "pglease.service").read_text()
    r = verify_unit(tmp_path, text, installed)
    # systemd-analyze exits 0 on some problems it only prints: none allowed.
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    s = unit_settings(text)
    assert s["Type"] == ["notify"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"] == ["/usr/bin/pglease -c /etc/pglease/pglease.ini"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert int(s["LimitNOFILE"][0]) >= 65536
    assert s["User"] != ["root"]
    # The stop timeout leaves shutdown_timeout (30 s default) room to drain.
    assert int(s["TimeoutStopSec"][0]) > 30
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes",
                       "CapabilityBoundingSet": ""}.items():
        assert s.get(key) == [value], key


def test_systemd_unit_exposure(tmp_path, installed):
    """systemd's own rating of the hardening, offline: below 2.5 of 10
    ("OK"; 1.5 when written: what is left is mostly the network pglease needs)."""
    verify_unit(tmp_path, (DEPLOY / "pglease.service").read_text(), installed)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=25",
                        "--no-pager", str(tmp_path / "pglease.service")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr


def test_systemd_verify_can_fail(tmp_path, installed):
    text = (DEPLOY / "pglease.service").read_text().replace("Type=notify", "Type=notifyy")
    r = verify_unit(tmp_path, text, installed)
    assert r.returncode != 0 or "notifyy" in r.stdout + r.stderr


# ---- Kubernetes -------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "pglease-sidecar.yaml").read_text()))
    return {d["kind"]: d for d in docs if d}


def containers(manifests):
    spec = manifests["Deployment"]["spec"]["template"]["spec"]
    return spec, {c["name"]: c for c in spec["containers"]}


def test_kubernetes_sidecar_fields(manifests):
    spec, cs = containers(manifests)
    px = cs["pglease"]
    assert px["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9127}
    assert px["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9127}
    assert "preStop" in px["lifecycle"]
    assert px["securityContext"]["readOnlyRootFilesystem"] is True
    assert px["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == manifests["ServiceAccount"]["metadata"]["name"]
    # Config from the ConfigMap, mounted where -c looks.
    vols = {v["name"]: v for v in spec["volumes"]}
    cfg = [m for m in px["volumeMounts"]
           if vols[m["name"]].get("configMap", {}).get("name")
           == manifests["ConfigMap"]["metadata"]["name"]]
    assert len(cfg) == 1
    assert px["args"] == ["-c", cfg[0]["mountPath"] + "/pglease.ini"]
    # The app talks to the sidecar on the loopback.
    env = {e["name"]: e.get("value") for e in cs["app"]["env"]}
    assert env["PGHOST"] == "127.0.0.1" and env["PGPORT"] == "6432"
    assert "@127.0.0.1:6432/" in env["DATABASE_URL"]
    # Termination leaves preStop + shutdown_timeout + revocation room.
    ini = manifests["ConfigMap"]["data"]["pglease.ini"]
    shutdown = int(re.search(r"^shutdown_timeout = (\d+)$", ini, re.M)[1])
    pre = px["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "/bin/sleep"
    assert spec["terminationGracePeriodSeconds"] >= int(pre[1]) + shutdown + 10


def test_kubernetes_configmap_passes_check(manifests, tmp_path):
    """The ConfigMap's pglease.ini, with the files it names provided here
    (the Secret's userlist, a stand-in service-account token)."""
    ini = manifests["ConfigMap"]["data"]["pglease.ini"]
    assert re.search(r"^auth_method = kubernetes$", ini, re.M)
    assert re.search(r"^jwt_file = /var/run/secrets/kubernetes.io/serviceaccount/token$", ini,
                     re.M)
    # The kubelet probes the pod IP: the HTTP endpoint must not be loopback-only.
    assert re.search(r"^http_listen = 0\.0\.0\.0:9127$", ini, re.M)
    assert re.search(r"^listen_addr = 127\.0\.0\.1$", ini, re.M)
    conf = tmp_path / "pglease.ini"
    conf.write_text(ini)
    users = secret(tmp_path / "userlist.txt",
                   manifests["Secret"]["stringData"]["userlist.txt"])
    jwt = tmp_path / "token"
    jwt.write_text("eyJhbGciOi.stand-in.token\n")
    r = check(conf, PGLEASE_PGLEASE_AUTH_FILE=str(users), PGLEASE_VAULT_JWT_FILE=str(jwt))
    assert r.returncode == 0, r.stderr


# ---- Dockerfile ---------------------------------------------------------------------

def dockerfile_stages():
    """[(FROM line, [(INSTRUCTION, args)])] with continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append((args, []))
        else:
            stages[-1][1].append((instr.upper(), args.strip()))
    return stages


def test_dockerfile_promises():
    stages = dockerfile_stages()
    assert [s[0] for s in stages] == ["debian:12 AS build", "debian:12-slim"]
    runtime = dict()
    for instr, args in stages[1][1]:
        runtime.setdefault(instr, []).append(args)
    assert runtime["STOPSIGNAL"] == ["SIGTERM"]
    (user,) = runtime["USER"]
    assert user.split(":")[0] not in ("0", "root")
    (hc,) = runtime["HEALTHCHECK"]
    assert "http://127.0.0.1:9127/healthz" in hc and '"curl"' in hc
    # The runtime stage installs curl (for the check) and runtime libraries
    # only: no -dev package, no compiler.
    runs = " ".join(runtime["RUN"])
    assert re.search(r"install .*\bcurl\b", runs)
    assert "-dev" not in runs and "build-essential" not in runs
    assert any(c.startswith("--from=build ") for c in runtime["COPY"])
    assert runtime["ENTRYPOINT"] == ['["/usr/bin/pglease"]']
    build = " ".join(a for i, a in stages[0][1] if i == "RUN")
    assert "meson install" in build and "deploy/runtime-packages" in build


def test_runtime_packages_of_the_built_binary():
    """What the runtime stage will install: run here on the binary under test."""
    r = subprocess.run([str(DEPLOY / "runtime-packages"), str(PGLEASE)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pkgs = r.stdout.split()
    for p in ("libc6", "libuv1", "libpq5", "libcurl4", "libssl3", "libinih1", "libjansson4",
              "libsystemd0"):
        assert p in pkgs, (p, pkgs)
    assert not [p for p in pkgs if p.endswith("-dev")], pkgs


# ---- keys: workers, log_level, long [databases] lines ---------------------------------

def minimal(d, pglease="", databases="app = host=127.0.0.1 port=5432 dbname=app user=u\n"):
    users = secret(d / "userlist.txt", '"alice" "secret"\n')
    conf = d / "pglease.ini"
    conf.write_text(f"[pglease]\nauth_file = {users}\nlisten_port = 1\n{pglease}"
                    f"[databases]\n{databases}")
    return conf


def test_workers_checked(tmp_path):
    # Any count from 1 to 64, or "auto"; anything else names file, line and key.
    for ok in ("workers = 1\n", "workers = 4\n", "workers = auto\n"):
        assert check(minimal(tmp_path, ok)).returncode == 0, ok
    for bad, why in (("workers = 0\n", "0 is out of range"),
                     ("workers = 65\n", "65 is out of range"),
                     ("workers = many\n", "many")):
        conf = minimal(tmp_path, bad)
        r = check(conf)
        assert r.returncode == 1 and f"{conf}:4: [pglease] workers: " in r.stderr, r.stderr
        assert why in r.stderr, r.stderr
    # Start-up refuses it the same way, before listening.
    r = subprocess.run([str(PGLEASE), "-c", str(minimal(tmp_path, "workers = 0\n"))],
                       capture_output=True, text=True, timeout=30, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "workers: 0 is out of range" in r.stderr, r.stderr


def test_log_level_checked(tmp_path):
    conf = minimal(tmp_path, "log_level = loud\n")
    r = check(conf)
    assert r.returncode == 1
    assert (f"{conf}:4: [pglease] log_level: \"loud\" is not one of error, warning, info, "
            "debug") in r.stderr, r.stderr


def test_long_database_entry_over_continuation_lines(tmp_path):
    name = "a" * 150
    long_entry = f"app = host=127.0.0.1 port=5432 dbname=app user=u application_name={name}\n"
    r = check(minimal(tmp_path, databases=long_entry))
    assert r.returncode == 1
    assert ":5: line longer than 198 bytes" in r.stderr, r.stderr
    split = (f"app = host=127.0.0.1 port=5432\n    dbname=app\n\n    ; the name is long\n"
             f"    user=u application_name={name}\n")
    r = check(minimal(tmp_path, databases=split))
    assert r.returncode == 0, r.stderr
    # A repeated name on its own line is still a duplicate.
    r = check(minimal(tmp_path, databases=split + "app = host=h user=u\n"))
    assert r.returncode == 1
    assert ":10: [databases] app: duplicate database (first at line 5)" in r.stderr, r.stderr


UPSTREAM_USER = "pgl_pkg"
UPSTREAM_PASSWORD = "pkg-pw-1"


@pytest.fixture(scope="module")
def upstream(pg):
    return pg.owned_database(UPSTREAM_USER, UPSTREAM_PASSWORD, "packaged")


def pgbench_lines(upstream, tmp_path, *args, transactions=200, **settings):
    """pglease lines written while pgbench runs `transactions` transactions
    (transaction pooling: a server handed out for each)."""
    script = tmp_path / "tx.sql"
    script.write_text("select 1;\n")
    p = PgLease({"app": upstream}, settings={"default_pool_size": 2, **settings})
    p.start(*args)
    try:
        before = len(p.log().splitlines())
        r = subprocess.run(["pgbench", "-n", "-c", "2", "-t", str(transactions // 2), "-f",
                            str(script), p.dsn()], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"actually processed: {transactions}/{transactions}" in r.stdout
        # Logged on close, but a line per transaction would be there already.
        lines = p.log().splitlines()[before:]
    finally:
        assert p.stop() == 0, p.log()
    return lines, p.log().splitlines()


def test_info_has_no_per_transaction_lines(upstream, tmp_path):
    lines, _ = pgbench_lines(upstream, tmp_path, log_level="info")
    # Per connection only: 2 logins, 2 server logins, a few more; never ~1 per transaction.
    assert len(lines) < 20, "\n".join(lines)
    assert not [ln for ln in lines if " DEBUG " in ln], "\n".join(lines)
    # pgbench's 2 clients, and the one it opens first to look at the server.
    assert sum(ln.endswith(": login") for ln in lines) <= 3, "\n".join(lines)


def test_debug_has_them(upstream, tmp_path):
    lines, _ = pgbench_lines(upstream, tmp_path, log_level="debug")
    assert sum(" DEBUG " in ln for ln in lines) >= 200 * 3, len(lines)


def test_verbose_flag_means_debug_whatever_log_level_says(upstream, tmp_path):
    lines, _ = pgbench_lines(upstream, tmp_path, "-v", transactions=20, log_level="error")
    assert sum(" DEBUG " in ln for ln in lines) >= 20, "\n".join(lines)


def test_warning_and_error_drop_info(upstream, tmp_path):
    _, everything = pgbench_lines(upstream, tmp_path, transactions=20, log_level="warning")
    assert not [ln for ln in everything if " INFO " in ln or " DEBUG " in ln], everything
    _, everything = pgbench_lines(upstream, tmp_path, transactions=20, log_level="error")
    assert not [ln for ln in everything if " WARNING " in ln or " INFO " in ln], everything


def reload_to(p, level):
    """Rewrites log_level, sends SIGHUP, waits (bounded) for the reload line."""
    import signal
    import time
    text = re.sub(r"^log_level = \w+$", f"log_level = {level}", p.config.read_text(), flags=re.M)
    p.config.write_text(text)
    n = p.log().count("reload (SIGHUP)")
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while p.log().count("reload (SIGHUP)") == n:
        assert time.monotonic() < deadline and p.proc.poll() is None, p.log()
        time.sleep(0.1)
    assert "failed" not in p.log().splitlines()[-1], p.log()


def select_one(p):
    r = subprocess.run(["psql", "-XAtq", "-c", "select 1", p.dsn()], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == "1", r.stderr


def test_log_level_changes_on_reload_and_v_stays(upstream):
    p = PgLease({"app": upstream}, settings={"log_level": "info"})
    p.start()
    try:
        select_one(p)
        assert " DEBUG " not in p.log()
        reload_to(p, "debug")
        before = len(p.log().splitlines())
        select_one(p)
        assert any(" DEBUG " in ln for ln in p.log().splitlines()[before:]), p.log()
    finally:
        assert p.stop() == 0, p.log()

    p = PgLease({"app": upstream}, settings={"log_level": "info"})
    p.start("-v")
    try:
        reload_to(p, "error")
        before = len(p.log().splitlines())
        select_one(p)
        assert any(" DEBUG " in ln for ln in p.log().splitlines()[before:]), p.log()
    finally:
        assert p.stop() == 0, p.log()
