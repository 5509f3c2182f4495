/* test_msg_header.c: header lookup for the audit log, table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "msg_header.h"
#include "util.h"

struct case_ {
	const char	*msg;
	const char	*name;
	int		 rc;
	const char	*want;
};

static const struct case_ cases[] = {
	{ "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n", "Subject", 0, "hi" },
	{ "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n", "subject", 0, "hi" },
	{ "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n", "From", 0, "a@b" },
	{ "From: a@b\r\n\r\nSubject: in body\r\n", "Subject", -1, "" },
	{ "Subject: two\r\n\tlines\r\nX: y\r\n\r\n", "Subject", 0, "two\tlines" },
	{ "Subject: a\r\n continued\r\n more\r\n\r\n", "Subject", 0, "a continued more" },
	{ "Subject :  spaced  \r\n\r\n", "Subject", 0, "spaced" },
	{ "Subjects: no\r\n\r\n", "Subject", -1, "" },
	{ "X-Subject: no\r\n\r\n", "Subject", -1, "" },
	{ "Subject:\r\n\r\n", "Subject", 0, "" },
	{ "Message-ID: <id@host>\r\nSubject: s\r\n\r\n", "Message-ID", 0, "<id@host>" },
	{ "Subject: first\r\nSubject: second\r\n\r\n", "Subject", 0, "first" },
	{ "Subject: no end of line", "Subject", 0, "no end of line" },
	{ "", "Subject", -1, "" },
	{ "\r\nSubject: after empty line\r\n", "Subject", -1, "" },
};

static void
test_table(void **state)
{
	char out[64];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		int rc = msg_header_get(cases[i].msg, strlen(cases[i].msg), cases[i].name,
		    out, sizeof(out));

		assert_int_equal(rc, cases[i].rc);
		if (rc == 0)
			assert_string_equal(out, cases[i].want);
	}
}

static void
test_bounded_output(void **state)
{
	const char *m = "Subject: 0123456789abcdef\r\n\r\n";
	char out[8];

	(void)state;
	assert_int_equal(msg_header_get(m, strlen(m), "Subject", out, sizeof(out)), 0);
	assert_string_equal(out, "0123456");
}

static void
test_len_respected(void **state)
{
	const char *m = "Subject: abc\r\n\r\n";
	char out[32];

	(void)state;
	/* Only "Subj" is inside len: no field. */
	assert_int_equal(msg_header_get(m, 4, "Subject", out, sizeof(out)), -1);
	/* Cut inside the value: what is inside len. */
	assert_int_equal(msg_header_get(m, 11, "Subject", out, sizeof(out)), 0);
	assert_string_equal(out, "ab");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_bounded_output),
		cmocka_unit_test(test_len_respected),
	};

	return cmocka_run_group_tests_name("msg_header", tests, NULL, NULL);
}
