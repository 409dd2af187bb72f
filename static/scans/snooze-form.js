// The snooze form: typing a From or Until time picks "Custom", so the times typed are the ones used.
(function () {
  "use strict";
  document.addEventListener("input", function (event) {
    var form = event.target.closest("form[data-snooze-form]");
    if (!form || event.target.type !== "datetime-local") return;
    var custom = form.querySelector('input[name="preset"][value="custom"]');
    if (custom && event.target.value) custom.checked = true;
  });
})();
