/*
 * test_privdrop.c: proxy/privdrop.c as a specification. Not root: nothing
 * to drop. Root: an unknown user is one clear error; SMTPVAULT_ALLOW_ROOT=1
 * keeps root knowingly; a real drop (to "nobody", in a child process) leaves
 * every uid and gid the user's, no root group, and no way back to root.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privdrop.h"

#define ERRLEN		512
#define NO_SUCH_USER	"smtpvault-no-such-user"
#define DROP_USER	"nobody"	/* exists on every Debian system */
#define CHILD_OK	0
#define CHILD_FAILED	1
#define GROUPS_MAX	256

static void
test_not_root_does_nothing(void **state)
{
	struct privdrop pd;
	char err[ERRLEN] = "";

	if (geteuid() == 0)
		skip();
	assert_int_equal(privdrop_prepare(&pd, NO_SUCH_USER, err, sizeof(err)), 0);
	assert_false(pd.needed);
	assert_false(pd.kept_root);
	assert_int_equal(privdrop_drop(&pd, err, sizeof(err)), 0);
}

static void
test_root_unknown_user_is_an_error(void **state)
{
	struct privdrop pd;
	char err[ERRLEN] = "";

	if (geteuid() != 0)
		skip();
	unsetenv(PRIVDROP_ALLOW_ROOT_ENV);
	assert_int_equal(privdrop_prepare(&pd, NO_SUCH_USER, err, sizeof(err)), -1);
	assert_string_equal(err, "running as root and user " NO_SUCH_USER " does not exist; "
	    "create it (see deploy/systemd/smtpvault.sysusers, or: useradd --system "
	    "--no-create-home --shell /usr/sbin/nologin " NO_SUCH_USER ") or run as an "
	    "unprivileged user");
}

static void
test_root_user_root_is_refused(void **state)
{
	struct privdrop pd;
	char err[ERRLEN] = "";

	if (geteuid() != 0)
		skip();
	unsetenv(PRIVDROP_ALLOW_ROOT_ENV);
	assert_int_equal(privdrop_prepare(&pd, "root", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "has uid or gid 0"));
}

static void
test_root_allow_root_keeps_root(void **state)
{
	struct privdrop pd;
	char err[ERRLEN] = "", who[PRIVDROP_NAME_MAX];

	if (geteuid() != 0)
		skip();
	setenv(PRIVDROP_ALLOW_ROOT_ENV, "1", 1);
	assert_int_equal(privdrop_prepare(&pd, NO_SUCH_USER, err, sizeof(err)), 0);
	assert_false(pd.needed);
	assert_true(pd.kept_root);
	assert_int_equal(privdrop_drop(&pd, err, sizeof(err)), 0);
	assert_int_equal(geteuid(), 0);
	assert_string_equal(privdrop_user_name(&pd, who, sizeof(who)), "root");
	/* Only "1" counts. */
	setenv(PRIVDROP_ALLOW_ROOT_ENV, "yes", 1);
	assert_int_equal(privdrop_prepare(&pd, NO_SUCH_USER, err, sizeof(err)), -1);
	unsetenv(PRIVDROP_ALLOW_ROOT_ENV);
}

/* In the child: drop, then check from the outside what privdrop verified. */
static int
child_drop(const struct passwd *pw)
{
	struct privdrop pd;
	char err[ERRLEN] = "", who[PRIVDROP_NAME_MAX];
	gid_t groups[GROUPS_MAX];
	uid_t r, e, s;
	gid_t rg, eg, sg;
	int i, n;

	if (privdrop_prepare(&pd, DROP_USER, err, sizeof(err)) == -1 || !pd.needed ||
	    pd.uid != pw->pw_uid || pd.gid != pw->pw_gid) {
		fprintf(stderr, "prepare: %s\n", err);
		return CHILD_FAILED;
	}
	if (privdrop_drop(&pd, err, sizeof(err)) == -1) {
		fprintf(stderr, "drop: %s\n", err);
		return CHILD_FAILED;
	}
	if (getresuid(&r, &e, &s) == -1 || getresgid(&rg, &eg, &sg) == -1)
		return CHILD_FAILED;
	if (r != pw->pw_uid || e != pw->pw_uid || s != pw->pw_uid ||
	    rg != pw->pw_gid || eg != pw->pw_gid || sg != pw->pw_gid)
		return CHILD_FAILED;
	if ((n = getgroups(GROUPS_MAX, groups)) == -1)
		return CHILD_FAILED;
	for (i = 0; i < n; i++)
		if (groups[i] == 0)
			return CHILD_FAILED;
	if (setuid(0) != -1 || errno != EPERM || seteuid(0) != -1 || setgid(0) != -1)
		return CHILD_FAILED;
	if (strcmp(privdrop_user_name(&pd, who, sizeof(who)), DROP_USER) != 0)
		return CHILD_FAILED;
	/* A second drop is harmless and still verifies. */
	if (privdrop_drop(&pd, err, sizeof(err)) == -1 && strstr(err, "root") != NULL)
		return CHILD_FAILED;
	return CHILD_OK;
}

static void
test_root_drop_is_for_good(void **state)
{
	struct passwd *pw = NULL;
	pid_t pid;
	int status;

	if (geteuid() == 0)
		pw = getpwnam(DROP_USER);
	if (pw == NULL || pw->pw_uid == 0) {
		skip();
		return;
	}
	unsetenv(PRIVDROP_ALLOW_ROOT_ENV);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0)
		_exit(child_drop(pw));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), CHILD_OK);
	assert_int_equal(geteuid(), 0);		/* the parent kept root */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_not_root_does_nothing),
		cmocka_unit_test(test_root_unknown_user_is_an_error),
		cmocka_unit_test(test_root_user_root_is_refused),
		cmocka_unit_test(test_root_allow_root_keeps_root),
		cmocka_unit_test(test_root_drop_is_for_good),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
