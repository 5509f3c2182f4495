/*
 * server.c: "smtpvault serve", the parent of the daemon's processes
 * (proc.h), after OpenSMTPD's smtpd.c. It loads and checks the
 * configuration, forks the vault keeper (keeper.c) before anything else
 * exists, then the relay, the admin process and the SMTP front end, one
 * after the other, each once the previous one said it serves; then it gives
 * up root, installs its own seccomp filter and only supervises:
 *
 *   SIGTERM / SIGINT  stop in order: the front end and the admin process;
 *                     once they are gone the relay (it finishes what is in
 *                     flight); then the keeper (its channel is closed);
 *                     exit 0
 *   SIGHUP            forwarded; each child re-reads the configuration
 *                     itself and says so; "event=reload" once all did
 *   a child exits     unexpectedly, or fails to start: logged, the others
 *                     are stopped in the same order, exit non-zero. Nothing
 *                     restarts silently; systemd restarts the daemon
 *   a child hangs     it does not answer the heartbeat (heartbeat.h) for
 *                     systemd's watchdog interval: logged once, and the
 *                     watchdog pings stop, so that systemd kills and restarts
 *                     the daemon; without systemd's watchdog it is only
 *                     logged. Heard from again: logged, pings resume
 *
 * A start-up failure keeps the child's exit status and its one error line
 * (a wrong passphrase in the keeper: 1; a port in use: 2).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cli.h"
#include "fsperm.h"
#include "heartbeat.h"
#include "ipc.h"
#include "keeper.h"
#include "log.h"
#include "privdrop.h"
#include "proc.h"
#include "sandbox.h"
#include "sdnotify.h"

#define SERVER_RELOAD_SECONDS	10	/* a child that does not confirm a reload by then */
#define SERVER_STOP_SLACK	10	/* seconds on top of the children's drain time */
#define SERVER_START_GRACE_MS	2000	/* a child that failed to start has this to exit */
#define SERVER_START_POLL_MS	10
/*
 * How long one child may take to say READY. The relay recovers the queue
 * first (a large spool on a slow disk takes minutes), so this is far longer
 * than IPC_SYNC_TIMEOUT_MS; the keeper's unlock keeps that shorter bound
 * (keeper.c). The whole start stays within systemd's TimeoutStartSec=
 * (deploy/systemd/smtpvault.service: 16 min, this plus the unlock's minute).
 */
#define SERVER_START_SECONDS	(15 * 60)

struct child {
	pid_t		 pid;		/* 0: not running */
	int		 fd;		/* the parent's end of its channel, or -1 */
	struct ipc	*ipc;
	int		 reload_pending;
	int		 stopped;	/* SIGTERM sent (keeper: its channel closed) */
	struct heartbeat hb;		/* when it last answered the parent's PING */
};

struct server {
	struct cli		*cli;
	struct event_base	*base;
	struct child		 ch[PROC_ROLES];	/* by role; PROC_PARENT unused */
	struct event		*ev_term, *ev_int, *ev_hup, *ev_chld, *ev_stop, *ev_reload;
	struct event		*ev_heartbeat;	/* ask the children, ping the watchdog */
	struct sdnotify		*sd;		/* systemd: READY, RELOADING, STOPPING, watchdog */
	uint64_t		 hb_limit_ms;	/* a child silent longer is hung (heartbeat.h) */
	int			 stopping;
	int			 failed;	/* a child ended unexpectedly */
	int			 reload_kept;	/* a child kept its old configuration */
};

static const struct ipc_rule server_rules_ready[] = {
	{ PROC_MSG_READY, 0, 0, IPC_FD_NONE },
};
static const struct ipc_rule server_rules_child[] = {
	{ PROC_MSG_RELOADED, 4, 4, IPC_FD_NONE },
	{ PROC_MSG_ALIVE, 0, 0, IPC_FD_NONE },
};
/* The keeper, after READY: the answers to the heartbeat only. */
static const struct ipc_rule server_rules_keeper[] = {
	{ KEEPER_PING | KEEPER_REPLY, 0, 0, IPC_FD_NONE },
};

/* The order of the stop: the front end and the admin process, then the
 * relay, then the keeper. */
static const enum proc_role server_stop_order[][2] = {
	{ PROC_SMTP, PROC_ADMIN },
	{ PROC_RELAY, PROC_RELAY },
	{ PROC_KEEPER, PROC_KEEPER },
};

