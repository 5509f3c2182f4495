/*
 * sdnotify.c: the daemon's side of systemd's notification protocol (see
 * sdnotify.h). libsystemd does the protocol; this file says what. When to
 * ping the watchdog is the parent's decision (server.c, heartbeat.h): at
 * half of what systemd allows, as sd_watchdog_enabled(3) recommends, and
 * only while every child answers.
 */
#include "sdnotify.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"

#define USEC_PER_SEC		UINT64_C(1000000)
#define NSEC_PER_USEC		UINT64_C(1000)

struct sdnotify {
	uint64_t	 watchdog_usec;	/* WATCHDOG_USEC for this process, or 0 */
	int		 enabled;	/* NOTIFY_SOCKET is set */
	int		 warned;	/* a failed send was logged once already */
};

static void
sdnotify_send(struct sdnotify *sn, const char *state)
{
	int r;

	if (sn == NULL || !sn->enabled)
		return;
	if ((r = sd_notify(0, state)) < 0 && !sn->warned) {
		sn->warned = 1;
		log_warn("event=sd_notify error=\"%s\"", strerror(-r));
	}
}

struct sdnotify *
sdnotify_new(void)
{
	struct sdnotify *sn;
	const char *sock;
	uint64_t usec = 0;

	if ((sn = calloc(1, sizeof(*sn))) == NULL)
		return NULL;
	sock = getenv("NOTIFY_SOCKET");
	sn->enabled = sock != NULL && sock[0] != '\0';
	/* WATCHDOG_PID names the process systemd watches: only that one. */
	if (sn->enabled && sd_watchdog_enabled(0, &usec) > 0)
		sn->watchdog_usec = usec;
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
