package directory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// joinScript adds connections to a room. KEYS: conns, users, comets of
// the room (one slot). ARGV: triples of session id, user, comet, one per
// connection. Only a connection not yet in the room changes the counts,
// so a repeat is harmless. Returns, per triple in order, {online users,
// connections, user changed (0/1)} after it.
//
// It reads and writes the hashes a chunk of triples at a time (HMGET,
// then one HSET each) and keeps the counts in the script, rather than
// three calls per connection: each call from a script costs the embedded
// Redis two 4 KiB buffers, which a storm of 10,000 logins into one room
// paid 30,000 times (issue 9). A chunk bounds the values unpacked onto
// the interpreter's stack.
var joinScript = redis.NewScript(`
local users = redis.call('HLEN', KEYS[2])
local conns = redis.call('HLEN', KEYS[1])
local out, added, count, cometAdds, comets = {}, {}, {}, {}, {}
local n = #ARGV / 3
for first = 1, n, 100 do
  local last = math.min(n, first + 99)
  local ids, ask = {}, {}
  for t = first, last do
    ids[#ids+1] = ARGV[3*t-2]
    local u = ARGV[3*t-1]
    if count[u] == nil then
      count[u] = 0
      ask[#ask+1] = u
    end
  end
  local present = redis.call('HMGET', KEYS[1], unpack(ids))
  if #ask > 0 then
    local got = redis.call('HMGET', KEYS[2], unpack(ask))
    for i, u in ipairs(ask) do count[u] = tonumber(got[i]) or 0 end
  end
  local conn, touched, seen = {}, {}, {}
  for t = first, last do
    local id, u, c = ARGV[3*t-2], ARGV[3*t-1], ARGV[3*t]
    local changed = 0
    if not present[t-first+1] and not added[id] then
      added[id] = true
      conn[#conn+1] = id
      conn[#conn+1] = u
      conns = conns + 1
      count[u] = count[u] + 1
      if count[u] == 1 then
        changed = 1
        users = users + 1
      end
      if not seen[u] then
        seen[u] = true
        touched[#touched+1] = u
      end
      if cometAdds[c] == nil then
        cometAdds[c] = 0
        comets[#comets+1] = c
      end
      cometAdds[c] = cometAdds[c] + 1
    end
    out[#out+1] = users
    out[#out+1] = conns
    out[#out+1] = changed
  end
  if #conn > 0 then
    redis.call('HSET', KEYS[1], unpack(conn))
    local counts = {}
    for _, u in ipairs(touched) do
      counts[#counts+1] = u
      counts[#counts+1] = count[u]
    end
    redis.call('HSET', KEYS[2], unpack(counts))
  end
end
for _, c in ipairs(comets) do redis.call('HINCRBY', KEYS[3], c, cometAdds[c]) end
return out
`)

// leaveScript undoes joinScript: the same keys, triples of arguments
// (session id, user, comet). Only a connection in the room changes the
// counts, so a repeat is harmless. Returns, per triple in order, {online
// users, connections, user changed (0/1)} after it. A user whose count
// falls to zero leaves the users hash, a comet likewise.
//
// Like joinScript it works a chunk of triples at a time, with a few calls
// per chunk rather than three or four per connection: presence closes
// the sessions of a batch of CLOSED events together, thousands when a
// comet cuts a big room's slow consumers (issue 9).
var leaveScript = redis.NewScript(`
local users = redis.call('HLEN', KEYS[2])
local conns = redis.call('HLEN', KEYS[1])
local out, removed, count, listed, cometSubs, comets = {}, {}, {}, {}, {}, {}
local n = #ARGV / 3
for first = 1, n, 100 do
  local last = math.min(n, first + 99)
  local ids, ask = {}, {}
  for t = first, last do
    ids[#ids+1] = ARGV[3*t-2]
    local u = ARGV[3*t-1]
    if count[u] == nil then
      count[u] = 0
      ask[#ask+1] = u
    end
  end
  local present = redis.call('HMGET', KEYS[1], unpack(ids))
  if #ask > 0 then
    local got = redis.call('HMGET', KEYS[2], unpack(ask))
    for i, u in ipairs(ask) do
      listed[u] = got[i] ~= false
      count[u] = tonumber(got[i]) or 0
    end
  end
  local gone, touched, seen = {}, {}, {}
  for t = first, last do
    local id, u, c = ARGV[3*t-2], ARGV[3*t-1], ARGV[3*t]
    local changed = 0
    if present[t-first+1] and not removed[id] then
      removed[id] = true
      gone[#gone+1] = id
      conns = conns - 1
      count[u] = count[u] - 1
      if count[u] <= 0 then
        changed = 1
        if listed[u] then
          listed[u] = false
          users = users - 1
        end
      end
      if not seen[u] then
        seen[u] = true
        touched[#touched+1] = u
      end
      if cometSubs[c] == nil then
        cometSubs[c] = 0
        comets[#comets+1] = c
      end
      cometSubs[c] = cometSubs[c] + 1
    end
    out[#out+1] = users
    out[#out+1] = conns
    out[#out+1] = changed
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[1], unpack(gone))
    local set, del = {}, {}
    for _, u in ipairs(touched) do
      if count[u] > 0 then
        set[#set+1] = u
        set[#set+1] = count[u]
      else
        del[#del+1] = u
      end
    end
    if #set > 0 then redis.call('HSET', KEYS[2], unpack(set)) end
    if #del > 0 then redis.call('HDEL', KEYS[2], unpack(del)) end
  end
end
for _, c in ipairs(comets) do
  if redis.call('HINCRBY', KEYS[3], c, -cometSubs[c]) <= 0 then
    redis.call('HDEL', KEYS[3], c)
  end
end
return out
`)

