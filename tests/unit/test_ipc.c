/*
 * test_ipc.c: proxy/ipc.c as a specification. Well-formed messages arrive
 * with their type, id, payload and fd; every malformed record (version,
 * flags, length, type, bounds, fd rules, truncation) is refused by
 * ipc_validate with a reason; and a receiving loop in a child process, fed
 * malformed records, logs the refusal and exits with IPC_EXIT_FATAL rather
 * than carrying on or dying of a signal.
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

#include <event2/event.h>

#include "ipc.h"
#include "log.h"

#define T_PING		1
#define T_FD		2
#define T_SECRET	3
#define WHY_MAX		256
#define FUZZ_ROUNDS	200

static const struct ipc_rule rules[] = {
	{ T_PING,   4, 4,    IPC_FD_NONE },
	{ T_FD,     0, 0,    IPC_FD_REQUIRED },
	{ T_SECRET, 1, 1024, IPC_FD_NONE },
};
#define N_RULES	(sizeof(rules) / sizeof(rules[0]))

static size_t
frame(unsigned char *b, uint8_t ver, uint8_t flags, uint16_t type, uint32_t id,
    uint32_t declared, const void *p, size_t len)
{
	b[0] = ver;
	b[1] = flags;
	b[2] = type >> 8;
	b[3] = type & 0xff;
	b[4] = id >> 24; b[5] = id >> 16; b[6] = id >> 8; b[7] = id;
	b[8] = declared >> 24; b[9] = declared >> 16; b[10] = declared >> 8; b[11] = declared;
	memcpy(b + IPC_HDR_LEN, p, len);
	return IPC_HDR_LEN + len;
}

static void
test_validate_accepts_well_formed(void **state)
{
	unsigned char b[64];
	struct ipc_msg m;
	char why[WHY_MAX];
	size_t n = frame(b, IPC_VERSION, 0, T_PING, 77, 4, "abcd", 4);

	assert_int_equal(ipc_validate(rules, N_RULES, b, n, 0, 0, &m, why, sizeof(why)), 0);
	assert_int_equal(m.type, T_PING);
	assert_int_equal(m.id, 77);
	assert_int_equal(m.len, 4);
	assert_memory_equal(m.data, "abcd", 4);
}

static void
test_validate_refuses_malformed(void **state)
{
	static const struct {
		uint8_t		ver, flags;
		uint16_t	type;
		uint32_t	declared;
		size_t		len;
		int		has_fd, truncated;
		const char	*why;
	} cases[] = {
		{ 2, 0, T_PING, 4, 4, 0, 0, "version 2, expected 1" },
		{ 0, 0, T_PING, 4, 4, 0, 0, "version 0, expected 1" },
		{ 1, 0x80, T_PING, 4, 4, 0, 0, "unknown flags 0x80" },
		{ 1, 0, T_PING, 5, 4, 0, 0, "type 1 declares 5 payload bytes, record has 4" },
		{ 1, 0, T_PING, 0xffffffff, 4, 0, 0,
		    "type 1 declares 4294967295 payload bytes, record has 4" },
		{ 1, 0, 99, 4, 4, 0, 0, "unexpected type 99" },
		{ 1, 0, T_PING, 3, 3, 0, 0, "type 1: payload 3 bytes outside 4..4" },
		{ 1, 0, T_SECRET, 0, 0, 0, 0, "type 3: payload 0 bytes outside 1..1024" },
		{ 1, 0, T_FD, 0, 0, 0, 0, "type 2: the fd is missing" },
		{ 1, IPC_FLAG_FD, T_PING, 4, 4, 1, 0, "type 1: an fd where none belongs" },
		{ 1, IPC_FLAG_FD, T_FD, 0, 0, 0, 0, "type 2: fd flag and fd disagree" },
		{ 1, 0, T_PING, 4, 4, 0, 1, "record larger than 131084 bytes" },
	};
	unsigned char b[64], zeros[8] = { 0 };
	struct ipc_msg m;
	char why[WHY_MAX];
	size_t i, n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = frame(b, cases[i].ver, cases[i].flags, cases[i].type, 1, cases[i].declared,
		    zeros, cases[i].len);
		assert_int_equal(ipc_validate(rules, N_RULES, b, n, cases[i].has_fd,
		    cases[i].truncated, &m, why, sizeof(why)), -1);
		assert_string_equal(why, cases[i].why);
	}
	assert_int_equal(ipc_validate(rules, N_RULES, b, IPC_HDR_LEN - 1, 0, 0, &m, why,
	    sizeof(why)), -1);
	assert_string_equal(why, "short record (11 bytes)");
}

static void
test_payload_helpers(void **state)
{
	unsigned char raw[64];
	struct ipc_buf b = { raw, 0, sizeof(raw), 0 };
	struct ipc_rd r;
	char s[8];

	ipc_put_u32(&b, 0xdeadbeef);
	ipc_put_u64(&b, 0x0102030405060708ULL);
	ipc_put_str(&b, "hello");
	assert_false(b.failed);
	r = (struct ipc_rd){ raw, b.len, 0, 0 };
	assert_int_equal(ipc_get_u32(&r), 0xdeadbeef);
	assert_true(ipc_get_u64(&r) == 0x0102030405060708ULL);
	ipc_get_str(&r, s, sizeof(s));
	assert_string_equal(s, "hello");
	assert_int_equal(ipc_rd_done(&r), 0);

	/* A string that does not fit, a read past the end, leftovers. */
	r = (struct ipc_rd){ raw, b.len, 12, 0 };
	ipc_get_str(&r, s, 5);
	assert_int_equal(ipc_rd_done(&r), -1);
	r = (struct ipc_rd){ raw, 3, 0, 0 };
	(void)ipc_get_u32(&r);
	assert_int_equal(ipc_rd_done(&r), -1);
	r = (struct ipc_rd){ raw, b.len, 0, 0 };
	(void)ipc_get_u32(&r);
	assert_int_equal(ipc_rd_done(&r), -1);
	/* An embedded NUL in a string is refused. */
	b.len = 0;
	ipc_put_bytes(&b, "a\0b", 3);
	r = (struct ipc_rd){ raw, b.len, 0, 0 };
	ipc_get_str(&r, s, sizeof(s));
	assert_int_equal(ipc_rd_done(&r), -1);
	/* A writer past its capacity fails instead of overflowing. */
	b = (struct ipc_buf){ raw, 0, 3, 0 };
	ipc_put_u32(&b, 1);
	assert_true(b.failed);
}

