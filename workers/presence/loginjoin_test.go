package presence_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/presence"
)

// TestLoginJoinsAreJoinsAfterLogin: a login that asks to join rooms
// (Login.join) leaves the directory as the login followed by a JoinRoom
// of each room does, tells the rooms the same, and answers in its
// LoginResult what those JoinRooms would have got: the Joined of each
// room joined, in order, and the error of each room refused. The comet
// is told to index the joined rooms with the authentication. Logins
// that come alone and logins merged into one batch give the same.
func TestLoginJoinsAreJoinsAfterLogin(t *testing.T) {
	t.Parallel()
	type login struct {
		comet, conn, user string
		join              []string
	}
	logins := []login{
		{"c1", "b1", "bob", []string{"lobby"}},
		{"c1", "a1", "alice", []string{"lobby", "ops", "nope", "dev", "lobby", "a:b"}}, // ops: not a member; nope: no such room; lobby twice; a:b: breaks the id rule
		{"c2", "k1", "carol", []string{"dev", "lobby"}},                                // dev: not a member
		{"c2", "m1", "mallory", []string{"lobby"}},                                     // disabled: joins nothing
		{"c2", "k2", "carol", nil},
	}
	opened := func(l login) *topicpb.SessionEvent {
		return &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess(l.comet, l.conn), User: l.user, Device: "d", RequestId: 1, Join: l.join}
	}

	// The expected: each login alone, then a JoinRoom of each room once.
	inTurn, inTurnStore, inTurnRec := fixture(t, presence.Config{})
	var want []testinfra.Published
	for _, l := range logins {
		ev := opened(l)
		ev.Join = nil
		event(t, inTurn, ev)
		pubs := inTurnRec.Take()
		want = append(want, pubs...)
		ds := answersTo(t, pubs, l.comet, l.conn)
		if len(ds) != 1 {
			t.Fatalf("%s/%s: %d answers to the login", l.comet, l.conn, len(ds))
		}
		if ds[0].GetFrame().GetError() != nil {
			continue // refused: it joins nothing
		}
		var seen []string
		for i, r := range l.join {
			if slices.Contains(seen, r) {
				continue
			}
			seen = append(seen, r)
			event(t, inTurn, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess(l.comet, l.conn), User: l.user, Room: r, RequestId: uint64(2 + i)})
		}
	}
	want = append(want, inTurnRec.Take()...)
	wantPresence := presenceChanges(t, want, false)
	wantState := state(t, inTurnStore)

	for _, merged := range []bool{false, true} {
		t.Run(fmt.Sprint("merged=", merged), func(t *testing.T) {
			h, store, rec := fixture(t, presence.Config{})
			if merged {
				var evs []*topicpb.SessionEvent
				for _, l := range logins {
					evs = append(evs, opened(l))
				}
				if err := h.Pipeline().Handle(testinfra.Merged(t, topics.SessionEvents, evs...)); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, l := range logins {
					event(t, h, opened(l))
				}
			}
			got := rec.Take()
			for _, l := range logins {
				ds := answersTo(t, got, l.comet, l.conn)
				if len(ds) != 1 {
					t.Fatalf("%s/%s: %d answers to a login with joins, want 1: %v", l.comet, l.conn, len(ds), ds)
				}
				d := ds[0]
				exp := answersTo(t, want, l.comet, l.conn)
				if e := exp[0].GetFrame().GetError(); e != nil {
					if !proto.Equal(d, exp[0]) {
						t.Errorf("%s/%s refused:\n%v\nwant\n%v", l.comet, l.conn, d, exp[0])
					}
					continue
				}
				res := d.GetFrame().GetLoginResult()
				joined, refused := res.GetJoined(), res.GetJoinRefused()
				res.Joined, res.JoinRefused = nil, nil
				res.ServerTimeUnixMs = 0
				exp[0].GetFrame().GetLoginResult().ServerTimeUnixMs = 0
				if got, want := d.GetControl(), (&topicpb.Control{Authenticate: l.user, Joins: roomsOf(joined)}); !proto.Equal(got, want) {
					t.Errorf("%s/%s: control %v, want %v", l.comet, l.conn, got, want)
				}
				d.Control = exp[0].GetControl()
				if !proto.Equal(d, exp[0]) {
					t.Errorf("%s/%s: login answered\n%v\nwant\n%v", l.comet, l.conn, d, exp[0])
				}
				var wantJoined []*clientpb.Joined
				var wantRefused []*clientpb.JoinRefused
				for _, a := range exp[1:] {
					if j := a.GetFrame().GetJoined(); j != nil {
						wantJoined = append(wantJoined, j)
					} else {
						room := l.join[a.GetFrame().GetRequestId()-2]
						wantRefused = append(wantRefused, &clientpb.JoinRefused{Room: room, Error: a.GetFrame().GetError()})
					}
				}
				if merged {
					// Who is online when a join is answered depends on
					// the order of different users' joins.
					for _, js := range [][]*clientpb.Joined{joined, wantJoined} {
						for _, j := range js {
							if len(j.GetOnlineUsers()) > 0 && int(j.GetOnlineCount()) != len(j.GetOnlineUsers()) {
								t.Errorf("%s/%s: joined %v: online count is not the users listed", l.comet, l.conn, j)
							}
							j.OnlineCount, j.OnlineUsers = 0, nil
						}
					}
				}
				if fmt.Sprint(joined) != fmt.Sprint(wantJoined) || fmt.Sprint(refused) != fmt.Sprint(wantRefused) {
					t.Errorf("%s/%s: joined %v refused %v, want joined %v refused %v", l.comet, l.conn, joined, refused, wantJoined, wantRefused)
				}
			}
			if len(wantPresence) == 0 {
				t.Fatal("no presence change in the expected run")
			}
			// Merged, which comets hear of a change, and the counts it
			// carries, depend on the order of different users' joins:
			// only the changes themselves must be the same.
			if got, want := presenceChanges(t, got, merged), presenceChanges(t, want, merged); !slices.Equal(got, want) {
				t.Errorf("presence changes %v, want %v", got, want)
			}
			if got := state(t, store); got != wantState {
				t.Errorf("directory:\n%s\nwant\n%s", got, wantState)
			}
		})
	}
}

