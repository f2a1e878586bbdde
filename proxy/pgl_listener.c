/*
 * Listening sockets (pgl_listener.h).
 *
 * Sockets are made here rather than with uv_tcp_t because a client
 * connection is a raw non-blocking fd watched by a pgl_poller (pgl_conn),
 * the same as a server connection handed over by libpq. accept4 runs in a
 * loop until EAGAIN so a burst of connects costs one wakeup.
 */
#include "pgl_listener.h"

#include "pgl_log.h"
#include "pgl_poller.h"

#include "pgl_pgwire_build.h"
#include "pgl_pgwire_startup.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>

#define BACKLOG 4096
#define EMFILE_PAUSE_MS 100
/* Out of descriptors, the pause repeats ten times a second: one warning per
 * period, counting the pauses it stands for, keeps the log readable. */
#define EMFILE_WARN_MS 10000

struct pgl_listener {
    pgl_listener *next;
    pgl_listener_accept_cb accept_cb;
    void *accept_arg;
    int fd;
    bool unix_socket;
    char name[128];       /* for log lines */
    char unix_path[108];  /* unlinked on close */
    pgl_poller *poller;
    uv_timer_t pause;     /* out of descriptors: retry later */
    bool pause_open;
    uint64_t pause_warned; /* uv_now() of the last warning, 0 = never */
    unsigned pauses_unlogged; /* pauses since that warning */
    unsigned refused_unlogged; /* clients refused since that warning */
    /* A descriptor held in reserve: out of descriptors, it is given up for
     * the time it takes to accept a waiting client, tell it why it cannot
     * be served and close it, rather than leave it to time out. */
    int reserve;
    int refused_fd;         /* the client being refused, while `refusing` */
    pgl_poller *refusing;
    uv_timer_t refuse_timer;
    bool refusal_answered;
    int timers_closed; /* pause and refuse_timer: freed when both are */
};

/* Postgres's own answer to a full server. */
static size_t refusal_message(const uint8_t **msg)
{
    static uint8_t buf[256];
    static size_t len;
    if (len == 0)
        len = pgl_pgwire_build_error(buf, sizeof buf, 0, "FATAL", "53300",
                                     "sorry, too many clients already: pglease is out of file "
                                     "descriptors",
                                     NULL, NULL);
    *msg = buf;
    return len;
}

static void refusal_done(pgl_listener *l)
{
    pgl_poller_close(l->refusing);
    l->refusing = NULL;
    uv_timer_stop(&l->refuse_timer);
    close(l->refused_fd);
    l->refused_fd = -1;
    l->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    l->refused_unlogged++;
    /* The next waiting client now: served if descriptors came back,
     * refused the same way if not. */
    uv_timer_stop(&l->pause);
    if (pgl_poller_want(l->poller, UV_READABLE) != 0)
        pgl_log_error(l->name, "cannot resume listening");
}

/* The refused client talks as it would to Postgres: an SSLRequest gets
 * 'N', its startup packet the error; then pglease waits for it to close
 * (closing first, with its bytes unread, could reset the connection and
 * lose the error). */
