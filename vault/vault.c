/*
 * vault.c: the vault file. Header encoding, key derivation (Argon2id or key
 * file, then crypto_kdf subkeys), sealing and opening the payload, the lock
 * that serialises writers, atomic durable writes, reloading a changed file,
 * updates by a handle opened read-only (the daemon's), re-keying, and the
 * audit key. The layout is described in vault_internal.h.
 *
 * A failure never changes the vault file: a save writes a temporary file in
 * the same directory and renames it over the vault only once it is complete
 * and on disk.
 */
#include "vault_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bsd/string.h>

#define LOCK_SUFFIX	".lock"
#define TMP_SUFFIX	".tmp."		/* followed by the writer's PID */
/* Room left in a PATH_MAX buffer for the longest suffix and a PID. */
#define PATH_SUFFIX_ROOM	32
#define FILE_MODE	0600
#define MIB		(1024 * 1024)
#define LOCK_WAIT_FOREVER	(-1)
#define LOCK_POLL_MS		10	/* between tries of a bounded lock wait */
#define NS_PER_SEC		1000000000LL
#define NS_PER_MS		1000000L

_Static_assert(VAULT_KEY_BYTES == crypto_kdf_KEYBYTES, "master key is a crypto_kdf key");
_Static_assert(VAULT_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
    "payload key is an XChaCha20-Poly1305 key");
