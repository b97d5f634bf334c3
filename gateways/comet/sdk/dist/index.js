// @laneim/client: a client of the laneIM protocol (docs/protocol.md) in its
// JSON encoding (subprotocol laneim.v1.json), for browsers and Node.
//
// A Client keeps one WebSocket to a comet: it connects with backoff and
// jitter, logs in with a token it asks for each time, pings, rejoins the
// rooms it joined and catches up with Sync after every reconnect, and hands
// each message of a conversation once, in sequence order.
/** Subprotocol spoken by the SDK. */
export const SUBPROTOCOL = "laneim.v1.json";
/** LaneError is a refused or unanswered request. */
export class LaneError extends Error {
    constructor(code, text, retryAfterMs = 0) {
        super(text ? `${code}: ${text}` : code);
        this.name = "LaneError";
        this.code = code;
        this.retryAfterMs = retryAfterMs;
    }
}
/** The most rooms a Login may join (docs/protocol.md, Login.join). */
const MAX_LOGIN_JOINS = 100;
const enc = new TextEncoder();
const dec = new TextDecoder();
/** base64 of bytes (protojson's bytes). */
export function toBase64(b) {
    let s = "";
    for (let i = 0; i < b.length; i += 0x8000) {
        s += String.fromCharCode(...b.subarray(i, i + 0x8000));
    }
    return btoa(s);
}
/** bytes of base64 (standard or URL alphabet). */
export function fromBase64(s) {
    const bin = atob((s || "").replace(/-/g, "+").replace(/_/g, "/"));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++)
        out[i] = bin.charCodeAt(i);
    return out;
}
/** A random id (for client_msg_id) that needs no secure context: crypto.getRandomValues, else Math.random. */
export function newId() {
    const b = new Uint8Array(16);
    const c = globalThis.crypto;
    if (c && typeof c.getRandomValues === "function") {
        c.getRandomValues(b);
    }
    else {
        for (let i = 0; i < b.length; i++)
            b[i] = Math.floor(Math.random() * 256);
    }
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
const num = (v) => (v === undefined || v === null || v === "" ? 0 : Number(v));
/**
 * expand gives a message of a compact batch the conversation, sender and
 * content type it lacks from the batch's shared fields (docs/protocol.md,
 * Receive: compact batches).
 */
function expand(m, shared) {
    if (!shared)
        return m;
    const out = { ...m };
    for (const k of ["conversation", "sender", "contentType"]) {
        if (!out[k] && shared[k])
            out[k] = shared[k];
    }
    return out;
}
function toMessage(m) {
    const body = fromBase64(m.body || "");
    return {
        id: m.id || "",
        conversation: m.conversation || "",
        seq: num(m.seq),
        sender: m.sender || "",
        body,
        text: dec.decode(body),
        contentType: m.contentType || "",
        serverTimeUnixMs: num(m.serverTimeUnixMs),
        clientMsgId: m.clientMsgId || "",
        edits: num(m.edits),
        recalls: num(m.recalls),
        mentions: Array.isArray(m.mentions) ? m.mentions : [],
        editedSeq: num(m.editedSeq),
        recalledSeq: num(m.recalledSeq),
    };
}
function toStates(list) {
    return (list || []).map((c) => ({
        conversation: c.conversation,
        latestSeq: num(c.latestSeq),
        readSeq: num(c.readSeq),
        unread: num(c.unread),
        unreadMentions: num(c.unreadMentions),
    }));
}
function toRead(r) {
    return { conversation: r?.conversation || "", user: r?.user || "", seq: num(r?.seq) };
}
/**
 * SeqTracker remembers which (conversation, seq) were handed out, to drop
 * repeats. Per conversation it keeps a floor (everything up to it counts as
 * had), the highest seq, and the seqs seen above the floor; when those grow
 * past the window the floor moves up.
 */
export class SeqTracker {
    constructor(window = 4096) {
        this.window = window;
        this.convs = new Map();
    }
    get(conversation) {
        let c = this.convs.get(conversation);
        if (!c)
            this.convs.set(conversation, (c = { floor: 0, max: 0, seen: new Set() }));
        return c;
    }
    /** has tells whether seq of conversation was recorded (or lies at or below its floor). */
    has(conversation, seq) {
        const c = this.convs.get(conversation);
        return !!c && (seq <= c.floor || c.seen.has(seq));
    }
    /** add records seq; it returns false when it was a repeat. */
    add(conversation, seq) {
        if (this.has(conversation, seq))
            return false;
        const c = this.get(conversation);
        c.seen.add(seq);
        if (seq > c.max)
            c.max = seq;
        if (c.seen.size > this.window)
            this.raise(c, c.max - this.window);
        return true;
    }
    /** latest is the highest seq recorded for conversation (0: none). */
    latest(conversation) {
        return this.convs.get(conversation)?.max ?? 0;
    }
    /** known tells whether the conversation has a position. */
    known(conversation) {
        return this.convs.has(conversation);
    }
    /**
     * reset forgets what conversation had and counts everything up to seq as
     * had: for a position past the server's latest seq, which belongs to
     * another history (a deployment reset or replaced meanwhile).
     */
    reset(conversation, seq) {
        this.convs.set(conversation, { floor: seq, max: seq, seen: new Set() });
    }
    /** forget drops what conversation had. */
    forget(conversation) {
        this.convs.delete(conversation);
    }
    /** conversations lists the conversations with a position. */
    conversations() {
        return [...this.convs.keys()];
    }
    /** mark counts everything up to seq of conversation as had. */
    mark(conversation, seq) {
        const c = this.get(conversation);
        this.raise(c, seq);
        if (seq > c.max)
            c.max = seq;
    }
    raise(c, floor) {
        if (floor <= c.floor)
            return;
        c.floor = floor;
        for (const s of c.seen)
            if (s <= floor)
                c.seen.delete(s);
    }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Client is one logged-in connection that survives disconnects. */
export class Client {
    constructor(options) {
        this.ws = null;
        this.nextId = 1;
        this.pending = new Map();
        this.listeners = new Map();
        this.rooms = new Set();
        this.seen = new SeqTracker();
        this.holding = new Map(); // live messages held while their conversation syncs
        this.drop = null; // ends the current socket and reconnects
        this.pingTimer = null;
        this.retryTimer = null;
        this.attempt = 0;
        this.loggedInOnce = false;
        this.badTokens = 0; // logins refused BAD_TOKEN in a row
        this.openWaiters = [];
        this.firstLogin = null;
        this._state = "idle";
        this._user = "";
        this.typingSent = new Map(); // conversation -> when typing() last sent
        this.opts = {
            device: "web",
            requestTimeoutMs: 10000,
            pingIntervalMs: 20000,
            minBackoffMs: 500,
            maxBackoffMs: 15000,
            syncPageSize: 0,
            typingIntervalMs: 3000,
            ...options,
        };
    }
    /** The connection's state. */
    get state() {
        return this._state;
    }
    /** The logged-in user ("" before the first login). */
    get user() {
        return this._user;
    }
    /** Rooms joined (and rejoined after each reconnect). */
    get joinedRooms() {
        return [...this.rooms];
    }
    /** on subscribes to an event; it returns the function that unsubscribes. */
    on(event, fn) {
        let set = this.listeners.get(event);
        if (!set)
            this.listeners.set(event, (set = new Set()));
        set.add(fn);
        return () => set.delete(fn);
    }
    emit(event, v) {
        for (const fn of this.listeners.get(event) || []) {
            try {
                fn(v);
            }
            catch (e) {
                this.opts.log?.(`listener of ${event} threw: ${e}`);
            }
        }
    }
    setState(s) {
        this._state = s.state;
        this.emit("state", s);
    }
    /**
     * connect opens the connection and logs in. It resolves with the first
     * LoginResult; after that the client reconnects on its own until close().
     * It rejects if the first login is refused (BAD_TOKEN, UNKNOWN_USER).
     * A later login refused UNKNOWN_USER (the account was disabled or
     * deleted), or BAD_TOKEN twice in a row, closes the client for good:
     * "state" reports closed with the refusal as its reason.
     */
    connect() {
        if (this._state !== "idle" && this._state !== "closed") {
            return Promise.reject(new LaneError("INVALID", "already connecting or connected"));
        }
        return new Promise((resolve, reject) => {
            this.firstLogin = { resolve, reject };
            this.dial();
        });
    }
    /** close ends the connection for good; pending requests fail with CLOSED. */
    close() {
        this.stop("closed by the client");
    }
    /** stop ends the connection for good, reason told to "state" listeners. */
    stop(reason) {
        this.setState({ state: "closed", reason });
        if (this.retryTimer)
            clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.stopPing();
        const ws = this.ws;
        this.ws = null;
        if (ws) {
            ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
            try {
                ws.close(1000, "bye");
            }
            catch {
                // already closed
            }
        }
        this.failPending(new LaneError("CLOSED", "client closed"));
        this.firstLogin?.reject(new LaneError("CLOSED", "client closed"));
        this.firstLogin = null;
    }
    dial() {
        const Ctor = this.opts.WebSocket || globalThis.WebSocket;
        if (!Ctor)
            throw new Error("@laneim/client: no WebSocket: pass options.WebSocket (Node < 22: run with --experimental-websocket or use the ws package)");
        this.setState({ state: "connecting", attempt: this.attempt });
        let ws;
        try {
            ws = new Ctor(this.opts.url, SUBPROTOCOL);
        }
        catch (e) {
            this.scheduleReconnect(`dial: ${e}`);
            return;
        }
        this.ws = ws;
        // ended runs once per socket: on close, on error (some WebSockets, like
        // Node 20's, report a failed connection only by an error event), or
        // when opening takes too long.
        const ended = (code, reason) => {
            clearTimeout(openTimer);
            if (this.ws !== ws)
                return;
            this.ws = null;
            ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
            try {
                ws.close();
            }
            catch {
                // closed already
            }
            this.stopPing();
            this.failPending(new LaneError("DISCONNECTED", `connection closed: ${code} ${reason}`.trim()));
            this.scheduleReconnect(`${code} ${reason}`.trim());
        };
        const openTimer = setTimeout(() => ended(1006, "connect timeout"), this.opts.requestTimeoutMs);
        this.drop = (reason) => ended(4000, reason);
        ws.onopen = () => {
            clearTimeout(openTimer);
            void this.login(ws);
        };
        ws.onmessage = (ev) => {
            if (typeof ev.data !== "string")
                return; // we only speak JSON
            let f;
            try {
                f = JSON.parse(ev.data);
            }
            catch {
                this.opts.log?.("undecodable frame");
                return;
            }
            this.onFrame(f);
        };
        ws.onerror = () => ended(1006, "connection failed");
        ws.onclose = (ev) => ended(ev.code, ev.reason || "");
    }
    scheduleReconnect(reason) {
        if (this._state === "closed")
            return;
        this.attempt++;
        const cap = Math.min(this.opts.maxBackoffMs, this.opts.minBackoffMs * 2 ** Math.min(this.attempt - 1, 16));
        const delayMs = Math.round(cap / 2 + Math.random() * (cap / 2)); // "equal jitter"
        this.opts.log?.(`reconnecting in ${delayMs} ms (${reason})`);
        this.setState({ state: "reconnecting", attempt: this.attempt, delayMs, reason });
        this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.dial();
        }, delayMs);
    }
    async login(ws) {
        let res;
        try {
            const token = await this.opts.token();
            // The rooms joined so far are joined again in the login itself (at
            // most 100: the others are joined once logged in).
            const join = [...this.rooms].slice(0, MAX_LOGIN_JOINS);
            // compactBatches: a busy room's batches carry the fields their
            // messages share once (docs/protocol.md, Receive); onFrame expands them.
            res = await this.rawRequest({ login: { token, device: this.opts.device, compactBatches: true, ...(join.length > 0 ? { join } : {}) } }, ws);
        }
        catch (e) {
            const err = e instanceof LaneError ? e : new LaneError("CODE_UNSPECIFIED", String(e));
            this.emit("error", err);
            // A login that would be refused the same way again ends the client:
            // the first one refused BAD_TOKEN or UNKNOWN_USER, and later
            // UNKNOWN_USER (the account was disabled or deleted) or BAD_TOKEN
            // twice in a row (token() was asked again and gave no better one).
            this.badTokens = err.code === "BAD_TOKEN" ? this.badTokens + 1 : 0;
            if (err.code === "UNKNOWN_USER" || (err.code === "BAD_TOKEN" && (!this.loggedInOnce || this.badTokens >= 2))) {
                const first = this.firstLogin;
                this.firstLogin = null;
                this.stop(`login refused: ${err.code}: ${err.message}`);
                first?.reject(err);
                return;
            }
            if (this.ws === ws)
                this.drop?.("login failed");
            return;
        }
        const lr = res.loginResult || {};
        const reconnect = this.loggedInOnce;
        let conversations = toStates(lr.conversations);
        this._user = lr.user || "";
        this.attempt = 0;
        this.badTokens = 0;
        this.startPing(ws);
        // Until the catch-up is done, live messages of conversations to sync wait.
        let listed = true; // the whole conversation list is in conversations
        try {
            if (lr.moreConversations)
                conversations = conversations.concat(await this.conversationsFrom(lr.conversationsCursor || ""));
        }
        catch (e) {
            listed = false;
            this.emit("error", e);
        }
        if (listed) {
            // The list holds every 1:1 conversation the user had: one it lacks
            // is from another history (a deployment reset or replaced).
            const names = new Set(conversations.map((c) => c.conversation));
            for (const conv of this.seen.conversations())
                if (conv.startsWith("dm:") && !names.has(conv))
                    this.seen.forget(conv);
        }
        const toSync = [];
        for (const c of conversations) {
            if (c.latestSeq < this.seen.latest(c.conversation)) {
                // Seqs only grow in one history: the server's is the one that
                // counts, or its new messages would be dropped as repeats.
                this.seen.reset(c.conversation, c.latestSeq);
            }
            else if (!reconnect) {
                // A fresh client starts at the present: history is asked for with history().
                if (!this.seen.known(c.conversation))
                    this.seen.mark(c.conversation, c.latestSeq);
            }
            else if (c.latestSeq > this.seen.latest(c.conversation)) {
                toSync.push([c.conversation, this.seen.latest(c.conversation)]);
                if (!this.holding.has(c.conversation))
                    this.holding.set(c.conversation, []);
            }
        }
        const result = {
            user: this._user,
            session: lr.session || "",
            protocolVersion: num(lr.protocolVersion),
            serverTimeUnixMs: num(lr.serverTimeUnixMs),
            conversations,
        };
        this.loggedInOnce = true;
        this.setState({ state: "open" });
        for (const w of this.openWaiters.splice(0))
            w();
        this.emit("login", result);
        if (this.firstLogin) {
            this.firstLogin.resolve(result);
            this.firstLogin = null;
        }
        const answered = new Set();
        for (const j of Array.isArray(lr.joined) ? lr.joined : []) {
            answered.add(j.room);
            this.emit("joined", toJoined(j));
        }
        for (const r of Array.isArray(lr.joinRefused) ? lr.joinRefused : []) {
            answered.add(r.room);
            this.emit("error", new LaneError(r.error?.code || "CODE_UNSPECIFIED", `join ${r.room}: ${r.error?.text || ""}`));
        }
        for (const room of this.rooms) {
            if (answered.has(room))
                continue;
            this.request({ join: { room } })
                .then((f) => this.emit("joined", toJoined(f.joined)))
                .catch((e) => this.emit("error", e));
        }
        // At most 8 Syncs at a time (the server serves 32 pending requests per connection).
        let count = 0;
        const queue = toSync.slice();
        await Promise.all(Array.from({ length: Math.min(8, queue.length) }, async () => {
            for (let next = queue.shift(); next; next = queue.shift()) {
                const n = await this.catchUp(next[0], next[1]);
                count += n; // not count += await …: that would add to a stale count
            }
        }));
        this.emit("catchup", { reconnect, messages: count, conversations: toSync.map(([c]) => c) });
    }
    /**
     * catchUp syncs a conversation from after, page by page, emits what is
     * new in order, then the live messages that waited.
     */
    async catchUp(conversation, after) {
        if (!this.holding.has(conversation))
            this.holding.set(conversation, []);
        let count = 0;
        try {
            for (;;) {
                const page = await this.syncRetrying(conversation, after, this.opts.syncPageSize);
                for (const m of page.messages) {
                    if (this.deliver(m, false))
                        count++;
                    after = Math.max(after, m.seq);
                }
                if (!page.hasMore || page.messages.length === 0)
                    break;
            }
        }
        catch (e) {
            this.emit("error", e instanceof LaneError ? e : new LaneError("CODE_UNSPECIFIED", String(e)));
        }
        finally {
            const held = this.holding.get(conversation) || [];
            this.holding.delete(conversation);
            held.sort((a, b) => a.seq - b.seq);
            for (const m of held)
                if (this.deliver(m, true))
                    count++;
        }
        return count;
    }
    deliver(m, live) {
        if (!this.seen.add(m.conversation, m.seq))
            return false;
        this.emit("message", { ...m, live });
        return true;
    }
    onFrame(f) {
        const id = f.requestId ? String(f.requestId) : "";
        if (id) {
            const p = this.pending.get(id);
            if (!p)
                return; // an answer to a request settled already (timed out): dropped
            this.pending.delete(id);
            clearTimeout(p.timer);
            if (f.error)
                p.reject(new LaneError(f.error.code || "CODE_UNSPECIFIED", f.error.text || "", num(f.error.retryAfterMs)));
            else
                p.resolve(f);
            return;
        }
        if (f.messages) {
            const shared = f.messages.shared;
            for (const raw of f.messages.messages || [])
                this.onLive(toMessage(expand(raw, shared)));
        }
        else if (f.presence) {
            const p = f.presence;
            this.emit("presence", { room: p.room || "", user: p.user || "", online: !!p.online, onlineCount: num(p.onlineCount) });
        }
        else if (f.left) {
            this.rooms.delete(f.left.room);
            this.emit("left", { room: f.left.room || "" });
        }
        else if (f.readUpdate) {
            this.emit("read", toRead(f.readUpdate));
        }
        else if (f.typing) {
            const t = f.typing;
            if (t.user !== this._user)
                this.emit("typing", { conversation: t.conversation || "", user: t.user || "" });
        }
        else if (f.error) {
            this.emit("error", new LaneError(f.error.code || "CODE_UNSPECIFIED", f.error.text || "", num(f.error.retryAfterMs)));
        }
    }
    onLive(m) {
        const held = this.holding.get(m.conversation);
        if (held) {
            held.push(m);
            return;
        }
        const latest = this.seen.latest(m.conversation);
        if (this.seen.known(m.conversation) && m.seq > latest + 1) {
            // A gap: missed seqs are never sent live later, Sync them.
            this.holding.set(m.conversation, [m]);
            void this.catchUp(m.conversation, latest);
            return;
        }
        this.deliver(m, true);
    }
    startPing(ws) {
        this.stopPing();
        this.pingTimer = setInterval(() => {
            this.ping().catch((e) => {
                // No pong in time: the connection is dead even if the socket does not know.
                if (e.code === "TIMEOUT" && this.ws === ws)
                    this.drop?.("no pong");
            });
        }, this.opts.pingIntervalMs);
    }
    stopPing() {
        if (this.pingTimer)
            clearInterval(this.pingTimer);
        this.pingTimer = null;
    }
    failPending(err) {
        for (const [, p] of this.pending) {
            clearTimeout(p.timer);
            p.reject(err);
        }
        this.pending.clear();
    }
    rawRequest(body, ws = this.ws, timeoutMs = this.opts.requestTimeoutMs) {
        if (!ws || ws.readyState !== 1)
            return Promise.reject(new LaneError("DISCONNECTED", "not connected"));
        const requestId = String(this.nextId++);
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(requestId);
                reject(new LaneError("TIMEOUT", `no answer in ${timeoutMs} ms`));
            }, timeoutMs);
            this.pending.set(requestId, { resolve, reject, timer });
            try {
                ws.send(JSON.stringify({ requestId, ...body }));
            }
            catch (e) {
                this.pending.delete(requestId);
                clearTimeout(timer);
                reject(new LaneError("DISCONNECTED", String(e)));
            }
        });
    }
    /**
     * request sends one ClientFrame body (e.g. `{join: {room}}`) on the
     * logged-in connection and resolves with the answering ServerFrame, or
     * rejects with a LaneError: the server's, TIMEOUT, DISCONNECTED, or
     * CLOSED once the client is closed.
     */
    request(body, timeoutMs = this.opts.requestTimeoutMs) {
        if (this._state === "closed")
            return Promise.reject(new LaneError("CLOSED", "client closed"));
        if (this._state !== "open")
            return Promise.reject(new LaneError("DISCONNECTED", "not logged in"));
        return this.rawRequest(body, this.ws, timeoutMs);
    }
    /** waitOpen resolves once the client is logged in (at once if it is), or rejects after timeoutMs. */
    waitOpen(timeoutMs = this.opts.requestTimeoutMs) {
        if (this._state === "open")
            return Promise.resolve();
        if (this._state === "closed")
            return Promise.reject(new LaneError("CLOSED", "client closed"));
        return new Promise((resolve, reject) => {
            const done = () => {
                clearTimeout(timer);
                resolve();
            };
            const timer = setTimeout(() => {
                this.openWaiters = this.openWaiters.filter((w) => w !== done);
                reject(new LaneError("DISCONNECTED", `not connected within ${timeoutMs} ms`));
            }, timeoutMs);
            this.openWaiters.push(done);
        });
    }
    /** ping measures the round trip in milliseconds. */
    async ping() {
        const t = Date.now();
        await this.request({ ping: { clientTimeUnixMs: String(t) } });
        return Date.now() - t;
    }
    /**
     * join subscribes to a room; the client rejoins it after every reconnect
     * (and catches up what it missed meanwhile). Messages before the join
     * are not replayed: ask history() for them.
     */
    async join(room) {
        const f = await this.request({ join: { room } });
        const j = toJoined(f.joined);
        // A room joined (not rejoined after a reconnect) starts at its
        // present: what came before is for history(), not a gap to sync.
        if (j.latestSeq < this.seen.latest(j.conversation))
            this.seen.reset(j.conversation, j.latestSeq);
        else if (!this.rooms.has(room))
            this.seen.mark(j.conversation, j.latestSeq);
        this.rooms.add(room);
        this.emit("joined", j);
        return j;
    }
    /** leave unsubscribes from a room. */
    async leave(room) {
        this.rooms.delete(room);
        await this.request({ leave: { room } });
    }
    /**
     * send sends a message to a room or a user. It retries with the same
     * client_msg_id (so the message is sent once) after UNAVAILABLE, a
     * timeout or a disconnect, and waits out RATE_LIMITED, for up to
     * deadlineMs (default 30 s). mentions names the users it mentions.
     */
    send(msg, deadlineMs = 30000) {
        return this.sendFrame(msg, msg, {}, deadlineMs);
    }
    /**
     * edit replaces the body of your own message `original` (its
     * clientMsgId and its room, user or conversation: a Message or a
     * SendResult will do) for everyone: it sends a new message whose
     * `edits` names the original's seq. Refused TOO_LATE after the edit
     * window (24 h by default), UNKNOWN_MESSAGE if original is not yours.
     * It retries as send does.
     */
    async edit(original, content, deadlineMs = 30000) {
        if (!original.clientMsgId)
            throw new LaneError("INVALID", "edit needs the original's clientMsgId");
        return this.sendFrame(this.destination(original), content, { edits: original.clientMsgId }, deadlineMs);
    }
    /**
     * recall deletes your own message `original` for everyone (as edit
     * names it): a new message whose `recalls` names its seq. Refused
     * TOO_LATE after the recall window (2 minutes by default).
     */
    async recall(original, opts = {}, deadlineMs = 30000) {
        if (!original.clientMsgId)
            throw new LaneError("INVALID", "recall needs the original's clientMsgId");
        return this.sendFrame(this.destination(original), { clientMsgId: opts.clientMsgId, body: new Uint8Array(0), contentType: "" }, { recalls: original.clientMsgId }, deadlineMs);
    }
    destination(o) {
        if ("room" in o && o.room)
            return { room: o.room };
        if ("user" in o && o.user)
            return { user: o.user };
        const conv = "conversation" in o ? o.conversation : "";
        if (conv.startsWith("room:"))
            return { room: conv.slice(5) };
        const peer = peerOf(conv, this._user);
        if (peer)
            return { user: peer };
        throw new LaneError("INVALID", `no room or user to send to for ${JSON.stringify(conv)}`);
    }
    async sendFrame(to, content, extra, deadlineMs) {
        const clientMsgId = content.clientMsgId || newId();
        const body = content.body ?? enc.encode(content.text ?? "");
        const frame = { clientMsgId, ...extra };
        if (body.length)
            frame.body = toBase64(body);
        const contentType = content.contentType ?? (content.body ? "application/octet-stream" : "text/plain");
        if (contentType)
            frame.contentType = contentType;
        if (content.mentions?.length)
            frame.mentions = content.mentions;
        if (to.room)
            frame.room = to.room;
        else if (to.user)
            frame.user = to.user;
        else
            throw new LaneError("INVALID", "send needs a room or a user");
        const end = Date.now() + deadlineMs;
        for (let attempt = 1;; attempt++) {
            try {
                await this.waitOpen(Math.max(1, end - Date.now()));
                const f = await this.request({ send: frame }, Math.min(this.opts.requestTimeoutMs, Math.max(1, end - Date.now())));
                const r = f.sendResult || {};
                const res = { clientMsgId: r.clientMsgId || clientMsgId, messageId: r.messageId || "", conversation: r.conversation || "", seq: num(r.seq), serverTimeUnixMs: num(r.serverTimeUnixMs) };
                // Typing again after a message is news: let the next typing() through.
                this.typingSent.delete(res.conversation);
                return res;
            }
            catch (e) {
                const err = e;
                const retry = ["UNAVAILABLE", "TIMEOUT", "DISCONNECTED", "RATE_LIMITED"].includes(err.code);
                const wait = err.code === "RATE_LIMITED" ? err.retryAfterMs || 1000 : Math.min(2000, 200 * attempt);
                if (!retry || Date.now() + wait >= end)
                    throw err;
                await sleep(wait);
            }
        }
    }
    /**
     * sync asks for one page of a conversation's messages after afterSeq (no
     * events, no repeat dropping); with `{ currentState: true }` each message
     * comes as it is now (see SyncOptions).
     */
    async sync(conversation, afterSeq, limit = 0, opts = {}) {
        const req = { conversation, afterSeq: String(afterSeq), limit };
        if (opts.currentState)
            req.currentState = true;
        const f = await this.request({ sync: req });
        const r = f.syncResult || {};
        return { conversation: r.conversation || conversation, messages: (r.messages || []).map(toMessage), hasMore: !!r.hasMore };
    }
    /**
     * syncRetrying is sync, asked again on the same connection while the
     * server answers UNAVAILABLE: after its retry_after_ms when it gives
     * one (a comet with too many catch-up reads waiting; up to 300 times),
     * else after 0.5 s, 1 s, … (a store or directory down; up to 5 tries).
     */
    async syncRetrying(conversation, after, limit, opts = {}) {
        for (let attempt = 0;;) {
            try {
                return await this.sync(conversation, after, limit, opts);
            }
            catch (e) {
                const err = e;
                if (err.code === "UNAVAILABLE" && ++attempt < (err.retryAfterMs > 0 ? 300 : 5)) {
                    await sleep(err.retryAfterMs > 0 ? err.retryAfterMs : 500 * attempt);
                    continue;
                }
                throw err;
            }
        }
    }
    /**
     * history returns up to limit messages of a conversation with seqs below
     * `before` (latestSeq + 1 for the newest), oldest first. It emits no
     * events and records nothing. With `{ currentState: true }` each
     * message comes as it is now (see SyncOptions): edited and recalled
     * marks are right even when the edit or recall is not in the page.
     * Like the catch-up after a reconnect, it asks again while the server
     * answers UNAVAILABLE; and a page that ends short of `before` without
     * `hasMore` (the server's store lagging, docs/protocol.md) is asked
     * for again, up to three times half a second apart.
     */
    async history(conversation, before, limit = 50, opts = {}) {
        const out = [];
        let after = Math.max(0, before - 1 - limit);
        for (let lagging = 0; after < before - 1;) {
            const page = await this.syncRetrying(conversation, after, Math.min(500, before - 1 - after), opts);
            for (const m of page.messages)
                if (m.seq < before && m.seq > after)
                    out.push(m);
            if (page.messages.length > 0)
                after = Math.max(after, page.messages[page.messages.length - 1].seq);
            if (page.hasMore && page.messages.length > 0)
                continue;
            if (after >= before - 1 || ++lagging > 3)
                break;
            await sleep(500);
        }
        return out;
    }
    /** conversations lists every conversation of the user, paging Conversations from the start. */
    conversations() {
        return this.conversationsFrom("");
    }
    async conversationsFrom(cursor) {
        const out = [];
        for (let page = 0; page < 1000; page++) {
            const f = await this.rawRequest({ conversations: { cursor } });
            const r = f.conversationsResult || {};
            out.push(...toStates(r.conversations));
            if (!r.hasMore)
                break;
            cursor = r.nextCursor || "";
        }
        return out;
    }
    /**
     * ack records that you have read conversation up to seq (your read
     * position, kept by the server for all your devices; it only grows).
     * It resolves with your position now, which may be higher than seq.
     * Your other devices, and in a 1:1 conversation the other party, get
     * it as a `read` event (docs/protocol.md, "Read state").
     */
    async ack(conversation, seq) {
        const f = await this.request({ ack: { conversation, seq: String(seq) } });
        return toRead(f.readUpdate);
    }
    /**
     * typing tells the conversation's other members that you are typing.
     * Call it on every keystroke: it sends a Typing at most once per
     * typingIntervalMs (3 s) per conversation, and again at once after you
     * sent a message there. It returns whether it sent one. Typing is not
     * answered (a refusal comes as an `error` event) and not stored.
     */
    typing(conversation) {
        if (this._state !== "open" || !this.ws || this.ws.readyState !== 1)
            return false;
        const now = Date.now();
        if (now - (this.typingSent.get(conversation) ?? -Infinity) < this.opts.typingIntervalMs)
            return false;
        this.typingSent.set(conversation, now);
        try {
            this.ws.send(JSON.stringify({ typing: { conversation } }));
        }
        catch {
            return false;
        }
        return true;
    }
}
function toJoined(j) {
    j = j || {};
    const out = { room: j.room || "", conversation: j.conversation || "room:" + (j.room || ""), onlineCount: num(j.onlineCount), latestSeq: num(j.latestSeq) };
    if (Array.isArray(j.onlineUsers))
        out.onlineUsers = j.onlineUsers;
    return out;
}
/** The other party of a 1:1 conversation id ("dm:a:b") for user me, or "" if it is none. */
export function peerOf(conversation, me) {
    const p = conversation.split(":");
    if (p.length !== 3 || p[0] !== "dm")
        return "";
    return p[1] === me ? p[2] : p[1];
}
/** The conversation id of a 1:1 conversation between a and b. */
export function directConversation(a, b) {
    return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}
