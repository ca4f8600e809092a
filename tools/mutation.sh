#!/bin/sh
# Mutation testing of zflow's core (docs/mutation.md): mutmut mutates the modules listed in
# pyproject.toml [tool.mutmut] and runs the fast unit tests against each mutant, then this prints
# the score per module and every mutant that survived (`mutmut show NAME` shows one).
# Slow (about 15 minutes on 2 cores) and not part of CI.  Needs: pip install -e '.[mutation]'
#
#   tools/mutation.sh                       # a fresh run of every mutant
#   tools/mutation.sh "zflow.plan*"         # only some mutants (names as `mutmut show` prints)
#   MUTMUT_CHILDREN=1 tools/mutation.sh     # parallel workers (default 2)
set -e
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
    rm -rf mutants  # a full run starts fresh: cached results must not outlive the code they judged
fi
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@"
python tools/mutation_score.py --survivors
