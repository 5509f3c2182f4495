/*
 * test_smtp_client.c: the upstream client against a scripted fake server on
 * 127.0.0.1. Each scenario is data: "S: ..." is what the server answers,
 * "C: ..." is exactly the line the client must send next, "TLS" starts TLS
 * on the server side (with a test certificate made here with the OpenSSL
 * API), "TLSFAIL" is a handshake that must fail, "EOF" reads whatever the
 * client still sends until it closes, "ACCEPT" takes the next connection.
 * The server keeps a transcript of every byte it received, so a test can
 * prove that no AUTH byte was ever sent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "config.h"
#include "credential.h"
#include "log.h"
#include "relay.h"
#include "smtp_client.h"
#include "upstream_pool.h"

#define TEST_USER	"u@x.test"
#define TEST_SECRET	"app-pass"
#define TEST_PLAIN	"AUTH PLAIN AHVAeC50ZXN0AGFwcC1wYXNz"	/* \0u@x.test\0app-pass */
#define TEST_B64_USER	"dUB4LnRlc3Q="
#define TEST_B64_PASS	"YXBwLXBhc3M="
#define TEST_HELO	"client.test"
#define TEST_TIMEOUT	5
#define FAKE_IO_TIMEOUT	10	/* seconds the fake server waits for a line */
#define FAKE_LINE_MAX	8192

/* Stubs for what the real daemon gets from credential.c and vault/. */

static uint32_t stub_version = 7;
static uint64_t stub_daily_limit;	/* 0: the default */
static int stub_fetches;
static int stub_reports_ok, stub_reports_fail;
static char stub_last_report[512];

int
vault_secret_set(struct vault_secret *s, const unsigned char *buf, size_t len)
{
	if ((s->buf = sodium_malloc(len + 1)) == NULL)
		return -1;
	memcpy(s->buf, buf, len);
	s->buf[len] = '\0';
	s->len = len;
	return 0;
}

void
vault_secret_wipe(struct vault_secret *s)
{
	if (s->buf != NULL)
		sodium_free(s->buf);
	s->buf = NULL;
	s->len = 0;
}

void
cred_wipe(struct cred *c)
{
	vault_secret_wipe(&c->secret);
	sodium_memzero(c, sizeof(*c));
}

enum cred_result
credstore_info(struct credstore *cs, const char *account, struct cred_info *out)
{
	memset(out, 0, sizeof(*out));
	strlcpy(out->address, account, sizeof(out->address));
	out->upstream_tls = -1;
	out->version = stub_version;
	out->daily_limit = stub_daily_limit;
	return CRED_OK;
}

enum cred_result
credstore_fetch(struct credstore *cs, const char *account, struct cred *out)
{
	memset(out, 0, sizeof(*out));
	stub_fetches++;
	strlcpy(out->user, TEST_USER, sizeof(out->user));
	out->version = stub_version;
	if (vault_secret_set(&out->secret, (const unsigned char *)TEST_SECRET,
	    strlen(TEST_SECRET)) == -1)
		return CRED_TEMPFAIL;
	return CRED_OK;
}

void
credstore_report_auth(struct credstore *cs, const char *account, uint32_t version, int ok,
    const char *reply)
{
	if (ok)
		stub_reports_ok++;
	else
		stub_reports_fail++;
	strlcpy(stub_last_report, reply, sizeof(stub_last_report));
}

/* Test certificates. */

struct test_cert {
	EVP_PKEY	*key;
	X509		*x509;
};

static struct test_cert cert_good;	/* localhost + 127.0.0.1, trusted */
static struct test_cert cert_wrong;	/* wrong.example, trusted */
static struct test_cert cert_untrusted;	/* 127.0.0.1, not in ca_file */
static char tmpdir[64];
static char ca_file[128];

