// chainrule serve: the page. No library, no network beyond this server.
"use strict";

const TEXT = {
  en: {
    title: "back-propagation, live",
    connecting: "connecting…", connected: "live", disconnected: "reconnecting…",
    "draw.title": "Draw a digit",
    "draw.help": "Draw one digit with the mouse, a pen or a finger. While you draw, the page sends the ink to the network and shows its ten class probabilities. Before the network sees it, the drawing is prepared like an MNIST digit: cropped to the ink, scaled so its longer side is 20 pixels (averaging areas), placed in 28 × 28 with its centre of mass in the middle. That small image is what the network is given: compare it with your drawing.",
    "draw.clear": "Clear", "draw.prediction": "The network says",
    "draw.seen": "What the network sees (28 × 28)", "draw.empty": "draw a digit",
    "why.title": "Why this class?",
    "why.help": "Back-propagation made visible. The map is the gradient of the chosen class's score with respect to each input pixel, computed by one backward pass from the output to the input: red pixels would raise the score if they were darker, blue ones lower it. The strips are the hidden activations for your drawing: the values that each weight matrix after the first multiplies (brighter: larger).",
    "why.gradient": "Input gradient d(score of the class)/dx", "why.lowers": "lowers the score", "why.raises": "raises it",
    "why.hidden": "Hidden activations (the values each weight matrix multiplies)",
    "why.none": "(this model cannot back-propagate to its input in inference mode)",
    "why.into": "into layer {layer}: {count} values, {zeros}% zero, largest {max}",
    "train.title": "Live training",
    "train.help": "The network trains on MNIST in the server, one mini-batch per step: forward pass, loss, backward pass, update. Start and Pause run it; Step trains exactly one mini-batch; Reset starts again from the seed (the same seed gives the same run). The learning rate and the batch size apply from the next step. The loss curve shows each mini-batch's loss and its moving average; accuracy is measured on 1,000 training and 1,000 held-out validation images. Save downloads the model in chainrule's .npz format (chainrule predict and evaluate read it). Reload the page at any time: the curves come back.",
    "train.start": "Start", "train.pause": "Pause", "train.step": "Step one mini-batch", "train.reset": "Reset",
    "train.seed": "seed", "train.lr": "learning rate", "train.batch": "batch size", "train.save": "Save the model",
    "train.steps": "steps", "train.epoch": "epoch", "train.examples": "examples seen",
    "train.throughput": "examples / s", "train.state": "state", "train.model": "model",
    "train.running": "training", "train.paused": "paused", "train.parameters": "parameters",
    "train.loss": "loss per mini-batch", "train.smooth": "smoothed",
    "train.trainacc": "training accuracy", "train.valacc": "validation accuracy",
    "train.confusion": "Confusion matrix (rows: true digit, columns: predicted), validation images",
    "train.examplesaxis": "examples seen",
    "tiles.title": "First-layer weights", "tiles.showgrads": "show gradients", "tiles.showweights": "show weights",
    "tiles.help": "Each tile is one hidden unit of the first layer: its 784 weights drawn as a 28 × 28 image (red positive, blue negative, each tile scaled by its largest weight). Training turns random noise into stroke detectors. The toggle shows the gradients dL/dW of the last step instead: where the last mini-batch pushed each unit.",
    "gallery.right": "Recognised", "gallery.wrong": "Not recognised",
    "gallery.help": "The notes' matched and not-matched lists: validation images the network now classifies right and wrong, each with its three most probable classes. The counts are out of the 1,000 scored validation images.",
    "inspect.title": "Step inspector",
    "inspect.help": "One mini-batch step, layer by layer, from the last step trained (or the step you just took). Forward: the layer's output for the batch's first example. Delta: dL/d(output), what back-propagation hands to the layer from above. For each parameter: the gradient's norm ||dL/dW|| and the update ratio ||ΔW|| / ||W||, the size of the step relative to the weights: around 1e-3 is healthy, far above it the learning rate is too large, far below too small.",
    "inspect.top": "at the top (softmax + cross-entropy)", "inspect.ratio": "update ratio", "inspect.healthy": "is healthy",
    "inspect.layer": "layer", "inspect.forward": "forward (first example)", "inspect.delta": "delta = dL/d(output)",
    "inspect.params": "||dL/dW||, ||ΔW|| / ||W||", "inspect.step": "step", "inspect.batch": "batch of", "inspect.loss": "loss",
    "inspect.none": "Train or step once to see a step here.",
    banner: "Training diverged at step {step}: {what}. Lower the learning rate and reset.",
    footer: "Runs on this machine only; nothing leaves it.",
  },
  ko: {
    title: "역전파를 실시간으로",
    connecting: "연결 중…", connected: "실시간", disconnected: "다시 연결하는 중…",
    "draw.title": "숫자를 그리세요",
    "draw.help": "마우스, 펜 또는 손가락으로 숫자 하나를 그리세요. 그리는 동안 페이지가 그림을 신경망에 보내고 열 개 클래스의 확률을 보여 줍니다. 신경망이 보기 전에 그림은 MNIST 숫자처럼 전처리됩니다: 잉크 부분만 잘라내고, 긴 변이 20픽셀이 되도록 (면적 평균으로) 줄이고, 무게 중심이 가운데 오도록 28 × 28 안에 놓습니다. 신경망이 받는 것은 이 작은 이미지입니다: 여러분의 그림과 비교해 보세요.",
    "draw.clear": "지우기", "draw.prediction": "신경망의 답",
    "draw.seen": "신경망이 보는 이미지 (28 × 28)", "draw.empty": "숫자를 그리세요",
    "why.title": "왜 이 클래스인가?",
    "why.help": "눈에 보이는 역전파입니다. 지도는 선택된 클래스 점수의 각 입력 픽셀에 대한 기울기로, 출력에서 입력까지 역전파 한 번으로 계산합니다: 빨간 픽셀은 더 진해지면 점수를 높이고, 파란 픽셀은 낮춥니다. 띠는 여러분의 그림에 대한 은닉층 활성값입니다: 첫 번째 이후의 각 가중치 행렬이 곱하는 값들입니다 (밝을수록 큼).",
    "why.gradient": "입력 기울기 d(클래스 점수)/dx", "why.lowers": "점수를 낮춤", "why.raises": "점수를 높임",
    "why.hidden": "은닉층 활성값 (각 가중치 행렬이 곱하는 값)",
    "why.none": "(이 모델은 추론 모드에서 입력까지 역전파할 수 없습니다)",
    "why.into": "{layer} 층으로 들어가는 값: {count}개, {zeros}%가 0, 최댓값 {max}",
    "train.title": "실시간 학습",
    "train.help": "신경망은 서버에서 MNIST로 학습하며, 한 단계에 미니배치 하나를 처리합니다: 순전파, 손실, 역전파, 갱신. 시작과 일시정지로 학습을 돌리고 멈춥니다; 한 단계는 미니배치 정확히 하나를 학습합니다; 초기화는 시드에서 다시 시작합니다 (같은 시드는 같은 학습을 만듭니다). 학습률과 배치 크기는 다음 단계부터 적용됩니다. 손실 곡선은 미니배치마다의 손실과 그 이동 평균이며, 정확도는 학습 이미지 1,000장과 따로 떼어 둔 검증 이미지 1,000장으로 잽니다. 저장은 모델을 chainrule의 .npz 형식으로 내려받습니다 (chainrule predict와 evaluate가 읽습니다). 언제든 페이지를 새로 고쳐도 곡선이 되살아납니다.",
    "train.start": "시작", "train.pause": "일시정지", "train.step": "미니배치 한 단계", "train.reset": "초기화",
    "train.seed": "시드", "train.lr": "학습률", "train.batch": "배치 크기", "train.save": "모델 저장",
    "train.steps": "단계", "train.epoch": "에폭", "train.examples": "본 예제 수",
    "train.throughput": "예제 / 초", "train.state": "상태", "train.model": "모델",
    "train.running": "학습 중", "train.paused": "일시정지", "train.parameters": "개의 파라미터",
    "train.loss": "미니배치 손실", "train.smooth": "평활화",
    "train.trainacc": "학습 정확도", "train.valacc": "검증 정확도",
    "train.confusion": "혼동 행렬 (행: 실제 숫자, 열: 예측), 검증 이미지",
    "train.examplesaxis": "본 예제 수",
    "tiles.title": "첫 번째 층의 가중치", "tiles.showgrads": "기울기 보기", "tiles.showweights": "가중치 보기",
    "tiles.help": "타일 하나는 첫 번째 층의 은닉 유닛 하나입니다: 784개의 가중치를 28 × 28 이미지로 그렸습니다 (빨강은 양수, 파랑은 음수, 타일마다 가장 큰 가중치로 눈금을 맞춤). 학습은 무작위 잡음을 획을 찾는 검출기로 바꿉니다. 전환 단추는 대신 마지막 단계의 기울기 dL/dW를 보여 줍니다: 마지막 미니배치가 각 유닛을 어느 쪽으로 밀었는지입니다.",
    "gallery.right": "맞힌 것", "gallery.wrong": "틀린 것",
    "gallery.help": "강의 노트의 matched / not matched 목록입니다: 신경망이 지금 맞히고 틀리는 검증 이미지와, 각각 가장 확률이 높은 세 클래스입니다. 개수는 채점하는 검증 이미지 1,000장 중의 수입니다.",
    "inspect.title": "단계 검사기",
    "inspect.help": "미니배치 한 단계를 층별로 보여 줍니다 (마지막으로 학습한 단계, 또는 방금 실행한 단계). 순전파: 배치의 첫 예제에 대한 그 층의 출력. 델타: dL/d(출력), 역전파가 위층에서 그 층으로 넘기는 값. 각 파라미터마다 기울기의 노름 ||dL/dW||와 갱신 비율 ||ΔW|| / ||W||(가중치에 대한 한 걸음의 크기)를 보입니다: 1e-3 정도가 건강하고, 훨씬 크면 학습률이 너무 크고, 훨씬 작으면 너무 작습니다.",
    "inspect.top": "맨 위에서 (소프트맥스 + 교차 엔트로피)", "inspect.ratio": "갱신 비율", "inspect.healthy": "이 건강함",
    "inspect.layer": "층", "inspect.forward": "순전파 (첫 예제)", "inspect.delta": "델타 = dL/d(출력)",
    "inspect.params": "||dL/dW||, ||ΔW|| / ||W||", "inspect.step": "단계", "inspect.batch": "배치 크기", "inspect.loss": "손실",
    "inspect.none": "학습하거나 한 단계를 실행하면 여기에 나타납니다.",
    banner: "{step}단계에서 학습이 발산했습니다: {what}. 학습률을 낮추고 초기화하세요.",
    footer: "이 컴퓨터에서만 실행되며, 아무것도 밖으로 나가지 않습니다.",
  },
};

