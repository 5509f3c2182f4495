/*
 * audit.c: the audit log (SPEC section 7; format and locking in audit.h).
 *
 * Three parts share the line format: the writer (events, sanitised strings,
 * the keyed chain, flock-serialised durable appends that survive rotation),
 * the verifier (walks the chain and names the first bad line and why), and
 * the query engine behind "audit show" and the admin page, which must filter
 * a million lines in well under two seconds and so looks at the fixed-place
 * "ts" and does a targeted byte scan before it ever parses a line.
 */
#include "audit.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"
#include "util.h"

#define GENESIS_HEX	"0000000000000000000000000000000000000000000000000000000000000000"
#define HEAD_SUFFIX	".head"
#define TS_PREFIX	"{\"ts\":\""		/* every line starts with this */
#define TS_PREFIX_LEN	(sizeof(TS_PREFIX) - 1)
#define MAC_KEY		",\"mac\":\""
#define MAC_KEY_LEN	(sizeof(MAC_KEY) - 1)
#define PREV_KEY	",\"prev\":\""
#define PREV_KEY_LEN	(sizeof(PREV_KEY) - 1)
/* ,"mac":"<64 hex>"}  and  ,"prev":"<64 hex>"  as they end every line */
#define MAC_TAIL_LEN	(MAC_KEY_LEN + AUDIT_MAC_HEX + 2)
#define PREV_TAIL_LEN	(PREV_KEY_LEN + AUDIT_MAC_HEX + 1)
#define HEAD_FILE_LEN	(AUDIT_MAC_HEX + 1)	/* 64 hex and a newline */
#define READER_CHUNK	(8 * 1024 * 1024)	/* bytes per read() when scanning */
#define REPLACEMENT	"\xef\xbf\xbd"		/* U+FFFD */
#define ELLIPSIS	"..."
#define NEEDLE_MAX	(6 * AUDIT_FIELD_MAX + 64)	/* an escaped pattern with its key */
#define GLOB_CHARS	"*?["

/* ---- Strings and events ------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 when invalid. NUL
 * counts as invalid: C consumers of the log would stop at it. */
static size_t
utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];

	if (c >= 0x01 && c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))
			return 0;	/* overlong, or a UTF-16 surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
			return 0;	/* overlong, or above U+10FFFF */
		return 4;
	}
	return 0;
}

json_t *
audit_string(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	char buf[AUDIT_FIELD_MAX];
	size_t i = 0, out = 0, cut = 0, k, w;
	const char *src;
	int truncated = 0;

	while (i < len) {
		k = utf8_seq_len(p + i, len - i);
		src = k != 0 ? s + i : REPLACEMENT;
		w = k != 0 ? k : sizeof(REPLACEMENT) - 1;
		if (out + w > sizeof(buf)) {
			truncated = 1;
			break;
		}
		memcpy(buf + out, src, w);
		out += w;
		i += k != 0 ? k : 1;
		if (out <= sizeof(buf) - (sizeof(ELLIPSIS) - 1))
			cut = out;
	}
	if (truncated) {
		memcpy(buf + cut, ELLIPSIS, sizeof(ELLIPSIS) - 1);
		out = cut + sizeof(ELLIPSIS) - 1;
	}
	return json_stringn(buf, out);
}

int
audit_set_strn(json_t *obj, const char *key, const char *s, size_t len)
{
	json_t *v = s == NULL ? json_null() : audit_string(s, len);

	if (v == NULL)
		return -1;
	return json_object_set_new(obj, key, v);
}

int
audit_set_str(json_t *obj, const char *key, const char *s)
{
	return audit_set_strn(obj, key, s, s == NULL ? 0 : strlen(s));
}

int
audit_set_int(json_t *obj, const char *key, int64_t v)
{
	json_t *j = json_integer((json_int_t)v);

	return j == NULL ? -1 : json_object_set_new(obj, key, j);
}

/* A number, or null when it is zero (an unknown version). */
static int
set_int_or_null(json_t *obj, const char *key, int64_t v)
{
	return v == 0 ? json_object_set_new(obj, key, json_null()) : audit_set_int(obj, key, v);
}

const char *
audit_status_name(enum audit_status st)
{
	static const char *const names[] = {
		[AUDIT_STATUS_QUEUED] = "queued",
		[AUDIT_STATUS_DELIVERED] = "delivered",
		[AUDIT_STATUS_DEFERRED] = "deferred",
		[AUDIT_STATUS_FAILED] = "failed",
		[AUDIT_STATUS_REJECTED] = "rejected",
	};

	return (size_t)st < ARRAY_SIZE(names) ? names[st] : "unknown";
}

static const char *
account_action_name(enum audit_account_action a)
{
	static const char *const names[] = {
		[AUDIT_ACCOUNT_ADD] = "add",
		[AUDIT_ACCOUNT_ROTATE] = "rotate",
		[AUDIT_ACCOUNT_ROLLBACK] = "rollback",
		[AUDIT_ACCOUNT_REMOVE] = "remove",
		[AUDIT_ACCOUNT_AUTH_FAILED] = "auth_failed",
	};

	return (size_t)a < ARRAY_SIZE(names) ? names[a] : "unknown";
}

static const char *
admin_action_name(enum audit_admin_action a)
{
	static const char *const names[] = {
		[AUDIT_ADMIN_LOGIN] = "login",
		[AUDIT_ADMIN_LOGOUT] = "logout",
		[AUDIT_ADMIN_LOGIN_FAILED] = "login_failed",
		[AUDIT_ADMIN_USER_ADD] = "user_add",
		[AUDIT_ADMIN_USER_REMOVE] = "user_remove",
	};

	return (size_t)a < ARRAY_SIZE(names) ? names[a] : "unknown";
}

