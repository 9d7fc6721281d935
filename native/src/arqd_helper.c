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
