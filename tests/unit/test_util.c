/*
 * test_util.c: table-driven tests for the parsers and file helpers of
 * proxy/util.c. Each table lists inputs with the expected result; invalid
 * inputs must fail without touching the output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define BAD	(-1)
#define OK	0
#define SENTINEL UINT64_C(0xdeadbeef)

struct u64_case {
	const char	*in;
	uint64_t	 min, max;
	int		 rc;
	uint64_t	 want;
};

static void
test_parse_u64(void **state)
{
	static const struct u64_case cases[] = {
		{ "0", 0, 10, OK, 0 },
		{ "10", 0, 10, OK, 10 },
		{ "007", 0, 10, OK, 7 },
		{ "11", 0, 10, BAD, 0 },
		{ "4", 5, 10, BAD, 0 },
		{ "5", 5, 10, OK, 5 },
		{ "18446744073709551615", 0, UINT64_MAX, OK, UINT64_MAX },
		{ "18446744073709551616", 0, UINT64_MAX, BAD, 0 },
		{ "99999999999999999999", 0, UINT64_MAX, BAD, 0 },
		{ "184467440737095516150", 0, UINT64_MAX, BAD, 0 },
		{ "", 0, 10, BAD, 0 },
		{ "-1", 0, 10, BAD, 0 },
		{ "+1", 0, 10, BAD, 0 },
		{ " 1", 0, 10, BAD, 0 },
		{ "1 ", 0, 10, BAD, 0 },
		{ "1a", 0, 10, BAD, 0 },
		{ "0x1", 0, 10, BAD, 0 },
		{ "1.0", 0, 10, BAD, 0 },
	};
	size_t i;
	uint64_t v;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		v = SENTINEL;
		if (parse_u64(cases[i].in, cases[i].min, cases[i].max, &v) !=
		    cases[i].rc)
			fail_msg("parse_u64(\"%s\"): wrong result", cases[i].in);
		assert_int_equal(v, cases[i].rc == OK ? cases[i].want : SENTINEL);
	}
	assert_int_equal(parse_u64(NULL, 0, 1, &v), BAD);
}

struct num_case {
	const char	*in;
	int		 rc;
	uint64_t	 want;
};

static void
run_num_cases(const char *what, int (*fn)(const char *, uint64_t *),
    const struct num_case *cases, size_t n)
{
	size_t i;
	uint64_t v;

	for (i = 0; i < n; i++) {
		v = SENTINEL;
		if (fn(cases[i].in, &v) != cases[i].rc)
			fail_msg("%s(\"%s\"): expected %s", what, cases[i].in,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == OK && v != cases[i].want)
			fail_msg("%s(\"%s\") = %llu, want %llu", what,
			    cases[i].in, (unsigned long long)v,
			    (unsigned long long)cases[i].want);
		if (cases[i].rc == BAD && v != SENTINEL)
			fail_msg("%s(\"%s\") wrote output on failure", what,
			    cases[i].in);
	}
}

static void
test_parse_duration(void **state)
{
	static const struct num_case cases[] = {
		{ "0", OK, 0 },
		{ "45", OK, 45 },
		{ "30s", OK, 30 },
		{ "5m", OK, 300 },
		{ "2h", OK, 7200 },
		{ "1d", OK, 86400 },
		{ "1D", OK, 86400 },
		{ "10M", OK, 600 },
		{ "18446744073709551615", OK, UINT64_MAX },
		{ "18446744073709551615s", OK, UINT64_MAX },
		{ "307445734561825860m", OK, UINT64_C(18446744073709551600) },
		{ "307445734561825861m", BAD, 0 },
		{ "213503982334601d", OK, UINT64_C(18446744073709526400) },
		{ "213503982334602d", BAD, 0 },
		{ "18446744073709551616", BAD, 0 },
		{ "", BAD, 0 },
		{ "s", BAD, 0 },
		{ "5 m", BAD, 0 },
		{ " 5m", BAD, 0 },
		{ "5m ", BAD, 0 },
		{ "5ms", BAD, 0 },
		{ "5w", BAD, 0 },
		{ "-5s", BAD, 0 },
		{ "1.5h", BAD, 0 },
		{ "1h30m", BAD, 0 },
	};

	run_num_cases("parse_duration", parse_duration, cases, ARRAY_SIZE(cases));
}

static void
test_parse_size(void **state)
{
	static const struct num_case cases[] = {
		{ "0", OK, 0 },
		{ "1000", OK, 1000 },
		{ "512K", OK, 512 * 1024 },
		{ "512k", OK, 512 * 1024 },
		{ "10M", OK, 10 * 1024 * 1024 },
		{ "35m", OK, 35 * 1024 * 1024 },
		{ "1G", OK, UINT64_C(1) << 30 },
		{ "1g", OK, UINT64_C(1) << 30 },
		{ "17179869183G", OK, UINT64_C(17179869183) << 30 },
		{ "17179869184G", BAD, 0 },
		{ "18446744073709551615", OK, UINT64_MAX },
		{ "18014398509481984K", BAD, 0 },
		{ "", BAD, 0 },
		{ "K", BAD, 0 },
		{ "10KB", BAD, 0 },
		{ "10 M", BAD, 0 },
		{ "10T", BAD, 0 },
		{ "1.5M", BAD, 0 },
		{ "-1K", BAD, 0 },
	};

	run_num_cases("parse_size", parse_size, cases, ARRAY_SIZE(cases));
}

struct mask_case {
	const char	*in;
	int		 rc;
	int		 family;
	const char	*addr;		/* inet_pton text of the stored address */
	int		 prefix;
};

