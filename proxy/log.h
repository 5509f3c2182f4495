/*
 * log.h: one line per event on stderr, "key=value" style, with a syslog
 * priority prefix ("<3>" ...) that journald understands. Client-supplied text
 * must go through log_escape() before it is logged.
 */
#ifndef SMTPVAULT_LOG_H
#define SMTPVAULT_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void log_init(const char *progname, int verbose);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...)   log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* For start-up failures and broken invariants only: logs and exits(1). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Escape untrusted text for a log line: printable ASCII except '"' and '\\'
 * is kept, everything else becomes \xNN. The result is always NUL-terminated
 * and truncated (with "...") to fit dst. Returns dst.
 */
char *log_escape(char *dst, size_t dstlen, const char *src, size_t srclen);

/* The CLI's error line: "smtpvault: <message>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
