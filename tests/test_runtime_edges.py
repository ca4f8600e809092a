"""End of stream and failure handling at the edges: codecs, custom senders, commands, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from test_runtime_e2e import (
    TESTS,
    TOPO,
    _start_forever,
    assert_completed,
    leftovers,
    result_of,
    unique,
    zflow,
)


def run(topology: str, *args: str) -> subprocess.CompletedProcess:
    return zflow("up", str(TESTS / topology), "--json", "--set", f"name={unique()}", *args)


def test_json_push_to_two_replicas_ends_by_count() -> None:
    p = run("json_fanout.yaml")
    res = assert_completed(p, done=100)["results"]
    assert res["sink.0"]["n"] + res["sink.1"]["n"] == 100


def test_raw_sub_with_a_prefix_sees_the_end() -> None:
    p = run("raw_sub.yaml")
    assert assert_completed(p, done=50)["results"]["apples"] == {"n": 50, "first": "apple1"}


def test_custom_sender_feeds_a_zflow_sink() -> None:
    p = run("custom_sender.yaml")
    res = assert_completed(p, done=100)
    assert res["results"]["sink"] == {"n": 100, "first": 0}
    assert res["nodes"]["src"]["msgs_out"] == 100


def test_custom_nodes_take_params_as_keyword_arguments() -> None:
    p = run("custom_sender.yaml", "--set", "nodes.src.run=edges:client_with_params",
            "--set", "nodes.src.params={n: 200, word: w}")
    res = assert_completed(p, done=200)
    assert res["results"]["src"] == {"sent": 200, "word": "w"}
    assert res["results"]["sink"] == {"n": 200, "first": "w0"}


def test_params_that_do_not_fit_a_custom_node_fail_at_start() -> None:
    p = run("custom_sender.yaml", "--set", "nodes.src.run=edges:client_with_params",
            "--set", "nodes.src.params={count: 3}")
    assert p.returncode == 3, p.stdout[-2000:]
    assert "params ['count'] do not fit client_with_params" in result_of(p)["message"]


def test_raw_refuses_records_that_are_not_bytes_or_text() -> None:
    """`codec: raw` used to send repr() of a dict: now it says what is wrong."""
    p = run("pipeline.yaml", "--set", "nodes.src.run=edges:dict_records",
            "--set", "nodes.src.params={}", "--set", "nodes.src.sockets.out.codec=raw",
            "--set", "nodes.mid.sockets.inp.codec=raw")
    assert p.returncode == 1, p.stdout[-2000:]
    msg = result_of(p)["message"]
    assert "a dict record cannot be sent on a `codec: raw` socket" in msg, msg
    assert "Traceback" not in p.stdout + p.stderr


PARTIAL = """
version: 1
name: partial
nodes:
  talker:
    command:
      - python3
      - -c
      - |
        import os, sys, time
        sys.stdout.write("halfway"); sys.stdout.flush()
        deadline = time.monotonic() + 10  # a bound, so a regression fails instead of hanging
        while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(" done")
      - MARKER
"""


def test_output_without_a_newline_is_shown_before_the_process_exits(tmp_path: Path) -> None:
    """Progress dots or a prompt: shown after a moment, not only when the process exits. The
    node waits for a file the test creates only once it has seen its partial line."""
    topo = tmp_path / "partial.yaml"
    marker = tmp_path / "seen"
    topo.write_text(PARTIAL.replace("MARKER", str(marker)))
    proc = subprocess.Popen([sys.executable, "-m", "zflow", "up", str(topo), "--json",
                             "--set", f"name={unique()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if '"line": "halfway"' in line:
            marker.touch()
    proc.wait()
    assert marker.exists(), "".join(lines)[-2000:]
    assert proc.returncode == 0
    assert any('"line": " done"' in x for x in lines)


def test_a_plain_sender_that_exits_without_an_end_marker_ends_its_stream() -> None:
    """An ordinary pyzmq program PUSHes 100,000 records and exits 0 without any end marker: its
    clean exit ends the stream once what it sent has arrived, and nothing is lost."""
    p = run("plain_sender.yaml")
    res = assert_completed(p, done=100_000)
    assert res["results"]["sink"]["n"] == 100_000
    assert res["results"]["sink"]["sum"] == sum(range(100_000))


def test_a_server_that_never_ends_is_stopped_once_its_client_is_done() -> None:
    """A plain REP server loops forever; its client makes 10 requests and returns. With
    `lifetime: service` the server is stopped once the client finished, and the run completes."""
    p = run("rep_server.yaml")
    res = assert_completed(p, done=0)  # no stream: request/reply
    assert res["results"]["client"] == {"requests": 10, "sum": sum(i * i for i in range(10))}
    assert res["nodes"]["server"]["state"] == "stopped"
    assert "server.0 │ stopping: the nodes it serves have finished" in p.stdout or any(
        x["line"] == "stopping: the nodes it serves have finished"
        for x in (json.loads(y) for y in p.stdout.splitlines() if y.startswith('{"event": "log"'))
    )


def test_the_guides_ventilator_is_released_by_the_barrier() -> None:
    """It waits for Enter: `stdin: go` sends it when every worker is connected, so every one of
    the 4 workers gets work, and all 1000 tasks arrive (no sleep anywhere)."""
    p = run("guide_ventilator.yaml")
    res = assert_completed(p, done=1000)
    assert res["results"]["sink"]["n"] == 1000
    assert res["results"]["sink"]["workers"] == 4
    assert any("Sending tasks to workers" in x for x in p.stdout.splitlines())


def test_empty_messages_are_data_when_the_socket_has_no_end_marker() -> None:
    """The Guide's workers send empty results: with `end_marker: null` they are records, all
    101 arrive (50 empty), and the stream ends when the sender exits 0."""
    p = run("empty_records.yaml")
    assert assert_completed(p, done=101)["results"]["sink"] == {"n": 101, "empty": 50}


OUTSIDE = """
version: 1
name: outside
nodes:
  sink:
    run: edges:CountEmpty
    sockets:
      inbox: {type: PULL, bind: "ipc://PATH", codec: raw, end_marker: END, external_senders: 2}
