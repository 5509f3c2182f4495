/*
 * test_audit.c: the audit log of proxy/audit.c as a specification: lines
 * have the documented shape; every kind of tampering is found at the right
 * line with the right reason; the chain survives rotation (rename, reopen,
 * copytruncate, restart), other writers, failed writes and hostile client
 * text; concurrent processes keep one valid chain; queries filter exactly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "util.h"

#define GENESIS		"0000000000000000000000000000000000000000000000000000000000000000"
#define N_LINES		10	/* lines in the log the tamper tests damage */
#define N_CHILDREN	3
#define N_PER_CHILD	150
#define ERRLEN		512

static const unsigned char test_key[AUDIT_KEY_BYTES] = {
	0x5a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
	0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
	0x1c, 0x1d, 0x1e, 0xa5,
};

struct fixture {
	char	dir[64];
	char	log[128];
	char	rot[128];		/* "<log>.1" */
};

/* ---- helpers ---------------------------------------------------------------- */

static int
setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	strlcpy(fx->dir, "/tmp/smtpvault-audit.XXXXXX", sizeof(fx->dir));
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->log, sizeof(fx->log), "%s/audit.log", fx->dir);
	snprintf(fx->rot, sizeof(fx->rot), "%s/audit.log.1", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

static char *
slurp(const char *path, size_t *len)
{
	uint8_t *buf = NULL;

	assert_int_equal(file_read_all(path, 64u * 1024 * 1024, &buf, len), 0);
	return (char *)buf;
}

static void
spew(const char *path, const char *buf, size_t len)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

static size_t
count_lines(const char *path)
{
	size_t len, i, n = 0;
	char *buf = slurp(path, &len);

	for (i = 0; i < len; i++)
		n += buf[i] == '\n';
	free(buf);
	return n;
}

static json_t *
numbered_event(int i)
{
	json_t *ev = audit_event_new("message");
	char id[32], subj[64];

	assert_non_null(ev);
	snprintf(id, sizeof(id), "Q%06d", i);
	snprintf(subj, sizeof(subj), "report number %d", i);
	assert_int_equal(audit_set_str(ev, "queue_id", id), 0);
	assert_int_equal(audit_set_str(ev, "subject", subj), 0);
	assert_int_equal(audit_set_str(ev, "status", "delivered"), 0);
	return ev;
}

static void
append_n(const char *path, int from, int n)
{
	char err[ERRLEN];
	struct audit *a = audit_open(path, test_key, err, sizeof(err));
	json_t *ev;
	int i;

	assert_non_null(a);
	for (i = from; i < from + n; i++) {
		ev = numbered_event(i);
		assert_int_equal(audit_append(a, ev, err, sizeof(err)), 0);
		json_decref(ev);
	}
	audit_close(a);
}

static void
verify(const char *path, const char *expect, int check_head, struct audit_verify *r)
{
	char err[ERRLEN];

	assert_int_equal(audit_verify_file(path, test_key, expect, check_head, r, err,
	    sizeof(err)), 0);
}

static void
assert_ok(const char *path, uint64_t entries)
{
	struct audit_verify r;

	verify(path, NULL, 1, &r);
	if (r.fault != AUDIT_FAULT_NONE)
		fail_msg("%s line %llu: %s: %s", path, (unsigned long long)r.line,
		    audit_fault_name(r.fault), r.why);
	assert_int_equal(r.entries, entries);
}

/* The lines of a file, each with its newline, in one array. */
struct lines {
	char	*buf;
	char	*line[64];
	size_t	len[64];
	size_t	n;
};

static void
split(const char *path, struct lines *ls)
{
	size_t len, i, start = 0;

	memset(ls, 0, sizeof(*ls));
	ls->buf = slurp(path, &len);
	for (i = 0; i < len; i++) {
		if (ls->buf[i] != '\n')
			continue;
		assert_true(ls->n < 64);
		ls->line[ls->n] = ls->buf + start;
		ls->len[ls->n++] = i + 1 - start;
		start = i + 1;
	}
}

/* Write the lines back in the order given by idx (-1 ends). */
static void
join(const char *path, const struct lines *ls, const int *idx)
{
	FILE *fp = fopen(path, "w");
	size_t k;

	assert_non_null(fp);
	for (k = 0; idx[k] != -1; k++)
		assert_int_equal(fwrite(ls->line[idx[k]], 1, ls->len[idx[k]], fp),
		    ls->len[idx[k]]);
	assert_int_equal(fclose(fp), 0);
}

/* ---- format ----------------------------------------------------------------- */

static void
test_line_format(void **state)
{
	struct fixture *fx = *state;
	struct lines ls;
	json_t *obj, *v;
	const char *k;
	size_t i, j;
	static const char *const order[] = { "ts", "event", "queue_id", "subject", "status",
	    "prev", "mac" };
	char prev[AUDIT_MAC_HEX + 1] = GENESIS;

	append_n(fx->log, 0, 3);
	split(fx->log, &ls);
	assert_int_equal(ls.n, 3);
	for (i = 0; i < ls.n; i++) {
		assert_memory_equal(ls.line[i], "{\"ts\":\"", 7);
		assert_int_equal(ls.line[i][7 + 4], '-');
		assert_int_equal(ls.line[i][7 + 10], 'T');
		assert_int_equal(ls.line[i][7 + 19], '.');
		assert_memory_equal(ls.line[i] + 7 + 23, "Z\"", 2);
		assert_memory_equal(ls.line[i] + ls.len[i] - 3, "\"}\n", 3);
		obj = json_loadb(ls.line[i], ls.len[i], 0, NULL);
		assert_non_null(obj);
		/* Key order is part of the format: ts first, prev and mac last. */
		j = 0;
		json_object_foreach(obj, k, v)
			assert_string_equal(k, order[j++]);
		assert_int_equal(j, ARRAY_SIZE(order));
		assert_string_equal(json_string_value(json_object_get(obj, "prev")), prev);
		strlcpy(prev, json_string_value(json_object_get(obj, "mac")), sizeof(prev));
		json_decref(obj);
	}
	free(ls.buf);
	assert_ok(fx->log, 3);
}

static void
test_line_build_refuses(void **state)
{
	static const char *const reserved[] = { "ts", "prev", "mac" };
	char err[ERRLEN], mac[AUDIT_MAC_HEX + 1];
	json_t *ev;
	size_t len, i;

	(void)state;
	ev = json_object();
	assert_null(audit_line_build(test_key, GENESIS, 0, ev, mac, &len, err, sizeof(err)));
	assert_non_null(strstr(err, "\"event\""));
	json_decref(ev);
	for (i = 0; i < ARRAY_SIZE(reserved); i++) {
		ev = audit_event_new("vault");
		assert_int_equal(audit_set_str(ev, reserved[i], "x"), 0);
		assert_null(audit_line_build(test_key, GENESIS, 0, ev, mac, &len, err,
		    sizeof(err)));
		assert_non_null(strstr(err, "reserved"));
		json_decref(ev);
	}
	ev = audit_event_new("vault");
	assert_null(audit_line_build(test_key, "abc", 0, ev, mac, &len, err, sizeof(err)));
	json_decref(ev);
}

static void
test_event_constructors(void **state)
{
	static const char *const rcpts[] = { "a@example.com", "b@example.com" };
	static const char *const msg_keys[] = { "event", "queue_id", "client_ip",
	    "client_name", "helo", "mail_from", "rcpt_to", "header_from", "subject",
	    "message_id", "size", "account", "credential_version", "status",
	    "upstream_reply", "attempt", "duration_ms" };
	struct audit_message m = {
		.queue_id = "4F2A9C", .client_ip = "10.0.5.3", .client_name = "monitoring",
		.helo = "mon.lan", .mail_from = "alerts@example.com", .rcpt_to = rcpts,
		.n_rcpt_to = 2, .header_from = "Alerts <alerts@example.com>",
		.subject = NULL, .message_id = "<x@y>", .size = 1234,
		.account = "team@example.com", .credential_version = 3,
		.status = AUDIT_STATUS_DEFERRED, .upstream_reply = "421 4.7.0 try later",
		.attempt = 2, .duration_ms = 850,
	};
	json_t *ev;
	const char *k;
	json_t *v;
	size_t j = 0;

	(void)state;
	ev = audit_message_event(&m);
	assert_non_null(ev);
	json_object_foreach(ev, k, v)
		assert_string_equal(k, msg_keys[j++]);
	assert_int_equal(j, ARRAY_SIZE(msg_keys));
	assert_true(json_is_null(json_object_get(ev, "subject")));
	assert_string_equal(json_string_value(json_object_get(ev, "status")), "deferred");
	assert_int_equal(json_integer_value(json_object_get(ev, "credential_version")), 3);
	assert_int_equal(json_array_size(json_object_get(ev, "rcpt_to")), 2);
	json_decref(ev);

	m.credential_version = 0;
	ev = audit_message_event(&m);
	assert_true(json_is_null(json_object_get(ev, "credential_version")));
	json_decref(ev);

	ev = audit_account_event(AUDIT_ACCOUNT_AUTH_FAILED, "team@example.com", 2, "daemon",
	    NULL);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), "account");
	assert_string_equal(json_string_value(json_object_get(ev, "action")), "auth_failed");
	assert_true(json_is_null(json_object_get(ev, "ip")));
	json_decref(ev);
	ev = audit_admin_event(AUDIT_ADMIN_LOGIN_FAILED, "alice", "192.0.2.7", NULL);
	assert_string_equal(json_string_value(json_object_get(ev, "action")), "login_failed");
	assert_string_equal(json_string_value(json_object_get(ev, "ip")), "192.0.2.7");
	json_decref(ev);
	ev = audit_vault_event(AUDIT_VAULT_REKEY, "cli:root");
	assert_string_equal(json_string_value(json_object_get(ev, "action")), "rekey");
	json_decref(ev);
	ev = audit_reject_event("203.0.113.9", NULL, "not allowed to relay", "CONNECT");
	assert_string_equal(json_string_value(json_object_get(ev, "reason")),
	    "not allowed to relay");
	json_decref(ev);
}

