import { useState } from 'preact/hooks';
import { initials, hueFor, displayName, loadableImage } from '../util.js';

// The CSP allows images from this origin and data: only, so an external avatar URL (a
// CRM's, WhatsApp's CDN) is never requested: it would be blocked and log a CSP violation.
// Initials stand in for it, and for any image that fails to load.
export function Avatar({ contact, size = 36 }) {
  const [broken, setBroken] = useState(false);
  const name = displayName(contact);
  const dim = `${size}px`;
  const style = { width: dim, height: dim, fontSize: `${Math.round(size * 0.38)}px` };
  if (loadableImage(contact?.avatar_url) && !broken) {
    return <img class="avatar" style={style} src={contact.avatar_url} alt="" referrerpolicy="no-referrer" onError={() => setBroken(true)} />;
  }
  return (
    <span class="avatar avatar-initials" style={{ ...style, background: `hsl(${hueFor(contact?.id)} 70% 92%)`, color: `hsl(${hueFor(contact?.id)} 55% 32%)` }} aria-hidden="true">
      {initials(name)}
    </span>
  );
}
