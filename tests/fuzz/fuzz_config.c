/*
 * fuzz_config.c: libFuzzer harness for the configuration parser
 * (config_parse() of proxy/config.h) on an in-memory text.
 *
 * Input: the text of a configuration file (up to the first NUL: config_load()
 * refuses NUL bytes before config_parse() sees the text). Properties:
 *  - a refusal is one line "NAME:LINE: what" or "NAME: what";
 *  - an accepted configuration holds only values inside the limits of the
 *    table in config.c (spot checks of every kind of key), NUL-terminated
 *    strings, absolute paths, at least one listen address, and clients that
 *    each have a network;
 *  - config_client_for() answers for IPv4 and IPv6 peers without reading
 *    outside the tables;
 *  - parsing the same text twice gives the same verdict (no hidden state).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "config.h"

#include "fuzz_util.h"

#define NAME	"/etc/smtpvault/fuzz.conf"

#define TERMINATED(field)	(memchr((field), '\0', sizeof(field)) != NULL)

static void
check_path(const char *p, size_t size)
{
	FUZZ_CHECK(memchr(p, '\0', size) != NULL, "path not terminated");
	FUZZ_CHECK(p[0] == '\0' || p[0] == '/', "path %s is not absolute", p);
}

static void
check_config(const struct config *c)
{
	size_t i;

	check_path(c->vault_path, sizeof(c->vault_path));
	FUZZ_CHECK(c->vault_path[0] != '\0', "empty vault path");
	check_path(c->passphrase_file, sizeof(c->passphrase_file));
	check_path(c->key_file, sizeof(c->key_file));
	check_path(c->spool_dir, sizeof(c->spool_dir));
	check_path(c->smtp_tls_cert, sizeof(c->smtp_tls_cert));
	check_path(c->smtp_tls_key, sizeof(c->smtp_tls_key));
	check_path(c->upstream_ca_file, sizeof(c->upstream_ca_file));
	check_path(c->admin_tls_cert, sizeof(c->admin_tls_cert));
	check_path(c->admin_tls_key, sizeof(c->admin_tls_key));
	check_path(c->audit_path, sizeof(c->audit_path));
	FUZZ_CHECK(!(c->passphrase_file[0] != '\0' && c->key_file[0] != '\0'),
	    "passphrase_file and key_file both accepted");
	FUZZ_CHECK((c->smtp_tls_cert[0] == '\0') == (c->smtp_tls_key[0] == '\0'),
	    "half a TLS pair accepted");

	FUZZ_CHECK(c->n_listen >= 1 && c->n_listen <= CONFIG_MAX_LISTEN, "%zu listen",
	    c->n_listen);
	for (i = 0; i < c->n_listen; i++) {
		FUZZ_CHECK(TERMINATED(c->listen[i].text), "listen text not terminated");
		FUZZ_CHECK(c->listen[i].sslen > 0 &&
		    c->listen[i].sslen <= sizeof(c->listen[i].ss), "listen sslen");
	}
	FUZZ_CHECK(TERMINATED(c->hostname) && c->hostname[0] != '\0', "hostname");
	FUZZ_CHECK(c->n_trusted <= CONFIG_MAX_NETS, "%zu trusted", c->n_trusted);
	FUZZ_CHECK(c->max_message_size >= 1024 && c->max_message_size <= 1024ull *
	    1024 * 1024, "max_message_size %llu", (unsigned long long)c->max_message_size);
	FUZZ_CHECK(c->max_recipients >= 1 && c->max_recipients <= 10000,
	    "max_recipients %llu", (unsigned long long)c->max_recipients);
	FUZZ_CHECK(c->max_connections >= 1 && c->max_connections <= 100000,
	    "max_connections");
	FUZZ_CHECK(c->smtp_timeout >= 1 && c->smtp_timeout <= 3600, "timeout %llu",
	    (unsigned long long)c->smtp_timeout);
	FUZZ_CHECK(c->delivery == DELIVERY_QUEUE || c->delivery == DELIVERY_DIRECT,
	    "delivery %d", (int)c->delivery);
	FUZZ_CHECK(c->upstream_tls == UPSTREAM_TLS_STARTTLS ||
	    c->upstream_tls == UPSTREAM_TLS_IMPLICIT, "upstream tls");
	FUZZ_CHECK(c->upstream_port >= 1, "upstream port 0");
	FUZZ_CHECK(TERMINATED(c->upstream_host) && c->upstream_host[0] != '\0',
	    "upstream host");
	FUZZ_CHECK(c->n_retry >= 1 && c->n_retry <= CONFIG_MAX_RETRY, "%zu retry steps",
	    c->n_retry);
	for (i = 0; i < c->n_retry; i++)
		FUZZ_CHECK(c->retry_schedule[i] > 0, "retry step %zu is 0", i);
	FUZZ_CHECK(TERMINATED(c->default_account), "default_account");
	FUZZ_CHECK(c->log_subject == 0 || c->log_subject == 1, "log_subject %d",
	    c->log_subject);

	FUZZ_CHECK(c->n_clients <= CONFIG_MAX_CLIENTS, "%zu clients", c->n_clients);
	for (i = 0; i < c->n_clients; i++) {
		const struct client_cfg *cl = &c->clients[i];
		size_t j;

		FUZZ_CHECK(TERMINATED(cl->name) && cl->name[0] != '\0', "client name");
		FUZZ_CHECK(cl->n_nets >= 1 && cl->n_nets <= CONFIG_MAX_NETS,
		    "client %s has %zu networks", cl->name, cl->n_nets);
		FUZZ_CHECK(cl->n_accounts <= CONFIG_MAX_LIST &&
		    cl->n_senders <= CONFIG_MAX_LIST, "client lists");
		for (j = 0; j < cl->n_accounts; j++)
			FUZZ_CHECK(TERMINATED(cl->accounts[j]) &&
			    strchr(cl->accounts[j], '@') != NULL, "client account");
		for (j = 0; j < cl->n_senders; j++)
			FUZZ_CHECK(TERMINATED(cl->senders[j]) &&
			    strchr(cl->senders[j], '@') != NULL, "client sender");
		FUZZ_CHECK(cl->rate_count == 0 || cl->rate_period > 0, "rate %llu/%llu",
		    (unsigned long long)cl->rate_count,
		    (unsigned long long)cl->rate_period);
	}
}

static void
check_lookup(const struct config *c)
{
	static const char *const v4[] = { "127.0.0.1", "10.0.5.9", "192.168.1.1",
		"0.0.0.0", "255.255.255.255" };
	static const char *const v6[] = { "::1", "fe80::1", "2001:db8::42" };
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const struct client_cfg *cl;
	size_t i;
	int trusted;

	for (i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		inet_pton(AF_INET, v4[i], &sin.sin_addr);
		cl = config_client_for(c, (struct sockaddr *)&sin, &trusted);
		FUZZ_CHECK(cl == NULL || (cl >= c->clients && cl < c->clients +
		    c->n_clients), "client outside the table");
		FUZZ_CHECK(cl == NULL || !trusted, "client and trusted at once");
	}
	for (i = 0; i < sizeof(v6) / sizeof(v6[0]); i++) {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		inet_pton(AF_INET6, v6[i], &sin6.sin6_addr);
		cl = config_client_for(c, (struct sockaddr *)&sin6, &trusted);
		FUZZ_CHECK(cl == NULL || (cl >= c->clients && cl < c->clients +
		    c->n_clients), "client outside the table");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg, again;	/* large: keep them off the stack */
	char err[1024], err2[1024];
	char *text = fuzz_dup(data, size, 1);
	int rc, rc2;

	err[0] = '\0';
	rc = config_parse(NAME, text, &cfg, err, sizeof(err));
	if (rc == 0) {
		check_config(&cfg);
		check_lookup(&cfg);
	} else {
		FUZZ_CHECK(rc == -1, "rc %d", rc);
		FUZZ_CHECK(strncmp(err, NAME ":", strlen(NAME) + 1) == 0,
		    "error does not start with the file name: %s", err);
		FUZZ_CHECK(strchr(err, '\n') == NULL, "error of more than one line: %s",
		    err);
		FUZZ_CHECK(cfg.clients == NULL, "clients left allocated after an error");
	}
	/* Only small texts twice: the pair would halve the speed. */
	if (size < 512) {
		err2[0] = '\0';
		rc2 = config_parse(NAME, text, &again, err2, sizeof(err2));
		FUZZ_CHECK(rc2 == rc && (rc == 0 || strcmp(err, err2) == 0),
		    "second parse differs: %d/%d %s / %s", rc, rc2, err, err2);
		config_free(&again);
	}
	config_free(&cfg);
	free(text);
	return 0;
}
