/*
 * test_fsperm.c: proxy/fsperm.c as a table. Secret files pass only when
 * neither group nor others may read or write them; state directories fail
 * when group or others may write them (sticky or not); missing paths pass,
 * for the code that opens them to report; each error names the file and
 * the chmod that fixes it. fsperm_check_config() covers the vault, every
 * key source and the systemd credential.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fsperm.h"
#include "util.h"

#define ERRLEN	1024
#define OK	0
#define BAD	(-1)

struct fixture {
	char	dir[64];
	char	file[128];
};

static int
setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	int fd;

	assert_non_null(fx);
	strlcpy(fx->dir, "/tmp/smtpvault-fsperm.XXXXXX", sizeof(fx->dir));
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->file, sizeof(fx->file), "%s/secret", fx->dir);
	fd = open(fx->file, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd != -1);
	close(fd);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;
	char path[160];

	chmod(fx->dir, 0700);
	unlink(fx->file);
	snprintf(path, sizeof(path), "%s/sub", fx->dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/smtpvault-passphrase", fx->dir);
	unlink(path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void
test_secret_modes(void **state)
{
	static const struct {
		mode_t		 mode;
		int		 rc;
		const char	*why;
	} cases[] = {
		{ 0600, OK, NULL },
		{ 0400, OK, NULL },
		{ 0700, OK, NULL },
		{ 0640, BAD, "readable" },
		{ 0644, BAD, "readable" },
		{ 0604, BAD, "readable" },
		{ 0620, BAD, "writable" },
		{ 0602, BAD, "writable" },
		{ 0660, BAD, "readable" },
	};
	struct fixture *fx = *state;
	char err[ERRLEN], want[ERRLEN];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(chmod(fx->file, cases[i].mode), 0);
		err[0] = '\0';
		if (fsperm_check_secret(fx->file, "key file", err, sizeof(err)) != cases[i].rc)
			fail_msg("mode %04o: expected %s", (unsigned)cases[i].mode,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == OK)
			continue;
		snprintf(want, sizeof(want), "key file %s is %s by group or others (mode %04o); "
		    "chmod 600 %s", fx->file, cases[i].why, (unsigned)cases[i].mode, fx->file);
		assert_string_equal(err, want);
	}
}

static void
test_secret_missing_and_directory(void **state)
{
	struct fixture *fx = *state;
	char err[ERRLEN], missing[160];

	snprintf(missing, sizeof(missing), "%s/none", fx->dir);
	assert_int_equal(fsperm_check_secret(missing, "vault", err, sizeof(err)), OK);
	assert_int_equal(fsperm_check_secret(fx->dir, "vault", err, sizeof(err)), BAD);
	assert_non_null(strstr(err, "is a directory"));
}

static void
test_credential_modes(void **state)
{
	static const struct {
		mode_t		 mode;
		int		 rc;
		const char	*why;
	} cases[] = {
		{ 0400, OK, NULL },
		{ 0600, OK, NULL },
		{ 0440, OK, NULL },		/* an ACL mask, see fsperm.h */
		{ 0444, BAD, "readable by others" },
		{ 0404, BAD, "readable by others" },
		{ 0460, BAD, "writable by group" },
		{ 0402, BAD, "writable by others" },
	};
	struct fixture *fx = *state;
	char err[ERRLEN], want[ERRLEN];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(chmod(fx->file, cases[i].mode), 0);
		if (fsperm_check_credential(fx->file, err, sizeof(err)) != cases[i].rc)
			fail_msg("mode %04o: expected %s", (unsigned)cases[i].mode,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == OK)
			continue;
		snprintf(want, sizeof(want), "credential %s is %s (mode %04o); chmod 600 %s",
		    fx->file, cases[i].why, (unsigned)cases[i].mode, fx->file);
		assert_string_equal(err, want);
	}
	chmod(fx->file, 0600);
}