"""


def test_senders_outside_the_topology_end_its_stream(tmp_path: Path) -> None:
    """Two programs outside the topology feed a sink through a concrete endpoint; each ends its
    stream with the declared word, and then the run completes."""
    import zmq

    path = tmp_path / "in.sock"
    topo = tmp_path / "outside.yaml"
    topo.write_text(OUTSIDE.replace("PATH", str(path)))
    proc = subprocess.Popen([sys.executable, "-m", "zflow", "up", str(topo), "--json",
                             "--set", f"name={unique()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"overall"' in line and '"running"' in line:
            break
    else:
        raise AssertionError(proc.stderr.read()[-2000:])
    ctx = zmq.Context()
    try:
        for k in range(2):
            push = ctx.socket(zmq.PUSH)
            push.connect(f"ipc://{path}")
            for i in range(10):
                push.send(f"{k}-{i}".encode())
            push.send(b"END")
            push.close(linger=10_000)
    finally:
        ctx.term()
    out = proc.stdout.read()
    proc.wait()
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, proc.stderr.read())
    assert p.returncode == 0, (out + p.stderr)[-2000:]
    res = result_of(p)
    assert (res["overall"], res["errors"]) == ("completed", [])
    assert res["results"]["sink"] == {"n": 20, "empty": 0}
    # what came from outside is data: the sink's records are the run's progress
    assert res["progress"]["done"] == 20 and res["nodes"]["sink"]["msgs_in"] == 20


def test_small_inputs_spread_over_every_replica() -> None:
    """5,000 records from a generator (no length to size frames by) over 4 workers: frames start
    small and grow, and the barrier waits for every worker's connection, so each gets work."""
    p = run("guide_ventilator.yaml", "--set", "nodes.ventilator={run: edges:gen_ints, "
            "params: {n: 5000}, sockets: {out: {type: PUSH, bind: auto, codec: json}}}")
    res = assert_completed(p, done=5000)
    assert res["results"]["sink"]["workers"] == 4, res["results"]
    assert res["results"]["sink"]["fewest"] > 0


def test_a_command_node_is_ready_when_its_output_says_so() -> None:
    """`ready: {log: …}`: a program that only connects is ready when it prints the line."""
    p = run("plain_sender.yaml", "--set", "nodes.sender.command=[sh, -c, "
            "'echo warming up; echo ready to send; exec python3 plain_sender.py 1000']",
            "--set", "nodes.sender.ready={log: '^ready to send$'}")
    assert_completed(p, done=1000)
    events = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    said = next(i for i, e in enumerate(events)
                if e.get("event") == "log" and e.get("line") == "ready to send")
    ready = next(i for i, e in enumerate(events) if e.get("event") == "state"
                 and e.get("node") == "sender" and e.get("state") == "ready")
    assert said < ready


def test_command_failing_after_its_input_ended_fails_the_run() -> None:
    p = run("command_fails.yaml")
    assert p.returncode == 1
    assert result_of(p)["message"].startswith("sink.0 exited with code 3 after its input ended")
    assert "sink saw the end marker and fails" in p.stdout


def test_slow_consumer_is_not_a_stall() -> None:
    """A frame that takes longer than --drain-timeout is work, not loss: nothing is dropped."""
    p = zflow("up", str(TOPO / "squares.yaml"), "--json", "--set", f"name={unique()}",
              "--drain-timeout", "0.3", "--set", "nodes.ventilator.params.count=400",
              "--scale", "worker=2", "--set", "nodes.worker.run=faulty:slow_square",
              "--set", "nodes.worker.params.delay_us=3000",
              env={"PYTHONPATH": str(TESTS)})
    assert assert_completed(p, done=400)["results"]["results"]["answers"] == 400


