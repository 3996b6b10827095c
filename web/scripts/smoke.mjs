#!/usr/bin/env node
// Browser walkthrough of the inbox in headless Chromium (Debian's /usr/bin/chromium), against
// the real Confab server: the page it serves itself (CONFAB_URL), or the dev server in front
// of it (DEV_URL, `npm run dev`: the current web/dist from disk). Signs in with a real
// account (the demo's by default), takes screenshots into SHOTS, and fails on any console
// error or warning, page error or CSP violation.
//
// Env: CONFAB_URL (default http://127.0.0.1:18080), DEV_URL (optional: open the page there
//      instead), CONFAB_EMAIL (default demo-admin@example.com), CONFAB_PASSWORD (default
//      confab-demo), SHOTS (default /tmp/ui-dev/shots), CHROMIUM (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const CONFAB_URL = (process.env.CONFAB_URL || 'http://127.0.0.1:18080').replace(/\/+$/, '');
const BASE = (process.env.DEV_URL || CONFAB_URL).replace(/\/+$/, '');
const EMAIL = process.env.CONFAB_EMAIL || 'demo-admin@example.com';
const PASSWORD = process.env.CONFAB_PASSWORD || 'confab-demo';
const SHOTS = process.env.SHOTS || '/tmp/ui-dev/shots';
mkdirSync(SHOTS, { recursive: true });
console.log(`smoke: ${BASE}${process.env.DEV_URL ? ` (dev server → ${CONFAB_URL})` : ''} as ${EMAIL}, screenshots in ${SHOTS}`);

// A fresh profile each run: no cookie or cache from an earlier one.
const profile = mkdtempSync(path.join(tmpdir(), 'confab-smoke-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1440, height: 900 },
  deviceScaleFactor: 1,
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
// 401 (GET /me while signed out, the wrong password), 422 (unknown variable) and 429 (the
// sign-in limit, see submitSignIn) are answers the walkthrough provokes.
const expected = /Failed to load resource: the server responded with a status of (401|422|429)/;
page.on('console', (m) => {
  if ((m.type() === 'error' || m.type() === 'warning') && !expected.test(m.text())) problems.push(`console.${m.type()}: ${m.text()}`);
});
page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));

