/*
 * relay_ctl.c: the admin process's questions to the relay (relay_ctl.h).
 *
 * One set of functions answers them: the local client, which calls the
 * queue, the pools and the counters of a relay on the same loop. The relay
 * process's server decodes a request, asks its own local client and encodes
 * the answer; the admin process's remote client encodes the request and
 * decodes the answer. So the wire adds nothing to what is answered.
 *
 * The remote client is synchronous, except for deletes: their answers may
 * arrive while a synchronous call waits for its own answer (they are kept
 * and handed over from the next loop turn) or while nothing waits (an event
 * on the channel reads them). Every other answer comes in order.
 */
#include "relay_ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "ipc.h"
#include "log.h"
#include "relay.h"
#include "spool.h"
#include "util.h"

#define CTL_ERRNO_MAX	4095		/* an errno value on the wire */
#define CTL_JSON_FLAGS	(JSON_COMPACT)

/* What the admin process may send, with payload bounds. */
#define RQ(t, lo, hi)	{ (t), (lo), (hi), IPC_FD_NONE }
const struct ipc_rule relay_ctl_rules_request[] = {
	RQ(RELAY_CTL_STATS, 0, 0),
	RQ(RELAY_CTL_LIST, 4, 4),
	RQ(RELAY_CTL_HOLDS, 0, 0),
	RQ(RELAY_CTL_POOL, 2, 2 + VAULT_ADDR_MAX),
	RQ(RELAY_CTL_METRICS, 0, 0),
	RQ(RELAY_CTL_RETRY, 2, 2 + RELAY_CTL_ID_MAX),
	RQ(RELAY_CTL_DELETE, 4, 4 + RELAY_CTL_ID_MAX + RELAY_CTL_BY_MAX),
};
const size_t relay_ctl_n_rules_request = sizeof(relay_ctl_rules_request) /
    sizeof(relay_ctl_rules_request[0]);

/* The largest fixed answers; a LIST row is one entry's JSON text. */
#define CTL_STATS_LEN	(4 + 7 * 8)
#define CTL_HOLD_MAX	(2 + VAULT_ADDR_MAX + 16 + 2 + QUEUE_REASON_MAX)
#define CTL_COUNTS_MAX	(2 + VAULT_ADDR_MAX + 8 * (METRICS_STATUS_COUNT + 1))
#define CTL_POOL_LEN	(6 * 8)

/* A delete the client waits for. */
struct ctl_delete {
	TAILQ_ENTRY(ctl_delete)	 entry;
	struct relay_ctl_client	*c;
	uint32_t		 id;		/* remote: the request's id */
	int			 answered;
	int			 rc, error;
	void			(*done)(void *, int, int);
	void			*arg;
};
TAILQ_HEAD(ctl_delete_list, ctl_delete);

struct relay_ctl_client {
	struct event_base	*base;
	struct relay		*relay;		/* local */
	int			 fd;		/* remote, else -1 */
	uint32_t		 next_id;
	unsigned char		*rbuf;		/* IPC_MSG_MAX */
	struct event		*ev_read;	/* remote: delete answers while idle */
	struct event		*ev_done;	/* hands answered deletes over */
	struct ctl_delete_list	 deletes;
	size_t			 n_deletes;
};

/* ---- Local answers ------------------------------------------------------- */

static struct queue *
ctl_queue(struct relay_ctl_client *c)
{
	return c->relay != NULL ? relay_queue(c->relay) : NULL;
}

static enum relay_ctl_mode
local_stats(struct relay_ctl_client *c, struct queue_stats *st)
{
	struct queue *q = ctl_queue(c);

	memset(st, 0, sizeof(*st));
	if (q == NULL)
		return RELAY_CTL_DIRECT;
	queue_stats(q, st);
	return RELAY_CTL_QUEUE;
}

struct list_walk {
	size_t	 max, n;
	int	 truncated, oom;
	void	(*cb)(void *, json_t *);
	void	*arg;
};

/* One entry: at most RELAY_CTL_RCPTS_MAX recipients, and how many there are. */
static int
list_entry_cb(void *arg, json_t *entry)
{
	struct list_walk *w = arg;
	json_t *rcpts = json_object_get(entry, "rcpts");
	size_t n = json_array_size(rcpts);

	if (w->n >= w->max) {
		json_decref(entry);
		w->truncated = 1;
		return 1;
	}
	while (json_array_size(rcpts) > RELAY_CTL_RCPTS_MAX)
		json_array_remove(rcpts, json_array_size(rcpts) - 1);
	if (json_object_set_new(entry, "rcpt_count", json_integer((json_int_t)n)) == -1) {
		json_decref(entry);
		w->oom = 1;
		return 1;
	}
	w->n++;
	w->cb(w->arg, entry);
	return 0;
}