/* ---- tampering ---------------------------------------------------------------- */

enum tamper {
	T_EDIT, T_EDIT_PREV, T_DELETE, T_INSERT_LINKED, T_INSERT_RANDOM, T_SWAP,
	T_TRUNCATE, T_GARBAGE, T_DUPLICATE, T_CUT_TAIL, T_TOO_LONG, T_EDIT_FIRST,
	T_DELETE_FIRST,
};

struct tamper_case {
	const char		*name;
	enum tamper		how;
	enum audit_fault	fault;
	uint64_t		line;
};

/* A forged line: right shape, prev as given, a mac made without the key. */
static char *
forged_line(const char *prev, size_t *len)
{
	unsigned char fake_key[AUDIT_KEY_BYTES];
	char err[ERRLEN], mac[AUDIT_MAC_HEX + 1], *line;
	json_t *ev = numbered_event(999);

	memset(fake_key, 0x42, sizeof(fake_key));
	line = audit_line_build(fake_key, prev, 1764135656000, ev, mac, len, err, sizeof(err));
	assert_non_null(line);
	json_decref(ev);
	return line;
}

/* The mac of line i (0-based) of ls. */
static void
mac_of(const struct lines *ls, size_t i, char out[AUDIT_MAC_HEX + 1])
{
	memcpy(out, ls->line[i] + ls->len[i] - 3 - AUDIT_MAC_HEX, AUDIT_MAC_HEX);
	out[AUDIT_MAC_HEX] = '\0';
}

