/*
 * upstream_pool.c: per-account pools of logged-in upstream sessions (see
 * upstream_pool.h for the rules). The pool decides which session sends
 * which message and when a new session is opened; smtp_client.c does the
 * talking.
 *
 * Callbacks to the owner never run inside an upstream_pool_* call or inside
 * a client callback: finished jobs go on a list that one deferred event
 * empties, so the owner may submit, cancel or free from its callback.
 */
#include "upstream_pool.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "credential.h"
#include "log.h"
#include "relay.h"
#include "util.h"

#define POOL_DEFAULT_SESSIONS	1	/* when max_sessions_per_account is 0 */

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)				\
	for ((var) = TAILQ_FIRST(head);						\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);		\
	    (var) = (tvar))
#endif

enum job_state {
	JOB_WAITING,		/* on ap->waiting */
	JOB_SENDING,		/* on a session */
	JOB_COMPLETING,		/* on p->completed, callback pending */
	JOB_FIRING,		/* callback running */
};

enum sess_state {
	SESS_CONNECTING,	/* connect, TLS, login */
	SESS_IDLE,
	SESS_BUSY,
	SESS_QUITTING,
};

struct account_pool;

struct upstream_job {
	TAILQ_ENTRY(upstream_job) entry;
	struct account_pool	*ap;
	const struct relay_msg	*msg;
	upstream_pool_cb	*cb;
	void			*arg;
	enum job_state		state;
	uint64_t		deadline;	/* monotonic ms, 0 = none */
	uint64_t		wait_max;
	struct pool_session	*sess;
	struct smtp_outcome	outcome;
};
TAILQ_HEAD(job_list, upstream_job);

struct pool_session {
	TAILQ_ENTRY(pool_session) entry;
	struct account_pool	*ap;
	struct smtp_client	*client;
	enum sess_state		state;
	struct event		*idle_ev;
	struct upstream_job	*job;
};
TAILQ_HEAD(session_list, pool_session);

struct account_pool {
	TAILQ_ENTRY(account_pool) entry;
	struct upstream_pool	*p;
	char			account[VAULT_ADDR_MAX];
	struct upstream_target	target;
	struct session_list	sessions;
	size_t			n_sessions;
	size_t			n_connecting;
	struct job_list		waiting;
	size_t			n_waiting;
	struct event		*timer;		/* back-off end, wait deadlines */
	struct event		*run_ev;	/* deferred pool_run() */
	unsigned		backoff_step;
	uint64_t		backoff_until;	/* monotonic ms */
	struct smtp_outcome	last_fail;	/* of the last failed session set-up */
	int			have_last_fail;
	int			auth_hold;
	uint32_t		auth_failed_version;
	uint64_t		auth_hold_until;
	struct smtp_outcome	auth_fail;
	uint64_t		logins, messages, connects;
};
TAILQ_HEAD(pool_list, account_pool);

struct upstream_pool {
	struct event_base	*base;
	struct evdns_base	*dns;
	const struct config	*cfg;
	struct credstore	*cs;
	SSL_CTX			*ctx;
	char			ctx_ca_file[CONFIG_PATH_MAX];
	struct pool_list	pools;
	struct job_list		completed;
	struct event		*complete_ev;
	size_t			n_jobs;		/* alive, in any state */
	size_t			n_sessions;
	uint64_t		idle_timeout;
	uint64_t		backoff_min, backoff_max;
	int			draining;
	void			(*drain_done)(void *);
	void			*drain_arg;
	struct event		*drain_ev;
};

