/*
 * util.c: small shared helpers used by every module: strict parsers for
 * numbers, durations, sizes, network masks, listen and host:port addresses
 * and RFC 3339 times; durable atomic file writes; bounded file reads.
 *
 * Every parser accepts exactly the documented syntax (no spaces, no signs,
 * no trailing garbage), checks for overflow, and either fills its output
 * and returns 0 or leaves it alone and returns -1.
 */
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest text form we accept for a mask or an address (with brackets and prefix). */
#define UTIL_ADDR_TEXT_MAX	(INET6_ADDRSTRLEN + 8)
/* A hostname as used on the wire (RFC 1035 limits a name to 253 octets). */
#define UTIL_HOSTNAME_MAX	253
#define UTIL_LABEL_MAX		63
/* First read size for files whose size fstat cannot tell (pipes, /proc). */
#define UTIL_READ_CHUNK		4096

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	const char *p;

	if (s == NULL || *s == '\0')
		return -1;
	for (p = s; *p != '\0'; p++) {
		if (!is_digit((unsigned char)*p))
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Split "123x" into the number and a unit suffix of at most unitmax
 * characters; the unit may be empty. The digits are overflow-checked.
 */
static int
parse_number_unit(const char *s, uint64_t *num, char *unit, size_t unitmax)
{
	char digits[32];
	size_t n = 0, u;

	if (s == NULL)
		return -1;
	while (is_digit((unsigned char)s[n]))
		n++;
	if (n == 0 || n >= sizeof(digits))
		return -1;
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (parse_u64(digits, 0, UINT64_MAX, num) == -1)
		return -1;
	u = strlen(s + n);
	if (u > unitmax)
		return -1;
	memcpy(unit, s + n, u);
	unit[u] = '\0';
	return 0;
}

static int
mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return -1;
	*out = a * b;
	return 0;
}

int
parse_duration(const char *s, uint64_t *out_seconds)
{
	uint64_t n, mult;
	char unit[2];

	if (parse_number_unit(s, &n, unit, 1) == -1)
		return -1;
	switch (tolower((unsigned char)unit[0])) {
	case '\0':
	case 's':
		mult = 1;
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	case 'd':
		mult = 86400;
		break;
	default:
		return -1;
	}
	return mul_u64(n, mult, out_seconds);
}