static void
apply_tamper(const char *path, enum tamper how)
{
	struct lines ls;
	char mac[AUDIT_MAC_HEX + 1], *fake, *p, *big;
	size_t flen, i;
	int idx[N_LINES + 3], k = 0;
	FILE *fp;

	split(path, &ls);
	assert_int_equal(ls.n, N_LINES);
	switch (how) {
	case T_EDIT:		/* line 4: "report number 3" -> "report number 8" */
		p = memmem(ls.line[3], ls.len[3], "number 3", 8);
		assert_non_null(p);
		p[7] = '8';
		spew(path, ls.buf, strlen(ls.buf));
		break;
	case T_EDIT_FIRST:
		p = memmem(ls.line[0], ls.len[0], "number 0", 8);
		p[7] = '5';
		spew(path, ls.buf, strlen(ls.buf));
		break;
	case T_EDIT_PREV:	/* line 6's prev */
		p = memmem(ls.line[5], ls.len[5], "\"prev\":\"", 8);
		p[8] = p[8] == 'a' ? 'b' : 'a';
		spew(path, ls.buf, strlen(ls.buf));
		break;
	case T_DELETE:		/* line 5 */
	case T_DELETE_FIRST:
		for (i = 0; i < N_LINES; i++)
			if (i != (how == T_DELETE ? 4u : 0u))
				idx[k++] = (int)i;
		idx[k] = -1;
		join(path, &ls, idx);
		break;
	case T_SWAP:		/* lines 6 and 7 */
		for (i = 0; i < N_LINES; i++)
			idx[k++] = i == 5 ? 6 : i == 6 ? 5 : (int)i;
		idx[k] = -1;
		join(path, &ls, idx);
		break;
	case T_DUPLICATE:	/* line 3 again after line 3 */
		for (i = 0; i < N_LINES; i++) {
			idx[k++] = (int)i;
			if (i == 2)
				idx[k++] = 2;
		}
		idx[k] = -1;
		join(path, &ls, idx);
		break;
	case T_INSERT_LINKED:	/* after line 3, linked to it: becomes line 4 */
	case T_INSERT_RANDOM:
		if (how == T_INSERT_LINKED)
			mac_of(&ls, 2, mac);
		else
			strlcpy(mac, "0123456789abcdef0123456789abcdef0123456789abcdef"
			    "0123456789abcdef", sizeof(mac));
		fake = forged_line(mac, &flen);
		fp = fopen(path, "w");
		for (i = 0; i < N_LINES; i++) {
			if (i == 3)
				fwrite(fake, 1, flen, fp);
			fwrite(ls.line[i], 1, ls.len[i], fp);
		}
		fclose(fp);
		free(fake);
		break;
	case T_TRUNCATE:	/* in the middle of the last line */
		assert_int_equal(truncate(path, (off_t)(ls.line[N_LINES - 1] - ls.buf) +
		    (off_t)ls.len[N_LINES - 1] / 2), 0);
		break;
	case T_CUT_TAIL:	/* the last two whole lines */
		assert_int_equal(truncate(path, (off_t)(ls.line[N_LINES - 2] - ls.buf)), 0);
		break;
	case T_GARBAGE:		/* a line that is not ours, after line 7 */
		fp = fopen(path, "w");
		for (i = 0; i < N_LINES; i++) {
			if (i == 7)
				fputs("{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"admin\"}\n", fp);
			fwrite(ls.line[i], 1, ls.len[i], fp);
		}
		fclose(fp);
		break;
	case T_TOO_LONG:	/* line 9 padded past the limit */
		big = malloc(AUDIT_LINE_MAX + 2);
		memset(big, 'x', AUDIT_LINE_MAX + 1);
		big[AUDIT_LINE_MAX + 1] = '\n';
		fp = fopen(path, "w");
		for (i = 0; i < N_LINES; i++) {
			if (i == 8)
				fwrite(big, 1, AUDIT_LINE_MAX + 2, fp);
			fwrite(ls.line[i], 1, ls.len[i], fp);
		}
		fclose(fp);
		free(big);
		break;
	}
	free(ls.buf);
}

static void
test_tamper(void **state)
{
	static const struct tamper_case cases[] = {
		{ "edit a field", T_EDIT, AUDIT_FAULT_EDITED, 4 },
		{ "edit the first line", T_EDIT_FIRST, AUDIT_FAULT_EDITED, 1 },
		{ "edit a prev", T_EDIT_PREV, AUDIT_FAULT_EDITED, 6 },
		{ "delete a line", T_DELETE, AUDIT_FAULT_DELETED, 5 },
		{ "delete the first line", T_DELETE_FIRST, AUDIT_FAULT_DELETED, 0 },
		{ "insert a forged line linked in", T_INSERT_LINKED, AUDIT_FAULT_FORGED, 4 },
		{ "insert a forged line", T_INSERT_RANDOM, AUDIT_FAULT_FORGED, 4 },
		{ "swap two lines", T_SWAP, AUDIT_FAULT_REORDERED, 6 },
		{ "replay a line", T_DUPLICATE, AUDIT_FAULT_DELETED, 4 },
		{ "truncate mid-line", T_TRUNCATE, AUDIT_FAULT_TRUNCATED, 10 },
		{ "cut whole lines off the end", T_CUT_TAIL, AUDIT_FAULT_TAIL, 9 },
		{ "insert a line without a mac", T_GARBAGE, AUDIT_FAULT_MALFORMED, 8 },
		{ "insert an overlong line", T_TOO_LONG, AUDIT_FAULT_TOO_LONG, 9 },
	};
	struct fixture *fx = *state;
	struct audit_verify r;
	char head[PATH_MAX];
	size_t i;

	snprintf(head, sizeof(head), "%s.head", fx->log);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		unlink(fx->log);
		unlink(head);
		append_n(fx->log, 0, N_LINES);
		assert_ok(fx->log, N_LINES);
		apply_tamper(fx->log, cases[i].how);
		verify(fx->log, NULL, 1, &r);
		print_message("%-32s -> line %llu: %s: %s\n", cases[i].name,
		    (unsigned long long)r.line, audit_fault_name(r.fault), r.why);
		if (cases[i].how == T_DELETE_FIRST) {
			/* Alone, a file that starts later looks rotated; the head file
			 * ties it to its log, and a known start catches it. */
			assert_int_equal(r.fault, AUDIT_FAULT_NONE);
			assert_true(r.continues);
			verify(fx->log, GENESIS, 1, &r);
			assert_int_equal(r.fault, AUDIT_FAULT_LINK);
			assert_int_equal(r.line, 1);
			continue;
		}
		assert_int_equal(r.fault, cases[i].fault);
		assert_int_equal(r.line, cases[i].line);
		if (cases[i].how == T_SWAP)
			assert_int_equal(r.other_line, 7);
	}
}

