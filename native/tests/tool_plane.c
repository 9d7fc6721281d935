/* tool_plane: a real data-plane process for cross-process tests and benchmarks.
 *
 *   tool_plane produce NAME RINGS N [--lossless]   emit N records per ring (one thread each);
 *                                                  f0 = attempt index, f1 = ring; then wait for stdin EOF
 *   tool_plane read NAME SECONDS THREADS           readers checksum every view (see check_view)
 *   tool_plane lease NAME                          report how long after the lease deadline slot 0 took over
 *   tool_plane bench NAME SECONDS                  emit/read timings while another process drains
 *   tool_plane idle NAME                           declare, then wait for stdin EOF
 *
 * Every mode prints "ready <pid>" once the segment exists, and one JSON line of results.
 * Knob layout (wide bounds so values pass unclamped): k0 = gen*1000 + slot*100, k[i] = k0 + i.
 */
#define _GNU_SOURCE
#include "arqon.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define NK 8
static arq_knob_decl knobs[NK];
static const arq_field_decl fields[] = {{"f0", ""}, {"f1", ""}, {"latency", "s"}, {"errors", "1"}};
static const arq_variant_decl variants[] = {{"v0"}, {"v1"}, {"v2"}, {"v3"}};
static arq_plane *P;
static volatile int stop;

static void open_plane(const char *name, unsigned rings, unsigned cap) {
    static char names[NK][8];
    for (int i = 0; i < NK; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        knobs[i] = (arq_knob_decl){names[i], -1e15, 1e15, (double)i, 0};
    }
    arq_decl d = {knobs, NK, fields, 4, variants, 4, rings, cap, 0600, 0, 100};
    int rc = arq_open(name, &d, &P);
    if (rc) { fprintf(stderr, "arq_open: %s\n", arq_strerror(rc)); exit(2); }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
}

static void wait_stdin_eof(void) {
    char buf[256];
    while (fread(buf, 1, sizeof buf, stdin) > 0) {}
}

/* ---- produce ---- */
static uint64_t n_per_ring;
static int lossless;
static void *produce_main(void *arg) {
    unsigned ring = (unsigned)(uintptr_t)arg;
    double f[4] = {0, (double)ring, 0, 0};
    arq_view v;
    for (uint64_t i = 0; i < n_per_ring; i++) {
        arq_read(P, i, &v);
        f[0] = (double)i;
        while (arq_emit(P, ring, &v, f) == ARQ_EDROPPED && lossless) {}
    }
    return NULL;
}

/* ---- read ---- */
static long long reads_total, torn_total, baseline_reads;
static int check_view(const arq_view *v) {
    if (v->generation == 0) return 1;           /* the data plane's initial snapshot */
    double k0 = (double)(v->generation * 1000 + v->slot * 100);
    for (int i = 0; i < NK; i++)
        if (v->knob[i] != k0 + i) return 0;
    return v->variant == (uint32_t)((v->generation + v->slot) % 4);
}
static void *read_main(void *arg) {
    long long n = 0, torn = 0, base = 0;
    arq_view v;
    for (uint64_t key = (uintptr_t)arg * 1000003u; !__atomic_load_n(&stop, __ATOMIC_RELAXED); key++) {
        for (int j = 0; j < 256; j++, n++) {
            arq_read(P, key * 256 + j, &v);
            if (!check_view(&v)) torn++;
            if (v.slot == 0) base++;
        }
    }
    __atomic_add_fetch(&reads_total, n, __ATOMIC_RELAXED);
    __atomic_add_fetch(&torn_total, torn, __ATOMIC_RELAXED);
    __atomic_add_fetch(&baseline_reads, base, __ATOMIC_RELAXED);
    return NULL;
}

/* ---- lease ---- */
static uint64_t lapse_seen_ns;
/* Reports when the first read after the lease went from active to lapsed served slot 0.
 * Gives up after 3 s (lapse_seen_ns stays 0) so a reader starved of CPU during the short
 * active window fails the test instead of hanging it. */
