"""test_queue.py: delivery = queue (SPEC section 4, issue 5), end to end.

The daemon runs in queue mode against the fake Gmail (fakegmail.py) with a
one-second retry schedule. A message must be durable (spool file and
"queued" audit event) before its 250; it must survive kill -9 of the daemon
and arrive upstream exactly once (at most twice, when the kill fell between
the upstream's reply and the spool update); temporary upstream failures are
retried, permanent ones land in failed/; a refused credential holds only
its own account until a rotation; the daily limits hold the message that
would exceed them; more than 100 recipients go out as several transactions
but are audited as one message. Disk faults are injected with a small
LD_PRELOAD shim compiled here: never a 250 for a message that is not on
disk.
"""

import collections
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import DEFAULT_ACCOUNT, DEFAULT_PASSWORD, Account

OTHER = "ops@example.com"
OTHER_PASSWORD = "qrstuvwxyzabcdef"
RCPT = "bob@example.org"
QUEUED_AS = re.compile(r"queued as ([0-9A-Z]+)")
WAIT = 15.0

QUEUE_SMTP = {"delivery": "queue", "max_recipients": "200"}
FAST_UPSTREAM = {"retry_schedule": "1s", "timeout": "2s"}


def qdaemon(daemon, accounts=(DEFAULT_ACCOUNT,), smtp=None, upstream=None, **kw):
    return daemon(accounts=accounts, smtp={**QUEUE_SMTP, **(smtp or {})},
                  upstream={**FAST_UPSTREAM, **(upstream or {})}, **kw)


def body(msgid, subject="queue test", frm=DEFAULT_ACCOUNT):
    return (f"From: Team <{frm}>\r\nTo: Bob <{RCPT}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{msgid}>\r\n\r\nHello from the queue.\r\n").encode()


def send(d, msgid, frm=DEFAULT_ACCOUNT, rcpts=(RCPT,), data=None):
    """One message; (code, text) of the reply to the final dot."""
    with d.smtp() as s:
        s.ehlo("printer.lan")
        code, text = s.mail(frm)
        assert code == 250, text
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, text
        code, text = s.data(data if data is not None else body(msgid, frm=frm))
        return code, text.decode()


def send_ok(d, msgid, **kw):
    code, text = send(d, msgid, **kw)
    assert code == 250, text
    m = QUEUED_AS.search(text)
    assert m, text
    return m.group(1)


def msgid_of(m):
    found = re.search(rb"(?im)^Message-ID:\s*<([^>]+)>", m.data)
    return found.group(1).decode() if found else None


def delivered_ids(gmail):
    return [msgid_of(m) for m in gmail.delivered]


def wait_delivered(gmail, msgid, timeout=WAIT):
    return gmail.wait_for(lambda: [m for m in gmail.delivered if msgid_of(m) == msgid],
                          timeout=timeout, what=f"delivery of {msgid}")


def audit_events(d, queue_id=None):
    try:
        with open(d.audit) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [e for e in lines if e["event"] == "message" and
            (queue_id is None or e.get("queue_id") == queue_id)]


