import { useState, useEffect, useRef, useLayoutEffect } from 'preact/hooks';
import { current, agents, agentsById, assign, setStatus, snooze, unsnooze, outcomes, setOutcome, changeTags, setAiMode, updateContact, knownTags, tagFacets, me, openConversation, mergeInto, splitOff, threadLabel } from '../state.js';
import { get } from '../api.js';
import { Avatar } from './Avatar.jsx';
import { ChannelIcon, IconX, IconTag, IconExternal, IconUser, IconLinkedIn, IconClock } from './Icons.jsx';
import { CHANNEL_LABEL, STATUS_LABEL, snoozeChoices, fullTime, displayName, contactAddress, shortTime, webUrl } from '../util.js';
import { keepFocus, menuKeys } from '../focus.js';

const CONTACT_FIELDS = [
  ['name', 'Name', 'text'], ['email', 'Email', 'email'], ['phone', 'Phone', 'tel'], ['company', 'Company', 'text'], ['title', 'Title', 'text'],
];

export function Details() {
  const c = current.value;
  if (!c) {
    return (
      <aside class="details details-empty" aria-label="Details">
        <div class="empty-state">
          <div class="empty-art" aria-hidden="true"><IconUser size={26} /></div>
          <h2>No conversation open</h2>
          <p>Its status, assignee, AI mode, tags and contact details show here.</p>
        </div>
      </aside>
    );
  }
  const profile = webUrl(c.contact.profile_url);
  return (
    <aside class="details" aria-label="Details" data-testid="details-panel">
      <div class="details-head">
        <Avatar contact={c.contact} size={56} />
        <h2>{displayName(c.contact)}</h2>
        {contactAddress(c) && <p class="details-address" data-testid="detail-address">{contactAddress(c)}</p>}
        {profile && (
          <p class="details-profile">
            <a href={profile} target="_blank" rel="noopener noreferrer" data-testid="profile-link">
              <IconLinkedIn size={13} />LinkedIn profile<IconExternal size={11} /><span class="sr-only"> (opens in a new tab)</span></a>
          </p>
        )}
        <p class="muted">{[c.contact.title, c.contact.company].filter(Boolean).join(' · ') || '\u00a0'}</p>
        <div class="quick-actions">
          {c.status !== 'closed'
            ? <button type="button" class="btn btn-primary" data-testid="btn-close" onClick={() => setStatus(c.id, 'closed')}>Close conversation</button>
            : <button type="button" class="btn" data-testid="btn-reopen" onClick={() => setStatus(c.id, 'open')}>Reopen</button>}
          {c.status !== 'closed' && !c.snoozed_until && <SnoozeButton c={c} />}
        </div>
        {c.snoozed_until && (
          <p class="snoozed-note" data-testid="snoozed-note" role="status">
            <IconClock size={13} />Snoozed until {fullTime(c.snoozed_until)}, or until the lead writes.
            <button type="button" class="link-btn" data-testid="btn-unsnooze" onClick={() => unsnooze(c.id)}>Unsnooze</button>
          </p>
        )}
      </div>
      <Section title="Conversation">
        <dl class="kv">
          <dt>Channel</dt><dd><ChannelIcon channel={c.channel} size={12} /> {CHANNEL_LABEL[c.channel] || c.channel}</dd>
          <dt><label for="d-status">Status</label></dt>
          <dd>
            <select id="d-status" value={c.status} data-testid="status-select" onChange={(e) => setStatus(c.id, e.currentTarget.value)}>
              {Object.entries(STATUS_LABEL).map(([v, l]) => <option key={v} value={v}>{l}</option>)}
            </select>
          </dd>
          <dt><label for="d-assignee">Assigned to</label></dt>
          <dd>
            <select id="d-assignee" value={c.assignee_id || ''} data-testid="assignee-select" onChange={(e) => assign(c.id, e.currentTarget.value || null)}>
              <option value="">Unassigned</option>
              {agents.value.map((a) => <option key={a.id} value={a.id}>{a.name}{a.id === me.value?.agent?.id ? ' (you)' : ''}</option>)}
              {c.assignee_id && !agentsById.value.has(c.assignee_id) && <option value={c.assignee_id}>Unknown agent</option>}
            </select>
          </dd>
          <dt><label for="d-mode">AI mode</label></dt>
          <dd>
            <select id="d-mode" value={c.ai_mode} data-testid="ai-mode-select" onChange={(e) => setAiMode(c.id, e.currentTarget.value, null)}>
              <option value="active">AI Active</option>
              <option value="paused">AI Paused</option>
              <option value="manual">Manual only</option>
            </select>
          </dd>
          <dt><label for="d-outcome">Outcome</label></dt>
          <dd>
            <select id="d-outcome" value={c.outcome || ''} data-testid="outcome-select" onChange={(e) => setOutcome(c.id, e.currentTarget.value)}>
              <option value="">Not set</option>
              {outcomes.value.map((o) => <option key={o.name} value={o.name}>{o.name}</option>)}
              {c.outcome && !outcomes.value.some((o) => o.name === c.outcome) && <option value={c.outcome}>{c.outcome}</option>}
            </select>
            {c.suggested_outcome && (
              <p class="suggestion" data-testid="outcome-suggestion">
                AI suggests <strong>{c.suggested_outcome.outcome}</strong>: {c.suggested_outcome.reason}{' '}
                <button type="button" class="link-btn" data-testid="outcome-accept" onClick={() => setOutcome(c.id, c.suggested_outcome.outcome)}>Accept</button>
              </p>
            )}
          </dd>
          <dt>Campaign</dt><dd data-testid="detail-campaign">{c.campaign || <span class="muted">None</span>}</dd>
          <dt>Started</dt><dd title={fullTime(c.created_at)}>{fullTime(c.created_at)}</dd>
          {c.first_response_at && <><dt>First reply</dt><dd>{c.first_responder === 'ai' ? 'AI' : 'Human'}, {fullTime(c.first_response_at)}</dd></>}
          {c.csat != null && <><dt>Satisfaction</dt><dd>{'★'.repeat(c.csat)}{'☆'.repeat(5 - c.csat)}</dd></>}
        </dl>
      </Section>
      <Section title="Tags"><Tags c={c} /></Section>
      <Section title="Contact">
        <ContactFields c={c} />
      </Section>
      <Threads c={c} />
      <LeadConversations c={c} />
      <ActivityLog c={c} />
    </aside>
  );
}

