import { useEffect, useRef, useLayoutEffect, useState } from 'preact/hooks';
import {
  current, messages, messagesStatus, loadOlder, loadNewer, loadLatest, scrollTarget, highlightSeq, flashMessage,
  agentsById, me, reasoningFor, reasoningThread, setAiMode, takeOver, isMerged, threadLabel,
} from '../state.js';
import { ChannelIcon, IconSparkle, IconClock, IconCheck, IconChecks, IconAlert, IconNote, IconPaperclip, IconDownload, IconPause, IconPlay, IconHand, IconLock, IconFile, IconArrowDown, IconTrash } from './Icons.jsx';
import { Composer } from './Composer.jsx';
import { Avatar } from './Avatar.jsx';
import { clockTime, fullTime, aheadTime, dayLabel, displayName, contactAddress, subjectKey, loadableImage, fileSize, channelName, CHANNEL_LABEL, MODE_LABEL, STATUS_LABEL } from '../util.js';
import { keepFocus } from '../focus.js';

export function Chat() {
  const c = current.value;
  if (!c) {
    return (
      <main class="chat chat-empty" aria-label="Conversation">
        <div class="empty-state">
          <div class="empty-art" aria-hidden="true"><IconNote size={28} /></div>
          <h2>Select a conversation</h2>
          <p>Pick one from the list, or press <kbd>↑</kbd> <kbd>↓</kbd> and <kbd>Enter</kbd>. Press <kbd>?</kbd> for all shortcuts.</p>
        </div>
      </main>
    );
  }
  return (
    <main class="chat" aria-label={`Conversation with ${displayName(c.contact)}`} data-testid="chat" data-conversation-id={c.id}>
      <ChatHeader c={c} />
      <MessageList c={c} />
      <Composer c={c} />
    </main>
  );
}

function ChatHeader({ c }) {
  const mode = c.ai_mode;
  // The buttons change with the mode: the focus moves to the first of the new ones.
  const group = useRef(null);
  const act = (run) => keepFocus(() => group.current?.querySelector('button'), run);
  const address = contactAddress(c);
  return (
    <header class="chat-head">
      <Avatar contact={c.contact} size={34} />
      <div class="chat-title">
        <h2>{displayName(c.contact)}</h2>
        <div class="chat-sub">
          <ChannelIcon channel={c.channel} size={12} /> {CHANNEL_LABEL[c.channel] || c.channel}
          {address && <> · <span class="chat-address" data-testid="chat-address" title={address}>{address}</span></>}
          {c.contact.company && <> · {c.contact.company}</>}
          {c.snoozed_until
            ? <span class="pill s-snoozed" data-testid="chat-status" title={`Snoozed until ${fullTime(c.snoozed_until)}`}>Snoozed · {aheadTime(c.snoozed_until)}</span>
            : <span class={`pill s-${c.status}`} data-testid="chat-status">{STATUS_LABEL[c.status]}</span>}
          <span class={`pill mode-${mode}`} data-testid="chat-ai-mode">{mode === 'active' && <IconSparkle size={10} />}{MODE_LABEL[mode]}</span>
        </div>
      </div>
      <div class="ai-actions" role="group" aria-label="AI mode" ref={group}>
        {mode === 'active' && (
          <>
            <button type="button" class="btn" data-testid="btn-take-over" onClick={() => act(() => takeOver(c))} title="Pause the AI and assign the conversation to you">
              <IconHand size={14} />Take over</button>
            <button type="button" class="btn" data-testid="btn-pause-ai" onClick={() => act(() => setAiMode(c.id, 'paused', 'AI paused'))}><IconPause size={13} />Pause AI</button>
          </>
        )}
        {mode !== 'active' && (
          <button type="button" class="btn btn-ai" data-testid="btn-resume-ai" onClick={() => act(() => setAiMode(c.id, 'active', 'AI resumed'))}><IconPlay size={12} />Resume AI</button>
        )}
        {mode !== 'manual' && (
          <button type="button" class="btn btn-quiet" data-testid="btn-manual-only" onClick={() => act(() => setAiMode(c.id, 'manual', 'Manual only: the AI will not answer'))} title="No AI involvement in this conversation">
            <IconLock size={13} />Manual only</button>
        )}
      </div>
    </header>
  );
}

