/*
 * ipc.c: typed, versioned messages over SOCK_SEQPACKET socketpairs between
 * smtpvault's processes (see ipc.h). A record is read whole or refused: a
 * truncated record, an unknown version, flag or type, a declared length that
 * differs from the record's, a length outside the type's bounds, or an fd
 * where none belongs (or none where one must be) ends the channel, and by
 * default the process. Every buffer that held a payload is wiped.
 */
#include "ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "log.h"
#include "util.h"

#define IPC_PEER_MAX	32
#define IPC_WHY_MAX	256
#define IPC_RECV_BURST	64	/* messages handled per readable event */
#define IPC_BAD_TRUNC	0x01	/* the record did not fit */
#define IPC_BAD_CTRUNC	0x02	/* more than one fd, or control data cut */

struct ipc_out {
	TAILQ_ENTRY(ipc_out)	 entry;
	unsigned char		*buf;
	size_t			 len;
	int			 fd;
};

struct ipc {
	struct event		*ev_read, *ev_write;
	int			 fd;
	int			 dead;
	int			 in_callback;
	int			 free_pending;
	char			 peer[IPC_PEER_MAX];
	const struct ipc_rule	*rules;
	size_t			 n_rules;
	ipc_recv_cb		*recv_cb;
	ipc_event_cb		*event_cb;
	void			*arg;
	TAILQ_HEAD(, ipc_out)	 outq;
	unsigned char		 rbuf[IPC_MSG_MAX];
};

int
ipc_socketpair(int sv[2])
{
	return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
}

static void
ipc_hdr_write(unsigned char *h, uint16_t type, uint32_t id, uint8_t flags, uint32_t len)
{
	h[0] = IPC_VERSION;
	h[1] = flags;
	h[2] = (unsigned char)(type >> 8);
	h[3] = (unsigned char)type;
	h[4] = (unsigned char)(id >> 24);
	h[5] = (unsigned char)(id >> 16);
	h[6] = (unsigned char)(id >> 8);
	h[7] = (unsigned char)id;
	h[8] = (unsigned char)(len >> 24);
	h[9] = (unsigned char)(len >> 16);
	h[10] = (unsigned char)(len >> 8);
	h[11] = (unsigned char)len;
}

static uint32_t
ipc_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int
ipc_validate(const struct ipc_rule *rules, size_t n_rules, const unsigned char *raw,
    size_t rawlen, int has_fd, int truncated, struct ipc_msg *out, char *why,
    size_t whylen)
{
	const struct ipc_rule *r = NULL;
	uint32_t len;
	uint16_t type;
	uint8_t flags;
	size_t i;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	if (truncated) {
		snprintf(why, whylen, "record larger than %d bytes", IPC_MSG_MAX);
		return -1;
	}
	if (rawlen < IPC_HDR_LEN) {
		snprintf(why, whylen, "short record (%zu bytes)", rawlen);
		return -1;
	}
	if (raw[0] != IPC_VERSION) {
		snprintf(why, whylen, "version %u, expected %u", raw[0], IPC_VERSION);
		return -1;
	}
	flags = raw[1];
	type = (uint16_t)(raw[2] << 8 | raw[3]);
	len = ipc_be32(raw + 8);
	if ((flags & ~IPC_FLAGS_KNOWN) != 0) {
		snprintf(why, whylen, "unknown flags 0x%02x", flags);
		return -1;
	}
	if (len > IPC_PAYLOAD_MAX || (size_t)len != rawlen - IPC_HDR_LEN) {
		snprintf(why, whylen, "type %u declares %u payload bytes, record has %zu",
		    type, len, rawlen - IPC_HDR_LEN);
		return -1;
	}
	for (i = 0; i < n_rules; i++) {
		if (rules[i].type == type) {
			r = &rules[i];
			break;
		}
	}
	if (r == NULL) {
		snprintf(why, whylen, "unexpected type %u", type);
		return -1;
	}
	if (len < r->min_len || len > r->max_len) {
		snprintf(why, whylen, "type %u: payload %u bytes outside %u..%u", type, len,
		    r->min_len, r->max_len);
		return -1;
	}
	if (!!(flags & IPC_FLAG_FD) != !!has_fd) {
		snprintf(why, whylen, "type %u: fd flag and fd disagree", type);
		return -1;
	}
	if ((has_fd && r->fd == IPC_FD_NONE) || (!has_fd && r->fd == IPC_FD_REQUIRED)) {
		snprintf(why, whylen, "type %u: %s", type,
		    has_fd ? "an fd where none belongs" : "the fd is missing");
		return -1;
	}
	out->type = type;
	out->id = ipc_be32(raw + 4);
	out->data = raw + IPC_HDR_LEN;
	out->len = len;
	return 0;
}

