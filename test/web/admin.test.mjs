// Browser test of cove's admin page: headless Debian Chromium driven by playwright-core.
// The Go test TestWebPage starts cove and runs this file with COVE_URL, COVE_PASSWORD,
// COVE_LAYOUT (an OCI layout to push with skopeo), ARTIFACTS (where screenshots go) and MAILDIR
// (where the SMTP server that cove sends through delivers).
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const base = process.env.COVE_URL;
const password = process.env.COVE_PASSWORD;
const artifacts = process.env.ARTIFACTS || "test-results";
const host = new URL(base).host;

let browser, page;
const ok = "Dev1Passw0rd", changed = "Dev1N3wPassw0rd";

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
  await page.fill("#new-user input[name=password]", ok);
  await Promise.all([page.waitForLoadState("load"), page.click("#new-user button[type=submit]")]);
  await page.waitForSelector("#users >> text=dev1");

  // Create a project.
  await page.goto(base + "/projects");
  await page.fill("#new-project-name", "webteam");
  await page.check("#new-project-public");
  await page.click("#new-project-submit");
  await page.waitForSelector("#projects >> text=webteam");
  // A project with a storage limit shows its quota bar.
  await page.fill("#new-project-name", "capped");
  await page.fill("#new-project-limit", "10");
  await Promise.all([page.waitForEvent("load"), page.click("#new-project-submit")]);
  await page.waitForSelector("#projects tr:has-text('capped') progress");
  assert.match(await page.textContent("#projects tr:has-text('capped') .quota"), /0 B \/ 10\.0 MiB/);
  assert.match(await page.textContent("#projects tr:has-text('webteam') .quota"), /no limit/);
  // The admin changes a quota on the project's page.
  await page.goto(base + "/projects/capped");
  await page.fill("#quota-limit", "20");
  await Promise.all([page.waitForEvent("load"), page.click("#quota-submit")]);
  assert.match(await page.textContent("#project-quota"), /20\.0 MiB/);
  await page.goto(base + "/projects");
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
  // (Each click reloads the page: wait for that load, or the next navigation races it.)
  await Promise.all([page.waitForEvent("load"), page.click("#toggle-public")]);
  await page.waitForSelector("#visibility >> text=Private");
  await Promise.all([page.waitForEvent("load"), page.click("#toggle-public")]);
  assert.match(await page.textContent("#visibility"), /^\s*Public/);

  // A webhook policy for pushes, to the test's receiver (COVE_HOOK_URL).
  await page.fill("#webhook-name", "ci");
  await page.fill("#webhook-address", process.env.COVE_HOOK_URL);
  await page.uncheck("#new-webhook input[value=PULL_ARTIFACT]");
  await page.click("#webhook-submit");
  await page.waitForSelector("#webhooks >> text=ci");

  // Push an image with a real client; its tag shows on the repository page.
  execFileSync("skopeo", ["copy", "--dest-tls-verify=false", "--dest-creds", `admin:${password}`,
    `oci:${process.env.COVE_LAYOUT}:v1`, `docker://${host}/webteam/app:v1`], { stdio: "inherit" });
  // The push's delivery shows in the webhook's history.
  for (let i = 0; i < 50; i++) {
    await page.goto(base + `/projects/webteam?reload=${i}`); // a new load each time (a #fragment would not be)
    if (/delivered/.test(await page.textContent("#webhooks"))) break;
    await new Promise(r => setTimeout(r, 200));
  }
  assert.match(await page.textContent("#webhooks .delivery"), /PUSH_ARTIFACT\s*delivered\s*attempts: 1/);
  await page.locator("#webhooks").scrollIntoViewIfNeeded();
  await shot("03b-project-webhooks");
  await page.goto(base + "/projects/webteam");
  await page.click("#repositories >> text=webteam/app");
  await page.waitForSelector("#artifacts .tag >> text=v1");
  assert.match(await page.textContent("#artifacts code.pull"), new RegExp(`docker pull ${host}/webteam/app:v1`));
  await shot("04-repository");

  // Delete a tag from the repository page (the artifact stays), then a repository from the
  // project page.
  for (const ref of ["webteam/app:v2", "webteam/tmp:v1"]) {
    execFileSync("skopeo", ["copy", "--dest-tls-verify=false", "--dest-creds", `admin:${password}`,
      `oci:${process.env.COVE_LAYOUT}:v1`, `docker://${host}/${ref}`], { stdio: "inherit" });
  }
  await page.goto(base + "/projects/webteam/repositories/app");
  await page.waitForSelector("#artifacts .tag >> text=v2");
  assert.match(await page.textContent("#artifacts"), /docker pull [^ ]+\/webteam\/app@sha256:/, "no pull command by digest");
  await Promise.all([page.waitForEvent("load"), page.click("#artifacts .tag:has-text('v2') button.delete-tag")]);
  await page.waitForSelector("#artifacts .tag >> text=v1");
  assert.equal(await page.locator("#artifacts .tag:has-text('v2')").count(), 0, "the deleted tag is still shown");
  await page.goto(base + "/projects/webteam");
  await page.waitForSelector("#repositories >> text=webteam/tmp");
  await Promise.all([page.waitForEvent("load"), page.click("#repositories tr:has-text('webteam/tmp') button.delete-repo")]);
  await page.waitForSelector("#repositories >> text=webteam/app");
  assert.equal(await page.locator("#repositories >> text=webteam/tmp").count(), 0, "the deleted repository is still listed");
  await shot("04b-repository-deleted");

  // An immutability rule from the project page: the tag shows a lock, and no delete button.
  await page.goto(base + "/projects/webteam");
  await page.fill("#immutable-tag", "v*");
  await Promise.all([page.waitForEvent("load"), page.click("#immutable-submit")]);
  await page.waitForSelector("#immutable-rules >> text=v*");
  await page.goto(base + "/projects/webteam/repositories/app");
  await page.waitForSelector("#artifacts .tag:has-text('v1') .immutable");
  assert.equal(await page.locator("#artifacts .tag:has-text('v1') button.delete-tag").count(), 0, "an immutable tag is offered for deletion");
  assert.equal(await page.locator("#artifacts tr:has-text('v1') button.delete-artifact").count(), 0, "an artifact with an immutable tag is offered for deletion");
  await shot("04d-immutable");
  await page.goto(base + "/projects/webteam");
  await Promise.all([page.waitForEvent("load"), page.click("#immutable-rules tr:has-text('v*') button.delete")]);
  assert.equal(await page.locator("#immutable-rules >> text=v*").count(), 0, "the deleted rule is still listed");

  // A retention policy from the project page, and a dry run of it.
  await page.goto(base + "/projects/webteam");
  await page.selectOption("#retention-template", "latestPushedK");
  await page.fill("#retention-n", "5");
  await Promise.all([page.waitForEvent("load"), page.click("#retention-submit")]);
  await page.waitForSelector("#retention-rules >> text=the latest pushed 5");
  await Promise.all([page.waitForEvent("load"), page.click("#retention-dry")]);
  for (let i = 0; i < 50 && !/Succeed/.test(await page.textContent("#retention-runs")); i++) {
    await page.waitForTimeout(100); // the run's status, polled with a bound
    await page.reload();
  }
  assert.match(await page.textContent("#retention-runs"), /Succeed/);
  await shot("04e-retention");

  // Garbage collection: a dry run from the page, then its line in the history.
  await page.goto(base + "/gc");
  await page.waitForSelector("#gc-type");
  assert.equal(await page.inputValue("#gc-type"), "Hourly");
  await page.check("#gc-run-dry");
  await page.fill("#gc-run-window", "0");
  await Promise.all([page.waitForEvent("load"), page.click("#gc-run-submit")]);
  await page.waitForSelector("#gc-history tr >> nth=1");
  for (let i = 0; i < 50 && /Pending|Running/.test(await page.textContent("#gc-history")); i++) {
    await page.waitForTimeout(100); // the run's status, polled with a bound
    await page.reload();
  }
  assert.match(await page.textContent("#gc-history"), /Success/);
  await page.selectOption("#gc-type", "Daily");
  await Promise.all([page.waitForEvent("load"), page.click("#gc-schedule-submit")]);
  assert.equal(await page.inputValue("#gc-type"), "Daily");
  await shot("04c-gc");

  // Pre-warm from the mirror page: the job's line, then its image warm.
  await page.goto(base + "/mirror");
  await page.fill("#warm-images", "mirrored:1\n");
  await page.fill("#warm-platforms", "linux/amd64");
  await Promise.all([page.waitForEvent("load"), page.click("#warm-submit")]);
  await page.waitForSelector("#warm-jobs tr.warm-image");
  for (let i = 0; i < 50 && /Pending|Running/.test(await page.textContent("#warm-jobs")); i++) {
    await page.waitForTimeout(100); // the job's status, polled with a bound
    await page.reload();
  }
  const warmRow = await page.textContent("#warm-jobs tr.warm-image");
  assert.match(warmRow, /Success/);
  assert.match(warmRow, /mirrored:1/);
  assert.match(warmRow, /\bwarm\b/);
  await shot("04d-warm");

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
  for (const r of rows.slice(1)) {
    assert.match(r, /推送/);
    assert.match(r, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/, "an audit time is not to the second");
  }
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
  const ticks = await chart.locator("text.tick").allTextContents();
  assert.ok(ticks.filter(t => /^\d\d:\d0$/.test(t)).length >= 4, `the time axis has no labelled ticks: ${ticks}`);
  // The upstream's pull limit as its last answer told it: remaining / limit, and when it is full.
  const limit = await page.locator("#upstreams td.ratelimit").first().textContent();
  assert.match(limit, /42 \/ 100(, full again by|，最迟于) \d{4}-\d\d-\d\d \d\d:\d\d/, `the pull limit shown: ${limit}`);
  assert.match(await page.locator("#upstreams td.health").first().textContent(), /healthy|正常/);
  // The scrub that cove ran at its start (scrub.interval is set): its last result, no problem.
  for (let i = 0; i < 50 && await page.locator("#scrub").count() === 0; i++) {
    await page.waitForTimeout(200);
    await page.reload();
  }
  assert.match(await page.locator("#scrub td.problems").textContent(), /^(none|无)$/, "the last scrub shown");
  await shot("07-dashboard-chart");
});

