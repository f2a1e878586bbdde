#include "pgl_vault_http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

/* Vault answers are small; a bigger one is a misconfiguration (or worse). */
#define BODY_MAX (1u << 20)

/* What a CURLMOPT_SOCKETFUNCTION callback returns to make libcurl abort the
 * transfers (CURLM_ABORTED_BY_CALLBACK): libcurl's value, not an error code. */
#define CURL_SOCKET_CB_FAIL (-1)

struct pgl_vault_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *addr, *namespace, *ca_cert, *client_cert, *client_key;
    long timeout_ms;
    pgl_vault_http_req *reqs; /* in flight, doubly linked */
    bool freeing;
};

struct pgl_vault_http_req {
    pgl_vault_http *h;
    pgl_vault_http_req *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char *body;        /* request body: ours until curl is done with it */
    char *resp;
    size_t resp_len, resp_cap;
    bool too_big;
    bool in_callback; /* cancel from inside the callback is a no-op */
    pgl_vault_http_cb cb;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
};

/* One per socket curl watches. */
typedef struct {
    uv_poll_t poll;
    pgl_vault_http *h;
    curl_socket_t fd;
} sock_ctx;

static void wipe_free(char *p, size_t n)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, n);
        free(p);
    }
}

static void wipe_headers(struct curl_slist *l)
{
    for (struct curl_slist *it = l; it; it = it->next)
        OPENSSL_cleanse(it->data, strlen(it->data));
    curl_slist_free_all(l);
}

static void req_release(pgl_vault_http_req *r)
{
    pgl_vault_http *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->easy) {
        curl_multi_remove_handle(h->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    wipe_headers(r->headers);
    if (r->body)
        wipe_free(r->body, strlen(r->body));
    wipe_free(r->resp, r->resp_cap);
    free(r);
}

static void check_done(pgl_vault_http *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        pgl_vault_http_req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r == NULL)
            continue;
        pgl_vault_http_response res = {0};
        CURLcode rc = msg->data.result;
        if (rc == CURLE_OK && !r->too_big) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
            res.body = r->resp ? r->resp : "";
            res.body_len = r->resp_len;
        } else {
            res.error = r->too_big ? "response larger than 1 MiB"
                        : r->errbuf[0] ? r->errbuf
                                       : curl_easy_strerror(rc);
            res.body = "";
        }
        r->in_callback = true;
        r->cb(r->arg, &res);
        req_release(r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx *ctx = p->data;
    pgl_vault_http *h = ctx->h;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, ctx->fd, flags, &running);
    check_done(h);
}

