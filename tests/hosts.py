"""Separate hosts on one machine, as Linux namespaces, each running a node of one Ray cluster.

Root only. Each host has

- its own network namespace, with loopback up and a veth into a bridge that
  lives in a namespace of its own, so the machine's own namespace gets no
  address: the private addresses (10.77.0.1, .2, ...) exist only inside;
- its own mount and PID namespaces (``unshare``), with a private ``/tmp``
  and ``/dev/shm``; the project folder is shown on the first host (the
  head, where the server runs) and hidden on the others;
- one ``ray start ... --block`` under a small init (this file's ``boot``)
  that reaps orphans, as a host's init would.

Commands enter a host with ``nsenter --net=/run/netns/NAME`` (not ``ip netns
exec``, which remounts ``/sys`` and hides ``/sys/fs/cgroup``). Teardown
SIGKILLs each host's init, which ends its whole PID namespace, then deletes
the network namespaces. Nothing here runs ``ray stop``.

Example
-------
>>> with Hosts(3, project_dir, logs=tmp_path) as hosts:          # doctest: +SKIP
...     Driver(hosts.address, project_dir, prefix=hosts[0].enter())
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from coverage_files import unmeasured

SUBNET = "10.77.0"
#: Namespaces are named PREFIX + the pid of the process that made them, then -br or -hN.
PREFIX = "sense"
RAY_PORT = 6379
#: Ray's least object store (75 MiB) and a little.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
TOOLS = ("ip", "nsenter", "unshare", "mount")


def missing_requirement() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "namespaced hosts need root"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"namespaced hosts need {', '.join(absent)} (iproute2, util-linux)"
    return None


def _remove_stale_namespaces() -> None:
    """Delete the namespaces that a process now gone made (it was killed before its end)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        found = re.fullmatch(rf"{PREFIX}(\d+)-(br|h\d+)", name)
        if found and not psutil.pid_exists(int(found.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _run(*command: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.strip()}")


class Host:
    """One host: a network namespace, and the mount and PID namespaces of its Ray node."""

    def __init__(self, namespace: str, ip: str) -> None:
        self.namespace = namespace
        self.ip = ip
        self.boot: subprocess.Popen | None = None

    @property
    def init_pid(self) -> int:
        """The host's init (pid 1 inside), as this machine numbers it."""
        return psutil.Process(self.boot.pid).children()[0].pid

    def enter(self, cwd: os.PathLike | None = None) -> list[str]:
        """The command prefix that runs a program on this host (in ``cwd``, as the host sees
        it: entering a mount namespace starts at its root)."""
        init = self.init_pid
        return [
            "nsenter",
            f"--net=/run/netns/{self.namespace}",
            f"--mount=/proc/{init}/ns/mnt",
            f"--pid=/proc/{init}/ns/pid",
            *([f"--wd={cwd}"] if cwd is not None else []),
            "--",
        ]

    def path(self, path: os.PathLike) -> Path:
        """``path`` as this host sees it."""
        return Path(f"/proc/{self.init_pid}/root") / Path(path).relative_to("/")


class Hosts:
    """``count`` hosts running one Ray cluster; the first is its head.

    Parameters
    ----------
    count : int
        How many hosts.
    project_dir : path
        Shown on the head host only.
    logs : path
        Where each host's ``ray start`` writes its output.
    cpus, slots : int
        Each node's CPUs and ``sense_slot`` resources (0: none, as ``ray start`` makes a node).
    """

    def __init__(self, count: int, project_dir, logs, *, cpus: int = 2, slots: int = 0) -> None:
        prefix = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{prefix}-br"
        self.hosts = [Host(f"{prefix}-h{i + 1}", f"{SUBNET}.{i + 1}") for i in range(count)]
        self.project_dir = Path(project_dir)
        self.logs = Path(logs)
        self.cpus = cpus
        self.slots = slots
        self.address = f"{self.hosts[0].ip}:{RAY_PORT}"

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __enter__(self) -> Hosts:
        _remove_stale_namespaces()
        # Each host's init holds the reading end: this process gone, even by SIGKILL, the
        # hosts end with it.
        self._lifeline, self._held = os.pipe()
        try:
            self._network()
            for index, host in enumerate(self.hosts):
                self._start_node(host, head=index == 0)
            self._wait_for_nodes()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        for host in self.hosts:
            if host.boot is None:
                continue
            # pid 1 of a PID namespace ending ends everything in it.
            for init in psutil.Process(host.boot.pid).children():
                init.send_signal(signal.SIGKILL)
            host.boot.kill()
            host.boot.wait()
        for namespace in [host.namespace for host in self.hosts] + [self.bridge]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        os.close(self._lifeline)
        os.close(self._held)

    def _network(self) -> None:
        _run("ip", "netns", "add", self.bridge)
        _run("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts):
            port = f"port{index + 1}"
            _run("ip", "netns", "add", host.namespace)
            _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
            # Both ends made where they live: the machine's own namespace never has them.
            _run(
                "ip", "-n", host.namespace, "link", "add", "eth0", "type", "veth",
                "peer", "name", port, "netns", self.bridge,
            )  # fmt: skip
            _run("ip", "-n", host.namespace, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _run("ip", "-n", host.namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", self.bridge, "link", "set", port, "master", "br0")
            _run("ip", "-n", self.bridge, "link", "set", port, "up")

    def _start_node(self, host: Host, *, head: bool) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        command = [
            ray, "start", "--block",
            "--node-ip-address", host.ip,
            "--num-cpus", str(self.cpus),
            "--object-store-memory", str(OBJECT_STORE_BYTES),
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.slots:
            command += ["--resources", json.dumps({"sense_slot": self.slots})]
        if head:
            command += ["--head", "--port", str(RAY_PORT), "--include-dashboard=false"]
        else:
            command += ["--address", self.address]
        placement = ["--show" if head else "--hide", str(self.project_dir)]
        enter = ["nsenter", f"--net=/run/netns/{host.namespace}"]
        own = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
        # The init writes to `ready` once its mounts are in place: a command entering the
        # host before that would see the machine's /tmp vanish under it mid-start.
        ready_read, ready_write = os.pipe()
        descriptors = ["--lifeline", str(self._lifeline), "--ready", str(ready_write)]
        init = [sys.executable, __file__, "boot", *descriptors, *placement, "--", *command]
        with open(self.logs / f"{host.namespace}.log", "wb") as log:
            host.boot = subprocess.Popen(
                [*enter, *own, *init],
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(self._lifeline, ready_write),
                env={
                    **unmeasured(os.environ),
                    # The node's own environment: a mark of its own, nothing of the head's.
                    "NODE_MARK": host.ip,
                    # `ray start` turns Ray's token authentication on when this machine has
                    # a token (~/.ray/auth_token); drivers given an address do not. These
                    # hosts are reachable from their namespaces only: no token.
                    "RAY_AUTH_MODE": "disabled",
                },
            )
        os.close(ready_write)
        try:
            # One generous bound; an end of file instead of the word: the init failed.
            if not select.select([ready_read], [], [], 60)[0] or not os.read(ready_read, 5):
                raise RuntimeError(f"host {host.namespace} did not boot: see its log")
        finally:
            os.close(ready_read)

    def _wait_for_nodes(self) -> None:
        """Until every node has joined the cluster."""
        waiter = [*self.hosts[0].enter(), sys.executable, __file__, "wait-for-nodes"]
        completed = subprocess.run(
            [*waiter, self.address, str(len(self.hosts))], capture_output=True, text=True
        )
        if completed.returncode:
            raise RuntimeError(f"the Ray cluster did not come up: {completed.stderr[-2000:]}")


# -- run inside a host ------------------------------------------------------------------------


def _mount(*arguments: str, pass_fds: tuple[int, ...] = ()) -> None:
    subprocess.run(["mount", *arguments], check=True, pass_fds=pass_fds)


def _end_at_eof(fd: int) -> None:
    """Block until the maker of these hosts is gone, then end this host (pid 1 exiting
    ends its whole PID namespace)."""
    while os.read(fd, 1):
        pass
    os._exit(1)


def _software() -> list[str]:
    """This checkout and the Python environment, outermost first, none inside another."""
    paths = sorted({str(Path(__file__).resolve().parents[1]), os.path.realpath(sys.prefix)})
    return [p for p in paths if not any(p.startswith(q + "/") for q in paths if q != p)]


def boot(arguments: list[str]) -> int:
    """A host's init: private /tmp and /dev/shm, the project shown or hidden, then the node.

    ``boot --lifeline FD --ready FD --show|--hide PROJECT_DIR -- COMMAND...``; writes
    ``ready`` to the second FD once the mounts are in place and COMMAND started, then runs
    as pid 1, reaping orphans until COMMAND ends, or until the maker of the hosts is gone
    (end of the first FD).
    """
    lifeline, ready = int(arguments[1]), int(arguments[3])
    threading.Thread(target=_end_at_eof, args=(lifeline,), daemon=True).start()
    shown, project_dir = arguments[4] == "--show", arguments[5]
    command = arguments[arguments.index("--") + 1 :]
    # The private /tmp must not hide the software every host runs: this checkout (sense, its
    # tests) and the Python environment, when they live under /tmp (as a CI clone may).
    kept = [path for path in _software() if path.startswith("/tmp/")]
    if shown:
        kept.append(project_dir)
    opened = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in kept}
    _mount("-t", "tmpfs", "tmpfs", "/tmp")
    _mount("-t", "tmpfs", "tmpfs", "/dev/shm")
    for path, fd in opened.items():
        # The new /tmp hid it: bind it again, through the descriptor opened before.
        os.makedirs(path, exist_ok=True)
        os.set_inheritable(fd, True)
        _mount("--no-canonicalize", "--bind", f"/proc/self/fd/{fd}", path, pass_fds=(fd,))
    if not shown and os.path.isdir(os.path.dirname(project_dir)):
        _mount("-t", "tmpfs", "tmpfs", os.path.dirname(project_dir))
    node = subprocess.Popen(command)
    os.write(ready, b"ready")
    os.close(ready)
    while True:
        pid, status = os.wait()
        if pid == node.pid:
            return os.waitstatus_to_exitcode(status)


def wait_for_nodes(address: str, count: str, timeout: float = 120) -> int:
    """Connect to the cluster at ``address``; 0 once ``count`` nodes are up, else 1."""
    import ray

    ray.init(address=address, logging_level="WARNING")
    deadline = time.monotonic() + timeout
    while sum(node["Alive"] for node in ray.nodes()) < int(count):
        if time.monotonic() > deadline:
            print(f"nodes up: {ray.nodes()}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    entry, *rest = sys.argv[1:]
    sys.exit({"boot": boot, "wait-for-nodes": lambda args: wait_for_nodes(*args)}[entry](rest))
