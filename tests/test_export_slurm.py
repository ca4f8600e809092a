"""`zflow export slurm` without a cluster: the script's resource requests, its shell syntax, and
what cannot run on Slurm (located errors, exit codes). The real cluster is tests/test_slurm.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_export_k8s import BAD, SQUARES, zflow

from zflow import exitcodes
from zflow.slurm import mebibytes

ROOT = Path(__file__).resolve().parent.parent


def export(*args: str, cwd: Path = ROOT) -> str:
    p = zflow("export", "slurm", *args, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return p.stdout


def steps(text: str) -> dict[str, str]:
    """`srun` step name → its line."""
    return {m.group(1): line for line in text.splitlines()
            if line.startswith("srun") and (m := re.search(r"--job-name=(\S+)", line))}


def test_mebibytes_round_up_and_refuse_what_is_not_a_size() -> None:
    assert [mebibytes(x) for x in ("1Ki", "1536Ki", "200Mi", "2Gi", "1Ti")] == \
        [1, 2, 200, 2048, 1024 * 1024]
    with pytest.raises(ValueError):
        mebibytes("2GB")


def test_every_slot_fits_the_largest_node_and_each_step_asks_its_own() -> None:
    text = export(SQUARES, "--scale", "worker=4",
                  "--set", "nodes.worker.resources={cpus: 2, mem: 1Gi}",
                  "--set", "nodes.results.resources={mem: 768Mi}")
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    # 1 coordinator + 1 ventilator + 4 workers + 1 results; 768 MiB per CPU is the most
    assert header == ["#SBATCH --job-name=squares", "#SBATCH --output=squares-%j.out",
                      "#SBATCH --ntasks=7", "#SBATCH --cpus-per-task=2",
                      "#SBATCH --mem-per-cpu=768M"]
    s = steps(text)
    assert set(s) == {"coordinator", "ventilator", "worker", "results"}
    assert "--ntasks=4 --nodes=1-4 --cpus-per-task=2 --mem-per-cpu=512M" in s["worker"]
    assert "--ntasks=1 --nodes=1 --cpus-per-task=1 --mem-per-cpu=768M" in s["results"]
    # a step without its own memory asks for the slot's: without one it could take them all
    assert "--cpus-per-task=1 --mem-per-cpu=768M" in s["ventilator"]
    # the coordinator's step is placed before any replica's (it then has its slot), and the
    # replicas join the host Slurm placed it on
    lines = text.splitlines()
    first = [i for i, x in enumerate(lines) if x.startswith("srun")]
    found = next(i for i, x in enumerate(lines) if "HOST=$(squeue" in x)
    assert "--job-name=coordinator" in lines[first[0]] and first[0] < found < first[1]
    assert "--exact" in s["worker"] and "--exact" in s["coordinator"]


def test_without_resources_the_cluster_defaults_apply() -> None:
    text = export(SQUARES)
    assert "--cpus-per-task" not in text and "--mem" not in text
    assert "#SBATCH --ntasks=13" in text  # 10 workers by default


def test_heartbeats_go_to_the_coordinator_and_the_replicas_not_to_keys() -> None:
    text = export(SQUARES, "--heartbeat-ivl", "200", "--heartbeat-timeout", "1000")
    assert "RUN=(--heartbeat-ivl 200 --heartbeat-timeout 1000)" in text
    runs = [x for x in text.splitlines() if "$ZFLOW" in x]
    assert all('"${RUN[@]}"' in x for x in runs if " coordinator " in x or " replica " in x)
    (keys,) = [x for x in runs if " keys " in x]
    assert "${RUN[@]}" not in keys


def test_replicas_that_bind_get_a_host_each(tmp_path: Path) -> None:
    """Every replica of a socket binds the same port: two on one host would collide."""
    shutil.copy(ROOT / "topologies" / "rpc.yaml", tmp_path)
    text = export("rpc.yaml", "--scale", "server=3", cwd=tmp_path)
    s = steps(text)
    assert "--ntasks=3 --nodes=3 --ntasks-per-node=1 --overlap" in s["server"], s
    assert "#SBATCH --nodes=3-" in text


def test_the_script_is_valid_shell_and_passes_the_overrides_as_given(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = tmp_path / "s.sbatch"
    given = ["--set", "nodes.ventilator.params.count=7",
             "--set", """nodes.worker.env={A: "it's $HOME"}"""]
    p = zflow("export", "slurm", SQUARES, *given, "-o", str(script), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "sbatch" in p.stdout and script.stat().st_mode & 0o111
    text = script.read_text()
    assert f"TOPOLOGY=${{ZFLOW_TOPOLOGY:-{ROOT / SQUARES}}}" in text
    assert subprocess.run([bash, "-n", str(script)], capture_output=True,
                          timeout=10).returncode == 0
    (line,) = [x for x in text.splitlines() if x.startswith("OVERRIDES=(")]
    echoed = subprocess.run([bash, "-c", line + '; printf "%s\\n" "${OVERRIDES[@]}"'],
                            capture_output=True, text=True, timeout=10).stdout
    assert echoed.splitlines() == given


def test_what_cannot_run_on_slurm_is_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD.replace(
        "    run: m:Sink\n", "    run: m:Sink\n    resources: {cpus: 0.5}\n"))
    p = zflow("export", "slurm", "bad.yaml", cwd=tmp_path)
    assert p.returncode == exitcodes.FAILED and p.stdout == "" and "Traceback" not in p.stderr
    found = re.findall(r"^bad\.yaml:(\d+):(\d+): error\[(ZF\d+)\]", p.stderr, re.M)
    # host paths (ZF092, ZF093) are fine: a Slurm cluster shares its filesystem
    assert found == [("8", "31", "ZF090"), ("12", "34", "ZF090"), ("13", "31", "ZF091"),
                     ("18", "34", "ZF091"), ("16", "23", "ZF095")]
    assert "hint: cpus: 1" in p.stderr


@pytest.mark.parametrize(("args", "says"), [
    (("slurm", "-"), "not -"),
    (("slurm", str(ROOT / SQUARES), "--image", "x"), "--image is an option of export k8s"),
    (("k8s", str(ROOT / SQUARES)), "--image IMAGE is required"),
    (("slurm", str(ROOT / SQUARES), "-o", "/proc/no/such/dir/s.sbatch"), "cannot write"),
])
def test_usage_errors_exit_2_with_a_message(args: tuple[str, ...], says: str) -> None:
    if "-" in args:  # the standard input: a process of its own
        p = subprocess.run([sys.executable, "-m", "zflow", "export", *args], input="",
                           capture_output=True, text=True, timeout=60)
    else:
        p = zflow("export", *args)
    assert p.returncode == exitcodes.USAGE and says in p.stderr and "Traceback" not in p.stderr
