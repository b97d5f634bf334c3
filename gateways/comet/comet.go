// Package comet is laneIM's WebSocket gateway. A comet holds client
// connections, forwards what clients ask to the pipeline's topics, and
// consumes only its own delivery topic, deliver.<id>, whose frames it
// writes to its connections.
//
// # Subprotocols
//
// "laneim.v1.proto" (binary WebSocket messages, protobuf) and
// "laneim.v1.json" (text messages, the protojson mapping of the same
// ClientFrame and ServerFrame, camelCase names, unset fields left out;
// both camelCase and proto names are accepted on input). A client that
// offers no subprotocol at all speaks JSON, which suits websocat and
// browsers; a client that offers only other subprotocols is refused with
// HTTP 400 naming the two. A plain HTTP request without an upgrade gets
// the WebSocket library's 4xx answer. Whatever the subprotocol, a binary
// message is read as protobuf and a text message as JSON; the comet
// writes in the connection's encoding.
//
// # Connections
//
// Each connection has a reader (the HTTP handler's goroutine) and a
// writer goroutine draining a bounded queue. A connection not logged in
// after LoginTimeout, or silent for IdleTimeout, is closed with 1008;
// a frame larger than MaxFrameBytes closes it with 1009. Before login
// only Login and Ping are served. Ack is accepted and ignored until the
// history feature uses it; Sync is answered with UNAVAILABLE.
//
// # Fan-out
//
// A room's messages are merged into one MessageBatch per batch window,
// encoded once per encoding and the same bytes queued to every local
// member. Queuing never blocks: a connection whose queue is full is
// closed as a slow consumer (1008 "slow consumer"), so no reader can
// stall a room or the delivery handler.
package comet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"

	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// The WebSocket subprotocols of version 1 of the client protocol.
const (
	SubprotocolProto = "laneim.v1.proto"
	SubprotocolJSON  = "laneim.v1.json"
)

// heartbeatChunk is the most live sessions one heartbeat event carries.
const heartbeatChunk = 1000

// closeGrace is how long Close lets connections finish their close
// handshakes before it cuts them.
const closeGrace = 2 * time.Second

// Stats are a comet's counters, read at one moment.
type Stats struct {
	// Connections is the number of open connections, logged in or not.
	Connections int64
	// Users is the number of distinct logged-in users.
	Users int64
	// Rooms is the number of rooms with at least one local member.
	Rooms int64
	// SlowConsumers counts connections closed because their queue was full.
	SlowConsumers int64
	// FramesSent and BytesSent count what writers wrote to clients.
	FramesSent int64
	BytesSent  int64
}

// Comet is a WebSocket gateway. Its methods are safe for concurrent use.
// It owns every goroutine it starts: the heartbeat loop (Start), each
// connection's reader and writer, and the rooms' flush timers; Close
// stops them all and waits.
type Comet struct {
	cfg    Config
	pub    message.Publisher
	logger *slog.Logger
	bootID string
	next   atomic.Uint64

	mu      sync.RWMutex
	conns   map[string]*conn
	users   map[string]map[*conn]struct{}
	rooms   map[string]*room
	closed  bool
	started bool

	stop   chan struct{}   // closed by Close: ends the heartbeat loop
	ctx    context.Context // bounds connection I/O; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine and timer the comet started

	slow, framesSent, bytesSent atomic.Int64
}

// New returns a Comet publishing client requests with pub. Call Start to
// report live sessions, serve WebSockets with ServeHTTP (or Module), feed
// Handler's messages to it, and Close it. pub is not closed by Close.
func New(cfg Config, pub message.Publisher, logger *slog.Logger) (*Comet, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, fmt.Errorf("comet: no publisher")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("comet: boot id: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Comet{
		cfg: cfg, pub: pub, logger: logger, bootID: hex.EncodeToString(b[:]),
		conns: map[string]*conn{}, users: map[string]map[*conn]struct{}{}, rooms: map[string]*room{},
		stop: make(chan struct{}), ctx: ctx, cancel: cancel,
	}, nil
}

// Start starts reporting live sessions every HeartbeatInterval until
// Close. Calling it again, or after Close, does nothing.
func (c *Comet) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.started {
		return
	}
	c.started = true
	c.wg.Add(1)
	go c.heartbeats()
}

// ID returns the comet's id.
func (c *Comet) ID() string { return c.cfg.ID }

// Config returns the comet's configuration, defaults filled in.
func (c *Comet) Config() Config { return c.cfg }

// Handler returns the pipeline handler named comet.<id> that consumes the
// comet's own delivery topic (consumer group laneim.comet.<id>) and
// applies each Delivery with Handle.
func (c *Comet) Handler() wiring.Handler {
	return wiring.Handler{Name: "comet." + c.cfg.ID, Topic: topics.Delivery(c.cfg.ID), Handle: c.Handle}
}

