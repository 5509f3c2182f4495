/*
 * queue.c: the delivery engine of delivery = queue (see queue.h).
 *
 * A message's life, one state at a time (enum qm_state):
 *
 *   COMMIT    its file and "queued" event are on their way to the disk;
 *             the client waits for its 250
 *   WAITING   on disk, on its account's ready list (due now) or on the
 *             queue's later list (next attempt in the future)
 *   LOADING   its bytes are being read back (they are dropped from memory
 *             while it waits)
 *   SENDING   with the upstream pools, as one or more transactions
 *   UPDATING  the attempt's outcome (event, state file, removal or move to
 *             failed/) is on its way to the disk
 *   FAILED    in failed/, until retried or deleted
 *   DELETING  being removed on the operator's request
 *
 * At most one spool operation per message is in flight, which is what
 * lets spool_io.c reorder a batch. An operator action that arrives while
 * one is (retry, delete) is remembered and carried out afterwards.
 *
 * Accounts are scheduled independently: each has a FIFO of due messages,
 * a cap on messages in flight (QUEUE_INFLIGHT_PER_SESSION per upstream
 * session), and at most one hold (credential refused, quota, Google's
 * daily limit, rate replies) that stops it until released.
 */
#include "queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "audit.h"
#include "config.h"
#include "credential.h"
#include "log.h"
#include "metrics.h"
#include "queue_ctl.h"
#include "quota.h"
#include "smtp_client.h"
#include "smtp_reply.h"
#include "spool.h"
#include "spool_io.h"
#include "upstream_pool.h"
#include "util.h"

#define QUEUE_LOG_TEXT_MAX	600
#define QUEUE_DEFAULT_DELAY	60	/* s, when the retry schedule is empty */
#define QUEUE_AUDIT_BACKOFF_SECS 10	/* refuse new messages this long after an
					 * audit write failed */
#define QUEUE_SENT_LOG		"sent.log"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)				\
	for ((var) = TAILQ_FIRST(head);						\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);		\
	    (var) = (tvar))
#endif

enum qm_state {
	QM_COMMIT,
	QM_WAITING,
	QM_LOADING,
	QM_SENDING,
	QM_UPDATING,
	QM_FAILED,
	QM_DELETING,
};

enum qm_list { QL_NONE, QL_READY, QL_LATER };

/* Where a message goes when its UPDATING operation is done. */
enum qm_after { AFTER_GONE, AFTER_WAITING, AFTER_FAILED };

enum hold_kind { HOLD_NONE, HOLD_AUTH, HOLD_QUOTA, HOLD_LIMIT, HOLD_RATE };

static const char *const hold_names[] = { "none", "credential", "quota", "daily_limit",
	"rate" };

struct qmsg;

/* One upstream transaction of an attempt (at most QUEUE_RCPTS_PER_TXN). */
struct qchunk {
	struct qmsg		*m;
	struct relay_msg	view;		/* the message with this chunk's rcpts */
	size_t			*idx;		/* their indices in the message */
	struct upstream_job	*job;
	struct smtp_outcome	outcome;
	int			finished;
};

struct qmsg {
	TAILQ_ENTRY(qmsg)	all;		/* q->msgs, oldest first */
	TAILQ_ENTRY(qmsg)	link;		/* account ready list or q->later */
	struct queue		*q;
	struct qaccount		*acct;
	enum qm_state		state;
	enum qm_list		list;
	enum qm_after		after;
	enum spool_area		area;		/* queue/ or failed/ on disk */
	struct relay_msg	msg;		/* msg.data: the bytes, when in memory */
	struct spool_meta	meta;
	struct spool_state	st;
	relay_cb		*cb;		/* the client waiting for its 250 */
	void			*cb_arg;
	struct qchunk		*chunks;
	size_t			n_chunks, chunks_left;
	struct timespec		start;
	struct quota_ticket	ticket;
	int			retry_pending;
	int			delete_pending;
	char			delete_by[QUEUE_BY_MAX];
	void			(*delete_done)(void *, int);
	void			*delete_arg;
};
TAILQ_HEAD(qmsg_list, qmsg);

struct qaccount {
	TAILQ_ENTRY(qaccount)	entry;
	char			name[VAULT_ADDR_MAX];
	struct qmsg_list	ready;
	size_t			inflight;
	enum hold_kind		hold;
	time_t			hold_until;	/* 0: until released */
	uint32_t		hold_version;	/* HOLD_AUTH: the refused version */
	unsigned		rate_step;
	char			hold_reason[QUEUE_REASON_MAX];
};
TAILQ_HEAD(qaccount_list, qaccount);

struct queue {
	struct event_base	*base;
	const struct config	*cfg;
	struct credstore	*cs;
	struct upstream_pool	*pool;
	struct quota		*quota;
	struct spool		*sp;
	struct spool_io		*io;
	struct queue_ctl	*ctl;
	struct qmsg_list	msgs;
	struct qmsg_list	later;
	struct qaccount_list	accounts;
	struct event		*tick_ev, *run_ev, *drain_ev;
	size_t			n_failed;
	size_t			inflight;	/* LOADING + SENDING */
	size_t			pending_ops;
	uint64_t		body_bytes;
	int			audit_ready;	/* queue_set_audit() was called */
	int			have_audit;
	time_t			audit_failed;
	int			draining;
	int			drain_phase;	/* 0 grace, 1 abandoned, 2 pool, 3 done */
	void			(*drain_done)(void *);
	void			*drain_arg;
};

static void	queue_kick(struct queue *);
static void	msg_dispatch_send(struct qmsg *);
static void	msg_start_delete(struct qmsg *);
static void	drain_check(struct queue *);

/* ---- Rules --------------------------------------------------------------- */

enum queue_verdict
queue_classify(const struct smtp_outcome *o)
{
	if (o->error == SMTP_ERR_NONE)
		return QUEUE_DELIVERED;
	if (o->auth_failed || o->error == SMTP_ERR_AUTH_REFUSED)
		return QUEUE_AUTH;
	if (SMTP_REPLY_IS_5XX(o->code) && strcmp(o->enhanced, "5.4.5") == 0)
		return QUEUE_LIMIT;
	if (o->code == 421 || o->code == 454 ||
	    (SMTP_REPLY_IS_4XX(o->code) && strncmp(o->enhanced, "4.7.", 4) == 0))
		return QUEUE_RATE;
	switch (o->error) {
	case SMTP_ERR_REPLY:
		/* A 5xx to the message itself is final; one before it (greeting,
		 * EHLO) says something about the server, not the message. */
		if (SMTP_REPLY_IS_5XX(o->code) && !o->temporary &&
		    o->stage >= SMTP_STAGE_MAIL && o->stage <= SMTP_STAGE_DATA)
			return QUEUE_PERMANENT;
		return QUEUE_TEMPORARY;
	case SMTP_ERR_TOO_BIG:
	case SMTP_ERR_UNSUPPORTED:
		return QUEUE_PERMANENT;
	default:
		return QUEUE_TEMPORARY;
	}
}

