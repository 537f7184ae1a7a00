#include "rdkafka_tool.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *tool_name = "tool";

static volatile sig_atomic_t teardown_status;

void tool_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", tool_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void tool_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    fprintf(stderr, "%s: rdkafka %s: %s\n", tool_name, fac, buf);
}

/* Runs in signal context: only async-signal-safe calls. */
static void teardown_expired(int sig)
{
    static const char msg[] = ": teardown took too long, exiting without it\n";
    (void)sig;
    if (write(STDERR_FILENO, tool_name, strlen(tool_name)) < 0 ||
        write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* Nothing left to report it to. */
    }
    _exit(teardown_status);
}

int tool_teardown_guard_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = teardown_expired;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0) {
        tool_diag("sigaction: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void tool_teardown_begin(int status)
{
    teardown_status = status;
    alarm(TOOL_TEARDOWN_BUDGET_S);
}

void tool_teardown_end(void)
{
    alarm(0);
}
