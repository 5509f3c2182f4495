/*
 * sink.c: a fast Gmail-like SMTP sink for the benchmarks (tests/bench/).
 *
 * It speaks what smtp.gmail.com speaks to a submission client: a greeting,
 * EHLO with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING and
 * SMTPUTF8, STARTTLS on the plain port (AUTH offered only inside TLS),
 * implicit TLS on a second port, AUTH PLAIN and LOGIN answered 235 for any
 * credential, MAIL / RCPT / DATA / BDAT / RSET / NOOP / QUIT. Messages are
 * counted and thrown away.
 *
 * There is no netem on the benchmark machine, so a user-space delay line
 * stands in for the network: every byte the sink sends (greeting, replies,
 * TLS handshake flights) leaves rtt milliseconds after it was produced, which
 * adds one round-trip time to every request/response exchange of the client.
 * The reply to a message's end (final dot, BDAT LAST) is produced only
 * data_delay milliseconds after the message arrived, as Gmail takes time to
 * accept a message; input after it waits, in order.
 *
 * TLS runs over memory BIOs so that the delay line sees the wire bytes; the
 * event loop is libevent's. Counters: connections, full and resumed TLS
 * handshakes (SSL_session_reused), AUTHs, messages, messages per connection.
 * They are written as "key value" lines to the stats file on SIGUSR1 and at
 * exit, and to stderr at exit. A message whose header holds "X-Bench-Id: N"
 * is logged to the timestamp file as "N T", T being the CLOCK_MONOTONIC
 * nanoseconds at which the 250 for it leaves the delay line.
 *
 * The sink always stops by itself after -x seconds (default 3600).
 *
 * Usage: sink [-l ADDR:PORT] [-L ADDR:PORT] -c CERT -k KEY [-r RTT_MS]
 *             [-d DATA_DELAY_MS] [-C CTLFILE] [-s STATSFILE] [-t TSFILE]
 *             [-x SECONDS] [-q]
 *   -l  plain port with STARTTLS      -L  implicit TLS port
 *   -C  file re-read on SIGHUP: lines "rtt_ms N" and "data_delay_ms N"
 *   -q  no summary on stderr at exit
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define SINK_LINE_MAX		4096		/* command line, with CRLF */
#define SINK_READ_CHUNK		(64 * 1024)	/* one read() */
#define SINK_HDR_CAP		8192		/* message bytes searched for X-Bench-Id */
#define SINK_SIZE_MAX		36700160	/* advertised SIZE: Gmail's 35 MiB */
#define SINK_BDAT_MAX		(64ULL * 1024 * 1024)
#define SINK_INPUT_MAX		(4 * 1024 * 1024)	/* stop reading above this */
#define SINK_DEFAULT_LIFETIME	3600
#define SINK_HOSTNAME		"sink.bench.test"
#define SINK_BENCH_HDR		"X-Bench-Id:"
#define SINK_HIST_BUCKETS	6
#define NS_PER_MS		1000000ULL

static const char *const hist_names[SINK_HIST_BUCKETS] = {
	"0", "1", "2-9", "10-99", "100-999", "1000+"
};

enum conn_state {
	CS_CMD,		/* reading commands */
	CS_AUTH_PLAIN,	/* 334 sent, waiting for the PLAIN response */
	CS_AUTH_USER,	/* 334 sent, waiting for the LOGIN user name */
	CS_AUTH_PASS,	/* 334 sent, waiting for the LOGIN password */
	CS_DATA,	/* reading a message up to CRLF . CRLF */
	CS_BDAT,	/* reading a BDAT chunk */
	CS_WAIT,	/* the end-of-data delay is running */
	CS_CLOSING,	/* last reply queued */
};

/* One write to the socket held back until "release" (CLOCK_MONOTONIC ns). */
struct delayed {
	TAILQ_ENTRY(delayed) entry;
	uint64_t	release;
	size_t		len;
};
TAILQ_HEAD(delayed_list, delayed);

