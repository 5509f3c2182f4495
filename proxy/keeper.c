/*
 * keeper.c: the vault keeper process (keeper.h). Forked by "serve" before
 * any listener exists, it unlocks the vault, opens the audit log, drops
 * privileges, says READY and then answers credstore requests, one at a time,
 * until the parent closes its channel. A request that is malformed in any
 * way (header, bounds, payload fields, a type this channel may not send, an
 * audit event its process does not write) is logged and ends the keeper,
 * which ends the daemon: the processes are ours, so a bad message means one
 * of them is no longer behaving as written.
 */
#include "keeper.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "cli.h"
#include "credential.h"
#include "keeper_verify.h"
#include "log.h"
#include "privdrop.h"
#include "sandbox.h"
#include "util.h"

_Static_assert(AUDIT_FORWARD_MAX <= KEEPER_REQ_MAX,
    "a forwarder's batch of audit events fits in one request");

#define KEEPER_POLL_SECONDS	1	/* SPEC: a changed vault is live within 2 s */
#define KEEPER_ERR_MAX		512

/* What keeper_audit_append() makes of a batch. */
#define KEEPER_AUDIT_OK		0
#define KEEPER_AUDIT_MALFORMED	1	/* not an audit event */
#define KEEPER_AUDIT_NOT_ALLOWED 2	/* an event this channel may not write */

/*
 * Each request's payload bounds, once; the channels' tables below list
 * which of them each channel may make.
 */
#define RQ(t, lo, hi)	{ (t), (lo), (hi), IPC_FD_NONE }
#define RQ_RESOLVE	RQ(KEEPER_RESOLVE, 2, 2 + VAULT_ADDR_MAX)
#define RQ_INFO	RQ(KEEPER_INFO, 2, 2 + VAULT_ADDR_MAX)
#define RQ_FETCH	RQ(KEEPER_FETCH, 2, 2 + VAULT_ADDR_MAX)
#define RQ_REPORT_AUTH	RQ(KEEPER_REPORT_AUTH, 12, 2 + VAULT_ADDR_MAX + 8 + 2 + KEEPER_STR_MAX)
#define RQ_HEALTHY	RQ(KEEPER_HEALTHY, 0, 0)
#define RQ_COUNT	RQ(KEEPER_COUNT, 0, 0)
#define RQ_VIEW	RQ(KEEPER_VIEW, 8, 8)
#define RQ_ADD	RQ(KEEPER_ADD, 1, KEEPER_REQ_MAX)
#define RQ_ROTATE	RQ(KEEPER_ROTATE, 1, KEEPER_REQ_MAX)
#define RQ_ROLLBACK	RQ(KEEPER_ROLLBACK, 14, 3 * (6 + VAULT_ADDR_MAX))
#define RQ_REMOVE	RQ(KEEPER_REMOVE, 14, 3 * (6 + VAULT_ADDR_MAX))
#define RQ_ADMIN_VERIFY	RQ(KEEPER_ADMIN_VERIFY, KEEPER_VERIFY_REQ_MIN, KEEPER_VERIFY_REQ_MAX)
#define RQ_ADMIN_AUDIT	RQ(KEEPER_ADMIN_AUDIT, 22, 4 + 3 * (6 + KEEPER_STR_MAX))
#define RQ_AUDIT_APPEND	RQ(KEEPER_AUDIT_APPEND, 3, KEEPER_REQ_MAX)
#define RQ_AUDIT_REOPEN	RQ(KEEPER_AUDIT_REOPEN, 0, 0)

const struct ipc_rule keeper_rules_daemon[] = {
	RQ_RESOLVE,
	RQ_INFO,
	RQ_FETCH,
	RQ_REPORT_AUTH,
	RQ_HEALTHY,
	RQ_COUNT,
	RQ_VIEW,
	RQ_ADD,
	RQ_ROTATE,
	RQ_ROLLBACK,
	RQ_REMOVE,
	RQ_ADMIN_VERIFY,
	RQ_ADMIN_AUDIT,
	RQ_AUDIT_APPEND,
	RQ_AUDIT_REOPEN,
};
const size_t keeper_n_rules_daemon = sizeof(keeper_rules_daemon) /
    sizeof(keeper_rules_daemon[0]);

