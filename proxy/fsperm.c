/*
 * fsperm.c: refuse to start on files others could read or replace, and
 * notice before the first write that the daemon's user cannot write its
 * state (see fsperm.h). Checks follow symbolic links: what matters is the
 * file that will be opened.
 */
#include "fsperm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define MODE_OTHERS_RW	(S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)
#define MODE_OTHERS_W	(S_IWGRP | S_IWOTH)
#define MODE_CRED_BAD	(S_IWGRP | S_IROTH | S_IWOTH)	/* group read: an ACL mask */
#define MODE_PERMS	07777
#define LOCK_SUFFIX	".lock"		/* vault.c's lock file, "<vault>.lock" */
#define HEAD_SUFFIX	".head"		/* audit.c's chain head, "<log>.head" */

int
fsperm_check_secret(const char *path, const char *what, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot stat %s %s: %s", what, path, strerror(errno));
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s %s is a directory", what, path);
		return -1;
	}
	if ((st.st_mode & MODE_OTHERS_RW) != 0) {
		snprintf(err, errlen, "%s %s is %s by group or others (mode %04o); "
		    "chmod 600 %s", what, path,
		    (st.st_mode & (S_IRGRP | S_IROTH)) ? "readable" : "writable",
		    (unsigned)(st.st_mode & MODE_PERMS), path);
		return -1;
	}
	return 0;
}

int
fsperm_check_credential(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot stat credential %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "credential %s is not a regular file", path);
		return -1;
	}
	if ((st.st_mode & MODE_CRED_BAD) != 0) {
		snprintf(err, errlen, "credential %s is %s by %s (mode %04o); chmod 600 %s",
		    path, (st.st_mode & S_IROTH) ? "readable" : "writable",
		    (st.st_mode & (S_IROTH | S_IWOTH)) ? "others" : "group",
		    (unsigned)(st.st_mode & MODE_PERMS), path);
		return -1;
	}
	return 0;
}

int
fsperm_check_dir(const char *path, const char *what, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot stat %s %s: %s", what, path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s %s is not a directory", what, path);
		return -1;
	}
	if ((st.st_mode & MODE_OTHERS_W) != 0) {
		snprintf(err, errlen, "%s %s is writable by group or others (mode %04o); "
		    "chmod 700 %s", what, path, (unsigned)(st.st_mode & MODE_PERMS), path);
		return -1;
	}
	return 0;
}

/* The directory part of path ("." for a bare name). */
static int
dir_of(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');
	size_t n;

	if (slash == NULL)
		return strlcpy(dir, ".", len) < len ? 0 : -1;
	if (slash == path)
		return strlcpy(dir, "/", len) < len ? 0 : -1;
	n = (size_t)(slash - path);
	if (n + 1 > len)
		return -1;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return 0;
}

static int
check_dir_of(const char *path, const char *what, char *err, size_t errlen)
{
	char dir[PATH_MAX];

	if (dir_of(path, dir, sizeof(dir)) == -1) {
		snprintf(err, errlen, "path %s is too long", path);
		return -1;
	}
	return fsperm_check_dir(dir, what, err, errlen);
}

int
fsperm_check_config(const struct config *cfg, const char *passphrase_file,
    char *err, size_t errlen)
{
	char cred[PATH_MAX];
	const char *credir;

	if (fsperm_check_secret(cfg->vault_path, "vault", err, errlen) == -1)
		return -1;
	if (passphrase_file != NULL &&
	    fsperm_check_secret(passphrase_file, "passphrase file", err, errlen) == -1)
		return -1;
	if (cfg->passphrase_file[0] != '\0' &&
	    fsperm_check_secret(cfg->passphrase_file, "passphrase file", err, errlen) == -1)
		return -1;
	if (cfg->key_file[0] != '\0' &&
	    fsperm_check_secret(cfg->key_file, "key file", err, errlen) == -1)
		return -1;
	if ((credir = getenv("CREDENTIALS_DIRECTORY")) != NULL && credir[0] != '\0') {
		if ((size_t)snprintf(cred, sizeof(cred), "%s/%s", credir,
		    FSPERM_CREDENTIAL_NAME) >= sizeof(cred)) {
			snprintf(err, errlen, "CREDENTIALS_DIRECTORY %s is too long", credir);
			return -1;
		}
		if (fsperm_check_credential(cred, err, errlen) == -1)
			return -1;
	}
	if (check_dir_of(cfg->vault_path, "vault directory", err, errlen) == -1 ||
	    check_dir_of(cfg->audit_path, "audit log directory", err, errlen) == -1 ||
	    fsperm_check_dir(cfg->spool_dir, "spool directory", err, errlen) == -1)
		return -1;
	return 0;
}

/* mode: R_OK, W_OK, ... for access(2); a missing path passes unless must_exist. */
static int
check_access(const char *path, int mode, int must_exist, const char *what,
    const char *user, char *err, size_t errlen)
{
	if (access(path, F_OK) == -1 && errno == ENOENT && !must_exist)
		return 0;
	if (access(path, mode) == 0)
		return 0;
	snprintf(err, errlen, "user %s cannot %s %s %s: %s; chown %s: %s", user,
	    (mode & W_OK) ? "write to" : "read", what, path, strerror(errno), user, path);
	return -1;
}

int
fsperm_check_access(const struct config *cfg, const char *user, char *err, size_t errlen)
{
	char dir[PATH_MAX], side[PATH_MAX];

	if (check_access(cfg->vault_path, R_OK, 1, "vault", user, err, errlen) == -1)
		return -1;
	if (dir_of(cfg->vault_path, dir, sizeof(dir)) == -1 ||
	    check_access(dir, W_OK | X_OK, 1, "vault directory", user, err, errlen) == -1)
		return -1;
	if ((size_t)snprintf(side, sizeof(side), "%s%s", cfg->vault_path, LOCK_SUFFIX) >=
	    sizeof(side) ||
	    check_access(side, R_OK | W_OK, 0, "vault lock file", user, err, errlen) == -1)
		return -1;
	if (check_access(cfg->audit_path, W_OK, 1, "audit log", user, err, errlen) == -1)
		return -1;
	if ((size_t)snprintf(side, sizeof(side), "%s%s", cfg->audit_path, HEAD_SUFFIX) >=
	    sizeof(side) ||
	    check_access(side, R_OK | W_OK, 0, "audit chain head", user, err, errlen) == -1)
		return -1;
	if (dir_of(cfg->audit_path, dir, sizeof(dir)) == -1 ||
	    check_access(dir, W_OK | X_OK, 1, "audit log directory", user, err, errlen) == -1)
		return -1;
	if (check_access(cfg->spool_dir, W_OK | X_OK, 0, "spool directory", user, err,
	    errlen) == -1)
		return -1;
	return 0;
}
