/*
 * deepkin_client.c - the binary wire of the deepkin service (docs/service.md) over libcurl.
 *
 *   GET  {url}/v1/models/{model}          JSON: dt_s, mechanism_sha256 (read here, once)
 *   GET  {url}/v1/models/{model}/species  plain text, one name a line: the column order of Y
 *   POST {url}/v1/models/{model}/step     n x (2 + ns) little-endian doubles in and out;
 *                                         counts in the X-Cells, X-Frozen-Cells,
 *                                         X-Fallback-Cells and X-Substeps headers
 *
 * One CURL easy handle per client keeps the connection open between steps. The answer of a step
 * is written straight into the caller's array (no copy beyond libcurl's receive buffer).
 *
 * A model file of `deepkin export` in place of the URL is stepped in-process by deepkin_local.cpp
 * (libtorch) when this file is built with -DDEEPKIN_WITH_LIBTORCH; the HTTP path is the same
 * either way.
 */
#define _POSIX_C_SOURCE 200809L
#include "deepkin_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#ifdef DEEPKIN_WITH_LIBTORCH
#include "deepkin_local.h"
#else
struct deepkin_local; /* the in-process backend: not in this build */
#endif

#define ERR_SIZE 1024
#define TEXT_LIMIT (16u << 20) /* largest non-state answer kept (species lists, error bodies) */
#define BACKOFF_FIRST_S 0.05
#define BACKOFF_MAX_S 1.0

enum { COUNT_CELLS, COUNT_FROZEN, COUNT_FALLBACK, COUNT_SUBSTEPS, N_COUNTS };

typedef struct {
    long status;          /* of the latest status line */
    long counts[N_COUNTS];
    double retry_after_s; /* Retry-After, or -1 */
    int dtype_float64;    /* X-Dtype: float64 seen */
    char *target;         /* 200 answers go here (NULL: into text) */
    size_t want, got;
    int overflow;
    char *text;
    size_t text_len, text_cap;
} reply_t;

struct deepkin_client {
    CURL *curl;
    char *base;          /* URL without a trailing '/' */
    char *model;         /* as given, for messages */
    char *model_path;    /* URL-escaped */
    char *auth_header;   /* "Authorization: Bearer ..." or NULL */
    char *sha_header;    /* "X-Mechanism-SHA256: ..." or NULL */
    double timeout_s;
    int ns;
    char **species;
    double dt_s;
    char sha256[72];
    long counts[N_COUNTS];
    long http_status;
    reply_t reply;
    struct deepkin_local *local; /* a model file stepped in-process, or NULL (the service) */
    signed char *flags;          /* per-cell flags of the last in-process step */
    long flags_n, flags_cap;
    char err[ERR_SIZE];
};

/* ---------------------------------------------------------------- small helpers */

static void set_error(deepkin_client *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    for (char *p = c->err; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *d = malloc(na + nb + 1);
    if (!d) return NULL;
    memcpy(d, a, na);
    memcpy(d + na, b, nb + 1);
    return d;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double seconds) {
    if (seconds <= 0) return;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static int copy_out(const char *text, char *buf, int size) {
    int n = (int)strlen(text);
    if (buf && size > 0) {
        int k = n < size - 1 ? n : size - 1;
        memcpy(buf, text, (size_t)k);
        buf[k] = '\0';
    }
    return n;
}

/* The value after top-level key `key` of a JSON object, or NULL. Strings are skipped whole, so a
 * key-like text inside a value never matches. */
static const char *json_value(const char *s, const char *key) {
    int depth = 0;
    size_t key_len = strlen(key);
    for (const char *p = s; *p; p++) {
        if (*p == '"') {
            const char *start = ++p;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1]) p++;
                p++;
            }
            if (!*p) return NULL;
            if (depth == 1 && (size_t)(p - start) == key_len && !strncmp(start, key, key_len)) {
                const char *q = p + 1;
                while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
                if (*q == ':') {
                    q++;
                    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
                    return q;
                }
            }
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            depth--;
        }
    }
    return NULL;
}