const char *
queue_verdict_name(enum queue_verdict v)
{
	static const char *const names[] = { "delivered", "temporary", "permanent",
		"credential", "daily_limit", "rate" };

	return (unsigned)v < ARRAY_SIZE(names) ? names[v] : "unknown";
}

/* Which verdict of several transactions decides the message's fate. */
static int
verdict_rank(enum queue_verdict v)
{
	switch (v) {
	case QUEUE_AUTH:
		return 5;
	case QUEUE_LIMIT:
		return 4;
	case QUEUE_PERMANENT:
		return 3;
	case QUEUE_RATE:
		return 2;
	case QUEUE_TEMPORARY:
		return 1;
	case QUEUE_DELIVERED:
		break;
	}
	return 0;
}

uint64_t
queue_retry_delay(const uint64_t *schedule, size_t n, uint32_t attempts)
{
	size_t k;

	if (n == 0)
		return QUEUE_DEFAULT_DELAY;
	k = attempts == 0 ? 0 : attempts - 1;
	return schedule[k < n ? k : n - 1];
}

int
queue_next_attempt(const uint64_t *schedule, size_t n, uint64_t lifetime, time_t born,
    uint32_t attempts, time_t now, time_t *next)
{
	time_t deadline = born + (time_t)lifetime;
	time_t t;

	if (now >= deadline)
		return -1;
	t = now + (time_t)queue_retry_delay(schedule, n, attempts);
	*next = t > deadline ? deadline : t;
	return 0;
}

/* ---- Helpers ------------------------------------------------------------- */

static long long
elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(now.tv_sec - start->tv_sec) * 1000 +
	    (now.tv_nsec - start->tv_nsec) / 1000000;
}

static time_t
msg_born(const struct qmsg *m)
{
	return m->st.since > 0 ? m->st.since : m->meta.received;
}

static size_t
msg_remaining(const struct qmsg *m)
{
	size_t i, n = 0;

	for (i = 0; i < m->msg.n_rcpts; i++)
		if (!spool_state_done(&m->st, i))
			n++;
	return n;
}

static void
body_drop(struct qmsg *m)
{
	if (m->msg.data == NULL)
		return;
	m->q->body_bytes -= evbuffer_get_length(m->msg.data);
	evbuffer_free(m->msg.data);
	m->msg.data = NULL;
}

static struct qaccount *
account_get(struct queue *q, const char *name)
{
	struct qaccount *a;

	TAILQ_FOREACH(a, &q->accounts, entry)
		if (strcasecmp(a->name, name) == 0)
			return a;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	strlcpy(a->name, name, sizeof(a->name));
	TAILQ_INIT(&a->ready);
	TAILQ_INSERT_TAIL(&q->accounts, a, entry);
	return a;
}

static void
list_remove(struct qmsg *m)
{
	switch (m->list) {
	case QL_READY:
		TAILQ_REMOVE(&m->acct->ready, m, link);
		break;
	case QL_LATER:
		TAILQ_REMOVE(&m->q->later, m, link);
		break;
	case QL_NONE:
		break;
	}
	m->list = QL_NONE;
}

/* Back to WAITING, on the right list for its next attempt. */
static void
msg_wait(struct qmsg *m, time_t now)
{
	list_remove(m);
	m->state = QM_WAITING;
	if (m->retry_pending) {
		m->retry_pending = 0;
		m->st.next_attempt = 0;
	}
	if (m->st.next_attempt <= now) {
		TAILQ_INSERT_TAIL(&m->acct->ready, m, link);
		m->list = QL_READY;
		queue_kick(m->q);
	} else {
		TAILQ_INSERT_TAIL(&m->q->later, m, link);
		m->list = QL_LATER;
	}
}

static void
chunks_free(struct qmsg *m)
{
	size_t i;

	for (i = 0; i < m->n_chunks; i++) {
		free(m->chunks[i].view.rcpts);
		free(m->chunks[i].idx);
	}
	free(m->chunks);
	m->chunks = NULL;
	m->n_chunks = m->chunks_left = 0;
}

static void
msg_free(struct qmsg *m)
{
	list_remove(m);
	TAILQ_REMOVE(&m->q->msgs, m, all);
	body_drop(m);
	chunks_free(m);
	spool_msg_clear(&m->msg);
	spool_meta_free(&m->meta);
	spool_state_free(&m->st);
	free(m);
}

static struct qmsg *
msg_find(struct queue *q, const char *id)
{
	struct qmsg *m;

	TAILQ_FOREACH(m, &q->msgs, all)
		if (strcmp(m->msg.queue_id, id) == 0 && m->state != QM_COMMIT)
			return m;
	return NULL;
}

static void account_hold(struct qaccount *, enum hold_kind, time_t, uint32_t, const char *,
    ...) __attribute__((format(printf, 5, 6)));

static void
account_hold(struct qaccount *a, enum hold_kind kind, time_t until, uint32_t version,
    const char *fmt, ...)
{
	char stamp[32];
	va_list ap;

	a->hold = kind;
	a->hold_until = until;
	a->hold_version = version;
	va_start(ap, fmt);
	vsnprintf(a->hold_reason, sizeof(a->hold_reason), fmt, ap);
	va_end(ap);
	if (until > 0)
		time_rfc3339(until, stamp, sizeof(stamp));
	log_warn("event=account_hold account=%s hold=%s until=%s reason=\"%s\"", a->name,
	    hold_names[kind], until > 0 ? stamp : "released", a->hold_reason);
}

static void
account_release(struct queue *q, struct qaccount *a, const char *why)
{
	if (a->hold == HOLD_NONE)
		return;
	log_info("event=account_release account=%s hold=%s why=\"%s\"", a->name,
	    hold_names[a->hold], why);
	if (a->hold == HOLD_AUTH)
		upstream_pool_release(q->pool, a->name);
	a->hold = HOLD_NONE;
	a->hold_until = 0;
	a->hold_reason[0] = '\0';
}

/* Has a hold run its course? */
static void
account_check_hold(struct queue *q, struct qaccount *a, time_t now)
{
	struct cred_info info;

	switch (a->hold) {
	case HOLD_NONE:
		return;
	case HOLD_AUTH:
		if (credstore_info(q->cs, a->name, &info) == CRED_OK &&
		    info.version != a->hold_version) {
			account_release(q, a, "the credential was changed");
			return;
		}
		break;
	case HOLD_QUOTA:
	case HOLD_LIMIT:
	case HOLD_RATE:
		break;
	}
	if (a->hold_until != 0 && now >= a->hold_until)
		account_release(q, a, "the hold expired");
}

/* ---- Attempts ------------------------------------------------------------ */

/* The upstream reply of an attempt, for the audit log and the state file:
 * one transaction's reply as it is, several labelled one per line. */
static void
attempt_reply(const struct qmsg *m, char *buf, size_t len)
{
	char one[SMTP_CLIENT_REPLY_MAX + 32], line[SMTP_CLIENT_REPLY_MAX + 128];
	size_t i;

	buf[0] = '\0';
	for (i = 0; i < m->n_chunks; i++) {
		smtp_outcome_reply(&m->chunks[i].outcome, one, sizeof(one));
		if (m->n_chunks == 1) {
			strlcpy(buf, one, len);
			return;
		}
		snprintf(line, sizeof(line), "%stransaction %zu/%zu (%zu recipients): %s",
		    i > 0 ? "\n" : "", i + 1, m->n_chunks, m->chunks[i].view.n_rcpts, one);
		strlcat(buf, line, len);
	}
}

