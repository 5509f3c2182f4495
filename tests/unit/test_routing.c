/*
 * test_routing.c: every rule of SPEC section 4's routing (proxy/routing.c),
 * as a table: client, sender, what the vault knows, expected verdict and
 * account. The vault is a small table behind the resolver callback.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "routing.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))

/* The vault: accounts and their aliases. */
static const struct {
	const char *addr, *account;
} vault_table[] = {
	{ "team@example.com", "team@example.com" },
	{ "alerts@example.com", "alerts@example.com" },
	{ "noreply@example.com", "alerts@example.com" },	/* alias */
	{ "ceo@example.com", "ceo@example.com" },
	{ "info@example.com", "team@example.com" },		/* alias */
};

struct resolver {
	int	tempfail;
	int	calls;
};

static enum cred_result
fake_resolve(void *arg, const char *addr, char *account, size_t len)
{
	struct resolver *r = arg;
	size_t i;

	r->calls++;
	if (r->tempfail)
		return CRED_TEMPFAIL;
	for (i = 0; i < N(vault_table); i++) {
		if (strcasecmp(vault_table[i].addr, addr) == 0) {
			snprintf(account, len, "%s", vault_table[i].account);
			return CRED_OK;
		}
	}
	return CRED_PERMFAIL;
}

enum { C_ANON, C_PLAIN, C_WITH_ACCOUNT, C_RESTRICTED, C_SENDERS, C_BAD_ACCOUNT,
    C_ALIAS_LIST, C_ALIAS_ACCOUNT, C_COUNT };

static struct client_cfg *clients;

static void
clients_make(void)
{
	struct client_cfg *c;

	clients = calloc(C_COUNT, sizeof(*clients));
	assert_non_null(clients);

	c = &clients[C_PLAIN];
	snprintf(c->name, sizeof(c->name), "plain");

	c = &clients[C_WITH_ACCOUNT];
	snprintf(c->name, sizeof(c->name), "monitoring");
	snprintf(c->account, sizeof(c->account), "alerts@example.com");

	c = &clients[C_RESTRICTED];
	snprintf(c->name, sizeof(c->name), "restricted");
	snprintf(c->account, sizeof(c->account), "alerts@example.com");
	snprintf(c->accounts[0], sizeof(c->accounts[0]), "alerts@example.com");
	c->n_accounts = 1;

	c = &clients[C_SENDERS];
	snprintf(c->name, sizeof(c->name), "printers");
	snprintf(c->senders[0], sizeof(c->senders[0]), "Alerts@Example.com");
	snprintf(c->senders[1], sizeof(c->senders[1]), "*@ops.example.com");
	c->n_senders = 2;

	c = &clients[C_BAD_ACCOUNT];
	snprintf(c->name, sizeof(c->name), "broken");
	snprintf(c->account, sizeof(c->account), "gone@example.com");

	c = &clients[C_ALIAS_LIST];
	snprintf(c->name, sizeof(c->name), "aliaslist");
	snprintf(c->accounts[0], sizeof(c->accounts[0]), "noreply@example.com");
	c->n_accounts = 1;

	c = &clients[C_ALIAS_ACCOUNT];
	snprintf(c->name, sizeof(c->name), "aliasacct");
	snprintf(c->account, sizeof(c->account), "info@example.com");
}

struct route_case {
	const char	*what;
	int		 client;
	const char	*default_account;
	const char	*sender;
	int		 tempfail;
	enum routing_result want;
	const char	*account;
};

