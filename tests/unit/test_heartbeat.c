/*
 * test_heartbeat.c: the parent's decision of which child has been silent
 * too long (proxy/heartbeat.c), with made-up times: a script of asks,
 * answers and ticks, each with what must come of it; the limit chosen
 * from systemd's watchdog, the test variable or the default; the timer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <sys/time.h>

#include "heartbeat.h"

#define LIMIT	1000	/* ms */

enum step_kind { ASK, HEAR, CHECK };

struct step {
	enum step_kind	 kind;
	uint64_t	 at_ms;
	int		 want;		/* ASK: 1 = send; HEAR, CHECK: enum heartbeat_change */
	uint64_t	 want_silent;	/* HEAR, CHECK: how long it was silent */
	int		 want_flag;	/* hb.silent after the step */
};

struct script {
	const char	*name;
	struct step	 steps[12];
	size_t		 n;
};

static const struct script scripts[] = {
	{ "answers every tick: never silent", {
		{ ASK, 0, 1, 0, 0 },
		{ HEAR, 3, HEARTBEAT_SAME, 3, 0 },
		{ CHECK, 500, HEARTBEAT_SAME, 497, 0 },
		{ ASK, 500, 1, 0, 0 },
		{ HEAR, 502, HEARTBEAT_SAME, 499, 0 },
		{ CHECK, 1000, HEARTBEAT_SAME, 498, 0 },
	}, 6 },
	{ "one question at a time", {
		{ ASK, 0, 1, 0, 0 },
		{ ASK, 500, 0, 0, 0 },
		{ ASK, 1000, 0, 0, 0 },
		{ HEAR, 1100, HEARTBEAT_SAME, 1100, 0 },
		{ ASK, 1500, 1, 0, 0 },
	}, 5 },
	{ "exactly the limit is not yet silent", {
		{ CHECK, LIMIT, HEARTBEAT_SAME, LIMIT, 0 },
		{ CHECK, LIMIT + 1, HEARTBEAT_SILENT, LIMIT + 1, 1 },
	}, 2 },
	{ "silent once, said once, then heard again", {
		{ ASK, 0, 1, 0, 0 },
		{ CHECK, 500, HEARTBEAT_SAME, 500, 0 },
		{ CHECK, 1500, HEARTBEAT_SILENT, 1500, 1 },
		{ CHECK, 2000, HEARTBEAT_SAME, 2000, 1 },
		{ CHECK, 90000, HEARTBEAT_SAME, 90000, 1 },
		{ HEAR, 90001, HEARTBEAT_HEARD, 90001, 0 },
		{ CHECK, 90500, HEARTBEAT_SAME, 499, 0 },
		{ ASK, 90500, 1, 0, 0 },
		{ CHECK, 92000, HEARTBEAT_SILENT, 1999, 1 },
		{ HEAR, 92001, HEARTBEAT_HEARD, 2000, 0 },
	}, 10 },
	{ "an answer without a question still counts", {
		{ HEAR, 400, HEARTBEAT_SAME, 400, 0 },
		{ CHECK, 1300, HEARTBEAT_SAME, 900, 0 },
	}, 2 },
};

static void
test_heartbeat_scripts(void **state)
{
	struct heartbeat hb;
	uint64_t silent;
	size_t i, j;
	int got;

	for (i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
		heartbeat_start(&hb, 0);
		for (j = 0; j < scripts[i].n; j++) {
			const struct step *st = &scripts[i].steps[j];

			silent = UINT64_MAX;
			switch (st->kind) {
			case ASK:
				got = heartbeat_ask(&hb);
				break;
			case HEAR:
				got = heartbeat_heard(&hb, st->at_ms, &silent);
				break;
			default:
				got = heartbeat_check(&hb, st->at_ms, LIMIT, &silent);
				break;
			}
			if (got != st->want || hb.silent != st->want_flag ||
			    (st->kind != ASK && silent != st->want_silent))
				fail_msg("%s, step %zu: got %d silent=%llu flag=%d", scripts[i].name,
				    j, got, (unsigned long long)silent, hb.silent);
		}
	}
}

static void
test_heartbeat_unask(void **state)
{
	struct heartbeat hb;

	heartbeat_start(&hb, 0);
	assert_int_equal(heartbeat_ask(&hb), 1);
	heartbeat_unask(&hb);		/* the send failed */
	assert_int_equal(heartbeat_ask(&hb), 1);
	assert_int_equal(heartbeat_ask(&hb), 0);
}

struct limit_case {
	uint64_t	 watchdog_usec;
	const char	*env;
	int		 rc;
	uint64_t	 want_ms;
};

static void
test_heartbeat_limit(void **state)
{
	static const struct limit_case cases[] = {
		{ 30000000, NULL, 0, 30000 },		/* systemd's WatchdogSec=30s */
		{ 30000000, "1000", 0, 30000 },		/* systemd's wins over the test's */
		{ 1000000, "abc", 0, 1000 },
		{ 200000, NULL, 0, 200 },
		{ 1, NULL, 0, HEARTBEAT_MIN_MS },	/* a tick of 1 ms at the least */
		{ 0, NULL, 0, HEARTBEAT_DEFAULT_MS },
		{ 0, "1000", 0, 1000 },
		{ 0, "100", 0, 100 },
		{ 0, "3600000", 0, 3600000 },
		{ 0, "99", -1, HEARTBEAT_DEFAULT_MS },
		{ 0, "3600001", -1, HEARTBEAT_DEFAULT_MS },
		{ 0, "", -1, HEARTBEAT_DEFAULT_MS },
		{ 0, "1s", -1, HEARTBEAT_DEFAULT_MS },
		{ 0, "-1", -1, HEARTBEAT_DEFAULT_MS },
	};
	char err[256];
	uint64_t got;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		got = 0;
		rc = heartbeat_limit_ms(cases[i].watchdog_usec, cases[i].env, &got, err,
		    sizeof(err));
		if (rc != cases[i].rc || got != cases[i].want_ms)
			fail_msg("case %zu: rc %d limit %llu", i, rc, (unsigned long long)got);
		if (rc == -1 && strstr(err, HEARTBEAT_ENV) == NULL)
			fail_msg("case %zu: error does not name %s: %s", i, HEARTBEAT_ENV, err);
	}
}

static void
test_heartbeat_tick(void **state)
{
	static const uint64_t cases[][3] = {	/* limit ms; timer s, us */
		{ 30000, 15, 0 },
		{ 1000, 0, 500000 },
		{ 200, 0, 100000 },
		{ 2999, 1, 499000 },
		{ HEARTBEAT_MIN_MS, 0, 1000 },
	};
	struct timeval tv;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		heartbeat_tick(cases[i][0], &tv);
		if ((uint64_t)tv.tv_sec != cases[i][1] || (uint64_t)tv.tv_usec != cases[i][2])
			fail_msg("case %zu: %ld s %ld us", i, (long)tv.tv_sec, (long)tv.tv_usec);
	}
}

static void
test_heartbeat_clock(void **state)
{
	uint64_t a = heartbeat_now_ms(), b = heartbeat_now_ms();

	assert_true(a > 0);
	assert_true(b >= a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_heartbeat_scripts),
		cmocka_unit_test(test_heartbeat_unask),
		cmocka_unit_test(test_heartbeat_limit),
		cmocka_unit_test(test_heartbeat_tick),
		cmocka_unit_test(test_heartbeat_clock),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