static void
cert_make(struct test_cert *tc, const char *cn, const char *san, long serial)
{
	X509_NAME *name;
	X509_EXTENSION *ext;
	X509V3_CTX v3;

	tc->key = EVP_EC_gen("P-256");
	assert_non_null(tc->key);
	tc->x509 = X509_new();
	assert_non_null(tc->x509);
	X509_set_version(tc->x509, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(tc->x509), serial);
	X509_gmtime_adj(X509_getm_notBefore(tc->x509), -3600);
	X509_gmtime_adj(X509_getm_notAfter(tc->x509), 86400);
	X509_set_pubkey(tc->x509, tc->key);
	name = X509_get_subject_name(tc->x509);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(tc->x509, name);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, tc->x509, tc->x509, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	assert_non_null(ext);
	X509_add_ext(tc->x509, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
	assert_non_null(ext);
	X509_add_ext(tc->x509, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(tc->x509, tc->key, EVP_sha256()) > 0);
}

static void
cert_free(struct test_cert *tc)
{
	X509_free(tc->x509);
	EVP_PKEY_free(tc->key);
}

static int
group_setup(void **state)
{
	FILE *f;

	if (sodium_init() < 0)
		return -1;
	log_init("test_smtp_client", getenv("TEST_VERBOSE") != NULL);
	strlcpy(tmpdir, "/tmp/smtpvault-client.XXXXXX", sizeof(tmpdir));
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", tmpdir);
	cert_make(&cert_good, "localhost", "DNS:localhost,IP:127.0.0.1", 1);
	cert_make(&cert_wrong, "wrong.example", "DNS:wrong.example", 2);
	cert_make(&cert_untrusted, "localhost", "DNS:localhost,IP:127.0.0.1", 3);
	if ((f = fopen(ca_file, "w")) == NULL)
		return -1;
	PEM_write_X509(f, cert_good.x509);
	PEM_write_X509(f, cert_wrong.x509);
	fclose(f);
	return 0;
}

static int
group_teardown(void **state)
{
	unlink(ca_file);
	rmdir(tmpdir);
	cert_free(&cert_good);
	cert_free(&cert_wrong);
	cert_free(&cert_untrusted);
	return 0;
}

/* The fake server. */

struct fake {
	int			lfd;
	uint16_t		port;
	const char *const	*script;
	struct test_cert	*cert;
	pthread_t		thread;
	/* Results, read after join. */
	int			failed;
	char			why[1024];
	char			*transcript;
	size_t			tlen, tcap;
	int			connections;
};

struct fake_conn {
	int		fd;
	SSL_CTX		*ctx;
	SSL		*ssl;
	char		buf[FAKE_LINE_MAX];
	size_t		len;
};

static void
fake_record(struct fake *f, const char *p, size_t n)
{
	if (f->tlen + n + 1 > f->tcap) {
		f->tcap = (f->tlen + n + 1) * 2;
		f->transcript = realloc(f->transcript, f->tcap);
		if (f->transcript == NULL)
			abort();
	}
	memcpy(f->transcript + f->tlen, p, n);
	f->tlen += n;
	f->transcript[f->tlen] = '\0';
}

static void
fake_fail(struct fake *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fake_fail(struct fake *f, const char *fmt, ...)
{
	va_list ap;

	if (f->failed)
		return;
	f->failed = 1;
	va_start(ap, fmt);
	vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
}

static ssize_t
fake_read_some(struct fake *f, struct fake_conn *fc)
{
	ssize_t n;

	if (fc->len >= sizeof(fc->buf))
		return -1;
	if (fc->ssl != NULL)
		n = SSL_read(fc->ssl, fc->buf + fc->len, (int)(sizeof(fc->buf) - fc->len));
	else
		n = recv(fc->fd, fc->buf + fc->len, sizeof(fc->buf) - fc->len, 0);
	if (n <= 0)
		return -1;
	fake_record(f, fc->buf + fc->len, (size_t)n);
	fc->len += (size_t)n;
	return n;
}

/* One line without CRLF into out; -1 at EOF. */
static int
fake_read_line(struct fake *f, struct fake_conn *fc, char *out, size_t outlen)
{
	char *nl;
	size_t n;

	while ((nl = memchr(fc->buf, '\n', fc->len)) == NULL)
		if (fake_read_some(f, fc) == -1)
			return -1;
	n = (size_t)(nl - fc->buf);
	if (n > 0 && fc->buf[n - 1] == '\r')
		n--;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, fc->buf, n);
	out[n] = '\0';
	fc->len -= (size_t)(nl + 1 - fc->buf);
	for (n = 0; n < fc->len; n++)
		fc->buf[n] = nl[1 + n];
	return 0;
}

static void
fake_write(struct fake_conn *fc, const char *s, size_t n)
{
	if (fc->ssl != NULL)
		SSL_write(fc->ssl, s, (int)n);
	else if (send(fc->fd, s, n, MSG_NOSIGNAL) < 0)
		return;
}

static void
fake_close(struct fake_conn *fc)
{
	if (fc->ssl != NULL) {
		SSL_shutdown(fc->ssl);
		SSL_free(fc->ssl);
		fc->ssl = NULL;
	}
	if (fc->fd != -1)
		close(fc->fd);
	fc->fd = -1;
	fc->len = 0;
}

static int
fake_accept(struct fake *f, struct fake_conn *fc)
{
	struct timeval tv = { FAKE_IO_TIMEOUT, 0 };

	fake_close(fc);
	if ((fc->fd = accept(f->lfd, NULL, NULL)) == -1)
		return -1;
	setsockopt(fc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	f->connections++;
	return 0;
}

static void *
fake_main(void *arg)
{
	struct fake *f = arg;
	struct fake_conn fc;
	char line[FAKE_LINE_MAX], out[FAKE_LINE_MAX];
	size_t i;
	int n;

	memset(&fc, 0, sizeof(fc));
	fc.fd = -1;
	fc.ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_use_certificate(fc.ctx, f->cert->x509);
	SSL_CTX_use_PrivateKey(fc.ctx, f->cert->key);
	if (fake_accept(f, &fc) == -1) {
		fake_fail(f, "accept failed");
		goto done;
	}
	for (i = 0; f->script[i] != NULL && !f->failed; i++) {
		const char *step = f->script[i];

		if (strncmp(step, "S: ", 3) == 0) {
			n = snprintf(out, sizeof(out), "%s\r\n", step + 3);
			fake_write(&fc, out, (size_t)n);
		} else if (strncmp(step, "C: ", 3) == 0) {
			if (fake_read_line(f, &fc, line, sizeof(line)) == -1)
				fake_fail(f, "step %zu: EOF, expected \"%s\"", i, step + 3);
			else if (strcmp(line, step + 3) != 0)
				fake_fail(f, "step %zu: got \"%s\", expected \"%s\"", i, line, step + 3);
		} else if (strcmp(step, "TLS") == 0 || strcmp(step, "TLSFAIL") == 0) {
			int want_fail = strcmp(step, "TLSFAIL") == 0, ok;

			fc.ssl = SSL_new(fc.ctx);
			SSL_set_fd(fc.ssl, fc.fd);
			ok = SSL_accept(fc.ssl) == 1;
			if (!ok) {
				SSL_free(fc.ssl);
				fc.ssl = NULL;
			}
			if (ok == want_fail)
				fake_fail(f, "step %zu: TLS handshake %s", i, ok ? "succeeded" : "failed");
		} else if (strcmp(step, "EOF") == 0) {
			while (fake_read_some(f, &fc) > 0)
				fc.len = 0;
		} else if (strcmp(step, "CLOSE") == 0) {
			fake_close(&fc);
		} else if (strcmp(step, "ACCEPT") == 0) {
			if (fake_accept(f, &fc) == -1)
				fake_fail(f, "step %zu: accept failed", i);
		} else if (strncmp(step, "SLEEP ", 6) == 0) {
			usleep((useconds_t)strtoul(step + 6, NULL, 10) * 1000);
		} else {
			fake_fail(f, "step %zu: bad script step \"%s\"", i, step);
		}
	}
	if (!f->failed && fc.fd != -1) {
		/* Whatever else the client sends is recorded too. */
		while (fake_read_some(f, &fc) > 0)
			fc.len = 0;
	}
done:
	fake_close(&fc);
	SSL_CTX_free(fc.ctx);
	ERR_clear_error();
	return NULL;
}

static void
fake_start(struct fake *f, const char *const *script, struct test_cert *cert)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(f, 0, sizeof(*f));
	f->script = script;
	f->cert = cert;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sin, &len), 0);
	f->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void
fake_finish(struct fake *f)
{
	pthread_join(f->thread, NULL);
	close(f->lfd);
	if (f->failed)
		print_error("fake server: %s\ntranscript:\n%s\n", f->why,
		    f->transcript ? f->transcript : "");
}

static void
fake_free(struct fake *f)
{
	free(f->transcript);
	f->transcript = NULL;
}

static int
transcript_has(const struct fake *f, const char *s)
{
	return f->transcript != NULL && memmem(f->transcript, f->tlen, s, strlen(s)) != NULL;
}

/* The client side. */

static void
target_init(struct upstream_target *t, const char *host, uint16_t port, enum upstream_tls tls)
{
	memset(t, 0, sizeof(*t));
	strlcpy(t->host, host, sizeof(t->host));
	t->port = port;
	t->tls = tls;
	strlcpy(t->ca_file, ca_file, sizeof(t->ca_file));
	t->timeout = TEST_TIMEOUT;
	strlcpy(t->helo, TEST_HELO, sizeof(t->helo));
}

#define DRIVE_MAX_MSGS	4

struct drive {
	struct event_base	*base;
	struct relay_msg	*msgs[DRIVE_MAX_MSGS];
	size_t			n_msgs, next;
	struct smtp_outcome	done[DRIVE_MAX_MSGS];
	size_t			n_done;
	struct smtp_outcome	closed;
	int			n_closed;
	int			n_ready;
	int			fetches;
};

static int
drive_cred(void *arg, struct cred *out, char *err, size_t errlen)
{
	struct drive *d = arg;

	d->fetches++;
	return credstore_fetch(NULL, TEST_USER, out) == CRED_OK ? 0 : -1;
}

static void
drive_event(struct smtp_client *c, enum smtp_client_event ev, const struct smtp_outcome *o,
    void *arg)
{
	struct drive *d = arg;

	switch (ev) {
	case SMTP_CLIENT_READY:
		d->n_ready++;
		while (d->next < d->n_msgs) {
			struct smtp_outcome now;

			if (smtp_client_send(c, d->msgs[d->next++], &now) == 0)
				return;
			d->done[d->n_done++] = now;
		}
		assert_int_equal(smtp_client_quit(c), 0);
		break;
	case SMTP_CLIENT_DONE:
		assert_true(d->n_done < DRIVE_MAX_MSGS);
		d->done[d->n_done++] = *o;
		break;
	case SMTP_CLIENT_CLOSED:
		d->closed = *o;
		d->n_closed++;
		event_base_loopbreak(d->base);
		break;
	}
}