// A datetime-local value ("2026-12-08T09:00") of a Date, in local time.
const localInput = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);

// Snooze: a menu of common times and "Pick a time…" (a date and time field). ↑ ↓ move in
// the menu, Esc closes it and returns the focus to the button.
function SnoozeButton({ c }) {
  const [open, setOpen] = useState(false);
  const [picking, setPicking] = useState(false);
  const [when, setWhen] = useState('');
  const button = useRef(null);
  const box = useRef(null);
  const close = (refocus) => { setOpen(false); setPicking(false); if (refocus) button.current?.focus(); };
  useLayoutEffect(() => {
    if (!open) return undefined;
    box.current?.querySelector(picking ? 'input' : '[role=menuitem]')?.focus();
    const onDoc = (e) => { if (box.current && !box.current.parentNode.contains(e.target)) close(false); };
    document.addEventListener('mousedown', onDoc);
    return () => document.removeEventListener('mousedown', onDoc);
  }, [open, picking]);
  const choose = async (until) => { close(true); await snooze(c.id, until); };
  const pick = (e) => {
    e.preventDefault();
    const until = new Date(when);
    if (!Number.isNaN(until.getTime())) choose(until);
  };
  return (
    <div class="snooze">
      <button type="button" class="btn" ref={button} aria-haspopup="menu" aria-expanded={open ? 'true' : 'false'} aria-controls="snooze-menu"
        data-testid="btn-snooze" onClick={() => (open ? close(false) : setOpen(true))}><IconClock size={14} />Snooze</button>
      {open && !picking && (
        <div class="popover snooze-pop" role="menu" id="snooze-menu" aria-label="Snooze until" ref={box} data-testid="snooze-menu"
          onKeyDown={(e) => menuKeys(e, () => close(true))}>
          {snoozeChoices().map(([key, label, until]) => (
            <button key={key} type="button" role="menuitem" class="menu-item" data-testid={`snooze-${key}`} onClick={() => choose(until)}>
              {label}<span class="muted">{until.toLocaleString([], { weekday: 'short', hour: 'numeric', minute: '2-digit' })}</span>
            </button>
          ))}
          <button type="button" role="menuitem" class="menu-item" data-testid="snooze-pick"
            onClick={() => { setWhen(localInput(new Date(Date.now() + 86_400_000))); setPicking(true); }}>Pick a date and time…</button>
        </div>
      )}
      {open && picking && (
        <form class="popover snooze-pop pad" id="snooze-menu" ref={box} data-testid="snooze-form" onSubmit={pick}
          onKeyDown={(e) => { if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); close(true); } }}>
          <label for="snooze-at" class="snooze-label">Snooze until</label>
          <input id="snooze-at" type="datetime-local" required value={when} min={localInput(new Date())} max={localInput(new Date(Date.now() + 366 * 86_400_000))} data-testid="snooze-at"
            onInput={(e) => setWhen(e.currentTarget.value)} />
          <div class="snooze-actions">
            <button type="button" class="btn" onClick={() => close(true)}>Cancel</button>
            <button type="submit" class="btn btn-primary" data-testid="snooze-submit">Snooze</button>
          </div>
        </form>
      )}
    </div>
  );
}

