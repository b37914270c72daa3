"""The project's rules: what launching, stopping and listing dashboards do.

This is the state behind the REST API (the routes only translate HTTP to
calls here). The store keeps the dashboards; a backend
(:mod:`sense.local.backends`) places and runs them; this module keeps the
rules: who may launch, the quota, that a master's workers end with it, what
a restart finds. Nothing here knows how or where a dashboard runs.

Example
-------
>>> project = LocalProject(info, store, LocalBackend(directory, state))  # doctest: +SKIP
>>> worker = project.launch(LaunchRequest(startup_code="print(1)", master_id=1))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from sense.local import backends, context
from sense.local.backends import Backend, LaunchSpec, Placement
from sense.local.models import LaunchRequest
from sense.local.statedir import DIRECTORY
from sense.local.store import ACTIVE, Store, now
from sense.status import Status

#: Public fields of a row (the dashboard of the README); the rest is the server's own bookkeeping.
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


class Unprocessable(ProjectError):
    status = 422


class QuotaExceeded(ProjectError):
    status = 429


class LocalProject:
    """The dashboards of one project directory, and what may be done with them.

    Parameters
    ----------
    info : context.Project
        Where the project is and how its API is reached.
    store : Store
        Its dashboards; ones an earlier run left active are ended here.
    backend : Backend
        Where its dashboards run.
    """

    def __init__(self, info: context.Project, store: Store, backend: Backend) -> None:
        self.info = info
        self.store = store
        self.backend = backend
        # Dashboards whose launch is under way: a stop waits for the launch to finish, so
        # that it always has a process to end (no dashboard recorded ended that still runs).
        self._launching: dict[int, threading.Event] = {}
        #: Held to create a dashboard, so that a stop sees it and its launch together.
        self._lock = threading.Lock()
        self._closed = False
        backend.subscribe(self._on_running, self._on_exit)
        self._end_leftovers()

    # -- reading ---------------------------------------------------------------------------------

    def public(self, row: dict) -> dict:
        """A row as the API shows it: a dashboard, as the README describes it."""
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

    def dashboards(self, **filters) -> list[dict]:
        """The dashboards matching ``filters`` (those of :meth:`Store.select`), oldest first."""
        return [self.public(row) for row in self.store.select(**filters)]

    def dashboard(self, dashboard_id: int) -> dict:
        return self.public(self.get(dashboard_id))

    def workers(self, master_id: int) -> list[dict]:
        """The running workers of master ``master_id``."""
        self.get(master_id)
        return self.dashboards(master_id=master_id, status=Status.RUNNING)

    def read_logs(
        self, dashboard_id: int, offset: int = 0, limit: int | None = None
    ) -> tuple[int, Iterator[bytes]]:
        """A dashboard's log size, and at most ``limit`` bytes of its output from byte ``offset``
        (negative: that far from the end), in chunks.

        Nothing while its launch is under way: where its output will be is not known yet, and
        a file an earlier store left under its id is not its output (a follower that read
        those bytes would skip as many of its own).
        """
        self.get(dashboard_id)
        with self._lock:  # taken by _new_row until the launch is noted
            if dashboard_id in self._launching:
                return 0, iter(())
        size = self.backend.log_size(dashboard_id)
        return size, self.backend.read_logs(dashboard_id, offset, limit)

    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        """Wait for a dashboard to end; its exit code, or None if it still runs."""
        return self.backend.wait(dashboard_id, timeout)

    def interrupt(self, dashboard_id: int) -> None:
        """Ctrl-C for a dashboard."""
        self.backend.interrupt(dashboard_id)

    def context(self, row: dict) -> dict[str, str]:
        """The ``SENSE_*`` variables of dashboard ``row``."""
        return context.context(self.info, row)

    # -- launching -------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> dict:
        """Start a dashboard as the API's ``POST`` asks; a worker when ``master_id`` is given."""
        refusal = self.backend.refusal(request.engine, request.size)
        if refusal is not None:
            raise Unprocessable(refusal)
        if request.startup_script:
            self._check_script(request.startup_script)
        fields = request.model_dump()
        fields["name"] = fields["name"] or ("worker" if request.master_id else "master")
        limit = self.backend.capacity()
        row = self._new_row("api", fields, limit=limit, master_id=request.master_id)
        if row is None:
            raise QuotaExceeded(
                f"{limit} dashboards are running, the most this server allows (raise it with "
                "`sense server --max-workers N` or the backend's own setting)"
            )
        spec = LaunchSpec(
            row["id"],
            row["name"],
            context=lambda placement: self.context(_placed(row, placement)),
            engine=row["engine"],
            size=row["size"],
            code=row["startup_code"],
            script=row["startup_script"],
            env=row["env"],
        )
        return self.public(self._start(row, spec))

    def run_master(self, script: str, argv: list[str]) -> dict:
        """Run ``script`` as a master dashboard that shares the server's console."""
        name = script.rsplit("/", 1)[-1]
        row = self._new_row("console", {"name": name, "startup_script": script})
        spec = LaunchSpec(
            row["id"],
            name,
            context=lambda placement: self.context(_placed(row, placement)),
            script=script,
            argv=argv,
            console=True,
        )
        return self.public(self._start(row, spec))

    def attach_master(self) -> dict:
        """Make the server's own process a master dashboard; returns it.

        Its ``SENSE_*`` variables are :meth:`context` of it.
        """
        row = self._new_row("attached", {"name": "local master"})
        placement = self.backend.attach(row["id"])
        row = self.store.update(
            row["id"], status=Status.RUNNING, started_at=now(), **_placement_fields(placement)
        )
        self._launched(row["id"])
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
        state = os.path.join(project, DIRECTORY)
        if os.path.commonpath([state, path]) == state:
            # The token, the database and the logs: no dashboard runs what is kept there.
            raise Unprocessable(
                f"startup_script: {script!r} is in the project's state folder {state}, which "
                "holds the server's own files: it should be a Python file of the project"
            )
        if not os.path.isfile(path):
            problem = "a directory" if os.path.isdir(path) else "not there"
            raise Unprocessable(
                f"startup_script: {script!r} is {problem}: it should be a Python file in the "
                "project folder"
            )

    def _check_master(self, master_id: int) -> None:
        master = self.store.get(master_id)
        if master is None or master["status"] != Status.RUNNING:
            raise Conflict(f"dashboard {master_id} is not a running master: cannot launch under it")
        if master["master_id"] is not None:
            raise Conflict(
                f"dashboard {master_id} is a worker of {master['master_id']}: only a master "
                "launches workers"
            )

    def _new_row(
        self, kind: str, fields: dict, limit: int | None = None, master_id: int | None = None
    ) -> dict | None:
        """Store a new dashboard, ``starting``, and note that its launch is under way.

        Under the lock, with the master's check: a master's end is recorded under it too,
        so a worker launched under it is either stored before (and stopped with it) or
        refused (its master is not running).
        """
        with self._lock:
            if self._closed:
                raise Conflict("the server is stopping: it launches nothing more")
            if master_id is not None:
                self._check_master(master_id)
            row = self.store.insert(
                status=Status.STARTING,
                kind=kind,
                limit=None if limit is None else ("api", limit),
                **fields,
            )
            if row is not None:
                self._launching[row["id"]] = threading.Event()
        return row

    def _start(self, row: dict, spec: LaunchSpec) -> dict:
        try:
            placement = self.backend.launch(spec)
        except OSError as error:
            self.store.end(row["id"], Status.FAILED, None)
            # A full cluster is answered as the quota is: try again once some have ended.
            refused = QuotaExceeded if isinstance(error, backends.NoRoomError) else ProjectError
            raise refused(f"dashboard {row['id']} could not start: {error}") from error
        finally:
            self._launched(row["id"])
        # The process may have reported running, or even ended, by now: only add the placement.
        return self.store.update(row["id"], **_placement_fields(placement))

    def _launched(self, dashboard_id: int) -> None:
        with self._lock:
            self._launching.pop(dashboard_id).set()

    # -- stopping --------------------------------------------------------------------------------

    def stop(self, dashboard_id: int) -> dict:
        """Stop a dashboard (and, if it is a master, its workers); stopping an ended one is fine."""
        with self._lock:
            launching = self._launching.get(dashboard_id)
        if launching is not None:
            launching.wait()  # the backend knows it once this is set: it can stop it
        row = self.get(dashboard_id)
        if row["kind"] == "attached" and row["status"] in ACTIVE:
            raise Conflict(
                f"dashboard {dashboard_id} is the process that runs this server: end it with "
                "sense.local.stop() or by stopping the server"
            )
        if row["status"] in ACTIVE:
            self.backend.stop(dashboard_id)
            # A dashboard whose process never came up has no end to report: record it here.
            self.store.update(
                dashboard_id, only_if_status=ACTIVE, status=Status.STOPPED, stopped_at=now()
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
        self.backend.shutdown()
        for row in self.store.select(status=ACTIVE):
            self.store.update(
                row["id"], only_if_status=ACTIVE, status=Status.STOPPED, stopped_at=now()
            )

    def _stop_workers_of(self, master_id: int) -> None:
        workers = self.store.select(master_id=master_id, status=ACTIVE)
        threads = [threading.Thread(target=self.stop, args=(w["id"],)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- what the backend reports ----------------------------------------------------------------

    def _on_running(self, dashboard_id: int) -> None:
        self.store.update(
            dashboard_id, only_if_status=(Status.STARTING,), status=Status.RUNNING, started_at=now()
        )

    def _on_exit(self, dashboard_id: int, exit_code: int | None, reason: str) -> None:
        ended_well = reason == "stopped" or exit_code == 0
        status = Status.STOPPED if ended_well else Status.FAILED
        with self._lock:  # see _new_row
            row = self.store.end(dashboard_id, status, exit_code)
        if row is not None and row["master_id"] is None:
            # A master's workers end with it; not in this thread, which the backend needs.
            threading.Thread(target=self._stop_workers_of, args=(dashboard_id,)).start()

    def _end_leftovers(self) -> None:
        """Dashboards an earlier run left active: end their processes, and say so."""
        leftovers = self.store.select(status=ACTIVE)
        handles: dict[str, list[dict]] = {}
        for row in leftovers:
            if row["kind"] != "attached":
                # Handles from before backends had names were all local ones.
                handles.setdefault(row["handle"].get("backend", "local"), []).append(row["handle"])
        for name, of_backend in handles.items():
            backends.load(name).recover(of_backend)
        for row in leftovers:
            status = Status.STOPPED if row["kind"] == "attached" else Status.FAILED
            self.store.update(row["id"], status=status, stopped_at=now())


def _placement_fields(placement: Placement) -> dict:
    """The store's fields for a placement."""
    return {
        "handle": placement.handle,
        "project_ip": placement.project_ip,
        "public_port_mapping": {
            str(private): public for private, public in placement.ports.items()
        },
    }


def _placed(row: dict, placement: Placement) -> dict:
    """``row`` as it is once placed: what the dashboard context is built from."""
    return {**row, **_placement_fields(placement)}
