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

test("asks for compact batches and hands out whole messages", async () => {
  const frames = [];
  const sent = [];
  class Recording extends globalThis.WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => frames.push(JSON.parse(e.data)));
    }
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const alice = track(await connect("alice"));
  const bob = track(await connect("bob", { WebSocket: Recording }));
  assert.equal(sent.find((f) => f.login)?.login.compactBatches, true);
  await alice.join("lobby");
  await bob.join("lobby");
  // A lone message comes whole; messages sent together come merged, in a
  // compact batch. Bursts of five (the per-connection burst) until one
  // merged, at most ten.
  const received = new Map();
  bob.on("message", (m) => received.set(m.text, m));
  let merged;
  for (let burst = 0; burst < 10 && !merged; burst++) {
    const texts = Array.from({ length: 5 }, () => unique("compact"));
    await Promise.all(texts.map((text) => alice.send({ room: "lobby", text, contentType: "text/plain" })));
    await until(() => texts.every((t) => received.has(t)), "the burst's messages");
    for (const t of texts) {
      const m = received.get(t);
      assert.equal(m.conversation, "room:lobby");
      assert.equal(m.sender, "alice");
      assert.equal(m.contentType, "text/plain");
    }
    const seqs = new Set(texts.map((t) => String(received.get(t).seq)));
    merged = frames.find((f) => (f.messages?.messages || []).filter((x) => seqs.has(x.seq)).length > 1);
    await new Promise((r) => setTimeout(r, 100)); // a quiet moment: the next burst starts whole
  }
  assert.ok(merged, "no burst of five came merged in ten tries");
  // As it came: the shared fields once, in the batch, not in the messages.
  assert.equal(merged.messages.shared?.conversation, "room:lobby");
  assert.equal(merged.messages.shared?.sender, "alice");
  assert.equal(merged.messages.shared?.contentType, "text/plain");
  assert.ok(merged.messages.messages.every((x) => !x.conversation && !x.sender), "messages of a compact batch carry no conversation or sender");
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
  // A position from another history: after reset the lower seqs are new.
  s.reset("c", 2);
  assert.equal(s.latest("c"), 2);
  assert.equal(s.add("c", 2), false);
  assert.equal(s.add("c", 3), true);
  assert.deepEqual(s.conversations().sort(), ["c", "d"]);
  s.forget("d");
  assert.equal(s.known("d"), false);
  assert.equal(s.add("d", 5), true);
  assert.match(newId(), /^[0-9a-f]{32}$/);
});

// events collects a client's events of one kind, to wait for with until.
function events(client, kind) {
  const got = [];
  client.on(kind, (v) => got.push(v));
  return got;
}

test("ack answers the read position; other devices and the other party get ReadUpdates; the conversation list counts unread", async () => {
  const alice = track(await connect("alice"));
  const alice2 = track(await connect("alice", { url: env.wsOther }));
  const bob = track(await connect("bob", { url: env.wsOther }));
  const mine = events(alice2, "read");
  const receipts = events(bob, "read");
  const conv = directConversation("alice", "bob");
  const r1 = await bob.send({ user: "alice", text: unique("read me") });
  const r2 = await bob.send({ user: "alice", text: unique("@alice read me too"), mentions: ["alice"] });
  assert.equal(r2.conversation, conv);

  let s = (await alice.conversations()).find((c) => c.conversation === conv);
  assert.equal(s.latestSeq, r2.seq);
  assert.ok(s.readSeq < r1.seq, `readSeq ${s.readSeq} before the new messages at ${r1.seq}`);
  assert.equal(s.unread, s.latestSeq - s.readSeq);
  assert.ok(s.unreadMentions >= 1, `unreadMentions ${s.unreadMentions}`);

  const read = await alice.ack(conv, r1.seq);
  assert.deepEqual(read, { conversation: conv, user: "alice", seq: r1.seq });
  // Her other device is told, and bob gets a read receipt.
  await until(() => mine.some((r) => r.conversation === conv && r.user === "alice" && r.seq === r1.seq), "alice's other device to get her position");
  await until(() => receipts.some((r) => r.conversation === conv && r.user === "alice" && r.seq === r1.seq), "bob's read receipt");
  // A position only grows: acking less answers the position as it is.
  assert.equal((await alice.ack(conv, 1)).seq, r1.seq);
  // Past the latest seq counts as the latest.
  assert.equal((await alice.ack(conv, r2.seq + 1000)).seq, r2.seq);

  s = (await alice2.conversations()).find((c) => c.conversation === conv);
  assert.deepEqual({ readSeq: s.readSeq, unread: s.unread, unreadMentions: s.unreadMentions }, { readSeq: r2.seq, unread: 0, unreadMentions: 0 });
  // The LoginResult carries it too.
  const tok = await token("alice");
  const third = track(new Client({ url: env.ws, token: () => tok }));
  const login = await third.connect();
  assert.equal(login.conversations.find((c) => c.conversation === conv).readSeq, r2.seq);
  // Your own messages are never unread.
  const own = await alice.send({ user: "bob", text: unique("mine") });
  s = (await alice.conversations()).find((c) => c.conversation === conv);
  assert.equal(s.readSeq, own.seq);
  assert.equal(s.unread, 0);

  await assert.rejects(alice.ack(directConversation("bob", "carol"), 1), (e) => e instanceof LaneError && e.code === "NOT_MEMBER");
});