static void	server_step(struct server *s);
static void	server_heard(struct server *s, enum proc_role role);

/* ---- Stopping ----------------------------------------------------------------- */

static void
server_close_channel(struct child *c)
{
	if (c->ipc != NULL) {
		ipc_free(c->ipc);
		c->ipc = NULL;
		c->fd = -1;
	} else if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
}

static void
server_stop_child(struct server *s, enum proc_role role)
{
	struct child *c = &s->ch[role];

	if (c->pid == 0 || c->stopped)
		return;
	c->stopped = 1;
	/* The keeper ignores signals; it exits when its channel closes. */
	if (role == PROC_KEEPER)
		server_close_channel(c);
	else
		(void)kill(c->pid, SIGTERM);
}

/* One step of the ordered stop: stop the first group that still runs, and
 * wait for it to be gone before the next. */
static void
server_step(struct server *s)
{
	size_t i;

	for (i = 0; i < sizeof(server_stop_order) / sizeof(server_stop_order[0]); i++) {
		if (s->ch[server_stop_order[i][0]].pid == 0 &&
		    s->ch[server_stop_order[i][1]].pid == 0)
			continue;
		server_stop_child(s, server_stop_order[i][0]);
		server_stop_child(s, server_stop_order[i][1]);
		return;
	}
	log_info("event=stopped");
	event_base_loopexit(s->base, NULL);
}

static void
server_on_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	int r;

	log_warn("event=drain_timeout action=kill");
	for (r = PROC_KEEPER; r < PROC_ROLES; r++)
		if (s->ch[r].pid > 0)
			(void)kill(s->ch[r].pid, SIGKILL);
}

static void
server_stop(struct server *s)
{
	struct timeval tv = { 0, 0 };
	int r;

	if (s->stopping)
		return;
	s->stopping = 1;
	/* A reload still waited for ends here: no READY=1 after STOPPING=1. */
	if (s->ev_reload != NULL)
		evtimer_del(s->ev_reload);
	for (r = PROC_RELAY; r < PROC_ROLES; r++)
		s->ch[r].reload_pending = 0;
	sdnotify_stopping(s->sd);
	/* The children have their own deadline; this one is for a child that
	 * hangs anyway. */
	tv.tv_sec = (time_t)(proc_drain_seconds(&s->cli->cfg) + SERVER_STOP_SLACK);
	if ((s->ev_stop = evtimer_new(s->base, server_on_stop_deadline, s)) != NULL)
		evtimer_add(s->ev_stop, &tv);
	server_step(s);
}

static void
server_on_term(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;
	int r;

	if (s->stopping) {
		/* A second signal: every child stops now (a second SIGTERM ends
		 * a child at once). */
		log_warn("event=signal signal=%d action=exit_now", (int)sig);
		for (r = PROC_RELAY; r < PROC_ROLES; r++)
			if (s->ch[r].pid > 0)
				(void)kill(s->ch[r].pid, SIGTERM);
		return;
	}
	log_info("event=signal signal=%d action=drain", (int)sig);
	server_stop(s);
}

/* A child is gone: expected during the stop, else the end of the daemon. */
static void
server_child_exited(struct server *s, enum proc_role role, int st)
{
	struct child *c = &s->ch[role];
	int expected = s->stopping && c->stopped && WIFEXITED(st) && WEXITSTATUS(st) == 0;

	c->pid = 0;
	server_close_channel(c);
	if (!expected) {
		s->failed = 1;
		if (WIFSIGNALED(st))
			log_err("event=child_exited process=%s signal=%d action=exit",
			    proc_role_name(role), WTERMSIG(st));
		else
			log_err("event=child_exited process=%s status=%d action=exit",
			    proc_role_name(role), WEXITSTATUS(st));
	} else {
		log_debug("event=child_exited process=%s status=0", proc_role_name(role));
	}
	if (!s->stopping)
		server_stop(s);
	else
		server_step(s);
}

static void
server_reap(struct server *s)
{
	pid_t pid;
	int st, r;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (r = PROC_KEEPER; r < PROC_ROLES; r++) {
			if (s->ch[r].pid == pid) {
				server_child_exited(s, (enum proc_role)r, st);
				break;
			}
		}
	}
}

