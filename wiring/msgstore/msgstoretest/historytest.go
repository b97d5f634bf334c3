// Package msgstoretest is the contract every msgstore.Store must pass.
// Run it from a backend's tests with a factory of empty stores.
package msgstoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/wiring/msgstore"
)

// Factory returns an empty store, closed by the test's cleanup.
type Factory func(t *testing.T) msgstore.Store

func msg(conv string, seq uint64) *clientpb.Message {
	return &clientpb.Message{Id: fmt.Sprintf("%s-%d", conv, seq), Conversation: conv, Seq: seq, Sender: "u", Body: []byte(fmt.Sprint("body ", seq)), ServerTimeUnixMs: 1}
}

func msgs(conv string, from, to uint64) []*clientpb.Message {
	var out []*clientpb.Message
	for s := from; s <= to; s++ {
		out = append(out, msg(conv, s))
	}
	return out
}

func seqs(ms []*clientpb.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetSeq()
	}
	return out
}

func same(a []uint64, from, to uint64) bool {
	if len(a) != int(to-from+1) || (to < from && len(a) != 0) {
		return to < from && len(a) == 0
	}
	for i, s := range a {
		if s != from+uint64(i) {
			return false
		}
	}
	return true
}

// Run runs the contract.
func Run(t *testing.T, newStore Factory) {
	ctx := context.Background()
	t.Run("AfterPagesInOrder", func(t *testing.T) {
		s := newStore(t)
		if err := s.Append(ctx, msgs("room:a", 1, 25)); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			after    uint64
			limit    int
			from, to uint64
			more     bool
		}{
			{0, 10, 1, 10, true},
			{10, 10, 11, 20, true},
			{20, 10, 21, 25, false},
			{25, 10, 26, 25, false},
			{0, 0, 1, 25, false},
			{1<<63 - 1, 10, 1, 0, false},
			{1<<64 - 1, 10, 1, 0, false}, // after+1 must not wrap to 0
		}
		for _, tt := range tests {
			got, more, err := s.After(ctx, "room:a", tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !same(seqs(got), tt.from, tt.to) || more != tt.more {
				t.Errorf("After(%d, %d) = %v more=%v, want %d..%d more=%v", tt.after, tt.limit, seqs(got), more, tt.from, tt.to, tt.more)
			}
		}
	})
	t.Run("BeforePagesNewestFirst", func(t *testing.T) {
		s := newStore(t)
		if err := s.Append(ctx, msgs("dm:a:b", 1, 25)); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			before   uint64
			limit    int
			from, to uint64
			more     bool
		}{
			{0, 10, 16, 25, true},
			{16, 10, 6, 15, true},
			{6, 10, 1, 5, false},
			{1, 10, 1, 0, false},
		}
		for _, tt := range tests {
			got, more, err := s.Before(ctx, "dm:a:b", tt.before, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !same(seqs(got), tt.from, tt.to) || more != tt.more {
				t.Errorf("Before(%d, %d) = %v more=%v, want %d..%d more=%v", tt.before, tt.limit, seqs(got), more, tt.from, tt.to, tt.more)
			}
		}
	})
	t.Run("AppendTwiceKeepsOneCopy", func(t *testing.T) {
		s := newStore(t)
		// Routing gives a (conversation, seq) one message; a redelivery
		// brings the same message again.
		first := msg("room:a", 1)
		for _, m := range []*clientpb.Message{first, first, msg("room:a", 1)} {
			if err := s.Append(ctx, []*clientpb.Message{m}); err != nil {
				t.Fatal(err)
			}
		}
		got, _, err := s.After(ctx, "room:a", 0, 10)
		if err != nil || len(got) != 1 || string(got[0].GetBody()) != "body 1" {
			t.Fatalf("after duplicates: %v, %v", got, err)
		}
	})
	t.Run("AppendReportsConflicts", func(t *testing.T) {
		s := newStore(t)
		if err := s.Append(ctx, msgs("room:a", 1, 2)); err != nil {
			t.Fatal(err)
		}
		// The directory lost its counters: seq 2 is issued again, to
		// another message, next to a new seq 3.
		other := msg("room:a", 2)
		other.Id = "another-id"
		err := s.Append(ctx, []*clientpb.Message{other, msg("room:a", 3)})
		var conflict *msgstore.ConflictError
		if !errors.As(err, &conflict) {
			t.Fatalf("Append of a taken seq = %v, want a *msgstore.ConflictError", err)
		}
		want := msgstore.Conflict{Conversation: "room:a", Seq: 2, StoredID: "room:a-2", NewID: "another-id"}
		if len(conflict.Conflicts) != 1 || conflict.Conflicts[0] != want {
			t.Fatalf("conflicts %+v, want [%+v]", conflict.Conflicts, want)
		}
		got, _, err := s.After(ctx, "room:a", 0, 10)
		if err != nil || !same(seqs(got), 1, 3) || got[1].GetId() != "room:a-2" {
			t.Fatalf("after a conflict: %v, %v; want 1..3 with seq 2 kept", seqs(got), err)
		}
	})
	t.Run("LatestOfEveryConversation", func(t *testing.T) {
		s := newStore(t)
		for conv, n := range map[string]uint64{"room:a": 3, "dm:x:y": 1, "room:b": 7} {
			if err := s.Append(ctx, msgs(conv, 1, n)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Latest(ctx)
		want := map[string]uint64{"room:a": 3, "dm:x:y": 1, "room:b": 7}
		if err != nil || len(got) != len(want) {
			t.Fatalf("Latest = %v, %v; want %v", got, err, want)
		}
		for conv, n := range want {
			if got[conv] != n {
				t.Errorf("Latest[%s] = %d, want %d", conv, got[conv], n)
			}
		}
	})
	t.Run("ConversationsAreSeparate", func(t *testing.T) {
		s := newStore(t)
		for _, conv := range []string{"room:a", "room:ab", "room:"} {
			if err := s.Append(ctx, msgs(conv, 1, 3)); err != nil {
				t.Fatal(err)
			}
		}
		for _, conv := range []string{"room:a", "room:ab", "room:"} {
			got, _, _ := s.After(ctx, conv, 0, 10)
			newest, _, _ := s.Before(ctx, conv, 0, 10)
			if len(got) != 3 || len(newest) != 3 || got[0].GetConversation() != conv || newest[2].GetConversation() != conv {
				t.Errorf("%q: after %v before %v", conv, seqs(got), seqs(newest))
			}
		}
		if got, _, _ := s.After(ctx, "room:none", 0, 10); len(got) != 0 {
			t.Errorf("empty conversation returned %v", seqs(got))
		}
	})
	t.Run("ConcurrentAppends", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					seq := uint64(w*25 + i + 1)
					if err := s.Append(ctx, []*clientpb.Message{msg("room:busy", seq)}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got, more, err := s.After(ctx, "room:busy", 0, msgstore.MaxPage)
		if err != nil || more || !same(seqs(got), 1, 200) {
			t.Fatalf("after concurrent appends: %d messages more=%v err=%v", len(got), more, err)
		}
	})
	t.Run("ChangesOfARange", func(t *testing.T) {
		s := newStore(t)
		if err := s.Append(ctx, msgs("room:a", 1, 10)); err != nil {
			t.Fatal(err)
		}
		change := func(conv string, seq, edits, recalls uint64) *clientpb.Message {
			m := msg(conv, seq)
			m.Edits, m.Recalls = edits, recalls
			if recalls != 0 {
				m.Body = nil
			}
			return m
		}
		// Stored out of order, and one twice: the latest edit and the
		// recall still win.
		for _, batch := range [][]*clientpb.Message{
			{change("room:a", 12, 3, 0)},
			{change("room:a", 11, 3, 0), change("room:a", 13, 0, 5)},
			{change("room:a", 14, 5, 0), change("room:a", 12, 3, 0)},
			{change("room:ab", 1, 0, 0), change("room:ab", 2, 0, 3)},
		} {
			if err := s.Append(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			from, to uint64
			want     map[uint64]uint64 // changed seq -> seq of its change
		}{
			{1, 10, map[uint64]uint64{3: 12, 5: 13}},
			{3, 3, map[uint64]uint64{3: 12}},
			{4, 5, map[uint64]uint64{5: 13}},
			{6, 14, map[uint64]uint64{}},
			{5, 4, map[uint64]uint64{}},
		}
		for _, tt := range tests {
			got, err := s.Changes(ctx, "room:a", tt.from, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("Changes(%d, %d) = %v, want %v", tt.from, tt.to, got, tt.want)
				continue
			}
			for target, seq := range tt.want {
				if c := got[target]; c.GetSeq() != seq || c.GetConversation() != "room:a" {
					t.Errorf("Changes(%d, %d)[%d] = %v, want seq %d", tt.from, tt.to, target, c, seq)
				}
			}
		}
		if got, err := s.Changes(ctx, "room:ab", 1, 10); err != nil || len(got) != 1 || got[3].GetRecalls() != 3 {
			t.Errorf("Changes of room:ab = %v, %v; want the recall of 3 only", got, err)
		}
	})
	t.Run("ReadPositionsOnlyGrow", func(t *testing.T) {
		s := newStore(t)
		saves := []struct {
			user, conv string
			seq        uint64
		}{
			{"alice", "room:a", 5},
			{"alice", "room:a", 3}, // lower: ignored
			{"alice", "room:a", 7},
			{"alice", "dm:alice:bob", 2},
			{"bob", "room:a", 1},
			{"alice", "room:ab", 9},
		}
		for _, sv := range saves {
			if err := s.SaveRead(ctx, sv.user, sv.conv, sv.seq); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ReadPositions(ctx, "alice", "room:a", "dm:alice:bob", "room:b")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]uint64{"room:a": 7, "dm:alice:bob": 2}
		if len(got) != len(want) || got["room:a"] != 7 || got["dm:alice:bob"] != 2 {
			t.Errorf("alice's positions = %v, want %v", got, want)
		}
		if got, err := s.ReadPositions(ctx, "bob", "room:a", "room:ab"); err != nil || len(got) != 1 || got["room:a"] != 1 {
			t.Errorf("bob's positions = %v, %v; want room:a 1", got, err)
		}
		if got, err := s.ReadPositions(ctx, "carol"); err != nil || len(got) != 0 {
			t.Errorf("no conversations asked: %v, %v", got, err)
		}
		// Concurrent raises, in any order: the highest stays.
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.SaveRead(ctx, "dave", "room:busy", uint64(20-i)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if got, err := s.ReadPositions(ctx, "dave", "room:busy"); err != nil || got["room:busy"] != 20 {
			t.Errorf("after concurrent raises: %v, %v; want 20", got, err)
		}
	})
	t.Run("PageSizeIsBounded", func(t *testing.T) {
		s := newStore(t)
		if err := s.Append(ctx, msgs("room:big", 1, msgstore.MaxPage+10)); err != nil {
			t.Fatal(err)
		}
		got, more, err := s.After(ctx, "room:big", 0, 10*msgstore.MaxPage)
		if err != nil || len(got) != msgstore.MaxPage || !more {
			t.Fatalf("got %d more=%v err=%v, want %d and more", len(got), more, err, msgstore.MaxPage)
		}
	})
}