test("typing reaches the others once per interval, not yourself", async () => {
  const raw = [];
  class Recording extends globalThis.WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (ev) => raw.push(JSON.parse(ev.data)));
    }
  }
  const alice = track(await connect("alice", { WebSocket: Recording }));
  const bob = track(await connect("bob", { url: env.wsOther }));
  const bobTyping = events(bob, "typing");
  const aliceTyping = events(alice, "typing");
  const conv = directConversation("alice", "bob");
  assert.equal(alice.typing(conv), true);
  assert.equal(alice.typing(conv), false, "a second typing within 3 s was sent");
  await until(() => bobTyping.some((t) => t.conversation === conv && t.user === "alice"), "bob to see alice typing");
  // After a message, typing is news again.
  await alice.send({ user: "bob", text: unique("typed") });
  assert.equal(alice.typing(conv), true);

  // In a room every joined connection gets it, the typist's too: the SDK drops her own.
  await alice.join("lobby");
  await bob.join("lobby");
  assert.equal(alice.typing("room:lobby"), true);
  await until(() => bobTyping.some((t) => t.conversation === "room:lobby" && t.user === "alice"), "bob to see alice typing in the lobby");
  await until(() => raw.some((f) => f.typing?.conversation === "room:lobby" && f.typing?.user === "alice"), "the server to send alice her own typing");
  assert.deepEqual(aliceTyping.filter((t) => t.user === "alice"), []);
  assert.equal(bob.typing("room:lobby"), true);
  await until(() => aliceTyping.some((t) => t.conversation === "room:lobby" && t.user === "bob"), "alice to see bob typing in the lobby");
});

test("edit and recall reach the others as messages naming the seq they change; mentions are kept", async () => {
  const alice = track(await connect("alice"));
  const bob = track(await connect("bob", { url: env.wsOther }));
  const got = events(bob, "message");
  const first = unique("first");
  const sent = await alice.send({ user: "bob", text: first });
  await until(() => got.some((m) => m.seq === sent.seq && m.conversation === sent.conversation), "the original");
  const orig = got.find((m) => m.seq === sent.seq && m.conversation === sent.conversation);
  assert.deepEqual([orig.edits, orig.recalls, orig.clientMsgId], [0, 0, sent.clientMsgId]);

  // A SendResult names the original (its conversation and clientMsgId).
  const edited = unique("first, edited");
  const e = await alice.edit(sent, { text: edited });
  await until(() => got.some((m) => m.seq === e.seq), "the edit");
  const em = got.find((m) => m.seq === e.seq);
  assert.deepEqual([em.edits, em.recalls, em.text, em.sender], [sent.seq, 0, edited, "alice"]);
  // bob may not edit alice's message.
  await assert.rejects(bob.edit(orig, { text: "not mine" }), (err) => err instanceof LaneError && err.code === "UNKNOWN_MESSAGE");
  // What names no room or user is refused before anything is sent.
  await assert.rejects(alice.edit({ conversation: "broadcast", clientMsgId: sent.clientMsgId }, { text: "x" }), (err) => err.code === "INVALID");
  await assert.rejects(alice.recall({ user: "bob", clientMsgId: "" }), (err) => err.code === "INVALID");
  // An edit is no original: it cannot be edited.
  await assert.rejects(alice.edit({ user: "bob", clientMsgId: e.clientMsgId }, { text: "x" }), (err) => err.code === "UNKNOWN_MESSAGE");

  // A received Message names it too (its conversation: the peer is bob).
  const mine = await alice.history(sent.conversation, sent.seq + 1, 1);
  const r = await alice.recall(mine[0]);
  await until(() => got.some((m) => m.seq === r.seq), "the recall");
  const rm = got.find((m) => m.seq === r.seq);
  assert.deepEqual([rm.recalls, rm.edits, rm.body.length], [sent.seq, 0, 0]);
  // Sync keeps them in order.
  const page = await bob.history(sent.conversation, r.seq + 1, 3);
  assert.deepEqual(page.map((m) => [m.seq, m.edits, m.recalls]), [[sent.seq, 0, 0], [e.seq, sent.seq, 0], [r.seq, 0, sent.seq]]);

  // In a room, by room and clientMsgId; mentions drop repeats and yourself, sorted.
  await bob.join("lobby");
  const hi = await alice.send({ room: "lobby", text: unique("@bob @carol hi"), mentions: ["carol", "bob", "alice", "bob"] });
  await until(() => got.some((m) => m.seq === hi.seq && m.conversation === "room:lobby"), "the room message");
  assert.deepEqual(got.find((m) => m.seq === hi.seq && m.conversation === "room:lobby").mentions, ["bob", "carol"]);
  const re = await alice.edit({ room: "lobby", clientMsgId: hi.clientMsgId }, { text: "hi all" });
  await until(() => got.some((m) => m.seq === re.seq && m.conversation === "room:lobby"), "the room edit");
  assert.equal(got.find((m) => m.seq === re.seq && m.conversation === "room:lobby").edits, hi.seq);
});

