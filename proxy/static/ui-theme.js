/* LLM Proxy log view: the colour theme chosen with the toggle (localStorage), applied before the page
   paints. Without a choice the stylesheet follows prefers-color-scheme. Loaded blocking, so it stays tiny. */
(function () {
  "use strict";
  try {
    var theme = localStorage.getItem("llm-proxy-theme");
    if (theme === "dark" || theme === "light") { document.documentElement.setAttribute("data-theme", theme); }
  } catch (e) { /* storage off: the system setting decides */ }
}());
