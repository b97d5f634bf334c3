package directory

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A user's read positions are a hash {u:<user>}:read, conversation ->
// the highest seq the user read there (acked, or sent). A position only
// grows.

func userReadKey(u string) string { return "{u:" + u + "}:read" }

// The seqs of a conversation's messages that mention a user and come
// after the user's read position are a sorted set (member and score the
// seq) {u:<user>}:mentions:<conversation>; MarkRead trims it.
func userMentionsKey(u, conversation string) string {
	return "{u:" + u + "}:mentions:" + conversation
}

// markReadScript: KEYS the user's read positions, its mentions in the
// conversation. ARGV conversation, seq, and "keep" to leave a position
// that is not recorded as it is (for the caller to look it up first).
// Returns {position, 1 if it moved, 1 if a position was recorded}.
var markReadScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old and ARGV[3] == 'keep' then
  return {0, 0, 0}
end
local cur = tonumber(old or '0')
local seq = tonumber(ARGV[2])
local had = 0
if old then had = 1 end
if seq > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
  return {seq, 1, had}
end
return {cur, 0, had}
`)

// restoreReadsScript: KEYS the user's read positions. ARGV pairs of
// conversation, seq: each position is raised to seq (recorded, when
// there was none, even at 0: the ReadStore was asked).
var restoreReadsScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
`)

// ReadStore keeps read positions durably, beside Redis: positions that
// move are saved there, and read back when Redis has none (it was lost or
// flushed). The history store (msgstore.Store) is one.
type ReadStore interface {
	// SaveRead raises user's saved position in conversation to seq.
	SaveRead(ctx context.Context, user, conversation string, seq uint64) error
	// ReadPositions returns user's saved positions; absent: none.
	ReadPositions(ctx context.Context, user string, conversations ...string) (map[string]uint64, error)
}

// convMentionedKey names the set of users the message at seq of
// conversation c mentions, kept while it may be recalled.
func convMentionedKey(c string, seq uint64) string {
	return "{c:" + c + "}:mentioned:" + strconv.FormatUint(seq, 10)
}

// AddMentions records that the message at seq of conversation mentions
// users: it counts in each one's unread mentions. The message keeps the
// list for keep, so that RecallMentions can take the mentions back while
// the message may be recalled. Idempotent.
func (s *Store) AddMentions(ctx context.Context, conversation string, seq uint64, users []string, keep time.Duration) error {
	if len(users) == 0 {
		return nil
	}
	members := make([]any, len(users))
	for i, u := range users {
		members[i] = u
	}
	mentioned := convMentionedKey(conversation, seq)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, u := range users {
			p.ZAdd(ctx, userMentionsKey(u, conversation), redis.Z{Score: float64(seq), Member: seq})
		}
		p.SAdd(ctx, mentioned, members...)
		p.Expire(ctx, mentioned, keep)
		return nil
	})
	if err != nil {
		return fmt.Errorf("directory: mentions of %s#%d: %w", conversation, seq, err)
	}
	return nil
}

// RecallMentions takes back the mentions AddMentions recorded for the
// message at seq of conversation, which was recalled: it no longer
// counts in anyone's unread mentions. After AddMentions' keep, nothing
// is taken back. Idempotent.
func (s *Store) RecallMentions(ctx context.Context, conversation string, seq uint64) error {
	mentioned := convMentionedKey(conversation, seq)
	users, err := s.rdb.SMembers(ctx, mentioned).Result()
	if err != nil {
		return fmt.Errorf("directory: mentions of %s#%d: %w", conversation, seq, err)
	}
	member := strconv.FormatUint(seq, 10)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, u := range users {
			p.ZRem(ctx, userMentionsKey(u, conversation), member)
		}
		p.Del(ctx, mentioned) // last: a retry after a failure finds the users again
		return nil
	})
	if err != nil {
		return fmt.Errorf("directory: recall mentions of %s#%d: %w", conversation, seq, err)
	}
	return nil
}

// UnreadMentions returns, per conversation, how many messages after
// user's read position mention user; conversations without are absent.
func (s *Store) UnreadMentions(ctx context.Context, user string, read map[string]uint64, conversations ...string) (map[string]uint64, error) {
	return alone(ctx, s, func(b *Batch) map[string]uint64 { return b.UnreadMentions(user, read, conversations...) })
}

