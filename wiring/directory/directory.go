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
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotImplemented is returned by methods still being written.
var ErrNotImplemented = errors.New("directory: not implemented")

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
	// Dup is true when (conversation, sender, client message id) had been
	// assigned before: ID and Seq are the earlier ones.
	Dup bool
}

// Store reads and writes the Redis model.
type Store struct {
	rdb redis.UniversalClient
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient) *Store { return &Store{rdb: rdb} }

// --- directory: written from the system of record (seed or binlog) ---

// PutUser creates or replaces a user.
func (s *Store) PutUser(ctx context.Context, u User) error { return ErrNotImplemented }

// DeleteUser removes a user and its memberships and blocks.
func (s *Store) DeleteUser(ctx context.Context, id string) error { return ErrNotImplemented }

// User returns a user; ok is false when it does not exist.
func (s *Store) User(ctx context.Context, id string) (u User, ok bool, err error) {
	return User{}, false, ErrNotImplemented
}

// PutRoom creates or replaces a room.
func (s *Store) PutRoom(ctx context.Context, r Room) error { return ErrNotImplemented }

// DeleteRoom removes a room and its memberships.
func (s *Store) DeleteRoom(ctx context.Context, id string) error { return ErrNotImplemented }

// Room returns a room; ok is false when it does not exist.
func (s *Store) Room(ctx context.Context, id string) (r Room, ok bool, err error) {
	return Room{}, false, ErrNotImplemented
}

// AddMember makes user a member of room. Idempotent.
func (s *Store) AddMember(ctx context.Context, room, user string) error { return ErrNotImplemented }

// RemoveMember ends user's membership of room. Idempotent.
func (s *Store) RemoveMember(ctx context.Context, room, user string) error { return ErrNotImplemented }

// IsMember reports whether user is a member of room.
func (s *Store) IsMember(ctx context.Context, room, user string) (bool, error) {
	return false, ErrNotImplemented
}

// RoomsOf returns the rooms user is a member of.
func (s *Store) RoomsOf(ctx context.Context, user string) ([]string, error) {
	return nil, ErrNotImplemented
}

// Block records that user blocks messages from other. Idempotent.
func (s *Store) Block(ctx context.Context, user, other string) error { return ErrNotImplemented }

// Unblock removes a block. Idempotent.
func (s *Store) Unblock(ctx context.Context, user, other string) error { return ErrNotImplemented }

// Blocks reports whether user blocks messages from other.
func (s *Store) Blocks(ctx context.Context, user, other string) (bool, error) {
	return false, ErrNotImplemented
}

// --- presence ---

// OpenSession records a logged-in connection, live until now+ttl unless a
// heartbeat extends it. Idempotent.
func (s *Store) OpenSession(ctx context.Context, sess Session, ttl time.Duration) error {
	return ErrNotImplemented
}

// CloseSession removes a connection and its room entries. It returns the
// session (ok false if it was unknown) and the rooms it was in, with their
// presence after the change. Idempotent.
func (s *Store) CloseSession(ctx context.Context, ref SessionRef) (sess Session, rooms []RoomCount, ok bool, err error) {
	return Session{}, nil, false, ErrNotImplemented
}

// JoinRoom records that a connection of user receives room. Idempotent:
// joining twice counts once.
func (s *Store) JoinRoom(ctx context.Context, ref SessionRef, user, room string) (RoomCount, error) {
	return RoomCount{}, ErrNotImplemented
}

// LeaveRoom undoes JoinRoom. Idempotent.
func (s *Store) LeaveRoom(ctx context.Context, ref SessionRef, user, room string) (RoomCount, error) {
	return RoomCount{}, ErrNotImplemented
}

// Heartbeat extends the deadline of the comet and of each live session to
// now+ttl and refreshes the users' online flags.
func (s *Store) Heartbeat(ctx context.Context, comet string, live []LiveSession, ttl time.Duration) error {
	return ErrNotImplemented
}

// ExpiredSessions returns up to limit sessions whose deadline is before now.
func (s *Store) ExpiredSessions(ctx context.Context, now time.Time, limit int) ([]SessionRef, error) {
	return nil, ErrNotImplemented
}

// UserSessions returns the live connections of user.
func (s *Store) UserSessions(ctx context.Context, user string) ([]SessionRef, error) {
	return nil, ErrNotImplemented
}

// Online reports, for each user, whether it has a live connection.
func (s *Store) Online(ctx context.Context, users ...string) (map[string]bool, error) {
	return nil, ErrNotImplemented
}

// RoomComets returns the comets hosting at least one connection in room.
func (s *Store) RoomComets(ctx context.Context, room string) ([]string, error) {
	return nil, ErrNotImplemented
}

// RoomOnline returns the number of distinct users and of connections in room.
func (s *Store) RoomOnline(ctx context.Context, room string) (users, conns int, err error) {
	return 0, 0, ErrNotImplemented
}

// LiveComets returns the comets whose heartbeat deadline has not passed.
func (s *Store) LiveComets(ctx context.Context, now time.Time) ([]string, error) {
	return nil, ErrNotImplemented
}

// --- sequences ---

// Assign gives a message its id and sequence number in conversation,
// atomically: a first (sender, clientMsgID) increments the conversation's
// counter and stores id (from newID) and seq for 24 hours; a repeat
// returns the stored ones with Dup set. An empty clientMsgID is never
// de-duplicated.
func (s *Store) Assign(ctx context.Context, conversation, sender, clientMsgID string, newID func() string) (Assigned, error) {
	return Assigned{}, ErrNotImplemented
}

// LatestSeqs returns the latest sequence number of each conversation (0 if none).
func (s *Store) LatestSeqs(ctx context.Context, conversations ...string) (map[string]uint64, error) {
	return nil, ErrNotImplemented
}
