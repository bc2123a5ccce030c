// mobilesam ui: drawing by hand: brush and eraser strokes, the polygon, the vertex tool.
"use strict";

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
