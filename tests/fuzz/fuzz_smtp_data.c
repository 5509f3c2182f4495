/*
 * fuzz_smtp_data.c: libFuzzer harness for the DATA-phase state machine
 * (proxy/smtp_data.h) and, on what it stores, the audit log's header lookup
 * (proxy/msg_header.h).
 *
 * Input: 2 bytes choose max_size, 8 bytes seed the split points, the rest is
 * what a client sends after "354". Properties checked on every input:
 *  - end of data: the machine is done exactly when "\r\n" + input contains
 *    CR LF . CR LF, and it consumed the input up to the first one, not one
 *    byte more or less (no smuggling variant ends a message early, and the
 *    real end is never missed);
 *  - the stored message never holds a bare CR or LF, nor a NUL; without an
 *    error its lines fit in 998 octets, it ends with CR LF (or is empty), and
 *    its size is what the machine counted and at most max_size;
 *  - feeding the same bytes in random pieces gives the same result;
 *  - dot-stuffing round-trips: stuffing the stored message again and feeding
 *    it with ".\r\n" gives the same stored message and the same verdict;
 *  - after the end of data the machine takes no more bytes;
 *  - no call writes past SMTP_DATA_OUT_MAX(inlen) octets of out (ASan);
 *  - msg_header_get() on the stored message returns bounded text without
 *    CR or LF.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg_header.h"
#include "smtp_data.h"

#include "fuzz_util.h"

struct run {
	unsigned char	*out;
	size_t		outlen;
	size_t		consumed;
	int		done;
	enum smtp_data_error error;
	uint64_t	size;
	int		body_8bit;
};

/* One call to smtp_data_feed with an output buffer of exactly the promised room. */
static size_t
feed_piece(struct smtp_data *d, const uint8_t *in, size_t n, struct run *r)
{
	size_t room = SMTP_DATA_OUT_MAX(n), got = 0, used;
	unsigned char *out = malloc(room);

	if (out == NULL)
		abort();
	used = smtp_data_feed(d, in, n, out, &got);
	FUZZ_CHECK(used <= n, "consumed %zu of %zu", used, n);
	FUZZ_CHECK(got <= room, "wrote %zu, room %zu", got, room);
	memcpy(r->out + r->outlen, out, got);
	r->outlen += got;
	r->consumed += used;
	free(out);
	return used;
}

/* Feed in, in pieces whose lengths come from rng (NULL: in one piece). */
static void
run_machine(const uint8_t *in, size_t len, uint64_t max_size, struct fuzz_rng *rng,
    struct run *r)
{
	struct smtp_data d;
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	if ((r->out = malloc(SMTP_DATA_OUT_MAX(len))) == NULL)
		abort();
	smtp_data_init(&d, max_size);
	while (off < len && !smtp_data_done(&d)) {
		size_t n = len - off, used;

		if (rng != NULL) {
			uint64_t x = fuzz_rng_next(rng);

			/* Mostly tiny pieces, where the state crosses calls. */
			n = (size_t)((x & 3) == 0 ? x % (len - off + 1) : x % 4);
			if (n > len - off)
				n = len - off;
		}
		used = feed_piece(&d, in + off, n, r);
		off += used;
		if (used < n) {
			FUZZ_CHECK(smtp_data_done(&d), "stopped early without the end of data");
			break;
		}
	}
	if (smtp_data_done(&d) && off < len) {
		/* Nothing after the end of data belongs to the message. */
		size_t before = r->outlen, used = feed_piece(&d, in + off, len - off, r);

		FUZZ_CHECK(used == 0, "took %zu bytes after the end of data", used);
		FUZZ_CHECK(r->outlen == before, "wrote after the end of data");
		r->consumed -= used;
	}
	r->done = smtp_data_done(&d);
	r->error = smtp_data_error(&d);
	r->size = d.size;
	r->body_8bit = d.body_8bit;
}

/* Where the first CR LF . CR LF of "\r\n" + in ends, in input octets, or 0. */
static size_t
oracle_end(const uint8_t *in, size_t len)
{
	static const unsigned char eod[] = "\r\n.\r\n";
	unsigned char *probe = malloc(len + 2);
	size_t i, end = 0;

	if (probe == NULL)
		abort();
	probe[0] = '\r';
	probe[1] = '\n';
	memcpy(probe + 2, in, len);
	for (i = 0; i + 5 <= len + 2; i++) {
		if (memcmp(probe + i, eod, 5) == 0) {
			end = i + 5 - 2;
			break;
		}
	}
	free(probe);
	return end;
}

