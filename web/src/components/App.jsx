import { useEffect, useLayoutEffect, useState, useRef } from 'preact/hooks';
import { get } from '../api.js';
import {
  me, route, navigate, bootstrap, loadConversation, toasts, dismissToast, notifications, unreadCount, loadMoreNotifications,
  readAllNotifications, openNotification, clock, activeIndex, list, searchQuery, searchState, setSearch, openConversation, openHit,
  reasoningFor, signOut, current, togglePick,
} from '../state.js';
import { connection, startStream, stopStream } from '../stream.js';
import { SignIn, AcceptInvite } from './SignIn.jsx';
import { Sidebar } from './Sidebar.jsx';
import { Chat } from './Chat.jsx';
import { Details } from './Details.jsx';
import { Reasoning } from './Reasoning.jsx';
import { Analytics } from './Analytics.jsx';
import { NotificationSettings } from './NotificationSettings.jsx';
import { CannedReplies } from './CannedReplies.jsx';
import { Outcomes } from './Outcomes.jsx';
import { Webhooks } from './Webhooks.jsx';
import { IconInbox, IconChart, IconBell, IconKeyboard, IconLogout, IconX, IconSettings, IconNote, IconFlag, IconExternal } from './Icons.jsx';
import { initials, shortTime, fullTime } from '../util.js';
import { menuKeys, trapTab, keepFocus } from '../focus.js';

export function App() {
  const r = route.value;
  useEffect(() => {
    get('/api/v1/me', { quiet401: true }).then((m) => { me.value = m; }, () => { me.value = null; });
  }, []);
  if (r.page === 'invite' && !me.value) return <AcceptInvite code={r.code} />;
  if (me.value === undefined) return <div class="splash" aria-busy="true">Loading…</div>;
  if (me.value === null) return <SignIn />;
  return <Shell />;
}

function Shell() {
  const r = route.value;
  const [help, setHelp] = useState(false);

  useEffect(() => {
    let cancelled = false;
    bootstrap().then((head) => { if (!cancelled) startStream(head); });
    return () => { cancelled = true; stopStream(); };
  }, []);

  useEffect(() => {
    if (r.page === 'conversations') loadConversation(r.id);
  }, [r.page, r.id]);

  useEffect(() => {
    const onKey = (e) => handleShortcut(e, setHelp);
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);

  const mainId = r.page === 'analytics' ? 'analytics-main' : r.page === 'settings' ? 'settings-main' : null;
  return (
    <div class={`shell page-${r.page}`}>
      {mainId
        ? <a href={`#${mainId}`} class="skip-link" onClick={(e) => { e.preventDefault(); document.getElementById(mainId)?.focus(); }}>Skip to content</a>
        : <a href="#search-input" class="skip-link" onClick={(e) => { e.preventDefault(); document.getElementById('search-input')?.focus(); }}>Skip to search</a>}
      <Rail onHelp={() => setHelp(true)} />
      <ReconnectBanner />
      {r.page === 'analytics' ? <Analytics /> : r.page === 'settings' ? (r.section === 'canned' ? <CannedReplies /> : r.section === 'outcomes' ? <Outcomes /> : r.section === 'webhooks' ? <Webhooks /> : <NotificationSettings />) : (
        <div class="inbox">
          <Sidebar />
          <Chat />
          {reasoningFor.value && current.value ? <Reasoning /> : <Details />}
        </div>
      )}
      <Toasts />
      {help && <HelpOverlay onClose={() => setHelp(false)} />}
    </div>
  );
}

const isTyping = (el) => el && (el.tagName === 'TEXTAREA' || el.tagName === 'SELECT' || (el.tagName === 'INPUT' && el.id !== 'search-input') || el.isContentEditable);

function handleShortcut(e, setHelp) {
  if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
  const el = document.activeElement;
  const inSearch = el && el.id === 'search-input';
  // A modal dialog keeps the keyboard: only `?` gets through, to close the help (over
  // another dialog, such as New conversation, it would open a second one).
  const modal = document.querySelector('[aria-modal="true"]');
  if (modal && !(e.key === '?' && modal.dataset.testid === 'shortcut-help')) return;
  if (e.key === '/' && !isTyping(el) && !inSearch) {
    e.preventDefault();
    navigate(route.value.page !== 'conversations' ? '#/conversations' : location.hash || '#/conversations');
    requestAnimationFrame(() => document.getElementById('search-input')?.focus());
    return;
  }
  if (e.key === '?' && !isTyping(el) && !inSearch) { e.preventDefault(); setHelp((h) => !h); return; }
  if (route.value.page !== 'conversations' || isTyping(el)) return;
  const searching = searchQuery.value.trim() !== '';
  const total = searching ? searchState.value.items.length : list.items.length;
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    // ↑ ↓ move in the list from the sidebar (search box, list) or from nowhere; elsewhere they
    // keep their own meaning (scrolling the messages or the details, menus, tabs).
    const fromList = !el || el === document.body || el.closest('.sidebar');
    if (!fromList || el?.closest('[role=tablist]')) return;
    e.preventDefault();
    if (!total) return;
    const d = e.key === 'ArrowDown' ? 1 : -1;
    activeIndex.value = Math.max(0, Math.min(total - 1, activeIndex.value + d));
    return;
  }
  if (e.key === 'Enter' && (inSearch || !el || el === document.body || el.getAttribute('role') === 'listbox')) {
    if (searching) {
      const hit = searchState.value.items[activeIndex.value];
      if (hit) { e.preventDefault(); openHit(hit); }
      return;
    }
    const id = list.items[activeIndex.value]?.id;
    if (id) { e.preventDefault(); openConversation(id); }
    return;
  }
  if (e.key === 'x' && !searching && !inSearch) {
    const id = list.items[activeIndex.value]?.id;
    if (id) { e.preventDefault(); togglePick(id); }
    return;
  }
  if (e.key === 'Escape' && searching && !reasoningFor.value) { setSearch(''); }
}

