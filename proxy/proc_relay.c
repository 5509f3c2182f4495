/*
 * proc_relay.c: the relay process (proc.h): upstream sessions (relay.c,
 * upstream_pool.c), and with delivery = queue the spool, its I/O thread and
 * the queue's control socket for the CLI (queue.c, spool_io.c,
 * queue_ctl.c). It takes messages from the SMTP front end over the relay
 * link (relay_link.h) and answers the admin process's questions about the
 * queue and the upstream sessions (relay_ctl.h). Of the keeper it may ask
 * an account's facts and one credential per upstream login, which it wipes
 * after AUTH (keeper_rules_relay); it appends the message events to the
 * audit log through the keeper and asks it to reopen the log on SIGHUP.
 *
 * SIGTERM comes once the front end has exited: finish what is in flight
 * (direct: the upstream answers; queue: spool writes), exit 0.
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
#include "fsperm.h"
#include "log.h"
#include "privdrop.h"
#include "relay.h"
#include "relay_ctl.h"
#include "relay_link.h"
#include "sandbox.h"

struct proc_relay {
	struct proc_env		*env;
	struct event_base	*base;
	struct proc_config	*pc;
	struct credstore	*cs;		/* keeper_rules_relay */
	struct audit		*audit;		/* forwarded to the keeper */
	struct relay		*relay;
	struct relay_link	*link;		/* from the smtp process */
	struct relay_ctl	*ctl;		/* from the admin process */
	struct proc_events	*pe;
};

static void
proc_relay_drained(void *arg)
{
	struct proc_relay *pr = arg;

	log_info("event=stopped process=relay");
	event_base_loopexit(pr->base, NULL);
}

static void
proc_relay_drain(void *arg)
{
	struct proc_relay *pr = arg;

	relay_drain(pr->relay, proc_relay_drained, pr);
}

static int
proc_relay_reload(void *arg)
{
	struct proc_relay *pr = arg;
	const struct config *cfg;
	char err[1024];

	if ((cfg = proc_config_reload(pr->pc)) == NULL)
		return -1;
	relay_set_config(pr->relay, cfg);
	if (pr->link != NULL)
		relay_link_server_set_config(pr->link, cfg);
	/* logrotate: a renamed log is followed by a fresh file. */
	if (audit_reopen(pr->audit, err, sizeof(err)) == -1)
		log_err("event=reload error=\"%s\"", err);
	return 0;
}

static int
proc_relay_drain_seconds(void *arg)
{
	struct proc_relay *pr = arg;

	return proc_drain_seconds(proc_config_get(pr->pc));
}

/* Everything that opens as root: the keeper channels, the relay (spool,
 * control socket) and the links. */
static int
proc_relay_open(struct proc_relay *pr, char *err, size_t errlen)
{
	struct proc_env *env = pr->env;
	const struct config *cfg = proc_config_get(pr->pc);
	struct audit *queue_audit = NULL;

	if ((pr->cs = credstore_connect(env->keeper_fd)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return EXIT_FAILED;
	}
	env->keeper_fd = -1;
	/* The audit log is required: nothing is relayed unrecorded. Its one
	 * writer is the keeper; this forwarder hands it the events. */
	if ((pr->audit = credstore_audit_forwarder(pr->cs)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return EXIT_FAILED;
	}
	/* delivery = queue appends from its I/O thread: a channel of its own
	 * (the keeper serialises the two); direct mode does not need it. */
	if (env->keeper_audit_fd != -1) {
		queue_audit = credstore_audit_channel(env->keeper_audit_fd);
		if (queue_audit == NULL) {
			snprintf(err, errlen, "out of memory");
			return EXIT_FAILED;
		}
		env->keeper_audit_fd = -1;
	}
	if ((pr->relay = relay_new(pr->base, cfg, pr->cs)) == NULL) {
		audit_close(queue_audit);
		snprintf(err, errlen, "cannot start the relay");
		return EXIT_FAILED;
	}
	relay_set_audit(pr->relay, pr->audit, queue_audit);
	if (env->smtp_fd != -1) {
		if ((pr->link = relay_link_server_new(pr->base, env->smtp_fd, pr->relay,
		    cfg)) == NULL) {
			snprintf(err, errlen, "cannot set up the channel from the front end");
			return EXIT_FAILED;
		}
		env->smtp_fd = -1;
	}
	if (env->admin_fd != -1) {
		if ((pr->ctl = relay_ctl_new(pr->base, env->admin_fd, pr->relay)) == NULL) {
			snprintf(err, errlen, "cannot set up the channel from the admin process");
			return EXIT_FAILED;
		}
		env->admin_fd = -1;
	}
	return EXIT_OK;
}

/* Everything is bound and open and root is gone: prove we can still write
 * our state as the user we became. */
static int
proc_relay_dropped(void *arg, char *err, size_t errlen)
{
	struct proc_relay *pr = arg;
	char who[PRIVDROP_NAME_MAX];

	return fsperm_check_access(proc_config_get(pr->pc), privdrop_user_name(pr->env->pd,
	    who, sizeof(who)), err, errlen);
}

int
proc_relay_main(struct proc_env *env)
{
	struct proc_ops ops = { proc_relay_drain, proc_relay_reload, proc_relay_drain_seconds,
	    NULL };
	struct proc_relay pr;
	char err[1024];
	int rc = EXIT_FAILED;

	memset(&pr, 0, sizeof(pr));
	pr.env = env;
	ops.arg = &pr;
	if ((pr.base = event_base_new()) == NULL || (pr.pc = proc_config_new(env)) == NULL) {
		log_err("event=start error=\"cannot create the event loop\"");
		goto done;
	}
	if ((rc = proc_relay_open(&pr, err, sizeof(err))) != EXIT_OK) {
		log_err("event=start error=\"%s\"", err);
		goto done;
	}
	rc = proc_serve(env, pr.base, &ops, proc_relay_dropped, sandbox_relay, &pr.pe);
done:
	/* First: they refer to the relay. */
	if (pr.ctl != NULL)
		relay_ctl_free(pr.ctl);
	if (pr.link != NULL)
		relay_link_free(pr.link);
	if (pr.relay != NULL)
		relay_free(pr.relay);
	audit_close(pr.audit);
	credstore_free(pr.cs);
	proc_events_free(pr.pe);
	if (pr.base != NULL)
		event_base_free(pr.base);
	proc_config_free(pr.pc);
	return rc;
}
