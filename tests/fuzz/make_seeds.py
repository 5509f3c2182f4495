#!/usr/bin/python3
"""make_seeds.py: write the hand-made seeds of tests/fuzz/corpus/ (every
harness but the vault ones, whose seeds `make fuzz-seeds` makes with the vault
code itself). Each seed is small and means something: a real command, a
smuggling variant, a real Gmail reply, a sample configuration. Re-running it
rewrites the same files; seeds added by hand (minimised crashes) stay.

    /usr/bin/python3 tests/fuzz/make_seeds.py

Input layouts (see each harness's header comment):
  smtp_parse   1 flag byte (bits 0-1: 0 whole line, 1 MAIL args, 2 RCPT args,
               3 HELO args; bit 2: SMTPUTF8), then the line
  smtp_path    1 flag byte (bit 0: SMTPUTF8), then the address
  smtp_data    2 bytes max_size selector (0xffff: none), 8 bytes split seed,
               then the DATA bytes
  smtp_reply   8 bytes split seed, 1 keyword byte, then the server's bytes
  config       the text
  msg_header   1 pick byte (field name, output size), then the message
  relay_link   1 limits byte (max_rcpts, log_subject, max_data), then a
               SUBMIT payload (the wire form of proxy/relay_link.c)
"""

import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

IP = "127.0.0.1"
NMAP = "nmap.scanme.org"


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- SMTP command lines -----------------------------------------------------

# The 16 MAIL/RCPT forms of nmap's smtp-open-relay.nse, with [ip] = 127.0.0.1,
# domain = nmap.scanme.org and srvname = the name in our greeting.
SRV = "relay.test.lan"
NMAP_FORMS = [
    ("<>", f"<relaytest@{NMAP}>"),
    (f"<antispam@{NMAP}>", f"<relaytest@{NMAP}>"),
    (f"<antispam@{SRV}>", f"<relaytest@{NMAP}>"),
    (f"<antispam@[{IP}]>", f"<relaytest@{NMAP}>"),
    (f"<antispam@[{IP}]>", f"<relaytest%{NMAP}@[{IP}]>"),
    (f"<antispam@[{IP}]>", f"<relaytest%{NMAP}@{SRV}>"),
    (f"<antispam@[{IP}]>", f'<"relaytest@{NMAP}">'),
    (f"<antispam@[{IP}]>", f'<"relaytest%{NMAP}">'),
    (f"<antispam@[{IP}]>", f"<relaytest@{NMAP}@[{IP}]>"),
    (f"<antispam@[{IP}]>", f'<"relaytest@{NMAP}"@[{IP}]>'),
    (f"<antispam@[{IP}]>", f"<relaytest@{NMAP}@{SRV}>"),
    (f"<antispam@[{IP}]>", f"<@[{IP}]:relaytest@{NMAP}>"),
    (f"<antispam@[{IP}]>", f"<@{SRV}:relaytest@{NMAP}>"),
    (f"<antispam@[{IP}]>", f"<{NMAP}!relaytest>"),
    (f"<antispam@[{IP}]>", f"<{NMAP}!relaytest@[{IP}]>"),
    (f"<antispam@[{IP}]>", f"<{NMAP}!relaytest@{SRV}>"),
]

