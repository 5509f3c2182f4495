/*
 * admin_audit.c: the audit log as the admin page sees it: a filtered page
 * of entries (newest first, with a cursor for the next page), the same
 * filter as CSV, and the per-account figures of the dashboard. These run
 * on worker threads (admin_worker.c): they only read the log file through
 * audit_query(), which opens its own descriptor, and only touch the job's
 * own memory.
 *
 * Dashboard figures come from the log rather than from in-memory counters
 * so that they survive restarts and mean the same in direct and queue mode:
 * messages and recipients of "delivered" message events in the last 24
 * hours (what Google counts against its daily limits), the newest delivery,
 * and the newest failure (failed / deferred / rejected) with the upstream's
 * reply, within ADMIN_USAGE_LOOKBACK.
 */
#include "admin_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "audit.h"
#include "util.h"

/* ---- A page of entries ------------------------------------------------------ */

static void
filter_from_query(const struct admin_audit_query *q, struct audit_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->has_since = q->t.has_since;
	f->since = q->t.since;
	f->has_until = q->t.has_until;
	f->until = q->t.until;
	f->account = q->account[0] != '\0' ? q->account : NULL;
	f->client = q->client[0] != '\0' ? q->client : NULL;
	f->sender = q->sender[0] != '\0' ? q->sender : NULL;
	f->status = q->status[0] != '\0' ? q->status : NULL;
	f->event = q->event[0] != '\0' ? q->event : NULL;
	f->before = q->cursor;
}

struct page_acc {
	json_t		*entries;	/* file order */
	uint64_t	*offsets;	/* each entry's offset in the log */
	size_t		 cap;
};

static int
page_cb(void *arg, const char *line, size_t len, uint64_t offset, json_t *obj)
{
	struct page_acc *acc = arg;
	size_t n = json_array_size(acc->entries);

	if (n >= acc->cap)
		return -1;	/* the query delivers at most its limit */
	acc->offsets[n] = offset;
	return json_array_append(acc->entries, obj);
}

/* A log that does not exist yet is an empty log. */
static int
log_missing(const char *path)
{
	return access(path, F_OK) == -1 && errno == ENOENT;
}

json_t *
admin_audit_page(const struct admin_audit_query *q, char *err, size_t errlen)
{
	struct audit_filter f;
	struct page_acc acc;
	json_t *out = NULL, *newest_first = NULL, *cursor;
	size_t i, n, start = 0;
	char buf[32];

	memset(&acc, 0, sizeof(acc));
	/* One more than asked for tells whether an older page exists. */
	acc.cap = q->limit + 1;
	if ((acc.entries = json_array()) == NULL || (newest_first = json_array()) == NULL ||
	    (acc.offsets = calloc(acc.cap, sizeof(*acc.offsets))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	filter_from_query(q, &f);
	f.limit = acc.cap;
	if (!log_missing(q->path) &&
	    audit_query(q->path, &f, page_cb, &acc, NULL, err, errlen) == -1)
		goto done;
	n = json_array_size(acc.entries);
	cursor = json_null();
	if (n > q->limit) {
		/* The oldest match only proves there is more: the next page is
		 * everything before the oldest entry shown. */
		start = 1;
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)acc.offsets[1]);
		cursor = json_string(buf);
	}
	for (i = n; i > start; i--)
		json_array_append(newest_first, json_array_get(acc.entries, i - 1));
	if ((out = json_pack("{s:O, s:o}", "entries", newest_first, "next_cursor",
	    cursor)) == NULL)
		snprintf(err, errlen, "out of memory");
done:
	json_decref(acc.entries);
	json_decref(newest_first);
	free(acc.offsets);
	return out;
}

/* ---- CSV --------------------------------------------------------------------- */

static const char *const csv_columns[] = {
	"ts", "event", "queue_id", "status", "account", "client_name", "client_ip", "helo",
	"mail_from", "rcpt_to", "header_from", "subject", "message_id", "size",
	"credential_version", "attempt", "upstream_reply", "action", "user", "by", "ip",
	"reason", "command",
};

/* A field as text: strings as they are, numbers in decimal, arrays joined. */
static int
csv_value(struct evbuffer *out, json_t *v)
{
	char num[32];
	struct evbuffer *tmp;
	size_t i, n;
	char *joined;
	int rc;

	if (v == NULL || json_is_null(v))
		return admin_csv_cell(out, NULL);
	if (json_is_string(v))
		return admin_csv_cell(out, json_string_value(v));
	if (json_is_integer(v)) {
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
		return admin_csv_cell(out, num);
	}
	if (json_is_array(v)) {
		if ((tmp = evbuffer_new()) == NULL)
			return -1;
		for (i = 0; i < json_array_size(v); i++) {
			json_t *e = json_array_get(v, i);

			if (i > 0)
				evbuffer_add(tmp, " ", 1);
			if (json_is_string(e))
				evbuffer_add(tmp, json_string_value(e), json_string_length(e));
		}
		evbuffer_add(tmp, "", 1);
		n = evbuffer_get_length(tmp);
		joined = (char *)evbuffer_pullup(tmp, (ssize_t)n);
		rc = joined != NULL ? admin_csv_cell(out, joined) : -1;
		evbuffer_free(tmp);
		return rc;
	}
	if (json_is_true(v) || json_is_false(v))
		return admin_csv_cell(out, json_is_true(v) ? "true" : "false");
	return admin_csv_cell(out, NULL);
}

static int
csv_cb(void *arg, const char *line, size_t len, uint64_t offset, json_t *obj)
{
	struct evbuffer *out = arg;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(csv_columns); i++) {
		if ((i > 0 && evbuffer_add(out, ",", 1) == -1) ||
		    csv_value(out, json_object_get(obj, csv_columns[i])) == -1)
			return -1;
	}
	return evbuffer_add(out, "\r\n", 2);
}