// forgetScript removes sessions from their user and, if they were the
// user's last, the user's online flag, atomically, so that a session of
// the same user opening meanwhile keeps its flag. KEYS: sessions and
// online flag of the user (one slot). ARGV: session ids (at most the
// user's bound on sessions).
var forgetScript = redis.NewScript(`
redis.call('HDEL', KEYS[1], unpack(ARGV))
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return 0
`)

// refreshScript sets a user's online flag for ARGV[2] ms if the session
// ARGV[1] is still one of the user's: a heartbeat restores a flag that
// lapsed while the session lived, and never revives a closed one's.
// KEYS: sessions and online flag of the user (one slot). Returns 1 if set.
var refreshScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 1
end
return 0
`)

func deadline(now time.Time, ttl time.Duration) float64 {
	return float64(now.Add(ttl).UnixMilli())
}

// OpenSession records a logged-in connection, live until now+ttl unless a
// heartbeat extends it. Idempotent.
func (s *Store) OpenSession(ctx context.Context, sess Session, ttl time.Duration) error {
	_, err := s.OpenSessionWithin(ctx, sess, ttl, -1)
	return err
}

// OpenSessionWithin is OpenSession unless sess's user already has limit
// sessions recorded, across every comet (limit negative: no bound): then
// nothing is recorded and opened is false. A session already recorded is
// opened again, whatever the count.
//
// The session is added to its user's and counted in one transaction
// (MULTI/EXEC on the user's slot), then taken back if that made more than
// limit: concurrent logins of a user never take it past limit, and
// exactly min(logins, limit) of them are admitted (the first refusal
// happens with limit admitted). A transaction rather than a script: the
// embedded Redis builds a Lua interpreter per script call, which made
// logins a fifth slower (issue 9). The count includes sessions whose
// comet died until the sweeper closes them (their deadline, at most the
// TTL after the last heartbeat).
func (s *Store) OpenSessionWithin(ctx context.Context, sess Session, ttl time.Duration, limit int) (opened bool, err error) {
	if limit == 0 {
		// Only a repeat opens.
		id := sessionID(SessionRef{Comet: sess.Comet, Conn: sess.Conn})
		repeat, err := s.rdb.HExists(ctx, userSessionsKey(sess.User), id).Result()
		if err != nil {
			return false, fmt.Errorf("directory: open session %s: %w", id, err)
		}
		if !repeat {
			return false, nil
		}
		limit = -1
	}
	ok, err := s.OpenSessionsWithin(ctx, []Session{sess}, ttl, limit)
	if err != nil {
		return false, err
	}
	return ok[0], nil
}

func roomCount(room string, v any) (RoomCount, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 3 {
		return RoomCount{}, fmt.Errorf("unexpected script result %v", v)
	}
	var n [3]int64
	for i := range n {
		if n[i], ok = a[i].(int64); !ok {
			return RoomCount{}, fmt.Errorf("unexpected script result %v", v)
		}
	}
	return RoomCount{Room: room, OnlineUsers: int(n[0]), Connections: int(n[1]), UserChanged: n[2] == 1}, nil
}

// JoinRoom records that a connection of user receives room. Idempotent:
// joining twice counts once.
func (s *Store) JoinRoom(ctx context.Context, ref SessionRef, user, room string) (RoomCount, error) {
	rc, err := s.JoinRooms(ctx, []Join{{Ref: ref, User: user, Room: room}})
	if err != nil {
		return RoomCount{}, err
	}
	return rc[0], nil
}

// LeaveRoom undoes JoinRoom. Idempotent.
func (s *Store) LeaveRoom(ctx context.Context, ref SessionRef, user, room string) (RoomCount, error) {
	id := sessionID(ref)
	v, err := leaveScript.Run(ctx, s.rdb, []string{roomConnsKey(room), roomUsersKey(room), roomCometsKey(room)}, id, user, ref.Comet).Result()
	if err != nil {
		return RoomCount{}, fmt.Errorf("directory: %s leaves %s: %w", id, room, err)
	}
	rc, err := roomCount(room, v)
	if err != nil {
		return RoomCount{}, fmt.Errorf("directory: %s leaves %s: %w", id, room, err)
	}
	if err := s.rdb.SRem(ctx, sessionRoomsKey(id), room).Err(); err != nil {
		return RoomCount{}, fmt.Errorf("directory: %s leaves %s: %w", id, room, err)
	}
	return rc, nil
}

// CloseSession removes a connection and its room entries. It returns the
// session (ok false if it was unknown) and the rooms it was in, with their
// presence after the change. Idempotent.
func (s *Store) CloseSession(ctx context.Context, ref SessionRef) (sess Session, rooms []RoomCount, ok bool, err error) {
	cs, err := s.CloseSessions(ctx, []SessionRef{ref})
	if err != nil {
		return Session{}, nil, false, err
	}
	return cs[0].Session, cs[0].Rooms, cs[0].OK, nil
}

// InRoom reports whether a connection is recorded in room (joined and not
// yet left). It reads the connection's own room set, which JoinRoom writes
// first and LeaveRoom clears last, so it is true as long as any part of
// the entry may remain.
func (s *Store) InRoom(ctx context.Context, ref SessionRef, room string) (bool, error) {
	ok, err := s.rdb.SIsMember(ctx, sessionRoomsKey(sessionID(ref)), room).Result()
	if err != nil {
		return false, fmt.Errorf("directory: is %s in %s: %w", sessionID(ref), room, err)
	}
	return ok, nil
}

// SessionOpen reports whether a connection's session exists and is not
// being closed.
func (s *Store) SessionOpen(ctx context.Context, ref SessionRef) (bool, error) {
	vals, err := s.rdb.HMGet(ctx, sessionKey(sessionID(ref)), "user", "closing").Result()
	if err != nil {
		return false, fmt.Errorf("directory: session %s: %w", sessionID(ref), err)
	}
	return vals[0] != nil && vals[1] == nil, nil
}

// Heartbeat extends the deadline of the comet and of each live session to
// now+ttl and refreshes the online flags of the sessions' users, in one
// pipelined round trip. It never resurrects a session that is already
// closed: its deadline is only updated if present (ZADD XX), and a user's
// flag is only extended while it exists (SET XX), which it does while the
// user has a session recorded (forgetScript deletes it with the last).
// A flag that lapsed while its session lived (heartbeats came late) is
// restored by a second round trip, with refreshScript, for those users
// only: a script per session at every beat was most of the embedded
// Redis's work with 10,000 sessions (issue 9).
func (s *Store) Heartbeat(ctx context.Context, comet string, live []LiveSession, ttl time.Duration) error {
	d := deadline(time.Now(), ttl)
	ms := max(ttl.Milliseconds(), 1)
	extended := make([]*redis.BoolCmd, len(live))
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, cometsDeadlineKey, redis.Z{Score: d, Member: comet})
		for i, l := range live {
			p.ZAddXX(ctx, sessionsDeadlineKey, redis.Z{Score: d, Member: sessionID(SessionRef{Comet: comet, Conn: l.Conn})})
			extended[i] = p.SetXX(ctx, userOnlineKey(l.User), "1", time.Duration(ms)*time.Millisecond)
		}
		return nil
	})
	// SET XX of a missing flag answers nil, which is not a failure; the
	// pipeline's error is the first command's that failed.
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil && !errors.Is(cerr, redis.Nil) {
			return fmt.Errorf("directory: heartbeat of %s: %w", comet, cerr)
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("directory: heartbeat of %s: %w", comet, err)
	}
	var lapsed []LiveSession
	for i, c := range extended {
		if ok, err := c.Result(); errors.Is(err, redis.Nil) || err == nil && !ok {
			lapsed = append(lapsed, live[i])
		}
	}
	if len(lapsed) == 0 {
		return nil
	}
	restore := func() error {
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, l := range lapsed {
				id := sessionID(SessionRef{Comet: comet, Conn: l.Conn})
				refreshScript.EvalSha(ctx, p, []string{userSessionsKey(l.User), userOnlineKey(l.User)}, id, ms)
			}
			return nil
		})
		for _, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				return errNoScript
			}
		}
		return err
	}
	err = restore()
	if errors.Is(err, errNoScript) {
		// First use on this server (or its script cache was flushed):
		// load the script and restore again; every step is idempotent.
		if err = refreshScript.Load(ctx, s.rdb).Err(); err == nil {
			err = restore()
		}
	}
	if err != nil {
		return fmt.Errorf("directory: heartbeat of %s: restore online flags: %w", comet, err)
	}
	return nil
}

var errNoScript = errors.New("script not loaded")

func parseRef(id string) SessionRef {
	comet, conn, _ := strings.Cut(id, "/")
	return SessionRef{Comet: comet, Conn: conn}
}

// ExpiredSessions returns up to limit sessions whose deadline is before now.
func (s *Store) ExpiredSessions(ctx context.Context, now time.Time, limit int) ([]SessionRef, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, sessionsDeadlineKey, &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: expired sessions: %w", err)
	}
	refs := make([]SessionRef, len(ids))
	for i, id := range ids {
		refs[i] = parseRef(id)
	}
	return refs, nil
}

// UserSessions returns the live connections of user.
func (s *Store) UserSessions(ctx context.Context, user string) ([]SessionRef, error) {
	ids, err := s.rdb.HKeys(ctx, userSessionsKey(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: sessions of %s: %w", user, err)
	}
	refs := make([]SessionRef, len(ids))
	for i, id := range ids {
		refs[i] = parseRef(id)
	}
	return refs, nil
}

// Online reports, for each user, whether it has a live connection. It reads
// the user's online flag: set when a session opens, kept from expiring by
// the heartbeats of the user's sessions and deleted when the last one
// closes. A user whose comet died stays online until the flag's TTL ends.
func (s *Store) Online(ctx context.Context, users ...string) (map[string]bool, error) {
	if _, cluster := s.rdb.(*redis.ClusterClient); !cluster && len(users) > 1 {
		// One server: one MGET, not a command per user (routing asks
		// this for every member of a small room at every message batch).
		keys := make([]string, len(users))
		for i, u := range users {
			keys[i] = userOnlineKey(u)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("directory: online: %w", err)
		}
		out := make(map[string]bool, len(users))
		for i, u := range users {
			out[u] = out[u] || vals[i] != nil
		}
		return out, nil
	}
	// On a Cluster each user's flag is in a slot of its own.
	cmds := make([]*redis.IntCmd, len(users))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, u := range users {
			cmds[i] = p.Exists(ctx, userOnlineKey(u))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: online: %w", err)
	}
	out := make(map[string]bool, len(users))
	for i, u := range users {
		out[u] = cmds[i].Val() > 0
	}
	return out, nil
}

// RoomComets returns the comets hosting at least one connection in room.
func (s *Store) RoomComets(ctx context.Context, room string) ([]string, error) {
	out, err := alone(ctx, s, func(b *Batch) map[string][]string { return b.RoomComets(room) })
	return out[room], err
}

// RoomUsers returns the distinct users with a connection in room, sorted.
func (s *Store) RoomUsers(ctx context.Context, room string) ([]string, error) {
	out, err := alone(ctx, s, func(b *Batch) map[string][]string { return b.RoomUsers(room) })
	return out[room], err
}

// RoomOnline returns the number of distinct users and of connections in room.
func (s *Store) RoomOnline(ctx context.Context, room string) (users, conns int, err error) {
	var u, c *redis.IntCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		u = p.HLen(ctx, roomUsersKey(room))
		c = p.HLen(ctx, roomConnsKey(room))
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("directory: online in %s: %w", room, err)
	}
	return int(u.Val()), int(c.Val()), nil
}

// LiveComets returns the comets whose heartbeat deadline has not passed.
func (s *Store) LiveComets(ctx context.Context, now time.Time) ([]string, error) {
	comets, err := s.rdb.ZRangeByScore(ctx, cometsDeadlineKey, &redis.ZRangeBy{
		Min: strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: live comets: %w", err)
	}
	return comets, nil
}
