/*
 * loadgen.c: the benchmark's own SMTP load generator (tests/bench/), for
 * what smtp-source cannot do: open-loop Poisson arrivals with per-message
 * latency, persistent pipelined sessions with STARTTLS and AUTH (to drive the
 * sink directly), and many idle connections.
 *
 *   loadgen flood   -c CONNS (-n TOTAL | -T SECS) ADDR:PORT
 *       CONNS sessions, each sending messages back to back.
 *   loadgen poisson -R RATE -T SECS ADDR:PORT
 *       messages arrive at exponential intervals (mean 1/RATE); each goes out
 *       on an idle session, or a new one (at most -c, default 1000).
 *   loadgen idle    -c CONNS -T SECS ADDR:PORT
 *       CONNS sessions that say EHLO (and STARTTLS with -S) and then wait;
 *       prints "ready N" once all are idle, then holds them for SECS.
 *
 * Options: -l BYTES body size (default 4096); -S STARTTLS; -A CAFILE verify
 * the server's chain; -a AUTH PLAIN after STARTTLS; -f FROM; -t RCPT; -o FILE
 * log "ID T" per message, T being the CLOCK_MONOTONIC ns at which its final
 * dot was handed to the kernel, and 1 or 0: in the statistics or part of the
 * warm-up; -i FIRST_ID; -w SECS warm-up whose messages
 * are left out of the statistics; -x SECS hard lifetime (default 600).
 *
 * Sessions use PIPELINING: MAIL, RCPT and DATA in one write, then the body
 * and the final dot. The latency of a message is final dot to the reply,
 * measured here. Results go to stdout as "key value" lines. Every message
 * carries "X-Bench-Id: ID" so that the sink can time it too.
 */
#include <errno.h>
#include <math.h>
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
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#define LG_LINE_MAX		1024
#define LG_BODY_LINE		78		/* characters per body line, before CRLF */
#define LG_DEFAULT_SIZE		4096
#define LG_DEFAULT_MAX_CONNS	1000
#define LG_DEFAULT_LIFETIME	600
#define LG_CONNECTS_IN_FLIGHT	64		/* idle mode: sessions being set up */
#define LG_HEADER_MAX		1024

enum lg_mode { MODE_FLOOD, MODE_POISSON, MODE_IDLE };

enum sess_state {
	S_CONNECT,
	S_GREETING,
	S_EHLO,
	S_STARTTLS,
	S_HANDSHAKE,
	S_EHLO_TLS,
	S_AUTH,
	S_IDLE,
	S_ENVELOPE,	/* MAIL RCPT DATA sent; three replies to come */
	S_DOT,		/* body and dot sent */
	S_QUIT,
	S_DEAD,
};

struct sess {
	TAILQ_ENTRY(sess) entry;	/* on the idle list */
	struct bufferevent	*bev;
	enum sess_state		state;
	int			on_idle;
	int			replies;	/* replies awaited in S_ENVELOPE */
	int			failed;		/* a refusal in this transaction */
	long long		msg_id;
	uint64_t		t_arrival, t_dot;
	int			counted;	/* in the statistics (after warm-up) */
};
TAILQ_HEAD(sess_list, sess);

static struct event_base *base;
static SSL_CTX *ssl_ctx;
static enum lg_mode mode;
static const char *addr;
static int use_starttls, use_auth;
static const char *from = "bench@example.com", *rcpt = "rcpt@example.net";
static size_t body_size = LG_DEFAULT_SIZE;
static char *body;
static size_t max_conns = LG_DEFAULT_MAX_CONNS, want_conns;
static long long total = -1, next_id;
static double rate, duration, warmup;
static FILE *ts_file;
static struct sess_list idle = TAILQ_HEAD_INITIALIZER(idle);
static size_t n_sess, n_ready, n_setting_up, backlog;
static uint64_t t_start, t_end_arrivals, t_first_counted, t_last_done;
static uint64_t sent, ok, failed, conns_opened, conns_failed, arrivals;
static uint32_t *lat_us;
static size_t lat_n, lat_cap;
static struct event *arrival_ev, *stop_ev;
static int stopping, ready_printed;
static uint64_t rng_state;

