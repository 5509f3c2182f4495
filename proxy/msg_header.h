/*
 * msg_header.h: read a few header fields (From, Subject, Message-ID) out of
 * a stored message for the audit log. The message is the session's output:
 * CR LF line ends only, header section first (RFC 5322 section 2.2).
 */
#ifndef SMTPVAULT_MSG_HEADER_H
#define SMTPVAULT_MSG_HEADER_H

#include <stddef.h>

/* Bytes of a message examined for header fields; a header section longer
 * than this (the session allows 256 KiB) yields "not found" for the rest. */
#define MSG_HEADER_SCAN_MAX	(256 * 1024 + 4096)

/*
 * Find the first field called name (case-insensitive) in the header section
 * of msg[0..len), unfold it (CR LF before white space removed), trim it and
 * copy at most outlen - 1 bytes to out. Returns 0 when found, -1 when not.
 */
int	msg_header_get(const char *msg, size_t len, const char *name, char *out,
	    size_t outlen);

#endif
