// The page's only script: read the form, ask the service, show what it answers. No framework, no build.
"use strict";

const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a", "#e16f24"];
const $ = (selector) => document.querySelector(selector);
const urls = [];
const KEY = "tensorinit.api-key"; // sessionStorage: this tab only, gone when it closes

function fmt(value) {
  if (value === null || value === undefined) return "–";
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e4) ? value.toExponential(3) : value.toPrecision(4);
}

async function ask(path, body, accept, key) {
  const headers = { "Content-Type": "application/json", Accept: accept };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401) {
    throw new Error(key ? "The API key was refused: check it under Access." : "This server needs an API key: enter it under Access.");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch (ignored) { /* not a problem document */ }
    throw new Error(detail);
  }
  return accept.startsWith("image/") ? response.blob() : response.json();
}

function show(img, blob) {
  const url = URL.createObjectURL(blob);
  urls.push(url);
  img.src = url;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function verdicts(answer) {
  const body = $("#verdicts tbody");
  body.replaceChildren();
  answer.networks.forEach((net, i) => {
    const v = net.verdict;
    const row = body.insertRow();
    const name = cell(row, net.label);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i % PALETTE.length];
    name.prepend(swatch);
    cell(row, v.verdict, `verdict-${v.verdict}`);
    cell(row, "×" + fmt(v.gradient_factor_per_layer));
    cell(row, "×" + fmt(v.forward_factor_per_layer));
    cell(row, v.gain_for_unit_chi === null ? "–" : "×" + fmt(v.gain_for_unit_chi));
    cell(row, v.fixed_point ? fmt(v.fixed_point.q) : "–");
  });
}

function layers(answer) {
  const body = $("#layers tbody");
  body.replaceChildren();
  for (const layer of answer.layers) {
    const row = body.insertRow();
    row.dataset.layer = layer.index;
    cell(row, String(layer.index));
    cell(row, fmt(layer.forward.theory));
    cell(row, fmt(layer.forward.measured));
    cell(row, fmt(layer.backward.theory));
    cell(row, fmt(layer.backward.measured));
  }
  $("#layers-title").textContent = `Per layer: ${answer.label} (${answer.layers.length} layers)`;
}

function numbers(stats, name) {
  const t = stats.tensors[name];
  const e = t.empirical;
  const entries = [
    ["std (served)", fmt(e.std)], ["std (theory)", fmt(t.theory.std)], ["mean", fmt(e.mean)],
    ["min … max", `${fmt(e.min)} … ${fmt(e.max)}`], ["count", String(e.count)],
  ];
  if (e.ks) entries.push(["KS p-value", fmt(e.ks.pvalue)]);
  entries.push(["sha256", t.sha256.slice(0, 16) + "…"]);
  const dl = $("#hist-numbers");
  dl.replaceChildren();
  for (const [key, value] of entries) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
  }
}

async function run(event) {
  event.preventDefault();
  const form = new FormData($("#network"));
  const schemes = form.getAll("scheme");
  const status = $("#status");
  status.className = "";
  if (schemes.length === 0) {
    status.className = "error";
    status.textContent = "Pick at least one initialization.";
    return;
  }
  const depth = Number(form.get("depth"));
  const width = Number(form.get("width"));
  const seed = Number(form.get("seed"));
  const layer = Math.min(Number(form.get("layer")), depth - 1);
  const network = {
    depth, width, seed, batch: Number(form.get("batch")), activation: form.get("activation"),
    init: { scheme: schemes[0] }, ...(schemes.length > 1 ? { compare: schemes.slice(1) } : {}),
  };
  const key = String(form.get("key") || "").trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  const name = `layers.${layer}.weight`;
  const tensor = { scheme: schemes[0], shape: [width, width], name, seed, bins: 64 };
  const button = $("#network button");
  button.disabled = true;
  status.textContent = "Propagating…";
  const started = performance.now();
  try {
    const [answer, plot, stats, histogram] = await Promise.all([
      ask("/propagation", network, "application/json", key),
      ask("/propagation", network, "image/svg+xml", key),
      ask("/stats", tensor, "application/json", key),
      ask("/stats", tensor, "image/svg+xml", key),
    ]);
    while (urls.length) URL.revokeObjectURL(urls.pop());
    show($("#plot"), plot);
    show($("#histogram"), histogram);
    verdicts(answer);
    layers(answer);
    numbers(stats, name);
    $("#plot-title").textContent = `Variance against depth: ${network.activation}, ${depth} × ${width}, batch ${network.batch}`;
    $("#hist-title").textContent = `${name} under ${schemes[0]} (${width}×${width}, seed ${seed})`;
    $("#results").hidden = false;
    status.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s: ${answer.layers.length} layers.`;
    document.body.dataset.layers = String(answer.layers.length);
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

$("#network").elements.key.value = sessionStorage.getItem(KEY) || "";
$("#network").addEventListener("submit", run);
