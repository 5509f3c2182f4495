"""fakegmail.py: an SMTP submission server that behaves like smtp.gmail.com,
for the integration tests. It runs its own asyncio loop in a daemon thread
inside the pytest process, so a test can change its behaviour and read what
it received directly.

Why not aiosmtpd (which issue 3 allows as a base): the tests need things its
session class hides or does differently. It splits DATA on bare LF and
un-dot-stuffs those pieces, so "the exact bytes received" would not be exact
in the very smuggling tests that need them; its STARTTLS cannot be made to
answer with extra pipelined bytes or record plaintext pipelined after the
STARTTLS command; and the greeting, EHLO and every reply must carry
Google's texts. A small hand-written server on asyncio streams
(StreamWriter.start_tls, Python 3.11) does all of that in one readable file.

Two listeners on 127.0.0.1, ephemeral ports:
  starttls_port  like 587: plaintext, STARTTLS required before AUTH and MAIL
  implicit_port  like 465: TLS from the first byte

API (all attributes are safe to set from the test thread between actions):
  g = FakeGmail(cert=pki.good); g.start(); ...; g.stop()
  g.passwords["user@example.com"] = "abcdefghijklmnop"   # the App Password table
  g.serve_cert(pki.wrong_host)        # certificate for new connections
  g.script("AUTH", "bad_credentials", user="x@example.com", count=None)
  g.script("MESSAGE", "daily_limit")  # next end-of-data reply
  g.script("CONNECT", "try_again")    # 421 greeting, then close
  g.script("MAIL", None)              # drop the connection instead of answering
  g.offer_starttls = False; g.starttls_inject = b"250 x\r\n"; g.delay = 0.5
  g.offer_chunking = False            # EHLO without CHUNKING (BDAT still works)
  g.drop_in_data = True (or a byte count: inside DATA or a BDAT chunk); g.max_size;
  g.max_recipients
  g.auth_mechanisms = "LOGIN"         # what AUTH advertises after TLS
  g.linger = 1.0                      # drain input this long before closing
Records:
  g.connections [Connection], g.tls_handshakes, g.tls_failures,
  g.auth_commands (every AUTH command line, in any state), g.auth_attempts
  [AuthAttempt], g.messages [Message] (g.delivered: the accepted ones),
  g.wait_for(lambda: ..., timeout=5)
"""

import asyncio
import base64
import binascii
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

HOSTNAME = "smtp.gmail.com"