static json_t *
msg_event(const struct qmsg *m, enum audit_status st, const char *reply, uint32_t version,
    uint32_t attempt, uint64_t ms)
{
	if (!m->q->have_audit)
		return NULL;
	return relay_audit_event(&m->msg, &m->meta.fields, m->meta.size, st, reply, version,
	    attempt, ms);
}

static enum metrics_status
metrics_for(enum audit_status st)
{
	switch (st) {
	case AUDIT_STATUS_DELIVERED:
		return METRICS_DELIVERED;
	case AUDIT_STATUS_FAILED:
		return METRICS_FAILED;
	case AUDIT_STATUS_QUEUED:
		return METRICS_QUEUED;
	case AUDIT_STATUS_REJECTED:
		return METRICS_REJECTED;
	case AUDIT_STATUS_DEFERRED:
		break;
	}
	return METRICS_DEFERRED;
}

static void updated_cb(struct spool_io_op *, void *);

/* The outcome is on disk (or could not be written): where m goes now. */
static void
msg_after(struct qmsg *m)
{
	struct queue *q = m->q;

	switch (m->after) {
	case AFTER_GONE:
		if (m->delete_pending && m->delete_done != NULL) {
			errno = ENOENT;
			m->delete_done(m->delete_arg, -1);
		}
		msg_free(m);
		drain_check(q);
		return;
	case AFTER_FAILED:
		m->state = QM_FAILED;
		m->area = SPOOL_FAILED;
		q->n_failed++;
		if (m->retry_pending) {
			m->retry_pending = 0;
			(void)queue_retry(q, m->msg.queue_id);
		}
		break;
	case AFTER_WAITING:
		m->area = SPOOL_QUEUE;
		msg_wait(m, time(NULL));
		break;
	}
	if (m->delete_pending) {
		m->delete_pending = 0;
		list_remove(m);
		msg_start_delete(m);
	}
	drain_check(q);
}

/*
 * Record an outcome: event, state, and the spool operation that goes with
 * it (REMOVE when delivered, FAIL when failed, STATE when it waits).
 */
static void
msg_record(struct qmsg *m, enum audit_status st, const char *reply, uint32_t version,
    uint64_t ms)
{
	struct queue *q = m->q;
	struct spool_io_op *op;
	enum spool_io_kind kind;

	if (reply != NULL && spool_state_set_reply(&m->st, reply) == -1)
		log_warn("event=out_of_memory queue_id=%s", m->msg.queue_id);
	metrics_message(m->msg.account, metrics_for(st));
	switch (st) {
	case AUDIT_STATUS_DELIVERED:
		kind = SPOOL_IO_REMOVE;
		m->after = AFTER_GONE;
		break;
	case AUDIT_STATUS_FAILED:
		kind = SPOOL_IO_FAIL;
		m->st.failed = 1;
		m->after = AFTER_FAILED;
		break;
	default:
		kind = SPOOL_IO_STATE;
		m->after = AFTER_WAITING;
		break;
	}
	m->state = QM_UPDATING;
	if ((op = spool_io_op_new(kind, m->msg.queue_id)) == NULL ||
	    (kind != SPOOL_IO_REMOVE &&
	    spool_state_encode(&m->st, m->msg.n_rcpts, &op->text, &op->textlen) == -1)) {
		/* Out of memory: memory stays the truth until the next restart. */
		log_err("event=queue_update queue_id=%s error=\"out of memory\"",
		    m->msg.queue_id);
		spool_io_op_free(op);
		msg_after(m);
		return;
	}
	op->area = SPOOL_QUEUE;
	op->event = msg_event(m, st, reply, version, m->st.attempts, ms);
	op->done = updated_cb;
	op->arg = m;
	q->pending_ops++;
	spool_io_submit(q->io, op);
}

static void
updated_cb(struct spool_io_op *op, void *arg)
{
	struct qmsg *m = arg;

	m->q->pending_ops--;
	if (op->error != 0)
		log_err("event=spool_update queue_id=%s error=\"%s\"", m->msg.queue_id,
		    op->errtext);
	spool_io_op_free(op);
	msg_after(m);
}

static void
attempt_finished(struct qmsg *m)
{
	struct queue *q = m->q;
	struct qaccount *a = m->acct;
	const struct config *cfg = q->cfg;
	struct qchunk *ch;
	enum queue_verdict v, worst = QUEUE_DELIVERED;
	enum audit_status st;
	char reply[SPOOL_REPLY_MAX], note[SPOOL_REPLY_MAX], esc[QUEUE_LOG_TEXT_MAX];
	uint32_t version = 0;
	size_t i, j, remaining = m->ticket.rcpts, delivered = 0;
	time_t now = time(NULL), next = 0;
	long long ms = elapsed_ms(&m->start);

	a->inflight--;
	q->inflight--;
	for (i = 0; i < m->n_chunks; i++) {
		ch = &m->chunks[i];
		v = queue_classify(&ch->outcome);
		if (version == 0)
			version = ch->outcome.cred_version;
		if (v == QUEUE_DELIVERED) {
			for (j = 0; j < ch->view.n_rcpts; j++)
				(void)spool_state_set_done(&m->st, ch->idx[j], m->msg.n_rcpts);
			delivered += ch->view.n_rcpts;
		} else if (verdict_rank(v) > verdict_rank(worst)) {
			worst = v;
		}
	}
	attempt_reply(m, reply, sizeof(reply));
	m->st.attempts++;
	m->st.last_attempt = now;

	/* The quota counts what the upstream took, and the sent log keeps it. */
	quota_give_back(&m->ticket, delivered == 0 ? 1 : 0,
	    (uint32_t)(remaining > delivered ? remaining - delivered : 0));
	if (delivered > 0)
		(void)quota_log_append(q->quota, m->msg.account, m->ticket.msgs,
		    (uint32_t)delivered, now);
	memset(&m->ticket, 0, sizeof(m->ticket));

	if (msg_remaining(m) == 0) {
		st = AUDIT_STATUS_DELIVERED;
		a->rate_step = 0;
	} else {
		switch (worst) {
		case QUEUE_AUTH:
			if (version == 0) {
				struct cred_info info;

				if (credstore_info(q->cs, a->name, &info) == CRED_OK)
					version = info.version;
			}
			if (a->hold != HOLD_AUTH)
				account_hold(a, HOLD_AUTH, now + QUEUE_AUTH_RETRY_SECS, version,
				    "the upstream refused credential version %u; waiting for "
				    "a rotation or 'queue retry'", version);
			break;
		case QUEUE_LIMIT:
			if (a->hold != HOLD_LIMIT)
				account_hold(a, HOLD_LIMIT, now + QUEUE_LIMIT_HOLD_SECS, 0,
				    "the upstream's daily sending limit was reached (550 5.4.5)");
			break;
		case QUEUE_RATE:
			if (a->hold == HOLD_NONE) {
				account_hold(a, HOLD_RATE, now + (time_t)queue_retry_delay(
				    cfg->retry_schedule, cfg->n_retry, a->rate_step + 1), 0,
				    "the upstream asked to slow down");
				a->rate_step++;
			}
			break;
		default:
			break;
		}
		if (worst == QUEUE_PERMANENT) {
			st = AUDIT_STATUS_FAILED;
		} else if (queue_next_attempt(cfg->retry_schedule, cfg->n_retry,
		    cfg->queue_lifetime, msg_born(m), m->st.attempts, now, &next) == -1) {
			st = AUDIT_STATUS_FAILED;
			snprintf(note, sizeof(note), "queue lifetime expired after %u attempts; "
			    "last reply: %s", m->st.attempts, reply);
			strlcpy(reply, note, sizeof(reply));
		} else {
			st = AUDIT_STATUS_DEFERRED;
			m->st.next_attempt = next;
		}
	}
	log_info("event=queue_attempt queue_id=%s account=%s attempt=%u rcpts=%zu "
	    "transactions=%zu status=%s verdict=%s ms=%lld upstream=\"%s\"", m->msg.queue_id,
	    m->msg.account, m->st.attempts, m->msg.n_rcpts, m->n_chunks,
	    audit_status_name(st), queue_verdict_name(worst), ms,
	    log_escape(esc, sizeof(esc), reply, strlen(reply)));
	chunks_free(m);
	body_drop(m);
	msg_record(m, st, reply, version, (uint64_t)ms);
	queue_kick(q);
}