static void	sess_new(void);
static void	sess_start_msg(struct sess *);
static void	sess_idle(struct sess *);
static void	check_done(void);

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void
die(const char *what)
{
	fprintf(stderr, "loadgen: %s\n", what);
	exit(2);
}

static double
parse_double(const char *s, double min, double max)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
		die("bad number in options");
	return v;
}

static double
uniform01(void)
{
	/* xorshift64*, seeded from the OS: good enough for arrival times. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void
lat_add(uint64_t ns)
{
	uint32_t *p;

	if (lat_n == lat_cap) {
		lat_cap = lat_cap == 0 ? 4096 : 2 * lat_cap;
		if ((p = realloc(lat_us, lat_cap * sizeof(*p))) == NULL)
			die("out of memory");
		lat_us = p;
	}
	lat_us[lat_n++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t
pct(double p)
{
	size_t i;

	if (lat_n == 0)
		return 0;
	i = (size_t)ceil(p * (double)lat_n) - 1;
	if (i >= lat_n)
		i = lat_n - 1;
	return lat_us[i];
}

static void
report(void)
{
	uint64_t end = t_last_done != 0 ? t_last_done : mono_ns();
	uint64_t begin = t_first_counted != 0 ? t_first_counted : t_start;
	double elapsed = (double)(end - begin) / 1e9, sum = 0;
	size_t i;

	qsort(lat_us, lat_n, sizeof(*lat_us), cmp_u32);
	for (i = 0; i < lat_n; i++)
		sum += lat_us[i];
	printf("mode %s\n", mode == MODE_FLOOD ? "flood" : mode == MODE_POISSON ? "poisson" :
	    "idle");
	printf("arrivals %llu\n", (unsigned long long)arrivals);
	printf("sent %llu\n", (unsigned long long)sent);
	printf("ok %llu\n", (unsigned long long)ok);
	printf("failed %llu\n", (unsigned long long)failed);
	printf("connections %llu\n", (unsigned long long)conns_opened);
	printf("connections_failed %llu\n", (unsigned long long)conns_failed);
	printf("ready %zu\n", n_ready);
	printf("counted %zu\n", lat_n);
	printf("elapsed_s %.3f\n", elapsed);
	printf("rate %.1f\n", elapsed > 0 ? (double)lat_n / elapsed : 0.0);
	printf("lat_mean_us %.0f\n", lat_n > 0 ? sum / (double)lat_n : 0.0);
	printf("lat_p50_us %u\n", pct(0.50));
	printf("lat_p90_us %u\n", pct(0.90));
	printf("lat_p99_us %u\n", pct(0.99));
	printf("lat_max_us %u\n", lat_n > 0 ? lat_us[lat_n - 1] : 0);
	fflush(stdout);
}

/* ---- Sessions ------------------------------------------------------------ */

static void
sess_free(struct sess *s)
{
	if (s->on_idle) {
		TAILQ_REMOVE(&idle, s, entry);
		s->on_idle = 0;
	}
	if (s->state < S_IDLE && s->state != S_DEAD)
		n_setting_up--;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	n_sess--;
	free(s);
	check_done();
}

static void
sess_fail(struct sess *s, const char *why)
{
	if (s->state == S_ENVELOPE || s->state == S_DOT) {
		failed++;
		if (s->counted)
			t_last_done = mono_ns();
	} else if (s->state < S_IDLE) {
		conns_failed++;
	}
	if (s->state == S_IDLE && mode == MODE_IDLE)
		n_ready--;
	if (conns_failed + failed <= 5)
		fprintf(stderr, "loadgen: session failed in state %d: %s\n", (int)s->state, why);
	sess_free(s);
	/* Keep the offered load: replace a lost flood session. */
	if (mode == MODE_FLOOD && !stopping && (total < 0 || next_id < total))
		sess_new();
}

static void
sess_send(struct sess *s, const char *line)
{
	bufferevent_write(s->bev, line, strlen(line));
}

static void
sess_ehlo(struct sess *s, enum sess_state st)
{
	sess_send(s, "EHLO loadgen.bench.test\r\n");
	s->state = st;
}

static void
sess_ready(struct sess *s)
{
	n_setting_up--;
	s->state = S_IDLE;
	n_ready++;
	if (mode == MODE_IDLE) {
		if (n_ready == want_conns && !ready_printed) {
			ready_printed = 1;
			printf("ready %zu\n", n_ready);
			fflush(stdout);
		}
		/* Open the next ones, a few at a time (listen backlogs are short). */
		while (!stopping && n_sess < want_conns &&
		    n_setting_up < LG_CONNECTS_IN_FLIGHT)
			sess_new();
		return;
	}
	n_ready--;
	sess_idle(s);
}

static void
sess_auth(struct sess *s)
{
	/* AUTH PLAIN of "\0bench\0bench" (the sink takes any credential). */
	sess_send(s, "AUTH PLAIN AGJlbmNoAGJlbmNo\r\n");
	s->state = S_AUTH;
}

static void
sess_start_tls(struct sess *s)
{
	struct bufferevent *f;
	SSL *ssl;

	if ((ssl = SSL_new(ssl_ctx)) == NULL)
		die("SSL_new");
	f = bufferevent_openssl_filter_new(base, s->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (f == NULL)
		die("cannot start TLS");
	s->bev = f;
	s->state = S_HANDSHAKE;
}

static void sess_read_cb(struct bufferevent *, void *);
static void sess_write_cb(struct bufferevent *, void *);
static void sess_event_cb(struct bufferevent *, short, void *);

static void
sess_setcb(struct sess *s)
{
	bufferevent_setcb(s->bev, sess_read_cb, sess_write_cb, sess_event_cb, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* One complete reply with code. Returns -1 when s was freed. */
static int
sess_reply(struct sess *s, int code)
{
	uint64_t now;

	switch (s->state) {
	case S_GREETING:
		if (code != 220)
			goto fail;
		sess_ehlo(s, S_EHLO);
		return 0;
	case S_EHLO:
		if (code != 250)
			goto fail;
		if (use_starttls) {
			sess_send(s, "STARTTLS\r\n");
			s->state = S_STARTTLS;
			return 0;
		}
		sess_ready(s);
		return 0;
	case S_STARTTLS:
		if (code != 220)
			goto fail;
		sess_start_tls(s);
		sess_setcb(s);
		return 1;	/* stop reading the plain buffer */
	case S_EHLO_TLS:
		if (code != 250)
			goto fail;
		if (use_auth) {
			sess_auth(s);
			return 0;
		}
		sess_ready(s);
		return 0;
	case S_AUTH:
		if (code != 235)
			goto fail;
		sess_ready(s);
		return 0;
	case S_ENVELOPE:
		if (--s->replies > 0) {
			if (code / 100 != 2)
				s->failed = 1;
			return 0;
		}
		if (code != 354 || s->failed) {
			sess_fail(s, "envelope refused");
			return -1;
		}
		{
			char hdr[LG_HEADER_MAX];
			int n = snprintf(hdr, sizeof(hdr), "From: <%s>\r\nTo: <%s>\r\n"
			    "Subject: smtpvault benchmark\r\nMessage-ID: <%lld.loadgen@bench.test>\r\n"
			    "X-Bench-Id: %lld\r\n\r\n", from, rcpt, s->msg_id, s->msg_id);

			if (n < 0 || (size_t)n >= sizeof(hdr))
				die("header too long");
			bufferevent_write(s->bev, hdr, (size_t)n);
			bufferevent_write(s->bev, body, body_size);
			bufferevent_write(s->bev, ".\r\n", 3);
		}
		s->t_dot = 0;
		s->state = S_DOT;
		sent++;
		return 0;
	case S_DOT:
		now = mono_ns();
		if (s->t_dot == 0)
			s->t_dot = now;
		if (code / 100 == 2) {
			ok++;
			if (s->counted) {
				lat_add(now - s->t_dot);
				t_last_done = now;
			}
		} else {
			failed++;
		}
		if (ts_file != NULL)
			fprintf(ts_file, "%lld %llu %d\n", s->msg_id, (unsigned long long)s->t_dot,
			    s->counted);
		s->state = S_IDLE;
		sess_idle(s);
		return s->state == S_DEAD ? -1 : 0;
	case S_QUIT:
		return 0;
	default:
		break;
	}
fail:
	sess_fail(s, "unexpected reply");
	return -1;
}

static void
sess_read_cb(struct bufferevent *bev, void *arg)
{
	struct sess *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;
	int code, r;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		if (len < 4 || line[0] < '2' || line[0] > '5') {
			free(line);
			sess_fail(s, "malformed reply");
			return;
		}
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (line[3] == '-') {
			free(line);
			continue;
		}
		free(line);
		if ((r = sess_reply(s, code)) != 0)
			return;
	}
	if (evbuffer_get_length(in) > LG_LINE_MAX)
		sess_fail(s, "reply line too long");
}

static void
sess_write_cb(struct bufferevent *bev, void *arg)
{
	struct sess *s = arg;

	/* The output buffer ran dry: the final dot is with the kernel now. */
	if (s->state == S_DOT && s->t_dot == 0)
		s->t_dot = mono_ns();
}

static void
sess_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct sess *s = arg;

	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == S_CONNECT) {
			s->state = S_GREETING;
			conns_opened++;
		} else if (s->state == S_HANDSHAKE) {
			sess_ehlo(s, S_EHLO_TLS);
		}
		return;
	}
	if (s->state == S_QUIT) {
		sess_free(s);
		return;
	}
	sess_fail(s, what & BEV_EVENT_EOF ? "closed by the server" : "connection error");
}

