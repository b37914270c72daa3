"""The web page (issues 13 and 21): its login, cookie, key and CSRF rules over HTTP, and the page
itself in a real headless Chromium, against a real local server running real workers."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import threading
import urllib.parse

import pytest
import requests
from browser import chromium, missing
from conftest import SENSE, Api, sense_command, wait_for
from needs import require

from sense.local import LocalServer
from sense.local.watch import CHUNK, LogFollow
from sense.local.websession import IDLE_SECONDS, Sessions

pytestmark = pytest.mark.timeout(120)

#: A worker that prints a line and idles.
IDLE = "import time\nprint('hello from the web test', flush=True)\ntime.sleep(120)\n"


# -- helpers -------------------------------------------------------------------------------------


def token_url(server: LocalServer) -> str:
    """The address that logs in with the token itself."""
    return f"{server.url}/?token={urllib.parse.quote(server.project.info.token, safe='')}"


def key_in(answer: requests.Response) -> str:
    """The session's key, which the answer to a login hands to the page (and nothing else)."""
    found = re.search(r'<meta name="sense-csrf" content="([^"]+)">', answer.text)
    assert found, answer.text
    return found.group(1)


def log_in(server: LocalServer) -> tuple[requests.Session, str]:
    """A ``requests`` session logged in to the page as a browser would be, by a one-time link,
    and the key the page keeps; the session sends the key as the page does."""
    session = requests.Session()
    answer = session.get(server.page_link(), allow_redirects=False, timeout=10)
    assert answer.status_code == 200, answer.text
    key = key_in(answer)
    session.headers["X-Sense-CSRF"] = key
    return session, key


def events(answer: requests.Response):
    """The server-sent events of a streamed answer, as (name, data) pairs."""
    name = None
    for line in answer.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))


def next_event(stream, wanted: str, condition=lambda data: True) -> dict:
    """The next event of a stream named ``wanted`` whose data meets ``condition``."""
    for name, data in stream:
        if name == wanted and condition(data):
            return data
    pytest.fail(f"the stream ended before a {wanted} event")


def launch_numbered_lines(api: Api, count: int) -> dict:
    """A worker that prints ``count`` numbered lines of 53 bytes, then "the last line", then
    idles; returned once all of it is printed."""
    code = (
        "import time\n"
        f"for i in range({count}): print(f'line {{i:06d}} ' + 'x' * 40)\n"
        "print('the last line', flush=True)\ntime.sleep(120)\n"
    )
    worker = api.launch(startup_code=code)

    def printed_all():
        return api.logs(worker["id"]).endswith("the last line\n")

    wait_for(printed_all)
    return worker


class OtherSite:
    """A tiny web server of its own on a loopback address: another origin than the page's."""

    def __init__(self, host: str) -> None:
        self.pages: dict[str, str] = {}
        #: The Cookie header of each request it got.
        self.cookies: list[str] = []
        pages, cookies = self.pages, self.cookies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                cookies.append(self.headers.get("Cookie", ""))
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def other_site():
    site = OtherSite("127.0.0.1")
    yield site
    site.close()


# -- login, cookie and CSRF, over HTTP -----------------------------------------------------------


def test_the_token_address_sets_a_strict_httponly_cookie_that_is_not_the_token(server):
    token = server.project.info.token
    answer = requests.get(token_url(server), allow_redirects=False, timeout=10)
    # A page that keeps the session's key and goes on to "/", leaving this address.
    assert answer.status_code == 200
    assert token not in answer.text and len(key_in(answer)) >= 32
    assert "/web/static/bounce.js" in answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    port = server.url.rsplit(":", 1)[1]
    cookie = answer.headers["Set-Cookie"]
    # One name per port: browsers share a host's cookies between its ports.
    name, _, value = cookie.split(";")[0].partition("=")
    assert name == f"sense-session-{port}"
    assert token not in cookie and len(value) >= 32
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert answer.headers["Referrer-Policy"] == "same-origin"
    page = requests.get(server.url + "/", cookies={name: value}, timeout=10)
    assert page.status_code == 200
    assert 'id="dashboards"' in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_a_wrong_token_shows_the_login_form_with_an_error_and_no_cookie(server):
    answer = requests.get(f"{server.url}/?token=not-the-token", allow_redirects=False, timeout=10)
    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers
    assert "not this server" in answer.text
    assert 'name="token"' in answer.text
    assert "not-the-token" not in answer.text