function MessageList({ c }) {
  const ref = useRef(null);
  const items = messages.value;
  const status = messagesStatus.value;
  const target = scrollTarget.value;
  const highlight = highlightSeq.value;
  const threads = isMerged(c) ? new Map([c, ...c.merged].map((t) => [t.id, threadLabel(t)])) : null;
  const atNewest = status.newerAfter === null || status.newerAfter === undefined;
  const stick = useRef(true); // follow the newest message
  const prevHeight = useRef(0);
  const prevFirst = useRef(null);

  // A new conversation starts at the bottom (before the effect below handles its messages).
  useLayoutEffect(() => { stick.current = true; prevFirst.current = null; }, [c.id]);

  // A scroll target (a search hit's message, or the newest after "Jump to latest") is acted
  // on once. Otherwise: stay at the bottom as messages arrive (when the reader is there and
  // the newest page is loaded); keep the reading position when older messages are
  // prepended; messages appended after a jump leave the position alone.
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const first = items[0]?.id;
    if (target && !target.done) {
      target.done = true;
      if (target.seq === null) {
        stick.current = true;
        el.scrollTop = el.scrollHeight;
      } else {
        const node = el.querySelector(`[data-seq="${target.seq}"]`);
        if (node) {
          stick.current = false;
          const box = el.getBoundingClientRect(), at = node.getBoundingClientRect();
          el.scrollTop += at.top - box.top - Math.max(0, (el.clientHeight - at.height) / 2);
          flashMessage(target.seq);
        }
      }
    } else if (prevFirst.current && first !== prevFirst.current && el.scrollHeight > prevHeight.current && !stick.current) {
      el.scrollTop += el.scrollHeight - prevHeight.current;
    } else if (stick.current && atNewest) {
      el.scrollTop = el.scrollHeight;
    }
    prevFirst.current = first;
    prevHeight.current = el.scrollHeight;
    // After a jump, a page that does not reach below the fold loads the next one at once.
    if (!atNewest && !status.loading && !status.loadingNewer && el.scrollHeight - el.scrollTop - el.clientHeight < 200) loadNewer();
  }, [items, target]);

  // The pane shrinks when a banner or a taller composer appears, and an image or a video
  // takes its height once loaded: stay at the bottom.
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const follow = () => { if (stick.current) el.scrollTop = el.scrollHeight; };
    const ro = new ResizeObserver(follow);
    ro.observe(el);
    el.addEventListener('load', follow, true);
    el.addEventListener('loadedmetadata', follow, true);
    return () => {
      ro.disconnect();
      el.removeEventListener('load', follow, true);
      el.removeEventListener('loadedmetadata', follow, true);
    };
  }, []);

  // The load buttons go away once they have done their work: the focus stays in the list.
  const keep = (run) => () => { ref.current?.focus({ preventScroll: true }); run(); };
  const announce = useNewMessages(c, items, atNewest);

  const onScroll = () => {
    const el = ref.current;
    const fromBottom = el.scrollHeight - el.scrollTop - el.clientHeight;
    stick.current = fromBottom < 80 && atNewest;
    prevHeight.current = el.scrollHeight;
    if (el.scrollTop < 120 && status.olderBefore != null && !status.loading) loadOlder();
    if (fromBottom < 200 && !atNewest && !status.loading && !status.loadingNewer) loadNewer();
  };

  let lastDay = null;
  let lastSubject = null; // the thread's subject so far (without Re:/Fwd:), for email messages
  const out = [];
  items.forEach((m, i) => {
    const day = new Date(m.created_at).toDateString();
    if (day !== lastDay) {
      out.push(<div key={`d-${day}`} class="day-sep" role="separator"><span>{dayLabel(m.created_at)}</span></div>);
      lastDay = day;
    }
    const prev = items[i - 1];
    const grouped = prev && groupKey(prev) === groupKey(m) && new Date(m.created_at) - new Date(prev.created_at) < 5 * 60_000
      && new Date(prev.created_at).toDateString() === day;
    let showSubject = false;
    if (typeof m.subject === 'string' && m.subject.trim()) {
      const key = subjectKey(m.subject);
      showSubject = key !== lastSubject;
      lastSubject = key;
    }
    out.push(<Message key={m.id} m={m} grouped={grouped} showSubject={showSubject} highlight={highlight !== null && m.seq === highlight} via={threads?.get(m.conversation_id)} />);
  });
  // The list is a focusable region (keyboard scrolling); it is not a live region itself (that
  // would read out every page of history): new messages are announced by the status below.
  return (
    <>
      <div class="messages" ref={ref} onScroll={onScroll} data-testid="message-list" role="region" aria-label="Messages" tabIndex={0}>
        {status.olderBefore != null && <div class="older">{status.loading ? 'Loading earlier messages…' : <button type="button" class="link-btn" onClick={keep(loadOlder)}>Load earlier messages</button>}</div>}
        {status.olderBefore == null && items.length > 0 && <div class="conv-start">Start of the conversation · {fullTime(items[0].created_at)}</div>}
        {status.error && <p class="error" role="alert">{status.error}</p>}
        {status.loading && items.length === 0 && <p class="muted center">Loading messages…</p>}
        {out}
        {!atNewest && items.length > 0 && (
          <>
            <div class="older">{status.loadingNewer ? 'Loading newer messages…' : <button type="button" class="link-btn" onClick={keep(loadNewer)}>Load newer messages</button>}</div>
            <button type="button" class={`jump-latest${status.newerLive ? ' live' : ''}`} data-testid="jump-latest" data-new={status.newerLive ? 'true' : 'false'} onClick={keep(loadLatest)}>
              <IconArrowDown size={13} />{status.newerLive ? 'New messages' : 'Jump to latest'}</button>
          </>
        )}
      </div>
      <div class="sr-only" role="status" aria-live="polite" aria-atomic="true">{announce}</div>
    </>
  );
}

