/*
 * Config-file watcher (include/portico/filewatch.h).
 *
 * Directories are watched, never the file: an inotify watch is on an inode, and the usual ways of replacing a config
 * file put a new inode at the path (rename of a temp file, ConfigMap symlink swap, delete and re-create), after which
 * a watch on the old inode would never fire again. A watch on the directory sees the name change instead.
 *
 * Which directories: every (directory, name) pair whose change can change what open(path) yields. They are found by
 * walking the path component by component as the kernel does (resolve_chain):
 *   - each symlink met, in the directory that holds it;
 *   - the final name in the final directory, i.e. realpath(path)'s directory and base name;
 *   - when a component is missing, that name in the deepest directory reached, so that its creation is seen.
 * The chain is walked again at every check, since the resolved directories may have changed (a symlink retargeted,
 * the ConfigMap's timestamped directory replaced); watches no longer on it are removed.
 *
 * The Kubernetes ConfigMap volume (kubelet's atomic writer), with DIR mounted and config.yaml the key:
 *     DIR/config.yaml -> ..data/config.yaml
 *     DIR/..data      -> ..2026_12_03_14_00_00.123
 *     DIR/..2026_12_03_14_00_00.123/config.yaml
 * An update creates DIR/..2026_12_03_14_05_00.456/ with the new files, a symlink DIR/..data_tmp to it, renames ..data_tmp
 * over ..data (IN_MOVED_TO "..data" in DIR: the switch, atomic), then removes the old timestamped directory
 * (IN_DELETE_SELF and IN_IGNORED on its watch). The walk yields (DIR, "config.yaml"), (DIR, "..data") and
 * (DIR/..2026_12_03_14_00_00.123, "config.yaml"): the rename matches the second; creating the new directory and
 * ..data_tmp matches nothing and causes no check.
 *
 * Content decides, not events: an event only means "look". check compares a fingerprint of what it reads with the
 * content the caller runs with (set_loaded) and with the content it reported last (which the caller may have rejected as
 * invalid: it is not reported twice). FNV-1a 64 plus the length: not collision-resistant, but whoever can craft
 * colliding config files can write the config.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "portico/file.h"
#include "portico/filewatch.h"

#define MAX_SYMLINKS 40 /* as the kernel's path walk (ELOOP beyond, which open then reports) */
#define REWATCH_TRIES 3 /* a directory of the chain vanished between the walk and inotify_add_watch: walk again */
#define REWATCH_RACED 1 /* rewatch(): that happened */

/*
 * Events asked for on every watched directory, and why:
 *   IN_CLOSE_WRITE  a writer closed the file after an in-place write (the usual end of "truncate and write");
 *   IN_MODIFY       an in-place write by a writer that keeps the file open (each write restarts the debounce);
 *   IN_MOVED_TO     something renamed onto the name: an editor's or the admin API's temp file, a ConfigMap's ..data_tmp
 *                   becoming ..data, a symlink retargeted with "ln -s new tmp && mv -T tmp name";
 *   IN_MOVED_FROM   the name renamed away (editors that keep a backup: config.yaml -> config.yaml~, then a new file);
 *   IN_CREATE       the name created: a file re-created after deletion (its content follows with IN_CLOSE_WRITE), a
 *                   symlink (never written, so this is its only event), a missing directory of the chain re-created;
 *   IN_DELETE       the name deleted: check then reports the file as missing;
 *   IN_DELETE_SELF  the watched directory itself removed (the old ConfigMap timestamped directory); IN_IGNORED follows;
 *   IN_MOVE_SELF    the watched directory itself renamed: the path now leads elsewhere;
 *   IN_ONLYDIR      only ever watch a directory (a race could put a file at a name the walk saw as a directory);
 *   IN_EXCL_UNLINK  no events for files already unlinked but still open elsewhere.
 * IN_IGNORED, IN_Q_OVERFLOW and IN_UNMOUNT come without asking.
 */
#define WATCH_MASK                                                                                                                 \
    (IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |            \
     IN_ONLYDIR | IN_EXCL_UNLINK)

/* One (directory, name) pair of the chain. Several pairs share a wd when they are in the same directory. */
struct st_ptc_filewatch_watch_t {
    int wd;     /* -1: not watched (inotify_add_watch failed, or the kernel dropped the watch: IN_IGNORED) */
    char *dir;  /* as walked (no symlinks in it); for inotify_add_watch and messages */
    char *name; /* a name in dir: a symlink of the chain, the final name, or a missing component */
};

