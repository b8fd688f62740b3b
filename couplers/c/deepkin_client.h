/*
 * deepkin_client.h - the deepkin chemistry-step service from C, C++ and Fortran.
 *
 * One opaque handle per connection (no global state; one handle per thread). A state is one row
 * [T (K), P (Pa), Y_1 .. Y_ns] of doubles, mass fractions in the model's species order; n cells
 * are n rows, C order (in Fortran: states(2 + ns, n)). Every function that can fail returns a
 * status (DEEPKIN_OK = 0); deepkin_errmsg() copies the reason as one readable line.
 *
 *   deepkin_client *c;
 *   if (deepkin_open("http://127.0.0.1:8000", "h2-air", NULL, NULL, 30.0, &c) != DEEPKIN_OK) {
 *       char why[512]; deepkin_errmsg(c, why, sizeof why); ...; deepkin_close(c);
 *   }
 *   deepkin_step(c, n, states, 0.0, advanced);   dt_s 0 = the model's dt
 *   deepkin_close(c);
 *
 * Build: cc -c deepkin_client.c; link with -lcurl. Needs a little-endian host (the wire is
 * little-endian float64, sent and received without conversion).
 *
 * In-process backend: deepkin_open also takes the path of a model file written by
 * `deepkin export MODEL -o FILE` (a TorchScript file) in place of the URL; the same handle and
 * functions then step the cells in the caller's process with libtorch (no server, no Python).
 * Build deepkin_client.c with -DDEEPKIN_WITH_LIBTORCH and link deepkin_local.cpp against the
 * libtorch of the torch wheel (see deepkin_local.cpp). Cells outside the model's training domain
 * are not stepped there (the service steps them with Cantera): they come back as given and
 * deepkin_last_flags marks them. The first in-process open raises glibc's mmap and trim
 * thresholds of the process (32 MiB, 1 GiB), so that the step's temporaries are reused from call
 * to call instead of mapped and faulted in afresh (7-20 % of a 1,000-cell step); not when the
 * process set MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES itself, nor with
 * DEEPKIN_MALLOC=system.
 */
#ifndef DEEPKIN_CLIENT_H
#define DEEPKIN_CLIENT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deepkin_client deepkin_client;

enum deepkin_status {
    DEEPKIN_OK = 0,
    DEEPKIN_ERROR_ARGUMENT = 1,  /* a NULL pointer, n_cells < 0, a bad index */
    DEEPKIN_ERROR_MEMORY = 2,
    DEEPKIN_ERROR_CONNECT = 3,   /* no server at the URL for the whole timeout (retried) */
    DEEPKIN_ERROR_TIMEOUT = 4,   /* no complete answer within the timeout */
    DEEPKIN_ERROR_BUSY = 5,      /* 503 (queue full) for the whole timeout (retried) */
    DEEPKIN_ERROR_AUTH = 6,      /* 401 / 403: token missing or wrong */
    DEEPKIN_ERROR_NOT_FOUND = 7, /* 404: no such model */
    DEEPKIN_ERROR_MECHANISM = 8, /* 409, or the model's mechanism is not the expected one */
    DEEPKIN_ERROR_INPUT = 9,     /* 413 / 415 / 422: the server refused the states or dt */
    DEEPKIN_ERROR_SERVER = 10,   /* any other HTTP status */
    DEEPKIN_ERROR_PROTOCOL = 11, /* an answer that breaks the protocol, or a big-endian host */
    DEEPKIN_ERROR_MODEL = 12     /* a model file libtorch cannot load or step, or a build without
                                    the in-process backend */
};

/* Per-cell flags of deepkin_last_flags. */
enum deepkin_cell_flag {
    DEEPKIN_CELL_STEPPED = 0, /* stepped by the model's networks */
    DEEPKIN_CELL_FROZEN = 1,  /* below the model's frozen temperature: returned as given */
    DEEPKIN_CELL_FALLBACK = 2 /* needs another integrator (outside the training domain, below the
                                 induction network's resolution, or T not found): returned as
                                 given, for the caller to step */
};

/* Connect to `url` (e.g. "http://127.0.0.1:8000") and read `model`'s species order, dt and
 * mechanism sha256. `token` (bearer) and `mechanism_sha256` (hex; checked now and sent with every
 * step) may be NULL or "". `timeout_s` bounds each call, retries of refused connections and 503
 * answers included. *client is set even on failure (NULL only when out of memory): read the
 * reason with deepkin_errmsg, then deepkin_close it.
 *
 * `url` may instead be a model file of `deepkin export` (a path to an existing file, or
 * "file://PATH"): it is loaded in-process (see above); `model` (may be NULL) only names it in
 * messages, `token` is not used, `mechanism_sha256` is checked against the file's. */
int deepkin_open(const char *url, const char *model, const char *token, const char *mechanism_sha256,
                 double timeout_s, deepkin_client **client);

int deepkin_n_species(const deepkin_client *client);  /* ns; 0 before a successful open */
double deepkin_dt(const deepkin_client *client);      /* the model's step (s) */

/* Copy species k's name (0-based) or the model's mechanism sha256 into buf (size bytes, NUL
 * terminated, truncated if short). */
int deepkin_species_name(const deepkin_client *client, int k, char *buf, int size);
int deepkin_mechanism_sha256(const deepkin_client *client, char *buf, int size);

/* Advance n_cells states (n_cells x (2 + ns) doubles) by dt_s (s; 0 = the model's dt; else a
 * whole multiple of it) in one request; the answer goes to `advanced` (same shape; may be
 * `states` itself only if the caller no longer needs the input). */
int deepkin_step(deepkin_client *client, long n_cells, const double *states, double dt_s,
                 double *advanced);

/* Counts of the last successful step: cells, frozen (returned unchanged), fallback (stepped by
 * Cantera, outside the training domain), model steps per call. Any pointer may be NULL. */
void deepkin_last_counts(const deepkin_client *client, long *cells, long *frozen, long *fallback,
                         long *substeps);

/* Flags of the cells of the last successful step of a model file (enum deepkin_cell_flag), into
 * flags[0 .. n_cells-1]; n_cells must be that step's. DEEPKIN_ERROR_ARGUMENT for a client of the
 * service (which steps every cell itself: its counts are in deepkin_last_counts). */
int deepkin_last_flags(const deepkin_client *client, long n_cells, signed char *flags);

/* Threads of a model file's in-process step (libtorch's intra-op threads; > 0): 1 for one MPI
 * rank per core. They are the process's: every handle of the process shares them. A client of the
 * service has none to set (the service's are `deepkin serve --threads`): DEEPKIN_OK, no effect. */
int deepkin_set_threads(deepkin_client *client, int n_threads);

long deepkin_http_status(const deepkin_client *client); /* of the last answer; 0 = none */

/* The last error as one line (empty after success); returns the message's full length. */
int deepkin_errmsg(const deepkin_client *client, char *buf, int size);

void deepkin_close(deepkin_client *client); /* NULL is fine */

#ifdef __cplusplus
}
#endif

#endif /* DEEPKIN_CLIENT_H */
