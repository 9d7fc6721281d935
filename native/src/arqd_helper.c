#define _GNU_SOURCE
#include "arqd_helper.h"
#include "shm_proto.h"

#include <errno.h>
#include <math.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

uint64_t arqd_load_acq(const uint64_t *p) { return ARQ_LOAD_ACQ(p); }
uint32_t arqd_load_acq32(const uint32_t *p) { return ARQ_LOAD_ACQ(p); }
void arqd_store_rel(uint64_t *p, uint64_t v) { ARQ_STORE_REL(p, v); }
void arqd_store_rel32(uint32_t *p, uint32_t v) { ARQ_STORE_REL(p, v); }
int arqd_cas32(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

uint64_t arqd_publish(void *base, const void *copy, uint64_t lease_deadline_ns) {
    uint64_t seq = arq_snapshot_publish(arq_snap(base), (const arq_snapshot_copy *)copy);
    ARQ_STORE_REL(&arq_ctl(base)->lease_deadline_ns, lease_deadline_ns);
    return seq;
}

uint64_t arqd_read_snapshot(void *base, void *out_copy) {
    return arq_snapshot_read_words(arq_snap(base), (uint64_t *)out_copy, sizeof(arq_snapshot_copy) / 8);
}

int64_t arqd_drain(void *base, uint64_t rings_off, uint64_t stride, unsigned ring,
                   uint32_t cap, uint32_t rec_words, uint64_t *out, uint64_t max) {
    return arq_ring_drain(arq_ring(base, rings_off, stride, ring), cap, rec_words, out, max);
}

/* After draining: stamp the daemon heartbeat, renew the lease, read the plane's state (ack
 * generation, lease state, lapses, plane heartbeat, segment state) into state[0..4]. */
static void arqd_renew_and_read(void *base, arq_shm_control *ctl, uint64_t now_ns, uint64_t lease_deadline_ns,
                                uint64_t *state) {
    ARQ_STORE_REL(&ctl->daemon_heartbeat_ns, now_ns);
    ARQ_STORE_REL(&ctl->lease_deadline_ns, lease_deadline_ns);
    state[0] = ARQ_LOAD_ACQ(&ctl->ack_generation);
    state[1] = ARQ_LOAD_ACQ(&ctl->lease_state);
    state[2] = ARQ_LOAD_ACQ(&ctl->lease_lapses);
    state[3] = ARQ_LOAD_ACQ(&ctl->plane_heartbeat_ns);
    state[4] = ARQ_LOAD_ACQ(&arq_hdr(base)->state);
}

void arqd_poll(void *base, uint64_t rings_off, uint64_t stride, unsigned n_rings, uint32_t cap,
               uint32_t rec_words, uint64_t *out, uint64_t max_per_ring, int64_t *counts,
               uint64_t now_ns, uint64_t lease_deadline_ns, uint64_t *state) {
    arq_shm_control *ctl = arq_ctl(base);
    for (unsigned r = 0; r < n_rings; r++) {
        arq_shm_ring *ring = arq_ring(base, rings_off, stride, r);
        counts[r] = arq_ring_drain(ring, cap, rec_words, out + (uint64_t)r * cap * rec_words, max_per_ring);
        ARQ_STORE_REL(&ring->consumer_heartbeat_ns, now_ns);
    }
    arqd_renew_and_read(base, ctl, now_ns, lease_deadline_ns, state);
}

/* ---- telemetry summaries ------------------------------------------------------------- */

#define ARQD_STAT_WORDS 7

static inline void swap_d(double *a, double *b) { double t = *a; *a = *b; *b = t; }

static void sift_down(double *a, uint64_t start, uint64_t n) {
    uint64_t root = start;
    while (2 * root + 1 < n) {
        uint64_t c = 2 * root + 1;
        if (c + 1 < n && a[c] < a[c + 1]) c++;
        if (!(a[root] < a[c])) return;
        swap_d(&a[root], &a[c]);
        root = c;
    }
}

/* Worst-case fallback of select_k: sorts a[0, n). */
static void heap_sort(double *a, uint64_t n) {
    if (n < 2) return;
    for (uint64_t i = n / 2; i-- > 0;) sift_down(a, i, n);
    for (uint64_t end = n - 1; end > 0; end--) {
        swap_d(&a[0], &a[end]);
        sift_down(a, 0, end);
    }
}

/* Introselect: reorder a[0, n) (no NaNs) so that a[k] is the k-th smallest, with a[i] <= a[k]
 * for i < k and a[i] >= a[k] for i > k; returns a[k]. Median-of-3 Hoare partitions, and a heap
 * sort of what is left after 2*log2(n) rounds, so adversarial telemetry costs O(n log n) at
 * worst. The value returned is an order statistic, so it does not depend on the algorithm. */
static double select_k(double *a, uint64_t n, uint64_t k) {
    uint64_t lo = 0, hi = n - 1;
    int budget = 8;
    for (uint64_t m = n; m > 1; m >>= 1) budget += 2;
    while (hi > lo) {
        if (budget-- == 0) {
            heap_sort(a + lo, hi - lo + 1);
            break;
        }
        uint64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swap_d(&a[mid], &a[lo]);
        if (a[hi] < a[lo]) swap_d(&a[hi], &a[lo]);
        if (a[hi] < a[mid]) swap_d(&a[hi], &a[mid]);
        double pivot = a[mid];
        uint64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (pivot < a[j]) j--;
            if (i <= j) {
                swap_d(&a[i], &a[j]);
                i++;
                if (j == 0) break;
                j--;
            }
        }
        /* now a[lo, j] <= pivot <= a[i, hi], and a(j, i) == pivot */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return a[k];
}

static double min_of(const double *a, uint64_t n) {
    double m = a[0];
    for (uint64_t i = 1; i < n; i++) if (a[i] < m) m = a[i];
    return m;
}

/* p50, p95, p99 of a[0, n) (n >= 1, finite), as numpy.percentile(a, (50, 95, 99)) computes them
 * ("linear": virtual index (n-1)*q, numpy's two-sided lerp). Reorders a. */
static void quantiles(double *a, uint64_t n, double *out3) {
    static const double qs[3] = {0.50, 0.95, 0.99};
    uint64_t done = 0;          /* a[0, done) holds the `done` smallest values, in place */
    for (int j = 0; j < 3; j++) {
        double v = (double)(n - 1) * qs[j];
        if (v >= (double)(n - 1)) {  /* numpy: at or past the last index, the maximum */
            double *rest = a + done;
            double m = rest[0];
            for (uint64_t i = 1; i < n - done; i++) if (rest[i] > m) m = rest[i];
            out3[j] = m;
            continue;
        }
        uint64_t k = (uint64_t)v;             /* floor: v >= 0 */
        double prev = (double)k;
        double lo_v;
        if (k < done) lo_v = select_k(a, done, k);              /* same index as the last q (small n) */
        else { lo_v = select_k(a + done, n - done, k - done); done = k + 1; }
        double hi_v = min_of(a + k + 1, n - k - 1);            /* a(k, n) >= a[k]: its minimum */
        double t = v - prev, diff = hi_v - lo_v;
        out3[j] = t >= 0.5 ? hi_v - diff * (1.0 - t) : lo_v + diff * t;
    }
}

static inline double as_f64(uint64_t w) {
    double d;
    memcpy(&d, &w, sizeof d);
    return d;
}

uint64_t arqd_summarize(const uint64_t *rows, uint64_t n, uint32_t rec_words, unsigned n_fields,
                        uint64_t generation, uint64_t since_ns, uint64_t quantile_mask, unsigned n_slots,
                        double *scratch, uint64_t *slot_records, double *stats) {
    for (unsigned s = 0; s < n_slots; s++) {
        slot_records[s] = 0;
        for (unsigned f = 0; f < n_fields; f++) {
            double *st = stats + ((uint64_t)s * n_fields + f) * ARQD_STAT_WORDS;
            st[0] = 0.0; st[1] = 0.0; st[2] = INFINITY; st[3] = -INFINITY;
        }
    }
    /* pass 1: filter, count, sum, min, max (NaN-free: non-finite values are skipped) */
    uint64_t used = 0;
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t *r = rows + i * rec_words;
        uint64_t s = r[3] & 0xFFFFFFFFu;
        if (r[0] == 0 || r[2] != generation || r[1] < since_ns || s >= n_slots) continue;
        slot_records[s]++;
        used++;
        double *st = stats + s * n_fields * ARQD_STAT_WORDS;
        for (unsigned f = 0; f < n_fields; f++, st += ARQD_STAT_WORDS) {
            double v = as_f64(r[ARQ_RECORD_HEADER_WORDS + f]);
            if (!isfinite(v)) continue;
            st[0] += 1.0;
            st[1] += v;
            st[2] = v < st[2] ? v : st[2];
            st[3] = v > st[3] ? v : st[3];
        }
    }
    /* pass 2, per field that needs quantiles: gather every slot's values into its own run of
     * scratch (offsets from the counts of pass 1), then select in each run */
    uint64_t off[64];
    for (unsigned f = 0; f < n_fields && f < 64 && used; f++) {
        if (!(quantile_mask >> f & 1)) continue;
        uint64_t at = 0;
        for (unsigned s = 0; s < n_slots && s < 64; s++) {
            off[s] = at;
            at += (uint64_t)stats[((uint64_t)s * n_fields + f) * ARQD_STAT_WORDS];
        }
        if (!at) continue;
        for (uint64_t i = 0; i < n; i++) {
            const uint64_t *r = rows + i * rec_words;
            uint64_t s = r[3] & 0xFFFFFFFFu;
            if (r[0] == 0 || r[2] != generation || r[1] < since_ns || s >= n_slots || s >= 64) continue;
            double v = as_f64(r[ARQ_RECORD_HEADER_WORDS + f]);
            if (isfinite(v)) scratch[off[s]++] = v;
        }
        uint64_t start = 0;
        for (unsigned s = 0; s < n_slots && s < 64; s++) {
            double *st = stats + ((uint64_t)s * n_fields + f) * ARQD_STAT_WORDS;
            uint64_t m = (uint64_t)st[0];
            if (m) quantiles(scratch + start, m, st + 4);
            start += m;
        }
    }
    /* what no rule asked for, or no finite value produced, is NaN */
    for (unsigned s = 0; s < n_slots; s++) {
        for (unsigned f = 0; f < n_fields; f++) {
            double *st = stats + ((uint64_t)s * n_fields + f) * ARQD_STAT_WORDS;
            if (st[0] == 0.0) { st[2] = NAN; st[3] = NAN; }
            if (st[0] == 0.0 || f >= 64 || !(quantile_mask >> f & 1)) st[4] = st[5] = st[6] = NAN;
        }
    }
    return used;
}