static void
check_stored(const struct run *r, uint64_t max_size)
{
	size_t i, line = 0;

	/* Even after an error: a line end is always written whole. */
	FUZZ_CHECK(!fuzz_has_bare_cr_lf(r->out, r->outlen),
	    "bare CR or LF in the stored message");
	FUZZ_CHECK(memchr(r->out, '\0', r->outlen) == NULL, "NUL stored");
	FUZZ_CHECK(r->size == r->outlen, "size %llu, stored %zu",
	    (unsigned long long)r->size, r->outlen);
	FUZZ_CHECK(r->outlen <= max_size, "stored %zu > max_size %llu", r->outlen,
	    (unsigned long long)max_size);
	if (r->error != SMTP_DATA_OK)
		return;
	for (i = 0; i < r->outlen; i++) {
		if (r->out[i] == '\r') {
			FUZZ_CHECK(line <= SMTP_DATA_LINE_MAX - 2, "stored line of %zu", line);
			line = 0;
			i++;
		} else {
			line++;
		}
	}
	FUZZ_CHECK(line <= SMTP_DATA_LINE_MAX - 2, "stored line of %zu", line);
	if (r->done)
		FUZZ_CHECK(r->outlen == 0 || (r->outlen >= 2 &&
		    r->out[r->outlen - 2] == '\r' && r->out[r->outlen - 1] == '\n'),
		    "a finished message does not end with CR LF");
}

/* The stored message as a client would send it again, with the final dot. */
static unsigned char *
restuff(const unsigned char *msg, size_t len, size_t *outlen)
{
	unsigned char *p = malloc(2 * len + 3);
	size_t i, o = 0;
	int bol = 1;

	if (p == NULL)
		abort();
	for (i = 0; i < len; i++) {
		if (bol && msg[i] == '.')
			p[o++] = '.';
		p[o++] = msg[i];
		bol = msg[i] == '\n';
	}
	memcpy(p + o, ".\r\n", 3);
	*outlen = o + 3;
	return p;
}

static void
check_headers(const unsigned char *msg, size_t len, uint8_t pick)
{
	static const char *const names[] = { "Subject", "From", "Message-ID", "Received" };
	static const size_t sizes[] = { 1, 2, 8, 80, 1024 };
	size_t outlen = sizes[pick % 5];
	char *out = malloc(outlen);

	if (out == NULL)
		abort();
	if (msg_header_get((const char *)msg, len, names[(pick >> 3) % 4], out,
	    outlen) == 0) {
		size_t n = strnlen(out, outlen);

		FUZZ_CHECK(n < outlen, "header value not terminated");
		FUZZ_CHECK(memchr(out, '\r', n) == NULL && memchr(out, '\n', n) == NULL,
		    "header value holds a line end");
		FUZZ_CHECK(n == 0 || (out[0] != ' ' && out[0] != '\t' &&
		    out[n - 1] != ' ' && out[n - 1] != '\t'),
		    "header value not trimmed");
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, split, again;
	struct fuzz_rng rng;
	uint64_t sel, max_size;
	uint8_t *in;
	size_t end, len;

	sel = fuzz_take(&data, &size, 2);
	rng.s = fuzz_take(&data, &size, 8);
	/* Small limits make the size checks reachable; 0xffff: no real limit. */
	max_size = sel == 0xffff ? UINT64_MAX : (sel & 0x7fff) * 8;
	in = (uint8_t *)fuzz_dup(data, size, 0);
	len = size;

	run_machine(in, len, max_size, NULL, &whole);
	end = oracle_end(in, len);
	if (end > 0) {
		FUZZ_CHECK(whole.done, "CR LF . CR LF at %zu not seen", end);
		FUZZ_CHECK(whole.consumed == end, "ended at %zu, real end at %zu",
		    whole.consumed, end);
	} else {
		FUZZ_CHECK(!whole.done, "ended at %zu without CR LF . CR LF",
		    whole.consumed);
		FUZZ_CHECK(whole.consumed == len, "consumed %zu of %zu", whole.consumed, len);
	}
	check_stored(&whole, max_size);

	run_machine(in, len, max_size, &rng, &split);
	FUZZ_CHECK(split.done == whole.done && split.consumed == whole.consumed &&
	    split.error == whole.error && split.outlen == whole.outlen &&
	    split.body_8bit == whole.body_8bit &&
	    memcmp(split.out, whole.out, whole.outlen) == 0,
	    "fed in pieces: done %d/%d consumed %zu/%zu error %d/%d stored %zu/%zu",
	    split.done, whole.done, split.consumed, whole.consumed, split.error,
	    whole.error, split.outlen, whole.outlen);

	if (whole.done && whole.error == SMTP_DATA_OK) {
		size_t rlen;
		unsigned char *re = restuff(whole.out, whole.outlen, &rlen);

		run_machine(re, rlen, max_size, NULL, &again);
		FUZZ_CHECK(again.done && again.consumed == rlen, "re-stuffed message "
		    "did not end at its final dot (done %d, %zu of %zu)", again.done,
		    again.consumed, rlen);
		FUZZ_CHECK(again.error == SMTP_DATA_OK, "re-stuffed message refused: %d",
		    again.error);
		FUZZ_CHECK(again.outlen == whole.outlen &&
		    memcmp(again.out, whole.out, whole.outlen) == 0,
		    "dot-stuffing does not round-trip (%zu vs %zu octets)", again.outlen,
		    whole.outlen);
		free(again.out);
		free(re);
	}

	check_headers(whole.out, whole.outlen, (uint8_t)rng.s);

	free(whole.out);
	free(split.out);
	free(in);
	return 0;
}