/* ---- rotation and other writers ---------------------------------------------- */

/* Verify rot then log as one chain of total entries; log continues rot. */
static void
assert_chain(struct fixture *fx, uint64_t in_rot, uint64_t in_log)
{
	struct audit_verify r1, r2;

	verify(fx->rot, NULL, 0, &r1);
	assert_int_equal(r1.fault, AUDIT_FAULT_NONE);
	assert_int_equal(r1.entries, in_rot);
	assert_false(r1.continues);
	verify(fx->log, r1.last_mac, 1, &r2);
	assert_int_equal(r2.fault, AUDIT_FAULT_NONE);
	assert_int_equal(r2.entries, in_log);
	assert_string_equal(r2.first_prev, r1.last_mac);
	/* On its own the new file says it continues another one. */
	verify(fx->log, NULL, 1, &r2);
	assert_true(r2.continues);
}

static void
append_one(struct audit *a, int i)
{
	char err[ERRLEN];
	json_t *ev = numbered_event(i);

	if (audit_append(a, ev, err, sizeof(err)) != 0)
		fail_msg("append: %s", err);
	json_decref(ev);
}

static void
test_rotate_create_reopen(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN];
	struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));

	append_one(a, 0);
	append_one(a, 1);
	append_one(a, 2);
	assert_int_equal(rename(fx->log, fx->rot), 0);	/* logrotate "create" */
	spew(fx->log, "", 0);
	assert_int_equal(audit_reopen(a, err, sizeof(err)), 0);	/* SIGHUP */
	append_one(a, 3);
	append_one(a, 4);
	audit_close(a);
	assert_chain(fx, 3, 2);
}

static void
test_rotate_rename_noticed(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN];
	struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));

	append_one(a, 0);
	append_one(a, 1);
	/* Renamed with no SIGHUP: the writer notices on its next append. */
	assert_int_equal(rename(fx->log, fx->rot), 0);
	append_one(a, 2);
	audit_close(a);
	assert_int_equal(count_lines(fx->rot), 2);
	assert_chain(fx, 2, 1);
}

static void
test_rotate_copytruncate(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN], *buf;
	size_t len;
	struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));

	append_one(a, 0);
	append_one(a, 1);
	append_one(a, 2);
	buf = slurp(fx->log, &len);
	spew(fx->rot, buf, len);
	free(buf);
	assert_int_equal(truncate(fx->log, 0), 0);
	append_one(a, 3);
	append_one(a, 4);
	audit_close(a);
	assert_chain(fx, 3, 2);
}

static void
test_rotate_restart_head_file(void **state)
{
	struct fixture *fx = *state;
	char head[PATH_MAX], *buf;
	size_t len;

	append_n(fx->log, 0, 3);		/* the daemon stops */
	assert_int_equal(rename(fx->log, fx->rot), 0);	/* logrotate while it is down */
	append_n(fx->log, 3, 2);		/* a new process starts */
	assert_chain(fx, 3, 2);
	snprintf(head, sizeof(head), "%s.head", fx->log);
	buf = slurp(head, &len);
	assert_int_equal(len, AUDIT_MAC_HEX + 1);
	free(buf);
}

static void
test_new_log_starts_at_genesis(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify r;

	append_n(fx->log, 0, 2);
	verify(fx->log, NULL, 1, &r);
	assert_int_equal(r.fault, AUDIT_FAULT_NONE);
	assert_false(r.continues);
	assert_string_equal(r.first_prev, GENESIS);
	verify(fx->log, GENESIS, 1, &r);
	assert_int_equal(r.fault, AUDIT_FAULT_NONE);
}

static void
test_two_writers_interleave(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN];
	struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));
	struct audit *b = audit_open(fx->log, test_key, err, sizeof(err));

	append_one(a, 0);
	append_one(a, 1);
	append_one(b, 2);	/* b reads a's last line */
	append_one(b, 3);
	append_one(a, 4);	/* a sees the size change and re-reads */
	append_one(b, 5);	/* and b again after a */
	audit_close(a);
	audit_close(b);
	assert_ok(fx->log, 6);
}

static void
test_partial_line_repaired(void **state)
{
	struct fixture *fx = *state;
	int fd;

	append_n(fx->log, 0, 3);
	/* A writer died in the middle of a line it never acknowledged. */
	fd = open(fx->log, O_WRONLY | O_APPEND);
	assert_true(write(fd, "{\"ts\":\"2026-11-", 15) == 15);
	close(fd);
	append_n(fx->log, 3, 1);
	assert_ok(fx->log, 4);
}

