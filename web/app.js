// The page around the wasm module (pkg/, built by scripts/build-web.sh): reads the settings
// (form, or the URL's query: any training flag without its dashes, plus autostart=1),
// fetches the data files served beside the page (or takes them from a file picker), runs
// the training and draws what it reports. When a run ends it logs one console line
// `RESULT {json}` and sets the same figures as data- attributes on <body>, for tests.
import init, { train } from "./pkg/wgpu_fmnist_web.js";

const FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];
const CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
const $ = (id) => document.getElementById(id);

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
  if (error) console.error("ERROR " + text);
}

// Page-only keys in the query; every other one is a training setting (step_losses=1 too:
// each step's loss in the result). upload=PATH: PUT the trained checkpoint there before the
// RESULT line (tests serve the page and take it).
const PAGE_KEYS = new Set(["autostart", "upload"]);

function settingsFromForm() {
  const s = { model: $("model").value, epochs: $("epochs").value, seed: $("seed").value };
  for (const part of $("extra").value.split(/[\n&]/)) {
    const t = part.trim();
    if (!t) continue;
    const i = t.indexOf("=");
    if (i < 1) throw new Error(`setting \`${t}\` should be KEY=VALUE`);
    s[t.slice(0, i).trim().replace(/^--/, "")] = t.slice(i + 1).trim();
  }
  return s;
}

function formFromQuery(query) {
  const extra = [];
  for (const [k, v] of query) {
    if (PAGE_KEYS.has(k)) continue;
    if (k === "model" || k === "epochs" || k === "seed") {
      if (k === "model" && ![...$("model").options].some((o) => o.value === v)) {
        $("model").add(new Option(v, v));
      }
      $(k).value = v;
    } else {
      extra.push(`${k}=${v}`);
    }
  }
  $("extra").value = extra.join("\n");
}

async function fetchData() {
  const files = [];
  for (const name of FILES) {
    let r = await fetch(`data/${name}.gz`).catch(() => null);
    if (!r || !r.ok) r = await fetch(`data/${name}`).catch(() => null);
    if (!r || !r.ok) return null;
    files.push(new Uint8Array(await r.arrayBuffer()));
  }
  return files;
}

async function pickedData() {
  const chosen = [...$("files").files];
  if (chosen.length === 0) return null;
  const files = [];
  for (const name of FILES) {
    const f = chosen.find((c) => c.name === name || c.name === `${name}.gz`);
    if (!f) throw new Error(`the chosen files lack ${name}(.gz)`);
    files.push(new Uint8Array(await f.arrayBuffer()));
  }
  return files;
}

// A line chart of several series [{name, color, points: [[x, y]]}], x in epochs.
function chart(canvas, series, yLabel) {
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 46, R = 10, T = 10, B = 26;
  g.clearRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]).filter(Number.isFinite);
  const x1 = Math.max(1, ...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = (y1 - y0) * 0.08 || 0.05;
  const lo = y0 - pad, hi = y1 + pad;
  const X = (x) => L + (x / x1) * (W - L - R), Y = (y) => T + (1 - (y - lo) / (hi - lo)) * (H - T - B);
  g.strokeStyle = "#c9d1da"; g.fillStyle = "#5c6773"; g.font = "11px system-ui"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  for (const f of [0, 0.5, 1]) {
    const y = lo + f * (hi - lo);
    g.fillText(y.toFixed(3), 2, Y(y) + 4);
  }
  g.fillText(`epoch (${x1.toFixed(1)})`, W - 80, H - 8);
  g.fillText(yLabel, L + 6, T + 10);
  series.forEach((s, k) => {
    g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
    s.points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    if (s.points.length <= 50) {  // per-epoch series: a dot each, so one epoch shows too
      g.fillStyle = s.color;
      for (const [x, y] of s.points) { g.beginPath(); g.arc(X(x), Y(y), 3, 0, 2 * Math.PI); g.fill(); }
    }
    g.fillStyle = s.color; g.fillText(s.name, W - R - 90, T + 12 + 13 * k);
  });
}

const curves = { trainLoss: [], valLoss: [], trainAcc: [], valAcc: [] };
function redraw() {
  chart($("loss"), [
    { name: "train (running)", color: "#1f77b4", points: curves.trainLoss },
    { name: "validation", color: "#d62728", points: curves.valLoss },
  ], "loss");
  chart($("accuracy"), [
    { name: "train (running)", color: "#1f77b4", points: curves.trainAcc },
    { name: "validation", color: "#d62728", points: curves.valAcc },
  ], "accuracy");
}

