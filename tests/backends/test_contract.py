"""The backend contract: what every backend does, through the seam's interface only.

Each test runs for every backend the ``backend`` fixture names (its
``params``). One backend serves the whole module: a Ray backend takes
seconds to start (a driver and an agent on each node). Every test ends
what it started; its ``mark`` fixture fails it otherwise.
"""

from __future__ import annotations

import itertools
import json
import os
import signal

import psutil
import pytest
from backend_support import (
    Launcher,
    log_of,
    make_backend,
    make_project,
    subscribed,
    wait_for_log,
)
from ray_cluster import NODE_SENSE_VARIABLE

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["ray"])
def served(request, tmp_path_factory):
    """A backend of each kind, serving a project, and a recorder of what it reports."""
    options = {}
    if request.param == "ray":
        options["ray_address"] = request.getfixturevalue("ray_cluster").address
    project_dir = make_project(tmp_path_factory.mktemp("contract") / "project")
    backend = make_backend(request.param, project_dir, **options)
    yield backend, subscribed(backend), itertools.count(1)
    backend.shutdown()


@pytest.fixture
def backend(served):
    return served[0]


@pytest.fixture
def recorder(served):
    return served[1]


@pytest.fixture
def launch(served, mark):
    return Launcher(served[0], mark, served[2])


def test_backend_runs_code_reports_running_then_exit_0_and_keeps_the_output(
    backend, launch, recorder
):
    dashboard_id, placement = launch("print('hello from a dashboard')")
    assert placement.handle["backend"] == backend.name
    assert recorder.exit_of(dashboard_id) == (0, "exited with status 0")
    assert dashboard_id in recorder.running
    assert backend.wait(dashboard_id, timeout=5) == 0
    assert log_of(backend, dashboard_id) == "hello from a dashboard\n"


@pytest.mark.parametrize(
    ("code", "exit_code", "logged"),
    [
        ("import sys; sys.exit(3)", 3, ""),
        ("import sys; sys.exit('bye')", 1, "bye\n"),
        ("def f():\n    raise ValueError('boom')\nf()\n", 1, "ValueError: boom"),
    ],
    ids=["sys.exit(3)", "sys.exit(message)", "uncaught exception"],
)
def test_backend_exit_code_is_the_code_s_own(backend, launch, recorder, code, exit_code, logged):
    dashboard_id, _ = launch(code)
    assert recorder.exit_of(dashboard_id)[0] == exit_code
    assert logged in log_of(backend, dashboard_id)


def test_backend_traceback_of_an_uncaught_exception_is_in_the_log(backend, launch, recorder):
    dashboard_id, _ = launch("def f():\n    raise ValueError('boom')\nf()\n")
    recorder.exit_of(dashboard_id)
    log = log_of(backend, dashboard_id)
    assert log.startswith("Traceback (most recent call last):")
    assert 'File "<startup_code>", line 2, in f' in log


def test_backend_output_is_readable_while_it_runs_from_any_offset(backend, launch, recorder):
    dashboard_id, _ = launch("print('0123456789', flush=True)\nimport time; time.sleep(60)")
    wait_for_log(backend, dashboard_id, "0123456789\n")
    assert dashboard_id not in recorder.exits
    assert backend.log_size(dashboard_id) == 11
    assert log_of(backend, dashboard_id, offset=3, limit=4) == "3456"
    assert log_of(backend, dashboard_id, offset=-3) == "89\n"
    backend.stop(dashboard_id)


@pytest.mark.parametrize(
    ("code", "exit_code", "logged"),
    [
        (
            "import time\ntry:\n    time.sleep(60)\nfinally:\n    print('cleaned up')\n",
            128 + signal.SIGTERM,
            "cleaned up",
        ),
        (
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n",
            -signal.SIGKILL,
            "",
        ),
    ],
    ids=["SIGTERM, finally blocks run", "SIGTERM ignored, SIGKILL after the grace"],
)
def test_backend_stop_sends_sigterm_then_sigkill_after_the_grace(
    backend, launch, recorder, code, exit_code, logged
):
    dashboard_id, _ = launch("print('up', flush=True)\n" + code)
    wait_for_log(backend, dashboard_id, "up\n")
    backend.stop(dashboard_id)
    # stop() returns once the dashboard has ended and its listeners know it.
    assert recorder.exits[dashboard_id] == (exit_code, "stopped")
    assert logged in log_of(backend, dashboard_id)


