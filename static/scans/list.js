// The scan list's filters, table and history: one form holds the list's state, so the URL and the table agree.
// Loaded on every page (base.html); each part does nothing where its elements are absent.
(function () {
  "use strict";

  // --- History: a Back to a list URL always shows a whole page. On a miss in htmx's snapshot cache the browser
  // reloads the URL (a plain request, answered with the full page) instead of htmx fetching it as an htmx request,
  // so no view has to guess which of the two it owes.
  htmx.config.refreshOnHistoryMiss = true;
  htmx.config.historyRestoreAsHxRequest = false;

  function filtersForm() {
    return document.getElementById("filters");
  }

  // --- Chips, sort headers and page links set the form's fields and submit it. Their hrefs stay real links for a
  // new tab; a plain click goes through the form, which also cancels a search still waiting out its delay
  // (htmx clears an element's pending delayed trigger whenever the element triggers again).
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-apply]");
    var form = filtersForm();
    if (!link || !form || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    new URLSearchParams(link.getAttribute("data-apply")).forEach(function (value, name) {
      var field = form.elements[name];
      if (field) field.value = value;
    });
    htmx.trigger(form, "scans-apply");
  });

  // A new search, source, time or sort starts again at page 1. Capture phase: before htmx reads the form.
  ["input", "change"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var form = filtersForm();
      if (form && event.target.form === form && event.target.name !== "page" && form.elements.page) {
        form.elements.page.value = "";
      }
    }, true);
  });

  // --- Clean URLs: the form's request (and so the URL htmx pushes) leaves out empty fields, fields at their
  // default (data-default), and the custom days unless the range is "Custom".
  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt;
    if (form !== filtersForm()) return;
    var data = event.detail.formData;
    var custom = data.get("when") === "custom";
    Array.from(new Set(data.keys())).forEach(function (name) {
      var values = data.getAll(name).filter(function (value) { return String(value).trim() !== ""; });
      var field = form.elements[name];
      var fallback = field && field.dataset ? field.dataset.default : undefined;
      var unused = (name === "from" || name === "to") && !custom;
      if (values.length === 0 || unused || (values.length === 1 && values[0] === fallback)) {
        data.delete(name);
      }
    });
  });

  // --- Keep the form in step with the URL after a swap, a page link, or the Back button. The field being typed
  // in is left alone: the URL may lag it by a request.
  var DEFAULTS = { sort: "-submitted", per: "50", time: "submitted" };

  function syncFiltersFromUrl() {
    var form = filtersForm();
    if (!form) return;
    var params = new URLSearchParams(window.location.search);
    var custom = params.get("when") === "custom" || (!params.get("when") && (params.get("from") || params.get("to")));
    ["status", "q", "source", "from", "to", "sort", "per", "time", "page", "when"].forEach(function (name) {
      var field = form.elements[name];
      if (!field || document.activeElement === field) return;
      var value = params.get(name) || DEFAULTS[name] || "";
      if (name === "when" && custom) value = "custom";
      field.value = value;
    });
    if (form.elements.archived) form.elements.archived.checked = params.get("archived") === "1";
  }

  document.addEventListener("htmx:pushedIntoHistory", syncFiltersFromUrl);
  document.addEventListener("htmx:historyRestore", syncFiltersFromUrl);

  // --- Errors on one line: the expand button shows where the line is cut (or the message has more lines), and
  // opens the whole message in place.
  function markCutErrors(root) {
    (root || document).querySelectorAll("[data-error]").forEach(function (text) {
      var button = text.parentElement.querySelector("[data-expand-error]");
      if (!button || button.getAttribute("aria-expanded") === "true") return;
      var more = text.title && text.title.trim() !== text.textContent.trim();
      button.hidden = !(more || text.scrollWidth > text.clientWidth + 1);
    });
  }

  // Opened errors, by the row's scan page link: a live update redraws the table and opens them again.
  var openErrors = new Set();

  function rowKey(cell) {
    var link = cell.closest("tr").querySelector("td.id-cell a");
    return link ? link.getAttribute("href") : "";
  }

  function showError(button, open) {
    var cell = button.closest("td");
    var text = cell.querySelector("[data-error]");
    if (!text.dataset.summary) text.dataset.summary = text.textContent;
    text.textContent = open ? text.title : text.dataset.summary;
    cell.classList.toggle("expanded", open);
    button.hidden = false;
    button.setAttribute("aria-expanded", String(open));
    button.setAttribute("aria-label", open ? "Show the error's first line only" : "Show the whole error");
    button.title = button.getAttribute("aria-label");
    if (open) openErrors.add(rowKey(cell)); else openErrors.delete(rowKey(cell));
  }

  function reopenErrors(root) {
    (root || document).querySelectorAll("[data-expand-error]").forEach(function (button) {
      if (openErrors.has(rowKey(button.closest("td")))) showError(button, true);
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-expand-error]");
    if (button) showError(button, button.getAttribute("aria-expanded") !== "true");
  });

  // --- Density: comfortable or compact rows, remembered in this browser.
  var DENSITY_KEY = "scans-density";

  function storedDensity() {
    try {
      return window.localStorage.getItem(DENSITY_KEY) === "compact" ? "compact" : "comfortable";
    } catch (error) {
      return "comfortable";  // storage refused (private mode): the default, every time
    }
  }

  function showDensity(density) {
    document.documentElement.setAttribute("data-density", density);
    document.querySelectorAll("[data-density-toggle]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(density === "compact"));
    });
  }

  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-density-toggle]")) return;
    var density = document.documentElement.getAttribute("data-density") === "compact" ? "comfortable" : "compact";
    try {
      window.localStorage.setItem(DENSITY_KEY, density);
    } catch (error) {
      // not remembered; still applied to this page
    }
    showDensity(density);
    markCutErrors();
  });

  showDensity(storedDensity());
  document.addEventListener("htmx:afterSettle", function (event) {
    markCutErrors(event.target);
    reopenErrors(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () { markCutErrors(); });
  window.addEventListener("resize", function () { markCutErrors(); });
})();
