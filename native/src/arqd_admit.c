/* Tier 1's admission fast path: see arqd_helper.h. Each test below mirrors one rule of
 * daemon/tier1/executor.py (named in its comment) with the same floating-point operations in
 * the same order (-ffp-contract=off), so a value on a boundary falls on the same side. A test
 * that cannot be decided from the plan returns its reason and leaves the decision to Python. */
#include "arqd_helper.h"
#include "shm_proto.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

_Static_assert(ARQ_MAX_KNOBS == 16 && ARQ_MAX_SLOTS == 4, "arqd_admit_plan/arqd_staged widths");

enum {
    ARQD_ADMIT_OK = 0,
    ARQD_ADMIT_STALE = 1,       /* now before the plan, or inside a cooldown / quarantine */
    ARQD_ADMIT_ARMS = 2,        /* arm count outside what a fast decision covers */
    ARQD_ADMIT_KNOB = 3,        /* an index outside the allowlist or the declaration */
    ARQD_ADMIT_VALUE = 4,       /* not finite, not an integer, out of bounds, beyond max_delta */
    ARQD_ADMIT_NO_CHANGE = 5,   /* a rollout equal to the baseline */
    ARQD_ADMIT_GLOBAL = 6,      /* moves a global knob (switchback / segmented probe) */
    ARQD_ADMIT_LIMITS = 7,      /* interval, rate, budget or anti-thrashing not clear */
    ARQD_ADMIT_QUARANTINE = 8,  /* near a failed point (or its variant is quarantined) */
    ARQD_ADMIT_SHADOW = 9,      /* rollout.shadow "on": a rollout starts in shadow (Python lays it out) */
};