static void
test_netmask_parse(void **state)
{
	static const struct mask_case cases[] = {
		{ "10.0.5.0/24", OK, AF_INET, "10.0.5.0", 24 },
		{ "10.0.6.7", OK, AF_INET, "10.0.6.7", 32 },
		{ "10.0.6.7/32", OK, AF_INET, "10.0.6.7", 32 },
		{ "127.0.0.0/8", OK, AF_INET, "127.0.0.0", 8 },
		{ "0.0.0.0/0", OK, AF_INET, "0.0.0.0", 0 },
		{ "10.0.5.128/25", OK, AF_INET, "10.0.5.128", 25 },
		{ "::1/128", OK, AF_INET6, "::1", 128 },
		{ "::1", OK, AF_INET6, "::1", 128 },
		{ "[::1]", OK, AF_INET6, "::1", 128 },
		{ "[fd00::]/8", OK, AF_INET6, "fd00::", 8 },
		{ "fd00::/8", OK, AF_INET6, "fd00::", 8 },
		{ "::/0", OK, AF_INET6, "::", 0 },
		{ "2001:db8::/32", OK, AF_INET6, "2001:db8::", 32 },
		/* IPv4-mapped masks become the IPv4 mask they mean. */
		{ "::ffff:10.0.0.0/104", OK, AF_INET, "10.0.0.0", 8 },
		{ "::ffff:10.1.2.3", OK, AF_INET, "10.1.2.3", 32 },
		{ "::ffff:0.0.0.0/96", OK, AF_INET, "0.0.0.0", 0 },
		{ "10.0.5.1/24", BAD, 0, NULL, 0 },
		{ "10.0.5.0/33", BAD, 0, NULL, 0 },
		{ "10.0.5.0/", BAD, 0, NULL, 0 },
		{ "10.0.5.0/-1", BAD, 0, NULL, 0 },
		{ "10.0.5.0/+8", BAD, 0, NULL, 0 },
		{ "10.0.5.0/ 24", BAD, 0, NULL, 0 },
		{ "10.0.5/24", BAD, 0, NULL, 0 },
		{ "10.0.5.256", BAD, 0, NULL, 0 },
		{ "::1/129", BAD, 0, NULL, 0 },
		{ "fd00::1/8", BAD, 0, NULL, 0 },
		{ "[10.0.0.1]", BAD, 0, NULL, 0 },
		{ "[::1", BAD, 0, NULL, 0 },
		{ "[::1]x", BAD, 0, NULL, 0 },
		{ "[::1]/", BAD, 0, NULL, 0 },
		{ "", BAD, 0, NULL, 0 },
		{ "/8", BAD, 0, NULL, 0 },
		{ "example.com", BAD, 0, NULL, 0 },
		{ " 10.0.0.1", BAD, 0, NULL, 0 },
		{ "10.0.0.1 ", BAD, 0, NULL, 0 },
		{ "1111:2222:3333:4444:5555:6666:7777:8888/128 and more text", BAD,
		    0, NULL, 0 },
	};
	struct netmask m, sentinel;
	uint8_t want[16];
	size_t i;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		m = sentinel;
		if (netmask_parse(cases[i].in, &m) != cases[i].rc)
			fail_msg("netmask_parse(\"%s\"): expected %s", cases[i].in,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == BAD) {
			assert_memory_equal(&m, &sentinel, sizeof(m));
			continue;
		}
		assert_int_equal(m.family, cases[i].family);
		assert_int_equal(m.prefix, cases[i].prefix);
		memset(want, 0, sizeof(want));
		assert_int_equal(inet_pton(cases[i].family, cases[i].addr, want), 1);
		assert_memory_equal(m.addr, want, sizeof(want));
		assert_int_equal(netmask_is_any(&m), cases[i].prefix == 0);
	}
}

