"""Squares over several "hosts": the coordinator and every replica each in a network namespace of
its own, with its own address and host name, started exactly as the exported manifests say.

What a cluster would do is emulated and nothing else: the Indexed Job's pod host names
(`squares-worker-2`) and JOB_COMPLETION_INDEX, the headless Service's names in every pod's
hosts file, the ConfigMap's file at its mount path, and the Secret volume with only the items the
manifest projects. Ports are the fixed ones zflow chose: inside namespaces of our own that is the
point. Root only (CI runs as root); see tests/netns.py for the safety rules it keeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from netns import Cluster, available

from zflow import cluster as zc
from zflow import exitcodes

ROOT = Path(__file__).resolve().parent.parent
SKIP = available()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=f"multi-host test: {SKIP}")
BIN = os.path.dirname(sys.executable)
NS = "default"
DOMAIN = f"{NS}.svc.cluster.local"


@pytest.fixture
def pods() -> Iterator[Cluster]:
    c = Cluster(f"zf{os.getpid() % 100000}")
    try:
        yield c.start()
    finally:
        c.close()
    assert not any(n.startswith(c.prefix) for n in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


def export(tmp: Path, *args: str) -> list[dict[str, Any]]:
    """The image (the node code in a workdir) and the manifests for it."""
    app = tmp / "app"
    app.mkdir()
    for f in ("topologies/squares.yaml", "topologies/squares.py", "tests/topologies/faulty.py"):
        shutil.copy(ROOT / f, app)
    p = subprocess.run([sys.executable, "-m", "zflow", "export", "k8s", str(app / "squares.yaml"),
                        "--image", "squares:test", "--workdir", str(app), *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return list(yaml.safe_load_all(p.stdout))


def keys(tmp: Path, name: str = "keys") -> Path:
    out = tmp / name
    subprocess.run([sys.executable, "-m", "zflow", "keys", str(ROOT / "topologies/squares.yaml"),
                    "-o", str(out)], check=True, capture_output=True, timeout=60)
    return out


class Run:
    """The manifests' pods, started in namespaces."""

    def __init__(self, pods: Cluster, objs: list[dict[str, Any]], tmp: Path, keydir: Path):
        self.pods, self.tmp, self.keydir = pods, tmp, keydir
        self.objs = objs
        self.svc = next(o for o in objs if o["kind"] == "Service"
                        and o["spec"].get("clusterIP") == "None")["metadata"]["name"]
        config = next(o for o in objs if o["kind"] == "ConfigMap")
        self.topology = config["data"]["topology.yaml"]
        #: every workload, by name: Jobs (finite), StatefulSets and a Deployment (long-running)
        self.jobs = {o["metadata"]["name"]: o for o in objs
                     if o["kind"] in ("Job", "StatefulSet", "Deployment")}
        self.lines: list[str] = []
        self.running = threading.Event()

    def pod_spec(self, job: str) -> dict[str, Any]:
        return self.jobs[job]["spec"]["template"]["spec"]

    def start(self, job: str, index: int | None, pod: str, keydir: Path | None = None,
              ) -> subprocess.Popen:
        """Start the pod of `job` (index `index`) as the manifest says: command, env,
        workingDir, the ConfigMap at its mount path, the Secret's projected items."""
        spec = self.pod_spec(job)
        (c,) = spec["containers"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounted = Path(mounts["topology"]["mountPath"])  # the ConfigMap's subPath mount:
        if not mounted.exists() or mounted.read_text() != self.topology:  # written once, not
            mounted.write_text(self.topology)  # under the feet of a pod reading it
        secret = self.tmp / "secrets" / pod
        secret.mkdir(parents=True, exist_ok=True)
        for item in volumes["keys"]["secret"]["items"]:
            src = (keydir or self.keydir) / item["key"]
            if src.exists():
                shutil.copy(src, secret / item["path"])
        argv = [str(secret) if a == mounts["keys"]["mountPath"] else a for a in c["command"]]
        env = {"PATH": f"{BIN}:/usr/sbin:/usr/bin:/bin", "HOME": str(self.tmp)}
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        for e in c.get("env", []):  # the downward API: the pod's labels
            if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == \
                    "metadata.labels['apps.kubernetes.io/pod-index']":
                env[e["name"]] = str(index)
        if index is not None:
            if self.jobs[job]["kind"] == "Job":
                env["JOB_COMPLETION_INDEX"] = str(index)  # what the Job controller sets
            host = f"{job}-{index}"  # an Indexed Job's or a StatefulSet's pod host name
            names = [f"{host}.{self.svc}.{DOMAIN}", f"{host}.{self.svc}", host]
        else:  # the coordinator's pod: a random name, reached through its Service's name
            host = f"{job}-x7k2p"
            names = [f"{job}.{DOMAIN}", job, host]
        if pod not in self.pods.pods:
            self.pods.add(pod, names)
        return self.pods.run(pod, host, argv, env, c["workingDir"])

    def coordinator(self) -> subprocess.Popen:
        job = zc.coordinator_name("squares")
        c = self.pod_spec(job)["containers"][0]
        assert "--json" not in c["command"]
        c["command"].append("--json")  # lines a test can read (kubectl logs shows plain ones)
        proc = self.start(job, None, "coordinator")

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line)
                if '"event": "overall"' in line and '"running"' in line:
                    self.running.set()

        threading.Thread(target=read, daemon=True).start()
        return proc

    def replicas(self) -> dict[str, subprocess.Popen]:
        """Every replica's pod, all named before any starts (as the Service has them all)."""
        indexed = [(job, i) for job, o in self.jobs.items()
                   if o["spec"].get("completionMode") == "Indexed" or o["kind"] == "StatefulSet"
                   for i in range(o["spec"].get("completions") or o["spec"].get("replicas"))]
        for job, i in indexed:
            host = f"{job}-{i}"
            self.pods.add(host, [f"{host}.{self.svc}.{DOMAIN}", f"{host}.{self.svc}", host])
        return {f"{job}-{i}": self.start(job, i, f"{job}-{i}") for job, i in indexed}

    def why(self) -> str:
        """What the coordinator said, and the replicas' stderr, for a failed assertion."""
        text = "".join(x for x in self.lines if '"stats"' not in x)[-3000:]
        for p in self.pods.pods.values():
            for proc in p.procs:
                if proc.poll() is not None and proc.stderr is not None:
                    text += f"\n{p.name} exited {proc.returncode}: {proc.stderr.read()[-500:]}"
        return text

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.lines if f'"event": "{kind}"' in x]


