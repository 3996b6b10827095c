// Hand-drawn SVG charts: small, responsive through viewBox, labelled for screen readers.

function niceMax(v) {
  if (!v || v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Daily bars of two series side by side (e.g. opened and resolved).
export function DailyBars({ days, series, label, format = (v) => v }) {
  const W = 560, H = 180, L = 34, B = 22, T = 8;
  const max = niceMax(Math.max(0, ...days.flatMap((d) => series.map((s) => d[s.key] || 0))));
  const slot = (W - L) / Math.max(1, days.length);
  const bw = Math.min(14, (slot - 6) / series.length);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label}>
      {[0, 0.5, 1].map((f) => (
        <g key={f}>
          <line x1={L} x2={W} y1={y(max * f)} y2={y(max * f)} class="grid" />
          <text x={L - 6} y={y(max * f) + 4} class="axis" text-anchor="end">{format(max * f)}</text>
        </g>
      ))}
      {days.map((d, i) => {
        const x0 = L + i * slot + (slot - bw * series.length) / 2;
        return (
          <g key={d.label}>
            {series.map((s, j) => {
              const v = d[s.key] || 0;
              return <rect key={s.key} x={x0 + j * bw} y={y(v)} width={bw - 2} height={Math.max(0, H - B - y(v))} rx="2" class={`bar ${s.cls}`}><title>{`${d.label}: ${s.label} ${format(v)}`}</title></rect>;
            })}
            {(days.length <= 14 || i % 2 === 0) && <text x={L + i * slot + slot / 2} y={H - 6} class="axis" text-anchor="middle">{d.short}</text>}
          </g>
        );
      })}
    </svg>
  );
}

// A line over days; null values break the line.
export function DailyLine({ days, valueKey, label, format = (v) => v }) {
  const W = 560, H = 180, L = 44, B = 22, T = 10;
  const vals = days.map((d) => d[valueKey]);
  const max = niceMax(Math.max(0, ...vals.filter((v) => v != null)));
  const slot = (W - L) / Math.max(1, days.length);
  const x = (i) => L + i * slot + slot / 2;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  let d = '';
  let pen = false;
  vals.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
    pen = true;
  });
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label}>
      {[0, 0.5, 1].map((f) => (
        <g key={f}>
          <line x1={L} x2={W} y1={y(max * f)} y2={y(max * f)} class="grid" />
          <text x={L - 6} y={y(max * f) + 4} class="axis" text-anchor="end">{format(max * f)}</text>
        </g>
      ))}
      <path d={d} class="line" />
      {vals.map((v, i) => v != null && <circle key={i} cx={x(i)} cy={y(v)} r="3" class="dot"><title>{`${days[i].label}: ${format(v)}`}</title></circle>)}
      {days.map((dd, i) => (days.length <= 14 || i % 2 === 0) && <text key={dd.label} x={x(i)} y={H - 6} class="axis" text-anchor="middle">{dd.short}</text>)}
    </svg>
  );
}

// Horizontal bars for a handful of labelled values.
export function HBars({ rows, label, format = (v) => v }) {
  const max = niceMax(Math.max(0, ...rows.map((r) => r.value)));
  return (
    <div class="hbars" role="img" aria-label={label}>
      {rows.map((r) => (
        <div key={r.label} class="hbar">
          <span class="hbar-label">{r.label}</span>
          <span class="hbar-track"><span class={`hbar-fill ${r.cls || ''}`} style={{ width: `${(r.value / max) * 100}%` }} /></span>
          <span class="hbar-value">{format(r.value)}</span>
        </div>
      ))}
    </div>
  );
}

// One bar split in two shares (AI vs human).
export function Split({ a, b, aLabel, bLabel }) {
  const total = (a || 0) + (b || 0);
  const pa = total ? (a / total) * 100 : 0;
  return (
    <div class="split">
      <div class="split-bar" role="img" aria-label={`${aLabel} ${Math.round(pa)} %, ${bLabel} ${Math.round(100 - pa)} %`}>
        <span class="split-a" style={{ width: `${pa}%` }} />
        <span class="split-b" style={{ width: `${total ? 100 - pa : 0}%` }} />
      </div>
      <div class="split-legend">
        <span><i class="sw sw-a" />{aLabel} <strong>{a || 0}</strong></span>
        <span><i class="sw sw-b" />{bLabel} <strong>{b || 0}</strong></span>
      </div>
    </div>
  );
}
