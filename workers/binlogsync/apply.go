package binlogsync

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
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

// Directory is the part of the Redis model the worker writes, and the
// presence it changes when the system of record takes something away.
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
	UserSessions(ctx context.Context, user string) ([]directory.SessionRef, error)
	LeaveRoom(ctx context.Context, ref directory.SessionRef, user, room string) (directory.RoomCount, error)
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

// applier turns row changes into directory changes. Every change is
// idempotent, so applying an event twice leaves the same state.
type applier struct {
	dir Directory
	pub message.Publisher
}

// upsert applies a row that now exists (insert, or update's after image).
func (a *applier) upsert(ctx context.Context, table string, r row) error {
	switch table {
	case tableUsers:
		u := directory.User{ID: r.str("id"), Name: r.str("name"), Disabled: r.truthy("disabled")}
		if err := a.dir.PutUser(ctx, u); err != nil {
			return err
		}
		if u.Disabled {
			return a.kick(ctx, u.ID, "account disabled")
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
	switch table {
	case tableUsers:
		id := r.str("id")
		if err := a.kick(ctx, id, "account deleted"); err != nil {
			return err
		}
		return a.dir.DeleteUser(ctx, id)
	case tableRooms:
		id := r.str("id")
		members, err := a.dir.Members(ctx, id)
		if err != nil {
			return err
		}
		if err := a.dir.DeleteRoom(ctx, id); err != nil {
			return err
		}
		for _, u := range members {
			if err := a.evict(ctx, u, id); err != nil {
				return err
			}
		}
	case tableMembers:
		room, user := r.str("room_id"), r.str("user_id")
		if err := a.dir.RemoveMember(ctx, room, user); err != nil {
			return err
		}
		return a.evict(ctx, user, room)
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

// evict takes user's live connections out of room: presence forgets
// them there, and their comets stop delivering the room to them.
func (a *applier) evict(ctx context.Context, user, room string) error {
	refs, err := a.dir.UserSessions(ctx, user)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if _, err := a.dir.LeaveRoom(ctx, ref, user, room); err != nil {
			return err
		}
		msg, err := topics.Deliveries.Encode(&topicpb.Delivery{
			Conns:   []string{ref.Conn},
			Control: &topicpb.Control{Leave: room},
			Frame:   &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Left{Left: &clientpb.Left{Room: room}}},
		})
		if err != nil {
			return err
		}
		if err := a.pub.Publish(topics.Delivery(ref.Comet), msg); err != nil {
			return fmt.Errorf("binlogsync: evict %s from %s: %w", user, room, err)
		}
	}
	return nil
}

// kick closes every live connection of user.
func (a *applier) kick(ctx context.Context, user, reason string) error {
	refs, err := a.dir.UserSessions(ctx, user)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, ref := range refs {
		if seen[ref.Comet] {
			continue
		}
		seen[ref.Comet] = true
		msg, err := topics.Deliveries.Encode(&topicpb.Delivery{Users: []string{user}, Control: &topicpb.Control{Close: reason}})
		if err != nil {
			return err
		}
		if err := a.pub.Publish(topics.Delivery(ref.Comet), msg); err != nil {
			return fmt.Errorf("binlogsync: close sessions of %s: %w", user, err)
		}
	}
	return nil
}
