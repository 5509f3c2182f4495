/*
 * sdnotify.h: tell systemd (Type=notify) how the daemon is doing, by the
 * protocol of sd_notify(3): READY=1 once it serves, RELOADING=1 ... READY=1
 * around a SIGHUP reload, STOPPING=1 when it starts to drain, and WATCHDOG=1
 * when the parent's heartbeat timer says every process is alive (server.c,
 * heartbeat.h), so that a stuck loop in any of them stops the pings and
 * systemd restarts the service. Without NOTIFY_SOCKET in the environment
 * every call does nothing.
 */
#ifndef SMTPVAULT_SDNOTIFY_H
#define SMTPVAULT_SDNOTIFY_H

#include <stdint.h>

struct sdnotify;

/* NULL only when out of memory. */
struct sdnotify	*sdnotify_new(void);
/* systemd's watchdog interval for this process (WatchdogSec=, through
 * WATCHDOG_USEC and WATCHDOG_PID), or 0 when it has none. */
uint64_t	 sdnotify_watchdog_usec(const struct sdnotify *sn);
/* WATCHDOG=1, when there is a watchdog. */
void		 sdnotify_watchdog(struct sdnotify *sn);
void		 sdnotify_ready(struct sdnotify *sn);
void		 sdnotify_reloading(struct sdnotify *sn);
void		 sdnotify_stopping(struct sdnotify *sn);
/* NULL is fine. */
void		 sdnotify_free(struct sdnotify *sn);

#endif
