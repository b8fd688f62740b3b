/*
 * deepkin_step.c - call the deepkin chemistry-step service from C with libcurl (no JSON library).
 *
 *   cc -O2 -Wall -o deepkin_step examples/c/deepkin_step.c -lcurl
 *   ./deepkin_step http://127.0.0.1:8000 h2-air [TOKEN]
 *
 * 1. GET  /v1/models/{model}/species   plain text, one species a line: the column order of Y.
 * 2. POST /v1/models/{model}/step      body = n cells x (2 + ns) little-endian doubles
 *                                      [T (K), P (Pa), Y_1..Y_ns]; the answer has the same layout.
 *    Counts come back in headers: X-Cells, X-Frozen-Cells, X-Fallback-Cells, X-Substeps.
 * 3. The same call with a NaN cell: the service answers 422 and a one-line JSON error.
 *
 * Needs a model whose mechanism has H2, O2 and N2 (a stoichiometric hydrogen/air mixture is built).
 * Exit status 0 when every check passed.
 */
#include <curl/curl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_SPECIES 1024
#define N_CELLS 4

typedef struct {
    char *data;
    size_t size;
} buffer_t;

typedef struct {
    long cells, frozen, fallback, substeps;
} counts_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    buffer_t *buf = (buffer_t *)userdata;
    size_t n = size * nmemb;
    char *grown = realloc(buf->data, buf->size + n + 1);
    if (!grown) return 0;
    buf->data = grown;
    memcpy(buf->data + buf->size, ptr, n);
    buf->size += n;
    buf->data[buf->size] = '\0';
    return n;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata) {
    counts_t *c = (counts_t *)userdata;
    size_t n = size * nitems;
    struct { const char *name; long *value; } fields[] = {
        {"X-Cells:", &c->cells}, {"X-Frozen-Cells:", &c->frozen},
        {"X-Fallback-Cells:", &c->fallback}, {"X-Substeps:", &c->substeps}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        size_t len = strlen(fields[i].name);
        if (n > len && strncasecmp(line, fields[i].name, len) == 0)
            *fields[i].value = strtol(line + len, NULL, 10);
    }
    return n;
}

/* One HTTP call; returns the status code (0 on a transport error). */
static long call(const char *url, const char *token, const void *body, size_t body_size,
                 buffer_t *answer, counts_t *counts) {
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    char auth[512];
    long status = 0;
    if (!curl) return 0;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (body) {
        headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
        headers = curl_slist_append(headers, "X-Dtype: float64");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_size);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
    if (counts) {
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, counts);
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "error: %s: %s\n", url, curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return status;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s URL MODEL [TOKEN]\n", argv[0]);
        return 2;
    }
    const char *base = argv[1], *model = argv[2], *token = argc > 3 ? argv[3] : NULL;
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        fprintf(stderr, "error: this example assumes a little-endian host\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char url[1024];
    int failures = 0;

    /* 1. species order */
    buffer_t species = {0};
    snprintf(url, sizeof url, "%s/v1/models/%s/species", base, model);
    long status = call(url, token, NULL, 0, &species, NULL);
    if (status != 200) {
        fprintf(stderr, "error: GET %s answered %ld: %s\n", url, status, species.data ? species.data : "");
        return 1;
    }
    char *names[MAX_SPECIES];
    int ns = 0;
    for (char *line = strtok(species.data, "\n"); line && ns < MAX_SPECIES; line = strtok(NULL, "\n"))
        names[ns++] = line;
    int i_h2 = -1, i_o2 = -1, i_n2 = -1;
    for (int k = 0; k < ns; k++) {
        if (!strcmp(names[k], "H2")) i_h2 = k;
        if (!strcmp(names[k], "O2")) i_o2 = k;
        if (!strcmp(names[k], "N2")) i_n2 = k;
    }
    if (i_h2 < 0 || i_o2 < 0 || i_n2 < 0) {
        fprintf(stderr, "error: model %s has no H2, O2 or N2\n", model);
        return 1;
    }
    printf("model %s: %d species\n", model, ns);

    /* 2. one step of N_CELLS stoichiometric hydrogen/air cells at 1 atm */
    const int width = 2 + ns;
    double *states = calloc((size_t)N_CELLS * width, sizeof(double));
    for (int c = 0; c < N_CELLS; c++) {
        double *row = states + (size_t)c * width;
        row[0] = 1000.0 + 200.0 * c; /* T (K) */
        row[1] = 101325.0;           /* P (Pa) */
        row[2 + i_h2] = 0.0285;      /* mass fractions, sum 1 */
        row[2 + i_o2] = 0.2264;
        row[2 + i_n2] = 0.7451;
    }
    buffer_t answer = {0};
    counts_t counts = {-1, -1, -1, -1};
    snprintf(url, sizeof url, "%s/v1/models/%s/step", base, model);
    size_t bytes = (size_t)N_CELLS * width * sizeof(double);
    status = call(url, token, states, bytes, &answer, &counts);
    if (status != 200 || answer.size != bytes) {
        fprintf(stderr, "error: POST %s answered %ld with %zu bytes: %s\n", url, status, answer.size,
                answer.data ? answer.data : "");
        return 1;
    }
    const double *advanced = (const double *)answer.data;
    for (int c = 0; c < N_CELLS; c++) {
        const double *before = states + (size_t)c * width, *after = advanced + (size_t)c * width;
        double sum = 0.0;
        for (int k = 0; k < ns; k++) sum += after[2 + k];
        printf("cell %d: T %.3f -> %.6f K, sum Y %.12f\n", c, before[0], after[0], sum);
        if (!isfinite(after[0]) || fabs(sum - 1.0) > 1e-6) failures++;
    }
    printf("cells %ld, frozen %ld, fallback %ld, substeps %ld\n", counts.cells, counts.frozen,
           counts.fallback, counts.substeps);
    if (counts.cells != N_CELLS) failures++;

    /* 3. bad input: a NaN temperature is refused with 422 and a readable message */
    states[0] = NAN;
    buffer_t error = {0};
    status = call(url, token, states, bytes, &error, NULL);
    printf("NaN cell: HTTP %ld %s\n", status, error.data ? error.data : "");
    if (status != 422) failures++;

    free(states);
    free(species.data);
    free(answer.data);
    free(error.data);
    curl_global_cleanup();
    printf(failures ? "FAILED (%d)\n" : "ok\n", failures);
    return failures ? 1 : 0;
}