int
parse_size(const char *s, uint64_t *out_bytes)
{
	uint64_t n, mult;
	char unit[2];

	if (parse_number_unit(s, &n, unit, 1) == -1)
		return -1;
	switch (tolower((unsigned char)unit[0])) {
	case '\0':
		mult = 1;
		break;
	case 'k':
		mult = 1024;
		break;
	case 'm':
		mult = 1024 * 1024;
		break;
	case 'g':
		mult = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	return mul_u64(n, mult, out_bytes);
}

/* Does any bit at or after position prefix differ from zero? */
static int
host_bits_set(const uint8_t *addr, int nbytes, int prefix)
{
	int i, bit;

	for (i = prefix / 8; i < nbytes; i++) {
		uint8_t b = addr[i];

		if (i == prefix / 8) {
			bit = prefix % 8;
			b &= (uint8_t)(0xff >> bit);
		}
		if (b != 0)
			return 1;
	}
	return 0;
}

static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

int
netmask_parse(const char *s, struct netmask *out)
{
	char buf[UTIL_ADDR_TEXT_MAX];
	char *addr, *slash, *close;
	struct netmask m;
	uint64_t prefix;
	int maxprefix, bracketed = 0;

	if (s == NULL || strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	memset(&m, 0, sizeof(m));
	addr = buf;
	slash = NULL;
	if (buf[0] == '[') {
		/* "[v6]" or "[v6]/prefix". */
		if ((close = strchr(buf, ']')) == NULL)
			return -1;
		*close = '\0';
		addr = buf + 1;
		if (close[1] == '/')
			slash = close + 1;
		else if (close[1] != '\0')
			return -1;
		bracketed = 1;
	} else if ((slash = strchr(buf, '/')) != NULL)
		*slash = '\0';

	if (!bracketed && inet_pton(AF_INET, addr, m.addr) == 1) {
		m.family = AF_INET;
		maxprefix = 32;
	} else if (inet_pton(AF_INET6, addr, m.addr) == 1) {
		m.family = AF_INET6;
		maxprefix = 128;
	} else
		return -1;

	if (slash != NULL) {
		if (parse_u64(slash + 1, 0, (uint64_t)maxprefix, &prefix) == -1)
			return -1;
		m.prefix = (int)prefix;
	} else
		m.prefix = maxprefix;

	if (host_bits_set(m.addr, maxprefix / 8, m.prefix))
		return -1;

	/*
	 * An IPv4-mapped mask (::ffff:10.0.0.0/104) is stored as the IPv4 mask
	 * it means, because netmask_match() compares mapped peers as IPv4.
	 */
	if (m.family == AF_INET6 && m.prefix >= 96 &&
	    memcmp(m.addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
		memmove(m.addr, m.addr + 12, 4);
		memset(m.addr + 4, 0, 12);
		m.family = AF_INET;
		m.prefix -= 96;
	}
	*out = m;
	return 0;
}

/* The peer's address bytes, an IPv4-mapped IPv6 address as IPv4. */
static int
sockaddr_bytes(const struct sockaddr *sa, int *family, const uint8_t **bytes)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	if (sa == NULL)
		return -1;
	switch (sa->sa_family) {
	case AF_INET:
		sin = (const struct sockaddr_in *)(const void *)sa;
		*family = AF_INET;
		*bytes = (const uint8_t *)&sin->sin_addr;
		return 0;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			*family = AF_INET;
			*bytes = sin6->sin6_addr.s6_addr + 12;
		} else {
			*family = AF_INET6;
			*bytes = sin6->sin6_addr.s6_addr;
		}
		return 0;
	default:
		return -1;
	}
}

int
netmask_match(const struct netmask *m, const struct sockaddr *sa)
{
	const uint8_t *a;
	int family, full, rest;

	if (m == NULL || sockaddr_bytes(sa, &family, &a) == -1)
		return 0;
	if (family != m->family)
		return 0;
	full = m->prefix / 8;
	rest = m->prefix % 8;
	if (memcmp(a, m->addr, (size_t)full) != 0)
		return 0;
	if (rest != 0) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		if ((a[full] & mask) != (m->addr[full] & mask))
			return 0;
	}
	return 1;
}

int
netmask_is_any(const struct netmask *m)
{
	return m != NULL && m->prefix == 0;
}

void
sockaddr_ntop(const struct sockaddr *sa, char *buf, size_t len)
{
	const uint8_t *a;
	int family;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (sockaddr_bytes(sa, &family, &a) == -1 ||
	    inet_ntop(family, a, buf, (socklen_t)len) == NULL)
		strlcpy(buf, "?", len);
}

int
hostname_valid(const char *h)
{
	size_t i, label = 0, len = strlen(h);
	int numeric = 1;

	if (len == 0 || len > UTIL_HOSTNAME_MAX)
		return 0;
	for (i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)h[i];

		if (c == '.' || c == '\0') {
			/* End of a label: not empty, not ending in '-'. */
			if (label == 0 || h[i - 1] == '-')
				return 0;
			label = 0;
			if (c == '.')
				numeric = 1;
			continue;
		}
		if (!isalnum(c) && c != '-')
			return 0;
		if (label == 0 && c == '-')
			return 0;
		if (++label > UTIL_LABEL_MAX)
			return 0;
		if (!is_digit(c))
			numeric = 0;
	}
	/* An all-numeric top label would read as an address (RFC 3696 section 2). */
	return !numeric;
}

/*
 * Split "host:port" or "[v6]:port" in place. *host points into buf (brackets
 * removed); *bracketed says whether they were there.
 */
