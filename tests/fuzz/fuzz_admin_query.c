/*
 * fuzz_admin_query.c: libFuzzer harness for the query strings of the admin
 * API: the audit filter of GET /api/v1/audit and /api/v1/audit.csv (since,
 * until, account, client, sender, status, event, limit, cursor), through
 * the real route of admin/admin_api.c on the fake server of fuzz_admin.h
 * with a valid session, and percent-decoding itself (admin_pct_decode()).
 *
 * Input: byte 0: bit 0 the CSV route, bit 1 the worker pool is full, bit 2
 * HEAD instead of GET, bits 3-7 an output size for the direct decoding
 * test; then the query string (up to a NUL: libmicrohttpd hands over the
 * target as a C string).
 *
 * The harness carries its own reading of the query (an oracle written from
 * the documentation, not from the code): parameters split at '&', a name
 * and value split at the first '=', both percent-decoded with '+' as a
 * space; a name that does not decode is no parameter; the first parameter
 * of a name decides, an empty value counts as absent, a value that does not
 * decode or does not fit is an error. Properties:
 *  - the reply is 400 exactly when some filter is malformed, and its error
 *    names the first malformed one in the route's order; otherwise the
 *    audit view runs (200) or the pool is full (503);
 *  - the filter the audit view gets is exactly the oracle's: every string
 *    (NUL-terminated, no control byte), since / until present exactly when
 *    given (and equal to what time_parse() makes of them), limit 1 to
 *    ADMIN_AUDIT_LIMIT_MAX or the default, cursor as given or 0, the
 *    configured audit path;
 *  - admin_pct_decode() agrees with the oracle's decoder, in both modes and
 *    for any output size, and never writes past the output;
 *  - the reply properties of fake_dispatch(), and no leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "util.h"

#include "fuzz_admin.h"
#include "fuzz_util.h"

#define URI_AUDIT	"/api/v1/audit"
#define URI_CSV		"/api/v1/audit.csv"
#define NAME_CAP	64	/* query_get()'s name buffer */
#define TIME_CAP	64	/* API_TIME_MAX */
#define STATUS_CAP	32

enum qstate { Q_ABSENT, Q_PRESENT, Q_BAD };

struct qval {
	enum qstate	state;
	char		*val;	/* decoded, NUL-terminated when present */
	size_t		len;
};

static int
hexdigit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * The oracle's decoder: a '%' takes exactly two hex digits, '+' is a space
 * in a query, and nothing may decode to a control byte. out has room for
 * len bytes; returns the decoded length or -1.
 */
static long
decode(const unsigned char *in, size_t len, int form, unsigned char *out)
{
	size_t i = 0, o = 0;
	int c, h, l;

	while (i < len) {
		c = in[i++];
		if (c == '%') {
			if (len - i < 2 || (h = hexdigit(in[i])) < 0 || (l = hexdigit(in[i + 1])) < 0)
				return -1;
			c = h << 4 | l;
			i += 2;
		} else if (form && c == '+') {
			c = ' ';
		}
		if (c < 0x20 || c == 0x7f)
			return -1;
		out[o++] = (unsigned char)c;
	}
	return (long)o;
}

/* The first parameter called name; cap is the buffer the route gives it. */
static struct qval
lookup(const char *query, const char *name, size_t cap)
{
	struct qval v = { Q_ABSENT, NULL, 0 };
	const char *seg = query, *end, *eq;
	unsigned char *buf;
	long n;

	for (; seg != NULL; seg = *end == '&' ? end + 1 : NULL) {
		end = seg + strcspn(seg, "&");
		eq = memchr(seg, '=', (size_t)(end - seg));
		if (eq == NULL)
			continue;
		if ((buf = malloc((size_t)(eq - seg) + 1)) == NULL)
			abort();
		n = decode((const unsigned char *)seg, (size_t)(eq - seg), 1, buf);
		if (n < 0 || n >= NAME_CAP || (size_t)n != strlen(name) ||
		    memcmp(buf, name, (size_t)n) != 0) {
			free(buf);
			continue;
		}
		free(buf);
		if ((v.val = malloc((size_t)(end - eq))) == NULL)
			abort();
		n = decode((const unsigned char *)eq + 1, (size_t)(end - eq - 1), 1,
		    (unsigned char *)v.val);
		if (n < 0 || (size_t)n >= cap) {
			v.state = Q_BAD;
		} else {
			v.len = (size_t)n;
			v.val[n] = '\0';
			v.state = n > 0 ? Q_PRESENT : Q_ABSENT;
		}
		return v;
	}
	return v;
}

