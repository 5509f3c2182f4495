/*
 * test_smtp_data.c: the DATA-phase state machine (proxy/smtp_data.c). The
 * smuggling table is the heart of it: whatever a client sends, only the real
 * CR LF . CR LF ends the message, and the stored message has no bare CR or
 * LF. Every case is also fed split at every byte boundary and one octet at a
 * time, which must give the same result as one call.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

#define BIG	(64u * 1024 * 1024)
#define ARRAY_SIZE_T(a)	(sizeof(a) / sizeof((a)[0]))

struct run {
	unsigned char	*out;
	size_t		 outlen;
	size_t		 consumed;
	int		 done;
	enum smtp_data_error error;
	struct smtp_data d;
};

static void
run_free(struct run *r)
{
	free(r->out);
	r->out = NULL;
}

/*
 * Feed in to a fresh machine in pieces of at most chunk octets (0: one
 * call), stopping when the end of data is found, as a session does.
 */
static void
run_chunks(const void *in, size_t inlen, uint64_t max, size_t chunk, struct run *r)
{
	const unsigned char *p = in;
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	r->out = malloc(SMTP_DATA_OUT_MAX(inlen) + 1);
	assert_non_null(r->out);
	smtp_data_init(&r->d, max);
	while (off < inlen && !smtp_data_done(&r->d)) {
		size_t n = chunk == 0 ? inlen - off : chunk;
		size_t used, outlen = 0;

		if (n > inlen - off)
			n = inlen - off;
		used = smtp_data_feed(&r->d, p + off, n, r->out + r->outlen, &outlen);
		assert_true(used <= n);
		assert_true(outlen <= SMTP_DATA_OUT_MAX(n));
		if (used < n)
			assert_true(smtp_data_done(&r->d));
		off += used;
		r->outlen += outlen;
	}
	r->consumed = off;
	r->done = smtp_data_done(&r->d);
	r->error = smtp_data_error(&r->d);
}

static void
run_once(const void *in, size_t inlen, uint64_t max, struct run *r)
{
	run_chunks(in, inlen, max, 0, r);
}

/* Every CR is followed by LF and every LF follows a CR. */
static int
only_crlf(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return 0;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return 0;
	}
	return 1;
}

/* Feeding split at every boundary, and octet by octet, changes nothing. */
static void
assert_split_invariant(const void *in, size_t inlen, uint64_t max)
{
	const unsigned char *p = in;
	struct run whole, one, part;
	size_t cut;

	run_once(in, inlen, max, &whole);
	run_chunks(in, inlen, max, 1, &one);
	assert_int_equal(one.consumed, whole.consumed);
	assert_int_equal(one.done, whole.done);
	assert_int_equal(one.error, whole.error);
	assert_int_equal(one.outlen, whole.outlen);
	assert_memory_equal(one.out, whole.out, whole.outlen);
	run_free(&one);

	for (cut = 1; cut < inlen; cut++) {
		size_t used, outlen = 0, total = 0, used2 = 0;

		memset(&part, 0, sizeof(part));
		part.out = malloc(SMTP_DATA_OUT_MAX(inlen) + 1);
		assert_non_null(part.out);
		smtp_data_init(&part.d, max);
		used = smtp_data_feed(&part.d, p, cut, part.out, &outlen);
		total = outlen;
		if (!smtp_data_done(&part.d)) {
			outlen = 0;
			used2 = smtp_data_feed(&part.d, p + cut, inlen - cut,
			    part.out + total, &outlen);
			total += outlen;
		}
		assert_int_equal(used + used2, whole.consumed);
		assert_int_equal(smtp_data_done(&part.d), whole.done);
		assert_int_equal(smtp_data_error(&part.d), whole.error);
		assert_int_equal(total, whole.outlen);
		assert_memory_equal(part.out, whole.out, whole.outlen);
		run_free(&part);
	}
	run_free(&whole);
}

struct data_case {
	const char	*in;
	size_t		 inlen;
	const char	*out;		/* the stored message */
	size_t		 rest;		/* octets left unconsumed */
	int		 done;
	enum smtp_data_error error;
};

#define S(x)	x, sizeof(x) - 1

