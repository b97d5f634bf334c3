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
	var entries []convEntry
	more := false
	if !pos.direct {
		rooms, err := s.RoomsOf(ctx, user)
		if err != nil {
			return ConversationPage{}, err
		}
		entries, more = roomEntries(rooms, pos.room, limit)
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
		entries, more = appendDirect(entries, direct), dmore
	}
	if len(entries) == 0 {
		return ConversationPage{}, nil
	}
	latest, read, mentions, err := s.positions(ctx, []string{user}, [][]convEntry{entries})
	if err != nil {
		return ConversationPage{}, err
	}
	return assemblePage(entries, more, latest, read[0], mentions[0], maxBytes), nil
}

// ConversationPages returns the first page of each user's conversation
// list, as ConversationPage(ctx, user, "", limit, maxBytes) does, in
// three or four round trips whatever the number of users: it is how a
// batch of logins reads them.
func (s *Store) ConversationPages(ctx context.Context, users []string, limit, maxBytes int) ([]ConversationPage, error) {
	if limit <= 0 || maxBytes <= 0 {
		return nil, fmt.Errorf("directory: conversation pages of %d users: limit %d and byte budget %d must be positive", len(users), limit, maxBytes)
	}
	pages := make([]ConversationPage, len(users))
	if len(users) == 0 {
		return pages, nil
	}
	rooms := make([]*redis.StringSliceCmd, len(users))
	direct := make([]*redis.ZSliceCmd, len(users))
	// The pipeline's error is its first failed command's, checked below
	// command by command.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, u := range users {
			rooms[i] = p.SMembers(ctx, userRoomsKey(u))
			direct[i] = p.ZRevRangeWithScores(ctx, userConvsKey(u), 0, int64(limit))
		}
		return nil
	})
	entries := make([][]convEntry, len(users))
	more := make([]bool, len(users))
	for i, u := range users {
		if err := rooms[i].Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("directory: rooms of %s: %w", u, err)
		}
		if err := direct[i].Err(); isWrongType(err) {
			// 1:1 conversations of the earlier model: rare, read alone.
			p, err := s.ConversationPage(ctx, u, "", limit, maxBytes)
			if err != nil {
				return nil, err
			}
			pages[i] = p
			continue
		} else if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("directory: conversations of %s: %w", u, err)
		}
		entries[i], more[i] = roomEntries(rooms[i].Val(), "", limit)
		if !more[i] {
			d, dmore := directFrom(direct[i].Val(), limit-len(entries[i]))
			entries[i], more[i] = appendDirect(entries[i], d), dmore
		}
	}
	latest, read, mentions, err := s.positions(ctx, users, entries)
	if err != nil {
		return nil, err
	}
	for i := range users {
		if len(entries[i]) > 0 {
			pages[i] = assemblePage(entries[i], more[i], latest, read[i], mentions[i], maxBytes)
		}
	}
	return pages, nil
}

// positions reads what a page says of its conversations, for each of
// users the conversations of its entries: their latest seqs, the user's
// read positions and unread mentions there, in two round trips whatever
// the number of users (more when read positions must be restored from
// the history store, see readSeqsFrom).
func (s *Store) positions(ctx context.Context, users []string, entries [][]convEntry) (latest map[string]uint64, read, mentions []map[string]uint64, err error) {
	var convs []string
	seen := map[string]bool{}
	for _, es := range entries {
		for _, e := range es {
			if !seen[e.conv] {
				seen[e.conv] = true
				convs = append(convs, e.conv)
			}
		}
	}
	b := s.Batch(ctx)
	latest = b.LatestSeqs(convs...)
	reads := make([]*redis.SliceCmd, len(users))
	for i, u := range users {
		if len(entries[i]) > 0 {
			reads[i] = b.p.HMGet(ctx, userReadKey(u), entryConvs(entries[i])...)
		}
	}
	if err := b.Do(); err != nil {
		return nil, nil, nil, err
	}
	read = make([]map[string]uint64, len(users))
	for i, u := range users {
		if len(entries[i]) == 0 {
			continue
		}
		if err := failed(reads[i]); err != nil {
			return nil, nil, nil, fmt.Errorf("directory: read positions of %s: %w", u, err)
		}
		if read[i], err = s.readSeqsFrom(ctx, u, entryConvs(entries[i]), reads[i].Val()); err != nil {
			return nil, nil, nil, err
		}
	}
	b = s.Batch(ctx)
	mentions = make([]map[string]uint64, len(users))
	for i, u := range users {
		if len(entries[i]) > 0 {
			mentions[i] = b.UnreadMentions(u, read[i], entryConvs(entries[i])...)
		}
	}
	if err := b.Do(); err != nil {
		return nil, nil, nil, err
	}
	return latest, read, mentions, nil
}

// convEntry is a conversation of a user's list and its cursor.
type convEntry struct{ conv, cursor string }

// roomEntries lists a user's rooms, sorted, after the room after (empty:
// from the first), at most limit; more says whether some were left out.
func roomEntries(rooms []string, after string, limit int) (entries []convEntry, more bool) {
	slices.Sort(rooms)
	if after != "" {
		i, found := slices.BinarySearch(rooms, after)
		if found {
			i++
		}
		rooms = rooms[i:]
	}
	if len(rooms) > limit {
		rooms, more = rooms[:limit], true
	}
	for _, r := range rooms {
		entries = append(entries, convEntry{topics.RoomConversation(r), "r:" + r})
	}
	return entries, more
}

func appendDirect(entries []convEntry, direct []directPos) []convEntry {
	for _, p := range direct {
		entries = append(entries, convEntry{p.conv, p.cursor()})
	}
	return entries
}

func entryConvs(entries []convEntry) []string {
	convs := make([]string, len(entries))
	for i, e := range entries {
		convs[i] = e.conv
	}
	return convs
}

// assemblePage makes the page of entries, as many as maxBytes allows
// (at least one).
func assemblePage(entries []convEntry, more bool, latest, read, mentions map[string]uint64, maxBytes int) ConversationPage {
	var page ConversationPage
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
	return page
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
		out, more := directFrom(zs, n)
		return out, more, nil
	}
	if len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// directFrom reads at most n 1:1 conversations from a sorted set's
// range; more says whether zs had more.
func directFrom(zs []redis.Z, n int) (out []directPos, more bool) {
	out = make([]directPos, 0, min(len(zs), n))
	for _, z := range zs {
		if len(out) == n {
			return out, true
		}
		m, _ := z.Member.(string)
		out = append(out, directPos{score: int64(z.Score), conv: m})
	}
	return out, false
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