/* Only decimal digits, no sign, within [min, max]. */
static int
number(const struct qval *v, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t x = 0;
	size_t i;

	if (v->len == 0)
		return -1;
	for (i = 0; i < v->len; i++) {
		if (v->val[i] < '0' || v->val[i] > '9' ||
		    __builtin_mul_overflow(x, 10, &x) ||
		    __builtin_add_overflow(x, (uint64_t)(v->val[i] - '0'), &x))
			return -1;
	}
	if (x < min || x > max)
		return -1;
	*out = x;
	return 0;
}

static void
check_string(const char *got, size_t size, const struct qval *v, const char *what)
{
	const char *p;

	FUZZ_CHECK(memchr(got, '\0', size) != NULL, "%s not terminated", what);
	for (p = got; *p != '\0'; p++)
		FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in %s", what);
	if (v->state == Q_PRESENT)
		FUZZ_CHECK(strlen(got) == v->len && memcmp(got, v->val, v->len) == 0,
		    "%s is \"%s\", expected \"%s\"", what, got, v->val);
	else
		FUZZ_CHECK(got[0] == '\0', "%s is \"%s\" though not given", what, got);
}

/* admin_pct_decode() against the oracle, for one mode and output size. */
static void
check_decode(const uint8_t *in, size_t len, int form, size_t outlen)
{
	unsigned char *want = malloc(len + 1);
	char *out = malloc(outlen + 1);
	long n;
	int rc;

	if (want == NULL || out == NULL)
		abort();
	n = decode(in, len, form, want);
	/* One guard byte past what the decoder may use. */
	out[outlen] = 'G';
	rc = admin_pct_decode((const char *)in, len, form, out, outlen);
	FUZZ_CHECK(out[outlen] == 'G', "admin_pct_decode wrote past %zu bytes", outlen);
	if (n < 0 || (size_t)n >= outlen) {
		FUZZ_CHECK(rc == -1, "decoded what the oracle refuses (form %d, out %zu)", form,
		    outlen);
	} else {
		FUZZ_CHECK(rc == 0, "refused what the oracle decodes (form %d, out %zu)", form,
		    outlen);
		FUZZ_CHECK(memcmp(out, want, (size_t)n) == 0 && out[n] == '\0',
		    "decoded differently (form %d)", form);
	}
	free(want);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct {
		const char	*key;
		size_t		 off, cap;
	} strs[] = {
		{ "account", offsetof(struct admin_audit_query, account), ADMIN_FILTER_MAX },
		{ "client", offsetof(struct admin_audit_query, client), ADMIN_FILTER_MAX },
		{ "sender", offsetof(struct admin_audit_query, sender), ADMIN_FILTER_MAX },
		{ "status", offsetof(struct admin_audit_query, status), STATUS_CAP },
		{ "event", offsetof(struct admin_audit_query, event), STATUS_CAP },
	};
	struct fake_opts o;
	struct admin_req *r;
	unsigned f = (unsigned)fuzz_take(&data, &size, 1);
	int csv = f & 1;
	struct qval sv[ARRAY_SIZE(strs)], since, until, limit, cursor;
	const char *bad = NULL, *err;
	char *query, *uri;
	uint64_t nlimit = ADMIN_AUDIT_LIMIT, ncursor = 0;
	time_t t;
	size_t i, qlen;
	json_t *j;

	/* Percent-decoding alone, on the raw bytes (NUL included). */
	check_decode(data, size, 0, (f >> 3) + 1);
	check_decode(data, size, 1, (f >> 3) + 1);
	check_decode(data, size, 1, size + 1);

	qlen = strnlen((const char *)data, size);
	query = fuzz_dup(data, qlen, 1);
	if ((uri = malloc(qlen + sizeof(URI_CSV) + 2)) == NULL)
		abort();
	snprintf(uri, qlen + sizeof(URI_CSV) + 2, "%s?%s", csv ? URI_CSV : URI_AUDIT, query);

	/* The oracle, in the order the route checks. */
	for (i = 0; i < ARRAY_SIZE(strs); i++) {
		sv[i] = lookup(query, strs[i].key, strs[i].cap);
		if (bad == NULL && sv[i].state == Q_BAD)
			bad = strs[i].key;
	}
	since = lookup(query, "since", TIME_CAP);
	until = lookup(query, "until", TIME_CAP);
	limit = lookup(query, "limit", TIME_CAP);
	cursor = lookup(query, "cursor", TIME_CAP);
	if (bad == NULL && (since.state == Q_BAD || (since.state == Q_PRESENT &&
	    time_parse(since.val, time(NULL), &t) == -1)))
		bad = "since";
	if (bad == NULL && (until.state == Q_BAD || (until.state == Q_PRESENT &&
	    time_parse(until.val, time(NULL), &t) == -1)))
		bad = "until";
	if (bad == NULL && (limit.state == Q_BAD || (limit.state == Q_PRESENT &&
	    number(&limit, 1, ADMIN_AUDIT_LIMIT_MAX, &nlimit) == -1)))
		bad = "limit";
	if (bad == NULL && (cursor.state == Q_BAD || (cursor.state == Q_PRESENT &&
	    number(&cursor, 1, UINT64_MAX, &ncursor) == -1)))
		bad = "cursor";

	memset(&o, 0, sizeof(o));
	o.workers_full = (f >> 1) & 1;
	fake_begin(&o);
	{
		char cookie[sizeof(fake.sid) + 64];

		snprintf(cookie, sizeof(cookie), "%s=%s", ADMIN_COOKIE_NAME, fake.sid);
		fake_header("Cookie", cookie);
	}
	r = fake_request((f >> 2) & 1 ? "HEAD" : "GET", uri, NULL, 0);
	if (r == NULL)		/* longer than ADMIN_URI_MAX: 414 before the routes */
		goto out;
	fake_dispatch(r);

	if (bad != NULL) {
		FUZZ_CHECK(r->reply.status == 400 && !fake.audit_queried,
		    "malformed %s got %d", bad, r->reply.status);
		j = json_loadb(r->reply.body, r->reply.len, 0, NULL);
		err = json_string_value(json_object_get(j, "error"));
		FUZZ_CHECK(err != NULL && (strncmp(err, bad, strlen(bad)) == 0 ||
		    (strncmp(err, "bad ", 4) == 0 && strncmp(err + 4, bad, strlen(bad)) == 0)),
		    "error \"%s\" does not name %s", err ? err : "", bad);
		json_decref(j);
		goto out;
	}
	if (o.workers_full) {
		FUZZ_CHECK(r->reply.status == 503 && !fake.audit_queried, "full pool: %d",
		    r->reply.status);
		goto out;
	}
	FUZZ_CHECK(r->reply.status == 200 && fake.audit_queried == 1 && fake.audit_csv == csv,
	    "good filter got %d", r->reply.status);
	for (i = 0; i < ARRAY_SIZE(strs); i++)
		check_string((const char *)&fake.q + strs[i].off, strs[i].cap, &sv[i],
		    strs[i].key);
	FUZZ_CHECK(fake.q.t.has_since == (since.state == Q_PRESENT), "has_since");
	FUZZ_CHECK(fake.q.t.has_until == (until.state == Q_PRESENT), "has_until");
	/* Relative times ("2h") move with the clock: a second either way. */
	if (since.state == Q_PRESENT && time_parse(since.val, time(NULL), &t) == 0)
		FUZZ_CHECK(fake.q.t.since >= t - 2 && fake.q.t.since <= t + 2, "since");
	if (until.state == Q_PRESENT && time_parse(until.val, time(NULL), &t) == 0)
		FUZZ_CHECK(fake.q.t.until >= t - 2 && fake.q.t.until <= t + 2, "until");
	FUZZ_CHECK(fake.q.limit == nlimit, "limit %zu, expected %llu", fake.q.limit,
	    (unsigned long long)nlimit);
	FUZZ_CHECK(fake.q.cursor == ncursor, "cursor");
	FUZZ_CHECK(strcmp(fake.q.path, FAKE_AUDIT_PATH) == 0, "path %s", fake.q.path);
out:
	for (i = 0; i < ARRAY_SIZE(strs); i++)
		free(sv[i].val);
	free(since.val);
	free(until.val);
	free(limit.val);
	free(cursor.val);
	fake_end(r);
	free(uri);
	free(query);
	return 0;
}
