/*
 * smtp_parse.c: SMTP command-line parsing. RFCs: 5321 (4.1.1 commands,
 * 4.1.2 path syntax, 4.5.3.1 size limits), 1870 (SIZE), 6152 (8BITMIME),
 * 6531 (SMTPUTF8), 5890 (U-labels). See smtp_parse.h for what is accepted
 * beyond the letter of RFC 5321 and what is refused although well-formed.
 */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#define SMTP_LITERAL_MAX	64	/* "[IPv6:...]" contents, far above any valid one */
#define SMTP_SIZE_DIGITS_MAX	20	/* UINT64_MAX has 20 digits */

static int
parse_is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
parse_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
parse_is_alnum(unsigned char c)
{
	return parse_is_alpha(c) || parse_is_digit(c);
}

/* RFC 5322 atext. */
static int
parse_is_atext(unsigned char c)
{
	return parse_is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * The length of the well-formed UTF-8 sequence of two or more octets at s
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or 0.
 */
static size_t
parse_utf8_len(const unsigned char *s, size_t len)
{
	uint32_t cp, min;
	size_t n, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2, cp = s[0] & 0x1f, min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3, cp = s[0] & 0x0f, min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* What a mailbox check found besides syntax errors. */
struct parse_flags {
	int		nonascii;	/* UTF-8 seen */
	const char	*refused;	/* why it is refused, or NULL */
};

/* Local-part = Dot-string / Quoted-string. Sets *used; 0 or -1 (syntax). */
static int
parse_local(const unsigned char *s, size_t len, struct parse_flags *fl,
    size_t *used, const char **why)
{
	size_t i = 0, n;

	if (len > 0 && s[0] == '"') {
		for (i = 1; ; ) {
			unsigned char c;

			if (i >= len) {
				*why = "unterminated quoted local part";
				return -1;
			}
			c = s[i];
			if (c == '"') {
				i++;
				break;
			}
			if (c == '\\') {
				if (i + 1 >= len || s[i + 1] < 32 || s[i + 1] > 126) {
					*why = "bad quoted pair in local part";
					return -1;
				}
				c = s[i + 1];
				i += 2;
			} else if (c >= 32 && c <= 126) {
				i++;
			} else if (c >= 0x80 && (n = parse_utf8_len(s + i, len - i)) > 0) {
				fl->nonascii = 1;
				i += n;
				continue;
			} else {
				*why = "bad character in local part";
				return -1;
			}
			if (c == '@' || c == '%' || c == '!')
				fl->refused = "quoted routing characters (@ % !) are not accepted";
		}
		if (i == 2) {
			*why = "empty local part";
			return -1;
		}
	} else {
		int atom = 0;	/* octets in the current atom */

		while (i < len) {
			unsigned char c = s[i];

			if (c == '.') {
				if (atom == 0) {
					*why = "empty atom in local part";
					return -1;
				}
				atom = 0;
				i++;
			} else if (c >= 0x80) {
				if ((n = parse_utf8_len(s + i, len - i)) == 0) {
					*why = "invalid UTF-8 in local part";
					return -1;
				}
				fl->nonascii = 1;
				atom++;
				i += n;
			} else if (parse_is_atext(c)) {
				if (c == '%')
					fl->refused = "the percent hack (user%host@relay) is not accepted";
				else if (c == '!')
					fl->refused = "bang paths (host!user) are not accepted";
				atom++;
				i++;
			} else {
				break;
			}
		}
		if (i == 0) {
			*why = "empty local part";
			return -1;
		}
		if (atom == 0) {
			*why = "local part ends with a dot";
			return -1;
		}
	}
	if (i > SMTP_LOCAL_PART_MAX) {
		*why = "local part longer than 64 octets";
		return -1;
	}
	*used = i;
	return 0;
}

/* address-literal: "[" IPv4 "]" or "[IPv6:" address "]". */
static int
parse_literal(const char *s, size_t len, struct parse_flags *fl, const char **why)
{
	char buf[SMTP_LITERAL_MAX];
	unsigned char addr[sizeof(struct in6_addr)];
	size_t n;

	if (len < 2 || s[len - 1] != ']' || len - 2 >= sizeof(buf)) {
		*why = "bad address literal";
		return -1;
	}
	n = len - 2;
	memcpy(buf, s + 1, n);
	buf[n] = '\0';
	/* inet_pton() would stop at a NUL and accept what precedes it. */
	if (memchr(buf, '\0', n) != NULL) {
		*why = "bad address literal";
		return -1;
	}
	if (n > 5 && strncasecmp(buf, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, buf + 5, addr) != 1) {
			*why = "bad IPv6 address literal";
			return -1;
		}
		return 0;
	}
	if (strspn(buf, "0123456789.") == n) {
		if (inet_pton(AF_INET, buf, addr) != 1) {
			*why = "bad IPv4 address literal";
			return -1;
		}
		return 0;
	}
	if (memchr(buf, ':', n) != NULL) {
		/* A General-address-literal: well-formed, but nobody uses it. */
		fl->refused = "only IPv4 and IPv6 address literals are accepted";
		return 0;
	}
	*why = "bad address literal";
	return -1;
}

/* Domain = sub-domain *("." sub-domain), or an address literal. */
static int
parse_domain(const unsigned char *s, size_t len, struct parse_flags *fl,
    const char **why)
{
	size_t i = 0, label = 0, n;

	if (len == 0) {
		*why = "empty domain";
		return -1;
	}
	if (len > SMTP_DOMAIN_MAX) {
		*why = "domain longer than 255 octets";
		return -1;
	}
	if (s[0] == '[')
		return parse_literal((const char *)s, len, fl, why);

	while (i < len) {
		unsigned char c = s[i];

		if (c == '.') {
			if (label == 0 || s[i - 1] == '-') {
				*why = "bad label in domain";
				return -1;
			}
			label = 0;
			i++;
			continue;
		}
		if (c >= 0x80) {
			if ((n = parse_utf8_len(s + i, len - i)) == 0) {
				*why = "invalid UTF-8 in domain";
				return -1;
			}
			fl->nonascii = 1;
		} else if (parse_is_alnum(c) || (c == '-' && label > 0)) {
			n = 1;
		} else {
			*why = "bad character in domain";
			return -1;
		}
		label += n;
		i += n;
		if (label > SMTP_LABEL_MAX) {
			*why = "domain label longer than 63 octets";
			return -1;
		}
	}
	if (label == 0 || s[len - 1] == '-') {
		*why = "bad label in domain";
		return -1;
	}
	return 0;
}

enum smtp_parse_status
smtp_parse_mailbox(const char *str, size_t len, int smtputf8, const char **why)
{
	const unsigned char *s = (const unsigned char *)str;
	struct parse_flags fl = { 0, NULL };
	size_t used = 0;

	if (len == 0) {
		*why = "empty address";
		return SMTP_PARSE_SYNTAX;
	}
	if (len > SMTP_MAILBOX_MAX) {
		*why = "path longer than 256 octets";
		return SMTP_PARSE_SYNTAX;
	}
	if (s[0] == '@') {
		*why = "source routes are not accepted";
		return SMTP_PARSE_REFUSED;
	}
	if (parse_local(s, len, &fl, &used, why) != 0)
		return SMTP_PARSE_SYNTAX;
	if (used == len || s[used] != '@') {
		if (fl.refused != NULL && used == len) {
			*why = fl.refused;
			return SMTP_PARSE_REFUSED;
		}
		*why = used == len ? "address without a domain" : "bad character in local part";
		return SMTP_PARSE_SYNTAX;
	}
	if (parse_domain(s + used + 1, len - used - 1, &fl, why) != 0)
		return SMTP_PARSE_SYNTAX;
	if (fl.nonascii && !smtputf8) {
		*why = "non-ASCII address without SMTPUTF8";
		return SMTP_PARSE_UTF8;
	}
	if (fl.refused != NULL) {
		*why = fl.refused;
		return SMTP_PARSE_REFUSED;
	}
	return SMTP_PARSE_OK;
}

int
smtp_parse_verb(char *line, char *verb, size_t verblen, char **args)
{
	size_t n = 0, end;

	while (line[n] != '\0' && line[n] != ' ') {
		unsigned char c = (unsigned char)line[n];

		if (!parse_is_alnum(c) && c != '-')
			return -1;
		if (n + 1 >= verblen || n >= SMTP_VERB_MAX)
			return -1;
		verb[n] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : (char)c;
		n++;
	}
	if (n == 0)
		return -1;
	verb[n] = '\0';

	end = strlen(line);
	while (end > n && (line[end - 1] == ' ' || line[end - 1] == '\t'))
		line[--end] = '\0';
	while (line[n] == ' ')
		n++;
	*args = line + n;
	return 0;
}

/*
 * After "FROM:" or "TO:": the path, with or without angle brackets. Sets
 * *path and *pathlen (without the brackets) and *rest (the parameters).
 */
static enum smtp_parse_status
parse_path_arg(const char *p, const char **path, size_t *pathlen,
    const char **rest, const char **why)
{
	size_t i;

	while (*p == ' ')
		p++;
	if (*p == '<') {
		int quoted = 0;

		for (i = 1; p[i] != '\0'; i++) {
			if (quoted) {
				if (p[i] == '\\' && p[i + 1] != '\0')
					i++;
				else if (p[i] == '"')
					quoted = 0;
			} else if (p[i] == '"') {
				quoted = 1;
			} else if (p[i] == '>') {
				break;
			}
		}
		if (p[i] != '>') {
			*why = "missing '>' after the address";
			return SMTP_PARSE_SYNTAX;
		}
		*path = p + 1;
		*pathlen = i - 1;
		*rest = p + i + 1;
	} else {
		i = strcspn(p, " ");
		if (i == 0) {
			*why = "missing address";
			return SMTP_PARSE_SYNTAX;
		}
		*path = p;
		*pathlen = i;
		*rest = p + i;
	}
	if (**rest != '\0' && **rest != ' ') {
		*why = "text after the address";
		return SMTP_PARSE_SYNTAX;
	}
	while (**rest == ' ')
		(*rest)++;
	if (*pathlen > SMTP_MAILBOX_MAX) {
		*why = "path longer than 256 octets";
		return SMTP_PARSE_SYNTAX;
	}
	return SMTP_PARSE_OK;
}

/*
 * The next "keyword[=value]" of the parameters at *p. Returns 1 with the
 * pieces set, 0 at the end, -1 on a syntax error (RFC 5321 4.1.2).
 */
static int
parse_next_param(const char **p, const char **kw, size_t *kwlen,
    const char **val, size_t *vallen)
{
	const char *s = *p;
	size_t i = 0, j;

	while (*s == ' ')
		s++;
	if (*s == '\0')
		return 0;
	if (!parse_is_alnum((unsigned char)s[0]))
		return -1;
	while (parse_is_alnum((unsigned char)s[i]) || s[i] == '-')
		i++;
	*kw = s;
	*kwlen = i;
	*val = NULL;
	*vallen = 0;
	if (s[i] == '=') {
		i++;
		j = i;
		while ((unsigned char)s[i] >= 33 && (unsigned char)s[i] <= 126 && s[i] != '=')
			i++;
		if (i == j)
			return -1;
		*val = s + j;
		*vallen = i - j;
	}
	if (s[i] != '\0' && s[i] != ' ')
		return -1;
	*p = s + i;
	return 1;
}

static int
parse_kw_is(const char *kw, size_t kwlen, const char *name)
{
	return strlen(name) == kwlen && strncasecmp(kw, name, kwlen) == 0;
}

static int
parse_size_value(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0 || n > SMTP_SIZE_DIGITS_MAX)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned d;

		if (!parse_is_digit((unsigned char)v[i]))
			return -1;
		d = (unsigned)(v[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*out = x;
	return 0;
}

enum smtp_parse_status
smtp_parse_mail(const char *args, struct smtp_mail_args *out, const char **why)
{
	const char *path, *rest, *kw, *val;
	size_t pathlen, kwlen, vallen;
	enum smtp_parse_status st;
	int r;

	memset(out, 0, sizeof(*out));
	if (strncasecmp(args, "FROM:", 5) != 0) {
		*why = "expected MAIL FROM:<address>";
		return SMTP_PARSE_SYNTAX;
	}
	if ((st = parse_path_arg(args + 5, &path, &pathlen, &rest, why)) != SMTP_PARSE_OK)
		return st;

	while ((r = parse_next_param(&rest, &kw, &kwlen, &val, &vallen)) == 1) {
		if (parse_kw_is(kw, kwlen, "SIZE")) {
			if (out->has_size || val == NULL ||
			    parse_size_value(val, vallen, &out->size) != 0) {
				*why = "bad SIZE parameter";
				return SMTP_PARSE_SYNTAX;
			}
			out->has_size = 1;
		} else if (parse_kw_is(kw, kwlen, "BODY")) {
			if (out->body != SMTP_BODY_NONE || val == NULL) {
				*why = "bad BODY parameter";
				return SMTP_PARSE_SYNTAX;
			}
			if (parse_kw_is(val, vallen, "7BIT")) {
				out->body = SMTP_BODY_7BIT;
			} else if (parse_kw_is(val, vallen, "8BITMIME")) {
				out->body = SMTP_BODY_8BITMIME;
			} else {
				*why = "BODY must be 7BIT or 8BITMIME";
				return SMTP_PARSE_PARAM;
			}
		} else if (parse_kw_is(kw, kwlen, "SMTPUTF8")) {
			if (out->smtputf8 || val != NULL) {
				*why = "bad SMTPUTF8 parameter";
				return SMTP_PARSE_SYNTAX;
			}
			out->smtputf8 = 1;
		} else {
			*why = "unknown MAIL parameter";
			return SMTP_PARSE_PARAM;
		}
	}
	if (r < 0) {
		*why = "bad MAIL parameter syntax";
		return SMTP_PARSE_SYNTAX;
	}

	if (pathlen > 0) {
		st = smtp_parse_mailbox(path, pathlen, out->smtputf8, why);
		if (st != SMTP_PARSE_OK)
			return st;
	}
	memcpy(out->from, path, pathlen);
	out->from[pathlen] = '\0';
	return SMTP_PARSE_OK;
}

enum smtp_parse_status
smtp_parse_rcpt(const char *args, int smtputf8, char *rcpt, size_t rcptlen,
    const char **why)
{
	const char *path, *rest, *kw, *val;
	size_t pathlen, kwlen, vallen;
	enum smtp_parse_status st;
	int r;

	if (strncasecmp(args, "TO:", 3) != 0) {
		*why = "expected RCPT TO:<address>";
		return SMTP_PARSE_SYNTAX;
	}
	if ((st = parse_path_arg(args + 3, &path, &pathlen, &rest, why)) != SMTP_PARSE_OK)
		return st;
	if ((r = parse_next_param(&rest, &kw, &kwlen, &val, &vallen)) != 0) {
		*why = r < 0 ? "bad RCPT parameter syntax" : "unknown RCPT parameter";
		return r < 0 ? SMTP_PARSE_SYNTAX : SMTP_PARSE_PARAM;
	}
	if (pathlen == 0) {
		*why = "empty recipient address";
		return SMTP_PARSE_SYNTAX;
	}
	if ((st = smtp_parse_mailbox(path, pathlen, smtputf8, why)) != SMTP_PARSE_OK)
		return st;
	if (pathlen >= rcptlen) {
		*why = "path longer than 256 octets";
		return SMTP_PARSE_SYNTAX;
	}
	memcpy(rcpt, path, pathlen);
	rcpt[pathlen] = '\0';
	return SMTP_PARSE_OK;
}

enum smtp_parse_status
smtp_parse_helo(const char *args, char *out, size_t outlen, const char **why)
{
	size_t n = strlen(args);

	if (n == 0) {
		*why = "a host name is required";
		return SMTP_PARSE_SYNTAX;
	}
	if (n > SMTP_HELO_MAX || n >= outlen) {
		*why = "host name too long";
		return SMTP_PARSE_SYNTAX;
	}
	memcpy(out, args, n + 1);
	return SMTP_PARSE_OK;
}
