/*
 * cli_vault.c: the commands that work on the vault file: init, account
 * add/list/rotate/rollback/remove/test, admin-user add/remove/list, rekey.
 * Every write opens the vault for update (exclusive lock), changes it and
 * saves it atomically; an error leaves the file as it was.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "cli.h"
#include "log.h"
#include "smtp_client.h"
#include "util.h"

#define GMAIL_HOST		"smtp.gmail.com"
#define GMAIL_APP_PW_LEN	16	/* Google shows "abcd efgh ijkl mnop" */

static int
help_requested(int argc, char **argv, const char *usage_line)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: %s\n", usage_line);
			return 1;
		}
	}
	return 0;
}

static int
parse_kdf(const char *s, enum vault_kdf *out)
{
	if (strcmp(s, "interactive") == 0)
		*out = VAULT_KDF_INTERACTIVE;
	else if (strcmp(s, "moderate") == 0)
		*out = VAULT_KDF_MODERATE;
	else if (strcmp(s, "sensitive") == 0)
		*out = VAULT_KDF_SENSITIVE;
	else
		return -1;
	return 0;
}

/*
 * Record the change in the audit log, then save, report and close; returns
 * the exit status. The event is written first: an action that cannot be
 * recorded does not happen (issue: "never unrecorded"); if the save fails
 * after that, the log holds an attempt that did not take effect, which the
 * command's exit status 1 and error line make plain.
 */
static int
save_and_close(struct cli *cli, struct vault *v, json_t *ev, const char *done_msg)
{
	char err[1024];
	int rc;

	if ((rc = cli_audit_record(cli, v, ev)) != EXIT_OK) {
		vault_close(v);
		return rc;
	}
	if (vault_save(v, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		rc = EXIT_FAILED;
	} else if (done_msg != NULL) {
		printf("%s\n", done_msg);
	}
	vault_close(v);
	return rc;
}

int
cmd_init(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault init [--kdf interactive|moderate|sensitive]";
	static const struct option opts[] = {
		{ "kdf", required_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 }
	};
	struct vault_keysrc src;
	enum vault_kdf kdf = VAULT_KDF_MODERATE;
	char err[1024];
	int ch, rc;

	if (help_requested(argc, argv, use))
		return EXIT_OK;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'k' || parse_kdf(optarg, &kdf) == -1) {
			cli_error("usage: %s", use);
			return EXIT_USAGE;
		}
	}
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		return rc;
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	if ((rc = cli_keysrc(cli, 1, &src)) != EXIT_OK)
		return rc;
	if (src.is_keyfile)
		kdf = VAULT_KDF_KEYFILE;
	rc = vault_create(cli->cfg.vault_path, &src, kdf, err, sizeof(err));
	vault_keysrc_wipe(&src);
	if (rc == -1) {
		cli_error("%s", err);
		return EXIT_FAILED;
	}
	printf("created vault %s\n", cli->cfg.vault_path);
	return EXIT_OK;
}

/* Where an account's upstream is: its own override, else [upstream]. */
static void
upstream_target_for(const struct config *cfg, const struct vault_account *a,
    struct upstream_target *t)
{
	memset(t, 0, sizeof(*t));
	strlcpy(t->host, a->upstream_host[0] != '\0' ? a->upstream_host : cfg->upstream_host,
	    sizeof(t->host));
	t->port = a->upstream_port != 0 ? a->upstream_port : cfg->upstream_port;
	t->tls = a->upstream_tls >= 0 ? (enum upstream_tls)a->upstream_tls : cfg->upstream_tls;
	strlcpy(t->ca_file, cfg->upstream_ca_file, sizeof(t->ca_file));
	t->timeout = cfg->upstream_timeout;
	strlcpy(t->helo, cfg->hostname, sizeof(t->helo));
}

/* Google's App Passwords are 16 letters; anything else is probably a typo
 * or the account's normal password, which Google refuses for SMTP. */
