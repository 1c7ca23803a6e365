// The frame of every admin page: head (style sheet and script from this server), a skip link, the navigation, who is
// signed in with a sign-out button, and the page's main part (which the live script replaces in place).
import type { ApiKey } from '../../auth/api-keys.js';
import type { JobState } from '../../queue/types.js';
import { ADMIN_ICON, ADMIN_SCRIPT, ADMIN_STYLE } from './assets.js';
import { html, type Html } from './html.js';
import { CSRF_FIELD } from './session.js';

/** What every page of a signed-in person needs: the key it acts as and the session's CSRF token. */
export interface Viewer {
  key: ApiKey;
  csrf: string;
}

export const isOperator = (viewer: Viewer): boolean => viewer.key.role === 'operator';

export function csrfField(viewer: Viewer): Html {
  return html`<input type="hidden" name="${CSRF_FIELD}" value="${viewer.csrf}">`;
}

export function stateBadge(state: JobState | string, live = false): Html {
  return html`<span class="state state-${state}"${live ? html` data-run-state` : ''}>${state}</span>`;
}

interface PageOptions {
  title: string;
  viewer: Viewer | null;
  body: Html;
  /** The navigation entry to mark as current. */
  section?: 'runs' | 'dead';
}

export function page(options: PageOptions): Html {
  const { viewer } = options;
  const current = (section: PageOptions['section']) => (options.section === section ? html` aria-current="page"` : '');
  const nav = viewer
    ? html`<nav aria-label="Main"><ul>
        <li><a href="/admin/runs"${current('runs')}>Runs</a></li>
        ${viewer.key.role === 'operator' ? html`<li><a href="/admin/dead"${current('dead')}>Dead letters</a></li>` : ''}
      </ul></nav>
      <form class="who" method="post" action="/admin/sign-out">
        <span>${viewer.key.name} (${viewer.key.role}${viewer.key.tenantId ? html`, tenant ${viewer.key.tenantId}` : ''})</span>
        ${csrfField(viewer)}<button type="submit">Sign out</button>
      </form>`
    : '';
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${options.title} · bulk-import admin</title>
<link rel="icon" href="${ADMIN_ICON.path}" type="image/svg+xml">
<link rel="stylesheet" href="${ADMIN_STYLE.path}">
<script src="${ADMIN_SCRIPT.path}" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top"><strong><a href="/admin/runs">bulk-import admin</a></strong>${nav}</header>
<main id="main" tabindex="-1">
${options.body}
</main>
<div class="sr-only" role="status" data-live-announce></div>
</body>
</html>
`;
}

export function errorBox(message: string | null | undefined): Html | string {
  return message ? html`<div class="error-box" role="alert">${message}</div>` : '';
}