struct conn {
	TAILQ_ENTRY(conn) entry;
	int			fd;
	struct event		*rev, *wev, *delay_ev, *data_ev, *free_ev;
	int			dead;		/* freed from free_ev, never in place */
	SSL			*ssl;
	BIO			*rbio, *wbio;	/* owned by ssl */
	int			handshaking;
	int			implicit;	/* greeting after the handshake */
	int			authed;
	enum conn_state		state;
	struct evbuffer		*in;		/* plaintext input */
	struct evbuffer		*reply;		/* plaintext replies not yet sent */
	struct evbuffer		*pending;	/* wire bytes in the delay line */
	struct delayed_list	delays;
	struct evbuffer		*out;		/* wire bytes due now */
	int			eof;
	/* The message being read. */
	int			in_bdat;	/* between the first BDAT and the last */
	int			dot_state;	/* CRLF . CRLF matcher */
	uint64_t		bdat_left;
	int			bdat_last;
	size_t			msg_size;
	char			hdr[SINK_HDR_CAP];
	size_t			hdr_len;
	long long		bench_id;	/* -1: none */
	uint64_t		messages;
};
TAILQ_HEAD(conn_list, conn);

struct stats {
	uint64_t	connections, open, tls_full, tls_resumed, tls_failed, auths;
	uint64_t	messages, messages_unauth, bytes, bdat_chunks, max_per_conn;
	uint64_t	hist[SINK_HIST_BUCKETS];
	uint64_t	last_msg_mono_ns, last_msg_real_ns, first_msg_real_ns;
	uint64_t	dumps;		/* stats files written: readers wait for a new one */
};

static struct event_base *base;
static SSL_CTX *ssl_ctx;
static struct conn_list conns = TAILQ_HEAD_INITIALIZER(conns);
static struct stats st;
static uint64_t rtt_ns, data_delay_ns;
static const char *ctl_path, *stats_path;
static FILE *ts_file;
static int quiet;
static uint64_t msg_serial;

static void	conn_flush(struct conn *);
static void	conn_process(struct conn *);
static void	conn_kill(struct conn *);
static void	conn_free(struct conn *);
static void	conn_write(struct conn *);

static uint64_t
clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t
mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

static void
ns_to_tv(uint64_t ns, struct timeval *tv)
{
	tv->tv_sec = (time_t)(ns / 1000000000ULL);
	tv->tv_usec = (suseconds_t)((ns % 1000000000ULL) / 1000);
}

static void
die(const char *what)
{
	fprintf(stderr, "sink: %s\n", what);
	exit(2);
}

/* A non-negative integer with a range check; -1 when it is not one. */
static long long
parse_num(const char *s, long long max)
{
	char *end;
	long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	return v;
}

/* ---- Statistics ---------------------------------------------------------- */

static void
stats_write(FILE *f)
{
	size_t i;

	fprintf(f, "dumps %llu\n", (unsigned long long)st.dumps);
	fprintf(f, "connections %llu\n", (unsigned long long)st.connections);
	fprintf(f, "open %llu\n", (unsigned long long)st.open);
	fprintf(f, "tls_full %llu\n", (unsigned long long)st.tls_full);
	fprintf(f, "tls_resumed %llu\n", (unsigned long long)st.tls_resumed);
	fprintf(f, "tls_failed %llu\n", (unsigned long long)st.tls_failed);
	fprintf(f, "auths %llu\n", (unsigned long long)st.auths);
	fprintf(f, "messages %llu\n", (unsigned long long)st.messages);
	fprintf(f, "messages_unauth %llu\n", (unsigned long long)st.messages_unauth);
	fprintf(f, "bytes %llu\n", (unsigned long long)st.bytes);
	fprintf(f, "bdat_chunks %llu\n", (unsigned long long)st.bdat_chunks);
	fprintf(f, "max_msgs_per_conn %llu\n", (unsigned long long)st.max_per_conn);
	for (i = 0; i < SINK_HIST_BUCKETS; i++)
		fprintf(f, "conns_with_msgs_%s %llu\n", hist_names[i],
		    (unsigned long long)st.hist[i]);
	fprintf(f, "first_msg_real_ns %llu\n", (unsigned long long)st.first_msg_real_ns);
	fprintf(f, "last_msg_real_ns %llu\n", (unsigned long long)st.last_msg_real_ns);
	fprintf(f, "last_msg_mono_ns %llu\n", (unsigned long long)st.last_msg_mono_ns);
	fprintf(f, "rtt_ms %llu\n", (unsigned long long)(rtt_ns / NS_PER_MS));
	fprintf(f, "data_delay_ms %llu\n", (unsigned long long)(data_delay_ns / NS_PER_MS));
}

