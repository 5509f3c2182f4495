"""test_proxy.py: the SMTP proxy end to end (SPEC sections 4 and 5, issue 3).

Real LAN clients (swaks, Python's smtplib, curl) send through a running
`smtpvault serve` to the fake Gmail upstream (fakegmail.py), which checks
what arrived: the exact bytes plus one Received: header, under the right
account. Every reply code of SPEC section 4 is provoked; the upstream TLS
failures must never let an AUTH byte out; the smuggling sequences must
never make a second upstream message.
"""

import re
import select
import signal
import socket
import subprocess
import time

import pytest

from conftest import DEFAULT_ACCOUNT, DEFAULT_PASSWORD, Account

TIMEOUT = 15
OTHER = "ops@example.com"
OTHER_PASSWORD = "qrstuvwxyzabcdef"
RCPT = "bob@example.org"
BODY = (b"From: Team <team@example.com>\r\n"
        b"To: Bob <bob@example.org>\r\n"
        b"Subject: relay test\r\n"
        b"Message-ID: <t1@example.com>\r\n"
        b"\r\n"
        b"Hello Bob,\r\n"
        b".a line that starts with a dot\r\n"
        b"..and one with two\r\n"
        b".\r\n"
        b"\r\n"
        b"-- \r\nteam\r\n")


# ---- helpers -------------------------------------------------------------

class Lan:
    """A raw SMTP client on the LAN side, for exact bytes and exact replies."""

    def __init__(self, d, source=None, timeout=TIMEOUT):
        self.sock = socket.create_connection(
            (d.host, d.port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """(code, text) of one reply, all lines joined with \\n."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed; partial reply {lines!r}, {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()


def lan_closed(c, timeout=5):
    c.sock.settimeout(timeout)
    try:
        while True:
            data = c.sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
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
    """body as sent in DATA (RFC 5321 4.5.2), ending in CRLF, without the
    final dot line."""
    stuffed = re.sub(rb"(?<=\r\n)\.", b"..", b"\r\n" + body)[2:]
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


def transact(c, mail_from, rcpts, body, mail_params=""):
    """One transaction, step by step. Returns (stage, code, text) of the first
    refusal, or ("DATA-END", code, text) for the reply to the final dot."""
    arg = f"MAIL FROM:<{mail_from}>" + (f" {mail_params}" if mail_params else "")
    code, text = c.cmd(arg)
    if code != 250:
        return "MAIL", code, text
    accepted = 0
    last = None
    for r in rcpts:
        code, text = c.cmd(f"RCPT TO:<{r}>")
        if code == 250:
            accepted += 1
        else:
            last = ("RCPT", code, text)
    if accepted == 0:
        return last
    code, text = c.cmd("DATA")
    if code != 354:
        return "DATA", code, text
    c.send(dot_stuff(body) + b".\r\n")
    code, text = c.reply()
    return "DATA-END", code, text


def send(d, mail_from=DEFAULT_ACCOUNT, rcpts=(RCPT,), body=BODY, **kw):
    c = Lan(d)
    try:
        ehlo(c)
        result = transact(c, mail_from, list(rcpts), body, **kw)
        try:
            c.cmd("QUIT")
        except (EOFError, OSError):
            pass
        return result
    finally:
        c.close()


def split_received(data):
    """Split the upstream message into the proxy's Received: header field
    (with its folded continuation lines) and the rest."""
    assert data.startswith(b"Received:"), f"no Received: header first: {data[:200]!r}"
    i = 0
    while True:
        j = data.index(b"\r\n", i)
        i = j + 2
        if data[i:i + 1] not in (b" ", b"\t"):
            return data[:i], data[i:]


def assert_relayed(gmail, body, account, mail_from, rcpts, hostname="relay.test.lan"):
    """The last upstream message is body plus exactly one Received: header,
    sent under account with the client's envelope unchanged."""
    m = gmail.wait_for(lambda: gmail.delivered, what="a delivered message")[-1]
    assert m.auth_user == account
    assert m.mail_from == mail_from
    assert m.rcpts == list(rcpts)
    received, rest = split_received(m.data)
    assert rest == body, f"upstream body differs:\n{rest!r}\nexpected\n{body!r}"
    assert not rest.startswith(b"Received:")
    assert hostname.encode() in received, received
    assert not m.has_bare_cr_or_lf
    return m


def assert_no_upstream_auth(gmail):
    assert gmail.auth_commands == 0, "an AUTH command reached the upstream"
    assert gmail.auth_attempts == []
    for conn in gmail.connections:
        assert not any(cmd.upper().startswith(("AUTH", "MAIL", "RCPT", "DATA"))
                       for cmd in conn.commands), conn.commands
    assert gmail.messages == []


# ---- real clients --------------------------------------------------------

def test_swaks_relays_exact_bytes(daemon, gmail, tmp_path):
    d = daemon()
    body = BODY.rstrip(b"\r\n")         # swaks appends the final CRLF itself
    msg = tmp_path / "msg.eml"
    msg.write_bytes(body)
    p = subprocess.run(["swaks", "--server", f"{d.host}:{d.port}", "--helo", "swaks.lan",
                        "--from", DEFAULT_ACCOUNT, "--to", RCPT, "--data", str(msg),
                        "--timeout", str(TIMEOUT)],
                       capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert p.returncode == 0, p.stdout + p.stderr
    assert_relayed(gmail, body + b"\r\n", DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])


def test_smtplib_relays_exact_bytes_8bit_two_recipients(daemon, gmail):
    d = daemon()
    body = BODY.replace(b"Hello Bob,", "Grüße, Bob — ça va?".encode())
    s = d.smtp()
    try:
        s.ehlo("smtplib.lan")
        for kw in ("pipelining", "size", "8bitmime", "enhancedstatuscodes"):
            assert s.has_extn(kw), f"EHLO does not advertise {kw.upper()}"
        assert not s.has_extn("auth"), "the proxy must not offer AUTH"
        assert not s.has_extn("starttls"), "no tls_cert configured: no STARTTLS"
        refused = s.sendmail(DEFAULT_ACCOUNT, [RCPT, "carol@example.net"], body,
                             mail_options=["BODY=8BITMIME"])
        assert refused == {}
    finally:
        s.quit()
    m = assert_relayed(gmail, body, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT, "carol@example.net"])
    assert "BODY=8BITMIME" in m.mail_params.upper()


def test_curl_relays_exact_bytes(daemon, gmail, tmp_path):
    d = daemon()
    msg = tmp_path / "msg.eml"
    msg.write_bytes(BODY)
    p = subprocess.run(["curl", "-sS", "--max-time", str(TIMEOUT),
                        f"smtp://{d.host}:{d.port}/curl.lan",
                        "--mail-from", DEFAULT_ACCOUNT, "--mail-rcpt", RCPT,
                        "--upload-file", str(msg)],
                       capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert p.returncode == 0, p.stdout + p.stderr
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])


