/** Subprotocol spoken by the SDK. */
export declare const SUBPROTOCOL = "laneim.v1.json";
/** Error codes of the protocol, plus the SDK's own TIMEOUT and DISCONNECTED. */
export type ErrorCode = "BAD_FRAME" | "UNAUTHENTICATED" | "BAD_TOKEN" | "UNKNOWN_USER" | "UNKNOWN_ROOM" | "NOT_MEMBER" | "BLOCKED" | "TOO_LARGE" | "INVALID" | "UNAVAILABLE" | "ALREADY_LOGGED_IN" | "RATE_LIMITED" | "TOO_LATE" | "UNKNOWN_MESSAGE" | "CODE_UNSPECIFIED" | "TIMEOUT" | "DISCONNECTED" | "CLOSED";
/** LaneError is a refused or unanswered request. */
export declare class LaneError extends Error {
    readonly code: ErrorCode;
    readonly retryAfterMs: number;
    constructor(code: ErrorCode, text: string, retryAfterMs?: number);
}
/** One message of a conversation. */
export interface Message {
    id: string;
    conversation: string;
    seq: number;
    sender: string;
    body: Uint8Array;
    /** body decoded as UTF-8. */
    text: string;
    contentType: string;
    serverTimeUnixMs: number;
    clientMsgId: string;
    /** For an edit: the seq of the message it edits (its body replaces that one's); else 0. */
    edits: number;
    /** For a recall: the seq of the message it recalls (no body); else 0. */
    recalls: number;
    /** The users the message mentions, sorted (empty: none). */
    mentions: string[];
    /**
     * Set only by sync or history with `currentState`: the seq of the
     * latest edit, whose body and contentType this message carries instead
     * of its own; else 0.
     */
    editedSeq: number;
    /**
     * Set only by sync or history with `currentState`: the seq of the
     * recall of this message, which then has no body, contentType or
     * mentions; else 0.
     */
    recalledSeq: number;
}
/** Options of sync and history. */
export interface SyncOptions {
    /**
     * Ask for each message as it is now (docs/protocol.md, "Current
     * state"): edits applied (`editedSeq`), recalls marked (`recalledSeq`),
     * even when the edit or recall lies outside the page. The edits and
     * recalls themselves still come, as they were sent. Default false:
     * every message as it was sent.
     */
    currentState?: boolean;
}
/** Position of one conversation (LoginResult, ConversationsResult), with your read state. */
export interface ConversationState {
    conversation: string;
    latestSeq: number;
    /** Your read position: you have read up to this seq. */
    readSeq: number;
    /** latestSeq - readSeq: seqs (edits and recalls included) after your read position. */
    unread: number;
    /** Messages after your read position that mention you. */
    unreadMentions: number;
}
/** A read position: user has read conversation up to seq (docs/protocol.md, "Read state"). */
export interface ReadUpdate {
    conversation: string;
    user: string;
    seq: number;
}
/** user is typing in conversation: show it for 5 s unless another comes or user's message does. */
export interface TypingUpdate {
    conversation: string;
    user: string;
}
/** Where a message goes: a room or a user. */
export type Destination = {
    room: string;
    user?: undefined;
} | {
    user: string;
    room?: undefined;
};
/**
 * The message an edit or recall names: its clientMsgId and where it went,
 * as a room or user, or as its conversation (a Message or a SendResult
 * will do).
 */
