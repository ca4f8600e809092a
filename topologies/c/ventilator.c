/* ventilator: for each message on socket START, PUSHes the numbers 0 .. COUNT-1 on socket WORK,
 * one message each, as decimal text (which is also a JSON number). After
 * ZFLOW_SOCKET_START_SENDERS empty messages (one per sender) it ends its own stream on WORK and
 * exits 0. START stands for the Guide's "Press Enter when the workers are ready": a zflow source
 * sends the go once zflow's barrier has opened. Without it this program would send and exit
 * before then, and zflow's barrier does not open for a replica that has already exited.
 *
 *     usage: ventilator [COUNT]        (default 10000; zflow sets the ZFLOW_SOCKET_* variables)
 */
#include "zflow_env.h"

int main (int argc, char *argv[])
{
    zf_init (argv[0]);
    char *end = "";
    long count = argc == 2 ? strtol (argv[1], &end, 10) : 10000;
    if (argc > 2 || *end || count < 0)
        zf_die ("usage: %s [COUNT]   (COUNT: how many numbers to send, default 10000)", argv[0]);

    void *context = zmq_ctx_new ();
    void *start = zf_socket (context, "START");
    void *work = zf_socket (context, "WORK");

    int ends = zf_env_int ("START", "SENDERS");
    long sent = 0;
    char go[256], msg[32];
    while (ends > 0) {
        if (zf_recv (start, go, sizeof go) == 0) {
            ends--; /* one sender's stream has ended */
            continue;
        }
        for (long n = 0; n < count; n++, sent++)
            zf_send (work, msg, (size_t) snprintf (msg, sizeof msg, "%ld", n));
    }
    zf_send_end (work, "WORK");
    printf ("sent %ld numbers\n", sent);

    zmq_close (start);
    zmq_close (work); /* lingers until every message is out (ZFLOW_SOCKET_WORK_LINGER ms) */
    zmq_ctx_destroy (context);
    return 0;
}
