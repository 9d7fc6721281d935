/* libarqon: the data-plane side of arqond.
 *
 * A process declares the knobs arqond may tune, the telemetry it emits and the
 * variants it can run, then calls two cheap functions on its hot path:
 *   arq_read()  - parameters for one request/step (never blocks, always in bounds)
 *   arq_emit()  - one telemetry record (wait-free; drops and counts when full)
 * If arqond is not running, or dies, the process runs on slot 0 (the known-good
 * baseline, initially the declared initial values) by itself: every publish
 * carries a lease that the daemon renews.
 *
 * Threading: arq_read may be called from any number of threads at once. Each
 * telemetry ring has exactly one producer thread: call arq_emit(p, ring, ...)
 * for a given ring from one thread only. arq_open/arq_close are not thread-safe
 * with respect to other calls on the same plane.
 */
#ifndef ARQON_H
#define ARQON_H

#include <stdint.h>
#include "arqon_layout.h" /* ARQ_MAX_KNOBS, ARQ_MAX_SLOTS, ...; generated from shm_layout/ */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arq_plane arq_plane;

enum { ARQ_KNOB_INTEGER = 1u << 0,   /* values are whole numbers */
       ARQ_KNOB_GLOBAL  = 1u << 1 }; /* process-wide: cannot differ between requests */

/* arq_decl.flags */
enum { ARQ_DECL_NO_TICK_THREAD = 1u << 0 }; /* the caller calls arq_tick() itself */

typedef struct { const char *name; double min, max, initial; unsigned flags; } arq_knob_decl;
typedef struct { const char *name; const char *unit; } arq_field_decl;   /* telemetry fields, record order */
typedef struct { const char *name; } arq_variant_decl;                   /* discrete variants it can run */

typedef struct {
  const arq_knob_decl *knobs;        unsigned n_knobs;
  const arq_field_decl *fields;      unsigned n_fields;
  const arq_variant_decl *variants;  unsigned n_variants;   /* may be 0 */
  unsigned n_rings;                  /* one single-producer ring per producer thread */
  unsigned ring_capacity;            /* records per ring, power of two */
  unsigned mode;                     /* segment permission bits, e.g. 0600 or 0660; never o+w */
  /* Additions (zero = default): */
  unsigned flags;                    /* ARQ_DECL_* */
  unsigned tick_us;                  /* housekeeping period in microseconds (default 100): lease
                                        check, heartbeat, coarse clock for record timestamps */
} arq_decl;

typedef struct {
  uint64_t generation;   /* snapshot generation this view was read from */
  uint32_t slot;         /* traffic slot chosen for this key; 0 = baseline */
  uint32_t variant;      /* index of the variant to run */
  double knob[ARQ_MAX_KNOBS];   /* declaration order; always within [min, max] */
} arq_view;

/* Error codes (negative); arq_strerror() gives the text. */
enum {
  ARQ_OK        = 0,
  ARQ_EINVAL    = -1,   /* bad argument or declaration */
  ARQ_ENAME     = -2,   /* name must be 1..47 chars of [A-Za-z0-9_.-] */
  ARQ_EBUSY     = -3,   /* the segment is owned by another live process */
  ARQ_ESYS      = -4,   /* a system call failed; errno is kept */
  ARQ_EMODE     = -5,   /* mode would make the segment writable by others */
  ARQ_ENOMEM    = -6,
  ARQ_EDROPPED  = -7,   /* arq_emit: ring full, record dropped and counted */
  ARQ_ERING     = -8,   /* arq_emit: no such ring */
  ARQ_ESLOT     = -9,   /* arq_read_slot: slot not active in this snapshot */
};

int  arq_open(const char *name, const arq_decl *decl, arq_plane **out); /* creates /arqon.<name> */
void arq_close(arq_plane *p);
int  arq_read(arq_plane *p, uint64_t key, arq_view *out);   /* never blocks */
int  arq_emit(arq_plane *p, unsigned ring, const arq_view *v, const double *fields); /* wait-free */
const char *arq_strerror(int err);

/* Additions. */
/* The view of one given slot (for shadow evaluation: run the candidate on a copy of the
 * input without serving its result, and emit with that view). Returns ARQ_ESLOT if the
 * slot is not active (or the lease has lapsed and only slot 0 is served). */
int  arq_read_slot(arq_plane *p, unsigned slot, arq_view *out);
/* Housekeeping: lease check, heartbeat, coarse clock, ack. Called by libarqon's own
 * thread every tick_us unless ARQ_DECL_NO_TICK_THREAD. */
void arq_tick(arq_plane *p);
/* 1 if a daemon's lease is live (candidates may be served), 0 if serving baseline only. */
int  arq_lease_active(const arq_plane *p);
/* Drops counted on a ring so far. */
uint64_t arq_drops(const arq_plane *p, unsigned ring);

#ifdef __cplusplus
}
#endif
#endif /* ARQON_H */
