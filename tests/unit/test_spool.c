/*
 * test_spool.c: the spool file format (spool_format.c) and the file
 * operations (spool.c). The parser is fed garbage as a table of inputs that
 * must all be refused, every prefix of a good file (never accepted, never
 * read past its length), and round trips; the file operations run in a
 * temporary directory. The I/O thread (spool_io.c) publishes a new message
 * only after its "queued" event is durable, and leaves nothing behind when
 * the event cannot be written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "audit.h"

#include "spool.h"
#include "spool_io.h"
#include "util.h"

#define GOOD_ENVELOPE							\
	"SMTPVAULT-SPOOL 1\n"						\
	"id 0123456789ABCDEF\n"						\
	"account team@example.com\n"					\
	"from alice@example.com\n"					\
	"rcpt bob@example.org\n"					\
	"rcpt %22carol%20c%22@example.org\n"				\
	"client-ip 10.0.5.7\n"						\
	"client-name monitoring\n"					\
	"helo printer.lan\n"						\
	"received 1764136856\n"						\
	"body-8bit 1\n"							\
	"smtputf8 0\n"							\
	"subject caf%C3%A9%20report\n"					\
	"size 5\n"							\
	"\n"

static void
test_envelope_parse_good(void **state)
{
	const char *buf = GOOD_ENVELOPE "hello";
	struct relay_msg msg;
	struct spool_meta meta;
	char err[256];
	size_t hdrlen = 0;

	(void)state;
	assert_int_equal(spool_envelope_parse(buf, strlen(buf), &msg, &meta, &hdrlen, err,
	    sizeof(err)), 0);
	assert_int_equal(hdrlen, strlen(GOOD_ENVELOPE));
	assert_string_equal(msg.queue_id, "0123456789ABCDEF");
	assert_string_equal(msg.account, "team@example.com");
	assert_string_equal(msg.mail_from, "alice@example.com");
	assert_int_equal(msg.n_rcpts, 2);
	assert_string_equal(msg.rcpts[1], "\"carol c\"@example.org");
	assert_string_equal(msg.client_name, "monitoring");
	assert_int_equal(msg.body_8bit, 1);
	assert_int_equal(meta.received, 1764136856);
	assert_int_equal(meta.size, 5);
	assert_string_equal(meta.fields.subject, "caf\xc3\xa9 report");
	assert_null(meta.fields.header_from);
	spool_msg_clear(&msg);
	spool_meta_free(&meta);
}

static void
test_envelope_round_trip(void **state)
{
	struct relay_msg msg, got;
	struct spool_meta meta, gmeta;
	char rcpts[3][RELAY_PATH_MAX] = { "a@x.org", "b c@x.org", "%d@x.org" };
	char *text = NULL, err[256];
	size_t len, hdrlen;

	(void)state;
	memset(&msg, 0, sizeof(msg));
	memset(&meta, 0, sizeof(meta));
	strlcpy(msg.queue_id, "ZZ00", sizeof(msg.queue_id));
	strlcpy(msg.account, "team@example.com", sizeof(msg.account));
	msg.mail_from[0] = '\0';		/* the null sender */
	msg.rcpts = rcpts;
	msg.n_rcpts = 3;
	msg.smtputf8 = 1;
	strlcpy(msg.helo, "[10.0.0.1]\twith\ttabs\r\nand CRLF", sizeof(msg.helo));
	meta.received = 42;
	meta.size = 1234;
	meta.fields.message_id = (char *)"<x@y>";
	assert_int_equal(spool_envelope_encode(&msg, &meta, &text, &len), 0);
	/* Every value is one token: no raw control bytes anywhere. */
	for (size_t i = 0; i < len; i++)
		assert_true(text[i] == '\n' || (text[i] >= 0x20 && text[i] < 0x7f));
	assert_int_equal(spool_envelope_parse(text, len, &got, &gmeta, &hdrlen, err,
	    sizeof(err)), 0);
	assert_int_equal(hdrlen, len);
	assert_string_equal(got.queue_id, "ZZ00");
	assert_string_equal(got.mail_from, "");
	assert_int_equal(got.n_rcpts, 3);
	assert_string_equal(got.rcpts[1], "b c@x.org");
	assert_string_equal(got.rcpts[2], "%d@x.org");
	assert_string_equal(got.helo, msg.helo);
	assert_int_equal(got.smtputf8, 1);
	assert_int_equal(gmeta.size, 1234);
	assert_string_equal(gmeta.fields.message_id, "<x@y>");
	spool_msg_clear(&got);
	spool_meta_free(&gmeta);
	free(text);
}

