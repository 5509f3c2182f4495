/*
 * spool_format.c: the text of spool files (see spool.h): encoding, and
 * parsing that trusts nothing. A spool file may have been damaged by a disk,
 * an editor or an attacker with access to the spool directory; the parser
 * checks every line, every length and every number, and never reads past the
 * buffer it was given.
 */
#include "spool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SPOOL_KEY_MAX		16
#define SPOOL_BITMAP_BYTES(n)	(((n) + 7) / 8)

static const char hexdigits[] = "0123456789ABCDEF";

int
spool_id_valid(const char *id)
{
	size_t i;

	for (i = 0; id[i] != '\0'; i++) {
		if (i + 1 >= SPOOL_ID_MAX)
			return 0;
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'Z')))
			return 0;
	}
	return i > 0;
}

/* ---- Encoding ------------------------------------------------------------ */

struct sbuf {
	char	*buf;
	size_t	len, cap;
	int	failed;
};

static void
sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	char *nbuf;
	size_t ncap;

	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		ncap = b->cap == 0 ? 1024 : b->cap;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if ((nbuf = realloc(b->buf, ncap)) == NULL) {
			b->failed = 1;
			return;
		}
		b->buf = nbuf;
		b->cap = ncap;
	}
	memcpy(b->buf + b->len, s, n);
	b->len += n;
	b->buf[b->len] = '\0';
}

/* "key value\n" with the value %XX-escaped. */
static void
sbuf_kv(struct sbuf *b, const char *key, const char *value)
{
	char esc[3];
	size_t i, start = 0;
	unsigned char c;

	sbuf_add(b, key, strlen(key));
	sbuf_add(b, " ", 1);
	for (i = 0; value[i] != '\0'; i++) {
		c = (unsigned char)value[i];
		if (c >= 0x21 && c <= 0x7e && c != '%')
			continue;
		sbuf_add(b, value + start, i - start);
		esc[0] = '%';
		esc[1] = hexdigits[c >> 4];
		esc[2] = hexdigits[c & 0xf];
		sbuf_add(b, esc, 3);
		start = i + 1;
	}
	sbuf_add(b, value + start, i - start);
	sbuf_add(b, "\n", 1);
}

static void
sbuf_kn(struct sbuf *b, const char *key, uint64_t v)
{
	char num[32];

	snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	sbuf_kv(b, key, num);
}

static int
sbuf_finish(struct sbuf *b, char **out, size_t *outlen)
{
	if (b->failed) {
		free(b->buf);
		errno = ENOMEM;
		return -1;
	}
	*out = b->buf;
	*outlen = b->len;
	return 0;
}

int
spool_envelope_encode(const struct relay_msg *msg, const struct spool_meta *meta, char **out,
    size_t *outlen)
{
	struct sbuf b;
	size_t i;

	memset(&b, 0, sizeof(b));
	if (!spool_id_valid(msg->queue_id) || msg->n_rcpts == 0 ||
	    msg->n_rcpts > SPOOL_RCPTS_MAX || meta->size > SPOOL_BODY_MAX) {
		errno = EINVAL;
		return -1;
	}
	sbuf_add(&b, SPOOL_MAGIC "\n", strlen(SPOOL_MAGIC) + 1);
	sbuf_kv(&b, "id", msg->queue_id);
	sbuf_kv(&b, "account", msg->account);
	sbuf_kv(&b, "from", msg->mail_from);
	for (i = 0; i < msg->n_rcpts; i++)
		sbuf_kv(&b, "rcpt", msg->rcpts[i]);
	sbuf_kv(&b, "client-ip", msg->client_ip);
	sbuf_kv(&b, "client-name", msg->client_name);
	sbuf_kv(&b, "helo", msg->helo);
	sbuf_kn(&b, "received", (uint64_t)(meta->received > 0 ? meta->received : 0));
	sbuf_kn(&b, "body-8bit", msg->body_8bit ? 1 : 0);
	sbuf_kn(&b, "smtputf8", msg->smtputf8 ? 1 : 0);
	/* Bounded like every value: a longer header field is cut. */
	if (meta->fields.header_from != NULL)
		sbuf_kv(&b, "header-from", meta->fields.header_from);
	if (meta->fields.subject != NULL)
		sbuf_kv(&b, "subject", meta->fields.subject);
	if (meta->fields.message_id != NULL)
		sbuf_kv(&b, "message-id", meta->fields.message_id);
	sbuf_kn(&b, "size", meta->size);
	sbuf_add(&b, "\n", 1);
	return sbuf_finish(&b, out, outlen);
}

