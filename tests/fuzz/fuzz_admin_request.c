/*
 * fuzz_admin_request.c: libFuzzer harness for whole admin API requests:
 * method, request target (routes, the {address} path segment and its
 * percent-decoding), headers (the session cookie, X-CSRF-Token, Origin,
 * Host, Sec-Fetch-Site, Content-Type) and body, through the real dispatch
 * of admin/admin_api.c on the fake server of fuzz_admin.h.
 *
 * Input: byte 0: bit 0 TLS (the cookie is then __Host-smtpvault_session),
 * bit 1 the admin password is right, bits 2-3 the upstream's verdict, bit 4
 * the vault refuses changes, bit 5 the worker pool is full, bits 6-7 an
 * output size for the direct cookie test, bit 7 also upstream text that is
 * not UTF-8 (the new App Password's check, the account's last error). Then
 * text:
 * "METHOD TARGET\n", header lines "Name: value\n" up to an empty line, and
 * the body. "@SID@" in a header value or the target becomes the cookie
 * value of the live session, "@CSRF@" its CSRF token (a fuzzer cannot guess
 * 256-bit tokens; it can learn where they go).
 *
 * The harness carries its own reading of cookies, origins and path
 * segments (oracles written from the documentation). Properties:
 *  - nothing only a session may see or do (the account list, the audit
 *    log, the session's token, any change) happens unless the first Cookie
 *    header carries the live session's id under the right name, first
 *    cookie of that name winning, surrounding quotes removed; a request
 *    that does carry it never gets 401 (except a failed login);
 *  - no change (add, rotate, rollback, remove, logout) happens without
 *    exactly the session's X-CSRF-Token, an Origin that is absent or
 *    exactly scheme://Host, and a Sec-Fetch-Site that is not cross-site or
 *    same-site; no login is checked without the latter two;
 *  - the address a change reaches the vault with is exactly the decoded
 *    {address} segment (no '+' to space, no control byte), for the method
 *    of its route;
 *  - admin_cookie_get() agrees with the oracle for both cookie names and any
 *    output size;
 *  - an account's last error is shown even when the upstream's text is not
 *    UTF-8; 405 names the allowed methods; the reply properties of
 *    fake_dispatch(); no leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "util.h"

#include "fuzz_admin.h"
#include "fuzz_util.h"

#define LINE_MAX_KEPT	(ADMIN_URI_MAX + 64)
#define ACCOUNTS	"/api/v1/accounts/"

/* s with every "@SID@" and "@CSRF@" replaced; malloc'd. */
static char *
markers(const char *s)
{
	size_t n = strlen(s), o = 0, i;
	char *out = malloc(n / 5 * ADMIN_TOKEN_HEX + n + 1);

	if (out == NULL)
		abort();
	for (i = 0; i < n; ) {
		if (strncmp(s + i, "@SID@", 5) == 0) {
			memcpy(out + o, fake.sid, ADMIN_TOKEN_HEX);
			o += ADMIN_TOKEN_HEX;
			i += 5;
		} else if (strncmp(s + i, "@CSRF@", 6) == 0) {
			memcpy(out + o, fake.csrf, ADMIN_TOKEN_HEX);
			o += ADMIN_TOKEN_HEX;
			i += 6;
		} else {
			out[o++] = s[i++];
		}
	}
	out[o] = '\0';
	return out;
}

/*
 * The cookie oracle: "name=value" pairs separated by ';', leading blanks
 * before a name skipped, trailing blanks after a value dropped, one pair of
 * surrounding double quotes removed; the first pair with the name counts.
 * Returns the value (malloc'd) or NULL.
 */
static char *
cookie_oracle(const char *h, const char *name)
{
	const char *p = h, *end, *v, *ve;
	size_t nlen = strlen(name);
	char *out;

	if (h == NULL)
		return NULL;
	for (; *p != '\0'; p = *end == ';' ? end + 1 : end) {
		p += strspn(p, " \t;");
		end = p + strcspn(p, ";");
		if ((size_t)(end - p) <= nlen || strncmp(p, name, nlen) != 0 || p[nlen] != '=')
			continue;
		v = p + nlen + 1;
		ve = end;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
			v++;
			ve--;
		}
		if ((out = malloc((size_t)(ve - v) + 1)) == NULL)
			abort();
		memcpy(out, v, (size_t)(ve - v));
		out[ve - v] = '\0';
		return out;
	}
	return NULL;
}

