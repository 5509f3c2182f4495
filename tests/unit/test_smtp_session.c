/*
 * test_smtp_session.c: the LAN-side SMTP server (proxy/smtp_session.c)
 * driven over a socketpair per connection, with a chosen peer address and a
 * stub relay behind smtp_server_set_hooks(). Everything runs in one thread:
 * the client writes, then turns the server's event loop until a whole reply
 * has arrived. Each test reads like an SMTP conversation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "config.h"
#include "log.h"
#include "relay.h"
#include "smtp_session.h"
#include "util.h"

#define WAIT_MS		3000	/* longest wait for a reply */
#define CONN_BUF	(256 * 1024)

/* ---- The stub relay and vault ------------------------------------------- */

struct stub {
	struct relay_msg *msg;		/* the last message handed over */
	void		(*cb)(void *, const struct relay_result *);
	void		*cbarg;
	int		submitted;
	int		cancelled;
	int		refuse;		/* answer -1 with a 451 at once */
	int		tempfail;	/* the resolver says TEMPFAIL */
};

static const struct {
	const char *addr, *account;
} vault_table[] = {
	{ "team@example.com", "team@example.com" },
	{ "alerts@example.com", "alerts@example.com" },
	{ "ceo@example.com", "ceo@example.com" },
	{ "boss@example.com", "ceo@example.com" },
};

static enum cred_result
stub_resolve(void *arg, const char *addr, char *account, size_t len)
{
	struct stub *st = arg;
	size_t i;

	if (st->tempfail)
		return CRED_TEMPFAIL;
	for (i = 0; i < sizeof(vault_table) / sizeof(vault_table[0]); i++) {
		if (strcasecmp(vault_table[i].addr, addr) == 0) {
			strlcpy(account, vault_table[i].account, len);
			return CRED_OK;
		}
	}
	return CRED_PERMFAIL;
}

static void
stub_msg_free(struct relay_msg *m)
{
	if (m == NULL)
		return;
	free(m->rcpts);
	if (m->data != NULL)
		evbuffer_free(m->data);
	relay_fields_free(&m->fields);
	free(m);
}

static int
stub_submit(void *arg, struct relay_msg *msg,
    void (*cb)(void *, const struct relay_result *), void *cbarg, struct relay_result *res)
{
	struct stub *st = arg;

	stub_msg_free(st->msg);
	st->msg = msg;
	st->submitted++;
	if (st->refuse) {
		res->code = 451;
		strlcpy(res->enhanced, "4.3.0", sizeof(res->enhanced));
		strlcpy(res->text, "relay refused at once", sizeof(res->text));
		return -1;
	}
	st->cb = cb;
	st->cbarg = cbarg;
	return 0;
}

static void
stub_cancel(void *arg, void *cbarg)
{
	struct stub *st = arg;

	if (st->cbarg == cbarg) {
		st->cb = NULL;
		st->cbarg = NULL;
		st->cancelled++;
	}
}

/* The relay answers the pending message. */
static void
stub_answer(struct stub *st, int code, const char *enh, const char *text)
{
	struct relay_result res;
	void (*cb)(void *, const struct relay_result *) = st->cb;

	assert_non_null(cb);
	memset(&res, 0, sizeof(res));
	res.code = code;
	strlcpy(res.enhanced, enh, sizeof(res.enhanced));
	strlcpy(res.text, text, sizeof(res.text));
	st->cb = NULL;
	cb(st->cbarg, &res);
}

/* The message data as a NUL-terminated string. */
static char *
stub_data(struct stub *st)
{
	size_t n;
	char *s;

	assert_non_null(st->msg);
	n = evbuffer_get_length(st->msg->data);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_copyout(st->msg->data, s, n);
	s[n] = '\0';
	return s;
}

/* ---- Fixture: a server with a configuration written as INI ------------- */

struct tc {
	struct event_base	*base;
	struct config		cfg;
	struct smtp_server	*srv;
	struct stub		stub;
	int			drained;
};

static const char base_ini[] =
    "[vault]\npath = /nonexistent/vault\n"
    "[smtp]\n"
    "hostname = relay.test\n"
    "trusted_networks = 127.0.0.0/8, ::1/128\n"
    "max_message_size = 2K\n"
    "max_recipients = 3\n"
    "max_connections = 6\n"
    "max_connections_per_ip = 3\n"
    "timeout = 2s\n"
    "default_account = team@example.com\n";

static const char client_ini[] =
    "[client \"monitoring\"]\n"
    "networks = 10.0.5.0/24\n"
    "account = alerts@example.com\n"
    "senders = alerts@example.com, ceo@example.com, *@ops.example.com\n"
    "rate_limit = 2/hour\n";