typedef struct st_watch_list_t {
    struct st_ptc_filewatch_watch_t *items;
    size_t num, cap;
} watch_list_t;

static ptc_filewatch_fingerprint_t fingerprint(const char *s, size_t len)
{
    uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a 64 offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211); /* FNV 64 prime */
    }
    return (ptc_filewatch_fingerprint_t){.hash = h, .len = len, .valid = true};
}

static bool fingerprint_eq(ptc_filewatch_fingerprint_t a, ptc_filewatch_fingerprint_t b)
{
    return a.valid && b.valid && a.hash == b.hash && a.len == b.len;
}

static void list_dispose(watch_list_t *l)
{
    for (size_t i = 0; i < l->num; i++) {
        free(l->items[i].dir);
        free(l->items[i].name);
    }
    free(l->items);
    *l = (watch_list_t){NULL, 0, 0};
}

/* Appends (dir, name) unless already there. Returns 0 or ENOMEM. */
static int list_add(watch_list_t *l, const char *dir, const char *name)
{
    for (size_t i = 0; i < l->num; i++)
        if (strcmp(l->items[i].dir, dir) == 0 && strcmp(l->items[i].name, name) == 0)
            return 0;
    if (l->num == l->cap) {
        size_t cap = l->cap == 0 ? 4 : l->cap * 2;
        struct st_ptc_filewatch_watch_t *items = realloc(l->items, cap * sizeof(*items));
        if (items == NULL)
            return ENOMEM;
        l->items = items;
        l->cap = cap;
    }
    struct st_ptc_filewatch_watch_t *w = &l->items[l->num];
    w->wd = -1;
    w->dir = strdup(dir);
    w->name = strdup(name);
    if (w->dir == NULL || w->name == NULL) {
        free(w->dir);
        free(w->name);
        return ENOMEM;
    }
    l->num++;
    return 0;
}

/*
 * Walks path (absolute) one component at a time, following symlinks wherever they are (final or intermediate, such as
 * a ConfigMap's ..data), and records in out the pairs described at the top of this file. Whatever stops the walk (a
 * missing or unreadable component, a non-directory in the middle, a symlink loop, a name too long) is not an error here:
 * opening the path then reports it, and what was recorded until then is still worth watching (a missing component is
 * recorded, so that its creation is seen). Returns 0 or ENOMEM.
 */
static int resolve_chain(const char *path, watch_list_t *out)
{
    char cur[PATH_MAX];  /* the directory reached, symlink-free; "" is the root */
    char cand[PATH_MAX]; /* cur/component */
    char todo[PATH_MAX]; /* what remains to walk; a symlink's target is put in front of the rest */
    char target[PATH_MAX];
    size_t curlen = 0, links = 0;

    size_t plen = strlen(path);
    if (plen >= sizeof(todo))
        return 0;
    memcpy(todo, path, plen + 1);
    cur[0] = '\0';

    const char *p = todo;
    for (;;) {
        while (*p == '/')
            p++;
        if (*p == '\0')
            return 0; /* nothing but "/", "." and "..": a directory, which opening reports (EISDIR on read) */
        const char *end = strchr(p, '/');
        if (end == NULL)
            end = p + strlen(p);
        size_t n = (size_t)(end - p);
        const char *rest = end;
        while (*rest == '/')
            rest++;
        bool last = *rest == '\0';

        if (n == 1 && p[0] == '.') {
            p = end;
            continue;
        }
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            /* cur holds no symlink, so its lexical parent is the real one (what the kernel's ".." gives) */
            while (curlen > 0 && cur[curlen - 1] != '/')
                curlen--;
            if (curlen > 0)
                curlen--;
            cur[curlen] = '\0';
            p = end;
            continue;
        }
        if (n > NAME_MAX || curlen + 1 + n >= sizeof(cand))
            return 0;
        memcpy(cand, cur, curlen);
        cand[curlen] = '/';
        memcpy(cand + curlen + 1, p, n);
        cand[curlen + 1 + n] = '\0';
        const char *dir = curlen == 0 ? "/" : cur, *name = cand + curlen + 1;

        struct stat st;
        if (lstat(cand, &st) != 0) /* missing (or unreadable): watch for it to appear */
            return list_add(out, dir, name);
        if (S_ISLNK(st.st_mode)) {
            int ret;
            if ((ret = list_add(out, dir, name)) != 0)
                return ret;
            if (++links > MAX_SYMLINKS)
                return 0;
            ssize_t tlen = readlink(cand, target, sizeof(target));
            if (tlen <= 0)
                return 0; /* replaced since lstat: the event that replaced it is queued, the next check walks again */
            size_t restlen = strlen(rest);
            if ((size_t)tlen >= sizeof(target) || (size_t)tlen + 1 + restlen >= sizeof(todo))
                return 0;
            /* todo = target "/" rest; rest points into todo, hence memmove */
            memmove(todo + tlen + 1, rest, restlen + 1);
            memcpy(todo, target, (size_t)tlen);
            todo[tlen] = '/';
            p = todo;
            if (target[0] == '/') {
                curlen = 0;
                cur[0] = '\0';
            }
            continue;
        }
        if (last || !S_ISDIR(st.st_mode)) /* the file itself (or a non-directory in the middle: open reports ENOTDIR) */
            return list_add(out, dir, name);
        memcpy(cur, cand, curlen + 1 + n + 1);
        curlen += 1 + n;
        p = end;
    }
}

