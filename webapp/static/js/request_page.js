// The request page, live: the same Socket.IO events as the console move it along without a reload.
// A change of status re-reads the page and swaps #request-state (status, outcome, times, progress,
// result, error); progress moves the bar in place; request.log lines are appended as they come,
// like a CI job's live log. After a reconnect the page is re-read, the log included.
(function () {
  "use strict";

  var article = document.getElementById("request");
  if (!article || typeof io === "undefined") { return; }
  var requestId = Number(article.getAttribute("data-request-id"));
  var statusLine = document.getElementById("live-status");
  var logList = document.getElementById("log-lines");
  var logEmpty = document.getElementById("log-empty");
  var STATE_EVENTS = ["request.queued", "request.started", "request.finished", "request.failed", "request.canceled"];

  function setStatus(state, text) {
    statusLine.setAttribute("data-state", state);
    statusLine.textContent = text;
  }

  var pending = false, inFlight = false;
  function reread() {
    pending = true;
    if (inFlight) { return; }
    pending = false;
    inFlight = true;
    fetch(window.location.pathname, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected || response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html) { swap(new DOMParser().parseFromString(html, "text/html")); } })
      .catch(function () { setStatus("offline", "Connection lost; retrying…"); })
      .then(function () {
        inFlight = false;
        if (pending) { reread(); }
      });
  }

  function swap(doc) {
    var fresh = doc.getElementById("request-state");
    var current = document.getElementById("request-state");
    if (fresh && current) {
      current.replaceWith(document.importNode(fresh, true));
      article.setAttribute("data-status", fresh.getAttribute("data-status"));
    }
    // Log lines only ever get added: take the server's copy when it holds more than the page.
    var freshLog = doc.getElementById("log-lines");
    if (freshLog && freshLog.children.length > logList.children.length) {
      logList.innerHTML = "";
      Array.prototype.forEach.call(freshLog.children, function (line) {
        logList.appendChild(document.importNode(line, true));
      });
      logEmpty.hidden = true;
    }
    var freshEmpty = doc.getElementById("log-empty");
    if (freshEmpty && !logList.children.length) { logEmpty.textContent = freshEmpty.textContent; }
    window.Lanes.refreshTimes();
    window.Lanes.refreshDurations();
    window.Lanes.syncFlashes();
  }

  function moveProgress(data) {
    if (data.id !== requestId) { return; }
    var box = document.querySelector("#request-state .progress");
    if (!box) { reread(); return; }
    window.Lanes.showProgress(box, data);
    var fact = document.querySelector("#request-state .fact-progress");
    if (fact) { fact.textContent = data.progress + "%" + (data.message ? " · " + data.message : ""); }
  }

  function appendLine(data) {
    if (data.id !== requestId) { return; }
    var atBottom = logList.scrollTop + logList.clientHeight >= logList.scrollHeight - 4;
    var item = document.createElement("li");
    var at = document.createElement("span");
    at.className = "log-at";
    at.setAttribute("data-at", data.at);
    at.textContent = String(data.at).slice(11, 19);
    var text = document.createElement("span");
    text.className = "log-text";
    text.textContent = data.text;
    item.appendChild(at);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(text);
    logList.appendChild(item);
    logList.setAttribute("data-count", logList.children.length);
    logEmpty.hidden = true;
    window.Lanes.refreshTimes(logList);
    if (atBottom) { logList.scrollTop = logList.scrollHeight; }
  }

  var socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", function () {
    setStatus("live", "Live: this page follows the request as it happens.");
    reread();  // whatever happened before or while disconnected
  });
  socket.on("disconnect", function () { setStatus("offline", "Connection lost; reconnecting…"); });
  socket.on("connect_error", function () { setStatus("offline", "Connection lost; reconnecting…"); });
  STATE_EVENTS.forEach(function (name) {
    socket.on(name, function (data) {
      window.Lanes.followFlash(data);
      if (data.id === requestId) { reread(); }
    });
  });
  socket.on("request.progress", moveProgress);
  socket.on("request.log", appendLine);
  window.lanesSocket = socket;  // for the browser tests and the curious
})();
