/*
 * test_relay_link.c: proxy/relay_link.c as a specification. A front end
 * link and a relay-side link run over one socketpair in this process; the
 * relay is a fake behind relay_link_server_set_hooks() that records what
 * it is handed and answers when told. Every envelope field arrives byte for
 * byte, inline and through the memfd; each submit is answered exactly once;
 * a cancel reaches the relay and a late result is dropped; a dead link
 * answers 451 to pending and new submits; every malformed SUBMIT is refused
 * (through the event callback here, by exit without one); and a thousand
 * pipelined submits come back, each to its own caller.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "ipc.h"
#include "log.h"
#include "relay.h"
#include "relay_link.h"

#define FAKE_MAX	1100	/* messages the fake relay keeps */
#define CALLERS_MAX	1100
#define PUMP_ROUNDS	20000
#define T_MAX_RCPTS	10000
#define T_MAX_SIZE	((uint64_t)8 * 1024 * 1024)
#define WHY_MAX		256

/* ---- The fake relay ----------------------------------------------------- */

struct fake {
	struct relay_msg	*msgs[FAKE_MAX];
	relay_cb		*cbs[FAKE_MAX];
	void			*cbargs[FAKE_MAX];
	int			 answered[FAKE_MAX];
	size_t			 n;
	size_t			 cancels;
	void			*cancelled[FAKE_MAX];
	int			 auto_answer;	/* answer each at once (later, from the loop) */
	int			 refuse;	/* relay_submit() returns -1 */
};

static int
fake_submit(void *arg, struct relay_msg *msg, relay_cb *cb, void *cbarg,
    struct relay_result *res)
{
	struct fake *f = arg;

	if (f->refuse) {
		memset(res, 0, sizeof(*res));
		res->code = 421;
		strlcpy(res->enhanced, "4.3.2", sizeof(res->enhanced));
		strlcpy(res->text, "service shutting down", sizeof(res->text));
		relay_msg_free(msg);
		return -1;
	}
	assert_true(f->n < FAKE_MAX);
	f->msgs[f->n] = msg;
	f->cbs[f->n] = cb;
	f->cbargs[f->n] = cbarg;
	f->n++;
	return 0;
}

static void
fake_cancel(void *arg, void *cbarg)
{
	struct fake *f = arg;
	size_t i;

	f->cancelled[f->cancels++] = cbarg;
	for (i = 0; i < f->n; i++)
		if (f->cbargs[i] == cbarg)
			f->answered[i] = 1;	/* never to be answered */
}

/* The relay answers message i: 250 with its queue id as the text. */
static void
fake_answer(struct fake *f, size_t i, int code)
{
	struct relay_result res;

	assert_false(f->answered[i]);
	f->answered[i] = 1;
	memset(&res, 0, sizeof(res));
	res.code = code;
	strlcpy(res.enhanced, code < 300 ? "2.0.0" : "4.4.1", sizeof(res.enhanced));
	snprintf(res.text, sizeof(res.text), "Ok: queued as %s", f->msgs[i]->queue_id);
	f->cbs[i](f->cbargs[i], &res);
}

static void
fake_clear(struct fake *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		relay_msg_free(f->msgs[i]);
	memset(f, 0, sizeof(*f));
}

/* ---- The front end's callers --------------------------------------------- */

struct caller {
	int			 calls;
	struct relay_result	 res;
};

static void
caller_cb(void *arg, const struct relay_result *res)
{
	struct caller *c = arg;

	c->calls++;
	c->res = *res;
}

/* ---- The harness ---------------------------------------------------------- */

struct t {
	struct event_base	*base;
	struct config		 cfg;
	struct relay_link	*client, *server;
	struct fake		 fake;
	struct caller		 callers[CALLERS_MAX];
	int			 client_ev, server_ev;	/* last event, 0 = none */
	char			 client_why[WHY_MAX], server_why[WHY_MAX];
	int			 raw;			/* the test's end, without a client link */
};

static void
on_client_event(struct relay_link *rl, enum ipc_event ev, const char *why, void *arg)
{
	struct t *t = arg;

	t->client_ev = ev;
	strlcpy(t->client_why, why, sizeof(t->client_why));
}

static void
on_server_event(struct relay_link *rl, enum ipc_event ev, const char *why, void *arg)
{
	struct t *t = arg;

	t->server_ev = ev;
	strlcpy(t->server_why, why, sizeof(t->server_why));
}

static void
t_server(struct t *t, int fd)
{
	struct relay_link_hooks h = { fake_submit, fake_cancel, &t->fake };

	t->server = relay_link_server_new(t->base, fd, NULL, &t->cfg);
	assert_non_null(t->server);
	relay_link_server_set_hooks(t->server, &h);
	relay_link_set_event_cb(t->server, on_server_event, t);
}

