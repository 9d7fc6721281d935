/* libarqon: the data plane's side of the arqon segment. See arqon.h for the API
 * and shm_proto.h for the two lock-free protocols. */
#define _GNU_SOURCE
#include "arqon.h"
#include "shm_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>   /* baseline on x86-64: no -march needed */
#endif

#define ARQ_API __attribute__((visibility("default")))
#define ARQ_CACHELINE 128
#define ARQ_NAME_MAX 47

/* Producer-private state of one ring; each alone on its own block so two producer
 * threads never share a line. */
typedef struct {
    uint64_t tail;          /* private copy of ring.tail (we are its only writer) */
    uint64_t cached_head;   /* last head seen: re-read only when the ring looks full */
    uint64_t drops;
    uint8_t _pad[ARQ_CACHELINE - 24];
} __attribute__((aligned(ARQ_CACHELINE))) arq_producer;

struct arq_plane {
    /* read-mostly (hot for arq_read / arq_emit) */
    uint8_t *base;
    arq_shm_snapshot *snap;
    arq_shm_control *ctl;
    uint64_t rings_off, ring_stride;
    uint64_t instance;              /* unique per arq_open: keys the per-thread read cache */
    uint32_t n_knobs, n_fields, n_rings, cap, rec_words;
    uint32_t global_mask, integer_mask;
    /* Clamp bounds; whole numbers for INTEGER knobs; 0 past n_knobs, so the refresh can clamp
     * knobs in aligned pairs and the unused lane comes out 0. */
    double lo[ARQ_MAX_KNOBS] __attribute__((aligned(16))), hi[ARQ_MAX_KNOBS] __attribute__((aligned(16)));
    /* written by the tick (relaxed), read on the hot path */
    uint32_t lapsed __attribute__((aligned(ARQ_CACHELINE))); /* 1: serve slot 0 only */
    uint64_t now_ns;                /* coarse CLOCK_MONOTONIC for record timestamps */
    /* cold */
    size_t size;
    int fd;
    ino_t ino;
    dev_t dev;
    char shm_name[64];
    pthread_t tick_thread;
    int tick_running;
    uint32_t stop;                  /* atomic: asks the tick thread to exit */
    unsigned tick_us;
    uint32_t lease_state;           /* tick-private: last state written to the segment */
    arq_producer *prod;             /* [n_rings] */
};

static uint64_t g_instances;

/* The slot hash: a 32-bit value from key and salt. Python's segment.slot_for_key mirrors it.
 * xor-shift then a 64-bit multiply (Fibonacci hashing) keeps sequential and strided keys
 * spread across the top bits at the cost of one multiply. */
static inline uint32_t slot_hash(uint64_t key, uint64_t salt) {
    uint64_t x = key ^ salt;
    x ^= x >> 29;
    return (uint32_t)((x * 0x9e3779b97f4a7c15ull) >> 32);
}        /* atomic counter for arq_plane.instance */

/* ---- helpers -------------------------------------------------------------------- */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64 finaliser: epoch entropy and the fallback for getrandom. */
static inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Start time of a process in clock ticks since boot (/proc/<pid>/stat field 22), 0 if unknown.
 * With the pid it identifies a process even when pids are reused. */
static uint64_t proc_start_ticks(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');   /* comm may contain spaces and parentheses */
    if (!p) return 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ') field++;
    return field == 22 ? strtoull(p, NULL, 10) : 0;
}

static int process_alive(uint32_t pid, uint64_t start_ticks) {
    if (pid == 0) return 0;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM) return 0;
    uint64_t now_ticks = proc_start_ticks((pid_t)pid);
    return now_ticks == 0 || start_ticks == 0 || now_ticks == start_ticks;
}

