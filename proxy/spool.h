/*
 * spool.h: the queue's files on disk (delivery = queue). One public header
 * for the file format (spool_format.c: pure encoding and bounded parsing)
 * and the file operations (spool.c: atomic writes, moves, scans, the lock).
 *
 * Layout under [smtp] spool_dir:
 *
 *   lock            flock()ed by the daemon for its whole life, and by the
 *                   CLI while it changes files without a daemon
 *   control.sock    the daemon's control socket (queue_ctl.c), mode 0600
 *   sent.log        what was sent in the last 24 hours (quota.c)
 *   queue/ID        a message waiting for delivery: envelope, then the bytes
 *   queue/ID.st     its delivery state, once it has one (attempts, ...)
 *   failed/ID(.st)  messages that failed for good or expired: kept for the
 *                   operator to inspect, retry or delete
 *   corrupt/        files that could not be parsed, moved aside
 *   .../.ID*.tmp    a write in progress; discarded at start-up (nobody was
 *                   told "queued" for it)
 *
 * A message file is written to a temporary name, fsync'd, renamed into
 * place, and the directory fsync'd before the client hears "250 ... queued
 * as ID". It is never changed afterwards; what changes (attempts, next
 * attempt, last reply, which recipients are done) lives in the small state
 * file, replaced atomically the same way. A message and its state move
 * between queue/ and failed/ together: the state is written first (it says
 * where the message belongs), then the message is renamed, then the state;
 * start-up recovery finishes a move that a crash interrupted.
 *
 * Message file ("envelope"): text lines "key value\n", values %XX-escaped
 * (every byte outside 0x21..0x7e, and '%'), so that no value can contain a
 * space, a line end or a NUL; a blank line; then exactly `size` bytes of
 * message (CRLF line ends, as the session stored it):
 *
 *   SMTPVAULT-SPOOL 1
 *   id 0123456789ABCDEF
 *   account team@example.com
 *   from alice@example.com        ("from" with an empty value: <>)
 *   rcpt bob@example.org          (one line per recipient, in order)
 *   client-ip 10.0.5.7
 *   client-name monitoring
 *   helo printer.lan
 *   received 1764136856
 *   body-8bit 0
 *   smtputf8 0
 *   header-from / subject / message-id   (optional, for the audit log)
 *   size 4096
 *
 * State file: "SMTPVAULT-STATE 1", then attempts, next (unix time, 0 =
 * now), last (time of the last attempt), since (the queue lifetime counts
 * from here; 0 = received), failed (0/1), reply (the last upstream reply)
 * and done (hex bitmap of recipients already delivered, when any).
 *
 * Nothing secret is ever written here: the spool holds messages, never a
 * credential.
 */
#ifndef SMTPVAULT_SPOOL_H
#define SMTPVAULT_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "relay.h"

struct evbuffer;

#define SPOOL_MAGIC		"SMTPVAULT-SPOOL 1"
#define SPOOL_STATE_MAGIC	"SMTPVAULT-STATE 1"
#define SPOOL_ID_MAX		RELAY_QUEUE_ID_MAX	/* with its NUL */
#define SPOOL_RCPTS_MAX		10000		/* == the max_recipients maximum */
#define SPOOL_VALUE_MAX		2048		/* longest decoded value */
#define SPOOL_LINE_MAX		(3 * SPOOL_VALUE_MAX + 32)	/* longest encoded line */
#define SPOOL_HEADER_MAX	(8 * 1024 * 1024)	/* envelope, all lines */
#define SPOOL_BODY_MAX		((uint64_t)1024 * 1024 * 1024 + 1024 * 1024)
					/* max_message_size maximum + Received: */
#define SPOOL_STATE_MAX		(64 * 1024)	/* a whole state file */
#define SPOOL_REPLY_MAX		SPOOL_VALUE_MAX	/* kept last reply */
#define SPOOL_READ_CHUNK	(64 * 1024)

enum spool_area {
	SPOOL_QUEUE,
	SPOOL_FAILED,
	SPOOL_CORRUPT,
	SPOOL_AREAS
};

/* What the envelope records beyond struct relay_msg. */
struct spool_meta {
	time_t			received;
	uint64_t		size;		/* message bytes */
	struct relay_fields	fields;		/* malloc'd strings or NULL */
};

/* The mutable part. last_reply and done are malloc'd (or NULL). */
struct spool_state {
	uint32_t	attempts;
	time_t		next_attempt;	/* 0: due now */
	time_t		last_attempt;	/* 0: never tried */
	time_t		since;		/* lifetime counts from here; 0: received */
	int		failed;
	char		*last_reply;
	uint8_t		*done;		/* bit i: recipient i delivered; NULL: none */
};

/* ---- Format (spool_format.c) ------------------------------------------- */

/* A queue id as the session makes them: 1..23 of [0-9A-Z]. */
int	spool_id_valid(const char *id);

/* The envelope text for msg (data is not used), malloc'd into *out. */
int	spool_envelope_encode(const struct relay_msg *msg, const struct spool_meta *meta,
	    char **out, size_t *outlen);
