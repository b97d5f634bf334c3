package binlogsync_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/binlogsync"
)

type fixture struct {
	t     testing.TB
	db    *testinfra.MariaDB
	sql   *client.Conn
	store *directory.Store
	pos   *binlogsync.Positions
	rec   *testinfra.Recorder
}

func newFixture(t testing.TB) *fixture {
	db := testinfra.StartMariaDB(t, "laneim", binlogsync.Statements())
	rdb := testinfra.RedisClient(t)
	return &fixture{t: t, db: db, sql: db.Admin(t), store: directory.New(rdb), pos: binlogsync.NewPositions(rdb, ""), rec: &testinfra.Recorder{}}
}

// directoryOnly hands the syncer nothing but the Directory methods of the
// store, so it cannot reach presence even by a type assertion.
type directoryOnly struct{ binlogsync.Directory }

func (f *fixture) exec(stmts ...string) { f.t.Helper(); f.db.Exec(f.t, f.sql, stmts...) }

// start runs a syncer as the minimally privileged sync user until the
// returned stop is called.
func (f *fixture) start() (*binlogsync.Syncer, func()) {
	f.t.Helper()
	s, err := binlogsync.New(binlogsync.Config{
		Addr: f.db.Addr, User: f.db.SyncUser, Password: f.db.SyncPassword, Database: f.db.Database,
		Flavor: "mariadb", RetryMin: 50 * time.Millisecond,
	}, directoryOnly{f.store}, f.pos, f.rec, slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("syncer: %v", err)
		}
	}
}

func (f *fixture) eventually(msg string, cond func() bool) {
	f.t.Helper()
	testinfra.Eventually(f.t, 20*time.Second, cond, "%s", msg)
}

