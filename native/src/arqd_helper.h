/* The daemon's side of the arqon segment protocols, compiled into the Python
 * extension shm_layout._shm by cffi. Python calls these for every access that
 * needs an ordering guarantee; plain numpy views are used only for words that
 * are written once before state=READY (header, declaration). */
#ifndef ARQD_HELPER_H
#define ARQD_HELPER_H
#include <stdint.h>

uint64_t arqd_load_acq(const uint64_t *p);
uint32_t arqd_load_acq32(const uint32_t *p);
void     arqd_store_rel(uint64_t *p, uint64_t v);
void     arqd_store_rel32(uint32_t *p, uint32_t v);
int      arqd_cas32(uint32_t *p, uint32_t expected, uint32_t desired);
/* Publish a complete snapshot copy (704 bytes) then set the lease deadline (0 = release).
 * Returns the new seqlock sequence. The snapshot goes first so a lease that becomes
 * live again never exposes a previous daemon's candidate slots. */
uint64_t arqd_publish(void *base, const void *copy, uint64_t lease_deadline_ns);
uint64_t arqd_read_snapshot(void *base, void *out_copy);
int64_t  arqd_drain(void *base, uint64_t rings_off, uint64_t stride, unsigned ring,
                    uint32_t cap, uint32_t rec_words, uint64_t *out, uint64_t max);
/* One call per decision cycle, so the daemon releases the GIL once instead of a dozen times:
 * drain every ring (ring r's records land at out + r * cap * rec_words; counts[r] is the number
 * copied, or -1 if its indices are corrupt), stamp the daemon and consumer heartbeats, renew the
 * lease, and read the data plane's state into state[5] =
 * {ack_generation, lease_state, lease_lapses, plane_heartbeat_ns, header state}. */
void     arqd_poll(void *base, uint64_t rings_off, uint64_t stride, unsigned n_rings, uint32_t cap,
                   uint32_t rec_words, uint64_t *out, uint64_t max_per_ring, int64_t *counts,
                   uint64_t now_ns, uint64_t lease_deadline_ns, uint64_t *state);

/* ---- telemetry summaries (the daemon's per-cycle statistics, computed where the records are) ----
 *
 * stats is a [n_slots][n_fields][7] array of doubles: count, sum, min, max, p50, p95, p99 of the
 * finite values of one field in one slot's records. A record is used when its sequence word is
 * valid (non-zero), it ran under `generation`, its t_ns >= since_ns and its slot < n_slots;
 * slot_records[s] counts the records used per slot (a record may have a NaN in some field).
 * Quantiles (numpy's default "linear" method, bit for bit) are computed only for the fields whose
 * bit is set in quantile_mask; the others get NaN there. sum is accumulated in record order, so
 * the result depends on the records and their order only (deterministic); count/sum/min/max of
 * two windows merge by addition and min/max. scratch must hold n doubles. Returns records used. */
uint64_t arqd_summarize(const uint64_t *rows, uint64_t n, uint32_t rec_words, unsigned n_fields,
                        uint64_t generation, uint64_t since_ns, uint64_t quantile_mask, unsigned n_slots,
                        double *scratch, uint64_t *slot_records, double *stats);
/* arqd_poll, then arqd_summarize over everything drained: the daemon's one call per cycle.
 * Rings are drained back to back (ring r after ring r-1's records, so out must hold
 * n_rings * cap records); counts[r] as in arqd_poll. Returns the number of records drained and
 * *used receives the number summarised; if ring r's indices are corrupt, returns -(r + 1) and
 * summarises nothing (the caller refuses the segment). */
int64_t  arqd_poll_summarize(void *base, uint64_t rings_off, uint64_t stride, unsigned n_rings, uint32_t cap,
                             uint32_t rec_words, uint64_t *out, int64_t *counts, uint64_t now_ns,
                             uint64_t lease_deadline_ns, uint64_t *state, unsigned n_fields, uint64_t generation,
                             uint64_t since_ns, uint64_t quantile_mask, unsigned n_slots, double *scratch,
                             uint64_t *slot_records, double *stats, uint64_t *used);

/* ---- cycle timer ----
 * A periodic CLOCK_MONOTONIC timerfd on an absolute grid (ns): the event loop watches the fd,
 * so each cycle costs one wake-up at ns precision (libuv timers have 1 ms resolution and
 * often wake twice). arqd_timer_open also sets this thread's timer slack to 1 us. */
int      arqd_timer_open(void);                 /* fd, or -errno */
/* Periodic: first expiry at first_ns (absolute), then every period_ns on that grid, with no
 * syscall per cycle; a late reader gets one wake-up and the count of expirations it missed. */
int      arqd_timer_arm_every(int fd, uint64_t first_ns, uint64_t period_ns);  /* 0 or -errno */
uint64_t arqd_timer_ack(int fd);                /* expirations since the last ack (0 if none) */

