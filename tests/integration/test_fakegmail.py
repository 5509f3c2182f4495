"""test_fakegmail.py: the fake Gmail upstream itself, driven by Python's
smtplib and a raw socket, so that the proxy tests can trust what it records.
"""

import base64
import smtplib
import socket
import ssl
import time

import pytest

import fakegmail

USER = "alice@example.com"
PASSWORD = "abcdefghijklmnop"
TIMEOUT = 10


def client_ctx(pki):
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def starttls_client(gmail, pki):
    s = smtplib.SMTP("localhost", gmail.starttls_port, timeout=TIMEOUT)
    s.ehlo("client.test")
    s.starttls(context=client_ctx(pki))
    s.ehlo("client.test")
    return s


@pytest.fixture
def g(gmail):
    gmail.passwords[USER] = PASSWORD
    return gmail


class RawClient:
    """A line-level SMTP client on a socket (TLS optional), for exact bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("connection closed; got " + repr(b"\r\n".join(lines)))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), b"\r\n".join(lines).decode()

    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()


def raw_tls_session(g, pki):
    """Connect to the STARTTLS port, do STARTTLS + EHLO + AUTH PLAIN."""
    sock = socket.create_connection(("127.0.0.1", g.starttls_port), timeout=TIMEOUT)
    c = RawClient(sock)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO raw.test")[0] == 250
    assert c.cmd("STARTTLS")[0] == 220
    assert c.buf == b""
    c.sock = client_ctx(pki).wrap_socket(sock, server_hostname="localhost")
    assert c.cmd("EHLO raw.test")[0] == 250
    token = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()).decode()
    assert c.cmd("AUTH PLAIN " + token) == (235, "235 2.7.0 Accepted")
    return c


def test_greeting_and_ehlo_before_and_after_tls(g, pki):
    s = smtplib.SMTP("localhost", g.starttls_port, timeout=TIMEOUT)
    try:
        code, msg = s.ehlo("client.test")
        assert code == 250
        text = msg.decode()
        assert text.startswith("smtp.gmail.com at your service, [127.0.0.1]")
        for kw in ("size", "8bitmime", "starttls", "enhancedstatuscodes", "pipelining",
                   "chunking", "smtputf8"):
            assert s.has_extn(kw), kw
        assert s.esmtp_features["size"] == "35882577"
        assert not s.has_extn("auth")
        s.starttls(context=client_ctx(pki))
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        assert s.esmtp_features["auth"].split() == \
            "LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH".split()
    finally:
        s.quit()
    conn = g.connections[0]
    assert conn.tls and conn.tls_version in ("TLSv1.2", "TLSv1.3")
    assert conn.sni == "localhost"
    assert g.tls_handshakes == 1
    assert [c.upper() for c in conn.commands[:2]] == ["EHLO CLIENT.TEST", "STARTTLS"]


def test_greeting_text(g):
    with socket.create_connection(("127.0.0.1", g.starttls_port), timeout=TIMEOUT) as sock:
        c = RawClient(sock)
        code, text = c.reply()
        assert code == 220
        assert text.startswith("220 smtp.gmail.com ESMTP ") and text.endswith(" - gsmtp")
        assert g.connections[0].sid in text


def test_starttls_auth_plain_and_message_recorded(g, pki):
    body = b"Subject: hi\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\nlast\r\n"
    s = starttls_client(g, pki)
    try:
        s.login(USER, PASSWORD)  # smtplib prefers CRAM-MD5, then PLAIN
        refused = s.sendmail("alice@example.com", ["bob@example.org", "carol@example.net"], body)
        assert refused == {}
    finally:
        s.quit()
    assert [a.mechanism for a in g.auth_attempts] == ["PLAIN"]
    assert g.auth_attempts[0].success and g.auth_attempts[0].user == USER
    assert g.auth_attempts[0].tls
    (m,) = g.messages
    assert m.accepted and m.auth_user == USER
    assert m.mail_from == "alice@example.com"
    assert m.rcpts == ["bob@example.org", "carol@example.net"]
    assert m.data == body
    assert m.raw == body.replace(b"\r\n.", b"\r\n..")
    assert not m.has_bare_cr_or_lf
    assert m.reply.startswith("250 2.0.0 OK  ") and m.reply.endswith(" - gsmtp")


def test_implicit_tls_auth_login(g, pki):
    g.auth_mechanisms = "LOGIN"
    s = smtplib.SMTP_SSL("localhost", g.implicit_port, timeout=TIMEOUT, context=client_ctx(pki))
    try:
        s.ehlo("client.test")
        assert s.esmtp_features["auth"].strip() == "LOGIN"
        s.login(USER, PASSWORD)
        s.sendmail(USER, ["bob@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    finally:
        s.quit()
    assert g.connections[0].listener == "implicit"
    assert g.connections[0].tls
    assert [(a.mechanism, a.success) for a in g.auth_attempts] == [("LOGIN", True)]
    assert g.delivered[0].data == b"Subject: x\r\n\r\nbody\r\n"


def test_auth_login_and_plain_refused_with_google_text(g, pki):
    for mech in ("LOGIN", "PLAIN"):
        g.auth_mechanisms = mech
        s = starttls_client(g, pki)
        try:
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                s.login(USER, "wrongwrongwrongw")
            assert e.value.smtp_code == 535
            text = e.value.smtp_error.decode()
            assert text.startswith("5.7.8 Username and Password not accepted.")
            assert "https://support.google.com/mail/?p=BadCredentials" in text
        finally:
            s.close()
    assert [(a.mechanism, a.success) for a in g.auth_attempts] == [("LOGIN", False), ("PLAIN", False)]
    assert g.auth_commands == 2


def test_mail_before_starttls_and_before_auth(g, pki):
    s = smtplib.SMTP("localhost", g.starttls_port, timeout=TIMEOUT)
    try:
        s.ehlo("client.test")
        code, msg = s.mail("alice@example.com")
        assert code == 530 and msg.startswith(b"5.7.0 Must issue a STARTTLS command first.")
        code, msg = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a\0b").decode())
        assert code == 530
        s.starttls(context=client_ctx(pki))
        s.ehlo("client.test")
        code, msg = s.mail("alice@example.com")
        assert code == 530 and b"5.7.0 Authentication Required" in msg
        assert b"WantAuthError" in msg
    finally:
        s.close()
    assert g.auth_commands == 1
    assert g.auth_attempts == []  # refused before any credential was read
    assert g.messages == []


def test_exact_bytes_bare_lf_does_not_end_data(g, pki):
    """Only CRLF.CRLF ends DATA; bare LF / CR stay in the recorded bytes."""
    c = raw_tls_session(g, pki)
    assert c.cmd("MAIL FROM:<alice@example.com>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.org>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    body = b"a\n.\nb\n.\r\nc\r.\rd\r\n..e\r\n"
    c.send(body + b".\r\n")
    code, text = c.reply()
    assert code == 250
    (m,) = g.messages
    assert m.raw == body
    assert m.data == b"a\n.\nb\n.\r\nc\r.\rd\r\n.e\r\n"
    assert m.has_bare_cr_or_lf
    assert c.cmd("QUIT")[0] == 221


def test_pipelined_transactions_on_one_connection(g, pki):
    c = raw_tls_session(g, pki)
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(b"one\r\n.\r\nRSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(5)] == [250, 250, 250, 250, 354]
    c.send(b"two\r\n.\r\n")
    assert c.reply()[0] == 250
    assert [m.data for m in g.messages] == [b"one\r\n", b"two\r\n"]
    assert {m.conn_id for m in g.messages} == {1}
    assert len(g.connections) == 1 and g.auth_commands == 1


def test_bdat(g, pki):
    c = raw_tls_session(g, pki)
    assert c.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.org>")[0] == 250
    c.send(b"BDAT 5\r\nhello")
    assert c.reply()[0] == 250
    c.send(b"BDAT 3 LAST\r\n\r\n.")
    assert c.reply()[0] == 250
    assert g.messages[0].data == b"hello\r\n."


def test_bdat_pipelined_with_the_envelope(g, pki):
    """MAIL, RCPT and BDAT LAST with its bytes in one write: three replies,
    in order; with the recipient refused, BDAT's bytes are still read."""
    c = raw_tls_session(g, pki)
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nBDAT 4 LAST\r\n.x\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    assert g.messages[0].data == b".x\r\n" and g.messages[0].raw == b".x\r\n"
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<nobody>\r\nBDAT 3 LAST\r\nyz\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 553, 503]
    assert c.cmd("NOOP")[0] == 250
    assert len(g.messages) == 1


