// mobilesam ui: the page. Plain JavaScript, no dependencies, nothing from the network.
// State lives here; the server decodes prompts and stores what is saved (after every change).
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

// ---------- masks: COCO compressed RLE -> canvas ----------

function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// The selected object's mask (and the hover preview) is drawn from a canvas of at most
// `most` pixels, scaled up to the image (nearest neighbour): the selected one gets up to
// SELECTED_PX (every pixel of a 24 MP photo), the preview MASK_PX; the cache keeps at most
// CACHE_PX pixels of them. (Full-size canvases for every object took 3.9 GB of the
// browser for 40 objects on a 24 MP photo: the others go to `paintLayer`.)
const MASK_PX = 4e6, SELECTED_PX = 24e6, CACHE_PX = 64e6;

// Image column x of a mask n columns wide, shown at `scale` from `offset` in a target
// `most` columns wide, covers target columns [first[x], first[x + 1]) (nearest neighbour:
// target column X shows image column floor((X + 0.5 - offset) / scale)); rows likewise.
function spans(n, scale, offset, most) {
  return Int32Array.from({ length: n + 1 }, (_, x) => Math.max(0, Math.min(most, Math.ceil(x * scale + offset - 0.5))));
}

// A mask's runs (column-major, of an h-row mask) painted into px, W wide: the target
// rectangle of every mask pixel set to value.
function paintRuns(counts, h, px, W, firstX, firstY, value) {
  let p = 0;
  for (let i = 0; i < counts.length; i++) {
    const end = p + counts[i];
    if (i % 2 === 1) {
      while (p < end) {  // one column segment at a time
        const x = Math.floor(p / h), y = p - x * h, n = Math.min(end - p, h - y);
        const y0 = firstY[y], y1 = firstY[y + n];
        for (let sx = firstX[x]; sx < firstX[x + 1]; sx++) {
          for (let sy = y0, idx = y0 * W + sx; sy < y1; sy++, idx += W) px[idx] = value;
        }
        p += n;
      }
    }
    p = end;
  }
}

