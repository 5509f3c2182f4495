/*
 * proc.c: what every child of "smtpvault serve" does the same way (proc.h):
 * its start right after fork() (a name, no inherited fds, death with the
 * parent), the privilege drop after binding, the READY, RELOADED and ALIVE
 * messages to the parent, and the handling of SIGTERM, SIGHUP, the parent's
 * PING and a parent that went away on the child's event loop.
 */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cli.h"
#include "config.h"
#include "ipc.h"
#include "log.h"
#include "privdrop.h"
#include "vault.h"

#define PROC_NAME_MAX		16	/* the kernel's comm, with its NUL */
#define PROC_LOGNAME_MAX	32
#define PROC_FDS_MAX		256	/* fds a child may inherit before it closes them */
#define CONFIG_KEEP_SECONDS	86400	/* how long a replaced config stays valid */

static const char *const proc_names[PROC_ROLES] = {
	[PROC_PARENT] = "parent",
	[PROC_KEEPER] = "keeper",
	[PROC_RELAY] = "relay",
	[PROC_SMTP] = "smtp",
	[PROC_ADMIN] = "admin",
};

/* What the parent may send: only the heartbeat's question. */
static const struct ipc_rule proc_rules_parent[] = {
	{ PROC_MSG_PING, 0, 0, IPC_FD_NONE },
};

struct proc_old_config {
	struct config		*cfg;
	time_t			 replaced;
	struct proc_old_config	*next;
};

struct proc_config {
	struct proc_env		*env;
	struct config		*cfg;
	struct proc_old_config	*old;
	int			(*check)(void *, const struct config *, char *, size_t);
	void			*check_arg;
};

struct proc_events {
	struct event_base	*base;
	struct proc_env		*env;
	struct proc_ops		 ops;
	struct event		*ev_term, *ev_hup, *ev_parent, *ev_deadline;
	int			 draining;
	int			 timed_out;
};

const char *
proc_role_name(enum proc_role role)
{
	if ((unsigned)role >= PROC_ROLES)
		return "unknown";
	return proc_names[role];
}

static int
proc_env_has(const struct proc_env *env, int fd)
{
	return fd == env->parent_fd || fd == env->keeper_fd || fd == env->keeper_audit_fd ||
	    fd == env->relay_fd || fd == env->smtp_fd || fd == env->admin_fd;
}

/* Everything the parent had open (other children's channels, the keeper's
 * other ends) is not this child's business. */
static void
proc_close_foreign(const struct proc_env *env)
{
	int fds[PROC_FDS_MAX], fd;
	size_t n = 0, i;
	char *end;
	long v;
	struct dirent *de;
	DIR *d;

	if ((d = opendir("/proc/self/fd")) == NULL)
		fatal("event=start process=%s error=\"cannot list /proc/self/fd: %s\"",
		    proc_role_name(env->role), strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		errno = 0;
		v = strtol(de->d_name, &end, 10);
		if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX)
			continue;
		fd = (int)v;
		if (fd <= STDERR_FILENO || fd == dirfd(d) || proc_env_has(env, fd))
			continue;
		if (n == PROC_FDS_MAX)
			fatal("event=start process=%s error=\"more than %d fds inherited\"",
			    proc_role_name(env->role), PROC_FDS_MAX);
		fds[n++] = fd;
	}
	closedir(d);
	for (i = 0; i < n; i++)
		close(fds[i]);
}

/* No child reads stdin: a terminal there stays with the parent (and the
 * keeper, which may prompt for the passphrase on it). */
static void
proc_stdin_null(const struct proc_env *env)
{
	int fd;

	if ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) == -1 ||
	    dup2(fd, STDIN_FILENO) == -1)
		fatal("event=start process=%s error=\"cannot open /dev/null as stdin: %s\"",
		    proc_role_name(env->role), strerror(errno));
	if (fd != STDIN_FILENO)
		close(fd);
}

/* The kernel kills this child when its parent dies; a parent that died
 * before that was set leaves an orphan that goes now. */
static void
proc_die_with_parent(const struct proc_env *env)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1)
		fatal("event=start process=%s error=\"prctl(PR_SET_PDEATHSIG): %s\"",
		    proc_role_name(env->role), strerror(errno));
	if (getppid() != env->parent_pid)
		_exit(EXIT_FAILURE);
}

void
proc_child_init(struct proc_env *env)
{
	static char logname[PROC_LOGNAME_MAX];
	char name[PROC_LOGNAME_MAX];

	snprintf(logname, sizeof(logname), "smtpvault[%s]", proc_role_name(env->role));
	log_init(logname, 0);
	/* ps shows "smtpvault:relay"; the kernel keeps 15 bytes. */
	snprintf(name, sizeof(name), "smtpvault:%s", proc_role_name(env->role));
	name[PROC_NAME_MAX - 1] = '\0';
	(void)prctl(PR_SET_NAME, name, 0, 0, 0);
	proc_close_foreign(env);
	proc_stdin_null(env);
	proc_die_with_parent(env);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit makes writes fail with EFBIG (a clear error on the
	 * spool or audit write) instead of killing the process. */
	signal(SIGXFSZ, SIG_IGN);
	vault_harden_process();
}

