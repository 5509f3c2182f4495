"""test_admin.py: the admin JSON API of SPEC section 8 (issue 6) against a
running `smtpvault serve`: every route's success, 401 without a session,
403 without / with a wrong CSRF token or from another origin, 400 for bad
JSON, 404 for an unknown account; cookie flags (plain and TLS), the
security headers on every response, login throttling and its audit trail,
request limits, health and metrics. A raw http.client is used so that the
exact headers are visible.
"""

import http.client
import json
import os
import re
import socket
import ssl
import time

import pytest

from conftest import DEFAULT_ACCOUNT, DEFAULT_PASSWORD

ADMIN = "alice"
ADMIN_PW = "correct horse battery"
NEW_PW = "qrstuvwxyzabcdef"
CSP_DIRECTIVES = ["default-src 'self'", "script-src 'self'", "style-src 'self'",
                  "img-src 'self' data:", "frame-ancestors 'none'", "base-uri 'none'",
                  "form-action 'self'"]
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Admin:
    """A client of the admin API that keeps the session cookie and token."""

    def __init__(self, d, tls_ca=None):
        self.d = d
        self.tls_ca = tls_ca
        self.cookie = None
        self.csrf = None
        self.host = f"127.0.0.1:{d.admin_port}"

    def conn(self):
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            return http.client.HTTPSConnection("127.0.0.1", self.d.admin_port, context=ctx,
                                               timeout=15)
        return http.client.HTTPConnection("127.0.0.1", self.d.admin_port, timeout=15)

    def request(self, method, path, body=None, headers=None, auth=True, csrf=True,
                ctype="application/json", raw=None):
        h = {}
        if auth and self.cookie:
            h["Cookie"] = self.cookie
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h["X-CSRF-Token"] = self.csrf
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and ctype:
            h["Content-Type"] = ctype
        h.update(headers or {})
        c = self.conn()
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            payload = r.read()
            return r.status, r.headers, payload
        finally:
            c.close()

    def json(self, method, path, body=None, **kw):
        status, headers, payload = self.request(method, path, body=body, **kw)
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = payload
        return status, data

    def login(self, user=ADMIN, password=ADMIN_PW):
        status, headers, payload = self.request("POST", "/api/v1/login",
                                                body={"username": user, "password": password},
                                                auth=False)
        if status == 200:
            cookie = headers.get("Set-Cookie")
            self.cookie = cookie.split(";", 1)[0]
            self.csrf = json.loads(payload)["csrf_token"]
        return status, headers, payload


def add_admin(d, name=ADMIN, password=ADMIN_PW):
    rc, out, err = d.cli("admin-user", "add", name, input=password + "\n")
    assert rc == 0, err


@pytest.fixture
def admin_daemon(daemon):
    """A daemon with an admin user, and a logged-in client."""
    d = daemon(start=False)
    add_admin(d)
    d.start()
    a = Admin(d)
    status, _, payload = a.login()
    assert status == 200, payload
    return d, a


def audit_lines(d):
    with open(d.audit) as f:
        return [json.loads(line) for line in f if line.strip()]


def send_mail(d, sender=DEFAULT_ACCOUNT, rcpt="bob@example.org", subject="hello",
              helo="client.test", body="Hi Bob.\r\n"):
    s = d.smtp()
    try:
        s.ehlo(helo)
        msg = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{time.time_ns()}@test>\r\n\r\n{body}")
        s.sendmail(sender, [rcpt], msg.encode())
    finally:
        s.quit()


# ---- health and metrics ----------------------------------------------------

def test_healthz_and_metrics_need_no_session(daemon):
    d = daemon()
    a = Admin(d)
    status, data = a.json("GET", "/healthz")
    assert status == 200 and data["status"] == "ok"
    status, headers, body = a.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    for name, kind in (("smtpvault_messages_total", "counter"),
                       ("smtpvault_queue_depth", "gauge"),
                       ("smtpvault_upstream_sessions", "gauge"),
                       ("smtpvault_upstream_auth_failures_total", "counter"),
                       ("smtpvault_credential_age_seconds", "gauge")):
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} {kind}\n" in text
    assert f'smtpvault_messages_total{{account="{DEFAULT_ACCOUNT}",status="delivered"}} 0' in text
    assert re.search(r'^smtpvault_credential_age_seconds\{account="team@example.com"\} \d+$',
                     text, re.M)
    assert "smtpvault_queue_depth 0\n" in text
    assert DEFAULT_PASSWORD not in text
    # A message moves the counters and opens an upstream session.
    send_mail(d)
    status, headers, body = a.request("GET", "/metrics")
    text = body.decode()
    assert f'smtpvault_messages_total{{account="{DEFAULT_ACCOUNT}",status="delivered"}} 1' in text
    assert re.search(r'^smtpvault_upstream_sessions\{account="team@example.com"\} 1$', text,
                     re.M)