function Rail({ onHelp }) {
  const r = route.value;
  const [bell, setBell] = useState(false);
  const [menu, setMenu] = useState(false);
  const bellRef = useRef(null);
  const meRef = useRef(null);
  const agent = me.value.agent;
  const state = connection.value;
  const unread = unreadCount.value;
  return (
    <nav class="rail" aria-label="Main">
      <img class="rail-logo" src="favicon.svg" alt="Confab" width="30" height="30" />
      <a href="#/conversations" class={`rail-btn${r.page === 'conversations' ? ' on' : ''}`} aria-current={r.page === 'conversations' ? 'page' : undefined} title="Conversations" data-testid="nav-conversations">
        <IconInbox size={20} /><span class="sr-only">Conversations</span></a>
      <a href="#/analytics" class={`rail-btn${r.page === 'analytics' ? ' on' : ''}`} aria-current={r.page === 'analytics' ? 'page' : undefined} title="Analytics" data-testid="nav-analytics">
        <IconChart size={20} /><span class="sr-only">Analytics</span></a>
      <div class="rail-spacer" />
      <div class="rail-pop-wrap" onFocusOut={(e) => { if (bell && e.relatedTarget && !e.currentTarget.contains(e.relatedTarget)) setBell(false); }}>
        <button type="button" class="rail-btn" title="Notifications" aria-expanded={bell ? 'true' : 'false'} aria-controls="notif-pop" data-testid="notifications-bell"
          ref={bellRef} onClick={() => setBell(!bell)}>
          <IconBell size={20} /><span class="sr-only">Notifications{unread > 0 ? ` (${unread} unread)` : ''}</span>
          {unread > 0 && <span class="rail-badge" aria-hidden="true" data-testid="notifications-count">{unread > 99 ? '99+' : unread}</span>}
        </button>
        {bell && <NotificationList onClose={(refocus) => { setBell(false); if (refocus) bellRef.current?.focus(); }} />}
      </div>
      <a href="#/settings/notifications" class={`rail-btn${r.page === 'settings' ? ' on' : ''}`} aria-current={r.page === 'settings' ? 'page' : undefined} title="Notification settings" data-testid="nav-settings">
        <IconSettings size={20} /><span class="sr-only">Notification settings</span></a>
      <button type="button" class="rail-btn" title="Keyboard shortcuts (?)" aria-haspopup="dialog" data-testid="btn-shortcuts" onClick={onHelp}><IconKeyboard size={20} /><span class="sr-only">Keyboard shortcuts</span></button>
      <span class={`conn conn-${state}`} data-testid="connection-status" data-state={state} title={state === 'live' ? 'Live: updates arrive in real time' : 'Reconnecting…'}>
        <span class="sr-only">{state === 'live' ? 'Live' : 'Reconnecting'}</span>
      </span>
      <div class="rail-pop-wrap">
        <button type="button" class="rail-me" title={`${agent.name} (${agent.email})`} aria-label={`Account: ${agent.name}`} aria-haspopup="menu"
          aria-expanded={menu ? 'true' : 'false'} aria-controls="user-menu-list" data-testid="user-menu" ref={meRef} onClick={() => setMenu(!menu)}>
          {initials(agent.name)}</button>
        {menu && <UserMenu agent={agent} onClose={(refocus) => { setMenu(false); if (refocus) meRef.current?.focus(); }} />}
      </div>
    </nav>
  );
}

