/*
 * fuzz_util.h: small helpers shared by the libFuzzer harnesses in
 * tests/fuzz/. A harness states its properties with FUZZ_CHECK(); a broken
 * property prints what was expected and aborts, which libFuzzer reports as a
 * crash and saves the input for. Each harness copies its input into a
 * buffer of exactly the size the code under test may read, so that
 * AddressSanitizer catches a read one byte past it.
 */
#ifndef SMTPVAULT_FUZZ_UTIL_H
#define SMTPVAULT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...) do {					\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: property broken: %s: ",		\
		    __FILE__, __LINE__, #cond);				\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	}								\
} while (0)

/* A deterministic generator, seeded from the input, for split points. */
struct fuzz_rng {
	uint64_t	s;
};

static inline uint64_t
fuzz_rng_next(struct fuzz_rng *r)
{
	/* splitmix64 */
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Take n bytes (fewer at the end) off the front of the input. */
static inline uint64_t
fuzz_take(const uint8_t **data, size_t *size, size_t n)
{
	uint64_t x = 0;
	size_t i;

	for (i = 0; i < n && *size > 0; i++) {
		x |= (uint64_t)(*data)[0] << (8 * i);
		(*data)++;
		(*size)--;
	}
	return x;
}

/* A malloc'd copy of exactly len bytes (plus a NUL when nul is set). */
static inline char *
fuzz_dup(const uint8_t *data, size_t len, int nul)
{
	char *p = malloc(len + (nul ? 1 : 0) + (len == 0 && !nul ? 1 : 0));

	if (p == NULL)
		abort();
	if (len > 0)
		memcpy(p, data, len);
	if (nul)
		p[len] = '\0';
	return p;
}

/* Does buf hold a CR not followed by LF, or an LF not preceded by CR? */
static inline int
fuzz_has_bare_cr_lf(const unsigned char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (buf[i] == '\r' && (i + 1 >= len || buf[i + 1] != '\n'))
			return 1;
		if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
			return 1;
	}
	return 0;
}

#endif
