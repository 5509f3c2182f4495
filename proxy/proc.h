/*
 * proc.h: the daemon's processes (issue 8), after OpenSMTPD's smtpd.c.
 * "smtpvault serve" is a small parent that starts and supervises:
 *
 *   keeper  the vault, master key, credentials, audit key; sole audit
 *           writer; no network socket (keeper.c)
 *   relay   upstream sessions and the queue; gets one credential per
 *           upstream login from the keeper and wipes it after AUTH
 *   smtp    the LAN front end: listeners and sessions; hands each message
 *           to the relay over IPC; never holds a credential
 *   admin   the admin page and API; may ask the keeper to add, rotate,
 *           roll back or remove a credential and to verify an admin login,
 *           never to read a credential back
 *
 * A child that exits ends the daemon: the parent stops the others (smtp and
 * admin first, then the relay, then the keeper) and exits non-zero; systemd
 * restarts the whole daemon. Nothing restarts silently.
 *
 * Every child starts as the parent's fork, binds what it listens on while
 * still privileged, drops to the smtpvault user (privdrop.h), disables core
 * dumps and ptrace, installs its seccomp filter (sandbox.h), says ready to
 * the parent with proc_ready() and runs its loop: SIGTERM drains and exits 0,
 * SIGHUP re-reads the configuration. A child whose parent goes away exits.
 */
#ifndef SMTPVAULT_PROC_H
#define SMTPVAULT_PROC_H

#include <stddef.h>
#include <sys/types.h>

struct cli;
struct privdrop;
struct event_base;

enum proc_role { PROC_PARENT = 0, PROC_KEEPER, PROC_RELAY, PROC_SMTP, PROC_ADMIN, PROC_ROLES };

/* What a child starts with. fds it does not use are -1; every fd it is given
 * is its own to close. */
struct proc_env {
	enum proc_role		 role;
	struct cli		*cli;		/* config_path; cli->cfg is loaded */
	const struct privdrop	*pd;		/* whom to become */
	pid_t			 parent_pid;	/* a child whose parent is no longer this exits */
	int			 parent_fd;	/* to the parent: proc_ready(); EOF = parent gone */
	int			 keeper_fd;	/* this child's keeper channel (SOCK_SEQPACKET) */
	int			 keeper_audit_fd; /* relay, delivery = queue: the I/O thread's channel */
	int			 relay_fd;	/* smtp and admin: their channel to the relay */
	int			 smtp_fd;	/* relay: the channel from the smtp front end */
	int			 admin_fd;	/* relay: the channel from the admin process */
};

/* Messages on parent_fd (SOCK_SEQPACKET, ipc.h). The parent sends only
 * PROC_MSG_PING (and signals); a child answers it at once from its loop, so
 * that a child whose loop hangs is noticed (heartbeat.h). */
enum proc_msg {
	PROC_MSG_READY = 1,	/* once, when the child serves; no payload */
	PROC_MSG_RELOADED,	/* after each SIGHUP: u32 0 = reloaded, 1 = kept the old config */
	PROC_MSG_PING,		/* parent to child: still there? no payload */
	PROC_MSG_ALIVE,		/* the answer; no payload */
	PROC_MSG_END
};

/* The children's main functions; each returns the process's exit status. */
int	proc_relay_main(struct proc_env *env);		/* proxy/proc_relay.c */
int	proc_smtp_main(struct proc_env *env);		/* proxy/proc_smtp.c */
int	proc_admin_main(struct proc_env *env);		/* admin/admin_proc.c */

/* Tell the parent this child serves (once, after its sandbox is on). */
void	proc_ready(struct proc_env *env);

/*
 * The common start of every child (proc.c), right after fork(): name the
 * process, close every fd that is not stdio or in env, have the kernel kill
 * it when the parent dies (PR_SET_PDEATHSIG), ignore SIGINT (a terminal's ^C
 * reaches the whole group; the parent turns it into an ordered stop),
 * SIGPIPE and SIGXFSZ, no core dumps, not dumpable; stdin is /dev/null
 * for every child but the keeper (which may prompt for the passphrase).
 */
void	proc_child_init(struct proc_env *env);
/* After binding: become pd's user, then no core dumps, not dumpable and the
 * parent-death signal again (a change of user clears them). 0, or -1 with
 * err. */
int	proc_child_drop(struct proc_env *env, char *err, size_t errlen);

/*
 * A child's signal handling on its event loop: SIGTERM calls drain(arg)
 * once, a second SIGTERM exits at once, and after drain_seconds(arg) the
 * loop ends anyway; SIGHUP calls reload(arg), which returns 0 or -1 (kept the
 * old configuration), and tells the parent (PROC_MSG_RELOADED). drain ends
 * the loop itself (event_base_loopexit) when the process has nothing left
 * to do. On parent_fd: PROC_MSG_PING is answered with PROC_MSG_ALIVE; EOF
 * (the parent is gone) exits; anything else is fatal.
 */
struct proc_ops {
	void	(*drain)(void *arg);
	int	(*reload)(void *arg);
	int	(*drain_seconds)(void *arg);
	void	*arg;
};
struct proc_events;
struct proc_events *proc_events_new(struct event_base *base, struct proc_env *env,
	    const struct proc_ops *ops);
void	proc_events_free(struct proc_events *pe);
/* After the loop: did it end because of the drain deadline? */
int	proc_events_timed_out(const struct proc_events *pe);

/*
 * The rest of a child's life once it has bound and opened what needs root,
 * the same in every child: its signal handling (ops, *pe: the caller
 * frees it), the privilege drop, dropped(ops->arg) when not NULL (0, or -1
 * with err: a configuration problem), its seccomp filter, READY, the loop.
 * Returns the exit status: EXIT_OK when the loop ended (a drain, or its
 * deadline), EXIT_USAGE when the drop or dropped failed, EXIT_FAILED
 * otherwise; every failure is logged.
 */
int	proc_serve(struct proc_env *env, struct event_base *base, const struct proc_ops *ops,
	    int (*dropped)(void *arg, char *err, size_t errlen),
	    int (*sandbox)(char *err, size_t errlen), struct proc_events **pe);

/*
 * A child's configuration: the one it started with (taken over from
 * env->cli->cfg) and, after a SIGHUP, the one it re-read. A replaced
 * configuration may still be referenced by sessions that started under it,
 * so it is kept for a day before it is freed.
 */
struct proc_config;
struct proc_config *proc_config_new(struct proc_env *env);
const struct config *proc_config_get(const struct proc_config *pc);
/* Re-read the file; the new configuration, or NULL (logged) when the old
 * one stays. */
const struct config *proc_config_reload(struct proc_config *pc);
/* A check of each re-read configuration before it replaces the old one (the
 * process's Landlock jail: fsjail.h): 0, or -1 with err, and the old one
 * stays. */
void	proc_config_set_check(struct proc_config *pc,
	    int (*check)(void *arg, const struct config *cfg, char *err, size_t errlen),
	    void *arg);
void	proc_config_free(struct proc_config *pc);
/* In-flight work gets the upstream timeout twice over plus the SMTP timeout
 * after SIGTERM (the parent allows a little more). */
int	proc_drain_seconds(const struct config *cfg);

/* "keeper", "relay", "smtp", "admin", "parent": for logs (process=...). */
const char *proc_role_name(enum proc_role role);

#endif
