/*
 * smtp_reply.h: a pure parser for the replies an upstream SMTP server sends
 * (RFC 5321 section 4.2, enhanced status codes of RFC 2034 / RFC 3463). No
 * I/O and no allocation: it is fed one line at a time (or a buffer) and says
 * "need more", "done" or "refused", so that it can be fuzzed on its own.
 *
 * Everything is bounded: the length of one line, the number of lines, and
 * the text kept (longer replies are accepted but their text is truncated).
 * A reply with a malformed code, codes that differ between lines, control
 * characters or an over-long line is refused, and the caller abandons the
 * session.
 */
#ifndef SMTPVAULT_SMTP_REPLY_H
#define SMTPVAULT_SMTP_REPLY_H

#include <stddef.h>

#define SMTP_REPLY_TEXT_MAX	4096	/* kept text of one reply (= SMTP_CLIENT_REPLY_MAX) */
#define SMTP_REPLY_LINE_MAX	4096	/* longest line accepted, without its CRLF */
#define SMTP_REPLY_LINES_MAX	128	/* lines in one reply (an EHLO reply has ~10) */
#define SMTP_REPLY_ENH_MAX	16	/* "5.7.8" and the like, with NUL */

enum smtp_reply_status {
	SMTP_REPLY_ERROR = -1,		/* refused: r->error says why */
	SMTP_REPLY_DONE = 0,		/* the last line was fed */
	SMTP_REPLY_MORE = 1,		/* a continuation line ("250-"); feed the next */
};

struct smtp_reply {
	int		code;				/* 200..599 */
	char		enhanced[SMTP_REPLY_ENH_MAX];	/* of the first line, "" if none */
	/* The text of every line without code and enhanced code, lines joined
	 * with '\n', NUL-terminated. */
	char		text[SMTP_REPLY_TEXT_MAX];
	size_t		textlen;
	size_t		n_lines;
	int		truncated;			/* text was cut at SMTP_REPLY_TEXT_MAX */
	int		done;
	const char	*error;				/* static text when refused */
};

void	smtp_reply_init(struct smtp_reply *r);

/* Feed one line without its line end (a trailing CR is tolerated). */
int	smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);

/*
 * Feed from a buffer of raw bytes: complete lines (ended by CRLF or LF) are
 * fed until the reply is done. *consumed is the number of bytes used; the
 * caller keeps the rest (a partial line, or the next pipelined reply).
 * Returns SMTP_REPLY_MORE when buf ended before the reply did (and refuses a
 * partial line already longer than SMTP_REPLY_LINE_MAX).
 */
int	smtp_reply_parse(struct smtp_reply *r, const char *buf, size_t len,
	    size_t *consumed);

/*
 * EHLO replies: is keyword kw (case-insensitive) advertised on one of the
 * lines after the first? On success *params points at the parameters after
 * the keyword (and a space or '='), *plen is their length. Returns 1 or 0.
 */
int	smtp_reply_ehlo_has(const struct smtp_reply *r, const char *kw,
	    const char **params, size_t *plen);

/* Code class helpers. */
#define SMTP_REPLY_IS_2XX(c)	((c) >= 200 && (c) <= 299)
#define SMTP_REPLY_IS_3XX(c)	((c) >= 300 && (c) <= 399)
#define SMTP_REPLY_IS_4XX(c)	((c) >= 400 && (c) <= 499)
#define SMTP_REPLY_IS_5XX(c)	((c) >= 500 && (c) <= 599)

#endif
