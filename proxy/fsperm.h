/*
 * fsperm.h: start-up checks of the files the daemon trusts. The vault and
 * its passphrase or key file must be readable by their owner only; the
 * directories the daemon writes (the vault's, the audit log's, the spool)
 * must not be writable by group or others, who could replace or delete what
 * is in them; and after the privilege drop the daemon's user must be able to
 * write there. Each failure is one line that names the file and the fix.
 */
#ifndef SMTPVAULT_FSPERM_H
#define SMTPVAULT_FSPERM_H

#include <stddef.h>

#include "config.h"

/* The systemd credential the vault passphrase arrives as (SPEC section 2). */
#define FSPERM_CREDENTIAL_NAME	"smtpvault-passphrase"

/*
 * A secret file (what: "vault", "passphrase file", ...) must not be
 * readable or writable by group or others: "chmod 600 FILE". A missing file
 * passes: the code that opens it reports that better.
 */
int	fsperm_check_secret(const char *path, const char *what, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * The systemd credential, a file directly in $CREDENTIALS_DIRECTORY. systemd
 * makes it 0400 and grants the service's user read access with a POSIX ACL
 * where the file system has ACLs; stat(2) then shows the ACL's mask in the
 * group bits (0440) although no group can read it. So here only a group
 * write bit or any bit for others is refused.
 */
int	fsperm_check_credential(const char *path, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/* A directory the daemon writes must not be writable by group or others
 * (sticky or not): "chmod 700 DIR". A missing directory passes. */
int	fsperm_check_dir(const char *path, const char *what, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * Everything above for one configuration: the vault, every key source that
 * is set (passphrase_file is --passphrase-file when given; the systemd
 * credential when $CREDENTIALS_DIRECTORY is set), and the directories of the
 * vault and the audit log and the spool.
 */
int	fsperm_check_config(const struct config *cfg, const char *passphrase_file,
	    char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * After the privilege drop: can this process read the vault and write where
 * it will (the vault's directory, its lock file, the audit log and its
 * directory, the spool)? Fails with the fix "chown USER: PATH".
 */
int	fsperm_check_access(const struct config *cfg, const char *user,
	    char *err, size_t errlen)
	    __attribute__((warn_unused_result));

#endif