_Static_assert(sizeof(VAULT_KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES,
    "crypto_kdf context is 8 bytes");
_Static_assert(sizeof(VAULT_MAGIC) == VAULT_MAGIC_LEN, "magic is 8 bytes with its NUL");

static void
kdf_limits(enum vault_kdf kdf, uint64_t *ops, uint64_t *mem)
{
	switch (kdf) {
	case VAULT_KDF_INTERACTIVE:
		*ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
		*mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
		break;
	case VAULT_KDF_MODERATE:
		*ops = crypto_pwhash_OPSLIMIT_MODERATE;
		*mem = crypto_pwhash_MEMLIMIT_MODERATE;
		break;
	case VAULT_KDF_SENSITIVE:
		*ops = crypto_pwhash_OPSLIMIT_SENSITIVE;
		*mem = crypto_pwhash_MEMLIMIT_SENSITIVE;
		break;
	case VAULT_KDF_KEYFILE:
	default:
		*ops = 0;
		*mem = 0;
		break;
	}
}

static void
put_le(uint8_t *p, uint64_t x, size_t width)
{
	size_t i;

	for (i = 0; i < width; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static uint64_t
get_le(const uint8_t *p, size_t width)
{
	uint64_t x = 0;
	size_t i;

	for (i = 0; i < width; i++)
		x |= (uint64_t)p[i] << (8 * i);
	return x;
}

static void
header_encode(const struct vault_header *h, uint8_t *out)
{
	uint8_t *p = out;

	memcpy(p, VAULT_MAGIC, VAULT_MAGIC_LEN);
	p += VAULT_MAGIC_LEN;
	put_le(p, h->version, 2);
	p += 2;
	*p++ = h->kdf;
	put_le(p, h->opslimit, 8);
	p += 8;
	put_le(p, h->memlimit, 8);
	p += 8;
	memcpy(p, h->salt, VAULT_SALT_BYTES);
	p += VAULT_SALT_BYTES;
	memcpy(p, h->nonce, VAULT_NONCE_BYTES);
}

/*
 * Checks everything that can be checked before the key is known. The order
 * matters: a newer format version is reported even if its header is longer.
 */
static int
header_parse(const char *path, const uint8_t *buf, size_t len, struct vault_header *h,
    char *err, size_t errlen)
{
	const uint8_t *p = buf;

	if (memcmp(buf, VAULT_MAGIC, len < VAULT_MAGIC_LEN ? len : VAULT_MAGIC_LEN) != 0) {
		snprintf(err, errlen, "%s is not a smtpvault vault", path);
		return -1;
	}
	if (len < VAULT_MAGIC_LEN + 2) {
		snprintf(err, errlen, "cannot decrypt vault %s: the file is truncated", path);
		return -1;
	}
	p += VAULT_MAGIC_LEN;
	h->version = (uint16_t)get_le(p, 2);
	p += 2;
	if (h->version > VAULT_FORMAT_VERSION) {
		snprintf(err, errlen, "%s: vault format version %u is newer than this "
		    "smtpvault supports", path, (unsigned)h->version);
		return -1;
	}
	if (h->version != VAULT_FORMAT_VERSION) {
		snprintf(err, errlen, "cannot decrypt vault %s: unknown format version %u, "
		    "the file is damaged", path, (unsigned)h->version);
		return -1;
	}
	if (len < VAULT_HEADER_LEN + VAULT_TAG_BYTES) {
		snprintf(err, errlen, "cannot decrypt vault %s: the file is truncated", path);
		return -1;
	}
	h->kdf = *p++;
	h->opslimit = get_le(p, 8);
	p += 8;
	h->memlimit = get_le(p, 8);
	p += 8;
	memcpy(h->salt, p, VAULT_SALT_BYTES);
	p += VAULT_SALT_BYTES;
	memcpy(h->nonce, p, VAULT_NONCE_BYTES);

	if (h->kdf > VAULT_KDF_SENSITIVE) {
		snprintf(err, errlen, "cannot decrypt vault %s: the header is damaged "
		    "(unknown KDF id %u)", path, (unsigned)h->kdf);
		return -1;
	}
	if (h->kdf == VAULT_KDF_KEYFILE ? (h->opslimit != 0 || h->memlimit != 0) :
	    (h->opslimit < crypto_pwhash_OPSLIMIT_MIN || h->opslimit > VAULT_OPSLIMIT_MAX ||
	    h->memlimit < crypto_pwhash_MEMLIMIT_MIN || h->memlimit > VAULT_MEMLIMIT_MAX ||
	    h->memlimit > crypto_pwhash_MEMLIMIT_MAX)) {
		snprintf(err, errlen, "cannot decrypt vault %s: the header is damaged "
		    "(KDF parameters out of range)", path);
		return -1;
	}
	return 0;
}

/* Would the same key source give the same master key for both headers? */
static int
header_same_key(const struct vault_header *a, const struct vault_header *b)
{
	return a->kdf == b->kdf && a->opslimit == b->opslimit &&
	    a->memlimit == b->memlimit &&
	    sodium_memcmp(a->salt, b->salt, VAULT_SALT_BYTES) == 0;
}

/* The KDF a new header gets: a key file needs none, a passphrase needs one. */
static int
kdf_for_source(const struct vault_keysrc *src, enum vault_kdf kdf, enum vault_kdf *out,
    char *err, size_t errlen)
{
	if (src == NULL || src->material == NULL || src->len == 0) {
		snprintf(err, errlen, "no passphrase or key given");
		return -1;
	}
	if (src->is_keyfile) {
		if (src->len != VAULT_KEY_BYTES) {
			snprintf(err, errlen, "a vault key must be %d bytes", VAULT_KEY_BYTES);
			return -1;
		}
		*out = VAULT_KDF_KEYFILE;
		return 0;
	}
	if (kdf != VAULT_KDF_INTERACTIVE && kdf != VAULT_KDF_MODERATE &&
	    kdf != VAULT_KDF_SENSITIVE) {
		snprintf(err, errlen, "a passphrase needs a KDF profile: interactive, "
		    "moderate or sensitive");
		return -1;
	}
	*out = kdf;
	return 0;
}

/* Master key for header h into master (guarded, writable). Slow for passphrases. */
static int
master_derive(const char *path, const struct vault_header *h,
    const struct vault_keysrc *src, unsigned char *master, char *err, size_t errlen)
{
	if (src == NULL || src->material == NULL || src->len == 0) {
		snprintf(err, errlen, "no passphrase or key given for vault %s", path);
		return -1;
	}
	if (h->kdf == VAULT_KDF_KEYFILE) {
		if (!src->is_keyfile) {
			snprintf(err, errlen, "vault %s is protected by a key file, but a "
			    "passphrase was given", path);
			return -1;
		}
		if (src->len != VAULT_KEY_BYTES) {
			snprintf(err, errlen, "a vault key must be %d bytes", VAULT_KEY_BYTES);
			return -1;
		}
		memcpy(master, src->material, VAULT_KEY_BYTES);
		return 0;
	}
	if (src->is_keyfile) {
		snprintf(err, errlen, "vault %s is protected by a passphrase, but a key file "
		    "was given", path);
		return -1;
	}
	if (crypto_pwhash(master, VAULT_KEY_BYTES, (const char *)src->material, src->len,
	    h->salt, h->opslimit, (size_t)h->memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
		snprintf(err, errlen, "cannot derive the key of vault %s: out of memory "
		    "(Argon2id needs %llu MiB)", path,
		    (unsigned long long)(h->memlimit / MIB));
		return -1;
	}
	return 0;
}

/* A subkey of a guarded key (master, audit root) kept noaccess between uses. */
static int
guarded_subkey(unsigned char *key, uint64_t id, unsigned char *out)
{
	int rc;

	sodium_mprotect_readonly(key);
	rc = crypto_kdf_derive_from_key(out, VAULT_KEY_BYTES, id, VAULT_KDF_CONTEXT, key);
	sodium_mprotect_noaccess(key);
	return rc;
}

/*
 * Encrypt d into a new file image at *out (header + sealed payload). h gets a
 * fresh nonce; the rest of it is the caller's.
 */
static int
vault_seal(const char *path, struct vault_header *h, unsigned char *master,
    const struct vault_data *d, uint64_t generation, uint8_t **out, size_t *outlen,
    char *err, size_t errlen)
{
	unsigned char *plain = NULL, *key = NULL;
	uint8_t *file = NULL;
	size_t plen = 0, flen;
	unsigned long long clen;
	int rc = -1;

	*out = NULL;
	if (vault_payload_encode(d, generation, NULL, 0, &plen) == -1 ||
	    plen > VAULT_FILE_MAX - VAULT_HEADER_LEN - VAULT_TAG_BYTES) {
		snprintf(err, errlen, "vault %s would be larger than %u bytes", path,
		    VAULT_FILE_MAX);
		return -1;
	}
	flen = VAULT_HEADER_LEN + plen + VAULT_TAG_BYTES;
	if ((plain = sodium_malloc(plen > 0 ? plen : 1)) == NULL ||
	    (key = sodium_malloc(VAULT_KEY_BYTES)) == NULL ||
	    (file = malloc(flen)) == NULL) {
		snprintf(err, errlen, "cannot write vault %s: out of memory", path);
		goto done;
	}
	if (vault_payload_encode(d, generation, plain, plen, &plen) == -1 ||
	    guarded_subkey(master, VAULT_SUBKEY_PAYLOAD, key) != 0) {
		snprintf(err, errlen, "cannot write vault %s: internal error", path);
		goto done;
	}
	h->version = VAULT_FORMAT_VERSION;
	randombytes_buf(h->nonce, sizeof(h->nonce));
	header_encode(h, file);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(file + VAULT_HEADER_LEN, &clen,
	    plain, plen, file, VAULT_HEADER_LEN, NULL, h->nonce, key) != 0 ||
	    clen != plen + VAULT_TAG_BYTES) {
		snprintf(err, errlen, "cannot write vault %s: encryption failed", path);
		goto done;
	}
	*out = file;
	*outlen = flen;
	file = NULL;
	rc = 0;
done:
	if (plain != NULL)
		sodium_free(plain);	/* sodium_free wipes */
	if (key != NULL)
		sodium_free(key);
	free(file);
	return rc;
}

/* Decrypt and parse a file image whose header h has been checked already. */
static int
vault_unseal(const char *path, const struct vault_header *h, const uint8_t *file,
    size_t flen, unsigned char *master, struct vault_data *out, char *err, size_t errlen)
{
	unsigned char *plain = NULL, *key = NULL;
	size_t clen = flen - VAULT_HEADER_LEN;
	size_t plen = clen - VAULT_TAG_BYTES;
	unsigned long long got;
	char why[256];
	int rc = -1;

	if ((plain = sodium_malloc(plen > 0 ? plen : 1)) == NULL ||
	    (key = sodium_malloc(VAULT_KEY_BYTES)) == NULL) {
		snprintf(err, errlen, "cannot decrypt vault %s: out of memory", path);
		goto done;
	}
	if (guarded_subkey(master, VAULT_SUBKEY_PAYLOAD, key) != 0) {
		snprintf(err, errlen, "cannot decrypt vault %s: internal error", path);
		goto done;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &got, NULL,
	    file + VAULT_HEADER_LEN, clen, file, VAULT_HEADER_LEN, h->nonce, key) != 0 ||
	    got != plen) {
		snprintf(err, errlen, "cannot decrypt vault %s: wrong passphrase or key, "
		    "or the file is damaged", path);
		goto done;
	}
	if (vault_payload_parse(plain, plen, out, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "cannot read vault %s: %s", path, why);
		goto done;
	}
	rc = 0;
done:
	if (plain != NULL)
		sodium_free(plain);	/* sodium_free wipes */
	if (key != NULL)
		sodium_free(key);
	return rc;
}

static void
fileid_from_stat(const struct stat *st, struct vault_fileid *id)
{
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->mtim = st->st_mtim;
	id->ctim = st->st_ctim;
}

static int
fileid_equal(const struct vault_fileid *a, const struct vault_fileid *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	    a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec &&
	    a->ctim.tv_sec == b->ctim.tv_sec && a->ctim.tv_nsec == b->ctim.tv_nsec;
}

/* The whole file (ciphertext, not secret) into malloc'd memory. */
static int
vault_file_read(const char *path, uint8_t **out, size_t *outlen, struct vault_fileid *id,
    char *err, size_t errlen)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t off = 0, size;
	ssize_t n;
	int fd, rc = -1;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		snprintf(err, errlen, "cannot open vault %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "cannot stat vault %s: %s", path, strerror(errno));
		goto done;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "vault %s is not a regular file", path);
		goto done;
	}
	if (st.st_size < 0 || (uintmax_t)st.st_size > VAULT_FILE_MAX) {
		snprintf(err, errlen, "vault %s is larger than %u bytes; refusing to read it",
		    path, VAULT_FILE_MAX);
		goto done;
	}
	size = (size_t)st.st_size;
	if ((buf = malloc(size > 0 ? size : 1)) == NULL) {
		snprintf(err, errlen, "cannot read vault %s: out of memory", path);
		goto done;
	}
	while (off < size) {
		n = read(fd, buf + off, size - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(err, errlen, "cannot read vault %s: %s", path,
			    strerror(errno));
			goto done;
		}
		if (n == 0)
			break;
		off += (size_t)n;
	}
	fileid_from_stat(&st, id);
	*out = buf;
	*outlen = off;
	buf = NULL;
	rc = 0;
done:
	free(buf);
	close(fd);
	return rc;
}

