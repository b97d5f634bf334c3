package binlogsync

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
)

// fakeDir records the Directory calls it gets.
type fakeDir struct {
	calls   []string
	members map[string][]string
}

func (d *fakeDir) call(format string, args ...any) error {
	d.calls = append(d.calls, fmt.Sprintf(format, args...))
	return nil
}

func (d *fakeDir) PutUser(_ context.Context, u directory.User) error {
	return d.call("PutUser %s %v", u.ID, u.Disabled)
}
func (d *fakeDir) DeleteUser(_ context.Context, id string) error { return d.call("DeleteUser %s", id) }
func (d *fakeDir) PutRoom(_ context.Context, r directory.Room) error {
	return d.call("PutRoom %s", r.ID)
}
func (d *fakeDir) DeleteRoom(_ context.Context, id string) error { return d.call("DeleteRoom %s", id) }
func (d *fakeDir) AddMembers(_ context.Context, ms []directory.Membership) error {
	return d.call("AddMembers %v", ms)
}
func (d *fakeDir) RemoveMember(_ context.Context, room, user string) error {
	return d.call("RemoveMember %s %s", room, user)
}
func (d *fakeDir) Members(_ context.Context, room string) ([]string, error) {
	return d.members[room], d.call("Members %s", room)
}
func (d *fakeDir) Block(_ context.Context, user, other string) error {
	return d.call("Block %s %s", user, other)
}
func (d *fakeDir) Unblock(_ context.Context, user, other string) error {
	return d.call("Unblock %s %s", user, other)
}

func rowOf(kv ...any) row {
	r := row{cols: map[string]int{}}
	for i := 0; i+1 < len(kv); i += 2 {
		r.cols[kv[i].(string)] = len(r.vals)
		r.vals = append(r.vals, kv[i+1])
	}
	return r
}

// sessionEvents decodes what was published; every message must be a
// session event keyed by its user.
func sessionEvents(t *testing.T, rec *testinfra.Recorder) []string {
	t.Helper()
	var out []string
	for _, p := range rec.Take() {
		if p.Topic != topics.SessionEvents.Name {
			t.Fatalf("published on %s: binlogsync only publishes session events", p.Topic)
		}
		ev, err := topics.SessionEvents.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if key := p.Msg.Metadata.Get(topics.KeyMetadata); key != "user/"+ev.GetUser() {
			t.Fatalf("event %v keyed %q, want by its user", ev, key)
		}
		if ev.GetSession() != nil || ev.GetTimeUnixMs() == 0 {
			t.Fatalf("event %v: want no session and a time", ev)
		}
		out = append(out, fmt.Sprintf("%v %s %s %s", ev.GetKind(), ev.GetUser(), ev.GetRoom(), ev.GetReason()))
	}
	return out
}

// TestRowsBecomeDirectoryWritesAndRevocations checks, for every table and
// change, what the applier writes to the directory and what it publishes:
// revocations, after the directory write, and nothing else.
func TestRowsBecomeDirectoryWritesAndRevocations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		apply  func(a *applier) error
		calls  []string
		events []string
	}{
		{"enabled user", func(a *applier) error {
			return a.upsert(context.Background(), tableUsers, rowOf("id", "bob", "name", "Bob", "disabled", int8(0)))
		}, []string{"PutUser bob false"}, nil},
		{"disabled user", func(a *applier) error {
			return a.upsert(context.Background(), tableUsers, rowOf("id", "bob", "name", "Bob", "disabled", int8(1)))
		}, []string{"PutUser bob true"}, []string{"USER_REVOKED bob  account disabled"}},
		{"deleted user", func(a *applier) error {
			return a.remove(context.Background(), tableUsers, rowOf("id", "bob"))
		}, []string{"DeleteUser bob"}, []string{"USER_REVOKED bob  account deleted"}},
		{"room", func(a *applier) error {
			return a.upsert(context.Background(), tableRooms, rowOf("id", "lobby", "name", "Lobby", "kind", "group"))
		}, []string{"PutRoom lobby"}, nil},
		{"deleted room", func(a *applier) error {
			return a.remove(context.Background(), tableRooms, rowOf("id", "lobby"))
		}, []string{"Members lobby", "DeleteRoom lobby"}, []string{
			"MEMBERSHIP_REVOKED alice lobby room deleted", "MEMBERSHIP_REVOKED bob lobby room deleted",
		}},
		{"membership", func(a *applier) error {
			return a.upsert(context.Background(), tableMembers, rowOf("room_id", "lobby", "user_id", "bob"))
		}, []string{"AddMembers [{lobby bob}]"}, nil},
		{"removed membership", func(a *applier) error {
			return a.remove(context.Background(), tableMembers, rowOf("room_id", "lobby", "user_id", "bob"))
		}, []string{"RemoveMember lobby bob"}, []string{"MEMBERSHIP_REVOKED bob lobby membership removed"}},
		{"block", func(a *applier) error {
			return a.upsert(context.Background(), tableBlocks, rowOf("user_id", "bob", "blocked_id", "carol"))
		}, []string{"Block bob carol"}, nil},
		{"unblock", func(a *applier) error {
			return a.remove(context.Background(), tableBlocks, rowOf("user_id", "bob", "blocked_id", "carol"))
		}, []string{"Unblock bob carol"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := &fakeDir{members: map[string][]string{"lobby": {"alice", "bob"}}}
			rec := &testinfra.Recorder{}
			if err := tt.apply(&applier{dir: dir, pub: rec}); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(dir.calls) != fmt.Sprint(tt.calls) {
				t.Errorf("directory calls %q, want %q", dir.calls, tt.calls)
			}
			if got := sessionEvents(t, rec); fmt.Sprint(got) != fmt.Sprint(tt.events) {
				t.Errorf("events %q, want %q", got, tt.events)
			}
		})
	}
}