static int valid_name(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > ARQ_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int valid_label(const char *s, size_t cap, int allow_empty) {
    if (!s) return allow_empty;
    size_t n = strnlen(s, cap);
    return n < cap && (allow_empty || n > 0);
}

static int check_decl(const arq_decl *d) {
    if (!d || !d->knobs || d->n_knobs == 0 || d->n_knobs > ARQ_MAX_KNOBS) return ARQ_EINVAL;
    if (d->n_fields > ARQ_MAX_FIELDS || (d->n_fields && !d->fields)) return ARQ_EINVAL;
    if (d->n_variants > ARQ_MAX_VARIANTS || (d->n_variants && !d->variants)) return ARQ_EINVAL;
    if (d->n_rings == 0 || d->n_rings > ARQ_MAX_RINGS) return ARQ_EINVAL;
    unsigned c = d->ring_capacity;
    if (c < ARQ_MIN_RING_CAPACITY || c > ARQ_MAX_RING_CAPACITY || (c & (c - 1))) return ARQ_EINVAL;
    if (d->mode & 0002) return ARQ_EMODE;           /* never world-writable */
    if (d->mode & ~0777u) return ARQ_EINVAL;
    for (unsigned i = 0; i < d->n_knobs; i++) {
        const arq_knob_decl *k = &d->knobs[i];
        if (!valid_label(k->name, ARQ_NAME_LEN, 0)) return ARQ_EINVAL;
        if (!isfinite(k->min) || !isfinite(k->max) || !isfinite(k->initial)) return ARQ_EINVAL;
        if (!(k->min <= k->initial && k->initial <= k->max)) return ARQ_EINVAL;
        if (k->flags & ~(unsigned)(ARQ_KNOB_INTEGER | ARQ_KNOB_GLOBAL)) return ARQ_EINVAL;
        if ((k->flags & ARQ_KNOB_INTEGER) && (ceil(k->min) > floor(k->max) || k->initial != rint(k->initial)))
            return ARQ_EINVAL;
    }
    for (unsigned i = 0; i < d->n_fields; i++)
        if (!valid_label(d->fields[i].name, ARQ_NAME_LEN, 0) || !valid_label(d->fields[i].unit, ARQ_UNIT_LEN, 1))
            return ARQ_EINVAL;
    for (unsigned i = 0; i < d->n_variants; i++)
        if (!valid_label(d->variants[i].name, ARQ_NAME_LEN, 0)) return ARQ_EINVAL;
    return ARQ_OK;
}

/* A segment already has our name. Take it over if its creator is gone (or it is not a
 * segment we can read at all); refuse if a live process owns it. Never trusts its content
 * beyond the two words that identify the owner. */
static int takeover_stale(const char *shm_name) {
    int fd = shm_open(shm_name, O_RDONLY, 0);
    if (fd < 0) return errno == ENOENT ? ARQ_OK : ARQ_ESYS;
    struct stat st;
    int rc = ARQ_OK;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(arq_shm_header)) {
        arq_shm_header *h = mmap(NULL, sizeof *h, PROT_READ, MAP_SHARED, fd, 0);
        if (h != MAP_FAILED) {
            if (h->magic == ARQ_SHM_MAGIC && ARQ_LOAD_ACQ(&h->state) != ARQ_SHM_STATE_CLOSED &&
                process_alive(h->creator_pid, h->creator_start_ticks))
                rc = ARQ_EBUSY;
            munmap(h, sizeof *h);
        }
    }
    close(fd);
    if (rc == ARQ_OK && shm_unlink(shm_name) != 0 && errno != ENOENT) rc = ARQ_ESYS;
    return rc;
}

static void write_decl(uint8_t *base, const arq_decl *d) {
    arq_shm_decl *decl = (arq_shm_decl *)(base + ARQ_SHM_DECL_OFF);
    for (unsigned i = 0; i < d->n_knobs; i++) {
        arq_shm_knob *k = (arq_shm_knob *)decl->knobs + i;
        strncpy(k->name, d->knobs[i].name, ARQ_NAME_LEN - 1);
        k->min = d->knobs[i].min;
        k->max = d->knobs[i].max;
        k->initial = d->knobs[i].initial;
        k->flags = d->knobs[i].flags;
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        arq_shm_field *f = (arq_shm_field *)decl->fields + i;
        strncpy(f->name, d->fields[i].name, ARQ_NAME_LEN - 1);
        if (d->fields[i].unit) strncpy(f->unit, d->fields[i].unit, ARQ_UNIT_LEN - 1);
    }
    for (unsigned i = 0; i < d->n_variants; i++)
        strncpy(((arq_shm_variant *)decl->variants + i)->name, d->variants[i].name, ARQ_NAME_LEN - 1);
}