const rgba = ([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;  // a colour as one pixel, little-endian

const rleIds = new WeakMap();  // each mask object (a new one per server answer) -> a number
function rleId(rle) {
  if (!rleIds.has(rle)) rleIds.set(rle, rleIds.next = (rleIds.next || 0) + 1);
  return rleIds.get(rle);
}

const maskCache = new Map();  // size + colour + counts -> canvas, the most recent (CACHE_PX, 64 at most)
let cachedPx = 0;

function maskCanvas(rle, color, most = MASK_PX) {
  const [h, w] = rle.size;
  const f = Math.min(1, Math.sqrt(most / (w * h)));
  const cw = Math.max(1, Math.round(w * f)), ch = Math.max(1, Math.round(h * f));
  const key = `${cw}x${ch}|${color}|${rle.counts}`;
  const hit = maskCache.get(key);
  if (hit) { maskCache.delete(key); maskCache.set(key, hit); return hit; }
  const c = document.createElement("canvas");
  c.width = cw; c.height = ch;
  const g = c.getContext("2d");
  const data = g.createImageData(cw, ch);
  paintRuns(decodedCounts(rle), h, new Uint32Array(data.data.buffer), cw, spans(w, cw / w, 0, cw), spans(h, ch / h, 0, ch), rgba(color));
  g.putImageData(data, 0, 0);
  maskCache.set(key, c);
  cachedPx += cw * ch;
  while (maskCache.size > 64 || (cachedPx > CACHE_PX && maskCache.size > 1)) {
    const [oldest, old] = maskCache.entries().next().value;
    maskCache.delete(oldest);
    cachedPx -= old.width * old.height;
  }
  return c;
}

// The objects not being edited, painted straight into one layer the size of the screen:
// each mask's runs sampled at the screen's pixels (nearest), later objects over earlier
// ones. No canvas per object: 40 objects on a 24 MP photo cost one screen of pixels.
function paintLayer(layer, v) {
  layer.width = canvas.width; layer.height = canvas.height;  // cleared
  const W = layer.width, H = layer.height;
  const objects = app.objects.filter((o, i) => i !== app.selected && o.rle);
  if (!objects.length) return;
  const [h, w] = objects[0].rle.size;
  const firstX = spans(w, v.scale, v.ox, W), firstY = spans(h, v.scale, v.oy, H);
  const g = layer.getContext("2d");
  const data = g.createImageData(W, H);
  const px = new Uint32Array(data.data.buffer);
  for (const o of objects) paintRuns(decodedCounts(o.rle), h, px, W, firstX, firstY, rgba(o.color));
  g.putImageData(data, 0, 0);
}

const countsOf = new WeakMap();  // each mask object -> its decoded runs
function decodedCounts(rle) {
  if (!countsOf.has(rle)) countsOf.set(rle, rleCounts(rle.counts));
  return countsOf.get(rle);
}

function drawMask(g, c) { g.drawImage(c, 0, 0, app.width, app.height); }  // a mask canvas over the image

function colorOf(i) {  // distinct hues, golden-ratio steps
  const hue = (i * 0.618033988749895) % 1;
  const f = (n) => {
    const k = (n + hue * 12) % 12;
    return Math.round(255 * (0.55 - 0.45 * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

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

// ---------- prompts -> masks ----------

function predict(obj, t0, maskId = obj.wanted) {
  app.predicting = predictNow(obj, t0, maskId);  // strokes wait for it (paint)
  return app.predicting;
}

async function predictNow(obj, t0, maskId) {
  if (!obj.points.length && !obj.box) {
    if (obj.strokes.length) return;  // a hand-drawn mask stays
    obj.rle = null; obj.candidates = []; render(); listCandidates(); save(); return;
  }
  const seq = ++app.seq;
  const name = app.name;
  say("segmenting…");
  try {
    const strokes = obj.strokes.slice();  // painted over the prediction by the server
    const body = { points: obj.points, box: obj.box, multimask: true, mask_id: maskId ?? null, strokes };
    const out = await api("POST", `/api/images/${enc(name)}/predict`, body);
    if (seq !== app.seq || name !== app.name) return;  // a newer prompt has been sent
    obj.candidates = out.candidates;
    Object.assign(obj, { rle: out.mask.rle, score: out.mask.score, mask_id: out.mask.mask_id, area: out.mask.area,
      painted: strokes.length });
    render(); listCandidates(); listObjects();
    requestAnimationFrame(() => setTimeout(() => {  // after the frame with the mask is painted
      app.latencies.push({ ms: performance.now() - t0, server_ms: out.server_ms });
      say(`mask in ${Math.round(performance.now() - t0)} ms`);
      save();  // after the paint: serialising every object must not delay it
    }));
  } catch (e) { say(e.message, true); }
}

// The previous image's objects on this one (video frames, bursts): each one's box prompts
// this image; labels kept; one undo takes them all back.
async function propagate() {
  const i = app.images.findIndex((im) => im.name === app.name);
  const prev = app.images[i - 1];
  if (!prev) { say("no previous image", true); return; }
  const name = app.name;
  say(`objects from ${prev.name}…`);
  try {
    const out = await api("POST", `/api/images/${enc(name)}/propagate`, { source: prev.name });
    if (name !== app.name) return;
    if (!out.objects.length) { say(`${prev.name} has no objects to carry over`); return; }
    remember();
    for (const o of out.objects) {
      newObject();
      Object.assign(app.objects[app.selected], { label: o.label, box: o.box, candidates: o.candidates,
        rle: o.mask.rle, score: o.mask.score, mask_id: o.mask.mask_id, area: o.mask.area, source: "propagated" });
    }
    listObjects(); listCandidates(); render(); save();
    say(`${out.objects.length} objects from ${prev.name}`);
  } catch (e) { say(e.message, true); }
}

function pickCandidate(maskId) {  // keys 1-3; candidates are listed in mask_id order
  const obj = app.objects[app.selected];
  if (!obj) return;
  const c = obj.candidates[maskId - 1];
  if (c) { remember(); choose(obj, c); }
  else if (obj.points.length || obj.box) {  // saved or imported: its prompts again, for that candidate
    remember(); obj.wanted = maskId; predict(obj, performance.now(), maskId);
  }
}

function choose(obj, cand) {  // another candidate: its mask comes from the server
  obj.wanted = cand.mask_id;
  if (cand.mask_id !== obj.mask_id) predict(obj, performance.now(), cand.mask_id);
}

// Brush and eraser: a stroke joins the object's strokes at once (a prediction sent from
// now on includes it); the server paints the strokes its mask lacks onto it.
function addStroke(stroke, t0) {
  remember();
  const obj = current();
  if (obj.source === "everything") obj.source = "refined";
  obj.strokes.push(stroke);
  return repaint(obj, t0, false);
}

// The server paints the object's strokes that its mask lacks (all of them on an empty mask
// when `fromEmpty`), one request at a time, after any prediction in flight.
function repaint(obj, t0, fromEmpty) {
  const name = app.name;
  app.painting = app.painting.then(async () => {
    await app.predicting;
    const start = fromEmpty ? 0 : obj.painted;
    const todo = obj.strokes.slice(start);
    if (!todo.length || name !== app.name) return;
    try {
      const out = await api("POST", `/api/images/${enc(name)}/paint`, { rle: fromEmpty ? null : obj.rle, strokes: todo });
      if (name !== app.name || obj.strokes.length < start + todo.length) return;  // undone meanwhile
      Object.assign(obj, { rle: out.mask.rle, area: out.mask.area, painted: start + todo.length });
      render(); listObjects();
      requestAnimationFrame(() => setTimeout(() => {  // after the frame with the mask is painted
        app.strokes.push({ ms: performance.now() - t0 });
        save();
      }));
    } catch (e) { say(e.message, true); }
  });
  return app.painting;
}

function setTool(tool) {
  app.tool = app.tool === tool ? "prompt" : tool;  // the same key again: back to prompts
  $("tool").value = app.tool === "polygon" && app.polyErase ? "polygon-erase" : app.tool;
  app.hover = null; app.poly = null; app.edit = null;
  canvas.style.cursor = ["prompt", "polygon", "vertices"].includes(app.tool) ? "crosshair" : "none";
  if (app.tool === "vertices") startOutline();
  render();
}

// Vertices (V): the selected object's mask as outlines (its holes too) whose vertices are
// dragged; a click on an edge adds a vertex there, Shift+click or Delete over a vertex
// removes it. Enter makes the edited outlines the object's mask (its prompts dropped: a
// shape drawn by hand, which later predictions do not replace), Esc leaves it as it was;
// picking another object in the list applies the edits and outlines that one.
// The outlines are closed strokes (the server's `outline`), so the mask is the polygon
// tool's machinery: painted by the server, kept with the object, undoable.
async function startOutline() {
  const obj = app.objects[app.selected], name = app.name;
  if (!obj || !obj.rle) { say("vertices: select an object with a mask first", true); setTool("vertices"); return; }
  try {
    await app.painting;  // the mask as it stands
    const out = await api("POST", `/api/images/${enc(name)}/outline`, { rle: obj.rle });
    if (name !== app.name || app.tool !== "vertices" || app.objects[app.selected] !== obj) return;
    app.edit = { obj, strokes: out.strokes, history: [], future: [] };
    const n = out.strokes.reduce((sum, s) => sum + s.points.length, 0);
    const specks = out.left_out ? `, ${out.left_out} specks (${out.left_out_px} px) left out` : "";
    say(`${n} vertices (within ${out.tolerance} px${specks}): drag them; Enter applies, Esc cancels`);
    render();
  } catch (e) { say(e.message, true); if (app.tool === "vertices") setTool("vertices"); }
}

function nearVertex(sx, sy) {  // the edited outline's vertex nearest screen point (sx, sy), within 8 px
  const v = app.view;
  let best = null;
  app.edit.strokes.forEach((s, si) => s.points.forEach(([x, y], i) => {
    const d = Math.hypot(x * v.scale + v.ox - sx, y * v.scale + v.oy - sy);
    if (d <= 8 && (!best || d < best.d)) best = { d, si, i };
  }));
  return best;
}

function nearEdge(sx, sy) {  // the nearest edge within 8 px: where a new vertex goes
  const v = app.view;
  let best = null;
  app.edit.strokes.forEach((s, si) => s.points.forEach((a, i) => {
    const b = s.points[(i + 1) % s.points.length];
    const ax = a[0] * v.scale + v.ox, ay = a[1] * v.scale + v.oy;
    const dx = (b[0] - a[0]) * v.scale, dy = (b[1] - a[1]) * v.scale, l2 = dx * dx + dy * dy;
    const t = l2 ? Math.max(0, Math.min(1, ((sx - ax) * dx + (sy - ay) * dy) / l2)) : 0;
    const d = Math.hypot(ax + t * dx - sx, ay + t * dy - sy);
    if (d <= 8 && (!best || d < best.d)) best = { d, si, i: i + 1 };
  }));
  return best;
}

function vertexDown(x, y, sx, sy, shift) {
  if (!app.edit) return;
  const hit = nearVertex(sx, sy);
  if (hit && shift) { removeVertex(hit); return; }
  if (hit) { app.drag = { vertex: hit }; return; }
  const edge = !shift && nearEdge(sx, sy);
  if (edge) {
    editChange();
    app.edit.strokes[edge.si].points.splice(edge.i, 0, [x, y]);
    app.drag = { vertex: edge, moved: true };
    render();
  }
}

function removeVertex({ si, i }) {  // an outline left with fewer than 3 vertices goes
  editChange();
  const strokes = app.edit.strokes;
  strokes[si].points.splice(i, 1);
  if (strokes[si].points.length < 3) strokes.splice(si, 1);
  render();
}

// Undo / redo (Ctrl+Z / Ctrl+Y, the buttons) inside an edit take back and redo its vertex
// changes, one at a time; an edit undone to its start applies nothing.
function editChange() { app.edit.history.push(JSON.stringify(app.edit.strokes)); app.edit.future = []; }

function editStep(from, to) {
  const ed = app.edit;
  if (!ed[from].length) return;
  ed[to].push(JSON.stringify(ed.strokes));
  ed.strokes = JSON.parse(ed[from].pop());
  render();
}

function reoutline() {  // another object selected with the vertex tool: edits so far applied, its outline next
  if (app.tool !== "vertices") return;
  if (app.edit) applyOutline(); else setTool("vertices");
  setTool("vertices");
}

function applyOutline() {
  const { obj, strokes } = app.edit, changed = app.edit.history.length > 0;
  setTool("vertices");  // back to prompts
  const i = app.objects.indexOf(obj);
  if (!changed || i < 0) return;  // unchanged: the mask stays exactly as it was
  if (!strokes.length) { deleteObject(i); return; }  // every vertex removed
  remember();
  Object.assign(obj, { points: [], box: null, candidates: [], strokes, painted: 0 });
  if (obj.source === "everything") obj.source = "refined";
  listCandidates();
  repaint(obj, performance.now(), true);
}

// Polygon (G): clicks place vertices; a click on the first vertex, a double click or Enter
// closes it, and its inside is added to the selected object (a stroke with closed: true,
// painted by the server like the brush's); Backspace takes back a vertex, Esc drops it.
// Shift+G: the polygon erases its inside instead (a hole, a trim).
function polygonTool(erase) {
  const switching = app.tool === "polygon" && app.polyErase !== erase;  // G <-> Shift+G: still a polygon
  app.polyErase = erase;
  if (switching) app.tool = "prompt";
  setTool("polygon");  // from another tool: the polygon; from the same one: back to prompts
}

function polygonClick(x, y, sx, sy) {
  const v = app.view, far = ([px, py], d) => Math.hypot(px * v.scale + v.ox - sx, py * v.scale + v.oy - sy) >= d;
  const pts = app.poly || (app.poly = []);
  if (pts.length >= 3 && !far(pts[0], 10)) { closePolygon(); return; }
  if (!pts.length || far(pts[pts.length - 1], 3)) pts.push([x, y]);  // a double click's second press: no vertex
  render();
}

function closePolygon() {
  const pts = app.poly;
  app.poly = null;
  const mode = app.polyErase ? "erase" : "add";
  if (pts && pts.length >= 3) addStroke({ mode, radius: 0.5, points: pts, closed: true }, performance.now());
  render();
}

function setBrush(radius) {
  app.brush = Math.max(0.5, Math.min(256, Math.round(radius * 2) / 2));
  $("brush-size").value = app.brush;
  render();
}

function addPrompt(kind, value, t0) {
  remember();
  const obj = current();
  if (obj.source === "everything") obj.source = "refined";
  if (kind === "point") obj.points.push(value); else obj.box = value;
  predict(obj, t0);
}

async function hoverAt(x, y) {
  if (!app.hoverOn || !app.name || app.tool !== "prompt") return;
  if (app.hoverCtl) app.hoverCtl.abort();  // superseded: cancel rather than queue
  const ctl = new AbortController();
  app.hoverCtl = ctl;
  const obj = app.objects[app.selected];
  const points = (obj ? obj.points : []).concat([[x, y, 1]]);
  try {
    const out = await api("POST", `/api/images/${enc(app.name)}/predict`,
      { points, box: obj ? obj.box : null, multimask: true, preview: true }, ctl.signal);  // drawn scaled: at most 2 MP
    if (app.hoverCtl !== ctl) return;
    app.hover = maskCanvas(out.mask.rle, [255, 255, 255]);
    app.hoverCount = (app.hoverCount || 0) + 1;
    render();
  } catch (e) { if (e.name !== "AbortError") say(e.message, true); }
  finally { if (app.hoverCtl === ctl) app.hoverCtl = null; }
}

// ---------- drawing ----------

function fit() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  if (!app.img) return;
  const s = Math.min(canvas.width / app.width, canvas.height / app.height);
  app.view = { scale: s, ox: (canvas.width - app.width * s) / 2, oy: (canvas.height - app.height * s) / 2 };
}

function render() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!app.img) return;
  const v = app.view;
  ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
  ctx.imageSmoothingEnabled = v.scale < 1;
  ctx.drawImage(app.img, 0, 0);
  if (app.drawMasks) {
    // The objects not being edited, composited once per change (and per view), then one blit.
    const key = `${app.objects.map((o, i) => (i === app.selected || !o.rle ? "" : `${rleId(o.rle)}:${o.color}`)).join("|")}|${v.scale},${v.ox},${v.oy},${canvas.width},${canvas.height}`;
    if (!app.layer || app.layerKey !== key) {
      app.layer = app.layer || document.createElement("canvas");
      paintLayer(app.layer, v);
      app.layerKey = key;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 0.45;
    ctx.drawImage(app.layer, 0, 0);
    ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
    const sel = app.objects[app.selected];
    if (sel && sel.rle && !(app.edit && app.edit.obj === sel)) { ctx.globalAlpha = 0.6; drawMask(ctx, maskCanvas(sel.rle, sel.color, SELECTED_PX)); }
    if (app.hover && app.hoverOn) { ctx.globalAlpha = 0.35; drawMask(ctx, app.hover); }
  }
  ctx.globalAlpha = 1;
  const px = 1 / v.scale;
  app.objects.forEach((o, i) => {
    if (o.box) {
      ctx.lineWidth = (i === app.selected ? 3 : 2) * px;
      ctx.strokeStyle = `rgb(${o.color})`;
      const [x0, y0, x1, y1] = o.box;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    for (const [x, y, l] of o.points) {
      ctx.beginPath(); ctx.arc(x, y, 6 * px, 0, 2 * Math.PI);
      ctx.fillStyle = l ? "#2ecc40" : "#ff4136"; ctx.fill();
      ctx.lineWidth = 2 * px; ctx.strokeStyle = "#fff"; ctx.stroke();
    }
  });
  if (app.drag && app.drag.box) {
    const [x0, y0, x1, y1] = app.drag.box;
    ctx.setLineDash([6 * px, 4 * px]); ctx.lineWidth = 2 * px; ctx.strokeStyle = "#fff";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0); ctx.setLineDash([]);
  }
  const stroke = app.drag && app.drag.stroke;
  if (stroke) {  // the stroke being drawn, until the server's mask replaces it
    ctx.globalAlpha = 0.5;
    const sel = app.objects[app.selected];
    ctx.strokeStyle = ctx.fillStyle = stroke.mode === "erase" ? "#000" : `rgb(${sel ? sel.color : [255, 255, 255]})`;
    ctx.lineWidth = 2 * stroke.radius; ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    stroke.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (stroke.points.length === 1) ctx.arc(stroke.points[0][0], stroke.points[0][1], stroke.radius, 0, 2 * Math.PI);
    stroke.points.length === 1 ? ctx.fill() : ctx.stroke();
    ctx.globalAlpha = 1;
  }
  if (app.poly) {  // the polygon being drawn: its vertices, and an edge on to the cursor
    const pts = app.cursor ? [...app.poly, app.cursor] : app.poly;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    const color = app.polyErase ? "#ff4136" : "#fff";
    ctx.setLineDash([6 * px, 4 * px]); ctx.lineWidth = 2 * px; ctx.strokeStyle = color; ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = color;
    for (const [x, y] of app.poly) ctx.fillRect(x - 3 * px, y - 3 * px, 6 * px, 6 * px);
  }
  if (app.edit) drawOutline(app.edit, px);
  if ((app.tool === "brush" || app.tool === "eraser") && app.cursor) {  // the brush's outline where it would paint
    ctx.beginPath(); ctx.arc(app.cursor[0], app.cursor[1], app.brush, 0, 2 * Math.PI);
    ctx.lineWidth = 1.5 * px; ctx.strokeStyle = app.tool === "brush" ? "#fff" : "#ff4136"; ctx.stroke();
  }
}

function drawOutline(ed, px) {  // the edited mask as the server will paint it, its outlines and vertices
  const v = app.view;
  const layer = app.editLayer || (app.editLayer = document.createElement("canvas"));
  layer.width = canvas.width; layer.height = canvas.height;  // cleared
  const g = layer.getContext("2d");
  g.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
  g.fillStyle = `rgb(${ed.obj.color})`;
  const path = (c, pts) => { c.beginPath(); pts.forEach(([x, y], i) => (i ? c.lineTo(x, y) : c.moveTo(x, y))); c.closePath(); };
  for (const s of ed.strokes) {  // in order: outlines add, holes erase
    g.globalCompositeOperation = s.mode === "add" ? "source-over" : "destination-out";
    path(g, s.points); g.fill("evenodd");
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalAlpha = 0.6; ctx.drawImage(layer, 0, 0); ctx.globalAlpha = 1;
  ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
  ctx.lineWidth = 1.5 * px; ctx.fillStyle = "#fff";
  for (const s of ed.strokes) {
    path(ctx, s.points);
    ctx.strokeStyle = s.mode === "add" ? "#fff" : "#ff4136"; ctx.stroke();
    for (const [x, y] of s.points) ctx.fillRect(x - 2.5 * px, y - 2.5 * px, 5 * px, 5 * px);
  }
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  const dpr = canvas.width / r.width;
  const sx = (ev.clientX - r.left) * dpr, sy = (ev.clientY - r.top) * dpr;
  return [(sx - app.view.ox) / app.view.scale, (sy - app.view.oy) / app.view.scale, sx, sy];
}

function inside(x, y) { return x >= 0 && y >= 0 && x < app.width && y < app.height; }

// Reads the canvas pixel drawn over image pixel (x, y): [r, g, b, a]. For tests.
app.pixelAt = (x, y) => {
  const sx = Math.round(x * app.view.scale + app.view.ox), sy = Math.round(y * app.view.scale + app.view.oy);
  return Array.from(ctx.getImageData(sx, sy, 1, 1).data);
};

// ---------- panels ----------

function listObjects() {
  const ul = $("objects");
  ul.textContent = "";
  app.objects.forEach((o, i) => {
    const li = document.createElement("li");
    if (i === app.selected) li.className = "selected";
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = `rgb(${o.color})`;
    const input = app.classes ? classSelect(o) : document.createElement("input");
    if (!app.classes) {
      input.value = o.label; input.title = "label";
      input.addEventListener("change", () => { remember(); o.label = input.value || "object"; save(); });
      input.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === "Escape") input.blur(); });
    }
    const del = document.createElement("button");
    del.textContent = "✕"; del.title = "delete";
    del.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(i); });
    li.append(sw, input, del);
    li.addEventListener("click", () => selectObject(i));
    ul.append(li);
  });
}

