/*
 * relay_link.c: relay_submit() / relay_cancel() between the smtp front end
 * and the relay process over one IPC channel (relay_link.h).
 *
 * A SUBMIT record's payload is the envelope ("head") and, when everything
 * fits in one record, the recipients and the data after it:
 *
 *   u32 flags (1 = BODY=8BITMIME, 2 = SMTPUTF8)
 *   str queue_id, account, mail_from, client_ip, client_name, helo
 *   nstr header_from, subject, message_id	(read by the front end)
 *   u32 n_rcpts, u32 rcpts_len, u64 data_len
 *   [rcpts: n_rcpts x str][data: data_len bytes]	inline, or else in the fd
 *
 * (str and nstr as in ipc.h.) When the rest does not fit, the same bytes go
 * into a memfd sealed against writing, shrinking and growing, passed with
 * the record; the relay checks the seals and the size and maps it, so the
 * data is copied once on each side at most: into the record or the memfd
 * by the front end, out of the record by the relay (mapped: not at all).
 *
 * The front end keeps its pending submits in a slot table: a request id is
 * the slot's index and a generation, so a result is found without a search
 * and a late result for a cancelled submit (its slot since reused) is
 * recognised and dropped. Slots, the relay side's entries and the envelope
 * buffer are reused: a message costs no allocation here beyond the record
 * itself and, on the relay side, the relay_msg that relay_submit() takes.
 */
#include "relay_link.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define RL_SLOT_BITS		20			/* pending submits < 2^20 */
#define RL_SLOTS_MAX		(1u << RL_SLOT_BITS)
#define RL_SLOT_MASK		(RL_SLOTS_MAX - 1)
#define RL_GEN_MASK		((1u << (32 - RL_SLOT_BITS)) - 1)
#define RL_SLOTS_INIT		64
#define RL_NO_SLOT		UINT32_MAX
#define RL_IOV_MAX		64	/* data pieces sent as they are; more are pulled up */
#define RL_WHY_MAX		256
#define RL_FLAG_8BIT		0x01
#define RL_FLAG_SMTPUTF8	0x02
#define RL_FLAGS_KNOWN		(RL_FLAG_8BIT | RL_FLAG_SMTPUTF8)
#define RL_RCPT_WIRE_MIN	3			/* u16 length + one byte */
#define RL_RCPT_WIRE_MAX	(2 + RELAY_PATH_MAX - 1)
#define RL_SEALS		(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
/* The smallest head: flags, six empty strings, three absent fields, counts. */
#define RL_HEAD_MIN		(4 + 6 * 2 + 3 * (4 + 2) + 4 + 4 + 8)
#define RL_RESULT_MIN		(4 + 2 + 2)
#define RL_RESULT_MAX		(4 + 2 + 15 + 2 + RELAY_TEXT_MAX - 1)
#define RL_ENHANCED_MAX		16	/* == sizeof(relay_result.enhanced) */
#define RL_MEMFD_NAME		"smtpvault-msg"

const struct ipc_rule relay_link_server_rules[] = {
	{ RELAY_LINK_SUBMIT, RL_HEAD_MIN, IPC_PAYLOAD_MAX, IPC_FD_OPTIONAL },
	{ RELAY_LINK_CANCEL, 0, 0, IPC_FD_NONE },
};
const size_t relay_link_n_server_rules = sizeof(relay_link_server_rules) /
    sizeof(relay_link_server_rules[0]);

static const struct ipc_rule relay_link_client_rules[] = {
	{ RELAY_LINK_RESULT, RL_RESULT_MIN, RL_RESULT_MAX, IPC_FD_NONE },
};

enum rl_role { RL_CLIENT, RL_SERVER };

/* The front end: one pending submit. */
struct rl_slot {
	relay_cb		*cb;
	void			*cbarg;
	uint32_t		 gen;
	uint32_t		 next_free;
	int			 busy;
};

/* The relay side: one message inside the relay (the relay_cb argument). */
struct rl_entry {
	TAILQ_ENTRY(rl_entry)	 entry;
	struct relay_link	*rl;
	uint32_t		 id;
};
TAILQ_HEAD(rl_entries, rl_entry);

struct relay_link {
	enum rl_role		 role;
	struct event_base	*base;
	struct ipc		*ipc;		/* NULL once the link is dead */
	int			 dead;
	relay_link_event_cb	*event_cb;
	void			*event_arg;