def test_implicit_tls_upstream(daemon, gmail):
    d = daemon(upstream={"tls": "implicit", "port": gmail.implicit_port})
    assert send(d)[1] == 250
    m = assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])
    conn = gmail.connections[m.conn_id - 1]
    assert conn.listener == "implicit" and conn.tls
    assert conn.sni == "localhost"


def test_starttls_upstream_details(daemon, gmail):
    """EHLO again after TLS, SNI set, TLS 1.2+, no plaintext pipelined after
    STARTTLS, AUTH only over TLS."""
    d = daemon()
    assert send(d)[1] == 250
    conn = gmail.connections[gmail.delivered[0].conn_id - 1]
    assert conn.tls and conn.tls_version in ("TLSv1.2", "TLSv1.3")
    assert conn.sni == "localhost"
    assert conn.pipelined_after_starttls == b""
    upper = [c.upper() for c in conn.commands]
    i = upper.index("STARTTLS")
    assert upper[0].startswith("EHLO ")
    assert upper[i + 1].startswith("EHLO "), "no EHLO after STARTTLS"
    assert all(a.tls for a in gmail.auth_attempts)


# ---- SPEC section 4: every reply --------------------------------------------

def test_untrusted_client_refused_554(daemon, gmail):
    d = daemon()
    c = Lan(d, source="127.0.0.2")
    try:
        code, text = c.reply()
        assert code == 554, text
        assert "5.7.1" in text and "127.0.0.2" in text and "not allowed to relay" in text
        assert lan_closed(c), "untrusted client was not disconnected"
    finally:
        c.close()
    assert gmail.connections == []