let lang = "en";
try { lang = localStorage.getItem("chainrule-lang") === "ko" ? "ko" : "en"; } catch (e) { /* storage off */ }
const t = (key) => (TEXT[lang][key] !== undefined ? TEXT[lang][key] : TEXT.en[key]);
const $ = (id) => document.getElementById(id);

function applyLanguage() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("lang").textContent = lang === "en" ? "한국어" : "English";
  renderPrediction(); renderStatus(); renderTiles(); renderInspector(); renderCurves();
  renderExplanation(explanation);
  updateConnection();
}

// ---------------------------------------------------------------------------------- colours
function diverging(v) { // v in [-1, 1] -> [r, g, b]: blue, white, red
  const a = Math.max(-1, Math.min(1, v));
  if (a >= 0) return [255, Math.round(255 * (1 - a) * 0.93 + 18 * a), Math.round(255 * (1 - a) * 0.9 + 30 * a)];
  const b = -a;
  return [Math.round(255 * (1 - b) * 0.9 + 40 * b), Math.round(255 * (1 - b) * 0.9 + 100 * b), 255 - Math.round(35 * b)];
}
function bytesOf(b64) { const s = atob(b64); const out = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i); return out; }
function paint(canvas, w, h, colour) { // colour(i) -> [r, g, b]
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"); const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) { const [r, g, b] = colour(i); img.data.set([r, g, b, 255], 4 * i); }
  ctx.putImageData(img, 0, 0);
}
const grey = (v) => { const g = Math.round(255 * Math.max(0, Math.min(1, v))); return [g, g, g]; };

