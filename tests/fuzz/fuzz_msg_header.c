/*
 * fuzz_msg_header.c: libFuzzer harness for the header lookup of the audit
 * log (msg_header_get() of proxy/msg_header.h) on arbitrary messages,
 * including ones the DATA machine would never store (bare CR or LF, NUL, no
 * end of the header section).
 *
 * Input: 1 byte picks the field name and the size of the output buffer
 * (a name may also come from the input), the rest is the message, copied to
 * a buffer of exactly its length. Properties:
 *  - nothing is read past len (ASan) nor written past outlen;
 *  - a miss leaves out empty; a hit is NUL-terminated, trimmed of SP and
 *    TAB at both ends (when the message holds no NUL), and, when the message
 *    has only CR LF line ends, holds no CR or LF (unfolding removed them);
 *  - a hit means a line of the header section starts with the name, optional
 *    white space and ':' (the lookup does not invent fields).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "msg_header.h"

#include "fuzz_util.h"

/* Does some line before the first empty one start with "name *:"? */
static int
field_present(const char *msg, size_t len, const char *name)
{
	size_t namelen = strlen(name), p = 0, q, i, end;

	end = len < MSG_HEADER_SCAN_MAX ? len : MSG_HEADER_SCAN_MAX;
	while (p < end) {
		for (q = p; q + 1 < end && !(msg[q] == '\r' && msg[q + 1] == '\n'); q++)
			;
		if (q + 1 >= end)
			q = end;
		if (q == p)
			return 0;
		if (q - p > namelen && strncasecmp(msg + p, name, namelen) == 0) {
			for (i = p + namelen; i < q && (msg[i] == ' ' || msg[i] == '\t'); i++)
				;
			if (i < q && msg[i] == ':')
				return 1;
		}
		p = q + 2;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "Subject", "From", "Message-ID", "To",
		"Received", "X", "Subjec", "From:" };
	static const size_t sizes[] = { 0, 1, 2, 16, 998, 4096 };
	char namebuf[32], *out, *msg;
	const char *name;
	size_t outlen, n;
	unsigned pick;
	int rc;

	pick = (unsigned)fuzz_take(&data, &size, 1);
	outlen = sizes[(pick >> 3) % 6];
	if (pick & 0x80) {
		/* A name from the input: up to 31 bytes, ended by NUL. */
		n = strnlen((const char *)data, size < 31 ? size : 31);
		memcpy(namebuf, data, n);
		namebuf[n] = '\0';
		data += n < size ? n + 1 : n;
		size -= n < size ? n + 1 : n;
		name = namebuf;
	} else {
		name = names[pick % 8];
	}
	msg = fuzz_dup(data, size, 0);
	if ((out = malloc(outlen > 0 ? outlen : 1)) == NULL)
		abort();

	rc = msg_header_get(msg, size, name, out, outlen);
	if (outlen == 0) {
		FUZZ_CHECK(rc == -1, "found a field with no room for it");
	} else if (rc != 0) {
		FUZZ_CHECK(rc == -1, "rc %d", rc);
		FUZZ_CHECK(out[0] == '\0', "out not emptied on a miss");
	} else {
		n = strnlen(out, outlen);
		FUZZ_CHECK(n < outlen, "value not NUL-terminated");
		/* A NUL in the message (never stored: the DATA machine refuses
		 * it) cuts the C string before the trimmed end. */
		if (memchr(msg, '\0', size) == NULL)
			FUZZ_CHECK(n == 0 || (out[0] != ' ' && out[0] != '\t' &&
			    out[n - 1] != ' ' && out[n - 1] != '\t'), "value not trimmed");
		if (!fuzz_has_bare_cr_lf((const unsigned char *)msg, size))
			FUZZ_CHECK(memchr(out, '\r', n) == NULL && memchr(out, '\n', n) == NULL,
			    "a line end left in the value");
		FUZZ_CHECK(name[0] != '\0' ? field_present(msg, size, name) : 1,
		    "field %s found but not present", name);
	}
	free(out);
	free(msg);
	return 0;
}
