#include "pgl_notify.h"

#include "pgl_err.h"
#include "pgl_log.h"

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

/* Loop thread only (pgl_notify.h), so a plain flag. */
static bool warned;

static void send_state(const char *state)
{
    /* 0: NOTIFY_SOCKET is unset, nothing to do; > 0: sent. The variable is
     * kept (unset_environment = 0): later states go to the same place. */
    int rc = sd_notify(0, state);
    if (rc < 0 && !warned) {
        warned = true;
        pgl_log_warning(NULL, "cannot notify the service manager (NOTIFY_SOCKET): %s",
                        pgl_strerror(rc));
    }
}

void pgl_notify_ready(void)
{
    send_state("READY=1\nSTATUS=ready");
}

void pgl_notify_reloading(void)
{
    /* MONOTONIC_USEC lets the manager tell this reload from an earlier one
     * (systemd >= 253 requires it for Type=notify-reload). */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char state[96];
    snprintf(state, sizeof state, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    send_state(state);
}

void pgl_notify_stopping(void)
{
    send_state("STOPPING=1\nSTATUS=stopping");
}
