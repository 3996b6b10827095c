#!/usr/bin/env node
// Development server for the web inbox: plain Node 20, no dependencies.
//
// - serves web/dist/ (index.html, app.js, app.css, favicon.svg) with the CSP the
//   gateway will send, so a CSP mistake shows up in development too;
// - proxies /api/*, /healthz, /readyz and the WebSocket upgrade of /api/v1/stream to the
//   Confab server (CONFAB_URL, default http://127.0.0.1:18080), adding
//   `Authorization: Bearer $CONFAB_TOKEN`. The original Host header is kept so the
//   server's same-origin check of the stream sees the browser's origin as its own.
//
// Usage: CONFAB_TOKEN=cfb_… node dev-server.mjs [--fake-auth] [--port 5173] [--host 127.0.0.1]
//
// Environment: CONFAB_URL, CONFAB_TOKEN, PORT, and for --fake-auth CONFAB_AGENT_ID,
// CONFAB_AGENT_NAME, CONFAB_AGENT_EMAIL, CONFAB_AGENT_ROLE, CONFAB_PASSWORD (default
// "demo-password"), CONFAB_WORKSPACE_ID, CONFAB_WORKSPACE_NAME. Unset identity fields are
// read once from GET /api/v1/agents (the agent whose email matches, else the first admin).

import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const distDir = path.join(here, 'dist');
const args = process.argv.slice(2);
const argValue = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const fakeAuth = args.includes('--fake-auth');
const port = Number(argValue('--port', process.env.PORT || 5173));
const host = argValue('--host', '127.0.0.1');
const upstream = new URL(process.env.CONFAB_URL || 'http://127.0.0.1:18080');
const token = process.env.CONFAB_TOKEN || '';

const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; connect-src 'self'; frame-ancestors 'none'";
const securityHeaders = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
};
const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/app.css': ['app.css', 'text/css; charset=utf-8'],
  '/favicon.svg': ['favicon.svg', 'image/svg+xml'],
};

function sendJson(res, status, body, extra = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...securityHeaders, 'content-type': 'application/json', 'cache-control': 'no-store', ...extra });
  res.end(text);
}
const apiError = (res, status, code, message) => sendJson(res, status, { error: { code, message } });