static void
warn_app_password_shape(const struct config *cfg, const struct vault_account *a,
    const struct vault_secret *s)
{
	const char *host = a->upstream_host[0] != '\0' ? a->upstream_host : cfg->upstream_host;
	const char *at = strrchr(a->address, '@');
	int gmail = strcasecmp(host, GMAIL_HOST) == 0 ||
	    (at != NULL && (strcasecmp(at + 1, "gmail.com") == 0 ||
	    strcasecmp(at + 1, "googlemail.com") == 0));
	size_t i;

	if (!gmail)
		return;
	for (i = 0; i < s->len; i++) {
		unsigned char c = s->buf[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			break;
	}
	if (s->len != GMAIL_APP_PW_LEN || i != s->len)
		fprintf(stderr, "smtpvault: warning: a Google App Password is 16 letters; "
		    "the one given for %s has %zu characters (is it the account's normal "
		    "password?)\n", a->address, s->len);
}

static int
read_app_password(const char *address, struct vault_secret *s)
{
	char prompt[VAULT_ADDR_MAX + 32];

	snprintf(prompt, sizeof(prompt), "App Password for %s: ", address);
	if (cli_read_secret(prompt, 1, s) == -1)
		return -1;
	s->len = vault_normalize_app_password(s->buf, s->len);
	s->buf[s->len] = '\0';
	if (s->len == 0) {
		cli_error("empty App Password");
		vault_secret_wipe(s);
		return -1;
	}
	return 0;
}

static int
account_add(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault account add ADDRESS [--alias A]... "
	    "[--daily-limit N] [--daily-recipient-limit N] [--upstream HOST:PORT] "
	    "[--tls starttls|implicit]";
	static const struct option opts[] = {
		{ "alias",			required_argument, NULL, 'a' },
		{ "daily-limit",		required_argument, NULL, 'd' },
		{ "daily-recipient-limit",	required_argument, NULL, 'r' },
		{ "upstream",			required_argument, NULL, 'u' },
		{ "tls",			required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 }
	};
	struct vault_account *tmpl;
	struct vault_secret secret = { NULL, 0 };
	struct vault *v = NULL;
	char err[1024], msg[VAULT_ADDR_MAX + 64];
	int ch, rc = EXIT_USAGE;

	if ((tmpl = calloc(1, sizeof(*tmpl))) == NULL) {
		cli_error("out of memory");
		return EXIT_FAILED;
	}
	tmpl->daily_limit = VAULT_DEFAULT_DAILY_LIMIT;
	tmpl->daily_rcpt_limit = VAULT_DEFAULT_RCPT_LIMIT;
	tmpl->upstream_tls = -1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			if (tmpl->n_aliases >= VAULT_MAX_ALIASES) {
				cli_error("at most %d aliases per account", VAULT_MAX_ALIASES);
				goto done;
			}
			if (strlcpy(tmpl->aliases[tmpl->n_aliases++], optarg,
			    VAULT_ADDR_MAX) >= VAULT_ADDR_MAX) {
				cli_error("alias too long: %.64s...", optarg);
				goto done;
			}
			break;
		case 'd':
			if (parse_u64(optarg, 1, 1000000000, &tmpl->daily_limit) == -1) {
				cli_error("--daily-limit: '%s' is not a number from 1 to 1000000000", optarg);
				goto done;
			}
			break;
		case 'r':
			if (parse_u64(optarg, 1, 1000000000, &tmpl->daily_rcpt_limit) == -1) {
				cli_error("--daily-recipient-limit: '%s' is not a number from 1 to "
				    "1000000000", optarg);
				goto done;
			}
			break;
		case 'u':
			if (hostport_parse(optarg, tmpl->upstream_host, sizeof(tmpl->upstream_host),
			    &tmpl->upstream_port) == -1) {
				cli_error("--upstream: '%s' is not HOST:PORT", optarg);
				goto done;
			}
			break;
		case 't':
			if (strcmp(optarg, "starttls") == 0)
				tmpl->upstream_tls = UPSTREAM_TLS_STARTTLS;
			else if (strcmp(optarg, "implicit") == 0)
				tmpl->upstream_tls = UPSTREAM_TLS_IMPLICIT;
			else {
				cli_error("--tls: '%s' is not starttls or implicit", optarg);
				goto done;
			}
			break;
		default:
			cli_error("usage: %s", use);
			goto done;
		}
	}
	if (optind >= argc) {
		cli_error("usage: %s", use);
		goto done;
	}
	if (strlcpy(tmpl->address, argv[optind++], sizeof(tmpl->address)) >= sizeof(tmpl->address)) {
		cli_error("address too long");
		goto done;
	}
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		goto done;
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		goto done;
	/* The secret is read before the vault is locked: a prompt may wait for
	 * a person, and the daemon must not wait for the lock meanwhile. */
	if (read_app_password(tmpl->address, &secret) == -1) {
		rc = EXIT_FAILED;
		goto done;
	}
	warn_app_password_shape(&cli->cfg, tmpl, &secret);
	if ((rc = cli_open_vault(cli, 1, &v)) != EXIT_OK)
		goto done;
	if (vault_account_find(v, tmpl->address) != NULL) {
		cli_error("account %s already exists (use 'account rotate' to change its "
		    "App Password)", tmpl->address);
		rc = EXIT_FAILED;
		goto done;
	}
	if (vault_account_add(v, tmpl, secret.buf, secret.len, time(NULL), err, sizeof(err)) == -1) {
		cli_error("%s", err);
		rc = EXIT_FAILED;
		goto done;
	}
	snprintf(msg, sizeof(msg), "added account %s", tmpl->address);
	rc = save_and_close(cli, v, audit_account_event(AUDIT_ACCOUNT_ADD, tmpl->address, 1,
	    NULL, NULL), msg);
	v = NULL;