// The account menu: the focus moves to its first item; ↑ ↓ move, Esc or Tab close it and
// return the focus to the button, a click elsewhere closes it.
function UserMenu({ agent, onClose }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    ref.current?.querySelector('[role=menuitem]')?.focus();
    const onDoc = (e) => { if (ref.current && !ref.current.parentNode.contains(e.target)) onClose(false); };
    document.addEventListener('mousedown', onDoc);
    return () => document.removeEventListener('mousedown', onDoc);
  }, []);
  return (
    <div class="popover rail-menu" role="menu" id="user-menu-list" aria-label="Account" ref={ref} onKeyDown={(e) => menuKeys(e, () => onClose(true))}>
      <div class="pad"><strong>{agent.name}</strong><div class="muted">{agent.email}</div><div class="muted">{me.value.workspace?.name} · {agent.role}</div></div>
      <a role="menuitem" class="menu-item" href="#/settings/canned" data-testid="nav-canned" onClick={() => onClose(false)}><IconNote size={14} />Canned replies</a>
      <a role="menuitem" class="menu-item" href="#/settings/outcomes" data-testid="nav-outcomes" onClick={() => onClose(false)}><IconFlag size={14} />Lead outcomes</a>
      {agent.role === 'admin' && <a role="menuitem" class="menu-item" href="#/settings/webhooks" data-testid="nav-webhooks" onClick={() => onClose(false)}><IconExternal size={14} />Webhooks</a>}
      <button type="button" role="menuitem" class="menu-item" data-testid="btn-signout" onClick={signOut}><IconLogout size={14} />Sign out</button>
    </div>
  );
}

// The bell's popover: the server's notifications, newest first (unread ones with a dot);
// a click marks one read and opens its conversation.
function NotificationList({ onClose }) {
  const ref = useRef(null);
  useEffect(() => {
    const onDoc = (e) => { if (ref.current && !ref.current.parentNode.contains(e.target)) onClose(false); };
    // Esc closes; the focus goes back to the bell if it was in the list.
    const onKey = (e) => { if (e.key === 'Escape') onClose(!!ref.current?.contains(document.activeElement)); };
    document.addEventListener('mousedown', onDoc);
    addEventListener('keydown', onKey);
    return () => { document.removeEventListener('mousedown', onDoc); removeEventListener('keydown', onKey); };
  }, []);
  const st = notifications.value;
  const unread = unreadCount.value;
  const now = clock.value;
  return (
    <div class="popover notif-pop" id="notif-pop" role="region" aria-labelledby="notif-title" ref={ref} data-testid="notifications-list">
      <div class="notif-head">
        <h2 class="pop-title" id="notif-title">Notifications</h2>
        <button type="button" class="link-btn" data-testid="notifications-mark-all" disabled={unread === 0}
          onClick={() => keepFocus(() => ref.current?.querySelector('.notif-item'), readAllNotifications)}>Mark all read</button>
      </div>
      {st.error && <p class="pad error" role="alert">{st.error}</p>}
      {st.loading && st.items.length === 0 && <p class="muted pad">Loading…</p>}
      {!st.error && !st.loading && st.items.length === 0 && <p class="muted pad">Nothing yet. Assignments, mentions, escalations and new messages show up here.</p>}
      <ul>
        {st.items.map((n) => (
          <li key={n.id}>
            <button type="button" class={`notif-item${n.read_at ? '' : ' unread'}`} data-testid="notification-item" data-unread={n.read_at ? 'false' : 'true'}
              onClick={() => { openNotification(n); onClose(true); }}>
              <span class="notif-dot" aria-hidden="true" />
              <span class="notif-main">
                <span class="notif-title">{!n.read_at && <span class="sr-only">Unread: </span>}{n.title}</span>
                {n.body && <span class="notif-body">{n.body}</span>}
              </span>
              <time class="muted" dateTime={n.created_at} title={fullTime(n.created_at)}>{shortTime(n.created_at, now)}</time>
            </button>
          </li>
        ))}
      </ul>
      <div class="notif-foot">
        {st.next && <button type="button" class="link-btn" disabled={st.loading}
          onClick={() => keepFocus(() => ref.current?.querySelector('.notif-foot a'), loadMoreNotifications)}>{st.loading ? 'Loading…' : 'Load more'}</button>}
        <a class="link-btn" href="#/settings/notifications" onClick={() => onClose(false)}>Notification settings</a>
      </div>
    </div>
  );
}

