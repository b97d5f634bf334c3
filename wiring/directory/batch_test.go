package directory_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/wiring/directory"
)

// TestJoinRoomsIsJoinRoomInTurn: a batch of joins leaves the same counts,
// and reports the same ones, as the joins made one at a time.
func TestJoinRoomsIsJoinRoomInTurn(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) { testJoinRooms(t, directory.New(rdb)) })
}

func testJoinRooms(t *testing.T, s *directory.Store) {
	ctx := context.Background()
	// The joins one at a time go to rooms "one-*", the batch's to
	// "batch-*", on the same server.
	joins := func(prefix string) []directory.Join {
		j := func(comet, conn, user, room string) directory.Join {
			return directory.Join{Ref: directory.SessionRef{Comet: comet, Conn: conn}, User: user, Room: prefix + room}
		}
		return []directory.Join{
			j("c1", "a1", "alice", "r1"),
			j("c1", "a2", "alice", "r1"), // a second connection: the user was there
			j("c2", "b1", "bob", "r1"),
			j("c2", "b1", "bob", "r2"),
			j("c1", "a1", "alice", "r1"), // a repeat changes nothing
			j("c2", "b2", "bob", "r2"),
		}
	}
	var want []directory.RoomCount
	for _, x := range joins("one-") {
		rc, err := s.JoinRoom(ctx, x.Ref, x.User, x.Room)
		if err != nil {
			t.Fatal(err)
		}
		rc.Room = strings.TrimPrefix(rc.Room, "one-")
		want = append(want, rc)
	}
	got, err := s.JoinRooms(ctx, joins("batch-"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i].Room = strings.TrimPrefix(got[i].Room, "batch-")
	}
	if !slices.Equal(got, want) {
		t.Errorf("JoinRooms = %+v\nJoinRoom in turn = %+v", got, want)
	}
	for _, room := range []string{"one-r1", "one-r2", "batch-r1", "batch-r2"} {
		comets, err := s.RoomComets(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(comets)
		users, conns, err := s.RoomOnline(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"r1": "[c1 c2] 2 3", "r2": "[c2] 1 2"}[room[strings.Index(room, "-")+1:]]
		if got := fmt.Sprint(comets, users, conns); got != want {
			t.Errorf("%s: comets, users, connections %s, want %s", room, got, want)
		}
	}
}

// TestJoinRoomsInChunks: a batch longer than the join script's chunk
// (100 joins), with repeats within and across chunks and users with
// several connections, reports and leaves the counts a plain model of a
// room does.
func TestJoinRoomsInChunks(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := directory.New(rdb)
		// Some connections are in the room before the batch.
		if _, err := s.JoinRoom(ctx, directory.SessionRef{Comet: "c1", Conn: "k3"}, "u3", "big"); err != nil {
			t.Fatal(err)
		}
		conns := map[string]bool{"c1/k3": true}
		perUser := map[string]int{"u3": 1}
		perComet := map[string]int{"c1": 1}
		var joins []directory.Join
		var want []directory.RoomCount
		for i := range 250 {
			k := i
			if i%7 == 0 {
				k = i / 2 // a repeat of an earlier connection, some chunks back
			}
			comet := []string{"c1", "c2"}[k%2]
			user := fmt.Sprintf("u%d", k%60)
			ref := directory.SessionRef{Comet: comet, Conn: fmt.Sprintf("k%d", k)}
			joins = append(joins, directory.Join{Ref: ref, User: user, Room: "big"})
			changed := false
			if id := comet + "/" + ref.Conn; !conns[id] {
				conns[id] = true
				perUser[user]++
				perComet[comet]++
				changed = perUser[user] == 1
			}
			want = append(want, directory.RoomCount{Room: "big", OnlineUsers: len(perUser), Connections: len(conns), UserChanged: changed})
		}
		got, err := s.JoinRooms(ctx, joins)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("join %d (%+v): %+v, want %+v", i, joins[i], got[i], want[i])
			}
		}
		users, nconns, err := s.RoomOnline(ctx, "big")
		if err != nil || users != len(perUser) || nconns != len(conns) {
			t.Errorf("online %d users, %d connections, %v; want %d, %d", users, nconns, err, len(perUser), len(conns))
		}
		// Leaving every connection takes the counts back to nothing:
		// the per-user and per-comet counts were written right.
		for id := range conns {
			comet, conn, _ := strings.Cut(id, "/")
			var user string
			for _, j := range joins {
				if j.Ref.Comet == comet && j.Ref.Conn == conn {
					user = j.User
				}
			}
			if id == "c1/k3" {
				user = "u3"
			}
			if _, err := s.LeaveRoom(ctx, directory.SessionRef{Comet: comet, Conn: conn}, user, "big"); err != nil {
				t.Fatal(err)
			}
		}
		comets, err := s.RoomComets(ctx, "big")
		users, nconns, err2 := s.RoomOnline(ctx, "big")
		if err != nil || err2 != nil || len(comets) != 0 || users != 0 || nconns != 0 {
			t.Errorf("after every leave: comets %v, %d users, %d connections (%v, %v)", comets, users, nconns, err, err2)
		}
	})
}

