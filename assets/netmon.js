// netmon: local times, and live updates of the flows table.
//
// Every page works without this file; it adds two things:
//  1. <time data-ms> and chart labels are rewritten from UTC to the browser's time zone.
//  2. On the dashboard, one EventSource (/events) per tab receives a "tick" after each
//     database commit; when the commit touched flows (or device names), the flows
//     fragment is re-fetched from the server and swapped in. The fragment is HTML the
//     server rendered and escaped; this script never builds HTML from data.
// No polling. The stream is closed while the tab is hidden and on "Pause".
(function () {
  "use strict";

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function localText(ms) {
    var d = new Date(ms);
    var now = new Date();
    var hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms;
  }

  function localize(root) {
    root.querySelectorAll("time[data-ms]").forEach(function (t) {
      var ms = Number(t.getAttribute("data-ms"));
      if (!isFinite(ms)) return;
      t.textContent = localText(ms);
      t.title = new Date(ms).toString();
    });
    root.querySelectorAll("text[data-ms][data-fmt='hm']").forEach(function (t) {
      var d = new Date(Number(t.getAttribute("data-ms")));
      t.textContent = pad(d.getHours()) + ":" + pad(d.getMinutes());
    });
    root.querySelectorAll("[data-tz]").forEach(function (t) {
      t.textContent = "local time";
    });
  }

  localize(document);

  var panel = document.getElementById("flows-live");
  if (!panel || !window.EventSource || !window.fetch) return;

  var src = panel.getAttribute("data-src");
  var status = document.getElementById("live-status");
  var toggle = document.getElementById("live-toggle");
  var activeTile = document.getElementById("tile-active");

  var source = null; // the EventSource while connected
  var paused = false;
  var inFlight = false; // a fragment request is running
  var dirty = false; // something changed since the last fetch started
  var lastDone = 0; // when the last fetch finished (ms)
  var lastCost = 0; // how long it took (ms)
  var timer = null;

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "live " + cls;
    status.hidden = false;
  }

  // Fetch the fragment, at most one request at a time and, after a slow one, waiting
  // twice its duration: a costly view (all flows sorted by bytes) cannot keep the
  // router's CPU busy just because commits arrive every second.
  function refresh() {
    dirty = true;
    if (paused || document.hidden || inFlight || timer) return;
    var wait = Math.max(1000, 2 * lastCost) - (Date.now() - lastDone);
    if (wait > 0) {
      timer = setTimeout(function () {
        timer = null;
        if (dirty) refresh();
      }, wait);
      return;
    }
    dirty = false;
    inFlight = true;
    var started = Date.now();
    fetch(src, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        // Logged out (session expired or ended elsewhere): the reload goes to the login.
        if (r.status === 401) window.location.reload();
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        var tpl = document.createElement("template");
        tpl.innerHTML = html; // server-rendered, escaped fragment
        localize(tpl.content);
        panel.replaceChildren(tpl.content);
        panel.setAttribute("data-refreshed", String(Date.now())); // for browser tests
        if (source) setStatus("live", "on");
      })
      .catch(function () {
        setStatus("refresh failed", "err");
      })
      .finally(function () {
        inFlight = false;
        lastDone = Date.now();
        lastCost = lastDone - started;
        if (dirty) refresh();
      });
  }

  function onTick(ev) {
    var tick;
    try {
      tick = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (activeTile && typeof tick.active_flows === "number") {
      activeTile.textContent = String(tick.active_flows);
    }
    if (tick.flows_new || tick.flows_updated || tick.flows_ended || tick.devices_changed || tick.remote_hosts_changed) {
      refresh();
    }
  }

  var hadError = false;

  function connect() {
    if (source || paused || document.hidden) return;
    source = new EventSource("/events");
    source.addEventListener("tick", onTick);
    source.onopen = function () {
      setStatus("live", "on");
      // Reconnected after an outage: commits may have been missed.
      if (hadError) refresh();
      hadError = false;
    };
    source.onerror = function () {
      hadError = true;
      if (source && source.readyState === EventSource.CLOSED) {
        // The server refused (e.g. too many streams): stop trying.
        source = null;
        setStatus("live updates unavailable", "err");
      } else {
        setStatus("reconnecting", "warn");
      }
    };
  }

  function disconnect() {
    if (source) {
      source.close();
      source = null;
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      disconnect();
    } else if (!paused) {
      connect();
      refresh(); // catch up on what happened while hidden
    }
  });

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume" : "Pause";
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      if (paused) {
        disconnect();
        setStatus("paused", "off");
      } else {
        connect();
        refresh();
      }
    });
  }

  connect();
})();
