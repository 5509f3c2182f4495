/*
 * admin_proc.c: the admin process (proc.h): the admin page and JSON API
 * (admin_server.c) on a loop of its own. It may ask the keeper to show,
 * add, rotate, roll back or remove an account and to check an admin login
 * (keeper_rules_admin: no FETCH, and no password hash ever comes back), and
 * the relay about the queue, the upstream sessions and the counters
 * (relay_ctl.h). It never holds the master key, the audit key or a stored
 * credential: the App Password an admin types passes through on its way to
 * the keeper (and, with "verify": true, to one upstream login) and is wiped
 * after use, as is everything jansson frees here (admin_json_free).
 *
 * Start: its Landlock jail (fsjail.h: read-only, the files it will read),
 * bind [admin] listen and read its TLS files while still privileged,
 * become the smtpvault user, seccomp (sandbox_admin), READY. SIGTERM: stop
 * listening, answer what waits with 503, exit 0. SIGHUP: re-read the
 * configuration (upstream settings for verification, the audit path). The
 * parent gone (EOF on parent_fd, or the kernel's parent-death signal): exit.
 * The process is "smtpvault:admin" in ps and /proc/PID/comm (proc.c).
 */
#include "proc.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <sodium.h>

#include "admin.h"
#include "cli.h"
#include "config.h"
#include "credential.h"
#include "fsjail.h"
#include "log.h"
#include "relay_ctl.h"
#include "sandbox.h"

#define ADMIN_PROC_DRAIN_SECONDS	5	/* MHD closes its connections at once */

struct admin_proc {
	struct proc_env		*env;
	struct event_base	*base;
	struct proc_config	*pc;
	struct credstore	*cs;		/* keeper_rules_admin */
	struct relay_ctl_client	*rc;		/* to the relay */
	struct admin_server	*srv;
	struct proc_events	*pe;
	struct fsjail		 jail;		/* read-only: config, TLS, audit log, CAs */
};

/*
 * jansson's allocations, wiped when freed: a request body's parser keeps a
 * scratch copy of every string token (a password among them) that it frees
 * without wiping; here it goes, whatever else held it.
 */
static void *
admin_json_malloc(size_t len)
{
	return malloc(len);
}

static void
admin_json_free(void *p)
{
	if (p == NULL)
		return;
	sodium_memzero(p, malloc_usable_size(p));
	free(p);
}

static void
admin_proc_drain(void *arg)
{
	struct admin_proc *ap = arg;

	/* Requests that wait (a login, an upstream check, a queue delete) get
	 * 503; then nothing is left to do. */
	admin_server_free(ap->srv);
	ap->srv = NULL;
	log_info("event=stopped process=admin");
	event_base_loopexit(ap->base, NULL);
}

static int
admin_proc_reload(void *arg)
{
	struct admin_proc *ap = arg;
	const struct config *cfg;

	if ((cfg = proc_config_reload(ap->pc)) == NULL)
		return -1;
	admin_server_set_config(ap->srv, cfg);
	return 0;
}

static int
admin_proc_reload_check(void *arg, const struct config *cfg, char *err, size_t errlen)
{
	struct admin_proc *ap = arg;

	return fsjail_admin_reload_check(&ap->jail, cfg, err, errlen);
}

static int
admin_proc_drain_seconds(void *arg)
{
	return ADMIN_PROC_DRAIN_SECONDS;
}

int
proc_admin_main(struct proc_env *env)
{
	struct proc_ops ops = { admin_proc_drain, admin_proc_reload, admin_proc_drain_seconds,
	    NULL };
	struct admin_proc ap;
	char err[1024];
	int rc = EXIT_FAILED;

	memset(&ap, 0, sizeof(ap));
	ap.env = env;
	ops.arg = &ap;
	json_set_alloc_funcs(admin_json_malloc, admin_json_free);
	if ((ap.base = event_base_new()) == NULL || (ap.pc = proc_config_new(env)) == NULL) {
		log_err("event=start error=\"cannot create the event loop\"");
		goto done;
	}
	if ((ap.cs = credstore_connect(env->keeper_fd)) == NULL) {
		log_err("event=start error=\"out of memory\"");
		goto done;
	}
	env->keeper_fd = -1;
	if (env->relay_fd != -1) {
		if ((ap.rc = relay_ctl_client_connect(ap.base, env->relay_fd)) == NULL) {
			log_err("event=start error=\"out of memory\"");
			goto done;
		}
		env->relay_fd = -1;
	}
	/*
	 * The Landlock jail before the server starts its worker threads: a jail
	 * holds only for the thread that makes it and those started later. So
	 * it allows the TLS files read next, and what the privilege drop in
	 * proc_serve() reads (fsjail_admin).
	 */
	if (fsjail_admin(&ap.jail, proc_config_get(ap.pc), env->cli->config_path,
	    env->cli->passphrase_file, err, sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		goto done;
	}
	proc_config_set_check(ap.pc, admin_proc_reload_check, &ap);
	/* Binds [admin] listen and reads its TLS files: still privileged here. */
	if ((ap.srv = admin_server_start(ap.base, proc_config_get(ap.pc), ap.cs, ap.rc, err,
	    sizeof(err))) == NULL) {
		log_err("event=start error=\"%s\"", err);
		rc = EXIT_USAGE;
		goto done;
	}
	/* Privileges go, sandbox_admin, READY, the loop (proc.c). */
	rc = proc_serve(env, ap.base, &ops, NULL, sandbox_admin, &ap.pe);
done:
	/* First: it refers to the keeper's client and the relay's. */
	admin_server_free(ap.srv);
	relay_ctl_client_free(ap.rc);
	credstore_free(ap.cs);
	proc_events_free(ap.pe);
	if (ap.base != NULL)
		event_base_free(ap.base);
	proc_config_free(ap.pc);
	return rc;
}
