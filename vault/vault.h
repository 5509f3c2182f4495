/*
 * vault.h: the encrypted store of App Passwords and admin users (SPEC
 * section 6). The only way any other module reaches the vault file.
 *
 * File: a versioned header (magic, format version, KDF id and parameters,
 * salt, nonce) that is authenticated as associated data, followed by the
 * payload sealed with XChaCha20-Poly1305. The key is Argon2id of a
 * passphrase (crypto_pwhash) or 32 bytes from a key file.
 *
 * Secrets (passphrases, keys, App Passwords) only ever live in libsodium
 * guarded memory (sodium_malloc) and are wiped when released. Functions
 * return 0 on success and -1 on failure with one human-readable line in the
 * caller's err buffer; a failure never changes the file.
 */
#ifndef SMTPVAULT_VAULT_H
#define SMTPVAULT_VAULT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define VAULT_KEY_BYTES		32
#define VAULT_ADDR_MAX		320
#define VAULT_HOST_MAX		256
#define VAULT_NAME_MAX		64
#define VAULT_SECRET_MAX	256	/* longest App Password / admin password accepted */
#define VAULT_MAX_ALIASES	16
#define VAULT_MAX_VERSIONS	8	/* credential versions kept per account */
#define VAULT_MAX_ACCOUNTS	1024
#define VAULT_MAX_ADMINS	64
#define VAULT_FILE_MAX		(16u * 1024 * 1024)	/* refuse larger files unread */
#define VAULT_HASH_MAX		128	/* crypto_pwhash_STRBYTES */
/* Longest vault_begin_update() waits for another writer's lock. */
#define VAULT_UPDATE_LOCK_WAIT_MS	1000

#define VAULT_DEFAULT_DAILY_LIMIT	2000	/* Google Workspace: messages / day */
#define VAULT_DEFAULT_RCPT_LIMIT	10000	/* Google Workspace: recipients / day */

enum vault_kdf {
	VAULT_KDF_KEYFILE	= 0,	/* raw 32-byte key, no KDF */
	VAULT_KDF_INTERACTIVE	= 1,
	VAULT_KDF_MODERATE	= 2,	/* default */
	VAULT_KDF_SENSITIVE	= 3,
};

enum vault_status {
	VAULT_STATUS_OK		= 0,
	VAULT_STATUS_AUTH_FAILED = 1,	/* upstream refused the current credential */
};

/* Where the vault key comes from: a passphrase or a 32-byte key file. */
struct vault_keysrc {
	int		is_keyfile;
	unsigned char	*material;	/* sodium_malloc'd */
	size_t		len;
};

/* A secret in guarded memory. */
struct vault_secret {
	unsigned char	*buf;		/* sodium_malloc'd, len + 1 bytes, NUL-terminated */
	size_t		len;
};

struct vault_credential {
	uint32_t		version;
	int64_t			created;
	struct vault_secret	secret;
};

struct vault_account {
	char		address[VAULT_ADDR_MAX];
	char		aliases[VAULT_MAX_ALIASES][VAULT_ADDR_MAX];
	size_t		n_aliases;
	uint64_t	daily_limit;		/* messages per rolling 24 h */
	uint64_t	daily_rcpt_limit;	/* recipients per rolling 24 h */
	char		upstream_host[VAULT_HOST_MAX];	/* "" = [upstream] host */
	uint16_t	upstream_port;		/* 0 = [upstream] port */
	int		upstream_tls;		/* -1 = [upstream] tls, else enum upstream_tls */
	int64_t		created;
	int64_t		rotated;		/* time the current version became current */
	uint32_t	status;			/* enum vault_status */
	uint32_t	current;		/* version number of the current credential */
	struct vault_credential creds[VAULT_MAX_VERSIONS];	/* ascending version */
	size_t		n_creds;
};

struct vault_admin {
	char		name[VAULT_NAME_MAX];
	char		hash[VAULT_HASH_MAX];	/* crypto_pwhash_str, not a secret */
	int64_t		created;
};

struct vault;		/* opaque */

/* Key sources. A passphrase file's first line is the passphrase; a key file
 * holds 32 raw bytes or 64 hex digits (optionally newline-terminated). */
