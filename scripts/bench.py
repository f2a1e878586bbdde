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
the per-second TPS around each credential rotation, from 1 s before the new
credential takes over (its fetch and first login) to 1 s after the old
generation is drained (its last server replaced), with the median of the
other seconds: the worst such window, the mean over all of them, and the
worst single second. The steady seconds themselves vary (by about ±8% on a
shared 2-core host), and the worst of a dozen noisy seconds is lower than
their median even with nothing rotating: "worst second, no rotation" is the
same statistic taken over runs of as many consecutive steady seconds, the
noise floor the rotation's worst second is to be read against.

Proxy CPU per transaction (the last two columns of the first table) is the
proxy process's user + system time, all threads, read from /proc/<pid>/stat
just before and after each measured pgbench run, divided by the transactions
pgbench reports; the median over the rounds. It counts the clients' logins
too: with -C one per transaction, which is what that row measures; elsewhere
one per client per run (select-only's 32 SCRAM logins are well under 1% of a
10 s run). Where Postgres is the limit, TPS hides what the proxy costs; this
does not, so a change in it is the sign of a regression (or a gain) on the
per-transaction path even when TPS stays the same. It is counted in clock
ticks (10 ms each here), a few hundred per run, and still moves with cache and
frequency effects of the other processes: compare it within a run (the
ratio) first. The CPU ratio is pglease's figure over PgBouncer's: under 1
means pglease spends less.

The proxy-bound table is a workload where the proxy, not Postgres, should be
the limit: `SELECT 1` (almost no work for Postgres) from 64 clients, with the
proxy pinned (sched_setaffinity, as `taskset` does, inherited by all its
threads) to its own cores and Postgres (the postmaster, hence every backend)
and pgbench pinned to the other cores. The proxy gets the last k of the cores
this run may use, k = min(--workers, half of them); the rest go to Postgres
and pgbench (pgbench with one thread per core, 2 to 8). Every proxy row uses
the same proxy cores: PgBouncer × k is k PgBouncer processes sharing one port
with so_reuseport (the kernel spreads the connections over them), pglease
workers = k is one pglease with that many event-loop threads. A configuration
a proxy refuses at start is shown as refused with the first line it wrote
(pglease refuses workers > 1 until multi-core lands; nothing in the bench
changes when it does). "proxy cores busy" is the proxy's CPU time per second
of the run: the check that a row really was proxy-bound is that it is close
to the number of proxy cores it could use (1 for × 1, k for × k, but never
more than the cores it is pinned to); well under that, the other side was
the limit and the row says little about the proxy's throughput (its CPU per
transaction still holds). The ratios: each row's tps against the same proxy
with one process or worker (scaling), and pglease workers = k against
PgBouncer × k (tps, and CPU per transaction: under 1 means pglease spends
less). The direct row is a reference for the load side alone on its cores,
not a ceiling: it has 64 backends where the proxies keep 20 servers, so a
proxy row can beat it when the load cores are the limit. On a 2-core machine the proxy gets one core and Postgres and pgbench
the other, so neither proxy can scale there (k processes or workers share one
core, which costs them some) and the one core left to Postgres and pgbench is
usually the limit; read the CPU per transaction there, not the tps. To see
scaling, run `scripts/bench --only proxy-bound --workers N` on a machine with
at least 4N cores (N proxy cores, 3N for the rest): there pglease workers = k
should approach k× its workers = 1 tps with cores busy near k, and match or
beat PgBouncer × k at a CPU per transaction no higher than workers = 1's.
"""

POOL = 20
USER, PASSWORD = "app", "app-bench-pw"
UP_USER, UP_PASSWORD = "bench", "bench-upstream-pw"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """CPU time (user + system, all threads) the processes have used so far,
    in seconds, from /proc/<pid>/stat fields 14 and 15 (clock ticks); None
    when one of them is gone."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()  # field 3 (state) onwards
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def preexec(cpus=None):
    """A preexec_fn: the raised descriptor limit and, given cpus, the cores
    the process (and every thread it starts) may run on."""
    def run():
        raise_nofile()
        if cpus:
            os.sched_setaffinity(0, cpus)
    return run


class ProxyFailed(RuntimeError):
    """A proxy that exited (or never listened) at start; first_line is the
    first line it wrote (a configuration error, say)."""

    def __init__(self, name, first_line):
        super().__init__(f"{name} did not start: {first_line}")
        self.first_line = first_line