static void
server_on_chld(evutil_socket_t sig, short what, void *arg)
{
	server_reap(arg);
}

/* ---- Reloading ------------------------------------------------------------------ */

static void
server_reload_done(struct server *s)
{
	int r;

	for (r = PROC_RELAY; r < PROC_ROLES; r++) {
		if (s->ch[r].reload_pending) {
			log_warn("event=reload process=%s error=\"no answer within %d s\"",
			    proc_role_name((enum proc_role)r), SERVER_RELOAD_SECONDS);
			s->ch[r].reload_pending = 0;
		}
	}
	evtimer_del(s->ev_reload);
	if (s->reload_kept)
		log_warn("event=reload config=%s result=kept_old_config", s->cli->config_path);
	else
		log_info("event=reload config=%s", s->cli->config_path);
	if (!s->stopping)
		sdnotify_ready(s->sd);
}

static void
server_on_reload_timeout(evutil_socket_t fd, short what, void *arg)
{
	server_reload_done(arg);
}

/* systemd sees the reload begin and end, whatever its outcome. */
static void
server_on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;
	struct timeval tv = { SERVER_RELOAD_SECONDS, 0 };
	int r, any = 0;

	if (s->stopping)
		return;
	sdnotify_reloading(s->sd);
	s->reload_kept = 0;
	for (r = PROC_RELAY; r < PROC_ROLES; r++) {
		if (s->ch[r].pid == 0)
			continue;
		s->ch[r].reload_pending = 1;
		any = 1;
		(void)kill(s->ch[r].pid, SIGHUP);
	}
	if (!any) {
		server_reload_done(s);
		return;
	}
	evtimer_add(s->ev_reload, &tv);
}

static void
server_recv(struct ipc *ipc, const struct ipc_msg *m, void *arg)
{
	struct server *s = arg;
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	int role, pending = 0;
	uint32_t kept;

	for (role = PROC_KEEPER; role < PROC_ROLES; role++)
		if (s->ch[role].ipc == ipc)
			break;
	/* The rule tables allow these with no payload, and only from their
	 * own: the keeper's answer from the keeper, ALIVE from the others. */
	if (role != PROC_ROLES && (m->type == PROC_MSG_ALIVE ||
	    m->type == (KEEPER_PING | KEEPER_REPLY))) {
		server_heard(s, (enum proc_role)role);
		return;
	}
	kept = ipc_get_u32(&r);
	if (role == PROC_ROLES || m->type != PROC_MSG_RELOADED || ipc_rd_done(&r) == -1 ||
	    kept > 1) {
		/* A child that no longer behaves as written: it goes, and with it
		 * the daemon (SIGCHLD does the rest). */
		log_err("event=ipc_refused peer=%s type=%u error=\"malformed payload\" "
		    "action=kill", ipc_peer(ipc), m->type);
		if (role != PROC_ROLES && s->ch[role].pid > 0)
			(void)kill(s->ch[role].pid, SIGKILL);
		return;
	}
	if (!s->ch[role].reload_pending)
		return;		/* answered after the timeout */
	s->ch[role].reload_pending = 0;
	if (kept)
		s->reload_kept = 1;
	for (role = PROC_RELAY; role < PROC_ROLES; role++)
		pending |= s->ch[role].reload_pending;
	if (!pending)
		server_reload_done(s);
}

/* ---- The heartbeat ------------------------------------------------------------- */

static void
server_heard(struct server *s, enum proc_role role)
{
	uint64_t silent_ms;

	if (heartbeat_heard(&s->ch[role].hb, heartbeat_now_ms(), &silent_ms) == HEARTBEAT_HEARD)
		log_warn("event=child_responsive process=%s silent_ms=%llu action=%s",
		    proc_role_name(role), (unsigned long long)silent_ms,
		    sdnotify_watchdog_usec(s->sd) != 0 ? "resume_watchdog" : "none");
}

/*
 * Every half limit: who has been silent too long (said once), a PING to
 * each child that has answered the last one, and WATCHDOG=1 only while every
 * child is heard from. A child being stopped is left to the stop's deadline.
 */