def test_size_limit_552(daemon, gmail):
    d = daemon(smtp={"max_message_size": "1K"})
    c = Lan(d)
    try:
        text = ehlo(c)
        assert re.search(r"(?m)^250[ -]SIZE 1024$", text), text
        code, text = c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}> SIZE=2048")
        assert code == 552 and "5.3.4" in text, text
        big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 30
        stage, code, text = transact(c, DEFAULT_ACCOUNT, [RCPT], big)
        assert (stage, code) == ("DATA-END", 552) and "5.3.4" in text, (stage, code, text)
        # The session is still usable, and a small message still goes through.
        small = b"Subject: small\r\n\r\nok\r\n"
        stage, code, text = transact(c, DEFAULT_ACCOUNT, [RCPT], small)
        assert code == 250, text
    finally:
        c.close()
    assert len(gmail.delivered) == 1
    assert gmail.delivered[0].data.endswith(small)


def test_recipient_limit_452(daemon, gmail):
    d = daemon(smtp={"max_recipients": "3"})
    c = Lan(d)
    try:
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        for i in range(3):
            assert c.cmd(f"RCPT TO:<r{i}@example.org>")[0] == 250
        code, text = c.cmd("RCPT TO:<r3@example.org>")
        assert code == 452 and "4.5.3" in text, text
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250
    finally:
        c.close()
    assert gmail.delivered[0].rcpts == ["r0@example.org", "r1@example.org", "r2@example.org"]


def test_long_command_line_500(daemon, gmail):
    d = daemon()
    c = Lan(d, timeout=5)
    try:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<" + "a" * 1100 + "@example.com>")
        assert code == 500 and "5.5.2" in text, text
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()


@pytest.mark.parametrize("line", [
    b"MAIL FROM:<team@example.com>\nRCPT TO:<bob@example.org>",
    b"MAIL FROM:<team@example.com>\rRCPT TO:<bob@example.org>",
    b"NOOP\n",
], ids=["bare-LF", "bare-CR", "bare-LF-at-end"])
def test_bare_cr_lf_in_command_500(daemon, gmail, line):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        code, text = c.cmd(line)
        assert code == 500 and "5.5.2" in text, text
        # Whatever the proxy made of the rest, no transaction was opened by it.
        c.send(b"NOOP\r\n")
        for _ in range(3):
            code, text = c.reply()
            if code == 250:
                break
        assert code == 250
        code, text = c.cmd(f"RCPT TO:<{RCPT}>")
        assert code == 503, f"a transaction was opened by a bare CR/LF command: {text}"
    finally:
        c.close()


@pytest.mark.parametrize("setup,line", [
    ([], "EHLO"),
    ([], "MAIL FROM:<team@example.com"),
    ([], "MAIL TO:<team@example.com>"),
    (["MAIL FROM:<team@example.com>"], "RCPT TO:<bob@example.org"),
    (["MAIL FROM:<team@example.com>"], "RCPT TO:bob"),
], ids=["ehlo-no-arg", "mail-unclosed", "mail-to", "rcpt-unclosed", "rcpt-no-brackets"])
def test_syntax_error_501(daemon, gmail, setup, line):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        for s in setup:
            assert c.cmd(s)[0] == 250
        code, text = c.cmd(line)
        assert code == 501 and "5.5.4" in text, text
    finally:
        c.close()


@pytest.mark.parametrize("setup,line", [
    ([], "RCPT TO:<bob@example.org>"),
    ([], "DATA"),
    (["MAIL FROM:<team@example.com>"], "DATA"),
    (["MAIL FROM:<team@example.com>"], "MAIL FROM:<team@example.com>"),
], ids=["rcpt-before-mail", "data-before-mail", "data-before-rcpt", "nested-mail"])
def test_bad_sequence_503(daemon, gmail, setup, line):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        for s in setup:
            assert c.cmd(s)[0] == 250
        code, text = c.cmd(line)
        assert code == 503 and "5.5.1" in text, text
    finally:
        c.close()


