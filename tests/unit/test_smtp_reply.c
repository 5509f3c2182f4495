/*
 * test_smtp_reply.c: the upstream reply parser, as tables of raw input and
 * the result it must give.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_reply.h"

struct parse_case {
	const char	*name;
	const char	*input;
	int		status;		/* SMTP_REPLY_* */
	int		code;
	const char	*enhanced;
	const char	*text;
	size_t		consumed;	/* 0: strlen(input) when DONE */
};

static const struct parse_case parse_cases[] = {
	{ "single line", "220 smtp.gmail.com ESMTP\r\n",
	  SMTP_REPLY_DONE, 220, "", "smtp.gmail.com ESMTP", 0 },
	{ "bare code", "250\r\n", SMTP_REPLY_DONE, 250, "", "", 0 },
	{ "LF only line end", "250 ok\n", SMTP_REPLY_DONE, 250, "", "ok", 0 },
	{ "enhanced code", "250 2.1.0 OK a1-2\r\n",
	  SMTP_REPLY_DONE, 250, "2.1.0", "OK a1-2", 0 },
	{ "enhanced code only", "235 2.7.0\r\n", SMTP_REPLY_DONE, 235, "2.7.0", "", 0 },
	{ "gmail 535 multiline",
	  "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
	  "535 5.7.8  https://support.google.com/mail/?p=BadCredentials x1\r\n",
	  SMTP_REPLY_DONE, 535, "5.7.8",
	  "Username and Password not accepted. For more information, go to\n"
	  "https://support.google.com/mail/?p=BadCredentials x1", 0 },
	{ "ehlo multiline",
	  "250-smtp.gmail.com at your service, [192.0.2.1]\r\n250-SIZE 35882577\r\n"
	  "250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
	  "250-CHUNKING\r\n250 SMTPUTF8\r\n",
	  SMTP_REPLY_DONE, 250, "",
	  "smtp.gmail.com at your service, [192.0.2.1]\nSIZE 35882577\n8BITMIME\n"
	  "STARTTLS\nENHANCEDSTATUSCODES\nPIPELINING\nCHUNKING\nSMTPUTF8", 0 },
	{ "enhanced class must match code", "550 4.1.1 odd\r\n",
	  SMTP_REPLY_DONE, 550, "", "4.1.1 odd", 0 },
	{ "not an enhanced code", "250 2.1 ok\r\n", SMTP_REPLY_DONE, 250, "", "2.1 ok", 0 },
	{ "enhanced part too long", "250 2.1234.0 x\r\n",
	  SMTP_REPLY_DONE, 250, "", "2.1234.0 x", 0 },
	{ "enhanced glued to text", "250 2.1.0ok\r\n", SMTP_REPLY_DONE, 250, "", "2.1.0ok", 0 },
	{ "tab allowed", "250 a\tb\r\n", SMTP_REPLY_DONE, 250, "", "a\tb", 0 },
	{ "8-bit text kept", "250 caf\xc3\xa9\r\n", SMTP_REPLY_DONE, 250, "", "caf\xc3\xa9", 0 },
	{ "stops after the reply (pipelined next)", "250 one\r\n354 two\r\n",
	  SMTP_REPLY_DONE, 250, "", "one", 9 },
	{ "partial line", "250 ok", SMTP_REPLY_MORE, 0, "", "", 0 },
	{ "continuation only", "250-first\r\n", SMTP_REPLY_MORE, 250, "", "first", 11 },
	{ "empty", "", SMTP_REPLY_MORE, 0, "", "", 0 },
	{ "mixed codes", "250-first\r\n251 second\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "mixed classes", "250-first\r\n550 second\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "garbage", "HTTP/1.1 400 Bad Request\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "code too short", "25\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "code out of range 6xx", "600 x\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "code out of range 1xx", "199 x\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "second digit out of range", "260 x\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "bad separator", "250+x\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "four digits", "2500 x\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "empty line", "\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "control char", "250 a\x01z\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "bare CR inside", "250 a\rb\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "DEL", "250 a\x7f\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
	{ "escape sequence", "250 \x1b[2J\r\n", SMTP_REPLY_ERROR, 0, NULL, NULL, 0 },
};

static void
test_parse_table(void **state)
{
	size_t i, consumed;

	for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *t = &parse_cases[i];
		struct smtp_reply r;
		int rc;

		smtp_reply_init(&r);
		rc = smtp_reply_parse(&r, t->input, strlen(t->input), &consumed);
		print_message("case: %s\n", t->name);
		assert_int_equal(rc, t->status);
		if (rc == SMTP_REPLY_ERROR) {
			assert_non_null(r.error);
			/* Once refused, it stays refused. */
			assert_int_equal(smtp_reply_feed(&r, "250 ok", 6), SMTP_REPLY_ERROR);
			continue;
		}
		assert_null(r.error);
		if (rc == SMTP_REPLY_DONE) {
			assert_int_equal(consumed, t->consumed ? t->consumed : strlen(t->input));
			assert_int_equal(r.code, t->code);
		} else if (t->consumed) {
			assert_int_equal(consumed, t->consumed);
		}
		assert_string_equal(r.enhanced, t->enhanced);
		assert_string_equal(r.text, t->text);
		assert_int_equal(r.textlen, strlen(r.text));
	}
}