/* The relay: one credential per upstream login and its result, audit. */
const struct ipc_rule keeper_rules_relay[] = {
	RQ_INFO,
	RQ_FETCH,
	RQ_REPORT_AUTH,
	RQ_AUDIT_APPEND,
	RQ_AUDIT_REOPEN,
};
const size_t keeper_n_rules_relay = sizeof(keeper_rules_relay) /
    sizeof(keeper_rules_relay[0]);

/* The SMTP front end: which account an address is, "reject" events. */
const struct ipc_rule keeper_rules_smtp[] = {
	RQ_RESOLVE,
	RQ_AUDIT_APPEND,
};
const size_t keeper_n_rules_smtp = sizeof(keeper_rules_smtp) /
    sizeof(keeper_rules_smtp[0]);

/* The admin process: account views and changes, admin logins (checked
 * here: KEEPER_ADMIN_VERIFY) and their audit events. Never FETCH; no hash
 * goes out. */
const struct ipc_rule keeper_rules_admin[] = {
	RQ_INFO,
	RQ_HEALTHY,
	RQ_COUNT,
	RQ_VIEW,
	RQ_ADD,
	RQ_ROTATE,
	RQ_ROLLBACK,
	RQ_REMOVE,
	RQ_ADMIN_VERIFY,
	RQ_ADMIN_AUDIT,
};
const size_t keeper_n_rules_admin = sizeof(keeper_rules_admin) /
    sizeof(keeper_rules_admin[0]);

const struct ipc_rule keeper_rules_audit[] = {
	RQ_AUDIT_APPEND,
	RQ_AUDIT_REOPEN,
};
const size_t keeper_n_rules_audit = sizeof(keeper_rules_audit) /
    sizeof(keeper_rules_audit[0]);

const char *const keeper_audit_events_smtp[] = { "reject", NULL };
const char *const keeper_audit_events_relay[] = { "message", NULL };
const char *const keeper_audit_events_none[] = { NULL };

static const struct ipc_rule keeper_rules_ready[] = {
	RQ(KEEPER_READY, 0, 0),
};

/* The parent: whether the keeper's loop still turns, nothing else. */
static const struct ipc_rule keeper_rules_parent[] = {
	RQ(KEEPER_PING, 0, 0),
};

struct keeper;

/* One channel; requests are answered at once, on the channel they came by. */
struct keeper_chan {
	struct keeper		*k;
	struct ipc		*ipc;
	const char		*peer;
	const char *const	*audit_events;	/* NULL: any */
	size_t			 idx;
};

struct keeper {
	struct event_base	*base;
	struct keeper_chan	 chan[KEEPER_CHANNELS];
	size_t			 n_chan;
	struct ipc		*ipc;		/* the channel being answered */
	const char		*peer;
	struct credstore	*cs;
	struct audit		*audit;
	struct event		*ev_poll;
	struct keeper_verifier	*verifier;	/* admin logins (keeper_verify.c) */
};

/* ---- Shared wire forms ------------------------------------------------------ */

void
keeper_put_info(struct ipc_buf *b, const struct cred_info *ci)
{
	ipc_put_str(b, ci->address);
	ipc_put_str(b, ci->upstream_host);
	ipc_put_u32(b, ci->upstream_port);
	ipc_put_u32(b, (uint32_t)ci->upstream_tls);
	ipc_put_u64(b, ci->daily_limit);
	ipc_put_u64(b, ci->daily_rcpt_limit);
	ipc_put_u32(b, ci->version);
	ipc_put_u32(b, ci->status);
}

