/* LLM Proxy log view: copy buttons, the list's live mode (new and running exchanges), a running request's
   growing answer, and the exchange page's toggles. Vendored, no build step.
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

  function labelled(td, label) { td.setAttribute("data-label", label); return td; }

  function shortAgent(ua) {
    var first = (ua || "").split(" ")[0];
    return first.length <= 24 ? first : first.slice(0, 23) + "\u2026";
  }

  function rowFor(item, detail, query) {
    var tr = document.createElement("tr");
    var href = detail + item.id + (query ? "?" + query : "");
    tr.className = "new outcome-" + item.outcome;
    tr.setAttribute("data-id", String(item.id));
    cell(tr, link(href, utc(item.started)), "nowrap");
    var endpoint = labelled(cell(tr, item.endpoint), "endpoint");
    if (item.stream) { endpoint.appendChild(document.createTextNode(" ")); endpoint.appendChild(tag("stream")); }
    if (item.cached) { endpoint.appendChild(document.createTextNode(" ")); endpoint.appendChild(tag("cached")); }
    var client = labelled(cell(tr, (item.client || "") + (item.key_name ? " \u00b7 " + item.key_name : "")), "client");
    if (item.user_agent) { client.appendChild(document.createTextNode(" " + shortAgent(item.user_agent))); }
    var model = (item.model || "") + (item.upstream_model && item.upstream_model !== item.model ? " \u2192 " + item.upstream_model : "");
    labelled(cell(tr, model), "model");
    labelled(cell(tr, item.backend_name || ""), "backend");
    var status = labelled(cell(tr, item.status === null ? "" : String(item.status), "status"), "status");
    if (item.outcome !== "ok") { status.appendChild(document.createTextNode(" ")); status.appendChild(tag(item.outcome, true)); }
    labelled(cell(tr, ms(item.duration_ms), "num"), "duration");
    labelled(cell(tr, item.ttfc_ms === null || item.ttfc_ms === undefined ? "" : ms(item.ttfc_ms), "num"), "first token");
    var tokens = (item.prompt_tokens !== null || item.completion_tokens !== null) ?
      (item.prompt_tokens || 0) + " / " + (item.completion_tokens || 0) : "";
    labelled(cell(tr, tokens, "num"), "tokens");
    var preview = cell(tr, link(href, item.preview || "\u2014"), "preview");
    if (item.tool_calls) {
      preview.appendChild(document.createTextNode(" "));
      preview.appendChild(tag(item.tool_calls + (item.tool_calls > 1 ? " tool calls" : " tool call")));
    }
    if (item.error && item.outcome !== "ok") {
      var err = document.createElement("span");
      err.className = "err";
      err.textContent = item.error;
      preview.appendChild(err);
    }
    return tr;
  }

  function runningRow(item) {
    var tr = document.createElement("tr");
    tr.className = "running";
    tr.setAttribute("data-running", item.request_id);
    cell(tr, link(item.url, utc(item.started)), "nowrap");
    labelled(cell(tr, item.endpoint), "endpoint");
    labelled(cell(tr, (item.client || "") + (item.key_name ? " \u00b7 " + item.key_name : "")), "client");
    labelled(cell(tr, item.model || ""), "model");
    labelled(cell(tr, item.backend_name || ""), "backend");
    labelled(cell(tr, item.state, "status"), "status");
    labelled(cell(tr, ms(item.elapsed_ms), "num elapsed"), "elapsed");
    labelled(cell(tr, "", "num"), "first token");
    labelled(cell(tr, String(item.tokens), "num tokens-so-far"), "tokens so far");
    cell(tr, link(item.url, "running\u2026"), "preview");
    return tr;
  }

  function setUpLive() {
    var box = document.getElementById("live");
    var table = document.getElementById("log-table");
    if (!box || !table) { return; }
    var body = document.getElementById("log-rows");
    var api = table.getAttribute("data-api");
    var runningApi = table.getAttribute("data-running");
    var detail = table.getAttribute("data-detail");
    var query = table.getAttribute("data-detail-query") || "";
    var maxId = parseInt(table.getAttribute("data-max-id"), 10) || 0;
    var timer = null;
    var busy = false;

    function getJson(url) {
      return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : { items: [] }; });
    }

    function showRunning(items) {
      body.querySelectorAll("tr.running").forEach(function (tr) { body.removeChild(tr); });
      items.slice().reverse().forEach(function (item) { body.insertBefore(runningRow(item), body.firstChild); });
    }

    function poll() {
      if (busy) { return; }
      busy = true;
      var url = api + (api.indexOf("?") >= 0 ? "&" : "?") + "after_id=" + maxId + "&limit=200";
      Promise.all([getJson(url), runningApi ? getJson(runningApi) : Promise.resolve({ items: [] })])
        .then(function (both) {
          var items = (both[0].items || []).slice().reverse();  // oldest first, each inserted on top
          items.forEach(function (item) {
            if (item.id > maxId) { maxId = item.id; }
            var empty = body.querySelector("tr.empty");
            if (empty) { body.removeChild(empty); }
            body.insertBefore(rowFor(item, detail, query), body.firstChild);
          });
          table.setAttribute("data-max-id", String(maxId));
          showRunning(both[1].items || []);
        })
        .catch(function () { /* try again on the next tick */ })
        .then(function () { busy = false; });
    }

    function setLive(on) {
      if (timer) { clearInterval(timer); timer = null; }
      if (on) { poll(); timer = setInterval(poll, 1000); } else { showRunning([]); }
      try { sessionStorage.setItem("llm-proxy-live", on ? "1" : "0"); } catch (e) { /* private mode */ }
    }

    box.addEventListener("change", function () { setLive(box.checked); });
    try { box.checked = sessionStorage.getItem("llm-proxy-live") === "1"; } catch (e) { box.checked = false; }
    if (box.checked) { setLive(true); }
  }

  function setUpRunningPage() {
    var strip = document.getElementById("running");
    if (!strip) { return; }
    var api = strip.getAttribute("data-api");
    var answer = document.getElementById("running-answer");
    function tick() {
      fetch(api, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (data.done) {
            if (data.log_url) { window.location.href = data.log_url; return; }
            document.getElementById("running-note").textContent = "Finished; waiting for the log to store it\u2026";
          } else {
            answer.textContent = data.content || "";
            document.getElementById("r-tokens").textContent = String(data.tokens);
            document.getElementById("r-elapsed").textContent = ms(data.elapsed_ms);
            document.querySelector("#r-state span").textContent = data.state;
          }
          setTimeout(tick, 700);
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  }

  function setUpExchangePage() {
    var raw = document.getElementById("raw-toggle");
    if (raw) {
      raw.addEventListener("click", function () {
        var on = document.body.classList.toggle("showraw");
        raw.textContent = on ? "rendered" : "raw";
      });
    }
    function all(open) {
      document.querySelectorAll("#conversation details.msg").forEach(function (d) { d.open = open; });
    }
    var expand = document.getElementById("expand-all");
    if (expand) { expand.addEventListener("click", function () { all(true); }); }
    var collapse = document.getElementById("collapse-all");
    if (collapse) { collapse.addEventListener("click", function () { all(false); }); }
    document.addEventListener("click", function (event) {
      var target = event.target;
      if (target && target.tagName === "IMG" && target.classList.contains("thumb")) { target.classList.toggle("big"); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    setUpLive();
    setUpRunningPage();
    setUpExchangePage();
  });
}());
