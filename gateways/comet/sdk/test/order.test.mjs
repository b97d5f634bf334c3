// Order and repeats against a scripted server: the real cluster avoids
// sending repeats and gaps, so here a fake WebSocket sends them on purpose
// (a repeat, a gap while a live message arrives during the Sync, a
// reconnect whose catch-up overlaps live delivery).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../dist/index.js";

async function until(fn, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const msg = (conversation, seq) => ({ id: `${conversation}/${seq}`, conversation, seq: String(seq), sender: "bob", body: btoa(`m${seq}`), contentType: "text/plain" });

// A server script: a function (frame, socket) called for each client frame.
function fakeWebSocket(script, sockets) {
  return class FakeWS {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.readyState = 0;
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 1);
    }
    send(data) {
      const f = JSON.parse(data);
      setTimeout(() => script(f, this), 1);
    }
    push(frame) {
      if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(frame) });
    }
    close(code = 1000, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 1);
    }
  };
}

test("repeats are dropped, gaps synced in order, reconnects caught up", async () => {
  const sockets = [];
  let logins = 0;
  const syncs = [];
  const script = (f, ws) => {
    const answer = (body) => ws.push({ requestId: f.requestId, ...body });
    if (f.login) {
      logins++;
      const conversations = logins === 1 ? [{ conversation: "room:r", latestSeq: "2" }] : [{ conversation: "room:r", latestSeq: "9" }, { conversation: "dm:alice:bob", latestSeq: "1" }];
      answer({ loginResult: { ok: true, user: "alice", protocolVersion: 1, conversations } });
    } else if (f.join) {
      answer({ joined: { room: f.join.room, conversation: "room:" + f.join.room, latestSeq: logins === 1 ? "2" : "9", onlineCount: 1 } });
    } else if (f.sync) {
      const { conversation, afterSeq } = f.sync;
      const after = Number(afterSeq || 0);
      syncs.push(`${conversation}>${after}`);
      const latest = conversation === "room:r" ? (logins === 1 ? 6 : 9) : 1;
      // Pages of two; a live message arrives while the first is answered.
      if (conversation === "room:r" && logins === 1 && after === 3) ws.push({ messages: { messages: [msg("room:r", 7)] } });
      if (conversation === "room:r" && logins === 2 && after === 7) ws.push({ messages: { messages: [msg("room:r", 9)] } });
      const page = [];
      for (let s = after + 1; s <= latest && page.length < 2; s++) page.push(msg(conversation, s));
      answer({ syncResult: { conversation, messages: page, hasMore: page.length > 0 && page.at(-1).seq !== String(latest) } });
    } else if (f.ping) {
      answer({ pong: {} });
    }
  };
  const c = new Client({ url: "ws://fake/ws", token: () => "t", WebSocket: fakeWebSocket(script, sockets), minBackoffMs: 10, maxBackoffMs: 20 });
  const got = [];
  c.on("message", (m) => got.push(`${m.conversation}#${m.seq}${m.live ? "" : "s"}`));
  const catchups = [];
  c.on("catchup", (e) => catchups.push(e));
  try {
    await scenario(c, sockets, got, syncs, catchups, () => logins);
  } finally {
    c.close();
  }
});

