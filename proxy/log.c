/*
 * log.c: the daemon's and CLI's only way of writing to stderr. One event per
 * line, prefixed with a syslog priority so that journald keeps the level.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *log_progname = "smtpvault";
static int log_verbose;

void
log_init(const char *progname, int verbose)
{
	if (progname != NULL)
		log_progname = progname;
	log_verbose = verbose;
}

static void log_vmsg(enum log_level, const char *, va_list)
    __attribute__((format(printf, 2, 0)));

static void
log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	char line[2048];

	if (lvl == LOG_LVL_DEBUG && !log_verbose)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	/* A single fprintf keeps the line whole even with several writers. */
	fprintf(stderr, "<%d>%s: %s\n", (int)lvl, log_progname, line);
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LVL_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}

void
cli_error(const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "smtpvault: %s\n", line);
}

char *
log_escape(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	if (dstlen == 0)
		return dst;
	for (i = 0; i < srclen; i++) {
		unsigned char c = (unsigned char)src[i];
		size_t need = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? 1 : 4;

		if (o + need + 4 > dstlen) {
			/* Leave room for "..." and the NUL. */
			if (o + 4 <= dstlen) {
				memcpy(dst + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (need == 1) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 0xf];
		}
	}
	dst[o] = '\0';
	return dst;
}
