"""The local project's behaviour: what launching, stopping and listing dashboards do.

This is the state behind the REST API (the routes only translate HTTP to calls
here): the store keeps the dashboards, the supervisor runs them, and this
module keeps the rules — who may launch, the quota, that a master's workers
end with it, and what a restart finds.

Example
-------
>>> project = LocalProject(info, store, LocalProcessSupervisor)  # doctest: +SKIP
>>> worker = project.launch(LaunchRequest(startup_code="print(1)", master_id=1))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

from sense.errors import SenseConfigError
from sense.local import context
from sense.local.models import LaunchRequest
from sense.local.store import ACTIVE, Store, now
from sense.local.supervisor import Job

ENDED = ("stopped", "failed")
QUOTA_VARIABLE = "SENSE_LOCAL_MAX_WORKERS"
#: Public fields of a row (SPEC §3); the rest is the server's own bookkeeping.
_PUBLIC = (
    "id",
    "name",
    "engine",
    "size",
    "status",
    "master_id",
    "startup_script",
    "startup_code",
    "env",
    "project_ip",
    "public_port_mapping",
    "exit_code",
    "created_at",
    "started_at",
    "stopped_at",
)


class ProjectError(Exception):
    """A request the project refuses; ``status`` is the HTTP status that says why."""

    status = 400


class NotFound(ProjectError):
    status = 404


class Conflict(ProjectError):
    status = 409


class QuotaExceeded(ProjectError):
    status = 429


class Unprocessable(ProjectError):
    status = 422


def default_quota() -> int:
    """How many dashboards may run at once: ``SENSE_LOCAL_MAX_WORKERS``, else 4 per CPU, 8 at least.

    Idle workers cost memory, not CPU, so a few per core is safe.
    """
    configured = os.environ.get(QUOTA_VARIABLE, "").strip()
    if configured:
        if not configured.isdigit():
            raise SenseConfigError(f"{QUOTA_VARIABLE} should be a number, not {configured!r}")
        return int(configured)
    return max(8, 4 * (os.cpu_count() or 1))


class LocalProject:
    """The dashboards of one project directory, and what may be done with them.

    Parameters
    ----------
    info : context.Project
        Where the project is and how its API is reached.
    store : Store
        Its dashboards; ones an earlier run left active are ended here.
    supervisor_factory : callable(on_running, on_exit) -> Supervisor
        Makes the supervisor that runs the dashboards, given this project's callbacks.
    max_workers : int, optional
        The quota on dashboards launched through the API and running at once.
    """

    def __init__(
        self, info: context.Project, store: Store, supervisor_factory, *, max_workers=None
    ):
        self.info = info
        self.store = store
        self.max_workers = default_quota() if max_workers is None else max_workers
        self.supervisor = supervisor_factory(self._on_running, self._on_exit)
        #: Held to create a dashboard, so that a stop sees it and its launch together.
        self._lock = threading.Lock()
        #: Dashboards stored but not yet handed to the supervisor: set once they are.
        self._launching: dict[int, threading.Event] = {}
        self._closed = False
        self._end_leftovers()

    # -- reading -------------------------------------------------------------------------------

    def public(self, row: dict) -> dict:
        """A row as the API shows it (SPEC §3)."""
        shown = {name: row[name] for name in _PUBLIC}
        shown.update(
            project_id=self.info.project_id,
            owner_id=self.info.owner_id,
            public_dns=context.PUBLIC_DNS,
        )
        return shown

    def get(self, dashboard_id: int) -> dict:
        row = self.store.get(dashboard_id)
        if row is None:
            raise NotFound(f"no dashboard {dashboard_id} in project {self.info.project_id}")
        return row

    def dashboards(self, *, status=None, master_id=None, name=None, after=None) -> list[dict]:
        """The dashboards matching every filter given (a tuple: any of), oldest first."""
        rows = self.store.select(status=status, master_id=master_id, name=name, after=after)
        return [self.public(row) for row in rows]

    def dashboard(self, dashboard_id: int) -> dict:
        return self.public(self.get(dashboard_id))

    def workers(self, master_id: int) -> list[dict]:
        """The running workers of master ``master_id``."""
        self.get(master_id)
        return [
            self.public(row) for row in self.store.select(master_id=master_id, status="running")
        ]

    def logs(self, dashboard_id: int, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """The log's size, and its bytes from ``offset`` (negative: from the end), in chunks."""
        self.get(dashboard_id)
        return self.supervisor.read_log(dashboard_id, offset)

    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        """Wait for a dashboard's job to end; its exit code, or None if it still runs."""
        return self.supervisor.wait(dashboard_id, timeout)

    def interrupt(self, dashboard_id: int) -> None:
        """Ctrl-C for a dashboard's job."""
        self.supervisor.interrupt(dashboard_id)

    def environment(self, row: dict) -> dict[str, str]:
        """The whole environment of dashboard ``row``: this process's plus the dashboard's."""
        return context.environment(dict(os.environ), self.info, row)

    # -- launching -----------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> dict:
        """Start a dashboard as the API's ``POST`` asks; a worker when ``master_id`` is given."""
        if request.startup_script:
            self._check_script(request.startup_script)
        with self._lock:
            self._check_open()
            if request.master_id is not None:
                self._check_master(request.master_id)
            running = len(self.store.select(kind="api", status=ACTIVE))
            if running >= self.max_workers:
                raise QuotaExceeded(
                    f"{running} dashboards are running, the most this server allows "
                    f"(raise it with `sense server --max-workers N` or {QUOTA_VARIABLE})"
                )
            fields = request.model_dump()
            fields["name"] = fields["name"] or ("worker" if request.master_id else "master")
            row = self._new_row("api", fields)
        job = Job(code=row["startup_code"], script=row["startup_script"])
        return self.public(self._start(row, job))

    def run_master(self, script: str, argv: list[str]) -> dict:
        """Run ``script`` as a master dashboard that shares this process's console."""
        with self._lock:
            self._check_open()
            fields = {"name": os.path.basename(script), "startup_script": script}
            row = self._new_row("console", fields)
        return self.public(self._start(row, Job(script=script, argv=argv, console=True)))

    def attach_master(self) -> dict:
        """Make this very process a master dashboard; returns it. Its environment is
        :meth:`environment` of it."""
        row = self.store.insert(status="starting", kind="attached", name="local master")
        row = self._give_address(row)
        row = self.store.update(
            row["id"], status="running", started_at=now(), handle={"pid": os.getpid()}
        )
        return self.public(row)

    def _check_script(self, script: str) -> None:
        """A 422 naming the field unless ``script`` is a file in the project folder."""
        if "\0" in script:
            raise Unprocessable(f"startup_script: {script!r} holds a NUL character, as no path may")
        project = os.path.realpath(self.info.directory)
        path = os.path.realpath(os.path.join(project, script))
        if os.path.commonpath([project, path]) != project:
            raise Unprocessable(
                f"startup_script: {script!r} is not in the project folder {project}"
            )
        if not os.path.isfile(path):
            problem = "a directory" if os.path.isdir(path) else "not there"
            raise Unprocessable(
                f"startup_script: {script!r} is {problem}: it should be a Python file in the "
                "project folder"
            )

    def _check_master(self, master_id: int) -> None:
        master = self.store.get(master_id)
        if master is None or master["status"] != "running":
            raise Conflict(f"dashboard {master_id} is not a running master: cannot launch under it")
        if master["master_id"] is not None:
            raise Conflict(
                f"dashboard {master_id} is a worker of {master['master_id']}: only a master "
                "launches workers"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise Conflict("the server is stopping: it launches nothing more")

    def _new_row(self, kind: str, fields: dict) -> dict:
        """Store a dashboard to launch; the caller holds the lock and then calls :meth:`_start`.

        Until :meth:`_start` has handed it to the supervisor, a stop waits for it (see
        :meth:`stop`): a stop at any moment of a launch ends the process it starts.
        """
        row = self.store.insert(status="starting", kind=kind, **fields)
        self._launching[row["id"]] = threading.Event()
        return self._give_address(row)

    def _give_address(self, row: dict) -> dict:
        port = _free_port()
        return self.store.update(
            row["id"],
            project_ip=context.project_ip(row["id"]),
            public_port_mapping={str(port): port},
        )

    def _start(self, row: dict, job: Job) -> dict:
        try:
            job.env = self.environment(row)
            handle = self.supervisor.launch(row["id"], job)
        except OSError as error:
            self.store.update(row["id"], status="failed", stopped_at=now())
            raise ProjectError(f"dashboard {row['id']} could not start: {error}") from error
        finally:
            with self._lock:
                self._launching.pop(row["id"]).set()
        return self.store.update(row["id"], handle=handle)

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, dashboard_id: int) -> dict:
        """Stop a dashboard (and, if it is a master, its workers); stopping an ended one is fine.

        Returns once its process has ended, and only then records it ended.
        """
        with self._lock:
            launch = self._launching.get(dashboard_id)
        if launch is not None:
            launch.wait()  # the supervisor knows it once this is set: it can stop it
        row = self.get(dashboard_id)
        if row["kind"] == "attached" and row["status"] in ACTIVE:
            raise Conflict(
                f"dashboard {dashboard_id} is the process that runs this server: end it with "
                "sense.local.stop() or by stopping the server"
            )
        if row["status"] in ACTIVE:
            self.supervisor.stop(dashboard_id)
            # A job that never came up has nothing to report its end: record it here.
            self.store.update(
                dashboard_id, only_if_status=ACTIVE, status="stopped", stopped_at=now()
            )
        self._stop_workers_of(dashboard_id)
        return self.dashboard(dashboard_id)

    def shutdown(self) -> None:
        """Stop every dashboard; the attached master, if any, is marked stopped."""
        with self._lock:
            self._closed = True  # what launches now is refused; what is launching, awaited
            launches = list(self._launching.values())
        for launch in launches:
            launch.wait()
        self.supervisor.shutdown()
        for row in self.store.select(status=ACTIVE):
            self.store.update(row["id"], only_if_status=ACTIVE, status="stopped", stopped_at=now())

    def _stop_workers_of(self, master_id: int) -> None:
        workers = self.store.select(master_id=master_id, status=ACTIVE)
        threads = [threading.Thread(target=self.stop, args=(w["id"],)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- what the supervisor reports -----------------------------------------------------------

    def _on_running(self, dashboard_id: int) -> None:
        self.store.update(
            dashboard_id, only_if_status=("starting",), status="running", started_at=now()
        )

    def _on_exit(self, dashboard_id: int, exit_code: int, stopped: bool) -> None:
        status = "stopped" if stopped or exit_code == 0 else "failed"
        # Under the lock: a worker launch under this master is stored either before (and
        # stopped below) or after (and refused: the master is not running).
        with self._lock:
            row = self.store.update(
                dashboard_id,
                only_if_status=ACTIVE,
                status=status,
                exit_code=exit_code,
                stopped_at=now(),
            )
        if row is not None and row["exit_code"] is None:
            self.store.update(dashboard_id, exit_code=exit_code)
        if row is not None and row["master_id"] is None:
            # A master's workers end with it; not in this thread, which the supervisor needs.
            threading.Thread(target=self._stop_workers_of, args=(dashboard_id,)).start()

    def _end_leftovers(self) -> None:
        """Dashboards an earlier run left active: end their processes, and say so."""
        leftovers = self.store.select(status=ACTIVE)
        self.supervisor.cleanup(row["handle"] for row in leftovers if row["kind"] != "attached")
        for row in leftovers:
            status = "stopped" if row["kind"] == "attached" else "failed"
            self.store.update(row["id"], status=status, stopped_at=now())


def _free_port() -> int:
    """A TCP port free on every address at this moment."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
