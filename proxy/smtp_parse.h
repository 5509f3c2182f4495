/*
 * smtp_parse.h: parsing of SMTP command lines (RFC 5321 section 4.1, with
 * the parameters of RFC 1870 SIZE, RFC 6152 8BITMIME and RFC 6531 SMTPUTF8).
 * Pure functions over a NUL-terminated line (its CR LF already removed): no
 * I/O, no allocation, so that they can be fuzzed alone.
 *
 * Paths are checked against RFC 5321 4.1.2 and the bounds of 4.5.3.1. The
 * parser is lenient where real clients are sloppy and harmless (a space after
 * "FROM:", a path without angle brackets, trailing white space), and strict
 * where an address could be read two ways by two MTAs: source routes
 * ("<@a,@b:x@y>"), the percent hack ("user%host@relay") and bang paths
 * ("host!user") are refused, as are address literals other than a plain
 * dotted IPv4 address or "IPv6:" and a valid IPv6 address.
 */
#ifndef SMTPVAULT_SMTP_PARSE_H
#define SMTPVAULT_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX		1000	/* a command line, CR LF included (4.5.3.1.4) */
#define SMTP_VERB_MAX		16	/* longer than any command we know */
#define SMTP_LOCAL_PART_MAX	64	/* 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX		255	/* 4.5.3.1.2 */
#define SMTP_LABEL_MAX		63	/* RFC 1035 2.3.4 */
#define SMTP_PATH_MAX		256	/* 4.5.3.1.3, with the angle brackets */
#define SMTP_MAILBOX_MAX	(SMTP_PATH_MAX - 2)	/* a path without its "<>" */
#define SMTP_HELO_MAX		255	/* a domain name */

enum smtp_parse_status {
	SMTP_PARSE_OK = 0,
	SMTP_PARSE_SYNTAX,	/* 501 5.5.4: malformed command or address */
	SMTP_PARSE_REFUSED,	/* 553 5.1.7 / 5.1.3: well-formed, but not here */
	SMTP_PARSE_PARAM,	/* 555 5.5.4: parameter not recognised */
	SMTP_PARSE_UTF8,	/* 553 5.6.7: non-ASCII address without SMTPUTF8 */
};

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

struct smtp_mail_args {
	char		from[SMTP_MAILBOX_MAX + 1];	/* "" for the null path <> */
	uint64_t	size;				/* SIZE=, when has_size */
	int		has_size;
	enum smtp_body	body;
	int		smtputf8;
};

/*
 * Split a command line into its verb (upper-cased into verb, at most
 * SMTP_VERB_MAX letters, digits or '-') and its arguments (*args points into
 * line, after the spaces that follow the verb; trailing white space is cut
 * off in place). Returns 0, or -1 when the line does not start with a verb.
 */
int	smtp_parse_verb(char *line, char *verb, size_t verblen, char **args);

/* "FROM:<path> [params]". On failure *why is a static reason text. */
enum smtp_parse_status smtp_parse_mail(const char *args, struct smtp_mail_args *out,
	    const char **why);

/* "TO:<path>" (no parameters are supported). The mailbox goes into rcpt. smtputf8
 * says whether the transaction's MAIL had SMTPUTF8. */
enum smtp_parse_status smtp_parse_rcpt(const char *args, int smtputf8, char *rcpt,
	    size_t rcptlen, const char **why);

/* Check a mailbox ("local@domain", no angle brackets) of len octets. */
enum smtp_parse_status smtp_parse_mailbox(const char *s, size_t len, int smtputf8,
	    const char **why);

/* The argument of HELO / EHLO: anything non-empty up to SMTP_HELO_MAX octets
 * (the name is never trusted; it is sanitised where it is shown). */
enum smtp_parse_status smtp_parse_helo(const char *args, char *out, size_t outlen,
	    const char **why);

#endif