def test_too_many_errors_421(daemon, gmail):
    d = daemon()
    c = Lan(d)
    codes = []
    try:
        ehlo(c)
        bad = ["XYZZY", "RCPT TO:<bob@example.org>", "MAIL FROM:<x"]
        for i in range(25):
            code, text = c.cmd(bad[i % len(bad)])
            codes.append(code)
            if code == 421:
                break
            # A 421 may follow the 20th error's reply unasked: read it before
            # writing again, or a reset could swallow it.
            if code != 421 and (c.buf or select.select([c.sock], [], [], 0.1)[0]):
                try:
                    code, text = c.reply()
                except EOFError:
                    break
                codes.append(code)
                if code == 421:
                    break
        assert code == 421 and "4.7.0" in text, codes
        assert len(codes) in (20, 21), f"421 after {len(codes) - 1} errors: {codes}"
        assert all(500 <= x < 600 for x in codes[:-1]), codes
        assert lan_closed(c)
    finally:
        c.close()


def test_idle_timeout_421(daemon, gmail):
    d = daemon(smtp={"timeout": "2s"})
    c = Lan(d)
    try:
        ehlo(c)
        t0 = time.monotonic()
        code, text = c.reply()
        elapsed = time.monotonic() - t0
        assert code == 421 and "4.4.2" in text, text
        assert 1.5 <= elapsed <= 6, elapsed
        assert lan_closed(c)
    finally:
        c.close()


def test_no_sending_account_550(daemon, gmail):
    d = daemon()        # no default_account, no [client] account
    sender = "stranger@elsewhere.example"
    stage, code, text = send(d, mail_from=sender)
    assert (stage, code) == ("MAIL", 550), (stage, code, text)
    assert "5.7.1" in text and f"no sending account for <{sender}>" in text
    assert gmail.messages == []


def test_senders_list_550(daemon, gmail):
    d = daemon(accounts=[DEFAULT_ACCOUNT],
               smtp={"default_account": DEFAULT_ACCOUNT},
               extra='[client "app"]\nnetworks = 127.0.0.1/32\n'
                     'senders = team@example.com, *@ops.example.com\n')
    stage, code, text = send(d, mail_from="mallory@example.com")
    assert (stage, code) == ("MAIL", 550) and "5.7.1" in text, (stage, code, text)
    assert send(d, mail_from="alerts@ops.example.com")[1] == 250
    assert send(d, mail_from=DEFAULT_ACCOUNT)[1] == 250
    assert [m.mail_from for m in gmail.delivered] == ["alerts@ops.example.com", DEFAULT_ACCOUNT]


def test_rate_limit_450(daemon, gmail):
    d = daemon(smtp={"default_account": DEFAULT_ACCOUNT},
               extra='[client "app"]\nnetworks = 127.0.0.1/32\nrate_limit = 2/hour\n')
    assert send(d)[1] == 250
    assert send(d)[1] == 250
    stage, code, text = send(d)
    assert code == 450 and "4.7.1" in text, (stage, code, text)
    assert len(gmail.delivered) == 2


def test_daily_limit_451_direct(daemon, gmail):
    d = daemon(accounts=[Account(DEFAULT_ACCOUNT, args=["--daily-limit", "2"])])
    assert send(d)[1] == 250
    assert send(d)[1] == 250
    stage, code, text = send(d)
    assert code == 451 and "4.7.1" in text, (stage, code, text)
    assert len(gmail.delivered) == 2


def test_connection_limit_per_ip(daemon, gmail):
    d = daemon(smtp={"max_connections_per_ip": "2"})
    time.sleep(0.3)     # let the start-up probe's session end
    held = [Lan(d), Lan(d)]
    try:
        for c in held:
            assert c.reply()[0] == 220
        c3 = Lan(d)
        try:
            code, text = c3.reply()
            assert code == 421, text
            assert lan_closed(c3)
        finally:
            c3.close()
    finally:
        for c in held:
            c.close()
    # A slot frees up when a client leaves.
    time.sleep(0.5)
    assert send(d)[1] == 250


def test_max_connections(daemon, gmail):
    d = daemon(smtp={"max_connections": "2"})
    time.sleep(0.3)     # let the start-up probe's session end
    held = [Lan(d), Lan(d)]
    try:
        for c in held:
            assert c.reply()[0] == 220
        c3 = Lan(d)
        try:
            code, text = c3.reply()
            assert code == 421, text
        finally:
            c3.close()
    finally:
        for c in held:
            c.close()


# ---- routing ---------------------------------------------------------------