// MarkRead raises user's read position in conversation to seq. It
// returns the position now recorded (seq, or a higher one recorded
// before) and whether it moved. A seq of 0 reads the position.
//
// With a ReadStore, a position Redis does not have is first read from
// it (and recorded in Redis again: Redis had lost it), and the position
// recorded is saved there before MarkRead returns (an error then says
// the save failed; Redis has the position).
func (s *Store) MarkRead(ctx context.Context, user, conversation string, seq uint64) (pos uint64, moved bool, err error) {
	if s.reads == nil {
		return s.RaiseRead(ctx, user, conversation, seq)
	}
	pos, moved, had, err := s.markRead(ctx, user, conversation, seq, true)
	if err != nil {
		return 0, false, err
	}
	if !had {
		saved, err := s.reads.ReadPositions(ctx, user, conversation)
		if err != nil {
			return 0, false, fmt.Errorf("directory: read position of %s in %s: %w", user, conversation, err)
		}
		p := saved[conversation]
		pos, _, _, err = s.markRead(ctx, user, conversation, max(seq, p), false)
		if err != nil {
			return 0, false, err
		}
		moved = pos == seq && seq > p
	}
	// Saved even when it did not move: RaiseRead (a sender's own
	// message) moves positions in Redis alone, and this Ack may be the
	// first the store hears of it.
	if seq > 0 {
		if err := s.reads.SaveRead(ctx, user, conversation, pos); err != nil {
			return pos, moved, fmt.Errorf("directory: %w", err)
		}
	}
	return pos, moved, nil
}

// RaiseRead is MarkRead in Redis only, without the ReadStore: for a
// sender's position raised by its own message, on routing's path, where
// waiting for the store (a bbolt batch commits after up to 10 ms, and
// routing takes a conversation's messages one at a time) cut a room's
// rate to ~170 msg/s. After a loss of Redis, such a position falls back
// to the user's last Ack, which was saved.
func (s *Store) RaiseRead(ctx context.Context, user, conversation string, seq uint64) (pos uint64, moved bool, err error) {
	pos, moved, _, err = s.markRead(ctx, user, conversation, seq, false)
	return pos, moved, err
}

// markRead runs markReadScript; with keep, a position Redis does not
// have is left unrecorded (had false).
func (s *Store) markRead(ctx context.Context, user, conversation string, seq uint64, keep bool) (pos uint64, moved, had bool, err error) {
	mode := ""
	if keep {
		mode = "keep"
	}
	v, err := markReadScript.Run(ctx, s.rdb, []string{userReadKey(user), userMentionsKey(user, conversation)}, conversation, seq, mode).Result()
	if err != nil {
		return 0, false, false, fmt.Errorf("directory: mark %s read by %s: %w", conversation, user, err)
	}
	a, ok := v.([]any)
	if !ok || len(a) != 3 {
		return 0, false, false, fmt.Errorf("directory: mark %s read by %s: unexpected result %v", conversation, user, v)
	}
	p, _ := a[0].(int64)
	m, _ := a[1].(int64)
	h, _ := a[2].(int64)
	return uint64(p), m == 1, h == 1, nil
}

// ReadSeqs returns user's read position in each conversation; one never
// read is absent (its position is 0). With a ReadStore, the positions
// Redis does not have are read from it and written back to Redis (0 for
// one the ReadStore does not have either, so it is asked once).
func (s *Store) ReadSeqs(ctx context.Context, user string, conversations ...string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(conversations))
	if len(conversations) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, userReadKey(user), conversations...).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: read positions of %s: %w", user, err)
	}
	return s.readSeqsFrom(ctx, user, conversations, vals)
}

// readSeqsFrom is ReadSeqs once Redis answered vals, the HMGET of
// conversations in user's read positions.
func (s *Store) readSeqsFrom(ctx context.Context, user string, conversations []string, vals []any) (map[string]uint64, error) {
	out := make(map[string]uint64, len(conversations))
	var missing []string
	for i, c := range conversations {
		str, ok := vals[i].(string)
		if !ok {
			missing = append(missing, c)
			continue
		}
		if n, err := strconv.ParseUint(str, 10, 64); err == nil && n > 0 {
			out[c] = n
		}
	}
	if s.reads == nil || len(missing) == 0 {
		return out, nil
	}
	saved, err := s.reads.ReadPositions(ctx, user, missing...)
	if err != nil {
		return nil, fmt.Errorf("directory: read positions of %s: %w", user, err)
	}
	// Recorded so that the store is not asked again. A position the
	// store does not have, the common case (a user's first login), is
	// recorded as 0 where still absent (HSETNX) without a script: the
	// embedded Redis builds an interpreter per script call (issue 9).
	var unsaved []string
	var args []any // conversation, seq pairs for restoreReadsScript
	for _, c := range missing {
		if saved[c] == 0 {
			unsaved = append(unsaved, c)
			continue
		}
		out[c] = saved[c]
		args = append(args, c, saved[c])
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range unsaved {
			p.HSetNX(ctx, userReadKey(user), c, 0)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: restore read positions of %s: %w", user, err)
	}
	if len(args) == 0 {
		return out, nil
	}
	if err := restoreReadsScript.Run(ctx, s.rdb, []string{userReadKey(user)}, args...).Err(); err != nil {
		return nil, fmt.Errorf("directory: restore read positions of %s: %w", user, err)
	}
	return out, nil
}
