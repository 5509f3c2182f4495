"""test_vault_cli.py: the vault commands of SPEC section 2 through the real
binary (issue 2): round trips, refusals with the right exit status and one
clear line, a file that never changes on error, concurrent writers and
writers killed with SIGKILL at random moments.
"""

import base64
import json
import os
import random
import signal
import subprocess
import time

import pytest

PW1 = "abcd efgh ijkl mnop"          # as Google shows it
PW1_NORM = "abcdefghijklmnop"
PW2 = "qrstuvwxyzabcdef"


@pytest.fixture
def vault_conf(tmp_path):
    """A config with a passphrase file and an interactive-cost KDF vault."""
    pf = tmp_path / "passphrase"
    pf.write_text("correct horse battery staple\n")
    pf.chmod(0o600)
    conf = tmp_path / "smtpvault.conf"
    conf.write_text(f"[vault]\npath = {tmp_path}/vault\npassphrase_file = {pf}\n"
                    f"[audit]\npath = {tmp_path}/audit.log\n"
                    f"[smtp]\ndelivery = direct\n")
    return str(conf)


def ok(result):
    rc, out, err = result
    assert rc == 0, err
    return out


def one_line_error(result, status):
    rc, out, err = result
    assert rc == status, (rc, out, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("smtpvault: "), err
    return lines[0]


def listing(cli, conf):
    return {a["address"]: a for a in json.loads(ok(cli("account", "list", "--json", conf=conf)))}


def test_round_trip_every_command(cli, vault_conf, tmp_path):
    ok(cli("init", "--kdf", "interactive", conf=vault_conf))
    assert oct(os.stat(tmp_path / "vault").st_mode & 0o777) == "0o600"
    ok(cli("account", "add", "team@example.com", "--alias", "alerts@example.com",
           "--daily-limit", "500", "--daily-recipient-limit", "900",
           "--upstream", "smtp.example.net:465", "--tls", "implicit",
           input=PW1 + "\n", conf=vault_conf))
    a = listing(cli, vault_conf)["team@example.com"]
    assert a["aliases"] == ["alerts@example.com"] and a["version"] == 1
    assert a["daily_limit"] == 500 and a["daily_recipient_limit"] == 900
    assert a["status"] == "ok" and set(a) == {"address", "aliases", "version", "created",
                                              "rotated", "daily_limit",
                                              "daily_recipient_limit", "status"}
    out = ok(cli("account", "rotate", "team@example.com", "--no-verify",
                 input=PW2 + "\n", conf=vault_conf))
    assert "version 2" in out
    assert listing(cli, vault_conf)["team@example.com"]["version"] == 2
    ok(cli("account", "rollback", "team@example.com", conf=vault_conf))
    assert listing(cli, vault_conf)["team@example.com"]["version"] == 1
    human = ok(cli("account", "list", conf=vault_conf))
    assert "team@example.com" in human and PW1_NORM not in human
    ok(cli("admin-user", "add", "alice", input="s3cret-admin\n", conf=vault_conf))
    assert "alice" in ok(cli("admin-user", "list", conf=vault_conf))
    ok(cli("admin-user", "remove", "alice", conf=vault_conf))
    assert "alice" not in ok(cli("admin-user", "list", conf=vault_conf))
    ok(cli("account", "remove", "team@example.com", conf=vault_conf))
    assert listing(cli, vault_conf) == {}
    assert "configuration OK" in ok(cli("serve", "--check", conf=vault_conf))
    assert ok(cli("audit", "verify", conf=vault_conf)).startswith("audit log OK")


def test_no_secret_in_vault_bytes_or_listing(cli, vault_conf, tmp_path):
    ok(cli("init", "--kdf", "interactive", conf=vault_conf))
    ok(cli("account", "add", "team@example.com", input=PW1 + "\n", conf=vault_conf))
    ok(cli("account", "rotate", "team@example.com", "--no-verify", input=PW2 + "\n",
           conf=vault_conf))
    data = (tmp_path / "vault").read_bytes()
    for pw in (PW1_NORM, PW2):
        b = pw.encode()
        for needle in (b, b.hex().encode(), base64.b64encode(b).rstrip(b"=")):
            assert needle not in data
        for args in (("account", "list"), ("account", "list", "--json")):
            rc, out, err = cli(*args, conf=vault_conf)
            assert pw not in out and pw not in err


def test_refusals_leave_the_file_untouched(cli, vault_conf, tmp_path):
    ok(cli("init", "--kdf", "interactive", conf=vault_conf))
    ok(cli("account", "add", "team@example.com", input=PW1 + "\n", conf=vault_conf))
    before = (tmp_path / "vault").read_bytes()
    # Refuses to overwrite.
    assert "exists" in one_line_error(cli("init", conf=vault_conf), 1)
    # Duplicate add, unknown account.
    one_line_error(cli("account", "add", "team@example.com", input=PW2 + "\n",
                       conf=vault_conf), 1)
    assert "no account" in one_line_error(cli("account", "rotate", "nobody@example.com",
                                              "--no-verify", input=PW2 + "\n",
                                              conf=vault_conf), 1)
    one_line_error(cli("account", "remove", "nobody@example.com", conf=vault_conf), 1)
    one_line_error(cli("account", "rollback", "team@example.com", conf=vault_conf), 1)
    # A password on argv is refused as usage.
    line = one_line_error(cli("account", "add", "x@example.com", PW2, conf=vault_conf), 2)
    assert "never from the command line" in line
    one_line_error(cli("admin-user", "add", "bob", "hunter2", conf=vault_conf), 2)
    # Wrong passphrase.
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    wrong.chmod(0o600)
    one_line_error(cli("--passphrase-file", str(wrong), "account", "list", conf=vault_conf), 1)
    # Missing vault.
    other = tmp_path / "other.conf"
    other.write_text(open(vault_conf).read().replace(f"{tmp_path}/vault", f"{tmp_path}/nope"))
    one_line_error(cli("account", "list", conf=str(other)), 1)
    # Usage and configuration errors: exit 2.
    one_line_error(cli("account", "frobnicate", conf=vault_conf), 2)
    bad = tmp_path / "bad.conf"
    bad.write_text("[vault]\npath = /x\nbogus = 1\n")
    line = one_line_error(cli("account", "list", conf=str(bad)), 2)
    assert f"{bad}:3:" in line
    assert (tmp_path / "vault").read_bytes() == before


def test_damaged_vault_refused(cli, vault_conf, tmp_path):
    """Flipped bits (a sample of positions, every byte is covered by the unit
    tests), truncation and a newer format version: exit 1, one line, file
    untouched."""
    ok(cli("init", "--kdf", "interactive", conf=vault_conf))
    ok(cli("account", "add", "team@example.com", input=PW1 + "\n", conf=vault_conf))
    path = tmp_path / "vault"
    good = path.read_bytes()
    rng = random.Random(7)
    positions = sorted(set([0, 8, 9, 10, 11, 20, 40, 60, len(good) - 1] +
                           rng.sample(range(len(good)), 12)))
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        one_line_error(cli("account", "list", conf=vault_conf), 1)
        assert path.read_bytes() == bytes(bad)
    path.write_bytes(good[:len(good) // 2])
    one_line_error(cli("account", "list", conf=vault_conf), 1)
    newer = bytearray(good)
    newer[8] = 2          # format version, little-endian u16 after the magic
    path.write_bytes(bytes(newer))
    assert "newer" in one_line_error(cli("account", "list", conf=vault_conf), 1)
    path.write_bytes(good)
    ok(cli("account", "list", conf=vault_conf))


def test_rekey(cli, vault_conf, tmp_path):
    ok(cli("init", "--kdf", "interactive", conf=vault_conf))
    ok(cli("account", "add", "team@example.com", input=PW1 + "\n", conf=vault_conf))
    new = tmp_path / "new-passphrase"
    new.write_text("a brand new passphrase\n")
    new.chmod(0o600)
    ok(cli("rekey", "--new-passphrase-file", str(new), "--kdf", "interactive",
           conf=vault_conf))
    one_line_error(cli("account", "list", conf=vault_conf), 1)
    assert "team@example.com" in ok(cli("--passphrase-file", str(new), "account", "list",
                                        conf=vault_conf))
    # The audit chain is still verifiable after a rekey.
    out = ok(cli("--passphrase-file", str(new), "audit", "verify", conf=vault_conf))
    assert "2 entries" in out            # the add and the rekey


def test_group_readable_passphrase_refused(cli, vault_conf, tmp_path):
    ok(cli("init", "--kdf", "interactive", conf=vault_conf))
    (tmp_path / "passphrase").chmod(0o640)
    line = one_line_error(cli("account", "list", conf=vault_conf), 1)
    assert "chmod 600" in line


def key_conf(tmp_path, name):
    key = tmp_path / f"{name}.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"[vault]\npath = {tmp_path}/{name}.vault\nkey_file = {key}\n"
                    f"[audit]\npath = {tmp_path}/{name}.audit\n[smtp]\ndelivery = direct\n")
    return str(conf)


def test_two_writers_lose_nothing(cli, smtpvault_bin, tmp_path):
    """Two processes each rotating a different account 50 times at once: all
    100 versions happen (each account ends at version 51)."""
    conf = key_conf(tmp_path, "conc")
    ok(cli("init", conf=conf))
    for a in ("a@example.com", "b@example.com"):
        ok(cli("account", "add", a, input=PW1 + "\n", conf=conf))
    script = ('for i in $(seq 50); do printf "%s\\n" "$2" | "$0" -c "$1" account rotate "$3" '
              '--no-verify >/dev/null || exit 1; done')
    procs = [subprocess.Popen(["sh", "-c", script, smtpvault_bin, conf, PW2, a])
             for a in ("a@example.com", "b@example.com")]
    for p in procs:
        assert p.wait(120) == 0
    got = listing(cli, conf)
    assert got["a@example.com"]["version"] == 51 and got["b@example.com"]["version"] == 51
    out = ok(cli("audit", "verify", conf=conf))
    assert "102 entries" in out          # 2 adds + 100 rotations, one chain


def test_sigkill_writer_never_corrupts(cli, smtpvault_bin, tmp_path):
    """SIGKILL a rotating writer at random moments, many times: the vault
    always opens, at the old or the new version."""
    conf = key_conf(tmp_path, "crash")
    ok(cli("init", conf=conf))
    ok(cli("account", "add", "a@example.com", input=PW1 + "\n", conf=conf))
    rng = random.Random(42)
    version = 1
    iterations = 40
    for _ in range(iterations):
        p = subprocess.Popen([smtpvault_bin, "-c", conf, "account", "rotate", "a@example.com",
                              "--no-verify"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.stdin.write((PW2 + "\n").encode())
        p.stdin.flush()
        time.sleep(rng.uniform(0, 0.02))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdin.close()
        now = listing(cli, conf)["a@example.com"]["version"]
        assert now in (version, version + 1)
        version = now
    assert version >= 1
    # The next ordinary write still works.
    ok(cli("account", "rotate", "a@example.com", "--no-verify", input=PW2 + "\n", conf=conf))
    assert listing(cli, conf)["a@example.com"]["version"] == version + 1