# Google's replies, as smtp.gmail.com sends them (texts from Google's "SMTP
# errors and codes" reference and from the live server). "{id}" is the
# session id, "{ts}" the Unix time, "{ip}" the client's address. A reply of
# several lines is written with "\r\n" between them.
REPLIES = {
    "greeting": "220 smtp.gmail.com ESMTP {id} - gsmtp",
    "ehlo": "250-smtp.gmail.com at your service, [{ip}]",
    "helo": "250 smtp.gmail.com at your service",
    "starttls_ready": "220 2.0.0 Ready to start TLS",
    "starttls_repeat": "454 5.5.1 STARTTLS may not be repeated. {id} - gsmtp",
    "starttls_unavailable": "454 4.7.0 TLS not available due to local problem {id} - gsmtp",
    "must_starttls": "530 5.7.0 Must issue a STARTTLS command first. {id} - gsmtp",
    "auth_required": "530-5.7.0 Authentication Required. For more information, go to\r\n"
                     "530 5.7.0  https://support.google.com/mail/?p=WantAuthError {id} - gsmtp",
    "auth_ok": "235 2.7.0 Accepted",
    "bad_credentials": "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
                       "535 5.7.8  https://support.google.com/mail/?p=BadCredentials {id} - gsmtp",
    "app_password_required": "534-5.7.9 Application-specific password required. For more information, go to\r\n"
                             "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor {id} - gsmtp",
    "too_many_logins": "454 4.7.0 Too many login attempts, please try again later. {id} - gsmtp",
    "auth_temporary": "454 4.7.0 Cannot authenticate due to a temporary system problem. Try again later. {id} - gsmtp",
    "no_identity_change": "503 5.7.0 No identity changes permitted. {id} - gsmtp",
    "auth_type": "504 5.7.4 Unrecognized authentication type. {id} - gsmtp",
    "cannot_decode": "501 5.5.2 Cannot Decode response. {id} - gsmtp",
    "auth_aborted": "501 5.7.0 Client initiated Authentication Exchange {id} - gsmtp",
    "try_again": "421 4.7.0 Try again later, closing connection. {id} - gsmtp",
    "timeout": "451 4.4.2 Timeout - closing connection. {id} - gsmtp",
    "daily_limit": "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n"
                   "550-5.4.5 sending limits go to\r\n"
                   "550 5.4.5  https://support.google.com/a/answer/166852 {id} - gsmtp",
    "too_big": "552-5.3.4 Your message exceeded Google's message size limits. For more\r\n"
               "552-5.3.4 information, go to\r\n"
               "552 5.3.4  https://support.google.com/mail/?p=MaxSizeError {id} - gsmtp",
    "too_many_rcpts": "452-4.5.3 Your message has too many recipients. For more information regarding\r\n"
                      "452-4.5.3 Google's sending limits, go to\r\n"
                      "452 4.5.3  https://support.google.com/mail/?p=TooManyRecipientsError {id} - gsmtp",
    "temp_rejected": "451 4.3.0 Mail server temporarily rejected message. {id} - gsmtp",
    "malformed": "554 5.6.0 Mail message is malformed. Not accepted. {id} - gsmtp",
    "mail_ok": "250 2.1.0 OK {id} - gsmtp",
    "rcpt_ok": "250 2.1.5 OK {id} - gsmtp",
    "data_go": "354  Go ahead {id} - gsmtp",
    "message_ok": "250 2.0.0 OK  {ts} {id} - gsmtp",
    "bdat_ok": "250 2.0.0 BDAT OK {id} - gsmtp",
    "rset_ok": "250 2.1.5 Flushed {id} - gsmtp",
    "noop_ok": "250 2.0.0 OK  {ts} {id} - gsmtp",
    "vrfy": "252 2.1.5 Send some mail, I'll try my best {id} - gsmtp",
    "help": "214 2.0.0  https://www.google.com/search?btnI&q=RFC+5321 {id} - gsmtp",
    "quit": "221 2.0.0 closing connection {id} - gsmtp",
    "helo_first": "503 5.5.1 EHLO/HELO first. {id} - gsmtp",
    "mail_first": "503 5.5.1 MAIL first. {id} - gsmtp",
    "rcpt_first": "503 5.5.1 RCPT first. {id} - gsmtp",
    "nested_mail": "503 5.5.1 Nested MAIL command. {id} - gsmtp",
    "bad_helo": "501 5.5.4 HELO/EHLO argument is invalid. {id} - gsmtp",
    "syntax": "555 5.5.2 Syntax error. {id} - gsmtp",
    "bad_address": "553 5.1.3 The recipient address is not a valid RFC 5321 address. {id} - gsmtp",
    "unknown_command": "502 5.5.1 Unrecognized command. {id} - gsmtp",
    "line_too_long": "500 5.5.2 Line too long. {id} - gsmtp",
}

# What EHLO advertises, in Google's order; AUTH only after TLS.
EHLO_BEFORE_TLS = ["SIZE {size}", "8BITMIME", "STARTTLS", "ENHANCEDSTATUSCODES",
                   "PIPELINING", "CHUNKING", "SMTPUTF8"]
EHLO_AFTER_TLS = ["SIZE {size}", "8BITMIME", "AUTH {auth}", "ENHANCEDSTATUSCODES",
                  "PIPELINING", "CHUNKING", "SMTPUTF8"]
AUTH_MECHANISMS = "LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH"
OAUTH_MECHANISMS = {"XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER", "XOAUTH"}

MAX_SIZE = 35882577             # Gmail's advertised SIZE
MAX_LINE = 64 * 1024            # a command line longer than this is refused
MAX_BUFFER = 128 * 1024 * 1024  # a DATA larger than this ends the connection
IDLE_TIMEOUT = 300.0
HANDSHAKE_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LINGER = 1.0                    # seconds to drain input before closing after a reply

COMMANDS = {"CONNECT", "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
            "MESSAGE", "BDAT", "RSET", "NOOP", "VRFY", "HELP", "QUIT"}