// signIn opens a new browser context (its own cookies) signed in as user.
async function signIn(user, pass, locale = "en-US") {
  const context = await browser.newContext({ locale });
  const p = await context.newPage();
  p.on("dialog", d => d.accept());
  await p.goto(base + "/login");
  await p.fill("#username", user);
  await p.fill("#password", pass);
  await Promise.all([p.waitForURL(u => !u.pathname.startsWith("/login")), p.click("#login-submit")]);
  return p;
}

test("a developer sees no New-project or Delete buttons, and changes their own password", async () => {
  const p = await signIn("dev1", ok);
  await p.goto(base + "/projects");
  await p.waitForSelector("#projects >> text=webteam");
  assert.equal(await p.locator("#new-project, #new-project-submit").count(), 0, "a developer is offered New project");
  assert.equal(await p.locator("button.delete").count(), 0, "a developer is offered Delete");
  await p.screenshot({ path: `${artifacts}/08-developer-projects.png`, fullPage: true });
  await p.goto(base + "/projects/webteam");
  await p.waitForSelector("#repositories >> text=webteam/app");
  assert.equal(await p.locator("#new-member, #new-robot, #toggle-public, button.delete").count(), 0, "a developer is offered project admin's changes");

  // The own password: a wrong current password is refused, in the page's language.
  await p.click("#nav-account");
  await p.waitForURL(base + "/account");
  await p.fill("#old-password", "Wrong0Password");
  await p.fill("#new-password", changed);
  await p.fill("#confirm-password", changed);
  await p.click("#password-submit");
  await p.waitForSelector("#error:visible");
  assert.equal(await p.textContent("#error"), "The current password is wrong.");
  await p.click("#lang-zh");
  await p.waitForSelector("#password-submit >> text=保存");
  await p.fill("#old-password", "Wrong0Password");
  await p.fill("#new-password", changed);
  await p.fill("#confirm-password", changed);
  await p.click("#password-submit");
  await p.waitForSelector("#error:visible");
  assert.equal(await p.textContent("#error"), "当前密码错误。");
  await p.screenshot({ path: `${artifacts}/09-account-error-zh.png`, fullPage: true });
  await p.click("#lang-en");
  await p.waitForSelector("#password-submit >> text=Save");
  await p.fill("#old-password", ok);
  await p.fill("#new-password", changed);
  await p.fill("#confirm-password", changed);
  await p.click("#password-submit");
  await p.waitForSelector("#notice:visible");
  assert.equal(await p.textContent("#notice"), "Your password is changed.");
  assert.ok(await p.locator("#error").isHidden(), "the earlier error still shows");
  await p.screenshot({ path: `${artifacts}/10-account-password.png`, fullPage: true });
  await p.context().close();

  // The new password signs in; the old one does not.
  const again = await signIn("dev1", changed);
  assert.match(await again.textContent("h1"), /Projects/);
  await again.context().close();
  const context = await browser.newContext({ locale: "en-US" });
  const old = await context.newPage();
  await old.goto(base + "/login");
  await old.fill("#username", "dev1");
  await old.fill("#password", ok);
  await old.click("#login-submit");
  await old.waitForSelector("#login-error");
  await context.close();
});

