/*
 * fuzz_smtp_reply.c: libFuzzer harness for the upstream reply parser
 * (proxy/smtp_reply.h): multiline replies, pipelined replies, garbage.
 *
 * Input: 8 bytes seed the split points, 1 byte picks an EHLO keyword to look
 * up, the rest is what a hostile upstream sends. The harness drives the
 * parser the way the upstream client does: bytes arrive in pieces, the
 * caller keeps what was not consumed, and a finished reply starts the next.
 * Properties:
 *  - the sequence of replies (code, enhanced code, text, line count) and the
 *    final verdict are the same whether the bytes come at once or in pieces;
 *  - a finished reply has a code 200..559, the same on every line, at most
 *    SMTP_REPLY_LINES_MAX lines, a NUL-terminated text of textlen octets
 *    below SMTP_REPLY_TEXT_MAX without control characters (only TAB and
 *    the '\n' between lines), and an enhanced code of the reply's class;
 *  - the parser never consumes more than it was given, and a caller that
 *    keeps the rest never holds more than one line and its CR LF;
 *  - smtp_reply_ehlo_has() returns parameters inside the reply's text.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_reply.h"

#include "fuzz_util.h"

#define MAX_REPLIES	64	/* compared per input; more are parsed, not kept */

struct outcome {
	int		n;
	int		codes[MAX_REPLIES];
	size_t		lines[MAX_REPLIES];
	uint64_t	hashes[MAX_REPLIES];	/* of enhanced code and text */
	int		error;			/* refused at the end */
	size_t		total_replies;
};

static uint64_t
hash_bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

static void
check_reply(const struct smtp_reply *r, uint8_t kwpick)
{
	static const char *const kws[] = { "AUTH", "STARTTLS", "SIZE", "PIPELINING",
		"8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "X" };
	const char *params = NULL;
	size_t i, plen = 0, elen;

	FUZZ_CHECK(r->done && r->error == NULL, "finished reply not marked done");
	FUZZ_CHECK(r->code >= 200 && r->code <= 559, "code %d", r->code);
	FUZZ_CHECK(r->n_lines >= 1 && r->n_lines <= SMTP_REPLY_LINES_MAX, "%zu lines",
	    r->n_lines);
	FUZZ_CHECK(r->textlen < SMTP_REPLY_TEXT_MAX, "textlen %zu", r->textlen);
	FUZZ_CHECK(r->text[r->textlen] == '\0' && strlen(r->text) == r->textlen,
	    "text not NUL-terminated at textlen");
	for (i = 0; i < r->textlen; i++) {
		unsigned char c = (unsigned char)r->text[i];

		FUZZ_CHECK(c >= 0x20 ? c != 0x7f : (c == '\t' || c == '\n'),
		    "control octet 0x%02x in reply text", c);
	}
	elen = strnlen(r->enhanced, sizeof(r->enhanced));
	FUZZ_CHECK(elen < sizeof(r->enhanced), "enhanced code not terminated");
	if (elen > 0)
		FUZZ_CHECK(r->enhanced[0] == '0' + r->code / 100 && r->enhanced[1] == '.',
		    "enhanced code %s in a %d reply", r->enhanced, r->code);
	if (smtp_reply_ehlo_has(r, kws[kwpick % 8], &params, &plen)) {
		FUZZ_CHECK(r->code == 250, "EHLO keyword found in a %d reply", r->code);
		FUZZ_CHECK(params >= r->text && params + plen <= r->text + r->textlen,
		    "EHLO parameters outside the text");
	}
}

static void
record(struct outcome *o, const struct smtp_reply *r, uint8_t kwpick)
{
	check_reply(r, kwpick);
	if (o->n < MAX_REPLIES) {
		o->codes[o->n] = r->code;
		o->lines[o->n] = r->n_lines;
		o->hashes[o->n] = hash_bytes(hash_bytes(0xcbf29ce484222325ull,
		    r->enhanced, strlen(r->enhanced)), r->text, r->textlen);
		o->n++;
	}
	o->total_replies++;
}

/*
 * Deliver in[0..len) in pieces (one piece when rng is NULL) to a caller that
 * keeps unconsumed bytes, as smtp_client.c does with its input buffer.
 */
static void
drive(const uint8_t *in, size_t len, struct fuzz_rng *rng, uint8_t kwpick,
    struct outcome *o)
{
	struct smtp_reply r;
	char *buf = malloc(len + 1);
	size_t have = 0, off = 0, used;
	int rc;

	if (buf == NULL)
		abort();
	memset(o, 0, sizeof(*o));
	smtp_reply_init(&r);
	while (off < len && !o->error) {
		size_t n = len - off;

		if (rng != NULL) {
			uint64_t x = fuzz_rng_next(rng);

			n = 1 + (size_t)((x & 7) == 0 ? x % (len - off) : x % 8);
			if (n > len - off)
				n = len - off;
		}
		memcpy(buf + have, in + off, n);
		have += n;
		off += n;
		for (;;) {
			/* An exact-size copy, so that an over-read is caught. */
			char *view = fuzz_dup((const uint8_t *)buf, have, 0);

			rc = smtp_reply_parse(&r, view, have, &used);
			free(view);
			FUZZ_CHECK(used <= have, "consumed %zu of %zu", used, have);
			memmove(buf, buf + used, have - used);
			have -= used;
			if (rc == SMTP_REPLY_ERROR) {
				FUZZ_CHECK(r.error != NULL && r.error[0] != '\0',
				    "refused without a reason");
				o->error = 1;
				break;
			}
			if (rc == SMTP_REPLY_DONE) {
				record(o, &r, kwpick);
				smtp_reply_init(&r);
				continue;
			}
			FUZZ_CHECK(rc == SMTP_REPLY_MORE, "rc %d", rc);
			FUZZ_CHECK(memchr(buf, '\n', have) == NULL,
			    "MORE with a complete line left over");
			FUZZ_CHECK(have <= SMTP_REPLY_LINE_MAX + 1,
			    "caller left holding %zu octets of one line", have);
			break;
		}
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct outcome whole, split;
	struct fuzz_rng rng;
	uint8_t kwpick;
	int i;

	rng.s = fuzz_take(&data, &size, 8);
	kwpick = (uint8_t)fuzz_take(&data, &size, 1);

	drive(data, size, NULL, kwpick, &whole);
	drive(data, size, &rng, kwpick, &split);
	FUZZ_CHECK(whole.error == split.error, "verdict differs: at once %d, in "
	    "pieces %d", whole.error, split.error);
	FUZZ_CHECK(whole.total_replies == split.total_replies,
	    "%zu replies at once, %zu in pieces", whole.total_replies,
	    split.total_replies);
	for (i = 0; i < whole.n; i++)
		FUZZ_CHECK(whole.codes[i] == split.codes[i] &&
		    whole.lines[i] == split.lines[i] &&
		    whole.hashes[i] == split.hashes[i], "reply %d differs", i);
	return 0;
}
