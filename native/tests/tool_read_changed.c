/* tool_read_changed NAME [--so PATH] [--check]: cost of arq_read right after a publish (the read that
 * refreshes the per-thread cache), next to the cost of an unchanged read. One JSON line.
 *
 * Each method alone charges the read for something else, so several are reported:
 *   read_changed_ns_p50 (fenced diff; the figure `arqond bench dataplane` checks against its
 *          floor): p50(batch of 64 x (publish, mfence, read)) - p50(64 x (publish, mfence)), per
 *          read. The fence drains the publish's stores first, so the read pays for its own work
 *          on a snapshot in L1 (its loads, compute and stores), not for the publish's.
 *   read_changed_unfenced_ns_p50 (the original method): the same without the fence. The
 *          publish's 88 stores are still in the store buffer when the read runs: the read's
 *          loads are forwarded from it and its own stores queue behind them, so this overlaps
 *          two costs and is not the read's alone (reported for continuity).
 *   read_changed_tsc_*: one read timed with rdtsc between lfences after publish + mfence, minus
 *          the cost of timing nothing; gives a tail (p99). See to_ns() on the TSC's step.
 *   read_changed_xthread_*: single reads while another thread, on the other core, publishes as
 *          the daemon does: the first read that sees a new generation also pays the cache-line
 *          transfers from the publisher's core. Machine-bound (on this VM it moves between ~100
 *          and ~450 ns from run to run with where the two vCPUs land); context, not the floor.
 *          Its unchanged samples include the first read of the other slot after a change.
 * --so PATH runs everything through dlopen(PATH) instead of the static library: the shared
 * object's TLS access, and a check that it can be dlopen()ed at all. Read-path checks against a
 * model of the contract run first (see check_read_path); --check runs only them.
 * Publishing in-process uses the same shm_proto.h code as the daemon's helper. */
#define _GNU_SOURCE
#include "arqon.h"
#include "shm_proto.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

/* The library under test: the static one linked in, or a dlopen()ed shared object. */
typedef struct {
    int (*open)(const char *, const arq_decl *, arq_plane **);
    void (*close)(arq_plane *);
    int (*read)(arq_plane *, uint64_t, arq_view *);
    int (*read_slot)(arq_plane *, unsigned, arq_view *);
    void (*tick)(arq_plane *);
    const char *(*strerror)(int);
} api_t;
static api_t api = {arq_open, arq_close, arq_read, arq_read_slot, arq_tick, arq_strerror};
static volatile uint64_t g_sink;   /* keeps the timed reads from being optimised away */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static uint64_t pct(uint64_t *xs, size_t n, double q) {
    qsort(xs, n, 8, cmp);
    return xs[(size_t)(q * (double)(n - 1))];
}

/* Timestamps for single-call timing: rdtsc fenced so the timed code neither starts before t0
 * nor is still running at t1. Elsewhere (no TSC) CLOCK_MONOTONIC, far coarser. */
#if defined(__x86_64__)
static inline uint64_t ts_begin(void) { _mm_lfence(); uint64_t t = __rdtsc(); _mm_lfence(); return t; }
static inline uint64_t ts_end(void) { unsigned aux; uint64_t t = __rdtscp(&aux); _mm_lfence(); return t; }
static inline void full_fence(void) { _mm_mfence(); }
#else
static inline uint64_t ts_begin(void) { return mono_ns(); }
static inline uint64_t ts_end(void) { return mono_ns(); }
static inline void full_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
#endif
static double ns_per_tick = 1.0;
static void calibrate(void) {
    uint64_t n0 = mono_ns(), t0 = ts_begin();
    while (mono_ns() - n0 < 50000000ull) {}
    uint64_t n1 = mono_ns(), t1 = ts_end();
    ns_per_tick = (double)(n1 - n0) / (double)(t1 - t0);
}

static arq_snapshot_copy two_slots(void) {
    arq_snapshot_copy c;
    memset(&c, 0, sizeof c);
    c.n_slots = 2;
    c.cum_weight[0] = 0x7fffffffu;
    c.cum_weight[1] = 0xffffffffu;
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 8; k++) c.knobs[s * ARQ_MAX_KNOBS + k] = (double)(s * 100 + k);
    return c;
}