static int
write_all(int fd, const uint8_t *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
fsync_parent_dir(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, rc;

	strlcpy(dir, path, sizeof(dir));
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strlcpy(dir, ".", sizeof(dir));
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/*
 * Write buf as the new content of path: "path.tmp.PID" in the same directory,
 * fsync, rename over path, fsync the directory. The caller holds the lock, so
 * no other writer uses temporary files now and a stale one of ours (from a
 * killed writer with the same PID, as in a container) may be removed. With
 * exclusive, an existing path is refused instead of replaced. *renamed tells
 * whether path now holds buf even on failure (when only the directory sync
 * failed).
 *
 * A replaced vault keeps its owner and group: "smtpvault account add" run as
 * root must not leave a file that the daemon's user can no longer read.
 *
 * vault_file_write() is the vault's own rather than proxy/util.c's
 * file_write_atomic(): vault/ does not depend on proxy/, it needs the
 * exclusive variant for vault_create(), and its errors name the failing step.
 */
static int
vault_file_write(const char *path, const uint8_t *buf, size_t len, int exclusive,
    struct vault_fileid *id, int *renamed, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	struct stat st, old;
	int fd = -1, tmp_exists = 0, have_old, rc = -1;

	*renamed = 0;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s%s%ld", path, TMP_SUFFIX,
	    (long)getpid()) >= sizeof(tmp)) {
		snprintf(err, errlen, "vault path %s is too long", path);
		return -1;
	}
	have_old = stat(path, &old) == 0;
	if (exclusive && (have_old || lstat(path, &st) == 0)) {
		snprintf(err, errlen, "vault %s already exists; refusing to overwrite it",
		    path);
		return -1;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
	if (fd == -1) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		goto done;
	}
	tmp_exists = 1;
	if (have_old && (old.st_uid != geteuid() || old.st_gid != getegid()) &&
	    fchown(fd, old.st_uid, old.st_gid) == -1) {
		snprintf(err, errlen, "cannot give %s the owner of vault %s (uid %ld, "
		    "gid %ld): %s", tmp, path, (long)old.st_uid, (long)old.st_gid,
		    strerror(errno));
		goto done;
	}
	if (fchmod(fd, FILE_MODE) == -1 || write_all(fd, buf, len) == -1 ||
	    fsync(fd) == -1) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		goto done;
	}
	if (exclusive) {
		/*
		 * link() never replaces: O_EXCL semantics even against a
		 * process that ignores our lock. Where the file system has no
		 * hard links, the lstat() above under our lock has to do.
		 */
		if (link(tmp, path) == 0) {
			(void)unlink(tmp);
		} else if (errno == EEXIST) {
			snprintf(err, errlen, "vault %s already exists; refusing to "
			    "overwrite it", path);
			goto done;
		} else if ((errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS) ||
		    rename(tmp, path) == -1) {
			snprintf(err, errlen, "cannot create vault %s: %s", path,
			    strerror(errno));
			goto done;
		}
	} else if (rename(tmp, path) == -1) {
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path,
		    strerror(errno));
		goto done;
	}
	tmp_exists = 0;
	*renamed = 1;
	/* After the rename, which may change the ctime we compare later. */
	if (fstat(fd, &st) == -1)
		memset(&st, 0, sizeof(st));	/* next check sees a change */
	fileid_from_stat(&st, id);
	if (fsync_parent_dir(path) == -1) {
		snprintf(err, errlen, "wrote vault %s but cannot sync its directory: %s",
		    path, strerror(errno));
		goto done;
	}
	rc = 0;