function Section({ title, children }) {
  return <section class="d-section"><h3>{title}</h3>{children}</section>;
}

function Tags({ c }) {
  const [text, setText] = useState('');
  const box = useRef(null);
  const add = async (t) => {
    const tag = t.trim();
    if (!tag) return;
    setText('');
    if (!c.tags.includes(tag)) await changeTags(c.id, [tag], []);
  };
  // A tag's remove button, a suggestion and Add go away (or off) once used: the focus moves
  // to the neighbouring one of the same kind, else to the tag input.
  const near = (testid, i) => () => {
    const all = box.current ? box.current.querySelectorAll(`[data-testid="${testid}"]`) : [];
    return all[i] || all[i - 1] || document.getElementById('tag-input');
  };
  const suggestions = [...knownTags.value].filter((t) => !c.tags.includes(t));
  const used = new Map(tagFacets.value.map((x) => [x.name, x.count]));
  return (
    <div class="tags" data-testid="tags" ref={box}>
      <div class="chips">
        {c.tags.length === 0 && <span class="muted">No tags yet</span>}
        {c.tags.map((t, i) => (
          <span key={t} class="chip" data-testid="tag">{t}
            <button type="button" title={`Remove tag ${t}`} data-testid="tag-remove" onClick={() => keepFocus(near('tag-remove', i), () => changeTags(c.id, [], [t]))}><IconX size={11} /><span class="sr-only">Remove tag {t}</span></button>
          </span>
        ))}
      </div>
      <div class="tag-add">
        <IconTag size={13} />
        <label for="tag-input" class="sr-only">Add a tag</label>
        <input id="tag-input" list="tag-suggestions" placeholder="Add a tag…" value={text} data-testid="tag-input"
          onInput={(e) => setText(e.currentTarget.value)}
          onKeyDown={(e) => { if (e.key === 'Enter') { e.preventDefault(); add(text); } }} />
        <datalist id="tag-suggestions">{suggestions.map((t) => <option key={t} value={t} />)}</datalist>
        <button type="button" class="btn btn-sm" data-testid="tag-add" disabled={!text.trim()} onClick={() => keepFocus(() => document.getElementById('tag-input'), () => add(text))}>Add</button>
      </div>
      {suggestions.length > 0 && (
        <div class="suggest">
          {suggestions.slice(0, 5).map((t, i) => <button key={t} type="button" class="chip chip-suggest" data-testid="tag-suggestion" aria-label={`Add tag ${t}`}
            title={used.has(t) ? `On ${used.get(t)} conversation${used.get(t) === 1 ? '' : 's'}` : undefined} onClick={() => keepFocus(near('tag-suggestion', i), () => add(t))}>+ {t}</button>)}
        </div>
      )}
    </div>
  );
}

