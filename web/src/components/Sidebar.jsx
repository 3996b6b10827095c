import { useState, useEffect } from 'preact/hooks';
import { filters, setFilters, counts, VIEWS, outcomes, picked, pickedAll, pickAll, clearPicks, bulkAction, agents, me, list, searchQuery, setSearch, searchState, searchMore, activeIndex, openHit, route, knownTags, knownCampaigns, tagFacets, campaignFacets, loadFacets } from '../state.js';
import { ConversationList } from './ConversationList.jsx';
import { NewConversation } from './NewConversation.jsx';
import { IconSearch, IconFilter, IconX, ChannelIcon } from './Icons.jsx';
import { Avatar } from './Avatar.jsx';
import { snippetParts, shortTime, displayName, compactCount, snoozeChoices } from '../util.js';
import { tabKeys, keepFocus } from '../focus.js';

const VIEW_LABEL = { mine: 'Mine', all: 'All', unassigned: 'Unassigned', closed: 'Closed', snoozed: 'Snoozed' };

export function Sidebar() {
  const f = filters.value;
  const [showFilters, setShowFilters] = useState(false);
  const advanced = [f.channel, f.mode, f.campaign, f.outcome, f.period !== 'all' ? f.period : ''].filter(Boolean).length + f.tags.length;
  const searching = searchQuery.value.trim() !== '';
  return (
    <aside class="sidebar" aria-label="Conversation list">
      <div class="sidebar-head">
        <h1 class="pane-title">Conversations</h1>
        <div class="sidebar-actions">
          <NewConversation />
          <button type="button" class={`icon-btn${showFilters || advanced ? ' on' : ''}`} aria-expanded={showFilters ? 'true' : 'false'}
            aria-controls="adv-filters" title="Filters" data-testid="filters-toggle" onClick={() => setShowFilters(!showFilters)}>
            <IconFilter size={16} /><span class="sr-only">Filters</span>
            {advanced > 0 && <span class="dot-count">{advanced}</span>}
          </button>
        </div>
      </div>
      <SearchBox />
      {!searching && (picked.value.size > 0 || pickedAll.value) && <BulkBar />}
      {!searching && !(picked.value.size > 0 || pickedAll.value) && (
        <div class="views" role="tablist" aria-label="Quick filters" onKeyDown={tabKeys}>
          {VIEWS.map((v) => {
            const c = counts.value[v];
            return (
              <button key={v} type="button" role="tab" aria-selected={f.view === v ? 'true' : 'false'} tabIndex={f.view === v ? 0 : -1} aria-controls="conv-list"
                class={`view-btn${f.view === v ? ' on' : ''}`} data-testid={`filter-${v}`} onClick={() => setFilters({ view: v })}>
                {VIEW_LABEL[v]}
                <span class="view-count" data-testid={`count-${v}`} data-count={c ? c.n : ''} aria-label={c ? `${c.n}${c.more ? ' or more' : ''} conversations` : undefined}>{c ? `${compactCount(c.n)}${c.more ? '+' : ''}` : '·'}</span>
              </button>
            );
          })}
        </div>
      )}
      {showFilters && !searching && <AdvancedFilters />}
      {searching ? <SearchResults /> : <ConversationList />}
    </aside>
  );
}

