// Package history stores every routed message so that clients catch up
// after a disconnection and a product's backend can page through a
// conversation. A Store is keyed by (conversation, seq): storing a message
// twice keeps one copy, so an at-least-once pipeline stores exactly once.
//
// Backends: Bolt (store_bolt.go), embedded in one process on a data
// folder, for dev mode and single-node use; Scylla/Cassandra
// (store_scylla.go) for clusters. Both pass the suite in historytest.
package msgstore

import (
	"context"
	"strings"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
)

// MaxPage bounds the messages one read returns.
const MaxPage = 500

// DefaultPage is the page size when none is asked for.
const DefaultPage = 100

// Store keeps messages. Implementations are safe for concurrent use.
type Store interface {
	// Append stores messages. One whose (conversation, seq) is stored
	// already is left as it is.
	Append(ctx context.Context, msgs []*clientpb.Message) error
	// After returns up to limit messages of conversation with seq > after,
	// in sequence order, and whether more follow.
	After(ctx context.Context, conversation string, after uint64, limit int) (msgs []*clientpb.Message, more bool, err error)
	// Before returns the newest messages with seq < before (0: no bound),
	// up to limit, in sequence order, and whether older ones exist.
	Before(ctx context.Context, conversation string, before uint64, limit int) (msgs []*clientpb.Message, more bool, err error)
	// Close releases the store.
	Close() error
}

// PageSize turns a requested page size into one within bounds.
func PageSize(limit int) int {
	switch {
	case limit <= 0:
		return DefaultPage
	case limit > MaxPage:
		return MaxPage
	}
	return limit
}

// Retention says how long messages of each kind of conversation are kept;
// zero keeps them forever.
type Retention struct {
	Room, Direct, Broadcast time.Duration
}

// For returns the retention of a conversation.
func (r Retention) For(conversation string) time.Duration {
	switch {
	case strings.HasPrefix(conversation, "room:"):
		return r.Room
	case strings.HasPrefix(conversation, "dm:"):
		return r.Direct
	}
	return r.Broadcast
}
