// Package client is a Go client of the laneIM client protocol (see
// docs/protocol.md), used by `laneim chat`, the load tools and end-to-end
// tests.
//
// It has two levels. A [Client] is what an application wants: it stays
// connected (pings, reconnects with backoff, logs in again joining its
// rooms in the same Login), catches up what it missed with Sync, drops repeats and reports
// messages, presence and its connection state as [Event]s. A [Conn] is one
// WebSocket connection and nothing more, for tools and tests that speak the
// protocol frame by frame.
//
// # Client
//
// A Client keeps, per conversation, the seq of the last message it
// reported (its position; see [Config.Positions] and [Client.Positions]).
// Every login joins its rooms again (in the Login itself, Login.join,
// for up to 100; Config.Rooms from the first one) and then, conversation by
// conversation, Syncs what follows each position up to the latest seq the
// server announced (LoginResult, Conversations pages, Joined), page after
// page while has_more; only then does it report live messages. A live
// message after a gap makes it Sync the gap first. A message at or below
// the position is a repeat and is dropped, so each (conversation, seq) is
// reported once, in seq order. It reconnects after any failure, waiting
// [Backoff] between attempts, and asks Config.Token for a token each time,
// until a login is refused for good: UNKNOWN_USER (the account was
// disabled or deleted), or BAD_TOKEN twice in a row. It then reports a
// last Disconnected event with Final set and stops.
// One goroutine runs it (plus, per connection, the Conn's reader and a
// pinger); Close stops them all.
//
// # Conn
//
// On a Conn, requests (Login, Join, Send, ...) wait for the frame that
// answers them, matched by request id; an Error frame becomes an *Error.
// Frames the server sends on its own (message batches, presence) arrive on
// Frames. One goroutine, owned by the Conn and stopped by Close, reads the
// connection. If nobody drains Frames, that reader blocks, the server's
// queue for this connection fills and the server closes it as a slow
// consumer: the honest behaviour of a client that does not keep up.
package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// Subprotocols of version 1.
const (
	SubprotocolProto = "laneim.v1.proto"
	SubprotocolJSON  = "laneim.v1.json"
)

// Options configures a connection.
type Options struct {
	// JSON selects the JSON subprotocol instead of protobuf.
	JSON bool
	// HTTPHeader is sent with the WebSocket handshake.
	HTTPHeader http.Header
	// HTTPClient makes the handshake (nil: http.DefaultClient); give one
	// whose transport trusts a private CA to dial wss:// URLs.
	HTTPClient *http.Client
	// FrameBuffer is the capacity of Frames (default 1024).
	FrameBuffer int
	// Peek, if set, sees every binary frame's bytes before they are
	// decoded, on the connection's reader goroutine; a frame for which it
	// returns true is consumed there and not decoded. Load tools use it to
	// read message batches without decoding them. data is valid only
	// during the call. After Conn.Login a batch may be compact: its
	// messages' conversation, sender or content_type then in
	// MessageBatch.shared (docs/protocol.md, Receive).
	Peek func(data []byte) bool
}

// Error is an Error frame from the server.
type Error struct {
	Code clientpb.Error_Code
	Text string
	// RetryAfter is how long to wait before sending again, with
	// RATE_LIMITED (the frame's retry_after_ms).
	RetryAfter time.Duration
}

// ErrorOf returns e, an Error frame or a JoinRefused's error, as an *Error.
func ErrorOf(e *clientpb.Error) *Error {
	return &Error{Code: e.GetCode(), Text: e.GetText(), RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond}
}

func (e *Error) Error() string { return fmt.Sprintf("laneim: %s: %s", e.Code, e.Text) }

// Conn is a client connection. Its methods are safe for concurrent use.
type Conn struct {
	peek   func([]byte) bool
	ws     *websocket.Conn
	json   bool
	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan *clientpb.ServerFrame

	frames chan *clientpb.ServerFrame
	done   chan struct{}
	err    error // set before done is closed
	wg     sync.WaitGroup
}