/* The string at `p` (which starts with '"') into out; simple escapes decoded, \uXXXX kept. */
static int json_string(const char *p, char *out, size_t size) {
    if (!p || *p != '"' || size == 0) return 0;
    size_t k = 0;
    for (p++; *p && *p != '"'; p++) {
        char ch = *p;
        if (ch == '\\' && p[1]) {
            p++;
            ch = *p == 'n' ? ' ' : *p == 't' ? ' ' : *p;
        }
        if (k + 1 < size) out[k++] = ch;
    }
    out[k] = '\0';
    return *p == '"';
}

/* The server's one-line reason from an error body ({"error": "..."}), else its first line. */
static void server_reason(const reply_t *r, char *out, size_t size) {
    out[0] = '\0';
    if (!r->text || !r->text_len) return;
    if (json_string(json_value(r->text, "error"), out, size)) return;
    size_t k = 0;
    for (const char *p = r->text; *p && *p != '\n' && k + 1 < size && k < 300; p++) out[k++] = *p;
    out[k] = '\0';
}

/* ---------------------------------------------------------------- libcurl callbacks */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
    reply_t *r = (reply_t *)userdata;
    size_t n = size * nmemb;
    if (r->status == 200 && r->target) {
        if (r->got + n > r->want) {
            r->overflow = 1;
            return 0; /* abort: more bytes than the states we sent */
        }
        memcpy(r->target + r->got, data, n);
        r->got += n;
        return n;
    }
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 4096;
        while (cap < r->text_len + n + 1) cap *= 2;
        if (cap > TEXT_LIMIT) {
            r->overflow = 1;
            return 0;
        }
        char *grown = realloc(r->text, cap);
        if (!grown) return 0;
        r->text = grown;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, data, n);
    r->text_len += n;
    r->text[r->text_len] = '\0';
    return n;
}

static int header_is(const char *line, size_t n, const char *name, const char **value) {
    size_t len = strlen(name);
    if (n <= len || strncasecmp(line, name, len) != 0 || line[len] != ':') return 0;
    *value = line + len + 1;
    return 1;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata) {
    reply_t *r = (reply_t *)userdata;
    size_t n = size * nitems;
    const char *value;
    static const char *const count_names[N_COUNTS] = {"X-Cells", "X-Frozen-Cells", "X-Fallback-Cells",
                                                      "X-Substeps"};
    if (n > 5 && !strncmp(line, "HTTP/", 5)) { /* a new answer (e.g. after a redirect): reset */
        const char *sp = memchr(line, ' ', n);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        for (int i = 0; i < N_COUNTS; i++) r->counts[i] = -1;
        r->retry_after_s = -1;
        r->dtype_float64 = 0;
        return n;
    }
    for (int i = 0; i < N_COUNTS; i++)
        if (header_is(line, n, count_names[i], &value)) r->counts[i] = strtol(value, NULL, 10);
    if (header_is(line, n, "Retry-After", &value)) r->retry_after_s = strtod(value, NULL);
    if (header_is(line, n, "X-Dtype", &value)) {
        while (*value == ' ') value++;
        r->dtype_float64 = !strncasecmp(value, "float64", 7);
    }
    return n;
}

/* ---------------------------------------------------------------- one call, with retries */

static int status_code(long http) {
    switch (http) {
    case 401:
    case 403: return DEEPKIN_ERROR_AUTH;
    case 404: return DEEPKIN_ERROR_NOT_FOUND;
    case 409: return DEEPKIN_ERROR_MECHANISM;
    case 413:
    case 415:
    case 422: return DEEPKIN_ERROR_INPUT;
    default: return DEEPKIN_ERROR_SERVER;
    }
}

/* GET (body NULL) or POST `url`. A 200 answer goes to `target` (want bytes) or into reply.text.
 * Refused connections and 503 are retried with back-off until the client's timeout. */
