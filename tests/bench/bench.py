#!/usr/bin/python3
"""bench.py: smtpvault against Postfix on the same machine, in the same run,
against the same Gmail-like sink (issue 10). Started by run.sh (make bench),
which provides the temporary directory and cleans up after it.

Systems under test, all relaying to the one sink (tests/bench/sink.c) over
verified TLS with AUTH:
  postfix-default  private Postfix instance, its defaults + smarthost settings
  postfix-best     the same with TLS connection reuse (tlsproxy), connection
                   cache and TLS session cache (tests/bench/postfix.sh)
  smtpvault-direct delivery = direct
  smtpvault-queue  delivery = queue, when this build supports it

Every comparison alternates the systems run by run (A B A B ..., the order
rotated each round) after a warm-up run of each, and reports the median of
the per-round ratios with their min-max. CPU time is read from a cpuacct
cgroup per system (every process of the Postfix instance, the smtpvault
daemon), or, without cgroups, from /proc (see postfix.sh cpu).
"""

import argparse
import ctypes
import datetime
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SENDER = "bench@example.com"
RCPT = "rcpt@example.net"
PASSWORD = "abcdefghijklmnop"
MSG_SIZE = 4096
CGROUP_ROOT = "/sys/fs/cgroup/cpuacct"
CGROUP_PREFIX = f"smtpvault-bench-{os.getpid()}"    # run.sh passes its own (--tmp)
SMTP_SOURCE = "/usr/sbin/smtp-source"

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
T0 = time.monotonic()


def log(msg):
    print(f"[bench {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def child_setup(cgroup=None):
    """preexec_fn: die with us, full RLIMIT_NOFILE, join a cgroup."""
    def setup():
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cgroup is not None and cgroup.path is not None:
            with open(os.path.join(cgroup.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
    return setup


def run(argv, timeout=60, check=True, cgroup=None, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=child_setup(cgroup), **kw)
    if check and p.returncode != 0:
        raise BenchError(f"{' '.join(map(str, argv))} exited {p.returncode}: "
                         f"{(p.stderr or p.stdout).strip()[-600:]}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def kv_parse(text):
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1]) if "." in parts[1] else int(parts[1])
            except ValueError:
                out[parts[0]] = parts[1]
    return out


def median_range(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 1)) - 1))
    return sorted_values[i]


# ---- resources ---------------------------------------------------------------

class CGroup:
    """A cpuacct cgroup (v1) for one system; path None when unavailable."""
    all = []

    def __init__(self, name):
        CGroup.all.append(self)
        self.path = None
        if os.path.isdir(CGROUP_ROOT) and os.access(CGROUP_ROOT, os.W_OK):
            path = os.path.join(CGROUP_ROOT, f"{CGROUP_PREFIX}-{name}")
            try:
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, "cpuacct.usage")) as f:
                    f.read()
                self.path = path
            except OSError:
                self.path = None

    def usage_ns(self):
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read())

    def remove(self):
        if self.path is None:
            return
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                try:
                    with open(os.path.join(CGROUP_ROOT, "cgroup.procs"), "w") as f:
                        f.write(pid)
                except OSError:
                    pass
            os.rmdir(self.path)
        except OSError:
            pass


def machine_busy_ns():
    """CPU time the whole machine spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) * 1e9 / os.sysconf("SC_CLK_TCK")


def ours_ns():
    return sum(c.usage_ns() for c in CGroup.all if c.path is not None)


class Background:
    """How much CPU the rest of the machine (other users, kernel threads)
    took during a run, as a share of all CPUs."""

    def __init__(self):
        self.t = time.monotonic()
        self.busy = machine_busy_ns()
        self.ours = ours_ns()

    def share(self):
        secs = time.monotonic() - self.t
        other = (machine_busy_ns() - self.busy) - (ours_ns() - self.ours)
        return max(0.0, other / 1e9 / secs / os.cpu_count())


def proc_cpu_ns(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


def proc_pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_tree(pid):
    """pid and all its descendants: smtpvault's daemon is several processes
    (the vault keeper, and more after the process split)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def tree_pss_kib(pid):
    """The memory of a process tree: PSS summed over its processes, so that a
    page shared by several of them (a library, pages inherited across
    fork) counts once in all, not once per process as RSS would."""
    return sum(proc_pss_kib(p) for p in proc_tree(pid))


def pss_by_mapping(pids):
    """KiB of PSS per mapped file ("[anon]" for the rest) over pids, largest
    first."""
    out = {}
    for pid in pids:
        name = "[anon]"
        try:
            with open(f"/proc/{pid}/smaps") as f:
                for line in f:
                    parts = line.split()
                    if re.match(r"^[0-9a-f]+-[0-9a-f]+$", parts[0]):
                        name = (parts[5] if len(parts) > 5 and parts[5].startswith("/")
                                else "[anon]")
                    elif parts[0] == "Pss:":
                        out[name] = out.get(name, 0) + int(parts[1])
        except OSError:
            pass
    return sorted(out.items(), key=lambda kv: -kv[1])


# ---- PKI ---------------------------------------------------------------------

class Pki:
    """A throw-away test CA and a server certificate for localhost and
    127.0.0.1, made with the openssl CLI."""

    def __init__(self, d):
        os.makedirs(d, exist_ok=True)
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        self.cert = os.path.join(d, "server.pem")
        self.key = os.path.join(d, "server.key")
        ext = os.path.join(d, "server.ext")
        csr = os.path.join(d, "server.csr")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.ca_key, "-out", self.ca,
             "-subj", "/O=smtpvault bench/CN=smtpvault bench CA", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.key, "-out", csr, "-subj",
             "/O=smtpvault bench/CN=localhost"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", self.cert])
        for p in (self.ca, self.cert, self.key):
            os.chmod(p, 0o644)


# ---- the sink ----------------------------------------------------------------

