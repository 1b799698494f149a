/* Open-loop HTTP/1.1 load generator for benchmarks/overload_bench.py (compiled there with cc -O2).
 *
 * Requests are due at fixed times (start + i / rate), whatever the server does: each due request goes out
 * on an idle keep-alive connection, or on a new one (up to --max-conns), or waits in a backlog until one is
 * free. Latency is counted from the time a request was due, not sent, so a server that holds requests back
 * cannot hide the wait (no coordinated omission). One thread, epoll, non-blocking sockets.
 *
 * Besides the load, a health probe: every --probe-ms a NEW connection sends GET --probe-path (as an
 * orchestrator's probe does) and its time to the whole answer is recorded.
 *
 * A client gives up on a request after TIMEOUT_MS (from when it was due): one still waiting for a
 * connection is dropped, one sent has its connection closed; both count as timeouts.
 *
 * An optional last argument ARRIVALS: "fixed" (the default, as above) or "poisson:SEED": requests due at
 * Poisson times (exponential gaps of mean 1 / rate from a generator seeded with SEED), as independent
 * users' requests arrive (benchmarks/advise_bench.py: the advisor's queueing model assumes them).
 * With Poisson arrivals, waits for the next due request are timed to the microsecond (epoll_pwait2), so
 * a request goes out when due, not on the next millisecond tick (fixed arrivals keep the millisecond
 * ticks overload_bench was measured with). send_lag_* says how late sends were.
 *
 * usage: loadgen HOST PORT PATH BODY_FILE RATE SECONDS WARMUP_S MAX_CONNS PROBE_PATH PROBE_MS TIMEOUT_MS [ARRIVALS]
 * output: one line of JSON (counts by status, latency percentiles of 200s, probes, per-second 200s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAXSEC 4096

typedef struct conn {
    int fd, busy, connected, probe, idx;
    double due;  /* when the request in flight was due */
    size_t sent, len;
    char *req;   /* what to send */
    char buf[BUF];
    size_t have;
} conn;

static struct sockaddr_in addr;
static double t0, warm_end, end_t;
static char *request_bytes; static size_t request_len;
static char *probe_bytes; static size_t probe_len;
static int ep;
static conn **conns; static int nconns, max_conns;
static int *idle; static int nidle, idle_cap;
static double *backlog; static long bl_head, bl_tail, bl_cap;
/* results (measured part only) */
static long n_timeout;
static long n_ok, n_503, n_503_retry, n_503_json, n_other, n_err, n_backlogged_at_end;
static float *lat_ok; static long lat_n, lat_cap;
static float *lat_503; static long l503_n, l503_cap;
static float probe_lat[100000]; static long probe_n, probe_fail, probe_sent;
static long ok_per_sec[MAXSEC], all_per_sec[MAXSEC];
static long max_backlog;
static float *lag; static long lag_n, lag_cap;  /* send time - due time, ms (measured part) */
static double lat_sum;
/* arrivals: fixed (due i / rate) or Poisson (exponential gaps from a seeded xorshift64*) */
static int poisson; static unsigned long long rng_state;
static double uniform01(void) {
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}
/* ln(x) for x > 0 without libm (so the generator still builds with a bare `cc -O2`): x = m 2^e with m in
 * [0.707, 1.414), ln m by the atanh series (|s| <= 0.172: error below 1e-11) */
static double ln(double x) {
    union { double d; unsigned long long u; } v = {.d = x};
    int e = (int)((v.u >> 52) & 0x7ff) - 1023;
    v.u = (v.u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    if (v.d > 1.4142135623730951) { v.d *= 0.5; e++; }
    double s = (v.d - 1) / (v.d + 1), s2 = s * s;
    return e * 0.6931471805599453 + 2 * s * (1 + s2 * (1. / 3 + s2 * (1. / 5 + s2 * (1. / 7 + s2 * (1. / 9 + s2 / 11)))));
}
static double next_gap(double rate) { return poisson ? -ln(1.0 - uniform01()) / rate : 1.0 / rate; }

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void push(float **a, long *n, long *cap, float v) {
    if (*n == *cap) { *cap = *cap ? *cap * 2 : 1 << 16; *a = realloc(*a, *cap * sizeof(float)); }
    (*a)[(*n)++] = v;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b; return (x > y) - (x < y);
}

static double pct(float *a, long n, double p) {
    if (!n) return -1;
    long i = (long)(p / 100.0 * n); if (i >= n) i = n - 1;
    return a[i];
}

static conn *open_conn(int probe) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return NULL;
    int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) { close(fd); return NULL; }
    conn *c = calloc(1, sizeof(conn));
    c->fd = fd; c->probe = probe; c->idx = -1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    if (!probe) { c->idx = nconns; conns[nconns++] = c; }
    return c;
}