static struct tc *
tc_start(const char *extra_smtp, int with_clients)
{
	struct tc *tc = calloc(1, sizeof(*tc));
	struct smtp_server_hooks hooks;
	char ini[4096], err[512];

	assert_non_null(tc);
	snprintf(ini, sizeof(ini), "%s%s%s", base_ini, extra_smtp != NULL ? extra_smtp : "",
	    with_clients ? client_ini : "");
	if (config_parse("test.conf", ini, &tc->cfg, err, sizeof(err)) != 0)
		fail_msg("config: %s", err);
	tc->cfg.n_listen = 0;		/* connections come through smtp_server_accept() */
	tc->base = event_base_new();
	assert_non_null(tc->base);
	tc->srv = smtp_server_new(tc->base, &tc->cfg, NULL, NULL, err, sizeof(err));
	if (tc->srv == NULL)
		fail_msg("smtp_server_new: %s", err);
	hooks.resolve = stub_resolve;
	hooks.submit = stub_submit;
	hooks.cancel = stub_cancel;
	hooks.arg = &tc->stub;
	smtp_server_set_hooks(tc->srv, &hooks);
	return tc;
}

static void
tc_stop(struct tc *tc)
{
	smtp_server_free(tc->srv);
	stub_msg_free(tc->stub.msg);
	/* Let deferred one-shot events run before the base goes. */
	event_base_loop(tc->base, EVLOOP_NONBLOCK);
	event_base_free(tc->base);
	config_free(&tc->cfg);
	free(tc);
}

static void
tc_pump(struct tc *tc)
{
	int i;

	for (i = 0; i < 4; i++)
		event_base_loop(tc->base, EVLOOP_NONBLOCK);
}

/* ---- A client connection ------------------------------------------------ */

struct conn {
	struct tc	*tc;
	int		fd;
	SSL		*ssl;
	char		*buf;
	size_t		len;
	int		eof;
};

static struct conn *
conn_open(struct tc *tc, const char *ip)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct sockaddr_storage ss;
	socklen_t sslen;
	int sv[2];

	assert_non_null(c);
	c->tc = tc;
	c->buf = malloc(CONN_BUF);
	assert_non_null(c->buf);
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(40000);
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
		sslen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(40000);
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
		sslen = sizeof(*s4);
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	smtp_server_accept(tc->srv, sv[0], (struct sockaddr *)&ss, sslen);
	c->fd = sv[1];
	return c;
}

static void
conn_close(struct conn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	close(c->fd);
	tc_pump(c->tc);
	free(c->buf);
	free(c);
}

/* Read what is there, turning the server's loop once. */
static void
conn_fill(struct conn *c)
{
	struct pollfd p = { c->fd, POLLIN, 0 };

	tc_pump(c->tc);
	(void)poll(&p, 1, 5);
	while (!c->eof && c->len < CONN_BUF - 1) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_read(c->ssl, c->buf + c->len, (int)(CONN_BUF - 1 - c->len));

			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ||
				    e == SSL_ERROR_SSL)
					c->eof = 1;
				break;
			}
			n = r;
		} else {
			n = read(c->fd, c->buf + c->len, CONN_BUF - 1 - c->len);
			if (n == 0)
				c->eof = 1;
			if (n <= 0)
				break;
		}
		c->len += (size_t)n;
	}
	c->buf[c->len] = '\0';
}

static void
conn_send_n(struct conn *c, const void *data, size_t len)
{
	const char *p = data;
	long deadline = WAIT_MS;

	while (len > 0 && deadline-- > 0) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, p, (int)len);

			n = r > 0 ? r : -1;
		} else {
			n = write(c->fd, p, len);
		}
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else {
			/* The server has not read yet: let it. */
			conn_fill(c);
		}
	}
	assert_int_equal(len, 0);
}

static void
conn_send(struct conn *c, const char *s)
{
	conn_send_n(c, s, strlen(s));
}

/* The length of the first complete reply in the buffer, or 0. */
static size_t
reply_len(const char *b, size_t len)
{
	size_t off = 0;

	while (off < len) {
		const char *nl = memchr(b + off, '\n', len - off);

		if (nl == NULL)
			return 0;
		if ((size_t)(nl - (b + off)) >= 4 && b[off + 3] == ' ')
			return (size_t)(nl - b) + 1;
		off = (size_t)(nl - b) + 1;
	}
	return 0;
}

/* The next whole reply (all its lines), waiting for it. */
static char *
conn_reply(struct conn *c, char *out, size_t outlen)
{
	int i;
	size_t n = 0;

	for (i = 0; i < WAIT_MS / 5; i++) {
		if ((n = reply_len(c->buf, c->len)) > 0 || c->eof)
			break;
		conn_fill(c);
	}
	if (n == 0)
		n = reply_len(c->buf, c->len);
	if (n == 0) {
		snprintf(out, outlen, "(no reply%s; have \"%.*s\")", c->eof ? ", closed" : "",
		    (int)c->len, c->buf);
		return out;
	}
	snprintf(out, outlen, "%.*s", (int)n, c->buf);
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
	c->buf[c->len] = '\0';
	return out;
}