int
spool_state_encode(const struct spool_state *st, size_t n_rcpts, char **out, size_t *outlen)
{
	struct sbuf b;
	char hex[3];
	size_t i;

	memset(&b, 0, sizeof(b));
	if (n_rcpts > SPOOL_RCPTS_MAX) {
		errno = EINVAL;
		return -1;
	}
	sbuf_add(&b, SPOOL_STATE_MAGIC "\n", strlen(SPOOL_STATE_MAGIC) + 1);
	sbuf_kn(&b, "attempts", st->attempts);
	sbuf_kn(&b, "next", (uint64_t)(st->next_attempt > 0 ? st->next_attempt : 0));
	sbuf_kn(&b, "last", (uint64_t)(st->last_attempt > 0 ? st->last_attempt : 0));
	sbuf_kn(&b, "since", (uint64_t)(st->since > 0 ? st->since : 0));
	sbuf_kn(&b, "failed", st->failed ? 1 : 0);
	if (st->last_reply != NULL)
		sbuf_kv(&b, "reply", st->last_reply);
	if (st->done != NULL && n_rcpts > 0) {
		sbuf_add(&b, "done ", 5);
		for (i = 0; i < SPOOL_BITMAP_BYTES(n_rcpts); i++) {
			hex[0] = hexdigits[st->done[i] >> 4];
			hex[1] = hexdigits[st->done[i] & 0xf];
			sbuf_add(&b, hex, 2);
		}
		sbuf_add(&b, "\n", 1);
	}
	return sbuf_finish(&b, out, outlen);
}

/* ---- Parsing ------------------------------------------------------------- */

static void perr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
perr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * Decode an escaped value of len bytes into out (outlen with the NUL).
 * Refuses raw bytes outside 0x21..0x7e, bad escapes, an escaped NUL and
 * values that do not fit.
 */
static int
value_decode(const char *v, size_t len, char *out, size_t outlen)
{
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c < 0x21 || c > 0x7e)
			return -1;
		if (c == '%') {
			if (i + 2 >= len)
				return -1;
			if ((hi = hexval(v[i + 1])) == -1 || (lo = hexval(v[i + 2])) == -1)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			if (c == 0)
				return -1;
			i += 2;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

static int
number_decode(const char *v, size_t len, uint64_t max, uint64_t *out)
{
	char buf[32];

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, v, len);
	buf[len] = '\0';
	return parse_u64(buf, 0, max, out);
}

/*
 * The next line of buf[*off..len): key and raw value. Returns 1 for a line,
 * 0 for the blank line, 2 when the buffer ends first, -1 when malformed.
 */
static int
next_line(const char *buf, size_t len, size_t *off, char key[SPOOL_KEY_MAX],
    const char **val, size_t *vallen)
{
	const char *start = buf + *off, *nl, *sp;
	size_t avail = len - *off, n, klen;

	if (avail == 0)
		return 2;
	nl = memchr(start, '\n', avail < SPOOL_LINE_MAX + 1 ? avail : SPOOL_LINE_MAX + 1);
	if (nl == NULL)
		return avail > SPOOL_LINE_MAX ? -1 : 2;
	n = (size_t)(nl - start);
	*off += n + 1;
	if (n == 0)
		return 0;
	if ((sp = memchr(start, ' ', n)) == NULL)
		return -1;
	klen = (size_t)(sp - start);
	if (klen == 0 || klen >= SPOOL_KEY_MAX)
		return -1;
	memcpy(key, start, klen);
	key[klen] = '\0';
	*val = sp + 1;
	*vallen = n - klen - 1;
	return 1;
}

enum env_key {
	EK_ID, EK_ACCOUNT, EK_FROM, EK_RCPT, EK_CLIENT_IP, EK_CLIENT_NAME, EK_HELO,
	EK_RECEIVED, EK_8BIT, EK_SMTPUTF8, EK_HEADER_FROM, EK_SUBJECT, EK_MESSAGE_ID,
	EK_SIZE, EK_COUNT
};

static const char *const env_keys[EK_COUNT] = {
	"id", "account", "from", "rcpt", "client-ip", "client-name", "helo", "received",
	"body-8bit", "smtputf8", "header-from", "subject", "message-id", "size",
};

/* Keys every envelope must have (rcpt at least once). */
static const enum env_key env_required[] = {
	EK_ID, EK_ACCOUNT, EK_FROM, EK_RCPT, EK_RECEIVED, EK_SIZE,
};

