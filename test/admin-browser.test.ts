// The admin pages in a real browser (Debian's headless Chromium through playwright-core), end to end against real
// Postgres, S3 and a real worker process: sign-in and the runs table with its filters; a mass import followed live to
// its end (across a dropped event stream); a CSV review with its failed rows, the download of the failed rows (the
// API's bytes) and Finalize followed to partial; a dead run replayed to success and another resolved with a note; a
// tenant kept to its own runs; XSS probes shown as text and a form without its CSRF token refused.
// With ADMIN_SCREENSHOTS=1 the test also saves the main pages to docs/images/ (npm run screenshots:admin).
import { readFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csvLine, HEADER, rowFields, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi, type TestApi } from './support/api-server.js';
import { launchBrowser } from './support/browser.js';
import { spawnWorker } from './support/worker-processes.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';

const env = useTestEnvironment();
const tree = useTreeBehindProxy(
  env,
  Array.from({ length: 24 }, (_, i) => ({ path: `photos/${i % 3}/picture ${i}.jpg`, size: 2_000 + i * 97 })),
);
const SCREENSHOTS = process.env.ADMIN_SCREENSHOTS === '1';
const IMAGES = fileURLToPath(new URL('../docs/images/', import.meta.url));
const XSS_NAME = '<img src=x onerror=alert(1)>';
const XSS_CELL = '<script>alert(2)</script>';

let api: TestApi;
let browser: Browser;
let operatorKey: string;
let shopKey: string;
let otherKey: string;
let operator: BrowserContext;
let shop: BrowserContext;
const dialogs: string[] = [];
const seeded: { shop: number[]; other: number[] } = { shop: [], other: [] };

