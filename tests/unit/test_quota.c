/*
 * test_quota.c: the rolling 24-hour counters (quota.c) with a clock the
 * test drives: limits, the time the window has room again, give-backs, the
 * window's edge, and the sent log (load, skip garbage, compact).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "quota.h"
#include "util.h"

#define T0	1764115200	/* a minute boundary */
#define ACCT	"team@example.com"

static void
test_defaults(void **state)
{
	struct quota_limits lim;

	(void)state;
	quota_limits(0, 0, &lim);
	assert_int_equal(lim.messages, 2000);
	assert_int_equal(lim.rcpts, 10000);
	quota_limits(5, 7, &lim);
	assert_int_equal(lim.messages, 5);
	assert_int_equal(lim.rcpts, 7);
}

static void
test_five_a_day(void **state)
{
	struct quota *q = quota_new();
	struct quota_limits lim = { 5, 100 };
	struct quota_ticket t;
	time_t room;
	int i;

	(void)state;
	/* Five messages at T0, T0+60, ... fit; the sixth does not. */
	for (i = 0; i < 5; i++) {
		assert_int_equal(quota_check(q, ACCT, &lim, 1, 1, T0 + i * 60, &room), 0);
		assert_int_equal(quota_take(q, ACCT, 1, 1, T0 + i * 60, &t), 0);
	}
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 1, T0 + 300, &room), -1);
	/* Room when the first one ages out, 24 h after its minute. */
	assert_int_equal(room, T0 + QUOTA_WINDOW_SECS);
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 1, room - 1, &room), -1);
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 1, T0 + QUOTA_WINDOW_SECS, &room), 0);
	/* Other accounts are not affected; names are case-insensitive. */
	assert_int_equal(quota_check(q, "other@example.com", &lim, 1, 1, T0 + 300, &room), 0);
	assert_int_equal(quota_check(q, "TEAM@example.com", &lim, 1, 1, T0 + 300, &room), -1);
	quota_free(q);
}

static void
test_recipients_and_never(void **state)
{
	struct quota *q = quota_new();
	struct quota_limits lim = { 100, 150 };
	struct quota_ticket t;
	uint64_t m, r;
	time_t room;

	(void)state;
	assert_int_equal(quota_take(q, ACCT, 1, 100, T0, &t), 0);
	assert_int_equal(quota_take(q, ACCT, 1, 40, T0 + 3600, &t), 0);
	quota_usage(q, ACCT, T0 + 3600, &m, &r);
	assert_int_equal(m, 2);
	assert_int_equal(r, 140);
	/* 20 more recipients need the first bucket gone. */
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 20, T0 + 3600, &room), -1);
	assert_int_equal(room, T0 + QUOTA_WINDOW_SECS);
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 10, T0 + 3600, &room), 0);
	/* More than the limit on its own: never (room 0). */
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 151, T0 + 3600, &room), -1);
	assert_int_equal(room, 0);
	quota_free(q);
}

static void
test_give_back(void **state)
{
	struct quota *q = quota_new();
	struct quota_limits lim = { 1, 10 };
	struct quota_ticket t;
	uint64_t m, r;
	time_t room;

	(void)state;
	assert_int_equal(quota_take(q, ACCT, 1, 10, T0, &t), 0);
	assert_int_equal(quota_check(q, ACCT, &lim, 1, 1, T0, &room), -1);
	/* The upstream took 4 of 10 recipients: the message counts, 6 go back. */
	quota_give_back(&t, 0, 6);
	quota_usage(q, ACCT, T0, &m, &r);
	assert_int_equal(m, 1);
	assert_int_equal(r, 4);
	/* Nothing accepted: all back; more than was taken is ignored. */
	quota_give_back(&t, 5, 50);
	quota_usage(q, ACCT, T0, &m, &r);
	assert_int_equal(m, 0);
	assert_int_equal(r, 0);
	/* A bucket that aged out is not touched by a late give-back. */
	assert_int_equal(quota_take(q, ACCT, 1, 1, T0, &t), 0);
	assert_int_equal(quota_take(q, ACCT, 1, 1, T0 + QUOTA_WINDOW_SECS, &t), 0);
	quota_usage(q, ACCT, T0 + QUOTA_WINDOW_SECS, &m, &r);
	assert_int_equal(m, 1);
	quota_free(q);
}

static void
test_sent_log(void **state)
{
	char dir[] = "/tmp/test_quota.XXXXXX", path[128], err[256], line[256];
	struct quota *q;
	struct quota_ticket t;
	uint64_t m, r;
	size_t skipped = 0, lines = 0;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sent.log", dir);
	fp = fopen(path, "w");
	fprintf(fp, "%d 1 3 " ACCT "\n", T0 - 10);		/* inside the window */
	fprintf(fp, "%d 1 2 " ACCT "\n", T0 - 20);		/* same minute */
	fprintf(fp, "%d 1 9 " ACCT "\n", T0 - QUOTA_WINDOW_SECS - 60);	/* too old */
	fprintf(fp, "%d 1 1 other@example.com\n", T0 - 7200);
	fprintf(fp, "garbage line\n");
	fprintf(fp, "%d -1 1 " ACCT "\n", T0);
	fprintf(fp, "%d 1 1 has space@x\n", T0);
	fprintf(fp, "%d 1 1 " ACCT, T0);				/* cut off, no newline */
	fclose(fp);
	q = quota_new();
	assert_int_equal(quota_log_open(q, path, T0, &skipped, err, sizeof(err)), 0);
	assert_int_equal(skipped, 4);
	quota_usage(q, ACCT, T0, &m, &r);
	assert_int_equal(m, 2);
	assert_int_equal(r, 5);
	assert_int_equal(quota_take(q, ACCT, 1, 4, T0, &t), 0);
	assert_int_equal(quota_log_append(q, ACCT, 1, 4, T0), 0);
	quota_free(q);

	/* Compacted to one line per bucket, plus the append. */
	fp = fopen(path, "r");
	while (fgets(line, sizeof(line), fp) != NULL)
		lines++;
	fclose(fp);
	assert_int_equal(lines, 3);
	q = quota_new();
	assert_int_equal(quota_log_open(q, path, T0 + 60, &skipped, err, sizeof(err)), 0);
	assert_int_equal(skipped, 0);
	quota_usage(q, ACCT, T0 + 60, &m, &r);
	assert_int_equal(m, 3);
	assert_int_equal(r, 9);
	quota_free(q);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_five_a_day),
		cmocka_unit_test(test_recipients_and_never),
		cmocka_unit_test(test_give_back),
		cmocka_unit_test(test_sent_log),
	};

	return cmocka_run_group_tests_name("quota", tests, NULL, NULL);
}