/* Written to a temporary file and renamed, so a reader never sees half. */
static void
stats_dump(void)
{
	char tmp[4096];
	FILE *f;

	if (ts_file != NULL)
		fflush(ts_file);
	if (stats_path == NULL)
		return;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path) >= (int)sizeof(tmp))
		return;
	if ((f = fopen(tmp, "w")) == NULL)
		return;
	st.dumps++;
	stats_write(f);
	if (fclose(f) == 0)
		(void)rename(tmp, stats_path);
}

static void
hist_add(uint64_t n)
{
	size_t b = n == 0 ? 0 : n == 1 ? 1 : n < 10 ? 2 : n < 100 ? 3 : n < 1000 ? 4 : 5;

	st.hist[b]++;
}

static void
ctl_reload(void)
{
	char line[256], key[64];
	unsigned long long v;
	FILE *f;

	if (ctl_path == NULL || (f = fopen(ctl_path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%63s %llu", key, &v) != 2 || v > 600000)
			continue;
		if (strcmp(key, "rtt_ms") == 0)
			rtt_ns = v * NS_PER_MS;
		else if (strcmp(key, "data_delay_ms") == 0)
			data_delay_ns = v * NS_PER_MS;
	}
	fclose(f);
}

/* ---- The wire: delay line and socket ------------------------------------- */

static void
delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct delayed *d;
	uint64_t now = mono_ns();
	struct timeval tv;

	if (c->dead)
		return;
	while ((d = TAILQ_FIRST(&c->delays)) != NULL && d->release <= now) {
		TAILQ_REMOVE(&c->delays, d, entry);
		evbuffer_remove_buffer(c->pending, c->out, d->len);
		free(d);
	}
	if (d != NULL) {
		ns_to_tv(d->release - now, &tv);
		evtimer_add(c->delay_ev, &tv);
	}
	conn_write(c);
}

/* Wire bytes produced now: due now, or rtt later. */
static void
wire_send(struct conn *c, struct evbuffer *src)
{
	struct delayed *d;
	struct timeval tv;
	size_t len = evbuffer_get_length(src);

	if (len == 0)
		return;
	if (rtt_ns == 0 && TAILQ_EMPTY(&c->delays)) {
		evbuffer_add_buffer(c->out, src);
		return;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL)
		die("out of memory");
	d->release = mono_ns() + rtt_ns;
	d->len = len;
	evbuffer_add_buffer(c->pending, src);
	if (TAILQ_EMPTY(&c->delays)) {
		ns_to_tv(rtt_ns, &tv);
		evtimer_add(c->delay_ev, &tv);
	}
	TAILQ_INSERT_TAIL(&c->delays, d, entry);
}

/* Move what TLS produced (handshake flights, records) to the wire. */
static void
wire_from_bio(struct conn *c)
{
	struct evbuffer *tmp;
	char buf[16384];
	int n;

	if (c->wbio == NULL || BIO_ctrl_pending(c->wbio) == 0)
		return;
	if ((tmp = evbuffer_new()) == NULL)
		die("out of memory");
	while ((n = BIO_read(c->wbio, buf, sizeof(buf))) > 0)
		evbuffer_add(tmp, buf, (size_t)n);
	wire_send(c, tmp);
	evbuffer_free(tmp);
}

static int
conn_done_writing(const struct conn *c)
{
	return evbuffer_get_length(c->out) == 0 && TAILQ_EMPTY(&c->delays) &&
	    evbuffer_get_length(c->reply) == 0;
}

static void
conn_write(struct conn *c)
{
	int n;

	if (c->dead)
		return;
	while (evbuffer_get_length(c->out) > 0) {
		n = evbuffer_write(c->out, c->fd);
		if (n > 0)
			continue;
		if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			event_add(c->wev, NULL);
			return;
		}
		conn_kill(c);
		return;
	}
	if (c->state == CS_CLOSING && conn_done_writing(c))
		conn_kill(c);
}

static void
write_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_write(arg);
}

/* ---- Replies ------------------------------------------------------------- */

static void reply(struct conn *, const char *, ...) __attribute__((format(printf, 2, 3)));

static void
reply(struct conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(c->reply, fmt, ap);
	va_end(ap);
	evbuffer_add(c->reply, "\r\n", 2);
}

