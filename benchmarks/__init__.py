"""zflow benchmark harness (issue 5): zflow against hand-written baselines, side by side.

Run `python benchmarks/run.py --quick` from the repository root; see benchmarks/README.md.
"""