/* Expect the next reply to start with prefix (its last line, for multi-line). */
static void
expect_at(struct conn *c, const char *prefix, const char *file, int line)
{
	char r[8192], *last;
	size_t n;

	conn_reply(c, r, sizeof(r));
	n = strlen(r);
	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
		n--;
	r[n] = '\0';
	last = strrchr(r, '\n');
	last = last != NULL ? last + 1 : r;
	if (strncmp(last, prefix, strlen(prefix)) != 0)
	{
		print_error("expected \"%s\", got \"%s\"\n", prefix, r);
		_fail(file, line);
	}
}
#define expect(c, prefix)	expect_at((c), (prefix), __FILE__, __LINE__)

/* Send one command line and expect a reply. */
static void
cmd_at(struct conn *c, const char *line, const char *prefix, const char *file, int l)
{
	conn_send(c, line);
	conn_send(c, "\r\n");
	expect_at(c, prefix, file, l);
}
#define cmd(c, line, prefix)	cmd_at((c), (line), (prefix), __FILE__, __LINE__)

/* Nothing more arrives, and the server hung up. */
static void
expect_closed_at(struct conn *c, const char *file, int line)
{
	int i;

	for (i = 0; i < WAIT_MS / 5 && !c->eof; i++)
		conn_fill(c);
	if (!c->eof || c->len != 0)
	{
		print_error("expected a closed connection, have %zu octets \"%.*s\" eof=%d\n",
		    c->len, (int)c->len, c->buf, c->eof);
		_fail(file, line);
	}
}
#define expect_closed(c)	expect_closed_at((c), __FILE__, __LINE__)

/* No reply arrives for a little while. */
static void
expect_silence(struct conn *c)
{
	int i;

	for (i = 0; i < 20; i++)
		conn_fill(c);
	if (c->len != 0)
		fail_msg("unexpected output \"%.*s\"", (int)c->len, c->buf);
}

static struct conn *
conn_ehlo(struct tc *tc, const char *ip)
{
	struct conn *c = conn_open(tc, ip);

	expect(c, "220 relay.test ESMTP smtpvault");
	cmd(c, "EHLO client.test", "250 ");
	return c;
}

/* ---- Tests ---------------------------------------------------------------- */

