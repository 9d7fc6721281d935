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
 * is a tag compare, a branch-free slot pick and one copy. Built lazily: a change of seq or
 * lease state re-reads the header, and each slot's knobs are prepared by the first read that
 * needs that slot. Only its own thread touches it, so it needs no synchronisation. */
typedef struct {
    uint64_t instance;              /* arq_plane.instance it belongs to; 0 = empty */
    uint64_t tag;                   /* seq << 1 | lapsed the header was read from; ~0 = none */
    uint64_t generation, salt;
    uint32_t n_slots;               /* 1..ARQ_MAX_SLOTS; 1 = baseline only */
    uint32_t ready;                 /* bit s: knob[s] prepared for this tag */
    uint64_t cut[ARQ_MAX_SLOTS - 1]; /* slot = #{i : hash >= cut[i]}; 2^32 (never) past n_slots - 1 */
    uint32_t variant[ARQ_MAX_SLOTS];
    double knob[ARQ_MAX_SLOTS][ARQ_MAX_KNOBS] __attribute__((aligned(64)));  /* 0 past n_knobs */
} arq_tcache;

#define ARQ_TAG_NONE (~0ull)        /* no seq << 1 | lapsed reaches it */
#define ARQ_BY_KEY   (~0u)          /* read_slow: pick the slot from the key */

/* Where a thread's cache lives. The hot path reaches it through one initial-exec TLS pointer:
 * an fs-relative load, where the default (general-dynamic) model costs a __tls_get_addr call
 * per read in the shared-object build (+4 ns measured). A dlopen()ed library's whole TLS block
 * must then fit glibc's static TLS surplus (a few hundred bytes, shared by every such library),
 * so the block is this one pointer and the cache itself is heap memory, allocated by a thread's
 * first read (once, as glibc does for a dlopen()ed library's TLS) and freed at thread exit. */
static __thread arq_tcache *tc_ptr __attribute__((tls_model("initial-exec")));
static pthread_key_t tc_key;               /* its destructor frees a thread's cache */
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;
static int tc_key_ok;

static void tc_free(void *t) {
    tc_ptr = NULL;                         /* a later destructor that reads gets a new one */
    free(t);
}
static void tc_key_init(void) { tc_key_ok = pthread_key_create(&tc_key, tc_free) == 0; }
/* dlclose(): threads still running must not call tc_free from unmapped code at their exit;
 * their caches leak instead. */
__attribute__((destructor)) static void tc_unload(void) {
    if (tc_key_ok) pthread_key_delete(tc_key);
}

static arq_tcache *tcache_new(void) {
    pthread_once(&tc_once, tc_key_init);
    arq_tcache *t = NULL;
    if (!tc_key_ok || posix_memalign((void **)&t, ARQ_CACHELINE, sizeof *t)) return NULL;
    if (pthread_setspecific(tc_key, t)) {
        free(t);
        return NULL;
    }
    memset(t, 0, sizeof *t);               /* instance 0: belongs to no plane yet */
    tc_ptr = t;
    return t;
}

/* Clamp to [lo, hi]; NaN -> lo. Written so the compiler emits maxsd/minsd (no branches):
 * maxsd returns its second operand when either is NaN. Used where SSE2 is not available. */
