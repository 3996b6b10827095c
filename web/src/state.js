// Application state (signals) and the actions that change it. Components read signals and
// call actions; only this module talks to the REST API for inbox state, and the stream
// module feeds it deltas through applyDelta.

import { signal, computed, batch } from '@preact/signals';
import { get, post, put, patch, qs, setUnauthorizedHandler } from './api.js';
import { periodStart, CHANNEL_LABEL } from './util.js';

// ---- session -------------------------------------------------------------------------
export const me = signal(undefined); // undefined: checking; null: signed out; else /me body
export const agents = signal([]);
export const agentsById = computed(() => new Map(agents.value.map((a) => [a.id, a])));
export const isAdmin = computed(() => me.value?.agent?.role === 'admin');

setUnauthorizedHandler(() => {
  if (me.value) toast('Your session ended. Sign in again.', 'warn');
  me.value = null;
});

// ---- routing (hash) --------------------------------------------------------------------
function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [page, id] = h.split('/');
  if (page === 'analytics') return { page: 'analytics' };
  if (page === 'settings') return { page: 'settings', section: id || 'notifications' };
  if (page === 'invite') return { page: 'invite', code: decodeURIComponent(id || '') };
  return { page: 'conversations', id: id ? decodeURIComponent(id) : null };
}
export const route = signal(parseHash());
addEventListener('hashchange', () => { route.value = parseHash(); });
// `replace`: instead of the current entry (a conversation that turned out merged away).
export function navigate(hash, replace = false) {
  if (location.hash === hash) return;
  if (replace) location.replace(hash); else location.hash = hash;
}
export const openConversation = (id) => navigate(`#/conversations/${encodeURIComponent(id)}`);

// A clock for relative times ("5m"): ticks every 30 s so rows age without a reload.
export const clock = signal(Date.now());
setInterval(() => { clock.value = Date.now(); }, 30_000);

// ---- toasts ------------------------------------------------------------------------------
export const toasts = signal([]);
let toastSeq = 0;
export function toast(text, kind = 'info', action = null) {
  const id = ++toastSeq;
  toasts.value = [...toasts.value.slice(-2), { id, text, kind, action }];
  setTimeout(() => dismissToast(id), kind === 'error' ? 8000 : kind === 'ok' ? 3500 : 6000);
}
export function dismissToast(id) { toasts.value = toasts.value.filter((t) => t.id !== id); }

// ---- filters, list, counts ---------------------------------------------------------------
export const VIEWS = ['mine', 'all', 'unassigned', 'closed', 'snoozed'];
export const filters = signal({ view: 'all', channel: '', mode: '', campaign: '', outcome: '', tags: [], period: 'all' });
export const counts = signal({});
// Tag and campaign suggestions: the server's lists (`GET /api/v1/tags`, `/api/v1/campaigns`,
// most used first, with counts), then values seen on cards since the last fetch (a card can
// carry a tag newer than the list), then a few common tags. Each fetch replaces what was
// seen, so a tag removed everywhere drops out.
const COMMON_TAGS = ['needs-human', 'opted-out', 'hot', 'vip', 'follow-up'];
export const tagFacets = signal([]); // [{ name, count }] from the server
export const campaignFacets = signal([]);
const seenTags = signal(new Set());
const seenCampaigns = signal(new Set());
const union = (facets, seen, common = []) => new Set([...facets.map((f) => f.name), ...seen, ...common]);
export const knownTags = computed(() => union(tagFacets.value, seenTags.value, COMMON_TAGS));
export const knownCampaigns = computed(() => union(campaignFacets.value, seenCampaigns.value));

let facetGen = 0;
export async function loadFacets() {
  const gen = ++facetGen;
  const [tags, campaigns] = await Promise.all([
    get('/api/v1/tags').catch(() => null),
    get('/api/v1/campaigns').catch(() => null),
  ]);
  if (gen !== facetGen) return;
  batch(() => {
    if (tags) { tagFacets.value = tags.items; seenTags.value = new Set(); }
    if (campaigns) { campaignFacets.value = campaigns.items; seenCampaigns.value = new Set(); }
  });
}

// The list is large (up to 100k cards): kept in a mutable store, rendered through a version signal.
export const list = { items: [], index: new Map(), head: 0, nextCursor: null, overrides: new Map(), removed: new Set() };
export const listVersion = signal(0);
export const listStatus = signal({ loading: false, error: null, more: false });
export const activeIndex = signal(0); // keyboard highlight in the list or the search results

const bump = () => { listVersion.value++; };

function filterQuery(f, extra = {}) {
  return qs({ view: f.view, channel: f.channel, mode: f.mode, campaign: f.campaign, outcome: f.outcome, tag: f.tags, period: f.period === 'all' ? '' : f.period, ...extra });
}

const MODE_OF = { ai_active: 'active', ai_paused: 'paused', manual: 'manual' };
export function matches(card, f = filters.value, view = f.view) {
  const myId = me.value?.agent?.id;
  // Merged into another conversation: listed through that one.
  if (card.merged_into) return false;
  // Each conversation is in one of: the working views (open or pending), closed, snoozed.
  const state = card.status === 'closed' ? 'closed' : card.snoozed_until ? 'snoozed' : 'active';
  if (state !== (view === 'closed' || view === 'snoozed' ? view : 'active')) return false;
  if (view === 'mine' && card.assignee_id !== myId) return false;
  if (view === 'unassigned' && card.assignee_id) return false;
  if (f.channel && card.channel !== f.channel) return false;
  if (f.mode && card.ai_mode !== MODE_OF[f.mode]) return false;
  if (f.campaign && card.campaign !== f.campaign) return false;
  if (f.outcome && card.outcome !== f.outcome) return false;
  if (f.tags.length && !f.tags.every((t) => card.tags.includes(t))) return false;
  const since = periodStart(f.period);
  if (since !== null && new Date(card.last_activity_at).getTime() < since) return false;
  return true;
}

