package presence_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/presence"
)

// TestBatchIsEventsInTurn: a batch of session events merged by the
// consumer (topics.SessionEvents batches across keys) leaves the
// directory as the same events applied one at a time do, and answers
// every connection the same frames in the same order. Only what depends
// on the order of different users' events may differ: online counts and
// lists, and which comets hear of a presence change.
func TestBatchIsEventsInTurn(t *testing.T) {
	t.Parallel()
	ev := func(kind topicpb.SessionEvent_Kind, comet, conn, user, room string, req uint64) *topicpb.SessionEvent {
		return &topicpb.SessionEvent{Kind: kind, Session: sess(comet, conn), User: user, Room: room, RequestId: req, Device: "d"}
	}
	const (
		opened = topicpb.SessionEvent_OPENED
		joined = topicpb.SessionEvent_JOINED
		left   = topicpb.SessionEvent_LEFT
		closed = topicpb.SessionEvent_CLOSED
	)
	evs := []*topicpb.SessionEvent{
		ev(opened, "c1", "a1", "alice", "", 1),
		ev(opened, "c1", "b1", "bob", "", 1),
		ev(joined, "c1", "a1", "alice", "lobby", 2), // alice's second event
		ev(opened, "c2", "m1", "mallory", "", 1),    // disabled
		ev(opened, "c2", "z1", "zed", "", 1),        // unknown
		ev(opened, "c2", "k1", "carol", "", 1),
		ev(opened, "c2", "k2", "carol", "", 1),
		ev(opened, "c2", "k3", "carol", "", 1), // past MaxSessionsPerUser
		ev(joined, "c1", "b1", "bob", "dev", 2),
		ev(joined, "c2", "k1", "carol", "dev", 2),     // not a member
		ev(joined, "c2", "k1", "carol", "nowhere", 3), // no such room
		ev(joined, "c2", "k2", "carol", "lobby", 2),
		ev(left, "c1", "a1", "alice", "lobby", 3),
		ev(joined, "c3", "d1", "dave", "lobby", 1), // never logged in
		ev(joined, "c3", "e1", "erin", "lobby", 1), // nor here
		{Kind: topicpb.SessionEvent_HEARTBEAT, Session: &topicpb.Session{Comet: "c1"}, Live: []*topicpb.LiveSession{{Conn: "a1", User: "alice"}, {Conn: "b1", User: "bob"}}},
		ev(joined, "c1", "a1", "alice", "dev", 4),
		ev(closed, "c1", "b1", "bob", "", 0),
		// Closes together (a comet cutting slow consumers): of sessions
		// in rooms, one never opened, and carol's two in turn.
		ev(closed, "c2", "k2", "carol", "", 0),
		ev(closed, "c3", "d1", "dave", "", 0),
		ev(joined, "c1", "a1", "alice", "lobby", 5),
		ev(closed, "c2", "k1", "carol", "", 0),
		ev(closed, "c1", "a1", "alice", "", 0),
	}
	cfg := presence.Config{MaxSessionsPerUser: 2}

	inTurn, inTurnStore, inTurnRec := fixture(t, cfg)
	for _, e := range evs {
		event(t, inTurn, proto.Clone(e).(*topicpb.SessionEvent))
	}
	batch, batchStore, batchRec := fixture(t, cfg)
	if err := batch.Pipeline().Handle(testinfra.Merged(t, topics.SessionEvents, evs...)); err != nil {
		t.Fatal(err)
	}

	wantAnswers, wantPresence := answers(t, inTurnRec.Take())
	gotAnswers, gotPresence := answers(t, batchRec.Take())
	if len(wantAnswers) < 7 {
		t.Fatalf("only %d connections answered one at a time: %v", len(wantAnswers), wantAnswers)
	}
	for conn, want := range wantAnswers {
		if got := gotAnswers[conn]; !slices.Equal(got, want) {
			t.Errorf("%s answered in a batch:\n%s\none at a time:\n%s", conn, got, want)
		}
	}
	for conn := range gotAnswers {
		if _, ok := wantAnswers[conn]; !ok {
			t.Errorf("%s answered only in a batch: %v", conn, gotAnswers[conn])
		}
	}
	// A presence change goes to the comets in the room at the time, which
	// depends on the order of different users' events: the batch takes
	// alice's leave before carol's join, and bob's close before alice's
	// join of dev, so it tells fewer comets here; it tells nobody a
	// change the events in turn did not.
	if len(gotPresence) == 0 {
		t.Error("no presence change in a batch")
	}
	for _, c := range gotPresence {
		if !slices.Contains(wantPresence, c) {
			t.Errorf("presence change %q in a batch, not one at a time %v", c, wantPresence)
		}
	}
	if got, want := state(t, batchStore), state(t, inTurnStore); got != want {
		t.Errorf("directory after the batch:\n%s\none at a time:\n%s", got, want)
	}
}

