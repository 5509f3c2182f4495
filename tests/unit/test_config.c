/*
 * test_config.c: the configuration loader of SPEC section 3. In-memory texts
 * go through config_parse(); valid ones are checked field by field, invalid
 * ones must give exactly the expected "file:line: message".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define NAME	"/etc/smtpvault/smtpvault.conf"

static struct config cfg;

static int
parse_ok(const char *text)
{
	char err[1024] = "";

	if (config_parse(NAME, text, &cfg, err, sizeof(err)) == -1) {
		print_error("unexpected error: %s\nfor text:\n%s\n", err, text);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	config_free(&cfg);
	return 0;
}

static void
test_defaults(void **state)
{
	char host[256];
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;

	assert_int_equal(parse_ok(""), 0);
	assert_string_equal(cfg.file, NAME);
	assert_string_equal(cfg.vault_path, "/var/lib/smtpvault/vault");
	assert_string_equal(cfg.passphrase_file, "");
	assert_string_equal(cfg.key_file, "");
	assert_int_equal(cfg.n_listen, 2);
	assert_string_equal(cfg.listen[0].text, "0.0.0.0:2525");
	sin = (struct sockaddr_in *)&cfg.listen[0].ss;
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 2525);
	assert_string_equal(cfg.listen[1].text, "[::]:2525");
	sin6 = (struct sockaddr_in6 *)&cfg.listen[1].ss;
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(cfg.listen[1].sslen, sizeof(*sin6));
	if (gethostname(host, sizeof(host)) == 0 && host[0] != '\0')
		assert_string_equal(cfg.hostname, host);
	assert_int_equal(cfg.n_trusted, 2);
	assert_int_equal(cfg.trusted[0].family, AF_INET);
	assert_int_equal(cfg.trusted[0].prefix, 8);
	assert_int_equal(cfg.trusted[1].family, AF_INET6);
	assert_int_equal(cfg.trusted[1].prefix, 128);
	assert_int_equal(cfg.max_message_size, 35 * 1024 * 1024);
	assert_int_equal(cfg.max_recipients, 100);
	assert_int_equal(cfg.max_connections, 1000);
	assert_int_equal(cfg.max_connections_per_ip, 50);
	assert_int_equal(cfg.smtp_timeout, 300);
	assert_int_equal(cfg.delivery, DELIVERY_QUEUE);
	assert_string_equal(cfg.spool_dir, "/var/spool/smtpvault");
	assert_string_equal(cfg.default_account, "");
	assert_string_equal(cfg.smtp_tls_cert, "");
	assert_string_equal(cfg.smtp_tls_key, "");
	assert_int_equal(cfg.n_clients, 0);
	assert_null(cfg.clients);
	assert_string_equal(cfg.upstream_host, "smtp.gmail.com");
	assert_int_equal(cfg.upstream_port, 587);
	assert_int_equal(cfg.upstream_tls, UPSTREAM_TLS_STARTTLS);
	assert_string_equal(cfg.upstream_ca_file, "");
	assert_int_equal(cfg.upstream_timeout, 60);
	assert_int_equal(cfg.max_sessions_per_account, 3);
	assert_int_equal(cfg.n_retry, 4);
	assert_int_equal(cfg.retry_schedule[0], 60);
	assert_int_equal(cfg.retry_schedule[1], 300);
	assert_int_equal(cfg.retry_schedule[2], 900);
	assert_int_equal(cfg.retry_schedule[3], 3600);
	assert_int_equal(cfg.queue_lifetime, 5 * 86400);
	assert_string_equal(cfg.admin_listen.text, "127.0.0.1:8025");
	assert_string_equal(cfg.audit_path, "/var/lib/smtpvault/audit.log");
	assert_int_equal(cfg.log_subject, 1);
}

/* The example of SPEC section 3, with its comments, verbatim. */
static const char spec_example[] =
    "[vault]\n"
    "path = /var/lib/smtpvault/vault\n"
    "passphrase_file = /etc/smtpvault/passphrase   # or key_file =\n"
    "\n"
    "[smtp]\n"
    "listen = 0.0.0.0:2525, [::]:2525\n"
    "hostname = relay.example.lan\n"
    "trusted_networks = 127.0.0.0/8, ::1/128      # shorthand for an anonymous client \"lan\"\n"
    "max_message_size = 35M\n"
    "max_recipients = 100\n"
    "max_connections = 1000\n"
    "timeout = 5m                                  # idle timeout per command\n"
    "delivery = queue                              # queue | direct\n"
    "spool_dir = /var/spool/smtpvault\n"
    "default_account = team@example.com\n"
    "tls_cert =                                    # optional: offer STARTTLS to LAN clients\n"
    "tls_key =\n"
    "\n"
    "[client \"monitoring\"]                         # named clients, for policy and for the audit log\n"
    "networks = 10.0.5.0/24, 10.0.6.7\n"
    "account = alerts@example.com                  # this client's default account\n"
    "accounts = alerts@example.com, team@example.com   # optional: accounts it may use (default all)\n"
    "senders = alerts@example.com, *@ops.example.com   # optional envelope-sender allow-list\n"
    "rate_limit = 600/hour                         # optional, messages\n"
    "\n"
    "[upstream]\n"
    "host = smtp.gmail.com\n"
    "port = 587\n"
    "tls = starttls                                # starttls | implicit (port 465)\n"
    "ca_file =                                     # default: system trust store\n"
    "timeout = 60s\n"
    "max_sessions_per_account = 3\n"
    "retry_schedule = 1m, 5m, 15m, 1h              # queue mode; last step repeats\n"
    "queue_lifetime = 5d\n"
    "\n"
    "[admin]\n"
    "listen = 127.0.0.1:8025\n"
    "tls_cert =\n"
    "tls_key =\n"
    "\n"
    "[audit]\n"
    "path = /var/lib/smtpvault/audit.log\n"
    "log_subject = yes\n";