static void
test_dir_modes(void **state)
{
	static const struct {
		mode_t	mode;
		int	rc;
	} cases[] = {
		{ 0700, OK }, { 0750, OK }, { 0755, OK }, { 0711, OK },
		{ 0770, BAD }, { 0757, BAD }, { 0777, BAD }, { 01777, BAD }, { 01770, BAD },
	};
	struct fixture *fx = *state;
	char err[ERRLEN], want[ERRLEN];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(chmod(fx->dir, cases[i].mode), 0);
		if (fsperm_check_dir(fx->dir, "spool directory", err, sizeof(err)) !=
		    cases[i].rc)
			fail_msg("mode %04o: expected %s", (unsigned)cases[i].mode,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == OK)
			continue;
		snprintf(want, sizeof(want), "spool directory %s is writable by group or "
		    "others (mode %04o); chmod 700 %s", fx->dir, (unsigned)cases[i].mode,
		    fx->dir);
		assert_string_equal(err, want);
	}
	chmod(fx->dir, 0700);
	assert_int_equal(fsperm_check_dir(fx->file, "spool directory", err, sizeof(err)), BAD);
	assert_non_null(strstr(err, "is not a directory"));
}

static void
test_check_config(void **state)
{
	struct fixture *fx = *state;
	struct config cfg;
	char err[ERRLEN], path[160], sub[160];
	int fd;

	config_defaults(&cfg);
	snprintf(cfg.vault_path, sizeof(cfg.vault_path), "%s/vault", fx->dir);	/* missing */
	snprintf(cfg.audit_path, sizeof(cfg.audit_path), "%s/audit.log", fx->dir);
	snprintf(cfg.spool_dir, sizeof(cfg.spool_dir), "%s/spool", fx->dir);	/* missing */
	strlcpy(cfg.key_file, fx->file, sizeof(cfg.key_file));
	unsetenv("CREDENTIALS_DIRECTORY");
	chmod(fx->file, 0600);
	assert_int_equal(fsperm_check_config(&cfg, NULL, err, sizeof(err)), OK);

	chmod(fx->file, 0640);
	assert_int_equal(fsperm_check_config(&cfg, NULL, err, sizeof(err)), BAD);
	assert_non_null(strstr(err, "key file"));
	chmod(fx->file, 0600);

	/* --passphrase-file is checked too, whatever the config says. */
	assert_int_equal(fsperm_check_config(&cfg, fx->dir, err, sizeof(err)), BAD);
	assert_non_null(strstr(err, "passphrase file"));

	/* The systemd credential. */
	snprintf(path, sizeof(path), "%s/smtpvault-passphrase", fx->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd != -1);
	close(fd);
	chmod(path, 0644);
	setenv("CREDENTIALS_DIRECTORY", fx->dir, 1);
	assert_int_equal(fsperm_check_config(&cfg, NULL, err, sizeof(err)), BAD);
	assert_non_null(strstr(err, "credential"));
	chmod(path, 0400);
	assert_int_equal(fsperm_check_config(&cfg, NULL, err, sizeof(err)), OK);
	/* 0440: systemd's ACL for the service user shows as the group bits. */
	chmod(path, 0440);
	assert_int_equal(fsperm_check_config(&cfg, NULL, err, sizeof(err)), OK);
	unsetenv("CREDENTIALS_DIRECTORY");

	/* The audit log's directory, writable by others. */
	snprintf(sub, sizeof(sub), "%s/sub", fx->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	chmod(sub, 0777);
	snprintf(cfg.audit_path, sizeof(cfg.audit_path), "%s/audit.log", sub);
	assert_int_equal(fsperm_check_config(&cfg, NULL, err, sizeof(err)), BAD);
	assert_non_null(strstr(err, "audit log directory"));
	assert_non_null(strstr(err, "chmod 700"));
	config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_secret_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret_missing_and_directory, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_credential_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_config, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