// ---------------------------------------------------------------------------------- drawing
const pad = $("pad"); const pctx = pad.getContext("2d", { willReadFrequently: true });
function clearPad() { pctx.fillStyle = "#fff"; pctx.fillRect(0, 0, pad.width, pad.height); }
clearPad();
let drawing = false; let last = null; let inFlight = false; let queued = false; let answer = null;

function position(ev) { const r = pad.getBoundingClientRect(); return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height]; }
function stroke(from, to) {
  pctx.strokeStyle = "#000"; pctx.lineWidth = 20; pctx.lineCap = "round"; pctx.lineJoin = "round";
  pctx.beginPath(); pctx.moveTo(from[0], from[1]); pctx.lineTo(to[0], to[1]); pctx.stroke();
}
pad.addEventListener("pointerdown", (ev) => { ev.preventDefault(); pad.setPointerCapture(ev.pointerId); drawing = true; last = position(ev); stroke(last, last); requestPrediction(); });
pad.addEventListener("pointermove", (ev) => { if (!drawing) return; const p = position(ev); stroke(last, p); last = p; requestPrediction(); });
function endStroke() { if (!drawing) return; drawing = false; requestPrediction(true); }
pad.addEventListener("pointerup", endStroke); pad.addEventListener("pointercancel", endStroke);
$("clear").addEventListener("click", () => { clearPad(); requestPrediction(true); });