/* ---- Event-driven channel --------------------------------------------------- */

struct loop_state {
	struct event_base	*base;
	int			 got_ping, got_fd, closed;
	uint32_t		 id;
	char			 fd_content[16];
};

static void
loop_recv(struct ipc *ipc, const struct ipc_msg *m, void *arg)
{
	struct loop_state *ls = arg;
	ssize_t n;

	if (m->type == T_PING) {
		ls->got_ping++;
		ls->id = m->id;
		/* Answer: echo the payload back. */
		assert_int_equal(ipc_send(ipc, T_PING, m->id, -1, m->data, m->len), 0);
	} else if (m->type == T_FD) {
		ls->got_fd++;
		n = pread(m->fd, ls->fd_content, sizeof(ls->fd_content) - 1, 0);
		assert_true(n > 0);
		close(m->fd);
	}
}

static void
loop_event(struct ipc *ipc, enum ipc_event ev, const char *why, void *arg)
{
	struct loop_state *ls = arg;

	ls->closed = ev;
	event_base_loopbreak(ls->base);
}

static void
test_channel_round_trip_and_fd(void **state)
{
	struct loop_state ls;
	struct ipc *ipc;
	struct ipc_msg m;
	unsigned char buf[IPC_MSG_MAX];
	char err[WHY_MAX];
	int sv[2], mfd;

	memset(&ls, 0, sizeof(ls));
	assert_int_equal(ipc_socketpair(sv), 0);
	ls.base = event_base_new();
	ipc = ipc_new(ls.base, sv[0], "test", rules, N_RULES, loop_recv, loop_event, &ls);
	assert_non_null(ipc);

	assert_int_equal(ipc_send_sync(sv[1], T_PING, 4242, -1, "ping", 4, err, sizeof(err)), 0);
	mfd = memfd_create("ipc-test", MFD_CLOEXEC);
	assert_true(mfd >= 0);
	assert_int_equal(write(mfd, "message", 7), 7);
	assert_int_equal(ipc_send_sync(sv[1], T_FD, 1, mfd, NULL, 0, err, sizeof(err)), 0);
	close(mfd);
	assert_int_equal(event_base_loop(ls.base, EVLOOP_ONCE), 0);
	assert_int_equal(ls.got_ping, 1);
	assert_int_equal(ls.id, 4242);
	assert_int_equal(ls.got_fd, 1);
	assert_string_equal(ls.fd_content, "message");
	/* The echo is flushed by the loop and read back synchronously. */
	assert_int_equal(event_base_loop(ls.base, EVLOOP_ONCE | EVLOOP_NONBLOCK), 0);
	assert_int_equal(ipc_recv_sync(sv[1], rules, N_RULES, buf, sizeof(buf), &m, err,
	    sizeof(err)), 0);
	assert_int_equal(m.type, T_PING);
	assert_int_equal(m.id, 4242);
	assert_memory_equal(m.data, "ping", 4);
	/* Closing the peer reports IPC_EV_CLOSED. */
	close(sv[1]);
	assert_int_equal(event_base_dispatch(ls.base), 0);
	assert_int_equal(ls.closed, IPC_EV_CLOSED);
	ipc_free(ipc);
	event_base_free(ls.base);
}

