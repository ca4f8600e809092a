"""`zflow export k8s`: golden manifests, offline schema validation, the rules no schema carries,
and located errors for what cannot run on a cluster.

There is no cluster here. kubernetes-validate checks every object against the published schemas
(strict: unknown fields are errors) of Kubernetes 1.29 and of the newest version it ships; the
rules only the API server applies (podFailurePolicy needs restartPolicy Never, a subdomain is a
DNS label, names fit in 63 characters, ...) are checked by `semantic_problems` below.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from zflow import cluster
from zflow.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "k8s"
SQUARES = "topologies/squares.yaml"
INGEST = "tests/topologies/k8s_ingest.yaml"
IMAGE = "registry.example/zflow-squares:1"
#: ZFLOW_UPDATE_GOLDEN=1 pytest tests/test_export_k8s.py rewrites the golden files
UPDATE = os.environ.get("ZFLOW_UPDATE_GOLDEN") == "1"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def zflow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The CLI in this process (export starts nothing; a subprocess each would cost seconds)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:
                code = int(e.code or 0)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def export(*args: str) -> list[dict[str, Any]]:
    p = zflow("export", "k8s", *args)
    assert p.returncode == 0, p.stderr
    return list(yaml.safe_load_all(p.stdout))


@pytest.mark.parametrize(("name", "args"), [
    ("squares", (SQUARES, "--image", IMAGE, "-n", "pipelines")),
    ("ingest", (INGEST, "--image", IMAGE)),
])
def test_export_matches_the_golden_manifests(name: str, args: tuple[str, ...]) -> None:
    p = zflow("export", "k8s", *args)
    assert p.returncode == 0, p.stderr
    golden = GOLDEN / f"{name}.yaml"
    if UPDATE:
        golden.write_text(p.stdout)
    assert p.stdout == golden.read_text(), f"regenerate with ZFLOW_UPDATE_GOLDEN=1 ({golden})"


def test_finite_and_long_running_topologies_get_the_workloads_they_need() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in export(SQUARES, "--image", IMAGE)}
    assert ("Job", "squares-coordinator") in kinds and ("Job", "squares-worker") in kinds
    assert not any(k in ("StatefulSet", "Deployment") for k, _ in kinds)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in export(INGEST, "--image", IMAGE)}
    assert ("Deployment", "ingest-coordinator") in kinds
    assert ("StatefulSet", "ingest-worker") in kinds and not any(k == "Job" for k, _ in kinds)
    forced = export(SQUARES, "--image", IMAGE, "--long-running")
    assert {o["kind"] for o in forced} >= {"StatefulSet", "Deployment"}


def _all_exports() -> list[list[dict[str, Any]]]:
    return [export(SQUARES, "--image", IMAGE, "-n", "pipelines"),
            export(SQUARES, "--image", IMAGE, "--scale", "worker=40",
                   "--set", "nodes.ventilator.params.count=50"),
            export(SQUARES, "--image", IMAGE, "--long-running"),
            export(INGEST, "--image", IMAGE)]


@pytest.fixture(scope="module")
def exports() -> list[list[dict[str, Any]]]:
    return _all_exports()


def test_every_manifest_validates_strictly_offline(exports) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    versions = ["1.29", kv.utils.latest_version()]
    for objs in exports:
        for obj in objs:
            for v in versions:
                kv.validate(obj, v, strict=True)  # raises ValidationError


def test_a_broken_manifest_fails_the_offline_validation(exports) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    job = next(o for o in exports[0] if o["kind"] == "Job")
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kv.ValidationError):
        kv.validate(job, "1.29", strict=True)


def _pods(obj: dict[str, Any]) -> dict[str, Any] | None:
    return obj.get("spec", {}).get("template")


def semantic_problems(objs: list[dict[str, Any]], keys_written: set[str]) -> list[str]:
    """What the API server would refuse, or what would not work, that no schema says."""
    out = []
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    by_node: dict[str, set[int]] = {}
    for o in objs:
        name, kind = o["metadata"]["name"], o["kind"]
        if len(name) > cluster.MAX_NAME or not DNS_SUBDOMAIN.fullmatch(name):
            out.append(f"{kind} {name}: not a DNS name of at most 63 characters")
        if kind == "Service" and not DNS_LABEL.fullmatch(name):
            out.append(f"Service {name}: not a DNS label")
        for k, v in o["metadata"].get("labels", {}).items():
            if len(v) > 63 or not re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]?", v):
                out.append(f"{kind} {name}: label {k}={v!r} is not a label value")
        tpl = _pods(o)
        if tpl is None:
            continue
        spec, podspec = o["spec"], tpl["spec"]
        if "selector" in spec and not (spec["selector"]["matchLabels"].items()
                                       <= tpl["metadata"]["labels"].items()):
            out.append(f"{kind} {name}: selector does not match its pods' labels")
        if "podFailurePolicy" in spec and podspec.get("restartPolicy") != "Never":
            out.append(f"{kind} {name}: podFailurePolicy needs restartPolicy Never")
        if "backoffLimitPerIndex" in spec and spec.get("completionMode") != "Indexed":
            out.append(f"{kind} {name}: backoffLimitPerIndex needs an Indexed Job")
        if kind == "Job" and podspec.get("restartPolicy") not in ("Never", "OnFailure"):
            out.append(f"Job {name}: restartPolicy must be Never or OnFailure")
        sub = podspec.get("subdomain")
        if sub is not None:
            if not DNS_LABEL.fullmatch(sub) or len(sub) > 63:
                out.append(f"{kind} {name}: subdomain {sub!r} is not a DNS label")
            host = f"{name}-{spec['completions'] - 1}"
            if len(host) > 63:
                out.append(f"{kind} {name}: pod host name {host} is over 63 characters")
        names_svc = sub or spec.get("serviceName")
        if names_svc is not None:
            svc = services.get(names_svc, {}).get("spec", {})
            if svc.get("clusterIP") != "None" or not svc.get("publishNotReadyAddresses"):
                out.append(f"{kind} {name}: {names_svc} is not a headless Service publishing "
                           "not-ready addresses (the barrier needs the names before Ready)")
        if kind == "StatefulSet" and spec.get("podManagementPolicy") != "Parallel":
            out.append(f"StatefulSet {name}: OrderedReady start would deadlock the barrier")
        for c in podspec["containers"]:
            if len(c["name"]) > 63 or not DNS_LABEL.fullmatch(c["name"]):
                out.append(f"{kind} {name}: container name {c['name']!r}")
            cmd = c["command"]
            if cmd[:2] not in (["zflow", "replica"], ["zflow", "coordinator"]):
                out.append(f"{kind} {name}: command is not zflow replica/coordinator: {cmd}")
            try:
                build_parser().parse_args(cmd[1:])
            except SystemExit:
                out.append(f"{kind} {name}: zflow does not accept {cmd}")
            for p in c.get("ports", []):
                if len(p["name"]) > 15:
                    out.append(f"{kind} {name}: port name {p['name']} over 15 characters")
            node = tpl["metadata"]["labels"].get("zflow.io/node")
            if node:
                by_node[node] = {p["containerPort"] for p in c.get("ports", [])}
        for v in podspec.get("volumes", []):
            for item in v.get("secret", {}).get("items", []):
                if item["key"] not in keys_written:
                    out.append(f"{kind} {name}: secret key {item['key']} is not made by "
                               "zflow keys")
    for o in objs:
        if o["kind"] != "NetworkPolicy":
            continue
        node = o["spec"]["podSelector"]["matchLabels"].get("zflow.io/node")
        for rule in o["spec"]["ingress"]:
            for p in rule["ports"]:
                if node and p["port"] not in by_node.get(node, set()):
                    out.append(f"NetworkPolicy {o['metadata']['name']}: port {p['port']} is "
                               f"not one {node}'s pods listen on")
    return out


def test_the_rules_no_schema_checks_hold(exports, tmp_path: Path) -> None:
    for file, objs in zip([SQUARES, SQUARES, SQUARES, INGEST], exports, strict=True):
        p = zflow("keys", file, "-o", str(tmp_path / Path(file).stem))
        assert p.returncode == 0, p.stderr
        written = set(os.listdir(tmp_path / Path(file).stem))
        assert semantic_problems(objs, written) == []


def test_the_rule_checker_catches_what_it_should(exports) -> None:
    objs = yaml.safe_load(yaml.safe_dump(exports[0]))  # a copy
    job = next(o for o in objs if o["kind"] == "Job" and "podFailurePolicy" in o["spec"])
    job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    job["spec"]["template"]["spec"]["subdomain"] = "Not_A_Label"
    job["metadata"]["name"] = "x" * 64
    problems = semantic_problems(objs, set())
    assert any("podFailurePolicy needs restartPolicy Never" in p for p in problems)
    assert any("is not a DNS label" in p for p in problems)
    assert any("at most 63 characters" in p for p in problems)
    assert any("not made by zflow keys" in p for p in problems)


def test_edges_and_the_control_port_are_all_the_network_policies_allow(exports) -> None:
    pol = {o["metadata"]["name"]: o["spec"] for o in exports[0] if o["kind"] == "NetworkPolicy"}
    ports = {s: p for (n, s), p in cluster.ports(_plan(SQUARES)).items()}
    assert pol["squares-worker"]["ingress"] == []  # workers only connect
    (answers, control) = pol["squares-results"]["ingress"]
    assert answers["ports"] == [{"port": ports["answers"], "protocol": "TCP"}]
    assert answers["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "zflow", "app.kubernetes.io/instance": "squares",
        "app.kubernetes.io/managed-by": "zflow", "zflow.io/role": "replica",
        "zflow.io/node": "worker"}}}]
    (rule,) = pol["squares-coordinator"]["ingress"]
    assert rule["ports"] == [{"port": cluster.CONTROL_PORT, "protocol": "TCP"}]
    ingest = {o["metadata"]["name"]: o["spec"] for o in export(INGEST, "--image", IMAGE)
              if o["kind"] == "NetworkPolicy"}
    feed = ingest["ingest-intake"]["ingress"][0]
    assert feed == {"ports": [{"port": 5555, "protocol": "TCP"}]}  # fed from outside: anyone


def _plan(file: str) -> Any:
    from zflow.plan import build_plan
    from zflow.spec import load

    res = load(str(ROOT / file))
    return build_plan(res.topology, str(ROOT / file))


def test_restart_policy_maps_to_per_index_retries_and_exit_3_fails_the_job(exports) -> None:
    jobs = {o["metadata"]["name"]: o["spec"] for o in exports[0] if o["kind"] == "Job"}
    assert jobs["squares-worker"]["backoffLimitPerIndex"] == 5  # max_restarts' default
    assert jobs["squares-worker"]["completions"] == jobs["squares-worker"]["parallelism"] == 10
    (rule,) = jobs["squares-worker"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [3]
    assert jobs["squares-coordinator"]["backoffLimit"] == 0
    scaled = {o["metadata"]["name"]: o["spec"] for o in exports[1] if o["kind"] == "Job"}
    assert scaled["squares-worker"]["completions"] == 40
    cmd = scaled["squares-worker"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[-4:] == ["--set", "nodes.ventilator.params.count=50", "--scale", "worker=40"]
    sts = next(o for o in exports[3] if o["kind"] == "StatefulSet"
               and o["metadata"]["name"] == "ingest-worker")
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ZFLOW_POD_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}} in env


BAD = """\
version: 1
name: bad
nodes:
  src:
    run: m:numbers
    cwd: /srv/data
    sockets:
      out: {type: PUSH, bind: "ipc:///tmp/bad.out", codec: json}
  mid:
    command: [python3, /home/me/upper.py]
    sockets:
      inp: {type: PULL, connect: "ipc:///tmp/bad.out", codec: json}
      out: {type: PUSH, bind: "tcp://127.0.0.1:5599", codec: json}
  sink:
    run: m:Sink
    sockets:
      inp: {type: PULL, connect: "tcp://127.0.0.1:5599", codec: json}
