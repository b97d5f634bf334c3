// The SDK in headless Chromium, and the comet's web page built on it
// (Debian's chromium driven by playwright-core; see env.mjs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { env, token, connect, until, unique, stopComet, startComet } from "./env.mjs";

const timeout = 20000;
let browser;
const clients = [];
before(async () => {
  browser = await chromium.launch({
    executablePath: env.chromium,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // Pages open http://laneim.test:PORT/: plain http on a name that is
      // not localhost is no secure context (no crypto.randomUUID, say).
      "--host-resolver-rules=MAP laneim.test 127.0.0.1"],
  });
});
after(async () => {
  clients.forEach((c) => c.close());
  await browser?.close();
});

async function newPage(viewport) {
  // The https comet's certificate is from the test's own CA.
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, ...(viewport ? { viewport } : {}) });
  const page = await ctx.newPage();
  page.setDefaultTimeout(timeout);
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("response", (r) => r.status() >= 400 && problems.push(`${r.status()} ${r.url()}`));
  page.problems = problems;
  return page;
}

// pageURL is the comet's page under a name that is not localhost.
const pageURL = env.url.replace("127.0.0.1", "laneim.test");

// login opens the web page as user; it opens the lobby by itself.
async function login(user, viewport, url = pageURL) {
  const page = await newPage(viewport);
  await page.goto(url);
  if (url.startsWith("http:")) assert.equal(await page.evaluate(() => window.isSecureContext), false, "the page should be tested outside a secure context");
  await page.fill("input[name=token]", await token(user));
  await page.click("#login button");
  await page.waitForFunction((u) => document.querySelector("#status").textContent === "logged in as " + u, user);
  await page.getByText("joined lobby", { exact: true }).waitFor();
  return page;
}

const logLine = (page, text) => page.locator("#log li", { hasText: text }).first();

// shown waits for locator; when it times out, its error tells what the
// page's log held (the page notes its errors there too).
async function shown(page, locator) {
  try {
    await locator.waitFor();
  } catch (e) {
    e.message += "\n#log:\n" + (await page.locator("#log").innerText().catch(() => "(unreadable)"));
    throw e;
  }
}

test("the SDK works in Chromium", async () => {
  const page = await newPage();
  await page.goto(env.url);
  const text = unique("from chromium");
  const r = await page.evaluate(async ({ ws, tok, text }) => {
    const { Client } = await import("/sdk/index.js");
    const c = new Client({ url: ws, token: () => tok });
    const states = [];
    c.on("state", (s) => states.push(s.state));
    await c.connect();
    await c.join("lobby");
    const got = new Promise((resolve) => c.on("message", (m) => m.text === text && resolve(m)));
    const res = await c.send({ room: "lobby", text });
    const m = await got;
    const older = await c.history("room:lobby", m.seq + 1, 1);
    c.close();
    return { user: c.user, sent: res.seq, got: m.seq, sender: m.sender, states, older: older.map((o) => o.text) };
  }, { ws: env.ws, tok: await token("alice"), text });
  assert.equal(r.user, "alice");
  assert.equal(r.sender, "alice");
  assert.equal(r.got, r.sent);
  assert.deepEqual(r.older, [text]);
  assert.deepEqual(r.states, ["connecting", "open", "closed"]);
  await page.context().close();
});