async function serveStatic(req, res, pathname) {
  const entry = STATIC[pathname];
  if (!entry || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  try {
    const body = await readFile(path.join(distDir, entry[0]));
    res.writeHead(200, { ...securityHeaders, 'content-type': entry[1], 'cache-control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end(`dist/${entry[0]} is missing: run npm run build\n`);
  }
  return true;
}

function proxyHeaders(req) {
  const headers = { ...req.headers };
  delete headers.cookie; // the session cookie is ours (fake auth), never the server's business
  if (token) headers.authorization = `Bearer ${token}`;
  return headers;
}

function proxyHttp(req, res) {
  const forward = http.request(
    { host: upstream.hostname, port: upstream.port || 80, method: req.method, path: req.url, headers: proxyHeaders(req) },
    (answer) => {
      res.writeHead(answer.statusCode || 502, answer.headers);
      answer.pipe(res);
    },
  );
  forward.on('error', (err) => {
    if (!res.headersSent) apiError(res, 502, 'unavailable', `the Confab server at ${upstream.origin} is not answering (${err.code || err.message})`);
    else res.destroy();
  });
  req.pipe(forward);
}

// ---------------------------------------------------------------------------------------
// TEMPORARY (until the backend implements cookie sessions, issue 12): --fake-auth answers
// GET /api/v1/me, POST /api/v1/auth/login, /logout and /accept-invite itself, with the
// contract the backend will implement, and refuses every other /api/ call without the
// session cookie, as the real server will. Delete this block when the backend has it.
// ---------------------------------------------------------------------------------------
const sessions = new Set();
let failedLogins = [];
let identity = null;

async function loadIdentity() {
  if (identity) return identity;
  let agents = [];
  try {
    const r = await fetch(new URL('/api/v1/agents', upstream), { headers: { authorization: `Bearer ${token}` } });
    if (r.ok) agents = (await r.json()).items || [];
  } catch { /* the server may be down: fall back to the environment */ }
  const env = process.env;
  const found = agents.find((a) => a.id === env.CONFAB_AGENT_ID)
    || agents.find((a) => env.CONFAB_AGENT_EMAIL && a.email === env.CONFAB_AGENT_EMAIL)
    || agents.find((a) => a.role === 'admin') || agents[0] || {};
  identity = {
    agent: {
      id: env.CONFAB_AGENT_ID || found.id || 'unknown',
      name: env.CONFAB_AGENT_NAME || found.name || 'Demo Agent',
      email: env.CONFAB_AGENT_EMAIL || found.email || 'demo@example.com',
      role: env.CONFAB_AGENT_ROLE || found.role || 'admin',
    },
    workspace: { id: env.CONFAB_WORKSPACE_ID || 'demo', name: env.CONFAB_WORKSPACE_NAME || 'Demo workspace' },
  };
  return identity;
}

function sessionOf(req) {
  const m = /(?:^|;\s*)confab_session=([0-9a-f]+)/.exec(req.headers.cookie || '');
  return m && sessions.has(m[1]) ? m[1] : null;
}

async function readJson(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  try { return JSON.parse(body || '{}'); } catch { return null; }
}

function startSession(res, me) {
  const id = randomBytes(16).toString('hex');
  sessions.add(id);
  sendJson(res, 200, me, { 'set-cookie': `confab_session=${id}; Path=/; HttpOnly; SameSite=Strict` });
}

async function fakeAuthRoute(req, res, pathname) {
  if (pathname === '/api/v1/me' && req.method === 'GET') {
    if (!sessionOf(req)) return apiError(res, 401, 'unauthorized', 'sign in first'), true;
    return sendJson(res, 200, await loadIdentity()), true;
  }
  if (pathname === '/api/v1/auth/login' && req.method === 'POST') {
    const now = Date.now();
    failedLogins = failedLogins.filter((t) => now - t < 60_000);
    if (failedLogins.length >= 5) return apiError(res, 429, 'rate_limited', 'Too many sign-in attempts. Try again in a minute.'), true;
    const body = await readJson(req);
    const me = await loadIdentity();
    const password = process.env.CONFAB_PASSWORD || 'demo-password';
    const ok = body && ((body.token && body.token === token)
      || (body.email && body.email.toLowerCase() === me.agent.email.toLowerCase() && body.password === password));
    if (!ok) {
      failedLogins.push(now);
      return apiError(res, 401, 'invalid_credentials', 'That email and password (or token) do not match an agent.'), true;
    }
    return startSession(res, me), true;
  }
  if (pathname === '/api/v1/auth/accept-invite' && req.method === 'POST') {
    const body = await readJson(req);
    if (!body || !body.invite) return apiError(res, 422, 'missing_field', 'The invite code is missing.'), true;
    if (!body.password || body.password.length < 8) return apiError(res, 422, 'invalid_value', 'Choose a password of at least 8 characters.'), true;
    return startSession(res, await loadIdentity()), true;
  }
  if (pathname === '/api/v1/auth/logout' && req.method === 'POST') {
    const id = sessionOf(req);
    if (id) sessions.delete(id);
    res.writeHead(204, { 'set-cookie': 'confab_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0' });
    return res.end(), true;
  }
  if (pathname.startsWith('/api/') && !sessionOf(req)) return apiError(res, 401, 'unauthorized', 'sign in first'), true;
  return false;
}
// --------------------------------------------------------------------- end TEMPORARY ----

const isProxied = (p) => p.startsWith('/api/') || p === '/healthz' || p === '/readyz';

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, 'http://x');
  try {
    if (await serveStatic(req, res, pathname)) return;
    if (isProxied(pathname)) {
      if (fakeAuth && (await fakeAuthRoute(req, res, pathname))) return;
      return proxyHttp(req, res);
    }
    apiError(res, 404, 'no_route', `no route for ${pathname}`);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) apiError(res, 500, 'internal', 'dev server error');
  }
});

server.on('upgrade', (req, socket, head) => {
  const { pathname } = new URL(req.url, 'http://x');
  if (pathname !== '/api/v1/stream' || (fakeAuth && !sessionOf(req))) {
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    return;
  }
  const target = net.connect(Number(upstream.port || 80), upstream.hostname, () => {
    const headers = proxyHeaders(req);
    let head1 = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(headers)) {
      for (const value of Array.isArray(v) ? v : [v]) head1 += `${k}: ${value}\r\n`;
    }
    target.write(head1 + '\r\n');
    if (head && head.length) target.write(head);
    target.pipe(socket);
    socket.pipe(target);
  });
  const close = () => { socket.destroy(); target.destroy(); };
  target.on('error', close);
  socket.on('error', close);
  target.on('close', close);
  socket.on('close', close);
});

server.listen(port, host, () => {
  const addr = server.address();
  console.log(`confab web dev server on http://${addr.address}:${addr.port} → ${upstream.origin}${fakeAuth ? ' (fake auth: TEMPORARY)' : ''}`);
  if (!token) console.log('warning: CONFAB_TOKEN is not set; proxied calls carry no credentials');
});
