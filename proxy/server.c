/*
 * server.c: "smtpvault serve": fork the vault keeper (keeper.c), which
 * alone unlocks the vault and writes the audit log, then start the SMTP
 * front end, the relay and the admin server on one libevent loop as its
 * client, and run until SIGTERM / SIGINT (drain: stop listening, finish what
 * is in flight, exit 0). SIGHUP reloads the configuration; the keeper picks
 * up a changed vault file by itself. A keeper that dies ends the daemon.
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <sodium.h>

#include "admin.h"
#include "audit.h"
#include "cli.h"
#include "credential.h"
#include "fsperm.h"
#include "keeper.h"
#include "log.h"
#include "privdrop.h"
#include "relay.h"
#include "sandbox.h"
#include "sdnotify.h"
#include "smtp_session.h"

#define VAULT_POLL_SECONDS	1	/* SPEC: a changed vault is live within 2 s */
#define CONFIG_KEEP_SECONDS	86400	/* how long a replaced config stays valid */

/*
 * A configuration replaced by SIGHUP may still be referenced by sessions that
 * started under it, so it is kept for a day (far longer than any session's
 * bounded life) before it is freed.
 */
struct old_config {
	struct config		*cfg;
	time_t			 replaced;
	struct old_config	*next;
};

struct server {
	struct cli		*cli;
	struct config		*cfg;
	struct old_config	*old;
	struct event_base	*base;
	struct credstore	*cs;
	struct audit		*audit;
	struct audit		*queue_audit;	/* the queue's own handle, for its thread */
	struct relay		*relay;
	struct smtp_server	*smtp;
	struct admin_server	*admin;
	struct event		*ev_term, *ev_int, *ev_hup, *ev_vault, *ev_deadline, *ev_chld;
	pid_t			 keeper_pid;
	int			 child_died;
	struct sdnotify		*sd;		/* systemd: READY, RELOADING, STOPPING, watchdog */
	int			 draining;
};

static void
server_relay_drained(void *arg)
{
	struct server *s = arg;

	log_info("event=stopped");
	event_base_loopexit(s->base, NULL);
}

static void
server_smtp_drained(void *arg)
{
	struct server *s = arg;

	relay_drain(s->relay, server_relay_drained, s);
}

static void
server_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	log_warn("event=drain_timeout action=exit");
	event_base_loopexit(s->base, NULL);
}

static void
server_on_term(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;
	struct timeval tv;

	if (s->draining) {
		log_warn("event=signal signal=%d action=exit_now", (int)sig);
		event_base_loopexit(s->base, NULL);
		return;
	}
	s->draining = 1;
	sdnotify_stopping(s->sd);
	log_info("event=signal signal=%d action=drain", (int)sig);
	/* In-flight messages get the upstream timeout twice over, then we go. */
	tv.tv_sec = (time_t)(2 * s->cfg->upstream_timeout + s->cfg->smtp_timeout);
	tv.tv_usec = 0;
	s->ev_deadline = evtimer_new(s->base, server_deadline, s);
	if (s->ev_deadline != NULL)
		evtimer_add(s->ev_deadline, &tv);
	smtp_server_drain(s->smtp, server_smtp_drained, s);
}

static void
server_free_old_configs(struct server *s, time_t now, int all)
{
	struct old_config **pp = &s->old, *o;

	while ((o = *pp) != NULL) {
		if (all || now - o->replaced > CONFIG_KEEP_SECONDS) {
			*pp = o->next;
			config_free(o->cfg);
			free(o->cfg);
			free(o);
		} else {
			pp = &o->next;
		}
	}
}

static void
server_reload(struct server *s)
{
	struct config *n;
	struct old_config *o;
	char err[1024];

	if ((n = calloc(1, sizeof(*n))) == NULL || (o = calloc(1, sizeof(*o))) == NULL) {
		free(n);
		log_err("event=reload error=\"out of memory\"");
		return;
	}
	if (config_load(s->cli->config_path, n, err, sizeof(err)) == -1) {
		log_err("event=reload error=\"%s\" action=keep_old_config", err);
		free(n);
		free(o);
		return;
	}
	if (n->n_listen != s->cfg->n_listen ||
	    memcmp(n->listen, s->cfg->listen, sizeof(n->listen[0]) * n->n_listen) != 0 ||
	    strcmp(n->vault_path, s->cfg->vault_path) != 0)
		log_warn("event=reload note=\"listen addresses and the vault path change "
		    "only at restart\"");
	o->cfg = s->cfg;
	o->replaced = time(NULL);
	o->next = s->old;
	s->old = o;
	s->cfg = n;
	smtp_server_set_config(s->smtp, n);
	relay_set_config(s->relay, n);
	admin_server_set_config(s->admin, n);
	server_free_old_configs(s, o->replaced, 0);
	/* logrotate: a renamed log is followed by a fresh file. */
	if (audit_reopen(s->audit, err, sizeof(err)) == -1)
		log_err("event=reload error=\"%s\"", err);
	log_info("event=reload config=%s", s->cli->config_path);
}

