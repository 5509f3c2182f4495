/*
 * main.c: the smtpvault command line. Parses the global options, dispatches
 * to the command table, and owns the helpers every command shares: loading
 * the configuration, finding the vault key (SPEC section 2, first source
 * that exists wins) and reading secrets from stdin or a no-echo prompt.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "log.h"
#include "util.h"

#define DEFAULT_CONFIG		"/etc/smtpvault/smtpvault.conf"
#define CREDENTIAL_NAME		"smtpvault-passphrase"

struct command {
	const char	*name;
	int		(*fn)(struct cli *, int, char **);
	const char	*summary;
};

static const struct command commands[] = {
	{ "init",	cmd_init,	"create an empty vault" },
	{ "account",	cmd_account,	"add, list, rotate, roll back, remove or test accounts" },
	{ "admin-user",	cmd_admin_user,	"add, remove or list admin-page users" },
	{ "audit",	cmd_audit,	"verify or query the audit log" },
	{ "queue",	cmd_queue,	"list, retry or delete queued messages" },
	{ "rekey",	cmd_rekey,	"re-encrypt the vault under a new passphrase or key" },
	{ "serve",	cmd_serve,	"run the proxy and admin page in the foreground" },
};

static void
usage(FILE *fp)
{
	size_t i;

	fprintf(fp, "usage: smtpvault [-c CONFIG] [--passphrase-file F] COMMAND ...\n\n"
	    "commands:\n");
	for (i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(fp, "  %-11s %s\n", commands[i].name, commands[i].summary);
	fprintf(fp, "\nCONFIG defaults to $SMTPVAULT_CONFIG, then %s.\n"
	    "Run 'smtpvault COMMAND --help' for a command's options.\n", DEFAULT_CONFIG);
}

int
cli_load_config(struct cli *cli)
{
	char err[1024];

	if (cli->cfg_loaded)
		return EXIT_OK;
	if (config_load(cli->config_path, &cli->cfg, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		return EXIT_USAGE;
	}
	cli->cfg_loaded = 1;
	return EXIT_OK;
}

int
cli_keysrc(struct cli *cli, int confirm, struct vault_keysrc *out)
{
	char err[1024], path[CONFIG_PATH_MAX];
	const char *credir;
	const char *file = NULL;
	int is_keyfile = 0;

	memset(out, 0, sizeof(*out));
	if (cli->passphrase_file != NULL) {
		file = cli->passphrase_file;
	} else if (cli->cfg.passphrase_file[0] != '\0') {
		file = cli->cfg.passphrase_file;
	} else if (cli->cfg.key_file[0] != '\0') {
		file = cli->cfg.key_file;
		is_keyfile = 1;
	} else if ((credir = getenv("CREDENTIALS_DIRECTORY")) != NULL && credir[0] != '\0') {
		snprintf(path, sizeof(path), "%s/%s", credir, CREDENTIAL_NAME);
		if (access(path, F_OK) == 0)
			file = path;
	}
	if (file != NULL) {
		if (vault_keysrc_from_file(file, is_keyfile, out, err, sizeof(err)) == -1) {
			cli_error("%s", err);
			return EXIT_FAILED;
		}
		return EXIT_OK;
	}
	if (!isatty(STDIN_FILENO)) {
		cli_error("no vault key: set [vault] passphrase_file or key_file in %s, "
		    "pass --passphrase-file, or run on a terminal", cli->config_path);
		return EXIT_USAGE;
	}
	if (vault_keysrc_from_tty("Vault passphrase: ", confirm, out, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

int
cli_open_vault(struct cli *cli, int for_update, struct vault **out)
{
	struct vault_keysrc src;
	char err[1024];
	int rc;

	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	if ((rc = cli_keysrc(cli, 0, &src)) != EXIT_OK)
		return rc;
	rc = vault_open(cli->cfg.vault_path, &src, for_update, out, err, sizeof(err));
	vault_keysrc_wipe(&src);
	if (rc == -1) {
		cli_error("%s", err);
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

/* Read one line from fd into the guarded buffer, without stdio buffering. */
static int
read_line_fd(int fd, unsigned char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	ssize_t r;
	unsigned char c;

	for (;;) {
		r = read(fd, &c, 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (c == '\n')
			break;
		if (n + 1 >= cap)
			return -1;
		buf[n++] = c;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	*len = n;
	return 0;
}

static int
prompt_tty(const char *prompt, unsigned char *buf, size_t cap, size_t *len)
{
	struct termios old, noecho;
	int fd, rc;

	if ((fd = open("/dev/tty", O_RDWR | O_CLOEXEC)) == -1)
		return -1;
	if (tcgetattr(fd, &old) == -1) {
		close(fd);
		return -1;
	}
	noecho = old;
	noecho.c_lflag &= ~(tcflag_t)ECHO;
	(void)!write(fd, prompt, strlen(prompt));
	tcsetattr(fd, TCSAFLUSH, &noecho);
	rc = read_line_fd(fd, buf, cap, len);
	tcsetattr(fd, TCSAFLUSH, &old);
	(void)!write(fd, "\n", 1);
	close(fd);
	return rc;
}

int
cli_read_secret(const char *prompt, int confirm, struct vault_secret *out)
{
	unsigned char *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if ((a = sodium_malloc(VAULT_SECRET_MAX + 1)) == NULL ||
	    (b = sodium_malloc(VAULT_SECRET_MAX + 1)) == NULL) {
		cli_error("out of guarded memory");
		goto done;
	}
	if (!isatty(STDIN_FILENO)) {
		if (read_line_fd(STDIN_FILENO, a, VAULT_SECRET_MAX + 1, &alen) == -1) {
			cli_error("secret on stdin is longer than %d bytes", VAULT_SECRET_MAX);
			goto done;
		}
	} else {
		if (prompt_tty(prompt, a, VAULT_SECRET_MAX + 1, &alen) == -1) {
			cli_error("cannot read the secret from the terminal");
			goto done;
		}
		if (confirm) {
			if (prompt_tty("Again: ", b, VAULT_SECRET_MAX + 1, &blen) == -1 ||
			    alen != blen || sodium_memcmp(a, b, alen) != 0) {
				cli_error("the two entries do not match");
				goto done;
			}
		}
	}
	if (alen == 0) {
		cli_error("empty secret (give it on the first line of stdin or at the prompt)");
		goto done;
	}
	if (vault_secret_set(out, a, alen) == -1) {
		cli_error("out of guarded memory");
		goto done;
	}
	rc = 0;
done:
	if (a != NULL) {
		sodium_memzero(a, VAULT_SECRET_MAX + 1);
		sodium_free(a);
	}
	if (b != NULL) {
		sodium_memzero(b, VAULT_SECRET_MAX + 1);
		sodium_free(b);
	}
	return rc;
}

int
cli_no_extra_args(int argc, char **argv, const char *usage_line)
{
	if (optind < argc) {
		cli_error("unexpected argument '%s' (secrets are read from stdin or a prompt, "
		    "never from the command line); usage: %s", argv[optind], usage_line);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

static const char *
current_user(void)
{
	struct passwd *pw;
	const char *sudo;

	if ((sudo = getenv("SUDO_USER")) != NULL && sudo[0] != '\0')
		return sudo;
	if ((pw = getpwuid(getuid())) != NULL)
		return pw->pw_name;
	return "unknown";
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config",		required_argument, NULL, 'c' },
		{ "passphrase-file",	required_argument, NULL, 'P' },
		{ "verbose",		no_argument,	   NULL, 'v' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ "version",		no_argument,	   NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct cli cli;
	const char *env;
	size_t i;
	int ch, rc, verbose = 0;

	memset(&cli, 0, sizeof(cli));
	umask(077);
	if (sodium_init() == -1) {
		cli_error("cannot initialise libsodium");
		return EXIT_FAILED;
	}
	/* "+": stop at the command name; its own options come after it. */
	while ((ch = getopt_long(argc, argv, "+c:vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			cli.config_path = optarg;
			break;
		case 'P':
			cli.passphrase_file = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("smtpvault %s\n", SMTPVAULT_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	log_init("smtpvault", verbose);
	if (cli.config_path == NULL)
		cli.config_path = ((env = getenv("SMTPVAULT_CONFIG")) != NULL && env[0] != '\0') ?
		    env : DEFAULT_CONFIG;
	cli.actor = current_user();
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(argv[0], commands[i].name) != 0)
			continue;
		optind = 0;	/* glibc: reinitialise getopt for the command */
		rc = commands[i].fn(&cli, argc, argv);
		if (cli.cfg_loaded)
			config_free(&cli.cfg);
		return rc;
	}
	cli_error("unknown command '%s'; run 'smtpvault --help'", argv[0]);
	return EXIT_USAGE;
}
