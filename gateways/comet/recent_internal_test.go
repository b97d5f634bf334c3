package comet

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/wiring/msgstore"
)

func keptMessage(seq uint64, body int) *clientpb.Message {
	return &clientpb.Message{Conversation: "room:r", Seq: seq, Body: make([]byte, body)}
}

// seqsOf decodes the kept messages of a page and returns their seqs.
func seqsOf(t *testing.T, msgs [][]byte) []uint64 {
	t.Helper()
	var out []uint64
	for _, b := range msgs {
		var m clientpb.Message
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.GetSeq())
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestRecentPage: a page comes from the recent messages only when all of
// it is kept and at least one message follows it; it is bounded in bytes
// as the history worker bounds one.
func TestRecentPage(t *testing.T) {
	var r recent
	for seq := uint64(11); seq <= 30; seq++ { // 11..30 kept
		r.add(keptMessage(seq, 10))
	}
	for _, tc := range []struct {
		name     string
		after    uint64
		limit    int
		maxBytes int
		want     []uint64 // nil: not answered
	}{
		{"from the first", 10, 5, msgstore.MaxPageBytes, span(11, 15)},
		{"inside", 20, 9, msgstore.MaxPageBytes, span(21, 29)},
		{"the page would end the run", 20, 10, msgstore.MaxPageBytes, nil},
		{"past the run's end", 25, 10, msgstore.MaxPageBytes, nil},
		{"after the last", 30, 1, msgstore.MaxPageBytes, nil},
		{"beyond the last", 1 << 40, 1, msgstore.MaxPageBytes, nil},
		{"the largest seq", math.MaxUint64, 1, msgstore.MaxPageBytes, nil},
		{"starts before the run", 9, 5, msgstore.MaxPageBytes, nil},
		{"from zero", 0, 5, msgstore.MaxPageBytes, nil},
		{"no limit", 10, 0, msgstore.MaxPageBytes, nil},
		{"cut by size", 10, 5, 50, span(11, 12)}, // 24 bytes each in a page
		{"at least one message", 10, 5, 1, span(11, 11)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := r.page(tc.after, tc.limit, tc.maxBytes)
			if ok != (tc.want != nil) || !slices.Equal(seqsOf(t, got), tc.want) {
				t.Fatalf("page(%d, %d) = %v, %v; want %v", tc.after, tc.limit, seqsOf(t, got), ok, tc.want)
			}
		})
	}
}

// TestRecentRun: a message that does not follow the run starts it again;
// trimming drops the oldest, keeps the byte count exact and moves the run
// to the front of its arrays.
func TestRecentRun(t *testing.T) {
	var r recent
	size := func(m *clientpb.Message) int { return proto.Size(m) + recentOverhead }
	total := 0
	for seq := uint64(1); seq <= 8; seq++ {
		m := keptMessage(seq, int(seq))
		if d := r.add(m); d != size(m) {
			t.Fatalf("add %d: delta %d, want %d", seq, d, size(m))
		}
		total += size(m)
	}
	if r.bytes != total || r.len() != 8 {
		t.Fatalf("kept %d messages, %d bytes; want 8, %d", r.len(), r.bytes, total)
	}

	// A gap: the run starts again at 10.
	m := keptMessage(10, 1)
	if d := r.add(m); d != size(m)-total {
		t.Fatalf("add after a gap: delta %d, want %d", d, size(m)-total)
	}
	if r.len() != 1 || r.bytes != size(m) {
		t.Fatalf("after a gap: %d messages, %d bytes", r.len(), r.bytes)
	}
	// A repeat also breaks the run.
	r.add(keptMessage(10, 1))
	if r.len() != 1 {
		t.Fatalf("after a repeat: %d messages", r.len())
	}

	r = recent{}
	for seq := uint64(1); seq <= 100; seq++ {
		r.add(keptMessage(seq, 100))
	}
	one := size(keptMessage(1, 100))
	freed := r.trim(10 * one)
	if freed != 90*one || r.bytes != 10*one || r.len() != 10 || r.head != 0 || len(r.msgs) != 10 || r.first != 91 {
		t.Fatalf("trim: freed %d, kept %d bytes in %d messages from %d (head %d, %d slots)", freed, r.bytes, r.len(), r.first, r.head, len(r.msgs))
	}
	if got, ok := r.page(90, 5, msgstore.MaxPageBytes); !ok || !slices.Equal(seqsOf(t, got), span(91, 95)) {
		t.Fatalf("page after trim: %v, %v", seqsOf(t, got), ok)
	}
	if freed := r.trim(0); freed != 10*one || r.len() != 0 || r.msgs != nil || r.bytes != 0 {
		t.Fatalf("trim to nothing: freed %d, %d left", freed, r.len())
	}
}

