/*
 * test_queue.c: the queue's rules as tables: what an upstream outcome means
 * for a queued message (queue_classify), and the retry schedule with its
 * lifetime (queue_retry_delay, queue_next_attempt).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "queue.h"
#include "smtp_client.h"
#include "util.h"

struct classify_case {
	const char		*name;
	enum smtp_stage		stage;
	enum smtp_error		error;
	int			code;
	const char		*enhanced;
	int			temporary;
	int			auth_failed;
	enum queue_verdict	want;
};

static const struct classify_case classify_cases[] = {
	{ "delivered", SMTP_STAGE_DATA, SMTP_ERR_NONE, 250, "2.0.0", 0, 0, QUEUE_DELIVERED },
	{ "535 bad credentials", SMTP_STAGE_AUTH, SMTP_ERR_AUTH_REFUSED, 535, "5.7.8", 0, 1,
	  QUEUE_AUTH },
	{ "534 app password required", SMTP_STAGE_AUTH, SMTP_ERR_AUTH_REFUSED, 534, "5.7.9", 0,
	  1, QUEUE_AUTH },
	{ "550 5.4.5 daily limit at DATA", SMTP_STAGE_DATA, SMTP_ERR_REPLY, 550, "5.4.5", 0, 0,
	  QUEUE_LIMIT },
	{ "550 5.4.5 daily limit at MAIL", SMTP_STAGE_MAIL, SMTP_ERR_REPLY, 550, "5.4.5", 0, 0,
	  QUEUE_LIMIT },
	{ "421 greeting", SMTP_STAGE_CONNECT, SMTP_ERR_REPLY, 421, "4.7.0", 1, 0, QUEUE_RATE },
	{ "421 mid-transaction", SMTP_STAGE_DATA, SMTP_ERR_REPLY, 421, "", 1, 0, QUEUE_RATE },
	{ "454 too many logins", SMTP_STAGE_AUTH, SMTP_ERR_REPLY, 454, "4.7.0", 1, 0,
	  QUEUE_RATE },
	{ "451 4.7.1 rate", SMTP_STAGE_RCPT, SMTP_ERR_REPLY, 451, "4.7.1", 1, 0, QUEUE_RATE },
	{ "451 4.3.0 temporary", SMTP_STAGE_DATA, SMTP_ERR_REPLY, 451, "4.3.0", 1, 0,
	  QUEUE_TEMPORARY },
	{ "452 4.5.3 too many rcpts", SMTP_STAGE_RCPT, SMTP_ERR_REPLY, 452, "4.5.3", 1, 0,
	  QUEUE_TEMPORARY },
	{ "554 5.6.0 malformed", SMTP_STAGE_DATA, SMTP_ERR_REPLY, 554, "5.6.0", 0, 0,
	  QUEUE_PERMANENT },
	{ "553 bad recipient", SMTP_STAGE_RCPT, SMTP_ERR_REPLY, 553, "5.1.3", 0, 0,
	  QUEUE_PERMANENT },
	{ "5xx to RSET is the session's", SMTP_STAGE_MAIL, SMTP_ERR_REPLY, 502, "5.5.1", 1, 0,
	  QUEUE_TEMPORARY },
	{ "5xx greeting is the server's", SMTP_STAGE_CONNECT, SMTP_ERR_REPLY, 554, "", 0, 0,
	  QUEUE_TEMPORARY },
	{ "5xx to EHLO is the server's", SMTP_STAGE_TLS, SMTP_ERR_REPLY, 501, "5.5.4", 0, 0,
	  QUEUE_TEMPORARY },
	{ "network", SMTP_STAGE_CONNECT, SMTP_ERR_NETWORK, 0, "", 1, 0, QUEUE_TEMPORARY },
	{ "dropped in DATA", SMTP_STAGE_DATA, SMTP_ERR_NETWORK, 0, "", 1, 0, QUEUE_TEMPORARY },
	{ "timeout", SMTP_STAGE_MAIL, SMTP_ERR_TIMEOUT, 0, "", 1, 0, QUEUE_TEMPORARY },
	{ "TLS verify", SMTP_STAGE_TLS, SMTP_ERR_TLS_VERIFY, 0, "", 0, 0, QUEUE_TEMPORARY },
	{ "no STARTTLS", SMTP_STAGE_TLS, SMTP_ERR_NO_STARTTLS, 0, "", 0, 0, QUEUE_TEMPORARY },
	{ "no credential", SMTP_STAGE_AUTH, SMTP_ERR_CREDENTIAL, 0, "", 1, 0, QUEUE_TEMPORARY },
	{ "too big", SMTP_STAGE_MAIL, SMTP_ERR_TOO_BIG, 552, "5.3.4", 0, 0, QUEUE_PERMANENT },
	{ "needs SMTPUTF8", SMTP_STAGE_MAIL, SMTP_ERR_UNSUPPORTED, 553, "5.6.7", 0, 0,
	  QUEUE_PERMANENT },
};

static void
test_classify(void **state)
{
	struct smtp_outcome o;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(classify_cases); i++) {
		const struct classify_case *c = &classify_cases[i];

		memset(&o, 0, sizeof(o));
		o.stage = c->stage;
		o.error = c->error;
		o.code = c->code;
		strlcpy(o.enhanced, c->enhanced, sizeof(o.enhanced));
		o.temporary = c->temporary;
		o.auth_failed = c->auth_failed;
		if (queue_classify(&o) != c->want)
			fail_msg("%s: got %s, want %s", c->name,
			    queue_verdict_name(queue_classify(&o)), queue_verdict_name(c->want));
	}
}

static void
test_retry_delay(void **state)
{
	static const uint64_t sched[] = { 60, 300, 900, 3600 };
	static const struct { uint32_t attempts; uint64_t want; } cases[] = {
		{ 0, 60 }, { 1, 60 }, { 2, 300 }, { 3, 900 }, { 4, 3600 }, { 5, 3600 },
		{ 1000, 3600 }, { UINT32_MAX, 3600 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++)
		assert_int_equal(queue_retry_delay(sched, ARRAY_SIZE(sched), cases[i].attempts),
		    cases[i].want);
	/* One step repeats; an empty schedule still waits. */
	assert_int_equal(queue_retry_delay(sched, 1, 7), 60);
	assert_int_equal(queue_retry_delay(NULL, 0, 3), 60);
}

static void
test_next_attempt(void **state)
{
	static const uint64_t sched[] = { 60, 300, 900, 3600 };
	const uint64_t life = 5 * 86400;
	const time_t born = 1000000;
	static const struct {
		uint32_t	attempts;
		time_t		now;
		int		rc;
		time_t		next;
	} cases[] = {
		{ 1, born + 5, 0, born + 65 },			/* first retry after 1m */
		{ 2, born + 70, 0, born + 370 },
		{ 4, born + 3000, 0, born + 6600 },
		{ 9, born + 4 * 86400, 0, born + 4 * 86400 + 3600 },
		/* never past the lifetime: the last try is at its end */
		{ 9, born + 5 * 86400 - 100, 0, born + 5 * 86400 },
		{ 9, born + 5 * 86400, -1, 0 },			/* over: it fails */
		{ 9, born + 6 * 86400, -1, 0 },
	};
	time_t next;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		next = 0;
		assert_int_equal(queue_next_attempt(sched, ARRAY_SIZE(sched), life, born,
		    cases[i].attempts, cases[i].now, &next), cases[i].rc);
		if (cases[i].rc == 0)
			assert_int_equal(next, cases[i].next);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_retry_delay),
		cmocka_unit_test(test_next_attempt),
	};

	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
