// Settings → Notifications (#/settings/notifications): per event, where the agent wants it
// (in app, browser, email, push), quiet hours, this browser's permission for notifications,
// Web Push to this device and the devices that receive it; for admins, the workspace's
// response target (what makes a conversation overdue).

import { useState, useEffect, useLayoutEffect } from 'preact/hooks';
import { get, put, patch } from '../api.js';
import { isAdmin, toast } from '../state.js';
import { notificationPermission, pushSupported, currentSubscription, enablePush, disablePush, removeDevice, loadDevices } from '../push.js';
import { keepFocus } from '../focus.js';
import { fullTime } from '../util.js';
import { IconTrash } from './Icons.jsx';

const SETTINGS_PATH = '/api/v1/me/notification-settings';
const WORKSPACE_PATH = '/api/v1/workspace/settings';
const EVENTS = [
  ['assignment', 'Assigned to me'],
  ['mention', 'Mentioned in a note'],
  ['new_message', 'New message in my conversations'],
  ['new_conversation', 'New unassigned conversation'],
  ['escalation', 'AI escalated to me'],
  ['overdue', 'My conversation waits longer than the response target'],
  ['snooze_ended', 'A conversation of mine (or one I snoozed) is back from snooze'],
];
const DELIVERIES = [['in_app', 'In app'], ['browser', 'Browser'], ['email', 'Email'], ['push', 'Push']];
const MAX_TARGET = 30 * 86400;

const browserZone = () => {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
};
const zones = () => {
  try { return Intl.supportedValuesOf('timeZone'); } catch { return []; }
};
const hoursText = (secs) => String(Math.round(secs / 36) / 100);

// The form from the server's view: all six events (a missing one reads as all off), the
// quiet hours with defaults while they are off (from 22:00 to 07:00 in the browser's zone).
function formOf(v) {
  const events = {};
  for (const [ev] of EVENTS) events[ev] = { in_app: false, browser: false, email: false, push: false, ...v.events?.[ev] };
  const quiet = v.quiet_hours ? { on: true, ...v.quiet_hours } : { on: false, from: '22:00', to: '07:00', timezone: browserZone() };
  return { events, quiet };
}