int64_t arqd_poll_summarize(void *base, uint64_t rings_off, uint64_t stride, unsigned n_rings, uint32_t cap,
                             uint32_t rec_words, uint64_t *out, int64_t *counts, uint64_t now_ns,
                             uint64_t lease_deadline_ns, uint64_t *state, unsigned n_fields, uint64_t generation,
                             uint64_t since_ns, uint64_t quantile_mask, unsigned n_slots, double *scratch,
                             uint64_t *slot_records, double *stats, uint64_t *used) {
    arq_shm_control *ctl = arq_ctl(base);
    uint64_t total = 0;
    int64_t corrupt = 0;
    for (unsigned r = 0; r < n_rings; r++) {
        arq_shm_ring *ring = arq_ring(base, rings_off, stride, r);
        counts[r] = arq_ring_drain(ring, cap, rec_words, out + total * rec_words, cap);
        if (counts[r] < 0) { if (!corrupt) corrupt = -(int64_t)r - 1; }
        else total += (uint64_t)counts[r];
        ARQ_STORE_REL(&ring->consumer_heartbeat_ns, now_ns);
    }
    arqd_renew_and_read(base, ctl, now_ns, lease_deadline_ns, state);
    *used = arqd_summarize(out, corrupt ? 0 : total, rec_words, n_fields, generation, since_ns, quantile_mask,
                           n_slots, scratch, slot_records, stats);
    return corrupt ? corrupt : (int64_t)total;
}