#: Every route of the page but the static files and its login, with the method it answers.
PAGE_ROUTES = [
    ("GET", "/web/session"),
    ("GET", "/web/events"),
    ("GET", "/web/dashboards/1/output"),
    ("GET", "/web/dashboards/1/output/earlier?before=10"),
    ("POST", "/web/stop-workers"),
    ("POST", "/web/logout"),
]


@pytest.fixture
def private(tmp_path):
    """A server whose project's name no page text would hold by chance, and its API."""
    directory = tmp_path / "zq-private-project"
    directory.mkdir()
    with LocalServer(directory, grace=1.0) as server:
        server.attach(set_environ=False)
        yield server, Api(server)


def test_without_a_session_the_page_is_a_login_form_and_nothing_of_the_project(private):
    server, api = private
    worker = api.launch(name="secret-worker-name", startup_code=IDLE)
    api.wait_status(worker["id"], "running")
    info = server.project.info
    answer = requests.get(server.url + "/", timeout=10)
    assert answer.status_code == 200
    assert 'name="token"' in answer.text
    for private in ("secret-worker-name", info.project_id, info.directory, info.owner_id):
        assert private not in answer.text
    for method, path in PAGE_ROUTES:
        refused = requests.request(method, server.url + path, timeout=10)
        assert refused.status_code == 401, (method, path)
        assert set(refused.json()) == {"error"}
    # The page's files are served to anyone: they hold nothing of the project.
    script = requests.get(f"{server.url}/web/static/page.js", timeout=10)
    assert script.status_code == 200 and "EventSource" in script.text
    assert requests.get(f"{server.url}/web/static/../app.py", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/web/static/index.html", timeout=10).status_code == 404


def test_the_login_form_logs_in_but_not_from_another_origin(server):
    form = {"token": server.project.info.token}
    foreign = requests.post(
        f"{server.url}/web/login",
        data=form,
        headers={"Origin": "http://127.0.0.1:9"},
        allow_redirects=False,
        timeout=10,
    )
    assert foreign.status_code == 403
    assert "Set-Cookie" not in foreign.headers
    wrong = requests.post(f"{server.url}/web/login", data={"token": "x"}, timeout=10)
    assert wrong.status_code == 401 and "not this server" in wrong.text
    session = requests.Session()
    answer = session.post(
        f"{server.url}/web/login",
        data=form,
        headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 200
    headers = {"X-Sense-CSRF": key_in(answer)}
    assert session.get(server.project_url, headers=headers, timeout=10).status_code == 200


def test_the_cookie_and_key_read_the_api_and_a_change_needs_the_own_origin_too(api, server):
    worker = api.launch(startup_code=IDLE)
    api.wait_status(worker["id"], "running")
    session, _ = log_in(server)
    listed = session.get(f"{server.project_url}/dashboards", timeout=10)
    assert listed.status_code == 200
    assert worker["id"] in [d["id"] for d in listed.json()]
    stop = f"{server.project_url}/dashboards/{worker['id']}"
    body = {"status": "stopped"}
    refusals = {
        "no key": ({"X-Sense-CSRF": ""}, 401),
        "a wrong key": ({"X-Sense-CSRF": "guess"}, 401),
        "another origin": ({"Origin": "http://127.0.0.1:9"}, 403),
        "another site": ({"Sec-Fetch-Site": "cross-site"}, 403),
        "another port": ({"Sec-Fetch-Site": "same-site"}, 403),
    }
    for why, (headers, status) in refusals.items():
        answer = session.patch(stop, json=body, headers=headers, timeout=10)
        assert answer.status_code == status, why
        assert api.get(worker["id"])["status"] == "running", why
    headers = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    answer = session.patch(stop, json=body, headers=headers, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["status"] == "stopped"


def test_basic_auth_is_unchanged_but_no_browser_may_change_anything_from_another_site(api, server):
    launch = {"master_id": server.master["id"], "startup_code": "pass"}
    foreign = api("POST", "/dashboards", json=launch, headers={"Origin": "http://evil.invalid"})
    assert foreign.status_code == 403
    assert len(api("GET", "/dashboards").json()) == 1
    worker = api("POST", "/dashboards", json=launch)
    assert worker.status_code == 201
    api.wait_status(worker.json()["id"], "stopped")


def test_logout_ends_the_session(server):
    session, key = log_in(server)
    cookies = dict(session.cookies)
    without_key = {"X-Sense-CSRF": ""}
    refused = session.post(f"{server.url}/web/logout", headers=without_key, timeout=10)
    assert refused.status_code == 401
    assert session.get(server.project_url, timeout=10).status_code == 200
    answer = session.post(f"{server.url}/web/logout", timeout=10)
    assert answer.status_code == 204
    # The browser forgets the cookie; a copy of it, with the key, opens nothing either.
    assert session.get(server.project_url, timeout=10).status_code == 401
    headers = {"X-Sense-CSRF": key}
    copy = requests.get(server.project_url, cookies=cookies, headers=headers, timeout=10)
    assert copy.status_code == 401


def test_the_cookie_alone_opens_nothing_and_no_route_hands_out_the_key(api, server):
    session, key = log_in(server)
    cookie_only = requests.Session()
    cookie_only.cookies.update(session.cookies)
    launch = {"master_id": server.master["id"], "startup_code": "open('pwned', 'w')"}
    for method, path in [*PAGE_ROUTES, ("GET", server.project_url.removeprefix(server.url))]:
        answer = cookie_only.request(method, server.url + path, timeout=10)
        assert answer.status_code == 401, (method, path)
        assert key not in answer.text
    assert cookie_only.post(f"{server.project_url}/dashboards", json=launch).status_code == 401
    assert "csrf" not in session.get(f"{server.url}/web/session", timeout=10).json()
    assert [d["id"] for d in api("GET", "/dashboards").json()] == [server.master["id"]]
    # An event stream, which cannot send a header, takes the key in its query.
    url = f"{server.url}/web/events"
    with cookie_only.get(url, params={"csrf": key}, stream=True, timeout=30) as answer:
        assert answer.status_code == 200
        assert next_event(events(answer), "dashboards")["snapshot"] is True


def test_a_session_ends_after_its_idle_time_and_each_use_renews_it():
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0])
    session_id, session = sessions.open()
    for _ in range(3):
        now[0] += IDLE_SECONDS - 1
        assert sessions.find(session_id) is session
    now[0] += IDLE_SECONDS + 1
    assert sessions.find(session_id) is None
    now[0] = 0.0  # gone for good, not only out of date
    assert sessions.find(session_id) is None


def test_the_notebook_link_logs_in_once_and_nothing_shows_the_token(project_dir):
    with LocalServer(project_dir, grace=1.0) as server:
        token = server.project.info.token
        shown = server._repr_html_()
        assert token not in shown and token not in repr(server)
        link = re.search(r"href='([^']+)'", shown).group(1)
        assert link.startswith(f"{server.url}/?login=")
        first = requests.get(link, allow_redirects=False, timeout=10)
        assert first.status_code == 200 and "Set-Cookie" in first.headers
        again = requests.get(link, allow_redirects=False, timeout=10)
        assert again.status_code == 401 and "Set-Cookie" not in again.headers
    assert "Open the web page" not in server._repr_html_()


def test_stop_all_workers_stops_every_worker_and_not_the_master(api, server):
    workers = [api.launch(startup_code=IDLE) for _ in range(2)]
    session, _ = log_in(server)
    answer = session.post(f"{server.url}/web/stop-workers", timeout=30)
    assert answer.status_code == 200
    assert sorted(d["id"] for d in answer.json()) == sorted(w["id"] for w in workers)
    for worker in workers:
        assert api.get(worker["id"])["status"] == "stopped"
    assert api.get(server.master["id"])["status"] == "running"


# -- the event streams, over HTTP ----------------------------------------------------------------


def test_the_event_stream_sends_the_active_dashboards_then_only_what_changes(api, server):
    ended = api.launch(name="history", startup_code="pass")
    api.wait_status(ended["id"], "stopped")
    session, _ = log_in(server)
    with session.get(f"{server.url}/web/events", stream=True, timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        stream = events(answer)
        first = next_event(stream, "dashboards")
        assert first["snapshot"] is True
        # The history stays out: only what is active.
        assert [d["id"] for d in first["dashboards"]] == [server.master["id"]]
        assert first["quota"] == {"used": 0, "total": server.project.backend.capacity()}
        # A worker that starts and ends between two looks is sent all the same.
        quick = api.launch(name="quick", startup_code="print(1)")

        def ended_quick(data):
            return any(
                d["id"] == quick["id"] and d["status"] == "stopped" for d in data["dashboards"]
            )

        change = next_event(stream, "dashboards", ended_quick)
        assert change["snapshot"] is False
        assert server.master["id"] not in [d["id"] for d in change["dashboards"]]
        assert [d["exit_code"] for d in change["dashboards"] if d["id"] == quick["id"]] == [0]


def test_the_load_of_a_worker_counts_its_group_and_the_children_that_left_it(api, server):
    child = (
        "import time\nblob = bytearray(60 * 2**20)\nblob[::4096] = b'x' * len(blob[::4096])\n"
        "time.sleep(120)\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)\n"
        "end = time.time() + 120\n"
        "while time.time() < end: pass\n"
    )
    worker = api.launch(startup_code=code)
    key = str(worker["id"])
    session, _ = log_in(server)
    with session.get(f"{server.url}/web/events", stream=True, timeout=60) as answer:
        stream = events(answer)

        def loaded(data):
            load = data["samples"][-1]["dashboards"].get(key)
            # The engine, its job, and the child that left the job's group.
            return load and load["processes"] == 3 and load["memory"] > 60 * 2**20 and load["cpu"]

        sample = next_event(stream, "load", loaded)["samples"][-1]
    assert 0 < sample["cpu"] <= 100 and sample["cpus"] >= 1
    assert 0 < sample["memory"] <= sample["memory_total"]
    api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})