def test_knob_no_chunking_and_drop_in_bdat(g, pki):
    g.offer_chunking = False
    s = starttls_client(g, pki)
    assert not s.has_extn("chunking") and s.has_extn("pipelining")
    s.close()
    g.offer_chunking = True
    g.drop_in_data = 64
    c = raw_tls_session(g, pki)
    assert c.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.org>")[0] == 250
    c.send(b"BDAT 1000 LAST\r\n" + b"z" * 1000)
    with pytest.raises((EOFError, OSError)):
        c.reply()
    g.wait_for(lambda: g.messages, what="the partial message")
    assert not g.messages[0].complete and not g.messages[0].accepted


def test_starttls_pipelined_plaintext_is_recorded_and_dropped(g, pki):
    sock = socket.create_connection(("127.0.0.1", g.starttls_port), timeout=TIMEOUT)
    c = RawClient(sock)
    c.reply()
    c.cmd("EHLO raw.test")
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
    assert c.reply()[0] == 220
    c.sock = client_ctx(pki).wrap_socket(sock, server_hostname="localhost")
    assert c.cmd("NOOP")[0] == 250
    conn = g.connections[0]
    assert conn.pipelined_after_starttls == b"MAIL FROM:<evil@example.com>\r\n"
    assert "MAIL FROM:<evil@example.com>" not in conn.commands
    c.cmd("QUIT")