/*
 * A peer that closes with records of ours still unread makes Linux fail the
 * next recvmsg() once with ECONNRESET. That is an ordinary close (a parent
 * closing a channel while a PING's answer is unread): what the peer sent
 * before it closed is delivered, then IPC_EV_CLOSED, never IPC_EV_IOERROR;
 * the same for a synchronous receiver.
 */
static void
test_peer_closing_with_unread_records_is_a_close(void **state)
{
	struct loop_state ls;
	struct ipc *ipc;
	struct ipc_msg m;
	unsigned char buf[IPC_MSG_MAX];
	char err[WHY_MAX];
	int sv[2];

	memset(&ls, 0, sizeof(ls));
	assert_int_equal(ipc_socketpair(sv), 0);
	ls.base = event_base_new();
	ipc = ipc_new(ls.base, sv[0], "test", rules, N_RULES, loop_recv, loop_event, &ls);
	assert_non_null(ipc);
	assert_int_equal(ipc_send_sync(sv[0], T_PING, 1, -1, "mine", 4, err, sizeof(err)), 0);
	assert_int_equal(ipc_send_sync(sv[1], T_PING, 2, -1, "last", 4, err, sizeof(err)), 0);
	close(sv[1]);
	assert_int_equal(event_base_dispatch(ls.base), 0);
	assert_int_equal(ls.got_ping, 1);
	assert_int_equal(ls.id, 2);
	assert_int_equal(ls.closed, IPC_EV_CLOSED);
	ipc_free(ipc);
	event_base_free(ls.base);

	assert_int_equal(ipc_socketpair(sv), 0);
	assert_int_equal(ipc_send_sync(sv[0], T_PING, 1, -1, "mine", 4, err, sizeof(err)), 0);
	assert_int_equal(ipc_send_sync(sv[1], T_PING, 2, -1, "last", 4, err, sizeof(err)), 0);
	close(sv[1]);
	assert_int_equal(ipc_recv_sync(sv[0], rules, N_RULES, buf, sizeof(buf), &m, err,
	    sizeof(err)), 0);
	assert_int_equal(m.id, 2);
	assert_int_equal(ipc_recv_sync(sv[0], rules, N_RULES, buf, sizeof(buf), &m, err,
	    sizeof(err)), -1);
	assert_string_equal(err, "ipc: peer closed the channel");
	close(sv[0]);
}

static void
test_send_refuses_oversize(void **state)
{
	static unsigned char big[IPC_PAYLOAD_MAX + 1];
	char err[WHY_MAX];
	int sv[2];

	assert_int_equal(ipc_socketpair(sv), 0);
	assert_int_equal(ipc_send_sync(sv[1], T_SECRET, 1, -1, big, sizeof(big), err,
	    sizeof(err)), -1);
	close(sv[0]);
	close(sv[1]);
}

/* ---- Malformed records against a loop in a child: fatal, logged --------------- */

/* The child: a loop with no event callback, so the default applies. */
static void
child_loop(int fd, int logfd)
{
	struct loop_state ls;
	struct ipc *ipc;

	dup2(logfd, STDERR_FILENO);
	log_init("test-keeper", 0);
	memset(&ls, 0, sizeof(ls));
	ls.base = event_base_new();
	if ((ipc = ipc_new(ls.base, fd, "parent", rules, N_RULES, loop_recv, NULL, &ls)) == NULL)
		_exit(99);
	event_base_dispatch(ls.base);
	_exit(0);	/* not reached: the bad record ends the process */
}

