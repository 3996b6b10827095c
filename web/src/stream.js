// The WebSocket stream: subscribe from the last offset, ping every 20 s, reconnect with
// backoff after a drop, a server restart or a laptop sleep, and reload on `resync`.

import { signal } from '@preact/signals';
import { applyDelta, reloadVisible } from './state.js';

export const connection = signal('connecting'); // connecting | live | reconnecting | offline

const PING_MS = 20_000;
const PONG_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_MS = 15_000;

let ws = null;
let lastOffset = null;
let attempt = 0;
let pingTimer = null;
let pongTimer = null;
let retryTimer = null;
let wakeTimer = null;
let lastTick = Date.now();
let stopped = true;
let everLive = false;

function url() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/v1/stream`;
}

export function startStream(since) {
  stopped = false;
  if (since !== null && since !== undefined) lastOffset = since;
  connect();
  if (!wakeTimer) {
    // A laptop that slept leaves a socket that looks open: a long gap between ticks means
    // we slept, so reconnect at once.
    wakeTimer = setInterval(() => {
      const now = Date.now();
      if (now - lastTick > 30_000) reconnectNow();
      lastTick = now;
    }, 5_000);
    addEventListener('online', reconnectNow);
    addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && connection.value !== 'live') reconnectNow();
    });
  }
}

export function stopStream() {
  stopped = true;
  clearTimers();
  clearTimeout(retryTimer);
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  connection.value = 'connecting';
  everLive = false;
}

function clearTimers() {
  clearInterval(pingTimer);
  clearTimeout(pongTimer);
}

function reconnectNow() {
  if (stopped) return;
  attempt = 0;
  clearTimeout(retryTimer);
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  clearTimers();
  connect();
}

function connect() {
  if (stopped) return;
  connection.value = everLive ? 'reconnecting' : 'connecting';
  let socket;
  try {
    socket = new WebSocket(url());
  } catch {
    scheduleRetry();
    return;
  }
  ws = socket;
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: 'subscribe', since: lastOffset }));
    pingTimer = setInterval(() => {
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send('{"type":"ping"}');
      clearTimeout(pongTimer);
      pongTimer = setTimeout(() => reconnectNow(), PONG_TIMEOUT_MS);
    }, PING_MS);
  };
  socket.onmessage = (ev) => {
    let frame;
    try { frame = JSON.parse(ev.data); } catch { return; }
    switch (frame.type) {
      case 'subscribed':
        attempt = 0;
        everLive = true;
        connection.value = 'live';
        if (lastOffset === null) lastOffset = frame.head;
        break;
      case 'delta':
        if (lastOffset !== null && frame.offset <= lastOffset) break; // seen already
        lastOffset = frame.offset;
        applyDelta(frame);
        break;
      case 'resync':
        lastOffset = frame.head;
        reloadVisible();
        break;
      case 'pong':
        clearTimeout(pongTimer);
        break;
      default:
        break;
    }
  };
  socket.onclose = () => {
    if (ws !== socket) return;
    ws = null;
    clearTimers();
    scheduleRetry();
  };
  socket.onerror = () => { /* onclose follows */ };
}

function scheduleRetry() {
  if (stopped) return;
  connection.value = navigator.onLine === false ? 'offline' : 'reconnecting';
  const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
  attempt++;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delay);
}