function ContactFields({ c }) {
  return (
    <div class="contact-fields">
      {CONTACT_FIELDS.map(([key, label, type]) => <ContactField key={`${c.contact.id}-${key}`} contact={c.contact} field={key} label={label} type={type} />)}
    </div>
  );
}

function ContactField({ contact, field, label, type }) {
  const saved = contact[field] || '';
  const [value, setValue] = useState(saved);
  const [state, setState] = useState({ saving: false, error: null, ok: false });
  useEffect(() => { setValue(saved); }, [saved]);
  const save = async () => {
    const v = value.trim();
    if (v === saved) return;
    setState({ saving: true, error: null, ok: false });
    try {
      await updateContact(contact.id, { [field]: v === '' ? null : v });
      setState({ saving: false, error: null, ok: true });
      setTimeout(() => setState((s) => ({ ...s, ok: false })), 1500);
    } catch (e) {
      setState({ saving: false, error: e.message, ok: false });
    }
  };
  const id = `cf-${field}`;
  return (
    <div class={`cf${state.error ? ' has-error' : ''}`}>
      <label for={id}>{label}</label>
      <input id={id} type={type} value={value} placeholder="—" data-testid={`contact-${field}`} aria-invalid={state.error ? 'true' : 'false'}
        onInput={(e) => setValue(e.currentTarget.value)} onBlur={save}
        onKeyDown={(e) => { if (e.key === 'Enter') { e.preventDefault(); e.currentTarget.blur(); } if (e.key === 'Escape') { setValue(saved); setState({ saving: false, error: null, ok: false }); } }} />
      {state.saving && <span class="cf-state muted">Saving…</span>}
      {state.ok && <span class="cf-state ok">Saved</span>}
      {state.error && <span class="cf-error" role="alert">{state.error}</span>}
    </div>
  );
}

// "View lead": the contact's other conversations, on every channel.
// Who did what to the conversation, newest first: read when opened and again after each
// change of its card (the server records the change in the same batch).
const ACTION_TEXT = {
  assigned: (d) => `assigned it to ${agentsById.value.get(d.agent_id)?.name || 'an agent'}`,
  unassigned: () => 'unassigned it',
  tags_changed: (d) => [d.added && `tagged it ${d.added}`, d.removed && `removed ${d.removed}`].filter(Boolean).join(', '),
  status_changed: (d) => (d.to === 'closed' ? 'closed it' : d.from === 'closed' ? 'reopened it' : `marked it ${d.to}`),
  ai_mode_changed: (d) => ({ paused: 'paused the AI', active: 'resumed the AI', manual: 'set it to manual only' }[d.to] || 'changed the AI mode'),
  snoozed: (d) => `snoozed it until ${fullTime(d.until)}`,
  snooze_ended: () => 'ended the snooze',
  outcome_changed: (d) => (d.to ? `set the outcome to ${d.to}` : 'cleared the outcome'),
  csat_recorded: (d) => `recorded a satisfaction of ${d.rating}/5`,
  contact_edited: () => "edited the lead's details",
  merged: () => 'merged another conversation of the lead into this one',
  merged_into: () => 'merged this conversation into another',
  split: () => 'split a conversation off this one',
  split_from: () => 'split this conversation off',
};
const WHO = { ai: 'The AI', system: 'Confab', lead: 'The lead', provider: 'Someone on the provider', operator: 'The operator' };