function ink() { // ink intensity 0-255 of every pixel, row-major (dark ink on white paper)
  const data = pctx.getImageData(0, 0, pad.width, pad.height).data;
  const pixels = new Array(pad.width * pad.height);
  for (let i = 0; i < pixels.length; i++) pixels[i] = 255 - Math.round((data[4 * i] + data[4 * i + 1] + data[4 * i + 2]) / 3);
  return { width: pad.width, height: pad.height, pixels };
}
async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}
let explainWanted = false;
async function requestPrediction(explainToo) {
  if (explainToo) explainWanted = true;
  if (inFlight) { queued = true; return; }
  inFlight = true;
  try {
    const body = ink();
    answer = await post("/api/predict", body);
    renderPrediction();
    if (explainWanted && !drawing) { explainWanted = false; renderExplanation(await post("/api/explain", body)); }
  } catch (e) { showError(e.message); }
  inFlight = false;
  if (queued) { queued = false; requestPrediction(); }
}
window.chainrulePredict = () => requestPrediction(true); // lets a test draw with code, then ask

function renderPrediction() {
  const out = $("prediction"); const bars = $("bars");
  if (!answer || answer.digit === null) {
    out.textContent = t("draw.empty"); out.classList.add("empty");
  } else { out.textContent = String(answer.digit); out.classList.remove("empty"); }
  out.dataset.digit = answer && answer.digit !== null ? String(answer.digit) : "";
  bars.replaceChildren();
  const p = answer ? answer.probabilities : new Array(10).fill(0);
  for (let c = 0; c < 10; c++) {
    const name = document.createElement("span"); name.textContent = String(c);
    const bar = document.createElement("div"); bar.className = "bar" + (answer && answer.digit === c ? " top" : "");
    bar.dataset.probability = String(answer && answer.digit !== null ? p[c] : 0);
    const fill = document.createElement("i"); fill.style.width = (answer && answer.digit !== null ? 100 * p[c] : 0).toFixed(1) + "%"; bar.append(fill);
    const value = document.createElement("span"); value.textContent = answer && answer.digit !== null ? (100 * p[c]).toFixed(1) + "%" : "";
    bars.append(name, bar, value);
  }
  const seen = answer ? answer.seen : new Array(784).fill(0);
  paint($("seen"), 28, 28, (i) => grey(seen[i]));
}

