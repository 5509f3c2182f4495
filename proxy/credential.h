/*
 * credential.h: the narrow lookup interface between the proxy and the vault,
 * in the spirit of OpenSMTPD's lka: the SMTP side asks "which account is this
 * address" and the relay asks "give me this account's current credential",
 * and each answer is OK, TEMPFAIL or PERMFAIL. Nothing outside credential.c
 * touches the vault while the daemon runs; a later process split moves this
 * interface behind IPC without changing its callers.
 */
#ifndef SMTPVAULT_CREDENTIAL_H
#define SMTPVAULT_CREDENTIAL_H

#include <stddef.h>
#include <stdint.h>

#include "vault.h"

enum cred_result { CRED_OK = 0, CRED_TEMPFAIL = 1, CRED_PERMFAIL = 2 };

/* Non-secret facts about an account that routing and delivery need. */
struct cred_info {
	char		address[VAULT_ADDR_MAX];
	char		upstream_host[VAULT_HOST_MAX];	/* "" = [upstream] host */
	uint16_t	upstream_port;			/* 0 = [upstream] port */
	int		upstream_tls;			/* -1 = [upstream] tls */
	uint64_t	daily_limit;
	uint64_t	daily_rcpt_limit;
	uint32_t	version;			/* current credential version */
	uint32_t	status;				/* enum vault_status */
};

/* A credential handed out for one upstream login; wipe it after AUTH. */
struct cred {
	char			user[VAULT_ADDR_MAX];
	uint32_t		version;
	struct vault_secret	secret;
};

struct credstore;
struct audit;

/* Takes ownership of v (opened read-only, or for_update == 0). */
struct credstore *credstore_new(struct vault *v);
/* A client of the vault keeper over the IPC channel fd (taken over):
 * the same answers, but the vault, its key and the audit key stay in the
 * keeper (keeper.h). */
struct credstore *credstore_connect(int fd);
/* For a connected store: an audit writer whose appends the keeper makes;
 * NULL otherwise. */
struct audit *credstore_audit_forwarder(struct credstore *cs);
/* An audit writer with a keeper channel of its own (fd, taken over), for
 * another thread: the queue's I/O thread. The channel may only append and
 * reopen. */
struct audit *credstore_audit_channel(int fd);
void	credstore_free(struct credstore *cs);

/* Map an address or alias to its account's primary address. */
enum cred_result credstore_resolve(struct credstore *cs, const char *addr,
	    char *account, size_t len);
enum cred_result credstore_info(struct credstore *cs, const char *account,
	    struct cred_info *out);
/* Copy the account's current credential into guarded memory. */
enum cred_result credstore_fetch(struct credstore *cs, const char *account,
	    struct cred *out);
void	cred_wipe(struct cred *c);

/* The upstream refused (or accepted) this credential version: flag the
 * account for the operator, or clear the flag. */
void	credstore_report_auth(struct credstore *cs, const char *account,
	    uint32_t version, int ok, const char *reply);

/* The vault and audit half of credstore_report_auth() (the keeper's). */
void	credstore_record_auth(struct credstore *cs, const char *account,
	    uint32_t version, int ok, const char *reply);

/* Pick up changes written by the CLI. Returns 1 if reloaded, 0 if unchanged,
 * -1 on error (the old contents stay in use). Cheap enough for a 1 s timer. */
int	credstore_maybe_reload(struct credstore *cs);

/* Record account events (a refused credential) in this audit log. */
void	credstore_set_audit(struct credstore *cs, struct audit *a);

/* The audit chain key (derived from the vault master key). */
int	credstore_audit_key(struct credstore *cs, unsigned char out[VAULT_KEY_BYTES]);

/* Is the vault usable? 0, or -1 with why (the last reload failed: file
 * missing, damaged, re-keyed); GET /healthz answers 503 then. */
int	credstore_healthy(struct credstore *cs, char *err, size_t errlen);

/*
 * ---- For the admin API ---------------------------------------------------
 * Account changes made by the daemon itself (admin page): each one takes
 * the vault lock (vault_begin_update, re-reading the file so that CLI
 * changes are kept), changes the account, records an account event in the
 * audit log (by "admin:<user>", from ip) and saves; an action that cannot be
 * recorded does not happen. Run on the event-loop thread only.
 */
