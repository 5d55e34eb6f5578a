// The page at /: everything comes from the JSON API, authenticated by the
// session cookie (EventSource cannot send an Authorization header). Text
// from the server is only ever set with textContent, never parsed as HTML.
"use strict";

(function () {
  const FINISHED = new Set(["completed", "failed", "cancelled"]);
  const $ = (id) => document.getElementById(id);

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function show(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function when(value) {
    if (!value) return "";
    const moment = new Date(value);
    return isNaN(moment) ? String(value) : moment.toLocaleString();
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  // One request to the API: {ok, status, body, retryAfter}. Never throws.
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      return { ok: false, status: 0, body: { error: "The server cannot be reached.", code: "network" } };
    }
    let data = {};
    try {
      data = await response.json();
    } catch (error) {
      data = {};
    }
    if (response.status === 401 && $("app")) {
      notice("Your session has ended: reload the page to log in again.");
    }
    return {
      ok: response.ok,
      status: response.status,
      body: data || {},
      retryAfter: response.headers.get("Retry-After"),
    };
  }

  function errorText(result) {
    let text = (result.body && result.body.error) || `The request failed (HTTP ${result.status}).`;
    if (result.status === 429 && result.retryAfter && !/\d+ seconds/.test(text)) {
      text += ` Try again in ${result.retryAfter} seconds.`;
    }
    return text;
  }

  function notice(text) {
    const node = $("notice");
    if (node) show(node, text);
  }

  // --- Logging in and out ---------------------------------------------------

  function setUpLogin() {
    const form = $("login-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      $("login-button").disabled = true;
      const result = await api("POST", "/ui/login", {
        username: $("login-username").value,
        password: $("login-password").value,
      });
      $("login-button").disabled = false;
      if (result.ok) {
        window.location.reload();
      } else {
        show($("login-error"), errorText(result));
      }
    });
  }

  function setUpLogout() {
    $("logout-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = await api("POST", "/ui/logout");
      if (result.ok) window.location.reload();
      else notice(errorText(result));
    });
  }

  // --- The start form, generated from the type's JSON Schema ---------------

  let types = [];
  let fields = []; // {name, kind, input, error, schema}

  // `anyOf: [X, {type: null}]` (a nullable field) is edited as X.
  function unwrap(schema) {
    if (Array.isArray(schema.anyOf)) {
      const others = schema.anyOf.filter((s) => s.type !== "null");
      if (others.length === 1) {
        return Object.assign({}, others[0], {
          default: schema.default,
          description: schema.description,
        });
      }
    }
    return schema;
  }

  function kindOf(schema) {
    if (Array.isArray(schema.enum)) return "enum";
    if (schema.type === "boolean") return "boolean";
    if (schema.type === "integer") return "integer";
    if (schema.type === "number") return "number";
    if (schema.type === "string") return "string";
    return "json"; // objects, arrays, anything: edited as JSON text
  }

  function inputFor(id, kind, schema, required) {
    const hasDefault = schema.default !== undefined;
    let input;
    if (kind === "enum") {
      input = el("select", { id });
      if (!required || !hasDefault) input.append(el("option", { value: "", text: "—" }));
      schema.enum.forEach((value, index) => {
        const option = el("option", { value: String(index), text: String(value) });
        if (hasDefault && value === schema.default) option.selected = true;
        input.append(option);
      });
    } else if (kind === "boolean") {
      input = el("input", { id, type: "checkbox" });
      input.checked = schema.default === true;
    } else if (kind === "integer" || kind === "number") {
      input = el("input", { id, type: "number", step: kind === "integer" ? "1" : "any" });
      if (schema.minimum !== undefined) input.min = schema.minimum;
      if (schema.maximum !== undefined) input.max = schema.maximum;
      if (hasDefault && schema.default !== null) input.value = String(schema.default);
    } else if (kind === "string" && schema.maxLength !== undefined && schema.maxLength <= 200) {
      input = el("input", { id, type: "text", maxlength: String(schema.maxLength) });
      if (hasDefault && schema.default !== null) input.value = String(schema.default);
    } else if (kind === "string") {
      input = el("textarea", { id, rows: "3" });
      if (hasDefault && schema.default !== null) input.value = String(schema.default);
    } else {
      input = el("textarea", { id, rows: "4", className: "json", placeholder: "JSON" });
      if (hasDefault) input.value = pretty(schema.default);
    }
    if (required) input.setAttribute("aria-required", "true");
    return input;
  }

  function renderFields() {
    const type = types.find((t) => t.name === $("task-type").value);
    const box = $("arg-fields");
    for (const field of fields) field.wrapper.remove();
    fields = [];
    show($("start-error"), "");
    show($("type-description"), type ? type.description : "");
    if (!type) return;
    const schema = type.args_schema || {};
    const required = new Set(schema.required || []);
    const properties = Object.entries(schema.properties || {});
    $("no-args").hidden = properties.length > 0;
    for (const [name, raw] of properties) {
      const property = unwrap(raw);
      const kind = kindOf(property);
      const id = `arg-${name}`;
      const input = inputFor(id, kind, property, required.has(name));
      input.name = name;
      const label = el("label", { for: id, text: name + (required.has(name) ? " *" : "") });
      const help = el("p", { className: "help", text: property.description || "" });
      help.hidden = !property.description;
      const error = el("p", { className: "error field-error", role: "alert" });
      error.hidden = true;
      const wrapper = el("div", { className: `field field-${kind}`, "data-arg": name }, [
        label,
        input,
        help,
        error,
      ]);
      box.append(wrapper);
      fields.push({ name, kind, input, error, wrapper, schema: property, required: required.has(name) });
    }
  }

  // The args object, or null after marking fields the page itself cannot read.
  function collectArgs() {
    const args = {};
    let readable = true;
    for (const field of fields) {
      const { name, kind, input, schema } = field;
      show(field.error, "");
      if (kind === "boolean") {
        args[name] = input.checked;
        continue;
      }
      const raw = input.value;
      if (raw.trim() === "") continue; // left out: the server applies defaults or says it is required
      if (kind === "enum") {
        args[name] = schema.enum[Number(raw)];
      } else if (kind === "integer" || kind === "number") {
        const number = Number(raw);
        // Sent as typed when it is no number, so the server's message explains.
        args[name] = Number.isFinite(number) ? number : raw;
      } else if (kind === "string") {
        args[name] = raw;
      } else {
        try {
          args[name] = JSON.parse(raw);
        } catch (error) {
          show(field.error, `Not valid JSON: ${error.message}`);
          readable = false;
        }
      }
    }
    return readable ? args : null;
  }

  function messages(value) {
    if (Array.isArray(value)) return value.map((v) => (typeof v === "string" ? v : pretty(v))).join(" ");
    if (value && typeof value === "object") {
      return Object.entries(value)
        .map(([key, inner]) => `${key}: ${messages(inner)}`)
        .join("; ");
    }
    return String(value);
  }

  // A 400's `fields` under each input it names; the rest above the button.
  function showFieldErrors(body) {
    const rest = [];
    const errors = body.fields || {};
    for (const [key, value] of Object.entries(errors)) {
      if (key === "args" && value && !Array.isArray(value) && typeof value === "object") {
        for (const [name, inner] of Object.entries(value)) {
          const field = fields.find((f) => f.name === name);
          if (field) show(field.error, messages(inner));
          else rest.push(`${name}: ${messages(inner)}`);
        }
      } else {
        rest.push(`${key}: ${messages(value)}`);
      }
    }
    show($("start-error"), [body.error || "The task was not started.", ...rest].join(" "));
  }

  async function loadTypes() {
    const result = await api("GET", "/tasks/types");
    if (!result.ok) {
      show($("start-error"), errorText(result));
      return;
    }
    types = result.body.types || [];
    const select = $("task-type");
    select.replaceChildren(...types.map((t) => el("option", { value: t.name, text: t.name })));
    if (types.some((t) => t.name === "demo")) select.value = "demo";
    renderFields();
  }

  function setUpStartForm() {
    $("task-type").addEventListener("change", renderFields);
    $("start-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      show($("start-error"), "");
      $("start-result").textContent = "";
      const args = collectArgs();
      if (args === null) {
        show($("start-error"), "Fix the marked fields.");
        return;
      }
      $("start-button").disabled = true;
      const result = await api("POST", "/tasks", { type: $("task-type").value, args });
      $("start-button").disabled = false;
      if (!result.ok) {
        if (result.status === 400) showFieldErrors(result.body);
        else show($("start-error"), errorText(result));
        return;
      }
      const started = result.body;
      $("start-result").textContent = `${started.message}: task ${started.task_id}.`;
      // The stream may have told of the task already (it can start before
      // this answer arrives): its state is newer than the answer's "queued".
      if (!rows.has(started.task_id)) {
        upsertTask({ id: started.task_id, type: started.type, status: started.status });
      }
    });
  }

  // --- The list of tasks, kept current by GET /events ----------------------

  const rows = new Map(); // task id -> {tr, task}
  let detail = null; // the open task: {id, task, lastSeq, source}
  let nextPage = null;

  function progressOf(task) {
    const progress = task.progress || {};
    return { percent: progress.percent || 0, message: progress.message || "" };
  }

  function renderRow(entry) {
    const task = entry.task;
    const progress = progressOf(task);
    const link = el("a", { href: `#task-${task.id}`, text: String(task.id) });
    const status = el("span", { className: `status status-${task.status}`, text: task.status });
    const bar = el("progress", { max: "100" });
    bar.value = task.status === "completed" ? 100 : progress.percent;
    bar.title = progress.message;
    entry.tr.replaceChildren(
      el("td", {}, [link]),
      el("td", { text: task.type || "" }),
      el("td", { className: "status-cell" }, [status]),
      el("td", {}, [bar, el("span", { className: "percent", text: ` ${bar.value}%` })]),
      el("td", { text: when(task.created_at) })
    );
    entry.tr.dataset.status = task.status;
    entry.tr.classList.toggle("selected", detail !== null && detail.id === task.id);
  }

  // Adds or updates a row, keeping the table newest (highest id) first.
  function upsertTask(task) {
    let entry = rows.get(task.id);
    if (entry) {
      entry.task = Object.assign({}, entry.task, task);
    } else {
      entry = { tr: el("tr", { "data-task-id": String(task.id) }), task };
      rows.set(task.id, entry);
      const body = $("task-rows");
      const after = [...body.children].find((tr) => Number(tr.dataset.taskId) < task.id);
      body.insertBefore(entry.tr, after || null);
    }
    renderRow(entry);
    $("no-tasks").hidden = rows.size > 0;
  }

  async function loadTasks(path) {
    const result = await api("GET", path);
    if (!result.ok) {
      show($("tasks-error"), errorText(result));
      return;
    }
    show($("tasks-error"), "");
    for (const task of result.body.results || []) {
      // A row an event made meanwhile is newer than the page just read.
      if (!rows.has(task.id)) upsertTask(task);
    }
    // The link is absolute, as the server sees itself (perhaps http behind
    // an https proxy): only its path and query are followed.
    const next = result.body.next ? new URL(result.body.next, window.location.href) : null;
    nextPage = next ? next.pathname + next.search : null;
    const listed = (result.body.results || []).map((task) => task.id);
    if (nextPage && listed.length) {
      // Rows an event made for tasks older than this page (before it came):
      // "Older tasks" shows them, in their place.
      const oldest = Math.min(...listed);
      for (const [id, entry] of rows) {
        if (id < oldest) {
          entry.tr.remove();
          rows.delete(id);
        }
      }
    }
    $("more-tasks").hidden = !nextPage;
    $("no-tasks").hidden = rows.size > 0;
  }

  function onListEvent(kind, data) {
    const id = data.task_id;
    const oldest = Math.min(...rows.keys());
    if (!rows.has(id) && nextPage && id < oldest) {
      // An older task than the list shows: "Older tasks" will show it.
      if (detail !== null && detail.id === id) onDetailEvent(kind, data);
      return;
    }
    if (kind === "status") {
      const task = { id, status: data.status, attempts: data.attempts };
      if (data.type) task.type = data.type;
      if (data.status === "completed") task.progress = { percent: 100, message: "" };
      upsertTask(task);
    } else if (kind === "progress" && rows.has(id)) {
      upsertTask({ id, progress: { percent: data.percent, message: data.message } });
    }
    if (detail !== null && detail.id === id) onDetailEvent(kind, data);
  }

  function setUpList() {
    $("more-tasks").addEventListener("click", () => {
      if (nextPage) loadTasks(nextPage);
    });
    // Opened before the list is read, so no change falls between the two.
    const source = new EventSource("/events");
    const state = $("live-state");
    source.addEventListener("open", () => {
      state.textContent = "live";
      state.dataset.state = "live";
    });
    source.addEventListener("error", () => {
      // EventSource reconnects by itself (with Last-Event-ID) unless refused.
      const closed = source.readyState === EventSource.CLOSED;
      state.textContent = closed ? "not live: reload the page" : "reconnecting…";
      state.dataset.state = closed ? "closed" : "reconnecting";
    });
    for (const kind of ["status", "progress"]) {
      source.addEventListener(kind, (event) => onListEvent(kind, JSON.parse(event.data)));
    }
    loadTasks("/tasks?page_size=50");
  }

  // --- One task: detail, logs (then live through /tasks/{id}/events) -------

  function closeStream() {
    if (detail && detail.source) {
      detail.source.close();
      detail.source = null;
    }
  }

  function renderDetail(task) {
    detail.task = Object.assign({}, detail.task || {}, task);
    const t = detail.task;
    const progress = progressOf(t);
    $("detail-id").textContent = String(t.id);
    $("detail-type").textContent = t.type || "";
    const status = $("detail-status");
    status.textContent = (t.status || "") + (t.cancel_requested && !FINISHED.has(t.status) ? " (cancelling)" : "");
    status.className = `status status-${t.status || "unknown"}`;
    $("detail-attempts").textContent = t.attempts === undefined ? "" : String(t.attempts);
    $("detail-created").textContent = when(t.created_at);
    $("detail-started").textContent = when(t.started_at);
    $("detail-finished").textContent = when(t.finished_at);
    const percent = t.status === "completed" ? 100 : progress.percent;
    $("detail-progress").value = percent;
    $("detail-percent").textContent = `${percent}%`;
    $("detail-progress-message").textContent = progress.message;
    $("detail-args").textContent = t.args === undefined ? "" : pretty(t.args);
    const hasOutput = t.status === "completed" && t.output !== undefined && t.output !== null;
    $("detail-output").textContent = hasOutput ? pretty(t.output) : "";
    $("detail-output-block").hidden = !hasOutput;
    $("detail-error").textContent = t.error ? pretty(t.error) : "";
    $("detail-error-block").hidden = !t.error;
    $("cancel-button").hidden = FINISHED.has(t.status) || Boolean(t.cancel_requested);
    $("retry-button").hidden = !(t.status === "failed" || t.status === "cancelled");
  }

  function appendLog(line) {
    if (line.seq <= detail.lastSeq) return; // fetched already, or sent again on resume
    detail.lastSeq = line.seq;
    const item = el("li", { className: `log log-${String(line.level).toLowerCase()}`, "data-seq": String(line.seq) }, [
      el("time", { text: when(line.at) }),
      el("span", { className: "level", text: line.level }),
      el("span", { className: "message", text: line.message }),
    ]);
    $("detail-logs").append(item);
    $("no-logs").hidden = true;
  }

  async function loadLogs(id) {
    for (;;) {
      const result = await api("GET", `/tasks/${id}/logs?after=${detail.lastSeq}&limit=1000`);
      if (detail === null || detail.id !== id) return;
      if (!result.ok) {
        show($("detail-problem"), errorText(result));
        return;
      }
      for (const line of result.body.results || []) appendLog(line);
      if (!result.body.has_more) return;
    }
  }

  async function refreshDetail(id) {
    const result = await api("GET", `/tasks/${id}`);
    if (detail === null || detail.id !== id) return false;
    if (!result.ok) {
      show($("detail-problem"), errorText(result));
      return false;
    }
    renderDetail(result.body);
    upsertTask(result.body);
    return true;
  }

  function onDetailEvent(kind, data) {
    if (kind === "log") {
      appendLog(data);
    } else if (kind === "progress") {
      renderDetail({ progress: { percent: data.percent, message: data.message } });
    } else if (kind === "status") {
      const was = detail.task && detail.task.status;
      renderDetail({ status: data.status, attempts: data.attempts });
      if (data.finished) {
        closeStream();
        // The output, error and times come with the full task.
        if (was !== data.status || !detail.task.finished_at) refreshDetail(detail.id);
      }
    }
  }

  function openStream(id) {
    closeStream();
    const source = new EventSource(`/tasks/${id}/events`);
    detail.source = source;
    for (const kind of ["status", "progress", "log"]) {
      source.addEventListener(kind, (event) => {
        if (detail !== null && detail.id === id && detail.source === source) {
          onDetailEvent(kind, JSON.parse(event.data));
        }
      });
    }
  }

  async function openDetail(id) {
    closeStream();
    detail = { id, task: { id }, lastSeq: 0, source: null };
    $("detail").hidden = false;
    show($("detail-problem"), "");
    $("detail-logs").replaceChildren();
    $("no-logs").hidden = false;
    for (const entry of rows.values()) renderRow(entry);
    renderDetail({});
    if (!(await refreshDetail(id))) return;
    await loadLogs(id);
    if (detail !== null && detail.id === id && !FINISHED.has(detail.task.status)) openStream(id);
  }

  function closeDetail() {
    closeStream();
    detail = null;
    $("detail").hidden = true;
    for (const entry of rows.values()) renderRow(entry);
  }

  async function act(action) {
    const id = detail.id;
    show($("detail-problem"), "");
    const result = await api("POST", `/tasks/${id}/${action}`);
    if (detail === null || detail.id !== id) return;
    if (!result.ok) {
      show($("detail-problem"), errorText(result));
      return;
    }
    renderDetail(result.body);
    upsertTask(result.body);
    if (!FINISHED.has(result.body.status) && !detail.source) openStream(id);
  }

  function route() {
    const match = /^#task-(\d+)$/.exec(window.location.hash);
    if (match) openDetail(Number(match[1]));
    else if (detail !== null) closeDetail();
  }

  function setUpDetail() {
    $("cancel-button").addEventListener("click", () => act("cancel"));
    $("retry-button").addEventListener("click", () => act("retry"));
    $("detail-close").addEventListener("click", (event) => {
      event.preventDefault();
      history.pushState(null, "", window.location.pathname + window.location.search);
      closeDetail();
    });
    window.addEventListener("hashchange", route);
    route();
  }

  document.addEventListener("DOMContentLoaded", () => {
    if ($("login-form")) setUpLogin();
    if ($("app")) {
      setUpLogout();
      setUpStartForm();
      setUpList();
      setUpDetail();
      loadTypes();
    }
  });
})();