def two_accounts():
    return [Account(DEFAULT_ACCOUNT, aliases=["sales@example.com", "info@example.net"]),
            Account(OTHER, password=OTHER_PASSWORD)]


def test_routing_alias(daemon, gmail):
    d = daemon(accounts=two_accounts())
    assert send(d, mail_from="sales@example.com")[1] == 250
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, "sales@example.com", [RCPT])
    assert send(d, mail_from=OTHER)[1] == 250
    assert_relayed(gmail, BODY, OTHER, OTHER, [RCPT])


def test_routing_client_account(daemon, gmail):
    d = daemon(accounts=two_accounts(), smtp={"default_account": DEFAULT_ACCOUNT},
               extra=f'[client "app"]\nnetworks = 127.0.0.1/32\naccount = {OTHER}\n')
    assert send(d, mail_from="noreply@app.example.org")[1] == 250
    assert_relayed(gmail, BODY, OTHER, "noreply@app.example.org", [RCPT])
    # An account's own address still wins over the client's default.
    assert send(d, mail_from="info@example.net")[1] == 250
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, "info@example.net", [RCPT])


def test_routing_client_accounts_restriction(daemon, gmail):
    d = daemon(accounts=two_accounts(),
               extra=f'[client "app"]\nnetworks = 127.0.0.1/32\naccount = {OTHER}\n'
                     f'accounts = {OTHER}\n')
    # team@ is an account, but not one this client may use: its own account.
    assert send(d, mail_from=DEFAULT_ACCOUNT)[1] == 250
    assert_relayed(gmail, BODY, OTHER, DEFAULT_ACCOUNT, [RCPT])


def test_routing_default_account(daemon, gmail):
    d = daemon(accounts=two_accounts(), smtp={"default_account": OTHER})
    assert send(d, mail_from="someone@example.org")[1] == 250
    assert_relayed(gmail, BODY, OTHER, "someone@example.org", [RCPT])
    assert send(d, mail_from="sales@example.com")[1] == 250
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, "sales@example.com", [RCPT])
    assert send(d, mail_from="")[1] == 250     # the null sender: default account
    assert_relayed(gmail, BODY, OTHER, "", [RCPT])


# ---- upstream TLS: never an AUTH byte without verified TLS ------------------

@pytest.mark.parametrize("leaf", ["wrong_host", "self_signed", "expired"])
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_bad_upstream_certificate_no_auth(daemon, gmail, pki, leaf, mode):
    upstream = {"tls": "implicit", "port": gmail.implicit_port} if mode == "implicit" else {}
    d = daemon(upstream=upstream)
    gmail.serve_cert(pki.leaf(leaf))
    stage, code, text = send(d)
    assert 400 <= code < 500, (stage, code, text)
    assert gmail.connections, "the proxy never tried the upstream"
    assert gmail.tls_handshakes == 0
    assert_no_upstream_auth(gmail)


def test_starttls_not_offered_no_auth(daemon, gmail):
    d = daemon()
    gmail.offer_starttls = False
    stage, code, text = send(d)
    assert 400 <= code < 500, (stage, code, text)
    assert gmail.connections, "the proxy never tried the upstream"
    assert not any(c.upper() == "STARTTLS" for conn in gmail.connections for c in conn.commands)
    assert_no_upstream_auth(gmail)


def test_starttls_refused_no_auth(daemon, gmail):
    d = daemon()
    gmail.script("STARTTLS", "starttls_unavailable", count=None)
    stage, code, text = send(d)
    assert 400 <= code < 500, (stage, code, text)
    assert gmail.connections
    assert_no_upstream_auth(gmail)


def test_starttls_reply_with_injected_bytes_no_auth(daemon, gmail):
    d = daemon()
    gmail.starttls_inject = b"250-injected\r\n250 AUTH PLAIN\r\n"
    stage, code, text = send(d)
    assert 400 <= code < 500, (stage, code, text)
    assert gmail.connections
    assert_no_upstream_auth(gmail)


# ---- credentials ---------------------------------------------------------------

