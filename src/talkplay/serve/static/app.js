// TalkPlay web page. Every piece of data reaches the page through textContent or
// attributes set one by one, never as HTML, so a track title cannot inject markup.
"use strict";

const state = { sessionId: null, messages: [], busy: false, audio: null, playing: null, cards: new Map() };
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

async function api(path, body, method = "POST") {
  const res = await fetch(path, {
    method, headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || `request failed (${res.status})`);
  return data;
}

async function newSession() {
  const s = await api("/v1/sessions");
  state.sessionId = s.id;
}

async function loadHealth() {
  try {
    const h = await api("/health", null, "GET");
    $("model-info").textContent = `${h.model.name} · ${h.catalog.tracks} tracks`;
  } catch (e) {
    $("model-info").textContent = "server unreachable";
  }
}

function setBusy(busy, text) {
  state.busy = busy;
  $("status").hidden = !busy;
  if (text) $("status-text").textContent = text;
  $("send").disabled = busy;
  $("input").setAttribute("aria-busy", String(busy));
  document.body.classList.toggle("busy", busy);
}

function scrollDown() {
  const main = document.querySelector("main");
  main.scrollTop = main.scrollHeight;
}

function addUser(text) {
  $("hello")?.remove();
  $("log").appendChild(el("div", { class: "msg user", text }));
  scrollDown();
}

function addError(text) {
  $("log").appendChild(el("div", { class: "msg error", role: "alert", text }));
  scrollDown();
}

function stopAudio() {
  if (state.audio) state.audio.pause();
  if (state.playing) {
    state.playing.setAttribute("aria-pressed", "false");
    state.playing.textContent = "▶ Play";
  }
  state.playing = null;
}

function togglePlay(button, track) {
  if (state.playing === button) { stopAudio(); return; }
  stopAudio();
  if (!state.audio) state.audio = new Audio();
  state.audio.src = track.audio_url;
  state.audio.onended = stopAudio;
  state.audio.onerror = () => { stopAudio(); button.disabled = true; button.title = "audio unavailable"; };
  state.playing = button;
  button.setAttribute("aria-pressed", "true");
  button.textContent = "❚❚ Pause";
  state.audio.play().catch(() => {});
}

async function sendFeedback(track, kind, card) {
  const current = card.dataset.feedback || "none";
  const next = current === kind ? "none" : kind;
  try {
    await api(`/v1/sessions/${encodeURIComponent(state.sessionId)}/feedback`, { track_id: track.id, feedback: next });
  } catch (e) { addError(`Could not save feedback: ${e.message}`); return; }
  card.dataset.feedback = next;
  card.classList.toggle("liked", next === "liked");
  card.classList.toggle("rejected", next === "rejected");
  card.querySelector("button.like").setAttribute("aria-pressed", String(next === "liked"));
  card.querySelector("button.reject").setAttribute("aria-pressed", String(next === "rejected"));
}

function trackCard(track) {
  const title = track.title || track.id;
  const card = el("li", { class: "card", "data-track-id": track.id });
  card.appendChild(el("h3", { class: "title", text: title }));
  if (track.artists && track.artists.length) card.appendChild(el("p", { class: "artists", text: track.artists.join(", ") }));
  if (track.album) card.appendChild(el("p", { class: "album", text: track.album + (track.year ? ` · ${track.year}` : "") }));
  if (track.tags && track.tags.length) {
    card.appendChild(el("ul", { class: "tags", "aria-label": "tags" },
      track.tags.slice(0, 6).map((t) => el("li", { text: t }))));
  }
  if (track.why) card.appendChild(el("p", { class: "why", text: track.why }));
  const actions = el("div", { class: "actions" });
  if (track.audio_url) {
    const play = el("button", { type: "button", class: "play", "aria-pressed": "false", "aria-label": `Play ${title}`, text: "▶ Play" });
    play.addEventListener("click", () => togglePlay(play, track));
    actions.appendChild(play);
  }
  const like = el("button", { type: "button", class: "like", "aria-pressed": "false", "aria-label": `Like ${title}`, title: "Like", text: "♥ Like" });
  like.addEventListener("click", () => sendFeedback(track, "liked", card));
  const reject = el("button", { type: "button", class: "reject", "aria-pressed": "false", "aria-label": `Reject ${title}`, title: "Not for me", text: "✕ Reject" });
  reject.addEventListener("click", () => sendFeedback(track, "rejected", card));
  actions.append(like, reject);
  card.appendChild(actions);
  return card;
}

function assistantBubble() {
  const bubble = el("div", { class: "msg assistant" });
  const text = el("p", { class: "text" });
  const cards = el("ul", { class: "cards", "aria-label": "Recommended tracks" });
  bubble.append(text, cards);
  $("log").appendChild(bubble);
  return { bubble, text, cards };
}

// Reads the OpenAI-style server-sent events of /v1/chat/completions.
async function streamChat(body, onChunk) {
  const res = await fetch("/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    throw new Error((data.error && data.error.message) || `request failed (${res.status})`);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        const obj = JSON.parse(payload);
        if (obj.error) throw new Error(obj.error.message);
        onChunk(obj);
      }
    }
  }
}

async function send(text) {
  if (state.busy || !text.trim()) return;
  if (!state.sessionId) await newSession();
  addUser(text);
  state.messages.push({ role: "user", content: text });
  setBusy(true, "Finding music…");
  const { text: textNode, cards } = assistantBubble();
  let content = "";
  let tracks = [];
  try {
    await streamChat({ messages: state.messages, stream: true, session_id: state.sessionId }, (chunk) => {
      const delta = (chunk.choices[0] || {}).delta || {};
      if (delta.tracks) {
        tracks = delta.tracks;
        for (const t of tracks) cards.appendChild(trackCard(t));
        setBusy(true, "Writing…");
      }
      if (delta.content) {
        content += delta.content;
        // the numbered track list repeats the cards, so the page shows only the reply
        if (!delta.listing) textNode.textContent = (textNode.textContent + delta.content).trimStart();
      }
      scrollDown();
    });
    if (!textNode.textContent.trim()) textNode.textContent = tracks.length ? "Here is what I found:" : content;
    state.messages.push({ role: "assistant", content, tracks: tracks.map((t) => ({ id: t.id })) });
  } catch (e) {
    state.messages.pop();
    addError(`Sorry: ${e.message}`);
  } finally {
    setBusy(false);
    $("input").focus();
  }
}

async function startOver() {
  stopAudio();
  state.messages = [];
  $("log").replaceChildren(el("div", { class: "hello", id: "hello" }, [
    el("p", { text: "New conversation. What would you like to hear?" }),
  ]));
  try { await newSession(); } catch (e) { addError(e.message); }
  $("input").focus();
}

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = Math.min(input.scrollHeight, 144) + "px";
}

document.addEventListener("DOMContentLoaded", () => {
  const input = $("input");
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (!text.trim() || state.busy) return;
    input.value = "";
    autosize();
    send(text);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  input.addEventListener("input", autosize);
  $("restart").addEventListener("click", startOver);
  loadHealth();
  newSession().catch((e) => addError(`Could not start a session: ${e.message}`));
  input.focus();
});