LINES = [
    "EHLO client.example.com", "HELO printer", "EHLO [192.168.1.20]", "EHLO",
    "MAIL FROM:<team@example.com>", "MAIL FROM:<>", "MAIL FROM: <team@example.com>",
    "mail from:team@example.com", "MAIL FROM:<team@example.com> SIZE=1048576 BODY=8BITMIME",
    "MAIL FROM:<team@example.com> SIZE=99999999999999999999999",
    "MAIL FROM:<team@example.com> BODY=BINARYMIME", "MAIL FROM:<team@example.com> SMTPUTF8",
    "MAIL FROM:<team@example.com> SIZE=10 SIZE=20", "MAIL FROM:<team@example.com",
    "MAIL TO:<team@example.com>", "RCPT TO:<bob@example.org>", "RCPT TO:bob@example.org",
    "RCPT TO:<bob@example.org> NOTIFY=NEVER", "RCPT TO:<>", "RCPT TO:<postmaster>",
    'RCPT TO:<"bob smith"@example.org>', 'RCPT TO:<"a\\"b>c"@example.org>',
    "RCPT TO:<bob@[192.0.2.1]>", "RCPT TO:<bob@[IPv6:2001:db8::1]>",
    "RCPT TO:<bob@[tag:value]>", "RCPT TO:<bob@[300.1.1.1]>", "RCPT TO:<bob@exa_mple.org>",
    "RCPT TO:<bob@-example.org>", "RCPT TO:<.bob@example.org>", "RCPT TO:<bob.@example.org>",
    "RCPT TO:<bob..x@example.org>", "RCPT TO:<@a,@b:bob@example.org>",
    "RCPT TO:<" + "a" * 64 + "@" + "b" * 63 + ".example.org>",
    "RCPT TO:<" + "a" * 65 + "@example.org>",
    "RCPT TO:<a@" + ".".join(["b" * 63] * 4) + ">",
    "DATA", "BDAT 100 LAST", "RSET", "NOOP", "QUIT", "STARTTLS", "VRFY bob", "HELP",
    "AUTH PLAIN AGJvYgBwYXNz", "X-CUSTOM-VERB-THAT-IS-LONG arg", "MAIL\tFROM:<a@b.c>",
    "  MAIL FROM:<a@b.c>", "MAIL FROM:<a@b.c>   \t ",
]
for mail, rcpt in NMAP_FORMS:
    LINES += [f"MAIL FROM:{mail}", f"RCPT TO:{rcpt}"]


def seed_smtp_parse():
    for line in dict.fromkeys(LINES):
        put("smtp_parse", "line-" + hashlib.sha1(line.encode()).hexdigest()[:12],
            b"\x00" + line.encode())
    utf8 = "MAIL FROM:<用户@例子.广告> SMTPUTF8".encode()
    put("smtp_parse", "mail-smtputf8", b"\x00" + utf8)
    put("smtp_parse", "rcpt-utf8-with-flag", b"\x06" + "TO:<jörg@bücher.example>".encode())
    put("smtp_parse", "rcpt-utf8-without-flag", b"\x02" + "TO:<jörg@bücher.example>".encode())
    put("smtp_parse", "rcpt-overlong-utf8", b"\x06TO:<\xc0\xafx@example.org>")
    put("smtp_parse", "mail-args", b"\x01FROM:<team@example.com> SIZE=12 SMTPUTF8")
    put("smtp_parse", "helo-args", b"\x03relay.example.lan")
    put("smtp_parse", "small-verb-buffer", b"\x18EHLOX y")


def seed_smtp_path():
    addrs = [
        "team@example.com", "a@b.c", "postmaster", "bob@[192.0.2.1]",
        "bob@[IPv6:::1]", "bob@[IPv6:2001:db8::1]", "bob@[IPv6:::ffff:1.2.3.4]",
        "bob@[ipv6:::1]", "bob@[tag:x]", "bob@[1.2.3]", '"quoted"@example.org',
        '"quo\\"ted"@example.org', '"a@b"@example.org', '"a%b"@example.org',
        "a%b@example.org", "b!a@example.org", "@relay:a@b.c", "@a,@b:c@d.e",
        "alerts@example.com", "ALERTS@EXAMPLE.COM", "x@ops.example.com",
        "sales@example.com", "info@example.net", "ops@example.com", "someone@example.net",
        "a@ops.example.com.evil.org", "a@b@ops.example.com", "*@ops.example.com",
        "a" * 64 + "@example.org", "a" * 65 + "@example.org",
        "a@" + ".".join(["b" * 63] * 3) + ".cc",
    ]
    for mail, rcpt in NMAP_FORMS:
        addrs += [mail.strip("<>"), rcpt.strip("<>")]
    for a in dict.fromkeys(addrs):
        put("smtp_path", "addr-" + hashlib.sha1(a.encode()).hexdigest()[:12],
            b"\x00" + a.encode())
    put("smtp_path", "utf8", b"\x01" + "用户@例子.广告".encode())
    put("smtp_path", "utf8-no-flag", b"\x00" + "jörg@bücher.example".encode())
    put("smtp_path", "literal-nul-inside", b"\x00bob@[IPv6:::1\x00x]")


# ---- DATA -------------------------------------------------------------------

HEAD = b"From: Team <team@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\n"
HIDDEN = (b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
          b"From: evil@example.com\r\nSubject: smuggled\r\n\r\nevil\r\n")
SMUGGLE = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n",
           b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\r\n.\r\r\n", b"\r\n.\r\r\n", b"\r\n..\r\n"]


def data_seed(name, body, max_sel=0xffff, seed=1):
    put("smtp_data", name, struct.pack("<HQ", max_sel, seed) + body)


