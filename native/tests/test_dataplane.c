/* In-process tests of libarqon; also built with ASan/UBSan and TSan (`make sanitize`).
 * The daemon side is emulated with the same shm_proto.h code the cffi helper uses. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
static int quick;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const arq_knob_decl KNOBS[] = {
    {"alpha", -1e12, 1e12, 0.0, 0},
    {"beta", 0.0, 10.0, 5.0, 0},
    {"threads", 1, 8, 4, ARQ_KNOB_INTEGER},
    {"gain", -1e12, 1e12, 1.0, ARQ_KNOB_GLOBAL},
};
static const arq_field_decl FIELDS[] = {{"latency", "s"}, {"errors", "1"}, {"a", ""}, {"b", ""}};
static const arq_variant_decl VARIANTS[] = {{"fp32"}, {"int8"}};

static arq_decl base_decl(void) {
    arq_decl d = {KNOBS, 4, FIELDS, 4, VARIANTS, 2, 2, 1024, 0600, ARQ_DECL_NO_TICK_THREAD, 0};
    return d;
}

static char NAME[64];

/* Daemon emulation: map the segment and publish like arqd_publish does. */
typedef struct { uint8_t *base; size_t size; } daemon_map;
static daemon_map dmap(void) {
    char shm[80];
    snprintf(shm, sizeof shm, "/arqon.%s", NAME);
    int fd = shm_open(shm, O_RDWR, 0);
    struct stat st;
    fstat(fd, &st);
    daemon_map m = {mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), (size_t)st.st_size};
    close(fd);
    return m;
}
static void dpublish(daemon_map m, const arq_snapshot_copy *c, uint64_t lease) {
    arq_snapshot_publish(arq_snap(m.base), c);
    ARQ_STORE_REL(&arq_ctl(m.base)->lease_deadline_ns, lease);
}
static arq_snapshot_copy two_slot(uint64_t gen, double w1) {
    arq_snapshot_copy c;
    memset(&c, 0, sizeof c);
    c.generation = gen;
    c.n_slots = 2;
    c.cum_weight[0] = (uint32_t)((1.0 - w1) * 4294967295.0);
    c.cum_weight[1] = 0xffffffffu;
    c.variant[1] = 1;
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 4; k++) c.knobs[s * ARQ_MAX_KNOBS + k] = (double)(gen * 1000 + s * 100 + k);
    c.global_knobs[3] = 7.0;
    return c;
}

static void test_open_errors(void) {
    arq_plane *p;
    arq_decl d = base_decl();
    CHECK(arq_open("bad/name", &d, &p) == ARQ_ENAME, "slash in name");
    CHECK(arq_open("", &d, &p) == ARQ_ENAME, "empty name");
    d.mode = 0666;
    CHECK(arq_open(NAME, &d, &p) == ARQ_EMODE, "o+w mode");
    d = base_decl(); d.ring_capacity = 1000;
    CHECK(arq_open(NAME, &d, &p) == ARQ_EINVAL, "non power of two");
    d = base_decl(); d.n_knobs = 0;
    CHECK(arq_open(NAME, &d, &p) == ARQ_EINVAL, "no knobs");
    arq_knob_decl bad[] = {{"x", 1.0, 0.0, 0.5, 0}};
    d = base_decl(); d.knobs = bad; d.n_knobs = 1;
    CHECK(arq_open(NAME, &d, &p) == ARQ_EINVAL, "min > max");
    arq_knob_decl nan[] = {{"x", 0.0, NAN, 0.5, 0}};
    d.knobs = nan;
    CHECK(arq_open(NAME, &d, &p) == ARQ_EINVAL, "nan bound");
    CHECK(strlen(arq_strerror(ARQ_EDROPPED)) > 0 && strcmp(arq_strerror(-999), "unknown error") == 0, "strerror");
}