// TestCloseSessionsInTurn: a batch of closes reports, session by
// session, the rooms' counts a model gets closing them one at a time,
// repeats and unknown sessions included, across chunks of the leave
// script; and it leaves the directory as the model says: the rooms'
// counts and comets, who is online, and which sessions remain.
func TestCloseSessionsInTurn(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := directory.New(rdb)
		type conn struct {
			ref   directory.SessionRef
			user  string
			rooms []string
		}
		// 300 connections of 70 users on two comets, all in "big", every
		// third also in a small room of its own five.
		var conns []conn
		for k := range 300 {
			c := conn{
				ref:   directory.SessionRef{Comet: []string{"c1", "c2"}[k%2], Conn: fmt.Sprintf("k%d", k)},
				user:  fmt.Sprintf("u%d", k%70),
				rooms: []string{"big"},
			}
			if k%3 == 0 {
				c.rooms = append(c.rooms, fmt.Sprintf("small%d", k%5))
			}
			conns = append(conns, c)
			if err := s.OpenSession(ctx, directory.Session{Comet: c.ref.Comet, Conn: c.ref.Conn, User: c.user, Device: "d"}, time.Minute); err != nil {
				t.Fatal(err)
			}
			for _, r := range c.rooms {
				if _, err := s.JoinRoom(ctx, c.ref, c.user, r); err != nil {
					t.Fatal(err)
				}
			}
		}
		// The model: per room, connections per user and per comet.
		perUser := map[string]map[string]int{}
		perComet := map[string]map[string]int{}
		nconns := map[string]int{}
		for _, c := range conns {
			for _, r := range c.rooms {
				if perUser[r] == nil {
					perUser[r], perComet[r] = map[string]int{}, map[string]int{}
				}
				perUser[r][c.user]++
				perComet[r][c.ref.Comet]++
				nconns[r]++
			}
		}
		// Close 250 of them, with repeats and sessions never opened.
		var refs []directory.SessionRef
		var want []directory.Closed
		closed := map[directory.SessionRef]bool{}
		for i := range 250 {
			var ref directory.SessionRef
			switch {
			case i%11 == 0:
				ref = directory.SessionRef{Comet: "c1", Conn: fmt.Sprintf("never%d", i)}
			case i%13 == 0:
				ref = refs[i/2] // a repeat, a chunk or more back
			default:
				ref = conns[i].ref
			}
			refs = append(refs, ref)
			k := slices.IndexFunc(conns, func(c conn) bool { return c.ref == ref })
			if k < 0 || closed[ref] {
				want = append(want, directory.Closed{})
				continue
			}
			closed[ref] = true
			c := conns[k]
			w := directory.Closed{Session: directory.Session{Comet: ref.Comet, Conn: ref.Conn, User: c.user, Device: "d"}, OK: true}
			for _, r := range c.rooms {
				perUser[r][c.user]--
				changed := perUser[r][c.user] == 0
				if changed {
					delete(perUser[r], c.user)
				}
				if perComet[r][ref.Comet]--; perComet[r][ref.Comet] == 0 {
					delete(perComet[r], ref.Comet)
				}
				nconns[r]--
				w.Rooms = append(w.Rooms, directory.RoomCount{Room: r, OnlineUsers: len(perUser[r]), Connections: nconns[r], UserChanged: changed})
			}
			want = append(want, w)
		}
		got, err := s.CloseSessions(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		byRoom := func(a, b directory.RoomCount) int { return strings.Compare(a.Room, b.Room) }
		for i := range want {
			slices.SortFunc(got[i].Rooms, byRoom)
			slices.SortFunc(want[i].Rooms, byRoom)
			if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
				t.Fatalf("close %d (%v): %+v, want %+v", i, refs[i], got[i], want[i])
			}
		}
		for r := range perUser {
			users, n, err := s.RoomOnline(ctx, r)
			if err != nil || users != len(perUser[r]) || n != nconns[r] {
				t.Errorf("%s: %d users, %d connections (%v); want %d, %d", r, users, n, err, len(perUser[r]), nconns[r])
			}
			comets, err := s.RoomComets(ctx, r)
			slices.Sort(comets)
			var wantComets []string
			for c := range perComet[r] {
				wantComets = append(wantComets, c)
			}
			slices.Sort(wantComets)
			if err != nil || !slices.Equal(comets, wantComets) {
				t.Errorf("%s: comets %v (%v), want %v", r, comets, err, wantComets)
			}
		}
		left := map[string]int{}
		for _, c := range conns {
			if !closed[c.ref] {
				left[c.user]++
			}
		}
		for u := range 70 {
			user := fmt.Sprintf("u%d", u)
			online, err := s.Online(ctx, user)
			refs, err2 := s.UserSessions(ctx, user)
			if err != nil || err2 != nil || online[user] != (left[user] > 0) || len(refs) != left[user] {
				t.Errorf("%s: online %v, sessions %v (%v, %v); want %d sessions", user, online[user], refs, err, err2, left[user])
			}
		}
		expired, err := s.ExpiredSessions(ctx, time.Now().Add(time.Hour), 1000)
		if err != nil || len(expired) != len(conns)-len(closed) {
			t.Errorf("%d sessions have deadlines (%v), want %d", len(expired), err, len(conns)-len(closed))
		}
		for _, r := range expired {
			if closed[r] {
				t.Errorf("closed session %v still has a deadline", r)
			}
		}
	})
}