static void *lease_reader(void *arg) {
    arq_view v;
    int was_active = 0;
    uint64_t give_up = mono_ns() + 3000000000ull;
    for (uint64_t key = 0; !__atomic_load_n(&stop, __ATOMIC_RELAXED); key++) {
        arq_read(P, key, &v);
        int active = arq_lease_active(P);
        if (active) was_active = 1;
        if ((key & 1023) == 0 && mono_ns() > give_up) break;
        if (was_active && !active && v.slot == 0 && !lapse_seen_ns) {
            lapse_seen_ns = mono_ns();
            __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
        }
    }
    return arg;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static double pct(uint64_t *xs, size_t n, double q) {
    qsort(xs, n, sizeof *xs, cmp_u64);
    return (double)xs[(size_t)(q * (double)(n - 1))];
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: see source header\n"); return 2; }
    const char *mode = argv[1], *name = argv[2];
    if (!strcmp(mode, "produce") && argc >= 5) {
        unsigned rings = (unsigned)atoi(argv[3]);
        n_per_ring = strtoull(argv[4], NULL, 10);
        lossless = argc > 5 && !strcmp(argv[5], "--lossless");
        open_plane(name, rings, 1u << 16);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 3;   /* "go" from the consumer */
        pthread_t th[ARQ_MAX_RINGS];
        uint64_t t0 = mono_ns();
        for (unsigned r = 0; r < rings; r++) pthread_create(&th[r], NULL, produce_main, (void *)(uintptr_t)r);
        for (unsigned r = 0; r < rings; r++) pthread_join(th[r], NULL);
        double secs = (double)(mono_ns() - t0) / 1e9;
        printf("{\"emitted_per_ring\": %llu, \"seconds\": %.6f, \"drops\": [", (unsigned long long)n_per_ring, secs);
        for (unsigned r = 0; r < rings; r++) printf("%s%llu", r ? ", " : "", (unsigned long long)arq_drops(P, r));
        printf("]}\n");
        fflush(stdout);
        wait_stdin_eof();
    } else if (!strcmp(mode, "read") && argc >= 5) {
        double secs = atof(argv[3]);
        int threads = atoi(argv[4]);
        open_plane(name, 1, 1024);
        pthread_t th[16];
        for (int i = 0; i < threads && i < 16; i++) pthread_create(&th[i], NULL, read_main, (void *)(uintptr_t)i);
        usleep((useconds_t)(secs * 1e6));
        __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
        for (int i = 0; i < threads && i < 16; i++) pthread_join(th[i], NULL);
        printf("{\"reads\": %lld, \"torn\": %lld, \"baseline_reads\": %lld}\n", reads_total, torn_total, baseline_reads);
        fflush(stdout);
        wait_stdin_eof();
    } else if (!strcmp(mode, "lease")) {
        open_plane(name, 1, 1024);
        pthread_t th;
        pthread_create(&th, NULL, lease_reader, NULL);
        pthread_join(th, NULL);
        printf("{\"lapse_seen_ns\": %llu}\n", (unsigned long long)lapse_seen_ns);
        fflush(stdout);
        wait_stdin_eof();
    } else if (!strcmp(mode, "bench") && argc >= 4) {
        double secs = atof(argv[3]);
        open_plane(name, 1, 1u << 16);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 3;   /* the drainer is attached */
        enum { B = 64 };
        size_t cap = 1 << 20, ne = 0, nr = 0;
        uint64_t *emit_s = malloc(cap * 8), *read_s = malloc(cap * 8);
        double f[4] = {1, 2, 3, 4};
        arq_view v;
        long long drops = 0, emitted = 0;
        uint64_t end = mono_ns() + (uint64_t)(secs * 1e9);
        while (mono_ns() < end && ne < cap) {
            uint64_t t0 = mono_ns();
            for (int i = 0; i < B; i++) { if (arq_emit(P, 0, &v, f)) drops++; else emitted++; }
            uint64_t t1 = mono_ns();
            for (int i = 0; i < B; i++) arq_read(P, (uint64_t)i, &v);
            uint64_t t2 = mono_ns();
            emit_s[ne++] = (t1 - t0);
            read_s[nr++] = (t2 - t1);
            if ((ne & 63) == 0) usleep(20);   /* let the drainer keep up: measure emit, not drops */
        }
        printf("{\"emit_ns_p50\": %.2f, \"emit_ns_p99\": %.2f, \"read_ns_p50\": %.2f, \"read_ns_p99\": %.2f, "
               "\"batches\": %zu, \"emitted\": %lld, \"drops\": %lld}\n",
               pct(emit_s, ne, 0.5) / B, pct(emit_s, ne, 0.99) / B, pct(read_s, nr, 0.5) / B, pct(read_s, nr, 0.99) / B,
               ne, emitted, drops);
        fflush(stdout);
        free(emit_s); free(read_s);
        wait_stdin_eof();
    } else if (!strcmp(mode, "idle")) {
        open_plane(name, 2, 1024);
        wait_stdin_eof();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    arq_close(P);
    return 0;
}
