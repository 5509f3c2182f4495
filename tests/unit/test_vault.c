/*
 * test_vault.c: unit tests of the vault (vault.h): key sources, the file
 * format and its refusal of every damaged, truncated or foreign file, every
 * account and admin operation through a save and a re-open, re-keying,
 * locking and reloading, updates by the daemon's read-only handle
 * (vault_begin_update), the audit key across re-keys, and the payload parser
 * on arbitrary bytes.
 *
 * Passphrase vaults use VAULT_KDF_INTERACTIVE and most tests use key-file
 * vaults, which need no KDF work, so that the suite stays fast.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bsd/string.h>
#include <sodium.h>

#include "vault.h"
#include "vault_internal.h"

#define ERRLEN		512
#define PASSPHRASE	"correct horse battery staple"
#define NOW		((time_t)1700000000)
#define FUZZ_SEED	0x5eed5eed5eedULL
#define FUZZ_RANDOM_ITER	3000
#define FUZZ_MUTATE_ITER	6000
#define FUZZ_MAX_LEN	600
#define CONCURRENT_ROTATIONS	50
#define ADMIN_HASH_SAMPLE \
	"$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$" \
	"aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

static char tdir[PATH_MAX];
static unsigned char test_key[VAULT_KEY_BYTES];
static unsigned char other_key[VAULT_KEY_BYTES];

/* ---------------------------------------------------------------- helpers */

static void
tpath(char *buf, size_t len, const char *name)
{
	assert_true((size_t)snprintf(buf, len, "%s/%s", tdir, name) < len);
}

static void
write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* Replace a file the way vault writers do: a new inode, renamed into place. */
static void
replace_file(const char *path, const void *data, size_t len)
{
	char tmp[PATH_MAX];

	assert_true((size_t)snprintf(tmp, sizeof(tmp), "%s.test-new", path) < sizeof(tmp));
	write_file(tmp, data, len, 0600);
	assert_int_equal(rename(tmp, path), 0);
}

static uint8_t *
read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* Errors are one line, no trailing newline, no "error:" prefix, and say what. */
static void
assert_err(const char *err, const char *needle)
{
	assert_true(err[0] != '\0');
	assert_null(strchr(err, '\n'));
	assert_true(strncasecmp(err, "error", 5) != 0);
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", err, needle);
}

static void
src_pass(struct vault_keysrc *src, const char *pw)
{
	src->is_keyfile = 0;
	src->len = strlen(pw);
	src->material = sodium_malloc(src->len);
	assert_non_null(src->material);
	memcpy(src->material, pw, src->len);
}

static void
src_key(struct vault_keysrc *src, const unsigned char *key)
{
	src->is_keyfile = 1;
	src->len = VAULT_KEY_BYTES;
	src->material = sodium_malloc(VAULT_KEY_BYTES);
	assert_non_null(src->material);
	memcpy(src->material, key, VAULT_KEY_BYTES);
}

/* A fresh key-file vault at tdir/name, opened for update. */
static struct vault *
kv_new(const char *name, char *path, size_t pathlen)
{
	struct vault_keysrc src;
	struct vault *v = NULL;
	char err[ERRLEN];

	tpath(path, pathlen, name);
	src_key(&src, test_key);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_MODERATE, err, sizeof(err)), 0);
	assert_int_equal(vault_open(path, &src, 1, &v, err, sizeof(err)), 0);
	vault_keysrc_wipe(&src);
	return v;
}

/* Save, close and open again for update with test_key: a full round trip. */
static struct vault *
kv_reopen(struct vault *v)
{
	struct vault_keysrc src;
	char err[ERRLEN], path[PATH_MAX];
	struct vault *nv = NULL;

	if (vault_save(v, err, sizeof(err)) != 0)
		fail_msg("save: %s", err);
	strlcpy(path, vault_path(v), sizeof(path));
	vault_close(v);
	src_key(&src, test_key);
	if (vault_open(path, &src, 1, &nv, err, sizeof(err)) != 0)
		fail_msg("reopen: %s", err);
	vault_keysrc_wipe(&src);
	return nv;
}

static void
tmpl_init(struct vault_account *t, const char *addr, const char *alias1,
    const char *alias2)
{
	memset(t, 0, sizeof(*t));
	t->upstream_tls = -1;
	strlcpy(t->address, addr, sizeof(t->address));
	if (alias1 != NULL)
		strlcpy(t->aliases[t->n_aliases++], alias1, sizeof(t->aliases[0]));
	if (alias2 != NULL)
		strlcpy(t->aliases[t->n_aliases++], alias2, sizeof(t->aliases[0]));
}

static void
add_account(struct vault *v, const char *addr, const char *alias, const char *secret)
{
	struct vault_account t;
	char err[ERRLEN];

	tmpl_init(&t, addr, alias, NULL);
	if (vault_account_add(v, &t, (const unsigned char *)secret, strlen(secret), NOW,
	    err, sizeof(err)) != 0)
		fail_msg("add %s: %s", addr, err);
}

static void
assert_secret(const struct vault_credential *c, const char *secret)
{
	assert_non_null(c);
	assert_int_equal(c->secret.len, strlen(secret));
	assert_memory_equal(c->secret.buf, secret, c->secret.len);
	assert_int_equal(c->secret.buf[c->secret.len], '\0');
}

/* A copy of the audit root key of d, for comparisons (tests only). */
static void
audit_root_of(const struct vault_data *d, unsigned char out[VAULT_AUDIT_ROOT_BYTES])
{
	assert_non_null(d->audit_root);
	sodium_mprotect_readonly(d->audit_root);
	memcpy(out, d->audit_root, VAULT_AUDIT_ROOT_BYTES);
	sodium_mprotect_noaccess(d->audit_root);
}

static struct vault *
open_ro(const char *path, const unsigned char *key)
{
	struct vault_keysrc src;
	struct vault *v = NULL;
	char err[ERRLEN];

	src_key(&src, key);
	if (vault_open(path, &src, 0, &v, err, sizeof(err)) != 0)
		fail_msg("open %s: %s", path, err);
	vault_keysrc_wipe(&src);
	return v;
}

static struct vault *
open_rw(const char *path, const unsigned char *key)
{
	struct vault_keysrc src;
	struct vault *v = NULL;
	char err[ERRLEN];

	src_key(&src, key);
	if (vault_open(path, &src, 1, &v, err, sizeof(err)) != 0)
		fail_msg("open %s for update: %s", path, err);
	vault_keysrc_wipe(&src);
	return v;
}

/* Could another process take the vault's lock right now? */
static int
lock_is_free(const char *path)
{
	char lock[PATH_MAX];
	int fd, free_now;

	assert_true((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) < sizeof(lock));
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	free_now = flock(fd, LOCK_EX | LOCK_NB) == 0;
	if (!free_now)
		assert_int_equal(errno, EWOULDBLOCK);
	close(fd);		/* releases it if we took it */
	return free_now;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Deterministic pseudo-random numbers for the fuzz loops (xorshift64*). */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static int
group_setup(void **state)
{
	const char *base = getenv("TMPDIR");

	(void)state;
	if (sodium_init() < 0)
		return -1;
	snprintf(tdir, sizeof(tdir), "%s/test_vault.XXXXXX", base != NULL ? base : "/tmp");
	if (mkdtemp(tdir) == NULL)
		return -1;
	randombytes_buf(test_key, sizeof(test_key));
	randombytes_buf(other_key, sizeof(other_key));
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	return nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------ key sources */

struct keysrc_case {
	const char	*name;
	const char	*content;
	size_t		len;		/* 0: strlen(content) */
	int		is_keyfile;
	int		ok;
	const char	*want;		/* material, or error substring */
	size_t		wantlen;
};

static void
test_keysrc_from_file(void **state)
{
	static char longline[VAULT_PASSPHRASE_MAX + 10];
	static char maxline[VAULT_PASSPHRASE_MAX + 2];
	unsigned char raw[VAULT_KEY_BYTES];
	char hex[2 * VAULT_KEY_BYTES + 1], hexnl[sizeof(hex) + 1], hexcrlf[sizeof(hex) + 2];
	char badhex[sizeof(hex)];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)(i * 7 + 1);
	sodium_bin2hex(hex, sizeof(hex), raw, sizeof(raw));
	assert_true((size_t)snprintf(hexnl, sizeof(hexnl), "%s\n", hex) < sizeof(hexnl));
	assert_true((size_t)snprintf(hexcrlf, sizeof(hexcrlf), "%s\r\n", hex) <
	    sizeof(hexcrlf));
	strlcpy(badhex, hex, sizeof(badhex));
	badhex[10] = 'z';
	memset(longline, 'a', sizeof(longline) - 1);
	memset(maxline, 'b', VAULT_PASSPHRASE_MAX);
	maxline[VAULT_PASSPHRASE_MAX] = '\n';

	const struct keysrc_case cases[] = {
		{ "pass-lf", "s3cret pass\n", 0, 0, 1, "s3cret pass", 0 },
		{ "pass-crlf", "s3cret\r\n", 0, 0, 1, "s3cret", 0 },
		{ "pass-no-nl", "s3cret", 0, 0, 1, "s3cret", 0 },
		{ "pass-first-line", "first\nsecond\n", 0, 0, 1, "first", 0 },
		{ "pass-spaces-kept", "  sp  \n", 0, 0, 1, "  sp  ", 0 },
		{ "pass-max", maxline, 0, 0, 1, maxline, VAULT_PASSPHRASE_MAX },
		{ "pass-empty", "", 0, 0, 0, "is empty", 0 },
		{ "pass-empty-line", "\nsecond\n", 0, 0, 0, "is empty", 0 },
		{ "pass-long", longline, 0, 0, 0, "longer than", 0 },
		{ "key-raw", (const char *)raw, sizeof(raw), 1, 1, (const char *)raw,
		    sizeof(raw) },
		{ "key-hex", hex, 0, 1, 1, (const char *)raw, sizeof(raw) },
		{ "key-hex-lf", hexnl, 0, 1, 1, (const char *)raw, sizeof(raw) },
		{ "key-hex-crlf", hexcrlf, 0, 1, 1, (const char *)raw, sizeof(raw) },
		{ "key-short", (const char *)raw, sizeof(raw) - 1, 1, 0, "32 raw bytes", 0 },
		{ "key-raw-lf", "0123456789abcdef0123456789abcdef\n", 0, 1, 0,
		    "32 raw bytes", 0 },
		{ "key-hex-short", hex + 1, 0, 1, 0, "32 raw bytes", 0 },
		{ "key-bad-hex", badhex, 0, 1, 0, "32 raw bytes", 0 },
		{ "key-empty", "", 0, 1, 0, "32 raw bytes", 0 },
		{ "key-hex-trailing", "00112233445566778899aabbccddeeff"
		    "00112233445566778899aabbccddeeff\nx", 0, 1, 0, "32 raw bytes", 0 },
	};

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct keysrc_case *c = &cases[i];
		struct vault_keysrc src;
		char path[PATH_MAX], err[ERRLEN] = "";
		size_t len = c->len ? c->len : strlen(c->content);
		size_t wantlen = c->wantlen ? c->wantlen : strlen(c->want);
		int rc;

		tpath(path, sizeof(path), c->name);
		write_file(path, c->content, len, 0600);
		rc = vault_keysrc_from_file(path, c->is_keyfile, &src, err, sizeof(err));
		if (c->ok) {
			if (rc != 0)
				fail_msg("%s: %s", c->name, err);
			assert_int_equal(src.is_keyfile, c->is_keyfile);
			assert_int_equal(src.len, wantlen);
			assert_memory_equal(src.material, c->want, wantlen);
			vault_keysrc_wipe(&src);
			assert_null(src.material);
		} else {
			if (rc != -1)
				fail_msg("%s: accepted", c->name);
			assert_null(src.material);
			assert_err(err, c->want);
			assert_err(err, path);
		}
	}
}

