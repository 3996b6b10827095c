// The virtualized conversation list: only the rows in view (plus a few) are in the DOM; the
// next cursor page loads as the end comes near. Rows have a fixed height.

import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import { clock, list, listVersion, listStatus, loadMore, activeIndex, route, openConversation, agentsById, filters, picked, pickedAll, togglePick } from '../state.js';
import { Avatar } from './Avatar.jsx';
import { ChannelIcon, IconSparkle, IconPause } from './Icons.jsx';
import { shortTime, aheadTime, fullTime, displayName } from '../util.js';

const ROW = 74;
const OVERSCAN = 6;

export function ConversationList() {
  listVersion.value; // re-render on every list change
  const now = clock.value;
  const status = listStatus.value;
  const selected = route.value.id;
  const ref = useRef(null);
  const [view, setView] = useState({ top: 0, height: 600 });
  const items = list.items;
  const total = items.length;
  const active = activeIndex.value;

  const onScroll = useCallback(() => {
    const el = ref.current;
    if (el) setView({ top: el.scrollTop, height: el.clientHeight });
  }, []);

  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const ro = new ResizeObserver(onScroll);
    ro.observe(el);
    onScroll();
    return () => ro.disconnect();
  }, []);

  // Keep the keyboard highlight in view.
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const y = active * ROW;
    if (y < el.scrollTop) el.scrollTop = y;
    else if (y + ROW > el.scrollTop + el.clientHeight) el.scrollTop = y + ROW - el.clientHeight;
  }, [active]);

  // Scroll back to the top when the filters change.
  useEffect(() => { if (ref.current) ref.current.scrollTop = 0; }, [filters.value]);

  const first = Math.max(0, Math.floor(view.top / ROW) - OVERSCAN);
  const last = Math.min(total, Math.ceil((view.top + view.height) / ROW) + OVERSCAN);

  useEffect(() => {
    if (status.more && last >= total - 20) loadMore();
  }, [last, total, status.more]);

  const all = pickedAll.value;
  const picks = picked.value;
  const rows = [];
  for (let i = first; i < last; i++) {
    rows.push(<Row key={items[i].id} card={items[i]} now={now} index={i} selected={items[i].id === selected} active={i === active}
      picked={all || picks.has(items[i].id)} />);
  }

  return (
    <div class={`conv-list${all || picks.size ? ' picking' : ''}`} id="conv-list" ref={ref} onScroll={onScroll} role="listbox" aria-label="Conversations" tabIndex={0}
      aria-activedescendant={items[active] ? `conv-${items[active].id}` : undefined} data-testid="conversation-list" data-count={total}>
      {status.error && <p class="list-empty error" role="alert">{status.error}</p>}
      {!status.loading && !status.error && total === 0 && (
        <div class="list-empty" data-testid="list-empty">
          <p><strong>No conversations here</strong></p>
          <p>Try another filter, or All.</p>
        </div>
      )}
      <div class="conv-spacer" style={{ height: `${total * ROW + (status.more ? ROW : 0)}px` }}>
        {rows}
        {status.more && <div class="conv-loading" style={{ transform: `translateY(${total * ROW}px)` }}>Loading…</div>}
      </div>
      {status.loading && total === 0 && <SkeletonRows />}
    </div>
  );
}

function SkeletonRows() {
  return <div class="skeletons" aria-hidden="true">{[0, 1, 2, 3, 4, 5].map((i) => <div key={i} class="skeleton-row"><span /><div><i /><i /></div></div>)}</div>;
}

function Row({ card, now, index, selected, active, picked: isPicked }) {
  const name = displayName(card.contact);
  const assignee = card.assignee_id ? agentsById.value.get(card.assignee_id) : null;
  const unread = card.unread_count > 0;
  const merged = card.merged ? card.merged.length : 0;
  return (
    <div id={`conv-${card.id}`} role="option" aria-selected={selected ? 'true' : 'false'}
      class={`conv-row${selected ? ' selected' : ''}${active ? ' active' : ''}${unread ? ' unread' : ''}${isPicked ? ' picked' : ''}`}
      style={{ transform: `translateY(${index * ROW}px)` }}
      data-testid="conversation-row" data-id={card.id} data-unread={card.unread_count}
      onClick={() => { activeIndex.value = index; openConversation(card.id); }}>
      <div class="conv-avatar">
        <Avatar contact={card.contact} size={38} />
        <span class="conv-chan"><ChannelIcon channel={card.channel} size={12} /></span>
        {/* Picks for a bulk action: a click here (or x on the highlighted row) picks
            without opening. Out of the tab order: the list is one stop. */}
        <input type="checkbox" class="conv-pick" tabIndex={-1} checked={isPicked} aria-label={`Select ${name}`} data-testid="conv-pick"
          onClick={(e) => { e.stopPropagation(); togglePick(card.id); }} />
      </div>
      <div class="conv-main">
        <div class="conv-top">
          <span class="conv-name">{name}</span>
          <time class="conv-time" dateTime={card.last_activity_at} title={new Date(card.last_activity_at).toLocaleString()}>{shortTime(card.last_activity_at, now)}</time>
        </div>
        <div class="conv-bottom">
          <span class="conv-preview">{card.preview || <em>No messages yet</em>}</span>
          {card.ai_mode === 'active' && <span class="ai-chip" title="AI is handling" data-testid="ai-indicator"><IconSparkle size={11} />AI</span>}
          {card.ai_mode === 'paused' && <span class="ai-chip paused" title="AI paused" data-testid="ai-indicator"><IconPause size={10} />AI</span>}
          {unread && <span class="badge" data-testid="unread-badge" aria-label={`${card.unread_count} unread`}>{card.unread_count > 99 ? '99+' : card.unread_count}</span>}
        </div>
        {(card.tags.length > 0 || assignee || card.outcome || card.status !== 'open' || merged > 0) && (
          <div class="conv-meta">
            {merged > 0 && <span class="threads-chip" data-testid="threads-chip" title={`${merged + 1} threads of this lead in one timeline`}>{merged + 1} threads</span>}
            {card.snoozed_until
              ? <span class="status-dot s-snoozed" data-testid="snoozed-chip" title={`Snoozed until ${fullTime(card.snoozed_until)}`}>until {aheadTime(card.snoozed_until, now)}</span>
              : card.status !== 'open' && <span class={`status-dot s-${card.status}`}>{card.status}</span>}
            {card.outcome && <span class="outcome-chip" data-testid="outcome-chip">{card.outcome}</span>}
            {assignee && <span class="conv-assignee">{assignee.name}</span>}
            {card.tags.slice(0, 2).map((t) => <span key={t} class="tag-mini">{t}</span>)}
          </div>
        )}
      </div>
    </div>
  );
}
