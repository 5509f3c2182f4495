/*
 * relay.h: the delivery step between a LAN session and the upstream. The
 * session hands over a complete message; the relay answers, once, with the
 * reply the client should get. Two implementations sit behind it, chosen by
 * [smtp] delivery: direct (relay.c: the reply is decided by the upstream's
 * answer to the message) and queue (queue.c: the reply comes when the spool
 * file and its audit event are durable; delivery happens later). Both send
 * through the same per-account upstream pools and count the same quotas.
 */
#ifndef SMTPVAULT_RELAY_H
#define SMTPVAULT_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "audit.h"
#include "vault.h"

struct event_base;
struct evbuffer;
struct config;
struct credstore;
struct audit;
struct queue;

#define RELAY_QUEUE_ID_MAX	24
#define RELAY_PATH_MAX		(256 + 1)	/* RFC 5321 4.5.3.1.3 path limit + NUL */
#define RELAY_TEXT_MAX		1024

/* Header fields of a message that the audit log records; malloc'd, NULL
 * when the message has none (or, for subject, when log_subject = no). */
struct relay_fields {
	char	*header_from;
	char	*subject;
	char	*message_id;
};

struct relay_msg {
	char		queue_id[RELAY_QUEUE_ID_MAX];
	char		account[VAULT_ADDR_MAX];	/* routed account's primary address */
	char		mail_from[RELAY_PATH_MAX];	/* without <>, "" for the null sender */
	char		(*rcpts)[RELAY_PATH_MAX];	/* malloc'd array */
	size_t		n_rcpts;
	int		body_8bit;			/* BODY=8BITMIME was given */
	int		smtputf8;			/* SMTPUTF8 was given */
	/* The message as the client sent it, dot-unstuffed, CRLF line ends,
	 * preceded by our Received: header. */
	struct evbuffer	*data;
	/* For the audit log and logs. */
	char		client_ip[64];
	char		client_name[64];
	char		helo[256];
	/* Read by the front end (relay_fields_read() before relay_submit()), so
	 * that the process holding credentials never parses LAN message data
	 * for them; freed by relay_msg_free(). */
	struct relay_fields fields;
};

/* The reply for the client, e.g. {250, "2.0.0", "Ok: queued as X"}. */
struct relay_result {
	int		code;
	char		enhanced[16];
	char		text[RELAY_TEXT_MAX];
};

typedef void relay_cb(void *arg, const struct relay_result *res);

struct relay;

struct relay *relay_new(struct event_base *base, const struct config *cfg,
	    struct credstore *cs);
void	relay_free(struct relay *r);
/* Swap in a reloaded configuration (SIGHUP): new upstream sessions use it.
 * The relay stops referring to the old one before this returns. */
void	relay_set_config(struct relay *r, const struct config *cfg);

/*
 * Record every message's outcome in this audit log (SPEC section 7). A 2xx
 * is only given to the client once its event is on disk; when the log
 * cannot be written the client gets 451 4.3.0 instead, and for a while new
 * messages are refused before they go upstream. NULL: no audit (tests).
 * own: delivery = queue writes from its I/O thread through a second handle
 * on the same log (audit_open() again), which the relay takes over and
 * closes; NULL in direct mode. In queue mode, messages are refused until
 * this is called.
 */
void	relay_set_audit(struct relay *r, struct audit *a, struct audit *own);

/*
 * Hand over msg (the relay takes ownership and frees it). cb is called
 * exactly once, later, from the event loop, unless relay_cancel() is called
 * first with the same arg. Returns 0, or -1 if the message could not be
 * accepted at all (res then holds the reply, and cb is not called).
 */
int	relay_submit(struct relay *r, struct relay_msg *msg, relay_cb *cb, void *arg,
	    struct relay_result *res);
/* The session behind arg is going away: never call its callback. A
 * message that has started upstream still finishes and is audited. */
void	relay_cancel(struct relay *r, void *arg);

/* Stop taking messages; done() runs when everything in flight is finished. */
void	relay_drain(struct relay *r, void (*done)(void *), void *arg);

void	relay_msg_free(struct relay_msg *msg);

/* Upstream session figures of one account, for the admin page and metrics. */
struct upstream_pool_stats;
void	relay_upstream_stats(struct relay *r, const char *account,
	    struct upstream_pool_stats *st);

/* delivery = queue: the queue behind this relay (for the admin page and the
 * control socket), NULL in direct mode. */
struct queue *relay_queue(struct relay *r);

/* ---- Shared by the two implementations (relay.c and queue.c) ---------- */

/* Read them from the first part of data (the front end does, for
 * relay_msg.fields). Returns 0, or -1 out of memory. */
int	relay_fields_read(struct evbuffer *data, int want_subject, struct relay_fields *f);
void	relay_fields_free(struct relay_fields *f);

/*
 * One "message" event (SPEC section 7) for msg; size is the message's size
 * (msg->data may be NULL in queue mode), reply the upstream's full reply or
 * NULL. Returns a new object for audit_append(), or NULL when out of memory.
 */
json_t	*relay_audit_event(const struct relay_msg *msg, const struct relay_fields *f,
	    uint64_t size, enum audit_status st, const char *reply, uint32_t cred_version,
	    uint32_t attempt, uint64_t duration_ms);

/* Fill res; the text is made one printable line, bounded for a reply. */
void	relay_result_set(struct relay_result *res, int code, const char *enhanced,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Make upstream text safe for one reply or log line: printable ASCII,
 * white space runs folded, at most max characters ("..." when cut). */
void	relay_text_sanitize(char *dst, size_t dstlen, const char *src, size_t max);

#endif