def test_wrong_app_password_451_and_flagged(daemon, gmail):
    d = daemon(accounts=[Account(DEFAULT_ACCOUNT, upstream_password="zzzzzzzzzzzzzzzz")])
    stage, code, text = send(d)
    assert code == 451 and "4.7.0" in text, (stage, code, text)
    assert "Username and Password not accepted" in text, "Google's reason not passed on"
    assert gmail.auth_attempts and not any(a.success for a in gmail.auth_attempts)
    assert gmail.delivered == []
    d.wait_log(r"(?im)^.*(team@example\.com.*(auth|credential|login|password).*"
               r"(fail|refus|reject|535)|(auth|credential|login|password).*"
               r"(fail|refus|reject|535).*team@example\.com).*$")


def test_auth_login_when_plain_not_offered(daemon, gmail):
    d = daemon()
    gmail.auth_mechanisms = "LOGIN XOAUTH2"
    assert send(d)[1] == 250
    assert [a.mechanism for a in gmail.successful_auths] == ["LOGIN"]


def test_rotation_by_cli_while_running(daemon, gmail):
    new = "ponmlkjihgfedcba"
    d = daemon()
    assert send(d)[1] == 250
    assert gmail.successful_auths[-1].password == DEFAULT_PASSWORD
    # Google now knows only the new App Password.
    gmail.passwords[DEFAULT_ACCOUNT] = new
    rc, out, err = d.cli("account", "rotate", DEFAULT_ACCOUNT, "--no-verify", input=new + "\n")
    assert rc == 0, err
    time.sleep(3)       # SPEC: picked up within 2 seconds
    n_msgs = len(gmail.messages)
    stage, code, text = send(d)
    assert code == 250, (stage, code, text)
    m = gmail.messages[n_msgs]
    auths = [a for a in gmail.auth_attempts if a.conn_id == m.conn_id and a.success]
    assert auths and auths[-1].password == new, "the message after the rotation used the old credential"


def test_session_reuse(daemon, gmail):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        for i in range(10):
            body = b"Subject: burst %d\r\n\r\nmessage %d\r\n" % (i, i)
            assert transact(c, DEFAULT_ACCOUNT, [RCPT], body)[1] == 250
        c.cmd("QUIT")
    finally:
        c.close()
    for i in range(10, 20):
        body = b"Subject: burst %d\r\n\r\nmessage %d\r\n" % (i, i)
        assert send(d, body=body)[1] == 250
    assert len(gmail.delivered) == 20
    assert len(gmail.connections) <= 3, f"{len(gmail.connections)} upstream connections for 20 messages"
    assert len(gmail.auth_attempts) <= 3, f"{len(gmail.auth_attempts)} AUTHs for 20 messages"
    assert gmail.tls_handshakes <= 3


# ---- CHUNKING (RFC 3030) upstream -------------------------------------------------

def upstream_commands(gmail, m):
    return [c.split(" ", 1)[0].upper() for c in gmail.connections[m.conn_id - 1].commands]


def test_upstream_chunking_bdat(daemon, gmail):
    """Gmail offers CHUNKING: the message goes as one BDAT LAST chunk of its
    bytes as they are (no dot-stuffing), and arrives exactly as with DATA."""
    d = daemon()
    assert send(d)[1] == 250
    m = assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])
    cmds = gmail.connections[m.conn_id - 1].commands
    bdat = [c for c in cmds if c.upper().startswith("BDAT")]
    assert bdat == [f"BDAT {len(m.data)} LAST"], cmds
    assert "DATA" not in upstream_commands(gmail, m)
    assert m.raw == m.data


def test_upstream_chunking_large_message(daemon, gmail):
    """A message far larger than the client's output buffer streams out in
    the one BDAT chunk while the envelope's replies come in."""
    d = daemon()
    body = b"Subject: big\r\n\r\n" + b"".join(
        b"%s line %07d of a large message\r\n" % (b"." if i % 7 == 0 else b"", i)
        for i in range(100000))
    assert len(body) > 3 * 1024 * 1024
    assert send(d, body=body)[1] == 250
    m = assert_relayed(gmail, body, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])
    assert upstream_commands(gmail, m).count("BDAT") == 1


def test_upstream_without_chunking_uses_data(daemon, gmail):
    """An upstream that does not offer CHUNKING gets DATA, dot-stuffed."""
    gmail.offer_chunking = False
    d = daemon()
    assert send(d)[1] == 250
    m = assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])
    cmds = upstream_commands(gmail, m)
    assert "DATA" in cmds and "BDAT" not in cmds, cmds
    assert m.raw == dot_stuff(m.data)


