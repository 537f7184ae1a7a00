#include "nginx_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model_fixture.h"
#include "net_fixture.h"

struct nginx_fixture {
    char *prefix; /* config, logs, temp folders */
    char *root;
    char binary[4096];
    int port;
    pid_t pid;
};

static bool find_binary(char *out, size_t size)
{
    const char *env = getenv("NGINX");
    if (env && *env) {
        snprintf(out, size, "%s", env);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "");
    bool found = false;
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, size, "%s/nginx", dir);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    if (!found) {
        snprintf(out, size, "/usr/sbin/nginx");
        found = access(out, X_OK) == 0;
    }
    return found;
}

bool nginx_fixture_available(void)
{
    char path[4096];
    return find_binary(path, sizeof path);
}

static int write_config(const struct nginx_fixture *n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/nginx.conf", n->prefix);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    /* As root the workers would run as nobody, who cannot read a 0700 temporary folder. */
    if (geteuid() == 0)
        fprintf(f, "user root root;\n");
    fprintf(f,
            "worker_processes 1;\n"
            "error_log %1$s/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "  client_body_temp_path %1$s/body; proxy_temp_path %1$s/proxy;\n"
            "  fastcgi_temp_path %1$s/fastcgi; uwsgi_temp_path %1$s/uwsgi;\n"
            "  scgi_temp_path %1$s/scgi;\n"
            "  log_format t '$request_method $request_uri $status \"$http_authorization\" "
            "\"$http_x_test\" \"$http_if_none_match\"';\n"
            "  access_log %1$s/access.log t;\n"
            "  server {\n"
            "    listen 127.0.0.1:%2$d; root %3$s;\n"
            "    location /fail503/ { return 503; }\n"
            "  }\n"
            "}\n",
            n->prefix, n->port, n->root);
    return fclose(f) == 0 ? 0 : -1;
}

static bool accepts(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Runs nginx; 0 once it accepts, -1 when it exits first or takes over 10 s. */
static int launch(struct nginx_fixture *n)
{
    char conf[4200], globals[4400], log[4200];
    snprintf(conf, sizeof conf, "%s/nginx.conf", n->prefix);
    snprintf(globals, sizeof globals, "daemon off; pid %s/nginx.pid;", n->prefix);
    snprintf(log, sizeof log, "%s/stderr.log", n->prefix);
    if (write_config(n) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* nginx goes when the test goes, also when it crashes. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(n->binary, "nginx", "-p", n->prefix, "-c", conf, "-g", globals, (char *)NULL);
        _exit(127);
    }
    n->pid = pid;
    struct timespec pause = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 1000; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            n->pid = 0;
            return -1;
        }
        if (accepts(n->port))
            return 0;
        nanosleep(&pause, NULL);
    }
    nginx_fixture_stop(n);
    return -1;
}

struct nginx_fixture *nginx_fixture_start(const char *root)
{
    struct nginx_fixture *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->prefix = fixture_tempdir();
    n->root = strdup(root);
    if (!n->prefix || !n->root || !find_binary(n->binary, sizeof n->binary))
        goto fail;
    /* Another process may take the free port between our look and nginx's bind: try again. */
    for (int attempt = 0; attempt < 5; attempt++) {
        n->port = net_fixture_free_port();
        if (n->port > 0 && launch(n) == 0)
            return n;
    }
    fprintf(stderr, "nginx did not start; see %s/stderr.log and error.log\n", n->prefix);
fail:
    nginx_fixture_destroy(n);
    return NULL;
}

int nginx_fixture_port(const struct nginx_fixture *n)
{
    return n->port;
}

int nginx_fixture_stop(struct nginx_fixture *n)
{
    int status;
    if (!n->pid)
        return 0;
    kill(n->pid, SIGTERM);
    pid_t r;
    while ((r = waitpid(n->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    n->pid = 0;
    /* The master exits after its workers, so the port is closed now. */
    return r < 0 ? -1 : 0;
}

int nginx_fixture_restart(struct nginx_fixture *n)
{
    nginx_fixture_stop(n);
    return launch(n);
}

size_t nginx_fixture_count(const struct nginx_fixture *n, const char *needle)
{
    char path[4200], line[8192];
    size_t count = 0;
    snprintf(path, sizeof path, "%s/access.log", n->prefix);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            count++;
    fclose(f);
    return count;
}

void nginx_fixture_destroy(struct nginx_fixture *n)
{
    if (!n)
        return;
    nginx_fixture_stop(n);
    if (n->prefix)
        fixture_remove(n->prefix);
    free(n->prefix);
    free(n->root);
    free(n);
}