test("an admin creates a robot account and sees its secret once, copies it, and the list shows it", async () => {
  // The admin's page is in Chinese since the first test; back to English.
  await page.goto(base + "/projects/webteam");
  await page.click("#lang-en");
  await page.waitForSelector("#robot-submit >> text=Create");
  assert.ok(await page.locator("#robot-secret").isHidden(), "the secret box shows before a robot is made");
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  await page.fill("#robot-name", "ci");
  await page.click("#robot-submit");
  await page.waitForSelector("#robot-secret:visible");
  assert.match(await page.textContent("#robot-secret"), /shown only once/);
  assert.equal(await page.textContent("#robot-secret-name"), "robot$webteam+ci");
  const secret = await page.textContent("#robot-secret-value");
  assert.ok(secret.length >= 20, `secret ${secret}`);
  // The list has the new robot without a reload (a reload would lose the secret).
  await page.waitForSelector("#robots >> text=robot$webteam+ci");
  assert.equal(await page.textContent("#robot-secret-value"), secret);
  await page.click("#robot-secret-copy");
  await page.waitForSelector("#robot-secret-copy >> text=Copied");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await shot("11-robot-secret");
  // The secret is the robot's: it pulls.
  execFileSync("skopeo", ["inspect", "--tls-verify=false", "--creds", `robot$webteam+ci:${secret}`,
    `docker://${host}/webteam/app:v1`], { stdio: "inherit" });
  // After a reload the robot is listed, and its secret is gone for good.
  await page.reload();
  await page.waitForSelector("#robots >> text=robot$webteam+ci");
  assert.ok(!(await page.content()).includes(secret), "the secret shows again after a reload");

  // A system admin resets others' passwords and grants admin from the Users page.
  await page.goto(base + "/users");
  const row = page.locator("#user-dev1");
  await row.locator("input[name=new_password]").fill("Dev1Reset0Password");
  await row.locator("form.reset button").click();
  await page.waitForSelector("#notice:visible");
  await row.locator("button.grant").click();
  await page.waitForSelector("#user-dev1 button.revoke");
  assert.equal(await page.locator("#user-admin button, #user-admin form").count(), 0, "the admin may remove itself");
  await shot("12-users");
});