def test_metrics_label_escaping_and_auth_failures(daemon, gmail):
    from conftest import Account
    d = daemon(accounts=[Account(DEFAULT_ACCOUNT, upstream_password="not-the-same")])
    s = d.smtp()
    s.ehlo("x")
    with pytest.raises(Exception):
        s.sendmail(DEFAULT_ACCOUNT, ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n")
    s.quit()
    status, headers, body = Admin(d).request("GET", "/metrics")
    text = body.decode()
    assert re.search(r'^smtpvault_upstream_auth_failures_total\{account="team@example.com"\} 1$',
                     text, re.M)
    # Every sample line is well formed (labels quoted, escapes only as allowed).
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        assert re.match(r'^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\[\\"n])*",?)+\})? \d+$', line), line


def test_healthz_503_while_the_vault_cannot_be_read(daemon):
    d = daemon()
    a = Admin(d)
    with open(d.vault, "rb") as f:
        good = f.read()
    bad = d.vault + ".bad"
    with open(bad, "wb") as f:
        f.write(b"garbage" * 10)
    os.rename(bad, d.vault)
    deadline = time.monotonic() + 5
    while True:
        status, data = a.json("GET", "/healthz")
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 503 and data["status"] == "unavailable"
    tmp = d.vault + ".good"
    with open(tmp, "wb") as f:
        f.write(good)
    os.rename(tmp, d.vault)
    deadline = time.monotonic() + 5
    while True:
        status, data = a.json("GET", "/healthz")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200


# ---- login, cookies, sessions ----------------------------------------------

def test_login_cookie_flags_and_fresh_ids(admin_daemon):
    d, a = admin_daemon
    status, headers, payload = a.request("POST", "/api/v1/login",
                                         body={"username": ADMIN, "password": ADMIN_PW},
                                         auth=False)
    assert status == 200
    cookie = headers["Set-Cookie"]
    name_value, *attrs = [p.strip() for p in cookie.split(";")]
    name, value = name_value.split("=", 1)
    assert name == "smtpvault_session"
    assert HEX64.match(value)
    attrs_l = [x.lower() for x in attrs]
    assert "httponly" in attrs_l and "samesite=strict" in attrs_l and "path=/" in attrs_l
    assert "secure" not in attrs_l          # plain HTTP on loopback
    data = json.loads(payload)
    assert HEX64.match(data["csrf_token"]) and data["user"] == ADMIN
    # A second login is a new session: new id, new token, both valid.
    assert value != a.cookie.split("=", 1)[1]
    assert data["csrf_token"] != a.csrf
    assert a.json("GET", "/api/v1/session")[0] == 200
    status, data = a.json("GET", "/api/v1/session", headers={"Cookie": name_value}, auth=False)
    assert status == 200 and data["user"] == ADMIN
    # Login is audited with the client's address; the password never is.
    events = [e for e in audit_lines(d) if e["event"] == "admin" and e["action"] == "login"]
    assert events and events[-1]["user"] == ADMIN and events[-1]["ip"] == "127.0.0.1"
    with open(d.audit) as f:
        assert ADMIN_PW not in f.read()
    assert ADMIN_PW not in d.log()


def test_tls_admin_cookie_is_secure_and_host_prefixed(daemon, pki):
    d = daemon(start=False, admin={"tls_cert": pki.good.cert, "tls_key": pki.good.key})
    add_admin(d)
    d.start()
    a = Admin(d, tls_ca=pki.ca)
    status, headers, payload = a.login()
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("__Host-smtpvault_session=")
    attrs = [x.strip().lower() for x in cookie.split(";")[1:]]
    assert "secure" in attrs and "httponly" in attrs and "samesite=strict" in attrs
    assert "path=/" in attrs and not any(x.startswith("domain") for x in attrs)
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert a.json("GET", "/api/v1/accounts")[0] == 200
    # The plain-HTTP cookie name is not accepted under TLS.
    plain = "smtpvault_session=" + a.cookie.split("=", 1)[1]
    assert a.json("GET", "/api/v1/accounts", headers={"Cookie": plain}, auth=False)[0] == 401


def test_logout_ends_the_session(admin_daemon):
    d, a = admin_daemon
    status, headers, _ = a.request("POST", "/api/v1/logout")
    assert status == 200
    assert "Max-Age=0" in headers["Set-Cookie"]
    assert a.json("GET", "/api/v1/accounts")[0] == 401
    assert any(e["event"] == "admin" and e["action"] == "logout" for e in audit_lines(d))


def test_wrong_password_401_audited_and_throttled(admin_daemon):
    d, a = admin_daemon
    b = Admin(d)
    for i in range(5):
        status, headers, payload = b.request(
            "POST", "/api/v1/login", body={"username": ADMIN, "password": f"wrong{i}"},
            auth=False)
        assert status == 401, payload
        assert b"wrong" not in payload.replace(b"wrong user name", b"")
    # The sixth attempt is refused before any check, even with the right password.
    status, headers, payload = b.request(
        "POST", "/api/v1/login", body={"username": ADMIN, "password": ADMIN_PW}, auth=False)
    assert status == 429
    assert int(headers["Retry-After"]) > 800
    # Per IP too: another user from the same address.
    status, _, _ = b.request("POST", "/api/v1/login",
                             body={"username": "bob", "password": "x"}, auth=False)
    assert status == 429
    fails = [e for e in audit_lines(d) if e["event"] == "admin"
             and e["action"] == "login_failed"]
    assert len(fails) >= 6
    assert all(e["ip"] == "127.0.0.1" for e in fails)
    assert [e["user"] for e in fails[:5]] == [ADMIN] * 5
    assert any(e.get("reason") == "throttled" for e in fails)
    with open(d.audit) as f:
        text = f.read()
    assert "wrong0" not in text and ADMIN_PW not in text
    # The existing session is not affected.
    assert a.json("GET", "/api/v1/accounts")[0] == 200


def test_login_unknown_user_and_bad_input(daemon):
    d = daemon(start=False)
    add_admin(d)
    d.start()
    a = Admin(d)
    status, _ = a.json("POST", "/api/v1/login", {"username": "nobody", "password": "x"},
                       auth=False)
    assert status == 401
    for raw in (b"{", b"[]", b'{"username": 1, "password": "x"}',
                b'{"username": "a", "password": "x", "extra": 1}',
                b'{"username": "a", "username": "b", "password": "x"}', b""):
        status, _, _ = a.request("POST", "/api/v1/login", raw=raw, auth=False)
        assert status == 400, raw
    status, _, _ = a.request("POST", "/api/v1/login", raw=b'{"username":"a","password":"b"}',
                             ctype="text/plain", auth=False)
    assert status == 415
    status, _, _ = a.request("POST", "/api/v1/login",
                             body={"username": ADMIN, "password": ADMIN_PW}, auth=False,
                             headers={"Origin": "http://evil.example"})
    assert status == 403


# ---- the guard of every route ----------------------------------------------

AUTHED = [
    ("GET", "/api/v1/session", None),
    ("GET", "/api/v1/accounts", None),
    ("POST", "/api/v1/accounts", {"address": "x@example.com", "password": NEW_PW}),
    ("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate", {"password": NEW_PW}),
    ("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rollback", None),
    ("DELETE", f"/api/v1/accounts/{DEFAULT_ACCOUNT}", None),
    ("GET", "/api/v1/audit", None),
    ("GET", "/api/v1/audit.csv", None),
    ("GET", "/api/v1/queue", None),
    ("POST", "/api/v1/queue/Q1/retry", None),
    ("DELETE", "/api/v1/queue/Q1", None),
    ("POST", "/api/v1/logout", None),
]
CHANGING = [r for r in AUTHED if r[0] != "GET"]


def test_every_route_needs_a_session(admin_daemon):
    d, a = admin_daemon
    for method, path, body in AUTHED:
        status, data = a.json(method, path, body, auth=False)
        assert status == 401, (method, path)
        status, data = a.json(method, path, body, auth=False,
                              headers={"Cookie": "smtpvault_session=" + "0" * 64})
        assert status == 401, (method, path)


def test_every_change_needs_csrf_and_same_origin(admin_daemon):
    d, a = admin_daemon
    origin = f"http://127.0.0.1:{d.admin_port}"
    for method, path, body in CHANGING:
        assert a.json(method, path, body, csrf=False)[0] == 403, (method, path)
        assert a.json(method, path, body, csrf=False,
                      headers={"X-CSRF-Token": "0" * 64})[0] == 403, (method, path)
        assert a.json(method, path, body, csrf=False,
                      headers={"X-CSRF-Token": a.csrf[:-1]})[0] == 403, (method, path)
        assert a.json(method, path, body,
                      headers={"Origin": "http://evil.example"})[0] == 403, (method, path)
        assert a.json(method, path, body, headers={"Origin": "null"})[0] == 403
        assert a.json(method, path, body,
                      headers={"Sec-Fetch-Site": "cross-site"})[0] == 403, (method, path)
    # Nothing happened: the account is untouched, the session still works.
    status, data = a.json("GET", "/api/v1/accounts")
    assert status == 200 and data["accounts"][0]["version"] == 1
    # The same-origin Origin a browser sends is accepted.
    status, _ = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                       {"password": NEW_PW, "verify": False}, headers={"Origin": origin})
    assert status == 200