	/* The front end. */
	struct rl_slot		*slots;
	uint32_t		 n_slots;
	uint32_t		 free_head;
	size_t			 n_busy;
	unsigned char		*head;		/* IPC_PAYLOAD_MAX: the record being built */
	struct event		*ev_drain;
	void			(*drain_done)(void *);
	void			*drain_arg;

	/* The relay side: relay_submit() / relay_cancel() on a relay, or hooks. */
	struct relay_link_hooks	 hooks;
	struct relay_link_limits wire;		/* decoding: the wire form's bounds */
	struct relay_link_limits lim;		/* per message: the current config's */
	struct rl_entries	 inflight;
	struct rl_entries	 spare;
};

static void
rl_result_set(struct relay_result *res, int code, const char *enhanced, const char *text)
{
	memset(res, 0, sizeof(*res));
	res->code = code;
	strlcpy(res->enhanced, enhanced, sizeof(res->enhanced));
	strlcpy(res->text, text, sizeof(res->text));
}

void
relay_link_set_event_cb(struct relay_link *rl, relay_link_event_cb *cb, void *arg)
{
	rl->event_cb = cb;
	rl->event_arg = arg;
}

/* ---- Dying --------------------------------------------------------------- */

static void rl_client_fail_pending(struct relay_link *rl);
static void rl_server_cancel_all(struct relay_link *rl);

/*
 * The channel is dead (closed, broken, or a record we refuse): clean up,
 * then let the owner decide, or follow ipc.h's default. Safe inside the
 * ipc's own callbacks: ipc_free() defers itself there.
 */
static void
rl_die(struct relay_link *rl, enum ipc_event ev, const char *why)
{
	const char *peer = rl->role == RL_CLIENT ? "relay" : "smtp";

	if (rl->dead)
		return;
	rl->dead = 1;
	if (rl->ipc != NULL) {
		ipc_free(rl->ipc);
		rl->ipc = NULL;
	}
	log_msg(ev == IPC_EV_CLOSED ? LOG_LVL_INFO : LOG_LVL_ERR, "event=relay_link_down peer=%s "
	    "pending=%zu error=\"%s\"", peer, rl->role == RL_CLIENT ? rl->n_busy : 0, why);
	if (rl->role == RL_CLIENT)
		rl_client_fail_pending(rl);
	else
		rl_server_cancel_all(rl);
	if (rl->event_cb != NULL) {
		rl->event_cb(rl, ev, why, rl->event_arg);
		return;
	}
	if (ev == IPC_EV_MALFORMED) {
		log_err("event=ipc_fatal peer=%s error=\"%s\" action=exit", peer, why);
		exit(IPC_EXIT_FATAL);
	}
}

static void
rl_ipc_event(struct ipc *ipc, enum ipc_event ev, const char *why, void *arg)
{
	rl_die(arg, ev, why);
}

/* A record that passed ipc.h's rules but not ours. */
static void
rl_refuse(struct relay_link *rl, uint16_t type, const char *why)
{
	char msg[RL_WHY_MAX];

	log_err("event=ipc_refused peer=%s type=%u error=\"%s\"",
	    rl->role == RL_CLIENT ? "relay" : "smtp", type, why);
	snprintf(msg, sizeof(msg), "type %u: %s", type, why);
	rl_die(rl, IPC_EV_MALFORMED, msg);
}

/* ---- The front end ------------------------------------------------------- */

static int
rl_slot_get(struct relay_link *rl, relay_cb *cb, void *cbarg, uint32_t *id)
{
	struct rl_slot *s;
	uint32_t i, n;

	if (rl->free_head == RL_NO_SLOT) {
		n = rl->n_slots == 0 ? RL_SLOTS_INIT : rl->n_slots * 2;
		if (n > RL_SLOTS_MAX || (s = reallocarray(rl->slots, n, sizeof(*s))) == NULL)
			return -1;
		memset(s + rl->n_slots, 0, (n - rl->n_slots) * sizeof(*s));
		for (i = n; i > rl->n_slots; i--) {
			s[i - 1].next_free = rl->free_head;
			rl->free_head = i - 1;
		}
		rl->slots = s;
		rl->n_slots = n;
	}
	i = rl->free_head;
	s = &rl->slots[i];
	rl->free_head = s->next_free;
	s->busy = 1;
	s->gen = (s->gen + 1) & RL_GEN_MASK;
	s->cb = cb;
	s->cbarg = cbarg;
	rl->n_busy++;
	*id = s->gen << RL_SLOT_BITS | i;
	return 0;
}

