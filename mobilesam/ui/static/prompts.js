// mobilesam ui: prompts -> masks: predictions, candidates, objects from the previous image, the hover preview.
"use strict";

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
