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

/* Pick up changes written by the CLI. Returns 1 if reloaded, 0 if unchanged,
 * -1 on error (the old contents stay in use). Cheap enough for a 1 s timer. */
int	credstore_maybe_reload(struct credstore *cs);

/* Record account events (a refused credential) in this audit log. */
void	credstore_set_audit(struct credstore *cs, struct audit *a);

/* The audit chain key (derived from the vault master key). */
int	credstore_audit_key(struct credstore *cs, unsigned char out[VAULT_KEY_BYTES]);

#endif
