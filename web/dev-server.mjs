#!/usr/bin/env node
// Development server for the web inbox: plain Node 20, no dependencies.
//
// The Confab server serves the page itself (web/dist embedded at build time). This server
// exists so that UI changes show without rebuilding the Rust binary: it
// - serves web/dist/ from disk (index.html, app.js, app.css, favicon.svg, sw.js; `npm run dev`
//   rebuilds them on change) with the same security headers the server sends, so a CSP
//   mistake shows up in development too;
// - proxies everything else (/api/*, /healthz, /readyz, the /api/v1/stream WebSocket
//   upgrade, unknown paths) to the Confab server (CONFAB_URL, default
//   http://127.0.0.1:18080) unchanged: cookies and Set-Cookie pass through, and the
//   browser's Host header is kept, so the server's same-origin checks (Origin must match
//   Host for cookie-authenticated writes and the stream) pass.
//
// Usage: node dev-server.mjs [--port 5173] [--host 127.0.0.1]
// Environment: CONFAB_URL, PORT.

import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const distDir = path.join(here, 'dist');
const args = process.argv.slice(2);
const argValue = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const port = Number(argValue('--port', process.env.PORT || 5173));
const host = argValue('--host', '127.0.0.1');
const upstream = new URL(process.env.CONFAB_URL || 'http://127.0.0.1:18080');
const upstreamPort = Number(upstream.port || 80);

// Exactly the server's headers (gateway/src/ui.rs).
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const securityHeaders = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};
const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/app.css': ['app.css', 'text/css; charset=utf-8'],
  '/favicon.svg': ['favicon.svg', 'image/svg+xml'],
  '/sw.js': ['sw.js', 'text/javascript; charset=utf-8'],
};

function sendError(res, status, code, message) {
  res.writeHead(status, { ...securityHeaders, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ error: { code, message } }));
}

async function serveStatic(req, res, pathname) {
  const entry = STATIC[pathname];
  if (!entry || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  let body;
  try {
    body = await readFile(path.join(distDir, entry[0]));
  } catch {
    res.writeHead(404, { ...securityHeaders, 'content-type': 'text/plain; charset=utf-8' });
    res.end(`dist/${entry[0]} is missing: run npm run build\n`);
    return true;
  }
  res.writeHead(200, { ...securityHeaders, 'content-type': entry[1], 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}

// Forwarded as they are (Host, Origin, Cookie included), as a flat raw list; only
// hop-by-hop headers are dropped.
function forwardHeaders(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (name === 'connection' || name === 'keep-alive' || name === 'proxy-connection') continue;
    out.push(raw[i], raw[i + 1]);
  }
  return out;
}

function proxyHttp(req, res) {
  const forward = http.request({
    host: upstream.hostname,
    port: upstreamPort,
    method: req.method,
    path: req.url,
    headers: forwardHeaders(req.rawHeaders),
    setHost: false,
  }, (answer) => {
    // rawHeaders keep each Set-Cookie line as the server wrote it.
    const headers = [];
    for (let i = 0; i < answer.rawHeaders.length; i += 2) {
      const name = answer.rawHeaders[i].toLowerCase();
      if (name === 'connection' || name === 'keep-alive' || name === 'transfer-encoding') continue;
      headers.push(answer.rawHeaders[i], answer.rawHeaders[i + 1]);
    }
    res.writeHead(answer.statusCode || 502, answer.statusMessage, headers);
    answer.pipe(res);
  });
  forward.on('error', (err) => {
    if (!res.headersSent) sendError(res, 502, 'unavailable', `the Confab server at ${upstream.origin} is not answering (${err.code || err.message})`);
    else res.destroy();
  });
  req.pipe(forward);
}

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, 'http://x');
  try {
    if (await serveStatic(req, res, pathname)) return;
    proxyHttp(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) sendError(res, 500, 'internal', 'dev server error');
  }
});

// WebSocket (and any other upgrade): the request head is replayed to the server as it came,
// then bytes are copied both ways.
server.on('upgrade', (req, socket, head) => {
  let connected = false;
  const target = net.connect(upstreamPort, upstream.hostname, () => {
    connected = true;
    let head1 = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) head1 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    target.write(head1 + '\r\n');
    if (head && head.length) target.write(head);
    target.pipe(socket);
    socket.pipe(target);
  });
  const close = () => { socket.destroy(); target.destroy(); };
  target.on('error', (err) => {
    console.error(`upgrade proxy: ${err.code || err.message}`);
    if (!connected) socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    else close();
  });
  socket.on('error', close);
  target.on('close', () => socket.end());
  socket.on('close', () => target.destroy());
});

server.listen(port, host, () => {
  const addr = server.address();
  console.log(`confab web dev server on http://${addr.address}:${addr.port} (dist/ from disk) → ${upstream.origin}`);
});