/* raw: the test keeps the front end's socket to write records by hand. */
static struct t *
t_new(int raw)
{
	struct t *t = calloc(1, sizeof(*t));
	int sv[2];

	assert_non_null(t);
	t->base = event_base_new();
	assert_non_null(t->base);
	t->cfg.max_recipients = T_MAX_RCPTS;
	t->cfg.max_message_size = T_MAX_SIZE;
	t->cfg.log_subject = 1;
	assert_int_equal(ipc_socketpair(sv), 0);
	t->raw = -1;
	if (raw) {
		t->raw = sv[0];
	} else {
		t->client = relay_link_client_new(t->base, sv[0]);
		assert_non_null(t->client);
		relay_link_set_event_cb(t->client, on_client_event, t);
	}
	t_server(t, sv[1]);
	return t;
}

static void
t_free(struct t *t)
{
	relay_link_free(t->client);
	relay_link_free(t->server);
	fake_clear(&t->fake);
	if (t->raw >= 0)
		close(t->raw);
	event_base_free(t->base);
	free(t);
}

/* Run the loop until cond holds (or fail after PUMP_ROUNDS idle rounds). */
#define PUMP(t, cond) do {						\
	int _i;								\
	for (_i = 0; _i < PUMP_ROUNDS && !(cond); _i++) {		\
		event_base_loop((t)->base, EVLOOP_NONBLOCK);		\
		if (!(cond))						\
			usleep(100);					\
	}								\
	assert_true(cond);						\
} while (0)

/* A few more rounds, for "nothing else happens". */
static void
settle(struct t *t)
{
	int i;

	for (i = 0; i < 50; i++) {
		event_base_loop(t->base, EVLOOP_NONBLOCK);
		usleep(100);
	}
}

/* ---- Messages ------------------------------------------------------------- */

static void
fill(char *dst, size_t len, char c)
{
	memset(dst, c, len);
	dst[len] = '\0';
}

/* A message with every field set, long strings at their limits, n_rcpts
 * recipients of rlen bytes and size bytes of data (every byte value). */
static struct relay_msg *
msg_new(size_t n_rcpts, size_t rlen, size_t size, unsigned seed)
{
	struct relay_msg *m = calloc(1, sizeof(*m));
	unsigned char *data;
	size_t i;

	assert_non_null(m);
	snprintf(m->queue_id, sizeof(m->queue_id), "Q%08uABCDEFGHIJKLMN", seed);
	fill(m->account, sizeof(m->account) - 1, 'a');
	memcpy(m->account, "acct@", 5);
	/* SMTPUTF8: UTF-8 in the path. */
	snprintf(m->mail_from, sizeof(m->mail_from), "s\xc3\xa9nder+%u@example.com", seed);
	strlcpy(m->client_ip, "2001:db8::1", sizeof(m->client_ip));
	fill(m->client_name, sizeof(m->client_name) - 1, 'n');
	fill(m->helo, sizeof(m->helo) - 1, 'h');
	m->body_8bit = seed & 1;
	m->smtputf8 = !(seed & 1);
	m->n_rcpts = n_rcpts;
	m->rcpts = calloc(n_rcpts, sizeof(*m->rcpts));
	assert_non_null(m->rcpts);
	for (i = 0; i < n_rcpts; i++) {
		fill(m->rcpts[i], rlen, 'r');
		snprintf(m->rcpts[i], rlen + 1, "%zu@x", i);
		if (strlen(m->rcpts[i]) < rlen)
			m->rcpts[i][strlen(m->rcpts[i])] = 'r';
	}
	m->fields.header_from = strdup("\"Team\" <team@example.com>");
	m->fields.subject = seed & 2 ? NULL : strdup("Quarterly \xc3\xbc report");
	m->fields.message_id = strdup("<id@x>");
	m->data = evbuffer_new();
	data = malloc(size > 0 ? size : 1);
	assert_non_null(data);
	for (i = 0; i < size; i++)
		data[i] = (unsigned char)(i * 7 + seed);
	/* In several pieces, as the session builds it. */
	for (i = 0; i < size; i += 4096)
		evbuffer_add(m->data, data + i, size - i < 4096 ? size - i : 4096);
	free(data);
	return m;
}

/* A deep copy of what is compared (submit takes the original). */
static struct relay_msg *
msg_copy(const struct relay_msg *m)
{
	struct relay_msg *c = calloc(1, sizeof(*c));
	unsigned char *p;
	size_t len;

	*c = *m;
	c->rcpts = calloc(m->n_rcpts, sizeof(*m->rcpts));
	memcpy(c->rcpts, m->rcpts, m->n_rcpts * sizeof(*m->rcpts));
	c->fields.header_from = m->fields.header_from ? strdup(m->fields.header_from) : NULL;
	c->fields.subject = m->fields.subject ? strdup(m->fields.subject) : NULL;
	c->fields.message_id = m->fields.message_id ? strdup(m->fields.message_id) : NULL;
	c->data = evbuffer_new();
	len = evbuffer_get_length(m->data);
	p = malloc(len > 0 ? len : 1);
	assert_int_equal(evbuffer_copyout(m->data, p, len), (ev_ssize_t)len);
	evbuffer_add(c->data, p, len);
	free(p);
	return c;
}

