"""dnsstub.py: a tiny authoritative-looking DNS responder for the
integration tests (stdlib only), on UDP and TCP of one loopback address.

    s = DnsStub({"smtp.gmail.test": "127.0.0.1"}, addr="127.0.0.77")
    s.start(); ...; s.stop()
    s.count("smtp.gmail.test", "A")    # queries seen so far (any protocol)
    s.queries                          # [(proto, name, qtype)], proto "udp"/"tcp"

Answers: A for a name in the table (TTL 60); AAAA for it when s.aaaa maps
it to an IPv6 address; an empty NOERROR for any other type of such a name
(AAAA: "no IPv6 address"); NXDOMAIN for every other name. A name in s.truncate gets an empty UDP answer with TC set, so that a
resolver has to ask again over TCP; a name in s.drop gets no answer at all
(a resolver that times out). Names compare case-insensitively, and
the question goes back byte for byte (resolvers that randomize the case of
their query, as libevent's evdns does, check it). A malformed query gets
FORMERR when its header can be read, nothing otherwise.

One daemon thread serves both sockets; a TCP client gets at most
TCP_IDLE seconds per read and MAX_TCP_QUERIES queries per connection. The
thread ends on stop() or after `lifetime` seconds, whichever comes first.
"""

import select
import socket
import struct
import threading
import time

TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 15: "MX", 16: "TXT", 33: "SRV", 255: "ANY"}
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
MAX_MSG = 512           # a query bigger than this is not one a stub resolver sends
TCP_IDLE = 2.0
MAX_TCP_QUERIES = 16


class FormatError(ValueError):
    pass


def parse_question(msg):
    """(id, flags, raw question bytes, lowercase name, qtype, qclass) of a
    query with exactly one question; FormatError otherwise."""
    if len(msg) < 12:
        raise FormatError("short header")
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", msg[:12])
    if flags & 0x8000 or qd != 1 or an or ns:
        raise FormatError("not a plain query")
    pos, labels = 12, []
    while True:
        if pos >= len(msg):
            raise FormatError("name runs past the end")
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n > 63:                      # no compression in a question
            raise FormatError("bad label length")
        label = msg[pos:pos + n]
        if len(label) != n:
            raise FormatError("label runs past the end")
        labels.append(label.decode("ascii", "replace").lower())
        pos += n
        if pos - 12 > 255:
            raise FormatError("name too long")
    if pos + 4 > len(msg):
        raise FormatError("no type and class")
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return qid, flags, msg[12:pos + 4], ".".join(labels), qtype, qclass


def reply(qid, qflags, question, rcode, answers=(), tc=False, rrtype=1):
    """A response: QR, the query's opcode and RD, RA; answers are packed
    addresses (4 bytes for A, 16 for AAAA: rrtype) for the question's name
    (a pointer to offset 12)."""
    flags = 0x8000 | (qflags & 0x7800) | (qflags & 0x0100) | 0x0080 | rcode
    if tc:
        flags |= 0x0200
    head = struct.pack("!6H", qid, flags, 1 if question else 0, len(answers), 0, 0)
    rrs = b"".join(struct.pack("!HHHIH", 0xC00C, rrtype, 1, 60, len(a)) + a for a in answers)
    return head + question + rrs


class DnsStub:
    def __init__(self, table, addr="127.0.0.77", port=53, lifetime=120.0):
        self.table = {k.lower().rstrip("."): socket.inet_aton(v) for k, v in table.items()}
        self.aaaa = {}          # name -> IPv6 address, for AAAA
        self.truncate = set()
        self.drop = set()
        self.addr = addr
        self.port = port
        self.lifetime = lifetime
        self.queries = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.udp = self.tcp = None

    # ---- API --------------------------------------------------------------

    def start(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.udp.bind((self.addr, self.port))
            self.tcp.bind((self.addr, self.port))
            self.tcp.listen(8)
        except OSError:
            self.udp.close()
            self.tcp.close()
            raise
        self._thread = threading.Thread(target=self._serve, name="dnsstub", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in (self.udp, self.tcp):
            if s is not None:
                s.close()

    def count(self, name=None, qtype=None, proto=None):
        name = name.lower().rstrip(".") if name else None
        with self._lock:
            return sum(1 for p, n, t in self.queries
                       if (name is None or n == name) and (qtype is None or t == qtype)
                       and (proto is None or p == proto))

    # ---- serving ------------------------------------------------------------

    def answer(self, msg, proto):
        try:
            qid, flags, question, name, qtype, qclass = parse_question(msg)
        except FormatError:
            if len(msg) < 12:
                return None
            qid, flags = struct.unpack("!HH", msg[:4])
            return reply(qid, flags, b"", FORMERR)
        tname = TYPES.get(qtype, str(qtype))
        with self._lock:
            self.queries.append((proto, name, tname))
        if name in self.drop:
            return None
        if (flags >> 11) & 0xF != 0 or qclass != 1:
            return reply(qid, flags, question, NOTIMP)
        if name not in self.table:
            return reply(qid, flags, question, NXDOMAIN)
        if proto == "udp" and name in self.truncate:
            return reply(qid, flags, question, NOERROR, tc=True)
        if qtype == 28 and name in self.aaaa:
            return reply(qid, flags, question, NOERROR,
                         [socket.inet_pton(socket.AF_INET6, self.aaaa[name])], rrtype=28)
        return reply(qid, flags, question, NOERROR,
                     [self.table[name]] if qtype == 1 else [])

    def _serve(self):
        deadline = time.monotonic() + self.lifetime
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.1)
            except (OSError, ValueError):
                return
            if self.udp in ready:
                try:
                    msg, peer = self.udp.recvfrom(4096)
                    out = self.answer(msg[:MAX_MSG], "udp")
                    if out is not None:
                        self.udp.sendto(out, peer)
                except OSError:
                    pass
            if self.tcp in ready:
                try:
                    conn, _ = self.tcp.accept()
                except OSError:
                    continue
                with conn:
                    self._serve_tcp(conn)

    def _serve_tcp(self, conn):
        conn.settimeout(TCP_IDLE)
        try:
            for _ in range(MAX_TCP_QUERIES):
                head = self._read(conn, 2)
                if head is None:
                    return
                n = struct.unpack("!H", head)[0]
                if n > MAX_MSG:
                    return
                msg = self._read(conn, n)
                if msg is None:
                    return
                out = self.answer(msg, "tcp")
                if out is None:
                    return
                conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return

    @staticmethod
    def _read(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
