package directory

import (
	"context"
	"fmt"
	"strconv"

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
// conversation. ARGV conversation, seq. Returns {position, 1 if it moved}.
var markReadScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
  return {seq, 1}
end
return {cur, 0}
`)

// AddMention records that the message at seq of conversation mentions
// user. Idempotent.
func (s *Store) AddMention(ctx context.Context, user, conversation string, seq uint64) error {
	if err := s.rdb.ZAdd(ctx, userMentionsKey(user, conversation), redis.Z{Score: float64(seq), Member: seq}).Err(); err != nil {
		return fmt.Errorf("directory: mention of %s in %s: %w", user, conversation, err)
	}
	return nil
}

// UnreadMentions returns, per conversation, how many messages after
// user's read position mention user; conversations without are absent.
func (s *Store) UnreadMentions(ctx context.Context, user string, read map[string]uint64, conversations ...string) (map[string]uint64, error) {
	cmds := make([]*redis.IntCmd, len(conversations))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range conversations {
			cmds[i] = p.ZCount(ctx, userMentionsKey(user, c), "("+strconv.FormatUint(read[c], 10), "+inf")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("directory: unread mentions of %s: %w", user, err)
	}
	out := make(map[string]uint64)
	for i, c := range conversations {
		if n := cmds[i].Val(); n > 0 {
			out[c] = uint64(n)
		}
	}
	return out, nil
}

// MarkRead raises user's read position in conversation to seq. It
// returns the position now recorded (seq, or a higher one recorded
// before) and whether it moved. A seq of 0 reads the position.
func (s *Store) MarkRead(ctx context.Context, user, conversation string, seq uint64) (pos uint64, moved bool, err error) {
	v, err := markReadScript.Run(ctx, s.rdb, []string{userReadKey(user), userMentionsKey(user, conversation)}, conversation, seq).Result()
	if err != nil {
		return 0, false, fmt.Errorf("directory: mark %s read by %s: %w", conversation, user, err)
	}
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return 0, false, fmt.Errorf("directory: mark %s read by %s: unexpected result %v", conversation, user, v)
	}
	p, _ := a[0].(int64)
	m, _ := a[1].(int64)
	return uint64(p), m == 1, nil
}

// ReadSeqs returns user's read position in each conversation; one never
// read is absent (its position is 0).
func (s *Store) ReadSeqs(ctx context.Context, user string, conversations ...string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(conversations))
	if len(conversations) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, userReadKey(user), conversations...).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: read positions of %s: %w", user, err)
	}
	for i, c := range conversations {
		if str, ok := vals[i].(string); ok {
			var n uint64
			if _, err := fmt.Sscan(str, &n); err == nil {
				out[c] = n
			}
		}
	}
	return out, nil
}