static void
test_data_basic(void **state)
{
	static const struct data_case cases[] = {
		/* the empty message, and the end right after the DATA line */
		{ S(".\r\n"), "", 0, 1, SMTP_DATA_OK },
		{ S("Subject: x\r\n\r\nhello\r\n.\r\n"),
		    "Subject: x\r\n\r\nhello\r\n", 0, 1, SMTP_DATA_OK },
		/* pipelined commands after the end stay unconsumed */
		{ S("a\r\n.\r\nQUIT\r\n"), "a\r\n", 6, 1, SMTP_DATA_OK },
		{ S("a\r\n.\r\n.\r\n"), "a\r\n", 3, 1, SMTP_DATA_OK },
		/* not finished yet */
		{ S("a\r\n."), "a\r\n", 0, 0, SMTP_DATA_OK },
		{ S("a\r\n.\r"), "a\r\n", 0, 0, SMTP_DATA_OK },
		{ S("a\r"), "a", 0, 0, SMTP_DATA_OK },
		/* dot-unstuffing */
		{ S("..foo\r\n...\r\n..\r\n.\r\n"), ".foo\r\n..\r\n.\r\n", 0, 1, SMTP_DATA_OK },
		{ S("x\r\n.a.b\r\n.\r\n"), "x\r\na.b\r\n", 0, 1, SMTP_DATA_OK },
		/* a dot not at line start is kept */
		{ S("a.b\r\n a\r\n.\r\n"), "a.b\r\n a\r\n", 0, 1, SMTP_DATA_OK },
		/* bare LF and bare CR are line ends, stored as CR LF */
		{ S("a\nb\rc\r\n.\r\n"), "a\r\nb\r\nc\r\n", 0, 1, SMTP_DATA_OK },
		{ S("a\r\r\nb\r\n.\r\n"), "a\r\n\r\nb\r\n", 0, 1, SMTP_DATA_OK },
		{ S("a\n\nb\r\n.\r\n"), "a\r\n\r\nb\r\n", 0, 1, SMTP_DATA_OK },
		{ S("\n\r\n.\r\n"), "\r\n\r\n", 0, 1, SMTP_DATA_OK },
		/* and the line after them is unstuffed as well */
		{ S("a\n..b\r..c\r\n.\r\n"), "a\r\n.b\r\n.c\r\n", 0, 1, SMTP_DATA_OK },
		/* a message ending without a final line end before the dot */
		{ S("a\r\n.\r\n"), "a\r\n", 0, 1, SMTP_DATA_OK },
		/* NUL is refused, the rest is still read up to the end (what
		 * was stored before the error is thrown away by the caller) */
		{ "a\0b\r\n.\r\nQUIT\r\n", 14, "", 6, 1, SMTP_DATA_NUL },
		{ "\0\r\n.\r\n", 6, "", 0, 1, SMTP_DATA_NUL },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE_T(cases); i++) {
		const struct data_case *c = &cases[i];
		struct run r;

		run_once(c->in, c->inlen, BIG, &r);
		if (r.consumed != c->inlen - c->rest || r.done != c->done ||
		    r.error != c->error || (c->error == SMTP_DATA_OK &&
		    (r.outlen != strlen(c->out) ||
		    memcmp(r.out, c->out, r.outlen) != 0)))
			fail_msg("case %zu: consumed %zu done %d error %d out %zu \"%.*s\"",
			    i, r.consumed, r.done, (int)r.error, r.outlen,
			    (int)r.outlen, (const char *)r.out);
		if (c->error == SMTP_DATA_OK)
			assert_true(only_crlf(r.out, r.outlen));
		run_free(&r);
		assert_split_invariant(c->in, c->inlen, BIG);
	}
}

/*
 * SMTP smuggling (2023): a line end other than CR LF around the dot must not
 * end the message, so the second transaction stays message content.
 */