/* systemd sees the reload begin and end, whatever its outcome. */
static void
server_on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;

	sdnotify_reloading(s->sd);
	server_reload(s);
	sdnotify_ready(s->sd);
}

static void
server_on_vault_timer(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)credstore_maybe_reload(s->cs);
}

/* A child that exits ends the daemon: nothing restarts silently; systemd
 * (Restart=on-failure) starts the whole daemon again. */
static void
server_on_chld(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid != s->keeper_pid)
			continue;
		s->keeper_pid = 0;
		s->child_died = 1;
		if (WIFSIGNALED(st))
			log_err("event=child_exited process=keeper signal=%d action=exit",
			    WTERMSIG(st));
		else
			log_err("event=child_exited process=keeper status=%d action=exit",
			    WEXITSTATUS(st));
		event_base_loopexit(s->base, NULL);
	}
}

/* Close the keeper's channel (it exits on EOF) and reap it. */
static void
server_stop_keeper(struct server *s)
{
	int st;

	credstore_free(s->cs);
	s->cs = NULL;
	if (s->keeper_pid > 0) {
		while (waitpid(s->keeper_pid, &st, 0) == -1 && errno == EINTR)
			;
		s->keeper_pid = 0;
	}
}

static int
server_open_vault(struct cli *cli, struct vault **v)
{
	int rc;

	if ((rc = cli_open_vault(cli, 0, v)) != EXIT_OK)
		return rc;
	return EXIT_OK;
}