// Newest activity first, ties by id, newest first (the server's order).
const before = (a, b) => a.last_activity_at > b.last_activity_at || (a.last_activity_at === b.last_activity_at && a.id > b.id);

function insertionPoint(card) {
  let lo = 0, hi = list.items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (before(list.items[mid], card)) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function learn(card) {
  const tags = knownTags.value;
  const fresh = card.tags.filter((t) => !tags.has(t));
  if (fresh.length) seenTags.value = new Set([...seenTags.value, ...fresh]);
  if (card.campaign && !knownCampaigns.value.has(card.campaign)) seenCampaigns.value = new Set([...seenCampaigns.value, card.campaign]);
}

let listGeneration = 0;
let pendingCards = []; // deltas that arrived while the first page was loading
let listLoading = false;

export async function loadList() {
  const gen = ++listGeneration;
  listLoading = true;
  pendingCards = [];
  listStatus.value = { loading: true, error: null, more: false };
  try {
    const page = await get('/api/v1/conversations' + filterQuery(filters.value, { limit: 50 }));
    if (gen !== listGeneration) return null;
    list.items = [];
    list.index = new Map();
    list.overrides = new Map();
    list.removed = new Set();
    list.head = page.head;
    list.nextCursor = page.next_cursor;
    for (const card of page.items) { list.items.push(card); list.index.set(card.id, card); learn(card); }
    listLoading = false;
    for (const { card, removed, offset } of pendingCards) {
      if (offset <= list.head) continue;
      if (removed) removeFromList(removed, offset);
      else applyCardToList(card, offset);
    }
    pendingCards = [];
    activeIndex.value = Math.min(activeIndex.value, Math.max(0, list.items.length - 1));
    listStatus.value = { loading: false, error: null, more: !!list.nextCursor };
    bump();
    return page.head;
  } catch (e) {
    if (gen === listGeneration) {
      listLoading = false;
      listStatus.value = { loading: false, error: e.message, more: false };
    }
    return null;
  }
}

let loadingMore = false;
export async function loadMore() {
  if (loadingMore || !list.nextCursor || listLoading) return;
  loadingMore = true;
  const gen = listGeneration;
  try {
    const page = await get('/api/v1/conversations' + filterQuery(filters.value, { limit: 100, cursor: list.nextCursor }));
    if (gen !== listGeneration) return;
    list.nextCursor = page.next_cursor;
    for (const item of page.items) {
      if (list.index.has(item.id) || list.removed.has(item.id)) continue;
      const card = list.overrides.get(item.id) || item;
      if (card !== item && !matches(card)) continue;
      list.items.push(card);
      list.index.set(card.id, card);
      learn(card);
    }
    listStatus.value = { ...listStatus.value, more: !!list.nextCursor };
    bump();
  } catch (e) {
    toast(`Could not load more conversations: ${e.message}`, 'error');
  } finally {
    loadingMore = false;
  }
}

function applyCardToList(card, offset) {
  if (listLoading) { pendingCards.push({ card, offset }); return; }
  if (offset <= list.head) return; // already in the listing's snapshot
  list.overrides.set(card.id, card);
  unlist(card.id);
  if (matches(card)) {
    const at = insertionPoint(card);
    if (at < list.items.length || !list.nextCursor) {
      list.items.splice(at, 0, card);
      list.index.set(card.id, card);
    }
  }
  learn(card);
  bump();
}

// A conversation erased whole (a lead's erasure, or retention): out of the list, and of its
// later pages (the cursor's snapshot may still hold it).
function removeFromList(id, offset) {
  if (listLoading) { pendingCards.push({ removed: id, offset }); return; }
  if (offset <= list.head) return; // the listing's snapshot is already without it
  list.removed.add(id);
  list.overrides.delete(id);
  if (unlist(id)) activeIndex.value = Math.min(activeIndex.value, Math.max(0, list.items.length - 1));
  bump();
}

// Takes a conversation out of the loaded list; whether it was there.
function unlist(id) {
  const card = list.index.get(id);
  if (!card) return false;
  const at = list.items.indexOf(card);
  if (at >= 0) list.items.splice(at, 1);
  list.index.delete(id);
  return true;
}

export function setFilters(patch1) {
  clearPicks();
  filters.value = { ...filters.value, ...patch1 };
  activeIndex.value = 0;
  loadList();
  refreshCounts(true);
}

// Counts are refreshed at most every 1.2 s on deltas, and at once when the filters change
// (`now`): a pending delayed refresh is brought forward, and a change while a request is in
// flight runs another as soon as it returns, so the counts never stay on old filters.
let countTimer = null;
let countInFlight = false;
let countAgain = false;
export function refreshCounts(now = false) {
  if (countInFlight) {
    if (now) countAgain = 'now';
    else if (!countAgain) countAgain = 'later';
    return;
  }
  if (countTimer) {
    if (!now) return;
    clearTimeout(countTimer);
  }
  countTimer = setTimeout(runCounts, now ? 0 : 300);
}

async function runCounts() {
  countTimer = null;
  countInFlight = true;
  const f = filters.value;
  try {
    const next = {};
    if (!f.campaign && !f.outcome && !f.tags.length && (!f.period || f.period === 'all')) {
      // Exact, from the server's view counters (channel and mode filters only).
      const c = await get('/api/v1/conversations/counts' + qs({ channel: f.channel, mode: f.mode }));
      VIEWS.forEach((view) => { next[view] = { n: c[view], more: false }; });
    } else {
      // Counters do not cover tags, campaigns or periods: the first page's length
      // stands in, with "+" when the view holds more.
      const pages = await Promise.all(VIEWS.map((view) =>
        get('/api/v1/conversations' + filterQuery({ ...f, view }, { limit: 100 }))));
      VIEWS.forEach((view, i) => { next[view] = { n: pages[i].items.length, more: !!pages[i].next_cursor }; });
    }
    if (filters.value === f) counts.value = next; // else a newer refresh follows
  } catch { /* counts are a hint: the next change retries */ }
  countInFlight = false;
  const again = countAgain;
  countAgain = false;
  if (again || filters.value !== f) refreshCounts(again !== 'later');
}

// ---- the open conversation ----------------------------------------------------------------
export const current = signal(null); // detail of the open conversation
export const messages = signal([]); // ascending seq, one contiguous run of the history
// olderBefore / newerAfter: the cursors of the pages before and after the loaded run (null at
// the start / at the newest message); newerLive: messages arrived live past the loaded run.
export const messagesStatus = signal({ loading: false, olderBefore: null, newerAfter: null, loadingNewer: false, newerLive: false, error: null });
export const reasoningFor = signal(null); // seq of the message whose reasoning is shown
// …and its conversation: in a merged timeline, a thread merged into the open one.
export const reasoningThread = signal(null);
// Where the message list scrolls once the messages render: { key, seq }, seq null = the
// newest message. MessageList handles each key once (and highlights a seq briefly).
export const scrollTarget = signal(null);
export const highlightSeq = signal(null); // seq of the message highlighted after a jump

const PAGE = 50;
const messagesPath = (id, params) => `/api/v1/conversations/${encodeURIComponent(id)}/messages` + qs({ limit: PAGE, ...params });
// A conversation with others merged into it reads one timeline of all its threads (newest
// first by time, a cursor per thread), kept in time order here.
const timelinePath = (id, params) => `/api/v1/conversations/${encodeURIComponent(id)}/timeline` + qs({ limit: PAGE, ...params });
export const isMerged = (c) => !!(c && c.merged && c.merged.length);
// The open conversation's threads: its own id and those merged into it.
export const threadsOf = (c) => (c ? [c.id, ...(c.merged || []).map((m) => m.id)] : []);
// A thread as agents know it: its channel kind and the channel's name.
export function threadLabel(t) {
  const name = channels.value.find((ch) => ch.id === t.channel_id)?.name;
  const kind = CHANNEL_LABEL[t.channel] || t.channel;
  return name && name !== kind ? `${kind} · ${name}` : kind;
}
const inTimeline = (c, conversationId) => !!c && (c.id === conversationId || (c.merged || []).some((m) => m.id === conversationId));
const byTime = (a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.seq - b.seq);
let scrollKey = 0;
const scrollToSeq = (seq) => { scrollTarget.value = { key: ++scrollKey, seq }; };

let highlightTimer = null;
export function flashMessage(seq) {
  clearTimeout(highlightTimer);
  highlightSeq.value = seq;
  highlightTimer = setTimeout(() => { highlightSeq.value = null; }, 4000);
}

let currentGen = 0; // the detail
let cardsSeen = 0; // cards of the open conversation taken from the stream
let msgGen = 0; // the message pages: a newer load drops the answers of older ones
let pageLoading = false; // a first page (newest or around a seq) is on its way
// Messages that arrived live while a first page loaded or while the newest page is not
// loaded (id → message): appended once the newest page is. Cleared when a request for
// newer messages leaves, since its answer (or a later one) holds them.
const liveBuffer = new Map();
let jump = null; // { id, seq }: the message the next loadConversation(id) opens at
// Messages of the open conversation that retention removed (`messages_removed`): a page
// requested before the delta may still hold them. Cleared when another one opens.
const removedMessages = new Set();
const kept = (items) => (removedMessages.size ? items.filter((m) => !removedMessages.has(m.id)) : items);

function startMessages() {
  pageLoading = true;
  liveBuffer.clear();
  messages.value = [];
  highlightSeq.value = null;
  messagesStatus.value = { loading: true, olderBefore: null, newerAfter: null, loadingNewer: false, newerLive: false, error: null };
}

function showPage(page, around) {
  pageLoading = false;
  const newerAfter = page.next_after ?? null;
  // A timeline page (no `next_after`) pages on with its own cursor, whatever the card says.
  const timeline = page.next_after === undefined;
  messages.value = kept(page.items).reverse();
  messagesStatus.value = { loading: false, olderBefore: page.next_before, newerAfter, loadingNewer: false, newerLive: newerAfter !== null && liveBuffer.size > 0, error: null, timeline };
  if (newerAfter === null) mergeLive();
  scrollToSeq(around);
}

// The newest page is loaded: append what arrived live after it.
function mergeLive() {
  if (!liveBuffer.size) return;
  const list1 = messages.value;
  const have = new Set(list1.map((m) => m.id));
  if (isMerged(current.value)) {
    // Older than the loaded run: the older pages bring it, in place.
    const first = list1[0];
    const older = (m) => first && byTime(m, first) < 0 && messagesStatus.value.olderBefore != null;
    const fresh = [...liveBuffer.values()].filter((m) => !have.has(m.id) && !older(m));
    liveBuffer.clear();
    if (fresh.length) messages.value = [...list1, ...fresh].sort(byTime);
    return;
  }
  const lastSeq = list1.length ? list1[list1.length - 1].seq : -Infinity;
  const fresh = [...liveBuffer.values()].filter((m) => !have.has(m.id) && m.seq > lastSeq).sort((a, b) => a.seq - b.seq);
  liveBuffer.clear();
  if (fresh.length) messages.value = [...list1, ...fresh];
}

export async function loadConversation(id) {
  const gen = ++currentGen;
  const seenBefore = cardsSeen;
  const mgen = ++msgGen;
  reasoningFor.value = null;
  const around = jump && jump.id === id ? jump.seq : null;
  jump = null;
  if (current.value?.id !== id) removedMessages.clear();
  if (!id) { pageLoading = false; liveBuffer.clear(); current.value = null; messages.value = []; return; }
  const cached = list.index.get(id);
  if (cached && !searchQuery.value.trim()) {
    const at = list.items.indexOf(cached);
    if (at >= 0) activeIndex.value = at;
  }
  batch(() => {
    current.value = cached ? { ...cached, partial: true } : null;
    startMessages();
  });
  try {
    let [detail, page] = await Promise.all([
      get(`/api/v1/conversations/${id}`),
      cached && isMerged(cached) ? get(timelinePath(id)) : get(messagesPath(id, { around })),
    ]);
    if (gen !== currentGen) return;
    // Merged into another: that one holds its timeline (opened if this one is on screen).
    if (detail.merged_into) {
      const r = route.value;
      if (r.page === 'conversations' && r.id === id) navigate(`#/conversations/${encodeURIComponent(detail.merged_into)}`, true);
      return;
    }
    // The list's card was out of date about merged threads: read the right kind of page.
    const timeline = page.next_after === undefined;
    if (isMerged(detail) !== timeline) {
      page = await get(isMerged(detail) ? timelinePath(id) : messagesPath(id, { around }));
      if (gen !== currentGen) return;
    }
    batch(() => {
      // A card the stream brought while this loaded is newer than the detail's.
      current.value = cardsSeen === seenBefore ? detail : { ...detail, ...current.value, partial: false };
      if (mgen === msgGen) showPage(page, around);
    });
    if (detail.unread_count > 0) markRead(id);
  } catch (e) {
    if (gen !== currentGen) return;
    if (mgen === msgGen) {
      pageLoading = false;
      messagesStatus.value = { ...messagesStatus.value, loading: false, error: e.message };
    }
    if (e.status === 404) current.value = null;
  }
}

// Reload the open conversation's messages only: the newest page (around = null) or the
// page around a seq.
async function loadPage(id, around) {
  const mgen = ++msgGen;
  startMessages();
  try {
    const page = await get(isMerged(current.value) ? timelinePath(id) : messagesPath(id, { around }));
    if (mgen === msgGen) showPage(page, around);
  } catch (e) {
    if (mgen !== msgGen) return;
    pageLoading = false;
    messagesStatus.value = { ...messagesStatus.value, loading: false, error: e.message };
  }
}

// Back to the newest messages (from a page deep in the history).
export function loadLatest() {
  const c = current.value;
  if (c) loadPage(c.id, null);
}

// Open a conversation at one of its messages (a search hit): the page around its seq,
// scrolled to it and highlighted. Already loaded: just scroll there.
export function openMessage(id, seq) {
  const r = route.value;
  if (r.page === 'conversations' && r.id === id) {
    if (!pageLoading && current.value?.id === id && messages.value.some((m) => m.seq === seq && m.conversation_id === id)) scrollToSeq(seq);
    else loadPage(id, seq);
    return;
  }
  jump = { id, seq };
  openConversation(id);
}

// A search hit: a message hit (with its seq) opens at the message, others the conversation.
export function openHit(hit) {
  if (hit.merged_into) openConversation(hit.merged_into);
  else if (hit.message_id && typeof hit.seq === 'number') openMessage(hit.conversation_id, hit.seq);
  else openConversation(hit.conversation_id);
}

export async function loadOlder() {
  const c = current.value;
  const st = messagesStatus.value;
  if (!c || st.loading || st.olderBefore === null || st.olderBefore === undefined) return false;
  const mgen = msgGen;
  messagesStatus.value = { ...st, loading: true };
  try {
    const page = await get(st.timeline ? timelinePath(c.id, { before: st.olderBefore }) : messagesPath(c.id, { before: st.olderBefore }));
    if (mgen !== msgGen) return false;
    const have = new Set(messages.value.map((m) => m.id));
    const older = kept(page.items).filter((m) => !have.has(m.id)).reverse();
    batch(() => {
      messages.value = [...older, ...messages.value];
      messagesStatus.value = { ...messagesStatus.value, loading: false, olderBefore: page.next_before, error: null };
    });
    return true;
  } catch (e) {
    if (mgen === msgGen) messagesStatus.value = { ...messagesStatus.value, loading: false, error: e.message };
    return false;
  }
}

// The page after the loaded run (after a jump into the history), until the newest.
export async function loadNewer() {
  const c = current.value;
  const st = messagesStatus.value;
  if (!c || st.loading || st.loadingNewer || st.newerAfter === null) return false;
  const mgen = msgGen;
  liveBuffer.clear(); // this answer or a later one holds them
  messagesStatus.value = { ...st, loadingNewer: true };
  try {
    const page = await get(messagesPath(c.id, { after: st.newerAfter }));
    if (mgen !== msgGen) return false;
    const have = new Set(messages.value.map((m) => m.id));
    const newer = kept(page.items).filter((m) => !have.has(m.id)).reverse();
    const newerAfter = page.next_after ?? null;
    batch(() => {
      messages.value = [...messages.value, ...newer];
      const now = messagesStatus.value;
      messagesStatus.value = { ...now, loadingNewer: false, newerAfter, newerLive: newerAfter !== null && now.newerLive, error: null };
      if (newerAfter === null) mergeLive();
    });
    return true;
  } catch (e) {
    if (mgen === msgGen) messagesStatus.value = { ...messagesStatus.value, loadingNewer: false, error: e.message };
    return false;
  }
}

const readTimers = new Map();
export function markRead(id) {
  clearTimeout(readTimers.get(id));
  readTimers.set(id, setTimeout(() => {
    readTimers.delete(id);
    post(`/api/v1/conversations/${id}/read`).catch(() => {});
  }, 300));
  const card = list.index.get(id);
  if (card && card.unread_count) { card.unread_count = 0; bump(); }
}

// ---- commands ------------------------------------------------------------------------------
async function command(id, name, body, okText) {
  try {
    const card = await post(`/api/v1/conversations/${id}/${name}`, body);
    if (current.value?.id === id && card && card.id) current.value = { ...current.value, ...card };
    if (okText) toast(okText, 'ok');
    return card;
  } catch (e) {
    toast(e.message, 'error');
    return null;
  }
}
export const setAiMode = (id, mode, text) => command(id, 'ai', { mode }, text);
export const assign = (id, agentId) => command(id, 'assign', { agent_id: agentId || null },
  agentId ? `Assigned to ${agentsById.value.get(agentId)?.name || 'agent'}` : 'Unassigned');
export const setStatus = (id, status) => command(id, 'status', { status }, status === 'closed' ? 'Conversation closed' : `Marked ${status}`);
// ---- bulk selection ---------------------------------------------------------------------
// Conversations picked in the list (ids), or the whole view (`pickedAll`: the action then
// names the view's query, so what the server holds beyond the loaded pages is included).
export const picked = signal(new Set());
export const pickedAll = signal(false);
export function togglePick(id) {
  const next = new Set(pickedAll.value ? list.items.map((c) => c.id) : picked.value);
  if (next.has(id)) next.delete(id); else next.add(id);
  batch(() => { picked.value = next; pickedAll.value = false; });
}
export function pickAll() { pickedAll.value = true; }
export function clearPicks() { batch(() => { picked.value = new Set(); pickedAll.value = false; }); }

// One action (`{status}`, `{assign}`, `{tags}`, `{ai_mode}`, `{snooze}`) on every picked
// conversation; the list follows on the stream, one update per conversation.
export async function bulkAction(action, done) {
  const body = pickedAll.value
    ? { query: filterQuery(filters.value).slice(1), ...action }
    : { ids: [...picked.value], ...action };
  try {
    const r = await post('/api/v1/conversations/bulk', body);
    const n = (k) => `${k} conversation${k === 1 ? '' : 's'}`;
    if (r.failed) toast(`${done} ${n(r.succeeded)}; ${n(r.failed)} could not be changed (${r.results.find((x) => !x.ok).error.message})`, 'error');
    else toast(`${done} ${n(r.succeeded)}`, 'ok');
    clearPicks();
    if (action.tags) loadFacets();
    if (action.outcome) loadOutcomes();
  } catch (e) {
    toast(e.message, 'error');
  }
}

// Merges conversation `otherId` (another thread of the lead) into `id`, or splits it off.
export async function mergeInto(id, otherId) {
  const card = await command(id, 'merge', { conversation_id: otherId }, 'Merged into one timeline');
  if (card && current.value?.id === id) loadPage(id, null);
  return card;
}
export async function splitOff(id, otherId) {
  const card = await command(id, 'split', { conversation_id: otherId }, 'Split off: listed on its own again');
  if (card && current.value?.id === id) loadPage(id, null);
  return card;
}

// `until`: a Date. Back to open then, or when the lead writes.
export const snooze = (id, until) => command(id, 'snooze', { until: until.toISOString() },
  `Snoozed until ${until.toLocaleString([], { weekday: 'short', hour: 'numeric', minute: '2-digit' })}`);
export const unsnooze = (id) => command(id, 'status', { status: 'open' }, 'Back in the inbox');
export async function changeTags(id, add, remove) {
  const card = await command(id, 'tags', { add, remove });
  if (card) loadFacets(); // counts moved; a tag removed everywhere leaves the list
  return card;
}
export async function takeOver(c) {
  const myId = me.value?.agent?.id;
  if (!c.assignee_id && myId) await command(c.id, 'assign', { agent_id: myId });
  return setAiMode(c.id, 'paused', 'You took over: the AI is paused');
}

// `attachments`: [{ name, content_type?, data (base64) }], sent only when there are some.
export async function sendMessage(id, text, internal, attachments) {
  const body = { text, internal };
  if (attachments && attachments.length) body.attachments = attachments;
  const msg = await post(`/api/v1/conversations/${id}/messages`, body);
  if (inTimeline(current.value, id)) {
    // Reading older history: show the newest page, which ends with this message.
    if (messagesStatus.value.newerAfter !== null) loadLatest();
    else upsertMessage(msg);
  }
  return msg;
}

export async function updateContact(contactId, fields) {
  const contact = await patch(`/api/v1/contacts/${contactId}`, fields);
  const c = current.value;
  if (c && c.contact.id === contactId) current.value = { ...c, contact: { ...c.contact, ...fields, ...pickContact(contact) } };
  return contact;
}
const pickContact = ({ id, name, email, phone, company, title, avatar_url, profile_url }) => ({ id, name, email, phone, company, title, avatar_url, profile_url });

// Writes to a lead first, on a channel that can (LinkedIn): `to` is { provider_id, name? }.
// Answers { conversation (card), message, created } (created false: the channel already
// had a conversation with the lead and the message went there); the stream brings the card
// to the list. Errors throw (ApiError), for the caller to show.
export function startConversation(channelId, to, text) {
  return post('/api/v1/conversations', { channel_id: channelId, to, text });
}

// A message from the stream (or just sent) into the open conversation, kept in seq order
// and contiguous: past the loaded run while a first page loads or while the newest page is
// not loaded, it waits in liveBuffer; before the loaded run, the older pages bring it.
function upsertMessage(msg) {
  const list1 = messages.value;
  const at = list1.findIndex((m) => m.id === msg.id);
  if (at >= 0) {
    const next = list1.slice();
    // The server leaves out empty reactions and edits and a null deleted_at: their absence
    // in an update clears them.
    next[at] = { ...list1[at], reactions: undefined, edits: undefined, deleted_at: undefined, ...msg };
    messages.value = next;
    return;
  }
  const st = messagesStatus.value;
  const first = list1[0];
  const last = list1[list1.length - 1];
  if (isMerged(current.value)) {
    // One timeline of several threads: in time order; older than the loaded run, the
    // older pages bring it.
    if (pageLoading) { liveBuffer.set(msg.id, { ...liveBuffer.get(msg.id), ...msg }); return; }
    if (first && byTime(msg, first) < 0 && st.olderBefore !== null && st.olderBefore !== undefined) return;
    messages.value = [...list1, msg].sort(byTime);
    return;
  }
  if (pageLoading || (st.newerAfter !== null && (!last || msg.seq > last.seq))) {
    liveBuffer.set(msg.id, { ...liveBuffer.get(msg.id), ...msg });
    if (!pageLoading && !st.newerLive) messagesStatus.value = { ...st, newerLive: true };
    return;
  }
  if (first && msg.seq < first.seq && st.olderBefore !== null && st.olderBefore !== undefined) return;
  if (!last || msg.seq > last.seq) { messages.value = [...list1, msg]; return; }
  const next = [...list1, msg].sort((a, b) => a.seq - b.seq);
  messages.value = next;
}

// ---- canned replies ---------------------------------------------------------------------------
// The workspace's library (`GET /api/v1/canned-replies`, at most 1,000), fetched when the
// composer's `/` picker opens and kept for the session; matched here as the server does:
// shortcuts starting with the query first, then titles holding it.
// `force` (the settings screen) reads it now and lets a failure reach the caller.
export const cannedReplies = signal(null); // null until first loaded
let cannedLoaded = 0;
export async function loadCannedReplies(force = false) {
  if (!force && Date.now() - cannedLoaded < 30_000) return;
  cannedLoaded = Date.now();
  try {
    const r = await get('/api/v1/canned-replies');
    cannedReplies.value = r.items || [];
  } catch (e) {
    cannedLoaded = 0;
    if (force) throw e;
  }
}
export function matchCanned(query) {
  const q = query.toLowerCase();
  const all = cannedReplies.value || [];
  const first = all.filter((r) => r.shortcut.toLowerCase().startsWith(q));
  const then = all.filter((r) => !r.shortcut.toLowerCase().startsWith(q) && r.title.toLowerCase().includes(q));
  return [...first, ...then];
}

// ---- channels -------------------------------------------------------------------------------
export const channels = signal([]);
export async function loadChannels() {
  try {
    const r = await get('/api/v1/channels');
    channels.value = Array.isArray(r) ? r : r.channels || [];
  } catch { /* shown on demand */ }
}

// ---- search -----------------------------------------------------------------------------------
export const searchQuery = signal('');
export const searchState = signal({ loading: false, items: [], error: null, next: null, q: '' });
let searchTimer = null;
let searchGen = 0;
export function setSearch(q) {
  searchQuery.value = q;
  activeIndex.value = 0;
  clearTimeout(searchTimer);
  if (!q.trim()) { searchGen++; searchState.value = { loading: false, items: [], error: null, next: null, q: '' }; return; }
  searchState.value = { ...searchState.value, loading: true };
  searchTimer = setTimeout(() => runSearch(q), 220);
}
async function runSearch(q, cursor = null) {
  const gen = ++searchGen;
  try {
    const page = await get('/api/v1/search' + qs({ q, limit: 30, cursor }));
    if (gen !== searchGen) return;
    const items = cursor ? [...searchState.value.items, ...page.items] : page.items;
    searchState.value = { loading: false, items, error: null, next: page.next_cursor, q };
  } catch (e) {
    if (gen === searchGen) searchState.value = { loading: false, items: [], error: e.message, next: null, q };
  }
}
export function searchMore() {
  const s = searchState.value;
  if (s.next && !s.loading) { searchState.value = { ...s, loading: true }; runSearch(s.q, s.next); }
}

// ---- stream deltas -------------------------------------------------------------------------------
export function applyDelta(d) {
  switch (d.kind) {
    case 'conversation_created':
    case 'conversation_updated': {
      const card = d.conversation;
      applyCardToList(card, d.offset);
      const c = current.value;
      if (c && c.id === card.id) {
        const threads = threadsOf(c).join();
        current.value = { ...c, ...card, partial: c.partial };
        cardsSeen++;
        // Merged into another: open that one (if this one is on screen). Threads merged in
        // or split off: read the timeline again.
        const r = route.value;
        if (card.merged_into) {
          if (r.page === 'conversations' && r.id === c.id) navigate(`#/conversations/${encodeURIComponent(card.merged_into)}`, true);
        } else if (threadsOf(current.value).join() !== threads) loadPage(c.id, null);
      }
      refreshCounts();
      break;
    }
    case 'message_created':
    case 'message_updated': {
      const m = d.message;
      const c = current.value;
      if (inTimeline(c, m.conversation_id)) {
        upsertMessage(m);
        // The reply window follows from the card (conversation_updated): no detail re-read.
        if (d.kind === 'message_created' && m.direction === 'inbound' && document.visibilityState === 'visible') markRead(c.id);
      }
      break;
    }
    case 'notification': {
      // An older server's frame (no `notification`) is left out.
      if (d.agent_id === me.value?.agent?.id && d.notification) onNotification(d.notification);
      break;
    }
    case 'notifications_read': {
      if (d.agent_id === me.value?.agent?.id) queueNotif({ read: d.notification_ids || [] });
      break;
    }
    case 'conversation_removed': {
      const id = d.conversation_id;
      removeFromList(id, d.offset);
      refreshCounts();
      const s1 = searchState.value;
      if (s1.items.some((h) => h.conversation_id === id)) {
        searchState.value = { ...s1, items: s1.items.filter((h) => h.conversation_id !== id) };
      }
      // Its notifications are erased with it (a later step on the server): gone here now.
      queueNotif({ drop: id });
      if (current.value?.id === id || route.value.id === id) {
        current.value = null;
        messages.value = [];
        liveBuffer.clear();
        toast('This conversation was erased.', 'warn');
        navigate('#/conversations');
      }
      break;
    }
    case 'messages_removed': {
      const gone = new Set(d.message_ids || []);
      const c = current.value;
      if (inTimeline(c, d.conversation_id)) {
        for (const id of gone) { liveBuffer.delete(id); removedMessages.add(id); }
        if (messages.value.some((m) => gone.has(m.id))) messages.value = messages.value.filter((m) => !gone.has(m.id));
      }
      const s1 = searchState.value;
      if (s1.items.some((h) => gone.has(h.message_id))) {
        searchState.value = { ...s1, items: s1.items.filter((h) => !gone.has(h.message_id)) };
      }
      break;
    }
    case 'channel_updated': {
      const ch = d.channel;
      const had = channels.value.some((c) => c.id === ch.id);
      channels.value = had ? channels.value.map((c) => (c.id === ch.id ? ch : c)) : [...channels.value, ch];
      if (ch.status !== 'connected') toast(`Channel ${ch.name} is ${ch.status.replace('_', ' ')}`, 'warn');
      break;
    }
    default:
      break;
  }
}

// ---- notifications ------------------------------------------------------------------------------
// The server's notifications for the signed-in agent (`GET /api/v1/me/notifications`, newest
// first, pages of 30) and its unread count, kept live by the `notification` (+1) and
// `notifications_read` (the ids that turned read) deltas. A read of ids this page does not
// hold (older than the loaded pages) refetches the first page, for the server's count.
const NOTIF_PATH = '/api/v1/me/notifications';
export const notifications = signal({ items: [], next: null, loading: false, error: null });
export const unreadCount = signal(0);
let notifGen = 0;
let notifQueue = null; // changes from deltas that arrive while the first page loads
let notifTimer = null;

export async function loadNotifications() {
  const gen = ++notifGen;
  clearTimeout(notifTimer);
  if (!notifQueue) notifQueue = [];
  notifications.value = { ...notifications.value, loading: true, error: null };
  let page = null, error = null;
  try { page = await get(NOTIF_PATH + qs({ limit: 30 })); } catch (e) { error = e.message; }
  if (gen !== notifGen) return;
  const queued = notifQueue;
  notifQueue = null;
  batch(() => {
    if (page) {
      notifications.value = { items: page.items, next: page.next_cursor, loading: false, error: null };
      unreadCount.value = page.unread_count;
    } else {
      notifications.value = { ...notifications.value, loading: false, error };
    }
    queued.forEach(applyNotif);
  });
}

// Soon, once (several reads of unknown ids in a row make one request).
const refetchNotifications = () => { clearTimeout(notifTimer); notifTimer = setTimeout(loadNotifications, 300); };

export async function loadMoreNotifications() {
  const st = notifications.value;
  if (!st.next || st.loading) return;
  const gen = notifGen;
  notifications.value = { ...st, loading: true };
  try {
    const page = await get(NOTIF_PATH + qs({ limit: 30, cursor: st.next }));
    if (gen !== notifGen) return;
    const now = notifications.value;
    const have = new Set(now.items.map((n) => n.id));
    notifications.value = { ...now, items: [...now.items, ...page.items.filter((n) => !have.has(n.id))], next: page.next_cursor, loading: false };
  } catch (e) {
    if (gen === notifGen) notifications.value = { ...notifications.value, loading: false, error: e.message };
  }
}

function queueNotif(change) {
  if (notifQueue) notifQueue.push(change);
  else applyNotif(change);
}

// { add: notification }, { read: [ids] } or { drop: conversation id }.
function applyNotif(change) {
  const st = notifications.value;
  if (change.drop) {
    const gone = st.items.filter((n) => n.conversation_id === change.drop);
    if (!gone.length) return;
    notifications.value = { ...st, items: st.items.filter((n) => n.conversation_id !== change.drop) };
    unreadCount.value = Math.max(0, unreadCount.value - gone.filter((n) => !n.read_at).length);
    return;
  }
  if (change.add) {
    const n = change.add;
    if (st.items.some((x) => x.id === n.id)) return;
    const t = Date.parse(n.created_at);
    let at = 0;
    while (at < st.items.length && Date.parse(st.items[at].created_at) > t) at++;
    const items = [...st.items.slice(0, at), n, ...st.items.slice(at)];
    notifications.value = { ...st, items };
    if (!n.read_at) unreadCount.value++;
    return;
  }
  const ids = new Set(change.read);
  const at = new Date().toISOString();
  let turned = 0;
  const items = st.items.map((n) => {
    if (!ids.has(n.id)) return n;
    ids.delete(n.id);
    if (n.read_at) return n;
    turned++;
    return { ...n, read_at: at };
  });
  if (turned) {
    notifications.value = { ...st, items };
    unreadCount.value = Math.max(0, unreadCount.value - turned);
  }
  if (ids.size) refetchNotifications(); // ids older than the loaded pages
}

function onNotification(raw) {
  const { browser, ...n } = raw;
  // Not for the inbox (`in_app` off for this event): only the browser alert, if any.
  if (n.in_app === false) { if (browser) browserNotification(n, false); return; }
  const known = notifications.value.items.some((x) => x.id === n.id);
  queueNotif({ add: n });
  if (known || n.read_at) return;
  toast(n.title, 'notify', { label: 'Open', run: () => openNotification(n) });
  if (browser) browserNotification(n);
}

// The Notifications API while the tab is open, when the agent looks elsewhere (the server
// said `browser`: the settings want it and it is not quiet hours).
function browserNotification(n, listed = true) {
  if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  try {
    const shown = new Notification(n.title, { body: n.body || '', tag: n.id });
    shown.onclick = () => { window.focus(); shown.close(); if (listed) openNotification(n); else openConversation(n.conversation_id); };
  } catch { /* some mobile browsers show notifications from a service worker only */ }
}

// Marks one read (at once here; the server's answer and the `notifications_read` delta
// agree). A failure refetches, for the server's state.
export function readNotification(id) {
  const item = notifications.value.items.find((x) => x.id === id);
  if (item && item.read_at) return;
  if (item) applyNotif({ read: [id] });
  post(`${NOTIF_PATH}/${encodeURIComponent(id)}/read`).catch(refetchNotifications);
}

export function openNotification(n) {
  readNotification(n.id);
  openConversation(n.conversation_id);
}

export async function readAllNotifications() {
  try {
    await post(`${NOTIF_PATH}/read-all`);
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  const st = notifications.value;
  const at = new Date().toISOString();
  batch(() => {
    notifications.value = { ...st, items: st.items.map((n) => (n.read_at ? n : { ...n, read_at: at })) };
    unreadCount.value = 0;
  });
  refetchNotifications(); // one that came in meanwhile stays unread
}

// After a resync (history gone) or a long sleep: reload what is on screen.
export async function reloadVisible() {
  const head = await loadList();
  refreshCounts(true);
  loadChannels();
  loadNotifications();
  if (current.value) loadConversation(current.value.id);
  if (searchQuery.value.trim()) runSearch(searchQuery.value);
  return head;
}

// The workspace's lead outcome labels, with how many conversations have each.
export const outcomes = signal([]); // [{ name, count }]
export async function loadOutcomes() {
  try { outcomes.value = (await get('/api/v1/outcomes')).items; } catch { /* the select shows what the card has */ }
}
export async function saveOutcomes(items) {
  outcomes.value = (await put('/api/v1/outcomes', { items })).items;
}
export const setOutcome = (id, outcome) => command(id, 'outcome', { outcome: outcome || null },
  outcome ? `Outcome: ${outcome}` : 'Outcome cleared').then((card) => { if (card) loadOutcomes(); return card; });

export async function bootstrap() {
  try {
    agents.value = (await get('/api/v1/agents')).items;
  } catch { /* mentions and assignee names degrade to ids */ }
  loadChannels();
  loadFacets();
  loadOutcomes();
  notifications.value = { items: [], next: null, loading: false, error: null };
  unreadCount.value = 0;
  loadNotifications();
  refreshCounts(true);
  return loadList();
}

export async function signOut() {
  try { await post('/api/v1/auth/logout'); } catch { /* the session may already be gone */ }
  clearPicks();
  me.value = null;
}
