/*
 * fsjail.h: Landlock filesystem confinement for the processes that parse
 * what others send (issue 8): the SMTP front end and the admin page. They
 * run as the same smtpvault user as the keeper, so without this a memory
 * bug in a parser could open the vault and its key file and decrypt every
 * credential. A jail handles every filesystem right the running kernel
 * knows and then allows reading an explicit list of files and directories,
 * nothing else: no writes, no new files, no other reads.
 *
 * Landlock rules name inodes, found by path when the jail is made: a file
 * replaced by a rename later (a renewed certificate written as a new file
 * and moved into place) is no longer the one allowed. A reload that names
 * a path outside the jail keeps the old configuration
 * (fsjail_reload_check); new paths take a restart.
 *
 * A jail holds for the calling thread and the threads and processes it
 * starts afterwards, never for threads that already run: make it before the
 * process starts any.
 */
#ifndef SMTPVAULT_FSJAIL_H
#define SMTPVAULT_FSJAIL_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

#define FSJAIL_PATHS_MAX	24
#define FSJAIL_SECRET_IDS_MAX	128	/* secret files and the directories above them */

/* A file or directory by identity, whatever path names it. */
struct fsjail_id {
	dev_t		dev;
	ino_t		ino;
};

/*
 * What a jail allows: paths to read (a directory with everything below
 * it), and whether TCP bind and connect stay allowed. What it must never
 * reach: the secrets (the vault, its key sources, another role's TLS key),
 * kept as the identities of each secret and of every directory above it
 * (on its canonical path and wherever a bind mount shows it);
 * fsjail_apply() refuses a rule on any of them, so no path, bind mount or
 * link to such a directory gets in.
 */
struct fsjail {
	const char	*role;				/* for logs: "smtp", "admin" */
	char		 paths[FSJAIL_PATHS_MAX][CONFIG_PATH_MAX];
	size_t		 n_paths;
	struct fsjail_id secret_ids[FSJAIL_SECRET_IDS_MAX];
	size_t		 n_secret_ids;
	int		 deny_tcp;			/* no TCP bind or connect */
	int		 on;				/* set by fsjail_apply */
	int		 abi;				/* the kernel's Landlock ABI */
	size_t		 n_rules;			/* paths that existed */
};

/* Add a path to read; an empty path is ignored. 0, or -1 with err (the
 * list is full or the path too long). */
int	fsjail_add(struct fsjail *j, const char *path, char *err, size_t errlen);

/*
 * Add a secret no rule of j may reach (NULL or "" is ignored): the identity
 * of realpath(path) and of every directory above it (for a path that does
 * not exist yet, of its nearest existing ancestor and those above), and of
 * the directories above each other place a bind mount shows it at
 * (/proc/self/mountinfo). 0, or -1 with err (too many).
 */
int	fsjail_add_secret(struct fsjail *j, const char *path, char *err, size_t errlen);

/* Would a rule on path (followed as open() follows it) reach a secret of
 * j: is it a secret, or a directory one lies below? A missing path: 0. */
int	fsjail_reaches_secret(const struct fsjail *j, const char *path);

/*
 * Apply j to this thread (and what it starts from now on): set no_new_privs,
 * make a ruleset handling every filesystem right of the running ABI (and
 * TCP bind and connect when deny_tcp, abstract UNIX sockets and signals
 * outside the jail from ABI 6), one read-only rule per path that exists (a
 * missing one is logged at debug and skipped), restrict. Returns 0 when
 * applied, 1 when this kernel has no Landlock (ENOSYS, or EOPNOTSUPP: built
 * without it or disabled at boot), -1 with err on any other failure, among
 * them a path that would reach a secret (nothing is restricted then).
 */
int	fsjail_apply(struct fsjail *j, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/* Is path one of j's paths or below one of its directories (by name)?
 * Always 1 when j is not on. */
int	fsjail_allows(const struct fsjail *j, const char *path);

/*
 * The jails of the front end and the admin process for cfg, read from
 * config_path (the file SIGHUP re-reads), passphrase_file the CLI's
 * --passphrase-file (or NULL): fill j, apply it and log once
 * "event=sandbox process=ROLE landlock=on abi=N paths=K" (or
 * "landlock=unavailable", a warning, and the process goes on). The secrets
 * of both: the vault, [vault] key_file and passphrase_file, passphrase_file,
 * $CREDENTIALS_DIRECTORY, and the other role's TLS key (unless it is the
 * same file as the role's own). 0, or -1 with err: the process must not
 * start.
 */
int	fsjail_smtp(struct fsjail *j, const struct config *cfg, const char *config_path,
	    const char *passphrase_file, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
int	fsjail_admin(struct fsjail *j, const struct config *cfg, const char *config_path,
	    const char *passphrase_file, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * On SIGHUP, before a new configuration replaces the old: does everything
 * the role opens by path after its start (smtp: [smtp] tls_cert and tls_key;
 * admin: [upstream] ca_file and the audit log) lie inside j? 0, or -1 with
 * err naming the path (the caller keeps the old configuration).
 */
int	fsjail_smtp_reload_check(const struct fsjail *j, const struct config *cfg,
	    char *err, size_t errlen);
int	fsjail_admin_reload_check(const struct fsjail *j, const struct config *cfg,
	    char *err, size_t errlen);

#endif
