package api_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/binlogsync"
)

// TestDirectoryWritesMySQL: with Config.MySQL the Directory service reads
// and writes the system of record's tables, publishes no revocation
// (binlog sync does, from the binlog), and leaves Redis alone.
func TestDirectoryWritesMySQL(t *testing.T) {
	t.Parallel()
	db := testinfra.StartMariaDB(t, "laneim", binlogsync.Statements())
	admin := db.Admin(t)
	rec := &testinfra.Recorder{}
	redisDir := directory.New(testinfra.RedisClient(t))
	s, err := api.New(api.Config{
		Token:                 "t",
		DirectoryFollowsMySQL: true,
		MySQL:                 fmt.Sprintf("mariadb://%s:%s@%s/%s", db.AdminUser, db.AdminPassword, db.Addr, db.Database),
	}, rec, fakePresence{}, api.Optional{Directory: redisDir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	count := func(query string) int64 {
		t.Helper()
		res, err := admin.Execute(query)
		if err != nil {
			t.Fatal(err)
		}
		n, err := res.GetInt(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	must := func(_ *apipb.DirectoryReply, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddMember(ctx, &apipb.MemberRequest{Room: "ops", User: "dave"}); status.Code(err) != codes.NotFound {
		t.Fatalf("add to a room not in MySQL: %v, want NotFound", err)
	}
	must(s.PutRoom(ctx, &apipb.PutRoomRequest{Room: "ops", Name: "Operations"}))
	if _, err := s.AddMember(ctx, &apipb.MemberRequest{Room: "ops", User: "dave"}); status.Code(err) != codes.NotFound {
		t.Fatalf("add a user not in MySQL: %v, want NotFound", err)
	}
	must(s.PutUser(ctx, &apipb.PutUserRequest{User: "dave", Name: "Dave"}))
	must(s.PutUser(ctx, &apipb.PutUserRequest{User: "erin"}))
	must(s.AddMember(ctx, &apipb.MemberRequest{Room: "ops", User: "dave"}))
	must(s.AddMember(ctx, &apipb.MemberRequest{Room: "ops", User: "dave"})) // idempotent
	must(s.AddMember(ctx, &apipb.MemberRequest{Room: "ops", User: "erin"}))
	must(s.Block(ctx, &apipb.BlockRequest{User: "dave", Blocked: "erin"}))
	must(s.PutUser(ctx, &apipb.PutUserRequest{User: "erin", Name: "Erin", Disabled: true}))
	for q, want := range map[string]int64{
		"SELECT COUNT(*) FROM rooms WHERE id = 'ops' AND name = 'Operations' AND kind = 'group'": 1,
		"SELECT COUNT(*) FROM users WHERE id = 'erin' AND name = 'Erin' AND disabled = 1":        1,
		"SELECT COUNT(*) FROM room_members WHERE room_id = 'ops'":                                2,
		"SELECT COUNT(*) FROM blocks WHERE user_id = 'dave' AND blocked_id = 'erin'":             1,
	} {
		if n := count(q); n != want {
			t.Errorf("%s = %d, want %d", q, n, want)
		}
	}
	must(s.RemoveMember(ctx, &apipb.MemberRequest{Room: "ops", User: "erin"}))
	must(s.Unblock(ctx, &apipb.BlockRequest{User: "dave", Blocked: "erin"}))
	// Of concurrent deletions of one user, one answers OK and the others
	// NotFound (abuse check: both answered 200).
	must(s.PutUser(ctx, &apipb.PutUserRequest{User: "frank"}))
	codesSeen := make(chan codes.Code, 3)
	for range 3 {
		go func() {
			_, err := s.DeleteUser(ctx, &apipb.DeleteUserRequest{User: "frank"})
			codesSeen <- status.Code(err)
		}()
	}
	var oks, notFound int
	for range 3 {
		switch c := <-codesSeen; c {
		case codes.OK:
			oks++
		case codes.NotFound:
			notFound++
		default:
			t.Errorf("concurrent delete: %v", c)
		}
	}
	if oks != 1 || notFound != 2 {
		t.Errorf("concurrent deletes: %d OK, %d NotFound; want 1 and 2", oks, notFound)
	}
	must(s.DeleteUser(ctx, &apipb.DeleteUserRequest{User: "dave"}))
	if _, err := s.PutUser(ctx, &apipb.PutUserRequest{User: "dave", Name: "Another Dave"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("put a deleted user's id: %v, want FailedPrecondition", err)
	}
	must(s.DeleteRoom(ctx, &apipb.DeleteRoomRequest{Room: "ops"}))
	if _, err := s.DeleteRoom(ctx, &apipb.DeleteRoomRequest{Room: "ops"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete a deleted room: %v, want NotFound", err)
	}
	for _, q := range []string{
		"SELECT COUNT(*) FROM rooms", "SELECT COUNT(*) FROM room_members", "SELECT COUNT(*) FROM blocks",
		"SELECT COUNT(*) FROM users WHERE id = 'dave'",
		"SELECT COUNT(*) FROM deleted_users WHERE id NOT IN ('dave', 'frank')",
	} {
		if n := count(q); n != 0 {
			t.Errorf("%s = %d, want 0", q, n)
		}
	}
	if out := rec.Take(); len(out) != 0 {
		t.Errorf("published %d revocations; binlog sync publishes them", len(out))
	}
	if _, ok, _ := redisDir.Room(ctx, "ops"); ok {
		t.Error("the gateway wrote Redis")
	}
}