int arqd_admit(const arqd_admit_plan *pl, int64_t now, int rollout, unsigned n_arms,
               const uint32_t *n_given, const uint32_t *idx, const double *vals, uint64_t salt,
               arqd_staged *out) {
    const unsigned nk = pl->n_knobs;
    double arms[ARQ_MAX_SLOTS - 1][ARQ_MAX_KNOBS];
    if (now < pl->t_ns || now < pl->open_ns || nk > ARQ_MAX_KNOBS) return ARQD_ADMIT_STALE;
    if (n_arms < 1 || n_arms > (rollout ? 1u : (unsigned)(ARQ_MAX_SLOTS - 1))) return ARQD_ADMIT_ARMS;
    if (rollout && pl->shadow_rollout) return ARQD_ADMIT_SHADOW;
    /* _validate: every given value, in order */
    size_t k = 0;
    for (unsigned a = 0; a < n_arms; a++) {
        memcpy(arms[a], pl->base, nk * sizeof(double));
        for (uint32_t j = 0; j < n_given[a]; j++, k++) {
            uint32_t i = idx[k];
            double v = vals[k];
            if (i >= nk || !pl->allowed[i]) return ARQD_ADMIT_KNOB;
            if (!isfinite(v)) return ARQD_ADMIT_VALUE;                          /* not_finite */
            if (pl->integer[i] && v != floor(v)) return ARQD_ADMIT_VALUE;       /* integer */
            if (!(pl->lo[i] <= v && v <= pl->hi[i])) return ARQD_ADMIT_VALUE;   /* bounds */
            double dv = fabs(v - pl->base[i]);                                  /* max_delta */
            if (pl->absolute[i] ? dv > pl->max_delta[i] + 1e-12 : dv / pl->rng[i] > pl->max_delta[i] + 1e-12)
                return ARQD_ADMIT_VALUE;
            arms[a][i] = v;
        }
    }
    int moved = 0;
    for (unsigned i = 0; i < nk; i++) {
        for (unsigned a = 0; a < n_arms; a++) {
            if (arms[a][i] != pl->base[i]) {
                if (pl->global_[i]) return ARQD_ADMIT_GLOBAL;                   /* is_global */
                moved = 1;
            }
        }
    }
    if (rollout && !moved) return ARQD_ADMIT_NO_CHANGE;                         /* no_change */
    /* _check_quarantine: a live entry of this variant refuses a point within its radius. The
     * distance is summed as Python's sum() may (3.12 compensates), so a margin of 1e-9 relative
     * leaves any point near the edge to Python. */
    for (unsigned q = 0; q < pl->n_quar && q < 8; q++) {
        if (pl->q_until[q] <= now || pl->q_variant[q] != pl->base_variant) continue;
        if (pl->q_variant_only[q]) return ARQD_ADMIT_QUARANTINE;
        for (unsigned a = 0; a < n_arms; a++) {
            double s = 0.0;
            for (unsigned i = 0; i < nk; i++) {
                double d = (arms[a][i] - pl->kmin[i]) / pl->rng[i] - pl->q_center[q][i];
                s += d * d;
            }
            if (sqrt(s) <= pl->q_radius[q] * (1.0 + 1e-9)) return ARQD_ADMIT_QUARANTINE;
        }
    }
    /* _knob_touches + _check_knob_limits: each allowlisted knob some arm moves */
    const double share = rollout ? 1.0 : pl->probe_weight;                      /* _share */
    for (unsigned i = 0; i < nk; i++) {
        if (!pl->allowed[i]) continue;
        double amax = 0.0, m0 = 0.0;
        int moves = 0;
        for (unsigned a = 0; a < n_arms; a++) {
            double m = (arms[a][i] - pl->base[i]) / pl->rng[i];
            if (a == 0) m0 = m;
            if (m != 0) moves = 1;
            double c = m >= 0 ? m : -m;
            if (c > amax) amax = c;                      /* max(map(abs, moves)); -0.0 == 0.0 */
        }
        if (!moves) continue;
        if (rollout && pl->thrash_ns[i] > now) return ARQD_ADMIT_LIMITS;        /* anti_thrashing */
        if (pl->last_t[i] != INT64_MIN && (double)(now - pl->last_t[i]) / 1e9 < pl->min_iv[i])
            return ARQD_ADMIT_LIMITS;                                           /* min_interval */
        if (now < pl->rate_ns[i]) return ARQD_ADMIT_LIMITS;                     /* rate_limit */
        if (rollout && pl->last_dir[i] != 0 && pl->last_dir[i] != (m0 > 0 ? 1 : -1)) {
            /* _check_reversal: inside the dead band, or one flip too many (which also starts a
             * thrashing cooldown: Python records it) */
            if (fabs(m0) < pl->hyst[i] || !pl->flips_ok[i]) return ARQD_ADMIT_LIMITS;
        }
        /* budget, with a 1e-9 relative margin: the plan's spend is an in-order float sum, and
         * the rule's may be summed otherwise (sum() compensates from Python 3.12) */
        if ((pl->spent[i] + amax * share) * (1.0 + 1e-9) > pl->budget_limit) return ARQD_ADMIT_LIMITS;
    }
    /* _layout of the first phase: PROBING (not global) or CANARY step 0 */
    memset(out, 0, sizeof *out);
    out->generation = pl->generation;
    out->salt = salt;
    double w = rollout ? pl->rollout_weight : pl->probe_weight;
    out->n_slots = n_arms + 1;
    out->weights[0] = rollout ? 1.0 - w : 1.0 - w * (double)n_arms;
    out->variants[0] = pl->base_variant;
    memcpy(out->knobs[0], pl->base, nk * sizeof(double));
    for (unsigned a = 0; a < n_arms; a++) {
        out->weights[a + 1] = w;
        out->variants[a + 1] = pl->base_variant;
        memcpy(out->knobs[a + 1], arms[a], nk * sizeof(double));
    }
    memcpy(out->global_knobs, pl->base, nk * sizeof(double));
    return ARQD_ADMIT_OK;
}

uint64_t arqd_publish_staged(void *base, void *copy, unsigned n_knobs, const arqd_staged *s,
                             uint64_t lease_deadline_ns) {
    unsigned n = s->n_slots;
    return arqd_encode_publish(base, copy, n_knobs, s->generation, s->salt, n, s->weights, s->variants,
                               s->global_knobs, s->knobs[0], n > 1 ? s->knobs[1] : NULL,
                               n > 2 ? s->knobs[2] : NULL, n > 3 ? s->knobs[3] : NULL, lease_deadline_ns);
}