static void
assert_nstr_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void
assert_msg_equal(const struct relay_msg *want, const struct relay_msg *got, int subject)
{
	size_t len = evbuffer_get_length(want->data), i;

	assert_string_equal(got->queue_id, want->queue_id);
	assert_string_equal(got->account, want->account);
	assert_string_equal(got->mail_from, want->mail_from);
	assert_string_equal(got->client_ip, want->client_ip);
	assert_string_equal(got->client_name, want->client_name);
	assert_string_equal(got->helo, want->helo);
	assert_int_equal(got->body_8bit, want->body_8bit);
	assert_int_equal(got->smtputf8, want->smtputf8);
	assert_int_equal(got->n_rcpts, want->n_rcpts);
	for (i = 0; i < want->n_rcpts; i++)
		assert_string_equal(got->rcpts[i], want->rcpts[i]);
	assert_nstr_equal(got->fields.header_from, want->fields.header_from);
	assert_nstr_equal(got->fields.subject, subject ? want->fields.subject : NULL);
	assert_nstr_equal(got->fields.message_id, want->fields.message_id);
	assert_non_null(got->data);
	assert_int_equal(evbuffer_get_length(got->data), len);
	if (len > 0)
		assert_memory_equal(evbuffer_pullup(got->data, -1),
		    evbuffer_pullup(want->data, -1), len);
}

/* Submit a copy of m through the client as caller c; returns the copy. */
static struct relay_msg *
submit(struct t *t, struct relay_msg *m, size_t c)
{
	struct relay_msg *want = msg_copy(m);
	struct relay_result res;

	assert_int_equal(relay_link_submit(t->client, m, caller_cb, &t->callers[c], &res), 0);
	return want;
}

/* ---- Round trips ---------------------------------------------------------- */

static void
round_trip(size_t n_rcpts, size_t rlen, size_t size, unsigned seed, int log_subject)
{
	struct t *t = t_new(0);
	struct relay_msg *m = msg_new(n_rcpts, rlen, size, seed), *want;

	if (!log_subject) {
		t->cfg.log_subject = 0;
		relay_link_server_set_config(t->server, &t->cfg);
	}
	want = submit(t, m, 0);
	assert_int_equal(relay_link_pending(t->client), 1);
	PUMP(t, t->fake.n == 1);
	assert_msg_equal(want, t->fake.msgs[0], log_subject);
	assert_int_equal(t->callers[0].calls, 0);
	fake_answer(&t->fake, 0, 250);
	PUMP(t, t->callers[0].calls == 1);
	assert_int_equal(t->callers[0].res.code, 250);
	assert_string_equal(t->callers[0].res.enhanced, "2.0.0");
	assert_true(strstr(t->callers[0].res.text, want->queue_id) != NULL);
	assert_int_equal(relay_link_pending(t->client), 0);
	settle(t);
	assert_int_equal(t->callers[0].calls, 1);
	assert_int_equal(t->client_ev, 0);
	assert_int_equal(t->server_ev, 0);
	relay_msg_free(want);
	t_free(t);
}

static void
test_round_trip_small(void **state)
{
	round_trip(3, 40, 1000, 1, 1);
	round_trip(1, 1, 0, 2, 1);		/* empty data, no subject */
	round_trip(100, RELAY_PATH_MAX - 1, 64 * 1024, 3, 1);
}

static void
test_round_trip_fd(void **state)
{
	/* Just over one record, then large data, then recipients that alone
	 * do not fit in a record (10000 of 256 bytes). */
	round_trip(2, 20, IPC_PAYLOAD_MAX, 4, 1);
	round_trip(5, 30, 5 * 1024 * 1024 + 17, 5, 1);
	round_trip(T_MAX_RCPTS, RELAY_PATH_MAX - 1, 1000, 6, 1);
}

static void
test_round_trip_at_the_record_limit(void **state)
{
	struct relay_msg *m;
	struct ipc_buf b;
	unsigned char *tmp = malloc(IPC_PAYLOAD_MAX);
	size_t head;

	/* The largest data that still goes inline, and one byte more. */
	m = msg_new(2, 20, 0, 7);
	b.p = tmp;
	b.len = 0;
	b.cap = IPC_PAYLOAD_MAX;
	b.failed = 0;
	/* The head as the wire form says (relay_link.c's comment). */
	ipc_put_u32(&b, 0);
	ipc_put_str(&b, m->queue_id);
	ipc_put_str(&b, m->account);
	ipc_put_str(&b, m->mail_from);
	ipc_put_str(&b, m->client_ip);
	ipc_put_str(&b, m->client_name);
	ipc_put_str(&b, m->helo);
	ipc_put_nstr(&b, m->fields.header_from);
	ipc_put_nstr(&b, m->fields.subject);
	ipc_put_nstr(&b, m->fields.message_id);
	ipc_put_u32(&b, 0);
	ipc_put_u32(&b, 0);
	ipc_put_u64(&b, 0);
	head = b.len + 2 * (2 + 20);
	relay_msg_free(m);
	free(tmp);
	round_trip(2, 20, IPC_PAYLOAD_MAX - head, 7, 1);
	round_trip(2, 20, IPC_PAYLOAD_MAX - head + 1, 7, 1);
}

