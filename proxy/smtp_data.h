/*
 * smtp_data.h: the DATA phase of an SMTP session as a pure byte state
 * machine (RFC 5321 sections 4.1.1.4 and 4.5.2): it finds the end of the
 * message, removes dot-stuffing, normalises line ends and enforces the
 * bounds on the message. No I/O and no allocation, so it can be fuzzed alone.
 *
 * Policy, chosen so that no client can end a message early or smuggle a
 * second transaction inside one, and so that no bare CR or LF ever reaches
 * the upstream:
 *
 * - End of data: only the exact octets CR LF "." CR LF end the message (the
 *   CR LF of the DATA command counts, so ".\r\n" at once is an empty message).
 *   Nothing else does: "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n" and
 *   the like are message content.
 * - Line ends: CR LF ends a line. A bare LF, and a bare CR (one not followed
 *   by LF), each end a line too and are written as CR LF: printers and Unix
 *   scripts send bare LF, and a line end written as CR LF is what every
 *   reader of the stored message will see. So "a\r\r\nb" is the three lines
 *   "a", "" and "b". The stored message has only CR LF line ends.
 * - Dot-stuffing: a line (after any kind of line end) that starts with "."
 *   loses that first ".". The sender of the message (upstream client) must
 *   stuff again.
 * - NUL octets are refused: the message is rejected with 554 5.6.0 (RFC 5321
 *   and RFC 6152 both forbid NUL in mail, and many readers truncate at it).
 * - Lines longer than SMTP_DATA_LINE_MAX octets on the wire, line end
 *   included (RFC 5321 4.5.3.1.6, the same bound as for commands), are
 *   refused: the message is rejected with 500 5.5.2, as SPEC section 4 says
 *   for lines over 1000 octets. Relaying such a line would break RFC 5321
 *   upstream, and cutting it would change the message.
 * - The header section ends at the first empty line or at the first line
 *   that is neither a header field ("name:" with optional white space before
 *   the colon) nor a continuation (starting with SP or TAB). It may hold at
 *   most SMTP_DATA_HEADER_LINES_MAX lines and SMTP_DATA_HEADER_BYTES_MAX
 *   octets; over that the message is rejected with 552 5.3.4.
 * - More than SMTP_DATA_HOPS_MAX "Received:" fields mean a mail loop: the
 *   message is rejected with 554 5.4.6, as Postfix does.
 * - The stored message (after unstuffing and normalising) may be at most
 *   max_size octets; over that the message is rejected with 552 5.3.4.
 *
 * After any error the machine still reads up to the end of data (so that the
 * rest of the message is never taken for commands) but writes nothing more;
 * the first error found is the one reported.
 */
#ifndef SMTPVAULT_SMTP_DATA_H
#define SMTPVAULT_SMTP_DATA_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_DATA_LINE_MAX		1000	/* octets of one line, CR LF included */
#define SMTP_DATA_HEADER_LINES_MAX	2000	/* lines of the header section */
#define SMTP_DATA_HEADER_BYTES_MAX	(256 * 1024)	/* octets of the header section */
#define SMTP_DATA_HOPS_MAX		50	/* Received: fields, loop detection */

/* Room smtp_data_feed() may need in out for inlen input octets. */
#define SMTP_DATA_OUT_MAX(inlen)	(2 * (size_t)(inlen) + 2)

enum smtp_data_error {
	SMTP_DATA_OK = 0,
	SMTP_DATA_TOO_BIG,		/* 552 5.3.4 */
	SMTP_DATA_LINE_TOO_LONG,	/* 500 5.5.2 */
	SMTP_DATA_NUL,			/* 554 5.6.0 */
	SMTP_DATA_HEADER_TOO_BIG,	/* 552 5.3.4 */
	SMTP_DATA_TOO_MANY_HOPS,	/* 554 5.4.6 */
};

/* Input side: where we are in the line structure of the wire octets. */
enum smtp_data_state {
	SMTP_DATA_BOL_CRLF,	/* start of a line that follows CR LF (or DATA) */
	SMTP_DATA_BOL_BARE,	/* start of a line that follows a bare CR or LF */
	SMTP_DATA_DOT,		/* "." after CR LF: maybe the end of data */
	SMTP_DATA_DOT_CR,	/* ".\r" after CR LF: end of data if LF follows */
	SMTP_DATA_TEXT,		/* inside a line */
	SMTP_DATA_CR,		/* CR inside a line: CR LF or a bare CR */
	SMTP_DATA_DONE,		/* CR LF . CR LF seen */
};

/* Output side: the header section of the stored message. */
enum smtp_data_hdr {
	SMTP_DATA_HDR_BOL,	/* start of a header line */
	SMTP_DATA_HDR_NAME,	/* in a field name */
	SMTP_DATA_HDR_WSP,	/* white space between a field name and ':' */
	SMTP_DATA_HDR_VALUE,	/* after the ':', or in a continuation line */
	SMTP_DATA_HDR_BODY,	/* past the header section */
};

struct smtp_data {
	enum smtp_data_state	state;
	enum smtp_data_hdr	hdr;
	enum smtp_data_error	error;
	uint64_t		max_size;
	uint64_t		size;		/* octets stored so far */
	uint64_t		wire_size;	/* octets read, end of data included */
	size_t			line_len;	/* wire octets of the current line */
	size_t			hdr_lines;
	size_t			hdr_bytes;
	size_t			hops;		/* Received: fields */
	size_t			name_len;	/* of the current field name */
	int			name_received;	/* the name so far matches "Received" */
	int			body_8bit;	/* an octet >= 0x80 was seen */
};

void	smtp_data_init(struct smtp_data *d, uint64_t max_size);

/*
 * Read up to inlen octets of in and append the stored form to out, which
 * must have room for SMTP_DATA_OUT_MAX(inlen) octets; *outlen is set to the
 * number of octets written. Returns the number of octets consumed: all of
 * them, or fewer when the end of data was found (the rest belongs to the
 * commands that follow). After an error nothing more is written.
 */
size_t	smtp_data_feed(struct smtp_data *d, const void *in, size_t inlen,
	    void *out, size_t *outlen);

/* Was CR LF . CR LF seen? */
int	smtp_data_done(const struct smtp_data *d);

/* The first error found, SMTP_DATA_OK if none. */
enum smtp_data_error smtp_data_error(const struct smtp_data *d);

/* The reply for an error: code, enhanced code and text (static strings). */
void	smtp_data_error_reply(enum smtp_data_error e, int *code,
	    const char **enhanced, const char **text);

#endif