let explanation = null;
function renderExplanation(ex) {
  explanation = ex;
  if (!ex) return;
  $("why-class").textContent = ex.digit === null ? "" : `(${ex.class})` + (ex.gradient ? "" : ` ${t("why.none")}`);
  const g = ex.gradient;
  if (g && ex.digit !== null) {
    let m = 0; for (const v of g) m = Math.max(m, Math.abs(v));
    paint($("gradient"), 28, 28, (i) => diverging(m ? g[i] / m : 0));
  } else paint($("gradient"), 28, 28, () => [255, 255, 255]);
  const box = $("hidden"); box.replaceChildren();
  if (ex.digit === null) return;
  for (const h of ex.hidden) {
    const div = document.createElement("div"); div.className = "hidden-layer";
    const name = document.createElement("div"); name.className = "name";
    name.textContent = t("why.into").replace("{layer}", `${h.layer}: ${h.name}`).replace("{count}", h.count).replace("{zeros}", Math.round(100 * h.zeros)).replace("{max}", fmt(h.max));
    const strip = document.createElement("canvas"); strip.className = "strip";
    if (h.values) { const m = Math.max(...h.values.map(Math.abs)) || 1; paint(strip, h.values.length, 1, (i) => diverging(h.values[i] / m)); }
    div.append(name, strip); box.append(div);
  }
}

// ---------------------------------------------------------------------------------- training
let status = null; let points = []; let evals = []; let stride = 1; let images = null; let showGrads = false;
let connected = false;

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(2) : v.toPrecision(digits);
}
function showError(message) { const e = $("command-error"); e.textContent = message; e.hidden = !message; }

async function command(name, body) {
  try { showError(""); status = await post("/api/" + name, body || {}); renderStatus(); }
  catch (e) { showError(e.message); }
}
$("start").addEventListener("click", () => command("start"));
$("pause").addEventListener("click", () => command("pause"));
$("step").addEventListener("click", () => command("step"));
$("reset").addEventListener("click", () => command("reset", { seed: Number($("seed").value) }));
$("lr").addEventListener("change", () => command("settings", { lr: Number($("lr").value) }));
$("batch").addEventListener("change", () => command("settings", { batch_size: Number($("batch").value) }));
$("tiles-toggle").addEventListener("click", () => { showGrads = !showGrads; renderTiles(); });
$("lang").addEventListener("click", () => { lang = lang === "en" ? "ko" : "en"; try { localStorage.setItem("chainrule-lang", lang); } catch (e) { /* storage off */ } applyLanguage(); });

function renderStatus() {
  if (!status) return;
  $("step-count").textContent = String(status.step);
  $("epoch").textContent = String(status.epoch);
  $("examples").textContent = status.examples.toLocaleString("en");
  $("throughput").textContent = status.running ? Math.round(status.throughput).toLocaleString("en") : "0";
  $("state").textContent = t(status.running ? "train.running" : "train.paused");
  $("model").textContent = `${status.model} · ${status.optimizer} · ${status.parameters.toLocaleString("en")} ${t("train.parameters")}`;
  for (const [id, key] of [["seed", "seed"], ["lr", "lr"], ["batch", "batch_size"]]) {
    if (document.activeElement !== $(id)) $(id).value = String(status[key]);
  }
  const banner = $("banner");
  if (status.diverged) {
    banner.textContent = t("banner").replace("{step}", status.diverged.step).replace("{what}", status.diverged.what);
    banner.hidden = false;
  } else banner.hidden = true;
}

function thin() { points = points.filter((p) => p[0] % stride === 0); }

