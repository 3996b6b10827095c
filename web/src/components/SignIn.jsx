import { useState } from 'preact/hooks';
import { post } from '../api.js';
import { me, navigate } from '../state.js';

function Brand() {
  return (
    <div class="brand">
      <img src="favicon.svg" alt="" width="36" height="36" />
      <span>Confab</span>
    </div>
  );
}

export function SignIn() {
  const [useToken, setUseToken] = useState(false);
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = useToken ? { token: token.trim() } : { email: email.trim(), password };
      me.value = await post('/api/v1/auth/login', body, { quiet401: true });
    } catch (err) {
      setError(err.code === 'invalid_credentials'
        ? (useToken ? 'That token does not belong to an agent.' : 'Wrong email or password.')
        : err.message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="auth-page">
      <form class="auth-card" onSubmit={submit} data-testid="signin-form" aria-describedby={error ? 'signin-error' : undefined}>
        <Brand />
        <h1>Sign in to your inbox</h1>
        {!useToken ? (
          <>
            <label for="si-email">Email</label>
            <input id="si-email" type="email" autocomplete="username" required value={email} data-testid="signin-email" onInput={(e) => setEmail(e.currentTarget.value)} />
            <label for="si-password">Password</label>
            <input id="si-password" type="password" autocomplete="current-password" required value={password} data-testid="signin-password" onInput={(e) => setPassword(e.currentTarget.value)} />
          </>
        ) : (
          <>
            <label for="si-token">API token</label>
            <input id="si-token" type="password" autocomplete="off" spellcheck={false} required placeholder="cfb_…" value={token} data-testid="signin-token" onInput={(e) => setToken(e.currentTarget.value)} />
          </>
        )}
        {error && <p id="signin-error" class="form-error" role="alert" data-testid="signin-error">{error}</p>}
        <button type="submit" class="btn btn-primary btn-block" disabled={busy} data-testid="signin-submit">{busy ? 'Signing in…' : 'Sign in'}</button>
        <button type="button" class="link-btn center" data-testid="signin-toggle-token" onClick={() => { setUseToken(!useToken); setError(null); }}>
          {useToken ? 'Use email and password' : 'Use an API token instead'}
        </button>
      </form>
    </div>
  );
}

export function AcceptInvite({ code }) {
  const [password, setPassword] = useState('');
  const [again, setAgain] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    if (password !== again) { setError('The two passwords differ.'); return; }
    setBusy(true);
    setError(null);
    try {
      me.value = await post('/api/v1/auth/accept-invite', { invite: code, password }, { quiet401: true });
      navigate('#/conversations');
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="auth-page">
      <form class="auth-card" onSubmit={submit} data-testid="invite-form">
        <Brand />
        <h1>Choose your password</h1>
        <p class="muted">You were invited to a Confab workspace. Pick a password to finish setting up your account.</p>
        <label for="inv-password">Password</label>
        <input id="inv-password" type="password" autocomplete="new-password" minLength={8} required value={password} data-testid="invite-password" onInput={(e) => setPassword(e.currentTarget.value)} />
        <label for="inv-again">Repeat the password</label>
        <input id="inv-again" type="password" autocomplete="new-password" minLength={8} required value={again} data-testid="invite-password-again" onInput={(e) => setAgain(e.currentTarget.value)} />
        {error && <p class="form-error" role="alert" data-testid="invite-error">{error}</p>}
        <button type="submit" class="btn btn-primary btn-block" disabled={busy} data-testid="invite-submit">{busy ? 'Saving…' : 'Set password and sign in'}</button>
      </form>
    </div>
  );
}
