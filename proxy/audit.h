/*
 * audit.h: the tamper-evident audit log of SPEC section 7: who sent what,
 * through which account, and what the upstream said; account, admin and
 * vault actions. Writer, verifier and query engine.
 *
 * Format. JSON Lines, one event per line, ASCII only. Each line is a JSON
 * object whose first key is "ts" (RFC 3339 UTC with milliseconds, always 24
 * characters: "2026-11-26T05:40:56.123Z"), then "event" and the event's
 * fields, then "prev" (the previous line's mac, 64 lowercase hex digits; 64
 * zeros for the very first line of a new log), then "mac" last:
 *
 *   {"ts":"...","event":"message",...,"prev":"<64 hex>","mac":"<64 hex>"}\n
 *
 * S = the object without "mac", serialised by jansson with JSON_COMPACT |
 * JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII (so CR, LF, quotes and non-ASCII
 * in client text are escaped and a line can never be split or forged by its
 * content). mac = keyed BLAKE2b-256 (crypto_generichash) of exactly the bytes
 * of S, keyed with vault_derive_audit_key(). The line written is S without
 * its final '}' followed by ,"mac":"<hex>"} and a newline. A verifier
 * recomputes the mac over the line minus that fixed suffix plus '}'.
 *
 * Writers. Several processes (the daemon and CLI commands) may append to the
 * same log. Appends are serialised with an exclusive flock on "<path>.head",
 * a small side file that also records the current chain head (the last mac
 * written). The side file is never rotated, so the chain continues across
 * logrotate "create" (the writer notices the renamed file and reopens, or is
 * told by SIGHUP through audit_reopen), "copytruncate" (the file shrinks),
 * and restarts: the first line of a new file links to the last of the old.
 * Lines written between logrotate's copy and its truncate are lost (that is
 * copytruncate's nature) and audit verify reports the gap.
 *
 * Every function returns 0 on success and -1 on failure with one
 * human-readable line in err. When audit_append() fails nothing was added
 * (a partial line is cut off again) and the chain head does not move: the
 * caller must then refuse the action it wanted to record (SMTP 451 4.3.0,
 * HTTP 503, exit status 1).
 *
 * Never put a secret, an AUTH payload, a password or a message body into an
 * event. Client-supplied text goes through audit_set_str()/audit_set_strn(),
 * which repair invalid UTF-8 (each bad byte becomes U+FFFD) and bound its
 * length, so a hostile byte can never make an event unwritable.
 */
#ifndef SMTPVAULT_AUDIT_H
#define SMTPVAULT_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#define AUDIT_KEY_BYTES		32	/* == VAULT_KEY_BYTES */
#define AUDIT_MAC_BYTES		32
#define AUDIT_MAC_HEX		(2 * AUDIT_MAC_BYTES)	/* 64 hex digits */
#define AUDIT_TS_LEN		24	/* "2026-11-26T05:40:56.123Z" */
#define AUDIT_LINE_MAX		(1024 * 1024)	/* longest line written or read */
#define AUDIT_FIELD_MAX		2048	/* longest string field, bytes; longer is cut, "..." */
#define AUDIT_JSON_FLAGS	(JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII)

/* ---- Events -------------------------------------------------------------
 *
 * Field vocabulary (every event also has "ts", "event", "prev", "mac"):
 *
 * message	queue_id, client_ip, client_name, helo, mail_from, rcpt_to[],
 *		header_from, subject (null when log_subject = no), message_id,
 *		size, account, credential_version, status, upstream_reply,
 *		attempt, duration_ms. Unknown values are null; all keys are
 *		always present. Queue mode: one "queued" event (attempt 0) when
 *		the message is spooled, then one per delivery attempt (attempt
 *		1, 2, ...). Direct mode: one event with the final status.
 * reject	client_ip, client_name, reason, command: a connection or a
 *		command refused before a message exists (untrusted client,
 *		refused sender, rate limit, too many recipients). Callers may
 *		add helo / mail_from with audit_set_str().
 * account	action, account, version, by, ip: by is "cli:<unix user>",
 *		"admin:<admin user>" or "daemon"; ip is the admin client's
 *		address or null. auth_failed adds upstream_reply.
 * admin	action, user, ip, by (user_add / user_remove: who did it).
 * vault	action (init, rekey), by.
 */

