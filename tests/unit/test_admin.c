/*
 * test_admin.c: the pure parts of the admin server, as tables: percent-
 * decoding of path segments and query values, Cookie header parsing, the
 * JSON nesting bound, Prometheus label escaping, CSV cells (quoting and
 * formula injection), the same-origin and CSRF token checks, sessions
 * (expiry, fresh ids, hashed storage) and the login throttle window.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <sodium.h>

#include "admin_internal.h"
#include "util.h"

#define BAD	(-1)
#define OK	0

struct pct_case {
	const char	*in;
	int		 form;
	int		 rc;
	const char	*want;
};

static void
test_pct_decode(void **state)
{
	static const struct pct_case cases[] = {
		{ "team%40example.com", 0, OK, "team@example.com" },
		{ "team@example.com", 0, OK, "team@example.com" },
		{ "a%2Fb", 0, OK, "a/b" },			/* a slash inside a segment */
		{ "%41%62%63", 0, OK, "Abc" },
		{ "%e2%82%ac", 0, OK, "\xe2\x82\xac" },		/* UTF-8 passes */
		{ "a+b", 0, OK, "a+b" },			/* '+' is literal in a path */
		{ "a+b", 1, OK, "a b" },			/* ... and a space in a query */
		{ "a%2Bb", 1, OK, "a+b" },
		{ "", 0, OK, "" },
		{ "%", 0, BAD, NULL },
		{ "%4", 0, BAD, NULL },
		{ "abc%", 0, BAD, NULL },
		{ "%zz", 0, BAD, NULL },
		{ "%g1", 0, BAD, NULL },
		{ "%00", 0, BAD, NULL },			/* NUL would cut the name */
		{ "a%0d%0ab", 0, BAD, NULL },			/* CR LF: header / log injection */
		{ "a%09b", 0, BAD, NULL },
		{ "a%7fb", 0, BAD, NULL },
		{ "a\nb", 0, BAD, NULL },
	};
	char out[64];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = admin_pct_decode(cases[i].in, strlen(cases[i].in), cases[i].form, out,
		    sizeof(out));

		assert_int_equal(rc, cases[i].rc);
		if (rc == OK)
			assert_string_equal(out, cases[i].want);
	}
	/* Output bound: 4 bytes hold 3 characters and the NUL. */
	assert_int_equal(admin_pct_decode("abc", 3, 0, out, 4), OK);
	assert_int_equal(admin_pct_decode("abcd", 4, 0, out, 4), BAD);
	assert_int_equal(admin_pct_decode("%41%41%41%41", 12, 0, out, 4), BAD);
}

struct cookie_case {
	const char	*header;
	const char	*name;
	int		 rc;
	const char	*want;
};

static void
test_cookie_get(void **state)
{
	static const struct cookie_case cases[] = {
		{ "smtpvault_session=abc", "smtpvault_session", OK, "abc" },
		{ "a=1; smtpvault_session=abc; b=2", "smtpvault_session", OK, "abc" },
		{ "a=1;smtpvault_session=abc;b=2", "smtpvault_session", OK, "abc" },
		{ "smtpvault_session=\"abc\"", "smtpvault_session", OK, "abc" },
		{ "smtpvault_session=first; smtpvault_session=second", "smtpvault_session", OK,
		    "first" },
		{ "xsmtpvault_session=abc", "smtpvault_session", BAD, NULL },
		{ "smtpvault_sessionx=abc", "smtpvault_session", BAD, NULL },
		{ "smtpvault_session", "smtpvault_session", BAD, NULL },
		{ "", "smtpvault_session", BAD, NULL },
		{ "; ;", "smtpvault_session", BAD, NULL },
		{ "smtpvault_session=", "smtpvault_session", OK, "" },
		{ "__Host-smtpvault_session=t; smtpvault_session=p", "__Host-smtpvault_session",
		    OK, "t" },
		{ "smtpvault_session=p; __Host-smtpvault_session=t", "__Host-smtpvault_session",
		    OK, "t" },
	};
	char out[16];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = admin_cookie_get(cases[i].header, cases[i].name, out, sizeof(out));

		assert_int_equal(rc, cases[i].rc);
		if (rc == OK)
			assert_string_equal(out, cases[i].want);
	}
	assert_int_equal(admin_cookie_get(NULL, "a", out, sizeof(out)), BAD);
	/* Too long for the buffer: refused, not cut. */
	assert_int_equal(admin_cookie_get("a=0123456789abcdef", "a", out, sizeof(out)), BAD);
}