/* One recvmsg: the record's length (0 at EOF) or -1; *fd gets a passed fd or
 * -1; *bad is set for a truncated record or truncated control data. */
static ssize_t
ipc_recv_record(int sock, unsigned char *buf, size_t buflen, int *fd, int *bad, int flags)
{
	union {
		struct cmsghdr	hdr;
		unsigned char	buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr msg;
	struct cmsghdr *cm;
	struct iovec iov;
	ssize_t n;
	int nfd;

	*fd = -1;
	*bad = 0;
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = buf;
	iov.iov_len = buflen;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf.buf;
	msg.msg_controllen = sizeof(cbuf.buf);
	do {
		n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
	} while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		if (nfd >= 1) {
			memcpy(fd, CMSG_DATA(cm), sizeof(int));
			if (nfd > 1)
				*bad |= IPC_BAD_CTRUNC;
		}
	}
	if (msg.msg_flags & MSG_TRUNC)
		*bad |= IPC_BAD_TRUNC;
	if (msg.msg_flags & MSG_CTRUNC)
		*bad |= IPC_BAD_CTRUNC;
	return n;
}

static ssize_t
ipc_send_record(int sock, const unsigned char *buf, size_t len, int passfd)
{
	union {
		struct cmsghdr	hdr;
		unsigned char	buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr msg;
	struct cmsghdr *cm;
	struct iovec iov;
	ssize_t n;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = (void *)buf;
	iov.iov_len = len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (passfd >= 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof(cbuf.buf);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n == -1 && errno == EINTR);
	return n;
}

/* Build header + payload in one wiped-on-free buffer; *lenp gets the
 * payload's length. */
static unsigned char *
ipc_frame(uint16_t type, uint32_t id, int passfd, const struct iovec *iov, size_t iovcnt,
    size_t *lenp)
{
	unsigned char *buf;
	size_t i, len = 0, off = IPC_HDR_LEN;

	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > IPC_PAYLOAD_MAX - len ||
		    (iov[i].iov_len > 0 && iov[i].iov_base == NULL))
			return NULL;
		len += iov[i].iov_len;
	}
	if ((buf = malloc(IPC_HDR_LEN + len)) == NULL)
		return NULL;
	ipc_hdr_write(buf, type, id, passfd >= 0 ? IPC_FLAG_FD : 0, (uint32_t)len);
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > 0)
			memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	*lenp = len;
	return buf;
}

static void
ipc_out_free(struct ipc_out *o)
{
	sodium_memzero(o->buf, o->len);
	free(o->buf);
	if (o->fd >= 0)
		close(o->fd);
	free(o);
}

static void
ipc_die(struct ipc *ipc, enum ipc_event ev, const char *why)
{
	if (ipc->dead)
		return;
	ipc->dead = 1;
	event_del(ipc->ev_read);
	event_del(ipc->ev_write);
	if (ev == IPC_EV_MALFORMED)
		log_err("event=ipc_refused peer=%s error=\"%s\"", ipc->peer, why);
	if (ipc->event_cb != NULL) {
		ipc->event_cb(ipc, ev, why, ipc->arg);
		return;
	}
	log_err("event=ipc_fatal peer=%s error=\"%s\" action=exit", ipc->peer, why);
	exit(IPC_EXIT_FATAL);
}

/*
 * A peer that closes while records it was sent are still unread makes Linux
 * fail the next recvmsg() once with ECONNRESET (EPIPE for good measure),
 * before the records the peer sent and its EOF. That is an ordinary close
 * (a parent closing a channel while a PING's answer is unread), not a
 * fault: the caller reads on, and the records then EOF follow.
 */
