"""Per-module mutation score from mutmut's results in mutants/ (run `mutmut run` first).

The score is mutmut's own (as its `badge` command computes it): (killed + timeout) / (total -
skipped). Mutants with no covering test count as not killed. `--survivors` also lists every
mutant that was not killed, by name; `--diffs` with the changed lines (what `mutmut show NAME`
prints in full).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mutmut.__main__ import SourceFileMutationData, walk_mutatable_files
from mutmut.stats import collect_stat, status_by_exit_code


def _changed_lines(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(name).splitlines()[2:]
    return "\n".join("    " + x for x in lines if x[:1] in "-+" and not x.startswith("@@"))


def main(argv: list[str]) -> int:
    rows = []
    survivors: list[tuple[str, str]] = []
    for path in walk_mutatable_files():
        if not (Path("mutants") / (str(path) + ".meta")).exists():
            continue
        m = SourceFileMutationData(path=path)
        m.load()
        if not m.exit_code_by_key:
            continue
        s = collect_stat(m)
        tested = s.total - s.skipped
        score = 100.0 * (s.killed + s.timeout) / tested if tested else 0.0
        rows.append((str(path), s.total, s.killed, s.timeout, s.survived, s.no_tests, score))
        for name, code in sorted(m.exit_code_by_key.items()):
            status = status_by_exit_code[code]
            if status not in ("killed", "timeout"):
                survivors.append((status, name))
    if not rows:
        print('no results: run `mutmut run --max-children 2` first', file=sys.stderr)
        return 1
    print("| module | mutants | killed | timeout | survived | no tests | score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows):
        print(f"| `{r[0]}` | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.1f}% |")
    tot = [sum(r[i] for r in rows) for i in range(1, 6)]
    score = 100.0 * (tot[1] + tot[2]) / tot[0] if tot[0] else 0.0
    print(f"| **all** | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} | {tot[4]} | {score:.1f}% |")
    if "--survivors" in argv or "--diffs" in argv:
        print()
        for status, name in survivors:
            print(f"{status}\t{name}")
            if "--diffs" in argv:
                print(_changed_lines(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
