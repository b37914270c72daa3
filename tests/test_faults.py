"""The client against a real local server behind a proxy that misbehaves on purpose.

Every public call either succeeds or raises a documented error within its
bound, and a launch never leaves a running worker that its caller was not
given: counted on the server itself, not through the proxy.
"""

from __future__ import annotations

import time

import pytest
import requests
from chaos_proxy import FAULTS, ChaosProxy

import sense
from sense import rest, workers
from sense.local import LocalServer

pytestmark = pytest.mark.timeout(300)

SLEEPER = "import time; time.sleep(600)"
#: Launch rounds: at least 12, and on (up to 40) until a launch and a LaunchError were both seen
#: (a round of 3 launches succeeds only about one time in four at this fault rate).
ROUNDS, MAX_ROUNDS = 12, 40


@pytest.fixture
def project(tmp_path, clean_env):
    """A local project with a master dashboard, and the master's context."""
    server = LocalServer(tmp_path / "project", max_workers=64)
    server.attach(set_environ=False)
    yield server, server.master_environment()
    server.stop()


@pytest.fixture
def patient_http(monkeypatch):
    """Timeouts short enough for a test, long enough for a worker to start on 2 busy cores."""
    monkeypatch.setattr(rest, "TIMEOUT", (1.0, 2.0))
    monkeypatch.setattr(rest, "BACKOFF_FACTOR", 0.05)
    monkeypatch.setattr(workers, "UNDO_SECONDS", 15.0)


def live_workers(context: dict) -> set[int]:
    """The master's workers that have not ended, asked of the server directly."""
    answer = requests.get(
        f"{context['SENSE_PROJECT_URL']}/dashboards",
        auth=(context["SENSE_API_TOKEN"], ""),
        timeout=30,
    )
    master_id = int(context["SENSE_DASHBOARD_ID"])
    return {
        d["id"]
        for d in answer.json()
        if d["master_id"] == master_id and d["status"] not in ("stopped", "failed")
    }


def bounded(call, seconds: float):
    """``call()``'s result, or the SenseError it raised; it must end within ``seconds``."""
    started = time.monotonic()
    try:
        return call()
    except sense.SenseError as error:
        return error
    finally:
        assert time.monotonic() - started < seconds


def test_under_faults_launches_are_all_or_nothing_and_every_call_ends_in_time(
    project, clean_env, patient_http
):
    server, context = project
    with ChaosProxy(server.url, fault_rate=0.35, slow_seconds=3.0) as proxy:
        for name, value in context.items():
            clean_env.setenv(name, value.replace(server.url, proxy.url))
        given: set[int] = set()
        outcomes = []
        while len(outcomes) < ROUNDS or (
            len(outcomes) < MAX_ROUNDS and not {"list", "LaunchError"} <= set(outcomes)
        ):
            result = bounded(lambda: sense.launchWorkers(3, startupCode=SLEEPER), seconds=60)
            outcomes.append(type(result).__name__)
            if isinstance(result, list):
                given |= {worker["id"] for worker in result}
            else:
                assert isinstance(result, sense.LaunchError)
            assert live_workers(context) == given
            for call in (
                sense.getWorkers,
                sense.getMaster,
                lambda: sense.awaitWorkers(timeout_seconds=2),
            ):
                bounded(call, seconds=30)

    # The run met every kind of fault, and launches both succeeded and failed.
    assert all(proxy.counts[fault] > 0 for fault in FAULTS), proxy.counts
    assert "list" in outcomes and "LaunchError" in outcomes, outcomes
    clean_env.setenv("SENSE_API_URL", server.url)
    clean_env.setenv("SENSE_PROJECT_URL", context["SENSE_PROJECT_URL"])
    sense.stopWorkers()
    assert live_workers(context) == set()
