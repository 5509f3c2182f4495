/*
 * queue_ctl.c: the daemon side of the control socket (see queue_ctl.h).
 * Each client sends one request; the answer is written and the connection
 * closed. A "delete" answers only once the message is gone from the disk.
 */
#include "queue_ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#include "audit.h"
#include "log.h"
#include "queue.h"
#include "spool.h"
#include "util.h"

#define CTL_PROC_FD_FMT	"/proc/self/fd/%d/%s"

struct ctl_conn {
	TAILQ_ENTRY(ctl_conn)	entry;
	struct queue_ctl	*c;
	struct bufferevent	*bev;
	uid_t			uid;
	int			waiting;	/* for a delete to finish */
	int			closing;	/* free once the output is written */
};
TAILQ_HEAD(ctl_conn_list, ctl_conn);

struct queue_ctl {
	struct event_base	*base;
	struct queue		*q;
	struct evconnlistener	*listener;
	struct ctl_conn_list	conns;
	size_t			n_conns;
	int			dirfd;
	uid_t			owner;
	gid_t			group;
};

int
queue_ctl_addr(const char *spool_dir, int dirfd, struct sockaddr_un *sun, socklen_t *len)
{
	int n;

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	n = snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/%s", spool_dir, QUEUE_CTL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof(sun->sun_path)) {
		/* Linux resolves the directory through the descriptor. */
		n = snprintf(sun->sun_path, sizeof(sun->sun_path), CTL_PROC_FD_FMT, dirfd,
		    QUEUE_CTL_SOCKET);
		if (dirfd < 0 || n < 0 || (size_t)n >= sizeof(sun->sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
	}
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
	return 0;
}

static void
conn_free(struct ctl_conn *cc)
{
	struct queue_ctl *c = cc->c;

	if (cc->waiting)
		queue_delete_cancel(c->q, cc);
	TAILQ_REMOVE(&c->conns, cc, entry);
	c->n_conns--;
	bufferevent_free(cc->bev);
	free(cc);
}

/* Write one JSON value as a line. */
static void
conn_line(struct ctl_conn *cc, json_t *v)
{
	char *s;

	if (v == NULL)
		return;
	if ((s = json_dumps(v, AUDIT_JSON_FLAGS)) != NULL) {
		evbuffer_add(bufferevent_get_output(cc->bev), s, strlen(s));
		evbuffer_add(bufferevent_get_output(cc->bev), "\n", 1);
		free(s);
	}
	json_decref(v);
}

/* The final status line; the connection closes once it is written. */
static void
conn_finish(struct ctl_conn *cc, int ok, int status, const char *error, json_int_t count)
{
	json_t *v;

	if (ok)
		v = json_pack("{s:b, s:I}", "ok", 1, "count", count);
	else
		v = json_pack("{s:b, s:i, s:s}", "ok", 0, "status", status, "error", error);
	conn_line(cc, v);
	cc->closing = 1;
	bufferevent_disable(cc->bev, EV_READ);
	bufferevent_enable(cc->bev, EV_WRITE);
}

static int
list_cb(void *arg, json_t *entry)
{
	conn_line(arg, entry);
	return 0;
}

static void
delete_done(void *arg, int rc)
{
	struct ctl_conn *cc = arg;
	int error = errno;

	cc->waiting = 0;
	if (rc == 0)
		conn_finish(cc, 1, 0, NULL, 1);
	else
		conn_finish(cc, 0, 1, error == ENOENT ? "no such message (delivered or removed "
		    "meanwhile)" : strerror(error), 0);
}

static void
conn_request(struct ctl_conn *cc, const char *line, size_t len)
{
	struct queue *q = cc->c->q;
	json_error_t jerr;
	json_t *req;
	const char *cmd = NULL, *id = NULL, *by = NULL;
	char who[QUEUE_BY_MAX];
	int all = 0;
	size_t n;

	if ((req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL ||
	    json_unpack(req, "{s:s, s?:s, s?:b, s?:s}", "cmd", &cmd, "id", &id, "all", &all,
	    "by", &by) == -1) {
		conn_finish(cc, 0, 2, "malformed request", 0);
		goto done;
	}
	if (id != NULL && !spool_id_valid(id)) {
		conn_finish(cc, 0, 2, "not a queue id", 0);
		goto done;
	}
	if (strcmp(cmd, "list") == 0) {
		n = queue_list(q, list_cb, cc);
		conn_finish(cc, 1, 0, NULL, (json_int_t)n);
	} else if (strcmp(cmd, "retry") == 0 && all && id == NULL) {
		n = queue_retry_all(q);
		log_info("event=queue_retry_all messages=%zu uid=%u", n, (unsigned)cc->uid);
		conn_finish(cc, 1, 0, NULL, (json_int_t)n);
	} else if (strcmp(cmd, "retry") == 0 && id != NULL && !all) {
		if (queue_retry(q, id) == -1)
			conn_finish(cc, 0, 1, "no such message", 0);
		else
			conn_finish(cc, 1, 0, NULL, 1);
	} else if (strcmp(cmd, "delete") == 0 && id != NULL) {
		/* Who asked goes into the audit log; the peer's uid vouches. */
		snprintf(who, sizeof(who), "%s (uid %u)", by != NULL ? by : "cli",
		    (unsigned)cc->uid);
		if (queue_delete(q, id, who, delete_done, cc) == -1)
			conn_finish(cc, 0, 1, "no such message", 0);
		else
			cc->waiting = 1;
	} else {
		conn_finish(cc, 0, 2, "unknown request", 0);
	}
done:
	json_decref(req);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	if (cc->closing || cc->waiting)
		return;
	if ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) == NULL) {
		if (evbuffer_get_length(in) > QUEUE_CTL_REQUEST_MAX)
			conn_finish(cc, 0, 2, "request too long", 0);
		return;
	}
	if (len > QUEUE_CTL_REQUEST_MAX)
		conn_finish(cc, 0, 2, "request too long", 0);
	else
		conn_request(cc, line, len);
	free(line);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;

	if (cc->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(cc);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *cc = arg;

	/* EOF, error or timeout: the client is gone. */
	conn_free(cc);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	struct queue_ctl *c = arg;
	struct ctl_conn *cc;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct timeval tv = { QUEUE_CTL_TIMEOUT, 0 };

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		log_warn("event=queue_ctl_refused uid=%d", clen == sizeof(cred) ? (int)cred.uid : -1);
		close(fd);
		return;
	}
	if (c->n_conns >= QUEUE_CTL_CONN_MAX || (cc = calloc(1, sizeof(*cc))) == NULL) {
		close(fd);
		return;
	}
	cc->c = c;
	cc->uid = cred.uid;
	if ((cc->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		close(fd);
		free(cc);
		return;
	}
	TAILQ_INSERT_TAIL(&c->conns, cc, entry);
	c->n_conns++;
	bufferevent_setcb(cc->bev, conn_read_cb, conn_write_cb, conn_event_cb, cc);
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_setwatermark(cc->bev, EV_READ, 0, QUEUE_CTL_REQUEST_MAX + 2);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

struct queue_ctl *
queue_ctl_new(struct event_base *base, struct queue *q, const char *spool_dir, int dirfd,
    char *err, size_t errlen)
{
	struct queue_ctl *c;
	struct sockaddr_un sun;
	struct stat st;
	socklen_t len;
	int fd = -1;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->base = base;
	c->q = q;
	c->dirfd = dirfd;
	TAILQ_INIT(&c->conns);
	if (fstat(dirfd, &st) == 0) {
		c->owner = st.st_uid;
		c->group = st.st_gid;
	}
	if (queue_ctl_addr(spool_dir, dirfd, &sun, &len) == -1) {
		snprintf(err, errlen, "%s: path too long for a control socket", spool_dir);
		goto fail;
	}
	/* We hold the spool lock: a socket file left here is stale. */
	(void)unlinkat(dirfd, QUEUE_CTL_SOCKET, 0);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sun, len) == -1 ||
	    fchmodat(dirfd, QUEUE_CTL_SOCKET, 0600, 0) == -1 ||
	    listen(fd, QUEUE_CTL_BACKLOG) == -1) {
		snprintf(err, errlen, "control socket %s/%s: %s", spool_dir, QUEUE_CTL_SOCKET,
		    strerror(errno));
		goto fail;
	}
	if (geteuid() == 0 && c->owner != 0)
		(void)!fchownat(dirfd, QUEUE_CTL_SOCKET, c->owner, c->group, 0);
	if ((c->listener = evconnlistener_new(base, accept_cb, c, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_CLOSE_ON_EXEC, 0, fd)) == NULL) {
		snprintf(err, errlen, "control socket: cannot listen");
		goto fail;
	}
	return c;
fail:
	if (fd != -1 && c->listener == NULL)
		close(fd);
	(void)unlinkat(dirfd, QUEUE_CTL_SOCKET, 0);
	free(c);
	return NULL;
}

void
queue_ctl_free(struct queue_ctl *c)
{
	struct ctl_conn *cc;

	if (c == NULL)
		return;
	while ((cc = TAILQ_FIRST(&c->conns)) != NULL)
		conn_free(cc);
	evconnlistener_free(c->listener);
	(void)unlinkat(c->dirfd, QUEUE_CTL_SOCKET, 0);
	free(c);
}
