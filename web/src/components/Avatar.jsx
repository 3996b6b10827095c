import { useState } from 'preact/hooks';
import { initials, hueFor, displayName } from '../util.js';

export function Avatar({ contact, size = 36 }) {
  const [broken, setBroken] = useState(false);
  const name = displayName(contact);
  const dim = `${size}px`;
  const style = { width: dim, height: dim, fontSize: `${Math.round(size * 0.38)}px` };
  if (contact?.avatar_url && !broken) {
    return <img class="avatar" style={style} src={contact.avatar_url} alt="" referrerpolicy="no-referrer" onError={() => setBroken(true)} />;
  }
  return (
    <span class="avatar avatar-initials" style={{ ...style, background: `hsl(${hueFor(contact?.id)} 70% 92%)`, color: `hsl(${hueFor(contact?.id)} 55% 32%)` }} aria-hidden="true">
      {initials(name)}
    </span>
  );
}
