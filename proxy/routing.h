/*
 * routing.h: which account sends a message (SPEC section 4). A pure function
 * of the configuration, the client, the envelope sender and a resolver that
 * maps an address or alias to its account (credstore_resolve() in the
 * daemon, a table in the tests).
 *
 * For client C (NULL: an anonymous host of trusted_networks) and envelope
 * sender S:
 *  1. If C has a `senders` list, S must match one entry: the address itself
 *     or "*@domain", compared without regard to case. Otherwise
 *     ROUTE_SENDER_REFUSED ("550 5.7.1 sender <S> not allowed for client C").
 *  2. If S is an account's address or alias and C may use that account (its
 *     `accounts` list names the account or one of its aliases; an empty list
 *     allows all), that account.
 *  3. Else C's `account`, if set.
 *  4. Else `default_account`, if set and C may use it.
 *  5. Else ROUTE_NO_ACCOUNT ("550 5.7.1 no sending account for <S>").
 * The account of steps 3 and 4 is resolved too, so that an alias in the
 * configuration routes to its primary address; if it names no account in
 * the vault, the message is deferred (ROUTE_TEMPFAIL, 451 4.3.0): it is the
 * operator's mistake, and mail should wait rather than bounce. A resolver
 * TEMPFAIL is ROUTE_TEMPFAIL as well.
 */
#ifndef SMTPVAULT_ROUTING_H
#define SMTPVAULT_ROUTING_H

#include <stddef.h>

#include "config.h"
#include "credential.h"

enum routing_result {
	ROUTE_OK = 0,
	ROUTE_SENDER_REFUSED,	/* 550 5.7.1 */
	ROUTE_NO_ACCOUNT,	/* 550 5.7.1 */
	ROUTE_TEMPFAIL,		/* 451 4.3.0 */
};

/* Map addr (an address or alias) to its account's primary address. */
typedef enum cred_result routing_resolve_fn(void *arg, const char *addr,
	    char *account, size_t len);

/*
 * Route sender (without <>, "" for the null sender). On ROUTE_OK account
 * holds the primary address of the account to use. why (may be NULL) gets a
 * short static reason for logs.
 */
enum routing_result routing_route(const struct config *cfg,
	    const struct client_cfg *client, const char *sender,
	    routing_resolve_fn *resolve, void *arg, char *account, size_t len,
	    const char **why);

/* Does sender match one of the client's `senders` entries (or is the list
 * empty)? */
int	routing_sender_allowed(const struct client_cfg *client, const char *sender);

/* Does the client's `accounts` list name this address (no alias lookup)?
 * NULL client or an empty list: yes. */
int	routing_account_allowed(const struct client_cfg *client, const char *account);

#endif
