// Settings → Webhooks (#/settings/webhooks): the workspace's outgoing webhooks. Admins
// register URLs that receive its changes (signed, in order, retried), see how each is
// doing (behind by how many changes, failing since when, disabled and why), enable a
// disabled one again, and remove them. Agents see the page without its controls: the
// server answers them 403.

import { useState, useEffect, useRef } from 'preact/hooks';
import { me, toast } from '../state.js';
import { get, post, patch, del } from '../api.js';
import { fullTime } from '../util.js';

const KINDS = [
  ['conversation_created', 'Conversation created'],
  ['conversation_updated', 'Conversation updated'],
  ['conversation_removed', 'Conversation erased'],
  ['message_created', 'Message created'],
  ['message_updated', 'Message updated'],
  ['messages_removed', 'Messages removed'],
  ['channel_updated', 'Channel updated'],
];
const KIND_LABEL = Object.fromEntries(KINDS);

export function Webhooks() {
  const admin = me.value?.agent?.role === 'admin';
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  const [url, setUrl] = useState('');
  const [kinds, setKinds] = useState([]);
  const [secret, setSecret] = useState(null); // { url, secret }: shown once, after creation
  const [busy, setBusy] = useState(false);
  const [removing, setRemoving] = useState(null); // the id whose Remove awaits its confirmation
  const loads = useRef(0);

  // The newest read wins: a poll that left before an action's reload cannot show the state
  // from before the action.
  const load = async () => {
    const n = ++loads.current;
    try {
      const list = (await get('/api/v1/webhooks')).items;
      if (n === loads.current) { setItems(list); setError(null); }
    } catch (e) { if (n === loads.current) setError(e.message); }
  };
  // Kept current while the page is open: deliveries move on, failures disable endpoints.
  useEffect(() => {
    if (!admin) return undefined;
    load();
    const every = setInterval(() => { if (!document.hidden) load(); }, 3000);
    return () => clearInterval(every);
  }, [admin]);

  const act = async (what, ok) => {
    if (busy) return;
    setBusy(true);
    try { await what(); if (ok) toast(ok, 'ok'); await load(); } catch (e) { toast(e.message, 'error'); } finally { setBusy(false); }
  };
  const create = (e) => {
    e.preventDefault();
    act(async () => {
      const made = await post('/api/v1/webhooks', { url: url.trim(), kinds });
      setSecret({ url: made.url, secret: made.secret });
      setUrl('');
      setKinds([]);
    }, 'Webhook added');
  };
  const toggleKind = (k) => setKinds(kinds.includes(k) ? kinds.filter((x) => x !== k) : [...kinds, k]);

  if (!admin) {
    return (
      <main class="settings" id="settings-main" tabIndex={-1} aria-labelledby="settings-title" data-testid="webhook-settings">
        <header class="settings-head"><h1 id="settings-title">Webhooks</h1></header>
        <p class="muted pad">Only workspace admins manage the workspace's webhooks.</p>
      </main>
    );
  }
  return (
    <main class="settings" id="settings-main" tabIndex={-1} aria-labelledby="settings-title" data-testid="webhook-settings">
      <header class="settings-head">
        <h1 id="settings-title">Webhooks</h1>
        <p class="muted">Each change of the kinds you pick is POSTed to the URL as the stream's JSON, signed with HMAC-SHA256 (<code>X-Confab-Signature</code>), with its offset as a stable id (<code>X-Confab-Delivery</code>), in order; a failure is retried, and an endpoint that keeps failing (an hour, by default) is disabled until you enable it again.</p>
      </header>
      {secret && (
        <section class="card settings-card" role="status" data-testid="webhook-secret">
          <h2>Signing secret for {secret.url}</h2>
          <p>Copy it now: it is not shown again.</p>
          <p><code class="secret">{secret.secret}</code></p>
          <button type="button" class="btn" onClick={() => setSecret(null)}>Done</button>
        </section>
      )}
      <section class="card settings-card" aria-labelledby="webhook-list-title">
        <h2 id="webhook-list-title">Endpoints</h2>
        {error && <p class="form-error" role="alert">{error}</p>}
        {items && items.length === 0 && <p class="muted">None yet.</p>}
        {items && items.length > 0 && (
          <ul class="webhook-list">
            {items.map((w) => (
              <li key={w.id} data-testid="webhook-item" data-enabled={w.enabled ? 'true' : 'false'}>
                <div class="webhook-url">{w.url}</div>
                <div class="muted">{w.kinds.length ? w.kinds.map((k) => KIND_LABEL[k] || k).join(', ') : 'All changes'}</div>
                <div class="webhook-state">
                  {w.enabled
                    ? <span class="webhook-status ok" data-testid="webhook-state">{w.behind > 0 ? `Delivering · ${w.behind} behind` : 'Up to date'}</span>
                    : <span class="webhook-status off" data-testid="webhook-state">Disabled{w.disabled_at ? ` ${fullTime(w.disabled_at)}` : ''}{w.disabled_reason ? `: ${w.disabled_reason}` : ''}</span>}
                  {w.enabled && w.failures > 0 && <span class="form-error">Failing ({w.failures} tries){w.last_error ? `: ${w.last_error}` : ''}</span>}
                  {w.last_delivered_at && <span class="muted">Last delivered {fullTime(w.last_delivered_at)}</span>}
                </div>
                <div class="canned-actions">
                  {w.enabled
                    ? <button type="button" class="btn" disabled={busy} data-testid="webhook-disable" onClick={() => act(() => patch(`/api/v1/webhooks/${w.id}`, { enabled: false }), 'Webhook disabled')}>Disable</button>
                    : <button type="button" class="btn btn-primary" disabled={busy} data-testid="webhook-enable" onClick={() => act(() => patch(`/api/v1/webhooks/${w.id}`, { enabled: true }), 'Webhook enabled: it resumes where it stopped')}>Enable</button>}
                  {removing === w.id
                    ? <>
                        <button type="button" class="btn btn-danger" disabled={busy} data-testid="webhook-delete-confirm" onClick={() => act(() => del(`/api/v1/webhooks/${w.id}`), 'Webhook removed')}>Remove for good</button>
                        <button type="button" class="btn" onClick={() => setRemoving(null)}>Keep</button>
                      </>
                    : <button type="button" class="btn" disabled={busy} data-testid="webhook-delete" onClick={() => setRemoving(w.id)}>Remove</button>}
                </div>
              </li>
            ))}
          </ul>
        )}
      </section>
      <form class="card settings-card" onSubmit={create} noValidate aria-labelledby="webhook-form-title">
        <h2 id="webhook-form-title">Add an endpoint</h2>
        <label class="field-inline canned-field"><span>URL</span>
          <input type="url" value={url} placeholder="https://example.com/confab" data-testid="webhook-url" onInput={(e) => setUrl(e.currentTarget.value)} /></label>
        <fieldset class="webhook-kinds">
          <legend class="muted">Changes to send (none picked: all of them)</legend>
          {KINDS.map(([k, label]) => (
            <label key={k} class="check"><input type="checkbox" checked={kinds.includes(k)} onChange={() => toggleKind(k)} data-testid={`webhook-kind-${k}`} /> {label}</label>
          ))}
        </fieldset>
        <div class="canned-actions">
          <button type="submit" class="btn btn-primary" disabled={busy || !url.trim()} data-testid="webhook-add">Add</button>
        </div>
      </form>
    </main>
  );
}