static void
sess_new(void)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct sess *s;

	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) != 0)
		die("bad address");
	if ((s = calloc(1, sizeof(*s))) == NULL)
		die("out of memory");
	s->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL)
		die("out of memory");
	s->state = S_CONNECT;
	n_sess++;
	n_setting_up++;
	sess_setcb(s);
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&ss, sslen) != 0)
		sess_fail(s, "connect failed");
}

/* ---- Messages ------------------------------------------------------------ */

static void
sess_start_msg(struct sess *s)
{
	char cmd[LG_HEADER_MAX];
	int n;

	n = snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, rcpt);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		die("address too long");
	s->msg_id = next_id++;
	s->failed = 0;
	s->replies = 3;
	s->state = S_ENVELOPE;
	bufferevent_write(s->bev, cmd, (size_t)n);
}

/* A session is free: give it the next message, or park it. */
static void
sess_idle(struct sess *s)
{
	uint64_t now = mono_ns();

	if (stopping || (mode == MODE_FLOOD && total >= 0 && next_id >= total)) {
		sess_send(s, "QUIT\r\n");
		s->state = S_QUIT;
		check_done();
		return;
	}
	if (mode == MODE_FLOOD) {
		s->counted = now >= t_start + (uint64_t)(warmup * 1e9);
		if (s->counted && t_first_counted == 0)
			t_first_counted = now;
		if (duration > 0 && now >= t_start + (uint64_t)((warmup + duration) * 1e9)) {
			stopping = 1;
			sess_send(s, "QUIT\r\n");
			s->state = S_QUIT;
			check_done();
			return;
		}
		sess_start_msg(s);
		return;
	}
	if (backlog > 0) {
		backlog--;
		s->counted = now >= t_start + (uint64_t)(warmup * 1e9);
		sess_start_msg(s);
		return;
	}
	s->on_idle = 1;
	TAILQ_INSERT_TAIL(&idle, s, entry);
}