static void
chunk_done(void *arg, const struct smtp_outcome *o)
{
	struct qchunk *ch = arg;
	struct qmsg *m = ch->m;

	ch->outcome = *o;
	ch->job = NULL;
	ch->finished = 1;
	if (--m->chunks_left == 0)
		attempt_finished(m);
}

/* The bytes are in memory: hand the transactions to the pools. */
static void
msg_dispatch_send(struct qmsg *m)
{
	struct queue *q = m->q;
	struct qchunk *ch;
	size_t n = msg_remaining(m), k, i, c, cnt, next = 0;

	k = (n + QUEUE_RCPTS_PER_TXN - 1) / QUEUE_RCPTS_PER_TXN;
	if (k == 0 || (m->chunks = calloc(k, sizeof(*m->chunks))) == NULL)
		goto oom;
	m->n_chunks = m->chunks_left = k;
	for (c = 0; c < k; c++) {
		ch = &m->chunks[c];
		ch->m = m;
		ch->view = m->msg;
		cnt = n - c * QUEUE_RCPTS_PER_TXN;
		if (cnt > QUEUE_RCPTS_PER_TXN)
			cnt = QUEUE_RCPTS_PER_TXN;
		ch->view.rcpts = calloc(cnt, sizeof(*ch->view.rcpts));
		ch->idx = calloc(cnt, sizeof(*ch->idx));
		if (ch->view.rcpts == NULL || ch->idx == NULL)
			goto oom;
		ch->view.n_rcpts = 0;
		for (i = next; i < m->msg.n_rcpts && ch->view.n_rcpts < cnt; i++) {
			if (spool_state_done(&m->st, i))
				continue;
			memcpy(ch->view.rcpts[ch->view.n_rcpts], m->msg.rcpts[i],
			    sizeof(ch->view.rcpts[0]));
			ch->idx[ch->view.n_rcpts++] = i;
		}
		next = i;
	}
	m->state = QM_SENDING;
	for (c = 0; c < k; c++) {
		ch = &m->chunks[c];
		if ((ch->job = upstream_pool_send(q->pool, &ch->view, 0, chunk_done, ch)) != NULL)
			continue;
		memset(&ch->outcome, 0, sizeof(ch->outcome));
		ch->outcome.error = SMTP_ERR_NETWORK;
		ch->outcome.temporary = 1;
		strlcpy(ch->outcome.text, "out of memory", sizeof(ch->outcome.text));
		ch->finished = 1;
		if (--m->chunks_left == 0)
			attempt_finished(m);
	}
	return;
oom:
	log_err("event=queue_dispatch queue_id=%s error=\"out of memory\"", m->msg.queue_id);
	chunks_free(m);
	m->acct->inflight--;
	q->inflight--;
	quota_give_back(&m->ticket, m->ticket.msgs, m->ticket.rcpts);
	m->st.next_attempt = time(NULL) + QUEUE_DEFAULT_DELAY;
	msg_wait(m, time(NULL));
}

static void
loaded_cb(struct spool_io_op *op, void *arg)
{
	struct qmsg *m = arg;
	struct queue *q = m->q;

	q->pending_ops--;
	if (op->error == 0) {
		m->msg.data = op->loaded.data;
		op->loaded.data = NULL;
		q->body_bytes += evbuffer_get_length(m->msg.data);
	} else {
		log_err("event=spool_load queue_id=%s error=\"%s\"", m->msg.queue_id, op->errtext);
	}
	spool_io_op_free(op);
	if (m->msg.data != NULL && !m->delete_pending && !q->draining) {
		msg_dispatch_send(m);
		return;
	}
	/* Not sent after all: it was never counted as an attempt. */
	m->acct->inflight--;
	q->inflight--;
	quota_give_back(&m->ticket, m->ticket.msgs, m->ticket.rcpts);
	if (m->delete_pending) {
		m->delete_pending = 0;
		msg_start_delete(m);
	} else if (m->msg.data == NULL) {
		/* Unreadable now: try again later (recovery re-checks the file). */
		m->st.next_attempt = time(NULL) + (time_t)queue_retry_delay(
		    q->cfg->retry_schedule, q->cfg->n_retry, 1);
		msg_wait(m, time(NULL));
	} else {
		msg_wait(m, time(NULL));
	}
	drain_check(q);
}

/*
 * Start an attempt for m (first on its account's ready list). Returns 0, or
 * -1 when the account's quota stops it (the account is then held).
 */