// TestOpenSessionsWithin: sessions of one user in a batch count in turn
// against the bound, a repeat always opens, and a refused session leaves
// nothing behind.
func TestOpenSessionsWithin(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) { testOpenSessionsWithin(t, directory.New(rdb)) })
}

func testOpenSessionsWithin(t *testing.T, s *directory.Store) {
	ctx := context.Background()
	sess := func(conn, user string) directory.Session {
		return directory.Session{Comet: "c1", Conn: conn, User: user, Device: "d"}
	}
	if _, err := s.OpenSessionsWithin(ctx, []directory.Session{sess("a1", "alice")}, time.Minute, 2); err != nil {
		t.Fatal(err)
	}
	got, err := s.OpenSessionsWithin(ctx, []directory.Session{
		sess("a2", "alice"), sess("b1", "bob"), sess("a3", "alice"), sess("a1", "alice"), sess("a4", "alice"),
	}, time.Minute, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, true, false, true, false}; !slices.Equal(got, want) {
		t.Errorf("opened %v, want %v", got, want)
	}
	refs, err := s.UserSessions(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 2 {
		t.Errorf("alice has %v, want a1 and a2", refs)
	}
	for conn, want := range map[string]bool{"a1": true, "a2": true, "a3": false, "a4": false, "b1": true} {
		if open, err := s.SessionOpen(ctx, directory.SessionRef{Comet: "c1", Conn: conn}); err != nil || open != want {
			t.Errorf("session %s open %v (%v), want %v", conn, open, err, want)
		}
	}
	// SessionsOpen agrees with SessionOpen.
	open, err := s.SessionsOpen(ctx, []directory.SessionRef{{Comet: "c1", Conn: "a1"}, {Comet: "c1", Conn: "a3"}, {Comet: "c1", Conn: "b1"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true}; !slices.Equal(open, want) {
		t.Errorf("SessionsOpen = %v, want %v", open, want)
	}
}

func TestBatchLookups(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) { testBatchLookups(t, directory.New(rdb)) })
}

func testBatchLookups(t *testing.T, s *directory.Store) {
	ctx := context.Background()
	for _, u := range []directory.User{{ID: "alice", Name: "Alice"}, {ID: "bob", Disabled: true}} {
		if err := s.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRoom(ctx, directory.Room{ID: "r1", Name: "One", Kind: "group"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, "r1", "alice"); err != nil {
		t.Fatal(err)
	}
	users, err := s.Users(ctx, "alice", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(users); got != "map[alice:{alice Alice false} bob:{bob  true}]" {
		t.Errorf("Users = %s", got)
	}
	rooms, err := s.Rooms(ctx, "r1", "r2")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rooms); got != "map[r1:{r1 One group}]" {
		t.Errorf("Rooms = %s", got)
	}
	member, err := s.AreMembers(ctx, []directory.Membership{{Room: "r1", User: "alice"}, {Room: "r1", User: "bob"}, {Room: "r2", User: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false}; !slices.Equal(member, want) {
		t.Errorf("AreMembers = %v, want %v", member, want)
	}
}

// TestConversationPagesIsConversationPage: the first pages read for many
// users at once are those read for each alone, whatever the limits.
func TestConversationPagesIsConversationPage(t *testing.T) {
	t.Parallel()
	onBackends(t, testConversationPages)
}

func testConversationPages(t *testing.T, rdb redis.UniversalClient) {
	s := directory.New(rdb)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	base := time.UnixMilli(1_700_000_000_000)
	// alice: two rooms, four 1:1 conversations, one read, one mention;
	// bob: one room; carol: 1:1 conversations of the earlier model (a
	// plain set); dave: nothing.
	for _, r := range []string{"zoo", "dev"} {
		must(s.AddMember(ctx, r, "alice"))
	}
	must(s.AddMember(ctx, "dev", "bob"))
	for i := range 4 {
		must(s.AddConversationAt(ctx, "alice", fmt.Sprintf("dm:alice:u%d", i), base.Add(time.Duration(i)*time.Second)))
	}
	for _, c := range []string{"room:dev", "room:dev", "room:dev", "dm:alice:u1"} {
		_, err := s.Assign(ctx, c, "x", "", func() string { return "id" })
		must(err)
	}
	_, _, err := s.MarkRead(ctx, "alice", "room:dev", 1)
	must(err)
	must(s.AddMentions(ctx, "room:dev", 3, []string{"alice"}, time.Hour))
	must(rdb.SAdd(ctx, "{u:carol}:convs", "dm:carol:a", "dm:carol:b").Err())

	users := []string{"alice", "bob", "carol", "dave"}
	for _, lim := range []struct{ limit, bytes int }{{1000, directory.MaxConversationBytes}, {1, directory.MaxConversationBytes}, {3, directory.MaxConversationBytes}, {1000, 100}} {
		got, err := s.ConversationPages(ctx, users, lim.limit, lim.bytes)
		if err != nil {
			t.Fatal(err)
		}
		for i, u := range users {
			want, err := s.ConversationPage(ctx, u, "", lim.limit, lim.bytes)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got[i]) != fmt.Sprint(want) {
				t.Errorf("limits %v, %s: ConversationPages gave %+v, ConversationPage %+v", lim, u, got[i], want)
			}
		}
	}
	// A sanity check that the pages are not all empty.
	p, err := s.ConversationPages(ctx, []string{"alice"}, 1000, directory.MaxConversationBytes)
	must(err)
	if len(p[0].States) != 6 || p[0].States[0].Conversation != "room:dev" || p[0].States[0].Unread != 2 || p[0].States[0].UnreadMentions != 1 {
		t.Errorf("alice's page %+v", p[0])
	}
}

// onBackends runs test on each of backends, in parallel subtests.
func onBackends(t *testing.T, test func(t *testing.T, rdb redis.UniversalClient)) {
	for name, newClient := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, newClient(t))
		})
	}
}