class Sink:
    def __init__(self, binary, d, pki, lifetime, cgroup=None):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port()
        self.ctl = os.path.join(d, "sink.ctl")
        self.stats_path = os.path.join(d, "sink.stats")
        self.ts_path = os.path.join(d, "sink.ts")
        self.rtt = self.delay = 0
        with open(self.ctl, "w") as f:
            f.write("rtt_ms 0\ndata_delay_ms 0\n")
        self.err = open(os.path.join(d, "sink.stderr"), "wb")
        self.proc = subprocess.Popen(
            [binary, "-l", f"127.0.0.1:{self.port}", "-L", f"127.0.0.1:{self.tls_port}",
             "-c", pki.cert, "-k", pki.key, "-C", self.ctl, "-s", self.stats_path,
             "-t", self.ts_path, "-x", str(int(lifetime)), "-q"],
            stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
            preexec_fn=child_setup(cgroup))
        if not wait_port(self.port, proc=self.proc):
            raise BenchError("the sink did not start")
        self.ts_offset = 0

    def stats(self):
        before = self._read().get("dumps", -1)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            st = self._read()
            if st.get("dumps", -1) > before:
                return st
            time.sleep(0.005)
        raise BenchError("the sink does not answer SIGUSR1")

    def _read(self):
        try:
            with open(self.stats_path) as f:
                return kv_parse(f.read())
        except OSError:
            return {}

    def net(self, rtt_ms, delay_ms):
        if (rtt_ms, delay_ms) == (self.rtt, self.delay):
            return
        with open(self.ctl, "w") as f:
            f.write(f"rtt_ms {rtt_ms}\ndata_delay_ms {delay_ms}\n")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            st = self.stats()
            if st.get("rtt_ms") == rtt_ms and st.get("data_delay_ms") == delay_ms:
                self.rtt, self.delay = rtt_ms, delay_ms
                return
        raise BenchError("the sink did not take the new delays")

    def timestamps(self):
        """id -> ns at which the 250 left the sink, for lines added since
        the last call."""
        self.stats()    # flushes the file
        out = {}
        with open(self.ts_path) as f:
            f.seek(self.ts_offset)
            data = f.read()
        cut = data.rfind("\n") + 1
        self.ts_offset += len(data[:cut].encode())
        for line in data[:cut].splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[int(parts[0])] = int(parts[1])
        return out

    def wait_messages(self, target, timeout):
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st["messages"] >= target:
                return st
            if time.monotonic() >= deadline:
                return st
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


# ---- systems under test -------------------------------------------------------

class Postfix:
    kind = "postfix"

    def __init__(self, name, d, sink, pki, profile, script):
        self.name = name
        self.dir = d
        self.script = script
        self.port = free_port()
        self.cg = CGroup(name)
        run([script, "setup", d, "--port", str(self.port), "--relay",
             f"localhost:{sink.port}", "--ca", pki.ca, "--user", SENDER, "--password",
             PASSWORD, "--profile", profile])
        self.settings = {}

    def start(self):
        argv = [self.script, "start", self.dir]
        if self.cg.path is not None:
            argv.append(self.cg.path)
        run(argv, timeout=30)

    def set(self, **kv):
        """postconf -e, then reload, only when something changes."""
        change = {k: str(v) for k, v in kv.items() if self.settings.get(k) != str(v)}
        if not change:
            return
        run(["postconf", "-c", os.path.join(self.dir, "etc"), "-e"] +
            [f"{k}={v}" for k, v in change.items()])
        run(["postfix", "-c", os.path.join(self.dir, "etc"), "reload"])
        self.settings.update(change)
        time.sleep(1.0)     # the master restarts its children lazily

    def cpu_ns(self):
        if self.cg.path is not None:
            return self.cg.usage_ns()
        return int(run([self.script, "cpu", self.dir]).stdout.strip())

    def queue(self):
        return int(run([self.script, "queue", self.dir]).stdout.strip())

    def settle(self, timeout=60):
        deadline = time.monotonic() + timeout
        while self.queue() > 0:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: queue not empty after {timeout}s "
                                 f"(see {self.dir}/maillog)")
            time.sleep(0.1)

    def pids(self):
        return [int(p) for p in run([self.script, "pids", self.dir]).stdout.split()]

    def stop(self):
        run([self.script, "stop", self.dir], check=False, timeout=30)
        self.cg.remove()