export type Original = {
    clientMsgId: string;
} & ({
    room: string;
} | {
    user: string;
} | {
    conversation: string;
});
/** The content of a message: text (sent as text/plain) or bytes. */
export interface Content {
    text?: string;
    body?: Uint8Array;
    /** Default: text/plain for text, application/octet-stream for body. */
    contentType?: string;
    /** Users the message mentions (docs/protocol.md, "Mentions"). */
    mentions?: string[];
    /** Default: a new random id. A retry with the same id is sent once. */
    clientMsgId?: string;
}
export interface LoginResult {
    user: string;
    session: string;
    protocolVersion: number;
    serverTimeUnixMs: number;
    /** Every conversation of the user: the pages of Conversations are fetched. */
    conversations: ConversationState[];
}
export interface Joined {
    room: string;
    conversation: string;
    onlineCount: number;
    latestSeq: number;
    /** Users online in the room, when the server lists them (rooms within its presence limit). */
    onlineUsers?: string[];
}
export interface SendResult {
    clientMsgId: string;
    messageId: string;
    conversation: string;
    seq: number;
    serverTimeUnixMs: number;
}
export interface SyncResult {
    conversation: string;
    messages: Message[];
    hasMore: boolean;
}
export interface PresenceChange {
    room: string;
    user: string;
    online: boolean;
    onlineCount: number;
}
/** Connection states: idle (never connected), connecting, open (logged in), reconnecting (waiting to retry), closed (by close() or for good). */
export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";
export interface StateEvent {
    state: State;
    /** Reconnect attempt number (1 for the first retry) when reconnecting. */
    attempt?: number;
    /** Milliseconds until the next attempt when reconnecting. */
    delayMs?: number;
    /** Why the connection ended, when it did. */
    reason?: string;
}
/** Catch-up after a (re)login: how many messages Sync brought, per conversation. */
export interface CatchUpEvent {
    reconnect: boolean;
    messages: number;
    conversations: string[];
}
export interface Events {
    state: StateEvent;
    login: LoginResult;
    /** A message, once, in sequence order within its conversation; live says whether it came live or by Sync. */
    message: Message & {
        live: boolean;
    };
    presence: PresenceChange;
    joined: Joined;
    /** The server removed this connection from a room. */
    left: {
        room: string;
    };
    catchup: CatchUpEvent;
    /**
     * A read position moved: yours, read on another device (user is you),
     * or another user's, a read receipt (in a 1:1 conversation, or a room
     * when the server sends them). Apply it idempotently (keep the maximum).
     */
    read: ReadUpdate;
    /** Someone else is typing (your own TypingUpdates are dropped). */
    typing: TypingUpdate;
    /** An error the server sent on its own or one in the background (catch-up, rejoin, login). */
    error: LaneError;
}
/** The part of the WebSocket interface the SDK uses (the browser's, Node's global one, or `ws`). */
export interface WebSocketLike {
    readonly readyState: number;
    readonly protocol: string;
    onopen: ((ev: any) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: any) => void) | null;
    onmessage: ((ev: {
        data: any;
    }) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
}
export type WebSocketFactory = new (url: string, protocols: string | string[]) => WebSocketLike;
export interface ClientOptions {
    /** The comet's WebSocket URL, e.g. ws://127.0.0.1:8080/ws. */
    url: string;
    /** Returns a login token; called before every login, so it may refresh it. */
    token: () => string | Promise<string>;
    /** Device label sent with Login (default "web"). */
    device?: string;
    /** WebSocket constructor (default globalThis.WebSocket). */
    WebSocket?: WebSocketFactory;
    /** How long a request waits for its answer (default 10 s). */
    requestTimeoutMs?: number;
    /** Ping interval (default 20 s; the server closes connections silent for 60 s). */
    pingIntervalMs?: number;
    /** First reconnect delay (default 500 ms); doubles up to maxBackoffMs, with jitter. */
    minBackoffMs?: number;
    /** Longest reconnect delay (default 15 s). */
    maxBackoffMs?: number;
    /** Messages per Sync page during catch-up (0: the server's default). */
    syncPageSize?: number;
    /** typing() sends at most one Typing per conversation within this (default 3 s, as the protocol asks). */
    typingIntervalMs?: number;
    /** Called with lines worth logging (default: none). */
    log?: (line: string) => void;
}
type Frame = Record<string, any>;
/** base64 of bytes (protojson's bytes). */
export declare function toBase64(b: Uint8Array): string;
/** bytes of base64 (standard or URL alphabet). */
export declare function fromBase64(s: string): Uint8Array;
/** A random id (for client_msg_id) that needs no secure context: crypto.getRandomValues, else Math.random. */
export declare function newId(): string;
/**
 * SeqTracker remembers which (conversation, seq) were handed out, to drop
 * repeats. Per conversation it keeps a floor (everything up to it counts as
 * had), the highest seq, and the seqs seen above the floor; when those grow
 * past the window the floor moves up.
 */