static void
arrival_cb(evutil_socket_t fd, short what, void *arg)
{
	static uint64_t next;
	uint64_t now = mono_ns();
	struct timeval tv;
	struct sess *s;
	double gap;

	if (next == 0)
		next = now;
	while (next <= now && !stopping) {
		if (next >= t_end_arrivals) {
			stopping = 1;
			break;
		}
		arrivals++;
		if ((s = TAILQ_FIRST(&idle)) != NULL) {
			TAILQ_REMOVE(&idle, s, entry);
			s->on_idle = 0;
			s->counted = next >= t_start + (uint64_t)(warmup * 1e9);
			sess_start_msg(s);
		} else {
			backlog++;
			if (n_sess < max_conns)
				sess_new();
		}
		gap = -log(1.0 - uniform01()) / rate;
		next += (uint64_t)(gap * 1e9);
	}
	if (stopping) {
		/* Idle sessions go now; busy ones after their message. */
		while ((s = TAILQ_FIRST(&idle)) != NULL) {
			TAILQ_REMOVE(&idle, s, entry);
			s->on_idle = 0;
			sess_send(s, "QUIT\r\n");
			s->state = S_QUIT;
		}
		check_done();
		return;
	}
	tv.tv_sec = (time_t)((next - now) / 1000000000ULL);
	tv.tv_usec = (suseconds_t)(((next - now) % 1000000000ULL) / 1000);
	evtimer_add(arrival_ev, &tv);
}

