/*
 * test_fsjail.c: proxy/fsjail.c as a specification, each case in a child
 * process (a Landlock jail cannot be left). After a jail: a listed file is
 * readable, a file outside the list (a key file next to it) is refused with
 * EACCES, nothing can be written or created anywhere, a listed directory's
 * files (one made after the jail too) are readable, a listed path that does
 * not exist is skipped, and with deny_tcp neither bind nor connect works.
 * The front end's and the admin process's jails, made from a configuration
 * that keeps the vault, its key file and the audit log in one directory,
 * reach the configuration, the certificate and the audit log but not the
 * vault or the key; a reload naming another certificate is refused.
 * Secrets are found by identity, not by name: a configuration directory
 * named through a symbolic link, "..", or "//" still holds the vault; the
 * CLI's --passphrase-file beside the configuration is a secret; with both
 * roles' TLS keys in one directory each role gets file rules and cannot
 * read the other's key (a path naming it refuses the jail); the vault's
 * directory bind-mounted elsewhere is caught at the mount and above it. A
 * kernel without Landlock (the calls fail with ENOSYS or EOPNOTSUPP, made so
 * here by a seccomp filter) gives 1, not an error.
 *
 * Where Landlock itself is missing (an old kernel, or valgrind, which does
 * not know the calls), the cases that need it are skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/landlock.h>
#include <seccomp.h>

#include "config.h"
#include "fsjail.h"

#define ERRLEN		256
#define PATHLEN		512

static char tmpdir[PATHLEN];

static int
landlock_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);

	return abi < 0 ? 0 : (int)abi;
}

static void
path_in(char *buf, const char *dir, const char *name)
{
	assert_true((size_t)snprintf(buf, PATHLEN, "%s/%s", dir, name) < PATHLEN);
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* 0 when path opens for reading, else errno. */
static int
read_errno(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return errno;
	close(fd);
	return 0;
}

/* In the child: a failed check exits with its line number; CHILD_SKIP
 * (beyond those) skips the case. */
#define CHILD_CHECK(cond)	do { if (!(cond)) _exit(__LINE__ % 250 + 1); } while (0)
#define CHILD_SKIP		251

static void
wait_child(pid_t pid)
{
	int st;

	assert_true(pid >= 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == CHILD_SKIP)
		skip();
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("child failed: status %d (line %% 250 + 1)", WEXITSTATUS(st));
}

static int
setup(void **state)
{
	char tmpl[] = "/tmp/test_fsjail.XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	strlcpy(tmpdir, tmpl, sizeof(tmpdir));
	return 0;
}

