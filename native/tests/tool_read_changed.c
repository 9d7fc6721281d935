/* tool_read_changed NAME [--so PATH]: cost of arq_read right after a publish (the read that
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
 *          transfers from the publisher's core. Machine-bound; context, not the floor.
 * --so PATH runs everything through dlopen(PATH) instead of the static library: the shared
 * object's TLS access, and a check that it can be dlopen()ed at all.
 * Publishing in-process uses the same shm_proto.h code as the daemon's helper. */
#define _GNU_SOURCE
#include "arqon.h"
#include "shm_proto.h"

#include <dlfcn.h>
#include <fcntl.h>
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
    void (*tick)(arq_plane *);
    const char *(*strerror)(int);
} api_t;
static api_t api = {arq_open, arq_close, arq_read, arq_tick, arq_strerror};
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
 * the next one (unchanged); minus the cost of timing nothing. */
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
        t0 = ts_begin();
        api.read(p, (uint64_t)i + 1, &v);
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
            if (last) ch[nch++] = t;        /* the first read sees the initial snapshot */
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

static void load_so(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "dlopen %s: %s\n", path, dlerror()); exit(5); }
    api.open = (int (*)(const char *, const arq_decl *, arq_plane **))dlsym(h, "arq_open");
    api.close = (void (*)(arq_plane *))dlsym(h, "arq_close");
    api.read = (int (*)(arq_plane *, uint64_t, arq_view *))dlsym(h, "arq_read");
    api.tick = (void (*)(arq_plane *))dlsym(h, "arq_tick");
    api.strerror = (const char *(*)(int))dlsym(h, "arq_strerror");
    if (!api.open || !api.close || !api.read || !api.tick || !api.strerror) {
        fprintf(stderr, "%s: missing arq_* symbols\n", path);
        exit(5);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME [--so PATH]\n", argv[0]);
        return 2;
    }
    const char *so = NULL;
    if (argc >= 4 && strcmp(argv[2], "--so") == 0) {
        so = argv[3];
        load_so(so);
    }
    arq_knob_decl knobs[8];
    char names[8][8];
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
