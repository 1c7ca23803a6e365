// GET /admin/sign-in: the sign-in form. The key is sent once, in the body of a POST, and never shown again.
import { html, type Html } from '../html.js';
import { errorBox, page } from '../layout.js';
import { CSRF_FIELD } from '../session.js';

/** `next`: the admin page to go to once signed in (session.ts afterSignIn checks it again on the POST). */
export function signInPage(token: string, error?: string, next?: string): Html {
  const body = html`<h1>Sign in</h1>
${errorBox(error)}
<form class="stack" method="post" action="/admin/sign-in">
  <input type="hidden" name="${CSRF_FIELD}" value="${token}">
  ${next ? html`<input type="hidden" name="next" value="${next}">` : ''}
  <label for="key">API key (made by <code>bulk-import api-keys create</code>; an operator key sees every tenant)</label>
  <input id="key" name="key" type="password" required autocomplete="off" spellcheck="false" size="56">
  <div><button type="submit">Sign in</button></div>
</form>`;
  return page({ title: 'Sign in', viewer: null, body });
}

export function messagePage(title: string, message: string, signedIn: Parameters<typeof page>[0]['viewer']): Html {
  return page({
    title,
    viewer: signedIn,
    body: html`<h1>${title}</h1><div class="error-box" role="alert">${message}</div><p><a href="/admin/runs">Back to the runs</a></p>`,
  });
}