static void
test_session_greeting_ehlo(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_open(tc, "127.0.0.1");
	char r[4096];

	expect(c, "220 relay.test ESMTP smtpvault");
	conn_send(c, "EHLO client.test\r\n");
	conn_reply(c, r, sizeof(r));
	assert_non_null(strstr(r, "250-relay.test\r\n"));
	assert_non_null(strstr(r, "250-PIPELINING\r\n"));
	assert_non_null(strstr(r, "250-SIZE 2048\r\n"));
	assert_non_null(strstr(r, "250-8BITMIME\r\n"));
	assert_non_null(strstr(r, "250-SMTPUTF8\r\n"));
	assert_non_null(strstr(r, "ENHANCEDSTATUSCODES\r\n"));
	assert_null(strstr(r, "STARTTLS"));
	assert_null(strstr(r, "AUTH"));
	cmd(c, "HELO client.test", "250 relay.test");
	cmd(c, "NOOP", "250 2.0.0");
	cmd(c, "HELP", "214 2.0.0");
	cmd(c, "VRFY someone", "252 2.5.0");
	cmd(c, "VRFY", "501 5.5.4");
	cmd(c, "EXPN list", "502 5.5.1");
	cmd(c, "AUTH PLAIN AGZvbwBiYXI=", "503 5.5.1");
	cmd(c, "STARTTLS", "502 5.5.1");
	cmd(c, "RSET", "250 2.0.0");
	cmd(c, "QUIT", "221 2.0.0");
	expect_closed(c);
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_access(void **state)
{
	struct tc *tc = tc_start(NULL, 1);
	struct conn *c;

	c = conn_open(tc, "192.0.2.9");
	expect(c, "554 5.7.1 <192.0.2.9> is not allowed to relay");
	expect_closed(c);
	conn_close(c);

	c = conn_open(tc, "::ffff:192.0.2.9");
	expect(c, "554 5.7.1 <192.0.2.9> is not allowed to relay");
	expect_closed(c);
	conn_close(c);

	/* IPv4-mapped IPv6 counts as IPv4 */
	c = conn_open(tc, "::ffff:127.0.0.1");
	expect(c, "220 ");
	conn_close(c);
	c = conn_open(tc, "::1");
	expect(c, "220 ");
	conn_close(c);
	c = conn_open(tc, "::ffff:10.0.5.7");
	expect(c, "220 ");
	conn_close(c);
	c = conn_open(tc, "2001:db8::1");
	expect(c, "554 5.7.1");
	expect_closed(c);
	conn_close(c);

	/* Nothing a client says grants trust. */
	c = conn_ehlo(tc, "127.0.0.1");
	cmd(c, "XCLIENT ADDR=10.0.5.7 NAME=monitoring", "500 5.5.1");
	cmd(c, "PROXY TCP4 10.0.5.7 127.0.0.1 1234 2525", "500 5.5.1");
	/* still the anonymous "lan" client: monitoring's senders list does not apply,
	 * and the default account routes */
	cmd(c, "MAIL FROM:<someone@elsewhere.example>", "250 2.1.0");
	conn_close(c);
	tc_stop(tc);
}

static const char body[] =
    "From: ceo@example.com\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "..leading dot\r\n"
    "line\r\n";

static void
test_session_message(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");
	char want[256], *data, *p;
	const char *qid;

	cmd(c, "MAIL FROM:<Boss@Example.com> BODY=8BITMIME SIZE=100", "250 2.1.0");
	cmd(c, "RCPT TO:<friend@example.org>", "250 2.1.5");
	cmd(c, "DATA", "354 ");
	conn_send(c, body);
	conn_send(c, ".\r\n");
	expect_silence(c);		/* the relay has not answered yet */
	assert_int_equal(tc->stub.submitted, 1);
	assert_string_equal(tc->stub.msg->account, "ceo@example.com");
	assert_string_equal(tc->stub.msg->mail_from, "Boss@Example.com");
	assert_int_equal(tc->stub.msg->n_rcpts, 1);
	assert_string_equal(tc->stub.msg->rcpts[0], "friend@example.org");
	assert_int_equal(tc->stub.msg->body_8bit, 1);
	assert_int_equal(tc->stub.msg->smtputf8, 0);
	assert_string_equal(tc->stub.msg->client_ip, "127.0.0.1");
	assert_string_equal(tc->stub.msg->client_name, "lan");
	assert_string_equal(tc->stub.msg->helo, "client.test");
	qid = tc->stub.msg->queue_id;
	assert_int_equal(strlen(qid), 16);
	assert_int_equal(strspn(qid, "0123456789ABCDEFGHJKMNPQRSTVWXYZ"), 16);

	data = stub_data(&tc->stub);
	snprintf(want, sizeof(want), "Received: from client.test ([127.0.0.1])\r\n"
	    "\tby relay.test (smtpvault) with ESMTP id %s\r\n\tfor <friend@example.org>; ",
	    qid);
	if (strncmp(data, want, strlen(want)) != 0)
		fail_msg("Received header: \"%s\"", data);
	p = strstr(data, " +0000\r\n");
	assert_non_null(p);
	assert_string_equal(p + 8, "From: ceo@example.com\r\nSubject: hello\r\n\r\n"
	    ".leading dot\r\nline\r\n");
	free(data);

	stub_answer(&tc->stub, 250, "2.0.0", "Ok: queued as X");
	expect(c, "250 2.0.0 Ok: queued as X");
	/* The session goes on: a second message with two recipients, HELO style. */
	cmd(c, "HELO old.client", "250 ");
	cmd(c, "MAIL FROM:<>", "250 2.1.0");
	cmd(c, "RCPT TO:<a@example.org>", "250 2.1.5");
	cmd(c, "RCPT TO:<b@example.org>", "250 2.1.5");
	cmd(c, "DATA", "354 ");
	conn_send(c, "x\r\n.\r\n");
	expect_silence(c);
	assert_int_equal(tc->stub.submitted, 2);
	assert_string_equal(tc->stub.msg->account, "team@example.com");
	assert_string_equal(tc->stub.msg->mail_from, "");
	data = stub_data(&tc->stub);
	assert_null(strstr(data, "for <"));
	assert_non_null(strstr(data, "with SMTP id "));
	free(data);
	stub_answer(&tc->stub, 550, "5.7.1", "upstream says no\r\ninjected");
	expect(c, "550 5.7.1 upstream says no  injected");
	cmd(c, "QUIT", "221 ");
	expect_closed(c);
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_pipelining(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_open(tc, "127.0.0.1");

	expect(c, "220 ");
	conn_send(c, "EHLO client.test\r\nMAIL FROM:<ceo@example.com>\r\n"
	    "RCPT TO:<a@example.org>\r\nRCPT TO:<a%b@example.org>\r\nRCPT TO:<c@example.org>\r\n"
	    "DATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nRSET\r\nQUIT\r\n");
	expect(c, "250 ");
	expect(c, "250 2.1.0");
	expect(c, "250 2.1.5");
	expect(c, "553 5.1.3");
	expect(c, "250 2.1.5");
	expect(c, "354 ");
	/* RSET and QUIT wait until the relay has answered the message */
	expect_silence(c);
	assert_int_equal(tc->stub.msg->n_rcpts, 2);
	stub_answer(&tc->stub, 250, "2.0.0", "Ok");
	expect(c, "250 2.0.0 Ok");
	expect(c, "250 2.0.0");
	expect(c, "221 ");
	expect_closed(c);
	conn_close(c);
	tc_stop(tc);
}

/* SMTP smuggling through the whole session: one message, never two. */
static void
test_session_smuggling(void **state)
{
	static const char *const seqs[] = {
		"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\r\r\n.\r\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
		struct tc *tc = tc_start(NULL, 0);
		struct conn *c = conn_ehlo(tc, "127.0.0.1");
		char *data;
		size_t j;

		cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
		cmd(c, "RCPT TO:<a@example.org>", "250 ");
		cmd(c, "DATA", "354 ");
		conn_send(c, "Subject: s\r\n\r\nfirst");
		conn_send(c, seqs[i]);
		conn_send(c, "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.org>\r\n"
		    "DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
		expect_silence(c);
		assert_int_equal(tc->stub.submitted, 1);
		data = stub_data(&tc->stub);
		assert_non_null(strstr(data, "\r\nMAIL FROM:<ceo@example.com>\r\n"));
		assert_non_null(strstr(data, "\r\nevil\r\n"));
		for (j = 0; data[j] != '\0'; j++) {
			if (data[j] == '\r')
				assert_int_equal(data[j + 1], '\n');
			if (data[j] == '\n')
				assert_true(j > 0 && data[j - 1] == '\r');
		}
		free(data);
		stub_answer(&tc->stub, 250, "2.0.0", "Ok");
		expect(c, "250 2.0.0 Ok");
		cmd(c, "QUIT", "221 ");
		assert_int_equal(tc->stub.submitted, 1);
		conn_close(c);
		tc_stop(tc);
	}
}

static void
test_session_sequence(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_open(tc, "127.0.0.1");

	expect(c, "220 ");
	cmd(c, "MAIL FROM:<ceo@example.com>", "503 5.5.1");
	cmd(c, "RCPT TO:<a@example.org>", "503 5.5.1");
	cmd(c, "DATA", "503 5.5.1");
	cmd(c, "STARTTLS", "503 5.5.1");
	cmd(c, "EHLO client.test", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "503 5.5.1 Error: need MAIL command");
	cmd(c, "DATA", "503 5.5.1 Error: need MAIL command");
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "MAIL FROM:<ceo@example.com>", "503 5.5.1 Error: nested MAIL command");
	cmd(c, "DATA", "503 5.5.1 Error: need RCPT command");
	cmd(c, "RSET", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "503 5.5.1");
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_syntax(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");

	cmd(c, "EHLO", "501 5.5.4");
	cmd(c, "FOO bar", "500 5.5.1");
	cmd(c, "MAIL TO:<ceo@example.com>", "501 5.5.4");
	cmd(c, "MAIL FROM:<ceo@example.com", "501 5.5.4");
	cmd(c, "MAIL FROM:<@relay.example:ceo@example.com>", "553 5.1.7");
	cmd(c, "MAIL FROM:<ceo@example.com> RET=FULL", "555 5.5.4");
	cmd(c, "MAIL FROM:<j\xc3\xb6rg@example.com>", "553 5.6.7");
	cmd(c, "MAIL FROM:<ceo@example.com> SIZE=2049", "552 5.3.4");
	cmd(c, "MAIL FROM:<ceo@example.com> SIZE=2048", "250 2.1.0");
	cmd(c, "RCPT TO:<a@example.org> NOTIFY=NEVER", "555 5.5.4");
	cmd(c, "RCPT TO:<example.org!a>", "553 5.1.3");
	cmd(c, "RCPT TO:<a@b@example.org>", "501 5.5.4");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA now", "501 5.5.4");
	cmd(c, "QUIT now", "501 5.5.4");
	cmd(c, "RSET", "250 ");
	cmd(c, "MAIL FROM:<j\xc3\xb6rg@example.com> SMTPUTF8", "250 2.1.0");
	cmd(c, "RCPT TO:<m\xc3\xbcller@example.org>", "250 2.1.5");
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_lines(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");
	char line[2100];

	/* 1000 octets with CR LF: the longest line */
	memset(line, 'x', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + 998, "\r\n", 3);
	conn_send(c, line);
	expect(c, "250 ");
	/* 1001: refused, and the rest of it is never taken for a command */
	memcpy(line + 999, "\r\n", 3);
	memcpy(line + 500, "\r", 1);	/* not a line end on its own */
	conn_send(c, line);
	expect(c, "500 5.5.2");
	cmd(c, "NOOP", "250 ");
	memset(line, 'y', sizeof(line));
	memcpy(line + 1500, "QUIT\r\n", 7);
	conn_send(c, line);
	expect(c, "500 5.5.2");
	cmd(c, "NOOP", "250 ");	/* the QUIT inside the long line did nothing */

	/* bare LF and bare CR, and NUL */
	conn_send(c, "NOOP\n");
	expect(c, "500 5.5.2");
	conn_send(c, "QUIT\rNOOP\r\n");
	expect(c, "500 5.5.2");
	conn_send_n(c, "NO\0OP\r\n", 7);
	expect(c, "500 5.5.2");
	conn_send(c, "\r\n");
	expect(c, "500 5.5.2");
	cmd(c, "NOOP", "250 ");
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_limits(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");
	char big[3000];

	/* recipients */
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "RCPT TO:<b@example.org>", "250 ");
	cmd(c, "RCPT TO:<c@example.org>", "250 ");
	cmd(c, "RCPT TO:<d@example.org>", "452 4.5.3");
	/* actual size over max_message_size: read to the end, then 552 */
	cmd(c, "DATA", "354 ");
	memset(big, 'z', sizeof(big));
	memcpy(big + 900, "\r\n", 2);
	memcpy(big + 1800, "\r\n", 2);
	memcpy(big + 2700, "\r\n", 2);
	memcpy(big + sizeof(big) - 6, "\r\n.\r\n", 6);
	conn_send(c, big);
	expect(c, "552 5.3.4");
	assert_int_equal(tc->stub.submitted, 0);
	/* NUL in the body */
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	conn_send_n(c, "a\0b\r\n.\r\n", 8);
	expect(c, "554 5.6.0");
	/* a long body line */
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	memset(big, 'l', 1200);
	memcpy(big + 1200, "\r\n.\r\n", 6);
	conn_send(c, big);
	expect(c, "500 5.5.2");
	assert_int_equal(tc->stub.submitted, 0);
	cmd(c, "NOOP", "250 ");
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_too_many_errors(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");
	int i;

	for (i = 0; i < 19; i++)
		cmd(c, "BOGUS", "500 5.5.1");
	cmd(c, "NOOP", "250 ");
	conn_send(c, "BOGUS\r\nNOOP\r\n");
	expect(c, "500 5.5.1");
	expect(c, "421 4.7.0");
	expect_closed(c);
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_timeout(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");
	char r[512];
	int i;

	for (i = 0; i < 1000 && c->len == 0; i++) {	/* up to 5 s */
		conn_fill(c);
		(void)poll(NULL, 0, 5);
	}
	conn_reply(c, r, sizeof(r));
	assert_memory_equal(r, "421 4.4.2", 9);
	expect_closed(c);
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_connection_limits(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c[8];
	int i;

	/* max_connections_per_ip = 3 */
	for (i = 0; i < 3; i++) {
		c[i] = conn_open(tc, "127.0.0.2");
		expect(c[i], "220 ");
	}
	c[3] = conn_open(tc, "127.0.0.2");
	expect(c[3], "421 4.7.0");
	expect_closed(c[3]);
	conn_close(c[3]);
	/* max_connections = 6 */
	for (i = 3; i < 6; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "127.0.1.%d", i);
		c[i] = conn_open(tc, ip);
		expect(c[i], "220 ");
	}
	c[6] = conn_open(tc, "127.0.2.1");
	expect(c[6], "421 4.7.0 relay.test Error: too many connections");
	expect_closed(c[6]);
	conn_close(c[6]);
	/* one leaves, another may come */
	conn_close(c[0]);
	c[0] = conn_open(tc, "127.0.2.1");
	expect(c[0], "220 ");
	for (i = 0; i < 6; i++)
		conn_close(c[i]);
	tc_stop(tc);
}

static void
test_session_routing(void **state)
{
	struct tc *tc = tc_start(NULL, 1);
	struct conn *c = conn_ehlo(tc, "10.0.5.7");

	cmd(c, "MAIL FROM:<cron@ops.example.com>", "250 2.1.0");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	conn_send(c, "x\r\n.\r\n");
	expect_silence(c);
	assert_string_equal(tc->stub.msg->account, "alerts@example.com");
	assert_string_equal(tc->stub.msg->client_name, "monitoring");
	stub_answer(&tc->stub, 250, "2.0.0", "Ok");
	expect(c, "250 ");
	cmd(c, "MAIL FROM:<evil@other.example>",
	    "550 5.7.1 sender <evil@other.example> not allowed for client monitoring");
	/* the sender is an account: that account (rate: 2nd message) */
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 2.1.0");
	cmd(c, "RSET", "250 ");
	/* rate_limit = 2/hour */
	cmd(c, "MAIL FROM:<alerts@example.com>", "450 4.7.1 rate limit exceeded");
	conn_close(c);

	tc->stub.tempfail = 1;
	c = conn_ehlo(tc, "127.0.0.1");
	cmd(c, "MAIL FROM:<ceo@example.com>", "451 4.3.0");
	conn_close(c);
	tc_stop(tc);

	tc = tc_start(NULL, 0);
	tc->cfg.default_account[0] = '\0';
	c = conn_ehlo(tc, "127.0.0.1");
	cmd(c, "MAIL FROM:<printer@host.lan>", "550 5.7.1 no sending account for <printer@host.lan>");
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	conn_close(c);
	tc_stop(tc);
}

static void
test_session_relay_refuses_and_cancel(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *c = conn_ehlo(tc, "127.0.0.1");

	tc->stub.refuse = 1;
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	conn_send(c, "x\r\n.\r\nNOOP\r\n");
	expect(c, "451 4.3.0 relay refused at once");
	expect(c, "250 ");

	/* Many pipelined messages refused at once: answered in order, without
	 * the input loop calling itself once per message. */
	{
		static const char one[] = "MAIL FROM:<ceo@example.com>\r\n"
		    "RCPT TO:<a@example.org>\r\nDATA\r\nx\r\n.\r\n";
		char *many = malloc(sizeof(one) * 200);
		int i;

		assert_non_null(many);
		many[0] = '\0';
		for (i = 0; i < 200; i++)
			strlcat(many, one, sizeof(one) * 200);
		conn_send(c, many);
		free(many);
		for (i = 0; i < 200; i++) {
			expect(c, "250 2.1.0");
			expect(c, "250 2.1.5");
			expect(c, "354 ");
			expect(c, "451 4.3.0");
		}
		assert_int_equal(tc->stub.submitted, 201);
	}

	/* The client goes away while the relay works: the answer then goes
	 * nowhere, and the session ends. */
	tc->stub.refuse = 0;
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	conn_send(c, "x\r\n.\r\n");
	expect_silence(c);
	assert_non_null(tc->stub.cb);
	conn_close(c);
	stub_answer(&tc->stub, 250, "2.0.0", "Ok");
	tc_pump(tc);

	/* The server stops while the relay works: cancelled, never called. */
	c = conn_ehlo(tc, "127.0.0.1");
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	conn_send(c, "x\r\n.\r\n");
	expect_silence(c);
	assert_non_null(tc->stub.cb);
	smtp_server_free(tc->srv);
	tc->srv = NULL;
	assert_int_equal(tc->stub.cancelled, 1);
	assert_null(tc->stub.cb);
	conn_close(c);
	tc_stop(tc);
}

static void
drained(void *arg)
{
	struct tc *tc = arg;

	tc->drained++;
}

static void
test_session_drain(void **state)
{
	struct tc *tc = tc_start(NULL, 0);
	struct conn *idle = conn_ehlo(tc, "127.0.0.1");
	struct conn *busy = conn_ehlo(tc, "127.0.0.3");
	struct conn *late;

	cmd(busy, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(busy, "RCPT TO:<a@example.org>", "250 ");
	cmd(busy, "DATA", "354 ");
	conn_send(busy, "x\r\n.\r\n");
	expect_silence(busy);

	smtp_server_drain(tc->srv, drained, tc);
	expect(idle, "421 4.3.2");
	expect_closed(idle);
	late = conn_open(tc, "127.0.0.4");	/* the listener would not take it */
	expect_closed(late);
	conn_close(late);
	assert_int_equal(tc->drained, 0);
	/* the transaction in flight finishes first */
	stub_answer(&tc->stub, 250, "2.0.0", "Ok");
	expect(busy, "250 2.0.0 Ok");
	expect(busy, "421 4.3.2");
	expect_closed(busy);
	tc_pump(tc);
	assert_int_equal(tc->drained, 1);
	conn_close(idle);
	conn_close(busy);
	tc_stop(tc);
}

/* ---- STARTTLS ---------------------------------------------------------- */

static char tls_dir[64], tls_cert[128], tls_key[128];

static void
tls_files(void)
{
	X509_NAME *name;
	EVP_PKEY *key;
	X509 *x;
	FILE *f;

	strlcpy(tls_dir, "/tmp/smtpvault-session.XXXXXX", sizeof(tls_dir));
	assert_non_null(mkdtemp(tls_dir));
	snprintf(tls_cert, sizeof(tls_cert), "%s/cert.pem", tls_dir);
	snprintf(tls_key, sizeof(tls_key), "%s/key.pem", tls_dir);
	key = EVP_EC_gen("P-256");
	assert_non_null(key);
	x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"relay.test", -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	assert_non_null(f = fopen(tls_cert, "w"));
	PEM_write_X509(f, x);
	fclose(f);
	assert_non_null(f = fopen(tls_key, "w"));
	PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(key);
}

static void
tls_files_remove(void)
{
	unlink(tls_cert);
	unlink(tls_key);
	rmdir(tls_dir);
}

/* The client side of the handshake, turning the server's loop meanwhile. */
static int
conn_tls(struct conn *c, SSL_CTX *ctx)
{
	int i, r;

	c->ssl = SSL_new(ctx);
	assert_non_null(c->ssl);
	SSL_set_fd(c->ssl, c->fd);
	for (i = 0; i < WAIT_MS / 5; i++) {
		struct pollfd p = { c->fd, POLLIN, 0 };

		if ((r = SSL_connect(c->ssl)) == 1)
			return 0;
		r = SSL_get_error(c->ssl, r);
		if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE)
			return -1;
		tc_pump(c->tc);
		(void)poll(&p, 1, 5);
	}
	return -1;
}

static void
test_session_starttls(void **state)
{
	struct tc *tc;
	struct conn *c;
	SSL_CTX *cctx;
	char ini[512], r[4096], *data;

	tls_files();
	snprintf(ini, sizeof(ini), "tls_cert = %s\ntls_key = %s\n", tls_cert, tls_key);
	tc = tc_start(ini, 0);
	cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cctx);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);

	c = conn_open(tc, "127.0.0.1");
	expect(c, "220 ");
	conn_send(c, "EHLO client.test\r\n");
	conn_reply(c, r, sizeof(r));
	assert_non_null(strstr(r, "250-STARTTLS\r\n"));
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "STARTTLS", "503 5.5.1");	/* not inside a transaction */
	cmd(c, "RSET", "250 ");
	/* STARTTLS with a command pipelined behind it: the command is dropped,
	 * and EHLO is needed again */
	conn_send(c, "STARTTLS\r\nRCPT TO:<injected@example.org>\r\n");
	expect(c, "220 2.0.0");
	assert_int_equal(c->len, 0);
	assert_int_equal(conn_tls(c, cctx), 0);
	cmd(c, "RCPT TO:<a@example.org>", "503 5.5.1");
	cmd(c, "MAIL FROM:<ceo@example.com>", "503 5.5.1");
	conn_send(c, "EHLO client.test\r\n");
	conn_reply(c, r, sizeof(r));
	assert_null(strstr(r, "STARTTLS"));
	cmd(c, "STARTTLS", "503 5.5.1");
	cmd(c, "MAIL FROM:<ceo@example.com>", "250 ");
	cmd(c, "RCPT TO:<a@example.org>", "250 ");
	cmd(c, "DATA", "354 ");
	conn_send(c, "x\r\n.\r\n");
	expect_silence(c);
	assert_int_equal(tc->stub.submitted, 1);
	assert_int_equal(tc->stub.msg->n_rcpts, 1);
	data = stub_data(&tc->stub);
	assert_non_null(strstr(data, "with ESMTPS id"));
	free(data);
	stub_answer(&tc->stub, 250, "2.0.0", "Ok");
	expect(c, "250 2.0.0 Ok");
	cmd(c, "QUIT", "221 ");
	expect_closed(c);
	conn_close(c);

	/* plaintext where the handshake should be: the session just ends */
	c = conn_ehlo(tc, "127.0.0.1");
	conn_send(c, "STARTTLS\r\n");
	expect(c, "220 ");
	tc_pump(tc);
	conn_send(c, "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<a@example.org>\r\n");
	expect_closed(c);
	conn_close(c);

	SSL_CTX_free(cctx);
	tc_stop(tc);
	tls_files_remove();
}

/* A real listener on 127.0.0.1, port chosen by the kernel. */
static void
test_session_listener(void **state)
{
	struct tc *tc = calloc(1, sizeof(*tc));
	struct sockaddr_storage ss;
	struct smtp_server_hooks hooks;
	struct sockaddr_in *sin;
	socklen_t sslen;
	char err[512], ini[1024], buf[256];
	int fd, i;
	ssize_t n = 0;

	assert_non_null(tc);
	snprintf(ini, sizeof(ini), "%s", base_ini);
	assert_int_equal(config_parse("t", ini, &tc->cfg, err, sizeof(err)), 0);
	tc->cfg.n_listen = 1;
	sin = (struct sockaddr_in *)&tc->cfg.listen[0].ss;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	tc->cfg.listen[0].sslen = sizeof(*sin);
	strlcpy(tc->cfg.listen[0].text, "127.0.0.1:0", sizeof(tc->cfg.listen[0].text));
	tc->base = event_base_new();
	tc->srv = smtp_server_new(tc->base, &tc->cfg, NULL, NULL, err, sizeof(err));
	if (tc->srv == NULL)
		fail_msg("%s", err);
	hooks.resolve = stub_resolve;
	hooks.submit = stub_submit;
	hooks.cancel = stub_cancel;
	hooks.arg = &tc->stub;
	smtp_server_set_hooks(tc->srv, &hooks);
	assert_int_equal(smtp_server_local_addr(tc->srv, 0, &ss, &sslen), 0);
	assert_int_equal(smtp_server_local_addr(tc->srv, 1, &ss, &sslen), -1);
	assert_int_not_equal(((struct sockaddr_in *)&ss)->sin_port, 0);

	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, sslen), 0);
	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	for (i = 0; i < WAIT_MS / 5; i++) {
		tc_pump(tc);
		n = read(fd, buf, sizeof(buf) - 1);
		if (n > 0)
			break;
		(void)poll(NULL, 0, 5);
	}
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "220 relay.test ESMTP smtpvault\r\n");
	close(fd);
	tc_pump(tc);
	tc_stop(tc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_session_greeting_ehlo),
		cmocka_unit_test(test_session_access),
		cmocka_unit_test(test_session_message),
		cmocka_unit_test(test_session_pipelining),
		cmocka_unit_test(test_session_smuggling),
		cmocka_unit_test(test_session_sequence),
		cmocka_unit_test(test_session_syntax),
		cmocka_unit_test(test_session_lines),
		cmocka_unit_test(test_session_limits),
		cmocka_unit_test(test_session_too_many_errors),
		cmocka_unit_test(test_session_timeout),
		cmocka_unit_test(test_session_connection_limits),
		cmocka_unit_test(test_session_routing),
		cmocka_unit_test(test_session_relay_refuses_and_cancel),
		cmocka_unit_test(test_session_drain),
		cmocka_unit_test(test_session_starttls),
		cmocka_unit_test(test_session_listener),
	};

	if (sodium_init() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);	/* as the daemon does (server.c) */
	log_init("test_smtp_session", getenv("TEST_VERBOSE") != NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