static void	pool_run(struct account_pool *);
static void	pool_schedule(struct account_pool *);
static void	pool_check_drained(struct upstream_pool *);
static void	session_event(struct smtp_client *, enum smtp_client_event,
		    const struct smtp_outcome *, void *);

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
timeval_ms(struct timeval *tv, uint64_t ms)
{
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

/* Jobs. */

static void
job_complete(struct upstream_job *job, const struct smtp_outcome *o)
{
	struct upstream_pool *p = job->ap->p;

	if (&job->outcome != o)
		job->outcome = *o;
	if (job->sess != NULL && job->sess->client != NULL)
		job->outcome.cred_version = smtp_client_cred_version(job->sess->client);
	job->state = JOB_COMPLETING;
	job->sess = NULL;
	TAILQ_INSERT_TAIL(&p->completed, job, entry);
	event_active(p->complete_ev, 0, 0);
}

static void
complete_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_pool *p = arg;
	struct upstream_job *job;

	while ((job = TAILQ_FIRST(&p->completed)) != NULL) {
		TAILQ_REMOVE(&p->completed, job, entry);
		job->state = JOB_FIRING;
		job->cb(job->arg, &job->outcome);
		p->n_jobs--;
		free(job);
	}
	pool_check_drained(p);
}

static void
fail_waiting(struct account_pool *ap, const struct smtp_outcome *o)
{
	struct upstream_job *job;

	while ((job = TAILQ_FIRST(&ap->waiting)) != NULL) {
		TAILQ_REMOVE(&ap->waiting, job, entry);
		ap->n_waiting--;
		job_complete(job, o);
	}
}

/* Sessions. */

static void
session_free(struct pool_session *s)
{
	struct account_pool *ap = s->ap;

	TAILQ_REMOVE(&ap->sessions, s, entry);
	ap->n_sessions--;
	ap->p->n_sessions--;
	if (s->state == SESS_CONNECTING)
		ap->n_connecting--;
	smtp_client_free(s->client);
	event_free(s->idle_ev);
	free(s);
}

static void
session_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool_session *s = arg;

	if (s->state != SESS_IDLE)
		return;
	log_debug("upstream id=%s account=%s event=idle_close", smtp_client_id(s->client),
	    s->ap->account);
	if (smtp_client_quit(s->client) == 0)
		s->state = SESS_QUITTING;
}

static void
session_set_idle(struct pool_session *s)
{
	struct timeval tv;

	s->state = SESS_IDLE;
	s->job = NULL;
	timeval_ms(&tv, s->ap->p->idle_timeout * 1000);
	evtimer_add(s->idle_ev, &tv);
}

static void
session_quit(struct pool_session *s)
{
	evtimer_del(s->idle_ev);
	if (smtp_client_quit(s->client) == 0)
		s->state = SESS_QUITTING;
}

static int
pool_cred(void *arg, struct cred *out, char *err, size_t errlen)
{
	struct pool_session *s = arg;
	enum cred_result r;

	r = credstore_fetch(s->ap->p->cs, s->ap->account, out);
	if (r != CRED_OK) {
		snprintf(err, errlen, "no credential for %s (%s)", s->ap->account,
		    r == CRED_PERMFAIL ? "no such account or no current credential" :
		    "temporary failure");
		return -1;
	}
	return 0;
}

static int
session_open(struct account_pool *ap)
{
	struct upstream_pool *p = ap->p;
	struct pool_session *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -1;
	s->ap = ap;
	s->state = SESS_CONNECTING;
	if ((s->idle_ev = evtimer_new(p->base, session_idle_cb, s)) == NULL) {
		free(s);
		return -1;
	}
	s->client = smtp_client_new(p->base, p->dns, p->ctx, &ap->target, pool_cred,
	    session_event, s);
	if (s->client == NULL) {
		event_free(s->idle_ev);
		free(s);
		return -1;
	}
	TAILQ_INSERT_TAIL(&ap->sessions, s, entry);
	ap->n_sessions++;
	ap->n_connecting++;
	ap->connects++;
	p->n_sessions++;
	return 0;
}

static void
pool_backoff(struct account_pool *ap)
{
	uint64_t delay = ap->p->backoff_min;
	unsigned i;

	for (i = 0; i < ap->backoff_step && delay < ap->p->backoff_max; i++)
		delay *= 2;
	if (delay > ap->p->backoff_max)
		delay = ap->p->backoff_max;
	if (ap->backoff_step < 32)
		ap->backoff_step++;
	ap->backoff_until = now_ms() + delay * 1000;
	log_warn("event=upstream_backoff account=%s host=%s port=%u delay=%llu",
	    ap->account, ap->target.host, ap->target.port, (unsigned long long)delay);
}