// Stats returns the comet's counters.
func (c *Comet) Stats() Stats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return Stats{
		Connections: int64(len(c.conns)), Users: int64(len(c.users)), Rooms: int64(len(c.rooms)),
		SlowConsumers: c.slow.Load(), FramesSent: c.framesSent.Load(), BytesSent: c.bytesSent.Load(),
	}
}

// Close refuses new connections, closes every connection with 1001
// (going away), stops the heartbeat loop and the rooms' timers, and waits
// for every goroutine the comet started. Connections that have not
// finished their close handshake within a short grace are cut. Close does
// not close the publisher; it always returns nil.
func (c *Comet) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.stop)
		for _, r := range c.rooms {
			r.stop()
		}
	}
	conns := make([]*conn, 0, len(c.conns))
	for _, cn := range c.conns {
		conns = append(conns, cn)
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.kick(websocket.StatusGoingAway, "server shutting down", false)
	}
	done := make(chan struct{})
	go func() { // owned: Close waits for it below
		c.wg.Wait()
		close(done)
	}()
	grace := time.NewTimer(min(closeGrace, c.cfg.WriteTimeout))
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		c.cancel() // cut the connections still closing
		<-done
	}
	c.cancel()
	return nil
}

// ServeHTTP upgrades a request to a WebSocket connection and serves it
// until it ends. Requests that cannot be upgraded get a 4xx answer.
func (c *Comet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	offered := r.Header.Values("Sec-WebSocket-Protocol")
	if len(offered) > 0 && !offers(offered, SubprotocolProto) && !offers(offered, SubprotocolJSON) {
		http.Error(w, "laneim: unsupported WebSocket subprotocol; offer "+SubprotocolProto+" (binary protobuf) or "+SubprotocolJSON+" (JSON text)", http.StatusBadRequest)
		return
	}
	c.mu.RLock()
	closed := c.closed
	c.mu.RUnlock()
	if closed {
		http.Error(w, "laneim: comet shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{SubprotocolProto, SubprotocolJSON},
		// Any origin: no cookie is involved, a connection is
		// authenticated by the token of its Login frame.
		InsecureSkipVerify: true,
	})
	if err != nil {
		// Accept has written an HTTP error (426 for a plain request).
		c.logger.Debug("websocket accept", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(int64(c.cfg.MaxFrameBytes))
	cn := c.register(ws, ws.Subprotocol() != SubprotocolProto)
	if cn == nil {
		ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer c.wg.Done()
	cn.read(c)
}

func offers(values []string, proto string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), proto) {
				return true
			}
		}
	}
	return false
}

// register adds a new connection and starts its writer. It returns nil if
// the comet is closed; otherwise the caller owns one count of c.wg for the
// reader.
func (c *Comet) register(ws *websocket.Conn, useJSON bool) *conn {
	cn := newConn(c.bootID+"."+strconv.FormatUint(c.next.Add(1), 10), ws, useJSON, c.cfg.SendQueue)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.conns[cn.id] = cn
	c.wg.Add(2)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		cn.write(c)
	}()
	return cn
}

// unregister forgets a connection that ended and, if it was logged in,
// publishes CLOSED.
func (c *Comet) unregister(cn *conn) {
	c.mu.Lock()
	delete(c.conns, cn.id)
	user := cn.user
	if user != "" {
		if set := c.users[user]; set != nil {
			delete(set, cn)
			if len(set) == 0 {
				delete(c.users, user)
			}
		}
	}
	for r := range cn.rooms {
		c.leaveLocked(cn, r)
	}
	c.mu.Unlock()
	if user == "" {
		return
	}
	// Best effort: if this fails, the session expires without heartbeats.
	_ = c.publishEvent(&topicpb.SessionEvent{
		Kind: topicpb.SessionEvent_CLOSED, Session: c.session(cn), User: user, TimeUnixMs: time.Now().UnixMilli(),
	})
}

func (c *Comet) session(cn *conn) *topicpb.Session {
	return &topicpb.Session{Comet: c.cfg.ID, Conn: cn.id}
}

// leaveLocked removes cn from room r; c.mu must be held for writing.
func (c *Comet) leaveLocked(cn *conn, r string) {
	delete(cn.rooms, r)
	if rm := c.rooms[r]; rm != nil {
		if rm.leave(cn) == 0 {
			rm.stop()
			delete(c.rooms, r)
		}
	}
}

// heartbeats reports the live sessions every HeartbeatInterval until Close.
func (c *Comet) heartbeats() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.Heartbeat()
		}
	}
}

