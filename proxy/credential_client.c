/*
 * credential_client.c: the credstore questions asked of the vault keeper
 * over a blocking SOCK_SEQPACKET channel (keeper.h). The keeper answers in
 * microseconds (a vault save in milliseconds), so the daemon's loop blocks
 * on it as it used to block on the vault itself. A keeper that is gone or
 * answers out of turn is a broken invariant: the daemon logs and exits, and
 * its parent sees it. Every buffer that held a reply is wiped, since a
 * FETCH reply carries a credential.
 *
 * One request is asynchronous: an admin login (KEEPER_ADMIN_VERIFY), which
 * the keeper answers once its Argon2id run is done, 0.1-0.5 s later. Its
 * answer may arrive while a synchronous call waits for its own (it is kept
 * and handed over from the next loop turn) or while nothing waits (an event
 * on the channel reads it).
 *
 * INFO answers (limits, upstream, credential version, status: nothing
 * secret) are reused for CREDCLIENT_INFO_TTL_MS, because one message asks
 * three or four times (quota, pool, session) and each question is a round
 * trip to another process in the middle of the message's latency. Anything
 * this client does that may change them (a login's FETCH, an auth report,
 * an admin change) forgets them at once; a change made elsewhere (a CLI
 * command) reaches the keeper within its 1 s poll, and us 0.1 s later,
 * inside SPEC's 2 s.
 */
#include "credential_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/queue.h>

#include <event2/event.h>
#include <sodium.h>

#include "ipc.h"
#include "keeper.h"
#include "keeper_verify.h"
#include "log.h"
#include "util.h"

#define CREDCLIENT_LOGINS_MAX	64	/* logins waiting for the keeper's answer */

/* A login the keeper is checking. A cancelled one stays listed, without a
 * callback, until its answer comes, so that the answer is recognised. */
struct credclient_login {
	TAILQ_ENTRY(credclient_login) entry;
	uint32_t		 id;
	int			 answered;
	enum cred_login		 res;
	char			 name[VAULT_NAME_MAX];
	cred_login_cb		*cb;
	void			*arg;
};
TAILQ_HEAD(credclient_login_list, credclient_login);

#define CREDCLIENT_INFO_TTL_MS	100	/* an INFO answer is reused this long */
#define CREDCLIENT_INFO_CACHE	8	/* accounts whose answers are kept */

struct credclient_info_entry {
	char			 account[VAULT_ADDR_MAX];
	struct cred_info	 info;
	struct timespec		 at;		/* CLOCK_MONOTONIC */
};

struct credclient {
	int		 fd;
	uint32_t	 next_id;
	unsigned char	*rbuf;		/* IPC_MSG_MAX, wiped after each call */
	unsigned char	*wbuf;		/* KEEPER_REQ_MAX, wiped after each call */
	struct event	*ev_read;	/* login answers while no call waits */
	struct event	*ev_done;	/* hands answered logins over */
	struct credclient_login_list logins;
	size_t		 n_logins;
	struct credclient_info_entry info[CREDCLIENT_INFO_CACHE];
	size_t		 n_info, next_info;
};

struct credclient *
credclient_new(int fd)
{
	struct credclient *cc;

	if ((cc = calloc(1, sizeof(*cc))) == NULL)
		return NULL;
	cc->fd = fd;
	TAILQ_INIT(&cc->logins);
	if ((cc->rbuf = malloc(IPC_MSG_MAX)) == NULL ||
	    (cc->wbuf = malloc(KEEPER_REQ_MAX)) == NULL) {
		free(cc->rbuf);
		free(cc);
		return NULL;
	}
	return cc;
}

void
credclient_free(struct credclient *cc)
{
	struct credclient_login *l;

	if (cc == NULL)
		return;
	while ((l = TAILQ_FIRST(&cc->logins)) != NULL) {
		TAILQ_REMOVE(&cc->logins, l, entry);
		sodium_memzero(l, sizeof(*l));
		free(l);
	}
	if (cc->ev_read != NULL)
		event_free(cc->ev_read);
	if (cc->ev_done != NULL)
		event_free(cc->ev_done);
	close(cc->fd);
	sodium_memzero(cc->rbuf, IPC_MSG_MAX);
	sodium_memzero(cc->wbuf, KEEPER_REQ_MAX);
	free(cc->rbuf);
	free(cc->wbuf);
	free(cc);
}

static struct ipc_buf
credclient_req(struct credclient *cc)
{
	struct ipc_buf b = { cc->wbuf, 0, KEEPER_REQ_MAX, 0 };

	return b;
}

