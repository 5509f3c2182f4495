/*
 * heartbeat.c: who among the daemon's children has been silent too long
 * (heartbeat.h). Pure bookkeeping on times the caller reads; server.c sends
 * the questions, receives the answers and decides what a silence means.
 */
#include "heartbeat.h"

#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "util.h"

#define USEC_PER_MSEC	UINT64_C(1000)
#define MSEC_PER_SEC	UINT64_C(1000)
#define NSEC_PER_MSEC	UINT64_C(1000000)

void
heartbeat_start(struct heartbeat *hb, uint64_t now_ms)
{
	hb->heard_ms = now_ms;
	hb->asked = 0;
	hb->silent = 0;
}

int
heartbeat_ask(struct heartbeat *hb)
{
	if (hb->asked)
		return 0;
	hb->asked = 1;
	return 1;
}

void
heartbeat_unask(struct heartbeat *hb)
{
	hb->asked = 0;
}

enum heartbeat_change
heartbeat_heard(struct heartbeat *hb, uint64_t now_ms, uint64_t *silent_ms)
{
	int was_silent = hb->silent;

	/* A clock that went backwards (it does not: monotonic) counts as 0. */
	*silent_ms = now_ms > hb->heard_ms ? now_ms - hb->heard_ms : 0;
	hb->heard_ms = now_ms;
	hb->asked = 0;
	hb->silent = 0;
	return was_silent ? HEARTBEAT_HEARD : HEARTBEAT_SAME;
}

enum heartbeat_change
heartbeat_check(struct heartbeat *hb, uint64_t now_ms, uint64_t limit_ms, uint64_t *silent_ms)
{
	*silent_ms = now_ms > hb->heard_ms ? now_ms - hb->heard_ms : 0;
	if (hb->silent || *silent_ms <= limit_ms)
		return HEARTBEAT_SAME;
	hb->silent = 1;
	return HEARTBEAT_SILENT;
}

int
heartbeat_limit_ms(uint64_t watchdog_usec, const char *env, uint64_t *limit_ms, char *err,
    size_t errlen)
{
	uint64_t v;

	*limit_ms = HEARTBEAT_DEFAULT_MS;
	if (watchdog_usec != 0) {
		*limit_ms = watchdog_usec / USEC_PER_MSEC;
		if (*limit_ms < HEARTBEAT_MIN_MS)
			*limit_ms = HEARTBEAT_MIN_MS;
		return 0;
	}
	if (env == NULL)
		return 0;
	if (parse_u64(env, HEARTBEAT_ENV_MIN_MS, HEARTBEAT_ENV_MAX_MS, &v) == -1) {
		snprintf(err, errlen, "%s must be a number of milliseconds from %llu to %llu",
		    HEARTBEAT_ENV, (unsigned long long)HEARTBEAT_ENV_MIN_MS,
		    (unsigned long long)HEARTBEAT_ENV_MAX_MS);
		return -1;
	}
	*limit_ms = v;
	return 0;
}

void
heartbeat_tick(uint64_t limit_ms, struct timeval *tv)
{
	uint64_t ms = limit_ms / HEARTBEAT_TICKS;

	tv->tv_sec = (time_t)(ms / MSEC_PER_SEC);
	tv->tv_usec = (suseconds_t)(ms % MSEC_PER_SEC * USEC_PER_MSEC);
}

uint64_t
heartbeat_now_ms(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * MSEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_MSEC;
}
