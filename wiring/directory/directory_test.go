package directory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring/directory"
)

func newStore(t testing.TB) *directory.Store {
	return directory.New(testinfra.RedisClient(t))
}

func TestDirectory(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.PutUser(ctx, directory.User{ID: "alice", Name: "Alice"}))
	must(s.PutUser(ctx, directory.User{ID: "bob", Name: "Bob", Disabled: true}))
	must(s.PutRoom(ctx, directory.Room{ID: "lobby", Name: "Lobby", Kind: "group"}))
	for range 2 {
		must(s.AddMember(ctx, "lobby", "alice"))
		must(s.Block(ctx, "alice", "bob"))
	}

	tests := []struct {
		name string
		got  func() (any, error)
		want any
	}{
		{"user", func() (any, error) { u, ok, err := s.User(ctx, "alice"); return fmt.Sprint(u, ok), err }, fmt.Sprint(directory.User{ID: "alice", Name: "Alice"}, true)},
		{"disabled user", func() (any, error) { u, _, err := s.User(ctx, "bob"); return u.Disabled, err }, true},
		{"unknown user", func() (any, error) { _, ok, err := s.User(ctx, "zed"); return ok, err }, false},
		{"room", func() (any, error) { r, ok, err := s.Room(ctx, "lobby"); return fmt.Sprint(r, ok), err }, fmt.Sprint(directory.Room{ID: "lobby", Name: "Lobby", Kind: "group"}, true)},
		{"unknown room", func() (any, error) { _, ok, err := s.Room(ctx, "nope"); return ok, err }, false},
		{"member", func() (any, error) { return s.IsMember(ctx, "lobby", "alice") }, true},
		{"not member", func() (any, error) { return s.IsMember(ctx, "lobby", "bob") }, false},
		{"rooms of", func() (any, error) { r, err := s.RoomsOf(ctx, "alice"); return fmt.Sprint(r), err }, "[lobby]"},
		{"blocks", func() (any, error) { return s.Blocks(ctx, "alice", "bob") }, true},
		{"blocks is directed", func() (any, error) { return s.Blocks(ctx, "bob", "alice") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}

	must(s.Unblock(ctx, "alice", "bob"))
	if ok, _ := s.Blocks(ctx, "alice", "bob"); ok {
		t.Error("unblock kept the block")
	}
	must(s.DeleteRoom(ctx, "lobby"))
	if ok, _ := s.IsMember(ctx, "lobby", "alice"); ok {
		t.Error("deleted room kept its member")
	}
	if r, _ := s.RoomsOf(ctx, "alice"); len(r) != 0 {
		t.Errorf("alice still in %v", r)
	}
	must(s.AddMember(ctx, "x", "alice"))
	must(s.DeleteUser(ctx, "alice"))
	if ok, _ := s.IsMember(ctx, "x", "alice"); ok {
		t.Error("deleted user kept a membership")
	}
	if _, ok, _ := s.User(ctx, "alice"); ok {
		t.Error("deleted user still exists")
	}
	// The api's SaveUser refuses a deleted id; binlog sync's PutUser
	// applies what the system of record holds.
	if err := s.SaveUser(ctx, directory.User{ID: "alice", Name: "New"}); !errors.Is(err, directory.ErrDeletedUser) {
		t.Errorf("SaveUser of a deleted id: %v, want ErrDeletedUser", err)
	}
	if _, ok, _ := s.User(ctx, "alice"); ok {
		t.Error("SaveUser created a deleted id")
	}
	must(s.SaveUser(ctx, directory.User{ID: "carol", Name: "Carol"}))
	must(s.SaveUser(ctx, directory.User{ID: "carol", Name: "Carol", Disabled: true}))
	if u, ok, _ := s.User(ctx, "carol"); !ok || u.Name != "Carol" || !u.Disabled {
		t.Errorf("carol = %+v %v", u, ok)
	}
	// Of concurrent deletions of one user, one deleted it (abuse check:
	// two delete_user calls both answered 200).
	for round := range 10 {
		id := fmt.Sprintf("gone%d", round)
		must(s.PutUser(ctx, directory.User{ID: id}))
		removed := make(chan bool, 3)
		for range 3 {
			go func() {
				ok, err := s.RemoveUser(ctx, id)
				if err != nil {
					t.Error(err)
				}
				removed <- ok
			}()
		}
		n := 0
		for range 3 {
			if <-removed {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d of 3 concurrent RemoveUser calls removed the user, want 1", round, n)
		}
	}
	must(s.PutUser(ctx, directory.User{ID: "alice", Name: "Alice again"}))
	if u, ok, _ := s.User(ctx, "alice"); !ok || u.Name != "Alice again" {
		t.Errorf("PutUser of a deleted id: %+v %v", u, ok)
	}
}

func TestPresenceCountsAreIdempotent(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	a1 := directory.SessionRef{Comet: "c1", Conn: "a.1"}
	a2 := directory.SessionRef{Comet: "c2", Conn: "a.2"}
	b1 := directory.SessionRef{Comet: "c1", Conn: "b.1"}
	for _, sess := range []directory.Session{{Comet: "c1", Conn: "a.1", User: "alice"}, {Comet: "c2", Conn: "a.2", User: "alice"}, {Comet: "c1", Conn: "b.1", User: "bob"}} {
		if err := s.OpenSession(ctx, sess, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name        string
		do          func() (directory.RoomCount, error)
		users, conn int
		changed     bool
	}{
		{"alice first device joins", func() (directory.RoomCount, error) { return s.JoinRoom(ctx, a1, "alice", "r") }, 1, 1, true},
		{"same join again", func() (directory.RoomCount, error) { return s.JoinRoom(ctx, a1, "alice", "r") }, 1, 1, false},
		{"alice second device", func() (directory.RoomCount, error) { return s.JoinRoom(ctx, a2, "alice", "r") }, 1, 2, false},
		{"bob joins", func() (directory.RoomCount, error) { return s.JoinRoom(ctx, b1, "bob", "r") }, 2, 3, true},
		{"alice first device leaves", func() (directory.RoomCount, error) { return s.LeaveRoom(ctx, a1, "alice", "r") }, 2, 2, false},
		{"same leave again", func() (directory.RoomCount, error) { return s.LeaveRoom(ctx, a1, "alice", "r") }, 2, 2, false},
		{"alice last device leaves", func() (directory.RoomCount, error) { return s.LeaveRoom(ctx, a2, "alice", "r") }, 1, 1, true},
	}
	for _, st := range steps {
		rc, err := st.do()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if rc.OnlineUsers != st.users || rc.Connections != st.conn || rc.UserChanged != st.changed {
			t.Fatalf("%s: got %+v, want users %d conns %d changed %v", st.name, rc, st.users, st.conn, st.changed)
		}
	}
	comets, _ := s.RoomComets(ctx, "r")
	if fmt.Sprint(comets) != "[c1]" {
		t.Errorf("room comets = %v, want [c1]", comets)
	}

	// Closing bob's session leaves his rooms; closing again is a no-op.
	sess, rooms, ok, err := s.CloseSession(ctx, b1)
	if err != nil || !ok || sess.User != "bob" || len(rooms) != 1 || !rooms[0].UserChanged || rooms[0].OnlineUsers != 0 {
		t.Fatalf("close = %+v %+v %v %v", sess, rooms, ok, err)
	}
	if _, rooms, ok, err := s.CloseSession(ctx, b1); err != nil || ok || len(rooms) != 0 {
		t.Fatalf("second close = %v %v %v", rooms, ok, err)
	}
	online, err := s.Online(ctx, "alice", "bob")
	if err != nil || !online["alice"] || online["bob"] {
		t.Errorf("online = %v, %v", online, err)
	}
	if comets, _ := s.RoomComets(ctx, "r"); len(comets) != 0 {
		t.Errorf("empty room still has comets %v", comets)
	}
	refs, _ := s.UserSessions(ctx, "alice")
	if len(refs) != 2 {
		t.Errorf("alice sessions = %v", refs)
	}
}

func TestSessionsExpireWithoutHeartbeat(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	ttl := 300 * time.Millisecond
	for _, c := range []string{"kept", "lost"} {
		if err := s.OpenSession(ctx, directory.Session{Comet: "c1", Conn: c, User: "u-" + c}, ttl); err != nil {
			t.Fatal(err)
		}
	}
	// Heartbeats keep "kept" alive; "lost" gets none. A heartbeat for a
	// closed session must not bring it back.
	if _, _, _, err := s.CloseSession(ctx, directory.SessionRef{Comet: "c1", Conn: "gone"}); err != nil {
		t.Fatal(err)
	}
	var expired []directory.SessionRef
	testinfra.Eventually(t, 5*time.Second, func() error {
		if err := s.Heartbeat(ctx, "c1", []directory.LiveSession{{Conn: "kept", User: "u-kept"}, {Conn: "gone", User: "u-gone"}}, ttl); err != nil {
			return err
		}
		var err error
		if expired, err = s.ExpiredSessions(ctx, time.Now(), 10); err != nil {
			return err
		}
		if len(expired) == 0 {
			return errors.New("none expired yet")
		}
		return nil
	}, "c1/lost, without heartbeats, did not expire")
	if len(expired) != 1 || expired[0] != (directory.SessionRef{Comet: "c1", Conn: "lost"}) {
		t.Fatalf("expired = %v, want only c1/lost", expired)
	}
	online, _ := s.Online(ctx, "u-kept", "u-gone")
	if !online["u-kept"] || online["u-gone"] {
		t.Errorf("online = %v", online)
	}
	live, err := s.LiveComets(ctx, time.Now())
	if err != nil || fmt.Sprint(live) != "[c1]" {
		t.Errorf("live comets = %v, %v", live, err)
	}
	if live, _ := s.LiveComets(ctx, time.Now().Add(time.Hour)); len(live) != 0 {
		t.Errorf("comets live an hour from now: %v", live)
	}
}

func TestOnlineFlagFollowsSessions(t *testing.T) {
	t.Parallel()
	rdb := testinfra.RedisClient(t)
	s := directory.New(rdb)
	ctx := context.Background()
	a1 := directory.SessionRef{Comet: "c1", Conn: "a.1"}
	a2 := directory.SessionRef{Comet: "c2", Conn: "a.2"}
	for _, ref := range []directory.SessionRef{a1, a2} {
		if err := s.OpenSession(ctx, directory.Session{Comet: ref.Comet, Conn: ref.Conn, User: "alice"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	beat := func(ref directory.SessionRef) {
		t.Helper()
		if err := s.Heartbeat(ctx, ref.Comet, []directory.LiveSession{{Conn: ref.Conn, User: "alice"}}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	online := func() bool {
		t.Helper()
		on, err := s.Online(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		return on["alice"]
	}
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"flag lapsed while sessions live", func() { rdb.Del(ctx, "{u:alice}:online") }, false},
		{"heartbeat restores it", func() { beat(a1) }, true},
		{"script cache flushed, heartbeat still works", func() { rdb.ScriptFlush(ctx); rdb.Del(ctx, "{u:alice}:online"); beat(a2) }, true},
		{"one of two sessions closes", func() { s.CloseSession(ctx, a1) }, true},
		{"heartbeat of the closed one", func() { beat(a1) }, true},
		{"last session closes", func() { s.CloseSession(ctx, a2) }, false},
		{"late heartbeats do not revive it", func() { beat(a1); beat(a2) }, false},
	}
	for _, st := range steps {
		st.do()
		if got := online(); got != st.want {
			t.Fatalf("%s: online = %v, want %v", st.name, got, st.want)
		}
	}
	if exp, err := s.ExpiredSessions(ctx, time.Now().Add(time.Hour), 10); err != nil || len(exp) != 0 {
		t.Fatalf("closed sessions revived by heartbeats: %v, %v", exp, err)
	}
}

func TestAssignIsGapFreeAndDeduplicates(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const workers, each = 8, 50
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				a, err := s.Assign(ctx, "room:r", "u", fmt.Sprintf("w%d-%d", w, i), func() string { return "id" })
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen[a.Seq] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= workers*each; seq++ {
		if !seen[seq] {
			t.Fatalf("seq %d missing (got %d numbers)", seq, len(seen))
		}
	}
	before := time.Now().Truncate(time.Millisecond)
	first, err := s.Assign(ctx, "dm:a:b", "a", "m1", func() string { return "first" })
	if err != nil || first.Seq != 1 || first.Dup || first.Routed || first.Time.Before(before) || first.Time.After(time.Now()) {
		t.Fatalf("first = %+v, %v", first, err)
	}
	again, err := s.Assign(ctx, "dm:a:b", "a", "m1", func() string { return "second" })
	if err != nil || again != (directory.Assigned{ID: "first", Seq: 1, Time: first.Time, Dup: true}) {
		t.Fatalf("repeat = %+v, %v, want %+v with Dup", again, err, first)
	}
	other, _ := s.Assign(ctx, "dm:a:b", "b", "m1", func() string { return "x" })
	noID, _ := s.Assign(ctx, "dm:a:b", "a", "", func() string { return "y" })
	noID2, _ := s.Assign(ctx, "dm:a:b", "a", "", func() string { return "z" })
	if other.Seq != 2 || noID.Seq != 3 || noID2.Seq != 4 {
		t.Fatalf("seqs %d %d %d, want 2 3 4", other.Seq, noID.Seq, noID2.Seq)
	}
	latest, err := s.LatestSeqs(ctx, "dm:a:b", "room:r", "room:empty")
	if err != nil || latest["dm:a:b"] != 4 || latest["room:r"] != workers*each || latest["room:empty"] != 0 {
		t.Fatalf("latest = %v, %v", latest, err)
	}
}

// TestMarkRouted: a repeat of a marked message is reported routed with the
// place and time of the first, the mark keeps the dedup key's expiry, and
// marking an unknown or empty client message id writes nothing.
func TestMarkRouted(t *testing.T) {
	t.Parallel()
	rdb := testinfra.RedisClient(t)
	s := directory.New(rdb)
	ctx := context.Background()
	first, err := s.Assign(ctx, "room:r", "u", "m1", func() string { return "id-1" })
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.Assign(ctx, "room:r", "u", "m1", func() string { return "unused" }); err != nil || !again.Dup || again.Routed {
		t.Fatalf("repeat before the mark = %+v, %v, want Dup, not Routed", again, err)
	}
	if err := s.MarkRouted(ctx, "room:r", "u", "m1", first); err != nil {
		t.Fatal(err)
	}
	for range 2 { // marking changes nothing for later repeats
		again, err := s.Assign(ctx, "room:r", "u", "m1", func() string { return "unused" })
		if want := (directory.Assigned{ID: "id-1", Seq: 1, Time: first.Time, Dup: true, Routed: true}); err != nil || again != want {
			t.Fatalf("repeat after the mark = %+v, %v, want %+v", again, err, want)
		}
	}
	keys, err := rdb.Keys(ctx, "{c:room:r}:dedup:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("dedup keys %v, %v", keys, err)
	}
	if ttl, err := rdb.TTL(ctx, keys[0]).Result(); err != nil || ttl <= directory.DedupTTL-time.Minute || ttl > directory.DedupTTL {
		t.Fatalf("dedup key's TTL after the mark = %v, %v, want about %v", ttl, err, directory.DedupTTL)
	}
	if err := s.MarkRouted(ctx, "room:r", "u", "never-assigned", first); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkRouted(ctx, "room:r", "u", "", first); err != nil {
		t.Fatal(err)
	}
	if keys, err := rdb.Keys(ctx, "{c:room:r}:dedup:*").Result(); err != nil || len(keys) != 1 {
		t.Fatalf("dedup keys after marking unknown ids: %v, %v", keys, err)
	}
}

func BenchmarkAssign(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Assign(ctx, "room:bench", "u", fmt.Sprint(i), func() string { return "id" }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAssignMany assigns batches of 10 messages of one room, as
// routing does under load.
func BenchmarkAssignMany(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	subs := make([]directory.Submission, 10)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for k := range subs {
			subs[k] = directory.Submission{Sender: "u", ClientMsgID: fmt.Sprint(i, "-", k)}
		}
		if _, err := s.AssignMany(ctx, "room:bench", subs, func() string { return "id" }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJoinRoom(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ref := directory.SessionRef{Comet: "c1", Conn: fmt.Sprint(i)}
		if _, err := s.JoinRoom(ctx, ref, fmt.Sprint("u", i), "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSessionOpen(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	ref := directory.SessionRef{Comet: "c1", Conn: "x"}
	check := func(want bool) {
		t.Helper()
		if open, err := s.SessionOpen(ctx, ref); err != nil || open != want {
			t.Fatalf("SessionOpen = %v, %v; want %v", open, err, want)
		}
	}
	check(false)
	if err := s.OpenSession(ctx, directory.Session{Comet: "c1", Conn: "x", User: "u"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	check(true)
	if _, _, _, err := s.CloseSession(ctx, ref); err != nil {
		t.Fatal(err)
	}
	check(false)
}

func TestInRoom(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	ref := directory.SessionRef{Comet: "c1", Conn: "x"}
	check := func(room string, want bool) {
		t.Helper()
		if in, err := s.InRoom(ctx, ref, room); err != nil || in != want {
			t.Fatalf("InRoom(%s) = %v, %v; want %v", room, in, err, want)
		}
	}
	check("lobby", false)
	if err := s.OpenSession(ctx, directory.Session{Comet: "c1", Conn: "x", User: "u"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"lobby", "dev"} {
		if _, err := s.JoinRoom(ctx, ref, "u", r); err != nil {
			t.Fatal(err)
		}
	}
	check("lobby", true)
	check("ops", false)
	if _, err := s.LeaveRoom(ctx, ref, "u", "lobby"); err != nil {
		t.Fatal(err)
	}
	check("lobby", false)
	check("dev", true)
	if _, _, _, err := s.CloseSession(ctx, ref); err != nil {
		t.Fatal(err)
	}
	check("dev", false)
}

// TestDedupKeysDoNotCollide: two different (sender, client_msg_id) pairs
// whose old dedup keys were the same string get different messages; a
// repeat of each is still recognised.
func TestDedupKeysDoNotCollide(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	tests := []struct{ sender, clientMsgID string }{
		{"acme", "alice:m-1"},
		{"acme:alice", "m-1"},
		{"acme:alice:m", "1"},
		{"acme#5:acme:", "m"},
		{"5:acme", "m"},
	}
	seqs := map[uint64]string{}
	for i, tt := range tests {
		a, err := s.Assign(ctx, "room:r", tt.sender, tt.clientMsgID, func() string { return fmt.Sprint("id-", i) })
		if err != nil {
			t.Fatal(err)
		}
		if a.Dup {
			t.Fatalf("(%q, %q) taken for a repeat of %s", tt.sender, tt.clientMsgID, seqs[a.Seq])
		}
		seqs[a.Seq] = fmt.Sprintf("(%q, %q)", tt.sender, tt.clientMsgID)
		again, err := s.Assign(ctx, "room:r", tt.sender, tt.clientMsgID, func() string { return "unused" })
		if err != nil || !again.Dup || again.Seq != a.Seq {
			t.Fatalf("repeat of (%q, %q) = %+v, %v; want seq %d, Dup", tt.sender, tt.clientMsgID, again, err, a.Seq)
		}
	}
}

// TestAssignRestored: without its slot's mark nothing is assigned, so a
// shard of a Redis Cluster that lost its keys (counters and mark) issues
// no seq again while the directory's own mark, on another shard, lives
// on; RestoreSequences marks every slot.
func TestAssignRestored(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) {
		s := directory.New(rdb)
		ctx := context.Background()
		subs := []directory.Submission{{Sender: "u", ClientMsgID: "a"}}
		newID := func() string { return "id" }
		if _, err := s.AssignRestored(ctx, "room:r", subs, newID); !errors.Is(err, directory.ErrNotRestored) {
			t.Fatalf("before any restore: %v, want ErrNotRestored", err)
		}
		if err := s.RestoreSequences(ctx, map[string]uint64{"room:r": 4}); err != nil {
			t.Fatal(err)
		}
		for _, conv := range []string{"room:r", "room:other", "dm:a:b"} {
			got, err := s.AssignRestored(ctx, conv, subs, newID)
			if err != nil {
				t.Fatalf("%s after the restore: %v", conv, err)
			}
			if want := map[string]uint64{"room:r": 5}[conv]; want != 0 && got[0].Seq != want {
				t.Errorf("%s: seq %d, want %d", conv, got[0].Seq, want)
			}
		}
		// The shard of room:r loses its keys; the directory's mark stays.
		if err := rdb.Del(ctx, "{c:room:r}:seq", directory.RestoredMarkKey("room:r")).Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.SequencesRestored(ctx); err != nil || !ok {
			t.Fatalf("SequencesRestored = %v, %v", ok, err)
		}
		if _, err := s.AssignRestored(ctx, "room:r", []directory.Submission{{Sender: "u", ClientMsgID: "b"}}, newID); !errors.Is(err, directory.ErrNotRestored) {
			t.Fatalf("after the slot lost its keys: %v, want ErrNotRestored", err)
		}
		if _, err := s.AssignRestored(ctx, "room:other", []directory.Submission{{Sender: "u", ClientMsgID: "b"}}, newID); err != nil {
			t.Errorf("another slot: %v", err)
		}
	})
}

// TestAssignMany: a batch gets consecutive seqs in its order, a repeat
// within it or of an earlier message gets the first one's with Dup, an
// empty client message id is never a repeat, and MarkRoutedMany marks
// them all.
func TestAssignMany(t *testing.T) {
	t.Parallel()
	s := directory.New(testinfra.RedisClient(t))
	ctx := context.Background()
	if _, err := s.Assign(ctx, "room:m", "u", "before", func() string { return "id-0" }); err != nil {
		t.Fatal(err)
	}
	n := 0
	newID := func() string { n++; return fmt.Sprint("id-", n) }
	subs := []directory.Submission{
		{Sender: "u", ClientMsgID: "a"},
		{Sender: "v", ClientMsgID: "a"},
		{Sender: "u", ClientMsgID: "a"},
		{Sender: "u", ClientMsgID: "before"},
		{Sender: "u", ClientMsgID: ""},
		{Sender: "u", ClientMsgID: ""},
	}
	got, err := s.AssignMany(ctx, "room:m", subs, newID)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		seq uint64
		dup bool
	}{{2, false}, {3, false}, {2, true}, {1, true}, {4, false}, {5, false}}
	for i, w := range want {
		if got[i].Seq != w.seq || got[i].Dup != w.dup {
			t.Errorf("submission %d (%v): seq %d dup %v, want seq %d dup %v", i, subs[i], got[i].Seq, got[i].Dup, w.seq, w.dup)
		}
	}
	if got[0].ID != got[2].ID || got[0].ID == got[1].ID {
		t.Errorf("ids %q %q %q: a repeat must have its first one's, others their own", got[0].ID, got[1].ID, got[2].ID)
	}
	if err := s.MarkRoutedMany(ctx, "room:m", subs[:2], got[:2]); err != nil {
		t.Fatal(err)
	}
	again, err := s.AssignMany(ctx, "room:m", subs[:3], newID)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range again {
		if !a.Dup || !a.Routed || a.Seq != got[i].Seq {
			t.Errorf("after the mark, submission %d = %+v, want a routed repeat of seq %d", i, a, got[i].Seq)
		}
	}
	if err := s.MarkRoutedMany(ctx, "room:m", subs, got[:1]); err == nil {
		t.Error("MarkRoutedMany with fewer assignments than submissions did not fail")
	}
}