def wait_for(pred, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def queue_list(d):
    rc, out, err = d.cli("queue", "list", "--json")
    assert rc == 0, err
    return json.loads(out)


def spool_files(d, area="queue"):
    try:
        return sorted(os.listdir(os.path.join(d.spool, area)))
    except FileNotFoundError:
        return []


# ---- the basic path --------------------------------------------------------

def test_queued_then_delivered_with_two_audit_events(daemon, gmail):
    d = qdaemon(daemon)
    qid = send_ok(d, "basic-1@test.lan")
    m = wait_delivered(gmail, "basic-1@test.lan")[0]
    assert m.auth_user == DEFAULT_ACCOUNT and m.rcpts == [RCPT]
    assert m.data.startswith(b"Received:") and b"Hello from the queue." in m.data
    evs = wait_for(lambda: len(audit_events(d, qid)) >= 2 and audit_events(d, qid),
                   what="two audit events")
    assert [e["status"] for e in evs] == ["queued", "delivered"]
    assert [e["attempt"] for e in evs] == [0, 1]
    assert evs[0]["credential_version"] is None
    assert evs[1]["credential_version"] == 1
    assert evs[1]["upstream_reply"].startswith("250 2.0.0 OK")
    assert evs[0]["message_id"] == "<basic-1@test.lan>" and evs[0]["rcpt_to"] == [RCPT]
    wait_for(lambda: spool_files(d) == [], what="an empty spool")
    assert queue_list(d) == []



# ---- temporary and permanent upstream failures -----------------------------

def _fault_greeting(gmail):
    gmail.script("CONNECT", "try_again")            # 421 4.7.0, then close


def _fault_451(gmail):
    gmail.script("MESSAGE", "temp_rejected")        # 451 4.3.0 to the final dot


def _fault_timeout(gmail):
    gmail.script("MAIL", "mail_ok", delay=4)        # past [upstream] timeout = 2s


def _fault_drop_in_data(gmail):
    gmail.drop_in_data = 64                         # connection cut inside DATA


def _fault_drop_after_dot(gmail):
    gmail.script("MESSAGE", None)                   # no reply to the final dot


@pytest.mark.parametrize("fault", [_fault_greeting, _fault_451, _fault_timeout,
                                   _fault_drop_in_data, _fault_drop_after_dot],
                         ids=["421-greeting", "451-message", "timeout",
                              "drop-in-data", "drop-after-dot"])
def test_temporary_failure_is_retried_and_delivered(daemon, gmail, fault):
    d = qdaemon(daemon)
    fault(gmail)
    qid = send_ok(d, "retry-1@test.lan")
    if gmail.drop_in_data:
        gmail.wait_for(lambda: [m for m in gmail.messages if not m.complete],
                       what="a message cut inside DATA")
        gmail.drop_in_data = None
    wait_delivered(gmail, "retry-1@test.lan")
    evs = wait_for(lambda: [e for e in audit_events(d, qid)
                            if e["status"] == "delivered"] and audit_events(d, qid),
                   what="the delivered event")
    assert [e["status"] for e in evs] == ["queued", "deferred", "delivered"], evs
    assert [e["attempt"] for e in evs] == [0, 1, 2]
    assert evs[1]["upstream_reply"], evs[1]
    wait_for(lambda: spool_files(d) == [], what="an empty spool")


def test_permanent_failure_goes_to_failed_and_retry_brings_it_back(daemon, gmail):
    d = qdaemon(daemon)
    gmail.script("MESSAGE", "malformed")            # 554 5.6.0
    qid = send_ok(d, "perm-1@test.lan")
    wait_for(lambda: qid in spool_files(d, "failed"), what="the message in failed/")
    assert qid not in spool_files(d)
    [entry] = queue_list(d)
    assert entry["id"] == qid and entry["status"] == "failed"
    assert entry["last_reply"].startswith("554 5.6.0"), entry
    assert entry["attempts"] == 1 and entry["next_attempt"] is None
    evs = audit_events(d, qid)
    assert [e["status"] for e in evs] == ["queued", "failed"]
    assert evs[1]["upstream_reply"].startswith("554 5.6.0")
    time.sleep(1.5)                                 # failed is final: no retry by itself
    assert len(gmail.messages) == 1
    rc, out, err = d.cli("queue", "retry", qid)
    assert rc == 0, err
    wait_delivered(gmail, "perm-1@test.lan")
    evs = wait_for(lambda: len(audit_events(d, qid)) == 3 and audit_events(d, qid),
                   what="the third event")
    assert [(e["status"], e["attempt"]) for e in evs][-1] == ("delivered", 2)
    wait_for(lambda: spool_files(d, "failed") == [] and spool_files(d) == [],
             what="an empty spool")


# ---- holds: credential, quota, Google's daily limit ------------------------

def test_refused_credential_holds_its_account_until_rotation(daemon, gmail):
    d = qdaemon(daemon, accounts=[
        Account(DEFAULT_ACCOUNT, password="wrongwrongwrongw", upstream_password=DEFAULT_PASSWORD),
        Account(OTHER, password=OTHER_PASSWORD)])
    held = [send_ok(d, f"held-{i}@test.lan") for i in range(2)]
    send_ok(d, "other-1@test.lan", frm=OTHER)
    wait_delivered(gmail, "other-1@test.lan")
    entries = wait_for(lambda: [e for e in queue_list(d) if e["status"] == "held"]
                       if sorted(e["id"] for e in queue_list(d) if e["status"] == "held") ==
                       sorted(held) else None, what="both messages held")
    assert all("credential" in e["hold_reason"] for e in entries), entries
    # Several retry periods pass: no new login attempts (no 454 lockout).
    time.sleep(2.5)
    tries = [a for a in gmail.auth_attempts if a.user == DEFAULT_ACCOUNT]
    assert 1 <= len(tries) <= 3, tries          # at most one per session slot
    assert not any(a.success for a in tries)
    # The other account keeps flowing meanwhile.
    send_ok(d, "other-2@test.lan", frm=OTHER)
    wait_delivered(gmail, "other-2@test.lan")
    assert not [m for m in gmail.delivered if m.auth_user == DEFAULT_ACCOUNT]
    # Rotation releases the hold by itself.
    rc, out, err = d.cli("account", "rotate", DEFAULT_ACCOUNT, "--no-verify",
                         input=DEFAULT_PASSWORD + "\n")
    assert rc == 0, err
    for i in range(2):
        wait_delivered(gmail, f"held-{i}@test.lan")
    evs = audit_events(d, held[0])
    assert [e["status"] for e in evs] == ["queued", "deferred", "delivered"], evs
    assert evs[1]["upstream_reply"].startswith("535"), evs[1]
    assert evs[1]["credential_version"] == 1 and evs[2]["credential_version"] == 2


def test_daily_limit_of_five_lets_five_through_and_holds_the_sixth(daemon, gmail):
    d = qdaemon(daemon, accounts=[Account(DEFAULT_ACCOUNT, args=["--daily-limit", "5"])])
    ids = [send_ok(d, f"quota-{i}@test.lan") for i in range(6)]
    gmail.wait_for(lambda: len(gmail.delivered) == 5, what="five deliveries")
    time.sleep(1.5)
    assert sorted(delivered_ids(gmail)) == sorted(f"quota-{i}@test.lan" for i in range(5))
    [entry] = queue_list(d)
    assert entry["id"] == ids[5] and entry["status"] == "held", entry
    assert "daily limit of 5 messages" in entry["hold_reason"], entry
    assert [e["status"] for e in audit_events(d, ids[5])] == ["queued"]
    assert spool_files(d) == [ids[5]]
    # A restart remembers what was sent (the sent log in the spool).
    assert d.stop() == 0
    d.start()
    time.sleep(1.5)
    assert len(gmail.delivered) == 5
    wait_for(lambda: [e["status"] for e in queue_list(d)] == ["held"], what="still held")


def test_google_daily_limit_reply_holds_the_account(daemon, gmail):
    d = qdaemon(daemon)
    gmail.script("MESSAGE", "daily_limit")          # 550 5.4.5
    first = send_ok(d, "limit-1@test.lan")
    wait_for(lambda: [e for e in queue_list(d) if e["status"] == "held"],
             what="the account held")
    second = send_ok(d, "limit-2@test.lan")
    time.sleep(1.5)
    assert len(gmail.messages) == 1                 # the second was not even tried
    entries = {e["id"]: e for e in queue_list(d)}
    assert entries[first]["last_reply"].startswith("550 5.4.5"), entries
    assert entries[second]["status"] == "held"
    assert "5.4.5" in entries[second]["hold_reason"]
    assert [e["status"] for e in audit_events(d, first)] == ["queued", "deferred"]
    rc, out, err = d.cli("queue", "retry", "--all")
    assert rc == 0, err
    wait_delivered(gmail, "limit-1@test.lan")
    wait_delivered(gmail, "limit-2@test.lan")


def test_150_recipients_are_two_transactions_and_one_audit_event(daemon, gmail):
    d = qdaemon(daemon)
    rcpts = [f"r{i:03d}@example.org" for i in range(150)]
    qid = send_ok(d, "many@test.lan", rcpts=rcpts)
    msgs = gmail.wait_for(lambda: len(gmail.delivered) == 2 and gmail.delivered,
                          what="two upstream transactions")
    assert sorted(len(m.rcpts) for m in msgs) == [50, 100]
    assert sorted(msgs[0].rcpts + msgs[1].rcpts) == rcpts
    assert msgs[0].data == msgs[1].data
    evs = wait_for(lambda: len(audit_events(d, qid)) == 2 and audit_events(d, qid),
                   what="two events")
    assert [e["status"] for e in evs] == ["queued", "delivered"]
    assert evs[1]["rcpt_to"] == rcpts and evs[1]["attempt"] == 1
    assert "transaction 1/2" in evs[1]["upstream_reply"]
    assert "transaction 2/2" in evs[1]["upstream_reply"]


def test_split_message_retries_only_the_undelivered_recipients(daemon, gmail):
    d = qdaemon(daemon)
    rcpts = [f"s{i:03d}@example.org" for i in range(120)]
    gmail.script("MESSAGE", "temp_rejected")        # one of the two transactions
    qid = send_ok(d, "split@test.lan", rcpts=rcpts)
    gmail.wait_for(lambda: len(gmail.delivered) == 2, timeout=WAIT, what="both parts")
    got = sorted(r for m in gmail.delivered for r in m.rcpts)
    assert got == rcpts                              # each recipient exactly once
    evs = wait_for(lambda: len(audit_events(d, qid)) == 3 and audit_events(d, qid),
                   what="three events")
    assert [e["status"] for e in evs] == ["queued", "deferred", "delivered"]
    assert all(e["rcpt_to"] == rcpts for e in evs)


# ---- the queue command -----------------------------------------------------

def held_daemon(daemon):
    """A daemon whose account's credential the fake refuses: messages stay."""
    return qdaemon(daemon, accounts=[
        Account(DEFAULT_ACCOUNT, password="wrongwrongwrongw", upstream_password=DEFAULT_PASSWORD)])


def test_queue_list_retry_delete_while_the_daemon_runs(daemon, gmail):
    d = held_daemon(daemon)
    a = send_ok(d, "cli-a@test.lan")
    b = send_ok(d, "cli-b@test.lan", rcpts=(RCPT, "carol@example.org"))
    wait_for(lambda: sorted(e["id"] for e in queue_list(d) if e["status"] == "held") ==
             sorted([a, b]), what="both held")
    entries = {e["id"]: e for e in queue_list(d)}
    e = entries[b]
    assert e["account"] == DEFAULT_ACCOUNT and e["from"] == DEFAULT_ACCOUNT
    assert e["rcpts"] == [RCPT, "carol@example.org"]
    assert e["size"] > 0 and e["age"] >= 0
    # The first attempt met the 535; one that came after waits untried.
    tried = [x for x in entries.values() if x["attempts"] >= 1]
    assert tried and all(x["last_reply"].startswith("535") for x in tried), entries
    rc, out, err = d.cli("queue", "list")
    assert rc == 0, err
    assert "STATUS" in out and a in out and b in out and "held" in out
    # delete: gone from the list, the spool and never delivered; audited
    rc, out, err = d.cli("queue", "delete", a)
    assert rc == 0, err
    assert a not in [e["id"] for e in queue_list(d)]
    assert a not in spool_files(d)
    ev = audit_events(d, a)[-1]
    assert ev["status"] == "failed" and "deleted from the queue by cli:" in ev["upstream_reply"]
    rc, out, err = d.cli("queue", "delete", a)
    assert rc == 1 and "no such message" in err
    rc, out, err = d.cli("queue", "retry", "ZZZZZZZZZZZZZZZZ")
    assert rc == 1, (out, err)
    for args in (("retry",), ("retry", a, "--all"), ("delete", "../etc/passwd"),
                 ("delete",), ("frob",), ("list", "--bogus"), ()):
        rc, out, err = d.cli("queue", *args)
        assert rc == 2, (args, rc, out, err)
        assert len(err.strip().splitlines()) == 1, err
    # retry: the credential was fixed upstream (no rotation): retry releases
    gmail.passwords[DEFAULT_ACCOUNT] = "wrongwrongwrongw"
    rc, out, err = d.cli("queue", "retry", b)
    assert rc == 0, err
    wait_delivered(gmail, "cli-b@test.lan")
    assert "cli-a@test.lan" not in delivered_ids(gmail)
    wait_for(lambda: queue_list(d) == [], what="an empty queue")


def test_queue_command_without_the_daemon(daemon, gmail):
    d = held_daemon(daemon)
    a = send_ok(d, "off-a@test.lan")
    b = send_ok(d, "off-b@test.lan")
    wait_for(lambda: len([e for e in queue_list(d) if e["status"] == "held"]) == 2,
             what="both held")
    assert d.stop() == 0
    assert not os.path.exists(os.path.join(d.spool, "control.sock"))
    entries = {e["id"]: e for e in queue_list(d)}
    assert sorted(entries) == sorted([a, b])
    # Without the daemon there is no hold to report: due or waiting.
    assert all(e["status"] in ("active", "deferred") for e in entries.values()), entries
    rc, out, err = d.cli("queue", "delete", a)
    assert rc == 0, err
    assert "deleted from the queue" in audit_events(d, a)[-1]["upstream_reply"]
    rc, out, err = d.cli("queue", "delete", a)
    assert rc == 1
    rc, out, err = d.cli("queue", "retry", "--all")
    assert rc == 0, err
    [entry] = queue_list(d)
    assert entry["id"] == b and entry["status"] == "active"
    gmail.passwords[DEFAULT_ACCOUNT] = "wrongwrongwrongw"
    d.start()
    wait_delivered(gmail, "off-b@test.lan")
    time.sleep(0.5)
    assert "off-a@test.lan" not in delivered_ids(gmail)


# ---- restart and recovery --------------------------------------------------

def test_restart_delivers_the_spool_and_discards_unfinished_writes(daemon, gmail):
    d = held_daemon(daemon)
    qid = send_ok(d, "restart-1@test.lan")
    wait_for(lambda: [e for e in queue_list(d) if e["status"] == "held"], what="held")
    assert d.stop() == 0
    queue_dir = os.path.join(d.spool, "queue")
    # A write that never finished (no 250 was given for it), and garbage.
    with open(os.path.join(queue_dir, ".AAAAAAAAAAAAAAAA.tmp"), "wb") as f:
        f.write(b"SMTPVAULT-SPOOL 1\nid AAAAAAAAAAAAAAAA\n")
    with open(os.path.join(queue_dir, "BBBBBBBBBBBBBBBB"), "wb") as f:
        f.write(b"this is not a spool file\n")
    with open(os.path.join(queue_dir, "CCCCCCCCCCCCCCCC.st"), "wb") as f:
        f.write(b"SMTPVAULT-STATE 1\n")               # a state without its message
    gmail.passwords[DEFAULT_ACCOUNT] = "wrongwrongwrongw"
    d.start()
    wait_delivered(gmail, "restart-1@test.lan")
    assert re.search(r"event=queue_recovered .*messages=1 .*discarded=2 corrupt=1", d.log()), \
        d.log()
    wait_for(lambda: spool_files(d) == [], what="an empty queue/")
    assert spool_files(d, "corrupt") == ["BBBBBBBBBBBBBBBB"]
    evs = audit_events(d, qid)
    assert [e["status"] for e in evs] == ["queued", "deferred", "delivered"]


def test_sigterm_with_a_stuck_upstream_exits_promptly(daemon, gmail):
    d = qdaemon(daemon, upstream={"timeout": "60s"})
    rule = gmail.script("MAIL", "mail_ok", delay=30, count=None)
    send_ok(d, "stuck-1@test.lan")
    gmail.wait_for(lambda: any(c.commands and any(x.startswith("MAIL") for x in c.commands)
                               for c in gmail.connections), what="MAIL upstream")
    t0 = time.monotonic()
    assert d.stop() == 0
    took = time.monotonic() - t0
    assert took < 6, f"SIGTERM took {took:.1f}s"
    assert re.search(r"event=queue_drain abandoned=1", d.log()), d.log()
    rule.count = 0
    d.start()
    wait_delivered(gmail, "stuck-1@test.lan")


# ---- disk faults: never a 250 ----------------------------------------------

# An LD_PRELOAD shim: fsync/fdatasync/syncfs/write/writev/pwrite on a
# descriptor whose path starts with $SPOOLFAULT_DIR fail with the errno named
# in the file $SPOOLFAULT_CTL ("write ENOSPC", "fsync EIO", "dirfsync EIO",
# optionally followed by a delay in ms before failing; empty: no fault). Read
# at every call, so a test switches faults while the daemon runs. "fsync"
# covers files and syncfs (group commit), "dirfsync" directories.
SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static int
fault(int fd, const char *op)
{
	const char *ctl = getenv("SPOOLFAULT_CTL"), *dir = getenv("SPOOLFAULT_DIR");
	char buf[64], link[64], path[4096], want[32], err[32];
	struct stat st;
	ssize_t n;
	int cfd, delay = 0;

	if (ctl == NULL || dir == NULL || (cfd = open(ctl, O_RDONLY | O_CLOEXEC)) == -1)
		return 0;
	n = read(cfd, buf, sizeof(buf) - 1);
	close(cfd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%31s %31s %d", want, err, &delay) < 2)
		return 0;
	if (strcmp(op, "syncfs") == 0)
		op = "fsync";
	else if (strcmp(op, "fsync") == 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		op = "dirfsync";
	if (strcmp(want, op) != 0)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, sizeof(path) - 1)) <= 0)
		return 0;
	path[n] = '\0';
	if (strncmp(path, dir, strlen(dir)) != 0)
		return 0;
	if (delay > 0)
		usleep((useconds_t)delay * 1000);
	if (strcmp(err, "ENOSPC") == 0)
		return ENOSPC;
	if (strcmp(err, "EDQUOT") == 0)
		return EDQUOT;
	return EIO;
}

