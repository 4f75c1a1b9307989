// "Copy OEM link": the link shown once goes to the clipboard (a static file: the CSP allows no inline script).
(function () {
  "use strict";
  var button = document.getElementById("copy-link");
  if (!button) { return; }
  button.addEventListener("click", function () {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var said = document.getElementById("copied");
    field.select();
    var done = function () { said.textContent = "copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { said.textContent = "select it and copy"; });
    } else {
      document.execCommand("copy");
      done();
    }
  });
})();