test("an unknown page is the site's 404 page", async () => {
  const resp = await page.goto(base + "/no/such/page");
  assert.equal(resp.status(), 404);
  assert.match(await page.textContent("h1"), /Page not found/);
  assert.equal(await page.locator("#nav-projects").count(), 1, "the 404 page lacks the site's navigation");
  await shot("13-not-found");
  const gone = await page.goto(base + "/projects/nosuch");
  assert.equal(gone.status(), 404);
  assert.match(await page.textContent("#page-error"), /project does not exist/);
});

// mailTo waits for a mail to addr in MAILDIR (aiosmtpd's maildir) and returns its decoded body.
async function mailTo(addr) {
  const dir = `${process.env.MAILDIR}/new`;
  for (let i = 0; i < 300; i++) {
    let files = [];
    try { files = readdirSync(dir); } catch (_) { /* not made yet */ }
    for (const f of files) {
      const raw = readFileSync(`${dir}/${f}`, "utf8");
      const [head, ...rest] = raw.split(/\r?\n\r?\n/);
      if (!new RegExp(`^X-RcptTo: ${addr}$`, "mi").test(head)) continue;
      // Quoted-printable: soft line breaks, then =XX bytes, as UTF-8.
      const qp = rest.join("\n\n").replace(/=\r?\n/g, "");
      const bytes = [];
      for (let j = 0; j < qp.length; j++) {
        if (qp[j] === "=" && /^[0-9A-F]{2}$/.test(qp.slice(j + 1, j + 3))) { bytes.push(parseInt(qp.slice(j + 1, j + 3), 16)); j += 2; }
        else bytes.push(...Buffer.from(qp[j]));
      }
      return Buffer.from(bytes).toString("utf8");
    }
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`no mail to ${addr} within 30 s`);
}