// What to do with the picked conversations (or the whole view): each control acts at once
// through the bulk route, then the picks are cleared; the list follows on the stream.
function BulkBar() {
  const f = filters.value;
  const all = pickedAll.value;
  const inView = counts.value[f.view];
  const total = all ? (inView ? `${compactCount(inView.n)}${inView.more ? '+' : ''}` : 'all') : picked.value.size;
  const more = !all && (list.items.length > picked.value.size || (inView && inView.n > picked.value.size));
  const [tag, setTag] = useState('');
  const act = (action, done) => bulkAction(action, done);
  const choose = (handler) => (e) => { const v = e.currentTarget.value; e.currentTarget.value = ''; if (v !== '') handler(v); };
  return (
    <div class="bulk-bar" role="toolbar" aria-label="Bulk actions" data-testid="bulk-bar">
      <div class="bulk-head">
        <strong data-testid="bulk-count">{total} selected</strong>
        {more && <button type="button" class="link-btn" data-testid="bulk-all" onClick={pickAll}>Select all in this view</button>}
        <button type="button" class="icon-btn sm" title="Clear selection" data-testid="bulk-clear" onClick={clearPicks}><IconX size={14} /><span class="sr-only">Clear selection</span></button>
      </div>
      <div class="bulk-actions">
        {f.view === 'closed'
          ? <button type="button" class="btn" data-testid="bulk-reopen" onClick={() => act({ status: 'open' }, 'Reopened')}>Reopen</button>
          : <button type="button" class="btn" data-testid="bulk-close" onClick={() => act({ status: 'closed' }, 'Closed')}>Close</button>}
        <select aria-label="Assign to" data-testid="bulk-assign" onChange={choose((v) => act({ assign: { agent_id: v === '-' ? null : v } }, v === '-' ? 'Unassigned' : 'Assigned'))}>
          <option value="">Assign…</option>
          <option value="-">Unassigned</option>
          {agents.value.map((a) => <option key={a.id} value={a.id}>{a.name}{a.id === me.value?.agent?.id ? ' (you)' : ''}</option>)}
        </select>
        <select aria-label="AI mode" data-testid="bulk-ai" onChange={choose((v) => act({ ai_mode: v }, 'AI mode changed on'))}>
          <option value="">AI mode…</option>
          <option value="active">AI Active</option>
          <option value="paused">AI Paused</option>
          <option value="manual">Manual only</option>
        </select>
        <select aria-label="Snooze" data-testid="bulk-snooze" onChange={choose((v) => {
          const choice = snoozeChoices().find(([k]) => k === v);
          if (choice) act({ snooze: { until: choice[2].toISOString() } }, 'Snoozed');
        })}>
          <option value="">Snooze…</option>
          {snoozeChoices().map(([k, label]) => <option key={k} value={k}>{label}</option>)}
        </select>
        <select aria-label="Outcome" data-testid="bulk-outcome" onChange={choose((v) => act({ outcome: { outcome: v === '-' ? null : v } }, v === '-' ? 'Outcome cleared on' : `Outcome “${v}”:`))}>
          <option value="">Outcome…</option>
          <option value="-">Not set</option>
          {outcomes.value.map((o) => <option key={o.name} value={o.name}>{o.name}</option>)}
        </select>
        <form class="bulk-tag" onSubmit={(e) => { e.preventDefault(); const t = tag.trim(); if (t) { setTag(''); act({ tags: { add: [t] } }, `Tagged “${t}”:`); } }}>
          <input list="bulk-tag-suggestions" placeholder="Add tag ⏎" aria-label="Add a tag to the selected conversations" value={tag} data-testid="bulk-tag"
            onInput={(e) => setTag(e.currentTarget.value)} />
          <datalist id="bulk-tag-suggestions">{[...knownTags.value].map((t) => <option key={t} value={t} />)}</datalist>
        </form>
      </div>
    </div>
  );
}

// The search box is a combobox over its results: ↑ ↓ move the highlight (the page's
// shortcut), aria-activedescendant names the highlighted hit, Enter opens it. Esc clears
// the search and keeps the focus here (↑ ↓ Enter then work on the list); Esc in an empty
// box leaves it.
function SearchBox() {
  const searching = searchQuery.value.trim() !== '';
  const hits = searchState.value.items.length;
  const active = activeIndex.value;
  return (
    <div class="search" role="search">
      <IconSearch size={15} className="search-icon" />
      <label for="search-input" class="sr-only">Search conversations</label>
      <input id="search-input" type="search" placeholder="Search conversations" autocomplete="off"
        role="combobox" aria-autocomplete="list" aria-expanded={searching ? 'true' : 'false'} aria-controls={searching ? 'search-results' : undefined}
        aria-activedescendant={searching && active < hits ? `hit-${active}` : undefined}
        value={searchQuery.value} data-testid="search-input"
        onInput={(e) => setSearch(e.currentTarget.value)}
        onKeyDown={(e) => { if (e.key === 'Escape') { e.preventDefault(); if (searchQuery.value) setSearch(''); else e.currentTarget.blur(); } }} />
      {searchQuery.value ? (
        <button type="button" class="search-clear" title="Clear search (Esc)" data-testid="search-clear"
          onClick={() => { setSearch(''); document.getElementById('search-input')?.focus(); }}><IconX size={14} /><span class="sr-only">Clear search</span></button>
      ) : <kbd class="search-kbd" aria-hidden="true">/</kbd>}
    </div>
  );
}

function Select({ label, value, onChange, options, testid }) {
  return (
    <label class="field-inline">
      <span>{label}</span>
      <select value={value} data-testid={testid} onChange={(e) => onChange(e.currentTarget.value)}>
        {options.map(([v, l]) => <option key={v} value={v}>{l}</option>)}
      </select>
    </label>
  );
}

