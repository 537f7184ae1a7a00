/*
 * The config file watch on a real inotify and a real loop: a Kubernetes ConfigMap update (the
 * atomic writer's `..data` link swap), an editor's rename, an in-place write, a symlink into
 * another folder, and what must not count as a change: the same bytes again, other files in
 * the folder, a file that is briefly missing, an edit a reload has already seen.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "base/sha256.h"
#include "daemon/config_watch.h"

struct fixture {
    char dir[64];
    char path[128]; /* the path the watch is given */
    struct event_base *base;
    struct ad_config_watch *watch;
    int changes;
};

static void on_change(void *arg)
{
    struct fixture *f = arg;
    f->changes++;
}

static void in_dir(const struct fixture *f, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", f->dir, name);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

/* Writes name in the fixture's folder through a temporary file and a rename. */
static void replace_file(const struct fixture *f, const char *name, const char *text)
{
    char tmp[160], path[160];
    in_dir(f, ".tmp-edit", tmp, sizeof tmp);
    in_dir(f, name, path, sizeof path);
    write_file(tmp, text);
    assert_int_equal(rename(tmp, path), 0);
}

static void stop_loop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Runs the loop for ms: long enough for any debounce to end. */
static void run_for(struct fixture *f, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    assert_int_equal(event_base_once(f->base, -1, EV_TIMEOUT, stop_loop, f->base, &tv), 0);
    assert_int_equal(event_base_dispatch(f->base), 0);
}

/* Shorter than the daemon's, to keep the test quick; the logic is the same. */
enum { quiet_ms = 40, settle_ms = quiet_ms + 160 };

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ad-config-watch-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    in_dir(f, "anomalyd.yaml", f->path, sizeof f->path);
    f->base = event_base_new();
    assert_non_null(f->base);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    ad_config_watch_destroy(f->watch);
    event_base_free(f->base);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void start_watch(struct fixture *f, const char *seen)
{
    char err[256];
    f->watch = ad_config_watch_new(f->base, f->path, seen, quiet_ms, on_change, f, err, sizeof err);
    if (!f->watch)
        fail_msg("%s", err);
}

/* The layout Kubernetes' atomic writer makes of a ConfigMap volume, and its update. */
static void configmap_publish(const struct fixture *f, const char *stamp, const char *text)
{
    char path[200], target[64];
    in_dir(f, stamp, path, sizeof path);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/anomalyd.yaml");
    write_file(path, text);
    in_dir(f, "..data_tmp", path, sizeof path);
    assert_int_equal(symlink(stamp, path), 0);
    char data[200];
    in_dir(f, "..data", data, sizeof data);
    assert_int_equal(rename(path, data), 0);
    in_dir(f, "anomalyd.yaml", path, sizeof path);
    snprintf(target, sizeof target, "..data/anomalyd.yaml");
    struct stat st;
    if (lstat(path, &st) < 0)
        assert_int_equal(symlink(target, path), 0);
}

static void remove_tree(const struct fixture *f, const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s/%s", f->dir, name);
    assert_int_equal(system(cmd), 0);
}

/* Lets the debounce end, then checks how many changes were reported in all. */
static void expect_changes(struct fixture *f, int n)
{
    run_for(f, settle_ms);
    assert_int_equal(f->changes, n);
}

/* A ConfigMap update: the new version published, the old one removed, as the kubelet does. */
static void configmap_update(const struct fixture *f, const char *stamp, const char *old_stamp,
                             const char *text)
{
    configmap_publish(f, stamp, text);
    remove_tree(f, old_stamp);
}

static void test_configmap_update(void **state)
{
    struct fixture *f = *state;
    configmap_publish(f, "..2026_01_01_00_00_00.1", "daemon: {}\n");
    start_watch(f, NULL);

    configmap_update(f, "..2026_01_01_00_01_00.2", "..2026_01_01_00_00_00.1",
                     "daemon: {shutdown_timeout: 5s}\n");
    expect_changes(f, 1);

    /* An update whose content is the same (another key of the ConfigMap changed). */
    configmap_update(f, "..2026_01_01_00_02_00.3", "..2026_01_01_00_01_00.2",
                     "daemon: {shutdown_timeout: 5s}\n");
    expect_changes(f, 1);

    configmap_update(f, "..2026_01_01_00_03_00.4", "..2026_01_01_00_02_00.3",
                     "daemon: {shutdown_timeout: 7s}\n");
    expect_changes(f, 2);
}

static void test_editor_rename_and_in_place_write(void **state)
{
    struct fixture *f = *state;
    write_file(f->path, "daemon: {}\n");
    start_watch(f, NULL);

    replace_file(f, "anomalyd.yaml", "daemon: {shutdown_timeout: 5s}\n");
    expect_changes(f, 1);

    write_file(f->path, "daemon: {shutdown_timeout: 6s}\n");
    expect_changes(f, 2);

    /* The same bytes again, a touch, and other files in the folder are no change. */
    write_file(f->path, "daemon: {shutdown_timeout: 6s}\n");
    assert_int_equal(utimes(f->path, NULL), 0);
    replace_file(f, "other.yaml", "x: 1\n");
    expect_changes(f, 2);
}

static void test_debounced(void **state)
{
    struct fixture *f = *state;
    char text[64];
    write_file(f->path, "daemon: {}\n");
    start_watch(f, NULL);
    /* A burst of writes in quick succession is one change, read once it is over. */
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof text, "daemon: {shutdown_timeout: %ds}\n", i + 1);
        write_file(f->path, text);
        run_for(f, quiet_ms / 4);
    }
    assert_int_equal(f->changes, 0);
    expect_changes(f, 1);
}

