/* LLM Proxy log view: copy buttons and the log list's live mode. Vendored, no build step.
   Stored text is untrusted: it only ever reaches the page through textContent, never innerHTML. */
(function () {
  "use strict";

  function copyText(text, button) {
    function done() {
      button.classList.add("done");
      button.textContent = "copied";
      setTimeout(function () { button.classList.remove("done"); button.textContent = "copy"; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else {
      fallbackCopy(text);
      done();
    }
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    document.body.removeChild(area);
  }

  function setUpCopyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy"));
        if (target) { copyText(target.textContent, button); }
      });
    });
  }

  function utc(ts) {
    var d = new Date(ts * 1000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) + " " +
      two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds());
  }

  function ms(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(1) + " ms";
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (text instanceof Node) { td.appendChild(text); } else { td.textContent = text; }
    row.appendChild(td);
    return td;
  }

  function link(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function tag(text, bad) {
    var span = document.createElement("span");
    span.className = bad ? "tag bad" : "tag";
    span.textContent = text;
    return span;
  }

  function rowFor(item, detail) {
    var tr = document.createElement("tr");
    tr.className = "new outcome-" + item.outcome;
    tr.setAttribute("data-id", String(item.id));
    cell(tr, link(detail + item.id, utc(item.started)), "nowrap");
    var endpoint = cell(tr, item.endpoint);
    if (item.stream) { endpoint.appendChild(document.createTextNode(" ")); endpoint.appendChild(tag("stream")); }
    cell(tr, item.client || "");
    cell(tr, item.model || "");
    var status = cell(tr, item.status === null ? "" : String(item.status), "status");
    if (item.outcome !== "ok") { status.appendChild(document.createTextNode(" ")); status.appendChild(tag(item.outcome, true)); }
    cell(tr, ms(item.duration_ms), "num");
    var tokens = (item.prompt_tokens !== null || item.completion_tokens !== null) ?
      (item.prompt_tokens || 0) + " / " + (item.completion_tokens || 0) : "";
    cell(tr, tokens, "num");
    var preview = cell(tr, link(detail + item.id, item.preview || "\u2014"), "preview");
    if (item.tool_calls) {
      preview.appendChild(document.createTextNode(" "));
      preview.appendChild(tag(item.tool_calls + (item.tool_calls > 1 ? " tool calls" : " tool call")));
    }
    return tr;
  }

  function setUpLive() {
    var box = document.getElementById("live");
    var table = document.getElementById("log-table");
    if (!box || !table) { return; }
    var body = document.getElementById("log-rows");
    var api = table.getAttribute("data-api");
    var detail = table.getAttribute("data-detail");
    var maxId = parseInt(table.getAttribute("data-max-id"), 10) || 0;
    var timer = null;
    var busy = false;

    function poll() {
      if (busy) { return; }
      busy = true;
      var url = api + (api.indexOf("?") >= 0 ? "&" : "?") + "after_id=" + maxId + "&limit=200";
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : { items: [] }; })
        .then(function (data) {
          var items = (data.items || []).slice().reverse();  // oldest first, each inserted on top
          items.forEach(function (item) {
            if (item.id > maxId) { maxId = item.id; }
            var empty = body.querySelector("tr.empty");
            if (empty) { body.removeChild(empty); }
            body.insertBefore(rowFor(item, detail), body.firstChild);
          });
          table.setAttribute("data-max-id", String(maxId));
        })
        .catch(function () { /* try again on the next tick */ })
        .then(function () { busy = false; });
    }

    function setLive(on) {
      if (timer) { clearInterval(timer); timer = null; }
      if (on) { poll(); timer = setInterval(poll, 2000); }
      try { sessionStorage.setItem("llm-proxy-live", on ? "1" : "0"); } catch (e) { /* private mode */ }
    }

    box.addEventListener("change", function () { setLive(box.checked); });
    try { box.checked = sessionStorage.getItem("llm-proxy-live") === "1"; } catch (e) { box.checked = false; }
    if (box.checked) { setLive(true); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    setUpLive();
  });
}());