// answers sorts what was published into the frames each connection got,
// in order, without what depends on other users' order (online counts
// and lists, server times), and the presence changes sent to rooms.
func answers(t *testing.T, pubs []testinfra.Published) (map[string][]string, []string) {
	t.Helper()
	byConn := map[string][]string{}
	var changes []string
	for _, p := range pubs {
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if pc := d.GetFrame().GetPresence(); pc != nil {
			changes = append(changes, fmt.Sprintf("%s %s %s %v", p.Topic, pc.GetRoom(), pc.GetUser(), pc.GetOnline()))
			continue
		}
		if r := d.GetFrame().GetLoginResult(); r != nil {
			r.ServerTimeUnixMs = 0
		}
		if j := d.GetFrame().GetJoined(); j != nil {
			j.OnlineCount, j.OnlineUsers = 0, nil
		}
		if len(d.GetConns()) != 1 {
			t.Fatalf("an answer on %s to %d connections: %v", p.Topic, len(d.GetConns()), d)
		}
		conn := p.Topic + "/" + d.GetConns()[0]
		byConn[conn] = append(byConn[conn], prototext.MarshalOptions{}.Format(d))
	}
	sort.Strings(changes)
	return byConn, changes
}

// state describes the directory's sessions and rooms.
func state(t *testing.T, s *directory.Store) string {
	t.Helper()
	ctx := context.Background()
	out := ""
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin", "mallory", "zed"} {
		refs, err := s.UserSessions(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(refs, func(i, j int) bool { return refs[i].Conn < refs[j].Conn })
		on, err := s.Online(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf("%s: sessions %v online %v\n", u, refs, on[u])
	}
	for _, r := range []string{"lobby", "dev", "ops"} {
		users, conns, err := s.RoomOnline(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		comets, err := s.RoomComets(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		who, err := s.RoomUsers(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(comets)
		slices.Sort(who)
		out += fmt.Sprintf("%s: %d users %v, %d connections, comets %v\n", r, users, who, conns, comets)
	}
	return out
}

// BenchmarkLoginJoin measures what presence spends on a login and a
// join (an OPENED and a JOINED event) against a real redis-server, the
// broker left out (answers go to a recorder), in batches of 1, 8 and 64
// distinct users as the consumer merges them during a reconnect storm.
//
//	go test ./workers/presence/ -run '^$' -bench BenchmarkLoginJoin -benchtime 2000x -count 3
func BenchmarkLoginJoin(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			ctx := context.Background()
			store := testinfra.DemoDirectory(b)
			rec := &testinfra.Recorder{}
			h := testinfra.Must(presence.New(presence.Config{MaxSessionsPerUser: -1, PresenceWindow: -1}, store, rec, nil))(b)
			const users = 1000
			if err := store.PutRoom(ctx, directory.Room{ID: "bench", Kind: "group"}); err != nil {
				b.Fatal(err)
			}
			ms := make([]directory.Membership, users)
			for i := range users {
				u := fmt.Sprint("u", i)
				if err := store.PutUser(ctx, directory.User{ID: u}); err != nil {
					b.Fatal(err)
				}
				ms[i] = directory.Membership{Room: "bench", User: u}
			}
			if err := store.AddMembers(ctx, ms); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i += n {
				k := min(n, b.N-i)
				opened := make([]*topicpb.SessionEvent, k)
				joined := make([]*topicpb.SessionEvent, k)
				for j := range k {
					s, u := sess("c1", fmt.Sprint(i+j)), fmt.Sprint("u", (i+j)%users)
					opened[j] = &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: s, User: u, RequestId: 1}
					joined[j] = &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: s, User: u, Room: "bench", RequestId: 2}
				}
				for _, evs := range [][]*topicpb.SessionEvent{opened, joined} {
					if err := h.Pipeline().Handle(testinfra.Merged(b, topics.SessionEvents, evs...)); err != nil {
						b.Fatal(err)
					}
				}
				if got := len(rec.Take()); got < 2*k {
					b.Fatalf("%d answers to %d logins and joins", got, k)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/login")
		})
	}
}

// BenchmarkLoginJoinsRooms measures a login that joins 20 rooms in its
// Login (Login.join), one login at a time, against a real redis-server,
// the broker left out: what a reconnecting member of many rooms costs.
//
//	go test ./workers/presence/ -run '^$' -bench BenchmarkLoginJoinsRooms -benchtime 500x -count 3
func BenchmarkLoginJoinsRooms(b *testing.B) {
	ctx := context.Background()
	store := testinfra.DemoDirectory(b)
	rec := &testinfra.Recorder{}
	h := testinfra.Must(presence.New(presence.Config{MaxSessionsPerUser: -1, PresenceWindow: -1}, store, rec, nil))(b)
	const users, rooms = 100, 20
	var join []string
	var ms []directory.Membership
	for r := range rooms {
		room := fmt.Sprint("room", r)
		join = append(join, room)
		if err := store.PutRoom(ctx, directory.Room{ID: room, Kind: "group"}); err != nil {
			b.Fatal(err)
		}
		for u := range users {
			ms = append(ms, directory.Membership{Room: room, User: fmt.Sprint("u", u)})
		}
	}
	for u := range users {
		if err := store.PutUser(ctx, directory.User{ID: fmt.Sprint("u", u)}); err != nil {
			b.Fatal(err)
		}
	}
	if err := store.AddMembers(ctx, ms); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		ev := &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", fmt.Sprint(i)), User: fmt.Sprint("u", i%users), RequestId: 1, Join: join}
		if err := h.Pipeline().Handle(testinfra.Merged(b, topics.SessionEvents, ev)); err != nil {
			b.Fatal(err)
		}
		rec.Take()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/login")
}

// BenchmarkClose measures what presence spends closing a session of a
// member of a big room (a CLOSED event) against a real redis-server, the
// broker left out, in batches of 1 and 64 distinct users: a comet that
// cuts a big room's slow consumers sends thousands at once (issue 9).
// The sessions are opened and joined outside the timing.
//
//	go test ./workers/presence/ -run '^$' -bench BenchmarkClose -benchtime 2000x -count 3
func BenchmarkClose(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			ctx := context.Background()
			store := testinfra.DemoDirectory(b)
			rec := &testinfra.Recorder{}
			h := testinfra.Must(presence.New(presence.Config{MaxSessionsPerUser: -1, PresenceWindow: -1}, store, rec, nil))(b)
			const users = 10000
			for i := 0; i < b.N; i += n {
				k := min(n, b.N-i)
				b.StopTimer()
				joins := make([]directory.Join, k)
				closed := make([]*topicpb.SessionEvent, k)
				for j := range k {
					s, u := sess("c1", fmt.Sprint(i+j)), fmt.Sprint("u", (i+j)%users)
					if err := store.OpenSession(ctx, directory.Session{Comet: "c1", Conn: s.GetConn(), User: u}, time.Minute); err != nil {
						b.Fatal(err)
					}
					joins[j] = directory.Join{Ref: directory.SessionRef{Comet: "c1", Conn: s.GetConn()}, User: u, Room: "bench"}
					closed[j] = &topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, Session: s, User: u}
				}
				if _, err := store.JoinRooms(ctx, joins); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := h.Pipeline().Handle(testinfra.Merged(b, topics.SessionEvents, closed...)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if users, conns, err := store.RoomOnline(ctx, "bench"); err != nil || users != 0 || conns != 0 {
				b.Fatalf("after the closes the room has %d users, %d connections (%v)", users, conns, err)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/close")
		})
	}
}