void
keeper_get_info(struct ipc_rd *r, struct cred_info *ci)
{
	uint32_t port;

	memset(ci, 0, sizeof(*ci));
	ipc_get_str(r, ci->address, sizeof(ci->address));
	ipc_get_str(r, ci->upstream_host, sizeof(ci->upstream_host));
	port = ipc_get_u32(r);
	if (port > UINT16_MAX)
		r->failed = 1;
	ci->upstream_port = (uint16_t)port;
	ci->upstream_tls = (int)ipc_get_u32(r);
	ci->daily_limit = ipc_get_u64(r);
	ci->daily_rcpt_limit = ipc_get_u64(r);
	ci->version = ipc_get_u32(r);
	ci->status = ipc_get_u32(r);
}

void
keeper_put_view(struct ipc_buf *b, const struct cred_account_view *v)
{
	size_t i;

	keeper_put_info(b, &v->info);
	ipc_put_u32(b, (uint32_t)v->n_aliases);
	for (i = 0; i < v->n_aliases; i++)
		ipc_put_str(b, v->aliases[i]);
	ipc_put_u64(b, (uint64_t)v->created);
	ipc_put_u64(b, (uint64_t)v->rotated);
	ipc_put_u32(b, (uint32_t)v->n_versions);
	for (i = 0; i < v->n_versions; i++) {
		ipc_put_u32(b, v->versions[i]);
		ipc_put_u64(b, (uint64_t)v->version_created[i]);
	}
}

void
keeper_get_view(struct ipc_rd *r, struct cred_account_view *v)
{
	size_t i;

	memset(v, 0, sizeof(*v));
	keeper_get_info(r, &v->info);
	v->n_aliases = ipc_get_u32(r);
	if (v->n_aliases > VAULT_MAX_ALIASES) {
		r->failed = 1;
		v->n_aliases = 0;
	}
	for (i = 0; i < v->n_aliases; i++)
		ipc_get_str(r, v->aliases[i], sizeof(v->aliases[i]));
	v->created = (int64_t)ipc_get_u64(r);
	v->rotated = (int64_t)ipc_get_u64(r);
	v->n_versions = ipc_get_u32(r);
	if (v->n_versions > VAULT_MAX_VERSIONS) {
		r->failed = 1;
		v->n_versions = 0;
	}
	for (i = 0; i < v->n_versions; i++) {
		v->versions[i] = ipc_get_u32(r);
		v->version_created[i] = (int64_t)ipc_get_u64(r);
	}
}

void
keeper_put_tmpl(struct ipc_buf *b, const struct vault_account *a)
{
	size_t i;

	ipc_put_str(b, a->address);
	ipc_put_u32(b, (uint32_t)a->n_aliases);
	for (i = 0; i < a->n_aliases && i < VAULT_MAX_ALIASES; i++)
		ipc_put_str(b, a->aliases[i]);
	ipc_put_u64(b, a->daily_limit);
	ipc_put_u64(b, a->daily_rcpt_limit);
	ipc_put_str(b, a->upstream_host);
	ipc_put_u32(b, a->upstream_port);
	ipc_put_u32(b, (uint32_t)a->upstream_tls);
}

void
keeper_get_tmpl(struct ipc_rd *r, struct vault_account *a)
{
	uint32_t port;
	size_t i;

	memset(a, 0, sizeof(*a));
	ipc_get_str(r, a->address, sizeof(a->address));
	a->n_aliases = ipc_get_u32(r);
	if (a->n_aliases > VAULT_MAX_ALIASES) {
		r->failed = 1;
		a->n_aliases = 0;
	}
	for (i = 0; i < a->n_aliases; i++)
		ipc_get_str(r, a->aliases[i], sizeof(a->aliases[i]));
	a->daily_limit = ipc_get_u64(r);
	a->daily_rcpt_limit = ipc_get_u64(r);
	ipc_get_str(r, a->upstream_host, sizeof(a->upstream_host));
	port = ipc_get_u32(r);
	if (port > UINT16_MAX)
		r->failed = 1;
	a->upstream_port = (uint16_t)port;
	a->upstream_tls = (int)ipc_get_u32(r);
}

/* ---- The keeper's loop ------------------------------------------------------- */