def test_knob_starttls_inject(g, pki):
    g.starttls_inject = b"250 injected\r\n"
    with socket.create_connection(("127.0.0.1", g.starttls_port), timeout=TIMEOUT) as sock:
        c = RawClient(sock)
        c.reply()
        c.cmd("EHLO raw.test")
        assert c.cmd("STARTTLS")[0] == 220
        while len(c.buf) < len(b"250 injected\r\n"):
            c.buf += sock.recv(100)
        assert c.buf == b"250 injected\r\n"


@pytest.mark.parametrize("leaf,reason", [
    ("wrong_host", "Hostname mismatch"),
    ("self_signed", "self-signed certificate"),
    ("expired", "certificate has expired"),
])
@pytest.mark.parametrize("port", ["starttls", "implicit"])
def test_knob_bad_certificates_fail_verification(g, pki, leaf, reason, port):
    g.serve_cert(pki.leaf(leaf))
    with pytest.raises(ssl.SSLCertVerificationError) as e:
        if port == "starttls":
            starttls_client(g, pki)
        else:
            smtplib.SMTP_SSL("localhost", g.implicit_port, timeout=TIMEOUT,
                             context=client_ctx(pki))
    assert reason in str(e.value)
    g.wait_for(lambda: g.tls_failures == 1, what="the server to see the failed handshake")
    assert g.tls_handshakes == 0
    assert g.auth_commands == 0


def test_knob_421_on_connect(g):
    g.script("CONNECT", "try_again")
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("localhost", g.starttls_port, timeout=TIMEOUT)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error.startswith(b"4.7.0 Try again later, closing connection.")


def test_knob_no_starttls(g):
    g.offer_starttls = False
    s = smtplib.SMTP("localhost", g.starttls_port, timeout=TIMEOUT)
    try:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        assert s.docmd("STARTTLS")[0] == 502
        assert s.mail("a@example.com")[0] == 530
    finally:
        s.close()


def test_knob_starttls_454(g, pki):
    g.script("STARTTLS", "starttls_unavailable", count=None)
    s = smtplib.SMTP("localhost", g.starttls_port, timeout=TIMEOUT)
    try:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPResponseException) as e:
            s.starttls(context=client_ctx(pki))
        assert e.value.smtp_code == 454
    finally:
        s.close()
    assert g.tls_handshakes == 0