static int call(deepkin_client *c, const char *url, const void *body, size_t body_size,
                struct curl_slist *headers, void *target, size_t want) {
    const char *method = body ? "POST" : "GET";
    const double deadline = now_s() + c->timeout_s;
    double backoff = BACKOFF_FIRST_S;
    int attempts = 0;
    reply_t *r = &c->reply;
    CURL *h = c->curl;

    for (;;) {
        double left = deadline - now_s();
        attempts++;
        r->status = 0;
        r->target = (char *)target;
        r->want = want;
        r->got = 0;
        r->overflow = 0;
        r->text_len = 0;
        if (r->text) r->text[0] = '\0';
        for (int i = 0; i < N_COUNTS; i++) r->counts[i] = -1;
        r->retry_after_s = -1;
        r->dtype_float64 = 0;

        long left_ms = left > 0.001 ? (long)(left * 1000.0) : 1;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, left_ms);
        if (body) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_size);
        } else {
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        }
        CURLcode rc = curl_easy_perform(h);
        c->http_status = rc == CURLE_OK ? r->status : 0;
        left = deadline - now_s();

        if (rc == CURLE_OK && r->status == 200) return DEEPKIN_OK;
        if (rc == CURLE_OK && r->status == 503) {
            if (left > 0) {
                double wait = r->retry_after_s > 0 ? r->retry_after_s : backoff;
                sleep_s(wait < left ? wait : left);
                backoff = backoff * 2 < BACKOFF_MAX_S ? backoff * 2 : BACKOFF_MAX_S;
                continue;
            }
            char reason[512];
            server_reason(r, reason, sizeof reason);
            set_error(c, "%s %s: the server stayed busy (HTTP 503, %d tries in %g s): %s", method, url,
                      attempts, c->timeout_s, reason);
            return DEEPKIN_ERROR_BUSY;
        }
        if (rc == CURLE_OK) {
            char reason[512];
            server_reason(r, reason, sizeof reason);
            set_error(c, "%s %s: HTTP %ld: %s", method, url, r->status, reason);
            return status_code(r->status);
        }
        if (rc == CURLE_COULDNT_CONNECT) {
            if (left > 0) {
                sleep_s(backoff < left ? backoff : left);
                backoff = backoff * 2 < BACKOFF_MAX_S ? backoff * 2 : BACKOFF_MAX_S;
                continue;
            }
            set_error(c, "no server at %s: connection refused (%d tries in %g s); is `deepkin serve` "
                      "running there?", c->base, attempts, c->timeout_s);
            return DEEPKIN_ERROR_CONNECT;
        }
        if (rc == CURLE_OPERATION_TIMEDOUT) {
            set_error(c, "%s %s: no complete answer within the timeout of %g s", method, url,
                      c->timeout_s);
            return DEEPKIN_ERROR_TIMEOUT;
        }
        if (rc == CURLE_WRITE_ERROR && r->overflow) {
            set_error(c, "%s %s: the answer is longer than expected (%zu bytes)", method, url, want);
            return DEEPKIN_ERROR_PROTOCOL;
        }
        set_error(c, "%s %s: %s", method, url, curl_easy_strerror(rc));
        return rc == CURLE_OUT_OF_MEMORY ? DEEPKIN_ERROR_MEMORY : DEEPKIN_ERROR_CONNECT;
    }
}

static struct curl_slist *common_headers(const deepkin_client *c, struct curl_slist *list) {
    if (c->auth_header) list = curl_slist_append(list, c->auth_header);
    return list;
}

/* ---------------------------------------------------------------- the in-process backend */

/* The path of a model file named by deepkin_open's `url`: "file://PATH", an existing file, or
 * what can only be a path (it starts with '/' or '.', or ends in ".pt"), so that a missing file
 * is reported as missing rather than as a server that does not answer; anything with "://" is
 * a URL, and so is anything else ("localhost:8000"). NULL for a URL. */