static struct relay_msg *
msg_new(const char *from, const char *const *rcpts, size_t n, const char *data)
{
	struct relay_msg *m = calloc(1, sizeof(*m));
	size_t i;

	assert_non_null(m);
	strlcpy(m->queue_id, "TESTQ1", sizeof(m->queue_id));
	strlcpy(m->account, TEST_USER, sizeof(m->account));
	strlcpy(m->mail_from, from, sizeof(m->mail_from));
	m->rcpts = calloc(n, sizeof(*m->rcpts));
	assert_non_null(m->rcpts);
	for (i = 0; i < n; i++)
		strlcpy(m->rcpts[i], rcpts[i], sizeof(m->rcpts[i]));
	m->n_rcpts = n;
	m->data = evbuffer_new();
	evbuffer_add(m->data, data, strlen(data));
	return m;
}

static void
msg_free(struct relay_msg *m)
{
	if (m == NULL)
		return;
	evbuffer_free(m->data);
	free(m->rcpts);
	free(m);
}

/* libevent finalises a freed TLS filter, and then the socket under it, from
 * the loop: give it the turns it needs before the base goes. */
static void
base_free(struct event_base *base)
{
	int i;

	for (i = 0; i < 4; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
}

/* Run one client session against a scenario to the end. */
static void
drive_run(struct drive *d, struct fake *f, const char *const *script, struct test_cert *cert,
    const char *host, enum upstream_tls tls)
{
	struct upstream_target t;
	struct smtp_client *c;
	SSL_CTX *ctx;
	char err[256];

	fake_start(f, script, cert);
	target_init(&t, host, f->port, tls);
	d->base = event_base_new();
	assert_non_null(d->base);
	ctx = smtp_client_tls_ctx_new(t.ca_file, err, sizeof(err));
	assert_non_null(ctx);
	c = smtp_client_new(d->base, NULL, ctx, &t, drive_cred, drive_event, d);
	assert_non_null(c);
	event_base_dispatch(d->base);
	smtp_client_free(c);
	SSL_CTX_free(ctx);
	base_free(d->base);
	fake_finish(f);
}

static void
drive_free(struct drive *d)
{
	size_t i;

	for (i = 0; i < d->n_msgs; i++)
		msg_free(d->msgs[i]);
}

#define EHLO_TLS_PLAIN	"S: 250-fake.test\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n" \
			"250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH LOGIN PLAIN XOAUTH2"
#define START_STARTTLS \
	"S: 220 fake.test ESMTP", \
	"C: EHLO " TEST_HELO, \
	"S: 250-fake.test\r\n250-STARTTLS\r\n250 PIPELINING", \
	"C: STARTTLS", \
	"S: 220 2.0.0 Ready to start TLS", \
	"TLS", \
	"C: EHLO " TEST_HELO

static const char *const rcpt1[] = { "r@y.test" };
static const char *const rcpt3[] = { "a@y.test", "b@y.test", "c@y.test" };

/* STARTTLS, AUTH PLAIN, one pipelined message, QUIT. */
static void
test_happy_starttls_plain(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=21",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 Go ahead",
		"C: Subject: hi",
		"C: ",
		"C: body",
		"C: .",
		"S: 250 2.0.0 OK 1700000000 abc.123 - gsmtp",
		"C: QUIT",
		"S: 221 2.0.0 closing connection",
		"CLOSE",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "Subject: hi\r\n\r\nbody\r\n");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_ready, 2);
	assert_int_equal(d.fetches, 1);
	assert_int_equal(d.n_done, 1);
	assert_int_equal(d.done[0].error, SMTP_ERR_NONE);
	assert_int_equal(d.done[0].code, 250);
	assert_string_equal(d.done[0].enhanced, "2.0.0");
	assert_string_equal(d.done[0].text, "OK 1700000000 abc.123 - gsmtp");
	assert_int_equal(d.n_closed, 1);
	assert_int_equal(d.closed.error, SMTP_ERR_NONE);
	drive_free(&d);
	fake_free(&f);
}

/* Implicit TLS on a name (SNI and the DNS host-name check), AUTH LOGIN
 * because PLAIN is not offered, no PIPELINING: one command at a time. */
static void
test_implicit_login_no_pipelining(void **state)
{
	static const char *const script[] = {
		"TLS",
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test\r\n250 AUTH LOGIN",
		"C: AUTH LOGIN",
		"S: 334 VXNlcm5hbWU6",
		"C: " TEST_B64_USER,
		"S: 334 UGFzc3dvcmQ6",
		"C: " TEST_B64_PASS,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<>",
		"S: 250 OK",
		"C: RCPT TO:<a@y.test>",
		"S: 250 OK",
		"C: RCPT TO:<b@y.test>",
		"S: 250 OK",
		"C: RCPT TO:<c@y.test>",
		"S: 250 OK",
		"C: DATA",
		"S: 354 go",
		"C: x",
		"C: .",
		"S: 250 queued",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("", rcpt3, 3, "x");
	drive_run(&d, &f, script, &cert_good, "localhost", UPSTREAM_TLS_IMPLICIT);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 1);
	assert_int_equal(d.done[0].error, SMTP_ERR_NONE);
	assert_int_equal(d.done[0].code, 250);
	assert_string_equal(d.done[0].text, "queued");
	drive_free(&d);
	fake_free(&f);
}

/* No STARTTLS in the EHLO reply: abandoned, not one AUTH byte. */
static void
test_no_starttls(void **state)
{
	static const char *const script[] = {
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING",
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_ready, 0);
	assert_int_equal(d.fetches, 0);
	assert_int_equal(d.closed.error, SMTP_ERR_NO_STARTTLS);
	assert_int_equal(d.closed.stage, SMTP_STAGE_TLS);
	assert_string_equal(d.closed.text, "upstream does not offer STARTTLS");
	assert_false(transcript_has(&f, "AUTH"));
	fake_free(&f);
}

/* Bytes pipelined after the 220 to STARTTLS: response injection. */
static void
test_starttls_injection(void **state)
{
	static const char *const script[] = {
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test\r\n250 STARTTLS",
		"C: STARTTLS",
		"S: 220 2.0.0 Ready to start TLS\r\n250-fake.test\r\n250 AUTH PLAIN",
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.fetches, 0);
	assert_int_equal(d.closed.error, SMTP_ERR_PROTOCOL);
	assert_non_null(strstr(d.closed.text, "injection"));
	assert_false(transcript_has(&f, "AUTH"));
	fake_free(&f);
}

/* A trusted certificate for another name: the handshake fails, no AUTH. */
static void
test_wrong_host_cert(void **state)
{
	static const char *const script[] = {
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test\r\n250 STARTTLS",
		"C: STARTTLS",
		"S: 220 2.0.0 Ready to start TLS",
		"TLSFAIL",
		"EOF",
		NULL,
	};
	static const char *const hosts[] = { "127.0.0.1", "localhost" };
	size_t i;

	for (i = 0; i < 2; i++) {
		struct drive d = { 0 };
		struct fake f;

		drive_run(&d, &f, script, &cert_wrong, hosts[i], UPSTREAM_TLS_STARTTLS);
		assert_false(f.failed);
		assert_int_equal(d.fetches, 0);
		assert_int_equal(d.closed.error, SMTP_ERR_TLS_VERIFY);
		assert_non_null(strstr(d.closed.text, "upstream TLS verification failed: "));
		assert_false(transcript_has(&f, "AUTH"));
		fake_free(&f);
	}
}

