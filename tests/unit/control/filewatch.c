/*
 * Unit tests for src/control/filewatch.c, with real inotify in a fresh directory under /tmp per test.
 *
 * inotify queues an event while the syscall that causes it runs, so once a write or rename has returned its events are
 * readable: "poll() shows the descriptor readable and read_events says false" proves an event was filtered out, not that
 * it was late. Waits for relevant events are bounded polls (WAIT_MS), never sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portico/filewatch.h"

#define WAIT_MS 2000

typedef struct st_fixture_t {
    char dir[64];       /* the test's directory */
    char cwd[PATH_MAX]; /* restored at teardown (test_relative_path changes it) */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/ptc-filewatch-XXXXXX");
    if (mkdtemp(f->dir) == NULL || getcwd(f->cwd, sizeof(f->cwd)) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int ret = 0;
    if (chdir(f->cwd) != 0)
        ret = -1;
    if (nftw(f->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        ret = -1;
    free(f);
    return ret;
}

/* f->dir "/" rel */
static const char *at(const fixture_t *f, const char *rel, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", f->dir, rel);
    assert_true(n > 0 && (size_t)n < len);
    return buf;
}

/* Writes in place (truncate and write, the same inode), as `echo > file` does. */
static void put(const fixture_t *f, const char *rel, const char *content)
{
    char path[PATH_MAX];
    int fd = open(at(f, rel, path, sizeof(path)), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static void mv(const fixture_t *f, const char *from, const char *to)
{
    char a[PATH_MAX], b[PATH_MAX];
    assert_int_equal(rename(at(f, from, a, sizeof(a)), at(f, to, b, sizeof(b))), 0);
}

/* Writes rel.tmp and renames it over rel, as editors and the admin API do. */
static void put_atomic(const fixture_t *f, const char *rel, const char *content)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp", rel);
    put(f, tmp, content);
    mv(f, tmp, rel);
}

static void mk(const fixture_t *f, const char *rel)
{
    char path[PATH_MAX];
    assert_int_equal(mkdir(at(f, rel, path, sizeof(path)), 0755), 0);
}

static void ln(const fixture_t *f, const char *target, const char *rel)
{
    char path[PATH_MAX];
    assert_int_equal(symlink(target, at(f, rel, path, sizeof(path))), 0);
}

static void rm(const fixture_t *f, const char *rel)
{
    char path[PATH_MAX];
    assert_int_equal(unlink(at(f, rel, path, sizeof(path))), 0);
}

static void rmtree(const fixture_t *f, const char *rel)
{
    char path[PATH_MAX];
    assert_int_equal(nftw(at(f, rel, path, sizeof(path)), remove_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static void init(const fixture_t *f, ptc_filewatch_t *fw, const char *rel)
{
    char path[PATH_MAX], err[256] = "";
    int ret = ptc_filewatch_init(fw, at(f, rel, path, sizeof(path)), err, sizeof(err));
    if (ret != 0)
        print_error("init: %s\n", err);
    assert_int_equal(ret, 0);
}

/* Whether events are queued. */
static bool pending(const ptc_filewatch_t *fw)
{
    struct pollfd pfd = {.fd = ptc_filewatch_fd(fw), .events = POLLIN};
    int r = poll(&pfd, 1, 0);
    assert_true(r >= 0);
    return r > 0 && (pfd.revents & POLLIN) != 0;
}

/* Polls for up to timeout_ms until read_events reports a relevant event. */
static bool wait_relevant(ptc_filewatch_t *fw, int timeout_ms)
{
    uint64_t deadline = ptc_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = ptc_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd pfd = {.fd = ptc_filewatch_fd(fw), .events = POLLIN};
        int r = poll(&pfd, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        if (r > 0 && ptc_filewatch_read_events(fw))
            return true;
    }
}

/* Events were queued and none concerns the file. */
static void assert_filtered(ptc_filewatch_t *fw)
{
    assert_true(pending(fw));
    assert_false(ptc_filewatch_read_events(fw));
    assert_false(pending(fw));
}

/* check returned 1 with expected; accepts it (set_loaded) when accept. */
static void expect_check_1(ptc_filewatch_t *fw, const char *expected, bool accept)
{
    char *content = NULL, err[256] = "";
    size_t len = 0;
    int ret = ptc_filewatch_check(fw, &content, &len, err, sizeof(err));
    if (ret < 0)
        print_error("check: %s\n", err);
    assert_int_equal(ret, 1);
    assert_non_null(content);
    assert_int_equal(len, strlen(expected));
    assert_memory_equal(content, expected, len);
    assert_int_equal(content[len], '\0');
    if (accept)
        ptc_filewatch_set_loaded(fw, content, len);
    free(content);
}

static void expect_check_0(ptc_filewatch_t *fw)
{
    char *content = NULL, err[256] = "";
    size_t len = 1;
    int ret = ptc_filewatch_check(fw, &content, &len, err, sizeof(err));
    if (ret < 0)
        print_error("check: %s\n", err);
    assert_int_equal(ret, 0);
    assert_null(content);
    assert_int_equal(len, 0);
}

/* check failed with code, err containing each of the NULL-terminated substrings. */
static void expect_check_error(ptc_filewatch_t *fw, int code, ...)
{
    char *content = NULL, err[512] = "";
    size_t len = 1;
    assert_int_equal(ptc_filewatch_check(fw, &content, &len, err, sizeof(err)), code);
    assert_null(content);
    va_list ap;
    va_start(ap, code);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
        if (strstr(err, s) == NULL)
            print_error("\"%s\" lacks \"%s\"\n", err, s);
        assert_non_null(strstr(err, s));
    }
    va_end(ap);
}

/* A relevant event arrives, and check reports expected (then accepted). */
static void expect_change(ptc_filewatch_t *fw, const char *expected)
{
    assert_true(wait_relevant(fw, WAIT_MS));
    expect_check_1(fw, expected, true);
}

/* Starts watching rel (which holds initial) the race-free way: init, check, set_loaded. */
static void start(const fixture_t *f, ptc_filewatch_t *fw, const char *rel, const char *initial)
{
    init(f, fw, rel);
    expect_check_1(fw, initial, true);
    expect_check_0(fw);
}

static void test_init_and_first_check(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    init(f, &fw, "config.yaml");

    assert_int_equal(fw.debounce_ms, 100);
    assert_int_equal(fw.max_size, PTC_FILEWATCH_MAX_SIZE);
    int fd = ptc_filewatch_fd(&fw);
    assert_true(fd >= 0);
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    assert_true(fl >= 0 && (fl & O_NONBLOCK) != 0);
    assert_true(fdfl >= 0 && (fdfl & FD_CLOEXEC) != 0);
    /* nothing queued: returns at once */
    assert_false(pending(&fw));
    assert_false(ptc_filewatch_read_events(&fw));

    /* nothing loaded yet: the first check reports the content (the race-free way to load at start-up) */
    expect_check_1(&fw, "v1\n", false);
    /* reported and not accepted: not reported again */
    expect_check_0(&fw);
    ptc_filewatch_set_loaded(&fw, "v1\n", 3);
    expect_check_0(&fw);

    ptc_filewatch_dispose(&fw);
    assert_int_equal(fw.fd, -1);
    ptc_filewatch_dispose(&fw); /* idempotent */
}

/* (a) */
static void test_in_place_write(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");

    put(f, "config.yaml", "v2\n");
    expect_change(&fw, "v2\n");

    /* identical content: events, but no change */
    put(f, "config.yaml", "v2\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_0(&fw);

    /* a writer that keeps the file open: IN_MODIFY before any close */
    char path[PATH_MAX];
    int fd = open(at(f, "config.yaml", path, sizeof(path)), O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "more\n", 5), 5);
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_1(&fw, "v2\nmore\n", true);
    assert_int_equal(close(fd), 0);
    assert_true(wait_relevant(&fw, WAIT_MS)); /* IN_CLOSE_WRITE */
    expect_check_0(&fw);

    ptc_filewatch_dispose(&fw);
}

/* (b) */
static void test_rename_over(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");

    /* the temp file is another name: not relevant; the rename onto the name is */
    put(f, "config.yaml.tmp", "v2\n");
    assert_filtered(&fw);
    mv(f, "config.yaml.tmp", "config.yaml");
    expect_change(&fw, "v2\n");

    put_atomic(f, "config.yaml", "v3\n");
    expect_change(&fw, "v3\n");

    ptc_filewatch_dispose(&fw);
}

static void test_unrelated_names(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");

    put(f, "other.txt", "x");
    assert_filtered(&fw);
    put_atomic(f, "other.yaml", "y");
    assert_filtered(&fw);
    mk(f, "sub");
    put(f, "sub/config.yaml", "z"); /* same base name, another directory (not watched at all) */
    rm(f, "other.txt");
    assert_filtered(&fw);
    put(f, "config.yaml.bak", "v9\n"); /* a name that merely starts like the file's */
    assert_filtered(&fw);
    expect_check_0(&fw);

    ptc_filewatch_dispose(&fw);
}

/*
 * Kubelet's atomic writer: a new timestamped directory, ..data_tmp pointing at it, ..data_tmp renamed over ..data, the
 * old directory removed.
 */
static void configmap_update(const fixture_t *f, ptc_filewatch_t *fw, const char *old_ts, const char *new_ts, const char *content)
{
    char rel[PATH_MAX];
    mk(f, new_ts);
    snprintf(rel, sizeof(rel), "%s/config.yaml", new_ts);
    put(f, rel, content);
    ln(f, new_ts, "..data_tmp");
    /* the new directory and ..data_tmp are other names: the switch has not happened */
    assert_filtered(fw);
    mv(f, "..data_tmp", "..data");
    assert_true(wait_relevant(fw, WAIT_MS));
    rmtree(f, old_ts);
    expect_check_1(fw, content, true);
    /* the old directory's removal (its watch dropped by check) causes nothing */
    assert_false(ptc_filewatch_read_events(fw));
    expect_check_0(fw);
}

/* (c) */
static void test_configmap(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    mk(f, "..2026_12_03_14_00_00.123");
    put(f, "..2026_12_03_14_00_00.123/config.yaml", "v1\n");
    ln(f, "..2026_12_03_14_00_00.123", "..data");
    ln(f, "..data/config.yaml", "config.yaml");
    start(f, &fw, "config.yaml", "v1\n");

    configmap_update(f, &fw, "..2026_12_03_14_00_00.123", "..2026_12_03_14_05_00.456", "v2\n");
    configmap_update(f, &fw, "..2026_12_03_14_05_00.456", "..2026_12_03_14_10_00.789", "v3\n");

    /* an update that changes another key only: the switch is seen, the content is the same */
    mk(f, "..2026_12_03_14_15_00.000");
    put(f, "..2026_12_03_14_15_00.000/config.yaml", "v3\n");
    put(f, "..2026_12_03_14_15_00.000/other-key", "x");
    ln(f, "..2026_12_03_14_15_00.000", "..data_tmp");
    mv(f, "..data_tmp", "..data");
    assert_true(wait_relevant(&fw, WAIT_MS));
    rmtree(f, "..2026_12_03_14_10_00.789");
    expect_check_0(&fw);

    ptc_filewatch_dispose(&fw);
}

/* (d) */
static void test_symlink_into_other_dir(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    mk(f, "a");
    mk(f, "b");
    mk(f, "c");
    put(f, "b/real.yaml", "v1\n");
    ln(f, "../b/real.yaml", "a/config.yaml");
    start(f, &fw, "a/config.yaml", "v1\n");

    /* the target replaced by a rename in its own directory */
    put_atomic(f, "b/real.yaml", "v2\n");
    expect_change(&fw, "v2\n");
    /* other names there are not relevant */
    put(f, "b/unrelated", "x");
    assert_filtered(&fw);

    /* the symlink retargeted to another directory (ln -s + mv -T) */
    put(f, "c/real2.yaml", "v3\n");
    ln(f, "../c/real2.yaml", "a/config.yaml.new");
    mv(f, "a/config.yaml.new", "a/config.yaml");
    expect_change(&fw, "v3\n");

    /* check moved the watch: c counts now, b no longer */
    put_atomic(f, "c/real2.yaml", "v4\n");
    expect_change(&fw, "v4\n");
    put_atomic(f, "b/real.yaml", "v5\n");
    assert_false(ptc_filewatch_read_events(&fw));

    /* an absolute symlink */
    char target[PATH_MAX];
    ln(f, at(f, "b/real.yaml", target, sizeof(target)), "a/config.yaml.new");
    mv(f, "a/config.yaml.new", "a/config.yaml");
    expect_change(&fw, "v5\n");
    put(f, "b/real.yaml", "v6\n");
    expect_change(&fw, "v6\n");

    ptc_filewatch_dispose(&fw);
}

/* (e) */
static void test_delete_and_recreate(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    char path[PATH_MAX];
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");

    rm(f, "config.yaml");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_error(&fw, PTC_EIO, "cannot read", at(f, "config.yaml", path, sizeof(path)), strerror(ENOENT), NULL);

    put(f, "config.yaml", "v2\n");
    expect_change(&fw, "v2\n");

    /* deleted and re-created with the same content: no reload */
    rm(f, "config.yaml");
    assert_true(wait_relevant(&fw, WAIT_MS));
    put(f, "config.yaml", "v2\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_0(&fw);

    ptc_filewatch_dispose(&fw);
}

/* A missing file at init: its directory is watched for it. */
static void test_missing_at_init(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    init(f, &fw, "config.yaml");
    expect_check_error(&fw, PTC_EIO, "cannot read", strerror(ENOENT), NULL);
    put_atomic(f, "config.yaml", "v1\n");
    expect_change(&fw, "v1\n");
    ptc_filewatch_dispose(&fw);
}

static void test_invalid_content_reported_once(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");

    /* reported, rejected by the caller (no set_loaded) */
    put(f, "config.yaml", "bad: [\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_1(&fw, "bad: [\n", false);
    /* touched again with the same bytes: not reported again */
    put(f, "config.yaml", "bad: [\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_0(&fw);
    expect_check_0(&fw);

    /* another invalid content is reported */
    put_atomic(f, "config.yaml", "bad: ]\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_1(&fw, "bad: ]\n", false);

    /* back to the loaded content: nothing to do; then the first invalid one again: it changed once more, reported */
    put_atomic(f, "config.yaml", "v1\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_0(&fw);
    put_atomic(f, "config.yaml", "bad: ]\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_1(&fw, "bad: ]\n", false);

    /* fixed */
    put_atomic(f, "config.yaml", "v2\n");
    expect_change(&fw, "v2\n");
    expect_check_0(&fw);

    ptc_filewatch_dispose(&fw);
}

/* The admin API writes the config back itself and says so: no reload of its own write. */
static void test_own_write_not_reloaded(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");

    put_atomic(f, "config.yaml", "v2 from the admin API\n");
    ptc_filewatch_set_loaded(&fw, "v2 from the admin API\n", strlen("v2 from the admin API\n"));
    assert_true(wait_relevant(&fw, WAIT_MS)); /* events there are */
    expect_check_0(&fw);                      /* but no change */

    /* set_loaded also resets "seen": content rejected before is reported if the file goes back to it */
    put_atomic(f, "config.yaml", "bad\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_1(&fw, "bad\n", false);
    put_atomic(f, "config.yaml", "v3 from the admin API\n");
    ptc_filewatch_set_loaded(&fw, "v3 from the admin API\n", strlen("v3 from the admin API\n"));
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_0(&fw);
    put_atomic(f, "config.yaml", "bad\n");
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_1(&fw, "bad\n", false);

    ptc_filewatch_dispose(&fw);
}

/* A relative path is taken against the directory current at init; a later chdir does not matter. */
static void test_relative_path(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    char err[256] = "";
    mk(f, "sub");
    put(f, "config.yaml", "v1\n");
    assert_int_equal(chdir(f->dir), 0);
    assert_int_equal(ptc_filewatch_init(&fw, "./sub/../config.yaml", err, sizeof(err)), 0);
    assert_int_equal(chdir("/"), 0);
    expect_check_1(&fw, "v1\n", true);

    put_atomic(f, "config.yaml", "v2\n");
    expect_change(&fw, "v2\n");
    put(f, "config.yaml", "v3\n");
    expect_change(&fw, "v3\n");

    ptc_filewatch_dispose(&fw);
}

/* A watched directory removed, then re-created: the nearest existing directory is watched meanwhile. */
static void test_directory_removed(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    mk(f, "other");
    put(f, "other/real.yaml", "v1\n");
    ln(f, "other/real.yaml", "config.yaml");
    start(f, &fw, "config.yaml", "v1\n");

    rmtree(f, "other");
    assert_true(wait_relevant(&fw, WAIT_MS)); /* IN_DELETE real.yaml, IN_DELETE_SELF, IN_IGNORED */
    expect_check_error(&fw, PTC_EIO, "cannot read", strerror(ENOENT), NULL);

    mk(f, "other"); /* seen from the test directory, watched for "other" now */
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_error(&fw, PTC_EIO, "cannot read", strerror(ENOENT), NULL);

    put(f, "other/real.yaml", "v2\n"); /* seen in the re-created directory */
    expect_change(&fw, "v2\n");

    ptc_filewatch_dispose(&fw);
}

static void test_size_cap(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    put(f, "config.yaml", "v1\n");
    start(f, &fw, "config.yaml", "v1\n");
    fw.max_size = 16;

    put(f, "config.yaml", "0123456789abcdefg"); /* 17 */
    assert_true(wait_relevant(&fw, WAIT_MS));
    expect_check_error(&fw, PTC_ETOOBIG, "cannot read", "larger than 16 bytes", NULL);

    put(f, "config.yaml", "0123456789abcdef"); /* 16 */
    expect_change(&fw, "0123456789abcdef");
    put(f, "config.yaml", "");
    expect_change(&fw, "");

    ptc_filewatch_dispose(&fw);
}

static void test_errors(void **state)
{
    fixture_t *f = *state;
    ptc_filewatch_t fw;
    char err[256] = "", path[PATH_MAX];

    assert_int_equal(ptc_filewatch_init(&fw, "", err, sizeof(err)), PTC_EINVAL);
    assert_int_equal(fw.fd, -1);
    ptc_filewatch_dispose(&fw); /* harmless after a failed init */
    assert_int_equal(ptc_filewatch_init(&fw, NULL, NULL, 0), PTC_EINVAL);

    /* not a regular file: a directory, a FIFO (which must not block the caller) */
    mk(f, "dir.yaml");
    init(f, &fw, "dir.yaml");
    expect_check_error(&fw, PTC_EIO, "cannot read", "dir.yaml", NULL);
    ptc_filewatch_dispose(&fw);

    assert_int_equal(mkfifo(at(f, "fifo.yaml", path, sizeof(path)), 0644), 0);
    init(f, &fw, "fifo.yaml");
    expect_check_error(&fw, PTC_EIO, "cannot read", "not a regular file", NULL);
    ptc_filewatch_dispose(&fw);

    /* a symlink loop */
    ln(f, "loop2", "loop1");
    ln(f, "loop1", "loop2");
    init(f, &fw, "loop1");
    expect_check_error(&fw, PTC_EIO, "cannot read", strerror(ELOOP), NULL);
    ptc_filewatch_dispose(&fw);

    /* a file where a directory should be */
    put(f, "file", "x");
    init(f, &fw, "file/config.yaml");
    expect_check_error(&fw, PTC_EIO, "cannot read", strerror(ENOTDIR), NULL);
    ptc_filewatch_dispose(&fw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_and_first_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_place_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrelated_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configmap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_into_other_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_recreate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_at_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_content_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_write_not_reloaded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
