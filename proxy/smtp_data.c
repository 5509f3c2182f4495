/*
 * smtp_data.c: the DATA-phase byte state machine (RFC 5321 4.1.1.4, 4.5.2,
 * 4.5.3.1.6; RFC 5322 2.2 for the header section). See smtp_data.h for the
 * policy on line ends, NUL octets, long lines and bounds.
 *
 * Two machines run side by side: the input one reads wire octets and finds
 * line ends, dots and the end of data; the output one sees the stored
 * message, one octet or one CR LF at a time, and tracks the header section.
 */
#include "smtp_data.h"

#include <string.h>

void
smtp_data_init(struct smtp_data *d, uint64_t max_size)
{
	memset(d, 0, sizeof(*d));
	d->state = SMTP_DATA_BOL_CRLF;
	d->hdr = SMTP_DATA_HDR_BOL;
	d->error = SMTP_DATA_OK;
	d->max_size = max_size;
}

int
smtp_data_done(const struct smtp_data *d)
{
	return d->state == SMTP_DATA_DONE;
}

enum smtp_data_error
smtp_data_error(const struct smtp_data *d)
{
	return d->error;
}

void
smtp_data_error_reply(enum smtp_data_error e, int *code, const char **enhanced,
    const char **text)
{
	switch (e) {
	case SMTP_DATA_OK:
		*code = 250;
		*enhanced = "2.0.0";
		*text = "Ok";
		break;
	case SMTP_DATA_TOO_BIG:
		*code = 552;
		*enhanced = "5.3.4";
		*text = "Message too big for system";
		break;
	case SMTP_DATA_LINE_TOO_LONG:
		*code = 500;
		*enhanced = "5.5.2";
		*text = "Message has a line longer than 1000 octets";
		break;
	case SMTP_DATA_NUL:
		*code = 554;
		*enhanced = "5.6.0";
		*text = "Message contains NUL octets";
		break;
	case SMTP_DATA_HEADER_TOO_BIG:
		*code = 552;
		*enhanced = "5.3.4";
		*text = "Message header section too big";
		break;
	case SMTP_DATA_TOO_MANY_HOPS:
	default:
		*code = 554;
		*enhanced = "5.4.6";
		*text = "Too many hops (Received: fields), mail loop?";
		break;
	}
}

static void
data_fail(struct smtp_data *d, enum smtp_data_error e)
{
	if (d->error == SMTP_DATA_OK)
		d->error = e;
}

/* RFC 5322 ftext: printable US-ASCII except ':'. */
static int
data_is_ftext(unsigned char c)
{
	return c >= 33 && c <= 126 && c != ':';
}

static unsigned char
data_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* A field name ended with its ':'. */
static void
data_hdr_name_done(struct smtp_data *d)
{
	static const char received[] = "received";

	if (d->name_received && d->name_len == sizeof(received) - 1 &&
	    ++d->hops > SMTP_DATA_HOPS_MAX)
		data_fail(d, SMTP_DATA_TOO_MANY_HOPS);
	d->hdr = SMTP_DATA_HDR_VALUE;
}

/* The output machine: one octet of the stored message, never CR or LF. */
static void
data_hdr_octet(struct smtp_data *d, unsigned char c)
{
	static const char received[] = "received";

	switch (d->hdr) {
	case SMTP_DATA_HDR_BOL:
		if (c == ' ' || c == '\t') {
			d->hdr = SMTP_DATA_HDR_VALUE;	/* a continuation line */
		} else if (data_is_ftext(c)) {
			d->hdr = SMTP_DATA_HDR_NAME;
			d->name_len = 1;
			d->name_received = data_lower(c) == (unsigned char)received[0];
		} else {
			d->hdr = SMTP_DATA_HDR_BODY;
		}
		break;
	case SMTP_DATA_HDR_NAME:
		if (c == ':') {
			data_hdr_name_done(d);
		} else if (c == ' ' || c == '\t') {
			d->hdr = SMTP_DATA_HDR_WSP;
		} else if (data_is_ftext(c)) {
			if (d->name_received && (d->name_len >= sizeof(received) - 1 ||
			    data_lower(c) != (unsigned char)received[d->name_len]))
				d->name_received = 0;
			d->name_len++;
		} else {
			d->hdr = SMTP_DATA_HDR_BODY;
		}
		break;
	case SMTP_DATA_HDR_WSP:
		if (c == ':')
			data_hdr_name_done(d);
		else if (c != ' ' && c != '\t')
			d->hdr = SMTP_DATA_HDR_BODY;
		break;
	case SMTP_DATA_HDR_VALUE:
	case SMTP_DATA_HDR_BODY:
		break;
	}
}