function ActivityLog({ c }) {
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  const key = [c.id, c.status, c.assignee_id, c.ai_mode, c.tags.join(','), c.snoozed_until, c.outcome, (c.merged || []).length].join('|');
  useEffect(() => {
    let live = true;
    get(`/api/v1/conversations/${c.id}/activity?limit=20`).then((p) => { if (live) { setItems(p.items); setError(null); } }, (e) => live && setError(e.message));
    return () => { live = false; };
  }, [key]);
  return (
    <Section title="Activity">
      {error && <p class="error">{error}</p>}
      {items && items.length === 0 && <p class="muted">Nothing changed yet.</p>}
      {items && items.length > 0 && (
        <ol class="activity" data-testid="activity">
          {items.map((a) => {
            const who = a.by.kind === 'agent' ? (agentsById.value.get(a.by.agent_id)?.name || 'An agent') : WHO[a.by.kind] || a.by.kind;
            const what = (ACTION_TEXT[a.action] || (() => a.action.replace(/_/g, ' ')))(a.details);
            return <li key={a.id} data-testid="activity-item"><span>{who} {what}</span> <time class="muted" dateTime={a.at} title={fullTime(a.at)}>{shortTime(a.at)}</time></li>;
          })}
        </ol>
      )}
    </Section>
  );
}