static void on_refusal_io(pgl_poller *p, void *arg, int status, int events)
{
    pgl_listener *l = arg;
    (void)p;
    (void)events;
    uint8_t in[1024];
    ssize_t got = status < 0 ? -1 : recv(l->refused_fd, in, sizeof in, MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && status >= 0)
        return;
    if (got <= 0 || l->refusal_answered) {
        if (got <= 0)
            refusal_done(l);
        return; /* what it sends after the error is dropped */
    }
    if (got == 8 && pgl_pgwire_be32(in) == 8 && pgl_pgwire_be32(in + 4) == PGL_PGWIRE_CODE_SSL) {
        (void)send(l->refused_fd, "N", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        return;
    }
    const uint8_t *msg;
    size_t len = refusal_message(&msg);
    (void)send(l->refused_fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(l->refused_fd, SHUT_WR);
    l->refusal_answered = true;
}

static void on_refusal_timeout(uv_timer_t *t)
{
    refusal_done(t->data);
}

/* Out of descriptors: the reserve is given up to accept one waiting client
 * and refuse it properly; the next one after that (on_resume). */
static void refuse_one(pgl_listener *l)
{
    if (l->reserve < 0 || l->refusing != NULL)
        return;
    close(l->reserve);
    l->reserve = -1;
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0 && pgl_poller_open(l->pause.loop, fd, on_refusal_io, l, &l->refusing) == 0 &&
        pgl_poller_want(l->refusing, UV_READABLE) == 0) {
        l->refused_fd = fd;
        l->refusal_answered = false;
        /* A client that never speaks or never closes is not waited for. */
        uv_timer_start(&l->refuse_timer, on_refusal_timeout, 2000, 0);
        return;
    }
    if (l->refusing != NULL) {
        pgl_poller_close(l->refusing);
        l->refusing = NULL;
    }
    if (fd >= 0)
        close(fd);
    l->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_resume(uv_timer_t *t)
{
    pgl_listener *l = t->data;
    if (pgl_poller_want(l->poller, UV_READABLE) != 0)
        pgl_log_error(l->name, "cannot resume listening");
}

static void on_accept(pgl_poller *p, void *arg, int status, int events)
{
    pgl_listener *l = arg;
    (void)p;
    (void)events;
    if (status < 0) {
        pgl_log_error(l->name, "listener error: %s", uv_strerror(status));
        return;
    }
    /* Bounded so one listener cannot starve the rest of the loop. */
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Keep the loop alive instead of spinning on a listener that
                 * stays readable: stop watching for a moment. */
                const char *why = strerror(errno);
                refuse_one(l);
                uint64_t now = uv_now(l->pause.loop);
                if (l->pause_warned == 0 || now - l->pause_warned >= EMFILE_WARN_MS) {
                    pgl_log_warning(l->name,
                                    "accept: %s; clients waiting to connect are refused "
                                    "(53300) and accepting pauses %d ms at a time (%u "
                                    "refused, %u pause(s) since the previous warning; at "
                                    "most one warning per %d s)",
                                    why, EMFILE_PAUSE_MS, l->refused_unlogged,
                                    l->pauses_unlogged, EMFILE_WARN_MS / 1000);
                    l->pause_warned = now > 0 ? now : 1;
                    l->pauses_unlogged = l->refused_unlogged = 0;
                } else {
                    l->pauses_unlogged++;
                }
                if (pgl_poller_want(l->poller, 0) != 0)
                    pgl_log_error(l->name, "cannot stop watching the listener");
                uv_timer_start(&l->pause, on_resume, EMFILE_PAUSE_MS, 0);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                pgl_log_warning(l->name, "accept: %s", strerror(errno));
            }
            return;
        }
        if (!l->unix_socket) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        l->accept_cb(l->accept_arg, fd, l->unix_socket ? NULL : (const struct sockaddr *)&ss);
    }
}

/* What the listeners being opened share. */
typedef struct {
    uv_loop_t *loop;
    pgl_listener_accept_cb cb;
    void *arg;
    pgl_listener **list;
} opening;

static int add_listener(opening *op, int fd, bool unix_socket, const char *name,
                        const char *unix_path)
{
    pgl_listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    l->accept_cb = op->cb;
    l->accept_arg = op->arg;
    l->fd = fd;
    l->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    l->refused_fd = -1;
    l->unix_socket = unix_socket;
    snprintf(l->name, sizeof l->name, "listen %s", name);
    if (unix_path)
        snprintf(l->unix_path, sizeof l->unix_path, "%s", unix_path);
    uv_timer_init(op->loop, &l->pause);
    l->pause.data = l;
    uv_timer_init(op->loop, &l->refuse_timer);
    l->refuse_timer.data = l;
    l->pause_open = true;
    int rc = pgl_poller_open(op->loop, fd, on_accept, l, &l->poller);
    if (rc == 0)
        rc = pgl_poller_want(l->poller, UV_READABLE);
    l->next = *op->list;
    *op->list = l;
    if (rc != 0)
        return rc;
    pgl_log_info(NULL, "listening on %s", name);
    return 0;
}

