package directory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// DedupTTL is how long a client message id is remembered.
const DedupTTL = 24 * time.Hour

// The dedup key holds "<seq> <id> <unix ms>", and " routed" after it once
// MarkRouted recorded that the message was routed (values written before
// times were recorded hold "<seq> <id>").
const routedFlag = "routed"

// assignScript assigns a batch of messages of one conversation. KEYS:
// the seq counter, its slot's "restored" mark (slots.go), then one dedup
// key per message (one slot). ARGV: ttl seconds, unix ms, "1" to require
// the mark, then per message its new id and "1" to de-duplicate. Returns,
// per message, its dedup value and dup (0/1); without the mark when it is
// required, the error NOTRESTORED and nothing changed. It reads the dedup
// keys with one MGET and takes the batch's seqs with one INCRBY, so it
// makes n+2 calls for n messages (n+3 with the mark), not 3n: each call
// from a script costs the embedded Redis two buffers of its own, and a
// real one a command's dispatch.
var assignScript = redis.NewScript(`
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('NOTRESTORED sequence counters of this slot are not known restored')
end
local n = #KEYS - 2
local function key(m) return KEYS[m+2] end
local function id(m) return ARGV[2*m+2] end
local function dedup(m) return ARGV[2*m+3] == '1' end
local known = {}
local check = {}
for m = 1, n do
  if dedup(m) then check[#check+1] = key(m) end
end
for j = 1, #check, 256 do
  local part = {}
  for k = j, math.min(j+255, #check) do part[#part+1] = check[k] end
  local got = redis.call('MGET', unpack(part))
  for k = 1, #part do
    if got[k] then known[part[k]] = got[k] end
  end
end
local new, seen = 0, {}
for m = 1, n do
  if not dedup(m) then
    new = new + 1
  elseif not known[key(m)] and not seen[key(m)] then
    seen[key(m)] = true
    new = new + 1
  end
end
local seq = 0
if new > 0 then seq = redis.call('INCRBY', KEYS[1], new) - new end
local out = {}
for m = 1, n do
  local v = dedup(m) and known[key(m)]
  if v then
    out[#out+1] = v
    out[#out+1] = 1
  else
    seq = seq + 1
    v = seq .. ' ' .. id(m) .. ' ' .. ARGV[2]
    if dedup(m) then
      known[key(m)] = v
      redis.call('SET', key(m), v, 'EX', ARGV[1])
    end
    out[#out+1] = v
    out[#out+1] = 0
  end
end
return out
`)

// ErrNotRestored is AssignRestored's error when the conversation's
// counter is not known to be at or above its stored messages' seqs: its
// slot's mark is missing (a Redis that lost those keys, or a directory
// never restored).
var ErrNotRestored = errors.New("directory: sequence counters not known restored")

// Assign gives a message its id and sequence number in conversation,
// atomically: a first (sender, clientMsgID) increments the conversation's
// counter and stores id (from newID), seq and the current time for
// DedupTTL; a repeat returns the stored ones with Dup set, and Routed set
// once MarkRouted was called for them. An empty clientMsgID is never
// de-duplicated.
func (s *Store) Assign(ctx context.Context, conversation, sender, clientMsgID string, newID func() string) (Assigned, error) {
	as, err := s.AssignMany(ctx, conversation, []Submission{{Sender: sender, ClientMsgID: clientMsgID}}, newID)
	if err != nil {
		return Assigned{}, err
	}
	return as[0], nil
}

// Submission names a message to assign: its sender (or the name its
// sender's edits are de-duplicated under) and its client message id.
type Submission struct {
	Sender, ClientMsgID string
}

// AssignMany assigns subs, messages of conversation in the order given,
// as Assign does each, in one atomic round trip: the new ones get
// consecutive seqs. A repeat within subs gets its first one's, with Dup.
func (s *Store) AssignMany(ctx context.Context, conversation string, subs []Submission, newID func() string) ([]Assigned, error) {
	return s.assign(ctx, conversation, subs, newID, false)
}

// AssignRestored is AssignMany only while the conversation's counter is
// known restored (RestoreSequences marked its hash slot), checked in the
// same atomic step: ErrNotRestored otherwise, nothing assigned. Routing
// assigns so, so that no seq is issued from a counter Redis lost, even
// by a process that remembers none it issued.
func (s *Store) AssignRestored(ctx context.Context, conversation string, subs []Submission, newID func() string) ([]Assigned, error) {
	return s.assign(ctx, conversation, subs, newID, true)
}