/* A session set-up failed (connect, TLS, greeting, AUTH). */
static void
session_setup_failed(struct pool_session *s, const struct smtp_outcome *o)
{
	struct account_pool *ap = s->ap;
	char esc[1024], reply[SMTP_CLIENT_REPLY_MAX + 32];

	if (o->auth_failed) {
		uint32_t version = smtp_client_cred_version(s->client);

		log_err("event=upstream_auth_refused account=%s version=%u host=%s code=%d "
		    "enhanced=%s reply=\"%s\"", ap->account, version, ap->target.host, o->code,
		    o->enhanced, log_escape(esc, sizeof(esc), o->text, strlen(o->text)));
		smtp_outcome_reply(o, reply, sizeof(reply));
		credstore_report_auth(ap->p->cs, ap->account, version, 0, reply);
		ap->auth_hold = 1;
		ap->auth_failed_version = version;
		ap->auth_hold_until = now_ms() + UPSTREAM_POOL_AUTH_HOLD * 1000;
		ap->auth_fail = *o;
		/* Every waiting message would meet the same refusal. */
		fail_waiting(ap, o);
		return;
	}
	ap->last_fail = *o;
	ap->have_last_fail = 1;
	pool_backoff(ap);
	/* Nobody left to serve the waiting messages soon: tell them now rather
	 * than at their deadline. */
	if (ap->n_sessions == 0)
		fail_waiting(ap, o);
}

static void
session_event(struct smtp_client *c, enum smtp_client_event ev, const struct smtp_outcome *o,
    void *arg)
{
	struct pool_session *s = arg;
	struct account_pool *ap = s->ap;
	struct upstream_job *job;
	struct cred_info info;
	enum sess_state was;

	switch (ev) {
	case SMTP_CLIENT_READY:
		if (s->state == SESS_CONNECTING) {
			ap->n_connecting--;
			ap->logins++;
			ap->backoff_step = 0;
			ap->backoff_until = 0;
			ap->have_last_fail = 0;
			if (ap->auth_hold || (credstore_info(ap->p->cs, ap->account, &info) ==
			    CRED_OK && info.status != VAULT_STATUS_OK &&
			    info.version == smtp_client_cred_version(c)))
				credstore_report_auth(ap->p->cs, ap->account,
				    smtp_client_cred_version(c), 1, o->text);
			ap->auth_hold = 0;
		}
		session_set_idle(s);
		pool_schedule(ap);
		break;
	case SMTP_CLIENT_DONE:
		if ((job = s->job) != NULL) {
			s->job = NULL;
			ap->messages++;
			job_complete(job, o);
		}
		/* READY (back to idle) or CLOSED follows. */
		break;
	case SMTP_CLIENT_CLOSED:
		was = s->state;
		TAILQ_REMOVE(&ap->sessions, s, entry);
		ap->n_sessions--;
		ap->p->n_sessions--;
		if (was == SESS_CONNECTING) {
			ap->n_connecting--;
			session_setup_failed(s, o);
		} else if (o->code == 421 && was != SESS_IDLE && was != SESS_QUITTING) {
			/* "Too many connections" and the like, mid-transaction. */
			pool_backoff(ap);
		}
		/* The client frees itself once this callback returns. */
		smtp_client_free(c);
		event_free(s->idle_ev);
		free(s);
		pool_schedule(ap);
		break;
	}
}

/* Pools. */

static void
pool_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct account_pool *ap = arg;

	pool_run(ap);
}

static void
pool_run_cb(evutil_socket_t fd, short what, void *arg)
{
	struct account_pool *ap = arg;

	pool_run(ap);
}

static void
pool_schedule(struct account_pool *ap)
{
	event_active(ap->run_ev, 0, 0);
}

