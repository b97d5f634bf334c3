package directory_test

import (
	"context"
	"maps"
	"testing"
	"time"
)

// TestMarkRead: a read position only grows; MarkRead says where it is and
// whether it moved; ReadSeqs reads many at once, 0 for none.
func TestMarkRead(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	steps := []struct {
		user, conv string
		seq        uint64
		pos        uint64
		moved      bool
	}{
		{"alice", "dm:alice:bob", 3, 3, true},
		{"alice", "dm:alice:bob", 2, 3, false},
		{"alice", "dm:alice:bob", 3, 3, false},
		{"alice", "dm:alice:bob", 0, 3, false},
		{"alice", "dm:alice:bob", 10, 10, true},
		{"alice", "room:lobby", 0, 0, false},
		{"alice", "room:lobby", 1, 1, true},
		{"bob", "dm:alice:bob", 4, 4, true},
	}
	for _, st := range steps {
		pos, moved, err := s.MarkRead(ctx, st.user, st.conv, st.seq)
		if err != nil {
			t.Fatal(err)
		}
		if pos != st.pos || moved != st.moved {
			t.Errorf("MarkRead(%s, %s, %d) = %d, %v; want %d, %v", st.user, st.conv, st.seq, pos, moved, st.pos, st.moved)
		}
	}
	got, err := s.ReadSeqs(ctx, "alice", "dm:alice:bob", "room:lobby", "room:dev")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"dm:alice:bob": 10, "room:lobby": 1} // room:dev never read
	if !maps.Equal(got, want) {
		t.Errorf("ReadSeqs = %v, want %v", got, want)
	}
	if got, err := s.ReadSeqs(ctx, "carol"); err != nil || len(got) != 0 {
		t.Errorf("ReadSeqs of nothing = %v, %v", got, err)
	}
}

// TestLookup: Lookup finds what Assign gave a sender's client message
// id, and nothing for another sender or id.
func TestLookup(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	a, err := s.Assign(ctx, "room:lobby", "alice", "m1", func() string { return "id-1" })
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Lookup(ctx, "room:lobby", "alice", "m1")
	if err != nil || !ok || got.ID != "id-1" || got.Seq != a.Seq || time.Since(got.Time) > time.Minute || got.Routed {
		t.Fatalf("Lookup = %+v, %v, %v; want %+v", got, ok, err, a)
	}
	if err := s.MarkRouted(ctx, "room:lobby", "alice", "m1", a); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.Lookup(ctx, "room:lobby", "alice", "m1"); err != nil || !ok || !got.Routed {
		t.Fatalf("Lookup after MarkRouted = %+v, %v, %v", got, ok, err)
	}
	for _, k := range [][3]string{{"room:lobby", "bob", "m1"}, {"room:lobby", "alice", "m2"}, {"room:dev", "alice", "m1"}} {
		if _, ok, err := s.Lookup(ctx, k[0], k[1], k[2]); err != nil || ok {
			t.Errorf("Lookup%v = %v, %v; want nothing", k, ok, err)
		}
	}
}

// TestMentions: unread mentions count the mentioning seqs after the
// read position; reading past them forgets them.
func TestMentions(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, seq := range []uint64{2, 5, 5, 9} {
		if err := s.AddMention(ctx, "bob", "room:lobby", seq); err != nil {
			t.Fatal(err)
		}
	}
	count := func() uint64 {
		t.Helper()
		read, err := s.ReadSeqs(ctx, "bob", "room:lobby")
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.UnreadMentions(ctx, "bob", read, "room:lobby", "room:dev")
		if err != nil {
			t.Fatal(err)
		}
		return got["room:lobby"]
	}
	if n := count(); n != 3 {
		t.Fatalf("unread mentions %d, want 3", n)
	}
	for _, st := range []struct{ read, want uint64 }{{2, 2}, {4, 2}, {5, 1}, {9, 0}} {
		if _, _, err := s.MarkRead(ctx, "bob", "room:lobby", st.read); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != st.want {
			t.Errorf("read to %d: %d unread mentions, want %d", st.read, n, st.want)
		}
	}
}
