package binlogsync

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
)

// The tables the worker follows.
const (
	tableUsers   = "users"
	tableRooms   = "rooms"
	tableMembers = "room_members"
	tableBlocks  = "blocks"
)

// Directory is the part of the Redis model the worker writes: users,
// rooms, memberships and blocks. It writes no presence: when the system of
// record takes a membership or a user away, the worker publishes a
// revocation on topics.SessionEvents and the presence worker applies it.
type Directory interface {
	PutUser(ctx context.Context, u directory.User) error
	DeleteUser(ctx context.Context, id string) error
	PutRoom(ctx context.Context, r directory.Room) error
	DeleteRoom(ctx context.Context, id string) error
	AddMembers(ctx context.Context, ms []directory.Membership) error
	RemoveMember(ctx context.Context, room, user string) error
	Members(ctx context.Context, room string) ([]string, error)
	Block(ctx context.Context, user, other string) error
	Unblock(ctx context.Context, user, other string) error
}

// row reads a row by column name.
type row struct {
	cols map[string]int
	vals []any
}

func (r row) str(col string) string {
	i, ok := r.cols[col]
	if !ok || i >= len(r.vals) {
		return ""
	}
	switch v := r.vals[i].(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	default:
		return fmt.Sprint(v)
	}
}

func (r row) truthy(col string) bool {
	s := r.str(col)
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n != 0
}

// The reasons of revocations. A user's is the close reason its
// connections see.
const (
	ReasonDisabled      = "account disabled"
	ReasonDeleted       = "account deleted"
	ReasonMemberRemoved = "membership removed"
	ReasonRoomDeleted   = "room deleted"
)

// applier turns row changes into directory changes and revocations. Every
// change is idempotent, so applying an event twice leaves the same state;
// a revocation published twice is applied once by presence.
//
// A row naming a user or a room whose id breaks the id rule
// (topics.ValidID) is never applied: it is skipped with a warning and
// counted in skipped. Such an id could make conversation ids or Redis
// keys ambiguous; the directory never holds one.
type applier struct {
	dir    Directory
	pub    message.Publisher
	logger *slog.Logger // nil: discard

	skipped atomic.Int64
}

// valid reports whether every id of a row of table follows the id rule;
// when one does not, the row is logged and counted as skipped.
func (a *applier) valid(table string, r row) bool {
	var cols []string
	switch table {
	case tableUsers, tableRooms:
		cols = []string{"id"}
	case tableMembers:
		cols = []string{"room_id", "user_id"}
	case tableBlocks:
		cols = []string{"user_id", "blocked_id"}
	}
	for _, col := range cols {
		if err := topics.CheckID(table+"."+col, r.str(col)); err != nil {
			a.skipped.Add(1)
			if a.logger != nil {
				a.logger.Warn("row skipped: invalid id", "table", table, "err", err)
			}
			return false
		}
	}
	return true
}

// validMemberships returns the memberships of ms whose ids are valid,
// skipping (logging and counting) the others.
func (a *applier) validMemberships(ms []directory.Membership) []directory.Membership {
	out := ms[:0]
	for _, m := range ms {
		if a.valid(tableMembers, membershipRow(m)) {
			out = append(out, m)
		}
	}
	return out
}

// membershipRow is the room_members row of m.
func membershipRow(m directory.Membership) row {
	return row{cols: map[string]int{"room_id": 0, "user_id": 1}, vals: []any{m.Room, m.User}}
}

// upsert applies a row that now exists (insert, or update's after image).
func (a *applier) upsert(ctx context.Context, table string, r row) error {
	if !a.valid(table, r) {
		return nil
	}
	switch table {
	case tableUsers:
		u := directory.User{ID: r.str("id"), Name: r.str("name"), Disabled: r.truthy("disabled")}
		if err := a.dir.PutUser(ctx, u); err != nil {
			return err
		}
		if u.Disabled {
			return a.revokeUser(u.ID, ReasonDisabled)
		}
	case tableRooms:
		return a.dir.PutRoom(ctx, directory.Room{ID: r.str("id"), Name: r.str("name"), Kind: r.str("kind")})
	case tableMembers:
		return a.dir.AddMembers(ctx, []directory.Membership{{Room: r.str("room_id"), User: r.str("user_id")}})
	case tableBlocks:
		return a.dir.Block(ctx, r.str("user_id"), r.str("blocked_id"))
	}
	return nil
}