// Dial connects to a comet's WebSocket URL (ws://host:port/ws).
func Dial(ctx context.Context, url string, opts Options) (*Conn, error) {
	sub := SubprotocolProto
	if opts.JSON {
		sub = SubprotocolJSON
	}
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{sub}, HTTPHeader: opts.HTTPHeader, HTTPClient: opts.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	if ws.Subprotocol() != sub {
		ws.Close(websocket.StatusProtocolError, "subprotocol not accepted")
		return nil, fmt.Errorf("client: server did not accept subprotocol %s", sub)
	}
	ws.SetReadLimit(16 << 20)
	if opts.FrameBuffer <= 0 {
		opts.FrameBuffer = 1024
	}
	c := &Conn{
		ws: ws, json: opts.JSON, peek: opts.Peek,
		pending: map[uint64]chan *clientpb.ServerFrame{},
		frames:  make(chan *clientpb.ServerFrame, opts.FrameBuffer),
		done:    make(chan struct{}),
	}
	c.wg.Add(1)
	go c.read()
	return c, nil
}

// Frames delivers the frames the server sent on its own. It is closed
// when the connection ends. It must be read: when it is full (see
// Options.FrameBuffer) the connection's reader waits, and so do the
// answers Do waits for, until the server closes the connection as a
// slow consumer.
func (c *Conn) Frames() <-chan *clientpb.ServerFrame { return c.frames }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err tells why the connection ended (see websocket.CloseStatus); nil
// while it is open or after Close.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection and waits for its reader.
func (c *Conn) Close() error {
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	c.ws.CloseNow()
	// The reader may be blocked handing a frame to a full Frames: drain it.
	go func() {
		for range c.frames {
		}
	}()
	c.wg.Wait()
	return nil
}

func (c *Conn) read() {
	defer c.wg.Done()
	defer close(c.frames)
	var err error
	defer func() {
		c.err = err
		c.mu.Lock()
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
		c.mu.Unlock()
		close(c.done)
	}()
	var buf bytes.Buffer // reused: frames are decoded (copied) or peeked before the next read
	for {
		var typ websocket.MessageType
		var r io.Reader
		typ, r, err = c.ws.Reader(context.Background())
		if err != nil {
			return
		}
		buf.Reset()
		if _, err = buf.ReadFrom(r); err != nil {
			return
		}
		data := buf.Bytes()
		if c.peek != nil && typ == websocket.MessageBinary && c.peek(data) {
			continue
		}
		var f *clientpb.ServerFrame
		if f, err = Unmarshal(data, typ == websocket.MessageText); err != nil {
			err = fmt.Errorf("client: undecodable frame: %w", err)
			c.ws.Close(websocket.StatusUnsupportedData, "undecodable frame")
			return
		}
		if id := f.GetRequestId(); id != 0 {
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- f
				continue
			}
		}
		c.frames <- f
	}
}

// Do sends a frame with a fresh request id and waits for its answer. An
// Error answer is returned as *Error.
func (c *Conn) Do(ctx context.Context, f *clientpb.ClientFrame) (*clientpb.ServerFrame, error) {
	id := c.nextID.Add(1)
	f.RequestId = id
	ch := make(chan *clientpb.ServerFrame, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := c.Write(ctx, f); err != nil {
		return nil, err
	}
	select {
	case res, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("client: connection closed: %w", c.err)
		}
		if e := res.GetError(); e != nil {
			return res, ErrorOf(e)
		}
		return res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Marshal encodes f as a client sends it: protojson for the JSON
// subprotocol (json, a text message), protobuf otherwise (binary).
func Marshal(f *clientpb.ClientFrame, json bool) ([]byte, error) {
	if json {
		return protojson.Marshal(f)
	}
	return proto.Marshal(f)
}

// Unmarshal decodes a server frame sent as a text message (the JSON
// subprotocol) or a binary one (protobuf). A compact MessageBatch (see
// Conn.Login) comes back expanded: every message whole.
func Unmarshal(b []byte, text bool) (*clientpb.ServerFrame, error) {
	f := new(clientpb.ServerFrame)
	var err error
	if text {
		err = protojson.Unmarshal(b, f)
	} else {
		err = proto.Unmarshal(b, f)
	}
	if err == nil {
		f.GetMessages().Expand()
	}
	return f, err
}

// writeTimeout bounds a frame's write once it has started.
const writeTimeout = 10 * time.Second

// Write sends a frame as it is, without waiting for an answer. A ctx
// that ends before the write starts makes it return ctx's error; one
// that ends while the frame is being written does not interrupt it: the
// WebSocket library closes the connection when a write is cut short, and
// a request given up on (a timeout, a cancelled caller) must not take
// the connection with it. A write under way gets writeTimeout at most.
func (c *Conn) Write(ctx context.Context, f *clientpb.ClientFrame) error {
	b, err := Marshal(f, c.json)
	if err != nil {
		return fmt.Errorf("client: encode: %w", err)
	}
	typ := websocket.MessageBinary
	if c.json {
		typ = websocket.MessageText
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := c.ws.Write(wctx, typ, b); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}

// WriteRaw sends bytes as one WebSocket message, for tests of bad input.
func (c *Conn) WriteRaw(ctx context.Context, typ websocket.MessageType, b []byte) error {
	return c.ws.Write(ctx, typ, b)
}

// Login logs the connection in with a token and joins the rooms of join
// (at most 100) in the same round trip: the LoginResult answers each in
// its joined or join_refused list. It asks for compact batches
// (Login.compact_batches), fewer bytes for a busy room; Frames and
// Unmarshal give their messages whole.
func (c *Conn) Login(ctx context.Context, token, device string, join ...string) (*clientpb.LoginResult, error) {
	res, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token, Device: device, Join: join, CompactBatches: true}}})
	if err != nil {
		return nil, err
	}
	return res.GetLoginResult(), nil
}