int
proc_child_drop(struct proc_env *env, char *err, size_t errlen)
{
	if (privdrop_drop(env->pd, err, errlen) == -1)
		return -1;
	/* A change of user resets the dumpable flag and the parent-death
	 * signal; set both again. */
	vault_harden_process();
	proc_die_with_parent(env);
	return 0;
}

static void
proc_send(struct proc_env *env, enum proc_msg type, const void *data, size_t len)
{
	char err[256];

	if (ipc_send_sync(env->parent_fd, (uint16_t)type, 0, -1, data, len, err,
	    sizeof(err)) == -1) {
		/* The parent is gone: the kernel's SIGKILL is on its way. */
		log_err("event=ipc_fatal peer=parent type=%d error=\"%s\" action=exit", (int)type,
		    err);
		exit(IPC_EXIT_FATAL);
	}
}

void
proc_ready(struct proc_env *env)
{
	proc_send(env, PROC_MSG_READY, NULL, 0);
}

/* ---- The child's loop ----------------------------------------------------------- */

static void
proc_on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct proc_events *pe = arg;

	log_warn("event=drain_timeout process=%s action=exit", proc_role_name(pe->env->role));
	pe->timed_out = 1;
	event_base_loopexit(pe->base, NULL);
}

static void
proc_drain(struct proc_events *pe, const char *why)
{
	struct timeval tv = { 0, 0 };

	if (pe->draining) {
		log_warn("event=signal process=%s reason=\"%s\" action=exit_now",
		    proc_role_name(pe->env->role), why);
		event_base_loopexit(pe->base, NULL);
		return;
	}
	pe->draining = 1;
	log_info("event=drain process=%s reason=\"%s\"", proc_role_name(pe->env->role), why);
	tv.tv_sec = pe->ops.drain_seconds != NULL ? pe->ops.drain_seconds(pe->ops.arg) : 0;
	if ((pe->ev_deadline = evtimer_new(pe->base, proc_on_deadline, pe)) != NULL)
		evtimer_add(pe->ev_deadline, &tv);
	pe->ops.drain(pe->ops.arg);
}

static void
proc_on_term(evutil_socket_t sig, short what, void *arg)
{
	proc_drain(arg, "SIGTERM");
}

static void
proc_on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct proc_events *pe = arg;
	unsigned char kept[4] = { 0, 0, 0, 0 };

	if (pe->ops.reload != NULL && pe->ops.reload(pe->ops.arg) == -1)
		kept[3] = 1;
	proc_send(pe->env, PROC_MSG_RELOADED, kept, sizeof(kept));
}

/* The parent asks whether this loop still turns (PROC_MSG_PING, one at a
 * time) and is answered at once. EOF means it has gone; any other record is
 * not our parent's (fatal). */
static void
proc_on_parent(evutil_socket_t fd, short what, void *arg)
{
	struct proc_events *pe = arg;
	unsigned char rec[IPC_HDR_LEN];		/* a PING has no payload */
	char err[256];
	struct ipc_msg m;
	ssize_t n;

	n = recv(fd, rec, 1, MSG_DONTWAIT | MSG_PEEK);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		/* Readable, so this does not block; a longer record is cut and
		 * refused. */
		if (ipc_recv_sync(fd, proc_rules_parent, 1, rec, sizeof(rec), &m, err,
		    sizeof(err)) == -1) {
			log_err("event=ipc_fatal peer=parent error=\"%s\" action=exit", err);
			exit(IPC_EXIT_FATAL);
		}
		proc_send(pe->env, PROC_MSG_ALIVE, NULL, 0);
		return;
	}
	event_del(pe->ev_parent);
	log_warn("event=parent_gone process=%s action=exit", proc_role_name(pe->env->role));
	exit(EXIT_FAILURE);
}

struct proc_events *
proc_events_new(struct event_base *base, struct proc_env *env, const struct proc_ops *ops)
{
	struct proc_events *pe;

	if ((pe = calloc(1, sizeof(*pe))) == NULL)
		return NULL;
	pe->base = base;
	pe->env = env;
	pe->ops = *ops;
	pe->ev_term = evsignal_new(base, SIGTERM, proc_on_term, pe);
	pe->ev_hup = evsignal_new(base, SIGHUP, proc_on_hup, pe);
	pe->ev_parent = event_new(base, env->parent_fd, EV_READ | EV_PERSIST, proc_on_parent,
	    pe);
	if (pe->ev_term == NULL || pe->ev_hup == NULL || pe->ev_parent == NULL ||
	    evsignal_add(pe->ev_term, NULL) == -1 || evsignal_add(pe->ev_hup, NULL) == -1 ||
	    event_add(pe->ev_parent, NULL) == -1) {
		proc_events_free(pe);
		return NULL;
	}
	return pe;
}

