"""test_deploy.py: how the daemon behaves as operators run it (issue 7).

  - started as root it drops to the smtpvault user after binding (as
    /proc/PID/status shows) and still relays; it refuses to run on state
    that user cannot write, naming the chown to do;
  - it refuses a vault, key file, passphrase file or credential that group
    or others may read, and state directories others may write, with one
    line naming the file and the chmod, exit status 2;
  - under a fake systemd (an AF_UNIX datagram NOTIFY_SOCKET) it reports
    READY=1, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM, and
    pings WATCHDOG=1 at half of WATCHDOG_USEC, but only while every child
    answers the parent's heartbeat: a stopped child (SIGSTOP) stops the
    pings and is named in the log, and they resume when it answers again;
    without systemd's watchdog the silence is only logged;
  - the shipped logrotate file rotates the audit log under a running daemon
    and the hash chain continues across the rotation.

The root tests create the system user smtpvault when it is missing (as
deploy/systemd/smtpvault.sysusers would) and skip when not run as root.
"""

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import threading
import time

import pytest

import conftest
from conftest import DEFAULT_ACCOUNT, Daemon, run_cli

REPO_ROOT = conftest.REPO_ROOT
LOGROTATE = os.path.join(REPO_ROOT, "deploy", "logrotate", "smtpvault")
USER = "smtpvault"
RCPT = "bob@example.net"
NOTIFY_TIMEOUT = 10.0
WATCHDOG_USEC = 1000000         # 1 s: pings every 0.5 s, while every child answers
WATCHDOG_WINDOW = 3.0           # seconds of pings counted
WATCHDOG_MIN_PINGS = 4          # of ~6 expected (slack for a loaded CI machine)
HANG_WATCHDOG_USEC = 1000000    # 1 s: the parent asks its children and pings every 0.5 s
HANG_LIMIT_MS = 1000            # without a watchdog: SMTPVAULT_TEST_HEARTBEAT_MS
HANG_TIMEOUT = 5.0              # the silence is said within two intervals; slack for CI
ROLES = ("keeper", "relay", "smtp", "admin")


def message(subject="deploy test"):
    return (f"From: {DEFAULT_ACCOUNT}\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@deploy.test>\r\n\r\nHello.\r\n").encode()


def relay_one(d, gmail, subject="deploy test"):
    before = len(gmail.delivered)
    with d.smtp() as s:
        s.ehlo("deploy.lan")
        assert s.sendmail(DEFAULT_ACCOUNT, [RCPT], message(subject)) == {}
    gmail.wait_for(lambda: len(gmail.delivered) > before, what="the relayed message")
    return gmail.delivered[-1]


def start_with_env(d, monkeypatch, extra=None, drop=()):
    """d.start() with extra environment variables for the daemon."""
    base = conftest.child_env

    def env():
        e = base()
        for k in drop:
            e.pop(k, None)
        e.update(extra or {})
        return e
    monkeypatch.setattr(conftest, "child_env", env)
    try:
        d.start()
    finally:
        monkeypatch.setattr(conftest, "child_env", base)


def proc_ids(pid):
    """(uids, gids, groups) from /proc/PID/status."""
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = [int(x) for x in value.split()]
    return ids["Uid"], ids["Gid"], ids["Groups"]


def one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    return lines[0]


# ---- started as root ---------------------------------------------------------