/* A self-signed certificate nobody trusts: same, on implicit TLS. */
static void
test_untrusted_cert(void **state)
{
	static const char *const script[] = { "TLSFAIL", "EOF", NULL };
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_untrusted, "127.0.0.1", UPSTREAM_TLS_IMPLICIT);
	assert_false(f.failed);
	assert_int_equal(d.fetches, 0);
	assert_int_equal(d.closed.error, SMTP_ERR_TLS_VERIFY);
	assert_int_equal(d.closed.stage, SMTP_STAGE_TLS);
	assert_false(transcript_has(&f, "AUTH"));
	fake_free(&f);
}

/* 535: the credential is refused, permanently. */
static void
test_auth_refused(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
		"535 5.7.8  https://support.google.com/mail/?p=BadCredentials x - gsmtp",
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_ready, 0);
	assert_int_equal(d.closed.error, SMTP_ERR_AUTH_REFUSED);
	assert_int_equal(d.closed.stage, SMTP_STAGE_AUTH);
	assert_true(d.closed.auth_failed);
	assert_false(d.closed.temporary);
	assert_int_equal(d.closed.code, 535);
	assert_string_equal(d.closed.enhanced, "5.7.8");
	assert_non_null(strstr(d.closed.text, "BadCredentials"));
	fake_free(&f);
}

/* 454: temporary, not a refused credential. */
static void
test_auth_tempfail(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 454 4.7.0 Too many login attempts, please try again later.",
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.closed.error, SMTP_ERR_REPLY);
	assert_false(d.closed.auth_failed);
	assert_true(d.closed.temporary);
	assert_int_equal(d.closed.code, 454);
	fake_free(&f);
}

/* Dot-stuffing on the wire, a missing final CRLF, then a second message on
 * the same session with RSET first. */
static void
test_dot_stuffing_and_reuse(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=29",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 Go ahead",
		"C: ..leading",
		"C: ...",
		"C: mid.dle",
		"C: ..",
		"C: end",
		"C: .",
		"S: 250 2.0.0 OK first",
		"C: RSET",
		"C: MAIL FROM:<s@x.test> SIZE=6",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n250 OK\r\n354 Go ahead",
		"C: second",
		"C: .",
		"S: 250 2.0.0 OK second",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, ".leading\r\n..\r\nmid.dle\r\n.\r\nend");
	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "second");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.fetches, 1);
	assert_int_equal(d.n_done, 2);
	assert_string_equal(d.done[0].text, "OK first");
	assert_string_equal(d.done[1].text, "OK second");
	drive_free(&d);
	fake_free(&f);
}

/* One refused recipient: the pipelined DATA got 354 anyway, so the session
 * is dropped without a dot; the refusal is the message's reply. */
static void
test_rcpt_refused_pipelined(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=1",
		"C: RCPT TO:<a@y.test>",
		"C: RCPT TO:<b@y.test>",
		"C: RCPT TO:<c@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n550-5.1.1 The email account that you tried to reach does "
		"not exist.\r\n550 5.1.1 Please try again. x - gsmtp\r\n250 OK\r\n354 Go ahead",
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt3, 3, "x");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 1);
	assert_int_equal(d.done[0].error, SMTP_ERR_REPLY);
	assert_int_equal(d.done[0].stage, SMTP_STAGE_RCPT);
	assert_int_equal(d.done[0].rcpt_index, 1);
	assert_int_equal(d.done[0].code, 550);
	assert_string_equal(d.done[0].enhanced, "5.1.1");
	assert_non_null(strstr(d.done[0].text, "<b@y.test>: The email account"));
	assert_false(transcript_has(&f, "\r\n.\r\n"));
	drive_free(&d);
	fake_free(&f);
}

/* 421 to a pipelined MAIL, then the server hangs up: the message's outcome
 * is the 421, not "connection lost". */
static void
test_pipelined_421_then_close(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=1",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 421 4.7.0 Try again later, closing connection. x - gsmtp",
		"CLOSE",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "x");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 1);
	assert_int_equal(d.done[0].error, SMTP_ERR_REPLY);
	assert_int_equal(d.done[0].stage, SMTP_STAGE_MAIL);
	assert_int_equal(d.done[0].code, 421);
	assert_true(d.done[0].temporary);
	assert_int_equal(d.n_closed, 1);
	drive_free(&d);
	fake_free(&f);
}

#define EHLO_TLS_CHUNKING "S: 250-fake.test\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n" \
			"250-PIPELINING\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n" \
			"250 AUTH LOGIN PLAIN XOAUTH2"

/*
 * CHUNKING and PIPELINING, one recipient: MAIL, RCPT, BDAT and the bytes
 * arrive before the server says a word (the script reads them all first),
 * not dot-stuffed; a message without a final CRLF gets one, counted in the
 * size. The second message on the session has RSET first, in the same
 * flight.
 */
static void
test_chunking_one_flight(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_CHUNKING,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=29 BODY=8BITMIME",
		"C: RCPT TO:<r@y.test>",
		"C: BDAT 31 LAST",
		"C: .leading",
		"C: ..",
		"C: mid.dle",
		"C: .",
		"C: end",
		"S: 250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.0.0 OK first",
		"C: RSET",
		"C: MAIL FROM:<s@x.test> SIZE=8",
		"C: RCPT TO:<r@y.test>",
		"C: BDAT 8 LAST",
		"C: second",
		"S: 250 2.1.5 Flushed\r\n250 OK\r\n250 OK\r\n250 2.0.0 OK second",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, ".leading\r\n..\r\nmid.dle\r\n.\r\nend");
	d.msgs[0]->body_8bit = 1;
	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "second\r\n");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 2);
	assert_int_equal(d.done[0].error, SMTP_ERR_NONE);
	assert_int_equal(d.done[0].stage, SMTP_STAGE_DATA);
	assert_string_equal(d.done[0].text, "OK first");
	assert_string_equal(d.done[1].text, "OK second");
	assert_false(transcript_has(&f, "DATA"));
	drive_free(&d);
	fake_free(&f);
}

/*
 * Replies to BDAT are read like replies to the final dot: a refused chunk
 * after an accepted envelope is the message's reply, and the session goes
 * on; a 421 ends it.
 */
static void
test_chunking_refusals(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_CHUNKING,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=1",
		"C: RCPT TO:<r@y.test>",
		"C: BDAT 3 LAST",
		"C: y",
		"S: 250 OK\r\n250 OK\r\n"
		"552-5.3.4 Your message exceeded Google's message size limits.\r\n"
		"552 5.3.4 See https://support.google.com x - gsmtp",
		"C: RSET",
		"C: MAIL FROM:<s@x.test> SIZE=1",
		"C: RCPT TO:<r@y.test>",
		"C: BDAT 3 LAST",
		"C: z",
		"S: 250 OK\r\n250 OK\r\n250 OK\r\n421 4.7.0 Try again later, closing connection.",
		"CLOSE",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "y");
	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "z");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 2);
	assert_int_equal(d.done[0].error, SMTP_ERR_REPLY);
	assert_int_equal(d.done[0].stage, SMTP_STAGE_DATA);
	assert_int_equal(d.done[0].code, 552);
	assert_string_equal(d.done[0].enhanced, "5.3.4");
	assert_non_null(strstr(d.done[0].text, "size limits"));
	assert_int_equal(d.done[1].stage, SMTP_STAGE_DATA);
	assert_int_equal(d.done[1].code, 421);
	assert_true(d.done[1].temporary);
	assert_int_equal(d.n_closed, 1);
	drive_free(&d);
	fake_free(&f);
}