// Messages that arrive in the open conversation (appended after the newest one seen), for
// the live region: not the history that loads, nor a switch of conversation, nor the
// agent's own messages. The last three at most.
function useNewMessages(c, items, atNewest) {
  const [text, setText] = useState('');
  const seen = useRef({ cid: null, last: null });
  useEffect(() => {
    const prev = seen.current;
    const last = items.length ? items[items.length - 1].id : null;
    if (prev.cid !== c.id) setText('');
    else if (atNewest && prev.last && last !== prev.last) {
      const at = items.findIndex((m) => m.id === prev.last);
      const mine = me.value?.agent?.id;
      const fresh = at < 0 ? [] : items.slice(at + 1).filter((m) => !(m.agent_id && m.agent_id === mine));
      if (fresh.length) {
        setText(fresh.slice(-3).map((m) => `${m.sender === 'system' ? 'System' : senderName(m)}${m.internal && m.sender !== 'system' ? ' (note)' : ''}: ${m.text || 'attachment'}`).join('\n'));
      }
    }
    seen.current = { cid: c.id, last };
  }, [c.id, items]);
  return text;
}

// Consecutive messages of one sender within minutes form a group: the name shows once.
// Messages typed on the provider itself (`sent_elsewhere`) form their own groups.
const groupKey = (m) => `${m.sender}|${m.agent_id || ''}|${m.internal}|${m.sent_elsewhere === true}`;

function senderName(m) {
  if (m.sender === 'lead') return displayName(current.value?.contact);
  if (m.sender === 'ai') return 'AI agent';
  if (m.sender === 'system') return 'System';
  if (m.sent_elsewhere === true) return `Sent from ${channelName(m.channel)}`;
  if (m.agent_id && m.agent_id === me.value?.agent?.id) return 'You';
  return agentsById.value.get(m.agent_id)?.name || 'Agent';
}