static void drop_conn(conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (!c->probe) {  /* remove from the pool (swap with last) */
        conn *last = conns[--nconns]; conns[c->idx] = last; last->idx = c->idx;
    }
    free(c);
}

static void try_send(conn *c) {
    while (c->connected && c->sent < c->len) {
        ssize_t w = send(c->fd, c->req + c->sent, c->len - c->sent, MSG_NOSIGNAL);
        if (w < 0) { if (errno == EAGAIN) return; c->sent = c->len; n_err++; return; }
        c->sent += w;
    }
}

static void start_req(conn *c, double due) {
    c->busy = 1; c->due = due; c->sent = 0; c->have = 0;
    c->req = c->probe ? probe_bytes : request_bytes; c->len = c->probe ? probe_len : request_len;
    if (!c->probe && due >= warm_end) push(&lag, &lag_n, &lag_cap, (float)((now() - due) * 1e3));
    try_send(c);
}

/* one idle pooled connection, or a new one, or NULL */
static conn *get_conn(void) {
    while (nidle) {
        int i = idle[--nidle];
        if (i < nconns && !conns[i]->busy) return conns[i];
    }
    if (nconns < max_conns) return open_conn(0);
    return NULL;
}

static void record(conn *c, int status, int retry, int json) {
    double t = now();
    if (c->probe) {
        if (c->due >= warm_end && probe_n < 100000) probe_lat[probe_n++] = (float)((t - c->due) * 1e3);
        if (status != 200) probe_fail++;
        return;
    }
    if (c->due < warm_end) return;
    long sec = (long)(c->due - warm_end);
    if (sec >= 0 && sec < MAXSEC) { all_per_sec[sec]++; if (status == 200) ok_per_sec[sec]++; }
    if (status == 200) { n_ok++; lat_sum += t - c->due; push(&lat_ok, &lat_n, &lat_cap, (float)((t - c->due) * 1e3)); }
    else if (status == 503) {
        n_503++; n_503_retry += retry; n_503_json += json;
        push(&lat_503, &l503_n, &l503_cap, (float)((t - c->due) * 1e3));
    } else if (status < 0) n_err++;
    else n_other++;
}

/* parse what c holds; returns 1 when a whole response was consumed */
static int parse(conn *c, int *closing) {
    c->buf[c->have] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    size_t head = end - c->buf + 4;
    int status = atoi(c->buf + 9);
    long clen = 0; int retry = 0, json = 0; *closing = 0;
    for (char *p = strstr(c->buf, "\r\n") + 2; p < end; p = strstr(p, "\r\n") + 2) {
        if (!strncasecmp(p, "content-length:", 15)) clen = atol(p + 15);
        else if (!strncasecmp(p, "retry-after:", 12)) retry = 1;
        else if (!strncasecmp(p, "connection:", 11) && strcasestr(p, "close") && strcasestr(p, "close") < strstr(p, "\r\n")) *closing = 1;
    }
    if (c->have < head + clen) return 0;
    if (status == 503 && clen > 10 && !strncmp(c->buf + head, "{\"error\":", 9)) json = 1;
    record(c, status, retry, json);
    memmove(c->buf, c->buf + head + clen, c->have - head - clen);
    c->have -= head + clen;
    c->busy = 0;
    return 1;
}