def wait(proc: subprocess.Popen, timeout: float = 60) -> int:
    return proc.wait(timeout=timeout)



def export_slow_workers(tmp: Path, n: int) -> list[dict[str, Any]]:
    """4 workers at 40 µs a record, exactly-once, so a stream of `n` outlasts a kill; short
    heartbeats, so a link that dies without a FIN is noticed in a second, not the default 5 s."""
    return export(tmp, "--scale", "worker=4", "--set", f"nodes.ventilator.params.count={n}",
                  "--set", "delivery=exactly-once", "--set", "nodes.worker.run=faulty:slow_square",
                  "--set", "nodes.worker.params.delay_us=40",
                  "--heartbeat-ivl", "200", "--heartbeat-timeout", "1000")

@pytest.mark.parametrize("curve", [False, True], ids=["plain-data", "curve-data"])
def test_squares_across_namespaces_and_an_intruder_is_refused(pods: Cluster, tmp_path: Path,
                                                              curve: bool) -> None:
    n = 100000
    objs = export(tmp_path, "--scale", "worker=4", "--set", f"nodes.ventilator.params.count={n}",
                  *(["--set", "security={curve: true}"] if curve else []))
    run = Run(pods, objs, tmp_path, keys(tmp_path))
    t0 = time.monotonic()
    coord = run.coordinator()
    # someone with the right server key but a worker key of its own, claiming to be worker 0
    stranger = keys(tmp_path, "stranger")
    shutil.copy(run.keydir / "coordinator.key", stranger / "coordinator.key")
    intruder = run.start("squares-worker", 0, "intruder", keydir=stranger)
    members = run.replicas()
    assert len(members) == 6 and len(pods.pods) == 8
    for pod in pods.pods:  # no way out of the emulated network: no default route anywhere
        assert "default" not in pods.routes(pod)
    assert wait(intruder) == exitcodes.START_FAILED
    assert "refused this replica's key" in intruder.stderr.read()  # type: ignore[union-attr]
    assert wait(coord) == 0, coord.stderr.read()  # type: ignore[union-attr]
    wall = time.monotonic() - t0
    assert {name: wait(p) for name, p in members.items()} == dict.fromkeys(members, 0)
    (result,) = run.events("result")
    assert result["results"]["results"]["sum"] == sum(i * i for i in range(n))
    assert result["results"]["results"]["workers"] == 4
    running = next(e["t"] for e in run.events("overall") if e["state"] == "running")
    print(f"\nnetns squares {n} (data CURVE {curve}): barrier open at {running:.2f}s after the "
          f"coordinator started, done in {result['duration']:.2f}s (wall {wall:.2f}s)")


