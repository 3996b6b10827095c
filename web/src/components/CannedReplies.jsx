// Settings → Canned replies (#/settings/canned): the workspace's library of ready answers,
// inserted in the composer with `/` and their shortcut. Any agent adds, edits and deletes
// them; the server checks the shortcut (unique whatever the case) and the variables.

import { useState, useEffect } from 'preact/hooks';
import { post, put, del } from '../api.js';
import { toast, cannedReplies, loadCannedReplies } from '../state.js';
import { IconTrash } from './Icons.jsx';

const PATH = '/api/v1/canned-replies';
const EMPTY = { id: null, title: '', shortcut: '', text: '' };

export function CannedReplies() {
  const items = cannedReplies.value; // the composer's picker reads the same list
  const [loadError, setLoadError] = useState(null);
  const [form, setForm] = useState(EMPTY);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const reload = async () => {
    try { await loadCannedReplies(true); } catch (e) { setLoadError(e.message); }
  };
  useEffect(() => { reload(); }, []);

  const set = (key) => (e) => { setForm({ ...form, [key]: e.currentTarget.value }); setError(null); };
  const save = async (e) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    try {
      const body = { title: form.title, shortcut: form.shortcut.replace(/^\//, ''), text: form.text };
      if (form.id) await put(`${PATH}/${encodeURIComponent(form.id)}`, body);
      else await post(PATH, body);
      toast(form.id ? 'Canned reply saved' : 'Canned reply added', 'ok');
      setForm(EMPTY);
      await reload();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  const remove = async (r) => {
    try {
      await del(`${PATH}/${encodeURIComponent(r.id)}`);
      toast(`/${r.shortcut} deleted`, 'ok');
      if (form.id === r.id) setForm(EMPTY);
      await reload();
    } catch (err) { toast(err.message, 'error'); }
  };

  return (
    <main class="settings" id="settings-main" tabIndex={-1} aria-labelledby="settings-title" data-testid="canned-settings">
      <header class="settings-head">
        <h1 id="settings-title">Canned replies</h1>
        <p class="muted">Ready answers for the whole team. In the composer, type <kbd>/</kbd> and a shortcut to insert one; variables such as {'{{first_name}}'} are filled when it is sent.</p>
      </header>
      <form class="card settings-card" onSubmit={save} noValidate aria-labelledby="canned-form-title">
        <h2 id="canned-form-title">{form.id ? `Edit /${items?.find((r) => r.id === form.id)?.shortcut || form.shortcut}` : 'New canned reply'}</h2>
        <label class="field-inline canned-field"><span>Title</span>
          <input type="text" value={form.title} maxLength={200} required data-testid="canned-title" onInput={set('title')} /></label>
        <label class="field-inline canned-field"><span>Shortcut</span>
          <input type="text" value={form.shortcut} maxLength={41} required placeholder="price" data-testid="canned-shortcut" onInput={set('shortcut')} /></label>
        <label class="field-inline canned-field"><span>Text</span>
          <textarea rows={4} value={form.text} maxLength={4096} required data-testid="canned-text" onInput={set('text')} /></label>
        {error && <p class="form-error" role="alert" data-testid="canned-error">{error}</p>}
        <div class="canned-actions">
          <button type="submit" class="btn btn-primary" disabled={busy} data-testid="canned-save">{form.id ? 'Save' : 'Add'}</button>
          {form.id && <button type="button" class="btn" onClick={() => { setForm(EMPTY); setError(null); }}>Cancel</button>}
        </div>
      </form>
      <section class="card settings-card" aria-labelledby="canned-list-title">
        <h2 id="canned-list-title">Library</h2>
        {loadError && <p class="form-error" role="alert">{loadError}</p>}
        {!items && !loadError && <p class="muted" aria-busy="true">Loading…</p>}
        {items && items.length === 0 && <p class="muted">No canned replies yet.</p>}
        {items && items.length > 0 && (
          <ul class="canned-items">
            {items.map((r) => (
              <li key={r.id} data-testid="canned-item" data-shortcut={r.shortcut}>
                <div class="canned-main">
                  <strong>/{r.shortcut}</strong> <span class="muted">{r.title}</span>
                  <div class="canned-text">{r.text}</div>
                </div>
                <button type="button" class="btn btn-quiet" data-testid="canned-edit"
                  onClick={() => { setForm({ id: r.id, title: r.title, shortcut: r.shortcut, text: r.text }); setError(null); }}>Edit</button>
                <button type="button" class="icon-btn" aria-label={`Delete /${r.shortcut}`} title={`Delete /${r.shortcut}`} data-testid="canned-delete"
                  onClick={() => remove(r)}><IconTrash size={14} /></button>
              </li>
            ))}
          </ul>
        )}
      </section>
    </main>
  );
}