test("sync and history with currentState carry each message as it is now; without it as it was sent", async () => {
  const alice = track(await connect("alice"));
  const bob = track(await connect("bob", { url: env.wsOther }));
  const [one, two, three] = [unique("one"), unique("two"), unique("three")];
  const s1 = await alice.send({ user: "bob", text: one });
  const s2 = await alice.send({ user: "bob", text: two, mentions: ["bob"] });
  const s3 = await alice.send({ user: "bob", text: three });
  const conv = s1.conversation;
  const e1 = await alice.edit(s1, { text: one + " edited", contentType: "text/markdown" });
  const e2 = await alice.edit(s1, { text: one + " edited again" });
  const r = await alice.recall(s2);
  // A recall wins over every edit, before it or after.
  await alice.edit(s2, { text: two + " edited" });
  const e3 = await alice.edit(s2, { text: "after the recall" });

  // A page holding only the originals: their edits and recall lie after it.
  const page = await bob.sync(conv, s1.seq - 1, 3, { currentState: true });
  assert.deepEqual(
    page.messages.map((m) => [m.seq, m.text, m.contentType, m.editedSeq, m.recalledSeq, m.mentions, m.clientMsgId]),
    [
      [s1.seq, one + " edited again", "text/plain", e2.seq, 0, [], s1.clientMsgId],
      [s2.seq, "", "", 0, r.seq, [], s2.clientMsgId],
      [s3.seq, three, "text/plain", 0, 0, [], s3.clientMsgId],
    ],
  );
  assert.equal(page.messages[1].body.length, 0);
  assert.equal(page.hasMore, true);

  // Without the option: as they were sent, editedSeq and recalledSeq 0.
  const plain = await bob.sync(conv, s1.seq - 1, 3);
  assert.deepEqual(
    plain.messages.map((m) => [m.seq, m.text, m.editedSeq, m.recalledSeq, m.mentions]),
    [
      [s1.seq, one, 0, 0, []],
      [s2.seq, two, 0, 0, ["bob"]],
      [s3.seq, three, 0, 0, []],
    ],
  );

  // history takes it too; the edits and recall stay in the page as they were sent.
  const last = e3.seq;
  const all = await bob.history(conv, last + 1, last - s1.seq + 1, { currentState: true });
  assert.deepEqual(all.map((m) => m.seq), Array.from({ length: last - s1.seq + 1 }, (_, i) => s1.seq + i));
  const bySeq = new Map(all.map((m) => [m.seq, m]));
  assert.deepEqual([bySeq.get(s1.seq).editedSeq, bySeq.get(s1.seq).text], [e2.seq, one + " edited again"]);
  assert.deepEqual([bySeq.get(s2.seq).recalledSeq, bySeq.get(s2.seq).editedSeq], [r.seq, 0]);
  for (const [seq, edits, text, ctype] of [[e1.seq, s1.seq, one + " edited", "text/markdown"], [e2.seq, s1.seq, one + " edited again", "text/plain"]]) {
    const m = bySeq.get(seq);
    assert.deepEqual([m.edits, m.text, m.contentType, m.editedSeq, m.recalledSeq], [edits, text, ctype, 0, 0]);
  }
  assert.deepEqual([bySeq.get(r.seq).recalls, bySeq.get(r.seq).editedSeq, bySeq.get(r.seq).recalledSeq], [s2.seq, 0, 0]);
  const asSent = await bob.history(conv, last + 1, last - s1.seq + 1);
  assert.deepEqual(asSent.find((m) => m.seq === s1.seq).text, one);
  assert.ok(asSent.every((m) => m.editedSeq === 0 && m.recalledSeq === 0));

  // Live messages never carry them.
  const got = events(bob, "message");
  const e4 = await alice.edit(s3, { text: three + " live" });
  await until(() => got.some((m) => m.seq === e4.seq && m.conversation === conv), "the live edit");
  const live = got.find((m) => m.seq === e4.seq && m.conversation === conv);
  assert.deepEqual([live.edits, live.editedSeq, live.recalledSeq], [s3.seq, 0, 0]);
});

test("a reconnect whose login is refused for good closes the client", async () => {
  const good = await token("alice");
  let asked = 0;
  const c = track(new Client({ url: env.ws, token: () => (asked++ === 0 ? good : "not-a-token"), device: "node-test", minBackoffMs: 20, maxBackoffMs: 200 }));
  await c.connect();
  const closed = new Promise((resolve) => c.on("state", (s) => s.state === "closed" && resolve(s)));
  await stopComet();
  await startComet();
  const s = await closed;
  assert.match(s.reason, /^login refused: BAD_TOKEN/);
  assert.equal(asked, 3, "one token for the login, then two refused: no third try");
  await assert.rejects(c.join("lobby"), (e) => e.code === "CLOSED");
});