@pytest.fixture(scope="module")
def smtpvault_user():
    """The system user smtpvault, created when missing (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemon drops privileges only when started as root")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            pytest.skip("useradd is not installed; cannot create the smtpvault user")
        p = subprocess.run([useradd, "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", USER], capture_output=True, text=True)
        assert p.returncode == 0, f"useradd failed: {p.stderr}"
        pw = pwd.getpwnam(USER)
    assert pw.pw_uid != 0 and pw.pw_gid != 0
    return pw


@pytest.fixture
def root_daemon(smtpvault_bin, gmail, pki, smtpvault_user):
    """A Daemon whose files live in a directory of their own under /tmp
    (pytest's own is root-only, 0700), set up by root with the CLI and then
    given to smtpvault, as an operator would with `chown -R`."""
    top = tempfile.mkdtemp(prefix="smtpvault-deploy-", dir="/tmp")
    made = []

    def make(chown=True):
        d = Daemon(smtpvault_bin, top, gmail, pki)
        ca = os.path.join(top, "ca.pem")
        shutil.copyfile(pki.ca, ca)     # re-read after the drop on reload
        d.write_config(upstream={"ca_file": ca})
        d.init_vault()
        d.add_account(DEFAULT_ACCOUNT)
        if chown:
            for root, dirs, files in os.walk(top):
                for name in dirs + files + ["."]:
                    os.lchown(os.path.join(root, name), smtpvault_user.pw_uid,
                              smtpvault_user.pw_gid)
        os.chmod(top, 0o700)
        made.append(d)
        return d

    yield make
    problems = []
    for d in made:
        was_running = d.proc is not None and d.proc.poll() is None
        status = d.stop()
        if was_running and status != 0:
            problems.append(f"exit status {status} on SIGTERM; stderr:\n{d.log()}")
    shutil.rmtree(top, ignore_errors=True)
    assert not problems, "\n".join(problems)


def test_root_drops_to_smtpvault_and_relays(root_daemon, gmail, smtpvault_user, monkeypatch):
    d = root_daemon()
    start_with_env(d, monkeypatch, drop=("SMTPVAULT_ALLOW_ROOT",))
    d.wait_log(r"event=started")
    uids, gids, groups = proc_ids(d.proc.pid)
    uid, gid = smtpvault_user.pw_uid, smtpvault_user.pw_gid
    assert uids == [uid] * 4, f"Uid: {uids}, expected smtpvault's {uid} (real, eff, saved, fs)"
    assert gids == [gid] * 4, f"Gid: {gids}, expected {gid}"
    expected = {g.gr_gid for g in grp.getgrall() if USER in g.gr_mem} | {gid}
    assert 0 not in groups and set(groups) <= expected, f"Groups: {groups}"
    assert "running as root" not in d.log()

    m = relay_one(d, gmail)
    assert m.auth_user == DEFAULT_ACCOUNT
    # It writes as smtpvault: the audit log records the message, and a
    # reload (config, CA file, audit reopen) works without root.
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"event=reload config=")
    relay_one(d, gmail, "after reload")
    st = os.stat(d.audit)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o600)
    with open(d.audit) as f:
        assert f.read().count('"status":"delivered"') == 2


def test_root_refuses_state_the_user_cannot_write(root_daemon, smtpvault_user):
    """Files left to root after a chown -R was forgotten: refused before
    serving, with the path and the chown to run."""
    d = root_daemon()
    os.chown(d.audit, 0, 0)
    env = {k: v for k, v in conftest.child_env().items() if k != "SMTPVAULT_ALLOW_ROOT"}
    p = subprocess.run([d.binary, "-c", d.conf, "serve"], capture_output=True, text=True,
                       timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    # The daemon's log: info lines, then one error.
    line = one_error_line("\n".join(l for l in p.stderr.splitlines() if l.startswith("<3>")))
    assert f"user {USER} cannot write to" in line
    assert f"chown {USER}: {d.audit}" in line, line
    assert "audit log" in line


# ---- file permissions -----------------------------------------------------

def _chmod_case(d, what):
    if what == "vault":
        os.chmod(d.vault, 0o640)
        return d.vault, "chmod 600"
    if what == "key file":
        os.chmod(d.key_file, 0o644)
        return d.key_file, "chmod 600"
    if what == "vault directory":
        os.chmod(d.tmp, 0o777)
        return d.tmp, "chmod 700"
    if what == "spool directory":
        os.chmod(d.spool, 0o770)
        return d.spool, "chmod 700"
    raise AssertionError(what)


@pytest.mark.parametrize("check", [True, False], ids=["serve--check", "serve"])
@pytest.mark.parametrize("what", ["vault", "key file", "vault directory", "spool directory"])
def test_refuses_unsafe_permissions(daemon, what, check):
    d = daemon(start=False)
    path, fix = _chmod_case(d, what)
    rc, out, err = d.cli("serve", *(["--check"] if check else []), timeout=30)
    assert rc == 2, f"rc={rc}: {err}"
    line = one_error_line(err)
    assert line.startswith("smtpvault: "), line
    assert f"{what} {path} is " in line and "by group or others" in line, line
    assert line.endswith(f"{fix} {path}"), line
    assert "configuration OK" not in out


def test_refuses_group_readable_passphrase_file(daemon, tmp_path):
    d = daemon(start=False)
    pf = tmp_path / "passphrase"
    pf.write_text("a passphrase\n")
    pf.chmod(0o640)
    rc, out, err = d.cli("--passphrase-file", str(pf), "serve", "--check")
    assert rc == 2
    line = one_error_line(err)
    assert line == (f"smtpvault: passphrase file {pf} is readable by group or others "
                    f"(mode 0640); chmod 600 {pf}"), line


def test_refuses_group_readable_credential(daemon, tmp_path, smtpvault_bin):
    d = daemon(start=False)
    creds = tmp_path / "creds"
    creds.mkdir()
    cred = creds / "smtpvault-passphrase"
    cred.write_text("x\n")
    cred.chmod(0o644)
    env = dict(conftest.child_env(), CREDENTIALS_DIRECTORY=str(creds))
    p = subprocess.run([smtpvault_bin, "-c", d.conf, "serve", "--check"], env=env,
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert one_error_line(p.stderr).endswith(f"chmod 600 {cred}")


def test_safe_permissions_pass(daemon):
    d = daemon(start=False)
    rc, out, err = d.cli("serve", "--check")
    assert rc == 0 and out.strip() == "configuration OK", err


# ---- sd_notify -----------------------------------------------------------------

class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: an AF_UNIX datagram socket."""

    def __init__(self, path):
        """path: a file name, or "@name" for a name in the abstract namespace
        (as systemd may pass it)."""
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path.startswith("@"):
            self.sock.bind("\0" + path[1:])
        else:
            self.sock.bind(path)
            os.chmod(path, 0o666)
        self.received = []      # (monotonic time, {key: value})

    def close(self):
        self.sock.close()

    def expect(self, key, value="1", timeout=NOTIFY_TIMEOUT):
        """Wait for a datagram with key=value; return its fields."""
        for _, fields in self.received:
            if fields.get(key) == value:
                return fields
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} within {timeout}s; got "
                                     f"{[f for _, f in self.received]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.received.append((time.monotonic(), fields))
            if fields.get(key) == value:
                return fields

    def drain(self, seconds):
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.received.append((time.monotonic(), fields))

    def states(self):
        order = []
        for _, f in self.received:
            for k in ("READY", "RELOADING", "STOPPING"):
                if k in f:
                    order.append(k)
        return order


