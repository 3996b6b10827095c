import { useState, useEffect } from 'preact/hooks';
import { get, qs } from '../api.js';
import { channels, loadChannels, isAdmin } from '../state.js';
import { DailyBars, DailyLine, HBars, Split } from './Charts.jsx';
import { ChannelIcon } from './Icons.jsx';
import { tabKeys } from '../focus.js';
import { duration, percent, fullTime, utcDaysLabel, CHANNEL_LABEL } from '../util.js';

const PERIODS = [['today', 'Today'], ['week', 'Last 7 days'], ['month', 'Last 30 days'], ['all', 'All time']];
const DAYS = 14;

function lastDays(n) {
  const out = [];
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (let i = n - 1; i >= 0; i--) {
    const from = new Date(today - i * 86_400_000);
    out.push({
      date: from.toISOString().slice(0, 10),
      from: from.toISOString(),
      label: from.toLocaleDateString([], { day: 'numeric', month: 'short', timeZone: 'UTC' }),
      short: from.toLocaleDateString([], { day: 'numeric', timeZone: 'UTC' }),
    });
  }
  return out;
}

export function Analytics() {
  const [period, setPeriod] = useState('week');
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [days, setDays] = useState(null);
  const [daysError, setDaysError] = useState(null);

  useEffect(() => {
    let live = true;
    setError(null);
    get('/api/v1/analytics' + qs({ period })).then((d) => live && setData(d), (e) => live && setError(e.message));
    return () => { live = false; };
  }, [period]);

  // The 14-day series in one request: `interval=day` adds `days`, one report per UTC day
  // of [from, to), oldest first; a day the answer lacks counts as empty.
  useEffect(() => {
    let live = true;
    const ds = lastDays(DAYS);
    get('/api/v1/analytics' + qs({ from: ds[0].from, to: new Date().toISOString(), interval: 'day' })).then((page) => {
      if (!live) return;
      const byDate = new Map((page.days || []).map((d) => [String(d.date).slice(0, 10), d]));
      setDays(ds.map((d) => {
        const row = byDate.get(d.date);
        return {
          ...d,
          opened: row?.conversations_opened || 0,
          resolved: row?.conversations_resolved || 0,
          ai: row?.outbound_messages_ai || 0,
          human: row?.outbound_messages_human || 0,
          frt: row?.avg_first_response_seconds ?? null,
        };
      }));
    }, (e) => { if (live) setDaysError(e.message); });
    loadChannels();
    return () => { live = false; };
  }, []);

  const a = data;
  const reasons = a?.escalations_by_reason ? Object.entries(a.escalations_by_reason).sort((x, y) => y[1] - x[1]) : [];
  return (
    <main class="analytics" id="analytics-main" tabIndex={-1} aria-label="Analytics" data-testid="analytics-page">
      <header class="analytics-head">
        <div>
          <h1>Analytics</h1>
          <p class="muted">{a ? `${utcDaysLabel(a.from, a.to)} (UTC days)` : 'Conversation metrics'}</p>
        </div>
        <div class="seg" role="tablist" aria-label="Period" onKeyDown={tabKeys}>
          {PERIODS.map(([v, l]) => (
            <button key={v} type="button" role="tab" aria-selected={period === v ? 'true' : 'false'} tabIndex={period === v ? 0 : -1} class={period === v ? 'on' : ''} data-testid={`period-${v}`} onClick={() => setPeriod(v)}>{l}</button>
          ))}
        </div>
      </header>
      {error && <p class="error" role="alert">{error}</p>}
      {a && (
        <>
          <section class="kpis" aria-label="Key figures">
            <Kpi testid="kpi-response-time" label="Avg first response" value={duration(a.avg_first_response_seconds)} sub={`median ${duration(a.median_first_response_seconds)} · ${a.first_responses} replies`} />
            <Kpi testid="kpi-resolution" label="Resolution rate" value={percent(a.resolution_rate)} sub={`${a.conversations_resolved} of ${a.conversations_opened} opened`} />
            <Kpi testid="kpi-ai-share" label="Handled by AI" value={percent(a.ai_conversation_share)} sub={`${a.conversations_ai_only} AI only · ${a.conversations_with_human} with a human`} />
            <Kpi testid="kpi-csat" label="Satisfaction" value={a.csat_average != null ? `${a.csat_average.toFixed(1)} / 5` : '—'} sub={a.csat_count ? `${a.csat_count} ratings` : 'no ratings yet'} />
            <Kpi testid="kpi-ai-answer-rate" label="AI answer rate" value={percent(a.ai_answer_rate)} sub={`${a.ai_answered ?? 0} answered · ${a.ai_escalated ?? 0} escalated`} />
          </section>
          <section class="cards">
            <div class="card">
              <h2>Conversations, last {DAYS} days</h2>
              <Legend items={[['bar-a', 'Opened'], ['bar-b', 'Resolved']]} />
              {days ? <DailyBars days={days} label="Conversations opened and resolved per day" series={[{ key: 'opened', label: 'opened', cls: 'bar-a' }, { key: 'resolved', label: 'resolved', cls: 'bar-b' }]} format={(v) => Math.round(v)} /> : <SeriesPending error={daysError} />}
            </div>
            <div class="card">
              <h2>Average first response, last {DAYS} days</h2>
              {days ? <DailyLine days={days} valueKey="frt" label="Average first response time per day" format={(v) => duration(v)} /> : <SeriesPending error={daysError} />}
            </div>
            <div class="card">
              <h2>AI vs manual</h2>
              <h3 class="card-sub">Replies sent</h3>
              <Split a={a.outbound_messages_ai} b={a.outbound_messages_human} aLabel="AI" bLabel="Humans" />
              <h3 class="card-sub">First responses</h3>
              <Split a={a.first_responses_by_ai} b={a.first_responses_by_human} aLabel="AI" bLabel="Humans" />
              <h3 class="card-sub">Replies per day, last {DAYS} days</h3>
              <Legend items={[['bar-a', 'AI'], ['bar-c', 'Humans']]} />
              {days ? <DailyBars days={days} label="Replies per day by AI and humans" series={[{ key: 'ai', label: 'AI', cls: 'bar-a' }, { key: 'human', label: 'humans', cls: 'bar-c' }]} format={(v) => Math.round(v)} /> : <SeriesPending error={daysError} />}
            </div>
            <div class="card">
              <h2>Satisfaction</h2>
              <HBars label="Ratings by stars" rows={[5, 4, 3, 2, 1].map((s) => ({ label: `${s} ★`, value: a.csat_distribution?.[s] || 0, cls: s >= 4 ? 'good' : s === 3 ? 'mid' : 'bad' }))} />
            </div>
            <div class="card">
              <h2>AI agent</h2>
              <dl class="kv">
                <dt>Answered</dt><dd>{a.ai_answered ?? '—'}</dd>
                <dt>Escalated</dt><dd>{a.ai_escalated ?? '—'}</dd>
                <dt>Discarded</dt><dd>{a.ai_discarded ?? '—'}</dd>
                <dt>Median latency</dt><dd>{a.median_ai_latency_ms != null ? `${a.median_ai_latency_ms.toFixed(1)} ms` : '—'}</dd>
                <dt>Feedback</dt><dd>👍 {a.ai_feedback_up ?? 0} · 👎 {a.ai_feedback_down ?? 0}</dd>
              </dl>
              <h3 class="card-sub">Escalations by reason</h3>
              {reasons.length ? <HBars label="Escalations by reason" rows={reasons.map(([r, n]) => ({ label: r.replace(/_/g, ' '), value: n, cls: 'warn' }))} /> : <p class="muted">No escalations in this period.</p>}
            </div>
          </section>
        </>
      )}
      <OutcomeBreakdown period={period} />
      {isAdmin.value && <ChannelHealth />}
    </main>
  );
}

