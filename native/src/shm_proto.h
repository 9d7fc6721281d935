/* The two lock-free protocols of the arqon segment, shared by libarqon (data plane)
 * and the daemon's cffi helper so both sides run the same code.
 *
 * Every shared word is accessed through the GCC __atomic builtins with an explicit
 * order. x86-64 would forgive a missing fence; ARM64 would not.
 *
 * 1. Parameter snapshot: a double-buffered seqlock ("latch").
 *    Writer (the daemon only, one at a time: control.writer_pid):
 *        s = seq; fence(release); write copy[(s+1)&1]; store(seq, s+1, release)
 *    Reader (any thread of the data plane):
 *        s1 = load(seq, acquire); read copy[s1&1] (relaxed loads); fence(acquire);
 *        s2 = load(seq, relaxed); retry if s1 != s2
 *    The copy readers use is never the one being written, so a writer that dies
 *    mid-publish leaves readers on the last complete copy: never blocked, never torn.
 *    A reader retries only if two publishes overtook it during its copy.
 *    The release fence before the copy writes orders the previous seq store before
 *    them, so a reader that observed any new byte also observes the seq change.
 *
 * 2. Telemetry ring: SPSC, power-of-two capacity, 64-bit positions that never wrap.
 *    Producer owns tail and the records in [tail, head + cap); consumer owns head.
 *    Producer: if tail - head >= cap: drop newest, count it. Else write the record,
 *              store record.seq = pos + 1, then store(tail, pos + 1, release).
 *    Consumer: t = load(tail, acquire); records [head, t) are complete; copy them;
 *              store(head, t, release) hands the slots back.
 *    The per-record seq detects torn, stale and foreign records (counted, skipped).
 */
#ifndef ARQ_SHM_PROTO_H
#define ARQ_SHM_PROTO_H

#include <stdint.h>
#include <string.h>
#include "arqon_layout.h"

#define ARQ_LOAD_ACQ(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ARQ_LOAD_RLX(p)      __atomic_load_n((p), __ATOMIC_RELAXED)
#define ARQ_STORE_REL(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ARQ_STORE_RLX(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* Seqlock data words. GCC's ThreadSanitizer does not model fences, so under TSan
 * each data word carries the ordering itself (acquire loads, release stores): the
 * same guarantee, checked by the tool. Elsewhere a fence per copy is cheaper than
 * ordering every word (identical on x86-64, not on ARM64). */
#if defined(__SANITIZE_THREAD__)
#define ARQ_DATA_LOAD(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ARQ_DATA_STORE(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ARQ_FENCE_ACQ()       ((void)0)
#define ARQ_FENCE_REL()       ((void)0)
#else
#define ARQ_DATA_LOAD(p)      __atomic_load_n((p), __ATOMIC_RELAXED)
#define ARQ_DATA_STORE(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ARQ_FENCE_ACQ()       __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define ARQ_FENCE_REL()       __atomic_thread_fence(__ATOMIC_RELEASE)
#endif

static inline arq_shm_header *arq_hdr(void *base) { return (arq_shm_header *)base; }
static inline arq_shm_control *arq_ctl(void *base) {
    return (arq_shm_control *)((uint8_t *)base + ARQ_SHM_CONTROL_OFF);
}
static inline arq_shm_snapshot *arq_snap(void *base) {
    return (arq_shm_snapshot *)((uint8_t *)base + ARQ_SHM_SNAPSHOT_OFF);
}
static inline arq_snapshot_copy *arq_snap_copy(arq_shm_snapshot *s, uint64_t idx) {
    return (arq_snapshot_copy *)(s->copy + (idx & 1) * sizeof(arq_snapshot_copy));
}

/* ---- snapshot writer ----------------------------------------------------------- */

/* Publish `src` (a complete copy prepared in private memory) and return the new seq.
 * Caller must hold the writer role. Cost: one 704-byte copy plus two fences. */
static inline uint64_t arq_snapshot_publish(arq_shm_snapshot *s, const arq_snapshot_copy *src) {
    uint64_t seq = ARQ_LOAD_RLX(&s->seq);          /* we are the only writer */
    arq_snapshot_copy *dst = arq_snap_copy(s, seq + 1);
    ARQ_FENCE_REL();                              /* previous seq store before these writes */
    const uint64_t *in = (const uint64_t *)src;
    uint64_t *out = (uint64_t *)dst;
    for (size_t i = 0; i < sizeof(*src) / 8; i++)
        ARQ_DATA_STORE(&out[i], in[i]);           /* racing readers retry; relaxed is enough */
    ARQ_STORE_REL(&s->seq, seq + 1);              /* readers switch to the new copy */
    return seq + 1;
}

/* ---- snapshot reader ----------------------------------------------------------- */

/* Copy the first `words` 8-byte words of the current copy into `dst`; returns the seq
 * the copy belongs to. Never blocks: it only retries while publishes overtake it. */
static inline uint64_t arq_snapshot_read_words(arq_shm_snapshot *s, uint64_t *dst, size_t words) {
    for (;;) {
        uint64_t s1 = ARQ_LOAD_ACQ(&s->seq);
        const uint64_t *src = (const uint64_t *)arq_snap_copy(s, s1);
        for (size_t i = 0; i < words; i++)
            dst[i] = ARQ_DATA_LOAD(&src[i]);
        ARQ_FENCE_ACQ();                          /* the loads above before the re-check */
        if (ARQ_LOAD_RLX(&s->seq) == s1)
            return s1;
    }
}

/* ---- ring ---------------------------------------------------------------------- */

static inline arq_shm_ring *arq_ring(void *base, uint64_t rings_off, uint64_t stride, unsigned i) {
    return (arq_shm_ring *)((uint8_t *)base + rings_off + stride * i);
}
static inline uint64_t *arq_ring_records(arq_shm_ring *r) { return (uint64_t *)(r + 1); }

/* Consumer: copy up to `max` complete records (rec_words words each) into `out`,
 * advance head, return the number copied; records whose seq word is wrong are
 * counted in ring.seq_errors and copied with seq zeroed so the caller skips them.
 * Returns -1 if the indices break head <= tail <= head + cap (corrupt segment). */
static inline int64_t arq_ring_drain(arq_shm_ring *r, uint32_t cap, uint32_t rec_words,
                                     uint64_t *out, uint64_t max) {
    uint64_t head = ARQ_LOAD_RLX(&r->head);       /* we are the only consumer */
    uint64_t tail = ARQ_LOAD_ACQ(&r->tail);       /* records below tail are complete */
    if (tail < head || tail - head > cap)
        return -1;
    uint64_t n = tail - head;
    if (n > max) n = max;
    const uint64_t *recs = arq_ring_records(r);
    uint64_t mask = cap - 1, bad = 0;
    /* Copy in at most two contiguous runs (wrap), then check sequence words. */
    uint64_t first = head & mask, run = cap - first;
    if (run > n) run = n;
    memcpy(out, recs + first * rec_words, run * rec_words * 8);
    if (n > run) memcpy(out + run * rec_words, recs, (n - run) * rec_words * 8);
    for (uint64_t i = 0; i < n; i++) {
        if (out[i * rec_words] != head + i + 1) { out[i * rec_words] = 0; bad++; }
    }
    if (bad) ARQ_STORE_RLX(&r->seq_errors, ARQ_LOAD_RLX(&r->seq_errors) + bad);
    ARQ_STORE_REL(&r->head, head + n);            /* hand the slots back to the producer */
    return (int64_t)n;
}

#endif /* ARQ_SHM_PROTO_H */