static void
make_sa(const char *ip, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	sin6->sin6_family = AF_INET6;
}

struct match_case {
	const char	*mask;
	const char	*ip;
	int		 match;
};

static void
test_netmask_match(void **state)
{
	static const struct match_case cases[] = {
		{ "10.0.5.0/24", "10.0.5.0", 1 },
		{ "10.0.5.0/24", "10.0.5.255", 1 },
		{ "10.0.5.0/24", "10.0.6.0", 0 },
		{ "10.0.5.0/24", "10.0.4.255", 0 },
		{ "10.0.5.128/25", "10.0.5.127", 0 },
		{ "10.0.5.128/25", "10.0.5.128", 1 },
		{ "10.0.6.7", "10.0.6.7", 1 },
		{ "10.0.6.7", "10.0.6.8", 0 },
		{ "0.0.0.0/0", "192.0.2.1", 1 },
		{ "0.0.0.0/0", "2001:db8::1", 0 },
		{ "127.0.0.0/8", "127.1.2.3", 1 },
		/* IPv4-mapped IPv6 peers count as IPv4. */
		{ "10.0.5.0/24", "::ffff:10.0.5.9", 1 },
		{ "10.0.5.0/24", "::ffff:10.0.7.9", 0 },
		{ "127.0.0.0/8", "::ffff:127.0.0.1", 1 },
		{ "::/0", "::ffff:10.0.5.9", 0 },
		{ "::ffff:10.0.0.0/104", "10.9.9.9", 1 },
		{ "::ffff:10.0.0.0/104", "::ffff:10.9.9.9", 1 },
		{ "::1/128", "::1", 1 },
		{ "::1/128", "::2", 0 },
		{ "::1/128", "127.0.0.1", 0 },
		{ "fd00::/8", "fdff::1", 1 },
		{ "fd00::/8", "fe00::1", 0 },
		{ "2001:db8::/33", "2001:db8:7fff::1", 1 },
		{ "2001:db8::/33", "2001:db8:8000::1", 0 },
		{ "::/0", "2001:db8::1", 1 },
		{ "10.0.5.0/24", "::a00:509", 0 },	/* IPv4-compatible is not mapped */
	};
	struct netmask m;
	struct sockaddr_storage ss;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(netmask_parse(cases[i].mask, &m), 0);
		make_sa(cases[i].ip, &ss);
		if (netmask_match(&m, (struct sockaddr *)&ss) != cases[i].match)
			fail_msg("netmask_match(%s, %s) != %d", cases[i].mask,
			    cases[i].ip, cases[i].match);
	}
	ss.ss_family = AF_UNIX;
	assert_int_equal(netmask_match(&m, (struct sockaddr *)&ss), 0);
	assert_int_equal(netmask_match(&m, NULL), 0);
}

