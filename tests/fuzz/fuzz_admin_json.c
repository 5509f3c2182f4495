/*
 * fuzz_admin_json.c: libFuzzer harness for the JSON bodies of the admin
 * API: POST /api/v1/login, POST /api/v1/accounts (add) and POST
 * /api/v1/accounts/{address}/rotate, through the real routes of
 * admin/admin_api.c on the fake server of fuzz_admin.h (a valid session
 * and CSRF token, so that every body reaches its parser).
 *
 * Input: byte 0: bits 0-1 the route (login, add, rotate, rotate with the
 * address in capitals), bit 2 TLS, bit 3 the admin password is right, bits
 * 4-5 the upstream's verdict on a new App Password, bit 6 the vault refuses
 * the change, bit 7 the worker pool is full. Byte 1: bits 0-1 the
 * Content-Type (application/json, with a charset, text/plain, none), bit 2
 * a same-origin Origin header, bits 3-4 how the vault refuses, bit 5 the
 * upstream's reply is not UTF-8. Then the
 * body. In the body, "password":"@PW@" becomes a fresh random password of
 * 32 hex digits, "@PWS@" the same in groups of four separated by spaces (an
 * App Password as Google shows it), "@PWL@" 300 digits (too long).
 *
 * Properties:
 *  - a body that is not JSON, has a duplicate key, is not an object, nests
 *    deeper than ADMIN_JSON_DEPTH_MAX or has a key the route does not know
 *    gets 400, and nothing reaches the vault, the login check or the
 *    upstream; any other Content-Type gets 415;
 *  - the depth pre-check (admin_json_depth_ok) never refuses valid JSON
 *    within the bound and always refuses valid JSON beyond it;
 *  - what reaches the login check, the vault or the upstream check is
 *    exactly what the body said: the user name (1 to 63 bytes, no NUL), the
 *    password byte for byte (App Passwords without their spaces), 1 to
 *    VAULT_SECRET_MAX bytes; the address, aliases, limits, upstream and TLS
 *    mode of a new account, with the documented defaults; an upstream check
 *    exactly when "verify" asks for one (default: add no, rotate yes), and
 *    nothing stored when the upstream refuses (422) or cannot be reached
 *    (502);
 *  - the raw body is zeroed once parsed;
 *  - the password never appears in a reply, a reply header, a log line or
 *    an audit field, whatever the outcome;
 *  - the reply properties of fake_dispatch(), and no leak (libFuzzer's
 *    leak check).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "config.h"
#include "util.h"

#include "fuzz_admin.h"
#include "fuzz_util.h"

#define ROUTE_LOGIN	0
#define ROUTE_ADD	1
#define ROUTE_ROTATE	2
#define ROUTE_ROTATE_UC	3

#define PW_LEN		32
#define PW_LONG_LEN	300
#define PW_KEY		"\"password\":\""
#define LEAK_WINDOW	12	/* this many digits of a password in a row is a leak */

static const char *const allowed_login[] = { "username", "password", NULL };
static const char *const allowed_add[] = { "address", "password", "aliases", "daily_limit",
	"daily_recipient_limit", "upstream", "tls", "verify", NULL };
static const char *const allowed_rotate[] = { "password", "verify", NULL };

static char pool[PW_LONG_LEN + 1];	/* the random digits of this input */

/*
 * Replace the password markers of in (len bytes); writes to out when it is
 * not NULL. Returns the length of the result; *used is the number of
 * random digits the longest marker took (0 when there was none).
 */
static size_t
substitute(const uint8_t *in, size_t len, uint8_t *out, size_t *used)
{
	static const char *const marks[] = { "@PWS@", "@PWL@", "@PW@" };
	size_t klen = strlen(PW_KEY), i, o = 0, m, k, n;

	*used = 0;
	for (i = 0; i < len; ) {
		for (m = 0; m < ARRAY_SIZE(marks) && len - i > klen; m++)
			if (memcmp(in + i, PW_KEY, klen) == 0 &&
			    len - i - klen >= strlen(marks[m]) &&
			    memcmp(in + i + klen, marks[m], strlen(marks[m])) == 0)
				break;
		if (m >= ARRAY_SIZE(marks) || len - i <= klen) {
			if (out != NULL)
				out[o] = in[i];
			o++;
			i++;
			continue;
		}
		if (out != NULL)
			memcpy(out + o, PW_KEY, klen);
		o += klen;
		n = m == 1 ? PW_LONG_LEN : PW_LEN;
		if (n > *used)
			*used = n;
		for (k = 0; k < n; k++) {
			if (m == 0 && k > 0 && k % 4 == 0) {	/* grouped */
				if (out != NULL)
					out[o] = ' ';
				o++;
			}
			if (out != NULL)
				out[o] = (uint8_t)pool[k];
			o++;
		}
		i += klen + strlen(marks[m]);
	}
	return o;
}

