/*
 * sdnotify.c: the daemon's side of systemd's notification protocol (see
 * sdnotify.h). libsystemd does the protocol; this file decides when. The
 * watchdog interval is half of what systemd allows, as sd_watchdog_enabled(3)
 * recommends, so that one late ping is not yet a restart.
 */
#include "sdnotify.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "log.h"

#define USEC_PER_SEC		UINT64_C(1000000)
#define NSEC_PER_USEC		UINT64_C(1000)
#define WATCHDOG_DIVISOR	2	/* ping at half the interval systemd allows */
#define WATCHDOG_MIN_USEC	UINT64_C(1000)	/* no busier timer than 1 ms */

struct sdnotify {
	struct event	*ev_watchdog;
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

static void
sdnotify_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sdnotify_send(arg, "WATCHDOG=1");
}

struct sdnotify *
sdnotify_new(struct event_base *base)
{
	struct sdnotify *sn;
	struct timeval tv;
	const char *sock;
	uint64_t usec = 0;

	if ((sn = calloc(1, sizeof(*sn))) == NULL)
		return NULL;
	sock = getenv("NOTIFY_SOCKET");
	sn->enabled = sock != NULL && sock[0] != '\0';
	if (!sn->enabled || sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return sn;
	usec /= WATCHDOG_DIVISOR;
	if (usec < WATCHDOG_MIN_USEC)
		usec = WATCHDOG_MIN_USEC;
	tv.tv_sec = (time_t)(usec / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(usec % USEC_PER_SEC);
	if ((sn->ev_watchdog = event_new(base, -1, EV_PERSIST, sdnotify_watchdog_cb,
	    sn)) == NULL || event_add(sn->ev_watchdog, &tv) == -1) {
		log_warn("event=watchdog error=\"cannot start the watchdog timer\"");
		return sn;
	}
	log_debug("event=watchdog interval_us=%llu", (unsigned long long)usec);
	return sn;
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
	if (sn == NULL)
		return;
	if (sn->ev_watchdog != NULL)
		event_free(sn->ev_watchdog);
	free(sn);
}