def test_knob_scripted_auth_for_one_user(g, pki):
    g.passwords["bob@example.com"] = "bbbbbbbbbbbbbbbb"
    rule = g.fail_auth(USER, reply="app_password_required")
    g.auth_mechanisms = "PLAIN"  # smtplib would retry a refused login with LOGIN
    s = starttls_client(g, pki)
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(USER, PASSWORD)
        assert e.value.smtp_code == 534
        assert b"5.7.9 Application-specific password required" in e.value.smtp_error
        s.login("bob@example.com", "bbbbbbbbbbbbbbbb")
    finally:
        s.quit()
    assert rule.used == 1
    assert [(a.user, a.success) for a in g.auth_attempts] == \
        [(USER, False), ("bob@example.com", True)]


@pytest.mark.parametrize("command,key,code", [
    ("MAIL", "try_again", 421),
    ("RCPT", "too_many_rcpts", 452),
    ("MESSAGE", "daily_limit", 550),
    ("MESSAGE", "temp_rejected", 451),
])
def test_knob_scripted_transaction_replies(g, pki, command, key, code):
    g.script(command, key)
    s = starttls_client(g, pki)
    s.login(USER, PASSWORD)
    try:
        s.sendmail(USER, ["bob@example.org"], b"Subject: x\r\n\r\nbody\r\n")
        pytest.fail("sendmail should have failed")
    except smtplib.SMTPRecipientsRefused as e:
        got_code, got = e.recipients["bob@example.org"]
        assert got_code == code
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
        got_code, got = e.smtp_code, e.smtp_error
        assert got_code == code
    except smtplib.SMTPServerDisconnected:
        assert code == 421
        got = b""
    finally:
        s.close()
    if code != 421:
        expected = fakegmail.REPLIES[key].split("\r\n")[0][4:].split(".")[0]
        assert expected.encode() in got
    assert g.delivered == []


def test_knob_size_and_recipient_limits(g, pki):
    g.max_size = 100
    g.max_recipients = 2
    s = starttls_client(g, pki)
    s.login(USER, PASSWORD)
    try:
        code, msg = s.mail(USER, ["SIZE=1000"])
        assert code == 552 and b"5.3.4 Your message exceeded Google's message size limits" in msg
        assert s.mail(USER, ["SIZE=50"])[0] == 250
        assert s.rcpt("a@example.org")[0] == 250
        assert s.rcpt("b@example.org")[0] == 250
        code, msg = s.rcpt("c@example.org")
        assert code == 452 and b"4.5.3 Your message has too many recipients" in msg
        code, msg = s.data(b"x" * 200 + b"\r\n")
        assert code == 552
    finally:
        s.close()
    assert g.delivered == [] and len(g.messages) == 1 and not g.messages[0].accepted


def test_knob_drop_in_data(g, pki):
    g.drop_in_data = True
    s = starttls_client(g, pki)
    s.login(USER, PASSWORD)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.sendmail(USER, ["bob@example.org"], b"Subject: x\r\n\r\n" + b"y" * 100000 + b"\r\n")
    s.close()
    g.wait_for(lambda: g.messages, what="the partial message")
    assert not g.messages[0].complete and not g.messages[0].accepted
    assert g.delivered == []


def test_knob_drop_instead_of_reply(g, pki):
    g.script("MAIL", None)
    s = starttls_client(g, pki)
    s.login(USER, PASSWORD)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.mail(USER)
    s.close()


def test_knob_delay(g, pki):
    g.delay = 0.3
    t0 = time.monotonic()
    s = smtplib.SMTP("localhost", g.starttls_port, timeout=TIMEOUT)
    s.noop()
    s.close()
    assert time.monotonic() - t0 >= 0.6


def test_knob_idle_timeout(g):
    g.idle_timeout = 0.3
    with socket.create_connection(("127.0.0.1", g.starttls_port), timeout=TIMEOUT) as sock:
        c = RawClient(sock)
        c.reply()
        code, text = c.reply()
        assert code == 451 and "4.4.2 Timeout - closing connection." in text


def test_stop_ends_open_sessions(pki):
    g = fakegmail.FakeGmail(cert=pki.good).start()
    sock = socket.create_connection(("127.0.0.1", g.starttls_port), timeout=TIMEOUT)
    RawClient(sock).reply()
    t0 = time.monotonic()
    g.stop()
    assert time.monotonic() - t0 < 3
    sock.settimeout(2)
    assert sock.recv(100) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.starttls_port), timeout=1)