static void
test_sockaddr_ntop(void **state)
{
	static const struct {
		const char *ip, *want;
	} cases[] = {
		{ "10.0.5.9", "10.0.5.9" },
		{ "::ffff:10.0.5.9", "10.0.5.9" },
		{ "::1", "::1" },
		{ "2001:db8::1", "2001:db8::1" },
	};
	struct sockaddr_storage ss;
	char buf[INET6_ADDRSTRLEN], small[4];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		make_sa(cases[i].ip, &ss);
		sockaddr_ntop((struct sockaddr *)&ss, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].want);
	}
	ss.ss_family = AF_UNIX;
	sockaddr_ntop((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "?");
	make_sa("10.0.5.9", &ss);
	sockaddr_ntop((struct sockaddr *)&ss, small, sizeof(small));
	assert_non_null(memchr(small, '\0', sizeof(small)));
}

struct listen_case {
	const char	*in;
	int		 rc;
	int		 family;
	const char	*ip;
	uint16_t	 port;
};

static void
test_listen_addr_parse(void **state)
{
	static const struct listen_case cases[] = {
		{ "0.0.0.0:2525", OK, AF_INET, "0.0.0.0", 2525 },
		{ "127.0.0.1:2525", OK, AF_INET, "127.0.0.1", 2525 },
		{ "*:25", OK, AF_INET, "0.0.0.0", 25 },
		{ "[::]:2525", OK, AF_INET6, "::", 2525 },
		{ "[::1]:8025", OK, AF_INET6, "::1", 8025 },
		{ "10.0.0.1:65535", OK, AF_INET, "10.0.0.1", 65535 },
		{ "10.0.0.1:1", OK, AF_INET, "10.0.0.1", 1 },
		{ "10.0.0.1:0", BAD, 0, NULL, 0 },
		{ "10.0.0.1:65536", BAD, 0, NULL, 0 },
		{ "10.0.0.1:", BAD, 0, NULL, 0 },
		{ "10.0.0.1", BAD, 0, NULL, 0 },
		{ ":2525", BAD, 0, NULL, 0 },
		{ "::1:2525", BAD, 0, NULL, 0 },
		{ "[::1]", BAD, 0, NULL, 0 },
		{ "[::1]2525", BAD, 0, NULL, 0 },
		{ "[10.0.0.1]:25", BAD, 0, NULL, 0 },
		{ "[*]:25", BAD, 0, NULL, 0 },
		{ "localhost:25", BAD, 0, NULL, 0 },
		{ "10.0.0.1:25x", BAD, 0, NULL, 0 },
		{ "10.0.0.1: 25", BAD, 0, NULL, 0 },
		{ "", BAD, 0, NULL, 0 },
	};
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	char ip[INET6_ADDRSTRLEN];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		len = 0;
		if (listen_addr_parse(cases[i].in, &ss, &len) != cases[i].rc)
			fail_msg("listen_addr_parse(\"%s\"): expected %s",
			    cases[i].in, cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == BAD) {
			assert_int_equal(len, 0);
			continue;
		}
		assert_int_equal(ss.ss_family, cases[i].family);
		if (cases[i].family == AF_INET) {
			assert_int_equal(len, sizeof(*sin));
			assert_int_equal(ntohs(sin->sin_port), cases[i].port);
			inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		} else {
			assert_int_equal(len, sizeof(*sin6));
			assert_int_equal(ntohs(sin6->sin6_port), cases[i].port);
			inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		}
		assert_string_equal(ip, cases[i].ip);
	}
}

struct hostport_case {
	const char	*in;
	int		 rc;
	const char	*host;
	uint16_t	 port;
};

