/* The daemon's side of the arqon segment protocols, compiled into the Python
 * extension shm_layout._shm by cffi. Python calls these for every access that
 * needs an ordering guarantee; plain numpy views are used only for words that
 * are written once before state=READY (header, declaration). */
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