static void *tick_main(void *arg) {
    arq_plane *p = arg;
    struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)p->tick_us * 1000 };
    while (!ARQ_LOAD_ACQ(&p->stop)) {
        arq_tick(p);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* ---- API -------------------------------------------------------------------------- */

ARQ_API const char *arq_strerror(int err) {
    switch (err) {
    case ARQ_OK: return "ok";
    case ARQ_EINVAL: return "invalid argument or declaration";
    case ARQ_ENAME: return "invalid name: expected 1..47 characters of [A-Za-z0-9_.-]";
    case ARQ_EBUSY: return "segment is owned by another live process";
    case ARQ_ESYS: return "system call failed (see errno)";
    case ARQ_EMODE: return "mode must not make the segment writable by others (o+w)";
    case ARQ_ENOMEM: return "out of memory";
    case ARQ_EDROPPED: return "ring full: record dropped and counted";
    case ARQ_ERING: return "no such ring";
    case ARQ_ESLOT: return "slot not active in the current snapshot";
    default: return "unknown error";
    }
}

ARQ_API int arq_open(const char *name, const arq_decl *decl, arq_plane **out) {
    if (!out) return ARQ_EINVAL;
    *out = NULL;
    if (!valid_name(name)) return ARQ_ENAME;
    int rc = check_decl(decl);
    if (rc) return rc;

    arq_plane *p = NULL;
    if (posix_memalign((void **)&p, ARQ_CACHELINE, sizeof *p)) return ARQ_ENOMEM;
    memset(p, 0, sizeof *p);
    if (posix_memalign((void **)&p->prod, ARQ_CACHELINE, sizeof(arq_producer) * decl->n_rings)) {
        free(p);
        return ARQ_ENOMEM;
    }
    memset(p->prod, 0, sizeof(arq_producer) * decl->n_rings);
    snprintf(p->shm_name, sizeof p->shm_name, "/arqon.%s", name);

    /* Exclusive create at 0600; a leftover from a dead owner is taken over once. */
    int fd = -1;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = shm_open(p->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST && attempt == 0) {
            rc = takeover_stale(p->shm_name);
            if (rc) goto fail;
        } else if (fd < 0) {
            rc = errno == EEXIST ? ARQ_EBUSY : ARQ_ESYS;
            goto fail;
        }
    }
    p->fd = fd;
    uint32_t rec_size = arq_layout_record_size(decl->n_fields);
    p->size = arq_layout_total_size(decl->n_rings, decl->ring_capacity, decl->n_fields);
    if (ftruncate(fd, (off_t)p->size) != 0) { rc = ARQ_ESYS; goto fail_unlink; }
    p->base = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p->base == MAP_FAILED) { p->base = NULL; rc = ARQ_ESYS; goto fail_unlink; }
    struct stat st;
    if (fstat(fd, &st) != 0) { rc = ARQ_ESYS; goto fail_unlink; }
    p->ino = st.st_ino;
    p->dev = st.st_dev;

    /* Private copies of everything the hot path needs: shared memory is never trusted
     * for bounds. */
    p->snap = arq_snap(p->base);
    p->ctl = arq_ctl(p->base);
    p->n_knobs = decl->n_knobs;
    p->n_fields = decl->n_fields;
    p->n_rings = decl->n_rings;
    p->cap = decl->ring_capacity;
    p->rec_words = rec_size / 8;
    p->rings_off = ARQ_SHM_RINGS_OFF;
    p->ring_stride = arq_layout_ring_stride(decl->ring_capacity, decl->n_fields);
    for (unsigned i = 0; i < decl->n_knobs; i++) {
        /* INTEGER knobs clamp to the whole numbers inside [min, max] (check_decl ensures there
         * is one), so rounding a clamped value can never leave the bounds. */
        int integer = (decl->knobs[i].flags & ARQ_KNOB_INTEGER) != 0;
        p->lo[i] = integer ? ceil(decl->knobs[i].min) : decl->knobs[i].min;
        p->hi[i] = integer ? floor(decl->knobs[i].max) : decl->knobs[i].max;
        if (decl->knobs[i].flags & ARQ_KNOB_GLOBAL) p->global_mask |= 1u << i;
        if (integer) p->integer_mask |= 1u << i;
    }
    p->instance = __atomic_add_fetch(&g_instances, 1, __ATOMIC_RELAXED);
    p->lapsed = 1;                   /* no lease yet: baseline only */
    p->now_ns = mono_ns();
    p->tick_us = decl->tick_us ? decl->tick_us : 100;

    /* Header and declaration; state is written last. */
    arq_shm_header *h = arq_hdr(p->base);
    h->magic = ARQ_SHM_MAGIC;
    h->version_major = ARQ_SHM_VERSION_MAJOR;
    h->version_minor = ARQ_SHM_VERSION_MINOR;
    h->layout_hash = ARQ_SHM_LAYOUT_HASH;
    h->header_size = ARQ_SHM_HEADER_SIZE;
    h->total_size = p->size;
    h->mode = decl->mode;
    h->creator_pid = (uint32_t)getpid();
    h->creator_uid = (uint32_t)geteuid();
    h->creator_start_ticks = proc_start_ticks(getpid());
    if (getrandom(&h->epoch, sizeof h->epoch, 0) != sizeof h->epoch)
        h->epoch = mix64(real_ns() ^ (uint64_t)getpid());
    h->created_realtime_ns = real_ns();
    h->n_knobs = decl->n_knobs;
    h->n_fields = decl->n_fields;
    h->n_variants = decl->n_variants;
    h->n_rings = decl->n_rings;
    h->ring_capacity = decl->ring_capacity;
    h->record_size = rec_size;
    h->control_off = ARQ_SHM_CONTROL_OFF;
    h->snapshot_off = ARQ_SHM_SNAPSHOT_OFF;
    h->decl_off = ARQ_SHM_DECL_OFF;
    h->rings_off = ARQ_SHM_RINGS_OFF;
    h->ring_stride = p->ring_stride;
    write_decl(p->base, decl);

    /* Initial snapshot: one slot, the declared initial values, generation 0. */
    arq_snapshot_copy init;
    memset(&init, 0, sizeof init);
    init.n_slots = 1;
    init.cum_weight[0] = 0xffffffffu;
    for (unsigned i = 0; i < decl->n_knobs; i++)
        init.global_knobs[i] = init.knobs[i] = decl->knobs[i].initial;
    memcpy(arq_snap_copy(p->snap, 0), &init, sizeof init);
    memcpy(arq_snap_copy(p->snap, 1), &init, sizeof init);
    p->ctl->lease_state = ARQ_LEASE_NONE;
    p->ctl->plane_heartbeat_ns = p->now_ns;

    ARQ_STORE_REL(&h->state, ARQ_SHM_STATE_READY);   /* publishes everything above */
    if (fchmod(fd, decl->mode ? decl->mode : 0600) != 0) { rc = ARQ_ESYS; goto fail_unlink; }

    if (!(decl->flags & ARQ_DECL_NO_TICK_THREAD)) {
        if (pthread_create(&p->tick_thread, NULL, tick_main, p) != 0) { rc = ARQ_ESYS; goto fail_unlink; }
        p->tick_running = 1;
    }
    *out = p;
    return ARQ_OK;

