/*
 * pgl_notify — tells the service manager where pglease stands, through
 * libsystemd's sd_notify(3): the protocol of systemd's Type=notify (also
 * spoken by s6, dinit and others), a datagram to the unix socket named by
 * $NOTIFY_SOCKET.
 *
 * Every function is a no-op when NOTIFY_SOCKET is unset (a laptop, a
 * container, a test). A failure to send is logged once as a warning and
 * never stops pglease: the service manager is a witness, not a dependency.
 * Loop thread only.
 */
#ifndef PGL_NOTIFY_H
#define PGL_NOTIFY_H

/* READY=1: pglease serves clients. Sent when it logs its "ready" line (at
 * start-up without Vault, else once every database has a credential), and
 * again when a reload has been applied or refused. */
void pgl_notify_ready(void);

/* RELOADING=1 with MONOTONIC_USEC: a reload (SIGHUP, RELOAD) begins; follow
 * it with pgl_notify_ready() once the reload is done, whatever its outcome. */
void pgl_notify_reloading(void);

/* STOPPING=1: shutdown begins (the first SIGTERM, SIGINT or SHUTDOWN). */
void pgl_notify_stopping(void);

#endif