static void test_missing_file_waits(void **state)
{
    struct fixture *f = *state;
    write_file(f->path, "daemon: {}\n");
    start_watch(f, NULL);
    assert_int_equal(unlink(f->path), 0);
    expect_changes(f, 0);
    /* Back with the content seen before: still nothing to reload. */
    write_file(f->path, "daemon: {}\n");
    expect_changes(f, 0);
    write_file(f->path, "daemon: {shutdown_timeout: 1s}\n");
    expect_changes(f, 1);
}

/* The file replaced by a FIFO, a folder: the watch never blocks on it (a FIFO would block an
 * open(2) until a writer came; the alarm makes that a failure) and reports it once, so that
 * the reload it starts says what is wrong and counts as failed; a good file is seen again. */
static void test_special_files(void **state)
{
    struct fixture *f = *state;
    write_file(f->path, "daemon: {}\n");
    start_watch(f, NULL);
    alarm(30);
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(mkfifo(f->path, 0644), 0);
    expect_changes(f, 1);
    assert_int_equal(utimes(f->path, NULL), 0); /* the same FIFO again: nothing new */
    expect_changes(f, 1);
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(mkdir(f->path, 0755), 0);
    expect_changes(f, 2);
    assert_int_equal(rmdir(f->path), 0);
    write_file(f->path, "daemon: {shutdown_timeout: 1s}\n");
    expect_changes(f, 3);
    alarm(0);
}

static void test_seen_digest_and_mark_seen(void **state)
{
    struct fixture *f = *state;
    char hex[AD_SHA256_HEX_LEN + 1];
    static const char loaded[] = "daemon: {}\n";
    write_file(f->path, "daemon: {shutdown_timeout: 2s}\n");
    /* The daemon passes the digest of what it loaded: the file differs already, so the first
     * event reloads it even if its bytes do not change again. */
    ad_sha256_hex(loaded, strlen(loaded), hex);
    start_watch(f, hex);
    assert_int_equal(utimes(f->path, NULL), 0);
    expect_changes(f, 1);

    /* A reload by SIGHUP took the edit in before the debounce ended: no second reload. */
    write_file(f->path, "daemon: {shutdown_timeout: 3s}\n");
    ad_config_watch_mark_seen(f->watch);
    expect_changes(f, 1);
}

static void test_symlink_into_another_folder(void **state)
{
    struct fixture *f = *state;
    char real_dir[160], real_file[200], real_file2[200], link_tmp[160];
    const char *folders[2];
    in_dir(f, "elsewhere", real_dir, sizeof real_dir);
    assert_int_equal(mkdir(real_dir, 0755), 0);
    snprintf(real_file, sizeof real_file, "%s/a.yaml", real_dir);
    snprintf(real_file2, sizeof real_file2, "%s/b.yaml", real_dir);
    write_file(real_file, "daemon: {}\n");
    write_file(real_file2, "daemon: {shutdown_timeout: 9s}\n");
    assert_int_equal(symlink(real_file, f->path), 0);
    start_watch(f, NULL);
    assert_int_equal(ad_config_watch_folders(f->watch, folders), 2);
    assert_string_equal(folders[1], real_dir);

    /* An edit of the target, in a folder the path itself does not name. */
    write_file(real_file, "daemon: {shutdown_timeout: 4s}\n");
    expect_changes(f, 1);

    /* The link pointed elsewhere (ln -sfn, i.e. a rename over it). */
    in_dir(f, ".link-tmp", link_tmp, sizeof link_tmp);
    assert_int_equal(symlink(real_file2, link_tmp), 0);
    assert_int_equal(rename(link_tmp, f->path), 0);
    expect_changes(f, 2);
}

static void test_missing_folder_fails(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct ad_config_watch *w = ad_config_watch_new(f->base, "/nonexistent/dir/anomalyd.yaml", NULL,
                                                    quiet_ms, on_change, f, err, sizeof err);
    assert_null(w);
    assert_non_null(strstr(err, "/nonexistent/dir"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_configmap_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_editor_rename_and_in_place_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debounced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_special_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seen_digest_and_mark_seen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_into_another_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_folder_fails, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
