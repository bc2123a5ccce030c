// mobilesam ui: input: mouse, keys and buttons, exports, uploads; last loaded, it starts the page.
"use strict";

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
