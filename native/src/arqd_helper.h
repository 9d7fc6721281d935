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
