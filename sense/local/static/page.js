// The web page of the local sense server.
//
// It reads the project's REST API (the session cookie logs it in) and follows two
// server-sent event streams: /web/events (dashboards that change, the quota, the load)
// and /web/dashboards/ID/output (the output of the dashboard shown). Everything that
// comes from the server is put in the page as text, never as HTML. Every request carries
// the session's key, which the login left in this origin's storage (bounce.js): the
// cookie alone opens nothing, as another port of this host receives it too.
"use strict";

const ENDED = new Set(["stopped", "failed"]);
const RANK = { starting: 0, running: 1, stopped: 2, failed: 2 };
// Under "Active", a dashboard that ended while the page was open stays this long.
const LINGER_MS = 60_000;
const CHART_SECONDS = 300;
// The most output kept in the page; older pieces are dropped (and can be loaded again).
const MAX_OUTPUT_CHARS = 1_000_000;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  projectUrl: "",
  show: "active",
  historyLoaded: false,
  rows: new Map(), // id -> dashboard, as the API shows it
  endedAt: new Map(), // id -> when this page saw it end
  stopping: new Set(),
  stoppingAll: false,
  samples: [], // load samples, oldest first
  quota: null,
  output: null, // {id, source, chunks, chars, start}
};
const elements = new Map(); // id -> its <tr>

const $ = (id) => document.getElementById(id);

// -- talking to the server ------------------------------------------------------------------

// Read at each request: a login in another tab replaces the cookie and the key at once.
const key = () => localStorage.getItem("sense-csrf") || "";

// An event stream's address: an EventSource sets no header, so the key goes in the query.
const streamUrl = (path) => `${path}?csrf=${encodeURIComponent(key())}`;

async function fetchWithKey(path, options = {}) {
  const headers = { ...options.headers, "X-Sense-CSRF": key() };
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    // Logged out, expired, or no key here: the form, which "/" would not show with a cookie.
    window.location.replace("/web/login");
    throw new Error("logged out");
  }
  return response;
}