static void
test_subject_dropped_when_not_logged(void **state)
{
	round_trip(1, 10, 100, 8, 0);
	round_trip(1, 10, 300 * 1024, 8, 0);
}

static void
test_refused_at_once_is_answered(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *want;

	t->fake.refuse = 1;
	want = submit(t, msg_new(1, 5, 10, 9), 0);
	PUMP(t, t->callers[0].calls == 1);
	assert_int_equal(t->callers[0].res.code, 421);
	assert_string_equal(t->callers[0].res.enhanced, "4.3.2");
	assert_string_equal(t->callers[0].res.text, "service shutting down");
	settle(t);
	assert_int_equal(t->callers[0].calls, 1);
	relay_msg_free(want);
	t_free(t);
}

/*
 * The relay re-read a configuration with lower limits that the front end
 * has not (or refused): a message between the old and the new limits is
 * answered as the front end would answer it, and the link stays up.
 */
static void
test_current_limits_are_a_reply(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w0, *w1, *w2;
	struct config lower;
	size_t max_data;

	lower = t->cfg;
	lower.max_recipients = 2;
	lower.max_message_size = 1024;
	relay_link_server_set_config(t->server, &lower);
	max_data = 1024 + RELAY_LINK_DATA_SLACK;
	w0 = submit(t, msg_new(3, 5, 10, 20), 0);
	w1 = submit(t, msg_new(1, 5, max_data + 1, 21), 1);
	w2 = submit(t, msg_new(2, 5, max_data, 22), 2);
	PUMP(t, t->callers[0].calls == 1 && t->callers[1].calls == 1 && t->fake.n == 1);
	assert_int_equal(t->callers[0].res.code, 452);
	assert_string_equal(t->callers[0].res.enhanced, "4.5.3");
	assert_int_equal(t->callers[1].res.code, 552);
	assert_string_equal(t->callers[1].res.enhanced, "5.3.4");
	/* The next message at the limits goes through. */
	assert_msg_equal(w2, t->fake.msgs[0], 1);
	fake_answer(&t->fake, 0, 250);
	PUMP(t, t->callers[2].calls == 1);
	assert_int_equal(t->callers[2].res.code, 250);
	settle(t);
	assert_int_equal(t->server_ev, 0);
	assert_int_equal(t->client_ev, 0);
	assert_int_equal(relay_link_pending(t->client), 0);
	relay_msg_free(w0);
	relay_msg_free(w1);
	relay_msg_free(w2);
	t_free(t);
}

/* ---- Cancel ----------------------------------------------------------------- */

static void
test_cancel_reaches_the_relay(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w0, *w1;

	w0 = submit(t, msg_new(1, 5, 10, 10), 0);
	w1 = submit(t, msg_new(1, 5, 10, 11), 1);
	PUMP(t, t->fake.n == 2);
	relay_link_cancel(t->client, &t->callers[0]);
	assert_int_equal(relay_link_pending(t->client), 1);
	PUMP(t, t->fake.cancels == 1);
	/* The relay cancels the entry it was handed for that message. */
	assert_ptr_equal(t->fake.cancelled[0], t->fake.cbargs[0]);
	fake_answer(&t->fake, 1, 250);
	PUMP(t, t->callers[1].calls == 1);
	settle(t);
	assert_int_equal(t->callers[0].calls, 0);
	relay_msg_free(w0);
	relay_msg_free(w1);
	t_free(t);
}

static void
test_late_result_after_cancel_is_dropped(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w0, *w1;

	w0 = submit(t, msg_new(1, 5, 10, 12), 0);
	PUMP(t, t->fake.n == 1);
	/* The relay answers, and the session goes before the answer arrives. */
	fake_answer(&t->fake, 0, 250);
	relay_link_cancel(t->client, &t->callers[0]);
	/* Its slot is reused at once by another caller. */
	w1 = submit(t, msg_new(1, 5, 10, 13), 1);
	PUMP(t, t->fake.n == 2);
	settle(t);
	assert_int_equal(t->callers[0].calls, 0);
	assert_int_equal(t->callers[1].calls, 0);
	assert_int_equal(t->fake.cancels, 0);	/* nothing left to cancel there */
	fake_answer(&t->fake, 1, 250);
	PUMP(t, t->callers[1].calls == 1);
	assert_true(strstr(t->callers[1].res.text, w1->queue_id) != NULL);
	assert_int_equal(t->client_ev, 0);
	assert_int_equal(t->server_ev, 0);
	relay_msg_free(w0);
	relay_msg_free(w1);
	t_free(t);
}

