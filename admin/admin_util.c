/*
 * admin_util.c: the small pure pieces of the admin server, kept apart so
 * that the unit tests can drive them with tables: percent-decoding of path
 * segments and query values, Cookie header parsing, a JSON nesting bound,
 * Prometheus label escaping, CSV cells that no spreadsheet runs as a
 * formula, the same-origin check and token handling.
 */
#include "admin_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <sodium.h>

#include "util.h"

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
admin_pct_decode(const char *in, size_t len, int form, char *out, size_t outlen)
{
	size_t i, o = 0;
	int hi, lo, c;

	if (outlen == 0)
		return -1;
	for (i = 0; i < len; i++) {
		c = (unsigned char)in[i];
		if (c == '%') {
			if (i + 2 >= len)
				return -1;
			if ((hi = hexval((unsigned char)in[i + 1])) == -1 ||
			    (lo = hexval((unsigned char)in[i + 2])) == -1)
				return -1;
			c = hi * 16 + lo;
			i += 2;
		} else if (c == '+' && form) {
			c = ' ';
		}
		if (c < 0x20 || c == 0x7f)
			return -1;
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

int
admin_cookie_get(const char *header, const char *name, char *out, size_t outlen)
{
	const char *p = header, *eq, *end, *v;
	size_t nlen = strlen(name), vlen;

	if (header == NULL || outlen == 0)
		return -1;
	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		if (*p == '\0')
			break;
		end = strchr(p, ';');
		if (end == NULL)
			end = p + strlen(p);
		eq = memchr(p, '=', (size_t)(end - p));
		if (eq != NULL && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
			v = eq + 1;
			while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
				end--;
			vlen = (size_t)(end - v);
			if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
				v++;
				vlen -= 2;
			}
			if (vlen >= outlen)
				return -1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return 0;
		}
		p = end;
	}
	return -1;
}

int
admin_json_depth_ok(const char *buf, size_t len, size_t max)
{
	size_t i, depth = 0;
	int in_str = 0;

	for (i = 0; i < len; i++) {
		char c = buf[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				return 0;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return 1;
}

int
admin_prom_escape(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	const char *rep;
	char one[2] = { 0, 0 };

	if (outlen == 0)
		return -1;
	for (; *in != '\0'; in++) {
		if (*in == '\\')
			rep = "\\\\";
		else if (*in == '"')
			rep = "\\\"";
		else if (*in == '\n')
			rep = "\\n";
		else {
			one[0] = *in;
			rep = one;
		}
		if (o + strlen(rep) >= outlen) {
			out[o] = '\0';
			return -1;
		}
		memcpy(out + o, rep, strlen(rep));
		o += strlen(rep);
	}
	out[o] = '\0';
	return 0;
}

int
admin_csv_cell(struct evbuffer *out, const char *s)
{
	const char *p, *q;

	if (evbuffer_add(out, "\"", 1) == -1)
		return -1;
	if (s != NULL && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' ||
	    s[0] == '\t' || s[0] == '\r') && evbuffer_add(out, "'", 1) == -1)
		return -1;
	for (p = s; p != NULL && *p != '\0'; p = q + 1) {
		if ((q = strchr(p, '"')) == NULL) {
			if (evbuffer_add(out, p, strlen(p)) == -1)
				return -1;
			break;
		}
		if (evbuffer_add(out, p, (size_t)(q - p)) == -1 ||
		    evbuffer_add(out, "\"\"", 2) == -1)
			return -1;
	}
	return evbuffer_add(out, "\"", 1);
}

int
admin_origin_ok(const char *origin, const char *host, int tls)
{
	const char *scheme = tls ? "https://" : "http://";
	size_t sl = strlen(scheme);

	if (origin == NULL)
		return 1;
	if (host == NULL || host[0] == '\0')
		return 0;
	return strncasecmp(origin, scheme, sl) == 0 && strcasecmp(origin + sl, host) == 0;
}

int
admin_token_equal(const char *given, const char *expected)
{
	size_t n = strlen(expected);

	if (given == NULL || n == 0 || strnlen(given, n + 1) != n)
		return 0;
	return sodium_memcmp(given, expected, n) == 0;
}

void
admin_token_new(char out[ADMIN_TOKEN_HEX + 1])
{
	unsigned char raw[ADMIN_TOKEN_BYTES];

	randombytes_buf(raw, sizeof(raw));
	sodium_bin2hex(out, ADMIN_TOKEN_HEX + 1, raw, sizeof(raw));
	sodium_memzero(raw, sizeof(raw));
}