static void
test_keysrc_refuses_loose_modes(void **state)
{
	static const mode_t bad[] = { 0640, 0604, 0644, 0660, 0606, 0620, 0602, 0666 };
	static const mode_t good[] = { 0600, 0400 };
	char path[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;
	size_t i;
	int kf;

	(void)state;
	tpath(path, sizeof(path), "modes");
	for (kf = 0; kf <= 1; kf++) {
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			write_file(path, test_key, sizeof(test_key), bad[i]);
			assert_int_equal(vault_keysrc_from_file(path, kf, &src, err,
			    sizeof(err)), -1);
			assert_err(err, path);
			assert_err(err, "chmod 600 it");
			if (bad[i] & 044)
				assert_err(err, "readable by group or others");
		}
		for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
			write_file(path, test_key, sizeof(test_key), good[i]);
			assert_int_equal(vault_keysrc_from_file(path, kf, &src, err,
			    sizeof(err)), 0);
			vault_keysrc_wipe(&src);
		}
		assert_int_equal(chmod(path, 0600), 0);
	}
	tpath(path, sizeof(path), "no-such-file");
	assert_int_equal(vault_keysrc_from_file(path, 0, &src, err, sizeof(err)), -1);
	assert_err(err, path);
	assert_err(err, "No such file");
	assert_int_equal(vault_keysrc_from_file(tdir, 1, &src, err, sizeof(err)), -1);
	assert_err(err, "not a regular file");
}

/*
 * systemd 254+ shows a credential's ACL as group read (0440): accepted in
 * $CREDENTIALS_DIRECTORY only, never with others' bits or outside it.
 */
static void
test_keysrc_systemd_credential_acl(void **state)
{
	char path[PATH_MAX], other[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;

	(void)state;
	tpath(path, sizeof(path), "smtpvault-passphrase");
	tpath(other, sizeof(other), "elsewhere");
	write_file(path, "a passphrase\n", 13, 0440);
	write_file(other, "a passphrase\n", 13, 0440);
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", tdir, 1), 0);
	assert_int_equal(vault_keysrc_from_file(path, 0, &src, err, sizeof(err)), 0);
	vault_keysrc_wipe(&src);
	assert_int_equal(chmod(path, 0444), 0);
	assert_int_equal(vault_keysrc_from_file(path, 0, &src, err, sizeof(err)), -1);
	assert_err(err, "readable by group or others");
	assert_int_equal(chmod(path, 0460), 0);
	assert_int_equal(vault_keysrc_from_file(path, 0, &src, err, sizeof(err)), -1);
	assert_err(err, "writable by group or others");
	/* Outside the credentials directory, group read is still refused. */
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "/nonexistent-credentials", 1), 0);
	assert_int_equal(chmod(path, 0440), 0);
	assert_int_equal(vault_keysrc_from_file(path, 0, &src, err, sizeof(err)), -1);
	assert_err(err, "readable by group or others");
	assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
	assert_int_equal(vault_keysrc_from_file(other, 0, &src, err, sizeof(err)), -1);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(chmod(other, 0600), 0);
}

/* ----------------------------------------------------- create, open, keys */

static void
test_create_open_passphrase(void **state)
{
	struct vault_keysrc src, wrong;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v = NULL;
	uint8_t *before, *after;
	size_t blen, alen;
	struct stat st;

	(void)state;
	tpath(path, sizeof(path), "pass.vault");
	src_pass(&src, PASSPHRASE);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	before = read_file(path, &blen);
	assert_memory_equal(before, "SMTPVLT\0", 8);
	assert_int_equal(before[8], 1);
	assert_int_equal(before[9], 0);
	assert_int_equal(before[10], VAULT_KDF_INTERACTIVE);

	assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), 0);
	assert_int_equal(vault_kdf(v), VAULT_KDF_INTERACTIVE);
	assert_string_equal(vault_path(v), path);
	assert_int_equal(vault_account_count(v), 0);
	assert_int_equal(vault_admin_count(v), 0);
	assert_int_equal(vault_generation(v), 1);
	vault_close(v);

	src_pass(&wrong, PASSPHRASE "!");
	v = (struct vault *)1;
	assert_int_equal(vault_open(path, &wrong, 1, &v, err, sizeof(err)), -1);
	assert_null(v);
	assert_err(err, "cannot decrypt vault");
	assert_err(err, path);
	assert_err(err, "wrong passphrase or key, or the file is damaged");
	vault_keysrc_wipe(&wrong);

	/* A key file on a passphrase vault is refused before any KDF work. */
	src_key(&wrong, test_key);
	assert_int_equal(vault_open(path, &wrong, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "protected by a passphrase, but a key file was given");
	vault_keysrc_wipe(&wrong);

	after = read_file(path, &alen);
	assert_int_equal(alen, blen);
	assert_memory_equal(before, after, blen);
	free(before);
	free(after);
	vault_keysrc_wipe(&src);
}

static void
test_create_open_keyfile(void **state)
{
	struct vault_keysrc src, wrong;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;
	uint8_t *buf;
	size_t len;

	(void)state;
	v = kv_new("key.vault", path, sizeof(path));
	assert_int_equal(vault_kdf(v), VAULT_KDF_KEYFILE);
	assert_int_equal(vault_account_count(v), 0);
	vault_close(v);

	buf = read_file(path, &len);
	assert_int_equal(len, VAULT_HEADER_LEN + 2 + 8 + VAULT_AUDIT_ROOT_BYTES + 2 + 2 +
	    VAULT_TAG_BYTES);
	assert_int_equal(buf[10], VAULT_KDF_KEYFILE);
	free(buf);

	src_key(&wrong, other_key);
	assert_int_equal(vault_open(path, &wrong, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "wrong passphrase or key");
	vault_keysrc_wipe(&wrong);

	src_pass(&wrong, PASSPHRASE);
	assert_int_equal(vault_open(path, &wrong, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "protected by a key file, but a passphrase was given");
	vault_keysrc_wipe(&wrong);

	/* A passphrase needs a real KDF profile. */
	tpath(path, sizeof(path), "nokdf.vault");
	src_pass(&src, PASSPHRASE);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_KEYFILE, err, sizeof(err)), -1);
	assert_err(err, "needs a KDF profile");
	assert_int_equal(access(path, F_OK), -1);
	vault_keysrc_wipe(&src);
}

static void
test_create_refuses_existing(void **state)
{
	struct vault_keysrc src;
	char path[PATH_MAX], err[ERRLEN];
	uint8_t *before, *after;
	size_t blen, alen;
	struct vault *v;

	(void)state;
	v = kv_new("exists.vault", path, sizeof(path));
	vault_close(v);
	before = read_file(path, &blen);
	src_key(&src, other_key);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_KEYFILE, err, sizeof(err)), -1);
	assert_err(err, "already exists");
	assert_err(err, path);
	after = read_file(path, &alen);
	assert_int_equal(alen, blen);
	assert_memory_equal(before, after, blen);
	free(before);
	free(after);

	/* Any file at all, even an empty one, is never overwritten. */
	tpath(path, sizeof(path), "some-file");
	write_file(path, "", 0, 0600);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_KEYFILE, err, sizeof(err)), -1);
	assert_err(err, "already exists");
	after = read_file(path, &alen);
	assert_int_equal(alen, 0);
	free(after);
	vault_keysrc_wipe(&src);
}

static void
test_file_modes_under_umask_zero(void **state)
{
	char path[PATH_MAX], lock[PATH_MAX];
	struct vault *v;
	struct stat st;
	mode_t old = umask(0);

	(void)state;
	v = kv_new("umask.vault", path, sizeof(path));
	v = kv_reopen(v);
	vault_close(v);
	umask(old);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_true((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) < sizeof(lock));
	assert_int_equal(stat(lock, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
}

/* A save by root keeps the vault's owner, so the daemon's user can read it. */
static void
test_save_keeps_owner(void **state)
{
	char path[PATH_MAX], lock[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;
	struct vault *v;
	struct stat st;

	(void)state;
	if (geteuid() != 0)
		skip();
	v = kv_new("owner.vault", path, sizeof(path));
	vault_close(v);
	assert_true((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) < sizeof(lock));
	assert_int_equal(chown(path, 65534, 65534), 0);
	src_key(&src, test_key);
	assert_int_equal(vault_open(path, &src, 1, &v, err, sizeof(err)), 0);
	add_account(v, "alice@example.com", NULL, "secret");
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);
	vault_keysrc_wipe(&src);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(st.st_gid, 65534);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(lock, &st), 0);
	assert_int_equal(st.st_uid, 65534);
}

static void
test_open_missing_and_foreign(void **state)
{
	char path[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;
	struct vault *v;

	(void)state;
	src_key(&src, test_key);
	tpath(path, sizeof(path), "absent.vault");
	assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), -1);
	assert_err(err, path);
	assert_err(err, "No such file");

	tpath(path, sizeof(path), "foreign.vault");
	write_file(path, "not a vault at all, just text\n", 30, 0600);
	assert_int_equal(vault_open(path, &src, 1, &v, err, sizeof(err)), -1);
	assert_err(err, "is not a smtpvault vault");

	assert_int_equal(vault_open(tdir, &src, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "not a regular file");
	vault_keysrc_wipe(&src);
}

static void
test_newer_format_version(void **state)
{
	static const uint16_t versions[] = { 2, 0x100, 0xffff };
	char path[PATH_MAX], err[ERRLEN], want[128];
	struct vault_keysrc src;
	struct vault *v;
	uint8_t *buf;
	size_t len, i;

	(void)state;
	v = kv_new("newer.vault", path, sizeof(path));
	vault_close(v);
	buf = read_file(path, &len);
	src_key(&src, test_key);
	for (i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		buf[8] = (uint8_t)versions[i];
		buf[9] = (uint8_t)(versions[i] >> 8);
		write_file(path, buf, len, 0600);
		assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), -1);
		snprintf(want, sizeof(want), "vault format version %u is newer than this "
		    "smtpvault supports", (unsigned)versions[i]);
		assert_err(err, want);
		assert_err(err, path);
	}
	/* Also when the newer format's header would not fit ours. */
	write_file(path, buf, 12, 0600);
	assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "newer than this smtpvault supports");
	free(buf);
	vault_keysrc_wipe(&src);
}

/* --------------------------------------------------------------- tampering */

/* Every variant of the file must be refused and left exactly as it was. */
static void
assert_refused(const char *path, const struct vault_keysrc *src, const uint8_t *bytes,
    size_t len, int for_update, const char *what, size_t at)
{
	char err[ERRLEN] = "";
	struct vault *v = NULL;
	uint8_t *after;
	size_t alen;

	write_file(path, bytes, len, 0600);
	if (vault_open(path, src, for_update, &v, err, sizeof(err)) != -1)
		fail_msg("%s at %zu: vault opened", what, at);
	assert_null(v);
	assert_err(err, path);
	after = read_file(path, &alen);
	assert_int_equal(alen, len);
	if (len > 0)
		assert_memory_equal(after, bytes, len);
	free(after);
}

static void
test_tamper_every_byte_keyfile(void **state)
{
	static const uint8_t masks[] = { 0x01, 0x80 };
	char path[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;
	struct vault *v;
	uint8_t *orig, *bad, *now;
	size_t len, nlen, i, m;

	(void)state;
	v = kv_new("tamper.vault", path, sizeof(path));
	add_account(v, "alice@example.com", "sales@example.com", "abcdefghijklmnop");
	v = kv_reopen(v);
	vault_close(v);
	orig = read_file(path, &len);
	bad = malloc(len);
	assert_non_null(bad);
	src_key(&src, test_key);
	for (m = 0; m < sizeof(masks); m++) {
		for (i = 0; i < len; i++) {
			memcpy(bad, orig, len);
			bad[i] ^= masks[m];
			assert_refused(path, &src, bad, len, (int)(i & 1), "flip", i);
			write_file(path, orig, len, 0600);
		}
	}
	now = read_file(path, &nlen);
	assert_int_equal(nlen, len);
	assert_memory_equal(now, orig, len);
	assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), 0);
	assert_non_null(vault_account_find(v, "alice@example.com"));
	vault_close(v);
	free(now);
	free(bad);
	free(orig);
	vault_keysrc_wipe(&src);
}

/*
 * A passphrase vault costs one Argon2id run per variant, so only a sample:
 * every header field (the KDF parameters byte by byte), salt, nonce, and the
 * ends of the ciphertext.
 */
