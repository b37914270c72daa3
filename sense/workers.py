"""Launching, listing, stopping and awaiting the worker dashboards of a cluster.

A cluster is one master dashboard and the workers whose ``master_id`` is
the master's id. Every check of the caller's input is made before the first
request, so that bad input never leaves anything half done. Each function
takes the :class:`sense.Client` that sends its requests.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sense import display, environment
from sense.errors import (
    LaunchError,
    SenseAPIError,
    SenseConfigError,
    SenseConnectionError,
    SenseError,
)
from sense.rest import timeout_pair
from sense.status import ACTIVE, Status

if TYPE_CHECKING:
    from sense.client import Client

T = TypeVar("T")

#: How often awaitWorkers asks, at the most (seconds).
POLL_INTERVAL = 0.25
#: How long the clean-up of a failed launch keeps trying an API that fails (seconds).
UNDO_SECONDS = 10.0


def dashboard(raw: dict) -> dict:
    """A dashboard as the API sent it, with the port mapping's JSON string keys made ints again."""
    mapping = raw.get("public_port_mapping")
    if isinstance(mapping, dict):
        raw["public_port_mapping"] = {int(k): int(v) for k, v in mapping.items()}
    return raw


def _id_param(value: Any) -> str:
    """A dashboard id as the caller gave it (int, numeric str or dashboard dict), as text."""
    if isinstance(value, dict) and "id" in value:
        value = value["id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValueError(
            f"{value!r} is not a dashboard id: pass ids (or dashboards) as separate arguments, "
            "as in stopWorkers(3, 4) or stopWorkers(*workers)"
        )
    return str(value)


def _json_id(value: str) -> int | str:
    return int(value) if value.isdigit() else value


# --- running calls side by side ----------------------------------------------------------


@dataclass
class Outcomes:
    """What :func:`concurrently` made of its items."""

    #: The results of the calls that succeeded, in item order.
    results: list
    #: (position, error) of each call that failed, in item order.
    failures: list[tuple[int, SenseError]]
    #: How many items were never started, because a failure stopped the rest.
    not_started: int


def concurrently(
    call: Callable[[Any], Any],
    items: Sequence,
    pool_size: int,
    *,
    stop_at_failure: bool = False,
    on_interrupt: Callable[[list], Any] | None = None,
) -> Outcomes:
    """``call`` on every item, at most ``pool_size`` at once.

    Calls are started one by one as others end, so that memory stays
    bounded by the pool whatever the number of items (``items`` may be a
    ``range`` of millions). With ``stop_at_failure``, no call starts after
    one has failed. Should the wait be interrupted (Ctrl-C in a notebook
    cell, or an error that is no SenseError), no more calls start, the
    running ones are waited for, and ``on_interrupt`` gets the results of
    those that succeeded, to undo them.

    Examples
    --------
    >>> concurrently(lambda x: x * 10, range(3), pool_size=2).results
    [0, 10, 20]
    """
    pool_size = max(1, pool_size)
    results: dict[int, Any] = {}
    failures: dict[int, SenseError] = {}
    started = 0
    with ThreadPoolExecutor(max_workers=min(pool_size, max(1, len(items)))) as pool:
        running: dict[Any, int] = {}
        try:
            while True:
                may_start = not (stop_at_failure and failures)
                while may_start and started < len(items) and len(running) < pool_size:
                    running[pool.submit(call, items[started])] = started
                    started += 1
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        results[index] = future.result()
                    except SenseError as error:
                        failures[index] = error
        except BaseException:
            if on_interrupt is not None:
                finished = [f.result() for f in running if f.exception() is None]
                on_interrupt([results[i] for i in sorted(results)] + finished)
            raise
    return Outcomes(
        results=[results[i] for i in sorted(results)],
        failures=sorted(failures.items()),
        not_started=len(items) - started,
    )


# --- listing -----------------------------------------------------------------------------


