package pipeline

import (
	"sync/atomic"
	"time"
)

// Breaker lets a handler answer clients at once while a dependency is
// failing. After a failure, Open reports true for CoolDown: requests
// queued behind a hung dependency (one partition's messages are handled
// one at a time) are refused at once instead of each waiting for its own
// timeout; the first request after the cool-down tries again. The zero
// Breaker never opens. It is safe for concurrent use.
type Breaker struct {
	CoolDown time.Duration
	failedAt atomic.Int64 // unix nanoseconds of the last failure, 0 if none since a success
}

// Open reports whether requests should be refused without trying.
func (b *Breaker) Open() bool {
	at := b.failedAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < b.CoolDown
}

// Failed records a failure of the dependency.
func (b *Breaker) Failed() { b.failedAt.Store(time.Now().UnixNano()) }

// Succeeded records a success: the breaker closes.
func (b *Breaker) Succeeded() { b.failedAt.Store(0) }
