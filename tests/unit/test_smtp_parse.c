/*
 * test_smtp_parse.c: command-line parsing (proxy/smtp_parse.c). Tables of
 * verbs, MAIL and RCPT arguments and mailboxes with the expected verdict,
 * the RFC 5321 length bounds at and just past their limits, and the sixteen
 * address forms of nmap's smtp-open-relay script.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))
#define OK	SMTP_PARSE_OK
#define SYN	SMTP_PARSE_SYNTAX
#define REF	SMTP_PARSE_REFUSED
#define PAR	SMTP_PARSE_PARAM
#define U8	SMTP_PARSE_UTF8

static void
test_parse_verb(void **state)
{
	static const struct {
		const char *line;
		int rc;
		const char *verb, *args;
	} cases[] = {
		{ "EHLO client.example", 0, "EHLO", "client.example" },
		{ "ehlo client", 0, "EHLO", "client" },
		{ "QUIT", 0, "QUIT", "" },
		{ "noop   ", 0, "NOOP", "" },
		{ "MAIL FROM:<a@b> \t ", 0, "MAIL", "FROM:<a@b>" },
		{ "MAIL  FROM:<a@b>", 0, "MAIL", "FROM:<a@b>" },
		{ "X-FOO bar", 0, "X-FOO", "bar" },
		{ "XCLIENT ADDR=1.2.3.4", 0, "XCLIENT", "ADDR=1.2.3.4" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", 0, "PROXY", "TCP4 1.2.3.4 5.6.7.8 1 2" },
		{ "", -1, NULL, NULL },
		{ " NOOP", -1, NULL, NULL },
		{ "MAIL\tFROM:<a@b>", -1, NULL, NULL },
		{ "MA:L", -1, NULL, NULL },
		{ "ABCDEFGHIJKLMNOPQ", -1, NULL, NULL },	/* 17 letters */
		{ "ABCDEFGHIJKLMNOP", 0, "ABCDEFGHIJKLMNOP", "" },
		{ "\x80" "EHLO", -1, NULL, NULL },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		char line[128], verb[SMTP_VERB_MAX + 1];
		char *args = NULL;
		int rc;

		snprintf(line, sizeof(line), "%s", cases[i].line);
		rc = smtp_parse_verb(line, verb, sizeof(verb), &args);
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d", i, cases[i].line, rc);
		if (rc == 0) {
			assert_string_equal(verb, cases[i].verb);
			assert_string_equal(args, cases[i].args);
		}
	}
}

struct mail_case {
	const char	*args;
	enum smtp_parse_status st;
	const char	*from;
	int		 has_size;
	uint64_t	 size;
	enum smtp_body	 body;
	int		 utf8;
};