static struct account_pool *
pool_find(struct upstream_pool *p, const char *account, const struct upstream_target *t)
{
	struct account_pool *ap;

	TAILQ_FOREACH(ap, &p->pools, entry)
		if (strcasecmp(ap->account, account) == 0 && ap->target.port == t->port &&
		    ap->target.tls == t->tls && strcasecmp(ap->target.host, t->host) == 0)
			return ap;
	if ((ap = calloc(1, sizeof(*ap))) == NULL)
		return NULL;
	ap->p = p;
	strlcpy(ap->account, account, sizeof(ap->account));
	ap->target = *t;
	TAILQ_INIT(&ap->sessions);
	TAILQ_INIT(&ap->waiting);
	ap->timer = evtimer_new(p->base, pool_timer_cb, ap);
	ap->run_ev = event_new(p->base, -1, 0, pool_run_cb, ap);
	if (ap->timer == NULL || ap->run_ev == NULL) {
		if (ap->timer != NULL)
			event_free(ap->timer);
		if (ap->run_ev != NULL)
			event_free(ap->run_ev);
		free(ap);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&p->pools, ap, entry);
	return ap;
}

static void
pool_free_one(struct account_pool *ap)
{
	struct pool_session *s;
	struct upstream_job *job;

	while ((s = TAILQ_FIRST(&ap->sessions)) != NULL)
		session_free(s);
	while ((job = TAILQ_FIRST(&ap->waiting)) != NULL) {
		TAILQ_REMOVE(&ap->waiting, job, entry);
		free(job);
	}
	event_free(ap->timer);
	event_free(ap->run_ev);
	free(ap);
}

/* The target for an account: [upstream] with the account's overrides. */
static int
pool_target(struct upstream_pool *p, const char *account, struct upstream_target *t,
    uint32_t *version)
{
	const struct config *cfg = p->cfg;
	struct cred_info info;

	if (credstore_info(p->cs, account, &info) != CRED_OK)
		return -1;
	memset(t, 0, sizeof(*t));
	strlcpy(t->host, info.upstream_host[0] != '\0' ? info.upstream_host :
	    cfg->upstream_host, sizeof(t->host));
	t->port = info.upstream_port != 0 ? info.upstream_port : cfg->upstream_port;
	t->tls = info.upstream_tls >= 0 ? (enum upstream_tls)info.upstream_tls :
	    cfg->upstream_tls;
	strlcpy(t->ca_file, cfg->upstream_ca_file, sizeof(t->ca_file));
	t->timeout = cfg->upstream_timeout;
	strlcpy(t->helo, cfg->hostname, sizeof(t->helo));
	*version = info.version;
	return 0;
}

static void
pool_arm_timer(struct account_pool *ap, uint64_t now)
{
	struct upstream_job *job;
	uint64_t when = 0;
	struct timeval tv;

	TAILQ_FOREACH(job, &ap->waiting, entry)
		if (job->deadline != 0 && (when == 0 || job->deadline < when))
			when = job->deadline;
	if (ap->n_waiting > 0 && ap->backoff_until > now &&
	    (when == 0 || ap->backoff_until < when))
		when = ap->backoff_until;
	if (when == 0) {
		evtimer_del(ap->timer);
		return;
	}
	timeval_ms(&tv, when > now ? when - now : 0);
	evtimer_add(ap->timer, &tv);
}

static void
pool_expire(struct account_pool *ap, uint64_t now)
{
	struct upstream_job *job, *next;
	struct smtp_outcome *o;

	for (job = TAILQ_FIRST(&ap->waiting); job != NULL; job = next) {
		next = TAILQ_NEXT(job, entry);
		if (job->deadline == 0 || job->deadline > now)
			continue;
		TAILQ_REMOVE(&ap->waiting, job, entry);
		ap->n_waiting--;
		o = &job->outcome;
		if (ap->have_last_fail) {
			*o = ap->last_fail;
		} else {
			memset(o, 0, sizeof(*o));
			o->stage = SMTP_STAGE_CONNECT;
			o->error = SMTP_ERR_TIMEOUT;
			o->temporary = 1;
			snprintf(o->text, sizeof(o->text), "no upstream session for %s became free "
			    "within %llu s", ap->account, (unsigned long long)job->wait_max);
		}
		job_complete(job, o);
	}
}