static void
check_done(void)
{
	if (n_sess > 0)
		return;
	if ((mode == MODE_POISSON && stopping) ||
	    (mode == MODE_FLOOD && (stopping || (total >= 0 && next_id >= total))))
		event_base_loopexit(base, NULL);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	/* Lifetime over, or idle mode's hold time: report what we have. */
	event_base_loopexit(base, NULL);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopexit(base, NULL);
}

static void
usage(void)
{
	fprintf(stderr, "usage: loadgen flood|poisson|idle [-c CONNS] [-n TOTAL] [-R RATE] "
	    "[-T SECS] [-w SECS] [-l BYTES] [-S] [-A CAFILE] [-a] [-f FROM] [-t RCPT] [-o FILE] "
	    "[-i FIRST_ID] [-x SECS] ADDR:PORT\n");
	exit(2);
}

static void
body_make(void)
{
	size_t i, col = 0;

	if ((body = malloc(body_size + 2)) == NULL)
		die("out of memory");
	for (i = 0; i < body_size; i++) {
		if (col == LG_BODY_LINE) {
			body[i] = '\r';
			col++;
		} else if (col == LG_BODY_LINE + 1) {
			body[i] = '\n';
			col = 0;
		} else {
			body[i] = (char)('a' + (i % 26));
			col++;
		}
	}
	/* End on a line end, so the dot line follows CRLF. */
	if (body_size >= 2) {
		body[body_size - 2] = '\r';
		body[body_size - 1] = '\n';
	}
}