let epochsTotal = 1, epochNow = 1;
function onEvent(json) {
  const e = JSON.parse(json);
  if (e.kind === "start") {
    epochsTotal = e.epochs;
    status(`training ${e.model} (${e.spec}) on ${e.train} images, ${e.steps_per_epoch} steps per epoch`);
  } else if (e.kind === "epoch_start") {
    epochNow = e.epoch;
  } else if (e.kind === "progress") {
    const x = epochNow - 1 + e.step / e.steps;
    curves.trainLoss.push([x, e.loss]);
    curves.trainAcc.push([x, e.accuracy]);
    $("bar").value = x / epochsTotal;
    status(`epoch ${epochNow}/${epochsTotal}, step ${e.step}/${e.steps}: loss ${e.loss.toFixed(4)}, ` +
           `accuracy ${(100 * e.accuracy).toFixed(2)} %, ${Math.round(e.images_per_second)} images/s`);
    redraw();
  } else if (e.kind === "epoch") {
    if (e.val_loss != null) {
      curves.valLoss.push([e.epoch, e.val_loss]);
      curves.valAcc.push([e.epoch, e.val_accuracy]);
    }
    redraw();
  } else if (e.kind === "message") {
    status(e.text);
  }
}

function showResults(result, samples, checkpoint) {
  $("results").classList.remove("hidden");
  $("headline").textContent = `Test accuracy ${(100 * result.test_accuracy).toFixed(2)} % after ` +
    `${result.epochs} epoch${result.epochs > 1 ? "s" : ""} (${result.seconds.toFixed(1)} s on ${result.adapter})`;
  const t = $("confusion");
  t.innerHTML = "<tr><th></th>" + CLASSES.map((c, j) => `<th title="${c}">${j}</th>`).join("") + "</tr>" +
    result.confusion.map((row, i) => `<tr><th title="${CLASSES[i]}">${i} ${CLASSES[i]}</th>` +
      row.map((n, j) => `<td class="${i === j ? "diag" : ""}">${n}</td>`).join("") + "</tr>").join("");
  const grid = $("samples");
  grid.innerHTML = "";
  for (const s of samples) {
    const fig = document.createElement("figure");
    if (s.predicted !== s.label) fig.className = "wrong";
    const c = document.createElement("canvas");
    c.width = 28; c.height = 28;
    const img = c.getContext("2d").createImageData(28, 28);
    s.pixels.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
    c.getContext("2d").putImageData(img, 0, 0);
    const cap = document.createElement("figcaption");
    cap.textContent = `${CLASSES[s.predicted]} ${(100 * s.probability).toFixed(0)} %`;
    cap.title = `label: ${CLASSES[s.label]}`;
    fig.append(c, cap);
    grid.append(fig);
  }
  $("save").onclick = () => {
    const url = URL.createObjectURL(new Blob([checkpoint], { type: "application/octet-stream" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `${result.model}-browser.safetensors`;
    a.click();
    URL.revokeObjectURL(url);
  };
}

let running = false;
async function run() {
  if (running) return;
  running = true;
  $("start").disabled = true;
  try {
    const settings = settingsFromForm();
    status("reading the data…");
    const files = (await pickedData()) ?? (await fetchData());
    if (!files) {
      $("picker").classList.remove("hidden");
      throw new Error("no data: choose the four Fashion-MNIST files above, then press Train");
    }
    for (const k of Object.keys(curves)) curves[k] = [];
    status("starting the GPU…");
    const out = await train(JSON.stringify(settings), files, onEvent);
    const result = JSON.parse(out.result);
    showResults(result, JSON.parse(out.samples), out.checkpoint);
    status(`done: test accuracy ${(100 * result.test_accuracy).toFixed(2)} %`);
    $("bar").value = 1;
    const summary = {
      test_accuracy: result.test_accuracy, test_loss: result.test_loss, epochs: result.epochs,
      seconds: result.seconds, train_seconds: result.train_seconds, adapter: result.adapter,
      model: result.model, seed: result.seed,
      train_losses: result.history.map((h) => h.train_loss),
      checkpoint_bytes: out.checkpoint.length,
    };
    if (result.step_losses) summary.step_losses = result.step_losses;
    const upload = new URLSearchParams(location.search).get("upload");
    if (upload) {
      const r = await fetch(upload, { method: "PUT", body: out.checkpoint });
      if (!r.ok) throw new Error(`uploading the checkpoint to ${upload}: HTTP ${r.status}`);
      summary.uploaded = upload;
    }
    for (const [k, v] of Object.entries(summary)) {
      if (typeof v !== "object") document.body.dataset[k.replace(/_(.)/g, (_, c) => c.toUpperCase())] = v;
    }
    window.wgpuFmnistCheckpoint = out.checkpoint;
    console.log("RESULT " + JSON.stringify(summary));
  } catch (err) {
    status(String(err.message ?? err), true);
    document.body.dataset.error = String(err.message ?? err);
  } finally {
    running = false;
    $("start").disabled = false;
  }
}

async function main() {
  const query = new URLSearchParams(location.search);
  formFromQuery(query);
  if (!navigator.gpu) {
    status("This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge " +
           "or Safari, or Firefox with WebGPU enabled.", true);
    return;
  }
  await init();
  $("start").onclick = run;
  status("ready: press Train");
  if (query.get("autostart") === "1") run();
}

main().catch((err) => status(String(err.message ?? err), true));