static void
server_on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	uint64_t now = heartbeat_now_ms(), silent_ms;
	int r, all_heard = 1;

	for (r = PROC_KEEPER; r < PROC_ROLES; r++) {
		struct child *c = &s->ch[r];

		if (c->pid == 0 || c->ipc == NULL || c->stopped)
			continue;
		if (heartbeat_check(&c->hb, now, s->hb_limit_ms, &silent_ms) == HEARTBEAT_SILENT)
			log_warn("event=child_unresponsive process=%s silent_ms=%llu action=%s",
			    proc_role_name((enum proc_role)r), (unsigned long long)silent_ms,
			    sdnotify_watchdog_usec(s->sd) != 0 ? "stop_watchdog" : "none");
		if (c->hb.silent)
			all_heard = 0;
		if (heartbeat_ask(&c->hb) && ipc_send(c->ipc, r == PROC_KEEPER ? KEEPER_PING :
		    PROC_MSG_PING, 0, -1, NULL, 0) == -1)
			heartbeat_unask(&c->hb);	/* out of memory: the next tick */
	}
	if (all_heard)
		sdnotify_watchdog(s->sd);
}

/* The limit is systemd's watchdog interval when there is one (heartbeat.h);
 * the timer, half of it. */
static int
server_heartbeat_start(struct server *s)
{
	struct timeval tv;
	uint64_t now = heartbeat_now_ms();
	char err[256];
	int r;

	if (heartbeat_limit_ms(sdnotify_watchdog_usec(s->sd), getenv(HEARTBEAT_ENV),
	    &s->hb_limit_ms, err, sizeof(err)) == -1)
		log_warn("event=heartbeat error=\"%s\" limit_ms=%llu", err,
		    (unsigned long long)s->hb_limit_ms);
	heartbeat_tick(s->hb_limit_ms, &tv);
	for (r = PROC_KEEPER; r < PROC_ROLES; r++)
		heartbeat_start(&s->ch[r].hb, now);
	if ((s->ev_heartbeat = event_new(s->base, -1, EV_PERSIST, server_on_heartbeat,
	    s)) == NULL || event_add(s->ev_heartbeat, &tv) == -1)
		return -1;
	log_debug("event=heartbeat limit_ms=%llu watchdog=%s", (unsigned long long)s->hb_limit_ms,
	    sdnotify_watchdog_usec(s->sd) != 0 ? "yes" : "no");
	return 0;
}

/* A child's channel died: closed (the child is exiting; SIGCHLD tells the
 * rest) or something broke the protocol (the child is killed: it no longer
 * behaves as written). */
static void
server_ipc_event(struct ipc *ipc, enum ipc_event ev, const char *why, void *arg)
{
	struct server *s = arg;
	int r;

	for (r = PROC_KEEPER; r < PROC_ROLES; r++) {
		if (s->ch[r].ipc != ipc)
			continue;
		if (ev != IPC_EV_CLOSED) {
			log_err("event=ipc_refused peer=%s error=\"%s\" action=kill",
			    proc_role_name((enum proc_role)r), why);
			if (s->ch[r].pid > 0)
				(void)kill(s->ch[r].pid, SIGKILL);
		}
		/* Freed later: not from inside its own callback. */
		return;
	}
}

/* ---- Starting -------------------------------------------------------------------- */

/* Reap pid, waiting until deadline_ms (heartbeat_now_ms()) at most; a child
 * still there then is killed. Without an event loop. */
static void
server_reap_by(pid_t pid, int *st, uint64_t deadline_ms)
{
	struct timespec nap = { 0, SERVER_START_POLL_MS * 1000000L };
	pid_t r;

	while ((r = waitpid(pid, st, WNOHANG)) == 0 || (r == -1 && errno == EINTR)) {
		if (r == 0 && heartbeat_now_ms() >= deadline_ms) {
			(void)kill(pid, SIGKILL);
			while (waitpid(pid, st, 0) == -1 && errno == EINTR)
				;
			return;
		}
		nanosleep(&nap, NULL);
	}
}

/* Stop whatever started, in order, without an event loop (start-up failed,
 * or the loop ended): the children get the drain time of a stop, then
 * SIGKILL, so that a hung child cannot hang the parent. */