def seed_smtp_data():
    data_seed("plain", HEAD + b"Hello Bob,\r\n.\r\n")
    data_seed("empty", b".\r\n")
    data_seed("only-crlf", b"\r\n.\r\n")
    data_seed("dot-stuffed", HEAD + b"..a line with a dot\r\n...two\r\n.\r\n\r\n.\r\n")
    data_seed("pipelined-after", HEAD + b"x\r\n.\r\nQUIT\r\n")
    for i, seq in enumerate(SMUGGLE):
        data_seed(f"smuggle-{i:02d}", HEAD + b"first" + seq + HIDDEN + b".\r\n")
        data_seed(f"smuggle-{i:02d}-split", HEAD + b"first" + seq + HIDDEN + b".\r\n",
                  seed=0x1234567890abcdef + i)
    data_seed("bare-lf-message", b"Subject: unix\n\nline one\nline two\n.\n.\r\n")
    data_seed("bare-cr-message", b"Subject: mac\r\rline\r.\r\n")
    data_seed("nul", HEAD + b"a\x00b\r\n.\r\n")
    data_seed("long-line", HEAD + b"x" * 1100 + b"\r\n.\r\n")
    data_seed("line-998", HEAD + b"y" * 998 + b"\r\n.\r\n")
    data_seed("line-999", HEAD + b"y" * 999 + b"\r\n.\r\n")
    data_seed("too-big", HEAD + b"z" * 200 + b"\r\n.\r\n", max_sel=0x0010)
    data_seed("hops", b"Received: from a by b\r\n" * 51 + b"\r\nloop\r\n.\r\n")
    data_seed("folded-headers", b"Subject: one\r\n two\r\n\tthree\r\nX-A : b\r\n"
              b"Received : x\r\n\r\nbody\r\n.\r\n")
    data_seed("8bit", "Subject: Grüße\r\n\r\nça va?\r\n.\r\n".encode())
    data_seed("no-end", HEAD + b"never ends\r\n")


# ---- upstream replies ---------------------------------------------------------

GREETING = b"220 smtp.gmail.com ESMTP a1-20020a170902b4c100b001d0c1c5d0c0sm1234567pls.1 - gsmtp\r\n"
EHLO_PLAIN = (b"250-smtp.gmail.com at your service, [203.0.113.7]\r\n250-SIZE 35882577\r\n"
              b"250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
              b"250-CHUNKING\r\n250 SMTPUTF8\r\n")
EHLO_TLS = (b"250-smtp.gmail.com at your service, [203.0.113.7]\r\n250-SIZE 35882577\r\n"
            b"250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n")
REPLIES = {
    "greeting": GREETING,
    "ehlo-plain": EHLO_PLAIN,
    "ehlo-tls": EHLO_TLS,
    "starttls": b"220 2.0.0 Ready to start TLS\r\n",
    "starttls-injected": b"220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN\r\n",
    "auth-ok": b"235 2.7.0 Accepted\r\n",
    "auth-bad": (b"535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
                 b"535 5.7.8  https://support.google.com/mail/?p=BadCredentials x - gsmtp\r\n"),
    "app-password": (b"534-5.7.9 Application-specific password required. For more information, go to\r\n"
                     b"534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor x - gsmtp\r\n"),
    "daily-limit": (b"550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n"
                    b"550-5.4.5 sending limits go to\r\n"
                    b"550 5.4.5  https://support.google.com/a/answer/166852 x - gsmtp\r\n"),
    "try-again": b"421 4.7.0 Try again later, closing connection. x - gsmtp\r\n",
    "pipelined": (b"250 2.1.0 OK x - gsmtp\r\n250 2.1.5 OK x - gsmtp\r\n"
                  b"250 2.1.5 OK x - gsmtp\r\n354  Go ahead x - gsmtp\r\n"),
    "message-ok": b"250 2.0.0 OK  1700000000 x - gsmtp\r\n",
    "lf-only": b"250-first\n250-second\n250 last\n",
    "code-changes": b"250-a\r\n251 b\r\n",
    "bad-separator": b"250+x\r\n",
    "control-char": b"250 a\x01b\r\n",
    "nul": b"250 a\x00b\r\n",
    "short": b"25\r\n",
    "code-only": b"250\r\n",
    "six-hundred": b"600 no\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "partial": b"250-SIZE 35882577\r\n250-8BIT",
    "many-lines": b"".join(b"250-line %d\r\n" % i for i in range(130)) + b"250 end\r\n",
    "long-line": b"250 " + b"x" * 5000 + b"\r\n",
    "long-text": b"".join(b"250-" + b"y" * 1000 + b"\r\n" for _ in range(6)) + b"250 z\r\n",
    "enhanced-odd": b"250 2.1234.5 x\r\n250 5.1.1 y\r\n",
    "utf8": "550 5.1.1 Empfänger unbekannt\r\n".encode(),
}