void
proc_events_free(struct proc_events *pe)
{
	if (pe == NULL)
		return;
	if (pe->ev_term != NULL)
		event_free(pe->ev_term);
	if (pe->ev_hup != NULL)
		event_free(pe->ev_hup);
	if (pe->ev_parent != NULL)
		event_free(pe->ev_parent);
	if (pe->ev_deadline != NULL)
		event_free(pe->ev_deadline);
	free(pe);
}

int
proc_events_timed_out(const struct proc_events *pe)
{
	return pe != NULL && pe->timed_out;
}

int
proc_serve(struct proc_env *env, struct event_base *base, const struct proc_ops *ops,
    int (*dropped)(void *, char *, size_t), int (*sandbox)(char *, size_t),
    struct proc_events **pe)
{
	char err[1024];

	if ((*pe = proc_events_new(base, env, ops)) == NULL) {
		log_err("event=start error=\"cannot set up signal handling\"");
		return EXIT_FAILED;
	}
	if (proc_child_drop(env, err, sizeof(err)) == -1 ||
	    (dropped != NULL && dropped(ops->arg, err, sizeof(err)) == -1)) {
		log_err("event=start error=\"%s\"", err);
		return EXIT_USAGE;
	}
	/* The parsers of what others send run from here on. */
	if (sandbox(err, sizeof(err)) == -1) {
		log_err("event=start error=\"%s\"", err);
		return EXIT_FAILED;
	}
	proc_ready(env);
	if (event_base_dispatch(base) == -1) {
		log_err("event=loop error=\"event loop failed\"");
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

/* ---- Configuration -------------------------------------------------------------- */

struct proc_config *
proc_config_new(struct proc_env *env)
{
	struct proc_config *pc;

	if ((pc = calloc(1, sizeof(*pc))) == NULL || (pc->cfg = calloc(1, sizeof(*pc->cfg))) ==
	    NULL) {
		free(pc);
		return NULL;
	}
	pc->env = env;
	*pc->cfg = env->cli->cfg;
	env->cli->cfg_loaded = 0;
	return pc;
}

const struct config *
proc_config_get(const struct proc_config *pc)
{
	return pc->cfg;
}

static void
proc_config_free_old(struct proc_config *pc, time_t now, int all)
{
	struct proc_old_config **pp = &pc->old, *o;

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

const struct config *
proc_config_reload(struct proc_config *pc)
{
	const char *path = pc->env->cli->config_path;
	struct proc_old_config *o;
	struct config *n;
	char err[1024];

	if ((n = calloc(1, sizeof(*n))) == NULL || (o = calloc(1, sizeof(*o))) == NULL) {
		free(n);
		log_err("event=reload process=%s error=\"out of memory\"",
		    proc_role_name(pc->env->role));
		return NULL;
	}
	if (config_load(path, n, err, sizeof(err)) == -1 ||
	    (pc->check != NULL && pc->check(pc->check_arg, n, err, sizeof(err)) == -1)) {
		log_err("event=reload process=%s error=\"%s\" action=keep_old_config",
		    proc_role_name(pc->env->role), err);
		config_free(n);		/* a second free after config_load's is harmless */
		free(n);
		free(o);
		return NULL;
	}
	/* Said once, by the process that is always there. */
	if (pc->env->role == PROC_RELAY && (n->n_listen != pc->cfg->n_listen ||
	    memcmp(n->listen, pc->cfg->listen, sizeof(n->listen[0]) * n->n_listen) != 0 ||
	    strcmp(n->vault_path, pc->cfg->vault_path) != 0))
		log_warn("event=reload note=\"listen addresses and the vault path change "
		    "only at restart\"");
	o->cfg = pc->cfg;
	o->replaced = time(NULL);
	o->next = pc->old;
	pc->old = o;
	pc->cfg = n;
	proc_config_free_old(pc, o->replaced, 0);
	return n;
}

void
proc_config_set_check(struct proc_config *pc,
    int (*check)(void *, const struct config *, char *, size_t), void *arg)
{
	pc->check = check;
	pc->check_arg = arg;
}

void
proc_config_free(struct proc_config *pc)
{
	if (pc == NULL)
		return;
	proc_config_free_old(pc, 0, 1);
	config_free(pc->cfg);
	free(pc->cfg);
	free(pc);
}

int
proc_drain_seconds(const struct config *cfg)
{
	return (int)(2 * cfg->upstream_timeout + cfg->smtp_timeout);
}