/* ---- diff methods ---------------------------------------------------------------- */
/* Per-read cost from p50(64 x (publish [+ fence] + read)) - p50(64 x (publish [+ fence])). */
static double method_diff(arq_plane *p, uint8_t *base, int fenced, double *publish) {
    arq_snapshot_copy c = two_slots();
    enum { B = 64, N = 3000 };
    static uint64_t with[N], without[N];
    arq_view v;
    uint64_t gen = fenced ? 1ull << 50 : 1, sink = 0;
    for (int r = 0; r < 2 * N; r++) {
        int do_read = r & 1;
        uint64_t t0 = mono_ns();
        for (int i = 0; i < B; i++) {
            c.generation = gen++;
            arq_snapshot_publish(arq_snap(base), &c);
            if (fenced) full_fence();
            if (do_read) { api.read(p, (uint64_t)i, &v); sink += v.slot; }
        }
        uint64_t t = mono_ns() - t0;
        if (do_read) with[r / 2] = t; else without[r / 2] = t;
    }
    g_sink += sink;
    double w = (double)pct(with, N, 0.5), wo = (double)pct(without, N, 0.5);
    if (publish) *publish = wo / B;
    return (w - wo) / B;
}

/* ---- single reads timed with the TSC -------------------------------------------- */
/* The TSC of this kind of machine may advance in steps (AMD Zen: ~10 ns), so a percentile of
 * single timings lands on the step grid; the mean of the samples up to p90 does not (the step
 * phase is random) and ignores interrupts. Both are reported. */
typedef struct { double p50, p99, mean; } dist;
static dist to_ns(uint64_t *xs, size_t n, double overhead_ticks) {
    dist d;
    d.p50 = ((double)pct(xs, n, 0.5) - overhead_ticks) * ns_per_tick;
    d.p99 = ((double)pct(xs, n, 0.99) - overhead_ticks) * ns_per_tick;
    size_t m = (size_t)(0.9 * (double)n);
    double sum = 0;
    for (size_t i = 0; i < m; i++) sum += (double)xs[i];   /* xs sorted by pct() */
    d.mean = (sum / (double)m - overhead_ticks) * ns_per_tick;
    return d;
}

/* Same thread: publish, drain its stores with a full fence, then time one read (changed) and
 * a later one (unchanged); minus the cost of timing nothing. */
static void method_tsc(arq_plane *p, uint8_t *base, dist *changed, dist *unchanged, double *overhead_ticks) {
    enum { N = 20000 };
    static uint64_t ch[N], un[N], empty[N];
    arq_snapshot_copy c = two_slots();
    arq_view v;
    uint64_t gen = 1ull << 30;
    for (int i = 0; i < N; i++) {
        c.generation = gen++;
        arq_snapshot_publish(arq_snap(base), &c);
        full_fence();
        uint64_t t0 = ts_begin();
        api.read(p, (uint64_t)i, &v);
        ch[i] = ts_end() - t0;
        /* Slots are prepared by the first read that needs them: warm both before timing an
         * unchanged read (8 keys miss one of two 50/50 slots 1 time in 128: p99, not p50). */
        for (int j = 1; j < 8; j++) api.read(p, (uint64_t)i + j, &v);
        t0 = ts_begin();
        api.read(p, (uint64_t)i + 8, &v);
        un[i] = ts_end() - t0;
        t0 = ts_begin();
        empty[i] = ts_end() - t0;
        if (v.generation != c.generation) { fprintf(stderr, "stale view\n"); exit(4); }
    }
    uint64_t sum = 0;
    for (int i = 0; i < N; i++) sum += empty[i];
    *overhead_ticks = (double)sum / N;     /* a mean: the step grid again */
    *changed = to_ns(ch, N, *overhead_ticks);
    *unchanged = to_ns(un, N, *overhead_ticks);
}

/* ---- xthread method (another core publishes) ---------------------------------------- */
typedef struct {
    uint8_t *base;
    uint64_t seen __attribute__((aligned(128)));    /* reader -> publisher: generation seen */
    uint32_t stop __attribute__((aligned(128)));
} xshared;

static void *x_publisher(void *arg) {
    xshared *x = arg;
    arq_snapshot_copy c = two_slots();
    uint64_t gen = 1ull << 40;
    while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE)) {
        c.generation = ++gen;
        arq_snapshot_publish(arq_snap(x->base), &c);
        /* Wait until the reader has refreshed, then let it run unchanged reads for a while so
         * each publish is met by exactly one changed read, at an unsynchronised moment. */
        while (__atomic_load_n(&x->seen, __ATOMIC_ACQUIRE) != gen && !__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE))
            sched_yield();
        uint64_t until = mono_ns() + 2000 + (gen % 7) * 300;
        while (mono_ns() < until) {}
    }
    return NULL;
}

