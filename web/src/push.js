// Browser notifications (the Notifications API, while a tab is open) and Web Push to this
// device (the service worker /sw.js, scope /). Permission is only ever asked from a click.

import { get, post, del } from './api.js';

export const PUSH_PATH = '/api/v1/me/push-subscriptions';

export const notificationsSupported = () => typeof Notification !== 'undefined';
export const notificationPermission = () => (notificationsSupported() ? Notification.permission : 'unsupported');
// Service workers and push need a secure context (https, or http://localhost).
export const pushSupported = () => typeof navigator !== 'undefined' && 'serviceWorker' in navigator
  && typeof PushManager !== 'undefined' && window.isSecureContext !== false;

// The server's VAPID key (base64url, an uncompressed P-256 point) as the bytes
// pushManager.subscribe wants.
export function base64UrlBytes(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const sameBytes = (buf, bytes) => {
  if (!buf) return false;
  const a = new Uint8Array(buf);
  return a.length === bytes.length && a.every((x, i) => x === bytes[i]);
};

// This browser's push subscription (null when there is none, or no service worker yet).
export async function currentSubscription() {
  if (!pushSupported()) return null;
  const reg = await navigator.serviceWorker.getRegistration('/');
  return reg ? reg.pushManager.getSubscription() : null;
}

// A browser error as a sentence for the agent.
function pushError(e) {
  if (e && e.name === 'NotAllowedError') return new Error('Notifications are blocked for this site: allow them in the browser’s site settings, then try again.');
  if (e && e.name === 'AbortError') return new Error('The browser’s push service did not answer. Try again later.');
  return e instanceof Error ? e : new Error(String(e));
}

// A browser whose push service cannot be reached may never answer subscribe().
const within = (promise, ms) => Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new DOMException('timeout', 'AbortError')), ms))]);

// Registers the service worker, subscribes with the server's key (a subscription made
// with another key is replaced) and registers the subscription with the server.
export async function enablePush(vapidKey) {
  let sub;
  try {
    await navigator.serviceWorker.register('/sw.js', { scope: '/' });
    const reg = await within(navigator.serviceWorker.ready, 20_000); // active: subscribe needs it
    const key = base64UrlBytes(vapidKey);
    sub = await reg.pushManager.getSubscription();
    if (sub && !sameBytes(sub.options && sub.options.applicationServerKey, key)) { await sub.unsubscribe(); sub = null; }
    if (!sub) sub = await within(reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }), 20_000);
  } catch (e) {
    throw pushError(e);
  }
  return post(PUSH_PATH, sub.toJSON());
}

// Unsubscribes this browser and removes its registration from the server (`items`: the
// server's list, to find its id).
export async function disablePush(items) {
  const sub = await currentSubscription();
  if (!sub) return;
  const mine = items.find((d) => d.endpoint === sub.endpoint);
  if (mine) await del(`${PUSH_PATH}/${encodeURIComponent(mine.id)}`);
  await sub.unsubscribe().catch(() => {});
}

// A device registered with the server; this browser's subscription goes too when it is it.
export async function removeDevice(device) {
  await del(`${PUSH_PATH}/${encodeURIComponent(device.id)}`);
  const sub = await currentSubscription().catch(() => null);
  if (sub && sub.endpoint === device.endpoint) await sub.unsubscribe().catch(() => {});
}

export const loadDevices = () => get(PUSH_PATH);

// A worker's click on a push notification for a tab it does not control yet: the page
// moves itself (same origin only).
export function listenToWorker() {
  if (!pushSupported()) return;
  navigator.serviceWorker.addEventListener('message', (e) => {
    const d = e.data;
    if (!d || d.type !== 'open' || typeof d.url !== 'string') return;
    try {
      const u = new URL(d.url, location.href);
      if (u.origin === location.origin) location.hash = u.hash;
    } catch { /* ignore */ }
  });
}