enum audit_status {
	AUDIT_STATUS_QUEUED,		/* spooled, 250 given to the client */
	AUDIT_STATUS_DELIVERED,		/* upstream accepted it */
	AUDIT_STATUS_DEFERRED,		/* upstream 4xx or network error, will retry */
	AUDIT_STATUS_FAILED,		/* upstream 5xx, or queue lifetime exceeded */
	AUDIT_STATUS_REJECTED,		/* we refused the message at end of DATA */
};

enum audit_account_action {
	AUDIT_ACCOUNT_ADD,
	AUDIT_ACCOUNT_ROTATE,
	AUDIT_ACCOUNT_ROLLBACK,
	AUDIT_ACCOUNT_REMOVE,
	AUDIT_ACCOUNT_AUTH_FAILED,	/* the upstream refused the credential */
};

enum audit_admin_action {
	AUDIT_ADMIN_LOGIN,
	AUDIT_ADMIN_LOGOUT,
	AUDIT_ADMIN_LOGIN_FAILED,
	AUDIT_ADMIN_USER_ADD,
	AUDIT_ADMIN_USER_REMOVE,
};

enum audit_vault_action {
	AUDIT_VAULT_INIT,
	AUDIT_VAULT_REKEY,
};

/* Everything a message event records; NULL strings and zero numbers where
 * marked become JSON null. Strings are client text and are sanitised. */
struct audit_message {
	const char		*queue_id;
	const char		*client_ip;
	const char		*client_name;	/* [client] name, "lan" for trusted_networks */
	const char		*helo;
	const char		*mail_from;	/* "" for the null sender */
	const char *const	*rcpt_to;	/* n_rcpt_to entries */
	size_t			n_rcpt_to;
	const char		*header_from;
	const char		*subject;	/* NULL when log_subject = no */
	const char		*message_id;
	uint64_t		size;		/* bytes */
	const char		*account;
	uint32_t		credential_version;	/* 0: none used (null) */
	enum audit_status	status;
	const char		*upstream_reply;	/* full reply, all lines */
	uint32_t		attempt;	/* 0 for "queued" */
	uint64_t		duration_ms;
};

const char	*audit_status_name(enum audit_status st);

/* Constructors: a new object with "event" first, or NULL when out of memory.
 * The caller owns the result and json_decref()s it after audit_append(). */
json_t	*audit_event_new(const char *event);
json_t	*audit_message_event(const struct audit_message *m);
json_t	*audit_reject_event(const char *client_ip, const char *client_name,
	    const char *reason, const char *command);
json_t	*audit_account_event(enum audit_account_action action, const char *account,
	    uint32_t version, const char *by, const char *ip);
json_t	*audit_admin_event(enum audit_admin_action action, const char *user,
	    const char *ip, const char *by);
json_t	*audit_vault_event(enum audit_vault_action action, const char *by);

/*
 * Set a string field from untrusted bytes: invalid UTF-8 and NUL become
 * U+FFFD, more than AUDIT_FIELD_MAX bytes are cut at a character boundary
 * and end in "...". NULL sets JSON null. Returns 0 or -1 (out of memory).
 */
int	audit_set_str(json_t *obj, const char *key, const char *s);
int	audit_set_strn(json_t *obj, const char *key, const char *s, size_t len);
int	audit_set_int(json_t *obj, const char *key, int64_t v);
/* A sanitised JSON string (never NULL unless out of memory). */
json_t	*audit_string(const char *s, size_t len);

/* ---- Writing ------------------------------------------------------------- */

struct audit;

/* Open (creating, mode 0600) the log and its "<path>.head" side file. The key
 * is copied into guarded memory. Nothing is read until the first append. */
struct audit *audit_open(const char *path, const unsigned char key[AUDIT_KEY_BYTES],
	    char *err, size_t errlen);