/* ---- snapshot encode ----
 * Fill `copy` (an arq_snapshot_copy) from a snapshot's parts and publish it (arqd_publish): the
 * Python side passes the slot tuples as they are, cffi turns them into arrays. weights and
 * variants have n_slots entries; k0..k3 are the knobs of slots 0..3 (n_knobs each; NULL past
 * n_slots; there are ARQ_MAX_SLOTS == 4 of them). cum_weight[i] = round-half-even(sum of
 * weights[0..i] * 2^32) clamped to 32 bits, the last active slot 0xFFFFFFFF (the rest too):
 * the same arithmetic as shm_layout.segment.cum_weights. Unused words are zero. Returns the
 * new seqlock sequence. */
uint64_t arqd_encode_publish(void *base, void *copy, unsigned n_knobs, uint64_t generation, uint64_t salt,
                             unsigned n_slots, const double *weights, const uint32_t *variants,
                             const double *global_knobs, const double *k0, const double *k1, const double *k2,
                             const double *k3, uint64_t lease_deadline_ns);

/* ---- Tier 1 admission fast path (daemon/tier1/admit.py compiles the plan; arqd_admit.c) ----
 * Why C: after the loop's 10 ms sleep this VM runs Python 3-5x slower than warm (cold caches and
 * TLBs), and the rules of a knob proposal are a few comparisons per value: on dense arrays
 * they take ~1 us instead of ~100 us of cold bytecode. The plan is conservative by
 * construction: arqd_admit accepts only what Executor._validate would accept, and lays the
 * snapshot out exactly as Executor._layout does (both proven on random states and proposals in
 * tests/test_admit.py); anything else returns a reason code and the Python path decides.
 * Arrays are ARQ_MAX_KNOBS (16) wide, by declaration index. */
typedef struct {
    uint32_t n_knobs;          /* declared knobs */
    uint32_t base_variant;
    uint32_t shadow_rollout;   /* rollout.shadow == "on": a rollout starts in shadow, not here */
    uint32_t pad;
    int64_t  t_ns;             /* when the plan was made; earlier proposals are not decided here */
    int64_t  open_ns;          /* no fast decision before: a cooldown, or more quarantine entries than fit */
    uint64_t generation;       /* of the snapshot an accepted proposal publishes */
    double   probe_weight;     /* rollout.probe_weight */
    double   rollout_weight;   /* the first canary step's weight */
    double   budget_limit;     /* budget.max_change + 1e-12 */
    double   base[16];         /* the baseline */
    double   lo[16], hi[16];   /* narrowed bounds */
    double   rng[16];          /* declared max - min (1 if 0) */
    double   max_delta[16];
    double   min_iv[16];       /* min_interval_s */
    double   spent[16];        /* budget spend in the window at t_ns (an upper bound later on) */
    int64_t  last_t[16];       /* time of the last change in the knob's history (INT64_MIN: none) */
    int64_t  rate_ns[16];      /* the rate limit holds from this time on (INT64_MAX: never fast) */
    int64_t  thrash_ns[16];    /* rollouts: thrashing cooldown until */
    int32_t  last_dir[16];     /* rollouts: direction of the last promoted change (0: none) */
    uint8_t  allowed[16], integer[16], absolute[16], global_[16];
    double   kmin[16];         /* declared min: quarantine distances are in normalised units */
    double   hyst[16];         /* rollouts reversing a promoted direction: the dead band */
    uint8_t  flips_ok[16];     /* ... and one more direction flip is within max_flips */
    uint32_t n_quar;           /* quarantine entries (failed points), at most 8 */
    uint32_t q_variant[8];
    uint8_t  q_variant_only[8];
    int64_t  q_until[8];
    double   q_radius[8];
    double   q_center[8][16];
} arqd_admit_plan;

/* A snapshot's parts as Executor._layout makes them (what arqd_encode_publish takes). */
typedef struct {
    uint64_t generation;
    uint64_t salt;
    uint32_t n_slots;
    uint32_t variants[4];
    uint32_t pad;
    double   weights[4];
    double   global_knobs[16];
    double   knobs[4][16];
} arqd_staged;

/* Decide a knob-only proposal (no variant, no preset) of n_arms arms; arm a gives n_given[a]
 * values vals[..] for the knobs at declaration indices idx[..] (arms back to back). 0: accepted,
 * *out holds the snapshot; otherwise a reason code (ARQD_ADMIT_* in arqd_admit.c) and *out is
 * untouched: the Python rules decide. */
int      arqd_admit(const arqd_admit_plan *plan, int64_t now_ns, int rollout, unsigned n_arms,
                    const uint32_t *n_given, const uint32_t *idx, const double *vals, uint64_t salt,
                    arqd_staged *out);
/* arqd_encode_publish of a staged snapshot. */
uint64_t arqd_publish_staged(void *base, void *copy, unsigned n_knobs, const arqd_staged *s,
                             uint64_t lease_deadline_ns);
#endif