static int
field_dup(const char *v, size_t len, char **out)
{
	char tmp[SPOOL_VALUE_MAX + 1];

	if (value_decode(v, len, tmp, sizeof(tmp)) == -1)
		return -1;
	if ((*out = strdup(tmp)) == NULL)
		return -1;
	return 0;
}

int
spool_envelope_parse(const char *buf, size_t len, struct relay_msg *msg,
    struct spool_meta *meta, size_t *hdrlen, char *err, size_t errlen)
{
	char key[SPOOL_KEY_MAX], (*nr)[RELAY_PATH_MAX];
	const char *val;
	size_t off, vlen, cap = 0, lineno = 1, i;
	unsigned seen[EK_COUNT];
	uint64_t n;
	int k, rc;

	memset(msg, 0, sizeof(*msg));
	memset(meta, 0, sizeof(*meta));
	memset(seen, 0, sizeof(seen));
	if (len > SPOOL_HEADER_MAX)
		len = SPOOL_HEADER_MAX;
	off = strlen(SPOOL_MAGIC) + 1;
	if (len < off) {
		if (memcmp(buf, SPOOL_MAGIC "\n", len) == 0)
			return 1;
		perr(err, errlen, "not a spool file (no \"%s\" line)", SPOOL_MAGIC);
		return -1;
	}
	if (memcmp(buf, SPOOL_MAGIC "\n", off) != 0) {
		perr(err, errlen, "not a spool file (no \"%s\" line)", SPOOL_MAGIC);
		return -1;
	}
	for (;;) {
		lineno++;
		rc = next_line(buf, len, &off, key, &val, &vlen);
		if (rc == 2) {
			if (len >= SPOOL_HEADER_MAX) {
				perr(err, errlen, "envelope longer than %d bytes", SPOOL_HEADER_MAX);
				goto fail;
			}
			spool_msg_clear(msg);
			spool_meta_free(meta);
			return 1;
		}
		if (rc == -1) {
			perr(err, errlen, "line %zu: malformed", lineno);
			goto fail;
		}
		if (rc == 0)
			break;
		for (k = 0; k < EK_COUNT; k++)
			if (strcmp(key, env_keys[k]) == 0)
				break;
		if (k == EK_COUNT) {
			perr(err, errlen, "line %zu: unknown key \"%s\"", lineno, key);
			goto fail;
		}
		if (seen[k]++ > 0 && k != EK_RCPT) {
			perr(err, errlen, "line %zu: \"%s\" given twice", lineno, key);
			goto fail;
		}
		switch ((enum env_key)k) {
		case EK_ID:
			rc = value_decode(val, vlen, msg->queue_id, sizeof(msg->queue_id));
			if (rc == 0 && !spool_id_valid(msg->queue_id))
				rc = -1;
			break;
		case EK_ACCOUNT:
			rc = value_decode(val, vlen, msg->account, sizeof(msg->account));
			if (rc == 0 && msg->account[0] == '\0')
				rc = -1;
			break;
		case EK_FROM:
			rc = value_decode(val, vlen, msg->mail_from, sizeof(msg->mail_from));
			break;
		case EK_RCPT:
			if (msg->n_rcpts >= SPOOL_RCPTS_MAX) {
				perr(err, errlen, "line %zu: more than %d recipients", lineno,
				    SPOOL_RCPTS_MAX);
				goto fail;
			}
			if (msg->n_rcpts == cap) {
				cap = cap == 0 ? 4 : cap * 2;
				if ((nr = reallocarray(msg->rcpts, cap, sizeof(*nr))) == NULL) {
					perr(err, errlen, "out of memory");
					goto fail;
				}
				msg->rcpts = nr;
			}
			rc = value_decode(val, vlen, msg->rcpts[msg->n_rcpts],
			    sizeof(msg->rcpts[0]));
			if (rc == 0 && msg->rcpts[msg->n_rcpts][0] == '\0')
				rc = -1;
			if (rc == 0)
				msg->n_rcpts++;
			break;
		case EK_CLIENT_IP:
			rc = value_decode(val, vlen, msg->client_ip, sizeof(msg->client_ip));
			break;
		case EK_CLIENT_NAME:
			rc = value_decode(val, vlen, msg->client_name, sizeof(msg->client_name));
			break;
		case EK_HELO:
			rc = value_decode(val, vlen, msg->helo, sizeof(msg->helo));
			break;
		case EK_RECEIVED:
			rc = number_decode(val, vlen, INT64_MAX, &n);
			meta->received = (time_t)n;
			break;
		case EK_8BIT:
			rc = number_decode(val, vlen, 1, &n);
			msg->body_8bit = (int)n;
			break;
		case EK_SMTPUTF8:
			rc = number_decode(val, vlen, 1, &n);
			msg->smtputf8 = (int)n;
			break;
		case EK_HEADER_FROM:
			rc = field_dup(val, vlen, &meta->fields.header_from);
			break;
		case EK_SUBJECT:
			rc = field_dup(val, vlen, &meta->fields.subject);
			break;
		case EK_MESSAGE_ID:
			rc = field_dup(val, vlen, &meta->fields.message_id);
			break;
		case EK_SIZE:
			rc = number_decode(val, vlen, SPOOL_BODY_MAX, &meta->size);
			break;
		case EK_COUNT:
			rc = -1;
			break;
		}
		if (rc == -1) {
			perr(err, errlen, "line %zu: bad value for \"%s\"", lineno, key);
			goto fail;
		}
	}
	for (i = 0; i < sizeof(env_required) / sizeof(env_required[0]); i++) {
		if (seen[env_required[i]] == 0) {
			perr(err, errlen, "no \"%s\" line", env_keys[env_required[i]]);
			goto fail;
		}
	}
	*hdrlen = off;
	return 0;
fail:
	spool_msg_clear(msg);
	spool_meta_free(meta);
	return -1;
}