function selectObject(i) {  // the list's click; Tab / Shift+Tab step through the objects (wrapping)
  const n = app.objects.length;
  if (!n) return;
  app.selected = ((i % n) + n) % n;
  listObjects(); listCandidates(); reoutline(); render();
}

function classSelect(o) {  // the label as one of the classes; new objects take the last one chosen
  const select = document.createElement("select");
  select.title = "class (Shift+1…9, 0: the list's first ten)";
  const names = app.classes.includes(o.label) ? app.classes : [...app.classes, o.label];
  for (const n of names) select.append(new Option(app.classes.includes(n) ? n : `${n} (not a class)`, n));
  select.value = o.label;
  select.addEventListener("change", () => {
    remember(); o.label = app.label = select.value; select.blur(); save();
  });
  return select;
}

function pickClass(i) {  // Shift+1..9, 0: the class of the selected object and of new ones
  if (!app.classes || i >= app.classes.length) return;
  app.label = app.classes[i];
  const obj = app.objects[app.selected];
  if (obj && obj.label !== app.label) { remember(); obj.label = app.label; save(); }
  listObjects();
}

function deleteObject(i) {
  if (i < 0 || i >= app.objects.length) return;
  remember();
  app.objects.splice(i, 1);
  app.selected = Math.min(app.selected, app.objects.length - 1);
  listObjects(); listCandidates(); render(); save();
}