static void
server_abort(struct server *s)
{
	uint64_t deadline = heartbeat_now_ms() +
	    (uint64_t)(proc_drain_seconds(&s->cli->cfg) + SERVER_STOP_SLACK) * 1000;
	size_t i;
	int st, k;

	for (i = 0; i < sizeof(server_stop_order) / sizeof(server_stop_order[0]); i++) {
		for (k = 0; k < 2; k++) {
			enum proc_role r = server_stop_order[i][k];
			struct child *c = &s->ch[r];

			if (c->pid == 0)
				continue;
			server_stop_child(s, r);
			server_reap_by(c->pid, &st, deadline);
			c->pid = 0;
			server_close_channel(c);
		}
	}
}

/* A child that did not say READY: it exits (it closed its channel), or it
 * hangs or talks nonsense and is killed. */
static void
server_wait_start_failure(pid_t pid, int *st)
{
	server_reap_by(pid, st, heartbeat_now_ms() + SERVER_START_GRACE_MS);
}

/* Wait until the child's channel is readable (its READY, or its end), for
 * SERVER_START_SECONDS at most. 0, or -1 with err. */
static int
server_wait_ready(int fd, char *err, size_t errlen)
{
	uint64_t deadline = heartbeat_now_ms() + (uint64_t)SERVER_START_SECONDS * 1000, now;
	struct pollfd pfd;
	int rc;

	pfd.fd = fd;
	pfd.events = POLLIN;
	for (;;) {
		if ((now = heartbeat_now_ms()) >= deadline) {
			snprintf(err, errlen, "no READY within %d s", SERVER_START_SECONDS);
			return -1;
		}
		rc = poll(&pfd, 1, (int)(deadline - now));
		if (rc > 0)
			return 0;
		if (rc == -1 && errno != EINTR) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			return -1;
		}
	}
}

/*
 * Fork one child and wait until it serves. EXIT_OK, or the status it exited
 * with (it said why on stderr; so does this, at info level, so that a
 * start-up failure stays one error line).
 */
static int
server_fork(struct server *s, struct proc_env *env, int (*main_fn)(struct proc_env *))
{
	struct child *c = &s->ch[env->role];
	unsigned char *buf = NULL;
	struct ipc_msg m;
	char err[256];
	int sv[2], st;
	pid_t pid;

	if (ipc_socketpair(sv) == -1) {
		cli_error("cannot create the %s's channel: %s", proc_role_name(env->role),
		    strerror(errno));
		return EXIT_FAILED;
	}
	env->parent_fd = sv[1];
	env->parent_pid = getpid();
	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1) {
		cli_error("cannot start the %s: %s", proc_role_name(env->role), strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return EXIT_FAILED;
	}
	if (pid == 0) {
		proc_child_init(env);
		exit(main_fn(env));
	}
	close(sv[1]);
	env->parent_fd = -1;
	c->pid = pid;
	c->fd = sv[0];
	/* Readable first: the READY may take far longer than a sync call's
	 * IPC_SYNC_TIMEOUT_MS (the relay's queue recovery). */
	if (server_wait_ready(c->fd, err, sizeof(err)) == -1)
		log_err("event=start process=%s error=\"%s\" action=kill",
		    proc_role_name(env->role), err);
	else if ((buf = malloc(IPC_MSG_MAX)) != NULL &&
	    ipc_recv_sync(c->fd, server_rules_ready, 1, buf, IPC_MSG_MAX, &m, err,
	    sizeof(err)) == 0) {
		free(buf);
		log_info("event=child_started process=%s pid=%ld", proc_role_name(env->role),
		    (long)pid);
		return EXIT_OK;
	}
	free(buf);
	server_wait_start_failure(pid, &st);
	c->pid = 0;
	server_close_channel(c);
	if (WIFEXITED(st))
		log_info("event=child_exited process=%s status=%d action=exit",
		    proc_role_name(env->role), WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		log_err("event=child_exited process=%s signal=%d action=exit",
		    proc_role_name(env->role), WTERMSIG(st));
	if (WIFEXITED(st) && WEXITSTATUS(st) != EXIT_OK)
		return WEXITSTATUS(st);
	return EXIT_FAILED;
}

static void
server_env(struct proc_env *env, enum proc_role role, struct cli *cli,
    const struct privdrop *pd)
{
	memset(env, 0, sizeof(*env));
	env->role = role;
	env->cli = cli;
	env->pd = pd;
	env->parent_fd = env->keeper_fd = env->keeper_audit_fd = -1;
	env->relay_fd = env->smtp_fd = env->admin_fd = -1;
}

static void
server_close_fds(int *fds, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (fds[i] != -1)
			close(fds[i]);
		fds[i] = -1;
	}
}