static int
split_hostport(char *buf, char **host, int *bracketed, uint16_t *port)
{
	char *colon, *close;
	uint64_t p;

	if (buf[0] == '[') {
		if ((close = strchr(buf, ']')) == NULL || close[1] != ':')
			return -1;
		*close = '\0';
		*host = buf + 1;
		colon = close + 1;
		*bracketed = 1;
	} else {
		if ((colon = strrchr(buf, ':')) == NULL)
			return -1;
		*colon = '\0';
		/* An unbracketed IPv6 address with a port is ambiguous. */
		if (strchr(buf, ':') != NULL)
			return -1;
		*host = buf;
		*bracketed = 0;
	}
	if (parse_u64(colon + 1, 1, 65535, &p) == -1)
		return -1;
	*port = (uint16_t)p;
	return 0;
}

int
listen_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *sslen)
{
	char buf[UTIL_ADDR_TEXT_MAX];
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	char *host;
	int bracketed;
	uint16_t port;

	if (s == NULL || strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	if (split_hostport(buf, &host, &bracketed, &port) == -1)
		return -1;

	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (!bracketed && strcmp(host, "*") == 0) {
		/* "*" is the IPv4 wildcard; write "[::]" for IPv6. */
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_ANY);
	} else if (!bracketed && inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
	} else if (bracketed && inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
	} else
		return -1;

	memset(ss, 0, sizeof(*ss));
	if (sin.sin_family == AF_INET) {
		sin.sin_port = htons(port);
		memcpy(ss, &sin, sizeof(sin));
		*sslen = sizeof(sin);
	} else {
		sin6.sin6_port = htons(port);
		memcpy(ss, &sin6, sizeof(sin6));
		*sslen = sizeof(sin6);
	}
	return 0;
}

