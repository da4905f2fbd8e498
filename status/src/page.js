// The status page refreshes itself: every few seconds it fetches the same content as HTML
// (/status/fragment) and puts it in place of the old, without reloading. Without JavaScript
// the page is the static render it was served as.
(function () {
  "use strict";
  var main = document.getElementById("status");
  var live = document.getElementById("live");
  var every = Number(document.body.getAttribute("data-refresh-ms")) || 2000;
  var url = document.body.getAttribute("data-fragment") || "/status/fragment";
  var last = null;
  function clock(d) { return d.toISOString().slice(11, 19) + " UTC"; }
  function tick() {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, Math.max(every, 1000) * 2);
    fetch(url, { cache: "no-store", signal: ctl.signal })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        main.innerHTML = html;
        last = new Date();
        live.setAttribute("data-state", "live");
        live.textContent = "live, updated " + clock(last);
      })
      .catch(function (e) {
        live.setAttribute("data-state", "lost");
        live.textContent = "cannot reach the gateway (" + e.message + ")" +
          (last ? "; last update " + clock(last) : "");
      })
      .finally(function () { clearTimeout(timer); setTimeout(tick, every); });
  }
  live.setAttribute("data-state", "live");
  live.textContent = "live";
  setTimeout(tick, every);
})();
