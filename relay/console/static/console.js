// Keeps the overview's figures current: fetches the server-rendered fragment every 5 s (the page works without it).
"use strict";
(function () {
  const box = document.getElementById("live");
  if (!box) return;
  const url = box.dataset.live;
  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.ok && response.headers.get("content-type").startsWith("text/html")) {
        // The fragment is rendered by the relay with every value escaped, as the page itself.
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        box.replaceChildren(...doc.body.childNodes);
      }
    } catch (e) {
      // Offline or restarting: keep the last figures and try again at the next tick.
    }
  }
  setInterval(refresh, 5000);
})();