static int
ipc_peer_reset(int err)
{
	return err == ECONNRESET || err == EPIPE;
}

static void
ipc_on_read(evutil_socket_t sock, short what, void *arg)
{
	struct ipc *ipc = arg;
	struct ipc_msg m;
	char why[IPC_WHY_MAX];
	ssize_t n;
	int fd, bad, i;

	ipc->in_callback = 1;
	for (i = 0; i < IPC_RECV_BURST && !ipc->dead && !ipc->free_pending; i++) {
		n = ipc_recv_record(ipc->fd, ipc->rbuf, sizeof(ipc->rbuf), &fd, &bad,
		    MSG_DONTWAIT);
		if (n == -1 && ipc_peer_reset(errno))
			n = ipc_recv_record(ipc->fd, ipc->rbuf, sizeof(ipc->rbuf), &fd, &bad,
			    MSG_DONTWAIT);
		if (n == -1 && ipc_peer_reset(errno)) {
			ipc_die(ipc, IPC_EV_CLOSED, "peer closed the channel");
			break;
		}
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n == -1) {
			snprintf(why, sizeof(why), "recvmsg: %s", strerror(errno));
			ipc_die(ipc, IPC_EV_IOERROR, why);
			break;
		}
		if (n == 0) {
			ipc_die(ipc, IPC_EV_CLOSED, "peer closed the channel");
			break;
		}
		if ((bad & IPC_BAD_CTRUNC) != 0)
			snprintf(why, sizeof(why), "more than one fd, or control data cut");
		if ((bad & IPC_BAD_CTRUNC) != 0 || ipc_validate(ipc->rules, ipc->n_rules,
		    ipc->rbuf, (size_t)n, fd >= 0, bad & IPC_BAD_TRUNC, &m, why,
		    sizeof(why)) == -1) {
			sodium_memzero(ipc->rbuf, (size_t)n);
			if (fd >= 0)
				close(fd);
			ipc_die(ipc, IPC_EV_MALFORMED, why);
			break;
		}
		m.fd = fd;
		ipc->recv_cb(ipc, &m, ipc->arg);
		sodium_memzero(ipc->rbuf, (size_t)n);
	}
	ipc->in_callback = 0;
	if (ipc->free_pending)
		ipc_free(ipc);
}

static void
ipc_on_write(evutil_socket_t sock, short what, void *arg)
{
	struct ipc *ipc = arg;
	struct ipc_out *o;
	char why[IPC_WHY_MAX];

	while ((o = TAILQ_FIRST(&ipc->outq)) != NULL) {
		if (ipc_send_record(ipc->fd, o->buf, o->len, o->fd) == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
				event_add(ipc->ev_write, NULL);
				return;
			}
			snprintf(why, sizeof(why), "sendmsg: %s", strerror(errno));
			ipc_die(ipc, errno == EPIPE ? IPC_EV_CLOSED : IPC_EV_IOERROR, why);
			return;
		}
		TAILQ_REMOVE(&ipc->outq, o, entry);
		ipc_out_free(o);
	}
}

