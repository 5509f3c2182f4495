/*
 * fsjail.c: Landlock filesystem confinement (fsjail.h). glibc has no
 * wrappers for the three Landlock calls and the installed <linux/landlock.h>
 * may predate the running kernel, so the rights and the ruleset's layout
 * of later ABIs are spelled out here; what a ruleset handles is masked by
 * the ABI the kernel reports, as the kernel's documentation recommends.
 */
#include "fsjail.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/landlock.h>
#include <openssl/conf.h>
#include <openssl/x509.h>

#include "log.h"

/* Filesystem rights by the ABI that brought them. */
#define FSJAIL_FS_ABI1		((1ULL << 13) - 1)	/* EXECUTE .. MAKE_SYM */
#define FSJAIL_FS_REFER		(1ULL << 13)		/* ABI 2 */
#define FSJAIL_FS_TRUNCATE	(1ULL << 14)		/* ABI 3 */
#define FSJAIL_FS_IOCTL_DEV	(1ULL << 15)		/* ABI 5 */
#define FSJAIL_FS_READ_FILE	(1ULL << 2)
#define FSJAIL_FS_READ_DIR	(1ULL << 3)
/* ABI 4: TCP */
#define FSJAIL_NET_BIND_TCP	(1ULL << 0)
#define FSJAIL_NET_CONNECT_TCP	(1ULL << 1)
/* ABI 6: IPC scopes */
#define FSJAIL_SCOPE_ABSTRACT_UNIX	(1ULL << 0)
#define FSJAIL_SCOPE_SIGNAL		(1ULL << 1)

#define FSJAIL_ABI_NET		4
#define FSJAIL_ABI_SCOPE	6

/* struct landlock_ruleset_attr as of ABI 6; the kernel is told how much of
 * it this ABI reads. */
struct fsjail_ruleset_attr {
	uint64_t	handled_access_fs;
	uint64_t	handled_access_net;	/* ABI 4 */
	uint64_t	scoped;			/* ABI 6 */
};

#define FSJAIL_ATTR_SIZE_ABI1	offsetof(struct fsjail_ruleset_attr, handled_access_net)
#define FSJAIL_ATTR_SIZE_ABI4	offsetof(struct fsjail_ruleset_attr, scoped)

static uint64_t
fsjail_fs_rights(int abi)
{
	uint64_t r = FSJAIL_FS_ABI1;

	if (abi >= 2)
		r |= FSJAIL_FS_REFER;
	if (abi >= 3)
		r |= FSJAIL_FS_TRUNCATE;
	if (abi >= 5)
		r |= FSJAIL_FS_IOCTL_DEV;
	return r;
}

int
fsjail_add(struct fsjail *j, const char *path, char *err, size_t errlen)
{
	if (path == NULL || *path == '\0')
		return 0;
	if (j->n_paths == FSJAIL_PATHS_MAX) {
		snprintf(err, errlen, "landlock: more than %d paths", FSJAIL_PATHS_MAX);
		return -1;
	}
	if (strlcpy(j->paths[j->n_paths], path, sizeof(j->paths[0])) >= sizeof(j->paths[0])) {
		snprintf(err, errlen, "landlock: path too long: %s", path);
		return -1;
	}
	j->n_paths++;
	return 0;
}

static int
fsjail_id_secret(const struct fsjail *j, const struct stat *st)
{
	size_t i;

	for (i = 0; i < j->n_secret_ids; i++)
		if (j->secret_ids[i].dev == st->st_dev && j->secret_ids[i].ino == st->st_ino)
			return 1;
	return 0;
}

static int
fsjail_id_add(struct fsjail *j, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) == -1 || fsjail_id_secret(j, &st))
		return 0;
	if (j->n_secret_ids == FSJAIL_SECRET_IDS_MAX) {
		snprintf(err, errlen, "landlock: more than %d secret directories",
		    FSJAIL_SECRET_IDS_MAX);
		return -1;
	}
	j->secret_ids[j->n_secret_ids].dev = st.st_dev;
	j->secret_ids[j->n_secret_ids].ino = st.st_ino;
	j->n_secret_ids++;
	return 0;
}

/* Cut path to its parent directory: "/a/b" -> "/a", "/a" -> "/", "a" -> ".".
 * -1 when there is none ("/" or "."). */