/* Fed one byte at a time, the parser gives the same result. */
static void
test_parse_bytewise(void **state)
{
	static const char in[] = "250-smtp.example\r\n250-SIZE 1000\r\n250 AUTH PLAIN LOGIN\r\n";
	struct smtp_reply r;
	size_t off = 0, end, consumed;
	int rc = SMTP_REPLY_MORE;

	smtp_reply_init(&r);
	for (end = 1; end <= sizeof(in) - 1 && rc == SMTP_REPLY_MORE; end++) {
		rc = smtp_reply_parse(&r, in + off, end - off, &consumed);
		off += consumed;
	}
	assert_int_equal(rc, SMTP_REPLY_DONE);
	assert_int_equal(off, sizeof(in) - 1);
	assert_int_equal(r.n_lines, 3);
	assert_string_equal(r.text, "smtp.example\nSIZE 1000\nAUTH PLAIN LOGIN");
}

static void
test_feed_after_done(void **state)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, "250 ok\r", 7), SMTP_REPLY_DONE);
	assert_int_equal(smtp_reply_feed(&r, "250 again", 9), SMTP_REPLY_ERROR);
}

static void
test_line_too_long(void **state)
{
	char *buf;
	struct smtp_reply r;
	size_t consumed, n = SMTP_REPLY_LINE_MAX + 16;

	buf = malloc(n + 3);
	assert_non_null(buf);
	memset(buf, 'a', n);
	memcpy(buf, "250 ", 4);
	/* Without a line end yet: refused as soon as it is over the bound. */
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_parse(&r, buf, n, &consumed), SMTP_REPLY_ERROR);
	/* With a line end. */
	memcpy(buf + n, "\r\n", 3);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_parse(&r, buf, n + 2, &consumed), SMTP_REPLY_ERROR);
	/* Exactly at the bound is fine. */
	memcpy(buf + SMTP_REPLY_LINE_MAX, "\r\n", 3);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_parse(&r, buf, SMTP_REPLY_LINE_MAX + 2, &consumed),
	    SMTP_REPLY_DONE);
	free(buf);
}

static void
test_too_many_lines(void **state)
{
	struct smtp_reply r;
	size_t i;

	smtp_reply_init(&r);
	for (i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		assert_int_equal(smtp_reply_feed(&r, "250-x", 5), SMTP_REPLY_MORE);
	assert_int_equal(smtp_reply_feed(&r, "250 x", 5), SMTP_REPLY_ERROR);
}

/* Many long lines: accepted, text kept up to the bound and marked. */
static void
test_text_truncated(void **state)
{
	char line[1004];
	struct smtp_reply r;
	size_t i;

	memset(line, 'b', sizeof(line));
	memcpy(line, "250-", 4);
	smtp_reply_init(&r);
	for (i = 0; i < 10; i++)
		assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), SMTP_REPLY_MORE);
	assert_int_equal(smtp_reply_feed(&r, "250 end", 7), SMTP_REPLY_DONE);
	assert_true(r.truncated);
	assert_int_equal(r.textlen, SMTP_REPLY_TEXT_MAX - 1);
	assert_int_equal(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
}

struct ehlo_case {
	const char	*kw;
	int		found;
	const char	*params;
};

static void
test_ehlo_has(void **state)
{
	static const char in[] =
	    "250-mx.example greets you STARTTLS\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
	    "250-AUTH=LOGIN\r\n250-auth login plain xoauth2\r\n250-PIPELINING\r\n"
	    "250 STARTTLSX\r\n";
	static const struct ehlo_case cases[] = {
		{ "SIZE", 1, "35882577" },
		{ "8BITMIME", 1, "" },
		{ "AUTH", 1, "LOGIN" },		/* the first match wins */
		{ "pipelining", 1, "" },
		{ "STARTTLS", 0, NULL },	/* only in the greeting and as a prefix */
		{ "SMTPUTF8", 0, NULL },
		{ "8BIT", 0, NULL },
	};
	struct smtp_reply r;
	const char *p;
	size_t i, plen, consumed;

	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_parse(&r, in, sizeof(in) - 1, &consumed), SMTP_REPLY_DONE);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("keyword: %s\n", cases[i].kw);
		assert_int_equal(smtp_reply_ehlo_has(&r, cases[i].kw, &p, &plen), cases[i].found);
		if (cases[i].found) {
			assert_int_equal(plen, strlen(cases[i].params));
			assert_memory_equal(p, cases[i].params, plen);
		}
	}
	/* Not an EHLO success: nothing is advertised. */
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_parse(&r, "502-x\r\n502 STARTTLS\r\n", 21, &consumed),
	    SMTP_REPLY_DONE);
	assert_int_equal(smtp_reply_ehlo_has(&r, "STARTTLS", &p, &plen), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_bytewise),
		cmocka_unit_test(test_feed_after_done),
		cmocka_unit_test(test_line_too_long),
		cmocka_unit_test(test_too_many_lines),
		cmocka_unit_test(test_text_truncated),
		cmocka_unit_test(test_ehlo_has),
	};

	return cmocka_run_group_tests_name("smtp_reply", tests, NULL, NULL);
}
