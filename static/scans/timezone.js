// Tell the server the browser's time zone, so pages show times and forms read them on the viewer's clock.
// The server checks the name against the IANA list (dashboard/middleware.py); until this cookie exists it uses UTC.
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (error) {
    return;
  }
  // IANA names use only these characters; anything else would not survive as a bare cookie value.
  if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) return;
  var current = document.cookie.split("; ").filter(function (pair) { return pair.indexOf("tz=") === 0; })[0];
  if (current === "tz=" + zone) return;
  var secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax" + secure;
})();
