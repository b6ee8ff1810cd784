// The admin console end to end, as its users drive it, in Debian's Chromium (playwright-core):
// sign in with the printed credentials, import a CSV with a bad row and see it reported,
// search as you type, edit a user, revoke their session, bulk-deactivate, invite, read the
// audit log, use it at phone width and by keyboard, sign out. Takes the README's screenshots.
//   node console.mjs BASE_URL EMAIL PASSWORD SCREENSHOT_DIR
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, email, password, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
page.setDefaultTimeout(10_000);
// Script errors and Content-Security-Policy refusals both surface here.
const problems = [];
// (A refused form, such as the bad import, answers 422 on purpose: that is not a problem.)
page.on('console', (m) => {
  if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) problems.push(m.text());
});
page.on('pageerror', (e) => problems.push(String(e)));

const step = (name) => console.log(`-- ${name}`);
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const notice = () => page.locator('.notice').textContent();

/** Every visible field has a label a screen reader announces. */
async function assertLabelled() {
  const unlabelled = await page.$$eval('input:not([type=hidden]), select, textarea', (fields) =>
    fields
      .filter((f) => f.labels.length === 0 && !f.getAttribute('aria-label'))
      .map((f) => f.outerHTML));
  assert.deepEqual(unlabelled, [], `unlabelled fields on ${page.url()}`);
}

step('a stranger is sent to the sign-in page');
await page.goto(`${base}/admin`);
assert.equal(new URL(page.url()).pathname, '/admin/login');
await assertLabelled();
await shot('sign-in');

step('sign in with the printed credentials');
await page.getByLabel('Email').fill(email);
await page.getByLabel('Password').fill(password);
await page.getByRole('button', { name: 'Sign in' }).click();
await page.waitForURL(`${base}/admin`);
assert.equal(await page.locator('h1').textContent(), 'Dashboard');
const total = Number(await page.locator('.card .figure').first().textContent());
assert.ok(total > 1000, `seeded users counted: ${total}`);
assert.equal(await page.locator('svg.chart rect.bar').count(), 30);
await shot('dashboard');

step('keyboard: the first Tab reaches "Skip to content", which moves focus to the page');
await page.keyboard.press('Tab');
assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
await page.keyboard.press('Enter');
assert.equal(await page.evaluate(() => document.activeElement.id), 'main');

step('import a CSV with one bad row: it is reported by line, nothing is created');
await page.getByRole('link', { name: 'Import' }).click();
await assertLabelled();
const bad = 'email,password,full_name\n'
  + 'zelda.quistorp@example.com,analytical-engine,Zelda Quistorp\n'
  + 'not-an-address,difference-engine,Barnaby Vexley\n';
await page.setInputFiles('#file', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(bad) });
await page.getByRole('button', { name: 'Import' }).click();
const reported = page.locator('.problems tbody tr');
await reported.first().waitFor();
assert.equal(await reported.count(), 1);
assert.equal(await reported.locator('td').first().textContent(), '3');
assert.match(await reported.textContent(), /email/);
await shot('import');
const good = bad.replace('not-an-address', 'barnaby.vexley@example.com');
await page.setInputFiles('#file', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(good) });
await page.getByRole('button', { name: 'Import' }).click();
await page.waitForURL(/\/admin\/users\?done=imported/);
assert.equal(await notice(), 'Imported 2 users.');

step('search as you type: only the results are fetched and swapped in');
await page.evaluate(() => { window.stillTheSamePage = true; });
await page.getByLabel('Search email or name').pressSequentially('quistorp', { delay: 40 });
await page.waitForURL(/search=quistorp/);
await page.locator('#results', { hasText: '1 user matches.' }).waitFor();
assert.equal(await page.locator('#results tbody tr').count(), 1);
assert.ok(await page.evaluate(() => window.stillTheSamePage), 'no full page load');
await assertLabelled();
await shot('users');

step('sort by email, then page on by cursor');
await page.getByLabel('Search email or name').fill('');
await page.locator('#results', { hasText: /\d+ users match\./ }).waitFor();
await page.getByRole('link', { name: 'Email' }).click();
await page.waitForURL(/sort=email/);
await page.locator('th[aria-sort="ascending"]').waitFor();
const firstPage = await page.locator('#results tbody td:nth-child(2)').allTextContents();
assert.deepEqual(firstPage, [...firstPage].sort());
await page.getByRole('link', { name: 'Next page »' }).click();
await page.waitForURL(/cursor=/);
await page.waitForFunction((first) =>
  document.querySelector('#results tbody td:nth-child(2)')?.textContent !== first, firstPage[0]);
const secondPage = await page.locator('#results tbody td:nth-child(2)').allTextContents();
assert.ok(secondPage[0] > firstPage.at(-1), 'the next page continues the order');