static void __attribute__((noreturn))
credclient_fatal(uint16_t type, const char *why)
{
	log_err("event=ipc_fatal peer=keeper type=%u error=\"%s\" action=exit", type, why);
	exit(IPC_EXIT_FATAL);
}

/* A login's answer: keep it for the next loop turn. */
static void
credclient_login_answer(struct credclient *cc, const struct ipc_msg *m)
{
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	struct credclient_login *l;
	char name[VAULT_NAME_MAX];
	uint32_t res;

	TAILQ_FOREACH(l, &cc->logins, entry)
		if (l->id == m->id && !l->answered)
			break;
	if (l == NULL)
		credclient_fatal(m->type, "answer to an unknown login");
	res = ipc_get_u32(&r);
	ipc_get_str(&r, name, sizeof(name));
	if (res > CRED_LOGIN_BUSY || (res == CRED_LOGIN_OK) != (name[0] != '\0'))
		r.failed = 1;
	if (ipc_rd_done(&r) == -1)
		credclient_fatal(m->type, "malformed login answer");
	l->answered = 1;
	l->res = (enum cred_login)res;
	strlcpy(l->name, name, sizeof(l->name));
	sodium_memzero(cc->rbuf, IPC_HDR_LEN + m->len);
	event_active(cc->ev_done, EV_TIMEOUT, 0);
}

/*
 * Forget the INFO answers before a request that may change them: a login
 * (its version and the one INFO reports must agree), an auth report, an
 * admin change.
 */
static void
credclient_info_forget(struct credclient *cc, uint16_t type)
{
	switch (type) {
	case KEEPER_FETCH:
	case KEEPER_REPORT_AUTH:
	case KEEPER_ADD:
	case KEEPER_ROTATE:
	case KEEPER_ROLLBACK:
	case KEEPER_REMOVE:
		cc->n_info = cc->next_info = 0;
		break;
	default:
		break;
	}
}

/* Send the request in b, wait for its reply; r reads the reply. */
static void
credclient_call(struct credclient *cc, uint16_t type, struct ipc_buf *b, struct ipc_rd *r)
{
	const struct ipc_rule rules[] = {
		{ (uint16_t)(type | KEEPER_REPLY), 0, KEEPER_REPLY_MAX, IPC_FD_NONE },
		{ KEEPER_ADMIN_VERIFY | KEEPER_REPLY, 6, KEEPER_VERIFY_REPLY_MAX, IPC_FD_NONE },
	};
	struct ipc_msg m;
	char err[256];
	uint32_t id = ++cc->next_id;

	if (b->failed)
		credclient_fatal(type, "request does not fit");
	credclient_info_forget(cc, type);
	if (ipc_send_sync(cc->fd, type, id, -1, b->p, b->len, err, sizeof(err)) == -1) {
		sodium_memzero(b->p, b->len);
		credclient_fatal(type, err);
	}
	sodium_memzero(b->p, b->len);
	for (;;) {
		/* Login answers only where a login was asked for. */
		if (ipc_recv_sync(cc->fd, rules, TAILQ_EMPTY(&cc->logins) ? 1 : 2, cc->rbuf,
		    IPC_MSG_MAX, &m, err, sizeof(err)) == -1)
			credclient_fatal(type, err);
		if (m.type != (KEEPER_ADMIN_VERIFY | KEEPER_REPLY))
			break;
		credclient_login_answer(cc, &m);
	}
	if (m.id != id)
		credclient_fatal(type, "reply to another request");
	r->p = m.data;
	r->len = m.len;
	r->off = 0;
	r->failed = 0;
}

/* The reply has been read: check it was read exactly, and wipe it. */
static void
credclient_done(struct credclient *cc, uint16_t type, struct ipc_rd *r)
{
	int bad = ipc_rd_done(r);

	sodium_memzero(cc->rbuf, IPC_HDR_LEN + r->len);
	if (bad)
		credclient_fatal(type, "malformed reply");
}

static enum cred_result
credclient_result(struct ipc_rd *r)
{
	uint32_t v = ipc_get_u32(r);

	if (v > CRED_PERMFAIL)
		r->failed = 1;
	return (enum cred_result)v;
}

enum cred_result
credclient_resolve(struct credclient *cc, const char *addr, char *account, size_t len)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;
	enum cred_result res;
	char acct[VAULT_ADDR_MAX];

	if (strlen(addr) >= VAULT_ADDR_MAX)
		return CRED_PERMFAIL;
	ipc_put_str(&b, addr);
	credclient_call(cc, KEEPER_RESOLVE, &b, &r);
	res = credclient_result(&r);
	ipc_get_str(&r, acct, sizeof(acct));
	credclient_done(cc, KEEPER_RESOLVE, &r);
	if (res == CRED_OK && strlcpy(account, acct, len) >= len)
		return CRED_TEMPFAIL;
	return res;
}