static int
msg_dispatch(struct queue *q, struct qaccount *a, struct qmsg *m, time_t now)
{
	struct quota_limits lim;
	struct cred_info info;
	struct spool_io_op *op;
	char stamp[32], reply[SPOOL_REPLY_MAX];
	size_t n = msg_remaining(m);
	time_t room;

	if (credstore_info(q->cs, a->name, &info) == CRED_OK)
		quota_limits(info.daily_limit, info.daily_rcpt_limit, &lim);
	else
		quota_limits(0, 0, &lim);
	if (quota_check(q->quota, a->name, &lim, 1, (uint32_t)n, now, &room) == -1) {
		if (room == 0) {
			/* It can never fit: waiting would only expire it. */
			list_remove(m);
			snprintf(reply, sizeof(reply), "the message has %zu recipients, more than "
			    "the daily recipient limit of %s (%llu)", n, a->name,
			    (unsigned long long)lim.rcpts);
			m->st.attempts++;
			m->st.last_attempt = now;
			msg_record(m, AUDIT_STATUS_FAILED, reply, 0, 0);
			return 0;
		}
		time_rfc3339(room, stamp, sizeof(stamp));
		account_hold(a, HOLD_QUOTA, room, 0, "daily limit of %llu messages / %llu "
		    "recipients per 24 hours reached; room again at %s",
		    (unsigned long long)lim.messages, (unsigned long long)lim.rcpts, stamp);
		return -1;
	}
	list_remove(m);
	(void)quota_take(q->quota, a->name, 1, (uint32_t)n, now, &m->ticket);
	a->inflight++;
	q->inflight++;
	clock_gettime(CLOCK_MONOTONIC, &m->start);
	if (m->msg.data != NULL) {
		msg_dispatch_send(m);
		return 0;
	}
	m->state = QM_LOADING;
	if ((op = spool_io_op_new(SPOOL_IO_LOAD, m->msg.queue_id)) == NULL) {
		/* Out of memory: leave it for the next round. */
		a->inflight--;
		q->inflight--;
		quota_give_back(&m->ticket, m->ticket.msgs, m->ticket.rcpts);
		m->st.next_attempt = now + QUEUE_DEFAULT_DELAY;
		msg_wait(m, now);
		return 0;
	}
	op->area = SPOOL_QUEUE;
	op->done = loaded_cb;
	op->arg = m;
	q->pending_ops++;
	spool_io_submit(q->io, op);
	return 0;
}

static size_t
account_inflight_max(const struct queue *q)
{
	uint64_t s = q->cfg->max_sessions_per_account;

	return (size_t)(s == 0 ? 1 : s) * QUEUE_INFLIGHT_PER_SESSION;
}

static void
run_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	struct qaccount *a;
	struct qmsg *m;
	time_t now = time(NULL);
	size_t max = account_inflight_max(q);

	if (q->draining)
		return;
	TAILQ_FOREACH(a, &q->accounts, entry) {
		account_check_hold(q, a, now);
		while (a->hold == HOLD_NONE && a->inflight < max &&
		    (m = TAILQ_FIRST(&a->ready)) != NULL) {
			if (msg_dispatch(q, a, m, now) == -1)
				break;
		}
	}
}

static void
queue_kick(struct queue *q)
{
	event_active(q->run_ev, 0, 0);
}

/* A message that waited past its lifetime without an attempt failing it. */
static void
msg_expire(struct qmsg *m)
{
	char reply[SPOOL_REPLY_MAX];

	list_remove(m);
	snprintf(reply, sizeof(reply), "queue lifetime expired after %u attempts%s%s%s",
	    m->st.attempts, m->acct->hold != HOLD_NONE ? " (account held: " : "",
	    m->acct->hold != HOLD_NONE ? m->acct->hold_reason : "",
	    m->acct->hold != HOLD_NONE ? ")" : "");
	if (m->st.last_reply != NULL) {
		strlcat(reply, "; last reply: ", sizeof(reply));
		strlcat(reply, m->st.last_reply, sizeof(reply));
	}
	log_warn("event=queue_expired queue_id=%s account=%s attempts=%u", m->msg.queue_id,
	    m->msg.account, m->st.attempts);
	body_drop(m);
	msg_record(m, AUDIT_STATUS_FAILED, reply, 0, 0);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	struct qmsg *m, *next;
	struct qaccount *a;
	time_t now = time(NULL);

	if (q->draining)
		return;
	TAILQ_FOREACH_SAFE(m, &q->msgs, all, next) {
		if (m->state != QM_WAITING)
			continue;
		if (now >= msg_born(m) + (time_t)q->cfg->queue_lifetime) {
			msg_expire(m);
			continue;
		}
		if (m->list == QL_LATER && m->st.next_attempt <= now) {
			list_remove(m);
			TAILQ_INSERT_TAIL(&m->acct->ready, m, link);
			m->list = QL_READY;
		}
	}
	TAILQ_FOREACH(a, &q->accounts, entry)
		account_check_hold(q, a, now);
	queue_kick(q);
}

/* ---- Accepting ----------------------------------------------------------- */

static void
created_cb(struct spool_io_op *op, void *arg)
{
	struct qmsg *m = arg;
	struct queue *q = m->q;
	struct relay_result res;
	relay_cb *cb = m->cb;
	void *cb_arg = m->cb_arg;

	q->pending_ops--;
	memset(&res, 0, sizeof(res));
	m->cb = NULL;
	if (op->error != 0) {
		log_err("event=queue_refused queue_id=%s account=%s error=\"%s\"",
		    m->msg.queue_id, m->msg.account, op->errtext);
		if (op->audit_failed) {
			q->audit_failed = time(NULL);
			relay_result_set(&res, 451, "4.3.0", "the audit log cannot be written; "
			    "try again later");
		} else if (op->error == ENOSPC || op->error == EDQUOT) {
			relay_result_set(&res, 452, "4.3.1", "Insufficient system storage");
		} else {
			relay_result_set(&res, 451, "4.3.0", "Local error: cannot write the queue");
		}
		spool_io_op_free(op);
		if (m->delete_pending && m->delete_done != NULL) {
			errno = ENOENT;
			m->delete_done(m->delete_arg, -1);
		}
		msg_free(m);
	} else {
		spool_io_op_free(op);
		q->audit_failed = 0;
		metrics_message(m->msg.account, METRICS_QUEUED);
		relay_result_set(&res, 250, "2.0.0", "Ok: queued as %s", m->msg.queue_id);
		/* Bytes of a message that cannot go soon are read back later. */
		if (q->body_bytes > QUEUE_BODY_CACHE_MAX || m->acct->hold != HOLD_NONE)
			body_drop(m);
		msg_wait(m, time(NULL));
		if (m->delete_pending) {
			m->delete_pending = 0;
			list_remove(m);
			msg_start_delete(m);
		}
	}
	if (cb != NULL)
		cb(cb_arg, &res);
	drain_check(q);
}

int
queue_submit(struct queue *q, struct relay_msg *msg, relay_cb *cb, void *arg,
    struct relay_result *res)
{
	struct spool_io_op *op = NULL;
	struct qmsg *m = NULL;