static void
test_json_depth(void **state)
{
	static const struct {
		const char	*json;
		size_t		 max;
		int		 ok;
	} cases[] = {
		{ "{}", 1, 1 },
		{ "{\"a\":[1,2,{\"b\":3}]}", 3, 1 },
		{ "{\"a\":[1,2,{\"b\":3}]}", 2, 0 },
		{ "[[[[]]]]", 4, 1 },
		{ "[[[[[]]]]]", 4, 0 },
		{ "{\"a\":\"[[[[[[[[\"}", 1, 1 },		/* brackets inside a string */
		{ "{\"a\":\"\\\"[[[[[\"}", 1, 1 },		/* after an escaped quote */
		{ "]]]]{", 1, 1 },			/* never negative */
	};
	char deep[200];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(admin_json_depth_ok(cases[i].json, strlen(cases[i].json),
		    cases[i].max), cases[i].ok);
	memset(deep, '[', sizeof(deep));
	assert_int_equal(admin_json_depth_ok(deep, ADMIN_JSON_DEPTH_MAX, ADMIN_JSON_DEPTH_MAX), 1);
	assert_int_equal(admin_json_depth_ok(deep, ADMIN_JSON_DEPTH_MAX + 1,
	    ADMIN_JSON_DEPTH_MAX), 0);
}

static void
test_prom_escape(void **state)
{
	static const struct {
		const char	*in;
		const char	*want;
	} cases[] = {
		{ "team@example.com", "team@example.com" },
		{ "a\"b", "a\\\"b" },
		{ "a\\b", "a\\\\b" },
		{ "a\nb", "a\\nb" },
		{ "\"}\nevil 1", "\\\"}\\nevil 1" },
		{ "", "" },
		{ "caf\xc3\xa9", "caf\xc3\xa9" },
	};
	char out[64];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(admin_prom_escape(cases[i].in, out, sizeof(out)), OK);
		assert_string_equal(out, cases[i].want);
	}
	/* Truncation is an error, and never leaves half an escape. */
	assert_int_equal(admin_prom_escape("abc\"", out, 5), BAD);
	assert_string_equal(out, "abc");
}

static void
test_csv_cell(void **state)
{
	static const struct {
		const char	*in;
		const char	*want;
	} cases[] = {
		{ "plain", "\"plain\"" },
		{ NULL, "\"\"" },
		{ "", "\"\"" },
		{ "a,b", "\"a,b\"" },
		{ "say \"hi\"", "\"say \"\"hi\"\"\"" },
		{ "line1\r\nline2", "\"line1\r\nline2\"" },
		{ "=1+1", "\"'=1+1\"" },
		{ "+1", "\"'+1\"" },
		{ "-2", "\"'-2\"" },
		{ "@SUM(A1)", "\"'@SUM(A1)\"" },
		{ "\tx", "\"'\tx\"" },
		{ "\rx", "\"'\rx\"" },
		{ "=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\"" },
		{ "a=b", "\"a=b\"" },
		{ "<script>alert(1)</script>", "\"<script>alert(1)</script>\"" },
	};
	struct evbuffer *b;
	char out[128];
	size_t i, n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_non_null(b = evbuffer_new());
		assert_int_equal(admin_csv_cell(b, cases[i].in), OK);
		n = evbuffer_get_length(b);
		assert_true(n < sizeof(out));
		evbuffer_remove(b, out, n);
		out[n] = '\0';
		assert_string_equal(out, cases[i].want);
		evbuffer_free(b);
	}
}

static void
test_origin_and_token(void **state)
{
	static const struct {
		const char	*origin;
		const char	*host;
		int		 tls;
		int		 ok;
	} cases[] = {
		{ NULL, "127.0.0.1:8025", 0, 1 },	/* absent: decided by the token */
		{ "http://127.0.0.1:8025", "127.0.0.1:8025", 0, 1 },
		{ "HTTP://LOCALHOST:8025", "localhost:8025", 0, 1 },
		{ "https://127.0.0.1:8025", "127.0.0.1:8025", 0, 0 },	/* scheme differs */
		{ "http://127.0.0.1:8025", "127.0.0.1:8025", 1, 0 },
		{ "https://127.0.0.1:8025", "127.0.0.1:8025", 1, 1 },
		{ "http://evil.example", "127.0.0.1:8025", 0, 0 },
		{ "http://127.0.0.1:8025.evil", "127.0.0.1:8025", 0, 0 },
		{ "http://127.0.0.1", "127.0.0.1:8025", 0, 0 },	/* port differs */
		{ "null", "127.0.0.1:8025", 0, 0 },
		{ "", "127.0.0.1:8025", 0, 0 },
		{ "http://127.0.0.1:8025", NULL, 0, 0 },
		{ "http://127.0.0.1:8025", "", 0, 0 },
	};
	char a[ADMIN_TOKEN_HEX + 1], b[ADMIN_TOKEN_HEX + 1];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(admin_origin_ok(cases[i].origin, cases[i].host, cases[i].tls),
		    cases[i].ok);
	admin_token_new(a);
	admin_token_new(b);
	assert_int_equal(strlen(a), ADMIN_TOKEN_HEX);
	assert_string_not_equal(a, b);
	assert_true(admin_token_equal(a, a));
	assert_false(admin_token_equal(b, a));
	assert_false(admin_token_equal(NULL, a));
	assert_false(admin_token_equal("", a));
	b[0] = '\0';
	memcpy(b, a, ADMIN_TOKEN_HEX - 1);
	b[ADMIN_TOKEN_HEX - 1] = '\0';
	assert_false(admin_token_equal(b, a));		/* a prefix */
	memcpy(b, a, sizeof(b));
	b[ADMIN_TOKEN_HEX - 1] = b[ADMIN_TOKEN_HEX - 1] == '0' ? '1' : '0';
	assert_false(admin_token_equal(b, a));		/* last digit */
}

