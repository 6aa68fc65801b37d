// The live console: Socket.IO events keep the lane view current without a page reload.
// The server renders the lane (GET /console/lane); this script decides when to fetch it again,
// moves progress bars in place, and sends the submit and cancel forms without leaving the page.
(function () {
  "use strict";

  var container = document.querySelector("[data-live-url]");
  if (!container || typeof io === "undefined") { return; }
  var laneUrl = container.getAttribute("data-live-url");
  var statusLine = document.getElementById("live-status");
  var LANE_EVENTS = ["request.queued", "request.started", "request.finished", "request.failed",
                     "request.canceled", "lane.updated"];

  function setStatus(state, text) {
    statusLine.setAttribute("data-state", state);
    statusLine.textContent = text;
  }

  // Fetch the lane at most once per animation-sized window, and never two fetches at once.
  var pending = false, inFlight = false, timer = null;
  function refreshSoon() {
    pending = true;
    if (!timer) { timer = setTimeout(refresh, 30); }
  }
  function refresh() {
    timer = null;
    if (inFlight) { return; }
    pending = false;
    inFlight = true;
    fetch(laneUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected || response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) { swapLane(html); } })
      .catch(function () { setStatus("offline", "Connection lost; retrying…"); })
      .then(function () {
        inFlight = false;
        if (pending) { refreshSoon(); }
      });
  }

  function swapLane(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("lane");
    var current = document.getElementById("lane");
    if (fresh && current) { current.replaceWith(document.importNode(fresh, true)); }
    afterSwap();
  }

  function afterSwap() {
    window.Lanes.refreshTimes();
    window.Lanes.refreshDurations();
    window.Lanes.syncFlashes();
    catchUpFlashes();
  }

  // The latest event seen per request: a flash that arrives after its request moved on catches up.
  var RANK = { queued: 0, started: 1, finished: 2, failed: 2, canceled: 2 };
  var latest = {};
  function remember(data) {
    if (data && data.id !== undefined && data.status) {
      latest[data.id] = data;
      window.Lanes.followFlash(data);
    }
  }
  function catchUpFlashes() {
    document.querySelectorAll(".flash[data-request-id]").forEach(function (flash) {
      var seen = latest[flash.getAttribute("data-request-id")];
      if (seen && RANK[seen.status] > (RANK[flash.getAttribute("data-status")] || 0)) { window.Lanes.followFlash(seen); }
    });
  }

  // Choosing another job type (mouse or arrow keys) swaps in its form; the page stays, and so does focus.
  var picker = document.getElementById("job-type");
  if (picker) {
    picker.form.querySelectorAll("[data-hide-with-js]").forEach(function (button) { button.hidden = true; });
    var wanted = null;
    picker.addEventListener("change", function () {
      var url = picker.form.action + "?type=" + encodeURIComponent(picker.value);
      wanted = url;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null || wanted !== url) { return; }  // a later choice overtook this one
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("submit-form");
          var form = document.getElementById("submit-form");
          if (fresh && form) { form.replaceWith(document.importNode(fresh, true)); }
          var note = document.getElementById("rerun-note");
          if (note) { note.remove(); }
          history.replaceState(null, "", url);
        })
        .catch(function () { window.location.href = url; });
    });
  }

  // After a submit, focus goes back to the form: the first field with an error, else the first field.
  function focusForm(form) {
    var target = form.querySelector("[aria-invalid=true]") ||
      form.querySelector(".field input:not([type=hidden]), .field select, .field textarea") ||
      form.querySelector("button[type=submit]");
    if (target) { target.focus(); }
  }

  function moveProgress(data) {
    var row = document.querySelector('[data-request-id="' + data.id + '"] .progress');
    if (!row) { refreshSoon(); return; }
    window.Lanes.showProgress(row, data);
  }

  function showMessages(doc) {
    var incoming = doc.querySelector(".flashes");
    var current = document.querySelector(".flashes");
    if (current) { current.remove(); }
    if (incoming) { document.getElementById("main").prepend(document.importNode(incoming, true)); }
  }

  // Forms inside the console post in the background; a failed submit shows the form's own errors.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var isSubmit = form.id === "submit-form";
    if (!isSubmit && !form.classList.contains("cancel-form")) { return; }
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" })
      .then(function (response) { return response.text().then(function (html) { return [response, html]; }); })
      .then(function (result) {
        var doc = new DOMParser().parseFromString(result[1], "text/html");
        showMessages(doc);
        if (isSubmit) {
          var freshForm = doc.getElementById("submit-form");
          if (freshForm) {
            var imported = document.importNode(freshForm, true);
            form.replaceWith(imported);
            focusForm(imported);
          }
          var note = document.getElementById("rerun-note");
          if (note && result[0].ok) { note.remove(); }
        }
        var freshLane = doc.getElementById("lane");
        if (freshLane) { document.getElementById("lane").replaceWith(document.importNode(freshLane, true)); }
        afterSwap();
      })
      .catch(function () { form.submit(); })
      .then(function () { if (button) { button.disabled = false; } });
  });

  var socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", function () {
    setStatus("live", "Live: updates appear as they happen.");
    refreshSoon();  // after a reconnect, whatever happened meanwhile
  });
  socket.on("disconnect", function () { setStatus("offline", "Connection lost; reconnecting…"); });
  socket.on("connect_error", function () { setStatus("offline", "Connection lost; reconnecting…"); });
  LANE_EVENTS.forEach(function (name) {
    socket.on(name, function (data) {
      if (name !== "lane.updated") { remember(data); }
      refreshSoon();
    });
  });
  socket.on("request.progress", moveProgress);
  window.lanesSocket = socket;  // for the browser tests and the curious
})();