static void
test_hostport_parse(void **state)
{
	static const struct hostport_case cases[] = {
		{ "smtp.gmail.com:587", OK, "smtp.gmail.com", 587 },
		{ "smtp.gmail.com:465", OK, "smtp.gmail.com", 465 },
		{ "localhost:25", OK, "localhost", 25 },
		{ "192.0.2.1:25", OK, "192.0.2.1", 25 },
		{ "[2001:db8::1]:25", OK, "2001:db8::1", 25 },
		{ "mail-1.example.org:65535", OK, "mail-1.example.org", 65535 },
		{ "smtp.gmail.com", BAD, NULL, 0 },
		{ "smtp.gmail.com:", BAD, NULL, 0 },
		{ "smtp.gmail.com:0", BAD, NULL, 0 },
		{ "smtp.gmail.com:65536", BAD, NULL, 0 },
		{ ":25", BAD, NULL, 0 },
		{ "2001:db8::1:25", BAD, NULL, 0 },
		{ "[not-v6]:25", BAD, NULL, 0 },
		{ "bad host:25", BAD, NULL, 0 },
		{ "bad_host:25", BAD, NULL, 0 },
		{ "a..b:25", BAD, NULL, 0 },
		{ ".a:25", BAD, NULL, 0 },
		{ "-a:25", BAD, NULL, 0 },
	};
	char host[64];
	uint16_t port;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		port = 0;
		if (hostport_parse(cases[i].in, host, sizeof(host), &port) !=
		    cases[i].rc)
			fail_msg("hostport_parse(\"%s\"): expected %s", cases[i].in,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == OK) {
			assert_string_equal(host, cases[i].host);
			assert_int_equal(port, cases[i].port);
		} else
			assert_int_equal(port, 0);
	}
	/* The host must fit the caller's buffer. */
	assert_int_equal(hostport_parse("smtp.gmail.com:587", host, 8, &port), -1);
}

static void
test_hostname_valid(void **state)
{
	static const struct {
		const char *in;
		int valid;
	} cases[] = {
		{ "localhost", 1 },
		{ "smtp.gmail.com", 1 },
		{ "relay.example.lan", 1 },
		{ "mail-1.example.org", 1 },
		{ "a", 1 },
		{ "1a.example", 1 },
		{ "example.c0m", 1 },
		{ "123.example", 1 },
		{ "xn--bcher-kva.example", 1 },
		{ "012345678901234567890123456789012345678901234567890123456789012.a", 1 },
		{ "0123456789012345678901234567890123456789012345678901234567890123.a", 0 },
		{ "", 0 },
		{ ".", 0 },
		{ "a.", 0 },
		{ ".a", 0 },
		{ "a..b", 0 },
		{ "-a.example", 0 },
		{ "a-.example", 0 },
		{ "a.-b", 0 },
		{ "under_score.example", 0 },
		{ "sp ace.example", 0 },
		{ "10.0.0.1", 0 },
		{ "123", 0 },
		{ "example.123", 0 },
		{ "[::1]", 0 },
		{ "b\xc3\xbc" "cher.example", 0 },
	};
	char longname[300];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++)
		if (hostname_valid(cases[i].in) != cases[i].valid)
			fail_msg("hostname_valid(\"%s\") != %d", cases[i].in,
			    cases[i].valid);
	/* 253 characters is the limit. */
	memset(longname, 'a', sizeof(longname));
	for (i = 1; i < 253; i += 2)
		longname[i] = '.';
	longname[253] = '\0';
	assert_int_equal(hostname_valid(longname), 1);
	longname[253] = 'a';
	longname[254] = '\0';
	longname[252] = '.';
	assert_int_equal(hostname_valid(longname), 0);
}

static void
test_time_rfc3339(void **state)
{
	static const struct {
		time_t t;
		const char *want;
	} cases[] = {
		{ 0, "1970-01-01T00:00:00Z" },
		{ 1795671656, "2026-11-26T05:40:56Z" },
		{ 951782400, "2000-02-29T00:00:00Z" },
		{ 253402300799, "9999-12-31T23:59:59Z" },
	};
	char buf[21], small[10];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		time_rfc3339(cases[i].t, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].want);
	}
	time_rfc3339(0, small, sizeof(small));
	assert_string_equal(small, "");
}

struct time_case {
	const char	*in;
	int		 rc;
	time_t		 want;
};

#define NOW	((time_t)1795671656)	/* 2026-11-26T05:40:56Z */