/* Encrypt the pending replies (if TLS) and put them on the wire. */
static void
conn_flush(struct conn *c)
{
	struct evbuffer_iovec v[16];
	size_t done;
	int i, n;

	if (c->dead)
		return;
	if (c->ssl != NULL && !c->handshaking) {
		/* A memory BIO takes every record: SSL_write never blocks here. */
		while (evbuffer_get_length(c->reply) > 0) {
			n = evbuffer_peek(c->reply, -1, NULL, v, 16);
			for (i = 0, done = 0; i < n && i < 16; i++) {
				if (v[i].iov_len > 0 && SSL_write(c->ssl, v[i].iov_base,
				    (int)v[i].iov_len) <= 0) {
					ERR_clear_error();
					conn_kill(c);
					return;
				}
				done += v[i].iov_len;
			}
			evbuffer_drain(c->reply, done);
		}
	} else if (c->ssl == NULL) {
		wire_send(c, c->reply);
	}
	wire_from_bio(c);
	conn_write(c);
}

/* ---- Messages ------------------------------------------------------------ */

static void
msg_begin(struct conn *c)
{
	c->in_bdat = 0;
	c->dot_state = 2;	/* a message starts at the beginning of a line */
	c->msg_size = 0;
	c->hdr_len = 0;
	c->bench_id = -1;
}

static void
msg_capture(struct conn *c, const unsigned char *p, size_t n)
{
	size_t room = sizeof(c->hdr) - 1 - c->hdr_len;

	c->msg_size += n;
	if (room == 0)
		return;
	if (n > room)
		n = room;
	memcpy(c->hdr + c->hdr_len, p, n);
	c->hdr_len += n;
}

static void
msg_find_id(struct conn *c)
{
	char *p, *end;
	long long v;

	c->hdr[c->hdr_len] = '\0';
	/* The header ends at the first empty line. */
	if ((end = strstr(c->hdr, "\r\n\r\n")) != NULL)
		*end = '\0';
	for (p = c->hdr; (p = strstr(p, SINK_BENCH_HDR)) != NULL; p++) {
		if (p != c->hdr && p[-1] != '\n')
			continue;
		p += sizeof(SINK_BENCH_HDR) - 1;
		while (*p == ' ')
			p++;
		errno = 0;
		v = strtoll(p, &end, 10);
		if (errno == 0 && end != p && v >= 0)
			c->bench_id = v;
		return;
	}
}

static void
msg_reply(struct conn *c)
{
	uint64_t now = mono_ns();

	reply(c, "250 2.0.0 OK %llu %llu - gsmtp", (unsigned long long)(now / 1000000000ULL),
	    (unsigned long long)++msg_serial);
	if (ts_file != NULL && c->bench_id >= 0)
		fprintf(ts_file, "%lld %llu\n", c->bench_id, (unsigned long long)(now + rtt_ns));
}

static void
data_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->dead)
		return;
	c->state = CS_CMD;
	msg_reply(c);
	conn_process(c);
}

/* The whole message is in: count it, then answer now or after the delay. */
static void
msg_end(struct conn *c)
{
	struct timeval tv;

	c->in_bdat = 0;
	st.messages++;
	if (!c->authed)
		st.messages_unauth++;
	st.bytes += c->msg_size;
	st.last_msg_mono_ns = mono_ns();
	st.last_msg_real_ns = clock_ns(CLOCK_REALTIME);
	if (st.first_msg_real_ns == 0)
		st.first_msg_real_ns = st.last_msg_real_ns;
	if (++c->messages > st.max_per_conn)
		st.max_per_conn = c->messages;
	msg_find_id(c);
	if (data_delay_ns == 0) {
		c->state = CS_CMD;
		msg_reply(c);
		return;
	}
	c->state = CS_WAIT;
	ns_to_tv(data_delay_ns, &tv);
	evtimer_add(c->data_ev, &tv);
}

/*
 * Feed DATA bytes to the CRLF . CRLF matcher. dot_state: 0 in a line, 1 CR
 * seen, 2 at the beginning of a line, 3 "." at the beginning, 4 ".CR".
 * Returns the bytes consumed; sets *done at the end of the message.
 */