/* Logged in, then one message "x" in one flight. */
#define ONE_FLIGHT_X \
		START_STARTTLS, \
		EHLO_TLS_CHUNKING, \
		"C: " TEST_PLAIN, \
		"S: 235 2.7.0 Accepted", \
		"C: MAIL FROM:<s@x.test> SIZE=1", \
		"C: RCPT TO:<r@y.test>", \
		"C: BDAT 3 LAST", \
		"C: x"

/*
 * A refused MAIL or RCPT in the one flight is the message's reply, whatever
 * BDAT got, and the session ends with QUIT: the chunk went out behind the
 * refusal, and a server that did not read it as data would take the LAN
 * client's bytes for commands. The next message is not sent on it.
 */
static void
test_chunking_envelope_refusal_quits(void **state)
{
	static const char *const rcpt_refused[] = {
		ONE_FLIGHT_X,
		"S: 250 OK\r\n550 5.1.1 no such user\r\n554 5.5.1 No valid recipients",
		"C: QUIT",
		"S: 221 bye",
		"EOF",
		NULL,
	};
	static const char *const mail_refused[] = {
		ONE_FLIGHT_X,
		"S: 550 5.7.1 sender refused\r\n503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first",
		"C: QUIT",
		"S: 221 bye",
		"EOF",
		NULL,
	};
	static const struct {
		const char *const	*script;
		enum smtp_stage		 stage;
		int			 code;
	} cases[] = {
		{ rcpt_refused, SMTP_STAGE_RCPT, 550 },
		{ mail_refused, SMTP_STAGE_MAIL, 550 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct drive d = { 0 };
		struct fake f;

		d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "x");
		d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "next");
		drive_run(&d, &f, cases[i].script, &cert_good, "127.0.0.1",
		    UPSTREAM_TLS_STARTTLS);
		assert_false(f.failed);
		assert_int_equal(d.n_done, 1);
		assert_int_equal(d.done[0].error, SMTP_ERR_REPLY);
		assert_int_equal(d.done[0].stage, cases[i].stage);
		assert_int_equal(d.done[0].code, cases[i].code);
		assert_int_equal(d.n_ready, 1);
		assert_int_equal(d.n_closed, 1);
		assert_false(transcript_has(&f, "RSET"));
		assert_false(transcript_has(&f, "next"));
		drive_free(&d);
		fake_free(&f);
	}
}

/*
 * Several recipients: BDAT waits for their replies (it could not be taken
 * back), so a refused one means nothing is sent; when all are accepted the
 * chunk follows. Without PIPELINING every command waits for its reply.
 */
static void
test_chunking_several_recipients(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		EHLO_TLS_CHUNKING,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=1",
		"C: RCPT TO:<a@y.test>",
		"C: RCPT TO:<b@y.test>",
		"C: RCPT TO:<c@y.test>",
		"S: 250 OK\r\n250 OK\r\n452 4.5.3 Too many recipients\r\n250 OK",
		"C: RSET",
		"C: MAIL FROM:<s@x.test> SIZE=1",
		"C: RCPT TO:<a@y.test>",
		"C: RCPT TO:<b@y.test>",
		"C: RCPT TO:<c@y.test>",
		"S: 250 OK\r\n250 OK\r\n250 OK\r\n250 OK\r\n250 OK",
		"C: BDAT 3 LAST",
		"C: x",
		"S: 250 2.0.0 OK sent",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	static const char *const script_no_pipelining[] = {
		"TLS",
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test\r\n250-CHUNKING\r\n250 AUTH PLAIN",
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test>",
		"S: 250 OK",
		"C: RCPT TO:<r@y.test>",
		"S: 250 OK",
		"C: BDAT 6 LAST",
		"C: body",
		"S: 250 2.0.0 OK one",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct drive d = { 0 }, d2 = { 0 };
	struct fake f, f2;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt3, 3, "x");
	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt3, 3, "x");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 2);
	assert_int_equal(d.done[0].stage, SMTP_STAGE_RCPT);
	assert_int_equal(d.done[0].rcpt_index, 1);
	assert_int_equal(d.done[0].code, 452);
	assert_int_equal(d.done[1].error, SMTP_ERR_NONE);
	assert_string_equal(d.done[1].text, "OK sent");
	drive_free(&d);
	fake_free(&f);

	d2.msgs[d2.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "body");
	drive_run(&d2, &f2, script_no_pipelining, &cert_good, "localhost", UPSTREAM_TLS_IMPLICIT);
	assert_false(f2.failed);
	assert_int_equal(d2.n_done, 1);
	assert_string_equal(d2.done[0].text, "OK one");
	drive_free(&d2);
	fake_free(&f2);
}

/* Over the upstream's SIZE: refused before a byte is sent; session reused. */
static void
test_size_limit(void **state)
{
	static const char *const script[] = {
		START_STARTTLS,
		"S: 250-fake.test\r\n250-SIZE 10\r\n250 AUTH PLAIN",
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<s@x.test> SIZE=5",
		"S: 250 OK",
		"C: RCPT TO:<r@y.test>",
		"S: 250 OK",
		"C: DATA",
		"S: 354 go",
		"C: small",
		"C: .",
		"S: 250 OK",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "this is too big");
	d.msgs[d.n_msgs++] = msg_new("s@x.test", rcpt1, 1, "small");
	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.n_done, 2);
	assert_int_equal(d.done[0].error, SMTP_ERR_TOO_BIG);
	assert_int_equal(d.done[0].code, 552);
	assert_string_equal(d.done[0].enhanced, "5.3.4");
	assert_int_equal(d.done[1].error, SMTP_ERR_NONE);
	drive_free(&d);
	fake_free(&f);
}

