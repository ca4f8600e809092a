/* zflow_env.h: ZeroMQ sockets as zflow's ZFLOW_* environment describes them (README, "Command
 * nodes"), in the spirit of the ZeroMQ Guide's zhelpers.h. Header-only; every failure exits with
 * a message naming the replica and what went wrong. */
#ifndef ZFLOW_ENV_H
#define ZFLOW_ENV_H

#include <zmq.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *zf_me = "?"; /* who we are in messages: ZFLOW_REPLICA_ID, or argv[0] */

static inline void zf_die (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "%s: ", zf_me);
    vfprintf (stderr, fmt, ap);
    fputc ('\n', stderr);
    va_end (ap);
    exit (2);
}

/* An environment variable zflow sets, or exit: the program was not started by zflow. */
static inline const char *zf_getenv (const char *key)
{
    const char *value = getenv (key);
    if (!value)
        zf_die ("%s is not set: this program is a zflow command node, run it with "
                "`zflow up` (README, \"Command nodes\")", key);
    return value;
}

static inline const char *zf_env (const char *sock, const char *what)
{
    char key[128];
    snprintf (key, sizeof key, "ZFLOW_SOCKET_%s_%s", sock, what);
    return zf_getenv (key);
}

static inline int zf_env_int (const char *sock, const char *what)
{
    const char *value = zf_env (sock, what);
    char *end;
    errno = 0;
    long n = strtol (value, &end, 10);
    if (errno || end == value || *end || n < 0 || n > INT_MAX)
        zf_die ("ZFLOW_SOCKET_%s_%s=\"%s\" is not a count", sock, what, value);
    return (int) n;
}

static inline void zf_init (const char *argv0)
{
    zf_me = getenv ("ZFLOW_REPLICA_ID") ? getenv ("ZFLOW_REPLICA_ID") : argv0;
}

/* Socket SOCK (upper case, as in ZFLOW_SOCKETS): type, high-water mark and linger applied,
 * bound or connected to its endpoints. */
static inline void *zf_socket (void *ctx, const char *sock)
{
    const char *type = zf_env (sock, "TYPE");
    int t = !strcmp (type, "PUSH") ? ZMQ_PUSH : !strcmp (type, "PULL") ? ZMQ_PULL : -1;
    if (t < 0)
        zf_die ("socket %s is %s: this program speaks PUSH or PULL", sock, type);
    void *s = zmq_socket (ctx, t);
    int hwm = zf_env_int (sock, "HWM"), linger = zf_env_int (sock, "LINGER");
    if (!s || zmq_setsockopt (s, ZMQ_SNDHWM, &hwm, sizeof hwm)
        || zmq_setsockopt (s, ZMQ_RCVHWM, &hwm, sizeof hwm)
        || zmq_setsockopt (s, ZMQ_LINGER, &linger, sizeof linger))
        zf_die ("socket %s: %s", sock, zmq_strerror (zmq_errno ()));
    int bind = !strcmp (zf_env (sock, "MODE"), "bind");
    char *endpoints = strdup (zf_env (sock, "ENDPOINTS")); /* space separated */
    int n = 0;
    for (char *ep = strtok (endpoints, " "); ep; ep = strtok (NULL, " "), n++)
        if ((bind ? zmq_bind (s, ep) : zmq_connect (s, ep)) != 0)
            zf_die ("socket %s: cannot %s %s: %s", sock, bind ? "bind" : "connect", ep,
                    zmq_strerror (zmq_errno ()));
    if (n == 0)
        zf_die ("socket %s: ZFLOW_SOCKET_%s_ENDPOINTS is empty", sock, sock);
    free (endpoints);
    return s;
}

/* One message into buf as a C string; returns its length, 0 for an end-of-stream marker. */
static inline int zf_recv (void *s, char *buf, size_t size)
{
    int n = zmq_recv (s, buf, size - 1, 0);
    if (n < 0)
        zf_die ("zmq_recv: %s", zmq_strerror (zmq_errno ()));
    if ((size_t) n >= size)
        zf_die ("a %d-byte message does not fit in %zu bytes", n, size - 1);
    buf[n] = '\0';
    return n;
}

static inline void zf_send (void *s, const char *data, size_t len)
{
    if (zmq_send (s, data, len, 0) != (int) len)
        zf_die ("zmq_send: %s", zmq_strerror (zmq_errno ()));
}

/* End of stream on SOCK: an empty message for each replica that receives from it. */
static inline void zf_send_end (void *s, const char *sock)
{
    for (int i = zf_env_int (sock, "SENDERS"); i > 0; i--)
        zf_send (s, "", 0);
}

#endif