done:
	vault_secret_wipe(&secret);
	vault_close(v);
	free(tmpl);
	return rc;
}

static const char *
status_name(uint32_t st)
{
	return st == VAULT_STATUS_AUTH_FAILED ? "auth_failed" : "ok";
}

static int
account_list(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault account list [--json]";
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 }
	};
	const struct vault_account *a;
	struct vault *v = NULL;
	json_t *arr = NULL, *obj, *aliases;
	char created[32], rotated[32], al[1024];
	size_t i, j;
	int ch, json = 0, rc;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'j') {
			cli_error("usage: %s", use);
			return EXIT_USAGE;
		}
		json = 1;
	}
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		return rc;
	if ((rc = cli_open_vault(cli, 0, &v)) != EXIT_OK)
		return rc;
	if (json && (arr = json_array()) == NULL)
		goto oom;
	if (!json)
		printf("%-32s %-8s %-20s %-20s %-9s %-9s %-11s %s\n", "ADDRESS", "VERSION",
		    "CREATED", "ROTATED", "DAILY", "RCPTS", "STATUS", "ALIASES");
	for (i = 0; i < vault_account_count(v); i++) {
		a = vault_account_at(v, i);
		time_rfc3339((time_t)a->created, created, sizeof(created));
		time_rfc3339((time_t)a->rotated, rotated, sizeof(rotated));
		if (json) {
			if ((aliases = json_array()) == NULL)
				goto oom;
			for (j = 0; j < a->n_aliases; j++)
				json_array_append_new(aliases, json_string(a->aliases[j]));
			obj = json_pack("{s:s, s:o, s:I, s:s, s:s, s:I, s:I, s:s}",
			    "address", a->address, "aliases", aliases,
			    "version", (json_int_t)a->current, "created", created,
			    "rotated", rotated, "daily_limit", (json_int_t)a->daily_limit,
			    "daily_recipient_limit", (json_int_t)a->daily_rcpt_limit,
			    "status", status_name(a->status));
			if (obj == NULL || json_array_append_new(arr, obj) == -1)
				goto oom;
		} else {
			al[0] = '\0';
			for (j = 0; j < a->n_aliases; j++) {
				if (j > 0)
					strlcat(al, ",", sizeof(al));
				strlcat(al, a->aliases[j], sizeof(al));
			}
			printf("%-32s %-8u %-20s %-20s %-9llu %-9llu %-11s %s\n", a->address,
			    a->current, created, rotated, (unsigned long long)a->daily_limit,
			    (unsigned long long)a->daily_rcpt_limit, status_name(a->status),
			    al[0] != '\0' ? al : "-");
		}
	}
	if (json) {
		if (json_dumpf(arr, stdout, JSON_INDENT(2)) == -1)
			goto oom;
		putchar('\n');
		json_decref(arr);
	}
	vault_close(v);
	return EXIT_OK;
oom:
	cli_error("out of memory");
	json_decref(arr);
	vault_close(v);
	return EXIT_FAILED;
}

