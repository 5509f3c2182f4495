"""test_audit.py: the audit log of SPEC section 7 and issue 4, through the
running daemon and the real CLI.

Every event type comes from a real flow (delivered, deferred, failed,
refused client, refused sender, rotation, refused credential) and is checked
field by field; `audit verify` must find each kind of tampering at the right
line; and no file written by the daemon or the CLI may hold a secret.
"""

import base64
import json
import os
import re
import signal
import smtplib
import time

import pytest

from conftest import DEFAULT_ACCOUNT, DEFAULT_PASSWORD, Account, child_env

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
QUEUED_AS = re.compile(r"(?:delivered|queued) as ([A-Za-z0-9]+)")


def read_log(d):
    with open(d.audit, "rb") as f:
        raw = f.read()
    assert raw.endswith(b"\n") or raw == b""
    return [json.loads(line) for line in raw.decode("ascii").splitlines()]


def events(d, kind, **match):
    return [e for e in read_log(d) if e["event"] == kind and
            all(e.get(k) == v for k, v in match.items())]


def wait_event(d, kind, timeout=5.0, **match):
    deadline = time.monotonic() + timeout
    while True:
        found = events(d, kind, **match)
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {kind} event matching {match}; log:\n" +
                        "\n".join(json.dumps(e) for e in read_log(d)))
        time.sleep(0.05)


def message(subject="audit test", frm=DEFAULT_ACCOUNT, msgid="<audit-1@test.lan>"):
    return (f"From: Team <{frm}>\r\nTo: someone@example.net\r\n"
            f"Subject: {subject}\r\nMessage-ID: {msgid}\r\n\r\nhello\r\n")


def send(d, frm=DEFAULT_ACCOUNT, rcpts=("someone@example.net",), body=None, helo="printer-3"):
    """Send one message with raw SMTP; return (code, text) of the reply to the dot."""
    with d.smtp() as s:
        s.ehlo(helo)
        code, text = s.mail(frm)
        assert code == 250, text
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, text
        code, text = s.data((body or message(frm=frm)).encode())
        return code, text.decode()


def check_chain(lines):
    prev = "0" * 64
    for e in lines:
        assert HEX64.match(e["mac"]) and e["prev"] == prev
        prev = e["mac"]


# ---- message events -------------------------------------------------------

def test_delivered_message_event_fields(daemon, gmail):
    d = daemon()
    code, text = send(d, rcpts=("a@example.net", "b@example.net"),
                      body=message(subject="Quarterly report", msgid="<q1@printer.lan>"))
    assert code == 250, text
    qid = QUEUED_AS.search(text).group(1)
    e = wait_event(d, "message", queue_id=qid)[-1]
    assert TS.match(e["ts"])
    assert e["client_ip"] == "127.0.0.1"
    assert e["client_name"] == "lan"
    assert e["helo"] == "printer-3"
    assert e["mail_from"] == DEFAULT_ACCOUNT
    assert e["rcpt_to"] == ["a@example.net", "b@example.net"]
    assert e["header_from"] == f"Team <{DEFAULT_ACCOUNT}>"
    assert e["subject"] == "Quarterly report"
    assert e["message_id"] == "<q1@printer.lan>"
    assert e["account"] == DEFAULT_ACCOUNT
    assert e["credential_version"] == 1
    assert e["status"] == "delivered"
    assert e["upstream_reply"].startswith("250 ") and "gsmtp" in e["upstream_reply"]
    assert e["attempt"] == 1
    assert isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0
    # The size is that of what went upstream: the client's bytes plus Received:.
    assert e["size"] == len(gmail.delivered[-1].data)
    check_chain(read_log(d))
    rc, out, err = d.cli("audit", "verify")
    assert rc == 0, err
    assert re.search(r"audit log OK: \d+ entries checked", out)


def test_deferred_and_failed_message_events(daemon, gmail):
    d = daemon()
    gmail.script("MESSAGE", "temp_rejected")
    code, text = send(d)
    assert code == 451
    deferred = wait_event(d, "message", status="deferred")[-1]
    assert deferred["upstream_reply"].startswith("451 4.3.0")
    gmail.script("MESSAGE", "malformed")
    code, text = send(d)
    assert code == 554
    failed = wait_event(d, "message", status="failed")[-1]
    assert failed["upstream_reply"].startswith("554 5.6.0")
    assert failed["queue_id"] != deferred["queue_id"]
    assert d.cli("audit", "verify")[0] == 0


def test_log_subject_no(daemon):
    d = daemon(audit={"log_subject": "no"})
    code, text = send(d, body=message(subject="salary list"))
    assert code == 250
    e = wait_event(d, "message", status="delivered")[-1]
    assert e["subject"] is None
    with open(d.audit) as f:
        assert "salary list" not in f.read()


