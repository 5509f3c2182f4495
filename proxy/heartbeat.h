/*
 * heartbeat.h: is every child of "smtpvault serve" still turning its loop?
 * At each tick the parent asks each child (PROC_MSG_PING; the keeper:
 * KEEPER_PING), one question at a time, and records when each answered
 * (CLOCK_MONOTONIC). A child not heard from for longer than the limit is
 * silent: hung in a loop, a deadlock or a blocked system call. The parent
 * then stops systemd's watchdog pings (sdnotify.h), so that systemd kills and
 * restarts the daemon, or, without systemd's watchdog, says so in the log.
 * This file holds the decision alone, without I/O or clock, so that tests
 * can give it made-up times.
 */
#ifndef SMTPVAULT_HEARTBEAT_H
#define SMTPVAULT_HEARTBEAT_H

#include <stddef.h>
#include <stdint.h>

/*
 * The limit is systemd's watchdog interval (WATCHDOG_USEC, the unit's
 * WatchdogSec=): a child blocked that long would get the daemon killed
 * anyway if it were the parent. Without systemd's watchdog it is
 * HEARTBEAT_DEFAULT_MS, the unit's WatchdogSec; for tests only,
 * HEARTBEAT_ENV sets it in milliseconds (not a configuration key).
 */
#define HEARTBEAT_DEFAULT_MS	UINT64_C(30000)
#define HEARTBEAT_ENV		"SMTPVAULT_TEST_HEARTBEAT_MS"
#define HEARTBEAT_ENV_MIN_MS	UINT64_C(100)
#define HEARTBEAT_ENV_MAX_MS	UINT64_C(3600000)
#define HEARTBEAT_MIN_MS	UINT64_C(2)	/* a tick of at least 1 ms */
#define HEARTBEAT_TICKS		2	/* ticks per limit, as sd_watchdog_enabled(3) advises */

struct heartbeat {
	uint64_t	heard_ms;	/* the last answer (at first: the start) */
	int		asked;		/* a question is unanswered: ask no second one */
	int		silent;		/* reported silent and not heard from since */
};

enum heartbeat_change {
	HEARTBEAT_SAME = 0,
	HEARTBEAT_SILENT,	/* silent longer than the limit, from now on */
	HEARTBEAT_HEARD		/* heard from again after it was silent */
};

void	heartbeat_start(struct heartbeat *hb, uint64_t now_ms);
/* 1 when a question is to be sent now (it then counts as asked), 0 while
 * the last one is unanswered: at most one is in flight per child. */
int	heartbeat_ask(struct heartbeat *hb);
/* The question could not be sent after all; ask again at the next tick. */
void	heartbeat_unask(struct heartbeat *hb);
/* An answer. HEARTBEAT_HEARD (with how long it was silent) when it had
 * been reported silent, else HEARTBEAT_SAME. */
enum heartbeat_change heartbeat_heard(struct heartbeat *hb, uint64_t now_ms,
	    uint64_t *silent_ms);
/* At each tick. HEARTBEAT_SILENT once, when nothing was heard for longer
 * than limit_ms; *silent_ms is how long it has been. */
enum heartbeat_change heartbeat_check(struct heartbeat *hb, uint64_t now_ms,
	    uint64_t limit_ms, uint64_t *silent_ms);
/*
 * The limit: watchdog_usec when systemd's watchdog is on (not 0), else
 * env (HEARTBEAT_ENV's value, NULL when unset) in milliseconds, else
 * HEARTBEAT_DEFAULT_MS. 0, or -1 with err when env is not a number within
 * [HEARTBEAT_ENV_MIN_MS, HEARTBEAT_ENV_MAX_MS] (*limit_ms is then the
 * default).
 */
int	heartbeat_limit_ms(uint64_t watchdog_usec, const char *env, uint64_t *limit_ms,
	    char *err, size_t errlen);
/* The parent's timer: the limit divided by HEARTBEAT_TICKS. */
struct timeval;
void	heartbeat_tick(uint64_t limit_ms, struct timeval *tv);
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t heartbeat_now_ms(void);

#endif