int
hostport_parse(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	char buf[UTIL_HOSTNAME_MAX + 16];
	struct in6_addr a6;
	struct in_addr a4;
	char *h;
	int bracketed;
	uint16_t p;

	if (s == NULL || strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	if (split_hostport(buf, &h, &bracketed, &p) == -1)
		return -1;
	if (bracketed) {
		if (inet_pton(AF_INET6, h, &a6) != 1)
			return -1;
	} else if (inet_pton(AF_INET, h, &a4) != 1 && !hostname_valid(h))
		return -1;
	if (strlcpy(host, h, hostlen) >= hostlen)
		return -1;
	*port = p;
	return 0;
}

void
time_rfc3339(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (len == 0)
		return;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		buf[0] = '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, int64_t m, int64_t d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int
days_in_month(int y, int m)
{
	static const int dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dim[m - 1];
}

/* Exactly n digits at *p, advancing it. */
static int
fixed_digits(const char **p, int n, int *out)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if (!is_digit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

static int
expect_char(const char **p, char c)
{
	if (**p != c)
		return -1;
	(*p)++;
	return 0;
}

int
time_parse(const char *s, time_t now, time_t *out)
{
	const char *p = s;
	int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
	int64_t t;
	uint64_t age;
	time_t r;

	if (s == NULL || *s == '\0')
		return -1;

	/* A relative age needs a unit, so that "3600" is never mistaken. */
	if (!is_digit((unsigned char)s[strlen(s) - 1]) &&
	    strchr(s, '-') == NULL) {
		if (parse_duration(s, &age) == -1 || age > (uint64_t)INT64_MAX)
			return -1;
		if (__builtin_sub_overflow(now, (time_t)age, &r))
			return -1;
		*out = r;
		return 0;
	}

	if (fixed_digits(&p, 4, &y) == -1 || expect_char(&p, '-') == -1 ||
	    fixed_digits(&p, 2, &mo) == -1 || expect_char(&p, '-') == -1 ||
	    fixed_digits(&p, 2, &d) == -1)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
		return -1;

	if (*p != '\0') {
		/* RFC 3339 section 5.6 allows 't' and, as a note, a space. */
		if (*p != 'T' && *p != 't' && *p != ' ')
			return -1;
		p++;
		if (fixed_digits(&p, 2, &h) == -1 || expect_char(&p, ':') == -1 ||
		    fixed_digits(&p, 2, &mi) == -1 || expect_char(&p, ':') == -1 ||
		    fixed_digits(&p, 2, &sec) == -1)
			return -1;
		/* 60 is a leap second; it counts as the next second. */
		if (h > 23 || mi > 59 || sec > 60)
			return -1;
		if (*p == '.') {
			p++;
			if (!is_digit((unsigned char)*p))
				return -1;
			while (is_digit((unsigned char)*p))
				p++;
		}
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			sign = *p == '+' ? 1 : -1;
			p++;
			if (fixed_digits(&p, 2, &oh) == -1 ||
			    expect_char(&p, ':') == -1 ||
			    fixed_digits(&p, 2, &om) == -1)
				return -1;
			if (oh > 23 || om > 59)
				return -1;
		} else
			return -1;
		if (*p != '\0')
			return -1;
	}

	t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
	/* Local time = UTC + offset, so UTC = local - offset. */
	t -= (int64_t)sign * (oh * 3600 + om * 60);
	if ((int64_t)(time_t)t != t)
		return -1;
	*out = (time_t)t;
	return 0;
}

/* Write all of buf, retrying after signals and short writes. */
static int
write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The directory part of path ("." when there is none), for fsync. */
static int
dir_of(const char *path, char *dir, size_t dirlen)
{
	const char *slash = strrchr(path, '/');
	size_t n;

	if (slash == NULL)
		return strlcpy(dir, ".", dirlen) < dirlen ? 0 : -1;
	n = (size_t)(slash - path);
	if (n == 0)
		n = 1;			/* "/file" lives in "/" */
	if (n >= dirlen)
		return -1;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return 0;
}

int
file_write_atomic(const char *path, const void *buf, size_t len, int mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	int fd = -1, dfd = -1, saved, n;

	n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
	if (n < 0 || (size_t)n >= sizeof(tmp) ||
	    dir_of(path, dir, sizeof(dir)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = mkostemp(tmp, O_CLOEXEC)) == -1)
		return -1;
	if (fchmod(fd, (mode_t)mode) == -1 ||
	    write_all(fd, buf, len) == -1 ||
	    fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1)
		goto fail;

	/* The rename is durable only once the directory itself is synced. */
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if (fsync(dfd) == -1) {
		saved = errno;
		close(dfd);
		errno = saved;
		return -1;
	}
	close(dfd);
	return 0;

fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	unlink(tmp);
	errno = saved;
	return -1;
}

int
file_read_all(const char *path, size_t maxlen, uint8_t **out, size_t *outlen)
{
	struct stat st;
	uint8_t *buf = NULL, *nbuf;
	size_t cap, len = 0;
	ssize_t n;
	int fd, saved;

	/* Keep maxlen + 1 and the terminating NUL from overflowing. */
	if (maxlen > SIZE_MAX / 2)
		maxlen = SIZE_MAX / 2;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > maxlen) {
		errno = EFBIG;
		goto fail;
	}
	/* One more than the limit, so that a file that grew is noticed. */
	cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : UTIL_READ_CHUNK;
	if (cap > maxlen + 1)
		cap = maxlen + 1;
	if ((buf = malloc(cap + 1)) == NULL)
		goto fail;

	for (;;) {
		if (len == cap) {
			if (cap > maxlen) {
				errno = EFBIG;
				goto fail;
			}
			cap = cap * 2 > maxlen + 1 ? maxlen + 1 : cap * 2;
			/* Copy by hand so that a key file never lingers in freed memory. */
			if ((nbuf = malloc(cap + 1)) == NULL)
				goto fail;
			memcpy(nbuf, buf, len);
			explicit_bzero(buf, len);
			free(buf);
			buf = nbuf;
		}
		n = read(fd, buf + len, cap - len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > maxlen) {
		errno = EFBIG;
		goto fail;
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;

fail:
	saved = errno;
	if (buf != NULL) {
		explicit_bzero(buf, len);
		free(buf);
	}
	close(fd);
	errno = saved;
	return -1;
}

char *
str_trim(char *s)
{
	size_t start = 0, end;

	end = strlen(s);
	while (end > 0 && isspace((unsigned char)s[end - 1]))
		end--;
	while (start < end && isspace((unsigned char)s[start]))
		start++;
	memmove(s, s + start, end - start);
	s[end - start] = '\0';
	return s;
}