// Lead outcomes in the period, by outcome and by campaign: what an agency reports.
function OutcomeBreakdown({ period }) {
  const [r, setR] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    setError(null);
    get('/api/v1/analytics/outcomes' + qs({ period })).then((d) => live && setR(d), (e) => live && setError(e.message));
    return () => { live = false; };
  }, [period]);
  return (
    <section class="card wide" data-testid="outcome-breakdown">
      <h2>Lead outcomes</h2>
      {error && <p class="error" role="alert">{error}</p>}
      {r && r.items.length === 0 && <p class="muted">No outcome set in this period. Set one in a conversation's details.</p>}
      {r && r.items.length > 0 && (
        <>
          <HBars label="Conversations by outcome" rows={r.by_outcome.map((o) => ({ label: o.name, value: o.count, cls: 'good' }))} />
          <table class="table">
            <thead><tr><th scope="col">Campaign</th><th scope="col">Outcome</th><th scope="col">Conversations</th></tr></thead>
            <tbody>
              {r.items.map((row) => (
                <tr key={`${row.campaign}|${row.outcome}`} data-testid="outcome-row">
                  <td>{row.campaign ?? <span class="muted">No campaign</span>}</td><td>{row.outcome}</td><td>{row.conversations}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}

function SeriesPending({ error }) {
  return error ? <p class="error" role="alert">Could not load the daily series: {error}</p> : <p class="muted">Loading…</p>;
}

function Kpi({ label, value, sub, testid }) {
  return <div class="kpi" data-testid={testid}><span class="kpi-label">{label}</span><strong class="kpi-value">{value}</strong><span class="kpi-sub muted">{sub}</span></div>;
}

function Legend({ items }) {
  return <div class="legend">{items.map(([cls, l]) => <span key={l}><i class={`sw ${cls}`} />{l}</span>)}</div>;
}

const STATUS_CLASS = { connected: 'good', degraded: 'mid', disconnected: 'bad', auth_failed: 'bad', disabled: 'off' };

function ChannelHealth() {
  const list = channels.value;
  return (
    <section class="card wide" data-testid="channel-health">
      <h2>Channel health</h2>
      {list.length === 0 ? <p class="muted">No channels.</p> : (
        <table class="table">
          <thead><tr><th scope="col">Channel</th><th scope="col">Status</th><th scope="col">Circuit</th><th scope="col">Outbox</th><th scope="col">Sent today</th><th scope="col">Limit</th><th scope="col">Last error</th></tr></thead>
          <tbody>
            {list.map((ch) => (
              <tr key={ch.id} data-testid="channel-row" data-status={ch.status}>
                <td><ChannelIcon channel={ch.kind} size={13} /> {ch.name} <span class="muted">{CHANNEL_LABEL[ch.kind] || ch.kind}</span></td>
                <td><span class={`pill h-${STATUS_CLASS[ch.status] || 'mid'}`}>{ch.status.replace('_', ' ')}</span></td>
                <td>{ch.circuit.replace('_', ' ')}</td>
                <td>{ch.outbox_depth}</td>
                <td>{ch.limits.sent_today}{ch.limits.per_day ? ` / ${ch.limits.per_day}` : ''}</td>
                <td>{ch.limits.per_second}/s{ch.limits.per_day ? `, ${ch.limits.per_day}/day` : ', no daily cap'}</td>
                <td>{ch.last_error ? <span title={fullTime(ch.last_error.at)}><code>{ch.last_error.code}</code> {ch.last_error.message}</span> : <span class="muted">None</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
