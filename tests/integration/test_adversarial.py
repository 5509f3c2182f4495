"""test_adversarial.py: hostile input end to end (issue 9).

A running `smtpvault serve` against clients and upstreams that try to break
it: SMTP smuggling, open-relay probes (nmap's smtp-open-relay forms), STARTTLS
command injection on the LAN side, response injection and every kind of bad
TLS from the upstream, upstreams that drip or flood, and clients that exhaust
lines, connections and recipients.

What must hold: no second upstream message and no bare CR or LF upstream; no
relay for an untrusted address; no command executed from plaintext sent
before TLS; no AUTH byte to an unverified or misbehaving server; no hang past
the configured timeouts; bounded memory (the daemon's VmRSS and VmHWM are
read from /proc before and after, printed, written to
tests/out/adversarial-BUILDDIR.txt and asserted); other clients still served
within 2 s.
"""

import os
import re
import resource
import select
import socket
import ssl
import threading
import time

import pytest

from conftest import DEFAULT_ACCOUNT, REPO_ROOT

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10                    # socket timeout of a test client
RCPT = "bob@example.org"
MB = 1024 * 1024
OUT_DIR = os.path.join(REPO_ROOT, "tests", "out")
METRICS = None          # tests/out/adversarial-BUILDDIR.txt, set per run

# Memory bounds. A 10 MB attack must not leave a 10 MB footprint: the daemon
# may grow by buffers it keeps anyway (64 KiB input watermark per session,
# allocator slack), never by the size of the attack.
RSS_GROWTH_MAX_KB = 8 * 1024
IDLE_CONN_KB_MAX = 64           # per idle connection, on average
SERVE_WITHIN = 2.0              # seconds for a whole transaction under load


# ---- reporting -------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _metrics_file(smtpvault_bin):
    """One file per build directory (build, build-asan), so that runs
    against different builds do not mix their figures."""
    global METRICS
    build = os.path.basename(os.path.dirname(smtpvault_bin)) or "build"
    os.makedirs(OUT_DIR, exist_ok=True)
    METRICS = os.path.join(OUT_DIR, f"adversarial-{build}.txt")
    with open(METRICS, "w") as f:
        f.write(f"# test_adversarial.py against {smtpvault_bin}, "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    yield


def report(test, **values):
    """One line of figures, printed (pytest -s) and kept in tests/out/."""
    line = f"{test}: " + " ".join(f"{k}={v}" for k, v in values.items())
    with open(METRICS, "a") as f:
        f.write(line + "\n")
    print(line)


@pytest.fixture
def bounded_asan(smtpvault_bin, monkeypatch):
    """For the tests that measure memory: under an ASan build, freed memory
    waits in ASan's quarantine (256 MB by default) and would be counted as
    the daemon's. Those tests run the daemon with a small quarantine, which
    still catches use-after-free of recent frees."""
    with open(smtpvault_bin, "rb") as f:
        asan = b"__asan_init" in f.read()
    if asan:
        opts = os.environ.get("ASAN_OPTIONS", "")
        monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") +
                           "quarantine_size_mb=1:thread_local_quarantine_size_kb=64")
    return asan


