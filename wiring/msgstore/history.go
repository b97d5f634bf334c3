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
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// MaxPage bounds the messages one read returns.
const MaxPage = 500

// DefaultPage is the page size when none is asked for.
const DefaultPage = 100

// MaxPageBytes is the default bound of a SyncResult's messages, encoded:
// half the broker's default message limit (docs/protocol.md, frame
// sizes). A page always holds at least one message.
const MaxPageBytes = 512 << 10

// Bound returns the longest prefix of msgs, at least one message, whose
// size within a SyncResult (each message's encoding, with its tag and
// length) stays within maxBytes, and whether it cut any.
func Bound(msgs []*clientpb.Message, maxBytes int) ([]*clientpb.Message, bool) {
	size := 0
	for i, m := range msgs {
		size += PageEntrySize(proto.Size(m))
		if size > maxBytes && i > 0 {
			return msgs[:i], true
		}
	}
	return msgs, false
}

// PageEntrySize is what a message of n encoded bytes counts against a
// page's bound: its encoding, with its tag and length in the SyncResult.
func PageEntrySize(n int) int { return n + 1 + protowire.SizeVarint(uint64(n)) }

// Store keeps messages. Implementations are safe for concurrent use.
type Store interface {
	// Append stores messages. One whose (conversation, seq) is stored
	// already is left as it is; if the stored one has another id, Append
	// stores the others and returns a *ConflictError (sequence numbers
	// went backwards: see ConflictError).
	Append(ctx context.Context, msgs []*clientpb.Message) error
	// After returns up to limit messages of conversation with seq > after,
	// in sequence order, and whether more follow.
	After(ctx context.Context, conversation string, after uint64, limit int) (msgs []*clientpb.Message, more bool, err error)
	// Before returns the newest messages with seq < before (0: no bound),
	// up to limit, in sequence order, and whether older ones exist.
	Before(ctx context.Context, conversation string, before uint64, limit int) (msgs []*clientpb.Message, more bool, err error)
	// Changes returns the latest change of each message of conversation
	// with from <= seq <= to that was edited or recalled since, wherever
	// in the conversation the change is (usually after to), keyed by the
	// seq of the message changed: its recall when it was recalled, else
	// its latest edit. Messages never changed are absent.
	Changes(ctx context.Context, conversation string, from, to uint64) (map[uint64]*clientpb.Message, error)
	// SaveRead raises user's read position in conversation to seq; a
	// position at or above seq is left as it is. The directory keeps the
	// positions in Redis and saves them here too (directory.ReadStore).
	SaveRead(ctx context.Context, user, conversation string, seq uint64) error
	// ReadPositions returns user's saved read position in each of
	// conversations; one never saved is absent.
	ReadPositions(ctx context.Context, user string, conversations ...string) (map[string]uint64, error)
	// Latest returns the highest stored seq of every conversation, to
	// restore the directory's sequence counters from.
	Latest(ctx context.Context) (map[string]uint64, error)
	// Close releases the store.
	Close() error
}

// ConflictError reports messages whose (conversation, seq) is stored
// already under another message id. It means that sequence numbers went
// backwards (the directory lost its counters and they were not restored):
// the new messages were acknowledged to their senders but cannot be
// stored under those numbers.
type ConflictError struct {
	// Conflicts are the messages refused, in the order given to Append.
	Conflicts []Conflict
}

// Conflict is one refused message.
type Conflict struct {
	Conversation    string
	Seq             uint64
	StoredID, NewID string
}

func (e *ConflictError) Error() string {
	c := e.Conflicts[0]
	return fmt.Sprintf("history: %d message(s) conflict with stored ones, first %s#%d: stored id %s, new id %s (sequence numbers went backwards)",
		len(e.Conflicts), c.Conversation, c.Seq, c.StoredID, c.NewID)
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
