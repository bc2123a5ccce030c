// mobilesam ui: the page. Plain JavaScript, no dependencies, nothing from the network.
// State lives here; the server decodes prompts and stores what is saved (after every change).
// The page is classic scripts sharing one global scope, loaded in this order by index.html:
// app.js (state, server calls, objects, undo, saving), masks.js (RLE -> canvas),
// prompts.js (prompts -> masks), tools.js (brush, eraser, polygon, vertices), draw.js
// (the canvas), panels.js (lists, images, segment everything), input.js (mouse, keys,
// buttons, uploads; it starts the page). Each uses the others' functions only when called.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const app = {
  images: [], name: null, img: null, width: 0, height: 0,
  objects: [], selected: -1, revision: 0,
  history: [], future: [],
  view: { scale: 1, ox: 0, oy: 0 },
  hover: null, hoverOn: true, hoverCtl: null, hoverPending: null,
  seq: 0, saving: null, dirty: false,
  latencies: [], switches: [], strokes: [],  // timings, for tests and benchmarks
  drawMasks: true,  // M: the masks shown, or the photo alone
  imageCachePx: 100e6,  // decoded images kept for going back: 4 at most, and this many pixels (a 108 MP photo alone)
  status: null,
  tool: "prompt", brush: 10,  // prompt | brush | eraser | polygon | vertices; the brush's radius in image pixels
  poly: null, polyErase: false,  // the polygon being drawn: its vertices so far; Shift+G: it erases
  edit: null,  // the vertex tool's outline being edited: { obj, strokes, history, future }
  classes: null, label: "object",  // the server's class list (--classes); a new object's label
  predicting: Promise.resolve(), painting: Promise.resolve(),
};
window.app = app;

// ---------- server ----------

async function api(method, path, body, signal) {
  const opts = { method, signal, headers: {} };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { const err = new Error(data.detail || res.statusText); err.status = res.status; err.data = data; throw err; }
  return data;
}
const enc = encodeURIComponent;

function say(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

// ---------- objects, history, saving ----------

function plain(o) {  // what is saved and what undo restores
  const out = { id: o.id, label: o.label, color: o.color, points: o.points, box: o.box, source: o.source };
  if (o.rle) { out.rle = o.rle; out.score = o.score; out.mask_id = o.mask_id; }
  if (o.box_score !== undefined) out.box_score = o.box_score;  // an imported detector's confidence
  if (o.strokes.length) out.strokes = o.strokes;
  return out;
}

// An object as the page holds it: a saved mask already has its strokes painted in.
function live(o, i) {
  const strokes = o.strokes || [];
  return { color: colorOf(i), points: [], box: null, ...o, strokes, painted: strokes.length, candidates: [] };
}

function snapshot() { return JSON.stringify(app.objects.map(plain)); }

function restore(json) {
  if (app.tool === "vertices") setTool("vertices");  // its outline was of the objects undone: back to prompts
  app.objects = JSON.parse(json).map(live);
  app.selected = Math.min(app.selected, app.objects.length - 1);
  render(); listObjects(); listCandidates();
}

function remember() { app.history.push(snapshot()); app.future = []; }

function undo() {
  if (app.edit) { editStep("history", "future"); return; }  // inside a vertex edit: its last change
  if (!app.history.length) return;
  app.future.push(snapshot()); restore(app.history.pop()); save();
}

function redo() {
  if (app.edit) { editStep("future", "history"); return; }
  if (!app.future.length) return;
  app.history.push(snapshot()); restore(app.future.pop()); save();
}

async function save() {
  if (!app.name) return;
  if (app.saving) { app.dirty = true; return app.saving; }
  const name = app.name;
  const objects = app.objects.filter((o) => o.rle).map(plain);
  app.saving = (async () => {
    try {
      const out = await api("PUT", `/api/images/${enc(name)}/annotations`, { revision: app.revision, objects });
      if (name === app.name) { app.revision = out.revision; say(`saved (revision ${out.revision})`); }
      markDone(name, objects.length > 0);
    } catch (e) {
      say(e.status === 409 ? `not saved: ${e.message}` : `not saved: ${e.message}`, true);
    } finally {
      app.saving = null;
      if (app.dirty) { app.dirty = false; save(); }
    }
  })();
  return app.saving;
}

function newObject() {
  const used = new Set(app.objects.map((o) => o.id));
  let id = app.objects.length + 1;
  while (used.has(id)) id++;
  app.objects.push({ id, label: app.label, color: colorOf(id - 1), points: [], box: null, source: "prompt",
    candidates: [], rle: null, strokes: [], painted: 0 });
  app.selected = app.objects.length - 1;
  listObjects(); listCandidates(); render();
}

function current() {
  if (app.selected < 0 || !app.objects[app.selected]) newObject();
  return app.objects[app.selected];
}
