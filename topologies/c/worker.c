/* worker: PULLs numbers (decimal text / JSON numbers) on socket WORK, PUSHes their squares on
 * RESULTS as JSON {"worker": <replica>, "result": <square>}, the records squares.py's
 * ResultsManager reads. The input ends after ZFLOW_SOCKET_WORK_SENDERS empty messages (one per
 * sender); then the worker ends its own output and exits 0.
 */
#include "zflow_env.h"

int main (int argc, char *argv[])
{
    (void) argc;
    zf_init (argv[0]);
    const char *replica = zf_getenv ("ZFLOW_REPLICA");

    void *context = zmq_ctx_new ();
    void *work = zf_socket (context, "WORK");
    void *results = zf_socket (context, "RESULTS");

    int ends = zf_env_int ("WORK", "SENDERS");
    long answered = 0;
    char msg[64], answer[96];
    while (ends > 0) {
        if (zf_recv (work, msg, sizeof msg) == 0) {
            ends--; /* one sender's stream has ended */
            continue;
        }
        char *end;
        errno = 0;
        long long n = strtoll (msg, &end, 10);
        if (errno || end == msg || *end || n > 3037000499LL || n < -3037000499LL)
            zf_die ("not a number I can square: \"%s\"", msg);
        zf_send (results, answer, (size_t) snprintf (answer, sizeof answer,
                 "{\"worker\":%s,\"result\":%lld}", replica, n * n));
        answered++;
    }
    zf_send_end (results, "RESULTS");
    printf ("squared %ld numbers\n", answered);

    zmq_close (work);
    zmq_close (results);
    zmq_ctx_destroy (context);
    return 0;
}