async function request(path, options = {}) {
  const headers = { Accept: "application/json", ...options.headers };
  const response = await fetchWithKey(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch {
      // not JSON: keep the status
    }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

async function start() {
  const session = await request("/web/session");
  state.projectUrl = session.project_url;
  const project = await request(state.projectUrl);
  $("project").textContent = `${project.owner_id} / ${project.name}`;
  $("directory").textContent = project.directory;
  $("directory").title = project.directory;
  document.title = `${project.name} · sense`;

  for (const radio of document.querySelectorAll("input[name=show]")) {
    radio.addEventListener("change", () => setShow(radio.value));
  }
  $("stop-all").addEventListener("click", stopAll);
  $("logout").addEventListener("click", logout);
  $("close-output").addEventListener("click", closeOutput);
  $("load-earlier").addEventListener("click", loadEarlier);
  $("download").addEventListener("click", download);
  $("output").addEventListener("scroll", () => {
    const pre = $("output");
    $("follow").checked = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  });
  connect();
  // Dashboards that ended a while ago leave the "Active" view.
  setInterval(render, 5000);
}

function connect() {
  const source = new EventSource(streamUrl("/web/events"));
  source.addEventListener("open", () => setConnection(true));
  source.addEventListener("dashboards", (event) => {
    const data = JSON.parse(event.data);
    if (data.snapshot) {
      reconcile(data.dashboards);
    }
    for (const dashboard of data.dashboards) {
      merge(dashboard, true);
    }
    state.quota = data.quota;
    render();
  });
  source.addEventListener("load", (event) => {
    state.samples.push(...JSON.parse(event.data).samples);
    const oldest = Date.now() / 1000 - CHART_SECONDS;
    state.samples = state.samples.filter((sample) => sample.time >= oldest);
    render();
  });
  source.addEventListener("logout", () => {
    source.close();
    window.location.replace("/");
  });
  source.addEventListener("error", () => {
    setConnection(false);
    if (source.readyState === EventSource.CLOSED) {
      // Refused rather than cut: logged out (request() goes to the login form), or gone.
      request("/web/session").then(
        () => setTimeout(connect, 2000),
        () => setTimeout(connect, 5000),
      );
    }
  });
}

// After a reconnection: dashboards this page thinks active, and the server does not.
function reconcile(active) {
  const ids = new Set(active.map((dashboard) => dashboard.id));
  for (const dashboard of state.rows.values()) {
    if (!ENDED.has(dashboard.status) && !ids.has(dashboard.id)) {
      request(`${state.projectUrl}/dashboards/${dashboard.id}`).then((fresh) => {
        merge(fresh, true);
        render();
      });
    }
  }
}

// Statuses only move forward: an older answer never takes a dashboard back.
function merge(dashboard, live) {
  const known = state.rows.get(dashboard.id);
  if (known && RANK[dashboard.status] < RANK[known.status]) {
    return;
  }
  const endsNow = ENDED.has(dashboard.status) && (!known || !ENDED.has(known.status));
  if (live && endsNow) {
    state.endedAt.set(dashboard.id, Date.now());
  }
  state.rows.set(dashboard.id, dashboard);
  if (state.output && state.output.id === dashboard.id) {
    describeOutput();
  }
}

async function setShow(value) {
  state.show = value;
  if (value === "all" && !state.historyLoaded) {
    try {
      for (const dashboard of await request(`${state.projectUrl}/dashboards`)) {
        merge(dashboard, false);
      }
      state.historyLoaded = true;
    } catch (error) {
      notify(`Could not list the dashboards: ${error.message}`, true);
    }
  }
  render();
}

async function stop(id) {
  state.stopping.add(id);
  render();
  try {
    const dashboard = await request(`${state.projectUrl}/dashboards/${id}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ status: "stopped" }),
    });
    merge(dashboard, true);
    notify(`${describe(dashboard)}: ${dashboard.status}.`);
  } catch (error) {
    notify(`Could not stop dashboard ${id}: ${error.message}`, true);
  } finally {
    state.stopping.delete(id);
    render();
  }
}

async function stopAll() {
  state.stoppingAll = true;
  setText($("stop-all"), "Stopping…");
  render();
  try {
    const stopped = await request("/web/stop-workers", { method: "POST" });
    for (const dashboard of stopped) {
      merge(dashboard, true);
    }
    notify(stopped.length === 1 ? "1 worker stopped." : `${stopped.length} workers stopped.`);
  } catch (error) {
    notify(`Could not stop the workers: ${error.message}`, true);
  } finally {
    state.stoppingAll = false;
    setText($("stop-all"), "Stop all workers");
    render();
  }
}

async function logout() {
  try {
    await request("/web/logout", { method: "POST" });
  } finally {
    localStorage.removeItem("sense-csrf");
    window.location.replace("/");
  }
}

// -- the dashboards table -------------------------------------------------------------------

function isWorker(dashboard) {
  return dashboard.master_id !== null;
}

function describe(dashboard) {
  return `${isWorker(dashboard) ? "Worker" : "Master"} ${dashboard.id}`;
}

function isShown(dashboard) {
  if (state.show === "all" || !ENDED.has(dashboard.status)) {
    return true;
  }
  const ended = state.endedAt.get(dashboard.id);
  return ended !== undefined && Date.now() - ended < LINGER_MS;
}

function render() {
  const shown = [...state.rows.values()].filter(isShown).sort((a, b) => b.id - a.id);
  const wanted = new Set(shown.map((dashboard) => dashboard.id));
  for (const [id, tr] of elements) {
    if (!wanted.has(id)) {
      tr.remove();
      elements.delete(id);
    }
  }
  const tbody = $("rows");
  let previous = null;
  for (const dashboard of shown) {
    let tr = elements.get(dashboard.id);
    if (!tr) {
      tr = createRow(dashboard.id);
      elements.set(dashboard.id, tr);
    }
    updateRow(tr, dashboard);
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (tr !== expected) {
      tbody.insertBefore(tr, expected);
    }
    previous = tr;
  }
  $("empty").hidden = shown.length > 0;
  setText($("empty-text"), state.show === "all" ? "No dashboards yet." : "No active dashboards.");
  const active = [...state.rows.values()].filter((d) => !ENDED.has(d.status));
  $("stop-all").disabled = state.stoppingAll || !active.some(isWorker);
  renderSummary(active);
  renderLoad();
}

const COLUMNS = [
  "id", "name", "status", "master", "ip", "ports", "size", "started", "exit", "cpu", "memory",
  "actions",
];
const CLASSES = {
  id: "num mono", master: "num mono", ip: "mono", ports: "mono", exit: "num mono",
  cpu: "num", memory: "num", actions: "actions", name: "name",
};

function createRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.id = id;
  for (const column of COLUMNS) {
    const cell = document.createElement(column === "id" ? "th" : "td");
    if (column === "id") {
      cell.scope = "row";
    }
    cell.className = CLASSES[column] || "";
    cell.dataset.column = column;
    tr.appendChild(cell);
  }
  return tr;
}

function cell(tr, column) {
  return tr.children[COLUMNS.indexOf(column)];
}

function setText(element, text) {
  if (element.textContent !== text) {
    element.textContent = text;
  }
}

function updateRow(tr, dashboard) {
  const ended = ENDED.has(dashboard.status);
  tr.classList.toggle("ended", ended);
  tr.classList.toggle("selected", state.output !== null && state.output.id === dashboard.id);
  setText(cell(tr, "id"), String(dashboard.id));
  setText(cell(tr, "name"), dashboard.name);
  cell(tr, "name").title = dashboard.name;

  const status = cell(tr, "status");
  if (status.dataset.value !== dashboard.status) {
    status.dataset.value = dashboard.status;
    const badge = document.createElement("span");
    badge.className = `status ${dashboard.status}`;
    badge.textContent = dashboard.status;
    status.replaceChildren(badge);
  }
  setText(cell(tr, "master"), isWorker(dashboard) ? String(dashboard.master_id) : "–");
  setText(cell(tr, "ip"), dashboard.project_ip);
  setText(cell(tr, "ports"), ports(dashboard.public_port_mapping));
  setText(cell(tr, "size"), String(dashboard.size));
  renderTime(cell(tr, "started"), dashboard.started_at);
  setText(cell(tr, "exit"), dashboard.exit_code === null ? "" : String(dashboard.exit_code));

  const load = ended ? undefined : latestLoad(dashboard.id);
  renderCpu(cell(tr, "cpu"), dashboard.id, load);
  setText(cell(tr, "memory"), load ? bytes(load.memory) : "");

  const actions = cell(tr, "actions");
  const stoppable = isWorker(dashboard) && !ended;
  const selected = state.output !== null && state.output.id === dashboard.id;
  const key = `${stoppable}:${state.stopping.has(dashboard.id)}:${selected}`;
  if (actions.dataset.key !== key) {
    actions.dataset.key = key;
    const hadFocus = actions.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    const output = button("Output", `Output of ${describe(dashboard).toLowerCase()}`, "small");
    output.dataset.action = "output";
    output.setAttribute("aria-pressed", String(selected));
    output.addEventListener("click", () => (selected ? closeOutput() : openOutput(dashboard.id)));
    const children = [output];
    if (stoppable) {
      const stopping = state.stopping.has(dashboard.id);
      const stopButton = button(stopping ? "Stopping…" : "Stop", `Stop ${describe(dashboard).toLowerCase()}`, "small danger");
      stopButton.dataset.action = "stop";
      stopButton.disabled = stopping;
      stopButton.addEventListener("click", () => stop(dashboard.id));
      children.push(stopButton);
    }
    actions.replaceChildren(...children);
    const again = children.find((child) => child.dataset.action === hadFocus) || (hadFocus ? output : null);
    if (again) {
      again.focus();
    }
  }
}

function button(text, label, className) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  element.setAttribute("aria-label", label);
  return element;
}

function ports(mapping) {
  return Object.entries(mapping)
    .map(([inside, outside]) => (String(inside) === String(outside) ? String(outside) : `${inside}→${outside}`))
    .join(", ");
}

function renderTime(element, iso) {
  if (element.dataset.value === String(iso)) {
    return;
  }
  element.dataset.value = String(iso);
  if (!iso) {
    element.replaceChildren();
    return;
  }
  const when = new Date(iso);
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = when.toLocaleString();
  const today = when.toDateString() === new Date().toDateString();
  time.textContent = today
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : when.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  element.replaceChildren(time);
}

function renderCpu(element, id, load) {
  if (!load || load.cpu === null) {
    setText(element, "");
    return;
  }
  const values = state.samples
    .map((sample) => sample.dashboards[id])
    .filter((entry) => entry && entry.cpu !== null)
    .map((entry) => entry.cpu);
  let wrapper = element.firstChild;
  if (!wrapper || wrapper.nodeType !== Node.ELEMENT_NODE) {
    wrapper = document.createElement("span");
    wrapper.className = "cpu-cell";
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 60 16");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    svg.appendChild(document.createElementNS(SVG, "polyline"));
    wrapper.append(svg, document.createElement("span"));
    element.replaceChildren(wrapper);
  }
  const top = Math.max(100, ...values);
  const step = values.length > 1 ? 60 / (values.length - 1) : 0;
  const points = values.map((value, i) => `${(i * step).toFixed(1)},${(16 - (value / top) * 15).toFixed(1)}`);
  wrapper.firstChild.firstChild.setAttribute("points", points.join(" "));
  setText(wrapper.lastChild, `${Math.round(load.cpu)}%`);
}

function latestLoad(id) {
  const last = state.samples[state.samples.length - 1];
  return last ? last.dashboards[id] : undefined;
}

// -- load and quota -------------------------------------------------------------------------

function renderSummary(active) {
  const running = active.filter((d) => d.status === "running").length;
  setText($("active-count"), String(active.length));
  const starting = active.length - running;
  setText($("active-detail"), starting ? `${running} running, ${starting} starting` : `running`);
  if (state.quota) {
    const { used, total } = state.quota;
    setText($("quota"), `${used} / ${total}`);
    const bar = $("quota-bar");
    bar.style.width = `${total ? Math.min(100, (100 * used) / total) : 0}%`;
    bar.classList.toggle("full", used >= total);
  }
}

function renderLoad() {
  const last = state.samples[state.samples.length - 1];
  if (!last) {
    return;
  }
  const dashboards = Object.values(last.dashboards);
  const dashboardCpu = dashboards.reduce((sum, d) => sum + (d.cpu || 0), 0);
  const dashboardMemory = dashboards.reduce((sum, d) => sum + d.memory, 0);
  setText($("machine-cpu"), last.cpu === null ? "–" : `${Math.round(last.cpu)}%`);
  setText(
    $("machine-cpu-detail"),
    `of ${last.cpus} CPU${last.cpus === 1 ? "" : "s"} · dashboards ${Math.round(dashboardCpu / last.cpus)}%`,
  );
  setText($("machine-memory"), bytes(last.memory));
  setText($("machine-memory-detail"), `of ${bytes(last.memory_total)} · dashboards ${bytes(dashboardMemory)}`);
  setText($("cpu-scale"), `0–100% of ${last.cpus} CPU${last.cpus === 1 ? "" : "s"}`);
  setText($("memory-scale"), `0–${bytes(last.memory_total)}`);

  const now = Date.now() / 1000;
  const sum = (sample, field) => Object.values(sample.dashboards).reduce((total, d) => total + (d[field] || 0), 0);
  const withCpu = state.samples.filter((sample) => sample.cpu !== null);
  drawChart($("cpu-chart"), now, [
    { name: "machine", points: withCpu.map((s) => [s.time, s.cpu / 100]) },
    { name: "dashboards", points: withCpu.map((s) => [s.time, sum(s, "cpu") / 100 / s.cpus]) },
  ]);
  drawChart($("memory-chart"), now, [
    { name: "machine", points: state.samples.map((s) => [s.time, s.memory / s.memory_total]) },
    { name: "dashboards", points: state.samples.map((s) => [s.time, sum(s, "memory") / s.memory_total]) },
  ]);
}

// Lines over the last CHART_SECONDS, values from 0 to 1, in a 300 x 80 box.
function drawChart(svg, now, series) {
  const x = (time) => (300 * (time - (now - CHART_SECONDS))) / CHART_SECONDS;
  const y = (value) => 79 - 78 * Math.max(0, Math.min(1, value));
  const children = [];
  for (const level of [0.25, 0.5, 0.75]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", "300");
    line.setAttribute("y1", String(y(level)));
    line.setAttribute("y2", String(y(level)));
    children.push(line);
  }
  for (const { name, points } of series) {
    if (points.length < 2) {
      continue;
    }
    const coordinates = points.map(([time, value]) => `${x(time).toFixed(1)},${y(value).toFixed(1)}`);
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("class", `area ${name}`);
    const first = x(points[0][0]).toFixed(1);
    const last = x(points[points.length - 1][0]).toFixed(1);
    area.setAttribute("points", `${first},80 ${coordinates.join(" ")} ${last},80`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", `line ${name}`);
    line.setAttribute("points", coordinates.join(" "));
    children.push(area, line);
  }
  svg.replaceChildren(...children);
}

// -- a dashboard's output -------------------------------------------------------------------

function openOutput(id) {
  closeOutput();
  const out = { id, source: null, chunks: [], chars: 0, start: null, ended: null };
  state.output = out;
  $("output").replaceChildren();
  $("follow").checked = true;
  $("download").href = `${state.projectUrl}/dashboards/${id}/logs`;
  $("download").setAttribute("download", `dashboard-${id}.log`);
  $("output-section").hidden = false;
  describeOutput();
  updateEarlier();

  const source = new EventSource(streamUrl(`/web/dashboards/${id}/output`));
  out.source = source;
  source.addEventListener("start", (event) => {
    if (out.chunks.length === 0) {
      out.start = JSON.parse(event.data).offset;
      updateEarlier();
    }
  });
  source.addEventListener("output", (event) => {
    const { offset, text } = JSON.parse(event.data);
    appendOutput(out, offset, document.createTextNode(text), text.length);
  });
  source.addEventListener("skipped", (event) => {
    const { offset, bytes: skipped } = JSON.parse(event.data);
    const gap = document.createElement("span");
    gap.className = "gap";
    gap.textContent = `\n… ${bytes(skipped)} of output not shown here: the download has it all …\n\n`;
    appendOutput(out, offset, gap, gap.textContent.length);
  });
  source.addEventListener("end", (event) => {
    source.close();
    out.ended = JSON.parse(event.data).status;
    describeOutput();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      setText($("output-state"), "could not follow the output");
    }
  });
  render();
  $("output-section").scrollIntoView({ block: "nearest" });
}

// The whole log, fetched with the key (a plain link would carry the cookie alone), then saved.
async function download(event) {
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const response = await fetchWithKey(link.href);
    if (!response.ok) {
      throw new Error(`${response.status} ${response.statusText}`);
    }
    const saved = document.createElement("a");
    saved.href = URL.createObjectURL(await response.blob());
    saved.download = link.getAttribute("download");
    saved.click();
    URL.revokeObjectURL(saved.href);
  } catch (error) {
    notify(`Could not download the log: ${error.message}`, true);
  }
}

function describeOutput() {
  const out = state.output;
  const dashboard = state.rows.get(out.id);
  const name = dashboard ? `${describe(dashboard)} · ${dashboard.name}` : `Dashboard ${out.id}`;
  setText($("output-heading"), `Output of ${name}`);
  const status = out.ended || (dashboard ? dashboard.status : "");
  setText($("output-state"), out.ended ? `ended (${status}): all of it shown` : status ? `${status}, following` : "");
}

function closeOutput() {
  if (state.output) {
    state.output.source.close();
    state.output = null;
  }
  $("output-section").hidden = true;
  render();
}

function appendOutput(out, offset, node, chars) {
  const pre = $("output");
  if (out.start === null) {
    out.start = offset;
  }
  pre.appendChild(node);
  out.chunks.push({ node, offset, chars });
  out.chars += chars;
  while (out.chars > MAX_OUTPUT_CHARS && out.chunks.length > 1) {
    const first = out.chunks.shift();
    first.node.remove();
    out.chars -= first.chars;
    out.start = out.chunks[0].offset;
  }
  if ($("follow").checked) {
    pre.scrollTop = pre.scrollHeight;
  }
  updateEarlier();
}

function updateEarlier() {
  const out = state.output;
  const hidden = !out || !out.start;
  $("earlier").hidden = hidden;
  if (!hidden) {
    setText($("earlier-text"), `${bytes(out.start)} of earlier output not shown.`);
  }
}

async function loadEarlier() {
  const out = state.output;
  if (!out || !out.start) {
    return;
  }
  try {
    const piece = await request(`/web/dashboards/${out.id}/output/earlier?before=${out.start}`);
    if (state.output !== out) {
      return;
    }
    const pre = $("output");
    const height = pre.scrollHeight;
    const node = document.createTextNode(piece.text);
    pre.insertBefore(node, pre.firstChild);
    out.chunks.unshift({ node, offset: piece.offset, chars: piece.text.length });
    out.chars += piece.text.length;
    out.start = piece.offset;
    pre.scrollTop += pre.scrollHeight - height;
    updateEarlier();
  } catch (error) {
    notify(`Could not load earlier output: ${error.message}`, true);
  }
}

// -- small things ---------------------------------------------------------------------------

function setConnection(live) {
  const element = $("connection");
  element.classList.toggle("live", live);
  setText(element, live ? "Live" : "Reconnecting…");
}

function notify(message, isError = false) {
  const element = $("notice");
  element.classList.toggle("error", isError);
  element.textContent = message;
}

function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

start().catch((error) => notify(`The page could not start: ${error.message}`, true));
