/*
 * relay_ctl.h: what the admin process may ask of the relay process (issue
 * 8): the queue's figures, its listing and per-account holds, a retry or a
 * delete, an account's upstream sessions and the message counters of GET
 * /metrics. Nothing else crosses: no message bytes, no credential.
 *
 * The server side (relay_ctl_new) runs in the relay on its event loop and
 * answers each request at once, except a delete, which is answered when the
 * queue has removed the files. The client side is synchronous, as the
 * keeper's client is: the admin process sends one request and waits for its
 * answer (the relay answers from its loop in microseconds), bounded by
 * IPC_SYNC_TIMEOUT_MS. A delete is asynchronous: its answer comes later and
 * is handed to the caller from a fresh turn of the admin's loop.
 *
 * A client can also be "local" (relay_ctl_client_local): the same calls
 * answered in-process by a relay on the same loop. The relay's side answers
 * the admin process's requests with exactly these calls.
 * delivery = direct has no queue: the answers are empty, as before.
 *
 * Messages are typed ipc.h records checked against rule tables on both
 * sides; anything malformed ends the process that received it.
 */
#ifndef SMTPVAULT_RELAY_CTL_H
#define SMTPVAULT_RELAY_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "ipc.h"
#include "metrics.h"
#include "queue.h"
#include "upstream_pool.h"

struct event_base;
struct relay;

/* Requests; an answer is the request's type | RELAY_CTL_REPLY, preceded
 * for LIST, HOLDS and METRICS by rows of type | RELAY_CTL_ROW. */
enum relay_ctl_msg {
	RELAY_CTL_STATS = 1,	/* queue figures and the delivery mode */
	RELAY_CTL_LIST,		/* the queue's messages, oldest first, bounded */
	RELAY_CTL_HOLDS,	/* per account: messages waiting, held, hold reason */
	RELAY_CTL_POOL,		/* one account's upstream sessions */
	RELAY_CTL_METRICS,	/* message and auth-failure counters per account */
	RELAY_CTL_RETRY,	/* make one message due now */
	RELAY_CTL_DELETE,	/* remove one message; answered once it is gone */
	RELAY_CTL_MSG_END
};
#define RELAY_CTL_REPLY		0x100
#define RELAY_CTL_ROW		0x200

#define RELAY_CTL_LIST_MAX	500	/* messages in one listing (GET /queue) */
#define RELAY_CTL_RCPTS_MAX	100	/* recipients shown per message ("rcpt_count": all) */
#define RELAY_CTL_ROWS_MAX	4096	/* rows of HOLDS or METRICS */
#define RELAY_CTL_ID_MAX	64	/* a queue id on the wire */
#define RELAY_CTL_BY_MAX	QUEUE_BY_MAX	/* "admin:USER (IP)" */
#define RELAY_CTL_DELETES_MAX	32	/* deletes waiting for the queue at once */

enum relay_ctl_mode { RELAY_CTL_DIRECT = 0, RELAY_CTL_QUEUE = 1 };

/* What the queue holds for one account (the dashboard). */
struct relay_ctl_hold {
	char		account[VAULT_ADDR_MAX];
	uint64_t	queued;				/* waiting, not failed */
	uint64_t	held;
	char		reason[QUEUE_REASON_MAX];	/* the queue's hold, "" when none */
};

/* The counters of one account (metrics.h). */
struct relay_ctl_counts {
	char		account[VAULT_ADDR_MAX];
	uint64_t	messages[METRICS_STATUS_COUNT];
	uint64_t	auth_failures;
};

/* ---- The relay's side --------------------------------------------------- */

struct relay_ctl;

/* Serve the admin process's requests on fd (taken over) for relay r. */
struct relay_ctl *relay_ctl_new(struct event_base *base, int fd, struct relay *r);
/* Close; deletes still in the queue's hands are no longer answered. */
void	relay_ctl_free(struct relay_ctl *c);

/* ---- The admin's side ---------------------------------------------------- */

struct relay_ctl_client;

/* A client of the relay over fd (taken over); base runs the delete
 * answers. NULL when out of memory. */
struct relay_ctl_client *relay_ctl_client_connect(struct event_base *base, int fd);
/* The same calls answered in-process by r (same loop). */
struct relay_ctl_client *relay_ctl_client_local(struct event_base *base, struct relay *r);
void	relay_ctl_client_free(struct relay_ctl_client *c);

/* The queue's figures; direct mode: RELAY_CTL_DIRECT and zeros. */
enum relay_ctl_mode relay_ctl_stats(struct relay_ctl_client *c, struct queue_stats *st);

/*
 * At most max (<= RELAY_CTL_LIST_MAX) messages, oldest first, as the objects
 * of queue_list() with at most RELAY_CTL_RCPTS_MAX recipients each and
 * "rcpt_count" added; cb takes each entry (and must json_decref it).
 * *truncated is set when more were there. Returns how many were listed, or
 * -1 (out of memory).
 */
ssize_t	relay_ctl_list(struct relay_ctl_client *c, size_t max,
	    void (*cb)(void *arg, json_t *entry), void *arg, int *truncated);

/* Per account with messages waiting (not failed); cb once per account. */
void	relay_ctl_holds(struct relay_ctl_client *c,
	    void (*cb)(void *arg, const struct relay_ctl_hold *h), void *arg);

/* One account's upstream session figures (zeros when none). */
void	relay_ctl_pool(struct relay_ctl_client *c, const char *account,
	    struct upstream_pool_stats *st);

/* The counters of every account seen since the relay started. */
void	relay_ctl_metrics(struct relay_ctl_client *c,
	    void (*cb)(void *arg, const struct relay_ctl_counts *n), void *arg);

/* 0, or -1 when there is no such message (or no queue). */
int	relay_ctl_retry(struct relay_ctl_client *c, const char *id);

/*
 * Remove message id, audited by the queue as deleted by "by". done(arg, rc,
 * error) runs later, from a turn of the loop of its own: rc RELAY_CTL_DELETED,
 * RELAY_CTL_NO_SUCH (no such message, or no queue) or RELAY_CTL_FAILED with
 * error an errno value (ENOENT: delivered or removed meanwhile). Returns 0,
 * or -1 (errno EBUSY: RELAY_CTL_DELETES_MAX wait already; ENOMEM); done is
 * then not called.
 */
enum relay_ctl_deleted { RELAY_CTL_DELETED = 0, RELAY_CTL_NO_SUCH = 1, RELAY_CTL_FAILED = 2 };
int	relay_ctl_delete(struct relay_ctl_client *c, const char *id, const char *by,
	    void (*done)(void *arg, int rc, int error), void *arg);
/* The caller went away: never call done for arg. */
void	relay_ctl_delete_cancel(struct relay_ctl_client *c, void *arg);

/* The rule tables, for tests. */
extern const struct ipc_rule relay_ctl_rules_request[];
extern const size_t relay_ctl_n_rules_request;

#endif