@dataclass
class Rule:
    """A scripted reply: the next `count` times `command` happens (for the
    authenticated user `user`, or the user trying AUTH), answer `reply`
    instead. reply None drops the connection without an answer. close
    closes it after the answer. MESSAGE is the reply after the final dot."""
    command: str
    reply: Optional[str]
    count: Optional[int] = 1
    user: Optional[str] = None
    close: bool = False
    delay: float = 0.0
    used: int = 0


@dataclass
class AuthAttempt:
    conn_id: int
    mechanism: str
    user: Optional[str]
    password: Optional[str]
    success: bool
    reply: str
    tls: bool


@dataclass
class Message:
    conn_id: int
    sid: str
    auth_user: Optional[str]
    mail_from: str
    mail_params: str
    rcpts: List[str]
    data: bytes          # after un-dot-stuffing, without the final ".\r\n"
    raw: bytes           # as on the wire, without the final ".\r\n"
    accepted: bool
    reply: str
    complete: bool = True  # False when the connection ended inside DATA

    @property
    def has_bare_cr_or_lf(self):
        return re.search(rb"\r(?!\n)|(?<!\r)\n", self.data) is not None


@dataclass
class Connection:
    id: int
    sid: str
    listener: str                     # "starttls" or "implicit"
    peer: str
    tls: bool = False
    tls_version: Optional[str] = None
    sni: Optional[str] = None
    helo: Optional[str] = None
    auth_user: Optional[str] = None
    auth_commands: int = 0
    commands: List[str] = field(default_factory=list)
    pipelined_after_starttls: bytes = b""
    bare_lf_commands: int = 0
    closed: bool = False
    close_reason: str = ""


class _Drop(Exception):
    """End this connection now (the reply, if any, is already sent)."""


