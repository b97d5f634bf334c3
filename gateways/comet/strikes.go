package comet

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Strikes against an address (issue 11, the ping flood): a connection
// closed for abuse (a frame over the size limit, 1009, or a rate limit
// ignored, 1008) is a strike against its client address, loopback
// included; an address with MaxStrikes strikes within a few seconds (they
// are forgiven at one a second) has its new connections refused before
// the upgrade with HTTP 429, until a strike is forgiven. A client that
// reconnects to flood again costs the comet an HTTP answer, not a
// WebSocket upgrade, goroutines and buffers. Honest clients never strike:
// only a connection that broke a limit counts.

// strikeRetry is the Retry-After, in seconds, of an address refused for
// its strikes.
const strikeRetry = 10

type strikes struct {
	mu sync.Mutex
	m  map[string]*strike
}

type strike struct {
	*rate.Limiter
	last time.Time
}

// strikeKey is the key under which strikes against a client address are
// counted: its IP (IPv6: its /64), loopback included; "" when strikes are
// off or the address does not parse.
func (c *Comet) strikeKey(remote string) string {
	if c.cfg.MaxStrikes <= 0 {
		return ""
	}
	return addressOf(remote)
}

// struckOut reports whether key has no strike left.
func (c *Comet) struckOut(key string) bool {
	if key == "" {
		return false
	}
	c.strikes.mu.Lock()
	defer c.strikes.mu.Unlock()
	s := c.strikes.m[key]
	return s != nil && s.Tokens() < 1
}

// strike counts a strike against key.
func (c *Comet) strike(key string) {
	if key == "" {
		return
	}
	c.strikes.mu.Lock()
	defer c.strikes.mu.Unlock()
	s := c.strikes.m[key]
	if s == nil {
		s = &strike{Limiter: rate.NewLimiter(1, c.cfg.MaxStrikes)}
		c.strikes.m[key] = s
	}
	// A strike past the bucket is a debt, paid back at one a second: many
	// connections dialled at once all pass the check before any of them
	// strikes, and with strikes lost once the bucket was empty, 50
	// parallel dialers had 27 abusive connections a second accepted (an
	// outside abuse check). pruneStrikes bounds the debt: an address
	// without a strike for a minute is forgotten.
	s.Reserve()
	s.last = time.Now()
}

// pruneStrikes forgets the addresses without a strike for a minute.
func (c *Comet) pruneStrikes(now time.Time) {
	c.strikes.mu.Lock()
	defer c.strikes.mu.Unlock()
	for k, s := range c.strikes.m {
		if now.Sub(s.last) > time.Minute {
			delete(c.strikes.m, k)
		}
	}
}

// refuseStruckOut answers a connection refused for its address's strikes.
func (c *Comet) refuseStruckOut(w http.ResponseWriter, r *http.Request) {
	c.struckOutRefused.Add(1)
	c.logger.Debug("connection refused: its address broke limits", "remote", r.RemoteAddr)
	w.Header().Set("Retry-After", strconv.Itoa(strikeRetry))
	http.Error(w, "laneim: too many connections from this address broke the limits; retry later", http.StatusTooManyRequests)
}