function listCandidates() {
  const div = $("candidates");
  div.textContent = "";
  const obj = app.objects[app.selected];
  if (!obj) return;
  obj.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    const area = c.mask_id === obj.mask_id && obj.area !== undefined ? ` · ${obj.area} px` : "";
    b.textContent = `${i + 1}: mask ${c.mask_id} · IoU ${c.score.toFixed(3)}${area}`;
    if (c.mask_id === obj.mask_id) b.className = "chosen";
    b.addEventListener("click", () => { remember(); choose(obj, c); });
    div.append(b);
  });
}

function stateClass(im) { return im.review ? "review" : im.done ? "done" : ""; }

function markDone(name, done) {  // after a save: a person's, so reviewed
  Object.assign(app.images.find((i) => i.name === name) || {}, { done, review: false });
  drawList();
}

// R: this image's objects are right as they stand (an imported image is saved as
// reviewed); then the next image still to review, after this one in the list.
async function reviewedNext() {
  if (app.saving) await app.saving;
  const i = app.images.findIndex((im) => im.name === app.name);
  if (app.images[i] && app.images[i].review) await save();
  const next = [...app.images.slice(i + 1), ...app.images.slice(0, i)].find((im) => im.review);
  if (next) openImage(next.name);
  else say("no image left to review");
}

