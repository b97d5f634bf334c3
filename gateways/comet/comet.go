// Package comet is laneIM's WebSocket gateway. A comet holds client
// connections, forwards what clients ask to the pipeline's topics, and
// consumes only its own delivery topic, deliver.<id>, whose frames it
// writes to its connections.
//
// Subprotocols: "laneim.v1.proto" (binary WebSocket messages, protobuf)
// and "laneim.v1.json" (text messages, protojson). A client that offers no
// subprotocol speaks JSON, which suits websocat and browsers; a client that
// offers only others is refused with HTTP 400. Either way a binary message
// is read as protobuf and a text message as JSON.
//
// Fan-out: a room's messages are merged into one MessageBatch per batch
// window, encoded once per encoding and the same bytes queued to every
// local member. Each connection has a bounded queue drained by its own
// writer; a connection whose queue is full is closed as a slow consumer,
// so no reader can stall a room.
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

// Stats are a comet's counters.
type Stats struct {
	Connections   int64
	Rooms         int64
	SlowConsumers int64
	FramesSent    int64
	BytesSent     int64
}

// Comet is a WebSocket gateway. Its methods are safe for concurrent use.
type Comet struct {
	cfg    Config
	pub    message.Publisher
	logger *slog.Logger
	bootID string
	next   atomic.Uint64

	mu     sync.RWMutex
	conns  map[string]*conn
	users  map[string]map[*conn]struct{}
	rooms  map[string]*room
	closed bool

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the comet started

	slow, framesSent, bytesSent atomic.Int64
}

// New returns a Comet publishing client requests with pub.
func New(cfg Config, pub message.Publisher, logger *slog.Logger) (*Comet, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("comet: boot id: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Comet{
		cfg: cfg, pub: pub, logger: logger, bootID: hex.EncodeToString(b[:]),
		conns: map[string]*conn{}, users: map[string]map[*conn]struct{}{}, rooms: map[string]*room{},
		ctx: ctx, cancel: cancel,
	}
	return c, nil
}

// Start starts reporting live sessions every HeartbeatInterval, until Close.
func (c *Comet) Start() {
	c.wg.Add(1)
	go c.heartbeats()
}

// ID returns the comet's id.
func (c *Comet) ID() string { return c.cfg.ID }

// Config returns the comet's configuration, defaults filled in.
func (c *Comet) Config() Config { return c.cfg }

// Handler returns the pipeline handler consuming the comet's own delivery
// topic under the consumer group laneim.comet.<id>.
func (c *Comet) Handler() wiring.Handler {
	return wiring.Handler{Name: "comet." + c.cfg.ID, Topic: topics.Delivery(c.cfg.ID), Handle: c.Handle}
}

// Stats returns the comet's counters.
func (c *Comet) Stats() Stats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return Stats{
		Connections: int64(len(c.conns)), Rooms: int64(len(c.rooms)),
		SlowConsumers: c.slow.Load(), FramesSent: c.framesSent.Load(), BytesSent: c.bytesSent.Load(),
	}
}

// Close closes every connection (1001 going away) and waits for every
// goroutine the comet started. It does not close the publisher.
func (c *Comet) Close() error {
	c.mu.Lock()
	c.closed = true
	conns := make([]*conn, 0, len(c.conns))
	for _, cn := range c.conns {
		conns = append(conns, cn)
	}
	for _, r := range c.rooms {
		r.stop()
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.kick(websocket.StatusGoingAway, "server shutting down")
	}
	c.cancel()
	c.wg.Wait()
	return nil
}

