/*
 * cli_audit.c: "smtpvault audit verify" (walk the keyed hash chain of one or
 * more log files and name the first bad line and why) and "smtpvault audit
 * show" (filter the log into a readable table or JSON). The line format and
 * the engines behind both live in audit.c.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "cli.h"
#include "log.h"
#include "util.h"

#define SHOW_USAGE	"smtpvault audit show [--since T] [--until T] [--account A] " \
			"[--client C] [--sender S] [--status ST] [--event E] [--limit N] [--json]"
#define VERIFY_USAGE	"smtpvault audit verify [FILE...]"
#define AUDIT_USAGE	"smtpvault audit verify [FILE...] | show [options]"


/* ---- recording CLI actions -------------------------------------------------- */

/*
 * Record one event of a CLI command in the audit log (SPEC section 7), keyed
 * with the vault the command has open. A missing "by" becomes "cli:<user>".
 * ev is consumed. Prints the error and returns EXIT_FAILED when the event
 * could not be written durably, so the command can exit 1.
 */
int
cli_audit_record(struct cli *cli, const struct vault *v, json_t *ev)
{
	unsigned char key[AUDIT_KEY_BYTES];
	struct audit *a = NULL;
	char err[1024], by[VAULT_NAME_MAX + 8];
	json_t *who;
	int rc = EXIT_FAILED;

	if (ev == NULL) {
		cli_error("audit: out of memory");
		return EXIT_FAILED;
	}
	who = json_object_get(ev, "by");
	if (who == NULL || json_is_null(who)) {
		snprintf(by, sizeof(by), "cli:%s", cli->actor != NULL ? cli->actor : "unknown");
		if (audit_set_str(ev, "by", by) == -1) {
			cli_error("audit: out of memory");
			goto done;
		}
	}
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		goto done;
	rc = EXIT_FAILED;
	if (vault_derive_audit_key(v, key) == -1) {
		cli_error("cannot derive the audit key from the vault");
		goto done;
	}
	a = audit_open(cli->cfg.audit_path, key, err, sizeof(err));
	sodium_memzero(key, sizeof(key));
	if (a == NULL || audit_append(a, ev, err, sizeof(err)) == -1) {
		cli_error("%s (the action was not recorded in the audit log)", err);
		goto done;
	}
	rc = EXIT_OK;
done:
	audit_close(a);
	json_decref(ev);
	return rc;
}

/* Column widths of the human table, in characters. */
#define COL_EVENT	7
#define COL_STATUS	12
#define COL_ACCOUNT	26
#define COL_CLIENT	24
#define COL_DETAIL	110
#define COL_RCPTS_SHOWN	2	/* recipients listed before "(+N)" */
#define CELL_ESC_MAX	10	/* "\\u{10FFFF}" */
#define CELL_MAX	(CELL_ESC_MAX * COL_DETAIL + 16)	/* bytes: UTF-8 and escapes */

static const char *const known_events[] = { "message", "reject", "account", "admin", "vault" };
static const char *const known_status[] = {
	"queued", "delivered", "deferred", "failed", "rejected"
};

static int
wants_help(int argc, char **argv, const char *use)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: %s\n", use);
			return 1;
		}
	}
	return 0;
}

/* ---- verify --------------------------------------------------------------- */

