package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// This file holds the batch forms of lookups a worker makes once per
// event, for a worker handling many events at once (presence, login):
// each is one pipelined round trip, whatever the number of questions,
// and a Batch asks several kinds of question in one.

// A Batch gathers questions to the directory and asks them all in one
// pipelined round trip when Do is called. Each question's method returns
// where its answer will be: a map or a slice that Do fills in, to be
// read only after Do returned nil. A Batch is for one goroutine and one
// Do.
type Batch struct {
	ctx  context.Context
	p    redis.Pipeliner
	fill []func() error
}

// Batch returns an empty Batch whose questions are asked within ctx.
func (s *Store) Batch(ctx context.Context) *Batch {
	return &Batch{ctx: ctx, p: s.rdb.Pipeline()}
}

// Do asks the questions gathered and fills in their answers.
func (b *Batch) Do() error {
	if b.p.Len() == 0 {
		return nil
	}
	// Exec's error is the first failed command's, which may be a nil
	// answer; each answer's own error is checked as it is filled in.
	_, _ = b.p.Exec(b.ctx)
	for _, f := range b.fill {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// alone asks one question, q, as a Batch of its own: how a Store method
// is the Batch method of the same name.
func alone[T any](ctx context.Context, s *Store, q func(*Batch) T) (T, error) {
	b := s.Batch(ctx)
	out := q(b)
	if err := b.Do(); err != nil {
		var none T
		return none, err
	}
	return out, nil
}

// failed is a command's error, nil for a nil answer.
func failed(c redis.Cmder) error {
	if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

// Users returns the users among ids that exist, by id.
func (b *Batch) Users(ids ...string) map[string]User {
	out := make(map[string]User, len(ids))
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = b.p.HGetAll(b.ctx, userKey(id))
	}
	b.fill = append(b.fill, func() error {
		for i, id := range ids {
			if err := failed(cmds[i]); err != nil {
				return fmt.Errorf("directory: user %s: %w", id, err)
			}
			if m := cmds[i].Val(); len(m) > 0 {
				out[id] = User{ID: id, Name: m["name"], Disabled: m["disabled"] == "1"}
			}
		}
		return nil
	})
	return out
}

// Rooms returns the rooms among ids that exist, by id.
func (b *Batch) Rooms(ids ...string) map[string]Room {
	out := make(map[string]Room, len(ids))
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = b.p.HGetAll(b.ctx, roomKey(id))
	}
	b.fill = append(b.fill, func() error {
		for i, id := range ids {
			if err := failed(cmds[i]); err != nil {
				return fmt.Errorf("directory: room %s: %w", id, err)
			}
			if m := cmds[i].Val(); len(m) > 0 {
				out[id] = Room{ID: id, Name: m["name"], Kind: m["kind"]}
			}
		}
		return nil
	})
	return out
}

// AreMembers reports, for each of ms, whether its user is a member of its room.
func (b *Batch) AreMembers(ms []Membership) []bool {
	out := make([]bool, len(ms))
	cmds := make([]*redis.BoolCmd, len(ms))
	for i, m := range ms {
		cmds[i] = b.p.SIsMember(b.ctx, roomMembersKey(m.Room), m.User)
	}
	b.fill = append(b.fill, func() error {
		for i, c := range cmds {
			if err := failed(c); err != nil {
				return fmt.Errorf("directory: is %s in %s: %w", ms[i].User, ms[i].Room, err)
			}
			out[i] = c.Val()
		}
		return nil
	})
	return out
}

// SessionsOpen is Store.SessionOpen for each of refs.
func (b *Batch) SessionsOpen(refs []SessionRef) []bool {
	out := make([]bool, len(refs))
	cmds := make([]*redis.SliceCmd, len(refs))
	for i, r := range refs {
		cmds[i] = b.p.HMGet(b.ctx, sessionKey(sessionID(r)), "user", "closing")
	}
	b.fill = append(b.fill, func() error {
		for i, c := range cmds {
			if err := failed(c); err != nil {
				return fmt.Errorf("directory: session %s: %w", sessionID(refs[i]), err)
			}
			v := c.Val()
			out[i] = len(v) == 2 && v[0] != nil && v[1] == nil
		}
		return nil
	})
	return out
}

// LatestSeqs is Store.LatestSeqs.
func (b *Batch) LatestSeqs(conversations ...string) map[string]uint64 {
	out := make(map[string]uint64, len(conversations))
	cmds := make([]*redis.StringCmd, len(conversations))
	for i, c := range conversations {
		cmds[i] = b.p.Get(b.ctx, convSeqKey(c))
	}
	b.fill = append(b.fill, func() error {
		for i, c := range conversations {
			if err := failed(cmds[i]); err != nil {
				return fmt.Errorf("directory: latest sequence number of %s: %w", c, err)
			}
			out[c], _ = cmds[i].Uint64()
		}
		return nil
	})
	return out
}

// RoomUsers returns, for each of rooms, the users with a connection in
// it, sorted (Store.RoomUsers).
func (b *Batch) RoomUsers(rooms ...string) map[string][]string {
	out := b.fields(rooms, roomUsersKey, "users in")
	b.fill = append(b.fill, func() error {
		for _, users := range out {
			slices.Sort(users)
		}
		return nil
	})
	return out
}

// RoomComets returns, for each of rooms, the comets hosting its
// connections (Store.RoomComets).
func (b *Batch) RoomComets(rooms ...string) map[string][]string {
	return b.fields(rooms, roomCometsKey, "comets of")
}

// fields returns, for each of rooms, the fields of its hash key(room);
// what names them in an error.
func (b *Batch) fields(rooms []string, key func(string) string, what string) map[string][]string {
	out := make(map[string][]string, len(rooms))
	cmds := make([]*redis.StringSliceCmd, len(rooms))
	for i, r := range rooms {
		cmds[i] = b.p.HKeys(b.ctx, key(r))
	}
	b.fill = append(b.fill, func() error {
		for i, r := range rooms {
			if err := failed(cmds[i]); err != nil {
				return fmt.Errorf("directory: %s %s: %w", what, r, err)
			}
			out[r] = cmds[i].Val()
		}
		return nil
	})
	return out
}

// UnreadMentions is Store.UnreadMentions.
func (b *Batch) UnreadMentions(user string, read map[string]uint64, conversations ...string) map[string]uint64 {
	out := make(map[string]uint64)
	cmds := make([]*redis.IntCmd, len(conversations))
	for i, c := range conversations {
		cmds[i] = b.p.ZCount(b.ctx, userMentionsKey(user, c), "("+strconv.FormatUint(read[c], 10), "+inf")
	}
	b.fill = append(b.fill, func() error {
		for i, c := range conversations {
			if err := failed(cmds[i]); err != nil {
				return fmt.Errorf("directory: unread mentions of %s: %w", user, err)
			}
			if n := cmds[i].Val(); n > 0 {
				out[c] = uint64(n)
			}
		}
		return nil
	})
	return out
}

// Users returns the users among ids that exist, by id, in one round trip.
func (s *Store) Users(ctx context.Context, ids ...string) (map[string]User, error) {
	return alone(ctx, s, func(b *Batch) map[string]User { return b.Users(ids...) })
}

// Rooms returns the rooms among ids that exist, by id, in one round trip.
func (s *Store) Rooms(ctx context.Context, ids ...string) (map[string]Room, error) {
	return alone(ctx, s, func(b *Batch) map[string]Room { return b.Rooms(ids...) })
}

// AreMembers reports, for each of ms, whether its user is a member of
// its room, in one round trip.
func (s *Store) AreMembers(ctx context.Context, ms []Membership) ([]bool, error) {
	return alone(ctx, s, func(b *Batch) []bool { return b.AreMembers(ms) })
}

// SessionsOpen is SessionOpen for each of refs, in one round trip.
func (s *Store) SessionsOpen(ctx context.Context, refs []SessionRef) ([]bool, error) {
	return alone(ctx, s, func(b *Batch) []bool { return b.SessionsOpen(refs) })
}

// Join is a connection of User joining Room (JoinRooms).
type Join struct {
	Ref  SessionRef
	User string
	Room string
}

// JoinRooms is JoinRoom for each of joins, in order: the counts of a
// room joined several times are those after each join. It is one
// pipelined round trip whatever the number of joins and rooms: each
// session remembers its rooms, and each room takes all its joins in one
// script call (EVAL: a pipeline cannot fall back from EVALSHA, and Redis
// finds the script it compiled by the text's hash). On a Redis Cluster
// the session's rooms and the room's entry may be written in either
// order; a session closed meanwhile is found by the caller's check
// after (SessionsOpen), as on one server.
func (s *Store) JoinRooms(ctx context.Context, joins []Join) ([]RoomCount, error) {
	out := make([]RoomCount, len(joins))
	if len(joins) == 0 {
		return out, nil
	}
	byRoom := map[string][]int{}
	var rooms []string
	for i, j := range joins {
		if _, ok := byRoom[j.Room]; !ok {
			rooms = append(rooms, j.Room)
		}
		byRoom[j.Room] = append(byRoom[j.Room], i)
	}
	adds := make([]*redis.IntCmd, len(joins))
	scripts := make([]*redis.Cmd, len(rooms))
	// The pipeline's error is its first failed command's, checked below
	// command by command.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, j := range joins {
			adds[i] = p.SAdd(ctx, sessionRoomsKey(sessionID(j.Ref)), j.Room)
		}
		for k, room := range rooms {
			idx := byRoom[room]
			args := make([]any, 0, 3*len(idx))
			for _, i := range idx {
				j := joins[i]
				args = append(args, sessionID(j.Ref), j.User, j.Ref.Comet)
			}
			scripts[k] = joinScript.Eval(ctx, p, []string{roomConnsKey(room), roomUsersKey(room), roomCometsKey(room)}, args...)
		}
		return nil
	})
	for i, c := range adds {
		if err := c.Err(); err != nil {
			return nil, fmt.Errorf("directory: %s joins %s: %w", sessionID(joins[i].Ref), joins[i].Room, err)
		}
	}
	for k, room := range rooms {
		idx := byRoom[room]
		v, err := scripts[k].Result()
		if err != nil {
			return nil, fmt.Errorf("directory: %d joins of %s: %w", len(idx), room, err)
		}
		a, ok := v.([]any)
		if !ok || len(a) != 3*len(idx) {
			return nil, fmt.Errorf("directory: %d joins of %s: unexpected script result %v", len(idx), room, v)
		}
		for n, i := range idx {
			if out[i], err = roomCount(room, a[3*n:3*n+3]); err != nil {
				return nil, fmt.Errorf("directory: %s joins %s: %w", sessionID(joins[i].Ref), room, err)
			}
		}
	}
	return out, nil
}

