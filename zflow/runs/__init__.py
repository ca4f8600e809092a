"""Long-running topologies: the per-user run registry, detached runs and the commands that
look after them (`zflow ps`, `top`, `logs`, `stop`, `down`).

A detached `zflow up -d` is an ordinary `zflow up` in its own session whose status model has two
more subscribers: one writes the status snapshot and the outcome into the run's registry entry,
one writes each replica's output to rotated log files there. Every other command only reads the
entry (and signals the supervisor), so a run outlives the terminal and its state outlives a
crashed supervisor.
"""
