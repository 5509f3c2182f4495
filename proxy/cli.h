/*
 * cli.h: what the command implementations share: the parsed global options,
 * the loaded configuration, and how to obtain the vault key and secrets from
 * stdin or a no-echo prompt. Exit statuses follow SPEC section 2.
 */
#ifndef SMTPVAULT_CLI_H
#define SMTPVAULT_CLI_H

#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "vault.h"

#define EXIT_OK		0
#define EXIT_FAILED	1	/* the operation failed */
#define EXIT_USAGE	2	/* usage or configuration error */

struct cli {
	const char	*config_path;
	const char	*passphrase_file;	/* --passphrase-file */
	struct config	cfg;
	int		cfg_loaded;
	const char	*actor;			/* who runs the command, for the audit log */
};

/* Load the configuration once; prints the error and returns EXIT_USAGE. */
int	cli_load_config(struct cli *cli);

/* The vault key from the first source that exists (SPEC section 2). */
int	cli_keysrc(struct cli *cli, int confirm, struct vault_keysrc *out);

/* Open the vault with the configured key source; prints errors. */
int	cli_open_vault(struct cli *cli, int for_update, struct vault **out);

/*
 * Read a secret: the first line of stdin when it is not a terminal, else a
 * no-echo prompt on the terminal (twice when confirm). Guarded memory.
 */
int	cli_read_secret(const char *prompt, int confirm, struct vault_secret *out);

/* Refuse anything left on argv: a secret must never be passed there. */
int	cli_no_extra_args(int argc, char **argv, const char *usage);

int	cmd_init(struct cli *cli, int argc, char **argv);
int	cmd_account(struct cli *cli, int argc, char **argv);
int	cmd_admin_user(struct cli *cli, int argc, char **argv);
int	cmd_rekey(struct cli *cli, int argc, char **argv);
int	cmd_serve(struct cli *cli, int argc, char **argv);
int	cmd_audit(struct cli *cli, int argc, char **argv);
int	cmd_queue(struct cli *cli, int argc, char **argv);

/* Append ev (an audit event) with "by" = "cli:<user>"; EXIT_FAILED when the
 * audit log cannot be written. */
int	cli_audit_record(struct cli *cli, const struct vault *v, json_t *ev);

#endif
