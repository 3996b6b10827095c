// Confab's service worker (served at /sw.js, scope /): shows the server's Web Push
// notifications and, on a click, brings the inbox to the conversation. A classic script,
// copied to dist/ as it is. It handles no fetch: the page always loads from the network.
//
// A push's data: {"title","body","url","notification_id","conversation_id","reason"},
// `url` a path of this origin such as /#/conversations/<id>.

self.addEventListener('install', () => self.skipWaiting());
// Take the open tabs at once, so that a click can navigate them (WindowClient.navigate
// needs a controlled client).
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (e) {
    data = { body: event.data ? event.data.text() : '' };
  }
  event.waitUntil(self.registration.showNotification(data.title || 'Confab', {
    body: data.body || '',
    // The same tag as the page's own browser notification: one replaces the other.
    tag: data.notification_id || undefined,
    data: { url: data.url || '/', id: data.notification_id || null },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const info = event.notification.data || {};
  const url = new URL(info.url || '/', self.location.origin);
  const target = url.origin === self.location.origin ? url.href : self.location.origin + '/';
  // Read, as a click on the bell's entry would be (the open tabs hear it from the stream).
  const read = info.id
    ? fetch(`/api/v1/me/notifications/${encodeURIComponent(info.id)}/read`, {
      method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: '{}',
    }).catch(() => {})
    : null;
  event.waitUntil(Promise.all([read, (async () => {
    const tabs = (await self.clients.matchAll({ type: 'window', includeUncontrolled: true }))
      .filter((c) => new URL(c.url).origin === self.location.origin);
    const tab = tabs.find((c) => c.focused) || tabs.find((c) => c.visibilityState === 'visible') || tabs[0];
    if (!tab) {
      await self.clients.openWindow(target);
      return;
    }
    await tab.focus().catch(() => {});
    if (tab.url === target) return;
    try {
      await tab.navigate(target);
    } catch (e) {
      // Not controlled by this worker (yet): the page moves itself.
      tab.postMessage({ type: 'open', url: target });
    }
  })()]));
});