function AdvancedFilters() {
  const f = filters.value;
  const [tagText, setTagText] = useState('');
  const addTag = (t) => {
    const tag = t.trim();
    if (tag && !f.tags.includes(tag)) setFilters({ tags: [...f.tags, tag] });
    setTagText('');
  };
  useEffect(() => { loadFacets(); }, []); // fresh lists each time the filters open
  const tagCount = countsOf(tagFacets.value);
  const campaignCount = countsOf(campaignFacets.value);
  return (
    <div id="adv-filters" class="adv-filters" data-testid="advanced-filters">
      <Select label="Channel" value={f.channel} testid="filter-channel" onChange={(v) => setFilters({ channel: v })}
        options={[['', 'All channels'], ['whatsapp', 'WhatsApp'], ['email', 'Email'], ['linkedin', 'LinkedIn']]} />
      <Select label="Mode" value={f.mode} testid="filter-mode" onChange={(v) => setFilters({ mode: v })}
        options={[['', 'All'], ['ai_active', 'AI-handled'], ['ai_paused', 'AI paused'], ['manual', 'Manual']]} />
      <Select label="Outcome" value={f.outcome} testid="filter-outcome" onChange={(v) => setFilters({ outcome: v })}
        options={[['', 'Any outcome'], ...outcomes.value.map((o) => [o.name, `${o.name} (${o.count})`])]} />
      <Select label="Period" value={f.period} testid="filter-period" onChange={(v) => setFilters({ period: v })}
        options={[['all', 'All time'], ['today', 'Today'], ['week', 'Last 7 days'], ['month', 'Last 30 days']]} />
      <label class="field-inline">
        <span>Campaign</span>
        <input list="campaign-options" value={f.campaign} placeholder="Any campaign" data-testid="filter-campaign"
          onChange={(e) => setFilters({ campaign: e.currentTarget.value.trim() })} />
        <datalist id="campaign-options">{[...knownCampaigns.value].map((c) => <option key={c} value={c} label={conversationsLabel(campaignCount.get(c))} />)}</datalist>
      </label>
      <label class="field-inline">
        <span>Tags</span>
        <input id="filter-tag-input" list="tag-filter-options" value={tagText} placeholder="Add a tag…" data-testid="filter-tag-input"
          onInput={(e) => setTagText(e.currentTarget.value)}
          onChange={(e) => { if ([...knownTags.value].includes(e.currentTarget.value)) addTag(e.currentTarget.value); }}
          onKeyDown={(e) => { if (e.key === 'Enter') { e.preventDefault(); addTag(tagText); } }} />
        <datalist id="tag-filter-options">{[...knownTags.value].filter((t) => !f.tags.includes(t)).map((t) => <option key={t} value={t} label={conversationsLabel(tagCount.get(t))} />)}</datalist>
      </label>
      {f.tags.length > 0 && (
        <div class="chips">
          {f.tags.map((t) => (
            <span key={t} class="chip">{t}
              <button type="button" title={`Remove ${t}`}
                onClick={() => keepFocus(() => document.getElementById('filter-tag-input'), () => setFilters({ tags: f.tags.filter((x) => x !== t) }))}><IconX size={11} /><span class="sr-only">Remove filter {t}</span></button>
            </span>
          ))}
        </div>
      )}
      <button type="button" class="link-btn" data-testid="filters-reset"
        onClick={() => setFilters({ channel: '', mode: '', campaign: '', outcome: '', tags: [], period: 'all' })}>Reset filters</button>
    </div>
  );
}

const countsOf = (facets) => new Map(facets.map((x) => [x.name, x.count]));
const conversationsLabel = (n) => (n == null ? undefined : `${n} conversation${n === 1 ? '' : 's'}`);

const FIELD_LABEL = { text: 'Message', name: 'Name', company: 'Company', email: 'Email', phone: 'Phone', tags: 'Tags' };

function SearchResults() {
  const s = searchState.value;
  const active = activeIndex.value;
  const selected = route.value.id;
  return (
    <div class="search-results" id="search-results" role="listbox" aria-label="Search results" data-testid="search-results" data-count={s.items.length}
      aria-busy={s.loading ? 'true' : 'false'}
      onScroll={(e) => { const el = e.currentTarget; if (el.scrollTop + el.clientHeight > el.scrollHeight - 200) searchMore(); }}>
      {s.error && <p class="list-empty error" role="alert">{s.error}</p>}
      {!s.loading && !s.error && s.items.length === 0 && s.q && <p class="list-empty">No results for “{s.q}”.</p>}
      {s.items.map((hit, i) => (
        <div key={`${hit.conversation_id}-${hit.message_id || hit.field}-${i}`} role="option" id={`hit-${i}`}
          aria-selected={i === active ? 'true' : 'false'}
          class={`hit${i === active ? ' active' : ''}${hit.conversation_id === selected ? ' selected' : ''}`}
          data-testid="search-result" data-conversation-id={hit.conversation_id} data-seq={hit.message_id ? hit.seq : undefined}
          onClick={() => { activeIndex.value = i; openHit(hit); }}>
          <Avatar contact={hit.contact} size={30} />
          <div class="hit-main">
            <div class="conv-top">
              <span class="conv-name">{displayName(hit.contact)}</span>
              <time class="conv-time">{shortTime(hit.created_at)}</time>
            </div>
            <div class="hit-snippet">
              <span class="hit-field">{hit.internal ? 'Note' : FIELD_LABEL[hit.field] || hit.field}</span>
              {snippetParts(hit.snippet).map((p, j) => (p.hit ? <mark key={j}>{p.text}</mark> : p.text))}
            </div>
          </div>
          <ChannelIcon channel={hit.channel} size={12} />
        </div>
      ))}
      {s.loading && <p class="list-empty">Searching…</p>}
    </div>
  );
}