static int64_t
credclient_age_ms(const struct timespec *then, const struct timespec *now)
{
	return (int64_t)(now->tv_sec - then->tv_sec) * 1000 +
	    (now->tv_nsec - then->tv_nsec) / 1000000;
}

enum cred_result
credclient_info(struct credclient *cc, const char *account, struct cred_info *out)
{
	struct ipc_buf b = credclient_req(cc);
	struct credclient_info_entry *e;
	struct ipc_rd r;
	struct timespec now;
	enum cred_result res;
	size_t i;

	if (strlen(account) >= VAULT_ADDR_MAX)
		return CRED_PERMFAIL;
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (i = 0; i < cc->n_info; i++) {
		e = &cc->info[i];
		if (strcmp(e->account, account) == 0 &&
		    credclient_age_ms(&e->at, &now) < CREDCLIENT_INFO_TTL_MS) {
			*out = e->info;
			return CRED_OK;
		}
	}
	ipc_put_str(&b, account);
	credclient_call(cc, KEEPER_INFO, &b, &r);
	res = credclient_result(&r);
	keeper_get_info(&r, out);
	credclient_done(cc, KEEPER_INFO, &r);
	if (res != CRED_OK)
		return res;
	/* Only answers that found the account are kept. */
	for (i = 0; i < cc->n_info && strcmp(cc->info[i].account, account) != 0; i++)
		;
	if (i == cc->n_info) {
		if (cc->n_info < CREDCLIENT_INFO_CACHE)
			i = cc->n_info++;
		else
			i = cc->next_info++ % CREDCLIENT_INFO_CACHE;
	}
	e = &cc->info[i];
	strlcpy(e->account, account, sizeof(e->account));
	e->info = *out;
	e->at = now;
	return res;
}

enum cred_result
credclient_fetch(struct credclient *cc, const char *account, struct cred *out)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;
	enum cred_result res;
	const unsigned char *p;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (strlen(account) >= VAULT_ADDR_MAX)
		return CRED_PERMFAIL;
	ipc_put_str(&b, account);
	credclient_call(cc, KEEPER_FETCH, &b, &r);
	res = credclient_result(&r);
	ipc_get_str(&r, out->user, sizeof(out->user));
	out->version = ipc_get_u32(&r);
	p = ipc_get_bytes(&r, &len);
	if (res == CRED_OK && !r.failed && (len == 0 || len > VAULT_SECRET_MAX))
		r.failed = 1;
	if (res == CRED_OK && !r.failed && vault_secret_set(&out->secret, p, len) == -1)
		res = CRED_TEMPFAIL;
	credclient_done(cc, KEEPER_FETCH, &r);
	if (res != CRED_OK)
		cred_wipe(out);
	return res;
}

void
credclient_report_auth(struct credclient *cc, const char *account, uint32_t version, int ok,
    const char *reply)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;
	char text[KEEPER_STR_MAX];

	if (strlen(account) >= VAULT_ADDR_MAX)
		return;
	/* A long upstream reply is cut: the audit event needs its start. */
	strlcpy(text, reply != NULL ? reply : "", sizeof(text));
	ipc_put_str(&b, account);
	ipc_put_u32(&b, version);
	ipc_put_u32(&b, ok ? 1 : 0);
	ipc_put_str(&b, text);
	credclient_call(cc, KEEPER_REPORT_AUTH, &b, &r);
	credclient_done(cc, KEEPER_REPORT_AUTH, &r);
}

int
credclient_healthy(struct credclient *cc, char *err, size_t errlen)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;
	char text[KEEPER_STR_MAX];
	uint32_t bad;

	credclient_call(cc, KEEPER_HEALTHY, &b, &r);
	bad = ipc_get_u32(&r);
	ipc_get_str(&r, text, sizeof(text));
	credclient_done(cc, KEEPER_HEALTHY, &r);
	if (!bad)
		return 0;
	strlcpy(err, text, errlen);
	return -1;
}

size_t
credclient_account_count(struct credclient *cc)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;
	uint64_t n;

	credclient_call(cc, KEEPER_COUNT, &b, &r);
	n = ipc_get_u64(&r);
	if (n > VAULT_MAX_ACCOUNTS)
		r.failed = 1;
	credclient_done(cc, KEEPER_COUNT, &r);
	return (size_t)n;
}

