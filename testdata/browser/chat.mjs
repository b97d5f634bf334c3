// Two browser pages chat through laneIM's web client. Run by
// internal/app/browser_test.go with LANEIM_URL (the comet's page) and
// TOKEN_A / TOKEN_B (alice's and bob's login tokens). Exits non-zero on
// any failure; every wait is bounded.
import { chromium } from "playwright-core";

const url = process.env.LANEIM_URL;
const tokens = { alice: process.env.TOKEN_A, bob: process.env.TOKEN_B };
const timeout = 20000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const open = async (user) => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(timeout);
    await page.goto(url);
    await page.fill("input[name=token]", tokens[user]);
    await page.click("#login button");
    await page.waitForFunction((u) => document.querySelector("#status").textContent === "logged in as " + u, user);
    await page.click("#join button");
    await page.getByText("joined lobby", { exact: true }).waitFor();
    return page;
  };
  const alice = await open("alice");
  const bob = await open("bob");

  // alice sees bob come online in the member list.
  await alice.locator("#members li", { hasText: "bob" }).first().waitFor();

  await alice.fill("input[name=text]", "hello from a browser");
  await alice.press("input[name=text]", "Enter");
  await bob.locator("#log li", { hasText: "alice: hello from a browser" }).first().waitFor();

  await bob.fill("input[name=text]", "hi alice, bob here");
  await bob.click("#send button");
  await alice.locator("#log li", { hasText: "bob: hi alice, bob here" }).first().waitFor();
  await alice.screenshot({ path: process.env.SCREENSHOT || "/tmp/laneim-chat.png" });
  console.log("browser chat ok");
} finally {
  await browser.close();
}