def test_the_output_stream_starts_at_the_tail_of_a_large_log_and_earlier_pieces_load(api, server):
    worker = launch_numbered_lines(api, 60_000)
    session, _ = log_in(server)
    url = f"{server.url}/web/dashboards/{worker['id']}/output"
    with session.get(url, stream=True, timeout=30) as answer:
        stream = events(answer)
        start = next_event(stream, "start")["offset"]
        piece = next_event(stream, "output")
    size = len(api.logs(worker["id"]).encode())
    assert size > 3_000_000
    assert size - CHUNK <= start == piece["offset"]
    assert piece["text"].startswith("line ") and piece["text"].endswith("the last line\n")
    before = session.get(f"{url}/earlier", params={"before": start}, timeout=10).json()
    assert before["offset"] < start and start - before["offset"] <= CHUNK
    assert before["text"].startswith("line ") and before["text"].endswith("\n")
    assert int(before["text"].splitlines()[-1].split()[1]) + 1 == int(piece["text"].split()[1])
    api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})


def _first_line_number(text: str) -> int:
    assert text.startswith("line "), text[:20]
    return int(text.split()[1])


def test_a_follower_far_behind_skips_to_a_line_near_the_end_and_splits_no_character(tmp_path):
    log = tmp_path / "output.log"
    line = "naïve café ✓ " * 8 + "\n"
    log.write_text(line * 20_000)  # about 3 MB

    def read(offset: int, limit: int) -> tuple[bytes, int]:
        with open(log, "rb") as file:
            file.seek(offset)
            return file.read(min(limit, CHUNK)), os.fstat(file.fileno()).st_size

    follow = LogFollow(read, 0)
    start, text, skipped = follow.read()
    size = log.stat().st_size
    assert skipped == start > size - 2 * CHUNK
    assert text.startswith("naïve") and "\ufffd" not in text
    pieces = [text]
    while follow.position < size:
        pieces.append(follow.read()[1])
    whole = "".join(pieces)
    assert "\ufffd" not in whole and whole.endswith(line)
    assert follow.position == size