static ssize_t
local_list(struct relay_ctl_client *c, size_t max, void (*cb)(void *, json_t *), void *arg,
    int *truncated)
{
	struct queue *q = ctl_queue(c);
	struct list_walk w;

	memset(&w, 0, sizeof(w));
	w.max = max < RELAY_CTL_LIST_MAX ? max : RELAY_CTL_LIST_MAX;
	w.cb = cb;
	w.arg = arg;
	if (q != NULL)
		(void)queue_list(q, list_entry_cb, &w);
	*truncated = w.truncated;
	return w.oom ? -1 : (ssize_t)w.n;
}

struct holds_walk {
	struct relay_ctl_hold	*v;
	size_t			 n;
	int			 truncated;
};

static const char *
entry_str(json_t *entry, const char *key)
{
	return json_string_value(json_object_get(entry, key));
}

static int
holds_entry_cb(void *arg, json_t *entry)
{
	struct holds_walk *w = arg;
	struct relay_ctl_hold *h, *grown;
	const char *account = entry_str(entry, "account"), *status = entry_str(entry, "status"),
	    *reason = entry_str(entry, "hold_reason");
	size_t i;

	if (account == NULL || status == NULL || strcmp(status, "failed") == 0)
		goto done;
	for (i = 0; i < w->n && strcasecmp(w->v[i].account, account) != 0; i++)
		;
	if (i == w->n) {
		if (w->n >= RELAY_CTL_ROWS_MAX ||
		    (grown = reallocarray(w->v, w->n + 1, sizeof(*w->v))) == NULL) {
			w->truncated = 1;
			goto done;
		}
		w->v = grown;
		memset(&w->v[w->n], 0, sizeof(w->v[0]));
		strlcpy(w->v[w->n].account, account, sizeof(w->v[0].account));
		w->n++;
	}
	h = &w->v[i];
	h->queued++;
	if (strcmp(status, "held") == 0) {
		h->held++;
		if (h->reason[0] == '\0' && reason != NULL)
			strlcpy(h->reason, reason, sizeof(h->reason));
	}
done:
	json_decref(entry);
	return 0;
}

static void
local_holds(struct relay_ctl_client *c, void (*cb)(void *, const struct relay_ctl_hold *),
    void *arg)
{
	struct queue *q = ctl_queue(c);
	struct holds_walk w;
	size_t i;

	memset(&w, 0, sizeof(w));
	if (q != NULL)
		(void)queue_list(q, holds_entry_cb, &w);
	for (i = 0; i < w.n; i++)
		cb(arg, &w.v[i]);
	free(w.v);
}

static void
local_pool(struct relay_ctl_client *c, const char *account, struct upstream_pool_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (c->relay != NULL)
		relay_upstream_stats(c->relay, account, st);
}

static void
local_metrics(struct relay_ctl_client *c, void (*cb)(void *, const struct relay_ctl_counts *),
    void *arg)
{
	struct relay_ctl_counts n;
	const char *name;
	size_t i;
	int s;

	for (i = 0; i < RELAY_CTL_ROWS_MAX && (name = metrics_account_at(i)) != NULL; i++) {
		memset(&n, 0, sizeof(n));
		if (strlcpy(n.account, name, sizeof(n.account)) >= sizeof(n.account))
			continue;
		for (s = 0; s < METRICS_STATUS_COUNT; s++)
			n.messages[s] = metrics_messages(name, (enum metrics_status)s);
		n.auth_failures = metrics_auth_failures(name);
		cb(arg, &n);
	}
}

static int
local_retry(struct relay_ctl_client *c, const char *id)
{
	struct queue *q = ctl_queue(c);

	if (q == NULL || !spool_id_valid(id))
		return -1;
	return queue_retry(q, id);
}

static void
local_delete_done(void *arg, int rc)
{
	struct ctl_delete *d = arg;
	struct relay_ctl_client *c = d->c;
	int error = errno;

	/* From a later loop turn already: hand it over now. */
	TAILQ_REMOVE(&c->deletes, d, entry);
	c->n_deletes--;
	d->done(d->arg, rc == 0 ? RELAY_CTL_DELETED : RELAY_CTL_FAILED, rc == 0 ? 0 :
	    (error > 0 ? error : EIO));
	free(d);
}

