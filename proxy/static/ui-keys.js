/* LLM Proxy log view: keyboard shortcuts (j/k, Enter, /, [ ], a, ?), the theme toggle and the help box.
   Works on whatever the page holds: rows of #log-rows, links #newer/#older, the search field #f-q. */
(function () {
  "use strict";

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#log-rows tr[data-id]")); }

  function select(step) {
    var list = rows();
    if (!list.length) { return; }
    var current = list.findIndex(function (r) { return r.classList.contains("sel"); });
    var next = current < 0 ? 0 : Math.min(list.length - 1, Math.max(0, current + step));
    if (current >= 0) { list[current].classList.remove("sel"); }
    list[next].classList.add("sel");
    list[next].scrollIntoView({ block: "nearest" });
  }

  function openSelected() {
    var row = document.querySelector("#log-rows tr.sel");
    var link = row && row.querySelector("a[href]");
    if (link) { window.location.href = link.href; return true; }
    return false;
  }

  function follow(id) {
    var link = document.getElementById(id);
    if (link && link.href) { window.location.href = link.href; }
  }

  function toggleHelp(show) {
    var help = document.getElementById("help");
    if (!help) { return; }
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  function toggleTheme() {
    var root = document.documentElement;
    var dark = root.getAttribute("data-theme") ? root.getAttribute("data-theme") === "dark" :
      window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    var theme = dark ? "light" : "dark";
    root.setAttribute("data-theme", theme);
    try { localStorage.setItem("llm-proxy-theme", theme); } catch (e) { /* not remembered */ }
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "Escape") { toggleHelp(false); return; }
    if (typing(event.target)) { return; }
    switch (event.key) {
      case "j": select(1); break;
      case "k": select(-1); break;
      case "Enter": if (!openSelected()) { return; } break;
      case "/": {
        var search = document.getElementById("f-q");
        if (!search) { return; }
        var box = document.getElementById("filterbox");
        if (box) { box.open = true; }
        search.focus();
        search.select();
        break;
      }
      case "[": follow("newer"); break;
      case "]": follow("older"); break;
      case "a": follow("jump-answer"); break;
      case "?": toggleHelp(); break;
      default: return;
    }
    event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var theme = document.getElementById("theme-toggle");
    if (theme) { theme.addEventListener("click", toggleTheme); }
    var filters = document.getElementById("filterbox");  // on a phone the list comes first
    if (filters && !filters.hasAttribute("data-active") && window.matchMedia &&
        window.matchMedia("(max-width: 760px)").matches) { filters.open = false; }
    var help = document.getElementById("help-toggle");
    if (help) { help.addEventListener("click", function () { toggleHelp(); }); }
  });
}());
