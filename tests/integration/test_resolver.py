"""test_resolver.py: the upstream reached by name through DNS, and TLS with
the system's trust store, as in production (smtp.gmail.com, no ca_file),
with the relay and admin processes under their seccomp allow-lists.

Every other test names the upstream "localhost" (found in /etc/hosts, no
DNS packet) and sets ca_file. Here the daemon runs in a private mount
namespace whose /etc/resolv.conf (bind-mounted over the real one, which is
never touched; written the way systemd-resolved writes its own) names the
DNS stub of dnsstub.py on 127.0.0.77: it answers A for smtp.gmail.test
(127.0.0.1, where the fake Gmail listens; the test CA's good certificate
carries that name), an empty NOERROR for AAAA, NXDOMAIN for everything
else, and counts what it is asked. The daemon resolves with libevent's
evdns (relay and admin process each), which reads resolv.conf and
/etc/hosts itself when it starts, and speaks UDP only.

- direct and queue mode deliver to smtp.gmail.test, also when it has an
  AAAA record where nothing listens; the admin API's rotate with
  "verify": true proves a password upstream from the admin process;
- a name that does not resolve, a resolver that does not answer, a
  truncated UDP answer, and a certificate the system's CAs do not vouch
  for (ca_file unset; relay and admin probe) give a clean 4xx (the probe:
  no 200) and a log line that says why;
- ca_file unset and the test CA in a hashed directory (SSL_CERT_DIR, as
  /etc/ssl/certs is looked up in production, lazily, during the
  handshake): relay and admin probe succeed;
and after each, no child of `serve` has exited (a call missing from an
allow-list is SIGSYS: "child_exited ... signal=31") and the relay and the
admin process still run under their filters. Needs root (mount
namespaces) and 127.0.0.77:53.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

import dnsstub
from conftest import DEFAULT_ACCOUNT
from test_admin import Admin, add_admin

NAME = "smtp.gmail.test"
NX_NAME = "nowhere.gmail.test"
STUB_ADDR = "127.0.0.77"
RCPT = "bob@example.org"
NEW_PW = "qrstuvwxyzabcdef"
WAIT = 15.0
RESOLV_CONF = (f"nameserver {STUB_ADDR}\n"
               "options edns0 trust-ad attempts:1 timeout:1\n"
               "search .\n")
# $0 is the resolv.conf to mount, "$@" the daemon's argv.
NS_SCRIPT = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


def namespace_wrapper(resolv_conf):
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", NS_SCRIPT, resolv_conf]


@pytest.fixture
def resolv_conf(tmp_path):
    """A resolv.conf naming the stub, and a check that this machine lets us
    mount it in a namespace of our own (skip otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace over /etc/resolv.conf needs root")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("unshare(1) or mount(8) is not installed")
    path = tmp_path / "resolv.conf"
    path.write_text(RESOLV_CONF)
    p = subprocess.run(namespace_wrapper(str(path)) + ["cat", "/etc/resolv.conf"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or p.stdout != RESOLV_CONF:
        pytest.skip(f"cannot bind-mount a resolv.conf in a mount namespace here: "
                    f"rc={p.returncode} {p.stderr.strip()}")
    return str(path)


@pytest.fixture
def dns(resolv_conf):
    stub = dnsstub.DnsStub({NAME: "127.0.0.1"}, addr=STUB_ADDR)
    try:
        stub.start()
    except OSError as e:
        pytest.skip(f"cannot serve DNS on {STUB_ADDR}:53: {e}")
    stub.resolv_conf = resolv_conf
    yield stub
    stub.stop()


def ns_daemon(daemon, dns, gmail, host=NAME, smtp=None, upstream=None, admin_user=False):
    """A daemon in the namespace, its upstream named host; no ca_file when
    upstream sets it to None."""
    d = daemon(smtp=smtp, upstream={"host": host, "port": gmail.starttls_port,
                                    **(upstream or {})}, start=False)
    if admin_user:
        add_admin(d)
    assert "SMTPVAULT_NO_SECCOMP" not in os.environ
    d.wrapper = namespace_wrapper(dns.resolv_conf)
    d.start()
    # The filters are on: the allow-lists are what this test is about.
    for role in ("relay", "admin"):
        pid = d.pids()[role]
        assert seccomp_mode(pid) == "2", (role, d.log())
    return d


def seccomp_mode(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return line.split(":", 1)[1].strip()
    return None


def assert_alive(d, roles=("relay", "admin")):
    """No child exited (SIGSYS from a filter shows as signal=31), the daemon
    runs, and the roles' processes are still the ones that started."""
    time.sleep(0.3)     # a child killed just now: give the parent its SIGCHLD
    log = d.log()
    assert "child_exited" not in log, log
    assert d.proc.poll() is None, log
    pids = d.pids()
    for role in roles:
        assert os.path.exists(f"/proc/{pids[role]}"), (role, log)
        assert seccomp_mode(pids[role]) == "2", (role, log)


def message(msgid):
    return (f"From: Team <{DEFAULT_ACCOUNT}>\r\nTo: Bob <{RCPT}>\r\n"
            f"Subject: resolver test\r\nMessage-ID: <{msgid}>\r\n\r\n"
            f"Hello through DNS.\r\n").encode()


def transaction(d, msgid):
    """One message, step by step: (code, text) of the first reply that is
    not a success, or of the final dot."""
    with d.smtp() as s:
        s.ehlo("printer.lan")
        for step in (lambda: s.mail(DEFAULT_ACCOUNT), lambda: s.rcpt(RCPT)):
            code, text = step()
            if code >= 400:
                return code, text.decode()
        code, text = s.data(message(msgid))
        return code, text.decode()


def delivered(gmail, msgid):
    return gmail.wait_for(lambda: [m for m in gmail.delivered
                                   if f"<{msgid}>".encode() in m.data],
                          timeout=WAIT, what=f"delivery of {msgid}")


# ---- the upstream found through DNS ------------------------------------------

def test_direct_mode_resolves_the_upstream(daemon, gmail, dns):
    d = ns_daemon(daemon, dns, gmail)
    code, text = transaction(d, "dns-direct@test.lan")
    assert code == 250, (text, d.log())
    m = delivered(gmail, "dns-direct@test.lan")[0]
    assert m.auth_user == DEFAULT_ACCOUNT and m.rcpts == [RCPT]
    assert dns.count(NAME, "A") >= 1, dns.queries
    assert_alive(d)


def test_queue_mode_resolves_the_upstream(daemon, gmail, dns):
    d = ns_daemon(daemon, dns, gmail, smtp={"delivery": "queue"},
                  upstream={"retry_schedule": "1s", "timeout": "2s"})
    code, text = transaction(d, "dns-queue@test.lan")
    assert code == 250 and "queued as" in text, (text, d.log())
    delivered(gmail, "dns-queue@test.lan")
    assert dns.count(NAME, "A") >= 1, dns.queries
    assert_alive(d)


def test_ipv4_and_ipv6_answers(daemon, gmail, dns):
    """Like smtp.gmail.com, the name has an AAAA record too; here nothing
    listens there (::1): the daemon must still reach the IPv4 address."""
    dns.aaaa[NAME] = "::1"
    d = ns_daemon(daemon, dns, gmail)
    code, text = transaction(d, "dns-dual@test.lan")
    assert code == 250, (code, text, d.log())
    delivered(gmail, "dns-dual@test.lan")
    assert dns.count(NAME, "AAAA") >= 1, dns.queries
    assert_alive(d)


def test_admin_rotate_verifies_through_dns(daemon, gmail, dns):
    d = ns_daemon(daemon, dns, gmail, admin_user=True)
    a = Admin(d)
    status, _, payload = a.login()
    assert status == 200, payload
    before = dns.count(NAME, "A")
    gmail.passwords[DEFAULT_ACCOUNT] = NEW_PW
    auths = len(gmail.auth_attempts)
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": NEW_PW, "verify": True})
    assert status == 200, (data, d.log())
    assert data["verified"] is True and data["version"] == 2, data
    assert len(gmail.auth_attempts) > auths
    assert gmail.auth_attempts[-1].password == NEW_PW
    # The admin process asked the stub itself (the relay had no reason to).
    assert dns.count(NAME, "A") > before, dns.queries
    assert_alive(d)


# ---- failures: a clean 4xx, a log line, every process still up ----------------

def test_unknown_name_is_a_clean_4xx(daemon, gmail, dns):
    d = ns_daemon(daemon, dns, gmail, host=NX_NAME)
    code, text = transaction(d, "dns-nx@test.lan")
    assert 400 <= code < 500, (code, text, d.log())
    assert dns.count(NX_NAME, "A") >= 1, dns.queries
    assert gmail.connections == [], "nothing may reach the upstream"
    d.wait_log(r"cannot resolve " + re.escape(NX_NAME))
    assert_alive(d)
    # And the daemon still serves the next client.
    code, text = transaction(d, "dns-nx-2@test.lan")
    assert 400 <= code < 500, (code, text, d.log())
    assert_alive(d)


def test_truncated_answer(daemon, gmail, dns):
    """A UDP answer with TC set: a resolver that retries over TCP delivers,
    one that does not gives a clean 4xx; either way nothing is killed."""
    dns.truncate.add(NAME)
    d = ns_daemon(daemon, dns, gmail)
    code, text = transaction(d, "dns-tc@test.lan")
    assert dns.count(NAME, "A", proto="udp") >= 1, dns.queries
    if dns.count(NAME, proto="tcp"):
        assert code == 250, (code, text, d.log())
        delivered(gmail, "dns-tc@test.lan")
    else:
        assert 400 <= code < 500, (code, text, d.log())
        d.wait_log(r"cannot resolve " + re.escape(NAME))
    assert_alive(d)


def test_resolver_that_does_not_answer(daemon, gmail, dns):
    """Queries time out (resolv.conf: timeout:1 attempts:1): a clean 4xx."""
    dns.drop.add(NAME)
    d = ns_daemon(daemon, dns, gmail)
    code, text = transaction(d, "dns-drop@test.lan")
    assert 400 <= code < 500, (code, text, d.log())
    assert dns.count(NAME, "A") >= 1, dns.queries
    assert gmail.connections == []
    d.wait_log(r"cannot resolve " + re.escape(NAME))
    assert_alive(d)


def test_system_trust_store_refuses_the_test_ca(daemon, gmail, dns):
    d = ns_daemon(daemon, dns, gmail, upstream={"ca_file": None}, admin_user=True)
    assert "ca_file" not in open(d.conf).read()
    code, text = transaction(d, "dns-ca@test.lan")
    assert 400 <= code < 500, (code, text, d.log())
    assert dns.count(NAME, "A") >= 1, dns.queries
    assert gmail.delivered == [] and gmail.auth_attempts == []
    d.wait_log(r"relay\]: .*TLS verification failed: unable to get local issuer certificate")
    assert_alive(d)
    # The admin process's probe builds its TLS context (reading the system's
    # CA bundle) after its filter is on: refused too, nothing stored.
    a = Admin(d)
    assert a.login()[0] == 200
    gmail.passwords[DEFAULT_ACCOUNT] = NEW_PW
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": NEW_PW, "verify": True})
    assert status != 200 and "TLS verification failed" in str(data), (status, data, d.log())
    assert gmail.auth_attempts == []
    assert_alive(d)


def test_system_trust_store_by_hash_directory(daemon, gmail, dns, pki, tmp_path):
    """ca_file unset and the test CA found the way the system's CAs are in
    production: OpenSSL's hashed directory, looked up lazily while the
    certificate is verified (SSL_CERT_DIR points it at ours)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl(1) is not installed")
    certs = tmp_path / "certs"
    certs.mkdir()
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", pki.ca],
                       capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy(pki.ca, certs / f"{h}.0")
    d = daemon(upstream={"host": NAME, "port": gmail.starttls_port, "ca_file": None},
               start=False)
    add_admin(d)
    d.env["SSL_CERT_DIR"] = str(certs)
    d.wrapper = namespace_wrapper(dns.resolv_conf)
    d.start()
    code, text = transaction(d, "dns-hashdir@test.lan")
    assert code == 250, (code, text, d.log())
    delivered(gmail, "dns-hashdir@test.lan")
    assert_alive(d)
    a = Admin(d)
    assert a.login()[0] == 200
    gmail.passwords[DEFAULT_ACCOUNT] = NEW_PW
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": NEW_PW, "verify": True})
    assert status == 200 and data["verified"] is True, (status, data, d.log())
    assert dns.count(NAME, "A") >= 2, dns.queries
    assert_alive(d)
