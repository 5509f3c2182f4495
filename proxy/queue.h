/*
 * queue.h: delivery = queue (SPEC section 4, issue 5). The second
 * implementation behind relay.h: a message is made durable in the spool
 * (spool.h) and recorded as "queued" in the audit log before the client
 * hears "250 2.0.0 Ok: queued as ID"; then the delivery engine sends it
 * through the shared per-account upstream pools, retrying temporary
 * failures on [upstream] retry_schedule until queue_lifetime.
 *
 * Gmail-aware rules, per account:
 *   - rolling 24-hour message and recipient limits (quota.h) are checked
 *     before a message goes out; one that would exceed them waits ("held")
 *     until the window has room, and so does the whole account after
 *     Google's own 550 5.4.5 daily-limit reply;
 *   - a refused credential (535 5.7.8, 534 5.7.9) holds the account: no
 *     retry storm that would earn the 454 4.7.0 login lockout; the hold ends
 *     when the credential is rotated (or rolled back), on "queue retry", or
 *     after QUEUE_AUTH_RETRY_SECS for one more try;
 *   - 421, 454 and other 4.7.x replies pause the account with growing delays
 *     (on top of the pool's own connection back-off);
 *   - more than QUEUE_RCPTS_PER_TXN recipients go out as several upstream
 *     transactions, audited as one message (one event per attempt).
 *
 * One event loop thread; the spool's disk work runs on spool_io's thread.
 */
#ifndef SMTPVAULT_QUEUE_H
#define SMTPVAULT_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "relay.h"

struct event_base;
struct config;
struct credstore;
struct upstream_pool;
struct quota;
struct audit;
struct smtp_outcome;

#define QUEUE_RCPTS_PER_TXN	100	/* Gmail's recipients per SMTP transaction */
#define QUEUE_INFLIGHT_PER_SESSION 2	/* messages handed to the pool per session slot */
#define QUEUE_TICK_SECS		1	/* holds, due messages, expiry, rotation */
#define QUEUE_LOCK_WAIT_MS	2000	/* for the spool lock at start-up */
#define QUEUE_AUTH_RETRY_SECS	3600	/* a credential hold tries once more after this */
#define QUEUE_LIMIT_HOLD_SECS	3600	/* after Google's 550 5.4.5 */
#define QUEUE_DRAIN_GRACE_SECS	2	/* in-flight transactions may finish this long */
#define QUEUE_DRAIN_QUIT_SECS	1	/* then idle sessions get this long for QUIT */
#define QUEUE_BODY_CACHE_MAX	(64 * 1024 * 1024)	/* message bytes kept in memory
							 * for messages about to go */
#define QUEUE_REASON_MAX	256
#define QUEUE_BY_MAX		128

struct queue;

/*
 * Open the spool (creating it), take its lock, recover every message in it
 * (temporary files of unfinished writes are discarded), load the sent log
 * and start the I/O thread. pool, quota, cfg and cs must outlive the queue.
 * Returns NULL with err on failure.
 */
struct queue *queue_new(struct event_base *base, const struct config *cfg,
	    struct credstore *cs, struct upstream_pool *pool, struct quota *quota,
	    char *err, size_t errlen);
/* Stop at once: the I/O thread finishes what was submitted, nothing else is
 * called back. Messages stay in the spool. */
void	queue_free(struct queue *q);
void	queue_set_config(struct queue *q, const struct config *cfg);

/*
 * The audit log the queue writes to from its I/O thread: a handle of its
 * own (taken over, closed by queue_free()). NULL: no audit (tests). Until
 * this is called, messages are refused, so that nothing is queued
 * unrecorded.
 */
void	queue_set_audit(struct queue *q, struct audit *a);

/* relay.h semantics: relay_submit(), relay_cancel(), relay_drain(). */
int	queue_submit(struct queue *q, struct relay_msg *msg, relay_cb *cb, void *arg,
	    struct relay_result *res);
void	queue_cancel(struct queue *q, void *arg);
void	queue_drain(struct queue *q, void (*done)(void *), void *arg);

/* ---- Operator actions (control socket, admin page) --------------------- */

/* One JSON object per message (spool_entry_json()), oldest first; cb
 * returns 0 to go on. Returns how many were listed. */
size_t	queue_list(struct queue *q, int (*cb)(void *arg, json_t *entry), void *arg);

/*
 * Make a deferred, held or failed message due now (a held account is
 * released, a failed message goes back to the queue). Returns 0, or -1 when
 * there is no such message.
 */
int	queue_retry(struct queue *q, const char *id);
/* Every message; returns how many were made due. */
size_t	queue_retry_all(struct queue *q);

/*
 * Remove a message (audited as failed, "deleted by <by>"). done(arg, rc)
 * runs later from the loop once it is gone from the disk: rc 0, or -1
 * (errno) when it could not be removed. Returns 0, or -1 (errno ENOENT)
 * when there is no such message; done is then not called.
 */
int	queue_delete(struct queue *q, const char *id, const char *by,
	    void (*done)(void *arg, int rc), void *arg);
/* The caller of queue_delete() went away: never call it back. */
void	queue_delete_cancel(struct queue *q, void *arg);

struct queue_stats {
	size_t		messages;	/* in the queue (not failed) */
	size_t		active;
	size_t		deferred;
	size_t		held;
	size_t		failed;
	size_t		inflight;	/* with the upstream pools now */
	uint64_t	body_bytes;	/* message bytes kept in memory */
};
void	queue_stats(struct queue *q, struct queue_stats *st);

/* ---- Rules, exposed for the unit tests ----------------------------------- */

/* What one upstream outcome means for a queued message. */
enum queue_verdict {
	QUEUE_DELIVERED,
	QUEUE_TEMPORARY,	/* 4xx, network, TLS, ...: retry on the schedule */
	QUEUE_PERMANENT,	/* 5xx to the message: fail now */
	QUEUE_AUTH,		/* credential refused: hold the account */
	QUEUE_LIMIT,		/* 550 5.4.5 daily limit: hold the account */
	QUEUE_RATE,		/* 421, 454, 4.7.x: pause the account, retry */
};
enum queue_verdict queue_classify(const struct smtp_outcome *o);
const char *queue_verdict_name(enum queue_verdict v);

/*
 * The delay after the attempts-th failed attempt (1-based): schedule[k-1],
 * the last step repeating. A 0-length schedule gives 60 s.
 */
uint64_t queue_retry_delay(const uint64_t *schedule, size_t n, uint32_t attempts);

/*
 * When to try again after the attempts-th attempt failed at now, for a
 * message whose lifetime started at born: 0 with *next (never past the end
 * of the lifetime, so that the last try happens right at it), or -1 when
 * the lifetime is over (the message fails).
 */
int	queue_next_attempt(const uint64_t *schedule, size_t n, uint64_t lifetime,
	    time_t born, uint32_t attempts, time_t now, time_t *next);

#endif