int
main(int argc, char **argv)
{
	const char *ca = NULL, *ts_path = NULL;
	double lifetime = LG_DEFAULT_LIFETIME;
	struct event *sig_int, *sig_term;
	struct timeval tv;
	struct rlimit rl;
	int ch;
	size_t i;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "flood") == 0)
		mode = MODE_FLOOD;
	else if (strcmp(argv[1], "poisson") == 0)
		mode = MODE_POISSON;
	else if (strcmp(argv[1], "idle") == 0)
		mode = MODE_IDLE;
	else
		usage();
	optind = 2;
	while ((ch = getopt(argc, argv, "c:n:R:T:w:l:SA:af:t:o:i:x:")) != -1) {
		switch (ch) {
		case 'c': want_conns = (size_t)parse_double(optarg, 1, 1e6); break;
		case 'n': total = (long long)parse_double(optarg, 1, 1e12); break;
		case 'R': rate = parse_double(optarg, 0.001, 1e7); break;
		case 'T': duration = parse_double(optarg, 0, 86400); break;
		case 'w': warmup = parse_double(optarg, 0, 86400); break;
		case 'l': body_size = (size_t)parse_double(optarg, 2, 1e9); break;
		case 'S': use_starttls = 1; break;
		case 'A': ca = optarg; break;
		case 'a': use_auth = 1; break;
		case 'f': from = optarg; break;
		case 't': rcpt = optarg; break;
		case 'o': ts_path = optarg; break;
		case 'i': next_id = (long long)parse_double(optarg, 0, 1e15); break;
		case 'x': lifetime = parse_double(optarg, 1, 86400); break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	addr = argv[optind];
	if (mode == MODE_POISSON && (rate <= 0 || duration <= 0))
		die("poisson needs -R RATE and -T SECS");
	if (mode == MODE_FLOOD && want_conns == 0)
		die("flood needs -c CONNS");
	if (mode == MODE_FLOOD && total < 0 && duration <= 0)
		die("flood needs -n TOTAL or -T SECS");
	if (mode == MODE_IDLE && (want_conns == 0 || duration <= 0))
		die("idle needs -c CONNS and -T SECS");
	if (mode == MODE_POISSON && want_conns > 0)
		max_conns = want_conns;
	if (use_auth && !use_starttls)
		die("-a needs -S");
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	if (RAND_bytes((unsigned char *)&rng_state, sizeof(rng_state)) != 1 || rng_state == 0)
		rng_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	body_make();
	if (ts_path != NULL && (ts_file = fopen(ts_path, "w")) == NULL)
		die("cannot open the timestamp file");
	if (use_starttls) {
		if ((ssl_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
			die("SSL_CTX_new");
		if (ca != NULL) {
			if (SSL_CTX_load_verify_locations(ssl_ctx, ca, NULL) != 1)
				die("cannot load -A CAFILE");
			SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
		}
	}
	{
		struct event_config *cfg = event_config_new();

		if (cfg == NULL || event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER) != 0 ||
		    (base = event_base_new_with_config(cfg)) == NULL)
			die("cannot create the event loop");
		event_config_free(cfg);
	}
	sig_int = evsignal_new(base, SIGINT, signal_cb, NULL);
	sig_term = evsignal_new(base, SIGTERM, signal_cb, NULL);
	if (sig_int == NULL || sig_term == NULL || evsignal_add(sig_int, NULL) != 0 ||
	    evsignal_add(sig_term, NULL) != 0)
		die("cannot set up signals");
	stop_ev = evtimer_new(base, stop_cb, NULL);
	arrival_ev = evtimer_new(base, arrival_cb, NULL);
	if (stop_ev == NULL || arrival_ev == NULL)
		die("out of memory");
	t_start = mono_ns();
	switch (mode) {
	case MODE_FLOOD:
		for (i = 0; i < want_conns; i++)
			sess_new();
		break;
	case MODE_POISSON:
		t_end_arrivals = t_start + (uint64_t)((warmup + duration) * 1e9);
		arrival_cb(-1, 0, NULL);
		break;
	case MODE_IDLE:
		for (i = 0; i < want_conns && i < LG_CONNECTS_IN_FLIGHT; i++)
			sess_new();
		lifetime = duration;
		break;
	}
	tv.tv_sec = (time_t)lifetime;
	tv.tv_usec = (suseconds_t)((lifetime - (double)tv.tv_sec) * 1e6);
	evtimer_add(stop_ev, &tv);

	event_base_dispatch(base);

	report();
	if (ts_file != NULL)
		fclose(ts_file);
	return 0;
}