// Join joins a room.
func (c *Conn) Join(ctx context.Context, room string) (*clientpb.Joined, error) {
	res, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: room}}})
	if err != nil {
		return nil, err
	}
	return res.GetJoined(), nil
}

// Leave leaves a room.
func (c *Conn) Leave(ctx context.Context, room string) error {
	_, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Leave{Leave: &clientpb.LeaveRoom{Room: room}}})
	return err
}

// Send submits a message and waits for its place in the conversation.
func (c *Conn) Send(ctx context.Context, s *clientpb.Send) (*clientpb.SendResult, error) {
	res, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Send{Send: s}})
	if err != nil {
		return nil, err
	}
	return res.GetSendResult(), nil
}

var msgSeq atomic.Uint64

// NewClientMsgID returns a fresh client_msg_id, unique in this process
// and, with the clock, across runs.
func NewClientMsgID() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(msgSeq.Add(1), 36)
}

// SendRoom sends a text message to a room.
func (c *Conn) SendRoom(ctx context.Context, room string, body []byte) (*clientpb.SendResult, error) {
	return c.Send(ctx, &clientpb.Send{ClientMsgId: NewClientMsgID(), To: &clientpb.Send_Room{Room: room}, Body: body, ContentType: "text/plain"})
}

// SendUser sends a text message to a user.
func (c *Conn) SendUser(ctx context.Context, user string, body []byte) (*clientpb.SendResult, error) {
	return c.Send(ctx, &clientpb.Send{ClientMsgId: NewClientMsgID(), To: &clientpb.Send_User{User: user}, Body: body, ContentType: "text/plain"})
}

// Conversations asks for the page of the user's conversation list after
// cursor (LoginResult.conversations_cursor, or the next_cursor of the page
// before), at most limit (0: the server's maximum, 1,000).
func (c *Conn) Conversations(ctx context.Context, cursor string, limit uint32) (*clientpb.ConversationsResult, error) {
	res, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Conversations{Conversations: &clientpb.Conversations{Cursor: cursor, Limit: limit}}})
	if err != nil {
		return nil, err
	}
	return res.GetConversationsResult(), nil
}

// Sync asks for the stored messages of conversation after seq after, at
// most limit (0: the server's default, 100), oldest first. Page on while
// the result's HasMore, after the last seq received.
func (c *Conn) Sync(ctx context.Context, conversation string, after uint64, limit uint32) (*clientpb.SyncResult, error) {
	return c.SyncWith(ctx, &clientpb.Sync{Conversation: conversation, AfterSeq: after, Limit: limit})
}

// SyncCurrent is Sync asking for the messages as they are now
// (Sync.current_state): an edited message comes with its latest edit's
// body and EditedSeq, a recalled one without body and with RecalledSeq.
func (c *Conn) SyncCurrent(ctx context.Context, conversation string, after uint64, limit uint32) (*clientpb.SyncResult, error) {
	return c.SyncWith(ctx, &clientpb.Sync{Conversation: conversation, AfterSeq: after, Limit: limit, CurrentState: true})
}

// SyncWith sends s and returns its SyncResult.
func (c *Conn) SyncWith(ctx context.Context, s *clientpb.Sync) (*clientpb.SyncResult, error) {
	res, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: s}})
	if err != nil {
		return nil, err
	}
	return res.GetSyncResult(), nil
}

// Ping measures a round trip.
func (c *Conn) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := c.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: start.UnixMilli()}}})
	return time.Since(start), err
}