function ReconnectBanner() {
  const s = connection.value;
  if (s === 'live' || s === 'connecting') return null;
  return (
    <div class="reconnect" role="status" data-testid="reconnect-indicator" data-state={s}>
      <span class="spinner" aria-hidden="true" />
      {s === 'offline' ? 'You are offline. Changes will appear when the connection is back.' : 'Connection lost. Reconnecting… (nothing is missed: updates resume where they stopped)'}
    </div>
  );
}

function Toasts() {
  return (
    <div class="toasts" role="status" aria-live="polite" aria-atomic="false" data-testid="toasts">
      {toasts.value.map((t) => (
        <div key={t.id} class={`toast t-${t.kind}`} role={t.kind === 'error' ? 'alert' : undefined} data-testid="toast" data-kind={t.kind}>
          <span>{t.text}</span>
          {t.action && <button type="button" class="link-btn" onClick={() => keepFocus(nextToastButton, () => { t.action.run(); dismissToast(t.id); })}>{t.action.label}</button>}
          <button type="button" class="icon-btn sm" title="Dismiss" onClick={() => keepFocus(nextToastButton, () => dismissToast(t.id))}><IconX size={12} /><span class="sr-only">Dismiss notification</span></button>
        </div>
      ))}
    </div>
  );
}

// After a toast's button: the next toast's Dismiss, if any (else the focus stays where the
// action put it, or the page's start).
const nextToastButton = () => document.querySelector('[data-testid="toasts"] .icon-btn');

const SHORTCUTS = [
  ['/', 'Focus search'], ['↑ ↓', 'Move in the list'], ['Enter', 'Open the highlighted conversation'], ['Esc', 'Clear search, close a panel'], ['x', 'Select the highlighted conversation for a bulk action'],
  ['Enter', 'In the composer: send'], ['Shift + Enter', 'In the composer: new line'], ['@', 'In a note: mention a teammate'], ['?', 'Show this help'],
];

function HelpOverlay({ onClose }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    const prev = document.activeElement;
    ref.current?.focus();
    // Modal: Tab stays in the dialog; Esc closes it and the focus returns to where it was.
    const onKey = (e) => {
      if (e.key === 'Escape') { e.preventDefault(); onClose(); return; }
      trapTab(e, ref.current);
    };
    addEventListener('keydown', onKey, true);
    return () => { removeEventListener('keydown', onKey, true); prev?.focus?.(); };
  }, []);
  return (
    <div class="overlay" onMouseDown={(e) => { if (e.target === e.currentTarget) onClose(); }}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="help-title" tabIndex={-1} ref={ref} data-testid="shortcut-help">
        <header><h2 id="help-title">Keyboard shortcuts</h2>
          <button type="button" class="icon-btn" title="Close (Esc)" onClick={onClose}><IconX size={16} /><span class="sr-only">Close</span></button></header>
        <dl class="shortcuts">
          {SHORTCUTS.map(([k, v]) => <div key={k + v}><dt>{k.split(' ').map((p) => (p === '+' ? ' + ' : <kbd key={p}>{p}</kbd>))}</dt><dd>{v}</dd></div>)}
        </dl>
      </div>
    </div>
  );
}
