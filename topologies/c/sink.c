/* sink: PULLs answers {"worker": W, "result": R} (JSON, as squares.py's square() or worker.c
 * send them) on socket ANSWERS and adds them up. The stream has ended once every sender has
 * sent an empty message (ZFLOW_SOCKET_ANSWERS_SENDERS of them); then it prints the total and
 * exits 0.
 */
#include "zflow_env.h"

#define MAX_WORKERS 1024

/* The integer after "key": in a flat JSON object, or exit. */
static long long field (const char *json, const char *key)
{
    char quoted[32];
    snprintf (quoted, sizeof quoted, "\"%s\"", key);
    const char *at = strstr (json, quoted);
    if (at)
        at = strchr (at + strlen (quoted), ':');
    char *end = NULL;
    long long value = at ? strtoll (at + 1, &end, 10) : 0;
    if (!at || end == at + 1)
        zf_die ("no integer \"%s\" in answer %s", key, json);
    return value;
}

int main (int argc, char *argv[])
{
    (void) argc;
    zf_init (argv[0]);

    void *context = zmq_ctx_new ();
    void *answers = zf_socket (context, "ANSWERS");

    int ends = zf_env_int ("ANSWERS", "SENDERS");
    long count = 0;
    long long total = 0;
    int workers = 0;
    static char seen[MAX_WORKERS];
    char msg[256];
    while (ends > 0) {
        if (zf_recv (answers, msg, sizeof msg) == 0) {
            ends--; /* one sender's stream has ended */
            continue;
        }
        long long worker = field (msg, "worker");
        total += field (msg, "result");
        count++;
        if (worker >= 0 && worker < MAX_WORKERS && !seen[worker]) {
            seen[worker] = 1;
            workers++;
        }
    }
    printf ("%ld answers from %d workers, sum of squares %lld\n", count, workers, total);

    zmq_close (answers);
    zmq_ctx_destroy (context);
    return 0;
}
