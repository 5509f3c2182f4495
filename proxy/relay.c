/*
 * relay.c: delivery = direct. Each message goes upstream through the
 * per-account session pools (upstream_pool.c) while the LAN client waits,
 * and the upstream's answer becomes the client's reply to its final dot:
 *
 *   upstream 2xx                 250 2.0.0 Ok: delivered as ID (upstream: ...)
 *   upstream 4xx / 5xx to the    the same code and enhanced code, with the
 *     message (MAIL, RCPT, DATA)   upstream's text (421 becomes 451: a 421 to
 *                                  the LAN client would mean "closing")
 *   credential refused (5xx at   451 4.7.0 upstream refused the credential for
 *     AUTH)                        ACCOUNT; the operator has been notified
 *   refusals before the message  451 4.4.1 (connect, greeting, EHLO, 4xx AUTH)
 *   network error                451 4.4.1 upstream unreachable: ...
 *   timeout                      451 4.4.2 upstream timeout: ...
 *   TLS failure / verification   451 4.7.5 upstream TLS ...
 *   no STARTTLS offered          451 4.7.4 upstream does not offer STARTTLS
 *   over the upstream's SIZE     552 5.3.4
 *   over the account's daily     451 4.7.1, at once, nothing sent (SPEC 2:
 *     message / recipient limit    rolling 24 h, counted here per account)
 *
 * Several recipients are all or nothing (see smtp_client.c): the client
 * gets one reply for the whole message, so a message is only sent when every
 * recipient was accepted, and the first refusal is the reply.
 *
 * The upstream's text is made safe for an SMTP reply line: one line,
 * printable ASCII, bounded. Nothing is stored: a message lives in memory
 * only while its client waits.
 *
 * delivery = queue: relay_new() starts the queue (queue.c) on the same pools
 * and quotas, and the calls of relay.h are handed to it. The helpers both
 * implementations share (audit event, header fields, reply text) live here.
 */
#include "relay.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "audit.h"
#include "config.h"
#include "credential.h"
#include "log.h"
#include "metrics.h"
#include "msg_header.h"
#include "queue.h"
#include "quota.h"
#include "smtp_client.h"
#include "smtp_reply.h"
#include "upstream_pool.h"
#include "util.h"

#define RELAY_UPSTREAM_TEXT_MAX	300	/* upstream text quoted to the client */
#define RELAY_REPLY_TEXT_MAX	480	/* keeps the whole reply line under 512 */
#define RELAY_LOG_TEXT_MAX	600
#define RELAY_AUDIT_BACKOFF_SECS 10	/* refuse new messages this long after an
					 * audit write failed */
#define RELAY_HEADER_FIELD_MAX	1024	/* From / Subject / Message-ID kept */

struct relay_entry {
	TAILQ_ENTRY(relay_entry) entry;
	struct relay		*r;
	struct relay_msg	*msg;
	relay_cb		*cb;
	void			*arg;
	struct upstream_job	*job;
	struct timespec		start;
	struct quota_ticket	ticket;		/* counted, until the outcome */
	/* Done upstream, waiting for the audit flush: */
	struct relay_result	res;		/* the client's reply */
	json_t			*event;		/* its audit event; NULL: out of memory */
};
TAILQ_HEAD(relay_list, relay_entry);

struct relay {
	struct event_base	*base;
	const struct config	*cfg;
	struct credstore	*cs;
	struct evdns_base	*dns;
	struct upstream_pool	*pool;
	struct relay_list	entries;
	/*
	 * Per-account counters of messages and recipients handed upstream in
	 * the last 24 hours (quota.h), shared with the queue. In direct mode
	 * a message counts when it is submitted and is taken off again if the
	 * upstream does not accept it; the counters live in memory (the queue
	 * also keeps a sent log in its spool).
	 */
	struct quota		*quota;
	struct queue		*queue;		/* delivery = queue, else NULL */
	struct audit		*audit;
	time_t			audit_failed;	/* last failed audit write, 0 = none */
	/* Messages done upstream in this loop turn, whose events are written
	 * together (one append) by ev_audit before their clients are answered. */
	struct relay_list	audit_wait;
	struct event		*ev_audit;
	int			draining;
	void			(*drain_done)(void *);
	void			*drain_arg;
};

static void	relay_audit_flush(struct relay *);
static void	relay_audit_flush_cb(evutil_socket_t, short, void *);