/*
 * The keeper first (before any listener exists, so that it holds no network
 * socket), then the relay, the admin process and the front end: each binds
 * as root and drops privileges itself. When the front end's port accepts,
 * everything behind it serves.
 */
static int
server_start_children(struct server *s, const struct privdrop *pd)
{
	struct proc_env relay, smtp, admin;
	int kfd[KEEPER_CHANNELS], link[2] = { -1, -1 }, ctl[2] = { -1, -1 };
	int rc, i;

	for (i = 0; i < KEEPER_CHANNELS; i++)
		kfd[i] = -1;
	if ((rc = keeper_start(s->cli, pd, cli_open_vault, &s->ch[PROC_KEEPER].pid, kfd)) !=
	    EXIT_OK)
		return rc;
	s->ch[PROC_KEEPER].fd = kfd[KEEPER_CH_PARENT];
	kfd[KEEPER_CH_PARENT] = -1;
	log_info("event=child_started process=keeper pid=%ld", (long)s->ch[PROC_KEEPER].pid);
	if (s->cli->cfg.delivery != DELIVERY_QUEUE) {
		close(kfd[KEEPER_CH_QUEUE_IO]);
		kfd[KEEPER_CH_QUEUE_IO] = -1;
	}
	if (ipc_socketpair(link) == -1 || ipc_socketpair(ctl) == -1) {
		cli_error("cannot create the relay's channels: %s", strerror(errno));
		rc = EXIT_FAILED;
		goto done;
	}
	server_env(&relay, PROC_RELAY, s->cli, pd);
	server_env(&smtp, PROC_SMTP, s->cli, pd);
	server_env(&admin, PROC_ADMIN, s->cli, pd);
	relay.keeper_fd = kfd[KEEPER_CH_RELAY];
	relay.keeper_audit_fd = kfd[KEEPER_CH_QUEUE_IO];
	relay.smtp_fd = link[0];
	relay.admin_fd = ctl[0];
	smtp.keeper_fd = kfd[KEEPER_CH_SMTP];
	smtp.relay_fd = link[1];
	admin.keeper_fd = kfd[KEEPER_CH_ADMIN];
	admin.relay_fd = ctl[1];
	if ((rc = server_fork(s, &relay, proc_relay_main)) != EXIT_OK)
		goto done;
	/* The relay's ends are the relay's now. */
	server_close_fds(&kfd[KEEPER_CH_RELAY], 1);
	server_close_fds(&kfd[KEEPER_CH_QUEUE_IO], 1);
	server_close_fds(&link[0], 1);
	server_close_fds(&ctl[0], 1);
	if ((rc = server_fork(s, &admin, proc_admin_main)) != EXIT_OK)
		goto done;
	server_close_fds(&kfd[KEEPER_CH_ADMIN], 1);
	server_close_fds(&ctl[1], 1);
	if ((rc = server_fork(s, &smtp, proc_smtp_main)) != EXIT_OK)
		goto done;
	rc = EXIT_OK;
done:
	server_close_fds(kfd, KEEPER_CHANNELS);
	server_close_fds(link, 2);
	server_close_fds(ctl, 2);
	if (rc != EXIT_OK)
		server_abort(s);
	return rc;
}

/* The parent's loop: signals and the children's channels. */
static int
server_events(struct server *s)
{
	int r;

	if ((s->base = event_base_new()) == NULL)
		return -1;
	s->ev_term = evsignal_new(s->base, SIGTERM, server_on_term, s);
	s->ev_int = evsignal_new(s->base, SIGINT, server_on_term, s);
	s->ev_hup = evsignal_new(s->base, SIGHUP, server_on_hup, s);
	s->ev_chld = evsignal_new(s->base, SIGCHLD, server_on_chld, s);
	s->ev_reload = evtimer_new(s->base, server_on_reload_timeout, s);
	if (s->ev_term == NULL || s->ev_int == NULL || s->ev_hup == NULL || s->ev_chld == NULL ||
	    s->ev_reload == NULL || evsignal_add(s->ev_term, NULL) == -1 ||
	    evsignal_add(s->ev_int, NULL) == -1 || evsignal_add(s->ev_hup, NULL) == -1 ||
	    evsignal_add(s->ev_chld, NULL) == -1)
		return -1;
	for (r = PROC_KEEPER; r < PROC_ROLES; r++) {
		struct child *c = &s->ch[r];

		if (c->fd == -1)
			continue;
		/* After READY: the keeper answers the heartbeat; the others
		 * too, and say RELOADED. */
		c->ipc = ipc_new(s->base, c->fd, proc_role_name((enum proc_role)r),
		    r == PROC_KEEPER ? server_rules_keeper : server_rules_child,
		    r == PROC_KEEPER ? sizeof(server_rules_keeper) /
		    sizeof(server_rules_keeper[0]) : sizeof(server_rules_child) /
		    sizeof(server_rules_child[0]), server_recv, server_ipc_event, s);
		if (c->ipc == NULL)
			return -1;
	}
	return 0;
}