/* Prove a credential against the account's upstream. 0 accepted, -1 not. */
static int
verify_upstream(const struct config *cfg, const struct vault_account *a,
    const struct vault_secret *s, int print_ok)
{
	struct upstream_target t;
	char reply[SMTP_CLIENT_REPLY_MAX];
	int refused = 0;

	upstream_target_for(cfg, a, &t);
	if (smtp_client_probe(&t, a->address, s, reply, sizeof(reply), &refused) == -1) {
		cli_error("%s:%u %s for %s: %s", t.host, t.port,
		    refused ? "refused the App Password" : "could not be reached or verified",
		    a->address, reply);
		return -1;
	}
	if (print_ok)
		printf("%s:%u accepted %s: %s\n", t.host, t.port, a->address, reply);
	return 0;
}

static int
account_rotate(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault account rotate ADDRESS [--no-verify]";
	static const struct option opts[] = {
		{ "no-verify", no_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 }
	};
	const struct vault_account *a;
	struct vault_secret secret = { NULL, 0 };
	struct vault *v = NULL;
	char err[1024], msg[VAULT_ADDR_MAX + 64], addr[VAULT_ADDR_MAX];
	uint32_t version;
	int ch, verify = 1, rc;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'n') {
			cli_error("usage: %s", use);
			return EXIT_USAGE;
		}
		verify = 0;
	}
	if (optind >= argc) {
		cli_error("usage: %s", use);
		return EXIT_USAGE;
	}
	strlcpy(addr, argv[optind++], sizeof(addr));
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		return rc;
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	/* Read before locking, as in account add. */
	if (read_app_password(addr, &secret) == -1)
		return EXIT_FAILED;
	if ((rc = cli_open_vault(cli, 1, &v)) != EXIT_OK)
		goto done;
	rc = EXIT_FAILED;
	if ((a = vault_account_find(v, addr)) == NULL) {
		cli_error("no account %s", addr);
		goto done;
	}
	strlcpy(addr, a->address, sizeof(addr));
	warn_app_password_shape(&cli->cfg, a, &secret);
	/* The lock is held while verifying so that nobody rotates in between;
	 * the probe is bounded by [upstream] timeout. */
	if (verify && verify_upstream(&cli->cfg, a, &secret, 0) == -1) {
		cli_error("App Password for %s not stored (use --no-verify to store it anyway)",
		    addr);
		goto done;
	}
	if (vault_account_rotate(v, addr, secret.buf, secret.len, time(NULL), &version,
	    err, sizeof(err)) == -1) {
		cli_error("%s", err);
		goto done;
	}
	snprintf(msg, sizeof(msg), "rotated %s to credential version %u%s", addr, version,
	    verify ? " (verified upstream)" : " (not verified)");
	rc = save_and_close(cli, v, audit_account_event(AUDIT_ACCOUNT_ROTATE, addr, version,
	    NULL, NULL), msg);
	v = NULL;
done:
	vault_secret_wipe(&secret);
	vault_close(v);
	return rc;
}

/* rollback and remove: one address, no options, one vault change. */
static int
account_simple(struct cli *cli, int argc, char **argv, int remove)
{
	const char *use = remove ? "smtpvault account remove ADDRESS" :
	    "smtpvault account rollback ADDRESS";
	const struct vault_account *a;
	struct vault *v = NULL;
	char err[1024], msg[VAULT_ADDR_MAX + 64], addr[VAULT_ADDR_MAX];
	uint32_t version;
	int rc;

	if (getopt_long(argc, argv, "", (const struct option[]){ { NULL, 0, NULL, 0 } },
	    NULL) != -1 || optind >= argc) {
		cli_error("usage: %s", use);
		return EXIT_USAGE;
	}
	strlcpy(addr, argv[optind++], sizeof(addr));
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		return rc;
	if ((rc = cli_open_vault(cli, 1, &v)) != EXIT_OK)
		return rc;
	if ((a = vault_account_find(v, addr)) == NULL) {
		cli_error("no account %s", addr);
		vault_close(v);
		return EXIT_FAILED;
	}
	strlcpy(addr, a->address, sizeof(addr));
	version = a->current;
	if (remove) {
		rc = vault_account_remove(v, addr, err, sizeof(err));
		snprintf(msg, sizeof(msg), "removed account %s", addr);
	} else {
		rc = vault_account_rollback(v, addr, time(NULL), &version, err, sizeof(err));
		snprintf(msg, sizeof(msg), "%s is back at credential version %u", addr,
		    rc == 0 ? version : 0);
	}
	if (rc == -1) {
		cli_error("%s", err);
		vault_close(v);
		return EXIT_FAILED;
	}
	return save_and_close(cli, v, audit_account_event(remove ? AUDIT_ACCOUNT_REMOVE :
	    AUDIT_ACCOUNT_ROLLBACK, addr, version, NULL, NULL), msg);
}

