// Builds the inbox into dist/: index.html, app.js, app.css (and their .gz), favicon.svg, sw.js.
// Deterministic: no hashes, no timestamps, no source maps, pinned esbuild; CI rebuilds
// and diffs the committed dist/ against the result.
// Usage: node build.mjs [--watch]
import * as esbuild from 'esbuild';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { gzipSync, constants } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'dist');
const watch = process.argv.includes('--watch');

const options = {
  absWorkingDir: here,
  entryPoints: { app: 'src/main.jsx' },
  outdir: 'dist',
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  charset: 'utf8',
  sourcemap: false,
  logLevel: 'info',
  define: { 'process.env.NODE_ENV': '"production"' },
};

await mkdir(dist, { recursive: true });
await copyFile(path.join(here, 'src/index.html'), path.join(dist, 'index.html'));
await copyFile(path.join(here, 'src/favicon.svg'), path.join(dist, 'favicon.svg'));
// The service worker (Web Push): a classic script, copied as it is (small, no imports).
await copyFile(path.join(here, 'src/sw.js'), path.join(dist, 'sw.js'));
if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
  // Pre-compressed copies the server sends to browsers that accept gzip (gzip's header
  // carries no time here, so the output stays byte-identical).
  for (const name of ['app.js', 'app.css']) {
    const raw = await readFile(path.join(dist, name));
    await writeFile(path.join(dist, `${name}.gz`), gzipSync(raw, { level: constants.Z_BEST_COMPRESSION }));
  }
}