static void
server_free(struct server *s)
{
	struct event **evs[] = { &s->ev_term, &s->ev_int, &s->ev_hup, &s->ev_chld, &s->ev_stop,
	    &s->ev_reload, &s->ev_heartbeat };
	size_t i;
	int r;

	for (r = PROC_KEEPER; r < PROC_ROLES; r++)
		server_close_channel(&s->ch[r]);
	for (i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
		if (*evs[i] != NULL)
			event_free(*evs[i]);
		*evs[i] = NULL;
	}
	sdnotify_free(s->sd);
	if (s->base != NULL)
		event_base_free(s->base);
}

/*
 * fds 0, 1 and 2 open, on /dev/null where they were closed: else the first
 * channels made here would land on them, be kept by the children as their
 * stdio, and get log lines written into them. 0, or -1.
 */
static int
server_open_stdio(void)
{
	int fd, nfd;

	for (fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		/* The lowest free fd: this one, as the lower ones are open. */
		if ((nfd = open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY)) == -1)
			return -1;
		if (nfd != fd) {
			if (dup2(nfd, fd) == -1) {
				close(nfd);
				return -1;
			}
			close(nfd);
		}
	}
	return 0;
}

int
cmd_serve(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault serve [--check]";
	struct server s;
	struct vault *v = NULL;
	struct privdrop pd;
	char err[1024];
	int i, check = 0, rc, r;

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
	if (server_open_stdio() == -1) {
		cli_error("cannot open /dev/null for a closed stdin, stdout or stderr: %s",
		    strerror(errno));
		return EXIT_FAILED;
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
		if ((rc = cli_open_vault(cli, 0, &v)) != EXIT_OK)
			return rc;
		vault_close(v);
		printf("configuration OK\n");
		return EXIT_OK;
	}
	memset(&s, 0, sizeof(s));
	s.cli = cli;
	for (r = 0; r < PROC_ROLES; r++)
		s.ch[r].fd = -1;
	signal(SIGPIPE, SIG_IGN);
	if ((rc = server_start_children(&s, &pd)) != EXIT_OK)
		return rc;
	rc = EXIT_FAILED;
	if (server_events(&s) == -1 || (s.sd = sdnotify_new()) == NULL ||
	    server_heartbeat_start(&s) == -1) {
		log_err("event=start error=\"cannot set up the parent's event loop\"");
		server_abort(&s);
		goto done;
	}
	/* The children hold what needed root; so does nothing here. */
	if (privdrop_drop(&pd, err, sizeof(err)) == -1 || sandbox_parent(err, sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		server_abort(&s);
		goto done;
	}
	if (pd.kept_root)
		log_warn("event=start warning=\"running as root because %s=1 is set; "
		    "never do this in production\"", PRIVDROP_ALLOW_ROOT_ENV);
	log_info("event=started version=%s config=%s delivery=%s", SMTPVAULT_VERSION,
	    cli->config_path, cli->cfg.delivery == DELIVERY_DIRECT ? "direct" : "queue");
	/* A child that ended before SIGCHLD was watched. */
	server_reap(&s);
	if (!s.stopping)
		sdnotify_ready(s.sd);
	if (event_base_dispatch(s.base) == -1)
		log_err("event=loop error=\"event loop failed\"");
	else if (!s.failed)
		rc = EXIT_OK;
	server_abort(&s);
done:
	server_free(&s);
	return rc;
}