static void __attribute__((noreturn))
keeper_refuse(struct keeper *k, uint16_t type, const char *why)
{
	log_err("event=ipc_refused peer=%s type=%u error=\"%s\" action=exit", k->peer, type,
	    why);
	exit(IPC_EXIT_FATAL);
}

static void
keeper_reply(struct keeper *k, const struct ipc_msg *m, struct ipc_buf *b)
{
	if (b->failed)
		fatal("keeper: reply to type %u does not fit", m->type);
	if (ipc_send(k->ipc, (uint16_t)(m->type | KEEPER_REPLY), m->id, -1, b->p, b->len) == -1)
		fatal("keeper: cannot queue the reply to type %u", m->type);
}

/* Read a secret field into guarded memory. */
static void
keeper_get_secret(struct ipc_rd *r, struct vault_secret *s)
{
	const unsigned char *p;
	size_t len;

	p = ipc_get_bytes(r, &len);
	if (r->failed || len == 0 || len > VAULT_SECRET_MAX) {
		r->failed = 1;
		return;
	}
	if (vault_secret_set(s, p, len) == -1)
		fatal("keeper: out of guarded memory");
}

static void
keeper_admin_reply(struct keeper *k, const struct ipc_msg *m, struct ipc_buf *b,
    enum cred_admin_result rc, uint32_t version, const char *err)
{
	ipc_put_u32(b, (uint32_t)rc);
	ipc_put_u32(b, version);
	ipc_put_str(b, rc == CRED_ADMIN_OK ? "" : err);
	keeper_reply(k, m, b);
}

/* Is an event of this name one the channel may write? */
static int
keeper_audit_allowed(const char *const *allowed, const char *name)
{
	if (allowed == NULL)
		return 1;
	for (; *allowed != NULL; allowed++)
		if (strcmp(*allowed, name) == 0)
			return 1;
	return 0;
}

/*
 * One audit event from the daemon: a JSON object with a string "event"
 * that the channel may write (c->audit_events), without the chain's own
 * fields. NULL with *why (KEEPER_AUDIT_*) when it is not.
 */
static json_t *
keeper_audit_event(const struct keeper_chan *c, const unsigned char *p, size_t len, int *why)
{
	json_error_t jerr;
	json_t *ev;

	*why = KEEPER_AUDIT_MALFORMED;
	ev = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &jerr);
	if (ev == NULL || !json_is_object(ev) || !json_is_string(json_object_get(ev, "event")) ||
	    json_object_get(ev, "ts") != NULL || json_object_get(ev, "prev") != NULL ||
	    json_object_get(ev, "mac") != NULL) {
		json_decref(ev);
		return NULL;
	}
	if (!keeper_audit_allowed(c->audit_events,
	    json_string_value(json_object_get(ev, "event")))) {
		*why = KEEPER_AUDIT_NOT_ALLOWED;
		json_decref(ev);
		return NULL;
	}
	return ev;
}

/*
 * A batch of audit events from the daemon, one a line (audit.h: a
 * forwarder's text), appended with one write and one fdatasync: all of them
 * or none. *refused: KEEPER_AUDIT_OK, or why the batch is a protocol error.
 */
static int
keeper_audit_append(struct keeper *k, const struct keeper_chan *c, const unsigned char *p,
    size_t len, char *err, size_t errlen, int *refused)
{
	json_t *ev[AUDIT_BATCH_MAX];
	const unsigned char *nl;
	size_t n = 0, i, part, step;
	int rc = -1;

	*refused = KEEPER_AUDIT_MALFORMED;
	while (len > 0) {
		nl = memchr(p, '\n', len);
		part = nl != NULL ? (size_t)(nl - p) : len;
		step = nl != NULL ? part + 1 : part;
		/* An empty line does not parse; a final newline is refused too. */
		if (n == AUDIT_BATCH_MAX || (nl != NULL && step == len) ||
		    (ev[n] = keeper_audit_event(c, p, part, refused)) == NULL)
			goto done;
		n++;
		p += step;
		len -= step;
	}
	*refused = KEEPER_AUDIT_OK;
	rc = audit_append_many(k->audit, ev, n, NULL, err, errlen);
done:
	for (i = 0; i < n; i++)
		json_decref(ev[i]);
	return rc;
}

