// The demo site's script: served as application/javascript; charset=utf-8. It asks
// the server for a range of lines.txt to show that Range requests work from a
// browser too.
"use strict";

async function showRange() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("lines.txt", { headers: { Range: "bytes=0-63" } });
    const text = await response.text();
    status.textContent =
      `JavaScript ran: GET lines.txt with Range: bytes=0-63 answered ` +
      `${response.status} (${response.headers.get("Content-Range")}): "${text.trim()}"`;
    status.className = "ok";
  } catch (error) {
    status.textContent = `JavaScript ran, the range request failed: ${error}`;
  }
}

showRange();