// The lead's threads in this conversation (merged in, each on its own channel), the lead's
// other conversations that can join it, and a search for any other conversation of the
// workspace (the same person under another contact: their WhatsApp and their email): one
// timeline, split again at any time.
function Threads({ c }) {
  const [others, setOthers] = useState(null);
  const [busy, setBusy] = useState(null);
  const [finding, setFinding] = useState(false);
  const [q, setQ] = useState('');
  const [found, setFound] = useState(null);
  const finder = useRef(null);
  const section = useRef(null);
  const merged = c.merged || [];
  const key = [c.id, c.contact.id, merged.map((m) => m.id).join()].join('|');
  useEffect(() => {
    let live = true;
    setOthers(null);
    get(`/api/v1/contacts/${c.contact.id}`).then((r) => {
      if (live) setOthers(r.conversations.filter((o) => o.id !== c.id && !o.merged_into && !(o.merged || []).length));
    }, () => live && setOthers([]));
    return () => { live = false; };
  }, [key]);
  useEffect(() => { setFinding(false); setQ(''); setFound(null); }, [c.id]);
  useEffect(() => { if (finding) finder.current?.focus(); }, [finding]);
  useEffect(() => {
    const query = q.trim();
    if (!query) { setFound(null); return undefined; }
    let live = true;
    const timer = setTimeout(() => {
      get(`/api/v1/search?q=${encodeURIComponent(query)}&limit=20`).then((r) => {
        if (!live) return;
        const seen = new Set([c.id, ...merged.map((m) => m.id), ...(others || []).map((o) => o.id)]);
        const hits = [];
        for (const h of r.items) {
          if (seen.has(h.conversation_id) || h.merged_into) continue;
          seen.add(h.conversation_id);
          hits.push(h);
        }
        setFound(hits);
      }, () => live && setFound([]));
    }, 250);
    return () => { live = false; clearTimeout(timer); };
  }, [q, key, (others || []).map((o) => o.id).join()]);
  // The row acted on goes away (merged or split): the focus stays in the section.
  const act = async (id, what) => {
    setBusy(id);
    await what();
    setBusy(null);
    if (section.current && !section.current.contains(document.activeElement)) section.current.focus();
  };
  const closeFinder = () => { setFinding(false); setQ(''); setFound(null); };
  return (
    <section class="d-section" tabIndex={-1} ref={section} aria-labelledby="threads-title">
      <h3 id="threads-title">Threads</h3>
      {merged.length > 0 && (
        <ul class="merged-list" data-testid="merged-threads" aria-label="Threads merged into this conversation">
          {merged.map((m) => (
            <li key={m.id} data-testid="merged-thread">
              <ChannelIcon channel={m.channel} size={12} />
              <span class="merged-what" title={m.preview}>{threadLabel(m)} · <span class="muted">{m.preview}</span></span>
              <button type="button" class="link-btn" data-testid="btn-split" disabled={busy === m.id}
                onClick={() => act(m.id, () => splitOff(c.id, m.id))}>Split</button>
            </li>
          ))}
        </ul>
      )}
      {others && others.length > 0 && (
        <>
          <p class="muted">The lead's other conversations: merge one to read and answer both here.</p>
          <ul class="merged-list" data-testid="merge-candidates">
            {others.map((o) => (
              <li key={o.id} data-testid="merge-candidate">
                <ChannelIcon channel={o.channel} size={12} />
                <span class="merged-what" title={o.preview}>{threadLabel(o)} · <span class="muted">{o.preview}</span></span>
                <button type="button" class="link-btn" data-testid="btn-merge" disabled={busy === o.id}
                  onClick={() => act(o.id, () => mergeInto(c.id, o.id))}>Merge here</button>
              </li>
            ))}
          </ul>
        </>
      )}
      {!finding ? (
        <button type="button" class="link-btn" data-testid="btn-find-merge" onClick={() => setFinding(true)}>Merge another conversation…</button>
      ) : (
        <div class="merge-find">
          <label class="sr-only" for="merge-search">Find the conversation to merge here</label>
          <input id="merge-search" type="search" value={q} placeholder="Name, email, phone or words…" data-testid="merge-search" ref={finder}
            onInput={(e) => setQ(e.currentTarget.value)}
            onKeyDown={(e) => { if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); closeFinder(); section.current?.focus(); } }} />
          {found && found.length === 0 && <p class="muted">No other conversation matches.</p>}
          {found && found.length > 0 && (
            <ul class="merged-list" data-testid="merge-found">
              {found.map((h) => (
                <li key={h.conversation_id} data-testid="merge-found-item">
                  <ChannelIcon channel={h.channel} size={12} />
                  <span class="merged-what" title={displayName(h.contact)}>{displayName(h.contact)} · <span class="muted">{CHANNEL_LABEL[h.channel] || h.channel}</span></span>
                  <button type="button" class="link-btn" data-testid="btn-merge-found" disabled={busy === h.conversation_id}
                    onClick={() => act(h.conversation_id, async () => { if (await mergeInto(c.id, h.conversation_id)) closeFinder(); })}>Merge here</button>
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}

function LeadConversations({ c }) {
  const [open, setOpen] = useState(false);
  const [data, setData] = useState(null);
  useEffect(() => { setOpen(false); setData(null); }, [c.contact.id]);
  const load = async () => {
    setOpen(!open);
    if (!data) {
      try { setData(await get(`/api/v1/contacts/${c.contact.id}`)); } catch (e) { setData({ error: e.message }); }
    }
  };
  return (
    <section class="d-section">
      <button type="button" class="link-btn" aria-expanded={open ? 'true' : 'false'} aria-controls="lead-conversations" data-testid="btn-view-lead" onClick={load}><IconExternal size={13} />View lead</button>
      {open && data && (data.error ? <p class="error">{data.error}</p> : (
        <ul class="lead-convs" id="lead-conversations" aria-label="The lead's conversations" data-testid="lead-conversations">
          {data.conversations.map((cc) => (
            <li key={cc.id}>
              <button type="button" class={cc.id === c.id ? 'current' : ''} onClick={() => openConversation(cc.id)}>
                <ChannelIcon channel={cc.channel} size={12} />
                <span class="lead-prev">{cc.preview}</span>
                <span class="muted">{STATUS_LABEL[cc.status]} · {shortTime(cc.last_activity_at)}</span>
              </button>
            </li>
          ))}
        </ul>
      ))}
    </section>
  );
}
