// worldline play: one WebSocket session. The server streams binary frame messages
// (uint16 header length | JSON header | dream picture | real-env picture); everything else is JSON.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ui = {
  dream: $("dream"), real: $("real"), status: $("status"), log: $("log"),
  fps: $("fps"), latency: $("latency"), latency95: $("latency95"), stepMs: $("step-ms"),
  dropped: $("dropped"), frameIndex: $("frame-index"),
};

let info = null;          // /api/info .model of the session's world
let controls = null;      // info.controls
let ws = null;
let scale = 8, smooth = false;
let paused = false, recording = false;
let seq = 0, lastSent = null;
const held = new Set();   // KeyboardEvent.code of the keys held now (keyboard and gamepad)
const pressOrder = [];    // codes in the order they were pressed, for discrete ties
const padHeld = new Set();
const sentAt = new Map(); // action seq -> performance.now() when sent
let latencies = [];       // key-to-frame samples (ms), the last 50
const frameTimes = [];    // arrival times of drawn frames, the last second
let newestDrawn = -1, framesDrawn = 0;
let pointer = null;       // continuous pointer/drag values (null: not touching)
let base = null;          // slider values (the action with no key held)
let dragStart = null;

function log(text) {
  ui.log.textContent = (new Date().toLocaleTimeString() + "  " + text + "\n" + ui.log.textContent).slice(0, 4000);
}
function status(text, error = false) { ui.status.textContent = text; ui.status.classList.toggle("error", error); }

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

// ------------------------------------------------------------------------------------------------
// frames
// ------------------------------------------------------------------------------------------------

const MIME = { jpeg: "image/jpeg", png: "image/png", webp: "image/webp" };
const WINDOW = 2; // frames in flight: one on screen, one on the way; the server drops the rest

async function toBitmap(bytes, header) {
  if (header.fmt !== "raw") return createImageBitmap(new Blob([bytes], { type: MIME[header.fmt] }));
  const rgba = new Uint8ClampedArray(header.w * header.h * 4);
  for (let i = 0, j = 0; i < bytes.length; i += 3, j += 4) {
    rgba[j] = bytes[i]; rgba[j + 1] = bytes[i + 1]; rgba[j + 2] = bytes[i + 2]; rgba[j + 3] = 255;
  }
  return createImageBitmap(new ImageData(rgba, header.w, header.h));
}

function draw(canvas, bitmap, header) {
  const W = header.w * scale, H = header.h * scale;
  if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = smooth;
  ctx.drawImage(bitmap, 0, 0, W, H);
}

async function onFrame(buffer) {
  const view = new DataView(buffer);
  const n = view.getUint16(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 2, n)));
  const arrived = performance.now();
  let at = 2 + n;
  const pictures = header.sizes.map((size) => { const p = new Uint8Array(buffer, at, size); at += size; return p; });
  // key-to-frame latency: the first frame that reflects an action closes its sample
  for (const [s, t] of sentAt) {
    if (s <= header.seq) {
      if (s === header.seq && header.i > 0) { latencies.push(arrived - t); if (latencies.length > 50) latencies.shift(); }
      sentAt.delete(s);
    }
  }
  let bitmaps;
  try {
    bitmaps = await Promise.all(pictures.map((p) => toBitmap(p, header)));
  } finally {
    send({ type: "ack" }); // one frame less in flight: the server sends the newest next
  }
  if (header.i < newestDrawn && header.i !== 0) return; // a later frame was drawn already
  newestDrawn = header.i;
  draw(ui.dream, bitmaps[0], header);
  if (bitmaps[1]) draw(ui.real, bitmaps[1], header);
  framesDrawn += 1;
  ui.dream.dataset.frames = String(framesDrawn);
  frameTimes.push(arrived);
  ui.stepMs.textContent = header.ms.toFixed(1);
  ui.dropped.textContent = header.drop;
  ui.frameIndex.textContent = header.i;
  $("rec-badge").hidden = header.rec === null || header.rec === undefined;
  if (header.rec !== null && header.rec !== undefined) $("rec-badge").textContent = "● rec " + header.rec;
  if (header.real_done) $("real-sync").textContent = "episode ended: reset";
}