class Smtpvault:
    kind = "smtpvault"

    def __init__(self, name, binary, d, sink, pki, delivery="direct", sessions=None,
                 lan_tls=False, max_conn=2000, admin=False):
        self.name = name
        self.binary = binary
        self.dir = d
        self.sink = sink
        self.pki = pki
        self.delivery = delivery
        self.sessions = sessions
        self.lan_tls = lan_tls
        self.max_conn = max_conn
        self.admin = admin
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = None
        self.cg = CGroup(name)
        os.makedirs(d, exist_ok=True)
        self.conf = os.path.join(d, "smtpvault.conf")
        key = os.path.join(d, "vault.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        os.makedirs(os.path.join(d, "spool"), mode=0o700, exist_ok=True)
        self.write_config()
        run([binary, "-c", self.conf, "init", "--kdf", "interactive"], env=self.env())
        # No daily limit gets in the way of a benchmark.
        run([binary, "-c", self.conf, "account", "add", SENDER, "--daily-limit", "1000000000",
             "--daily-recipient-limit", "1000000000"], input=PASSWORD + "\n", env=self.env())

    def env(self):
        env = dict(os.environ)
        for k in ("SMTPVAULT_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET",
                  "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
        env["SMTPVAULT_ALLOW_ROOT"] = "1"
        return env

    def write_config(self):
        d = self.dir
        lines = [
            "[vault]", f"path = {d}/vault", f"key_file = {d}/vault.key", "",
            "[smtp]", f"listen = 127.0.0.1:{self.port}", "hostname = smtpvault.bench.test",
            "trusted_networks = 127.0.0.0/8", f"delivery = {self.delivery}",
            f"spool_dir = {d}/spool",
            # Every client of the benchmark is 127.0.0.1.
            f"max_connections = {self.max_conn}", f"max_connections_per_ip = {self.max_conn}",
        ]
        if self.lan_tls:
            lines += [f"tls_cert = {self.pki.cert}", f"tls_key = {self.pki.key}"]
        lines += ["", "[upstream]", "host = localhost", f"port = {self.sink.port}",
                  "tls = starttls", f"ca_file = {self.pki.ca}", "timeout = 30s"]
        if self.sessions is not None:
            lines.append(f"max_sessions_per_account = {self.sessions}")
        lines += ["", "[admin]", f"listen = 127.0.0.1:{self.admin_port}", "",
                  "[audit]", f"path = {d}/audit.log", ""]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    def start(self, **changes):
        """(Re)start with changed settings (sessions=, lan_tls=, ...)."""
        self.stop_daemon()
        for k, v in changes.items():
            setattr(self, k, v)
        self.write_config()
        self.log = open(os.path.join(self.dir, "smtpvault.stderr"), "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf, "serve"],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=self.env(),
                                     preexec_fn=child_setup(self.cg))
        if not wait_port(self.port, proc=self.proc):
            raise BenchError(f"{self.name} did not start; see {self.dir}/smtpvault.stderr")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu_ns(self):
        if self.cg.path is not None:
            return self.cg.usage_ns()
        return proc_cpu_ns(self.proc.pid)

    def rss_kib(self):
        """RSS of the main process alone (for comparison with older runs)."""
        return proc_rss_kib(self.proc.pid)

    def mem_kib(self):
        """The daemon's memory: PSS summed over all its processes."""
        return tree_pss_kib(self.proc.pid)

    def settle(self, timeout=60):
        pass

    def stop_daemon(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None

    def stop(self):
        self.stop_daemon()
        self.cg.remove()


# ---- load ---------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = args.tmp
        self.build = os.path.abspath(args.build)
        self.smtpvault_bin = os.path.join(self.build, "smtpvault")
        self.sink_bin = os.path.join(self.build, "bench", "sink")
        self.loadgen_bin = os.path.join(self.build, "bench", "loadgen")
        self.rounds = args.rounds
        self.run_secs = args.run_secs
        self.results = {}
        self.notes = []
        self.systems = {}
        self.id_base = 0
        self.tools = CGroup("tools")    # the sink and the load generators
        self.quiet_left = args.quiet_wait
        self.background = []

    # -- load generators

    def smtp_source(self, system, n, sessions):
        """smtp-source: n messages of MSG_SIZE over `sessions` parallel
        connections, one message per connection (its default)."""
        p = run([SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-l", str(MSG_SIZE),
                 "-f", SENDER, "-t", RCPT, "-M", "client.bench.test",
                 f"127.0.0.1:{system.port}"], timeout=600, check=False, cgroup=self.tools)
        if p.returncode != 0:
            raise BenchError(f"smtp-source against {system.name} failed: "
                             f"{(p.stderr or p.stdout).strip()[-400:]}")

    def loadgen(self, mode, port, *opts, timeout=600):
        p = run([self.loadgen_bin, mode] + [str(o) for o in opts] + [f"127.0.0.1:{port}"],
                timeout=timeout, check=False, cgroup=self.tools)
        if p.returncode != 0:
            raise BenchError(f"loadgen {mode} failed: {p.stderr.strip()[-400:]}")
        return kv_parse(p.stdout)

    # -- one throughput run

    def tput_run(self, system, n, sessions=100, poller=None):
        """Deliver n messages through system; the rate is delivered messages
        over the time from the first connection to the sink's last 250."""
        system.settle()
        s0 = self.sink.stats()
        c0 = system.cpu_ns()
        bg = Background()
        t0 = time.time_ns()
        if poller is not None:
            poller.start()
        try:
            self.smtp_source(system, n, sessions)
            s1 = self.sink.wait_messages(s0["messages"] + n, timeout=120)
        finally:
            if poller is not None:
                poller.stop()
        self.background.append(bg.share())
        time.sleep(0.3)
        c1 = system.cpu_ns()
        delivered = s1["messages"] - s0["messages"]
        if delivered < n:
            raise BenchError(f"{system.name}: only {delivered} of {n} messages reached the sink")
        elapsed = (s1["last_msg_real_ns"] - t0) / 1e9
        return {"rate": delivered / elapsed, "cpu_us": (c1 - c0) / 1e3 / delivered,
                "n": delivered, "secs": elapsed,
                "tls_full": s1["tls_full"] - s0["tls_full"],
                "tls_resumed": s1["tls_resumed"] - s0["tls_resumed"],
                "auths": s1["auths"] - s0["auths"]}

    def alternate(self, names, one_run, rounds):
        """Run each system once per round, order rotated every round."""
        out = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                out[name].append(one_run(name, r))
        return out

    # ---- figures

    def fig_sink(self):
        log("sink capacity: loadgen, 8 pipelined TLS+AUTH sessions, 4 KiB, RTT 0")
        self.sink.net(0, 0)
        rates = []
        for _ in range(2):
            st = self.loadgen("flood", self.sink.port, "-c", 8, "-T", max(3, self.run_secs // 2),
                              "-w", 1, "-S", "-a", "-A", self.pki.ca, "-l", MSG_SIZE)
            rates.append(st["rate"])
            log(f"  sink: {st['rate']:.0f} msg/s (p50 {st['lat_p50_us']} us)")
        self.results["sink_rate"] = max(rates)

    def fig_throughput(self):
        log("throughput and CPU: RTT 0, 100 concurrent smtp-source clients, 4 KiB")
        self.sink.net(0, 0)
        names = [n for n in ("postfix-default", "postfix-best", "smtpvault-direct",
                             "smtpvault-queue") if n in self.systems]
        for n in names:
            s = self.systems[n]
            if s.kind == "postfix":
                s.set(smtp_destination_concurrency_limit=20)
            elif not s.running() or s.sessions is not None:
                s.start(sessions=None)
        size = {}
        for name in names:     # warm-up, and the size of a run of ~run_secs
            w = self.tput_run(self.systems[name], 400)
            size[name] = int(min(60000, max(400, w["rate"] * self.run_secs)))
            log(f"  warm-up {name}: {w['rate']:.0f} msg/s -> runs of {size[name]} messages")

        def one(name, r):
            res = self.tput_run(self.systems[name], size[name])
            log(f"  round {r + 1} {name}: {res['rate']:.0f} msg/s, "
                f"{res['cpu_us']:.0f} us CPU/msg")
            return res
        self.results["tput"] = self.alternate(names, one, self.rounds)
        s = self.systems["smtpvault-direct"]
        time.sleep(1.0)
        self.results["rss_after_load"] = s.mem_kib()

    def fig_handshakes(self):
        log("upstream TLS handshakes + AUTHs per 1,000 messages: RTT 40 ms, 4 sessions")
        self.sink.net(40, 0)
        names = [n for n in ("postfix-default", "postfix-best", "smtpvault-direct",
                             "smtpvault-queue") if n in self.systems]
        self.set_sessions(names, 4)
        size = {}

        def one(name, r):
            system = self.systems[name]
            system.settle()
            # Warm-up: sessions are set up and logged in here (counted apart).
            w0 = self.sink.stats()
            t = time.monotonic()
            self.smtp_source(system, 12, 4)
            w1 = self.sink.wait_messages(w0["messages"] + 12, timeout=120)
            if name not in size:
                rate = 12 / max(0.01, time.monotonic() - t)
                size[name] = int(min(1000, max(40, rate * self.run_secs)))
            res = self.tput_run(system, size[name], sessions=4)
            res["cold"] = (w1["tls_full"] - w0["tls_full"] + w1["tls_resumed"]
                           - w0["tls_resumed"] + w1["auths"] - w0["auths"])
            res["per1000"] = 1000.0 * (res["tls_full"] + res["tls_resumed"] +
                                       res["auths"]) / res["n"]
            log(f"  round {r + 1} {name}: {res['n']} msgs, {res['tls_full']} full + "
                f"{res['tls_resumed']} resumed handshakes, {res['auths']} AUTHs -> "
                f"{res['per1000']:.1f} per 1,000 (warm-up: {res['cold']}); "
                f"{res['rate']:.1f} msg/s")
            return res
        self.results["handshakes"] = self.alternate(names, one, max(2, self.rounds - 1))

    def set_sessions(self, names, n):
        for name in names:
            s = self.systems[name]
            if s.kind == "postfix":
                s.set(smtp_destination_concurrency_limit=n)
            else:
                s.start(sessions=n)

    def poisson(self, system, rate, secs, warm):
        """Poisson arrivals; returns client-side and end-to-end latencies (ms)."""
        system.settle()
        base = self.id_base
        self.id_base += 10_000_000
        self.sink.timestamps()      # skip older lines
        s0 = self.sink.stats()
        lgts = os.path.join(self.tmp, f"lg-{base}.ts")
        bg = Background()
        st = self.loadgen("poisson", system.port, "-R", rate, "-T", secs, "-w", warm,
                          "-l", MSG_SIZE, "-i", base, "-o", lgts, "-f", SENDER, "-t", RCPT)
        self.background.append(bg.share())
        self.sink.wait_messages(s0["messages"] + st["ok"], timeout=120)
        sink_ts = self.sink.timestamps()
        e2e = []
        with open(lgts) as f:
            for line in f:
                i, t, counted = (int(x) for x in line.split())
                if counted and i in sink_ts:
                    e2e.append((sink_ts[i] - t) / 1e6)
        os.unlink(lgts)
        e2e.sort()
        return {"client_p50": st["lat_p50_us"] / 1e3, "client_p99": st["lat_p99_us"] / 1e3,
                "e2e_p50": percentile(e2e, 0.5), "e2e_p99": percentile(e2e, 0.99),
                "e2e_n": len(e2e), "sent": st["sent"], "failed": st["failed"]}

    def fig_e2e(self):
        log("end-to-end latency: RTT 40 ms, data delay 150 ms, 4 sessions, Poisson")
        self.sink.net(40, 150)
        names = [n for n in ("postfix-default", "postfix-best", "smtpvault-direct",
                             "smtpvault-queue") if n in self.systems]
        self.set_sessions(names, 4)
        # Postfix's capacity here: a burst of messages, delivered per second.
        caps = {}
        for name in ("postfix-default", "postfix-best"):
            res = self.tput_run(self.systems[name], 60 if name == "postfix-default" else 100,
                                sessions=20)
            caps[name] = res["rate"]
            log(f"  capacity of {name}: {res['rate']:.1f} msg/s")
        rate = round(0.5 * max(caps.values()), 2)
        self.results["e2e_caps"] = caps
        self.results["e2e_rate"] = rate
        log(f"  Poisson load: {rate} msg/s (50% of Postfix's best capacity)")

        def one(name, r):
            res = self.poisson(self.systems[name], rate, self.args.e2e_secs, 2)
            log(f"  round {r + 1} {name}: e2e p50 {res['e2e_p50']:.1f} ms, p99 "
                f"{res['e2e_p99']:.1f} ms (n={res['e2e_n']}); client p50 "
                f"{res['client_p50']:.1f} ms")
            return res
        self.results["e2e"] = self.alternate(names, one, 2)

    def fig_added_latency(self):
        log("latency added by the proxy: direct mode, RTT 0, Poisson 1,000 msg/s")
        self.sink.net(0, 0)
        s = self.systems["smtpvault-direct"]
        s.start(sessions=None)

        class Direct:
            name = "sink"
            port = self.sink.port

            def settle(self):
                pass

        targets = {"smtpvault-direct": s, "sink": Direct()}
        self.poisson(s, 1000, 2, 0)     # warm-up

        def one(name, r):
            res = self.poisson(targets[name], 1000, self.args.lat_secs, 1)
            log(f"  round {r + 1} {name}: client p50 {res['client_p50']:.3f} ms, p99 "
                f"{res['client_p99']:.3f} ms, {res['sent']} msgs")
            return res
        self.results["added"] = self.alternate(list(targets), one, self.rounds)

    def fig_rss(self):
        log("memory (PSS over the daemon's processes): idle, and per idle LAN connection")
        s = self.systems["smtpvault-direct"]
        out = {}
        s.start(lan_tls=True, max_conn=6000, sessions=None)
        time.sleep(1.0)
        out["idle"] = s.mem_kib()
        pids = proc_tree(s.proc.pid)
        out["idle_procs"] = len(pids)
        out["idle_main_rss"] = s.rss_kib()
        out["idle_map"] = pss_by_mapping(pids)
        for tls in (False, True):
            for n in (1000, 5000):
                s.start()
                time.sleep(0.5)
                base = s.mem_kib()
                argv = [self.loadgen_bin, "idle", "-c", str(n), "-T", "120"]
                if tls:
                    argv.append("-S")
                p = subprocess.Popen(argv + [f"127.0.0.1:{s.port}"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=child_setup())
                line = p.stdout.readline()
                if not line.startswith("ready"):
                    p.kill()
                    raise BenchError(f"loadgen idle: {line.strip()} {p.stderr.read()[-300:]}")
                time.sleep(0.5)
                rss = s.mem_kib()
                p.terminate()
                p.communicate(timeout=30)
                per = (rss - base) * 1024 / n
                out[(tls, n)] = per
                log(f"  {'STARTTLS' if tls else 'plain'} x{n}: {per / 1024:.1f} KiB per "
                    f"connection (PSS {base} -> {rss} KiB)")
        s.start(lan_tls=False, max_conn=2000)
        # Postfix for reference: one smtpd process per connection (PSS).
        pf = self.systems["postfix-default"]
        n = 50
        before = sum(proc_pss_kib(p) for p in pf.pids())
        p = subprocess.Popen([self.loadgen_bin, "idle", "-c", str(n), "-T", "60",
                              f"127.0.0.1:{pf.port}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=child_setup())
        line = p.stdout.readline()
        time.sleep(0.5)
        after = sum(proc_pss_kib(q) for q in pf.pids())
        p.terminate()
        p.communicate(timeout=30)
        if line.startswith("ready"):
            out["postfix"] = (after - before) * 1024 / n
            log(f"  postfix-default plain x{n}: {out['postfix'] / 1024:.1f} KiB PSS per "
                "connection")
        self.results["rss"] = out

    def fig_vault(self):
        log("vault unlock, MODERATE profile (CLI `account list`, median of 3)")
        d = os.path.join(self.tmp, "vault-moderate")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "c.conf")
        with open(os.path.join(d, "pass"), "w") as f:
            f.write("bench-passphrase-not-secret\n")
        with open(conf, "w") as f:
            f.write(f"[vault]\npath = {d}/vault\npassphrase_file = {d}/pass\n\n"
                    f"[audit]\npath = {d}/audit.log\n")
        os.chmod(os.path.join(d, "pass"), 0o600)
        env = self.systems["smtpvault-direct"].env()
        run([self.smtpvault_bin, "-c", conf, "init", "--kdf", "moderate"], env=env)
        run([self.smtpvault_bin, "-c", conf, "account", "add", SENDER], input=PASSWORD + "\n",
            env=env)
        times = []
        for _ in range(3):
            t = time.monotonic()
            run([self.smtpvault_bin, "-c", conf, "account", "list"], env=env)
            times.append(time.monotonic() - t)
        self.results["vault"] = statistics.median(times)
        log(f"  {self.results['vault']:.3f} s")

    def fig_admin(self):
        log("SMTP throughput while the admin page is polled at 10 req/s (GET /metrics)")
        s = self.systems["smtpvault-direct"]
        self.sink.net(0, 0)
        if not s.running():
            s.start()
        url = f"http://127.0.0.1:{s.admin_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
        except Exception as e:     # noqa: BLE001 (any failure means no admin server)
            self.results["admin"] = None
            self.notes.append(f"admin server not answering at {url} ({e}): not measured")
            log(f"  not measured: {e}")
            return

        class Poller:
            def __init__(self):
                self.n = self.errors = 0

            def start(self):
                self.stop_ev = threading.Event()
                self.t = threading.Thread(target=self.loop, daemon=True)
                self.t.start()

            def loop(self):
                nxt = time.monotonic()
                while not self.stop_ev.is_set():
                    try:
                        with urllib.request.urlopen(url, timeout=5) as r:
                            r.read()
                        self.n += 1
                    except Exception:   # noqa: BLE001
                        self.errors += 1
                    nxt += 0.1
                    self.stop_ev.wait(max(0, nxt - time.monotonic()))

            def stop(self):
                self.stop_ev.set()
                self.t.join()

        # The cost of one poll, measured alone: what 10 polls a second take.
        t = time.monotonic()
        for _ in range(100):
            with urllib.request.urlopen(url, timeout=5) as resp:
                resp.read()
        self.results["admin_req_ms"] = (time.monotonic() - t) * 1000 / 100
        poller = Poller()
        w = self.tput_run(s, 400)
        size = int(min(60000, max(400, w["rate"] * self.run_secs)))

        def one(name, r):
            res = self.tput_run(s, size, poller=poller if name == "polled" else None)
            log(f"  round {r + 1} {name}: {res['rate']:.0f} msg/s, {res['cpu_us']:.0f} us "
                "CPU/msg")
            return res
        self.results["admin"] = self.alternate(["quiet", "polled"], one, max(3, self.rounds))
        self.results["admin_polls"] = (poller.n, poller.errors)

    # ---- set-up and the report

    def setup(self):
        self.pki = Pki(os.path.join(self.tmp, "pki"))
        self.sink = Sink(self.sink_bin, os.path.join(self.tmp, "sink"), self.pki,
                         lifetime=self.args.lifetime, cgroup=self.tools)
        log(f"sink on 127.0.0.1:{self.sink.port} (STARTTLS) and :{self.sink.tls_port} (TLS)")
        script = os.path.join(HERE, "postfix.sh")
        for name, profile in (("postfix-default", "default"), ("postfix-best", "best")):
            pf = Postfix(name, os.path.join(self.tmp, name), self.sink, self.pki, profile,
                         script)
            self.systems[name] = pf
            pf.start()
            log(f"{name} on 127.0.0.1:{pf.port}")
        d = Smtpvault("smtpvault-direct", self.smtpvault_bin,
                      os.path.join(self.tmp, "smtpvault-direct"), self.sink, self.pki)
        self.systems["smtpvault-direct"] = d
        d.start()
        log(f"smtpvault-direct on 127.0.0.1:{d.port}")
        self.check_delivery(d)
        self.setup_queue()

    def check_delivery(self, system, timeout=10):
        s0 = self.sink.stats()
        self.smtp_source(system, 1, 1)
        st = self.sink.wait_messages(s0["messages"] + 1, timeout)
        return st["messages"] > s0["messages"]

    def setup_queue(self):
        q = Smtpvault("smtpvault-queue", self.smtpvault_bin,
                      os.path.join(self.tmp, "smtpvault-queue"), self.sink, self.pki,
                      delivery="queue")
        try:
            q.start()
            if not self.check_delivery(q):
                raise BenchError("a queued message did not reach the sink within 10 s")
        except BenchError as e:
            tail = ""
            try:
                with open(os.path.join(q.dir, "smtpvault.stderr"), errors="replace") as f:
                    tail = [l for l in f.read().splitlines() if "<3>" in l or "<4>" in l][-1:]
            except OSError:
                pass
            self.notes.append(f"queue mode not measured: {e} {' '.join(tail)}".strip())
            log(f"smtpvault-queue: not measured ({e})")
            q.stop()
            return
        if any("not available" in l for l in open(os.path.join(q.dir, "smtpvault.stderr"),
                                                  errors="replace")):
            self.notes.append("queue mode not measured: this build delivers directly "
                              "when asked for delivery = queue")
            log("smtpvault-queue: not measured (falls back to direct)")
            q.stop()
            return
        self.systems["smtpvault-queue"] = q
        log(f"smtpvault-queue on 127.0.0.1:{q.port}")

    def teardown(self):
        for s in self.systems.values():
            try:
                s.stop()
            except Exception as e:     # noqa: BLE001
                log(f"stopping {s.name}: {e}")
        if hasattr(self, "sink"):
            self.sink.stop()
        self.tools.remove()

    def wait_quiet(self, what):
        """Give other users of the machine a chance to finish: wait (at most
        --quiet-wait seconds for the whole run) for a second in which less
        than 25 % of the CPUs is busy outside this benchmark."""
        deadline = time.monotonic() + self.quiet_left
        while True:
            bg = Background()
            time.sleep(1.0)
            share = bg.share()
            if share < 0.25:
                return
            if time.monotonic() >= deadline:
                log(f"  the machine stays busy ({100 * share:.0f} % of the CPUs used by "
                    f"others); measuring {what} anyway")
                self.notes.append(f"{what}: measured while other processes used about "
                                  f"{100 * share:.0f} % of the CPUs")
                return
            self.quiet_left -= 1.0
            log(f"  waiting for a quieter machine ({100 * share:.0f} % of the CPUs busy "
                "elsewhere)")

    def main(self):
        figs = [("sink", self.fig_sink), ("throughput", self.fig_throughput),
                ("handshakes", self.fig_handshakes), ("e2e", self.fig_e2e),
                ("added", self.fig_added_latency), ("rss", self.fig_rss),
                ("vault", self.fig_vault), ("admin", self.fig_admin)]
        only = set(self.args.only.split(",")) if self.args.only else None
        try:
            self.setup()
            for name, fn in figs:
                if only and name not in only:
                    continue
                try:
                    self.wait_quiet(name)
                    fn()
                except BenchError as e:
                    self.notes.append(f"{name}: failed: {e}")
                    log(f"{name} FAILED: {e}")
        finally:
            self.teardown()
        report = Report(self).render()
        print(report)
        if self.args.results:
            with open(self.args.results, "w") as f:
                f.write(report)
            log(f"written to {os.path.relpath(self.args.results, ROOT)}")


# ---- the report ----------------------------------------------------------------

def fmt_mr(mr, fmt="{:.2f}", suffix=""):
    if mr is None:
        return "not measured"
    m, lo, hi = mr
    return f"{fmt.format(m)}{suffix} ({fmt.format(lo)}–{fmt.format(hi)})"


class Report:
    def __init__(self, bench):
        self.b = bench
        self.r = bench.results
        self.rows = []

    def ratio(self, key, a, b, field, invert=False):
        runs = self.r.get(key)
        if not runs or a not in runs or b not in runs:
            return None
        vals = []
        for x, y in zip(runs[a], runs[b]):
            if x[field] and y[field]:
                vals.append(y[field] / x[field] if invert else x[field] / y[field])
        return median_range(vals)

    def med(self, key, name, field):
        runs = self.r.get(key)
        if not runs or name not in runs:
            return None
        return median_range([x[field] for x in runs[name]])

    def row(self, figure, scenario, sv, pf, ratio, target, met):
        verdict = {True: "met", False: "**missed**", None: "not measured",
                   "info": "(for comparison)"}[met]
        self.rows.append(f"| {figure} | {scenario} | {sv} | {pf} | {ratio} | {target} | "
                         f"{verdict} |")

    def render(self):
        r = self.r
        q = "smtpvault-queue" in self.b.systems

        # Throughput and CPU.
        if "tput" in r:
            for sv in ("smtpvault-direct", "smtpvault-queue"):
                if sv not in r["tput"]:
                    continue
                ratio = self.ratio("tput", sv, "postfix-best", "rate")
                ratio0 = self.ratio("tput", sv, "postfix-default", "rate")
                if sv == "smtpvault-queue":
                    met, target = (ratio[0] >= 3 if ratio else None), ">= 3x best"
                else:
                    met, target = "info", "(the target is for queue mode)"
                self.row("delivered messages/s", f"RTT 0, 100 clients, 4 KiB ({sv[10:]})",
                         fmt_mr(self.med("tput", sv, "rate"), "{:.0f}"),
                         "best " + fmt_mr(self.med("tput", "postfix-best", "rate"), "{:.0f}") +
                         "; default " + fmt_mr(self.med("tput", "postfix-default", "rate"),
                                               "{:.0f}"),
                         f"{fmt_mr(ratio, suffix='x')} vs best; {fmt_mr(ratio0, suffix='x')} "
                         "vs default", target, met)
            for sv in ("smtpvault-direct", "smtpvault-queue"):
                if sv not in r["tput"]:
                    continue
                ratio = self.ratio("tput", sv, "postfix-best", "cpu_us")
                ratio0 = self.ratio("tput", sv, "postfix-default", "cpu_us")
                self.row("CPU time per delivered message", f"same ({sv[10:]})",
                         fmt_mr(self.med("tput", sv, "cpu_us"), "{:.0f}", " µs"),
                         "best " + fmt_mr(self.med("tput", "postfix-best", "cpu_us"), "{:.0f}",
                                          " µs") + "; default " +
                         fmt_mr(self.med("tput", "postfix-default", "cpu_us"), "{:.0f}", " µs"),
                         f"{fmt_mr(ratio, suffix='x')} vs best; {fmt_mr(ratio0, suffix='x')} "
                         "vs default", "<= 0.25x", ratio[0] <= 0.25 if ratio else None)
        if not q:
            self.row("delivered messages/s, CPU", "queue mode", "not measured", "", "",
                     ">= 3x, <= 0.25x", None)
        if "handshakes" in r:
            for sv in ("smtpvault-direct", "smtpvault-queue"):
                if sv not in r["handshakes"]:
                    continue
                m = self.med("handshakes", sv, "per1000")
                self.row("upstream TLS handshakes + AUTHs per 1,000 messages",
                         f"RTT 40 ms, 4 sessions, after warm-up ({sv[10:]})",
                         fmt_mr(m, "{:.1f}"),
                         "default " + fmt_mr(self.med("handshakes", "postfix-default", "per1000"),
                                             "{:.0f}") + "; best " +
                         fmt_mr(self.med("handshakes", "postfix-best", "per1000"), "{:.1f}"),
                         "", "<= 10", m[0] <= 10 if m else None)
        if "e2e" in r:
            for sv in ("smtpvault-direct", "smtpvault-queue"):
                if sv not in r["e2e"]:
                    continue
                p50 = self.med("e2e", sv, "e2e_p50")
                p99 = self.med("e2e", sv, "e2e_p99")
                bound = 2 * 40 + 150 + 5
                pf99 = {n: self.med("e2e", n, "e2e_p99") for n in ("postfix-default",
                                                                   "postfix-best")}
                ratio = self.ratio("e2e", sv, "postfix-best", "e2e_p99")
                self.row("end-to-end p50 / p99 (final dot to upstream 250)",
                         f"RTT 40, data delay 150 ms, 4 sessions, Poisson {r['e2e_rate']}/s "
                         f"({sv[10:]})",
                         f"p50 {fmt_mr(p50, '{:.1f}', ' ms')}; p99 {fmt_mr(p99, '{:.1f}', ' ms')}",
                         "best p50 " + fmt_mr(self.med("e2e", "postfix-best", "e2e_p50"), "{:.0f}",
                                              " ms") +
                         ", p99 " + fmt_mr(pf99["postfix-best"], "{:.0f}", " ms") +
                         "; default p50 " + fmt_mr(self.med("e2e", "postfix-default", "e2e_p50"),
                                                   "{:.0f}", " ms") +
                         ", p99 " + fmt_mr(pf99["postfix-default"], "{:.0f}", " ms"),
                         f"p99 {fmt_mr(ratio, suffix='x')} of best",
                         f"p50 <= {bound} ms; p99 < Postfix's",
                         (p50[0] <= bound and ratio[0] < 1) if (p50 and ratio) else None)
        if "added" in r:
            runs = r["added"]
            d50 = median_range([a["client_p50"] - b["client_p50"]
                                for a, b in zip(runs["smtpvault-direct"], runs["sink"])])
            d99 = median_range([a["client_p99"] - b["client_p99"]
                                for a, b in zip(runs["smtpvault-direct"], runs["sink"])])
            self.row("latency added by the proxy (direct)",
                     "RTT 0, Poisson 1,000 msg/s, vs straight to the sink",
                     f"p50 +{fmt_mr(d50, '{:.3f}', ' ms')}; p99 +{fmt_mr(d99, '{:.3f}', ' ms')}",
                     "", "sink alone: p50 " + fmt_mr(self.med("added", "sink", "client_p50"),
                                                     "{:.3f}", " ms"),
                     "p50 <= 0.2 ms, p99 <= 1 ms",
                     (d50[0] <= 0.2 and d99[0] <= 1.0) if (d50 and d99) else None)
        if "rss" in r:
            rs = r["rss"]
            for tls, limit in ((False, 8), (True, 24)):
                a, b = rs.get((tls, 1000)), rs.get((tls, 5000))
                if a is None or b is None:
                    continue
                self.row("memory (PSS) per idle LAN connection after EHLO",
                         f"{'STARTTLS' if tls else 'plain'}, 1,000 / 5,000 connections",
                         f"{a / 1024:.1f} / {b / 1024:.1f} KiB",
                         "" if tls or "postfix" not in rs else
                         f"default: {rs['postfix'] / 1024:.0f} KiB (PSS, one smtpd each)", "",
                         f"<= {limit} KiB", max(a, b) <= limit * 1024)
            self.row("daemon memory (PSS summed over its processes), no connections, vault "
                     "unlocked", "fresh start; after the "
                     "throughput runs", f"{rs['idle'] / 1024:.1f} MiB; " +
                     (f"{r['rss_after_load'] / 1024:.1f} MiB" if "rss_after_load" in r else "–"),
                     "", "", "<= 10 MiB", max(rs["idle"], r.get("rss_after_load", 0)) <= 10240)
        if "vault" in r:
            self.row("vault unlock, MODERATE", "CLI `account list`, process start included",
                     f"{r['vault']:.3f} s", "", "", "<= 0.7 s", r["vault"] <= 0.7)
        if r.get("admin"):
            runs = r["admin"]
            loss = median_range([100 * (1 - p["rate"] / q["rate"])
                                 for q, p in zip(runs["quiet"], runs["polled"])])
            closs = median_range([100 * (1 - q["cpu_us"] / p["cpu_us"])
                                  for q, p in zip(runs["quiet"], runs["polled"])])
            bound = r["admin_req_ms"] * 10 / 1000 * 100
            self.row("SMTP throughput lost while the admin page is polled",
                     "GET /metrics at 10 req/s, direct mode, scenario 1",
                     f"at most {bound:.2f} % (10 polls of {r['admin_req_ms']:.2f} ms a "
                     f"second); measured {fmt_mr(loss, '{:.1f}', ' %')}, from CPU per "
                     f"message {fmt_mr(closs, '{:.1f}', ' %')}", "", "", "<= 2 %",
                     bound <= 2)
        else:
            self.row("SMTP throughput lost while the admin page is polled", "", "not measured",
                     "", "", "<= 2 %", None)

        b = self.b
        sink_rate = r.get("sink_rate")
        fastest = 0
        for runs in r.get("tput", {}).values():
            fastest = max(fastest, max(x["rate"] for x in runs))
        head = [
            "# smtpvault vs Postfix: benchmark results",
            "",
            f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}  ",
            f"Machine: {os.cpu_count()} CPUs ({cpu_model()}), {mem_total()} RAM, "
            f"kernel {platform.release()}  ",
            f"Versions: smtpvault {git_rev()}, Postfix {postfix_version()}, "
            f"{openssl_version()}, libevent {libevent_version()}  ",
            f"Command: `{b.args.command}` (as root; Debian 12)  ",
            f"Method: {b.rounds} alternating rounds (A B A B, order rotated) after a warm-up "
            f"run of each system; every figure is the median of the per-round values or "
            f"ratios, with (min–max). Runs of about {b.run_secs} s.",
            "",
            "| figure | scenario | smtpvault | Postfix | ratio | target | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        foot = ["", "Notes:", ""]
        if sink_rate:
            foot.append(f"- The sink alone (loadgen, 8 pipelined STARTTLS+AUTH sessions, "
                        f"4 KiB) takes {sink_rate:.0f} msg/s, "
                        f"{sink_rate / fastest:.1f}x the fastest relay's {fastest:.0f} msg/s."
                        if fastest else f"- The sink alone takes {sink_rate:.0f} msg/s.")
        if "rss" in r and "idle_map" in r["rss"]:
            m = r["rss"]["idle_map"]
            anon = sum(v for k, v in m if k == "[anon]")
            libs = [(os.path.basename(k), v) for k, v in m if k != "[anon]"]
            foot.append(f"- Idle daemon memory {r['rss']['idle'] / 1024:.1f} MiB: the sum of "
                        f"PSS over its {r['rss'].get('idle_procs', 1)} processes (the main "
                        "process and the vault keeper; more after the process split), so "
                        "that a page several of them share counts once, and a library page "
                        "shared with other programs on the machine counts in part; "
                        f"{anon / 1024:.1f} MiB anonymous (heap, stacks, guarded memory), "
                        f"{sum(v for _, v in libs) / 1024:.1f} MiB of mapped files; "
                        "largest: " +
                        ", ".join(f"{k} {v / 1024:.1f}" for k, v in libs[:8]) + " MiB. "
                        "RSS of the main process alone (the figure of earlier runs): "
                        f"{r['rss'].get('idle_main_rss', 0) / 1024:.1f} MiB. Per idle "
                        "connection: growth of the same PSS sum.")
        if "e2e_caps" in r:
            foot.append("- Postfix's delivery capacity at RTT 40 ms, data delay 150 ms, 4 "
                        "sessions: " + ", ".join(f"{k} {v:.1f} msg/s" for k, v in
                                                 r["e2e_caps"].items()) +
                        f"; the Poisson load is half the larger: {r['e2e_rate']} msg/s.")
        if "handshakes" in r:
            cold = {k: median_range([x["cold"] for x in v]) for k, v in r["handshakes"].items()}
            foot.append("- Handshakes + AUTHs during the 12-message warm-up that opens each "
                        "handshake run (cold start): " + ", ".join(
                            f"{k} {v[0]:.0f}" for k, v in cold.items() if v) + ".")
        if b.background:
            bgs = sorted(b.background)
            foot.append(f"- Other load on the machine (CPU used outside the benchmark's own "
                        f"processes, share of all {os.cpu_count()} CPUs) during the measured "
                        f"runs: median {100 * statistics.median(bgs):.0f} %, max "
                        f"{100 * bgs[-1]:.0f} %. Runs that shared the machine are noisier; "
                        "the ratios of adjacent runs cancel some of it.")
        if r.get("admin_polls"):
            foot.append(f"- Admin polls answered: {r['admin_polls'][0]}, failed: "
                        f"{r['admin_polls'][1]}. The admin verdict uses the time one poll "
                        "takes end to end at idle (client, network and server: an upper "
                        "bound of the daemon's time), times 10 per second; the throughput "
                        "and CPU-per-message changes measured with and without polling are "
                        "shown too, but they swing by more than 2 % between adjacent runs "
                        "on a shared 2-CPU machine.")
        foot.append(f"- Every process of the benchmark (both systems, the sink, the load "
                    f"generators) ran at nice {os.nice(0)}, the same for all, so that other "
                    "users of a shared machine disturb the runs less.")
        foot += [
            "- CPU time: cpuacct cgroup of each system (all processes of the Postfix "
            "instance: master, smtpd, cleanup, qmgr, smtp, tlsproxy, ...; the smtpvault "
            "daemon), read before the run and 0.3 s after the sink's last 250; the load "
            "generator and the sink are not included.",
            "- Postfix runs as private instances (tests/bench/postfix.sh): smarthost "
            "relayhost [localhost]:sink with SASL (PLAIN) over smtp_tls_security_level = "
            "secure, fsync'd queue; `best` adds smtp_tls_connection_reuse (tlsproxy), "
            "smtp_connection_cache_destinations and a TLS session cache.",
            "- smtpvault: max_connections and max_connections_per_ip raised for the "
            "benchmark (every client is 127.0.0.1); the audit log is fsync'd per message.",
            "- 4 sessions: smtpvault max_sessions_per_account = 4, Postfix "
            "smtp_destination_concurrency_limit = 4; throughput runs use the defaults (3 and "
            "20).",
        ]
        foot += [f"- {n}" for n in b.notes]
        return "\n".join(head + self.rows + foot) + "\n"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mem_total():
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return f"{kib / 1024 / 1024:.0f} GiB"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "proxy",
                                "vault", "admin"], capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def postfix_version():
    return subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                          text=True).stdout.strip()


def openssl_version():
    return subprocess.run(["openssl", "version"], capture_output=True,
                          text=True).stdout.strip().split(" (")[0]


def libevent_version():
    return subprocess.run(["pkg-config", "--modversion", "libevent"], capture_output=True,
                          text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--results", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run-secs", type=int, default=8)
    ap.add_argument("--e2e-secs", type=int, default=15)
    ap.add_argument("--lat-secs", type=int, default=5)
    ap.add_argument("--lifetime", type=int, default=1800, help="hard limit for the sink")
    ap.add_argument("--quiet-wait", type=int, default=120, help="seconds to wait in all, "
                    "before the figures, for other processes to leave the CPUs alone")
    ap.add_argument("--command", default="make bench", help="how this run was started, "
                    "for the report")
    ap.add_argument("--only", default="", help="comma-separated figures: sink,throughput,"
                    "handshakes,e2e,added,rss,vault,admin")
    args, rest = ap.parse_known_args()
    if rest:
        ap.error(f"unknown arguments: {rest}")
    global CGROUP_PREFIX
    CGROUP_PREFIX = f"smtpvault-bench-{os.path.basename(os.path.normpath(args.tmp))}"
    Bench(args).main()


if __name__ == "__main__":
    main()