static int method_xthread(arq_plane *p, uint8_t *base, dist *changed, dist *unchanged, double ov) {
    enum { N = 4000 };
    static uint64_t ch[N], un[N];
    size_t nch = 0, nun = 0;
    xshared *x;
    if (posix_memalign((void **)&x, 128, sizeof *x)) return -1;
    memset(x, 0, sizeof *x);
    x->base = base;
    pthread_t th;
    if (pthread_create(&th, NULL, x_publisher, x)) { free(x); return -1; }
    arq_view v;
    uint64_t last = 0, key = 0, deadline = mono_ns() + 3000000000ull;
    while (nch < N && mono_ns() < deadline) {
        uint64_t t0 = ts_begin();
        api.read(p, key++, &v);
        uint64_t t = ts_end() - t0;
        if (v.generation != last) {
            if (last) ch[nch++] = t;        /* the first one sees the previous method's snapshot */
            last = v.generation;
            __atomic_store_n(&x->seen, last, __ATOMIC_RELEASE);
        } else if (nun < N && (key & 15) == 0) {
            un[nun++] = t;
        }
    }
    __atomic_store_n(&x->stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    free(x);
    if (nch < 100 || nun < 100) return -1;  /* a starved run (2 busy cores): report nothing */
    *changed = to_ns(ch, nch, ov);
    *unchanged = to_ns(un, nun, ov);
    return 0;
}

/* ---- read-path self-check ----------------------------------------------------------- */
/* Run before every measurement (a fast read that is wrong is worth nothing) and alone with
 * --check (e.g. under sanitizers): random snapshots, including corrupt ones, against a direct
 * model of the contract, through arq_read and arq_read_slot in mixed order, so every lazy path
 * (header only, one more slot, torn-free retry) is compared, not just the first read. */
static int check_failures;
#define EXPECT(cond, ...) do { if (!(cond)) { if (check_failures++ < 10) { \
    fprintf(stderr, "check failed %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
    fprintf(stderr, "\n"); } } } while (0)

static uint64_t rng_next(uint64_t *s) {   /* xorshift64*: seeded, deterministic */
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}
static uint32_t model_hash(uint64_t key, uint64_t salt) {   /* libarqon's slot_hash */
    uint64_t x = key ^ salt;
    x ^= x >> 29;
    return (uint32_t)((x * 0x9e3779b97f4a7c15ull) >> 32);
}
/* Slots in use: the declared count if valid and weights non-decreasing, else 1; 1 when lapsed. */
static uint32_t model_slots(const arq_snapshot_copy *c, int lapsed) {
    uint32_t n = c->n_slots;
    int ok = n >= 1 && n <= ARQ_MAX_SLOTS;
    for (uint32_t i = 1; ok && i + 1 < n; i++) ok = c->cum_weight[i] >= c->cum_weight[i - 1];
    return ok && !lapsed ? n : 1;
}
static uint32_t model_pick(const arq_snapshot_copy *c, uint32_t n, uint64_t key) {
    uint32_t h = model_hash(key, c->salt), slot = 0;
    while (slot + 1 < n && h >= c->cum_weight[slot]) slot++;
    return slot;
}
static double model_knob(const arq_knob_decl *d, unsigned nk, const arq_snapshot_copy *c, int lapsed,
                         uint32_t slot, unsigned k) {
    if (k >= nk) return 0.0;
    double v = (d[k].flags & ARQ_KNOB_GLOBAL) && !lapsed ? c->global_knobs[k] : c->knobs[slot * ARQ_MAX_KNOBS + k];
    int integer = (d[k].flags & ARQ_KNOB_INTEGER) != 0;
    double lo = integer ? ceil(d[k].min) : d[k].min, hi = integer ? floor(d[k].max) : d[k].max;
    v = isnan(v) ? lo : v < lo ? lo : v > hi ? hi : v;
    return integer ? rint(v) : v;
}
static void expect_view(const arq_knob_decl *d, unsigned nk, const arq_snapshot_copy *c, int lapsed,
                        uint32_t slot, const arq_view *v, const char *what) {
    EXPECT(v->slot == slot && v->generation == c->generation && v->variant == c->variant[slot],
           "%s: slot %u/%u gen %llu/%llu variant %u/%u", what, v->slot, slot, (unsigned long long)v->generation,
           (unsigned long long)c->generation, v->variant, c->variant[slot]);
    for (unsigned k = 0; k < ARQ_MAX_KNOBS; k++) {
        double want = model_knob(d, nk, c, lapsed, slot, k);
        EXPECT(v->knob[k] == want, "%s: gen %llu slot %u knob %u = %.17g, expected %.17g (lapsed %d)", what,
               (unsigned long long)c->generation, slot, k, v->knob[k], want, lapsed);
    }
}