done:
	if (fd != -1)
		close(fd);
	if (tmp_exists)
		(void)unlink(tmp);
	return rc;
}

/* Whole milliseconds since since, rounded down (never reports too much). */
static long
elapsed_ms(const struct timespec *since)
{
	struct timespec now;
	int64_t ns;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (int64_t)(now.tv_sec - since->tv_sec) * NS_PER_SEC +
	    (now.tv_nsec - since->tv_nsec);
	return (long)(ns / NS_PER_MS);
}

/*
 * Exclusive flock on "path.lock"; returns the descriptor that holds it. With
 * wait_ms LOCK_WAIT_FOREVER it waits as long as the holder takes (the CLI,
 * whose user can give up with ^C); otherwise it tries for wait_ms at most,
 * so that the daemon's event loop never stalls behind a command that holds
 * the lock while it prompts for a password.
 */
static int
vault_lock(const char *path, long wait_ms, char *err, size_t errlen)
{
	const struct timespec pause = { 0, LOCK_POLL_MS * NS_PER_MS };
	char lockpath[PATH_MAX];
	struct stat vst, lst;
	struct timespec start;
	int fd;

	if ((size_t)snprintf(lockpath, sizeof(lockpath), "%s%s", path, LOCK_SUFFIX) >=
	    sizeof(lockpath)) {
		snprintf(err, errlen, "vault path %s is too long", path);
		return -1;
	}
	fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, FILE_MODE);
	if (fd == -1) {
		snprintf(err, errlen, "cannot open lock file %s: %s", lockpath,
		    strerror(errno));
		return -1;
	}
	/*
	 * Like the vault itself, the lock file belongs to the vault's owner, or
	 * the daemon's user could not take it after root did. Best effort: on
	 * failure (NFS root squashing) the lock still works for this process.
	 */
	if (geteuid() == 0 && stat(path, &vst) == 0 && fstat(fd, &lst) == 0 &&
	    (lst.st_uid != vst.st_uid || lst.st_gid != vst.st_gid) &&
	    fchown(fd, vst.st_uid, vst.st_gid) == -1) {
		/* Nothing to undo. */
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (flock(fd, wait_ms == LOCK_WAIT_FOREVER ? LOCK_EX : LOCK_EX | LOCK_NB) == -1) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			snprintf(err, errlen, "cannot lock %s: %s", lockpath,
			    strerror(errno));
			goto fail;
		}
		if (elapsed_ms(&start) >= wait_ms) {
			snprintf(err, errlen, "vault %s is busy: another writer has held "
			    "%s for %ld ms; try again later", path, lockpath, wait_ms);
			goto fail;
		}
		(void)nanosleep(&pause, NULL);
	}
	return fd;
