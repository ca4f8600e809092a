"""`zflow export slurm` on a real Slurm cluster: slurmctld and two slurmd, each compute "host" in a
network and UTS namespace of its own (tests/slurm_cluster.py). The exported script is submitted
as it is with `sbatch`; the test checks the job's output (squares' exact sum), its exit code,
where each replica ran (read from the processes in each host's namespace while the job runs),
and that nothing of the job is left once it ended. Root only (CI runs as root, after .ci/run
installed the packages); skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import Slurm, available, poll

from zflow import exitcodes

ROOT = Path(__file__).resolve().parent.parent
SKIP = available()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=f"Slurm test: {SKIP}")
SQUARES = ROOT / "topologies" / "squares.yaml"
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
        "BOOT_FAIL", "DEADLINE", "PREEMPTED")
#: how long a job may take from sbatch to its end here (measured: 2-4 s)
JOB_TIMEOUT = 60


@pytest.fixture
def slurm() -> Iterator[Slurm]:
    root = Path(tempfile.mkdtemp(prefix="zfslurm-"))
    s = Slurm(root, f"zfs{os.getpid() % 100000}")
    made: list[str] = []
    try:
        yield s.start()
    finally:
        made = list(s.net.created)  # close() forgets them
        s.close()
        shutil.rmtree(root, ignore_errors=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          timeout=10).stdout.split()
    assert made and not any(n.startswith(s.net.prefix) for n in left)
    assert not any(os.path.exists(f"/etc/netns/{n}") for n in made)
    assert not root.exists()


def export(dest: Path, *args: str, topology: Path = SQUARES) -> Path:
    script = dest / f"{topology.stem}.sbatch"
    p = subprocess.run([sys.executable, "-m", "zflow", "export", "slurm", str(topology),
                        "-o", str(script), *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return script


def replicas_on(slurm: Slurm) -> dict[str, str]:
    """`node.i` → host of every zflow replica running now (its title, in its host's namespace)."""
    seen: dict[str, str] = {}
    for host in slurm.nodes:
        for pid in slurm.pids(host):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            m = re.match(r"zflow: squares (\w+\.\d+)", title)
            if m:
                seen[m.group(1)] = host
    return seen


def submit(slurm: Slurm, script: Path) -> tuple[str, float, dict[str, str]]:
    """sbatch the script, watch it to its end: its id, seconds to the end, replicas' hosts."""
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '/usr/bin')}"}
    t0 = time.monotonic()
    job = slurm.client("sbatch", "--parsable", str(script), cwd=script.parent,
                       env=env).stdout.strip()
    placement: dict[str, str] = {}

    def ended() -> bool:
        placement.update(replicas_on(slurm))
        state = slurm.job(job)
        return bool(state) and state[0].get("JobState") in DONE

    try:
        poll(ended, JOB_TIMEOUT, f"job {job} ending",
             lambda: f"{slurm.job(job)}\n{out(script, job)}{slurm.why()}")
    except AssertionError:
        slurm.client("scancel", job, check=False)
        raise
    return job, time.monotonic() - t0, placement


def out(script: Path, job: str) -> str:
    f = script.parent / f"{script.stem}-{job}.out"
    return f.read_text(errors="replace") if f.exists() else "(no output file)"


def test_squares_on_a_real_slurm_cluster_over_two_hosts(slurm: Slurm) -> None:
    n = 100000
    jobs = slurm.root / "jobs"
    script = export(jobs, "--scale", "worker=4", "--set", f"nodes.ventilator.params.count={n}",
                    "--set", "nodes.worker.resources={cpus: 1, mem: 200Mi}")
    for host, routes in slurm.routes().items():  # the emulated network has no way out
        assert "default" not in routes, host
    job, took, placement = submit(slurm, script)
    text = out(script, job)
    (state,) = slurm.job(job)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", text
    m = re.search(r"results: answers=(\d+)\s+workers=(\d+)\s+sum=(\d+)", text)
    assert m, text
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == \
        (n, 4, sum(i * i for i in range(n)))
    # every replica was seen, and they ran on both compute hosts
    assert set(placement) == {"ventilator.0", "results.0", *(f"worker.{i}" for i in range(4))}, \
        placement
    assert set(placement.values()) == {"n1", "n2"}, placement
    # and the coordinator saw them join from those hosts (a replica's name is its host's)
    joined = dict(re.findall(r"^(\w+\.\d+) *│ joined from (\S+) ", text, re.M))
    assert joined == placement, text
    assert not list(jobs.glob(".zflow-*")), "the job's key directory was left behind"
    poll(lambda: not replicas_on(slurm), 10, "no replica left", slurm.why)
    print(f"\nslurm squares {n}: sbatch to the end {took:.2f}s (Slurm up in "
          f"{slurm.started:.2f}s); placement "
          + ", ".join(f"{r}@{h}" for r, h in sorted(placement.items())))


def test_the_jobs_exit_code_is_zflows_and_no_step_outlives_the_job(slurm: Slurm) -> None:
    """A worker that cannot start (its run: target does not exist): the coordinator says 3,
    so does the job, and every step is gone with it."""
    jobs = slurm.root / "jobs"
    script = export(jobs, "--scale", "worker=2",
                    "--set", "nodes.worker.run=squares:no_such_function")
    job, _, _ = submit(slurm, script)
    (state,) = slurm.job(job)
    assert state["ExitCode"] == f"{exitcodes.START_FAILED}:0", out(script, job)
    assert "no_such_function" in out(script, job)
    poll(lambda: not replicas_on(slurm), 10, "no replica left", slurm.why)


def test_scancel_ends_every_step_and_removes_the_keys(slurm: Slurm) -> None:
    """A run that would take minutes, cancelled once every replica runs: the coordinator says
    'interrupted' (130), which is the job's exit code, and nothing of it is left."""
    jobs = slurm.root / "jobs"
    script = export(jobs, "--scale", "worker=2",
                    "--set", "nodes.ventilator.params.count=100000000")
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '/usr/bin')}"}
    job = slurm.client("sbatch", "--parsable", str(script), cwd=jobs, env=env).stdout.strip()
    poll(lambda: len(replicas_on(slurm)) == 4, 30, "every replica running",
         lambda: out(script, job) + slurm.why())
    slurm.client("scancel", job)
    poll(lambda: (slurm.job(job) or [{}])[0].get("JobState") in DONE, 30, "the job's end",
         lambda: out(script, job) + slurm.why())
    poll(lambda: not replicas_on(slurm), 10, "no replica left", slurm.why)
    (state,) = slurm.job(job)
    assert (state["JobState"], state["ExitCode"]) == ("CANCELLED", "130:0"), out(script, job)
    assert "squares interrupted" in out(script, job)
    assert not list(jobs.glob(".zflow-*")), "the job's key directory was left behind"


def test_replicas_that_bind_run_one_per_host(slurm: Slurm) -> None:
    """rpc's servers each bind the same port: the script puts them on hosts of their own."""
    jobs = slurm.root / "jobs"
    script = export(jobs, "--scale", "server=2", topology=ROOT / "topologies" / "rpc.yaml")
    job, _, _ = submit(slurm, script)
    text = out(script, job)
    (state,) = slurm.job(job)
    assert state["ExitCode"] == "0:0", text
    assert re.search(r"^client: replies=300\s+servers=2 ", text, re.M), text
    joined = dict(re.findall(r"^(\w+\.\d+) *│ joined from (\S+) ", text, re.M))
    assert {joined["server.0"], joined["server.1"]} == {"n1", "n2"}, text
