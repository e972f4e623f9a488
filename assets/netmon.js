// netmon: local times, chart read-outs and zoom, and live updates of page fragments.
//
// Every page works without this file; it adds:
//  1. <time data-ms> and chart labels are rewritten from UTC to the browser's time zone;
//     <time data-rel> shows an age ("3 min ago") with the local time as its title.
//  2. Charts: hovering shows the nearest bar's time and value (from its data-t and
//     data-tip attributes, set as text); dragging across a chart marked data-zoom
//     navigates to the same page with that range (from, to).
//  3. Live: one EventSource (/events) per tab receives a "tick" after each database
//     commit. Every element with data-src (a fragment URL) and data-topics (the tick
//     fields that make it stale) is re-fetched when a tick has one of its topics set,
//     and swapped in, no more often than the chosen rate or the element's data-every
//     (ms). Fragments are HTML the server rendered and escaped; this script
//     never builds HTML from data.
// No polling. The stream is closed while the tab is hidden and on "Pause"; the refresh
// rate (live, at most every 5 s or 30 s) is remembered in localStorage.
(function () {
  "use strict";

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function hm(d) {
    return pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function localText(ms) {
    var d = new Date(ms);
    var now = new Date();
    var hms = hm(d) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms;
  }

  function ago(ms) {
    var s = Math.round((Date.now() - ms) / 1000);
    if (s < 0) return "just now";
    if (s < 60) return s + " s ago";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h ago";
    return Math.floor(h / 24) + " d ago";
  }

  var AXIS = {
    hm: hm,
    dhm: function (d) {
      return pad(d.getDate()) + " " + hm(d);
    },
    md: function (d) {
      return pad(d.getMonth() + 1) + "-" + pad(d.getDate());
    },
  };

  function relative(root) {
    root.querySelectorAll("time[data-ms][data-rel]").forEach(function (t) {
      var ms = Number(t.getAttribute("data-ms"));
      if (isFinite(ms)) t.textContent = ago(ms);
    });
  }

  function localize(root) {
    root.querySelectorAll("time[data-ms]").forEach(function (t) {
      var ms = Number(t.getAttribute("data-ms"));
      if (!isFinite(ms)) return;
      t.textContent = localText(ms);
      // The age rides along in the title; <time data-rel> shows it as the text.
      t.title = new Date(ms).toString() + " (" + ago(ms) + ")";
    });
    relative(root);
    root.querySelectorAll("text[data-ms][data-fmt]").forEach(function (t) {
      var f = AXIS[t.getAttribute("data-fmt")];
      var ms = Number(t.getAttribute("data-ms"));
      if (f && isFinite(ms)) t.textContent = f(new Date(ms));
    });
    root.querySelectorAll("[data-tz]").forEach(function (t) {
      t.textContent = "local time";
    });
  }

  // Chart text at CHART_TEXT_PX whatever width the chart is drawn at: the svg's font
  // size in its own (viewBox) units.
  var CHART_TEXT_PX = 11;
  function fitCharts(root) {
    root.querySelectorAll("figure.chart svg[viewBox]").forEach(function (svg) {
      var drawn = svg.getBoundingClientRect().width;
      var units = svg.viewBox.baseVal.width;
      if (drawn > 0 && units > 0) svg.style.fontSize = (CHART_TEXT_PX * units / drawn).toFixed(2) + "px";
    });
  }

  // Time filters (inputs marked data-local-time) in the browser's time zone: a time the
  // server sent back (UTC, "…Z") is shown local, and a local time typed in is sent with
  // its offset ("2026-12-04 22:00" becomes "2026-12-04T22:00+01:00"). Ages pass as typed.
  var LOCAL = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?$/;
  function offsetText(d) {
    var m = -d.getTimezoneOffset();
    var a = Math.abs(m);
    return (m < 0 ? "-" : "+") + pad(Math.floor(a / 60)) + ":" + pad(a % 60);
  }
  document.querySelectorAll("input[data-local-time]").forEach(function (input) {
    var v = input.value.trim();
    if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(v)) {
      var d = new Date(v);
      input.value = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
        " " + hm(d) + (d.getSeconds() ? ":" + pad(d.getSeconds()) : "");
    }
    if (input.form) {
      input.form.addEventListener("submit", function () {
        var m = LOCAL.exec(input.value.trim());
        if (!m) return;
        var d = new Date(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
        input.value = m[1] + "-" + m[2] + "-" + m[3] + "T" + pad(d.getHours()) + ":" +
          pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + offsetText(d);
      });
    }
  });

  localize(document);
  fitCharts(document);
  window.addEventListener("resize", function () {
    fitCharts(document);
  });
  // Ages grow: rewrite them now and then (text only, no request).
  setInterval(function () {
    if (!document.hidden) relative(document);
  }, 30000);

  // --- charts: hover read-out and drag to zoom --------------------------------------

  function svgOf(target) {
    return target && target.closest ? target.closest("svg[data-x0]") : null;
  }

  // The pointer's x in viewBox units.
  function viewX(svg, clientX) {
    var box = svg.getBoundingClientRect();
    var vb = svg.viewBox.baseVal;
    if (!box.width || !vb) return null;
    return vb.x + ((clientX - box.left) / box.width) * vb.width;
  }

  function num(el, name) {
    return Number(el.getAttribute(name));
  }

  // The time under viewBox x, from the plot's edges and range.
  function timeAt(svg, x) {
    var x0 = num(svg, "data-x0"), x1 = num(svg, "data-x1");
    var t0 = num(svg, "data-t0"), t1 = num(svg, "data-t1");
    var f = Math.min(1, Math.max(0, (x - x0) / (x1 - x0)));
    return t0 + f * (t1 - t0);
  }

  function showTip(svg, clientX) {
    var fig = svg.closest("figure");
    var tip = fig && fig.querySelector(".tip");
    if (!tip) return;
    var x = viewX(svg, clientX);
    if (x === null) return;
    var t = timeAt(svg, x);
    var bucket = num(svg, "data-bucket") || 60000;
    var best = null, bestD = Infinity;
    svg.querySelectorAll("g.bar[data-t]").forEach(function (g) {
      var d = Math.abs(num(g, "data-t") + bucket / 2 - t);
      if (d < bestD) {
        bestD = d;
        best = g;
      }
    });
    svg.querySelectorAll("g.bar.hot").forEach(function (g) {
      if (g !== best) g.classList.remove("hot");
    });
    if (!best || bestD > bucket * 3) {
      tip.textContent = localText(Math.floor(t / bucket) * bucket) + " · no data";
    } else {
      best.classList.add("hot");
      tip.textContent = localText(num(best, "data-t")) + " · " + (best.getAttribute("data-tip") || "");
    }
    tip.hidden = false;
  }

  var drag = null; // { svg, x, rect } while selecting a range

  document.addEventListener("mousemove", function (e) {
    var svg = svgOf(e.target);
    if (drag) {
      var x = viewX(drag.svg, e.clientX);
      if (x !== null) {
        var lo = Math.max(num(drag.svg, "data-x0"), Math.min(x, drag.x));
        var hi = Math.min(num(drag.svg, "data-x1"), Math.max(x, drag.x));
        drag.rect.setAttribute("x", String(lo));
        drag.rect.setAttribute("width", String(Math.max(0, hi - lo)));
      }
    }
    if (svg) showTip(svg, e.clientX);
  });

  document.addEventListener("mouseout", function (e) {
    var svg = svgOf(e.target);
    if (!svg || svg.contains(e.relatedTarget)) return;
    var tip = svg.closest("figure") && svg.closest("figure").querySelector(".tip");
    if (tip) tip.hidden = true;
    svg.querySelectorAll("g.bar.hot").forEach(function (g) {
      g.classList.remove("hot");
    });
  });

  document.addEventListener("mousedown", function (e) {
    var svg = svgOf(e.target);
    if (!svg || !svg.hasAttribute("data-zoom") || e.button !== 0) return;
    var x = viewX(svg, e.clientX);
    if (x === null) return;
    e.preventDefault();
    var rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("class", "sel");
    rect.setAttribute("x", String(x));
    rect.setAttribute("y", "0");
    rect.setAttribute("width", "0");
    rect.setAttribute("height", String(svg.viewBox.baseVal.height));
    svg.appendChild(rect);
    drag = { svg: svg, x: x, rect: rect };
  });

  document.addEventListener("mouseup", function (e) {
    if (!drag) return;
    var d = drag;
    drag = null;
    var x = viewX(d.svg, e.clientX);
    d.rect.remove();
    if (x === null || Math.abs(x - d.x) < 6) return; // a click, not a drag
    var minute = 60000;
    var from = Math.floor(timeAt(d.svg, Math.min(x, d.x)) / minute) * minute;
    var to = Math.ceil(timeAt(d.svg, Math.max(x, d.x)) / minute) * minute;
    if (to - from < minute) to = from + minute;
    var url = new URL(window.location.href);
    url.searchParams.delete("w");
    url.searchParams.set("from", String(from));
    url.searchParams.set("to", String(to));
    window.location.assign(url.toString());
  });

  // --- live updates -------------------------------------------------------------------

  // The flows table predates data-topics: these are the changes it shows.
  var DEFAULT_TOPICS = ["flows_new", "flows_updated", "flows_ended", "devices_changed", "remote_hosts_changed"];
  var RATES = { live: 1000, "5s": 5000, "30s": 30000 };

  var panels = [];
  document.querySelectorAll("[data-src]").forEach(function (el) {
    var topics = el.getAttribute("data-topics");
    panels.push({
      el: el,
      topics: topics ? topics.split(/\s+/).filter(Boolean) : DEFAULT_TOPICS,
      every: Number(el.getAttribute("data-every")) || 0, // the panel's own least interval (ms)
      inFlight: false, // a fragment request is running
      dirty: false, // something changed since the last fetch started
      lastDone: 0, // when the last fetch finished (ms)
      lastCost: 0, // how long it took (ms)
      timer: null,
    });
  });
  if (!panels.length || !window.EventSource || !window.fetch) return;

  var status = document.getElementById("live-status");
  var toggle = document.getElementById("live-toggle");
  var rateSelect = document.getElementById("live-rate");

  var source = null; // the EventSource while connected
  var paused = false;
  var rate = "live";
  try {
    rate = window.localStorage.getItem("netmon.rate") || "live";
  } catch (e) {
    rate = "live";
  }
  if (!RATES[rate]) rate = "live";

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "live " + cls;
    status.hidden = false;
  }

  // A form control inside the panel has the focus: replacing it would lose what the
  // user is typing or choosing. Wait until focus leaves.
  function focusedInside(el) {
    var a = document.activeElement;
    return a && a !== document.body && el.contains(a) && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(a.tagName);
  }

  // Fetch a panel's fragment: at most one request per panel at a time, no more often
  // than the chosen rate, and after a slow one waiting twice its duration, so a costly
  // view cannot keep the router's CPU busy just because commits arrive every second.
  function refresh(p) {
    p.dirty = true;
    if (paused || document.hidden || p.inFlight || p.timer) return;
    if (focusedInside(p.el)) {
      p.el.addEventListener("focusout", function () {
        setTimeout(function () {
          if (p.dirty) refresh(p);
        }, 0);
      }, { once: true });
      return;
    }
    var wait = Math.max(RATES[rate], p.every, 2 * p.lastCost) - (Date.now() - p.lastDone);
    if (wait > 0) {
      p.timer = setTimeout(function () {
        p.timer = null;
        if (p.dirty) refresh(p);
      }, wait);
      return;
    }
    p.dirty = false;
    p.inFlight = true;
    var started = Date.now();
    fetch(p.el.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        // Logged out (session expired or ended elsewhere): the reload goes to the login.
        if (r.status === 401) window.location.reload();
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (focusedInside(p.el)) {
          p.dirty = true; // focus arrived while fetching: try again once it leaves
          return;
        }
        var tpl = document.createElement("template");
        tpl.innerHTML = html; // server-rendered, escaped fragment
        localize(tpl.content);
        p.el.replaceChildren(tpl.content);
        fitCharts(p.el);
        p.el.setAttribute("data-refreshed", String(Date.now())); // for browser tests
        if (source) setStatus(paused ? "paused" : "live", paused ? "off" : "on");
      })
      .catch(function () {
        setStatus("refresh failed", "err");
      })
      .finally(function () {
        p.inFlight = false;
        p.lastDone = Date.now();
        p.lastCost = p.lastDone - started;
        if (p.dirty) refresh(p);
      });
  }

  function refreshAll() {
    panels.forEach(refresh);
  }

  function onTick(ev) {
    var tick;
    try {
      tick = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    // Looked up per tick: a refreshed tiles fragment replaces the element.
    var activeTile = document.getElementById("tile-active");
    if (activeTile && typeof tick.active_flows === "number") {
      activeTile.textContent = String(tick.active_flows);
    }
    panels.forEach(function (p) {
      if (p.topics.some(function (t) { return tick[t]; })) refresh(p);
    });
  }

  var hadError = false;

  function connect() {
    if (source || paused || document.hidden) return;
    source = new EventSource("/events");
    source.addEventListener("tick", onTick);
    source.onopen = function () {
      setStatus("live", "on");
      // Reconnected after an outage: commits may have been missed.
      if (hadError) refreshAll();
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
      refreshAll(); // catch up on what happened while hidden
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
        refreshAll();
      }
    });
  }

  if (rateSelect) {
    rateSelect.value = rate;
    rateSelect.hidden = false;
    rateSelect.addEventListener("change", function () {
      rate = RATES[rateSelect.value] ? rateSelect.value : "live";
      try {
        window.localStorage.setItem("netmon.rate", rate);
      } catch (e) {
        // private mode: the choice lasts for this page only
      }
    });
  }

  connect();
})();
