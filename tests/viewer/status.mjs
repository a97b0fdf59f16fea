// Drives headless Chromium through vcnode's status page (tests/status_page.rs).
//
//   node status.mjs BASE_URL OUT_DIR EXPECT_RECEIVED PEER_AE PEER_HOST [EXPECT_DONE [DISABLE_AE]]
//
// 1. Opens /status. With STATUS_USERNAME and STATUS_PASSWORD set (a node with sign-in on),
//    that lands on the login page (`login_page` in the report): it signs in there (fields
//    username and password, button[type=submit]) and comes back to /status.
// 2. Waits for the page's first poll, notes the "received in the last 15 minutes" count and
//    writes OUT_DIR/ready: the test sends its images after that file appears.
// 3. Watches the counts as the page shows them (received, derived, jobs queued and done,
//    exports done) until EXPECT_RECEIVED instances are received and, if given, EXPECT_DONE
//    jobs are done and their exports sent (or the time limit).
// 4. Through the page's forms: tries a peer with an invalid host (the API's refusal must
//    show), adds the peer PEER_AE (host PEER_HOST), disables the peer DISABLE_AE by its
//    checkbox, adds the destination ARCHIVE (DIMSE, 127.0.0.1:11112) and a route from PEER_AE
//    to PACS and ARCHIVE; each step waits until the page lists the change
//    (`steps_failed` names those that never showed).
// 5. Saves OUT_DIR/status.png and reads the destinations and routes from the Admin API.
// 6. Removes ARCHIVE (refused while the route names it: the page must say so), then the
//    route, then ARCHIVE.
// 7. Prints one JSON report on stdout; the Rust test decides what passes.
//
// Chromium's own path: CHROMIUM (default /usr/bin/chromium). Limit: STATUS_LIMIT_MS.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const [base, outDir, expectText, peerAe, peerHost, expectDoneText, disableAe] = process.argv.slice(2);
if (!base || !outDir || !expectText || !peerAe) {
  console.error('usage: node status.mjs BASE_URL OUT_DIR EXPECT_RECEIVED PEER_AE [PEER_HOST]');
  process.exit(2);
}
const expected = Number(expectText);
const expectedDone = Number(expectDoneText || 0);
const LIMIT_MS = Number(process.env.STATUS_LIMIT_MS || 90000);
const started = Date.now();
const left = () => Math.max(1000, LIMIT_MS - (Date.now() - started));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const report = { seen: [], console_errors: [], failed_requests: [], api_calls: [] };
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
  page.on('console', m => { if (m.type() === 'error') report.console_errors.push(m.text().slice(0, 300)); });
  page.on('requestfailed', r => report.failed_requests.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('request', r => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/api/') && r.method() !== 'GET') report.api_calls.push(`${r.method()} ${u.pathname}`);
  });

  const user = process.env.STATUS_USERNAME, password = process.env.STATUS_PASSWORD;
  if (user && password) {
    // An anonymous browser is sent to the login page, which brings it back after sign-in.
    await page.goto(`${base}/status`, { waitUntil: 'domcontentloaded', timeout: left() });
    const login = new URL(page.url());
    report.login_page = login.pathname + login.search;
    await page.fill('input[name=username]', user);
    await page.fill('input[name=password]', password);
    await Promise.all([
      page.waitForURL(u => new URL(u).pathname === '/status', { timeout: left() }),
      page.click('button[type=submit]'),
    ]);
    report.signed_in = true;
  } else {
    await page.goto(`${base}/status`, { waitUntil: 'domcontentloaded', timeout: left() });
  }
  report.url = page.url();
  report.title = await page.title();

  // The first poll has filled the counts.
  await page.waitForFunction(() => Number(document.body.dataset.polls || 0) >= 1, null, { timeout: left() });
  const read = () => page.evaluate(() => {
    const n = id => Number(document.getElementById(id).textContent);
    return {
      received: n('received-15m'),
      received_last_minute: n('received-1m'),
      derived: n('derived-15m'),
      jobs_queued: n('jobs-queued'),
      jobs_done: n('jobs-done'),
      exports_done: n('exports-done'),
      polls: Number(document.body.dataset.polls),
    };
  });
  const same = (a, b) => Object.keys(a).every(k => k === 'polls' || a[k] === b[k]);
  const note = v => {
    const last = report.seen[report.seen.length - 1];
    if (!last || !same(last, v)) report.seen.push(v);
  };
  note(await read());
  fs.writeFileSync(path.join(outDir, 'ready'), '');

  // The counts as the page shows them while the test sends.
  for (const until = Date.now() + left(); Date.now() < until; ) {
    const v = await read();
    note(v);
    if (v.received >= expected && v.jobs_done >= expectedDone && v.exports_done >= expectedDone) break;
    await page.waitForTimeout(200);
  }

  // The Admin API's forms. Each step waits until the page shows its outcome.
  const problems = () => page.evaluate(() => document.getElementById('problems').innerText.trim());
  const rowNames = table => page.evaluate(t =>
    [...document.querySelectorAll(`#${t} tbody th`)].map(th => th.textContent), table);
  const until = async (what, cond) => {
    for (const end = Date.now() + Math.min(15000, left()); Date.now() < end; ) {
      if (await cond()) return true;
      await page.waitForTimeout(200);
    }
    report.steps_failed = [...(report.steps_failed || []), what];
    return false;
  };
  // A refusal: the API's reason shows on the page.
  await page.fill('#peer-form input[name=ae_title]', 'BADHOST');
  await page.fill('#peer-form input[name=host]', 'not-an-address');
  await page.click('#peer-form button[type=submit]');
  await until('refusal shown', async () => (await problems()).includes('POST /api/peers'));
  report.refusal = await problems();
  // The new peer.
  await page.fill('#peer-form input[name=ae_title]', peerAe);
  await page.fill('#peer-form input[name=host]', peerHost || '');
  await page.click('#peer-form button[type=submit]');
  await until('peer listed', async () => (await rowNames('peers')).includes(peerAe));
  report.peer_listed = (await rowNames('peers')).includes(peerAe);
  // A peer disabled by its checkbox.
  if (disableAe) {
    const box = `#peers input[aria-label="peer ${disableAe} enabled"]`;
    // The PUT, then the list read again after it.
    const put = page.waitForResponse(r => r.request().method() === 'PUT' && r.url().includes('/api/peers/'));
    const reread = page.waitForResponse(r => r.request().method() === 'GET' && new URL(r.url()).pathname === '/api/peers');
    await page.click(box);
    await put;
    await reread;
    await until('peer disabled', () => page.evaluate(sel => !document.querySelector(sel)?.checked, box));
  }
  // A destination, and a route to it.
  await page.fill('#destination-form input[name=name]', 'ARCHIVE');
  await page.selectOption('#destination-form select[name=kind]', 'dimse');
  await page.fill('#destination-form input[name=ae_title]', 'ARCHIVE');
  await page.fill('#destination-form input[name=host]', '127.0.0.1');
  await page.fill('#destination-form input[name=port]', '11112');
  await page.click('#destination-form button[type=submit]');
  await until('destination listed', async () => (await rowNames('destinations')).includes('ARCHIVE'));
  await page.fill('#route-form input[name=from_ae]', peerAe);
  await page.fill('#route-form input[name=to]', 'PACS, ARCHIVE');
  await page.click('#route-form button[type=submit]');
  await until('route listed', async () => (await rowNames('routes')).includes(peerAe));
  report.problems = await problems();
  report.peers_text = await page.evaluate(() => document.querySelector('#peers').innerText);
  report.destinations_text = await page.evaluate(() => document.querySelector('#destination-health').innerText);
  report.node_text = await page.evaluate(() => document.querySelector('#facts').innerText);
  report.ready_text = await page.evaluate(() => document.getElementById('ready').textContent);
  // The page keeps polling: one more poll, so the screenshot shows a settled page.
  const polls = Number(await page.evaluate(() => document.body.dataset.polls));
  await page.waitForFunction(n => Number(document.body.dataset.polls) > n, polls, { timeout: Math.min(10000, left()) }).catch(() => {});
  report.screenshot = path.join(outDir, 'status.png');
  await page.screenshot({ path: report.screenshot, fullPage: true });
  // What the Admin API holds now, as the page's forms sent it.
  report.admin = await page.evaluate(async () => {
    const get = async p => (await fetch(p, { credentials: 'same-origin' })).json();
    return { destinations: await get('/api/destinations'), routes: await get('/api/routes') };
  });

  // Removing: a destination a route still names is refused (and says so); once the route is
  // gone, it goes. The page asks first: yes.
  page.on('dialog', d => d.accept());
  const remove = async (table, key) => {
    await page.click(`#${table} button[aria-label="Remove ${table.slice(0, -1)} ${key}"]`);
  };
  await remove('destinations', 'ARCHIVE');
  await until('in-use refusal shown', async () => (await problems()).includes('DELETE /api/destinations/ARCHIVE'));
  report.in_use_refusal = await problems();
  await remove('routes', peerAe);
  await until('route removed', async () => !(await rowNames('routes')).includes(peerAe));
  await remove('destinations', 'ARCHIVE');
  await until('destination removed', async () => !(await rowNames('destinations')).includes('ARCHIVE'));
  report.problems_after_removal = await problems();
  report.elapsed_ms = Date.now() - started;
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
  report.screenshot = path.join(outDir, 'status.png');
  await page?.screenshot({ path: report.screenshot, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