fail:
	close(fd);
	return -1;
}

static int
path_usable(const char *path, char *err, size_t errlen)
{
	if (path == NULL || path[0] == '\0') {
		snprintf(err, errlen, "no vault path given");
		return 0;
	}
	if (strlen(path) >= PATH_MAX - PATH_SUFFIX_ROOM) {
		snprintf(err, errlen, "vault path %s is too long", path);
		return 0;
	}
	return 1;
}

int
vault_create(const char *path, const struct vault_keysrc *src, enum vault_kdf kdf,
    char *err, size_t errlen)
{
	struct vault_header h;
	struct vault_data d;
	struct vault_fileid id;
	unsigned char *master = NULL;
	uint8_t *file = NULL;
	size_t flen = 0;
	int lock_fd = -1, data_ok = 0, renamed, rc = -1;
	struct stat st;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	if (!path_usable(path, err, errlen) ||
	    kdf_for_source(src, kdf, &kdf, err, errlen) == -1)
		return -1;
	/* Fail fast, before the slow KDF; checked again under the lock. */
	if (lstat(path, &st) == 0) {
		snprintf(err, errlen, "vault %s already exists; refusing to overwrite it",
		    path);
		return -1;
	}
	memset(&h, 0, sizeof(h));
	h.version = VAULT_FORMAT_VERSION;
	h.kdf = (uint8_t)kdf;
	kdf_limits(kdf, &h.opslimit, &h.memlimit);
	randombytes_buf(h.salt, sizeof(h.salt));
	if ((master = sodium_malloc(VAULT_KEY_BYTES)) == NULL ||
	    vault_data_init(&d) == -1) {
		snprintf(err, errlen, "cannot create vault %s: out of memory", path);
		goto done;
	}
	data_ok = 1;
	if (master_derive(path, &h, src, master, err, errlen) == -1)
		goto done;
	sodium_mprotect_noaccess(master);
	if (vault_seal(path, &h, master, &d, 1, &file, &flen, err, errlen) == -1)
		goto done;
	if ((lock_fd = vault_lock(path, LOCK_WAIT_FOREVER, err, errlen)) == -1)
		goto done;
	if (vault_file_write(path, file, flen, 1, &id, &renamed, err, errlen) == -1)
		goto done;
	rc = 0;
done:
	if (lock_fd != -1)
		close(lock_fd);
	if (data_ok)
		vault_data_free(&d);
	if (master != NULL)
		sodium_free(master);
	free(file);
	return rc;
}