async function scenario(c, sockets, got, syncs, catchups, logins) {
  await c.connect();
  await c.join("r");

  const ws = sockets[0];
  ws.push({ messages: { messages: [msg("room:r", 3)] } });
  ws.push({ messages: { messages: [msg("room:r", 3)] } }); // a repeat
  ws.push({ messages: { messages: [msg("room:r", 6)] } }); // 4 and 5 missed
  // The held live 6 repeats the synced one and is dropped.
  await until(() => got.length === 5, "seqs 3 to 7, got " + got);
  assert.deepEqual(got, ["room:r#3", "room:r#4s", "room:r#5s", "room:r#6s", "room:r#7"]);
  assert.deepEqual(syncs, ["room:r>3", "room:r>5"]);

  // The server goes away; meanwhile 8 and 9 and a new 1:1 conversation.
  ws.close(1001, "server shutting down");
  await until(() => catchups.length === 2, "the catch-up after the reconnect");
  assert.equal(sockets.length, 2);
  assert.equal(logins(), 2);
  assert.deepEqual(got.slice(5).sort(), ["dm:alice:bob#1s", "room:r#8s", "room:r#9s"]);
  assert.deepEqual(got.filter((g) => g.startsWith("room:r")).map((g) => Number(g.match(/#(\d+)/)[1])), [3, 4, 5, 6, 7, 8, 9]);
  assert.equal(catchups[1].reconnect, true);
  assert.equal(catchups[1].messages, 3);
}

test("a catch-up page refused UNAVAILABLE with retryAfterMs is asked again after that wait, on the same connection", async () => {
  const sockets = [];
  const shed = {};
  const script = (f, ws) => {
    const answer = (body) => ws.push({ requestId: f.requestId, ...body });
    if (f.login) {
      answer({ loginResult: { ok: true, user: "alice", protocolVersion: 1, conversations: [{ conversation: "room:r", latestSeq: "0" }] } });
    } else if (f.join) {
      answer({ joined: { room: f.join.room, conversation: "room:r", latestSeq: "0", onlineCount: 1 } });
    } else if (f.sync) {
      const after = Number(f.sync.afterSeq || 0);
      // A comet with too many catch-up reads waiting: each page is refused
      // six times first, more than the five tries of an UNAVAILABLE
      // without a wait.
      shed[after] = (shed[after] || 0) + 1;
      if (shed[after] <= 6) {
        answer({ error: { code: "UNAVAILABLE", text: "too many catch-up reads waiting", retryAfterMs: 20 } });
        return;
      }
      const page = [];
      for (let s = after + 1; s <= 3 && page.length < 2; s++) page.push(msg("room:r", s));
      answer({ syncResult: { conversation: "room:r", messages: page, hasMore: page.length > 0 && page.at(-1).seq !== "3" } });
    } else if (f.ping) {
      answer({ pong: {} });
    }
  };
  const c = new Client({ url: "ws://fake/ws", token: () => "t", WebSocket: fakeWebSocket(script, sockets), minBackoffMs: 10, maxBackoffMs: 20 });
  const got = [];
  c.on("message", (m) => got.push(`${m.conversation}#${m.seq}${m.live ? "" : "s"}`));
  try {
    await c.connect();
    await c.join("r");
    sockets[0].push({ messages: { messages: [msg("room:r", 4)] } }); // 1 to 3 missed
    await until(() => got.length === 4, "seqs 1 to 4, got " + got);
    assert.deepEqual(got, ["room:r#1s", "room:r#2s", "room:r#3s", "room:r#4"]);
    assert.equal(sockets.length, 1, "the catch-up stayed on its connection");
    assert.deepEqual(shed, { 0: 7, 2: 7 });
  } finally {
    c.close();
  }
});

test("history asks again while the server answers UNAVAILABLE, and while its store lags behind the seq asked for", async () => {
  const sockets = [];
  const asked = [];
  const script = (f, ws) => {
    const answer = (body) => ws.push({ requestId: f.requestId, ...body });
    if (f.login) {
      answer({ loginResult: { ok: true, user: "alice", protocolVersion: 1, conversations: [{ conversation: "dm:alice:bob", latestSeq: "4" }] } });
    } else if (f.sync) {
      const after = Number(f.sync.afterSeq || 0);
      asked.push(after);
      if (asked.length === 1) {
        answer({ error: { code: "UNAVAILABLE", text: "store down" } });
      } else if (asked.length === 2) {
        answer({ error: { code: "UNAVAILABLE", text: "too many catch-up reads waiting", retryAfterMs: 20 } });
      } else if (asked.length === 3) {
        // The store holds 1 and 2 only: the page ends short, without hasMore.
        answer({ syncResult: { conversation: "dm:alice:bob", messages: [msg("dm:alice:bob", 1), msg("dm:alice:bob", 2)], hasMore: false } });
      } else {
        const page = [];
        for (let s = after + 1; s <= 4; s++) page.push(msg("dm:alice:bob", s));
        answer({ syncResult: { conversation: "dm:alice:bob", messages: page, hasMore: false } });
      }
    } else if (f.ping) {
      answer({ pong: {} });
    }
  };
  const c = new Client({ url: "ws://fake/ws", token: () => "t", WebSocket: fakeWebSocket(script, sockets), minBackoffMs: 10, maxBackoffMs: 20 });
  try {
    await c.connect();
    const got = await c.history("dm:alice:bob", 5, 50);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4]);
    assert.deepEqual(asked, [0, 0, 0, 2], "asked again from the start while refused, then after the last seq received");
    assert.equal(sockets.length, 1, "on the same connection");
  } finally {
    c.close();
  }
});
