/*
 * fuzz_smtp_parse.c: libFuzzer harness for the SMTP command-line parser
 * (proxy/smtp_parse.h): smtp_parse_verb() and the argument parsers of MAIL,
 * RCPT and HELO/EHLO, on lines as the session hands them over (NUL-terminated,
 * CR LF removed).
 *
 * Input: 1 byte of flags (which parser gets the arguments directly, whether
 * the transaction has SMTPUTF8, how small the verb buffer is), then the line.
 * Properties:
 *  - the verb is 1..SMTP_VERB_MAX of [A-Z0-9-], args points into the line
 *    with no white space on either end;
 *  - an accepted address passes smtp_parse_mailbox() again (the parser and
 *    the checker agree), is at most SMTP_MAILBOX_MAX octets, holds exactly
 *    one '@', no '%' or '!' (no percent hack or bang path can be read out of
 *    it by the next MTA), no control character, and no octet above 0x7f
 *    unless SMTPUTF8 was given;
 *  - MAIL parameters come out consistent (SIZE only with has_size, a known
 *    BODY value);
 *  - every refusal names a reason.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

#include "fuzz_util.h"

static void
check_mailbox(const char *addr, int smtputf8)
{
	size_t len = strlen(addr), i, ats = 0;
	const char *why = NULL;

	FUZZ_CHECK(len > 0 && len <= SMTP_MAILBOX_MAX, "address of %zu octets", len);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)addr[i];

		FUZZ_CHECK(c >= 0x20 && c != 0x7f, "control octet 0x%02x accepted", c);
		FUZZ_CHECK(c < 0x80 || smtputf8, "octet 0x%02x without SMTPUTF8", c);
		FUZZ_CHECK(c != '%' && c != '!', "routing character '%c' accepted in %s",
		    c, addr);
		if (c == '@')
			ats++;
	}
	FUZZ_CHECK(ats == 1, "%zu '@' in accepted address %s", ats, addr);
	FUZZ_CHECK(addr[0] != '@', "source route accepted: %s", addr);
	FUZZ_CHECK(smtp_parse_mailbox(addr, len, smtputf8, &why) == SMTP_PARSE_OK,
	    "accepted address %s fails the mailbox check: %s", addr, why ? why : "?");
}

static void
check_refusal(enum smtp_parse_status st, const char *why)
{
	FUZZ_CHECK(st == SMTP_PARSE_SYNTAX || st == SMTP_PARSE_REFUSED ||
	    st == SMTP_PARSE_PARAM || st == SMTP_PARSE_UTF8, "status %d", (int)st);
	FUZZ_CHECK(why != NULL && why[0] != '\0', "refusal without a reason");
}

static void
do_mail(const char *args)
{
	struct smtp_mail_args m;
	const char *why = NULL;
	enum smtp_parse_status st;

	st = smtp_parse_mail(args, &m, &why);
	if (st != SMTP_PARSE_OK) {
		check_refusal(st, why);
		return;
	}
	FUZZ_CHECK(m.has_size || m.size == 0, "size without has_size");
	FUZZ_CHECK(m.body == SMTP_BODY_NONE || m.body == SMTP_BODY_7BIT ||
	    m.body == SMTP_BODY_8BITMIME, "body %d", (int)m.body);
	FUZZ_CHECK(memchr(m.from, '\0', sizeof(m.from)) != NULL, "from not terminated");
	if (m.from[0] != '\0')
		check_mailbox(m.from, m.smtputf8);
}

static void
do_rcpt(const char *args, int smtputf8)
{
	char rcpt[SMTP_MAILBOX_MAX + 1];
	const char *why = NULL;
	enum smtp_parse_status st;

	st = smtp_parse_rcpt(args, smtputf8, rcpt, sizeof(rcpt), &why);
	if (st != SMTP_PARSE_OK) {
		check_refusal(st, why);
		return;
	}
	check_mailbox(rcpt, smtputf8);
}

static void
do_helo(const char *args)
{
	char out[SMTP_HELO_MAX + 1];
	const char *why = NULL;
	enum smtp_parse_status st;

	st = smtp_parse_helo(args, out, sizeof(out), &why);
	if (st != SMTP_PARSE_OK) {
		check_refusal(st, why);
		return;
	}
	FUZZ_CHECK(strcmp(out, args) == 0, "HELO argument changed");
	FUZZ_CHECK(strlen(out) <= SMTP_HELO_MAX, "HELO argument too long");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char verb[SMTP_VERB_MAX + 1], *line, *args = NULL;
	size_t verblen, i, n;
	unsigned flags;
	int smtputf8;

	flags = (unsigned)fuzz_take(&data, &size, 1);
	smtputf8 = (flags >> 2) & 1;
	/* Mostly the real buffer, sometimes one too small for long verbs. */
	verblen = (flags & 0x18) == 0x18 ? 1 + (flags >> 5) : sizeof(verb);
	line = fuzz_dup(data, size, 1);

	switch (flags & 3) {
	case 1:
		do_mail(line);
		break;
	case 2:
		do_rcpt(line, smtputf8);
		break;
	case 3:
		do_helo(line);
		break;
	default:
		if (smtp_parse_verb(line, verb, verblen, &args) != 0)
			break;
		n = strlen(verb);
		FUZZ_CHECK(n > 0 && n <= SMTP_VERB_MAX && n < verblen, "verb of %zu", n);
		for (i = 0; i < n; i++)
			FUZZ_CHECK((verb[i] >= 'A' && verb[i] <= 'Z') ||
			    (verb[i] >= '0' && verb[i] <= '9') || verb[i] == '-',
			    "verb octet 0x%02x", (unsigned char)verb[i]);
		FUZZ_CHECK(args >= line && args <= line + size, "args outside the line");
		n = strlen(args);
		FUZZ_CHECK(n == 0 || (args[0] != ' ' && args[n - 1] != ' ' &&
		    args[n - 1] != '\t'), "args not trimmed");
		if (strcmp(verb, "MAIL") == 0)
			do_mail(args);
		else if (strcmp(verb, "RCPT") == 0)
			do_rcpt(args, smtputf8);
		else if (strcmp(verb, "HELO") == 0 || strcmp(verb, "EHLO") == 0)
			do_helo(args);
		break;
	}
	free(line);
	return 0;
}
