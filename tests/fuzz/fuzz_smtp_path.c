/*
 * fuzz_smtp_path.c: libFuzzer harness for address and path parsing
 * (smtp_parse_mailbox() and the paths of MAIL FROM / RCPT TO in
 * proxy/smtp_parse.h) and for the routing decision taken on the envelope
 * sender (proxy/routing.h), with a fixed configuration and account table.
 *
 * Input: 1 byte of flags (SMTPUTF8), then the address (up to the first NUL,
 * as the session's C strings end there). Properties:
 *  - smtp_parse_mailbox() reads only the len octets it is given (the copy
 *    has no terminator: ASan sees an over-read);
 *  - the mailbox check and the path parsers agree: an address the checker
 *    accepts is accepted, unchanged, inside "FROM:<...>" and "TO:<...>", and
 *    one it refuses as a routing trick is refused there too;
 *  - routing never picks an account outside the table, never lets a client
 *    with a `senders` list send as a sender outside it, and never routes a
 *    restricted client to an account it may not use.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "routing.h"
#include "smtp_parse.h"

#include "fuzz_util.h"

static const char config_text[] =
	"[smtp]\n"
	"hostname = relay.test.lan\n"
	"default_account = team@example.com\n"
	"[client \"restricted\"]\n"
	"networks = 10.0.0.0/8\n"
	"account = ops@example.com\n"
	"accounts = ops@example.com\n"
	"senders = alerts@example.com, *@ops.example.com\n"
	"[client \"open\"]\n"
	"networks = 10.1.0.0/16\n"
	"senders = *@example.com, someone@example.net\n";

/* name -> primary address, as credstore_resolve() answers. */
static const struct {
	const char	*name;
	const char	*account;
} table[] = {
	{ "team@example.com", "team@example.com" },
	{ "sales@example.com", "team@example.com" },
	{ "info@example.net", "team@example.com" },
	{ "ops@example.com", "ops@example.com" },
	{ "alerts@example.com", "ops@example.com" },
};

static struct config cfg;
static int cfg_ready;

static enum cred_result
resolve(void *arg, const char *addr, char *account, size_t len)
{
	size_t i;

	(void)arg;
	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcasecmp(addr, table[i].name) == 0) {
			if (strlen(table[i].account) >= len)
				return CRED_TEMPFAIL;
			memcpy(account, table[i].account, strlen(table[i].account) + 1);
			return CRED_OK;
		}
	}
	return CRED_PERMFAIL;
}

static void
setup(void)
{
	char err[1024];

	if (cfg_ready)
		return;
	if (config_parse("/etc/smtpvault/fuzz.conf", config_text, &cfg, err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_smtp_path: fixed configuration refused: %s\n", err);
		abort();
	}
	FUZZ_CHECK(cfg.n_clients == 2, "%zu clients", cfg.n_clients);
	cfg_ready = 1;
}

static void
check_route(const struct client_cfg *client, const char *sender)
{
	char account[VAULT_ADDR_MAX];
	const char *why = NULL;
	enum routing_result r;

	r = routing_route(&cfg, client, sender, resolve, NULL, account, sizeof(account),
	    &why);
	FUZZ_CHECK(why != NULL, "no reason");
	switch (r) {
	case ROUTE_OK:
		FUZZ_CHECK(strcmp(account, "team@example.com") == 0 ||
		    strcmp(account, "ops@example.com") == 0,
		    "routed to %s, which is not an account", account);
		FUZZ_CHECK(routing_sender_allowed(client, sender),
		    "sender %s routed although outside the senders list", sender);
		if (client != NULL && strcmp(client->name, "restricted") == 0)
			FUZZ_CHECK(strcmp(account, "ops@example.com") == 0,
			    "restricted client routed to %s", account);
		break;
	case ROUTE_SENDER_REFUSED:
		FUZZ_CHECK(!routing_sender_allowed(client, sender),
		    "sender %s refused although allowed", sender);
		break;
	case ROUTE_NO_ACCOUNT:
	case ROUTE_TEMPFAIL:
		FUZZ_CHECK(account[0] == '\0', "account %s left on failure", account);
		break;
	default:
		FUZZ_CHECK(0, "routing result %d", (int)r);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_mail_args m;
	char rcpt[SMTP_MAILBOX_MAX + 1], *exact, *cstr, *line;
	const char *why = NULL, *why2 = NULL;
	enum smtp_parse_status st, st_mail, st_rcpt;
	size_t len, i;
	int smtputf8;

	setup();
	smtputf8 = (int)(fuzz_take(&data, &size, 1) & 1);
	len = strnlen((const char *)data, size);
	exact = fuzz_dup(data, len, 0);
	cstr = fuzz_dup(data, len, 1);

	st = len > 0 ? smtp_parse_mailbox(exact, len, smtputf8, &why) : SMTP_PARSE_SYNTAX;
	if (st != SMTP_PARSE_OK && len > 0)
		FUZZ_CHECK(why != NULL && why[0] != '\0', "refusal without a reason");

	if ((line = malloc(len + 32)) == NULL)
		abort();
	snprintf(line, len + 32, "FROM:<%s>%s", cstr, smtputf8 ? " SMTPUTF8" : "");
	st_mail = smtp_parse_mail(line, &m, &why2);
	if (st == SMTP_PARSE_OK) {
		FUZZ_CHECK(st_mail == SMTP_PARSE_OK, "mailbox ok, MAIL refused: %s", why2);
		FUZZ_CHECK(strcmp(m.from, cstr) == 0, "MAIL changed the address");
	} else if (st == SMTP_PARSE_REFUSED && len <= SMTP_MAILBOX_MAX) {
		FUZZ_CHECK(st_mail != SMTP_PARSE_OK, "routing trick %s refused by the "
		    "mailbox check, accepted in MAIL FROM", cstr);
	}
	snprintf(line, len + 32, "TO:<%s>", cstr);
	st_rcpt = smtp_parse_rcpt(line, smtputf8, rcpt, sizeof(rcpt), &why2);
	if (st == SMTP_PARSE_OK) {
		FUZZ_CHECK(st_rcpt == SMTP_PARSE_OK, "mailbox ok, RCPT refused: %s", why2);
		FUZZ_CHECK(strcmp(rcpt, cstr) == 0, "RCPT changed the address");
	} else if (st == SMTP_PARSE_REFUSED && len <= SMTP_MAILBOX_MAX) {
		FUZZ_CHECK(st_rcpt != SMTP_PARSE_OK, "routing trick %s refused by the "
		    "mailbox check, accepted in RCPT TO", cstr);
	}

	/* Routing sees parsed senders in the daemon; any string must be safe. */
	check_route(NULL, cstr);
	for (i = 0; i < cfg.n_clients; i++)
		check_route(&cfg.clients[i], cstr);
	if (st_mail == SMTP_PARSE_OK)
		check_route(&cfg.clients[0], m.from);

	free(line);
	free(cstr);
	free(exact);
	return 0;
}
