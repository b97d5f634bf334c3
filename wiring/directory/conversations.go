package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/topics"
)

// A user's conversation list is every room the user is a member of,
// sorted by room id, then every 1:1 conversation the user has had, the
// most recent first. It is read a page at a time (ConversationPage): the
// first page goes in the LoginResult, the rest to the client's
// Conversations requests.
//
// The 1:1 conversations of a user are a sorted set {u:<user>}:convs,
// conversation -> time of its last message (unix ms), so recency costs
// nothing at read time. Before recency was kept the key was a plain set;
// such a set is still read (as the sorted set it will become: its
// conversations sorted by id and scored 1, 2, 3..., older than any real
// time), and the user's next 1:1 message converts it in place.

// MaxConversationPage is the most conversations a page of a user's list
// may carry.
const MaxConversationPage = 1000

// MaxConversationBytes bounds the conversation states of one page, counted
// with StateSize, so that the frame carrying them (a LoginResult or a
// ConversationsResult, inside its Delivery) stays far below the broker's
// message size limit of 1 MiB.
const MaxConversationBytes = 256 << 10

// StateSize is what one conversation's state counts against a page's
// byte budget: the length of its id plus 48 bytes, more than protobuf adds
// to it in a repeated ConversationState (five tags, two lengths, four
// numbers of up to 10 bytes each) for any id under 2 MiB.
func StateSize(conversation string) int { return len(conversation) + 56 }

// ErrBadCursor is returned for a conversation cursor this package did not
// produce.
var ErrBadCursor = errors.New("directory: bad conversation cursor")

// ConversationState is a conversation with its latest sequence number
// and the user's read position in it.
type ConversationState struct {
	Conversation string
	LatestSeq    uint64
	// ReadSeq is the user's read position (MarkRead); Unread the seqs
	// after it, LatestSeq - ReadSeq; UnreadMentions the messages after
	// it that mention the user (AddMention).
	ReadSeq, Unread, UnreadMentions uint64
}

// ConversationPage is one page of a user's conversation list.
type ConversationPage struct {
	States []ConversationState
	// More is true when the list goes on after States.
	More bool
	// Next is the cursor of the rest of the list; empty unless More.
	Next string
}

func userConvsKey(u string) string { return "{u:" + u + "}:convs" }

// addConversationScript: KEYS the user's 1:1 conversations. ARGV time
// (unix ms), conversation. Converts a set of the earlier model in place,
// then raises the conversation's time (GT: a late call never moves a
// conversation back).
var addConversationScript = redis.NewScript(`
if redis.call('TYPE', KEYS[1])['ok'] == 'set' then
  local old = redis.call('SMEMBERS', KEYS[1])
  table.sort(old)
  redis.call('DEL', KEYS[1])
  for i, c in ipairs(old) do redis.call('ZADD', KEYS[1], i, c) end
end
return redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
`)

// AddConversation records that user takes part in a 1:1 conversation
// whose latest message is being sent now. Idempotent.
func (s *Store) AddConversation(ctx context.Context, user, conversation string) error {
	return s.AddConversationAt(ctx, user, conversation, time.Now())
}

// AddConversationAt records that user takes part in a 1:1 conversation
// whose latest message was sent at t; a conversation already recorded
// with a later time keeps it. Idempotent.
func (s *Store) AddConversationAt(ctx context.Context, user, conversation string, t time.Time) error {
	err := addConversationScript.Run(ctx, s.rdb, []string{userConvsKey(user)}, t.UnixMilli(), conversation).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("directory: add conversation %s of %s: %w", conversation, user, err)
	}
	return nil
}

// Conversations returns the 1:1 conversations user takes part in, the
// most recent first.
func (s *Store) Conversations(ctx context.Context, user string) ([]string, error) {
	c, err := s.rdb.ZRevRange(ctx, userConvsKey(user), 0, -1).Result()
	if isWrongType(err) {
		legacy, err := s.legacyDirect(ctx, user)
		if err != nil {
			return nil, err
		}
		c = make([]string, len(legacy))
		for i, p := range legacy {
			c[i] = p.conv
		}
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("directory: conversations of %s: %w", user, err)
	}
	return c, nil
}

