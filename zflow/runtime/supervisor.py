"""The supervisor: one loop that joins the control plane, the launcher and the coordinator.

One thread, one poll: the control ROUTER, every replica's stdout/stderr pipe, the fork server's
exit reports and a signal wake-up pipe are polled together, so there are no locks and the status
model is written from this thread only. Everything the loop learns goes to the coordinator, which
decides; what it decides is carried out here (control messages) or by the launcher (processes).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import zmq

from zflow import rundir
from zflow.plan import Plan
from zflow.records import record
from zflow.runtime.control import ControlServer
from zflow.runtime.coordinator import Coordinator, Options
from zflow.runtime.launchers.forkserver import Zygote
from zflow.runtime.launchers.local import LocalLauncher, make_run_dir

__all__ = ["Options", "Remote", "Supervisor"]
#: how often a remote run checks that every replica's control link is still up (s)
LINK_CHECK = 0.5


@record
class Remote:
    """A run whose replicas start elsewhere and join: where the control plane listens, its
    CURVE keys (keys.Keys, None on loopback only) and ZMTP heartbeats (interval, timeout ms)."""

    listen: str
    keys: Any = None
    heartbeat: tuple[int, int] = (1000, 5000)


class Supervisor:
    def __init__(self, plan: Plan, model: Any, view: Any, opts: Options,
                 zygote: Zygote | None = None, remote: Remote | None = None) -> None:
        self.plan = plan
        self.remote = remote
        #: told where the control plane listens (a remote one's port may be the OS's choice)
        self.on_listen: Any = None
        self.model = model
        self.view = view
        self.opts = opts
        self.zygote = zygote
        self.interrupts = 0
        #: --watch: a zflow.runtime.watch.Watcher, polled once a second
        self.watcher: Any = None

    def run(self) -> int:
        if self.remote is None:  # a remote run has no ipc endpoints: no run directory
            make_run_dir(self.plan)
            try:
                self.control = ControlServer(f"ipc://{self.plan.run_dir}/control")
            except BaseException:  # nothing runs yet: nothing else to undo
                rundir.remove(self.plan.run_dir)
                raise
        else:
            self.control = ControlServer(self.remote.listen, curve=self.remote.keys,
                                         heartbeat=self.remote.heartbeat)
            if self.on_listen is not None:
                self.on_listen(self.control.endpoint)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old = {sig: signal.signal(sig, self._on_signal)
               for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        signal.set_wakeup_fd(wake_w)
        self.launcher: Any = None
        if self.zygote is not None:  # Ctrl-C while a preloaded node imports its module
            self.zygote.interrupted = lambda: self.interrupts > 0
        try:
            if self.remote is None:
                self.launcher = LocalLauncher(self.control.endpoint, self.zygote,
                                              run_dir=self.plan.run_dir)
            else:
                from zflow.runtime.launchers.remote import RemoteLauncher

                self.launcher = RemoteLauncher()
            self.coord = Coordinator(self.plan, self.model, self.launcher, self.opts)
            if self.remote is not None:  # signals travel as control messages
                slots = self.coord.slots
                self.launcher.attach(
                    self.control.send,
                    lambda rid: slots[rid].identity if slots[rid].pid is not None else None)
            self.launcher.on_line = self.coord.output
            return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(-1)
            for sig, h in old.items():
                signal.signal(sig, h)
            if self.launcher is not None:
                self.launcher.kill_all()
                self.launcher.close()
            self.control.close()
            os.close(wake_r)
            os.close(wake_w)
            rundir.remove(self.plan.run_dir)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.interrupts += 1

    def _loop(self, wake_r: int) -> int:
        coord, launcher, control = self.coord, self.launcher, self.control
        assert launcher is not None
        self.view.start()
        coord.start(time.monotonic())
        self._flush()
        next_refresh = next_links = 0.0
        # the first look at /proc a second in: at the start nothing can have left its replica's
        # group yet, and reading every process's stat there was CPU taken from the forks
        next_sample = time.monotonic() + 1.0
        seen_interrupts = 0
        poller = zmq.Poller()
        poller.register(control.router, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        zfd = launcher.zygote_fd()
        if zfd is not None:
            poller.register(zfd, zmq.POLLIN)
        watched: set[int] = set()
        while not coord.done:
            for fd in launcher.fds():
                if fd not in watched:
                    poller.register(fd, zmq.POLLIN)
                    watched.add(fd)
            timeout = 100 if coord.phase.value == "running" else 50
            for sock, _ in poller.poll(timeout):
                if sock is control.router:
                    now = time.monotonic()
                    for ident, data, user in control.receive():
                        coord.received(ident, data, now, user)
                elif sock == zfd:
                    try:
                        launcher.pump()
                    except OSError:
                        poller.unregister(zfd)
                        zfd = None
                        coord.launcher_failed("the zflow fork server exited unexpectedly; Python "
                                              "replicas cannot be started or restarted")
                elif sock == wake_r:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                elif sock in watched and not launcher.read(sock):
                    poller.unregister(sock)
                    watched.discard(sock)
            now = time.monotonic()
            while seen_interrupts < self.interrupts:
                seen_interrupts += 1
                coord.interrupt(now)
            for rid, code, usage in launcher.reap():
                if usage is not None:
                    slot = coord.slots[rid]
                    self.model.replica_usage(slot.node, slot.index, usage.cpu, usage.maxrss)
                coord.exited(rid, code, now)
            if control.remote and now >= next_links:
                # stopping, every exit is awaited: look more often
                next_links = now + (LINK_CHECK if coord.phase.value != "stopping" else 0.1)
                for ident in coord.links():
                    if not control.reachable(ident):
                        coord.link_lost(ident, now)
            for rid, endpoints, expected in coord.awaiting_connections():
                if launcher.connected(endpoints, expected):
                    coord.connections_ready(rid)
            for rid, endpoints in coord.awaiting_endpoints():
                if launcher.endpoints_accept(endpoints):
                    coord.endpoints_ready(rid)
            launcher.flush_partial(now)
            coord.tick(now)
            self._flush()
            for fd in list(watched):
                if fd not in launcher.fd_proc:
                    poller.unregister(fd)
                    watched.discard(fd)
            if now >= next_sample:
                next_sample = now + 1.0
                if self.watcher is not None:
                    self._watch(now)
                launcher.adopt()
                for rid, pid, cpu, rss, cpu_s in launcher.sample(now):
                    slot = coord.slots[rid]
                    self.model.replica_proc(slot.node, slot.index, pid, cpu, rss, cpu_s)
            if now >= next_refresh:
                next_refresh = now + self.opts.refresh
                self.view.refresh()
        code = coord.finish()
        self.view.close()
        return code

    def _watch(self, now: float) -> None:
        changes = self.watcher.poll()
        for note in changes.notes:
            self.model.error(f"--watch: {note}")
        for node, why in changes.reloads:
            self.coord.reload(node, now, why)
        for node, replicas in changes.scales:
            before = self.plan.nodes[node].replicas
            why = self.coord.scale_up(node, replicas, now)
            if why is not None:
                self.model.error(f"--watch: {node}: replicas {before} → {replicas}: not "
                                 f"applied: {why} (restart the run)")

    def _flush(self) -> None:
        for ident, kind, fields in self.coord.take():
            self.control.send(ident, kind, fields)