static void
test_foreign_tail_refused(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN];
	struct audit *a;
	json_t *ev = numbered_event(9);
	size_t before;
	int fd;

	append_n(fx->log, 0, 2);
	fd = open(fx->log, O_WRONLY | O_APPEND);
	assert_true(write(fd, "not ours", 8) == 8);
	close(fd);
	before = count_lines(fx->log);
	a = audit_open(fx->log, test_key, err, sizeof(err));
	assert_int_equal(audit_append(a, ev, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "refusing"));
	audit_close(a);
	json_decref(ev);
	assert_int_equal(count_lines(fx->log), before);

	/* A last line that is not an entry at all is refused too. */
	spew(fx->log, "hello\n", 6);
	a = audit_open(fx->log, test_key, err, sizeof(err));
	ev = numbered_event(10);
	assert_int_equal(audit_append(a, ev, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not an audit entry"));
	json_decref(ev);
	audit_close(a);
}

/* ---- failures ---------------------------------------------------------------- */

static void
test_open_fails_clearly(void **state)
{
	char err[ERRLEN];

	(void)state;
	assert_null(audit_open("/nonexistent-dir/audit.log", test_key, err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent-dir/audit.log"));
	assert_null(audit_open("/dev/null", test_key, err, sizeof(err)));
}

/* A write that fails half-way (file size limit) adds nothing and leaves the
 * chain head where it was; the next append continues the chain. */
static void
test_write_failure_keeps_chain(void **state)
{
	struct fixture *fx = *state;
	struct rlimit rl;
	struct stat st;
	char err[ERRLEN], head[AUDIT_MAC_HEX + 1];
	struct audit *a;
	json_t *ev;
	pid_t pid;
	int status;

	append_n(fx->log, 0, 3);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		a = audit_open(fx->log, test_key, err, sizeof(err));
		append_one(a, 3);
		strlcpy(head, audit_head(a), sizeof(head));
		if (stat(fx->log, &st) == -1 || getrlimit(RLIMIT_FSIZE, &rl) == -1)
			_exit(10);
		rl.rlim_cur = (rlim_t)st.st_size + 40;	/* room for part of a line */
		if (setrlimit(RLIMIT_FSIZE, &rl) == -1)
			_exit(11);
		ev = numbered_event(4);
		if (audit_append(a, ev, err, sizeof(err)) != -1 || strstr(err, "cannot write") == NULL)
			_exit(12);
		if (strcmp(audit_head(a), head) != 0)
			_exit(13);
		if (stat(fx->log, &st) == -1 || (rlim_t)st.st_size + 40 != rl.rlim_cur)
			_exit(14);	/* the partial line was cut off */
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_FSIZE, &rl) == -1)
			_exit(15);
		if (audit_append(a, ev, err, sizeof(err)) != 0)
			_exit(16);
		json_decref(ev);
		audit_close(a);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_ok(fx->log, 5);
}

/*
 * A batch is one write: its lines are chained like single appends, and a
 * batch that cannot be written whole (here: one bad event, then a disk that
 * is full half-way through) adds nothing and leaves the chain head alone.
 */
static void
test_append_many(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN], head[AUDIT_MAC_HEX + 1];
	json_t *ev[5];
	struct audit *a;
	struct lines ls;
	struct rlimit rl;
	struct stat st;
	size_t written = 99, i;
	pid_t pid;
	int status;

	append_n(fx->log, 0, 2);
	a = audit_open(fx->log, test_key, err, sizeof(err));
	assert_non_null(a);
	for (i = 0; i < 5; i++)
		ev[i] = numbered_event(2 + (int)i);
	assert_int_equal(audit_append_many(a, ev, 3, &written, err, sizeof(err)), 0);
	assert_int_equal(written, 3);
	assert_int_equal(audit_append_many(a, ev, 0, &written, err, sizeof(err)), 0);
	assert_int_equal(written, 0);
	assert_ok(fx->log, 5);
	split(fx->log, &ls);
	assert_non_null(memmem(ls.line[4], ls.len[4], audit_head(a), AUDIT_MAC_HEX));
	free(ls.buf);

	/* One bad event spoils the batch. */
	strlcpy(head, audit_head(a), sizeof(head));
	assert_int_equal(json_object_set_new(ev[4], "mac", json_string("x")), 0);
	assert_int_equal(audit_append_many(a, ev + 3, 2, &written, err, sizeof(err)), -1);
	assert_int_equal(written, 0);
	assert_string_equal(audit_head(a), head);
	assert_int_equal(count_lines(fx->log), 5);
	assert_int_equal(json_object_del(ev[4], "mac"), 0);
	/* Too many at once: refused before any event is looked at. */
	assert_int_equal(audit_append_many(a, ev, AUDIT_BATCH_MAX + 1, &written, err,
	    sizeof(err)), -1);

	/* A write that stops half-way is cut off again. */
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		int rc = 0;

		signal(SIGXFSZ, SIG_IGN);
		if (stat(fx->log, &st) == -1 || getrlimit(RLIMIT_FSIZE, &rl) == -1)
			rc = 10;
		rl.rlim_cur = (rlim_t)st.st_size + 300;	/* room for one line and a bit */
		if (rc == 0 && setrlimit(RLIMIT_FSIZE, &rl) == -1)
			rc = 11;
		if (rc == 0 && (audit_append_many(a, ev + 3, 2, &written, err, sizeof(err)) != -1 ||
		    written != 0 || strcmp(audit_head(a), head) != 0))
			rc = 12;
		if (rc == 0 && (stat(fx->log, &st) == -1 || (rlim_t)st.st_size + 300 != rl.rlim_cur))
			rc = 13;
		/* What the parent made is the child's to free too (valgrind). */
		audit_close(a);
		for (i = 0; i < 5; i++)
			json_decref(ev[i]);
		_exit(rc);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(audit_append_many(a, ev + 3, 2, NULL, err, sizeof(err)), 0);
	assert_ok(fx->log, 7);
	audit_close(a);
	for (i = 0; i < 5; i++)
		json_decref(ev[i]);
}

/* What a forwarder hands on, and what it says when a part fails. */
struct forward_log {
	size_t	calls;
	size_t	lines[8];	/* events per call */
	size_t	max_len;
	size_t	fail_at;	/* this call fails (1-based), 0: none */
};

static int
forward_record(void *arg, const char *json, size_t len, char *err, size_t errlen)
{
	struct forward_log *fl = arg;
	size_t i, n = 1;

	assert_true(fl->calls < 8);
	assert_true(len > 0 && json[0] == '{' && json[len - 1] == '}');
	for (i = 0; i < len; i++)
		n += json[i] == '\n';
	fl->lines[fl->calls++] = n;
	if (len > fl->max_len)
		fl->max_len = len;
	if (fl->calls == fl->fail_at) {
		snprintf(err, errlen, "keeper says no");
		return -1;
	}
	return 0;
}