def proc_status(pid):
    """VmRSS and VmHWM of a process, in kB: the relay's for what the upstream
    sends, the front end's for what a LAN client sends (d.pids())."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


# ---- a raw SMTP client -----------------------------------------------------

class Lan:
    """A raw SMTP client on the LAN side, for exact bytes and replies."""

    def __init__(self, d, source=None, timeout=TIMEOUT):
        self.sock = socket.create_connection(
            (d.host, d.port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """(code, text) of one reply, its lines joined with \\n."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed; partial reply {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def cmd(self, line):
        self.send((line if isinstance(line, bytes) else line.encode()) + b"\r\n")
        return self.reply()

    def pending(self, wait):
        """Bytes that arrive within wait seconds without being asked for."""
        data = self.buf
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return data
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                return data
            if not chunk:
                return data
            data += chunk

    def closed(self, timeout=5):
        """True once the server closed the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def ehlo(c, name="lan.test"):
    code, text = c.reply()
    assert code == 220, text
    code, text = c.cmd(f"EHLO {name}")
    assert code == 250, text
    return text


def dot_stuff(body):
    stuffed = re.sub(rb"(?<=\r\n)\.", b"..", b"\r\n" + body)[2:]
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


def transact(c, body=b"Subject: t\r\n\r\nhello\r\n", mail_from=DEFAULT_ACCOUNT, rcpts=(RCPT,)):
    """A whole transaction; (stage, code, text) of the first refusal or of
    the reply to the final dot."""
    code, text = c.cmd(f"MAIL FROM:<{mail_from}>")
    if code != 250:
        return "MAIL", code, text
    for r in rcpts:
        code, text = c.cmd(f"RCPT TO:<{r}>")
        if code != 250:
            return "RCPT", code, text
    code, text = c.cmd("DATA")
    if code != 354:
        return "DATA", code, text
    c.send(dot_stuff(body) + b".\r\n")
    code, text = c.reply()
    return "DATA-END", code, text


def send_one(d, **kw):
    c = Lan(d)
    try:
        ehlo(c)
        return transact(c, **kw)
    finally:
        c.close()


BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def assert_no_upstream_auth(gmail):
    assert gmail.auth_commands == 0, "an AUTH command reached the upstream"
    assert gmail.auth_attempts == []
    for conn in gmail.connections:
        assert not any(cmd.upper().startswith(("AUTH", "MAIL", "RCPT", "DATA"))
                       for cmd in conn.commands), conn.commands
    assert gmail.messages == []


# ---- SMTP smuggling --------------------------------------------------------

HIDDEN = (b"MAIL FROM:<evil@example.com>\r\n"
          b"RCPT TO:<victim@example.org>\r\n"
          b"DATA\r\n"
          b"From: evil@example.com\r\nSubject: smuggled\r\n\r\nevil\r\n")

SMUGGLING = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "CR.LF": b"\r.\n",
    "LF.CR": b"\n.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF-NUL.CRLF": b"\r\n\x00.\r\n",
    "CRCRLF.CRCRLF": b"\r\r\n.\r\r\n",
}


@pytest.mark.parametrize("seq", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_smuggling_variant_hides_no_transaction(daemon, gmail, seq):
    """A fake end of data followed by a whole hidden transaction: one reply
    for the whole DATA, at most one upstream message, for the real envelope
    only, with nothing but CR LF line ends on the wire upstream."""
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"From: team@example.com\r\nSubject: first\r\n\r\nfirst" + seq + HIDDEN + b".\r\n")
        code, text = c.reply()
        assert code == 250 or 500 <= code < 600, text
        # Exactly one reply for the whole DATA: the next one is NOOP's.
        extra = c.pending(0.3)
        assert extra == b"", f"unasked replies after DATA (hidden commands run?): {extra!r}"
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()
    if seq == b"\r\n\x00.\r\n":
        assert code == 554 and "5.6.0" in text, f"NUL in a message must be refused: {text}"
    time.sleep(0.2)
    assert len(gmail.messages) <= 1, [m.rcpts for m in gmail.messages]
    for m in gmail.messages:
        assert m.mail_from == DEFAULT_ACCOUNT and m.rcpts == [RCPT]
        assert not BARE.search(m.raw), f"bare CR or LF on the wire upstream: {m.raw!r}"
        assert not BARE.search(m.data), m.data
        # The hidden transaction travelled as message text, not as commands.
        assert b"MAIL FROM:<evil@example.com>" in m.data
    for conn in gmail.connections:
        assert not any("evil@example.com" in cmd or "victim@example.org" in cmd
                       for cmd in conn.commands), conn.commands
        assert conn.bare_lf_commands == 0
    report(f"smuggling[{seq!r}]", reply=code, upstream_messages=len(gmail.messages))


# ---- open relay --------------------------------------------------------------

NMAP_DOMAIN = "nmap.scanme.org"
SRVNAME = "relay.test.lan"      # the name in the proxy's greeting, as nmap uses it


def nmap_forms(ip):
    """The 16 MAIL FROM / RCPT TO pairs of nmap's smtp-open-relay.nse."""
    dom, srv = NMAP_DOMAIN, SRVNAME
    return [
        ("<>", f"<relaytest@{dom}>"),
        (f"<antispam@{dom}>", f"<relaytest@{dom}>"),
        (f"<antispam@{srv}>", f"<relaytest@{dom}>"),
        (f"<antispam@[{ip}]>", f"<relaytest@{dom}>"),
        (f"<antispam@[{ip}]>", f"<relaytest%{dom}@[{ip}]>"),
        (f"<antispam@[{ip}]>", f"<relaytest%{dom}@{srv}>"),
        (f"<antispam@[{ip}]>", f'<"relaytest@{dom}">'),
        (f"<antispam@[{ip}]>", f'<"relaytest%{dom}">'),
        (f"<antispam@[{ip}]>", f"<relaytest@{dom}@[{ip}]>"),
        (f"<antispam@[{ip}]>", f'<"relaytest@{dom}"@[{ip}]>'),
        (f"<antispam@[{ip}]>", f"<relaytest@{dom}@{srv}>"),
        (f"<antispam@[{ip}]>", f"<@[{ip}]:relaytest@{dom}>"),
        (f"<antispam@[{ip}]>", f"<@{srv}:relaytest@{dom}>"),
        (f"<antispam@[{ip}]>", f"<{dom}!relaytest>"),
        (f"<antispam@[{ip}]>", f"<{dom}!relaytest@[{ip}]>"),
        (f"<antispam@[{ip}]>", f"<{dom}!relaytest@{srv}>"),
    ]