def seed_smtp_reply():
    for i, (name, data) in enumerate(REPLIES.items()):
        put("smtp_reply", name, struct.pack("<QB", 0x9e3779b97f4a7c15 * (i + 1) % 2**64, i) + data)


# ---- configuration --------------------------------------------------------------

CONFIGS = {
    "spec-example": """[vault]
path = /var/lib/smtpvault/vault
passphrase_file = /etc/smtpvault/passphrase   # or key_file =

[smtp]
listen = 0.0.0.0:2525, [::]:2525
hostname = relay.example.lan
trusted_networks = 127.0.0.0/8, ::1/128      # shorthand for an anonymous client "lan"
max_message_size = 35M
max_recipients = 100
max_connections = 1000
timeout = 5m                                  # idle timeout per command
delivery = queue                              # queue | direct
spool_dir = /var/spool/smtpvault
default_account = team@example.com
tls_cert =                                    # optional: offer STARTTLS to LAN clients
tls_key =

[client "monitoring"]                         # named clients, for policy and for the audit log
networks = 10.0.5.0/24, 10.0.6.7
account = alerts@example.com                  # this client's default account
accounts = alerts@example.com, team@example.com   # optional: accounts it may use (default all)
senders = alerts@example.com, *@ops.example.com   # optional envelope-sender allow-list
rate_limit = 600/hour                         # optional, messages

[upstream]
host = smtp.gmail.com
port = 587
tls = starttls                                # starttls | implicit (port 465)
ca_file =                                     # default: system trust store
timeout = 60s
max_sessions_per_account = 3
retry_schedule = 1m, 5m, 15m, 1h              # queue mode; last step repeats
queue_lifetime = 5d

[admin]
listen = 127.0.0.1:8025
tls_cert =
tls_key =

[audit]
path = /var/lib/smtpvault/audit.log
log_subject = yes
""",
    "test-daemon": """[vault]
path = /tmp/d0/vault
key_file = /tmp/d0/vault.key

[smtp]
listen = 127.0.0.1:40001
hostname = relay.test.lan
trusted_networks = 127.0.0.1/32
timeout = 30s
delivery = direct
spool_dir = /tmp/d0/spool

[upstream]
host = localhost
port = 40002
tls = starttls
ca_file = /tmp/pki/ca.pem
timeout = 5s

[admin]
listen = 127.0.0.1:40003

[audit]
path = /tmp/d0/audit.log
""",
    "relative-paths": "[vault]\npath = state/vault\nkey_file = ./state/key\n"
                      "[smtp]\nspool_dir = ../spool\n",
    "empty": "",
    "bom-crlf": "\ufeff[smtp]\r\nmax_recipients = 5\r\n",
    "dup-key": "[smtp]\nmax_recipients = 5\nmax_recipients = 6\n",
    "dup-section": "[smtp]\n[smtp]\n",
    "unknown": "[smtp]\nnope = 1\n[nope]\n",
    "outside": "max_recipients = 5\n",
    "long-line": "[smtp]\nhostname = " + "a" * 250 + "\n",
    "continuation": "[smtp]\nhostname = a\n  b\n",
    "semicolon": "[smtp]\nhostname = a;b ; comment\n",
    "client-no-net": '[client "x"]\naccount = a@b.c\n',
    "client-bad-name": '[client "a b"]\nnetworks = 10.0.0.0/8\n',
    "client-account-not-in-list": '[client "x"]\nnetworks = 10.0.0.1\naccount = a@b.c\n'
                                  'accounts = d@e.f\n',
    "open-relay": "[smtp]\ntrusted_networks = 0.0.0.0/0\n",
    "ranges": "[smtp]\nmax_message_size = 2G\nmax_recipients = 0\ntimeout = 2h\n"
              "[upstream]\nport = 65536\nretry_schedule = 1s, 0s\nqueue_lifetime = 31d\n",
    "rate-units": '[client "r"]\nnetworks = ::1/128, fe80::/10\nrate_limit = 10/sec\n',
    "tls-half": "[smtp]\ntls_cert = /etc/cert.pem\n",
    "both-keys": "[vault]\npassphrase_file = /a\nkey_file = /b\n",
    "bools": "[audit]\nlog_subject = off\n",
    "listen-forms": "[smtp]\nlisten = *:25, [::1]:2525, 10.0.0.1:1\n"
                    "[admin]\nlisten = [::]:8025\n",
    "senders-wildcards": '[client "w"]\nnetworks = 192.168.0.0/16\n'
                         'senders = *@example.com, a@b.c, *@*\n',
}


