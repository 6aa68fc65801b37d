// /admin, live: polls /admin/overview.json every few seconds, redraws the charts (uPlot, vendored)
// and the tables in place, and says how fresh the numbers are ("updated 3 s ago").
(function () {
  "use strict";

  var root = document.getElementById("admin");
  if (!root || typeof uPlot === "undefined") { return; }
  var url = root.getAttribute("data-overview-url");
  var pollMs = 1000 * Number(root.getAttribute("data-poll-seconds") || 5);
  var updated = document.getElementById("updated");
  var lastUpdate = null, failing = false;
  var STATUS_WORDS = { queued: "Queued", started: "Running", finished: "Finished", failed: "Failed", canceled: "Canceled" };

  function cssColor(name, fallback) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  }

  var CHARTS = {
    throughput: { keys: ["finished", "failed"], labels: ["finished", "failed"], colors: ["#1e8e3e", "#d93025"] },
    wait: { keys: ["wait_p50", "wait_p95"], labels: ["p50 (s)", "p95 (s)"], colors: ["#2453c7", "#e37400"] },
    run: { keys: ["run_p50", "run_p95"], labels: ["p50 (s)", "p95 (s)"], colors: ["#2453c7", "#e37400"] },
    lanes: { keys: ["lanes_with_work", "lanes_running"], labels: ["with work", "running a job"],
             colors: ["#8e24aa", "#00897b"] }
  };
  var charts = {};

  function chartData(series, spec) {
    return [series.minutes].concat(spec.keys.map(function (key) { return series[key]; }));
  }

  function drawCharts(series) {
    Object.keys(CHARTS).forEach(function (name) {
      var spec = CHARTS[name];
      var figure = root.querySelector('[data-chart="' + name + '"]');
      if (!figure) { return; }
      var plot = figure.querySelector(".chart-plot");
      var data = chartData(series, spec);
      var total = 0, points = 0;
      spec.keys.forEach(function (key) {
        series[key].forEach(function (value) { if (value !== null) { total += value; points += 1; } });
      });
      figure.setAttribute("data-total", String(Math.round(total * 1000) / 1000));
      figure.setAttribute("data-points", String(points));
      if (charts[name]) { charts[name].setData(data); return; }
      var muted = cssColor("--muted", "#5b6474"), grid = cssColor("--border", "#d9dde4");
      var axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      charts[name] = new uPlot({
        width: Math.max(plot.clientWidth, 200),
        height: 200,
        scales: { x: { time: true } },
        series: [{}].concat(spec.keys.map(function (key, index) {
          return { label: spec.labels[index], stroke: spec.colors[index], width: 2, spanGaps: false,
                   points: { show: true, size: 6 } };  // sparse minutes still show
        })),
        axes: [axis, Object.assign({ size: 48 }, axis)]
      }, data, plot);
    });
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (name) {
      var plot = root.querySelector('[data-chart="' + name + '"] .chart-plot');
      charts[name].setSize({ width: Math.max(plot.clientWidth, 200), height: 200 });
    });
  });

  function cell(label, content) {
    var td = document.createElement("td");
    td.setAttribute("data-label", label);
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content; }
    return td;
  }
  function link(href, text, code) {
    var a = document.createElement("a");
    a.href = href;
    if (code) { var c = document.createElement("code"); c.textContent = text; a.appendChild(c); } else { a.textContent = text; }
    return a;
  }
  function codeText(text) { var c = document.createElement("code"); c.textContent = text; return c; }
  function muted(text) { var s = document.createElement("span"); s.className = "muted"; s.textContent = text; return s; }

  function fillTable(tableId, emptyId, countId, rows, build) {
    var table = document.getElementById(tableId), body = table.querySelector("tbody");
    body.replaceChildren.apply(body, rows.map(build));
    table.hidden = rows.length === 0;
    document.getElementById(emptyId).hidden = rows.length !== 0;
    document.getElementById(countId).textContent = rows.length;
  }

  function render(body) {
    fillTable("active-lanes", "lanes-empty", "lanes-count", body.lanes, function (lane) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-user-id", lane.user_id);
      tr.append(cell("Lane", link(lane.url, lane.lane, true)), cell("User", lane.username),
                cell("Jobs in queue", String(lane.queued)),
                cell("Served by", lane.lease_holder ? codeText(lane.lease_holder) : muted("no worker")),
                cell("Waiting for a worker", lane.waiting_for_worker ? "yes" : "no"));
      return tr;
    });
    fillTable("workers", "workers-empty", "workers-count", body.workers, function (worker) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-pid", worker.pid);
      tr.append(cell("Name", codeText(worker.name)), cell("PID", String(worker.pid)), cell("State", worker.state),
                cell("Queue", worker.queues.join(", ")),
                cell("Current job", worker.current_job ? link(worker.current_job_url, "#" + worker.current_job) : "—"));
      return tr;
    });
    var supervisors = document.getElementById("supervisors");
    supervisors.replaceChildren.apply(supervisors, body.supervisors.map(function (supervisor) {
      var li = document.createElement("li");
      li.append(codeText(supervisor.id), " ", muted("heartbeat " + Math.round(supervisor.heartbeat_age) + " s ago"));
      return li;
    }));
    supervisors.hidden = body.supervisors.length === 0;
    document.getElementById("supervisors-empty").hidden = body.supervisors.length !== 0;
    document.getElementById("supervisors-count").textContent = body.supervisors.length;

    Object.keys(body.counts_last_hour).forEach(function (status) {
      var row = document.querySelector('#status-counts tr[data-status="' + status + '"] td');
      if (row) { row.textContent = body.counts_last_hour[status]; }
    });
    var sum = function (values) { return values.reduce(function (a, b) { return a + b; }, 0); };
    document.getElementById("tile-lanes").textContent = body.lanes.length;
    document.getElementById("tile-workers").textContent = body.workers.length;
    document.getElementById("tile-supervisors").textContent = body.supervisors.length;
    document.getElementById("tile-finished").textContent = sum(body.series.finished).toLocaleString("en-US");
    document.getElementById("tile-failed").textContent = sum(body.series.failed).toLocaleString("en-US");
    drawCharts(body.series);
  }

  function showFreshness() {
    if (lastUpdate === null) { return; }
    var age = Math.max(0, Math.round((Date.now() - lastUpdate) / 1000));
    updated.setAttribute("data-state", failing ? "stale" : "live");
    updated.setAttribute("data-age", String(age));
    updated.textContent = (failing ? "Could not refresh; last updated " : "Live: updated ") + age + " s ago" +
      (failing ? ", retrying…" : " (every " + pollMs / 1000 + " s).");
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 403) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.json() : Promise.reject(new Error("HTTP " + response.status));
      })
      .then(function (body) {
        if (!body) { return; }
        render(body);
        lastUpdate = Date.now();
        failing = false;
        root.setAttribute("data-generated-at", body.generated_at);
      })
      .catch(function () { failing = true; })
      .then(function () {
        showFreshness();
        setTimeout(poll, pollMs);
      });
  }

  window.lanesAdmin = { charts: charts };  // for the browser tests and the curious
  setInterval(showFreshness, 1000);
  poll();
})();
