"""test_admin_hostile.py: hostile HTTP against the admin listener (issue 9):
NUL bytes in the request line, headers and body, huge headers, request
smuggling (duplicate Content-Length, Content-Length with Transfer-Encoding),
a 1 MB body, deeply nested JSON, invalid UTF-8, slow headers and pipelining.
Raw sockets, so that the exact bytes reach the server. Every case asserts
what comes back: the expected 4xx (or a closed connection where
libmicrohttpd closes), never a 2xx for garbage, never a second answer for a
request hidden inside another; and afterwards that the daemon still answers
GET /healthz and still relays mail.

libmicrohttpd 0.9.75 (Debian 12) ends the request target and header values
at a NUL byte and hands over only what comes before it; the daemon cannot see
the rest. The NUL cases pin down that such a request gets no further than
its prefix alone would.
"""

import http.client
import json
import socket
import time

import pytest

from conftest import DEFAULT_ACCOUNT
from test_admin import Admin, add_admin, send_mail

CONN_TIMEOUT = 30       # ADMIN_CONN_TIMEOUT: s of inactivity before the server closes
BODY_MAX = 64 * 1024    # ADMIN_BODY_MAX
GRACE = 0.3             # s to wait for more answers (or the close) after the expected ones


# ---- a raw HTTP/1.1 client ---------------------------------------------------

