// The OEM link carries its token in the fragment (#rbo_...), which the browser never sends to a server. This puts it
// in the form, also when a second link is opened in the same tab (only the fragment changes: no reload). Opened
// before logging in, the tab keeps it (sessionStorage: this tab only, gone when it closes) until the form is shown.
(function () {
  "use strict";
  var KEY = "rebadge-oem-link";
  var field = document.getElementById("token");
  function take() {
    var token = decodeURIComponent(window.location.hash.replace(/^#/, ""));
    if (token) {
      window.sessionStorage.setItem(KEY, token);
      history.replaceState(null, "", window.location.pathname);  // out of the address bar and the history
    }
    var kept = window.sessionStorage.getItem(KEY);
    if (field && kept) {
      if (token || !field.value) { field.value = kept; }
      window.sessionStorage.removeItem(KEY);
    }
  }
  window.addEventListener("hashchange", take);
  take();
})();