static void on_event(conn *c, unsigned ev) {
    if (ev & EPOLLOUT) { if (!c->connected) c->connected = 1; try_send(c); }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (;;) {
            ssize_t r = recv(c->fd, c->buf + c->have, BUF - 1 - c->have, 0);
            if (r < 0 && errno == EAGAIN) break;
            if (r <= 0) {  /* closed or failed */
                if (c->busy) record(c, -1, 0, 0);
                drop_conn(c); return;
            }
            c->have += r;
            int closing;
            while (c->busy && parse(c, &closing)) {
                if (closing || c->probe) { drop_conn(c); return; }
                if (nidle == idle_cap) {  /* stale entries piled up: rebuild from the pool */
                    nidle = 0;
                    for (int k = 0; k < nconns; k++) if (!conns[k]->busy) idle[nidle++] = k;
                } else idle[nidle++] = c->idx;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 12 && argc != 13) { fprintf(stderr, "usage: see the header of loadgen.c\n"); return 2; }
    if (argc == 13 && !strncmp(argv[12], "poisson:", 8)) {
        poisson = 1; rng_state = strtoull(argv[12] + 8, NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    } else if (argc == 13 && strcmp(argv[12], "fixed")) { fprintf(stderr, "ARRIVALS: fixed or poisson:SEED\n"); return 2; }
    if (poisson) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  /* wake within ~1 us of a due time, not 50 */
    const char *host = argv[1]; int port = atoi(argv[2]); const char *path = argv[3];
    double rate = atof(argv[5]), secs = atof(argv[6]), warm = atof(argv[7]);
    max_conns = atoi(argv[8]); const char *probe_path = argv[9]; double probe_s = atof(argv[10]) / 1e3;
    double timeout_s = atof(argv[11]) / 1e3; double next_sweep = 0;
    FILE *f = fopen(argv[4], "rb"); if (!f) { perror("body"); return 2; }
    static char body[1 << 20]; size_t blen = fread(body, 1, sizeof body, f); fclose(f);
    request_bytes = malloc(blen + 512);
    request_len = sprintf(request_bytes, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n", path, host, port, blen);
    memcpy(request_bytes + request_len, body, blen); request_len += blen;
    probe_bytes = malloc(512);
    probe_len = sprintf(probe_bytes, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", probe_path, host, port);
    addr.sin_family = AF_INET; addr.sin_port = htons(port); inet_pton(AF_INET, host, &addr.sin_addr);
    ep = epoll_create1(0);
    conns = calloc(max_conns, sizeof(conn *)); idle_cap = max_conns * 4 + 16; idle = calloc(idle_cap, sizeof(int));
    bl_cap = (long)(rate * (secs + warm)) + 16; backlog = malloc(bl_cap * sizeof(double));
    t0 = now(); warm_end = t0 + warm; end_t = warm_end + secs;
    long i = 0; double next_probe = t0, next_due = t0 + (poisson ? next_gap(rate) : 0);
    struct epoll_event evs[1024];
    struct rusage ru0; getrusage(RUSAGE_SELF, &ru0);
    while (1) {
        double t = now();
        if (t >= end_t + 2.0) break;  /* 2 s for the last answers */
        while (t < end_t && next_due <= t) {
            if (bl_tail == bl_cap) { bl_cap *= 2; backlog = realloc(backlog, bl_cap * sizeof(double)); }
            backlog[bl_tail++] = next_due; i++; next_due += next_gap(rate);
        }
        if (t >= next_sweep) {  /* clients give up on requests older than the timeout */
            next_sweep = t + 0.05;
            while (bl_head < bl_tail && backlog[bl_head] < t - timeout_s) {
                if (backlog[bl_head] >= warm_end) n_timeout++;
                bl_head++;
            }
            for (int k = nconns - 1; k >= 0; k--) {
                conn *c = conns[k];
                if (c->busy && c->due < t - timeout_s) {
                    if (c->due >= warm_end) n_timeout++;
                    drop_conn(c);
                }
            }
        }
        while (bl_head < bl_tail) {
            conn *c = get_conn();
            if (!c) break;
            start_req(c, backlog[bl_head++]);
        }
        if (bl_tail - bl_head > max_backlog) max_backlog = bl_tail - bl_head;
        if (probe_s > 0 && t >= next_probe && t < end_t) {
            conn *p = open_conn(1); if (p) { start_req(p, t); if (t >= warm_end) probe_sent++; }
            next_probe += probe_s;
        }
        double wait = next_due - now();
        /* at least 1 ms: epoll_wait counts milliseconds, and a 0 would spin while the backlog waits for a
         * connection; requests due meanwhile go out on the next wake, their latency counted from when due.
         * Poisson arrivals: until the next due request, to the microsecond (at least 1 ms as above while
         * the backlog waits, or after the end) */
        int n;
        if (poisson) {
            if ((bl_tail > bl_head || t >= end_t) && wait < 1e-3) wait = 1e-3;
            if (wait < 0) wait = 0;
            if (wait > 0.1) wait = 0.1;
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait * 1e9)};
            n = epoll_pwait2(ep, evs, 1024, &ts, NULL);
        } else n = epoll_wait(ep, evs, 1024, wait > 1e-3 ? (int)(wait * 1e3) : 1);
        for (int k = 0; k < n; k++) on_event(evs[k].data.ptr, evs[k].events);
    }
    n_backlogged_at_end = bl_tail - bl_head;
    long in_flight = 0; for (int k = 0; k < nconns; k++) in_flight += conns[k]->busy;
    struct rusage ru1; getrusage(RUSAGE_SELF, &ru1);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e-6
               + (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;
    qsort(lat_ok, lat_n, sizeof(float), cmpf); qsort(lat_503, l503_n, sizeof(float), cmpf);
    qsort(probe_lat, probe_n, sizeof(float), cmpf); qsort(lag, lag_n, sizeof(float), cmpf);
    printf("{\"offered_rate\":%.1f,\"seconds\":%.1f,\"ok\":%ld,\"s503\":%ld,\"s503_retry_after\":%ld,"
           "\"s503_json\":%ld,\"timeouts\":%ld,\"other\":%ld,\"errors\":%ld,\"unanswered\":%ld,\"never_sent\":%ld,"
           "\"max_backlog\":%ld,\"conns\":%d,\"gen_cpu_s\":%.2f,"
           "\"arrivals\":\"%s\",\"ok_mean_ms\":%.4f,\"ok_p90_ms\":%.4f,\"ok_p999_ms\":%.4f,"
           "\"send_lag_p50_ms\":%.4f,\"send_lag_p99_ms\":%.4f,\"send_lag_max_ms\":%.4f,"
           "\"ok_p50_ms\":%.2f,\"ok_p99_ms\":%.2f,\"ok_max_ms\":%.2f,\"s503_p50_ms\":%.2f,\"s503_p99_ms\":%.2f,"
           "\"probes_sent\":%ld,\"probes\":%ld,\"probe_fail\":%ld,\"probe_p50_ms\":%.2f,\"probe_p99_ms\":%.2f,\"probe_max_ms\":%.2f,"
           "\"ok_per_sec\":[",
           rate, secs, n_ok, n_503, n_503_retry, n_503_json, n_timeout, n_other, n_err, in_flight, n_backlogged_at_end,
           max_backlog, nconns, cpu, poisson ? "poisson" : "fixed", lat_n ? lat_sum * 1e3 / lat_n : -1.0,
           pct(lat_ok, lat_n, 90), pct(lat_ok, lat_n, 99.9), pct(lag, lag_n, 50), pct(lag, lag_n, 99),
           lag_n ? lag[lag_n - 1] : -1.0, pct(lat_ok, lat_n, 50), pct(lat_ok, lat_n, 99),
           lat_n ? lat_ok[lat_n - 1] : -1.0, pct(lat_503, l503_n, 50), pct(lat_503, l503_n, 99),
           probe_sent, probe_n, probe_fail, pct(probe_lat, probe_n, 50), pct(probe_lat, probe_n, 99),
           probe_n ? probe_lat[probe_n - 1] : -1.0);
    for (long s = 0; s < (long)secs && s < MAXSEC; s++) printf(s ? ",%ld" : "%ld", ok_per_sec[s]);
    printf("]}\n");
    return 0;
}