function Delivery({ m }) {
  if (m.direction !== 'outbound' || m.internal || !m.delivery) return null;
  const map = {
    queued: [IconClock, 'Queued'], sent: [IconCheck, 'Sent'], delivered: [IconChecks, 'Delivered'],
    read: [IconChecks, 'Read'], failed: [IconAlert, 'Failed'],
  };
  const [Icon, label] = map[m.delivery] || [IconClock, m.delivery];
  return <span class={`tick tick-${m.delivery}`} title={label} data-testid="delivery" data-delivery={m.delivery}><Icon size={13} title={label} /></span>;
}

// Files the server serves itself (`attachments`, one URL per index): images as thumbnails
// that open the file, audio and video as players, anything else (or an image or a medium
// that fails to load) as a download link.
const INLINE_IMAGES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);

function Attachments({ m }) {
  const cid = m.conversation_id || current.value?.id;
  const base = `/api/v1/conversations/${encodeURIComponent(cid)}/messages/${m.seq}/attachments/`;
  return <div class="atts">{m.attachments.map((a, i) => <AttachmentItem key={`${m.id}-${i}`} a={a} url={base + i} />)}</div>;
}

function AttachmentItem({ a, url }) {
  const [failed, setFailed] = useState(false);
  const type = String(a.content_type || '').split(';')[0].trim().toLowerCase();
  const label = a.name || 'attachment';
  const size = fileSize(a.size);
  const fail = () => setFailed(true);
  if (!failed && INLINE_IMAGES.has(type)) {
    return (
      <a href={url} target="_blank" rel="noopener" class="att att-image" title={a.name ? `${a.name} (opens in a new tab)` : 'Open the image in a new tab'}
        data-testid="attachment" data-content-type={a.content_type}>
        <img src={url} alt={a.name || 'Image'} loading="lazy" decoding="async" data-testid="attachment-image" onError={fail} />
      </a>
    );
  }
  const media = type.startsWith('audio/') ? 'audio' : type.startsWith('video/') ? 'video' : null;
  if (!failed && media) {
    const Media = media;
    return (
      <div class={`att att-${media}`} data-testid="attachment" data-content-type={a.content_type}>
        <Media src={url} controls preload="metadata" onError={fail}>{label}</Media>
        <a href={url} download={a.name || ''} class="att-caption" title="Download">
          <IconDownload size={12} /><span class="att-name">{label}</span>{size && <span class="att-size">{size}</span>}
        </a>
      </div>
    );
  }
  return (
    <a href={url} download={a.name || ''} class="att att-file" title={`Download ${label}`} data-testid="attachment" data-content-type={a.content_type}>
      <span class="att-icon"><IconFile size={18} /></span>
      <span class="att-text"><span class="att-name">{label}</span>{size && <span class="att-size">{size}</span>}</span>
      <IconDownload size={14} />
    </a>
  );
}

// Older messages without `attachments`: the media is described by `content_type` and `raw`.
function LegacyAttachment({ m }) {
  if (!m.content_type || m.content_type === 'text' || m.content_type === 'email') return null;
  const body = m.raw && typeof m.raw === 'object' ? (m.raw[m.content_type] || m.raw) : {};
  const link = typeof body.link === 'string' && /^https:\/\//.test(body.link) ? body.link : typeof body.url === 'string' && /^https:\/\//.test(body.url) ? body.url : null;
  const name = body.filename || body.caption || body.mime_type || m.content_type;
  const isImage = m.content_type === 'image' || m.content_type === 'sticker';
  return (
    <div class="attachment" data-testid="attachment" data-content-type={m.content_type}>
      {isImage && link && loadableImage(link) && <img src={link} alt={body.caption || 'image'} class="attachment-img" />}
      <div class="attachment-row">
        <IconPaperclip size={14} />
        <span class="attachment-name">{name}</span>
        <span class="attachment-kind">{m.content_type}</span>
        {link && <a href={link} target="_blank" rel="noopener noreferrer" download class="icon-btn sm" title="Download"><IconDownload size={14} /><span class="sr-only">Download {name}</span></a>}
      </div>
    </div>
  );
}