# -- sense server and sense run print the page's address -------------------------------------------


def test_sense_server_prints_a_login_link_that_works_once_and_how_to_log_in_after(project_dir):
    server = sense_command("server", "--project-dir", str(project_dir), cwd=project_dir)
    try:
        address = wait_for(lambda: _page_address(server.stdout.readline()))
        # What stays in the browser's history is dead once used: a code, not the token.
        token = (project_dir / ".sense" / "token").read_text().strip()
        assert token not in address
        answer = requests.get(address, allow_redirects=False, timeout=10)
        assert answer.status_code == 200 and "Set-Cookie" in answer.headers
        again = requests.get(address, allow_redirects=False, timeout=10)
        assert again.status_code == 401 and "Set-Cookie" not in again.headers
        assert "paste the token" in server.stdout.readline()
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _page_address(line: str) -> str | None:
    found = re.search(r"http://127\.0\.0\.1:\d+/\?login=\S+", line)
    return found.group(0) if found else None


def test_sense_run_prints_the_page_address_on_a_terminal_and_never_into_a_pipe(project_dir):
    (project_dir / "job.py").write_text("print('job done')\n")
    piped = sense_command("run", "job.py", cwd=project_dir).communicate(timeout=60)[0]
    assert "job done" in piped and "login=" not in piped
    terminal, other_end = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSE_")}
    run = subprocess.Popen(
        [*SENSE, "run", "job.py"],
        cwd=project_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=other_end,
    )
    os.close(other_end)
    output = run.communicate(timeout=60)[0].decode()
    printed = b""
    while True:
        try:
            data = os.read(terminal, 4096)
        except OSError:  # the other end closed
            break
        if not data:
            break
        printed += data
    os.close(terminal)
    assert run.returncode == 0 and output == "job done\n"
    assert _page_address(printed.decode())