static int
audit_verify_cmd(struct cli *cli, int argc, char **argv)
{
	unsigned char key[AUDIT_KEY_BYTES];
	struct audit_verify r;
	struct vault *v = NULL;
	char err[1024], expect[AUDIT_MAC_HEX + 1] = "", first_ts[AUDIT_TS_LEN + 1] = "";
	char last_ts[AUDIT_TS_LEN + 1] = "";
	const char *def[1], *const *files;
	uint64_t total = 0;
	int i, n, rc;

	if (wants_help(argc, argv, VERIFY_USAGE))
		return EXIT_OK;
	for (i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1] != '\0') {
			cli_error("unknown option '%s'; usage: %s", argv[i], VERIFY_USAGE);
			return EXIT_USAGE;
		}
	}
	if ((rc = cli_open_vault(cli, 0, &v)) != EXIT_OK)
		return rc;
	rc = vault_derive_audit_key(v, key);
	vault_close(v);
	if (rc == -1) {
		cli_error("cannot derive the audit key from the vault");
		return EXIT_FAILED;
	}
	if (argc > 1) {
		files = (const char *const *)argv + 1;
		n = argc - 1;
	} else {
		def[0] = cli->cfg.audit_path;
		files = def;
		n = 1;
	}
	rc = EXIT_OK;
	for (i = 0; i < n; i++) {
		if (audit_verify_file(files[i], key, expect[0] != '\0' ? expect : NULL,
		    i == n - 1, &r, err, sizeof(err)) == -1) {
			cli_error("%s", err);
			rc = EXIT_FAILED;
			break;
		}
		if (r.fault != AUDIT_FAULT_NONE) {
			cli_error("audit log %s line %" PRIu64 ": %s: %s", files[i], r.line,
			    audit_fault_name(r.fault), r.why);
			printf("audit log FAILED at %s line %" PRIu64 " (%" PRIu64 " %s before it "
			    "checked and intact)\n", files[i], r.line, total + r.entries,
			    total + r.entries == 1 ? "entry" : "entries");
			rc = EXIT_FAILED;
			break;
		}
		if (i == 0 && r.continues)
			printf("note: %s begins where an earlier (rotated) file ended; give the "
			    "older files first, oldest first, to check the links too\n", files[i]);
		if (r.head_lags)
			printf("note: %s.head is one entry behind the log (a writer stopped "
			    "between its write and the head update); harmless\n", files[i]);
		if (r.entries > 0) {
			if (first_ts[0] == '\0')
				memcpy(first_ts, r.first_ts, sizeof(first_ts));
			memcpy(last_ts, r.last_ts, sizeof(last_ts));
		}
		if (r.last_mac[0] != '\0')
			memcpy(expect, r.last_mac, sizeof(expect));
		total += r.entries;
	}
	sodium_memzero(key, sizeof(key));
	if (rc != EXIT_OK)
		return rc;
	printf("audit log OK: %" PRIu64 " entries checked", total);
	if (n > 1)
		printf(" in %d files", n);
	if (total > 0)
		printf(", %s .. %s", first_ts, last_ts);
	printf("\n");
	return EXIT_OK;
}

/* ---- show ----------------------------------------------------------------- */

/* A field of the row as text, or NULL; buffers are per field slot. */
struct row {
	struct audit_fields	fs;
	char			buf[8][AUDIT_FIELD_MAX + 1];
	size_t			used;
};

struct show_out {
	int		json;
	uint64_t	printed;
	struct row	row;
};

/* Is cp a code point that must not reach a terminal as it is: C0 and C1
 * controls, DEL, and the bidirectional overrides that can disguise text? */
