/* common.h: what the two demo data planes (universe, serve) share.
 *
 *   - command line: --name --scenario --seed --duration --time-scale --fixed --json
 *                   --status-every --phase --unpaced --rate-scale --capacity
 *   - a monotonic clock and absolute sleeps (pacing never accumulates drift)
 *   - a seeded generator (splitmix64): every random draw of a run comes from --seed
 *   - the scenario timeline: named phases of fixed (scaled) length
 *   - per phase and group accumulators of telemetry fields, printed as JSON
 *     (count, mean, p50, p99 per field); NaN/inf print as null so the output stays JSON
 *   - --fixed k=v,...[,variant=NAME] parsing checked against the declaration
 *
 * Header-only on purpose: each app is one translation unit linked against libarqon.a.
 */
#ifndef ARQ_APPS_COMMON_H
#define ARQ_APPS_COMMON_H

#define _GNU_SOURCE
#include "arqon.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- clock ------------------------------------------------------------------------ */

static inline uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleep until an absolute CLOCK_MONOTONIC time: a late wake-up does not shift later deadlines. */
static inline void sleep_until_ns(uint64_t t_ns) {
    struct timespec ts = {(time_t)(t_ns / 1000000000ull), (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        if (mono_ns() >= t_ns) break;
    }
}

/* ---- stop on SIGTERM / SIGINT -------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static void on_stop_signal(int sig) { (void)sig; g_stop = 1; }
static inline void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}
static inline int stop_requested(void) { return __atomic_load_n(&g_stop, __ATOMIC_RELAXED) != 0; }

/* ---- seeded generator ---------------------------------------------------------------- */

typedef struct { uint64_t s; } rng_t;

static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline rng_t rng_make(uint64_t seed, uint64_t stream) {
    rng_t r = {seed * 0x9E3779B97F4A7C15ull ^ (stream + 0x632BE59BD9B4E019ull)};
    splitmix64(&r.s);
    return r;
}
static inline uint64_t rng_u64(rng_t *r) { return splitmix64(&r->s); }
static inline double rng_unit(rng_t *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; } /* [0, 1) */
static inline double rng_normal(rng_t *r) {
    double u1 = rng_unit(r), u2 = rng_unit(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static inline double rng_exp(rng_t *r, double mean) { return -mean * log(1.0 - rng_unit(r)); }

/* ---- command line ------------------------------------------------------------------ */

typedef struct {
    const char *name;         /* segment name: /arqon.<name> */
    const char *scenario;     /* built-in scenario name */
    uint64_t seed;
    double time_scale;        /* every phase length is multiplied by this */
    double duration;          /* > 0: total run length in s; phases are rescaled to fit it */
    const char *fixed;        /* NULL: follow the daemon; else static k=v[,variant=NAME] */
    int json;                 /* print the final JSON summary */
    double status_every;      /* > 0: one JSON status line per this many seconds */
    int hold_phase;           /* >= 0: hold this phase's conditions for the whole run */
    int unpaced;              /* universe: run steps back to back on a virtual clock (sweeps) */
    double rate_scale;        /* serve: multiply every offered rate */
    double capacity;          /* serve: > 0 pins the fp32 capacity (req/s) instead of measuring it */
} app_opts;

static void die_usage(const char *prog, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_usage(const char *prog, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s --name NAME [--scenario demo|short] [--seed S] [--time-scale X] [--duration S]\n"
                    "          [--fixed k=v,...[,variant=NAME]] [--json] [--status-every S] [--phase N]\n"
                    "          [--unpaced] [--rate-scale X] [--capacity RPS]\n", prog);
    exit(2);
}

static double parse_num(const char *prog, const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        die_usage(prog, "%s: expected a number, got '%s'", opt, s);
    return v;
}

static void parse_opts(int argc, char **argv, app_opts *o) {
    const char *prog = argv[0];
    *o = (app_opts){.scenario = "demo", .seed = 1, .time_scale = 1.0, .duration = -1,
                    .hold_phase = -1, .rate_scale = 1.0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED() do { if (!v) die_usage(prog, "%s needs a value", a); i++; } while (0)
        if (!strcmp(a, "--name")) { NEED(); o->name = v; }
        else if (!strcmp(a, "--scenario")) { NEED(); o->scenario = v; }
        else if (!strcmp(a, "--seed")) { NEED(); o->seed = (uint64_t)parse_num(prog, a, v); }
        else if (!strcmp(a, "--time-scale")) { NEED(); o->time_scale = parse_num(prog, a, v); }
        else if (!strcmp(a, "--duration")) { NEED(); o->duration = parse_num(prog, a, v); }
        else if (!strcmp(a, "--fixed")) { NEED(); o->fixed = v; }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--status-every")) { NEED(); o->status_every = parse_num(prog, a, v); }
        else if (!strcmp(a, "--phase")) { NEED(); o->hold_phase = (int)parse_num(prog, a, v); }
        else if (!strcmp(a, "--unpaced")) o->unpaced = 1;
        else if (!strcmp(a, "--rate-scale")) { NEED(); o->rate_scale = parse_num(prog, a, v); }
        else if (!strcmp(a, "--capacity")) { NEED(); o->capacity = parse_num(prog, a, v); }
        else die_usage(prog, "unknown option '%s'", a);
#undef NEED
    }
    if (!o->name) die_usage(prog, "--name is required");
    if (!(o->time_scale > 0)) die_usage(prog, "--time-scale: expected > 0, got %g", o->time_scale);
    if (o->duration != -1 && !(o->duration > 0)) die_usage(prog, "--duration: expected > 0 s, got %g", o->duration);
    if (!(o->rate_scale > 0)) die_usage(prog, "--rate-scale: expected > 0, got %g", o->rate_scale);
    if (o->status_every < 0) die_usage(prog, "--status-every: expected >= 0 s, got %g", o->status_every);
}

/* --fixed "k=v,k=v[,variant=NAME]": unspecified knobs keep their declared initial value.
 * Values outside the declared bounds are refused, not clamped: a static arm that silently
 * ran something else would make the comparison meaningless. */
static void parse_fixed(const char *prog, const char *spec, const arq_knob_decl *knobs, unsigned nk,
                        const arq_variant_decl *vars, unsigned nv, double *vals, uint32_t *variant) {
    for (unsigned k = 0; k < nk; k++) vals[k] = knobs[k].initial;
    *variant = 0;
    char buf[1024];
    if (strlen(spec) >= sizeof buf) die_usage(prog, "--fixed: longer than %zu characters", sizeof buf - 1);
    strcpy(buf, spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) die_usage(prog, "--fixed: '%s' is not key=value", item);
        *eq = 0;
        const char *key = item, *val = eq + 1;
        if (!strcmp(key, "variant")) {
            unsigned j = 0;
            while (j < nv && strcmp(vars[j].name, val)) j++;
            if (j == nv) {
                char names[512] = "";
                for (unsigned t = 0; t < nv; t++) {
                    strncat(names, t ? ", " : "", sizeof names - strlen(names) - 1);
                    strncat(names, vars[t].name, sizeof names - strlen(names) - 1);
                }
                die_usage(prog, "--fixed variant=%s: not a declared variant (declared: %s)", val,
                          nv ? names : "none");
            }
            *variant = j;
            continue;
        }
        unsigned k = 0;
        while (k < nk && strcmp(knobs[k].name, key)) k++;
        if (k == nk) die_usage(prog, "--fixed %s: not a declared knob", key);
        char opt[96];
        snprintf(opt, sizeof opt, "--fixed %s", key);
        double x = parse_num(prog, opt, val);
        if (x < knobs[k].min || x > knobs[k].max)
            die_usage(prog, "--fixed %s=%g: outside the declared bounds [%g, %g]; refusing to start", key, x,
                      knobs[k].min, knobs[k].max);
        if ((knobs[k].flags & ARQ_KNOB_INTEGER) && x != rint(x))
            die_usage(prog, "--fixed %s=%g: this knob is INTEGER", key, x);
        vals[k] = x;
    }
}

/* ---- scenario timeline ------------------------------------------------------------- */

#define MAX_PHASES 8

/* Phase boundaries in seconds of scenario time. `hold` >= 0 pins one phase for the whole run. */
typedef struct {
    int n, hold;
    double start[MAX_PHASES + 1];   /* start[n] = total length */
} timeline;

/* base[i]: phase lengths in s at time scale 1. duration > 0 rescales them to sum to it
 * (with `hold`, the held phase lasts `duration`, else its own scaled length). */
static void timeline_init(timeline *tl, const double *base, int n, const app_opts *o) {
    tl->n = n;
    tl->hold = o->hold_phase;
    double total = 0;
    for (int i = 0; i < n; i++) total += base[i] * o->time_scale;
    double k = o->time_scale;
    if (o->duration > 0 && o->hold_phase < 0) k *= o->duration / total;
    tl->start[0] = 0;
    for (int i = 0; i < n; i++) tl->start[i + 1] = tl->start[i] + base[i] * k;
    if (o->hold_phase >= 0) {
        double len = o->duration > 0 ? o->duration : base[o->hold_phase] * o->time_scale;
        for (int i = 0; i <= n; i++) tl->start[i] = 0;
        for (int i = o->hold_phase + 1; i <= n; i++) tl->start[i] = len;
    }
}
static inline double timeline_total(const timeline *tl) { return tl->start[tl->n]; }
/* Phase index at scenario time t (s) and the fraction of that phase elapsed, in [0, 1]. */
static inline int timeline_phase(const timeline *tl, double t, double *frac) {
    int i = tl->hold >= 0 ? tl->hold : 0;
    if (tl->hold < 0)
        while (i + 1 < tl->n && t >= tl->start[i + 1]) i++;
    double len = tl->start[i + 1] - tl->start[i];
    double f = len > 0 ? (t - tl->start[i]) / len : 0;
    if (frac) *frac = f < 0 ? 0 : (f > 1 ? 1 : f);
    return i;
}

/* ---- telemetry accumulators ------------------------------------------------------------ */

#define MAX_FIELDS ARQ_MAX_FIELDS

/* A group keeps at most RESERVOIR_CAP records (uniform reservoir sample, Algorithm R, with
 * its own fixed-seed generator so a run's summary is reproducible from its telemetry): long
 * high-rate runs stay bounded in memory; count, and so every mean's weight, stays exact. */
#define RESERVOIR_CAP 65536
typedef struct { double *v; size_t n, cap; } series;
typedef struct { size_t count; uint64_t rs; series f[MAX_FIELDS]; } group_acc;

static inline void series_push(series *s, double x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v) return;   /* out of memory: the summary loses this sample, the data plane goes on */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}
static inline void group_add(group_acc *g, const double *fields, unsigned nf) {
    g->count++;
    if (g->count <= RESERVOIR_CAP) {
        for (unsigned i = 0; i < nf; i++) series_push(&g->f[i], fields[i]);
        return;
    }
    uint64_t j = splitmix64(&g->rs) % g->count;   /* keep with probability cap / count */
    if (j < RESERVOIR_CAP)
        for (unsigned i = 0; i < nf; i++)
            if (j < g->f[i].n) g->f[i].v[j] = fields[i];
}
static inline void group_reset(group_acc *g, unsigned nf) {
    g->count = 0;
    for (unsigned i = 0; i < nf; i++) g->f[i].n = 0;
}
static inline void group_free(group_acc *g, unsigned nf) {
    for (unsigned i = 0; i < nf; i++) free(g->f[i].v);
    memset(g, 0, sizeof *g);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* JSON number; non-finite values become null so every line parses. */
static inline void json_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.9g", x);
    else fputs("null", f);
}

/* {"mean": .., "p50": .., "p99": .., "max": ..} of one series (nearest-rank percentiles,
 * non-finite values sorted last; mean over finite values). Sorts the series in place. */
static void json_series(FILE *f, series *s) {
    if (!s->n) { fputs("{\"mean\": null, \"p50\": null, \"p99\": null, \"max\": null}", f); return; }
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    double sum = 0;
    size_t fin = 0;
    for (size_t i = 0; i < s->n; i++)
        if (isfinite(s->v[i])) { sum += s->v[i]; fin++; }
    size_t i50 = (size_t)ceil(0.50 * (double)s->n) - 1, i99 = (size_t)ceil(0.99 * (double)s->n) - 1;
    fputs("{\"mean\": ", f);
    json_num(f, fin ? sum / (double)fin : NAN);
    fputs(", \"p50\": ", f);
    json_num(f, s->v[i50]);
    fputs(", \"p99\": ", f);
    json_num(f, s->v[i99]);
    fputs(", \"max\": ", f);
    json_num(f, s->v[s->n - 1]);
    fputc('}', f);
}

/* {"count": n, "fields": {"<name>": {...}, ...}}; over the reservoir when count > RESERVOIR_CAP. */
static void json_group(FILE *f, group_acc *g, const arq_field_decl *fields, unsigned nf) {
    fprintf(f, "{\"count\": %zu, \"fields\": {", g->count);
    for (unsigned i = 0; i < nf; i++) {
        fprintf(f, "%s\"%s\": ", i ? ", " : "", fields[i].name);
        json_series(f, &g->f[i]);
    }
    fputs("}}", f);
}

/* The static view --fixed runs under: slot 0, generation 0, so its telemetry is never taken
 * for a daemon-published generation. */
static inline void fixed_view(arq_view *v, const double *vals, unsigned nk, uint32_t variant) {
    memset(v, 0, sizeof *v);
    v->variant = variant;
    for (unsigned k = 0; k < nk; k++) v->knob[k] = vals[k];
}

static inline void announce_ready(void) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
}

static inline void json_fixed(FILE *f, const char *fixed) {
    if (!fixed) { fputs("null", f); return; }
    fputc('"', f);
    for (const char *c = fixed; *c; c++) {
        if (*c == '"' || *c == '\\') fputc('\\', f);
        if ((unsigned char)*c >= 0x20) fputc(*c, f);
    }
    fputc('"', f);
}

#endif /* ARQ_APPS_COMMON_H */