char *
admin_audit_csv(const struct admin_audit_query *q, size_t *len, char *err, size_t errlen)
{
	struct audit_filter f;
	struct evbuffer *out;
	char *s = NULL;
	size_t i;

	if ((out = evbuffer_new()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (i = 0; i < ARRAY_SIZE(csv_columns); i++)
		if ((i > 0 && evbuffer_add(out, ",", 1) == -1) ||
		    evbuffer_add(out, csv_columns[i], strlen(csv_columns[i])) == -1)
			goto oom;
	if (evbuffer_add(out, "\r\n", 2) == -1)
		goto oom;
	filter_from_query(q, &f);
	f.before = 0;
	f.limit = ADMIN_CSV_ROWS_MAX;
	if (!log_missing(q->path) &&
	    audit_query(q->path, &f, csv_cb, out, NULL, err, errlen) == -1)
		goto done;
	*len = evbuffer_get_length(out);
	if ((s = malloc(*len + 1)) == NULL)
		goto oom;
	evbuffer_remove(out, s, *len);
	s[*len] = '\0';
	goto done;
oom:
	snprintf(err, errlen, "out of memory");
done:
	evbuffer_free(out);
	return s;
}

/* ---- Dashboard usage ---------------------------------------------------------- */

struct usage_acc {
	struct admin_usage	*u;
	char			 day_ago[AUDIT_TS_LEN + 1];
	size_t			 cap;
};

static struct admin_usage_row *
usage_row(struct usage_acc *acc, const char *account)
{
	struct admin_usage *u = acc->u;
	struct admin_usage_row *nr;
	size_t i, ncap;

	for (i = 0; i < u->n; i++)
		if (strcasecmp(u->rows[i].account, account) == 0)
			return &u->rows[i];
	if (u->n >= VAULT_MAX_ACCOUNTS * 2)
		return NULL;	/* bounded: removed accounts beyond this are ignored */
	if (u->n == acc->cap) {
		ncap = acc->cap == 0 ? 16 : acc->cap * 2;
		if ((nr = reallocarray(u->rows, ncap, sizeof(*nr))) == NULL)
			return NULL;
		u->rows = nr;
		acc->cap = ncap;
	}
	memset(&u->rows[u->n], 0, sizeof(u->rows[0]));
	strlcpy(u->rows[u->n].account, account, sizeof(u->rows[0].account));
	return &u->rows[u->n++];
}

static int
usage_cb(void *arg, const char *line, size_t len, uint64_t offset, json_t *obj)
{
	struct usage_acc *acc = arg;
	struct audit_fields fs;
	struct admin_usage_row *row;
	char account[VAULT_ADDR_MAX], status[16], ts[AUDIT_TS_LEN + 1];

	if (audit_fields_scan(line, len, &fs) == -1 ||
	    audit_fields_get(&fs, "account", 0, account, sizeof(account)) == -1 ||
	    audit_fields_get(&fs, "status", 0, status, sizeof(status)) == -1 ||
	    audit_fields_get(&fs, "ts", 0, ts, sizeof(ts)) == -1)
		return 0;
	if ((row = usage_row(acc, account)) == NULL)
		return 0;
	if (strcmp(status, "delivered") == 0) {
		if (strcmp(ts, acc->day_ago) >= 0) {
			row->messages_24h++;
			row->recipients_24h += audit_fields_count(&fs, "rcpt_to");
		}
		strlcpy(row->last_delivery, ts, sizeof(row->last_delivery));
		row->quota_hold = 0;
	} else if (strcmp(status, "failed") == 0 || strcmp(status, "deferred") == 0 ||
	    strcmp(status, "rejected") == 0) {
		strlcpy(row->last_error, ts, sizeof(row->last_error));
		strlcpy(row->last_error_status, status, sizeof(row->last_error_status));
		if (audit_fields_get(&fs, "upstream_reply", 0, row->last_error_reply,
		    sizeof(row->last_error_reply)) == -1)
			row->last_error_reply[0] = '\0';
		/* Google's daily-limit reply: the account is held until its
		 * window has room (SPEC 4). */
		row->quota_hold = strstr(row->last_error_reply, "5.4.5") != NULL &&
		    strcmp(ts, acc->day_ago) >= 0;
	}
	return 0;
}

struct admin_usage *
admin_usage_scan(const char *audit_path, time_t now, char *err, size_t errlen)
{
	struct usage_acc acc;
	struct audit_filter f;
	char day[32];

	memset(&acc, 0, sizeof(acc));
	if ((acc.u = calloc(1, sizeof(*acc.u))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* Audit times are "YYYY-MM-DDTHH:MM:SS.mmmZ": compare as strings. */
	time_rfc3339(now - ADMIN_DAY, day, sizeof(day));
	snprintf(acc.day_ago, sizeof(acc.day_ago), "%.19s.000Z", day);
	memset(&f, 0, sizeof(f));
	f.has_since = 1;
	f.since = now - ADMIN_USAGE_LOOKBACK;
	f.event = "message";
	f.raw_only = 1;
	if (!log_missing(audit_path) &&
	    audit_query(audit_path, &f, usage_cb, &acc, NULL, err, errlen) == -1) {
		admin_usage_free(acc.u);
		return NULL;
	}
	return acc.u;
}

const struct admin_usage_row *
admin_usage_find(const struct admin_usage *u, const char *account)
{
	size_t i;

	for (i = 0; u != NULL && i < u->n; i++)
		if (strcasecmp(u->rows[i].account, account) == 0)
			return &u->rows[i];
	return NULL;
}

void
admin_usage_free(struct admin_usage *u)
{
	if (u == NULL)
		return;
	free(u->rows);
	free(u);
}