static int
account_test(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault account test ADDRESS";
	const struct vault_account *a;
	const struct vault_credential *c;
	struct vault *v = NULL;
	char addr[VAULT_ADDR_MAX];
	int rc;

	if (getopt_long(argc, argv, "", (const struct option[]){ { NULL, 0, NULL, 0 } },
	    NULL) != -1 || optind >= argc) {
		cli_error("usage: %s", use);
		return EXIT_USAGE;
	}
	strlcpy(addr, argv[optind++], sizeof(addr));
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		return rc;
	if ((rc = cli_open_vault(cli, 0, &v)) != EXIT_OK)
		return rc;
	rc = EXIT_FAILED;
	if ((a = vault_account_find(v, addr)) == NULL)
		cli_error("no account %s", addr);
	else if ((c = vault_account_current(a)) == NULL)
		cli_error("account %s has no credential", a->address);
	else if (verify_upstream(&cli->cfg, a, &c->secret, 1) == 0)
		rc = EXIT_OK;
	vault_close(v);
	return rc;
}

int
cmd_account(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault account add|list|rotate|rollback|remove|test ...";
	const char *sub;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		if (argc < 2) {
			cli_error("usage: %s", use);
			return EXIT_USAGE;
		}
		printf("usage: %s\n", use);
		return EXIT_OK;
	}
	sub = argv[1];
	argc--;
	argv++;
	if (strcmp(sub, "add") == 0) {
		if (help_requested(argc, argv, "smtpvault account add ADDRESS [--alias A]... "
		    "[--daily-limit N] [--daily-recipient-limit N] [--upstream HOST:PORT] "
		    "[--tls starttls|implicit]  (App Password on stdin or prompted)"))
			return EXIT_OK;
		return account_add(cli, argc, argv);
	}
	if (strcmp(sub, "list") == 0)
		return help_requested(argc, argv, "smtpvault account list [--json]") ? EXIT_OK :
		    account_list(cli, argc, argv);
	if (strcmp(sub, "rotate") == 0)
		return help_requested(argc, argv, "smtpvault account rotate ADDRESS [--no-verify]"
		    "  (new App Password on stdin or prompted)") ? EXIT_OK :
		    account_rotate(cli, argc, argv);
	if (strcmp(sub, "rollback") == 0)
		return help_requested(argc, argv, "smtpvault account rollback ADDRESS") ?
		    EXIT_OK : account_simple(cli, argc, argv, 0);
	if (strcmp(sub, "remove") == 0)
		return help_requested(argc, argv, "smtpvault account remove ADDRESS") ?
		    EXIT_OK : account_simple(cli, argc, argv, 1);
	if (strcmp(sub, "test") == 0)
		return help_requested(argc, argv, "smtpvault account test ADDRESS") ?
		    EXIT_OK : account_test(cli, argc, argv);
	cli_error("unknown account command '%s'; usage: %s", sub, use);
	return EXIT_USAGE;
}