step('a session of Zelda, opened through the API');
const login = await fetch(`${base}/api/v1/auth/login`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', 'user-agent': 'Ada-Laptop/1.0' },
  body: JSON.stringify({ email: 'zelda.quistorp@example.com', password: 'analytical-engine' }),
});
assert.equal(login.status, 200);
const adaToken = (await login.json()).access_token;
const me = () => fetch(`${base}/api/v1/users/me`, { headers: { authorization: `Bearer ${adaToken}` } });
assert.equal((await me()).status, 200);

step('edit Zelda on her page');
await page.goto(`${base}/admin/users?search=quistorp`);
await page.getByRole('link', { name: 'zelda.quistorp@example.com' }).click();
await page.getByLabel('Full name').fill('Zelda Q. Quistorp-King');
await page.getByRole('button', { name: 'Save' }).click();
await page.waitForURL(/done=saved/);
const zeldaPage = new URL(page.url()).pathname;
assert.equal(await notice(), 'Saved.');
assert.equal(await page.getByLabel('Full name').inputValue(), 'Zelda Q. Quistorp-King');
await assertLabelled();
await shot('user');

step('revoke her session: her token stops working at once');
const sessions = page.locator('table[aria-labelledby="sessions"] tbody tr');
assert.equal(await sessions.count(), 1);
assert.match(await sessions.textContent(), /Ada-Laptop/);
await sessions.getByRole('button', { name: /^Revoke/ }).click();
await page.waitForURL(/done=revoked/);
assert.equal(await notice(), 'Session ended.');
assert.equal((await me()).status, 401);

step('bulk: select Vexley, deactivate, confirm');
await page.goto(`${base}/admin/users?search=vexley`);
await page.getByLabel('Select barnaby.vexley@example.com').check();
await page.getByRole('button', { name: 'Deactivate' }).click();
await page.getByRole('button', { name: 'Yes, deactivate' }).click();
await page.waitForURL(/done=deactivated/);
assert.equal(await notice(), 'Deactivated 1 user; their sessions ended.');

step('invite a user');
await page.getByRole('link', { name: 'Invite' }).click();
await assertLabelled();
await shot('invite');
await page.getByLabel('Email').fill('greta.hollis@example.com');
await page.getByLabel('Full name (optional)').fill('Greta Hollis');
await page.getByRole('button', { name: 'Send invitation' }).click();
await page.waitForURL(/done=invited/);
assert.match(await notice(), /Invitation sent/);

step('the audit log shows what was done, filtered');
await page.getByRole('link', { name: 'Audit log' }).click();
await page.getByLabel('Action').fill('user.*');
await page.getByRole('button', { name: 'Filter' }).click();
await page.waitForURL(/action=user/);
const actions = await page.locator('tbody td:nth-child(2)').allTextContents();
for (const expected of ['user.invited', 'user.updated', 'user.created']) {
  assert.ok(actions.includes(expected), `${expected} in ${actions}`);
}
await assertLabelled();
await shot('audit');

step('phone width: nothing overflows the screen, the table scrolls in its box');
await page.setViewportSize({ width: 390, height: 844 });
await page.goto(`${base}/admin/users`);
const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
assert.ok(overflow <= 0, `page wider than the screen by ${overflow}px`);
await page.screenshot({ path: `${shots}/users-phone.png` });
await page.setViewportSize({ width: 1280, height: 860 });

step('accessibility: axe-core finds no violation on any page (WCAG 2.1 A and AA rules)');
// A context of its own that lets axe's script in: the console's CSP (rightly) refuses it.
const audit = await browser.newContext({ bypassCSP: true, storageState: await context.storageState() });
const auditPage = await audit.newPage();
const axeSource = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
const axeCheck = async (path) => {
  await auditPage.goto(`${base}${path}`);
  await auditPage.addScriptTag({ content: axeSource });
  const violations = await auditPage.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] });
    return result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(', ')})`);
  });
  assert.deepEqual(violations, [], `accessibility problems on ${path}`);
};
for (const path of ['/admin', '/admin/users', '/admin/users?search=quistorp', '/admin/invite',
  '/admin/import', '/admin/audit', zeldaPage]) {
  await axeCheck(path);
}
await audit.clearCookies();
await axeCheck('/admin/login');
await audit.close();

step('sign out: the session ends');
await page.getByRole('button', { name: 'Sign out' }).click();
await page.waitForURL(`${base}/admin/login`);
await page.goto(`${base}/admin/users`);
assert.equal(new URL(page.url()).pathname, '/admin/login');

assert.deepEqual(problems, [], 'no script error or CSP refusal');
await browser.close();
console.log('admin console: every step passed');
