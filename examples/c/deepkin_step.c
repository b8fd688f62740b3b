/*
 * deepkin_step.c - call the deepkin chemistry-step service from C (or C++) with the project's C
 * client library, couplers/c/deepkin_client.h (libcurl only, no JSON for the caller).
 *
 *   cc -O2 -Wall -Icouplers/c -o deepkin_step examples/c/deepkin_step.c couplers/c/deepkin_client.c -lcurl -lm
 *   ./deepkin_step http://127.0.0.1:8000 h2-air [TOKEN]
 *
 * 1. deepkin_open reads the model's species order (the column order of Y), dt and mechanism sha256.
 * 2. deepkin_step advances N_CELLS stoichiometric hydrogen/air cells [T (K), P (Pa), Y_1..Y_ns]
 *    by one model step in one binary request; deepkin_last_counts says how many cells were frozen
 *    or fell back to Cantera.
 * 3. The same call with a NaN cell: the service refuses it (HTTP 422) with a one-line reason.
 *
 * Needs a model whose mechanism has H2, O2 and N2. Exit status 0 when every check passed.
 */
#include "deepkin_client.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_CELLS 4

static int fail(deepkin_client *client, const char *what) {
    char why[1024];
    deepkin_errmsg(client, why, (int)sizeof why);
    fprintf(stderr, "error: %s: %s\n", what, why);
    deepkin_close(client);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s URL MODEL [TOKEN]\n", argv[0]);
        return 2;
    }
    deepkin_client *client = NULL;
    if (deepkin_open(argv[1], argv[2], argc > 3 ? argv[3] : NULL, NULL, 30.0, &client) != DEEPKIN_OK)
        return fail(client, "open");

    /* 1. species order */
    const int ns = deepkin_n_species(client);
    int i_h2 = -1, i_o2 = -1, i_n2 = -1;
    for (int k = 0; k < ns; k++) {
        char name[64];
        deepkin_species_name(client, k, name, (int)sizeof name);
        if (!strcmp(name, "H2")) i_h2 = k;
        if (!strcmp(name, "O2")) i_o2 = k;
        if (!strcmp(name, "N2")) i_n2 = k;
    }
    if (i_h2 < 0 || i_o2 < 0 || i_n2 < 0) {
        fprintf(stderr, "error: model %s has no H2, O2 or N2\n", argv[2]);
        deepkin_close(client);
        return 1;
    }
    printf("model %s: %d species, dt %g s\n", argv[2], ns, deepkin_dt(client));

    /* 2. one step of N_CELLS stoichiometric hydrogen/air cells at 1 atm */
    const int width = 2 + ns;
    double *states = (double *)calloc((size_t)N_CELLS * width, sizeof(double));
    double *advanced = (double *)calloc((size_t)N_CELLS * width, sizeof(double));
    if (!states || !advanced) return fail(client, "memory");
    for (int c = 0; c < N_CELLS; c++) {
        double *row = states + (size_t)c * width;
        row[0] = 1000.0 + 200.0 * c; /* T (K) */
        row[1] = 101325.0;           /* P (Pa) */
        row[2 + i_h2] = 0.0285;      /* mass fractions, sum 1 */
        row[2 + i_o2] = 0.2264;
        row[2 + i_n2] = 0.7451;
    }
    if (deepkin_step(client, N_CELLS, states, 0.0, advanced) != DEEPKIN_OK) return fail(client, "step");
    int failures = 0;
    for (int c = 0; c < N_CELLS; c++) {
        const double *before = states + (size_t)c * width, *after = advanced + (size_t)c * width;
        double sum = 0.0;
        for (int k = 0; k < ns; k++) sum += after[2 + k];
        printf("cell %d: T %.3f -> %.6f K, sum Y %.12f\n", c, before[0], after[0], sum);
        if (!isfinite(after[0]) || fabs(sum - 1.0) > 1e-6) failures++;
    }
    long cells, frozen, fallback, substeps;
    deepkin_last_counts(client, &cells, &frozen, &fallback, &substeps);
    printf("cells %ld, frozen %ld, fallback %ld, substeps %ld\n", cells, frozen, fallback, substeps);
    if (cells != N_CELLS) failures++;

    /* 3. bad input: a NaN temperature is refused with 422 and a readable message */
    states[0] = NAN;
    int status = deepkin_step(client, N_CELLS, states, 0.0, advanced);
    char why[1024];
    deepkin_errmsg(client, why, (int)sizeof why);
    printf("NaN cell: %s\n", why);
    if (status != DEEPKIN_ERROR_INPUT || deepkin_http_status(client) != 422) failures++;

    free(states);
    free(advanced);
    deepkin_close(client);
    printf(failures ? "FAILED (%d)\n" : "ok\n", failures);
    return failures ? 1 : 0;
}