static int
teardown(void **state)
{
	char cmd[PATHLEN + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A directory of its own for one case, with files a, b (the "key"),
 * and sub/c. */
static void
make_tree(const char *name, char *dir)
{
	char p[PATHLEN];

	path_in(dir, tmpdir, name);
	assert_int_equal(mkdir(dir, 0700), 0);
	path_in(p, dir, "a");
	write_file(p, "a\n");
	path_in(p, dir, "b");
	write_file(p, "key\n");
	path_in(p, dir, "sub");
	assert_int_equal(mkdir(p, 0700), 0);
	path_in(p, dir, "sub/c");
	write_file(p, "c\n");
}

/*
 * A child jailed to dir (fsjail_add, fsjail_apply), or with the front end's
 * jail of cfg when set, waits while the parent makes the file later (after
 * renaming the file at moved to moved_to when set), then must read later,
 * and moved_to when set.
 */
static void
jailed_then_smtp(const char *dir, const struct config *cfg, const char *later,
    const char *moved, const char *moved_to)
{
	char err[ERRLEN], b = 0;
	struct fsjail j;
	int go[2], ready[2];
	pid_t pid;

	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	if ((pid = fork()) == 0) {
		memset(&j, 0, sizeof(j));
		j.role = "test";
		if (cfg != NULL) {
			CHILD_CHECK(fsjail_smtp(&j, cfg, dir, NULL, err, sizeof(err)) == 0);
		} else {
			CHILD_CHECK(fsjail_add(&j, dir, err, sizeof(err)) == 0);
			CHILD_CHECK(fsjail_apply(&j, err, sizeof(err)) == 0);
		}
		CHILD_CHECK(write(ready[1], &b, 1) == 1);
		CHILD_CHECK(read(go[0], &b, 1) == 1);
		CHILD_CHECK(read_errno(later) == 0);
		CHILD_CHECK(moved_to == NULL || read_errno(moved_to) == 0);
		CHILD_CHECK(open(later, O_WRONLY | O_APPEND | O_CLOEXEC) == -1 &&
		    errno == EACCES);
		_exit(0);
	}
	assert_int_equal(read(ready[0], &b, 1), 1);
	if (moved != NULL)
		assert_int_equal(rename(moved, moved_to), 0);
	write_file(later, "later\n");
	assert_int_equal(write(go[1], &b, 1), 1);
	wait_child(pid);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
	close(ready[1]);
}

static void
jailed_then(const char *dir, const char *later, const char *moved, const char *moved_to)
{
	jailed_then_smtp(dir, NULL, later, moved, moved_to);
}

static void
test_files_and_directories(void **state)
{
	char dir[PATHLEN], a[PATHLEN], b[PATHLEN], sub[PATHLEN], c[PATHLEN], d[PATHLEN];
	char missing[PATHLEN], err[ERRLEN];
	struct fsjail j;
	pid_t pid;

	if (landlock_abi() == 0)
		skip();
	make_tree("files", dir);
	path_in(a, dir, "a");
	path_in(b, dir, "b");
	path_in(sub, dir, "sub");
	path_in(c, dir, "sub/c");
	path_in(d, dir, "sub/d");
	path_in(missing, dir, "missing");
	if ((pid = fork()) == 0) {
		memset(&j, 0, sizeof(j));
		j.role = "test";
		CHILD_CHECK(fsjail_add(&j, a, err, sizeof(err)) == 0);
		CHILD_CHECK(fsjail_add(&j, sub, err, sizeof(err)) == 0);
		CHILD_CHECK(fsjail_add(&j, missing, err, sizeof(err)) == 0);
		CHILD_CHECK(fsjail_add(&j, "", err, sizeof(err)) == 0);
		CHILD_CHECK(j.n_paths == 3);
		CHILD_CHECK(fsjail_apply(&j, err, sizeof(err)) == 0);
		CHILD_CHECK(j.on && j.abi >= 1 && j.n_rules == 2);
		/* Listed: read. Not listed: EACCES, though the file's mode allows it. */
		CHILD_CHECK(read_errno(a) == 0);
		CHILD_CHECK(read_errno(b) == EACCES);
		CHILD_CHECK(read_errno(dir) == EACCES);
		CHILD_CHECK(read_errno("/etc/passwd") == EACCES);
		/* A listed directory: its files and its listing. */
		CHILD_CHECK(read_errno(c) == 0);
		CHILD_CHECK(read_errno(sub) == 0);
		/* Nothing written, truncated or created, listed or not. */
		CHILD_CHECK(open(a, O_WRONLY | O_CLOEXEC) == -1 && errno == EACCES);
		CHILD_CHECK(open(c, O_RDWR | O_CLOEXEC) == -1 && errno == EACCES);
		CHILD_CHECK(open(d, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) == -1 &&
		    errno == EACCES);
		CHILD_CHECK(mkdir(d, 0700) == -1 && errno == EACCES);
		CHILD_CHECK(unlink(c) == -1 && errno == EACCES);
		CHILD_CHECK(rename(c, d) == -1 && (errno == EACCES || errno == EXDEV));
		_exit(0);
	}
	wait_child(pid);
	/* The jail held only for the child. */
	assert_int_equal(read_errno(b), 0);
	/* A file made after the jail in a listed directory is readable too. */
	jailed_then(sub, d, NULL, NULL);
}

static void
test_tcp_denied(void **state)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	char err[ERRLEN];
	struct fsjail j;
	int lfd, fd;
	pid_t pid;

	if (landlock_abi() < 4)
		skip();
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((lfd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	if ((pid = fork()) == 0) {
		memset(&j, 0, sizeof(j));
		j.role = "test";
		j.deny_tcp = 1;
		CHILD_CHECK(fsjail_apply(&j, err, sizeof(err)) == 0);
		CHILD_CHECK((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
		CHILD_CHECK(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 &&
		    errno == EACCES);
		sin.sin_port = 0;
		CHILD_CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 &&
		    errno == EACCES);
		_exit(0);
	}
	wait_child(pid);
	close(lfd);
}

/* The files of a configuration: the configuration in etc, the vault, its
 * key file and the audit log in state, both roles' certificates and keys
 * in tls, and a spool directory below dir. */
static void
config_files(struct config *cfg, char *conf, const char *dir, const char *etc,
    const char *state, const char *tls)
{
	struct {
		char		*path;		/* PATHLEN or more */
		const char	*dir, *name;
	} files[] = {
		{ conf, etc, "smtpvault.conf" },
		{ cfg->vault_path, state, "vault" },
		{ cfg->key_file, state, "vault.key" },
		{ cfg->audit_path, state, "audit.log" },
		{ cfg->smtp_tls_cert, tls, "lan.pem" },
		{ cfg->smtp_tls_key, tls, "lan.key" },
		{ cfg->admin_tls_cert, tls, "admin.pem" },
		{ cfg->admin_tls_key, tls, "admin.key" },
	};
	size_t i;

	config_defaults(cfg);
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path_in(files[i].path, files[i].dir, files[i].name);
		write_file(files[i].path, files[i].name);
	}
	path_in(cfg->spool_dir, dir, "spool");
	assert_int_equal(mkdir(cfg->spool_dir, 0700), 0);
}

/* A configuration like the example's: vault, key file and audit log in one
 * directory, the configuration and the certificates there too. */
static void
make_config(const char *name, char *dir, struct config *cfg, char *conf)
{
	path_in(dir, tmpdir, name);
	assert_int_equal(mkdir(dir, 0700), 0);
	config_files(cfg, conf, dir, dir, dir, dir);
}

static void
test_smtp_jail(void **state)
{
	char dir[PATHLEN], conf[PATHLEN], other[PATHLEN], pki[PATHLEN], renewed[PATHLEN];
	char err[ERRLEN];
	struct config cfg, next;
	struct fsjail j;
	pid_t pid;

	if (landlock_abi() == 0)
		skip();
	make_config("smtp", dir, &cfg, conf);
	path_in(other, dir, "other.pem");
	write_file(other, "cert\n");
	if ((pid = fork()) == 0) {
		CHILD_CHECK(fsjail_smtp(&j, &cfg, conf, NULL, err, sizeof(err)) == 0);
		CHILD_CHECK(j.on && j.deny_tcp);
		CHILD_CHECK(read_errno(conf) == 0);
		CHILD_CHECK(read_errno(cfg.smtp_tls_cert) == 0);
		CHILD_CHECK(read_errno(cfg.smtp_tls_key) == 0);
		CHILD_CHECK(read_errno("/dev/urandom") == 0);
		CHILD_CHECK(read_errno(cfg.key_file) == EACCES);
		CHILD_CHECK(read_errno(cfg.vault_path) == EACCES);
		CHILD_CHECK(read_errno(cfg.audit_path) == EACCES);
		CHILD_CHECK(read_errno(other) == EACCES);
		CHILD_CHECK(open(cfg.audit_path, O_WRONLY | O_APPEND) == -1 && errno == EACCES);
		/* A reload: the same files pass, another certificate does not. */
		next = cfg;
		CHILD_CHECK(fsjail_smtp_reload_check(&j, &next, err, sizeof(err)) == 0);
		next.smtp_tls_cert[0] = next.smtp_tls_key[0] = '\0';
		CHILD_CHECK(fsjail_smtp_reload_check(&j, &next, err, sizeof(err)) == 0);
		strlcpy(next.smtp_tls_cert, other, sizeof(next.smtp_tls_cert));
		CHILD_CHECK(fsjail_smtp_reload_check(&j, &next, err, sizeof(err)) == -1);
		CHILD_CHECK(strstr(err, other) != NULL && strstr(err, "restart") != NULL);
		_exit(0);
	}
	wait_child(pid);
	/* The certificate in a directory of its own: a renewal written as a new
	 * file and renamed over the old one is readable. */
	path_in(pki, dir, "pki");
	assert_int_equal(mkdir(pki, 0700), 0);
	path_in(cfg.smtp_tls_cert, pki, "lan.pem");
	write_file(cfg.smtp_tls_cert, "cert\n");
	path_in(renewed, pki, "lan.pem.new");
	jailed_then_smtp(conf, &cfg, renewed, NULL, NULL);
	path_in(renewed, pki, "lan.pem.new2");
	write_file(renewed, "renewed\n");
	path_in(other, pki, "lan.pem.new3");
	jailed_then_smtp(conf, &cfg, other, renewed, cfg.smtp_tls_cert);
}

static void
test_admin_jail(void **state)
{
	char dir[PATHLEN], conf[PATHLEN], logdir[PATHLEN], rotated[PATHLEN], err[ERRLEN];
	struct config cfg, next;
	struct fsjail j;
	pid_t pid;

	if (landlock_abi() == 0)
		skip();
	/* The audit log beside the vault: that one file only. */
	make_config("admin", dir, &cfg, conf);
	if ((pid = fork()) == 0) {
		CHILD_CHECK(fsjail_admin(&j, &cfg, conf, NULL, err, sizeof(err)) == 0);
		CHILD_CHECK(j.on && !j.deny_tcp);
		CHILD_CHECK(read_errno(conf) == 0);
		CHILD_CHECK(read_errno(cfg.audit_path) == 0);
		CHILD_CHECK(read_errno(cfg.vault_path) == EACCES);
		CHILD_CHECK(read_errno(cfg.key_file) == EACCES);
		CHILD_CHECK(read_errno(cfg.smtp_tls_key) == EACCES);
		CHILD_CHECK(read_errno("/etc/hosts") == 0);
		CHILD_CHECK(open(cfg.audit_path, O_WRONLY | O_APPEND) == -1 && errno == EACCES);
		next = cfg;
		CHILD_CHECK(fsjail_admin_reload_check(&j, &next, err, sizeof(err)) == 0);
		strlcpy(next.upstream_ca_file, cfg.smtp_tls_cert, sizeof(next.upstream_ca_file));
		CHILD_CHECK(fsjail_admin_reload_check(&j, &next, err, sizeof(err)) == -1);
		_exit(0);
	}
	wait_child(pid);
	/* The audit log in a directory of its own: the directory, so that the
	 * views follow logrotate (a rename, then a new file). */
	path_in(logdir, dir, "log");
	assert_int_equal(mkdir(logdir, 0700), 0);
	path_in(cfg.audit_path, logdir, "audit.log");
	write_file(cfg.audit_path, "log\n");
	path_in(rotated, logdir, "audit.log.1");
	if ((pid = fork()) == 0) {
		CHILD_CHECK(fsjail_admin(&j, &cfg, conf, NULL, err, sizeof(err)) == 0);
		CHILD_CHECK(fsjail_allows(&j, rotated));
		CHILD_CHECK(read_errno(cfg.vault_path) == EACCES);
		CHILD_CHECK(rename(cfg.audit_path, rotated) == -1);
		_exit(0);
	}
	wait_child(pid);
	jailed_then(logdir, cfg.audit_path, cfg.audit_path, rotated);
}

/*
 * A configuration with its parts apart: etc/ (the configuration), state/
 * (the vault, its key file, the audit log) and tls/ (both roles'
 * certificates and keys, as one directory of a host's keys often holds).
 */
static void
make_split_config(const char *name, char *dir, struct config *cfg, char *conf)
{
	char etc[PATHLEN], state[PATHLEN], tls[PATHLEN];

	path_in(dir, tmpdir, name);
	assert_int_equal(mkdir(dir, 0700), 0);
	path_in(etc, dir, "etc");
	path_in(state, dir, "state");
	path_in(tls, dir, "tls");
	assert_int_equal(mkdir(etc, 0700), 0);
	assert_int_equal(mkdir(state, 0700), 0);
	assert_int_equal(mkdir(tls, 0700), 0);
	config_files(cfg, conf, dir, etc, state, tls);
}

/* In a child: the jail of role ("smtp" or "admin") for cfg must be made
 * and then read each of ok[] and none of refused[] (NULL-terminated). */
static void
jail_reads(const char *role, const struct config *cfg, const char *conf,
    const char *passphrase_file, const char *const *ok, const char *const *refused)
{
	char err[ERRLEN];
	struct fsjail j;
	size_t i;
	pid_t pid;

	if ((pid = fork()) == 0) {
		if (strcmp(role, "smtp") == 0)
			CHILD_CHECK(fsjail_smtp(&j, cfg, conf, passphrase_file, err,
			    sizeof(err)) == 0);
		else
			CHILD_CHECK(fsjail_admin(&j, cfg, conf, passphrase_file, err,
			    sizeof(err)) == 0);
		CHILD_CHECK(j.on);
		for (i = 0; ok[i] != NULL; i++)
			CHILD_CHECK(read_errno(ok[i]) == 0);
		for (i = 0; refused[i] != NULL; i++)
			CHILD_CHECK(read_errno(refused[i]) == EACCES);
		_exit(0);
	}
	wait_child(pid);
}

/* Secrets are found by identity: a configuration directory named through a
 * symbolic link or with "..", or a secret named so, still holds the vault. */
static void
test_secret_by_identity(void **state)
{
	char dir[PATHLEN], conf[PATHLEN], link[PATHLEN], via[PATHLEN], sub[PATHLEN];
	struct config cfg;

	if (landlock_abi() == 0)
		skip();
	make_config("ident", dir, &cfg, conf);
	/* The configuration read through a symbolic link to its directory. */
	path_in(link, tmpdir, "ident-link");
	assert_int_equal(symlink(dir, link), 0);
	path_in(via, link, "smtpvault.conf");
	jail_reads("smtp", &cfg, via, NULL, (const char *[]){ via, cfg.smtp_tls_key, NULL },
	    (const char *[]){ cfg.vault_path, cfg.key_file, NULL });
	jail_reads("admin", &cfg, via, NULL, (const char *[]){ via, NULL },
	    (const char *[]){ cfg.vault_path, cfg.key_file, cfg.smtp_tls_key, NULL });
	/* Through "..", and "//". */
	path_in(sub, dir, "spool/..//smtpvault.conf");
	jail_reads("smtp", &cfg, sub, NULL, (const char *[]){ conf, NULL },
	    (const char *[]){ cfg.vault_path, cfg.key_file, NULL });
	/* The secrets named through the link: the same files. */
	path_in(cfg.vault_path, link, "vault");
	path_in(cfg.key_file, link, "spool/../vault.key");
	jail_reads("smtp", &cfg, conf, NULL, (const char *[]){ conf, NULL },
	    (const char *[]){ cfg.vault_path, cfg.key_file, NULL });
}

/* The CLI's --passphrase-file (and [vault] passphrase_file) in the
 * configuration's directory: that directory is no longer allowed whole. */
static void
test_passphrase_file_is_secret(void **state)
{
	char dir[PATHLEN], conf[PATHLEN], pass[PATHLEN], etc[PATHLEN];
	struct config cfg;

	if (landlock_abi() == 0)
		skip();
	make_split_config("pass", dir, &cfg, conf);
	path_in(etc, dir, "etc");
	path_in(pass, etc, "passphrase");
	write_file(pass, "correct horse\n");
	/* Without it among the secrets the whole of etc/ would be readable. */
	jail_reads("smtp", &cfg, conf, NULL, (const char *[]){ conf, pass, NULL },
	    (const char *[]){ cfg.vault_path, NULL });
	jail_reads("smtp", &cfg, conf, pass, (const char *[]){ conf, NULL },
	    (const char *[]){ pass, cfg.vault_path, NULL });
	jail_reads("admin", &cfg, conf, pass, (const char *[]){ conf, NULL },
	    (const char *[]){ pass, cfg.vault_path, NULL });
	strlcpy(cfg.passphrase_file, pass, sizeof(cfg.passphrase_file));
	jail_reads("smtp", &cfg, conf, NULL, (const char *[]){ conf, NULL },
	    (const char *[]){ pass, NULL });
}

/* Both roles' TLS keys in one directory: each role gets its own files, and
 * never the other's key (the admin page's key would let a compromised front
 * end impersonate it, and the reverse). One key file for both is shared. */
static void
test_other_role_tls_key(void **state)
{
	char dir[PATHLEN], conf[PATHLEN], renewed[PATHLEN], err[ERRLEN];
	struct config cfg;
	struct fsjail j;
	pid_t pid;

	if (landlock_abi() == 0)
		skip();
	make_split_config("tls", dir, &cfg, conf);
	jail_reads("smtp", &cfg, conf, NULL,
	    (const char *[]){ conf, cfg.smtp_tls_cert, cfg.smtp_tls_key, NULL },
	    (const char *[]){ cfg.admin_tls_key, cfg.vault_path, NULL });
	jail_reads("admin", &cfg, conf, NULL,
	    (const char *[]){ conf, cfg.admin_tls_cert, cfg.admin_tls_key, cfg.audit_path,
	    NULL },
	    (const char *[]){ cfg.smtp_tls_key, cfg.vault_path, NULL });
	/* File rules, not the directory: a new file there is not readable. */
	path_in(renewed, dir, "tls/lan.pem.new");
	write_file(renewed, "cert\n");
	jail_reads("smtp", &cfg, conf, NULL, (const char *[]){ conf, NULL },
	    (const char *[]){ renewed, NULL });
	/* One key for both: each reads it. */
	strlcpy(cfg.admin_tls_key, cfg.smtp_tls_key, sizeof(cfg.admin_tls_key));
	jail_reads("smtp", &cfg, conf, NULL, (const char *[]){ cfg.smtp_tls_key, NULL },
	    (const char *[]){ cfg.vault_path, NULL });
	jail_reads("admin", &cfg, conf, NULL, (const char *[]){ cfg.admin_tls_key, NULL },
	    (const char *[]){ cfg.vault_path, NULL });
	/* The admin's certificate path naming the front end's key: no start. */
	make_split_config("tls2", dir, &cfg, conf);
	strlcpy(cfg.admin_tls_cert, cfg.smtp_tls_key, sizeof(cfg.admin_tls_cert));
	if ((pid = fork()) == 0) {
		CHILD_CHECK(fsjail_admin(&j, &cfg, conf, NULL, err, sizeof(err)) == -1);
		CHILD_CHECK(strstr(err, "secret") != NULL && !j.on);
		CHILD_CHECK(read_errno(cfg.smtp_tls_key) == 0);	/* nothing restricted */
		_exit(0);
	}
	wait_child(pid);
}

/*
 * In a child with a mount namespace of its own: bind-mount src at target,
 * make the front end's jail with configuration conf, which must be
 * readable while the vault is not, by either path (vault_alt). CHILD_SKIP
 * when this process may not make a mount namespace.
 */
static void
bind_jail(const char *src, const char *target, const struct config *cfg, const char *conf,
    const char *vault_alt)
{
	char err[ERRLEN];
	struct fsjail j;
	pid_t pid;

	if ((pid = fork()) == 0) {
		if (unshare(CLONE_NEWNS) == -1 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1 ||
		    mount(src, target, NULL, MS_BIND, NULL) == -1)
			_exit(CHILD_SKIP);
		CHILD_CHECK(fsjail_smtp(&j, cfg, conf, NULL, err, sizeof(err)) == 0);
		CHILD_CHECK(j.on);
		CHILD_CHECK(read_errno(conf) == 0);
		CHILD_CHECK(read_errno(cfg->vault_path) == EACCES);
		CHILD_CHECK(read_errno(vault_alt) == EACCES);
		_exit(0);
	}
	wait_child(pid);
}

/* The vault's directory bind-mounted elsewhere: a configuration read
 * through that mount, or from a directory above it, does not open it. */
static void
test_secret_bind_mount(void **state)
{
	char dir[PATHLEN], conf[PATHLEN], outer[PATHLEN], inner[PATHLEN], stdir[PATHLEN];
	char via[PATHLEN], alt[PATHLEN];
	struct config cfg;

	if (landlock_abi() == 0)
		skip();
	make_split_config("bind", dir, &cfg, conf);
	path_in(stdir, dir, "state");
	path_in(outer, dir, "outer");
	path_in(inner, outer, "inner");
	assert_int_equal(mkdir(outer, 0700), 0);
	assert_int_equal(mkdir(inner, 0700), 0);
	path_in(alt, inner, "vault");
	/* The configuration beside the vault, read through the mount. */
	path_in(via, stdir, "smtpvault.conf");
	write_file(via, "[vault]\n");
	path_in(via, inner, "smtpvault.conf");
	bind_jail(stdir, inner, &cfg, via, alt);
	/* The configuration in the directory above the mount point. */
	path_in(via, outer, "smtpvault.conf");
	write_file(via, "[vault]\n");
	bind_jail(stdir, inner, &cfg, via, alt);
}

/* fsjail_add_secret and fsjail_reaches_secret alone (no Landlock needed). */
static void
test_reaches_secret(void **state)
{
	char dir[PATHLEN], a[PATHLEN], sub[PATHLEN], dots[PATHLEN], missing[PATHLEN];
	char err[ERRLEN];
	struct fsjail j;

	make_tree("reach", dir);
	path_in(a, dir, "a");
	path_in(sub, dir, "sub");
	path_in(dots, dir, "sub/..");
	path_in(missing, dir, "sub/not/yet");
	memset(&j, 0, sizeof(j));
	assert_int_equal(fsjail_add_secret(&j, NULL, err, sizeof(err)), 0);
	assert_int_equal(fsjail_add_secret(&j, "", err, sizeof(err)), 0);
	assert_int_equal(j.n_secret_ids, 0);
	path_in(a, dir, "sub/c");
	assert_int_equal(fsjail_add_secret(&j, a, err, sizeof(err)), 0);
	assert_true(fsjail_reaches_secret(&j, a));
	assert_true(fsjail_reaches_secret(&j, sub));
	assert_true(fsjail_reaches_secret(&j, dir));
	assert_true(fsjail_reaches_secret(&j, dots));
	assert_true(fsjail_reaches_secret(&j, "/"));
	path_in(a, dir, "a");
	assert_false(fsjail_reaches_secret(&j, a));
	assert_false(fsjail_reaches_secret(&j, "/etc/hosts"));
	assert_false(fsjail_reaches_secret(&j, missing));
	/* A secret not there yet: its nearest directory stands for it. */
	memset(&j, 0, sizeof(j));
	assert_int_equal(fsjail_add_secret(&j, missing, err, sizeof(err)), 0);
	assert_true(fsjail_reaches_secret(&j, sub));
	assert_false(fsjail_reaches_secret(&j, a));
}

/* A kernel without Landlock, as a seccomp filter fakes it. Where Landlock
 * is missing already (valgrind, which knows neither Landlock nor seccomp),
 * the real thing is tested instead. */
static void
unsupported(int error)
{
	char err[ERRLEN];
	struct fsjail j;
	scmp_filter_ctx ctx;
	int fake = landlock_abi() != 0;
	pid_t pid;

	if ((pid = fork()) == 0) {
		if (fake) {
			CHILD_CHECK((ctx = seccomp_init(SCMP_ACT_ALLOW)) != NULL);
			CHILD_CHECK(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(error),
			    SCMP_SYS(landlock_create_ruleset), 0) == 0);
			CHILD_CHECK(seccomp_load(ctx) == 0);
			seccomp_release(ctx);
		}
		memset(&j, 0, sizeof(j));
		j.role = "test";
		CHILD_CHECK(fsjail_add(&j, "/etc/hosts", err, sizeof(err)) == 0);
		CHILD_CHECK(fsjail_apply(&j, err, sizeof(err)) == 1);
		CHILD_CHECK(!j.on && fsjail_allows(&j, "/anything"));
		CHILD_CHECK(read_errno("/etc/passwd") == 0);
		_exit(0);
	}
	wait_child(pid);
}

static void
test_unsupported_kernel(void **state)
{
	unsupported(ENOSYS);
	unsupported(EOPNOTSUPP);
}

static void
test_allows_by_name(void **state)
{
	char err[ERRLEN];
	struct fsjail j;

	memset(&j, 0, sizeof(j));
	assert_int_equal(fsjail_add(&j, "/a/b", err, sizeof(err)), 0);
	assert_int_equal(fsjail_add(&j, "/c/file.pem", err, sizeof(err)), 0);
	assert_true(fsjail_allows(&j, "/x"));		/* not on: everything */
	j.on = 1;
	assert_true(fsjail_allows(&j, "/a/b"));
	assert_true(fsjail_allows(&j, "/a/b/c/d"));
	assert_true(fsjail_allows(&j, "/c/file.pem"));
	assert_true(fsjail_allows(&j, ""));		/* unset */
	assert_false(fsjail_allows(&j, "/a/bc"));
	assert_false(fsjail_allows(&j, "/a"));
	assert_false(fsjail_allows(&j, "/c/file.pem.new"));
}

static void
test_list_bounds(void **state)
{
	char err[ERRLEN], longpath[CONFIG_PATH_MAX + 8];
	struct fsjail j;
	size_t i;

	memset(&j, 0, sizeof(j));
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(fsjail_add(&j, longpath, err, sizeof(err)), -1);
	for (i = 0; i < FSJAIL_PATHS_MAX; i++)
		assert_int_equal(fsjail_add(&j, "/etc/hosts", err, sizeof(err)), 0);
	assert_int_equal(fsjail_add(&j, "/etc/hosts", err, sizeof(err)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_files_and_directories),
		cmocka_unit_test(test_tcp_denied),
		cmocka_unit_test(test_smtp_jail),
		cmocka_unit_test(test_admin_jail),
		cmocka_unit_test(test_secret_by_identity),
		cmocka_unit_test(test_passphrase_file_is_secret),
		cmocka_unit_test(test_other_role_tls_key),
		cmocka_unit_test(test_secret_bind_mount),
		cmocka_unit_test(test_reaches_secret),
		cmocka_unit_test(test_unsupported_kernel),
		cmocka_unit_test(test_allows_by_name),
		cmocka_unit_test(test_list_bounds),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