int
vault_open(const char *path, const struct vault_keysrc *src, int for_update,
    struct vault **out, char *err, size_t errlen)
{
	struct vault *v = NULL;
	struct vault_header h, again;
	struct vault_fileid id;
	uint8_t *file = NULL;
	size_t flen = 0;
	int rc = -1;

	if (out == NULL) {
		snprintf(err, errlen, "vault_open: no result pointer");
		return -1;
	}
	*out = NULL;
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	if (!path_usable(path, err, errlen))
		return -1;
	if ((v = calloc(1, sizeof(*v))) == NULL) {
		snprintf(err, errlen, "cannot open vault %s: out of memory", path);
		return -1;
	}
	v->lock_fd = -1;
	strlcpy(v->path, path, sizeof(v->path));
	if ((v->master = sodium_malloc(VAULT_KEY_BYTES)) == NULL) {
		snprintf(err, errlen, "cannot open vault %s: out of memory", path);
		goto done;
	}
	if (vault_file_read(path, &file, &flen, &id, err, errlen) == -1 ||
	    header_parse(path, file, flen, &h, err, errlen) == -1 ||
	    master_derive(path, &h, src, v->master, err, errlen) == -1)
		goto done;
	sodium_mprotect_noaccess(v->master);
	if (for_update) {
		/*
		 * The slow derivation above ran without the lock so that writers
		 * queue for milliseconds, not seconds. What we read before the
		 * lock may be stale: read again, and derive again only if a
		 * rekey changed the KDF or salt meanwhile.
		 */
		if ((v->lock_fd = vault_lock(path, LOCK_WAIT_FOREVER, err, errlen)) == -1)
			goto done;
		v->for_update = 1;
		free(file);
		file = NULL;
		if (vault_file_read(path, &file, &flen, &id, err, errlen) == -1 ||
		    header_parse(path, file, flen, &again, err, errlen) == -1)
			goto done;
		if (!header_same_key(&h, &again)) {
			sodium_mprotect_readwrite(v->master);
			if (master_derive(path, &again, src, v->master, err, errlen) == -1)
				goto done;
			sodium_mprotect_noaccess(v->master);
		}
		h = again;
	}
	/* v->d is still all zero from calloc(), which vault_close() accepts. */
	if (vault_unseal(path, &h, file, flen, v->master, &v->d, err, errlen) == -1)
		goto done;
	v->hdr = h;
	v->fileid = id;
	*out = v;
	v = NULL;
	rc = 0;
done:
	free(file);
	vault_close(v);
	return rc;
}