function quantile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

setInterval(() => {
  const now = performance.now();
  while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
  ui.fps.textContent = String(frameTimes.length);
  const med = quantile(latencies, 0.5), p95 = quantile(latencies, 0.95);
  ui.latency.textContent = med === null ? "–" : med.toFixed(0);
  ui.latency95.textContent = p95 === null ? "–" : p95.toFixed(0);
}, 250);

// ------------------------------------------------------------------------------------------------
// actions from keys, mouse, sliders and gamepads
// ------------------------------------------------------------------------------------------------

function currentAction() {
  if (!controls || controls.kind === "none") return [];
  const keys = new Set([...held, ...padHeld]);
  if (controls.kind === "discrete") {
    let best = null, bestScore = -1;
    for (const a of controls.actions) {
      if (!a.keys.length || !a.keys.every((k) => keys.has(k))) continue;
      const recency = Math.max(...a.keys.map((k) => pressOrder.lastIndexOf(k)));
      const score = a.keys.length * 1000 + recency;
      if (score > bestScore) { best = a; bestScore = score; }
    }
    return [best ? best.index : controls.default[0]];
  }
  const out = controls.axes.map((ax, d) => {
    let v = base ? base[d] : controls.default[d];
    if (pointer && pointer[d] !== undefined) v = pointer[d];
    const neg = ax.neg && keys.has(ax.neg), pos = ax.pos && keys.has(ax.pos);
    if (controls.mode !== "pointer") {
      if (neg && !pos) v = ax.low;
      if (pos && !neg) v = ax.high;
    }
    return Math.min(ax.high, Math.max(ax.low, v));
  });
  return out;
}

function pushAction(force = false) {
  const action = currentAction();
  const key = JSON.stringify(action);
  if (!force && key === lastSent) return;
  lastSent = key;
  seq += 1;
  sentAt.set(seq, performance.now());
  send({ type: "action", seq, action });
  renderHeld();
}

let pendingPointer = false;
function pointerAction() { // mouse moves come faster than frames: one action per animation frame
  if (pendingPointer) return;
  pendingPointer = true;
  requestAnimationFrame(() => { pendingPointer = false; pushAction(); });
}

function canvasFraction(ev) {
  const r = ui.dream.getBoundingClientRect();
  return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))];
}

ui.dream.addEventListener("pointermove", (ev) => {
  if (!controls || controls.kind !== "continuous") return;
  const [fx, fy] = canvasFraction(ev);
  const ax = controls.axes;
  if (controls.mode === "pointer") {
    pointer = [ax[0].low + fx * (ax[0].high - ax[0].low), ax[1].low + fy * (ax[1].high - ax[1].low)];
    pointerAction();
  } else if (dragStart) { // a joystick from where the drag began: right/up drive dims 0/1 to high
    const r = ui.dream.getBoundingClientRect();
    const dx = (ev.clientX - dragStart[0]) / (r.width / 2), dy = -(ev.clientY - dragStart[1]) / (r.height / 2);
    pointer = [dx, dy].slice(0, ax.length).map((u, d) => {
      const mid = controls.default[d], span = u > 0 ? ax[d].high - mid : mid - ax[d].low;
      return mid + Math.max(-1, Math.min(1, u)) * span;
    });
    pointerAction();
  }
});
ui.dream.addEventListener("pointerdown", (ev) => {
  ui.dream.focus();
  if (controls && controls.kind === "continuous" && controls.mode !== "pointer") {
    dragStart = [ev.clientX, ev.clientY];
    ui.dream.setPointerCapture(ev.pointerId);
  }
});
ui.dream.addEventListener("pointerup", () => { if (dragStart) { dragStart = null; pointer = null; pushAction(); } });