static void
test_parse_mail(void **state)
{
	static const struct mail_case cases[] = {
		{ "FROM:<a@example.com>", OK, "a@example.com", 0, 0, SMTP_BODY_NONE, 0 },
		{ "from:<a@example.com>", OK, "a@example.com", 0, 0, SMTP_BODY_NONE, 0 },
		{ "FROM:<>", OK, "", 0, 0, SMTP_BODY_NONE, 0 },
		{ "FROM: <a@example.com>", OK, "a@example.com", 0, 0, SMTP_BODY_NONE, 0 },
		{ "FROM:a@example.com", OK, "a@example.com", 0, 0, SMTP_BODY_NONE, 0 },
		{ "FROM:<a@example.com> SIZE=1000", OK, "a@example.com", 1, 1000, SMTP_BODY_NONE, 0 },
		{ "FROM:<a@example.com> size=0", OK, "a@example.com", 1, 0, SMTP_BODY_NONE, 0 },
		{ "FROM:<a@example.com> SIZE=18446744073709551615", OK, "a@example.com", 1,
		    UINT64_MAX, SMTP_BODY_NONE, 0 },
		{ "FROM:<a@example.com> SIZE=18446744073709551616", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SIZE=123456789012345678901", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SIZE=-1", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SIZE=1k", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SIZE=", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SIZE", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SIZE=1 SIZE=2", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> BODY=8BITMIME", OK, "a@example.com", 0, 0,
		    SMTP_BODY_8BITMIME, 0 },
		{ "FROM:<a@example.com> BODY=7bit SIZE=5", OK, "a@example.com", 1, 5,
		    SMTP_BODY_7BIT, 0 },
		{ "FROM:<a@example.com> BODY=BINARYMIME", PAR, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> BODY", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> BODY=7BIT BODY=7BIT", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> SMTPUTF8", OK, "a@example.com", 0, 0, SMTP_BODY_NONE, 1 },
		{ "FROM:<a@example.com> SMTPUTF8=yes", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<j\xc3\xb6rg@example.com> SMTPUTF8", OK, "j\xc3\xb6rg@example.com", 0, 0,
		    SMTP_BODY_NONE, 1 },
		{ "FROM:<j\xc3\xb6rg@example.com>", U8, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@b\xc3\xbc" "cher.de> SMTPUTF8 BODY=8BITMIME", OK,
		    "a@b\xc3\xbc" "cher.de", 0, 0, SMTP_BODY_8BITMIME, 1 },
		{ "FROM:<j\xc3@example.com> SMTPUTF8", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<j\xc0\xafx@example.com> SMTPUTF8", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> AUTH=<>", PAR, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> RET=HDRS", PAR, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com> =x", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com>SIZE=1", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a@example.com", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM", SYN, NULL, 0, 0, 0, 0 },
		{ "TO:<a@example.com>", SYN, NULL, 0, 0, 0, 0 },
		{ "", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<a>", SYN, NULL, 0, 0, 0, 0 },
		{ "FROM:<@relay.example:a@example.com>", REF, NULL, 0, 0, 0, 0 },
		{ "FROM:<a%b@example.com>", REF, NULL, 0, 0, 0, 0 },
		{ "FROM:<\"a b\"@example.com>", OK, "\"a b\"@example.com", 0, 0, SMTP_BODY_NONE, 0 },
		{ "FROM:<\"a>b\"@example.com>", OK, "\"a>b\"@example.com", 0, 0, SMTP_BODY_NONE, 0 },
		{ "FROM:<a@[192.0.2.1]>", OK, "a@[192.0.2.1]", 0, 0, SMTP_BODY_NONE, 0 },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		const struct mail_case *c = &cases[i];
		struct smtp_mail_args m;
		const char *why = NULL;
		enum smtp_parse_status st;

		st = smtp_parse_mail(c->args, &m, &why);
		if (st != c->st)
			fail_msg("case %zu \"%s\": status %d (%s)", i, c->args, (int)st,
			    why ? why : "-");
		if (st != OK) {
			assert_non_null(why);
			continue;
		}
		assert_string_equal(m.from, c->from);
		assert_int_equal(m.has_size, c->has_size);
		assert_true(m.size == c->size);
		assert_int_equal(m.body, c->body);
		assert_int_equal(m.smtputf8, c->utf8);
	}
}

static void
test_parse_rcpt(void **state)
{
	static const struct {
		const char *args;
		int utf8;
		enum smtp_parse_status st;
		const char *rcpt;
	} cases[] = {
		{ "TO:<b@example.org>", 0, OK, "b@example.org" },
		{ "to:<B@Example.ORG>", 0, OK, "B@Example.ORG" },
		{ "TO: <b@example.org>", 0, OK, "b@example.org" },
		{ "TO:b@example.org", 0, OK, "b@example.org" },
		{ "TO:<>", 0, SYN, NULL },
		{ "TO:<postmaster>", 0, SYN, NULL },
		{ "TO:<b@example.org> NOTIFY=NEVER", 0, PAR, NULL },
		{ "TO:<b@example.org> ==", 0, SYN, NULL },
		{ "TO:<b@example.org>x", 0, SYN, NULL },
		{ "FROM:<b@example.org>", 0, SYN, NULL },
		{ "TO:<\xc3\xa9@example.org>", 0, U8, NULL },
		{ "TO:<\xc3\xa9@example.org>", 1, OK, "\xc3\xa9@example.org" },
		{ "TO:<b@[IPv6:2001:db8::1]>", 0, OK, "b@[IPv6:2001:db8::1]" },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		char rcpt[SMTP_MAILBOX_MAX + 1];
		const char *why = NULL;
		enum smtp_parse_status st;

		st = smtp_parse_rcpt(cases[i].args, cases[i].utf8, rcpt, sizeof(rcpt), &why);
		if (st != cases[i].st)
			fail_msg("case %zu \"%s\": status %d (%s)", i, cases[i].args, (int)st,
			    why ? why : "-");
		if (st == OK)
			assert_string_equal(rcpt, cases[i].rcpt);
		else
			assert_non_null(why);
	}
}

static void
test_parse_mailbox(void **state)
{
	static const struct {
		const char *box;
		enum smtp_parse_status st;
	} cases[] = {
		{ "user@example.com", OK },
		{ "first.last+tag@sub.example.co.uk", OK },
		{ "!#$&'*+-/=?^_`{|}~@example.com", REF },	/* has '!' */
		{ "#$&'*+-/=?^_`{|}~@example.com", OK },
		{ "a@localhost", OK },
		{ "a@xn--bcher-kva.example", OK },
		{ "a@1-2.example", OK },
		{ "a@[127.0.0.1]", OK },
		{ "a@[IPv6:::1]", OK },
		{ "a@[ipv6:2001:db8::ffff:192.0.2.1]", OK },
		{ "\"quoted\"@example.com", OK },
		{ "\"with \\\" escape\"@example.com", OK },
		{ "", SYN },
		{ "user", SYN },
		{ "user@", SYN },
		{ "@example.com", REF },
		{ ".user@example.com", SYN },
		{ "user.@example.com", SYN },
		{ "us..er@example.com", SYN },
		{ "us er@example.com", SYN },
		{ "user@exa mple.com", SYN },
		{ "user@-example.com", SYN },
		{ "user@example-.com", SYN },
		{ "user@example.com.", SYN },
		{ "user@.example.com", SYN },
		{ "user@example..com", SYN },
		{ "user@exa_mple.com", SYN },
		{ "user@example.com@other.example", SYN },
		{ "user@[1.2.3]", SYN },
		{ "user@[1.2.3.256]", SYN },
		{ "user@[01.2.3.4]", SYN },
		{ "user@[1.2.3.4", SYN },
		{ "user@[IPv6:1.2.3.4]", SYN },
		{ "user@[IPv6:fe80::1%eth0]", SYN },
		{ "user@[x-tag:content]", REF },
		{ "user@[example.com]", SYN },
		{ "user@[]", SYN },
		{ "\"unterminated@example.com", SYN },
		{ "\"\"@example.com", SYN },
		{ "\"a@b\"@example.com", REF },
		{ "\"a\x01\"@example.com", SYN },
		{ "a\x7f@example.com", SYN },
		{ "user%other.example@relay.example", REF },
		{ "other.example!user", REF },
		{ "other.example!user@relay.example", REF },
		{ "@a,@b:user@example.com", REF },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		const char *why = NULL;
		enum smtp_parse_status st;

		st = smtp_parse_mailbox(cases[i].box, strlen(cases[i].box), 0, &why);
		if (st != cases[i].st)
			fail_msg("case %zu \"%s\": status %d (%s)", i, cases[i].box, (int)st,
			    why ? why : "-");
	}
	/* A NUL inside an address literal (found by fuzz_smtp_path): refused,
	 * although inet_pton() would accept the part before it. */
	{
		static const char nul_literal[] = "bob@[IPv6:::1\0x]";
		const char *why = NULL;

		assert_int_equal(smtp_parse_mailbox(nul_literal, sizeof(nul_literal) - 1, 0, &why),
		    SYN);
	}
}

/* RFC 5321 4.5.3.1: local part 64, domain 255, path 256 with the brackets. */
static void
test_parse_bounds(void **state)
{
	char box[600], args[700];
	char rcpt[SMTP_MAILBOX_MAX + 1];
	const char *why;
	size_t n;

	/* local part: 64 ok, 65 not */
	memset(box, 'l', 64);
	memcpy(box + 64, "@example.com", 13);
	assert_int_equal(smtp_parse_mailbox(box, strlen(box), 0, &why), OK);
	memset(box, 'l', 65);
	memcpy(box + 65, "@example.com", 13);
	assert_int_equal(smtp_parse_mailbox(box, strlen(box), 0, &why), SYN);

	/* a label: 63 ok, 64 not */
	memcpy(box, "a@", 2);
	memset(box + 2, 'd', 63);
	memcpy(box + 65, ".com", 5);
	assert_int_equal(smtp_parse_mailbox(box, strlen(box), 0, &why), OK);
	memset(box + 2, 'd', 64);
	memcpy(box + 66, ".com", 5);
	assert_int_equal(smtp_parse_mailbox(box, strlen(box), 0, &why), SYN);

	/* the path: a mailbox of 254 octets ("<" + 254 + ">" = 256) is fine */
	memcpy(box, "a@", 2);
	for (n = 0; n < 252; n++)
		box[2 + n] = (n % 51 == 50) ? '.' : 'd';
	box[254] = '\0';
	assert_int_equal(strlen(box), 254);
	assert_int_equal(smtp_parse_mailbox(box, 254, 0, &why), OK);
	snprintf(args, sizeof(args), "TO:<%s>", box);
	assert_int_equal(smtp_parse_rcpt(args, 0, rcpt, sizeof(rcpt), &why), OK);
	assert_string_equal(rcpt, box);

	/* one more octet: too long, whichever way it comes */
	memmove(box + 1, box, 255);
	box[0] = 'b';
	assert_int_equal(strlen(box), 255);
	assert_int_equal(smtp_parse_mailbox(box, 255, 0, &why), SYN);
	snprintf(args, sizeof(args), "TO:<%s>", box);
	assert_int_equal(smtp_parse_rcpt(args, 0, rcpt, sizeof(rcpt), &why), SYN);
	snprintf(args, sizeof(args), "FROM:<%s>", box);
	{
		struct smtp_mail_args m;

		assert_int_equal(smtp_parse_mail(args, &m, &why), SYN);
	}

	/* a domain over 255 octets */
	memcpy(box, "a@", 2);
	for (n = 2; n < 2 + 256; n++)
		box[n] = ((n - 2) % 50 == 49) ? '.' : 'd';
	box[n] = '\0';
	assert_int_equal(smtp_parse_mailbox(box, strlen(box), 0, &why), SYN);
}

static void
test_parse_helo(void **state)
{
	char out[SMTP_HELO_MAX + 1], big[400];
	const char *why;

	assert_int_equal(smtp_parse_helo("client.example", out, sizeof(out), &why), OK);
	assert_string_equal(out, "client.example");
	assert_int_equal(smtp_parse_helo("[192.0.2.1]", out, sizeof(out), &why), OK);
	assert_int_equal(smtp_parse_helo("my_windows_pc", out, sizeof(out), &why), OK);
	assert_int_equal(smtp_parse_helo("", out, sizeof(out), &why), SYN);
	memset(big, 'h', 255);
	big[255] = '\0';
	assert_int_equal(smtp_parse_helo(big, out, sizeof(out), &why), OK);
	big[255] = 'h';
	big[256] = '\0';
	assert_int_equal(smtp_parse_helo(big, out, sizeof(out), &why), SYN);
}

/*
 * nmap smtp-open-relay: sixteen MAIL/RCPT pairs. The plain forms parse (a
 * trusted client may relay to any domain; untrusted ones never get this
 * far); every routing trick is refused.
 */
static void
test_parse_nmap_open_relay(void **state)
{
	static const struct {
		const char *from, *to;
		enum smtp_parse_status st;
	} cases[] = {
		{ "FROM:<>", "TO:<relaytest@nmap.scanme.org>", OK },
		{ "FROM:<antispam@nmap.scanme.org>", "TO:<relaytest@nmap.scanme.org>", OK },
		{ "FROM:<antispam@relay.example.lan>", "TO:<relaytest@nmap.scanme.org>", OK },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<relaytest@nmap.scanme.org>", OK },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<relaytest%nmap.scanme.org@[192.0.2.25]>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<relaytest%nmap.scanme.org@relay.example.lan>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<\"relaytest@nmap.scanme.org\">", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<\"relaytest%nmap.scanme.org\">", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<relaytest@nmap.scanme.org@[192.0.2.25]>", SYN },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<\"relaytest@nmap.scanme.org\"@[192.0.2.25]>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<relaytest@nmap.scanme.org@relay.example.lan>", SYN },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<@[192.0.2.25]:relaytest@nmap.scanme.org>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<@relay.example.lan:relaytest@nmap.scanme.org>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<nmap.scanme.org!relaytest>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<nmap.scanme.org!relaytest@[192.0.2.25]>", REF },
		{ "FROM:<antispam@[192.0.2.25]>", "TO:<nmap.scanme.org!relaytest@relay.example.lan>", REF },
	};
	size_t i;

	assert_int_equal(N(cases), 16);
	for (i = 0; i < N(cases); i++) {
		struct smtp_mail_args m;
		char rcpt[SMTP_MAILBOX_MAX + 1];
		const char *why = NULL;
		enum smtp_parse_status st;

		assert_int_equal(smtp_parse_mail(cases[i].from, &m, &why), OK);
		st = smtp_parse_rcpt(cases[i].to, 0, rcpt, sizeof(rcpt), &why);
		if (st != cases[i].st)
			fail_msg("case %zu \"%s\": status %d (%s)", i, cases[i].to, (int)st,
			    why ? why : "-");
		if (st == OK)
			assert_null(strpbrk(rcpt, "%!\""));
	}
}

/* Random bytes never crash the parsers and never yield an over-long path. */
static void
test_parse_random(void **state)
{
	static const char alphabet[] = "<>@:.%!\"\\[]aZ0- =\x80\xc3\xa9";
	uint32_t seed = 42;
	size_t iter;

	for (iter = 0; iter < 20000; iter++) {
		char line[80], rcpt[SMTP_MAILBOX_MAX + 1], verb[SMTP_VERB_MAX + 1];
		char *args;
		struct smtp_mail_args m;
		const char *why;
		size_t n, i;

		seed = seed * 1103515245u + 12345u;
		n = (seed >> 16) % (sizeof(line) - 9);
		memcpy(line, iter & 1 ? "FROM:" : "TO:", iter & 1 ? 5 : 3);
		i = iter & 1 ? 5 : 3;
		for (; i < n + 5; i++) {
			seed = seed * 1103515245u + 12345u;
			line[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		line[i] = '\0';
		if (smtp_parse_mail(line, &m, &why) == OK)
			assert_true(strlen(m.from) <= SMTP_MAILBOX_MAX);
		if (smtp_parse_rcpt(line, (int)(iter & 2), rcpt, sizeof(rcpt), &why) == OK)
			assert_true(strlen(rcpt) <= SMTP_MAILBOX_MAX && rcpt[0] != '\0');
		(void)smtp_parse_verb(line, verb, sizeof(verb), &args);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_verb),
		cmocka_unit_test(test_parse_mail),
		cmocka_unit_test(test_parse_rcpt),
		cmocka_unit_test(test_parse_mailbox),
		cmocka_unit_test(test_parse_bounds),
		cmocka_unit_test(test_parse_helo),
		cmocka_unit_test(test_parse_nmap_open_relay),
		cmocka_unit_test(test_parse_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