static const char *model_file(const char *url) {
    if (!strncmp(url, "file://", 7)) return url + 7;
    if (strstr(url, "://")) return NULL;
    struct stat st;
    if (stat(url, &st) == 0 && S_ISREG(st.st_mode)) return url;
    size_t n = strlen(url);
    int path_like = url[0] == '/' || url[0] == '.' || (n > 3 && !strcmp(url + n - 3, ".pt"));
    return path_like ? url : NULL;
}

static int open_model_file(deepkin_client *c, const char *path, const char *model,
                           const char *mechanism_sha256) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_error(c, "model file %s does not exist", path);
        return DEEPKIN_ERROR_NOT_FOUND;
    }
#ifdef DEEPKIN_WITH_LIBTORCH
    c->base = dup_string(path);
    c->model = dup_string(model && *model ? model : path);
    if (!c->base || !c->model) {
        set_error(c, "deepkin_open: out of memory");
        return DEEPKIN_ERROR_MEMORY;
    }
    int ns = 0;
    int rc = deepkin_local_open(path, &c->local, &c->species, &ns, &c->dt_s, c->sha256,
                                sizeof c->sha256, c->err, sizeof c->err);
    if (rc != DEEPKIN_OK) return rc;
    if (mechanism_sha256 && *mechanism_sha256 && strcasecmp(mechanism_sha256, c->sha256) != 0) {
        set_error(c, "model file %s has mechanism sha256 %.12s..., expected %.12s...: it was trained "
                  "on another mechanism", path, c->sha256, mechanism_sha256);
        return DEEPKIN_ERROR_MECHANISM;
    }
    c->ns = ns;
    c->err[0] = '\0';
    return DEEPKIN_OK;
#else
    (void)model;
    (void)mechanism_sha256;
    set_error(c, "deepkin_open: %s is a model file, and this build of the client library has no "
              "in-process backend (build deepkin_client.c with -DDEEPKIN_WITH_LIBTORCH and link "
              "deepkin_local.cpp against libtorch)", path);
    return DEEPKIN_ERROR_MODEL;
#endif
}

/* The checks the service makes of a request's states, by row (not the thermo and pressure
 * ranges): finite values, T and P > 0, Y >= -1e-6, |sum Y - 1| <= 1e-4. */
static int check_cells(deepkin_client *c, long n_cells, const double *states) {
    const long width = 2 + c->ns;
    for (long i = 0; i < n_cells; i++) {
        const double *row = states + i * width;
        double sum = 0.0;
        for (long k = 0; k < width; k++) {
            if (!isfinite(row[k])) {
                set_error(c, "states: row %ld holds NaN or inf", i);
                return DEEPKIN_ERROR_INPUT;
            }
            if (k >= 2) sum += row[k];
        }
        for (int k = 0; k < 2; k++)
            if (!(row[k] > 0)) {
                set_error(c, "states: row %ld has %s <= 0 (%g)", i, k ? "pressure" : "temperature",
                          row[k]);
                return DEEPKIN_ERROR_INPUT;
            }
        for (long k = 0; k < c->ns; k++)
            if (row[2 + k] < -1e-6) {
                set_error(c, "states: row %ld has negative mass fraction of %s (%.3g)", i,
                          c->species[k], row[2 + k]);
                return DEEPKIN_ERROR_INPUT;
            }
        if (fabs(sum - 1.0) > 1e-4) {
            set_error(c, "states: row %ld has mass fractions summing to %.6g, not 1", i, sum);
            return DEEPKIN_ERROR_INPUT;
        }
    }
    return DEEPKIN_OK;
}