static inline double clamp_knob(double v, double lo, double hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

static inline uint64_t tcache_tag(uint64_t seq, uint32_t lapsed) { return seq << 1 | lapsed; }

/* Cuts are non-decreasing, so counting the ones at or below the hash gives the same slot as
 * walking them, without a data-dependent branch (2 slots at 50/50 would mispredict every other
 * read). */
static inline uint32_t pick_slot(uint64_t key, uint64_t salt, const uint64_t *cut) {
    uint64_t h = slot_hash(key, salt);
    return (uint32_t)(h >= cut[0]) + (uint32_t)(h >= cut[1]) + (uint32_t)(h >= cut[2]);
}

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

/* Clamp (and round, if `imask` has their bits) knobs k and k + 1 into out[k], out[k + 1]. */
static inline __attribute__((always_inline)) void clamp_pair(const arq_plane *p, unsigned k, uint64_t w0,
                                                             uint64_t w1, uint32_t imask, double *out) {
    double v0 = f64_of(w0), v1 = f64_of(w1);
#if defined(__SSE2__)
    /* maxpd returns its second operand for NaN: NaN -> lo, as clamp_knob. */
    __m128d v = _mm_max_pd(_mm_set_pd(v1, v0), _mm_load_pd(&p->lo[k]));
    v = _mm_min_pd(v, _mm_load_pd(&p->hi[k]));
    if ((imask >> k) & 3) {
        /* rint without SSE4.1: (v + M) - M with M = copysign(2^52, v) rounds to the nearest
         * whole number (ties to even, as rint) when |v| < 2^52; larger values are whole
         * already. Bounds are whole numbers, so the result stays inside them. */
        const __m128d sign = _mm_set1_pd(-0.0), big = _mm_set1_pd(4503599627370496.0);
        __m128d m = _mm_or_pd(_mm_and_pd(v, sign), big);
        __m128d r = _mm_sub_pd(_mm_add_pd(v, m), m);
        __m128d lanes = _mm_castsi128_pd(_mm_set_epi64x(-(long long)((imask >> (k + 1)) & 1),
                                                        -(long long)((imask >> k) & 1)));
        __m128d use = _mm_and_pd(lanes, _mm_cmplt_pd(_mm_andnot_pd(sign, v), big));
        v = _mm_or_pd(_mm_and_pd(use, r), _mm_andnot_pd(use, v));
    }
    _mm_store_pd(&out[k], v);
#else
    v0 = clamp_knob(v0, p->lo[k], p->hi[k]);
    v1 = clamp_knob(v1, p->lo[k + 1], p->hi[k + 1]);
    out[k] = (imask >> k) & 1 ? rint(v0) : v0;
    out[k + 1] = (imask >> (k + 1)) & 1 ? rint(v1) : v1;
#endif
}

/* Clamp (and round, INTEGER knobs) one slot's knobs from the snapshot row `row` into `out`.
 * Knobs go in pairs (ARQ_MAX_KNOBS is even, so k + 1 stays inside the row; the lane past an odd
 * n_knobs clamps to [0, 0]): half the operations, and 16-byte stores that fill_view's 16-byte
 * loads are forwarded from (8-byte stores read back 16 bytes at a time stall until they reach
 * L1). Without GLOBAL knobs in use nor INTEGER knobs, a loop with nothing but loads, clamps and
 * stores. Runs inside a seqlock attempt: torn input only yields values the retry overwrites. */
static inline void prepare_row(const arq_plane *p, const uint64_t *src, const uint64_t *row, uint32_t gmask,
                               double *out) {
    const unsigned nk = p->n_knobs;
    const uint32_t imask = p->integer_mask;
    if (!(gmask | imask)) {
        for (unsigned k = 0; k < nk; k += 2)
            clamp_pair(p, k, ARQ_DATA_LOAD(row + k), ARQ_DATA_LOAD(row + k + 1), 0, out);
        return;
    }
    for (unsigned k = 0; k < nk; k += 2) {
        const uint64_t *w0 = (gmask >> k) & 1 ? src + W_GLOB + k : row + k;
        const uint64_t *w1 = (gmask >> (k + 1)) & 1 ? src + W_GLOB + k + 1 : row + k + 1;
        clamp_pair(p, k, ARQ_DATA_LOAD(w0), ARQ_DATA_LOAD(w1), imask, out);
    }
}

static inline void fill_view(const arq_tcache *t, arq_view *out, uint32_t slot) {
    out->generation = t->generation;
    out->slot = slot;
    out->variant = t->variant[slot];
    memcpy(out->knob, t->knob[slot], sizeof out->knob);
}

/* Everything but an unchanged read of a prepared slot: one seqlock attempt reads the header
 * (only if seq or lease state changed since this thread last read it: 7 words) and the one
 * row the view needs (n_knobs words), straight into the cache. The cache's tag and ready bits
 * change only after a consistent attempt. `want` is a slot, or ARQ_BY_KEY. */
static inline __attribute__((always_inline)) int read_into(arq_tcache *t, arq_plane *p, uint64_t seq,
                                                           uint32_t lapsed, uint64_t key, uint32_t want,
                                                           arq_view *out) {
    if (t->instance != p->instance) {                      /* another plane: no stale knobs past n_knobs */
        memset(t, 0, sizeof *t);
        t->instance = p->instance;
        t->tag = ARQ_TAG_NONE;
    }
    for (;;) {   /* seq: loaded (acquire) by the caller or at the end of a torn attempt */
        const uint64_t tag = tcache_tag(seq, lapsed);
        const uint64_t *src = (const uint64_t *)arq_snap_copy(p->snap, seq);
        const int have_header = t->tag == tag;
        uint64_t gen, salt, cw0, cw1, vw0, vw1, cut[ARQ_MAX_SLOTS - 1];
        uint32_t n;
        if (__builtin_expect(have_header, 0)) {            /* only a slot not prepared yet */
            gen = t->generation;
            salt = t->salt;
            n = t->n_slots;
            cut[0] = t->cut[0], cut[1] = t->cut[1], cut[2] = t->cut[2];
            cw0 = cw1 = vw0 = vw1 = 0;
        } else {
            /* From another core the header and the row are both misses, and the row's address
             * waits for the header (slot pick): start slots 0 and 1's rows now. */
            const uint64_t *r0 = src + W_ROWS, *last = r0 + p->n_knobs - 1;
            __builtin_prefetch(r0);
            __builtin_prefetch(last);
            __builtin_prefetch(r0 + ARQ_MAX_KNOBS);
            __builtin_prefetch(last + ARQ_MAX_KNOBS);
            gen = ARQ_DATA_LOAD(&src[W_GEN]);
            salt = ARQ_DATA_LOAD(&src[W_SALT]);
            n = (uint32_t)ARQ_DATA_LOAD(&src[W_NSLOT]);
            cw0 = ARQ_DATA_LOAD(&src[W_CUM]);
            cw1 = ARQ_DATA_LOAD(&src[W_CUM + 1]);
            vw0 = ARQ_DATA_LOAD(&src[W_VAR]);
            vw1 = ARQ_DATA_LOAD(&src[W_VAR + 1]);
            /* Weights must be non-decreasing over the slots in use; anything else is a corrupt
             * snapshot and, like a lapsed lease, serves the baseline only. */
            const uint32_t c0 = (uint32_t)cw0, c1 = (uint32_t)(cw0 >> 32), c2 = (uint32_t)cw1;
            int ok = n >= 1 && n <= ARQ_MAX_SLOTS && (n < 3 || c1 >= c0) && (n < 4 || c2 >= c1);
            if (!ok || lapsed) n = 1;
            cut[0] = n > 1 ? c0 : 1ull << 32;
            cut[1] = n > 2 ? c1 : 1ull << 32;
            cut[2] = n > 3 ? c2 : 1ull << 32;
        }
        const uint32_t slot = want != ARQ_BY_KEY ? want : n > 1 ? pick_slot(key, salt, cut) : 0;
        if (slot < n)   /* GLOBAL knobs from the global row while leased, slot 0's row when lapsed */
            prepare_row(p, src, src + W_ROWS + (size_t)slot * ARQ_MAX_KNOBS, lapsed ? 0 : p->global_mask,
                        t->knob[slot]);
        ARQ_FENCE_ACQ();                                   /* the loads above before the re-check */
        if (__builtin_expect(ARQ_LOAD_RLX(&p->snap->seq) != seq, 0)) {
            seq = ARQ_LOAD_ACQ(&p->snap->seq);             /* overtaken by two publishes: retry */
            lapsed = ARQ_LOAD_RLX(&p->lapsed);
            continue;
        }
        if (!have_header) {
            t->tag = tag;
            t->generation = gen;
            t->salt = salt;
            t->n_slots = n;
            t->ready = 0;
            t->cut[0] = cut[0], t->cut[1] = cut[1], t->cut[2] = cut[2];
            t->variant[0] = (uint32_t)vw0, t->variant[1] = (uint32_t)(vw0 >> 32);
            t->variant[2] = (uint32_t)vw1, t->variant[3] = (uint32_t)(vw1 >> 32);
        }
        if (slot >= n) return ARQ_ESLOT;
        t->ready |= 1u << slot;
        out->generation = gen;
        out->slot = slot;
        out->variant = t->variant[slot];
        memcpy(out->knob, t->knob[slot], sizeof out->knob);
        return ARQ_OK;
    }
}

/* No memory for a cache: the same read into a stack copy, correct but never cached. */
static __attribute__((noinline, cold)) int read_uncached(arq_plane *p, uint64_t seq, uint32_t lapsed,
                                                         uint64_t key, uint32_t want, arq_view *out) {
    arq_tcache spare;
    memset(&spare, 0, sizeof spare);
    return read_into(&spare, p, seq, lapsed, key, want, out);
}

static __attribute__((noinline)) int read_slow(arq_plane *p, uint64_t seq, uint32_t lapsed, uint64_t key,
                                               uint32_t want, arq_view *out) {
    arq_tcache *t = tc_ptr;
    if (__builtin_expect(!t, 0) && !(t = tcache_new()))   /* first read of this thread */
        return read_uncached(p, seq, lapsed, key, want, out);
    return read_into(t, p, seq, lapsed, key, want, out);
}

/* The unchanged path: the seq, the lease state and this thread's cache tag agree, and the slot
 * is prepared. Everything else goes to read_slow with the seq and lease state loaded here. */
ARQ_API int arq_read(arq_plane *p, uint64_t key, arq_view *out) {
    uint64_t seq = ARQ_LOAD_ACQ(&p->snap->seq);
    uint32_t lapsed = ARQ_LOAD_RLX(&p->lapsed);
    const arq_tcache *t = tc_ptr;
    if (__builtin_expect(t && t->instance == p->instance && t->tag == tcache_tag(seq, lapsed), 1)) {
        uint32_t slot = t->n_slots > 1 ? pick_slot(key, t->salt, t->cut) : 0;
        if (__builtin_expect((t->ready >> slot) & 1, 1)) {
            fill_view(t, out, slot);
            return ARQ_OK;
        }
    }
    return read_slow(p, seq, lapsed, key, ARQ_BY_KEY, out);
}

ARQ_API int arq_read_slot(arq_plane *p, unsigned slot, arq_view *out) {
    uint64_t seq = ARQ_LOAD_ACQ(&p->snap->seq);
    uint32_t lapsed = ARQ_LOAD_RLX(&p->lapsed);
    const arq_tcache *t = tc_ptr;
    if (t && t->instance == p->instance && t->tag == tcache_tag(seq, lapsed)) {
        if (slot >= t->n_slots) return ARQ_ESLOT;
        if ((t->ready >> slot) & 1) {
            fill_view(t, out, slot);
            return ARQ_OK;
        }
    }
    return read_slow(p, seq, lapsed, 0, slot >= ARQ_MAX_SLOTS ? ARQ_MAX_SLOTS : slot, out);
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
