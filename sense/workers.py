"""Launching, listing, stopping and awaiting the worker dashboards of a cluster.

A cluster is one master dashboard and the workers whose ``master_id`` is
the master's id. Every check of the caller's input is made before the first
request, so that bad input never leaves anything half done.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sense import display, environment, rest
from sense.errors import LaunchError, SenseAPIError, SenseConfigError, SenseError

#: Statuses of a dashboard whose process has ended.
ENDED = frozenset({"stopped", "failed"})
#: How often awaitWorkers asks, at the most (seconds).
POLL_INTERVAL = 0.25
#: How long a failed launch keeps trying to stop what it launched (seconds).
UNDO_SECONDS = 30.0


def dashboards_url() -> str:
    return f"{environment.project_url()}/dashboards"


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


def concurrently(
    call: Callable[[Any], Any],
    items: list,
    pool_size: int,
    on_interrupt: Callable[[list], Any] | None = None,
) -> list[tuple[Any, SenseError | None]]:
    """``call`` on every item, at most ``pool_size`` at once; (result, error) pairs in item order.

    Should the wait be interrupted (Ctrl-C in a notebook cell), the calls not
    yet started are cancelled, the running ones are waited for, and
    ``on_interrupt`` gets the results of those that succeeded, to undo them.
    """
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(pool_size, len(items)))) as pool:
        futures = [pool.submit(call, item) for item in items]
        try:
            return [_outcome(future) for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            if on_interrupt is not None:
                on_interrupt(
                    [f.result() for f in futures if not f.cancelled() and f.exception() is None]
                )
            raise


def _outcome(future: Future) -> tuple[Any, SenseError | None]:
    try:
        return future.result(), None
    except SenseError as error:
        return None, error


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


def launch(
    n: int,
    size: str | int,
    engine: str,
    startup_script: str,
    startup_code: str,
    env: Mapping[str, str],
    pool_size: int,
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
    url = dashboards_url()
    environment.auth()  # missing credentials are a config error now, not n failed launches

    def launch_one(_: int) -> dict:
        return dashboard(rest.request("POST", url, json=body))

    def undo(launched: list[dict]) -> tuple[list[dict], list]:
        return undo_launch(launch_name, launched, pool_size)

    # Interrupted (Ctrl-C), the launches that went through would be given to no one: undo them.
    outcomes = concurrently(launch_one, list(range(n)), pool_size, undo)
    launched = [result for result, error in outcomes if error is None]
    failures = [(index, error) for index, (_, error) in enumerate(outcomes) if error is not None]
    if failures:
        stopped, not_stopped = undo(launched)
        raise LaunchError(n, failures, stopped, not_stopped)
    return in_request_order(launched)


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


def undo_launch(
    launch_name: str, launched: list[dict], pool_size: int
) -> tuple[list[dict], list[tuple[object, SenseError]]]:
    """Stop every dashboard of one launch: those whose answers came, and those whose got lost.

    Returns the stopped dashboards, and (id, error) for any that could not be
    stopped or, with id None, the error that kept the project from being listed.
    """
    to_stop = {str(d["id"]) for d in launched}
    not_stopped: list[tuple[object, SenseError]] = []
    try:
        to_stop |= patiently(
            lambda: {
                str(d["id"])
                for d in all_dashboards()
                if d.get("name") == launch_name and d.get("status") not in ENDED
            }
        )
    except SenseError as error:
        not_stopped.append((None, error))
    outcomes = concurrently(
        lambda dashboard_id: patiently(lambda: _stop_one(dashboard_id)), sorted(to_stop), pool_size
    )
    stopped = [result for result, error in outcomes if error is None]
    not_stopped += [
        (_json_id(dashboard_id), error)
        for dashboard_id, (_, error) in zip(sorted(to_stop), outcomes, strict=True)
        if error is not None
    ]
    return stopped, not_stopped


def patiently(call: Callable[[], Any], seconds: float | None = None) -> Any:
    """``call()``, tried again for up to ``seconds`` while the API is unreachable or failing.

    For clean-ups, which must not give up at the first fault the way a
    caller's own request does.
    """
    deadline = time.monotonic() + (UNDO_SECONDS if seconds is None else seconds)
    while True:
        try:
            return call()
        except SenseError as error:
            client_error = (
                isinstance(error, SenseAPIError) and 400 <= (error.status_code or 0) < 500
            )
            if client_error or time.monotonic() >= deadline:
                raise
            time.sleep(POLL_INTERVAL)


def _stop_one(dashboard_id: str) -> dict:
    return dashboard(
        rest.request("PATCH", f"{dashboards_url()}/{dashboard_id}", json={"status": "stopped"})
    )


def all_dashboards() -> list[dict]:
    """Every dashboard of the project, whatever its status."""
    return [dashboard(raw) for raw in rest.request("GET", dashboards_url())]


def cluster() -> list[dict]:
    """The running dashboards of this cluster, master included; see :func:`sense.getWorkers`."""
    master = environment.cluster_master_id()
    return [
        d
        for d in all_dashboards()
        if d.get("status") == "running"
        and (str(d.get("id")) == master or str(d.get("master_id")) == master)
    ]


def master() -> dict:
    """The master dashboard of this cluster."""
    master_id = environment.cluster_master_id()
    return dashboard(rest.request("GET", f"{dashboards_url()}/{master_id}"))


def stop(ids: Iterable[Any], pool_size: int) -> list[dict]:
    """Stop the given workers, or every worker of the cluster; see :func:`sense.stopWorkers`."""
    wanted = [_id_param(value) for value in ids]
    if not wanted:
        master_id = environment.cluster_master_id()
        wanted = [str(d["id"]) for d in cluster() if str(d["id"]) != master_id]
    outcomes = concurrently(_stop_one, wanted, pool_size)
    errors = [error for _, error in outcomes if error is not None]
    if errors:
        raise errors[0]
    return [result for result, _ in outcomes]


def await_(
    ids: Iterable[Any] | None, wait_for_completion: bool, timeout_seconds: float
) -> dict[str, list[dict]]:
    """Wait for workers to run (or end); see :func:`sense.awaitWorkers`."""
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, (int, float))
        or (timeout_seconds < 0)
    ):
        raise ValueError(f"timeout_seconds must be a number >= 0, not {timeout_seconds!r}")
    if ids is None:
        master_id = environment.cluster_master_id()
        wanted = [
            str(d["id"])
            for d in all_dashboards()
            if str(d.get("master_id")) == master_id and d.get("status") not in ENDED
        ]
    else:
        wanted = [_id_param(value) for value in ids]
    reached = _reached_completion if wait_for_completion else _reached_running
    progress = display.Progress("ended" if wait_for_completion else "running", len(wanted))
    deadline = time.monotonic() + timeout_seconds
    workers: dict[str, dict] = {}
    failures: dict[str, dict] = {}
    last_seen: dict[str, dict] = {}
    try:
        while True:
            current = {str(d["id"]): d for d in all_dashboards()}
            for dashboard_id in wanted:
                if dashboard_id in workers or dashboard_id in failures:
                    continue
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


def _reached_running(seen: dict) -> bool | None:
    """True once running (or ended cleanly, so it did run); False once it cannot run; else None."""
    status = seen.get("status")
    if status in ("running", "stopped"):
        return True
    if status in ("failed", "unknown"):
        return False
    return None


def _reached_completion(seen: dict) -> bool | None:
    """True once ended cleanly; False once failed; else None."""
    status = seen.get("status")
    if status == "stopped":
        return True
    if status in ("failed", "unknown"):
        return False
    return None