// An email shown without its quoted history and signature (`text`) carries the whole mail
// in `full_text`: a disclosure button reveals it below the message.
function QuotedText({ m }) {
  const [open, setOpen] = useState(false);
  const id = `quoted-${m.id}`;
  return (
    <div class="quoted">
      <button type="button" class="quoted-toggle" data-testid="show-quoted" aria-expanded={open ? 'true' : 'false'} aria-controls={id}
        onClick={() => setOpen(!open)}>
        {open ? 'Hide quoted text' : 'Show quoted text'}</button>
      {open && <div class="quoted-text" id={id} data-testid="quoted-text">{m.full_text}</div>}
    </div>
  );
}

const AUTO_REPLY_TITLE = 'Sent by a machine (out-of-office, mailing list): the AI does not answer it';

// Ours, but typed by a person on the provider directly (LinkedIn), not through Confab: the
// channel stands where an agent's name would.
function SentElsewhere({ m }) {
  const where = channelName(m.channel);
  return (
    <span class="sender sender-elsewhere" data-testid="sent-elsewhere" title={`Typed directly on ${where}, not through Confab`}>
      <ChannelIcon channel={m.channel} size={11} decorative />Sent from {where}</span>
  );
}

// Reactions (one per person), as chips under the bubble.
const REACTED_BY = { lead: 'Lead', agent: 'Agent' };
function Reactions({ reactions }) {
  return (
    <div class="reactions" data-testid="reactions">
      {reactions.map((r, i) => {
        const label = `${REACTED_BY[r.by] || 'Someone'} reacted ${r.emoji}`;
        return <span key={`${r.by}-${i}`} class={`reaction by-${r.by}`} role="img" aria-label={label} title={label} data-testid="reaction" data-by={r.by} data-emoji={r.emoji}>{r.emoji}</span>;
      })}
    </div>
  );
}

// An edited message's earlier texts (oldest first), shown from its "edited" button; each
// with the time it was replaced.
function EditHistory({ m }) {
  return (
    <div class="edits" id={`edits-${m.id}`} data-testid="edit-history">
      <div class="edits-title">Earlier versions, oldest first</div>
      <ol>
        {m.edits.map((e, i) => (
          <li key={i} data-testid="edit-version">
            <span class="edit-text">{e.text}</span>
            <time dateTime={e.at} title={fullTime(e.at)}>replaced {clockTime(e.at)}</time>
          </li>
        ))}
      </ol>
    </div>
  );
}