static void
test_time_parse(void **state)
{
	static const struct time_case cases[] = {
		{ "2026-11-26T05:40:56Z", OK, 1795671656 },
		{ "2026-11-26t05:40:56z", OK, 1795671656 },
		{ "2026-11-26 05:40:56Z", OK, 1795671656 },
		{ "2026-11-26T05:40:56.123456Z", OK, 1795671656 },
		{ "2026-11-26T06:40:56+01:00", OK, 1795671656 },
		{ "2026-11-26T00:10:56-05:30", OK, 1795671656 },
		{ "2026-11-26T05:40:56.5+00:00", OK, 1795671656 },
		{ "2026-11-26", OK, 1795651200 },
		{ "1970-01-01T00:00:00Z", OK, 0 },
		{ "1969-12-31T23:59:59Z", OK, -1 },
		{ "2000-02-29", OK, 951782400 },
		{ "2024-12-31T23:59:60Z", OK, 1735689600 },
		{ "2h", OK, NOW - 7200 },
		{ "7d", OK, NOW - 7 * 86400 },
		{ "30m", OK, NOW - 1800 },
		{ "45s", OK, NOW - 45 },
		{ "0s", OK, NOW },
		{ "3600", BAD, 0 },		/* relative needs a unit */
		{ "2w", BAD, 0 },
		{ "99999999999999999999d", BAD, 0 },
		{ "18446744073709551615s", BAD, 0 },
		{ "2026-11-26T05:40:56", BAD, 0 },	/* no offset */
		{ "2026-11-26T05:40Z", BAD, 0 },
		{ "2026-11-26T05:40:56.Z", BAD, 0 },
		{ "2026-11-26T24:00:00Z", BAD, 0 },
		{ "2026-11-26T23:60:00Z", BAD, 0 },
		{ "2026-11-26T23:59:61Z", BAD, 0 },
		{ "2026-11-26T05:40:56+24:00", BAD, 0 },
		{ "2026-11-26T05:40:56+01:60", BAD, 0 },
		{ "2026-11-26T05:40:56+0100", BAD, 0 },
		{ "2026-11-26T05:40:56Zx", BAD, 0 },
		{ "2026-13-01", BAD, 0 },
		{ "2026-00-01", BAD, 0 },
		{ "2026-11-31", BAD, 0 },
		{ "2026-02-29", BAD, 0 },
		{ "1900-02-29", BAD, 0 },
		{ "2026-11-00", BAD, 0 },
		{ "2026-1-26", BAD, 0 },
		{ "26-11-26", BAD, 0 },
		{ "2026-11-26x", BAD, 0 },
		{ "2026-11-26T", BAD, 0 },
		{ "", BAD, 0 },
		{ "yesterday", BAD, 0 },
		{ "-2h", BAD, 0 },
	};
	time_t t;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		t = 12345;
		if (time_parse(cases[i].in, NOW, &t) != cases[i].rc)
			fail_msg("time_parse(\"%s\"): expected %s", cases[i].in,
			    cases[i].rc == OK ? "success" : "failure");
		if (cases[i].rc == OK && t != cases[i].want)
			fail_msg("time_parse(\"%s\") = %lld, want %lld",
			    cases[i].in, (long long)t, (long long)cases[i].want);
		if (cases[i].rc == BAD)
			assert_int_equal(t, 12345);
	}
}

struct trim_case {
	const char	*in;
	const char	*want;
};

static void
test_str_trim(void **state)
{
	static const struct trim_case cases[] = {
		{ "", "" },
		{ "a", "a" },
		{ "  a", "a" },
		{ "a  ", "a" },
		{ " \t a b \r\n", "a b" },
		{ " \t\r\n\v\f", "" },
		{ "a\t\tb", "a\t\tb" },
	};
	char buf[64], *r;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		strlcpy(buf, cases[i].in, sizeof(buf));
		r = str_trim(buf);
		assert_ptr_equal(r, buf);
		assert_string_equal(buf, cases[i].want);
	}
}

/* A fresh scratch directory per test. */
static int
tmpdir_setup(void **state)
{
	char *dir;

	if ((dir = strdup("/tmp/test_util.XXXXXX")) == NULL)
		return -1;
	if (mkdtemp(dir) == NULL) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int
tmpdir_teardown(void **state)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", (char *)*state);
	if (system(cmd) != 0)
		return -1;
	free(*state);
	return 0;
}

