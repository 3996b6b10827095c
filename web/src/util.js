// Small pure helpers: time formatting, initials, colours, snippets.

const MIN = 60_000, HOUR = 3_600_000, DAY = 86_400_000;

export function shortTime(iso, now = Date.now()) {
  if (!iso) return '';
  const t = new Date(iso);
  const diff = now - t.getTime();
  if (diff < MIN) return 'now';
  if (diff < HOUR) return `${Math.floor(diff / MIN)}m`;
  const today = new Date(now);
  if (t.toDateString() === today.toDateString()) return t.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
  if (diff < 7 * DAY) return t.toLocaleDateString([], { weekday: 'short' });
  return t.toLocaleDateString([], { day: 'numeric', month: 'short' });
}

export function clockTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' }) : '';
}

// A time ahead, short: "3:00 PM" today, "Mon 9:00 AM" within a week, "Dec 24" later.
export function aheadTime(iso, now = Date.now()) {
  const t = new Date(iso);
  if (t.toDateString() === new Date(now).toDateString()) return t.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
  if (t.getTime() - now < 6 * DAY) return t.toLocaleString([], { weekday: 'short', hour: 'numeric', minute: '2-digit' });
  return t.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

// When a snooze option ends: local times, so "tomorrow 9:00" is the agent's morning.
export function snoozeChoices(now = new Date()) {
  const at = (days, hour) => { const d = new Date(now); d.setDate(d.getDate() + days); d.setHours(hour, 0, 0, 0); return d; };
  const toMonday = ((8 - now.getDay()) % 7) || 7;
  return [
    ['1h', 'In 1 hour', new Date(now.getTime() + 3_600_000)],
    ['3h', 'In 3 hours', new Date(now.getTime() + 3 * 3_600_000)],
    ['tomorrow', 'Tomorrow, 9:00', at(1, 9)],
    ['monday', 'Next Monday, 9:00', at(toMonday, 9)],
  ];
}

export function fullTime(iso) {
  return iso ? new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }) : '';
}

// An analytics window [from, to) of whole UTC days, as the days it covers: "Nov 30 – Dec 6,
// 2026", "Dec 6, 2026", or "until Dec 6, 2026" for all time (from the epoch).
export function utcDaysLabel(fromIso, toIso) {
  const day = (ms) => new Date(ms).toLocaleDateString([], { dateStyle: 'medium', timeZone: 'UTC' });
  const from = Date.parse(fromIso), last = Date.parse(toIso) - 1;
  if (Number.isNaN(from) || Number.isNaN(last)) return '';
  if (from <= 0) return `until ${day(last)}`;
  const a = day(from), b = day(last);
  return a === b ? a : `${a} – ${b}`;
}