/* ---- A dead link ------------------------------------------------------------- */

static void
test_relay_gone_answers_451(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w[3];
	struct relay_result res;
	size_t i;

	for (i = 0; i < 3; i++)
		w[i] = submit(t, msg_new(1, 5, 10, 20 + i), i);
	PUMP(t, t->fake.n == 3);
	/* The relay process goes away: its end closes, in-flight work is
	 * cancelled there. */
	relay_link_free(t->server);
	t->server = NULL;
	assert_int_equal(t->fake.cancels, 3);
	PUMP(t, t->client_ev != 0);
	assert_int_equal(t->client_ev, IPC_EV_CLOSED);
	for (i = 0; i < 3; i++) {
		assert_int_equal(t->callers[i].calls, 1);
		assert_int_equal(t->callers[i].res.code, 451);
		assert_string_equal(t->callers[i].res.enhanced, "4.3.0");
	}
	assert_int_equal(relay_link_pending(t->client), 0);
	/* New submits are refused at once, and their callback never runs. */
	assert_int_equal(relay_link_submit(t->client, msg_new(1, 5, 10, 30), caller_cb,
	    &t->callers[3], &res), -1);
	assert_int_equal(res.code, 451);
	assert_string_equal(res.enhanced, "4.3.0");
	relay_link_cancel(t->client, &t->callers[3]);
	settle(t);
	for (i = 0; i < 4; i++)
		assert_int_equal(t->callers[i].calls, i < 3 ? 1 : 0);
	for (i = 0; i < 3; i++)
		relay_msg_free(w[i]);
	t_free(t);
}

static void
test_front_end_gone_cancels_in_relay(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w[2];

	w[0] = submit(t, msg_new(1, 5, 10, 40), 0);
	w[1] = submit(t, msg_new(1, 5, 10, 41), 1);
	PUMP(t, t->fake.n == 2);
	relay_link_free(t->client);
	t->client = NULL;
	PUMP(t, t->server_ev != 0);
	assert_int_equal(t->server_ev, IPC_EV_CLOSED);
	assert_int_equal(t->fake.cancels, 2);
	relay_msg_free(w[0]);
	relay_msg_free(w[1]);
	t_free(t);
}

static void
drained(void *arg)
{
	(*(int *)arg)++;
}

static void
test_drain_waits_for_pending(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w;
	int done = 0;

	w = submit(t, msg_new(1, 5, 10, 50), 0);
	PUMP(t, t->fake.n == 1);
	relay_link_client_drain(t->client, drained, &done);
	settle(t);
	assert_int_equal(done, 0);
	fake_answer(&t->fake, 0, 250);
	PUMP(t, done == 1);
	assert_int_equal(t->callers[0].calls, 1);
	relay_msg_free(w);
	t_free(t);
}

/* ---- Malformed records -------------------------------------------------------- */

/* A valid SUBMIT payload, written by hand after the wire form; what the
 * cases below break. */
struct wire {
	uint32_t	flags, n_rcpts, rcpts_len;
	uint64_t	data_len;
	const char	*queue_id;
	const char	*helo;
	size_t		helo_len;	/* 0: strlen */
	const char	*rcpts;		/* the recipient block, raw */
	size_t		rcpts_bytes;	/* written */
	size_t		data_bytes;	/* written */
	size_t		trailing;
	uint32_t	field_flag;	/* header_from's "present" flag */
};

#define RCPT_OK		"\x00\x06" "a@b.cd"

static const struct wire wire_ok = {
	.flags = 0, .n_rcpts = 1, .rcpts_len = 8, .data_len = 3, .queue_id = "Q1",
	.helo = "helo", .rcpts = RCPT_OK, .rcpts_bytes = 8, .data_bytes = 3,
	.field_flag = 1,
};

static size_t
wire_encode(const struct wire *w, unsigned char *buf, size_t cap)
{
	struct ipc_buf b = { buf, 0, cap, 0 };
	size_t i;

	ipc_put_u32(&b, w->flags);
	ipc_put_str(&b, w->queue_id);
	ipc_put_str(&b, "acct@example.com");
	ipc_put_str(&b, "from@example.com");
	ipc_put_str(&b, "192.0.2.1");
	ipc_put_str(&b, "printer");
	ipc_put_bytes(&b, w->helo, w->helo_len > 0 ? w->helo_len : strlen(w->helo));
	ipc_put_u32(&b, w->field_flag);
	ipc_put_str(&b, "x");
	ipc_put_nstr(&b, NULL);
	ipc_put_nstr(&b, "<m@x>");
	ipc_put_u32(&b, w->n_rcpts);
	ipc_put_u32(&b, w->rcpts_len);
	ipc_put_u64(&b, w->data_len);
	ipc_put_raw(&b, w->rcpts, w->rcpts_bytes);
	for (i = 0; i < w->data_bytes; i++)
		ipc_put_raw(&b, "d", 1);
	for (i = 0; i < w->trailing; i++)
		ipc_put_raw(&b, "t", 1);
	assert_false(b.failed);
	return b.len;
}

