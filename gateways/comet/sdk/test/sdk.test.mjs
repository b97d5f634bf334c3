// The SDK in Node against a real cluster (see env.mjs).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { Client, LaneError, SeqTracker, newId, directConversation, peerOf } from "../dist/index.js";
import { env, token, connect, until, unique, stopComet, startComet } from "./env.mjs";

const clients = [];
const track = (c) => (clients.push(c), c);
after(() => clients.forEach((c) => c.close()));

test("logs in, joins, sends and receives; refusals are LaneErrors", async () => {
  const alice = track(await connect("alice"));
  const bob = track(await connect("bob", { url: env.wsOther }));
  assert.equal(alice.user, "alice");
  assert.equal(alice.state, "open");
  const j = await alice.join("lobby");
  assert.equal(j.conversation, "room:lobby");
  await bob.join("lobby");
  const text = unique("hello");
  const got = new Promise((resolve) => bob.on("message", (m) => m.text === text && resolve(m)));
  const res = await alice.send({ room: "lobby", text });
  const m = await got;
  assert.equal(m.sender, "alice");
  assert.equal(m.seq, res.seq);
  assert.equal(m.conversation, "room:lobby");
  assert.equal(m.live, true);

  await assert.rejects(alice.join("no-such-room"), (e) => e instanceof LaneError && e.code === "UNKNOWN_ROOM");
  await assert.rejects(alice.join("ops"), (e) => e instanceof LaneError && e.code === "NOT_MEMBER");
  await assert.rejects(alice.send({ user: "nobody", text: "x" }), (e) => e.code === "UNKNOWN_USER");

  // 1:1: both devices of the conversation get it.
  const dm = unique("dm");
  const bobGot = new Promise((resolve) => bob.on("message", (m) => m.text === dm && resolve(m)));
  const r2 = await alice.send({ user: "bob", text: dm });
  assert.equal(r2.conversation, directConversation("alice", "bob"));
  assert.equal((await bobGot).conversation, "dm:alice:bob");
  assert.equal(peerOf("dm:alice:bob", "bob"), "alice");
});

test("a bad token fails connect; requests time out; ping answers", async () => {
  const bad = new Client({ url: env.ws, token: () => "not-a-jwt" });
  await assert.rejects(bad.connect(), (e) => e.code === "BAD_TOKEN");
  assert.equal(bad.state, "closed");

  const carol = track(await connect("carol"));
  assert.ok((await carol.ping()) >= 0);
  // Ack is answered with the read position (docs/protocol.md, "Read state").
  const read = await carol.request({ ack: { conversation: "room:lobby", seq: "1" } });
  assert.equal(read.readUpdate?.conversation, "room:lobby");
  // Typing is answered only when refused: a request for it times out.
  await assert.rejects(carol.request({ typing: { conversation: "room:lobby" } }, 300), (e) => e.code === "TIMEOUT");
  // The connection is still fine.
  assert.ok((await carol.ping()) >= 0);
});