static int
fsjail_parent(char *path, size_t len)
{
	char *slash;

	if (strcmp(path, "/") == 0 || strcmp(path, ".") == 0)
		return -1;
	if ((slash = strrchr(path, '/')) == NULL)
		strlcpy(path, ".", len);
	else if (slash == path)
		path[1] = '\0';
	else
		*slash = '\0';
	return 0;
}

/* path and every directory above it (path is cut down in place). */
static int
fsjail_add_chain(struct fsjail *j, char *path, size_t len, char *err, size_t errlen)
{
	do {
		if (fsjail_id_add(j, path, err, errlen) == -1)
			return -1;
	} while (fsjail_parent(path, len) == 0);
	return 0;
}

/* One mount of /proc/self/mountinfo: its device, the directory of that
 * filesystem it shows (root), and where (point). */
struct fsjail_mount {
	dev_t	dev;
	char	root[CONFIG_PATH_MAX];
	char	point[CONFIG_PATH_MAX];
};

#define FSJAIL_MOUNTINFO_LINE	(3 * CONFIG_PATH_MAX)

/* mountinfo writes a space, tab, newline or backslash as \ooo. */
static void
fsjail_unescape(char *s)
{
	char *o = s;

	for (; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* The next mount: 1, or 0 at the end. A line too long to hold is skipped. */
static int
fsjail_mount_next(FILE *f, struct fsjail_mount *m)
{
	char line[FSJAIL_MOUNTINFO_LINE];
	unsigned major, minor;
	int c;

	while (fgets(line, sizeof(line), f) != NULL) {
		if (strchr(line, '\n') == NULL && !feof(f)) {
			while ((c = fgetc(f)) != EOF && c != '\n')
				;
			continue;
		}
		/* CONFIG_PATH_MAX - 1 */
		if (sscanf(line, "%*s %*s %u:%u %1023s %1023s", &major, &minor, m->root,
		    m->point) != 4 || strlen(m->root) == CONFIG_PATH_MAX - 1 ||
		    strlen(m->point) == CONFIG_PATH_MAX - 1)
			continue;
		fsjail_unescape(m->root);
		fsjail_unescape(m->point);
		m->dev = makedev(major, minor);
		return 1;
	}
	return 0;
}

/* What follows dir in path ("" for dir itself, "/x" below it), or NULL
 * when path is not dir or below it. */
static const char *
fsjail_below(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return path[0] == '/' ? path : NULL;
	if (strncmp(path, dir, n) != 0 || (path[n] != '\0' && path[n] != '/'))
		return NULL;
	return path + n;
}

static int
fsjail_join(char *out, size_t len, const char *dir, const char *rest)
{
	if (strcmp(dir, "/") == 0)
		return strlcpy(out, *rest != '\0' ? rest : "/", len) >= len ? -1 : 0;
	return (size_t)snprintf(out, len, "%s%s", dir, rest) >= len ? -1 : 0;
}

/*
 * The directory of a secret mounted elsewhere too (a bind mount): Landlock
 * follows the path an open takes, so the directories above every place the
 * secret shows up are secrets as well. The mount that real (canonical) goes
 * through gives the secret's path inside its filesystem; each mount of that
 * filesystem whose root lies above it shows the secret at another path.
 */
static int
fsjail_secret_mounts(struct fsjail *j, const char *real, char *err, size_t errlen)
{
	struct fsjail_mount m, via;
	char fspath[CONFIG_PATH_MAX], alt[CONFIG_PATH_MAX];
	const char *rest;
	struct stat st;
	size_t best = 0;
	int found = 0, rc = -1;
	FILE *f;

	if (stat(real, &st) == -1 || (f = fopen("/proc/self/mountinfo", "re")) == NULL)
		return 0;
	while (fsjail_mount_next(f, &m)) {
		/* The last of the longest mount points: later mounts cover earlier. */
		if (m.dev == st.st_dev && fsjail_below(real, m.point) != NULL &&
		    (!found || strlen(m.point) >= best)) {
			via = m;
			best = strlen(m.point);
			found = 1;
		}
	}
	if (!found || fsjail_join(fspath, sizeof(fspath), via.root,
	    fsjail_below(real, via.point)) == -1) {
		rc = 0;
		goto done;
	}
	rewind(f);
	while (fsjail_mount_next(f, &m)) {
		if (m.dev != st.st_dev || (rest = fsjail_below(fspath, m.root)) == NULL ||
		    fsjail_join(alt, sizeof(alt), m.point, rest) == -1)
			continue;
		if (fsjail_add_chain(j, alt, sizeof(alt), err, errlen) == -1)
			goto done;
	}
	rc = 0;
done:
	fclose(f);
	return rc;
}

/*
 * A Landlock rule on a directory reaches every file below it, whatever path
 * named the directory: so a secret is recorded as the identity of the file
 * and of each directory on its canonical path, up to the root, and on each
 * other path a bind mount shows it at. Comparing names instead misses a
 * symbolic link, "..", "//" or a bind mount.
 */
int
fsjail_add_secret(struct fsjail *j, const char *path, char *err, size_t errlen)
{
	char buf[CONFIG_PATH_MAX], *real;

	if (path == NULL || *path == '\0')
		return 0;
	if (strlcpy(buf, path, sizeof(buf)) >= sizeof(buf)) {
		snprintf(err, errlen, "landlock: path too long: %s", path);
		return -1;
	}
	/* Not there (yet): its nearest existing ancestor stands for it. */
	while ((real = realpath(buf, NULL)) == NULL) {
		if (fsjail_parent(buf, sizeof(buf)) == -1) {
			snprintf(err, errlen, "landlock: %s: %s", path, strerror(errno));
			return -1;
		}
	}
	if (strlcpy(buf, real, sizeof(buf)) >= sizeof(buf)) {
		free(real);
		snprintf(err, errlen, "landlock: path too long: %s", path);
		return -1;
	}
	free(real);
	if (fsjail_secret_mounts(j, buf, err, errlen) == -1)
		return -1;
	return fsjail_add_chain(j, buf, sizeof(buf), err, errlen);
}

int
fsjail_reaches_secret(const struct fsjail *j, const char *path)
{
	struct stat st;

	if (path == NULL || *path == '\0' || stat(path, &st) == -1)
		return 0;
	return fsjail_id_secret(j, &st);
}

/* One read-only rule for path: a directory may be listed and its files read,
 * a file read. 0 (added, or missing: 1 in *missing), or -1 with err. */
static int
fsjail_rule(const struct fsjail *j, int ruleset, const char *path, int *missing, char *err,
    size_t errlen)
{
	struct landlock_path_beneath_attr pb;
	struct stat st;
	int fd, rc = -1;

	*missing = 0;
	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1) {
		if (errno == ENOENT || errno == ENOTDIR) {
			*missing = 1;
			return 0;
		}
		snprintf(err, errlen, "landlock: %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "landlock: %s: %s", path, strerror(errno));
		goto done;
	}
	/* The inode the rule is made on, not its name: the last word. */
	if (fsjail_id_secret(j, &st)) {
		snprintf(err, errlen, "landlock: %s is, or holds, a secret (the vault, a key "
		    "or another process's TLS key): no rule for it", path);
		goto done;
	}
	memset(&pb, 0, sizeof(pb));
	pb.allowed_access = FSJAIL_FS_READ_FILE;
	if (S_ISDIR(st.st_mode))
		pb.allowed_access |= FSJAIL_FS_READ_DIR;
	pb.parent_fd = fd;
	if (syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0) {
		snprintf(err, errlen, "landlock: rule for %s: %s", path, strerror(errno));
		goto done;
	}
	rc = 0;
done:
	close(fd);
	return rc;
}

int
fsjail_apply(struct fsjail *j, char *err, size_t errlen)
{
	struct fsjail_ruleset_attr attr;
	size_t i, size = FSJAIL_ATTR_SIZE_ABI1;
	long abi;
	int ruleset, missing, rc = -1;

	j->on = 0;
	j->n_rules = 0;
	if ((abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION)) < 0) {
		if (errno == ENOSYS || errno == EOPNOTSUPP)
			return 1;
		snprintf(err, errlen, "landlock: ABI version: %s", strerror(errno));
		return -1;
	}
	j->abi = (int)abi;
	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = fsjail_fs_rights(j->abi);
	if (j->abi >= FSJAIL_ABI_NET) {
		size = FSJAIL_ATTR_SIZE_ABI4;
		/* No rule allows either: a handled right is refused. */
		if (j->deny_tcp)
			attr.handled_access_net = FSJAIL_NET_BIND_TCP | FSJAIL_NET_CONNECT_TCP;
	}
	if (j->abi >= FSJAIL_ABI_SCOPE) {
		size = sizeof(attr);
		attr.scoped = FSJAIL_SCOPE_ABSTRACT_UNIX | FSJAIL_SCOPE_SIGNAL;
	}
	if ((ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0)) < 0) {
		snprintf(err, errlen, "landlock: create ruleset: %s", strerror(errno));
		return -1;
	}
	for (i = 0; i < j->n_paths; i++) {
		if (fsjail_rule(j, ruleset, j->paths[i], &missing, err, errlen) == -1)
			goto done;
		if (missing)
			log_debug("event=sandbox process=%s landlock_skip=\"%s\" reason=missing",
			    j->role, j->paths[i]);
		else
			j->n_rules++;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
		snprintf(err, errlen, "landlock: no_new_privs: %s", strerror(errno));
		goto done;
	}
	if (syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
		snprintf(err, errlen, "landlock: restrict: %s", strerror(errno));
		goto done;
	}
	j->on = 1;
	rc = 0;
done:
	close(ruleset);
	return rc;
}