static void
rl_slot_put(struct relay_link *rl, uint32_t i)
{
	struct rl_slot *s = &rl->slots[i];

	s->busy = 0;
	s->cb = NULL;
	s->cbarg = NULL;
	s->next_free = rl->free_head;
	rl->free_head = i;
	rl->n_busy--;
}

static void
rl_drain_fire(evutil_socket_t fd, short what, void *arg)
{
	struct relay_link *rl = arg;
	void (*done)(void *) = rl->drain_done;

	rl->drain_done = NULL;
	if (done != NULL)
		done(rl->drain_arg);
}

static void
rl_drain_check(struct relay_link *rl)
{
	if (rl->drain_done != NULL && rl->n_busy == 0)
		event_active(rl->ev_drain, EV_TIMEOUT, 0);
}

/* Each pending submit is answered 451 once; callbacks may submit again (and
 * are refused: the link is dead) or cancel. */
static void
rl_client_fail_pending(struct relay_link *rl)
{
	struct relay_result res;
	relay_cb *cb;
	void *cbarg;
	uint32_t i;

	rl_result_set(&res, 451, "4.3.0", "relay process unavailable, try again later");
	for (i = 0; i < rl->n_slots; i++) {
		if (!rl->slots[i].busy)
			continue;
		cb = rl->slots[i].cb;
		cbarg = rl->slots[i].cbarg;
		rl_slot_put(rl, i);
		cb(cbarg, &res);
	}
	rl_drain_check(rl);
}

static void
rl_client_recv(struct ipc *ipc, const struct ipc_msg *m, void *arg)
{
	struct relay_link *rl = arg;
	struct ipc_rd r = { m->data, m->len, 0, 0 };
	struct relay_result res;
	struct rl_slot *s;
	uint32_t code, i = m->id & RL_SLOT_MASK, gen = m->id >> RL_SLOT_BITS;
	relay_cb *cb;
	void *cbarg;

	memset(&res, 0, sizeof(res));
	code = ipc_get_u32(&r);
	ipc_get_str(&r, res.enhanced, sizeof(res.enhanced));
	ipc_get_str(&r, res.text, sizeof(res.text));
	if (ipc_rd_done(&r) == -1 || code < 200 || code > 599) {
		rl_refuse(rl, m->type, "malformed result");
		return;
	}
	res.code = (int)code;
	if (i >= rl->n_slots || !rl->slots[i].busy || rl->slots[i].gen != gen) {
		/* Its submit was cancelled while the result was on its way. */
		log_debug("event=relay_link_late_result id=%u code=%u", m->id, code);
		return;
	}
	s = &rl->slots[i];
	cb = s->cb;
	cbarg = s->cbarg;
	rl_slot_put(rl, i);
	cb(cbarg, &res);
	rl_drain_check(rl);
}

struct relay_link *
relay_link_client_new(struct event_base *base, int fd)
{
	struct relay_link *rl;

	if ((rl = calloc(1, sizeof(*rl))) == NULL)
		goto fail;
	rl->role = RL_CLIENT;
	rl->base = base;
	rl->free_head = RL_NO_SLOT;
	TAILQ_INIT(&rl->inflight);
	TAILQ_INIT(&rl->spare);
	if ((rl->head = malloc(IPC_PAYLOAD_MAX)) == NULL ||
	    (rl->ev_drain = event_new(base, -1, 0, rl_drain_fire, rl)) == NULL ||
	    (rl->ipc = ipc_new(base, fd, "relay", relay_link_client_rules,
	    sizeof(relay_link_client_rules) / sizeof(relay_link_client_rules[0]),
	    rl_client_recv, rl_ipc_event, rl)) == NULL)
		goto fail;
	return rl;
fail:
	if (rl == NULL || rl->ipc == NULL)
		close(fd);
	relay_link_free(rl);
	return NULL;
}

/* A header field longer than the relay side takes (relay_fields_read()
 * never makes one) goes as absent rather than end the link. */
static const char *
rl_field(const char *f)
{
	return f != NULL && strnlen(f, RELAY_LINK_FIELD_MAX) < RELAY_LINK_FIELD_MAX ? f : NULL;
}