json_t *
audit_event_new(const char *event)
{
	json_t *obj;

	if (event == NULL || (obj = json_object()) == NULL)
		return NULL;
	if (audit_set_str(obj, "event", event) == -1) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

json_t *
audit_message_event(const struct audit_message *m)
{
	json_t *ev, *rcpts = NULL;
	size_t i;
	int bad = 0;

	if ((ev = audit_event_new("message")) == NULL || (rcpts = json_array()) == NULL)
		goto fail;
	for (i = 0; i < m->n_rcpt_to; i++)
		bad |= json_array_append_new(rcpts, audit_string(m->rcpt_to[i],
		    strlen(m->rcpt_to[i])));
	bad |= audit_set_str(ev, "queue_id", m->queue_id);
	bad |= audit_set_str(ev, "client_ip", m->client_ip);
	bad |= audit_set_str(ev, "client_name", m->client_name);
	bad |= audit_set_str(ev, "helo", m->helo);
	bad |= audit_set_str(ev, "mail_from", m->mail_from);
	bad |= json_object_set_new(ev, "rcpt_to", rcpts);
	rcpts = NULL;
	bad |= audit_set_str(ev, "header_from", m->header_from);
	bad |= audit_set_str(ev, "subject", m->subject);
	bad |= audit_set_str(ev, "message_id", m->message_id);
	bad |= audit_set_int(ev, "size", (int64_t)m->size);
	bad |= audit_set_str(ev, "account", m->account);
	bad |= set_int_or_null(ev, "credential_version", m->credential_version);
	bad |= audit_set_str(ev, "status", audit_status_name(m->status));
	bad |= audit_set_str(ev, "upstream_reply", m->upstream_reply);
	bad |= audit_set_int(ev, "attempt", m->attempt);
	bad |= audit_set_int(ev, "duration_ms", (int64_t)m->duration_ms);
	if (bad)
		goto fail;
	return ev;
fail:
	json_decref(rcpts);
	json_decref(ev);
	return NULL;
}

json_t *
audit_reject_event(const char *client_ip, const char *client_name, const char *reason,
    const char *command)
{
	json_t *ev;

	if ((ev = audit_event_new("reject")) == NULL)
		return NULL;
	if (audit_set_str(ev, "client_ip", client_ip) == -1 ||
	    audit_set_str(ev, "client_name", client_name) == -1 ||
	    audit_set_str(ev, "reason", reason) == -1 ||
	    audit_set_str(ev, "command", command) == -1) {
		json_decref(ev);
		return NULL;
	}
	return ev;
}

json_t *
audit_account_event(enum audit_account_action action, const char *account,
    uint32_t version, const char *by, const char *ip)
{
	json_t *ev;

	if ((ev = audit_event_new("account")) == NULL)
		return NULL;
	if (audit_set_str(ev, "action", account_action_name(action)) == -1 ||
	    audit_set_str(ev, "account", account) == -1 ||
	    set_int_or_null(ev, "version", version) == -1 ||
	    audit_set_str(ev, "by", by) == -1 ||
	    audit_set_str(ev, "ip", ip) == -1) {
		json_decref(ev);
		return NULL;
	}
	return ev;
}

json_t *
audit_admin_event(enum audit_admin_action action, const char *user, const char *ip,
    const char *by)
{
	json_t *ev;

	if ((ev = audit_event_new("admin")) == NULL)
		return NULL;
	if (audit_set_str(ev, "action", admin_action_name(action)) == -1 ||
	    audit_set_str(ev, "user", user) == -1 ||
	    audit_set_str(ev, "ip", ip) == -1 ||
	    audit_set_str(ev, "by", by) == -1) {
		json_decref(ev);
		return NULL;
	}
	return ev;
}

json_t *
audit_vault_event(enum audit_vault_action action, const char *by)
{
	json_t *ev;

	if ((ev = audit_event_new("vault")) == NULL)
		return NULL;
	if (audit_set_str(ev, "action", action == AUDIT_VAULT_INIT ? "init" : "rekey") == -1 ||
	    audit_set_str(ev, "by", by) == -1) {
		json_decref(ev);
		return NULL;
	}
	return ev;
}

/* ---- The line format ------------------------------------------------------ */

static int
is_mac_hex(const char *s)
{
	size_t i;

	for (i = 0; i < AUDIT_MAC_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* "2026-11-26T05:40:56.123Z" for ms since the epoch. */
static int
format_ts(int64_t ms, char out[AUDIT_TS_LEN + 1])
{
	char buf[64];
	struct tm tm;
	time_t t;
	int n;

	if (ms < 0)
		return -1;
	t = (time_t)(ms / 1000);
	if (gmtime_r(&t, &tm) == NULL)
		return -1;
	n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, (int)(ms % 1000));
	if (n != AUDIT_TS_LEN)
		return -1;
	memcpy(out, buf, AUDIT_TS_LEN + 1);
	return 0;
}

/* The mac of S, where S is given as a prefix (everything before the final
 * '}') so that a verifier can hash a line in place. */
static void
compute_mac(const unsigned char key[AUDIT_KEY_BYTES], const char *prefix, size_t len,
    char hex[AUDIT_MAC_HEX + 1])
{
	crypto_generichash_state st;
	unsigned char mac[AUDIT_MAC_BYTES];

	crypto_generichash_init(&st, key, AUDIT_KEY_BYTES, sizeof(mac));
	crypto_generichash_update(&st, (const unsigned char *)prefix, len);
	crypto_generichash_update(&st, (const unsigned char *)"}", 1);
	crypto_generichash_final(&st, mac, sizeof(mac));
	sodium_bin2hex(hex, AUDIT_MAC_HEX + 1, mac, sizeof(mac));
	sodium_memzero(&st, sizeof(st));
}

char *
audit_line_build(const unsigned char key[AUDIT_KEY_BYTES], const char *prev_hex,
    int64_t ts_ms, json_t *event, char mac_hex[AUDIT_MAC_HEX + 1], size_t *len,
    char *err, size_t errlen)
{
	json_t *obj = NULL, *v;
	const char *k, *name;
	char ts[AUDIT_TS_LEN + 1], *s = NULL, *line = NULL;
	size_t slen, n;

	if (!json_is_object(event) || (name = json_string_value(json_object_get(event,
	    "event"))) == NULL || name[0] == '\0') {
		snprintf(err, errlen, "audit event without an \"event\" name");
		goto done;
	}
	if (json_object_get(event, "ts") != NULL || json_object_get(event, "prev") != NULL ||
	    json_object_get(event, "mac") != NULL) {
		snprintf(err, errlen, "audit event \"%s\" sets a reserved key (ts, prev, mac)",
		    name);
		goto done;
	}
	if (prev_hex == NULL || strlen(prev_hex) != AUDIT_MAC_HEX || !is_mac_hex(prev_hex) ||
	    format_ts(ts_ms, ts) == -1) {
		snprintf(err, errlen, "audit: bad chain head or clock");
		goto done;
	}
	/* "ts" first, so that readers find it at a fixed place; "prev" last. */
	if ((obj = json_object()) == NULL ||
	    json_object_set_new(obj, "ts", json_string(ts)) == -1)
		goto oom;
	json_object_foreach(event, k, v) {
		if (json_object_set(obj, k, v) == -1)
			goto oom;
	}
	if (json_object_set_new(obj, "prev", json_string(prev_hex)) == -1 ||
	    (s = json_dumps(obj, AUDIT_JSON_FLAGS)) == NULL)
		goto oom;
	slen = strlen(s);
	n = slen - 1 + MAC_TAIL_LEN + 1;
	if (slen < 2 || s[slen - 1] != '}' || n > AUDIT_LINE_MAX) {
		snprintf(err, errlen, "audit event \"%s\" is too large (%zu bytes, at most %d)",
		    name, n, AUDIT_LINE_MAX);
		goto done;
	}
	compute_mac(key, s, slen - 1, mac_hex);
	if ((line = malloc(n + 1)) == NULL)
		goto oom;
	memcpy(line, s, slen - 1);
	memcpy(line + slen - 1, MAC_KEY, MAC_KEY_LEN);
	memcpy(line + slen - 1 + MAC_KEY_LEN, mac_hex, AUDIT_MAC_HEX);
	memcpy(line + n - 3, "\"}\n", 4);
	*len = n;
	goto done;
oom:
	snprintf(err, errlen, "audit: out of memory");
done:
	free(s);
	json_decref(obj);
	return line;
}

/* ---- Writing ------------------------------------------------------------ */

struct audit {
	char		path[PATH_MAX];
	char		head_path[PATH_MAX];
	int		fd;		/* the log, O_APPEND */
	int		head_fd;	/* "<path>.head": the lock and the recorded head */
	unsigned char	*key;		/* guarded memory */
	char		head[AUDIT_MAC_HEX + 1];
	int		head_known;
	dev_t		dev;		/* the file fd had at the last append */
	ino_t		ino;
	off_t		seen_size;	/* its size after that append; -1: unknown */
	audit_forward_fn *forward;	/* set: a forwarder, no file of its own */
	audit_reopen_fn	*forward_reopen;
	void		(*forward_release)(void *);
	void		*forward_arg;
};

struct audit *
audit_forwarder(audit_forward_fn *forward, audit_reopen_fn *reopen,
    void (*release)(void *arg), void *arg)
{
	struct audit *a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	a->fd = a->head_fd = -1;
	a->seen_size = -1;
	strlcpy(a->head, GENESIS_HEX, sizeof(a->head));
	a->forward = forward;
	a->forward_reopen = reopen;
	a->forward_release = release;
	a->forward_arg = arg;
	return a;
}

/*
 * Hand events to the forwarder, as many at a time as fit in
 * AUDIT_FORWARD_MAX bytes: one line each, joined by '\n'. *written counts
 * the events of the parts that went through.
 */
static int
audit_forward(struct audit *a, json_t *const *events, size_t n, size_t *written, char *err,
    size_t errlen)
{
	char *texts[AUDIT_BATCH_MAX] = { NULL }, *buf = NULL;
	size_t lens[AUDIT_BATCH_MAX], i, first, len;
	int rc = -1;

	for (i = 0; i < n; i++) {
		if (!json_is_string(json_object_get(events[i], "event"))) {
			snprintf(err, errlen, "audit: event without a name");
			goto done;
		}
		if ((texts[i] = json_dumps(events[i], JSON_COMPACT)) == NULL) {
			snprintf(err, errlen, "audit: out of memory");
			goto done;
		}
		lens[i] = strlen(texts[i]);
	}
	for (first = 0; first < n; first = i) {
		/* One event alone needs no copy (and may be larger than a part). */
		len = lens[first];
		for (i = first + 1; i < n && len + 1 + lens[i] <= AUDIT_FORWARD_MAX; i++)
			len += 1 + lens[i];
		if (i == first + 1) {
			if (a->forward(a->forward_arg, texts[first], len, err, errlen) == -1)
				goto done;
		} else {
			if ((buf = malloc(len)) == NULL) {
				snprintf(err, errlen, "audit: out of memory");
				goto done;
			}
			for (len = 0; first < i; first++) {
				if (len > 0)
					buf[len++] = '\n';
				memcpy(buf + len, texts[first], lens[first]);
				len += lens[first];
			}
			if (a->forward(a->forward_arg, buf, len, err, errlen) == -1)
				goto done;
			free(buf);
			buf = NULL;
		}
		if (written != NULL)
			*written = i;
	}
	rc = 0;
done:
	free(buf);
	for (i = 0; i < n; i++)
		free(texts[i]);
	return rc;
}

static int
lock_fd(int fd, int op)
{
	while (flock(fd, op) == -1) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

/*
 * When root (a CLI command) creates a file in a directory that belongs to the
 * daemon's user, hand it to that user, or the daemon could no longer append.
 */
static void
adopt_owner(int fd, const char *like)
{
	struct stat st;

	if (geteuid() != 0 || stat(like, &st) == -1 || st.st_uid == 0)
		return;
	if (fchown(fd, st.st_uid, st.st_gid) == -1)
		log_warn("audit: cannot give %s to uid %u: %s", like, (unsigned)st.st_uid,
		    strerror(errno));
}

static void
dir_of_path(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		strlcpy(dir, ".", len);
	else if (slash == path)
		strlcpy(dir, "/", len);
	else
		strlcpy(dir, path, (size_t)(slash - path) + 1 < len ? (size_t)(slash - path) + 1 : len);
}

/* Open path for appending, creating it 0600; O_EXCL tells us we created it. */
static int
open_owned(const char *path, int flags, const char *owner_like)
{
	char dir[PATH_MAX];
	int fd;

	if ((fd = open(path, flags | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) != -1) {
		if (owner_like == NULL) {
			dir_of_path(path, dir, sizeof(dir));
			owner_like = dir;
		}
		adopt_owner(fd, owner_like);
		return fd;
	}
	if (errno != EEXIST)
		return -1;
	return open(path, flags | O_CLOEXEC);
}

static int
open_log(struct audit *a, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if ((fd = open_owned(a->path, O_RDWR | O_APPEND, NULL)) == -1) {
		snprintf(err, errlen, "cannot open audit log %s: %s", a->path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "audit log %s is not a regular file", a->path);
		close(fd);
		return -1;
	}
	if (a->fd != -1)
		close(a->fd);
	a->fd = fd;
	a->seen_size = -1;
	return 0;
}

struct audit *
audit_open(const char *path, const unsigned char key[AUDIT_KEY_BYTES], char *err,
    size_t errlen)
{
	struct audit *a;

	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "audit: out of memory");
		return NULL;
	}
	a->fd = a->head_fd = -1;
	a->seen_size = -1;
	strlcpy(a->head, GENESIS_HEX, sizeof(a->head));
	if (strlcpy(a->path, path, sizeof(a->path)) >= sizeof(a->path) ||
	    (size_t)snprintf(a->head_path, sizeof(a->head_path), "%s%s", path, HEAD_SUFFIX) >=
	    sizeof(a->head_path)) {
		snprintf(err, errlen, "audit log path too long: %s", path);
		goto fail;
	}
	if ((a->key = sodium_malloc(AUDIT_KEY_BYTES)) == NULL) {
		snprintf(err, errlen, "audit: out of guarded memory");
		goto fail;
	}
	memcpy(a->key, key, AUDIT_KEY_BYTES);
	if (open_log(a, err, errlen) == -1)
		goto fail;
	if ((a->head_fd = open_owned(a->head_path, O_RDWR, a->path)) == -1) {
		snprintf(err, errlen, "cannot open audit chain head %s: %s", a->head_path,
		    strerror(errno));
		goto fail;
	}
	return a;
fail:
	audit_close(a);
	return NULL;
}

void
audit_close(struct audit *a)
{
	if (a == NULL)
		return;
	if (a->forward_release != NULL)
		a->forward_release(a->forward_arg);
	if (a->head_fd != -1) {
		(void)fsync(a->head_fd);
		close(a->head_fd);
	}
	if (a->fd != -1)
		close(a->fd);
	if (a->key != NULL)
		sodium_free(a->key);	/* wipes */
	free(a);
}

const char *
audit_head(const struct audit *a)
{
	return a->head;
}

int
audit_reopen(struct audit *a, char *err, size_t errlen)
{
	if (a->forward != NULL)
		return a->forward_reopen(a->forward_arg, err, errlen);
	/* The old descriptor stays in use if the new open fails. */
	if (open_log(a, err, errlen) == -1)
		return -1;
	(void)fsync(a->head_fd);
	return 0;
}

/* The head recorded in the side file; -1 when it is missing or damaged. */
static int
read_head_file(int fd, char hex[AUDIT_MAC_HEX + 1])
{
	char buf[HEAD_FILE_LEN];
	ssize_t n;

	do {
		n = pread(fd, buf, sizeof(buf), 0);
	} while (n == -1 && errno == EINTR);
	if (n < AUDIT_MAC_HEX || !is_mac_hex(buf))
		return -1;
	memcpy(hex, buf, AUDIT_MAC_HEX);
	hex[AUDIT_MAC_HEX] = '\0';
	return 0;
}

/*
 * Record the head after an append. Not fsync'd here (audit_close and
 * audit_reopen do): when the log is not empty its last line is the truth,
 * and the side file matters only for a fresh file after rotation.
 */
static void
write_head_file(struct audit *a)
{
	char buf[HEAD_FILE_LEN];
	ssize_t n;

	memcpy(buf, a->head, AUDIT_MAC_HEX);
	buf[AUDIT_MAC_HEX] = '\n';
	do {
		n = pwrite(a->head_fd, buf, sizeof(buf), 0);
	} while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(buf))
		log_warn("audit: cannot record the chain head in %s: %s", a->head_path,
		    n == -1 ? strerror(errno) : "short write");
}

/*
 * The log ends without a newline: a writer died in the middle of a line it
 * never acknowledged. Cut that line off (only when it looks like ours), so
 * the chain continues from the last complete line. *size becomes the new size.
 */
static int
cut_partial_line(struct audit *a, off_t *size, char *err, size_t errlen)
{
	size_t want = (size_t)*size > AUDIT_LINE_MAX ? AUDIT_LINE_MAX : (size_t)*size;
	char *buf = NULL, *nl;
	off_t start;
	int rc = -1;

	if ((buf = malloc(want)) == NULL) {
		snprintf(err, errlen, "audit: out of memory");
		goto done;
	}
	if (pread(a->fd, buf, want, *size - (off_t)want) != (ssize_t)want) {
		snprintf(err, errlen, "cannot read audit log %s: %s", a->path, strerror(errno));
		goto done;
	}
	nl = memrchr(buf, '\n', want);
	if (nl == NULL && (size_t)*size > want)
		goto foreign;
	start = *size - (off_t)want + (nl == NULL ? 0 : (off_t)(nl + 1 - buf));
	if (memcmp(buf + (start - (*size - (off_t)want)), TS_PREFIX,
	    (size_t)(*size - start) < TS_PREFIX_LEN ? (size_t)(*size - start) : TS_PREFIX_LEN) != 0)
		goto foreign;
	if (ftruncate(a->fd, start) == -1 || fdatasync(a->fd) == -1) {
		snprintf(err, errlen, "cannot repair audit log %s: %s", a->path, strerror(errno));
		goto done;
	}
	log_warn("audit: removed an unfinished line (%lld bytes) from the end of %s, left by "
	    "an interrupted writer", (long long)(*size - start), a->path);
	*size = start;
	rc = 0;
	goto done;
foreign:
	snprintf(err, errlen, "audit log %s ends with an unterminated line that is not an audit "
	    "entry; refusing to continue the chain (run 'smtpvault audit verify')", a->path);
done:
	free(buf);
	return rc;
}

/* The mac on the last line of a non-empty log. */
static int
read_last_mac(struct audit *a, off_t *size, char hex[AUDIT_MAC_HEX + 1], char *err,
    size_t errlen)
{
	char buf[MAC_TAIL_LEN + 1];
	char last;

	if (pread(a->fd, &last, 1, *size - 1) != 1) {
		snprintf(err, errlen, "cannot read audit log %s: %s", a->path, strerror(errno));
		return -1;
	}
	if (last != '\n') {
		if (cut_partial_line(a, size, err, errlen) == -1)
			return -1;
		if (*size == 0)
			return 1;	/* nothing left: an empty file */
	}
	if (*size < (off_t)sizeof(buf) ||
	    pread(a->fd, buf, sizeof(buf), *size - (off_t)sizeof(buf)) != (ssize_t)sizeof(buf) ||
	    memcmp(buf, MAC_KEY, MAC_KEY_LEN) != 0 || !is_mac_hex(buf + MAC_KEY_LEN) ||
	    memcmp(buf + MAC_KEY_LEN + AUDIT_MAC_HEX, "\"}\n", 3) != 0) {
		snprintf(err, errlen, "the last line of audit log %s is not an audit entry; "
		    "refusing to continue the chain (run 'smtpvault audit verify')", a->path);
		return -1;
	}
	memcpy(hex, buf + MAC_KEY_LEN, AUDIT_MAC_HEX);
	hex[AUDIT_MAC_HEX] = '\0';
	return 0;
}

/*
 * Under the lock: make sure a->fd is the file now at a->path (logrotate may
 * have renamed it) and a->head is the mac of its last line, reading the file
 * only when someone else has written to it since our last append.
 */
static int
sync_with_file(struct audit *a, off_t *size, char *err, size_t errlen)
{
	struct stat fst, pst;
	char hex[AUDIT_MAC_HEX + 1];
	int rc;

	if (fstat(a->fd, &fst) == -1) {
		snprintf(err, errlen, "cannot stat audit log %s: %s", a->path, strerror(errno));
		return -1;
	}
	if (stat(a->path, &pst) == -1 || pst.st_dev != fst.st_dev || pst.st_ino != fst.st_ino) {
		if (open_log(a, err, errlen) == -1 || fstat(a->fd, &fst) == -1)
			return -1;
	}
	*size = fst.st_size;
	if (a->head_known && fst.st_dev == a->dev && fst.st_ino == a->ino &&
	    fst.st_size == a->seen_size)
		return 0;
	rc = 1;
	if (*size > 0 && (rc = read_last_mac(a, size, hex, err, errlen)) == -1)
		return -1;
	if (rc == 0) {
		memcpy(a->head, hex, sizeof(hex));
	} else if (read_head_file(a->head_fd, hex) == 0) {
		/* An empty file: new after rotation, or cut by copytruncate. */
		memcpy(a->head, hex, sizeof(hex));
	} else if (!a->head_known) {
		strlcpy(a->head, GENESIS_HEX, sizeof(a->head));
	}
	a->head_known = 1;
	a->dev = fst.st_dev;
	a->ino = fst.st_ino;
	a->seen_size = *size;
	return 0;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
audit_append(struct audit *a, json_t *event, char *err, size_t errlen)
{
	return audit_append_many(a, &event, 1, NULL, err, errlen);
}

int
audit_append_many(struct audit *a, json_t *const *events, size_t n, size_t *written,
    char *err, size_t errlen)
{
	char prev[AUDIT_MAC_HEX + 1], mac[AUDIT_MAC_HEX + 1], *line, *buf = NULL, *grown;
	size_t len = 0, cap = 0, llen, i, done = 0;
	ssize_t w;
	off_t size = 0;
	int64_t ts;
	int rc = -1, saved;

	if (written != NULL)
		*written = 0;
	if (n == 0)
		return 0;
	if (n > AUDIT_BATCH_MAX) {
		snprintf(err, errlen, "audit: %zu events in one batch, at most %d", n,
		    AUDIT_BATCH_MAX);
		return -1;
	}
	if (a->forward != NULL)
		return audit_forward(a, events, n, written, err, errlen);
	if (lock_fd(a->head_fd, LOCK_EX) == -1) {
		snprintf(err, errlen, "cannot lock %s: %s", a->head_path, strerror(errno));
		return -1;
	}
	if (sync_with_file(a, &size, err, errlen) == -1)
		goto done;
	/* Each line links to the one before it; the batch to the chain head. */
	strlcpy(mac, a->head, sizeof(mac));
	ts = now_ms();
	for (i = 0; i < n; i++) {
		memcpy(prev, mac, sizeof(prev));
		if ((line = audit_line_build(a->key, prev, ts, events[i], mac, &llen, err,
		    errlen)) == NULL)
			goto done;
		if (len + llen > cap) {
			cap = 2 * (len + llen);
			if ((grown = realloc(buf, cap)) == NULL) {
				free(line);
				snprintf(err, errlen, "audit: out of memory");
				goto done;
			}
			buf = grown;
		}
		memcpy(buf + len, line, llen);
		len += llen;
		free(line);
	}
	/* One write (O_APPEND, under the lock); anything partial is cut off again. */
	while (done < len) {
		w = write(a->fd, buf + done, len - done);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1)
			goto undo;
		done += (size_t)w;
	}
	if (fdatasync(a->fd) == -1)
		goto undo;
	memcpy(a->head, mac, sizeof(mac));
	a->seen_size = size + (off_t)len;
	write_head_file(a);
	if (written != NULL)
		*written = n;
	rc = 0;
	goto done;
undo:
	saved = errno;
	snprintf(err, errlen, "cannot write audit log %s: %s", a->path, strerror(saved));
	if (done > 0 && (ftruncate(a->fd, size) == -1 || fdatasync(a->fd) == -1)) {
		log_err("audit: cannot remove a partial line from %s: %s", a->path,
		    strerror(errno));
		a->seen_size = -1;	/* the next append repairs it */
	}
done:
	(void)lock_fd(a->head_fd, LOCK_UN);
	free(buf);
	return rc;
}

/* ---- Reading lines ------------------------------------------------------ */

enum line_kind { LINE_EOF, LINE_OK, LINE_NO_NEWLINE, LINE_TOO_LONG, LINE_ERROR };

struct reader {
	int		fd;
	char		*buf;
	size_t		cap, start, end;
	uint64_t	off;		/* file offset of buf[start] */
	uint64_t	remain;		/* bytes we may still read */
	int		eof;
};

static int
reader_init(struct reader *r, int fd, uint64_t limit)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->remain = limit;
	r->cap = READER_CHUNK + AUDIT_LINE_MAX;
	return (r->buf = malloc(r->cap)) == NULL ? -1 : 0;
}

