"use strict";
// The annotator's page. Coordinates: every click is (x, y, label) in pixels of the original image
// (x = column, y = row), label 1 = positive, 0 = negative. Masks travel as RLE {size: [H, W], counts}
// (row-major runs, starting with background; ibisagent.io.rle).
// A person's clicks go to an interactive session on the server (/v1/sessions): each is a human
// policy command ("p X,Y" / "n X,Y", normalised) that the environment executes like any policy's
// turn, so the episode record (download) holds protocol turns of the agent and of the person.
// The browser draws: the image (a volume slice's raw intensities, so window/level is local), the
// tool's mask, and the brush/eraser strokes, which override the tool's mask pixel by pixel.
const $ = (id) => document.getElementById(id);
const canvas = $("view"), ctx = canvas.getContext("2d"), statusEl = $("status");
const stage = $("stage"), layer = $("layer"), marks = $("marks");
const SVG = "http://www.w3.org/2000/svg";

let image = null;       // {id, name, width, height, url} of the current 2D image or slice (id null until embedded)
let volume = null;      // {id, name, slices, windows: {name: [lo, hi]}, range, aspect} of an uploaded volume
let reference = null;   // RLE of the reference mask
let busy = false;
let limits = null;      // the server's limits (healthz)
let slots = new Map();  // "2d" or "axis:index" -> slot (one image's annotation)
let slot = null;        // the slot shown
let view = {scale: 1, tx: 0, ty: 0, fitted: true};
let wl = {level: 127.5, width: 255};  // display window/level (intensity units)
let lastArea = 0;
let rangeRun = null;    // {cancelled} while "Run on slices" runs
let earlier = [];       // export items of the masks accepted on earlier images and volumes of this page
let knownFor = null;    // the compact policy whose structures the page shows (the one teaching starts from)
let drag = null;        // the pointer gesture in progress
let spaceDown = false;

// A slot: {key, axis, index, volumeId | name, imageId, window, pixels (RGBA Uint8ClampedArray) | plane (Float32Array),
//          width, height, history: [state], redo: [state], episode, accepted (RLE) | null, base (RLE) | null}
// A state: {kind, session, clicks, rle, iou, area, corrections, ms, canUndo, paint (Int8Array|null), command, box}
function current() { return slot && slot.history.length ? slot.history[slot.history.length - 1] : null; }
function tool() { return document.querySelector("input[name=tool]:checked").value; }
function setTool(name) { document.querySelector(`input[name=tool][value=${name}]`).checked = true; stage.className = name; }

function setStatus(text, isError) {
  statusEl.textContent = text;
  statusEl.className = isError ? "error" : "";
  const s = current();
  statusEl.dataset.busy = busy ? "1" : "0";
  statusEl.dataset.clicks = s ? String(s.clicks.length) : "0";
  statusEl.dataset.area = s ? String(lastArea) : "0";
}

// A server started with --token: open the page as http://HOST:PORT/#token=TOKEN; the token is kept
// for this tab only and sent as "Authorization: Bearer TOKEN".
const tokenMatch = location.hash.match(/token=([^&]+)/);
if (tokenMatch) { sessionStorage.setItem("ibisToken", decodeURIComponent(tokenMatch[1])); window.history.replaceState(null, "", location.pathname); }
function authFetch(path, options) {
  const token = sessionStorage.getItem("ibisToken");
  const opts = {...(options || {})};
  if (token) opts.headers = {...(opts.headers || {}), authorization: `Bearer ${token}`};
  return fetch(path, opts);
}
async function api(path, options) {
  const resp = await authFetch(path, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = {error: `HTTP ${resp.status}`}; }
  if (!resp.ok) { const err = new Error(body.error || `HTTP ${resp.status}`); err.status = resp.status; throw err; }
  return body;
}
function postJSON(path, obj, signal) {
  return api(path, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(obj), signal});
}
async function postBlob(path, obj) {
  const resp = await authFetch(path, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(obj)});
  if (!resp.ok) { let m = `HTTP ${resp.status}`; try { m = (await resp.json()).error; } catch (e) { /* not JSON */ } throw new Error(m); }
  return resp.blob();
}
async function guarded(label, fn) {
  if (busy) { setStatus("busy: wait for the last request to finish"); return; }
  busy = true; setStatus(label + " ...");
  try { await fn(); } catch (e) { busy = false; setStatus(`${label}: ${e.message}`, true); return; }
  busy = false; setStatus(describe(current()));
}
function describe(s) {
  if (!s || !image) return "Upload an image to start.";
  const iou = s.iou == null ? "" : `  IoU ${s.iou.toFixed(3)}`;
  const ms = s.ms == null ? "" : `  (${Math.round(s.ms)} ms)`;
  const acc = slot && slot.accepted ? "  accepted" : "";
  return `${image.name} ${image.width}x${image.height}  clicks ${s.clicks.length}  mask ${lastArea} px${iou}${ms}${acc}`;
}

// ---- masks: RLE <-> arrays ---------------------------------------------------------------
function rleDecode(rle, n) {
  const out = new Uint8Array(n);
  if (!rle) return out;
  let pos = 0, val = 0;
  for (const c of rle.counts) { if (val) out.fill(1, pos, pos + c); pos += c; val ^= 1; }
  return out;
}
function rleEncode(mask, H, W) {
  const counts = []; let val = 0, run = 0;
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 1 : 0;
    if (v !== val) { counts.push(run); run = 0; val = v; }
    run++;
  }
  counts.push(run);
  return {size: [H, W], counts};
}
function toolMask(s) {  // the tool's mask of a state, decoded once
  if (!s._mask) s._mask = rleDecode(s.rle, image.width * image.height);
  return s._mask;
}
function composite(s) {  // the tool's mask with the strokes applied: what the person sees and saves
  if (!s) return new Uint8Array(image.width * image.height);
  if (s._comp) return s._comp;
  const m = toolMask(s);
  if (!s.paint) { s._comp = m; return m; }
  const out = new Uint8Array(m.length), p = s.paint;
  for (let i = 0; i < m.length; i++) out[i] = p[i] > 0 ? 1 : p[i] < 0 ? 0 : m[i];
  s._comp = out; return out;
}
function compositeRle(s) { return rleEncode(composite(s), image.height, image.width); }
function areaOf(m) { let a = 0; for (let i = 0; i < m.length; i++) a += m[i]; return a; }