	memset(res, 0, sizeof(res[0]));
	if (q->draining) {
		relay_result_set(res, 421, "4.3.2", "service shutting down, try again later");
		goto refuse;
	}
	if (!q->audit_ready || (q->audit_failed != 0 &&
	    time(NULL) - q->audit_failed < QUEUE_AUDIT_BACKOFF_SECS)) {
		relay_result_set(res, 451, "4.3.0", "the audit log cannot be written; try "
		    "again later");
		goto refuse;
	}
	if (msg->data == NULL || msg->account[0] == '\0' || msg->n_rcpts == 0 ||
	    msg->n_rcpts > SPOOL_RCPTS_MAX || !spool_id_valid(msg->queue_id) ||
	    evbuffer_get_length(msg->data) > SPOOL_BODY_MAX) {
		relay_result_set(res, 451, "4.3.0", "internal error: incomplete message");
		goto refuse;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->acct = account_get(q, msg->account)) == NULL ||
	    (op = spool_io_op_new(SPOOL_IO_CREATE, msg->queue_id)) == NULL)
		goto oom;
	m->q = q;
	m->msg = *msg;
	free(msg);
	msg = NULL;
	/* The front end read the header fields (relay_msg.fields). */
	m->meta.fields = m->msg.fields;
	memset(&m->msg.fields, 0, sizeof(m->msg.fields));
	m->meta.received = time(NULL);
	m->meta.size = evbuffer_get_length(m->msg.data);
	m->state = QM_COMMIT;
	m->area = SPOOL_QUEUE;
	m->cb = cb;
	m->cb_arg = arg;
	TAILQ_INSERT_TAIL(&q->msgs, m, all);
	q->body_bytes += m->meta.size;
	if (spool_envelope_encode(&m->msg, &m->meta, &op->text, &op->textlen) == -1 ||
	    (q->have_audit && (op->event = msg_event(m, AUDIT_STATUS_QUEUED, NULL, 0, 0,
	    0)) == NULL)) {
		msg_free(m);
		m = NULL;
		goto oom;
	}
	op->body = m->msg.data;
	op->done = created_cb;
	op->arg = m;
	q->pending_ops++;
	spool_io_submit(q->io, op);
	return 0;
oom:
	relay_result_set(res, 451, "4.3.0", "out of memory, try again later");
	spool_io_op_free(op);
	free(m);
refuse:
	relay_msg_free(msg);
	return -1;
}

void
queue_cancel(struct queue *q, void *arg)
{
	struct qmsg *m;

	/* The message is on its way to the disk: it stays and is delivered
	 * (RFC 5321 6.1), only the reply has nobody to go to. */
	TAILQ_FOREACH(m, &q->msgs, all)
		if (m->state == QM_COMMIT && m->cb_arg == arg)
			m->cb = NULL;
}

/* ---- Operator actions ---------------------------------------------------- */

static const char *
msg_status(const struct qmsg *m, time_t now, const char **reason)
{
	*reason = NULL;
	switch (m->state) {
	case QM_FAILED:
		return "failed";
	case QM_WAITING:
		if (m->acct->hold != HOLD_NONE) {
			*reason = m->acct->hold_reason;
			return "held";
		}
		return m->st.next_attempt > now ? "deferred" : "active";
	case QM_UPDATING:
		return m->after == AFTER_FAILED ? "failed" : "deferred";
	default:
		return "active";
	}
}

size_t
queue_list(struct queue *q, int (*cb)(void *, json_t *), void *arg)
{
	struct qmsg *m;
	struct spool_state st;
	const char *status, *reason;
	time_t now = time(NULL);
	json_t *o;
	size_t n = 0;

	TAILQ_FOREACH(m, &q->msgs, all) {
		if (m->state == QM_COMMIT || m->state == QM_DELETING ||
		    (m->state == QM_UPDATING && m->after == AFTER_GONE))
			continue;
		status = msg_status(m, now, &reason);
		/* A held message goes when its account's hold ends, if not sooner. */
		st = m->st;
		if (reason != NULL && m->acct->hold_until > st.next_attempt)
			st.next_attempt = m->acct->hold_until;
		if ((o = spool_entry_json(&m->msg, &m->meta, &st, status, reason, now)) == NULL)
			continue;
		n++;
		if (cb(arg, o) != 0)
			break;
	}
	return n;
}

static void
restored_cb(struct spool_io_op *op, void *arg)
{
	struct qmsg *m = arg;
	struct queue *q = m->q;

	q->pending_ops--;
	if (op->error != 0) {
		log_err("event=queue_retry queue_id=%s error=\"%s\"", m->msg.queue_id,
		    op->errtext);
		m->st.failed = 1;
		m->state = QM_FAILED;
		q->n_failed++;
	} else {
		log_info("event=queue_retry queue_id=%s from=failed", m->msg.queue_id);
		m->area = SPOOL_QUEUE;
		msg_wait(m, time(NULL));
	}
	spool_io_op_free(op);
	if (m->delete_pending) {
		m->delete_pending = 0;
		list_remove(m);
		msg_start_delete(m);
	}
	drain_check(q);
}

static int
msg_retry(struct queue *q, struct qmsg *m, time_t now)
{
	struct spool_io_op *op;

	switch (m->state) {
	case QM_WAITING:
		m->st.next_attempt = 0;
		if (m->list == QL_LATER) {
			list_remove(m);
			TAILQ_INSERT_TAIL(&m->acct->ready, m, link);
			m->list = QL_READY;
		}
		return 1;
	case QM_FAILED:
		if ((op = spool_io_op_new(SPOOL_IO_RESTORE, m->msg.queue_id)) == NULL)
			return 0;
		m->st.failed = 0;
		m->st.since = now;
		m->st.next_attempt = 0;
		if (spool_state_encode(&m->st, m->msg.n_rcpts, &op->text, &op->textlen) == -1) {
			m->st.failed = 1;
			spool_io_op_free(op);
			return 0;
		}
		q->n_failed--;
		m->state = QM_UPDATING;
		m->after = AFTER_WAITING;
		op->done = restored_cb;
		op->arg = m;
		q->pending_ops++;
		spool_io_submit(q->io, op);
		return 1;
	case QM_DELETING:
		return 0;
	default:
		m->retry_pending = 1;
		return 1;
	}
}

int
queue_retry(struct queue *q, const char *id)
{
	struct qmsg *m;

	if ((m = msg_find(q, id)) == NULL || m->state == QM_DELETING)
		return -1;
	account_release(q, m->acct, "queue retry");
	(void)msg_retry(q, m, time(NULL));
	queue_kick(q);
	return 0;
}

size_t
queue_retry_all(struct queue *q)
{
	struct qaccount *a;
	struct qmsg *m, *next;
	time_t now = time(NULL);
	size_t n = 0;

	TAILQ_FOREACH(a, &q->accounts, entry)
		account_release(q, a, "queue retry --all");
	TAILQ_FOREACH_SAFE(m, &q->msgs, all, next)
		if (m->state != QM_COMMIT)
			n += (size_t)msg_retry(q, m, now);
	queue_kick(q);
	return n;
}

static void
deleted_cb(struct spool_io_op *op, void *arg)
{
	struct qmsg *m = arg;
	struct queue *q = m->q;
	int rc = op->error == 0 ? 0 : -1, error = op->error;

	q->pending_ops--;
	if (rc == -1)
		log_err("event=queue_delete queue_id=%s error=\"%s\"", m->msg.queue_id,
		    op->errtext);
	else
		log_info("event=queue_delete queue_id=%s by=%s", m->msg.queue_id, m->delete_by);
	spool_io_op_free(op);
	if (m->delete_done != NULL) {
		errno = error;
		m->delete_done(m->delete_arg, rc);
	}
	msg_free(m);
	drain_check(q);
}

