import { useState, useRef, useEffect, useLayoutEffect } from 'preact/hooks';
import { agents, sendMessage, me, loadCannedReplies, matchCanned, isMerged, threadLabel } from '../state.js';
import { IconSend, IconBraces, IconNote, IconClock, IconAlert, IconSparkle, IconPaperclip, IconFile, IconX } from './Icons.jsx';
import { VARIABLES, hoursLeft, fullTime, fileSize, CHANNEL_LABEL } from '../util.js';
import { tabKeys, menuKeys } from '../focus.js';

// A composer per conversation keeps its draft (and its picked files) while the agent looks
// elsewhere.
const drafts = new Map();
const pendingFiles = new Map(); // conversation id → [{ key, file, name, size, type }]
let fileKey = 0;

// The server takes at most 10 files, and a JSON body under 4 MiB (max_body_bytes): base64
// grows the bytes by 4/3, so 2.9 MiB of files (shown as "2.9 MB", the units of fileSize)
// leaves room for the text and the rest of the body.
const MAX_FILES = 10;
const MAX_FILE_BYTES = Math.round(2.9 * 1024 * 1024);
const MAX_BODY_BYTES = 4 * 1024 * 1024;

// The thread a reply goes to: the conversation itself, or one merged into it (its own
// channel and reply window, the same lead).
function replyThread(c, via) {
  const m = via !== c.id && (c.merged || []).find((t) => t.id === via);
  return m ? { ...c, id: m.id, channel: m.channel, channel_id: m.channel_id, reply_window: m.reply_window } : c;
}

