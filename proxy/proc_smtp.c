/*
 * proc_smtp.c: the SMTP front end's process (proc.h): the LAN listeners and
 * sessions (smtp_session.c). It asks the keeper which account an address
 * belongs to and appends "reject" audit events, nothing else (the keeper's
 * keeper_rules_smtp: a FETCH from here ends the keeper, and so the daemon);
 * it hands each message to the relay process over the relay link
 * (relay_link.h) and never holds a credential, the master key or the
 * audit key. SIGTERM: stop listening, finish every session and submit,
 * exit 0; SIGHUP: new configuration and LAN TLS certificate for new sessions.
 */
#include "proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "audit.h"
#include "cli.h"
#include "config.h"
#include "credential.h"
#include "fsjail.h"
#include "log.h"
#include "relay.h"
#include "relay_link.h"
#include "sandbox.h"
#include "smtp_session.h"

/* The listeners and sessions, their keeper channel and the link to the
 * relay. */
struct proc_front {
	struct credstore	*cs;
	struct audit		*audit;		/* forwarded to the keeper */
	struct smtp_server	*srv;
	struct relay_link	*link;		/* to the relay */
	void			(*done)(void *);
	void			*done_arg;
};

struct proc_smtp {
	struct proc_env		*env;
	struct event_base	*base;
	struct proc_config	*pc;
	struct proc_front	*front;
	struct proc_events	*pe;
	struct fsjail		 jail;		/* read-only: config, TLS files */
};

static enum cred_result
proc_front_resolve(void *arg, const char *addr, char *account, size_t len)
{
	struct proc_front *pf = arg;

	return credstore_resolve(pf->cs, addr, account, len);
}

static int
proc_front_submit(void *arg, struct relay_msg *msg, relay_cb *cb, void *cbarg,
    struct relay_result *res)
{
	struct proc_front *pf = arg;

	return relay_link_submit(pf->link, msg, cb, cbarg, res);
}

static void
proc_front_cancel(void *arg, void *cbarg)
{
	struct proc_front *pf = arg;

	relay_link_cancel(pf->link, cbarg);
}

static void	proc_front_free(struct proc_front *);

/* Binds the listeners; takes over env->keeper_fd and env->relay_fd. */
static struct proc_front *
proc_front_new(struct event_base *base, const struct config *cfg, struct proc_env *env,
    char *err, size_t errlen)
{
	struct smtp_server_hooks hooks;
	struct proc_front *pf;

	if ((pf = calloc(1, sizeof(*pf))) == NULL ||
	    (pf->cs = credstore_connect(env->keeper_fd)) == NULL) {
		if (pf != NULL)
			close(env->keeper_fd);
		free(pf);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	env->keeper_fd = -1;
	if ((pf->audit = credstore_audit_forwarder(pf->cs)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((pf->link = relay_link_client_new(base, env->relay_fd)) == NULL) {
		snprintf(err, errlen, "cannot set up the channel to the relay");
		goto fail;
	}
	env->relay_fd = -1;
	/* No relay in this process: the hooks send each message over the link. */
	if ((pf->srv = smtp_server_new(base, cfg, NULL, pf->cs, err, errlen)) == NULL)
		goto fail;
	smtp_server_set_audit(pf->srv, pf->audit);
	memset(&hooks, 0, sizeof(hooks));
	hooks.resolve = proc_front_resolve;
	hooks.submit = proc_front_submit;
	hooks.cancel = proc_front_cancel;
	hooks.arg = pf;
	smtp_server_set_hooks(pf->srv, &hooks);
	return pf;
fail:
	proc_front_free(pf);
	return NULL;
}

static void
proc_front_set_config(struct proc_front *pf, const struct config *cfg)
{
	smtp_server_set_config(pf->srv, cfg);
}

static void
proc_front_link_drained(void *arg)
{
	struct proc_front *pf = arg;

	pf->done(pf->done_arg);
}

static void
proc_front_sessions_drained(void *arg)
{
	struct proc_front *pf = arg;

	relay_link_client_drain(pf->link, proc_front_link_drained, pf);
}

/* Stop listening; done(arg) once every session and submit has ended. */
static void
proc_front_drain(struct proc_front *pf, void (*done)(void *), void *arg)
{
	pf->done = done;
	pf->done_arg = arg;
	smtp_server_drain(pf->srv, proc_front_sessions_drained, pf);
}

static void
proc_front_free(struct proc_front *pf)
{
	if (pf == NULL)
		return;
	/* The sessions first: they refer to the link and the audit log. */
	if (pf->srv != NULL)
		smtp_server_free(pf->srv);
	if (pf->link != NULL)
		relay_link_free(pf->link);
	audit_close(pf->audit);
	credstore_free(pf->cs);
	free(pf);
}

/* ---- The process -------------------------------------------------------------- */

static void
proc_smtp_drained(void *arg)
{
	struct proc_smtp *ps = arg;

	log_info("event=stopped process=smtp");
	event_base_loopexit(ps->base, NULL);
}

static void
proc_smtp_drain(void *arg)
{
	struct proc_smtp *ps = arg;

	proc_front_drain(ps->front, proc_smtp_drained, ps);
}

static int
proc_smtp_reload(void *arg)
{
	struct proc_smtp *ps = arg;
	const struct config *cfg;

	if ((cfg = proc_config_reload(ps->pc)) == NULL)
		return -1;
	proc_front_set_config(ps->front, cfg);
	return 0;
}

static int
proc_smtp_drain_seconds(void *arg)
{
	struct proc_smtp *ps = arg;

	return proc_drain_seconds(proc_config_get(ps->pc));
}

static int
proc_smtp_reload_check(void *arg, const struct config *cfg, char *err, size_t errlen)
{
	struct proc_smtp *ps = arg;

	return fsjail_smtp_reload_check(&ps->jail, cfg, err, errlen);
}

/* After the privilege drop, before seccomp (the process starts no thread):
 * from here on it reads its configuration and certificate, nothing else. */
static int
proc_smtp_jail(void *arg, char *err, size_t errlen)
{
	struct proc_smtp *ps = arg;

	if (fsjail_smtp(&ps->jail, proc_config_get(ps->pc), ps->env->cli->config_path,
	    ps->env->cli->passphrase_file, err, errlen) == -1)
		return -1;
	proc_config_set_check(ps->pc, proc_smtp_reload_check, ps);
	return 0;
}

int
proc_smtp_main(struct proc_env *env)
{
	struct proc_ops ops = { proc_smtp_drain, proc_smtp_reload, proc_smtp_drain_seconds,
	    NULL };
	struct proc_smtp ps;
	char err[1024];
	int rc = EXIT_FAILED;

	memset(&ps, 0, sizeof(ps));
	ps.env = env;
	ops.arg = &ps;
	if ((ps.base = event_base_new()) == NULL || (ps.pc = proc_config_new(env)) == NULL) {
		log_err("event=start error=\"cannot create the event loop\"");
		goto done;
	}
	/* Binds the listeners: still privileged here. */
	if ((ps.front = proc_front_new(ps.base, proc_config_get(ps.pc), env, err,
	    sizeof(err))) == NULL) {
		log_err("event=start error=\"%s\"", err);
		rc = EXIT_USAGE;
		goto done;
	}
	rc = proc_serve(env, ps.base, &ops, proc_smtp_jail, sandbox_smtp, &ps.pe);
done:
	proc_events_free(ps.pe);
	proc_front_free(ps.front);
	if (ps.base != NULL)
		event_base_free(ps.base);
	proc_config_free(ps.pc);
	return rc;
}