/* m is on no list and has nothing in flight: remove it from the disk. */
static void
msg_start_delete(struct qmsg *m)
{
	struct queue *q = m->q;
	struct spool_io_op *op;
	char reply[SPOOL_REPLY_MAX];

	if (m->state == QM_FAILED)
		q->n_failed--;
	if ((op = spool_io_op_new(SPOOL_IO_REMOVE, m->msg.queue_id)) == NULL)
		fatal("out of memory");
	op->area = m->area;
	m->state = QM_DELETING;
	body_drop(m);
	snprintf(reply, sizeof(reply), "deleted from the queue by %s", m->delete_by);
	op->event = msg_event(m, AUDIT_STATUS_FAILED, reply, 0, m->st.attempts, 0);
	metrics_message(m->msg.account, METRICS_FAILED);
	op->done = deleted_cb;
	op->arg = m;
	q->pending_ops++;
	spool_io_submit(q->io, op);
}

int
queue_delete(struct queue *q, const char *id, const char *by, void (*done)(void *, int),
    void *arg)
{
	struct qmsg *m;
	size_t i;

	if ((m = msg_find(q, id)) == NULL || m->state == QM_DELETING || m->delete_pending ||
	    (m->state == QM_UPDATING && m->after == AFTER_GONE)) {
		errno = ENOENT;
		return -1;
	}
	strlcpy(m->delete_by, by != NULL ? by : "unknown", sizeof(m->delete_by));
	m->delete_done = done;
	m->delete_arg = arg;
	switch (m->state) {
	case QM_SENDING:
		/* Abort its transactions: an unfinished DATA is discarded upstream. */
		for (i = 0; i < m->n_chunks; i++)
			if (m->chunks[i].job != NULL)
				upstream_pool_cancel(q->pool, m->chunks[i].job);
		chunks_free(m);
		m->acct->inflight--;
		q->inflight--;
		quota_give_back(&m->ticket, m->ticket.msgs, m->ticket.rcpts);
		msg_start_delete(m);
		queue_kick(q);
		break;
	case QM_WAITING:
	case QM_FAILED:
		list_remove(m);
		msg_start_delete(m);
		break;
	default:
		m->delete_pending = 1;
		break;
	}
	return 0;
}

void
queue_delete_cancel(struct queue *q, void *arg)
{
	struct qmsg *m;

	TAILQ_FOREACH(m, &q->msgs, all)
		if (m->delete_arg == arg)
			m->delete_done = NULL;
}

void
queue_stats(struct queue *q, struct queue_stats *st)
{
	struct qmsg *m;
	const char *status, *reason;
	time_t now = time(NULL);

	memset(st, 0, sizeof(*st));
	TAILQ_FOREACH(m, &q->msgs, all) {
		if (m->state == QM_COMMIT || m->state == QM_DELETING)
			continue;
		status = msg_status(m, now, &reason);
		if (strcmp(status, "failed") == 0) {
			st->failed++;
			continue;
		}
		st->messages++;
		if (strcmp(status, "held") == 0)
			st->held++;
		else if (strcmp(status, "deferred") == 0)
			st->deferred++;
		else
			st->active++;
	}
	st->inflight = q->inflight;
	st->body_bytes = q->body_bytes;
}

/* ---- Draining ------------------------------------------------------------ */

static void
drain_finish(struct queue *q)
{
	void (*done)(void *) = q->drain_done;

	if (q->drain_phase == 3)
		return;
	q->drain_phase = 3;
	evtimer_del(q->drain_ev);
	q->drain_done = NULL;
	log_info("event=queue_drained pending_ops=%zu", q->pending_ops);
	if (done != NULL)
		done(q->drain_arg);
}

static void
pool_drained(void *arg)
{
	drain_finish(arg);
}

static void
drain_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	struct qmsg *m;
	size_t i, n = 0;

	if (q->drain_phase == 0) {
		/* Abandon what is still with the upstream: it stays in the spool,
		 * unchanged, and goes out after the restart. */
		q->drain_phase = 1;
		TAILQ_FOREACH(m, &q->msgs, all) {
			if (m->state != QM_SENDING)
				continue;
			for (i = 0; i < m->n_chunks; i++)
				if (m->chunks[i].job != NULL)
					upstream_pool_cancel(q->pool, m->chunks[i].job);
			chunks_free(m);
			m->acct->inflight--;
			q->inflight--;
			quota_give_back(&m->ticket, m->ticket.msgs, m->ticket.rcpts);
			m->state = QM_WAITING;
			n++;
		}
		if (n > 0)
			log_warn("event=queue_drain abandoned=%zu note=\"still in the spool; sent "
			    "after the restart\"", n);
		drain_check(q);
		return;
	}
	/* Idle sessions did not say goodbye in time. */
	drain_finish(q);
}

static void
drain_check(struct queue *q)
{
	struct timeval tv = { QUEUE_DRAIN_QUIT_SECS, 0 };

	if (!q->draining || q->drain_phase >= 2 || q->inflight > 0 || q->pending_ops > 0)
		return;
	q->drain_phase = 2;
	evtimer_add(q->drain_ev, &tv);
	upstream_pool_drain(q->pool, pool_drained, q);
}

void
queue_drain(struct queue *q, void (*done)(void *), void *arg)
{
	struct timeval tv = { QUEUE_DRAIN_GRACE_SECS, 0 };

	q->draining = 1;
	q->drain_done = done;
	q->drain_arg = arg;
	evtimer_del(q->tick_ev);
	evtimer_add(q->drain_ev, &tv);
	drain_check(q);
}

/* ---- Start and stop ------------------------------------------------------ */

struct recover {
	struct queue	*q;
	enum spool_area	area;
	struct qmsg	**msgs;
	size_t		n, cap;
	size_t		corrupt;
};

static int
recover_one(void *arg, const char *id)
{
	struct recover *rc = arg;
	struct queue *q = rc->q;
	struct qmsg *m, **nm;
	char err[512];

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return -1;
	m->q = q;
	m->area = rc->area;
	if (spool_load(q->sp, rc->area, id, &m->msg, &m->meta, &m->st, 0, err,
	    sizeof(err)) == -1) {
		log_err("event=queue_recover queue_id=%s error=\"%s\"", id, err);
		if (errno == EBADMSG && spool_move(q->sp, id, rc->area, SPOOL_CORRUPT) == 0) {
			log_warn("event=queue_recover queue_id=%s action=moved_to_corrupt", id);
			rc->corrupt++;
		}
		free(m);
		return 0;
	}
	if ((m->acct = account_get(q, m->msg.account)) == NULL)
		goto oom;
	if (rc->n == rc->cap) {
		rc->cap = rc->cap == 0 ? 64 : rc->cap * 2;
		if ((nm = reallocarray(rc->msgs, rc->cap, sizeof(*nm))) == NULL)
			goto oom;
		rc->msgs = nm;
	}
	rc->msgs[rc->n++] = m;
	return 0;
oom:
	spool_msg_clear(&m->msg);
	spool_meta_free(&m->meta);
	spool_state_free(&m->st);
	free(m);
	return -1;
}

static int
recover_cmp(const void *a, const void *b)
{
	const struct qmsg *x = *(struct qmsg *const *)a, *y = *(struct qmsg *const *)b;

	if (x->meta.received != y->meta.received)
		return x->meta.received < y->meta.received ? -1 : 1;
	return strcmp(x->msg.queue_id, y->msg.queue_id);
}