static double pick_value(uint64_t *rng) {
    static const double special[] = {NAN, INFINITY, -INFINITY, 1e300, -1e300, 0.5, 1.5, 2.5, -0.5, -2.5,
                                     3.7, 0.4999999999999999, 4503599627370495.5, -4503599627370495.5,
                                     9007199254740993.0, -0.0, 1e18, -1e18, 3e18};
    uint64_t r = rng_next(rng);
    if (r % 3 == 0) return special[(r >> 8) % (sizeof special / sizeof special[0])];
    return ((double)(int64_t)(r >> 11) / (double)(1ull << 50)) * ((r & 4) ? 10.0 : 1e6);
}

static void publish_lease(uint8_t *base, arq_plane *p, const arq_snapshot_copy *c, int lapsed) {
    arq_snapshot_publish(arq_snap(base), c);
    ARQ_STORE_REL(&arq_ctl(base)->lease_deadline_ns, lapsed ? 0 : mono_ns() + 3600000000000ull);
    api.tick(p);
}

typedef struct { const char *name; int failures; } check_arg;

static void *check_read_path(void *arg) {
    check_arg *ca = arg;
    /* Odd knob count (the pair past the end), GLOBAL and INTEGER mixed, fractional and huge
     * (beyond 2^52) integer bounds. */
    static const arq_knob_decl d[] = {
        {"cont", -1.0, 1.0, 0.0, 0},
        {"int_frac", 0.5, 3.7, 1.0, ARQ_KNOB_INTEGER},
        {"glob", 0.0, 10.0, 5.0, ARQ_KNOB_GLOBAL},
        {"int_glob", -3.0, 3.0, 0.0, ARQ_KNOB_INTEGER | ARQ_KNOB_GLOBAL},
        {"int_huge", -1e18, 1e18, 7.0, ARQ_KNOB_INTEGER},
    };
    enum { NK = 5 };
    static const arq_knob_decl d2[] = {{"a", 0.0, 1.0, 0.25, 0}, {"b", -5.0, 5.0, 1.0, ARQ_KNOB_INTEGER}};
    arq_field_decl f[] = {{"x", ""}};
    arq_decl decl = {d, NK, f, 1, NULL, 0, 1, 64, 0600, ARQ_DECL_NO_TICK_THREAD, 0};
    arq_decl decl2 = {d2, 2, f, 1, NULL, 0, 1, 64, 0600, ARQ_DECL_NO_TICK_THREAD, 0};
    char n1[80], n2[80];
    snprintf(n1, sizeof n1, "%s-c1", ca->name);
    snprintf(n2, sizeof n2, "%s-c2", ca->name);
    arq_plane *p, *q;
    if (api.open(n1, &decl, &p) || api.open(n2, &decl2, &q)) {
        EXPECT(0, "open check planes %s, %s", n1, n2);
        return NULL;
    }
    char shm[96];
    snprintf(shm, sizeof shm, "/arqon.%s", n1);
    int fd = shm_open(shm, O_RDWR, 0);
    struct stat st;
    fstat(fd, &st);
    uint8_t *base = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);

    arq_view v;
    arq_snapshot_copy c;
    memset(&c, 0, sizeof c);   /* what arq_open published: one slot of initial values */
    c.n_slots = 1;
    for (unsigned k = 0; k < NK; k++) c.global_knobs[k] = c.knobs[k] = d[k].initial;
    api.read(p, 1, &v);
    expect_view(d, NK, &c, 1, 0, &v, "initial");

    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 400; round++) {
        c.generation = (uint64_t)round + 1;
        c.salt = rng_next(&rng);
        c.n_slots = (uint32_t)(rng_next(&rng) % 6);            /* 0 and 5 are corrupt */
        uint32_t cum[ARQ_MAX_SLOTS];
        for (int i = 0; i < ARQ_MAX_SLOTS; i++) cum[i] = (uint32_t)rng_next(&rng);
        if (rng_next(&rng) % 4) {                               /* mostly well formed */
            for (int i = 1; i < ARQ_MAX_SLOTS; i++)
                if (cum[i] < cum[i - 1]) { uint32_t x = cum[i]; cum[i] = cum[i - 1]; cum[i - 1] = x; }
            for (int i = 1; i < ARQ_MAX_SLOTS; i++)
                if (cum[i] < cum[i - 1]) cum[i] = cum[i - 1];
            if (rng_next(&rng) % 3 == 0) cum[1] = cum[0];       /* a zero-weight slot */
        }
        for (int i = 0; i < ARQ_MAX_SLOTS; i++) {
            c.cum_weight[i] = cum[i];
            c.variant[i] = (uint32_t)(rng_next(&rng) % 32);
        }
        for (int k = 0; k < ARQ_MAX_KNOBS; k++) c.global_knobs[k] = pick_value(&rng);
        for (int k = 0; k < ARQ_MAX_KNOBS * ARQ_MAX_SLOTS; k++) c.knobs[k] = pick_value(&rng);
        int lapsed = rng_next(&rng) % 5 == 0;
        publish_lease(base, p, &c, lapsed);
        uint32_t n = model_slots(&c, lapsed);
        /* Mixed order: sometimes a slot read first (header + that slot), then keys (other slots
         * prepared lazily), then every slot by number. */
        if (round & 1) {
            unsigned s = (unsigned)(rng_next(&rng) % (ARQ_MAX_SLOTS + 1));
            int rc = api.read_slot(p, s, &v);
            EXPECT(rc == (s < n ? ARQ_OK : ARQ_ESLOT), "read_slot(%u) rc %d with %u slots", s, rc, n);
            if (rc == ARQ_OK) expect_view(d, NK, &c, lapsed, s, &v, "read_slot first");
        }
        for (uint64_t key = 0; key < 64; key++) {
            uint64_t kk = key * 0x100000001b3ull + (uint64_t)round;
            int rc = api.read(p, kk, &v);
            EXPECT(rc == ARQ_OK, "read rc %d", rc);
            uint32_t slot = model_pick(&c, n, kk);
            expect_view(d, NK, &c, lapsed, slot, &v, "read");
            uint32_t again = v.slot;
            api.read(p, kk, &v);
            EXPECT(v.slot == again, "same key, same slot within a generation");
        }
        for (unsigned s = 0; s <= ARQ_MAX_SLOTS + 1; s++) {
            int rc = api.read_slot(p, s, &v);
            EXPECT(rc == (s < n ? ARQ_OK : ARQ_ESLOT), "read_slot(%u) rc %d with %u slots", s, rc, n);
            if (rc == ARQ_OK) expect_view(d, NK, &c, lapsed, s, &v, "read_slot");
        }
        /* Another plane in the same thread now and then: its own values, zeros past its 2 knobs,
         * and the first plane's cache rebuilt correctly afterwards. */
        if (round % 7 == 3) {
            api.read(q, 5, &v);
            EXPECT(v.slot == 0 && v.knob[0] == 0.25 && v.knob[1] == 1.0, "second plane: %g %g", v.knob[0], v.knob[1]);
            for (unsigned k = 2; k < ARQ_MAX_KNOBS; k++) EXPECT(v.knob[k] == 0.0, "second plane knob %u = %g", k, v.knob[k]);
            api.read(p, 3, &v);
            expect_view(d, NK, &c, lapsed, model_pick(&c, n, 3), &v, "after plane switch");
        }
        if (check_failures > 10) break;
    }
    munmap(base, st.st_size);
    api.close(q);
    api.close(p);
    return NULL;
}