// Heartbeat publishes the comet's logged-in sessions now, at most 1,000
// per SessionEvent; with none it publishes one empty heartbeat, which
// still tells presence the comet is alive. Failures are logged.
func (c *Comet) Heartbeat() {
	c.mu.RLock()
	live := make([]*topicpb.LiveSession, 0, len(c.conns))
	for _, cn := range c.conns {
		if cn.user != "" {
			live = append(live, &topicpb.LiveSession{Conn: cn.id, User: cn.user})
		}
	}
	c.mu.RUnlock()
	for start := 0; start == 0 || start < len(live); start += heartbeatChunk {
		end := min(start+heartbeatChunk, len(live))
		_ = c.publishEvent(&topicpb.SessionEvent{
			Kind: topicpb.SessionEvent_HEARTBEAT, Session: &topicpb.Session{Comet: c.cfg.ID},
			Live: live[start:end], TimeUnixMs: time.Now().UnixMilli(),
		})
	}
}

// publishEvent publishes a session event; a failure is logged and returned.
func (c *Comet) publishEvent(ev *topicpb.SessionEvent) error {
	msg, err := topics.SessionEvents.Encode(ev)
	if err == nil {
		err = c.pub.Publish(topics.SessionEvents.Name, msg)
	}
	if err != nil {
		c.logger.Warn("publish session event", "kind", ev.GetKind(), "err", err)
		return fmt.Errorf("comet: publish %s: %w", ev.GetKind(), err)
	}
	return nil
}

// Handle applies one message of the comet's delivery topic (see Deliver).
// A payload that does not decode is a wiring.Permanent error; every other
// message returns nil, since a connection that is gone needs no retry.
func (c *Comet) Handle(msg *message.Message) error {
	d, err := topics.Deliveries.Decode(msg)
	if err != nil {
		return wiring.Permanent(err)
	}
	c.Deliver(d)
	return nil
}

// Deliver applies a Delivery: its control first (authenticate, join, leave),
// then its frame is queued to the targets; with control.close the frame
// is queued first and the targets are closed after writing it.
// Connections it names that are not here are skipped (stale routes).
// Deliver never blocks on a connection; after Close it does nothing.
func (c *Comet) Deliver(d *topicpb.Delivery) {
	c.mu.RLock()
	closed := c.closed
	c.mu.RUnlock()
	if closed {
		return
	}
	ctl := d.GetControl()
	var targets []*conn
	if ctl != nil {
		targets = c.targets(d)
		c.control(targets, ctl)
	}
	f := d.GetFrame()
	if f != nil {
		if batch := f.GetMessages(); batch != nil && d.GetRoom() != "" && ctl.GetClose() == "" {
			c.mu.RLock()
			rm := c.rooms[d.GetRoom()]
			c.mu.RUnlock()
			if rm != nil {
				rm.add(batch.GetMessages())
			}
			return
		}
		if ctl == nil {
			targets = c.targets(d)
		}
		fr := newFrame(f)
		for _, cn := range targets {
			cn.enqueue(c, fr)
		}
	}
	if reason := ctl.GetClose(); reason != "" {
		for _, cn := range targets {
			cn.kick(websocket.StatusPolicyViolation, reason, true)
		}
	}
}

// targets resolves a Delivery's targets to local connections.
func (c *Comet) targets(d *topicpb.Delivery) []*conn {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*conn
	switch {
	case len(d.GetConns()) > 0:
		for _, id := range d.GetConns() {
			if cn := c.conns[id]; cn != nil {
				out = append(out, cn)
			}
		}
	case d.GetRoom() != "":
		if rm := c.rooms[d.GetRoom()]; rm != nil {
			out = rm.appendMembers(out)
		}
	case len(d.GetUsers()) > 0:
		for _, u := range d.GetUsers() {
			for cn := range c.users[u] {
				out = append(out, cn)
			}
		}
	case d.GetBroadcast():
		for _, cn := range c.conns {
			if cn.user != "" {
				out = append(out, cn)
			}
		}
	}
	return out
}

// control applies authenticate, join and leave to targets, in that
// order. A connection is authenticated once; join needs a logged-in
// connection; leave (presence revoking a membership) only updates the
// local index, publishing nothing.
func (c *Comet) control(targets []*conn, ctl *topicpb.Control) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for _, cn := range targets {
		if u := ctl.GetAuthenticate(); u != "" && cn.user == "" {
			cn.user = u
			cn.authed.Store(true)
			if c.users[u] == nil {
				c.users[u] = map[*conn]struct{}{}
			}
			c.users[u][cn] = struct{}{}
		}
		if r := ctl.GetJoin(); r != "" && cn.user != "" {
			rm := c.rooms[r]
			if rm == nil {
				rm = newRoom(c, r)
				c.rooms[r] = rm
			}
			rm.join(cn)
			cn.rooms[r] = struct{}{}
		}
		if r := ctl.GetLeave(); r != "" {
			c.leaveLocked(cn, r)
		}
	}
}

// closeReason fits s into a close frame (123 bytes) without splitting a
// UTF-8 sequence.
func closeReason(s string) string {
	const max = 123
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