# -- the page, in a real browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    reason = missing()
    require(reason is None, reason or "")
    with chromium() as running:
        yield running


@pytest.fixture
def context(browser):
    context = browser.new_context()
    context.set_default_timeout(20_000)
    yield context
    context.close()


def open_page(context, server):
    """The page, logged in by the link that ``sense server`` prints, as a user would."""
    page = context.new_page()
    page.goto(server.page_link())
    page.get_by_role("heading", name="Dashboards").wait_for()
    return page


def row_of(page, dashboard_id: int):
    return page.get_by_role("row").filter(
        has=page.get_by_role("rowheader", name=str(dashboard_id), exact=True)
    )


def test_the_token_address_logs_in_and_the_token_leaves_the_address_bar(context, server):
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(token_url(server))
    page.get_by_role("heading", name="Dashboards").wait_for()
    assert page.url == f"{server.url}/"
    assert server.project.info.token not in page.url
    expect(row_of(page, server.master["id"])).to_contain_text("running")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] != server.project.info.token
    # The page's script cannot read the cookie.
    assert page.evaluate("document.cookie") == ""


def test_without_the_token_no_dashboard_data_reaches_the_page(context, private):
    from playwright.sync_api import expect

    server, api = private

    worker = api.launch(name="private-name-42", startup_code=IDLE)
    api.wait_status(worker["id"], "running")
    page = context.new_page()
    responses = []
    page.on("response", lambda response: responses.append(response))
    page.goto(f"{server.url}/")
    expect(page.get_by_label("Token")).to_be_visible()
    reached = page.evaluate(
        """async (paths) => {
            const statuses = [];
            for (const path of paths) statuses.push((await fetch(path)).status);
            return statuses;
        }""",
        ["/web/session", "/web/events", f"{server.project_url}/dashboards"],
    )
    assert reached == [401, 401, 401]
    page.get_by_label("Token").fill("a wrong token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not this server's token")
    info = server.project.info
    secrets = ("private-name-42", info.project_id, info.directory, info.token)
    everything = "".join(_body(response) for response in responses) + page.content()
    for secret in secrets:
        assert secret not in everything
    # The right token, pasted, logs in.
    page.get_by_label("Token").fill(server.project.info.token)
    page.get_by_role("button", name="Log in").click()
    expect(row_of(page, worker["id"])).to_contain_text("private-name-42")


def _body(response) -> str:
    try:
        return response.body().decode(errors="replace")
    except Exception:  # a redirect has no body
        return ""