fail_unlink:
    shm_unlink(p->shm_name);
fail:
    if (p->base) munmap(p->base, p->size);
    if (fd >= 0) close(fd);
    free(p->prod);
    free(p);
    return rc;
}

ARQ_API void arq_close(arq_plane *p) {
    if (!p) return;
    if (p->tick_running) {
        ARQ_STORE_REL(&p->stop, 1);
        pthread_join(p->tick_thread, NULL);
    }
    ARQ_STORE_REL(&arq_hdr(p->base)->state, ARQ_SHM_STATE_CLOSED);
    /* Unlink the name only if it is still ours: a successor may already own it. */
    int fd = shm_open(p->shm_name, O_RDONLY, 0);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_ino == p->ino && st.st_dev == p->dev) shm_unlink(p->shm_name);
        close(fd);
    }
    munmap(p->base, p->size);
    close(p->fd);
    free(p->prod);
    free(p);
}

/* ---- reads ------------------------------------------------------------------------ */

/* One thread's validated copy of the current snapshot: knob values already merged (GLOBAL
 * knobs from the global row), clamped to the declared bounds and rounded, so an unchanged read
 * is a tag compare, a branch-free slot pick and one copy. Rebuilt when the seq or the lease
 * state changes; only by its own thread, so it needs no synchronisation. */
