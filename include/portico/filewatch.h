/*
 * Config-file watcher for hot reload: inotify on the directories of the file's symlink chain, change decided by content.
 *
 * It has no event-loop dependency: the caller polls ptc_filewatch_fd() for reading (an event_new(..., EV_READ |
 * EV_PERSIST, ...) with libevent), calls ptc_filewatch_read_events() when it is readable, (re)starts a debounce timer of
 * debounce_ms whenever that returns true, and calls ptc_filewatch_check() when the timer fires:
 *
 *     on readable:  if (ptc_filewatch_read_events(fw)) evtimer_add(debounce, {fw->debounce_ms});
 *     on timer:     switch (ptc_filewatch_check(fw, &text, &len, err, sizeof(err))) {
 *                   case 1:  if (parse(text, len) == 0) ptc_filewatch_set_loaded(fw, text, len); free(text); break;
 *                   case 0:  break;                                  (spurious event, or same content)
 *                   default: log(err); break;                        (keep the current config)
 *                   }
 *
 * To start without a race, watch before the first load: init, then check (nothing is loaded yet, so it returns 1 with
 * the content), parse, set_loaded. A change made between the load and init would otherwise go unnoticed.
 *
 * Every way a file is replaced in practice ends up as an event in a watched directory: an in-place write, a temp file
 * renamed over the path, a ConfigMap `..data` symlink swap, a symlink into another directory whose target is replaced
 * there, deletion and re-creation. Which events concern the file, and the ConfigMap sequence, are described in
 * src/control/filewatch.c.
 */
#ifndef PORTICO_FILEWATCH_H
#define PORTICO_FILEWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/common.h"

/* Default debounce: editors write in several steps (truncate, write, write, close; or temp file, fsync, rename). */
#define PTC_FILEWATCH_DEBOUNCE_MS 100
/* Default size cap: the same as ptc_config_load_file's (a config file larger than this is surely a mistake). */
#define PTC_FILEWATCH_MAX_SIZE (16u * 1024 * 1024)

/* Identifies a content: FNV-1a 64 of the bytes and their count. */
typedef struct st_ptc_filewatch_fingerprint_t {
    uint64_t hash;
    size_t len;
    bool valid; /* false: no content yet */
} ptc_filewatch_fingerprint_t;

struct st_ptc_filewatch_watch_t;

typedef struct st_ptc_filewatch_t {
    int fd;               /* inotify: non-blocking, close-on-exec; -1 once disposed */
    uint32_t debounce_ms; /* wait this long after the last relevant event, then check; set by init, the caller may change it */
    size_t max_size;      /* check fails with PTC_ETOOBIG beyond this many bytes; set by init, the caller may change it */
    void *data;           /* for the caller */
    char *_path;          /* the path made absolute at init (lexically: symlinks are resolved at every check) */
    struct st_ptc_filewatch_watch_t *_watches; /* (directory, name) pairs of the current symlink chain */
    size_t _num_watches;
    ptc_filewatch_fingerprint_t _loaded; /* content the caller runs with (set_loaded) */
    ptc_filewatch_fingerprint_t _seen;   /* content last reported by check, accepted or not */
} ptc_filewatch_t;

/*
 * Starts watching path (relative paths are taken against the current directory now, so a later chdir does not
 * matter). The file need not exist: its directory, or the nearest existing one on the way, is watched for it to
 * appear. Sets debounce_ms and max_size to their defaults. Returns 0, or:
 *
 * PTC_EINVAL: path is NULL or empty.
 * PTC_ENOMEM: out of memory.
 * PTC_EIO:    inotify or a watch could not be set up; err holds "cannot watch DIR: REASON".
 *
 * On failure nothing is left to dispose (dispose is harmless all the same).
 */
int ptc_filewatch_init(ptc_filewatch_t *fw, const char *path, char *err, size_t errlen) PTC_WARN_UNUSED;

/* The inotify descriptor to poll for reading. */
int ptc_filewatch_fd(const ptc_filewatch_t *fw);

/*
 * Reads and consumes all pending events without blocking. Returns true when at least one of them may concern the file
 * (its name or a name of its symlink chain in a watched directory, a watched directory removed or moved, or a queue
 * overflow); the caller then (re)starts its debounce timer. Events about other names in the same directories return
 * false.
 */
bool ptc_filewatch_read_events(ptc_filewatch_t *fw);

/*
 * Reads the file as it is now (following symlinks) and re-establishes the directory watches for the current symlink
 * chain. Returns:
 *
 * 1:          the content differs from the last loaded one and has not been reported yet: *content (malloc'd, the
 *             caller frees it; NUL-terminated for convenience, not counted in *len) and *len hold it. The caller
 *             parses it and hands it back through ptc_filewatch_set_loaded if it accepted it. If not, the same content
 *             is not reported again until the file changes once more.
 * 0:          unchanged (spurious event, identical rewrite, or content already reported).
 * PTC_EIO:    the file cannot be read right now (missing, mid-swap, not a regular file) or a watch could not be
 *             re-established; err says which ("cannot read PATH: REASON", "cannot watch DIR: REASON"). The caller logs
 *             it and keeps its config; the next relevant event leads to another check.
 * PTC_ETOOBIG: larger than max_size.
 * PTC_ENOMEM: out of memory.
 * PTC_EINVAL: fw is not initialized (disposed, or init failed).
 *
 * *content is NULL unless 1 is returned.
 */
int ptc_filewatch_check(ptc_filewatch_t *fw, char **content, size_t *len, char *err, size_t errlen) PTC_WARN_UNUSED;

/*
 * Records the content the caller runs with: after accepting what check returned, or after writing the file itself
 * (the admin API writes the config back with a rename, which must not come back as a reload).
 */
void ptc_filewatch_set_loaded(ptc_filewatch_t *fw, const char *content, size_t len);

/* Closes the descriptor and frees everything; idempotent. */
void ptc_filewatch_dispose(ptc_filewatch_t *fw);

#endif