/* ---- Remote calls ----------------------------------------------------------- */

static void __attribute__((noreturn))
ctl_fatal(uint16_t type, const char *why)
{
	log_err("event=ipc_fatal peer=relay type=%u error=\"%s\" action=exit", type, why);
	exit(IPC_EXIT_FATAL);
}

/* A delete's answer: keep it for the next loop turn. */
static void
remote_delete_answer(struct relay_ctl_client *c, const struct ipc_msg *m)
{
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	struct ctl_delete *d;
	uint32_t rc, error;

	rc = ipc_get_u32(&r);
	error = ipc_get_u32(&r);
	if (ipc_rd_done(&r) == -1 || rc > RELAY_CTL_FAILED || error > CTL_ERRNO_MAX ||
	    (rc == RELAY_CTL_FAILED) != (error != 0))
		ctl_fatal(m->type, "malformed delete answer");
	TAILQ_FOREACH(d, &c->deletes, entry)
		if (d->id == m->id && !d->answered)
			break;
	if (d == NULL) {
		/* Cancelled meanwhile: the answer has nobody to go to. */
		return;
	}
	d->answered = 1;
	d->rc = (int)rc;
	d->error = (int)error;
	event_active(c->ev_done, EV_TIMEOUT, 0);
}

/* A delete that was cancelled stays listed (without a callback) until its
 * answer comes, so that the answer is recognised. */
static int
remote_delete_known(struct relay_ctl_client *c, uint32_t id)
{
	struct ctl_delete *d;

	TAILQ_FOREACH(d, &c->deletes, entry)
		if (d->id == id)
			return 1;
	return 0;
}

/*
 * Send a request and read until its answer; rows go to row(). Delete
 * answers met on the way are kept. r reads the final answer; the caller
 * calls ctl_done() after.
 */
static void
remote_call(struct relay_ctl_client *c, uint16_t type, const struct ipc_buf *b,
    void (*row)(void *, const struct ipc_msg *), void *rowarg, size_t reply_max,
    struct ipc_rd *r)
{
	const struct ipc_rule rules[] = {
		{ (uint16_t)(type | RELAY_CTL_REPLY), 0, (uint32_t)reply_max, IPC_FD_NONE },
		{ RELAY_CTL_DELETE | RELAY_CTL_REPLY, 8, 8, IPC_FD_NONE },
		{ (uint16_t)(type | RELAY_CTL_ROW), 1, IPC_PAYLOAD_MAX, IPC_FD_NONE },
	};
	struct ipc_msg m;
	char err[256];
	uint32_t id = ++c->next_id;
	size_t rows = 0;

	if (b->failed)
		ctl_fatal(type, "request does not fit");
	if (ipc_send_sync(c->fd, type, id, -1, b->p, b->len, err, sizeof(err)) == -1)
		ctl_fatal(type, err);
	for (;;) {
		if (ipc_recv_sync(c->fd, rules, row != NULL ? 3 : 2, c->rbuf, IPC_MSG_MAX, &m,
		    err, sizeof(err)) == -1)
			ctl_fatal(type, err);
		if (m.type == (RELAY_CTL_DELETE | RELAY_CTL_REPLY)) {
			if (!remote_delete_known(c, m.id))
				ctl_fatal(m.type, "answer to an unknown delete");
			remote_delete_answer(c, &m);
			sodium_memzero(c->rbuf, IPC_HDR_LEN + m.len);
			continue;
		}
		if (m.id != id)
			ctl_fatal(m.type, "answer to another request");
		if (m.type == (type | RELAY_CTL_ROW)) {
			if (++rows > RELAY_CTL_ROWS_MAX)
				ctl_fatal(m.type, "too many rows");
			row(rowarg, &m);
			sodium_memzero(c->rbuf, IPC_HDR_LEN + m.len);
			continue;
		}
		break;
	}
	r->p = m.data;
	r->len = m.len;
	r->off = 0;
	r->failed = 0;
}

static void
remote_done(struct relay_ctl_client *c, uint16_t type, struct ipc_rd *r)
{
	int bad = ipc_rd_done(r);

	sodium_memzero(c->rbuf, IPC_HDR_LEN + r->len);
	if (bad)
		ctl_fatal(type, "malformed answer");
}

