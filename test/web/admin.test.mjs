// Browser test of cove's admin page: headless Debian Chromium driven by playwright-core.
// The Go test TestWebPage starts cove and runs this file with COVE_URL, COVE_PASSWORD,
// COVE_LAYOUT (an OCI layout to push with skopeo) and ARTIFACTS (where screenshots go).
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const base = process.env.COVE_URL;
const password = process.env.COVE_PASSWORD;
const artifacts = process.env.ARTIFACTS || "test-results";
const host = new URL(base).host;

let browser, page;

before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ locale: "en-US" });
  page = await context.newPage();
  page.on("dialog", d => d.accept());
});

after(async () => { await browser?.close(); });

async function shot(name) {
  await page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
}

test("sign in, manage a project, see pushed tags, switch language, filter the audit log, see the chart", async () => {
  await page.goto(base + "/login");
  await page.fill("#username", "admin");
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(base + "/"), page.click("#login-submit")]);
  assert.match(await page.textContent("h1"), /Dashboard/);
  await shot("01-dashboard");

  // A user to make a member of.
  await page.goto(base + "/users");
  await page.fill("#new-user input[name=username]", "dev1");
  await page.fill("#new-user input[name=email]", "dev1@example.org");
  await page.fill("#new-user input[name=password]", "Dev1Passw0rd");
  await Promise.all([page.waitForLoadState("load"), page.click("#new-user button[type=submit]")]);
  await page.waitForSelector("#users >> text=dev1");

  // Create a project.
  await page.goto(base + "/projects");
  await page.fill("#new-project-name", "webteam");
  await page.check("#new-project-public");
  await page.click("#new-project-submit");
  await page.waitForSelector("#projects >> text=webteam");
  await shot("02-projects");

  // Add a member, and a group whose name holds HTML: it must show as text.
  await page.goto(base + "/projects/webteam");
  await page.fill("#member-name", "dev1");
  await page.selectOption("#member-role", "2");
  await page.click("#member-submit");
  await page.waitForSelector("#members >> text=dev1");
  const evil = "<b id=injected>bold</b>";
  await page.fill("#member-name", evil);
  await page.selectOption("#member-kind", "g");
  await page.click("#member-submit");
  await page.waitForSelector(`#members >> text=${evil}`);
  assert.equal(await page.locator("#injected").count(), 0, "HTML in a name was rendered as HTML");
  await shot("03-project-members");

  // Make the project private, then public again.
  await page.click("#toggle-public");
  await page.waitForSelector("#visibility >> text=Private");
  await page.click("#toggle-public");
  await page.waitForSelector("#visibility >> text=Public");

  // Push an image with a real client; its tag shows on the repository page.
  execFileSync("skopeo", ["copy", "--dest-tls-verify=false", "--dest-creds", `admin:${password}`,
    `oci:${process.env.COVE_LAYOUT}:v1`, `docker://${host}/webteam/app:v1`], { stdio: "inherit" });
  await page.goto(base + "/projects/webteam");
  await page.click("#repositories >> text=webteam/app");
  await page.waitForSelector("#artifacts .tag >> text=v1");
  assert.match(await page.textContent("#artifacts code.pull"), new RegExp(`docker pull ${host}/webteam/app:v1`));
  await shot("04-repository");

  // Switch to Chinese: the choice persists across pages.
  await page.click("#lang-zh");
  await page.waitForSelector("#nav-projects >> text=项目");
  await page.goto(base + "/projects");
  assert.match(await page.textContent("h1"), /项目/);
  await shot("05-chinese");

  // Filter the audit log: pushes only.
  await page.goto(base + "/audit");
  await page.selectOption("#audit-op", "push");
  await Promise.all([page.waitForURL(/operation=push/), page.click("#audit-submit")]);
  const rows = await page.locator("#audit tr").allTextContents();
  assert.ok(rows.slice(1).length > 0, "no push in the audit log");
  for (const r of rows.slice(1)) assert.match(r, /推送/);
  assert.ok(rows.some(r => r.includes("webteam/app")), "the push of webteam/app is not listed");
  await shot("06-audit");

  // Pull through the mirror, then the dashboard's chart shows this minute's misses and hits.
  for (let i = 0; i < 2; i++) {
    execFileSync("skopeo", ["inspect", "--tls-verify=false", `docker://${host}/library/mirrored:1`], { stdio: "inherit" });
  }
  await page.goto(base + "/");
  const chart = page.locator("svg#chart");
  assert.equal(await chart.count(), 1);
  assert.ok((await chart.boundingBox()).width > 100, "the chart is not visible");
  const heights = await chart.locator("rect.hit, rect.miss").evaluateAll(rs => rs.map(r => Number(r.getAttribute("height"))));
  assert.ok(heights.some(h => h > 0), "the chart draws no hit or miss");
  await shot("07-dashboard-chart");
});