def test_a_worker_replaced_at_a_new_address_keeps_exactly_once(pods: Cluster,
                                                              tmp_path: Path) -> None:
    n = 40000  # 10,000 records of 40 µs each per worker: the stream outlasts the kill
    # the namespace goes with the process, so its FIN may never leave: heartbeats tell (short
    # ones, so the test does not wait out the default 5 s)
    objs = export_slow_workers(tmp_path, n)
    run = Run(pods, objs, tmp_path, keys(tmp_path))
    coord = run.coordinator()
    members = run.replicas()
    assert run.running.wait(60), run.why()
    old = pods.pods["squares-worker-1"].address
    pods.remove("squares-worker-1")  # SIGKILL, and the namespace (its address) is gone
    finished_before = [e for e in run.events("state") if e.get("node") == "results"
                       and e.get("state") == "finished"]
    replacement = run.start("squares-worker", 1, "squares-worker-1")  # same name, new address
    assert pods.pods["squares-worker-1"].address != old
    assert wait(coord, 90) == 0, coord.stderr.read()  # type: ignore[union-attr]
    assert wait(replacement) == 0
    (result,) = run.events("result")
    assert finished_before == [], "the stream had ended before the worker was replaced"
    assert result["results"]["results"]["sum"] == sum(i * i for i in range(n))
    assert result["results"]["results"]["answers"] == n
    assert result["nodes"]["worker"]["restarts"] >= 1
    del members["squares-worker-1"]
    assert {name: wait(p) for name, p in members.items()} == dict.fromkeys(members, 0)


def test_a_silently_cut_link_is_noticed_by_heartbeats_on_both_ends(pods: Cluster,
                                                                  tmp_path: Path) -> None:
    """No FIN, no RST: the worker's cable is pulled. The coordinator's heartbeats declare it dead
    (then a replacement takes its place), and the cut-off worker stops by itself, orphaned no
    longer than its own heartbeat timeout."""
    n = 40000
    objs = export_slow_workers(tmp_path, n)
    run = Run(pods, objs, tmp_path, keys(tmp_path))
    coord = run.coordinator()
    members = run.replicas()
    assert run.running.wait(60), run.why()
    cut = members.pop("squares-worker-2")
    pods.unplug("squares-worker-2")
    t = time.monotonic()
    # its name now leads to a new pod; the cut-off one still runs in the old namespace
    pods.forget_names("squares-worker-2")
    replacement = run.start("squares-worker", 2, "squares-worker-2-new")
    code = wait(cut, 30)  # it stops by itself: nobody can reach it to kill it
    alone = time.monotonic() - t
    assert code not in (0, -9), code
    assert "lost the coordinator" in cut.stderr.read()  # type: ignore[union-attr]
    assert wait(coord, 90) == 0, coord.stderr.read()  # type: ignore[union-attr]
    assert wait(replacement) == 0
    (result,) = run.events("result")
    assert result["results"]["results"]["sum"] == sum(i * i for i in range(n))
    assert result["nodes"]["worker"]["restarts"] >= 1
    lost = [e for e in run.events("log") if "control link was lost" in json.dumps(e)]
    assert lost, "the coordinator did not notice the lost link"
    assert {name: wait(p) for name, p in members.items()} == dict.fromkeys(members, 0)
    print(f"\ncut-off worker stopped by itself after {alone:.1f}s")