/* Idle: the only thing the relay may send is a delete's answer. */
static void
remote_on_read(evutil_socket_t fd, short what, void *arg)
{
	static const struct ipc_rule rule = { RELAY_CTL_DELETE | RELAY_CTL_REPLY, 8, 8,
	    IPC_FD_NONE };
	struct relay_ctl_client *c = arg;
	struct ipc_msg m;
	char err[256];

	if (ipc_recv_sync(c->fd, &rule, 1, c->rbuf, IPC_MSG_MAX, &m, err, sizeof(err)) == -1)
		ctl_fatal(0, err);
	if (!remote_delete_known(c, m.id))
		ctl_fatal(m.type, "answer to an unknown delete");
	remote_delete_answer(c, &m);
	sodium_memzero(c->rbuf, IPC_HDR_LEN + m.len);
}

/* Hand every answered delete over, one at a time (done() may start or
 * cancel others). */
static void
remote_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct relay_ctl_client *c = arg;
	struct ctl_delete *d;

	for (;;) {
		TAILQ_FOREACH(d, &c->deletes, entry)
			if (d->answered)
				break;
		if (d == NULL)
			return;
		TAILQ_REMOVE(&c->deletes, d, entry);
		c->n_deletes--;
		if (d->done != NULL)
			d->done(d->arg, d->rc, d->error);
		free(d);
	}
}

struct list_rows {
	void	(*cb)(void *, json_t *);
	void	*arg;
	size_t	 n;
	int	 oom;
};

static void
list_row(void *arg, const struct ipc_msg *m)
{
	struct list_rows *l = arg;
	json_error_t e;
	json_t *entry;

	entry = json_loadb((const char *)m->data, m->len, JSON_REJECT_DUPLICATES, &e);
	if (entry == NULL || !json_is_object(entry)) {
		/* Out of memory, or a relay that sends something else. */
		if (entry != NULL)
			ctl_fatal(m->type, "a queue entry that is not an object");
		l->oom = 1;
		return;
	}
	if (l->n++ >= RELAY_CTL_LIST_MAX)
		ctl_fatal(m->type, "more entries than asked for");
	l->cb(l->arg, entry);
}

struct hold_rows {
	void	(*cb)(void *, const struct relay_ctl_hold *);
	void	*arg;
};

static void
hold_row(void *arg, const struct ipc_msg *m)
{
	struct hold_rows *h = arg;
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	struct relay_ctl_hold row;

	memset(&row, 0, sizeof(row));
	ipc_get_str(&r, row.account, sizeof(row.account));
	row.queued = ipc_get_u64(&r);
	row.held = ipc_get_u64(&r);
	ipc_get_str(&r, row.reason, sizeof(row.reason));
	if (ipc_rd_done(&r) == -1)
		ctl_fatal(m->type, "malformed hold row");
	h->cb(h->arg, &row);
}

struct counts_rows {
	void	(*cb)(void *, const struct relay_ctl_counts *);
	void	*arg;
};

static void
counts_row(void *arg, const struct ipc_msg *m)
{
	struct counts_rows *cr = arg;
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	struct relay_ctl_counts row;
	int s;

	memset(&row, 0, sizeof(row));
	ipc_get_str(&r, row.account, sizeof(row.account));
	for (s = 0; s < METRICS_STATUS_COUNT; s++)
		row.messages[s] = ipc_get_u64(&r);
	row.auth_failures = ipc_get_u64(&r);
	if (ipc_rd_done(&r) == -1)
		ctl_fatal(m->type, "malformed counters row");
	cr->cb(cr->arg, &row);
}

/* ---- The client's calls ------------------------------------------------------ */