// The image list holds rows only for the images in view (and a few either side), each at
// its place in a list as tall as all of them: a folder of 10,000 photos would otherwise
// put 10,000 rows on the page, and every frame would cost twice as much.
const ROW = 50;  // px: a row's height (app.css)
const listItems = new Map();  // image name -> its row, while drawn

async function loadImages() {
  app.images = await api("GET", "/api/images");
  $("image-list").textContent = "";
  listItems.clear();
  drawList();
}

function drawList() {
  const ul = $("image-list"), box = $("images");
  ul.style.height = `${app.images.length * ROW}px`;
  const top = box.scrollTop - ul.offsetTop;
  const first = Math.max(0, Math.floor(top / ROW) - 5);
  const last = Math.min(app.images.length, Math.ceil((top + box.clientHeight) / ROW) + 5);
  const shown = app.images.slice(first, last);
  const keep = new Set(shown.map((im) => im.name));
  for (const [name, li] of listItems) if (!keep.has(name)) { li.remove(); listItems.delete(name); }
  shown.forEach((im, k) => {
    let li = listItems.get(im.name);
    if (!li) { li = listRow(im); listItems.set(im.name, li); }
    li.style.top = `${(first + k) * ROW}px`;
    li.classList.toggle("current", im.name === app.name);
    li.lastChild.className = stateClass(im);
    ul.append(li);  // in list order (a row already there moves, its thumbnail kept)
  });
}