async function signIn(key: string): Promise<BrowserContext> {
  const context = await browser.newContext({ baseURL: api.url, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  await page.goto('/admin/runs');
  await expect(page.url()).toContain('/admin/sign-in');
  await page.getByLabel(/API key/).fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/admin/runs');
  await page.close();
  return context;
}

async function open(context: BrowserContext, path: string): Promise<Page> {
  const page = await context.newPage();
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  await page.goto(path);
  return page;
}

/** Waits until the element shows exactly this text (the live script updates it, or swaps the page's main part). */
async function shows(page: Page, selector: string, text: string): Promise<void> {
  await page.locator(selector).filter({ hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: 30_000 });
}

async function screenshot(page: Page, name: string): Promise<void> {
  if (!SCREENSHOTS) return;
  await mkdir(IMAGES, { recursive: true });
  await page.screenshot({ path: `${IMAGES}admin-${name}.png`, fullPage: false });
}

async function submit(key: string, body: Record<string, unknown>): Promise<number> {
  const response = await call(api, 'POST', '/v1/jobs', { key, body });
  expect(response.status, response.text).toBe(201);
  return response.body.job.id as number;
}

/** A run made dead the way the rescuer leaves one (attempts used up), with an XSS probe in its error. */
async function deadRun(tenant: string): Promise<number> {
  const id = await submit(operatorKey, { kind: 'noop', tenant, payload: {}, dedupeKey: null, runAt: '2999-01-01T00:00:00Z' });
  await env.pool.query(
    `UPDATE jobs SET state = 'dead', attempts = max_attempts, started_at = now() - interval '2 minutes', finished_at = now(),
       last_error = jsonb_build_object('code', 'LEASE_EXPIRED', 'class', 'transient', 'attempt', max_attempts, 'at', now()::text,
         'message', $2::text)
     WHERE id = $1`,
    [id, `the worker stopped heartbeating while reading ${XSS_NAME}`],
  );
  return id;
}

/**
 * A session of its own (a test may end it) whose page follows a run the worker will hold for a minute once due. It is
 * due only when the test sets its run_at to now, so the page sees it queued first.
 */
async function followHeldRun(): Promise<{ context: BrowserContext; id: number; page: Page }> {
  const context = await signIn(operatorKey);
  const id = await submit(operatorKey, { kind: 'noop', tenant: 'other', payload: { sleepMs: 60_000 }, dedupeKey: null, runAt: '2999-01-01T00:00:00Z' });
  const page = await open(context, `/admin/runs/${id}`);
  await shows(page, '[data-live-status]', 'live');
  return { context, id, page };
}

beforeAll(async () => {
  api = await startTestApi(env);
  operatorKey = await makeKey(env, 'ops', 'operator');
  shopKey = await makeKey(env, 'shop-backend', 'tenant', 'shop');
  otherKey = await makeKey(env, 'other-backend', 'tenant', 'other');
  const worker = spawnWorker(env, { env: { ...tree.workerEnv(), MASS_IMPORT_CONCURRENCY: '2', LOG_LEVEL: 'warn' } });
  tree.spawned.push(worker);
  // Runs that wait far in the future: the table's rows for the filters.
  for (const tenant of ['shop', 'shop', 'other']) {
    seeded[tenant as 'shop' | 'other'].push(await submit(operatorKey, { kind: 'noop', tenant, payload: {}, dedupeKey: null, runAt: '2999-01-01T00:00:00Z' }));
  }
  browser = await launchBrowser();
  [operator, shop] = await Promise.all([signIn(operatorKey), signIn(shopKey)]);
});

afterAll(async () => {
  await browser?.close();
  await api?.close();
});

describe('admin pages in a browser', () => {
  it('1. signs in; the runs table lists the seeded runs with counts per state; filters narrow it; it reads without JavaScript', async () => {
    const page = await open(operator, '/admin/runs');
    const ids = await page.locator('tbody tr td:first-child').allTextContents();
    for (const id of [...seeded.shop, ...seeded.other]) expect(ids).toContain(String(id));
    expect(await page.locator('[data-count="queued"]').textContent()).toBe('3');
    await page.locator('select[name="state"]').selectOption(['queued']);
    await page.locator('input[name="tenant"]').fill('other');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/tenant=other/);
    expect(await page.locator('tbody tr td:first-child').allTextContents()).toEqual(seeded.other.map(String));
    await page.close();

    const noScript = await browser.newContext({ baseURL: api.url, javaScriptEnabled: false, storageState: await operator.storageState() });
    const plain = await noScript.newPage();
    await plain.goto('/admin/runs?kind=noop');
    expect(await plain.locator('tbody tr').count()).toBe(3);
    await noScript.close();
  });

  it('2. a mass import: the progress bar moves while it runs, across a dropped event stream, and ends at succeeded without a reload', async () => {
    // The first files go through; the rest wait at the S3 proxy until the test has seen the bar part-way.
    let release!: () => void;
    const gate = new Promise<'pass'>((resolve) => (release = () => resolve('pass')));
    let puts = 0;
    tree.proxy.decide = (request) => (request.method === 'PUT' && ++puts > 8 ? gate : 'pass');
    const id = await submit(operatorKey, { kind: 'mass-import', tenant: 'shop', payload: { source: 'photos' } });
    const page = await open(operator, `/admin/runs/${id}`);
    await page.evaluate('window.marker = 42');
    const bar = page.locator('[data-live-bar]');
    // The script sets the bar's value, which the value attribute reflects.
    // (Polled from here: a predicate evaluated in the page would need 'unsafe-eval', which the pages' CSP refuses.)
    await expect
      .poll(async () => Number(await bar.getAttribute('value')), { timeout: 30_000, interval: 50 })
      .toSatisfy((value: number) => value > 0 && value < 100);
    const partWay = Number(await bar.getAttribute('value'));
    await expect(page.locator('[data-live-rate]').textContent()).resolves.toMatch(/\/s/);
    await screenshot(page, 'run-live');

    // Every connection to the server drops: the page reconnects and goes on.
    api.app.server.closeAllConnections();
    await shows(page, '[data-live-status]', 'reconnecting…');
    await shows(page, '[data-live-status]', 'live');
    release();
    await shows(page, '[data-run-state]', 'succeeded');
    expect(await bar.getAttribute('value')).toBe('100');
    expect(partWay).toBeLessThan(100);
    expect(await page.evaluate('window.marker')).toBe(42);

    await page.goto(`/admin/runs/${id}/files`);
    expect(await page.locator('[data-files="found"]').textContent()).toBe('24');
    expect(await page.locator('[data-files="imported"]').textContent()).toBe('24');
    expect(await page.locator('[data-files="failed"]').textContent()).toBe('0');
    await screenshot(page, 'mass-import');
    await page.close();
  });

  it('3 and 6. a CSV with bad rows: counts and failed rows (XSS probes as text), the API’s CSV, Finalize followed to partial', async () => {
    const rows = Array.from({ length: 40 }, (_, i) => validRow(i + 1, 'ADM'));
    const bad = new Set([5, 17, 33]);
    const lines = rows.map((row, i) =>
      csvLine(rowFields(bad.has(i) ? { ...row, name: i === 17 ? XSS_CELL : row.name, price: '-1' } : row), '\r\n'),
    );
    // Line numbers of the bad rows: the header is line 1, and a description may span two lines.
    const badLines = [...bad].map((index) => 2 + lines.slice(0, index).join('').split('\n').length - 1);
    const key = `imports/shop/${XSS_NAME}.csv`;
    // The header as a spreadsheet may write it (upper case): read the same, and the failing field still marked.
    const header = HEADER.map((name) => name.toUpperCase());
    await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: key, Body: Buffer.from(csvLine(header, '\r\n') + lines.join('')) }));
    const id = await submit(shopKey, { kind: 'csv-import', payload: { bucket: env.bucket, key, profile: 'products' } });

    const page = await open(shop, `/admin/runs/${id}`);
    await shows(page, '[data-run-state]', 'review_ready');
    await page.getByRole('link', { name: /CSV review/ }).click();
    await page.waitForURL(`**/admin/runs/${id}/review`);
    expect(await page.locator('[data-csv-count="read"]').textContent()).toBe('40');
    expect(await page.locator('[data-csv-count="valid"]').textContent()).toBe('37');
    expect(await page.locator('[data-csv-count="invalid"]').textContent()).toBe('3');
    // Categories i % 37 of the valid rows: 37 names less the 3 that only the bad rows name; none exists yet.
    expect(await page.locator('[data-csv-count="references-to-create"]').textContent()).toContain('categories: 34');
    const errorRows = page.locator('table[aria-describedby="failed-rows"] tbody tr');
    expect(await errorRows.locator('td:first-child').allTextContents()).toEqual(badLines.map(String));
    expect(await errorRows.nth(0).textContent()).toMatch(/price[\s\S]*range/);
    expect(await errorRows.nth(0).locator('.named dt').allTextContents()).toEqual(['PRICE']);
    // 6: the file name and the cell are text, not markup.
    expect(await page.locator('main').textContent()).toContain(`${XSS_NAME}.csv`);
    expect(await errorRows.nth(1).textContent()).toContain(XSS_CELL);
    expect(await page.locator('main img, main script').count()).toBe(0);
    await screenshot(page, 'csv-review');

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download failed rows as CSV' }).click()]);
    const downloaded = await readFile((await download.path())!, 'utf8');
    const fromApi = await fetch(`${api.url}/v1/jobs/${id}/errors?format=csv`, { headers: { authorization: `Bearer ${shopKey}` } });
    expect(downloaded).toBe(await fromApi.text());
    expect(downloaded.split('\r\n').filter(Boolean).length).toBe(4);

    await page.getByRole('link', { name: 'Finalize…' }).click();
    await page.getByLabel(/Note/).fill('three bad prices, rest is fine');
    await page.getByRole('button', { name: `Confirm: finalize run ${id}` }).click();
    await page.waitForURL(`**/admin/runs/${id}?done=finalize`);
    await shows(page, '[data-run-state]', 'partial');
    await page.locator('[data-csv-count="written"]').waitFor();
    expect(await page.locator('[data-csv-count="written"]').textContent()).toBe('37');
    expect(await page.locator('#history-heading + * ').textContent()).toContain('three bad prices, rest is fine');
    expect(dialogs).toEqual([]);
    await page.close();
  });

  it('4. a dead run replayed from the page runs and succeeds; another resolved with a note has it in its history', async () => {
    const [replayed, resolved] = [await deadRun('shop'), await deadRun('other')];
    // The dead run's payload waits for the year 2999: replay runs it now (run_at is reset by the replay).
    const page = await open(operator, '/admin/dead');
    expect(await page.locator('main').textContent()).toContain(`reading ${XSS_NAME}`);
    await screenshot(page, 'dead-letters');
    await page.locator('tr', { has: page.getByRole('link', { name: String(replayed), exact: true }) }).getByRole('link', { name: 'Replay…' }).click();
    await page.getByLabel(/Note/).fill('worker fixed');
    await page.getByRole('button', { name: `Confirm: replay run ${replayed}` }).click();
    await page.waitForURL(`**/admin/runs/${replayed}?done=replay`);
    await shows(page, '[data-run-state]', 'succeeded');
    expect(await page.locator('#history-heading + *').textContent()).toMatch(/replayed\s*ops\s*queued\s*worker fixed/);

    await page.goto(`/admin/runs/${resolved}`);
    await page.getByRole('link', { name: 'Resolve…' }).click();
    await page.getByRole('button', { name: `Confirm: resolve run ${resolved}` }).click();
    // The note is required: the browser keeps the form until it is given.
    expect(page.url()).toMatch(/\/resolve$/);
    await page.getByLabel(/Note/).fill('data re-sent by hand');
    await page.getByRole('button', { name: `Confirm: resolve run ${resolved}` }).click();
    await page.waitForURL(`**/admin/runs/${resolved}?done=resolve`);
    expect(await page.locator('#history-heading + *').textContent()).toMatch(/resolved\s*ops\s*dead\s*data re-sent by hand/);
    await screenshot(page, 'run-detail');
    await page.goto('/admin/dead');
    expect(await page.getByRole('link', { name: String(resolved), exact: true }).count()).toBe(0);
    await page.close();
  });

  it("5. a tenant key sees its own runs only (another tenant's run is a 404 page) and no operator actions", async () => {
    const other = await signIn(otherKey);
    const page = await open(other, '/admin/runs');
    const ids = await page.locator('tbody tr td:first-child').allTextContents();
    expect(ids).toContain(String(seeded.other[0]));
    for (const id of seeded.shop) expect(ids).not.toContain(String(id));
    const response = await page.goto(`/admin/runs/${seeded.shop[0]}`);
    expect(response?.status()).toBe(404);
    expect(await page.locator('main').textContent()).toContain(`job ${seeded.shop[0]} does not exist`);
    expect((await page.goto(`/admin/runs/${seeded.shop[0]}/cancel`))?.status()).toBe(404);
    expect((await page.goto('/admin/dead'))?.status()).toBe(403);
    expect(await page.getByRole('link', { name: 'Dead letters' }).count()).toBe(0);
    await other.close();

    // The shop's own queued run: no Cancel (operators cancel), while an operator sees it.
    const own = await open(shop, `/admin/runs/${seeded.shop[0]}`);
    expect(await own.getByRole('list', { name: 'Actions' }).count()).toBe(0);
    await own.close();
    const asOperator = await open(operator, `/admin/runs/${seeded.shop[0]}`);
    expect(await asOperator.getByRole('link', { name: 'Cancel…' }).count()).toBe(1);
    await asOperator.close();
  });

  it('6. a form posted without its CSRF token is refused and changes nothing', async () => {
    const id = seeded.shop[1]!;
    const page = await open(operator, `/admin/runs/${id}/cancel`);
    await page.locator('main input[name="csrf"]').evaluate((input) => input.remove());
    await page.getByRole('button', { name: `Confirm: cancel run ${id}` }).click();
    await page.waitForLoadState();
    expect(await page.locator('main').textContent()).toMatch(/CSRF/);
    const job = await call(api, 'GET', `/v1/jobs/${id}`, { key: operatorKey });
    expect(job.body.state).toBe('queued');
    expect(job.body.actions.map((action: { action: string }) => action.action)).toEqual(['submitted']);
    expect(dialogs).toEqual([]);
    // Last, with every scenario's runs in it: the runs table for the docs.
    await page.goto('/admin/runs');
    await screenshot(page, 'runs');
    await page.close();
  });

  it('7. a state change keeps the keyboard focus and is announced; a page whose session ends says so and stops', async () => {
    // Queued → running keeps the run's Cancel link, canceled removes it.
    const { context, id, page } = await followHeldRun();
    const focused = () => page.evaluate('document.activeElement ? document.activeElement.tagName + ":" + document.activeElement.textContent.trim() : ""');
    const announced = (state: string) => page.locator('[data-live-announce]').filter({ hasText: `Run ${id} is now ${state}.` }).waitFor({ state: 'attached', timeout: 30_000 });
    await page.locator('main').getByRole('link', { name: 'Cancel…' }).focus();
    expect(await focused()).toBe('A:Cancel…');
    await env.pool.query('UPDATE jobs SET run_at = now() WHERE id = $1', [id]);
    await shows(page, '[data-run-state]', 'running');
    await announced('running');
    expect(await focused()).toBe('A:Cancel…');
    expect((await call(api, 'POST', `/v1/jobs/${id}/cancel`, { key: operatorKey })).status).toBe(200);
    await announced('canceled');
    // Its link gone with the state, the focus goes to the page's heading, not to the top of the page.
    expect(await focused()).toMatch(/^H1:/);

    // Signed out in another tab: the stream is ended, its reconnect refused, and the page says why (once).
    const waiting = await submit(operatorKey, { kind: 'noop', tenant: 'other', payload: {}, dedupeKey: null, runAt: '2999-01-01T00:00:00Z' });
    await page.goto(`/admin/runs/${waiting}`);
    await shows(page, '[data-live-status]', 'live');
    const other = await open(context, '/admin/runs');
    await other.getByRole('button', { name: 'Sign out' }).click();
    await other.waitForURL('**/admin/sign-in**');
    await page.locator('[data-live-status]').filter({ hasText: /^stopped: your session ended\. Sign in again$/ }).waitFor({ timeout: 30_000 });
    expect(await page.locator('[data-live-status] a').getAttribute('href')).toBe(`/admin/sign-in?ended=1&next=${encodeURIComponent(`/admin/runs/${waiting}`)}`);
    // The link signs in and comes back to the run.
    await page.locator('[data-live-status] a').click();
    await page.getByLabel(/API key/).fill(operatorKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`**/admin/runs/${waiting}`);
    await context.close();
  });

  it('8. a state change heard while the page refreshes for the one before is not lost', async () => {
    const { context, id, page } = await followHeldRun();
    // The refresh that follows `running` is drawn by the server at once, and handed to the page only once the run has
    // been canceled too: the page it gets is older than the last event it heard.
    let drawn!: () => void;
    const isDrawn = new Promise<void>((resolve) => (drawn = resolve));
    let deliver!: () => void;
    const delivered = new Promise<void>((resolve) => (deliver = resolve));
    await page.route(
      `**/admin/runs/${id}`,
      async (route) => {
        const response = await route.fetch();
        drawn();
        await delivered;
        await route.fulfill({ response });
      },
      { times: 1 },
    );
    await env.pool.query('UPDATE jobs SET run_at = now() WHERE id = $1', [id]);
    await isDrawn;
    expect((await call(api, 'POST', `/v1/jobs/${id}/cancel`, { key: operatorKey })).status).toBe(200);
    await shows(page, '[data-run-state]', 'canceled');
    deliver();
    // The held page says running; the page fetched after it says canceled, and stays so.
    await page.locator('[data-live-announce]').filter({ hasText: `Run ${id} is now canceled.` }).waitFor({ state: 'attached', timeout: 30_000 });
    expect(await page.locator('main [data-run-state]').textContent()).toBe('canceled');
    await context.close();
  });
});