function typing(ev) { return ["INPUT", "SELECT", "TEXTAREA"].includes(ev.target.tagName) && ev.target.type !== "checkbox"; }

window.addEventListener("keydown", (ev) => {
  if (typing(ev)) return;
  if (ev.code === "Escape") { togglePause(); return; }
  if (!controls) return;
  if (controls.mode === "pointer" && ev.code.startsWith("Arrow")) { // arrows nudge the target by 2%
    const ax = controls.axes, cur = currentAction();
    const step = (d) => (ax[d].high - ax[d].low) * 0.02;
    if (ev.code === "ArrowLeft") cur[0] -= step(0);
    if (ev.code === "ArrowRight") cur[0] += step(0);
    if (ev.code === "ArrowUp") cur[1] -= step(1);
    if (ev.code === "ArrowDown") cur[1] += step(1);
    pointer = cur.map((v, d) => Math.min(ax[d].high, Math.max(ax[d].low, v)));
    ev.preventDefault();
    pushAction();
    return;
  }
  if (ev.repeat) { ev.preventDefault(); return; }
  if (knownKeys.has(ev.code)) {
    held.add(ev.code);
    pressOrder.push(ev.code);
    if (pressOrder.length > 64) pressOrder.splice(0, 32);
    ev.preventDefault();
    pushAction();
  }
});
window.addEventListener("keyup", (ev) => {
  if (held.delete(ev.code)) { ev.preventDefault(); pushAction(); }
});
window.addEventListener("blur", () => { held.clear(); pushAction(); });

// gamepad: d-pad and face buttons press keys; the left stick drives the first two axes
const PAD_BUTTONS = { 12: "ArrowUp", 13: "ArrowDown", 14: "ArrowLeft", 15: "ArrowRight", 0: "Space" };
function pollGamepad() {
  const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
  if (pads.length && controls) {
    const pad = pads[0];
    const before = JSON.stringify([...padHeld]);
    padHeld.clear();
    pad.buttons.forEach((b, i) => {
      if (!b.pressed) return;
      if (PAD_BUTTONS[i]) padHeld.add(PAD_BUTTONS[i]);
      else if (i >= 1 && i <= 9) padHeld.add("Digit" + i);
    });
    if (controls.kind === "continuous" && controls.mode !== "pointer" && pad.axes.length >= 2) {
      const stick = [pad.axes[0], -pad.axes[1]];
      if (Math.hypot(...stick) > 0.15) {
        pointer = stick.slice(0, controls.axes.length).map((u, d) => {
          const mid = controls.default[d], ax = controls.axes[d];
          return mid + u * (u > 0 ? ax.high - mid : mid - ax.low);
        });
      } else if (!dragStart) pointer = null;
    }
    if (before !== JSON.stringify([...padHeld]) || controls.kind === "continuous") pushAction();
  }
  requestAnimationFrame(pollGamepad);
}

// ------------------------------------------------------------------------------------------------
// controls UI
// ------------------------------------------------------------------------------------------------

const knownKeys = new Set();
const KEY_LABEL = (code) => code.replace(/^Key/, "").replace(/^Digit/, "").replace("Arrow", "").replace("Space", "space");