int
credclient_account_view(struct credclient *cc, size_t i, struct cred_account_view *out)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;
	uint32_t end;

	ipc_put_u64(&b, i);
	credclient_call(cc, KEEPER_VIEW, &b, &r);
	end = ipc_get_u32(&r);
	keeper_get_view(&r, out);
	credclient_done(cc, KEEPER_VIEW, &r);
	return end ? -1 : 0;
}

static enum cred_admin_result
credclient_admin_result(struct credclient *cc, uint16_t type, struct ipc_rd *r,
    uint32_t *version, char *err, size_t errlen)
{
	char text[KEEPER_STR_MAX];
	uint32_t rc, v;

	rc = ipc_get_u32(r);
	v = ipc_get_u32(r);
	ipc_get_str(r, text, sizeof(text));
	if (rc > CRED_ADMIN_UNAVAILABLE)
		r->failed = 1;
	credclient_done(cc, type, r);
	if (version != NULL)
		*version = v;
	if (rc != CRED_ADMIN_OK)
		strlcpy(err, text, errlen);
	return (enum cred_admin_result)rc;
}

enum cred_admin_result
credclient_account_add(struct credclient *cc, const struct vault_account *tmpl,
    const struct vault_secret *secret, const char *by, const char *ip, char *err,
    size_t errlen)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;

	keeper_put_tmpl(&b, tmpl);
	ipc_put_bytes(&b, secret->buf, secret->len);
	ipc_put_nstr(&b, by);
	ipc_put_nstr(&b, ip);
	credclient_call(cc, KEEPER_ADD, &b, &r);
	return credclient_admin_result(cc, KEEPER_ADD, &r, NULL, err, errlen);
}

enum cred_admin_result
credclient_account_rotate(struct credclient *cc, const char *addr,
    const struct vault_secret *secret, const char *by, const char *ip, uint32_t *version,
    char *err, size_t errlen)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;

	ipc_put_str(&b, addr);
	ipc_put_bytes(&b, secret->buf, secret->len);
	ipc_put_nstr(&b, by);
	ipc_put_nstr(&b, ip);
	credclient_call(cc, KEEPER_ROTATE, &b, &r);
	return credclient_admin_result(cc, KEEPER_ROTATE, &r, version, err, errlen);
}

enum cred_admin_result
credclient_account_change(struct credclient *cc, int type, const char *addr, const char *by,
    const char *ip, uint32_t *version, char *err, size_t errlen)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;

	ipc_put_str(&b, addr);
	ipc_put_nstr(&b, by);
	ipc_put_nstr(&b, ip);
	credclient_call(cc, (uint16_t)type, &b, &r);
	return credclient_admin_result(cc, (uint16_t)type, &r, version, err, errlen);
}

/* Idle: the only thing the keeper may send is a login's answer. */
static void
credclient_on_read(evutil_socket_t fd, short what, void *arg)
{
	const struct ipc_rule rule = { KEEPER_ADMIN_VERIFY | KEEPER_REPLY, 6,
	    KEEPER_VERIFY_REPLY_MAX, IPC_FD_NONE };
	struct credclient *cc = arg;
	struct ipc_msg m;
	char err[256];

	if (TAILQ_EMPTY(&cc->logins)) {
		/* Nothing is expected: the keeper went away (EOF), or broke. */
		if (ipc_recv_sync(cc->fd, &rule, 0, cc->rbuf, IPC_MSG_MAX, &m, err,
		    sizeof(err)) == -1)
			credclient_fatal(0, err);
		credclient_fatal(m.type, "unexpected message");
	}
	if (ipc_recv_sync(cc->fd, &rule, 1, cc->rbuf, IPC_MSG_MAX, &m, err, sizeof(err)) == -1)
		credclient_fatal(KEEPER_ADMIN_VERIFY, err);
	credclient_login_answer(cc, &m);
}

/* Hand every answered login over, one at a time (a callback may start or
 * cancel others). */
static void
credclient_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct credclient *cc = arg;
	struct credclient_login *l;
	char name[VAULT_NAME_MAX];
	enum cred_login res;
	cred_login_cb *cb;
	void *cbarg;

	for (;;) {
		TAILQ_FOREACH(l, &cc->logins, entry)
			if (l->answered)
				break;
		if (l == NULL)
			return;
		TAILQ_REMOVE(&cc->logins, l, entry);
		cc->n_logins--;
		cb = l->cb;
		cbarg = l->arg;
		res = l->res;
		strlcpy(name, l->name, sizeof(name));
		sodium_memzero(l, sizeof(*l));
		free(l);
		if (cb != NULL)
			cb(cbarg, res, name);
	}
}

