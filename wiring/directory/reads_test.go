package directory_test

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
)

func openBolt(t *testing.T) *msgstore.Bolt {
	t.Helper()
	b, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestReadPositionsSurviveRedisLoss: with a ReadStore, positions written
// before Redis was flushed are read back (ReadSeqs, as at login) and
// still only grow (MarkRead); without one they are gone.
func TestReadPositionsSurviveRedisLoss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := testinfra.RedisClient(t)
	saved := openBolt(t)
	s := directory.New(rdb, directory.WithReadStore(saved))
	flush := func() {
		t.Helper()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []struct {
		conv string
		seq  uint64
	}{{"dm:alice:bob", 5}, {"room:lobby", 2}, {"room:lobby", 9}} {
		if _, _, err := s.MarkRead(ctx, "alice", m.conv, m.seq); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	if got, err := directory.New(rdb).ReadSeqs(ctx, "alice", "dm:alice:bob", "room:lobby"); err != nil || len(got) != 0 {
		t.Fatalf("without a read store after the flush: %v, %v; want nothing", got, err)
	}
	want := map[string]uint64{"dm:alice:bob": 5, "room:lobby": 9}
	for range 2 { // read back from the store, then from Redis
		got, err := s.ReadSeqs(ctx, "alice", "dm:alice:bob", "room:lobby", "room:dev")
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("ReadSeqs after the flush = %v, %v; want %v", got, err, want)
		}
	}
	// The positions went back to Redis: one without a read store sees them.
	if got, err := directory.New(rdb).ReadSeqs(ctx, "alice", "dm:alice:bob", "room:lobby", "room:dev"); err != nil || !maps.Equal(got, want) {
		t.Fatalf("Redis after reading back = %v, %v; want %v", got, err, want)
	}
	flush()
	steps := []struct {
		seq, pos uint64
		moved    bool
	}{
		{3, 5, false}, // below the saved position: restored, not lowered
		{0, 5, false},
		{8, 8, true},
	}
	for _, st := range steps {
		pos, moved, err := s.MarkRead(ctx, "alice", "dm:alice:bob", st.seq)
		if err != nil || pos != st.pos || moved != st.moved {
			t.Errorf("MarkRead(%d) after the flush = %d, %v, %v; want %d, %v", st.seq, pos, moved, err, st.pos, st.moved)
		}
	}
	flush()
	if got, err := saved.ReadPositions(ctx, "alice", "dm:alice:bob"); err != nil || got["dm:alice:bob"] != 8 {
		t.Errorf("saved after the last raise: %v, %v; want 8", got, err)
	}
}

// failingReads is a ReadStore that is down.
type failingReads struct{}

func (failingReads) SaveRead(context.Context, string, string, uint64) error {
	return errors.New("store down")
}

func (failingReads) ReadPositions(context.Context, string, ...string) (map[string]uint64, error) {
	return nil, errors.New("store down")
}

// TestReadStoreDown: a ReadStore that fails makes MarkRead and ReadSeqs
// fail when they need it; a MarkRead that could not look up the saved
// position records nothing in Redis (it would hide a higher saved one).
func TestReadStoreDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := testinfra.RedisClient(t)
	s := directory.New(rdb, directory.WithReadStore(failingReads{}))
	if _, _, err := s.MarkRead(ctx, "alice", "room:lobby", 3); err == nil {
		t.Error("MarkRead with the read store down: no error")
	}
	if got, err := directory.New(rdb).ReadSeqs(ctx, "alice", "room:lobby"); err != nil || len(got) != 0 {
		t.Errorf("Redis after the failed MarkRead: %v, %v; want nothing", got, err)
	}
	if _, err := s.ReadSeqs(ctx, "alice", "room:lobby", "room:dev"); err == nil {
		t.Error("ReadSeqs with the read store down: no error")
	}
}

// TestMarkRead: a read position only grows; MarkRead says where it is and
// whether it moved; ReadSeqs reads many at once, 0 for none.
func TestMarkRead(t *testing.T) {
	t.Parallel()
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		testMarkRead(t, newStore(t))
	})
	t.Run("with a read store", func(t *testing.T) {
		t.Parallel()
		testMarkRead(t, directory.New(testinfra.RedisClient(t), directory.WithReadStore(openBolt(t))))
	})
}

func testMarkRead(t *testing.T, s *directory.Store) {
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
	for _, seq := range []uint64{2, 5, 5, 9, 11} {
		if err := s.AddMentions(ctx, "room:lobby", seq, []string{"bob", "carol"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// A recalled message no longer counts, for anyone it mentioned; a
	// second recall changes nothing.
	for range 2 {
		if err := s.RecallMentions(ctx, "room:lobby", 11); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.UnreadMentions(ctx, "carol", nil, "room:lobby"); err != nil || got["room:lobby"] != 3 {
		t.Fatalf("carol's unread mentions %v, %v; want 3", got, err)
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