function buildControls() {
  knownKeys.clear();
  const keys = $("keys"), axes = $("axes");
  keys.innerHTML = ""; axes.innerHTML = "";
  if (!controls || controls.kind === "none") { keys.textContent = "this model takes no actions: it plays a video forward"; return; }
  if (controls.kind === "discrete") {
    for (const a of controls.actions) {
      a.keys.forEach((k) => knownKeys.add(k));
      const span = document.createElement("span");
      span.dataset.keys = a.keys.join(" ");
      span.innerHTML = (a.keys.length ? a.keys.map((k) => `<kbd>${KEY_LABEL(k)}</kbd>`).join("+") : "<kbd>no key</kbd>") + " " + escapeHtml(a.name);
      keys.appendChild(span);
    }
    return;
  }
  base = controls.default.slice();
  if (controls.mode === "pointer") {
    keys.innerHTML = "<span>move the mouse over the dream: its position is the action (arrows nudge it)</span>";
  } else {
    keys.innerHTML = "<span>hold keys, drag on the dream, or set the sliders (the value with no key held)</span>";
  }
  controls.axes.forEach((ax, d) => {
    if (controls.mode !== "pointer") { if (ax.neg) knownKeys.add(ax.neg); if (ax.pos) knownKeys.add(ax.pos); }
    const label = document.createElement("span");
    label.innerHTML = `${escapeHtml(ax.name)} ${ax.neg && controls.mode !== "pointer" ? `<kbd>${KEY_LABEL(ax.neg)}</kbd>/<kbd>${KEY_LABEL(ax.pos)}</kbd>` : ""}`;
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: ax.low, max: ax.high, step: (ax.high - ax.low) / 200, value: base[d] });
    const value = document.createElement("span");
    value.textContent = base[d].toFixed(2);
    slider.addEventListener("input", () => { base[d] = parseFloat(slider.value); value.textContent = base[d].toFixed(2); pushAction(); });
    axes.append(label, slider, value);
  });
  keys.classList.add("keys");
}

function renderHeld() {
  const keys = new Set([...held, ...padHeld]);
  for (const span of $("keys").querySelectorAll("span[data-keys]")) {
    const ks = span.dataset.keys.split(" ").filter(Boolean);
    span.classList.toggle("held", ks.length > 0 && ks.every((k) => keys.has(k)));
  }
}

function escapeHtml(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }

function applyModel(model) {
  info = model;
  controls = model.controls;
  const preset = model.preset ? ` · ${model.preset}` : "";
  $("model-name").textContent = `${model.name} · ${model.family}${preset} · ${(model.parameters / 1e6).toFixed(2)}M params · ${model.image_size[0]}x${model.image_size[1]}`;
  const sel = $("scale-select");
  if (!sel.options.length) {
    const fit = Math.max(1, Math.floor(Math.min(512, (window.innerWidth - 80) / 2) / model.image_size[1]));
    for (let s = 1; s <= 12; s++) sel.add(new Option(`${s}x`, s, false, s === fit));
    scale = fit;
  }
  $("text-row").hidden = !model.text;
  $("episode-start").hidden = !model.dataset;
  if (model.dataset) $("episode").max = model.dataset.episodes - 1;
  $("env-start").hidden = !model.real_env;
  buildControls();
}

// ------------------------------------------------------------------------------------------------
// session commands
// ------------------------------------------------------------------------------------------------

