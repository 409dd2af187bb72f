// The dashboard's small script: local times, ticking durations, copy buttons, the "/" shortcut,
// row selection for bulk actions, when live polling may run, and saying so when it fails. htmx does the rest.
(function () {
  "use strict";

  function formatDuration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + "s";
    var minutes = Math.floor(seconds / 60);
    seconds = seconds % 60;
    if (minutes < 60) return minutes + "m " + String(seconds).padStart(2, "0") + "s";
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 48) return hours + "h " + String(minutes).padStart(2, "0") + "m";
    return Math.floor(hours / 24) + "d " + (hours % 24) + "h";
  }

  function formatRelative(date) {
    var seconds = (Date.now() - date.getTime()) / 1000;
    var future = seconds < 0;
    seconds = Math.abs(seconds);
    var text;
    if (seconds < 5) return future ? "now" : "just now";
    if (seconds < 60) text = Math.floor(seconds) + " s";
    else if (seconds < 3600) text = Math.floor(seconds / 60) + " min";
    else if (seconds < 86400) text = Math.floor(seconds / 3600) + " h";
    else text = Math.floor(seconds / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }

  // The page format of every time (the {% moment %} tag's): 24-hour, ISO-like date, never the locale's own
  // (which may be 12-hour); here on the browser's clock, the same zone the server uses once the tz cookie is set.
  function pad(n) { return String(n).padStart(2, "0"); }
  function formatLocal(date, seconds) {
    var text = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes());
    return seconds ? text + ":" + pad(date.getSeconds()) : text;
  }
  function formatUtc(date) { return date.toISOString().slice(0, 19).replace("T", " ") + " UTC"; }

  function refreshTimes(root) {
    (root || document).querySelectorAll("time[data-relative]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      el.textContent = formatRelative(date);
      if (!el.title) el.title = formatLocal(date, true) + "; " + formatUtc(date);
    });
    (root || document).querySelectorAll("time[data-exact]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date) || el.dataset.done) return;
      el.textContent = formatLocal(date, el.dataset.exact === "seconds");
      if (!el.title) el.title = formatUtc(date);
      el.dataset.done = "1";
    });
    // A running duration ticks only while the data is live: with polls failing, the scan may have finished.
    if (failingPollers.size > 0) return;
    (root || document).querySelectorAll("[data-since]").forEach(function (el) {
      var since = new Date(el.getAttribute("data-since"));
      if (!isNaN(since)) el.textContent = formatDuration((Date.now() - since.getTime()) / 1000);
    });
  }

  // --- Live polls that fail say so: a banner, and durations frozen, so stale data never looks live.
  // A poll that hangs would hold its element's next polls (htmx drops a request while one is in flight), so each
  // poll gets a timeout and a timeout counts as a failure.
  var POLL_TIMEOUT_MS = 10000;
  var failingPollers = new Set();

  function pollerKey(elt) {
    if (!elt || !elt.getAttribute) return null;
    if (!/\bevery\s/.test(elt.getAttribute("hx-trigger") || "")) return null;
    var owner = elt.id ? elt : elt.closest("[id]");
    return owner ? owner.id : "poller";
  }

  function showLiveState() {
    var failing = failingPollers.size > 0;
    var banner = document.getElementById("live-failing");
    if (banner) banner.hidden = !failing;
    document.body.classList.toggle("live-failing", failing);
  }

  function pollFailed(event) {
    var key = pollerKey(event.detail && event.detail.elt);
    if (key === null) return;
    failingPollers.add(key);
    showLiveState();
  }

  document.addEventListener("htmx:configRequest", function (event) {
    if (pollerKey(event.detail.elt) !== null) event.detail.timeout = POLL_TIMEOUT_MS;
  });
  ["htmx:responseError", "htmx:sendError", "htmx:timeout"].forEach(function (name) {
    document.addEventListener(name, pollFailed);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var key = pollerKey(event.detail.elt);
    if (key === null || event.detail.successful !== true || !failingPollers.delete(key)) return;
    showLiveState();
    refreshTimes();
  });

  function selectedRows() {
    return document.querySelectorAll("input.row-select:checked");
  }

  // Polling pauses while the tab is hidden and while rows are selected (a swap would drop the selection).
  window.scansPollAllowed = function () {
    return document.visibilityState === "visible" && selectedRows().length === 0;
  };

  function updateBulkBar() {
    var bar = document.getElementById("bulk-form");
    if (!bar) return;
    var count = selectedRows().length;
    bar.hidden = count === 0;
    var counter = bar.querySelector("[data-selected-count]");
    if (counter) counter.textContent = String(count);
    var all = document.querySelector("[data-select-all]");
    if (all) {
      var rows = document.querySelectorAll("input.row-select");
      all.checked = rows.length > 0 && count === rows.length;
      all.indeterminate = count > 0 && count < rows.length;
    }
  }

  document.addEventListener("click", function (event) {
    var copy = event.target.closest("button.copy");
    if (copy) {
      var text = copy.getAttribute("data-copy");
      var done = function () {
        var label = copy.getAttribute("aria-label");
        copy.classList.add("copied");
        copy.setAttribute("aria-label", "Copied");
        setTimeout(function () {
          copy.classList.remove("copied");
          copy.setAttribute("aria-label", label);
        }, 1200);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        document.execCommand("copy");
        area.remove();
        done();
      }
      return;
    }
    if (event.target.closest("[data-clear-selection]")) {
      selectedRows().forEach(function (box) { box.checked = false; });
      updateBulkBar();
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-select-all]")) {
      document.querySelectorAll("input.row-select").forEach(function (box) { box.checked = event.target.checked; });
    }
    if (event.target.matches("[data-select-all], input.row-select")) updateBulkBar();
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
    var search = document.getElementById("q");
    if (search) {
      event.preventDefault();
      search.focus();
      search.select();
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      document.querySelectorAll("[data-live-poller]").forEach(function (el) { htmx.trigger(el, "scansresume"); });
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    refreshTimes(event.target);
    updateBulkBar();
  });
  // The list's form follows the URL through static/scans/list.js.
  document.addEventListener("htmx:historyRestore", function () { refreshTimes(); });
  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes();
    updateBulkBar();
    setInterval(refreshTimes, 1000);
  });
})();

