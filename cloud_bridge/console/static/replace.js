// Perform replacement: the results table follows the gateway's answers (polled; no inline script under the CSP).
(function () {
  "use strict";
  var table = document.getElementById("results");
  if (!table) { return; }
  var body = table.querySelector("tbody");
  var url = table.getAttribute("data-poll");
  var POLL_MS = 1000;
  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.text(); })
      .then(function (html) { body.innerHTML = html; })
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { setTimeout(poll, POLL_MS); });
  }
  setTimeout(poll, POLL_MS);
})();
