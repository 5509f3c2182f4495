#!/bin/bash
# make bench-audit: how fast "smtpvault audit show" filters a large log.
# Builds a key-file vault and a config in a temp dir, generates ENTRIES
# (default 1,000,000) audit entries spread over 30 days with valid macs (a
# small C program linked against build/libsmtpvault.a, using the real line
# format and the key derived from the vault, without fsync per line), then
# times the real CLI on several filters. Each figure is the median of RUNS
# runs after one warm-up, process start-up included, output to /dev/null.
# Exits 1 when any query takes longer than BUDGET seconds (default 2).
set -euo pipefail
bin=$(readlink -f "${1:-build/smtpvault}")
root=$(cd "$(dirname "$0")/../.." && pwd)
lib="$(dirname "$bin")/libsmtpvault.a"
entries=${ENTRIES:-1000000}
runs=${RUNS:-3}
budget=${BUDGET:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

[ -x "$bin" ] || { echo "bench-audit: no binary at $bin (run make)" >&2; exit 2; }
[ -f "$lib" ] || { echo "bench-audit: no library at $lib (run make)" >&2; exit 2; }

cat > "$tmp/gen.c" <<'EOF'
/* gen: write N audit entries with valid macs to LOG (and LOG.head). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "util.h"
#include "vault.h"

#define SPAN_MS		(30LL * 86400 * 1000)
#define PERMILLE	1000

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t
rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng % n;
}

static const char *const accounts[] = { "team@example.com", "alerts@example.com",
    "billing@example.com", "support@example.com" };
static const char *const clients[][2] = { { "lan", "10.0.0." }, { "monitoring", "10.0.5." },
    { "crm", "10.0.7." }, { "printers", "10.0.9." } };
static const char *const senders[] = { "nagios@ops.example.com", "cron@ops.example.com",
    "invoices@example.com", "noreply@example.com", "team@example.com", "Bob@Example.com" };
static const char *const statuses[] = { "delivered", "queued", "deferred", "failed",
    "rejected" };
static const int status_permille[] = { 700, 900, 970, 990, 1000 };

static json_t *
message(uint64_t i, int64_t ts)
{
	static char rc[3][64];
	const char *rcpts[3];
	struct audit_message m;
	char ip[32], qid[32], subj[128], mid[128], reply[192];
	size_t k, n = 1 + rnd(3), c = rnd(4), s;
	uint64_t p = rnd(PERMILLE);

	for (k = 0; k < n; k++) {
		snprintf(rc[k], sizeof(rc[k]), "customer%" PRIu64 "@mail%" PRIu64 ".example.net",
		    rnd(100000), rnd(50));
		rcpts[k] = rc[k];
	}
	for (s = 0; (int)p >= status_permille[s]; s++)
		;
	snprintf(ip, sizeof(ip), "%s%" PRIu64, clients[c][1], 2 + rnd(200));
	snprintf(qid, sizeof(qid), "%012" PRIX64, i * 2654435761u);
	snprintf(subj, sizeof(subj), "Invoice #%" PRIu64 " for customer %" PRIu64 " (Rechnung f\xc3\xbcr Kunde)",
	    i, rnd(100000));
	snprintf(mid, sizeof(mid), "<%" PRIu64 ".%" PRId64 "@app%" PRIu64 ".example.com>", i, ts,
	    rnd(8));
	snprintf(reply, sizeof(reply), s == 0 ? "250 2.0.0 OK  %" PRId64 " a640c23a62f3a-%" PRIx64
	    ".%" PRIu64 " - gsmtp" : "421 4.7.0 Try again later, closing connection. %" PRId64
	    " %" PRIx64 ".%" PRIu64 " - gsmtp", ts / 1000, rng, i);
	memset(&m, 0, sizeof(m));
	m.queue_id = qid;
	m.client_ip = ip;
	m.client_name = clients[c][0];
	m.helo = "host.lan";
	m.mail_from = senders[rnd(6)];
	m.rcpt_to = rcpts;
	m.n_rcpt_to = n;
	m.header_from = m.mail_from;
	m.subject = subj;
	m.message_id = mid;
	m.size = 2000 + rnd(200000);
	/* One message in a thousand goes through a rarely used account. */
	m.account = rnd(PERMILLE) == 0 ? "rare@example.com" : accounts[rnd(4)];
	m.credential_version = 1 + (uint32_t)rnd(3);
	m.status = (enum audit_status)s;
	m.upstream_reply = s == 1 ? NULL : reply;
	m.attempt = s == 1 ? 0 : 1 + (uint32_t)rnd(3);
	m.duration_ms = rnd(3000);
	return audit_message_event(&m);
}

static json_t *
other(int64_t ts)
{
	char ip[32];

	snprintf(ip, sizeof(ip), "203.0.113.%" PRIu64, rnd(250));
	switch (rnd(3)) {
	case 0:
		return audit_reject_event(ip, NULL, "not allowed to relay", "CONNECT");
	case 1:
		return audit_account_event(AUDIT_ACCOUNT_AUTH_FAILED, accounts[rnd(4)], 2,
		    "daemon", NULL);
	default:
		return audit_admin_event(AUDIT_ADMIN_LOGIN_FAILED, "alice", ip, NULL);
	}
}

