// qasr live captions page: follows the local daemon's qasr.v1 events over a WebSocket.
// The token comes from the URL fragment (#token=...), appearance from the query string (see captions.html).
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token") || "";

  // ---- appearance ------------------------------------------------------------------------------
  function colour(value) {
    if (!value) return null;
    const candidate = /^[0-9a-f]{3,8}$/i.test(value) ? "#" + value : value;
    return CSS.supports("color", candidate) ? candidate : null;
  }
  function number(name, fallback, min, max) {
    const value = parseFloat(params.get(name));
    return Number.isFinite(value) ? Math.min(max, Math.max(min, value)) : fallback;
  }
  const root = document.documentElement.style;
  const font = params.get("font");
  if (font) root.setProperty("--font", JSON.stringify(font) + ", \"Noto Sans CJK SC\", sans-serif");
  if (params.has("size")) root.setProperty("--size", number("size", 32, 6, 400) + "px");
  for (const [param, variable] of [["color", "--color"], ["tentative", "--tentative"], ["background", "--background"]]) {
    const value = colour(params.get(param));
    if (value) root.setProperty(variable, value);
  }
  const lines = Math.round(number("lines", 2, 1, 20));
  root.setProperty("--lines", String(lines));
  const align = params.get("align");
  if (["left", "center", "right"].includes(align)) root.setProperty("--align", align);
  const fadeAfterMs = number("fade", 6, 0, 3600) * 1000;
  const statusMode = ["auto", "always", "never"].includes(params.get("status")) ? params.get("status") : "auto";
  // whose words: ?source=mic | system (what the computer plays) | both (labelled "you:" / "them:"); default all
  const sourceParam = params.get("source");
  const shownSources = { mic: ["mic"], system: ["system"], both: ["mic", "system"] }[sourceParam] || null;
  const labelled = sourceParam === "both";

  const box = document.getElementById("box");
  const captions = document.getElementById("captions");
  const statusBox = document.getElementById("status");
  const statusText = document.getElementById("status-text");
  statusBox.className = statusMode;
  const textEl = document.createElement("div");
  textEl.id = "text";
  captions.appendChild(textEl);

  // ---- caption state (same rules as clients/captions_model.py) ---------------------------------
  const WIDE = /[\u1100-\u115F\u2E80-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6]/;
  const HISTORY_CHARS = 2000;
  let finished = "";
  let finishedSource = null; // whose words end `finished`
  const live = new Map(); // utterance id -> {committed, tentative, source}
  let timed = null; // the newest final's word timestamps: {text, words: [{word, start, end}]}, stream seconds
  let fadeTimer = null;

  function separator(left, right) {
    if (!left || !right || /\s$/.test(left) || /^\s/.test(right)) return "";
    if (WIDE.test(left.slice(-1)) || WIDE.test(right[0])) return "";
    return " ";
  }
  function join(left, right) { return left + separator(left, right) + right; }
  function sourceOf(event) { return String(event.source || "mic"); }
  function label(source) { return ({ mic: "you:", system: "them:" })[source] || source.split(":")[0] + ":"; }
  function finish(text, source) {
    if (labelled && source !== finishedSource) text = label(source) + " " + text;
    finishedSource = source;
    finished = join(finished, text).slice(-HISTORY_CHARS);
  }

  function spans() {
    const out = [];
    let text = finished;
    let shownSource = finishedSource;
    if (finished) out.push(["committed", finished]);
    for (const u of live.values()) {
      let first = true;
      for (const [piece0, style] of [[u.committed, "committed"], [u.tentative, "tentative"]]) {
        if (!piece0) continue;
        let piece = piece0;
        if (first) {
          if (labelled && u.source !== shownSource) piece = label(u.source) + " " + piece;
          shownSource = u.source;
          piece = separator(text, piece) + piece;
          first = false;
        }
        text += piece;
        if (out.length && out[out.length - 1][0] === style) out[out.length - 1][1] += piece;
        else out.push([style, piece]);
      }
    }
    return out;
  }

  // The newest final's words (when the daemon sends `words`) become spans with their times on the
  // stream's clock: data-start / data-end and a tooltip.
  function fill(span, text) {
    const at = timed && finished.endsWith(timed.text) ? finished.length - timed.text.length : -1;
    if (at < 0 || !text.startsWith(finished)) { span.textContent = text; return; }
    const nodes = [];
    let cursor = at;
    for (const w of timed.words) {
      const found = text.indexOf(w.word, cursor);
      if (!w.word || found < 0 || found + w.word.length > finished.length) break;
      const word = document.createElement("span");
      word.className = "word";
      word.textContent = w.word;
      word.dataset.start = w.start.toFixed(3);
      word.dataset.end = w.end.toFixed(3);
      word.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
      nodes.push(document.createTextNode(text.slice(cursor, found)), word);
      cursor = found + w.word.length;
    }
    span.replaceChildren(document.createTextNode(text.slice(0, at)), ...nodes, document.createTextNode(text.slice(cursor)));
  }

  function render() {
    const parts = spans();
    textEl.replaceChildren(...parts.map(([style, text], index) => {
      const span = document.createElement("span");
      span.className = style;
      if (index === 0 && finished) fill(span, text);
      else span.textContent = text;
      return span;
    }));
    box.classList.toggle("empty", parts.length === 0);
    document.body.dataset.captions = parts.length ? "shown" : "empty";
  }

  function activity() {
    box.classList.remove("faded");
    if (fadeTimer) clearTimeout(fadeTimer);
    fadeTimer = fadeAfterMs > 0 ? setTimeout(fadeOut, fadeAfterMs) : null;
  }
  function fadeOut() {
    box.classList.add("faded");
    fadeTimer = setTimeout(() => { finished = ""; finishedSource = null; live.clear(); render(); box.classList.remove("faded"); }, 1000);
  }

  function settleLive() { // a lost connection never delivers the finals of utterances in flight
    for (const u of live.values()) if ((u.committed + u.tentative).trim()) finish((u.committed + u.tentative).trim(), u.source);
    live.clear();
  }

  function onEvent(event) {
    if ((event.type === "partial" || event.type === "final") && shownSources && !shownSources.includes(sourceOf(event))) return;
    switch (event.type) {
      case "partial":
        live.set(String(event.utterance_id), { committed: event.committed || "", tentative: event.tentative || "",
                                               source: sourceOf(event) });
        break;
      case "final": {
        live.delete(String(event.utterance_id));
        const text = (event.text || "").trim();
        if (text) finish(text, sourceOf(event));
        const base = Number(event.audio_start) || 0;
        timed = text && Array.isArray(event.words) && event.words.length ? {
          text, words: event.words.map(w => ({ word: String(w.word || ""), start: base + (Number(w.start) || 0),
                                               end: base + (Number(w.end) || 0) })),
        } : null;
        break;
      }
      case "vad":
        if (event.speech) activity();
        return;
      case "hello":
        setConnection("connected", daemonState(event.state));
        return;
      case "state":
        if (document.body.dataset.connection === "connected") statusText.textContent = daemonState(event.state);
        return;
      default:
        return;
    }
    activity();
    render();
  }

  // ---- connection ----------------------------------------------------------------------------
  // While nothing is shown, the badge says what the daemon is doing ("listening"), so an empty page
  // reads as waiting for speech rather than broken (status=auto; always: also over captions; never).
  function daemonState(state) {
    const names = { "no-device": "no microphone", starting: "starting…", stopping: "stopping…" };
    return names[state] || (state ? String(state) : "listening");
  }
  function setConnection(state, text) {
    document.body.dataset.connection = state;
    statusText.textContent = text;
  }

  const FIRST_DELAY_MS = 500, MAX_DELAY_MS = 5000;
  let delay = FIRST_DELAY_MS;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/?token=${encodeURIComponent(token)}`);
    let opened = false;
    ws.onopen = () => {
      opened = true;
      delay = FIRST_DELAY_MS;
      ws.send(JSON.stringify({ type: "subscribe", events: ["state", "vad", "partial", "final"] }));
    };
    ws.onmessage = (message) => {
      if (typeof message.data !== "string") return;
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      onEvent(event);
    };
    ws.onclose = (close) => {
      settleLive();
      render();
      const why = close.reason || (opened ? "connection lost" : "daemon not reachable");
      setConnection("reconnecting", `reconnecting… (${why})`);
      const wait = delay * (0.8 + 0.4 * Math.random());
      delay = Math.min(delay * 2, MAX_DELAY_MS);
      setTimeout(connect, wait);
    };
  }

  render();
  if (!token) {
    setConnection("failed", "no token: open the address printed by `qasr-daemon captions --print-url`");
  } else {
    connect();
  }
})();
