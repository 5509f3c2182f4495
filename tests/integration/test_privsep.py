"""test_privsep.py: privilege separation (issue 8). The daemon runs as two
processes: the vault keeper (no network socket; the vault, the master key,
the audit key) and the network process (SMTP front end, relay, admin).

- While the daemon relays mail and an admin rotates a password (with and
  without the upstream proof), the memory of the network process (every
  mapping, read through /proc/PID/mem as root) holds no copy of the master
  key (the key file's 32 bytes) nor of the old or new App Password; the
  same scan of the keeper finds them, which proves the scan works. (The
  network process still runs the relay, which holds one credential per
  upstream login until AUTH is done; the scan runs between messages.)
- Killing the keeper ends the daemon at once, with a log line and a non-zero
  status (no silent restart), and every message that got a 250 was
  delivered upstream (direct mode) or is delivered after a restart (queue).
"""

import os
import secrets
import signal
import subprocess
import time

import pytest

from conftest import DEFAULT_ACCOUNT, Account, child_env, die_with_parent
from test_admin import Admin, add_admin

MAX_REGION = 1 << 30        # skip mappings larger than this (none expected)
EXIT_TIMEOUT = 10.0


def children(pid):
    """Direct children of pid (from /proc/*/stat)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces: fields after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(name))
    return out


def keeper_of(d):
    kids = children(d.proc.pid)
    assert len(kids) == 1, f"expected one child (the keeper), found {kids}"
    return kids[0]


def scan(pid, needles):
    """Count the occurrences of each needle in the memory of pid."""
    hits = {n: 0 for n in needles}
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            name = parts[5] if len(parts) > 5 else ""
            if name in ("[vvar]", "[vsyscall]") or hi - lo > MAX_REGION:
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue
            for n in needles:
                hits[n] += data.count(n)
    return hits


def send(d, n, tag):
    s = d.smtp()
    for i in range(n):
        s.sendmail(DEFAULT_ACCOUNT, ["bob@example.org"],
                   f"Subject: {tag} {i}\r\n\r\nbody {i}\r\n".encode())
    s.quit()


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.skip("reading another process's memory needs root")


def app_password():
    """A Gmail-shaped App Password (16 letters) that occurs nowhere else:
    a fixed one such as "abcdefghijklmnop" is found in every base64 table."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(letters) for _ in range(16))


@pytest.mark.parametrize("verify", [False, True], ids=["no-verify", "verify"])
def test_network_process_holds_no_secret(root_only, daemon, gmail, verify):
    old_pw, new_pw = app_password(), app_password()
    d = daemon(accounts=[Account(DEFAULT_ACCOUNT, password=old_pw)], start=False)
    add_admin(d)
    d.start()
    with open(d.key_file, "rb") as f:
        master = f.read()
    assert len(master) == 32
    old, new = old_pw.encode(), new_pw.encode()

    send(d, 3, "before")
    a = Admin(d)
    status, _, payload = a.login()
    assert status == 200, payload
    gmail.passwords[DEFAULT_ACCOUNT] = new_pw
    status, data = a.json("POST", f"/api/v1/accounts/{DEFAULT_ACCOUNT}/rotate",
                          {"password": new_pw, "verify": verify})
    assert status == 200, data
    send(d, 3, "after")
    assert len(gmail.delivered) == 6

    keeper = keeper_of(d)
    net = scan(d.proc.pid, [master, old, new])
    kept = scan(keeper, [master, old, new])
    # Sanity: the scan finds what the keeper holds.
    assert kept[master] > 0, kept
    assert kept[old] > 0 and kept[new] > 0, kept
    # The network process never had the master key, and kept no App
    # Password: the relay wipes each after AUTH, the admin page wipes the
    # new one after handing it to the keeper.
    assert net == {master: 0, old: 0, new: 0}, net
    # The audit key stays in the keeper too: the network process writes
    # nothing to the audit log itself, yet the chain verifies.
    rc, out, err = d.cli("audit", "verify")
    assert rc == 0, err


def test_killing_the_keeper_ends_the_daemon(daemon, gmail):
    d = daemon(start=False)
    proc = subprocess.Popen([d.binary, "-c", d.conf, "serve"], stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=child_env(),
                            preexec_fn=die_with_parent)
    try:
        d.proc = proc
        deadline = time.monotonic() + 10
        while True:
            try:
                s = d.smtp()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        accepted = 0
        for i in range(3):
            s.sendmail(DEFAULT_ACCOUNT, ["bob@example.org"],
                       f"Subject: k {i}\r\n\r\nx\r\n".encode())
            accepted += 1
        s.quit()
        keeper = keeper_of(d)
        os.kill(keeper, signal.SIGKILL)
        rc = proc.wait(EXIT_TIMEOUT)
        err = proc.stderr.read().decode()
    finally:
        d.proc = None           # not the fixture's to stop
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc != 0 and rc > 0, (rc, err)
    assert "event=child_exited process=keeper signal=9 action=exit" in err, err
    # Every accepted message went upstream before its 250 (direct mode).
    assert len(gmail.delivered) == accepted


def test_killing_the_keeper_in_queue_mode_loses_nothing(daemon, gmail):
    """Messages wait in the queue (the upstream offers no STARTTLS, so every
    attempt fails); the keeper is killed; the daemon ends; after a restart
    every message that got a 250 is delivered."""
    from test_queue import qdaemon, send
    d = qdaemon(daemon)
    gmail.offer_starttls = False
    accepted = []
    for i in range(5):
        msgid = f"keeper-kill-{i}@test.lan"
        code, text = send(d, msgid)
        assert code == 250, text
        accepted.append(msgid)
    assert gmail.delivered == []
    os.kill(keeper_of(d), signal.SIGKILL)
    rc = d.proc.wait(EXIT_TIMEOUT)
    assert rc > 0, rc
    assert "event=child_exited process=keeper signal=9 action=exit" in d.log()
    gmail.offer_starttls = True
    d.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = {m for m in accepted if any(m.encode() in x.data for x in gmail.delivered)}
        if got == set(accepted):
            break
        time.sleep(0.2)
    assert got == set(accepted), sorted(set(accepted) - got)