static void test_baseline_and_bounds(void) {
    arq_plane *p;
    arq_decl d = base_decl();
    int rc = arq_open(NAME, &d, &p);
    CHECK(rc == 0, "open: %s", arq_strerror(rc));
    if (rc) return;
    arq_view v;
    arq_read(p, 42, &v);
    CHECK(v.slot == 0 && v.generation == 0 && v.knob[1] == 5.0 && v.knob[2] == 4.0, "initial baseline");
    CHECK(!arq_lease_active(p), "no lease yet");
    /* A second open of a live segment is refused. */
    arq_plane *q;
    CHECK(arq_open(NAME, &d, &q) == ARQ_EBUSY, "live owner");

    daemon_map m = dmap();
    arq_snapshot_copy c = two_slot(3, 0.5);
    c.knobs[1] = 1e9; c.knobs[2] = -5; c.knobs[ARQ_MAX_KNOBS + 1] = NAN; c.knobs[ARQ_MAX_KNOBS + 2] = 2.6;
    dpublish(m, &c, mono_ns() + 5000000000ull);
    arq_tick(p);
    CHECK(arq_lease_active(p), "lease active after publish");
    int seen[2] = {0, 0};
    for (uint64_t key = 0; key < 20000; key++) {
        arq_read(p, key, &v);
        CHECK(v.generation == 3, "generation %lu", (unsigned long)v.generation);
        CHECK(v.knob[1] >= 0.0 && v.knob[1] <= 10.0, "beta bounded: %g", v.knob[1]);
        CHECK(v.knob[2] >= 1.0 && v.knob[2] <= 8.0 && v.knob[2] == rint(v.knob[2]), "threads integer in bounds: %g", v.knob[2]);
        CHECK(v.knob[3] == 7.0, "GLOBAL knob takes the global row: %g", v.knob[3]);
        if (v.slot < 2) seen[v.slot]++;
        arq_view again;
        arq_read(p, key, &again);
        CHECK(again.slot == v.slot, "same key, same slot");
        if (failures > 20) return;
    }
    CHECK(seen[0] > 9000 && seen[1] > 9000, "50/50 split: %d %d", seen[0], seen[1]);
    arq_read_slot(p, 1, &v);
    CHECK(v.knob[1] == 0.0 && v.knob[2] == 3.0 && v.variant == 1, "NaN -> min, 2.6 -> 3: %g %g", v.knob[1], v.knob[2]);
    CHECK(arq_read_slot(p, 2, &v) == ARQ_ESLOT, "inactive slot");
    CHECK(ARQ_LOAD_ACQ(&arq_ctl(m.base)->ack_generation) == 3, "ack");

    /* Lease lapse: baseline only, GLOBAL knobs back to slot 0's row. */
    ARQ_STORE_REL(&arq_ctl(m.base)->lease_deadline_ns, mono_ns() - 1);
    arq_tick(p);
    CHECK(!arq_lease_active(p), "lapsed");
    CHECK(ARQ_LOAD_ACQ(&arq_ctl(m.base)->lease_state) == ARQ_LEASE_LAPSED, "lapse visible in segment");
    for (uint64_t key = 0; key < 1000; key++) {
        arq_read(p, key, &v);
        CHECK(v.slot == 0 && v.knob[3] == 3003.0, "lapsed view slot %u gain %g", v.slot, v.knob[3]);
        if (failures > 20) return;
    }
    CHECK(ARQ_LOAD_RLX(&arq_ctl(m.base)->lease_lapses) == 1, "lapse counted");
    /* Corrupt weights (decreasing) fall back to slot 0. */
    c = two_slot(4, 0.5);
    c.n_slots = 3; c.cum_weight[0] = 100; c.cum_weight[1] = 50;
    dpublish(m, &c, mono_ns() + 5000000000ull);
    arq_tick(p);
    for (uint64_t key = 0; key < 1000; key++) { arq_read(p, key, &v); CHECK(v.slot == 0, "corrupt weights"); if (failures > 20) return; }
    munmap(m.base, m.size);
    arq_close(p);
}

static void test_ring(void) {
    arq_plane *p;
    arq_decl d = base_decl();
    d.ring_capacity = 64;
    CHECK(arq_open(NAME, &d, &p) == 0, "open");
    daemon_map m = dmap();
    arq_shm_header *h = arq_hdr(m.base);
    arq_shm_ring *r = arq_ring(m.base, h->rings_off, h->ring_stride, 0);
    double f[4] = {1, 2, 3, 4};
    arq_view v;
    arq_read(p, 1, &v);
    int dropped = 0;
    for (int i = 0; i < 100; i++) {
        f[0] = i;
        int rc = arq_emit(p, 0, &v, f);
        if (rc == ARQ_EDROPPED) dropped++;
        else CHECK(rc == 0, "emit");
    }
    CHECK(dropped == 36 && arq_drops(p, 0) == 36, "drop newest when full: %d", dropped);
    CHECK(arq_emit(p, 9, &v, f) == ARQ_ERING, "bad ring");
    uint64_t out[64 * 8];
    int64_t n = arq_ring_drain(r, 64, h->record_size / 8, out, 64);
    CHECK(n == 64, "drained %ld", (long)n);
    for (int i = 0; i < n; i++) {
        double f0;
        memcpy(&f0, &out[i * 8 + 4], 8);
        CHECK(out[i * 8] == (uint64_t)i + 1 && f0 == i, "record %d seq %lu f0 %g", i, (unsigned long)out[i * 8], f0);
    }
    CHECK(arq_emit(p, 0, &v, f) == 0, "space again after drain");
    /* Corrupt indices are refused, not trusted. */
    ARQ_STORE_REL(&r->tail, 100000);
    CHECK(arq_ring_drain(r, 64, h->record_size / 8, out, 64) == -1, "corrupt tail detected");
    munmap(m.base, m.size);
    arq_close(p);
}

/* Concurrency (meaningful under TSan): a publisher thread and reader threads with checksums,
 * a producer thread and a consumer thread. */
static volatile int stop_flag;
static arq_plane *cp;
static daemon_map cm;
static long torn_total, reads_total;