static void
test_tamper_sample_passphrase(void **state)
{
	struct vault_keysrc src;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;
	uint8_t *orig, *bad;
	size_t len, i, at;
	size_t sample[] = { 0, 7, 8, 9, 10, 11, 12, 18, 19, 22, 23, 26, 27,
	    VAULT_HEADER_LEN - VAULT_NONCE_BYTES - 1, VAULT_HEADER_LEN - VAULT_NONCE_BYTES,
	    VAULT_HEADER_LEN - 1, VAULT_HEADER_LEN, 0 };

	(void)state;
	tpath(path, sizeof(path), "tamper-pass.vault");
	src_pass(&src, PASSPHRASE);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), 0);
	orig = read_file(path, &len);
	sample[sizeof(sample) / sizeof(sample[0]) - 1] = len - 1;
	bad = malloc(len);
	assert_non_null(bad);
	for (i = 0; i < sizeof(sample) / sizeof(sample[0]); i++) {
		at = sample[i];
		memcpy(bad, orig, len);
		bad[at] ^= 0x01;
		assert_refused(path, &src, bad, len, 0, "flip", at);
		write_file(path, orig, len, 0600);
	}
	/* The KDF parameters a damaged header may ask for are bounded. */
	memcpy(bad, orig, len);
	bad[11 + 3] ^= 0x80;		/* opslimit + 2^31: a hang, not a KDF */
	assert_refused(path, &src, bad, len, 0, "opslimit", 14);
	memcpy(bad, orig, len);
	bad[19 + 4] ^= 0x01;		/* memlimit + 4 GiB */
	assert_refused(path, &src, bad, len, 0, "memlimit", 23);
	write_file(path, orig, len, 0600);
	assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), 0);
	vault_close(v);
	free(bad);
	free(orig);
	vault_keysrc_wipe(&src);
}

static void
test_truncation_every_length(void **state)
{
	char path[PATH_MAX];
	struct vault_keysrc src;
	struct vault *v;
	uint8_t *orig;
	size_t len, i;

	(void)state;
	v = kv_new("trunc.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, "abcdefghijklmnop");
	v = kv_reopen(v);
	vault_close(v);
	orig = read_file(path, &len);
	src_key(&src, test_key);
	for (i = 0; i < len; i++)
		assert_refused(path, &src, orig, i, (int)(i & 1), "truncation", i);
	/* One byte too many is as bad as one too few. */
	orig = realloc(orig, len + 1);
	assert_non_null(orig);
	orig[len] = 0;
	assert_refused(path, &src, orig, len + 1, 0, "extension", len);
	free(orig);
	vault_keysrc_wipe(&src);
}

/* ---------------------------------------------------------------- accounts */

static void
test_account_add_roundtrip(void **state)
{
	const struct vault_account *a;
	struct vault_account t;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;

	(void)state;
	v = kv_new("add.vault", path, sizeof(path));
	tmpl_init(&t, "Alice@Example.com", "sales@example.com", "info@example.com");
	t.daily_limit = 500;
	t.daily_rcpt_limit = 1500;
	strlcpy(t.upstream_host, "smtp.example.net", sizeof(t.upstream_host));
	t.upstream_port = 465;
	t.upstream_tls = 1;
	t.n_creds = 5;		/* ignored: the vault sets credentials itself */
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)"abcdefghijklmnop",
	    16, NOW, err, sizeof(err)), 0);
	add_account(v, "bob@example.org", NULL, "bob-secret");
	v = kv_reopen(v);

	assert_int_equal(vault_account_count(v), 2);
	assert_int_equal(vault_generation(v), 2);
	a = vault_account_at(v, 0);
	assert_non_null(a);
	assert_string_equal(a->address, "Alice@Example.com");
	assert_int_equal(a->n_aliases, 2);
	assert_string_equal(a->aliases[0], "sales@example.com");
	assert_string_equal(a->aliases[1], "info@example.com");
	assert_int_equal(a->daily_limit, 500);
	assert_int_equal(a->daily_rcpt_limit, 1500);
	assert_string_equal(a->upstream_host, "smtp.example.net");
	assert_int_equal(a->upstream_port, 465);
	assert_int_equal(a->upstream_tls, 1);
	assert_int_equal(a->created, NOW);
	assert_int_equal(a->rotated, NOW);
	assert_int_equal(a->status, VAULT_STATUS_OK);
	assert_int_equal(a->current, 1);
	assert_int_equal(a->n_creds, 1);
	assert_secret(vault_account_current(a), "abcdefghijklmnop");

	/* Found by address or alias, in any case. */
	assert_ptr_equal(vault_account_find(v, "alice@example.com"), a);
	assert_ptr_equal(vault_account_find(v, "SALES@EXAMPLE.COM"), a);
	assert_ptr_equal(vault_account_find(v, "Info@example.com"), a);
	assert_null(vault_account_find(v, "nobody@example.com"));
	assert_null(vault_account_find(v, NULL));
	assert_null(vault_account_at(v, 2));

	a = vault_account_find(v, "bob@example.org");
	assert_non_null(a);
	assert_int_equal(a->daily_limit, VAULT_DEFAULT_DAILY_LIMIT);
	assert_int_equal(a->daily_rcpt_limit, VAULT_DEFAULT_RCPT_LIMIT);
	assert_int_equal(a->upstream_tls, -1);
	assert_string_equal(a->upstream_host, "");
	assert_secret(vault_account_current(a), "bob-secret");
	vault_close(v);
}

struct add_case {
	const char	*address;
	const char	*alias1;
	const char	*alias2;
	const char	*secret;	/* NULL: a valid one */
	size_t		secret_len;	/* with secret NULL: 0 = valid, else this length */
	const char	*want;
};

static void
test_account_add_refusals(void **state)
{
	static char long_local[80], long_secret[VAULT_SECRET_MAX + 2];
	struct vault_account t;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;
	size_t i;

	(void)state;
	memset(long_local, 'x', 65);
	strlcat(long_local, "@example.com", sizeof(long_local));
	memset(long_secret, 's', VAULT_SECRET_MAX + 1);

	const struct add_case cases[] = {
		{ "ALICE@example.com", NULL, NULL, NULL, 0,
		    "account ALICE@example.com already exists" },
		{ "sales@example.com", NULL, NULL, NULL, 0,
		    "sales@example.com is already used by account alice@example.com" },
		{ "bob@example.com", "alice@EXAMPLE.com", NULL, NULL, 0,
		    "alice@EXAMPLE.com is already used by account alice@example.com" },
		{ "bob@example.com", "Sales@example.com", NULL, NULL, 0,
		    "is already used by account alice@example.com" },
		{ "bob@example.com", "BOB@example.com", NULL, NULL, 0, "given twice" },
		{ "bob@example.com", "x@example.com", "X@Example.com", NULL, 0,
		    "given twice" },
		{ "", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob", NULL, NULL, NULL, 0, "invalid address \"bob\"" },
		{ "@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "b@b@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bo b@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@exa mple.com", NULL, NULL, NULL, 0, "invalid address" },
		{ ".bob@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob.@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bo..b@example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@-example.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@example-.com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@example..com", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@example.com.", NULL, NULL, NULL, 0, "invalid address" },
		{ "<bob@example.com>", NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@exämple.com", NULL, NULL, NULL, 0, "invalid address" },
		{ long_local, NULL, NULL, NULL, 0, "invalid address" },
		{ "bob@example.com", "nope", NULL, NULL, 0, "invalid alias \"nope\"" },
		{ "bob@example.com", NULL, NULL, NULL, 1000, "1 to 256 bytes" },
		{ "bob@example.com", NULL, NULL, "", 0, "1 to 256 bytes" },
		{ "bob@example.com", NULL, NULL, long_secret, 0, "1 to 256 bytes" },
	};

	v = kv_new("refuse.vault", path, sizeof(path));
	add_account(v, "alice@example.com", "sales@example.com", "abcdefghijklmnop");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct add_case *c = &cases[i];
		const unsigned char *s = (const unsigned char *)"a-valid-secret";
		size_t slen = 14;

		tmpl_init(&t, c->address, c->alias1, c->alias2);
		if (c->secret != NULL) {
			s = (const unsigned char *)c->secret;
			slen = strlen(c->secret);
		} else if (c->secret_len != 0) {
			s = NULL;
			slen = c->secret_len;
		}
		err[0] = '\0';
		if (vault_account_add(v, &t, s, slen, NOW, err, sizeof(err)) != -1)
			fail_msg("case %zu (%s): accepted", i, c->address);
		assert_err(err, c->want);
		assert_int_equal(vault_account_count(v), 1);
	}

	/* Template fields that are not text. */
	tmpl_init(&t, "bob@example.com", NULL, NULL);
	t.n_aliases = VAULT_MAX_ALIASES + 1;
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)"x", 1, NOW, err,
	    sizeof(err)), -1);
	assert_err(err, "at most 16 aliases");
	tmpl_init(&t, "bob@example.com", NULL, NULL);
	t.upstream_tls = 2;
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)"x", 1, NOW, err,
	    sizeof(err)), -1);
	assert_err(err, "invalid upstream TLS mode");
	tmpl_init(&t, "bob@example.com", NULL, NULL);
	strlcpy(t.upstream_host, "smtp example com", sizeof(t.upstream_host));
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)"x", 1, NOW, err,
	    sizeof(err)), -1);
	assert_err(err, "invalid upstream host");
	tmpl_init(&t, "bob@example.com", NULL, NULL);
	memset(t.address, 'a', sizeof(t.address));	/* not NUL-terminated */
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)"x", 1, NOW, err,
	    sizeof(err)), -1);
	assert_err(err, "invalid address");

	/* A maximal, valid address and a maximal secret are fine. */
	memset(long_local, 'x', 64);
	long_local[64] = '\0';
	strlcat(long_local, "@example.com", sizeof(long_local));
	tmpl_init(&t, long_local, NULL, NULL);
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)long_secret,
	    VAULT_SECRET_MAX, NOW, err, sizeof(err)), 0);
	v = kv_reopen(v);
	assert_int_equal(vault_account_count(v), 2);
	assert_non_null(vault_account_find(v, long_local));
	assert_int_equal(vault_account_current(vault_account_find(v, long_local))->secret.len,
	    VAULT_SECRET_MAX);
	vault_close(v);
}

static void
test_account_rotate_keeps_newest(void **state)
{
	const struct vault_account *a;
	char path[PATH_MAX], err[ERRLEN], secret[32];
	struct vault *v;
	uint32_t ver = 0, i;

	(void)state;
	v = kv_new("rotate.vault", path, sizeof(path));
	add_account(v, "alice@example.com", "sales@example.com", "secret-01");
	for (i = 2; i <= 11; i++) {
		snprintf(secret, sizeof(secret), "secret-%02u", (unsigned)i);
		/* By alias, half of the time. */
		assert_int_equal(vault_account_rotate(v, i & 1 ? "sales@example.com" :
		    "alice@example.com", (const unsigned char *)secret, strlen(secret),
		    NOW + (time_t)i, &ver, err, sizeof(err)), 0);
		assert_int_equal(ver, i);
		if (i == 6)
			v = kv_reopen(v);
	}
	v = kv_reopen(v);
	a = vault_account_find(v, "alice@example.com");
	assert_non_null(a);
	assert_int_equal(a->n_creds, VAULT_MAX_VERSIONS);
	assert_int_equal(a->current, 11);
	assert_int_equal(a->rotated, NOW + 11);
	assert_int_equal(a->created, NOW);
	for (i = 0; i < VAULT_MAX_VERSIONS; i++) {
		assert_int_equal(a->creds[i].version, 11 - VAULT_MAX_VERSIONS + 1 + i);
		assert_int_equal(a->creds[i].created, NOW + 11 - VAULT_MAX_VERSIONS + 1 + i);
		snprintf(secret, sizeof(secret), "secret-%02u", (unsigned)a->creds[i].version);
		assert_secret(&a->creds[i], secret);
	}
	assert_secret(vault_account_current(a), "secret-11");

	/* A refused rotation changes nothing. */
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)"", 0, NOW, &ver, err, sizeof(err)), -1);
	assert_err(err, "1 to 256 bytes");
	assert_int_equal(a->current, 11);
	vault_close(v);
}

