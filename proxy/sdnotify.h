/*
 * sdnotify.h: tell systemd (Type=notify) how the daemon is doing, by the
 * protocol of sd_notify(3): READY=1 once it serves, RELOADING=1 ... READY=1
 * around a SIGHUP reload, STOPPING=1 when it starts to drain, and WATCHDOG=1
 * every half WATCHDOG_USEC from a timer on the event loop, so that a stuck
 * loop stops the pings and systemd restarts the service. Without
 * NOTIFY_SOCKET in the environment every call does nothing.
 */
#ifndef SMTPVAULT_SDNOTIFY_H
#define SMTPVAULT_SDNOTIFY_H

struct event_base;
struct sdnotify;

/* NULL only when out of memory. Starts the watchdog timer when systemd
 * asked for one (WatchdogSec=). */
struct sdnotify	*sdnotify_new(struct event_base *base);
void		 sdnotify_ready(struct sdnotify *sn);
void		 sdnotify_reloading(struct sdnotify *sn);
void		 sdnotify_stopping(struct sdnotify *sn);
/* Stops the timer; call before the event base is freed. NULL is fine. */
void		 sdnotify_free(struct sdnotify *sn);

#endif