static void
test_data_smuggling(void **state)
{
	static const struct {
		const char	*seq;
		size_t		 len;
		enum smtp_data_error error;
	} seqs[] = {
		{ S("\n.\n"), SMTP_DATA_OK },
		{ S("\r.\r"), SMTP_DATA_OK },
		{ S("\r.\n"), SMTP_DATA_OK },
		{ S("\n.\r"), SMTP_DATA_OK },
		{ S("\n.\r\n"), SMTP_DATA_OK },
		{ S("\r\n.\n"), SMTP_DATA_OK },
		{ S("\r.\r\n"), SMTP_DATA_OK },
		{ S("\r\n.\r"), SMTP_DATA_OK },
		{ S("\r\n\0.\r\n"), SMTP_DATA_NUL },
		{ S("\r\r\n.\r\r\n"), SMTP_DATA_OK },
		{ S("\r\n.\r\r\n"), SMTP_DATA_OK },
		{ S("\r\n\r.\r\n"), SMTP_DATA_OK },
		{ S("\r\n .\r\n"), SMTP_DATA_OK },
		{ S("\r\n.\n\r\n"), SMTP_DATA_OK },
		{ S("\n\n.\n\n"), SMTP_DATA_OK },
		{ S("\r\r.\r\r"), SMTP_DATA_OK },
	};
	static const char head[] = "From: a@example.com\r\nSubject: t\r\n\r\nbody";
	static const char tail[] = "MAIL FROM:<x@y>\r\nRCPT TO:<victim@example.org>\r\n"
	    "DATA\r\nFrom: ceo@example.com\r\n\r\nsmuggled\r\n.\r\n";
	static const char after[] = "QUIT\r\n";
	size_t i;

	for (i = 0; i < ARRAY_SIZE_T(seqs); i++) {
		size_t len = sizeof(head) - 1 + seqs[i].len + sizeof(tail) - 1 +
		    sizeof(after) - 1;
		char *in = malloc(len);
		struct run r;

		assert_non_null(in);
		memcpy(in, head, sizeof(head) - 1);
		memcpy(in + sizeof(head) - 1, seqs[i].seq, seqs[i].len);
		memcpy(in + sizeof(head) - 1 + seqs[i].len, tail, sizeof(tail) - 1);
		memcpy(in + len - (sizeof(after) - 1), after, sizeof(after) - 1);

		run_once(in, len, BIG, &r);
		if (!r.done || r.consumed != len - (sizeof(after) - 1))
			fail_msg("sequence %zu ended the message at %zu of %zu", i,
			    r.consumed, len);
		assert_int_equal(r.error, seqs[i].error);
		if (r.error == SMTP_DATA_OK) {
			assert_true(only_crlf(r.out, r.outlen));
			/* the would-be second transaction is plain content */
			assert_non_null(memmem(r.out, r.outlen,
			    "\r\nMAIL FROM:<x@y>\r\n", 19));
			assert_non_null(memmem(r.out, r.outlen, "\r\nsmuggled\r\n", 12));
		}
		run_free(&r);
		assert_split_invariant(in, len, BIG);
		free(in);
	}
}

/* Stuff a message as a client would, then unstuff it: the same message. */
static void
test_data_stuffing_round_trip(void **state)
{
	static const char *msgs[] = {
		"",
		".\r\n",
		"..\r\n",
		"...\r\n. \r\n.x\r\n",
		"Subject: dots\r\n\r\n.\r\n..\r\nend\r\n",
		"no dots at all\r\n",
		".leading\r\nmiddle.\r\n.\r\n.\r\n",
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE_T(msgs); i++) {
		const char *m = msgs[i];
		size_t n = strlen(m), j, o = 0;
		char *wire = malloc(2 * n + 8);
		int bol = 1;
		struct run r;

		assert_non_null(wire);
		for (j = 0; j < n; j++) {
			if (bol && m[j] == '.')
				wire[o++] = '.';
			wire[o++] = m[j];
			bol = m[j] == '\n';
		}
		memcpy(wire + o, ".\r\n", 3);
		o += 3;
		run_once(wire, o, BIG, &r);
		assert_true(r.done);
		assert_int_equal(r.consumed, o);
		assert_int_equal(r.error, SMTP_DATA_OK);
		assert_int_equal(r.outlen, n);
		assert_memory_equal(r.out, m, n);
		run_free(&r);
		free(wire);
	}
}

static char *
repeat(const char *unit, size_t times, const char *suffix, size_t *len)
{
	size_t ul = strlen(unit), sl = strlen(suffix), i;
	char *s = malloc(ul * times + sl + 1);

	assert_non_null(s);
	for (i = 0; i < times; i++)
		memcpy(s + i * ul, unit, ul);
	memcpy(s + ul * times, suffix, sl + 1);
	*len = ul * times + sl;
	return s;
}