static void
test_spec_example(void **state)
{
	const struct client_cfg *c;

	assert_int_equal(parse_ok(spec_example), 0);
	assert_string_equal(cfg.passphrase_file, "/etc/smtpvault/passphrase");
	assert_string_equal(cfg.hostname, "relay.example.lan");
	assert_string_equal(cfg.default_account, "team@example.com");
	assert_string_equal(cfg.smtp_tls_cert, "");
	assert_string_equal(cfg.upstream_ca_file, "");
	assert_int_equal(cfg.delivery, DELIVERY_QUEUE);
	assert_int_equal(cfg.upstream_tls, UPSTREAM_TLS_STARTTLS);
	assert_int_equal(cfg.n_clients, 1);
	c = &cfg.clients[0];
	assert_string_equal(c->name, "monitoring");
	assert_int_equal(c->line, 19);
	assert_int_equal(c->n_nets, 2);
	assert_int_equal(c->nets[0].prefix, 24);
	assert_int_equal(c->nets[1].prefix, 32);
	assert_string_equal(c->account, "alerts@example.com");
	assert_int_equal(c->n_accounts, 2);
	assert_string_equal(c->accounts[0], "alerts@example.com");
	assert_string_equal(c->accounts[1], "team@example.com");
	assert_int_equal(c->n_senders, 2);
	assert_string_equal(c->senders[0], "alerts@example.com");
	assert_string_equal(c->senders[1], "*@ops.example.com");
	assert_int_equal(c->rate_count, 600);
	assert_int_equal(c->rate_period, 3600);
}

/* Valid one-key texts and the field they set. */
struct value_case {
	const char	*text;
	size_t		 off;		/* uint64_t field in struct config */
	uint64_t	 want;
};

#define F(f)	offsetof(struct config, f)

static void
test_values(void **state)
{
	static const struct value_case cases[] = {
		{ "[smtp]\nmax_message_size = 1K\n", F(max_message_size), 1024 },
		{ "[smtp]\nmax_message_size = 1024\n", F(max_message_size), 1024 },
		{ "[smtp]\nmax_message_size = 1G\n", F(max_message_size), 1 << 30 },
		{ "[smtp]\nmax_message_size = 10m\n", F(max_message_size), 10 << 20 },
		{ "[smtp]\nmax_recipients = 1\n", F(max_recipients), 1 },
		{ "[smtp]\nmax_recipients = 10000\n", F(max_recipients), 10000 },
		{ "[smtp]\nmax_connections = 100000\n", F(max_connections), 100000 },
		{ "[smtp]\nmax_connections_per_ip = 5\n", F(max_connections_per_ip), 5 },
		{ "[smtp]\ntimeout = 1s\n", F(smtp_timeout), 1 },
		{ "[smtp]\ntimeout = 1h\n", F(smtp_timeout), 3600 },
		{ "[smtp]\ntimeout = 90\n", F(smtp_timeout), 90 },
		{ "[upstream]\ntimeout = 10m\n", F(upstream_timeout), 600 },
		{ "[upstream]\nmax_sessions_per_account = 1\n",
		    F(max_sessions_per_account), 1 },
		{ "[upstream]\nqueue_lifetime = 1m\n", F(queue_lifetime), 60 },
		{ "[upstream]\nqueue_lifetime = 30d\n", F(queue_lifetime), 30 * 86400 },
		/* Whitespace, indentation, CRLF, ';' and '#' comments. */
		{ "  [smtp]  \n\tmax_recipients\t=\t7\t\n", F(max_recipients), 7 },
		{ "[smtp]\r\nmax_recipients = 8\r\n", F(max_recipients), 8 },
		{ "[smtp]\nmax_recipients = 9 ; comment\n", F(max_recipients), 9 },
		{ "[smtp]\nmax_recipients = 9\t# comment\n", F(max_recipients), 9 },
		{ "# c\n; c\n[smtp] # c\n  # indented comment\nmax_recipients=3\n",
		    F(max_recipients), 3 },
		{ "[smtp]\nmax_recipients = 4", F(max_recipients), 4 },
		{ "\xef\xbb\xbf[smtp]\nmax_recipients = 5\n", F(max_recipients), 5 },
		/* Indented keys are keys, not continuations of the key before. */
		{ "[smtp]\n  timeout = 2m\n  max_recipients = 6\n",
		    F(max_recipients), 6 },
	};
	size_t i;
	uint64_t v;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		if (parse_ok(cases[i].text) == -1)
			fail();
		memcpy(&v, (char *)&cfg + cases[i].off, sizeof(v));
		if (v != cases[i].want)
			fail_msg("case %zu: got %llu, want %llu", i,
			    (unsigned long long)v, (unsigned long long)cases[i].want);
		config_free(&cfg);
	}
}