/* deepkin_step on a model file: n_substeps model steps in-process; flags kept per cell. */
static int step_model_file(deepkin_client *c, long n_cells, const double *states, double dt_s,
                           double *advanced) {
    long n_substeps = 1;
    if (dt_s > 0) {
        const double ratio = dt_s / c->dt_s, whole = floor(ratio + 0.5);
        if (!(whole >= 1) || whole > 1e9 || fabs(ratio - whole) > 1e-6 * (ratio > 1 ? ratio : 1)) {
            set_error(c, "dt: %g s is not a whole multiple of the model's dt (%g s)", dt_s, c->dt_s);
            return DEEPKIN_ERROR_INPUT;
        }
        n_substeps = (long)whole;
    }
    int rc = check_cells(c, n_cells, states);
    if (rc != DEEPKIN_OK) return rc;
    if (n_cells > c->flags_cap) {
        signed char *grown = realloc(c->flags, (size_t)n_cells);
        if (!grown) {
            set_error(c, "deepkin_step: out of memory");
            return DEEPKIN_ERROR_MEMORY;
        }
        c->flags = grown;
        c->flags_cap = n_cells;
    }
    long frozen = 0, fallback = 0;
    if (n_cells > 0) {
#ifdef DEEPKIN_WITH_LIBTORCH
        rc = deepkin_local_step(c->local, n_cells, states, n_substeps, advanced, c->flags, c->err,
                                sizeof c->err);
        if (rc != DEEPKIN_OK) return rc;
#else
        (void)advanced;
        return DEEPKIN_ERROR_MODEL; /* unreachable: no model file opens in this build */
#endif
        for (long i = 0; i < n_cells; i++) {
            frozen += c->flags[i] == DEEPKIN_CELL_FROZEN;
            fallback += c->flags[i] == DEEPKIN_CELL_FALLBACK;
        }
    }
    c->flags_n = n_cells;
    c->counts[COUNT_CELLS] = n_cells;
    c->counts[COUNT_FROZEN] = frozen;
    c->counts[COUNT_FALLBACK] = fallback;
    c->counts[COUNT_SUBSTEPS] = n_substeps;
    c->err[0] = '\0';
    return DEEPKIN_OK;
}

/* ---------------------------------------------------------------- public API */

