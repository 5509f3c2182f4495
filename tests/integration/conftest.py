"""conftest.py: fixtures for the integration tests.

  pki            (session) the test CA and certificates, see pki.py
  gmail          a fresh FakeGmail per test, started, serving pki.good
  smtpvault_bin  absolute path of the binary under test ($SMTPVAULT_BIN,
                 default build/smtpvault in the repository)
  daemon         factory: d = daemon(accounts=[...], smtp={...}, upstream={...},
                 extra="...", start=True) writes a config into tmp_path, creates
                 the vault (key file), adds the accounts, starts `serve`, and
                 stops it at teardown (SIGTERM; the exit status must be 0).
  cli            run the binary with arguments and stdin, without a daemon:
                 cli(*args, input=None, conf=None) -> (rc, stdout, stderr)

A Daemon has: conf, tmp, port, admin_port, host, proc, accounts,
cli(*args, input=None) -> (rc, out, err), log() (its stderr so far),
wait_log(regex, timeout), smtp(source=None) (a connected smtplib.SMTP),
pids() -> {"keeper": pid, "relay": pid, "smtp": pid, "admin": pid} (the
processes of `serve`, from its log), stop() -> exit status.
"""

import ctypes
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import List, Optional

import pytest

import fakegmail
import pki as pki_module

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0      # the CLI may run a KDF
TEST_TIMEOUT = 120      # per test, when pytest-timeout is not installed

# A default account with a Gmail-shaped App Password (16 letters).
DEFAULT_ACCOUNT = "team@example.com"
DEFAULT_PASSWORD = "abcdefghijklmnop"


@dataclass
class Account:
    """An account for the daemon factory. password goes into the vault;
    upstream_password into the fake's table (default: the same; None: not
    in the table at all)."""
    address: str
    password: str = DEFAULT_PASSWORD
    aliases: List[str] = field(default_factory=list)
    upstream_password: Optional[str] = "same"
    args: List[str] = field(default_factory=list)


# ---- per-test timeout fallback -------------------------------------------

try:
    import pytest_timeout  # noqa: F401
    HAVE_PYTEST_TIMEOUT = True
except ImportError:
    HAVE_PYTEST_TIMEOUT = False


@pytest.fixture(autouse=True)
def _test_alarm():
    """Without pytest-timeout, a SIGALRM bounds every test."""
    if HAVE_PYTEST_TIMEOUT:
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"test took longer than {TEST_TIMEOUT}s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- fixtures ------------------------------------------------------------

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return pki_module.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def gmail(pki):
    g = fakegmail.FakeGmail(cert=pki.good)
    g.start()
    yield g
    g.stop()


@pytest.fixture(scope="session")
def smtpvault_bin():
    path = os.environ.get("SMTPVAULT_BIN") or os.path.join(REPO_ROOT, "build", "smtpvault")
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"smtpvault binary not found or not executable: {path} "
                    "(run `make`, or set SMTPVAULT_BIN)")
    return path


_ports_handed_out = set()