static void on_timer(uv_timer_t *t)
{
    pgl_vault_http *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int start_timer(CURLM *multi, long timeout_ms, void *userp)
{
    pgl_vault_http *h = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_sock_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static int handle_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    pgl_vault_http *h = userp;
    sock_ctx *ctx = socketp;
    (void)easy;
    if (action == CURL_POLL_REMOVE) {
        if (ctx) {
            uv_poll_stop(&ctx->poll);
            uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (ctx == NULL) {
        ctx = calloc(1, sizeof *ctx);
        if (ctx == NULL)
            return CURL_SOCKET_CB_FAIL;
        ctx->h = h;
        ctx->fd = s;
        if (uv_poll_init_socket(h->loop, &ctx->poll, s) != 0) {
            free(ctx);
            return CURL_SOCKET_CB_FAIL;
        }
        ctx->poll.data = ctx;
        curl_multi_assign(h->multi, s, ctx);
    }
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&ctx->poll, events, on_poll);
    return 0;
}

static size_t on_data(char *ptr, size_t size, size_t n, void *userp)
{
    pgl_vault_http_req *r = userp;
    size_t len = size * n;
    if (r->resp_len + len + 1 > BODY_MAX) {
        r->too_big = true;
        return 0; /* aborts the transfer */
    }
    if (r->resp_len + len + 1 > r->resp_cap) {
        size_t cap = r->resp_cap ? r->resp_cap : 4096;
        while (cap < r->resp_len + len + 1)
            cap *= 2;
        /* Not realloc: the old block may hold secrets and must be wiped. */
        char *nb = malloc(cap);
        if (nb == NULL)
            return 0;
        if (r->resp) {
            memcpy(nb, r->resp, r->resp_len);
            wipe_free(r->resp, r->resp_cap);
        }
        r->resp = nb;
        r->resp_cap = cap;
    }
    memcpy(r->resp + r->resp_len, ptr, len);
    r->resp_len += len;
    r->resp[r->resp_len] = '\0';
    return len;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

int pgl_vault_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

void pgl_vault_http_global_cleanup(void)
{
    curl_global_cleanup();
}

int pgl_vault_http_new(uv_loop_t *loop, const pgl_vault_http_config *cfg, pgl_vault_http **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    pgl_vault_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    h->loop = loop;
    h->addr = strdup(cfg->addr);
    h->namespace = dup_or_null(cfg->namespace);
    h->ca_cert = dup_or_null(cfg->ca_cert);
    h->client_cert = dup_or_null(cfg->client_cert);
    h->client_key = dup_or_null(cfg->client_key);
    h->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
    h->multi = curl_multi_init();
    if (h->addr == NULL || h->multi == NULL || (cfg->client_cert && !h->client_cert) ||
        (cfg->client_key && !h->client_key)) {
        snprintf(err, errlen, "out of memory");
        pgl_vault_http_free(h);
        return -ENOMEM;
    }
    /* Trailing slashes would double up with "/v1/". */
    size_t n = strlen(h->addr);
    while (n > 0 && h->addr[n - 1] == '/')
        h->addr[--n] = '\0';
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, handle_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, start_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    *out = h;
    return 0;
}

static int add_header(struct curl_slist **l, const char *name, const char *value)
{
    char line[4096];
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof line)
        return -EINVAL;
    struct curl_slist *nl = curl_slist_append(*l, line);
    OPENSSL_cleanse(line, sizeof line);
    if (nl == NULL)
        return -ENOMEM;
    *l = nl;
    return 0;
}

int pgl_vault_http_request(pgl_vault_http *h, const char *method, const char *path,
                           const char *token, const char *body, const char *wrap_ttl,
                           pgl_vault_http_cb cb, void *arg, pgl_vault_http_req **out)
{
    if (out)
        *out = NULL;
    pgl_vault_http_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->h = h;
    r->cb = cb;
    r->arg = arg;
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    int rc = -ENOMEM;
    char url[2048];
    int n = snprintf(url, sizeof url, "%s/v1/%s", h->addr, path);
    if (n < 0 || (size_t)n >= sizeof url) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    r->easy = curl_easy_init();
    if (r->easy == NULL)
        goto fail;
    if ((rc = add_header(&r->headers, "X-Vault-Request", "true")) != 0 ||
        (token && (rc = add_header(&r->headers, "X-Vault-Token", token)) != 0) ||
        (h->namespace && (rc = add_header(&r->headers, "X-Vault-Namespace", h->namespace)) != 0) ||
        (wrap_ttl && (rc = add_header(&r->headers, "X-Vault-Wrap-TTL", wrap_ttl)) != 0) ||
        (body && (rc = add_header(&r->headers, "Content-Type", "application/json")) != 0))
        goto fail;
    rc = -ENOMEM;
    if (body && (r->body = strdup(body)) == NULL)
        goto fail;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (r->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* No redirects: a token must never be sent to a host we did not name. */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (h->ca_cert)
        curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_cert);
    if (h->client_cert) {
        /* Set on every request, logins and reads alike: the cert auth
         * method checks it at login, and a listener with
         * tls_require_and_verify_client_cert checks it on every request. */
        curl_easy_setopt(e, CURLOPT_SSLCERT, h->client_cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, h->client_key);
    }
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        rc = -EIO;
        goto fail;
    }
    if (out)
        *out = r;
    return 0;
fail:
    req_release(r);
    return rc;
}

void pgl_vault_http_cancel(pgl_vault_http_req *r)
{
    if (r != NULL && !r->in_callback)
        req_release(r);
}

static void on_timer_closed(uv_handle_t *handle)
{
    free(handle->data);
}

void pgl_vault_http_free(pgl_vault_http *h)
{
    if (h == NULL)
        return;
    while (h->reqs)
        req_release(h->reqs);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    free(h->addr);
    free(h->namespace);
    free(h->ca_cert);
    free(h->client_cert);
    free(h->client_key);
    if (h->timer.loop != NULL) {
        uv_timer_stop(&h->timer);
        uv_close((uv_handle_t *)&h->timer, on_timer_closed);
    } else {
        free(h);
    }
}