static void
test_forwarder_batches(void **state)
{
	struct forward_log fl;
	char err[ERRLEN], big[AUDIT_FIELD_MAX];
	json_t *ev[120];
	struct audit *a;
	size_t written, i, total;

	/* About 2 KiB an event: 120 of them make three parts. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (i = 0; i < 120; i++) {
		ev[i] = numbered_event((int)i);
		assert_int_equal(audit_set_str(ev[i], "subject", big), 0);
	}
	memset(&fl, 0, sizeof(fl));
	a = audit_forwarder(forward_record, NULL, NULL, &fl);
	assert_non_null(a);
	assert_int_equal(audit_append_many(a, ev, 1, &written, err, sizeof(err)), 0);
	assert_int_equal(fl.calls, 1);
	assert_int_equal(fl.lines[0], 1);
	memset(&fl, 0, sizeof(fl));
	assert_int_equal(audit_append_many(a, ev, 120, &written, err, sizeof(err)), 0);
	assert_int_equal(written, 120);
	assert_true(fl.calls >= 3);
	assert_true(fl.max_len <= AUDIT_FORWARD_MAX);
	for (i = 0, total = 0; i < fl.calls; i++)
		total += fl.lines[i];
	assert_int_equal(total, 120);

	/* The second part fails: the first part's events are durable. */
	memset(&fl, 0, sizeof(fl));
	fl.fail_at = 2;
	assert_int_equal(audit_append_many(a, ev, 120, &written, err, sizeof(err)), -1);
	assert_int_equal(fl.calls, 2);
	assert_int_equal(written, fl.lines[0]);
	assert_string_equal(err, "keeper says no");
	audit_close(a);
	for (i = 0; i < 120; i++)
		json_decref(ev[i]);
}

static void
test_concurrent_processes(void **state)
{
	struct fixture *fx = *state;
	pid_t pids[N_CHILDREN];
	int i, status;

	for (i = 0; i < N_CHILDREN; i++) {
		pids[i] = fork();
		assert_true(pids[i] != -1);
		if (pids[i] == 0) {
			char err[ERRLEN];
			struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));
			json_t *ev;
			int j;

			if (a == NULL)
				_exit(1);
			for (j = 0; j < N_PER_CHILD; j++) {
				ev = numbered_event(i * 1000 + j);
				if (audit_append(a, ev, err, sizeof(err)) != 0)
					_exit(2);
				json_decref(ev);
			}
			audit_close(a);
			_exit(0);
		}
	}
	for (i = 0; i < N_CHILDREN; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_ok(fx->log, N_CHILDREN * N_PER_CHILD);
}

/* ---- hostile text --------------------------------------------------------------- */

struct hostile_case {
	const char	*in;
	size_t		len;		/* 0: strlen */
	const char	*want;		/* NULL: same as in */
};

static void
test_hostile_strings(void **state)
{
	static const struct hostile_case cases[] = {
		{ "Subject\r\nX-Injected: yes", 0, NULL },
		{ "line\n{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"admin\"}\n", 0, NULL },
		{ "\"quoted\" and \\backslash\\", 0, NULL },
		{ "<script>alert(1)</script>", 0, NULL },
		{ "tab\there, esc\x1b[31m red, del\x7f", 0, NULL },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 \xe2\x80\xa8 sep", 0, NULL },
		{ "bad \xff byte", 0, "bad \xef\xbf\xbd byte" },
		{ "cut \xc3", 0, "cut \xef\xbf\xbd" },
		{ "\xc3\x28 pair", 0, "\xef\xbf\xbd( pair" },
		{ "overlong \xc0\xaf", 0, "overlong \xef\xbf\xbd\xef\xbf\xbd" },
		{ "surrogate \xed\xa0\x80", 0,
		    "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "nul\0inside", 10, "nul\xef\xbf\xbdinside" },
		{ "", 0, NULL },
	};
	struct fixture *fx = *state;
	struct lines ls;
	char err[ERRLEN];
	struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));
	json_t *ev, *obj;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		ev = audit_event_new("message");
		assert_int_equal(audit_set_strn(ev, "subject", cases[i].in,
		    cases[i].len != 0 ? cases[i].len : strlen(cases[i].in)), 0);
		assert_int_equal(audit_set_str(ev, "helo", cases[i].in), 0);
		assert_int_equal(audit_append(a, ev, err, sizeof(err)), 0);
		json_decref(ev);
	}
	audit_close(a);
	assert_ok(fx->log, ARRAY_SIZE(cases));
	split(fx->log, &ls);
	assert_int_equal(ls.n, ARRAY_SIZE(cases));
	for (i = 0; i < ls.n; i++) {
		const unsigned char *p;

		for (p = (unsigned char *)ls.line[i]; p < (unsigned char *)ls.line[i] + ls.len[i] - 1;
		    p++)
			assert_true(*p >= 0x20 && *p <= 0x7f);	/* ASCII, one line */
		obj = json_loadb(ls.line[i], ls.len[i], 0, NULL);
		assert_non_null(obj);
		assert_string_equal(json_string_value(json_object_get(obj, "subject")),
		    cases[i].want != NULL ? cases[i].want : cases[i].in);
		json_decref(obj);
	}
	free(ls.buf);
}

static void
test_long_field_cut(void **state)
{
	char *big = malloc(3 * AUDIT_FIELD_MAX);
	const char *s;
	json_t *v;
	size_t len;

	(void)state;
	/* Two-byte characters, so that the cut must respect boundaries. */
	for (len = 0; len + 2 <= 3 * AUDIT_FIELD_MAX; len += 2)
		memcpy(big + len, "\xc3\xa9", 2);
	v = audit_string(big, len);
	s = json_string_value(v);
	assert_true(strlen(s) <= AUDIT_FIELD_MAX);
	assert_true(strlen(s) > AUDIT_FIELD_MAX - 8);
	assert_string_equal(s + strlen(s) - 3, "...");
	assert_memory_equal(s + strlen(s) - 5, "\xc3\xa9", 2);
	json_decref(v);
	v = audit_string(big, AUDIT_FIELD_MAX);		/* exactly full: no cut */
	assert_int_equal(strlen(json_string_value(v)), AUDIT_FIELD_MAX);
	json_decref(v);
	free(big);
}

/* ---- queries --------------------------------------------------------------------- */

#define QBASE	1764115200	/* 2025-11-26T00:00:00Z */

struct qrow {
	int		min;		/* minutes after QBASE */
	const char	*event, *status, *account, *client_name, *client_ip, *mail_from;
	const char	*subject;
};