static void
test_account_rollback(void **state)
{
	const struct vault_account *a;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;
	uint32_t cur = 0;

	(void)state;
	v = kv_new("rollback.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, "one");
	assert_int_equal(vault_account_rollback(v, "alice@example.com", NOW, &cur, err,
	    sizeof(err)), -1);
	assert_err(err, "alice@example.com has no previous credential version");
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)"two", 3, NOW, NULL, err, sizeof(err)), 0);
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)"three", 5, NOW, NULL, err, sizeof(err)), 0);
	assert_int_equal(vault_account_set_status(v, "alice@example.com",
	    VAULT_STATUS_AUTH_FAILED, err, sizeof(err)), 0);

	assert_int_equal(vault_account_rollback(v, "ALICE@example.com", NOW + 50, &cur, err,
	    sizeof(err)), 0);
	assert_int_equal(cur, 2);
	v = kv_reopen(v);
	a = vault_account_find(v, "alice@example.com");
	assert_int_equal(a->current, 2);
	assert_int_equal(a->rotated, NOW + 50);
	assert_int_equal(a->status, VAULT_STATUS_OK);
	assert_int_equal(a->n_creds, 3);
	assert_secret(vault_account_current(a), "two");

	assert_int_equal(vault_account_rollback(v, "alice@example.com", NOW, &cur, err,
	    sizeof(err)), 0);
	assert_int_equal(cur, 1);
	assert_int_equal(vault_account_rollback(v, "alice@example.com", NOW, &cur, err,
	    sizeof(err)), -1);
	assert_err(err, "alice@example.com has no previous credential version");
	assert_int_equal(a->current, 1);

	/* A rotation after a rollback still takes the next unused number. */
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)"four", 4, NOW, &cur, err, sizeof(err)), 0);
	assert_int_equal(cur, 4);
	v = kv_reopen(v);
	a = vault_account_find(v, "alice@example.com");
	assert_int_equal(a->n_creds, 4);
	assert_int_equal(a->current, 4);
	assert_secret(&a->creds[0], "one");
	assert_secret(&a->creds[3], "four");
	vault_close(v);
}

/* When the current version is the oldest, the oldest other one is dropped. */
static void
test_account_rotate_spares_current(void **state)
{
	static const uint32_t want[] = { 1, 3, 4, 5, 6, 7, 8, 9 };
	const struct vault_account *a;
	char path[PATH_MAX], err[ERRLEN], secret[16];
	struct vault *v;
	uint32_t i, cur = 0;

	(void)state;
	v = kv_new("spare.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, "v1");
	for (i = 2; i <= VAULT_MAX_VERSIONS; i++) {
		snprintf(secret, sizeof(secret), "v%u", (unsigned)i);
		assert_int_equal(vault_account_rotate(v, "alice@example.com",
		    (const unsigned char *)secret, strlen(secret), NOW, NULL, err,
		    sizeof(err)), 0);
	}
	for (i = 1; i < VAULT_MAX_VERSIONS; i++)
		assert_int_equal(vault_account_rollback(v, "alice@example.com", NOW, &cur,
		    err, sizeof(err)), 0);
	assert_int_equal(cur, 1);
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)"v9", 2, NOW, &cur, err, sizeof(err)), 0);
	assert_int_equal(cur, 9);
	v = kv_reopen(v);
	a = vault_account_find(v, "alice@example.com");
	assert_int_equal(a->n_creds, VAULT_MAX_VERSIONS);
	for (i = 0; i < VAULT_MAX_VERSIONS; i++) {
		assert_int_equal(a->creds[i].version, want[i]);
		snprintf(secret, sizeof(secret), "v%u", (unsigned)want[i]);
		assert_secret(&a->creds[i], secret);
	}
	vault_close(v);
}

static void
test_account_remove_and_status(void **state)
{
	const struct vault_account *a;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;

	(void)state;
	v = kv_new("remove.vault", path, sizeof(path));
	add_account(v, "alice@example.com", "sales@example.com", "alice-secret");
	add_account(v, "bob@example.com", NULL, "bob-secret");
	add_account(v, "carol@example.com", NULL, "carol-secret");
	assert_int_equal(vault_account_set_status(v, "bob@example.com",
	    VAULT_STATUS_AUTH_FAILED, err, sizeof(err)), 0);
	assert_int_equal(vault_account_set_status(v, "bob@example.com",
	    (enum vault_status)7, err, sizeof(err)), -1);
	assert_err(err, "invalid account status");
	v = kv_reopen(v);
	assert_int_equal(vault_account_find(v, "bob@example.com")->status,
	    VAULT_STATUS_AUTH_FAILED);

	/* Removal by alias; the alias is free again afterwards. */
	assert_int_equal(vault_account_remove(v, "Sales@example.com", err, sizeof(err)), 0);
	v = kv_reopen(v);
	assert_int_equal(vault_account_count(v), 2);
	assert_null(vault_account_find(v, "alice@example.com"));
	assert_null(vault_account_find(v, "sales@example.com"));
	a = vault_account_find(v, "bob@example.com");
	assert_secret(vault_account_current(a), "bob-secret");
	assert_int_equal(a->status, VAULT_STATUS_AUTH_FAILED);
	a = vault_account_find(v, "carol@example.com");
	assert_secret(vault_account_current(a), "carol-secret");
	assert_int_equal(vault_account_remove(v, "alice@example.com", err, sizeof(err)), -1);
	assert_err(err, "no account alice@example.com");
	add_account(v, "dave@example.com", "sales@example.com", "dave-secret");

	/* A rotation clears the failure status. */
	assert_int_equal(vault_account_rotate(v, "bob@example.com",
	    (const unsigned char *)"bob-2", 5, NOW, NULL, err, sizeof(err)), 0);
	v = kv_reopen(v);
	assert_int_equal(vault_account_find(v, "bob@example.com")->status, VAULT_STATUS_OK);
	assert_int_equal(vault_account_count(v), 3);
	vault_close(v);
}

static void
test_account_unknown(void **state)
{
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;
	uint32_t n;

	(void)state;
	v = kv_new("unknown.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, "secret");
	assert_int_equal(vault_account_rotate(v, "ghost@example.com",
	    (const unsigned char *)"x", 1, NOW, &n, err, sizeof(err)), -1);
	assert_err(err, "no account ghost@example.com");
	assert_int_equal(vault_account_rollback(v, "ghost@example.com", NOW, &n, err,
	    sizeof(err)), -1);
	assert_err(err, "no account ghost@example.com");
	assert_int_equal(vault_account_remove(v, "ghost@example.com", err, sizeof(err)), -1);
	assert_err(err, "no account ghost@example.com");
	assert_int_equal(vault_account_set_status(v, "ghost@example.com", VAULT_STATUS_OK,
	    err, sizeof(err)), -1);
	assert_err(err, "no account ghost@example.com");
	assert_int_equal(vault_account_count(v), 1);
	vault_close(v);
}

static void
test_account_limit(void **state)
{
	struct vault_account t;
	char path[PATH_MAX], err[ERRLEN], addr[64];
	struct vault *v;
	size_t i;

	(void)state;
	v = kv_new("full.vault", path, sizeof(path));
	for (i = 0; i < VAULT_MAX_ACCOUNTS; i++) {
		snprintf(addr, sizeof(addr), "user%zu@example.com", i);
		tmpl_init(&t, addr, NULL, NULL);
		assert_int_equal(vault_account_add(v, &t, (const unsigned char *)addr,
		    strlen(addr), NOW, err, sizeof(err)), 0);
	}
	tmpl_init(&t, "one-too-many@example.com", NULL, NULL);
	assert_int_equal(vault_account_add(v, &t, (const unsigned char *)"x", 1, NOW, err,
	    sizeof(err)), -1);
	assert_err(err, "already holds 1024 accounts");
	v = kv_reopen(v);
	assert_int_equal(vault_account_count(v), VAULT_MAX_ACCOUNTS);
	assert_secret(vault_account_current(vault_account_find(v, "user1023@example.com")),
	    "user1023@example.com");
	vault_close(v);
}

/* ------------------------------------------------------------------ admins */

static double
elapsed(const struct timespec *a)
{
	struct timespec b;

	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

static void
test_admin_users(void **state)
{
	static const char *bad_names[] = { "", "with space", "semi;colon", "slash/",
	    "ünïcode", "quote\"",
	    "a123456789012345678901234567890123456789012345678901234567890123" };
	static const unsigned char pw[] = "hunter2 but longer";
	const struct vault_admin *ad;
	char path[PATH_MAX], err[ERRLEN];
	struct timespec t0;
	double known, unknown;
	struct vault *v;
	size_t i;

	(void)state;
	v = kv_new("admin.vault", path, sizeof(path));
	assert_int_equal(vault_admin_add(v, "alice.admin@example-1_x", pw, sizeof(pw) - 1,
	    NOW, err, sizeof(err)), 0);
	assert_int_equal(vault_admin_add(v, "Alice.Admin@example-1_x", pw, sizeof(pw) - 1,
	    NOW, err, sizeof(err)), -1);
	assert_err(err, "admin user Alice.Admin@example-1_x already exists");
	for (i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		assert_int_equal(vault_admin_add(v, bad_names[i], pw, sizeof(pw) - 1, NOW,
		    err, sizeof(err)), -1);
		assert_err(err, "invalid admin user name");
	}
	assert_int_equal(vault_admin_add(v, "bob", pw, 0, NOW, err, sizeof(err)), -1);
	assert_err(err, "must be 1 to 256 bytes");
	assert_int_equal(vault_admin_count(v), 1);

	v = kv_reopen(v);
	assert_int_equal(vault_admin_count(v), 1);
	ad = vault_admin_at(v, 0);
	assert_non_null(ad);
	assert_string_equal(ad->name, "alice.admin@example-1_x");
	assert_int_equal(ad->created, NOW);
	assert_true(strncmp(ad->hash, "$argon2id$", 10) == 0);
	assert_null(vault_admin_at(v, 1));

	assert_int_equal(vault_admin_verify(v, "alice.admin@example-1_x", pw,
	    sizeof(pw) - 1), 0);
	/*
	 * An unknown name costs a full hash too: no user enumeration by timing.
	 * The fastest of three runs each, so that a busy machine does not make
	 * one sample look slow; a skipped hash would take microseconds, not a
	 * quarter of an Argon2id run.
	 */
	known = unknown = 0;
	for (i = 0; i < 3; i++) {
		double k, u;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(vault_admin_verify(v, "alice.admin@example-1_x",
		    (const unsigned char *)"wrong", 5), -1);
		k = elapsed(&t0);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(vault_admin_verify(v, "mallory", pw, sizeof(pw) - 1), -1);
		u = elapsed(&t0);
		known = i == 0 || k < known ? k : known;
		unknown = i == 0 || u < unknown ? u : unknown;
	}
	assert_true(unknown > known / 4);
	assert_int_equal(vault_admin_verify(v, "alice.admin@example-1_x", NULL, 0), -1);

	assert_int_equal(vault_admin_remove(v, "mallory", err, sizeof(err)), -1);
	assert_err(err, "no admin user mallory");
	assert_int_equal(vault_admin_remove(v, "alice.admin@example-1_x", err,
	    sizeof(err)), 0);
	v = kv_reopen(v);
	assert_int_equal(vault_admin_count(v), 0);
	assert_int_equal(vault_admin_verify(v, "alice.admin@example-1_x", pw,
	    sizeof(pw) - 1), -1);
	vault_close(v);
}

/* ------------------------------------------------------------------- rekey */

static void
test_rekey(void **state)
{
	struct vault_keysrc oldsrc, newsrc, keysrc;
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v = NULL;

	(void)state;
	tpath(path, sizeof(path), "rekey.vault");
	src_pass(&oldsrc, PASSPHRASE);
	src_pass(&newsrc, "a completely different passphrase");
	src_key(&keysrc, other_key);
	assert_int_equal(vault_create(path, &oldsrc, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), 0);
	assert_int_equal(vault_open(path, &oldsrc, 1, &v, err, sizeof(err)), 0);
	add_account(v, "alice@example.com", NULL, "abcdefghijklmnop");

	assert_int_equal(vault_rekey(v, NULL, VAULT_KDF_INTERACTIVE, err, sizeof(err)), -1);
	assert_err(err, "no passphrase or key");
	assert_int_equal(vault_rekey(v, &newsrc, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), 0);
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);

	v = NULL;
	assert_int_equal(vault_open(path, &oldsrc, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "wrong passphrase or key");
	assert_int_equal(vault_open(path, &newsrc, 1, &v, err, sizeof(err)), 0);
	assert_secret(vault_account_current(vault_account_find(v, "alice@example.com")),
	    "abcdefghijklmnop");

	/* From a passphrase to a key file: the KDF argument does not apply. */
	assert_int_equal(vault_rekey(v, &keysrc, VAULT_KDF_SENSITIVE, err, sizeof(err)), 0);
	assert_int_equal(vault_kdf(v), VAULT_KDF_KEYFILE);
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);
	assert_int_equal(vault_open(path, &newsrc, 0, &v, err, sizeof(err)), -1);
	assert_err(err, "protected by a key file, but a passphrase was given");
	assert_int_equal(vault_open(path, &keysrc, 0, &v, err, sizeof(err)), 0);
	assert_int_equal(vault_kdf(v), VAULT_KDF_KEYFILE);
	assert_int_equal(vault_account_count(v), 1);
	/* A read-only handle can neither re-key nor save. */
	assert_int_equal(vault_rekey(v, &newsrc, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), -1);
	assert_err(err, "opened read-only");
	assert_int_equal(vault_save(v, err, sizeof(err)), -1);
	assert_err(err, "opened read-only");
	vault_close(v);

	vault_keysrc_wipe(&oldsrc);
	vault_keysrc_wipe(&newsrc);
	vault_keysrc_wipe(&keysrc);
}

/* ---------------------------------------------------- secrets never in clear */

static void
assert_absent(const uint8_t *hay, size_t haylen, const void *needle, size_t len,
    const char *what)
{
	if (memmem(hay, haylen, needle, len) != NULL)
		fail_msg("vault file contains %s", what);
}

static void
assert_no_encoding_of(const uint8_t *file, size_t flen, const unsigned char *secret,
    size_t len)
{
	static const int b64[] = { sodium_base64_VARIANT_ORIGINAL,
	    sodium_base64_VARIANT_ORIGINAL_NO_PADDING, sodium_base64_VARIANT_URLSAFE,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING };
	char enc[4 * VAULT_SECRET_MAX];
	size_t i;

	assert_absent(file, flen, secret, len, "a secret in plain text");
	sodium_bin2hex(enc, sizeof(enc), secret, len);
	assert_absent(file, flen, enc, strlen(enc), "a secret in hex");
	for (i = 0; enc[i] != '\0'; i++)
		if (enc[i] >= 'a' && enc[i] <= 'f')
			enc[i] = (char)(enc[i] - 'a' + 'A');
	assert_absent(file, flen, enc, strlen(enc), "a secret in upper-case hex");
	for (i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
		sodium_bin2base64(enc, sizeof(enc), secret, len, b64[i]);
		assert_absent(file, flen, enc, strlen(enc), "a secret in base64");
	}
}

static void
test_no_secret_in_file(void **state)
{
	static const char *secrets[] = { "abcdefghijklmnop", "qrstuvwxyzabcdef",
	    "second-version-secret", "bob-has-a-secret" };
	static const char admin_pw[] = "the admin password";
	char path[PATH_MAX], err[ERRLEN];
	struct vault *v;
	uint8_t *file;
	size_t flen, i;

	(void)state;
	v = kv_new("plain.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, secrets[0]);
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)secrets[1], strlen(secrets[1]), NOW, NULL, err,
	    sizeof(err)), 0);
	assert_int_equal(vault_account_rotate(v, "alice@example.com",
	    (const unsigned char *)secrets[2], strlen(secrets[2]), NOW, NULL, err,
	    sizeof(err)), 0);
	add_account(v, "bob@example.com", NULL, secrets[3]);
	assert_int_equal(vault_admin_add(v, "admin", (const unsigned char *)admin_pw,
	    strlen(admin_pw), NOW, err, sizeof(err)), 0);
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);

	file = read_file(path, &flen);
	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		assert_no_encoding_of(file, flen, (const unsigned char *)secrets[i],
		    strlen(secrets[i]));
	assert_no_encoding_of(file, flen, (const unsigned char *)admin_pw, strlen(admin_pw));
	assert_no_encoding_of(file, flen, test_key, sizeof(test_key));
	/* Nor the metadata, which is encrypted too. */
	assert_absent(file, flen, "alice@example.com", 17, "an account address");
	assert_absent(file, flen, "$argon2id$", 10, "an admin hash");
	free(file);
}

