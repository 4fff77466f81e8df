// Codeyard's workspace calls, shared by home.html and not_running.html.
//
// Everything goes through JupyterHub's own REST API (start, stop, delete, the progress
// event stream) and Codeyard's status endpoint (/hub/api/codeyard/workspaces/...), with
// the page's XSRF token as JupyterHub's own jhapi.js sends it, so the page has exactly
// the rights of the logged-in user and nothing the API would refuse.
window.codeyard = (function () {
  "use strict";

  var base = window.jhdata.base_url;
  var xsrf = window.jhdata.xsrf_token;

  function withXsrf(url) {
    if (!xsrf) return url;
    return url + (url.indexOf("?") === -1 ? "?" : "&") + "_xsrf=" + encodeURIComponent(xsrf);
  }

  function apiUrl(path) {
    return withXsrf(base + "api/" + path);
  }

  // One API call; resolves with the decoded answer, rejects with the Hub's message.
  function api(method, path, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "X-XSRFToken": xsrf, Accept: "application/json" },
    };
    if (body !== undefined) {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
    return fetch(apiUrl(path), options).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        if (text) {
          try {
            data = JSON.parse(text);
          } catch (e) {
            data = { message: text };
          }
        }
        if (!r.ok) {
          var err = new Error((data && data.message) || r.status + " " + r.statusText);
          err.status = r.status;
          throw err;
        }
        return data;
      });
    });
  }

  function serverPath(user, ws) {
    return "users/" + encodeURIComponent(user) + "/servers/" + encodeURIComponent(ws);
  }

  // Follow the spawn's event stream; `onEvent` sees every event. Resolves with the last
  // one: `ready`, `failed`, or `ended` when the stream closed without either (then the
  // caller asks the API what happened).
  function followProgress(user, ws, onEvent) {
    return new Promise(function (resolve) {
      var source = new EventSource(apiUrl(serverPath(user, ws) + "/progress"));
      source.onmessage = function (e) {
        var evt = JSON.parse(e.data);
        onEvent(evt);
        if (evt.ready || evt.failed) {
          source.close();
          resolve(evt);
        }
      };
      source.onerror = function () {
        source.close();
        resolve({ ended: true });
      };
    });
  }

  // Start a workspace and follow its progress from the first event. The Hub answers the
  // start request only after its slow_spawn_timeout (10 s) unless the spawn ends sooner, so
  // the stream is opened while that request runs; if it was opened too early (the spawn not
  // yet pending, which the Hub answers with 400), it is opened again once the Hub answered.
  function startAndFollow(user, ws, options, onEvent) {
    var answered = false;
    var started = api("POST", serverPath(user, ws), options).then(
      function (value) {
        answered = true;
        return value;
      },
      function (err) {
        answered = true;
        throw err;
      },
    );
    var early = new Promise(function (resolve) {
      setTimeout(resolve, 700);
    }).then(function () {
      return answered ? null : followProgress(user, ws, onEvent);
    });
    return Promise.all([started, early]).then(function (results) {
      var last = results[1];
      return last && !last.ended ? last : followProgress(user, ws, onEvent);
    });
  }

  // A progress box: bar, current message and event log, as on JupyterHub's spawn page.
  function progressView(root) {
    var bar = root.querySelector(".progress-bar");
    var message = root.querySelector(".cy-progress-message");
    var log = root.querySelector(".cy-progress-log");
    return {
      reset: function () {
        root.hidden = false;
        bar.classList.remove("bg-danger");
        bar.style.width = "0%";
        bar.setAttribute("aria-valuenow", "0");
        message.textContent = "";
        if (log) log.textContent = "";
      },
      hide: function () {
        root.hidden = true;
      },
      show: function (evt) {
        if (evt.progress !== undefined) {
          bar.style.width = evt.progress + "%";
          bar.setAttribute("aria-valuenow", String(evt.progress));
        }
        if (evt.message) {
          message.textContent = evt.message;
          if (log) {
            var line = document.createElement("div");
            line.className = "progress-log-event";
            line.textContent = evt.message;
            log.appendChild(line);
          }
        }
        if (evt.failed) bar.classList.add("bg-danger");
      },
    };
  }

  return {
    api: api,
    list: function (user) {
      return api("GET", "users/" + encodeURIComponent(user) + "?include_stopped_servers=1");
    },
    status: function (user, ws) {
      return api(
        "GET",
        "codeyard/workspaces/" + encodeURIComponent(user) + "/" + encodeURIComponent(ws) + "/status",
      );
    },
    // No body: the Hub starts it again with the options it was created with.
    start: function (user, ws, options) {
      return api("POST", serverPath(user, ws), options);
    },
    stop: function (user, ws) {
      return api("DELETE", serverPath(user, ws));
    },
    remove: function (user, ws) {
      return api("DELETE", serverPath(user, ws), { remove: true });
    },
    followProgress: followProgress,
    startAndFollow: startAndFollow,
    progressView: progressView,
  };
})();