typedef struct {
    uint64_t instance;              /* arq_plane.instance it belongs to; 0 = empty */
    uint64_t tag;                   /* seq << 1 | lapsed it was built from */
    uint64_t generation, salt;
    uint32_t n_slots;               /* 1..ARQ_MAX_SLOTS; 1 = baseline only */
    uint32_t variant[ARQ_MAX_SLOTS];
    uint64_t cut[ARQ_MAX_SLOTS - 1]; /* slot = #{i : hash >= cut[i]}; 2^32 (never) past n_slots - 1 */
    double knob[ARQ_MAX_SLOTS][ARQ_MAX_KNOBS] __attribute__((aligned(64)));
} arq_tcache;

/* The cache itself is general-dynamic TLS (any size is fine, also when libarqon.so is
 * dlopen()ed). The hot path reaches it through one initial-exec pointer: an fs-relative load
 * instead of a __tls_get_addr call per access in the shared-object build. Initial-exec TLS in
 * a dlopen()ed library must fit glibc's static TLS surplus (at least 512 bytes kept for this),
 * which is why only 8 bytes of it are used. In an executable both relax to local-exec. */
static __thread arq_tcache tc_store;
static __thread arq_tcache *tc_ptr __attribute__((tls_model("initial-exec")));

/* Clamp to [lo, hi]; NaN -> lo. Written so the compiler emits maxsd/minsd (no branches):
 * maxsd returns its second operand when either is NaN. */
