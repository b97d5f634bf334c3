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
// history feature uses it; Sync is forwarded to the history worker on
// topics.HistoryRequests, which answers on the comet's delivery topic.
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"

	"github.com/laneim/laneim/wiring/pipeline"
)

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
	// RepeatsDropped counts messages dropped because they repeated a
	// (conversation, seq) already queued: once per room for a room's
	// messages, once per connection for direct ones.
	RepeatsDropped int64
	// Unanswered counts requests the comet answered UNAVAILABLE itself
	// because the pipeline's answer did not come within RequestTimeout.
	Unanswered int64
	// Reads is the number of history reads waiting for their answer
	// (MaxReadsInFlight bounds it); ReadsShed counts those answered
	// UNAVAILABLE at once because it was reached.
	Reads, ReadsShed int64
	// RateLimited counts frames refused with RATE_LIMITED; Refused counts
	// the other refusals a limit caused (too long, too many in flight, a
	// second Login).
	RateLimited, Refused int64
	// QueuedBytes is the bytes queued to all connections (MaxQueuedBytes
	// bounds it); OverBudget counts the connections closed as slow
	// consumers (also counted in SlowConsumers) to bring it back within.
	QueuedBytes, OverBudget int64
	// AddressLimited counts connections refused (HTTP 429) because their
	// address had MaxConnsPerAddress connections already.
	AddressLimited int64
	// StruckOut counts connections refused (HTTP 429) because their
	// address had MaxStrikes connections closed for abuse (strikes.go).
	StruckOut int64
	// BadTokens counts Logins refused BAD_TOKEN by the comet's token
	// check (invalid, expired, a subject no user can have).
	BadTokens int64
	// Parked is the number of connections waiting for their client with
	// no reader goroutine (park.go).
	Parked int64
	// RecentSyncs counts Syncs answered from the messages rooms keep
	// (recent.go), without the history worker; RecentBytes is what
	// those messages count against RecentBytes.
	RecentSyncs, RecentBytes int64
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

	mu    sync.RWMutex
	conns map[string]*conn
	users map[string]*smallSet[*conn]
	// byAddress counts connections per client address (addrlimit.go).
	byAddress map[string]int
	rooms     map[string]*room
	closed    bool
	started   bool
	sweeping  bool    // the deadline sweep runs
	parking   bool    // startParkerLocked has run
	parker    *parker // parks idle connections (park.go); nil: none. Set once under mu before the reader that reads it starts

	stop   chan struct{}   // closed by Close: ends the heartbeat loop
	ctx    context.Context // bounds connection I/O; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine and timer the comet started
	ready  readyList      // connections claimed by broadcasts (ready.go)

	slow, framesSent, bytesSent, repeats, unanswered, rateLimited, refused, badTokens, addressLimited atomic.Int64

	readsNow  atomic.Int64 // history reads waiting for their answer (reads.go)
	readsShed atomic.Int64
	readBytes atomic.Int64 // a moving average of read answers' sizes, 0 before the first (reads.go)

	recentBytes    atomic.Int64 // bytes of the messages rooms keep (recent.go)
	recentRooms    atomic.Int64 // rooms keeping some
	recentSyncs    atomic.Int64
	recentTrimming atomic.Bool // a trimRecent pass runs

	queued     atomic.Int64 // bytes queued to all connections (budget.go)
	parkedNow  atomic.Int64 // connections parked (park.go)
	overBudget atomic.Int64
	shedNow    chan struct{} // the sweep sheds (budget.go)

	strikes          strikes // strikes against addresses (strikes.go)
	struckOutRefused atomic.Int64

	userLimits userLimits // request budgets per user (limits.go)

	lat latency // latency histograms (latency.go)
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
	logger = pipeline.Logger(logger)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("comet: boot id: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Comet{
		cfg: cfg, pub: pub, logger: logger, bootID: hex.EncodeToString(b[:]),
		conns: map[string]*conn{}, users: map[string]*smallSet[*conn]{}, byAddress: map[string]int{}, strikes: strikes{m: map[string]*strike{}}, rooms: map[string]*room{},
		userLimits: userLimits{m: map[string]*userLimit{}}, lat: newLatency(cfg.ID),
		stop: make(chan struct{}), shedNow: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
	}
	c.ready.cond.L = &c.ready.mu
	return c, nil
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

// Stats returns the comet's counters.
func (c *Comet) Stats() Stats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return Stats{
		Connections: int64(len(c.conns)), Users: int64(len(c.users)), Rooms: int64(len(c.rooms)),
		SlowConsumers: c.slow.Load(), FramesSent: c.framesSent.Load(), BytesSent: c.bytesSent.Load(),
		RepeatsDropped: c.repeats.Load(), Unanswered: c.unanswered.Load(), Reads: c.readsNow.Load(), ReadsShed: c.readsShed.Load(),
		RateLimited: c.rateLimited.Load(), Refused: c.refused.Load(), BadTokens: c.badTokens.Load(), AddressLimited: c.addressLimited.Load(),
		QueuedBytes: c.queued.Load(), OverBudget: c.overBudget.Load(), StruckOut: c.struckOutRefused.Load(),
		Parked: c.parkedNow.Load(), RecentSyncs: c.recentSyncs.Load(), RecentBytes: c.recentBytes.Load(),
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
		c.stopReady()
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
	c.mu.RLock()
	p := c.parker
	c.mu.RUnlock()
	if p != nil {
		p.close()
	}
	return nil
}
