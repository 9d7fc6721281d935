#include "arqd_helper.h"
#include "shm_proto.h"

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

void arqd_poll(void *base, uint64_t rings_off, uint64_t stride, unsigned n_rings, uint32_t cap,
               uint32_t rec_words, uint64_t *out, uint64_t max_per_ring, int64_t *counts,
               uint64_t now_ns, uint64_t lease_deadline_ns, uint64_t *state) {
    arq_shm_control *ctl = arq_ctl(base);
    for (unsigned r = 0; r < n_rings; r++) {
        arq_shm_ring *ring = arq_ring(base, rings_off, stride, r);
        counts[r] = arq_ring_drain(ring, cap, rec_words, out + (uint64_t)r * cap * rec_words, max_per_ring);
        ARQ_STORE_REL(&ring->consumer_heartbeat_ns, now_ns);
    }
    ARQ_STORE_REL(&ctl->daemon_heartbeat_ns, now_ns);
    ARQ_STORE_REL(&ctl->lease_deadline_ns, lease_deadline_ns);
    state[0] = ARQ_LOAD_ACQ(&ctl->ack_generation);
    state[1] = ARQ_LOAD_ACQ(&ctl->lease_state);
    state[2] = ARQ_LOAD_ACQ(&ctl->lease_lapses);
    state[3] = ARQ_LOAD_ACQ(&ctl->plane_heartbeat_ns);
    state[4] = ARQ_LOAD_ACQ(&arq_hdr(base)->state);
}