def test_open_relay_probes_from_untrusted_address(daemon, gmail):
    """From 127.0.0.2 (trusted_networks is 127.0.0.1/32): every nmap form
    meets 554 5.7.1 at connect and a closed connection; nothing is accepted,
    nothing goes upstream, every refusal is audited."""
    d = daemon(smtp={"default_account": DEFAULT_ACCOUNT})
    accepted = []
    for i, (mail, rcpt) in enumerate(nmap_forms("127.0.0.1")):
        c = Lan(d, source="127.0.0.2")
        try:
            code, text = c.reply()
            assert code == 554 and "5.7.1" in text and "not allowed to relay" in text, text
            # Talk anyway, as a probe does: nothing may be accepted.
            try:
                c.send(f"EHLO probe\r\nRSET\r\nMAIL FROM:{mail}\r\nRCPT TO:{rcpt}\r\n"
                       "DATA\r\nSubject: relay\r\n\r\nx\r\n.\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            rest = c.pending(0.5)
            if re.search(rb"(?m)^(250|354)", rest):
                accepted.append((i + 1, mail, rcpt, rest))
            assert c.closed(), "untrusted client was not disconnected"
        finally:
            c.close()
    assert accepted == [], accepted
    assert gmail.connections == [], "an untrusted probe caused an upstream connection"
    deadline = time.monotonic() + 3
    while True:
        with open(d.audit) as f:
            rejects = [line for line in f if '"reject"' in line and "127.0.0.2" in line]
        if len(rejects) >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rejects) >= 16, f"{len(rejects)} audited refusals for 16 probes"
    report("open_relay_untrusted", forms=16, accepted=len(accepted), audited=len(rejects))


# What a trusted client gets for each nmap form: the four plain recipients
# are ordinary addresses (a trusted LAN host may send anywhere); every
# routing trick is refused at RCPT, never rewritten.
NMAP_EXPECTED_RCPT = [250, 250, 250, 250, 553, 553, 553, 553, 501, 553, 501, 553, 553,
                      553, 553, 553]


def test_open_relay_forms_from_trusted_address_parsed_safely(daemon, gmail):
    d = daemon(smtp={"default_account": DEFAULT_ACCOUNT})
    c = Lan(d)
    results = []
    try:
        ehlo(c)
        for mail, rcpt in nmap_forms("127.0.0.1"):
            assert c.cmd("RSET")[0] == 250
            mcode, mtext = c.cmd(f"MAIL FROM:{mail}")
            rcode, rtext = c.cmd(f"RCPT TO:{rcpt}") if mcode == 250 else (None, "")
            results.append((mail, rcpt, mcode, rcode, rtext))
        # One accepted form carried through: the recipient goes upstream
        # exactly as written, under the default account.
        assert c.cmd("RSET")[0] == 250
        stage, code, text = transact(c, mail_from="antispam@[127.0.0.1]",
                                     rcpts=[f"relaytest@{NMAP_DOMAIN}"])
        assert code == 250, (stage, code, text)
    finally:
        c.close()
    table = "; ".join(f"{r[1]}->{r[3]}" for r in results)
    report("open_relay_trusted", results=table)
    for (mail, rcpt, mcode, rcode, rtext), want in zip(results, NMAP_EXPECTED_RCPT):
        assert mcode == 250, f"MAIL FROM:{mail} refused ({mcode}) with a default account set"
        assert rcode == want, f"RCPT TO:{rcpt}: got {rcode} {rtext!r}, expected {want}"
        if want == 553:
            assert "5.1.3" in rtext, rtext
    m = gmail.wait_for(lambda: gmail.delivered, what="the carried-through form")[-1]
    assert m.rcpts == [f"relaytest@{NMAP_DOMAIN}"] and m.mail_from == "antispam@[127.0.0.1]"
    for conn in gmail.connections:
        for cmd in conn.commands:
            if cmd.upper().startswith(("MAIL FROM:", "RCPT TO:")):
                addr = re.search(r"<([^>]*)>", cmd).group(1)
                assert not re.search(r'[%!"]', addr) and addr.count("@") <= 1 and \
                    not addr.startswith("@"), f"routing trick went upstream: {cmd}"