"""


def test_what_cannot_run_on_a_cluster_is_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    p = zflow("export", "k8s", "bad.yaml", "--image", IMAGE, cwd=tmp_path)
    assert p.returncode == 1 and p.stdout == "" and "Traceback" not in p.stderr
    found = re.findall(r"^bad\.yaml:(\d+):(\d+): error\[(ZF\d+)\]", p.stderr, re.M)
    assert found == [("6", "10", "ZF092"), ("8", "31", "ZF090"), ("10", "24", "ZF093"),
                     ("12", "34", "ZF090"), ("13", "31", "ZF091"), ("17", "34", "ZF091")]


def test_names_too_long_for_kubernetes_are_located(tmp_path: Path) -> None:
    long = "n" * 60
    (tmp_path / "t.yaml").write_text(f"""\
version: 1
name: {long}
nodes:
  src:
    run: m:numbers
    sockets:
      out: {{type: PUSH, bind: auto}}
  sink:
    run: m:Sink
    sockets:
      inp: {{type: PULL, connect: src.out}}
""")
    p = zflow("export", "k8s", "t.yaml", "--image", IMAGE, cwd=tmp_path)
    assert p.returncode == 1
    assert re.findall(r"^t\.yaml:(\d+):\d+: error\[ZF094\]", p.stderr, re.M) == ["2", "4", "8"]


def test_export_writes_one_file_per_object(tmp_path: Path) -> None:
    p = zflow("export", "k8s", SQUARES, "--image", IMAGE, "-o", str(tmp_path / "k8s"))
    assert p.returncode == 0, p.stderr
    files = sorted(os.listdir(tmp_path / "k8s"))
    assert files[0] == "00-configmap-squares-topology.yaml" and len(files) == 11
    assert "kubectl apply -f" in p.stdout
    blocked = tmp_path / "file"
    blocked.write_text("")
    p = zflow("export", "k8s", SQUARES, "--image", IMAGE, "-o", str(blocked))
    assert p.returncode == 2 and "cannot write" in p.stderr and "Traceback" not in p.stderr