function listRow(im) {
  const li = document.createElement("li");
  li.dataset.name = im.name;
  const t = document.createElement("img");
  t.src = `/api/images/${enc(im.name)}/thumb`; t.alt = "";
  const span = document.createElement("span");
  span.textContent = im.name;
  li.append(t, span);
  li.addEventListener("click", () => openImage(im.name));
  return li;
}

function showInList(name) {  // scrolls the list to the image's row if it is out of view
  const i = app.images.findIndex((im) => im.name === name), box = $("images");
  const y = $("image-list").offsetTop + i * ROW;
  if (i >= 0 && (y < box.scrollTop || y + ROW > box.scrollTop + box.clientHeight)) box.scrollTop = y - box.clientHeight / 2;
  drawList();
}

const imageCache = new Map();  // name -> decoded <img>: the last 4 opened, app.imageCachePx at most
const pixelsOf = (img) => img.naturalWidth * img.naturalHeight;

async function openImage(name) {
  const t0 = performance.now();
  if (app.saving) await app.saving;
  say(`opening ${name}…`);
  try {
    const [info, saved] = await Promise.all([
      api("POST", `/api/images/${enc(name)}/open`),
      api("GET", `/api/images/${enc(name)}/annotations`),
    ]);
    let img = imageCache.get(name);
    if (!img) {
      img = new Image();
      img.src = `/api/images/${enc(name)}/file`;
      await img.decode();
      imageCache.set(name, img);
      let total = [...imageCache.values()].reduce((sum, im) => sum + pixelsOf(im), 0);
      for (const [key, im] of imageCache) {
        if (imageCache.size <= 1 || (imageCache.size <= 4 && total <= app.imageCachePx)) break;
        imageCache.delete(key); total -= pixelsOf(im);
      }
    }
    app.name = name; app.img = img; app.width = info.width; app.height = info.height;
    app.revision = saved.revision;
    app.objects = saved.objects.map(live);
    app.selected = app.objects.length ? 0 : -1;
    app.history = []; app.future = []; app.hover = null; app.poly = null;
    if (app.tool === "vertices") setTool("vertices");  // that image's outline: back to prompts
    $("image-name").textContent = name;
    showInList(name);
    $("export-labels").href = `/api/images/${enc(name)}/export/labels.png`;
    $("export-masks").href = `/api/images/${enc(name)}/export/masks.zip`;
    fit(); render(); listObjects(); listCandidates();
    requestAnimationFrame(() => {
      const ms = performance.now() - t0;
      app.switches.push({ name, ms, cached: info.cached });
      say(`${name}: ${info.width}x${info.height}, ${info.cached ? "embedding cached" : `encoded in ${Math.round(info.encode_ms)} ms`}, shown in ${Math.round(ms)} ms`);
    });
  } catch (e) { say(e.message, true); }
}

function step(delta) {
  const i = app.images.findIndex((im) => im.name === app.name);
  const next = app.images[i + delta];
  if (next) openImage(next.name);
}

// ---------- segment everything ----------

function buildEverythingForm(defaults, precisions) {
  const form = $("everything-form");
  const shown = ["points_per_side", "iou_thres", "stability_score_thres", "box_nms_thres", "min_mask_region_area", "crop_n_layers"];
  for (const k of shown) {
    if (!(k in defaults)) continue;
    const label = document.createElement("label");
    label.textContent = k;
    const input = document.createElement("input");
    input.name = k; input.type = "number"; input.step = "any"; input.value = +defaults[k].toFixed(4);
    label.append(input); form.append(label);
  }
  if (precisions && precisions.length) {  // bf16: approximate, faster where bf16 matmuls are
    const label = document.createElement("label");
    label.textContent = "decoder_precision";
    const select = document.createElement("select");
    select.name = "decoder_precision";
    for (const p of precisions) select.append(new Option(p, p));
    label.append(select); form.append(label);
  }
  form.addEventListener("submit", (e) => e.preventDefault());
}

