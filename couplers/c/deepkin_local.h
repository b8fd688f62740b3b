/*
 * deepkin_local.h - the client library's in-process backend (deepkin_local.cpp, libtorch): a
 * model file written by `deepkin export` stepped in the caller's process. Internal to
 * deepkin_client.c, which calls it when built with -DDEEPKIN_WITH_LIBTORCH; callers use
 * deepkin_client.h only.
 */
#ifndef DEEPKIN_LOCAL_H
#define DEEPKIN_LOCAL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deepkin_local deepkin_local;

/* Load the TorchScript file at `path`; on success *local is set, *species (ns + 1 malloc'd
 * strings, the last NULL: free each and the array), *ns, *dt_s (s) and sha256 (hex, NUL
 * terminated) are filled. Returns a deepkin_status; on failure the reason goes to err. */
int deepkin_local_open(const char *path, deepkin_local **local, char ***species, int *ns,
                       double *dt_s, char *sha256, size_t sha256_size, char *err, size_t err_size);

/* Advance n_cells rows [T, P, Y_1..Y_ns] (doubles, C order) by n_substeps model steps into
 * `advanced` (may be `states`); flags[i]: 0 stepped by the networks, 1 frozen, 2 needs another
 * integrator (both returned as given). Returns a deepkin_status. */
int deepkin_local_step(deepkin_local *local, long n_cells, const double *states, long n_substeps,
                       double *advanced, signed char *flags, char *err, size_t err_size);

/* libtorch's intra-op threads of the process (n_threads >= 1). */
void deepkin_local_set_threads(int n_threads);

void deepkin_local_close(deepkin_local *local); /* NULL is fine */

#ifdef __cplusplus
}
#endif

#endif /* DEEPKIN_LOCAL_H */
