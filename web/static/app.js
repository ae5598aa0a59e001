// hostplug console — small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  // Selects marked data-autosubmit submit their form on change (plugin/method chooser,
  // role changes).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.id === "plugin-select") {
        var method = document.getElementById("method-select");
        if (method) { method.value = ""; }
      }
      if (select.form) { select.form.submit(); }
    });
  });

  // Forms and buttons with data-confirm ask first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  // JSON text areas are checked as you type.
  document.querySelectorAll("textarea[data-json]").forEach(function (area) {
    area.addEventListener("input", function () {
      var text = area.value.trim();
      var ok = true;
      if (text !== "") { try { JSON.parse(text); } catch (e) { ok = false; } }
      area.classList.toggle("invalid", !ok);
      area.setCustomValidity(ok ? "" : "not valid JSON");
    });
  });

  // Choosing a node ticks "these nodes"; choosing a role ticks "by role".
  var nodeList = document.getElementById("node-list");
  var roleSelect = document.getElementById("role-select");
  if (nodeList) {
    nodeList.addEventListener("change", function () {
      var radio = document.getElementById("target-nodes");
      if (radio) { radio.checked = true; }
    });
  }
  var selectorBox = document.getElementById("node-selector");
  [roleSelect, selectorBox].forEach(function (control) {
    if (!control) { return; }
    control.addEventListener(control === roleSelect ? "change" : "input", function () {
      var radio = document.getElementById("target-role");
      if (radio) { radio.checked = true; }
    });
  });

  // The node picker at fleet size: a filter (every word typed must appear in the node's
  // name or one of its labels), "tick shown", "clear", and the counts kept current.
  var picker = document.getElementById("node-picker");
  var filter = document.getElementById("node-filter");
  if (picker && filter) {
    var items = Array.prototype.slice.call(picker.querySelectorAll("li.node-choice"));
    var shownText = document.getElementById("node-shown");
    var tickedText = document.getElementById("nodes-ticked");
    var countTicked = function () {
      var n = picker.querySelectorAll("input[name=nodes]:checked").length;
      tickedText.textContent = n + " ticked";
    };
    var applyFilter = function () {
      var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      items.forEach(function (li) {
        var text = (li.getAttribute("data-search") || "").toLowerCase();
        var ok = words.every(function (w) { return text.indexOf(w) !== -1; });
        li.hidden = !ok;
        if (ok) { shown += 1; }
      });
      shownText.textContent = words.length
        ? shown + " of " + items.length + " nodes shown"
        : items.length + " nodes";
    };
    filter.addEventListener("input", applyFilter);
    // Enter filters; it does not submit the task.
    filter.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); }
    });
    document.getElementById("nodes-tick-shown").addEventListener("click", function () {
      items.forEach(function (li) { if (!li.hidden) { li.querySelector("input").checked = true; } });
      var radio = document.getElementById("target-nodes");
      if (radio) { radio.checked = true; }
      countTicked();
    });
    document.getElementById("nodes-clear").addEventListener("click", function () {
      items.forEach(function (li) { li.querySelector("input").checked = false; });
      countTicked();
    });
    picker.addEventListener("change", countTicked);
    document.getElementById("node-tools").hidden = false;
  }

  // The live count of the nodes a role and a selector pick, asked of the console (which
  // applies the operator's own rule) a moment after each change.
  var match = document.getElementById("role-match");
  if (match && roleSelect && selectorBox && window.fetch) {
    var timer = null;
    var asked = 0;
    var count = function () {
      var mine = ++asked;
      var url = match.getAttribute("data-url") +
        "?targetType=" + encodeURIComponent(roleSelect.value) +
        "&selector=" + encodeURIComponent(selectorBox.value);
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          return response.json().then(function (body) { return { ok: response.ok, body: body }; });
        })
        .then(function (answer) {
          if (mine !== asked) { return; }
          var error = answer.body && answer.body.error;
          match.textContent = answer.ok ? answer.body.summary : (error && error.message) || "cannot count";
          match.classList.toggle("bad", !answer.ok);
          match.setAttribute("data-matched", answer.ok ? String(answer.body.matched) : "");
        })
        .catch(function () { match.classList.add("bad"); });
    };
    var later = function () { clearTimeout(timer); timer = setTimeout(count, 250); };
    roleSelect.addEventListener("change", later);
    selectorBox.addEventListener("input", later);
  }

  // The task list refreshes itself: long-poll the rows fragment, which answers as soon
  // as a task changes (or after 25 s).
  var rows = document.querySelector("[data-live-rows]");
  if (rows) {
    var live = document.getElementById("live");
    var url = rows.getAttribute("data-live-rows");
    var loop = function (wait) {
      fetch(url + "?wait=" + wait, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok || response.redirected) { throw new Error("status " + response.status); }
          return response.text();
        })
        .then(function (html) {
          rows.innerHTML = html;
          if (live) { live.classList.remove("stale"); }
          loop(25);
        })
        .catch(function () {
          if (live) { live.classList.add("stale"); }
          setTimeout(function () { loop(0); }, 5000);
        });
    };
    loop(0);
  }

  // A running task's page follows the rollout live: server-sent events from
  // /tasks/{name}/live carry the re-rendered progress, node phases and results each time
  // the task changes, and `end` when it has ended. Without EventSource, or when the
  // stream cannot be opened (the console bounds open streams), the page polls itself.
  var detail = document.querySelector("#task-detail[data-refresh]");
  var liveStatus = document.getElementById("live-status");
  var setLive = function (state, text) {
    if (!liveStatus) { return; }
    liveStatus.setAttribute("data-state", state);
    liveStatus.textContent = text;
  };
  var poll = function () {
    var period = parseInt(detail.getAttribute("data-refresh"), 10) || 3000;
    setLive("polling", "Refreshing every " + Math.round(period / 1000) + " s.");
    var refresh = function () {
      fetch(window.location.pathname + window.location.search, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("task-detail");
          if (!fresh) { return; }
          detail.innerHTML = fresh.innerHTML;
          if (fresh.hasAttribute("data-refresh")) { setTimeout(refresh, period); }
          else { detail.removeAttribute("data-refresh"); setLive("ended", "Finished."); }
        })
        .catch(function () { setTimeout(refresh, period * 2); });
    };
    setTimeout(refresh, period);
  };
  if (detail && window.EventSource && detail.getAttribute("data-live")) {
    var source = new EventSource(detail.getAttribute("data-live"));
    var opened = false;
    source.addEventListener("open", function () {
      opened = true;
      setLive("live", "Live: following the rollout.");
    });
    source.addEventListener("detail", function (event) {
      detail.innerHTML = event.data;
    });
    source.addEventListener("end", function () {
      source.close();
      detail.removeAttribute("data-refresh");
      setLive("ended", "Finished.");
    });
    source.addEventListener("error", function () {
      // Never opened (refused, too many streams): poll instead. A stream that was open
      // reconnects by itself.
      if (!opened || source.readyState === EventSource.CLOSED) {
        source.close();
        if (detail.hasAttribute("data-refresh")) { poll(); }
      } else {
        setLive("connecting", "Reconnecting…");
      }
    });
  } else if (detail) {
    poll();
  }
})();
