// What the tests get from internal/app/sdk_test.go, which starts the
// cluster: comets (LANEIM_WS, which the tests may stop and start through
// LANEIM_CONTROL; LANEIM_WS_OTHER; LANEIM_HTTPS_URL, one serving https with
// a certificate for laneim.test), tokens for any user.
import { Client } from "../dist/index.js";

export const env = {
  ws: need("LANEIM_WS"),
  wsOther: need("LANEIM_WS_OTHER"),
  url: need("LANEIM_URL"),
  httpsURL: need("LANEIM_HTTPS_URL"),
  control: need("LANEIM_CONTROL"),
  chromium: process.env.CHROMIUM || "/usr/bin/chromium",
  screenshots: process.env.SCREENSHOTS || "/tmp",
};

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: these tests are run by go test ./internal/app -run TestSDK`);
  return v;
}

async function control(path) {
  const res = await fetch(env.control + path, { signal: AbortSignal.timeout(30000) });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.text();
}

export const token = (user) => control("/token?user=" + encodeURIComponent(user));
export const stopComet = () => control("/comet/stop");
export const startComet = () => control("/comet/start");

/** connect logs user in on url (default: the restartable comet). */
export async function connect(user, opts = {}) {
  const tok = await token(user);
  const c = new Client({ url: env.ws, token: () => tok, device: "node-test", ...opts });
  await c.connect();
  return c;
}

/** until resolves once fn() is truthy, checking every 50 ms, or rejects after ms. */
export async function until(fn, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** unique returns a string no earlier run of a test used. */
export const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