export declare class SeqTracker {
    private readonly window;
    private convs;
    constructor(window?: number);
    private get;
    /** has tells whether seq of conversation was recorded (or lies at or below its floor). */
    has(conversation: string, seq: number): boolean;
    /** add records seq; it returns false when it was a repeat. */
    add(conversation: string, seq: number): boolean;
    /** latest is the highest seq recorded for conversation (0: none). */
    latest(conversation: string): number;
    /** known tells whether the conversation has a position. */
    known(conversation: string): boolean;
    /**
     * reset forgets what conversation had and counts everything up to seq as
     * had: for a position past the server's latest seq, which belongs to
     * another history (a deployment reset or replaced meanwhile).
     */
    reset(conversation: string, seq: number): void;
    /** forget drops what conversation had. */
    forget(conversation: string): void;
    /** conversations lists the conversations with a position. */
    conversations(): string[];
    /** mark counts everything up to seq of conversation as had. */
    mark(conversation: string, seq: number): void;
    private raise;
}
/** Client is one logged-in connection that survives disconnects. */
export declare class Client {
    private readonly opts;
    private ws;
    private nextId;
    private pending;
    private listeners;
    private rooms;
    private seen;
    private holding;
    private drop;
    private pingTimer;
    private retryTimer;
    private attempt;
    private loggedInOnce;
    private badTokens;
    private openWaiters;
    private firstLogin;
    private _state;
    private _user;
    private typingSent;
    constructor(options: ClientOptions);
    /** The connection's state. */
    get state(): State;
    /** The logged-in user ("" before the first login). */
    get user(): string;
    /** Rooms joined (and rejoined after each reconnect). */
    get joinedRooms(): string[];
    /** on subscribes to an event; it returns the function that unsubscribes. */
    on<K extends keyof Events>(event: K, fn: (v: Events[K]) => void): () => void;
    private emit;
    private setState;
    /**
     * connect opens the connection and logs in. It resolves with the first
     * LoginResult; after that the client reconnects on its own until close().
     * It rejects if the first login is refused (BAD_TOKEN, UNKNOWN_USER).
     * A later login refused UNKNOWN_USER (the account was disabled or
     * deleted), or BAD_TOKEN twice in a row, closes the client for good:
     * "state" reports closed with the refusal as its reason.
     */
    connect(): Promise<LoginResult>;
    /** close ends the connection for good; pending requests fail with CLOSED. */
    close(): void;
    /** stop ends the connection for good, reason told to "state" listeners. */
    private stop;
    private dial;
    private scheduleReconnect;
    private login;
    /**
     * catchUp syncs a conversation from after, page by page, emits what is
     * new in order, then the live messages that waited.
     */
    private catchUp;
    private deliver;
    private onFrame;
    private onLive;
    private startPing;
    private stopPing;
    private failPending;
    private rawRequest;
    /**
     * request sends one ClientFrame body (e.g. `{join: {room}}`) on the
     * logged-in connection and resolves with the answering ServerFrame, or
     * rejects with a LaneError: the server's, TIMEOUT, DISCONNECTED, or
     * CLOSED once the client is closed.
     */
    request(body: Frame, timeoutMs?: number): Promise<Frame>;
    /** waitOpen resolves once the client is logged in (at once if it is), or rejects after timeoutMs. */
    waitOpen(timeoutMs?: number): Promise<void>;
    /** ping measures the round trip in milliseconds. */
    ping(): Promise<number>;
    /**
     * join subscribes to a room; the client rejoins it after every reconnect
     * (and catches up what it missed meanwhile). Messages before the join
     * are not replayed: ask history() for them.
     */
    join(room: string): Promise<Joined>;
    /** leave unsubscribes from a room. */
    leave(room: string): Promise<void>;
    /**
     * send sends a message to a room or a user. It retries with the same
     * client_msg_id (so the message is sent once) after UNAVAILABLE, a
     * timeout or a disconnect, and waits out RATE_LIMITED, for up to
     * deadlineMs (default 30 s). mentions names the users it mentions.
     */
    send(msg: Destination & Content, deadlineMs?: number): Promise<SendResult>;
    /**
     * edit replaces the body of your own message `original` (its
     * clientMsgId and its room, user or conversation: a Message or a
     * SendResult will do) for everyone: it sends a new message whose
     * `edits` names the original's seq. Refused TOO_LATE after the edit
     * window (24 h by default), UNKNOWN_MESSAGE if original is not yours.
     * It retries as send does.
     */
    edit(original: Original, content: Content, deadlineMs?: number): Promise<SendResult>;
    /**
     * recall deletes your own message `original` for everyone (as edit
     * names it): a new message whose `recalls` names its seq. Refused
     * TOO_LATE after the recall window (2 minutes by default).
     */
    recall(original: Original, opts?: {
        clientMsgId?: string;
    }, deadlineMs?: number): Promise<SendResult>;
    private destination;
    private sendFrame;
    /**
     * sync asks for one page of a conversation's messages after afterSeq (no
     * events, no repeat dropping); with `{ currentState: true }` each message
     * comes as it is now (see SyncOptions).
     */
    sync(conversation: string, afterSeq: number, limit?: number, opts?: SyncOptions): Promise<SyncResult>;
    /**
     * syncRetrying is sync, asked again on the same connection while the
     * server answers UNAVAILABLE: after its retry_after_ms when it gives
     * one (a comet with too many catch-up reads waiting; up to 300 times),
     * else after 0.5 s, 1 s, … (a store or directory down; up to 5 tries).
     */
    private syncRetrying;
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
    history(conversation: string, before: number, limit?: number, opts?: SyncOptions): Promise<Message[]>;
    /** conversations lists every conversation of the user, paging Conversations from the start. */
    conversations(): Promise<ConversationState[]>;
    private conversationsFrom;
    /**
     * ack records that you have read conversation up to seq (your read
     * position, kept by the server for all your devices; it only grows).
     * It resolves with your position now, which may be higher than seq.
     * Your other devices, and in a 1:1 conversation the other party, get
     * it as a `read` event (docs/protocol.md, "Read state").
     */
    ack(conversation: string, seq: number): Promise<ReadUpdate>;
    /**
     * typing tells the conversation's other members that you are typing.
     * Call it on every keystroke: it sends a Typing at most once per
     * typingIntervalMs (3 s) per conversation, and again at once after you
     * sent a message there. It returns whether it sent one. Typing is not
     * answered (a refusal comes as an `error` event) and not stored.
     */
    typing(conversation: string): boolean;
}
/** The other party of a 1:1 conversation id ("dm:a:b") for user me, or "" if it is none. */
export declare function peerOf(conversation: string, me: string): string;
/** The conversation id of a 1:1 conversation between a and b. */
export declare function directConversation(a: string, b: string): string;
export {};
