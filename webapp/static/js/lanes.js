// Small progressive enhancements; every page works without them.
// window.Lanes holds what the live pages share: readable times and durations, grouped numbers,
// and flash messages that follow the request they describe.
(function () {
  "use strict";

  var STATUS_WORDS = { queued: "queued", started: "running", finished: "finished", failed: "failed",
                       canceled: "canceled" };

  function formatNumber(value) {
    return typeof value === "number" ? value.toLocaleString("en-US") : String(value);
  }

  // The same words as webapp/console/display.py's duration_in_words.
  function formatDuration(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 60) { return seconds.toFixed(1) + " s"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min " + Math.floor(seconds % 60) + " s"; }
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  function relative(date, now) {
    var seconds = Math.floor((now - date) / 1000);  // floor, like the durations beside it
    if (seconds < 5 && seconds > -5) { return "just now"; }
    if (seconds < 0) { return "in " + formatDuration(-seconds); }
    if (seconds < 60) { return seconds + " s ago"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min ago"; }
    if (seconds < 86400) { return Math.floor(seconds / 3600) + " h ago"; }
    var days = Math.floor(seconds / 86400);
    return days + (days === 1 ? " day ago" : " days ago");
  }

  function parse(text) { return text ? new Date(text) : null; }

  // <time datetime data-relative>: "2 min ago", with the exact local time on hover.
  function refreshTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time[data-relative]").forEach(function (element) {
      var date = parse(element.getAttribute("datetime"));
      if (!date || isNaN(date)) { return; }
      var text = relative(date, now);
      if (element.textContent !== text) { element.textContent = text; }
      if (!element.hasAttribute("data-exact")) {
        element.setAttribute("data-exact", "1");
        element.title = date.toLocaleString() + " (" + element.title + ")";
      }
    });
    (root || document).querySelectorAll(".log-at[data-at]").forEach(function (element) {
      if (element.hasAttribute("data-local")) { return; }
      var date = parse(element.getAttribute("data-at"));
      if (!date || isNaN(date)) { return; }
      element.setAttribute("data-local", "1");
      element.textContent = date.toLocaleTimeString([], { hour12: false });
      element.title = date.toLocaleString();
    });
  }

  // <span class="durations" data-created data-started data-ended>: "waited 4.3 s · ran 5.0 s", moving while pending.
  function refreshDurations(root) {
    var now = new Date();
    (root || document).querySelectorAll(".durations[data-created]").forEach(function (element) {
      var created = parse(element.getAttribute("data-created"));
      var started = parse(element.getAttribute("data-started"));
      var ended = parse(element.getAttribute("data-ended"));
      if (!created) { return; }
      var parts = ["waited " + formatDuration(((started || ended || now) - created) / 1000)];
      if (started) { parts.push("ran " + formatDuration(((ended || now) - started) / 1000)); }
      else if (ended) { parts.push("never ran"); }
      var text = parts.join(" · ");
      if (element.textContent !== text) { element.textContent = text; }
    });
  }

  // A flash about request N (data-request-id) says what the request is doing now, not what it did.
  function followFlash(request) {
    document.querySelectorAll('.flash[data-request-id="' + request.id + '"]').forEach(function (flash) {
      var text = "Request #" + request.id + " ";
      if (request.status === "queued") {
        text += "queued" + (request.position ? " (position " + request.position + ")." : ".");
      } else if (request.status === "started") {
        text += "is running.";
      } else if (request.status === "failed") {
        text += "failed" + (request.error && request.error.message ? ": " + request.error.message : ".");
      } else {
        text += (STATUS_WORDS[request.status] || request.status) + ".";
      }
      flash.textContent = text;
      flash.setAttribute("data-status", request.status);
      flash.classList.remove("flash-success", "flash-error", "flash-info");
      flash.classList.add(request.status === "failed" ? "flash-error"
        : (request.status === "finished" ? "flash-success" : "flash-info"));
    });
  }

  // After a page or a fragment arrives: each flash takes the status its request shows on the page.
  function syncFlashes() {
    document.querySelectorAll(".flash[data-request-id]").forEach(function (flash) {
      var id = flash.getAttribute("data-request-id");
      var shown = document.querySelector('.request[data-request-id="' + id + '"], #request[data-request-id="' + id + '"]');
      if (!shown) { return; }
      var status = shown.getAttribute("data-status");
      if (status && status !== flash.getAttribute("data-status")) {
        followFlash({ id: id, status: status, position: shown.getAttribute("data-position") });
      }
    });
  }

  // A request.progress event, shown in place by a request's .progress box (bar, value and message).
  function showProgress(box, data) {
    var bar = box.querySelector("progress");
    bar.value = data.progress;
    bar.textContent = data.progress + "%";
    box.setAttribute("data-progress", data.progress);
    box.querySelector(".progress-value").textContent = data.progress + "%";
    box.querySelector(".progress-message").textContent = data.message || "";
  }

  window.Lanes = {
    formatNumber: formatNumber, formatDuration: formatDuration, refreshTimes: refreshTimes,
    refreshDurations: refreshDurations, followFlash: followFlash, syncFlashes: syncFlashes,
    showProgress: showProgress
  };

  document.addEventListener("DOMContentLoaded", function () {
    // A select marked data-autosubmit submits its form on change, so its button is not needed.
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
      select.form.querySelectorAll("[data-hide-with-js]").forEach(function (button) { button.hidden = true; });
    });

    // Copy buttons: data-copy names the input whose value to copy.
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) { button.hidden = true; return; }
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.value).then(function () { button.textContent = "Copied"; });
      });
    });

    // Bar lengths come from data-share: the Content-Security-Policy refuses inline style attributes.
    document.querySelectorAll("[data-share]").forEach(function (bar) {
      bar.style.setProperty("--share", bar.getAttribute("data-share"));
    });

    document.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });

    refreshTimes();
    refreshDurations();
    syncFlashes();
    setInterval(function () {
      refreshDurations();
      refreshTimes();
    }, 250);
  });
})();
