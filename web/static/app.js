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
  if (roleSelect) {
    roleSelect.addEventListener("change", function () {
      var radio = document.getElementById("target-role");
      if (radio) { radio.checked = true; }
    });
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

  // A task's detail refreshes until the task has finished.
  var detail = document.querySelector("#task-detail[data-refresh]");
  if (detail) {
    var period = parseInt(detail.getAttribute("data-refresh"), 10) || 3000;
    var refresh = function () {
      fetch(window.location.pathname, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("task-detail");
          if (!fresh) { return; }
          detail.innerHTML = fresh.innerHTML;
          if (fresh.hasAttribute("data-refresh")) { setTimeout(refresh, period); }
          else { detail.removeAttribute("data-refresh"); }
        })
        .catch(function () { setTimeout(refresh, period * 2); });
    };
    setTimeout(refresh, period);
  }
})();
