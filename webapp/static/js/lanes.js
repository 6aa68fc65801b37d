// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

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
  });
})();
