/*
 * privdrop.c: give up root after the listeners are bound (see privdrop.h).
 * The sequence is the one OpenBSD daemons use: supplementary groups first
 * (initgroups needs root), then the group IDs, then the user IDs, all three
 * of each (real, effective, saved) so that nothing can switch back.
 */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define ROOT_UID	((uid_t)0)
#define ROOT_GID	((gid_t)0)
#define GROUPS_MAX	1024	/* supplementary groups inspected after the drop */

static int
running_as_root(void)
{
	uid_t r, e, s;

	if (getresuid(&r, &e, &s) == -1)
		return 1;	/* cannot tell: assume the worst */
	return r == ROOT_UID || e == ROOT_UID || s == ROOT_UID;
}

int
privdrop_prepare(struct privdrop *pd, const char *user, char *err, size_t errlen)
{
	struct passwd *pw;
	const char *allow;

	memset(pd, 0, sizeof(*pd));
	if (!running_as_root())
		return 0;
	if ((allow = getenv(PRIVDROP_ALLOW_ROOT_ENV)) != NULL && strcmp(allow, "1") == 0) {
		pd->kept_root = 1;
		return 0;
	}
	if (strlcpy(pd->user, user, sizeof(pd->user)) >= sizeof(pd->user)) {
		snprintf(err, errlen, "user name %s is too long", user);
		return -1;
	}
	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		if (errno != 0 && errno != ENOENT && errno != ESRCH && errno != EBADF &&
		    errno != EPERM) {
			snprintf(err, errlen, "running as root and cannot look up user %s: %s",
			    user, strerror(errno));
			return -1;
		}
		snprintf(err, errlen, "running as root and user %s does not exist; create it "
		    "(see deploy/systemd/smtpvault.sysusers, or: useradd --system "
		    "--no-create-home --shell /usr/sbin/nologin %s) or run as an "
		    "unprivileged user", user, user);
		return -1;
	}
	if (pw->pw_uid == ROOT_UID || pw->pw_gid == ROOT_GID) {
		snprintf(err, errlen, "running as root and user %s has uid or gid 0; give it "
		    "an unprivileged uid and group of its own", user);
		return -1;
	}
	pd->uid = pw->pw_uid;
	pd->gid = pw->pw_gid;
	pd->needed = 1;
	return 0;
}

/* After the drop: no ID, and no supplementary group, may be root's. */
static int
privdrop_verify(const struct privdrop *pd, char *err, size_t errlen)
{
	gid_t groups[GROUPS_MAX];
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	int i, n;

	if (getresuid(&ru, &eu, &su) == -1 || getresgid(&rg, &eg, &sg) == -1) {
		snprintf(err, errlen, "cannot read the process IDs after dropping to %s: %s",
		    pd->user, strerror(errno));
		return -1;
	}
	if (ru != pd->uid || eu != pd->uid || su != pd->uid ||
	    rg != pd->gid || eg != pd->gid || sg != pd->gid) {
		snprintf(err, errlen, "dropping to user %s left uid %ld/%ld/%ld gid "
		    "%ld/%ld/%ld", pd->user, (long)ru, (long)eu, (long)su, (long)rg,
		    (long)eg, (long)sg);
		return -1;
	}
	if ((n = getgroups(GROUPS_MAX, groups)) == -1) {
		snprintf(err, errlen, "cannot read the groups after dropping to %s: %s",
		    pd->user, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (groups[i] == ROOT_GID) {
			snprintf(err, errlen, "user %s is a member of group root (gid 0); "
			    "remove it from that group", pd->user);
			return -1;
		}
	}
	/* The proof: a process that truly gave root up cannot take it back. */
	if (setuid(ROOT_UID) != -1 || seteuid(ROOT_UID) != -1 ||
	    setgid(ROOT_GID) != -1 || setegid(ROOT_GID) != -1) {
		snprintf(err, errlen, "after dropping to user %s the process could become "
		    "root again", pd->user);
		return -1;
	}
	return 0;
}

int
privdrop_drop(const struct privdrop *pd, char *err, size_t errlen)
{
	if (!pd->needed)
		return 0;
	if (initgroups(pd->user, pd->gid) == -1) {
		snprintf(err, errlen, "cannot set the groups of user %s: %s", pd->user,
		    strerror(errno));
		return -1;
	}
	if (setresgid(pd->gid, pd->gid, pd->gid) == -1) {
		snprintf(err, errlen, "cannot change to the group of user %s (gid %ld): %s",
		    pd->user, (long)pd->gid, strerror(errno));
		return -1;
	}
	if (setresuid(pd->uid, pd->uid, pd->uid) == -1) {
		snprintf(err, errlen, "cannot change to user %s (uid %ld): %s", pd->user,
		    (long)pd->uid, strerror(errno));
		return -1;
	}
	return privdrop_verify(pd, err, errlen);
}

const char *
privdrop_user_name(const struct privdrop *pd, char *buf, size_t len)
{
	struct passwd *pw;

	if (pd->needed)
		strlcpy(buf, pd->user, len);
	else if ((pw = getpwuid(geteuid())) != NULL)
		strlcpy(buf, pw->pw_name, len);
	else
		snprintf(buf, len, "uid %ld", (long)geteuid());
	return buf;
}
