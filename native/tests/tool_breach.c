/* tool_breach: the C data plane of `arqond bench decision`.
 *
 *   tool_breach NAME [RATE]
 *
 * Declares 8 knobs k0..k7 in [0, 1] (initial 0.5) and two fields, `latency_s` and `cost`, on
 * two rings, prints "ready <pid>", then:
 *   - a producer thread emits RATE records/s on ring 0 (paced every 500 us, keys 0, 1, 2, ...:
 *     each record carries the view arq_read gave its key, so a candidate slot gets its share):
 *     latency_s ~ 1 ms (healthy), cost = sum_i (k_i - 0.3)^2 + noise (something to tune);
 *   - the main thread reads commands from stdin, one per line:
 *       rate R                       set the producer's rate (records/s)
 *       breach N SETTLE_US BURST RE_US
 *                                    measure N breaches (below): {"armed": generation}, then
 *                                    one JSON line per breach, then {"done": N, ...}
 *       stats                        {"emitted": .., "drops": [ring0, ring1]}
 *     EOF ends the process.
 *
 * One breach: wait for a snapshot generation newer than the last one measured that gives some
 * key a candidate slot (slot != 0); then wait, watching the daemon's per-cycle heartbeat in the
 * control block, until the daemon may use that candidate's telemetry (ack seen + SETTLE_US, see
 * breach()); T0 = CLOCK_MONOTONIC, emit BURST records with latency_s = 1.0 s (far above any
 * sane SLO) under that key's view on ring 1; then poll arq_read(key) every ~10 us until it
 * returns slot 0: T1. e2e = T1 - T0 is "breaching record written -> baseline visible to
 * arq_read", measured in this process. If the baseline has not come back after RE_US, another
 * burst is written (counted in "bursts"; T0 stays the first one), so a burst the daemon could
 * not use shows up as a long e2e, never as a hang.
 */
#define _GNU_SOURCE
#include "arqon.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define NK 8
#define KEYS 4096                    /* keys scanned for a candidate slot (canary 10%: ~400 hit) */
#define POLL_NS 10000                /* revert poll period; timer slack set to 1 us below */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* xorshift64*: per-thread noise without libc's locked rand(). */
static inline double unit(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static arq_knob_decl knobs[NK];
static const arq_field_decl fields[] = {{"latency_s", "s"}, {"cost", "1"}};
static arq_plane *P;
static volatile int stop;
static uint64_t rate_rps;            /* records/s, written by main, read by the producer */
static uint64_t rate_epoch;          /* bumped on every rate change: the producer restarts its pacing */
static uint64_t emitted;

static void fill_fields(const arq_view *v, uint64_t *rng, double latency, double *f) {
    double c = 0;
    for (int i = 0; i < NK; i++) c += (v->knob[i] - 0.3) * (v->knob[i] - 0.3);
    f[0] = latency;
    f[1] = c + 0.01 * unit(rng);
}

static void *produce_main(void *arg) {
    uint64_t rng = 0x9e3779b97f4a7c15ull, key = 0, done = 0, epoch = ~0ull, t_start = 0;
    double f[2];
    arq_view v;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        uint64_t now = mono_ns(), e = __atomic_load_n(&rate_epoch, __ATOMIC_ACQUIRE);
        if (e != epoch) { epoch = e; t_start = now; done = 0; }
        double r = (double)__atomic_load_n(&rate_rps, __ATOMIC_RELAXED);
        uint64_t due = (uint64_t)(r * (double)(now - t_start) / 1e9);
        /* Never burst more than 100 ms worth after a stall: pacing, not catch-up. */
        if (due > done + (uint64_t)(r / 10) + 1) done = due - (uint64_t)(r / 10);
        for (; done < due; done++, key++) {
            arq_read(P, key, &v);
            fill_fields(&v, &rng, 0.001 * (1.0 + 0.1 * unit(&rng)), f);
            arq_emit(P, 0, &v, f);   /* a full ring drops and counts: the daemon's drops metric */
        }
        __atomic_store_n(&emitted, key, __ATOMIC_RELAXED);
        sleep_ns(500000);
    }
    return arg;
}