int
credclient_admin_verify(struct credclient *cc, struct event_base *base, const char *name,
    const struct vault_secret *password, cred_login_cb *cb, void *arg)
{
	struct ipc_buf b = credclient_req(cc);
	struct credclient_login *l;
	char typed[VAULT_NAME_MAX], err[256];

	if (cc->ev_done == NULL) {
		if ((cc->ev_done = event_new(base, -1, 0, credclient_on_done, cc)) == NULL)
			return -1;
		if ((cc->ev_read = event_new(base, cc->fd, EV_READ | EV_PERSIST,
		    credclient_on_read, cc)) == NULL || event_add(cc->ev_read, NULL) == -1) {
			if (cc->ev_read != NULL)
				event_free(cc->ev_read);
			event_free(cc->ev_done);
			cc->ev_read = cc->ev_done = NULL;
			return -1;
		}
	}
	if (cc->n_logins >= CREDCLIENT_LOGINS_MAX || (l = calloc(1, sizeof(*l))) == NULL)
		return -1;
	/* The caller bounds both; the keeper refuses anything else. */
	strlcpy(typed, name, sizeof(typed));
	if (typed[0] == '\0' || password->len == 0 || password->len > VAULT_SECRET_MAX) {
		free(l);
		return -1;
	}
	ipc_put_str(&b, typed);
	ipc_put_bytes(&b, password->buf, password->len);
	l->id = ++cc->next_id;
	l->cb = cb;
	l->arg = arg;
	if (b.failed || ipc_send_sync(cc->fd, KEEPER_ADMIN_VERIFY, l->id, -1, b.p, b.len, err,
	    sizeof(err)) == -1) {
		sodium_memzero(b.p, b.len);
		credclient_fatal(KEEPER_ADMIN_VERIFY, b.failed ? "request does not fit" : err);
	}
	sodium_memzero(b.p, b.len);
	TAILQ_INSERT_TAIL(&cc->logins, l, entry);
	cc->n_logins++;
	return 0;
}

void
credclient_admin_verify_cancel(struct credclient *cc, void *arg)
{
	struct credclient_login *l, *next;

	for (l = TAILQ_FIRST(&cc->logins); l != NULL; l = next) {
		next = TAILQ_NEXT(l, entry);
		if (l->arg != arg || l->cb == NULL)
			continue;
		if (l->answered) {
			TAILQ_REMOVE(&cc->logins, l, entry);
			cc->n_logins--;
			sodium_memzero(l, sizeof(*l));
			free(l);
		} else {
			l->cb = NULL;
			l->arg = NULL;
		}
	}
}

static int
credclient_status(struct credclient *cc, uint16_t type, struct ipc_rd *r, char *err,
    size_t errlen)
{
	char text[KEEPER_STR_MAX];
	uint32_t bad;

	bad = ipc_get_u32(r);
	ipc_get_str(r, text, sizeof(text));
	credclient_done(cc, type, r);
	if (!bad)
		return 0;
	strlcpy(err, text, errlen);
	return -1;
}

int
credclient_admin_audit(struct credclient *cc, int action, const char *user, const char *ip,
    const char *reason, char *err, size_t errlen)
{
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;

	ipc_put_u32(&b, (uint32_t)action);
	ipc_put_nstr(&b, user);
	ipc_put_nstr(&b, ip);
	ipc_put_nstr(&b, reason);
	credclient_call(cc, KEEPER_ADMIN_AUDIT, &b, &r);
	return credclient_status(cc, KEEPER_ADMIN_AUDIT, &r, err, errlen);
}

int
credclient_audit_append(void *arg, const char *json, size_t len, char *err, size_t errlen)
{
	struct credclient *cc = arg;
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;

	if (len == 0 || len > KEEPER_REQ_MAX) {
		snprintf(err, errlen, "audit event too large (%zu bytes)", len);
		return -1;
	}
	ipc_put_raw(&b, json, len);
	credclient_call(cc, KEEPER_AUDIT_APPEND, &b, &r);
	return credclient_status(cc, KEEPER_AUDIT_APPEND, &r, err, errlen);
}

int
credclient_audit_reopen(void *arg, char *err, size_t errlen)
{
	struct credclient *cc = arg;
	struct ipc_buf b = credclient_req(cc);
	struct ipc_rd r;

	credclient_call(cc, KEEPER_AUDIT_REOPEN, &b, &r);
	return credclient_status(cc, KEEPER_AUDIT_REOPEN, &r, err, errlen);
}