export function NotificationSettings() {
  const admin = isAdmin.value;
  const [view, setView] = useState(null); // the server's answer
  const [form, setForm] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [target, setTarget] = useState(null); // admins: { secs, hours (the field's text) }
  const [error, setError] = useState(null); // { text, field }
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let live = true;
    get(SETTINGS_PATH).then((v) => { if (live) { setView(v); setForm(formOf(v)); } }, (e) => live && setLoadError(e.message));
    if (admin) get(WORKSPACE_PATH).then((w) => live && setTarget({ secs: w.response_target_secs, hours: hoursText(w.response_target_secs) }), () => {});
    return () => { live = false; };
  }, [admin]);
  // An error takes the focus to its field (else to Save), next to the message read out.
  useLayoutEffect(() => { if (error) document.getElementById(error.field || 'notif-save')?.focus(); }, [error]);

  const setEvent = (ev, d, on) => setForm((f) => ({ ...f, events: { ...f.events, [ev]: { ...f.events[ev], [d]: on } } }));
  const setQuiet = (key, value) => {
    setForm((f) => ({ ...f, quiet: { ...f.quiet, [key]: value } }));
    if (error?.field?.startsWith('quiet')) setError(null);
  };

  const save = async (e) => {
    e.preventDefault();
    if (busy || !form) return;
    const q = form.quiet;
    if (q.on && (!q.from || !q.to)) { setError({ text: 'Quiet hours need a start and an end.', field: q.from ? 'quiet-to' : 'quiet-from' }); return; }
    if (q.on && !q.timezone.trim()) { setError({ text: 'Choose the time zone of the quiet hours.', field: 'quiet-tz' }); return; }
    let secs = null; // a new response target, when the field changed (its text is rounded)
    if (admin && target && String(target.hours).trim() !== hoursText(target.secs)) {
      const h = Number(String(target.hours).replace(',', '.'));
      secs = Math.round(h * 3600);
      if (!String(target.hours).trim() || !Number.isFinite(h) || secs < 60 || secs > MAX_TARGET) {
        setError({ text: 'The response target is between 1 minute (0.02 h) and 30 days (720 h).', field: 'response-target' });
        return;
      }
    }
    setBusy(true);
    setError(null);
    let step = 'settings';
    try {
      const body = { events: form.events, quiet_hours: q.on ? { from: q.from, to: q.to, timezone: q.timezone.trim() } : null };
      const v = await put(SETTINGS_PATH, body);
      setView(v);
      setForm(formOf(v));
      if (secs !== null) {
        step = 'target';
        const w = await patch(WORKSPACE_PATH, { response_target_secs: secs });
        setTarget({ secs: w.response_target_secs, hours: hoursText(w.response_target_secs) });
      }
      toast('Notification settings saved', 'ok');
    } catch (err) {
      setError({ text: err.message, field: step === 'target' ? 'response-target' : err.code === 'invalid_timezone' ? 'quiet-tz' : null });
    } finally {
      setBusy(false);
    }
  };

  const q = form?.quiet;
  const wantsBrowser = form && EVENTS.some(([ev]) => form.events[ev].browser);
  const invalid = (id) => (error?.field === id ? 'true' : undefined);
  const described = (id, hint) => [hint, error?.field === id ? 'notif-error' : null].filter(Boolean).join(' ') || undefined;
  return (
    <main class="settings" id="settings-main" tabIndex={-1} aria-labelledby="settings-title" data-testid="notification-settings">
      <header class="settings-head">
        <h1 id="settings-title">Notifications</h1>
        <p class="muted">What reaches you, and where. These settings are yours; the bell lists what is kept in the app.</p>
      </header>
      {loadError && <p class="form-error" role="alert">{loadError}</p>}
      {!form && !loadError && <p class="muted" aria-busy="true">Loading…</p>}
      {form && (
        <form class="card settings-card" onSubmit={save} noValidate>
          <h2 id="events-title">Events</h2>
          <div class="table-wrap">
            <table class="table notif-table" aria-labelledby="events-title">
              <thead><tr><th scope="col">Event</th>{DELIVERIES.map(([d, l]) => <th scope="col" key={d}>{l}</th>)}</tr></thead>
              <tbody>
                {EVENTS.map(([ev, label]) => (
                  <tr key={ev}>
                    <th scope="row">{label}</th>
                    {DELIVERIES.map(([d, l]) => {
                      const off = (d === 'email' && !view.email_available) || (d === 'push' && !view.push_available);
                      return (
                        <td key={d}>
                          <input type="checkbox" aria-label={`${l}: ${label}`} checked={!off && form.events[ev][d]} disabled={off}
                            aria-describedby={off ? `${d}-hint` : undefined} data-testid={`notif-${ev}-${d}`}
                            onChange={(e) => setEvent(ev, d, e.currentTarget.checked)} />
                        </td>
                      );
                    })}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {!view.email_available && <p id="email-hint" class="field-hint">Email: no mail relay configured on the server.</p>}
          {!view.push_available && <p id="push-hint" class="field-hint">Push: Web Push is not configured on the server.</p>}
          {wantsBrowser && notificationPermission() !== 'granted' && <p class="field-hint">Browser: allow browser notifications below, else they cannot show.</p>}

          <fieldset class="settings-group">
            <legend>Quiet hours</legend>
            <label class="check">
              <input type="checkbox" checked={q.on} data-testid="quiet-hours" onChange={(e) => setQuiet('on', e.currentTarget.checked)} />
              Quiet hours: no browser notification or push, emails wait for the end (the bell still lists everything)
            </label>
            <div class="quiet-fields">
              <label class="field-inline" for="quiet-from">From
                <input id="quiet-from" type="time" value={q.from} disabled={!q.on} data-testid="quiet-from" aria-invalid={invalid('quiet-from')}
                  aria-describedby={described('quiet-from')} onInput={(e) => setQuiet('from', e.currentTarget.value)} /></label>
              <label class="field-inline" for="quiet-to">To
                <input id="quiet-to" type="time" value={q.to} disabled={!q.on} data-testid="quiet-to" aria-invalid={invalid('quiet-to')}
                  aria-describedby={described('quiet-to')} onInput={(e) => setQuiet('to', e.currentTarget.value)} /></label>
              <label class="field-inline tz" for="quiet-tz">Time zone
                <input id="quiet-tz" list="tz-options" autocomplete="off" spellcheck={false} value={q.timezone} disabled={!q.on} data-testid="quiet-timezone"
                  aria-invalid={invalid('quiet-tz')} aria-describedby={described('quiet-tz')} onInput={(e) => setQuiet('timezone', e.currentTarget.value)} /></label>
              {q.on && <datalist id="tz-options">{zones().map((z) => <option key={z} value={z} />)}</datalist>}
            </div>
          </fieldset>

          {admin && target && (
            <fieldset class="settings-group">
              <legend>Workspace</legend>
              <label class="field-inline target" for="response-target">Response target (hours)
                <input id="response-target" type="number" min="0.02" max="720" step="any" inputMode="decimal" value={target.hours} data-testid="response-target"
                  aria-invalid={invalid('response-target')} aria-describedby={described('response-target', 'response-target-hint')}
                  onInput={(e) => { const hours = e.currentTarget.value; setTarget((t) => ({ ...t, hours })); }} /></label>
              <p id="response-target-hint" class="field-hint">For the whole workspace (admins only): a conversation whose lead waits longer is overdue, the last event above.</p>
            </fieldset>
          )}

          {error && <p id="notif-error" class="form-error" role="alert" data-testid="notification-settings-error">{error.text}</p>}
          <div class="dialog-actions">
            <button type="submit" id="notif-save" class="btn btn-primary" disabled={busy} data-testid="notification-settings-save">{busy ? 'Saving…' : 'Save'}</button>
          </div>
        </form>
      )}
      <section class="card settings-card" aria-labelledby="device-title">
        <h2 id="device-title">This browser</h2>
        <BrowserPermission />
        <PushDevices available={view?.push_available !== false} />
      </section>
    </main>
  );
}

const PERMISSION = {
  granted: 'Allowed: they show while Confab is open in a tab you are not looking at.',
  denied: 'Blocked: allow notifications for this site in the browser’s site settings.',
  default: 'Not allowed yet.',
  unsupported: 'This browser does not show notifications.',
};

// Asks the browser's permission, from this click only (never at load).
function BrowserPermission() {
  const [perm, setPerm] = useState(notificationPermission());
  const ask = () => keepFocus(() => document.getElementById('perm-state'), async () => {
    try { setPerm(await Notification.requestPermission()); } catch { setPerm(notificationPermission()); }
  });
  return (
    <div class="setting-row">
      <div>
        <h3>Browser notifications</h3>
        <p class="field-hint" id="perm-state" tabIndex={-1} data-testid="browser-permission-state" data-state={perm}>{PERMISSION[perm]}</p>
      </div>
      {perm === 'default' && <button type="button" class="btn" aria-describedby="perm-state" data-testid="browser-permission" onClick={ask}>Allow browser notifications</button>}
    </div>
  );
}

// Push services by host, to name a device ("fcm.googleapis.com" is Chrome's).
const VENDOR = { 'fcm.googleapis.com': 'Chrome', 'updates.push.services.mozilla.com': 'Firefox', 'web.push.apple.com': 'Safari' };
const hostOf = (endpoint) => { try { return new URL(endpoint).host; } catch { return endpoint; } };
const deviceName = (endpoint) => {
  const host = hostOf(endpoint);
  const vendor = VENDOR[host] || (host.endsWith('.notify.windows.com') ? 'Edge' : '');
  return vendor ? `${vendor} (${host})` : host;
};

// Web Push to this device (the service worker /sw.js), and the agent's devices that get it.
function PushDevices({ available }) {
  const supported = pushSupported();
  const [data, setData] = useState(null); // { vapid_public_key, items }
  const [endpoint, setEndpoint] = useState(null); // this browser's subscription
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const refresh = async () => {
    const [d, sub] = await Promise.all([loadDevices(), currentSubscription().catch(() => null)]);
    setData(d);
    setEndpoint(sub ? sub.endpoint : null);
  };
  useEffect(() => { refresh().catch((e) => setError(e.message)); }, []);

  const items = data?.items || [];
  const on = !!endpoint && items.some((d) => d.endpoint === endpoint);
  const canPush = supported && available && !!data?.vapid_public_key;
  const run = (work, done) => keepFocus(() => document.getElementById('push-toggle'), async () => {
    setBusy(true);
    setError(null);
    try { await work(); await refresh(); if (done) toast(done, 'ok'); } catch (e) { setError(e.message); } finally { setBusy(false); }
  });
  const toggle = () => (on
    ? run(() => disablePush(items), 'Push to this device is off')
    : run(() => enablePush(data.vapid_public_key), 'Push to this device is on'));
  const state = !supported ? 'This browser cannot receive push: it needs service workers and the Push API, on an HTTPS page.'
    : !available ? 'Web Push is not configured on the server.'
      : on ? 'On: notifications reach this device even when Confab is closed.' : 'Off for this device.';
  return (
    <div class="push">
      <div class="setting-row">
        <div>
          <h3><label for="push-toggle">Push to this device</label></h3>
          <p class="field-hint" id="push-state" data-testid="push-state">{state}</p>
        </div>
        <input id="push-toggle" type="checkbox" role="switch" class="switch" checked={on} disabled={busy || !data || (!canPush && !on)}
          aria-describedby="push-state" data-testid="push-toggle" onChange={toggle} />
      </div>
      {error && <p class="form-error" role="alert" data-testid="push-error">{error}</p>}
      <h3 class="devices-title">Devices that receive push</h3>
      {data && !items.length && <p class="field-hint">None yet.</p>}
      <ul class="devices" data-testid="push-devices">
        {items.map((d) => {
          const name = deviceName(d.endpoint);
          return (
            <li key={d.id} data-testid="push-device" data-id={d.id}>
              <span class="device-name">{name}{d.endpoint === endpoint && <span class="pill">This device</span>}</span>
              <time class="muted" dateTime={d.created_at}>{fullTime(d.created_at)}</time>
              <button type="button" class="icon-btn" title="Remove this device" data-testid="push-device-remove" disabled={busy}
                onClick={() => run(() => removeDevice(d), 'Device removed')}>
                <IconTrash size={14} /><span class="sr-only">Remove {name}, added {fullTime(d.created_at)}</span></button>
            </li>
          );
        })}
      </ul>
    </div>
  );
}