static void *publisher(void *a) {
    for (uint64_t g = 10; !__atomic_load_n(&stop_flag, __ATOMIC_RELAXED); g++) {
        arq_snapshot_copy c = two_slot(g, 0.3);
        c.global_knobs[3] = (double)(g * 1000 + 3);
        dpublish(cm, &c, mono_ns() + 1000000000ull);
    }
    return a;
}
static void *reader(void *a) {
    long torn = 0, n = 0;
    arq_view v;
    for (uint64_t key = (uintptr_t)a; !__atomic_load_n(&stop_flag, __ATOMIC_RELAXED); key += 7, n++) {
        arq_read(cp, key, &v);
        if (v.generation < 10) continue;  /* the initial snapshot */
        double b = (double)(v.generation * 1000 + v.slot * 100);
        if (v.knob[0] != b || v.knob[1] != 10.0 || v.knob[3] != (double)(v.generation * 1000 + 3)) torn++;
    }
    __atomic_add_fetch(&torn_total, torn, __ATOMIC_RELAXED);
    __atomic_add_fetch(&reads_total, n, __ATOMIC_RELAXED);
    return NULL;
}
static void *ticker(void *a) {
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) { arq_tick(cp); usleep(100); }
    return a;
}

static void test_concurrent_seqlock(void) {
    arq_decl d = base_decl();
    CHECK(arq_open(NAME, &d, &cp) == 0, "open");
    cm = dmap();
    pthread_t w, t, rd[2];
    stop_flag = 0;
    pthread_create(&w, NULL, publisher, NULL);
    pthread_create(&t, NULL, ticker, NULL);
    for (long i = 0; i < 2; i++) pthread_create(&rd[i], NULL, reader, (void *)i);
    usleep(quick ? 200000 : 1000000);
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    pthread_join(w, NULL); pthread_join(t, NULL);
    for (int i = 0; i < 2; i++) pthread_join(rd[i], NULL);
    CHECK(torn_total == 0, "torn reads: %ld of %ld", torn_total, reads_total);
    CHECK(reads_total > 1000, "reads happened: %ld", reads_total);
    munmap(cm.base, cm.size);
    arq_close(cp);
}

static uint64_t produced_n;
static void *producer(void *a) {
    double f[4] = {0};
    arq_view v = {0};
    for (uint64_t i = 0; i < produced_n; i++) {
        f[0] = (double)i;
        while (arq_emit(cp, 1, &v, f) == ARQ_EDROPPED) f[0] = (double)i;  /* retry: lossless for the test */
    }
    return a;
}
static void test_concurrent_ring(void) {
    arq_decl d = base_decl();
    d.ring_capacity = 256;
    CHECK(arq_open(NAME, &d, &cp) == 0, "open");
    cm = dmap();
    arq_shm_header *h = arq_hdr(cm.base);
    arq_shm_ring *r = arq_ring(cm.base, h->rings_off, h->ring_stride, 1);
    produced_n = quick ? 200000 : 2000000;
    pthread_t t;
    pthread_create(&t, NULL, producer, NULL);
    uint64_t got = 0, bad = 0, buf[256 * 8];
    while (got < produced_n) {
        int64_t n = arq_ring_drain(r, 256, 8, buf, 256);
        for (int64_t i = 0; i < n; i++) {
            double f0;
            memcpy(&f0, &buf[i * 8 + 4], 8);
            if (buf[i * 8] != got + 1 || f0 != (double)got) bad++;
            got++;
        }
    }
    pthread_join(t, NULL);
    CHECK(bad == 0, "out of order/corrupt records: %lu", (unsigned long)bad);
    munmap(cm.base, cm.size);
    arq_close(cp);
}

/* A data plane that dies without arq_close leaves its segment; the next open takes it over. */
static void test_stale_takeover(void) {
    pid_t pid = fork();
    if (pid == 0) {
        arq_plane *p;
        arq_decl d = base_decl();
        _exit(arq_open(NAME, &d, &p) == 0 ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child opened");
    daemon_map m = dmap();
    uint64_t old_epoch = arq_hdr(m.base)->epoch;
    munmap(m.base, m.size);
    arq_plane *p;
    arq_decl d = base_decl();
    int rc = arq_open(NAME, &d, &p);
    CHECK(rc == 0, "takeover: %s", arq_strerror(rc));
    if (rc) return;
    m = dmap();
    CHECK(arq_hdr(m.base)->epoch != old_epoch, "new epoch");
    munmap(m.base, m.size);
    arq_close(p);
    /* Garbage under our name (not even a header) is replaced, not trusted. */
    char shm[80];
    snprintf(shm, sizeof shm, "/arqon.%s", NAME);
    int fd = shm_open(shm, O_RDWR | O_CREAT, 0600);
    CHECK(write(fd, "garbage", 7) == 7, "write garbage");
    close(fd);
    rc = arq_open(NAME, &d, &p);
    CHECK(rc == 0, "garbage takeover: %s", arq_strerror(rc));
    if (!rc) arq_close(p);
}

int main(int argc, char **argv) {
    quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    snprintf(NAME, sizeof NAME, "test-dp-%d", (int)getpid());
    test_open_errors();
    test_baseline_and_bounds();
    test_ring();
    test_concurrent_seqlock();
    test_concurrent_ring();
    test_stale_takeover();
    if (failures) { fprintf(stderr, "%d failed\n", failures); return 1; }
    printf("test_dataplane: all passed\n");
    return 0;
}