int deepkin_open(const char *url, const char *model, const char *token, const char *mechanism_sha256,
                 double timeout_s, deepkin_client **client) {
    if (!client) return DEEPKIN_ERROR_ARGUMENT;
    deepkin_client *c = calloc(1, sizeof *c);
    *client = c;
    if (!c) return DEEPKIN_ERROR_MEMORY;
    for (int i = 0; i < N_COUNTS; i++) c->counts[i] = -1;
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        set_error(c, "deepkin_client needs a little-endian host (the wire is little-endian float64)");
        return DEEPKIN_ERROR_PROTOCOL;
    }
    const char *file = url ? model_file(url) : NULL;
    if (!url || !*url || (!file && (!model || !*model))) {
        set_error(c, "deepkin_open: url and model are required");
        return DEEPKIN_ERROR_ARGUMENT;
    }
    if (!(timeout_s > 0) || !isfinite(timeout_s)) {
        set_error(c, "deepkin_open: timeout must be > 0 s, got %g", timeout_s);
        return DEEPKIN_ERROR_ARGUMENT;
    }
    if (file) return open_model_file(c, file, model, mechanism_sha256);
    c->timeout_s = timeout_s;
    c->base = dup_string(url);
    c->model = dup_string(model);
    c->curl = curl_easy_init();
    if (!c->base || !c->model || !c->curl) {
        set_error(c, "deepkin_open: out of memory");
        return DEEPKIN_ERROR_MEMORY;
    }
    for (size_t n = strlen(c->base); n > 0 && c->base[n - 1] == '/'; n--) c->base[n - 1] = '\0';
    char *escaped = curl_easy_escape(c->curl, model, 0);
    c->model_path = escaped ? dup_string(escaped) : NULL;
    curl_free(escaped);
    if (token && *token) c->auth_header = join("Authorization: Bearer ", token);
    if (mechanism_sha256 && *mechanism_sha256)
        c->sha_header = join("X-Mechanism-SHA256: ", mechanism_sha256);
    if (!c->model_path || (token && *token && !c->auth_header) ||
        (mechanism_sha256 && *mechanism_sha256 && !c->sha_header)) {
        set_error(c, "deepkin_open: out of memory");
        return DEEPKIN_ERROR_MEMORY;
    }
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &c->reply);
    curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, &c->reply);

    char url_buf[2048];
    struct curl_slist *headers = common_headers(c, NULL);
    snprintf(url_buf, sizeof url_buf, "%s/v1/models/%s", c->base, c->model_path);
    int rc = call(c, url_buf, NULL, 0, headers, NULL, 0);
    if (rc == DEEPKIN_OK) {
        const char *dt = json_value(c->reply.text, "dt_s");
        char *end = NULL;
        c->dt_s = dt ? strtod(dt, &end) : 0.0;
        if (!dt || end == dt || !(c->dt_s > 0) ||
            !json_string(json_value(c->reply.text, "mechanism_sha256"), c->sha256, sizeof c->sha256)) {
            set_error(c, "GET %s: the answer has no dt_s or mechanism_sha256", url_buf);
            rc = DEEPKIN_ERROR_PROTOCOL;
        }
    }
    if (rc == DEEPKIN_OK && mechanism_sha256 && *mechanism_sha256 &&
        strcasecmp(mechanism_sha256, c->sha256) != 0) {
        set_error(c, "model '%s' at %s has mechanism sha256 %.12s..., expected %.12s...: it was trained "
                  "on another mechanism", model, c->base, c->sha256, mechanism_sha256);
        rc = DEEPKIN_ERROR_MECHANISM;
    }
    if (rc == DEEPKIN_OK) {
        snprintf(url_buf, sizeof url_buf, "%s/v1/models/%s/species", c->base, c->model_path);
        rc = call(c, url_buf, NULL, 0, headers, NULL, 0);
    }
    curl_slist_free_all(headers);
    if (rc != DEEPKIN_OK) return rc;

    int ns = 0;
    for (size_t i = 0; i < c->reply.text_len; i++) ns += c->reply.text[i] == '\n';
    c->species = calloc((size_t)ns + 1, sizeof *c->species);
    if (!c->species) {
        set_error(c, "deepkin_open: out of memory");
        return DEEPKIN_ERROR_MEMORY;
    }
    int k = 0;
    char *save = NULL;
    for (char *line = strtok_r(c->reply.text, "\n", &save); line && k < ns;
         line = strtok_r(NULL, "\n", &save)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[n - 1] = '\0';
        if (!(c->species[k] = dup_string(line))) {
            set_error(c, "deepkin_open: out of memory");
            return DEEPKIN_ERROR_MEMORY;
        }
        k++;
    }
    c->reply.text_len = 0;
    if (k == 0) {
        set_error(c, "GET %s: the model lists no species", url_buf);
        return DEEPKIN_ERROR_PROTOCOL;
    }
    c->ns = k;
    c->err[0] = '\0';
    return DEEPKIN_OK;
}

int deepkin_n_species(const deepkin_client *c) { return c ? c->ns : 0; }

double deepkin_dt(const deepkin_client *c) { return c ? c->dt_s : 0.0; }

int deepkin_species_name(const deepkin_client *c, int k, char *buf, int size) {
    if (!c || k < 0 || k >= c->ns || !buf || size <= 0) return DEEPKIN_ERROR_ARGUMENT;
    copy_out(c->species[k], buf, size);
    return DEEPKIN_OK;
}

int deepkin_mechanism_sha256(const deepkin_client *c, char *buf, int size) {
    if (!c || !c->ns || !buf || size <= 0) return DEEPKIN_ERROR_ARGUMENT;
    copy_out(c->sha256, buf, size);
    return DEEPKIN_OK;
}