func (f *fixture) user(id string) (directory.User, bool) {
	u, ok, err := f.store.User(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return u, ok
}

func (f *fixture) member(room, user string) bool {
	ok, err := f.store.IsMember(context.Background(), room, user)
	if err != nil {
		f.t.Fatal(err)
	}
	return ok
}

func TestSnapshotThenEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.exec(
		"INSERT INTO users (id, name) VALUES ('alice', 'Alice'), ('bob', 'Bob'), ('carol', 'Carol')",
		"INSERT INTO rooms (id, name, kind) VALUES ('lobby', 'Lobby', 'group')",
		"INSERT INTO room_members (room_id, user_id) VALUES ('lobby', 'alice'), ('lobby', 'bob')",
		"INSERT INTO blocks (user_id, blocked_id) VALUES ('bob', 'carol')",
	)
	s, stop := f.start()
	defer stop()
	f.eventually("snapshot not applied", func() bool {
		_, ok := f.user("carol")
		blocked, _ := f.store.Blocks(ctx, "bob", "carol")
		return ok && f.member("lobby", "bob") && blocked
	})
	if got := s.Stats().Snapshots; got != 1 {
		t.Fatalf("snapshots = %d", got)
	}

	// bob is online on comet c1 and in the lobby (the presence worker's
	// doing; binlogsync must leave it alone).
	bob := directory.SessionRef{Comet: "c1", Conn: "b1"}
	if err := f.store.OpenSession(ctx, directory.Session{Comet: "c1", Conn: "b1", User: "bob"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.JoinRoom(ctx, bob, "bob", "lobby"); err != nil {
		t.Fatal(err)
	}
	f.rec.Take()

	steps := []struct {
		name  string
		stmts []string
		ok    func() bool
	}{
		{"insert user", []string{"INSERT INTO users (id, name) VALUES ('dave', 'Dave')"}, func() bool { _, ok := f.user("dave"); return ok }},
		{"update user", []string{"UPDATE users SET name = 'Dave D.' WHERE id = 'dave'"}, func() bool { u, _ := f.user("dave"); return u.Name == "Dave D." }},
		{"insert room", []string{"INSERT INTO rooms (id, name) VALUES ('dev', 'Dev')"}, func() bool { _, ok, _ := f.store.Room(ctx, "dev"); return ok }},
		{"insert members in one statement", []string{"INSERT INTO room_members (room_id, user_id) VALUES ('dev', 'dave'), ('dev', 'carol')"}, func() bool { return f.member("dev", "dave") && f.member("dev", "carol") }},
		{"move a membership", []string{"UPDATE room_members SET user_id = 'alice' WHERE room_id = 'dev' AND user_id = 'carol'"}, func() bool { return f.member("dev", "alice") && !f.member("dev", "carol") }},
		{"delete a membership", []string{"DELETE FROM room_members WHERE room_id = 'dev' AND user_id = 'dave'"}, func() bool { return !f.member("dev", "dave") }},
		{"delete block", []string{"DELETE FROM blocks WHERE user_id = 'bob'"}, func() bool { b, _ := f.store.Blocks(ctx, "bob", "carol"); return !b }},
		{"insert block", []string{"INSERT INTO blocks VALUES ('carol', 'dave')"}, func() bool { b, _ := f.store.Blocks(ctx, "carol", "dave"); return b }},
		{"unknown table and DDL", []string{
			"CREATE TABLE audit (id INT PRIMARY KEY, what VARCHAR(20))",
			"INSERT INTO audit VALUES (1, 'x')",
			"ALTER TABLE users ADD COLUMN avatar VARCHAR(255) NULL",
			"INSERT INTO users (id, name, avatar) VALUES ('erin', 'Erin', 'e.png')",
		}, func() bool { u, ok := f.user("erin"); return ok && u.Name == "Erin" }},
		{"delete room", []string{"DELETE FROM rooms WHERE id = 'dev'"}, func() bool { _, ok, _ := f.store.Room(ctx, "dev"); return !ok && !f.member("dev", "alice") }},
		{"delete user", []string{"DELETE FROM users WHERE id = 'erin'"}, func() bool { _, ok := f.user("erin"); return !ok }},
	}
	for _, st := range steps {
		f.exec(st.stmts...)
		f.eventually(st.name, st.ok)
	}
	// Each membership or user taken away became one revocation, in order.
	waitEvents(t, f.rec,
		"MEMBERSHIP_REVOKED carol dev membership removed", // moved to alice
		"MEMBERSHIP_REVOKED dave dev membership removed",
		"MEMBERSHIP_REVOKED alice dev room deleted",
		"USER_REVOKED erin  account deleted",
	)

	// Removing bob from the lobby in MySQL publishes a revocation for the
	// presence worker, and leaves his presence alone.
	f.exec("DELETE FROM room_members WHERE room_id = 'lobby' AND user_id = 'bob'")
	waitEvents(t, f.rec, "MEMBERSHIP_REVOKED bob lobby membership removed")
	if f.member("lobby", "bob") {
		t.Fatal("bob still a member of the lobby in the directory")
	}

	// Disabling bob publishes a revocation of bob.
	f.exec("UPDATE users SET disabled = 1 WHERE id = 'bob'")
	waitEvents(t, f.rec, "USER_REVOKED bob  account disabled")
	if u, _ := f.user("bob"); !u.Disabled {
		t.Fatal("bob not disabled in the directory")
	}

	// binlogsync wrote no presence: bob's session and room entry are as
	// presence left them.
	if users, conns, _ := f.store.RoomOnline(ctx, "lobby"); users != 1 || conns != 1 {
		t.Fatalf("lobby presence changed by binlogsync: %d users on %d connections", users, conns)
	}
	if in, _ := f.store.InRoom(ctx, bob, "lobby"); !in {
		t.Fatal("binlogsync took bob's connection out of the lobby")
	}
	if open, _ := f.store.SessionOpen(ctx, bob); !open {
		t.Fatal("binlogsync closed bob's session")
	}
}

// waitEvents waits for the syncer to publish exactly the revocations want
// (kind user room reason), in order, on the session events topic keyed by
// user, and fails on anything else it publishes.
func waitEvents(t *testing.T, rec *testinfra.Recorder, want ...string) {
	t.Helper()
	var got []string
	testinfra.Eventually(t, 20*time.Second, func() bool {
		for _, p := range rec.Take() {
			if p.Topic != topics.SessionEvents.Name {
				t.Fatalf("binlogsync published on %s; it may only publish session events", p.Topic)
			}
			ev, err := topics.SessionEvents.Decode(p.Msg)
			if err != nil {
				t.Fatal(err)
			}
			if key := p.Msg.Metadata.Get(topics.KeyMetadata); key != "user/"+ev.GetUser() {
				t.Fatalf("event %v keyed %q, want by its user", ev, key)
			}
			got = append(got, fmt.Sprintf("%v %s %s %s", ev.GetKind(), ev.GetUser(), ev.GetRoom(), ev.GetReason()))
		}
		return len(got) >= len(want)
	}, "revocations %q, want %q", &got, want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("revocations %q, want %q", got, want)
	}
}

func TestRestartResumesWithoutLossOrSnapshot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.exec("INSERT INTO rooms (id) VALUES ('big')")
	_, stop := f.start()
	f.eventually("room not synced", func() bool { _, ok, _ := f.store.Room(context.Background(), "big"); return ok })

	// Writers keep committing while the worker is killed and restarted.
	const n = 400
	writerDone := make(chan error, 1)
	go func() {
		c, err := client.Connect(f.db.Addr, f.db.AdminUser, f.db.AdminPassword, f.db.Database)
		if err != nil {
			writerDone <- err
			return
		}
		defer c.Close()
		for i := range n {
			if _, err := c.Execute(fmt.Sprintf("INSERT INTO room_members (room_id, user_id) VALUES ('big', 'u%03d')", i)); err != nil {
				writerDone <- err
				return
			}
		}
		writerDone <- nil
	}()
	f.eventually("no rows streamed before the kill", func() bool {
		m, _ := f.store.Members(context.Background(), "big")
		return len(m) > 20
	})
	stop()
	s2, stop2 := f.start()
	defer stop2()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	f.eventually("not all memberships synced after the restart", func() bool {
		m, _ := f.store.Members(context.Background(), "big")
		return len(m) == n
	})
	m, _ := f.store.Members(context.Background(), "big")
	sort.Strings(m)
	for i, u := range m {
		if want := fmt.Sprintf("u%03d", i); u != want {
			t.Fatalf("member %d = %s, want %s", i, u, want)
		}
	}
	if s2.Stats().Snapshots != 0 {
		t.Fatal("restart took a new snapshot instead of resuming")
	}
}

func TestPurgedPositionIsAClearError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.pos.Save(context.Background(), mysql.Position{Name: "binlog.999999", Pos: 4}); err != nil {
		t.Fatal(err)
	}
	s, err := binlogsync.New(binlogsync.Config{Addr: f.db.Addr, User: f.db.SyncUser, Password: f.db.SyncPassword, Database: f.db.Database}, f.store, f.pos, f.rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if !errors.Is(err, binlogsync.ErrPositionGone) || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("Run = %v, want ErrPositionGone with recovery advice", err)
	}
	// Recovery: reset and start again.
	if err := f.pos.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	f.exec("INSERT INTO users (id) VALUES ('zoe')")
	s2, stop := f.start()
	defer stop()
	f.eventually("no snapshot after reset", func() bool { _, ok := f.user("zoe"); return ok })
	if s2.Stats().Snapshots != 1 {
		t.Fatalf("snapshots after reset = %d", s2.Stats().Snapshots)
	}
}