static void
test_decode_accepts_the_wire_form(void **state)
{
	static unsigned char buf[4096];
	struct relay_link_limits lim = { 10, 100, 1 };
	struct relay_msg *m;
	char why[WHY_MAX];
	size_t n = wire_encode(&wire_ok, buf, sizeof(buf));

	assert_int_equal(relay_link_decode(buf, n, -1, &lim, &m, why, sizeof(why)), 0);
	assert_string_equal(m->queue_id, "Q1");
	assert_string_equal(m->helo, "helo");
	assert_int_equal(m->n_rcpts, 1);
	assert_string_equal(m->rcpts[0], "a@b.cd");
	assert_string_equal(m->fields.header_from, "x");
	assert_null(m->fields.subject);
	assert_string_equal(m->fields.message_id, "<m@x>");
	assert_int_equal(evbuffer_get_length(m->data), 3);
	relay_msg_free(m);
}

static void
test_decode_refuses_malformed(void **state)
{
	static unsigned char buf[8192];
	static char long_rcpt[2 + RELAY_PATH_MAX + 3];
	char long_id[RELAY_QUEUE_ID_MAX + 1];
	struct relay_link_limits lim = { 10, 100, 1 };
	struct relay_msg *m;
	char why[WHY_MAX];
	struct {
		const char	*name;
		struct wire	 w;
		size_t		 cut;	/* bytes cut off the end */
		const char	*why;
	} cases[] = {
		{ "unknown flag", wire_ok, 0, "malformed envelope" },
		{ "no recipient", wire_ok, 0, "recipients, outside" },
		{ "too many recipients", wire_ok, 0, "recipients, outside" },
		{ "recipient bytes too few", wire_ok, 0, "recipients of" },
		{ "recipient bytes too many", wire_ok, 0, "recipients of" },
		{ "data over the limit", wire_ok, 0, "over 100" },
		{ "data shorter than declared", wire_ok, 0, "after the envelope" },
		{ "trailing bytes", wire_ok, 0, "after the envelope" },
		{ "queue id too long", wire_ok, 0, "malformed envelope" },
		{ "NUL in a string", wire_ok, 0, "malformed envelope" },
		{ "bad presence flag", wire_ok, 0, "malformed envelope" },
		{ "absent field with text", wire_ok, 0, "malformed envelope" },
		{ "cut in the head", wire_ok, 60, "malformed envelope" },
		{ "recipient too long", wire_ok, 0, "malformed recipients" },
		{ "empty recipient", wire_ok, 0, "malformed recipients" },
		{ "NUL in a recipient", wire_ok, 0, "malformed recipients" },
		{ "recipient runs past its block", wire_ok, 0, "malformed recipients" },
		{ "fewer recipients than declared", wire_ok, 0, "malformed recipients" },
	};
	size_t i, n;

	fill(long_id, sizeof(long_id) - 1, 'q');
	/* 257 bytes, one over the path limit, then a good short one. */
	long_rcpt[0] = 0x01;
	long_rcpt[1] = 0x01;
	memset(long_rcpt + 2, 'r', RELAY_PATH_MAX);
	memcpy(long_rcpt + 2 + RELAY_PATH_MAX, "\x00\x01x", 3);
	cases[0].w.flags = 4;
	cases[1].w.n_rcpts = 0;
	cases[2].w.n_rcpts = 11;
	cases[3].w.rcpts_len = 2;
	cases[4].w.rcpts_len = 2 + RELAY_PATH_MAX;
	cases[5].w.data_len = 101;
	cases[5].w.data_bytes = 101;
	cases[6].w.data_bytes = 2;
	cases[7].w.trailing = 1;
	cases[8].w.queue_id = long_id;
	cases[9].w.helo = "he\0lo";
	cases[9].w.helo_len = 5;
	cases[10].w.field_flag = 2;
	cases[11].w.field_flag = 0;
	cases[13].w.n_rcpts = 2;
	cases[13].w.rcpts = long_rcpt;
	cases[13].w.rcpts_len = cases[13].w.rcpts_bytes = sizeof(long_rcpt);
	cases[14].w.rcpts = "\x00\x00z";
	cases[14].w.rcpts_len = cases[14].w.rcpts_bytes = 3;
	cases[15].w.rcpts = "\x00\x03" "a\0b";
	cases[15].w.rcpts_len = cases[15].w.rcpts_bytes = 5;
	cases[16].w.rcpts = "\x00\x09" "a@b.cd";
	cases[17].w.n_rcpts = 2;
	cases[17].w.rcpts = RCPT_OK "\x00\x09" "a@b.cd";
	cases[17].w.rcpts_len = cases[17].w.rcpts_bytes = 16;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = wire_encode(&cases[i].w, buf, sizeof(buf)) - cases[i].cut;
		m = (struct relay_msg *)buf;
		why[0] = '\0';
		if (relay_link_decode(buf, n, -1, &lim, &m, why, sizeof(why)) != -1)
			fail_msg("case \"%s\": accepted", cases[i].name);
		assert_null(m);
		if (strstr(why, cases[i].why) == NULL)
			fail_msg("case \"%s\": why \"%s\", expected \"%s\"", cases[i].name, why,
			    cases[i].why);
	}
}