int
cmd_serve(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault serve [--check]";
	struct server s;
	struct vault *v = NULL;
	struct timeval poll = { VAULT_POLL_SECONDS, 0 };
	struct privdrop pd;
	char err[1024], who[PRIVDROP_NAME_MAX];
	int i, check = 0, rc, kfd[KEEPER_CHANNELS] = { -1, -1 };
	pid_t kpid = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check") == 0) {
			check = 1;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: %s\n", use);
			return EXIT_OK;
		} else {
			cli_error("unexpected argument '%s'; usage: %s", argv[i], use);
			return EXIT_USAGE;
		}
	}
	/* Before any secret is in memory: no core dumps, no ptrace. */
	vault_harden_process();
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	/* Before the vault is unlocked: no secret others can read, and a user
	 * to become when started as root. */
	if (fsperm_check_config(&cli->cfg, cli->passphrase_file, err, sizeof(err)) == -1 ||
	    privdrop_prepare(&pd, PRIVDROP_USER, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		return EXIT_USAGE;
	}
	if (check) {
		if ((rc = server_open_vault(cli, &v)) != EXIT_OK)
			return rc;
		vault_close(v);
		printf("configuration OK\n");
		return EXIT_OK;
	}
	/* The keeper unlocks the vault; this process never sees its key. It is
	 * forked before any listener exists, so it holds no network socket. */
	if ((rc = keeper_start(cli, &pd, cli_open_vault, &kpid, kfd)) != EXIT_OK)
		return rc;

	memset(&s, 0, sizeof(s));
	s.cli = cli;
	s.keeper_pid = kpid;
	if ((s.cs = credstore_connect(kfd[KEEPER_CH_DAEMON])) == NULL ||
	    (s.cfg = calloc(1, sizeof(*s.cfg))) == NULL) {
		if (s.cs == NULL)
			close(kfd[KEEPER_CH_DAEMON]);
		close(kfd[KEEPER_CH_AUDIT]);
		server_stop_keeper(&s);
		cli_error("out of memory");
		return EXIT_FAILED;
	}
	/* The server owns its configuration so that SIGHUP can replace it. */
	*s.cfg = cli->cfg;
	cli->cfg_loaded = 0;
	rc = EXIT_FAILED;
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit makes writes fail with EFBIG (a clear error on the
	 * spool or audit write) instead of killing the daemon. */
	signal(SIGXFSZ, SIG_IGN);
	if ((s.base = event_base_new()) == NULL) {
		log_err("event=start error=\"cannot create the event loop\"");
		goto done;
	}
	/* The audit log is required: nothing is relayed unrecorded. Its one
	 * writer is the keeper; this forwarder hands it the events. */
	if ((s.audit = credstore_audit_forwarder(s.cs)) == NULL) {
		close(kfd[KEEPER_CH_AUDIT]);
		log_err("event=start error=\"out of memory\"");
		goto done;
	}
	/* delivery = queue appends from its I/O thread: a channel of its own
	 * (the keeper serialises the two); direct mode does not need it. */
	if (s.cfg->delivery != DELIVERY_QUEUE) {
		close(kfd[KEEPER_CH_AUDIT]);
	} else if ((s.queue_audit = credstore_audit_channel(kfd[KEEPER_CH_AUDIT])) == NULL) {
		close(kfd[KEEPER_CH_AUDIT]);
		log_err("event=start error=\"out of memory\"");
		goto done;
	}
	s.ev_chld = evsignal_new(s.base, SIGCHLD, server_on_chld, &s);
	if (s.ev_chld == NULL || evsignal_add(s.ev_chld, NULL) == -1) {
		log_err("event=start error=\"cannot watch the keeper\"");
		goto done;
	}
	if ((s.relay = relay_new(s.base, s.cfg, s.cs)) == NULL) {
		log_err("event=start error=\"cannot start the relay\"");
		goto done;
	}
	if ((s.smtp = smtp_server_new(s.base, s.cfg, s.relay, s.cs, err, sizeof(err))) == NULL) {
		log_err("event=start error=\"%s\"", err);
		rc = EXIT_USAGE;
		goto done;
	}
	relay_set_audit(s.relay, s.audit, s.queue_audit);
	s.queue_audit = NULL;		/* the relay's now */
	smtp_server_set_audit(s.smtp, s.audit);
	/* The admin page and API share this loop (admin/admin_server.c). */
	if ((s.admin = admin_server_new(s.base, s.cfg, s.cs, s.audit, s.relay, err,
	    sizeof(err))) == NULL) {
		log_err("event=start error=\"%s\"", err);
		rc = EXIT_USAGE;
		goto done;
	}
	s.ev_term = evsignal_new(s.base, SIGTERM, server_on_term, &s);
	s.ev_int = evsignal_new(s.base, SIGINT, server_on_term, &s);
	s.ev_hup = evsignal_new(s.base, SIGHUP, server_on_hup, &s);
	s.ev_vault = event_new(s.base, -1, EV_PERSIST, server_on_vault_timer, &s);
	if (s.ev_term == NULL || s.ev_int == NULL || s.ev_hup == NULL || s.ev_vault == NULL ||
	    evsignal_add(s.ev_term, NULL) == -1 || evsignal_add(s.ev_int, NULL) == -1 ||
	    evsignal_add(s.ev_hup, NULL) == -1 || event_add(s.ev_vault, &poll) == -1) {
		log_err("event=start error=\"cannot set up signal handling\"");
		goto done;
	}
	/* Everything is bound and open: give root up, then prove we can still
	 * write our state as the user we became. */
	if (privdrop_drop(&pd, err, sizeof(err)) == -1 ||
	    fsperm_check_access(s.cfg, privdrop_user_name(&pd, who, sizeof(who)), err,
	    sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		rc = EXIT_USAGE;
		goto done;
	}
	if (pd.kept_root)
		log_warn("event=start warning=\"running as root because %s=1 is set; "
		    "never do this in production\"", PRIVDROP_ALLOW_ROOT_ENV);
	/* The parsers of network input run from here on: no programs, no
	 * ptrace, no kernel surfaces the daemon never uses. */
	if (sandbox_network(err, sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		goto done;
	}
	if ((s.sd = sdnotify_new(s.base)) == NULL) {
		log_err("event=start error=\"out of memory\"");
		goto done;
	}
	log_info("event=started version=%s config=%s delivery=%s", SMTPVAULT_VERSION,
	    cli->config_path, s.cfg->delivery == DELIVERY_DIRECT ? "direct" : "queue");
	sdnotify_ready(s.sd);
	if (event_base_dispatch(s.base) == -1)
		log_err("event=loop error=\"event loop failed\"");
	else if (!s.child_died)
		rc = EXIT_OK;
done:
	/* First: it refers to the relay, the credential store and the audit log. */
	admin_server_free(s.admin);
	if (s.smtp != NULL)
		smtp_server_free(s.smtp);
	if (s.relay != NULL)
		relay_free(s.relay);
	audit_close(s.audit);
	audit_close(s.queue_audit);
	server_stop_keeper(&s);
	if (s.ev_term != NULL)
		event_free(s.ev_term);
	if (s.ev_int != NULL)
		event_free(s.ev_int);
	if (s.ev_hup != NULL)
		event_free(s.ev_hup);
	if (s.ev_vault != NULL)
		event_free(s.ev_vault);
	if (s.ev_deadline != NULL)
		event_free(s.ev_deadline);
	if (s.ev_chld != NULL)
		event_free(s.ev_chld);
	sdnotify_free(s.sd);
	if (s.base != NULL)
		event_base_free(s.base);
	server_free_old_configs(&s, 0, 1);
	config_free(s.cfg);
	free(s.cfg);
	return rc;
}