class FakeGmail:
    def __init__(self, cert, passwords=None):
        """cert: an object with .cert and .key paths (a pki.Leaf)."""
        self.passwords = dict(passwords or {})
        self.cert = cert
        # Knobs.
        self.offer_starttls = True
        self.offer_chunking = True
        self.starttls_inject = b""
        self.delay = 0.0
        self.drop_in_data = None
        self.max_size = MAX_SIZE
        self.max_recipients = None
        self.auth_mechanisms = AUTH_MECHANISMS
        self.idle_timeout = IDLE_TIMEOUT
        self.linger = LINGER
        self.rules: List[Rule] = []
        # Records.
        self.connections: List[Connection] = []
        self.tls_handshakes = 0
        self.tls_failures = 0
        self.tls_errors: List[str] = []
        self.auth_commands = 0
        self.auth_attempts: List[AuthAttempt] = []
        self.messages: List[Message] = []
        # Machinery.
        self.host = "127.0.0.1"
        self.starttls_port = None
        self.implicit_port = None
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._servers = []
        self._tasks = set()
        self._ready = threading.Event()
        self._start_error = None

    # ---- control, from the test thread -----------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="fakegmail", daemon=True)
        self._thread.start()
        if not self._ready.wait(STOP_TIMEOUT):
            raise RuntimeError("fakegmail: did not start")
        if self._start_error:
            raise RuntimeError(f"fakegmail: {self._start_error}")
        return self

    def stop(self):
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                fut.result(STOP_TIMEOUT)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT)
        self._thread = None

    def serve_cert(self, leaf):
        """Serve this certificate (a pki.Leaf) on connections from now on."""
        self.cert = leaf

    def script(self, command, reply, *, count=1, user=None, close=False, delay=0.0):
        """Answer the next `count` (None: every) `command` with `reply`: a
        REPLIES key, literal reply text, or None to drop the connection."""
        command = command.upper()
        if command not in COMMANDS:
            raise ValueError(f"fakegmail: cannot script {command!r}")
        rule = Rule(command, reply, count, user, close, delay)
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail_auth(self, user, reply="bad_credentials", count=None):
        return self.script("AUTH", reply, user=user, count=count)

    @property
    def delivered(self):
        return [m for m in self.messages if m.accepted]

    @property
    def successful_auths(self):
        return [a for a in self.auth_attempts if a.success]

    def wait_for(self, predicate, timeout=5.0, what="condition"):
        """Poll predicate() until it is true; return its value, or raise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"fakegmail: timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    # ---- the server, in its own thread ----------------------------------

    def _run(self):
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except Exception as e:  # reported by start()
            self._start_error = repr(e)
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self):
        s1 = await asyncio.start_server(
            lambda r, w: self._handle(r, w, "starttls"), self.host, 0)
        s2 = await asyncio.start_server(
            lambda r, w: self._handle(r, w, "implicit"), self.host, 0)
        self._servers = [s1, s2]
        self.starttls_port = s1.sockets[0].getsockname()[1]
        self.implicit_port = s2.sockets[0].getsockname()[1]

    async def _shutdown(self):
        for s in self._servers:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT)

    async def _handle(self, reader, writer, listener):
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        with self._lock:
            conn = Connection(id=len(self.connections) + 1, sid=_session_id(),
                              listener=listener, peer=peer[0] if peer else "?")
            self.connections.append(conn)
        session = _Session(self, conn, reader, writer)
        try:
            await session.run()
        except _Drop:
            pass
        except asyncio.CancelledError:
            conn.close_reason = conn.close_reason or "server stopped"
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            conn.close_reason = conn.close_reason or f"{type(e).__name__}: {e}"
        finally:
            conn.closed = True
            try:
                writer.close()
            except Exception:
                pass
            self._tasks.discard(task)

    def _match(self, command, user):
        """The scripted rule for this event, consumed; or None."""
        with self._lock:
            for rule in self.rules:
                if rule.command != command:
                    continue
                if rule.user is not None and rule.user != user:
                    continue
                if rule.count is not None and rule.used >= rule.count:
                    continue
                rule.used += 1
                return rule
        return None

    def _tls_context(self, conn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert.cert, self.cert.key)

        def sni(sslobj, name, context):
            conn.sni = name
        ctx.sni_callback = sni
        return ctx


def _session_id():
    # Shaped like Google's: "d9443c01a7336-2f4c5e6a1b2c3d4e5fsm1234567pla.12".
    return f"{secrets.token_hex(6)}-{secrets.token_hex(9)}sm{secrets.randbelow(10**7):07d}pgb.{secrets.randbelow(1000)}"


def _b64decode(text):
    if text == "=":
        return b""
    return base64.b64decode(text.encode("ascii"), validate=True)


class _Session:
    """One SMTP connection: read a command, answer it, repeat."""

    def __init__(self, g, conn, reader, writer):
        self.g = g
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.helo = False
        self.reset()

    def reset(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []
        self.chunks = []

    # -- I/O --

    async def read_more(self):
        try:
            data = await asyncio.wait_for(self.reader.read(65536), self.g.idle_timeout)
        except asyncio.TimeoutError:
            await self.reply("timeout")
            self.conn.close_reason = "idle timeout"
            raise _Drop()
        if not data:
            self.conn.close_reason = self.conn.close_reason or "client closed"
            raise _Drop()
        self.buf += data
        if len(self.buf) > MAX_BUFFER:
            self.conn.close_reason = "too much data"
            raise _Drop()

    async def readline(self):
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                await self.reply("line_too_long", close=True)
            await self.read_more()
        line, self.buf = self.buf.split(b"\n", 1)
        if line.endswith(b"\r"):
            line = line[:-1]
        else:
            self.conn.bare_lf_commands += 1
        text = line.decode("utf-8", "replace")
        self.conn.commands.append(text)
        return text

    def expand(self, reply):
        text = REPLIES.get(reply, reply)
        return text.format(id=self.conn.sid, ts=int(time.time()), ip=self.conn.peer)

    async def send(self, text, delay=0.0):
        delay = delay or self.g.delay
        if delay:
            await asyncio.sleep(delay)
        data = text.encode("utf-8")
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, reply, close=False, delay=0.0):
        """Send a REPLIES key or text; 421 always closes, as Google does."""
        text = self.expand(reply)
        await self.send(text, delay)
        if close or text.startswith("421"):
            self.conn.close_reason = self.conn.close_reason or f"closed after {text[:3]}"
            await self.linger()
            raise _Drop()
        return text

    async def linger(self):
        """Before closing after a reply, read and discard what the client
        still sends (pipelined commands) for a moment, as careful servers
        do: closing at once would answer those bytes with a TCP reset, which
        can destroy the unread reply in the client's socket buffer and turn
        a test of the client into a test of timing."""
        deadline = time.monotonic() + self.g.linger
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except (asyncio.TimeoutError, ConnectionError, OSError, ssl.SSLError):
                return
            if not data:
                return

    async def scripted(self, command, user=None):
        """Apply a scripted rule if one matches: returns the reply text sent,
        or None when there is no rule (the caller answers normally)."""
        rule = self.g._match(command, user)
        if rule is None:
            return None
        if rule.reply is None:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            self.conn.close_reason = f"scripted drop at {command}"
            raise _Drop()
        return await self.reply(rule.reply, close=rule.close, delay=rule.delay)

    async def start_tls(self):
        conn = self.conn
        try:
            ctx = self.g._tls_context(conn)
            await self.writer.start_tls(ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as e:
            with self.g._lock:
                self.g.tls_failures += 1
                self.g.tls_errors.append(f"{type(e).__name__}: {e}")
            conn.close_reason = f"TLS handshake failed: {e}"
            raise _Drop()
        sslobj = self.writer.get_extra_info("ssl_object")
        conn.tls = True
        conn.tls_version = sslobj.version() if sslobj else None
        with self.g._lock:
            self.g.tls_handshakes += 1

    # -- the session --

    async def run(self):
        if self.conn.listener == "implicit":
            await self.start_tls()
        if await self.scripted("CONNECT") is not None:
            # A scripted greeting (e.g. 421) ends the session, as Google's does.
            self.conn.close_reason = "scripted greeting"
            raise _Drop()
        await self.reply("greeting")
        while True:
            line = await self.readline()
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            handler = getattr(self, "cmd_" + verb, None)
            if handler is None:
                await self.reply("unknown_command")
                continue
            await handler(arg.strip())

    async def cmd_EHLO(self, arg):
        if not arg:
            await self.reply("bad_helo")
            return
        if await self.scripted("EHLO") is not None:
            return
        self.conn.helo = arg
        self.helo = True
        self.reset()
        if self.conn.tls:
            keywords = EHLO_AFTER_TLS
        else:
            keywords = [k for k in EHLO_BEFORE_TLS if k != "STARTTLS" or self.g.offer_starttls]
        keywords = [k for k in keywords if k != "CHUNKING" or self.g.offer_chunking]
        keywords = [k.format(size=self.g.max_size, auth=self.g.auth_mechanisms) for k in keywords]
        lines = [self.expand("ehlo")] + ["250-" + k for k in keywords[:-1]] + ["250 " + keywords[-1]]
        await self.send("\r\n".join(lines))

    async def cmd_HELO(self, arg):
        if not arg:
            await self.reply("bad_helo")
            return
        if await self.scripted("HELO") is not None:
            return
        self.conn.helo = arg
        self.helo = True
        self.reset()
        await self.reply("helo")

    async def cmd_STARTTLS(self, arg):
        if self.conn.tls:
            await self.reply("starttls_repeat")
            return
        if not self.g.offer_starttls:
            await self.reply("unknown_command")
            return
        if arg:
            await self.reply("syntax")
            return
        if await self.scripted("STARTTLS") is not None:
            return
        # Write the 220 (and any injected bytes) and start TLS without
        # yielding to the loop in between, so that the client's ClientHello
        # cannot be taken by the plaintext reader.
        text = self.expand("starttls_ready").encode() + b"\r\n" + self.g.starttls_inject
        self.writer.write(text)
        # Plaintext the client pipelined after STARTTLS must be discarded
        # (RFC 3207 section 4.2): record it for the tests and drop it.
        pending = self.buf + bytes(self.reader._buffer)
        self.reader._buffer.clear()
        self.buf = b""
        self.conn.pipelined_after_starttls = pending
        await self.start_tls()
        self.helo = False
        self.reset()

    async def cmd_AUTH(self, arg):
        conn, g = self.conn, self.g
        with g._lock:
            g.auth_commands += 1
        conn.auth_commands += 1
        if conn.listener == "starttls" and not conn.tls:
            await self.reply("must_starttls")
            return
        if not self.helo:
            await self.reply("helo_first")
            return
        if conn.auth_user is not None:
            await self.reply("no_identity_change")
            return
        if self.mail_from is not None:
            await self.reply("nested_mail")
            return
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        initial = initial.strip()
        if mech not in g.auth_mechanisms.split():
            await self.reply("auth_type")
            return
        user = password = None
        try:
            if mech == "PLAIN":
                if not initial:
                    await self.send("334 ")
                    initial = await self.auth_line()
                parts = _b64decode(initial).split(b"\0")
                if len(parts) != 3:
                    raise ValueError("PLAIN needs three fields")
                user, password = parts[1].decode(), parts[2].decode()
            elif mech == "LOGIN":
                if initial:
                    user = _b64decode(initial).decode()
                else:
                    await self.send("334 VXNlcm5hbWU6")
                    user = _b64decode(await self.auth_line()).decode()
                await self.send("334 UGFzc3dvcmQ6")
                password = _b64decode(await self.auth_line()).decode()
            # OAuth mechanisms: no token is ever valid here.
        except _AuthAborted:
            self.record_auth(mech, user, password, False, self.expand("auth_aborted"))
            await self.reply("auth_aborted")
            return
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.record_auth(mech, user, password, False, self.expand("cannot_decode"))
            await self.reply("cannot_decode")
            return

        rule = g._match("AUTH", user)
        if rule is not None:
            if rule.reply is None:
                self.record_auth(mech, user, password, False, "(dropped)")
                conn.close_reason = "scripted drop at AUTH"
                raise _Drop()
            text = self.expand(rule.reply)
            ok = text.startswith("2")
            if ok:
                conn.auth_user = user
            self.record_auth(mech, user, password, ok, text)
            await self.reply(rule.reply, close=rule.close, delay=rule.delay)
            return
        ok = mech not in OAUTH_MECHANISMS and user is not None and g.passwords.get(user) == password
        reply = "auth_ok" if ok else "bad_credentials"
        if ok:
            conn.auth_user = user
        self.record_auth(mech, user, password, ok, self.expand(reply))
        await self.reply(reply)

    async def auth_line(self):
        line = await self.readline()
        if line == "*":
            raise _AuthAborted()
        return line

    def record_auth(self, mech, user, password, ok, reply):
        with self.g._lock:
            self.g.auth_attempts.append(AuthAttempt(
                self.conn.id, mech, user, password, ok, reply, self.conn.tls))

    def check_ready_for_mail(self):
        """The reply key that refuses a transaction now, or None."""
        if not self.helo:
            return "helo_first"
        if self.conn.listener == "starttls" and not self.conn.tls:
            return "must_starttls"
        if self.conn.auth_user is None:
            return "auth_required"
        return None

    async def cmd_MAIL(self, arg):
        refusal = self.check_ready_for_mail()
        if refusal:
            await self.reply(refusal)
            return
        if self.mail_from is not None:
            await self.reply("nested_mail")
            return
        m = re.match(r"(?i)FROM:\s*<([^<>]*)>\s*(.*)$", arg)
        if not m:
            await self.reply("syntax")
            return
        params = m.group(2)
        size = re.search(r"(?i)(?:^|\s)SIZE=(\d+)", params)
        if size and int(size.group(1)) > self.g.max_size:
            await self.reply("too_big")
            return
        if await self.scripted("MAIL", self.conn.auth_user) is not None:
            return
        self.mail_from = m.group(1)
        self.mail_params = params
        self.rcpts = []
        self.chunks = []
        await self.reply("mail_ok")

    async def cmd_RCPT(self, arg):
        if self.mail_from is None:
            await self.reply("mail_first")
            return
        m = re.match(r"(?i)TO:\s*<([^<>]*)>\s*(.*)$", arg)
        if not m:
            await self.reply("syntax")
            return
        if not m.group(1) or "@" not in m.group(1):
            await self.reply("bad_address")
            return
        if self.g.max_recipients is not None and len(self.rcpts) >= self.g.max_recipients:
            await self.reply("too_many_rcpts")
            return
        if await self.scripted("RCPT", self.conn.auth_user) is not None:
            return
        self.rcpts.append(m.group(1))
        await self.reply("rcpt_ok")

    async def cmd_DATA(self, arg):
        if self.mail_from is None:
            await self.reply("mail_first")
            return
        if not self.rcpts:
            await self.reply("rcpt_first")
            return
        text = await self.scripted("DATA", self.conn.auth_user)
        if text is not None:
            if not text.startswith("3"):
                return
        else:
            await self.reply("data_go")
        raw = await self.read_data()
        lines = raw.split(b"\r\n")
        data = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
        await self.finish_message(raw, data)

    async def read_data(self):
        """Bytes up to CRLF.CRLF (only that ends DATA), without the dot line."""
        search_from = 0
        threshold = self.g.drop_in_data
        if threshold is True:
            threshold = 1
        while True:
            # The drop comes first: a client that sends the whole message in
            # one write must still see the connection die inside DATA.
            if threshold and len(self.buf) >= threshold:
                self.record_message(self.buf, self.buf, False, "(dropped in DATA)", complete=False)
                self.conn.close_reason = "dropped in DATA"
                raise _Drop()
            probe = b"\r\n" + self.buf
            i = probe.find(b"\r\n.\r\n", search_from)
            if i >= 0:
                self.buf = probe[i + 5:]
                return probe[2:i + 2]
            search_from = max(0, len(probe) - 4)
            try:
                await self.read_more()
            except _Drop:
                self.record_message(self.buf, self.buf, False, "(connection ended in DATA)",
                                    complete=False)
                raise

    async def cmd_BDAT(self, arg):
        m = re.match(r"(?i)(\d+)(\s+LAST)?$", arg)
        if not m:
            await self.reply("syntax")
            return
        n, last = int(m.group(1)), bool(m.group(2))
        # The same knob as for DATA: the connection dies inside the message,
        # however the client sends it.
        cut = 1 if self.g.drop_in_data is True else self.g.drop_in_data
        if cut and cut > n:
            cut = None
        while cut or len(self.buf) < n:
            if cut and len(self.buf) >= cut:
                got = b"".join(self.chunks) + self.buf[:n]
                self.record_message(got, got, False, "(dropped in BDAT)", complete=False)
                self.conn.close_reason = "dropped in BDAT"
                raise _Drop()
            try:
                await self.read_more()
            except _Drop:
                got = b"".join(self.chunks) + self.buf
                self.record_message(got, got, False, "(connection ended in BDAT)",
                                    complete=False)
                raise
        chunk, self.buf = self.buf[:n], self.buf[n:]
        if self.mail_from is None:
            await self.reply("mail_first")
            return
        if not self.rcpts:
            await self.reply("rcpt_first")
            return
        self.chunks.append(chunk)
        if not last:
            await self.reply("bdat_ok")
            return
        data = b"".join(self.chunks)
        await self.finish_message(data, data)

    async def finish_message(self, raw, data):
        user = self.conn.auth_user
        if len(data) > self.g.max_size:
            text = self.expand("too_big")
            self.record_message(raw, data, False, text)
            self.reset()
            await self.reply("too_big")
            return
        rule = self.g._match("MESSAGE", user)
        if rule is not None and rule.reply is None:
            self.record_message(raw, data, False, "(dropped after DATA)")
            self.conn.close_reason = "scripted drop at MESSAGE"
            raise _Drop()
        reply = rule.reply if rule else "message_ok"
        text = self.expand(reply)
        self.record_message(raw, data, text.startswith("2"), text)
        self.reset()
        if rule:
            await self.reply(reply, close=rule.close, delay=rule.delay)
        else:
            await self.reply(reply)

    def record_message(self, raw, data, accepted, reply, complete=True):
        with self.g._lock:
            self.g.messages.append(Message(
                conn_id=self.conn.id, sid=self.conn.sid, auth_user=self.conn.auth_user,
                mail_from=self.mail_from, mail_params=self.mail_params,
                rcpts=list(self.rcpts), data=bytes(data), raw=bytes(raw),
                accepted=accepted, reply=reply, complete=complete))

    async def cmd_RSET(self, arg):
        if await self.scripted("RSET", self.conn.auth_user) is not None:
            return
        self.reset()
        await self.reply("rset_ok")

    async def cmd_NOOP(self, arg):
        if await self.scripted("NOOP", self.conn.auth_user) is not None:
            return
        await self.reply("noop_ok")

    async def cmd_VRFY(self, arg):
        await self.reply("vrfy")

    async def cmd_HELP(self, arg):
        await self.reply("help")

    async def cmd_QUIT(self, arg):
        if await self.scripted("QUIT", self.conn.auth_user) is not None:
            raise _Drop()
        self.conn.close_reason = "QUIT"
        await self.reply("quit", close=True)


class _AuthAborted(Exception):
    pass