void
spool_msg_clear(struct relay_msg *msg)
{
	free(msg->rcpts);
	msg->rcpts = NULL;
	msg->n_rcpts = 0;
}

void
spool_meta_free(struct spool_meta *meta)
{
	relay_fields_free(&meta->fields);
}

enum st_key { SK_ATTEMPTS, SK_NEXT, SK_LAST, SK_SINCE, SK_FAILED, SK_REPLY, SK_DONE, SK_COUNT };

static const char *const st_keys[SK_COUNT] = {
	"attempts", "next", "last", "since", "failed", "reply", "done",
};

int
spool_state_parse(const char *buf, size_t len, size_t n_rcpts, struct spool_state *st,
    char *err, size_t errlen)
{
	char key[SPOOL_KEY_MAX];
	const char *val;
	size_t off, vlen, lineno = 1, i, nbytes = SPOOL_BITMAP_BYTES(n_rcpts);
	unsigned seen[SK_COUNT];
	uint64_t n;
	int k, rc, hi, lo;

	memset(st, 0, sizeof(*st));
	memset(seen, 0, sizeof(seen));
	off = strlen(SPOOL_STATE_MAGIC) + 1;
	if (len > SPOOL_STATE_MAX || len < off || memcmp(buf, SPOOL_STATE_MAGIC "\n", off) != 0) {
		perr(err, errlen, "not a state file (no \"%s\" line)", SPOOL_STATE_MAGIC);
		return -1;
	}
	while (off < len) {
		lineno++;
		rc = next_line(buf, len, &off, key, &val, &vlen);
		if (rc != 1) {
			perr(err, errlen, "line %zu: %s", lineno, rc == 2 ? "cut off" : "malformed");
			goto fail;
		}
		for (k = 0; k < SK_COUNT; k++)
			if (strcmp(key, st_keys[k]) == 0)
				break;
		if (k == SK_COUNT || seen[k]++ > 0) {
			perr(err, errlen, "line %zu: %s key \"%s\"", lineno,
			    k == SK_COUNT ? "unknown" : "repeated", key);
			goto fail;
		}
		rc = 0;
		switch ((enum st_key)k) {
		case SK_ATTEMPTS:
			rc = number_decode(val, vlen, UINT32_MAX, &n);
			st->attempts = (uint32_t)n;
			break;
		case SK_NEXT:
			rc = number_decode(val, vlen, INT64_MAX, &n);
			st->next_attempt = (time_t)n;
			break;
		case SK_LAST:
			rc = number_decode(val, vlen, INT64_MAX, &n);
			st->last_attempt = (time_t)n;
			break;
		case SK_SINCE:
			rc = number_decode(val, vlen, INT64_MAX, &n);
			st->since = (time_t)n;
			break;
		case SK_FAILED:
			rc = number_decode(val, vlen, 1, &n);
			st->failed = (int)n;
			break;
		case SK_REPLY:
			rc = field_dup(val, vlen, &st->last_reply);
			break;
		case SK_DONE:
			if (n_rcpts == 0 || vlen != 2 * nbytes ||
			    (st->done = calloc(1, nbytes)) == NULL) {
				rc = -1;
				break;
			}
			for (i = 0; i < nbytes && rc == 0; i++) {
				if ((hi = hexval(val[2 * i])) == -1 ||
				    (lo = hexval(val[2 * i + 1])) == -1)
					rc = -1;
				else
					st->done[i] = (uint8_t)(hi << 4 | lo);
			}
			/* No bits beyond the last recipient. */
			if (rc == 0 && n_rcpts % 8 != 0 &&
			    (st->done[nbytes - 1] >> (n_rcpts % 8)) != 0)
				rc = -1;
			break;
		case SK_COUNT:
			rc = -1;
			break;
		}
		if (rc == -1) {
			perr(err, errlen, "line %zu: bad value for \"%s\"", lineno, key);
			goto fail;
		}
	}
	for (k = 0; k <= SK_FAILED; k++) {
		if (seen[k] == 0) {
			perr(err, errlen, "no \"%s\" line", st_keys[k]);
			goto fail;
		}
	}
	return 0;
fail:
	spool_state_free(st);
	return -1;
}