def test_security_headers_on_every_response(admin_daemon):
    d, a = admin_daemon
    probes = [("GET", "/", None), ("GET", "/app.js", None), ("GET", "/app.css", None),
              ("GET", "/healthz", None), ("GET", "/metrics", None), ("GET", "/nope", None),
              ("GET", "/api/v1/nope", None), ("PUT", "/api/v1/accounts", None),
              ("POST", "/api/v1/login", {"username": "x", "password": "y"})]
    probes += AUTHED[:-1]
    for auth in (True, False):
        for method, path, body in probes:
            status, headers, _ = a.request(method, path, body=body, auth=auth)
            csp = [x.strip() for x in headers["Content-Security-Policy"].split(";")]
            for directive in CSP_DIRECTIVES:
                assert directive in csp, (method, path, csp)
            assert "unsafe-inline" not in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff", (method, path)
            assert headers["Referrer-Policy"] == "no-referrer", (method, path)
            assert headers["Cache-Control"] == "no-store", (method, path)
            assert headers["Content-Type"], (method, path)
    status, headers, _ = a.request("PUT", "/api/v1/accounts")
    assert status == 405 and "GET" in headers["Allow"] and "POST" in headers["Allow"]


# ---- accounts -------------------------------------------------------------

def test_accounts_list_has_no_secret(admin_daemon):
    d, a = admin_daemon
    status, headers, payload = a.request("GET", "/api/v1/accounts")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(payload)
    acct = data["accounts"][0]
    assert acct["address"] == DEFAULT_ACCOUNT and acct["version"] == 1
    assert acct["status"] == "ok" and acct["daily_limit"] == 2000
    assert acct["credential_age_seconds"] >= 0 and acct["credential_age_warning"] is False
    assert data["queue"] == {"mode": "direct", "depth": 0}
    assert DEFAULT_PASSWORD.encode() not in payload
    for half in (DEFAULT_PASSWORD[:8], DEFAULT_PASSWORD[8:], DEFAULT_PASSWORD[-4:]):
        assert half.encode() not in payload