/* Account for n stored octets; 0 if they may be written. */
static int
data_account(struct smtp_data *d, size_t n)
{
	if (d->error != SMTP_DATA_OK)
		return -1;
	if (d->size > d->max_size || d->max_size - d->size < n) {
		data_fail(d, SMTP_DATA_TOO_BIG);
		return -1;
	}
	d->size += n;
	if (d->hdr != SMTP_DATA_HDR_BODY) {
		d->hdr_bytes += n;
		if (d->hdr_bytes > SMTP_DATA_HEADER_BYTES_MAX) {
			data_fail(d, SMTP_DATA_HEADER_TOO_BIG);
			return -1;
		}
	}
	return 0;
}

/* One octet of line content (not CR, not LF), as read from the wire. */
static void
data_content(struct smtp_data *d, unsigned char c, unsigned char *out, size_t *o)
{
	d->state = SMTP_DATA_TEXT;
	if (++d->line_len > SMTP_DATA_LINE_MAX - 2)
		data_fail(d, SMTP_DATA_LINE_TOO_LONG);
	if (c == '\0')
		data_fail(d, SMTP_DATA_NUL);
	if (c >= 0x80)
		d->body_8bit = 1;
	if (d->error != SMTP_DATA_OK)
		return;
	if (d->hdr != SMTP_DATA_HDR_BODY)
		data_hdr_octet(d, c);
	if (data_account(d, 1) == 0)
		out[(*o)++] = c;
}

/* A line ended (by CR LF, or a bare CR or LF): store CR LF. */
static void
data_eol(struct smtp_data *d, unsigned char *out, size_t *o)
{
	d->line_len = 0;
	if (d->error != SMTP_DATA_OK)
		return;
	if (data_account(d, 2) != 0)
		return;
	out[(*o)++] = '\r';
	out[(*o)++] = '\n';

	switch (d->hdr) {
	case SMTP_DATA_HDR_BOL:		/* the empty line ends the header section */
	case SMTP_DATA_HDR_NAME:	/* "name" without ':' is not a field */
	case SMTP_DATA_HDR_WSP:
		d->hdr = SMTP_DATA_HDR_BODY;
		break;
	case SMTP_DATA_HDR_VALUE:
		d->hdr = SMTP_DATA_HDR_BOL;
		if (++d->hdr_lines > SMTP_DATA_HEADER_LINES_MAX)
			data_fail(d, SMTP_DATA_HEADER_TOO_BIG);
		break;
	case SMTP_DATA_HDR_BODY:
		break;
	}
}

/* An octet inside a line, or at the start of one that is not a dot. */
static void
data_text(struct smtp_data *d, unsigned char c, unsigned char *out, size_t *o)
{
	if (c == '\r') {
		d->state = SMTP_DATA_CR;
	} else if (c == '\n') {
		data_eol(d, out, o);		/* bare LF */
		d->state = SMTP_DATA_BOL_BARE;
	} else {
		data_content(d, c, out, o);
	}
}

/* The first octet of a line that follows a bare CR or LF. */
static void
data_bol_bare(struct smtp_data *d, unsigned char c, unsigned char *out, size_t *o)
{
	if (c == '.') {
		/* Unstuffed, but never the start of an end of data. */
		d->line_len = 1;
		d->state = SMTP_DATA_TEXT;
	} else {
		data_text(d, c, out, o);
	}
}

size_t
smtp_data_feed(struct smtp_data *d, const void *in, size_t inlen, void *out,
    size_t *outlen)
{
	const unsigned char *p = in;
	unsigned char *q = out;
	size_t i, o = 0;

	for (i = 0; i < inlen && d->state != SMTP_DATA_DONE; i++) {
		unsigned char c = p[i];

		d->wire_size++;
		switch (d->state) {
		case SMTP_DATA_BOL_CRLF:
			if (c == '.') {
				d->line_len = 1;
				d->state = SMTP_DATA_DOT;
			} else {
				data_text(d, c, q, &o);
			}
			break;
		case SMTP_DATA_BOL_BARE:
			data_bol_bare(d, c, q, &o);
			break;
		case SMTP_DATA_DOT:
			if (c == '\r')
				d->state = SMTP_DATA_DOT_CR;
			else
				data_text(d, c, q, &o);
			break;
		case SMTP_DATA_DOT_CR:
			if (c == '\n') {
				d->state = SMTP_DATA_DONE;
				break;
			}
			/* ".\r" and a bare CR: the empty (unstuffed) line ends. */
			data_eol(d, q, &o);
			data_bol_bare(d, c, q, &o);
			break;
		case SMTP_DATA_TEXT:
			data_text(d, c, q, &o);
			break;
		case SMTP_DATA_CR:
			data_eol(d, q, &o);
			if (c == '\n') {
				d->state = SMTP_DATA_BOL_CRLF;
				break;
			}
			/* A bare CR ended the line; c starts the next one. */
			data_bol_bare(d, c, q, &o);
			break;
		case SMTP_DATA_DONE:
			break;
		}
	}
	*outlen = o;
	return i;
}
