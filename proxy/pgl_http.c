/*
 * The HTTP endpoint (pgl_http.h) on libh2o's libuv binding.
 */
#include "pgl_http.h"

#include "pgl_log.h"
#include "pgl_metrics.h"
#include "pgl_proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <uv.h>

/* Scrapers and probes are few; more connections than this are refused. */
#define MAX_CONNS 32
/* A slow or silent peer is dropped after this long (h2o's request timeout). */
#define REQ_TIMEOUT_MS 10000
/* The largest /metrics answer: far above what any configuration needs. */
#define METRICS_MAX (8u * 1024 * 1024)

struct pgl_http {
    pgl_proxy *px;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    int nconns;
    bool ctx_ready, config_ready, listening;
};

/* An accepted connection: the handle h2o drives, and the count it is in. */
typedef struct {
    uv_tcp_t tcp;
    pgl_http *http;
} http_conn;

typedef enum { ROUTE_METRICS, ROUTE_HEALTHZ, ROUTE_READYZ } route;

typedef struct {
    h2o_handler_t super; /* first: h2o hands this pointer back */
    pgl_http *http;
    route route;
} route_handler;

/* ---- answering --------------------------------------------------------------------- */

static void answer(h2o_req_t *req, int status, const char *reason, const char *type,
                   const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    req->http1_is_persistent = 0; /* one request per connection: nothing lingers */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type,
                   strlen(type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_send_inline(req, body, len); /* copies the body */
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    route_handler *h = (route_handler *)self;
    pgl_proxy *px = h->http->px;
    /* The path must be exactly the route (h2o matched its prefix). */
    if (req->path_normalized.len != req->pathconf->path.len)
        return -1;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        answer(req, 405, "Method Not Allowed", "text/plain", H2O_STRLIT("GET only\n"));
        return 0;
    }
    switch (h->route) {
    case ROUTE_HEALTHZ:
        answer(req, 200, "OK", "text/plain", H2O_STRLIT("ok\n"));
        return 0;
    case ROUTE_READYZ: {
        char why[320], line[330];
        bool ready = pgl_metrics_ready(px, why, sizeof why);
        for (char *p = why; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        int n = snprintf(line, sizeof line, "%s\n", why);
        answer(req, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", "text/plain", line,
               (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        return 0;
    }
    case ROUTE_METRICS: {
        pgl_metrics_buf b;
        pgl_metrics_buf_init(&b, METRICS_MAX);
        int rc = pgl_metrics_render(px, &b);
        if (rc != 0) {
            pgl_log_warning(NULL, "http: /metrics: %s", pgl_strerror(rc));
            answer(req, 500, "Internal Server Error", "text/plain",
                   H2O_STRLIT("cannot render metrics\n"));
        } else {
            answer(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
        }
        pgl_metrics_buf_free(&b);
        return 0;
    }
    }
    return -1;
}

/* ---- connections ------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    http_conn *conn = pgl_container_of((uv_tcp_t *)h, http_conn, tcp);
    conn->http->nconns--;
    free(conn);
}

static void on_refused_closed(uv_handle_t *h)
{
    free(pgl_container_of((uv_tcp_t *)h, http_conn, tcp));
}

static void on_accept(uv_stream_t *listener, int status)
{
    pgl_http *http = listener->data;
    if (status != 0)
        return;
    http_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL)
        return; /* the peer waits in the backlog; the next accept retries */
    conn->http = http;
    if (uv_tcp_init(listener->loop, &conn->tcp) != 0) {
        free(conn);
        return;
    }
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0 || http->nconns >= MAX_CONNS) {
        uv_close((uv_handle_t *)&conn->tcp, on_refused_closed);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&conn->tcp, on_conn_closed);
    if (sock == NULL) {
        uv_close((uv_handle_t *)&conn->tcp, on_refused_closed);
        return;
    }
    http->nconns++;
    h2o_accept(&http->accept_ctx, sock);
}

/* ---- set-up -------------------------------------------------------------------------- */

static int add_route(pgl_http *http, h2o_hostconf_t *host, const char *path, route r)
{
    h2o_pathconf_t *pc = h2o_config_register_path(host, path, 0);
    route_handler *h = (route_handler *)h2o_create_handler(pc, sizeof *h);
    if (h == NULL)
        return -ENOMEM;
    h->super.on_req = on_req;
    h->http = http;
    h->route = r;
    return 0;
}

/* "host:port", "[v6]:port" or "localhost:port" (validated by the config). */
static int parse_listen(const char *v, struct sockaddr_storage *ss)
{
    const char *colon = strrchr(v, ':');
    char host[64];
    size_t hlen = (size_t)(colon - v);
    const char *h = v;
    if (*h == '[') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof host)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    int port = atoi(colon + 1);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (strchr(host, ':') != NULL)
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

int pgl_http_start(pgl_proxy *px, char *err, size_t errlen)
{
    const char *where = px->conf->http_listen;
    if (where == NULL)
        return 0;
    pgl_http *http = calloc(1, sizeof *http);
    if (http == NULL) {
        snprintf(err, errlen, "http_listen: out of memory");
        return -ENOMEM;
    }
    http->px = px;
    px->http = http;
    h2o_config_init(&http->config);
    http->config_ready = true;
    http->config.http1.req_timeout = REQ_TIMEOUT_MS;
    http->config.server_name = h2o_iovec_init(H2O_STRLIT("pglease"));
    h2o_hostconf_t *host =
        h2o_config_register_host(&http->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    if (add_route(http, host, "/metrics", ROUTE_METRICS) != 0 ||
        add_route(http, host, "/healthz", ROUTE_HEALTHZ) != 0 ||
        add_route(http, host, "/readyz", ROUTE_READYZ) != 0) {
        snprintf(err, errlen, "http_listen: out of memory");
        return -ENOMEM;
    }
    struct sockaddr_storage ss;
    int rc = parse_listen(where, &ss);
    if (rc == 0)
        rc = uv_tcp_init(&px->main.uv, &http->listener);
    if (rc != 0) {
        snprintf(err, errlen, "http_listen %s: %s", where, uv_strerror(rc));
        return rc;
    }
    http->listener.data = http;
    http->listening = true;
    rc = uv_tcp_bind(&http->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&http->listener, 64, on_accept);
    if (rc != 0) {
        snprintf(err, errlen, "http_listen %s: %s", where, uv_strerror(rc));
        return rc;
    }
    h2o_context_init(&http->ctx, &px->main.uv, &http->config);
    http->ctx_ready = true;
    http->accept_ctx.ctx = &http->ctx;
    http->accept_ctx.hosts = http->config.hosts;
    pgl_log_info(NULL, "http: /metrics /healthz /readyz on %s", where);
    return 0;
}

void pgl_http_stop(pgl_proxy *px)
{
    pgl_http *http = px->http;
    if (http == NULL)
        return;
    if (http->listening && !uv_is_closing((uv_handle_t *)&http->listener))
        uv_close((uv_handle_t *)&http->listener, NULL);
    http->listening = false;
    /* h2o asserts its timers are idle when its context goes: with a
     * request still open, the loop's close takes its handles instead. */
    if (http->ctx_ready && http->nconns == 0) {
        h2o_context_dispose(&http->ctx);
        http->ctx_ready = false;
    }
}

void pgl_http_free(pgl_proxy *px)
{
    pgl_http *http = px->http;
    if (http == NULL)
        return;
    if (http->config_ready && !http->ctx_ready)
        h2o_config_dispose(&http->config);
    free(http);
    px->http = NULL;
}