def test_account_add_rotate_rollback_remove(admin_daemon, gmail):
    d, a = admin_daemon
    new = "ops@example.com"
    gmail.passwords[new] = "abcdabcdabcdabcd"
    status, data = a.json("POST", "/api/v1/accounts",
                          {"address": new, "password": "abcd abcd abcd abcd",
                           "aliases": ["alerts@example.com"], "daily_limit": 50,
                           "verify": True})
    assert status == 201, data
    assert data == {"address": new, "version": 1, "verified": True,
                    "upstream_reply": "235 2.7.0 Accepted"}
    assert a.json("POST", "/api/v1/accounts", {"address": new, "password": NEW_PW})[0] == 409
    assert a.json("POST", "/api/v1/accounts",
                  {"address": "alerts@example.com", "password": NEW_PW})[0] == 409
    assert a.json("POST", "/api/v1/accounts",
                  {"address": "not an address", "password": NEW_PW})[0] == 400
    # Rotation proven upstream first; the fake accepts the new password.
    gmail.passwords[DEFAULT_ACCOUNT] = NEW_PW
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": "qrst uvwx yzab cdef", "verify": True})
    assert status == 200, data
    assert data["version"] == 2 and data["verified"] is True
    # Google refuses a wrong one: its text comes back, nothing is stored.
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": "zzzzzzzzzzzzzzzz"})
    assert status == 422
    assert "535" in data["upstream_reply"] and "5.7.8" in data["upstream_reply"]
    assert "Username and Password not accepted" in data["upstream_reply"]
    accts = {x["address"]: x for x in a.json("GET", "/api/v1/accounts")[1]["accounts"]}
    assert accts[DEFAULT_ACCOUNT]["version"] == 2
    # Mail goes out with the new credential.
    send_mail(d)
    assert gmail.auth_attempts[-1].password == NEW_PW
    # Without verification, then back.
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": "mmmmnnnnoooopppp", "verify": False})
    assert status == 200 and data["version"] == 3 and data["verified"] is False
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rollback")
    assert status == 200 and data["version"] == 2
    status, data = a.json("POST", f"/api/v1/accounts/{new}/rollback")
    assert status == 409
    status, data = a.json("DELETE", f"/api/v1/accounts/{new}")
    assert status == 200 and data["removed"] is True
    accts = [x["address"] for x in a.json("GET", "/api/v1/accounts")[1]["accounts"]]
    assert accts == [DEFAULT_ACCOUNT]
    # The CLI sees the same vault.
    rc, out, err = d.cli("account", "list", "--json")
    listed = json.loads(out)
    assert [x["address"] for x in listed] == [DEFAULT_ACCOUNT] and listed[0]["version"] == 2
    # Every change is audited by the admin, with the address it came from.
    acct_events = [e for e in audit_lines(d) if e["event"] == "account"
                   and e["by"].startswith("admin:")]
    assert [(e["action"], e["account"], e["version"]) for e in acct_events] == [
        ("add", new, 1), ("rotate", DEFAULT_ACCOUNT, 2), ("rotate", DEFAULT_ACCOUNT, 3),
        ("rollback", DEFAULT_ACCOUNT, 2), ("remove", new, 1)]
    assert all(e["by"] == f"admin:{ADMIN}" and e["ip"] == "127.0.0.1" for e in acct_events)
    with open(d.audit) as f:
        text = f.read()
    for pw in (NEW_PW, "zzzzzzzzzzzzzzzz", "mmmmnnnnoooopppp", "abcdabcdabcdabcd"):
        assert pw not in text and pw not in d.log()
    assert d.cli("audit", "verify")[0] == 0