static size_t
pool_max_sessions(const struct account_pool *ap)
{
	uint64_t max = ap->p->cfg->max_sessions_per_account;

	return max == 0 ? POOL_DEFAULT_SESSIONS : (size_t)max;
}

/* Match waiting messages with idle sessions, open sessions as needed. */
static void
pool_run(struct account_pool *ap)
{
	struct upstream_pool *p = ap->p;
	struct pool_session *s, *snext;
	struct upstream_job *job;
	struct smtp_outcome o;
	struct upstream_target t;
	uint32_t version = 0;
	uint64_t now = now_ms();
	int have_version;

	pool_expire(ap, now);
	have_version = pool_target(p, ap->account, &t, &version) == 0;

	/* Sessions logged in with an older credential are not reused. */
	TAILQ_FOREACH_SAFE(s, &ap->sessions, entry, snext)
		if (s->state == SESS_IDLE && have_version &&
		    smtp_client_cred_version(s->client) != version) {
			log_info("upstream id=%s account=%s event=stale_credential version=%u "
			    "current=%u", smtp_client_id(s->client), ap->account,
			    smtp_client_cred_version(s->client), version);
			session_quit(s);
		}

	if (ap->auth_hold) {
		if (!have_version || version != ap->auth_failed_version ||
		    now >= ap->auth_hold_until)
			ap->auth_hold = 0;
		else
			fail_waiting(ap, &ap->auth_fail);
	}

	while ((job = TAILQ_FIRST(&ap->waiting)) != NULL) {
		TAILQ_FOREACH(s, &ap->sessions, entry)
			if (s->state == SESS_IDLE)
				break;
		if (s == NULL)
			break;
		TAILQ_REMOVE(&ap->waiting, job, entry);
		ap->n_waiting--;
		if (smtp_client_send(s->client, job->msg, &o) == -1) {
			/* Refused before sending (SIZE, extensions): the session
			 * stays idle for the next one. */
			job_complete(job, &o);
			continue;
		}
		evtimer_del(s->idle_ev);
		s->state = SESS_BUSY;
		s->job = job;
		job->sess = s;
		job->state = JOB_SENDING;
	}

	if (ap->n_waiting > ap->n_connecting && ap->backoff_until <= now) {
		size_t want = ap->n_waiting - ap->n_connecting;

		/* Settings may have changed since the pool was made (SIGHUP). */
		if (have_version) {
			ap->target.timeout = t.timeout;
			strlcpy(ap->target.ca_file, t.ca_file, sizeof(ap->target.ca_file));
			strlcpy(ap->target.helo, t.helo, sizeof(ap->target.helo));
		}
		while (want-- > 0 && ap->n_sessions < pool_max_sessions(ap)) {
			if (session_open(ap) == -1) {
				memset(&o, 0, sizeof(o));
				o.stage = SMTP_STAGE_CONNECT;
				o.error = SMTP_ERR_NETWORK;
				o.temporary = 1;
				snprintf(o.text, sizeof(o.text), "cannot start a connection to %s:%u",
				    ap->target.host, ap->target.port);
				ap->last_fail = o;
				ap->have_last_fail = 1;
				pool_backoff(ap);
				if (ap->n_sessions == 0)
					fail_waiting(ap, &o);
				break;
			}
		}
	}

	/* Draining: nothing more to send, so idle sessions go now. */
	if (p->draining && ap->n_waiting == 0) {
		TAILQ_FOREACH_SAFE(s, &ap->sessions, entry, snext) {
			if (s->state == SESS_IDLE)
				session_quit(s);
			else if (s->state == SESS_CONNECTING)
				session_free(s);
		}
	}
	pool_arm_timer(ap, now);
	pool_check_drained(p);
}