static void
test_enums_and_bools(void **state)
{
	static const struct {
		const char *value;
		int want;
	} bools[] = {
		{ "yes", 1 }, { "no", 0 }, { "true", 1 }, { "false", 0 },
		{ "on", 1 }, { "off", 0 }, { "1", 1 }, { "0", 0 }, { "YES", 1 },
		{ "Off", 0 },
	};
	char text[128];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bools); i++) {
		snprintf(text, sizeof(text), "[audit]\nlog_subject = %s\n",
		    bools[i].value);
		assert_int_equal(parse_ok(text), 0);
		assert_int_equal(cfg.log_subject, bools[i].want);
		config_free(&cfg);
	}
	assert_int_equal(parse_ok("[smtp]\ndelivery = direct\n"
	    "[upstream]\ntls = implicit\nport = 465\n"), 0);
	assert_int_equal(cfg.delivery, DELIVERY_DIRECT);
	assert_int_equal(cfg.upstream_tls, UPSTREAM_TLS_IMPLICIT);
	assert_int_equal(cfg.upstream_port, 465);
}

static void
test_lists(void **state)
{
	const struct sockaddr_in6 *sin6;

	assert_int_equal(parse_ok(
	    "[smtp]\n"
	    "listen = 127.0.0.1:2525 ,[::1]:2525,   *:25\n"
	    "trusted_networks = 10.0.0.0/8,192.168.1.0/24 , fd00::/8\n"
	    "[upstream]\n"
	    "retry_schedule = 30s,2m , 1h, 7d\n"), 0);
	assert_int_equal(cfg.n_listen, 3);
	assert_string_equal(cfg.listen[0].text, "127.0.0.1:2525");
	assert_string_equal(cfg.listen[1].text, "[::1]:2525");
	sin6 = (const struct sockaddr_in6 *)&cfg.listen[1].ss;
	assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	assert_string_equal(cfg.listen[2].text, "*:25");
	assert_int_equal(cfg.n_trusted, 3);
	assert_int_equal(cfg.trusted[2].family, AF_INET6);
	assert_int_equal(cfg.n_retry, 4);
	assert_int_equal(cfg.retry_schedule[0], 30);
	assert_int_equal(cfg.retry_schedule[1], 120);
	assert_int_equal(cfg.retry_schedule[2], 3600);
	assert_int_equal(cfg.retry_schedule[3], 7 * 86400);
	config_free(&cfg);

	/* An empty trusted_networks leaves only [client] sections. */
	assert_int_equal(parse_ok("[smtp]\ntrusted_networks =\n"), 0);
	assert_int_equal(cfg.n_trusted, 0);
	config_free(&cfg);

	/* 16 retry steps are allowed. */
	assert_int_equal(parse_ok("[upstream]\nretry_schedule = 1s,2s,3s,4s,5s,"
	    "6s,7s,8s,9s,10s,11s,12s,13s,14s,15s,16s\n"), 0);
	assert_int_equal(cfg.n_retry, 16);
	assert_int_equal(cfg.retry_schedule[15], 16);
}

static void
test_clients(void **state)
{
	const struct client_cfg *c;

	assert_int_equal(parse_ok(
	    "[client \"a.b_c-1\"]\n"
	    "networks = 10.0.5.0/24\n"
	    "rate_limit = 10/second\n"
	    "\n"
	    "[client\"b\"]\n"
	    "networks = fd00::/8\n"
	    "rate_limit = 5 / MIN\n"
	    "senders = *@example.com\n"
	    "[ client   \"c\" ]\n"
	    "networks = 10.0.7.1\n"
	    "rate_limit = 100/d\n"
	    "accounts = a@example.com\n"
	    "[client \"d\"]\n"
	    "networks = 10.0.8.0/24\n"
	    "rate_limit =\n"), 0);
	assert_int_equal(cfg.n_clients, 4);
	c = &cfg.clients[0];
	assert_string_equal(c->name, "a.b_c-1");
	assert_int_equal(c->line, 1);
	assert_int_equal(c->rate_count, 10);
	assert_int_equal(c->rate_period, 1);
	assert_int_equal(c->n_accounts, 0);
	assert_int_equal(c->n_senders, 0);
	assert_string_equal(c->account, "");
	c = &cfg.clients[1];
	assert_string_equal(c->name, "b");
	assert_int_equal(c->line, 5);
	assert_int_equal(c->rate_count, 5);
	assert_int_equal(c->rate_period, 60);
	assert_int_equal(c->n_senders, 1);
	c = &cfg.clients[2];
	assert_string_equal(c->name, "c");
	assert_int_equal(c->rate_period, 86400);
	assert_int_equal(c->n_accounts, 1);
	c = &cfg.clients[3];
	assert_int_equal(c->rate_count, 0);
}