def test_account_routes_bad_json_and_unknown_account(admin_daemon):
    d, a = admin_daemon
    for path in ("/api/v1/accounts", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate"):
        for raw in (b"{", b"not json", b"[1]", b"{}x", b'{"password": 5}', b"",
                    b'{"password": "abcdabcdabcdabcd", "verify": "yes"}',
                    b'{"password": "abcdabcdabcdabcd", "bogus": 1}',
                    b"[" * 40 + b"]" * 40, b'{"a":' * 40 + b"1" + b"}" * 40):
            status, _, _ = a.request("POST", path, raw=raw)
            assert status == 400, (path, raw)
    status, _, _ = a.request("POST", "/api/v1/accounts", raw=b"{}", ctype="text/plain")
    assert status == 415
    for method, path, body in (
            ("POST", "/api/v1/accounts/nobody@example.com/rotate", {"password": NEW_PW}),
            ("POST", "/api/v1/accounts/nobody@example.com/rollback", None),
            ("DELETE", "/api/v1/accounts/nobody@example.com", None),
            ("DELETE", "/api/v1/accounts/nobody%40example.com", None)):
        status, data = a.json(method, path, body)
        assert status == 404, (method, path, data)
    # Percent-encoded addresses work; broken encodings are 400.
    status, _ = a.json("POST", "/api/v1/accounts/team%40example.com/rotate",
                       {"password": NEW_PW, "verify": False})
    assert status == 200
    assert a.json("DELETE", "/api/v1/accounts/team%4")[0] == 400
    assert a.json("DELETE", "/api/v1/accounts/team%00x")[0] == 400


# ---- audit -----------------------------------------------------------------

def test_audit_filters_paging_and_csv(admin_daemon):
    d, a = admin_daemon
    for i in range(3):
        send_mail(d, subject=f"report {i}", rcpt=f"r{i}@example.org")
    send_mail(d, subject="=HYPERLINK(\"http://evil\")", rcpt="x@example.org")
    status, data = a.json("GET", f"/api/v1/audit?event=message&account={DEFAULT_ACCOUNT}")
    assert status == 200
    subjects = [e["subject"] for e in data["entries"]]
    assert subjects == ['=HYPERLINK("http://evil")', "report 2", "report 1", "report 0"]
    assert all(e["status"] == "delivered" for e in data["entries"])
    assert data["next_cursor"] is None
    # Paging: newest first, a cursor for the rest, no overlap.
    status, p1 = a.json("GET", "/api/v1/audit?event=message&limit=3")
    assert len(p1["entries"]) == 3 and p1["next_cursor"]
    status, p2 = a.json("GET", f"/api/v1/audit?event=message&limit=3&cursor={p1['next_cursor']}")
    assert [e["subject"] for e in p2["entries"]] == ["report 0"] and p2["next_cursor"] is None
    # Filters.
    assert len(a.json("GET", "/api/v1/audit?sender=nobody%40x")[1]["entries"]) == 0
    assert len(a.json("GET", f"/api/v1/audit?sender={DEFAULT_ACCOUNT}")[1]["entries"]) == 4
    assert len(a.json("GET", "/api/v1/audit?client=127.0.0.1&event=message")[1]["entries"]) == 4
    assert len(a.json("GET", "/api/v1/audit?status=failed")[1]["entries"]) == 0
    assert len(a.json("GET", "/api/v1/audit?since=1h&event=message")[1]["entries"]) == 4
    assert len(a.json("GET", "/api/v1/audit?until=2000-01-01&event=message")[1]["entries"]) == 0
    assert len(a.json("GET", "/api/v1/audit?account=*%40example.com&event=message")[1]
               ["entries"]) == 4
    for bad in ("since=yesterday", "until=x", "limit=0", "limit=100000", "cursor=abc",
                "account=%zz"):
        assert a.json("GET", "/api/v1/audit?" + bad)[0] == 400, bad
    # CSV of the same filter, safe for spreadsheets.
    status, headers, body = a.request("GET", "/api/v1/audit.csv?event=message")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    lines = body.decode().split("\r\n")
    assert lines[0].startswith("ts,event,queue_id,status,account")
    assert len([x for x in lines if x]) == 5
    assert '"\'=HYPERLINK(""http://evil"")"' in body.decode()
    assert a.json("GET", "/api/v1/audit.csv?since=nonsense")[0] == 400


# ---- queue -------------------------------------------------------------------

def test_queue_routes_in_direct_mode(admin_daemon):
    d, a = admin_daemon
    status, data = a.json("GET", "/api/v1/queue")
    assert status == 200 and data["mode"] == "direct" and data["messages"] == []
    assert a.json("POST", "/api/v1/queue/NOPE1/retry")[0] == 404
    assert a.json("DELETE", "/api/v1/queue/NOPE1")[0] == 404


# ---- limits and garbage ------------------------------------------------------

def test_request_limits_and_garbage_never_crash(admin_daemon):
    d, a = admin_daemon
    big = b'{"password":"' + b"a" * (70 * 1024) + b'"}'
    status, _, _ = a.request("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate", raw=big)
    assert status == 413
    status, _, _ = a.request("GET", "/api/v1/audit?account=" + "a" * 5000)
    assert status in (414, 400)
    # Chunked body over the limit (no Content-Length to refuse early).
    s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=10)
    chunk = b"a" * 8192
    req = (f"POST /api/v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {a.cookie}\r\n"
           f"X-CSRF-Token: {a.csrf}\r\nContent-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\n").encode()
    s.sendall(req)
    try:
        for _ in range(10):
            s.sendall(b"2000\r\n" + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    reply = s.recv(4096)
    s.close()
    assert reply.startswith(b"HTTP/1.1 413")
    junk = [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
            b"GET /" + b"x" * 200000 + b" HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 300000 + b"\r\n\r\n",
            b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"]
    for j in junk:
        s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=10)
        try:
            s.sendall(j)
            s.recv(1024)
        except OSError:
            pass
        s.close()
    assert a.json("GET", "/healthz")[0] == 200
    assert d.proc.poll() is None


def test_per_ip_connection_limit(admin_daemon):
    d, a = admin_daemon
    held = []
    try:
        for _ in range(16):
            held.append(socket.create_connection(("127.0.0.1", d.admin_port), timeout=5))
        extra = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = extra.recv(1024)
        except OSError:
            data = b""
        extra.close()
        assert data == b""          # closed without an answer
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert a.json("GET", "/healthz")[0] == 200