def listing(
    client: Client,
    *,
    statuses: Iterable[str] = (),
    master_id: int | str | None = None,
    name: str | None = None,
    timeout: tuple[float, float] | None = None,
) -> list[dict]:
    """The dashboards of the project that pass every filter given.

    The filters go to the server as query parameters (``status``, repeatable;
    ``master_id``; ``name``), so that it sends only what matches, and are
    applied here again: a server that does not know them sends everything.
    """
    statuses = sorted(str(status) for status in statuses)
    params: dict[str, Any] = {"status": statuses} if statuses else {}
    if master_id is not None:
        params["master_id"] = str(master_id)
    if name is not None:
        params["name"] = name
    answer = client.request("GET", "/dashboards", params=params, timeout=timeout)
    return [
        dashboard(raw)
        for raw in answer
        if (not statuses or raw.get("status") in statuses)
        and (master_id is None or str(raw.get("master_id")) == str(master_id))
        and (name is None or raw.get("name") == name)
    ]


def cluster(client: Client) -> list[dict]:
    """The running dashboards of this cluster, master included; see :func:`sense.getWorkers`."""
    master = environment.cluster_master_id()
    return [
        d
        for d in listing(client, statuses=[Status.RUNNING])
        if str(d.get("id")) == master or str(d.get("master_id")) == master
    ]


def master(client: Client) -> dict:
    """The master dashboard of this cluster."""
    master_id = environment.cluster_master_id()
    return dashboard(client.request("GET", f"/dashboards/{master_id}"))


# --- launching ---------------------------------------------------------------------------