class Proxy:
    def __init__(self, name, argv, port, workdir, run_as=None, cpus=None, ready=None):
        """ready: a string the proxy writes to its output once it listens,
        waited for instead of a connection to the port (a second PgBouncer on
        a shared so_reuseport port: the port answers before it does)."""
        self.name, self.port = name, port
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.log_start = self.log.tell()
        if run_as:
            argv = ["runuser", "-u", run_as, "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec(cpus), cwd="/")
        try:
            self._wait_ready(ready)
        except BaseException:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(20)
            self.log.close()
            raise

    def output(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def _wait_ready(self, ready):
        import socket
        deadline = time.monotonic() + 15
        while True:
            if ready is not None:
                if ready in self.output():
                    return
            else:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                except OSError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                lines = [l.strip() for l in self.output().splitlines() if l.strip()]
                raise ProxyFailed(self.name, lines[0] if lines else
                                  f"exit status {self.proc.poll()}" if self.proc.poll()
                                  is not None else "no answer in 15 s")
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


def pgbench(port, db, args, seconds, password, cpu_pids=(), cpus=None):
    """One pgbench run. Returns a dict: tps, lat (ms), failed, txns, and,
    given the proxy's processes in cpu_pids, cpu_us (their CPU time, all
    threads, per transaction pgbench reports) and busy (cores kept busy:
    that CPU time per second of pgbench's measured run); error when it
    failed.
    cpus: the cores pgbench runs on (default: any)."""
    cmd, env = pgbench_cmd(port, USER if password == PASSWORD else UP_USER, "-T", str(seconds),
                           *args, db=db)
    before = cpu_seconds(cpu_pids) if cpu_pids else None
    r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=seconds + 120, preexec_fn=preexec(cpus))
    after = cpu_seconds(cpu_pids) if cpu_pids else None
    out = r.stdout + r.stderr
    tps = re.search(r"tps = ([\d.]+) \((?:without|including)", out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    txns = re.search(r"actually processed: (\d+)", out)
    if r.returncode != 0 or not tps:
        return {"error": out.strip().splitlines()[-1] if out.strip() else "failed"}
    res = {"tps": float(tps.group(1)), "lat": float(lat.group(1)),
           "failed": int(failed.group(1)) if failed else 0,
           "txns": int(txns.group(1)) if txns else None, "cpu_us": None, "busy": None}
    if before is not None and after is not None and res["txns"]:
        res["cpu_us"] = (after - before) * 1e6 / res["txns"]
        # over the time pgbench measured (its transactions / its tps), not
        # the wall time around it, which includes its logins and start-up
        res["busy"] = (after - before) * res["tps"] / res["txns"]
    return res


def median_of(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


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


PROXY_BOUND_CLIENTS = 64


def core_split(workers):
    """(proxy cores, Postgres and pgbench cores) for the proxy-bound workload:
    the proxy gets the last k = min(workers, half) of the cores this process
    may use, Postgres and pgbench the others; on one core they all share it."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return cpus, cpus
    k = max(1, min(workers, len(cpus) // 2))
    return cpus[-k:], cpus[:-k]


def postgres_pids(pg):
    """The postmaster and its children (backends, background processes)."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == master:
            pids.append(int(d.name))
    return pids


def pin(pids, cpus):
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:  # exited meanwhile
            pass


def cores(cpus):
    return ("core " if len(cpus) == 1 else "cores ") + ",".join(map(str, cpus))


def proxy_bound_run(pg, work, userlist, upstream, args):
    """A trivial query (SELECT 1) from many clients, the proxy pinned to
    fewer cores than Postgres and pgbench get, so that the proxy is what
    limits throughput: PgBouncer with 1..N processes sharing the port
    (so_reuseport) and pglease with workers = 1..N, interleaved like the
    other workloads. A configuration a proxy refuses (pglease's workers > 1
    before multi-core lands) is reported as refused, not run."""
    n = max(1, args.workers)
    proxy_cpus, load_cpus = core_split(n)
    all_cpus = sorted(os.sched_getaffinity(0))
    threads = max(2, min(8, len(load_cpus)))
    script = work / "select1.sql"
    script.write_text("SELECT 1;\n")
    wargs = ["-f", str(script), "-c", str(PROXY_BOUND_CLIENTS), "-j", str(threads)]
    configs = ([("direct (no proxy)", None, 0)] +
               [(f"PgBouncer × {k}", "pgbouncer", k) for k in range(1, n + 1)] +
               [(f"pglease workers = {k}", "pglease", k) for k in range(1, n + 1)])
    started, live, refused, notes = [], {}, {}, []
    runs = {label: [] for label, _, _ in configs}
    try:
        pin(postgres_pids(pg), load_cpus)
        for label, kind, k in configs:
            if kind is None:
                continue
            port = free_port()
            procs = []
            try:
                if kind == "pgbouncer":
                    for i in range(k):
                        tag = f"pgbouncer-x{k}-{i}"
                        ini = work / f"{tag}.ini"
                        ini.write_text(f"""[databases]
bench = {upstream}

[pgbouncer]
{proxy_settings(port, userlist, 1000)}ignore_startup_parameters = extra_float_digits
so_reuseport = 1
logfile = {work}/{tag}-file.log
pidfile = {work}/{tag}.pid
""")
                        shutil.chown(ini, "postgres")
                        # Once one process listens the port answers: wait for
                        # each one's own word that it is up.
                        procs.append(Proxy(tag, ["pgbouncer", "-u", "postgres", str(ini)], port,
                                           work, cpus=proxy_cpus, ready="process up"))
                        started.append(procs[-1])
                else:
                    tag = f"pglease-w{k}"
                    ini = work / f"{tag}.ini"
                    ini.write_text(f"""[pglease]
{proxy_settings(port, userlist, 1000)}http_listen =
workers = {k}

[databases]
bench = {upstream}
""")
                    shutil.chown(ini, "postgres")
                    procs.append(Proxy(tag, [str(Path(args.build) / "proxy" / "pglease"), "-c",
                                             str(ini)], port, work, cpus=proxy_cpus))
                    started.append(procs[-1])
                live[label] = (port, procs)
            except ProxyFailed as e:
                refused[label] = e.first_line.replace(f"{work}/", "")
                print(f"  proxy-bound {label}: refused: {refused[label]}", flush=True)
                for p in procs:  # PgBouncer × k: the ones that did start
                    started.remove(p)
                    p.stop()
        for r in range(args.rounds):
            for label, kind, k in configs:
                if label in refused:
                    continue
                if kind is None:
                    port, pids, pw = pg.port, (), UP_PASSWORD
                else:
                    port, procs = live[label]
                    pids, pw = [p.pid() for p in procs], PASSWORD
                res = pgbench(port, "bench", wargs, args.seconds, pw, cpu_pids=pids,
                              cpus=load_cpus)
                if "error" in res:
                    notes.append(f"proxy-bound {label}: {res['error']}")
                    continue
                runs[label].append(res)
                cpu = (f" {res['cpu_us']:6.1f} µs CPU/txn, {res['busy']:.2f} cores busy"
                       if res["cpu_us"] else "")
                print(f"  proxy-bound round {r + 1} {label:24s} {res['tps']:10.0f} tps "
                      f"{res['lat']:7.3f} ms{cpu}", flush=True)
    finally:
        try:
            for p in started:
                p.stop()
        finally:
            try:
                pin(postgres_pids(pg), all_cpus)
            except OSError:  # Postgres gone: nothing to restore, keep the first error
                pass
    rows = []
    for label, kind, k in configs:
        med = {key: median_of(runs[label], key) for key in ("tps", "lat", "cpu_us", "busy")}
        rows.append((label, kind, k, med, refused.get(label)))
    return {"rows": rows, "proxy_cpus": proxy_cpus, "load_cpus": load_cpus,
            "threads": threads, "notes": notes}


def proxy_bound_lines(pb):
    def find(kind, k):
        for label, kd, kk, med, refused in pb["rows"]:
            if kd == kind and kk == k and not refused:
                return med
        return None

    def ratio(a, b):
        return f"{a / b:.2f}×" if a and b else "—"

    lines = [f"| proxy-bound: `SELECT 1` -c {PROXY_BOUND_CLIENTS} -j {pb['threads']}, "
             f"proxy on {cores(pb['proxy_cpus'])}, Postgres and pgbench on "
             f"{cores(pb['load_cpus'])} | tps | latency ms | proxy CPU µs per transaction | proxy cores busy | "
             "tps vs the same proxy × 1 | pglease / PgBouncer × k tps | "
             "pglease / PgBouncer × k CPU per transaction |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, kind, k, med, refused in pb["rows"]:
        if refused:
            lines.append(f"| {label} | refused: {refused.replace('|', '/')} "
                         "| — | — | — | — | — | — |")
            continue
        if not med["tps"]:
            lines.append(f"| {label} | failed | — | — | — | — | — | — |")
            continue
        one = find(kind, 1) if kind else None
        bouncer = find("pgbouncer", k) if kind == "pglease" else None
        cpu = f"{med['cpu_us']:.1f}" if med["cpu_us"] else "—"
        busy = f"{med['busy']:.2f}" if med["busy"] else "—"
        vs_one = ratio(med["tps"], one["tps"]) if one else "—"
        vs_tps = ratio(med["tps"], bouncer["tps"]) if bouncer else "—"
        vs_cpu = ratio(med["cpu_us"], bouncer["cpu_us"]) if bouncer else "—"
        lines.append(f"| {label} | {med['tps']:.0f} | {med['lat']:.3f} | {cpu} | {busy} | "
                     f"{vs_one} | {vs_tps} | {vs_cpu} |")
    return lines


# pglease learns a lease's real end when a renewal (at 2/3 of the ttl) comes
# back capped by max_ttl: with 30 s / 60 s that is at 40 s, 20 s before the
# end. The old servers must stop serving ~12.5 s after the takeover (the
# end, less the 5 s safety margin and 2 s), and three quarters of that is
# what one login every 500 ms needs for a pool of 20 (~9.5 s): the paced
# replacement runs at its own pace (15 s / 30 s would hurry it to ~250 ms).
# A rotation every ~40 s.
ROTATION_TTL, ROTATION_MAX_TTL = "30s", "60s"
# Seconds counted as "around" a rotation: from this long before the takeover
# (the credential's fetch, its first login) to this long after the old
# generation is drained (its last server replaced).
ROTATION_MARGIN = 1.0


def log_times(log, pattern):
    """The times (epoch seconds) of the pglease log lines matching pattern."""
    times = []
    for m in re.finditer(r"^(\S+)Z " + pattern, log, re.M):
        when = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
        times.append(when + float("0" + m.group(1)[19:]))
    return times


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
    takeovers = [w for w in log_times(log, r"INFO bench: generation \d+ \(user \S+\) takes over")
                 if w > t0]
    drained = log_times(log, r"INFO bench: generation \d+ drained")
    failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = r.returncode != 0 or failed is None
    if aborted:  # what went wrong, from both sides
        print("\n".join(l for l in out.splitlines() if not l.startswith("progress:"))[-3000:])
        print("\n".join(l for l in log.splitlines() if " INFO " not in l)[-3000:])
        print("vault stand-in:\n" + vault_log[-3000:], flush=True)
    end = per_second[-1][0] if per_second else t0
    # each rotation: from its takeover to the old generation's drain
    spans = []
    for w in takeovers:
        d = next((d for d in drained if d >= w), end)
        spans.append((w - ROTATION_MARGIN, d + ROTATION_MARGIN))

    def around(t):  # the progress line at t covers (t - 1, t]
        return any(t > a and t - 1 < b for a, b in spans)

    steady = [tps for t, tps in per_second[2:] if not around(t)]
    med = statistics.median(steady) if steady else None
    windows = []
    for (a, b), w in zip(spans, takeovers):
        seconds_in = [tps for t, tps in per_second if t > a and t - 1 < b]
        if seconds_in:
            windows.append((statistics.mean(seconds_in), min(seconds_in), len(seconds_in)))
            # The host's own noise moves whole stretches of seconds: the
            # window's worst second against the seconds just outside it
            # tells the rotation's share apart from it.
            near = [tps for t, tps in per_second if not around(t) and a - 5 < t < b + 6]
            local = f" (worst / the 5 s either side: {min(seconds_in) / statistics.median(near):.2f})" \
                if near else ""
            print(f"  takeover at +{w - t0:.1f} s, drained after {b - a - 2 * ROTATION_MARGIN:.1f} s: "
                  + " ".join(f"{tps:.0f}" for t, tps in per_second if a - 2 < t < b + 2) + local,
                  flush=True)
            if med:
                print("    relative to the steady median: " + " ".join(
                    f"{tps / med:.2f}" for t, tps in per_second if a - 2 < t < b + 2), flush=True)
    # The same statistic where nothing rotates: the worst second of each run
    # of as many consecutive steady seconds as a rotation window holds. What
    # the host's noise alone does to "the worst second".
    quiet = []
    length = round(statistics.mean(w[2] for w in windows)) if windows else 0
    run = []
    for t, tps in per_second[2:]:
        if around(t):
            run = []
            continue
        run.append(tps)
        if length and len(run) == length:
            quiet.append(min(run))
            run = []
    return {
        "rotations": len(takeovers),
        "steady": med,
        "window": min(w[0] for w in windows) if windows else None,
        "window_mean": statistics.mean(w[0] for w in windows) if windows else None,
        "window_seconds": length,
        "worst_second": min(w[1] for w in windows) if windows else None,
        "quiet_worst": statistics.median(quiet) if quiet else None,
        "quiet_windows": len(quiet),
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
    ap.add_argument("--rotation-seconds", type=int, default=130,
                    help="length of the rotation-under-load run (0 skips it)")
    ap.add_argument("--workers", type=int, default=2, metavar="N",
                    help="proxy-bound workload: pglease with workers = 1..N against PgBouncer "
                    "with 1..N processes sharing its port (so_reuseport)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", help="run only the workloads whose title matches this regex "
                    "(implies --no-write); 'idle clients', 'proxy-bound', 'profile' and "
                    "'rotation under load' are titles")
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
        by_name = {p.name: p for p in proxies}
        results = []
        for title, db, wargs in workloads:
            runs = {t[0]: [] for t in targets}
            notes = []
            for r in range(args.rounds):
                for name, port, pw in targets:
                    database = "bench" if name == "direct" else db
                    pids = [by_name[name].pid()] if name in by_name else ()
                    res = pgbench(port, database, wargs, args.seconds, pw, cpu_pids=pids)
                    if "error" in res:
                        notes.append(f"{name}: {res['error']}")
                        continue
                    runs[name].append(res)
                    cpu = f" {res['cpu_us']:6.1f} µs CPU/txn" if res["cpu_us"] else ""
                    print(f"  {title:40s} round {r + 1} {name:10s} {res['tps']:10.0f} tps "
                          f"{res['lat']:7.3f} ms{cpu}", flush=True)
            med = {k: median_of(v, "tps") for k, v in runs.items()}
            lat = {k: median_of(v, "lat") for k, v in runs.items()}
            cpu = {k: median_of(v, "cpu_us") for k, v in runs.items()}
            results.append((title, med, lat, notes, cpu))

        proxy_bound = None
        if wanted("proxy-bound"):
            proxy_bound = proxy_bound_run(pg, work, userlist, upstream, args)

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
             "pglease / direct | latency ms (direct / PgBouncer / pglease) | "
             "proxy CPU µs per transaction (PgBouncer / pglease) | pglease / PgBouncer CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for title, med, lat, notes, cpu in results:
        def f(x, fmt="{:.0f}"):
            return fmt.format(x) if x else "failed"
        r_b = f"{med['pglease'] / med['pgbouncer']:.2f}×" if med["pglease"] and med[
            "pgbouncer"] else "—"
        r_d = f"{med['pglease'] / med['direct']:.2f}×" if med["pglease"] and med["direct"] \
            else "—"
        lat_s = " / ".join(f(lat[k], "{:.3f}") for k in ("direct", "pgbouncer", "pglease"))
        cpu_s = " / ".join(f"{cpu[k]:.1f}" if cpu[k] else "—" for k in ("pgbouncer", "pglease"))
        r_c = f"{cpu['pglease'] / cpu['pgbouncer']:.2f}×" if cpu["pglease"] and cpu[
            "pgbouncer"] else "—"
        lines.append(f"| {title} | {f(med['direct'])} | {f(med['pgbouncer'])} | "
                     f"{f(med['pglease'])} | {r_b} | {r_d} | {lat_s} | {cpu_s} | {r_c} |")
    if proxy_bound:
        lines.append("")
        lines.extend(proxy_bound_lines(proxy_bound))
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
                     "ratio, mean of the rotations | worst second | worst second, no rotation "
                     "(median) | failed transactions |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        f0 = "{:.0f}"
        lines.append(f"| {ROTATION_MARGIN:.0f} s before each takeover to {ROTATION_MARGIN:.0f} s "
                     f"after the old generation drained (~{rotation['window_seconds']} s) | "
                     f"{rotation['rotations']} | "
                     f"{f0.format(rotation['steady']) if rotation['steady'] else '—'} | "
                     f"{f0.format(rotation['window']) if rotation['window'] else '—'} | "
                     f"{ratio(rotation['window'])} | {ratio(rotation['window_mean'])} | "
                     f"{ratio(rotation['worst_second'])} | "
                     f"{ratio(rotation['quiet_worst'])} ({rotation['quiet_windows']} windows) | "
                     f"{rotation['failed']} |")
    notes = [n for r in results for n in r[3]]
    if proxy_bound:
        notes.extend(proxy_bound["notes"])
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
            "transaction mode; the proxy-bound table with --workers "
            f"{args.workers}).\n\n"
            f"Machine: {machine(autogroup)}.\n\nDate: {time.strftime('%Y-%m-%d')}.\n\n" + table + "\n\n"
            + READING_GUIDE)
        print(f"\nwritten to {doc}")


if __name__ == "__main__":
    main()