def test_a_worker_appears_runs_shows_its_output_and_stops_without_a_reload(context, api, server):
    from playwright.sync_api import expect

    page = open_page(context, server)
    page.evaluate("window.notReloaded = true")
    worker = api.launch(name="<b>not bold</b>", startup_code=IDLE)
    row = row_of(page, worker["id"])
    expect(row).to_contain_text("running")
    # A name is text, never markup.
    expect(row.get_by_role("cell", name="<b>not bold</b>")).to_be_visible()
    row.get_by_role("button", name=f"Output of worker {worker['id']}").click()
    expect(page.get_by_role("log")).to_contain_text("hello from the web test")
    download = page.get_by_role("link", name="Download whole log")
    logs = f"{server.project_url}/dashboards/{worker['id']}/logs".removeprefix(server.url)
    assert download.get_attribute("href") == logs
    row.get_by_role("button", name=f"Stop worker {worker['id']}").click()
    expect(row).to_contain_text("stopped")
    expect(row).to_contain_text("143")
    assert api.get(worker["id"])["status"] == "stopped"
    expect(page.get_by_role("status").filter(has_text="stopped")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True


def test_stop_all_workers_ends_every_worker_and_the_master_runs_on(context, api, server):
    from playwright.sync_api import expect

    page = open_page(context, server)
    workers = [api.launch(startup_code=IDLE) for _ in range(2)]
    for worker in workers:
        expect(row_of(page, worker["id"])).to_contain_text("running")
    page.get_by_role("button", name="Stop all workers").click()
    for worker in workers:
        expect(row_of(page, worker["id"])).to_contain_text("stopped")
        assert api.get(worker["id"])["status"] == "stopped"
    expect(row_of(page, server.master["id"])).to_contain_text("running")
    expect(page.get_by_role("button", name="Stop all workers")).to_be_disabled()


def test_a_cross_site_form_post_is_refused(context, api, server, other_site):
    worker = api.launch(startup_code=IDLE)
    api.wait_status(worker["id"], "running")
    open_page(context, server)  # logged in: the browser holds the cookie
    # Same host, another port: another origin, yet the same site, so the cookie goes along.
    form = (
        "<form method='post' action='{action}'>{fields}</form>"
        "<script>document.forms[0].submit()</script>"
    )
    other_site.pages["/stop"] = form.format(action=f"{server.url}/web/stop-workers", fields="")
    launch = f"{server.project_url}/dashboards"
    fields = (
        f"<input name='master_id' value='{server.master['id']}'>"
        "<input name='startup_code' value='open(\"pwned\", \"w\")'>"
    )
    other_site.pages["/launch"] = form.format(action=launch, fields=fields)
    page = context.new_page()
    for path in ("/stop", "/launch"):
        with page.expect_response(lambda response: response.url.startswith(server.url)) as answer:
            page.goto(other_site.url + path)
        assert answer.value.status == 403, path
    assert api.get(worker["id"])["status"] == "running"
    assert len(api("GET", "/dashboards").json()) == 2
    assert not os.path.exists(os.path.join(server.project_dir, "pwned"))


def test_a_page_on_another_port_gets_the_cookie_and_with_it_alone_nothing_answers(
    context, api, server, other_site
):
    from playwright.sync_api import expect

    page = open_page(context, server)
    # Mallory's page reloads itself once, as bounce.js does: a same-site navigation, which
    # carries the cookies of 127.0.0.1, whatever their port.
    other_site.pages["/"] = "<script>location.replace('/?again')</script>"
    other_site.pages["/?again"] = "<p>Thanks.</p>"
    page.goto(other_site.url + "/")
    page.get_by_text("Thanks.").wait_for()
    name = f"sense-session-{server.url.rsplit(':', 1)[1]}="
    stolen = next(cookie for cookie in other_site.cookies if name in cookie)
    launch = {"master_id": server.master["id"], "startup_code": "open('pwned', 'w')"}
    routes = [*PAGE_ROUTES, ("GET", server.project_url.removeprefix(server.url))]
    for method, path in [*routes, ("POST", f"{routes[-1][1]}/dashboards")]:
        answer = requests.request(
            method, server.url + path, headers={"Cookie": stolen}, json=launch, timeout=10
        )
        assert answer.status_code == 401, (method, path, answer.text)
    assert [d["id"] for d in api("GET", "/dashboards").json()] == [server.master["id"]]
    assert not os.path.exists(os.path.join(server.project_dir, "pwned"))
    # The page itself works on, after a reload and in a new tab, with no new login.
    page.goto(f"{server.url}/")
    expect(row_of(page, server.master["id"])).to_contain_text("running")
    page.reload()
    expect(row_of(page, server.master["id"])).to_contain_text("running")
    other_tab = context.new_page()
    other_tab.goto(f"{server.url}/")
    expect(row_of(other_tab, server.master["id"])).to_contain_text("running")


def test_a_token_link_followed_from_another_site_logs_in(context, server):
    # localhost and 127.0.0.1 are two sites: a notebook on one links to the page on the other.
    site = OtherSite("localhost")
    try:
        address = server.page_link()
        site.pages["/notebook"] = f"<a href='{address}'>Open the web page</a>"
        page = context.new_page()
        page.goto(site.url + "/notebook")
        page.get_by_role("link", name="Open the web page").click()
        page.get_by_role("heading", name="Dashboards").wait_for()
        assert page.url == f"{server.url}/"
    finally:
        site.close()


def test_the_output_view_shows_the_end_of_a_large_log_and_loads_earlier_parts(context, api, server):
    from playwright.sync_api import expect

    worker = launch_numbered_lines(api, 40_000)
    page = open_page(context, server)
    row_of(page, worker["id"]).get_by_role("button", name="Output of worker").click()
    log = page.get_by_role("log")
    expect(log).to_contain_text("the last line")
    shown = len(log.text_content())
    assert shown <= CHUNK
    assert "line 000000" not in log.text_content()
    first = _first_line_number(log.text_content())
    page.get_by_role("button", name="Load earlier").click()
    wait_for(lambda: len(log.text_content()) > shown)
    assert _first_line_number(log.text_content()) < first
    # The download link saves all of it, from the logged-in page.
    with page.expect_download() as saved:
        page.get_by_role("link", name="Download whole log").click()
    assert saved.value.suggested_filename == f"dashboard-{worker['id']}.log"
    with open(saved.value.path()) as whole:
        assert whole.read().startswith("line 000000")
    api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})