static bool list_has_wd(const struct st_ptc_filewatch_watch_t *items, size_t num, int wd)
{
    for (size_t i = 0; i < num; i++)
        if (items[i].wd == wd)
            return true;
    return false;
}

/*
 * Walks the chain again, watches its directories and unwatches those no longer on it. The new table is installed even on
 * error (it is the best available). Returns 0, REWATCH_RACED (a directory vanished under us; err is set), PTC_ENOMEM or
 * PTC_EIO.
 */
static int rewatch(ptc_filewatch_t *fw, char *err, size_t errlen)
{
    watch_list_t next = {NULL, 0, 0};
    int ret = 0;

    if (resolve_chain(fw->_path, &next) != 0) {
        list_dispose(&next);
        return ptc_errorf(PTC_ENOMEM, err, errlen, "cannot watch %s: out of memory", fw->_path);
    }

    for (size_t i = 0; i < next.num; i++) {
        struct st_ptc_filewatch_watch_t *w = &next.items[i];
        /* inotify has one watch per inode: a second add would return the same wd; spare the syscall */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(next.items[j].dir, w->dir) == 0) {
                w->wd = next.items[j].wd;
                break;
            }
        }
        if (w->wd >= 0)
            continue;
        if ((w->wd = inotify_add_watch(fw->fd, w->dir, WATCH_MASK)) < 0 && ret == 0) {
            int raced = errno == ENOENT || errno == ENOTDIR;
            ret = ptc_errorf(raced ? REWATCH_RACED : PTC_EIO, err, errlen, "cannot watch %s: %s", w->dir, strerror(errno));
        }
    }

    /* Unwatch what left the chain. The IN_IGNORED that inotify_rm_watch queues is then ignored by read_events, the wd
     * being unknown. EINVAL means the kernel dropped the watch already (directory removed): nothing to do. */
    for (size_t i = 0; i < fw->_num_watches; i++) {
        int wd = fw->_watches[i].wd;
        if (wd < 0 || list_has_wd(next.items, next.num, wd) || list_has_wd(fw->_watches, i, wd))
            continue;
        (void)inotify_rm_watch(fw->fd, wd);
    }

    watch_list_t old = {fw->_watches, fw->_num_watches, fw->_num_watches};
    list_dispose(&old);
    fw->_watches = next.items;
    fw->_num_watches = next.num;
    return ret;
}

static int rewatch_retrying(ptc_filewatch_t *fw, char *err, size_t errlen)
{
    int ret = REWATCH_RACED;
    for (int i = 0; i < REWATCH_TRIES && ret == REWATCH_RACED; i++)
        ret = rewatch(fw, err, errlen);
    return ret == REWATCH_RACED ? PTC_EIO : ret;
}


/* The path made absolute against the current directory, lexically: symlinks stay, they are what the chain is made of. */
static int make_absolute(const char *path, char **out, char *err, size_t errlen)
{
    char cwd[PATH_MAX];
    size_t clen = 0, plen = strlen(path);

    if (path[0] != '/') {
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            return ptc_errorf(PTC_EIO, err, errlen, "cannot watch %s: cannot get the current directory: %s", path, strerror(errno));
        clen = strlen(cwd);
        if (clen == 1) /* "/" */
            clen = 0;
    }
    char *abs = malloc(clen + 1 + plen + 1);
    if (abs == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "cannot watch %s: out of memory", path);
    if (clen != 0) {
        memcpy(abs, cwd, clen);
        abs[clen] = '/';
        memcpy(abs + clen + 1, path, plen + 1);
    } else if (path[0] != '/') {
        abs[0] = '/';
        memcpy(abs + 1, path, plen + 1);
    } else {
        memcpy(abs, path, plen + 1);
    }
    *out = abs;
    return 0;
}