enum cred_admin_result {
	CRED_ADMIN_OK = 0,
	CRED_ADMIN_NOT_FOUND,		/* no such account */
	CRED_ADMIN_EXISTS,		/* add: the address or an alias is taken */
	CRED_ADMIN_INVALID,		/* bad address, alias, limit or secret */
	CRED_ADMIN_NO_PREVIOUS,		/* rollback: no earlier version kept */
	CRED_ADMIN_UNAVAILABLE,		/* vault busy or unwritable, audit log unwritable */
};

/* What the admin page may see of an account: never a secret. */
struct cred_account_view {
	struct cred_info info;
	char		aliases[VAULT_MAX_ALIASES][VAULT_ADDR_MAX];
	size_t		n_aliases;
	int64_t		created;
	int64_t		rotated;
	uint32_t	versions[VAULT_MAX_VERSIONS];	/* ascending */
	int64_t		version_created[VAULT_MAX_VERSIONS];
	size_t		n_versions;
};

size_t	credstore_account_count(struct credstore *cs);
/* 0, or -1 past the end. */
int	credstore_account_view(struct credstore *cs, size_t i, struct cred_account_view *out);

/* tmpl as for vault_account_add(). */
enum cred_admin_result credstore_account_add(struct credstore *cs,
	    const struct vault_account *tmpl, const struct vault_secret *secret,
	    const char *by, const char *ip, char *err, size_t errlen);
enum cred_admin_result credstore_account_rotate(struct credstore *cs, const char *addr,
	    const struct vault_secret *secret, const char *by, const char *ip,
	    uint32_t *version, char *err, size_t errlen);
enum cred_admin_result credstore_account_rollback(struct credstore *cs, const char *addr,
	    const char *by, const char *ip, uint32_t *version, char *err, size_t errlen);
enum cred_admin_result credstore_account_remove(struct credstore *cs, const char *addr,
	    const char *by, const char *ip, char *err, size_t errlen);

/*
 * Admin login. The admin process asks the keeper (credstore_admin_verify),
 * which checks (user, password) against the stored Argon2id hash and
 * answers OK or not: the hash never leaves the keeper. The answer comes
 * from a later turn of base's loop: cb(arg, result, name), name as stored
 * when OK. Returns 0, or -1 (not a keeper's client; out of memory), and cb
 * is then never called. cancel: the caller behind arg went away.
 */
enum cred_login { CRED_LOGIN_FAILED = 0, CRED_LOGIN_OK = 1, CRED_LOGIN_BUSY = 2 };
typedef void cred_login_cb(void *arg, enum cred_login res, const char *name);
struct event_base;
int	credstore_admin_verify(struct credstore *cs, struct event_base *base,
	    const char *name, const struct vault_secret *password, cred_login_cb *cb,
	    void *arg);
void	credstore_admin_verify_cancel(struct credstore *cs, void *arg);

/*
 * The keeper's side of it. vault_admin_verify() costs one Argon2id run
 * (0.1-0.5 s), too long for the keeper's loop, and must not read the vault
 * while the loop may reload it. So: prepare (loop thread) copies the user's
 * hash, which stays in the keeper, or a fixed dummy hash when there is no
 * such user (same cost, so timing does not tell whether a name exists); run
 * (any thread) checks the password against the copy; wipe clears both.
 */
struct cred_admin_check {
	char			name[VAULT_NAME_MAX];
	char			hash[VAULT_HASH_MAX];
	int			exists;
	struct vault_secret	password;	/* the caller fills it (guarded memory) */
	int			ok;		/* result of run */
};
void	credstore_admin_check_prepare(struct credstore *cs, const char *name,
	    struct cred_admin_check *chk);
void	cred_admin_check_run(struct cred_admin_check *chk);
void	cred_admin_check_wipe(struct cred_admin_check *chk);

/* Record an admin event (login, logout, login_failed) in the audit log;
 * action is an enum audit_admin_action; reason (may be NULL) is added for
 * failures. 0 or -1 with err. */
int	credstore_admin_audit(struct credstore *cs, int action, const char *user,
	    const char *ip, const char *reason, char *err, size_t errlen);

#endif
