import { useState, useRef, useEffect, useLayoutEffect } from 'preact/hooks';
import { agents, sendMessage, me } from '../state.js';
import { IconSend, IconBraces, IconNote, IconClock, IconAlert, IconSparkle } from './Icons.jsx';
import { VARIABLES, hoursLeft, fullTime } from '../util.js';
import { tabKeys, menuKeys } from '../focus.js';

// A composer per conversation keeps its draft while the agent looks elsewhere.
const drafts = new Map();

export function Composer({ c }) {
  const [mode, setMode] = useState('reply');
  const [text, setText] = useState(drafts.get(c.id) || '');
  const [error, setError] = useState(null);
  const [sending, setSending] = useState(false);
  const [picker, setPicker] = useState(false);
  const [mention, setMention] = useState(null); // { start, query, index }
  const ta = useRef(null);
  const pickerBtn = useRef(null);
  const varMenu = useRef(null);
  const caret = useRef(null); // where the caret goes once an insertion has rendered
  useLayoutEffect(() => {
    const el = ta.current;
    if (el && caret.current !== null) { el.focus(); el.selectionStart = el.selectionEnd = caret.current; caret.current = null; }
  }, [text]);

  useEffect(() => { setText(drafts.get(c.id) || ''); setError(null); setMention(null); setMode('reply'); }, [c.id]);
  useEffect(() => { drafts.set(c.id, text); autosize(); }, [text]);

  // The variables menu: the focus moves to its first item; Esc or Tab close it (focus back
  // on its button), and so does a click elsewhere.
  useLayoutEffect(() => {
    if (!picker) return undefined;
    varMenu.current?.querySelector('[role=menuitem]')?.focus();
    const onDoc = (e) => { if (varMenu.current && !varMenu.current.parentNode.contains(e.target)) setPicker(false); };
    document.addEventListener('mousedown', onDoc);
    return () => document.removeEventListener('mousedown', onDoc);
  }, [picker]);
  const closePicker = () => { setPicker(false); pickerBtn.current?.focus(); };

  const autosize = () => {
    const el = ta.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(200, el.scrollHeight)}px`;
  };

  const note = mode === 'note';
  const windowState = useReplyWindow(c.reply_window);
  const windowClosed = !note && windowState === 'closed';
  const canSend = text.trim() && !sending && !windowClosed;

  const insert = (snippet) => {
    const el = ta.current;
    const start = el ? el.selectionStart : text.length;
    const end = el ? el.selectionEnd : text.length;
    const next = text.slice(0, start) + snippet + text.slice(end);
    caret.current = start + snippet.length;
    setText(next);
  };

  const send = async () => {
    if (!canSend) return;
    setSending(true);
    setError(null);
    try {
      await sendMessage(c.id, text.trim(), note);
      setText('');
      drafts.delete(c.id);
    } catch (e) {
      setError(e.message);
    } finally {
      setSending(false);
      ta.current?.focus();
    }
  };

  const candidates = mention ? agents.value.filter((a) => {
    const q = mention.query.toLowerCase();
    return a.name.toLowerCase().includes(q) || a.email.toLowerCase().startsWith(q);
  }).slice(0, 6) : [];

  const updateMention = (value, at) => {
    if (!note) { setMention(null); return; }
    const before = value.slice(0, at);
    const m = /(^|\s)@([\p{L}\p{N}._-]*(?: [\p{L}\p{N}._-]*)?)$/u.exec(before);
    if (m && m[2].length <= 30) setMention({ start: at - m[2].length - 1, query: m[2], index: 0 });
    else setMention(null);
  };

  const pickMention = (agent) => {
    const el = ta.current;
    const at = el ? el.selectionStart : text.length;
    const next = text.slice(0, mention.start) + '@' + agent.name + ' ' + text.slice(at);
    caret.current = mention.start + agent.name.length + 2;
    setText(next);
    setMention(null);
  };

  const onKeyDown = (e) => {
    if (mention && candidates.length) {
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        const d = e.key === 'ArrowDown' ? 1 : -1;
        setMention({ ...mention, index: (mention.index + d + candidates.length) % candidates.length });
        return;
      }
      if (e.key === 'Enter' || e.key === 'Tab') { e.preventDefault(); pickMention(candidates[mention.index]); return; }
      if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); setMention(null); return; }
    }
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    if (e.key === 'Escape') { e.currentTarget.blur(); }
  };

  return (
    <section class={`composer-wrap${note ? ' is-note' : ''}`} aria-label="Composer">
      {!note && windowState && <ReplyWindow c={c} state={windowState} />}
      {c.ai_mode === 'active' && !note && (
        <div class="ai-hint"><IconSparkle size={12} />The AI is answering this conversation. Sending a reply takes it over (the AI pauses).</div>
      )}
      <div class="composer" data-testid="composer">
        <div class="composer-tabs" role="tablist" aria-label="Message type" onKeyDown={tabKeys}>
          <button type="button" role="tab" aria-selected={!note ? 'true' : 'false'} tabIndex={note ? -1 : 0} aria-controls="composer-text" class={!note ? 'on' : ''} data-testid="composer-mode-reply"
            onClick={() => { setMode('reply'); setMention(null); }}>Reply</button>
          <button type="button" role="tab" aria-selected={note ? 'true' : 'false'} tabIndex={note ? 0 : -1} aria-controls="composer-text" class={note ? 'on' : ''} data-testid="composer-mode-note"
            onClick={() => setMode('note')}><IconNote size={12} />Internal note</button>
        </div>
        <div class="composer-box">
          <label for="composer-text" class="sr-only">{note ? 'Internal note' : 'Reply'}</label>
          <textarea id="composer-text" ref={ta} rows={2} value={text} data-testid="composer-input"
            placeholder={note ? 'Write a note for your team. Type @ to mention someone.' : windowClosed ? 'The reply window is closed.' : replyPlaceholder(c)}
            aria-invalid={error ? 'true' : 'false'} aria-describedby={error ? 'composer-error' : undefined}
            aria-autocomplete={note ? 'list' : undefined} aria-controls={mention && candidates.length ? 'mention-list' : undefined}
            aria-activedescendant={mention && candidates.length ? `mention-${mention.index}` : undefined}
            onInput={(e) => { setText(e.currentTarget.value); setError(null); updateMention(e.currentTarget.value, e.currentTarget.selectionStart); }}
            onKeyDown={onKeyDown} />
          {mention && candidates.length > 0 && (
            <ul class="popover mention-pop" id="mention-list" role="listbox" aria-label="Mention a teammate" data-testid="mention-list">
              {candidates.map((a, i) => (
                <li key={a.id} id={`mention-${i}`} role="option" aria-selected={i === mention.index ? 'true' : 'false'} class={i === mention.index ? 'active' : ''}
                  data-testid="mention-option" onMouseDown={(e) => { e.preventDefault(); pickMention(a); }}>
                  <strong>{a.name}</strong> <span class="muted">{a.email}</span>{a.id === me.value?.agent?.id && <span class="muted"> (you)</span>}
                </li>
              ))}
            </ul>
          )}
          <div class="composer-bar">
            <div class="var-wrap">
              <button type="button" class="icon-btn" title="Insert a variable" aria-haspopup="menu" aria-expanded={picker ? 'true' : 'false'}
                aria-controls={picker ? 'variable-menu' : undefined} ref={pickerBtn}
                data-testid="variable-picker" onClick={() => setPicker(!picker)}><IconBraces size={15} /><span class="var-label">Variables</span></button>
              {picker && (
                <ul class="popover var-pop" id="variable-menu" role="menu" aria-label="Variables" data-testid="variable-menu" ref={varMenu} onKeyDown={(e) => menuKeys(e, closePicker)}>
                  {VARIABLES.map((v) => (
                    <li key={v.name} role="none">
                      <button type="button" role="menuitem" data-testid={`variable-${v.name}`} onClick={() => { insert(`{{${v.name}}}`); setPicker(false); }}>
                        <code>{`{{${v.name}}}`}</code><span class="muted">{v.label}</span>
                      </button>
                    </li>
                  ))}
                </ul>
              )}
            </div>
            <span class="composer-hint muted">{note ? 'Notes never reach the lead' : ''}</span>
            <button type="button" class={`btn ${note ? 'btn-note' : 'btn-primary'}`} disabled={!canSend} data-testid="composer-send" onClick={send}>
              <IconSend size={14} />{sending ? 'Sending…' : note ? 'Add note' : 'Send'}
            </button>
          </div>
        </div>
        {error && <p id="composer-error" class="composer-error" role="alert" data-testid="composer-error"><IconAlert size={13} />{error}</p>}
      </div>
    </section>
  );
}

// Email has no reply window (no `reply_window` on its card): the reply goes out as a mail.
function replyPlaceholder(c) {
  const keys = '(Enter to send, Shift+Enter for a new line)';
  if (c.channel === 'email') return c.contact?.email ? `Reply by email to ${c.contact.email} ${keys}` : `Reply by email ${keys}`;
  return `Reply to the lead ${keys}`;
}

const HOUR = 3_600_000;
const MAX_TIMEOUT = 2 ** 31 - 1; // setTimeout's longest wait

// The reply window's state now: null (the channel has none, or an older server sent no
// window), 'open', 'closing' (under 3 h left) or 'closed'. The card's window is
// { closes_at } (null: the lead never wrote), the detail's { open, closes_at }: open is
// computed from closes_at for both, and re-evaluated at closes_at (and every 30 s while
// open, for the time left and after a sleep), so the banner closes without a reload.
function useReplyWindow(w) {
  const [, force] = useState(0);
  const closesAt = w && w.closes_at ? Date.parse(w.closes_at) : NaN;
  const now = Date.now();
  const open = closesAt > now;
  useEffect(() => {
    if (!open) return undefined;
    const tick = () => force((n) => n + 1);
    const every = setInterval(tick, 30_000);
    const at = setTimeout(tick, Math.min(MAX_TIMEOUT, Math.max(0, closesAt - Date.now()) + 25));
    return () => { clearInterval(every); clearTimeout(at); };
  }, [open, closesAt]);
  if (!w) return null;
  if (!open) return 'closed';
  return closesAt - now < 3 * HOUR ? 'closing' : 'open';
}

function ReplyWindow({ c, state }) {
  const closesAt = c.reply_window.closes_at;
  const what = c.channel === 'whatsapp' ? 'The 24-hour WhatsApp window' : 'The reply window';
  if (state === 'closed') {
    return (
      <div class="window window-closed" data-testid="reply-window" data-state="closed" role="status">
        <IconAlert size={13} />
        {closesAt
          ? `${what} closed ${fullTime(closesAt)}. Only a template message can be sent until the lead writes again; notes still work.`
          : `${what} is closed: the lead has not written yet. Only a template message can be sent until they do; notes still work.`}
      </div>
    );
  }
  const left = hoursLeft(closesAt);
  return (
    <div class={`window${state === 'closing' ? ' window-soon' : ''}`} data-testid="reply-window" data-state={state} role="status">
      <IconClock size={13} />Reply window open · closes in {left || 'a moment'} ({fullTime(closesAt)})
    </div>
  );
}