int
fsjail_allows(const struct fsjail *j, const char *path)
{
	size_t i, n;

	if (!j->on || path == NULL || *path == '\0')
		return 1;
	for (i = 0; i < j->n_paths; i++) {
		n = strlen(j->paths[i]);
		if (strncmp(path, j->paths[i], n) == 0 && (path[n] == '\0' ||
		    (path[n] == '/' && n > 0)))
			return 1;
	}
	return 0;
}

/* ---- The roles' jails ------------------------------------------------------------ */

/*
 * Files no jail may reach: the vault, its key sources (the CLI's
 * --passphrase-file among them), and the TLS key of the other role, whose
 * theft would let a compromised front end impersonate the admin page (or
 * the reverse); not when both roles use one key file.
 */
static int
fsjail_secrets(struct fsjail *j, const struct config *cfg, const char *passphrase_file,
    const char *own_key, const char *other_key, char *err, size_t errlen)
{
	struct stat own, other;
	int shared;

	shared = own_key[0] != '\0' && other_key[0] != '\0' && stat(own_key, &own) == 0 &&
	    stat(other_key, &other) == 0 && own.st_dev == other.st_dev &&
	    own.st_ino == other.st_ino;
	if (fsjail_add_secret(j, cfg->vault_path, err, errlen) == -1 ||
	    fsjail_add_secret(j, cfg->key_file, err, errlen) == -1 ||
	    fsjail_add_secret(j, cfg->passphrase_file, err, errlen) == -1 ||
	    fsjail_add_secret(j, passphrase_file, err, errlen) == -1 ||
	    fsjail_add_secret(j, getenv("CREDENTIALS_DIRECTORY"), err, errlen) == -1 ||
	    (!shared && fsjail_add_secret(j, other_key, err, errlen) == -1))
		return -1;
	return 0;
}