/* The first key whose view is a candidate slot in generation > after, or -1. */
static long find_candidate(uint64_t after, arq_view *out) {
    arq_view v;
    for (uint64_t k = 0; k < KEYS; k++) {
        arq_read(P, k, &v);
        if (v.generation <= after) return -1;
        if (v.slot != 0) { *out = v; return (long)k; }
    }
    return -1;
}

/* The daemon's heartbeat: the start time (CLOCK_MONOTONIC) of its last completed cycle, which it
 * stores at the end of every cycle. Read from a private read-only mapping of the control block
 * (libarqon keeps its own mapping opaque): the bench uses it to breach at the first moment the
 * daemon may use the candidate's telemetry, so e2e measures the daemon, not a guessed wait. */
static const volatile uint64_t *daemon_hb;

static int map_control(const char *name) {
    char path[64];
    snprintf(path, sizeof path, "/arqon.%s", name);
    int fd = shm_open(path, O_RDONLY, 0);
    if (fd < 0) return -1;
    size_t len = ARQ_SHM_CONTROL_OFF + sizeof(arq_shm_control);
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return -1;
    daemon_hb = (const volatile uint64_t *)((const uint8_t *)m + ARQ_SHM_CONTROL_OFF +
                                            offsetof(arq_shm_control, daemon_heartbeat_ns));
    return 0;
}

static uint64_t heartbeat(void) { return __atomic_load_n(daemon_hb, __ATOMIC_ACQUIRE); }

static void emit_burst(const arq_view *v, uint64_t *rng, int burst) {
    double f[2];
    for (int b = 0; b < burst; b++) {
        fill_fields(v, rng, 1.0, f);
        arq_emit(P, 1, v, f);
    }
}