def seed_config():
    for name, text in CONFIGS.items():
        put("config", name, text)
    with open(os.path.join(HERE, "..", "..", "deploy", "smtpvault.conf.example"), "rb") as f:
        put("config", "deploy-example", f.read())
    many = "".join(f'[client "c{i}"]\nnetworks = 10.{i}.0.0/16\n' for i in range(40))
    put("config", "many-clients", many)


# ---- msg_header ---------------------------------------------------------------------

MESSAGES = [
    (0, b"From: Team <team@example.com>\r\nSubject: hello\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"),
    (0, b"Subject: one\r\n two\r\n\tthree\r\nFrom: a\r\n\r\n"),
    (0, b"subject   :   spaced   \r\n\r\n"),
    (0, b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\n"),
    (0, b"X: y\r\n\r\nSubject: in the body\r\n"),
    (0, b"Subject: no end of header"),
    (0, b"Subject: bare\nLF\n\n"),
    (0, b"Subject: a\r\r\n b\r\n\r\n"),
    (0x10, b"Subject: truncated to a small buffer\r\n\r\n"),
    (0x08, b"Subject: x\r\n"),
    (2, b"Message-ID:\r\n <folded@example.com>\r\n\r\n"),
    (0x80, b"X-Custom\x00X-Custom: value\r\n\r\n"),
    (0x80, b"\x00: empty name\r\n\r\n"),
]


def seed_msg_header():
    for i, (pick, msg) in enumerate(MESSAGES):
        put("msg_header", f"msg-{i:02d}", bytes([pick]) + msg)


def rl_str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack(">H", len(s)) + s


def rl_nstr(s):
    return struct.pack(">I", 0) + rl_str("") if s is None else struct.pack(">I", 1) + rl_str(s)


def rl_submit(flags=0, queue_id="Q1", rcpts=("a@b.cd",), data=b"ddd",
              fields=("x <x@y>", "Hello", "<m@x>")):
    block = b"".join(rl_str(r) for r in rcpts)
    head = struct.pack(">I", flags)
    for s in (queue_id, "acct@example.com", "from@example.com", "192.0.2.1", "printer",
              "printer.lan"):
        head += rl_str(s)
    for f in fields:
        head += rl_nstr(f)
    head += struct.pack(">IIQ", len(rcpts), len(block), len(data))
    return head + block + data


def seed_relay_link():
    # limits byte: bits 0-1 max_rcpts (1, 2, 10, 10000), bit 2 log_subject,
    # bits 3-4 max_data (0, 10, 1000, 1 MiB)
    all_limits = 0x03 | 0x04 | 0x18
    put("relay_link", "submit-00", bytes([all_limits]) + rl_submit())
    put("relay_link", "submit-01", bytes([all_limits]) + rl_submit(
        flags=3, rcpts=[f"r{i}@example.com" for i in range(12)],
        data=b"Received: from x\r\n\r\nbody\r\n", fields=(None, None, None)))
    put("relay_link", "submit-02", bytes([0x02 | 0x04 | 0x10]) + rl_submit(
        queue_id="Q" * 23, rcpts=["r" * 256, "\xc3\xa9@x"], data=b"\x00" * 10,
        fields=("f" * 1023, "", "<id>")))
    put("relay_link", "submit-03", bytes([0x18]) + rl_submit(data=b"x" * 1000))
    # Refused ones: no recipient, data past the limit, trailing byte.
    put("relay_link", "bad-00", bytes([all_limits]) + rl_submit(rcpts=()))
    put("relay_link", "bad-01", bytes([0x04 | 0x08]) + rl_submit(data=b"x" * 11))
    put("relay_link", "bad-02", bytes([all_limits]) + rl_submit() + b"t")


if __name__ == "__main__":
    seed_smtp_parse()
    seed_smtp_path()
    seed_smtp_data()
    seed_smtp_reply()
    seed_config()
    seed_msg_header()
    seed_relay_link()