def parse_responses(buf):
    """Complete responses at the start of buf: [(status, headers, body)]."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        head = buf[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        if len(buf) < end + 4 + n:
            return out
        out.append((status, headers, buf[end + 4:end + 4 + n]))
        buf = buf[end + 4 + n:]


class Conn:
    """One connection to the admin port; send bytes, collect answers."""

    def __init__(self, d, src=None, timeout=10.0):
        self.s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=timeout,
                                          source_address=(src, 0) if src else None)
        self.buf = b""
        self.closed = False

    def send(self, data):
        """Send; False when the server has closed (or reset) already."""
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def read(self, expect=1, timeout=10.0, settle=True):
        """Read until `expect` answers are in (and, with settle, GRACE more
        seconds have passed, to see any further answer or the close), or
        the server closes. Returns (answers, closed)."""
        deadline = time.monotonic() + timeout
        grace_end = None
        while not self.closed:
            now = time.monotonic()
            if len(parse_responses(self.buf)) >= expect and grace_end is None:
                grace_end = now + (GRACE if settle else 0)
            stop = grace_end if grace_end is not None else deadline
            if now >= stop:
                break
            self.s.settimeout(max(0.01, stop - now))
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:         # reset: the server closed with unread input
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            self.buf += data
        return parse_responses(self.buf), self.closed

    def close(self):
        self.s.close()


def exchange(d, data, expect=1, timeout=10.0, settle=False):
    """data on a fresh connection; see Conn.read()."""
    c = Conn(d, timeout=timeout)
    try:
        c.send(data)
        return c.read(expect, timeout, settle)
    finally:
        c.close()


def statuses(answers):
    return [a[0] for a in answers]


def assert_refused(answers, closed, codes, what):
    """Exactly one answer, one of codes (all 4xx), then the server closes."""
    assert statuses(answers) and set(statuses(answers)) <= set(codes), \
        f"{what}: {statuses(answers)}, expected one of {codes}"
    assert len(answers) == 1, f"{what}: {statuses(answers)} (a hidden request was answered)"
    assert closed, f"{what}: the connection stayed open"


def request(method, target, headers=(), body=b"", host=True):
    head = [f"{method} {target} HTTP/1.1"]
    if host:
        head.append("Host: 127.0.0.1")
    head += list(headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def alive(d, gmail):
    """GET /healthz answers 200 and mail still goes through."""
    c = http.client.HTTPConnection("127.0.0.1", d.admin_port, timeout=10)
    try:
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
    finally:
        c.close()
    before = len(gmail.delivered)
    send_mail(d)
    gmail.wait_for(lambda: len(gmail.delivered) > before, what="a delivered message")
    assert d.proc.poll() is None


def logged_in(daemon):
    d = daemon(start=False)
    add_admin(d)
    d.start()
    a = Admin(d)
    status, _, payload = a.login()
    assert status == 200, payload
    return d, a


def json_headers(a, length):
    return [f"Cookie: {a.cookie}", f"X-CSRF-Token: {a.csrf}",
            "Content-Type: application/json", f"Content-Length: {length}"]


ROTATE = f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate"


# ---- NUL bytes -------------------------------------------------------------------

def test_nul_bytes_in_request_line_headers_and_body(daemon, gmail):
    d, a = logged_in(daemon)
    # The target ends at the NUL: a route that needs a session still needs one.
    for target in (b"/api/v1/accounts\x00", b"/api/v1/session\x00/../../healthz",
                   b"/api/v1/audit\x00?limit=1"):
        answers, _ = exchange(d, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answers) == [401], (target, statuses(answers))
    # The method ends at the NUL too: "G" is no method of any route.
    answers, _ = exchange(d, b"G\x00ET /api/v1/accounts HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answers) == [405]
    # In the version or a header name, libmicrohttpd refuses the request.
    answers, closed = exchange(d, b"GET /healthz HTTP/1.1\x00\r\nHost: x\r\n\r\n",
                               settle=True)
    assert_refused(answers, closed, [400], "NUL in the version")
    answers, closed = exchange(d, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n",
                               settle=True)
    assert_refused(answers, closed, [400], "NUL in a header name")
    # A header value ends at the NUL: what follows it is never used.
    cookie = a.cookie.replace("=", "=\x00", 1).encode()
    answers, _ = exchange(d, b"GET /api/v1/session HTTP/1.1\r\nHost: x\r\nCookie: " + cookie +
                          b"\r\n\r\n")
    assert statuses(answers) == [401]
    # In a JSON body, raw or escaped, it is bad JSON.
    for body in (b'{"password":"abcd\x00efgh"}', b'{"password":"abcd\\u0000efgh"}',
                 b'\x00{"password":"abcdefgh"}'):
        answers, _ = exchange(d, request("POST", ROTATE, json_headers(a, len(body)), body))
        assert statuses(answers) == [400], (body, statuses(answers))
    body = b'{"username":"alice\x00","password":"x"}'
    answers, _ = exchange(d, request("POST", "/api/v1/login", [
        "Content-Type: application/json", f"Content-Length: {len(body)}"], body))
    assert statuses(answers) == [400]
    alive(d, gmail)


# ---- huge headers ---------------------------------------------------------------

def test_huge_headers_431(daemon, gmail):
    d = daemon()
    cases = {
        "one header of 1 MiB": request("GET", "/healthz", ["X-Big: " + "y" * (1 << 20)]),
        "10,000 headers": request("GET", "/healthz", [f"X-H{i}: a" for i in range(10000)]),
        "a 1 MiB cookie": request("GET", "/api/v1/session",
                                  ["Cookie: smtpvault_session=" + "a" * (1 << 20)]),
    }
    for what, data in cases.items():
        c = Conn(d)
        try:
            c.send(data)
            answers, closed = c.read()
        finally:
            c.close()
        # libmicrohttpd answers 431 and closes; a reset after it (unread
        # input) is fine, an answer of any other kind is not.
        assert statuses(answers) in ([431], []), (what, statuses(answers))
        assert closed, what
    alive(d, gmail)


# ---- request smuggling ----------------------------------------------------------

SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("framing", [
    ["Content-Length: 2", "Content-Length: 2"],
    ["Content-Length: 2", "Content-Length: 36"],
    ["Content-Length: 36", "Content-Length: 2"],
    ["Content-Length: 2, 36"],
    ["Content-Length: 4", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: chunked", "Content-Length: 4"],
    ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
    ["Transfer-Encoding: xchunked"],
    ["Transfer-Encoding: chunked, identity"],
    ["Content-Length : 2"],
    ["Transfer-Encoding : chunked"],
], ids=lambda f: " / ".join(f))
def test_ambiguous_framing_400_and_closed(daemon, gmail, framing):
    """Where the body ends is ambiguous: 400 and close, so that nothing
    after it (here a smuggled GET) is ever taken for a request."""
    d = daemon()
    body = b"{}" if not any("chunked" in f for f in framing) else b"0\r\n\r\n"
    for method, target in (("POST", "/api/v1/login"), ("GET", "/healthz")):
        data = request(method, target, ["Content-Type: application/json"] + framing,
                       body + SMUGGLED)
        answers, closed = exchange(d, data, expect=2, settle=True)
        assert_refused(answers, closed, [400], f"{method} {framing}")
    alive(d, gmail)


# ---- big and deep JSON ------------------------------------------------------------

def test_one_megabyte_body_413(daemon, gmail):
    d, a = logged_in(daemon)
    big = b'{"password":"' + b"a" * (1 << 20) + b'"}'
    # Refused from Content-Length, before a byte of the body is read.
    c = Conn(d)
    try:
        c.send(request("POST", ROTATE, json_headers(a, len(big))))
        answers, closed = c.read()
        assert_refused(answers, closed, [413], "1 MB with Content-Length")
        assert answers[0][1].get("connection", "").lower() == "close"
    finally:
        c.close()
    # Chunked, so that only counting can tell.
    c = Conn(d)
    try:
        c.send(request("POST", ROTATE, [f"Cookie: {a.cookie}", f"X-CSRF-Token: {a.csrf}",
                                        "Content-Type: application/json",
                                        "Transfer-Encoding: chunked"]))
        for i in range(0, len(big), 16384):
            piece = big[i:i + 16384]
            if not c.send(b"%x\r\n" % len(piece) + piece + b"\r\n"):
                break
        c.send(b"0\r\n\r\n")
        answers, closed = c.read()
        assert statuses(answers) == [413]
    finally:
        c.close()
    alive(d, gmail)


def test_deeply_nested_json_400(daemon, gmail):
    d, a = logged_in(daemon)
    cases = {
        "60,000 [": b"[" * 60000,                                   # under the size bound
        "60,000 {\"a\":": b'{"a":' * 12000,
        "33 levels inside an object": b'{"password":"x","verify":' + b"[" * 32 +
                                      b"]" * 32 + b"}",
        "60,000 ]": b"]" * 60000,
        "brackets in a string, then 40 [": b'{"password":"[[[[\\"{{{{",' + b"[" * 40,
    }
    for what, body in cases.items():
        assert len(body) <= BODY_MAX
        answers, _ = exchange(d, request("POST", ROTATE, json_headers(a, len(body)), body))
        assert statuses(answers) == [400], (what, statuses(answers))
        assert "error" in json.loads(answers[0][2])
    # 100,000 '[' is over the size bound first.
    body = b"[" * 100000
    c = Conn(d)
    try:
        c.send(request("POST", ROTATE, json_headers(a, len(body))))
        answers, closed = c.read()
        assert_refused(answers, closed, [413], "100,000 [")
    finally:
        c.close()
    # 32 levels are fine as far as nesting goes ("verify" must then be a boolean).
    body = b'{"password":"x","verify":' + b"[" * 31 + b"]" * 31 + b"}"
    answers, _ = exchange(d, request("POST", ROTATE, json_headers(a, len(body)), body))
    assert statuses(answers) == [400]
    assert "verify" in json.loads(answers[0][2])["error"]
    alive(d, gmail)


# ---- invalid UTF-8 -------------------------------------------------------------------

def test_invalid_utf8_400_never_500(daemon, gmail):
    d, a = logged_in(daemon)
    bad = [b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xe2\x82", b"\xf0\x28\x8c\x28",
           b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xff", b"\\ud800",
           b"\\udc00\\ud800"]
    for b in bad:
        for body in (b'{"password":"abc' + b + b'def"}', b'{"pass' + b + b'word":"abcdefgh"}'):
            answers, _ = exchange(d, request("POST", ROTATE, json_headers(a, len(body)), body))
            assert statuses(answers) == [400], (body, statuses(answers))
        body = b'{"username":"al' + b + b'ice","password":"x"}'
        answers, _ = exchange(d, request("POST", "/api/v1/login", [
            "Content-Type: application/json", f"Content-Length: {len(body)}"], body))
        assert statuses(answers) == [400], (body, statuses(answers))
    # Client text quoted in an error that is not UTF-8 (cut at 64 bytes
    # inside a character, or percent-encoded in the path) is escaped, and
    # the status is the error's, not 500.
    body = ('{"password":"abcdefgh","' + "k" * 63 + 'é":1}').encode()
    answers, _ = exchange(d, request("POST", ROTATE, json_headers(a, len(body)), body))
    assert statuses(answers) == [400]
    assert json.loads(answers[0][2])["error"].startswith('unknown key')
    for method, target in (("POST", "/api/v1/accounts/%FF%FE/rotate"),
                           ("DELETE", "/api/v1/accounts/%C3"),
                           ("POST", "/api/v1/accounts/%E2%82/rollback")):
        body = b'{"password":"abcdefgh"}' if target.endswith("rotate") else b""
        answers, _ = exchange(d, request(method, target, json_headers(a, len(body)), body))
        assert statuses(answers) == [404], (target, statuses(answers))
        assert "\\x" in json.loads(answers[0][2])["error"]
    alive(d, gmail)


# ---- slow headers ----------------------------------------------------------------------

def test_slow_headers_closed_by_the_timeout_others_served(daemon, gmail):
    """Eight clients from another address send half a request, drip a few
    bytes, then stop: the server closes each one ADMIN_CONN_TIMEOUT seconds
    after its last byte, and serves everyone else meanwhile."""
    d = daemon()
    slow = [Conn(d, src="127.0.0.2") for _ in range(8)]
    try:
        for c in slow:
            assert c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(2):
            time.sleep(0.5)
            for c in slow:
                assert c.send(b"a"), "closed while still sending"
        last_byte = time.monotonic()
        # Others are served at once, on the admin page and on SMTP.
        for _ in range(5):
            t = time.monotonic()
            answers, _ = exchange(d, request("GET", "/healthz"))
            assert statuses(answers) == [200]
            assert time.monotonic() - t < 1.0
        alive(d, gmail)
        # Then the silent ones are closed, without an answer.
        for c in slow:
            answers, closed = c.read(expect=1, timeout=CONN_TIMEOUT + 10)
            assert closed, "a silent half request was never closed"
            assert not [s for s in statuses(answers) if s < 400], statuses(answers)
        waited = time.monotonic() - last_byte
        assert CONN_TIMEOUT - 2 <= waited <= CONN_TIMEOUT + 10, waited
    finally:
        for c in slow:
            c.close()
    alive(d, gmail)


# ---- pipelining -------------------------------------------------------------------------

def test_pipelined_requests_answered_in_order(daemon, gmail):
    d, a = logged_in(daemon)
    login = b'{"username":"alice","password":"not it"}'
    data = (request("GET", "/healthz") +
            request("POST", "/api/v1/login", ["Content-Type: application/json",
                                              f"Content-Length: {len(login)}"], login) +
            request("GET", "/api/v1/session", [f"Cookie: {a.cookie}"]) +
            request("GET", "/api/v1/session") +
            request("GET", "/nowhere") +
            request("GET", "/healthz"))
    answers, closed = exchange(d, data, expect=6, settle=True)
    assert statuses(answers) == [200, 401, 200, 401, 404, 200]
    assert not closed
    # Many at once.
    answers, _ = exchange(d, request("GET", "/healthz") * 100, expect=100)
    assert statuses(answers) == [200] * 100
    # Nothing after a refusal that closes is answered.
    big = 10 * BODY_MAX
    data = request("POST", ROTATE, json_headers(a, big)) + request("GET", "/healthz")
    answers, closed = exchange(d, data, expect=2, settle=True)
    assert_refused(answers, closed, [413], "413 then a pipelined GET")
    # A body longer than it says: the rest is read as the next request,
    # which is garbage: never answered with a 2xx, and the connection closed.
    body = b'{"username":"alice","password":"x"}\r\n\r\n'
    data = request("POST", "/api/v1/login", ["Content-Type: application/json",
                                             "Content-Length: 11"], body)
    answers, closed = exchange(d, data, expect=2, settle=True)
    # (libmicrohttpd closes on the garbage line, with or without a 400.)
    assert statuses(answers) in ([400], [400, 400]) and closed
    alive(d, gmail)
