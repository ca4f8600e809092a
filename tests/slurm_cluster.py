"""A real Slurm cluster on this machine, for tests/test_slurm.py: slurmctld on a "host" `ctl` and
one slurmd per compute "host" (`n1`, `n2`), each in a network and UTS namespace of its own
(tests/netns.py), authenticated by a munged with a key made for the run.

Everything lives in one temporary directory (configuration, munge key and socket, state, spool,
logs) and every daemon is a child of the test: nothing of the machine's own Slurm or munge (the
packages' /etc files, their services) is read or touched. The daemons' ports (6817, 6818) are the
fixed ones only inside our own namespaces. Clients (`sbatch`, `scontrol`) run inside `ctl`:
SAFETY (../shared/notes/multi-host-facts.md) forbids traffic from the host namespace to the
emulated addresses. `close()` kills only the processes it started and whatever is left inside
its namespaces, and removes the namespaces and their /etc/netns entries: meant for a `finally`.

Versions: Debian 12's Slurm 22.05. In containers cgroup auto-detection fails, hence
`CgroupPlugin=cgroup/v1` with proctrack/linuxproc and task/none (no cgroup is ever created).
The scheduler keeps its defaults: `zflow export slurm` uses no heterogeneous job, which only the
backfill scheduler would start (`SchedulerParameters=bf_interval=1` makes that prompt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from netns import Cluster

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
CPUS = 4  # declared per node (SlurmdParameters=config_overrides: the machine has fewer)
MEMORY = 2000  # MB per node


def available() -> str | None:
    """Why a Slurm cluster cannot be brought up here (None when it can)."""
    from netns import available as netns_available

    why = netns_available()
    if why:
        return why
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return (f"{', '.join(missing)} not installed (apt-get install --no-install-recommends "
                "slurmctld slurmd slurm-client munge; .ci/run does)")
    return None


def poll(check: Callable[[], bool], timeout: float, what: str, why: Callable[[], str]) -> None:
    """Wait for `check()` to hold, polling, at most `timeout` seconds (AssertionError with
    `why()` otherwise)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:g}s\n{why()}")
        time.sleep(0.05)


class Slurm:
    """slurmctld + slurmd on `nodes`, each a "host" of its own; `start()`, then `close()`."""

    def __init__(self, root: Path, prefix: str, nodes: Sequence[str] = ("n1", "n2"),
                 subnet: str = "10.251.9") -> None:
        self.root = root
        self.nodes = list(nodes)
        self.net = Cluster(prefix, subnet)
        self.conf = root / "etc" / "slurm.conf"
        self.socket = root / "munge" / "socket"
        self.logs = root / "log"
        self.started = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Slurm:
        t0 = time.monotonic()
        for d in ("etc", "munge", "state", "spool", "log", "jobs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)  # clients reach the socket; the key is 0600
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.net.start()
        self.net.add("ctl", ["ctl"])
        for n in self.nodes:
            self.net.add(n, [n])
            (self.root / "spool" / n).mkdir()
        self._write_conf()
        self.daemon("ctl", "munged", ["munged", "-F", "-f", "--key-file", str(key),
                                      "--socket", str(self.socket),
                                      "--pid-file", str(self.root / "munge" / "pid"),
                                      "--seed-file", str(self.root / "munge" / "seed"),
                                      "--log-file", str(self.logs / "munged.log")])
        poll(self.socket.exists, 10, "munged's socket", self.why)
        self.daemon("ctl", "slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        poll(lambda: "UP" in self.client("scontrol", "ping", check=False).stdout, 20,
             "slurmctld answering", self.why)
        for n in self.nodes:
            self.daemon(n, "slurmd", ["slurmd", "-D", "-N", n, "-f", str(self.conf)])
        poll(self._idle, 30, f"{', '.join(self.nodes)} idle", self.why)
        self.started = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Kill our daemons and everything left in our namespaces; remove the namespaces."""
        self.net.close()

    # -- running things ----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLURM_CONF": str(self.conf),
                "HOME": str(self.root), "LANG": "C.UTF-8"}

    def daemon(self, host: str, name: str, argv: Sequence[str]) -> subprocess.Popen:
        """Start `argv` on `host` (its namespace, its host name), output to log/NAME-HOST.out."""
        pod = self.net.pods[host]
        out = open(self.logs / f"{name}-{host}.out", "ab")  # noqa: SIM115  # the child holds it
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", pod.ns, "unshare", "--uts", "sh", "-c",
                 'hostname "$0" && exec "$@"', host, *argv],
                env=self.env(), cwd=self.root, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        pod.procs.append(proc)
        return proc

    def client(self, *argv: str, check: bool = True, cwd: Path | None = None,
               env: Mapping[str, str] | None = None,
               timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """A Slurm client command, run on `ctl` (never from the host's own namespace)."""
        return subprocess.run(["ip", "netns", "exec", self.net.pods["ctl"].ns, *argv],
                              env={**self.env(), **(env or {})}, cwd=cwd or self.root,
                              capture_output=True, text=True, timeout=timeout, check=check)

    def job(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` as one dict per (heterogeneous) component."""
        p = self.client("scontrol", "-o", "show", "job", job_id, check=False)
        out = []
        for line in p.stdout.splitlines():
            fields: dict[str, str] = {}
            for word in line.split():
                k, _, v = word.partition("=")
                fields[k] = v
            out.append(fields)
        return out

    def pids(self, host: str) -> list[int]:
        """The processes in `host`'s network namespace now."""
        from netns import ip

        return [int(p) for p in ip("netns", "pids", self.net.pods[host].ns).split()]

    def routes(self) -> dict[str, str]:
        return {h: self.net.routes(h) for h in self.net.pods}

    def why(self) -> str:
        """The daemons' logs' last lines, for a failed assertion."""
        text = ""
        for f in sorted(self.logs.iterdir()):
            text += f"\n--- {f.name}\n" + f.read_text(errors="replace")[-1500:]
        return text

    # -- internals ----------------------------------------------------------------------------
    def _idle(self) -> bool:
        p = self.client("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        states = dict(line.split() for line in p.stdout.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in self.nodes)

    def _write_conf(self) -> None:
        r = self.root
        ctl = self.net.pods["ctl"].address
        nodes = "\n".join(f"NodeName={n} NodeAddr={self.net.pods[n].address} CPUs={CPUS} "
                          f"RealMemory={MEMORY} State=UNKNOWN" for n in self.nodes)
        self.conf.write_text(f"""\
ClusterName=zflowtest
SlurmctldHost=ctl({ctl})
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/state/slurmctld.pid
SlurmdPidFile={r}/spool/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SlurmdParameters=config_overrides
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=600
{nodes}
PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")
        (self.conf.parent / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