function drawAxes(ctx, w, h, pad, yMax, yLabel, xMax) {
  ctx.strokeStyle = "#d8dde3"; ctx.fillStyle = "#5b6470"; ctx.font = "10px system-ui"; ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const y = pad.t + (h - pad.t - pad.b) * (1 - k / 4);
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    ctx.fillText(yLabel(yMax * k / 4), 2, y + 3);
  }
  ctx.fillText(`${t("train.examplesaxis")}: ${Math.round(xMax).toLocaleString("en")}`, w - pad.r - 130, h - 4);
}
function line(ctx, data, x, y, colour, width) {
  ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath(); let started = false;
  for (const d of data) {
    const yy = y(d); if (yy === null) { started = false; continue; }
    if (!started) { ctx.moveTo(x(d), yy); started = true; } else ctx.lineTo(x(d), yy);
  }
  ctx.stroke();
}
function renderCurves() {
  const pad = { l: 34, r: 8, t: 8, b: 18 };
  const lc = $("loss-curve"); const ctx = lc.getContext("2d"); const w = lc.width; const h = lc.height;
  ctx.clearRect(0, 0, w, h);
  const xMax = Math.max(1, ...points.map((p) => p[1]), ...evals.map((e) => e[1]));
  const finite = points.map((p) => p[2]).filter((v) => v !== null).sort((a, b) => a - b);
  const yMax = finite.length ? Math.max(1e-6, finite[Math.floor(0.98 * (finite.length - 1))] * 1.1) : 1;
  drawAxes(ctx, w, h, pad, yMax, (v) => v.toFixed(2), xMax);
  const X = (x) => pad.l + (w - pad.l - pad.r) * x / xMax;
  const Y = (v, m) => (v === null ? null : pad.t + (h - pad.t - pad.b) * (1 - Math.min(v, m) / m));
  line(ctx, points, (p) => X(p[1]), (p) => Y(p[2], yMax), "#a9c3ef", 1);
  line(ctx, points, (p) => X(p[1]), (p) => Y(p[3], yMax), "#2f6fdb", 2);
  lc.dataset.points = String(points.length);
  const ac = $("acc-curve"); const actx = ac.getContext("2d");
  actx.clearRect(0, 0, w, h);
  drawAxes(actx, w, h, pad, 1, (v) => `${Math.round(100 * v)}%`, xMax);
  line(actx, evals, (e) => X(e[1]), (e) => Y(e[2], 1), "#2f6fdb", 2);
  line(actx, evals, (e) => X(e[1]), (e) => Y(e[3], 1), "#d0453a", 2);
  ac.dataset.points = String(evals.length);
}

function renderTiles() {
  const box = $("tiles"); box.replaceChildren();
  $("tiles-toggle").textContent = t(showGrads ? "tiles.showweights" : "tiles.showgrads");
  if (!images) return;
  const set = showGrads ? images.gradients : images.weights;
  box.dataset.kind = showGrads ? "gradients" : "weights";
  if (!set) return;
  for (const tile of set.tiles) {
    const bytes = bytesOf(tile); const c = document.createElement("canvas");
    paint(c, set.width, set.height, (i) => diverging((bytes[i] - 128) / 127));
    box.append(c);
  }
}

function renderGallery(id, items, wrong) {
  const box = $(id); box.replaceChildren();
  for (const item of items) {
    const div = document.createElement("div"); div.className = "item" + (wrong ? " wrong" : "");
    const c = document.createElement("canvas"); const bytes = bytesOf(item.image);
    paint(c, 28, 28, (i) => { const g = 255 - bytes[i]; return [g, g, g]; });
    const top = document.createElement("div"); top.className = "top3";
    const truth = document.createElement("div"); truth.className = "truth"; truth.textContent = `${item.label}`;
    for (const [cls, p] of item.top3) {
      const n = document.createElement("span"); n.textContent = String(cls);
      const bar = document.createElement("div"); bar.className = "bar" + (cls === item.label ? " top" : "");
      const fill = document.createElement("i"); fill.style.width = (100 * p).toFixed(0) + "%"; bar.append(fill);
      top.append(n, bar);
    }
    div.append(c, truth, top); box.append(div);
  }
}