test("pings on its interval and stays open", async () => {
  const sent = [];
  class Recording extends globalThis.WebSocket {
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const c = track(await connect("carol", { WebSocket: Recording, pingIntervalMs: 150 }));
  await until(() => sent.filter((f) => f.ping).length >= 4, "four pings");
  assert.equal(c.state, "open");
  assert.ok(sent.every((f) => f.requestId && /^\d+$/.test(f.requestId)), "every frame has a request id");
});

test("a connection whose pongs stop coming is dropped and made again", async () => {
  let deaf = true;
  class Deaf extends globalThis.WebSocket {
    send(data) {
      if (deaf && JSON.parse(data).ping) return; // as if the network ate it
      super.send(data);
    }
  }
  const states = [];
  const c = track(await connect("dave", { WebSocket: Deaf, pingIntervalMs: 100, requestTimeoutMs: 300, minBackoffMs: 50, maxBackoffMs: 200 }));
  c.on("state", (s) => states.push(s.reason ? `${s.state} ${s.reason}` : s.state));
  await until(() => states.some((s) => s.includes("no pong")), "the silent connection dropped");
  deaf = false;
  await until(() => c.state === "open" && states.at(-1) === "open", "a new connection");
  assert.ok((await c.ping()) >= 0);
});

test("history pages back through a conversation", async () => {
  const dave = track(await connect("dave", { url: env.wsOther }));
  const texts = [];
  for (let i = 0; i < 7; i++) {
    texts.push(unique("h" + i));
    await dave.send({ user: "carol", text: texts[i] });
  }
  const conv = directConversation("carol", "dave");
  const latest = (await dave.conversations()).find((c) => c.conversation === conv).latestSeq;
  const last3 = await dave.history(conv, latest + 1, 3);
  assert.deepEqual(last3.map((m) => m.text), texts.slice(4));
  const before = await dave.history(conv, last3[0].seq, 2);
  assert.deepEqual(before.map((m) => m.text), texts.slice(2, 4));
});

test("reconnects after the comet restarts, logs in again and catches up in order without repeats", async () => {
  let tokens = 0;
  const tok = await token("erin");
  const states = [];
  const erin = track(new Client({ url: env.ws, token: () => (tokens++, tok), minBackoffMs: 100, maxBackoffMs: 1000, syncPageSize: 2, log: (l) => console.log("erin:", l) }));
  erin.on("state", (s) => (states.push(s.state), console.log("erin state:", JSON.stringify(s))));
  erin.on("error", (e) => console.log("erin error:", e.message));
  const got = [];
  erin.on("message", (m) => got.push(m));
  const catchups = [];
  erin.on("catchup", (e) => catchups.push(e));
  await erin.connect();
  await erin.join("lobby");
  const bob = track(await connect("bob", { url: env.wsOther }));

  await stopComet();
  try {
    await until(() => erin.state === "reconnecting", "erin to notice");
    const tag = unique("away");
    for (let i = 0; i < 5; i++) await bob.send({ room: "lobby", text: `${tag} room ${i}` });
    for (let i = 0; i < 2; i++) await bob.send({ user: "erin", text: `${tag} dm ${i}` });
    // Sent while down: it goes out once the client is back.
    const late = erin.send({ room: "lobby", text: `${tag} from erin` });
    await startComet();
    await late;
    const mine = () => got.filter((m) => m.text.startsWith(tag));
    await until(() => mine().length === 8, "erin to catch up 8 messages");
    // Live messages flow after the rejoin.
    await bob.send({ room: "lobby", text: `${tag} live` });
    await until(() => mine().length === 9, "a live message after the reconnect");

    const byConv = {};
    for (const m of got) (byConv[m.conversation] ||= []).push(m.seq);
    for (const [conv, seqs] of Object.entries(byConv)) {
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `${conv} in order`);
      assert.equal(new Set(seqs).size, seqs.length, `${conv} without repeats`);
    }
    assert.deepEqual(mine().filter((m) => m.conversation === "dm:bob:erin").map((m) => m.text), [`${tag} dm 0`, `${tag} dm 1`]);
    assert.deepEqual(mine().filter((m) => m.text.includes(" room ")).map((m) => m.text), [0, 1, 2, 3, 4].map((i) => `${tag} room ${i}`));
    assert.ok(tokens >= 2, `token asked ${tokens} times`);
    assert.ok(states.includes("reconnecting") && states.at(-1) === "open", `states ${states}`);
    assert.ok(catchups.some((e) => e.reconnect && e.messages > 0), JSON.stringify(catchups));
  } finally {
    await startComet();
  }
});

test("SeqTracker drops repeats and remembers a window", () => {
  const s = new SeqTracker(4);
  assert.equal(s.add("c", 1), true);
  assert.equal(s.add("c", 1), false);
  assert.equal(s.add("c", 3), true);
  assert.equal(s.add("c", 2), true);
  for (let i = 4; i <= 10; i++) s.add("c", i);
  assert.equal(s.has("c", 2), true); // below the window: counted as had
  assert.equal(s.latest("c"), 10);
  s.mark("d", 5);
  assert.equal(s.add("d", 5), false);
  assert.equal(s.add("d", 6), true);
  assert.equal(s.known("e"), false);
  assert.match(newId(), /^[0-9a-f]{32}$/);
});