def free_port():
    """A free loopback port, never one this test run handed out before (the
    kernel may offer the same ephemeral port twice in a row, e.g. for a
    daemon's SMTP and admin listeners)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def child_env():
    """The environment for the binary: ours (sanitizer options pass
    through) without anything that could point it at a real vault."""
    env = dict(os.environ)
    for k in ("SMTPVAULT_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET",
              "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(k, None)
    # Started as root (CI), serve would drop to the smtpvault user, which
    # cannot read these root-owned throw-away files; test_deploy.py covers
    # the drop itself with files made for it.
    env["SMTPVAULT_ALLOW_ROOT"] = "1"
    return env


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if pytest dies, so that a killed
    test run never leaves a daemon behind."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run_cli(binary, args, input=None, conf=None, timeout=CLI_TIMEOUT):
    argv = [binary] + (["-c", conf] if conf else []) + [str(a) for a in args]
    p = subprocess.run(argv, input=input if input is not None else "",
                       capture_output=True, text=True, timeout=timeout, env=child_env(),
                       preexec_fn=die_with_parent)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def cli(smtpvault_bin):
    def run(*args, input=None, conf=None, timeout=CLI_TIMEOUT):
        return run_cli(smtpvault_bin, args, input=input, conf=conf, timeout=timeout)
    return run


def render_config(sections, extra=""):
    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        for k, v in keys.items():
            if v is not None:
                out.append(f"{k} = {v}")
        out.append("")
    if extra:
        out.append(extra.strip("\n"))
        out.append("")
    return "\n".join(out)


class Daemon:
    def __init__(self, binary, tmp, gmail, pki):
        self.binary = binary
        self.tmp = str(tmp)
        self.gmail = gmail
        self.pki = pki
        self.host = "127.0.0.1"
        self.port = free_port()
        self.admin_port = free_port()
        self.conf = os.path.join(self.tmp, "smtpvault.conf")
        self.vault = os.path.join(self.tmp, "vault")
        self.key_file = os.path.join(self.tmp, "vault.key")
        self.spool = os.path.join(self.tmp, "spool")
        self.audit = os.path.join(self.tmp, "audit.log")
        self.stderr_path = os.path.join(self.tmp, "smtpvault.stderr")
        self.stdout_path = os.path.join(self.tmp, "smtpvault.stdout")
        self.accounts = []
        self.proc = None
        self._stderr = None
        self._stdout = None
        self.exit_status = None
        self.env = {}           # extra environment for `serve` (tests add to it)
        self.wrapper = []       # argv prefix for `serve` (e.g. a namespace wrapper)

    def write_config(self, smtp=None, upstream=None, vault=None, admin=None, audit=None,
                     extra=""):
        sections = {
            "vault": {"path": self.vault, "key_file": self.key_file},
            "smtp": {
                "listen": f"127.0.0.1:{self.port}",
                "hostname": "relay.test.lan",
                "trusted_networks": "127.0.0.1/32",
                "timeout": "30s",
                "delivery": "direct",
                "spool_dir": self.spool,
            },
            "upstream": {
                "host": "localhost",
                "port": self.gmail.starttls_port if self.gmail else 587,
                "tls": "starttls",
                "ca_file": self.pki.ca,
                "timeout": "5s",
            },
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "audit": {"path": self.audit},
        }
        for name, override in (("smtp", smtp), ("upstream", upstream), ("vault", vault),
                               ("admin", admin), ("audit", audit)):
            if override:
                sections[name].update(override)
        with open(self.conf, "w") as f:
            f.write(render_config(sections, extra))

    def cli(self, *args, input=None, timeout=CLI_TIMEOUT):
        return run_cli(self.binary, args, input=input, conf=self.conf, timeout=timeout)

    def init_vault(self):
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        rc, out, err = self.cli("init", "--kdf", "interactive")
        if rc != 0:
            pytest.fail(f"smtpvault init failed (rc={rc}): {err.strip()}")

    def add_account(self, acct):
        if isinstance(acct, str):
            acct = Account(acct)
        args = ["account", "add", acct.address]
        for a in acct.aliases:
            args += ["--alias", a]
        args += acct.args
        rc, out, err = self.cli(*args, input=acct.password + "\n")
        if rc != 0:
            pytest.fail(f"smtpvault account add {acct.address} failed (rc={rc}): {err.strip()}")
        upstream = acct.password if acct.upstream_password == "same" else acct.upstream_password
        if self.gmail is not None and upstream is not None:
            self.gmail.passwords[acct.address] = upstream.replace(" ", "")
        self.accounts.append(acct)
        return acct

    def start(self):
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.wrapper + [self.binary, "-c", self.conf, "serve"],
                                     stdin=subprocess.DEVNULL, stdout=self._stdout,
                                     stderr=self._stderr, env={**child_env(), **self.env},
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"smtpvault serve exited with status {self.proc.returncode} "
                            f"at start-up; stderr:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"smtpvault serve did not accept on {self.host}:{self.port} "
                            f"within {START_TIMEOUT}s; stderr:\n{self.log()}")
            time.sleep(0.05)

    def stop(self):
        """SIGTERM, wait (kill after STOP_TIMEOUT); return the exit status
        (negative: killed by that signal; None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_status = "killed after SIGTERM timeout"
        if self.exit_status is None:
            self.exit_status = self.proc.returncode
        for f in (self._stderr, self._stdout):
            if f:
                f.close()
        self._stderr = self._stdout = None
        return self.exit_status

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=5.0):
        """Wait for a line of the daemon's stderr to match pattern; return
        the match or fail the test."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() >= deadline:
                pytest.fail(f"daemon log did not match {pattern!r} within {timeout}s; "
                            f"stderr:\n{self.log()}")
            time.sleep(0.05)

    def pids(self):
        """The processes of the running daemon by role, from the parent's
        "event=child_started process=ROLE pid=N" lines. A role that has no
        process of its own yet is served by the relay's."""
        found = dict(re.findall(r"event=child_started process=(\w+) pid=(\d+)", self.log()))
        pids = {role: int(pid) for role, pid in found.items()}
        for role in ("smtp", "admin"):
            if role not in pids and "relay" in pids:
                pids[role] = pids["relay"]
        return pids

    def smtp(self, source=None, timeout=10):
        """A smtplib.SMTP connected to the proxy (optionally from source)."""
        return smtplib.SMTP(self.host, self.port, timeout=timeout,
                            source_address=(source, 0) if source else None)


@pytest.fixture
def daemon(smtpvault_bin, tmp_path, gmail, pki):
    """Factory for running daemons; each is stopped at teardown and must
    exit 0 on SIGTERM."""
    started = []

    def make(accounts=(DEFAULT_ACCOUNT,), smtp=None, upstream=None, vault=None,
             admin=None, audit=None, extra="", start=True):
        d_tmp = tmp_path / f"d{len(started)}"
        d_tmp.mkdir()
        d = Daemon(smtpvault_bin, d_tmp, gmail, pki)
        d.write_config(smtp=smtp, upstream=upstream, vault=vault, admin=admin, audit=audit,
                       extra=extra)
        d.init_vault()
        for a in accounts:
            d.add_account(a)
        started.append(d)
        if start:
            d.start()
        return d

    yield make

    problems = []
    for d in started:
        was_running = d.proc is not None and d.proc.poll() is None
        status = d.stop()
        if d.proc is not None and status != 0:
            how = "on SIGTERM" if was_running else "before teardown"
            problems.append(f"smtpvault serve exited with status {status} {how}; "
                            f"stderr:\n{d.log()}")
    if problems:
        pytest.fail("\n".join(problems))