int
cmd_admin_user(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault admin-user add NAME | remove NAME | list";
	struct vault_secret pw = { NULL, 0 };
	struct vault *v = NULL;
	const struct vault_admin *ad;
	char err[1024], msg[VAULT_NAME_MAX + 64], created[32], prompt[VAULT_NAME_MAX + 32];
	const char *sub, *name;
	size_t i;
	int rc;

	if (help_requested(argc, argv, use))
		return EXIT_OK;
	if (argc < 2) {
		cli_error("usage: %s", use);
		return EXIT_USAGE;
	}
	sub = argv[1];
	if (strcmp(sub, "list") == 0) {
		if (argc != 2) {
			cli_error("usage: %s", use);
			return EXIT_USAGE;
		}
		if ((rc = cli_open_vault(cli, 0, &v)) != EXIT_OK)
			return rc;
		printf("%-32s %s\n", "NAME", "CREATED");
		for (i = 0; i < vault_admin_count(v); i++) {
			ad = vault_admin_at(v, i);
			time_rfc3339((time_t)ad->created, created, sizeof(created));
			printf("%-32s %s\n", ad->name, created);
		}
		vault_close(v);
		return EXIT_OK;
	}
	if ((strcmp(sub, "add") != 0 && strcmp(sub, "remove") != 0) || argc != 3) {
		cli_error("%s; usage: %s", argc > 3 ? "unexpected argument (passwords are read "
		    "from stdin or a prompt, never from the command line)" : "bad arguments", use);
		return EXIT_USAGE;
	}
	name = argv[2];
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	if (strcmp(sub, "add") == 0) {
		/* Read before locking, as in account add. */
		snprintf(prompt, sizeof(prompt), "Password for admin %s: ", name);
		if (cli_read_secret(prompt, 1, &pw) == -1)
			return EXIT_FAILED;
	}
	if ((rc = cli_open_vault(cli, 1, &v)) != EXIT_OK) {
		vault_secret_wipe(&pw);
		return rc;
	}
	if (strcmp(sub, "add") == 0) {
		rc = vault_admin_add(v, name, pw.buf, pw.len, time(NULL), err, sizeof(err));
		vault_secret_wipe(&pw);
		snprintf(msg, sizeof(msg), "added admin user %s", name);
	} else {
		rc = vault_admin_remove(v, name, err, sizeof(err));
		snprintf(msg, sizeof(msg), "removed admin user %s", name);
	}
	if (rc == -1) {
		cli_error("%s", err);
		vault_close(v);
		return EXIT_FAILED;
	}
	return save_and_close(cli, v, audit_admin_event(strcmp(sub, "add") == 0 ?
	    AUDIT_ADMIN_USER_ADD : AUDIT_ADMIN_USER_REMOVE, name, NULL, NULL), msg);
}

int
cmd_rekey(struct cli *cli, int argc, char **argv)
{
	static const char *use = "smtpvault rekey [--new-passphrase-file F] "
	    "[--kdf interactive|moderate|sensitive]";
	static const struct option opts[] = {
		{ "new-passphrase-file",	required_argument, NULL, 'n' },
		{ "new-key-file",		required_argument, NULL, 'K' },
		{ "kdf",			required_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 }
	};
	struct vault_keysrc src;
	struct vault *v = NULL;
	enum vault_kdf kdf = VAULT_KDF_MODERATE;
	const char *newfile = NULL;
	char err[1024];
	int ch, rc, is_keyfile = 0;

	if (help_requested(argc, argv, use))
		return EXIT_OK;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
		case 'K':
			newfile = optarg;
			is_keyfile = ch == 'K';
			break;
		case 'k':
			if (parse_kdf(optarg, &kdf) == 0)
				break;
			/* FALLTHROUGH */
		default:
			cli_error("usage: %s", use);
			return EXIT_USAGE;
		}
	}
	if ((rc = cli_no_extra_args(argc, argv, use)) != EXIT_OK)
		return rc;
	if ((rc = cli_open_vault(cli, 1, &v)) != EXIT_OK)
		return rc;
	if (newfile != NULL) {
		if (vault_keysrc_from_file(newfile, is_keyfile, &src, err, sizeof(err)) == -1) {
			cli_error("%s", err);
			vault_close(v);
			return EXIT_FAILED;
		}
	} else if (!isatty(0)) {
		cli_error("rekey needs --new-passphrase-file F (or --new-key-file F), or a terminal");
		vault_close(v);
		return EXIT_USAGE;
	} else if (vault_keysrc_from_tty("New vault passphrase: ", 1, &src, err,
	    sizeof(err)) == -1) {
		cli_error("%s", err);
		vault_close(v);
		return EXIT_FAILED;
	}
	if (src.is_keyfile)
		kdf = VAULT_KDF_KEYFILE;
	rc = vault_rekey(v, &src, kdf, err, sizeof(err));
	vault_keysrc_wipe(&src);
	if (rc == -1) {
		cli_error("%s", err);
		vault_close(v);
		return EXIT_FAILED;
	}
	return save_and_close(cli, v, audit_vault_event(AUDIT_VAULT_REKEY, NULL),
	    "vault re-encrypted under the new key; update "
	    "passphrase_file / key_file in the configuration");
}