static void
test_data_size(void **state)
{
	static const char msg[] = "0123456789\r\n.\r\nNOOP\r\n";	/* stores 12 */
	struct run r;

	run_once(msg, sizeof(msg) - 1, 12, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	assert_int_equal(r.outlen, 12);
	run_free(&r);

	run_once(msg, sizeof(msg) - 1, 11, &r);
	assert_int_equal(r.error, SMTP_DATA_TOO_BIG);
	assert_true(r.done);
	assert_int_equal(r.consumed, sizeof(msg) - 1 - 6);
	assert_true(r.outlen <= 11);
	run_free(&r);
	assert_split_invariant(msg, sizeof(msg) - 1, 11);

	/* bare LF grows to CR LF: the stored size counts */
	run_once(S("ab\n\r\n.\r\n"), 5, &r);
	assert_int_equal(r.error, SMTP_DATA_TOO_BIG);
	run_free(&r);
	run_once(S("ab\n\r\n.\r\n"), 6, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);

	run_once(S(".\r\n"), 0, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
}

static void
test_data_line_length(void **state)
{
	char *line, *in;
	size_t len;
	struct run r;

	/* 998 octets and CR LF: the longest line allowed */
	line = repeat("x", 998, "\r\n.\r\n", &len);
	run_once(line, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	assert_int_equal(r.outlen, 1000);
	run_free(&r);
	free(line);

	line = repeat("x", 999, "\r\n.\r\n", &len);
	run_once(line, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_LINE_TOO_LONG);
	assert_true(r.done);
	assert_int_equal(r.consumed, len);
	run_free(&r);
	free(line);

	/* the stuffed dot counts: it is on the wire */
	line = repeat("x", 997, "\r\n.\r\n", &len);
	in = malloc(len + 2);
	assert_non_null(in);
	in[0] = '.';
	memcpy(in + 1, line, len);
	run_once(in, len + 1, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
	in[0] = '.';
	in[1] = '.';
	memcpy(in + 2, line, len);
	run_once(in, len + 2, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_LINE_TOO_LONG);
	run_free(&r);
	free(in);
	free(line);

	/* many lines, each short: fine */
	line = repeat("0123456789\n", 2000, ".\r\n", &len);
	run_once(line, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	assert_true(only_crlf(r.out, r.outlen));
	run_free(&r);
	free(line);

	/* a megabyte without any line end: refused, still read to the end */
	line = repeat("y", 1024 * 1024, "\r\n.\r\n", &len);
	run_once(line, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_LINE_TOO_LONG);
	assert_true(r.done);
	assert_int_equal(r.consumed, len);
	run_free(&r);
	free(line);
}

static void
test_data_headers(void **state)
{
	char *in, *hdrs;
	size_t len, hlen;
	struct run r;

	/* SMTP_DATA_HEADER_LINES_MAX header lines pass, one more fails */
	hdrs = repeat("X-A: b\r\n", SMTP_DATA_HEADER_LINES_MAX, "\r\nbody\r\n.\r\n", &len);
	run_once(hdrs, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
	free(hdrs);
	hdrs = repeat("X-A: b\r\n", SMTP_DATA_HEADER_LINES_MAX + 1, "\r\nbody\r\n.\r\n", &len);
	run_once(hdrs, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_HEADER_TOO_BIG);
	assert_true(r.done);
	run_free(&r);
	free(hdrs);

	/* continuation lines count too */
	hdrs = repeat(" b\r\n", SMTP_DATA_HEADER_LINES_MAX + 1, "\r\n.\r\n", &len);
	in = malloc(len + 8);
	assert_non_null(in);
	memcpy(in, "X-A: a\r\n", 8);
	memcpy(in + 8, hdrs, len);
	run_once(in, len + 8, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_HEADER_TOO_BIG);
	run_free(&r);
	free(in);
	free(hdrs);

	/* the octet bound: long continuation lines */
	hlen = SMTP_DATA_HEADER_BYTES_MAX / 990 + 1;
	hdrs = repeat(" 0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789\r\n", hlen, "\r\n.\r\n", &len);
	in = malloc(len + 8);
	assert_non_null(in);
	memcpy(in, "X-A: a\r\n", 8);
	memcpy(in + 8, hdrs, len);
	run_once(in, len + 8, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_HEADER_TOO_BIG);
	run_free(&r);
	/* the same lines in the body are fine */
	memcpy(in, "X-A: a\r\n", 8);
	in[8] = '\r';
	in[9] = '\n';
	in[10] = 'b';
	run_once(in, len + 8, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
	free(in);
	free(hdrs);

	/* after a line that is not a field, the rest is body */
	hdrs = repeat("X-A: b\r\n", SMTP_DATA_HEADER_LINES_MAX + 1, "\r\n.\r\n", &len);
	in = malloc(len + 13);
	assert_non_null(in);
	memcpy(in, "not a field\r\n", 13);
	memcpy(in + 13, hdrs, len);
	run_once(in, len + 13, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
	free(in);
	free(hdrs);
}

static void
test_data_hops(void **state)
{
	char *in;
	size_t len;
	struct run r;

	in = repeat("Received: from x by y; date\r\n", SMTP_DATA_HOPS_MAX, "\r\n.\r\n", &len);
	run_once(in, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
	free(in);

	in = repeat("received : from x\r\n\tby y; date\r\n", SMTP_DATA_HOPS_MAX + 1,
	    "\r\n.\r\n", &len);
	run_once(in, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_TOO_MANY_HOPS);
	run_free(&r);
	free(in);

	/* look-alike fields do not count */
	in = repeat("Received-SPF: pass\r\nX-Received: x\r\nReceive: x\r\nReceivedX: y\r\n",
	    SMTP_DATA_HOPS_MAX, "\r\n.\r\n", &len);
	run_once(in, len, BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	run_free(&r);
	free(in);

	/* nor do Received lines in the body */
	in = repeat("Received: from x\r\n", SMTP_DATA_HOPS_MAX + 5, ".\r\n", &len);
	{
		char *m = malloc(len + 2);

		assert_non_null(m);
		memcpy(m, "\r\n", 2);
		memcpy(m + 2, in, len);
		run_once(m, len + 2, BIG, &r);
		assert_int_equal(r.error, SMTP_DATA_OK);
		run_free(&r);
		free(m);
	}
	free(in);
}

static void
test_data_8bit(void **state)
{
	struct run r;

	run_once(S("caf\xc3\xa9\r\n.\r\n"), BIG, &r);
	assert_int_equal(r.error, SMTP_DATA_OK);
	assert_true(r.d.body_8bit);
	run_free(&r);
	run_once(S("cafe\r\n.\r\n"), BIG, &r);
	assert_false(r.d.body_8bit);
	run_free(&r);
}

/* Deterministic random inputs in random pieces: the same result each way,
 * within the output bound, and never a bare CR or LF stored. */
static void
test_data_random(void **state)
{
	static const unsigned char alphabet[] = { '\r', '\n', '.', 'a', ' ', ':', '\0', 0xe9 };
	uint32_t seed = 12345;
	size_t iter;

	for (iter = 0; iter < 2000; iter++) {
		unsigned char in[64];
		size_t n, i, chunk;
		struct run a, b;

		seed = seed * 1103515245u + 12345u;
		n = (seed >> 16) % sizeof(in);
		for (i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alphabet[(seed >> 16) % sizeof(alphabet)];
		}
		seed = seed * 1103515245u + 12345u;
		chunk = 1 + (seed >> 16) % 7;
		run_once(in, n, BIG, &a);
		run_chunks(in, n, BIG, chunk, &b);
		assert_int_equal(a.consumed, b.consumed);
		assert_int_equal(a.error, b.error);
		assert_int_equal(a.outlen, b.outlen);
		assert_memory_equal(a.out, b.out, a.outlen);
		/* Line ends are only ever stored as CR LF pairs. */
		assert_true(only_crlf(a.out, a.outlen));
		if (a.done)
			assert_true(a.consumed >= 3 &&
			    memcmp(in + a.consumed - 3, ".\r\n", 3) == 0);
		run_free(&a);
		run_free(&b);
	}
}

static void
test_data_error_replies(void **state)
{
	static const struct {
		enum smtp_data_error e;
		int code;
		const char *enh;
	} cases[] = {
		{ SMTP_DATA_OK, 250, "2.0.0" },
		{ SMTP_DATA_TOO_BIG, 552, "5.3.4" },
		{ SMTP_DATA_LINE_TOO_LONG, 500, "5.5.2" },
		{ SMTP_DATA_NUL, 554, "5.6.0" },
		{ SMTP_DATA_HEADER_TOO_BIG, 552, "5.3.4" },
		{ SMTP_DATA_TOO_MANY_HOPS, 554, "5.4.6" },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE_T(cases); i++) {
		int code;
		const char *enh, *text;

		smtp_data_error_reply(cases[i].e, &code, &enh, &text);
		assert_int_equal(code, cases[i].code);
		assert_string_equal(enh, cases[i].enh);
		assert_true(strlen(text) > 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_basic),
		cmocka_unit_test(test_data_smuggling),
		cmocka_unit_test(test_data_stuffing_round_trip),
		cmocka_unit_test(test_data_size),
		cmocka_unit_test(test_data_line_length),
		cmocka_unit_test(test_data_headers),
		cmocka_unit_test(test_data_hops),
		cmocka_unit_test(test_data_8bit),
		cmocka_unit_test(test_data_random),
		cmocka_unit_test(test_data_error_replies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