static void breach(int n, uint64_t settle_us, int burst, uint64_t reemit_us) {
    prctl(PR_SET_TIMERSLACK, 1000UL);   /* 1 us: the polls below sleep ~POLL_NS, not 50 us more */
    uint64_t rng = 12345, last_gen = 0, lost = 0;
    arq_view v;
    arq_read(P, 0, &v);
    last_gen = v.generation;           /* only candidates published after this command count */
    printf("{\"armed\": %llu}\n", (unsigned long long)last_gen);
    fflush(stdout);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        arq_view cand;
        long key = -1;
        uint64_t deadline = mono_ns() + 20ull * 1000000000ull, seen_gen = last_gen;
        while (key < 0 && mono_ns() < deadline) {
            arq_read(P, 0, &v);
            if (v.generation != seen_gen) {          /* scan only when the snapshot changed */
                seen_gen = v.generation;
                key = find_candidate(last_gen, &cand);
            }
            if (key < 0) sleep_ns(POLL_NS);
        }
        if (key < 0) {
            printf("{\"i\": %d, \"error\": \"no candidate slot within 20 s\"}\n", i);
            fflush(stdout);
            continue;
        }
        /* Usable from the daemon's side: it sees the ack (libarqon acks within tick_us = 100 us of
         * the publish, which came before t_seen) in the first cycle starting after that, c1; a
         * cycle's window is usable once the previous cycle started >= c1 + settle. So: wait for
         * a completed cycle that started at or after c1 + settle; the next cycle drains the burst. */
        uint64_t t_seen = mono_ns(), c1 = 0, h = 0, give_up = t_seen + 5ull * 1000000000ull;
        while (mono_ns() < give_up) {
            h = heartbeat();
            if (!c1 && h > t_seen + 200000) c1 = h;
            if (c1 && h >= c1 + settle_us * 1000) break;
            sleep_ns(POLL_NS);
        }
        arq_read(P, (uint64_t)key, &v);
        if (v.generation != cand.generation || v.slot == 0 || !c1) {
            lost++;                                   /* gone before we breached: not a sample */
            last_gen = v.generation > cand.generation ? v.generation : cand.generation;
            printf("{\"i\": %d, \"error\": \"candidate ended before the breach\", \"gen\": %llu}\n", i,
                   (unsigned long long)cand.generation);
            fflush(stdout);
            continue;
        }
        uint64_t t0 = mono_ns(), t1 = 0, last_emit = t0, end = t0 + 5ull * 1000000000ull;
        int bursts = 1;
        emit_burst(&cand, &rng, burst);
        for (;;) {
            uint64_t now = mono_ns();
            arq_read(P, (uint64_t)key, &v);
            if (v.slot == 0) { t1 = mono_ns(); break; }
            if (now > end) break;
            if (now - last_emit >= reemit_us * 1000) {   /* safety net; counted, T0 unchanged */
                emit_burst(&cand, &rng, burst);
                bursts++;
                last_emit = now;
            }
            sleep_ns(POLL_NS);
        }
        last_gen = v.generation > cand.generation ? v.generation : cand.generation;
        if (!t1) {
            printf("{\"i\": %d, \"error\": \"baseline not back within 5 s\", \"gen\": %llu, \"bursts\": %d}\n", i,
                   (unsigned long long)cand.generation, bursts);
        } else {
            ok++;
            printf("{\"i\": %d, \"gen\": %llu, \"revert_gen\": %llu, \"key\": %ld, \"t_seen_ns\": %llu, "
                   "\"c1_ns\": %llu, \"hb_ns\": %llu, \"t0_ns\": %llu, \"t1_ns\": %llu, \"e2e_ns\": %llu, "
                   "\"bursts\": %d}\n",
                   i, (unsigned long long)cand.generation, (unsigned long long)v.generation, key,
                   (unsigned long long)t_seen, (unsigned long long)c1, (unsigned long long)h,
                   (unsigned long long)t0, (unsigned long long)t1, (unsigned long long)(t1 - t0), bursts);
        }
        fflush(stdout);
    }
    printf("{\"done\": %d, \"ok\": %d, \"lost\": %llu}\n", n, ok, (unsigned long long)lost);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: tool_breach NAME [RATE]  (commands on stdin: see source)\n"); return 2; }
    static char names[NK][8];
    for (int i = 0; i < NK; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        knobs[i] = (arq_knob_decl){names[i], 0.0, 1.0, 0.5, 0};
    }
    /* 2^17 records per ring: 130 ms at 1 M records/s, so a slow daemon cycle drops nothing. */
    arq_decl d = {knobs, NK, fields, 2, NULL, 0, 2, 1u << 17, 0600, 0, 100};
    int rc = arq_open(argv[1], &d, &P);
    if (rc) { fprintf(stderr, "tool_breach: arq_open(%s): %s\n", argv[1], arq_strerror(rc)); return 2; }
    rate_rps = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    pthread_t th;
    pthread_create(&th, NULL, produce_main, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        double r;
        int n, burst;
        unsigned long long settle_us, re_us;
        if (sscanf(line, "rate %lf", &r) == 1) {
            __atomic_store_n(&rate_rps, (uint64_t)r, __ATOMIC_RELAXED);
            __atomic_add_fetch(&rate_epoch, 1, __ATOMIC_RELEASE);
            printf("{\"rate\": %.0f}\n", r);
        } else if (sscanf(line, "breach %d %llu %d %llu", &n, &settle_us, &burst, &re_us) == 4) {
            if (!daemon_hb && map_control(argv[1]) != 0) {
                printf("{\"error\": \"cannot map /arqon.%s read-only\"}\n", argv[1]);
            } else {
                breach(n, settle_us, burst, re_us);
            }
        } else if (!strncmp(line, "stats", 5)) {
            printf("{\"emitted\": %llu, \"drops\": [%llu, %llu]}\n",
                   (unsigned long long)__atomic_load_n(&emitted, __ATOMIC_RELAXED),
                   (unsigned long long)arq_drops(P, 0), (unsigned long long)arq_drops(P, 1));
        } else {
            printf("{\"error\": \"unknown command\"}\n");
        }
        fflush(stdout);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    arq_close(P);
    return 0;
}