static size_t
data_scan(struct conn *c, const unsigned char *p, size_t n, int *done)
{
	size_t i = 0;
	const unsigned char *cr;

	*done = 0;
	while (i < n) {
		unsigned char ch;

		if (c->dot_state == 0) {
			if ((cr = memchr(p + i, '\r', n - i)) == NULL) {
				i = n;
				break;
			}
			i = (size_t)(cr - p) + 1;
			c->dot_state = 1;
			continue;
		}
		ch = p[i++];
		switch (c->dot_state) {
		case 1:
			c->dot_state = ch == '\n' ? 2 : ch == '\r' ? 1 : 0;
			break;
		case 2:
			c->dot_state = ch == '.' ? 3 : ch == '\r' ? 1 : 0;
			break;
		case 3:
			c->dot_state = ch == '\r' ? 4 : 0;
			break;
		case 4:
			if (ch == '\n') {
				*done = 1;
				return i;
			}
			c->dot_state = ch == '\r' ? 1 : 0;
			break;
		}
	}
	return i;
}

/* ---- Commands ------------------------------------------------------------ */

static int
verb_is(const char *line, size_t len, const char *verb)
{
	size_t vl = strlen(verb);

	return len >= vl && strncasecmp(line, verb, vl) == 0 &&
	    (len == vl || line[vl] == ' ');
}

static void
cmd_ehlo(struct conn *c)
{
	reply(c, "250-" SINK_HOSTNAME " at your service");
	reply(c, "250-SIZE %d", SINK_SIZE_MAX);
	reply(c, "250-8BITMIME");
	if (c->ssl == NULL && ssl_ctx != NULL)
		reply(c, "250-STARTTLS");
	if (c->ssl != NULL)
		reply(c, "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH");
	reply(c, "250-ENHANCEDSTATUSCODES");
	reply(c, "250-PIPELINING");
	reply(c, "250-CHUNKING");
	reply(c, "250 SMTPUTF8");
}

static int
conn_start_tls(struct conn *c)
{
	if ((c->ssl = SSL_new(ssl_ctx)) == NULL)
		return -1;
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (c->rbio == NULL || c->wbio == NULL) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		c->rbio = c->wbio = NULL;
		return -1;
	}
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_accept_state(c->ssl);
	c->handshaking = 1;
	return 0;
}

static void
cmd_auth(struct conn *c, const char *line, size_t len)
{
	const char *arg = line + 4;

	while (*arg == ' ')
		arg++;
	if (c->ssl == NULL) {
		reply(c, "530 5.7.0 Must issue a STARTTLS command first.");
		return;
	}
	if (strncasecmp(arg, "PLAIN", 5) == 0) {
		if (arg[5] == ' ' && arg[6] != '\0') {
			st.auths++;
			c->authed = 1;
			reply(c, "235 2.7.0 Accepted");
			return;
		}
		c->state = CS_AUTH_PLAIN;
		reply(c, "334 ");
		return;
	}
	if (strncasecmp(arg, "LOGIN", 5) == 0) {
		if (arg[5] == ' ' && arg[6] != '\0') {
			c->state = CS_AUTH_PASS;
			reply(c, "334 UGFzc3dvcmQ6");
			return;
		}
		c->state = CS_AUTH_USER;
		reply(c, "334 VXNlcm5hbWU6");
		return;
	}
	reply(c, "504 5.7.4 Unrecognized authentication type.");
}