let step = 0;
const steps = [];
async function check(name, fn) {
  step++;
  const t0 = Date.now();
  try {
    await fn();
    steps.push(`ok   ${String(step).padStart(2, '0')} ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    steps.push(`FAIL ${String(step).padStart(2, '0')} ${name}: ${e.message.split('\n')[0]}`);
    await shot(`fail-${step}`).catch(() => {});
  }
}
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png` });
const tid = (id) => page.locator(`[data-testid="${id}"]`);

const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

await check('sign-in page shows, with the security headers', async () => {
  const answer = await page.goto(BASE + '/');
  const h = answer.headers();
  const want = { 'content-security-policy': CSP, 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' };
  for (const [k, v] of Object.entries(want)) if (h[k] !== v) throw new Error(`${k}: ${h[k]}`);
  await tid('signin-form').waitFor();
  await shot('01-signin');
});

// The server allows five sign-in attempts a minute per account (then one every 12 s), so
// runs back to back may meet the limit: a 429 waits and tries again (for up to ~80 s).
async function submitSignIn(password) {
  for (let attempt = 0; ; attempt++) {
    await tid('signin-password').fill(password);
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/auth/login');
    await tid('signin-submit').click();
    const r = await answer;
    if (r.status() !== 429 || attempt >= 6) return r;
    if (attempt === 0) console.log('smoke: sign-in rate-limited by the server; waiting');
    await page.waitForTimeout(13_000);
  }
}

await check('wrong password is refused with a message', async () => {
  await tid('signin-email').fill(EMAIL);
  const r = await submitSignIn('wrong');
  if (r.status() !== 401) throw new Error(`login answered ${r.status()}, not 401`);
  const { code } = (await r.json()).error;
  if (code !== 'invalid_credentials') throw new Error(`login answered ${code}`);
  await page.locator('[data-testid="signin-error"]', { hasText: 'Wrong email or password' }).waitFor();
});

await check('sign in with email and password', async () => {
  const r = await submitSignIn(PASSWORD);
  if (r.status() !== 200) throw new Error(`login answered ${r.status()}: ${await r.text()}`);
  await tid('conversation-list').waitFor();
  await tid('conversation-row').first().waitFor({ timeout: 10_000 });
  await tid('connection-status').and(page.locator('[data-state="live"]')).waitFor({ timeout: 10_000 });
});

if (!(await tid('conversation-list').count())) {
  // Nothing else can work signed out.
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  console.log(steps.join('\n') + '\n\nnot signed in: walkthrough stopped');
  process.exit(1);
}

await check('quick filters and counts', async () => {
  for (const v of ['mine', 'unassigned', 'closed', 'all']) {
    await tid(`filter-${v}`).click();
    await page.waitForFunction((view) => document.querySelector(`[data-testid="filter-${view}"]`)?.getAttribute('aria-selected') === 'true', v);
  }
  await page.waitForFunction(() => document.querySelector('[data-testid="count-all"]')?.dataset.count !== '');
  await tid('conversation-row').first().waitFor();
  await shot('02-inbox');
});

await check('advanced filters: channel and mode', async () => {
  await tid('filters-toggle').click();
  await tid('filter-channel').selectOption('whatsapp');
  await tid('filter-mode').selectOption('ai_active');
  // The All count follows the filters (exact from /conversations/counts): with the demo's
  // few conversations it equals the filtered list's length.
  await page.waitForFunction(() => {
    const n = document.querySelector('[data-testid="count-all"]')?.dataset.count;
    const list = document.querySelector('[data-testid="conversation-list"]')?.dataset.count;
    return n !== '' && n === list;
  }, null, { timeout: 5000 });
  await shot('03-filters');
  await tid('filters-reset').click();
  await tid('filters-toggle').click();
  await tid('conversation-row').first().waitFor();
});

await check('keyboard: ↓ and Enter open a conversation', async () => {
  await page.locator('body').click({ position: { x: 700, y: 450 } });
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('Enter');
  await tid('chat').waitFor();
  await tid('message').first().waitFor({ timeout: 10_000 });
  await shot('04-conversation');
});

let convId = await tid('chat').getAttribute('data-conversation-id').catch(() => null);

await check('reply with a variable is sent with the value filled in', async () => {
  const before = await tid('message').count();
  await tid('composer-input').fill('Hi {{first_name}}, thanks for writing! Our team will follow up shortly.');
  await tid('composer-input').press('Enter');
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="message"]').length > n, before, { timeout: 10_000 });
  const last = await tid('message').last().innerText();
  if (last.includes('{{first_name}}')) throw new Error('the variable was not filled in: ' + last);
});

await check('an unknown variable shows the server error', async () => {
  await tid('composer-input').fill('Hello {{favourite_colour}}');
  await tid('composer-send').click();
  await tid('composer-error').waitFor();
  await shot('05-variable-error');
  await tid('composer-input').fill('');
});

await check('note with an @mention', async () => {
  await tid('composer-mode-note').click();
  await tid('composer-input').click();
  await page.keyboard.type('Please check this one @Dem');
  await tid('mention-list').waitFor();
  await page.keyboard.press('Enter');
  await page.keyboard.type('thanks');
  const text = await tid('composer-input').inputValue();
  if (!text.includes('@Demo Admin')) throw new Error('mention not inserted: ' + text);
  await shot('06-note-mention');
  await page.keyboard.press('Enter');
  await page.locator('[data-testid="message"][data-kind="note"]').last().waitFor({ timeout: 10_000 });
  // Mentioning oneself notifies nobody: an agent never hears of their own actions.
  await tid('composer-mode-reply').click();
});

await check('take over, then resume AI', async () => {
  await tid('btn-resume-ai').or(tid('btn-take-over')).first().waitFor();
  if (await tid('btn-resume-ai').count()) {
    await tid('btn-resume-ai').click();
    await tid('btn-take-over').waitFor();
  }
  await tid('btn-take-over').click();
  await tid('btn-resume-ai').waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="chat-ai-mode"]')?.textContent.includes('Paused'));
  await tid('btn-resume-ai').click();
  await tid('btn-take-over').waitFor();
});

await check('assign, tag and close from the details panel', async () => {
  const me = await page.evaluate(() => fetch('/api/v1/me').then((r) => r.json()));
  await tid('assignee-select').selectOption('');
  await page.waitForFunction(() => document.querySelector('[data-testid="assignee-select"]')?.value === '');
  await tid('assignee-select').selectOption(me.agent.id);
  await page.waitForFunction((id) => document.querySelector('[data-testid="assignee-select"]')?.value === id, me.agent.id);
  await tid('tag-input').fill('vip');
  await tid('tag-input').press('Enter');
  await page.locator('[data-testid="tag"]', { hasText: 'vip' }).waitFor();
  await shot('07-details');
  // The demo's simulated leads write in every few seconds, and an inbound message reopens a
  // closed conversation: the close is checked on the server's answer, and the Closed view
  // is allowed to miss it when the lead has written in meanwhile.
  const closing = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().includes(`/conversations/${convId}/`) && r.request().postData()?.includes('"closed"'));
  await tid('btn-close').click();
  const closed = await closing;
  if (!closed.ok()) throw new Error(`close answered ${closed.status()}`);
  await tid('filter-closed').click();
  try {
    await page.locator(`[data-testid="conversation-row"][data-id="${convId}"]`).waitFor({ timeout: 5000 });
  } catch (e) {
    if ((await tid('chat-status').textContent()) === 'Closed') throw e;
    console.log('smoke: the lead wrote in and reopened the conversation before the Closed check');
  }
  if (await tid('btn-reopen').count()) await tid('btn-reopen').click();
  await tid('btn-close').waitFor();
  await tid('filter-all').click();
});