// ConversationPage returns the page of user's conversation list that
// follows cursor (empty: the list's beginning) with their latest sequence
// numbers: at most limit conversations, and no more than maxBytes of
// them counted with StateSize (but always one, if any follow). limit and
// maxBytes must be positive. A cursor stays valid however the list
// changes: a room is found by its id, a 1:1 conversation by its time and
// id; a conversation that gets a message while the list is being paged
// moves to the front, before the cursor, and is not listed again.
func (s *Store) ConversationPage(ctx context.Context, user, cursor string, limit, maxBytes int) (ConversationPage, error) {
	if limit <= 0 || maxBytes <= 0 {
		return ConversationPage{}, fmt.Errorf("directory: conversation page of %s: limit %d and byte budget %d must be positive", user, limit, maxBytes)
	}
	pos, err := parseCursor(cursor)
	if err != nil {
		return ConversationPage{}, err
	}
	type entry struct{ conv, cursor string }
	var entries []entry
	more := false
	if !pos.direct {
		rooms, err := s.RoomsOf(ctx, user)
		if err != nil {
			return ConversationPage{}, err
		}
		slices.Sort(rooms)
		if pos.room != "" {
			i, found := slices.BinarySearch(rooms, pos.room)
			if found {
				i++
			}
			rooms = rooms[i:]
		}
		if len(rooms) > limit {
			rooms, more = rooms[:limit], true
		}
		for _, r := range rooms {
			entries = append(entries, entry{topics.RoomConversation(r), "r:" + r})
		}
	}
	if !more {
		var after *directPos
		if pos.direct {
			after = &pos.after
		}
		direct, dmore, err := s.directAfter(ctx, user, after, limit-len(entries))
		if err != nil {
			return ConversationPage{}, err
		}
		for _, p := range direct {
			entries = append(entries, entry{p.conv, p.cursor()})
		}
		more = dmore
	}
	convs := make([]string, len(entries))
	for i, e := range entries {
		convs[i] = e.conv
	}
	var page ConversationPage
	if len(convs) == 0 {
		return page, nil
	}
	latest, err := s.LatestSeqs(ctx, convs...)
	if err != nil {
		return ConversationPage{}, err
	}
	read, err := s.ReadSeqs(ctx, user, convs...)
	if err != nil {
		return ConversationPage{}, err
	}
	mentions, err := s.UnreadMentions(ctx, user, read, convs...)
	if err != nil {
		return ConversationPage{}, err
	}
	total := 0
	for i, e := range entries {
		size := StateSize(e.conv)
		if i > 0 && total+size > maxBytes {
			more = true
			break
		}
		total += size
		st := ConversationState{Conversation: e.conv, LatestSeq: latest[e.conv], ReadSeq: read[e.conv], UnreadMentions: mentions[e.conv]}
		if st.LatestSeq > st.ReadSeq {
			st.Unread = st.LatestSeq - st.ReadSeq
		}
		page.States = append(page.States, st)
	}
	if more && len(page.States) > 0 {
		page.More, page.Next = true, entries[len(page.States)-1].cursor
	}
	return page, nil
}

// directPos is the place of a 1:1 conversation in the list: by time of
// last message, newest first, then by id, greatest first (the order of
// ZREVRANGE).
type directPos struct {
	score int64
	conv  string
}

func (p directPos) cursor() string { return "d:" + strconv.FormatInt(p.score, 10) + ":" + p.conv }

// before reports whether p comes before q in the list.
func (p directPos) before(q directPos) bool {
	return p.score > q.score || p.score == q.score && p.conv > q.conv
}

// listPos is a decoded cursor: the start of the list (zero), after a room,
// or after a 1:1 conversation.
type listPos struct {
	room   string
	direct bool
	after  directPos
}

func parseCursor(c string) (listPos, error) {
	if c == "" {
		return listPos{}, nil
	}
	if room, ok := strings.CutPrefix(c, "r:"); ok && room != "" {
		return listPos{room: room}, nil
	}
	if rest, ok := strings.CutPrefix(c, "d:"); ok {
		score, conv, found := strings.Cut(rest, ":")
		n, err := strconv.ParseInt(score, 10, 64)
		if found && err == nil && conv != "" {
			return listPos{direct: true, after: directPos{score: n, conv: conv}}, nil
		}
	}
	return listPos{}, fmt.Errorf("%w %q", ErrBadCursor, c)
}

// directAfter returns at most n of user's 1:1 conversations following
// after (nil: from the most recent), and whether more follow them.
func (s *Store) directAfter(ctx context.Context, user string, after *directPos, n int) ([]directPos, bool, error) {
	key := userConvsKey(user)
	var zs []redis.Z
	var err error
	if after == nil {
		zs, err = s.rdb.ZRevRangeWithScores(ctx, key, 0, int64(n)).Result()
	} else {
		// The conversations tied with the cursor's time (a handful at
		// most), then those strictly older, in one round trip.
		score := strconv.FormatInt(after.score, 10)
		var ties, older *redis.ZSliceCmd
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			ties = p.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: score, Min: score})
			older = p.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: "(" + score, Min: "-inf", Count: int64(n) + 1})
			return nil
		})
		if err == nil {
			for _, z := range ties.Val() {
				if m, _ := z.Member.(string); m < after.conv {
					zs = append(zs, z)
				}
			}
			zs = append(zs, older.Val()...)
		}
	}
	var out []directPos
	switch {
	case isWrongType(err):
		legacy, err := s.legacyDirect(ctx, user)
		if err != nil {
			return nil, false, err
		}
		for _, p := range legacy {
			if after == nil || after.before(p) {
				out = append(out, p)
			}
		}
	case err != nil:
		return nil, false, fmt.Errorf("directory: conversations of %s: %w", user, err)
	default:
		out = make([]directPos, 0, len(zs))
		for _, z := range zs {
			m, _ := z.Member.(string)
			out = append(out, directPos{score: int64(z.Score), conv: m})
		}
	}
	if len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// legacyDirect reads a user's 1:1 conversations stored as a plain set
// (before recency was kept) in list order, scored as AddConversation
// will score them when it converts the set.
func (s *Store) legacyDirect(ctx context.Context, user string) ([]directPos, error) {
	m, err := s.rdb.SMembers(ctx, userConvsKey(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: conversations of %s: %w", user, err)
	}
	slices.Sort(m)
	out := make([]directPos, len(m))
	for i, c := range m {
		out[len(m)-1-i] = directPos{score: int64(i + 1), conv: c}
	}
	return out, nil
}

func isWrongType(err error) bool { return err != nil && redis.HasErrorPrefix(err, "WRONGTYPE") }