def test_upstream_chunking_refused_recipient_sends_nothing(daemon, gmail):
    """Two recipients, the first refused: BDAT waits for the recipients'
    replies, so nothing is sent and the refusal is the message's reply."""
    d = daemon()
    gmail.script("RCPT", "too_many_rcpts", count=1)
    stage, code, text = send(d, rcpts=(RCPT, "carol@example.net"))
    assert code == 452 and "too many recipients" in text, (stage, code, text)
    assert gmail.messages == []
    assert not any(c.upper().startswith("BDAT") for conn in gmail.connections
                   for c in conn.commands)
    # The session stays usable, and the next message goes in one BDAT.
    assert send(d, rcpts=(RCPT, "carol@example.net"))[1] == 250
    m = assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT, "carol@example.net"])
    assert upstream_commands(gmail, m).count("BDAT") == 1


def test_upstream_chunking_one_recipient_refused(daemon, gmail):
    """One recipient, refused: the pipelined BDAT finds nobody to deliver to;
    the client gets the recipient's refusal."""
    d = daemon()
    gmail.script("RCPT", "bad_address", count=1)
    stage, code, text = send(d)
    assert code == 553 and "5.1.3" in text, (stage, code, text)
    assert gmail.delivered == []
    assert send(d)[1] == 250


# ---- smuggling -----------------------------------------------------------------

SMUGGLED = (b"MAIL FROM:<evil@example.com>\r\n"
            b"RCPT TO:<victim@example.org>\r\n"
            b"DATA\r\n"
            b"From: evil@example.com\r\nSubject: smuggled\r\n\r\nevil\r\n")


@pytest.mark.parametrize("seq", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"],
                         ids=["LF.LF", "LF.CRLF", "CR.CR", "CRLF.LF", "CRLF.CR"])
def test_smuggling_never_makes_a_second_message(daemon, gmail, seq):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"From: team@example.com\r\nSubject: first\r\n\r\nfirst" + seq + SMUGGLED + b".\r\n")
        code, text = c.reply()
        assert code == 250 or 500 <= code < 600, text
        # Exactly one reply for the whole DATA: the next one is NOOP's.
        code, text = c.cmd("NOOP")
        assert code == 250, f"extra reply after DATA (smuggled command answered?): {text}"
    finally:
        c.close()
    time.sleep(0.3)
    assert len(gmail.messages) <= 1
    for m in gmail.messages:
        assert m.rcpts == [RCPT] and m.mail_from == DEFAULT_ACCOUNT
        assert not m.has_bare_cr_or_lf, m.data
    for conn in gmail.connections:
        assert not any("evil@example.com" in cmd or "victim@example.org" in cmd
                       for cmd in conn.commands), conn.commands
        assert conn.bare_lf_commands == 0


def test_bare_lf_in_body_never_reaches_upstream(daemon, gmail):
    d = daemon()
    body = b"Subject: lf\r\n\r\nunix\nline\rmac\r\n"
    stage, code, text = send(d, body=body)
    assert code == 250 or 500 <= code < 600, text
    for m in gmail.messages:
        assert not m.has_bare_cr_or_lf, m.data


# ---- upstream replies in direct mode --------------------------------------------

@pytest.mark.parametrize("command,key,code,phrase", [
    ("MESSAGE", "daily_limit", 550, "Daily user sending limit exceeded"),
    ("MESSAGE", "too_big", 552, "Your message exceeded Google's message size limits"),
    ("MESSAGE", "temp_rejected", 451, "Mail server temporarily rejected message"),
    ("MESSAGE", "malformed", 554, "Mail message is malformed"),
    ("RCPT", "too_many_rcpts", 452, "Your message has too many recipients"),
    ("MAIL", "try_again", 421, "Try again later, closing connection"),
])
def test_upstream_reply_class_and_text_kept(daemon, gmail, command, key, code, phrase):
    d = daemon()
    gmail.script(command, key, count=None)
    stage, got, text = send(d)
    assert got // 100 == code // 100, (stage, got, text)
    if code != 421:
        assert got == code, (stage, got, text)
    assert phrase in text, f"Google's text missing from the client's reply: {text!r}"
    assert gmail.delivered == []