/* A directory goes in only when no secret lies below it. */
static int
fsjail_add_dir(struct fsjail *j, const char *dir, char *err, size_t errlen)
{
	if (dir == NULL || *dir == '\0')
		return 0;
	if (fsjail_reaches_secret(j, dir)) {
		log_warn("event=sandbox process=%s landlock_skip=\"%s\" reason=\"a secret (the "
		    "vault, a key) is below it\"", j->role, dir);
		return 0;
	}
	return fsjail_add(j, dir, err, errlen);
}

#if defined(__SANITIZE_ADDRESS__)
#define FSJAIL_SANITIZER	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FSJAIL_SANITIZER	1
#endif
#endif
#ifndef FSJAIL_SANITIZER
#define FSJAIL_SANITIZER	0
#endif

/*
 * A file the process re-reads by path (the configuration, a certificate):
 * its directory, and the directory of the file a symbolic link names (as
 * certbot's live/ links name archive/), so that a file replaced by a rename
 * (an editor, certbot's renewal) is still readable. A directory that holds
 * a secret (by identity, wherever below it) gives way to the file alone,
 * said once: such a file replaced by a rename takes a restart.
 */
/* The absolute directory of path ("" for "/x": the root is no place for a
 * rule), or -1. */
static int
fsjail_dir_of(const char *path, char *dir, size_t len)
{
	char *slash;

	if (path[0] == '/') {
		if (strlcpy(dir, path, len) >= len)
			return -1;
	} else if (getcwd(dir, len) == NULL || strlcat(dir, "/", len) >= len ||
	    strlcat(dir, path, len) >= len) {
		return -1;
	}
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return -1;
	*slash = '\0';
	return 0;
}