def test_the_load_shows_as_numbers_and_charts(context, api, server):
    from playwright.sync_api import expect

    worker = api.launch(startup_code=IDLE)
    page = open_page(context, server)
    row = row_of(page, worker["id"])
    expect(row.get_by_role("cell", name=re.compile(r"^\d+(\.\d)? MiB$"))).to_be_visible()
    expect(page.locator("#machine-cpu")).to_have_text(re.compile(r"^\d+%$"))
    expect(page.get_by_role("img", name=re.compile("^CPU")).locator("polyline")).to_have_count(2)
    expect(page.locator("#quota")).to_have_text(f"1 / {server.project.backend.capacity()}")
    api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})


def test_the_page_is_usable_with_the_keyboard(context, api, server):
    from playwright.sync_api import expect

    worker = api.launch(startup_code=IDLE)
    page = open_page(context, server)
    stop = page.get_by_role("button", name=f"Stop worker {worker['id']}")
    expect(stop).to_be_visible()
    stop.focus()
    page.keyboard.press("Enter")
    expect(row_of(page, worker["id"])).to_contain_text("stopped")
    page.get_by_role("radio", name="All").focus()
    page.keyboard.press("Space")
    expect(page.get_by_role("radio", name="All")).to_be_checked()


def test_after_a_restart_the_open_page_asks_for_the_token_again(context, project_dir):
    from playwright.sync_api import expect

    with LocalServer(project_dir, grace=1.0) as first:
        first.attach(set_environ=False)
        port = int(first.url.rsplit(":", 1)[1])
        page = open_page(context, first)
    # Sessions live in the server's memory: the next server knows none of them.
    with LocalServer(project_dir, port=port, grace=1.0) as second:
        expect(page.get_by_label("Token")).to_be_visible()
        page.goto(token_url(second))
        page.get_by_role("heading", name="Dashboards").wait_for()
