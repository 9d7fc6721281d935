/* arqd_admit (Tier 1's admission fast path, native/src/arqd_admit.c) under the sanitizers:
 * the rules it must refuse on, the layout it must produce, and a fuzz of plans and inputs
 * (indices past the declaration, NaN and infinite values, arm counts past the slots) that must
 * never read or write outside its arrays. Its decisions are proven equal to the Python rules in
 * tests/test_admit.py; this file is about memory and undefined behaviour.
 * The daemon's sources are compiled in (they are not part of libarqon). */
#include "../src/arqd_helper.c"
#include "../src/arqd_admit.c"

#include <stdio.h>
#include <stdlib.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static void plan_init(arqd_admit_plan *p, unsigned nk) {
    memset(p, 0, sizeof *p);
    p->n_knobs = nk;
    p->probe_weight = 0.1;
    p->rollout_weight = 0.05;
    p->budget_limit = 1.0 + 1e-12;
    for (unsigned i = 0; i < nk; i++) {
        p->base[i] = 0.5; p->lo[i] = 0.0; p->hi[i] = 1.0; p->rng[i] = 1.0; p->max_delta[i] = 0.2;
        p->last_t[i] = INT64_MIN; p->rate_ns[i] = INT64_MIN; p->allowed[i] = 1;
    }
}

static void rules(void) {
    arqd_admit_plan p;
    arqd_staged s;
    plan_init(&p, 4);
    uint32_t given[3] = {2, 2, 0};
    uint32_t idx[4] = {0, 1, 0, 1};
    double ok[4] = {0.6, 0.4, 0.4, 0.6};
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_OK);
    CHECK(s.n_slots == 3 && s.salt == 7 && s.weights[0] == 1.0 - 0.1 * 2.0 && s.weights[2] == 0.1);
    CHECK(s.knobs[1][0] == 0.6 && s.knobs[1][2] == 0.5 && s.knobs[2][1] == 0.6 && s.global_knobs[3] == 0.5);
    double out_of_bounds[4] = {0.6, 1.0000001, 0.4, 0.6};
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, out_of_bounds, 7, &s) == ARQD_ADMIT_VALUE);
    double too_far[4] = {0.7000001, 0.4, 0.4, 0.6};
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, too_far, 7, &s) == ARQD_ADMIT_VALUE);
    double nan[4] = {NAN, 0.4, 0.4, 0.6};
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, nan, 7, &s) == ARQD_ADMIT_VALUE);
    double same[1] = {0.5};
    uint32_t one[1] = {1};
    CHECK(arqd_admit(&p, 10, 1, 1, one, idx, same, 7, &s) == ARQD_ADMIT_NO_CHANGE);
    CHECK(arqd_admit(&p, 10, 1, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_ARMS);     /* a rollout has one arm */
    p.allowed[1] = 0;
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_KNOB);
    p.allowed[1] = 1;
    p.t_ns = 11;
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_STALE);
    p.t_ns = 0;
    p.spent[0] = 0.995;                                   /* 0.995 + 0.1 x 0.1 > 1: the budget */
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_LIMITS);
    p.spent[0] = 0.0;
    p.last_t[0] = 0; p.min_iv[0] = 1e-8;                  /* 10 ns since the last change < 10 ns? no */
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_OK);
    p.min_iv[0] = 1.1e-8;
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_LIMITS);
    p.min_iv[0] = 0; p.last_t[0] = INT64_MIN;
    p.n_quar = 1; p.q_until[0] = 100; p.q_radius[0] = 0.2;
    for (unsigned i = 0; i < 4; i++) p.q_center[0][i] = 0.5;
    CHECK(arqd_admit(&p, 10, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_QUARANTINE);
    CHECK(arqd_admit(&p, 100, 0, 2, given, idx, ok, 7, &s) == ARQD_ADMIT_OK);   /* expired */
}

static double pick(unsigned *seed) {
    static const double edge[] = {0.0, 1.0, 0.5, -1.0, 2.0, 1e308, -1e308, INFINITY, -INFINITY, NAN, 0.3, 0.7};
    return edge[rand_r(seed) % (sizeof edge / sizeof edge[0])] + (rand_r(seed) % 3 ? 0.0 : 1e-9);
}

static void fuzz(int rounds) {
    unsigned seed = 12345;
    arqd_admit_plan p;
    arqd_staged s;
    for (int r = 0; r < rounds; r++) {
        unsigned nk = 1 + rand_r(&seed) % 16;
        plan_init(&p, nk);
        for (unsigned i = 0; i < nk; i++) {
            p.integer[i] = rand_r(&seed) % 4 == 0;
            p.absolute[i] = rand_r(&seed) % 4 == 0;
            p.global_[i] = rand_r(&seed) % 8 == 0;
            p.allowed[i] = rand_r(&seed) % 8 != 0;
            p.last_dir[i] = (int)(rand_r(&seed) % 3) - 1;
            p.hyst[i] = pick(&seed);
            p.spent[i] = pick(&seed);
        }
        p.n_quar = rand_r(&seed) % 12;                     /* past the 8 entries: ignored, never read */
        for (unsigned q = 0; q < 8; q++) { p.q_until[q] = rand_r(&seed) % 20; p.q_radius[q] = pick(&seed); }
        unsigned n_arms = rand_r(&seed) % 6;               /* past the slots: refused */
        uint32_t given[8];
        uint32_t idx[64];
        double vals[64];
        unsigned k = 0;
        for (unsigned a = 0; a < n_arms && a < 8; a++) {
            given[a] = rand_r(&seed) % 9;
            for (unsigned j = 0; j < given[a] && k < 64; j++, k++) {
                idx[k] = rand_r(&seed) % 20;               /* past n_knobs and past 16: refused */
                vals[k] = pick(&seed);
            }
            if (k >= 64) given[a] = 0;
        }
        int rc = arqd_admit(&p, rand_r(&seed) % 20, rand_r(&seed) % 2, n_arms, given, idx, vals, 1, &s);
        CHECK(rc >= 0 && rc <= 9);
        if (rc == ARQD_ADMIT_OK) {
            CHECK(s.n_slots >= 2 && s.n_slots <= 4);
            for (unsigned sl = 0; sl < s.n_slots; sl++)
                for (unsigned i = 0; i < nk; i++)
                    CHECK(isfinite(s.knobs[sl][i]) && (!p.allowed[i] ? s.knobs[sl][i] == p.base[i]
                                                                      : p.lo[i] <= s.knobs[sl][i] && s.knobs[sl][i] <= p.hi[i]));
        }
    }
}

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    rules();
    fuzz(quick ? 20000 : 200000);
    if (failures) {
        fprintf(stderr, "test_admit: %d failures\n", failures);
        return 1;
    }
    printf("test_admit: ok\n");
    return 0;
}
