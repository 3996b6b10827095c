// "New conversation": write first to a lead on a channel that can (LinkedIn), from a modal
// dialog (Tab stays in it, Esc closes it, the focus returns to the button).

import { useState, useRef, useLayoutEffect } from 'preact/hooks';
import { channels, startConversation, openConversation, toast } from '../state.js';
import { IconPlus, IconX, IconSend } from './Icons.jsx';
import { trapTab } from '../focus.js';

// Channels whose provider lets us open a chat with a member.
const canStart = (ch) => ch.kind === 'linkedin';

// What the agent typed, kept when the dialog closes without sending (a click outside, Esc).
let draft = null;

export function NewConversation() {
  const [open, setOpen] = useState(false);
  const list = channels.value.filter(canStart);
  if (!list.length) return null; // no channel of the workspace can write first
  return (
    <>
      <button type="button" class="icon-btn" title="New conversation (LinkedIn)" aria-haspopup="dialog" data-testid="new-conversation"
        onClick={() => setOpen(true)}><IconPlus size={16} /><span class="sr-only">New conversation</span></button>
      {open && <NewConversationDialog list={list} onClose={() => setOpen(false)} />}
    </>
  );
}

const TEXT_CODES = new Set(['empty_text', 'text_too_long', 'unknown_variable', 'variable_without_value']);
const FIELD_ID = { channel: 'nc-channel', member: 'nc-member', name: 'nc-name', text: 'nc-text' };

// The field a server error is about, if any (its message names the JSON field).
function errorField(e) {
  if (TEXT_CODES.has(e.code)) return 'text';
  if (e.status === 404 || e.code === 'cannot_start_conversation') return 'channel';
  if (/provider_id/.test(e.message)) return 'member';
  if (/to\.name/.test(e.message)) return 'name';
  if (/`text`/.test(e.message)) return 'text';
  return null;
}

function NewConversationDialog({ list, onClose }) {
  const ref = useRef(null);
  const first = list.find((ch) => ch.status === 'connected') || list[0];
  const saved = draft && list.some((ch) => ch.id === draft.channelId) ? draft : null;
  const [form, setForm] = useState(saved || { channelId: first.id, member: '', name: '', text: '' });
  const [error, setError] = useState(null); // { text, field }
  const [busy, setBusy] = useState(false);
  const sent = useRef(false);
  const set = (key) => (e) => { const v = e.currentTarget.value; setForm((f) => ({ ...f, [key]: v })); if (error?.field === key) setError(null); };

  useLayoutEffect(() => {
    const prev = document.activeElement;
    document.getElementById(FIELD_ID.member)?.focus();
    // Modal: Tab stays in the dialog; Esc closes it and the focus returns to where it was.
    const onKey = (e) => {
      if (e.key === 'Escape') { e.preventDefault(); onClose(); return; }
      trapTab(e, ref.current);
    };
    addEventListener('keydown', onKey, true);
    return () => { removeEventListener('keydown', onKey, true); prev?.focus?.(); };
  }, []);
  useLayoutEffect(() => { if (!sent.current) draft = form; }, [form]);
  // An error takes the focus to its field (else to Send), next to the message read out.
  useLayoutEffect(() => { if (error) document.getElementById(FIELD_ID[error.field] || 'nc-send')?.focus(); }, [error]);

  const submit = async (e) => {
    e.preventDefault();
    if (busy) return;
    const member = form.member.trim();
    const text = form.text.trim();
    if (!member) { setError({ text: 'Enter the lead’s LinkedIn member id.', field: 'member' }); return; }
    if (!text) { setError({ text: 'Write the first message.', field: 'text' }); return; }
    const to = { provider_id: member };
    if (form.name.trim()) to.name = form.name.trim();
    setBusy(true);
    setError(null);
    try {
      const res = await startConversation(form.channelId, to, text);
      sent.current = true;
      draft = null;
      toast(res.created ? 'Conversation started' : 'The lead already had a conversation on this channel: the message went there', 'ok');
      openConversation(res.conversation.id);
      onClose();
    } catch (err) {
      setBusy(false);
      setError({ text: err.message, field: errorField(err) });
    }
  };

  const invalid = (key) => (error?.field === key ? 'true' : 'false');
  const described = (key, hint) => [hint, error?.field === key ? 'nc-error' : null].filter(Boolean).join(' ') || undefined;
  return (
    <div class="overlay" onMouseDown={(e) => { if (e.target === e.currentTarget) onClose(); }}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="nc-title" aria-describedby="nc-intro" tabIndex={-1} ref={ref} data-testid="new-conversation-dialog">
        <header><h2 id="nc-title">New conversation</h2>
          <button type="button" class="icon-btn" title="Close (Esc)" onClick={onClose}><IconX size={16} /><span class="sr-only">Close</span></button></header>
        <p id="nc-intro" class="dialog-intro">Write first to a lead on LinkedIn. If the channel already has a conversation with them, the message goes there.</p>
        <form class="nc-form" onSubmit={submit} noValidate data-testid="new-conversation-form">
          <label for="nc-channel">Channel</label>
          <select id="nc-channel" value={form.channelId} data-testid="new-conversation-channel" aria-invalid={invalid('channel')} aria-describedby={described('channel')}
            onChange={set('channelId')}>
            {list.map((ch) => <option key={ch.id} value={ch.id}>{ch.name}{ch.status !== 'connected' ? ` (${ch.status.replace('_', ' ')})` : ''}</option>)}
          </select>
          <label for="nc-member">LinkedIn member id</label>
          <input id="nc-member" type="text" autocomplete="off" spellcheck={false} placeholder="ACoAA…" aria-required="true" value={form.member}
            data-testid="new-conversation-member" aria-invalid={invalid('member')} aria-describedby={described('member', 'nc-member-hint')} onInput={set('member')} />
          <p id="nc-member-hint" class="field-hint">The member’s provider id (it starts with ACoAA), not a profile URL.</p>
          <label for="nc-name">Name <span class="field-hint">(optional)</span></label>
          <input id="nc-name" type="text" autocomplete="off" maxLength={200} value={form.name}
            data-testid="new-conversation-name" aria-invalid={invalid('name')} aria-describedby={described('name')} onInput={set('name')} />
          <label for="nc-text">Message</label>
          <textarea id="nc-text" rows={4} aria-required="true" value={form.text} placeholder="Your first message (Ctrl+Enter to send)"
            data-testid="new-conversation-text" aria-invalid={invalid('text')} aria-describedby={described('text')} onInput={set('text')}
            onKeyDown={(e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) submit(e); }} />
          {error && <p id="nc-error" class="form-error" role="alert" data-testid="new-conversation-error">{error.text}</p>}
          <div class="dialog-actions">
            <button type="button" class="btn" data-testid="new-conversation-cancel" onClick={onClose}>Cancel</button>
            <button type="submit" id="nc-send" class="btn btn-primary" disabled={busy} data-testid="new-conversation-send">
              <IconSend size={14} />{busy ? 'Sending…' : 'Send'}</button>
          </div>
        </form>
      </div>
    </div>
  );
}
