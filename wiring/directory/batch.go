package directory

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file holds the batch forms of lookups a worker makes once per
// event, for a worker handling many events at once (presence, login):
// each is one pipelined round trip, whatever the number of questions.

// Users returns the users among ids that exist, by id.
func (s *Store) Users(ctx context.Context, ids ...string) (map[string]User, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, userKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: %d users: %w", len(ids), err)
	}
	out := make(map[string]User, len(ids))
	for i, id := range ids {
		if m := cmds[i].Val(); len(m) > 0 {
			out[id] = User{ID: id, Name: m["name"], Disabled: m["disabled"] == "1"}
		}
	}
	return out, nil
}

// Rooms returns the rooms among ids that exist, by id.
func (s *Store) Rooms(ctx context.Context, ids ...string) (map[string]Room, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, roomKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: %d rooms: %w", len(ids), err)
	}
	out := make(map[string]Room, len(ids))
	for i, id := range ids {
		if m := cmds[i].Val(); len(m) > 0 {
			out[id] = Room{ID: id, Name: m["name"], Kind: m["kind"]}
		}
	}
	return out, nil
}

// AreMembers reports, for each of ms, whether its user is a member of its room.
func (s *Store) AreMembers(ctx context.Context, ms []Membership) ([]bool, error) {
	cmds := make([]*redis.BoolCmd, len(ms))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range ms {
			cmds[i] = p.SIsMember(ctx, roomMembersKey(m.Room), m.User)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: %d memberships: %w", len(ms), err)
	}
	out := make([]bool, len(ms))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// SessionsOpen is SessionOpen for each of refs.
func (s *Store) SessionsOpen(ctx context.Context, refs []SessionRef) ([]bool, error) {
	cmds := make([]*redis.SliceCmd, len(refs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = p.HMGet(ctx, sessionKey(sessionID(r)), "user", "closing")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: %d sessions: %w", len(refs), err)
	}
	out := make([]bool, len(refs))
	for i, c := range cmds {
		v := c.Val()
		out[i] = len(v) == 2 && v[0] != nil && v[1] == nil
	}
	return out, nil
}

// Join is a connection of User joining Room (JoinRooms).
type Join struct {
	Ref  SessionRef
	User string
	Room string
}

// JoinRooms is JoinRoom for each of joins, in order: the counts of a
// room joined several times are those after each join. Each session
// remembers its rooms first, in one round trip; then each room takes
// all its joins in one script call.
func (s *Store) JoinRooms(ctx context.Context, joins []Join) ([]RoomCount, error) {
	out := make([]RoomCount, len(joins))
	if len(joins) == 0 {
		return out, nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, j := range joins {
			p.SAdd(ctx, sessionRoomsKey(sessionID(j.Ref)), j.Room)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: %d joins: %w", len(joins), err)
	}
	byRoom := map[string][]int{}
	var rooms []string
	for i, j := range joins {
		if _, ok := byRoom[j.Room]; !ok {
			rooms = append(rooms, j.Room)
		}
		byRoom[j.Room] = append(byRoom[j.Room], i)
	}
	for _, room := range rooms {
		idx := byRoom[room]
		args := make([]any, 0, 3*len(idx))
		for _, i := range idx {
			j := joins[i]
			args = append(args, sessionID(j.Ref), j.User, j.Ref.Comet)
		}
		v, err := joinScript.Run(ctx, s.rdb, []string{roomConnsKey(room), roomUsersKey(room), roomCometsKey(room)}, args...).Result()
		if err != nil {
			return nil, fmt.Errorf("directory: %d joins of %s: %w", len(idx), room, err)
		}
		a, ok := v.([]any)
		if !ok || len(a) != 3*len(idx) {
			return nil, fmt.Errorf("directory: %d joins of %s: unexpected script result %v", len(idx), room, v)
		}
		for k, i := range idx {
			if out[i], err = roomCount(room, a[3*k:3*k+3]); err != nil {
				return nil, fmt.Errorf("directory: %s joins %s: %w", sessionID(joins[i].Ref), room, err)
			}
		}
	}
	return out, nil
}

// OpenSessionsWithin is OpenSessionWithin for each of sessions, in order
// (sessions of one user count in turn), in three round trips whatever
// their number (four with refusals).
func (s *Store) OpenSessionsWithin(ctx context.Context, sessions []Session, ttl time.Duration, limit int) ([]bool, error) {
	opened := make([]bool, len(sessions))
	if limit == 0 {
		// Only repeats open: rare enough to ask one at a time.
		for i, sess := range sessions {
			ok, err := s.OpenSessionWithin(ctx, sess, ttl, limit)
			if err != nil {
				return nil, err
			}
			opened[i] = ok
		}
		return opened, nil
	}
	if len(sessions) == 0 {
		return opened, nil
	}
	ids := make([]string, len(sessions))
	for i, sess := range sessions {
		ids[i] = sessionID(SessionRef{Comet: sess.Comet, Conn: sess.Conn})
	}
	d := deadline(time.Now(), ttl)
	// Deadlines first: if a later step fails, the sweeper still cleans up.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		comets := map[string]bool{}
		for i, sess := range sessions {
			p.ZAdd(ctx, sessionsDeadlineKey, redis.Z{Score: d, Member: ids[i]})
			if !comets[sess.Comet] {
				comets[sess.Comet] = true
				p.ZAdd(ctx, cometsDeadlineKey, redis.Z{Score: d, Member: sess.Comet})
			}
			p.HSet(ctx, sessionKey(ids[i]), "user", sess.User, "device", sess.Device, "comet", sess.Comet, "conn", sess.Conn)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: open %d sessions: %w", len(sessions), err)
	}
	// Each user's session is added and counted in a transaction on the
	// user's slot (a Redis Cluster client runs one per slot).
	added := make([]*redis.IntCmd, len(sessions))
	count := make([]*redis.IntCmd, len(sessions))
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, sess := range sessions {
			added[i] = p.HSet(ctx, userSessionsKey(sess.User), ids[i], sess.Device)
			count[i] = p.HLen(ctx, userSessionsKey(sess.User))
			p.Set(ctx, userOnlineKey(sess.User), "1", ttl)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: open %d sessions: %w", len(sessions), err)
	}
	var refused []int
	for i := range sessions {
		opened[i] = limit < 0 || added[i].Val() == 0 || count[i].Val() <= int64(limit)
		if !opened[i] {
			refused = append(refused, i)
		}
	}
	if len(refused) == 0 {
		return opened, nil
	}
	// Refused: take back what was written. The online flag stays: the
	// user has at least limit other sessions.
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range refused {
			p.HDel(ctx, userSessionsKey(sessions[i].User), ids[i])
			p.Del(ctx, sessionKey(ids[i]))
			p.ZRem(ctx, sessionsDeadlineKey, ids[i])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: refuse %d sessions: %w", len(refused), err)
	}
	return opened, nil
}
