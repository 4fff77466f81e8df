// Auto-start on access (not_running.html): start the stopped workspace through the Hub's
// REST API with no body, which reuses the options it was created with, follow the spawn's
// progress, then reload. Reloading the address the Hub answered with "not running" sends
// the browser on to the running workspace and the page that was asked for (the Hub's
// /hub/user/... and /hub/spawn-pending/...?next= redirects do that once it is ready).
(function () {
  "use strict";

  var root = document.getElementById("codeyard-not-running");
  var ws = root.dataset.workspace;
  if (!ws) return;
  var cy = window.codeyard;
  var user = root.dataset.user;
  var progressBox = document.getElementById("cy-progress");
  var view = cy.progressView(progressBox);
  var errorBox = document.getElementById("cy-error");
  var retry = document.getElementById("cy-retry");

  function fail(message) {
    view.show({ progress: 100, failed: true });
    document.getElementById("progress-details").open = true;
    errorBox.textContent = message;
    errorBox.hidden = false;
    retry.hidden = false;
    retry.disabled = false;
    retry.focus();
  }

  function start() {
    view.reset();
    errorBox.hidden = true;
    retry.hidden = true;
    view.show({ progress: 0, message: "Asking the Hub to start " + ws });
    cy.startAndFollow(user, ws, undefined, view.show)
      .then(function (last) {
        if (last.failed) fail(last.message || "The workspace did not start.");
        else window.location.reload();
      })
      .catch(function (err) {
        fail("Could not start " + ws + ": " + err.message);
      });
  }

  retry.addEventListener("click", start);
  if (root.dataset.failed !== "true") start();
  // signal that page has finished loading (mostly for tests), as JupyterHub's pages do
  window._jupyterhub_page_loaded = true;
})();
