/*
 * admin_verify.c: prove a new App Password against the account's upstream
 * before it is stored (POST /api/v1/accounts/{address}/rotate with
 * "verify": true): connect, TLS, EHLO, AUTH, QUIT, as "account rotate" does
 * with smtp_client_probe(), but on the daemon's own event loop through the
 * asynchronous session API, so that mail keeps flowing meanwhile. The
 * result is handed to the caller from a later loop turn, after the session
 * has been torn down.
 */
#include "admin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "config.h"
#include "credential.h"
#include "smtp_client.h"
#include "util.h"

struct admin_verify {
	struct admin_server	*srv;
	struct upstream_target	 t;
	char			 user[VAULT_ADDR_MAX];
	struct vault_secret	 secret;
	SSL_CTX			*ctx;
	struct smtp_client	*c;
	struct event		*ev_done;
	admin_verify_cb		*cb;
	void			*arg;
	int			 ok;
	int			 refused;
	int			 finished;
	char			 reply[SMTP_CLIENT_REPLY_MAX];
};

/* The account's upstream: its own override, else [upstream] (as the CLI). */
static void
verify_target(const struct config *cfg, const struct cred_info *ci, struct upstream_target *t)
{
	memset(t, 0, sizeof(*t));
	strlcpy(t->host, ci->upstream_host[0] != '\0' ? ci->upstream_host : cfg->upstream_host,
	    sizeof(t->host));
	t->port = ci->upstream_port != 0 ? ci->upstream_port : cfg->upstream_port;
	t->tls = ci->upstream_tls >= 0 ? (enum upstream_tls)ci->upstream_tls : cfg->upstream_tls;
	strlcpy(t->ca_file, cfg->upstream_ca_file, sizeof(t->ca_file));
	t->timeout = cfg->upstream_timeout;
	strlcpy(t->helo, cfg->hostname, sizeof(t->helo));
}

static void
verify_free(struct admin_verify *v)
{
	if (v == NULL)
		return;
	if (v->c != NULL)
		smtp_client_free(v->c);
	if (v->ev_done != NULL)
		event_free(v->ev_done);
	SSL_CTX_free(v->ctx);
	vault_secret_wipe(&v->secret);
	sodium_memzero(v, sizeof(*v));
	free(v);
}

static int
verify_cred(void *arg, struct cred *out, char *err, size_t errlen)
{
	struct admin_verify *v = arg;

	memset(out, 0, sizeof(*out));
	strlcpy(out->user, v->user, sizeof(out->user));
	if (vault_secret_set(&out->secret, v->secret.buf, v->secret.len) == -1) {
		snprintf(err, errlen, "out of guarded memory");
		return -1;
	}
	return 0;
}

static void
verify_finish(struct admin_verify *v)
{
	if (v->finished)
		return;
	v->finished = 1;
	/* The session is freed here (deferred inside its own callback); the
	 * caller hears from a fresh loop turn. */
	smtp_client_free(v->c);
	v->c = NULL;
	event_active(v->ev_done, EV_TIMEOUT, 0);
}

static void
verify_event(struct smtp_client *c, enum smtp_client_event ev, const struct smtp_outcome *o,
    void *arg)
{
	struct admin_verify *v = arg;

	switch (ev) {
	case SMTP_CLIENT_READY:
		v->ok = 1;
		smtp_outcome_reply(o, v->reply, sizeof(v->reply));
		if (smtp_client_quit(c) == -1)
			verify_finish(v);
		break;
	case SMTP_CLIENT_DONE:
		break;
	case SMTP_CLIENT_CLOSED:
		if (!v->ok) {
			smtp_outcome_reply(o, v->reply, sizeof(v->reply));
			v->refused = o->auth_failed;
		}
		verify_finish(v);
		break;
	}
}

static void
verify_done(evutil_socket_t fd, short what, void *arg)
{
	struct admin_verify *v = arg;

	v->cb(v->arg, v->ok, v->refused, v->reply);
	verify_free(v);
}

struct admin_verify *
admin_verify_start(struct admin_server *srv, const struct cred_info *ci,
    const struct vault_secret *secret, admin_verify_cb *cb, void *arg)
{
	struct admin_verify *v;
	char err[512];

	if ((v = calloc(1, sizeof(*v))) == NULL)
		return NULL;
	v->srv = srv;
	v->cb = cb;
	v->arg = arg;
	verify_target(srv->cfg, ci, &v->t);
	strlcpy(v->user, ci->address, sizeof(v->user));
	if (vault_secret_set(&v->secret, secret->buf, secret->len) == -1 ||
	    (v->ev_done = evtimer_new(srv->base, verify_done, v)) == NULL)
		goto fail;
	if ((v->ctx = smtp_client_tls_ctx_new(v->t.ca_file, err, sizeof(err))) == NULL) {
		/* Reported like any other failure, from the loop. */
		snprintf(v->reply, sizeof(v->reply), "%s", err);
		v->finished = 1;
		event_active(v->ev_done, EV_TIMEOUT, 0);
		return v;
	}
	if ((v->c = smtp_client_new(srv->base, srv->dns, v->ctx, &v->t, verify_cred,
	    verify_event, v)) == NULL)
		goto fail;
	return v;
fail:
	verify_free(v);
	return NULL;
}

void
admin_verify_cancel(struct admin_verify *v)
{
	verify_free(v);
}
