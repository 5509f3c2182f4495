/*
 * fuzz_vault_payload.c: libFuzzer harness for the decrypted vault payload
 * parser (vault_payload_parse() of vault/vault_internal.h), which must be
 * safe on arbitrary bytes.
 *
 * Input: the payload bytes, copied to a buffer of exactly their length.
 * Properties:
 *  - a refusal says why and leaves nothing behind;
 *  - an accepted payload respects every bound of vault.h (accounts, aliases,
 *    credential versions in ascending order with the current one among
 *    them, admin users), holds NUL-terminated strings, and
 *  - serialises back to exactly the same bytes (vault_payload_encode() of
 *    what was parsed is the input): nothing is lost, added or reinterpreted.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vault_internal.h"

#include "fuzz_util.h"

#define TERMINATED(field)	(memchr((field), '\0', sizeof(field)) != NULL)

static void
check_data(const struct vault_data *d)
{
	size_t i, j;

	FUZZ_CHECK(d->audit_root != NULL, "no audit root key");
	FUZZ_CHECK(d->n_accounts <= VAULT_MAX_ACCOUNTS, "%zu accounts", d->n_accounts);
	FUZZ_CHECK(d->n_admins <= VAULT_MAX_ADMINS, "%zu admins", d->n_admins);
	for (i = 0; i < d->n_accounts; i++) {
		const struct vault_account *a = &d->accounts[i];
		int found = a->n_creds == 0 && a->current == 0;

		FUZZ_CHECK(TERMINATED(a->address) && a->address[0] != '\0', "address");
		FUZZ_CHECK(a->n_aliases <= VAULT_MAX_ALIASES, "%zu aliases", a->n_aliases);
		for (j = 0; j < a->n_aliases; j++)
			FUZZ_CHECK(TERMINATED(a->aliases[j]) && a->aliases[j][0] != '\0',
			    "alias");
		FUZZ_CHECK(TERMINATED(a->upstream_host), "upstream host");
		FUZZ_CHECK(a->upstream_tls >= -1 && a->upstream_tls <= VAULT_UPSTREAM_TLS_MAX,
		    "upstream tls %d", a->upstream_tls);
		FUZZ_CHECK(a->status <= VAULT_STATUS_AUTH_FAILED, "status %u",
		    (unsigned)a->status);
		FUZZ_CHECK(a->n_creds <= VAULT_MAX_VERSIONS, "%zu credentials", a->n_creds);
		for (j = 0; j < a->n_creds; j++) {
			const struct vault_credential *c = &a->creds[j];

			FUZZ_CHECK(c->version > 0, "credential version 0");
			FUZZ_CHECK(j == 0 || c->version > a->creds[j - 1].version,
			    "credential versions not ascending");
			FUZZ_CHECK(c->secret.buf != NULL && c->secret.len >= 1 &&
			    c->secret.len <= VAULT_SECRET_MAX, "secret of %zu", c->secret.len);
			if (c->version == a->current)
				found = 1;
		}
		FUZZ_CHECK(found, "current version %u not stored", (unsigned)a->current);
	}
	for (i = 0; i < d->n_admins; i++)
		FUZZ_CHECK(TERMINATED(d->admins[i].name) && TERMINATED(d->admins[i].hash),
		    "admin strings");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vault_data d;
	char err[512];
	uint8_t *in = (uint8_t *)fuzz_dup(data, size, 0), *out;
	size_t n = 0, n2 = 0;

	err[0] = '\0';
	memset(&d, 0xa5, sizeof(d));	/* the parser must not rely on a clean out */
	if (vault_payload_parse(in, size, &d, err, sizeof(err)) != 0) {
		FUZZ_CHECK(err[0] != '\0', "refused without a reason");
		FUZZ_CHECK(strchr(err, '\n') == NULL, "reason of more than one line");
		free(in);
		return 0;
	}
	check_data(&d);
	FUZZ_CHECK(vault_payload_encode(&d, d.generation, NULL, 0, &n) == 0,
	    "cannot size what was parsed");
	if ((out = malloc(n > 0 ? n : 1)) == NULL)
		abort();
	FUZZ_CHECK(vault_payload_encode(&d, d.generation, out, n, &n2) == 0 && n2 == n,
	    "cannot encode what was parsed");
	FUZZ_CHECK(n == size && memcmp(out, in, size) == 0,
	    "parse + encode changed the payload (%zu -> %zu octets)", size, n);
	free(out);
	vault_data_free(&d);
	free(in);
	return 0;
}