static void
keeper_recv(struct ipc *ipc, const struct ipc_msg *m, void *arg)
{
	struct keeper_chan *c = arg;
	struct keeper *k = c->k;
	unsigned char out[KEEPER_REPLY_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	char addr[VAULT_ADDR_MAX], acct[VAULT_ADDR_MAX], by[VAULT_ADDR_MAX];
	char ip[VAULT_ADDR_MAX], text[KEEPER_STR_MAX], err[KEEPER_ERR_MAX] = "";
	struct cred_account_view view;
	struct vault_account tmpl;
	struct vault_secret secret;
	struct cred_info ci;
	struct cred cred;
	enum cred_result res;
	enum cred_admin_result ar;
	char *pby, *pip, *ptext, name[VAULT_NAME_MAX];
	const unsigned char *pw;
	size_t pwlen;
	uint32_t version = 0, action, ok;
	uint64_t idx;
	int rc, refused;

	k->ipc = c->ipc;
	k->peer = c->peer;
	memset(&secret, 0, sizeof(secret));
	switch (m->type) {
	case KEEPER_RESOLVE:
		ipc_get_str(&r, addr, sizeof(addr));
		if (ipc_rd_done(&r) == -1)
			break;
		res = credstore_resolve(k->cs, addr, acct, sizeof(acct));
		ipc_put_u32(&b, (uint32_t)res);
		ipc_put_str(&b, res == CRED_OK ? acct : "");
		keeper_reply(k, m, &b);
		return;
	case KEEPER_INFO:
		ipc_get_str(&r, addr, sizeof(addr));
		if (ipc_rd_done(&r) == -1)
			break;
		memset(&ci, 0, sizeof(ci));
		res = credstore_info(k->cs, addr, &ci);
		ipc_put_u32(&b, (uint32_t)res);
		keeper_put_info(&b, &ci);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_FETCH:
		ipc_get_str(&r, addr, sizeof(addr));
		if (ipc_rd_done(&r) == -1)
			break;
		res = credstore_fetch(k->cs, addr, &cred);
		ipc_put_u32(&b, (uint32_t)res);
		ipc_put_str(&b, res == CRED_OK ? cred.user : "");
		ipc_put_u32(&b, res == CRED_OK ? cred.version : 0);
		if (res == CRED_OK)
			ipc_put_bytes(&b, cred.secret.buf, cred.secret.len);
		else
			ipc_put_bytes(&b, NULL, 0);
		cred_wipe(&cred);
		keeper_reply(k, m, &b);
		sodium_memzero(out, sizeof(out));
		return;
	case KEEPER_REPORT_AUTH:
		ipc_get_str(&r, addr, sizeof(addr));
		version = ipc_get_u32(&r);
		ok = ipc_get_u32(&r);
		ipc_get_str(&r, text, sizeof(text));
		if (ipc_rd_done(&r) == -1 || ok > 1)
			break;
		credstore_record_auth(k->cs, addr, version, (int)ok, text);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_HEALTHY:
		rc = credstore_healthy(k->cs, err, sizeof(err));
		ipc_put_u32(&b, rc == 0 ? 0 : 1);
		ipc_put_str(&b, rc == 0 ? "" : err);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_COUNT:
		ipc_put_u64(&b, credstore_account_count(k->cs));
		keeper_reply(k, m, &b);
		return;
	case KEEPER_VIEW:
		idx = ipc_get_u64(&r);
		if (ipc_rd_done(&r) == -1)
			break;
		memset(&view, 0, sizeof(view));
		rc = idx > VAULT_MAX_ACCOUNTS ? -1 :
		    credstore_account_view(k->cs, (size_t)idx, &view);
		ipc_put_u32(&b, rc == 0 ? 0 : 1);
		keeper_put_view(&b, &view);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_ADD:
		keeper_get_tmpl(&r, &tmpl);
		keeper_get_secret(&r, &secret);
		pby = ipc_get_nstr(&r, by, sizeof(by));
		pip = ipc_get_nstr(&r, ip, sizeof(ip));
		if (ipc_rd_done(&r) == -1)
			break;
		ar = credstore_account_add(k->cs, &tmpl, &secret, pby, pip, err, sizeof(err));
		vault_secret_wipe(&secret);
		keeper_admin_reply(k, m, &b, ar, ar == CRED_ADMIN_OK ? 1 : 0, err);
		return;
	case KEEPER_ROTATE:
		ipc_get_str(&r, addr, sizeof(addr));
		keeper_get_secret(&r, &secret);
		pby = ipc_get_nstr(&r, by, sizeof(by));
		pip = ipc_get_nstr(&r, ip, sizeof(ip));
		if (ipc_rd_done(&r) == -1)
			break;
		ar = credstore_account_rotate(k->cs, addr, &secret, pby, pip, &version, err,
		    sizeof(err));
		vault_secret_wipe(&secret);
		keeper_admin_reply(k, m, &b, ar, version, err);
		return;
	case KEEPER_ROLLBACK:
	case KEEPER_REMOVE:
		ipc_get_str(&r, addr, sizeof(addr));
		pby = ipc_get_nstr(&r, by, sizeof(by));
		pip = ipc_get_nstr(&r, ip, sizeof(ip));
		if (ipc_rd_done(&r) == -1)
			break;
		if (m->type == KEEPER_ROLLBACK)
			ar = credstore_account_rollback(k->cs, addr, pby, pip, &version, err,
			    sizeof(err));
		else
			ar = credstore_account_remove(k->cs, addr, pby, pip, err, sizeof(err));
		keeper_admin_reply(k, m, &b, ar, version, err);
		return;
	case KEEPER_ADMIN_VERIFY:
		/* Answered later, from the checking thread's result. */
		ipc_get_str(&r, name, sizeof(name));
		pw = ipc_get_bytes(&r, &pwlen);
		if (ipc_rd_done(&r) == -1 || name[0] == '\0' || pwlen == 0 ||
		    pwlen > VAULT_SECRET_MAX)
			break;
		keeper_verifier_submit(k->verifier, k->cs, c->ipc, m->type, m->id, name, pw,
		    pwlen);
		return;
	case KEEPER_ADMIN_AUDIT:
		action = ipc_get_u32(&r);
		pby = ipc_get_nstr(&r, by, sizeof(by));
		pip = ipc_get_nstr(&r, ip, sizeof(ip));
		ptext = ipc_get_nstr(&r, text, sizeof(text));
		if (ipc_rd_done(&r) == -1)
			break;
		rc = credstore_admin_audit(k->cs, (int)action, pby, pip, ptext, err, sizeof(err));
		ipc_put_u32(&b, rc == 0 ? 0 : 1);
		ipc_put_str(&b, rc == 0 ? "" : err);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_AUDIT_APPEND:
		/* The whole payload is the events' JSON texts, one a line. */
		rc = keeper_audit_append(k, c, m->data, m->len, err, sizeof(err), &refused);
		if (refused == KEEPER_AUDIT_NOT_ALLOWED)
			keeper_refuse(k, m->type, "an audit event this channel may not write");
		if (refused != KEEPER_AUDIT_OK)
			keeper_refuse(k, m->type, "not an audit event");
		ipc_put_u32(&b, rc == 0 ? 0 : 1);
		ipc_put_str(&b, rc == 0 ? "" : err);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_AUDIT_REOPEN:
		rc = audit_reopen(k->audit, err, sizeof(err));
		ipc_put_u32(&b, rc == 0 ? 0 : 1);
		ipc_put_str(&b, rc == 0 ? "" : err);
		keeper_reply(k, m, &b);
		return;
	case KEEPER_PING:
		keeper_reply(k, m, &b);
		return;
	default:
		break;
	}
	vault_secret_wipe(&secret);
	keeper_refuse(k, m->type, "malformed payload");
}

static void
keeper_event(struct ipc *ipc, enum ipc_event ev, const char *why, void *arg)
{
	struct keeper_chan *c = arg;

	if (ev != IPC_EV_CLOSED) {
		log_err("event=keeper_fatal peer=%s error=\"%s\" action=exit", c->peer, why);
		exit(IPC_EXIT_FATAL);
	}
	/* The parent is gone or done: so is the keeper. A child's channel
	 * closes earlier when that child exits; the parent then ends the
	 * daemon in order, and the keeper goes on answering the others. */
	if (c->idx == KEEPER_CH_PARENT) {
		log_info("event=keeper_exit reason=\"%s\"", why);
		event_base_loopbreak(c->k->base);
	}
}

static void
keeper_on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct keeper *k = arg;

	(void)credstore_maybe_reload(k->cs);
}