// ---- drawing ------------------------------------------------------------------------------
let baseCache = {slot: null, level: null, width: null, data: null};
function windowed() {  // the image under the current window/level (RGBA), recomputed only when they change
  if (baseCache.slot === slot && baseCache.level === wl.level && baseCache.width === wl.width) return baseCache.data;
  const W = image.width, H = image.height, o = new Uint8ClampedArray(4 * W * H);
  const lo = wl.level - wl.width / 2, scale = 255 / Math.max(wl.width, 1e-6);
  if (slot.plane) {
    const p = slot.plane;
    for (let i = 0, j = 0; i < p.length; i++, j += 4) {
      let g = (p[i] - lo) * scale; g = g < 0 ? 0 : g > 255 ? 255 : g;
      o[j] = o[j + 1] = o[j + 2] = g; o[j + 3] = 255;
    }
  } else {
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = (v - lo) * scale;
    const px = slot.pixels;
    for (let j = 0; j < px.length; j += 4) { o[j] = lut[px[j]]; o[j + 1] = lut[px[j + 1]]; o[j + 2] = lut[px[j + 2]]; o[j + 3] = 255; }
  }
  baseCache = {slot, level: wl.level, width: wl.width, data: o};
  return o;
}
function render(live) {
  if (!slot || !image) return;
  const W = image.width, H = image.height;
  if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; layoutCanvas(); }
  const out = ctx.createImageData(W, H), o = out.data;
  o.set(windowed());
  const s = live || current();
  const m = composite(s);
  let area = 0;
  const show = $("showmask").checked, a = Number($("opacity").value) / 100, outline = $("outline").checked;
  const r = 40 * a, g = 200 * a, b = 255 * a, k = 1 - a;
  for (let y = 0, i = 0; y < H; y++) {
    for (let x = 0; x < W; x++, i++) {
      if (!m[i]) continue;
      area++;
      if (!show) continue;
      const j = 4 * i;
      if (outline && (x === 0 || y === 0 || x === W - 1 || y === H - 1 || !m[i - 1] || !m[i + 1] || !m[i - W] || !m[i + W])) {
        o[j] = 255; o[j + 1] = 220; o[j + 2] = 0; continue;
      }
      o[j] = o[j] * k + r; o[j + 1] = o[j + 1] * k + g; o[j + 2] = o[j + 2] * k + b;
    }
  }
  lastArea = area;
  ctx.putImageData(out, 0, 0);
  drawMarks(s);
  hud();
}
function drawStepOverlay(b64) {  // an agent step as the server's overlay renderer drew it
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => { ctx.drawImage(img, 0, 0, canvas.width, canvas.height); resolve(); };
    img.onerror = () => resolve();
    img.src = "data:image/jpeg;base64," + b64;
  });
}
function el(tag, attrs) { const e = document.createElementNS(SVG, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; }
function drawMarks(s) {
  marks.replaceChildren();
  const r = 5 / view.scale, sw = 1.5;
  if (s) {
    for (const [x, y, lab] of s.clicks) {
      marks.appendChild(el("circle", {cx: x + 0.5, cy: y + 0.5, r, fill: lab ? "#2ecc40" : "#ff4136", stroke: "#fff",
                                      "stroke-width": sw, "vector-effect": "non-scaling-stroke"}));
    }
    const b = s.box;
    if (b) marks.appendChild(el("rect", {x: b[0], y: b[1], width: b[2] - b[0] + 1, height: b[3] - b[1] + 1, fill: "none",
                                         stroke: "#39f", "stroke-width": 2, "vector-effect": "non-scaling-stroke"}));
  }
  if (drag && drag.kind === "box" && drag.end) {
    const [x0, y0] = drag.start, [x1, y1] = drag.end;
    marks.appendChild(el("rect", {x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0) + 1, height: Math.abs(y1 - y0) + 1,
                                  fill: "#39f3", stroke: "#39f", "stroke-width": 2, "stroke-dasharray": "4 3", "vector-effect": "non-scaling-stroke"}));
  }
  if (brushAt && (tool() === "brush" || tool() === "eraser")) {
    marks.appendChild(el("circle", {cx: brushAt[0] + 0.5, cy: brushAt[1] + 0.5, r: brushRadius() + 0.5, fill: "none",
                                    stroke: tool() === "brush" ? "#2ecc40" : "#ff4136", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke"}));
  }
}
let brushAt = null;
function hud() {
  const z = `${Math.round(view.scale * 100)}%`;
  $("zoominfo").textContent = z;
  const w = `W ${fmt(wl.width)}  L ${fmt(wl.level)}`;
  $("hud").textContent = volume && slot && slot.plane ? `${slot.axis} slice ${slot.index} of ${volume.slices[slot.axis]}\n${w}` : (image ? `${image.width}x${image.height}\n${w}` : "");
  $("hud-right").textContent = `${z}${slot && slot.accepted ? "\naccepted" : ""}`;
}
function fmt(v) { return Math.abs(v) >= 100 ? String(Math.round(v)) : v.toFixed(1); }

// ---- zoom and pan --------------------------------------------------------------------------
function aspect() { return volume && slot && slot.plane ? (volume.aspect[slot.axis] || 1) : 1; }
function layoutCanvas() {
  const W = canvas.width, H = canvas.height, cssH = H * aspect();
  canvas.style.width = `${W}px`; canvas.style.height = `${cssH}px`;
  marks.setAttribute("width", W); marks.setAttribute("height", cssH);
  marks.setAttribute("viewBox", `0 0 ${W} ${H}`); marks.setAttribute("preserveAspectRatio", "none");
}
function applyView() {
  layer.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.scale})`;
  if (slot) drawMarks(current());
  hud();
}
function fit() {
  if (!image) return;
  const sw = stage.clientWidth, sh = stage.clientHeight, W = canvas.width, H = canvas.height * aspect();
  const s = Math.min(sw / W, sh / H);
  view = {scale: s, tx: (sw - W * s) / 2, ty: (sh - H * s) / 2, fitted: true};
  applyView();
}
function zoomAt(factor, cx, cy) {
  const s = Math.min(Math.max(view.scale * factor, 0.05), 64);
  const f = s / view.scale;
  view = {scale: s, tx: cx - (cx - view.tx) * f, ty: cy - (cy - view.ty) * f, fitted: false};
  applyView();
}
function zoomCentre(factor) { zoomAt(factor, stage.clientWidth / 2, stage.clientHeight / 2); }
new ResizeObserver(() => { if (view.fitted) fit(); }).observe(stage);
$("zoomin").addEventListener("click", () => zoomCentre(1.25));
$("zoomout").addEventListener("click", () => zoomCentre(0.8));
$("fit").addEventListener("click", fit);

// ---- window/level ---------------------------------------------------------------------------
function wlRange() {
  if (volume && slot && slot.plane) return volume.range;
  return [0, 255];
}
function syncWlSliders() {
  const [lo, hi] = wlRange(), span = Math.max(hi - lo, 1e-6);
  $("wlwidth").value = String(Math.round(1000 * wl.width / (2 * span)));
  $("wllevel").value = String(Math.round(1000 * (wl.level - lo) / span));
}
function setWl(level, width) {
  const [lo, hi] = wlRange(), span = Math.max(hi - lo, 1e-6);
  wl = {level: Math.min(Math.max(level, lo - span), hi + span), width: Math.min(Math.max(width, span / 1000), 2 * span)};
  syncWlSliders(); render();
}
function presetWl() {
  if (volume && slot && slot.plane) {
    const [lo, hi] = volume.windows[$("window").value] || volume.range;
    wl = {level: (lo + hi) / 2, width: Math.max(hi - lo, 1e-6)};
  } else wl = {level: 127.5, width: 255};
  syncWlSliders();
}
function wlFromSliders() {
  const [lo, hi] = wlRange(), span = Math.max(hi - lo, 1e-6);
  setWl(lo + span * Number($("wllevel").value) / 1000, Math.max(2 * span * Number($("wlwidth").value) / 1000, span / 1000));
}
$("wlwidth").addEventListener("input", wlFromSliders);
$("wllevel").addEventListener("input", wlFromSliders);

// ---- the step list --------------------------------------------------------------------------
function renderSteps() {
  const list = $("steps"); list.innerHTML = "";
  const s = current();
  const items = [];
  if (slot && slot.episode) for (const st of slot.episode.viewSteps) items.push(st);
  if (s) for (const c of s.corrections) items.push(c);
  items.forEach((st) => {
    const li = document.createElement("li");
    if (st.person) li.className = "person";
    const click = st.click ? ` ${st.click[2] ? "+" : "-"}(${st.click[0]}, ${st.click[1]})` : "";
    const iou = st.iou == null ? "" : `  IoU ${st.iou.toFixed(3)}`;
    li.innerHTML = `<div class="head"></div><div class="why"></div>`;
    li.querySelector(".head").textContent = `${st.person ? "you" : "agent"} ${st.index}: ${st.kind}${click}${iou}`;
    li.querySelector(".why").textContent = st.reasoning || st.error || st.answer || "";
    if (st.overlay) li.onclick = () => drawStepOverlay(st.overlay);
    list.appendChild(li);
  });
  statusEl.dataset.steps = String(items.length);
}
function renderAccepted() {
  const acc = [...slots.values()].filter((s) => s.accepted);
  const names = acc.map((s) => (s.axis ? `${s.axis[0]}${s.index}` : "image")).slice(0, 12).join(", ");
  const before = earlier.length ? `${acc.length ? " + " : ""}${earlier.length} on earlier images` : "";
  $("acceptedinfo").textContent = acc.length || earlier.length ?
    `accepted: ${acc.length ? `${acc.length} (${names}${acc.length > 12 ? ", ..." : ""})` : ""}${before}` : "accepted: none";
  $("acceptedinfo").dataset.count = String(acc.length + earlier.length);
}
function itemOf(s) {  // an accepted mask as an export / teach item
  return s.plane ?
    {volume_id: s.volumeId, axis: s.axis, index: s.index, mask: s.accepted, structure: structure(),
     ...(s.window && typeof s.window === "object" ? s.window : {window: s.window || $("window").value})} :
    {image_id: s.imageId, mask: s.accepted, structure: structure(), name: s.name};
}
function acceptedItems() { return [...earlier, ...[...slots.values()].filter((s) => s.accepted).map(itemOf)]; }
function keepAccepted() { earlier = acceptedItems(); }  // before the page moves on to another image

// ---- history: undo / redo --------------------------------------------------------------------
function blankState(ms) { return {kind: "blank", session: null, clicks: [], rle: null, iou: null, area: 0, corrections: [], ms, canUndo: false, paint: null}; }
function stateFrom(out, corrections, ms, kind, extra) {
  return {kind, session: out.session_id || null, clicks: out.clicks, rle: out.mask.rle, iou: out.iou, area: out.mask.area,
          corrections, ms: ms == null ? out.tool_ms : ms, canUndo: out.can_undo, paint: null, ...(extra || {})};
}
async function push(s, keepRedo) {
  slot.history.push(s);
  if (!keepRedo) slot.redo = [];
  if (slot.accepted) slot.accepted = null, renderAccepted();
  render(); renderSteps();
}
async function undo() {
  const s = current();
  if (!slot || slot.history.length < 2) return;
  if (s.kind === "click" && s.session) await postJSON(`/v1/sessions/${s.session}/undo`, {});
  if (s.kind === "agent" && !s.corrections.length) slot.episode = null;
  slot.redo.push(slot.history.pop());
  render(); renderSteps();
}
async function redo() {
  if (!slot || !slot.redo.length) return;
  const s = slot.redo.pop();
  if (s.kind === "click") {
    const out = await postJSON(`/v1/sessions/${s.session}/act`, {command: s.command, outputs: ["rle"]});
    const prev = current();
    const next = stateFrom(out, [...prev.corrections, {...out.step, person: true}], null, "click",
                           {session: s.session, command: s.command, paint: prev.paint});
    await push(next, true);
  } else await push(s, true);
}

// ---- images, volumes, slots ------------------------------------------------------------------
const VOLUME_NAME = /\.(nii|nii\.gz|dcm)$/i;
$("image").addEventListener("change", () => guarded("uploading", async () => {
  const files = [...$("image").files];
  if (!files.length) return;
  const max = limits ? limits.max_upload_bytes : null;
  const big = files.find((f) => max && f.size > max);
  if (big) throw new Error(`${big.name} is ${(big.size / 1e6).toFixed(1)} MB; this server accepts files up to ${(max / 1e6).toFixed(1)} MB`);
  if (files.length > 1) {
    const other = files.find((f) => !/\.dcm$|^[^.]+$/i.test(f.name));
    if (other) throw new Error(`${other.name}: several files are read as one DICOM series; choose only its .dcm files`);
    const form = new FormData(); for (const f of files) form.append("files", f, f.name);
    return startVolume(await api("/v1/annotate/dicom", {method: "POST", body: form}));
  }
  const file = files[0];
  if (VOLUME_NAME.test(file.name)) {
    const form = new FormData(); form.append("volume", file, file.name);
    return startVolume(await api("/v1/volumes", {method: "POST", body: form}));
  }
  volume = null; $("volbox").hidden = true; $("dlnifti").hidden = true;
  const form = new FormData(); form.append("image", file, file.name);
  const info = await api("/v1/images", {method: "POST", body: form});
  await startImage(info, URL.createObjectURL(file));
}));

function loadPixels(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const g = c.getContext("2d"); g.drawImage(img, 0, 0);
      resolve(g.getImageData(0, 0, c.width, c.height).data);
    };
    img.onerror = () => reject(new Error("cannot display the image"));
    img.src = src;
  });
}
async function startImage(info, url) {
  image = {id: info.image_id, name: info.name, width: info.width, height: info.height, url};
  reference = null; $("reference").value = ""; $("refine").value = "";
  keepAccepted(); slots = new Map();
  slot = {key: "2d", name: info.name, imageId: info.image_id, width: info.width, height: info.height, history: [blankState(info.embed_ms)], redo: [],
          episode: null, accepted: null, base: null};
  let pixels = null;
  if (url) { try { pixels = await loadPixels(url); } catch (e) { pixels = null; } }
  if (!pixels || pixels.length !== 4 * info.width * info.height) {
    // not displayable here (e.g. TIFF, 16-bit): the server's overlay renderer draws the image
    const r = await postJSON("/v1/tool/segment", {image_id: info.image_id, outputs: ["overlay"]});
    pixels = await loadPixels("data:image/jpeg;base64," + r.mask.overlay);
  }
  slot.pixels = pixels;
  slots.set("2d", slot); renderAccepted();
  presetWl(); render(); fit(); renderSteps();
}

async function startVolume(info) {
  const meta = await api(`/v1/annotate/volumes/${info.volume_id}`);
  volume = {id: info.volume_id, name: info.name, slices: info.slices, windows: meta.windows, range: meta.range, aspect: meta.aspect};
  reference = null; $("reference").value = ""; $("refine").value = "";
  keepAccepted(); slots = new Map(); renderAccepted();
  $("window").innerHTML = info.windows.map((w) => `<option>${w}</option>`).join("");
  $("axis").value = "axial"; $("volbox").hidden = false; $("dlnifti").hidden = false;
  setSliceRange(true);
  await showSlice(true);
}
function setSliceRange(middle) {
  const n = volume.slices[$("axis").value];
  $("slice").max = String(n - 1); $("rangefrom").max = $("rangeto").max = String(n - 1);
  if (middle || Number($("slice").value) > n - 1) $("slice").value = String(Math.floor(n / 2));
  $("rangefrom").value = "0"; $("rangeto").value = String(n - 1);
}
async function getSlot(axis, index) {
  const key = `${axis}:${index}`;
  let s = slots.get(key);
  if (!s) {
    const resp = await authFetch(`/v1/annotate/volumes/${volume.id}/plane?axis=${axis}&index=${index}`);
    if (!resp.ok) { let m = `HTTP ${resp.status}`; try { m = (await resp.json()).error; } catch (e) { /* */ } throw new Error(m); }
    const [H, W] = resp.headers.get("x-shape").split(",").map(Number);
    const plane = new Float32Array(await resp.arrayBuffer());
    s = {key, axis, index, volumeId: volume.id, imageId: null, window: null, plane, width: W, height: H, history: [blankState(null)], redo: [],
         episode: null, accepted: null, base: null};
    slots.set(key, s);
    trimSlots();
  }
  return s;
}
const MAX_BLANK_SLOTS = 64;  // slices only looked at are dropped beyond this (oldest first); annotated ones stay
function trimSlots() {
  let blank = [...slots.values()].filter((s) => s !== slot && s.history.length === 1 && !s.accepted && !s.base && !s.history[0].rle);
  for (const s of blank.slice(0, Math.max(blank.length - MAX_BLANK_SLOTS, 0))) slots.delete(s.key);
  blank = null;
}
function sliceImage(s) {
  const stem = volume.name.replace(/\.(nii\.gz|nii|dcm)$/i, "");
  return {id: s.imageId, name: `${stem}_${s.axis}${String(s.index).padStart(3, "0")}`, width: s.width, height: s.height, url: null};
}
async function showSlice(fitView) {
  const axis = $("axis").value, index = Number($("slice").value);
  const s = await getSlot(axis, index);
  const sameGrid = slot && slot.plane && slot.axis === axis;
  slot = s; image = sliceImage(s);
  $("sliceinfo").textContent = `${axis} slice ${index} of ${volume.slices[axis]}  (window ${$("window").value})`;
  if (!sameGrid || fitView) { presetWl(); render(); fit(); } else render();
  renderSteps();
}
function presetRange() { return volume.windows[$("window").value] || volume.range; }
function customWindow() {  // the display window as [low, high] when it is not the preset's
  const [lo, hi] = presetRange(), low = wl.level - wl.width / 2, high = wl.level + wl.width / 2;
  const tol = 1e-6 * Math.max(Math.abs(hi - lo), 1);
  return Math.abs(low - lo) > tol || Math.abs(high - hi) > tol ? [low, high] : null;
}
async function ensureImage() {  // the slice stored and embedded on the server (once), as the person sees it
  if (!slot.plane) return;
  if (slot.imageId) return;
  const custom = customWindow();
  const info = custom ?
    await postJSON(`/v1/annotate/volumes/${volume.id}/slice`, {axis: slot.axis, index: slot.index, low: custom[0], high: custom[1]}) :
    await postJSON(`/v1/volumes/${volume.id}/slice`, {axis: slot.axis, index: slot.index, window: $("window").value});
  slot.imageId = info.image_id; slot.window = custom ? {low: custom[0], high: custom[1]} : info.window; image.id = info.image_id;
}
async function withImage(fn) {  // retry once when the server dropped the slice's image (LRU)
  try { return await fn(); } catch (e) {
    if (e.status === 404 && slot.plane && /image_id/.test(e.message)) { slot.imageId = null; await ensureImage(); return fn(); }
    throw e;
  }
}
function changeSlice(delta) {
  if (!volume) return;
  const n = volume.slices[$("axis").value];
  const k = Math.min(Math.max(Number($("slice").value) + delta, 0), n - 1);
  if (k === Number($("slice").value)) return;
  $("slice").value = String(k);
  return guarded("loading slice", () => showSlice(false));
}
$("axis").addEventListener("change", () => guarded("loading slice", async () => { setSliceRange(true); await showSlice(true); }));
$("window").addEventListener("change", () => guarded("loading slice", async () => {
  presetWl(); render();
  $("sliceinfo").textContent = `${slot.axis} slice ${slot.index} of ${volume.slices[slot.axis]}  (window ${$("window").value})`;
}));
$("slice").addEventListener("change", () => guarded("loading slice", () => showSlice(false)));

// ---- masks from files ------------------------------------------------------------------------
async function maskUpload(input) {
  if (!image) throw new Error("upload an image first");
  await ensureImage();
  const form = new FormData(); form.append("image_id", image.id); form.append("mask", input.files[0]);
  return api("/v1/masks", {method: "POST", body: form});
}
$("reference").addEventListener("change", () => guarded("reading reference", async () => {
  if (!$("reference").files[0]) return;
  const r = await maskUpload($("reference")); reference = r.rle;
  const s = current();
  if (s && s.session) {
    const out = await postJSON(`/v1/sessions/${s.session}/reference`, {reference_mask: reference, outputs: ["rle"]});
    s.iou = out.iou;
  }
}));
$("refine").addEventListener("change", () => guarded("reading mask", async () => {
  if (!$("refine").files[0]) return;
  const r = await maskUpload($("refine"));
  slot.episode = null;
  const out = await openSession(r.rle);  // a refinement episode that starts from the uploaded mask
  await push(stateFrom(out, [], null, "open"));
}));

async function openSession(initMask) {
  await ensureImage();
  return withImage(() => postJSON("/v1/sessions", {image_id: image.id, query: $("query").value.trim(), reference_mask: reference,
                                                   init_mask: initMask || null, outputs: ["rle"]}));
}

// ---- clicks, boxes, strokes --------------------------------------------------------------------
function toPixel(ev, clamp = true) {
  const r = canvas.getBoundingClientRect();
  let x = Math.floor((ev.clientX - r.left) * image.width / r.width);
  let y = Math.floor((ev.clientY - r.top) * image.height / r.height);
  if (clamp) { x = Math.min(Math.max(x, 0), image.width - 1); y = Math.min(Math.max(y, 0), image.height - 1); }
  return [x, y];
}
function inside(ev) {
  const r = canvas.getBoundingClientRect();
  return ev.clientX >= r.left && ev.clientX < r.right && ev.clientY >= r.top && ev.clientY < r.bottom;
}
function addClick(x, y, label) {
  return guarded("segmenting", async () => {
    const prev = current();
    let sessionId = prev.session;
    let start = prev;
    if (!sessionId) {  // the first click on this image: a session starting from the mask shown by the tool (or carried)
      const init = prev.rle || slot.base;
      const opened = await openSession(init && areaOf(rleDecode(init, 1 * image.width * image.height)) ? init : null);
      sessionId = opened.session_id;
      start = {...prev, session: sessionId};
    }
    // the human policy's command, normalised to the pixel's centre (the protocol's coordinates)
    const command = `${label ? "p" : "n"} ${((x + 0.5) / image.width).toFixed(6)},${((y + 0.5) / image.height).toFixed(6)}`;
    const t0 = performance.now();
    const out = await postJSON(`/v1/sessions/${sessionId}/act`, {command, outputs: ["rle"]});
    const t1 = performance.now();
    const corr = {...out.step, person: true};
    await push(stateFrom(out, [...start.corrections, corr], t1 - t0, "click",
                         {session: sessionId, command, paint: start.paint}));
    // request and drawing times of the last click (bench/bench_app.py reads them)
    statusEl.dataset.requestMs = String(Math.round(t1 - t0)); statusEl.dataset.drawMs = String(Math.round(performance.now() - t1));
    statusEl.dataset.acts = String(Number(statusEl.dataset.acts || 0) + 1);  // clicks answered (a repeated click may add none)
  });
}
function addBox(x0, y0, x1, y1) {
  return guarded("segmenting the box", async () => {
    const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    await ensureImage();
    const t0 = performance.now();
    const r = await withImage(() => postJSON("/v1/tool/segment", {image_id: image.id, box, points: [], labels: [], outputs: ["rle"]}));
    // the box's mask starts a session: later clicks refine it (the box itself is not a protocol turn)
    const out = await openSession(r.mask.rle);
    await push(stateFrom(out, [], performance.now() - t0, "box", {box, paint: null}));
  });
}
function brushRadius() { return Number($("brushsize").value) / 2; }
function stamp(paint, x, y, value) {
  const W = image.width, H = image.height, r = brushRadius(), r2 = r * r, ri = Math.ceil(r);
  for (let dy = -ri; dy <= ri; dy++) {
    const yy = y + dy; if (yy < 0 || yy >= H) continue;
    for (let dx = -ri; dx <= ri; dx++) {
      const xx = x + dx; if (xx < 0 || xx >= W) continue;
      if (dx * dx + dy * dy <= r2 + 0.25) paint[yy * W + xx] = value;
    }
  }
}
function strokeTo(x, y) {
  const [px, py] = drag.last, value = drag.value;
  const n = Math.max(Math.abs(x - px), Math.abs(y - py), 1);
  for (let i = 1; i <= n; i++) stamp(drag.paint, Math.round(px + (x - px) * i / n), Math.round(py + (y - py) * i / n), value);
  drag.last = [x, y];
  drag.live = {...current(), paint: drag.paint, _comp: null};
  if (!drag.raf) drag.raf = requestAnimationFrame(() => { drag.raf = 0; render(drag && drag.live); });
}

stage.addEventListener("contextmenu", (ev) => ev.preventDefault());
stage.addEventListener("pointerdown", (ev) => {
  if (!image || !slot) return;
  stage.setPointerCapture(ev.pointerId);
  const t = tool();
  const base = {x0: ev.clientX, y0: ev.clientY, moved: false, button: ev.button, shift: ev.shiftKey};
  if (ev.button === 1 || (ev.button === 0 && (spaceDown || t === "pan"))) {
    drag = {...base, kind: "pan", tx: view.tx, ty: view.ty};
  } else if (ev.button === 2) {
    drag = {...base, kind: "wl", level: wl.level, width: wl.width};
  } else if (ev.button === 0 && t === "box") {
    drag = {...base, kind: "box", start: toPixel(ev)};
  } else if (ev.button === 0 && (t === "brush" || t === "eraser")) {
    if (busy) { setStatus("busy: wait for the last request to finish"); return; }
    const s = current();
    const [x, y] = toPixel(ev);
    drag = {...base, kind: "paint", value: t === "brush" ? 1 : -1, last: [x, y], raf: 0,
            paint: s.paint ? Int8Array.from(s.paint) : new Int8Array(image.width * image.height)};
    strokeTo(x, y);
  } else if (ev.button === 0) {
    drag = {...base, kind: "click", inside: inside(ev)};
  }
});
stage.addEventListener("pointermove", (ev) => {
  if (image && (tool() === "brush" || tool() === "eraser")) { brushAt = toPixel(ev, false); if (!drag) drawMarks(current()); }
  if (!drag) return;
  const dx = ev.clientX - drag.x0, dy = ev.clientY - drag.y0;
  if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
  if (drag.kind === "pan") { view.tx = drag.tx + dx; view.ty = drag.ty + dy; view.fitted = false; applyView(); }
  else if (drag.kind === "wl" && drag.moved) {
    const [lo, hi] = wlRange(), k = (hi - lo) / 500;
    setWl(drag.level - dy * k, drag.width + dx * k);
  } else if (drag.kind === "box") { drag.end = toPixel(ev); drawMarks(current()); }
  else if (drag.kind === "paint") { const [x, y] = toPixel(ev); strokeTo(x, y); }
});
function endDrag(ev) {
  const d = drag; drag = null;
  if (!d) return;
  if (d.kind === "paint") {
    if (d.raf) cancelAnimationFrame(d.raf);
    const prev = current();
    const next = {...prev, kind: "paint", paint: d.paint, _comp: null, ms: null};
    delete next._mask; next._mask = prev._mask;
    push(next).then(() => setStatus(describe(current())));
  } else if (d.kind === "box") {
    const end = toPixel(ev);
    if (d.moved) addBox(d.start[0], d.start[1], end[0], end[1]); else drawMarks(current());
  } else if (d.kind === "wl" && !d.moved && inside(ev)) {
    const [x, y] = toPixel(ev); addClick(x, y, 0);  // a right click: a negative point
  } else if (d.kind === "click" && !d.moved && d.inside) {
    const mode = Number(document.querySelector("input[name=mode]:checked").value);
    const [x, y] = toPixel(ev); addClick(x, y, d.shift || ev.shiftKey ? 0 : mode);
  }
}
stage.addEventListener("pointerup", endDrag);
stage.addEventListener("pointercancel", () => { drag = null; render(); });
stage.addEventListener("pointerleave", () => { brushAt = null; if (!drag && slot) drawMarks(current()); });
stage.addEventListener("wheel", (ev) => {
  if (!image) return;
  ev.preventDefault();
  const r = stage.getBoundingClientRect();
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !volume) zoomAt(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
  else if (!busy) changeSlice(ev.deltaY > 0 ? 1 : -1);
}, {passive: false});
document.querySelectorAll("input[name=tool]").forEach((e) => e.addEventListener("change", () => { stage.className = tool(); drawMarks(current()); }));
$("brushsize").addEventListener("input", () => { $("brushinfo").textContent = $("brushsize").value; drawMarks(current()); });
for (const id of ["opacity", "outline", "showmask"]) $(id).addEventListener("input", () => render());

// ---- the agent ---------------------------------------------------------------------------------
function startProgress(text, max) {
  $("progressbox").hidden = false; $("progress").max = max || 1;
  if (max) $("progress").value = 0; else $("progress").removeAttribute("value");
  $("progressinfo").textContent = text;
}
function stopProgress() { $("progressbox").hidden = true; }
$("run").addEventListener("click", () => guarded("running the agent", async () => {
  if (!image) throw new Error("upload an image first");
  const query = $("query").value.trim();
  if (!query) throw new Error("type a question first");
  const s = current();
  const init = $("fromcurrent").checked && s && lastArea ? compositeRle(s) : (slot.base || null);
  const t0 = performance.now();
  startProgress("the agent is running ...", 0);
  const tick = setInterval(() => { $("progressinfo").textContent = `the agent is running ... ${((performance.now() - t0) / 1000).toFixed(1)} s`; }, 200);
  try {
    await ensureImage();
    const out = await withImage(() => postJSON("/v1/segment", agentBody(query, init, true)));
    slot.episode = {viewSteps: out.steps};
    const state = stateFrom({...out, can_undo: true}, [], out.total_ms, "agent");
    slot.history.push(state); slot.redo = [];
    renderSteps();
    for (const st of out.steps) {   // replay the agent's steps
      if (st.overlay) { await drawStepOverlay(st.overlay); await new Promise((r) => setTimeout(r, 250)); }
    }
    render();
    const why = out.answer ? `  answer: ${out.answer}` : "";
    setTimeout(() => setStatus(describe(current()) + `  stop: ${out.stop_reason}${why}`), 0);
  } finally { clearInterval(tick); stopProgress(); }
}));
function agentBody(query, init, overlays) {
  return {image_id: image.id, query, policy: $("policy").value || null, reference_mask: reference,
          max_steps: Number($("maxsteps").value) || 10, outputs: ["rle"], step_overlays: overlays, init_mask: init};
}

// Run the agent slice after slice (each slice's mask carried to the next as its starting point).
$("rangeall").addEventListener("click", () => { if (volume) { $("rangefrom").value = "0"; $("rangeto").value = String(volume.slices[$("axis").value] - 1); } });
$("cancelrange").addEventListener("click", () => {
  if (!rangeRun || rangeRun.cancelled) return;
  rangeRun.cancelled = true; rangeRun.ctrl.abort();  // the page stops waiting for the slice in flight
  $("progressinfo").textContent += "  cancelled";
});
$("runrange").addEventListener("click", () => guarded("running the agent on slices", async () => {
  if (!volume) throw new Error("upload a volume first");
  const query = $("query").value.trim();
  if (!query) throw new Error("type a question first");
  const n = volume.slices[$("axis").value];
  const a = Number($("rangefrom").value), b = Number($("rangeto").value);
  if (!(Number.isInteger(a) && Number.isInteger(b)) || a < 0 || b > n - 1 || a > b) throw new Error(`choose slices within 0..${n - 1}, first <= last`);
  const run = rangeRun = {cancelled: false, done: 0, total: b - a + 1, ctrl: new AbortController()};
  $("cancelrange").disabled = false; $("runrange").disabled = true;
  startProgress(`slice ${a}: 0 of ${run.total}`, run.total);
  let carry = null, nonEmpty = 0;
  const t0 = performance.now();
  try {
    for (let k = a; k <= b && !run.cancelled; k++) {
      $("slice").value = String(k);
      await showSlice(false);
      await ensureImage();
      const init = $("carry").checked && carry ? carry : null;
      let out;
      try {
        out = await withImage(() => postJSON("/v1/segment", agentBody(query, init, false), run.ctrl.signal));
      } catch (e) { if (run.cancelled) break; throw e; }
      slot.episode = {viewSteps: out.steps};
      slot.history.push(stateFrom({...out, can_undo: true}, [], out.total_ms, "agent")); slot.redo = [];
      render(); renderSteps();
      carry = lastArea ? compositeRle(current()) : carry;
      if (lastArea) nonEmpty++;
      run.done++;
      $("progress").value = run.done;
      const eta = (performance.now() - t0) / run.done * (run.total - run.done) / 1000;
      $("progressinfo").textContent = `slice ${k}: ${run.done} of ${run.total} done, ${nonEmpty} with a mask  (about ${eta.toFixed(0)} s left)`;
      $("progressbox").dataset.done = String(run.done);
    }
  } finally {
    rangeRun = null; $("cancelrange").disabled = true; $("runrange").disabled = false;
  }
  const how = run.cancelled ? `cancelled after ${run.done} of ${run.total} slices` : `done: ${run.total} slices`;
  $("progressinfo").textContent = how; $("progressbox").dataset.state = run.cancelled ? "cancelled" : "done";
  setTimeout(() => setStatus(`${how}; ${nonEmpty} with a mask. ` + describe(current())), 0);
}));

// ---- accept, undo, reset ------------------------------------------------------------------------
function accept() {
  return guarded("accepting", async () => {
    const s = current();
    if (!s || !lastArea) throw new Error("no mask to accept");
    slot.accepted = compositeRle(s);
    renderAccepted();
    if (volume && slot.plane && $("carry").checked) {  // the next slice starts from this mask
      const n = volume.slices[slot.axis];
      if (slot.index + 1 < n) {
        const rle = slot.accepted;
        $("slice").value = String(slot.index + 1);
        await showSlice(false);
        if (!current().rle && !current().paint && !slot.accepted) { slot.base = rle; current().rle = rle; delete current()._mask; delete current()._comp; render(); }
      }
    }
    render();
  });
}
$("accept").addEventListener("click", accept);
$("undo").addEventListener("click", () => guarded("undo", undo));
$("redo").addEventListener("click", () => guarded("redo", redo));
$("reset").addEventListener("click", () => guarded("reset", async () => {
  if (!slot) return;
  slot.episode = null; slot.base = null;
  await push(blankState(null));
}));

// ---- downloads -----------------------------------------------------------------------------------
function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name; document.body.appendChild(a); a.click(); a.remove();
}
function stem() { return image.name.replace(/\.[^.]+$/, ""); }
$("dlmask").addEventListener("click", () => guarded("preparing the mask PNG", async () => {
  const s = current();
  if (!s || !lastArea) throw new Error("no mask yet");
  await ensureImage();
  // the server encodes the PNG (8-bit, 0/255) only when asked, to keep clicks fast
  const out = await withImage(() => postJSON("/v1/tool/segment", {image_id: image.id, prev_mask: compositeRle(s), outputs: ["png"]}));
  const bytes = Uint8Array.from(atob(out.mask.png), (c) => c.charCodeAt(0));
  download(`${stem()}_mask.png`, new Blob([bytes], {type: "image/png"}));
}));
$("dlnifti").addEventListener("click", () => guarded("writing the NIfTI mask", async () => {
  if (!volume) throw new Error("no volume");
  const axis = $("axis").value, masks = {};
  for (const s of slots.values()) {
    if (s.axis !== axis) continue;
    const st = s.history[s.history.length - 1];
    const saved = image; image = sliceImage(s);
    const m = composite(st);
    if (areaOf(m)) masks[String(s.index)] = s.accepted || rleEncode(m, s.height, s.width);
    image = saved;
  }
  if (!Object.keys(masks).length) throw new Error(`no mask on any ${axis} slice yet`);
  const blob = await postBlob(`/v1/annotate/volumes/${volume.id}/masks`, {axis, masks});
  download(`${volume.name.replace(/\.(nii\.gz|nii|dcm)$/i, "")}_mask.nii.gz`, blob);
}));
$("dlepisode").addEventListener("click", () => guarded("saving the episode", async () => {
  const s = current();
  if (!s) throw new Error("nothing to save yet");
  // The server's Episode record (ibisagent.env.episode): the agent's steps and the person's, as protocol turns.
  const ep = s.session ? await api(`/v1/sessions/${s.session}/episode`) :
    {query: $("query").value.trim(), image_size: [image.height, image.width], image: image.name, init_mask: null,
     steps: [], stop_reason: null, answer: null, meta: {policy: "human", image_id: image.id}};
  download(`${stem()}_episode.json`, new Blob([JSON.stringify(ep, null, 1)], {type: "application/json"}));
}));
function structure() {
  const typed = $("structure").value.trim();
  if (typed) return typed;
  const q = $("query").value.trim().replace(/^(please\s+)?(segment|outline|find|show)\s+(the\s+)?/i, "").replace(/[.?!]+$/, "");
  return q || "target";
}
$("export").addEventListener("click", () => guarded("exporting the dataset", async () => {
  const items = acceptedItems();
  if (!items.length) throw new Error("accept a mask first (A): the export holds accepted masks");
  const blob = await postBlob("/v1/annotate/export", {items});
  download("annotations.zip", blob);
}));

// ---- teaching: the server teaches the compact policy from the accepted masks (a background job) ----
$("teach").addEventListener("click", () => guarded("starting to teach", async () => {
  const items = acceptedItems();
  if (!items.length) throw new Error("accept masks first (A): teaching learns from the accepted masks");
  followTeach(await postJSON("/v1/annotate/teach", {items, policy: knownFor}));
}));
$("cancelteach").addEventListener("click", () => {
  const id = $("teachinfo").dataset.job;
  if (id) postJSON(`/v1/annotate/teach/${id}/cancel`, {}).catch((e) => { $("teachtext").textContent = e.message; });
});
const TEACHING = ["embedding", "training", "cancelling"];
async function followTeach(job) {  // poll the job (the page stays usable meanwhile)
  const box = $("teachinfo");
  box.hidden = false; box.dataset.job = job.job_id;
  $("teach").disabled = true; $("cancelteach").hidden = false;
  try {
    for (;;) {
      showTeach(job);
      if (!TEACHING.includes(job.state)) break;
      await new Promise((r) => setTimeout(r, 1000));
      job = await api(`/v1/annotate/teach/${job.job_id}`);
    }
  } catch (e) { $("teachtext").textContent = `teaching: ${e.message}`; }
  $("teach").disabled = false; $("cancelteach").hidden = true;
  if (job.state === "done" && ![...$("policy").options].some((o) => o.value === job.policy)) {
    $("policy").append(new Option(job.policy, job.policy));
    $("policy").value = job.policy; showKnown();
  }
}
function showTeach(j) {
  const bar = $("teachprogress"), names = Object.keys(j.structures).join(", ");
  let text;
  if (j.state === "embedding") { bar.max = j.images[1] || 1; bar.value = j.images[0]; text = `embedding images: ${j.images[0]} of ${j.images[1]}`; }
  else if (j.state === "training" || j.state === "cancelling") {
    bar.max = 1; bar.value = Math.min(1, Math.max(j.training_s / j.budget_s, j.steps / j.max_steps));
    text = `${j.state} ${names}: ${Math.round(j.training_s)} s (at most ${Math.round(j.budget_s)} s)`;
  } else if (j.state === "done") {
    const d = j.result.taught_pairs_belief_dice;
    bar.max = 1; bar.value = 1;
    text = `taught ${names} in ${j.steps} steps: policy ${j.policy} (belief Dice on these masks ${d.before.toFixed(2)} -> ${d.after.toFixed(2)})`;
  } else text = j.state === "failed" ? `teaching failed: ${j.error}` : "teaching cancelled: nothing kept";
  $("teachtext").textContent = text; $("teachinfo").dataset.state = j.state;
}

// ---- what the selected policy knows: suggestions for the question ------------------------------------
async function showKnown() {
  const name = $("policy").value;
  knownFor = null; $("knownbox").hidden = true; $("structures").replaceChildren();
  if (!name) return;
  let r;
  try { r = await api(`/v1/policies/${encodeURIComponent(name)}/structures`); } catch (e) { return; }  // not a compact policy
  if ($("policy").value !== name) return;
  knownFor = name;
  $("structures").replaceChildren(...r.structures.map((s) => new Option(`Segment the ${s}.`, `Segment the ${s}.`)));
  $("knowncount").textContent = `knows ${r.structures.length} structures`;
  $("known").textContent = r.structures.join(", ");
  $("knownbox").hidden = false;
}
$("policy").addEventListener("change", showKnown);

// Undo/redo keys pressed while a request runs wait their turn (in order) instead of being dropped.
let keyChain = Promise.resolve();
function idle() { return new Promise((resolve) => { const t = () => (busy ? setTimeout(t, 15) : resolve()); t(); }); }
function queued(button) { keyChain = keyChain.then(idle).then(() => $(button).click()).then(idle); }

// ---- keys ----------------------------------------------------------------------------------------
document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" || (t.tagName === "INPUT" && !["radio", "checkbox", "range", "button"].includes(t.type)))) return;
  const k = ev.key, ctrl = ev.ctrlKey || ev.metaKey;
  let handled = true;
  if (ctrl && (k === "z" || k === "Z")) queued(ev.shiftKey ? "redo" : "undo");
  else if (ctrl && (k === "y" || k === "Y")) queued("redo");
  else if (ctrl) handled = false;
  else if (k === " ") { spaceDown = true; stage.classList.add("pan"); }
  else if (k === "ArrowUp" || k === "PageUp" || k === "ArrowRight") changeSlice(1);
  else if (k === "ArrowDown" || k === "PageDown" || k === "ArrowLeft") changeSlice(-1);
  else if (k === "p" || k === "P") document.querySelector("input[name=mode][value='1']").checked = true;
  else if (k === "n" || k === "N") document.querySelector("input[name=mode][value='0']").checked = true;
  else if (k === "c" || k === "C") setTool("click");
  else if (k === "x" || k === "X") setTool("box");
  else if (k === "b" || k === "B") setTool("brush");
  else if (k === "e" || k === "E") setTool("eraser");
  else if (k === "h" || k === "H") setTool("pan");
  else if (k === "a" || k === "A") accept();
  else if (k === "[" || k === "]") { const b = $("brushsize"); b.value = String(Number(b.value) + (k === "]" ? 2 : -2)); b.dispatchEvent(new Event("input")); }
  else if (k === "+" || k === "=") zoomCentre(1.25);
  else if (k === "-" || k === "_") zoomCentre(0.8);
  else if (k === "f" || k === "F") fit();
  else if (k === "o" || k === "O") { $("outline").checked = !$("outline").checked; render(); }
  else if (k === "m" || k === "M") { $("showmask").checked = !$("showmask").checked; render(); }
  else if (k === "Escape") $("cancelrange").click();
  else handled = false;
  if (handled) ev.preventDefault();
});
document.addEventListener("keyup", (ev) => { if (ev.key === " ") { spaceDown = false; stage.classList.remove("pan"); } });

api("/healthz").then((h) => {
  $("health").textContent = `${h.tool}  v${h.version}`;
  limits = h.limits || null;
  if (h.policies && h.policies.length) {
    $("policy").replaceChildren(...h.policies.map((name) => Object.assign(document.createElement("option"), {value: name, textContent: name})));
  }
  $("teach").hidden = !h.teach;
  showKnown();
}).catch((e) => { $("health").textContent = "server unreachable: " + e.message; });