// --- Bulk actions on every scan matching the filters ("Select all N matching"). Once every row of the page is
// ticked, the table's strip offers the whole filtered set; choosing it enables the strip's two hidden inputs
// (scope=matching and the list's query string), which the bulk form then posts. The state lives in the DOM (those
// inputs), so a table swap, which brings a fresh strip, can never leave a stale "all matching" behind. The server
// reads the filters again and counts for itself.
(function () {
  "use strict";

  function strip() {
    return document.querySelector("[data-select-matching]");
  }

  function matchingChosen(el) {
    var input = el && el.querySelector("[data-matching-input]");
    return Boolean(input && !input.disabled);
  }

  function choose(el, chosen) {
    el.querySelectorAll("[data-matching-input]").forEach(function (input) { input.disabled = !chosen; });
    el.querySelector("[data-matching-offer]").hidden = chosen;
    el.querySelector("[data-matching-chosen]").hidden = !chosen;
  }

  function updateMatching() {
    var rows = document.querySelectorAll("input.row-select");
    var ticked = document.querySelectorAll("input.row-select:checked").length;
    var wholePage = rows.length > 0 && ticked === rows.length;
    var selectPage = document.querySelector("[data-select-page]");
    if (selectPage) selectPage.hidden = wholePage;
    var el = strip();
    if (!el) return;
    if (!wholePage && matchingChosen(el)) choose(el, false);
    el.hidden = !wholePage;
    var counter = document.querySelector("#bulk-form [data-selected-count]");
    if (counter && matchingChosen(el)) counter.textContent = "All " + el.getAttribute("data-matching-total") + " matching";
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-select-all], input.row-select")) updateMatching();
  });
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-select-page]")) {
      var all = document.querySelector("[data-select-all]");
      document.querySelectorAll("input.row-select").forEach(function (box) { box.checked = true; });
      if (all) all.checked = true; // its change handler copies its state to every row
      // The bar and the strip follow through the same change event a tick sends.
      (all || document.querySelector("input.row-select")).dispatchEvent(new Event("change", { bubbles: true }));
      return;
    }
    var el = strip();
    if (!el) return;
    if (event.target.closest("[data-select-matching-all]")) {
      choose(el, true);
      updateMatching();
    } else if (event.target.closest("[data-clear-selection]")) {
      choose(el, false); // the rows were unticked by the handler above
      updateMatching();
    }
  });
  // The form's `next` was the list's URL when the page loaded; filters changed since (htmx pushes them into the
  // URL), and the operator should come back to the list as it is now.
  document.addEventListener("submit", function (event) {
    if (event.target.id !== "bulk-form") return;
    var next = event.target.querySelector('input[name="next"]');
    if (next) next.value = window.location.pathname + window.location.search;
  });
  document.addEventListener("htmx:afterSettle", updateMatching);
  document.addEventListener("DOMContentLoaded", updateMatching);
})();