static inline double clamp_knob(double v, double lo, double hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

static inline uint64_t tcache_tag(uint64_t seq, uint32_t lapsed) { return seq << 1 | lapsed; }

/* Word indices of the snapshot copy (little-endian, 8-byte words), from the generated layout. */
#define W_GEN   (offsetof(arq_snapshot_copy, generation) / 8)
#define W_SALT  (offsetof(arq_snapshot_copy, salt) / 8)
#define W_NSLOT (offsetof(arq_snapshot_copy, n_slots) / 8)
#define W_CUM   (offsetof(arq_snapshot_copy, cum_weight) / 8)
#define W_VAR   (offsetof(arq_snapshot_copy, variant) / 8)
#define W_GLOB  (offsetof(arq_snapshot_copy, global_knobs) / 8)
#define W_ROWS  (offsetof(arq_snapshot_copy, knobs) / 8)
_Static_assert(offsetof(arq_snapshot_copy, n_slots) % 8 == 0, "n_slots in the low half of its word");
_Static_assert(W_VAR == W_CUM + ARQ_MAX_SLOTS / 2 && W_GLOB == W_VAR + ARQ_MAX_SLOTS / 2, "header words");
_Static_assert(W_ROWS == W_GLOB + ARQ_MAX_KNOBS, "knob rows follow the global row");
_Static_assert(ARQ_MAX_SLOTS == 4, "the header is read as 2 + 2 words of 32-bit pairs");
_Static_assert(ARQ_MAX_KNOBS % 2 == 0, "knobs are clamped in pairs");

static inline double f64_of(uint64_t w) {
    double d;
    memcpy(&d, &w, 8);
    return d;
}

/* Rebuild this thread's cache from the snapshot whose seq the caller just loaded (acquire).
 * Reads only what the view needs: 7 header words, then n_knobs words per slot in use (GLOBAL
 * knobs from the global row instead): 8 knobs x 2 slots = 23 of the copy's 88 words. Values go
 * straight into the cache, clamped on the way; a torn attempt is simply overwritten by the
 * retry, and the tag that makes the cache valid is written only after a consistent read. */
static __attribute__((noinline)) arq_tcache *tcache_refresh(arq_plane *p, uint64_t seq, uint32_t lapsed) {
    arq_tcache *t = tc_ptr;
    if (__builtin_expect(!t, 0)) tc_ptr = t = &tc_store;   /* first read of this thread */
    if (t->instance != p->instance) {                      /* new plane: no stale knobs past n_knobs */
        memset(t, 0, sizeof *t);
        t->instance = p->instance;
    }
    const unsigned nk = p->n_knobs;
    const uint32_t gmask = lapsed ? 0 : p->global_mask;   /* lapsed: GLOBAL knobs from slot 0 too */
    uint64_t gen, salt, cw0, cw1, vw0, vw1;
    uint32_t n;
    for (;;) {
        const uint64_t *src = (const uint64_t *)arq_snap_copy(p->snap, seq);
        gen = ARQ_DATA_LOAD(&src[W_GEN]);
        salt = ARQ_DATA_LOAD(&src[W_SALT]);
        n = (uint32_t)ARQ_DATA_LOAD(&src[W_NSLOT]);
        cw0 = ARQ_DATA_LOAD(&src[W_CUM]);
        cw1 = ARQ_DATA_LOAD(&src[W_CUM + 1]);
        vw0 = ARQ_DATA_LOAD(&src[W_VAR]);
        vw1 = ARQ_DATA_LOAD(&src[W_VAR + 1]);
        /* Weights must be non-decreasing over the slots in use; anything else is a corrupt
         * snapshot and, like a lapsed lease, serves the baseline only. */
        uint32_t c[ARQ_MAX_SLOTS] = {(uint32_t)cw0, (uint32_t)(cw0 >> 32), (uint32_t)cw1, (uint32_t)(cw1 >> 32)};
        int ok = n >= 1 && n <= ARQ_MAX_SLOTS;
        for (uint32_t i = 1; ok && i + 1 < n; i++) ok = c[i] >= c[i - 1];
        if (!ok || lapsed) n = 1;
        for (uint32_t s = 0; s < n; s++) {
            const uint64_t *row = src + W_ROWS + (size_t)s * ARQ_MAX_KNOBS;
            double *out = t->knob[s];
            /* Knobs in pairs (ARQ_MAX_KNOBS is even, so k + 1 stays inside the row): half the
             * operations, and 16-byte stores that fill_view's 16-byte loads can be forwarded
             * from (8-byte stores read back 16 bytes at a time stall until they reach L1). */
            for (unsigned k = 0; k < nk; k += 2) {
                const uint64_t *w0 = (gmask >> k) & 1 ? src + W_GLOB + k : row + k;
                const uint64_t *w1 = (gmask >> (k + 1)) & 1 ? src + W_GLOB + k + 1 : row + k + 1;
                double v0 = f64_of(ARQ_DATA_LOAD(w0)), v1 = f64_of(ARQ_DATA_LOAD(w1));
#if defined(__SSE2__)
                /* maxpd returns its second operand for NaN: NaN -> lo, as clamp_knob. */
                __m128d v = _mm_max_pd(_mm_set_pd(v1, v0), _mm_load_pd(&p->lo[k]));
                _mm_store_pd(&out[k], _mm_min_pd(v, _mm_load_pd(&p->hi[k])));
#else
                out[k] = clamp_knob(v0, p->lo[k], p->hi[k]);
                out[k + 1] = clamp_knob(v1, p->lo[k + 1], p->hi[k + 1]);
#endif
            }
        }
        ARQ_FENCE_ACQ();                                   /* the loads above before the re-check */
        uint64_t again = ARQ_LOAD_RLX(&p->snap->seq);
        if (__builtin_expect(again == seq, 1)) break;
        seq = ARQ_LOAD_ACQ(&p->snap->seq);                 /* overtaken by two publishes: retry */
    }
    /* Rounding after the consistent read: clamped values lie in whole-number bounds, so the
     * nearest whole number does too. */
    for (uint32_t m = p->integer_mask; m; m &= m - 1) {
        unsigned k = (unsigned)__builtin_ctz(m);
        for (uint32_t s = 0; s < n; s++) t->knob[s][k] = rint(t->knob[s][k]);
    }
    uint32_t c[ARQ_MAX_SLOTS] = {(uint32_t)cw0, (uint32_t)(cw0 >> 32), (uint32_t)cw1, (uint32_t)(cw1 >> 32)};
    uint32_t v[ARQ_MAX_SLOTS] = {(uint32_t)vw0, (uint32_t)(vw0 >> 32), (uint32_t)vw1, (uint32_t)(vw1 >> 32)};
    for (uint32_t i = 0; i < ARQ_MAX_SLOTS - 1; i++) t->cut[i] = i + 1 < n ? c[i] : 1ull << 32;
    for (uint32_t i = 0; i < ARQ_MAX_SLOTS; i++) t->variant[i] = v[i];
    t->generation = gen;
    t->salt = salt;
    t->n_slots = n;
    t->tag = tcache_tag(seq, lapsed);
    return t;
}

/* This thread's cache if it is current for `p`, else the rebuilt one. */
static inline arq_tcache *tcache_fresh(arq_plane *p) {
    uint64_t seq = ARQ_LOAD_ACQ(&p->snap->seq);
    uint32_t lapsed = ARQ_LOAD_RLX(&p->lapsed);
    arq_tcache *t = tc_ptr;
    if (__builtin_expect(t && t->instance == p->instance && t->tag == tcache_tag(seq, lapsed), 1)) return t;
    return tcache_refresh(p, seq, lapsed);
}

static inline void fill_view(const arq_tcache *t, arq_view *out, uint32_t slot) {
    out->generation = t->generation;
    out->slot = slot;
    out->variant = t->variant[slot];
    memcpy(out->knob, t->knob[slot], sizeof out->knob);
}

ARQ_API int arq_read(arq_plane *p, uint64_t key, arq_view *out) {
    arq_tcache *t = tcache_fresh(p);
    uint32_t slot = 0;
    if (t->n_slots > 1) {
        /* Cuts are non-decreasing, so counting the ones at or below the hash gives the same
         * slot as walking them, without a data-dependent branch (2 slots at 50/50 would
         * mispredict every other read). */
        uint64_t h = slot_hash(key, t->salt);
        slot = (uint32_t)(h >= t->cut[0]) + (uint32_t)(h >= t->cut[1]) + (uint32_t)(h >= t->cut[2]);
    }
    fill_view(t, out, slot);
    return ARQ_OK;
}

ARQ_API int arq_read_slot(arq_plane *p, unsigned slot, arq_view *out) {
    arq_tcache *t = tcache_fresh(p);
    if (slot >= t->n_slots) return ARQ_ESLOT;
    fill_view(t, out, slot);
    return ARQ_OK;
}

/* ---- telemetry ---------------------------------------------------------------------- */

ARQ_API int arq_emit(arq_plane *p, unsigned ring, const arq_view *v, const double *fields) {
    if (__builtin_expect(ring >= p->n_rings, 0)) return ARQ_ERING;
    arq_producer *pr = &p->prod[ring];
    arq_shm_ring *r = arq_ring(p->base, p->rings_off, p->ring_stride, ring);
    uint64_t tail = pr->tail;
    if (__builtin_expect(tail - pr->cached_head >= p->cap, 0)) {
        pr->cached_head = ARQ_LOAD_ACQ(&r->head);   /* slots before head are ours again */
        if (tail - pr->cached_head >= p->cap) {
            pr->drops++;
            ARQ_STORE_RLX(&r->drops, pr->drops);     /* drop newest: never block, never overwrite */
            return ARQ_EDROPPED;
        }
    }
    uint64_t now = ARQ_LOAD_RLX(&p->now_ns);
    uint64_t *rec = arq_ring_records(r) + (tail & (p->cap - 1)) * p->rec_words;
    /* The slot is ours until tail is published; plain stores are race-free here. */
    rec[1] = now;
    rec[2] = v ? v->generation : 0;
    rec[3] = v ? ((uint64_t)v->slot | ((uint64_t)v->variant << 32)) : 0;
    if (fields && p->n_fields) memcpy(rec + ARQ_RECORD_HEADER_WORDS, fields, p->n_fields * 8);
    rec[0] = tail + 1;                               /* sequence word */
    pr->tail = tail + 1;
    ARQ_STORE_REL(&r->tail, tail + 1);               /* publishes the record to the consumer */
    ARQ_STORE_RLX(&r->producer_heartbeat_ns, now);
    return ARQ_OK;
}

ARQ_API uint64_t arq_drops(const arq_plane *p, unsigned ring) {
    return ring < p->n_rings ? p->prod[ring].drops : 0;
}

/* ---- housekeeping --------------------------------------------------------------------- */

static void ack_generation(arq_plane *p, uint64_t gen) {
    uint64_t cur = ARQ_LOAD_RLX(&p->ctl->ack_generation);
    while (gen > cur &&
           !__atomic_compare_exchange_n(&p->ctl->ack_generation, &cur, gen, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
    }
}

ARQ_API void arq_tick(arq_plane *p) {
    uint64_t now = mono_ns();
    ARQ_STORE_RLX(&p->now_ns, now);
    ARQ_STORE_RLX(&p->ctl->plane_heartbeat_ns, now);
    uint64_t deadline = ARQ_LOAD_ACQ(&p->ctl->lease_deadline_ns);
    uint32_t state, lapsed;
    if (deadline == 0) {
        state = ARQ_LEASE_NONE; lapsed = 1;          /* released (snapback) or never leased */
    } else if (now >= deadline) {
        state = ARQ_LEASE_LAPSED; lapsed = 1;        /* the daemon stopped renewing */
    } else {
        state = ARQ_LEASE_ACTIVE; lapsed = 0;
    }
    if (ARQ_LOAD_RLX(&p->lapsed) != lapsed) ARQ_STORE_RLX(&p->lapsed, lapsed);
    if (state != p->lease_state) {
        if (state == ARQ_LEASE_LAPSED && p->lease_state == ARQ_LEASE_ACTIVE)
            ARQ_STORE_RLX(&p->ctl->lease_lapses, ARQ_LOAD_RLX(&p->ctl->lease_lapses) + 1);
        p->lease_state = state;
        ARQ_STORE_REL(&p->ctl->lease_state, state);
    }
    /* Ack what every reader will now see. Readers do not ack themselves: a store to a line
     * the daemon polls would cost the refresh a cross-core miss. Ack latency <= tick_us. */
    uint64_t gen;
    arq_snapshot_read_words(p->snap, &gen, 1);
    ack_generation(p, gen);
}

ARQ_API int arq_lease_active(const arq_plane *p) {
    return !ARQ_LOAD_RLX(&p->lapsed);
}