func (s *Store) assign(ctx context.Context, conversation string, subs []Submission, newID func() string, restored bool) ([]Assigned, error) {
	if len(subs) == 0 {
		return nil, nil
	}
	keys := make([]string, 2, 2+len(subs))
	keys[0], keys[1] = convSeqKey(conversation), RestoredMarkKey(conversation)
	args := make([]any, 3, 3+2*len(subs))
	args[0], args[1], args[2] = int(DedupTTL.Seconds()), time.Now().UnixMilli(), "0"
	if restored {
		args[2] = "1"
	}
	for _, sub := range subs {
		keys = append(keys, convDedupKey(conversation, sub.Sender, sub.ClientMsgID))
		dedup := "0"
		if sub.ClientMsgID != "" {
			dedup = "1"
		}
		args = append(args, newID(), dedup)
	}
	v, err := assignScript.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOTRESTORED") {
			err = ErrNotRestored
		}
		return nil, fmt.Errorf("directory: assign %d in %s: %w", len(subs), conversation, err)
	}
	a, ok := v.([]any)
	if !ok || len(a) != 2*len(subs) {
		return nil, fmt.Errorf("directory: assign %d in %s: unexpected result %v", len(subs), conversation, v)
	}
	out := make([]Assigned, len(subs))
	for i := range subs {
		val, _ := a[2*i].(string)
		dup, _ := a[2*i+1].(int64)
		as, ok := parseAssigned(val)
		if !ok {
			return nil, fmt.Errorf("directory: assign in %s: bad stored value %q", conversation, val)
		}
		as.Dup = dup == 1
		out[i] = as
	}
	return out, nil
}

// parseAssigned parses a dedup value.
func parseAssigned(val string) (Assigned, bool) {
	f := strings.Fields(val)
	if len(f) < 2 || len(f) > 4 {
		return Assigned{}, false
	}
	seq, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return Assigned{}, false
	}
	a := Assigned{ID: f[1], Seq: seq}
	if len(f) >= 3 {
		ms, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return Assigned{}, false
		}
		if ms != 0 {
			a.Time = time.UnixMilli(ms)
		}
	}
	if len(f) == 4 {
		if f[3] != routedFlag {
			return Assigned{}, false
		}
		a.Routed = true
	}
	return a, true
}

// MarkRouted records that the message Assign gave a (for sender's
// clientMsgID in conversation) was routed to the end, so that a repeat of
// it is answered without being routed again: Assign reports the repeat
// with Routed set. It is one write to the dedup key, which keeps its
// expiry; a key that expired stays gone. An empty clientMsgID, never
// de-duplicated, has nothing to mark.
func (s *Store) MarkRouted(ctx context.Context, conversation, sender, clientMsgID string, a Assigned) error {
	return s.MarkRoutedMany(ctx, conversation, []Submission{{Sender: sender, ClientMsgID: clientMsgID}}, []Assigned{a})
}

// MarkRoutedMany marks each of subs routed as MarkRouted does, with the
// Assigned of the same index, in one round trip.
func (s *Store) MarkRoutedMany(ctx context.Context, conversation string, subs []Submission, as []Assigned) error {
	if len(subs) != len(as) {
		return fmt.Errorf("directory: mark routed: %d submissions, %d assignments", len(subs), len(as))
	}
	var cmds []*redis.StatusCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sub := range subs {
			if sub.ClientMsgID == "" {
				continue
			}
			var ms int64
			if !as[i].Time.IsZero() {
				ms = as[i].Time.UnixMilli()
			}
			val := fmt.Sprintf("%d %s %d %s", as[i].Seq, as[i].ID, ms, routedFlag)
			cmds = append(cmds, p.SetArgs(ctx, convDedupKey(conversation, sub.Sender, sub.ClientMsgID), val, redis.SetArgs{Mode: "XX", KeepTTL: true}))
		}
		return nil
	})
	// XX answers nil for a message no longer remembered: nothing to mark.
	for _, c := range cmds {
		if c.Err() != nil && c.Err() != redis.Nil {
			err = c.Err()
			break
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("directory: mark %d in %s routed: %w", len(subs), conversation, err)
	}
	return nil
}

// LatestSeqs returns the latest sequence number of each conversation (0
// if none), in one round trip.
func (s *Store) LatestSeqs(ctx context.Context, conversations ...string) (map[string]uint64, error) {
	return alone(ctx, s, func(b *Batch) map[string]uint64 { return b.LatestSeqs(conversations...) })
}

var raiseScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
`)

// RaiseSeq makes sure the conversation's next sequence number comes after
// seq, for a directory rebuilt while history was kept.
func (s *Store) RaiseSeq(ctx context.Context, conversation string, seq uint64) error {
	if err := raiseScript.Run(ctx, s.rdb, []string{convSeqKey(conversation)}, seq).Err(); err != nil && err != redis.Nil {
		return fmt.Errorf("directory: raise sequence of %s: %w", conversation, err)
	}
	return nil
}

// sequencesRestoredKey marks a directory whose sequence counters are known
// to be at or above every stored message's seq. Redis losing its data
// loses the mark with the counters; see SequencesRestored.
const sequencesRestoredKey = "seq:restored"

// SequencesRestored reports whether the sequence counters are known to be
// at or above the stored messages' seqs: set by MarkSequencesRestored
// after RestoreSequences (or on a directory that never had messages), and
// gone when Redis loses its data. Routing issues no seq while it is not.
func (s *Store) SequencesRestored(ctx context.Context) (bool, error) {
	n, err := s.rdb.Exists(ctx, sequencesRestoredKey).Result()
	if err != nil {
		return false, fmt.Errorf("directory: sequences restored: %w", err)
	}
	return n == 1, nil
}

// RestoreSequences raises each conversation's counter to at least its
// latest stored seq (from the message store) and then marks the
// directory restored. Counters already higher are left as they are, so
// running it again, or concurrently, is harmless.
func (s *Store) RestoreSequences(ctx context.Context, latest map[string]uint64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for conv, seq := range latest {
		g.Go(func() error { return s.RaiseSeq(gctx, conv, seq) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Every slot's mark, then the directory's: a slot that loses its
	// keys loses its mark with its counters (slots.go).
	now := time.Now().UTC().Format(time.RFC3339)
	for first := 0; first < slotCount; first += markBatch {
		p := s.rdb.Pipeline()
		for slot := first; slot < min(first+markBatch, slotCount); slot++ {
			p.Set(ctx, restoredSlotKey(uint16(slot)), now, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			return fmt.Errorf("directory: mark sequences restored: %w", err)
		}
	}
	if err := s.rdb.Set(ctx, sequencesRestoredKey, now, 0).Err(); err != nil {
		return fmt.Errorf("directory: mark sequences restored: %w", err)
	}
	return nil
}

// markBatch is how many slot marks one pipeline sets.
const markBatch = 1024

// ForgetSequencesRestored removes the mark, so that the next guard pass
// restores the counters: for a seq found issued twice.
func (s *Store) ForgetSequencesRestored(ctx context.Context) error {
	if err := s.rdb.Del(ctx, sequencesRestoredKey).Err(); err != nil {
		return fmt.Errorf("directory: forget sequences restored: %w", err)
	}
	return nil
}

// Unassign forgets the seq and id Assign recorded for (sender,
// clientMsgID) in conversation, so that the next Assign of it issues new
// ones: for an assignment found to reuse a seq. Without a clientMsgID
// there is nothing to forget.
func (s *Store) Unassign(ctx context.Context, conversation, sender, clientMsgID string) error {
	if clientMsgID == "" {
		return nil
	}
	if err := s.rdb.Del(ctx, convDedupKey(conversation, sender, clientMsgID)).Err(); err != nil {
		return fmt.Errorf("directory: unassign in %s: %w", conversation, err)
	}
	return nil
}

// Lookup returns what Assign gave sender's clientMsgID in conversation,
// if it still remembers it (for DedupTTL): ok is false otherwise. Dup is
// not set; Routed is.
func (s *Store) Lookup(ctx context.Context, conversation, sender, clientMsgID string) (a Assigned, ok bool, err error) {
	val, err := s.rdb.Get(ctx, convDedupKey(conversation, sender, clientMsgID)).Result()
	if err == redis.Nil {
		return Assigned{}, false, nil
	}
	if err != nil {
		return Assigned{}, false, fmt.Errorf("directory: look up %s in %s: %w", clientMsgID, conversation, err)
	}
	a, ok = parseAssigned(val)
	if !ok {
		return Assigned{}, false, fmt.Errorf("directory: look up %s in %s: bad stored value %q", clientMsgID, conversation, val)
	}
	return a, true, nil
}