function togglePause() { send({ type: paused ? "resume" : "pause" }); }
$("pause").onclick = togglePause;
$("step").onclick = () => { seq += 1; sentAt.set(seq, performance.now()); send({ type: "step", seq, action: currentAction() }); };
$("reset").onclick = () => send({ type: "reset" });
$("checkpoint").onclick = () => send({ type: "checkpoint" });
$("record").onclick = () => send({ type: "record", on: !recording });
$("fps-select").onchange = (ev) => { if (ev.target.value !== "") send({ type: "fps", fps: parseFloat(ev.target.value) }); };
$("scale-select").onchange = (ev) => { scale = parseInt(ev.target.value, 10); };
$("smooth").onchange = (ev) => { smooth = ev.target.checked; ui.dream.classList.toggle("smooth", smooth); ui.real.classList.toggle("smooth", smooth); };
$("send-prompt").onclick = () => send({ type: "text", text: $("prompt").value });
$("prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("send-prompt").click(); });
$("start-episode").onclick = () => {
  const msg = { type: "start", episode: parseInt($("episode").value || "0", 10) };
  if ($("episode-frame").value !== "") msg.frame = parseInt($("episode-frame").value, 10);
  send(msg);
};
$("start-env").onclick = () => send({ type: "start", env_seed: parseInt($("env-seed").value || "0", 10) });
$("upload").onchange = (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => send({ type: "start", [file.type.startsWith("video/") ? "video" : "image"]: reader.result });
  reader.readAsDataURL(file);
};

function addCheckpoint(name, frame) {
  const row = document.createElement("span");
  row.innerHTML = `<span class="dim">${escapeHtml(name)} @${frame}</span> `;
  const restore = document.createElement("button");
  restore.textContent = "restore";
  restore.onclick = () => send({ type: "restore", checkpoint: name });
  const branch = document.createElement("button");
  branch.textContent = "branch ↗";
  branch.title = "try another future from this moment in a new tab";
  branch.onclick = () => send({ type: "branch", checkpoint: name });
  row.append(restore, " ", branch);
  $("checkpoints").appendChild(row);
}

function onMessage(msg) {
  switch (msg.type) {
    case "started":
      applyModel(msg.model);
      paused = !!params.get("paused");
      $("paused-badge").hidden = !paused;
      $("checkpoints").innerHTML = "";
      recording = false; $("record").classList.remove("on");
      if (controls && controls.mode === "pointer") pointer = msg.action.slice();
      $("real-figure").hidden = !msg.real;
      $("real-name").textContent = msg.real ? `(${msg.model.real_env})` : "";
      $("real-sync").textContent = msg.real ? (msg.synced ? "in sync" : "not in sync") : "";
      $("real-sync").className = "badge " + (msg.synced ? "ok" : "off");
      $("prompt-now").textContent = msg.text ? `prompt: ${msg.text}` : "";
      newestDrawn = -1;
      lastSent = null;
      status(`session ${msg.session} · target ${msg.fps ? msg.fps + " fps" : "max fps"}`);
      log(`started session ${msg.session}`);
      pushAction(true);
      ui.dream.focus();
      break;
    case "paused": case "resumed":
      paused = msg.type === "paused"; $("paused-badge").hidden = !paused; $("pause").textContent = paused ? "resume" : "pause"; break;
    case "checkpointed": addCheckpoint(msg.checkpoint, msg.frame); log(`checkpoint ${msg.checkpoint} at frame ${msg.frame}`); break;
    case "restored": log(`restored ${msg.checkpoint}`); break;
    case "reset": log("reset to the start"); break;
    case "branched": {
      log(`branch ready: ${location.origin + msg.url}`);
      const tab = window.open(msg.url, "_blank");
      if (!tab) status("the branch opens in a new tab: allow pop-ups or follow the link in the log");
      break;
    }
    case "recording": recording = true; $("record").classList.add("on"); log(`recording into ${msg.path}`); break;
    case "recorded":
      recording = false; $("record").classList.remove("on");
      log(`saved ${msg.frames} frames as episode ${msg.episode} of ${msg.path}${msg.reason ? " (" + msg.reason + ")" : ""}`); break;
    case "text": $("prompt-now").textContent = `prompt: ${msg.text}`; log(`prompt from frame ${msg.frame}: ${msg.text}`); break;
    case "fps": status(`target ${msg.fps ? msg.fps + " fps" : "max fps"}`); break;
    case "error": status(msg.message, true); log("error: " + msg.message); break;
    default: break;
  }
}

function connect() {
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    status("connected");
    const start = { type: "start", window: WINDOW };
    if (params.get("branch")) start.branch = params.get("branch");
    if (params.get("episode")) start.episode = parseInt(params.get("episode"), 10);
    if (params.get("paused")) start.paused = true;
    send(start);
  };
  ws.onmessage = (ev) => { if (typeof ev.data === "string") onMessage(JSON.parse(ev.data)); else onFrame(ev.data); };
  ws.onclose = (ev) => status(`disconnected${ev.reason ? ": " + ev.reason : ""} (reload to reconnect)`, true);
}

fetch("/api/info").then((r) => r.json()).then((body) => {
  if (body.model) applyModel(body.model);
  if (!body.server.record) { $("record").disabled = true; $("record").title = "start the server with --record-dir DIR"; }
  connect();
  requestAnimationFrame(pollGamepad);
});