int	vault_keysrc_from_file(const char *path, int is_keyfile,
	    struct vault_keysrc *out, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
/* Read a passphrase from the terminal without echo. */
int	vault_keysrc_from_tty(const char *prompt, int confirm,
	    struct vault_keysrc *out, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
void	vault_keysrc_wipe(struct vault_keysrc *src);

/* Create an empty vault; refuses to overwrite an existing file. Mode 0600. */
int	vault_create(const char *path, const struct vault_keysrc *src,
	    enum vault_kdf kdf, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * Open and decrypt. With for_update, an exclusive lock ("path.lock") is held
 * from before the file is read until vault_close(), so that concurrent writers
 * serialize and never lose an update. The expensive key derivation happens
 * before the lock is taken. Without for_update (the daemon) no lock is held;
 * such a handle writes only between vault_begin_update() and
 * vault_end_update().
 */
int	vault_open(const char *path, const struct vault_keysrc *src, int for_update,
	    struct vault **out, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * Write atomically (temp, fsync, rename, fsync dir). Needs the lock: a handle
 * opened for_update, or one inside vault_begin_update(). May be called more
 * than once.
 */
int	vault_save(struct vault *v, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/* Wipe everything and release the lock. NULL is fine. */
void	vault_close(struct vault *v);

/* Has the file on disk changed since v was read (inode, size, mtime)? */
int	vault_changed_on_disk(const struct vault *v);

/*
 * Re-read the file with the key already derived (no passphrase needed). Used
 * by the daemon to pick up CLI changes. Fails if the file was re-keyed, since
 * the new key needs the passphrase. On failure v is unchanged.
 */
int	vault_reload(struct vault *v, char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * Take the exclusive lock and re-read the file with the cached key, so
 * that changes made meanwhile by other writers are not lost. Then modify
 * v, vault_save(v), and vault_end_update(v). On failure v is unchanged and
 * no lock is held.
 *
 * For a handle opened read-only (the daemon's): waits at most
 * VAULT_UPDATE_LOCK_WAIT_MS for another writer (a CLI command may hold the
 * lock while it prompts), then fails with "is busy"; fails if the file was
 * re-keyed since v was read, as vault_reload() does, and v stays usable with
 * what it held; fails if an update is already in progress on v (which keeps
 * that update and its lock). Changes made to v before the call are replaced
 * by what the file holds. For a handle opened for_update, which holds the
 * lock already and so cannot have missed a change, both calls do nothing.
 * A child forked during an update shares the lock (it belongs to the open
 * file description) until the child exits or execs.
 */
int	vault_begin_update(struct vault *v, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
/*
 * Releases the lock; safe if not held. Changes made since begin that were
 * not saved (no vault_save(), or a failed one) are dropped first, so that v
 * again holds what the file holds.
 */
void	vault_end_update(struct vault *v);

enum vault_kdf	vault_kdf(const struct vault *v);
const char	*vault_path(const struct vault *v);

/* Accounts. */
size_t	vault_account_count(const struct vault *v);
const struct vault_account *vault_account_at(const struct vault *v, size_t i);
/* Find by address or alias, case-insensitively. */
const struct vault_account *vault_account_find(const struct vault *v, const char *addr);
/* The current credential, or NULL if the account has none. */
const struct vault_credential *vault_account_current(const struct vault_account *a);

/* tmpl gives address, aliases, limits and upstream override; the rest is set here. */
int	vault_account_add(struct vault *v, const struct vault_account *tmpl,
	    const unsigned char *secret, size_t len, time_t now, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
/* New version, made current; older versions beyond VAULT_MAX_VERSIONS dropped. */
int	vault_account_rotate(struct vault *v, const char *addr,
	    const unsigned char *secret, size_t len, time_t now,
	    uint32_t *new_version, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
/* Make the version before the current one current again. */
int	vault_account_rollback(struct vault *v, const char *addr, time_t now,
	    uint32_t *now_current, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
int	vault_account_remove(struct vault *v, const char *addr, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
int	vault_account_set_status(struct vault *v, const char *addr, enum vault_status st,
	    char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/* Admin users, passwords stored as Argon2id hashes (crypto_pwhash_str). */
size_t	vault_admin_count(const struct vault *v);
const struct vault_admin *vault_admin_at(const struct vault *v, size_t i);
int	vault_admin_add(struct vault *v, const char *name, const unsigned char *pw,
	    size_t len, time_t now, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
int	vault_admin_remove(struct vault *v, const char *name, char *err, size_t errlen)
	    __attribute__((warn_unused_result));
/* 0 when name exists and pw matches; -1 otherwise (same cost either way). */
int	vault_admin_verify(const struct vault *v, const char *name,
	    const unsigned char *pw, size_t len)
	    __attribute__((warn_unused_result));

/*
 * Re-encrypt under a new key source (new salt); takes effect at vault_save().
 * Needs a handle opened for_update. The audit key does not change.
 */
int	vault_rekey(struct vault *v, const struct vault_keysrc *src, enum vault_kdf kdf,
	    char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/*
 * The key of the audit log's hash chain: a subkey of a key kept inside the
 * vault, so audit entries stay verifiable across rekey; nobody without the
 * vault key can compute it. Each vault has its own (made by vault_create).
 */
int	vault_derive_audit_key(const struct vault *v, unsigned char out[VAULT_KEY_BYTES])
	    __attribute__((warn_unused_result));

/* Guarded-memory secrets. */
int	vault_secret_set(struct vault_secret *s, const unsigned char *buf, size_t len)
	    __attribute__((warn_unused_result));
void	vault_secret_wipe(struct vault_secret *s);

/* Remove spaces from an App Password in place ("abcd efgh ijkl mnop"). */
size_t	vault_normalize_app_password(unsigned char *buf, size_t len);

/* Disable core dumps and ptrace attach for this process (PR_SET_DUMPABLE). */
void	vault_harden_process(void);

#endif