func TestParseDSN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dsn  string
		ok   bool
		want binlogsync.Config
	}{
		{"mysql://u:p@db:3306/im?server_id=7", true, binlogsync.Config{Addr: "db:3306", User: "u", Password: "p", Database: "im", Flavor: "mysql", ServerID: 7}},
		{"mariadb://u@db:3306/im", true, binlogsync.Config{Addr: "db:3306", User: "u", Database: "im", Flavor: "mariadb"}},
		{"mysql://u@db:3306/im?flavor=mariadb", true, binlogsync.Config{Addr: "db:3306", User: "u", Database: "im", Flavor: "mariadb"}},
		{"mysql://u@db:3306/", false, binlogsync.Config{}},
		{"postgres://u@db/im", false, binlogsync.Config{}},
		{"mysql://u@db/im?flavor=oracle", false, binlogsync.Config{}},
	}
	for _, tt := range tests {
		got, err := binlogsync.ParseDSN(tt.dsn)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseDSN(%q) = %+v, %v", tt.dsn, got, err)
		}
	}
}

func TestReconnectsAfterLosingTheConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, stop := f.start()
	defer stop()
	f.exec("INSERT INTO users (id) VALUES ('before')")
	f.eventually("first user not synced", func() bool { _, ok := f.user("before"); return ok })
	// Kill the worker's replication connection on the server, once it
	// exists (the first user may have come with the snapshot).
	var res *mysql.Result
	f.eventually("no binlog dump thread on the server", func() bool {
		var err error
		res, err = f.sql.Execute("SELECT id FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
		if err != nil {
			t.Fatal(err)
		}
		return res.RowNumber() > 0
	})
	for i := range res.RowNumber() {
		id, _ := res.GetInt(i, 0)
		f.exec(fmt.Sprintf("KILL %d", id))
	}
	f.exec("INSERT INTO users (id) VALUES ('after')")
	f.eventually("user inserted after the connection was killed not synced", func() bool { _, ok := f.user("after"); return ok })
	if s.Stats().Snapshots != 1 {
		t.Errorf("snapshots = %d: the worker should resume, not re-snapshot", s.Stats().Snapshots)
	}
}

// BenchmarkBulkMemberships measures rows synced per second for a bulk
// insert of 100,000 memberships (1,000 per statement), and the lag from
// commit to Redis of single-row inserts.
func BenchmarkBulkMemberships(b *testing.B) {
	f := newFixture(b)
	_, stop := f.start()
	defer stop()
	f.exec("INSERT INTO rooms (id) VALUES ('bulk')")
	ctx := context.Background()
	const rows, perStmt = 100_000, 1000
	run := 0
	for b.Loop() {
		run++
		start := time.Now()
		for i := 0; i < rows; i += perStmt {
			var sb strings.Builder
			sb.WriteString("INSERT INTO room_members (room_id, user_id) VALUES ")
			for j := i; j < i+perStmt; j++ {
				if j > i {
					sb.WriteByte(',')
				}
				fmt.Fprintf(&sb, "('bulk', 'r%d-u%d')", run, j)
			}
			f.exec(sb.String())
		}
		testinfra.Eventually(b, 10*time.Minute, func() bool {
			n, err := f.store.Members(ctx, "bulk")
			return err == nil && len(n) == rows*run
		}, "bulk insert not synced")
		b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
	}
	b.StopTimer()
	var lags []time.Duration
	for i := range 200 {
		id := fmt.Sprintf("lag-%d", i)
		start := time.Now()
		f.exec(fmt.Sprintf("INSERT INTO users (id) VALUES ('%s')", id))
		for deadline := start.Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, ok := f.user(id); ok {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("lag probe %s not synced", id)
			}
		}
		lags = append(lags, time.Since(start))
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag-p50-ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
}