test("two pages chat in a room and 1:1, with per-room online lists, history and unread markers", async () => {
  const carol = await login("carol");
  const dave = await login("dave");
  // carol sees dave come online in the lobby; dave's list comes from Joined.
  await carol.locator("#members li", { hasText: "dave" }).first().waitFor();
  if ((await dave.locator("#members").getAttribute("data-complete")) === "true") {
    await dave.locator("#members li", { hasText: "carol" }).first().waitFor();
  }
  const alice = clients[clients.push(await connect("alice")) - 1];
  await alice.join("dev");

  const hello = unique("hello from a browser");
  await carol.fill("input[name=text]", hello);
  await carol.press("input[name=text]", "Enter");
  await logLine(dave, "carol: " + hello).waitFor();
  const reply = unique("hi carol");
  await dave.fill("input[name=text]", reply);
  await dave.click("#send button");
  await logLine(carol, "dave: " + reply).waitFor();

  // 1:1: dave starts a conversation with carol; carol gets an unread marker.
  await dave.fill("#newdm input[name=user]", "carol");
  await dave.click("#newdm button");
  const psst = unique("psst carol");
  await dave.fill("input[name=text]", psst);
  await dave.press("input[name=text]", "Enter");
  await logLine(dave, "dave: " + psst).waitFor();
  const dm = carol.locator('#dms li[data-conv="dm:carol:dave"]');
  await dm.locator(".unread").waitFor();
  await dm.locator("button").click();
  await logLine(carol, "dave: " + psst).waitFor();
  await carol.locator("#log .divider").waitFor();
  assert.equal(await dm.locator(".unread").count(), 0);

  // A third page joining the lobby sees what was said before: history on join.
  const erin = await login("erin");
  await logLine(erin, "carol: " + hello).waitFor();
  await logLine(erin, "dave: " + reply).waitFor();

  // History on scroll: 60 messages in dev, the page shows the last 50 and
  // the rest when scrolled to the top.
  const tag = unique("old");
  for (let i = 1; i <= 60; i++) await alice.send({ room: "dev", text: `${tag} ${i}` });
  const bob = await login("bob");
  await bob.locator('#rooms li[data-conv="room:dev"] button').click();
  await logLine(bob, `alice: ${tag} 60`).waitFor();
  const first = bob.locator("#log li").filter({ hasText: new RegExp(`alice: ${tag} 1$`) });
  assert.equal(await first.count(), 0, "the oldest message is shown before scrolling");
  await until(async () => {
    await bob.evaluate(() => { const l = document.querySelector("#log"); l.scrollTop = 0; l.dispatchEvent(new Event("scroll")); });
    return (await first.count()) === 1;
  }, "older messages on scroll");

  // Online lists are per room: alice comes online in dev (she leaves and
  // joins again) and is listed there, not in the lobby she is not in.
  await alice.leave("dev");
  await alice.join("dev");
  await bob.locator("#members li", { hasText: "alice" }).first().waitFor();
  await bob.locator('#rooms li[data-conv="room:lobby"] button').click();
  await bob.waitForFunction(() => document.querySelector("#room").textContent === "lobby");
  await bob.locator("#members li", { hasText: "bob (you)" }).waitFor();
  assert.equal(await bob.locator("#members li", { hasText: "alice" }).count(), 0, "alice (online in dev only) listed in the lobby");

  for (const p of [carol, dave, erin, bob]) {
    assert.deepEqual(p.problems, [], "page errors or failed requests");
    await p.context().close();
  }
});

