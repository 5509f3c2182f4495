/*
 * sdnotify.c: the daemon's side of systemd's notification protocol (see
 * sdnotify.h). The protocol is small and stable (sd_notify(3), "Notes";
 * systemd documents it as an interface for implementations without
 * libsystemd): each state is one datagram to the AF_UNIX socket named by
 * $NOTIFY_SOCKET, a path or, with a leading '@', an abstract name. Doing it
 * here keeps libsystemd and what it pulls in (libgcrypt, liblzma, libzstd,
 * liblz4, libcap) out of the daemon's memory. When to ping the watchdog is
 * the parent's decision (server.c, heartbeat.h): at half of what systemd
 * allows, as sd_watchdog_enabled(3) recommends, and only while every child
 * answers.
 */
#include "sdnotify.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define USEC_PER_SEC		UINT64_C(1000000)
#define NSEC_PER_USEC		UINT64_C(1000)

struct sdnotify {
	uint64_t		 watchdog_usec;	/* WATCHDOG_USEC for this process, or 0 */
	int			 enabled;	/* NOTIFY_SOCKET names a socket */
	int			 warned;	/* a failed send was logged once already */
	struct sockaddr_un	 addr;
	socklen_t		 addrlen;
};

/* The socket of $NOTIFY_SOCKET: 0, or -1 when it is not one we can use. */
static int
sdnotify_addr(struct sdnotify *sn, const char *name)
{
	size_t len = strlen(name);

	if (len < 2 || len >= sizeof(sn->addr.sun_path) || (name[0] != '/' && name[0] != '@'))
		return -1;
	memset(&sn->addr, 0, sizeof(sn->addr));
	sn->addr.sun_family = AF_UNIX;
	memcpy(sn->addr.sun_path, name, len);
	/* An abstract name has no NUL at the end; a path has one. */
	if (name[0] == '@')
		sn->addr.sun_path[0] = '\0';
	sn->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
	    (name[0] == '@' ? 0 : 1));
	return 0;
}

/* One datagram, as sd_notify(3) sends it; 0 or -errno. */
static int
sdnotify_datagram(const struct sdnotify *sn, const char *state)
{
	struct iovec iov = { (void *)(uintptr_t)state, strlen(state) };
	struct msghdr msg;
	ssize_t n;
	int fd, rc = 0;

	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -errno;
	memset(&msg, 0, sizeof(msg));
	msg.msg_name = (void *)(uintptr_t)&sn->addr;
	msg.msg_namelen = sn->addrlen;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	do {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	} while (n == -1 && errno == EINTR);
	if (n == -1)
		rc = -errno;
	else if ((size_t)n != iov.iov_len)
		rc = -EMSGSIZE;
	close(fd);
	return rc;
}

static void
sdnotify_send(struct sdnotify *sn, const char *state)
{
	int r;

	if (sn == NULL || !sn->enabled)
		return;
	if ((r = sdnotify_datagram(sn, state)) < 0 && !sn->warned) {
		sn->warned = 1;
		log_warn("event=sd_notify error=\"%s\"", strerror(-r));
	}
}

/*
 * The watchdog interval systemd asked for, as sd_watchdog_enabled(3) reads
 * it: $WATCHDOG_USEC, for this process when $WATCHDOG_PID names it or is
 * unset. 0 when there is none.
 */
static uint64_t
sdnotify_watchdog_env(void)
{
	const char *s = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	uintmax_t v;
	char *end;

	if (s == NULL || *s == '\0')
		return 0;
	if (pid != NULL && *pid != '\0') {
		errno = 0;
		v = strtoumax(pid, &end, 10);
		if (errno != 0 || *end != '\0' || v != (uintmax_t)getpid())
			return 0;
	}
	errno = 0;
	v = strtoumax(s, &end, 10);
	if (errno != 0 || *end != '\0' || *s == '-' || v > UINT64_MAX)
		return 0;
	return (uint64_t)v;
}

struct sdnotify *
sdnotify_new(void)
{
	struct sdnotify *sn;
	const char *sock;

	if ((sn = calloc(1, sizeof(*sn))) == NULL)
		return NULL;
	sock = getenv("NOTIFY_SOCKET");
	if (sock != NULL && sock[0] != '\0') {
		if (sdnotify_addr(sn, sock) == 0)
			sn->enabled = 1;
		else
			log_warn("event=sd_notify error=\"NOTIFY_SOCKET is not an AF_UNIX socket "
			    "name\"");
	}
	if (sn->enabled)
		sn->watchdog_usec = sdnotify_watchdog_env();
	return sn;
}

uint64_t
sdnotify_watchdog_usec(const struct sdnotify *sn)
{
	return sn != NULL ? sn->watchdog_usec : 0;
}

void
sdnotify_watchdog(struct sdnotify *sn)
{
	if (sn != NULL && sn->watchdog_usec != 0)
		sdnotify_send(sn, "WATCHDOG=1");
}

void
sdnotify_ready(struct sdnotify *sn)
{
	sdnotify_send(sn, "READY=1\nSTATUS=serving");
}

void
sdnotify_reloading(struct sdnotify *sn)
{
	struct timespec ts;
	char msg[128];

	/* systemd 253's Type=notify-reload wants the time of the reload too. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		memset(&ts, 0, sizeof(ts));
	snprintf(msg, sizeof(msg), "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * USEC_PER_SEC +
	    (unsigned long long)ts.tv_nsec / NSEC_PER_USEC);
	sdnotify_send(sn, msg);
}

void
sdnotify_stopping(struct sdnotify *sn)
{
	sdnotify_send(sn, "STOPPING=1\nSTATUS=draining");
}

void
sdnotify_free(struct sdnotify *sn)
{
	free(sn);
}
