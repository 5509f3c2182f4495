/*
 * routing.c: the routing rules of SPEC section 4; see routing.h for the
 * order in which they apply and why a configured account that does not
 * exist defers mail instead of bouncing it.
 */
#include "routing.h"

#include <string.h>
#include <strings.h>

int
routing_sender_allowed(const struct client_cfg *client, const char *sender)
{
	const char *at;
	size_t i;

	if (client == NULL || client->n_senders == 0)
		return 1;
	at = strrchr(sender, '@');
	for (i = 0; i < client->n_senders; i++) {
		const char *e = client->senders[i];

		if (e[0] == '*' && e[1] == '@') {
			if (at != NULL && at != sender && strcasecmp(at + 1, e + 2) == 0)
				return 1;
		} else if (sender[0] != '\0' && strcasecmp(sender, e) == 0) {
			return 1;
		}
	}
	return 0;
}

int
routing_account_allowed(const struct client_cfg *client, const char *account)
{
	size_t i;

	if (client == NULL || client->n_accounts == 0)
		return 1;
	for (i = 0; i < client->n_accounts; i++)
		if (strcasecmp(client->accounts[i], account) == 0)
			return 1;
	return 0;
}

/*
 * May the client use account (a primary address), reached through name (the
 * sender or a configured address)? The `accounts` list may name the account
 * or any of its aliases, so entries that match neither directly are resolved.
 */
static int
routing_may_use(const struct client_cfg *client, const char *account,
    const char *name, routing_resolve_fn *resolve, void *arg)
{
	char other[VAULT_ADDR_MAX];
	size_t i;

	if (routing_account_allowed(client, account) ||
	    routing_account_allowed(client, name))
		return 1;
	for (i = 0; i < client->n_accounts; i++)
		if (resolve(arg, client->accounts[i], other, sizeof(other)) == CRED_OK &&
		    strcasecmp(other, account) == 0)
			return 1;
	return 0;
}

/* A configured account (or alias) to its primary address. */
static enum routing_result
routing_configured(const char *name, routing_resolve_fn *resolve, void *arg,
    char *account, size_t len, const char **why)
{
	switch (resolve(arg, name, account, len)) {
	case CRED_OK:
		return ROUTE_OK;
	case CRED_PERMFAIL:
		*why = "configured account is not in the vault";
		return ROUTE_TEMPFAIL;
	case CRED_TEMPFAIL:
	default:
		*why = "account lookup failed";
		return ROUTE_TEMPFAIL;
	}
}

enum routing_result
routing_route(const struct config *cfg, const struct client_cfg *client,
    const char *sender, routing_resolve_fn *resolve, void *arg, char *account,
    size_t len, const char **why)
{
	const char *dummy;

	if (why == NULL)
		why = &dummy;
	*why = "";
	if (len > 0)
		account[0] = '\0';

	if (!routing_sender_allowed(client, sender)) {
		*why = "sender not in the client's senders list";
		return ROUTE_SENDER_REFUSED;
	}

	if (sender[0] != '\0') {
		switch (resolve(arg, sender, account, len)) {
		case CRED_OK:
			if (routing_may_use(client, account, sender, resolve, arg)) {
				*why = "sender is an account";
				return ROUTE_OK;
			}
			break;
		case CRED_PERMFAIL:
			break;
		case CRED_TEMPFAIL:
		default:
			*why = "account lookup failed";
			return ROUTE_TEMPFAIL;
		}
		if (len > 0)
			account[0] = '\0';
	}

	if (client != NULL && client->account[0] != '\0') {
		enum routing_result r = routing_configured(client->account, resolve,
		    arg, account, len, why);

		if (r == ROUTE_OK)
			*why = "client's account";
		return r;
	}

	if (cfg->default_account[0] != '\0') {
		enum routing_result r = routing_configured(cfg->default_account,
		    resolve, arg, account, len, why);

		if (r != ROUTE_OK)
			return r;
		if (routing_may_use(client, account, cfg->default_account,
		    resolve, arg)) {
			*why = "default account";
			return ROUTE_OK;
		}
		if (len > 0)
			account[0] = '\0';
	}

	*why = "no account for this sender";
	return ROUTE_NO_ACCOUNT;
}