int deepkin_step(deepkin_client *c, long n_cells, const double *states, double dt_s, double *advanced) {
    if (!c) return DEEPKIN_ERROR_ARGUMENT;
    if (!c->ns) {
        set_error(c, "deepkin_step: the client is not open");
        return DEEPKIN_ERROR_ARGUMENT;
    }
    if (n_cells < 0 || (n_cells > 0 && (!states || !advanced)) || !(dt_s >= 0) || !isfinite(dt_s)) {
        set_error(c, "deepkin_step: bad arguments (n_cells %ld, dt %g s)", n_cells, dt_s);
        return DEEPKIN_ERROR_ARGUMENT;
    }
    if (c->local) return step_model_file(c, n_cells, states, dt_s, advanced);
    const size_t bytes = (size_t)n_cells * (size_t)(2 + c->ns) * sizeof(double);
    char url[2048], cells[64];
    if (dt_s > 0)
        snprintf(url, sizeof url, "%s/v1/models/%s/step?dt=%.17g", c->base, c->model_path, dt_s);
    else
        snprintf(url, sizeof url, "%s/v1/models/%s/step", c->base, c->model_path);
    snprintf(cells, sizeof cells, "X-Cells: %ld", n_cells);
    struct curl_slist *headers = common_headers(c, NULL);
    headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
    headers = curl_slist_append(headers, "X-Dtype: float64");
    headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    headers = curl_slist_append(headers, cells);
    if (c->sha_header) headers = curl_slist_append(headers, c->sha_header);
    static const double empty = 0.0;
    int rc = call(c, url, n_cells ? (const void *)states : (const void *)&empty, bytes, headers,
                  advanced, bytes);
    curl_slist_free_all(headers);
    if (rc != DEEPKIN_OK) return rc;
    if (c->reply.got != bytes || !c->reply.dtype_float64 || c->reply.counts[COUNT_CELLS] != n_cells) {
        set_error(c, "POST %s: expected %zu bytes of float64 for %ld cells, got %zu bytes (X-Cells %ld)",
                  url, bytes, n_cells, c->reply.got, c->reply.counts[COUNT_CELLS]);
        return DEEPKIN_ERROR_PROTOCOL;
    }
    memcpy(c->counts, c->reply.counts, sizeof c->counts);
    c->err[0] = '\0';
    return DEEPKIN_OK;
}

void deepkin_last_counts(const deepkin_client *c, long *cells, long *frozen, long *fallback,
                         long *substeps) {
    long none[N_COUNTS] = {-1, -1, -1, -1};
    const long *v = c ? c->counts : none;
    if (cells) *cells = v[COUNT_CELLS];
    if (frozen) *frozen = v[COUNT_FROZEN];
    if (fallback) *fallback = v[COUNT_FALLBACK];
    if (substeps) *substeps = v[COUNT_SUBSTEPS];
}

int deepkin_last_flags(const deepkin_client *c, long n_cells, signed char *flags) {
    if (!c || !c->local || n_cells != c->flags_n || (n_cells > 0 && !flags)) return DEEPKIN_ERROR_ARGUMENT;
    if (n_cells > 0) memcpy(flags, c->flags, (size_t)n_cells);
    return DEEPKIN_OK;
}

int deepkin_set_threads(deepkin_client *c, int n_threads) {
    if (!c) return DEEPKIN_ERROR_ARGUMENT;
    if (n_threads < 1) {
        set_error(c, "deepkin_set_threads: n_threads must be >= 1, got %d", n_threads);
        return DEEPKIN_ERROR_ARGUMENT;
    }
#ifdef DEEPKIN_WITH_LIBTORCH
    if (c->local) deepkin_local_set_threads(n_threads);
#endif
    return DEEPKIN_OK;
}

long deepkin_http_status(const deepkin_client *c) { return c ? c->http_status : 0; }

int deepkin_errmsg(const deepkin_client *c, char *buf, int size) {
    return copy_out(c ? c->err : "out of memory (no client)", buf, size);
}

void deepkin_close(deepkin_client *c) {
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
#ifdef DEEPKIN_WITH_LIBTORCH
    deepkin_local_close(c->local);
#endif
    free(c->flags);
    if (c->species)
        for (int k = 0; c->species[k]; k++) free(c->species[k]);
    free(c->species);
    free(c->reply.text);
    free(c->base);
    free(c->model);
    free(c->model_path);
    free(c->auth_header);
    free(c->sha_header);
    free(c);
}
