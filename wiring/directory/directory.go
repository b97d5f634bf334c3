// Package directory is laneIM's Redis model: the directory of users, rooms,
// memberships and blocks (kept current from the system of record), the
// presence of sessions in rooms, and per-conversation sequence numbers.
// Everything the hot path needs is here; nothing on it queries MySQL.
//
// Keys carry hash tags so that what one operation touches together sits in
// one Redis Cluster slot; see docs/architecture.md for the key layout.
// A Store is safe for concurrent use.
package directory

import (
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
)

// User is a user of the directory.
type User struct {
	ID       string
	Name     string
	Disabled bool
}

// Room is a room of the directory.
type Room struct {
	ID   string
	Name string
	Kind string
}

// Session is one logged-in connection.
type Session struct {
	Comet  string
	Conn   string
	User   string
	Device string
}

// SessionRef names a connection.
type SessionRef struct {
	Comet string
	Conn  string
}

// LiveSession is a connection reported alive by its comet's heartbeat.
type LiveSession struct {
	Conn string
	User string
}

// RoomCount is a room's presence after a change.
type RoomCount struct {
	Room string
	// OnlineUsers is the number of distinct users with a connection in the room.
	OnlineUsers int
	// Connections is the number of connections in the room.
	Connections int
	// UserChanged is true when the change made the user appear in the room
	// (first connection joined) or disappear from it (last connection left).
	UserChanged bool
}

// Assigned is the place a message got in its conversation.
type Assigned struct {
	ID  string
	Seq uint64
	// Time is when the place was first assigned, to the millisecond; zero
	// for a place assigned before times were recorded.
	Time time.Time
	// Dup is true when (conversation, sender, client message id) had been
	// assigned before: ID, Seq and Time are the earlier ones.
	Dup bool
	// Routed is true, for a Dup, when MarkRouted recorded that the first
	// submission was routed to the end.
	Routed bool
}

// Store reads and writes the Redis model.
type Store struct {
	rdb     redis.UniversalClient
	limiter *redis_rate.Limiter
	reads   ReadStore // nil: read positions in Redis only
}

// Option configures a Store.
type Option func(*Store)

// WithReadStore saves read positions in rs too and reads them back from
// it when Redis has none (see MarkRead and ReadSeqs), so they survive the
// loss of Redis. A nil rs keeps them in Redis only.
func WithReadStore(rs ReadStore) Option {
	return func(s *Store) { s.reads = rs }
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, opts ...Option) *Store {
	s := &Store{rdb: rdb, limiter: redis_rate.NewLimiter(rdb)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Module provides a *Store on the process's redis.UniversalClient, and
// with the ReadStore the graph may hold (the history store, in a process
// that opens it).
var Module = fx.Module("directory", fx.Provide(func(p struct {
	fx.In
	RDB   redis.UniversalClient
	Reads ReadStore `optional:"true"`
}) *Store {
	return New(p.RDB, WithReadStore(p.Reads))
}))