static int
fsjail_add_file(struct fsjail *j, const char *path, char *err, size_t errlen)
{
	char dirs[2][CONFIG_PATH_MAX], *real;
	size_t i, n = 0;

	if (path == NULL || *path == '\0')
		return 0;
	if (fsjail_dir_of(path, dirs[n], sizeof(dirs[n])) == 0 &&
	    !fsjail_reaches_secret(j, dirs[n]))
		n++;
	else
		goto file;
	if ((real = realpath(path, NULL)) != NULL) {
		if (fsjail_dir_of(real, dirs[n], sizeof(dirs[n])) == 0 &&
		    strcmp(dirs[n], dirs[0]) != 0) {
			if (fsjail_reaches_secret(j, dirs[n])) {
				free(real);
				goto file;
			}
			n++;
		}
		free(real);
	}
	for (i = 0; i < n; i++)
		if (fsjail_add(j, dirs[i], err, errlen) == -1)
			return -1;
	return 0;
file:
	log_warn("event=sandbox process=%s landlock_file=\"%s\" note=\"its directory holds "
	    "a secret (the vault, a key): only this file is readable; a new file at this path "
	    "(a rename) takes a restart\"", j->role, path);
	return fsjail_add(j, path, err, errlen);
}

/* What every jail reads: the configuration (SIGHUP), randomness, time
 * zones, OpenSSL's configuration (loaded at the first TLS context); under
 * ASan the process's /proc directory, whose maps LeakSanitizer reads at
 * exit. */