int
main(int argc, char **argv)
{
	struct vault_keysrc src;
	struct vault *v;
	unsigned char key[AUDIT_KEY_BYTES];
	char err[1024], prev[AUDIT_MAC_HEX + 1], mac[AUDIT_MAC_HEX + 1], head[PATH_MAX], *line;
	uint64_t i, n;
	int64_t end, ts;
	size_t len;
	json_t *ev;
	FILE *fp;

	if (argc != 5 || sodium_init() == -1 || parse_u64(argv[4], 1, UINT64_MAX, &n) == -1) {
		fprintf(stderr, "usage: gen VAULT KEYFILE LOG N\n");
		return 2;
	}
	if (vault_keysrc_from_file(argv[2], 1, &src, err, sizeof(err)) == -1 ||
	    vault_open(argv[1], &src, 0, &v, err, sizeof(err)) == -1) {
		fprintf(stderr, "gen: %s\n", err);
		return 1;
	}
	vault_keysrc_wipe(&src);
	if (vault_derive_audit_key(v, key) == -1)
		return 1;
	vault_close(v);
	if ((fp = fopen(argv[3], "w")) == NULL)
		return 1;
	setvbuf(fp, NULL, _IOFBF, 1 << 20);
	memset(prev, '0', AUDIT_MAC_HEX);
	prev[AUDIT_MAC_HEX] = '\0';
	end = (int64_t)time(NULL) * 1000;
	for (i = 0; i < n; i++) {
		ts = end - SPAN_MS + (int64_t)(i * (uint64_t)SPAN_MS / n);
		ev = rnd(100) < 95 ? message(i, ts) : other(ts);
		if (ev == NULL || (line = audit_line_build(key, prev, ts, ev, mac, &len, err,
		    sizeof(err))) == NULL) {
			fprintf(stderr, "gen: %s\n", err);
			return 1;
		}
		fwrite(line, 1, len, fp);
		memcpy(prev, mac, sizeof(prev));
		free(line);
		json_decref(ev);
	}
	if (fclose(fp) != 0)
		return 1;
	snprintf(head, sizeof(head), "%s.head", argv[3]);
	if ((fp = fopen(head, "w")) == NULL || fprintf(fp, "%s\n", prev) < 0 || fclose(fp) != 0)
		return 1;
	sodium_memzero(key, sizeof(key));
	return 0;
}
EOF

pkgs="libsodium openssl libevent libevent_openssl libmicrohttpd jansson inih libbsd"
# shellcheck disable=SC2046 # pkg-config output is a list of flags
cc -std=c11 -D_GNU_SOURCE -O2 -I"$root/proxy" -I"$root/vault" $(pkg-config --cflags $pkgs) \
	-o "$tmp/gen" "$tmp/gen.c" "$lib" $(pkg-config --libs $pkgs)

head -c 32 /dev/urandom > "$tmp/key"
printf '[vault]\npath = %s/vault\nkey_file = %s/key\n\n[audit]\npath = %s/audit.log\n' \
	"$tmp" "$tmp" "$tmp" > "$tmp/conf"
"$bin" -c "$tmp/conf" init > /dev/null

t0=$(date +%s%N)
"$tmp/gen" "$tmp/vault" "$tmp/key" "$tmp/audit.log" "$entries"
t1=$(date +%s%N)
size=$(stat -c %s "$tmp/audit.log")

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() {	# seconds for one run of "$@", output discarded
	local a b
	a=$(date +%s%N)
	"$@" > /dev/null
	b=$(date +%s%N)
	awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

echo "smtpvault audit benchmark: $(uname -m), $(nproc) cores, $entries entries" \
	"($((size / 1048576)) MiB, generated in $(awk -v a="$t0" -v b="$t1" \
	'BEGIN { printf "%.1f", (b - a) / 1e9 }') s), median of $runs runs, budget ${budget} s"
printf '%-58s %9s %9s\n' "audit show ..." "matches" "time (s)"

slow=0
query() {
	local t n
	"$bin" -c "$tmp/conf" audit show "$@" > /dev/null	# warm-up
	n=$("$bin" -c "$tmp/conf" audit show --json "$@" | grep -c '^{' || true)
	t=$(for _ in $(seq "$runs"); do timeit "$bin" -c "$tmp/conf" audit show "$@"; done | median)
	printf '%-58s %9s %9s\n' "$*" "$n" "$t"
	if awk -v t="$t" -v b="$budget" 'BEGIN { exit !(t > b) }'; then
		slow=1
	fi
}

query --account rare@example.com
query --since 1h
query --sender '*@ops.example.com' --status failed
query --client monitoring --since 1d
query --client 10.0.5.17
query --status deferred --since 7d
query --event admin
query --limit 100
query --account alerts@example.com --limit 1000
query --account alerts@example.com

t=$(timeit "$bin" -c "$tmp/conf" audit verify)
printf '%-58s %9s %9s\n' "(audit verify, the whole chain)" "$entries" "$t"

if [ "$slow" -ne 0 ]; then
	echo "bench-audit: FAIL: a query took longer than $budget s"
	exit 1
fi
echo "bench-audit: every query within $budget s"