/* ---- cycle timer ----------------------------------------------------------------------- */

int arqd_timer_open(void) {
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);   /* 1 us: the default 50 us slack delays every wake-up */
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int arqd_timer_arm_every(int fd, uint64_t first_ns, uint64_t period_ns) {
    if (first_ns == 0) first_ns = 1;         /* it_value 0 would disarm: 1 ns is long past, fires now */
    if (period_ns == 0) return -EINVAL;      /* an interval of 0 would make it one-shot */
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(first_ns / 1000000000ull);
    its.it_value.tv_nsec = (long)(first_ns % 1000000000ull);
    its.it_interval.tv_sec = (time_t)(period_ns / 1000000000ull);
    its.it_interval.tv_nsec = (long)(period_ns % 1000000000ull);
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) < 0 ? -errno : 0;
}

uint64_t arqd_timer_ack(int fd) {
    uint64_t n = 0;
    return read(fd, &n, sizeof n) == (ssize_t)sizeof n ? n : 0;
}

/* ---- snapshot encode ----------------------------------------------------------------------- */

_Static_assert(ARQ_MAX_SLOTS == 4, "arqd_encode_publish takes one knob pointer per slot");

uint64_t arqd_encode_publish(void *base, void *copy, unsigned n_knobs, uint64_t generation, uint64_t salt,
                             unsigned n_slots, const double *weights, const uint32_t *variants,
                             const double *global_knobs, const double *k0, const double *k1, const double *k2,
                             const double *k3, uint64_t lease_deadline_ns) {
    arq_snapshot_copy *c = (arq_snapshot_copy *)copy;
    const double *slot_knobs[ARQ_MAX_SLOTS] = {k0, k1, k2, k3};
    if (n_knobs > ARQ_MAX_KNOBS) n_knobs = ARQ_MAX_KNOBS;
    if (n_slots > ARQ_MAX_SLOTS) n_slots = ARQ_MAX_SLOTS;
    memset(c, 0, sizeof *c);
    c->generation = generation;
    c->salt = salt;
    c->n_slots = n_slots;
    double acc = 0.0;
    for (unsigned i = 0; i < ARQ_MAX_SLOTS; i++) {
        if (i < n_slots) {
            acc += weights[i];
            double x = nearbyint(acc * 4294967296.0);    /* default rounding: half to even, as round() */
            c->cum_weight[i] = x <= 0.0 ? 0u : x >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)x;
            c->variant[i] = variants[i];
            if (slot_knobs[i])
                memcpy(&c->knobs[(size_t)i * ARQ_MAX_KNOBS], slot_knobs[i], n_knobs * sizeof(double));
        } else {
            c->cum_weight[i] = 0xFFFFFFFFu;
        }
    }
    if (n_slots) c->cum_weight[n_slots - 1] = 0xFFFFFFFFu;
    memcpy(c->global_knobs, global_knobs, n_knobs * sizeof(double));
    return arqd_publish(base, copy, lease_deadline_ns);
}