struct ipc *
ipc_new(struct event_base *base, int fd, const char *peer, const struct ipc_rule *rules,
    size_t n_rules, ipc_recv_cb *recv_cb, ipc_event_cb *event_cb, void *arg)
{
	struct ipc *ipc;
	int fl;

	if ((ipc = calloc(1, sizeof(*ipc))) == NULL)
		return NULL;
	ipc->fd = fd;
	strlcpy(ipc->peer, peer, sizeof(ipc->peer));
	ipc->rules = rules;
	ipc->n_rules = n_rules;
	ipc->recv_cb = recv_cb;
	ipc->event_cb = event_cb;
	ipc->arg = arg;
	TAILQ_INIT(&ipc->outq);
	if ((fl = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		goto fail;
	ipc->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, ipc_on_read, ipc);
	ipc->ev_write = event_new(base, fd, EV_WRITE, ipc_on_write, ipc);
	if (ipc->ev_read == NULL || ipc->ev_write == NULL ||
	    event_add(ipc->ev_read, NULL) == -1)
		goto fail;
	return ipc;
fail:
	if (ipc->ev_read != NULL)
		event_free(ipc->ev_read);
	if (ipc->ev_write != NULL)
		event_free(ipc->ev_write);
	free(ipc);
	return NULL;
}

void
ipc_free(struct ipc *ipc)
{
	struct ipc_out *o;

	if (ipc == NULL)
		return;
	if (ipc->in_callback) {
		/* Never freed inside its own callback (STYLE.md, Redis). */
		ipc->free_pending = 1;
		ipc->dead = 1;
		event_del(ipc->ev_read);
		event_del(ipc->ev_write);
		return;
	}
	while ((o = TAILQ_FIRST(&ipc->outq)) != NULL) {
		TAILQ_REMOVE(&ipc->outq, o, entry);
		ipc_out_free(o);
	}
	event_free(ipc->ev_read);
	event_free(ipc->ev_write);
	close(ipc->fd);
	sodium_memzero(ipc->rbuf, sizeof(ipc->rbuf));
	free(ipc);
}

const char *
ipc_peer(const struct ipc *ipc)
{
	return ipc->peer;
}

int
ipc_send(struct ipc *ipc, uint16_t type, uint32_t id, int passfd, const void *data,
    size_t len)
{
	struct iovec iov;

	iov.iov_base = (void *)data;
	iov.iov_len = len;
	return ipc_sendv(ipc, type, id, passfd, &iov, 1);
}

int
ipc_sendv(struct ipc *ipc, uint16_t type, uint32_t id, int passfd, const struct iovec *iov,
    size_t iovcnt)
{
	struct ipc_out *o;
	size_t len;

	if (ipc->dead)
		return -1;
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return -1;
	o->fd = -1;
	if ((o->buf = ipc_frame(type, id, passfd, iov, iovcnt, &len)) == NULL) {
		free(o);
		return -1;
	}
	o->len = IPC_HDR_LEN + len;
	if (passfd >= 0 && (o->fd = fcntl(passfd, F_DUPFD_CLOEXEC, 0)) == -1) {
		ipc_out_free(o);
		return -1;
	}
	TAILQ_INSERT_TAIL(&ipc->outq, o, entry);
	if (event_add(ipc->ev_write, NULL) == -1)
		return -1;
	return 0;
}

int
ipc_send_sync(int fd, uint16_t type, uint32_t id, int passfd, const void *data, size_t len,
    char *err, size_t errlen)
{
	struct iovec iov;
	unsigned char *buf;
	ssize_t n;

	iov.iov_base = (void *)data;
	iov.iov_len = len;
	if ((buf = ipc_frame(type, id, passfd, &iov, 1, &len)) == NULL) {
		snprintf(err, errlen, "ipc: message type %u too large or out of memory", type);
		return -1;
	}
	n = ipc_send_record(fd, buf, IPC_HDR_LEN + len, passfd);
	sodium_memzero(buf, IPC_HDR_LEN + len);
	free(buf);
	if (n == -1) {
		snprintf(err, errlen, "ipc: send: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int
ipc_recv_sync(int fd, const struct ipc_rule *rules, size_t n_rules, unsigned char *buf,
    size_t buflen, struct ipc_msg *m, char *err, size_t errlen)
{
	struct pollfd pfd;
	ssize_t n;
	int passed, bad, rc;

	pfd.fd = fd;
	pfd.events = POLLIN;
	do {
		rc = poll(&pfd, 1, IPC_SYNC_TIMEOUT_MS);
	} while (rc == -1 && errno == EINTR);
	if (rc <= 0) {
		snprintf(err, errlen, "ipc: %s", rc == 0 ? "no answer in time" : strerror(errno));
		return -1;
	}
	n = ipc_recv_record(fd, buf, buflen, &passed, &bad, 0);
	if (n == -1 && ipc_peer_reset(errno))
		n = ipc_recv_record(fd, buf, buflen, &passed, &bad, 0);
	if (n <= 0) {
		snprintf(err, errlen, "ipc: %s", n == 0 || ipc_peer_reset(errno) ?
		    "peer closed the channel" : strerror(errno));
		return -1;
	}
	if ((bad & IPC_BAD_CTRUNC) != 0)
		snprintf(err, errlen, "more than one fd, or control data cut");
	if ((bad & IPC_BAD_CTRUNC) != 0 || ipc_validate(rules, n_rules, buf, (size_t)n,
	    passed >= 0, bad & IPC_BAD_TRUNC, m, err, errlen) == -1) {
		if (passed >= 0)
			close(passed);
		sodium_memzero(buf, (size_t)n);
		return -1;
	}
	m->fd = passed;
	return 0;
}

/* ---- Payload helpers -------------------------------------------------------- */

static void
ipc_put(struct ipc_buf *b, const void *p, size_t len)
{
	if (b->failed || len > b->cap - b->len) {
		b->failed = 1;
		return;
	}
	if (len == 0)
		return;
	memcpy(b->p + b->len, p, len);
	b->len += len;
}

void
ipc_put_raw(struct ipc_buf *b, const void *p, size_t len)
{
	ipc_put(b, p, len);
}

void
ipc_put_u32(struct ipc_buf *b, uint32_t v)
{
	unsigned char x[4] = { v >> 24, v >> 16, v >> 8, v };

	ipc_put(b, x, sizeof(x));
}

void
ipc_put_u64(struct ipc_buf *b, uint64_t v)
{
	ipc_put_u32(b, (uint32_t)(v >> 32));
	ipc_put_u32(b, (uint32_t)v);
}

void
ipc_put_bytes(struct ipc_buf *b, const void *p, size_t len)
{
	unsigned char x[2];

	if (len > UINT16_MAX) {
		b->failed = 1;
		return;
	}
	x[0] = (unsigned char)(len >> 8);
	x[1] = (unsigned char)len;
	ipc_put(b, x, sizeof(x));
	ipc_put(b, p, len);
}

void
ipc_put_str(struct ipc_buf *b, const char *s)
{
	ipc_put_bytes(b, s, s == NULL ? 0 : strlen(s));
}

static const unsigned char *
ipc_get(struct ipc_rd *r, size_t len)
{
	const unsigned char *p;

	if (r->failed || len > r->len - r->off) {
		r->failed = 1;
		return NULL;
	}
	p = r->p + r->off;
	r->off += len;
	return p;
}

uint32_t
ipc_get_u32(struct ipc_rd *r)
{
	const unsigned char *p;

	if ((p = ipc_get(r, 4)) == NULL)
		return 0;
	return ipc_be32(p);
}

uint64_t
ipc_get_u64(struct ipc_rd *r)
{
	uint64_t hi = ipc_get_u32(r);

	return hi << 32 | ipc_get_u32(r);
}

const unsigned char *
ipc_get_bytes(struct ipc_rd *r, size_t *len)
{
	const unsigned char *p;

	*len = 0;
	if ((p = ipc_get(r, 2)) == NULL)
		return NULL;
	*len = (size_t)p[0] << 8 | p[1];
	if ((p = ipc_get(r, *len)) == NULL)
		*len = 0;
	return p;
}

void
ipc_get_str(struct ipc_rd *r, char *dst, size_t dstlen)
{
	const unsigned char *p;
	size_t len;

	dst[0] = '\0';
	p = ipc_get_bytes(r, &len);
	if (r->failed)
		return;
	if (len >= dstlen || (len > 0 && memchr(p, '\0', len) != NULL)) {
		r->failed = 1;
		return;
	}
	memcpy(dst, p, len);
	dst[len] = '\0';
}

void
ipc_put_nstr(struct ipc_buf *b, const char *s)
{
	ipc_put_u32(b, s != NULL);
	ipc_put_str(b, s != NULL ? s : "");
}

char *
ipc_get_nstr(struct ipc_rd *r, char *dst, size_t dstlen)
{
	uint32_t present = ipc_get_u32(r);

	if (present > 1)
		r->failed = 1;
	ipc_get_str(r, dst, dstlen);
	return present == 1 && !r->failed ? dst : NULL;
}

int
ipc_rd_done(const struct ipc_rd *r)
{
	return r->failed || r->off != r->len ? -1 : 0;
}
