/*
 * upstream_pool.h: per-account pools of logged-in upstream sessions, and the
 * one call that delivers one message upstream. Direct mode (relay.c) and the
 * queue both send through here, so that session reuse, the per-account
 * session cap, back-off after 421 / refused connections, the hold after a
 * refused credential and credential rotation behave the same in both.
 *
 * A pool is keyed by account address + upstream host + port. At most
 * max_sessions_per_account sessions per key exist at once; messages wait in
 * FIFO order for a free session. An idle session is reused for the next
 * message (RSET first) and closed with QUIT after UPSTREAM_POOL_IDLE_TIMEOUT.
 * A session logged in with an older credential version than the account's
 * current one is never reused: the next message gets a new session, which
 * fetches the current credential at AUTH time.
 */
#ifndef SMTPVAULT_UPSTREAM_POOL_H
#define SMTPVAULT_UPSTREAM_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "smtp_client.h"

struct event_base;
struct evdns_base;
struct config;
struct credstore;
struct relay_msg;

#define UPSTREAM_POOL_IDLE_TIMEOUT	60	/* s; Gmail drops idle sessions after ~5 min */
#define UPSTREAM_POOL_BACKOFF_MIN	1	/* s, first delay after a failed connect */
#define UPSTREAM_POOL_BACKOFF_MAX	60	/* s, the delay doubles up to this */
/* After the upstream refused a credential version, new messages for that
 * account fail at once (no login attempt, no 454 lockout from retries) until
 * the credential is rotated or this many seconds pass. */
#define UPSTREAM_POOL_AUTH_HOLD		300

struct upstream_pool;
struct upstream_job;

/* The outcome of one message: see struct smtp_outcome. */
typedef void upstream_pool_cb(void *arg, const struct smtp_outcome *o);

/* dns may be NULL (blocking resolver). cfg and cs must outlive the pool. */
struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
	    const struct config *cfg, struct credstore *cs);
/* Swap in a reloaded configuration; pools pick it up for new sessions. */
void	upstream_pool_set_config(struct upstream_pool *p, const struct config *cfg);
/* Close everything at once; no callback runs any more. */
void	upstream_pool_free(struct upstream_pool *p);

/*
 * Deliver msg upstream for msg->account. cb runs exactly once, always later
 * from the event loop (never inside this call), unless upstream_pool_cancel()
 * comes first. msg is borrowed: keep it unchanged until then. wait_max is how
 * long (seconds) the message may wait for a free session before it fails
 * with a temporary outcome; 0 means no limit. Returns NULL only when out of
 * memory.
 */
struct upstream_job *upstream_pool_send(struct upstream_pool *p, const struct relay_msg *msg,
	    uint64_t wait_max, upstream_pool_cb *cb, void *arg);
/*
 * Never call the job's callback; stop using its message before returning.
 * A message already being sent is aborted by closing its session: the
 * upstream discards an unfinished DATA, but one whose end went out may
 * still be delivered, and a reply already read is lost.
 */
void	upstream_pool_cancel(struct upstream_pool *p, struct upstream_job *job);
/*
 * Nobody waits for the job's outcome any more. A job still waiting for a
 * session (nothing of it has gone upstream) is cancelled: 0, and its
 * callback never runs. One already on a session, or done, is left to
 * finish: -1, and its callback runs as usual, so that a message the
 * upstream may have taken is always recorded.
 */
int	upstream_pool_withdraw(struct upstream_pool *p, struct upstream_job *job);

/*
 * Lift the hold after a refused credential for account (the operator asked
 * for a retry: "queue retry"): the next message logs in again even with the
 * same credential version.
 */
void	upstream_pool_release(struct upstream_pool *p, const char *account);

/* Stop when every job has finished: idle sessions say QUIT; done() runs
 * from the loop once no job and no session is left. */
void	upstream_pool_drain(struct upstream_pool *p, void (*done)(void *), void *arg);

/* For tests and the admin page. */
struct upstream_pool_stats {
	size_t		sessions;	/* open now, any state */
	size_t		idle;
	size_t		waiting;	/* messages waiting for a session */
	uint64_t	logins;		/* successful logins so far */
	uint64_t	messages;	/* messages sent (any outcome) */
	uint64_t	connects;	/* sessions started */
};
void	upstream_pool_stats(const struct upstream_pool *p, const char *account,
	    struct upstream_pool_stats *st);
/* Tests shorten the idle timeout and the back-off; seconds. */
void	upstream_pool_set_timing(struct upstream_pool *p, uint64_t idle_timeout,
	    uint64_t backoff_min, uint64_t backoff_max);

#endif