/* Send one raw record (and maybe an fd); return the child's exit status and
 * its log in logbuf. */
static int
run_child(const unsigned char *rec, size_t len, int passfd, char *logbuf, size_t loglen)
{
	struct msghdr msg;
	struct iovec iov;
	union {
		struct cmsghdr	hdr;
		unsigned char	buf[CMSG_SPACE(2 * sizeof(int))];
	} cbuf;
	struct cmsghdr *cm;
	int sv[2], logfd, st, fds[2];
	pid_t pid;
	ssize_t n;

	assert_int_equal(ipc_socketpair(sv), 0);
	logfd = memfd_create("ipc-log", MFD_CLOEXEC);
	assert_true(logfd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[1]);
		child_loop(sv[0], logfd);
	}
	close(sv[0]);
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = (void *)rec;
	iov.iov_len = len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (passfd >= 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		fds[0] = passfd;
		fds[1] = passfd;
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = CMSG_SPACE(2 * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	}
	n = sendmsg(sv[1], &msg, MSG_NOSIGNAL);
	assert_true(n == (ssize_t)len);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	close(sv[1]);
	n = pread(logfd, logbuf, loglen - 1, 0);
	logbuf[n > 0 ? n : 0] = '\0';
	close(logfd);
	return st;
}

static void
test_child_loop_dies_loudly_on_malformed(void **state)
{
	static unsigned char rec[IPC_MSG_MAX + 64];
	unsigned char zeros[16] = { 0 };
	char log[4096];
	size_t n;
	int st;

	/* Wrong version. */
	n = frame(rec, 9, 0, T_PING, 1, 4, zeros, 4);
	st = run_child(rec, n, -1, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), IPC_EXIT_FATAL);
	assert_non_null(strstr(log, "event=ipc_refused peer=parent error=\"version 9, expected 1\""));
	assert_non_null(strstr(log, "action=exit"));

	/* Oversize record: truncated by the kernel, refused. */
	memset(rec, 0, sizeof(rec));
	n = frame(rec, IPC_VERSION, 0, T_SECRET, 1, sizeof(rec) - IPC_HDR_LEN, zeros, 0);
	st = run_child(rec, sizeof(rec), -1, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), IPC_EXIT_FATAL);
	assert_non_null(strstr(log, "record larger than"));

	/* Two fds where at most one may come. */
	n = frame(rec, IPC_VERSION, IPC_FLAG_FD, T_FD, 1, 0, zeros, 0);
	st = run_child(rec, n, STDIN_FILENO, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), IPC_EXIT_FATAL);
	assert_non_null(strstr(log, "more than one fd"));
}

/* Random records: each either is well formed or ends the child with a log
 * line and IPC_EXIT_FATAL; never a signal (crash) or a silent exit. */
static void
test_child_loop_fuzz(void **state)
{
	unsigned char rec[128];
	char log[4096];
	size_t len;
	int i, st;
	uint16_t type;

	srandom(8);
	for (i = 0; i < FUZZ_ROUNDS; i++) {
		len = (size_t)(random() % (long)sizeof(rec));
		if (len == 0)
			len = 1;
		for (size_t j = 0; j < len; j++)
			rec[j] = (unsigned char)random();
		/* Keep half of them close to valid, so the deeper checks run. */
		if (i % 2 == 0 && len >= IPC_HDR_LEN) {
			type = (uint16_t)(1 + random() % 4);
			rec[0] = IPC_VERSION;
			rec[1] = 0;
			rec[2] = 0;
			rec[3] = (unsigned char)type;
		}
		/* A well-formed ping would keep the child waiting: make it
		 * malformed by an unknown flag. */
		if (len == IPC_HDR_LEN + 4 && rec[3] == T_PING && rec[0] == IPC_VERSION)
			rec[1] = 0x40;
		st = run_child(rec, len, -1, log, sizeof(log));
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), IPC_EXIT_FATAL);
		assert_non_null(strstr(log, "event=ipc_refused"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_validate_accepts_well_formed),
		cmocka_unit_test(test_validate_refuses_malformed),
		cmocka_unit_test(test_payload_helpers),
		cmocka_unit_test(test_channel_round_trip_and_fd),
		cmocka_unit_test(test_send_refuses_oversize),
		cmocka_unit_test(test_peer_closing_with_unread_records_is_a_close),
		cmocka_unit_test(test_child_loop_dies_loudly_on_malformed),
		cmocka_unit_test(test_child_loop_fuzz),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