def test_sigterm_to_one_replica_is_a_crash_and_it_restarts() -> None:
    name = unique()
    proc = _start_forever(name, "--drain-timeout", "1")
    restarted = threading.Event()

    last = [""]

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            last[0] = line
            if '"restart"' in line and '"node": "mid"' in line:
                restarted.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    mid = [int(x.split(":")[0]) for x in leftovers(name) if " mid.0" in x]
    os.kill(mid[0], signal.SIGTERM)
    assert restarted.wait(20), "a replica stopped by someone else's SIGTERM was not restarted"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    t.join(10)
    assert proc.returncode == 130
    assert '"event": "result"' in last[0] and '"overall": "interrupted"' in last[0], last[0][:500]
    assert leftovers(name) == []


def test_exactly_once_never_restarts_a_dead_sink() -> None:
    name = unique()
    proc = _start_forever(name, "--set", "delivery=exactly-once")
    sink = [int(x.split(":")[0]) for x in leftovers(name) if " sink.0" in x]
    os.kill(sink[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    res = result_of(subprocess.CompletedProcess(proc.args, 1, out, err))
    assert res["message"].startswith("sink.0 died: "), res["message"]
    assert "exactly-once delivery cannot be kept" in res["message"]
    assert res["nodes"]["sink"]["restarts"] == 0
    assert leftovers(name) == []


def test_a_result_msgpack_cannot_carry_is_still_reported() -> None:
    p = run("pipeline.yaml", "--set", "nodes.sink.run=faulty:BigResult")
    res = assert_completed(p, done=100)
    assert res["results"]["sink"] == {"n": 100, "big": str(2**70 + sum(range(100)))}


def test_a_record_msgpack_cannot_carry_fails_clearly() -> None:
    p = run("pipeline.yaml", "--set", "nodes.mid.run=faulty:to_set",
            "--set", "nodes.mid.restart=no")
    assert p.returncode == 1
    out = p.stdout + p.stderr
    # the run's message names the replica and why, in a user's words
    assert re.match(r"mid\.[01] exited with code 1: a record cannot be sent with msgpack "
                    r"\(can not serialize 'set' object\)", result_of(p)["message"])
    assert "Traceback" not in out


def test_exactly_once_with_a_transform_that_drops_a_record() -> None:
    """A record skipped by a transform is acknowledged there: the run ends, nothing is resent."""
    p = run("pipeline.yaml", "--set", "delivery=exactly-once",
            "--set", "nodes.mid.run=faulty:boom", "--set", "nodes.mid.on_error=skip")
    assert p.returncode == 4, p.stdout[-2000:]  # a skipped record: incomplete, not success
    res = result_of(p)
    assert res["progress"]["done"] == 99 and res["losses"]["skipped"] == 1
    assert res["results"]["sink"]["n"] == 99
    assert res["results"]["sink"]["sum"] == sum(range(100)) - 7
    assert res["nodes"]["mid"]["errors"] == 1


def test_raw_records_starting_with_0xff_are_data() -> None:
    p = run("pipeline.yaml", "--set", "nodes.src.run=faulty:jpegs", "--set", "nodes.src.params={}",
            "--set", "nodes.src.sockets.out.codec=raw", "--set", "nodes.mid.sockets.inp.codec=raw",
            "--set", "nodes.mid.sockets.out.codec=raw", "--set", "nodes.sink.sockets.inp.codec=raw",
            "--set", "nodes.sink.run=edges:Count")
    assert assert_completed(p, done=50)["results"]["sink"]["n"] == 50


def test_undecodable_frame_skipped_ends_the_stream_and_says_so() -> None:
    """No replica died, yet records are missing: the stream still ends, with the reason."""
    p = run("pipeline.yaml", "--set", "nodes.mid.run=faulty:int_keys", "--scale", "mid=1",
            "--set", "delivery=best-effort",
            "--set", "nodes.sink.on_error=skip", "--drain-timeout", "0.5")
    assert p.returncode == 4, p.stderr[-2000:]  # records missing: incomplete, never success
    res = result_of(p)
    n = res["results"]["sink"]["n"]
    assert n < 100
    assert res["losses"]["lost"] == 100 - n
    assert res["nodes"]["sink"]["errors"] >= 1
    # the stream ends with the count of what is missing and why
    assert f"{100 - n} of 100 records sent to sink.inp never arrived (dropped as undecodable, or " \
           "lost); ending the stream without them" in res["errors"], res["errors"]


def test_an_undecodable_exactly_once_frame_is_skipped_not_resent_forever() -> None:
    """delivery auto (exactly-once here): the frame's ids can still be read, so its records
    are counted as skipped and acknowledged; resent, they would fail again, forever."""
    p = run("pipeline.yaml", "--set", "nodes.mid.run=faulty:int_keys", "--scale", "mid=1")
    assert p.returncode == 4, p.stderr[-2000:]
    res = result_of(p)
    n = res["results"]["sink"]["n"]
    assert 0 < n < 100  # record 5's frame did not arrive; the others did
    assert res["losses"]["lost"] == 0
    assert res["losses"]["skipped"] == res["nodes"]["sink"]["errors"] == 100 - n
    assert "cannot decode" in p.stdout + p.stderr