@pytest.fixture
def fake_systemd(tmp_path):
    s = FakeSystemd(str(tmp_path / "notify.sock"))
    yield s
    s.close()


def test_sd_notify_ready_reload_stopping(daemon, fake_systemd, monkeypatch):
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"NOTIFY_SOCKET": fake_systemd.path})
    ready = fake_systemd.expect("READY")
    assert ready.get("STATUS")
    # READY comes after the listeners are up: the port already accepts.
    with socket.create_connection((d.host, d.port), timeout=2):
        pass
    d.proc.send_signal(signal.SIGHUP)
    reloading = fake_systemd.expect("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    d.wait_log(r"event=reload config=")
    fake_systemd.drain(0.3)
    assert fake_systemd.states() == ["READY", "RELOADING", "READY"], fake_systemd.states()
    assert not any("WATCHDOG" in f for _, f in fake_systemd.received), \
        "no watchdog pings without WATCHDOG_USEC"
    d.proc.send_signal(signal.SIGTERM)
    fake_systemd.expect("STOPPING")
    assert d.proc.wait(conftest.STOP_TIMEOUT) == 0
    assert fake_systemd.states()[-1] == "STOPPING"


def test_sd_notify_abstract_socket(daemon, monkeypatch):
    """NOTIFY_SOCKET may name an abstract socket ("@..."): no file, no NUL."""
    s = FakeSystemd(f"@smtpvault-test-notify-{os.getpid()}-{time.monotonic_ns()}")
    try:
        d = daemon(start=False)
        start_with_env(d, monkeypatch, {"NOTIFY_SOCKET": s.path})
        assert s.expect("READY").get("STATUS") == "serving"
        d.proc.send_signal(signal.SIGTERM)
        s.expect("STOPPING")
        assert d.proc.wait(timeout=10) == 0
    finally:
        s.close()


def test_sd_notify_watchdog_pings(daemon, fake_systemd, monkeypatch):
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"NOTIFY_SOCKET": fake_systemd.path,
                                    "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    fake_systemd.expect("READY")
    fake_systemd.expect("WATCHDOG")
    t0 = time.monotonic()
    fake_systemd.drain(WATCHDOG_WINDOW)
    pings = [t for t, f in fake_systemd.received if f.get("WATCHDOG") == "1" and t >= t0]
    assert len(pings) >= WATCHDOG_MIN_PINGS, f"{len(pings)} pings in {WATCHDOG_WINDOW}s"
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    # Half the interval, never as late as the interval itself.
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps


def test_sd_notify_watchdog_for_another_pid_is_ignored(daemon, fake_systemd, monkeypatch):
    """WATCHDOG_PID names the process systemd watches; another process must
    not ping (sd_watchdog_enabled(3))."""
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"NOTIFY_SOCKET": fake_systemd.path,
                                    "WATCHDOG_USEC": str(WATCHDOG_USEC),
                                    "WATCHDOG_PID": "1"})
    fake_systemd.expect("READY")
    fake_systemd.drain(0.5)
    assert not any("WATCHDOG" in f for _, f in fake_systemd.received)