static void
test_sessions(void **state)
{
	struct admin_sessions *ss = admin_sessions_new();
	const struct admin_session *s, *t;
	char id[ADMIN_TOKEN_HEX + 1], id2[ADMIN_TOKEN_HEX + 1], csrf[ADMIN_TOKEN_HEX + 1];
	time_t now = 1000;
	size_t i;

	assert_non_null(ss);
	s = admin_session_create(ss, "alice", "127.0.0.1", now, id);
	assert_non_null(s);
	strlcpy(csrf, s->csrf, sizeof(csrf));
	assert_string_not_equal(csrf, id);
	/* The id is not kept in the clear. */
	assert_null(memmem(s, sizeof(*s), id, strlen(id)));
	assert_ptr_equal(admin_session_find(ss, id, now + 1), s);
	assert_null(admin_session_find(ss, "nope", now + 1));
	assert_null(admin_session_find(ss, NULL, now + 1));
	/* Upper case hex is another id. */
	strlcpy(id2, id, sizeof(id2));
	for (i = 0; id2[i] != '\0'; i++)
		if (id2[i] >= 'a' && id2[i] <= 'f')
			id2[i] = (char)(id2[i] - 'a' + 'A');
	assert_null(admin_session_find(ss, id2, now + 1));
	/* A new login is a new id and a new token. */
	t = admin_session_create(ss, "alice", "127.0.0.1", now, id2);
	assert_string_not_equal(id, id2);
	assert_string_not_equal(t->csrf, csrf);
	/* Idle expiry: each use moves it. */
	now += ADMIN_SESSION_IDLE - 1;
	assert_non_null(admin_session_find(ss, id, now));
	now += ADMIN_SESSION_IDLE - 1;
	assert_non_null(admin_session_find(ss, id, now));
	assert_null(admin_session_find(ss, id2, now));		/* id2 idled out */
	now += ADMIN_SESSION_IDLE;
	assert_null(admin_session_find(ss, id, now));
	assert_null(admin_session_find(ss, id, now - ADMIN_SESSION_IDLE));	/* gone for good */
	/* Absolute expiry, however busy. */
	now = 5000;
	admin_session_create(ss, "bob", "::1", now, id);
	for (i = 0; i < (size_t)(ADMIN_SESSION_ABSOLUTE / (ADMIN_SESSION_IDLE / 2)) - 1; i++) {
		now += ADMIN_SESSION_IDLE / 2;
		assert_non_null(admin_session_find(ss, id, now));
	}
	now += ADMIN_SESSION_IDLE / 2;
	assert_null(admin_session_find(ss, id, now));
	/* Logout. */
	admin_session_create(ss, "carol", "::1", now, id);
	admin_session_destroy(ss, id);
	assert_null(admin_session_find(ss, id, now));
	/* Bounded: the least recently used one goes. */
	admin_session_create(ss, "first", "::1", now, id);
	for (i = 0; i < ADMIN_SESSIONS_MAX; i++)
		admin_session_create(ss, "more", "::1", now + 1 + (time_t)i, id2);
	assert_null(admin_session_find(ss, id, now + ADMIN_SESSIONS_MAX + 1));
	assert_int_equal(admin_session_count(ss, now + ADMIN_SESSIONS_MAX + 1), ADMIN_SESSIONS_MAX);
	admin_sessions_free(ss);
}

