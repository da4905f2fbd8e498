#!/usr/bin/python3
"""Drives a headless Chromium through the DevTools protocol for tests/tests/status.rs.

Usage: status_page.py DEVTOOLS_PORT PAGE_URL SCREENSHOT_DIR

Loads PAGE_URL in Chromium's first page, then reads commands on stdin, one a line, and
answers each with one JSON line on stdout:
  wait HEALTHY UNHEALTHY SECONDS  -> polls the page's DOM (without reloading it) until it shows
                                     HEALTHY nodes Healthy and UNHEALTHY not: {"ok", "nodes",
                                     "navigations", "marker"}
  shot NAME                       -> a PNG screenshot in SCREENSHOT_DIR: {"ok", "path"}
  row ADAPTER                     -> the cells' text of each row of the adapters table for
                                     ADAPTER, and the recent requests' summary: {"ok", "rows",
                                     "recent"} (read as it is now; the caller polls)
  phone WIDTH HEIGHT              -> emulates a phone (WIDTH x HEIGHT CSS pixels, 3 device
                                     pixels each, mobile), reloads the page and measures it:
                                     {"ok", "innerWidth", "scrollWidth", "overflowing" (elements
                                     past the right edge outside a scrolling container),
                                     "scrollers" (each table's container), "fontSize"}
The page is marked once loaded (a window property): a reload would lose the mark, so
"marker": true proves the page updated itself in place. Every wait has a deadline.
Needs Debian's python3-websocket (websocket-client).
"""

import base64
import json
import os
import sys
import time
import urllib.request

import websocket

port, url, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]


def targets():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
        return json.load(r)


page = next(t for t in targets() if t.get("type") == "page")
ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=10, suppress_origin=True)
next_id = 0


def call(method, **params):
    global next_id
    next_id += 1
    ws.send(json.dumps({"id": next_id, "method": method, "params": params}))
    deadline = time.time() + 20
    while time.time() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("id") == next_id:
            if "error" in msg:
                raise RuntimeError(f"{method}: {msg['error']}")
            return msg.get("result", {})
    raise TimeoutError(f"{method}: no answer within 20 s")


def evaluate(expr):
    r = call("Runtime.evaluate", expression=expr, returnByValue=True)
    return r.get("result", {}).get("value")


NODES = """JSON.stringify({
  nodes: Array.from(document.querySelectorAll('#nodes tr[data-node]'))
    .map(function (tr) { return [tr.getAttribute('data-node'), tr.getAttribute('data-health')]; }),
  navigations: performance.getEntriesByType('navigation').length,
  marker: window.__busbarTestMarker === 1,
  live: (document.getElementById('live') || {}).textContent
})"""

ROW = """JSON.stringify({
  rows: Array.from(document.querySelectorAll('#adapters tr[data-adapter]'))
    .filter(function (tr) { return tr.getAttribute('data-adapter') === %s; })
    .map(function (tr) { return Array.from(tr.cells).map(function (c) { return c.textContent; }); }),
  recent: (document.getElementById('recent-requests') || {}).textContent || null
})"""

MEASURE = """JSON.stringify((function () {
  var vw = window.innerWidth;
  var out = {
    innerWidth: vw,
    scrollWidth: document.documentElement.scrollWidth,
    overflowing: [],
    scrollers: [],
    fontSize: parseFloat(getComputedStyle(document.body).fontSize)
  };
  document.querySelectorAll('body *').forEach(function (el) {
    if (el.closest('.scroll')) { return; }
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) {
      out.overflowing.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
        ' ' + Math.round(r.left) + '..' + Math.round(r.right));
    }
  });
  document.querySelectorAll('table').forEach(function (t) {
    var box = t.parentElement;
    var r = box.getBoundingClientRect();
    out.scrollers.push({
      table: t.id,
      right: r.right,
      overflowX: getComputedStyle(box).overflowX,
      tableWidth: t.scrollWidth,
      boxWidth: box.clientWidth
    });
  });
  return out;
})())"""


def wait_loaded():
    deadline = time.time() + 20
    while evaluate("document.readyState") != "complete":
        if time.time() > deadline:
            raise TimeoutError("the page did not load within 20 s")
        time.sleep(0.1)


call("Page.enable")
call("Page.navigate", url=url)
wait_loaded()
evaluate("window.__busbarTestMarker = 1")
print(json.dumps({"ok": True, "loaded": url}), flush=True)

for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "wait":
        healthy, unhealthy, seconds = int(words[1]), int(words[2]), float(words[3])
        deadline = time.time() + seconds
        seen = None
        while True:
            seen = json.loads(evaluate(NODES))
            h = sum(1 for _, state in seen["nodes"] if state == "Healthy")
            u = sum(1 for _, state in seen["nodes"] if state != "Healthy")
            if (h, u) == (healthy, unhealthy) or time.time() > deadline:
                break
            time.sleep(0.2)
        seen["ok"] = (h, u) == (healthy, unhealthy)
        print(json.dumps(seen), flush=True)
    elif words[0] == "shot":
        shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path = os.path.join(out_dir, words[1] + ".png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(json.dumps({"ok": True, "path": path}), flush=True)
    elif words[0] == "row":
        seen = json.loads(evaluate(ROW % json.dumps(words[1])))
        seen["ok"] = True
        print(json.dumps(seen), flush=True)
    elif words[0] == "phone":
        width, height = int(words[1]), int(words[2])
        call("Emulation.setDeviceMetricsOverride", width=width, height=height,
             deviceScaleFactor=3, mobile=True)
        call("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=5)
        # Reloaded under the emulation, as a phone would load it (its viewport meta applied).
        evaluate("window.__busbarBeforeReload = 1")
        call("Page.reload", ignoreCache=True)
        deadline = time.time() + 20
        while True:
            try:
                if not evaluate("window.__busbarBeforeReload === 1 || document.readyState !== 'complete'"):
                    break
            except RuntimeError:
                pass  # the old page's context went away under the evaluation
            if time.time() > deadline:
                raise TimeoutError("the page did not reload within 20 s")
            time.sleep(0.1)
        seen = json.loads(evaluate(MEASURE))
        seen["ok"] = True
        print(json.dumps(seen), flush=True)
    else:
        print(json.dumps({"ok": False, "error": f"unknown command {words[0]!r}"}), flush=True)