/* Public API. */

struct upstream_pool *
upstream_pool_new(struct event_base *base, struct evdns_base *dns, const struct config *cfg,
    struct credstore *cs)
{
	struct upstream_pool *p;
	char err[512];

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->base = base;
	p->dns = dns;
	p->cfg = cfg;
	p->cs = cs;
	p->idle_timeout = UPSTREAM_POOL_IDLE_TIMEOUT;
	p->backoff_min = UPSTREAM_POOL_BACKOFF_MIN;
	p->backoff_max = UPSTREAM_POOL_BACKOFF_MAX;
	TAILQ_INIT(&p->pools);
	TAILQ_INIT(&p->completed);
	if ((p->ctx = smtp_client_tls_ctx_new(cfg->upstream_ca_file, err, sizeof(err))) == NULL) {
		log_err("event=upstream_tls_setup error=\"%s\"", err);
		goto fail;
	}
	strlcpy(p->ctx_ca_file, cfg->upstream_ca_file, sizeof(p->ctx_ca_file));
	if ((p->complete_ev = event_new(base, -1, 0, complete_cb, p)) == NULL)
		goto fail;
	return p;
fail:
	upstream_pool_free(p);
	return NULL;
}

void
upstream_pool_set_config(struct upstream_pool *p, const struct config *cfg)
{
	SSL_CTX *ctx;
	char err[512];

	p->cfg = cfg;
	if (strcmp(p->ctx_ca_file, cfg->upstream_ca_file) == 0)
		return;
	/* Open sessions hold their own reference to the old context. */
	if ((ctx = smtp_client_tls_ctx_new(cfg->upstream_ca_file, err, sizeof(err))) == NULL) {
		log_err("event=upstream_tls_setup error=\"%s\" note=\"keeping the old trust "
		    "anchors\"", err);
		return;
	}
	SSL_CTX_free(p->ctx);
	p->ctx = ctx;
	strlcpy(p->ctx_ca_file, cfg->upstream_ca_file, sizeof(p->ctx_ca_file));
}

void
upstream_pool_set_timing(struct upstream_pool *p, uint64_t idle_timeout, uint64_t backoff_min,
    uint64_t backoff_max)
{
	p->idle_timeout = idle_timeout;
	p->backoff_min = backoff_min;
	p->backoff_max = backoff_max;
}

void
upstream_pool_free(struct upstream_pool *p)
{
	struct account_pool *ap;
	struct upstream_job *job;

	if (p == NULL)
		return;
	while ((ap = TAILQ_FIRST(&p->pools)) != NULL) {
		TAILQ_REMOVE(&p->pools, ap, entry);
		pool_free_one(ap);
	}
	while ((job = TAILQ_FIRST(&p->completed)) != NULL) {
		TAILQ_REMOVE(&p->completed, job, entry);
		free(job);
	}
	if (p->complete_ev != NULL)
		event_free(p->complete_ev);
	if (p->drain_ev != NULL)
		event_free(p->drain_ev);
	SSL_CTX_free(p->ctx);
	free(p);
}

struct upstream_job *
upstream_pool_send(struct upstream_pool *p, const struct relay_msg *msg, uint64_t wait_max,
    upstream_pool_cb *cb, void *arg)
{
	struct upstream_job *job;
	struct account_pool *ap;
	struct upstream_target t;
	uint32_t version;
	int known;

	if ((job = calloc(1, sizeof(*job))) == NULL)
		return NULL;
	job->msg = msg;
	job->cb = cb;
	job->arg = arg;
	job->wait_max = wait_max;
	job->deadline = wait_max > 0 ? now_ms() + wait_max * 1000 : 0;
	if ((known = pool_target(p, msg->account, &t, &version)) == -1) {
		/* Unknown to the credstore right now: a pool of its own name
		 * still carries the job to its (deferred) failure. */
		memset(&t, 0, sizeof(t));
		strlcpy(t.host, p->cfg->upstream_host, sizeof(t.host));
		t.port = p->cfg->upstream_port;
		t.tls = p->cfg->upstream_tls;
	}
	if ((ap = pool_find(p, msg->account, &t)) == NULL) {
		free(job);
		return NULL;
	}
	job->ap = ap;
	p->n_jobs++;
	if (known == -1) {
		memset(&job->outcome, 0, sizeof(job->outcome));
		job->outcome.stage = SMTP_STAGE_AUTH;
		job->outcome.error = SMTP_ERR_CREDENTIAL;
		job->outcome.temporary = 1;
		snprintf(job->outcome.text, sizeof(job->outcome.text),
		    "no credential for %s", msg->account);
		job_complete(job, &job->outcome);
		return job;
	}
	job->state = JOB_WAITING;
	TAILQ_INSERT_TAIL(&ap->waiting, job, entry);
	ap->n_waiting++;
	pool_schedule(ap);
	return job;
}