void
keeper_serve(const struct keeper_channel *ch, size_t n, struct credstore *cs,
    struct audit *a)
{
	struct timeval poll = { KEEPER_POLL_SECONDS, 0 };
	struct keeper k;
	size_t i;

	memset(&k, 0, sizeof(k));
	k.cs = cs;
	k.audit = a;
	if (n == 0 || n > KEEPER_CHANNELS || (k.base = event_base_new()) == NULL)
		fatal("keeper: cannot set up the event loop");
	for (i = 0; i < n; i++) {
		k.chan[i].k = &k;
		k.chan[i].peer = ch[i].peer;
		k.chan[i].audit_events = ch[i].audit_events;
		k.chan[i].idx = i;
		if ((k.chan[i].ipc = ipc_new(k.base, ch[i].fd, ch[i].peer, ch[i].rules,
		    ch[i].n_rules, keeper_recv, keeper_event, &k.chan[i])) == NULL)
			fatal("keeper: cannot set up channel %zu", i);
	}
	k.n_chan = n;
	if ((k.ev_poll = event_new(k.base, -1, EV_PERSIST, keeper_on_poll, &k)) == NULL ||
	    event_add(k.ev_poll, &poll) == -1)
		fatal("keeper: cannot set up the event loop");
	if ((k.verifier = keeper_verifier_new(k.base)) == NULL)
		fatal("keeper: cannot start the login checker");
	event_base_dispatch(k.base);
	keeper_verifier_free(k.verifier);
	for (i = 0; i < k.n_chan; i++)
		ipc_free(k.chan[i].ipc);
	event_free(k.ev_poll);
	event_base_free(k.base);
	credstore_free(cs);
	audit_close(a);
	_exit(EXIT_OK);
}

