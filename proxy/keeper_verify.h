/*
 * keeper_verify.h: admin logins checked inside the vault keeper
 * (KEEPER_ADMIN_VERIFY). The admin process sends a user name and a
 * password; the keeper answers OK or FAILED (or BUSY), and the name as
 * stored. The Argon2id hash never leaves the keeper. One Argon2id run takes
 * 0.1-0.5 s, too long for the keeper's loop, which answers every process:
 * the check runs on a thread of the keeper that sees only a copy of the
 * hash and of the password, and the answer goes out from the loop.
 */
#ifndef SMTPVAULT_KEEPER_VERIFY_H
#define SMTPVAULT_KEEPER_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "vault.h"

struct event_base;
struct credstore;
struct ipc;

#define KEEPER_VERIFY_MAX	8	/* logins checked or waiting at once; more: BUSY */

/* The answer's result (u32), then the stored name (string, "" unless OK). */
enum keeper_verify_result {
	KEEPER_VERIFY_FAILED = 0,
	KEEPER_VERIFY_OK = 1,
	KEEPER_VERIFY_BUSY = 2,
};

/* The request: name (string, 1 .. VAULT_NAME_MAX - 1 bytes), password
 * (bytes, 1 .. VAULT_SECRET_MAX). */
#define KEEPER_VERIFY_REQ_MIN	(2 + 1 + 2 + 1)
#define KEEPER_VERIFY_REQ_MAX	(2 + VAULT_NAME_MAX + 2 + VAULT_SECRET_MAX)
#define KEEPER_VERIFY_REPLY_MAX	(4 + 2 + VAULT_NAME_MAX)

struct keeper_verifier;

/* Start the checking thread; NULL when it cannot be started. */
struct keeper_verifier *keeper_verifier_new(struct event_base *base);
/* Stop it (a check under way finishes first); unanswered checks are dropped
 * and wiped. */
void	keeper_verifier_free(struct keeper_verifier *kv);

/*
 * Check password for name against cs's admin users (prepared here, on the
 * loop: a copy of the hash, or of a dummy one for an unknown name so that
 * timing does not tell). The answer to request id goes out on ipc later;
 * at once when KEEPER_VERIFY_MAX checks wait already (BUSY). A channel that
 * has closed meanwhile gets nothing.
 */
void	keeper_verifier_submit(struct keeper_verifier *kv, struct credstore *cs,
	    struct ipc *ipc, uint16_t type, uint32_t id, const char *name,
	    const unsigned char *password, size_t len);

#endif