static struct relay_ctl_client *
client_new(struct event_base *base)
{
	struct relay_ctl_client *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->base = base;
	c->fd = -1;
	TAILQ_INIT(&c->deletes);
	if ((c->ev_done = event_new(base, -1, 0, remote_on_done, c)) == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

struct relay_ctl_client *
relay_ctl_client_connect(struct event_base *base, int fd)
{
	struct relay_ctl_client *c;

	if ((c = client_new(base)) == NULL)
		return NULL;
	c->fd = fd;
	if ((c->rbuf = malloc(IPC_MSG_MAX)) == NULL ||
	    (c->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, remote_on_read, c)) == NULL ||
	    event_add(c->ev_read, NULL) == -1) {
		c->fd = -1;	/* not taken over after all */
		relay_ctl_client_free(c);
		return NULL;
	}
	return c;
}

struct relay_ctl_client *
relay_ctl_client_local(struct event_base *base, struct relay *r)
{
	struct relay_ctl_client *c;

	if ((c = client_new(base)) == NULL)
		return NULL;
	c->relay = r;
	return c;
}

void
relay_ctl_client_free(struct relay_ctl_client *c)
{
	struct ctl_delete *d;
	struct queue *q;

	if (c == NULL)
		return;
	q = ctl_queue(c);
	while ((d = TAILQ_FIRST(&c->deletes)) != NULL) {
		TAILQ_REMOVE(&c->deletes, d, entry);
		if (q != NULL)
			queue_delete_cancel(q, d);
		free(d);
	}
	if (c->ev_read != NULL)
		event_free(c->ev_read);
	if (c->ev_done != NULL)
		event_free(c->ev_done);
	if (c->fd != -1)
		close(c->fd);
	if (c->rbuf != NULL) {
		sodium_memzero(c->rbuf, IPC_MSG_MAX);
		free(c->rbuf);
	}
	free(c);
}

enum relay_ctl_mode
relay_ctl_stats(struct relay_ctl_client *c, struct queue_stats *st)
{
	unsigned char out[16];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct ipc_rd r;
	uint32_t mode;

	if (c->fd == -1)
		return local_stats(c, st);
	memset(st, 0, sizeof(*st));
	remote_call(c, RELAY_CTL_STATS, &b, NULL, NULL, CTL_STATS_LEN, &r);
	mode = ipc_get_u32(&r);
	st->messages = (size_t)ipc_get_u64(&r);
	st->active = (size_t)ipc_get_u64(&r);
	st->deferred = (size_t)ipc_get_u64(&r);
	st->held = (size_t)ipc_get_u64(&r);
	st->failed = (size_t)ipc_get_u64(&r);
	st->inflight = (size_t)ipc_get_u64(&r);
	st->body_bytes = ipc_get_u64(&r);
	if (mode > RELAY_CTL_QUEUE)
		r.failed = 1;
	remote_done(c, RELAY_CTL_STATS, &r);
	return (enum relay_ctl_mode)mode;
}

ssize_t
relay_ctl_list(struct relay_ctl_client *c, size_t max, void (*cb)(void *, json_t *),
    void *arg, int *truncated)
{
	unsigned char out[16];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct list_rows l = { cb, arg, 0, 0 };
	struct ipc_rd r;
	uint32_t trunc, n;

	*truncated = 0;
	if (max > RELAY_CTL_LIST_MAX)
		max = RELAY_CTL_LIST_MAX;
	if (c->fd == -1)
		return local_list(c, max, cb, arg, truncated);
	ipc_put_u32(&b, (uint32_t)max);
	remote_call(c, RELAY_CTL_LIST, &b, list_row, &l, 8, &r);
	trunc = ipc_get_u32(&r);
	n = ipc_get_u32(&r);
	if (trunc > 1 || n != l.n)
		r.failed = 1;
	remote_done(c, RELAY_CTL_LIST, &r);
	*truncated = (int)trunc;
	return l.oom ? -1 : (ssize_t)l.n;
}

void
relay_ctl_holds(struct relay_ctl_client *c, void (*cb)(void *, const struct relay_ctl_hold *),
    void *arg)
{
	unsigned char out[16];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct hold_rows h = { cb, arg };
	struct ipc_rd r;

	if (c->fd == -1) {
		local_holds(c, cb, arg);
		return;
	}
	remote_call(c, RELAY_CTL_HOLDS, &b, hold_row, &h, 0, &r);
	remote_done(c, RELAY_CTL_HOLDS, &r);
}

void
relay_ctl_pool(struct relay_ctl_client *c, const char *account, struct upstream_pool_stats *st)
{
	unsigned char out[2 + VAULT_ADDR_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct ipc_rd r;

	memset(st, 0, sizeof(*st));
	if (c->fd == -1) {
		local_pool(c, account, st);
		return;
	}
	if (strlen(account) >= VAULT_ADDR_MAX)
		return;
	ipc_put_str(&b, account);
	remote_call(c, RELAY_CTL_POOL, &b, NULL, NULL, CTL_POOL_LEN, &r);
	st->sessions = (size_t)ipc_get_u64(&r);
	st->idle = (size_t)ipc_get_u64(&r);
	st->waiting = (size_t)ipc_get_u64(&r);
	st->logins = ipc_get_u64(&r);
	st->messages = ipc_get_u64(&r);
	st->connects = ipc_get_u64(&r);
	remote_done(c, RELAY_CTL_POOL, &r);
}

void
relay_ctl_metrics(struct relay_ctl_client *c,
    void (*cb)(void *, const struct relay_ctl_counts *), void *arg)
{
	unsigned char out[16];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct counts_rows cr = { cb, arg };
	struct ipc_rd r;

	if (c->fd == -1) {
		local_metrics(c, cb, arg);
		return;
	}
	remote_call(c, RELAY_CTL_METRICS, &b, counts_row, &cr, 0, &r);
	remote_done(c, RELAY_CTL_METRICS, &r);
}

int
relay_ctl_retry(struct relay_ctl_client *c, const char *id)
{
	unsigned char out[2 + RELAY_CTL_ID_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct ipc_rd r;
	uint32_t rc;

	if (c->fd == -1)
		return local_retry(c, id);
	if (strlen(id) >= RELAY_CTL_ID_MAX || !spool_id_valid(id))
		return -1;
	ipc_put_str(&b, id);
	remote_call(c, RELAY_CTL_RETRY, &b, NULL, NULL, 4, &r);
	rc = ipc_get_u32(&r);
	if (rc > 1)
		r.failed = 1;
	remote_done(c, RELAY_CTL_RETRY, &r);
	return rc == 0 ? 0 : -1;
}

int
relay_ctl_delete(struct relay_ctl_client *c, const char *id, const char *by,
    void (*done)(void *, int, int), void *arg)
{
	unsigned char out[4 + RELAY_CTL_ID_MAX + RELAY_CTL_BY_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct ctl_delete *d;
	struct queue *q = ctl_queue(c);
	char byb[RELAY_CTL_BY_MAX], err[256];

	if (c->n_deletes >= RELAY_CTL_DELETES_MAX) {
		errno = EBUSY;
		return -1;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return -1;
	d->c = c;
	d->done = done;
	d->arg = arg;
	if (c->fd == -1) {
		if (q == NULL || strlen(id) >= RELAY_CTL_ID_MAX || !spool_id_valid(id) ||
		    queue_delete(q, id, by, local_delete_done, d) == -1) {
			/* Said from a turn of its own, as when it is remote. */
			d->answered = 1;
			d->rc = RELAY_CTL_NO_SUCH;
			event_active(c->ev_done, EV_TIMEOUT, 0);
		}
	} else if (strlen(id) >= RELAY_CTL_ID_MAX) {
		d->answered = 1;
		d->rc = RELAY_CTL_NO_SUCH;
		event_active(c->ev_done, EV_TIMEOUT, 0);
	} else {
		/* The queue keeps QUEUE_BY_MAX - 1 bytes of it: cut it alike. */
		strlcpy(byb, by, sizeof(byb));
		ipc_put_str(&b, id);
		ipc_put_str(&b, byb);
		d->id = ++c->next_id;
		if (b.failed || ipc_send_sync(c->fd, RELAY_CTL_DELETE, d->id, -1, b.p, b.len, err,
		    sizeof(err)) == -1)
			ctl_fatal(RELAY_CTL_DELETE, b.failed ? "request does not fit" : err);
	}
	TAILQ_INSERT_TAIL(&c->deletes, d, entry);
	c->n_deletes++;
	return 0;
}

void
relay_ctl_delete_cancel(struct relay_ctl_client *c, void *arg)
{
	struct ctl_delete *d, *next;
	struct queue *q = ctl_queue(c);

	for (d = TAILQ_FIRST(&c->deletes); d != NULL; d = next) {
		next = TAILQ_NEXT(d, entry);
		if (d->arg != arg || d->done == NULL)
			continue;
		if (c->fd == -1) {
			if (q != NULL)
				queue_delete_cancel(q, d);
			TAILQ_REMOVE(&c->deletes, d, entry);
			c->n_deletes--;
			free(d);
		} else if (d->answered) {
			TAILQ_REMOVE(&c->deletes, d, entry);
			c->n_deletes--;
			free(d);
		} else {
			/* Its answer is still to come: recognised, then dropped. */
			d->done = NULL;
			d->arg = NULL;
		}
	}
}

/* ---- The relay's side ------------------------------------------------------------ */

struct srv_delete {
	TAILQ_ENTRY(srv_delete)	 entry;
	struct relay_ctl	*ctl;
	uint32_t		 id;
};
TAILQ_HEAD(srv_delete_list, srv_delete);

struct relay_ctl {
	struct ipc		*ipc;		/* NULL once the admin process is gone */
	struct relay_ctl_client	*local;
	struct srv_delete_list	 deletes;
};

static void
srv_send(struct relay_ctl *ctl, uint16_t type, uint32_t id, const struct ipc_buf *b)
{
	if (b->failed)
		fatal("relay_ctl: answer to type %u does not fit", type);
	if (ipc_send(ctl->ipc, type, id, -1, b->p, b->len) == -1)
		fatal("relay_ctl: cannot queue the answer to type %u", type);
}

struct srv_rows {
	struct relay_ctl	*ctl;
	uint32_t		 id;
	size_t			 n;
	int			 dropped;
};

static void
srv_list_row(void *arg, json_t *entry)
{
	struct srv_rows *s = arg;
	char *text = json_dumps(entry, CTL_JSON_FLAGS);
	size_t len = text != NULL ? strlen(text) : 0;

	json_decref(entry);
	if (text == NULL || len == 0 || len > IPC_PAYLOAD_MAX) {
		/* Cannot happen with the recipients cut; said, not sent. */
		s->dropped = 1;
		free(text);
		return;
	}
	if (ipc_send(s->ctl->ipc, RELAY_CTL_LIST | RELAY_CTL_ROW, s->id, -1, text, len) == -1)
		fatal("relay_ctl: cannot queue a queue entry");
	free(text);
	s->n++;
}

static void
srv_hold_row(void *arg, const struct relay_ctl_hold *h)
{
	struct srv_rows *s = arg;
	unsigned char out[CTL_HOLD_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };

	ipc_put_str(&b, h->account);
	ipc_put_u64(&b, h->queued);
	ipc_put_u64(&b, h->held);
	ipc_put_str(&b, h->reason);
	srv_send(s->ctl, RELAY_CTL_HOLDS | RELAY_CTL_ROW, s->id, &b);
	s->n++;
}

static void
srv_counts_row(void *arg, const struct relay_ctl_counts *n)
{
	struct srv_rows *s = arg;
	unsigned char out[CTL_COUNTS_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	int i;

	ipc_put_str(&b, n->account);
	for (i = 0; i < METRICS_STATUS_COUNT; i++)
		ipc_put_u64(&b, n->messages[i]);
	ipc_put_u64(&b, n->auth_failures);
	srv_send(s->ctl, RELAY_CTL_METRICS | RELAY_CTL_ROW, s->id, &b);
	s->n++;
}

static void
srv_delete_done(void *arg, int rc, int error)
{
	struct srv_delete *d = arg;
	struct relay_ctl *ctl = d->ctl;
	unsigned char out[8];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };

	TAILQ_REMOVE(&ctl->deletes, d, entry);
	if (ctl->ipc != NULL) {
		ipc_put_u32(&b, (uint32_t)rc);
		ipc_put_u32(&b, rc != RELAY_CTL_FAILED ? 0 : (error > 0 && error <= CTL_ERRNO_MAX ?
		    (uint32_t)error : EIO));
		srv_send(ctl, RELAY_CTL_DELETE | RELAY_CTL_REPLY, d->id, &b);
	}
	free(d);
}

static void __attribute__((noreturn))
srv_refuse(uint16_t type, const char *why)
{
	log_err("event=ipc_refused peer=admin type=%u error=\"%s\" action=exit", type, why);
	exit(IPC_EXIT_FATAL);
}

static void
srv_recv(struct ipc *ipc, const struct ipc_msg *m, void *arg)
{
	struct relay_ctl *ctl = arg;
	unsigned char out[CTL_STATS_LEN + CTL_POOL_LEN];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	char account[VAULT_ADDR_MAX], id[RELAY_CTL_ID_MAX], by[RELAY_CTL_BY_MAX];
	struct upstream_pool_stats ps;
	struct queue_stats st;
	struct srv_rows rows;
	struct srv_delete *d;
	enum relay_ctl_mode mode;
	uint32_t max;
	ssize_t n;
	int trunc;

	memset(&rows, 0, sizeof(rows));
	rows.ctl = ctl;
	rows.id = m->id;
	switch (m->type) {
	case RELAY_CTL_STATS:
		mode = relay_ctl_stats(ctl->local, &st);
		ipc_put_u32(&b, (uint32_t)mode);
		ipc_put_u64(&b, st.messages);
		ipc_put_u64(&b, st.active);
		ipc_put_u64(&b, st.deferred);
		ipc_put_u64(&b, st.held);
		ipc_put_u64(&b, st.failed);
		ipc_put_u64(&b, st.inflight);
		ipc_put_u64(&b, st.body_bytes);
		break;
	case RELAY_CTL_LIST:
		max = ipc_get_u32(&r);
		if (ipc_rd_done(&r) == -1 || max > RELAY_CTL_LIST_MAX)
			srv_refuse(m->type, "malformed payload");
		n = relay_ctl_list(ctl->local, max, srv_list_row, &rows, &trunc);
		/* An entry that could not be sent is a cut listing, as is memory
		 * running out part way. */
		ipc_put_u32(&b, trunc || rows.dropped || n == -1 ? 1 : 0);
		ipc_put_u32(&b, (uint32_t)rows.n);
		break;
	case RELAY_CTL_HOLDS:
		relay_ctl_holds(ctl->local, srv_hold_row, &rows);
		break;
	case RELAY_CTL_POOL:
		ipc_get_str(&r, account, sizeof(account));
		if (ipc_rd_done(&r) == -1)
			srv_refuse(m->type, "malformed payload");
		relay_ctl_pool(ctl->local, account, &ps);
		ipc_put_u64(&b, ps.sessions);
		ipc_put_u64(&b, ps.idle);
		ipc_put_u64(&b, ps.waiting);
		ipc_put_u64(&b, ps.logins);
		ipc_put_u64(&b, ps.messages);
		ipc_put_u64(&b, ps.connects);
		break;
	case RELAY_CTL_METRICS:
		relay_ctl_metrics(ctl->local, srv_counts_row, &rows);
		break;
	case RELAY_CTL_RETRY:
		ipc_get_str(&r, id, sizeof(id));
		if (ipc_rd_done(&r) == -1)
			srv_refuse(m->type, "malformed payload");
		ipc_put_u32(&b, relay_ctl_retry(ctl->local, id) == 0 ? 0 : 1);
		break;
	case RELAY_CTL_DELETE:
		ipc_get_str(&r, id, sizeof(id));
		ipc_get_str(&r, by, sizeof(by));
		if (ipc_rd_done(&r) == -1)
			srv_refuse(m->type, "malformed payload");
		if ((d = calloc(1, sizeof(*d))) == NULL)
			fatal("relay_ctl: out of memory");
		d->ctl = ctl;
		d->id = m->id;
		TAILQ_INSERT_TAIL(&ctl->deletes, d, entry);
		if (relay_ctl_delete(ctl->local, id, by, srv_delete_done, d) == -1)
			srv_delete_done(d, RELAY_CTL_FAILED, errno);
		return;		/* answered when the queue is done */
	default:
		srv_refuse(m->type, "unexpected type");
	}
	srv_send(ctl, (uint16_t)(m->type | RELAY_CTL_REPLY), m->id, &b);
}

static void
srv_event(struct ipc *ipc, enum ipc_event ev, const char *why, void *arg)
{
	struct relay_ctl *ctl = arg;

	if (ev != IPC_EV_CLOSED) {
		log_err("event=ipc_fatal peer=admin error=\"%s\" action=exit", why);
		exit(IPC_EXIT_FATAL);
	}
	/* The admin process is gone (the daemon stops): mail goes on. */
	log_info("event=relay_ctl_closed peer=admin");
	ipc_free(ctl->ipc);
	ctl->ipc = NULL;
}

struct relay_ctl *
relay_ctl_new(struct event_base *base, int fd, struct relay *r)
{
	struct relay_ctl *ctl;

	if ((ctl = calloc(1, sizeof(*ctl))) == NULL)
		return NULL;
	TAILQ_INIT(&ctl->deletes);
	if ((ctl->local = relay_ctl_client_local(base, r)) == NULL ||
	    (ctl->ipc = ipc_new(base, fd, "admin", relay_ctl_rules_request,
	    relay_ctl_n_rules_request, srv_recv, srv_event, ctl)) == NULL) {
		relay_ctl_client_free(ctl->local);
		free(ctl);
		return NULL;
	}
	return ctl;
}

void
relay_ctl_free(struct relay_ctl *ctl)
{
	struct srv_delete *d;

	if (ctl == NULL)
		return;
	/* The local client cancels the queue's callbacks for these. */
	relay_ctl_client_free(ctl->local);
	while ((d = TAILQ_FIRST(&ctl->deletes)) != NULL) {
		TAILQ_REMOVE(&ctl->deletes, d, entry);
		free(d);
	}
	ipc_free(ctl->ipc);
	free(ctl);
}