static void
cmd_bdat(struct conn *c, const char *line)
{
	const char *p = line + 4;
	char *end;
	unsigned long long n;

	while (*p == ' ')
		p++;
	errno = 0;
	n = strtoull(p, &end, 10);
	if (errno != 0 || end == p || n > SINK_BDAT_MAX) {
		reply(c, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	while (*end == ' ')
		end++;
	if (*end != '\0' && strcasecmp(end, "LAST") != 0) {
		reply(c, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	if (!c->in_bdat) {
		msg_begin(c);
		c->in_bdat = 1;
	}
	c->bdat_left = n;
	c->bdat_last = *end != '\0';
	c->state = CS_BDAT;
	st.bdat_chunks++;
}

static void
conn_command(struct conn *c, char *line, size_t len)
{
	switch (c->state) {
	case CS_AUTH_PLAIN:
	case CS_AUTH_PASS:
		c->state = CS_CMD;
		if (len == 1 && line[0] == '*') {
			reply(c, "501 5.7.0 Authentication aborted");
			return;
		}
		st.auths++;
		c->authed = 1;
		reply(c, "235 2.7.0 Accepted");
		return;
	case CS_AUTH_USER:
		c->state = CS_AUTH_PASS;
		reply(c, "334 UGFzc3dvcmQ6");
		return;
	default:
		break;
	}
	if (verb_is(line, len, "EHLO")) {
		cmd_ehlo(c);
	} else if (verb_is(line, len, "HELO")) {
		reply(c, "250 " SINK_HOSTNAME " at your service");
	} else if (verb_is(line, len, "STARTTLS")) {
		if (c->ssl != NULL || ssl_ctx == NULL) {
			reply(c, "503 5.5.1 TLS already active");
			return;
		}
		reply(c, "220 2.0.0 Ready to start TLS");
		conn_flush(c);
		/* Plaintext pipelined after STARTTLS is never executed. */
		evbuffer_drain(c->in, evbuffer_get_length(c->in));
		if (conn_start_tls(c) == -1)
			c->state = CS_CLOSING;
	} else if (verb_is(line, len, "AUTH")) {
		cmd_auth(c, line, len);
	} else if (verb_is(line, len, "MAIL")) {
		c->in_bdat = 0;
		reply(c, "250 2.1.0 OK - gsmtp");
	} else if (verb_is(line, len, "RCPT")) {
		reply(c, "250 2.1.5 OK - gsmtp");
	} else if (verb_is(line, len, "DATA")) {
		msg_begin(c);
		c->state = CS_DATA;
		reply(c, "354 Go ahead - gsmtp");
	} else if (verb_is(line, len, "BDAT")) {
		cmd_bdat(c, line);
	} else if (verb_is(line, len, "RSET")) {
		c->in_bdat = 0;
		reply(c, "250 2.1.5 Flushed - gsmtp");
	} else if (verb_is(line, len, "NOOP")) {
		reply(c, "250 2.0.0 OK - gsmtp");
	} else if (verb_is(line, len, "QUIT")) {
		reply(c, "221 2.0.0 closing connection - gsmtp");
		c->state = CS_CLOSING;
	} else {
		reply(c, "502 5.5.1 Unrecognized command. - gsmtp");
	}
}

/* Handle buffered plaintext input until it runs out or must wait. */
static void
conn_process(struct conn *c)
{
	struct evbuffer_iovec v;
	struct evbuffer_ptr eol;
	char line[SINK_LINE_MAX + 1];
	size_t eol_len, n;
	int done;

	if (c->dead)
		return;
	for (;;) {
		if (c->state == CS_WAIT || c->state == CS_CLOSING || c->handshaking)
			break;
		if (c->state == CS_DATA || c->state == CS_BDAT) {
			if (evbuffer_peek(c->in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
				break;
			if (c->state == CS_DATA) {
				n = data_scan(c, v.iov_base, v.iov_len, &done);
				msg_capture(c, v.iov_base, n);
				evbuffer_drain(c->in, n);
				if (done)
					msg_end(c);
				continue;
			}
			n = v.iov_len < c->bdat_left ? v.iov_len : (size_t)c->bdat_left;
			msg_capture(c, v.iov_base, n);
			evbuffer_drain(c->in, n);
			c->bdat_left -= n;
			if (c->bdat_left > 0)
				continue;
			if (c->bdat_last) {
				c->bdat_last = 0;
				msg_end(c);
			} else {
				c->state = CS_CMD;
				reply(c, "250 2.0.0 chunk received - gsmtp");
			}
			continue;
		}
		eol = evbuffer_search_eol(c->in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0) {
			if (evbuffer_get_length(c->in) > SINK_LINE_MAX) {
				reply(c, "500 5.5.2 Line too long");
				c->state = CS_CLOSING;
			}
			break;
		}
		if ((size_t)eol.pos > SINK_LINE_MAX) {
			reply(c, "500 5.5.2 Line too long");
			c->state = CS_CLOSING;
			break;
		}
		evbuffer_remove(c->in, line, (size_t)eol.pos);
		evbuffer_drain(c->in, eol_len);
		line[eol.pos] = '\0';
		conn_command(c, line, (size_t)eol.pos);
		if (c->dead)
			return;
	}
	if (c->state == CS_WAIT)
		event_del(c->rev);
	else if (c->state != CS_CLOSING && evbuffer_get_length(c->in) < SINK_INPUT_MAX)
		event_add(c->rev, NULL);
	conn_flush(c);
}

/* ---- Reading ------------------------------------------------------------- */

static int
tls_handshake_step(struct conn *c)
{
	int r = SSL_do_handshake(c->ssl), e;

	if (r == 1) {
		c->handshaking = 0;
		if (SSL_session_reused(c->ssl))
			st.tls_resumed++;
		else
			st.tls_full++;
		if (c->implicit)
			reply(c, "220 " SINK_HOSTNAME " ESMTP ready - gsmtp");
		return 0;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	st.tls_failed++;
	ERR_clear_error();
	return -1;
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	static unsigned char buf[SINK_READ_CHUNK];
	ssize_t n;
	int r = 0, e;

	if (c->dead)
		return;
	n = read(c->fd, buf, sizeof(buf));
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_kill(c);
		return;
	}
	if (c->ssl == NULL) {
		evbuffer_add(c->in, buf, (size_t)n);
	} else {
		if (BIO_write(c->rbio, buf, (int)n) != (int)n) {
			conn_kill(c);
			return;
		}
		if (c->handshaking && tls_handshake_step(c) == -1) {
			wire_from_bio(c);	/* the alert */
			c->state = CS_CLOSING;
			conn_write(c);
			return;
		}
		while (!c->handshaking && (r = SSL_read(c->ssl, buf, sizeof(buf))) > 0)
			evbuffer_add(c->in, buf, (size_t)r);
		if (!c->handshaking && r <= 0) {
			e = SSL_get_error(c->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				ERR_clear_error();
				conn_kill(c);
				return;
			}
		}
	}
	conn_process(c);
}

/* ---- Connections --------------------------------------------------------- */

/* Stop the connection now; free it from a clean stack. */
static void
conn_kill(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = 1;
	event_del(c->rev);
	event_del(c->wev);
	event_del(c->delay_ev);
	event_del(c->data_ev);
	event_active(c->free_ev, EV_TIMEOUT, 1);
}

static void
free_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_free(arg);
}

static void
conn_free(struct conn *c)
{
	struct delayed *d;

	TAILQ_REMOVE(&conns, c, entry);
	st.open--;
	hist_add(c->messages);
	while ((d = TAILQ_FIRST(&c->delays)) != NULL) {
		TAILQ_REMOVE(&c->delays, d, entry);
		free(d);
	}
	event_free(c->rev);
	event_free(c->wev);
	event_free(c->delay_ev);
	event_free(c->data_ev);
	event_free(c->free_ev);
	SSL_free(c->ssl);
	evbuffer_free(c->in);
	evbuffer_free(c->reply);
	evbuffer_free(c->pending);
	evbuffer_free(c->out);
	close(c->fd);
	free(c);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	int implicit = arg != NULL, one = 1;
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->implicit = implicit;
	c->state = CS_CMD;
	TAILQ_INIT(&c->delays);
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, c);
	c->wev = event_new(base, fd, EV_WRITE, write_cb, c);
	c->delay_ev = evtimer_new(base, delay_cb, c);
	c->data_ev = evtimer_new(base, data_delay_cb, c);
	c->free_ev = event_new(base, -1, 0, free_cb, c);
	c->in = evbuffer_new();
	c->reply = evbuffer_new();
	c->pending = evbuffer_new();
	c->out = evbuffer_new();
	if (c->rev == NULL || c->wev == NULL || c->delay_ev == NULL || c->data_ev == NULL ||
	    c->free_ev == NULL ||
	    c->in == NULL || c->reply == NULL || c->pending == NULL || c->out == NULL)
		die("out of memory");
	TAILQ_INSERT_TAIL(&conns, c, entry);
	st.connections++;
	st.open++;
	if (implicit) {
		if (conn_start_tls(c) == -1) {
			conn_kill(c);
			return;
		}
	} else {
		reply(c, "220 " SINK_HOSTNAME " ESMTP ready - gsmtp");
	}
	event_add(c->rev, NULL);
	conn_flush(c);
}

static struct evconnlistener *
listen_on(const char *spec, int implicit)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct evconnlistener *l;

	if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0)
		die("bad listen address");
	l = evconnlistener_new_bind(base, accept_cb, implicit ? (void *)1 : NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
	    (struct sockaddr *)&ss, sslen);
	if (l == NULL) {
		fprintf(stderr, "sink: cannot listen on %s: %s\n", spec, strerror(errno));
		exit(1);
	}
	return l;
}

/* ---- Signals and main ---------------------------------------------------- */

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	switch (sig) {
	case SIGUSR1:
		stats_dump();
		break;
	case SIGHUP:
		ctl_reload();
		break;
	default:
		event_base_loopexit(base, NULL);
		break;
	}
}

static void
lifetime_cb(evutil_socket_t fd, short what, void *arg)
{
	fprintf(stderr, "sink: lifetime over, exiting\n");
	event_base_loopexit(base, NULL);
}

static SSL_CTX *
tls_ctx(const char *cert, const char *key)
{
	SSL_CTX *ctx;
	static const unsigned char sid_ctx[] = "smtpvault-bench-sink";

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ERR_print_errors_fp(stderr);
		die("cannot set up TLS with -c/-k");
	}
	/* Sessions may be resumed (IDs and tickets), as with Gmail. */
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

static void
usage(void)
{
	fprintf(stderr, "usage: sink [-l ADDR:PORT] [-L ADDR:PORT] -c CERT -k KEY [-r RTT_MS] "
	    "[-d DATA_DELAY_MS] [-C CTLFILE] [-s STATSFILE] [-t TSFILE] [-x SECONDS] [-q]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *plain = NULL, *implicit = NULL, *cert = NULL, *key = NULL;
	const char *ts_path = NULL;
	struct evconnlistener *l1 = NULL, *l2 = NULL;
	struct event *sigs[4], *life;
	static const int signums[4] = { SIGUSR1, SIGHUP, SIGTERM, SIGINT };
	struct timeval tv;
	struct rlimit rl;
	long long v, lifetime = SINK_DEFAULT_LIFETIME;
	struct conn *c;
	int ch, i;

	while ((ch = getopt(argc, argv, "l:L:c:k:r:d:C:s:t:x:q")) != -1) {
		switch (ch) {
		case 'l': plain = optarg; break;
		case 'L': implicit = optarg; break;
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 'r':
			if ((v = parse_num(optarg, 600000)) < 0)
				usage();
			rtt_ns = (uint64_t)v * NS_PER_MS;
			break;
		case 'd':
			if ((v = parse_num(optarg, 600000)) < 0)
				usage();
			data_delay_ns = (uint64_t)v * NS_PER_MS;
			break;
		case 'C': ctl_path = optarg; break;
		case 's': stats_path = optarg; break;
		case 't': ts_path = optarg; break;
		case 'x':
			if ((lifetime = parse_num(optarg, 7 * 86400)) <= 0)
				usage();
			break;
		case 'q': quiet = 1; break;
		default: usage();
		}
	}
	if ((plain == NULL && implicit == NULL) || cert == NULL || key == NULL)
		usage();
	ctl_reload();
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (ts_path != NULL) {
		if ((ts_file = fopen(ts_path, "a")) == NULL)
			die("cannot open the timestamp file");
		setvbuf(ts_file, NULL, _IOFBF, 1 << 16);
	}
	ssl_ctx = tls_ctx(cert, key);
	{
		struct event_config *cfg = event_config_new();

		/* Timers of the delay line want better than epoll's milliseconds. */
		if (cfg == NULL || event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER) != 0 ||
		    (base = event_base_new_with_config(cfg)) == NULL)
			die("cannot create the event loop");
		event_config_free(cfg);
	}
	if (plain != NULL)
		l1 = listen_on(plain, 0);
	if (implicit != NULL)
		l2 = listen_on(implicit, 1);
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < 4; i++) {
		if ((sigs[i] = evsignal_new(base, signums[i], signal_cb, NULL)) == NULL ||
		    evsignal_add(sigs[i], NULL) != 0)
			die("cannot set up signals");
	}
	if ((life = evtimer_new(base, lifetime_cb, NULL)) == NULL)
		die("out of memory");
	tv.tv_sec = (time_t)lifetime;
	tv.tv_usec = 0;
	evtimer_add(life, &tv);
	stats_dump();

	event_base_dispatch(base);

	while ((c = TAILQ_FIRST(&conns)) != NULL)
		conn_free(c);
	stats_dump();
	if (!quiet) {
		fprintf(stderr, "sink: summary\n");
		stats_write(stderr);
	}
	if (ts_file != NULL)
		fclose(ts_file);
	if (l1 != NULL)
		evconnlistener_free(l1);
	if (l2 != NULL)
		evconnlistener_free(l2);
	for (i = 0; i < 4; i++)
		event_free(sigs[i]);
	event_free(life);
	SSL_CTX_free(ssl_ctx);
	event_base_free(base);
	return 0;
}