// TestRecentBudget: the rooms' kept messages stay within the comet's
// budget after every delivery, idle rooms trimmed with busy ones (rooms
// filling one after another kept many times the budget when only the
// room adding trimmed itself); a stopping room gives its bytes back, and
// a negative budget keeps nothing.
func TestRecentBudget(t *testing.T) {
	one := int64(proto.Size(keptMessage(1, 100)) + recentOverhead)
	for _, tc := range []struct {
		name     string
		budget   int64
		rooms    int
		together bool  // rooms get messages in turn, not one room after another
		want     int64 // bytes kept at the end, at least
	}{
		{"within", 1000 * one, 2, true, 100 * one},
		{"shared", 40 * one, 2, true, 20 * one},
		{"one after another", 100 * one, 20, false, 40 * one},
		{"none", -1, 2, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Comet{cfg: Config{RecentBytes: int(tc.budget)}, rooms: map[string]*room{}}
			var rooms []*room
			for i := range tc.rooms {
				rm := newRoom(c, fmt.Sprint("r", i))
				c.rooms[rm.id] = rm
				rooms = append(rooms, rm)
			}
			deliver := func(rm *room, seq uint64) {
				m := keptMessage(seq, 100)
				m.Conversation = rm.conv
				rm.mu.Lock()
				rm.keepLocked([]*clientpb.Message{m, {Conversation: "room:other", Seq: seq}, {Conversation: rm.conv}})
				rm.mu.Unlock()
				c.trimRecent()
				if got := c.recentBytes.Load(); got > max(tc.budget, 0) {
					t.Fatalf("%d bytes kept, over the budget %d", got, tc.budget)
				}
			}
			if tc.together {
				for seq := uint64(1); seq <= 50; seq++ {
					for _, rm := range rooms {
						deliver(rm, seq)
					}
				}
			} else {
				for _, rm := range rooms {
					for seq := uint64(1); seq <= 50; seq++ {
						deliver(rm, seq)
					}
				}
			}
			sum := int64(0)
			for _, rm := range rooms {
				sum += int64(rm.recent.bytes)
			}
			if got := c.recentBytes.Load(); got != sum || got < tc.want {
				t.Fatalf("the comet counts %d bytes, the rooms keep %d; want at least %d", got, sum, tc.want)
			}
			for _, rm := range rooms {
				rm.stop()
			}
			if c.recentBytes.Load() != 0 || c.recentRooms.Load() != 0 {
				t.Fatalf("after stop: %d bytes in %d rooms", c.recentBytes.Load(), c.recentRooms.Load())
			}
		})
	}
}

// TestRecentPageBoundLikeHistory: a page of kept messages is cut where
// the history worker cuts one (msgstore.Bound), whatever the sizes.
func TestRecentPageBoundLikeHistory(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var r recent
		var msgs []*clientpb.Message
		for seq := uint64(1); seq <= 60; seq++ {
			m := keptMessage(seq, rng.IntN(300))
			msgs = append(msgs, m)
			r.add(m)
		}
		after, limit, maxBytes := uint64(rng.IntN(20)), 1+rng.IntN(39), rng.IntN(4000)
		got, ok := r.page(after, limit, maxBytes)
		want, _ := msgstore.Bound(msgs[after:after+uint64(limit)], maxBytes)
		if !ok || !slices.Equal(seqsOf(t, got), seqsOf(t, encodeAll(t, want))) {
			t.Fatalf("round %d: page(%d, %d, %d) = %v, %v; history's bound gives %v", round, after, limit, maxBytes, seqsOf(t, got), ok, seqsOf(t, encodeAll(t, want)))
		}
	}
}

func encodeAll(t *testing.T, msgs []*clientpb.Message) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestSyncResultBytes: the frame a page of kept messages is written as
// decodes to the SyncResult the history worker's answer would be.
func TestSyncResultBytes(t *testing.T) {
	msgs := []*clientpb.Message{keptMessage(7, 3), {Id: "x", Conversation: "room:r", Seq: 8, Sender: "s", Body: []byte("héllo"), Mentions: []string{"a"}}}
	for _, tc := range []struct {
		req  uint64
		msgs []*clientpb.Message
	}{{1, msgs}, {1 << 40, msgs[:1]}, {0, msgs}} {
		var got clientpb.ServerFrame
		if err := proto.Unmarshal(appendSyncResult(nil, tc.req, "room:r", encodeAll(t, tc.msgs)), &got); err != nil {
			t.Fatal(err)
		}
		want := &clientpb.ServerFrame{RequestId: tc.req, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{Conversation: "room:r", Messages: tc.msgs, HasMore: true}}}
		if !proto.Equal(&got, want) {
			t.Fatalf("decoded %v, want %v", &got, want)
		}
		if b, _ := proto.Marshal(want); len(b) != len(appendSyncResult(nil, tc.req, "room:r", encodeAll(t, tc.msgs))) {
			t.Fatalf("%d bytes, proto.Marshal makes %d", len(appendSyncResult(nil, tc.req, "room:r", encodeAll(t, tc.msgs))), len(b))
		}
	}
}

// TestPooledFrameRelease: a page's frame gives its buffer back once, and
// forgets the encodings that share it, so that a write after it would
// send nothing rather than another page's bytes.
func TestPooledFrameRelease(t *testing.T) {
	buf := new([]byte)
	*buf = appendSyncResult(*buf, 3, "room:r", encodeAll(t, []*clientpb.Message{keptMessage(1, 10)}))
	want := append([]byte(nil), *buf...)
	f := newPooledFrame(&clientpb.ServerFrame{RequestId: 3}, buf)
	if !slices.Equal(f.bytes(encProto), want) || !slices.Equal(f.bytes(encCompact), want) {
		t.Fatal("a pooled frame's encodings are not its buffer's bytes")
	}
	f.release()
	f.release() // once only
	if f.bytes(encProto) != nil || f.bytes(encCompact) != nil || f.pooled != nil {
		t.Fatalf("after release: %d and %d bytes, pooled %v", len(f.bytes(encProto)), len(f.bytes(encCompact)), f.pooled)
	}
	newFrame(&clientpb.ServerFrame{}).release() // no buffer: nothing
}