/* The head of a SUBMIT (everything but the recipients and the data). */
static void
rl_put_head(struct ipc_buf *b, const struct relay_msg *msg, size_t rcpts_len, uint64_t len)
{
	ipc_put_u32(b, (msg->body_8bit ? RL_FLAG_8BIT : 0) | (msg->smtputf8 ? RL_FLAG_SMTPUTF8 : 0));
	ipc_put_str(b, msg->queue_id);
	ipc_put_str(b, msg->account);
	ipc_put_str(b, msg->mail_from);
	ipc_put_str(b, msg->client_ip);
	ipc_put_str(b, msg->client_name);
	ipc_put_str(b, msg->helo);
	ipc_put_nstr(b, rl_field(msg->fields.header_from));
	ipc_put_nstr(b, rl_field(msg->fields.subject));
	ipc_put_nstr(b, rl_field(msg->fields.message_id));
	ipc_put_u32(b, (uint32_t)msg->n_rcpts);
	ipc_put_u32(b, (uint32_t)rcpts_len);
	ipc_put_u64(b, len);
}

static int
rl_write_all(int fd, const void *p, size_t len)
{
	const unsigned char *c = p;
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, c, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The recipients and the data in a sealed memfd; scratch (what is left of
 * the record buffer) stages the recipients. The data is drained from msg.
 * Returns the fd, or -1.
 */
static int
rl_memfd(const struct relay_msg *msg, unsigned char *scratch, size_t cap)
{
	struct ipc_buf b = { scratch, 0, cap, 0 };
	size_t i;
	int fd;

	if ((fd = memfd_create(RL_MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING)) == -1)
		return -1;
	for (i = 0; i < msg->n_rcpts; i++) {
		if (b.cap - b.len < RL_RCPT_WIRE_MAX) {
			if (rl_write_all(fd, b.p, b.len) == -1)
				goto fail;
			b.len = 0;
		}
		ipc_put_str(&b, msg->rcpts[i]);
	}
	if (b.failed || rl_write_all(fd, b.p, b.len) == -1)
		goto fail;
	while (evbuffer_get_length(msg->data) > 0)
		if (evbuffer_write(msg->data, fd) == -1 && errno != EINTR)
			goto fail;
	if (fcntl(fd, F_ADD_SEALS, RL_SEALS | F_SEAL_SEAL) == -1)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

int
relay_link_submit(void *arg, struct relay_msg *msg, relay_cb *cb, void *cbarg,
    struct relay_result *res)
{
	struct relay_link *rl = arg;
	struct ipc_buf b = { rl->head, 0, IPC_PAYLOAD_MAX, 0 };
	struct evbuffer_iovec vec[RL_IOV_MAX - 1];
	struct iovec iov[RL_IOV_MAX];
	uint64_t len;
	size_t rcpts_len = 0, i, headlen;
	uint32_t id;
	int n = 0, fd = -1, rc;

	memset(res, 0, sizeof(*res));
	if (rl->dead) {
		rl_result_set(res, 451, "4.3.0", "relay process unavailable, try again later");
		goto refuse;
	}
	/* What the relay side would refuse as a protocol error. */
	if (msg->data == NULL || msg->n_rcpts == 0 || msg->n_rcpts > SIZE_MAX / RL_RCPT_WIRE_MAX) {
		rl_result_set(res, 451, "4.3.0", "internal error: incomplete message");
		goto refuse;
	}
	for (i = 0; i < msg->n_rcpts; i++) {
		if (msg->rcpts[i][0] == '\0') {
			rl_result_set(res, 451, "4.3.0", "internal error: incomplete message");
			goto refuse;
		}
		rcpts_len += 2 + strnlen(msg->rcpts[i], RELAY_PATH_MAX - 1);
	}
	len = evbuffer_get_length(msg->data);
	if (rl_slot_get(rl, cb, cbarg, &id) == -1) {
		rl_result_set(res, 451, "4.3.0", "out of memory, try again later");
		goto refuse;
	}
	rl_put_head(&b, msg, rcpts_len, len);
	headlen = b.len;
	if (!b.failed && rcpts_len <= UINT32_MAX && rcpts_len + len <= b.cap - b.len) {
		for (i = 0; i < msg->n_rcpts; i++)
			ipc_put_str(&b, msg->rcpts[i]);
		if ((n = evbuffer_peek(msg->data, -1, NULL, NULL, 0)) > RL_IOV_MAX - 1) {
			/* Rare: many small pieces. One extra copy beats many iovecs. */
			evbuffer_pullup(msg->data, -1);
			n = 1;
		}
		n = evbuffer_peek(msg->data, -1, NULL, vec, n);
		iov[0].iov_base = b.p;
		iov[0].iov_len = b.len;
		for (i = 0; i < (size_t)n; i++) {
			iov[i + 1].iov_base = vec[i].iov_base;
			iov[i + 1].iov_len = vec[i].iov_len;
		}
		rc = b.failed ? -1 : ipc_sendv(rl->ipc, RELAY_LINK_SUBMIT, id, -1, iov,
		    (size_t)n + 1);
	} else {
		if (b.failed || rcpts_len > UINT32_MAX ||
		    (fd = rl_memfd(msg, b.p + headlen, b.cap - headlen)) == -1) {
			log_err("event=relay_link_memfd queue_id=%s error=\"%s\"", msg->queue_id,
			    b.failed ? "envelope too large" : strerror(errno));
			rc = -1;
		} else {
			rc = ipc_send(rl->ipc, RELAY_LINK_SUBMIT, id, fd, b.p, headlen);
			close(fd);
		}
	}
	if (rc == -1) {
		rl_slot_put(rl, id & RL_SLOT_MASK);
		rl_result_set(res, 451, "4.3.0", "out of memory, try again later");
		goto refuse;
	}
	relay_msg_free(msg);
	return 0;
refuse:
	relay_msg_free(msg);
	return -1;
}

void
relay_link_cancel(void *arg, void *cbarg)
{
	struct relay_link *rl = arg;
	uint32_t i;

	for (i = 0; i < rl->n_slots; i++) {
		if (!rl->slots[i].busy || rl->slots[i].cbarg != cbarg)
			continue;
		/* Best effort: when the link is dead there is nothing to cancel. */
		if (!rl->dead)
			(void)ipc_send(rl->ipc, RELAY_LINK_CANCEL,
			    rl->slots[i].gen << RL_SLOT_BITS | i, -1, NULL, 0);
		rl_slot_put(rl, i);
	}
	rl_drain_check(rl);
}

void
relay_link_client_drain(struct relay_link *rl, void (*done)(void *), void *arg)
{
	rl->drain_done = done;
	rl->drain_arg = arg;
	rl_drain_check(rl);
}

size_t
relay_link_pending(const struct relay_link *rl)
{
	return rl->role == RL_CLIENT ? rl->n_busy : 0;
}

/* ---- The relay side: decoding ------------------------------------------- */

static void
rl_unmap(const void *data, size_t len, void *extra)
{
	size_t off = (size_t)(uintptr_t)extra;

	munmap((void *)((const unsigned char *)data - off), len + off);
}

static void
rl_msg_discard(struct relay_msg *msg)
{
	if (msg == NULL)
		return;
	if (msg->data != NULL)
		evbuffer_free(msg->data);
	free(msg->rcpts);
	free(msg->fields.header_from);
	free(msg->fields.subject);
	free(msg->fields.message_id);
	free(msg);
}

/* An optional header field: NULL (and then "" on the wire), or a string
 * of at most RELAY_LINK_FIELD_MAX - 1 bytes. -1 out of memory. */
static int
rl_get_field(struct ipc_rd *r, char **out)
{
	char buf[RELAY_LINK_FIELD_MAX];

	*out = NULL;
	if (ipc_get_nstr(r, buf, sizeof(buf)) == NULL) {
		if (buf[0] != '\0')
			r->failed = 1;
		return 0;
	}
	return (*out = strdup(buf)) == NULL ? -1 : 0;
}

/* The memfd: sealed, a regular file of exactly len bytes. Maps it. */
static const unsigned char *
rl_map(int fd, uint64_t len, char *why, size_t whylen)
{
	struct stat st;
	void *p;
	int seals;

	if ((seals = fcntl(fd, F_GET_SEALS)) == -1 || (seals & RL_SEALS) != RL_SEALS) {
		snprintf(why, whylen, "the message fd is not a sealed memfd");
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (uint64_t)st.st_size != len) {
		snprintf(why, whylen, "the message fd holds %lld bytes, not %llu",
		    (long long)st.st_size, (unsigned long long)len);
		return NULL;
	}
	if ((p = mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
		snprintf(why, whylen, "mmap: %s", strerror(errno));
		return NULL;
	}
	return p;
}

int
relay_link_decode(const unsigned char *p, size_t len, int fd,
    const struct relay_link_limits *lim, struct relay_msg **out, char *why, size_t whylen)
{
	struct ipc_rd r = { p, len, 0, 0 }, rr;
	struct relay_msg *msg;
	const unsigned char *body = NULL, *map = NULL;
	uint64_t data_len;
	uint32_t flags, n, rcpts_len;
	size_t i;
	int rc = -1;

	*out = NULL;
	if ((msg = calloc(1, sizeof(*msg))) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -2;
	}
	flags = ipc_get_u32(&r);
	ipc_get_str(&r, msg->queue_id, sizeof(msg->queue_id));
	ipc_get_str(&r, msg->account, sizeof(msg->account));
	ipc_get_str(&r, msg->mail_from, sizeof(msg->mail_from));
	ipc_get_str(&r, msg->client_ip, sizeof(msg->client_ip));
	ipc_get_str(&r, msg->client_name, sizeof(msg->client_name));
	ipc_get_str(&r, msg->helo, sizeof(msg->helo));
	if (rl_get_field(&r, &msg->fields.header_from) == -1 ||
	    rl_get_field(&r, &msg->fields.subject) == -1 ||
	    rl_get_field(&r, &msg->fields.message_id) == -1) {
		snprintf(why, whylen, "out of memory");
		rc = -2;
		goto fail;
	}
	n = ipc_get_u32(&r);
	rcpts_len = ipc_get_u32(&r);
	data_len = ipc_get_u64(&r);
	if (r.failed || (flags & ~RL_FLAGS_KNOWN) != 0) {
		snprintf(why, whylen, "malformed envelope");
		goto fail;
	}
	msg->body_8bit = (flags & RL_FLAG_8BIT) != 0;
	msg->smtputf8 = (flags & RL_FLAG_SMTPUTF8) != 0;
	if (!lim->log_subject) {
		free(msg->fields.subject);
		msg->fields.subject = NULL;
	}
	if (n == 0 || n > lim->max_rcpts) {
		snprintf(why, whylen, "%u recipients, outside 1..%zu", n, lim->max_rcpts);
		goto fail;
	}
	if ((uint64_t)rcpts_len < (uint64_t)n * RL_RCPT_WIRE_MIN ||
	    (uint64_t)rcpts_len > (uint64_t)n * RL_RCPT_WIRE_MAX) {
		snprintf(why, whylen, "recipients of %u bytes for %u recipients", rcpts_len, n);
		goto fail;
	}
	if (data_len > lim->max_data) {
		snprintf(why, whylen, "data of %llu bytes, over %llu",
		    (unsigned long long)data_len, (unsigned long long)lim->max_data);
		goto fail;
	}
	if (fd == -1) {
		if (len - r.off != (uint64_t)rcpts_len + data_len) {
			snprintf(why, whylen, "declares %llu bytes after the envelope, has %zu",
			    (unsigned long long)rcpts_len + data_len, len - r.off);
			goto fail;
		}
		body = p + r.off;
	} else {
		if (r.off != len) {
			snprintf(why, whylen, "%zu bytes after the envelope and an fd", len - r.off);
			goto fail;
		}
		if ((map = rl_map(fd, (uint64_t)rcpts_len + data_len, why, whylen)) == NULL)
			goto fail;
		body = map;
	}
	if ((msg->rcpts = calloc(n, sizeof(*msg->rcpts))) == NULL ||
	    (msg->data = evbuffer_new()) == NULL) {
		snprintf(why, whylen, "out of memory");
		rc = -2;
		goto fail;
	}
	msg->n_rcpts = n;
	rr.p = body;
	rr.len = rcpts_len;
	rr.off = 0;
	rr.failed = 0;
	for (i = 0; i < n; i++) {
		ipc_get_str(&rr, msg->rcpts[i], sizeof(msg->rcpts[i]));
		if (!rr.failed && msg->rcpts[i][0] == '\0')
			rr.failed = 1;
	}
	if (ipc_rd_done(&rr) == -1) {
		snprintf(why, whylen, "malformed recipients");
		goto fail;
	}
	if (map == NULL) {
		if (evbuffer_add(msg->data, body + rcpts_len, (size_t)data_len) == -1) {
			snprintf(why, whylen, "out of memory");
			rc = -2;
			goto fail;
		}
	} else if (data_len > 0) {
		/* The mapping now belongs to the data; rl_unmap releases it. */
		if (evbuffer_add_reference(msg->data, map + rcpts_len, (size_t)data_len, rl_unmap,
		    (void *)(uintptr_t)rcpts_len) == -1) {
			snprintf(why, whylen, "out of memory");
			rc = -2;
			goto fail;
		}
		map = NULL;
	} else {
		munmap((void *)map, rcpts_len);
		map = NULL;
	}
	*out = msg;
	return 0;
fail:
	if (map != NULL)
		munmap((void *)map, (size_t)rcpts_len + (size_t)data_len);
	rl_msg_discard(msg);
	return rc;
}

/* ---- The relay side: the loop -------------------------------------------- */

static void
rl_send_result(struct relay_link *rl, uint32_t id, const struct relay_result *res)
{
	unsigned char buf[RL_RESULT_MAX];
	struct ipc_buf b = { buf, 0, sizeof(buf), 0 };

	if (rl->dead)
		return;
	ipc_put_u32(&b, (uint32_t)res->code);
	ipc_put_str(&b, res->enhanced);
	ipc_put_str(&b, res->text);
	if (b.failed || ipc_send(rl->ipc, RELAY_LINK_RESULT, id, -1, b.p, b.len) == -1)
		fatal("relay_link: cannot queue the result of submit %u", id);
}

static struct rl_entry *
rl_entry_get(struct relay_link *rl, uint32_t id)
{
	struct rl_entry *e;

	if ((e = TAILQ_FIRST(&rl->spare)) != NULL)
		TAILQ_REMOVE(&rl->spare, e, entry);
	else if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	e->rl = rl;
	e->id = id;
	TAILQ_INSERT_TAIL(&rl->inflight, e, entry);
	return e;
}

static void
rl_entry_put(struct relay_link *rl, struct rl_entry *e)
{
	TAILQ_REMOVE(&rl->inflight, e, entry);
	TAILQ_INSERT_HEAD(&rl->spare, e, entry);
}

/* relay_cb: the relay's answer to one message. */
static void
rl_server_done(void *arg, const struct relay_result *res)
{
	struct rl_entry *e = arg;
	struct relay_link *rl = e->rl;

	rl_send_result(rl, e->id, res);
	rl_entry_put(rl, e);
}

/* The front end is gone: nobody waits for these replies (relay.h: queued
 * messages stay queued, direct ones are abandoned). */
static void
rl_server_cancel_all(struct relay_link *rl)
{
	struct rl_entry *e;

	while ((e = TAILQ_FIRST(&rl->inflight)) != NULL) {
		rl->hooks.cancel(rl->hooks.arg, e);
		rl_entry_put(rl, e);
	}
}

/*
 * The current limits, which the front end may not have applied yet (its
 * configuration can be older than ours after a SIGHUP): -1 with the reply
 * the front end gives for them, else 0.
 */
static int
rl_over_limit(struct relay_link *rl, const struct relay_msg *msg, struct relay_result *res)
{
	size_t len = evbuffer_get_length(msg->data);

	if (msg->n_rcpts > rl->lim.max_rcpts) {
		log_warn("event=relay_link_over_limit queue_id=%s client=%s rcpts=%zu "
		    "max_recipients=%zu", msg->queue_id, msg->client_ip, msg->n_rcpts,
		    rl->lim.max_rcpts);
		rl_result_set(res, 452, "4.5.3", "Too many recipients");
		return -1;
	}
	if (len > rl->lim.max_data) {
		log_warn("event=relay_link_over_limit queue_id=%s client=%s size=%zu max=%llu",
		    msg->queue_id, msg->client_ip, len, (unsigned long long)rl->lim.max_data);
		rl_result_set(res, 552, "5.3.4", "Message too big for system");
		return -1;
	}
	return 0;
}

static void
rl_server_submit(struct relay_link *rl, const struct ipc_msg *m)
{
	struct relay_result res;
	struct relay_msg *msg;
	struct rl_entry *e;
	char why[RL_WHY_MAX];
	int rc;

	rc = relay_link_decode(m->data, m->len, m->fd, &rl->wire, &msg, why, sizeof(why));
	if (rc == -1) {
		rl_refuse(rl, m->type, why);
		return;
	}
	if (rc == 0 && rl_over_limit(rl, msg, &res) == -1) {
		relay_msg_free(msg);
		rl_send_result(rl, m->id, &res);
		return;
	}
	if (rc == -2 || (e = rl_entry_get(rl, m->id)) == NULL) {
		log_err("event=relay_link_refused id=%u error=\"%s\"", m->id,
		    rc == -2 ? why : "out of memory");
		relay_msg_free(msg);
		rl_result_set(&res, 451, "4.3.0", "out of memory, try again later");
		rl_send_result(rl, m->id, &res);
		return;
	}
	if (rl->hooks.submit(rl->hooks.arg, msg, rl_server_done, e, &res) == -1) {
		rl_entry_put(rl, e);
		rl_send_result(rl, m->id, &res);
	}
}

static void
rl_server_recv(struct ipc *ipc, const struct ipc_msg *m, void *arg)
{
	struct relay_link *rl = arg;
	struct rl_entry *e;

	switch (m->type) {
	case RELAY_LINK_SUBMIT:
		rl_server_submit(rl, m);
		break;
	case RELAY_LINK_CANCEL:
		/* Not found: its result is already on its way back. */
		TAILQ_FOREACH(e, &rl->inflight, entry) {
			if (e->id == m->id) {
				rl->hooks.cancel(rl->hooks.arg, e);
				rl_entry_put(rl, e);
				break;
			}
		}
		break;
	default:
		rl_refuse(rl, m->type, "unexpected type");
		break;
	}
	if (m->fd >= 0)
		close(m->fd);
}

static int
rl_relay_submit(void *arg, struct relay_msg *msg, relay_cb *cb, void *cbarg,
    struct relay_result *res)
{
	return relay_submit(arg, msg, cb, cbarg, res);
}

static void
rl_relay_cancel(void *arg, void *cbarg)
{
	relay_cancel(arg, cbarg);
}

void
relay_link_server_set_hooks(struct relay_link *rl, const struct relay_link_hooks *h)
{
	rl->hooks = *h;
}

void
relay_link_server_set_config(struct relay_link *rl, const struct config *cfg)
{
	rl->lim.max_rcpts = (size_t)cfg->max_recipients;
	rl->lim.max_data = cfg->max_message_size + RELAY_LINK_DATA_SLACK;
	rl->lim.log_subject = cfg->log_subject;
	rl->wire.max_rcpts = RELAY_LINK_RCPTS_MAX;
	rl->wire.max_data = RELAY_LINK_DATA_MAX;
	rl->wire.log_subject = cfg->log_subject;
}

struct relay_link *
relay_link_server_new(struct event_base *base, int fd, struct relay *r,
    const struct config *cfg)
{
	struct relay_link *rl;

	if ((rl = calloc(1, sizeof(*rl))) == NULL) {
		close(fd);
		return NULL;
	}
	rl->role = RL_SERVER;
	rl->base = base;
	rl->hooks.submit = rl_relay_submit;
	rl->hooks.cancel = rl_relay_cancel;
	rl->hooks.arg = r;
	rl->free_head = RL_NO_SLOT;
	TAILQ_INIT(&rl->inflight);
	TAILQ_INIT(&rl->spare);
	relay_link_server_set_config(rl, cfg);
	if ((rl->ipc = ipc_new(base, fd, "smtp", relay_link_server_rules,
	    relay_link_n_server_rules, rl_server_recv, rl_ipc_event, rl)) == NULL) {
		close(fd);
		free(rl);
		return NULL;
	}
	return rl;
}

void
relay_link_free(struct relay_link *rl)
{
	struct rl_entry *e;

	if (rl == NULL)
		return;
	if (rl->role == RL_SERVER)
		rl_server_cancel_all(rl);
	while ((e = TAILQ_FIRST(&rl->spare)) != NULL) {
		TAILQ_REMOVE(&rl->spare, e, entry);
		free(e);
	}
	if (rl->ipc != NULL)
		ipc_free(rl->ipc);
	if (rl->ev_drain != NULL)
		event_free(rl->ev_drain);
	free(rl->slots);
	free(rl->head);
	free(rl);
}