/* A server that answers nothing after the greeting: the step times out. */
static void
test_timeout(void **state)
{
	static const char *const script[] = {
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test",	/* the reply never ends */
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;
	struct upstream_target t;
	struct smtp_client *c;
	SSL_CTX *ctx;
	char err[256];

	fake_start(&f, script, &cert_good);
	target_init(&t, "127.0.0.1", f.port, UPSTREAM_TLS_STARTTLS);
	t.timeout = 1;
	d.base = event_base_new();
	ctx = smtp_client_tls_ctx_new(t.ca_file, err, sizeof(err));
	c = smtp_client_new(d.base, NULL, ctx, &t, drive_cred, drive_event, &d);
	assert_non_null(c);
	event_base_dispatch(d.base);
	smtp_client_free(c);
	SSL_CTX_free(ctx);
	base_free(d.base);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(d.closed.error, SMTP_ERR_TIMEOUT);
	assert_true(d.closed.temporary);
	fake_free(&f);
}

/* Garbage where a reply should be. */
static void
test_garbage_reply(void **state)
{
	static const char *const script[] = {
		"S: HTTP/1.1 400 Bad Request",
		"EOF",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.closed.error, SMTP_ERR_PROTOCOL);
	assert_int_equal(d.closed.stage, SMTP_STAGE_CONNECT);
	fake_free(&f);
}

/* 421 at the greeting: a temporary refusal. */
static void
test_greeting_421(void **state)
{
	static const char *const script[] = {
		"S: 421 4.7.0 Try again later, closing connection.",
		"CLOSE",
		NULL,
	};
	struct drive d = { 0 };
	struct fake f;

	drive_run(&d, &f, script, &cert_good, "127.0.0.1", UPSTREAM_TLS_STARTTLS);
	assert_false(f.failed);
	assert_int_equal(d.closed.error, SMTP_ERR_REPLY);
	assert_int_equal(d.closed.code, 421);
	assert_true(d.closed.temporary);
	fake_free(&f);
}

/* Nothing listening. */
static void
test_connection_refused(void **state)
{
	struct drive d = { 0 };
	struct upstream_target t;
	struct smtp_client *c;
	SSL_CTX *ctx;
	char err[256];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	/* A port that was free a moment ago. */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	target_init(&t, "127.0.0.1", ntohs(sin.sin_port), UPSTREAM_TLS_STARTTLS);
	d.base = event_base_new();
	ctx = smtp_client_tls_ctx_new(t.ca_file, err, sizeof(err));
	c = smtp_client_new(d.base, NULL, ctx, &t, drive_cred, drive_event, &d);
	assert_non_null(c);
	event_base_dispatch(d.base);
	smtp_client_free(c);
	SSL_CTX_free(ctx);
	base_free(d.base);
	assert_int_equal(d.closed.error, SMTP_ERR_NETWORK);
	assert_int_equal(d.closed.stage, SMTP_STAGE_CONNECT);
	assert_true(d.closed.temporary);
}

/* The probe used by "account test": success and a refused credential. */
static void
test_probe(void **state)
{
	static const char *const ok_script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	static const char *const bad_script[] = {
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 535 5.7.8 Username and Password not accepted.",
		"EOF",
		NULL,
	};
	struct upstream_target t;
	struct vault_secret secret;
	struct fake f;
	char reply[512];
	int refused = -1;

	assert_int_equal(vault_secret_set(&secret, (const unsigned char *)TEST_SECRET,
	    strlen(TEST_SECRET)), 0);

	fake_start(&f, ok_script, &cert_good);
	target_init(&t, "127.0.0.1", f.port, UPSTREAM_TLS_STARTTLS);
	assert_int_equal(smtp_client_probe(&t, TEST_USER, &secret, reply, sizeof(reply),
	    &refused), 0);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(refused, 0);
	assert_string_equal(reply, "235 2.7.0 Accepted");
	fake_free(&f);

	fake_start(&f, bad_script, &cert_good);
	target_init(&t, "127.0.0.1", f.port, UPSTREAM_TLS_STARTTLS);
	assert_int_equal(smtp_client_probe(&t, TEST_USER, &secret, reply, sizeof(reply),
	    &refused), -1);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(refused, 1);
	assert_string_equal(reply, "535 5.7.8 Username and Password not accepted.");
	fake_free(&f);

	vault_secret_wipe(&secret);
}

/* The pools and direct relay: the same fake server, several messages. */

static struct config test_cfg;

static void
cfg_init(uint16_t port, enum upstream_tls tls, uint64_t max_sessions)
{
	memset(&test_cfg, 0, sizeof(test_cfg));
	strlcpy(test_cfg.upstream_host, "127.0.0.1", sizeof(test_cfg.upstream_host));
	test_cfg.upstream_port = port;
	test_cfg.upstream_tls = tls;
	strlcpy(test_cfg.upstream_ca_file, ca_file, sizeof(test_cfg.upstream_ca_file));
	test_cfg.upstream_timeout = TEST_TIMEOUT;
	test_cfg.max_sessions_per_account = max_sessions;
	strlcpy(test_cfg.hostname, TEST_HELO, sizeof(test_cfg.hostname));
	test_cfg.delivery = DELIVERY_DIRECT;
}

#define RT_MAX	8

struct rtest;

struct rslot {
	struct rtest		*t;
	int			called;
	struct relay_result	res;
};

struct rtest {
	struct event_base	*base;
	struct relay		*r;
	struct upstream_pool	*pool;
	struct rslot		slot[RT_MAX];
	struct smtp_outcome	out[RT_MAX];
	int			n_called;
	int			drained;
};

static void
rt_cb(void *arg, const struct relay_result *res)
{
	struct rslot *s = arg;

	assert_int_equal(s->called, 0);
	s->called = 1;
	s->res = *res;
	s->t->n_called++;
}

static void
rt_drained(void *arg)
{
	struct rtest *t = arg;

	t->drained = 1;
}

static void
rt_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until *flag reaches want (or a generous time passes). */
static void
rt_run_until(struct rtest *t, const int *flag, int want)
{
	struct event *tick = event_new(t->base, -1, EV_PERSIST, rt_tick, NULL);
	struct timeval tv = { 0, 20000 };
	int i;

	event_add(tick, &tv);
	for (i = 0; i < 1000 && *flag < want; i++)
		event_base_loop(t->base, EVLOOP_ONCE);
	event_free(tick);
	assert_true(*flag >= want);
}

static void
rt_submit(struct rtest *t, int i, struct relay_msg *m)
{
	struct relay_result res;

	t->slot[i].t = t;
	assert_int_equal(relay_submit(t->r, m, rt_cb, &t->slot[i], &res), 0);
}

static void
rt_start(struct rtest *t, uint16_t port, uint64_t max_sessions)
{
	memset(t, 0, sizeof(*t));
	cfg_init(port, UPSTREAM_TLS_STARTTLS, max_sessions);
	t->base = event_base_new();
	assert_non_null(t->base);
	t->r = relay_new(t->base, &test_cfg, NULL);
	assert_non_null(t->r);
}

static void
rt_finish(struct rtest *t)
{
	relay_drain(t->r, rt_drained, t);
	rt_run_until(t, &t->drained, 1);
	relay_free(t->r);
	base_free(t->base);
}

#define LOGIN_STEPS \
	START_STARTTLS, \
	EHLO_TLS_PLAIN, \
	"C: " TEST_PLAIN, \
	"S: 235 2.7.0 Accepted"

/* Three messages at once, one session allowed: one login, RSET between,
 * FIFO order, and the reply the LAN client gets. */
static void
test_relay_reuse(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m1",
		"C: .",
		"S: 250 2.0.0 OK id1 - gsmtp",
		"C: RSET",
		"C: MAIL FROM:<b@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n250 OK\r\n354 go",
		"C: m2",
		"C: .",
		"S: 250 2.0.0 OK id2 - gsmtp",
		"C: RSET",
		"C: MAIL FROM:<c@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n250 OK\r\n354 go",
		"C: m3",
		"C: .",
		"S: 250 2.0.0 OK id3 - gsmtp",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct rtest t;
	struct fake f;
	int fetches = stub_fetches;

	fake_start(&f, script, &cert_good);
	rt_start(&t, f.port, 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_submit(&t, 1, msg_new("b@x.test", rcpt1, 1, "m2"));
	rt_submit(&t, 2, msg_new("c@x.test", rcpt1, 1, "m3"));
	rt_run_until(&t, &t.n_called, 3);
	assert_int_equal(t.slot[0].res.code, 250);
	assert_string_equal(t.slot[0].res.enhanced, "2.0.0");
	assert_string_equal(t.slot[0].res.text,
	    "Ok: delivered as TESTQ1 (upstream: 250 2.0.0 OK id1 - gsmtp)");
	assert_string_equal(t.slot[2].res.text,
	    "Ok: delivered as TESTQ1 (upstream: 250 2.0.0 OK id3 - gsmtp)");
	assert_int_equal(stub_fetches - fetches, 1);
	rt_finish(&t);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(f.connections, 1);
	fake_free(&f);
}

/* 535: 451 4.7.0 to the client, the credstore told; the next message fails
 * at once without a login; after a rotation the new credential is used. */
static void
test_relay_auth_refused_then_rotation(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"S: 535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
		"535 5.7.8  https://support.google.com/mail/?p=BadCredentials x - gsmtp",
		"EOF",
		"ACCEPT",
		START_STARTTLS,
		EHLO_TLS_PLAIN,
		"C: " TEST_PLAIN,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m3",
		"C: .",
		"S: 250 2.0.0 OK id3",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	/* LOGIN_STEPS ends with the 235; this scenario answers 535 instead. */
	static const char *fixed[ARRAY_SIZE(script)];
	struct rtest t;
	struct fake f;
	size_t i, j;
	int reports = stub_reports_fail;

	for (i = 0, j = 0; script[i] != NULL; i++)
		if (strcmp(script[i], "S: 235 2.7.0 Accepted") != 0 || j > 12)
			fixed[j++] = script[i];
	fixed[j] = NULL;
	fake_start(&f, fixed, &cert_good);
	rt_start(&t, f.port, 2);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_run_until(&t, &t.n_called, 1);
	assert_int_equal(t.slot[0].res.code, 451);
	assert_string_equal(t.slot[0].res.enhanced, "4.7.0");
	assert_string_equal(t.slot[0].res.text,
	    "upstream refused the credential for u@x.test; the operator has been notified "
	    "(upstream: 535 5.7.8 Username and Password not accepted. For more information, "
	    "go to https://support.google.com/mail/?p=BadCredentials x - gsmtp)");
	assert_int_equal(stub_reports_fail - reports, 1);

	/* Same credential version: refused without another login attempt. */
	rt_submit(&t, 1, msg_new("a@x.test", rcpt1, 1, "m2"));
	rt_run_until(&t, &t.n_called, 2);
	assert_int_equal(t.slot[1].res.code, 451);
	assert_string_equal(t.slot[1].res.enhanced, "4.7.0");

	/* Rotated: a new session with the new version. */
	stub_version++;
	rt_submit(&t, 2, msg_new("a@x.test", rcpt1, 1, "m3"));
	rt_run_until(&t, &t.n_called, 3);
	assert_int_equal(t.slot[2].res.code, 250);
	rt_finish(&t);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(f.connections, 2);
	fake_free(&f);
}

/* A rotation while a session is idle: that session is closed, and the next
 * message goes on a new session that fetched the new credential. */
static void
test_relay_rotation_new_session(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m1",
		"C: .",
		"S: 250 2.0.0 OK id1",
		"C: QUIT",
		"S: 221 bye",
		"CLOSE",
		"ACCEPT",
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m2",
		"C: .",
		"S: 250 2.0.0 OK id2",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct rtest t;
	struct fake f;
	int fetches = stub_fetches;

	fake_start(&f, script, &cert_good);
	rt_start(&t, f.port, 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_run_until(&t, &t.n_called, 1);
	assert_int_equal(t.slot[0].res.code, 250);
	stub_version++;
	rt_submit(&t, 1, msg_new("a@x.test", rcpt1, 1, "m2"));
	rt_run_until(&t, &t.n_called, 2);
	assert_int_equal(t.slot[1].res.code, 250);
	assert_int_equal(stub_fetches - fetches, 2);
	rt_finish(&t);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(f.connections, 2);
	fake_free(&f);
}

/* Upstream refusals keep their class and enhanced code; the reply is one
 * printable line that says which recipient and quotes Google. */
static void
test_relay_reply_mapping(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n550-5.1.1 The email account that you tried to reach does not exist.\r\n"
		"550 5.1.1 \xe2\x80\x9cPlease\xe2\x80\x9d try again. x - gsmtp\r\n554 5.5.1 no valid recipients",
		"C: RSET",
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n250 OK\r\n354 go",
		"C: m2",
		"C: .",
		"S: 421 4.7.0 Temporary System Problem. Try again later (10). x - gsmtp",
		"CLOSE",
		NULL,
	};
	struct rtest t;
	struct fake f;

	fake_start(&f, script, &cert_good);
	rt_start(&t, f.port, 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_submit(&t, 1, msg_new("a@x.test", rcpt1, 1, "m2"));
	rt_run_until(&t, &t.n_called, 2);
	assert_int_equal(t.slot[0].res.code, 550);
	assert_string_equal(t.slot[0].res.enhanced, "5.1.1");
	assert_string_equal(t.slot[0].res.text,
	    "upstream: 550 5.1.1 <r@y.test>: The email account that you tried to reach does not "
	    "exist. ???Please??? try again. x - gsmtp");
	/* 421 to the dot: still 4xx, but not 421, which would mean "closing". */
	assert_int_equal(t.slot[1].res.code, 451);
	assert_string_equal(t.slot[1].res.enhanced, "4.7.0");
	assert_non_null(strstr(t.slot[1].res.text, "421 4.7.0 Temporary System Problem"));
	rt_finish(&t);
	fake_finish(&f);
	assert_false(f.failed);
	fake_free(&f);
}

/* Network and TLS failures become 451 4.4.1 / 4.7.5. */
static void
test_relay_unreachable_and_tls(void **state)
{
	static const char *const script[] = {
		"S: 220 fake.test ESMTP",
		"C: EHLO " TEST_HELO,
		"S: 250-fake.test\r\n250 STARTTLS",
		"C: STARTTLS",
		"S: 220 2.0.0 Ready to start TLS",
		"TLSFAIL",
		"EOF",
		NULL,
	};
	struct rtest t;
	struct fake f;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	rt_start(&t, ntohs(sin.sin_port), 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_run_until(&t, &t.n_called, 1);
	assert_int_equal(t.slot[0].res.code, 451);
	assert_string_equal(t.slot[0].res.enhanced, "4.4.1");
	assert_non_null(strstr(t.slot[0].res.text, "upstream unreachable: "));
	assert_non_null(strstr(t.slot[0].res.text, "Connection refused"));
	rt_finish(&t);

	/* By name this time: resolved asynchronously, checked as a DNS name. */
	fake_start(&f, script, &cert_wrong);
	rt_start(&t, f.port, 1);
	strlcpy(test_cfg.upstream_host, "localhost", sizeof(test_cfg.upstream_host));
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_run_until(&t, &t.n_called, 1);
	assert_int_equal(t.slot[0].res.code, 451);
	assert_string_equal(t.slot[0].res.enhanced, "4.7.5");
	assert_non_null(strstr(t.slot[0].res.text, "upstream TLS verification failed: "));
	rt_finish(&t);
	fake_finish(&f);
	assert_false(f.failed);
	assert_false(transcript_has(&f, "AUTH"));
	fake_free(&f);
}

/* Run the loop for about ms milliseconds. */
static void
rt_run_for(struct rtest *t, int ms)
{
	struct event *tick = evtimer_new(t->base, rt_tick, NULL);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(tick, &tv);
	while (evtimer_pending(tick, NULL))
		event_base_loop(t->base, EVLOOP_ONCE);
	event_free(tick);
}

/* Cancel: the callback never runs, whether the message was still waiting
 * (withdrawn: nothing connects) or already being sent (it finishes upstream,
 * so that a message the upstream may take is never cut off unrecorded; here
 * the server goes away before it answers the dot). Drain: new messages get
 * 421 4.3.2, and done() runs when nothing is left. */
static void
test_relay_cancel_and_drain(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m1",
		"C: .",
		"EOF",		/* no answer to the dot: the client is still waiting */
		NULL,
	};
	struct rtest t;
	struct fake f;
	struct relay_result res;

	/* Waiting: cancelled before any session exists; nothing connects. */
	rt_start(&t, 9, 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	relay_cancel(t.r, &t.slot[0]);
	rt_finish(&t);
	assert_int_equal(t.n_called, 0);

	/* Sending: it goes on until the upstream has answered or gone. */
	fake_start(&f, script, &cert_good);
	rt_start(&t, f.port, 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_run_for(&t, 500);
	relay_cancel(t.r, &t.slot[0]);
	relay_drain(t.r, rt_drained, &t);
	assert_int_equal(relay_submit(t.r, msg_new("a@x.test", rcpt1, 1, "late"), rt_cb,
	    &t.slot[1], &res), -1);
	assert_int_equal(res.code, 421);
	assert_string_equal(res.enhanced, "4.3.2");
	rt_run_until(&t, &t.drained, 1);
	assert_int_equal(t.n_called, 0);
	relay_free(t.r);
	base_free(t.base);
	fake_finish(&f);
	assert_false(f.failed);
	assert_int_equal(f.connections, 1);
	fake_free(&f);
}

/* The account's daily limit: over it, 451 4.7.1 at once, nothing sent. */
static void
test_relay_daily_limit(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m1",
		"C: .",
		"S: 250 2.0.0 OK id1",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct rtest t;
	struct fake f;
	struct relay_result res;

	stub_daily_limit = 1;
	fake_start(&f, script, &cert_good);
	rt_start(&t, f.port, 1);
	rt_submit(&t, 0, msg_new("a@x.test", rcpt1, 1, "m1"));
	rt_run_until(&t, &t.n_called, 1);
	assert_int_equal(t.slot[0].res.code, 250);
	assert_int_equal(relay_submit(t.r, msg_new("a@x.test", rcpt1, 1, "m2"), rt_cb,
	    &t.slot[1], &res), -1);
	assert_int_equal(res.code, 451);
	assert_string_equal(res.enhanced, "4.7.1");
	assert_non_null(strstr(res.text, "daily sending limit of u@x.test reached"));
	rt_finish(&t);
	stub_daily_limit = 0;
	fake_finish(&f);
	assert_false(f.failed);
	assert_false(transcript_has(&f, "m2"));
	fake_free(&f);
}

static void
pool_cb(void *arg, const struct smtp_outcome *o)
{
	struct rslot *s = arg;

	s->t->out[s - s->t->slot] = *o;
	s->called = 1;
	s->t->n_called++;
}

static int pool_sessions_gone;

static void
pool_watch(evutil_socket_t fd, short what, void *arg)
{
	struct rtest *t = arg;
	struct upstream_pool_stats st;

	upstream_pool_stats(t->pool, TEST_USER, &st);
	pool_sessions_gone = st.sessions == 0;
}

/* Idle sessions: one that the server drops (421 while idle) is noticed and
 * replaced; one nobody uses is closed with QUIT after the idle timeout. */
static void
test_pool_idle(void **state)
{
	static const char *const script[] = {
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m1",
		"C: .",
		"S: 250 2.0.0 OK id1",
		"S: 421 4.4.2 fake.test Error: timeout exceeded",
		"CLOSE",
		"ACCEPT",
		LOGIN_STEPS,
		"C: MAIL FROM:<a@x.test> SIZE=2",
		"C: RCPT TO:<r@y.test>",
		"C: DATA",
		"S: 250 OK\r\n250 OK\r\n354 go",
		"C: m2",
		"C: .",
		"S: 250 2.0.0 OK id2",
		"C: QUIT",
		"S: 221 bye",
		NULL,
	};
	struct rtest t;
	struct fake f;
	struct relay_msg *m1, *m2;
	struct upstream_pool_stats st;
	struct event *watch;
	struct timeval tv = { 0, 20000 };

	fake_start(&f, script, &cert_good);
	memset(&t, 0, sizeof(t));
	cfg_init(f.port, UPSTREAM_TLS_STARTTLS, 1);
	t.base = event_base_new();
	t.pool = upstream_pool_new(t.base, NULL, &test_cfg, NULL);
	assert_non_null(t.pool);
	upstream_pool_set_timing(t.pool, 1, 1, 2);
	watch = event_new(t.base, -1, EV_PERSIST, pool_watch, &t);
	event_add(watch, &tv);
	m1 = msg_new("a@x.test", rcpt1, 1, "m1");
	m2 = msg_new("a@x.test", rcpt1, 1, "m2");
	t.slot[0].t = &t;
	t.slot[1].t = &t;
	assert_non_null(upstream_pool_send(t.pool, m1, TEST_TIMEOUT, pool_cb, &t.slot[0]));
	rt_run_until(&t, &t.n_called, 1);
	assert_int_equal(t.out[0].error, SMTP_ERR_NONE);
	pool_sessions_gone = 0;
	rt_run_until(&t, &pool_sessions_gone, 1);	/* the 421 while idle */
	assert_non_null(upstream_pool_send(t.pool, m2, TEST_TIMEOUT, pool_cb, &t.slot[1]));
	rt_run_until(&t, &t.n_called, 2);
	assert_int_equal(t.out[1].error, SMTP_ERR_NONE);
	assert_string_equal(t.out[1].text, "OK id2");
	pool_sessions_gone = 0;
	rt_run_until(&t, &pool_sessions_gone, 1);	/* QUIT after 1 s idle */
	upstream_pool_stats(t.pool, TEST_USER, &st);
	assert_int_equal(st.logins, 2);
	assert_int_equal(st.messages, 2);
	event_free(watch);
	upstream_pool_free(t.pool);
	base_free(t.base);
	msg_free(m1);
	msg_free(m2);
	fake_finish(&f);
	assert_false(f.failed);
	fake_free(&f);
}

#define POOL_TESTS_LIST \
	cmocka_unit_test(test_relay_reuse), \
	cmocka_unit_test(test_relay_auth_refused_then_rotation), \
	cmocka_unit_test(test_relay_rotation_new_session), \
	cmocka_unit_test(test_relay_reply_mapping), \
	cmocka_unit_test(test_relay_unreachable_and_tls), \
	cmocka_unit_test(test_relay_cancel_and_drain), \
	cmocka_unit_test(test_relay_daily_limit), \
	cmocka_unit_test(test_pool_idle),

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_happy_starttls_plain),
		cmocka_unit_test(test_implicit_login_no_pipelining),
		cmocka_unit_test(test_no_starttls),
		cmocka_unit_test(test_starttls_injection),
		cmocka_unit_test(test_wrong_host_cert),
		cmocka_unit_test(test_untrusted_cert),
		cmocka_unit_test(test_auth_refused),
		cmocka_unit_test(test_auth_tempfail),
		cmocka_unit_test(test_dot_stuffing_and_reuse),
		cmocka_unit_test(test_rcpt_refused_pipelined),
		cmocka_unit_test(test_pipelined_421_then_close),
		cmocka_unit_test(test_chunking_one_flight),
		cmocka_unit_test(test_chunking_envelope_refusal_quits),
		cmocka_unit_test(test_chunking_refusals),
		cmocka_unit_test(test_chunking_several_recipients),
		cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_garbage_reply),
		cmocka_unit_test(test_greeting_421),
		cmocka_unit_test(test_connection_refused),
		cmocka_unit_test(test_probe),
		POOL_TESTS_LIST
	};

	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("smtp_client", tests, group_setup, group_teardown);
}