async function runEverything() {
  if (!app.name) return;
  const options = {};
  for (const input of $("everything-form").querySelectorAll("input")) options[input.name] = Number(input.value);
  for (const select of $("everything-form").querySelectorAll("select")) options[select.name] = select.value;
  const progress = $("everything-progress");
  const t0 = performance.now();
  const name = app.name;
  const timer = setInterval(async () => {  // the server's count of point prompts done
    const p = await api("GET", `/api/images/${enc(name)}/everything/progress`).catch(() => null);
    const share = p && p.total ? ` ${Math.round((100 * p.done) / p.total)}% (${p.done}/${p.total} points)` : "";
    progress.textContent = `running…${share} ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  }, 250);
  $("everything").disabled = true;
  try {
    const out = await api("POST", `/api/images/${enc(app.name)}/everything`, options);
    remember();
    for (const m of out.masks) {
      newObject();
      Object.assign(app.objects[app.selected], { rle: m.rle, score: m.score, mask_id: 0, source: "everything" });
    }
    progress.textContent = `${out.masks.length} masks in ${out.seconds.toFixed(1)} s`;
    listObjects(); render(); save();
  } catch (e) { progress.textContent = ""; say(e.message, true); }
  finally { clearInterval(timer); $("everything").disabled = false; }
}

// ---------- input ----------

let spaceDown = false;

canvas.addEventListener("contextmenu", (e) => e.preventDefault());

canvas.addEventListener("mousedown", (e) => {
  if (!app.img) return;
  const [x, y, sx, sy] = toImage(e);
  if (e.button === 1 || (e.button === 0 && spaceDown)) {
    app.drag = { pan: true, sx, sy, ox: app.view.ox, oy: app.view.oy };
  } else if (app.tool === "polygon") {
    if (e.button === 0) polygonClick(x, y, sx, sy);
  } else if (app.tool === "vertices") {
    if (e.button === 0) vertexDown(x, y, sx, sy, e.shiftKey);
  } else if (app.tool !== "prompt") {
    if (e.button === 0) {
      const mode = app.tool === "brush" ? "add" : "erase";
      app.drag = { stroke: { mode, radius: app.brush, points: [[x, y]] } };
      render();
    }
  } else if (e.button === 0) {
    app.drag = { x, y, sx, sy, shift: e.shiftKey, t0: performance.now() };
  } else if (e.button === 2 && inside(x, y)) {
    addPrompt("point", [x, y, 0], performance.now());
  }
});

window.addEventListener("mousemove", (e) => {
  if (!app.img) return;
  const [x, y, sx, sy] = toImage(e);
  const d = app.drag;
  if (d && d.pan) {
    app.view.ox = d.ox + sx - d.sx; app.view.oy = d.oy + sy - d.sy; render(); return;
  }
  if (d && d.vertex) {  // a vertex of the edited outline, kept on the image
    if (!d.moved) { editChange(); d.moved = true; }  // one step of undo per drag
    app.edit.strokes[d.vertex.si].points[d.vertex.i] = [Math.max(0, Math.min(app.width, x)), Math.max(0, Math.min(app.height, y))];
    render();
    return;
  }
  if (app.tool !== "prompt") {
    app.cursor = e.target === canvas || (d && d.stroke) ? [x, y] : null;
    app.cursorScreen = [sx, sy];
    if (d && d.stroke) {  // a point per half radius of movement: smooth enough, few points
      const pts = d.stroke.points, [lx, ly] = pts[pts.length - 1];
      if (Math.hypot(x - lx, y - ly) >= Math.max(0.5, d.stroke.radius / 2)) pts.push([x, y]);
    }
    render();
    return;
  }
  if (d) {
    if (Math.hypot(sx - d.sx, sy - d.sy) > 5) {
      const cx = (v, hi) => Math.max(0, Math.min(hi, v));
      d.box = [cx(Math.min(d.x, x), app.width), cx(Math.min(d.y, y), app.height),
        cx(Math.max(d.x, x), app.width), cx(Math.max(d.y, y), app.height)];
      render();
    }
    return;
  }
  if (e.target === canvas && inside(x, y)) {
    app.hoverPending = [x, y];
    if (!app.hoverFrame) {
      app.hoverFrame = requestAnimationFrame(() => {
        app.hoverFrame = null;
        if (app.hoverPending) hoverAt(...app.hoverPending);
      });
    }
  }
});

window.addEventListener("mouseup", (e) => {
  const d = app.drag;
  app.drag = null;
  if (!d || d.pan || d.vertex) return;
  if (d.stroke) {
    addStroke(d.stroke, performance.now());
    render();
  } else if (d.box) {
    if (d.box[2] - d.box[0] >= 1 && d.box[3] - d.box[1] >= 1) addPrompt("box", d.box, d.t0);
    render();
  } else if (inside(d.x, d.y)) {
    addPrompt("point", [d.x, d.y, d.shift ? 0 : 1], d.t0);
  }
});

canvas.addEventListener("dblclick", () => { if (app.tool === "polygon") closePolygon(); });

canvas.addEventListener("mouseleave", () => { app.hover = null; app.cursor = null; render(); });

canvas.addEventListener("wheel", (e) => {
  if (!app.img) return;
  e.preventDefault();
  const [, , sx, sy] = toImage(e);
  const f = Math.exp(-e.deltaY * 0.0015);
  const v = app.view;
  v.ox = sx - (sx - v.ox) * f; v.oy = sy - (sy - v.oy) * f; v.scale *= f;
  render();
}, { passive: false });

window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && !["checkbox", "file"].includes(e.target.type)) return;  // typing a label
  if (e.target.tagName === "SELECT") return;  // its own keys choose an option
  const k = e.key.toLowerCase();
  const mod = e.ctrlKey || e.metaKey;
  if (k === " ") { spaceDown = true; e.preventDefault(); }
  else if (mod && k === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
  else if (mod && (k === "y" || (k === "z" && e.shiftKey))) { e.preventDefault(); redo(); }
  else if (mod && k === "s") { e.preventDefault(); save(); }
  else if (mod) return;
  else if (k === "n") newObject();
  else if (k === "tab") { e.preventDefault(); selectObject(app.selected + (e.shiftKey ? -1 : 1)); }
  else if (k === "backspace" && app.poly) { app.poly.pop(); render(); }
  else if ((k === "delete" || k === "backspace") && app.tool === "vertices") {  // a vertex, never the object
    const hit = app.edit && app.cursorScreen && nearVertex(...app.cursorScreen);
    if (hit) removeVertex(hit);
  }
  else if (k === "delete" || k === "backspace") deleteObject(app.selected);
  else if (k === "arrowright") step(1);
  else if (k === "arrowleft") step(-1);
  else if (k === "h") { app.hoverOn = !app.hoverOn; $("hover").checked = app.hoverOn; render(); }
  else if (k === "p") propagate();
  else if (k === "r") reviewedNext();
  else if (k === "b") setTool("brush");
  else if (k === "e") setTool("eraser");
  else if (k === "g") polygonTool(e.shiftKey);
  else if (k === "f") { fit(); render(); }  // the whole image in view again
  else if (k === "m") { app.drawMasks = !app.drawMasks; render(); }
  else if (k === "v") setTool("vertices");
  else if (k === "enter" && app.poly) closePolygon();
  else if (k === "enter" && app.edit) applyOutline();
  else if (k === "escape" && app.poly) { app.poly = null; render(); }
  else if (k === "escape" && app.tool !== "prompt") setTool(app.tool);
  else if (k === "[" || k === "]") setBrush(k === "]" ? app.brush * 1.25 : app.brush / 1.25);
  else if (e.shiftKey && /^Digit\d$/.test(e.code)) pickClass((Number(e.code[5]) + 9) % 10);
  else if (["1", "2", "3"].includes(k)) pickCandidate(Number(k));
});
window.addEventListener("keyup", (e) => { if (e.key === " ") spaceDown = false; });
window.addEventListener("resize", () => { fit(); render(); drawList(); });
$("images").addEventListener("scroll", () => {
  if (!app.listFrame) app.listFrame = requestAnimationFrame(() => { app.listFrame = null; drawList(); });
});

$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
$("new-object").addEventListener("click", newObject);
$("propagate").addEventListener("click", propagate);
$("reviewed").addEventListener("click", reviewedNext);
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("save").addEventListener("click", save);
$("hover").addEventListener("change", (e) => { app.hoverOn = e.target.checked; render(); });
$("tool").addEventListener("change", (e) => {
  const tool = e.target.value;
  app.tool = "prompt";
  if (tool.startsWith("polygon")) polygonTool(tool === "polygon-erase"); else setTool(tool);
  e.target.blur();
});
$("brush-size").addEventListener("change", (e) => { setBrush(Number(e.target.value) || app.brush); e.target.blur(); });
$("everything").addEventListener("click", runEverything);
function exportLinks() {  // the folder's exports, of every image or only the reviewed ones
  const q = $("export-reviewed").checked ? "?reviewed=true" : "";
  $("export-coco").href = `/api/export/coco${q}`;
  $("export-yolo").href = `/api/export/yolo.zip${q}`;
  $("export-labelme").href = `/api/export/labelme.zip${q}`;
  $("export-label-maps").href = `/api/export/label-maps.zip${q}`;
  $("export-instance-maps").href = `/api/export/instance-maps.zip${q}`;
  $("export-label-studio").href = `/api/export/label-studio.zip${q}`;
}
$("export-reviewed").addEventListener("change", exportLinks);
exportLinks();

async function downloadCutout() {  // the selected object on a transparent background, as a PNG file
  const obj = app.objects[app.selected];
  if (!obj || !obj.rle) { say("cutout: select an object with a mask first", true); return; }
  const soft = $("cutout-soft").checked;  // the server checks the mask is still the prompts' prediction
  const prompt = soft ? { points: obj.points, box: obj.box, multimask: true, mask_id: obj.mask_id ?? null } : null;
  try {
    const res = await fetch(`/api/images/${enc(app.name)}/cutout`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ rle: obj.rle, soft, prompt }) });
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).detail || res.statusText);
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    const stem = app.name.replace(/^.*\//, "").replace(/\.[^.]*$/, "");
    a.href = url; a.download = `${stem}_${obj.id}_${obj.label}`.replace(/[^\w.-]+/g, "_") + ".png";
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) { say(`cutout: ${e.message}`, true); }
}
$("export-cutout").addEventListener("click", downloadCutout);

async function upload(files) {
  for (const f of files) {
    const form = new FormData();
    form.append("file", f);
    const res = await fetch("/api/upload", { method: "POST", body: form });
    const out = await res.json().catch(() => ({}));
    if (!res.ok) { say(`${f.name}: ${out.detail || res.statusText}`, true); continue; }
    await loadImages();
    await openImage(out.name);
  }
}
$("file").addEventListener("change", (e) => upload(e.target.files));
$("stage").addEventListener("dragover", (e) => e.preventDefault());
$("stage").addEventListener("drop", (e) => {
  e.preventDefault();
  if (app.status && app.status.mode === "upload") upload(e.dataTransfer.files);
});

(async function start() {
  fit();
  try {
    app.status = await api("GET", "/api/status");
    app.classes = app.status.classes;
    if (app.classes) app.label = app.classes[0];
    $("upload").hidden = app.status.mode !== "upload";
    buildEverythingForm(app.status.everything_options, app.status.decoder_precisions);
    await loadImages();
    if (app.images.length) await openImage(app.images[0].name);
    else say(app.status.mode === "upload" ? "upload or drop an image" : "no images here");
    app.ready = true;
  } catch (e) { say(e.message, true); }
})();