def test_upstream_drop_in_data_451(daemon, gmail):
    d = daemon()
    gmail.drop_in_data = True
    stage, code, text = send(d)
    assert code == 451 and re.search(r"\b4\.4\.\d+\b", text), (stage, code, text)


def test_upstream_timeout_451(daemon, gmail):
    d = daemon(upstream={"timeout": "1s"})
    gmail.delay = 5
    t0 = time.monotonic()
    stage, code, text = send(d)
    assert code == 451 and re.search(r"\b4\.4\.\d+\b", text), (stage, code, text)
    assert time.monotonic() - t0 < 12


def test_sigterm_finishes_in_flight_transaction(daemon, gmail):
    """SIGTERM while a message waits for the upstream: it is delivered, the
    client gets its 250, and the daemon exits 0."""
    d = daemon()
    gmail.script("MESSAGE", "message_ok", delay=1.5)
    c = Lan(d)
    try:
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(dot_stuff(BODY) + b".\r\n")
        time.sleep(0.5)
        d.proc.send_signal(signal.SIGTERM)
        code, text = c.reply()
        assert code == 250, text
    finally:
        c.close()
    assert d.proc.wait(10) == 0
    assert len(gmail.delivered) == 1


# ---- the rest of the front end ----------------------------------------------

def test_simple_commands(daemon, gmail):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("VRFY bob@example.org")[0] == 252
        assert c.cmd("HELP")[0] in (211, 214)
        assert c.cmd(f"MAIL FROM:<{DEFAULT_ACCOUNT}>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 503, "RSET did not end the transaction"
        assert c.cmd("QUIT")[0] == 221
        assert lan_closed(c)
    finally:
        c.close()


def test_pipelined_transaction(daemon, gmail):
    d = daemon()
    c = Lan(d)
    try:
        ehlo(c)
        c.send(f"MAIL FROM:<{DEFAULT_ACCOUNT}>\r\nRCPT TO:<{RCPT}>\r\n"
               f"RCPT TO:<carol@example.net>\r\nDATA\r\n".encode())
        assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
        c.send(dot_stuff(BODY) + b".\r\nQUIT\r\n")
        assert c.reply()[0] == 250
        assert c.reply()[0] == 221
    finally:
        c.close()
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT, "carol@example.net"])


def test_lan_starttls(daemon, gmail, pki):
    import smtplib
    import ssl
    d = daemon(smtp={"tls_cert": pki.good.cert, "tls_key": pki.good.key})
    s = d.smtp()
    try:
        s.ehlo("lan.test")
        assert s.has_extn("starttls")
        s.starttls(context=ssl.create_default_context(cafile=pki.ca))
        s.ehlo("lan.test")
        assert s.sendmail(DEFAULT_ACCOUNT, [RCPT], BODY) == {}
    finally:
        s.quit()
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT, [RCPT])
    assert isinstance(s, smtplib.SMTP)


def test_lan_starttls_discards_pipelined_plaintext(daemon, gmail, pki):
    import ssl
    d = daemon(smtp={"tls_cert": pki.good.cert, "tls_key": pki.good.key})
    c = Lan(d)
    try:
        ehlo(c)
        c.send(f"STARTTLS\r\nMAIL FROM:<{DEFAULT_ACCOUNT}>\r\n".encode())
        code, text = c.reply()
        assert code == 220, text
        assert c.buf == b"", f"more than the STARTTLS reply: {c.buf!r}"
        c.sock = ssl.create_default_context(cafile=pki.ca).wrap_socket(
            c.sock, server_hostname="localhost")
        assert c.cmd("EHLO lan.test")[0] == 250
        code, text = c.cmd(f"RCPT TO:<{RCPT}>")
        assert code == 503, f"plaintext MAIL pipelined before TLS was executed: {text}"
    finally:
        c.close()


def test_sighup_reloads_config(daemon, gmail):
    d = daemon()
    sender = "someone@example.org"
    assert send(d, mail_from=sender)[1] == 550      # no default_account yet
    d.write_config(smtp={"default_account": DEFAULT_ACCOUNT})
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        result = send(d, mail_from=sender)
        if result[1] == 250 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result[1] == 250, result
    assert_relayed(gmail, BODY, DEFAULT_ACCOUNT, sender, [RCPT])
    assert d.proc.poll() is None, "SIGHUP stopped the daemon"
