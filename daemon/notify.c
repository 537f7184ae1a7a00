#include "daemon/notify.h"

#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#define AD_LOG_MODULE "notify"
#include "base/log.h"

static void send_state(const char *state)
{
    int r = sd_notify(0, state);
    if (r < 0)
        AD_WARN("cannot notify the service manager (%s): error %d", state, -r);
}

static void send_with_status(const char *state, const char *status)
{
    char msg[512];
    if (status)
        snprintf(msg, sizeof msg, "%s\nSTATUS=%s", state, status);
    else
        snprintf(msg, sizeof msg, "%s", state);
    send_state(msg);
}

void ad_notify_ready(const char *status)
{
    send_with_status("READY=1", status);
}

void ad_notify_reloading(void)
{
    /* systemd 253+ (Type=notify-reload) wants the monotonic time with RELOADING=1; older
     * managers ignore the extra field. */
    struct timespec ts;
    char msg[96];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    send_with_status(msg, "reloading configuration");
}

void ad_notify_stopping(void)
{
    send_with_status("STOPPING=1", "stopping");
}

void ad_notify_status(const char *status)
{
    char msg[512];
    snprintf(msg, sizeof msg, "STATUS=%s", status);
    send_state(msg);
}

void ad_notify_watchdog(void)
{
    send_state("WATCHDOG=1");
}

uint64_t ad_notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