void
spool_state_free(struct spool_state *st)
{
	free(st->last_reply);
	free(st->done);
	st->last_reply = NULL;
	st->done = NULL;
}

int
spool_state_copy(struct spool_state *dst, const struct spool_state *src, size_t n_rcpts)
{
	*dst = *src;
	dst->last_reply = NULL;
	dst->done = NULL;
	if (src->last_reply != NULL && (dst->last_reply = strdup(src->last_reply)) == NULL)
		goto fail;
	if (src->done != NULL && n_rcpts > 0) {
		if ((dst->done = malloc(SPOOL_BITMAP_BYTES(n_rcpts))) == NULL)
			goto fail;
		memcpy(dst->done, src->done, SPOOL_BITMAP_BYTES(n_rcpts));
	}
	return 0;
fail:
	spool_state_free(dst);
	return -1;
}

int
spool_state_set_reply(struct spool_state *st, const char *reply)
{
	char *r;
	size_t n = strnlen(reply, SPOOL_REPLY_MAX - 1);

	if ((r = malloc(n + 1)) == NULL)
		return -1;
	memcpy(r, reply, n);
	r[n] = '\0';
	free(st->last_reply);
	st->last_reply = r;
	return 0;
}

int
spool_state_done(const struct spool_state *st, size_t i)
{
	return st->done != NULL && (st->done[i / 8] & (1u << (i % 8))) != 0;
}

int
spool_state_set_done(struct spool_state *st, size_t i, size_t n_rcpts)
{
	if (i >= n_rcpts)
		return -1;
	if (st->done == NULL && (st->done = calloc(1, SPOOL_BITMAP_BYTES(n_rcpts))) == NULL)
		return -1;
	st->done[i / 8] |= (uint8_t)(1u << (i % 8));
	return 0;
}

/* ---- Listing ------------------------------------------------------------- */

static json_t *
str_or_null(const char *s)
{
	return s != NULL ? audit_string(s, strlen(s)) : json_null();
}

static json_t *
time_or_null(time_t t)
{
	char buf[32];

	if (t <= 0)
		return json_null();
	time_rfc3339(t, buf, sizeof(buf));
	return json_string(buf);
}

json_t *
spool_entry_json(const struct relay_msg *msg, const struct spool_meta *meta,
    const struct spool_state *st, const char *status, const char *hold_reason, time_t now)
{
	json_t *o, *rcpts;
	size_t i;
	int rc = 0;

	if ((o = json_object()) == NULL || (rcpts = json_array()) == NULL) {
		json_decref(o);
		return NULL;
	}
	for (i = 0; i < msg->n_rcpts; i++)
		rc |= json_array_append_new(rcpts, str_or_null(msg->rcpts[i]));
	rc |= json_object_set_new(o, "id", json_string(msg->queue_id));
	rc |= json_object_set_new(o, "account", str_or_null(msg->account));
	rc |= json_object_set_new(o, "from", str_or_null(msg->mail_from));
	rc |= json_object_set_new(o, "rcpts", rcpts);
	rc |= json_object_set_new(o, "size", json_integer((json_int_t)meta->size));
	rc |= json_object_set_new(o, "received", time_or_null(meta->received));
	rc |= json_object_set_new(o, "age", json_integer(now > meta->received ?
	    (json_int_t)(now - meta->received) : 0));
	rc |= json_object_set_new(o, "attempts", json_integer(st->attempts));
	rc |= json_object_set_new(o, "next_attempt", st->failed ? json_null() :
	    time_or_null(st->next_attempt > now ? st->next_attempt : now));
	rc |= json_object_set_new(o, "status", json_string(status));
	rc |= json_object_set_new(o, "last_reply", str_or_null(st->last_reply));
	rc |= json_object_set_new(o, "hold_reason", str_or_null(hold_reason));
	if (rc != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}
