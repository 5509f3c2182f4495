#!/usr/bin/python3
"""queue_bench.py: durable throughput of delivery = queue (issue 5), against
Postfix as a smarthost relay, in the same run, to the same Gmail-like sink
(tests/bench/sink.c: STARTTLS, AUTH, 250 for every message). Started by
queue.sh (make bench-queue), which provides the temporary directory, makes
sure Postfix is installed without a system instance, and cleans up.

Load: tests/bench/loadgen.c in flood mode, CONNS concurrent pipelined
sessions on the LAN side sending 4 KiB messages back to back for SECS
seconds (after a warm-up whose messages are not in the latency figures).
Per system and round:

  accepted/s   messages that got their 250, over the measured window
  p50 / p99    final dot to 250, as loadgen sees it
  delivered/s  messages the sink received, over the time from the start of
               the run to the sink's last 250 (so a backlog left in the queue
               at the end of the load counts against the system)
  CPU us/msg   the system's CPU time per delivered message

Both systems make a message durable before its 250: smtpvault fsyncs the
spool file, its directory and the audit event (group commit), Postfix
fsyncs its queue file (its default). The systems alternate round by round;
the report gives the median and the range of the rounds.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (the shared harness: sink, Postfix, smtpvault, PKI)

HERE = os.path.dirname(os.path.abspath(__file__))


class QueueBench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.loadgen_bin = os.path.join(self.build, "bench", "loadgen")
        self.pki = B.Pki(os.path.join(args.tmp, "pki"))
        self.sink = B.Sink(os.path.join(self.build, "bench", "sink"),
                           os.path.join(args.tmp, "sink"), self.pki, args.lifetime)
        self.systems = {}
        self.id_base = 1
        self.stopped = False

    def add_smtpvault(self, name, sessions):
        s = B.Smtpvault(name, os.path.join(self.build, "smtpvault"),
                        os.path.join(self.args.tmp, name), self.sink, self.pki,
                        delivery="queue", sessions=sessions)
        s.start()
        self.systems[name] = s

    def add_postfix(self, name, profile):
        p = B.Postfix(name, os.path.join(self.args.tmp, name), self.sink, self.pki,
                      profile, os.path.join(HERE, "postfix.sh"))
        p.start()
        self.systems[name] = p

    def settle(self):
        """Every system's queue empty, so that no run pays for another's
        backlog (Postfix delivers much slower than it accepts)."""
        deadline = time.monotonic() + 300
        for s in self.systems.values():
            s.settle(timeout=300)
            spool = os.path.join(s.dir, "spool", "queue")
            while s.kind == "smtpvault" and os.path.isdir(spool) and os.listdir(spool):
                if time.monotonic() > deadline:
                    raise B.BenchError(f"{s.name}: spool not empty after 300 s")
                time.sleep(0.1)

    def flood(self, system):
        a = self.args
        self.settle()
        s0 = self.sink.stats()
        c0 = system.cpu_ns()
        t0 = time.time_ns()
        p = B.run([self.loadgen_bin, "flood", "-c", str(a.conns), "-T", str(a.secs + a.warm),
                   "-w", str(a.warm), "-l", str(B.MSG_SIZE), "-f", B.SENDER, "-t", B.RCPT,
                   "-i", str(self.id_base), f"127.0.0.1:{system.port}"],
                  timeout=a.secs + a.warm + 120, check=False)
        if p.returncode != 0:
            raise B.BenchError(f"loadgen against {system.name}: {p.stderr.strip()[-400:]}")
        st = B.kv_parse(p.stdout)
        self.id_base += st["sent"] + 1
        s1 = self.sink.wait_messages(s0["messages"] + st["ok"], timeout=600)
        delivered = s1["messages"] - s0["messages"]
        if delivered < st["ok"]:
            raise B.BenchError(f"{system.name}: {st['ok']} accepted, only {delivered} "
                               "reached the sink")
        c1 = system.cpu_ns()
        secs = (s1["last_msg_real_ns"] - t0) / 1e9
        return {"accepted": st["rate"], "p50": st["lat_p50_us"] / 1000.0,
                "p99": st["lat_p99_us"] / 1000.0, "ok": st["ok"], "failed": st["failed"],
                "delivered": delivered / secs, "cpu": (c1 - c0) / 1e3 / max(1, delivered),
                "tail": secs - (a.secs + a.warm)}

    def run(self):
        a = self.args
        names = list(self.systems)
        out = {n: [] for n in names}
        for name in names:                  # warm-up: sessions, caches, page cache
            self.flood_quiet(name, warm=True)
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                res = self.flood(self.systems[name])
                out[name].append(res)
                B.log(f"round {r + 1} {name}: {res['accepted']:.0f} accepted/s "
                      f"(p50 {res['p50']:.1f} ms, p99 {res['p99']:.1f} ms), "
                      f"{res['delivered']:.0f} delivered/s, {res['cpu']:.0f} us CPU/msg, "
                      f"{res['failed']} refused")
        return out

    def flood_quiet(self, name, warm):
        a = self.args
        saved = (a.secs, a.warm)
        a.secs, a.warm = 2, 1
        try:
            res = self.flood(self.systems[name])
        finally:
            a.secs, a.warm = saved
        B.log(f"warm-up {name}: {res['accepted']:.0f} accepted/s, "
              f"{res['delivered']:.0f} delivered/s")

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        for s in self.systems.values():
            s.stop()
        self.sink.stop()


def med(values):
    m, lo, hi = B.median_range(values)
    return m, lo, hi


def fmt(values, digits=0):
    m, lo, hi = med(values)
    f = f"{{:.{digits}f}}"
    return f"{f.format(m)} ({f.format(lo)}-{f.format(hi)})"


def report(args, out, spool_stats):
    lines = [
        f"Queue benchmark (make bench-queue): {args.conns} concurrent LAN clients, "
        f"4 KiB messages, {args.secs} s per run after {args.warm} s of warm-up, "
        f"{args.rounds} rounds, median (min-max); sink on 127.0.0.1 with RTT 0.",
        "",
        "| system | accepted msg/s | p50 dot->250 ms | p99 dot->250 ms | delivered msg/s "
        "| CPU us/msg |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in out.items():
        lines.append(f"| {name} | {fmt([r['accepted'] for r in rs])} | "
                     f"{fmt([r['p50'] for r in rs], 1)} | {fmt([r['p99'] for r in rs], 1)} | "
                     f"{fmt([r['delivered'] for r in rs])} | {fmt([r['cpu'] for r in rs])} |")
    pf = [n for n in out if n.startswith("postfix")]
    sv = [n for n in out if n.startswith("smtpvault")]
    if pf and sv:
        lines.append("")
        for s in sv:
            for p in pf:
                ratio = [a["delivered"] / b["delivered"] for a, b in zip(out[s], out[p])]
                acc = [a["accepted"] / b["accepted"] for a, b in zip(out[s], out[p])]
                lines.append(f"- {s} / {p}: delivered {fmt(ratio, 2)}x, "
                             f"accepted {fmt(acc, 2)}x")
    if spool_stats:
        lines.append("")
        lines.append(spool_stats)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(B.ROOT, "build"))
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lifetime", type=int, default=1800)
    ap.add_argument("--sessions", default="3,20",
                    help="smtpvault max_sessions_per_account values to run")
    ap.add_argument("--no-postfix", action="store_true")
    args = ap.parse_args()
    qb = QueueBench(args)
    try:
        for n in args.sessions.split(","):
            qb.add_smtpvault(f"smtpvault-queue-{n}s", int(n))
        if not args.no_postfix:
            qb.add_postfix("postfix-default", "default")
            qb.add_postfix("postfix-best", "best")
        out = qb.run()
        qb.stop()               # smtpvault logs its group-commit figures at exit
        stats = []
        for name, s in qb.systems.items():
            if name.startswith("smtpvault"):
                try:
                    with open(os.path.join(s.dir, "smtpvault.stderr")) as f:
                        tail = [l for l in f if "event=spool_io" in l]
                    if tail:
                        stats.append(f"{name}: {tail[-1].strip()}")
                except OSError:
                    pass
        print(report(args, out, "\n".join(stats)))
    except B.BenchError as e:
        print(f"bench-queue: {e}", file=sys.stderr)
        return 1
    finally:
        qb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