static void
test_throttle(void **state)
{
	struct admin_throttle *t = admin_throttle_new();
	time_t now = 10000, wait;
	int first, i;

	assert_non_null(t);
	/* Five failures in the window are allowed to happen ... */
	for (i = 0; i < ADMIN_THROTTLE_FAILS; i++) {
		assert_int_equal(admin_throttle_check(t, "ip:1.2.3.4", now + i, &wait, &first), 0);
		admin_throttle_begin(t, "ip:1.2.3.4", now + i);
		admin_throttle_end(t, "ip:1.2.3.4", now + i, 1);
	}
	/* ... the sixth attempt is refused until the first leaves the window. */
	assert_int_equal(admin_throttle_check(t, "ip:1.2.3.4", now + 10, &wait, &first), -1);
	assert_int_equal(wait, ADMIN_THROTTLE_WINDOW - 10);
	assert_true(first);
	assert_int_equal(admin_throttle_check(t, "ip:1.2.3.4", now + 11, &wait, &first), -1);
	assert_false(first);					/* reported once */
	assert_int_equal(admin_throttle_check(t, "IP:1.2.3.4", now + 11, &wait, &first), -1);
	assert_int_equal(admin_throttle_check(t, "ip:1.2.3.5", now + 11, &wait, &first), 0);
	assert_int_equal(admin_throttle_check(t, "ip:1.2.3.4",
	    now + ADMIN_THROTTLE_WINDOW - 1, &wait, &first), -1);
	assert_int_equal(wait, 1);
	/* The first failure has left the window: one more try. */
	assert_int_equal(admin_throttle_check(t, "ip:1.2.3.4", now + ADMIN_THROTTLE_WINDOW,
	    &wait, &first), 0);
	admin_throttle_begin(t, "ip:1.2.3.4", now + ADMIN_THROTTLE_WINDOW);
	admin_throttle_end(t, "ip:1.2.3.4", now + ADMIN_THROTTLE_WINDOW, 1);
	assert_int_equal(admin_throttle_check(t, "ip:1.2.3.4", now + ADMIN_THROTTLE_WINDOW,
	    &wait, &first), -1);
	assert_int_equal(wait, 1);			/* the second failure goes next */
	/* Attempts still being verified count: a parallel burst is cut off. */
	for (i = 0; i < ADMIN_THROTTLE_FAILS; i++) {
		assert_int_equal(admin_throttle_check(t, "user:bob", now, &wait, &first), 0);
		admin_throttle_begin(t, "user:bob", now);
	}
	assert_int_equal(admin_throttle_check(t, "user:bob", now, &wait, &first), -1);
	assert_true(wait >= 1);
	for (i = 0; i < ADMIN_THROTTLE_FAILS; i++)
		admin_throttle_end(t, "user:bob", now, 0);
	assert_int_equal(admin_throttle_check(t, "user:bob", now, &wait, &first), 0);
	/* A success clears a user's failures. */
	for (i = 0; i < ADMIN_THROTTLE_FAILS; i++) {
		admin_throttle_begin(t, "user:carol", now);
		admin_throttle_end(t, "user:carol", now, 1);
	}
	assert_int_equal(admin_throttle_check(t, "user:carol", now, &wait, &first), -1);
	admin_throttle_clear(t, "user:carol");
	assert_int_equal(admin_throttle_check(t, "user:carol", now, &wait, &first), 0);
	admin_throttle_free(t);
}

static void
test_throttle_table_bound(void **state)
{
	struct admin_throttle *t = admin_throttle_new();
	char key[32];
	time_t now = 50000, wait;
	int first, i, j;

	/* A locked-out key survives a flood of other keys that idle out. */
	for (j = 0; j < ADMIN_THROTTLE_FAILS; j++) {
		admin_throttle_begin(t, "ip:10.0.0.1", now);
		admin_throttle_end(t, "ip:10.0.0.1", now, 1);
	}
	for (i = 0; i < 3 * ADMIN_THROTTLE_KEYS; i++) {
		snprintf(key, sizeof(key), "user:u%d", i);
		admin_throttle_begin(t, key, now + 1);
		admin_throttle_end(t, key, now + 1, 0);
	}
	assert_int_equal(admin_throttle_check(t, "ip:10.0.0.1", now + 2, &wait, &first), -1);
	admin_throttle_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pct_decode),
		cmocka_unit_test(test_cookie_get),
		cmocka_unit_test(test_json_depth),
		cmocka_unit_test(test_prom_escape),
		cmocka_unit_test(test_csv_cell),
		cmocka_unit_test(test_origin_and_token),
		cmocka_unit_test(test_sessions),
		cmocka_unit_test(test_throttle),
		cmocka_unit_test(test_throttle_table_bound),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
