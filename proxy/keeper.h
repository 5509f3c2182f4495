/*
 * keeper.h: the vault keeper, the one process that holds the vault (master
 * key, decrypted credentials) and the audit key, in the spirit of
 * OpenSMTPD's lka. It has no network socket and answers the credstore
 * requests (credential.h) of the other processes over IPC (ipc.h); it alone
 * writes the audit log. Which requests a channel may make is fixed by its
 * rule table: a request a channel may not make is a protocol error that
 * ends the keeper (and so the daemon).
 */
#ifndef SMTPVAULT_KEEPER_H
#define SMTPVAULT_KEEPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipc.h"

struct cli;
struct privdrop;
struct cred_info;
struct cred_account_view;
struct vault_account;

/* Requests; each reply is the request's type | KEEPER_REPLY. */
enum keeper_msg {
	KEEPER_RESOLVE = 1,
	KEEPER_INFO,
	KEEPER_FETCH,
	KEEPER_REPORT_AUTH,
	KEEPER_HEALTHY,
	KEEPER_COUNT,
	KEEPER_VIEW,
	KEEPER_ADD,
	KEEPER_ROTATE,
	KEEPER_ROLLBACK,
	KEEPER_REMOVE,
	KEEPER_ADMIN_VERIFY,	/* an admin login: ok or not (keeper_verify.h) */
	KEEPER_ADMIN_AUDIT,
	KEEPER_AUDIT_APPEND,
	KEEPER_AUDIT_REOPEN,
	KEEPER_READY,		/* keeper -> parent once, when it serves */
	KEEPER_PING,		/* parent -> keeper: still there? (heartbeat.h) */
	KEEPER_MSG_END
};
#define KEEPER_REPLY		0x100
#define KEEPER_REQ_MAX		(120 * 1024)	/* largest request: a batch of audit lines */
#define KEEPER_REPLY_MAX	(16 * 1024)	/* largest reply: an account view */
#define KEEPER_STR_MAX		1024		/* err strings, replies, reasons */

/* Every request: the rule table of a process that runs the front end, the
 * relay and the admin page together (tests, and a relay that still serves
 * the admin page itself). */
extern const struct ipc_rule keeper_rules_daemon[];
extern const size_t keeper_n_rules_daemon;
/* The relay: an account's facts, one credential per upstream login, the
 * result of that login, audit appends and reopen. */
extern const struct ipc_rule keeper_rules_relay[];
extern const size_t keeper_n_rules_relay;
/* The SMTP front end: which account an address is, and audit appends
 * (refused connections and commands). Never FETCH. */
extern const struct ipc_rule keeper_rules_smtp[];
extern const size_t keeper_n_rules_smtp;
/* The admin process: account views and changes, admin logins and their
 * audit events. Never FETCH, and no admin password hash. */
extern const struct ipc_rule keeper_rules_admin[];
extern const size_t keeper_n_rules_admin;
/* The queue I/O thread's channel: audit appends and reopen, nothing else. */
extern const struct ipc_rule keeper_rules_audit[];
extern const size_t keeper_n_rules_audit;

/*
 * One channel per peer, each with its own rule table. The parent's carries
 * READY once, then only the parent's KEEPER_PING, answered at once; when it
 * closes (the daemon is done, or its parent died) the keeper exits. The
 * others may close earlier.
 */
enum keeper_channel_id {
	KEEPER_CH_PARENT = 0,
	KEEPER_CH_RELAY,
	KEEPER_CH_QUEUE_IO,	/* the relay's spool I/O thread (delivery = queue) */
	KEEPER_CH_SMTP,
	KEEPER_CH_ADMIN,
	KEEPER_CHANNELS
};

struct keeper_channel {
	int			 fd;
	const char		*peer;
	const struct ipc_rule	*rules;
	size_t			 n_rules;
	/* The audit events ("event" names) its KEEPER_AUDIT_APPEND may write, a
	 * NULL-terminated list; another is a protocol error. NULL: any (the
	 * daemon's table, which stands for every process at once). */
	const char *const	*audit_events;
};

/* Each process's audit events: the front end writes refusals only, the
 * relay and its queue I/O thread the messages' events; the admin process
 * and the parent append none (admin events are made here, from
 * KEEPER_ADMIN_AUDIT, and so are account events). */
extern const char *const keeper_audit_events_smtp[];
extern const char *const keeper_audit_events_relay[];
extern const char *const keeper_audit_events_none[];

/*
 * Fork the keeper: it unlocks the vault (open_vault: cli_open_vault, which
 * lives with the CLI in main.c), opens the audit
 * log, drops privileges as the daemon does and then says READY on the
 * parent's channel. On success returns EXIT_OK with the channels
 * (enum keeper_channel_id: fds[KEEPER_CH_PARENT] is the caller's, the others
 * are to be handed to the processes they are named after) and the child in
 * *pid;
 * otherwise the keeper's exit status (EXIT_FAILED for a wrong passphrase,
 * EXIT_USAGE for a configuration problem) and nothing is left running.
 */
struct vault;
typedef int keeper_open_fn(struct cli *cli, int for_update, struct vault **out);
int	keeper_start(struct cli *cli, const struct privdrop *pd, keeper_open_fn *open_vault,
	    pid_t *pid, int fds[KEEPER_CHANNELS]);

/* The keeper's side, for tests: serve requests on the channels until the
 * first (the parent's) closes, with an opened credstore and audit log.
 * Never returns. */
struct credstore;
struct audit;
void	keeper_serve(const struct keeper_channel *ch, size_t n, struct credstore *cs,
	    struct audit *a) __attribute__((noreturn));

/* The wire form of the non-secret structures both sides share. */
void	keeper_put_info(struct ipc_buf *b, const struct cred_info *ci);
void	keeper_get_info(struct ipc_rd *r, struct cred_info *ci);
void	keeper_put_view(struct ipc_buf *b, const struct cred_account_view *v);
void	keeper_get_view(struct ipc_rd *r, struct cred_account_view *v);
void	keeper_put_tmpl(struct ipc_buf *b, const struct vault_account *a);
void	keeper_get_tmpl(struct ipc_rd *r, struct vault_account *a);

#endif