static int
key_allowed(const char *const *allowed, const char *key)
{
	size_t i;

	for (i = 0; allowed[i] != NULL; i++)
		if (strcmp(allowed[i], key) == 0)
			return 1;
	return 0;
}

/* The JSON string v exactly equals the len bytes at s. */
static int
json_str_is(const json_t *v, const char *s, size_t len)
{
	return json_is_string(v) && json_string_length(v) == len &&
	    memcmp(json_string_value(v), s, len) == 0;
}

static int
secret_is(const struct fake_secret *s, const json_t *pw, int app_password)
{
	const char *p = json_string_value(pw);
	size_t n = json_string_length(pw), i, o = 0;

	if (!s->seen || p == NULL)
		return 0;
	for (i = 0; i < n; i++) {
		if (app_password && (p[i] == ' ' || p[i] == '\t'))
			continue;
		if (o >= s->len || s->buf[o] != (unsigned char)p[i])
			return 0;
		o++;
	}
	return o == s->len && s->len >= 1 && s->len <= VAULT_SECRET_MAX;
}

/* json_bool() of admin_api.c: -1 when present but not a boolean. */
static int
bool_or(const json_t *body, const char *key, int dflt)
{
	const json_t *v = json_object_get(body, key);

	if (v == NULL || json_is_null(v))
		return dflt;
	return json_is_boolean(v) ? json_is_true(v) : -1;
}

static void
check_account(const json_t *body)
{
	const struct vault_account *t = &fake.add_tmpl;
	const json_t *v, *e;
	size_t i;

	v = json_object_get(body, "address");
	FUZZ_CHECK(json_str_is(v, t->address, strlen(t->address)),
	    "stored address %s is not the body's", t->address);
	v = json_object_get(body, "aliases");
	if (v == NULL || json_is_null(v)) {
		FUZZ_CHECK(t->n_aliases == 0, "%zu aliases from none", t->n_aliases);
	} else {
		FUZZ_CHECK(json_is_array(v) && json_array_size(v) == t->n_aliases &&
		    t->n_aliases <= VAULT_MAX_ALIASES, "aliases");
		json_array_foreach(v, i, e)
			FUZZ_CHECK(json_str_is(e, t->aliases[i], strlen(t->aliases[i])),
			    "alias %zu %s is not the body's", i, t->aliases[i]);
	}
	v = json_object_get(body, "daily_limit");
	FUZZ_CHECK(t->daily_limit == (v == NULL || json_is_null(v) ? VAULT_DEFAULT_DAILY_LIMIT :
	    (uint64_t)json_integer_value(v)), "daily_limit %llu",
	    (unsigned long long)t->daily_limit);
	FUZZ_CHECK(t->daily_limit >= 1 && t->daily_limit <= 1000000000, "daily_limit range");
	v = json_object_get(body, "daily_recipient_limit");
	FUZZ_CHECK(t->daily_rcpt_limit == (v == NULL || json_is_null(v) ?
	    VAULT_DEFAULT_RCPT_LIMIT : (uint64_t)json_integer_value(v)), "recipient limit");
	v = json_object_get(body, "tls");
	if (v == NULL || json_is_null(v))
		FUZZ_CHECK(t->upstream_tls == -1, "tls %d from none", t->upstream_tls);
	else
		FUZZ_CHECK((t->upstream_tls == UPSTREAM_TLS_STARTTLS &&
		    json_str_is(v, "starttls", 8)) || (t->upstream_tls == UPSTREAM_TLS_IMPLICIT &&
		    json_str_is(v, "implicit", 8)), "tls %d from %s", t->upstream_tls,
		    json_string_value(v));
	v = json_object_get(body, "upstream");
	if (v == NULL || json_is_null(v) || json_string_length(v) == 0)
		FUZZ_CHECK(t->upstream_host[0] == '\0' && t->upstream_port == 0,
		    "upstream %s:%u from none", t->upstream_host, t->upstream_port);
	else
		FUZZ_CHECK(t->upstream_host[0] != '\0' && t->upstream_port != 0 &&
		    strlen(json_string_value(v)) == json_string_length(v) &&
		    strstr(json_string_value(v), t->upstream_host) != NULL,
		    "upstream %s:%u from %s", t->upstream_host, t->upstream_port,
		    json_string_value(v));
}

