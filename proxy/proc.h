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

#include <sys/types.h>

struct cli;
struct privdrop;

enum proc_role { PROC_PARENT = 0, PROC_KEEPER, PROC_RELAY, PROC_SMTP, PROC_ADMIN, PROC_ROLES };

/* What a child starts with. fds it does not use are -1; every fd it is given
 * is its own to close. */
struct proc_env {
	enum proc_role		 role;
	struct cli		*cli;		/* config_path; cli->cfg is loaded */
	const struct privdrop	*pd;		/* whom to become */
	int			 parent_fd;	/* to the parent: proc_ready(); EOF = parent gone */
	int			 keeper_fd;	/* this child's keeper channel (SOCK_SEQPACKET) */
	int			 keeper_audit_fd; /* relay, delivery = queue: the I/O thread's channel */
	int			 relay_fd;	/* smtp and admin: their channel to the relay */
	int			 smtp_fd;	/* relay: the channel from the smtp front end */
	int			 admin_fd;	/* relay: the channel from the admin process */
};

/* The children's main functions; each returns the process's exit status. */
int	proc_relay_main(struct proc_env *env);		/* proxy/proc_relay.c */
int	proc_smtp_main(struct proc_env *env);		/* proxy/proc_smtp.c */
int	proc_admin_main(struct proc_env *env);		/* admin/admin_proc.c */

/* Tell the parent this child serves (once, after its sandbox is on). */
void	proc_ready(struct proc_env *env);

/* "keeper", "relay", "smtp", "admin", "parent": for logs (process=...). */
const char *proc_role_name(enum proc_role role);

#endif