#define REAL(name) static __typeof__(name) *real_##name; \
	if (real_##name == NULL) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

int fsync(int fd) { REAL(fsync); int e = fault(fd, "fsync"); if (e) { errno = e; return -1; } return real_fsync(fd); }
int fdatasync(int fd) { REAL(fdatasync); int e = fault(fd, "fsync"); if (e) { errno = e; return -1; } return real_fdatasync(fd); }
int syncfs(int fd) { REAL(syncfs); int e = fault(fd, "syncfs"); if (e) { errno = e; return -1; } return real_syncfs(fd); }
ssize_t write(int fd, const void *b, size_t n) { REAL(write); int e = fault(fd, "write"); if (e) { errno = e; return -1; } return real_write(fd, b, n); }
ssize_t writev(int fd, const struct iovec *v, int c) { REAL(writev); int e = fault(fd, "write"); if (e) { errno = e; return -1; } return real_writev(fd, v, c); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) { REAL(pwrite); int e = fault(fd, "write"); if (e) { errno = e; return -1; } return real_pwrite(fd, b, n, o); }
"""


@pytest.fixture(scope="session")
def fault_shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    src, so = d / "spoolfault.c", d / "spoolfault.so"
    src.write_text(SHIM_C)
    p = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(so), str(src), "-ldl"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return str(so)


def faulty_daemon(daemon, fault_shim, tmp_path, target):
    ctl = tmp_path / "fault"
    ctl.write_text("")
    d = qdaemon(daemon, start=False)
    d.env = {"LD_PRELOAD": fault_shim, "SPOOLFAULT_CTL": str(ctl),
             "SPOOLFAULT_DIR": target(d),
             # an ASan build wants its runtime first; the shim is harmless
             "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    d.start()
    return d, ctl


@pytest.mark.parametrize("fault,code,enhanced", [
    ("write ENOSPC", 452, "4.3.1"),
    ("write EDQUOT", 452, "4.3.1"),
    ("write EIO", 451, "4.3.0"),
    ("fsync EIO", 451, "4.3.0"),
    ("dirfsync EIO", 451, "4.3.0"),
])
def test_disk_faults_never_get_a_250(daemon, gmail, fault_shim, tmp_path, fault, code,
                                     enhanced):
    d, ctl = faulty_daemon(daemon, fault_shim, tmp_path, lambda d: d.spool)
    ctl.write_text(fault)
    for i in range(3):
        got, text = send(d, f"fault-{i}@test.lan")
        assert got == code and text.startswith(enhanced), (fault, got, text)
    ctl.write_text("")
    assert [f for f in spool_files(d)] == []
    queued = [e for e in audit_events(d) if e["status"] == "queued"]
    if fault.startswith("dirfsync"):
        # The directory is synced after the "queued" event (a message file is
        # published only once its event is durable): a second event records
        # that the message was refused after all.
        for e in queued:
            assert [x["status"] for x in audit_events(d, e["queue_id"])] == \
                ["queued", "rejected"], audit_events(d, e["queue_id"])
    else:
        assert queued == []
    send_ok(d, "after-fault@test.lan")
    wait_delivered(gmail, "after-fault@test.lan")
    assert delivered_ids(gmail) == ["after-fault@test.lan"]


def burst(d, n, tag):
    """n clients send one message each at the same moment; their replies."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        with d.smtp() as s:
            s.ehlo("burst.lan")
            s.mail(DEFAULT_ACCOUNT)
            s.rcpt(RCPT)
            barrier.wait()
            results[i] = s.data(body(f"{tag}-{i}@test.lan"))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_fsync_failure_in_a_group_commit_never_gets_a_250(daemon, gmail, fault_shim,
                                                          tmp_path):
    """Many messages at once share one syncfs(); when it fails, all of them
    are refused. (The first, slow failure lets the others pile up into one
    batch.)"""
    d, ctl = faulty_daemon(daemon, fault_shim, tmp_path, lambda d: d.spool)
    ctl.write_text("fsync EIO 300")
    results = burst(d, 16, "gc-fail")
    assert all(r is not None and r[0] == 451 for r in results), results
    assert "cannot sync the spool:" in d.log(), d.log()
    ctl.write_text("")
    assert spool_files(d) == []
    results = burst(d, 16, "gc-ok")
    assert all(r is not None and r[0] == 250 for r in results), results
    for i in range(16):
        wait_delivered(gmail, f"gc-ok-{i}@test.lan")
    assert not [m for m in delivered_ids(gmail) if m.startswith("gc-fail")]
    assert d.stop() == 0
    assert re.search(r"event=spool_io .*syncfs=[1-9]", d.log()), d.log()


def test_audit_write_failure_refuses_and_removes_the_spool_file(daemon, gmail, fault_shim,
                                                                 tmp_path):
    d, ctl = faulty_daemon(daemon, fault_shim, tmp_path, lambda d: d.audit)
    ctl.write_text("fsync EIO")
    got, text = send(d, "noaudit-1@test.lan")
    assert got == 451 and text.startswith("4.3.0") and "audit log" in text, text
    assert spool_files(d) == []
    # For a while new messages are refused before they reach the disk.
    got, text = send(d, "noaudit-2@test.lan")
    assert got == 451, text
    ctl.write_text("")
    time.sleep(1)
    assert gmail.messages == []


# ---- kill -9 in a loop ------------------------------------------------------

KILL_CYCLES = 20
KILL_INTERVAL = 0.5
SENDERS = 2


def test_kill9_loop_loses_nothing_and_duplicates_at_most_once(daemon, gmail, capsys):
    """Senders go at full speed while the daemon is SIGKILLed every half
    second and restarted. Every message that got a 250 must arrive upstream,
    at most twice (a kill between the upstream's reply and the spool update)."""
    d = qdaemon(daemon, accounts=[Account(DEFAULT_ACCOUNT, args=[
        "--daily-limit", "1000000", "--daily-recipient-limit", "1000000"])])
    accepted = {}                       # Message-ID -> queue id
    lock = threading.Lock()
    stop = threading.Event()
    attempts = collections.Counter()

    def sender(n):
        seq = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP(d.host, d.port, timeout=5) as s:
                    s.ehlo("kill.lan")
                    while not stop.is_set():
                        seq += 1
                        mid = f"k{n}-{seq}@test.lan"
                        attempts["sent"] += 1
                        s.mail(DEFAULT_ACCOUNT)
                        s.rcpt(RCPT)
                        code, text = s.data(body(mid))
                        m = QUEUED_AS.search(text.decode())
                        if code == 250 and m:
                            with lock:
                                accepted[mid] = m.group(1)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.01)

    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(SENDERS)]
    for t in threads:
        t.start()
    try:
        for _ in range(KILL_CYCLES):
            time.sleep(KILL_INTERVAL)
            d.proc.kill()
            d.proc.wait()
            d.start()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    with lock:
        want = dict(accepted)
    assert len(want) > KILL_CYCLES, f"only {len(want)} messages accepted"

    def all_there():
        ids = set(delivered_ids(gmail))
        return all(mid in ids for mid in want)
    try:
        gmail.wait_for(all_there, timeout=30, what="every accepted message upstream")
    except AssertionError:
        ids = set(delivered_ids(gmail))
        miss = {mid: want[mid] for mid in want if mid not in ids}
        print("MISSING", len(miss), list(miss.items())[:10])
        print("SPOOL", spool_files(d)[:20], spool_files(d, "failed")[:20], spool_files(d, "corrupt"))
        print(d.log()[-5000:])
        raise
    time.sleep(1)
    counts = collections.Counter(delivered_ids(gmail))
    missing = [mid for mid in want if counts[mid] == 0]
    dups = {mid: c for mid, c in counts.items() if c > 1}
    unacked = [mid for mid in counts if mid not in want]
    with capsys.disabled():
        print(f"\n[queue kill -9] {KILL_CYCLES} kills every {KILL_INTERVAL}s, "
              f"{SENDERS} senders: {attempts['sent']} sent, {len(want)} accepted (250), "
              f"{sum(counts.values())} upstream deliveries, {len(missing)} missing, "
              f"{len(dups)} duplicated ({sum(c - 1 for c in dups.values())} extra copies), "
              f"{len(unacked)} delivered without a 250 (kill before the reply)")
    assert missing == []
    assert all(c <= 2 for c in counts.values()), dups
    wait_for(lambda: spool_files(d) == [], timeout=WAIT, what="an empty spool")