def test_hostile_client_strings_stay_one_escaped_line(daemon):
    d = daemon()
    subject = 'he said "hi" <script>alert(1)</script> \\ \u00fc'
    body = message(subject=subject).encode("utf-8")
    with d.smtp() as s:
        s.ehlo("evil<script>")
        assert s.mail(DEFAULT_ACCOUNT)[0] == 250
        assert s.rcpt("x@example.net")[0] == 250
        code, _ = s.data(body)
    assert code == 250
    with open(d.audit, "rb") as f:
        raw = f.read()
    lines = raw.decode("ascii").splitlines()       # the log is pure ASCII
    e = [json.loads(x) for x in lines if '"message"' in x][-1]
    assert e["subject"] == subject
    assert len(lines) == len(read_log(d))
    assert d.cli("audit", "verify")[0] == 0


# ---- refusals -------------------------------------------------------------

def test_untrusted_client_reject_event(daemon):
    d = daemon()
    s = smtplib.SMTP(timeout=10)
    s.source_address = ("127.0.0.2", 0)
    code, text = s.connect(d.host, d.port)
    s.close()
    assert code == 554
    e = wait_event(d, "reject", client_ip="127.0.0.2")[-1]
    assert e["command"] == "CONNECT"
    assert "not in any" in e["reason"]


def test_refused_sender_reject_event(daemon):
    extra = ('[client "printers"]\nnetworks = 127.0.0.1/32\n'
             f'account = {DEFAULT_ACCOUNT}\nsenders = *@printers.example.com\n')
    d = daemon(extra=extra)
    with d.smtp() as s:
        s.ehlo("printer-9")
        code, _ = s.mail("intruder@elsewhere.example")
    assert code == 550
    e = wait_event(d, "reject", client_name="printers")[-1]
    assert e["mail_from"] == "intruder@elsewhere.example"
    assert e["command"] == "MAIL"
    assert e["client_ip"] == "127.0.0.1"


def test_too_many_recipients_reject_event(daemon):
    d = daemon(smtp={"max_recipients": "2"})
    with d.smtp() as s:
        s.ehlo("cron")
        assert s.mail(DEFAULT_ACCOUNT)[0] == 250
        assert s.rcpt("a@example.net")[0] == 250
        assert s.rcpt("b@example.net")[0] == 250
        assert s.rcpt("c@example.net")[0] == 452
    e = wait_event(d, "reject", command="RCPT")[-1]
    assert e["mail_from"] == DEFAULT_ACCOUNT


# ---- account events -------------------------------------------------------

def test_cli_account_events(daemon):
    d = daemon()
    rc, out, err = d.cli("account", "rotate", DEFAULT_ACCOUNT, "--no-verify",
                         input="qrstuvwxyzabcdef\n")
    assert rc == 0, err
    assert d.cli("account", "rollback", DEFAULT_ACCOUNT)[0] == 0
    assert d.cli("account", "remove", DEFAULT_ACCOUNT)[0] == 0
    acts = [(e["action"], e["version"]) for e in events(d, "account", account=DEFAULT_ACCOUNT)]
    assert acts == [("add", 1), ("rotate", 2), ("rollback", 1), ("remove", 1)]
    for e in events(d, "account"):
        assert e["by"].startswith("cli:")
    assert d.cli("audit", "verify")[0] == 0


def test_refused_credential_event_and_flag(daemon, gmail):
    d = daemon(accounts=[Account(DEFAULT_ACCOUNT, upstream_password="somethingelse1234")])
    code, text = send(d)
    assert code == 451 and "4.7.0" in text
    e = wait_event(d, "account", action="auth_failed")[-1]
    assert e["account"] == DEFAULT_ACCOUNT and e["version"] == 1 and e["by"] == "daemon"
    assert "535" in e["upstream_reply"]
    # The flag is in the vault, so the CLI sees it.
    deadline = time.monotonic() + 5
    while True:
        rc, out, err = d.cli("account", "list", "--json")
        assert rc == 0, err
        if json.loads(out)[0]["status"] == "auth_failed":
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.1)
    msg = wait_event(d, "message", status="deferred")[-1]
    assert "535" in msg["upstream_reply"]


# ---- tampering ------------------------------------------------------------