void
upstream_pool_cancel(struct upstream_pool *p, struct upstream_job *job)
{
	struct account_pool *ap = job->ap;
	struct pool_session *s;

	switch (job->state) {
	case JOB_WAITING:
		TAILQ_REMOVE(&ap->waiting, job, entry);
		ap->n_waiting--;
		break;
	case JOB_SENDING:
		/* The client reads the message while it sends: close it. */
		if ((s = job->sess) != NULL) {
			log_info("upstream id=%s account=%s event=cancelled",
			    smtp_client_id(s->client), ap->account);
			s->job = NULL;
			session_free(s);
		}
		pool_schedule(ap);
		break;
	case JOB_COMPLETING:
		TAILQ_REMOVE(&p->completed, job, entry);
		break;
	case JOB_FIRING:
		/* complete_cb frees it after the callback. */
		return;
	}
	p->n_jobs--;
	free(job);
	pool_check_drained(p);
}

int
upstream_pool_withdraw(struct upstream_pool *p, struct upstream_job *job)
{
	if (job->state != JOB_WAITING)
		return -1;
	upstream_pool_cancel(p, job);
	return 0;
}

void
upstream_pool_release(struct upstream_pool *p, const char *account)
{
	struct account_pool *ap;

	TAILQ_FOREACH(ap, &p->pools, entry) {
		if (strcasecmp(ap->account, account) != 0 || !ap->auth_hold)
			continue;
		ap->auth_hold = 0;
		pool_schedule(ap);
	}
}

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_pool *p = arg;
	void (*done)(void *) = p->drain_done;

	p->drain_done = NULL;
	if (done != NULL)
		done(p->drain_arg);
}

static void
pool_check_drained(struct upstream_pool *p)
{
	if (!p->draining || p->drain_done == NULL || p->n_jobs > 0 || p->n_sessions > 0)
		return;
	if (p->drain_ev == NULL && (p->drain_ev = event_new(p->base, -1, 0, drain_cb, p)) == NULL)
		return;
	event_active(p->drain_ev, 0, 0);
}

void
upstream_pool_drain(struct upstream_pool *p, void (*done)(void *), void *arg)
{
	struct account_pool *ap;

	p->draining = 1;
	p->drain_done = done;
	p->drain_arg = arg;
	TAILQ_FOREACH(ap, &p->pools, entry)
		pool_schedule(ap);
	pool_check_drained(p);
}

void
upstream_pool_stats(const struct upstream_pool *p, const char *account,
    struct upstream_pool_stats *st)
{
	const struct account_pool *ap;
	const struct pool_session *s;

	memset(st, 0, sizeof(*st));
	TAILQ_FOREACH(ap, &p->pools, entry) {
		if (account != NULL && strcasecmp(ap->account, account) != 0)
			continue;
		st->sessions += ap->n_sessions;
		st->waiting += ap->n_waiting;
		st->logins += ap->logins;
		st->messages += ap->messages;
		st->connects += ap->connects;
		TAILQ_FOREACH(s, &ap->sessions, entry)
			if (s->state == SESS_IDLE)
				st->idle++;
	}
}
