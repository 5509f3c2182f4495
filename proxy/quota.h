/*
 * quota.h: per-account rolling 24-hour counters of messages and recipients
 * handed upstream, shaped like Gmail's sending limits (SPEC section 2). Both
 * delivery modes count here: direct mode refuses a message that would
 * exceed a limit (451 4.7.1), the queue keeps it until the window has room.
 *
 * Counters live in one-minute buckets (bounded memory, about 17 KiB per
 * account). They can be persisted in a small "sent log" (one line per
 * delivery, "UNIXTIME MESSAGES RECIPIENTS ACCOUNT"), so that a restart does
 * not forget what was sent in the last 24 hours; the log is compacted to
 * one line per non-empty bucket when it is loaded and when it grows.
 *
 * All times are wall-clock seconds passed in by the caller (tests drive
 * the clock). One thread only.
 */
#ifndef SMTPVAULT_QUOTA_H
#define SMTPVAULT_QUOTA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define QUOTA_WINDOW_SECS	(24 * 60 * 60)
#define QUOTA_BUCKET_SECS	60
#define QUOTA_BUCKETS		(QUOTA_WINDOW_SECS / QUOTA_BUCKET_SECS)
#define QUOTA_ACCOUNTS_MAX	1024		/* == VAULT_MAX_ACCOUNTS */
#define QUOTA_LOG_LINE_MAX	512		/* one sent-log line */
#define QUOTA_LOG_COMPACT_BYTES	(4 * 1024 * 1024)	/* compact beyond this */

struct quota;
struct quota_account;

/* A limit of 0 means "the default" (Google Workspace's 2,000 / 10,000). */
struct quota_limits {
	uint64_t	messages;
	uint64_t	rcpts;
};

/* What one quota_take() counted, so that it can be given back. */
struct quota_ticket {
	struct quota_account	*qa;	/* NULL: nothing counted */
	uint32_t		bucket;	/* unix minute */
	uint32_t		msgs;
	uint32_t		rcpts;
};

struct quota *quota_new(void);
void	quota_free(struct quota *q);

/* The effective limits for an account's daily_limit / daily_rcpt_limit. */
void	quota_limits(uint64_t daily_limit, uint64_t daily_rcpt_limit,
	    struct quota_limits *out);

/* Messages and recipients counted in the 24 hours ending at now. */
void	quota_usage(struct quota *q, const char *account, time_t now, uint64_t *msgs,
	    uint64_t *rcpts);

/*
 * Would msgs more messages with rcpts recipients fit at now? Returns 0 when
 * they fit; -1 when not, with *room_at the first time they will (buckets
 * age out), or 0 when they never can (more than the limit on their own).
 */
int	quota_check(struct quota *q, const char *account, const struct quota_limits *lim,
	    uint32_t msgs, uint32_t rcpts, time_t now, time_t *room_at);

/* Count msgs / rcpts at now (no limit check). Returns 0, or -1 when out of
 * memory or accounts (t->qa is then NULL and nothing was counted). */
int	quota_take(struct quota *q, const char *account, uint32_t msgs, uint32_t rcpts,
	    time_t now, struct quota_ticket *t);

/* Take back up to msgs / rcpts of what t counted (the upstream did not
 * accept them). Nothing when the bucket has aged out meanwhile. */
void	quota_give_back(struct quota_ticket *t, uint32_t msgs, uint32_t rcpts);

/*
 * The sent log. quota_log_open() loads path (missing is fine), counts the
 * entries inside the window ending at now, rewrites the file compacted, and
 * keeps it open for appends. Unparsable lines are skipped (counted in
 * *skipped when not NULL). Returns 0, or -1 with err.
 */
int	quota_log_open(struct quota *q, const char *path, time_t now, size_t *skipped,
	    char *err, size_t errlen);
/*
 * Record a delivery that quota_take() already counted: append one line (not
 * fsync'd: after a crash the tail may be lost, which only under-counts;
 * Google's own counter still applies). Compacts when the file has grown past
 * QUOTA_LOG_COMPACT_BYTES. Returns 0, or -1 (logged; the counters in memory
 * are unaffected). A no-op without quota_log_open().
 */
int	quota_log_append(struct quota *q, const char *account, uint32_t msgs, uint32_t rcpts,
	    time_t when);

/* Parse one sent-log line (without its newline); 0 or -1. For tests. */
int	quota_log_parse(const char *line, size_t len, time_t *when, uint32_t *msgs,
	    uint32_t *rcpts, char *account, size_t accountlen);

#endif
