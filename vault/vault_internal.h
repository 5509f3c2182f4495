/*
 * vault_internal.h: what the files of the vault module share with each other
 * and with the vault's unit tests and fuzzers. Not an API: every other module
 * reaches the vault only through vault.h.
 *
 * The file format (all integers little-endian):
 *
 *	offset	size	field
 *	0	8	magic "SMTPVLT\0"
 *	8	2	format version (VAULT_FORMAT_VERSION)
 *	10	1	KDF id (enum vault_kdf)
 *	11	8	Argon2id opslimit (0 for a key file)
 *	19	8	Argon2id memlimit in bytes (0 for a key file)
 *	27	16	salt
 *	43	24	XChaCha20-Poly1305 nonce
 *	67	...	sealed payload (plaintext + 16-byte tag)
 *
 * The whole header is the associated data, so any change to it makes the
 * payload fail to decrypt. The payload layout is described in
 * vault_payload.c.
 */
#ifndef SMTPVAULT_VAULT_INTERNAL_H
#define SMTPVAULT_VAULT_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <sodium.h>

#include "vault.h"

#define VAULT_MAGIC		"SMTPVLT"	/* with its NUL: 8 bytes */
#define VAULT_MAGIC_LEN		8
#define VAULT_FORMAT_VERSION	1
#define VAULT_SALT_BYTES	crypto_pwhash_SALTBYTES
#define VAULT_NONCE_BYTES	crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define VAULT_TAG_BYTES		crypto_aead_xchacha20poly1305_ietf_ABYTES
#define VAULT_HEADER_LEN	(VAULT_MAGIC_LEN + 2 + 1 + 8 + 8 + VAULT_SALT_BYTES + \
				    VAULT_NONCE_BYTES)

/*
 * Bounds on the KDF parameters read from a header. libsodium's own maxima
 * would let a damaged header ask for 2^32 passes, which is a hang rather
 * than an error; SENSITIVE (4 passes, 1 GiB) is the most we ever write.
 */
#define VAULT_OPSLIMIT_MAX	16
#define VAULT_MEMLIMIT_MAX	(1024ull * 1024 * 1024)

#define VAULT_PASSPHRASE_MAX	1024	/* bytes of passphrase accepted */
/* Highest enum upstream_tls value (proxy/config.h); -1 means "[upstream] tls". */
#define VAULT_UPSTREAM_TLS_MAX	1
/* 2: the audit root key follows the generation. Version 1 never shipped. */
#define VAULT_PAYLOAD_VERSION	2

/*
 * crypto_kdf_derive_from_key subkeys. The payload key is a subkey of the
 * master key; the audit key is a subkey of the audit root key, a random key
 * kept inside the payload, so that it survives a rekey.
 */
#define VAULT_KDF_CONTEXT	"smtpvalt"	/* crypto_kdf_CONTEXTBYTES long */
#define VAULT_SUBKEY_PAYLOAD	1	/* of the master key */
#define VAULT_SUBKEY_AUDIT	2	/* of the audit root key */
#define VAULT_AUDIT_ROOT_BYTES	crypto_kdf_KEYBYTES

/* The parsed header; the nonce matters only for the copy being read. */
struct vault_header {
	uint16_t	version;
	uint8_t		kdf;
	uint64_t	opslimit;
	uint64_t	memlimit;
	unsigned char	salt[VAULT_SALT_BYTES];
	unsigned char	nonce[VAULT_NONCE_BYTES];
};

/* Everything the payload holds; replaced as a whole by a reload. */
struct vault_data {
	uint64_t		generation;	/* bumped by every save */
	unsigned char		*audit_root;	/* sodium_malloc, kept noaccess */
	struct vault_account	*accounts;
	size_t			n_accounts;
	size_t			cap_accounts;
	struct vault_admin	*admins;	/* VAULT_MAX_ADMINS entries */
	size_t			n_admins;
};

/* What vault_changed_on_disk() compares. */
struct vault_fileid {
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec	mtim;
	struct timespec	ctim;
};

struct vault {
	char			path[PATH_MAX];
	int			lock_fd;	/* -1 unless the lock is held */
	int			for_update;	/* lock held from open to close */
	int			dirty;		/* changed since last read or saved */
	struct vault_header	hdr;		/* KDF and salt of master */
	unsigned char		*master;	/* sodium_malloc, kept noaccess */
	struct vault_data	d;
	struct vault_fileid	fileid;
};

/* vault_payload.c */
/*
 * The data of a new, empty vault: no accounts, no admin users, and a fresh
 * random audit root key. On failure nothing is left allocated.
 */
int	vault_data_init(struct vault_data *d);
void	vault_data_free(struct vault_data *d);
int	vault_data_reserve(struct vault_data *d, size_t n_accounts);
/*
 * Serialise d with the given generation. With buf NULL only *outlen is set,
 * so that the caller can size a guarded buffer first.
 */
int	vault_payload_encode(const struct vault_data *d, uint64_t generation,
	    uint8_t *buf, size_t cap, size_t *outlen)
	    __attribute__((warn_unused_result));
/*
 * Parse and validate a decrypted payload. Safe on arbitrary bytes: on failure
 * returns -1 with a reason in err and leaves nothing allocated; on success
 * the caller owns *out and releases it with vault_data_free().
 */
int	vault_payload_parse(const uint8_t *buf, size_t len, struct vault_data *out,
	    char *err, size_t errlen)
	    __attribute__((warn_unused_result));

/* vault_account.c */
int	vault_address_valid(const char *s);
int	vault_host_valid(const char *s);
void	vault_account_wipe(struct vault_account *a);

/* vault_admin.c */
int	vault_admin_name_valid(const char *s);
int	vault_admin_hash_valid(const char *s);

/* vault.c */
uint64_t vault_generation(const struct vault *v);

#endif