static int listen_tcp(opening *op, const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    /* Resolution happens once at start-up, before the loop runs. */
    int gai = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "listen_addr %s: %s", host, gai_strerror(gai));
        return -EINVAL;
    }
    int opened = 0, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        char name[96], h[INET6_ADDRSTRLEN] = "?";
        if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, h, sizeof h);
        else
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, h, sizeof h);
        snprintf(name, sizeof name, ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", h, port);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, BACKLOG) != 0) {
            last_errno = errno;
            /* With "*", a host without IPv6 is not an error. */
            if (!(strcmp(host, "*") == 0 && ai->ai_family == AF_INET6 &&
                  errno == EADDRNOTAVAIL))
                snprintf(err, errlen, "cannot listen on %s: %s", name, strerror(errno));
            close(fd);
            continue;
        }
        int rc = add_listener(op, fd, false, name, NULL);
        if (rc != 0) {
            freeaddrinfo(res);
            snprintf(err, errlen, "cannot watch %s", name);
            return rc;
        }
        opened++;
    }
    freeaddrinfo(res);
    if (opened == 0) {
        if (err[0] == '\0')
            snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(last_errno));
        return -EADDRNOTAVAIL;
    }
    return 0;
}

static int listen_unix(opening *op, const char *dir, int port, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%d", dir, port);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix_socket_dir %s: path too long", dir);
        return -ENAMETOOLONG;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    /* A stale socket from a crashed run would make bind fail; a live one
     * means another pglease (or Postgres) owns the port. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        close(fd);
        snprintf(err, errlen, "%s is in use by another process", sa.sun_path);
        return -EADDRINUSE;
    }
    unlink(sa.sun_path);
    close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, BACKLOG) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", sa.sun_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -EADDRNOTAVAIL;
    }
    chmod(sa.sun_path, 0777); /* like Postgres: access is decided by authentication */
    return add_listener(op, fd, true, sa.sun_path, sa.sun_path);
}

int pgl_listeners_open(uv_loop_t *loop, const pgl_conf *conf, pgl_listener_accept_cb cb,
                       void *arg, pgl_listener **out, char *err, size_t errlen)
{
    opening op = {loop, cb, arg, out};
    *out = NULL;
    err[0] = '\0';
    if (conf->listen_addr) {
        char *list = strdup(conf->listen_addr);
        if (list == NULL)
            return -ENOMEM;
        char *save = NULL;
        for (char *h = strtok_r(list, ", ", &save); h; h = strtok_r(NULL, ", ", &save)) {
            int rc = listen_tcp(&op, h, conf->listen_port, err, errlen);
            if (rc != 0) {
                free(list);
                return rc;
            }
        }
        free(list);
    }
    if (conf->unix_socket_dir) {
        int rc = listen_unix(&op, conf->unix_socket_dir, conf->listen_port, err, errlen);
        if (rc != 0)
            return rc;
    }
    if (*out == NULL) {
        snprintf(err, errlen, "nothing to listen on: set listen_addr or unix_socket_dir");
        return -EINVAL;
    }
    return 0;
}

/* Both timers closed: the listener can go. */
static void on_timer_closed(uv_handle_t *h)
{
    pgl_listener *l = h->data;
    if (++l->timers_closed == 2)
        free(l);
}

void pgl_listeners_close(pgl_listener *l)
{
    while (l) {
        pgl_listener *next = l->next;
        pgl_poller_close(l->poller);
        close(l->fd);
        if (l->refusing != NULL) {
            pgl_poller_close(l->refusing);
            close(l->refused_fd);
        }
        if (l->reserve >= 0)
            close(l->reserve);
        if (l->unix_path[0])
            unlink(l->unix_path);
        uv_close((uv_handle_t *)&l->pause, on_timer_closed);
        uv_close((uv_handle_t *)&l->refuse_timer, on_timer_closed);
        l = next;
    }
}

void pgl_listeners_pause(pgl_listener *list, bool pause)
{
    for (pgl_listener *l = list; l; l = l->next) {
        int rc = pgl_poller_want(l->poller, pause ? 0 : UV_READABLE);
        if (rc != 0)
            pgl_log_error(l->name, "cannot %s accepting: %s", pause ? "stop" : "resume",
                          uv_strerror(rc));
    }
}