// answersTo decodes the deliveries of pubs that answer one connection, in order.
func answersTo(t *testing.T, pubs []testinfra.Published, comet, conn string) []*topicpb.Delivery {
	t.Helper()
	var out []*topicpb.Delivery
	for _, p := range pubs {
		if p.Topic != topics.Delivery(comet) {
			continue
		}
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(d.GetConns(), []string{conn}) && d.GetFrame().GetPresence() == nil {
			out = append(out, d)
		}
	}
	return out
}

// presenceChanges lists the presence changes of pubs, each with the
// comet it went to, sorted; only the changes, once each, if bare.
func presenceChanges(t *testing.T, pubs []testinfra.Published, bare bool) []string {
	t.Helper()
	var out []string
	for _, p := range pubs {
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if pc := d.GetFrame().GetPresence(); pc != nil {
			if bare {
				out = append(out, fmt.Sprint(pc.GetRoom(), " ", pc.GetUser(), " ", pc.GetOnline()))
			} else {
				out = append(out, p.Topic+" "+prototext.MarshalOptions{}.Format(pc))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func roomsOf(js []*clientpb.Joined) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.GetRoom())
	}
	return out
}

// TestWaveTellsEachCometOnce: the presence changes of a wave of logins
// that join rooms reach each comet in one publish, as the wave's answers
// do, whatever the number of changes.
func TestWaveTellsEachCometOnce(t *testing.T) {
	t.Parallel()
	h, _, rec := fixture(t, presence.Config{})
	var evs []*topicpb.SessionEvent
	for i, u := range []string{"alice", "bob", "carol"} {
		comet := fmt.Sprint("c", 1+i%2)
		evs = append(evs, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess(comet, u+"1"), User: u, RequestId: 1, Join: []string{"lobby"}})
	}
	if err := h.Pipeline().Handle(testinfra.Merged(t, topics.SessionEvents, evs...)); err != nil {
		t.Fatal(err)
	}
	changes := presenceChanges(t, rec.Take(), false)
	// Each of the three tells both comets, which both have members in the lobby.
	if len(changes) != 6 {
		t.Fatalf("presence changes %v, want 3 to each of c1 and c2", changes)
	}
	if got := rec.Calls(); got != 4 {
		t.Errorf("%d publishes, want 4: each comet's answers in one, and its presence changes in one", got)
	}
}