void
relay_msg_free(struct relay_msg *msg)
{
	if (msg == NULL)
		return;
	if (msg->data != NULL)
		evbuffer_free(msg->data);
	free(msg->rcpts);
	relay_fields_free(&msg->fields);
	free(msg);
}

struct relay *
relay_new(struct event_base *base, const struct config *cfg, struct credstore *cs)
{
	struct relay *r;
	char err[1024];

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->base = base;
	r->cfg = cfg;
	r->cs = cs;
	TAILQ_INIT(&r->entries);
	TAILQ_INIT(&r->audit_wait);
	if ((r->quota = quota_new()) == NULL) {
		free(r);
		return NULL;
	}
	if ((r->ev_audit = event_new(base, -1, 0, relay_audit_flush_cb, r)) == NULL) {
		relay_free(r);
		return NULL;
	}
	/* An asynchronous resolver keeps a slow DNS answer from stalling every
	 * LAN session; without one, the blocking resolver still works. */
	if ((r->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL)
		log_warn("event=relay_dns note=\"no asynchronous resolver; using the system "
		    "resolver\"");
	if ((r->pool = upstream_pool_new(base, r->dns, cfg, cs)) == NULL) {
		relay_free(r);
		return NULL;
	}
	if (cfg->delivery == DELIVERY_QUEUE &&
	    (r->queue = queue_new(base, cfg, cs, r->pool, r->quota, err, sizeof(err))) == NULL) {
		log_err("event=queue_start error=\"%s\"", err);
		relay_free(r);
		return NULL;
	}
	return r;
}

struct queue *
relay_queue(struct relay *r)
{
	return r->queue;
}

void
relay_set_config(struct relay *r, const struct config *cfg)
{
	r->cfg = cfg;
	upstream_pool_set_config(r->pool, cfg);
	if (r->queue != NULL)
		queue_set_config(r->queue, cfg);
}

void
relay_set_audit(struct relay *r, struct audit *a, struct audit *own)
{
	r->audit = a;
	if (r->queue == NULL) {
		audit_close(own);
		return;
	}
	if (a != NULL && own == NULL) {
		log_err("event=queue_audit error=\"no audit handle for the queue\" "
		    "note=\"messages are refused\"");
		return;
	}
	queue_set_audit(r->queue, own);
}

static void
entry_free(struct relay_entry *e)
{
	relay_msg_free(e->msg);
	json_decref(e->event);
	free(e);
}

void
relay_free(struct relay *r)
{
	struct relay_entry *e;

	if (r == NULL)
		return;
	/* Whatever went upstream is recorded, though nobody waits any more. */
	TAILQ_FOREACH(e, &r->audit_wait, entry)
		e->cb = NULL;
	relay_audit_flush(r);
	if (r->ev_audit != NULL)
		event_free(r->ev_audit);
	/* Pool first: it stops reading the messages before they go. */
	upstream_pool_free(r->pool);
	queue_free(r->queue);
	if (r->dns != NULL)
		evdns_base_free(r->dns, 0);
	while ((e = TAILQ_FIRST(&r->entries)) != NULL) {
		TAILQ_REMOVE(&r->entries, e, entry);
		entry_free(e);
	}
	quota_free(r->quota);
	free(r);
}

void
relay_text_sanitize(char *dst, size_t dstlen, const char *src, size_t max)
{
	size_t o = 0, i, limit = dstlen - 1 < max ? dstlen - 1 : max;
	int space = 0;

	for (i = 0; src[i] != '\0'; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c == '\n' || c == '\t' || c == ' ') {
			space = o > 0;
			continue;
		}
		if (o + (space ? 1 : 0) + 1 > limit) {
			if (limit >= 3) {
				o = o > limit - 3 ? limit - 3 : o;
				memcpy(dst + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (space)
			dst[o++] = ' ';
		space = 0;
		dst[o++] = (c >= 0x21 && c < 0x7f) ? (char)c : '?';
	}
	dst[o] = '\0';
}

void
relay_result_set(struct relay_result *res, int code, const char *enhanced, const char *fmt,
    ...)
{
	char text[RELAY_TEXT_MAX];
	va_list ap;

	res->code = code;
	strlcpy(res->enhanced, enhanced, sizeof(res->enhanced));
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	relay_text_sanitize(res->text, sizeof(res->text), text, RELAY_REPLY_TEXT_MAX);
}

/* "421 4.7.0 text" of the upstream, made safe, for quoting. */
static void
upstream_quote(char *dst, size_t len, const struct smtp_outcome *o)
{
	char text[SMTP_CLIENT_REPLY_MAX + 32];

	if (o->code != 0)
		snprintf(text, sizeof(text), "%d%s%s ", o->code, o->enhanced[0] ? " " : "",
		    o->enhanced);
	else
		text[0] = '\0';
	strlcat(text, o->text, sizeof(text));
	relay_text_sanitize(dst, len, text, RELAY_UPSTREAM_TEXT_MAX);
}

/* An enhanced code of the right class for code: the upstream's, or X.0.0. */
static const char *
enhanced_for(int code, const char *upstream)
{
	if (upstream[0] != '\0' && upstream[0] - '0' == code / 100)
		return upstream;
	return code / 100 == 2 ? "2.0.0" : code / 100 == 4 ? "4.0.0" : "5.0.0";
}

static void
relay_map(const struct relay *r, const struct relay_msg *msg, const struct smtp_outcome *o,
    struct relay_result *res)
{
	char quote[RELAY_UPSTREAM_TEXT_MAX + 1];
	int code;

	upstream_quote(quote, sizeof(quote), o);
	switch (o->error) {
	case SMTP_ERR_NONE:
		relay_result_set(res, 250, "2.0.0", "Ok: delivered as %s (upstream: %s)", msg->queue_id,
		    quote);
		return;
	case SMTP_ERR_AUTH_REFUSED:
		relay_result_set(res, 451, "4.7.0", "upstream refused the credential for %s; the "
		    "operator has been notified (upstream: %s)", msg->account, quote);
		return;
	case SMTP_ERR_REPLY:
		if (o->stage >= SMTP_STAGE_MAIL && o->stage <= SMTP_STAGE_DATA &&
		    (SMTP_REPLY_IS_4XX(o->code) || SMTP_REPLY_IS_5XX(o->code))) {
			code = o->code == 421 ? 451 : o->code;
			relay_result_set(res, code, enhanced_for(code, o->enhanced), "upstream: %s", quote);
			return;
		}
		/* Refused before the message: the server's state, not the message. */
		relay_result_set(res, 451, SMTP_REPLY_IS_4XX(o->code) ? enhanced_for(451, o->enhanced) :
		    "4.4.1", "upstream unavailable at %s (upstream: %s)", smtp_stage_name(o->stage),
		    quote);
		return;
	case SMTP_ERR_NETWORK:
		relay_result_set(res, 451, "4.4.1", "%s%s", strncmp(o->text, "upstream", 8) == 0 ? "" :
		    "upstream unreachable: ", quote);
		return;
	case SMTP_ERR_TIMEOUT:
		relay_result_set(res, 451, "4.4.2", "upstream timeout: %s", quote);
		return;
	case SMTP_ERR_TLS:
	case SMTP_ERR_TLS_VERIFY:
		relay_result_set(res, 451, "4.7.5", "%s", quote);
		return;
	case SMTP_ERR_NO_STARTTLS:
		relay_result_set(res, 451, "4.7.4", "%s", quote);
		return;
	case SMTP_ERR_PROTOCOL:
		relay_result_set(res, 451, "4.5.0", "upstream protocol error: %s", quote);
		return;
	case SMTP_ERR_NO_AUTH:
	case SMTP_ERR_CREDENTIAL:
		relay_result_set(res, 451, "4.7.0", "cannot log in upstream for %s: %s", msg->account,
		    quote);
		return;
	case SMTP_ERR_TOO_BIG:
		relay_result_set(res, 552, "5.3.4", "message too big for the upstream: %s", o->text);
		return;
	case SMTP_ERR_UNSUPPORTED:
		code = o->code != 0 ? o->code : 554;
		relay_result_set(res, code, enhanced_for(code, o->enhanced), "%s", o->text);
		return;
	case SMTP_ERR_ABORTED:
		break;
	}
	relay_result_set(res, 451, "4.3.0", "delivery aborted: %s", quote);
}

static long long
elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(now.tv_sec - start->tv_sec) * 1000 +
	    (now.tv_nsec - start->tv_nsec) / 1000000;
}

/*
 * Count msg against its account's daily limits. Returns 0 (counted in e),
 * or -1 with the 451 4.7.1 reply in res when it would exceed them.
 */
static int
relay_quota_take(struct relay *r, struct relay_entry *e, struct relay_result *res)
{
	struct cred_info info;
	struct quota_limits lim;
	uint64_t msgs, rcpts;
	time_t now = time(NULL), room;

	if (credstore_info(r->cs, e->msg->account, &info) != CRED_OK)
		return 0;	/* the pool reports the missing account */
	quota_limits(info.daily_limit, info.daily_rcpt_limit, &lim);
	if (quota_check(r->quota, e->msg->account, &lim, 1, (uint32_t)e->msg->n_rcpts, now,
	    &room) == -1) {
		quota_usage(r->quota, e->msg->account, now, &msgs, &rcpts);
		log_warn("event=quota account=%s messages=%llu/%llu recipients=%llu/%llu "
		    "queue_id=%s rcpts=%zu action=refuse", e->msg->account,
		    (unsigned long long)msgs, (unsigned long long)lim.messages,
		    (unsigned long long)rcpts, (unsigned long long)lim.rcpts, e->msg->queue_id,
		    e->msg->n_rcpts);
		relay_result_set(res, 451, "4.7.1", "daily sending limit of %s reached (%llu "
		    "messages, %llu recipients per 24 h); try again later", e->msg->account,
		    (unsigned long long)lim.messages, (unsigned long long)lim.rcpts);
		return -1;
	}
	/* Out of memory: not counted; Google's own limit still holds. */
	(void)quota_take(r->quota, e->msg->account, 1, (uint32_t)e->msg->n_rcpts, now,
	    &e->ticket);
	return 0;
}

/* What the audit log and the metrics call the outcome of a direct delivery. */
static enum audit_status
relay_status(const struct relay_result *res)
{
	if (res->code >= 200 && res->code < 300)
		return AUDIT_STATUS_DELIVERED;
	return res->code >= 500 ? AUDIT_STATUS_FAILED : AUDIT_STATUS_DEFERRED;
}

static enum metrics_status
relay_metrics_status(enum audit_status st)
{
	switch (st) {
	case AUDIT_STATUS_DELIVERED:
		return METRICS_DELIVERED;
	case AUDIT_STATUS_FAILED:
		return METRICS_FAILED;
	case AUDIT_STATUS_REJECTED:
		return METRICS_REJECTED;
	case AUDIT_STATUS_QUEUED:
		return METRICS_QUEUED;
	default:
		return METRICS_DEFERRED;
	}
}

int
relay_fields_read(struct evbuffer *data, int want_subject, struct relay_fields *f)
{
	char head[MSG_HEADER_SCAN_MAX < 65536 ? MSG_HEADER_SCAN_MAX : 65536];
	char value[RELAY_HEADER_FIELD_MAX];
	ev_ssize_t n;

	memset(f, 0, sizeof(*f));
	/* The header fields come from the first part of the message only. */
	n = evbuffer_copyout(data, head, sizeof(head));
	if (n < 0)
		n = 0;
	if (msg_header_get(head, (size_t)n, "From", value, sizeof(value)) == 0 &&
	    (f->header_from = strdup(value)) == NULL)
		goto fail;
	if (want_subject && msg_header_get(head, (size_t)n, "Subject", value,
	    sizeof(value)) == 0 && (f->subject = strdup(value)) == NULL)
		goto fail;
	if (msg_header_get(head, (size_t)n, "Message-ID", value, sizeof(value)) == 0 &&
	    (f->message_id = strdup(value)) == NULL)
		goto fail;
	return 0;
fail:
	relay_fields_free(f);
	return -1;
}

void
relay_fields_free(struct relay_fields *f)
{
	free(f->header_from);
	free(f->subject);
	free(f->message_id);
	memset(f, 0, sizeof(*f));
}

json_t *
relay_audit_event(const struct relay_msg *msg, const struct relay_fields *f, uint64_t size,
    enum audit_status st, const char *reply, uint32_t cred_version, uint32_t attempt,
    uint64_t duration_ms)
{
	struct audit_message am;
	const char **rcpts;
	json_t *ev;
	size_t i;

	if ((rcpts = calloc(msg->n_rcpts > 0 ? msg->n_rcpts : 1, sizeof(*rcpts))) == NULL)
		return NULL;
	for (i = 0; i < msg->n_rcpts; i++)
		rcpts[i] = msg->rcpts[i];
	memset(&am, 0, sizeof(am));
	am.queue_id = msg->queue_id;
	am.client_ip = msg->client_ip;
	am.client_name = msg->client_name;
	am.helo = msg->helo;
	am.mail_from = msg->mail_from;
	am.rcpt_to = rcpts;
	am.n_rcpt_to = msg->n_rcpts;
	am.header_from = f->header_from;
	am.subject = f->subject;
	am.message_id = f->message_id;
	am.size = size;
	am.account = msg->account;
	am.credential_version = cred_version;
	am.status = st;
	am.upstream_reply = reply;
	am.attempt = attempt;
	am.duration_ms = duration_ms;
	ev = audit_message_event(&am);
	free(rcpts);
	return ev;
}

/* One "message" event with the final status (direct mode); NULL when out
 * of memory. */
static json_t *
relay_entry_event(struct relay *r, const struct relay_entry *e, const struct smtp_outcome *o,
    enum audit_status st)
{
	const struct relay_msg *msg = e->msg;
	char reply[SMTP_CLIENT_REPLY_MAX + 32];

	smtp_outcome_reply(o, reply, sizeof(reply));
	return relay_audit_event(msg, &msg->fields, evbuffer_get_length(msg->data), st, reply,
	    o->cred_version, 1, (uint64_t)elapsed_ms(&e->start));
}

/*
 * Write the events of the messages waiting in audit_wait, as one append
 * (AUDIT_BATCH_MAX at a time), then answer their clients. Nothing may be
 * acknowledged unrecorded: a message whose event did not make it gets 451
 * 4.3.0 even when the upstream took it. The upstream may then have it, so a
 * client that retries can cause a duplicate; new messages are refused for a
 * while so that this stays a single message.
 */
static void
relay_audit_flush(struct relay *r)
{
	struct relay_entry *batch[AUDIT_BATCH_MAX], *e;
	json_t *events[AUDIT_BATCH_MAX];
	char err[512];
	size_t n, m, written, i;
	int ok;

	while (!TAILQ_EMPTY(&r->audit_wait)) {
		for (n = m = 0; n < AUDIT_BATCH_MAX && (e = TAILQ_FIRST(&r->audit_wait)) != NULL;
		    n++) {
			TAILQ_REMOVE(&r->audit_wait, e, entry);
			batch[n] = e;
			if (e->event != NULL)
				events[m++] = e->event;
		}
		written = 0;
		if (m > 0 && audit_append_many(r->audit, events, m, &written, err,
		    sizeof(err)) == 0)
			written = m;
		r->audit_failed = written < n ? time(NULL) : 0;
		/* The clients are answered in the order their messages finished;
		 * each callback answers its own session only. */
		for (i = 0, m = 0; i < n; i++) {
			e = batch[i];
			ok = e->event != NULL && m++ < written;
			if (!ok) {
				log_err("event=audit_failed queue_id=%s error=\"%s\"",
				    e->msg->queue_id, e->event == NULL ? "out of memory" : err);
				if (e->res.code < 400)
					relay_result_set(&e->res, 451, "4.3.0", "delivered upstream as "
					    "%s, but the audit log could not be written; the operator "
					    "has been notified", e->msg->queue_id);
			}
			if (e->cb != NULL)
				e->cb(e->arg, &e->res);
			entry_free(e);
		}
	}
}

static void
relay_audit_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	relay_audit_flush(arg);
}

static void
relay_done(void *arg, const struct smtp_outcome *o)
{
	struct relay_entry *e = arg;
	struct relay *r = e->r;
	struct relay_result res;
	enum audit_status st;
	char esc[RELAY_LOG_TEXT_MAX];

	TAILQ_REMOVE(&r->entries, e, entry);
	if (o->error != SMTP_ERR_NONE)
		quota_give_back(&e->ticket, e->ticket.msgs, e->ticket.rcpts);
	memset(&res, 0, sizeof(res));
	relay_map(r, e->msg, o, &res);
	st = relay_status(&res);
	metrics_message(e->msg->account, relay_metrics_status(st));
	log_info("event=relay mode=direct queue_id=%s account=%s client=%s rcpts=%zu size=%zu "
	    "stage=%s result=%d enhanced=%s ms=%lld upstream=\"%s\"", e->msg->queue_id,
	    e->msg->account, e->msg->client_ip, e->msg->n_rcpts,
	    evbuffer_get_length(e->msg->data), smtp_stage_name(o->stage), res.code, res.enhanced,
	    elapsed_ms(&e->start), log_escape(esc, sizeof(esc), o->text, strlen(o->text)));
	if (r->audit == NULL) {
		if (e->cb != NULL)
			e->cb(e->arg, &res);
		entry_free(e);
		return;
	}
	/*
	 * The event is written, and the client answered, at the end of this
	 * loop turn, together with those of every other message that finishes
	 * in it: one disk flush for all of them.
	 */
	e->res = res;
	e->event = relay_entry_event(r, e, o, st);
	if (TAILQ_EMPTY(&r->audit_wait))
		event_active(r->ev_audit, EV_TIMEOUT, 1);
	TAILQ_INSERT_TAIL(&r->audit_wait, e, entry);
}

int
relay_submit(struct relay *r, struct relay_msg *msg, relay_cb *cb, void *arg,
    struct relay_result *res)
{
	struct relay_entry *e;

	if (r->queue != NULL)
		return queue_submit(r->queue, msg, cb, arg, res);
	memset(res, 0, sizeof(*res));
	if (r->draining) {
		relay_result_set(res, 421, "4.3.2", "service shutting down, try again later");
		relay_msg_free(msg);
		return -1;
	}
	if (r->audit_failed != 0 && time(NULL) - r->audit_failed < RELAY_AUDIT_BACKOFF_SECS) {
		relay_result_set(res, 451, "4.3.0", "the audit log cannot be written; try again later");
		relay_msg_free(msg);
		return -1;
	}
	if (msg->data == NULL || msg->account[0] == '\0' || msg->n_rcpts == 0) {
		relay_result_set(res, 451, "4.3.0", "internal error: incomplete message");
		relay_msg_free(msg);
		return -1;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL)
		goto fail;
	e->r = r;
	e->msg = msg;
	e->cb = cb;
	e->arg = arg;
	clock_gettime(CLOCK_MONOTONIC, &e->start);
	if (relay_quota_take(r, e, res) == -1) {
		free(e);
		relay_msg_free(msg);
		return -1;
	}
	/* A message waits for a session at most as long as one upstream step. */
	if ((e->job = upstream_pool_send(r->pool, msg, r->cfg->upstream_timeout, relay_done,
	    e)) == NULL) {
		quota_give_back(&e->ticket, e->ticket.msgs, e->ticket.rcpts);
		free(e);
		goto fail;
	}
	TAILQ_INSERT_TAIL(&r->entries, e, entry);
	return 0;
fail:
	relay_result_set(res, 451, "4.3.0", "out of memory, try again later");
	relay_msg_free(msg);
	return -1;
}

void
relay_cancel(struct relay *r, void *arg)
{
	struct relay_entry *e, *next;

	if (r->queue != NULL) {
		queue_cancel(r->queue, arg);
		return;
	}
	for (e = TAILQ_FIRST(&r->entries); e != NULL; e = next) {
		next = TAILQ_NEXT(e, entry);
		if (e->cb == NULL || e->arg != arg)
			continue;
		if (upstream_pool_withdraw(r->pool, e->job) == 0) {
			/* Nothing of it went upstream. */
			log_info("event=relay_cancel queue_id=%s account=%s action=withdrawn",
			    e->msg->queue_id, e->msg->account);
			TAILQ_REMOVE(&r->entries, e, entry);
			quota_give_back(&e->ticket, e->ticket.msgs, e->ticket.rcpts);
			entry_free(e);
			continue;
		}
		/*
		 * On its way upstream, or done there: closing the session now
		 * could still leave the message delivered, unrecorded. It
		 * finishes and its event is written; nobody is answered.
		 */
		log_info("event=relay_cancel queue_id=%s account=%s action=finish",
		    e->msg->queue_id, e->msg->account);
		e->cb = NULL;
		e->arg = NULL;
	}
	/* Done upstream: its event is still written, but nobody is answered. */
	TAILQ_FOREACH(e, &r->audit_wait, entry) {
		if (e->cb != NULL && e->arg == arg) {
			e->cb = NULL;
			e->arg = NULL;
		}
	}
}

static void
relay_pool_drained(void *arg)
{
	struct relay *r = arg;
	void (*done)(void *) = r->drain_done;

	r->drain_done = NULL;
	if (done != NULL)
		done(r->drain_arg);
}

void
relay_drain(struct relay *r, void (*done)(void *), void *arg)
{
	r->draining = 1;
	r->drain_done = done;
	r->drain_arg = arg;
	if (r->queue != NULL) {
		/* In-flight deliveries finish or are abandoned: they are on disk. */
		queue_drain(r->queue, relay_pool_drained, r);
		return;
	}
	upstream_pool_drain(r->pool, relay_pool_drained, r);
}

void
relay_upstream_stats(struct relay *r, const char *account, struct upstream_pool_stats *st)
{
	upstream_pool_stats(r->pool, account, st);
}