// `via`: the thread it came on or went out by, in a conversation others are merged into.
function Message({ m, grouped, showSubject, highlight, via }) {
  const [showEdits, setShowEdits] = useState(false);
  const isSystem = m.sender === 'system';
  const isNote = m.internal && !isSystem;
  const isAi = m.sender === 'ai';
  const out = m.direction === 'outbound';
  const open = reasoningFor.value === m.seq && (reasoningThread.value || current.value?.id) === m.conversation_id;
  const showReasoning = () => { reasoningThread.value = m.conversation_id; reasoningFor.value = open ? null : m.seq; };
  if (isSystem) {
    return (
      <div class={`sys-note${m.ai ? ' escalation' : ''}${highlight ? ' msg-highlight' : ''}`} data-testid="message" data-kind="system" data-seq={m.seq} data-id={m.id}
        data-highlight={highlight ? 'true' : undefined}>
        <IconAlert size={14} />
        <span>{m.text}</span>
        <time dateTime={m.created_at}>{clockTime(m.created_at)}</time>
        {m.ai && <button type="button" class="link-btn" data-testid="open-reasoning" aria-expanded={open ? 'true' : 'false'} aria-controls={open ? 'reasoning-panel' : undefined}
          aria-label={`Why? The AI's reasoning for this escalation, ${clockTime(m.created_at)}`} onClick={showReasoning}>Why?</button>}
      </div>
    );
  }
  const kind = isNote ? 'note' : isAi ? 'ai' : out ? 'agent' : 'lead';
  const elsewhere = m.sent_elsewhere === true && !isNote;
  const deleted = !!m.deleted_at;
  const edits = Array.isArray(m.edits) ? m.edits.length : 0;
  const reactions = Array.isArray(m.reactions) ? m.reactions : [];
  return (
    <div class={`msg ${out || isNote ? 'out' : 'in'} k-${kind}${elsewhere ? ' elsewhere' : ''}${deleted ? ' deleted' : ''}${grouped ? ' grouped' : ''}${open ? ' reasoning-open' : ''}${highlight ? ' msg-highlight' : ''}`}
      data-testid="message" data-kind={kind} data-seq={m.seq} data-id={m.id} data-highlight={highlight ? 'true' : undefined}
      data-sent-elsewhere={elsewhere ? 'true' : undefined} data-deleted={deleted ? 'true' : undefined}>
      {!grouped && (
        <div class="msg-sender">
          {isAi ? <span class="sender sender-ai"><IconSparkle size={11} />AI agent</span>
            : elsewhere ? <SentElsewhere m={m} />
              : <span class="sender">{isNote ? `${senderName(m)} · note` : senderName(m)}</span>}
        </div>
      )}
      <div class="bubble">
        {isNote && !grouped && <div class="note-label"><IconNote size={12} />Internal note · only your team sees this</div>}
        {deleted && (
          <div class="deleted-label" data-testid="deleted" title={`Deleted on ${channelName(m.channel)} ${fullTime(m.deleted_at)}; the text stays here for your team`}>
            <IconTrash size={12} />Deleted on {channelName(m.channel)}</div>
        )}
        {showSubject && <div class="msg-subject" data-testid="message-subject" title="Subject">{m.subject}</div>}
        {m.text && <span class="msg-text">{m.text}</span>}
        {edits > 0 && showEdits && <EditHistory m={m} />}
        {typeof m.full_text === 'string' && m.full_text && <QuotedText m={m} />}
        {m.attachments?.length ? <Attachments m={m} /> : <LegacyAttachment m={m} />}
        <span class="msg-meta">
          {m.auto_reply === true && (
            <>
              <span class="auto-badge" data-testid="auto-reply-badge" title={AUTO_REPLY_TITLE}>Auto-reply</span>
              <span class="sr-only">({AUTO_REPLY_TITLE})</span>
            </>
          )}
          {isAi && (
            <button type="button" class="ai-badge" data-testid="open-reasoning" aria-expanded={open ? 'true' : 'false'} aria-controls={open ? 'reasoning-panel' : undefined} title="View the AI's reasoning"
              aria-label={`Why? The AI's reasoning for its message of ${clockTime(m.created_at)}`} onClick={showReasoning}>
              <IconSparkle size={10} />Why?</button>
          )}
          {!isNote && <ChannelIcon channel={m.channel} size={11} />}
          {via && <span class="msg-thread" data-testid="message-thread">{via}</span>}
          {edits > 0 && (
            <button type="button" class="edited-btn" data-testid="edited" aria-expanded={showEdits ? 'true' : 'false'} aria-controls={showEdits ? `edits-${m.id}` : undefined}
              aria-label={`Edited, ${edits} earlier version${edits === 1 ? '' : 's'}`} title={showEdits ? 'Hide the earlier versions' : 'Show the earlier versions'}
              onClick={() => setShowEdits(!showEdits)}>edited</button>
          )}
          <time dateTime={m.created_at} title={fullTime(m.created_at)}>{clockTime(m.created_at)}</time>
          <Delivery m={m} />
        </span>
      </div>
      {reactions.length > 0 && <Reactions reactions={reactions} />}
      {m.error && <div class="msg-error" role="status"><IconAlert size={12} />{m.error}</div>}
    </div>
  );
}