int
vault_save(struct vault *v, char *err, size_t errlen)
{
	struct vault_header h;
	struct vault_fileid id;
	uint8_t *file = NULL;
	size_t flen = 0;
	uint64_t generation;
	int renamed = 0, rc = -1;

	if (v == NULL) {
		snprintf(err, errlen, "no vault to save");
		return -1;
	}
	if (v->lock_fd == -1) {
		snprintf(err, errlen, "vault %s was opened read-only and no update is in "
		    "progress; cannot save it", v->path);
		return -1;
	}
	if (v->d.generation == UINT64_MAX) {
		snprintf(err, errlen, "vault %s: generation counter exhausted", v->path);
		return -1;
	}
	generation = v->d.generation + 1;
	h = v->hdr;
	if (vault_seal(v->path, &h, v->master, &v->d, generation, &file, &flen, err,
	    errlen) == -1)
		goto done;
	rc = vault_file_write(v->path, file, flen, 0, &id, &renamed, err, errlen);
	/* Even if only the directory sync failed, the new file is in place. */
	if (renamed) {
		v->d.generation = generation;
		v->fileid = id;
		v->hdr = h;
		v->dirty = 0;
	}
done:
	free(file);
	return rc;
}

void
vault_close(struct vault *v)
{
	if (v == NULL)
		return;
	vault_data_free(&v->d);
	if (v->master != NULL)
		sodium_free(v->master);		/* wipes, whatever its protection */
	if (v->lock_fd != -1)
		close(v->lock_fd);		/* releases the flock */
	sodium_memzero(v, sizeof(*v));
	free(v);
}

int
vault_changed_on_disk(const struct vault *v)
{
	struct vault_fileid now;
	struct stat st;

	if (v == NULL)
		return 0;
	if (stat(v->path, &st) == -1)
		return 1;
	fileid_from_stat(&st, &now);
	return !fileid_equal(&now, &v->fileid);
}

/*
 * Replace v's data with what the file holds now, decrypted with the cached
 * master key. On failure v is unchanged.
 */
static int
vault_reread(struct vault *v, char *err, size_t errlen)
{
	struct vault_header h;
	struct vault_fileid id;
	struct vault_data d;
	uint8_t *file = NULL;
	size_t flen = 0;
	int rc = -1;

	if (vault_file_read(v->path, &file, &flen, &id, err, errlen) == -1 ||
	    header_parse(v->path, file, flen, &h, err, errlen) == -1)
		goto done;
	/* A new KDF or salt needs the passphrase, which we no longer have. */
	if (!header_same_key(&h, &v->hdr)) {
		snprintf(err, errlen, "vault %s was re-keyed; restart smtpvault to unlock "
		    "it with the new passphrase or key", v->path);
		goto done;
	}
	if (vault_unseal(v->path, &h, file, flen, v->master, &d, err, errlen) == -1)
		goto done;
	vault_data_free(&v->d);
	v->d = d;
	v->fileid = id;
	v->hdr = h;
	v->dirty = 0;
	rc = 0;
done:
	free(file);
	return rc;
}