/* The checks in this thread and in a new one (a thread's first read allocates its cache). */
static int run_checks(const char *name) {
    check_arg a = {name, 0};
    check_read_path(&a);
    char n2[72];
    snprintf(n2, sizeof n2, "%s-t", name);
    check_arg b = {n2, 0};
    pthread_t th;
    if (pthread_create(&th, NULL, check_read_path, &b) == 0) pthread_join(th, NULL);
    else EXPECT(0, "pthread_create");
    return check_failures;
}

static void load_so(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "dlopen %s: %s\n", path, dlerror()); exit(5); }
    api.open = (int (*)(const char *, const arq_decl *, arq_plane **))dlsym(h, "arq_open");
    api.close = (void (*)(arq_plane *))dlsym(h, "arq_close");
    api.read = (int (*)(arq_plane *, uint64_t, arq_view *))dlsym(h, "arq_read");
    api.read_slot = (int (*)(arq_plane *, unsigned, arq_view *))dlsym(h, "arq_read_slot");
    api.tick = (void (*)(arq_plane *))dlsym(h, "arq_tick");
    api.strerror = (const char *(*)(int))dlsym(h, "arq_strerror");
    if (!api.open || !api.close || !api.read || !api.read_slot || !api.tick || !api.strerror) {
        fprintf(stderr, "%s: missing arq_* symbols\n", path);
        exit(5);
    }
}

