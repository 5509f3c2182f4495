/*
 * util.h: small shared helpers: number, duration and size parsing with range
 * checks, network masks (CIDR) and address matching, RFC 3339 times, and
 * durable file writes. Every parser returns 0 on success and -1 on error,
 * never a partial value.
 */
#ifndef SMTPVAULT_UTIL_H
#define SMTPVAULT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include <bsd/string.h>		/* strlcpy, strlcat */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Decimal unsigned integer in [min, max]; no sign, no spaces, no suffix. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* "30s", "5m", "2h", "1d", or a bare number of seconds. Result in seconds. */
int parse_duration(const char *s, uint64_t *out_seconds);

/* "512K", "10M", "1G" (powers of 1024), or a bare number of bytes. */
int parse_size(const char *s, uint64_t *out_bytes);

/* A network mask: family AF_INET or AF_INET6; IPv4 stored in addr[0..3]. */
struct netmask {
	int	family;
	uint8_t	addr[16];
	int	prefix;
};

/*
 * "10.0.5.0/24", "10.0.6.7", "::1/128", "[::1]", "[fd00::]/8". Host bits must
 * be zero ("10.0.5.1/24" is an error). An IPv4-mapped mask (::ffff:10.0.0.0/104)
 * is stored as the IPv4 mask it means (10.0.0.0/8).
 */
int netmask_parse(const char *s, struct netmask *out);

/* Does the socket address fall inside the mask? IPv4-mapped IPv6 counts as IPv4. */
int netmask_match(const struct netmask *m, const struct sockaddr *sa);

/* Is this mask the whole address space (0.0.0.0/0 or ::/0)? */
int netmask_is_any(const struct netmask *m);

/* Text form of an address, IPv4-mapped IPv6 shown as IPv4. */
void sockaddr_ntop(const struct sockaddr *sa, char *buf, size_t len);

/*
 * "a.b.c.d:port", "[v6]:port", "*:port" ("*" is 0.0.0.0; write "[::]" for the
 * IPv6 wildcard). Numeric addresses only, port 1..65535. Fills a sockaddr for bind().
 */
int listen_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *sslen);

/* "host:port" or "[v6]:port" into host and port (1..65535), without resolving.
 * host is a DNS name (letters, digits, '-', '.'), an IPv4 or a bracketed IPv6
 * address; brackets are removed. */
int hostport_parse(const char *s, char *host, size_t hostlen, uint16_t *port);

/* RFC 3339 UTC, "2026-11-26T05:40:56Z". buf needs at least 21 bytes. */
void time_rfc3339(time_t t, char *buf, size_t len);

/* Parse RFC 3339 (Z or +hh:mm offset, optional fraction, which is dropped),
 * a date "2026-11-26" (midnight UTC), or a relative age ("2h", "7d", "30m",
 * "45s", meaning now minus that; a bare number is refused as ambiguous). */
int time_parse(const char *s, time_t now, time_t *out);

/*
 * Write a file durably and atomically: temp file "path.tmp.XXXXXX" in the same
 * directory, write, fsync, rename over path, fsync the directory. mode for the
 * new file. On failure the temp file is removed and errno is kept.
 */
int file_write_atomic(const char *path, const void *buf, size_t len, int mode);

/*
 * Read a whole file of at most maxlen bytes into malloc'd memory (free()).
 * The buffer is NUL-terminated (not counted in outlen). A larger file fails
 * with errno EFBIG. Intermediate buffers are wiped, so it may read key files;
 * the caller wipes the result.
 */
int file_read_all(const char *path, size_t maxlen, uint8_t **out, size_t *outlen);

/* A DNS host name: dot-separated labels of 1..63 letters, digits and '-'
 * (not at either end of a label), 253 characters at most, no trailing dot,
 * and a last label that is not all digits (so "10.0.0.1" is not a name). */
int hostname_valid(const char *name);

/* Trim ASCII white space at both ends, in place. Returns s. */
char *str_trim(char *s);

#endif