def test_backend_stop_ends_the_whole_process_group(backend, launch, recorder):
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    dashboard_id, _ = launch(code)
    child = psutil.Process(int(wait_for_log(backend, dashboard_id, "\n")))
    backend.stop(dashboard_id)
    _, alive = psutil.wait_procs([child], timeout=10)
    assert not alive


def test_backend_sigkill_of_a_dashboard_s_process_is_exit_code_minus_9(backend, launch, recorder):
    dashboard_id, placement = launch("print('up', flush=True); import time; time.sleep(60)")
    wait_for_log(backend, dashboard_id, "up\n")
    os.kill(placement.handle["pid"], signal.SIGKILL)
    assert recorder.exit_of(dashboard_id) == (-signal.SIGKILL, f"exited with status {-9}")


def test_backend_interrupt_is_ctrl_c(backend, launch, recorder):
    dashboard_id, _ = launch("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    wait_for_log(backend, dashboard_id, "up\n")
    backend.interrupt(dashboard_id)
    assert recorder.exit_of(dashboard_id)[0] == 128 + signal.SIGINT
    assert "KeyboardInterrupt" in log_of(backend, dashboard_id)


def test_backend_environment_is_the_node_s_then_the_context_then_the_caller_s(
    backend, launch, recorder
):
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    dashboard_id, placement = launch(code, env={"ROLE": "worker", "NODE_MARK": "the caller's"})
    recorder.exit_of(dashboard_id)
    env = json.loads(log_of(backend, dashboard_id))
    assert env["SENSE_PROJECT_IP"] == placement.project_ip
    assert env["SENSE_PORT1"] == str(next(iter(placement.ports)))
    assert env["ROLE"] == "worker"
    assert env["NODE_MARK"] == "the caller's"
    # The node's own SENSE_* variables (it may run on a dashboard itself) stay out.
    assert NODE_SENSE_VARIABLE not in env
    assert env["PYTHONUNBUFFERED"] == "1"


def test_backend_a_dashboard_binds_its_port_on_its_project_ip_and_another_reaches_it(
    backend, launch, recorder
):
    server_code = (
        "import os, socket\n"
        "address = (os.environ['SENSE_PROJECT_IP'], int(os.environ['SENSE_PORT1']))\n"
        "s = socket.create_server(address)\n"
        "print('listening', flush=True)\n"
        "c, _ = s.accept(); c.sendall(b'hello over the project network'); c.close()\n"
    )
    listener_id, placement = launch(server_code)
    wait_for_log(backend, listener_id, "listening")
    (port,) = placement.ports
    client_code = (
        "import socket\n"
        f"print(socket.create_connection(({placement.project_ip!r}, {port})).recv(100).decode())\n"
    )
    client_id, _ = launch(client_code)
    assert recorder.exit_of(client_id)[0] == 0
    assert log_of(backend, client_id) == "hello over the project network\n"
    assert recorder.exit_of(listener_id)[0] == 0


def test_backend_a_module_kept_in_the_project_imports(backend, launch, recorder):
    dashboard_id, _ = launch("import kept_module; print(kept_module.WHERE)")
    assert recorder.exit_of(dashboard_id)[0] == 0
    assert log_of(backend, dashboard_id) == "in the project\n"


def test_backend_refuses_what_it_cannot_run_before_any_side_effect(backend, recorder):
    assert "Python engines only" in backend.check("sense-r-engine", "small")
    assert "size should be one of" in backend.check("sense-ipython-engine", "huge")
    assert backend.check("sense-ipython-engine", "medium") is None


def test_backend_recover_ends_the_process_groups_of_the_handles_it_is_given(
    backend, launch, recorder, mark
):
    # A dashboard of this run stands in for one an earlier run left: its handle is the same
    # kind (an earlier run's processes end with it on Ray; see test_ray.py).
    dashboard_id, placement = launch("import time; time.sleep(60)")
    recorder.wait_running(dashboard_id)
    leftover = psutil.Process(placement.handle["pid"])
    backend.recover([(dashboard_id, placement.handle)])
    _, alive = psutil.wait_procs([leftover], timeout=10)
    assert not alive
    assert recorder.exit_of(dashboard_id)[0] == -signal.SIGKILL
