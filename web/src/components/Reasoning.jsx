import { useState, useEffect, useRef } from 'preact/hooks';
import { current, messages, reasoningFor, reasoningThread, agentsById, toast } from '../state.js';
import { get, post } from '../api.js';
import { IconX, IconThumbUp, IconThumbDown, IconSparkle } from './Icons.jsx';
import { fullTime, percent } from '../util.js';

const DECISION = { answered: 'Answered', escalated: 'Escalated to a person', discarded: 'Discarded (superseded)' };

export function Reasoning() {
  const c = current.value;
  const seq = reasoningFor.value;
  // The message's own conversation: the open one, or a thread merged into it.
  const thread = reasoningThread.value || c?.id;
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const msg = messages.value.find((m) => m.seq === seq && m.conversation_id === thread);
  const panel = useRef(null);
  const seqRef = useRef(seq);
  seqRef.current = seq;
  const hasFocus = useRef(false); // the focus is in the panel (kept while it unmounts)

  const load = async () => {
    try {
      setData(await get(`/api/v1/conversations/${thread}/messages/${seq}/reasoning`));
      setError(null);
    } catch (e) { setError(e.message); }
  };
  useEffect(() => { setData(null); setError(null); if (c && seq) load(); }, [c?.id, thread, seq]);
  useEffect(() => {
    const onKey = (e) => { if (e.key === 'Escape' && !e.defaultPrevented) reasoningFor.value = null; };
    addEventListener('keydown', onKey);
    return () => {
      removeEventListener('keydown', onKey);
      // Closed (Esc, the close button) with the focus inside: it returns to the message's
      // "Why?" button rather than to <body>.
      if (hasFocus.current) {
        const at = seqRef.current;
        requestAnimationFrame(() => {
          if (document.activeElement && document.activeElement !== document.body) return;
          document.querySelector(`[data-testid="message-list"] [data-seq="${at}"] [data-testid="open-reasoning"]`)?.focus();
        });
      }
    };
  }, []);

  const ai = data?.ai || msg?.ai;
  return (
    <aside class="details reasoning" id="reasoning-panel" aria-label="AI reasoning" data-testid="reasoning-panel" data-seq={seq} ref={panel}
      onFocusIn={() => { hasFocus.current = true; }}
      onFocusOut={(e) => { if (e.relatedTarget && !panel.current?.contains(e.relatedTarget)) hasFocus.current = false; }}>
      <header class="reasoning-head">
        <h2><IconSparkle size={14} />AI reasoning</h2>
        <button type="button" class="icon-btn" title="Close (Esc)" data-testid="reasoning-close" onClick={() => { reasoningFor.value = null; }}><IconX size={16} /><span class="sr-only">Close</span></button>
      </header>
      {error && <p class="error" role="alert">{error}</p>}
      {!ai && !error && <p class="muted pad">{data ? 'No reasoning was recorded for this message.' : 'Loading…'}</p>}
      {ai && (
        <div class="reasoning-body">
          {msg && <blockquote class="quote">{msg.text}</blockquote>}
          <dl class="kv">
            <dt>Decision</dt><dd data-testid="reasoning-decision"><span class={`pill d-${ai.decision}`}>{DECISION[ai.decision] || ai.decision}</span></dd>
            <dt>Intent</dt><dd data-testid="reasoning-intent"><code>{ai.intent}</code></dd>
            <dt>Confidence</dt>
            <dd data-testid="reasoning-confidence">
              <span class="meter" aria-hidden="true"><span style={{ width: `${Math.round((ai.confidence || 0) * 100)}%` }} /></span>
              {percent(ai.confidence)}
            </dd>
            {ai.rule && <><dt>Rule</dt><dd><code>{ai.rule}</code></dd></>}
            <dt>Backend</dt><dd>{ai.backend}{ai.model ? ` · ${ai.model}` : ''}{ai.latency_ms != null ? ` · ${ai.latency_ms} ms` : ''}</dd>
          </dl>
          <h3>Why</h3>
          <p class="why" data-testid="reasoning-why">{ai.why}</p>
          <h3>Knowledge used</h3>
          {(!ai.knowledge || ai.knowledge.length === 0) ? <p class="muted">None</p> : (
            <ul class="knowledge" data-testid="reasoning-knowledge">
              {ai.knowledge.map((k) => (
                <li key={k.id}><span>{k.title}</span><span class="meter sm" aria-hidden="true"><span style={{ width: `${Math.round(k.score * 100)}%` }} /></span><span class="muted">{percent(k.score)}</span></li>
              ))}
            </ul>
          )}
          {msg?.sender === 'ai' && <Feedback thread={thread} seq={seq} existing={data?.feedback || []} onDone={load} />}
        </div>
      )}
    </aside>
  );
}

function Feedback({ thread, seq, existing, onDone }) {
  const [rating, setRating] = useState(null);
  const [correction, setCorrection] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const submit = async (r) => {
    setBusy(true);
    setError(null);
    try {
      const body = { rating: r };
      if (r === 'down' && correction.trim()) body.correction = correction.trim();
      await post(`/api/v1/conversations/${thread}/messages/${seq}/feedback`, body);
      toast(r === 'up' ? 'Thanks: feedback recorded' : correction.trim() ? 'Correction saved to the knowledge base' : 'Feedback recorded', 'ok');
      setRating(null);
      setCorrection('');
      onDone();
    } catch (e) { setError(e.message); }
    setBusy(false);
  };
  return (
    <div class="feedback" data-testid="reasoning-feedback">
      <h3>Was this a good answer?</h3>
      <div class="fb-buttons">
        <button type="button" class="btn" disabled={busy} data-testid="feedback-up" onClick={() => submit('up')}><IconThumbUp size={14} />Good</button>
        <button type="button" class={`btn${rating === 'down' ? ' on' : ''}`} disabled={busy} data-testid="feedback-down" onClick={() => setRating('down')}><IconThumbDown size={14} />Needs work</button>
      </div>
      {rating === 'down' && (
        <div class="correction">
          <label for="fb-correction">What should the AI have said? <span class="muted">(optional: it becomes a knowledge article)</span></label>
          <textarea id="fb-correction" rows={3} value={correction} maxLength={5000} data-testid="feedback-correction" onInput={(e) => setCorrection(e.currentTarget.value)} />
          <button type="button" class="btn btn-primary" disabled={busy} data-testid="feedback-submit" onClick={() => submit('down')}>Send feedback</button>
        </div>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      {existing.length > 0 && (
        <ul class="fb-list">
          {existing.map((f) => (
            <li key={f.id}>{f.rating === 'up' ? <IconThumbUp size={12} /> : <IconThumbDown size={12} />} {agentsById.value.get(f.agent_id)?.name || 'Agent'} · {fullTime(f.created_at)}
              {f.correction && <div class="muted">“{f.correction}”</div>}</li>
          ))}
        </ul>
      )}
    </div>
  );
}