int ptc_filewatch_init(ptc_filewatch_t *fw, const char *path, char *err, size_t errlen)
{
    int ret;

    memset(fw, 0, sizeof(*fw));
    fw->fd = -1;
    fw->debounce_ms = PTC_FILEWATCH_DEBOUNCE_MS;
    fw->max_size = PTC_FILEWATCH_MAX_SIZE;
    if (path == NULL || path[0] == '\0')
        return ptc_errorf(PTC_EINVAL, err, errlen, "cannot watch an empty path");
    if ((ret = make_absolute(path, &fw->_path, err, errlen)) != 0)
        goto Error;
    if ((fw->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
        ret = ptc_errorf(PTC_EIO, err, errlen, "cannot watch %s: inotify_init1: %s", fw->_path, strerror(errno));
        goto Error;
    }
    if ((ret = rewatch_retrying(fw, err, errlen)) != 0)
        goto Error;
    return 0;

Error:
    ptc_filewatch_dispose(fw);
    return ret;
}

int ptc_filewatch_fd(const ptc_filewatch_t *fw)
{
    return fw->fd;
}

/* Whether ev may concern the file; forgets watches the kernel dropped. */
static bool concerns(ptc_filewatch_t *fw, const struct inotify_event *ev)
{
    bool known = false, match = false;

    if ((ev->mask & IN_Q_OVERFLOW) != 0) /* events were lost: any of them could have been ours */
        return true;
    for (size_t i = 0; i < fw->_num_watches; i++) {
        struct st_ptc_filewatch_watch_t *w = &fw->_watches[i];
        if (w->wd != ev->wd)
            continue;
        known = true;
        if ((ev->mask & IN_IGNORED) != 0)
            w->wd = -1; /* the directory was removed or unmounted: the next check walks and watches again */
        else if (ev->len == 0 || strcmp(ev->name, w->name) == 0)
            match = true; /* no name: the directory itself was removed, moved or unmounted */
    }
    /* Unknown wd: a watch rewatch() removed, whose queued events (and IN_IGNORED) are history. */
    return known && (match || (ev->mask & IN_IGNORED) != 0);
}

bool ptc_filewatch_read_events(ptc_filewatch_t *fw)
{
    /* aligned for struct inotify_event; room for at least one event with the longest name (sizeof(struct inotify_event)
     * + NAME_MAX + 1), for several in practice; the loop reads until EAGAIN anyway */
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool relevant = false;

    if (fw->fd < 0)
        return false;
    for (;;) {
        ssize_t n = read(fw->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return relevant;
            /* Not expected with a valid descriptor and this buffer size; let the caller check rather than miss a change. */
            return true;
        }
        if (n == 0)
            return relevant;
        for (const char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const void *)p;
            if (concerns(fw, ev))
                relevant = true;
            p += sizeof(*ev) + ev->len;
        }
    }
}

int ptc_filewatch_check(ptc_filewatch_t *fw, char **content, size_t *len, char *err, size_t errlen)
{
    char *buf;
    size_t n;
    int ret;

    *content = NULL;
    *len = 0;
    if (fw->fd < 0)
        return ptc_errorf(PTC_EINVAL, err, errlen, "file watcher not initialized");
    /* Watch first, read second: a change made after the read is then sure to queue an event. */
    if ((ret = rewatch_retrying(fw, err, errlen)) != 0)
        return ret;
    if ((ret = ptc_read_file(fw->_path, fw->max_size, &buf, &n, err, errlen)) != 0)
        return ret;

    ptc_filewatch_fingerprint_t fp = fingerprint(buf, n);
    if (fingerprint_eq(fp, fw->_loaded) || fingerprint_eq(fp, fw->_seen)) {
        fw->_seen = fp;
        free(buf);
        return 0;
    }
    fw->_seen = fp;
    *content = buf;
    *len = n;
    return 1;
}

void ptc_filewatch_set_loaded(ptc_filewatch_t *fw, const char *content, size_t len)
{
    /* Also "seen": content reported earlier and rejected must be reported again if the file goes back to it. */
    fw->_loaded = fw->_seen = fingerprint(content, len);
}

void ptc_filewatch_dispose(ptc_filewatch_t *fw)
{
    if (fw->fd >= 0)
        (void)close(fw->fd); /* releases every watch; an error here has nothing to report */
    watch_list_t l = {fw->_watches, fw->_num_watches, fw->_num_watches};
    list_dispose(&l);
    free(fw->_path);
    memset(fw, 0, sizeof(*fw));
    fw->fd = -1;
}