static const struct qrow qrows[] = {
	{ 0,  "message", "delivered", "team@example.com", "lan", "10.0.0.5",
	    "bob@example.com", "hello" },
	{ 10, "message", "failed", "alerts@example.com", "monitoring", "10.0.5.3",
	    "nagios@ops.example.com", "disk full" },
	{ 20, "message", "queued", "Team@Example.com", "lan", "10.0.0.6",
	    "Alice@Example.COM", "\"account\":\"alerts@example.com\"" },
	{ 30, "reject", NULL, NULL, NULL, "203.0.113.9", NULL, NULL },
	{ 40, "account", NULL, "alerts@example.com", NULL, NULL, NULL, NULL },
	{ 50, "message", "deferred", "alerts@example.com", "monitoring", "10.0.5.4",
	    "cron@ops.example.com", "caf\xc3\xa9" },
	{ 60, "message", "delivered", "alerts@example.com", "monitoring", "10.0.5.4",
	    "cron@ops.example.com", "retry" },
};

static void
write_query_log(const char *path)
{
	char err[ERRLEN], prev[AUDIT_MAC_HEX + 1] = GENESIS, mac[AUDIT_MAC_HEX + 1], *line;
	FILE *fp = fopen(path, "w");
	json_t *ev;
	size_t i, len;

	assert_non_null(fp);
	for (i = 0; i < ARRAY_SIZE(qrows); i++) {
		ev = audit_event_new(qrows[i].event);
		if (qrows[i].client_ip != NULL) {
			audit_set_str(ev, "client_ip", qrows[i].client_ip);
			audit_set_str(ev, "client_name", qrows[i].client_name);
		}
		if (qrows[i].mail_from != NULL)
			audit_set_str(ev, "mail_from", qrows[i].mail_from);
		if (qrows[i].subject != NULL)
			audit_set_str(ev, "subject", qrows[i].subject);
		audit_set_str(ev, "account", qrows[i].account);
		if (qrows[i].status != NULL)
			audit_set_str(ev, "status", qrows[i].status);
		line = audit_line_build(test_key, prev, (int64_t)(QBASE + qrows[i].min * 60) *
		    1000 + 123, ev, mac, &len, err, sizeof(err));
		assert_non_null(line);
		assert_int_equal(fwrite(line, 1, len, fp), len);
		memcpy(prev, mac, sizeof(prev));
		free(line);
		json_decref(ev);
	}
	/* A stray line and an append in progress are skipped, not fatal. */
	fputs("garbage\n{\"ts\":\"2025-11-", fp);
	assert_int_equal(fclose(fp), 0);
}

struct collect {
	char		got[128];	/* minutes of the matches, "0,20," */
	uint64_t	offs[16];
	size_t		n;
};

static int
collect_cb(void *arg, const char *line, size_t len, uint64_t off, json_t *obj)
{
	struct collect *c = arg;
	const char *ts = json_string_value(json_object_get(obj, "ts"));
	time_t t;
	char buf[16];

	assert_non_null(ts);
	assert_int_equal(time_parse(ts, 0, &t), 0);
	snprintf(buf, sizeof(buf), "%d,", (int)((t - QBASE) / 60));
	strlcat(c->got, buf, sizeof(c->got));
	assert_true(c->n < 16);
	c->offs[c->n++] = off;
	assert_memory_equal(line, "{\"ts\":\"", 7);
	(void)len;
	return 0;
}

struct query_case {
	const char		*name;
	struct audit_filter	f;
	const char		*want;
};