# ---- STARTTLS command injection on the LAN side ------------------------------

@pytest.mark.parametrize("injected", [
    b"MAIL FROM:<team@example.com>\r\nRCPT TO:<bob@example.org>\r\n",
    b"QUIT\r\n",
    b"RSET\r\nMAIL FROM:<team@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
    b"Subject: injected\r\n\r\nx\r\n.\r\n",
], ids=["mail-rcpt", "quit", "whole-transaction"])
def test_lan_starttls_plaintext_injection_not_executed(daemon, gmail, pki, injected):
    d = daemon(smtp={"tls_cert": pki.good.cert, "tls_key": pki.good.key})
    c = Lan(d)
    outcome = None
    try:
        text = ehlo(c)
        assert "STARTTLS" in text.upper()
        c.send(b"STARTTLS\r\n" + injected)
        code, text = c.reply()
        assert code == 220, text
        # A reply to an injected command would arrive in plaintext now.
        extra = c.pending(0.5)
        assert extra == b"", f"plaintext after the 220 (injected command answered?): {extra!r}"
        try:
            c.sock = ssl.create_default_context(cafile=pki.ca).wrap_socket(
                c.sock, server_hostname="localhost")
        except (ssl.SSLError, ConnectionError, OSError) as e:
            outcome = f"closed-before-tls({type(e).__name__})"
        if outcome is None:
            outcome = "discarded"
            assert c.cmd("EHLO lan.test")[0] == 250
            code, text = c.cmd(f"RCPT TO:<{RCPT}>")
            assert code == 503, f"plaintext MAIL before TLS was executed: {text}"
            stage, code, text = transact(c, body=b"Subject: after tls\r\n\r\nok\r\n")
            assert code == 250, (stage, code, text)
    finally:
        c.close()
    report(f"lan_starttls_injection[{injected[:12]!r}]", outcome=outcome)
    time.sleep(0.2)
    subjects = [m.data for m in gmail.messages]
    assert all(b"injected" not in s for s in subjects), subjects
    assert len(gmail.messages) <= 1


# ---- a hostile upstream ---------------------------------------------------------

