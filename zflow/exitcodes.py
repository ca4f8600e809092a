"""Exit codes of the zflow command, one place so the CLI, the docs and the tests agree."""

OK = 0
#: `validate`: a file has errors. `up`: the topology is invalid, or a node failed beyond its
#: restart policy (or crash-looped) while running.
FAILED = 1
#: Bad command line, or an input file that cannot be read (missing, binary, not UTF-8, too big).
USAGE = 2
#: `up`: the topology is valid but could not start (endpoint in use, ipc path unusable, `run:`
#: target missing, not callable or raising at import, command not found or not executable, `cwd`
#: missing, run directory not writable). One located error; nothing is left running.
#: tests/runtime_corpus/ holds one topology per case.
START_FAILED = 3
#: `up`: the topology ran to its end, but not every record made it: records were lost (in the
#: pipes of, or inside, replicas that died), or skipped or dead-lettered by `on_error`. The
#: summary says how many and where. Never reported as success.
INCOMPLETE = 4
#: `up`: stopped by Ctrl-C or SIGTERM (128 + SIGINT).
INTERRUPTED = 130

TABLE = [
    (OK, "success: files valid / topology completed"),
    (FAILED, "invalid topology, or a node failed beyond its restart policy"),
    (USAGE, "usage error, or an input file that cannot be read"),
    (START_FAILED, "topology could not start (endpoint in use, import error, command not found)"),
    (INCOMPLETE, "topology ended, but records were lost, skipped or dead-lettered"),
    (INTERRUPTED, "interrupted by Ctrl-C or SIGTERM"),
]
