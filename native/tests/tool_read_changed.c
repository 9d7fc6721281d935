/* tool_read_changed NAME: cost of arq_read right after a publish (per-thread cache refresh).
 * Measured as p50(batch of 64 x (publish + read)) - p50(batch of 64 x publish), per read.
 * Publishing in-process uses the same shm_proto.h code as the daemon's helper. */
#define _GNU_SOURCE
#include "arqon.h"
#include "shm_proto.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    arq_knob_decl knobs[8];
    char names[8][8];
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        knobs[i] = (arq_knob_decl){names[i], -1e15, 1e15, 0, 0};
    }
    arq_field_decl f[] = {{"x", ""}};
    arq_decl d = {knobs, 8, f, 1, NULL, 0, 1, 1024, 0600, ARQ_DECL_NO_TICK_THREAD, 0};
    arq_plane *p;
    if (arq_open(argv[1], &d, &p)) return 3;
    char shm[96];
    snprintf(shm, sizeof shm, "/arqon.%s", argv[1]);
    int fd = shm_open(shm, O_RDWR, 0);
    struct stat st;
    fstat(fd, &st);
    uint8_t *base = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    arq_snapshot_copy c;
    memset(&c, 0, sizeof c);
    c.n_slots = 2;
    c.cum_weight[0] = 0x7fffffffu;
    c.cum_weight[1] = 0xffffffffu;
    ARQ_STORE_REL(&arq_ctl(base)->lease_deadline_ns, mono_ns() + 3600000000000ull);
    arq_tick(p);  /* lease active: two slots served */
    enum { B = 64, N = 4000 };
    static uint64_t with[N], without[N];
    arq_view v;
    uint64_t gen = 1, sink = 0;
    for (int r = 0; r < 2 * N; r++) {
        int do_read = r & 1;
        uint64_t t0 = mono_ns();
        for (int i = 0; i < B; i++) {
            c.generation = gen++;
            arq_snapshot_publish(arq_snap(base), &c);
            if (do_read) { arq_read(p, (uint64_t)i, &v); sink += v.slot; }
        }
        uint64_t t = mono_ns() - t0;
        if (do_read) with[r / 2] = t; else without[r / 2] = t;
    }
    qsort(with, N, 8, cmp);
    qsort(without, N, 8, cmp);
    double changed = ((double)with[N / 2] - (double)without[N / 2]) / B;
    /* Unchanged reads in the same process for comparison. */
    uint64_t t0 = mono_ns();
    for (int i = 0; i < 1000000; i++) { arq_read(p, (uint64_t)i, &v); sink += v.slot; }
    double unchanged = (double)(mono_ns() - t0) / 1e6;
    printf("{\"read_changed_ns_p50\": %.2f, \"publish_c_ns_p50\": %.2f, \"read_unchanged_ns_mean\": %.2f, \"sink\": %llu}\n",
           changed, (double)without[N / 2] / B, unchanged, (unsigned long long)(sink & 1));
    munmap(base, st.st_size);
    close(fd);
    arq_close(p);
    return 0;
}
