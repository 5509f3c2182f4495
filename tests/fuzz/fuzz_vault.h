/*
 * fuzz_vault.h: what the vault harness and the seed generator share: the
 * fixed key file of the fuzzing vaults and a sealer that builds a key-file
 * vault image around any payload, with the header layout documented in
 * vault/vault_internal.h (so that a fuzzed payload reaches the parser
 * through vault_open(), past the AEAD check).
 */
#ifndef SMTPVAULT_FUZZ_VAULT_H
#define SMTPVAULT_FUZZ_VAULT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "vault_internal.h"

/* The key of every fuzzing vault: bytes 0x00..0x1f. Not a secret. */
static inline void
fuzz_vault_key(unsigned char key[VAULT_KEY_BYTES])
{
	size_t i;

	for (i = 0; i < VAULT_KEY_BYTES; i++)
		key[i] = (unsigned char)i;
}

/*
 * A key-file vault image (header + sealed payload) of payload, with the
 * given salt and nonce, into a malloc'd buffer. Returns NULL on failure.
 */
static inline uint8_t *
fuzz_vault_seal(const uint8_t *payload, size_t plen,
    const unsigned char salt[VAULT_SALT_BYTES],
    const unsigned char nonce[VAULT_NONCE_BYTES], size_t *outlen)
{
	unsigned char master[VAULT_KEY_BYTES], key[VAULT_KEY_BYTES];
	unsigned long long clen;
	uint8_t *file, *p;
	size_t flen = VAULT_HEADER_LEN + plen + VAULT_TAG_BYTES;

	if ((file = malloc(flen)) == NULL)
		return NULL;
	p = file;
	memcpy(p, VAULT_MAGIC, VAULT_MAGIC_LEN);	/* with its NUL */
	p += VAULT_MAGIC_LEN;
	*p++ = VAULT_FORMAT_VERSION & 0xff;
	*p++ = (VAULT_FORMAT_VERSION >> 8) & 0xff;
	*p++ = VAULT_KDF_KEYFILE;
	memset(p, 0, 16);				/* opslimit, memlimit */
	p += 16;
	memcpy(p, salt, VAULT_SALT_BYTES);
	p += VAULT_SALT_BYTES;
	memcpy(p, nonce, VAULT_NONCE_BYTES);

	fuzz_vault_key(master);
	if (crypto_kdf_derive_from_key(key, sizeof(key), VAULT_SUBKEY_PAYLOAD,
	    VAULT_KDF_CONTEXT, master) != 0 ||
	    crypto_aead_xchacha20poly1305_ietf_encrypt(file + VAULT_HEADER_LEN, &clen,
	    payload, plen, file, VAULT_HEADER_LEN, NULL, nonce, key) != 0 ||
	    clen != plen + VAULT_TAG_BYTES) {
		free(file);
		return NULL;
	}
	sodium_memzero(key, sizeof(key));
	*outlen = flen;
	return file;
}

#endif
