package comet

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/laneim/laneim/wiring/auth"
)

// Config configures a comet. The zero value of every field but ID and
// Secret means its default.
type Config struct {
	// ID is the comet's stable id (for example "comet-1"); its delivery
	// topic is deliver.<ID> and its consumer group laneim.comet.<ID>.
	// Required; must not contain "/".
	ID string
	// Secret is the HMAC key that signs login tokens: the comet verifies
	// a Login's token itself and forwards only its claims, so no bearer
	// token crosses a topic. Required, and refused when auth.CheckSecret
	// refuses it (too short, a placeholder).
	Secret string
	// Token is what a token must satisfy beyond its signature (issuer,
	// audience, lifetime, clock skew); the zero value is the default.
	Token auth.Policy
	// Addr is the listen address of the WebSocket server run by Module
	// (127.0.0.1:8080).
	Addr string
	// Path is the WebSocket endpoint (/ws).
	Path string
	// PublicURL is the WebSocket URL clients use, as registered in etcd
	// (default ws://<listen address><Path>, wss:// with TLSCert).
	PublicURL string
	// TLSCert and TLSKey are PEM files: with them Module serves wss://
	// (and the web page over https); without, plain ws:// for loopback or
	// behind a proxy that terminates TLS. HTTP/2 is not offered: clients
	// speak WebSocket over HTTP/1.1.
	TLSCert, TLSKey string
	// MaxFrameBytes is the largest client frame; a larger one closes the
	// connection with 1009 (64 KiB).
	MaxFrameBytes int
	// SendQueue is the number of frames queued per connection; a
	// connection whose queue is full is closed as a slow consumer (256).
	SendQueue int
	// WriteTimeout bounds one write to a client (10s).
	WriteTimeout time.Duration
	// LoginTimeout closes, with 1008, connections not logged in by then (10s).
	LoginTimeout time.Duration
	// IdleTimeout closes, with 1008, connections that sent no frame for
	// this long (60s); clients send Ping to stay connected.
	IdleTimeout time.Duration
	// RequestTimeout bounds the wait for the pipeline's answer to a
	// request forwarded to it (Login, JoinRoom, Send, Sync,
	// Conversations): past it the comet answers UNAVAILABLE itself (5s).
	RequestTimeout time.Duration
	// MaxInFlight bounds a connection's requests waiting for the
	// pipeline's answer; more are answered UNAVAILABLE at once (32).
	MaxInFlight int
	// MaxReadsInFlight bounds the history reads (Sync, Conversations) of
	// all the comet's connections together waiting for the history
	// worker's answer (256; negative: no bound). One more is answered
	// UNAVAILABLE at once, with a retry_after_ms of about a second: when
	// thousands of a big room's members catch up at once, the history
	// worker then answers those it has in time, instead of spending
	// itself on a queue longer than RequestTimeout whose answers come
	// after the comet has given up on them (issue 9). A connection
	// starting a catch-up gets a slot only while half of them are free.
	MaxReadsInFlight int
	// RecentBytes bounds the messages the comet's rooms keep to answer
	// catch-ups themselves (64 MiB; negative: none kept). Every
	// room with members here keeps the latest messages it queued; a Sync
	// of a room by one of its connections here, without current_state,
	// whose page is there whole with more after it, is answered from
	// them, not by the history worker (recent.go).
	RecentBytes int
	// RequestRate and RequestBurst bound the frames a connection sends a
	// second (20, in bursts of up to 50); more are answered RATE_LIMITED
	// with the time to wait. A negative RequestRate lifts the limit.
	RequestRate  float64
	RequestBurst int
	// SendBurst bounds the messages (Send: new, edit, recall) one user
	// sends at once on this comet (5), within RequestRate: a burst of
	// messages into a room makes everyone else's wait behind it, since a
	// conversation's messages are routed one at a time (issue 11's send
	// flood). Negative: only RequestBurst.
	SendBurst int
	// MaxTokenBytes bounds a Login's token (4 KiB); before login a frame
	// may have at most 8 KiB, after it MaxFrameBytes.
	MaxTokenBytes int
	// MaxConnsPerUser bounds one user's connections on this comet (100);
	// a login past it is answered RATE_LIMITED and closed (1008). A
	// negative value lifts the limit.
	MaxConnsPerUser int
	// MaxQueuedBytes bounds the bytes queued to all the comet's
	// connections together (512 MiB); past it the connections with the
	// largest queues are closed as slow consumers (budget.go). A negative
	// value lifts the limit.
	MaxQueuedBytes int64
	// MaxConnsPerAddress bounds the connections from one client address
	// (IPv6: one /64) on this comet (1,000); one more is refused before
	// the upgrade with HTTP 429 and Retry-After. Loopback addresses are
	// exempt unless LimitLoopback. A negative value lifts the limit, which
	// a comet behind a proxy that connects from a non-loopback address
	// needs (every client then has the proxy's address).
	MaxConnsPerAddress int
	// MaxStrikes is how many connections of one address (loopback
	// included) may be closed for abuse (a frame over the size limit, a
	// rate limit ignored) in a row, forgiven at one a second, before its
	// new connections are refused with HTTP 429 (5). Negative: no strikes.
	MaxStrikes int
	// LimitLoopback applies MaxConnsPerAddress to loopback addresses too.
	LimitLoopback bool
	// SendQueueBytes bounds the bytes queued to a connection (4 MiB); a
	// connection past it is closed as a slow consumer, like one past
	// SendQueue frames.
	SendQueueBytes int
	// HeartbeatInterval is how often live sessions are reported (10s).
	HeartbeatInterval time.Duration
	// BatchWindow merges a room's messages arriving within it (10ms).
	// A negative value disables merging: every message is written at once.
	// Beyond it, a busy room's window grows by itself: see MaxBatchWindow.
	BatchWindow time.Duration
	// FrameBudget is the number of frames a second the comet aims to
	// write to a busy room's members (60,000): each of a room's N local
	// members gets a flush FrameBudget/N times a second (a big room's
	// stripes at different moments, see room.go), so frames per member
	// stay bounded whatever the message rate, and messages per frame grow
	// with it. Writing a frame is the comet's main cost (a system call
	// each, ~10µs on a small machine's loopback); a member the comet
	// writes to less often gets several flushes in one frame (ready.go).
	// Quiet rooms are not delayed: the first message after a quiet window
	// goes out at once.
	FrameBudget int
	// MaxBatchWindow bounds a room's window, whatever its size (500ms).
	// A frame does not wait for the previous one to reach every member:
	// a member not written to yet takes both in one write (ready.go).
	MaxBatchWindow time.Duration

	// noParking keeps a reader goroutine per connection, as on systems
	// without a parker (park.go); for tests and benchmarks.
	noParking bool
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.Path == "" {
		c.Path = "/ws"
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 32
	}
	if c.MaxReadsInFlight == 0 {
		c.MaxReadsInFlight = defaultMaxReadsInFlight
	}
	if c.RecentBytes == 0 {
		c.RecentBytes = defaultRecentBytes
	}
	if c.RequestRate == 0 {
		c.RequestRate = defaultRequestRate
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = defaultRequestBurst
	}
	if c.SendBurst == 0 {
		c.SendBurst = defaultSendBurst
	}
	if c.MaxConnsPerUser == 0 {
		c.MaxConnsPerUser = 100
	}
	if c.MaxStrikes == 0 {
		c.MaxStrikes = 5
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = defaultMaxQueuedBytes
	}
	if c.MaxConnsPerAddress == 0 {
		c.MaxConnsPerAddress = defaultMaxConnsPerAddress
	}
	if c.MaxTokenBytes <= 0 {
		c.MaxTokenBytes = defaultMaxTokenBytes
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = defaultSendQueueBytesK << 10
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.MaxBatchWindow <= 0 {
		c.MaxBatchWindow = 500 * time.Millisecond
	}
	if c.FrameBudget <= 0 {
		c.FrameBudget = 60000
	}
	switch {
	case c.BatchWindow < 0:
		c.BatchWindow = 0
	case c.BatchWindow == 0:
		c.BatchWindow = 10 * time.Millisecond
	}
}

// Validate reports a configuration that cannot work. New calls it after
// filling in defaults.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("comet: no id")
	case strings.Contains(c.ID, "/"):
		return errors.New("comet: id must not contain /")
	case c.Path != "" && !strings.HasPrefix(c.Path, "/"):
		return errors.New("comet: path must start with /")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("comet: TLS certificate and key go together (flags --comet-tls-cert and --comet-tls-key)")
	}
	if err := auth.CheckSecret([]byte(c.Secret)); err != nil {
		return fmt.Errorf("comet: %w", err)
	}
	return c.Token.Validate()
}