@pytest.fixture
def five_line_log(daemon):
    d = daemon()
    for i in range(4):
        assert send(d, body=message(msgid=f"<t{i}@x>"))[0] == 250
    wait_event(d, "message", message_id="<t3@x>")
    d.stop()
    with open(d.audit, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    assert len(lines) == 5          # the account add, then four messages
    assert d.cli("audit", "verify")[0] == 0
    return d, lines


def verify_after(d, lines, tail=None):
    with open(d.audit, "wb") as f:
        f.write(b"".join(lines) + (tail or b""))
    rc, out, err = d.cli("audit", "verify")
    return rc, out + err


def test_tamper_edit_field(five_line_log):
    d, lines = five_line_log
    lines[2] = lines[2].replace(b'"status":"delivered"', b'"status":"failed"')
    rc, text = verify_after(d, lines)
    assert rc == 1 and "line 3" in text and "edited" in text


def test_tamper_delete_line(five_line_log):
    d, lines = five_line_log
    del lines[2]
    rc, text = verify_after(d, lines)
    assert rc == 1 and "line 3" in text and "deleted" in text


def test_tamper_insert_forged_line(five_line_log):
    d, lines = five_line_log
    forged = json.loads(lines[1])
    forged["mail_from"] = "ceo@example.com"
    lines.insert(2, (json.dumps(forged, separators=(",", ":")) + "\n").encode())
    rc, text = verify_after(d, lines)
    assert rc == 1 and "line 3" in text and "forged" in text


def test_tamper_swap_lines(five_line_log):
    d, lines = five_line_log
    lines[2], lines[3] = lines[3], lines[2]
    rc, text = verify_after(d, lines)
    assert rc == 1 and "line 3" in text and ("reordered" in text or "deleted" in text)


def test_tamper_truncate_mid_line(five_line_log):
    d, lines = five_line_log
    cut = lines[:4] + [lines[4][:40]]
    rc, text = verify_after(d, cut)
    assert rc == 1 and "line 5" in text and "truncated" in text


# ---- the audit log is required --------------------------------------------

def test_unwritable_audit_log_means_no_250(daemon, gmail):
    """A file-size limit just above the log's size makes the next audit write
    fail (EFBIG): the client must get 451 4.3.0, never a 250, and nothing
    more is sent upstream once the log is known to be broken."""
    import resource
    import subprocess
    d = daemon(start=False)
    limit = os.path.getsize(d.audit) + 64

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    proc = subprocess.Popen([d.binary, "-c", d.conf, "serve"], stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=small_files, env=child_env())
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = smtplib.SMTP(d.host, d.port, timeout=10)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        codes = []
        for _ in range(2):
            s.ehlo("x")
            assert s.mail(DEFAULT_ACCOUNT)[0] == 250
            assert s.rcpt("x@example.net")[0] == 250
            code, text = s.data(message().encode())
            codes.append((code, text))
        s.quit()
        for code, text in codes:
            assert code == 451 and b"4.3.0" in text, (code, text)
        # The first went upstream before its event failed; the second not.
        assert len(gmail.delivered) == 1
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"event=audit_failed" in err


# ---- no secret anywhere ---------------------------------------------------

def secret_forms(secret):
    b = secret.encode()
    forms = {b, b.hex().encode(), b.hex().upper().encode()}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(enc(b).rstrip(b"="))
    # AUTH PLAIN's payload form too.
    forms.add(base64.b64encode(b"\0" + DEFAULT_ACCOUNT.encode() + b"\0" + b).rstrip(b"="))
    return forms


def test_secrets_sweep(daemon, gmail):
    new_pw = "zyxwvutsrqponmlk"
    admin_pw = "admin-pass-Xq93!"
    d = daemon()
    assert send(d)[0] == 250
    gmail.passwords[DEFAULT_ACCOUNT] = new_pw
    assert d.cli("account", "rotate", DEFAULT_ACCOUNT, "--no-verify", input=new_pw + "\n")[0] == 0
    assert d.cli("admin-user", "add", "alice", input=admin_pw + "\n")[0] == 0
    time.sleep(2.5)                       # the daemon picks up the rotation
    assert send(d)[0] == 250
    gmail.script("AUTH", "bad_credentials")
    d.cli("account", "test", DEFAULT_ACCOUNT)
    d.stop()
    needles = set()
    for s in (DEFAULT_PASSWORD, new_pw, admin_pw):
        needles |= secret_forms(s)
    checked = 0
    for root, _, files in os.walk(d.tmp):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            checked += 1
            for n in needles:
                assert n not in data, f"{path} holds a secret ({n[:4]!r}...)"
    assert checked >= 4                    # vault, key, audit log, stderr at least



# ---- nobody left to answer -------------------------------------------------

def test_front_end_gone_after_the_dot_is_still_audited(daemon, gmail):
    """Direct mode: the message has gone upstream, the upstream answers late,
    and meanwhile the front end dies (its link to the relay closes, which
    cancels every message in flight). The relay must not cut the upstream
    session and leave a delivered message unrecorded: the delivery finishes
    while the daemon stops, and its event is written."""
    d = daemon()
    gmail.script("MESSAGE", "message_ok", delay=1.0)
    s = d.smtp()
    s.ehlo("printer-3")
    assert s.mail(DEFAULT_ACCOUNT)[0] == 250
    assert s.rcpt("someone@example.net")[0] == 250
    s.putcmd("data")
    assert s.getreply()[0] == 354
    s.send(message(subject="front end gone", msgid="<gone-1@test.lan>").encode() + b".\r\n")
    gmail.wait_for(lambda: gmail.messages, what="the message reaches the upstream")
    os.kill(d.pids()["smtp"], signal.SIGKILL)
    s.close()
    try:
        rc = d.proc.wait(30)
    except Exception:
        pytest.fail(f"the daemon did not exit; stderr:\n{d.log()}")
    assert rc > 0, rc
    d.proc = None           # ended already: not the fixture's to stop
    assert len(gmail.delivered) == 1
    e = events(d, "message", message_id="<gone-1@test.lan>")
    assert e, "no event for a message the upstream took:\n" + d.log()
    assert e[-1]["status"] == "delivered"
    assert e[-1]["upstream_reply"].startswith("250 ")
    assert d.cli("audit", "verify")[0] == 0