static void
test_routing_table(void **state)
{
	static const struct route_case cases[] = {
		/* rule 2: the sender is an account or an alias */
		{ "account address", C_ANON, "", "ceo@example.com", 0, ROUTE_OK, "ceo@example.com" },
		{ "case does not matter", C_ANON, "", "CEO@Example.COM", 0, ROUTE_OK, "ceo@example.com" },
		{ "alias", C_ANON, "", "noreply@example.com", 0, ROUTE_OK, "alerts@example.com" },
		{ "named client, any account", C_PLAIN, "team@example.com", "ceo@example.com", 0,
		    ROUTE_OK, "ceo@example.com" },
		{ "client's own account wins over default", C_WITH_ACCOUNT, "team@example.com",
		    "ceo@example.com", 0, ROUTE_OK, "ceo@example.com" },
		/* rule 2 with an accounts list */
		{ "allowed by accounts", C_RESTRICTED, "team@example.com", "noreply@example.com", 0,
		    ROUTE_OK, "alerts@example.com" },
		{ "not allowed: client's account", C_RESTRICTED, "team@example.com",
		    "ceo@example.com", 0, ROUTE_OK, "alerts@example.com" },
		{ "accounts list names an alias", C_ALIAS_LIST, "", "noreply@example.com", 0,
		    ROUTE_OK, "alerts@example.com" },
		{ "accounts list names an alias, account itself", C_ALIAS_LIST, "",
		    "alerts@example.com", 0, ROUTE_OK, "alerts@example.com" },
		/* rule 3: the client's account */
		{ "unknown sender, client account", C_WITH_ACCOUNT, "team@example.com",
		    "script@host.lan", 0, ROUTE_OK, "alerts@example.com" },
		{ "null sender, client account", C_WITH_ACCOUNT, "team@example.com", "", 0,
		    ROUTE_OK, "alerts@example.com" },
		{ "client account given as alias", C_ALIAS_ACCOUNT, "", "x@host.lan", 0,
		    ROUTE_OK, "team@example.com" },
		{ "client account not in vault", C_BAD_ACCOUNT, "team@example.com",
		    "x@host.lan", 0, ROUTE_TEMPFAIL, "" },
		/* rule 4: default_account */
		{ "anonymous, default", C_ANON, "team@example.com", "printer@host.lan", 0,
		    ROUTE_OK, "team@example.com" },
		{ "named without account, default", C_PLAIN, "team@example.com",
		    "printer@host.lan", 0, ROUTE_OK, "team@example.com" },
		{ "null sender, default", C_ANON, "team@example.com", "", 0, ROUTE_OK,
		    "team@example.com" },
		{ "default given as alias", C_ANON, "info@example.com", "x@host.lan", 0,
		    ROUTE_OK, "team@example.com" },
		{ "default not in vault", C_ANON, "gone@example.com", "x@host.lan", 0,
		    ROUTE_TEMPFAIL, "" },
		{ "default not allowed by accounts", C_ALIAS_LIST, "team@example.com",
		    "x@host.lan", 0, ROUTE_NO_ACCOUNT, "" },
		/* rule 5 */
		{ "nothing at all", C_ANON, "", "printer@host.lan", 0, ROUTE_NO_ACCOUNT, "" },
		{ "nothing, null sender", C_PLAIN, "", "", 0, ROUTE_NO_ACCOUNT, "" },
		{ "account not allowed, nothing else", C_ALIAS_LIST, "", "ceo@example.com", 0,
		    ROUTE_NO_ACCOUNT, "" },
		/* rule 1: senders list */
		{ "senders: exact", C_SENDERS, "team@example.com", "alerts@example.com", 0,
		    ROUTE_OK, "alerts@example.com" },
		{ "senders: case", C_SENDERS, "team@example.com", "ALERTS@example.COM", 0,
		    ROUTE_OK, "alerts@example.com" },
		{ "senders: domain", C_SENDERS, "team@example.com", "cron@OPS.example.com", 0,
		    ROUTE_OK, "team@example.com" },
		{ "senders: subdomain is not the domain", C_SENDERS, "team@example.com",
		    "cron@sub.ops.example.com", 0, ROUTE_SENDER_REFUSED, "" },
		{ "senders: suffix is not the domain", C_SENDERS, "team@example.com",
		    "cron@xops.example.com", 0, ROUTE_SENDER_REFUSED, "" },
		{ "senders: an account is still refused", C_SENDERS, "team@example.com",
		    "ceo@example.com", 0, ROUTE_SENDER_REFUSED, "" },
		{ "senders: null sender refused", C_SENDERS, "team@example.com", "", 0,
		    ROUTE_SENDER_REFUSED, "" },
		{ "senders: refusal needs no lookup", C_SENDERS, "", "x@y.example", 1,
		    ROUTE_SENDER_REFUSED, "" },
		/* lookups that fail for now */
		{ "tempfail on the sender", C_ANON, "team@example.com", "ceo@example.com", 1,
		    ROUTE_TEMPFAIL, "" },
		{ "tempfail on the default", C_ANON, "team@example.com", "", 1, ROUTE_TEMPFAIL, "" },
	};
	size_t i;

	clients_make();
	for (i = 0; i < N(cases); i++) {
		const struct route_case *c = &cases[i];
		struct config *cfg = calloc(1, sizeof(*cfg));
		struct resolver res = { c->tempfail, 0 };
		char account[VAULT_ADDR_MAX];
		const char *why = NULL;
		enum routing_result r;

		assert_non_null(cfg);
		snprintf(cfg->default_account, sizeof(cfg->default_account), "%s",
		    c->default_account);
		memset(account, 'x', sizeof(account));
		r = routing_route(cfg, c->client == C_ANON ? NULL : &clients[c->client],
		    c->sender, fake_resolve, &res, account, sizeof(account), &why);
		if (r != c->want || (r == ROUTE_OK && strcmp(account, c->account) != 0))
			fail_msg("%s: result %d account \"%s\" (%s)", c->what, (int)r,
			    r == ROUTE_OK ? account : "", why ? why : "-");
		assert_non_null(why);
		if (r != ROUTE_OK)
			assert_string_equal(account, "");
		if (c->want == ROUTE_SENDER_REFUSED)
			assert_int_equal(res.calls, 0);
		free(cfg);
	}
	free(clients);
}

static void
test_routing_helpers(void **state)
{
	struct client_cfg *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	assert_true(routing_sender_allowed(NULL, "anything@x"));
	assert_true(routing_sender_allowed(c, ""));
	assert_true(routing_account_allowed(NULL, "a@b"));
	assert_true(routing_account_allowed(c, "a@b"));

	snprintf(c->senders[0], sizeof(c->senders[0]), "*@example.com");
	c->n_senders = 1;
	assert_true(routing_sender_allowed(c, "a@example.com"));
	assert_false(routing_sender_allowed(c, "@example.com"));
	assert_false(routing_sender_allowed(c, "a@example.com.evil"));
	assert_false(routing_sender_allowed(c, "example.com"));
	assert_false(routing_sender_allowed(c, ""));
	/* the last '@' decides the domain */
	assert_false(routing_sender_allowed(c, "\"a@example.com\"@evil.example"));

	snprintf(c->accounts[0], sizeof(c->accounts[0]), "A@B");
	c->n_accounts = 1;
	assert_true(routing_account_allowed(c, "a@b"));
	assert_false(routing_account_allowed(c, "a@c"));
	free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routing_table),
		cmocka_unit_test(test_routing_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