/* ---- Start-up ------------------------------------------------------------------- */

static void __attribute__((noreturn))
keeper_child(struct cli *cli, const struct privdrop *pd, keeper_open_fn *open_vault,
    const int fds[KEEPER_CHANNELS])
{
	const struct keeper_channel ch[KEEPER_CHANNELS] = {
		[KEEPER_CH_PARENT] = { fds[KEEPER_CH_PARENT], "parent", keeper_rules_parent,
		    sizeof(keeper_rules_parent) / sizeof(keeper_rules_parent[0]),
		    keeper_audit_events_none },
		[KEEPER_CH_RELAY] = { fds[KEEPER_CH_RELAY], "relay", keeper_rules_relay,
		    keeper_n_rules_relay, keeper_audit_events_relay },
		[KEEPER_CH_QUEUE_IO] = { fds[KEEPER_CH_QUEUE_IO], "queue-io", keeper_rules_audit,
		    keeper_n_rules_audit, keeper_audit_events_relay },
		[KEEPER_CH_SMTP] = { fds[KEEPER_CH_SMTP], "smtp", keeper_rules_smtp,
		    keeper_n_rules_smtp, keeper_audit_events_smtp },
		[KEEPER_CH_ADMIN] = { fds[KEEPER_CH_ADMIN], "admin", keeper_rules_admin,
		    keeper_n_rules_admin, keeper_audit_events_none },
	};
	unsigned char key[VAULT_KEY_BYTES];
	struct credstore *cs;
	struct vault *v = NULL;
	struct audit *a;
	char err[1024];
	int rc;

	log_init("smtpvault[keeper]", 0);
	/* The parent handles signals; the keeper ends when the parent's
	 * channel closes, after the other processes have drained. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* As in the daemon: a file-size limit is an EFBIG on the audit write
	 * (a clear error), not the end of the keeper. */
	signal(SIGXFSZ, SIG_IGN);
	vault_harden_process();
	if ((rc = open_vault(cli, 0, &v)) != EXIT_OK)
		_exit(rc);
	if ((cs = credstore_new(v)) == NULL) {
		vault_close(v);
		log_err("event=start error=\"out of memory\"");
		_exit(EXIT_FAILED);
	}
	if (credstore_audit_key(cs, key) == -1) {
		log_err("event=start error=\"cannot derive the audit key\"");
		_exit(EXIT_FAILED);
	}
	a = audit_open(cli->cfg.audit_path, key, err, sizeof(err));
	sodium_memzero(key, sizeof(key));
	if (a == NULL) {
		log_err("event=start error=\"%s\"", err);
		_exit(EXIT_FAILED);
	}
	credstore_set_audit(cs, a);
	if (privdrop_drop(pd, err, sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		_exit(EXIT_USAGE);
	}
	/* A change of user resets the dumpable flag; set it again. */
	vault_harden_process();
	/* From here on: files, its socket, memory and time; nothing else. */
	if (sandbox_keeper(err, sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		_exit(EXIT_FAILED);
	}
	if (ipc_send_sync(fds[KEEPER_CH_PARENT], KEEPER_READY, 0, -1, NULL, 0, err,
	    sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		_exit(EXIT_FAILED);
	}
	keeper_serve(ch, KEEPER_CHANNELS, cs, a);
}

int
keeper_start(struct cli *cli, const struct privdrop *pd, keeper_open_fn *open_vault,
    pid_t *pid, int fds[KEEPER_CHANNELS])
{
	int mine[KEEPER_CHANNELS], theirs[KEEPER_CHANNELS], sv[2], st;
	unsigned char *buf;
	struct ipc_msg m;
	char err[KEEPER_ERR_MAX];
	size_t i, j;
	pid_t p;

	for (i = 0; i < KEEPER_CHANNELS; i++) {
		if (ipc_socketpair(sv) == -1) {
			cli_error("cannot create the keeper's channel: %s", strerror(errno));
			for (j = 0; j < i; j++) {
				close(mine[j]);
				close(theirs[j]);
			}
			return EXIT_FAILED;
		}
		mine[i] = sv[0];
		theirs[i] = sv[1];
	}
	fflush(stdout);
	fflush(stderr);
	if ((p = fork()) == -1) {
		cli_error("cannot start the keeper: %s", strerror(errno));
		for (i = 0; i < KEEPER_CHANNELS; i++) {
			close(mine[i]);
			close(theirs[i]);
		}
		return EXIT_FAILED;
	}
	if (p == 0) {
		for (i = 0; i < KEEPER_CHANNELS; i++)
			close(mine[i]);
		keeper_child(cli, pd, open_vault, theirs);
	}
	for (i = 0; i < KEEPER_CHANNELS; i++)
		close(theirs[i]);
	if ((buf = malloc(IPC_MSG_MAX)) == NULL ||
	    ipc_recv_sync(mine[KEEPER_CH_PARENT], keeper_rules_ready, 1, buf, IPC_MSG_MAX, &m,
	    err, sizeof(err)) == -1) {
		free(buf);
		for (i = 0; i < KEEPER_CHANNELS; i++)
			close(mine[i]);
		/* The keeper said why on stderr; its status is ours. */
		while (waitpid(p, &st, 0) == -1 && errno == EINTR)
			;
		if (WIFEXITED(st) && WEXITSTATUS(st) != EXIT_OK)
			return WEXITSTATUS(st);
		return EXIT_FAILED;
	}
	free(buf);
	*pid = p;
	for (i = 0; i < KEEPER_CHANNELS; i++)
		fds[i] = mine[i];
	return EXIT_OK;
}
