// Keyboard focus helpers: tab lists, menus, modal dialogs, and keeping the focus on the page
// when the control that had it goes away.

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

// onKeyDown of a role=tablist: ← → (and Home, End) move to the previous or next tab and
// select it. The tabs carry a roving tabindex (0 on the selected tab, -1 on the others), so
// the list is one stop in the Tab order.
export function tabKeys(e) {
  const tabs = [...e.currentTarget.querySelectorAll('[role=tab]')];
  const i = tabs.indexOf(document.activeElement);
  if (i < 0 || e.altKey || e.ctrlKey || e.metaKey) return;
  const n = tabs.length;
  const j = e.key === 'ArrowRight' ? (i + 1) % n : e.key === 'ArrowLeft' ? (i - 1 + n) % n
    : e.key === 'Home' ? 0 : e.key === 'End' ? n - 1 : -1;
  if (j < 0) return;
  e.preventDefault();
  tabs[j].focus();
  tabs[j].click();
}

// onKeyDown of a role=menu: ↑ ↓ Home End move between its items; Esc and Tab close it
// (`close` puts the focus back on the menu's button).
export function menuKeys(e, close) {
  const items = [...e.currentTarget.querySelectorAll('[role=menuitem]')];
  const i = items.indexOf(document.activeElement);
  const n = items.length;
  let next = null;
  if (e.key === 'ArrowDown') next = items[(i + 1) % n];
  else if (e.key === 'ArrowUp') next = items[(i - 1 + n) % n];
  else if (e.key === 'Home') next = items[0];
  else if (e.key === 'End') next = items[n - 1];
  else if (e.key === 'Escape' || e.key === 'Tab') {
    e.preventDefault();
    e.stopPropagation();
    close();
    return;
  }
  if (next) {
    e.preventDefault();
    e.stopPropagation(); // not the page's ↑ ↓ (the conversation list)
    next.focus();
  }
}

// Keydown (capture) inside a modal dialog: Tab and Shift+Tab cycle through its controls.
export function trapTab(e, dialog) {
  if (e.key !== 'Tab' || !dialog) return;
  const items = [...dialog.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
  if (!items.length) { e.preventDefault(); dialog.focus(); return; }
  const first = items[0], last = items[items.length - 1];
  const at = document.activeElement;
  if (!dialog.contains(at) || (e.shiftKey && (at === first || at === dialog)) || (!e.shiftKey && at === last)) {
    e.preventDefault();
    (e.shiftKey ? last : first).focus();
  }
}

// Runs `action` (a click's work, maybe async); if the control that had the focus is gone
// or disabled once the page has re-rendered, the focus goes to `fallback()` instead of
// falling back to <body> (which would restart the Tab order from the top).
export function keepFocus(fallback, action) {
  const from = document.activeElement;
  const done = () => requestAnimationFrame(() => {
    const at = document.activeElement;
    if (!from || from === document.body || (at && at !== document.body && !at.disabled)) return;
    fallback()?.focus();
  });
  let result;
  try { result = action?.(); } finally { Promise.resolve(result).then(done, done); }
  return result;
}