int
vault_reload(struct vault *v, char *err, size_t errlen)
{
	if (v == NULL) {
		snprintf(err, errlen, "no vault to reload");
		return -1;
	}
	return vault_reread(v, err, errlen);
}

/*
 * A handle opened for update holds the lock from open to close, so nobody
 * else can have written: begin and end have nothing to do. A read-only
 * handle takes the lock only for the update, with a bounded wait, and
 * re-reads so that it modifies what is on disk now, not what it read when
 * it last loaded.
 */
int
vault_begin_update(struct vault *v, char *err, size_t errlen)
{
	int fd;

	if (v == NULL) {
		snprintf(err, errlen, "no vault to update");
		return -1;
	}
	if (v->for_update)
		return 0;
	if (v->lock_fd != -1) {
		snprintf(err, errlen, "an update of vault %s is already in progress",
		    v->path);
		return -1;
	}
	if ((fd = vault_lock(v->path, VAULT_UPDATE_LOCK_WAIT_MS, err, errlen)) == -1)
		return -1;
	if (vault_reread(v, err, errlen) == -1) {
		close(fd);
		return -1;
	}
	v->lock_fd = fd;
	return 0;
}

void
vault_end_update(struct vault *v)
{
	char err[256];

	if (v == NULL || v->for_update || v->lock_fd == -1)
		return;
	/*
	 * Changes that did not reach the file (no save, or a failed one) are
	 * dropped while the lock still guarantees that the file is the one we
	 * began with, so that v never serves what the file does not hold. If
	 * even that read fails, v keeps them; nothing better is possible.
	 */
	if (v->dirty)
		(void)vault_reread(v, err, sizeof(err));
	close(v->lock_fd);		/* releases the flock */
	v->lock_fd = -1;
}

int
vault_rekey(struct vault *v, const struct vault_keysrc *src, enum vault_kdf kdf,
    char *err, size_t errlen)
{
	struct vault_header h;
	unsigned char *master;

	if (v == NULL) {
		snprintf(err, errlen, "no vault to re-key");
		return -1;
	}
	/* Not inside vault_begin_update(): the daemon never re-keys. */
	if (!v->for_update) {
		snprintf(err, errlen, "vault %s was opened read-only; cannot re-key it",
		    v->path);
		return -1;
	}
	if (kdf_for_source(src, kdf, &kdf, err, errlen) == -1)
		return -1;
	memset(&h, 0, sizeof(h));
	h.version = VAULT_FORMAT_VERSION;
	h.kdf = (uint8_t)kdf;
	kdf_limits(kdf, &h.opslimit, &h.memlimit);
	randombytes_buf(h.salt, sizeof(h.salt));
	if ((master = sodium_malloc(VAULT_KEY_BYTES)) == NULL) {
		snprintf(err, errlen, "cannot re-key vault %s: out of memory", v->path);
		return -1;
	}
	if (master_derive(v->path, &h, src, master, err, errlen) == -1) {
		sodium_free(master);
		return -1;
	}
	sodium_mprotect_noaccess(master);
	sodium_free(v->master);
	v->master = master;
	v->hdr = h;
	v->dirty = 1;
	return 0;
}

enum vault_kdf
vault_kdf(const struct vault *v)
{
	return (enum vault_kdf)v->hdr.kdf;
}

const char *
vault_path(const struct vault *v)
{
	return v->path;
}

uint64_t
vault_generation(const struct vault *v)
{
	return v->d.generation;
}

/*
 * From the audit root key in the payload, not from the master key: a rekey
 * replaces the master key but keeps the root, so the chain written before it
 * still verifies after it.
 */
int
vault_derive_audit_key(const struct vault *v, unsigned char out[VAULT_KEY_BYTES])
{
	if (v == NULL || v->d.audit_root == NULL)
		return -1;
	return guarded_subkey(v->d.audit_root, VAULT_SUBKEY_AUDIT, out) == 0 ? 0 : -1;
}

void
vault_harden_process(void)
{
	struct rlimit rl = { 0, 0 };

	/* Best effort: both only fail for reasons we could not fix anyway. */
	(void)setrlimit(RLIMIT_CORE, &rl);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