static void
test_rate_units(void **state)
{
	static const struct {
		const char *value;
		uint64_t count, period;
	} cases[] = {
		{ "600/hour", 600, 3600 }, { "600/h", 600, 3600 },
		{ "600/hr", 600, 3600 }, { "1/second", 1, 1 }, { "1/s", 1, 1 },
		{ "1/sec", 1, 1 }, { "2/minute", 2, 60 }, { "2/m", 2, 60 },
		{ "2/min", 2, 60 }, { "3/day", 3, 86400 }, { "3/d", 3, 86400 },
		{ "1000000/Hour", 1000000, 3600 },
	};
	char text[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(text, sizeof(text), "[client \"x\"]\nnetworks = 10.0.0.1\n"
		    "rate_limit = %s\n", cases[i].value);
		assert_int_equal(parse_ok(text), 0);
		assert_int_equal(cfg.clients[0].rate_count, cases[i].count);
		assert_int_equal(cfg.clients[0].rate_period, cases[i].period);
		config_free(&cfg);
	}
}

static void
test_relative_paths(void **state)
{
	char err[512], cwd[PATH_MAX], want[PATH_MAX + 64];
	static const char text[] =
	    "[vault]\npath = state/vault\nkey_file = ../keys/vault.key\n"
	    "[smtp]\nspool_dir = /abs/spool\n"
	    "[audit]\npath = ./audit.log\n";

	assert_int_equal(config_parse("/etc/sv/sv.conf", text, &cfg, err,
	    sizeof(err)), 0);
	assert_string_equal(cfg.vault_path, "/etc/sv/state/vault");
	assert_string_equal(cfg.key_file, "/etc/sv/../keys/vault.key");
	assert_string_equal(cfg.spool_dir, "/abs/spool");
	assert_string_equal(cfg.audit_path, "/etc/sv/./audit.log");
	config_free(&cfg);

	assert_int_equal(config_parse("/sv.conf", text, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.vault_path, "/state/vault");
	config_free(&cfg);

	/* A relative config file name is made absolute with the current directory. */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(config_parse("deploy/dev/smtpvault.conf", text, &cfg,
	    err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/deploy/dev/state/vault", cwd);
	assert_string_equal(cfg.vault_path, want);
	config_free(&cfg);

	assert_int_equal(config_parse("sv.conf", text, &cfg, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/state/vault", cwd);
	assert_string_equal(cfg.vault_path, want);
	config_free(&cfg);

	assert_int_equal(config_parse("./sv.conf", text, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.vault_path, want);
}

/* Invalid texts and the exact error. */
struct error_case {
	const char	*text;
	const char	*err;
};

#define E(line, msg)	NAME ":" #line ": " msg

static const struct error_case error_cases[] = {
	/* Structure. */
	{ "[smtp]\nfoo = 1\n", E(2, "unknown key 'foo' in [smtp]") },
	{ "[smtp]\nlisten = 127.0.0.1:25\n[admin]\nfoo = 1\n",
	    E(4, "unknown key 'foo' in [admin]") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nhost = x\n",
	    E(3, "unknown key 'host' in [client \"m\"]") },
	{ "[smtp]\nmax recipients = 1\n",
	    E(2, "unknown key 'max recipients' in [smtp]") },
	{ "[smtp]\nListen = 127.0.0.1:25\n", E(2, "unknown key 'Listen' in [smtp]") },
	{ "[smtp]\n[foo]\n", E(2, "unknown section [foo]") },
	{ "[foo]\nbar = 1\n", E(1, "unknown section [foo]") },
	{ "[vault]\n\n# only a comment\n[clients]\n", E(4, "unknown section [clients]") },
	{ "[smtp\n", E(1, "a section header must end with ']'") },
	{ "[smtp] x\n", E(1, "a section header must end with ']'") },
	{ "[smtp]\n[vault]\n[smtp]\n", E(3, "duplicate section [smtp] (first at line 1)") },
	{ "[client]\n", E(1, "a client section needs a name: [client \"NAME\"]") },
	{ "[client monitoring]\n", E(1, "a client section needs a name: [client \"NAME\"]") },
	{ "[client \"\"]\n", E(1, "bad client name \"\" (1 to 63 of A-Z a-z 0-9 . _ -)") },
	{ "[client \"a b\"]\n", E(1, "bad client name \"a b\" (1 to 63 of A-Z a-z 0-9 . _ -)") },
	{ "[client \"0123456789012345678901234567890123456789012345678901234567890123\"]\n",
	    E(1, "bad client name \"0123456789012345678901234567890123456789012345678901234567890123\" "
	    "(1 to 63 of A-Z a-z 0-9 . _ -)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\n[client \"m\"]\n",
	    E(3, "duplicate section [client \"m\"] (first at line 1)") },
	{ "foo = 1\n", E(1, "key 'foo' outside any section") },
	{ "[smtp]\njust words\n", E(2, "expected 'key = value', '[section]' or a comment") },
	{ "[smtp]\n= 5\n", E(2, "missing key name before '='") },
	{ "[smtp]\nmax_recipients: 5\n", E(2, "expected 'key = value', '[section]' or a comment") },
	{ "[smtp]\nmax_recipients = 5\nmax_recipients = 6\n",
	    E(3, "duplicate key 'max_recipients' in [smtp] (first at line 2)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nnetworks = 10.0.0.2\n",
	    E(3, "duplicate key 'networks' in [client \"m\"] (first at line 2)") },
	{ "[smtp]\nmax_recipients = 5\x01\n", E(2, "control character in line") },
	{ "[smtp]\nmax_r\xc3\xa9" "cipients = 5\n", E(2, "unknown key 'max_r??cipients' in [smtp]") },
	/* The first error in the file wins, whichever check finds it. */
	{ "[smtp]\ntimeout = 5x\n[nope]\n", E(2, "[smtp] timeout = 5x: not a duration (e.g. 30s, 5m, 2h, 1d)") },
	{ "[nope]\n[smtp]\ntimeout = 5x\n", E(1, "unknown section [nope]") },

	/* Values. */
	{ "[smtp]\ntimeout = 5x\n", E(2, "[smtp] timeout = 5x: not a duration (e.g. 30s, 5m, 2h, 1d)") },
	{ "[smtp]\ntimeout = 0\n", E(2, "[smtp] timeout = 0: must be between 1s and 1h") },
	{ "[smtp]\ntimeout = 61m\n", E(2, "[smtp] timeout = 61m: must be between 1s and 1h") },
	{ "[smtp]\ntimeout =\n", E(2, "[smtp] timeout must not be empty") },
	{ "[audit]\nlog_subject =   # say yes\n", E(2, "[audit] log_subject must not be empty") },
	{ "[smtp]\ntimeout = 99999999999999999999d\n",
	    E(2, "[smtp] timeout = 99999999999999999999d: not a duration (e.g. 30s, 5m, 2h, 1d)") },
	{ "[upstream]\ntimeout = 11m\n", E(2, "[upstream] timeout = 11m: must be between 1s and 10m") },
	{ "[upstream]\nqueue_lifetime = 59s\n",
	    E(2, "[upstream] queue_lifetime = 59s: must be between 1m and 30d") },
	{ "[upstream]\nqueue_lifetime = 31d\n",
	    E(2, "[upstream] queue_lifetime = 31d: must be between 1m and 30d") },
	{ "[smtp]\nmax_message_size = 1023\n",
	    E(2, "[smtp] max_message_size = 1023: must be between 1K and 1G") },
	{ "[smtp]\nmax_message_size = 1025M\n",
	    E(2, "[smtp] max_message_size = 1025M: must be between 1K and 1G") },
	{ "[smtp]\nmax_message_size = 10MB\n",
	    E(2, "[smtp] max_message_size = 10MB: not a size (e.g. 512K, 10M, 1G)") },
	{ "[smtp]\nmax_recipients = 0\n",
	    E(2, "[smtp] max_recipients = 0: must be between 1 and 10000") },
	{ "[smtp]\nmax_recipients = 10001\n",
	    E(2, "[smtp] max_recipients = 10001: must be between 1 and 10000") },
	{ "[smtp]\nmax_recipients = -1\n", E(2, "[smtp] max_recipients = -1: not a number") },
	{ "[smtp]\nmax_recipients = 18446744073709551616\n",
	    E(2, "[smtp] max_recipients = 18446744073709551616: not a number") },
	{ "[smtp]\nmax_connections = 100001\n",
	    E(2, "[smtp] max_connections = 100001: must be between 1 and 100000") },
	{ "[upstream]\nport = 0\n", E(2, "[upstream] port = 0: must be between 1 and 65535") },
	{ "[upstream]\nport = 65536\n", E(2, "[upstream] port = 65536: must be between 1 and 65535") },
	{ "[upstream]\ntls = ssl\n", E(2, "[upstream] tls = ssl: must be starttls or implicit") },
	{ "[upstream]\nhost = smtp gmail\n", E(2, "[upstream] host = smtp gmail: not a valid host name") },
	{ "[upstream]\nhost =\n", E(2, "[upstream] host must not be empty") },
	{ "[smtp]\ndelivery = later\n", E(2, "[smtp] delivery = later: must be queue or direct") },
	{ "[audit]\nlog_subject = maybe\n", E(2, "[audit] log_subject = maybe: must be yes or no") },
	{ "[smtp]\nhostname = under_score.lan\n",
	    E(2, "[smtp] hostname = under_score.lan: not a valid host name") },
	{ "[smtp]\nhostname = 10.0.0.1\n", E(2, "[smtp] hostname = 10.0.0.1: not a valid host name") },
	{ "[smtp]\ndefault_account = team\n",
	    E(2, "[smtp] default_account = team: not an e-mail address (local@domain)") },
	{ "[smtp]\ndefault_account = a@b@c\n",
	    E(2, "[smtp] default_account = a@b@c: not an e-mail address (local@domain)") },
	{ "[smtp]\ndefault_account = *@example.com\n",
	    E(2, "[smtp] default_account = *@example.com: not an e-mail address (local@domain)") },
	{ "[smtp]\ndefault_account = <a@example.com>\n",
	    E(2, "[smtp] default_account = <a@example.com>: not an e-mail address (local@domain)") },
	{ "[vault]\npath =\n", E(2, "[vault] path must not be empty") },
	{ "[smtp]\nlisten =\n", E(2, "[smtp] listen must not be empty") },
	{ "[smtp]\nlisten = 127.0.0.1\n",
	    E(2, "[smtp] listen: '127.0.0.1' is not an address:port (e.g. 0.0.0.0:2525, [::]:2525, *:25)") },
	{ "[smtp]\nlisten = localhost:25\n",
	    E(2, "[smtp] listen: 'localhost:25' is not an address:port (e.g. 0.0.0.0:2525, [::]:2525, *:25)") },
	{ "[smtp]\nlisten = 127.0.0.1:25, 127.0.0.1:25\n",
	    E(2, "[smtp] listen: '127.0.0.1:25' is listed twice") },
	{ "[smtp]\nlisten = 127.0.0.1:25,\n", E(2, "[smtp] listen: empty entry in the list") },
	{ "[smtp]\nlisten = *:1,*:2,*:3,*:4,*:5,*:6,*:7,*:8,*:9,*:10,*:11,*:12,*:13,"
	    "*:14,*:15,*:16,*:17\n",
	    E(2, "[smtp] listen: too many entries (at most 16)") },
	{ "[admin]\nlisten = 127.0.0.1:8025, [::1]:8025\n",
	    E(2, "[admin] listen: too many entries (at most 1)") },
	{ "[smtp]\ntrusted_networks = 10.0.5.1/24\n",
	    E(2, "[smtp] trusted_networks: '10.0.5.1/24' is not a network (an IPv4 or IPv6 "
	    "address, optionally /prefix with the host bits zero)") },
	{ "[upstream]\nretry_schedule =\n", E(2, "[upstream] retry_schedule must not be empty") },
	{ "[upstream]\nretry_schedule = 1m, 0s\n",
	    E(2, "[upstream] retry_schedule: '0s' must be between 1s and 7d") },
	{ "[upstream]\nretry_schedule = 1m, 8d\n",
	    E(2, "[upstream] retry_schedule: '8d' must be between 1s and 7d") },
	{ "[upstream]\nretry_schedule = 1m,,5m\n", E(2, "[upstream] retry_schedule: empty entry in the list") },
	{ "[upstream]\nretry_schedule = 1m, soon\n",
	    E(2, "[upstream] retry_schedule: 'soon' is not a duration (e.g. 30s, 5m, 2h, 1d)") },
	{ "[upstream]\nretry_schedule = 1s,2s,3s,4s,5s,6s,7s,8s,9s,10s,11s,12s,13s,14s,15s,16s,17s\n",
	    E(2, "[upstream] retry_schedule: too many entries (at most 16)") },

	/* Open relays. */
	{ "[smtp]\ntrusted_networks = 127.0.0.0/8, 0.0.0.0/0\n",
	    E(2, "0.0.0.0/0 would make smtpvault an open relay") },
	{ "[smtp]\ntrusted_networks = ::/0\n", E(2, "::/0 would make smtpvault an open relay") },
	{ "[smtp]\ntrusted_networks = [::]/0\n", E(2, "::/0 would make smtpvault an open relay") },
	{ "[smtp]\ntrusted_networks = ::ffff:0.0.0.0/96\n",
	    E(2, "0.0.0.0/0 would make smtpvault an open relay") },
	{ "[client \"all\"]\nnetworks = 0.0.0.0/0\n",
	    E(2, "0.0.0.0/0 would make smtpvault an open relay") },
	{ "[client \"all\"]\n\nnetworks = 10.0.0.0/8, ::/0\n",
	    E(3, "::/0 would make smtpvault an open relay") },

	/* Clients. */
	{ "[client \"m\"]\naccount = a@example.com\n", E(1, "[client \"m\"] needs networks") },
	{ "[client \"m\"]\n", E(1, "[client \"m\"] needs networks") },
	{ "[client \"m\"]\nnetworks =\n", E(2, "[client \"m\"] networks must not be empty") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\naccount = nobody\n",
	    E(3, "[client \"m\"] account = nobody: not an e-mail address (local@domain)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\naccounts = a@example.com, b\n",
	    E(3, "[client \"m\"] accounts: 'b' is not an e-mail address (local@domain)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\naccounts = *@example.com\n",
	    E(3, "[client \"m\"] accounts: '*@example.com' is not an e-mail address (local@domain)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nsenders = a@example.com, *@\n",
	    E(3, "[client \"m\"] senders: '*@' is not an e-mail address (local@domain or *@domain)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nsenders = a@example.com,\n",
	    E(3, "[client \"m\"] senders: empty entry in the list") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nrate_limit = 600\n",
	    E(3, "[client \"m\"] rate_limit = 600: expected N/second, N/minute, N/hour or N/day (e.g. 600/hour)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nrate_limit = 600/week\n",
	    E(3, "[client \"m\"] rate_limit = 600/week: expected N/second, N/minute, N/hour or N/day (e.g. 600/hour)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nrate_limit = x/hour\n",
	    E(3, "[client \"m\"] rate_limit = x/hour: expected N/second, N/minute, N/hour or N/day (e.g. 600/hour)") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\nrate_limit = 0/hour\n",
	    E(3, "[client \"m\"] rate_limit = 0/hour: the count must be between 1 and 1000000") },
	{ "[client \"m\"]\nnetworks = 10.0.0.1\naccount = c@example.com\n"
	    "accounts = a@example.com, b@example.com\n",
	    E(4, "[client \"m\"] account c@example.com is not in its accounts list") },

	/* Keys that only make sense together. */
	{ "[vault]\nkey_file = /k\npassphrase_file = /p\n",
	    E(3, "[vault] passphrase_file and key_file are both set; keep only one") },
	{ "[vault]\npassphrase_file = /p\n\nkey_file = /k\n",
	    E(4, "[vault] passphrase_file and key_file are both set; keep only one") },
	{ "[smtp]\ntls_cert = /c.pem\n", E(2, "[smtp] tls_cert is set but tls_key is not (set both or neither)") },
	{ "[smtp]\ntls_cert = /c.pem\ntls_key =\n",
	    E(2, "[smtp] tls_cert is set but tls_key is not (set both or neither)") },
	{ "[admin]\ntls_key = /k.pem\n", E(2, "[admin] tls_key is set but tls_cert is not (set both or neither)") },
};

static void
test_errors(void **state)
{
	char err[1024];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(error_cases); i++) {
		err[0] = '\0';
		if (config_parse(NAME, error_cases[i].text, &cfg, err,
		    sizeof(err)) != -1)
			fail_msg("case %zu accepted:\n%s", i, error_cases[i].text);
		if (strcmp(err, error_cases[i].err) != 0)
			fail_msg("case %zu:\n got: %s\nwant: %s", i, err,
			    error_cases[i].err);
		/* On error the config is left freed. */
		assert_null(cfg.clients);
		assert_int_equal(cfg.n_clients, 0);
	}
}

/* A line of exactly n bytes: "[smtp]" then a comment padded to length. */
static char *
text_with_line(size_t n, const char *eol)
{
	char *t;
	size_t i;

	assert_non_null(t = malloc(n + 64));
	snprintf(t, n + 64, "[smtp]%s#", eol);
	for (i = 1; i < n; i++)
		strlcat(t, "x", n + 64);
	strlcat(t, eol, n + 64);
	strlcat(t, "foo = 1", n + 64);
	strlcat(t, eol, n + 64);
	return t;
}

static void
test_long_lines(void **state)
{
	char err[256], *t;

	/* 198 bytes is the limit, with either line ending. */
	t = text_with_line(CONFIG_LINE_MAX, "\n");
	assert_int_equal(config_parse(NAME, t, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, E(3, "unknown key 'foo' in [smtp]"));
	free(t);
	t = text_with_line(CONFIG_LINE_MAX, "\r\n");
	assert_int_equal(config_parse(NAME, t, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, E(3, "unknown key 'foo' in [smtp]"));
	free(t);
	t = text_with_line(CONFIG_LINE_MAX + 1, "\n");
	assert_int_equal(config_parse(NAME, t, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, E(2, "line too long (at most 198 characters)"));
	free(t);
	t = text_with_line(1000, "\n");
	assert_int_equal(config_parse(NAME, t, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, E(2, "line too long (at most 198 characters)"));
	free(t);

	/* A long value on a valid key keeps its whole text. */
	t = malloc(256);
	assert_non_null(t);
	snprintf(t, 256, "[vault]\npath = /%0*d\n", CONFIG_LINE_MAX - 8, 0);
	assert_int_equal(strlen(strchr(t, '\n') + 1), CONFIG_LINE_MAX + 1);
	assert_int_equal(parse_ok(t), 0);
	assert_int_equal(strlen(cfg.vault_path), CONFIG_LINE_MAX - 7);
	free(t);
}

static void
test_client_for(void **state)
{
	static const struct {
		const char *ip;
		const char *client;	/* NULL: none */
		int trusted;
	} cases[] = {
		{ "10.0.5.9", "monitoring", 0 },
		{ "::ffff:10.0.5.9", "monitoring", 0 },
		{ "10.0.6.7", "monitoring", 0 },
		{ "10.0.6.8", "office", 0 },		/* the second client */
		{ "::ffff:10.0.6.8", "office", 0 },
		{ "fd00::25", "office", 0 },
		{ "127.0.0.1", NULL, 1 },
		{ "::ffff:127.0.0.1", NULL, 1 },
		{ "::1", NULL, 1 },
		{ "10.1.0.1", NULL, 0 },
		{ "::ffff:10.1.0.1", NULL, 0 },
		{ "2001:db8::1", NULL, 0 },
		{ "192.168.1.1", "later", 0 },
	};
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	const struct client_cfg *c;
	size_t i;
	int trusted;

	/* Overlapping networks: the first section in the file wins. */
	assert_int_equal(parse_ok(
	    "[client \"monitoring\"]\nnetworks = 10.0.5.0/24, 10.0.6.7\n"
	    "[client \"office\"]\nnetworks = 10.0.0.0/16, fd00::/8\n"
	    "[smtp]\ntrusted_networks = 127.0.0.0/8, ::1/128, 192.168.1.0/24\n"
	    "[client \"later\"]\nnetworks = 192.168.1.0/24\n"), 0);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		memset(&ss, 0, sizeof(ss));
		if (inet_pton(AF_INET, cases[i].ip, &sin->sin_addr) == 1)
			sin->sin_family = AF_INET;
		else {
			assert_int_equal(inet_pton(AF_INET6, cases[i].ip,
			    &sin6->sin6_addr), 1);
			sin6->sin6_family = AF_INET6;
		}
		trusted = -1;
		c = config_client_for(&cfg, (struct sockaddr *)&ss, &trusted);
		if (cases[i].client == NULL && c != NULL)
			fail_msg("%s: got client %s", cases[i].ip, c->name);
		if (cases[i].client != NULL && (c == NULL ||
		    strcmp(c->name, cases[i].client) != 0))
			fail_msg("%s: want client %s", cases[i].ip, cases[i].client);
		if (trusted != cases[i].trusted)
			fail_msg("%s: trusted %d", cases[i].ip, trusted);
	}
}

static void
test_load(void **state)
{
	char dir[] = "/tmp/test_config.XXXXXX", path[PATH_MAX], err[PATH_MAX + 128];
	char want[PATH_MAX + 128], *big;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/smtpvault.conf", dir);

	/* A missing file. */
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: cannot read (No such file or directory)", path);
	assert_string_equal(err, want);

	/* A file with relative paths and an error on line 3. */
	assert_non_null(f = fopen(path, "w"));
	fputs("[vault]\npath = state/vault\n", f);
	fclose(f);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/state/vault", dir);
	assert_string_equal(cfg.vault_path, want);
	assert_string_equal(cfg.file, path);
	config_free(&cfg);

	assert_non_null(f = fopen(path, "a"));
	fputs("bogus = 1\n", f);
	fclose(f);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:3: unknown key 'bogus' in [vault]", path);
	assert_string_equal(err, want);

	/* A NUL byte must not hide the rest of the file. */
	assert_non_null(f = fopen(path, "w"));
	fwrite("[vault]\n\0[nope]\n", 1, 16, f);
	fclose(f);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:2: NUL byte in line", path);
	assert_string_equal(err, want);

	/* More than 1 MiB. */
	assert_non_null(big = calloc(1, CONFIG_FILE_MAX + 1));
	memset(big, '\n', CONFIG_FILE_MAX + 1);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(fwrite(big, 1, CONFIG_FILE_MAX + 1, f), CONFIG_FILE_MAX + 1);
	fclose(f);
	free(big);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: too large (at most 1048576 bytes)", path);
	assert_string_equal(err, want);

	/* A directory. */
	unlink(path);
	assert_int_equal(config_load(dir, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: cannot read (Is a directory)", dir);
	assert_string_equal(err, want);
	assert_int_equal(rmdir(dir), 0);
}

/* The path of a file in the source tree (tests run from the repository root). */
static void
src_path(const char *rel, char *buf, size_t len)
{
	const char *root = getenv("SMTPVAULT_SRCDIR");

	snprintf(buf, len, "%s/%s", root != NULL ? root : ".", rel);
	if (access(buf, R_OK) == -1)
		fail_msg("%s: not found (run from the repository root or set "
		    "SMTPVAULT_SRCDIR)", buf);
}

/* The example documents every key with its default: loading it changes nothing. */
static void
test_example_file(void **state)
{
	struct config def;
	char err[1024], path[PATH_MAX];

	src_path("deploy/smtpvault.conf.example", path, sizeof(path));
	if (config_load(path, &cfg, err, sizeof(err)) == -1)
		fail_msg("%s", err);
	config_defaults(&def);
	memcpy(def.file, cfg.file, sizeof(def.file));
	assert_memory_equal(&def, &cfg, sizeof(def));
}

static void
test_dev_file(void **state)
{
	char err[1024], path[PATH_MAX];

	src_path("deploy/dev/smtpvault.conf", path, sizeof(path));
	if (config_load(path, &cfg, err, sizeof(err)) == -1)
		fail_msg("%s", err);
	/* State lives next to the file, with absolute paths. */
	assert_true(cfg.vault_path[0] == '/');
	assert_non_null(strstr(cfg.vault_path, "deploy/dev/state/vault"));
	assert_non_null(strstr(cfg.key_file, "deploy/dev/state/vault.key"));
	assert_non_null(strstr(cfg.spool_dir, "deploy/dev/state/spool"));
	assert_non_null(strstr(cfg.audit_path, "deploy/dev/state/audit.log"));
	assert_string_equal(cfg.passphrase_file, "");
	/* Loopback only. */
	assert_int_equal(cfg.n_listen, 2);
	assert_string_equal(cfg.listen[0].text, "127.0.0.1:2525");
	assert_string_equal(cfg.listen[1].text, "[::1]:2525");
	assert_string_equal(cfg.admin_listen.text, "127.0.0.1:8025");
	assert_int_equal(cfg.delivery, DELIVERY_DIRECT);
	assert_string_equal(cfg.default_account, "dev@example.com");
	assert_string_equal(cfg.upstream_host, "smtp.gmail.com");
	assert_int_equal(cfg.upstream_port, 587);
	assert_int_equal(cfg.upstream_tls, UPSTREAM_TLS_STARTTLS);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_defaults, teardown),
		cmocka_unit_test_teardown(test_spec_example, teardown),
		cmocka_unit_test_teardown(test_values, teardown),
		cmocka_unit_test_teardown(test_enums_and_bools, teardown),
		cmocka_unit_test_teardown(test_lists, teardown),
		cmocka_unit_test_teardown(test_clients, teardown),
		cmocka_unit_test_teardown(test_rate_units, teardown),
		cmocka_unit_test_teardown(test_relative_paths, teardown),
		cmocka_unit_test_teardown(test_errors, teardown),
		cmocka_unit_test_teardown(test_long_lines, teardown),
		cmocka_unit_test_teardown(test_client_for, teardown),
		cmocka_unit_test_teardown(test_load, teardown),
		cmocka_unit_test_teardown(test_example_file, teardown),
		cmocka_unit_test_teardown(test_dev_file, teardown),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
