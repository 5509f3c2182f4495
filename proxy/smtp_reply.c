/*
 * smtp_reply.c: parse upstream SMTP replies (RFC 5321 4.2, RFC 2034, RFC
 * 3463). Pure functions over caller memory; see smtp_reply.h for the bounds.
 *
 *   Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                   Reply-code [ SP textstring ] CRLF
 *   textstring = 1*( %d09 / %d32-126 )
 *
 * Bytes above 126 are accepted in the text (some servers send UTF-8); they
 * are made safe where the text is shown (logs escape it, relay.c replaces
 * it). NUL, CR inside a line and other control characters are refused.
 */
#include "smtp_reply.h"

#include <string.h>
#include <strings.h>

#define SMTP_REPLY_ENH_PART_MAX	3	/* digits in subject and detail */

void
smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
}

static int
reply_refuse(struct smtp_reply *r, const char *why)
{
	r->error = why;
	r->done = 0;
	return SMTP_REPLY_ERROR;
}

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Length of a leading enhanced status code of class cls, followed by a space
 * or the end of the text; 0 if there is none. */
static size_t
enhanced_len(const char *s, size_t len, char cls)
{
	size_t i = 0, n;
	int part;

	if (len < 5 || s[0] != cls || s[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (n = 0; i < len && is_digit(s[i]) && n <= SMTP_REPLY_ENH_PART_MAX; n++)
			i++;
		if (n == 0 || n > SMTP_REPLY_ENH_PART_MAX)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

static void
text_append(struct smtp_reply *r, const char *s, size_t len)
{
	size_t room = sizeof(r->text) - 1 - r->textlen;

	if (len > room) {
		len = room;
		r->truncated = 1;
	}
	memcpy(r->text + r->textlen, s, len);
	r->textlen += len;
	r->text[r->textlen] = '\0';
}

int
smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
	const char *text;
	size_t i, tlen, elen;
	int code, last;

	if (r->error != NULL)
		return SMTP_REPLY_ERROR;
	if (r->done)
		return reply_refuse(r, "line fed after the end of the reply");
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > SMTP_REPLY_LINE_MAX)
		return reply_refuse(r, "reply line too long");
	if (r->n_lines >= SMTP_REPLY_LINES_MAX)
		return reply_refuse(r, "too many reply lines");
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
	    line[1] > '5' || !is_digit(line[2]))
		return reply_refuse(r, "malformed reply code");
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->n_lines > 0 && code != r->code)
		return reply_refuse(r, "reply code changes between lines");
	if (len == 3) {
		last = 1;
	} else if (line[3] == ' ') {
		last = 1;
	} else if (line[3] == '-') {
		last = 0;
	} else {
		return reply_refuse(r, "malformed reply separator");
	}
	text = len > 4 ? line + 4 : line + len;
	tlen = len > 4 ? len - 4 : 0;
	for (i = 0; i < tlen; i++) {
		unsigned char c = (unsigned char)text[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return reply_refuse(r, "control character in reply text");
	}
	if ((elen = enhanced_len(text, tlen, line[0])) > 0) {
		if (r->n_lines == 0) {
			/* elen <= 9 ("5.123.456") always fits. */
			memcpy(r->enhanced, text, elen);
			r->enhanced[elen] = '\0';
		}
		text += elen;
		tlen -= elen;
		while (tlen > 0 && *text == ' ') {
			text++;
			tlen--;
		}
	}
	r->code = code;
	if (r->n_lines > 0)
		text_append(r, "\n", 1);
	text_append(r, text, tlen);
	r->n_lines++;
	if (last) {
		r->done = 1;
		return SMTP_REPLY_DONE;
	}
	return SMTP_REPLY_MORE;
}

int
smtp_reply_parse(struct smtp_reply *r, const char *buf, size_t len, size_t *consumed)
{
	const char *nl;
	size_t off = 0, linelen;
	int rc;

	*consumed = 0;
	while (off < len) {
		if ((nl = memchr(buf + off, '\n', len - off)) == NULL)
			break;
		linelen = (size_t)(nl - (buf + off));
		rc = smtp_reply_feed(r, buf + off, linelen);
		off += linelen + 1;
		*consumed = off;
		if (rc != SMTP_REPLY_MORE)
			return rc;
	}
	/* A partial line: the CR that may end it does not count. */
	if (len - off > SMTP_REPLY_LINE_MAX + 1)
		return reply_refuse(r, "reply line too long");
	return SMTP_REPLY_MORE;
}

int
smtp_reply_ehlo_has(const struct smtp_reply *r, const char *kw, const char **params,
    size_t *plen)
{
	const char *p, *end, *eol;
	size_t kwlen = strlen(kw), linelen;

	if (!r->done || r->code != 250)
		return 0;
	end = r->text + r->textlen;
	/* The first line is the server's name and greeting, not a keyword. */
	if ((p = memchr(r->text, '\n', r->textlen)) == NULL)
		return 0;
	for (p++; p < end; p = eol + 1) {
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		linelen = (size_t)(eol - p);
		if (linelen >= kwlen && strncasecmp(p, kw, kwlen) == 0 &&
		    (linelen == kwlen || p[kwlen] == ' ' || p[kwlen] == '=')) {
			if (params != NULL) {
				*params = linelen == kwlen ? eol : p + kwlen + 1;
				*plen = linelen == kwlen ? 0 : linelen - kwlen - 1;
			}
			return 1;
		}
		if (eol == end)
			break;
	}
	return 0;
}