static int
all_zero(const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

static void
check_no_leak(const struct admin_req *r, size_t pool_len)
{
	char spaced[PW_LEN + PW_LEN / 4];
	size_t i, k, o = 0;

	for (i = 0; i + LEAK_WINDOW <= pool_len; i += 3)
		FUZZ_CHECK(!fake_output_has(r, pool + i, LEAK_WINDOW),
		    "password digits %.12s (offset %zu) in the output", pool + i, i);
	for (k = 0; k < PW_LEN; k++) {
		if (k > 0 && k % 4 == 0)
			spaced[o++] = ' ';
		spaced[o++] = pool[k];
	}
	for (i = 0; i + LEAK_WINDOW <= o; i++)
		FUZZ_CHECK(!fake_output_has(r, spaced + i, LEAK_WINDOW),
		    "grouped password in the output");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const ctypes[] = { "application/json",
		"application/json; charset=utf-8", "text/plain", NULL };
	static const enum cred_admin_result refusals[] = { CRED_ADMIN_EXISTS,
		CRED_ADMIN_INVALID, CRED_ADMIN_UNAVAILABLE, CRED_ADMIN_NOT_FOUND };
	struct fake_opts o;
	struct admin_req *r;
	unsigned f0 = (unsigned)fuzz_take(&data, &size, 1);
	unsigned f1 = (unsigned)fuzz_take(&data, &size, 1);
	unsigned route = f0 & 3;
	const char *uri, *ctype = ctypes[f1 & 3];
	const char *const *allowed;
	unsigned char raw[PW_LONG_LEN / 2];
	char cookie[sizeof(fake.sid) + 64];
	uint8_t *body;
	size_t len, marked;
	json_error_t e;
	json_t *j, *pw;
	int effect, st, json_ok, verify;

	if (size > ADMIN_BODY_MAX)
		return 0;
	memset(&o, 0, sizeof(o));
	o.tls = (f0 >> 2) & 1;
	o.login_ok = (f0 >> 3) & 1;
	o.verify = ((f0 >> 4) & 3) == 3 ? FAKE_VERIFY_PASS : (enum fake_verify)((f0 >> 4) & 3);
	o.store = (f0 >> 6) & 1 ? refusals[(f1 >> 3) & 3] : CRED_ADMIN_OK;
	o.workers_full = (f0 >> 7) & 1;
	o.reply_8bit = (f1 >> 5) & 1;
	len = substitute(data, size, NULL, &marked);
	if (marked) {
		randombytes_buf(raw, sizeof(raw));
		sodium_bin2hex(pool, sizeof(pool), raw, sizeof(raw));
	}
	if (len > ADMIN_BODY_MAX)	/* 413 before the routes (admin_server.c) */
		return 0;
	if ((body = malloc(len + 1)) == NULL)
		abort();
	substitute(data, size, body, &marked);

	fake_begin(&o);
	switch (route) {
	case ROUTE_LOGIN:
		uri = "/api/v1/login";
		allowed = allowed_login;
		break;
	case ROUTE_ADD:
		uri = "/api/v1/accounts";
		allowed = allowed_add;
		break;
	case ROUTE_ROTATE:
		uri = "/api/v1/accounts/alice%40example.com/rotate";
		allowed = allowed_rotate;
		break;
	default:
		uri = "/api/v1/accounts/ALICE@Example.COM/rotate";
		allowed = allowed_rotate;
		break;
	}
	fake_header("Host", "127.0.0.1:8025");
	if (route != ROUTE_LOGIN) {
		snprintf(cookie, sizeof(cookie), "%s=%s",
		    o.tls ? ADMIN_COOKIE_NAME_TLS : ADMIN_COOKIE_NAME, fake.sid);
		fake_header("Cookie", cookie);
		fake_header("X-CSRF-Token", fake.csrf);
	}
	if (ctype != NULL)
		fake_header("Content-Type", ctype);
	if ((f1 >> 2) & 1)
		fake_header("Origin", o.tls ? "https://127.0.0.1:8025" : "http://127.0.0.1:8025");
	r = fake_request("POST", uri, body, len);
	FUZZ_CHECK(r != NULL, "refused before dispatch");

	/* What the harness itself makes of the body. */
	j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &e);
	json_ok = j != NULL && json_is_object(j) &&
	    fake_json_depth(j) <= ADMIN_JSON_DEPTH_MAX;
	if (j != NULL)
		FUZZ_CHECK(admin_json_depth_ok((const char *)body, len, ADMIN_JSON_DEPTH_MAX) ==
		    (fake_json_depth(j) <= ADMIN_JSON_DEPTH_MAX),
		    "depth pre-check disagrees with the parser (depth %zu)", fake_json_depth(j));

	fake_dispatch(r);
	st = r->reply.status;
	effect = fake.login_checked || fake.added || fake.rotated || fake.verify_started;

	if (ctype == NULL || strcmp(ctype, "text/plain") == 0) {
		FUZZ_CHECK(st == 415 && !effect, "Content-Type %s: %d", ctype ? ctype : "none", st);
		goto done;
	}
	if (len > 0)
		FUZZ_CHECK(all_zero(r->body, len), "the body was not wiped");
	if (!json_ok) {
		FUZZ_CHECK(st == 400 && !effect, "bad or too deep JSON got %d", st);
		goto done;
	}
	if (effect) {
		const char *key;
		json_t *v;

		json_object_foreach(j, key, v)
			FUZZ_CHECK(key_allowed(allowed, key), "unknown key %s accepted", key);
		pw = json_object_get(j, "password");
		FUZZ_CHECK(json_is_string(pw), "no password, yet accepted");
	}
	switch (route) {
	case ROUTE_LOGIN:
		FUZZ_CHECK(!fake.added && !fake.rotated && !fake.verify_started, "login changed");
		if (fake.login_checked) {
			json_t *u = json_object_get(j, "username");

			FUZZ_CHECK(json_str_is(u, fake.login_name, strlen(fake.login_name)) &&
			    fake.login_name[0] != '\0', "user name %s is not the body's",
			    fake.login_name);
			FUZZ_CHECK(secret_is(&fake.login_pw, pw, 0),
			    "the password checked is not the body's");
		}
		if (st == 200) {
			FUZZ_CHECK(fake.login_checked && o.login_ok &&
			    strcmp(fake.login_name, FAKE_ADMIN) == 0, "login 200 without a check");
			FUZZ_CHECK(r->reply.n_headers == 1 &&
			    strcmp(r->reply.hname[0], "Set-Cookie") == 0 &&
			    strstr(r->reply.hval[0], fake.sid) == NULL, "login without a new cookie");
		}
		if (fake.login_checked && !(o.login_ok && strcmp(fake.login_name, FAKE_ADMIN) == 0))
			FUZZ_CHECK(st == 401, "wrong login got %d", st);
		break;
	case ROUTE_ADD:
	case ROUTE_ROTATE:
	case ROUTE_ROTATE_UC:
		FUZZ_CHECK(!fake.login_checked, "a change ran the login check");
		FUZZ_CHECK(route == ROUTE_ADD ? !fake.rotated : !fake.added, "wrong change");
		verify = bool_or(j, "verify", route != ROUTE_ADD);
		if (fake.verify_started) {
			FUZZ_CHECK(verify == 1, "upstream check without \"verify\"");
			FUZZ_CHECK(secret_is(&fake.verified, pw, 1),
			    "the password checked upstream is not the body's");
		}
		if (fake.added || fake.rotated) {
			FUZZ_CHECK(verify == 0 || (fake.verify_started &&
			    o.verify == FAKE_VERIFY_PASS), "stored without the upstream's approval");
			FUZZ_CHECK(secret_is(&fake.stored, pw, 1),
			    "the password stored is not the body's");
		}
		if (fake.rotated)
			FUZZ_CHECK(strcmp(fake.change_addr, FAKE_ACCOUNT) == 0, "rotated %s",
			    fake.change_addr);
		if (fake.added)
			check_account(j);
		if (fake.verify_started && o.verify != FAKE_VERIFY_PASS)
			FUZZ_CHECK(st == (o.verify == FAKE_VERIFY_REFUSE ? 422 : 502) &&
			    !fake.added && !fake.rotated, "refused upstream: %d", st);
		if (st == 200 || st == 201)
			FUZZ_CHECK((fake.added || fake.rotated) && o.store == CRED_ADMIN_OK,
			    "%d without a change", st);
		break;
	}
done:
	if (marked)
		check_no_leak(r, marked);
	json_decref(j);
	fake_end(r);
	free(body);
	return 0;
}
