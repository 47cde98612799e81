// Live refresh of pages showing running heals: the page sets data-live="<seconds>" on
// <body> while a heal on it runs. Progressive only: without JavaScript, reload by hand.
// Skipped while someone is typing in a form, so a refresh never eats their input.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-live") || "0", 10);
  if (!(seconds > 0)) {
    return;
  }
  window.setInterval(function () {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT");
    if (!typing && document.visibilityState !== "hidden") {
      window.location.reload();
    }
  }, seconds * 1000);
})();
