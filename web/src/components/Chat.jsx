import { useEffect, useRef, useLayoutEffect } from 'preact/hooks';
import { current, messages, messagesStatus, loadOlder, agentsById, me, reasoningFor, setAiMode, takeOver } from '../state.js';
import { ChannelIcon, IconSparkle, IconClock, IconCheck, IconChecks, IconAlert, IconNote, IconPaperclip, IconDownload, IconPause, IconPlay, IconHand, IconLock } from './Icons.jsx';
import { Composer } from './Composer.jsx';
import { Avatar } from './Avatar.jsx';
import { clockTime, fullTime, dayLabel, displayName, loadableImage, CHANNEL_LABEL, MODE_LABEL, STATUS_LABEL } from '../util.js';

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
  return (
    <header class="chat-head">
      <Avatar contact={c.contact} size={34} />
      <div class="chat-title">
        <h2>{displayName(c.contact)}</h2>
        <div class="chat-sub">
          <ChannelIcon channel={c.channel} size={12} /> {CHANNEL_LABEL[c.channel] || c.channel}
          {c.contact.company && <> · {c.contact.company}</>}
          <span class={`pill s-${c.status}`} data-testid="chat-status">{STATUS_LABEL[c.status]}</span>
          <span class={`pill mode-${mode}`} data-testid="chat-ai-mode">{mode === 'active' && <IconSparkle size={10} />}{MODE_LABEL[mode]}</span>
        </div>
      </div>
      <div class="ai-actions" role="group" aria-label="AI mode">
        {mode === 'active' && (
          <>
            <button type="button" class="btn" data-testid="btn-take-over" onClick={() => takeOver(c)} title="Pause the AI and assign the conversation to you">
              <IconHand size={14} />Take over</button>
            <button type="button" class="btn" data-testid="btn-pause-ai" onClick={() => setAiMode(c.id, 'paused', 'AI paused')}><IconPause size={13} />Pause AI</button>
          </>
        )}
        {mode !== 'active' && (
          <button type="button" class="btn btn-ai" data-testid="btn-resume-ai" onClick={() => setAiMode(c.id, 'active', 'AI resumed')}><IconPlay size={12} />Resume AI</button>
        )}
        {mode !== 'manual' && (
          <button type="button" class="btn btn-quiet" data-testid="btn-manual-only" onClick={() => setAiMode(c.id, 'manual', 'Manual only: the AI will not answer')} title="No AI involvement in this conversation">
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
  const stick = useRef(true);
  const prevHeight = useRef(0);
  const prevFirst = useRef(null);

  // Stay at the bottom as messages arrive (when the reader is there); keep the reading
  // position when older messages are prepended.
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const first = items[0]?.id;
    if (prevFirst.current && first !== prevFirst.current && el.scrollHeight > prevHeight.current && !stick.current) {
      el.scrollTop += el.scrollHeight - prevHeight.current;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
    prevFirst.current = first;
    prevHeight.current = el.scrollHeight;
  }, [items]);

  useEffect(() => { stick.current = true; prevFirst.current = null; }, [c.id]);

  // The pane shrinks when a banner or a taller composer appears: stay at the bottom.
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const ro = new ResizeObserver(() => { if (stick.current) el.scrollTop = el.scrollHeight; });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const onScroll = () => {
    const el = ref.current;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
    prevHeight.current = el.scrollHeight;
    if (el.scrollTop < 120 && status.olderBefore && !status.loading) loadOlder();
  };

  let lastDay = null;
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
    out.push(<Message key={m.id} m={m} grouped={grouped} />);
  });
  return (
    <div class="messages" ref={ref} onScroll={onScroll} data-testid="message-list" aria-live="polite" aria-relevant="additions">
      {status.olderBefore && <div class="older">{status.loading ? 'Loading earlier messages…' : <button type="button" class="link-btn" onClick={loadOlder}>Load earlier messages</button>}</div>}
      {!status.olderBefore && items.length > 0 && <div class="conv-start">Start of the conversation · {fullTime(items[0].created_at)}</div>}
      {status.error && <p class="error" role="alert">{status.error}</p>}
      {status.loading && items.length === 0 && <p class="muted center">Loading messages…</p>}
      {out}
    </div>
  );
}

// Consecutive messages of one sender within minutes form a group: the name shows once.
const groupKey = (m) => `${m.sender}|${m.agent_id || ''}|${m.internal}`;

function senderName(m) {
  if (m.sender === 'lead') return displayName(current.value?.contact);
  if (m.sender === 'ai') return 'AI agent';
  if (m.sender === 'system') return 'System';
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

function Attachment({ m }) {
  if (!m.content_type || m.content_type === 'text') return null;
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
        {link && <a href={link} target="_blank" rel="noopener noreferrer" download class="icon-btn sm" title="Download"><IconDownload size={14} /><span class="sr-only">Download</span></a>}
      </div>
    </div>
  );
}

function Message({ m, grouped }) {
  const isSystem = m.sender === 'system';
  const isNote = m.internal && !isSystem;
  const isAi = m.sender === 'ai';
  const out = m.direction === 'outbound';
  const open = reasoningFor.value === m.seq;
  const showReasoning = () => { reasoningFor.value = open ? null : m.seq; };
  if (isSystem) {
    return (
      <div class={`sys-note${m.ai ? ' escalation' : ''}`} data-testid="message" data-kind="system" data-seq={m.seq}>
        <IconAlert size={14} />
        <span>{m.text}</span>
        <time dateTime={m.created_at}>{clockTime(m.created_at)}</time>
        {m.ai && <button type="button" class="link-btn" data-testid="open-reasoning" aria-expanded={open ? 'true' : 'false'} onClick={showReasoning}>Why?</button>}
      </div>
    );
  }
  const kind = isNote ? 'note' : isAi ? 'ai' : out ? 'agent' : 'lead';
  return (
    <div class={`msg ${out || isNote ? 'out' : 'in'} k-${kind}${grouped ? ' grouped' : ''}${open ? ' reasoning-open' : ''}`} data-testid="message" data-kind={kind} data-seq={m.seq} data-id={m.id}>
      {!grouped && (
        <div class="msg-sender">
          {isAi ? <span class="sender sender-ai"><IconSparkle size={11} />AI agent</span> : <span class="sender">{isNote ? `${senderName(m)} · note` : senderName(m)}</span>}
        </div>
      )}
      <div class="bubble">
        {isNote && !grouped && <div class="note-label"><IconNote size={12} />Internal note · only your team sees this</div>}
        {m.text && <span class="msg-text">{m.text}</span>}
        <Attachment m={m} />
        <span class="msg-meta">
          {isAi && (
            <button type="button" class="ai-badge" data-testid="open-reasoning" aria-expanded={open ? 'true' : 'false'} title="View the AI's reasoning" onClick={showReasoning}>
              <IconSparkle size={10} />Why?</button>
          )}
          {!isNote && <ChannelIcon channel={m.channel} size={11} />}
          <time dateTime={m.created_at} title={fullTime(m.created_at)}>{clockTime(m.created_at)}</time>
          <Delivery m={m} />
        </span>
      </div>
      {m.error && <div class="msg-error" role="status"><IconAlert size={12} />{m.error}</div>}
    </div>
  );
}