def _check_launch_args(
    n: Any, size: Any, engine: Any, startup_script: Any, startup_code: Any, env: Any
) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of workers), not {n!r}")
    if isinstance(size, bool) or not isinstance(size, (str, int)) or size == "":
        raise ValueError(f"size must be a size name such as 'small', or an int, not {size!r}")
    if not isinstance(engine, str) or not engine:
        raise ValueError(f"engine must be the name of an engine, not {engine!r}")
    for name, value in (("startupScript", startup_script), ("startupCode", startup_code)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    if startup_script and startup_code:
        raise ValueError("give startupScript or startupCode, not both")
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a dict of str to str, not {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"env must map str to str: {key!r}: {value!r} does not")
        # What no process can have in its environment (execve refuses it).
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(
                f"env {key!r}: a variable's name must be non-empty and without '=', and "
                "neither name nor value may hold a NUL byte"
            )


def launch(
    client: Client,
    n: int,
    size: str | int,
    engine: str,
    startup_script: str,
    startup_code: str,
    env: Mapping[str, str],
) -> list[dict]:
    """Launch ``n`` workers of this master, all or none; see :func:`sense.launchWorkers`."""
    _check_launch_args(n, size, engine, startup_script, startup_code, env)
    if environment.master_id() is not None:
        raise SenseConfigError(
            f"this dashboard is a worker of {environment.master_id()}: only a master launches "
            "workers"
        )
    # One name for the whole call: a launch whose answer was lost (a dropped
    # connection, a timeout) can still be found by it, and stopped.
    launch_name = f"sense-launch-{secrets.token_hex(6)}"
    body = {
        "name": launch_name,
        "engine": engine,
        "size": size,
        "startup_script": startup_script,
        "startup_code": startup_code,
        "env": dict(env),
        "master_id": _json_id(environment.dashboard_id()),
    }
    # A missing address or credentials are a config error now, not n failed launches.
    client.project_url()
    client.getAuth()

    def launch_one(_: int) -> dict:
        return dashboard(client.request("POST", "/dashboards", json=body))

    def undo(launched: list[dict]) -> tuple[list[dict], list]:
        return undo_launch(client, launch_name, launched)

    # The first failure stops the sending: the call fails anyway, and more
    # launches past a quota would only be more to undo. Interrupted (Ctrl-C),
    # the launches that went through would be given to no one: undo them.
    outcomes = concurrently(
        launch_one, range(n), client.pool_size, stop_at_failure=True, on_interrupt=undo
    )
    if outcomes.failures:
        stopped, not_stopped = undo(outcomes.results)
        raise LaunchError(
            n,
            outcomes.failures,
            stopped,
            not_stopped,
            not_sent=outcomes.not_started,
            name=launch_name,
        )
    return in_request_order(outcomes.results)


def in_request_order(dashboards: list[dict]) -> list[dict]:
    """The dashboards in the order the server received their launches.

    The requests leave together, so the order the server numbered them in
    (ascending ids) is their order; ids that are not numbers keep the order
    of the calls.
    """
    ids = [d.get("id") for d in dashboards]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return sorted(dashboards, key=lambda d: d["id"])
    return dashboards


class Patience:
    """How long a clean-up keeps trying an API that fails; shared by all of its requests.

    A clean-up must not give up at the first fault the way a caller's own
    request does, nor keep waiting for an API that is gone. A request is
    tried again until ``seconds`` have passed without any request of the
    clean-up succeeding. Once the API is known not to answer (no connection
    could be made, after the HTTP layer's own retries; or :meth:`give_up`),
    every request left fails at once, unsent.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.silent: SenseConnectionError | None = None

    def give_up(self) -> None:
        """Send nothing more: the API does not answer (the error that showed it is reported)."""
        self.silent = SenseConnectionError("not sent: the API does not answer", unreachable=True)

    def attempt(self, call: Callable[[], T]) -> T:
        """``call()``, again while the API fails and patience lasts."""
        while True:
            if self.silent is not None:
                raise self.silent
            try:
                result = call()
            except SenseError as error:
                if isinstance(error, SenseAPIError) and 400 <= (error.status_code or 0) < 500:
                    raise  # the API's answer to this request, not a fault of the API
                if getattr(error, "unreachable", False):
                    self.give_up()
                    raise
                if time.monotonic() >= self.deadline:
                    raise
                time.sleep(POLL_INTERVAL)
            else:
                self.deadline = time.monotonic() + self.seconds
                return result


def undo_launch(
    client: Client, launch_name: str, launched: list[dict]
) -> tuple[list[dict], list[tuple[object, SenseError]]]:
    """Stop every dashboard of one launch: those whose answers came, and those whose got lost.

    Returns the stopped dashboards, and (id, error) for any that could not be
    stopped or, with id None, the error that kept the project from being listed.
    """
    patience = Patience(UNDO_SECONDS)
    to_stop = {str(d["id"]) for d in launched}
    not_stopped: list[tuple[object, SenseError]] = []
    # An API that answers lists at once: silence for longer than the patience is an
    # answer too, and the whole launch then ends about one read timeout late, not two.
    connect, read = timeout_pair(client.timeout)
    listing_timeout = (connect, min(read, max(UNDO_SECONDS, connect)))
    try:
        found = patience.attempt(
            lambda: listing(client, statuses=ACTIVE, name=launch_name, timeout=listing_timeout)
        )
        to_stop |= {str(d["id"]) for d in found}
    except SenseError as error:
        not_stopped.append((None, error))
        if isinstance(error, SenseConnectionError):
            patience.give_up()  # no answer to a listing: none to a stop either
    ids = sorted(to_stop, key=lambda i: (len(i), i))  # numeric ids in numeric order
    outcomes = concurrently(
        lambda dashboard_id: patience.attempt(lambda: _stop_one(client, dashboard_id)),
        ids,
        client.pool_size,
    )
    not_stopped += [(_json_id(ids[index]), error) for index, error in outcomes.failures]
    return outcomes.results, not_stopped


# --- stopping and awaiting ---------------------------------------------------------------


def _stop_one(client: Client, dashboard_id: str) -> dict:
    return dashboard(
        client.request("PATCH", f"/dashboards/{dashboard_id}", json={"status": "stopped"})
    )


def stop(client: Client, ids: Iterable[Any]) -> list[dict]:
    """Stop the given workers, or every worker of the cluster; see :func:`sense.stopWorkers`."""
    wanted = [_id_param(value) for value in ids]
    if not wanted:
        # Every worker that has not ended: one still starting would start, and run on, otherwise.
        master_id = environment.cluster_master_id()
        wanted = [str(d["id"]) for d in listing(client, statuses=ACTIVE, master_id=master_id)]
    outcomes = concurrently(lambda i: _stop_one(client, i), wanted, client.pool_size)
    if outcomes.failures:
        raise outcomes.failures[0][1]
    return outcomes.results


def check_timeout(timeout_seconds: Any) -> None:
    """Refuse a ``timeout_seconds`` that is not a finite number >= 0, with ``ValueError``."""
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, (int, float))
        or not math.isfinite(timeout_seconds)
        or timeout_seconds < 0
    ):
        raise ValueError(f"timeout_seconds must be a finite number >= 0, not {timeout_seconds!r}")


def _check_await_args(ids: Any, timeout_seconds: Any) -> None:
    check_timeout(timeout_seconds)
    if isinstance(ids, (str, bytes, int, dict)):
        raise ValueError(
            f"awaitWorkers takes a list of ids or dashboards, not {ids!r}: "
            "awaitWorkers([7]) or awaitWorkers(workers)"
        )


def await_(
    client: Client, ids: Iterable[Any] | None, wait_for_completion: bool, timeout_seconds: float
) -> dict[str, list[dict]]:
    """Wait for workers to run (or end); see :func:`sense.awaitWorkers`."""
    _check_await_args(ids, timeout_seconds)
    master_id = environment.cluster_master_id()
    if ids is None:
        active = listing(client, statuses=ACTIVE, master_id=master_id)
        wanted = [str(d["id"]) for d in active]
    else:
        wanted = [_id_param(value) for value in ids]
    reached = _reached_completion if wait_for_completion else _reached_running
    progress = display.Progress("ended" if wait_for_completion else "running", len(wanted))
    deadline = time.monotonic() + timeout_seconds
    workers: dict[str, dict] = {}
    failures: dict[str, dict] = {}
    last_seen: dict[str, dict] = {}
    pending = wanted
    try:
        while True:
            current = _poll(client, master_id, pending)
            for dashboard_id in pending:
                seen = current.get(
                    dashboard_id, {"id": _json_id(dashboard_id), "status": "unknown"}
                )
                last_seen[dashboard_id] = seen
                verdict = reached(seen)
                if verdict is True:
                    workers[dashboard_id] = seen
                elif verdict is False:
                    failures[dashboard_id] = seen
            progress.update(len(workers), len(failures))
            pending = [i for i in wanted if i not in workers and i not in failures]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
    finally:
        progress.close()
    return {
        "workers": [workers[i] for i in wanted if i in workers],
        "failures": [failures.get(i) or last_seen[i] for i in wanted if i not in workers],
    }


def _poll(client: Client, master_id: str, pending: list[str]) -> dict[str, dict]:
    """The dashboards awaited, by id: from the cluster's listing, else from the project's."""
    current = {str(d["id"]): d for d in listing(client, master_id=master_id)}
    if all(i in current for i in pending):
        return current
    # An id from outside the cluster (its master, another cluster's worker, an unknown one).
    return {str(d["id"]): d for d in listing(client)}


def _reached_running(seen: dict) -> bool | None:
    """True once running (or ended cleanly, so it did run); False once it cannot run; else None."""
    status = seen.get("status")
    if status in (Status.RUNNING, Status.STOPPED):
        return True
    if status in (Status.FAILED, "unknown"):
        return False
    return None


def _reached_completion(seen: dict) -> bool | None:
    """True once ended cleanly; False once failed; else None."""
    status = seen.get("status")
    if status == Status.STOPPED:
        return True
    if status in (Status.FAILED, "unknown"):
        return False
    return None