static int
unsafe_codepoint(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || (cp >= 0x200e && cp <= 0x200f) ||
	    (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* The code point at p and its length; an invalid byte is reported as itself
 * with *bad set (text cut by strlcat may end in half a character). */
static size_t
decode_utf8(const unsigned char *p, uint32_t *cp, int *bad)
{
	size_t k, i;

	*bad = 0;
	if (*p < 0x80) {
		*cp = *p;
		return 1;
	}
	k = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 0;
	*cp = k == 4 ? (uint32_t)(*p & 0x07) : k == 3 ? (uint32_t)(*p & 0x0f) :
	    (uint32_t)(*p & 0x1f);
	for (i = 1; i < k; i++) {
		if ((p[i] & 0xc0) != 0x80)
			break;
		*cp = *cp << 6 | (p[i] & 0x3f);
	}
	if (k == 0 || i < k) {
		*bad = 1;
		*cp = *p;
		return 1;
	}
	return k;
}

/*
 * Copy text for a terminal cell: unsafe code points become \u{XXXX} and
 * invalid bytes \xNN, at most maxchars characters, cut with "...". dstlen
 * must be at least CELL_ESC_MAX + 4. Returns dst.
 */
static char *
cell(char *dst, size_t dstlen, const char *src, size_t maxchars)
{
	const unsigned char *p = (const unsigned char *)(src != NULL ? src : "-");
	size_t o = 0, chars = 0, k, n;
	uint32_t cp;
	char esc[CELL_ESC_MAX + 1];
	int bad;

	while (*p != '\0') {
		k = decode_utf8(p, &cp, &bad);
		if (chars + 1 > maxchars || o + CELL_ESC_MAX + 4 > dstlen) {
			/* Make room for the "..." within the width. */
			while (chars + 3 > maxchars && o > 0) {
				do {
					o--;
				} while (o > 0 && ((unsigned char)dst[o] & 0xc0) == 0x80);
				chars--;
			}
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		if (bad || unsafe_codepoint(cp)) {
			n = (size_t)snprintf(esc, sizeof(esc), bad ? "\\x%02" PRIX32 :
			    "\\u{%04" PRIX32 "}", cp);
			memcpy(dst + o, esc, n);
			o += n;
			chars += n;
		} else {
			memcpy(dst + o, p, k);
			o += k;
			chars++;
		}
		p += k;
	}
	dst[o] = '\0';
	return dst;
}

/* printf's width counts bytes; pad by characters so UTF-8 columns line up. */
static void
put_cell(const char *s, size_t width)
{
	size_t chars = 0;
	const char *p;

	for (p = s; *p != '\0'; p++)
		if (((unsigned char)*p & 0xc0) != 0x80)
			chars++;
	fputs(s, stdout);
	for (; chars < width + 2; chars++)
		putchar(' ');
}

/* A field of the row as text, or NULL (while the row has buffers left). */
static const char *
field(struct row *r, const char *key)
{
	char *b;

	if (r->used == ARRAY_SIZE(r->buf))
		return NULL;
	b = r->buf[r->used];
	if (audit_fields_get(&r->fs, key, 0, b, sizeof(r->buf[0])) == -1)
		return NULL;
	r->used++;
	return b;
}

/* "sender -> a, b (+3) "subject" reply" for a message, a summary otherwise. */
static void
detail_of(struct row *r, const char *event, char *buf, size_t len)
{
	char rcpt[AUDIT_FIELD_MAX + 1], more[32];
	const char *s, *qid, *ver;
	size_t i, n;

	buf[0] = '\0';
	if (strcmp(event, "message") == 0) {
		qid = field(r, "queue_id");
		s = field(r, "mail_from");
		snprintf(buf, len, "%s%s%s -> ", qid != NULL ? qid : "", qid != NULL ? " " : "",
		    s == NULL ? "-" : s[0] == '\0' ? "<>" : s);
		n = audit_fields_count(&r->fs, "rcpt_to");
		for (i = 0; i < n && i < COL_RCPTS_SHOWN; i++) {
			if (audit_fields_get(&r->fs, "rcpt_to", i, rcpt, sizeof(rcpt)) == -1)
				break;
			strlcat(buf, i > 0 ? ", " : "", len);
			strlcat(buf, rcpt, len);
		}
		if (n > COL_RCPTS_SHOWN) {
			snprintf(more, sizeof(more), " (+%zu)", n - COL_RCPTS_SHOWN);
			strlcat(buf, more, len);
		}
		if ((s = field(r, "subject")) != NULL) {
			strlcat(buf, " \"", len);
			strlcat(buf, s, len);
			strlcat(buf, "\"", len);
		}
		if ((s = field(r, "upstream_reply")) != NULL) {
			strlcat(buf, " ", len);
			strlcat(buf, s, len);
		}
	} else if (strcmp(event, "reject") == 0) {
		strlcpy(buf, (s = field(r, "reason")) != NULL ? s : "-", len);
		if ((s = field(r, "command")) != NULL) {
			strlcat(buf, " (", len);
			strlcat(buf, s, len);
			strlcat(buf, ")", len);
		}
	} else if (strcmp(event, "account") == 0) {
		if ((ver = field(r, "version")) != NULL)
			snprintf(buf, len, "version %s ", ver);
		strlcat(buf, "by ", len);
		strlcat(buf, (s = field(r, "by")) != NULL ? s : "-", len);
		if ((s = field(r, "upstream_reply")) != NULL) {
			strlcat(buf, ": ", len);
			strlcat(buf, s, len);
		}
	} else if (strcmp(event, "admin") == 0) {
		snprintf(buf, len, "user %s", (s = field(r, "user")) != NULL ? s : "-");
		if ((s = field(r, "by")) != NULL) {
			strlcat(buf, " by ", len);
			strlcat(buf, s, len);
		}
	} else {
		snprintf(buf, len, "by %s", (s = field(r, "by")) != NULL ? s : "-");
	}
}

static int
show_row(void *arg, const char *line, size_t len, uint64_t off, json_t *obj)
{
	struct show_out *o = arg;
	struct row *r = &o->row;
	char c[CELL_MAX], detail[AUDIT_FIELD_MAX * 2], client[2 * AUDIT_FIELD_MAX + 2];
	char event[AUDIT_FIELD_MAX + 1];
	const char *s, *ts, *status, *name, *ip, *account;

	if (o->json) {
		if (fputs(o->printed == 0 ? "[\n" : ",\n", stdout) == EOF ||
		    fwrite(line, 1, len, stdout) != len)
			return -1;
		o->printed++;
		return 0;
	}
	r->used = 0;
	if (audit_fields_scan(line, len, &r->fs) == -1)
		return 0;
	if (o->printed == 0)
		printf("%-19s  %-*s  %-*s  %-*s  %-*s  %s\n", "TIME (UTC)", COL_EVENT, "EVENT",
		    COL_STATUS, "STATUS", COL_ACCOUNT, "ACCOUNT", COL_CLIENT, "CLIENT", "DETAIL");
	strlcpy(event, (s = field(r, "event")) != NULL ? s : "?", sizeof(event));
	ts = field(r, "ts");
	status = field(r, "status");
	if (status == NULL)
		status = field(r, "action");
	account = field(r, "account");
	name = field(r, "client_name");
	ip = field(r, "client_ip");
	if (ip == NULL)
		ip = field(r, "ip");
	if (name != NULL && ip != NULL)
		snprintf(client, sizeof(client), "%s %s", name, ip);
	else
		strlcpy(client, name != NULL ? name : ip != NULL ? ip : "-", sizeof(client));

	/* 2026-11-26T05:40:56.123Z is shown as 2026-11-26 05:40:56 */
	printf("%.10s %.8s  ", ts != NULL ? ts : "-", ts != NULL && strlen(ts) >= 19 ?
	    ts + 11 : "");
	put_cell(cell(c, sizeof(c), event, COL_EVENT), COL_EVENT);
	put_cell(cell(c, sizeof(c), status, COL_STATUS), COL_STATUS);
	put_cell(cell(c, sizeof(c), account, COL_ACCOUNT), COL_ACCOUNT);
	put_cell(cell(c, sizeof(c), client, COL_CLIENT), COL_CLIENT);
	r->used = 0;		/* the detail may reuse every buffer */
	detail_of(r, event, detail, sizeof(detail));
	if (printf("%s\n", cell(c, sizeof(c), detail, COL_DETAIL)) < 0)
		return -1;
	o->printed++;
	return 0;
}

static int
in_list(const char *s, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return 1;
	return 0;
}

static int
audit_show_cmd(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "since",	required_argument, NULL, 's' },
		{ "until",	required_argument, NULL, 'u' },
		{ "account",	required_argument, NULL, 'a' },
		{ "client",	required_argument, NULL, 'c' },
		{ "sender",	required_argument, NULL, 'f' },
		{ "status",	required_argument, NULL, 't' },
		{ "event",	required_argument, NULL, 'e' },
		{ "limit",	required_argument, NULL, 'n' },
		{ "json",	no_argument,	   NULL, 'j' },
		{ NULL, 0, NULL, 0 }
	};
	struct audit_filter f;
	struct audit_query_stats st;
	struct show_out out;
	char err[1024];
	uint64_t limit;
	time_t now = time(NULL);
	int ch, rc;

	if (wants_help(argc, argv, SHOW_USAGE))
		return EXIT_OK;
	memset(&f, 0, sizeof(f));
	memset(&out, 0, sizeof(out));
	f.raw_only = 1;		/* rows are read with audit_fields, not a JSON tree */
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
		case 'u':
			if (time_parse(optarg, now, ch == 's' ? &f.since : &f.until) == -1) {
				cli_error("--%s: '%s' is not an RFC 3339 time, a date or a relative "
				    "age (2h, 7d)", ch == 's' ? "since" : "until", optarg);
				return EXIT_USAGE;
			}
			*(ch == 's' ? &f.has_since : &f.has_until) = 1;
			break;
		case 'a':
			f.account = optarg;
			break;
		case 'c':
			f.client = optarg;
			break;
		case 'f':
			/* "<>" is how mail people write the null sender. */
			f.sender = strcmp(optarg, "<>") == 0 ? "" : optarg;
			break;
		case 't':
			if (!in_list(optarg, known_status, ARRAY_SIZE(known_status))) {
				cli_error("--status: '%s' is not one of queued, delivered, deferred, "
				    "failed, rejected", optarg);
				return EXIT_USAGE;
			}
			f.status = optarg;
			break;
		case 'e':
			if (!in_list(optarg, known_events, ARRAY_SIZE(known_events))) {
				cli_error("--event: '%s' is not one of message, reject, account, "
				    "admin, vault", optarg);
				return EXIT_USAGE;
			}
			f.event = optarg;
			break;
		case 'n':
			if (parse_u64(optarg, 1, SIZE_MAX, &limit) == -1) {
				cli_error("--limit: '%s' is not a positive number", optarg);
				return EXIT_USAGE;
			}
			f.limit = (size_t)limit;
			break;
		case 'j':
			out.json = 1;
			break;
		default:
			cli_error("usage: %s", SHOW_USAGE);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		cli_error("unexpected argument '%s'; usage: %s", argv[optind], SHOW_USAGE);
		return EXIT_USAGE;
	}
	if (f.has_since && f.has_until && f.until < f.since) {
		cli_error("--until is before --since");
		return EXIT_USAGE;
	}
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	if (audit_query(cli->cfg.audit_path, &f, show_row, &out, &st, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		return EXIT_FAILED;
	}
	if (out.json)
		fputs(out.printed == 0 ? "[]\n" : "\n]\n", stdout);
	else if (out.printed == 0)
		fprintf(stderr, "no matching entries (%" PRIu64 " looked at)\n", st.lines);
	if (st.skipped > 0)
		cli_error("warning: %" PRIu64 " lines of %s are not audit entries and were "
		    "skipped; run 'smtpvault audit verify'", st.skipped, cli->cfg.audit_path);
	if (fflush(stdout) == EOF) {
		cli_error("cannot write the output");
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

int
cmd_audit(struct cli *cli, int argc, char **argv)
{
	const char *sub;

	if (argc < 2) {
		cli_error("usage: %s", AUDIT_USAGE);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("usage: %s\n", AUDIT_USAGE);
		return EXIT_OK;
	}
	sub = argv[1];
	argc--;
	argv++;
	optind = 0;		/* glibc: reinitialise getopt for the subcommand */
	if (strcmp(sub, "verify") == 0)
		return audit_verify_cmd(cli, argc, argv);
	if (strcmp(sub, "show") == 0)
		return audit_show_cmd(cli, argc, argv);
	cli_error("unknown audit command '%s'; usage: %s", sub, AUDIT_USAGE);
	return EXIT_USAGE;
}