// OpenSessionsWithin is OpenSessionWithin for each of sessions, in order
// (sessions of one user count in turn), in three round trips whatever
// their number (four with refusals; on a Redis Cluster the second is a
// transaction per user, made at once).
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
	// user's slot. A single server takes all the users' in one; a Redis
	// Cluster runs a transaction on one slot only, so it gets one per
	// user, at once.
	added := make([]*redis.IntCmd, len(sessions))
	count := make([]*redis.IntCmd, len(sessions))
	groups := [][]int{make([]int, len(sessions))}
	for i := range sessions {
		groups[0][i] = i
	}
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		groups = groupByUser(sessions)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, group := range groups {
		g.Go(func() error {
			_, err := s.rdb.TxPipelined(gctx, func(p redis.Pipeliner) error {
				for _, i := range group {
					sess := sessions[i]
					added[i] = p.HSet(gctx, userSessionsKey(sess.User), ids[i], sess.Device)
					count[i] = p.HLen(gctx, userSessionsKey(sess.User))
					p.Set(gctx, userOnlineKey(sess.User), "1", ttl)
				}
				return nil
			})
			return err
		})
	}
	if err := g.Wait(); err != nil {
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

// groupByUser returns the indexes of sessions grouped by user, each
// group in order.
func groupByUser(sessions []Session) [][]int {
	at := map[string]int{}
	var out [][]int
	for i, sess := range sessions {
		k, ok := at[sess.User]
		if !ok {
			k = len(out)
			at[sess.User] = k
			out = append(out, nil)
		}
		out[k] = append(out[k], i)
	}
	return out
}

// Closed is what CloseSessions did to one session.
type Closed struct {
	// Session is the session closed; zero if OK is false.
	Session Session
	// Rooms are the rooms it was in, with their presence after it left.
	Rooms []RoomCount
	// OK is false if the session was unknown (or closed already, or
	// named earlier in the same call).
	OK bool
}

// CloseSessions is CloseSession for each of refs, in order (sessions
// leaving one room count in turn), in four pipelined round trips
// whatever their number: read the sessions; mark them closing and read
// their rooms; leave each room (one script per room for all its
// sessions) and forget each user's sessions; delete them. A comet
// cutting thousands of a big room's members used to cost presence a
// dozen sequential round trips per connection (issue 9). Idempotent: a
// failure leaves each session's hash until the last step, and a retry
// finds everything again.
func (s *Store) CloseSessions(ctx context.Context, refs []SessionRef) ([]Closed, error) {
	out := make([]Closed, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	ids := make([]string, len(refs))
	hashes := make([]*redis.MapStringStringCmd, len(refs))
	seen := make(map[string]bool, len(refs))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			ids[i] = sessionID(r)
			if !seen[ids[i]] {
				seen[ids[i]] = true
				hashes[i] = p.HGetAll(ctx, sessionKey(ids[i]))
			}
		}
		return nil
	})
	var known []int
	for i, c := range hashes {
		if c == nil {
			continue
		}
		m, err := c.Result()
		if err != nil {
			return nil, fmt.Errorf("directory: close %s: %w", ids[i], err)
		}
		if len(m) > 0 {
			out[i] = Closed{Session: Session{Comet: refs[i].Comet, Conn: refs[i].Conn, User: m["user"], Device: m["device"]}, OK: true}
			known = append(known, i)
		}
	}
	if len(known) > 0 {
		if err := s.leaveAndForget(ctx, out, ids, known); err != nil {
			return nil, err
		}
	}
	// The session hashes go last: until then a retry finds everything
	// again. Unknown sessions are taken off the deadlines too, so that
	// the sweeper forgets them.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range known {
			p.Del(ctx, sessionRoomsKey(ids[i]), sessionKey(ids[i]))
		}
		members := make([]any, len(ids))
		for i, id := range ids {
			members[i] = id
		}
		p.ZRem(ctx, sessionsDeadlineKey, members...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: close %d sessions: %w", len(refs), err)
	}
	return out, nil
}

