// handgrad serve: the page. Draw on #pad; every stroke asks the server what the network
// makes of it (/api/models/{name}/look); a picked label shows the derivation
// (/trace) and "learn from this" takes one SGD step on the visitor's own copy (/learn).
"use strict";

const $ = (id) => document.getElementById(id);
const SEND = 140; // the drawing travels as SEND×SEND gray bytes
const state = { models: [], model: null, label: null, inked: false, busy: 0, seq: 0, last: null,
  maxLr: 10 };

const pad = $("pad");
const ctx = pad.getContext("2d");
// the page's own words before any model is shown, put back when the view starts over
const INITIAL = Object.fromEntries(["confidence", "hidden-caption", "learn-status", "trace-intro"]
  .map((id) => [id, $(id).textContent]));

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  };
  state.busy++;
  try {
    const res = await fetch(path, { credentials: "same-origin", ...opts });
    const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
    if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
    return data;
  } finally {
    state.busy--;
  }
}

// ---------------------------------------------------------------- drawing

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.inked = false;
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

let drawing = false, lastPt = null;
pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  try { pad.setPointerCapture(ev.pointerId); } catch (e) { /* a synthetic pointer */ }
  drawing = true;
  lastPt = point(ev);
  stroke(lastPt, lastPt, ev.pressure);
});
let lastLive = 0;
pad.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const p = point(ev);
  stroke(lastPt, p, ev.pressure);
  lastPt = p;
  // live while drawing: at most one look every 150 ms, never piling up requests
  const now = performance.now();
  if (now - lastLive > 150 && state.busy === 0) {
    lastLive = now;
    look();
  }
});
function endStroke(ev) {
  if (!drawing) return;
  drawing = false;
  try { pad.releasePointerCapture(ev.pointerId); } catch (e) { /* never captured */ }
  look();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function stroke(a, b, pressure) {
  // a pen's pressure thickens the line a little; mouse and finger report 0.5
  const p = pressure && pressure !== 0.5 ? pressure : 0.5;
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 16 + 12 * p;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.lineTo(b[0], b[1]);
  ctx.stroke();
  state.inked = true;
}

function drawingBody() {
  const small = document.createElement("canvas");
  small.width = SEND;
  small.height = SEND;
  const sctx = small.getContext("2d");
  sctx.drawImage(pad, 0, 0, SEND, SEND);
  const rgba = sctx.getImageData(0, 0, SEND, SEND).data;
  let bin = "";
  for (let i = 0; i < rgba.length; i += 4) bin += String.fromCharCode(rgba[i]);
  return { pixels: btoa(bin), width: SEND, height: SEND };
}

// ---------------------------------------------------------------- talking to the server

function modelPath(what) {
  return `/api/models/${encodeURIComponent(state.model.name)}/${what}`;
}

async function look() {
  if (!state.model || !state.model.image || !state.inked) return;
  const seq = ++state.seq;
  setStatus("thinking…");
  try {
    const r = await api(modelPath("look"), drawingBody());
    if (seq !== state.seq) return; // a newer stroke's answer is on its way
    render(r);
    setStatus("ready");
    if (state.label !== null) await showTrace();
  } catch (e) {
    if (seq === state.seq) setStatus(e.message, true);
  }
}

function learningRate() {
  // an empty box (or one a browser could not read as a number) is named here, not sent
  const box = $("lr");
  const lr = Number(box.value.trim());
  if (box.value.trim() === "" || !Number.isFinite(lr) || lr <= 0 || lr > state.maxLr) {
    const got = box.value.trim() === "" ? "the box is empty" : `got ${box.value.trim()}`;
    setStatus(`the learning rate must be a number in (0, ${state.maxLr}]: ${got}`, true);
    box.focus();
    return null;
  }
  return lr;
}

async function learn() {
  if (!state.model || !state.model.image || !state.inked || state.label === null) return;
  const lr = learningRate();
  if (lr === null) return;
  const before = state.last ? state.last.probabilities[state.label] : null;
  const model = state.model;
  setStatus("learning…");
  try {
    const r = await api(modelPath("learn"), { ...drawingBody(), label: state.label, lr });
    model.steps = r.steps; // what the model list says when this model is chosen again
    if (state.model !== model) return; // another model was chosen meanwhile
    state.seq++;
    render(r);
    const name = state.model.classes[r.label];
    const moved = before === null ? "" :
      `; P(${name}) ${(100 * before).toFixed(1)}% → ${(100 * r.probabilities[r.label]).toFixed(1)}%`;
    $("learn-status").textContent =
      `One SGD step on your copy with label ${name} (lr ${r.lr}): ` +
      `loss ${r.loss_before.toFixed(4)} → ${r.loss_after.toFixed(4)}${moved}.`;
    setStatus("ready");
    await showTrace();
  } catch (e) {
    if (state.model === model) setStatus(e.message, true);
  }
}

async function resetCopy() {
  if (!state.model) return;
  const model = state.model;
  try {
    await api(modelPath("reset"), {});
    model.steps = 0;
    if (state.model !== model) return;
    $("learn-status").textContent = "Your copy is forgotten: back to the served model.";
    $("steps").textContent = "";
    await look();
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function showTrace() {
  if (!state.model || !state.model.image || !state.inked || state.label === null) return;
  const model = state.model, seq = state.seq;
  try {
    const t = await api(modelPath("trace"), { ...drawingBody(), label: state.label });
    if (state.model !== model || state.seq !== seq) return; // for what is no longer shown
    renderTrace(t);
  } catch (e) {
    if (state.model !== model || state.seq !== seq) return;
    $("trace").innerHTML = "";
    $("trace-intro").textContent = `The derivation is not available: ${e.message}`;
  }
}

// ---------------------------------------------------------------- rendering

function buildBars() {
  const box = $("probabilities");
  box.innerHTML = "";
  const labels = $("labels");
  labels.innerHTML = "";
  state.model.classes.forEach((name, k) => {
    const row = document.createElement("div");
    row.className = "prob";
    row.setAttribute("role", "listitem");
    row.dataset.class = String(k);
    row.innerHTML = `<span class="cls"></span><span class="track"><span class="bar"></span></span>` +
      `<span class="pct">–</span>`;
    row.querySelector(".cls").textContent = name;
    box.appendChild(row);
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name;
    b.dataset.label = String(k);
    b.addEventListener("click", () => pickLabel(k));
    labels.appendChild(b);
  });
}

function clearResults() {
  // the network's answer for a drawing: gone with the drawing, or with the model it came from
  state.seq++; // an answer still on its way is for what was shown before
  state.last = null;
  $("prediction").textContent = "?";
  $("confidence").textContent = INITIAL.confidence;
  $("learn").disabled = true;
  for (const r of $("probabilities").children) {
    r.querySelector(".bar").style.width = "0";
    r.querySelector(".pct").textContent = "–";
    r.classList.remove("top");
    delete r.dataset.p;
  }
  $("units").innerHTML = "";
  const hidden = $("hidden");
  hidden.getContext("2d").clearRect(0, 0, hidden.width, hidden.height);
  $("hidden-caption").textContent = INITIAL["hidden-caption"];
  const seen = $("seen");
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  $("trace").innerHTML = "";
  delete $("trace").dataset.steps;
  $("trace-intro").textContent = INITIAL["trace-intro"];
}

function pickLabel(k) {
  state.label = k;
  for (const b of $("labels").children) b.classList.toggle("picked", Number(b.dataset.label) === k);
  for (const r of $("probabilities").children) r.classList.toggle("truth", Number(r.dataset.class) === k);
  $("learn").disabled = !state.inked;
  showTrace();
}

function render(r) {
  state.last = r;
  $("prediction").textContent = r.class;
  $("confidence").textContent = `${(100 * r.probabilities[r.prediction]).toFixed(1)}% sure`;
  $("steps").textContent = r.steps ? `your copy: ${r.steps} SGD step${r.steps > 1 ? "s" : ""}` : "";
  const rows = $("probabilities").children;
  r.probabilities.forEach((p, k) => {
    const row = rows[k];
    row.querySelector(".bar").style.width = `${(100 * p).toFixed(2)}%`;
    row.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
    row.classList.toggle("top", k === r.prediction);
    row.dataset.p = String(p);
  });
  $("learn").disabled = state.label === null;
  drawGray($("seen"), r.input);
  drawHidden(r.hidden);
  drawUnits(r.units);
}

function drawGray(canvas, img) {
  const h = img.length, w = img[0].length;
  canvas.width = w;
  canvas.height = h;
  const c = canvas.getContext("2d");
  const data = c.createImageData(w, h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = Math.max(0, Math.min(255, Math.round(255 * img[y][x])));
    const i = 4 * (y * w + x);
    data.data[i] = data.data[i + 1] = data.data[i + 2] = v;
    data.data[i + 3] = 255;
  }
  c.putImageData(data, 0, 0);
}

function heat(t) { // 0 → dark, 1 → bright yellow, through purple and orange
  const stops = [[16, 19, 26], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  return stops[i].map((a, j) => Math.round(a + f * (stops[i + 1][j] - a)));
}

function drawHidden(hidden) {
  const canvas = $("hidden");
  if (!hidden.length) {
    $("hidden-caption").textContent = "This model has no hidden layer: its pixels feed the classes directly.";
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  const layer = hidden[0];
  const [rows, cols] = layer.grid;
  const cell = Math.floor(256 / Math.max(rows, cols));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const c = canvas.getContext("2d");
  c.fillStyle = "#10131a";
  c.fillRect(0, 0, canvas.width, canvas.height);
  const top = layer.max > 0 ? layer.max : 1;
  layer.values.forEach((v, j) => {
    const [r, g, b] = heat(v / top);
    c.fillStyle = `rgb(${r},${g},${b})`;
    c.fillRect((j % cols) * cell + 1, Math.floor(j / cols) * cell + 1, cell - 2, cell - 2);
  });
  $("hidden-caption").textContent =
    `Layer 1: ${layer.active} of ${layer.units} units fired (h = max(0, Q), F2); ` +
    `the brightest reached ${layer.max.toFixed(2)}.` +
    (hidden.length > 1 ? ` (${hidden.length} hidden layers; the first is shown.)` : "");
}

function drawUnits(units) {
  const box = $("units");
  box.innerHTML = "";
  for (const u of units) {
    const item = document.createElement("div");
    item.className = "unit";
    const canvas = document.createElement("canvas");
    const w = u.weights, h = w.length, wd = w[0].length;
    canvas.width = wd;
    canvas.height = h;
    const c = canvas.getContext("2d");
    const data = c.createImageData(wd, h);
    const s = u.scale > 0 ? u.scale : 1;
    for (let y = 0; y < h; y++) for (let x = 0; x < wd; x++) {
      const t = Math.max(-1, Math.min(1, w[y][x] / s));
      const i = 4 * (y * wd + x);
      // diverging: blue for negative, white at zero, red for positive
      const a = Math.abs(t);
      const [r, g, b] = t >= 0 ? [255 - 35 * a, 255 - 217 * a, 255 - 217 * a]
        : [255 - 218 * a, 255 - 156 * a, 255 - 20 * a];
      data.data[i] = r; data.data[i + 1] = g; data.data[i + 2] = b; data.data[i + 3] = 255;
    }
    c.putImageData(data, 0, 0);
    const cap = document.createElement("div");
    cap.textContent = `${u.label} · ${u.activation.toFixed(2)}`;
    item.append(canvas, cap);
    box.appendChild(item);
  }
}

function fmt(v) {
  const a = Math.abs(v);
  if (v === 0) return "0";
  if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
  return v.toFixed(4);
}

function values(step) {
  if (step.value !== undefined) {
    const flat = step.value;
    const shown = flat.slice(0, 12).map(fmt).join(", ");
    return `[${shown}${flat.length > 12 ? ", …" : ""}]`;
  }
  const s = step.summary;
  return `‖·‖ = ${fmt(s.norm)}, min ${fmt(s.min)}, max ${fmt(s.max)}, ` +
    `${s.nonzero} of ${step.shape.reduce((a, b) => a * b, 1)} non-zero`;
}

function renderTrace(t) {
  const name = state.model.classes[t.label];
  $("trace-intro").textContent =
    `True label ${name}: each quantity of F1–F5 and B1–B7 for your drawing, and the worst ` +
    `relative error of an independent check (finite differences, the numerical Jacobian).`;
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>eq</th><th>quantity</th><th>formula</th><th>shape</th>" +
    "<th>values</th><th>check</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const step of t.steps) {
    const tr = document.createElement("tr");
    if (step.name === "dL/dO") tr.className = "seed";
    const err = step.check_error;
    const ok = step.passed;
    const shown = err === null ? "not finite" : err.toExponential(1);
    const cells = [
      ["eq", step.eq], ["name", step.name], ["formula", step.formula],
      ["shape", step.shape.length ? `(${step.shape.join(" × ")})` : "scalar"],
      ["vals", values(step)],
      [ok === null ? "" : ok ? "ok" : "bad", ok === null ? "—" : `${ok ? "✓" : "✗"} ${shown}`],
    ];
    for (const [cls, text] of cells) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  table.appendChild(body);
  $("trace").replaceChildren(table);
  $("trace").dataset.steps = String(t.steps_taken); // the copy's SGD steps it shows
}

// ---------------------------------------------------------------- start

function chooseModel(name) {
  state.model = state.models.find((m) => m.name === name);
  state.label = null;
  const notice = $("notice");
  const drawable = state.model.image;
  // a model of other examples than images: its classes only, nothing of another model's
  // answer; the drawing stays on the (hidden) pad for the next image model
  document.body.classList.toggle("no-drawing", !drawable);
  if (!drawable) {
    notice.hidden = false;
    notice.textContent = `Model ${name} takes examples of shape [${state.model.example_shape}], ` +
      "not images, so there is nothing to draw for it. It still answers the /v2 protocol.";
  } else {
    notice.hidden = true;
  }
  $("seen-shape").textContent = state.model.example_shape.join("×");
  buildBars();
  clearResults();
  $("learn-status").textContent = INITIAL["learn-status"];
  $("steps").textContent = state.model.steps ? `your copy: ${state.model.steps} SGD steps` : "";
  if (!drawable) {
    $("confidence").textContent = "nothing to draw for this model";
    setStatus("ready");
    return;
  }
  look();
}

async function start() {
  clearPad();
  $("clear").addEventListener("click", () => {
    clearPad();
    clearResults();
  });
  $("learn").addEventListener("click", learn);
  $("reset").addEventListener("click", resetCopy);
  $("model").addEventListener("change", (ev) => chooseModel(ev.target.value));
  try {
    const info = await api("/api/models");
    state.models = info.models;
    $("lr").value = info.lr;
    if (info.max_lr) {
      state.maxLr = info.max_lr;
      $("lr").max = String(info.max_lr);
    }
    const select = $("model");
    for (const m of info.models) {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = `${m.name} (${m.layer_sizes.join("-")})`;
      select.appendChild(o);
    }
    const first = info.models.find((m) => m.image) || info.models[0];
    select.value = first.name;
    chooseModel(first.name);
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`, true);
  }
}

start();