await check('an AI message opens its reasoning', async () => {
  // Find a conversation with an AI reply or an escalation note.
  await tid('filter-all').click();
  await tid('conversation-row').first().waitFor();
  const rows = await tid('conversation-row').count();
  for (let i = 0; i < Math.min(rows, 8); i++) {
    await tid('conversation-row').nth(i).click();
    await tid('message').first().waitFor();
    await page.waitForTimeout(300);
    if (await tid('open-reasoning').count()) break;
  }
  await tid('open-reasoning').last().click();
  await tid('reasoning-panel').waitFor();
  await tid('reasoning-why').waitFor({ timeout: 5000 });
  await shot('08-reasoning');
  await page.keyboard.press('Escape');
  await tid('details-panel').waitFor();
});

await check('search: / focuses, results are highlighted, Esc clears', async () => {
  await page.locator('body').click({ position: { x: 700, y: 300 } });
  await page.keyboard.press('/');
  await page.waitForFunction(() => document.activeElement?.id === 'search-input');
  await page.keyboard.type('pricing');
  await tid('search-result').first().waitFor({ timeout: 5000 });
  await page.locator('[data-testid="search-result"] mark').first().waitFor();
  await shot('09-search');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await tid('chat').waitFor();
  await tid('search-input').focus();
  await page.keyboard.press('Escape');
  await tid('conversation-list').waitFor();
});

await check('? shows the shortcut help', async () => {
  await page.locator('body').click({ position: { x: 700, y: 300 } });
  await page.keyboard.press('?');
  await tid('shortcut-help').waitFor();
  await shot('10-shortcuts');
  await page.keyboard.press('Escape');
  await tid('shortcut-help').waitFor({ state: 'detached' });
});

await check('live: a new inbound message moves a conversation to the top', async () => {
  await tid('filter-all').click();
  await tid('conversation-row').first().waitFor();
  const firstBefore = await tid('conversation-row').first().getAttribute('data-id');
  const topAt = await page.evaluate(() => document.querySelector('[data-testid="conversation-row"] time')?.getAttribute('datetime'));
  await page.waitForFunction((t) => {
    const el = document.querySelector('[data-testid="conversation-row"] time');
    return el && el.getAttribute('datetime') > t;
  }, topAt, { timeout: 20_000 });
  void firstBefore;
});

await check('analytics page', async () => {
  await tid('nav-analytics').click();
  await tid('analytics-page').waitFor();
  await tid('kpi-response-time').waitFor();
  await page.waitForSelector('svg.chart');
  await page.waitForTimeout(500);
  await shot('11-analytics');
  await tid('nav-conversations').click();
  await tid('conversation-list').waitFor();
});

await check('notifications: the bell lists the server\'s, Mark all read clears the count', async () => {
  await tid('notifications-bell').click();
  await tid('notifications-list').waitFor();
  await page.waitForFunction(() => !document.querySelector('[data-testid="notifications-list"]')?.textContent.includes('Loading'));
  await shot('12-notifications');
  if (await tid('notifications-count').count()) {
    await tid('notifications-mark-all').click();
    await tid('notifications-count').waitFor({ state: 'detached', timeout: 5000 });
    if (await page.locator('[data-testid="notification-item"][data-unread="true"]').count()) throw new Error('unread items left');
  }
  await page.keyboard.press('Escape');
  await tid('notifications-list').waitFor({ state: 'detached' });
});

await check('notification settings: change a delivery, save, change it back', async () => {
  await tid('nav-settings').click();
  await tid('notification-settings').waitFor();
  const box = tid('notif-mention-browser');
  await box.waitFor();
  const was = await box.isChecked();
  const saved = () => page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/me/notification-settings' && r.request().method() === 'PUT');
  await box.setChecked(!was);
  let answer = saved();
  await tid('notification-settings-save').click();
  if ((await answer).status() !== 200) throw new Error(`PUT answered ${(await answer).status()}`);
  const now = await page.evaluate(() => fetch('/api/v1/me/notification-settings').then((r) => r.json()));
  if (now.events.mention.browser !== !was) throw new Error('not saved: ' + JSON.stringify(now.events.mention));
  await shot('13-notification-settings');
  await box.setChecked(was);
  answer = saved();
  await tid('notification-settings-save').click();
  await answer;
  await tid('nav-conversations').click();
  await tid('conversation-list').waitFor();
});

await check('sign out', async () => {
  await tid('user-menu').click();
  await tid('btn-signout').click();
  await tid('signin-form').waitFor();
  await tid('signin-toggle-token').click();
  await tid('signin-token').waitFor();
});

await context.close();
rmSync(profile, { recursive: true, force: true });
console.log(steps.join('\n'));
if (problems.length) console.log('\nconsole problems:\n' + [...new Set(problems)].join('\n'));
const failed = steps.filter((s) => s.startsWith('FAIL')).length;
console.log(`\n${steps.length - failed} passed, ${failed + (problems.length ? 1 : 0)} failed`);
process.exit(failed || problems.length ? 1 : 0);