static void
reader_free(struct reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

/* Refill after the unconsumed bytes; returns -1 on a read error. */
static int
reader_fill(struct reader *r)
{
	size_t pending = r->end - r->start, want;
	ssize_t n;

	memmove(r->buf, r->buf + r->start, pending);
	r->start = 0;
	r->end = pending;
	want = r->cap - r->end;
	if (want > r->remain)
		want = (size_t)r->remain;
	if (want == 0) {
		r->eof = 1;
		return 0;
	}
	do {
		n = read(r->fd, r->buf + r->end, want);
	} while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if (n == 0)
		r->eof = 1;
	r->end += (size_t)n;
	r->remain -= (uint64_t)n;
	return 0;
}

/* The next line (without its newline) and its offset. A line longer than
 * AUDIT_LINE_MAX is skipped and reported as LINE_TOO_LONG. */
static enum line_kind
reader_next(struct reader *r, const char **line, size_t *len, uint64_t *off)
{
	uint64_t long_off = 0;
	char *nl;
	size_t n;
	int too_long = 0;

	for (;;) {
		nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		if (nl != NULL) {
			n = (size_t)(nl - (r->buf + r->start));
			*line = r->buf + r->start;
			*len = n;
			*off = too_long ? long_off : r->off;
			r->start += n + 1;
			r->off += n + 1;
			return too_long || n > AUDIT_LINE_MAX ? LINE_TOO_LONG : LINE_OK;
		}
		if (r->end - r->start > AUDIT_LINE_MAX) {
			/* Drop what we have and look for the end of this line. */
			if (!too_long)
				long_off = r->off;
			too_long = 1;
			r->off += r->end - r->start;
			r->start = r->end;
		}
		if (r->eof) {
			if (r->start == r->end && !too_long)
				return LINE_EOF;
			*line = r->buf + r->start;
			*len = r->end - r->start;
			*off = too_long ? long_off : r->off;
			r->off += *len;
			r->start = r->end;
			return too_long ? LINE_TOO_LONG : LINE_NO_NEWLINE;
		}
		if (reader_fill(r) == -1)
			return LINE_ERROR;
	}
}

/* ---- Verifying ---------------------------------------------------------- */

const char *
audit_fault_name(enum audit_fault f)
{
	static const char *const names[] = {
		[AUDIT_FAULT_NONE] = "ok",
		[AUDIT_FAULT_EDITED] = "edited",
		[AUDIT_FAULT_FORGED] = "inserted or forged",
		[AUDIT_FAULT_DELETED] = "deleted",
		[AUDIT_FAULT_REORDERED] = "reordered",
		[AUDIT_FAULT_TRUNCATED] = "truncated",
		[AUDIT_FAULT_MALFORMED] = "malformed",
		[AUDIT_FAULT_TOO_LONG] = "too long",
		[AUDIT_FAULT_LINK] = "broken link between files",
		[AUDIT_FAULT_TAIL] = "truncated at the end",
	};

	return (size_t)f < ARRAY_SIZE(names) ? names[f] : "unknown";
}

static void
set_fault(struct audit_verify *r, enum audit_fault f, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
set_fault(struct audit_verify *r, enum audit_fault f, uint64_t line, const char *fmt, ...)
{
	va_list ap;

	r->fault = f;
	r->line = line;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
}

/* Does the rest of the stream hold a line whose mac is hex? Its line number. */
static uint64_t
find_later_mac(struct reader *rd, uint64_t lineno, const char *hex)
{
	const char *line;
	size_t len;
	uint64_t off;
	enum line_kind k;

	while ((k = reader_next(rd, &line, &len, &off)) != LINE_EOF && k != LINE_ERROR) {
		lineno++;
		if (k == LINE_OK && len >= MAC_TAIL_LEN &&
		    memcmp(line + len - AUDIT_MAC_HEX - 2, hex, AUDIT_MAC_HEX) == 0)
			return lineno;
	}
	return 0;
}

/* The "prev" of the next line, read from its fixed place; -1 if none. */
static int
next_line_prev(struct reader *rd, char prev[AUDIT_MAC_HEX + 1])
{
	const char *line, *p;
	size_t len;
	uint64_t off;

	if (reader_next(rd, &line, &len, &off) != LINE_OK ||
	    len < MAC_TAIL_LEN + PREV_TAIL_LEN)
		return -1;
	p = line + len - MAC_TAIL_LEN - PREV_TAIL_LEN;
	if (memcmp(p, PREV_KEY, PREV_KEY_LEN) != 0 || !is_mac_hex(p + PREV_KEY_LEN))
		return -1;
	memcpy(prev, p + PREV_KEY_LEN, AUDIT_MAC_HEX);
	prev[AUDIT_MAC_HEX] = '\0';
	return 0;
}

/*
 * A line whose mac does not match. The next line tells an edit (it still
 * links to this line's mac) from an insertion (it links past this line).
 */
static void
classify_bad_mac(struct audit_verify *r, struct reader *rd, uint64_t n, int linked,
    const char *prev, const char *mac)
{
	char next_prev[AUDIT_MAC_HEX + 1];
	int have_next = next_line_prev(rd, next_prev) == 0;

	if (have_next && strcmp(next_prev, mac) == 0)
		set_fault(r, AUDIT_FAULT_EDITED, n, "the content does not match its mac and "
		    "line %" PRIu64 " still links to it: the entry was edited", n + 1);
	else if (have_next && linked && strcmp(next_prev, prev) == 0)
		set_fault(r, AUDIT_FAULT_FORGED, n, "the mac is invalid and line %" PRIu64
		    " links past this line to line %" PRIu64 ": this line was inserted", n + 1,
		    n - 1);
	else if (!linked)
		set_fault(r, AUDIT_FAULT_FORGED, n, "the mac is invalid and \"prev\" does not "
		    "link to line %" PRIu64 ": a line was inserted or forged", n - 1);
	else
		set_fault(r, AUDIT_FAULT_EDITED, n, "the content does not match its mac: the "
		    "entry was edited (or forged)");
}

/*
 * Check one line against the chain. prev_expected is the mac of the line
 * before (NULL for line 1 of a file checked on its own). Fills mac and ts.
 */
static void
verify_line(const unsigned char *key, const char *line, size_t len, uint64_t n,
    const char *prev_expected, struct audit_verify *r, struct reader *rd,
    char mac[AUDIT_MAC_HEX + 1], char prev[AUDIT_MAC_HEX + 1])
{
	char want[AUDIT_MAC_HEX + 1];
	const char *tail, *ptail, *ts, *objprev;
	json_t *obj = NULL;
	json_error_t jerr;
	uint64_t later;
	int linked;

	if (len < TS_PREFIX_LEN + AUDIT_TS_LEN + PREV_TAIL_LEN + MAC_TAIL_LEN ||
	    memcmp(line + len - MAC_TAIL_LEN, MAC_KEY, MAC_KEY_LEN) != 0 ||
	    !is_mac_hex(line + len - MAC_TAIL_LEN + MAC_KEY_LEN) ||
	    memcmp(line + len - 2, "\"}", 2) != 0) {
		set_fault(r, AUDIT_FAULT_MALFORMED, n, "the line does not end with a \"mac\" "
		    "field: not an audit entry (inserted, or damaged)");
		return;
	}
	tail = line + len - MAC_TAIL_LEN;
	memcpy(mac, tail + MAC_KEY_LEN, AUDIT_MAC_HEX);
	mac[AUDIT_MAC_HEX] = '\0';
	ptail = tail - PREV_TAIL_LEN;
	prev[0] = '\0';
	if (memcmp(ptail, PREV_KEY, PREV_KEY_LEN) == 0 && is_mac_hex(ptail + PREV_KEY_LEN) &&
	    ptail[PREV_KEY_LEN + AUDIT_MAC_HEX] == '"') {
		memcpy(prev, ptail + PREV_KEY_LEN, AUDIT_MAC_HEX);
		prev[AUDIT_MAC_HEX] = '\0';
	}
	linked = prev_expected == NULL || strcmp(prev, prev_expected) == 0;

	compute_mac(key, line, len - MAC_TAIL_LEN, want);
	if (sodium_memcmp(want, mac, AUDIT_MAC_HEX) != 0) {
		classify_bad_mac(r, rd, n, linked && prev[0] != '\0', prev, mac);
		return;
	}
	obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	ts = json_string_value(json_object_get(obj, "ts"));
	objprev = json_string_value(json_object_get(obj, "prev"));
	if (!json_is_object(obj) || ts == NULL || strlen(ts) != AUDIT_TS_LEN ||
	    json_string_value(json_object_get(obj, "event")) == NULL || prev[0] == '\0' ||
	    objprev == NULL || strcmp(objprev, prev) != 0) {
		set_fault(r, AUDIT_FAULT_MALFORMED, n, "the mac is valid but the line is not a "
		    "well-formed audit entry (%s)", obj == NULL ? jerr.text : "missing fields");
		goto done;
	}
	if (!linked) {
		if (n == 1) {
			set_fault(r, AUDIT_FAULT_LINK, n, "\"prev\" is not the last mac of the "
			    "previous file: entries are missing between the files, or the files "
			    "are given out of order");
		} else if ((later = find_later_mac(rd, n, prev)) != 0) {
			r->other_line = later;
			set_fault(r, AUDIT_FAULT_REORDERED, n, "\"prev\" does not match line %"
			    PRIu64 " but the mac of line %" PRIu64 ": lines were reordered",
			    n - 1, later);
		} else {
			set_fault(r, AUDIT_FAULT_DELETED, n, "\"prev\" does not match line %" PRIu64
			    ": a line was deleted before this one (or lines were reordered or "
			    "replayed)", n - 1);
		}
		goto done;
	}
	if (r->entries == 0)
		memcpy(r->first_ts, ts, AUDIT_TS_LEN + 1);
	memcpy(r->last_ts, ts, AUDIT_TS_LEN + 1);
done:
	json_decref(obj);
}

/* Sample the recorded head and the file size together, under the writers'
 * lock, so that a writer appending meanwhile cannot cause a false alarm. */
static int
sample_head(const char *path, int fd, char hex[AUDIT_MAC_HEX + 1], uint64_t *limit)
{
	char head_path[PATH_MAX];
	struct stat st;
	int hfd, rc = -1;

	if ((size_t)snprintf(head_path, sizeof(head_path), "%s%s", path, HEAD_SUFFIX) >=
	    sizeof(head_path) || (hfd = open(head_path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (lock_fd(hfd, LOCK_SH) == 0) {
		if (read_head_file(hfd, hex) == 0 && fstat(fd, &st) == 0) {
			*limit = (uint64_t)st.st_size;
			rc = 0;
		}
		(void)lock_fd(hfd, LOCK_UN);
	}
	close(hfd);
	return rc;
}

int
audit_verify_file(const char *path, const unsigned char key[AUDIT_KEY_BYTES],
    const char *expect_prev, int check_head, struct audit_verify *r, char *err,
    size_t errlen)
{
	struct reader rd = { .buf = NULL };
	char head[AUDIT_MAC_HEX + 1], mac[AUDIT_MAC_HEX + 1], prev[AUDIT_MAC_HEX + 1];
	char last_prev[AUDIT_MAC_HEX + 1] = "";
	const char *line;
	uint64_t n = 0, off, limit = UINT64_MAX;
	size_t len;
	enum line_kind k;
	int fd, is_stdin = strcmp(path, "-") == 0, have_head = 0, rc = -1;

	memset(r, 0, sizeof(*r));
	if (expect_prev != NULL)
		strlcpy(r->last_mac, expect_prev, sizeof(r->last_mac));
	if ((fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (check_head && !is_stdin && sample_head(path, fd, head, &limit) == 0)
		have_head = 1;
	if (reader_init(&rd, fd, limit) == -1) {
		snprintf(err, errlen, "audit: out of memory");
		goto done;
	}
	while (r->fault == AUDIT_FAULT_NONE &&
	    (k = reader_next(&rd, &line, &len, &off)) != LINE_EOF) {
		n++;
		if (k == LINE_ERROR) {
			snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
			goto done;
		}
		if (k == LINE_TOO_LONG) {
			set_fault(r, AUDIT_FAULT_TOO_LONG, n, "the line is longer than %d bytes",
			    AUDIT_LINE_MAX);
			break;
		}
		if (k == LINE_NO_NEWLINE) {
			set_fault(r, AUDIT_FAULT_TRUNCATED, n, "the last line ends without a "
			    "newline: the file was cut in the middle of a line");
			break;
		}
		verify_line(key, line, len, n, n == 1 ? expect_prev : r->last_mac, r, &rd,
		    mac, prev);
		if (r->fault != AUDIT_FAULT_NONE)
			break;
		if (n == 1) {
			memcpy(r->first_prev, prev, sizeof(prev));
			r->continues = strcmp(prev, GENESIS_HEX) != 0;
		}
		memcpy(last_prev, prev, sizeof(prev));
		memcpy(r->last_mac, mac, sizeof(mac));
		r->entries++;
	}
	if (r->fault == AUDIT_FAULT_NONE && have_head && r->entries > 0 &&
	    strcmp(head, r->last_mac) != 0) {
		if (strcmp(head, last_prev) == 0)
			r->head_lags = 1;
		else
			set_fault(r, AUDIT_FAULT_TAIL, n + 1, "the log ends at line %" PRIu64
			    " but the chain head recorded in %s%s is a later entry: lines were "
			    "removed from the end (or the head file belongs to another log)", n,
			    path, HEAD_SUFFIX);
	}
	rc = 0;
done:
	reader_free(&rd);
	if (!is_stdin)
		close(fd);
	return rc;
}

/* ---- Reading fields without a tree ------------------------------------- */

#define SCAN_DEPTH_MAX	8	/* nesting of arrays or objects skipped over */

/* After the opening quote of a string: the closing quote, or NULL. */
static const char *
skip_string(const char *p, const char *end)
{
	for (; p < end; p++) {
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p;
	}
	return NULL;
}

/* The end of the JSON value starting at p (one past it), or NULL. */
static const char *
skip_value(const char *p, const char *end)
{
	int depth = 0;

	if (p >= end)
		return NULL;
	if (*p != '"' && *p != '[' && *p != '{') {
		while (p < end && *p != ',' && *p != '}' && *p != ']')
			p++;
		return p;
	}
	for (; p < end; p++) {
		if (*p == '"') {
			if ((p = skip_string(p + 1, end)) == NULL)
				return NULL;
		} else if (*p == '[' || *p == '{') {
			if (++depth > SCAN_DEPTH_MAX)
				return NULL;
		} else if (*p == ']' || *p == '}') {
			depth--;
		}
		if (depth == 0)
			return p + 1;
	}
	return NULL;
}

int
audit_fields_scan(const char *line, size_t len, struct audit_fields *fs)
{
	const char *p = line, *end = line + len, *q;
	struct audit_field *f;

	fs->n = 0;
	if (len < 2 || *p++ != '{')
		return -1;
	if (*p == '}')
		return 0;
	for (;;) {
		if (p >= end || *p != '"' || (q = skip_string(p + 1, end)) == NULL ||
		    fs->n == AUDIT_FIELDS_MAX)
			return -1;
		f = &fs->f[fs->n++];
		f->key = p + 1;
		f->keylen = (size_t)(q - f->key);
		if (q + 1 >= end || q[1] != ':')
			return -1;
		f->val = q + 2;
		if ((p = skip_value(f->val, end)) == NULL || p >= end)
			return -1;
		f->vallen = (size_t)(p - f->val);
		if (*p == '}')
			return 0;
		if (*p++ != ',')
			return -1;
	}
}

static const struct audit_field *
field_find(const struct audit_fields *fs, const char *key)
{
	size_t i, kl = strlen(key);

	for (i = 0; i < fs->n; i++)
		if (fs->f[i].keylen == kl && memcmp(fs->f[i].key, key, kl) == 0)
			return &fs->f[i];
	return NULL;
}

static int
hex4(const char *p, uint32_t *out)
{
	uint32_t v = 0;
	int i, c;

	for (i = 0; i < 4; i++) {
		c = (unsigned char)p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v |= (uint32_t)((c | 0x20) - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* Decode the body of a JSON string (between its quotes) into UTF-8. */
static void
json_unescape(const char *s, size_t len, char *out, size_t outlen)
{
	const char *end = s + len;
	char u[4];
	size_t o = 0, k;
	uint32_t cp, lo;

	while (s < end) {
		if (*s != '\\') {
			cp = (unsigned char)*s++;
			u[0] = (char)cp;
			k = 1;
		} else {
			s++;
			if (s >= end)
				break;
			switch (*s++) {
			case 'b': cp = '\b'; break;
			case 'f': cp = '\f'; break;
			case 'n': cp = '\n'; break;
			case 'r': cp = '\r'; break;
			case 't': cp = '\t'; break;
			case 'u':
				if (end - s < 4 || hex4(s, &cp) == -1) {
					cp = 0xfffd;
					break;
				}
				s += 4;
				if (cp >= 0xd800 && cp <= 0xdbff && end - s >= 6 && s[0] == '\\' &&
				    s[1] == 'u' && hex4(s + 2, &lo) == 0 && lo >= 0xdc00 &&
				    lo <= 0xdfff) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					s += 6;
				} else if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0) {
					cp = 0xfffd;
				}
				break;
			default:
				cp = (unsigned char)s[-1];	/* \" \\ \/ */
				break;
			}
			if (cp < 0x80) {
				u[0] = (char)cp;
				k = 1;
			} else if (cp < 0x800) {
				u[0] = (char)(0xc0 | cp >> 6);
				u[1] = (char)(0x80 | (cp & 0x3f));
				k = 2;
			} else if (cp < 0x10000) {
				u[0] = (char)(0xe0 | cp >> 12);
				u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
				u[2] = (char)(0x80 | (cp & 0x3f));
				k = 3;
			} else {
				u[0] = (char)(0xf0 | cp >> 18);
				u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
				u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
				u[3] = (char)(0x80 | (cp & 0x3f));
				k = 4;
			}
		}
		if (o + k >= outlen)
			break;
		memcpy(out + o, u, k);
		o += k;
	}
	out[o] = '\0';
}

int
audit_fields_get(const struct audit_fields *fs, const char *key, size_t idx, char *out,
    size_t outlen)
{
	const struct audit_field *f = field_find(fs, key);
	const char *p, *end, *q;
	size_t i;

	if (outlen == 0 || f == NULL || f->vallen == 0)
		return -1;
	p = f->val;
	end = f->val + f->vallen;
	if (*p == '"' && idx == 0) {
		json_unescape(p + 1, f->vallen - 2, out, outlen);
		return 0;
	}
	if (*p == '-' || (*p >= '0' && *p <= '9')) {
		if (idx != 0 || f->vallen >= outlen)
			return -1;
		memcpy(out, p, f->vallen);
		out[f->vallen] = '\0';
		return 0;
	}
	if (*p != '[')
		return -1;
	for (p++, i = 0; p < end && *p == '"'; i++) {
		if ((q = skip_string(p + 1, end)) == NULL)
			return -1;
		if (i == idx) {
			json_unescape(p + 1, (size_t)(q - p - 1), out, outlen);
			return 0;
		}
		p = q + 1;
		if (p < end && *p == ',')
			p++;
	}
	return -1;
}

size_t
audit_fields_count(const struct audit_fields *fs, const char *key)
{
	const struct audit_field *f = field_find(fs, key);
	const char *p, *end, *q;
	size_t n = 0;

	if (f == NULL || f->vallen < 2 || f->val[0] != '[')
		return 0;
	end = f->val + f->vallen;
	for (p = f->val + 1; p < end && *p == '"'; n++) {
		if ((q = skip_string(p + 1, end)) == NULL)
			break;
		p = q + 1;
		if (p < end && *p == ',')
			p++;
	}
	return n;
}

/* ---- Querying ----------------------------------------------------------- */

#define TERM_KEYS_MAX	2

/* One string filter: the field(s) it looks at and how its value must look
 * in the raw line (escaped as the writer escapes it, lower-cased). */
struct term {
	const char	*pattern;
	int		glob;
	const char	*fields[TERM_KEYS_MAX];
	char		keys[TERM_KEYS_MAX][32];	/* "\"account\":\"" */
	size_t		keylens[TERM_KEYS_MAX];
	size_t		n_keys;
	char		*needle;	/* exact: the whole escaped value; glob: a literal run */
	size_t		needle_len;
};

struct query {
	const struct audit_filter *f;
	char		since[AUDIT_TS_LEN + 1];
	char		until[AUDIT_TS_LEN + 1];
	struct term	terms[5];
	size_t		n_terms;
	int		has_glob;
};

/* Case-insensitive (ASCII) search; needle is lower case. */
static const char *
memcasemem(const char *h, size_t hl, const char *needle, size_t nl)
{
	unsigned char c0;
	size_t i, j;

	if (nl == 0)
		return h;
	c0 = (unsigned char)needle[0];
	for (i = 0; i + nl <= hl; i++) {
		if ((unsigned char)tolower((unsigned char)h[i]) != c0)
			continue;
		for (j = 1; j < nl; j++)
			if (tolower((unsigned char)h[i + j]) != (unsigned char)needle[j])
				break;
		if (j == nl)
			return h + i;
	}
	return NULL;
}

/* s (len bytes) as the writer would escape it inside a string, lower-cased. */
static char *
escape_for_scan(const char *s, size_t len, size_t *outlen)
{
	json_t *j;
	char *d, *out = NULL;
	size_t n, i;

	if ((j = audit_string(s, len)) == NULL)
		return NULL;
	d = json_dumps(j, AUDIT_JSON_FLAGS | JSON_ENCODE_ANY);
	json_decref(j);
	if (d == NULL)
		return NULL;
	n = strlen(d);
	if (n >= 2 && (out = malloc(n - 1)) != NULL) {
		for (i = 0; i + 2 < n; i++)
			out[i] = (char)tolower((unsigned char)d[i + 1]);
		out[n - 2] = '\0';
		*outlen = n - 2;
	}
	free(d);
	return out;
}

static int
term_add(struct query *q, const char *pattern, const char *f1, const char *f2)
{
	struct term *t = &q->terms[q->n_terms];
	const char *p, *best = pattern, *run;
	size_t best_len = 0, i;

	if (pattern == NULL)
		return 0;
	memset(t, 0, sizeof(*t));
	t->pattern = pattern;
	t->glob = strpbrk(pattern, GLOB_CHARS) != NULL;
	t->fields[0] = f1;
	t->fields[1] = f2;
	t->n_keys = f2 != NULL ? 2 : 1;
	for (i = 0; i < t->n_keys; i++)
		t->keylens[i] = (size_t)snprintf(t->keys[i], sizeof(t->keys[i]), "\"%s\":\"",
		    t->fields[i]);
	if (t->glob) {
		/* The longest run without glob syntax must appear in the value. */
		for (p = pattern; *p != '\0'; ) {
			run = p;
			while (*p != '\0' && strchr(GLOB_CHARS "]\\", *p) == NULL)
				p++;
			if ((size_t)(p - run) > best_len) {
				best = run;
				best_len = (size_t)(p - run);
			}
			if (*p != '\0')
				p++;
		}
	} else {
		best_len = strlen(pattern);
	}
	if ((t->needle = escape_for_scan(best, best_len, &t->needle_len)) == NULL)
		return -1;
	q->has_glob |= t->glob;
	q->n_terms++;
	return 0;
}

/* The raw value of "key":"..." in line, without parsing: up to the closing
 * quote that is not escaped. */
static int
raw_value(const char *line, size_t len, const char *key, size_t keylen, const char **v,
    size_t *vlen)
{
	const char *p = memmem(line, len, key, keylen), *end = line + len, *q;

	if (p == NULL)
		return -1;
	for (q = p + keylen; q < end && *q != '"'; q++) {
		if (*q == '\\')
			q++;
	}
	if (q >= end)
		return -1;
	*v = p + keylen;
	*vlen = (size_t)(q - *v);
	return 0;
}

/* Could this line match the term? Never says no to a line that matches. */
static int
term_prefilter(const struct term *t, const char *line, size_t len)
{
	const char *v;
	size_t i, vlen;

	for (i = 0; i < t->n_keys; i++) {
		if (raw_value(line, len, t->keys[i], t->keylens[i], &v, &vlen) == -1)
			continue;
		if (t->glob ? memcasemem(v, vlen, t->needle, t->needle_len) != NULL :
		    vlen == t->needle_len && strncasecmp(v, t->needle, vlen) == 0)
			return 1;
	}
	return 0;
}

/* The exact check for a glob term, on the decoded value. */
static int
term_match(const struct term *t, const struct audit_fields *fs)
{
	char v[AUDIT_FIELD_MAX + 1];
	size_t i;

	for (i = 0; i < t->n_keys; i++) {
		if (audit_fields_get(fs, t->fields[i], 0, v, sizeof(v)) == 0 &&
		    fnmatch(t->pattern, v, FNM_CASEFOLD) == 0)
			return 1;
	}
	return 0;
}

/* The cheap checks: time window on the fixed-place ts, then the raw scan.
 * Returns 1 candidate, 0 no, -1 not a line of this format. */
static int
line_prefilter(const struct query *q, const char *line, size_t len)
{
	const char *ts = line + TS_PREFIX_LEN;
	size_t i;

	if (len < TS_PREFIX_LEN + AUDIT_TS_LEN + 1 || memcmp(line, TS_PREFIX, TS_PREFIX_LEN) != 0 ||
	    ts[AUDIT_TS_LEN - 1] != 'Z' || ts[AUDIT_TS_LEN] != '"')
		return -1;
	/* Fixed-width UTC times compare as strings. */
	if (q->f->has_since && memcmp(ts, q->since, AUDIT_TS_LEN) < 0)
		return 0;
	if (q->f->has_until && memcmp(ts, q->until, AUDIT_TS_LEN) > 0)
		return 0;
	for (i = 0; i < q->n_terms; i++)
		if (!term_prefilter(&q->terms[i], line, len))
			return 0;
	return 1;
}

/*
 * An exact term's raw comparison is already exact (the value is compared in
 * the writer's own escaping); glob terms are checked again on the decoded
 * values. Returns 1 match, 0 no, -1 not a line of this format.
 */
static int
line_confirm(const struct query *q, const char *line, size_t len)
{
	struct audit_fields fs;
	size_t i;

	if (!q->has_glob)
		return 1;
	if (audit_fields_scan(line, len, &fs) == -1)
		return -1;
	for (i = 0; i < q->n_terms; i++)
		if (q->terms[i].glob && !term_match(&q->terms[i], &fs))
			return 0;
	return 1;
}

/* The newest limit matches, kept as copies of their lines. */
struct ring_entry {
	char		*line;
	size_t		len, cap;
	uint64_t	off;
};

struct ring {
	struct ring_entry *e;
	size_t		n, cap, next, limit;
};

static int
ring_push(struct ring *r, const char *line, size_t len, uint64_t off)
{
	struct ring_entry *slot, *ne;
	size_t ncap;
	char *nl;

	if (r->n < r->limit) {
		if (r->n == r->cap) {
			ncap = r->cap == 0 ? 64 : r->cap * 2;
			if (ncap > r->limit)
				ncap = r->limit;
			if ((ne = reallocarray(r->e, ncap, sizeof(*ne))) == NULL)
				return -1;
			memset(ne + r->cap, 0, (ncap - r->cap) * sizeof(*ne));
			r->e = ne;
			r->cap = ncap;
		}
		slot = &r->e[r->n++];
	} else {
		slot = &r->e[r->next];
		r->next = (r->next + 1) % r->limit;
	}
	if (slot->cap < len) {
		if ((nl = realloc(slot->line, len)) == NULL)
			return -1;
		slot->line = nl;
		slot->cap = len;
	}
	memcpy(slot->line, line, len);
	slot->len = len;
	slot->off = off;
	return 0;
}

static void
ring_free(struct ring *r)
{
	size_t i;

	for (i = 0; i < r->cap; i++)
		free(r->e[i].line);
	free(r->e);
}

static int
query_init(struct query *q, const struct audit_filter *f, char *err, size_t errlen)
{
	memset(q, 0, sizeof(*q));
	q->f = f;
	if ((f->has_since && format_ts((int64_t)f->since * 1000, q->since) == -1) ||
	    (f->has_until && format_ts((int64_t)f->until * 1000 + 999, q->until) == -1)) {
		snprintf(err, errlen, "audit: time out of range");
		return -1;
	}
	if (term_add(q, f->event, "event", NULL) == -1 ||
	    term_add(q, f->status, "status", NULL) == -1 ||
	    term_add(q, f->account, "account", NULL) == -1 ||
	    term_add(q, f->sender, "mail_from", NULL) == -1 ||
	    term_add(q, f->client, "client_name", "client_ip") == -1) {
		snprintf(err, errlen, "audit: out of memory");
		return -1;
	}
	return 0;
}

static void
query_free(struct query *q)
{
	size_t i;

	for (i = 0; i < q->n_terms; i++)
		free(q->terms[i].needle);
}

/* Hand one match to the callback, parsed unless the caller reads raw lines. */
static int
deliver(const struct audit_filter *f, audit_match_cb *cb, void *arg, const char *line,
    size_t len, uint64_t off, struct audit_query_stats *st)
{
	json_t *obj = NULL;
	int rc;

	if (!f->raw_only && (obj = json_loadb(line, len, 0, NULL)) == NULL) {
		st->skipped++;
		return 0;
	}
	rc = cb(arg, line, len, off, obj);
	json_decref(obj);
	return rc;
}

int
audit_query(const char *path, const struct audit_filter *f, audit_match_cb *cb, void *arg,
    struct audit_query_stats *stats, char *err, size_t errlen)
{
	struct query q;
	struct reader rd = { .buf = NULL };
	struct ring ring = { .limit = f->limit };
	struct audit_query_stats st = { 0 };
	struct ring_entry *e;
	const char *line;
	uint64_t off;
	size_t len, i;
	enum line_kind k;
	int fd = -1, rc = -1, m;

	if (query_init(&q, f, err, errlen) == -1)
		goto done;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "cannot open audit log %s: %s", path, strerror(errno));
		goto done;
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (reader_init(&rd, fd, f->before != 0 ? f->before : UINT64_MAX) == -1)
		goto oom;
	while ((k = reader_next(&rd, &line, &len, &off)) != LINE_EOF) {
		if (k == LINE_ERROR) {
			snprintf(err, errlen, "cannot read audit log %s: %s", path, strerror(errno));
			goto done;
		}
		st.lines++;
		/* A last line without a newline is an append in progress. */
		if (k == LINE_NO_NEWLINE)
			continue;
		if (k == LINE_TOO_LONG || (m = line_prefilter(&q, line, len)) == -1 ||
		    (m == 1 && (m = line_confirm(&q, line, len)) == -1)) {
			st.skipped++;
			continue;
		}
		if (m == 0)
			continue;
		st.matched++;
		if (f->limit != 0) {
			if (ring_push(&ring, line, len, off) == -1)
				goto oom;
		} else if (deliver(f, cb, arg, line, len, off, &st) == -1) {
			snprintf(err, errlen, "audit: output failed");
			goto done;
		}
	}
	for (i = 0; i < ring.n; i++) {
		e = &ring.e[(ring.n < ring.limit ? i : (ring.next + i) % ring.limit)];
		if (deliver(f, cb, arg, e->line, e->len, e->off, &st) == -1) {
			snprintf(err, errlen, "audit: output failed");
			goto done;
		}
	}
	rc = 0;
	goto done;
oom:
	snprintf(err, errlen, "audit: out of memory");
done:
	ring_free(&ring);
	reader_free(&rd);
	query_free(&q);
	if (fd != -1)
		close(fd);
	if (stats != NULL)
		*stats = st;
	return rc;
}