test("the page shows unread counts from read state, typing, and edits and recalls, its own and others'", async () => {
  const conv = "dm:carol:dave";
  // carol has read the conversation to its end (on another device, say).
  const carolNode = clients[clients.push(await connect("carol", { url: env.wsOther })) - 1];
  const dave = clients[clients.push(await connect("dave", { url: env.wsOther })) - 1];
  const daveGot = [], daveRead = [], daveTyping = [];
  dave.on("message", (m) => daveGot.push(m));
  dave.on("read", (r) => daveRead.push(r));
  dave.on("typing", (t) => daveTyping.push(t));
  const start = await dave.send({ user: "carol", text: unique("before") });
  await carolNode.ack(conv, start.seq);
  // Two messages while carol's page is closed: her LoginResult counts them.
  const one = await dave.send({ user: "carol", text: unique("one") });
  const two = await dave.send({ user: "carol", text: unique("two") });
  const carol = await login("carol");
  const dm = carol.locator(`#dms li[data-conv="${conv}"]`);
  await dm.locator(".unread", { hasText: /^2$/ }).waitFor();
  // A third arrives live and is counted.
  const threeText = unique("three");
  const three = await dave.send({ user: "carol", text: threeText });
  await dm.locator(".unread", { hasText: /^3$/ }).waitFor();

  // Opening it clears the badge and acks: dave gets a read receipt, and
  // her other device her position.
  await dm.locator("button").click();
  await logLine(carol, "dave: " + threeText).waitFor();
  await until(() => daveRead.some((r) => r.conversation === conv && r.user === "carol" && r.seq >= three.seq), "dave's read receipt");
  assert.equal(await dm.locator(".unread").count(), 0);
  assert.equal((await carolNode.conversations()).find((c) => c.conversation === conv).unread, 0);

  // dave types: "dave is typing…" for 5 s, then it goes.
  const typing = carol.locator("#typing");
  let t0 = Date.now();
  assert.equal(dave.typing(conv), true);
  await typing.filter({ hasText: "dave is typing…" }).waitFor();
  await carol.waitForFunction(() => document.querySelector("#typing").textContent === "", null, { timeout: 15000 });
  assert.ok(Date.now() - t0 >= 4000, `typing shown only ${Date.now() - t0} ms`);
  // It goes at once when his message comes.
  assert.equal(dave.typing(conv), true);
  await typing.filter({ hasText: "dave is typing…" }).waitFor();
  const four = unique("four");
  await dave.send({ user: "carol", text: four });
  await logLine(carol, "dave: " + four).waitFor();
  assert.equal(await typing.textContent(), "");
  // carol typing reaches dave.
  await carol.fill("input[name=text]", "typing a reply");
  await until(() => daveTyping.some((t) => t.conversation === conv && t.user === "carol"), "dave to see carol typing");
  await carol.fill("input[name=text]", "");

  // dave edits and recalls his messages: the page marks them.
  const edited = unique("one, edited");
  await dave.edit(one, { text: edited });
  const oneLine = carol.locator(`#log li[data-seq="${one.seq}"]`);
  await oneLine.locator(".edited").waitFor();
  assert.match(await oneLine.textContent(), new RegExp("dave: " + edited));
  await dave.recall(two);
  const twoLine = carol.locator(`#log li[data-seq="${two.seq}"]`);
  await carol.locator(`#log li.recalled[data-seq="${two.seq}"]`).waitFor();
  assert.ok(!(await twoLine.textContent()).includes("two-"), "a recalled message still shows its text");
  // No edit or recall buttons on another's message.
  assert.equal(await oneLine.locator("button").count(), 0);

  // carol edits and recalls her own with the page's buttons.
  const mine = unique("mine");
  await carol.fill("input[name=text]", mine);
  await carol.press("input[name=text]", "Enter");
  const mineLine = carol.locator("#log li", { hasText: "carol: " + mine });
  await mineLine.waitFor();
  // dave reads it: a read receipt marks it seen.
  assert.equal(await mineLine.locator(".seen").count(), 0);
  await dave.ack(conv, Number(await mineLine.getAttribute("data-seq")));
  await mineLine.locator(".seen").waitFor();
  await mineLine.locator("button.edit").click();
  assert.equal(await carol.inputValue("input[name=text]"), mine);
  const fixed = unique("mine, fixed");
  await carol.fill("input[name=text]", fixed);
  await carol.press("input[name=text]", "Enter");
  const fixedLine = carol.locator("#log li", { hasText: "carol: " + fixed });
  await fixedLine.locator(".edited").waitFor();
  await until(() => daveGot.some((m) => m.edits && m.text === fixed), "dave to get carol's edit");
  const seq = await fixedLine.getAttribute("data-seq");
  await fixedLine.locator("button.recall").click();
  await carol.locator(`#log li.recalled[data-seq="${seq}"]`).waitFor();
  await until(() => daveGot.some((m) => m.recalls === Number(seq)), "dave to get carol's recall");

  await carol.screenshot({ path: join(env.screenshots, "read-typing-edit.png") });

  // A page opened afterwards loads them as history (with its current
  // state): the same marks.
  const later = await login("carol");
  await later.locator(`#dms li[data-conv="${conv}"] button`).click();
  const oneAgain = later.locator(`#log li[data-seq="${one.seq}"]`);
  await shown(later, oneAgain.locator(".edited"));
  assert.match(await oneAgain.textContent(), new RegExp("dave: " + edited));
  await shown(later, later.locator(`#log li.recalled[data-seq="${two.seq}"]`));
  assert.ok(!(await later.locator(`#log li[data-seq="${two.seq}"]`).textContent()).includes("two-"));
  await shown(later, later.locator(`#log li.recalled[data-seq="${seq}"]`));
  assert.deepEqual(later.problems, []);
  await later.context().close();

  // Mentions: "@dave" in carol's text mentions him; dave's mention of her
  // in the lobby gets a mention badge.
  const hey = unique("@dave hey");
  await carol.fill("input[name=text]", hey);
  await carol.press("input[name=text]", "Enter");
  await until(() => daveGot.some((m) => m.text === hey && m.mentions.join() === "dave"), "dave to get carol's mention of him");
  const lobby = carol.locator('#rooms li[data-conv="room:lobby"]');
  assert.equal(await lobby.locator(".mention").count(), 0);
  const call = unique("@carol look");
  await dave.send({ room: "lobby", text: call, mentions: ["carol"] });
  await lobby.locator(".mention").waitFor();
  await lobby.locator("button").click();
  await carol.locator("#log li.mentions-me", { hasText: "dave: " + call }).waitFor();
  assert.equal(await lobby.locator(".mention, .unread").count(), 0);
  assert.deepEqual(carol.problems, []);
  await carol.context().close();
});