// TestDeletedBigRoomPublishesInBatches: a deleted room's revocations go
// out in bounded Publish calls, one event per member.
func TestDeletedBigRoomPublishesInBatches(t *testing.T) {
	t.Parallel()
	members := make([]string, 2*publishBatch+5)
	for i := range members {
		members[i] = fmt.Sprintf("u%d", i)
	}
	dir := &fakeDir{members: map[string][]string{"big": members}}
	pub := &countingPublisher{}
	a := &applier{dir: dir, pub: pub}
	if err := a.remove(context.Background(), tableRooms, rowOf("id", "big")); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pub.sizes) != fmt.Sprint([]int{publishBatch, publishBatch, 5}) {
		t.Fatalf("publish calls of %v messages", pub.sizes)
	}
}

// TestFailedPublishIsAnError: the row is not done until its revocation is
// published, so canal stops and the row is applied again.
func TestFailedPublishIsAnError(t *testing.T) {
	t.Parallel()
	rec := &testinfra.Recorder{Err: errors.New("kafka down")}
	a := &applier{dir: &fakeDir{}, pub: rec}
	err := a.remove(context.Background(), tableMembers, rowOf("room_id", "lobby", "user_id", "bob"))
	if err == nil || !strings.Contains(err.Error(), "kafka down") {
		t.Fatalf("remove = %v, want the publish error", err)
	}
	err = a.upsert(context.Background(), tableUsers, rowOf("id", "bob", "disabled", "1"))
	if err == nil || !strings.Contains(err.Error(), "kafka down") {
		t.Fatalf("upsert = %v, want the publish error", err)
	}
}

// TestDirectoryHasNoPresence: the worker cannot write presence, because
// the Directory it is given has nothing but the directory's methods
// (users, rooms, memberships, blocks). A method added here must not be a
// presence one: presence is the presence worker's alone.
func TestDirectoryHasNoPresence(t *testing.T) {
	t.Parallel()
	dt := reflect.TypeFor[Directory]()
	var got []string
	for i := range dt.NumMethod() {
		got = append(got, dt.Method(i).Name)
	}
	want := []string{"AddMembers", "Block", "DeleteRoom", "DeleteUser", "Members", "PutRoom", "PutUser", "RemoveMember", "Unblock"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("binlogsync.Directory has methods %v, want only the directory's %v", got, want)
	}
}

type countingPublisher struct{ sizes []int }

func (p *countingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.sizes = append(p.sizes, len(msgs))
	return nil
}
func (p *countingPublisher) Close() error { return nil }

// TestRowsWithInvalidIdsAreSkipped: a row naming a user or a room whose
// id breaks the id rule is neither written to the directory nor revoked;
// it is counted.
func TestRowsWithInvalidIdsAreSkipped(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", topics.MaxIDLen+1)
	tests := []struct {
		name  string
		apply func(a *applier) error
	}{
		{"user with a colon", func(a *applier) error {
			return a.upsert(context.Background(), tableUsers, rowOf("id", "acme:alice", "name", "A", "disabled", int8(0)))
		}},
		{"disabled user with a colon", func(a *applier) error {
			return a.upsert(context.Background(), tableUsers, rowOf("id", "acme:alice", "disabled", int8(1)))
		}},
		{"deleted user with a colon", func(a *applier) error {
			return a.remove(context.Background(), tableUsers, rowOf("id", "acme:alice"))
		}},
		{"user with an empty id", func(a *applier) error {
			return a.upsert(context.Background(), tableUsers, rowOf("id", "", "disabled", int8(0)))
		}},
		{"user named as the system sender", func(a *applier) error {
			return a.upsert(context.Background(), tableUsers, rowOf("id", topics.SystemSender, "disabled", int8(0)))
		}},
		{"room too long", func(a *applier) error {
			return a.upsert(context.Background(), tableRooms, rowOf("id", long, "name", "R"))
		}},
		{"deleted room with a brace", func(a *applier) error {
			return a.remove(context.Background(), tableRooms, rowOf("id", "{r:x}"))
		}},
		{"membership of a user with a colon", func(a *applier) error {
			return a.upsert(context.Background(), tableMembers, rowOf("room_id", "lobby", "user_id", "acme:bob"))
		}},
		{"removed membership of a bad room", func(a *applier) error {
			return a.remove(context.Background(), tableMembers, rowOf("room_id", "lob by", "user_id", "bob"))
		}},
		{"block of a user with a colon", func(a *applier) error {
			return a.upsert(context.Background(), tableBlocks, rowOf("user_id", "bob", "blocked_id", "a:b"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := &fakeDir{members: map[string][]string{"lobby": {"alice", "bob"}}}
			rec := &testinfra.Recorder{}
			a := &applier{dir: dir, pub: rec}
			if err := tt.apply(a); err != nil {
				t.Fatal(err)
			}
			if len(dir.calls) != 0 {
				t.Errorf("directory calls %q, want none", dir.calls)
			}
			if got := sessionEvents(t, rec); len(got) != 0 {
				t.Errorf("events %q, want none", got)
			}
			if n := a.skipped.Load(); n != 1 {
				t.Errorf("skipped %d rows, want 1", n)
			}
		})
	}
	a := &applier{dir: &fakeDir{}, pub: &testinfra.Recorder{}}
	ms := a.validMemberships([]directory.Membership{{Room: "lobby", User: "bob"}, {Room: "lobby", User: "x:y"}, {Room: "r:1", User: "bob"}})
	if fmt.Sprint(ms) != "[{lobby bob}]" || a.skipped.Load() != 2 {
		t.Errorf("valid memberships %v, skipped %d; want [{lobby bob}], 2", ms, a.skipped.Load())
	}
}