/* Every strict prefix is incomplete (1) or refused (-1), never accepted. */
static void
test_envelope_prefixes(void **state)
{
	const char *full = GOOD_ENVELOPE;
	size_t n = strlen(full), i, hdrlen;
	struct relay_msg msg;
	struct spool_meta meta;
	char err[256], *copy;
	int rc;

	(void)state;
	for (i = 0; i < n; i++) {
		/* An exact-size heap copy: ASan catches any read past it. */
		copy = malloc(i + 1);
		memcpy(copy, full, i);
		rc = spool_envelope_parse(copy, i, &msg, &meta, &hdrlen, err, sizeof(err));
		assert_int_equal(rc, 1);
		free(copy);
	}
}

struct bad_case {
	const char	*name;
	const char	*text;
};

static const struct bad_case bad_envelopes[] = {
	{ "empty magic", "\n\n" },
	{ "wrong magic", "SMTPVAULT-SPOOL 2\nid A\n\n" },
	{ "not a spool file", "From: someone\r\n\r\nbody" },
	{ "missing id", "SMTPVAULT-SPOOL 1\naccount a@b\nfrom \nrcpt c@d\nreceived 1\nsize 0\n\n" },
	{ "missing rcpt", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nreceived 1\nsize 0\n\n" },
	{ "missing size", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt c@d\nreceived 1\n\n" },
	{ "bad id", "SMTPVAULT-SPOOL 1\nid ../x\naccount a@b\nfrom \nrcpt c@d\nreceived 1\nsize 0\n\n" },
	{ "lowercase id", "SMTPVAULT-SPOOL 1\nid abc\naccount a@b\nfrom \nrcpt c@d\nreceived 1\nsize 0\n\n" },
	{ "id too long", "SMTPVAULT-SPOOL 1\nid AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\naccount a@b\nfrom \n"
	  "rcpt c@d\nreceived 1\nsize 0\n\n" },
	{ "empty account", "SMTPVAULT-SPOOL 1\nid A\naccount \nfrom \nrcpt c@d\nreceived 1\nsize 0\n\n" },
	{ "empty rcpt", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt \nreceived 1\nsize 0\n\n" },
	{ "unknown key", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 0\npassword x\n\n" },
	{ "repeated key", "SMTPVAULT-SPOOL 1\nid A\nid B\naccount a@b\nfrom \nrcpt c@d\n"
	  "received 1\nsize 0\n\n" },
	{ "no space after key", "SMTPVAULT-SPOOL 1\nid\n\n" },
	{ "raw space in value", "SMTPVAULT-SPOOL 1\nid A\naccount a b@c\nfrom \nrcpt c@d\n"
	  "received 1\nsize 0\n\n" },
	{ "CR in value", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\r\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 0\n\n" },
	{ "escaped NUL", "SMTPVAULT-SPOOL 1\nid A\naccount a%00@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 0\n\n" },
	{ "bad escape", "SMTPVAULT-SPOOL 1\nid A\naccount a%G1@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 0\n\n" },
	{ "escape cut", "SMTPVAULT-SPOOL 1\nid A\naccount a@b%4\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 0\n\n" },
	{ "8-bit byte", "SMTPVAULT-SPOOL 1\nid A\naccount a\xc3\xa9@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 0\n\n" },
	{ "negative size", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size -1\n\n" },
	{ "huge size", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 99999999999999\n\n" },
	{ "size with suffix", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "size 10K\n\n" },
	{ "flag out of range", "SMTPVAULT-SPOOL 1\nid A\naccount a@b\nfrom \nrcpt c@d\nreceived 1\n"
	  "body-8bit 2\nsize 0\n\n" },
	{ "key too long", "SMTPVAULT-SPOOL 1\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa x\n\n" },
};

static void
test_envelope_garbage(void **state)
{
	struct relay_msg msg;
	struct spool_meta meta;
	char err[256];
	size_t i, hdrlen;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad_envelopes); i++) {
		const char *t = bad_envelopes[i].text;
		int rc = spool_envelope_parse(t, strlen(t), &msg, &meta, &hdrlen, err, sizeof(err));

		if (rc != -1)
			fail_msg("accepted: %s", bad_envelopes[i].name);
		assert_true(err[0] != '\0');
	}
}

/* A value longer than the field it goes into is refused, not cut. */
static void
test_envelope_bounds(void **state)
{
	struct relay_msg msg;
	struct spool_meta meta;
	char err[256], *buf, *p;
	size_t hdrlen, i, len = SPOOL_LINE_MAX * 2 + 256;

	(void)state;
	buf = malloc(len);
	p = buf + snprintf(buf, len, "SMTPVAULT-SPOOL 1\nid A\naccount ");
	for (i = 0; i < VAULT_ADDR_MAX; i++)
		*p++ = 'a';
	p += snprintf(p, (size_t)(buf + len - p), "\nfrom \nrcpt c@d\nreceived 1\nsize 0\n\n");
	assert_int_equal(spool_envelope_parse(buf, (size_t)(p - buf), &msg, &meta, &hdrlen, err,
	    sizeof(err)), -1);
	/* A line longer than SPOOL_LINE_MAX without a newline: refused early. */
	p = buf + snprintf(buf, len, "SMTPVAULT-SPOOL 1\nsubject ");
	memset(p, 'x', SPOOL_LINE_MAX + 10);
	assert_int_equal(spool_envelope_parse(buf, (size_t)(p - buf) + SPOOL_LINE_MAX + 10,
	    &msg, &meta, &hdrlen, err, sizeof(err)), -1);
	free(buf);
}

static void
test_state_round_trip(void **state)
{
	struct spool_state st, got;
	char *text = NULL, err[256];
	size_t len;

	(void)state;
	memset(&st, 0, sizeof(st));
	st.attempts = 3;
	st.next_attempt = 1764136900;
	st.last_attempt = 1764136800;
	st.failed = 1;
	assert_int_equal(spool_state_set_reply(&st, "451-4.3.0 first\nsecond line"), 0);
	assert_int_equal(spool_state_set_done(&st, 0, 12), 0);
	assert_int_equal(spool_state_set_done(&st, 11, 12), 0);
	assert_int_equal(spool_state_set_done(&st, 12, 12), -1);
	assert_int_equal(spool_state_encode(&st, 12, &text, &len), 0);
	assert_int_equal(spool_state_parse(text, len, 12, &got, err, sizeof(err)), 0);
	assert_int_equal(got.attempts, 3);
	assert_int_equal(got.next_attempt, 1764136900);
	assert_int_equal(got.failed, 1);
	assert_string_equal(got.last_reply, "451-4.3.0 first\nsecond line");
	assert_true(spool_state_done(&got, 0));
	assert_false(spool_state_done(&got, 1));
	assert_true(spool_state_done(&got, 11));
	spool_state_free(&got);
	/* The bitmap belongs to a message of 12 recipients only. */
	assert_int_equal(spool_state_parse(text, len, 20, &got, err, sizeof(err)), -1);
	spool_state_free(&st);
	free(text);
}

static const char *const bad_states[] = {
	"",
	"SMTPVAULT-STATE 1\n",					/* no fields */
	"SMTPVAULT-STATE 1\nattempts 1\nnext 0\nlast 0\nsince 0\n",	/* no failed */
	"SMTPVAULT-STATE 1\nattempts 1\nnext 0\nlast 0\nsince 0\nfailed 0",	/* cut */
	"SMTPVAULT-STATE 1\nattempts x\nnext 0\nlast 0\nsince 0\nfailed 0\n",
	"SMTPVAULT-STATE 1\nattempts 1\nattempts 2\nnext 0\nlast 0\nsince 0\nfailed 0\n",
	"SMTPVAULT-STATE 1\nattempts 1\nnext 0\nlast 0\nsince 0\nfailed 0\nfoo 1\n",
	"SMTPVAULT-STATE 1\nattempts 1\nnext 0\nlast 0\nsince 0\nfailed 0\ndone 0\n",
	"SMTPVAULT-STATE 1\nattempts 1\nnext 0\nlast 0\nsince 0\nfailed 0\ndone F0\n",
	"SMTPVAULT-STATE 1\nattempts 1\nnext 0\nlast 0\nsince 0\nfailed 0\ndone 0G\n",
	"SMTPVAULT-STATE 1\nattempts 99999999999\nnext 0\nlast 0\nsince 0\nfailed 0\n",
};

static void
test_state_garbage(void **state)
{
	struct spool_state st;
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad_states); i++) {
		/* 4 recipients: "done" must be exactly one byte, high bits clear */
		if (spool_state_parse(bad_states[i], strlen(bad_states[i]), 4, &st, err,
		    sizeof(err)) != -1)
			fail_msg("accepted state %zu", i);
	}
}

static void
test_id_valid(void **state)
{
	(void)state;
	assert_true(spool_id_valid("0123456789ABCDEF"));
	assert_false(spool_id_valid(""));
	assert_false(spool_id_valid("abc"));
	assert_false(spool_id_valid("A.B"));
	assert_false(spool_id_valid("../A"));
	assert_false(spool_id_valid("AAAAAAAAAAAAAAAAAAAAAAAA"));	/* 24: too long */
}

/* ---- Files ---------------------------------------------------------------- */

static char tmpdir[64];

static int
make_tmp(void **state)
{
	(void)state;
	strlcpy(tmpdir, "/tmp/test_spool.XXXXXX", sizeof(tmpdir));
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
remove_tmp(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
count_cb(void *arg, const char *id)
{
	(*(int *)arg)++;
	(void)id;
	return 0;
}

/* A one-recipient message id: its body into body, its envelope text into
 * *hdr (malloc'd). */
static void
small_message(const char *id, struct relay_msg *msg, struct spool_meta *meta,
    char rcpts[][RELAY_PATH_MAX], struct evbuffer *body, char **hdr, size_t *hdrlen)
{
	memset(msg, 0, sizeof(*msg));
	memset(meta, 0, sizeof(*meta));
	strlcpy(msg->queue_id, id, sizeof(msg->queue_id));
	strlcpy(msg->account, "team@example.com", sizeof(msg->account));
	msg->rcpts = rcpts;
	msg->n_rcpts = 1;
	evbuffer_add_printf(body, "Subject: x\r\n\r\nhello\r\n");
	meta->size = evbuffer_get_length(body);
	meta->received = 7;
	assert_int_equal(spool_envelope_encode(msg, meta, hdr, hdrlen), 0);
}

static void
test_files(void **state)
{
	struct spool *sp, *sp2;
	struct relay_msg msg, got;
	struct spool_meta meta, gmeta;
	struct spool_state st;
	char rcpts[1][RELAY_PATH_MAX] = { "bob@example.org" };
	char err[256], *hdr, *stext, path[512];
	size_t hdrlen, slen, cleaned;
	struct evbuffer *body = evbuffer_new();
	int n = 0;
	FILE *fp;

	(void)state;
	assert_int_equal(spool_open(tmpdir, SPOOL_CREATE, &sp, err, sizeof(err)), 0);
	assert_int_equal(spool_lock(sp, 0), 0);
	/* A second holder cannot take the lock. */
	assert_int_equal(spool_open(tmpdir, 0, &sp2, err, sizeof(err)), 0);
	assert_int_equal(spool_lock(sp2, 20), -1);
	spool_close(sp2);

	small_message("MSG1", &msg, &meta, rcpts, body, &hdr, &hdrlen);
	assert_int_equal(spool_create(sp, "MSG1", hdr, hdrlen, body), 0);
	assert_int_equal(spool_sync(sp, SPOOL_QUEUE), 0);
	assert_int_equal(evbuffer_get_length(body), meta.size);	/* not drained */

	assert_int_equal(spool_load(sp, SPOOL_QUEUE, "MSG1", &got, &gmeta, &st, 1, err,
	    sizeof(err)), 0);
	assert_int_equal(st.attempts, 0);	/* no state file yet: fresh */
	assert_int_equal(evbuffer_get_length(got.data), meta.size);
	evbuffer_free(got.data);
	spool_msg_clear(&got);
	spool_meta_free(&gmeta);

	st.attempts = 2;
	assert_int_equal(spool_state_encode(&st, 1, &stext, &slen), 0);
	assert_int_equal(spool_state_write(sp, SPOOL_QUEUE, "MSG1", stext, slen), 0);
	assert_int_equal(spool_move(sp, "MSG1", SPOOL_QUEUE, SPOOL_FAILED), 0);
	assert_int_equal(spool_load(sp, SPOOL_FAILED, "MSG1", &got, &gmeta, &st, 0, err,
	    sizeof(err)), 0);
	assert_int_equal(st.attempts, 2);
	spool_msg_clear(&got);
	spool_meta_free(&gmeta);
	spool_state_free(&st);

	/* A cut-off message file is refused (EBADMSG), not half-read. */
	snprintf(path, sizeof(path), "%s/failed/MSG1", tmpdir);
	assert_int_equal(truncate(path, (off_t)(hdrlen + 3)), 0);
	assert_int_equal(spool_load(sp, SPOOL_FAILED, "MSG1", &got, &gmeta, &st, 0, err,
	    sizeof(err)), -1);

	/* Scan with cleanup: temporary files go, an orphan state goes. */
	snprintf(path, sizeof(path), "%s/queue/.MSG2.tmp", tmpdir);
	fp = fopen(path, "w");
	fputs("partial", fp);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/queue/MSG3.st", tmpdir);
	fp = fopen(path, "w");
	fputs("orphan", fp);
	fclose(fp);
	assert_int_equal(spool_scan(sp, SPOOL_QUEUE, 1, count_cb, &n, &cleaned, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 0);
	assert_int_equal(cleaned, 2);
	assert_int_equal(spool_remove(sp, SPOOL_FAILED, "MSG1"), 0);
	assert_int_equal(spool_remove(sp, SPOOL_FAILED, "MSG1"), 0);	/* already gone */
	assert_int_equal(spool_create(sp, "../evil", hdr, hdrlen, body), -1);
	free(hdr);
	free(stext);
	evbuffer_free(body);
	spool_close(sp);
}

/* Stands for the keeper: sees, while the event is being appended, whether
 * the message is published yet; fails on demand. */
struct fake_keeper {
	int	fail;
	int	calls;
	int	published;	/* queue/ID existed during the append */
	int	temp;		/* its temporary file did */
};

static int
exists_in_queue(const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/queue/%s", tmpdir, name);
	return stat(path, &st) == 0;
}

static int
fake_forward(void *arg, const char *json, size_t len, char *err, size_t errlen)
{
	struct fake_keeper *k = arg;

	k->calls++;
	k->published = exists_in_queue("IOMSG");
	k->temp = exists_in_queue(".IOMSG.tmp");
	if (!k->fail)
		return 0;
	snprintf(err, errlen, "the keeper is gone");
	return -1;
}

static void
io_done(struct spool_io_op *op, void *arg)
{
	*(struct spool_io_op **)arg = op;
}

/* One new message through the I/O thread; the loop runs until it is done. */
static struct spool_io_op *
io_create(struct event_base *base, struct spool_io *io, const char *hdr, size_t hdrlen,
    struct evbuffer *body)
{
	struct spool_io_op *op, *done = NULL;

	assert_non_null(op = spool_io_op_new(SPOOL_IO_CREATE, "IOMSG"));
	assert_non_null(op->text = malloc(hdrlen));
	memcpy(op->text, hdr, hdrlen);
	op->textlen = hdrlen;
	op->body = body;
	assert_non_null(op->event = json_pack("{s:s, s:s}", "event", "message", "status",
	    "queued"));
	op->done = io_done;
	op->arg = &done;
	spool_io_submit(io, op);
	while (done == NULL)
		assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
	return done;
}

static void
test_io_publishes_after_the_event(void **state)
{
	struct fake_keeper k = { 0, 0, 0, 0 };
	struct event_base *base;
	struct spool_io *io;
	struct spool *sp;
	struct spool_io_op *op;
	struct relay_msg msg;
	struct spool_meta meta;
	char rcpts[1][RELAY_PATH_MAX] = { "bob@example.org" };
	char err[256], *hdr;
	size_t hdrlen;
	struct evbuffer *body = evbuffer_new();

	(void)state;
	assert_int_equal(spool_open(tmpdir, SPOOL_CREATE, &sp, err, sizeof(err)), 0);
	assert_non_null(base = event_base_new());
	assert_non_null(io = spool_io_new(base, sp, err, sizeof(err)));
	spool_io_set_audit(io, audit_forwarder(fake_forward, NULL, NULL, &k));
	small_message("IOMSG", &msg, &meta, rcpts, body, &hdr, &hdrlen);

	/* The event is appended while only the durable temporary file exists;
	 * the message is published after it. */
	op = io_create(base, io, hdr, hdrlen, body);
	assert_int_equal(op->error, 0);
	assert_int_equal(k.calls, 1);
	assert_true(k.temp);
	assert_false(k.published);
	assert_true(exists_in_queue("IOMSG"));
	assert_false(exists_in_queue(".IOMSG.tmp"));
	spool_io_op_free(op);
	assert_int_equal(spool_remove(sp, SPOOL_QUEUE, "IOMSG"), 0);

	/* The append fails: the op fails and nothing is left, published or not. */
	k.fail = 1;
	op = io_create(base, io, hdr, hdrlen, body);
	assert_int_not_equal(op->error, 0);
	assert_true(op->audit_failed);
	assert_int_equal(k.calls, 2);
	assert_false(k.published);
	assert_false(exists_in_queue("IOMSG"));
	assert_false(exists_in_queue(".IOMSG.tmp"));
	spool_io_op_free(op);

	spool_io_free(io);
	event_base_free(base);
	free(hdr);
	evbuffer_free(body);
	spool_close(sp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envelope_parse_good),
		cmocka_unit_test(test_envelope_round_trip),
		cmocka_unit_test(test_envelope_prefixes),
		cmocka_unit_test(test_envelope_garbage),
		cmocka_unit_test(test_envelope_bounds),
		cmocka_unit_test(test_state_round_trip),
		cmocka_unit_test(test_state_garbage),
		cmocka_unit_test(test_id_valid),
		cmocka_unit_test_setup_teardown(test_files, make_tmp, remove_tmp),
		cmocka_unit_test_setup_teardown(test_io_publishes_after_the_event, make_tmp,
		    remove_tmp),
	};

	return cmocka_run_group_tests_name("spool", tests, NULL, NULL);
}