def watchdog_pings(fake, since):
    return [t for t, f in fake.received if f.get("WATCHDOG") == "1" and t >= since]


@contextlib.contextmanager
def draining(fake):
    """Read the notify socket in the background, so that each datagram's
    time is when it was sent (give or take 50 ms)."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            fake.drain(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def test_watchdog_stops_while_a_child_hangs(daemon, fake_systemd, monkeypatch):
    """A child whose loop no longer turns (stopped here) is noticed by the
    parent's heartbeat: the WATCHDOG=1 pings stop, so that systemd would
    kill and restart the daemon, and the log names the child; once it
    answers again the pings resume. The daemon itself never exits."""
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"NOTIFY_SOCKET": fake_systemd.path,
                                    "WATCHDOG_USEC": str(HANG_WATCHDOG_USEC)})
    fake_systemd.expect("READY")
    fake_systemd.expect("WATCHDOG")
    interval = HANG_WATCHDOG_USEC / 1e6
    relay = d.pids()["relay"]
    with draining(fake_systemd):
        t_stop = time.monotonic()
        os.kill(relay, signal.SIGSTOP)
        try:
            m = d.wait_log(r"event=child_unresponsive process=relay silent_ms=(\d+) "
                           r"action=stop_watchdog", timeout=HANG_TIMEOUT)
            assert int(m.group(1)) > HANG_WATCHDOG_USEC / 1000
            time.sleep(0.2)         # what was sent before the line
            t_quiet = time.monotonic()
            last = max(watchdog_pings(fake_systemd, t_stop), default=t_stop)
            assert last - t_stop < 2 * interval, f"pinged {last - t_stop:.2f}s after SIGSTOP"
            time.sleep(2 * interval)
            assert watchdog_pings(fake_systemd, t_quiet) == [], "pings while the relay hangs"
            assert d.proc.poll() is None, "the daemon must not exit by itself"
            assert d.log().count("event=child_unresponsive") == 1, "said once"
        finally:
            os.kill(relay, signal.SIGCONT)
        t_cont = time.monotonic()
        d.wait_log(r"event=child_responsive process=relay silent_ms=\d+ "
                   r"action=resume_watchdog", timeout=HANG_TIMEOUT)
        time.sleep(2 * interval)
    assert len(watchdog_pings(fake_systemd, t_cont)) >= 2, "the pings resume"
    assert d.proc.poll() is None
    assert d.stop() == 0


@pytest.mark.parametrize("role", ROLES)
def test_hung_child_is_logged_without_watchdog(daemon, monkeypatch, role):
    """Without systemd's watchdog the parent only says which child is
    silent (after SMTPVAULT_TEST_HEARTBEAT_MS; 30 s by default), once, and
    that it answers again; it stops nothing."""
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"SMTPVAULT_TEST_HEARTBEAT_MS": str(HANG_LIMIT_MS)})
    pid = d.pids()[role]
    os.kill(pid, signal.SIGSTOP)
    try:
        m = d.wait_log(rf"event=child_unresponsive process={role} silent_ms=(\d+) "
                       r"action=none", timeout=HANG_TIMEOUT)
        assert int(m.group(1)) > HANG_LIMIT_MS
        time.sleep(2 * HANG_LIMIT_MS / 1000)
        assert d.log().count("event=child_unresponsive") == 1, d.log()
        assert d.proc.poll() is None, "the daemon must not exit by itself"
    finally:
        os.kill(pid, signal.SIGCONT)
    d.wait_log(rf"event=child_responsive process={role} silent_ms=\d+ action=none",
               timeout=HANG_TIMEOUT)
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_no_heartbeat_line_when_all_answer(daemon, monkeypatch):
    """Children that answer are never called silent, even with a short limit."""
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"SMTPVAULT_TEST_HEARTBEAT_MS": "200"})
    time.sleep(1.5)
    assert "child_unresponsive" not in d.log()
    assert d.stop() == 0


# ---- logrotate ---------------------------------------------------------------

def test_logrotate_under_a_running_daemon_keeps_the_chain(daemon, gmail, tmp_path):
    """The shipped logrotate file, with its path and owner mapped to this
    test's and the postrotate's reload replaced by kill -HUP: only audit.log
    rotates, audit.log.head stays, and old + new verify as one chain."""
    logrotate = shutil.which("logrotate")
    if logrotate is None:
        pytest.skip("logrotate is not installed (tests/deps.sh installs it)")
    d = daemon()
    relay_one(d, gmail, "before rotation")
    conf = open(LOGROTATE).read()
    conf = conf.replace("/var/lib/smtpvault/audit.log", d.audit)
    conf = conf.replace("smtpvault smtpvault", "root root")
    conf = re.sub(r"systemctl reload smtpvault\.service[^\n]*", f"kill -HUP {d.proc.pid}", conf)
    assert f"kill -HUP {d.proc.pid}" in conf
    path = tmp_path / "logrotate.conf"
    path.write_text(conf)
    path.chmod(0o644)
    p = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"), str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rotated = d.audit + ".1"
    assert os.path.isfile(rotated), os.listdir(d.tmp)
    assert os.path.isfile(d.audit + ".head")
    assert not any(n.startswith("audit.log.head.") for n in os.listdir(d.tmp)), os.listdir(d.tmp)
    d.wait_log(r"event=reload config=")
    relay_one(d, gmail, "after rotation")
    deadline = time.monotonic() + 5
    while "after rotation" not in open(d.audit).read():
        assert time.monotonic() < deadline, "no audit entry in the new file"
        time.sleep(0.05)
    assert "before rotation" in open(rotated).read()
    rc, out, err = d.cli("audit", "verify", rotated, d.audit)
    assert rc == 0, out + err
    assert "audit log OK" in out


def test_no_ready_after_stopping_when_stopped_mid_reload(daemon, fake_systemd, monkeypatch):
    """SIGTERM while a reload is still waited for: STOPPING=1 is the last
    state systemd hears; the children's late reload answers and the reload
    timer send no READY=1 after it, and the stop is clean."""
    d = daemon(start=False)
    start_with_env(d, monkeypatch, {"NOTIFY_SOCKET": fake_systemd.path})
    fake_systemd.expect("READY")
    d.proc.send_signal(signal.SIGHUP)
    d.proc.send_signal(signal.SIGTERM)
    fake_systemd.expect("STOPPING")
    assert d.proc.wait(conftest.STOP_TIMEOUT) == 0, d.log()
    fake_systemd.drain(0.3)
    states = fake_systemd.states()
    assert "STOPPING" in states
    assert "READY" not in states[states.index("STOPPING"):], states


def test_serve_with_stdin_and_stdout_closed(daemon, gmail):
    """Started with fds 0 and 1 closed (a careless init script), serve puts
    /dev/null there before it makes any channel, so that no channel lands on
    stdio and no log line goes into one; every child but the keeper reads
    stdin from /dev/null. It relays and stops cleanly."""
    d = daemon(start=False)
    d._stderr = open(d.stderr_path, "wb")

    def closed_stdio():
        conftest.die_with_parent()
        os.close(0)
        os.close(1)
    d.proc = subprocess.Popen([d.binary, "-c", d.conf, "serve"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=d._stderr,
                              env=conftest.child_env(), preexec_fn=closed_stdio)
    deadline = time.monotonic() + conftest.START_TIMEOUT
    while True:
        assert d.proc.poll() is None, f"serve exited {d.proc.returncode}:\n{d.log()}"
        try:
            with socket.create_connection((d.host, d.port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
    relay_one(d, gmail, "stdio closed")
    pids = d.pids()
    for fd in (0, 1):
        assert os.readlink(f"/proc/{d.proc.pid}/fd/{fd}") == "/dev/null"
    for role in ("relay", "smtp", "admin"):
        assert os.readlink(f"/proc/{pids[role]}/fd/0") == "/dev/null", role
    assert d.stop() == 0, d.log()
    assert "event=child_exited" not in d.log(), d.log()