test("a page reconnects after the comet restarts and shows what it missed", async () => {
  const alice = await login("alice");
  const bob = clients[clients.push(await connect("bob", { url: env.wsOther })) - 1];
  const tag = unique("meanwhile");
  await stopComet();
  try {
    await alice.locator("#banner", { hasText: "reconnecting" }).waitFor();
    await bob.send({ room: "lobby", text: `${tag} in the lobby` });
    await bob.send({ user: "alice", text: `${tag} just for you` });
  } finally {
    await startComet();
  }
  await logLine(alice, `bob: ${tag} in the lobby`).waitFor({ timeout: 30000 });
  await alice.locator("#banner", { hasText: "caught up" }).waitFor();
  await alice.waitForFunction(() => document.querySelector("#conn").textContent === "online");
  const dm = alice.locator('#dms li[data-conv="dm:alice:bob"]');
  await dm.locator(".unread").waitFor();
  await dm.locator("button").click();
  await logLine(alice, `bob: ${tag} just for you`).waitFor();
  // Live again: the room was rejoined.
  const live = unique("live");
  await bob.send({ room: "lobby", text: live });
  await alice.locator('#rooms li[data-conv="room:lobby"] button').click();
  await logLine(alice, "bob: " + live).waitFor();
  await alice.screenshot({ path: join(env.screenshots, "reconnected.png") });
  await alice.context().close();
});

test("the page works over https (wss)", async () => {
  const page = await login("dave", undefined, env.httpsURL.replace("127.0.0.1", "laneim.test"));
  const text = unique("over tls");
  await page.fill("input[name=text]", text);
  await page.press("input[name=text]", "Enter");
  await logLine(page, "dave: " + text).waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("a phone-sized page has no horizontal overflow", async () => {
  const page = await login("erin", { width: 390, height: 844 });
  await page.fill("input[name=text]", unique("a long message without spaces ".repeat(3) + "x".repeat(200)));
  await page.press("input[name=text]", "Enter");
  await page.locator("#log li", { hasText: "xxxxxxxx" }).first().waitFor();
  const overflow = () => page.evaluate(() => {
    const d = document.documentElement;
    return { scroll: d.scrollWidth, client: d.clientWidth };
  });
  let o = await overflow();
  assert.ok(o.scroll <= o.client, `scrollWidth ${o.scroll} > clientWidth ${o.client}`);
  // The sidebar is collapsed: the message list takes the width.
  const log = await page.locator("#log").boundingBox();
  assert.ok(log.width >= 350, `message list is ${log.width} px wide`);
  assert.ok(log.height >= 500, `message list is ${log.height} px high`);
  await page.screenshot({ path: join(env.screenshots, "phone.png") });
  await page.click("#menu");
  await page.locator("nav #rooms li", { hasText: "lobby" }).waitFor();
  o = await overflow();
  assert.ok(o.scroll <= o.client, `with the menu open: scrollWidth ${o.scroll} > clientWidth ${o.client}`);
  await page.screenshot({ path: join(env.screenshots, "phone-menu.png") });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