export function dayLabel(iso, now = Date.now()) {
  const t = new Date(iso);
  const d = new Date(now);
  if (t.toDateString() === d.toDateString()) return 'Today';
  if (t.toDateString() === new Date(now - DAY).toDateString()) return 'Yesterday';
  return t.toLocaleDateString([], { weekday: 'long', day: 'numeric', month: 'long' });
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function hoursLeft(iso, now = Date.now()) {
  const ms = new Date(iso).getTime() - now;
  if (ms <= 0) return null;
  if (ms < HOUR) return `${Math.max(1, Math.round(ms / MIN))} min`;
  return `${Math.floor(ms / HOUR)} h`;
}

// A file size for people: "830 B", "12 KB", "1.4 MB" (binary units); '' when unknown.
export function fileSize(bytes) {
  if (typeof bytes !== 'number' || !(bytes >= 0)) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v < 10 ? v.toFixed(1).replace(/\.0$/, '') : Math.round(v)} ${units[u]}`;
}

export function compactCount(n) {
  if (n < 1000) return String(n);
  if (n < 10_000) return `${(n / 1000).toFixed(1).replace(/\.0$/, '')}k`;
  if (n < 1_000_000) return `${Math.round(n / 1000)}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, '')}M`;
}

export function percent(x) {
  return x === null || x === undefined ? '—' : `${Math.round(x * 100)} %`;
}

// A contact without a name goes by its email's local part ("maria.souza" for
// maria.souza@gmail.com, initials MS), else its phone.
export function displayName(contact) {
  if (!contact) return 'Unknown';
  return (contact.name && contact.name.trim()) || emailLocalPart(contact.email) || contact.phone || 'Unknown lead';
}

export function emailLocalPart(email) {
  if (typeof email !== 'string') return '';
  const e = email.trim();
  const at = e.lastIndexOf('@');
  return at > 0 ? e.slice(0, at) : e;
}

// The address a conversation reaches the contact at: the email for email, the phone for
// WhatsApp; '' when unknown or for other channels.
export function contactAddress(c) {
  if (!c || !c.contact) return '';
  if (c.channel === 'email') return c.contact.email || '';
  if (c.channel === 'whatsapp') return c.contact.phone || '';
  return '';
}

// An email subject without its reply/forward prefixes ("Re: Fwd: AW: Pricing" → "pricing"),
// whitespace collapsed and lower-cased, for comparing the subjects of a thread.
const SUBJECT_PREFIX = /^\s*(?:(?:re|fwd?|aw|wg|sv|antw|tr)(?:\s*\[\d+\]|\s*\(\d+\))?\s*[:：]\s*)+/iu;
export function subjectKey(subject) {
  if (typeof subject !== 'string') return '';
  return subject.replace(SUBJECT_PREFIX, '').replace(/\s+/g, ' ').trim().toLowerCase();
}

export function initials(name) {
  const all = (name || '?').replace(/[^\p{L}\p{N} ]/gu, ' ').trim().split(/\s+/).filter(Boolean);
  const lettered = all.filter((w) => /^\p{L}/u.test(w));
  const words = lettered.length ? lettered : all;
  if (!words.length) return '#';
  return ((words[0][0] || '') + (words.length > 1 ? words[words.length - 1][0] : '')).toUpperCase();
}

const HUES = [12, 35, 150, 190, 215, 250, 280, 330];
export function hueFor(id) {
  let h = 0;
  for (const ch of id || '') h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return HUES[h % HUES.length];
}

// The search snippet is HTML-escaped text with the matches in <b>…</b>: split it into
// parts and unescape the entities; the caller renders them as text nodes only.
export function snippetParts(snippet) {
  const out = [];
  const re = /<b>(.*?)<\/b>/gs;
  let last = 0;
  let m;
  while ((m = re.exec(snippet || ''))) {
    if (m.index > last) out.push({ text: unescapeHtml(snippet.slice(last, m.index)), hit: false });
    out.push({ text: unescapeHtml(m[1]), hit: true });
    last = re.lastIndex;
  }
  if (last < (snippet || '').length) out.push({ text: unescapeHtml(snippet.slice(last)), hit: false });
  return out;
}

const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'", '&#x27;': "'", '&#x2F;': '/' };
export function unescapeHtml(s) {
  return s.replace(/&(?:amp|lt|gt|quot|#39|#x27|#x2F);/g, (e) => ENTITIES[e]);
}

export function periodStart(period, now = Date.now()) {
  if (period === 'today') {
    const d = new Date(now);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  }
  if (period === 'week') return now - 7 * DAY;
  if (period === 'month') return now - 30 * DAY;
  return null;
}

export const CHANNEL_LABEL = { whatsapp: 'WhatsApp', email: 'Email', linkedin: 'LinkedIn' };
// A channel kind for sentences ("Sent from LinkedIn", "Deleted on LinkedIn").
export const channelName = (kind) => CHANNEL_LABEL[kind] || kind || 'the provider';
export const MODE_LABEL = { active: 'AI Active', paused: 'AI Paused', manual: 'Manual only' };
export const STATUS_LABEL = { open: 'Open', pending: 'Pending', closed: 'Closed' };
export const VARIABLES = [
  { name: 'first_name', label: 'First name' },
  { name: 'last_name', label: 'Last name' },
  { name: 'company', label: 'Company' },
  { name: 'title', label: 'Job title' },
  { name: 'agent_name', label: 'Your name' },
];

// Whether the page may show an image from `url` under the CSP (img-src 'self' data:): a
// same-origin URL or a data: image. Anything else is never requested.
export function loadableImage(url) {
  if (typeof url !== 'string' || !url) return false;
  if (/^data:image\//i.test(url)) return true;
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
}

// An http(s) URL to link to (a contact's profile), else '' (never javascript: or data:).
export function webUrl(url) {
  if (typeof url !== 'string' || !url) return '';
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : '';
  } catch {
    return '';
  }
}