/* An fd where the record says the recipients and data are. */
static int
memfd_with(const unsigned char *p, size_t len, int seals)
{
	int fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	if (seals != 0)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

static void
test_decode_checks_the_fd(void **state)
{
	static unsigned char buf[4096];
	static const unsigned char body[] = "\x00\x06" "a@b.cd" "ddd";
	struct relay_link_limits lim = { 10, 100, 1 };
	struct relay_msg *m;
	struct wire w = wire_ok;
	char why[WHY_MAX];
	size_t n;
	int fd;

	w.rcpts_bytes = 0;
	w.data_bytes = 0;
	n = wire_encode(&w, buf, sizeof(buf));
	/* Sealed, right size: accepted, data mapped. */
	fd = memfd_with(body, sizeof(body) - 1, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	assert_int_equal(relay_link_decode(buf, n, fd, &lim, &m, why, sizeof(why)), 0);
	close(fd);
	assert_string_equal(m->rcpts[0], "a@b.cd");
	assert_memory_equal(evbuffer_pullup(m->data, -1), "ddd", 3);
	relay_msg_free(m);
	/* Not sealed against shrinking: the sender could make us fault. */
	fd = memfd_with(body, sizeof(body) - 1, F_SEAL_GROW | F_SEAL_WRITE);
	assert_int_equal(relay_link_decode(buf, n, fd, &lim, &m, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "sealed"));
	close(fd);
	/* Not a memfd at all. */
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_int_equal(relay_link_decode(buf, n, fd, &lim, &m, why, sizeof(why)), -1);
	close(fd);
	/* Sealed, one byte too many. */
	fd = memfd_with((const unsigned char *)"\x00\x06" "a@b.cd" "dddd", 12,
	    F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	assert_int_equal(relay_link_decode(buf, n, fd, &lim, &m, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "holds 12 bytes"));
	close(fd);
	/* Bytes after the head as well as an fd. */
	w.trailing = 1;
	n = wire_encode(&w, buf, sizeof(buf));
	fd = memfd_with(body, sizeof(body) - 1, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	assert_int_equal(relay_link_decode(buf, n, fd, &lim, &m, why, sizeof(why)), -1);
	close(fd);
}

/* Through the channel: a bad SUBMIT, a record of an unknown type, and a
 * bad RESULT each kill the link (observed by the event callback). */
static void
test_malformed_records_kill_the_link(void **state)
{
	static unsigned char buf[4096];
	struct wire w = wire_ok;
	char err[WHY_MAX];
	struct t *t;
	size_t n;

	/* A payload that breaks the link's bounds. */
	t = t_new(1);
	w.n_rcpts = T_MAX_RCPTS + 1;
	n = wire_encode(&w, buf, sizeof(buf));
	assert_int_equal(ipc_send_sync(t->raw, RELAY_LINK_SUBMIT, 1, -1, buf, n, err,
	    sizeof(err)), 0);
	PUMP(t, t->server_ev != 0);
	assert_int_equal(t->server_ev, IPC_EV_MALFORMED);
	assert_non_null(strstr(t->server_why, "recipients"));
	assert_int_equal(t->fake.n, 0);
	t_free(t);

	/* A type the relay side does not take (ipc.h's rules). */
	t = t_new(1);
	assert_int_equal(ipc_send_sync(t->raw, RELAY_LINK_RESULT, 1, -1, "abcdefgh", 8, err,
	    sizeof(err)), 0);
	PUMP(t, t->server_ev != 0);
	assert_int_equal(t->server_ev, IPC_EV_MALFORMED);
	t_free(t);

	/* An unsealed fd with a well-formed head. */
	t = t_new(1);
	{
		static const unsigned char body[] = "\x00\x06" "a@b.cd" "ddd";
		int fd = memfd_with(body, sizeof(body) - 1, 0);

		w = wire_ok;
		w.rcpts_bytes = 0;
		w.data_bytes = 0;
		n = wire_encode(&w, buf, sizeof(buf));
		assert_int_equal(ipc_send_sync(t->raw, RELAY_LINK_SUBMIT, 1, fd, buf, n, err,
		    sizeof(err)), 0);
		close(fd);
	}
	PUMP(t, t->server_ev != 0);
	assert_int_equal(t->server_ev, IPC_EV_MALFORMED);
	assert_int_equal(t->fake.n, 0);
	t_free(t);
}

static void
test_malformed_result_fails_pending(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *w;
	struct relay_result res;

	w = submit(t, msg_new(1, 5, 10, 60), 0);
	PUMP(t, t->fake.n == 1);
	/* The relay answers with a code no SMTP reply has. */
	memset(&res, 0, sizeof(res));
	res.code = 999;
	t->fake.answered[0] = 1;
	t->fake.cbs[0](t->fake.cbargs[0], &res);
	PUMP(t, t->client_ev != 0);
	assert_int_equal(t->client_ev, IPC_EV_MALFORMED);
	assert_int_equal(t->callers[0].calls, 1);
	assert_int_equal(t->callers[0].res.code, 451);
	relay_msg_free(w);
	t_free(t);
}

/* Without an event callback, a malformed record ends the relay process. */
static void
test_malformed_without_callback_exits(void **state)
{
	static unsigned char buf[4096];
	struct relay_link_hooks h;
	struct fake f;
	struct config cfg;
	struct wire w = wire_ok;
	char err[WHY_MAX];
	int sv[2], st;
	size_t n;
	pid_t pid;

	assert_int_equal(ipc_socketpair(sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct event_base *base = event_base_new();
		struct relay_link *rl;

		close(sv[0]);
		dup2(open("/dev/null", O_WRONLY), STDERR_FILENO);
		memset(&cfg, 0, sizeof(cfg));
		cfg.max_recipients = 10;
		cfg.max_message_size = 100;
		memset(&f, 0, sizeof(f));
		h.submit = fake_submit;
		h.cancel = fake_cancel;
		h.arg = &f;
		if ((rl = relay_link_server_new(base, sv[1], NULL, &cfg)) == NULL)
			_exit(99);
		relay_link_server_set_hooks(rl, &h);
		event_base_dispatch(base);
		_exit(0);
	}
	close(sv[1]);
	w.flags = 0x80;
	n = wire_encode(&w, buf, sizeof(buf));
	assert_int_equal(ipc_send_sync(sv[0], RELAY_LINK_SUBMIT, 1, -1, buf, n, err,
	    sizeof(err)), 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	close(sv[0]);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), IPC_EXIT_FATAL);
}

/* ---- Many at once ------------------------------------------------------------- */

static void
test_pipelined_thousand(void **state)
{
	struct t *t = t_new(0);
	struct relay_msg *m;
	struct relay_result res;
	size_t i, j, answered = 0, done = 0;
	int rounds;
	char want[64];

	for (i = 0; i < 1000; i++) {
		/* Every tenth one goes through a memfd. */
		m = msg_new(2, 10, i % 10 == 0 ? IPC_PAYLOAD_MAX + i : 500 + i, (unsigned)i);
		assert_int_equal(relay_link_submit(t->client, m, caller_cb, &t->callers[i],
		    &res), 0);
	}
	assert_int_equal(relay_link_pending(t->client), 1000);
	for (rounds = 0; rounds < PUMP_ROUNDS; rounds++) {
		event_base_loop(t->base, EVLOOP_NONBLOCK);
		/* Answer what arrived, newest first: results need not come back
		 * in order. */
		for (j = t->fake.n; j > answered; j--)
			fake_answer(&t->fake, j - 1, 250);
		answered = t->fake.n;
		for (done = 0, i = 0; i < 1000; i++)
			done += (size_t)t->callers[i].calls;
		if (done == 1000)
			break;
	}
	assert_int_equal(t->fake.n, 1000);
	for (i = 0; i < 1000; i++) {
		assert_int_equal(t->callers[i].calls, 1);
		snprintf(want, sizeof(want), "Q%08zuABCDEFGHIJKLMN", i);
		assert_true(strstr(t->callers[i].res.text, want) != NULL);
	}
	assert_int_equal(relay_link_pending(t->client), 0);
	assert_int_equal(t->client_ev, 0);
	assert_int_equal(t->server_ev, 0);
	t_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_small),
		cmocka_unit_test(test_round_trip_fd),
		cmocka_unit_test(test_round_trip_at_the_record_limit),
		cmocka_unit_test(test_subject_dropped_when_not_logged),
		cmocka_unit_test(test_refused_at_once_is_answered),
		cmocka_unit_test(test_current_limits_are_a_reply),
		cmocka_unit_test(test_cancel_reaches_the_relay),
		cmocka_unit_test(test_late_result_after_cancel_is_dropped),
		cmocka_unit_test(test_relay_gone_answers_451),
		cmocka_unit_test(test_front_end_gone_cancels_in_relay),
		cmocka_unit_test(test_drain_waits_for_pending),
		cmocka_unit_test(test_decode_accepts_the_wire_form),
		cmocka_unit_test(test_decode_refuses_malformed),
		cmocka_unit_test(test_decode_checks_the_fd),
		cmocka_unit_test(test_malformed_records_kill_the_link),
		cmocka_unit_test(test_malformed_result_fails_pending),
		cmocka_unit_test(test_malformed_without_callback_exits),
		cmocka_unit_test(test_pipelined_thousand),
	};

	log_init("test-relay-link", 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