/*
 * Append one event (borrowed; must hold a string "event" and none of the
 * keys "ts", "prev", "mac"), durably: the line is fsync'd before this
 * returns 0. On -1 nothing was added and the chain head is unchanged.
 * Blocks for one flock and one fdatasync (milliseconds on a real disk).
 */
int	audit_append(struct audit *a, json_t *event, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * Append events[0..n-1] in this order as one batch: one flock, one write and
 * one fdatasync for all of them, so that a writer with many events at once
 * (the spool's group commit) pays for one disk flush, not n. Returns 0 when
 * every event is durable. On -1, *written (may be NULL) says how many of the
 * first events are durable all the same: a file writer adds all or none of
 * the batch (so 0); a forwarder hands a large batch on in parts of at most
 * AUDIT_FORWARD_MAX bytes, each all or none. At most AUDIT_BATCH_MAX events.
 */
#define AUDIT_BATCH_MAX		256
int	audit_append_many(struct audit *a, json_t *const *events, size_t n, size_t *written,
	    char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * A writer that owns no file: each append hands its events to forward() (the
 * keeper, which owns the log and its key) as compact JSON texts, one a line,
 * joined by '\n' with no final newline (one event: just its text), at most
 * AUDIT_FORWARD_MAX bytes at once unless a single event is larger; and
 * audit_reopen() calls reopen(). Both return 0 or -1 with err; forward()
 * makes all the events it was given durable, or none of them.
 */
#define AUDIT_FORWARD_MAX	(96 * 1024)
typedef int audit_forward_fn(void *arg, const char *json, size_t len, char *err,
	    size_t errlen);
typedef int audit_reopen_fn(void *arg, char *err, size_t errlen);
/* release (may be NULL) is called with arg by audit_close(). */
struct audit *audit_forwarder(audit_forward_fn *forward, audit_reopen_fn *reopen,
	    void (*release)(void *arg), void *arg);

/* Reopen the path (SIGHUP after logrotate). Appends also notice a renamed or
 * removed file by themselves, so this is an optimisation, not a duty. */
int	audit_reopen(struct audit *a, char *err, size_t errlen);

/* Sync the head file, close, wipe the key. NULL is fine. */
void	audit_close(struct audit *a);

/* The chain head this writer last wrote or saw (64 hex + NUL). */
const char *audit_head(const struct audit *a);

/*
 * The line format, exposed for tests and the benchmark generator: build the
 * line (with its newline) for event at ts_ms (milliseconds since the epoch)
 * linked to prev_hex (64 hex). Returns malloc'd memory (free()) and fills
 * mac_hex (65 bytes) and *len, or NULL with err.
 */
char	*audit_line_build(const unsigned char key[AUDIT_KEY_BYTES], const char *prev_hex,
	    int64_t ts_ms, json_t *event, char mac_hex[AUDIT_MAC_HEX + 1], size_t *len,
	    char *err, size_t errlen);

/* ---- Verifying ----------------------------------------------------------- */

enum audit_fault {
	AUDIT_FAULT_NONE,
	AUDIT_FAULT_EDITED,	/* mac mismatch, prev links correctly */
	AUDIT_FAULT_FORGED,	/* mac mismatch and prev does not link: inserted or forged */
	AUDIT_FAULT_DELETED,	/* valid mac, prev is not line N-1's mac */
	AUDIT_FAULT_REORDERED,	/* valid mac, prev is the mac of a later line */
	AUDIT_FAULT_TRUNCATED,	/* the last line has no newline (cut mid-line) */
	AUDIT_FAULT_MALFORMED,	/* not a line of this format */
	AUDIT_FAULT_TOO_LONG,	/* longer than AUDIT_LINE_MAX */
	AUDIT_FAULT_LINK,	/* line 1 does not continue the previous file */
	AUDIT_FAULT_TAIL,	/* the recorded chain head is missing: lines were cut off the end */
};

struct audit_verify {
	uint64_t	entries;		/* lines checked and found good */
	char		first_ts[AUDIT_TS_LEN + 1];
	char		last_ts[AUDIT_TS_LEN + 1];
	char		first_prev[AUDIT_MAC_HEX + 1];	/* where this file's chain starts */
	char		last_mac[AUDIT_MAC_HEX + 1];	/* where it ends (prev when empty) */
	int		continues;		/* line 1 links to an earlier (rotated) file */
	int		head_lags;		/* head file is one entry behind (a writer died) */
	enum audit_fault fault;
	uint64_t	line;			/* first bad line, 1-based */
	uint64_t	other_line;		/* REORDERED: the line whose mac this prev is */
	char		why[256];		/* one sentence for humans */
};

const char *audit_fault_name(enum audit_fault f);

/*
 * Walk the chain of one file ("-" is stdin). expect_prev: the last mac of the
 * previous file when several are checked in order, else NULL (any start is
 * accepted and reported in r->continues). check_head: compare the end of
 * the file with "<path>.head" when that exists (detects lines cut off the
 * end). Returns 0 when the file could be read (r->fault tells whether it is
 * intact), -1 on an I/O error.
 */
int	audit_verify_file(const char *path, const unsigned char key[AUDIT_KEY_BYTES],
	    const char *expect_prev, int check_head, struct audit_verify *r,
	    char *err, size_t errlen);

/* ---- Querying ------------------------------------------------------------ */

/*
 * A filter. String patterns are matched case-insensitively (ASCII); one
 * containing '*', '?' or '[' is a shell glob ("*@example.com"). NULL matches
 * everything. client matches client_name or client_ip.
 */
struct audit_filter {
	int		has_since, has_until;
	time_t		since;		/* inclusive */
	time_t		until;		/* inclusive, to the end of that second */
	const char	*account;
	const char	*client;
	const char	*sender;	/* mail_from */
	const char	*status;
	const char	*event;
	size_t		limit;		/* 0: all; else only the newest limit matches */
	uint64_t	before;		/* 0: whole file; else lines starting before this offset */
	int		raw_only;	/* the callback reads the line itself: obj is NULL */
};

struct audit_query_stats {
	uint64_t	lines;		/* lines looked at */
	uint64_t	matched;
	uint64_t	skipped;	/* malformed or too long lines ignored */
};

/* Called for each match in file order with the line (no newline; valid JSON
 * as it stands), its byte offset (a cursor for the next page: pass it as
 * before) and the parsed object (borrowed; NULL with raw_only). Return 0 to
 * go on, -1 to stop with an error. */
typedef int audit_match_cb(void *arg, const char *line, size_t len, uint64_t offset,
	    json_t *obj);

/* Scan path without verifying macs; fast: the time window is checked on the
 * fixed-position "ts", other fields by a targeted scan before any parsing. */
int	audit_query(const char *path, const struct audit_filter *f, audit_match_cb *cb,
	    void *arg, struct audit_query_stats *stats, char *err, size_t errlen);

/*
 * Reading fields of one line without building a JSON tree, for listings of
 * many lines. The line must be a flat object as this module writes it.
 */
#define AUDIT_FIELDS_MAX	48

struct audit_field {
	const char	*key;		/* raw, without quotes */
	size_t		keylen;
	const char	*val;		/* raw JSON text of the value */
	size_t		vallen;
};

struct audit_fields {
	struct audit_field f[AUDIT_FIELDS_MAX];
	size_t		n;
};

/* Index the top-level keys of line; -1 when it is not such an object. */
int	audit_fields_scan(const char *line, size_t len, struct audit_fields *fs);
/*
 * The value of key decoded into out (UTF-8, NUL-terminated, cut at a
 * character boundary to fit): a string, the idx-th string of an array of
 * strings, or the text of a number. -1 when missing, null or another type.
 */
int	audit_fields_get(const struct audit_fields *fs, const char *key, size_t idx,
	    char *out, size_t outlen);
/* The number of elements of an array field; 0 when missing or not an array. */
size_t	audit_fields_count(const struct audit_fields *fs, const char *key);

#endif
