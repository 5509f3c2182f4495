/*
 * msg_header.c: header field lookup over a stored message, for the audit
 * log. Works on the bytes as they are (RFC 2047 encoded words are kept as
 * encoded), never reads past the end of the header section or of len.
 */
#include "msg_header.h"

#include <string.h>
#include <strings.h>

/* Length of the line starting at p (without its CR LF), and where the next
 * line starts; lines end in CR LF in a stored message. */
static size_t
line_len(const char *p, const char *end, const char **next)
{
	const char *q;

	for (q = p; q + 1 < end; q++) {
		if (q[0] == '\r' && q[1] == '\n') {
			*next = q + 2;
			return (size_t)(q - p);
		}
	}
	*next = end;
	return (size_t)(end - p);
}

int
msg_header_get(const char *msg, size_t len, const char *name, char *out, size_t outlen)
{
	const char *p = msg, *end, *next;
	size_t n, namelen = strlen(name), o = 0, i;
	int found = 0;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
	end = msg + (len < MSG_HEADER_SCAN_MAX ? len : MSG_HEADER_SCAN_MAX);
	while (p < end) {
		n = line_len(p, end, &next);
		if (n == 0)
			break;				/* end of the header section */
		if (found) {
			if (p[0] != ' ' && p[0] != '\t')
				break;			/* the field ended */
			i = 0;
		} else {
			if (n <= namelen || strncasecmp(p, name, namelen) != 0) {
				p = next;
				continue;
			}
			for (i = namelen; i < n && (p[i] == ' ' || p[i] == '\t'); i++)
				;
			if (i >= n || p[i] != ':') {
				p = next;
				continue;
			}
			for (i++; i < n && (p[i] == ' ' || p[i] == '\t'); i++)
				;
			found = 1;
		}
		/* Unfolding keeps the white space that starts a continuation. */
		for (; i < n && o + 1 < outlen; i++)
			out[o++] = p[i];
		p = next;
	}
	if (!found)
		return -1;
	out[o] = '\0';
	/* Trim white space at both ends. */
	while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '\t'))
		out[--o] = '\0';
	for (i = 0; out[i] == ' ' || out[i] == '\t'; i++)
		;
	if (i > 0)
		memmove(out, out + i, o - i + 1);
	return 0;
}