function renderConfusion(matrix) {
  const table = $("confusion"); table.replaceChildren();
  const head = document.createElement("tr"); head.append(document.createElement("th"));
  for (let j = 0; j < 10; j++) { const th = document.createElement("th"); th.textContent = String(j); head.append(th); }
  table.append(head);
  let max = 1; matrix.forEach((row, i) => row.forEach((v, j) => { if (i !== j) max = Math.max(max, v); }));
  matrix.forEach((row, i) => {
    const tr = document.createElement("tr"); const th = document.createElement("th"); th.textContent = String(i); tr.append(th);
    row.forEach((v, j) => {
      const td = document.createElement("td"); td.textContent = v ? String(v) : "";
      const rowSum = row.reduce((a, b) => a + b, 0) || 1;
      td.style.background = i === j ? `rgba(42,157,85,${(0.15 + 0.6 * v / rowSum).toFixed(2)})` : `rgba(208,69,58,${(0.8 * v / max).toFixed(2)})`;
      tr.append(td);
    });
    table.append(tr);
  });
}

function stripCanvas(values) {
  const c = document.createElement("canvas"); c.className = "strip";
  if (values) { const m = Math.max(...values.map(Math.abs)) || 1; paint(c, values.length, 1, (i) => diverging(values[i] / m)); }
  return c;
}
function renderInspector() {
  const table = $("inspector"); table.replaceChildren();
  const ins = images && images.inspection;
  $("inspector-step").textContent = ins ? `${t("inspect.step")} ${ins.step} · ${t("inspect.batch")} ${ins.batch} · ${t("inspect.loss")} ${fmt(ins.loss, 4)}` : t("inspect.none");
  if (!ins) return;
  const head = document.createElement("tr");
  for (const key of ["inspect.layer", "inspect.forward", "inspect.delta", "inspect.params"]) { const th = document.createElement("th"); th.textContent = t(key); head.append(th); }
  table.append(head);
  for (const layer of ins.layers) {
    const tr = document.createElement("tr");
    const name = document.createElement("td"); name.textContent = `${layer.index}: ${layer.name} → (${layer.shape.join(", ")})`;
    const cell = (v) => { const td = document.createElement("td"); const s = document.createElement("div"); s.textContent = `mean ${fmt(v.mean)} · std ${fmt(v.std)} · [${fmt(v.min)}, ${fmt(v.max)}]`; td.append(s, stripCanvas(v.values)); return td; };
    const params = document.createElement("td");
    params.textContent = layer.params.map((p) => `${p.name}: ${fmt(p.grad_norm)}, ${fmt(p.ratio)}`).join("  ·  ") || "–";
    tr.append(name, cell(layer.forward), cell(layer.delta), params);
    table.append(tr);
  }
}

function renderImages() {
  if (!images) return;
  renderTiles();
  const g = images.gallery;
  renderGallery("recognised", g.recognised, false);
  renderGallery("not-recognised", g.not_recognised, true);
  $("recognised-count").textContent = `(${g.recognised_count})`;
  $("not-recognised-count").textContent = `(${g.not_recognised_count})`;
  renderConfusion(g.confusion);
  renderInspector();
}

function updateConnection() { $("connection").textContent = t(connected ? "connected" : "disconnected"); }

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => { connected = true; updateConnection(); });
  events.addEventListener("error", () => { connected = false; updateConnection(); });
  events.addEventListener("snapshot", (ev) => {
    const s = JSON.parse(ev.data);
    status = s.status; stride = s.stride; points = s.points; evals = s.evals; images = s.images;
    renderStatus(); renderCurves(); renderImages();
  });
  events.addEventListener("metrics", (ev) => {
    const m = JSON.parse(ev.data);
    status = m.status; points.push(...m.points);
    for (const e of m.evals) { // thinned as the server thins its own copy
      evals.push(e);
      if (evals.length > 2000) evals = evals.filter((_, i) => i % 2 === 1);
    }
    if (m.stride !== stride) { stride = m.stride; thin(); }
    renderStatus(); scheduleCurves();
  });
  events.addEventListener("images", (ev) => { images = JSON.parse(ev.data); renderImages(); });
}
let curvesPending = false;
function scheduleCurves() { if (curvesPending) return; curvesPending = true; requestAnimationFrame(() => { curvesPending = false; renderCurves(); }); }

applyLanguage();
connect();
