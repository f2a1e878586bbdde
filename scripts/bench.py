#!/usr/bin/python3
"""pglease vs PgBouncer vs direct, measured in the same run on the same
machine. Run through scripts/bench (which installs and builds first).

For each workload the three targets run interleaved, ROUNDS times, and the
median is reported with the ratios. Results go to stdout and, unless
--no-write, to docs/benchmarks.md with a description of the machine.
"""
import argparse
import calendar
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from harness import PgCluster, VaultSim  # noqa: E402
from pglease_proc import free_port  # noqa: E402

READING_GUIDE = """How to read it: every process here shares the same cores, so CPU a proxy
uses is CPU that Postgres and pgbench lose. The profile table shows where that
CPU goes during select-only -c 32: the share of all CPU samples per process,
how much of the proxy's own time is spent in the kernel, and the proxy's system
calls per transaction. Two receives and two sends per transaction are the
minimum for a proxy (one of each per direction). Rotation under load compares
the per-second TPS from 1 s before to 3 s after each credential takeover
(the worst such window, and the mean over all of them) with the median of the
other seconds; the steady seconds themselves vary by about ±8% here.
"""

POOL = 20
USER, PASSWORD = "app", "app-bench-pw"
UP_USER, UP_PASSWORD = "bench", "bench-upstream-pw"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proxy:
    def __init__(self, name, argv, port, workdir, run_as=None):
        self.name, self.port = name, port
        self.log = open(workdir / f"{name}.log", "ab")
        if run_as:
            argv = ["runuser", "-u", run_as, "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=raise_nofile, cwd="/")
        deadline = time.monotonic() + 15
        import socket
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.05)

    def pid(self):
        # runuser forks the real process
        if self.proc.args[0] == "runuser":
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                 text=True).stdout.split()
            return int(out[0]) if out else self.proc.pid
        return self.proc.pid

    def rss_kb(self):
        for line in Path(f"/proc/{self.pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        os.kill(self.pid(), signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def proxy_settings(port, userlist, max_clients=100):
    """The settings both proxies share, written once so they cannot drift."""
    return f"""listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
pool_mode = transaction
default_pool_size = {POOL}
max_client_conn = {max_clients}
"""


def pgbench_cmd(port, user, *args, db="bench"):
    """pgbench against 127.0.0.1:port, and the environment with the password."""
    password = PASSWORD if user == USER else UP_PASSWORD
    return (["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user, *args, db],
            dict(os.environ, PGPASSWORD=password))


def pgbench(port, db, args, seconds, password):
    cmd, env = pgbench_cmd(port, USER if password == PASSWORD else UP_USER, "-T", str(seconds),
                           *args, db=db)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=seconds + 120, preexec_fn=raise_nofile)
    out = r.stdout + r.stderr
    tps = re.search(r"tps = ([\d.]+) \((?:without|including)", out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if r.returncode != 0 or not tps:
        return None, None, out.strip().splitlines()[-1] if out.strip() else "failed"
    return float(tps.group(1)), float(lat.group(1)), int(failed.group(1)) if failed else 0


def idle_clients(port, db, n):
    """Opens n logged-in idle clients; returns them (caller closes)."""
    import psycopg
    conns = []
    for _ in range(n):
        conns.append(psycopg.connect(host="127.0.0.1", port=port, dbname=db, user=USER,
                                     password=PASSWORD, autocommit=True, connect_timeout=20))
    return conns


def profile(proxies, work, seconds):
    """Where a select-only -c 32 run through each proxy spends the machine:
    CPU share per process and kernel share of the proxy (perf), and system
    calls per transaction (strace). None when perf or strace is missing."""
    if not shutil.which("perf") or not shutil.which("strace"):
        return None
    result = {}
    for proxy in proxies:
        def load(duration):
            return pgbench_cmd(proxy.port, USER, "-S", "-c", "32", "-j", "2", "-T",
                               str(duration))
        data = work / f"perf-{proxy.name}.data"
        cmd, env = load(seconds + 3)
        bench = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env, preexec_fn=raise_nofile)
        time.sleep(1.5)
        subprocess.run(["perf", "record", "-a", "-q", "-o", str(data), "--", "sleep",
                        str(seconds)], capture_output=True, timeout=seconds + 60)
        bench.wait(seconds + 60)
        report = subprocess.run(["perf", "report", "-i", str(data), "--sort", "comm,dso",
                                 "--stdio"], capture_output=True, text=True).stdout
        data.unlink()
        share, kernel = {}, 0.0
        for pct, comm, dso in re.findall(r"^\s+([\d.]+)%\s+(\S+)\s+(\S+)", report, re.M):
            share[comm] = share.get(comm, 0.0) + float(pct)
            if comm == proxy.name and dso == "[kernel.kallsyms]":
                kernel = float(pct)
        total = share.get(proxy.name, 0.0)

        trace = work / f"strace-{proxy.name}.txt"
        strace = subprocess.Popen(["strace", "-c", "-f", "-p", str(proxy.pid()), "-o",
                                   str(trace)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(1)
        cmd, env = load(5)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                             preexec_fn=raise_nofile).stdout
        strace.send_signal(signal.SIGINT)
        strace.wait(30)
        txns = int(re.search(r"actually processed: (\d+)", out).group(1))
        calls = {name: int(n) for n, name in  # "% time seconds usecs/call calls [errors] name"
                 re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$",
                            trace.read_text(), re.M)}
        trace.unlink()
        calls.pop("total", None)
        result[proxy.name] = {
            "share": share, "kernel": kernel / total if total else 0.0,
            "per_txn": {k: v / txns for k, v in calls.items()},
        }
    return result


def profile_lines(prof):
    comms = ["postgres", "pgbench", "pglease", "pgbouncer"]
    lines = ["| select-only -c 32 through | " + " | ".join(f"{c} CPU" for c in comms) +
             " | proxy time in the kernel | proxy syscalls per transaction |",
             "| --- | " + " | ".join("---:" for _ in comms) + " | ---: | --- |"]
    for name, p in prof.items():
        calls = sorted(p["per_txn"].items(), key=lambda kv: -kv[1])
        calls_s = ", ".join(f"{k} {v:.2f}" for k, v in calls if v >= 0.01)
        lines.append(f"| {name} | " + " | ".join(f"{p['share'].get(c, 0.0):.0f}%" for c in comms)
                     + f" | {p['kernel'] * 100:.0f}% | {calls_s} |")
    return lines


# pglease learns a lease's real end when a renewal (at 2/3 of the ttl) comes
# back capped by max_ttl: with 15 s / 30 s that is at 20 s, 10 s before the
# end, leaving the new generation 5 s to replace the old one's servers before
# the old credential's deadline (end minus 3 s) nears; 20 logins take ~0.2 s
# here (seconds with autogroup scheduling on: see autogroup_off). A rotation
# every ~20 s.
ROTATION_TTL, ROTATION_MAX_TTL = "15s", "30s"
ROTATION_WINDOW = (1.0, 3.0)  # seconds before / after a takeover counted as "around" it


def rotation_run(pg, work, userlist, build, seconds):
    """pglease with Vault-issued credentials that rotate every ~20 s, under
    select-only load: TPS of the seconds around each rotation vs the rest."""
    vault = VaultSim()
    proxy = None
    try:
        vault.setup_database(pg, dbname="bench", default_ttl=ROTATION_TTL,
                             max_ttl=ROTATION_MAX_TTL, creation=[
                                 "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                                 f"VALID UNTIL '{{{{expiration}}}}' IN ROLE {UP_USER};"])
        token = work / "vault-token"
        token.write_text(vault.root_token + "\n")
        port = free_port()
        ini = work / "pglease-rotation.ini"
        ini.write_text(f"""[pglease]
{proxy_settings(port, userlist)}http_listen =

[vault]
addr = {vault.addr}
auth_method = token
token_file = {token}

[databases]
bench = host=127.0.0.1 port={pg.port} dbname=bench creds=database/creds/app-rw
""")
        for f in (token, ini):
            shutil.chown(f, "postgres")
        proxy = Proxy("pglease-rotation", [str(Path(build) / "proxy" / "pglease"), "-c",
                                           str(ini)], port, work)
        cmd, env = pgbench_cmd(port, USER, "-S", "-c", "32", "-j", "2", "-T", str(seconds),
                               "-P", "1", "--progress-timestamp")
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           timeout=seconds + 120, preexec_fn=raise_nofile)
        out = r.stdout + r.stderr
        log = (work / "pglease-rotation.log").read_text(errors="replace")
        vault_log = vault.log()
    finally:
        if proxy:
            proxy.stop()
        vault.stop()
    per_second = [(float(t), float(tps)) for t, tps in
                  re.findall(r"progress: ([\d.]+) s, ([\d.]+) tps", out)]
    takeovers = []
    for m in re.finditer(r"^(\S+)Z INFO bench: generation (\d+) \(user \S+\) takes over", log,
                         re.M):
        when = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
        when += float("0" + m.group(1)[19:])
        if when > t0:
            takeovers.append(when)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = r.returncode != 0 or failed is None
    if aborted:  # what went wrong, from both sides
        print("\n".join(l for l in out.splitlines() if not l.startswith("progress:"))[-3000:])
        print("\n".join(l for l in log.splitlines() if " INFO " not in l)[-3000:])
        print("vault stand-in:\n" + vault_log[-3000:], flush=True)
    before, after = ROTATION_WINDOW

    def around(t):  # the progress line at t covers (t - 1, t]
        return any(t > w - before and t - 1 < w + after for w in takeovers)

    steady = [tps for t, tps in per_second[2:] if not around(t)]
    windows = []
    for w in takeovers:
        seconds_in = [tps for t, tps in per_second if t > w - before and t - 1 < w + after]
        if seconds_in:
            windows.append((statistics.mean(seconds_in), min(seconds_in)))
            print(f"  takeover at +{w - t0:.1f} s: " + " ".join(
                f"{tps:.0f}" for t, tps in per_second if w - before - 2 < t < w + after + 2),
                flush=True)
    return {
        "rotations": len(takeovers),
        "steady": statistics.median(steady) if steady else None,
        "window": min(w[0] for w in windows) if windows else None,
        "window_mean": statistics.mean(w[0] for w in windows) if windows else None,
        "worst_second": min(w[1] for w in windows) if windows else None,
        "failed": "aborted" if aborted else int(failed.group(1)),
        "error": out.strip().splitlines()[-1] if aborted and out.strip() else "",
    }


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_off():
    """Turns the kernel's autogroup scheduling off for the run; returns the
    value to restore, or None when it was not on. With it on, CPU is shared
    per session: Postgres's 20 busy backends then share one slice, and a
    backend that wakes up (a login, the Vault stand-in's statements) waits up
    to 1.5 s here instead of at most ~35 ms. A database server does not share
    its cores with the proxy and the load generator as this one-machine bench
    makes it. TPS is the same either way."""
    try:
        if AUTOGROUP.read_text().strip() != "1":
            return None
        AUTOGROUP.write_text("0\n")
        return "1"
    except OSError:
        return None


def machine(autogroup):
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    pgb = sh("pgbouncer", "--version").stdout.splitlines()[0]
    pgv = sh("/usr/lib/postgresql/15/bin/postgres", "--version").stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, Linux {platform.release()}; "
            f"{pgv}; {pgb}; pglease built with buildtype=release; "
            f"kernel autogroup scheduling {autogroup}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--build", default=str(REPO / "build-release"))
    ap.add_argument("--profile", type=int, default=5, metavar="SECONDS",
                    help="perf and strace each proxy under select-only load (0 skips)")
    ap.add_argument("--keep-autogroup", action="store_true",
                    help="leave the kernel's autogroup scheduling on (see autogroup_off)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (proxy logs, configuration) at the end")
    ap.add_argument("--rotation-seconds", type=int, default=70,
                    help="length of the rotation-under-load run (0 skips it)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", help="run only the workloads whose title matches this regex "
                    "(implies --no-write); 'idle clients' and 'rotation under load' are titles")
    ap.add_argument("--hold", action="store_true",
                    help="start everything, print how to reach it, wait for Ctrl-C "
                    "(for perf/strace by hand)")
    args = ap.parse_args()
    if args.only or args.hold:
        args.no_write = True
    raise_nofile()

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    work = Path(tempfile.mkdtemp(prefix="pglease-bench-"))
    os.chmod(work, 0o755)
    pg = PgCluster()
    proxies = []
    restore_autogroup = None if args.keep_autogroup else autogroup_off()
    autogroup = "off for the run" if restore_autogroup else (
        "on" if AUTOGROUP.exists() and AUTOGROUP.read_text().strip() == "1" else "off")
    try:
        pg.sql(f"CREATE ROLE {UP_USER} LOGIN PASSWORD '{UP_PASSWORD}'")
        pg.sql(f"CREATE DATABASE bench OWNER {UP_USER}")
        # 1,000 direct clients for the many-clients row, plus the ~110 servers
        # both proxies keep open.
        pg.sql("ALTER SYSTEM SET max_connections = 1300")
        pg.restart()
        print("initialising pgbench scale 10...", flush=True)
        subprocess.run(["pgbench", "-i", "-s", "10", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", UP_USER, "bench"], check=True, capture_output=True,
                       env=dict(os.environ, PGPASSWORD=UP_PASSWORD))
        userlist = work / "userlist.txt"
        userlist.write_text(f'"{USER}" "{PASSWORD}"\n')
        upstream = (f"host=127.0.0.1 port={pg.port} dbname=bench user={UP_USER} "
                    f"password={UP_PASSWORD}")
        session_db = f"{upstream} pool_size=32 pool_mode=session"

        bport = free_port()
        (work / "pgbouncer.ini").write_text(f"""[databases]
bench = {upstream}
bench_session = {upstream} pool_size=32 pool_mode=session

[pgbouncer]
{proxy_settings(bport, userlist, args.idle + 1000)}ignore_startup_parameters = extra_float_digits
logfile = {work}/pgbouncer-file.log
pidfile = {work}/pgbouncer.pid
""")
        lport = free_port()
        (work / "pglease.ini").write_text(f"""[pglease]
{proxy_settings(lport, userlist, args.idle + 1000)}http_listen =

[databases]
bench = {upstream}
bench_session = {session_db}
""")
        for f in work.iterdir():
            shutil.chown(f, "postgres")
        shutil.chown(work, "postgres")
        # PgBouncer refuses to run as root; -u switches user after start and,
        # unlike runuser (PAM), keeps the raised descriptor limit.
        proxies.append(Proxy("pgbouncer", ["pgbouncer", "-u", "postgres",
                                           str(work / "pgbouncer.ini")], bport, work))
        proxies.append(Proxy("pglease", [str(Path(args.build) / "proxy" / "pglease"), "-c",
                                         str(work / "pglease.ini")], lport, work))
        targets = [("direct", pg.port, UP_PASSWORD), ("pgbouncer", bport, PASSWORD),
                   ("pglease", lport, PASSWORD)]
        if args.hold:
            for name, port, pw in targets:
                user = UP_USER if name == "direct" else USER
                print(f"{name:10s} PGPASSWORD={pw} pgbench -n -h 127.0.0.1 -p {port} -U {user} "
                      f"-S -c 32 -j 2 -T 10 bench")
            print(f"pglease pid {proxies[1].pid()}, pgbouncer pid {proxies[0].pid()}; "
                  "Ctrl-C to stop", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            return
        workloads = [
            ("select-only -S -c 32", "bench", ["-S", "-c", "32", "-j", "2"]),
            ("TPC-B -c 32", "bench", ["-c", "32", "-j", "2"]),
            # Unnamed statements: every Parse/Bind/Describe is looked at (and
            # left alone) on its way through in transaction mode.
            ("-M extended -S -c 32", "bench", ["-M", "extended", "-S", "-c", "32", "-j", "2"]),
            ("-M prepared -S -c 32 (session mode)", "bench_session",
             ["-M", "prepared", "-S", "-c", "32", "-j", "2"]),
            # Named statements shared between servers: PgBouncer 1.18 cannot
            # (its clients fail: "prepared statement P_0 does not exist").
            ("-M prepared -S -c 32 (transaction mode)", "bench",
             ["-M", "prepared", "-S", "-c", "32", "-j", "2"]),
            ("connect per transaction -C -S -c 16", "bench", ["-C", "-S", "-c", "16", "-j", "2"]),
            ("single client -S -c 1", "bench", ["-S", "-c", "1", "-j", "1"]),
            # Many more clients than servers: the proxies queue ~980 of them
            # at every moment (direct: 1,000 backends).
            ("1,000 clients on a pool of 20 -S -c 1000", "bench",
             ["-S", "-c", "1000", "-j", "2"]),
        ]
        def wanted(title):
            return not args.only or re.search(args.only, title)
        workloads = [w for w in workloads if wanted(w[0])]
        results = []
        for title, db, wargs in workloads:
            samples = {t[0]: [] for t in targets}
            lats = {t[0]: [] for t in targets}
            notes = []
            for r in range(args.rounds):
                for name, port, pw in targets:
                    database = "bench" if name == "direct" else db
                    tps, lat, failed = pgbench(port, database, wargs, args.seconds, pw)
                    if tps is None:
                        notes.append(f"{name}: {failed}")
                        continue
                    samples[name].append(tps)
                    lats[name].append(lat)
                    print(f"  {title:40s} round {r + 1} {name:10s} {tps:10.0f} tps "
                          f"{lat:7.3f} ms", flush=True)
            med = {k: statistics.median(v) if v else None for k, v in samples.items()}
            lat = {k: statistics.median(v) if v else None for k, v in lats.items()}
            results.append((title, med, lat, notes))

        # Idle clients: memory per client.
        idle = []
        for proxy in proxies if args.idle and wanted("idle clients") else []:
            before = proxy.rss_kb()
            t0 = time.monotonic()
            conns = idle_clients(proxy.port, "bench", args.idle)
            elapsed = time.monotonic() - t0
            after = proxy.rss_kb()
            for c in conns:
                c.close()
            idle.append((proxy.name, (after - before) * 1024 / args.idle, elapsed))
            print(f"  idle clients: {proxy.name}: {(after - before) / 1024:.1f} MiB for "
                  f"{args.idle} clients, logins took {elapsed:.1f} s", flush=True)

        prof = None
        if args.profile and wanted("profile"):
            prof = profile(proxies, work, args.profile)
            print(f"  profile: {prof}", flush=True)

        rotation = None
        if args.rotation_seconds and wanted("rotation under load"):
            for p in proxies:  # the rotation run has the machine to itself
                p.stop()
            proxies = []
            rotation = rotation_run(pg, work, userlist, args.build, args.rotation_seconds)
            print(f"  rotation under load: {rotation}", flush=True)
    finally:
        for p in proxies:
            p.stop()
        pg.stop()
        if restore_autogroup:
            AUTOGROUP.write_text(restore_autogroup + "\n")
        if args.keep:
            print(f"logs and configuration kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    lines = ["| workload | direct tps | PgBouncer tps | pglease tps | pglease / PgBouncer | "
             "pglease / direct | latency ms (direct / PgBouncer / pglease) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for title, med, lat, notes in results:
        def f(x, fmt="{:.0f}"):
            return fmt.format(x) if x else "failed"
        r_b = f"{med['pglease'] / med['pgbouncer']:.2f}×" if med["pglease"] and med[
            "pgbouncer"] else "—"
        r_d = f"{med['pglease'] / med['direct']:.2f}×" if med["pglease"] and med["direct"] \
            else "—"
        lat_s = " / ".join(f(lat[k], "{:.3f}") for k in ("direct", "pgbouncer", "pglease"))
        lines.append(f"| {title} | {f(med['direct'])} | {f(med['pgbouncer'])} | "
                     f"{f(med['pglease'])} | {r_b} | {r_d} | {lat_s} |")
    lines.append("")
    lines.append("| idle clients | bytes per client | time to log in all |")
    lines.append("| --- | ---: | ---: |")
    for name, per, elapsed in idle:
        lines.append(f"| {name} ({args.idle} clients) | {per:.0f} | {elapsed:.1f} s |")
    if prof:
        lines.append("")
        lines.extend(profile_lines(prof))
    if rotation:
        def ratio(x):
            return f"{x / rotation['steady']:.2f}" if x and rotation["steady"] else "—"
        lines.append("")
        lines.append("| rotation under load (pglease, select-only -c 32, "
                     f"{args.rotation_seconds} s, lease ttl {ROTATION_TTL} / max {ROTATION_MAX_TTL}) "
                     "| rotations | steady tps | tps around a rotation (worst) | ratio | "
                     "ratio, mean of the rotations | worst second | failed transactions |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        f0 = "{:.0f}"
        lines.append(f"| {ROTATION_WINDOW[0]:.0f} s before to {ROTATION_WINDOW[1]:.0f} s after "
                     f"each takeover | {rotation['rotations']} | "
                     f"{f0.format(rotation['steady']) if rotation['steady'] else '—'} | "
                     f"{f0.format(rotation['window']) if rotation['window'] else '—'} | "
                     f"{ratio(rotation['window'])} | {ratio(rotation['window_mean'])} | "
                     f"{ratio(rotation['worst_second'])} | "
                     f"{rotation['failed']} |")
    notes = [n for r in results for n in r[3]]
    if rotation and rotation["error"]:
        notes.append(f"rotation run: {rotation['error']}")
    table = "\n".join(lines)
    print()
    print(table)
    if notes:
        print("\nfailures:\n  " + "\n  ".join(sorted(set(notes))))
    if not args.no_write:
        doc = REPO / "docs" / "benchmarks.md"
        doc.write_text(
            "# Benchmarks\n\n"
            "Produced by `scripts/bench` (all three targets in the same run, interleaved, "
            f"median of {args.rounds} rounds of {args.seconds} s; pgbench scale 10; both "
            f"proxies in transaction mode with pool size {POOL} and SCRAM-SHA-256 client "
            "auth against the same userlist; the prepared-statement run uses a session-mode "
            "database on both, since PgBouncer 1.18 cannot keep prepared statements in "
            "transaction mode).\n\n"
            f"Machine: {machine(autogroup)}.\n\nDate: {time.strftime('%Y-%m-%d')}.\n\n" + table + "\n\n"
            + READING_GUIDE)
        print(f"\nwritten to {doc}")


if __name__ == "__main__":
    main()