static void
check_cookie_get(const char *h, const char *name, size_t outlen)
{
	char *want = cookie_oracle(h, name), *out = malloc(outlen + 1);
	int rc;

	if (out == NULL)
		abort();
	out[outlen] = 'G';
	rc = admin_cookie_get(h, name, out, outlen);
	FUZZ_CHECK(out[outlen] == 'G', "admin_cookie_get wrote past %zu bytes", outlen);
	if (want == NULL || strlen(want) >= outlen) {
		FUZZ_CHECK(rc == -1, "cookie %s found, the oracle says %s", name,
		    want ? "too long" : "absent");
	} else {
		FUZZ_CHECK(rc == 0 && strcmp(out, want) == 0, "cookie %s: \"%s\", expected \"%s\"",
		    name, rc == 0 ? out : "(none)", want);
	}
	free(want);
	free(out);
}

static int
hexdigit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A path segment decoded ('+' stays), or NULL when it must be refused. */
static char *
segment_oracle(const char *s, size_t len)
{
	char *out = malloc(len + 1);
	size_t i = 0, o = 0;
	int c, h, l;

	if (out == NULL)
		abort();
	while (i < len) {
		c = (unsigned char)s[i++];
		if (c == '%') {
			if (len - i < 2 || (h = hexdigit((unsigned char)s[i])) < 0 ||
			    (l = hexdigit((unsigned char)s[i + 1])) < 0) {
				free(out);
				return NULL;
			}
			c = h << 4 | l;
			i += 2;
		}
		if (c < 0x20 || c == 0x7f) {
			free(out);
			return NULL;
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return out;
}

/* The origin oracle: absent, or exactly scheme://Host, ignoring case. */
static int
origin_oracle(const char *origin, const char *host, int tls)
{
	char want[LINE_MAX_KEPT + 16];

	if (origin == NULL)
		return 1;
	if (host == NULL || host[0] == '\0')
		return 0;
	snprintf(want, sizeof(want), "%s://%s", tls ? "https" : "http", host);
	return strlen(host) < LINE_MAX_KEPT && strcasecmp(origin, want) == 0;
}

/* The value of the first header called name, as the routes see it. */
static const char *
first(const char *name)
{
	size_t i;

	for (i = 0; i < fake.n_headers; i++)
		if (strcasecmp(fake.hname[i], name) == 0)
			return fake.hval[i];
	return NULL;
}

/* Which change route the target names, and its {address} segment. */
static const char *
change_route(const char *path, size_t plen, const char **seg, size_t *seglen)
{
	static const char *const tails[] = { "/rotate", "/rollback", "" };
	static const char *const methods[] = { "POST", "POST", "DELETE" };
	size_t i, tl, pre = strlen(ACCOUNTS);

	if (plen <= pre || strncmp(path, ACCOUNTS, pre) != 0)
		return NULL;
	for (i = 0; i < ARRAY_SIZE(tails); i++) {
		tl = strlen(tails[i]);
		if (plen - pre <= tl || strncmp(path + plen - tl, tails[i], tl) != 0)
			continue;
		*seg = path + pre;
		*seglen = plen - pre - tl;
		if (memchr(*seg, '/', *seglen) != NULL)
			continue;
		return methods[i];
	}
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake_opts o;
	struct admin_req *r = NULL;
	unsigned f = (unsigned)fuzz_take(&data, &size, 1);
	const char *p, *end, *lim = (const char *)data + size, *colon, *cookie, *site;
	const char *cname, *seg = NULL, *want_method;
	char *line, *method = NULL, *target = NULL, *value, *got, *decoded;
	size_t len, plen, seglen = 0;
	int authed, logout, st, i;

	memset(&o, 0, sizeof(o));
	o.tls = f & 1;
	o.login_ok = (f >> 1) & 1;
	o.verify = ((f >> 2) & 3) == 3 ? FAKE_VERIFY_PASS : (enum fake_verify)((f >> 2) & 3);
	o.store = (f >> 4) & 1 ? CRED_ADMIN_UNAVAILABLE : CRED_ADMIN_OK;
	o.workers_full = (f >> 5) & 1;
	o.reply_8bit = (f >> 7) & 1;
	fake_begin(&o);
	cname = o.tls ? ADMIN_COOKIE_NAME_TLS : ADMIN_COOKIE_NAME;

	/* The request line, then headers up to an empty line, then the body. */
	for (p = (const char *)data, i = 0; p < lim; p = end + 1, i++) {
		end = memchr(p, '\n', (size_t)(lim - p));
		if (end == NULL)
			end = lim;
		len = (size_t)(end - p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (i > 0 && len == 0) {
			p = end + 1;
			break;
		}
		line = fuzz_dup((const uint8_t *)p, len > LINE_MAX_KEPT ? LINE_MAX_KEPT : len, 1);
		if (i == 0) {
			value = strchr(line, ' ');
			if (value != NULL)
				*value++ = '\0';
			method = strdup(line);
			target = markers(value != NULL ? value : "/");
		} else if ((colon = strchr(line, ':')) != NULL && colon > line) {
			line[colon - line] = '\0';
			value = markers(colon + 1 + (colon[1] == ' '));
			fake_header(line, value);
			free(value);
		}
		free(line);
	}
	if (method == NULL || target == NULL)
		goto out;
	if (p > lim)
		p = lim;
	r = fake_request(method, target, (const uint8_t *)p, (size_t)(lim - p));
	if (r == NULL)
		goto out;

	cookie = first("Cookie");
	check_cookie_get(cookie, ADMIN_COOKIE_NAME, ADMIN_TOKEN_HEX + 2);
	check_cookie_get(cookie, ADMIN_COOKIE_NAME_TLS, ADMIN_TOKEN_HEX + 2);
	check_cookie_get(cookie, cname, (f >> 6) + 1);
	got = cookie_oracle(cookie, cname);
	authed = got != NULL && strcmp(got, fake.sid) == 0;
	free(got);

	fake_dispatch(r);
	st = r->reply.status;
	logout = st == 200 && r->reply.n_headers == 1 &&
	    strstr(r->reply.hval[0], "Max-Age=0") != NULL;

	/* Sessions. */
	if (fake.privileged || fake.changed || logout)
		FUZZ_CHECK(authed, "privileged=%d changed=%d logout=%d without the session",
		    fake.privileged, fake.changed, logout);
	if (!fake.login_checked && st == 200 && r->reply.body != NULL &&
	    memmem(r->reply.body, r->reply.len, "csrf_token", 10) != NULL)
		FUZZ_CHECK(authed, "the session's token shown without the session");
	if (authed && st == 401)
		FUZZ_CHECK(fake.login_checked, "401 with the live session");

	/* CSRF and origin. */
	site = first("Sec-Fetch-Site");
	if (fake.changed || logout || fake.login_checked) {
		FUZZ_CHECK(origin_oracle(first("Origin"), first("Host"), o.tls),
		    "cross-origin change: Origin %s, Host %s", first("Origin"), first("Host"));
		FUZZ_CHECK(site == NULL || (strcasecmp(site, "cross-site") != 0 &&
		    strcasecmp(site, "same-site") != 0), "Sec-Fetch-Site %s", site);
	}
	if (fake.changed || logout)
		FUZZ_CHECK(first("X-CSRF-Token") != NULL &&
		    strcmp(first("X-CSRF-Token"), fake.csrf) == 0, "change without the token");

	/* The {address} segment. */
	plen = strcspn(r->uri, "?");
	want_method = change_route(r->uri, plen, &seg, &seglen);
	if (fake.rotated || fake.rolled_back || fake.removed) {
		FUZZ_CHECK(want_method != NULL && strcmp(want_method, r->method) == 0,
		    "a change from %s %s", r->method, r->uri);
		decoded = segment_oracle(seg, seglen);
		FUZZ_CHECK(decoded != NULL, "a change for a malformed {address}");
		/* A rotation looks the account up by the segment and changes it
		 * under the vault's own spelling. */
		if (fake.rotated)
			FUZZ_CHECK(strcmp(decoded, fake.info_addr) == 0 &&
			    strcasecmp(decoded, fake.change_addr) == 0,
			    "rotated \"%s\" (looked up \"%s\"), the path says \"%s\"",
			    fake.change_addr, fake.info_addr, decoded);
		else
			FUZZ_CHECK(strcmp(decoded, fake.change_addr) == 0,
			    "changed \"%s\", the path says \"%s\"", fake.change_addr, decoded);
		free(decoded);
	}
	if (want_method != NULL && authed && strcmp(want_method, r->method) == 0) {
		if ((decoded = segment_oracle(seg, seglen)) == NULL)
			FUZZ_CHECK(st == 400, "a malformed {address} got %d", st);
		free(decoded);
	}

	/* Upstream text that is not UTF-8 is escaped, not dropped. */
	if (o.reply_8bit && st == 200 && fake.privileged > 1 && r->reply.body != NULL &&
	    memmem(r->reply.body, r->reply.len, "\"accounts\"", 10) != NULL)
		FUZZ_CHECK(memmem(r->reply.body, r->reply.len, "Nachricht abgelehnt", 19) != NULL,
		    "the account's last error is missing");

	if (st == 405) {
		for (i = 0; i < (int)r->reply.n_headers; i++)
			if (strcmp(r->reply.hname[i], "Allow") == 0)
				break;
		FUZZ_CHECK(i < (int)r->reply.n_headers && r->reply.hval[i][0] != '\0',
		    "405 without Allow");
	}
out:
	fake_end(r);
	free(method);
	free(target);
	return 0;
}