int main(int argc, char **argv) {
    const char *so = NULL;
    int check_only = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--so") == 0 && i + 1 < argc) so = argv[++i];
        else if (strcmp(argv[i], "--check") == 0) check_only = 1;
        else argc = 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME [--so PATH] [--check]\n", argv[0]);
        return 2;
    }
    if (so) load_so(so);
    if (run_checks(argv[1])) {
        fprintf(stderr, "%s: %d read-path checks failed; not measuring\n", argv[0], check_failures);
        return 1;
    }
    if (check_only) {
        printf("{\"read_path_checks\": \"passed\", \"library\": \"%s\"}\n", so ? "shared" : "static");
        return 0;
    }
    arq_knob_decl knobs[8];
    char names[8][16];
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        knobs[i] = (arq_knob_decl){names[i], -1e15, 1e15, 0, 0};
    }
    arq_field_decl f[] = {{"x", ""}};
    arq_decl d = {knobs, 8, f, 1, NULL, 0, 1, 1024, 0600, ARQ_DECL_NO_TICK_THREAD, 0};
    arq_plane *p;
    int rc = api.open(argv[1], &d, &p);
    if (rc) { fprintf(stderr, "arq_open(%s): %s\n", argv[1], api.strerror(rc)); return 3; }
    char shm[96];
    snprintf(shm, sizeof shm, "/arqon.%s", argv[1]);
    int fd = shm_open(shm, O_RDWR, 0);
    struct stat st;
    fstat(fd, &st);
    uint8_t *base = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ARQ_STORE_REL(&arq_ctl(base)->lease_deadline_ns, mono_ns() + 3600000000000ull);
    api.tick(p);  /* lease active: two slots served */
    calibrate();

    double publish, unfenced = method_diff(p, base, 0, &publish);
    double fenced = method_diff(p, base, 1, NULL);
    dist tc, tu, xc = {-1, -1, -1}, xu = {-1, -1, -1};
    double ov;
    method_tsc(p, base, &tc, &tu, &ov);
    int xok = method_xthread(p, base, &xc, &xu, ov) == 0;
    /* Unchanged reads back to back (throughput, not latency) for comparison. */
    arq_view v;
    uint64_t sink = 0, t0 = mono_ns();
    for (int i = 0; i < 1000000; i++) { api.read(p, (uint64_t)i, &v); sink += v.slot; }
    double unchanged_mean = (double)(mono_ns() - t0) / 1e6;
    g_sink += sink;

    printf("{\"read_changed_ns_p50\": %.2f, \"read_changed_unfenced_ns_p50\": %.2f, \"publish_c_ns_p50\": %.2f, "
           "\"read_changed_tsc_ns_p50\": %.2f, \"read_changed_tsc_ns_p99\": %.2f, \"read_changed_tsc_ns_mean\": %.2f, "
           "\"read_unchanged_tsc_ns_p50\": %.2f, \"read_unchanged_tsc_ns_p99\": %.2f, \"read_unchanged_tsc_ns_mean\": %.2f, ",
           fenced, unfenced, publish, tc.p50, tc.p99, tc.mean, tu.p50, tu.p99, tu.mean);
    if (xok)
        printf("\"read_changed_xthread_ns_p50\": %.2f, \"read_changed_xthread_ns_p99\": %.2f, "
               "\"read_changed_xthread_ns_mean\": %.2f, \"read_unchanged_xthread_ns_mean\": %.2f, ",
               xc.p50, xc.p99, xc.mean, xu.mean);
    printf("\"timing_overhead_ns\": %.2f, \"read_unchanged_ns_mean\": %.2f, \"library\": \"%s\"}\n",
           ov * ns_per_tick, unchanged_mean, so ? "shared" : "static");
    munmap(base, st.st_size);
    close(fd);
    api.close(p);
    return 0;
}