/*
 * Parse the envelope at the start of buf[0..len). Returns 0 with *hdrlen
 * (bytes up to and including the blank line), msg (rcpts malloc'd, data
 * NULL) and meta filled; 1 when buf ends before the blank line (read more,
 * unless len already reached SPOOL_HEADER_MAX); -1 on anything malformed,
 * with one line in err. Never reads past len.
 */
int	spool_envelope_parse(const char *buf, size_t len, struct relay_msg *msg,
	    struct spool_meta *meta, size_t *hdrlen, char *err, size_t errlen);
void	spool_meta_free(struct spool_meta *meta);
/* Free what spool_envelope_parse() or spool_load() allocated in msg. */
void	spool_msg_clear(struct relay_msg *msg);

int	spool_state_encode(const struct spool_state *st, size_t n_rcpts, char **out,
	    size_t *outlen);
int	spool_state_parse(const char *buf, size_t len, size_t n_rcpts, struct spool_state *st,
	    char *err, size_t errlen);
void	spool_state_free(struct spool_state *st);
/* Deep copy; 0 or -1 (out of memory). */
int	spool_state_copy(struct spool_state *dst, const struct spool_state *src,
	    size_t n_rcpts);
int	spool_state_set_reply(struct spool_state *st, const char *reply);
int	spool_state_done(const struct spool_state *st, size_t i);
int	spool_state_set_done(struct spool_state *st, size_t i, size_t n_rcpts);

/*
 * The JSON object "queue list --json" prints for one message: id, account,
 * from, rcpts, size, received, age, attempts, next_attempt, status,
 * last_reply, hold_reason. status: active | deferred | held | failed.
 */
json_t	*spool_entry_json(const struct relay_msg *msg, const struct spool_meta *meta,
	    const struct spool_state *st, const char *status, const char *hold_reason,
	    time_t now);

/* ---- Files (spool.c) ----------------------------------------------------- */

struct spool;

#define SPOOL_CREATE	0x1	/* create missing directories */

/* Open spool_dir (and its areas). Returns 0, or -1 with err. */
int	spool_open(const char *dir, int flags, struct spool **out, char *err, size_t errlen);
void	spool_close(struct spool *sp);
const char *spool_path(const struct spool *sp);
int	spool_dirfd(const struct spool *sp);

/* The exclusive lock: 0; -1 with errno EWOULDBLOCK when still held by
 * someone else after wait_ms; -1 otherwise. */
int	spool_lock(struct spool *sp, unsigned wait_ms);

/*
 * The operations below return 0, or -1 with errno set (ENOSPC and EDQUOT
 * mean the disk is full) and nothing half-done left behind under a final
 * name. None of them fsyncs the directory: batch that with spool_sync().
 */

/* Write queue/ID: header then body, to a temporary name, fsync, rename. */
int	spool_create(struct spool *sp, const char *id, const char *hdr, size_t hdrlen,
	    struct evbuffer *body);
/*
 * The same in steps, for group commit: write the temporary file (fsync'd,
 * unless SPOOL_DEFER_SYNC: then the caller makes it durable with
 * spool_sync_data() before spool_commit() renames it into place);
 * spool_discard() removes a temporary file that will not be committed.
 */
#define SPOOL_DEFER_SYNC	0x1
int	spool_write_temp(struct spool *sp, const char *id, const char *hdr, size_t hdrlen,
	    struct evbuffer *body, int flags);
int	spool_commit(struct spool *sp, const char *id);
void	spool_discard(struct spool *sp, const char *id);
/* Flush the whole filesystem of spool_dir (syncfs(2)): one flush for many
 * files written with SPOOL_DEFER_SYNC. */
int	spool_sync_data(struct spool *sp);
/* Replace area/ID.st atomically with text (from spool_state_encode()). */
int	spool_state_write(struct spool *sp, enum spool_area a, const char *id,
	    const char *text, size_t len);
/* Remove area/ID, then area/ID.st. A missing file is not an error. */
int	spool_remove(struct spool *sp, enum spool_area a, const char *id);
/* Rename ID, then ID.st (when present), from one area to another. */
int	spool_move(struct spool *sp, const char *id, enum spool_area from, enum spool_area to);
/* fsync the directory of an area. */
int	spool_sync(struct spool *sp, enum spool_area a);

/*
 * Read area/ID: envelope into msg and meta, the state (or a fresh one when
 * there is no state file) into st, and with_body the message bytes into a
 * new msg->data. Returns 0, or -1 with err; errno ENOENT when the message is
 * not there, EBADMSG when a file is malformed.
 */
int	spool_load(struct spool *sp, enum spool_area a, const char *id, struct relay_msg *msg,
	    struct spool_meta *meta, struct spool_state *st, int with_body, char *err,
	    size_t errlen);

/*
 * Call cb for each message ID in an area (names that are not ids are
 * ignored). With cleanup, temporary files are removed first and a state
 * file without its message is moved to the message's other area, or
 * removed; *cleaned counts what was removed. cb returns 0 to go on.
 */
int	spool_scan(struct spool *sp, enum spool_area a, int cleanup,
	    int (*cb)(void *arg, const char *id), void *arg, size_t *cleaned, char *err,
	    size_t errlen);

/* The path of a file in the spool (for messages). */
int	spool_file_path(const struct spool *sp, enum spool_area a, const char *id,
	    char *buf, size_t len);

#endif
