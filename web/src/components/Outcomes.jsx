// Settings → Lead outcomes (#/settings/outcomes): the workspace's outcome labels, one per
// line, with how many conversations have each. Admins edit them; the server checks them
// (trimmed, 1 to 40 characters, each once whatever the case, at most 30).

import { useState, useEffect } from 'preact/hooks';
import { me, outcomes, loadOutcomes, saveOutcomes, toast } from '../state.js';

export function Outcomes() {
  const admin = me.value?.agent?.role === 'admin';
  const items = outcomes.value;
  const [text, setText] = useState(null); // null: not edited, shows the stored list
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { loadOutcomes(); }, []);
  const shown = text ?? items.map((o) => o.name).join('\n');
  const save = async (e) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    try {
      await saveOutcomes(shown.split('\n').map((l) => l.trim()).filter(Boolean));
      setText(null);
      setError(null);
      toast('Outcomes saved', 'ok');
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="settings" id="settings-main" tabIndex={-1} aria-labelledby="settings-title" data-testid="outcome-settings">
      <header class="settings-head">
        <h1 id="settings-title">Lead outcomes</h1>
        <p class="muted">What became of each lead: set in a conversation's details (or for many at once), suggested by the AI agent from the lead's words, and counted by campaign in Analytics.</p>
      </header>
      <section class="card settings-card" aria-labelledby="outcome-list-title">
        <h2 id="outcome-list-title">In use</h2>
        <ul class="outcome-counts">
          {items.map((o) => <li key={o.name} data-testid="outcome-item"><span>{o.name}</span><span class="muted">{o.count} conversation{o.count === 1 ? '' : 's'}</span></li>)}
        </ul>
      </section>
      {admin ? (
        <form class="card settings-card" onSubmit={save} noValidate aria-labelledby="outcome-form-title">
          <h2 id="outcome-form-title">Edit the list</h2>
          <label class="field-inline canned-field"><span>One outcome per line, in the order agents see them</span>
            <textarea rows={8} value={shown} data-testid="outcome-text" onInput={(e) => { setText(e.currentTarget.value); setError(null); }} /></label>
          {error && <p class="form-error" role="alert" data-testid="outcome-error">{error}</p>}
          <div class="canned-actions">
            <button type="submit" class="btn btn-primary" disabled={busy} data-testid="outcome-save">Save</button>
            {text !== null && <button type="button" class="btn" onClick={() => { setText(null); setError(null); }}>Cancel</button>}
          </div>
          <p class="muted">A conversation keeps an outcome you remove from the list.</p>
        </form>
      ) : <p class="muted pad">Only workspace admins change the list.</p>}
    </main>
  );
}
