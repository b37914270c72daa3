"""The ``sense`` command: run, server, ps, logs, stop, as a user types them."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys

import psutil
import pytest
import requests
from conftest import Api, read_exports, sense_command, wait_for
from needs import require
from waiting import left_running

from sense.local import LocalServer
from sense.local.cli import main
from sense.local.console import LogFollower

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("command", [[], ["run"], ["server"], ["ps"], ["logs"], ["stop"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: sense" in capsys.readouterr().out


def run_to_end(project_dir, *args: str) -> tuple[int, str]:
    """``sense run ARGS`` in the project, to its end: its exit status and its output."""
    run = sense_command("run", *args, cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    return run.returncode, output


def test_run_passes_the_arguments_and_the_exit_status_of_the_script(project_dir):
    (project_dir / "job.py").write_text(
        "import os, sys\n"
        "print('args', sys.argv[1:], 'master', os.environ['SENSE_DASHBOARD_ID'],\n"
        "      repr(os.environ['SENSE_MASTER_ID']))\n"
        "sys.exit(7)\n"
    )
    returncode, output = run_to_end(project_dir, "job.py", "a", "--b")
    assert returncode == 7
    assert "args ['a', '--b'] master 1 ''" in output


def test_run_shows_each_workers_output_prefixed_by_its_id(project_dir):
    (project_dir / "job.py").write_text(
        "import sense\n"
        "workers = sense.launchWorkers(2, startupCode='print(\"hello\")')\n"
        "sense.awaitWorkers(workers, wait_for_completion=True)\n"
        "print('master done')\n"
    )
    returncode, output = run_to_end(project_dir, "job.py")
    assert returncode == 0, output
    assert "[worker 2] hello" in output and "[worker 3] hello" in output
    assert "master done" in output


def test_a_workers_line_never_lands_inside_a_line_of_the_script(project_dir):
    # The script begins a line, and ends it only once the console shows its worker's line.
    (project_dir / "job.py").write_text(
        "import pathlib, sense, time\n"
        "print('the cluster:', end=' ')\n"
        "sense.launchWorkers(1, startupCode='print(\"hello\")')\n"
        "deadline = time.monotonic() + 30\n"
        "while '[worker 2] hello' not in pathlib.Path('console.txt').read_text():\n"
        "    assert time.monotonic() < deadline, 'the worker line never came'\n"
        "    time.sleep(0.05)\n"
        "print([1, 2])\n"
    )
    with open(project_dir / "console.txt", "w") as console:
        run = sense_command("run", "job.py", cwd=project_dir, stdout=console)
        assert run.wait(timeout=30) == 0
    assert (project_dir / "console.txt").read_text() == "[worker 2] hello\nthe cluster: [1, 2]\n"


def test_run_of_a_missing_script_fails_with_status_2(project_dir):
    returncode, output = run_to_end(project_dir, "nowhere.py")
    assert returncode == 2
    assert "no such script" in output


def test_ctrl_c_reaches_the_script_and_then_everything_stops(project_dir):
    (project_dir / "job.py").write_text(
        "import sense, time\n"
        "sense.launchWorkers(1)\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    run = sense_command("run", "job.py", cwd=project_dir)
    assert run.stdout.readline().strip() == "ready"
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 0
    assert "interrupted" in output


@pytest.mark.timeout(30)
def test_sigkill_of_sense_run_leaves_no_process_of_the_run_within_5_seconds(project_dir):
    (project_dir / "job.py").write_text(
        "import sense, time\n"
        "sense.awaitWorkers(sense.launchWorkers(3))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run = sense_command("run", "job.py", cwd=project_dir)
    assert run.stdout.readline().strip() == "ready"

    # The master script (an engine and the job it forked), the prestarted engine, and the
    # three workers forked from it (each an engine and its job). A worker is "running" as
    # its engine forks the job, so the last jobs may be a moment behind "ready".
    def whole_tree():
        tree = psutil.Process(run.pid).children(recursive=True)
        return tree if len(tree) == 9 else None

    tree = wait_for(whole_tree, timeout=20)
    run.kill()
    run.wait()
    run.stdout.close()
    alive = left_running(tree, timeout=5)
    assert not alive, f"left running: {alive}"


class CountingProject:
    """A real project that notes how many dashboards each listing returned."""

    def __init__(self, project) -> None:
        self.project = project
        self.listed: list[int] = []

    def dashboards(self, **filters):
        found = self.project.dashboards(**filters)
        self.listed.append(len(found))
        return found

    def read_logs(self, dashboard_id: int, offset: int = 0):
        return self.project.read_logs(dashboard_id, offset)


def test_the_log_follower_lists_only_what_runs_or_just_ended(project_dir):
    with LocalServer(project_dir, grace=1.0) as server:
        for _ in range(100):  # a long history, of no interest to this run
            server.project.store.insert(status="stopped", kind="api")
        server.attach(set_environ=False)
        api = Api(server)
        project = CountingProject(server.project)
        out = io.StringIO()
        follower = LogFollower(project, out, after=server.master["id"])
        quick = api.launch(startup_code="print('bye', end='')")["id"]
        api.wait_status(quick, "stopped")  # it ends before the follower first looks
        idle = api.launch(startup_code="print('hello')\nimport time\ntime.sleep(60)")["id"]
        wait_for(lambda: "hello" in api.logs(idle))
        follower.poll()
        follower.poll()
        api("PUT", f"/dashboards/{idle}/stop")
        follower.poll()
        follower.poll()
        assert max(project.listed) <= 2
        assert out.getvalue().splitlines() == [f"[worker {quick}] bye", f"[worker {idle}] hello"]


def test_server_prints_the_environment_and_ps_logs_stop_talk_to_it(project_dir):
    server = sense_command("server", "--project-dir", str(project_dir), cwd=project_dir)
    try:
        exports = {}
        for line in server.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
            if line.startswith("Ctrl-C"):
                break
        assert exports["SENSE_MASTER_ID"] == ""
        assert exports["SENSE_PROJECT_URL"].startswith("http://127.0.0.1:")
        env = exports
        auth = (env["SENSE_API_TOKEN"], "")
        dashboards = env["SENSE_PROJECT_URL"] + "/dashboards"
        master = env["SENSE_DASHBOARD_ID"]
        printer = requests.post(
            dashboards, json={"master_id": master, "code": "print(42)"}, auth=auth, timeout=10
        ).json()["id"]
        idle = requests.post(dashboards, json={"master_id": master}, auth=auth, timeout=10)
        idle = idle.json()["id"]

        def cli(*args, env=None):
            return sense_command(*args, cwd=project_dir, env=env or {}).communicate(timeout=30)[0]

        wait_for(lambda: "42" in cli("logs", str(printer)))
        wait_for(lambda: f"{idle}  running" in cli("ps"))
        assert f"{printer}  stopped" in cli("ps", "--all")
        # From a shell that exported the variables, too.
        assert f"{idle}  running" in cli("ps", env=env)
        # An id that is not there is reported, the others are stopped all the same.
        stop = sense_command("stop", "999", str(idle), cwd=project_dir)
        output = stop.communicate(timeout=30)[0]
        assert stop.returncode == 1
        assert f"{idle}: stopped" in output
        assert "999: no dashboard 999" in output
        assert f"{idle}  running" not in cli("ps")
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0
    output = sense_command("ps", cwd=project_dir).communicate(timeout=30)[0]
    assert "no local Sense server" in output


#: Proxy variables aimed at a port where nothing listens: a request sent through them fails.
DEAD_PROXY = {
    name: "http://127.0.0.1:9"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
} | {"NO_PROXY": "", "no_proxy": ""}


def test_ps_logs_stop_reach_the_local_server_past_proxy_variables(project_dir):
    server = sense_command("server", cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        worker = requests.post(
            exports["SENSE_PROJECT_URL"] + "/dashboards",
            json={"master_id": exports["SENSE_DASHBOARD_ID"], "code": "print(42)"},
            auth=(exports["SENSE_API_TOKEN"], ""),
            timeout=10,
        ).json()["id"]

        def cli(*args):
            run = sense_command(*args, cwd=project_dir, env=DEAD_PROXY)
            return run.communicate(timeout=30)[0], run.returncode

        wait_for(lambda: cli("logs", str(worker)) == ("42\n", 0))
        output, returncode = cli("ps", "--all")
        assert returncode == 0 and f"{worker}  stopped" in output
        assert cli("stop", str(worker)) == (f"{worker}: stopped\n", 0)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_ps_without_a_server_says_how_to_start_one(tmp_path):
    output = sense_command("ps", cwd=tmp_path).communicate(timeout=30)[0]
    assert "sense server" in output
    assert not (tmp_path / ".sense").exists()


def test_stop_without_ids_stops_every_running_dashboard_and_so_ends_the_run(project_dir):
    (project_dir / "job.py").write_text(
        "import sense, time\n"
        "sense.awaitWorkers(sense.launchWorkers(2))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run = sense_command("run", "job.py", cwd=project_dir)
    assert run.stdout.readline().strip() == "ready"
    stop = sense_command("stop", cwd=project_dir).communicate(timeout=30)[0]
    assert stop.split() == ["2:", "stopped", "3:", "stopped", "1:", "stopped"]
    run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM


def test_run_hands_the_script_its_arguments_as_python_does(project_dir):
    (project_dir / "args.py").write_text("import sys\nprint(sys.argv[1:])\n")
    for args in (["--", "x"], ["x", "--", "-y"], ["--"], ["--", "--"]):
        python = subprocess.run(
            [sys.executable, "args.py", *args], cwd=project_dir, capture_output=True, text=True
        )
        returncode, output = run_to_end(project_dir, "args.py", *args)
        assert returncode == 0
        assert output == python.stdout == f"{args}\n"


@pytest.mark.parametrize("command", [["server"], ["run", "job.py"]])
def test_a_port_out_of_range_is_refused_in_one_line(project_dir, command):
    (project_dir / "job.py").write_text("pass\n")
    run = sense_command(command[0], "--port", "99999", *command[1:], cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 2
    assert "argument --port: should be a port from 0 to 65535, not '99999'" in output
    assert "Traceback" not in output


def test_a_damaged_database_is_refused_in_one_line_saying_what_to_do(project_dir):
    (project_dir / ".sense").mkdir(mode=0o700)
    (project_dir / ".sense" / "sense.db").write_bytes(b"not a database, whatever it was" * 100)
    run = sense_command("server", cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 1
    assert output.count("\n") == 1 and output.startswith("sense: ")
    assert "sense.db cannot be used" in output and "move it away" in output
    assert not (project_dir / ".sense" / "server.json").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (tmpfs), to fill up."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "mounting a tmpfs takes root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)])
    require(mounted.returncode == 0, "this machine does not let even root mount a tmpfs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk) -> None:
    """Write to ``disk`` until no byte more fits."""
    with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 4096)


def test_a_full_disk_at_start_is_one_line_saying_what_to_do(small_disk):
    fill(small_disk)
    run = sense_command("server", "--project-dir", str(small_disk / "project"), cwd=small_disk)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 1
    assert output.count("\n") == 1 and "free some space" in output, output


def test_a_disk_that_fills_up_while_serving_ends_without_a_traceback(small_disk):
    project = small_disk / "project"
    server = sense_command("server", "--project-dir", str(project), cwd=small_disk)
    exports = dict(read_exports(server))
    url, auth = exports["SENSE_PROJECT_URL"], (exports["SENSE_API_TOKEN"], "")
    body = {"master_id": exports["SENSE_DASHBOARD_ID"]}
    requests.post(f"{url}/dashboards", json=body, auth=auth, timeout=10)
    fill(small_disk)
    launch = requests.post(f"{url}/dashboards", json=body, auth=auth, timeout=10)
    assert launch.status_code in (400, 503) and "error" in launch.json()
    server.send_signal(signal.SIGINT)
    output, _ = server.communicate(timeout=30)
    assert "Traceback" not in output, output
    assert server.returncode == 0 or output.splitlines()[-1].startswith("sense: "), output
    assert not (project / ".sense" / "server.json").exists()


def test_stop_without_ids_stops_the_workers_of_sense_server_and_not_its_master(project_dir):
    server = sense_command("server", cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        url, auth = exports["SENSE_PROJECT_URL"], (exports["SENSE_API_TOKEN"], "")
        master = exports["SENSE_DASHBOARD_ID"]
        for env in ({}, exports):  # from the project folder, and from a shell that exported
            workers = [
                requests.post(
                    f"{url}/dashboards", json={"master_id": master}, auth=auth, timeout=10
                ).json()["id"]
                for _ in range(2)
            ]
            stop = sense_command("stop", cwd=project_dir, env=env)
            output, _ = stop.communicate(timeout=30)
            assert stop.returncode == 0, output
            assert output.split() == [f"{workers[0]}:", "stopped", f"{workers[1]}:", "stopped"]
            listed = requests.get(f"{url}/dashboards", auth=auth, timeout=10).json()
            assert [d["id"] for d in listed if d["status"] == "running"] == [int(master)]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)


#: The ``sense`` command in a Python where ``import ray`` fails as it does without the extra.
SENSE_WITHOUT_RAY = (
    "import sys\n"
    "class HideRay:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.partition('.')[0] == 'ray':\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, HideRay())\n"
    "from sense.local.cli import main\n"
    "sys.exit(main())\n"
)


def sense_without_ray(project_dir, *args: str) -> tuple[int, str]:
    """``sense ARGS`` to its end as if the ``ray`` extra were not installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSE_")}
    run = subprocess.run(
        [sys.executable, "-c", SENSE_WITHOUT_RAY, *args],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return run.returncode, run.stdout + run.stderr


def test_the_ray_backend_without_its_extra_is_one_line_naming_the_pip_install(project_dir):
    (project_dir / "job.py").write_text("print('ran')\n")
    returncode, output = sense_without_ray(project_dir, "run", "--backend", "ray", "job.py")
    assert returncode == 1
    assert output.splitlines() == [
        "sense: the ray backend needs ray, which is not installed: pip install 'sense[ray]'"
    ]
    assert not (project_dir / ".sense").exists()


def test_an_unknown_backend_lists_ray_as_needing_its_extra_when_ray_is_missing(project_dir):
    returncode, output = sense_without_ray(project_dir, "server", "--backend", "nosuch")
    assert returncode == 1
    assert output.splitlines() == [
        "sense: no backend called 'nosuch' (there are: local; ray needs pip install 'sense[ray]')"
    ]


def test_stop_with_no_worker_running_says_there_is_nothing_to_stop(project_dir):
    server = sense_command("server", cwd=project_dir)
    try:
        dict(read_exports(server))
        stop = sense_command("stop", cwd=project_dir)
        assert stop.communicate(timeout=30)[0] == "no worker is running: nothing to stop\n"
        assert stop.returncode == 0
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_logs_of_an_unknown_dashboard_is_one_line_without_the_request(project_dir):
    server = sense_command("server", cwd=project_dir)
    try:
        dict(read_exports(server))
        logs = sense_command("logs", "999", cwd=project_dir)
        output = logs.communicate(timeout=30)[0]
        assert logs.returncode == 1
        assert output == f"sense: no dashboard 999 in project {project_dir.name}\n"
    finally:
        server.terminate()
        server.communicate(timeout=30)


@pytest.mark.parametrize("command", ["run", "server"])
def test_the_help_of_the_port_options_says_their_default(command):
    run = sense_command(command, "--help", cwd=os.getcwd())
    help_text = " ".join(run.communicate(timeout=30)[0].split())
    assert "--port PORT the API's port (default 0: any free port)" in help_text
    assert "--ssh-port SSH_PORT the dashboards' SSH port (default 0: any free port)" in help_text


def test_eval_of_sense_env_makes_a_shell_the_master_of_sense_server(project_dir):
    server = sense_command("server", cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        shell = subprocess.run(
            [
                "bash",
                "-c",
                'eval "$(sense env)" && python -c "import sense; print(sense.getMaster()[\'id\'])"'
                " && env",
            ],
            cwd=project_dir,
            env={k: v for k, v in os.environ.items() if not k.startswith("SENSE_")}
            | {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shell.returncode == 0, shell.stderr
        master, *environment = shell.stdout.splitlines()
        assert master == exports["SENSE_DASHBOARD_ID"]
        seen = dict(line.partition("=")[::2] for line in environment if "=" in line)
        # Every variable of the master but the SSH ones, which only the server knows.
        assert {k: v for k, v in seen.items() if k.startswith("SENSE_")} == {
            k: v for k, v in exports.items() if "SSH" not in k
        }
    finally:
        server.terminate()
        server.communicate(timeout=30)