// remove applies a row that no longer exists (delete, or update's before
// image when its key changed).
func (a *applier) remove(ctx context.Context, table string, r row) error {
	if !a.valid(table, r) {
		return nil // never applied, so nothing to remove
	}
	switch table {
	case tableUsers:
		id := r.str("id")
		if err := a.dir.DeleteUser(ctx, id); err != nil {
			return err
		}
		return a.revokeUser(id, ReasonDeleted)
	case tableRooms:
		// The room goes from the directory before its members are told,
		// so a join racing with the revocation finds no room. (If the
		// publish fails, the retry finds no members left to tell; their
		// connections stay in a room nobody can send to until they close.)
		id := r.str("id")
		members, err := a.dir.Members(ctx, id)
		if err != nil {
			return err
		}
		if err := a.dir.DeleteRoom(ctx, id); err != nil {
			return err
		}
		return a.revokeMemberships(id, members, ReasonRoomDeleted)
	case tableMembers:
		room, user := r.str("room_id"), r.str("user_id")
		if err := a.dir.RemoveMember(ctx, room, user); err != nil {
			return err
		}
		return a.revokeMemberships(room, []string{user}, ReasonMemberRemoved)
	case tableBlocks:
		return a.dir.Unblock(ctx, r.str("user_id"), r.str("blocked_id"))
	}
	return nil
}

// keyOf returns a row's primary key in its table, to tell whether an
// update moved it.
func keyOf(table string, r row) string {
	switch table {
	case tableMembers:
		return r.str("room_id") + "\x00" + r.str("user_id")
	case tableBlocks:
		return r.str("user_id") + "\x00" + r.str("blocked_id")
	}
	return r.str("id")
}

// publishBatch bounds the revocations sent in one Publish call.
const publishBatch = 1000

// revokeMemberships publishes MEMBERSHIP_REVOKED events; see RevokeMemberships.
func (a *applier) revokeMemberships(room string, users []string, reason string) error {
	return RevokeMemberships(a.pub, room, users, reason)
}

// revokeUser publishes a USER_REVOKED event; see RevokeUser.
func (a *applier) revokeUser(user, reason string) error {
	return RevokeUser(a.pub, user, reason)
}

// RevokeMemberships publishes a MEMBERSHIP_REVOKED event for each user,
// after the directory no longer has the membership: presence takes the
// user's connections out of room and tells the room. Whatever changes the
// directory (this worker, or the api gateway without MySQL) calls it.
func RevokeMemberships(pub message.Publisher, room string, users []string, reason string) error {
	now := time.Now().UnixMilli()
	for start := 0; start < len(users); start += publishBatch {
		chunk := users[start:min(start+publishBatch, len(users))]
		msgs := make([]*message.Message, 0, len(chunk))
		for _, u := range chunk {
			msg, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{
				Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: u, Room: room, Reason: reason, TimeUnixMs: now,
			})
			if err != nil {
				return err
			}
			msgs = append(msgs, msg)
		}
		if err := pub.Publish(topics.SessionEvents.Name, msgs...); err != nil {
			return fmt.Errorf("binlogsync: revoke %d memberships of %s: %w", len(msgs), room, err)
		}
	}
	return nil
}

// RevokeUser publishes a USER_REVOKED event, after the directory has the
// user disabled or deleted: presence closes the user's connections with
// reason.
func RevokeUser(pub message.Publisher, user, reason string) error {
	msg, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{
		Kind: topicpb.SessionEvent_USER_REVOKED, User: user, Reason: reason, TimeUnixMs: time.Now().UnixMilli(),
	})
	if err != nil {
		return err
	}
	if err := pub.Publish(topics.SessionEvents.Name, msg); err != nil {
		return fmt.Errorf("binlogsync: revoke %s: %w", user, err)
	}
	return nil
}