static void
test_query(void **state)
{
	static const struct query_case cases[] = {
		{ "everything", { .limit = 0 }, "0,10,20,30,40,50,60," },
		{ "since", { .has_since = 1, .since = QBASE + 20 * 60 }, "20,30,40,50,60," },
		{ "until (whole second)", { .has_until = 1, .until = QBASE + 20 * 60 },
		    "0,10,20," },
		{ "window", { .has_since = 1, .since = QBASE + 15 * 60, .has_until = 1,
		    .until = QBASE + 45 * 60 }, "20,30,40," },
		{ "account, any case", { .account = "TEAM@example.com" }, "0,20," },
		{ "account not fooled by a subject", { .account = "alerts@example.com",
		    .event = "message" }, "10,50,60," },
		{ "account glob", { .account = "*@EXAMPLE.com", .event = "message" },
		    "0,10,20,50,60," },
		{ "sender exact, any case", { .sender = "alice@example.com" }, "20," },
		{ "sender glob", { .sender = "*@ops.example.com" }, "10,50,60," },
		{ "client by name", { .client = "monitoring" }, "10,50,60," },
		{ "client by ip", { .client = "203.0.113.9" }, "30," },
		{ "client ip glob", { .client = "10.0.5.*" }, "10,50,60," },
		{ "status", { .status = "delivered" }, "0,60," },
		{ "event", { .event = "account" }, "40," },
		{ "combined", { .client = "monitoring", .status = "deferred",
		    .has_since = 1, .since = QBASE + 45 * 60 }, "50," },
		{ "no match", { .account = "nobody@example.com" }, "" },
		{ "newest 2", { .limit = 2 }, "50,60," },
		{ "newest 2 of a filter", { .limit = 2, .sender = "*@ops.example.com" },
		    "50,60," },
		{ "limit above matches", { .limit = 100, .status = "delivered" }, "0,60," },
	};
	struct fixture *fx = *state;
	struct audit_query_stats st;
	struct audit_filter f;
	struct collect c;
	char err[ERRLEN];
	size_t i;

	write_query_log(fx->log);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		memset(&c, 0, sizeof(c));
		assert_int_equal(audit_query(fx->log, &cases[i].f, collect_cb, &c, &st, err,
		    sizeof(err)), 0);
		if (strcmp(c.got, cases[i].want) != 0)
			fail_msg("%s: got '%s', want '%s'", cases[i].name, c.got, cases[i].want);
		assert_int_equal(st.skipped, 1);	/* "garbage" */
	}

	/* Paging newest first: before = the oldest offset of the last page. */
	memset(&f, 0, sizeof(f));
	f.limit = 3;
	memset(&c, 0, sizeof(c));
	assert_int_equal(audit_query(fx->log, &f, collect_cb, &c, &st, err, sizeof(err)), 0);
	assert_string_equal(c.got, "40,50,60,");
	f.before = c.offs[0];
	memset(&c, 0, sizeof(c));
	assert_int_equal(audit_query(fx->log, &f, collect_cb, &c, &st, err, sizeof(err)), 0);
	assert_string_equal(c.got, "10,20,30,");

	assert_int_equal(audit_query("/nonexistent/audit.log", &f, collect_cb, &c, &st, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/audit.log"));
}

/* Raw callers (the CLI table, the admin page) get the line and no tree. */
static int
raw_cb(void *arg, const char *line, size_t len, uint64_t off, json_t *obj)
{
	size_t *n = arg;
	json_t *check;

	assert_null(obj);
	check = json_loadb(line, len, 0, NULL);	/* a line is valid JSON as it stands */
	assert_non_null(check);
	json_decref(check);
	(*n)++;
	return 0;
}

static void
test_query_raw_only(void **state)
{
	struct fixture *fx = *state;
	struct audit_filter f = { .raw_only = 1, .sender = "*@OPS.example.com" };
	char err[ERRLEN];
	size_t n = 0;

	write_query_log(fx->log);
	assert_int_equal(audit_query(fx->log, &f, raw_cb, &n, NULL, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	n = 0;
	f.limit = 1;
	assert_int_equal(audit_query(fx->log, &f, raw_cb, &n, NULL, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
}

struct field_case {
	const char	*key;
	size_t		idx;
	int		rc;
	const char	*want;
};

static void
test_fields(void **state)
{
	static const struct field_case cases[] = {
		{ "ts", 0, 0, "2026-11-26T05:40:56.123Z" },
		{ "event", 0, 0, "message" },
		{ "subject", 0, 0, "a \"q\" \\ / \r\n\t caf\xc3\xa9 \xf0\x9f\x93\xa7 \xef\xbf\xbd" },
		{ "rcpt_to", 0, 0, "a@x" },
		{ "rcpt_to", 1, 0, "b,c@\"y\"" },
		{ "rcpt_to", 2, -1, NULL },
		{ "size", 0, 0, "-12" },
		{ "account", 0, -1, NULL },		/* null */
		{ "flag", 0, -1, NULL },		/* true */
		{ "nested", 0, -1, NULL },		/* an object */
		{ "after", 0, 0, "z" },			/* found after the nested object */
		{ "missing", 0, -1, NULL },
	};
	static const char line[] = "{\"ts\":\"2026-11-26T05:40:56.123Z\",\"event\":\"message\","
	    "\"subject\":\"a \\\"q\\\" \\\\ \\/ \\r\\n\\t caf\\u00e9 \\uD83D\\uDCE7 \\uD800\","
	    "\"rcpt_to\":[\"a@x\",\"b,c@\\\"y\\\"\"],\"size\":-12,\"account\":null,"
	    "\"flag\":true,\"nested\":{\"k\":[1,{\"x\":\"}\"}]},\"after\":\"z\"}";
	static const char *const bad[] = { "", "{", "[]", "{\"a\":\"x}", "{\"a\" 1}",
	    "{\"a\":1", "{\"a\":1,}", "{\"a\":[[[[[[[[[[1]]]]]]]]]]}" };
	struct audit_fields fs;
	char out[64], tiny[6];
	size_t i;

	(void)state;
	assert_int_equal(audit_fields_scan(line, strlen(line), &fs), 0);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		int rc = audit_fields_get(&fs, cases[i].key, cases[i].idx, out, sizeof(out));

		if (rc != cases[i].rc)
			fail_msg("%s[%zu]: rc %d", cases[i].key, cases[i].idx, rc);
		if (rc == 0)
			assert_string_equal(out, cases[i].want);
	}
	assert_int_equal(audit_fields_count(&fs, "rcpt_to"), 2);
	assert_int_equal(audit_fields_count(&fs, "subject"), 0);
	/* Cut to fit, never in the middle of a character. */
	assert_int_equal(audit_fields_get(&fs, "subject", 0, tiny, sizeof(tiny)), 0);
	assert_string_equal(tiny, "a \"q\"");
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		if (audit_fields_scan(bad[i], strlen(bad[i]), &fs) != -1)
			fail_msg("accepted '%s'", bad[i]);
}

/* ---- several files ------------------------------------------------------------- */

static void
test_files_in_order(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify r1, r2;
	char err[ERRLEN];
	struct audit *a = audit_open(fx->log, test_key, err, sizeof(err));

	append_one(a, 0);
	append_one(a, 1);
	assert_int_equal(rename(fx->log, fx->rot), 0);
	append_one(a, 2);
	audit_close(a);
	verify(fx->rot, NULL, 0, &r1);
	verify(fx->log, r1.last_mac, 1, &r2);
	assert_int_equal(r2.fault, AUDIT_FAULT_NONE);
	/* Given the wrong way round, the link is broken at line 1. */
	verify(fx->log, NULL, 1, &r2);
	verify(fx->rot, r2.last_mac, 0, &r1);
	assert_int_equal(r1.fault, AUDIT_FAULT_LINK);
	assert_int_equal(r1.line, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_line_format, setup, teardown),
		cmocka_unit_test(test_line_build_refuses),
		cmocka_unit_test(test_event_constructors),
		cmocka_unit_test_setup_teardown(test_tamper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotate_create_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotate_rename_noticed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotate_copytruncate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotate_restart_head_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_log_starts_at_genesis, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_writers_interleave, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_line_repaired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_tail_refused, setup, teardown),
		cmocka_unit_test(test_open_fails_clearly),
		cmocka_unit_test_setup_teardown(test_write_failure_keeps_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_many, setup, teardown),
		cmocka_unit_test(test_forwarder_batches),
		cmocka_unit_test_setup_teardown(test_concurrent_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_strings, setup, teardown),
		cmocka_unit_test(test_long_field_cut),
		cmocka_unit_test_setup_teardown(test_query, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_raw_only, setup, teardown),
		cmocka_unit_test(test_fields),
		cmocka_unit_test_setup_teardown(test_files_in_order, setup, teardown),
	};

	if (sodium_init() == -1)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