/* --------------------------------------------- locking, saving, reloading */

static void
test_lock_held_until_close(void **state)
{
	char path[PATH_MAX], lock[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;
	struct vault *v, *r;
	int fd;

	(void)state;
	v = kv_new("lock.vault", path, sizeof(path));
	assert_true((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) < sizeof(lock));
	fd = open(lock, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
	assert_int_equal(errno, EWOULDBLOCK);

	/* Readers take no lock. */
	src_key(&src, test_key);
	assert_int_equal(vault_open(path, &src, 0, &r, err, sizeof(err)), 0);
	vault_close(r);
	vault_keysrc_wipe(&src);

	vault_close(v);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
	close(fd);
}

/* Two processes rotating different accounts at once lose no update. */
static void
test_concurrent_writers(void **state)
{
	static const char *accounts[] = { "alice@example.com", "bob@example.com" };
	char path[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src;
	struct vault *v;
	pid_t pids[2];
	int i, status;

	(void)state;
	v = kv_new("concurrent.vault", path, sizeof(path));
	add_account(v, accounts[0], NULL, "a0");
	add_account(v, accounts[1], NULL, "b0");
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);
	for (i = 0; i < 2; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			int n, ok = 1;

			src_key(&src, test_key);
			for (n = 0; n < CONCURRENT_ROTATIONS && ok; n++) {
				ok = vault_open(path, &src, 1, &v, err, sizeof(err)) == 0 &&
				    vault_account_rotate(v, accounts[i],
				    (const unsigned char *)"next", 4, NOW, NULL, err,
				    sizeof(err)) == 0 &&
				    vault_save(v, err, sizeof(err)) == 0;
				if (v != NULL)
					vault_close(v);
				v = NULL;
			}
			if (!ok)
				fprintf(stderr, "child %d: %s\n", i, err);
			_exit(ok ? 0 : 1);
		}
	}
	for (i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	src_key(&src, test_key);
	assert_int_equal(vault_open(path, &src, 0, &v, err, sizeof(err)), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(vault_account_find(v, accounts[i])->current,
		    1 + CONCURRENT_ROTATIONS);
	assert_int_equal(vault_generation(v), 2 + 2 * CONCURRENT_ROTATIONS);
	vault_close(v);
	vault_keysrc_wipe(&src);
}

static void
test_save_failure_leaves_file(void **state)
{
	char path[PATH_MAX], tmp[PATH_MAX], err[ERRLEN];
	uint8_t *before, *after;
	size_t blen, alen;
	struct vault *v;

	(void)state;
	v = kv_new("savefail.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, "secret");
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	before = read_file(path, &blen);
	assert_int_equal(vault_generation(v), 2);

	/* Something that is not ours sits where the temporary file goes. */
	assert_true((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) <
	    sizeof(tmp));
	assert_int_equal(mkdir(tmp, 0700), 0);
	add_account(v, "bob@example.com", NULL, "secret");
	assert_int_equal(vault_save(v, err, sizeof(err)), -1);
	assert_err(err, tmp);
	assert_int_equal(vault_generation(v), 2);
	assert_int_equal(vault_changed_on_disk(v), 0);
	after = read_file(path, &alen);
	assert_int_equal(alen, blen);
	assert_memory_equal(before, after, blen);
	free(after);
	assert_int_equal(rmdir(tmp), 0);

	/* A stale temporary file of a killed writer does not block a save. */
	write_file(tmp, "stale", 5, 0600);
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(vault_generation(v), 3);
	assert_int_equal(vault_changed_on_disk(v), 0);
	vault_close(v);
	free(before);
}

static void
test_changed_on_disk_and_reload(void **state)
{
	char path[PATH_MAX], err[ERRLEN];
	struct vault_keysrc src, other;
	struct vault *reader, *writer;

	(void)state;
	writer = kv_new("reload.vault", path, sizeof(path));
	add_account(writer, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(writer, err, sizeof(err)), 0);
	vault_close(writer);

	src_key(&src, test_key);
	assert_int_equal(vault_open(path, &src, 0, &reader, err, sizeof(err)), 0);
	assert_int_equal(vault_changed_on_disk(reader), 0);

	assert_int_equal(vault_open(path, &src, 1, &writer, err, sizeof(err)), 0);
	add_account(writer, "bob@example.com", NULL, "bob-1");
	assert_int_equal(vault_account_rotate(writer, "alice@example.com",
	    (const unsigned char *)"alice-2", 7, NOW, NULL, err, sizeof(err)), 0);
	assert_int_equal(vault_save(writer, err, sizeof(err)), 0);
	assert_int_equal(vault_changed_on_disk(writer), 0);
	vault_close(writer);

	assert_int_equal(vault_changed_on_disk(reader), 1);
	assert_int_equal(vault_reload(reader, err, sizeof(err)), 0);
	assert_int_equal(vault_changed_on_disk(reader), 0);
	assert_int_equal(vault_account_count(reader), 2);
	assert_secret(vault_account_current(vault_account_find(reader, "alice@example.com")),
	    "alice-2");

	/* A damaged file on disk: the reload fails and the reader keeps its state. */
	{
		uint8_t *orig, *bad;
		size_t len;

		orig = read_file(path, &len);
		bad = malloc(len);
		assert_non_null(bad);
		memcpy(bad, orig, len);
		bad[len / 2] ^= 0x10;
		replace_file(path, bad, len);
		assert_int_equal(vault_changed_on_disk(reader), 1);
		assert_int_equal(vault_reload(reader, err, sizeof(err)), -1);
		assert_err(err, "wrong passphrase or key, or the file is damaged");
		assert_int_equal(vault_account_count(reader), 2);
		replace_file(path, orig, len);
		free(orig);
		free(bad);
	}

	/* After a rekey the cached key cannot open the file: say so, keep state. */
	assert_int_equal(vault_open(path, &src, 1, &writer, err, sizeof(err)), 0);
	src_key(&other, other_key);
	assert_int_equal(vault_rekey(writer, &other, VAULT_KDF_KEYFILE, err, sizeof(err)), 0);
	assert_int_equal(vault_account_remove(writer, "bob@example.com", err, sizeof(err)), 0);
	assert_int_equal(vault_save(writer, err, sizeof(err)), 0);
	vault_close(writer);
	assert_int_equal(vault_changed_on_disk(reader), 1);
	assert_int_equal(vault_reload(reader, err, sizeof(err)), -1);
	assert_err(err, "was re-keyed");
	assert_int_equal(vault_account_count(reader), 2);
	assert_secret(vault_account_current(vault_account_find(reader, "bob@example.com")),
	    "bob-1");

	/* And a vanished file is a change that cannot be loaded. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(vault_changed_on_disk(reader), 1);
	assert_int_equal(vault_reload(reader, err, sizeof(err)), -1);
	assert_err(err, "No such file");
	assert_int_equal(vault_account_count(reader), 2);
	vault_close(reader);
	vault_keysrc_wipe(&src);
	vault_keysrc_wipe(&other);
}

/*
 * An update that read the file and derived its key while another writer held
 * the lock re-reads the file once it has the lock, and derives again when
 * that writer re-keyed meanwhile: the other writer's change is not lost.
 * The re-key keeps the passphrase but changes the salt, so only a second
 * derivation opens the file.
 */
static void
test_open_for_update_rereads_under_lock(void **state)
{
	char path[PATH_MAX], err[ERRLEN], c;
	struct vault_keysrc src;
	struct vault *v = NULL;
	int ready[2], status;
	pid_t pid;

	(void)state;
	tpath(path, sizeof(path), "race.vault");
	src_pass(&src, PASSPHRASE);
	assert_int_equal(vault_create(path, &src, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), 0);
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ok;

		close(ready[0]);
		ok = vault_open(path, &src, 1, &v, err, sizeof(err)) == 0;
		/* Holding the lock now; let the parent start its update. */
		ok = ok && write(ready[1], "x", 1) == 1;
		usleep(300 * 1000);
		ok = ok && vault_rekey(v, &src, VAULT_KDF_INTERACTIVE, err, sizeof(err)) == 0;
		if (ok) {
			struct vault_account t;

			tmpl_init(&t, "bob@example.com", NULL, NULL);
			ok = vault_account_add(v, &t, (const unsigned char *)"b", 1, NOW,
			    err, sizeof(err)) == 0 && vault_save(v, err, sizeof(err)) == 0;
		}
		if (!ok)
			fprintf(stderr, "child: %s\n", err);
		vault_close(v);
		_exit(ok ? 0 : 1);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	if (vault_open(path, &src, 1, &v, err, sizeof(err)) != 0)
		fail_msg("open: %s", err);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_non_null(vault_account_find(v, "bob@example.com"));
	assert_int_equal(vault_generation(v), 2);
	vault_close(v);
	vault_keysrc_wipe(&src);
}

static void
test_generation(void **state)
{
	char path[PATH_MAX];
	struct vault *v;
	int i;

	(void)state;
	v = kv_new("gen.vault", path, sizeof(path));
	assert_int_equal(vault_generation(v), 1);
	for (i = 2; i <= 4; i++) {
		v = kv_reopen(v);
		assert_int_equal(vault_generation(v), (uint64_t)i);
	}
	vault_close(v);
}

/*
 * The audit key comes from a random root kept in the payload: the same for
 * a vault through saves, re-opens and re-keys, different for each vault,
 * and not something the vault key alone (without the file) gives.
 */
static void
test_audit_key(void **state)
{
	unsigned char k1[VAULT_KEY_BYTES], k2[VAULT_KEY_BYTES], old[VAULT_KEY_BYTES];
	unsigned char root[VAULT_AUDIT_ROOT_BYTES], want[VAULT_KEY_BYTES];
	unsigned char zero[VAULT_KEY_BYTES] = { 0 };
	char path[PATH_MAX], path2[PATH_MAX], err[ERRLEN];
	struct vault_keysrc keysrc, passsrc;
	struct vault *v, *w, *r;
	uint8_t *file;
	size_t flen;

	(void)state;
	v = kv_new("audit.vault", path, sizeof(path));
	assert_int_equal(vault_derive_audit_key(v, k1), 0);
	assert_memory_not_equal(k1, zero, sizeof(k1));
	assert_memory_not_equal(k1, test_key, sizeof(k1));
	/* What it is: crypto_kdf subkey VAULT_SUBKEY_AUDIT of the root. */
	audit_root_of(&v->d, root);
	assert_int_equal(crypto_kdf_derive_from_key(want, sizeof(want), VAULT_SUBKEY_AUDIT,
	    VAULT_KDF_CONTEXT, root), 0);
	assert_memory_equal(k1, want, sizeof(k1));
	/* What it no longer is: a subkey of the master key. */
	assert_int_equal(crypto_kdf_derive_from_key(old, sizeof(old), VAULT_SUBKEY_AUDIT,
	    VAULT_KDF_CONTEXT, test_key), 0);
	assert_memory_not_equal(k1, old, sizeof(k1));

	/* Saves, re-opens, a read-only handle, a reload. */
	add_account(v, "alice@example.com", NULL, "secret");
	v = kv_reopen(v);
	assert_int_equal(vault_derive_audit_key(v, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	r = open_ro(path, test_key);
	assert_int_equal(vault_derive_audit_key(r, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	assert_int_equal(vault_reload(r, err, sizeof(err)), 0);
	assert_int_equal(vault_derive_audit_key(r, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	vault_close(r);

	/* Re-key to another key file: same audit key before and after the save. */
	src_key(&keysrc, other_key);
	assert_int_equal(vault_rekey(v, &keysrc, VAULT_KDF_KEYFILE, err, sizeof(err)), 0);
	assert_int_equal(vault_derive_audit_key(v, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	assert_int_equal(vault_derive_audit_key(v, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	vault_close(v);
	v = open_ro(path, other_key);
	assert_int_equal(vault_derive_audit_key(v, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	vault_close(v);

	/* And to a passphrase, re-opened with it. */
	v = open_rw(path, other_key);
	src_pass(&passsrc, PASSPHRASE);
	assert_int_equal(vault_rekey(v, &passsrc, VAULT_KDF_INTERACTIVE, err,
	    sizeof(err)), 0);
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);
	v = NULL;
	assert_int_equal(vault_open(path, &passsrc, 0, &v, err, sizeof(err)), 0);
	assert_int_equal(vault_derive_audit_key(v, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	vault_close(v);

	/* The root is never in the file in clear. */
	file = read_file(path, &flen);
	assert_no_encoding_of(file, flen, root, sizeof(root));
	assert_no_encoding_of(file, flen, k1, sizeof(k1));
	free(file);

	/* Another vault under the very same key file has its own audit key. */
	w = kv_new("audit2.vault", path2, sizeof(path2));
	assert_int_equal(vault_derive_audit_key(w, k2), 0);
	assert_memory_not_equal(k1, k2, sizeof(k1));
	vault_close(w);

	assert_int_equal(vault_derive_audit_key(NULL, k2), -1);
	vault_close(NULL);
	sodium_memzero(root, sizeof(root));
	vault_keysrc_wipe(&keysrc);
	vault_keysrc_wipe(&passsrc);
}

/* ---------------------------------------------- updates by a read-only handle */

/*
 * The daemon's handle A (read-only, key derived once) and the CLI's B (for
 * update): each sees the other's changes and neither loses one.
 */
static void
test_update_read_only_handle(void **state)
{
	char path[PATH_MAX], err[ERRLEN];
	const struct vault_account *a;
	struct vault *A, *B;
	uint64_t gen;

	(void)state;
	B = kv_new("update.vault", path, sizeof(path));
	add_account(B, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);
	A = open_ro(path, test_key);
	assert_true(lock_is_free(path));

	B = open_rw(path, test_key);
	add_account(B, "bob@example.com", "sales@example.com", "bob-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);

	/* Without an update, A neither sees B's account nor may save. */
	assert_null(vault_account_find(A, "bob@example.com"));
	assert_int_equal(vault_account_set_status(A, "alice@example.com",
	    VAULT_STATUS_AUTH_FAILED, err, sizeof(err)), 0);
	assert_int_equal(vault_save(A, err, sizeof(err)), -1);
	assert_err(err, "opened read-only");

	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	assert_false(lock_is_free(path));
	assert_int_equal(vault_changed_on_disk(A), 0);
	assert_secret(vault_account_current(vault_account_find(A, "sales@example.com")),
	    "bob-1");
	/* What A changed before begin was replaced by the file's state. */
	assert_int_equal(vault_account_find(A, "alice@example.com")->status,
	    VAULT_STATUS_OK);
	gen = vault_generation(A);
	assert_int_equal(vault_account_set_status(A, "bob@example.com",
	    VAULT_STATUS_AUTH_FAILED, err, sizeof(err)), 0);
	assert_int_equal(vault_save(A, err, sizeof(err)), 0);
	/* More than one save in an update is fine. */
	assert_int_equal(vault_account_rotate(A, "alice@example.com",
	    (const unsigned char *)"alice-2", 7, NOW, NULL, err, sizeof(err)), 0);
	assert_int_equal(vault_save(A, err, sizeof(err)), 0);
	assert_int_equal(vault_generation(A), gen + 2);
	assert_int_equal(vault_changed_on_disk(A), 0);
	/* The daemon's handle never re-keys, even inside an update. */
	{
		struct vault_keysrc other;

		src_key(&other, other_key);
		assert_int_equal(vault_rekey(A, &other, VAULT_KDF_KEYFILE, err,
		    sizeof(err)), -1);
		assert_err(err, "opened read-only");
		vault_keysrc_wipe(&other);
	}
	vault_end_update(A);
	assert_true(lock_is_free(path));
	vault_end_update(A);		/* not held: nothing to do */
	vault_end_update(NULL);
	assert_int_equal(vault_save(A, err, sizeof(err)), -1);
	assert_err(err, "opened read-only");
	/* Still A's own saved state after end. */
	assert_int_equal(vault_account_find(A, "bob@example.com")->status,
	    VAULT_STATUS_AUTH_FAILED);

	/* B's next open sees both its account and A's changes. */
	B = open_rw(path, test_key);
	a = vault_account_find(B, "bob@example.com");
	assert_non_null(a);
	assert_int_equal(a->status, VAULT_STATUS_AUTH_FAILED);
	assert_secret(vault_account_current(vault_account_find(B, "alice@example.com")),
	    "alice-2");
	assert_int_equal(vault_generation(B), gen + 2);
	vault_close(B);
	vault_close(A);
}

/*
 * Between begin and end the lock is held against another process's
 * vault_open(for_update): the child's open returns only after end, and its
 * update is made on top of A's. The child is forked before begin: a child
 * forked inside an update would share the parent's lock (flock belongs to
 * the open file description) until it exits or execs.
 */
static void
test_update_holds_lock_until_end(void **state)
{
	char path[PATH_MAX], err[ERRLEN], c;
	struct pollfd pfd;
	struct vault *A, *v;
	int go[2], got[2], status;
	pid_t pid;

	(void)state;
	v = kv_new("update-lock.vault", path, sizeof(path));
	add_account(v, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(v, err, sizeof(err)), 0);
	vault_close(v);

	/* The child holds no copy of A either (valgrind would call it a leak). */
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(got), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct vault_keysrc src;
		struct vault_account t;
		int ok;

		close(go[1]);
		close(got[0]);
		src_key(&src, test_key);
		v = NULL;
		ok = read(go[0], &c, 1) == 1;
		ok = ok && vault_open(path, &src, 1, &v, err, sizeof(err)) == 0;
		ok = ok && write(got[1], "x", 1) == 1;
		/* The parent's change must be there already. */
		ok = ok && vault_account_find(v, "alice@example.com")->status ==
		    VAULT_STATUS_AUTH_FAILED;
		tmpl_init(&t, "carol@example.com", NULL, NULL);
		ok = ok && vault_account_add(v, &t, (const unsigned char *)"c", 1, NOW,
		    err, sizeof(err)) == 0 && vault_save(v, err, sizeof(err)) == 0;
		if (!ok)
			fprintf(stderr, "child: %s\n", err);
		vault_close(v);
		vault_keysrc_wipe(&src);
		_exit(ok ? 0 : 1);
	}
	close(go[0]);
	close(got[1]);
	A = open_ro(path, test_key);
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	pfd.fd = got[0];
	pfd.events = POLLIN;
	assert_int_equal(poll(&pfd, 1, 300), 0);	/* the child is waiting */
	assert_int_equal(vault_account_set_status(A, "alice@example.com",
	    VAULT_STATUS_AUTH_FAILED, err, sizeof(err)), 0);
	assert_int_equal(vault_save(A, err, sizeof(err)), 0);
	assert_int_equal(poll(&pfd, 1, 100), 0);	/* still, after the save */
	vault_end_update(A);
	assert_int_equal(read(got[0], &c, 1), 1);	/* now it has the lock */
	close(got[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	assert_int_equal(vault_changed_on_disk(A), 1);
	assert_int_equal(vault_reload(A, err, sizeof(err)), 0);
	assert_non_null(vault_account_find(A, "carol@example.com"));
	assert_int_equal(vault_account_find(A, "alice@example.com")->status,
	    VAULT_STATUS_AUTH_FAILED);
	vault_close(A);
}

/*
 * begin waits for a writer that lets go soon, and gives up on one that does
 * not within VAULT_UPDATE_LOCK_WAIT_MS, leaving A as it was and unlocked.
 */
static void
test_update_waits_bounded(void **state)
{
	char path[PATH_MAX], lock[PATH_MAX], err[ERRLEN], c;
	struct timespec t0;
	struct vault *A, *B;
	int ready[2], status;
	pid_t pid;

	(void)state;
	B = kv_new("update-wait.vault", path, sizeof(path));
	add_account(B, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);
	assert_true((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) < sizeof(lock));

	/* A writer holding the lock for a moment: begin waits for it. */
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(lock, O_RDWR | O_CLOEXEC);

		close(ready[0]);
		if (fd == -1 || flock(fd, LOCK_EX) == -1 || write(ready[1], "x", 1) != 1)
			_exit(1);
		usleep(200 * 1000);
		_exit(0);		/* exiting releases the lock */
	}
	close(ready[1]);
	A = open_ro(path, test_key);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (vault_begin_update(A, err, sizeof(err)) != 0)
		fail_msg("begin: %s", err);
	assert_true(elapsed(&t0) >= 0.1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	vault_end_update(A);

	/* A writer that keeps it (a CLI command at a prompt): begin gives up. */
	B = open_rw(path, test_key);
	add_account(B, "bob@example.com", NULL, "bob-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), -1);
	assert_true(elapsed(&t0) >= VAULT_UPDATE_LOCK_WAIT_MS / 1000.0);
	assert_err(err, "is busy");
	assert_err(err, path);
	assert_int_equal(vault_account_count(A), 1);
	assert_int_equal(vault_save(A, err, sizeof(err)), -1);
	vault_close(B);
	assert_true(lock_is_free(path));

	/* And works once the writer is gone. */
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	assert_int_equal(vault_account_count(A), 2);
	vault_end_update(A);
	vault_close(A);
}

/* A re-key needs a passphrase the daemon does not have: begin says so. */
static void
test_update_after_rekey_fails(void **state)
{
	unsigned char k1[VAULT_KEY_BYTES], k2[VAULT_KEY_BYTES];
	char path[PATH_MAX], err[ERRLEN];
	struct vault_keysrc other;
	struct vault *A, *B;

	(void)state;
	B = kv_new("update-rekey.vault", path, sizeof(path));
	add_account(B, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);
	A = open_ro(path, test_key);
	assert_int_equal(vault_derive_audit_key(A, k1), 0);

	B = open_rw(path, test_key);
	src_key(&other, other_key);
	assert_int_equal(vault_rekey(B, &other, VAULT_KDF_KEYFILE, err, sizeof(err)), 0);
	add_account(B, "bob@example.com", NULL, "bob-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);

	assert_int_equal(vault_begin_update(A, err, sizeof(err)), -1);
	assert_err(err, "was re-keyed");
	assert_err(err, path);
	assert_true(lock_is_free(path));
	/* A keeps serving what it had. */
	assert_int_equal(vault_account_count(A), 1);
	assert_secret(vault_account_current(vault_account_find(A, "alice@example.com")),
	    "alice-1");
	assert_int_equal(vault_derive_audit_key(A, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	assert_int_equal(vault_save(A, err, sizeof(err)), -1);
	vault_end_update(A);
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), -1);
	assert_err(err, "was re-keyed");
	vault_close(A);

	/* The new key opens it, with the audit key of before the re-key. */
	A = open_ro(path, other_key);
	assert_int_equal(vault_account_count(A), 2);
	assert_int_equal(vault_derive_audit_key(A, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	vault_close(A);
	vault_keysrc_wipe(&other);
}

/* end drops what was not saved, so the daemon never serves what the file lacks. */
static void
test_update_end_drops_unsaved(void **state)
{
	char path[PATH_MAX], tmp[PATH_MAX], err[ERRLEN];
	struct vault *A, *B;

	(void)state;
	B = kv_new("update-drop.vault", path, sizeof(path));
	add_account(B, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);
	A = open_ro(path, test_key);

	/* Abandoned: no save. */
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	add_account(A, "bob@example.com", NULL, "bob-1");
	assert_int_equal(vault_admin_add(A, "root", (const unsigned char *)"pw", 2, NOW,
	    err, sizeof(err)), 0);
	vault_end_update(A);
	assert_null(vault_account_find(A, "bob@example.com"));
	assert_int_equal(vault_admin_count(A), 0);

	/* A failed save. */
	assert_true((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) <
	    sizeof(tmp));
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	assert_int_equal(vault_account_remove(A, "alice@example.com", err, sizeof(err)), 0);
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(vault_save(A, err, sizeof(err)), -1);
	assert_int_equal(rmdir(tmp), 0);
	vault_end_update(A);
	assert_non_null(vault_account_find(A, "alice@example.com"));

	/* Saved, then changed again: the save stays, the later change goes. */
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	add_account(A, "carol@example.com", NULL, "carol-1");
	assert_int_equal(vault_save(A, err, sizeof(err)), 0);
	assert_int_equal(vault_account_set_status(A, "carol@example.com",
	    VAULT_STATUS_AUTH_FAILED, err, sizeof(err)), 0);
	vault_end_update(A);
	assert_int_equal(vault_account_find(A, "carol@example.com")->status,
	    VAULT_STATUS_OK);
	assert_int_equal(vault_account_count(A), 2);
	assert_int_equal(vault_changed_on_disk(A), 0);
	vault_close(A);

	B = open_ro(path, test_key);
	assert_int_equal(vault_account_count(B), 2);
	assert_null(vault_account_find(B, "bob@example.com"));
	vault_close(B);
}

/*
 * A handle opened for update holds the lock already: begin and end do
 * nothing, not even drop unsaved changes. On a read-only handle a second
 * begin is refused and keeps the first update.
 */
static void
test_update_nesting_and_for_update(void **state)
{
	char path[PATH_MAX], err[ERRLEN];
	struct vault *A, *B;

	(void)state;
	B = kv_new("update-rw.vault", path, sizeof(path));
	assert_false(lock_is_free(path));
	assert_int_equal(vault_begin_update(B, err, sizeof(err)), 0);
	add_account(B, "alice@example.com", NULL, "alice-1");
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	add_account(B, "bob@example.com", NULL, "bob-1");
	vault_end_update(B);
	assert_false(lock_is_free(path));
	assert_non_null(vault_account_find(B, "bob@example.com"));
	assert_int_equal(vault_save(B, err, sizeof(err)), 0);
	vault_close(B);
	assert_true(lock_is_free(path));

	A = open_ro(path, test_key);
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), 0);
	assert_int_equal(vault_begin_update(A, err, sizeof(err)), -1);
	assert_err(err, "already in progress");
	assert_false(lock_is_free(path));
	assert_int_equal(vault_account_remove(A, "bob@example.com", err, sizeof(err)), 0);
	assert_int_equal(vault_save(A, err, sizeof(err)), 0);
	vault_end_update(A);
	assert_true(lock_is_free(path));
	assert_int_equal(vault_begin_update(NULL, err, sizeof(err)), -1);
	vault_close(A);

	A = open_ro(path, test_key);
	assert_int_equal(vault_account_count(A), 1);
	vault_close(A);
}

/* ----------------------------------------------------------------- payload */

/* Offsets into the encoding of sample_data(), for targeted corruption. */
#define OFF_AUDIT_ROOT	10	/* after version and generation */
#define OFF_ACCOUNTS	(OFF_AUDIT_ROOT + VAULT_AUDIT_ROOT_BYTES)	/* u16 */
#define OFF_ADDR0	(OFF_ACCOUNTS + 2)

static void
sample_data(struct vault_data *d)
{
	struct vault_account *a;

	assert_int_equal(vault_data_init(d), 0);
	assert_int_equal(vault_data_reserve(d, 2), 0);
	memset(d->accounts, 0, 2 * sizeof(d->accounts[0]));
	a = &d->accounts[0];
	strlcpy(a->address, "alice@example.com", sizeof(a->address));
	strlcpy(a->aliases[0], "sales@example.com", sizeof(a->aliases[0]));
	strlcpy(a->aliases[1], "info@example.com", sizeof(a->aliases[1]));
	a->n_aliases = 2;
	a->daily_limit = 123;
	a->daily_rcpt_limit = 456;
	strlcpy(a->upstream_host, "smtp.example.net", sizeof(a->upstream_host));
	a->upstream_port = 587;
	a->upstream_tls = 0;
	a->created = -5;
	a->rotated = INT64_MAX;
	a->current = 2;
	a->creds[0].version = 1;
	a->creds[1].version = 2;
	assert_int_equal(vault_secret_set(&a->creds[0].secret,
	    (const unsigned char *)"old\0secret", 10), 0);
	assert_int_equal(vault_secret_set(&a->creds[1].secret,
	    (const unsigned char *)"new-secret", 10), 0);
	a->n_creds = 2;
	a = &d->accounts[1];
	strlcpy(a->address, "bob@example.org", sizeof(a->address));
	a->upstream_tls = -1;
	a->status = VAULT_STATUS_AUTH_FAILED;
	a->current = 5;
	a->creds[0].version = 5;
	assert_int_equal(vault_secret_set(&a->creds[0].secret,
	    (const unsigned char *)"b", 1), 0);
	a->n_creds = 1;
	d->n_accounts = 2;
	strlcpy(d->admins[0].name, "root", sizeof(d->admins[0].name));
	strlcpy(d->admins[0].hash, ADMIN_HASH_SAMPLE, sizeof(d->admins[0].hash));
	d->admins[0].created = 42;
	d->n_admins = 1;
}

static uint8_t *
encode(const struct vault_data *d, uint64_t gen, size_t *len)
{
	uint8_t *buf;

	assert_int_equal(vault_payload_encode(d, gen, NULL, 0, len), 0);
	buf = malloc(*len);
	assert_non_null(buf);
	assert_int_equal(vault_payload_encode(d, gen, buf, *len, len), 0);
	return buf;
}

static void
test_payload_roundtrip(void **state)
{
	unsigned char root[VAULT_AUDIT_ROOT_BYTES], root2[VAULT_AUDIT_ROOT_BYTES];
	struct vault_data d, p;
	char err[ERRLEN];
	uint8_t *buf;
	size_t len;

	(void)state;
	sample_data(&d);
	buf = encode(&d, 77, &len);
	assert_int_equal(vault_payload_encode(&d, 77, buf, len - 1, &len), -1);
	assert_int_equal(vault_payload_parse(buf, len, &p, err, sizeof(err)), 0);
	assert_int_equal(p.generation, 77);
	audit_root_of(&d, root);
	audit_root_of(&p, root2);
	assert_memory_equal(root, root2, sizeof(root));
	assert_memory_equal(buf + OFF_AUDIT_ROOT, root, sizeof(root));
	assert_false(sodium_is_zero(root, sizeof(root)));
	assert_int_equal(p.n_accounts, 2);
	assert_string_equal(p.accounts[0].aliases[1], "info@example.com");
	assert_int_equal(p.accounts[0].created, -5);
	assert_int_equal(p.accounts[0].rotated, INT64_MAX);
	assert_int_equal(p.accounts[0].upstream_tls, 0);
	assert_int_equal(p.accounts[0].upstream_port, 587);
	assert_int_equal(p.accounts[0].creds[0].secret.len, 10);
	assert_memory_equal(p.accounts[0].creds[0].secret.buf, "old\0secret", 10);
	assert_int_equal(p.accounts[1].upstream_tls, -1);
	assert_int_equal(p.accounts[1].status, VAULT_STATUS_AUTH_FAILED);
	assert_string_equal(p.admins[0].hash, ADMIN_HASH_SAMPLE);
	assert_int_equal(p.admins[0].created, 42);
	vault_data_free(&p);
	vault_data_free(&d);
	free(buf);
}

struct payload_case {
	const char	*name;
	void		(*mutate)(struct vault_data *);
	size_t		patch_at;	/* 0: no patch */
	uint16_t	patch;
	const char	*want;
};

static void mut_dup_address(struct vault_data *d)
{ strlcpy(d->accounts[1].address, "SALES@example.com", VAULT_ADDR_MAX); }
static void mut_bad_address(struct vault_data *d)
{ strlcpy(d->accounts[1].address, "no-at-sign", VAULT_ADDR_MAX); }
static void mut_current_missing(struct vault_data *d)
{ d->accounts[0].current = 3; }
static void mut_versions_unsorted(struct vault_data *d)
{ d->accounts[0].creds[0].version = 2; }
static void mut_version_zero(struct vault_data *d)
{ d->accounts[1].creds[0].version = 0; d->accounts[1].current = 0; }
static void mut_bad_tls(struct vault_data *d)
{ d->accounts[1].upstream_tls = 2; }
static void mut_bad_status(struct vault_data *d)
{ d->accounts[1].status = 2; }
static void mut_bad_host(struct vault_data *d)
{ strlcpy(d->accounts[0].upstream_host, "a host", VAULT_HOST_MAX); }
static void mut_dup_admin(struct vault_data *d)
{ d->admins[1] = d->admins[0]; strlcpy(d->admins[1].name, "ROOT", VAULT_NAME_MAX);
  d->n_admins = 2; }
static void mut_bad_admin_name(struct vault_data *d)
{ strlcpy(d->admins[0].name, "ro ot", VAULT_NAME_MAX); }
static void mut_bad_hash(struct vault_data *d)
{ strlcpy(d->admins[0].hash, "plaintext", VAULT_HASH_MAX); }
static void mut_no_creds_current(struct vault_data *d)
{ vault_secret_wipe(&d->accounts[1].creds[0].secret); d->accounts[1].n_creds = 0; }
static void mut_zero_audit_root(struct vault_data *d)
{ sodium_mprotect_readwrite(d->audit_root);
  sodium_memzero(d->audit_root, VAULT_AUDIT_ROOT_BYTES);
  sodium_mprotect_noaccess(d->audit_root); }

static void
test_payload_refusals(void **state)
{
	const struct payload_case cases[] = {
		{ "no audit root", mut_zero_audit_root, 0, 0, "no audit root key" },
		{ "too many accounts", NULL, OFF_ACCOUNTS, VAULT_MAX_ACCOUNTS + 1,
		    "too many accounts" },
		{ "accounts beyond data", NULL, OFF_ACCOUNTS, 900, "" },
		{ "huge address length", NULL, OFF_ADDR0, 0xffff, "bad account address" },
		{ "empty address", NULL, OFF_ADDR0, 0, "bad account address" },
		{ "alias count", NULL, OFF_ADDR0 + 2 + 17, VAULT_MAX_ALIASES + 1,
		    "bad alias count" },
		{ "duplicate address", mut_dup_address, 0, 0, "used twice" },
		{ "bad address", mut_bad_address, 0, 0, "bad account address" },
		{ "current missing", mut_current_missing, 0, 0, "is not stored" },
		{ "versions unsorted", mut_versions_unsorted, 0, 0, "bad credential" },
		{ "version zero", mut_version_zero, 0, 0, "bad credential" },
		{ "no creds but current", mut_no_creds_current, 0, 0, "is not stored" },
		{ "bad tls", mut_bad_tls, 0, 0, "TLS" },
		{ "bad status", mut_bad_status, 0, 0, "bad status" },
		{ "bad host", mut_bad_host, 0, 0, "upstream" },
		{ "duplicate admin", mut_dup_admin, 0, 0, "stored twice" },
		{ "bad admin name", mut_bad_admin_name, 0, 0, "bad admin" },
		{ "bad admin hash", mut_bad_hash, 0, 0, "bad admin" },
	};
	static const uint16_t other_versions[] = { 0, 1, VAULT_PAYLOAD_VERSION + 1, 0xffff };
	struct vault_data d, p;
	char err[ERRLEN];
	uint8_t *buf;
	size_t len, i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct payload_case *c = &cases[i];

		sample_data(&d);
		if (c->mutate != NULL)
			c->mutate(&d);
		buf = encode(&d, 1, &len);
		if (c->patch_at != 0) {
			buf[c->patch_at] = (uint8_t)c->patch;
			buf[c->patch_at + 1] = (uint8_t)(c->patch >> 8);
		}
		err[0] = '\0';
		if (vault_payload_parse(buf, len, &p, err, sizeof(err)) != -1)
			fail_msg("%s: accepted", c->name);
		assert_err(err, "vault payload is malformed");
		assert_err(err, c->want);
		vault_data_free(&d);
		free(buf);
	}

	/* Every payload version but ours; 1 had no audit root key. */
	for (i = 0; i < sizeof(other_versions) / sizeof(other_versions[0]); i++) {
		sample_data(&d);
		buf = encode(&d, 1, &len);
		buf[0] = (uint8_t)other_versions[i];
		buf[1] = (uint8_t)(other_versions[i] >> 8);
		assert_int_equal(vault_payload_parse(buf, len, &p, err, sizeof(err)), -1);
		assert_err(err, "unknown payload version");
		vault_data_free(&d);
		free(buf);
	}

	/* Trailing bytes and every truncation. */
	sample_data(&d);
	buf = encode(&d, 1, &len);
	buf = realloc(buf, len + 1);
	assert_non_null(buf);
	buf[len] = 0;
	assert_int_equal(vault_payload_parse(buf, len + 1, &p, err, sizeof(err)), -1);
	assert_err(err, "unexpected bytes at the end");
	for (i = 0; i < len; i++)
		assert_int_equal(vault_payload_parse(buf, i, &p, err, sizeof(err)), -1);
	assert_int_equal(vault_payload_parse(NULL, 0, &p, err, sizeof(err)), -1);
	vault_data_free(&d);
	free(buf);
}

/* Arbitrary bytes, and mutations of a valid payload: refused or parsed, never a crash. */
static void
test_payload_fuzz(void **state)
{
	struct vault_data d, p;
	char err[ERRLEN];
	uint64_t seed = FUZZ_SEED;
	uint8_t *valid, *buf;
	size_t vlen, len, i, k, flips;
	unsigned parsed = 0;

	(void)state;
	buf = malloc(FUZZ_MAX_LEN + 64);
	assert_non_null(buf);
	for (i = 0; i < FUZZ_RANDOM_ITER; i++) {
		len = (size_t)(rnd(&seed) % FUZZ_MAX_LEN);
		for (k = 0; k < len; k++)
			buf[k] = (uint8_t)rnd(&seed);
		/* Half of the inputs get a valid version so the parser goes deeper. */
		if (len >= 2 && (i & 1)) {
			buf[0] = VAULT_PAYLOAD_VERSION;
			buf[1] = 0;
			if (len > OFF_ACCOUNTS + 1)
				buf[OFF_ACCOUNTS + 1] = 0;	/* a small account count */
		}
		if (vault_payload_parse(buf, len, &p, err, sizeof(err)) == 0) {
			parsed++;
			vault_data_free(&p);
		}
	}

	sample_data(&d);
	valid = encode(&d, 9, &vlen);
	assert_true(vlen <= FUZZ_MAX_LEN);
	for (i = 0; i < FUZZ_MUTATE_ITER; i++) {
		memcpy(buf, valid, vlen);
		len = vlen;
		flips = 1 + (size_t)(rnd(&seed) % 4);
		for (k = 0; k < flips; k++) {
			size_t at = (size_t)(rnd(&seed) % len);

			switch (rnd(&seed) % 4) {
			case 0:
				buf[at] ^= (uint8_t)(1u << (rnd(&seed) % 8));
				break;
			case 1:
				buf[at] = (uint8_t)rnd(&seed);
				break;
			case 2:
				buf[at] = 0xff;
				if (at + 1 < len)
					buf[at + 1] = 0xff;
				break;
			default:
				len = at;	/* truncate */
				break;
			}
			if (len == 0)
				break;
		}
		if (vault_payload_parse(buf, len, &p, err, sizeof(err)) == 0) {
			parsed++;
			assert_true(p.n_accounts <= VAULT_MAX_ACCOUNTS);
			assert_true(p.n_admins <= VAULT_MAX_ADMINS);
			vault_data_free(&p);
		} else {
			assert_null(strchr(err, '\n'));
		}
	}
	/* Some mutations (a secret's byte, a limit) are valid payloads. */
	assert_true(parsed > 0);
	vault_data_free(&d);
	free(valid);
	free(buf);
}

/* ------------------------------------------------------------- small helpers */

static void
test_normalize_app_password(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "abcd efgh ijkl mnop", "abcdefghijklmnop" },
		{ " a\tb  c ", "abc" },
		{ "abcdefghijklmnop", "abcdefghijklmnop" },
		{ "    ", "" },
		{ "", "" },
	};
	unsigned char buf[64];
	size_t i, len, n;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = strlen(cases[i].in);
		memcpy(buf, cases[i].in, len);
		n = vault_normalize_app_password(buf, len);
		assert_int_equal(n, strlen(cases[i].out));
		assert_memory_equal(buf, cases[i].out, n);
	}
	assert_int_equal(vault_normalize_app_password(NULL, 5), 0);
}

static void
test_secret_set_wipe(void **state)
{
	struct vault_secret s;

	(void)state;
	assert_int_equal(vault_secret_set(&s, (const unsigned char *)"abc", 3), 0);
	assert_int_equal(s.len, 3);
	assert_string_equal((const char *)s.buf, "abc");
	vault_secret_wipe(&s);
	assert_null(s.buf);
	assert_int_equal(s.len, 0);
	vault_secret_wipe(&s);		/* twice is fine */
	vault_secret_wipe(NULL);
	assert_int_equal(vault_secret_set(&s, NULL, 0), 0);
	assert_int_equal(s.len, 0);
	assert_int_equal(s.buf[0], '\0');
	vault_secret_wipe(&s);
	assert_int_equal(vault_secret_set(&s, NULL, 4), -1);
	assert_null(s.buf);
}

/* Last: the process stays non-dumpable. */
static void
test_harden_process(void **state)
{
	struct rlimit rl;

	(void)state;
	vault_harden_process();
	assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 0);
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keysrc_from_file),
		cmocka_unit_test(test_keysrc_refuses_loose_modes),
		cmocka_unit_test(test_keysrc_systemd_credential_acl),
		cmocka_unit_test(test_create_open_passphrase),
		cmocka_unit_test(test_create_open_keyfile),
		cmocka_unit_test(test_create_refuses_existing),
		cmocka_unit_test(test_file_modes_under_umask_zero),
		cmocka_unit_test(test_save_keeps_owner),
		cmocka_unit_test(test_open_missing_and_foreign),
		cmocka_unit_test(test_newer_format_version),
		cmocka_unit_test(test_tamper_every_byte_keyfile),
		cmocka_unit_test(test_tamper_sample_passphrase),
		cmocka_unit_test(test_truncation_every_length),
		cmocka_unit_test(test_account_add_roundtrip),
		cmocka_unit_test(test_account_add_refusals),
		cmocka_unit_test(test_account_rotate_keeps_newest),
		cmocka_unit_test(test_account_rollback),
		cmocka_unit_test(test_account_rotate_spares_current),
		cmocka_unit_test(test_account_remove_and_status),
		cmocka_unit_test(test_account_unknown),
		cmocka_unit_test(test_account_limit),
		cmocka_unit_test(test_admin_users),
		cmocka_unit_test(test_rekey),
		cmocka_unit_test(test_no_secret_in_file),
		cmocka_unit_test(test_lock_held_until_close),
		cmocka_unit_test(test_concurrent_writers),
		cmocka_unit_test(test_save_failure_leaves_file),
		cmocka_unit_test(test_changed_on_disk_and_reload),
		cmocka_unit_test(test_open_for_update_rereads_under_lock),
		cmocka_unit_test(test_generation),
		cmocka_unit_test(test_audit_key),
		cmocka_unit_test(test_update_read_only_handle),
		cmocka_unit_test(test_update_holds_lock_until_end),
		cmocka_unit_test(test_update_waits_bounded),
		cmocka_unit_test(test_update_after_rekey_fails),
		cmocka_unit_test(test_update_end_drops_unsaved),
		cmocka_unit_test(test_update_nesting_and_for_update),
		cmocka_unit_test(test_payload_roundtrip),
		cmocka_unit_test(test_payload_refusals),
		cmocka_unit_test(test_payload_fuzz),
		cmocka_unit_test(test_normalize_app_password),
		cmocka_unit_test(test_secret_set_wipe),
		cmocka_unit_test(test_harden_process),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