export function Composer({ c }) {
  const [mode, setMode] = useState('reply');
  const [via, setVia] = useState(c.id);
  const [text, setText] = useState(drafts.get(c.id) || '');
  const [error, setError] = useState(null);
  const [sending, setSending] = useState(false);
  const [picker, setPicker] = useState(false);
  const [mention, setMention] = useState(null); // { start, query, index }
  const [slash, setSlash] = useState(null); // the `/` picker of canned replies: { start, query, index }
  const [files, setFilesState] = useState(() => pendingFiles.get(c.id) || []);
  const ta = useRef(null);
  const fileInput = useRef(null);
  const attachBtn = useRef(null);
  const fileList = useRef(null);
  const focusChip = useRef(null); // after a removal: the index of the chip whose × takes the focus
  const convId = useRef(c.id);
  convId.current = c.id;
  const pickerBtn = useRef(null);
  const varMenu = useRef(null);
  const caret = useRef(null); // where the caret goes once an insertion has rendered
  useLayoutEffect(() => {
    const el = ta.current;
    if (el && caret.current !== null) { el.focus(); el.selectionStart = el.selectionEnd = caret.current; caret.current = null; }
  }, [text]);

  useEffect(() => { setText(drafts.get(c.id) || ''); setFilesState(pendingFiles.get(c.id) || []); setError(null); setMention(null); setSlash(null); setMode('reply'); setVia(c.id); }, [c.id]);
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

  // A removed chip leaves the focus on the next chip's × (else the previous one's, else the
  // attach button or the text).
  useLayoutEffect(() => {
    if (focusChip.current === null) return;
    const i = focusChip.current;
    focusChip.current = null;
    const buttons = fileList.current ? [...fileList.current.querySelectorAll('[data-testid=attachment-remove]')] : [];
    (buttons[Math.min(i, buttons.length - 1)] || attachBtn.current || ta.current)?.focus();
  }, [files]);

  const autosize = () => {
    const el = ta.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(200, el.scrollHeight)}px`;
  };

  const note = mode === 'note';
  const t = replyThread(c, via);
  const windowState = useReplyWindow(t.reply_window);
  const windowClosed = !note && windowState === 'closed';
  // Files go out with replies on email only; notes keep them on every channel.
  const email = t.channel === 'email';
  const canAttach = note || email;
  const filesBlocked = !note && !email && files.length > 0;
  const canSend = text.trim() && !sending && !windowClosed && !filesBlocked;
  const channelName = CHANNEL_LABEL[t.channel] || t.channel || 'this channel';

  const setFiles = (next) => {
    setFilesState(next);
    if (next.length) pendingFiles.set(c.id, next);
    else pendingFiles.delete(c.id);
  };

  // Picked files join the chips while they fit the limits; the others are named in the error.
  const addFiles = (picked) => {
    const next = files.slice();
    let total = next.reduce((n, f) => n + f.size, 0);
    const tooMany = [];
    const tooBig = [];
    for (const file of picked) {
      if (next.some((f) => f.name === file.name && f.size === file.size && f.file.lastModified === file.lastModified)) continue; // picked again
      if (next.length >= MAX_FILES) { tooMany.push(file.name); continue; }
      if (total + file.size > MAX_FILE_BYTES) { tooBig.push(file.name); continue; }
      next.push({ key: ++fileKey, file, name: file.name, size: file.size, type: file.type });
      total += file.size;
    }
    if (next.length !== files.length) setFiles(next);
    const problems = [];
    if (tooMany.length) problems.push(`At most ${MAX_FILES} files per message: ${names(tooMany)} not attached.`);
    if (tooBig.length) problems.push(`Files can total at most ${fileSize(MAX_FILE_BYTES)} per message: ${names(tooBig)} not attached.`);
    setError(problems.length ? problems.join(' ') : null);
  };

  const removeFile = (i) => {
    focusChip.current = i;
    setFiles(files.filter((_, j) => j !== i));
    setError(null);
  };

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
    const id = c.id;
    const body = text.trim();
    const sent = files;
    const total = sent.reduce((n, f) => n + f.size, 0);
    if (sent.length > MAX_FILES) { setError(`At most ${MAX_FILES} files per message: remove ${sent.length - MAX_FILES}.`); return; }
    if (total > MAX_FILE_BYTES) { setError(`Files can total at most ${fileSize(MAX_FILE_BYTES)} per message (these are ${fileSize(total)}): remove some.`); return; }
    setSending(true);
    setError(null);
    try {
      let attachments;
      if (sent.length) {
        attachments = await Promise.all(sent.map(async (f) => {
          const a = { name: f.name, data: await readBase64(f.file) };
          if (f.type) a.content_type = f.type;
          return a;
        }));
        if (jsonBytes({ text: body, internal: note, attachments }) >= MAX_BODY_BYTES) {
          throw new Error('The message is too large to send: text and files must stay under 4 MB in all. Remove a file.');
        }
      }
      // A note stays with the conversation; a reply goes out on the picked thread.
      await sendMessage(note ? id : t.id, body, note, attachments);
      drafts.delete(id);
      pendingFiles.delete(id);
      if (convId.current === id) { setText(''); setFilesState([]); }
    } catch (e) {
      setError(e.code === 'payload_too_large' || e.status === 413
        ? 'The message is too large for the server: text and files must stay under 4 MB in all. Remove a file and try again.'
        : e.message);
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

  // `/word` at the caret (at the start or after a space) opens the canned replies matching
  // it; picking one puts its text in place of `/word` (its variables are filled when sent).
  const matches = slash ? matchCanned(slash.query).slice(0, 8) : [];
  const updateSlash = (value, at) => {
    const m = /(^|\s)\/([\p{L}\p{N}_-]*)$/u.exec(value.slice(0, at));
    if (m && m[2].length <= 40) {
      loadCannedReplies();
      setSlash({ start: at - m[2].length - 1, query: m[2], index: 0 });
    } else setSlash(null);
  };
  const pickCanned = (reply) => {
    const el = ta.current;
    const at = el ? el.selectionStart : text.length;
    caret.current = slash.start + reply.text.length;
    setText(text.slice(0, slash.start) + reply.text + text.slice(at));
    setSlash(null);
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
    if (slash && matches.length) {
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        const d = e.key === 'ArrowDown' ? 1 : -1;
        setSlash({ ...slash, index: (slash.index + d + matches.length) % matches.length });
        return;
      }
      if (e.key === 'Enter' || e.key === 'Tab') { e.preventDefault(); pickCanned(matches[slash.index]); return; }
      if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); setSlash(null); return; }
    }
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
      {!note && windowState && <ReplyWindow c={t} state={windowState} />}
      {c.ai_mode === 'active' && !note && (
        <div class="ai-hint"><IconSparkle size={12} />The AI is answering this conversation. Sending a reply takes it over (the AI pauses).</div>
      )}
      <div class="composer" data-testid="composer">
        <div class="composer-head">
        <div class="composer-tabs" role="tablist" aria-label="Message type" onKeyDown={tabKeys}>
          <button type="button" role="tab" aria-selected={!note ? 'true' : 'false'} tabIndex={note ? -1 : 0} aria-controls="composer-text" class={!note ? 'on' : ''} data-testid="composer-mode-reply"
            onClick={() => { setMode('reply'); setMention(null); }}>Reply</button>
          <button type="button" role="tab" aria-selected={note ? 'true' : 'false'} tabIndex={note ? 0 : -1} aria-controls="composer-text" class={note ? 'on' : ''} data-testid="composer-mode-note"
            onClick={() => setMode('note')}><IconNote size={12} />Internal note</button>
        </div>
        {isMerged(c) && !note && (
          <label class="composer-via">
            <span>Reply via</span>
            <select value={t.id} data-testid="composer-via" onChange={(e) => setVia(e.currentTarget.value)}>
              {[c, ...c.merged].map((th) => <option key={th.id} value={th.id}>{threadLabel(th)}</option>)}
            </select>
          </label>
        )}
        </div>
        <div class="composer-box">
          {files.length > 0 && (
            <ul class="composer-files" aria-label={note ? 'Files kept with the note' : 'Files sent with the reply'} ref={fileList}>
              {files.map((f, i) => (
                <li key={f.key} class="file-chip" data-testid="attachment-chip">
                  <IconFile size={13} />
                  <span class="file-chip-name" title={f.name}>{f.name}</span>
                  <span class="file-chip-size">{fileSize(f.size)}</span>
                  <button type="button" class="icon-btn sm" aria-label={`Remove ${f.name}`} title={`Remove ${f.name}`} disabled={sending}
                    data-testid="attachment-remove" onClick={() => removeFile(i)}><IconX size={12} /></button>
                </li>
              ))}
            </ul>
          )}
          {filesBlocked && (
            <p class="files-hint" id="attachments-hint" role="status" data-testid="attachments-hint">
              <IconAlert size={13} />Files go only with internal notes on {channelName}. Switch to Internal note, or remove the files to send this reply.
            </p>
          )}
          <label for="composer-text" class="sr-only">{note ? 'Internal note' : 'Reply'}</label>
          <textarea id="composer-text" ref={ta} rows={2} value={text} data-testid="composer-input"
            placeholder={note ? 'Write a note for your team. Type @ to mention someone.' : windowClosed ? 'The reply window is closed.' : replyPlaceholder(t)}
            aria-invalid={error ? 'true' : 'false'} aria-describedby={error ? 'composer-error' : undefined}
            aria-autocomplete="list"
            aria-controls={slash && matches.length ? 'canned-list' : mention && candidates.length ? 'mention-list' : undefined}
            aria-activedescendant={slash && matches.length ? `canned-${slash.index}` : mention && candidates.length ? `mention-${mention.index}` : undefined}
            onInput={(e) => {
              const { value, selectionStart } = e.currentTarget;
              setText(value); setError(null); updateMention(value, selectionStart); updateSlash(value, selectionStart);
            }}
            onKeyDown={onKeyDown} />
          {slash && matches.length > 0 && (
            <ul class="popover mention-pop canned-pop" id="canned-list" role="listbox" aria-label="Insert a canned reply" data-testid="canned-list">
              {matches.map((r, i) => (
                <li key={r.id} id={`canned-${i}`} role="option" aria-selected={i === slash.index ? 'true' : 'false'} class={i === slash.index ? 'active' : ''}
                  data-testid="canned-option" data-shortcut={r.shortcut} onMouseDown={(e) => { e.preventDefault(); pickCanned(r); }}>
                  <strong>/{r.shortcut}</strong> <span class="muted">{r.title}</span>
                  <div class="canned-text">{r.text}</div>
                </li>
              ))}
            </ul>
          )}
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
            {canAttach && (
              <>
                <button type="button" class="icon-btn" title="Attach files" aria-label="Attach files" ref={attachBtn} disabled={sending}
                  data-testid="attach-button" onClick={() => fileInput.current?.click()}><IconPaperclip size={15} /></button>
                <input type="file" multiple hidden tabIndex={-1} ref={fileInput} data-testid="attach-input"
                  onChange={(e) => { const input = e.currentTarget; addFiles([...(input.files || [])]); input.value = ''; }} />
              </>
            )}
            <span class="composer-hint muted">{note ? 'Notes never reach the lead' : ''}</span>
            <button type="button" class={`btn ${note ? 'btn-note' : 'btn-primary'}`} disabled={!canSend} data-testid="composer-send" onClick={send}
              title={filesBlocked ? `Files go only with internal notes on ${channelName}` : undefined} aria-describedby={filesBlocked ? 'attachments-hint' : undefined}>
              <IconSend size={14} />{sending ? 'Sending…' : note ? 'Add note' : 'Send'}
            </button>
          </div>
        </div>
        {error && <p id="composer-error" class="composer-error" role="alert" data-testid="composer-error"><IconAlert size={13} />{error}</p>}
      </div>
    </section>
  );
}

// A file's bytes as standard base64 (the data: URL without its `data:…;base64,` prefix).
function readBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => {
      const url = typeof r.result === 'string' ? r.result : '';
      const at = url.indexOf(',');
      resolve(at >= 0 ? url.slice(at + 1) : '');
    };
    r.onerror = () => reject(new Error(`Could not read ${file.name}. Remove it and attach it again.`));
    r.readAsDataURL(file);
  });
}

// The UTF-8 size of a JSON body.
const jsonBytes = (body) => new TextEncoder().encode(JSON.stringify(body)).length;

// "a.pdf", "a.pdf and b.png", "a.pdf, b.png and 3 more"
function names(list) {
  const shown = list.slice(0, 2);
  const rest = list.length - shown.length;
  if (rest > 0) return `${shown.join(', ')} and ${rest} more`;
  return shown.join(' and ');
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
