"""Hosts emulated with Linux network namespaces, for the multi-host test (test_netns.py).

Each "pod" is a network namespace with one veth into a bridge that lives in a namespace of its
own, an address in a private /24 and no default route; each process in it also gets its own UTS
namespace (its host name). Names resolve as cluster DNS would: `ip netns exec` bind-mounts
/etc/netns/NS/hosts over /etc/hosts, and those files are rewritten in place (same inode, so the
bind mounts see it) whenever a pod comes or goes; resolv.conf points at 127.0.0.1 so an unknown
name never leaves the namespace.

SAFETY (../shared/notes/multi-host-facts.md): nothing here sends traffic from the host namespace
(the test process only runs `ip` and reads pipes); veths are created inside the bridge
namespace, so no interface ever appears on the host; `close()` kills every process and removes
every namespace and /etc/netns entry, and is meant for a `finally`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NETNS_ETC = "/etc/netns"
HOSTS_SIZE = 4096


def ip(*args: str) -> str:
    """Run `ip ARGS`, bounded in time; its stdout (raises on failure)."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout


@dataclass
class Pod:
    name: str
    ns: str
    address: str
    names: list[str]
    procs: list[subprocess.Popen] = field(default_factory=list)


class Cluster:
    def __init__(self, prefix: str, subnet: str = "10.251.7") -> None:
        self.prefix = prefix
        self.subnet = subnet
        self.bridge = f"{prefix}-br"
        self.pods: dict[str, Pod] = {}
        self.created: list[str] = []  # every namespace made, removed at close
        self.made_etc = False
        self.next = 2

    def start(self) -> Cluster:
        self.made_etc = not os.path.isdir(NETNS_ETC)
        ip("netns", "add", self.bridge)
        self.created.append(self.bridge)
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        return self

    def add(self, pod: str, names: Sequence[str]) -> Pod:
        """A new pod (namespace) with a fresh address, known under `names` everywhere."""
        k = self.next
        self.next += 1
        ns = f"{self.prefix}-{k}"
        address = f"{self.subnet}.{k}"
        ip("netns", "add", ns)
        self.created.append(ns)
        ip("-n", self.bridge, "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        ip("-n", self.bridge, "link", "set", f"v{k}", "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        os.makedirs(f"{NETNS_ETC}/{ns}", exist_ok=True)
        with open(f"{NETNS_ETC}/{ns}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\n")
        self.pods[pod] = Pod(pod, ns, address, list(names))
        self._write_hosts()
        return self.pods[pod]

    def unplug(self, pod: str) -> None:
        """Pull the pod's cable: its veth in the bridge goes down, and nothing says so (no FIN,
        no RST reaches anyone)."""
        k = self.pods[pod].ns.rsplit("-", 1)[1]
        ip("-n", self.bridge, "link", "set", f"v{k}", "down")

    def forget_names(self, pod: str) -> None:
        """Its names now lead elsewhere (or nowhere); the pod and its processes stay."""
        self.pods[pod].names = []
        self._write_hosts()

    def remove(self, pod: str) -> None:
        """The pod is gone: its processes are killed, its namespace removed, its names too."""
        p = self.pods.pop(pod)
        self._kill(p)
        self._drop(p.ns)
        self._write_hosts()

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{p.address} {' '.join(p.names)}" for p in self.pods.values() if p.names]
        text = ("\n".join(lines) + "\n").encode()
        # in place (the bind mounts see the same inode), in one write of a fixed size padded
        # with a comment: a process resolving a name meanwhile never finds the file empty
        assert len(text) < HOSTS_SIZE - 2
        data = text + b"#" + b" " * (HOSTS_SIZE - len(text) - 2) + b"\n"
        for p in self.pods.values():
            fd = os.open(f"{NETNS_ETC}/{p.ns}/hosts", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)

    def run(self, pod: str, hostname: str, argv: Sequence[str], env: Mapping[str, str],
            cwd: str) -> subprocess.Popen:
        """Start `argv` in the pod under its own host name (ip and unshare exec it: the Popen
        is the process itself)."""
        p = self.pods[pod]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", p.ns, "unshare", "--uts", "sh", "-c",
             'hostname "$0" && exec "$@"', hostname, *argv],
            env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        p.procs.append(proc)
        return proc

    def routes(self, pod: str) -> str:
        return ip("-n", self.pods[pod].ns, "route", "show")

    def _kill(self, p: Pod) -> None:
        for proc in p.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=10)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def _drop(self, ns: str) -> None:
        try:  # anything still in the namespace (nothing should be)
            for pid in ip("netns", "pids", ns).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except subprocess.SubprocessError:
            pass
        try:
            ip("netns", "del", ns)
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(f"{NETNS_ETC}/{ns}", ignore_errors=True)

    def close(self) -> None:
        for p in list(self.pods.values()):
            self._kill(p)
        self.pods.clear()
        for ns in reversed(self.created):
            self._drop(ns)
        self.created.clear()
        if self.made_etc:
            try:
                os.rmdir(NETNS_ETC)
            except OSError:
                pass


def available() -> str | None:
    """Why network namespaces cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces); CI runs as root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2 / util-linux)"
    probe = f"zfprobe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (subprocess.SubprocessError, OSError) as e:
        return f"cannot create a network namespace here: {getattr(e, 'stderr', e)}"
    try:  # and run a process in it under a host name of its own, as the test will
        subprocess.run(["ip", "netns", "exec", probe, "unshare", "--uts", "sh", "-c",
                        "hostname zfprobe"], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as e:
        return f"cannot run a process in a network namespace here: {getattr(e, 'stderr', e)}"
    finally:
        try:
            ip("netns", "del", probe)
        except subprocess.SubprocessError:
            pass
    return None
