#ifndef AD_NOTIFY_H
#define AD_NOTIFY_H

/*
 * Messages to the service manager (sd_notify(3)): readiness, reloads, stopping, a status line
 * and the watchdog keep-alive. Each is a no-op when NOTIFY_SOCKET is unset, so the daemon runs
 * the same way under systemd, in a container or from a shell.
 */

#include <stdint.h>

/* status: a short human line shown by `systemctl status` (may be NULL). */
void ad_notify_ready(const char *status);
void ad_notify_reloading(void);
void ad_notify_stopping(void);
void ad_notify_status(const char *status);
void ad_notify_watchdog(void);

/* The watchdog period in microseconds when the unit sets WatchdogSec for this process, else 0.
 * Keep-alives should go out at half of it. */
uint64_t ad_notify_watchdog_usec(void);

#endif