# ---- the keeper dies while it records a batch -----------------------------

def test_keeper_dying_during_the_queued_append_leaves_nothing_to_deliver(
        daemon, gmail, fault_shim, tmp_path):
    """The keeper is SIGKILLed while it makes a new message's "queued" event
    durable (its fdatasync of the audit log held up by the shim). The relay's
    link to it dies and the daemon ends; the client never got a 250. The
    message existed only as a temporary file (published after its event),
    so after the restart nothing is left in queue/ and nothing is delivered:
    no copy arrives besides the one the client sends again."""
    d, ctl = faulty_daemon(daemon, fault_shim, tmp_path, lambda d: d.audit)
    keeper = d.pids()["keeper"]
    ctl.write_text("fsync EIO 10000")
    reply = {}

    def client():
        try:
            reply["r"] = send(d, "keeper-dies-1@test.lan")
        except (OSError, smtplib.SMTPException) as e:
            reply["r"] = e
    t = threading.Thread(target=client, daemon=True)
    t.start()
    # The event is written; its fdatasync sleeps in the shim.
    def queued_written():
        try:
            with open(d.audit) as f:
                return re.search(r'"status":\s*"queued"', f.read())
        except FileNotFoundError:
            return None
    wait_for(queued_written, what="the queued event being written")
    time.sleep(0.2)
    os.kill(keeper, signal.SIGKILL)
    d.proc.wait(timeout=WAIT)
    t.join(WAIT)
    assert "r" in reply and not (isinstance(reply["r"], tuple) and reply["r"][0] == 250), \
        reply
    # Only the unpublished temporary file may be left, never queue/ID.
    assert [f for f in spool_files(d) if not f.endswith(".tmp")] == [], spool_files(d)
    ctl.write_text("")
    d.start()
    d.wait_log(r"event=queue_recovered .*messages=0 ", timeout=WAIT)
    assert spool_files(d) == []
    time.sleep(2)
    assert gmail.messages == []
    send_ok(d, "keeper-dies-2@test.lan")
    wait_delivered(gmail, "keeper-dies-2@test.lan")
    assert delivered_ids(gmail) == ["keeper-dies-2@test.lan"]
