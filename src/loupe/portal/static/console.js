// loupe's console: the few things the server cannot do from a page it rendered once.
// Relative times stay true, the Now panel refreshes itself, and actions post JSON with the
// anti-forgery token (a plain link or a form on another site can do neither).
"use strict";

function relative(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  const size = Math.abs(seconds);
  let text;
  if (size < 1) return "just now";
  if (size < 10) text = size.toFixed(1) + " s";
  else if (size < 120) text = Math.round(size) + " s";
  else if (size < 7200) text = Math.round(size / 60) + " min";
  else if (size < 172800) text = (size / 3600).toFixed(1) + " h";
  else text = (size / 86400).toFixed(1) + " d";
  return seconds >= 0 ? text + " ago" : "in " + text;
}

function refreshTimes(root) {
  for (const el of (root || document).querySelectorAll("time[data-ago]")) {
    el.textContent = relative(el.getAttribute("datetime"));
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="loupe-csrf"]');
  return meta ? meta.content : "";
}

function showStatus(html) {
  const status = document.getElementById("now-status");
  if (status) status.innerHTML = html;
}

function clock(date) {
  return date.toISOString().slice(11, 19) + " UTC";
}

function livePanel() {
  const panel = document.getElementById("now-panel");
  if (!panel) return;
  const every = Number(panel.dataset.refreshMs || 1000);
  let lastGood = new Date();
  async function poll() {
    try {
      const response = await fetch(panel.dataset.src, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
        cache: "no-store",
      });
      const text = await response.text();
      if (response.ok) {
        panel.innerHTML = text;
        panel.classList.remove("stale");
        lastGood = new Date();
        showStatus("");
        refreshTimes(panel);
      } else if (response.status === 401 || response.status === 403) {
        panel.classList.add("stale");
        showStatus('<div class="banner problem">Your session has ended: ' +
          '<a href="">reload the page</a> to sign in again. What is shown below is from ' +
          clock(lastGood) + ".</div>");
      } else {
        // The server's own words on what cannot be reached, above the last good data.
        const holder = document.createElement("div");
        holder.innerHTML = text;
        const banner = holder.querySelector(".banner.problem");
        panel.classList.add("stale");
        showStatus((banner ? banner.outerHTML : '<div class="banner problem">The console ' +
          "answered " + response.status + ".</div>") + '<div class="banner note">Out of ' +
          "date: what is shown below is from " + clock(lastGood) + ".</div>");
      }
    } catch (error) {
      panel.classList.add("stale");
      showStatus('<div class="banner problem">loupe cannot be reached (' + error.message +
        "). What is shown below is from " + clock(lastGood) + ".</div>");
    }
    setTimeout(poll, every);
  }
  setTimeout(poll, every);
}

async function act(button) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  let body = button.dataset.body || "{}";
  if (button.dataset.prompt) {
    // An action that needs a reason (dismissing a finding): asked for, never made up.
    const reason = window.prompt(button.dataset.prompt);
    if (!reason || !reason.trim()) return;
    body = JSON.stringify({ reason: reason.trim() });
  }
  const result = button.parentElement.querySelector(".result");
  button.disabled = true;
  try {
    const response = await fetch(button.dataset.action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Loupe-Csrf": csrfToken() },
      credentials: "same-origin",
      body: body,
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || "answered " + response.status);
    if (result) result.textContent = button.dataset.done || "done";
    setTimeout(() => window.location.reload(), 800);
  } catch (error) {
    if (result) result.textContent = "refused: " + error.message;
    button.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});

document.addEventListener("DOMContentLoaded", () => {
  refreshTimes();
  setInterval(refreshTimes, 15000);
  livePanel();
  const hash = window.location.hash.slice(1);
  if (hash) {
    const target = document.getElementById(hash);
    if (target) target.classList.add("highlight");
  }
});