/* Load every message of the spool; finish moves a crash interrupted. */
static int
queue_recover(struct queue *q, char *err, size_t errlen)
{
	struct recover rc;
	struct qmsg *m;
	enum spool_area want;
	size_t i, cleaned[2] = { 0, 0 }, waiting = 0, failed = 0;
	time_t now = time(NULL);
	int moved = 0;

	memset(&rc, 0, sizeof(rc));
	rc.q = q;
	rc.area = SPOOL_QUEUE;
	if (spool_scan(q->sp, SPOOL_QUEUE, 1, recover_one, &rc, &cleaned[0], err, errlen) == -1)
		goto fail;
	rc.area = SPOOL_FAILED;
	if (spool_scan(q->sp, SPOOL_FAILED, 1, recover_one, &rc, &cleaned[1], err, errlen) == -1)
		goto fail;
	if (rc.n > 1)
		qsort(rc.msgs, rc.n, sizeof(*rc.msgs), recover_cmp);
	for (i = 0; i < rc.n; i++) {
		m = rc.msgs[i];
		/* The state says where a message belongs: a crash may have
		 * stopped a move to failed/ (or back) half way. */
		want = m->st.failed ? SPOOL_FAILED : SPOOL_QUEUE;
		if (m->area != want) {
			if (spool_move(q->sp, m->msg.queue_id, m->area, want) == 0) {
				m->area = want;
				moved = 1;
			} else {
				log_err("event=queue_recover queue_id=%s error=\"cannot move "
				    "it: %s\"", m->msg.queue_id, strerror(errno));
			}
		}
		TAILQ_INSERT_TAIL(&q->msgs, m, all);
		if (m->st.failed) {
			m->state = QM_FAILED;
			q->n_failed++;
			failed++;
		} else {
			msg_wait(m, now);
			waiting++;
		}
	}
	if (moved || cleaned[0] > 0 || cleaned[1] > 0 || rc.corrupt > 0) {
		(void)spool_sync(q->sp, SPOOL_QUEUE);
		(void)spool_sync(q->sp, SPOOL_FAILED);
		(void)spool_sync(q->sp, SPOOL_CORRUPT);
	}
	log_info("event=queue_recovered spool=%s messages=%zu failed=%zu discarded=%zu "
	    "corrupt=%zu", spool_path(q->sp), waiting, failed, cleaned[0] + cleaned[1],
	    rc.corrupt);
	free(rc.msgs);
	return 0;
fail:
	for (i = 0; i < rc.n; i++) {
		spool_msg_clear(&rc.msgs[i]->msg);
		spool_meta_free(&rc.msgs[i]->meta);
		spool_state_free(&rc.msgs[i]->st);
		free(rc.msgs[i]);
	}
	free(rc.msgs);
	return -1;
}

struct queue *
queue_new(struct event_base *base, const struct config *cfg, struct credstore *cs,
    struct upstream_pool *pool, struct quota *quota, char *err, size_t errlen)
{
	struct queue *q;
	struct timeval tick = { QUEUE_TICK_SECS, 0 };
	char path[CONFIG_PATH_MAX + 16], qerr[512];
	size_t skipped = 0;

	if ((q = calloc(1, sizeof(*q))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	q->base = base;
	q->cfg = cfg;
	q->cs = cs;
	q->pool = pool;
	q->quota = quota;
	TAILQ_INIT(&q->msgs);
	TAILQ_INIT(&q->later);
	TAILQ_INIT(&q->accounts);
	if (spool_open(cfg->spool_dir, SPOOL_CREATE, &q->sp, err, errlen) == -1)
		goto fail;
	if (spool_lock(q->sp, QUEUE_LOCK_WAIT_MS) == -1) {
		snprintf(err, errlen, "spool_dir %s is in use (%s); is another smtpvault "
		    "running on it?", cfg->spool_dir, errno == EWOULDBLOCK ? "locked" :
		    strerror(errno));
		goto fail;
	}
	if ((q->run_ev = event_new(base, -1, 0, run_cb, q)) == NULL ||
	    (q->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, q)) == NULL ||
	    (q->drain_ev = evtimer_new(base, drain_timer_cb, q)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (queue_recover(q, err, errlen) == -1)
		goto fail;
	snprintf(path, sizeof(path), "%s/%s", cfg->spool_dir, QUEUE_SENT_LOG);
	if (quota_log_open(quota, path, time(NULL), &skipped, qerr, sizeof(qerr)) == -1)
		log_warn("event=sent_log error=\"%s\" note=\"daily counters start at zero\"",
		    qerr);
	else if (skipped > 0)
		log_warn("event=sent_log path=%s skipped=%zu", path, skipped);
	if ((q->io = spool_io_new(base, q->sp, err, errlen)) == NULL)
		goto fail;
	if ((q->ctl = queue_ctl_new(base, q, cfg->spool_dir, spool_dirfd(q->sp), err,
	    errlen)) == NULL)
		goto fail;
	event_add(q->tick_ev, &tick);
	queue_kick(q);
	return q;
fail:
	queue_free(q);
	return NULL;
}

void
queue_set_config(struct queue *q, const struct config *cfg)
{
	q->cfg = cfg;
}

void
queue_set_audit(struct queue *q, struct audit *a)
{
	spool_io_set_audit(q->io, a);
	q->have_audit = a != NULL;
	q->audit_ready = 1;
}

void
queue_free(struct queue *q)
{
	struct spool_io_stats ios;
	struct qmsg *m;
	struct qaccount *a;

	if (q == NULL)
		return;
	queue_ctl_free(q->ctl);
	if (q->io != NULL) {
		spool_io_stats(q->io, &ios);
		log_info("event=spool_io batches=%llu ops=%llu creates=%llu dir_syncs=%llu "
		    "syncfs=%llu ms_files=%llu ms_dir_syncs=%llu ms_audit=%llu ms_other=%llu",
		    (unsigned long long)ios.batches, (unsigned long long)ios.ops,
		    (unsigned long long)ios.creates, (unsigned long long)ios.dir_syncs,
		    (unsigned long long)ios.syncfs,
		    (unsigned long long)(ios.ns_files / 1000000),
		    (unsigned long long)(ios.ns_dir_syncs / 1000000),
		    (unsigned long long)(ios.ns_audit / 1000000),
		    (unsigned long long)(ios.ns_other / 1000000));
	}
	/* The thread finishes first: it may still read a message's bytes. */
	spool_io_free(q->io);
	while ((m = TAILQ_FIRST(&q->msgs)) != NULL)
		msg_free(m);
	while ((a = TAILQ_FIRST(&q->accounts)) != NULL) {
		TAILQ_REMOVE(&q->accounts, a, entry);
		free(a);
	}
	if (q->run_ev != NULL)
		event_free(q->run_ev);
	if (q->tick_ev != NULL)
		event_free(q->tick_ev);
	if (q->drain_ev != NULL)
		event_free(q->drain_ev);
	spool_close(q->sp);
	free(q);
}