// leaveAndForget is CloseSessions' middle: for the sessions of out at
// known, it marks them closing and reads their rooms, then takes them
// out of the rooms and off their users, filling in out's Rooms.
func (s *Store) leaveAndForget(ctx context.Context, out []Closed, ids []string, known []int) error {
	// Mark each session closing before reading its rooms: a join racing
	// with the close either lands in the rooms read, or sees the mark
	// (SessionOpen) and takes itself back.
	joined := make([]*redis.StringSliceCmd, len(out))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range known {
			p.HSet(ctx, sessionKey(ids[i]), "closing", "1")
			joined[i] = p.SMembers(ctx, sessionRoomsKey(ids[i]))
		}
		return nil
	})
	// Each room's leaves, in the order of out, and each user's sessions.
	var rooms, users []string
	byRoom := map[string][]int{}
	byUser := map[string][]any{}
	for _, i := range known {
		rs, err := joined[i].Result()
		if err != nil {
			return fmt.Errorf("directory: close %s: %w", ids[i], err)
		}
		for _, room := range rs {
			if _, ok := byRoom[room]; !ok {
				rooms = append(rooms, room)
			}
			byRoom[room] = append(byRoom[room], i)
		}
		u := out[i].Session.User
		if _, ok := byUser[u]; !ok {
			users = append(users, u)
		}
		byUser[u] = append(byUser[u], ids[i])
	}
	leaves := make([]*redis.Cmd, len(rooms))
	forgets := make([]*redis.Cmd, len(users))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, room := range rooms {
			args := make([]any, 0, 3*len(byRoom[room]))
			for _, i := range byRoom[room] {
				args = append(args, ids[i], out[i].Session.User, out[i].Session.Comet)
			}
			leaves[k] = leaveScript.Eval(ctx, p, []string{roomConnsKey(room), roomUsersKey(room), roomCometsKey(room)}, args...)
		}
		for k, u := range users {
			forgets[k] = forgetScript.Eval(ctx, p, []string{userSessionsKey(u), userOnlineKey(u)}, byUser[u]...)
		}
		return nil
	})
	for k, u := range users {
		if err := forgets[k].Err(); err != nil {
			return fmt.Errorf("directory: close %d sessions of %s: %w", len(byUser[u]), u, err)
		}
	}
	for k, room := range rooms {
		idx := byRoom[room]
		v, err := leaves[k].Result()
		if err != nil {
			return fmt.Errorf("directory: %d sessions leave %s: %w", len(idx), room, err)
		}
		a, ok := v.([]any)
		if !ok || len(a) != 3*len(idx) {
			return fmt.Errorf("directory: %d sessions leave %s: unexpected script result %v", len(idx), room, v)
		}
		for n, i := range idx {
			rc, err := roomCount(room, a[3*n:3*n+3])
			if err != nil {
				return fmt.Errorf("directory: %s leaves %s: %w", ids[i], room, err)
			}
			out[i].Rooms = append(out[i].Rooms, rc)
		}
	}
	return nil
}