test("a user who forgot the password asks for a link, in Chinese, and the mailed link sets a new one once", async () => {
  const context = await browser.newContext({ locale: "en-US" });
  const p = await context.newPage();
  await p.goto(base + "/login");
  await Promise.all([p.waitForURL(base + "/forgot-password"), p.click("#forgot-link >> text=Forgot password?")]);
  assert.match(await p.textContent("h1"), /Reset your password/);
  await p.screenshot({ path: `${artifacts}/14-forgot-en.png`, fullPage: true });
  await p.click("#lang-zh");
  await p.waitForSelector("#forgot-submit >> text=发送链接");
  assert.match(await p.textContent("h1"), /重置密码/);
  await p.fill("#forgot-email", "dev1@example.org");
  await p.click("#forgot-submit");
  await p.waitForSelector("#notice:visible");
  assert.match(await p.textContent("#notice"), /链接已发出/);
  await p.screenshot({ path: `${artifacts}/15-forgot-sent-zh.png`, fullPage: true });
  // The sign-in page in Chinese has the link too.
  await p.goto(base + "/login");
  assert.equal(await p.textContent("#forgot-link"), "忘记密码？");

  const body = await mailTo("dev1@example.org");
  assert.match(body, /dev1，您好/, "the mail is not in the language of the page that asked");
  const link = /(http:\/\/\S+\/reset-password#token=[A-Za-z0-9_-]{43})/.exec(body)?.[1];
  assert.ok(link && link.startsWith(base + "/"), `no link to ${base} in the mail:\n${body}`);

  await p.click("#lang-en");
  await p.goto(link);
  await p.waitForSelector("#resetpw-form");
  assert.ok(!p.url().includes("token="), `the token stays in the address bar: ${p.url()}`);
  const fresh = "Dev1Mail3dPassw0rd";
  await p.fill("#reset-new-password", fresh);
  await p.fill("#reset-confirm-password", fresh + "x");
  await p.click("#resetpw-submit");
  await p.waitForSelector("#error:visible");
  assert.equal(await p.textContent("#error"), "The two new passwords differ.");
  await p.fill("#reset-new-password", fresh);
  await p.fill("#reset-confirm-password", fresh);
  await p.click("#resetpw-submit");
  await p.waitForSelector("#notice:visible");
  assert.match(await p.textContent("#notice"), /Your password is set/);
  await p.screenshot({ path: `${artifacts}/16-reset-done.png`, fullPage: true });

  // The link works once.
  await p.goto(base + "/login");
  await p.goto(link);
  await p.fill("#reset-new-password", "Dev1Other4Passw0rd");
  await p.fill("#reset-confirm-password", "Dev1Other4Passw0rd");
  await p.click("#resetpw-submit");
  await p.waitForSelector("#error:visible");
  assert.match(await p.textContent("#error"), /used already/);
  await p.screenshot({ path: `${artifacts}/17-reset-used.png`, fullPage: true });
  await context.close();

  // dev1 is an admin since the robot test: signed in, the dashboard.
  const again = await signIn("dev1", fresh);
  assert.match(await again.textContent("h1"), /Dashboard/);
  await again.context().close();
});