static int
dir_entries(const char *dir)
{
	char cmd[256];
	FILE *f;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	if ((f = popen(cmd, "r")) == NULL)
		return -1;
	if (fscanf(f, "%d", &n) != 1)
		n = -1;
	pclose(f);
	return n;
}

static void
test_file_write_read(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX];
	struct stat st;
	uint8_t *buf, big[100000];
	size_t len, i;

	snprintf(path, sizeof(path), "%s/f", dir);
	assert_int_equal(file_write_atomic(path, "hello", 5, 0600), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 5);

	/* Replacing keeps only the new content and the new mode; no temp files left. */
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(file_write_atomic(path, big, sizeof(big), 0640), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(dir_entries(dir), 1);

	assert_int_equal(file_read_all(path, sizeof(big), &buf, &len), 0);
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(buf, big, sizeof(big));
	assert_int_equal(buf[len], '\0');
	free(buf);

	/* One byte over the limit is refused with EFBIG. */
	buf = NULL;
	errno = 0;
	assert_int_equal(file_read_all(path, sizeof(big) - 1, &buf, &len), -1);
	assert_int_equal(errno, EFBIG);
	assert_null(buf);

	/* An empty file reads as zero bytes, NUL-terminated. */
	assert_int_equal(file_write_atomic(path, "", 0, 0600), 0);
	assert_int_equal(file_read_all(path, 10, &buf, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(buf[0], '\0');
	free(buf);

	/* A missing file keeps errno. */
	snprintf(path, sizeof(path), "%s/missing", dir);
	errno = 0;
	assert_int_equal(file_read_all(path, 10, &buf, &len), -1);
	assert_int_equal(errno, ENOENT);

	/* A directory cannot be read as a file. */
	errno = 0;
	assert_int_equal(file_read_all(dir, 10, &buf, &len), -1);
	assert_int_equal(errno, EISDIR);
}

static void
test_file_read_pipe(void **state)
{
	uint8_t *buf;
	size_t len;

	/* Non-regular files have no size up front; the limit still holds. */
	assert_int_equal(file_read_all("/proc/self/status", 1 << 20, &buf, &len), 0);
	assert_true(len > 0);
	assert_int_equal(strlen((char *)buf), len);
	free(buf);
	errno = 0;
	assert_int_equal(file_read_all("/proc/self/status", 10, &buf, &len), -1);
	assert_int_equal(errno, EFBIG);
}

static void
test_file_write_fail(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], sub[PATH_MAX / 2];

	/* A missing directory: ENOENT, nothing created. */
	snprintf(path, sizeof(path), "%s/nodir/f", dir);
	errno = 0;
	assert_int_equal(file_write_atomic(path, "x", 1, 0600), -1);
	assert_int_equal(errno, ENOENT);

	/* Renaming over a directory fails after the temp file exists: it is removed. */
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(path, sizeof(path), "%s/f", sub);
	assert_int_equal(mkdir(path, 0700), 0);
	errno = 0;
	assert_int_equal(file_write_atomic(path, "x", 1, 0600), -1);
	assert_int_equal(errno, EISDIR);
	assert_int_equal(dir_entries(sub), 1);

	/* A relative path writes into the current directory. */
	assert_int_equal(chdir(dir), 0);
	assert_int_equal(file_write_atomic("rel", "abc", 3, 0600), 0);
	assert_int_equal(access("rel", R_OK), 0);
	assert_int_equal(chdir("/"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_netmask_parse),
		cmocka_unit_test(test_netmask_match),
		cmocka_unit_test(test_sockaddr_ntop),
		cmocka_unit_test(test_listen_addr_parse),
		cmocka_unit_test(test_hostport_parse),
		cmocka_unit_test(test_hostname_valid),
		cmocka_unit_test(test_time_rfc3339),
		cmocka_unit_test(test_time_parse),
		cmocka_unit_test(test_str_trim),
		cmocka_unit_test_setup_teardown(test_file_write_read,
		    tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test(test_file_read_pipe),
		cmocka_unit_test_setup_teardown(test_file_write_fail,
		    tmpdir_setup, tmpdir_teardown),
	};

	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
