// The home page's workspace table and "New workspace" form (home.html).
//
// Rows are updated in place, never rebuilt, so keyboard focus stays where the user left
// it while the table refreshes. A workspace's state comes from Codeyard's status endpoint
// (RUNNING, STOPPED or ERROR with its reason, from the container itself); while the Hub is
// starting or stopping it, the Hub's own `pending` wins (STARTING, STOPPING).
(function () {
  "use strict";

  var cy = window.codeyard;
  var user = window.jhdata.user;
  var rows = document.getElementById("cy-rows");
  var empty = document.getElementById("cy-empty");
  var alertBox = document.getElementById("cy-alert");
  var form = document.getElementById("cy-new");
  var formError = document.getElementById("cy-form-error");
  var createButton = document.getElementById("cy-create");
  var newProgress = cy.progressView(document.getElementById("cy-new-progress"));
  var profileSelect = document.getElementById("cy-profile");
  var credUser = document.getElementById("cy-cred-user");
  var credSecret = document.getElementById("cy-credential");
  var HTTP_RE = /^https?:\/\//i;
  var NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  var STATE_CLASS = {
    RUNNING: "text-bg-success",
    STOPPED: "text-bg-secondary",
    ERROR: "text-bg-danger",
    STARTING: "text-bg-info",
    STOPPING: "text-bg-warning",
  };
  // Workspaces this page is following a spawn of: their progress shows in the row.
  var following = {};
  var refreshTimer = null;

  function profileName(key) {
    for (var i = 0; i < profileSelect.options.length; i++) {
      if (profileSelect.options[i].value === key) return profileSelect.options[i].text.trim();
    }
    return key || "";
  }

  function say(text, kind) {
    alertBox.className = text ? "alert alert-" + (kind || "info") : "";
    alertBox.textContent = text || "";
  }

  function relativeTime(iso) {
    if (!iso) return "Never";
    var seconds = (Date.parse(iso) - Date.now()) / 1000;
    var fmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
    var units = [
      ["day", 86400],
      ["hour", 3600],
      ["minute", 60],
    ];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) {
        return fmt.format(Math.round(seconds / units[i][1]), units[i][0]);
      }
    }
    return fmt.format(Math.round(seconds), "second");
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, attrs[k]);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function makeRow(name) {
    var tr = el("tr", { "data-workspace": name, class: "home-server-row" });
    var th = el("th", { scope: "row", class: "cy-name", tabindex: "-1" }, name);
    tr.appendChild(th);
    ["cy-repo", "cy-size", "cy-host", "cy-state", "cy-activity", "cy-actions"].forEach(
      function (cls) {
        tr.appendChild(el("td", { class: cls }));
      },
    );
    var state = tr.querySelector(".cy-state");
    state.appendChild(el("span", { class: "badge cy-state-badge" }));
    state.appendChild(el("div", { class: "small text-danger cy-reason" }));
    var progress = el("div", { class: "cy-row-progress mt-1", hidden: "" });
    var bar = el("div", {
      class: "progress",
      role: "progressbar",
      "aria-label": "Start progress of " + name,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      style: "height: 0.4rem",
    });
    bar.appendChild(el("div", { class: "progress-bar", style: "width: 0%" }));
    progress.appendChild(bar);
    progress.appendChild(el("div", { class: "small cy-progress-message" }));
    state.appendChild(progress);

    var actions = tr.querySelector(".cy-actions");
    var open = el("a", {
      class: "btn btn-sm btn-primary me-1 cy-open",
      "aria-label": "Open workspace " + name,
    }, "Open");
    var start = el("button", {
      type: "button",
      class: "btn btn-sm btn-success me-1 cy-start",
      "aria-label": "Start workspace " + name,
    }, "Start");
    var stop = el("button", {
      type: "button",
      class: "btn btn-sm btn-warning me-1 cy-stop",
      "aria-label": "Stop workspace " + name,
    }, "Stop");
    var del = el("button", {
      type: "button",
      class: "btn btn-sm btn-outline-danger cy-delete",
      "aria-label": "Delete workspace " + name,
    }, "Delete");
    start.addEventListener("click", function () {
      startWorkspace(name);
    });
    stop.addEventListener("click", function () {
      stopWorkspace(name);
    });
    del.addEventListener("click", function () {
      deleteWorkspace(name);
    });
    [open, start, stop, del].forEach(function (b) {
      actions.appendChild(b);
    });
    return tr;
  }

  function rowOf(name) {
    return rows.querySelector('tr[data-workspace="' + CSS.escape(name) + '"]');
  }

  // Where focus goes when the button it was on disappears (e.g. Stop once stopped): the
  // row's first visible button, else its name, so a keyboard user stays in the row.
  function keepFocus(tr, hadFocus) {
    var active = document.activeElement;
    var parked = active && active.classList.contains("cy-name");
    if (hadFocus && (!active || !tr.contains(active) || active.hidden || parked)) {
      var next = tr.querySelector(".cy-actions > :not([hidden]):not([disabled])");
      (next || tr.querySelector(".cy-name")).focus();
    }
  }

  function render(name, model, status) {
    var tr = rowOf(name);
    if (!tr) {
      tr = makeRow(name);
      rows.appendChild(tr);
    }
    var hadFocus = tr.contains(document.activeElement);
    var opts = (status && status.user_options) || model.user_options || {};
    var repo = tr.querySelector(".cy-repo");
    repo.textContent = "";
    if (opts.repo_url) {
      repo.appendChild(el("code", { class: "cy-repo-url" }, opts.repo_url));
      repo.appendChild(document.createTextNode(" "));
      repo.appendChild(
        el("span", { class: "badge text-bg-light border cy-branch" }, opts.branch || "default branch"),
      );
    } else {
      repo.appendChild(el("span", { class: "text-body-secondary" }, "empty workspace"));
    }
    tr.querySelector(".cy-size").textContent = profileName(opts.profile);
    tr.querySelector(".cy-host").textContent = (status && status.host) || "—";

    var state;
    var reason = "";
    if (model.pending === "spawn" || following[name]) state = "STARTING";
    else if (model.pending === "stop") state = "STOPPING";
    else if (status && status.state) {
      state = status.state;
      reason = status.reason || "";
    } else state = model.ready ? "RUNNING" : "STOPPED";
    var badge = tr.querySelector(".cy-state-badge");
    badge.className = "badge cy-state-badge " + (STATE_CLASS[state] || "text-bg-secondary");
    badge.textContent = state;
    tr.dataset.state = state;
    tr.querySelector(".cy-reason").textContent = reason;
    tr.querySelector(".cy-row-progress").hidden = state !== "STARTING";

    var activity = tr.querySelector(".cy-activity");
    activity.textContent = "";
    if (model.last_activity) {
      var time = el("time", { datetime: model.last_activity, title: model.last_activity });
      time.textContent = relativeTime(model.last_activity);
      activity.appendChild(time);
    } else activity.textContent = "Never";

    var busy = state === "STARTING" || state === "STOPPING";
    var running = state === "RUNNING";
    var open = tr.querySelector(".cy-open");
    open.href = model.url;
    open.hidden = busy;
    tr.querySelector(".cy-start").hidden = busy || running;
    tr.querySelector(".cy-stop").hidden = busy || !running;
    tr.querySelector(".cy-delete").hidden = busy;
    keepFocus(tr, hadFocus);
    if (model.pending === "spawn" && !following[name]) follow(name);
    return state;
  }

  // Workspaces being deleted: a refresh already under way neither asks for their status
  // (the Hub may answer 404 by then) nor draws them again.
  var deleting = {};

  // One refresh at a time; a call during one runs another right after it.
  var inflight = null;
  var again = false;

  function refresh() {
    if (inflight) {
      again = true;
      return inflight;
    }
    clearTimeout(refreshTimer);
    inflight = load().then(function () {
      inflight = null;
      if (again) {
        again = false;
        return refresh();
      }
    });
    return inflight;
  }

  function load() {
    return cy
      .list(user)
      .then(function (model) {
        var servers = model.servers || {};
        // The unnamed server is not a workspace: it is never listed or offered here.
        var names = Object.keys(servers)
          .filter(function (n) {
            return n !== "" && !deleting[n];
          })
          .sort();
        return Promise.all(
          names.map(function (n) {
            return cy.status(user, n).catch(function () {
              return null;
            });
          }),
        ).then(function (statuses) {
          var loading = document.getElementById("cy-loading");
          if (loading) loading.remove();
          Array.prototype.slice.call(rows.querySelectorAll("tr[data-workspace]")).forEach(
            function (tr) {
              if (names.indexOf(tr.dataset.workspace) === -1) tr.remove();
            },
          );
          var busy = false;
          names.forEach(function (n, i) {
            var state = render(n, servers[n], statuses[i]);
            busy = busy || state === "STARTING" || state === "STOPPING";
          });
          empty.hidden = names.length > 0;
          refreshTimer = setTimeout(refresh, busy ? 2000 : 15000);
        });
      })
      .catch(function (err) {
        say("Could not load your workspaces: " + err.message, "danger");
        refreshTimer = setTimeout(refresh, 15000);
      });
  }

  function rowProgress(name) {
    var tr = rowOf(name);
    if (!tr) return null;
    var box = tr.querySelector(".cy-row-progress");
    box.hidden = false;
    return cy.progressView(box);
  }

  // Start a workspace (`start.options`: its options, or undefined for the ones it was
  // created with) or only follow a spawn already under way, to its end: in the row and,
  // for a new workspace, in `extra` under the form.
  function follow(name, extra, start) {
    following[name] = true;
    var row = rowProgress(name);
    if (row) row.reset();
    function onEvent(evt) {
      var view = rowProgress(name);
      if (view) view.show(evt);
      else refresh(); // a new workspace: its row appears with the Hub's next answer
      if (extra) extra.show(evt);
    }
    var run = start
      ? cy.startAndFollow(user, name, start.options, onEvent)
      : cy.followProgress(user, name, onEvent);
    return run.then(function (last) {
      delete following[name];
      if (last.ready) say("Workspace " + name + " is running.", "success");
      else if (last.failed) {
        say("Workspace " + name + " did not start: " + (last.message || ""), "danger");
      }
      return refresh().then(function () {
        return last;
      });
    });
  }

  function startWorkspace(name) {
    say("Starting " + name + "…");
    following[name] = true;
    refresh();
    return follow(name, null, { options: undefined }).catch(function (err) {
      delete following[name];
      say("Could not start " + name + ": " + err.message, "danger");
      return refresh();
    });
  }

  function stopWorkspace(name) {
    say("Stopping " + name + "…");
    return cy
      .stop(user, name)
      .then(function () {
        say("Workspace " + name + " stopped; its files are kept.", "success");
        return refresh();
      })
      .catch(function (err) {
        say("Could not stop " + name + ": " + err.message, "danger");
      });
  }

  function deleteWorkspace(name) {
    if (!window.confirm('Delete workspace "' + name + '"? Its container is removed.')) return;
    say("Deleting " + name + "…");
    deleting[name] = true;
    return cy
      .remove(user, name)
      .then(function () {
        var tr = rowOf(name);
        if (tr) tr.remove();
        say("Workspace " + name + " deleted.", "success");
        document.getElementById("cy-new-heading").focus();
        return refresh();
      })
      .catch(function (err) {
        delete deleting[name];
        say("Could not delete " + name + ": " + err.message, "danger");
      });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    formError.hidden = true;
    var name = form.elements.name.value.trim();
    var repo = form.elements.repo_url.value.trim();
    var branch = form.elements.branch.value.trim();
    var problem = "";
    if (!NAME_RE.test(name)) problem = "Give the workspace a name: letters, digits, '.', '_' or '-'.";
    else if (rowOf(name)) problem = "You already have a workspace called " + name + ".";
    else if (branch && !repo) problem = "A branch needs a git URL.";
    if (problem) {
      formError.textContent = problem;
      formError.hidden = false;
      form.elements.name.focus();
      return;
    }
    var options = { profile: form.elements.profile.value, image: form.elements.image.value };
    if (repo) options.repo_url = repo;
    if (repo && branch) options.branch = branch;
    createButton.disabled = true;
    delete deleting[name]; // a name used again is a new workspace
    newProgress.reset();
    newProgress.show({ progress: 0, message: "Requesting workspace " + name });
    refresh();
    storeCredential(name, repo)
      .then(function () {
        return follow(name, newProgress, { options: options });
      })
      .then(function (last) {
        form.reset();
        credentialFields();
        if (last.ready) newProgress.hide();
        else if (!last.failed) newProgress.show({ message: "See the workspace's state above." });
      })
      .catch(function (err) {
        delete following[name];
        newProgress.show({ progress: 100, failed: true, message: err.message });
        formError.textContent = err.message;
        formError.hidden = false;
        return refresh();
      })
      .then(function () {
        createButton.disabled = false;
      });
  });

  // The credential goes to the Hub's store, never into the workspace's options; the
  // fields are emptied once it is stored.
  function storeCredential(name, repo) {
    if (credSecret.disabled || !credSecret.value || !HTTP_RE.test(repo)) {
      return Promise.resolve();
    }
    var body = { username: credUser.value.trim(), secret: credSecret.value };
    var path =
      "codeyard/workspaces/" + encodeURIComponent(user) + "/" + encodeURIComponent(name) + "/credential";
    return cy.api("PUT", path, body).then(function () {
      credSecret.value = "";
    });
  }

  // Only http(s) remotes take a user name and token.
  function credentialFields() {
    var on = HTTP_RE.test(form.elements.repo_url.value.trim());
    credUser.disabled = !on;
    credSecret.disabled = !on;
  }
  form.elements.repo_url.addEventListener("input", credentialFields);
  credentialFields();

  document.getElementById("cy-new-link").addEventListener("click", function (e) {
    e.preventDefault();
    form.elements.name.focus();
  });

  refresh();
  // signal that page has finished loading (mostly for tests), as JupyterHub's pages do
  window._jupyterhub_page_loaded = true;
})();
