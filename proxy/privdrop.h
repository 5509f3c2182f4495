/*
 * privdrop.h: a daemon started as root gives root up for good once its
 * listeners are bound. It becomes the smtpvault user (initgroups, setresgid,
 * setresuid), proves that root cannot be regained, and refuses to go on
 * otherwise. Under systemd (User=smtpvault) and in the container (USER) it
 * starts unprivileged and the drop does nothing.
 *
 * privdrop_prepare() runs before anything is opened, so that a missing user
 * is one clear start-up error rather than a surprise after the vault was
 * unlocked; privdrop_drop() runs after binding and before the event loop.
 */
#ifndef SMTPVAULT_PRIVDROP_H
#define SMTPVAULT_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

#define PRIVDROP_USER		"smtpvault"	/* see deploy/systemd/smtpvault.sysusers */
#define PRIVDROP_NAME_MAX	64
/*
 * Set to "1", a daemon started as root stays root (with a warning at every
 * start). For test suites that run as root on throw-away files, never for
 * production: it is read from the environment of whoever starts the daemon,
 * who is root already, so it grants nothing.
 */
#define PRIVDROP_ALLOW_ROOT_ENV	"SMTPVAULT_ALLOW_ROOT"

struct privdrop {
	int	needed;			/* started as root: drop in privdrop_drop() */
	int	kept_root;		/* started as root with PRIVDROP_ALLOW_ROOT_ENV */
	uid_t	uid;
	gid_t	gid;
	char	user[PRIVDROP_NAME_MAX];
};

/*
 * Decide whether a drop is due and, when it is, look user up. -1 with one
 * line in err when the process runs as root and user does not exist or is
 * root itself.
 */
int	privdrop_prepare(struct privdrop *pd, const char *user, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * Become pd->user with its groups, for real, effective and saved IDs; then
 * check that setuid(0) and setgid(0) fail. Does nothing unless pd->needed.
 * -1 with err: the caller must exit, never go on as root.
 */
int	privdrop_drop(const struct privdrop *pd, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/* Who the daemon runs as after privdrop_drop(), for messages: pd->user, else
 * the name of the effective user (or "uid N"). Returns buf. */
const char *privdrop_user_name(const struct privdrop *pd, char *buf, size_t len);

#endif