static int
fsjail_add_common(struct fsjail *j, const char *config_path, char *err, size_t errlen)
{
	char *conf;
	int rc;

	if ((conf = CONF_get1_default_config_file()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc = fsjail_add_file(j, config_path, err, errlen) == -1 ||
	    fsjail_add(j, "/dev/urandom", err, errlen) == -1 ||
	    fsjail_add(j, "/etc/localtime", err, errlen) == -1 ||
	    fsjail_add(j, "/usr/share/zoneinfo", err, errlen) == -1 ||
	    fsjail_add(j, conf, err, errlen) == -1 ||
	    (FSJAIL_SANITIZER && fsjail_add(j, "/proc/self", err, errlen) == -1) ? -1 : 0;
	OPENSSL_free(conf);
	return rc;
}

/* The trust store of an upstream check: OpenSSL's default file and
 * directory, or those $SSL_CERT_FILE and $SSL_CERT_DIR (a list) name. */
static int
fsjail_add_trust(struct fsjail *j, const struct config *cfg, char *err, size_t errlen)
{
	const char *file = getenv(X509_get_default_cert_file_env());
	const char *dirs = getenv(X509_get_default_cert_dir_env());
	char list[CONFIG_PATH_MAX];
	char *p, *next;

	if (fsjail_add(j, file != NULL ? file : X509_get_default_cert_file(), err,
	    errlen) == -1)
		return -1;
	if (dirs == NULL)
		dirs = X509_get_default_cert_dir();
	if (strlcpy(list, dirs, sizeof(list)) >= sizeof(list)) {
		snprintf(err, errlen, "landlock: %s too long", X509_get_default_cert_dir_env());
		return -1;
	}
	for (p = list; p != NULL; p = next) {
		if ((next = strchr(p, ':')) != NULL)
			*next++ = '\0';
		if (fsjail_add_dir(j, p, err, errlen) == -1)
			return -1;
	}
	return fsjail_add_file(j, cfg->upstream_ca_file, err, errlen);
}

/* The one line each process logs about its jail. */
static int
fsjail_finish(struct fsjail *j, char *err, size_t errlen)
{
	int rc;

	if ((rc = fsjail_apply(j, err, errlen)) == -1)
		return -1;
	if (rc == 1)
		log_warn("event=sandbox process=%s landlock=unavailable", j->role);
	else
		log_info("event=sandbox process=%s landlock=on abi=%d paths=%zu", j->role, j->abi,
		    j->n_rules);
	return 0;
}

int
fsjail_smtp(struct fsjail *j, const struct config *cfg, const char *config_path,
    const char *passphrase_file, char *err, size_t errlen)
{
	memset(j, 0, sizeof(*j));
	j->role = "smtp";
	j->deny_tcp = 1;
	if (fsjail_secrets(j, cfg, passphrase_file, cfg->smtp_tls_key, cfg->admin_tls_key, err,
	    errlen) == -1 ||
	    fsjail_add_common(j, config_path, err, errlen) == -1 ||
	    fsjail_add_file(j, cfg->smtp_tls_cert, err, errlen) == -1 ||
	    fsjail_add_file(j, cfg->smtp_tls_key, err, errlen) == -1)
		return -1;
	return fsjail_finish(j, err, errlen);
}

/*
 * The admin process reads the audit log for its views. Its directory is
 * allowed, so that the views follow logrotate's new file, unless a secret
 * is in it too (the example configuration keeps the vault and the log in
 * /var/lib/smtpvault): then only the file that is there now,
 * and after a rotation the views need a restart (said once at start).
 */
static int
fsjail_add_audit(struct fsjail *j, const struct config *cfg, char *err, size_t errlen)
{
	char dir[CONFIG_PATH_MAX];
	char *slash;

	if (strlcpy(dir, cfg->audit_path, sizeof(dir)) >= sizeof(dir) ||
	    (slash = strrchr(dir, '/')) == NULL)
		return fsjail_add(j, cfg->audit_path, err, errlen);
	*slash = '\0';
	if (dir[0] == '\0')
		strlcpy(dir, "/", sizeof(dir));
	if (!fsjail_reaches_secret(j, dir))
		return fsjail_add(j, dir, err, errlen);
	log_warn("event=sandbox process=admin note=\"the audit log shares its directory with "
	    "a secret (the vault, a key): the admin views read only this audit log file; after "
	    "a rotation they need a restart\"");
	return fsjail_add(j, cfg->audit_path, err, errlen);
}

int
fsjail_admin(struct fsjail *j, const struct config *cfg, const char *config_path,
    const char *passphrase_file, char *err, size_t errlen)
{
	memset(j, 0, sizeof(*j));
	j->role = "admin";
	/* TCP stays: the upstream check connects to [upstream] and DNS. */
	if (fsjail_secrets(j, cfg, passphrase_file, cfg->admin_tls_key, cfg->smtp_tls_key, err,
	    errlen) == -1 ||
	    fsjail_add_common(j, config_path, err, errlen) == -1 ||
	    fsjail_add(j, cfg->admin_tls_cert, err, errlen) == -1 ||
	    fsjail_add(j, cfg->admin_tls_key, err, errlen) == -1 ||
	    fsjail_add_audit(j, cfg, err, errlen) == -1 ||
	    fsjail_add_trust(j, cfg, err, errlen) == -1 ||
	    /* the resolver, and the privilege drop's initgroups() after the jail */
	    fsjail_add(j, "/etc/resolv.conf", err, errlen) == -1 ||
	    fsjail_add(j, "/etc/hosts", err, errlen) == -1 ||
	    fsjail_add(j, "/etc/nsswitch.conf", err, errlen) == -1 ||
	    fsjail_add(j, "/etc/group", err, errlen) == -1)
		return -1;
	return fsjail_finish(j, err, errlen);
}

static int
fsjail_check(const struct fsjail *j, const char *what, const char *path, char *err,
    size_t errlen)
{
	if (fsjail_allows(j, path))
		return 0;
	snprintf(err, errlen, "%s %s is outside the process's Landlock jail; a new path "
	    "takes a restart", what, path);
	return -1;
}

int
fsjail_smtp_reload_check(const struct fsjail *j, const struct config *cfg, char *err,
    size_t errlen)
{
	if (fsjail_check(j, "[smtp] tls_cert", cfg->smtp_tls_cert, err, errlen) == -1 ||
	    fsjail_check(j, "[smtp] tls_key", cfg->smtp_tls_key, err, errlen) == -1)
		return -1;
	return 0;
}

int
fsjail_admin_reload_check(const struct fsjail *j, const struct config *cfg, char *err,
    size_t errlen)
{
	if (fsjail_check(j, "[upstream] ca_file", cfg->upstream_ca_file, err, errlen) == -1 ||
	    fsjail_check(j, "[audit] path", cfg->audit_path, err, errlen) == -1)
		return -1;
	return 0;
}