def test_upstream_starttls_response_injection_no_auth(daemon, gmail):
    """Bytes after the upstream's 220 to STARTTLS (a man in the middle
    adding his own EHLO reply or an AUTH success): never executed, never
    followed by AUTH."""
    d = daemon()
    injections = [b"250-injected\r\n250 AUTH PLAIN LOGIN\r\n",
                  b"235 2.7.0 Accepted\r\n",
                  b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354  Go ahead\r\n"]
    codes = []
    for inj in injections:
        gmail.starttls_inject = inj
        stage, code, text = send_one(d)
        codes.append(code)
        assert 400 <= code < 500, (inj, stage, code, text)
    assert gmail.connections, "the proxy never tried the upstream"
    assert_no_upstream_auth(gmail)
    report("upstream_response_injection", replies=codes,
           upstream_connections=len(gmail.connections))


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_upstream_bad_certificates_no_auth(daemon, gmail, pki, mode):
    upstream = {"tls": "implicit", "port": gmail.implicit_port} if mode == "implicit" else {}
    d = daemon(upstream=upstream)
    seen = {}
    for leaf in ("wrong_host", "expired", "self_signed"):
        before = len(gmail.connections)
        gmail.serve_cert(pki.leaf(leaf))
        t0 = time.monotonic()
        stage, code, text = send_one(d)
        seen[leaf] = (code, round(time.monotonic() - t0, 2), len(gmail.connections) - before)
        assert 400 <= code < 500, (leaf, stage, code, text)
        assert len(gmail.connections) > before, f"{leaf}: the proxy did not try the upstream"
    assert gmail.tls_handshakes == 0, "a TLS handshake with a bad certificate completed"
    assert_no_upstream_auth(gmail)
    report(f"upstream_bad_certs[{mode}]", **{k: v for k, v in seen.items()})


def tls11_context_factory(gmail):
    """A server context that speaks TLS 1.0 / 1.1 only. OpenSSL 3 refuses
    those at its default security level 2, so the level is lowered to 0: the
    point is that the *client* must refuse."""
    def make(conn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.load_cert_chain(gmail.cert.cert, gmail.cert.key)
        return ctx
    return make


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_upstream_tls11_only_refused(daemon, gmail, pki, mode):
    gmail._tls_context = tls11_context_factory(gmail)
    # First prove that this server really speaks TLS 1.1 here.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.set_ciphers("DEFAULT:@SECLEVEL=0")
    probe.minimum_version = ssl.TLSVersion.TLSv1_1
    probe.maximum_version = ssl.TLSVersion.TLSv1_1
    probe.load_verify_locations(pki.ca)
    try:
        with socket.create_connection((gmail.host, gmail.implicit_port), timeout=5) as raw:
            with probe.wrap_socket(raw, server_hostname="localhost") as tls:
                version = tls.version()
    except (ssl.SSLError, OSError) as e:
        pytest.skip(f"this host's OpenSSL cannot make a TLS 1.1 server/client pair even "
                    f"at SECLEVEL=0 ({e}); the TLS 1.1 refusal cannot be shown here")
    assert version == "TLSv1.1", version
    gmail.wait_for(lambda: gmail.connections and gmail.connections[-1].closed, timeout=5)
    base_handshakes = gmail.tls_handshakes
    base_conns = len(gmail.connections)

    upstream = {"tls": "implicit", "port": gmail.implicit_port} if mode == "implicit" else {}
    d = daemon(upstream=upstream)
    stage, code, text = send_one(d)
    assert 400 <= code < 500, (stage, code, text)
    assert len(gmail.connections) > base_conns, "the proxy never tried the upstream"
    assert gmail.tls_handshakes == base_handshakes, "the proxy completed a TLS 1.1 handshake"
    assert gmail.auth_commands == 0 and gmail.auth_attempts == []
    assert gmail.messages == []
    report(f"upstream_tls11[{mode}]", reply=code, probe=version,
           tls_failures=gmail.tls_failures)


def test_upstream_without_starttls_or_refusing_it_no_auth(daemon, gmail):
    d = daemon()
    gmail.offer_starttls = False
    stage, code1, text = send_one(d)
    assert 400 <= code1 < 500, (stage, code1, text)
    assert not any(cmd.upper() == "STARTTLS" for conn in gmail.connections
                   for cmd in conn.commands), "STARTTLS sent although not offered"
    gmail.offer_starttls = True
    gmail.script("STARTTLS", "starttls_unavailable", count=None)     # 454 4.7.0
    stage, code2, text = send_one(d)
    assert 400 <= code2 < 500, (stage, code2, text)
    assert any(cmd.upper() == "STARTTLS" for conn in gmail.connections
               for cmd in conn.commands)
    assert_no_upstream_auth(gmail)
    report("upstream_no_starttls_and_454", no_starttls=code1, refused_454=code2)


class HostileUpstream:
    """A TCP server on 127.0.0.1 that misbehaves from its first byte:
       drip        a greeting that never ends, one byte per second
       huge-lines  a 10 MB multiline greeting (10,000 lines of 1 KB)
       huge-line   10 MB without a line end
    It records every byte the proxy sends and how long connections last."""

    def __init__(self, mode, size=10 * MB):
        self.mode = mode
        self.size = size
        self.received = b""
        self.connections = 0
        self.durations = []
        self.sent = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _drain(self, conn):
        try:
            while select.select([conn], [], [], 0)[0]:
                data = conn.recv(65536)
                if not data:
                    return False
                with self._lock:
                    self.received += data
        except OSError:
            return False
        return True

    def _serve(self, conn):
        t0 = time.monotonic()
        sent = 0
        conn.settimeout(30)
        try:
            if self.mode == "drip":
                data = b"220-smtp.gmail.com ESMTP, one byte at a time" + b"." * 1000
                for b in data:
                    if self._stop.is_set() or not self._drain(conn):
                        break
                    conn.sendall(bytes([b]))
                    sent += 1
                    time.sleep(1)
            else:
                if self.mode == "huge-lines":
                    line = b"220-" + b"x" * 1018 + b"\r\n"
                    chunk = line * 64
                else:
                    chunk = b"x" * 65536
                while sent < self.size and not self._stop.is_set():
                    conn.sendall(chunk)
                    sent += len(chunk)
                    self._drain(conn)
                if self.mode == "huge-lines":
                    conn.sendall(b"220 smtp.gmail.com ESMTP\r\n")
                while not self._stop.is_set() and self._drain(conn):
                    time.sleep(0.05)
        except OSError:
            pass
        finally:
            with self._lock:
                self.durations.append(round(time.monotonic() - t0, 1))
                self.sent.append(sent)
            conn.close()


@pytest.fixture
def hostile():
    servers = []

    def make(mode, **kw):
        s = HostileUpstream(mode, **kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


def test_upstream_drip_times_out(daemon, hostile):
    """An upstream that sends one byte per second never goes idle, so only a
    per-step deadline ends it: the client gets 4xx within the upstream
    timeout plus a margin, and no AUTH is sent."""
    srv = hostile("drip")
    timeout = 2
    d = daemon(upstream={"host": "127.0.0.1", "port": srv.port, "timeout": f"{timeout}s"})
    t0 = time.monotonic()
    stage, code, text = send_one(d)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 5
    while srv.connections > len(srv.durations) and time.monotonic() < deadline:
        time.sleep(0.1)
    report("upstream_drip", reply=code, client_waited_s=round(elapsed, 1),
           upstream_connections=srv.connections, connection_lived_s=srv.durations,
           bytes_dripped=srv.sent)
    assert 400 <= code < 500, (stage, code, text)
    assert elapsed < timeout + 4, f"client waited {elapsed:.1f}s for a {timeout}s timeout"
    assert srv.connections >= 1
    assert all(t < timeout + 4 for t in srv.durations), srv.durations
    assert b"AUTH" not in srv.received.upper()


@pytest.mark.parametrize("mode", ["huge-lines", "huge-line"])
def test_upstream_10mb_reply_bounded_memory(daemon, gmail, hostile, mode, bounded_asan):
    srv = hostile(mode)
    d = daemon(upstream={"host": "127.0.0.1", "port": srv.port, "timeout": "3s"})
    assert send_one(d)[1] // 100 == 4          # warm up the relay's pools
    rss0, hwm0 = proc_status(d.pids()["relay"])
    t0 = time.monotonic()
    stage, code, text = send_one(d)
    elapsed = time.monotonic() - t0
    time.sleep(0.3)
    rss1, hwm1 = proc_status(d.pids()["relay"])
    report(f"upstream_10mb[{mode}]", reply=code, seconds=round(elapsed, 1),
           rss_before_kb=rss0, rss_after_kb=rss1, hwm_before_kb=hwm0, hwm_after_kb=hwm1,
           upstream_bytes_sent=srv.sent)
    assert 400 <= code < 500, (stage, code, text)
    assert elapsed < 3 + 4, f"{elapsed:.1f}s"
    assert d.proc.poll() is None, "daemon died"
    assert hwm1 - rss0 < RSS_GROWTH_MAX_KB, f"peak RSS grew by {hwm1 - rss0} kB"
    assert b"AUTH" not in srv.received.upper()
    c = Lan(d)
    try:
        ehlo(c)
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()


def test_upstream_10mb_reply_to_final_dot(daemon, gmail, bounded_asan):
    """The same flood from a verified, authenticated upstream, as its reply
    to the message: refused by the reply parser's bounds, 4xx to the client
    (the outcome is unknown), memory bounded, the daemon alive and able to
    deliver again."""
    d = daemon()
    assert send_one(d)[1] == 250
    rss0, hwm0 = proc_status(d.pids()["relay"])
    huge = "\r\n".join(["250-" + "x" * 1018] * 10240 + ["250 2.0.0 OK"])
    gmail.script("MESSAGE", huge)
    t0 = time.monotonic()
    stage, code, text = send_one(d)
    elapsed = time.monotonic() - t0
    rss1, hwm1 = proc_status(d.pids()["relay"])
    report("upstream_10mb_reply_to_dot", reply=code, seconds=round(elapsed, 1),
           rss_before_kb=rss0, rss_after_kb=rss1, hwm_after_kb=hwm1)
    assert 400 <= code < 500, (stage, code, text[:200])
    assert len(text) < 4096, f"{len(text)} octets of upstream text passed to the client"
    assert hwm1 - rss0 < RSS_GROWTH_MAX_KB, f"peak RSS grew by {hwm1 - rss0} kB"
    assert d.proc.poll() is None
    assert send_one(d)[1] == 250


# ---- resource exhaustion on the LAN side -------------------------------------------

def _send_in_thread(sock, data):
    """sendall from a thread, so that the test can read replies meanwhile."""
    result = {}

    def run():
        try:
            sock.sendall(data)
            result["ok"] = True
        except OSError as e:
            result["error"] = f"{type(e).__name__}"
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def warm_up(d):
    assert send_one(d)[1] == 250


def test_10mb_command_line_without_newline(daemon, gmail, bounded_asan):
    d = daemon()
    warm_up(d)
    rss0, hwm0 = proc_status(d.pids()["smtp"])
    c = Lan(d, timeout=20)
    try:
        ehlo(c)
        t, res = _send_in_thread(c.sock, b"A" * (10 * MB))
        code, text = c.reply()
        assert code == 500 and "5.5.2" in text, text
        t.join(20)
        assert not t.is_alive(), "10 MB could not be sent within 20 s"
        rss1, hwm1 = proc_status(d.pids()["smtp"])
        if "ok" in res:
            try:
                code2 = c.cmd("\r\nNOOP")[0]
                code3 = c.reply()[0] if code2 != 250 else None
            except (EOFError, ConnectionError):
                code2 = code3 = "closed"
        else:
            code2 = code3 = f"closed({res.get('error')})"
    finally:
        c.close()
    report("lan_10mb_line", reply=code, then=(code2, code3), rss_before_kb=rss0,
           rss_after_kb=rss1, hwm_before_kb=hwm0, hwm_after_kb=hwm1)
    assert hwm1 - rss0 < RSS_GROWTH_MAX_KB, f"peak RSS grew by {hwm1 - rss0} kB"
    assert d.proc.poll() is None
    # Either the session went on (the long line skipped, NOOP answered) or
    # it was closed; never anything else.
    assert code2 in (250, 500) or str(code2).startswith("closed"), (code2, code3)
    if code2 == 500:
        assert code3 == 250
    warm_up(d)


def test_10mb_data_line_without_newline(daemon, gmail, bounded_asan):
    d = daemon()
    warm_up(d)
    n_before = len(gmail.messages)
    rss0, hwm0 = proc_status(d.pids()["smtp"])
    c = Lan(d, timeout=20)
    try:
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        t, res = _send_in_thread(c.sock, b"Subject: long\r\n\r\n" + b"B" * (10 * MB) + b"\r\n.\r\n")
        t.join(20)
        assert not t.is_alive()
        code, text = c.reply()
        rss1, hwm1 = proc_status(d.pids()["smtp"])
        assert code == 500 and "5.5.2" in text, text
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()
    report("lan_10mb_data_line", reply=code, rss_before_kb=rss0, rss_after_kb=rss1,
           hwm_before_kb=hwm0, hwm_after_kb=hwm1)
    assert hwm1 - rss0 < RSS_GROWTH_MAX_KB, f"peak RSS grew by {hwm1 - rss0} kB"
    assert len(gmail.messages) == n_before


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}: cannot open the connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def timed_transaction(d):
    t0 = time.monotonic()
    stage, code, text = send_one(d)
    return time.monotonic() - t0, code, text


@pytest.mark.timeout(90)
def test_1000_idle_connections_others_still_served(daemon, gmail, bounded_asan):
    n = 1000
    raise_nofile(n + 512)
    d = daemon(smtp={"max_connections": "2000", "max_connections_per_ip": "2000",
                     "timeout": "60s"})
    warm_up(d)
    rss0, hwm0 = proc_status(d.pids()["smtp"])
    socks = []
    try:
        t0 = time.monotonic()
        for _ in range(n):
            s = socket.create_connection((d.host, d.port), timeout=10)
            socks.append(s)
        # Every one of them is a live session: wait for all greetings.
        greeted = 0
        for s in socks:
            if s.recv(512).startswith(b"220"):
                greeted += 1
        opened = time.monotonic() - t0
        rss1, hwm1 = proc_status(d.pids()["smtp"])
        elapsed, code, text = timed_transaction(d)
        assert code == 250, text
        # One client on top of the 1000 idle ones that also dawdles: still fine.
        elapsed2, code2, _ = timed_transaction(d)
    finally:
        for s in socks:
            s.close()
    per_conn = (rss1 - rss0) / n
    report("idle_1000", greeted=greeted, open_s=round(opened, 1),
           rss_before_kb=rss0, rss_with_1000_kb=rss1, hwm_kb=hwm1,
           kb_per_connection=round(per_conn, 1), served_in_s=round(elapsed, 2),
           served_again_in_s=round(elapsed2, 2))
    assert greeted == n, f"only {greeted} of {n} connections were greeted"
    assert elapsed < SERVE_WITHIN, f"a client took {elapsed:.2f}s with {n} idle connections"
    assert code2 == 250 and elapsed2 < SERVE_WITHIN
    assert per_conn < IDLE_CONN_KB_MAX, f"{per_conn:.1f} kB per idle connection"
    time.sleep(0.5)
    assert d.proc.poll() is None


def test_slow_drip_clients(daemon, gmail, bounded_asan):
    """Clients that send one byte at a time, forever: they hold a session
    each but cost no more than one, and do not slow anybody else down."""
    n, step = 50, 0.25
    d = daemon(smtp={"max_connections_per_ip": "200", "timeout": "3s"})
    warm_up(d)
    rss0, hwm0 = proc_status(d.pids()["smtp"])
    script = b"EHLO drip.lan\r\nMAIL FROM:<team@example.com>\r\n" + b"X" * 2000
    socks = [socket.create_connection((d.host, d.port), timeout=5) for _ in range(n)]
    served = []
    closed_after = {}
    try:
        t0 = time.monotonic()
        pos = 0
        next_probe = t0 + 1.0
        while time.monotonic() - t0 < 6:
            for i, s in enumerate(socks):
                if i in closed_after:
                    continue
                try:
                    s.sendall(script[pos:pos + 1])
                except OSError:
                    closed_after[i] = round(time.monotonic() - t0, 1)
            pos += 1
            if time.monotonic() >= next_probe:
                served.append(timed_transaction(d)[0])
                next_probe += 2.0
            time.sleep(step)
        rss1, hwm1 = proc_status(d.pids()["smtp"])
    finally:
        for s in socks:
            s.close()
    report("slow_drip", clients=n, bytes_each=pos, served_in_s=[round(x, 2) for x in served],
           disconnected=len(closed_after), rss_before_kb=rss0, rss_after_kb=rss1,
           hwm_after_kb=hwm1)
    assert served and max(served) < SERVE_WITHIN, served
    assert hwm1 - rss0 < RSS_GROWTH_MAX_KB, f"peak RSS grew by {hwm1 - rss0} kB"
    assert d.proc.poll() is None


def test_rcpt_flood_452_after_max(daemon, gmail, bounded_asan):
    limit, sent = 100, 1000
    d = daemon(smtp={"max_recipients": str(limit)})
    warm_up(d)
    rss0, hwm0 = proc_status(d.pids()["smtp"])
    c = Lan(d, timeout=20)
    codes = []
    try:
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        flood = b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(sent))
        t, res = _send_in_thread(c.sock, flood)
        while True:
            try:
                code, text = c.reply()
            except (EOFError, ConnectionError):
                break
            codes.append(code)
            if code == 421:
                break
        t.join(10)
        closed = c.closed()
    finally:
        c.close()
    rss1, hwm1 = proc_status(d.pids()["smtp"])
    accepted = codes.count(250)
    over = codes[accepted:]
    report("rcpt_flood", sent=sent, accepted=accepted, then_452=over.count(452),
           then=sorted(set(over)), closed=closed, rss_before_kb=rss0, hwm_after_kb=hwm1)
    assert codes[:limit] == [250] * limit, codes[:limit + 2]
    assert accepted == limit
    assert over and over[0] == 452, over[:3]
    assert set(over) <= {452, 421}, over
    # The 20th refusal ends the session (SPEC: 20 errors -> 421).
    assert over[-1] == 421 and over.count(452) == 20 and closed, over
    assert hwm1 - rss0 < RSS_GROWTH_MAX_KB
    assert len(gmail.messages) == 1, "only the warm-up message may reach the upstream"