// ServeHTTP upgrades a request to a WebSocket connection and serves it
// until it ends.
func (c *Comet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	offered := r.Header.Values("Sec-WebSocket-Protocol")
	if len(offered) > 0 && !offers(offered, SubprotocolProto) && !offers(offered, SubprotocolJSON) {
		http.Error(w, "laneim: unsupported WebSocket subprotocol; use "+SubprotocolProto+" or "+SubprotocolJSON, http.StatusBadRequest)
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
		Subprotocols:       []string{SubprotocolProto, SubprotocolJSON},
		InsecureSkipVerify: true, // any origin: authentication is the login token
	})
	if err != nil {
		// Accept has written an HTTP error (e.g. 426 for a plain request).
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
			if strings.TrimSpace(p) == proto {
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
	cn := &conn{
		id:      c.bootID + "." + strconv.FormatUint(c.next.Add(1), 10),
		ws:      ws,
		json:    useJSON,
		send:    make(chan *frame, c.cfg.SendQueue),
		closing: make(chan struct{}),
		rooms:   map[string]struct{}{},
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.conns[cn.id] = cn
	c.wg.Add(2)
	c.mu.Unlock()
	cn.loginTimer = time.AfterFunc(c.cfg.LoginTimeout, func() {
		c.mu.RLock()
		user := cn.user
		c.mu.RUnlock()
		if user == "" {
			cn.kick(websocket.StatusPolicyViolation, "login timeout")
		}
	})
	go func() {
		defer c.wg.Done()
		cn.write(c)
	}()
	return cn
}

// unregister forgets a connection that ended and tells the pipeline.
func (c *Comet) unregister(cn *conn) {
	cn.loginTimer.Stop()
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

// leaveLocked removes cn from room r; c.mu must be held.
func (c *Comet) leaveLocked(cn *conn, r string) {
	delete(cn.rooms, r)
	if rm := c.rooms[r]; rm != nil {
		if rm.leave(cn) == 0 {
			rm.stop()
			delete(c.rooms, r)
		}
	}
}

// heartbeats reports the live sessions every HeartbeatInterval.
func (c *Comet) heartbeats() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.Heartbeat()
		}
	}
}

// Heartbeat publishes the comet's live sessions now, at most 1,000 per event.
func (c *Comet) Heartbeat() {
	c.mu.RLock()
	live := make([]*topicpb.LiveSession, 0, len(c.conns))
	for _, cn := range c.conns {
		if cn.user != "" {
			live = append(live, &topicpb.LiveSession{Conn: cn.id, User: cn.user})
		}
	}
	c.mu.RUnlock()
	for start := 0; start == 0 || start < len(live); start += 1000 {
		end := min(start+1000, len(live))
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
	}
	return err
}

// Handle applies one Delivery from the comet's topic: its control first,
// then its frame. Connections it names that are gone are skipped.
func (c *Comet) Handle(msg *message.Message) error {
	d, err := topics.Deliveries.Decode(msg)
	if err != nil {
		return wiring.Permanent(err)
	}
	c.Deliver(d)
	return nil
}

// Deliver applies a Delivery (see Handle).
func (c *Comet) Deliver(d *topicpb.Delivery) {
	if ctl := d.GetControl(); ctl != nil {
		c.control(d, ctl)
	}
	f := d.GetFrame()
	if f == nil {
		return
	}
	if batch := f.GetMessages(); batch != nil && d.GetRoom() != "" {
		c.mu.RLock()
		rm := c.rooms[d.GetRoom()]
		c.mu.RUnlock()
		if rm != nil {
			rm.add(c, batch.GetMessages())
		}
		return
	}
	fr := newFrame(f)
	for _, cn := range c.targets(d) {
		cn.enqueue(c, fr)
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

func (c *Comet) control(d *topicpb.Delivery, ctl *topicpb.Control) {
	targets := c.targets(d)
	c.mu.Lock()
	for _, cn := range targets {
		if u := ctl.GetAuthenticate(); u != "" && cn.user == "" {
			cn.user = u
			if c.users[u] == nil {
				c.users[u] = map[*conn]struct{}{}
			}
			c.users[u][cn] = struct{}{}
		}
		if r := ctl.GetJoin(); r != "" && cn.user != "" {
			rm := c.rooms[r]
			if rm == nil {
				rm = newRoom(r, c.cfg.BatchWindow)
				c.rooms[r] = rm
			}
			rm.join(cn)
			cn.rooms[r] = struct{}{}
		}
	}
	c.mu.Unlock()
	if reason := ctl.GetClose(); reason != "" {
		for _, cn := range targets {
			cn.kick(websocket.StatusPolicyViolation, reason)
		}
	}
}
