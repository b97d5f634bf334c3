package directory_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring/directory"
)

// backends are the Redis servers laneIM runs on: a real redis-server, a
// real Redis Cluster (the user's keys must share a slot) and the
// embedded miniredis of `laneim dev` (it must run the Lua scripts).
func backends(t *testing.T) map[string]func(t *testing.T) redis.UniversalClient {
	return map[string]func(t *testing.T) redis.UniversalClient{
		"redis": func(t *testing.T) redis.UniversalClient { return testinfra.RedisClient(t) },
		"cluster": func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testinfra.RedisCluster(t)})
			t.Cleanup(func() { rdb.Close() })
			return rdb
		},
		"miniredis": func(t *testing.T) redis.UniversalClient {
			srv, err := embedded.StartRedis("")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Close)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return rdb
		},
	}
}

func TestOpenSessionWithin(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) {
		s := directory.New(rdb)
		ctx := context.Background()
		open := func(conn string, max int) bool {
			t.Helper()
			ok, err := s.OpenSessionWithin(ctx, directory.Session{Comet: "c" + conn[:1], Conn: conn, User: "alice"}, time.Minute, max)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		count := func() int {
			t.Helper()
			refs, err := s.UserSessions(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			return len(refs)
		}
		if !open("1a", 2) || !open("2b", 2) {
			t.Fatal("the first two sessions were refused")
		}
		if open("1c", 2) {
			t.Fatal("a third session opened with a bound of two")
		}
		if n := count(); n != 2 {
			t.Fatalf("alice has %d sessions, want 2", n)
		}
		// Nothing of the refused session is left behind.
		if ok, err := s.SessionOpen(ctx, directory.SessionRef{Comet: "c1", Conn: "1c"}); err != nil || ok {
			t.Fatalf("refused session open = %v, %v", ok, err)
		}
		if exp, err := s.ExpiredSessions(ctx, time.Now().Add(time.Hour), 10); err != nil || len(exp) != 2 {
			t.Fatalf("session deadlines %v, %v: want the two opened only", exp, err)
		}
		// A repeat of an opened session opens, whatever the count.
		if !open("1a", 2) || !open("1a", 0) {
			t.Fatal("a repeat of an opened session was refused")
		}
		// A place freed is taken.
		if _, _, ok, err := s.CloseSession(ctx, directory.SessionRef{Comet: "c1", Conn: "1a"}); err != nil || !ok {
			t.Fatalf("close = %v, %v", ok, err)
		}
		if !open("1c", 2) {
			t.Fatal("a session was refused after one closed")
		}
		// Negative: no bound.
		for i := range 5 {
			if !open(fmt.Sprintf("3%d", i), -1) {
				t.Fatal("a session refused without a bound")
			}
		}
		if n := count(); n != 7 {
			t.Fatalf("alice has %d sessions, want 7", n)
		}
		if on, err := s.Online(ctx, "alice"); err != nil || !on["alice"] {
			t.Fatalf("alice online = %v, %v", on, err)
		}
	})
}

// TestOpenSessionWithinConcurrently: logins of one user racing on every
// comet never take it past the bound.
func TestOpenSessionWithinConcurrently(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var opened atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			ok, err := s.OpenSessionWithin(context.Background(), directory.Session{Comet: fmt.Sprintf("c%d", i%4), Conn: fmt.Sprint(i), User: "bob"}, time.Minute, 5)
			if err != nil {
				t.Error(err)
			}
			if ok {
				opened.Add(1)
			}
		})
	}
	wg.Wait()
	refs, err := s.UserSessions(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if opened.Load() != 5 || len(refs) != 5 {
		t.Fatalf("%d opened, %d recorded; want 5 and 5", opened.Load(), len(refs))
	}
}

func TestTakeSend(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) {
		s := directory.New(rdb)
		ctx := context.Background()
		// One message every 100 s, bursts of 3: no refill within the test.
		r := directory.Rate{PerSecond: 0.01, Burst: 3}
		take := func(user string) time.Duration {
			t.Helper()
			d, err := s.TakeSend(ctx, user, r)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		for i := range 3 {
			if d := take("alice"); d != 0 {
				t.Fatalf("message %d refused, wait %v", i+1, d)
			}
		}
		d := take("alice")
		if d <= 0 || d > 100*time.Second {
			t.Fatalf("a fourth message: wait %v, want within (0, 100s]", d)
		}
		// Refused messages take nothing: the wait does not grow.
		if d2 := take("alice"); d2 <= 0 || d2 > d {
			t.Fatalf("a fifth message: wait %v, want within (0, %v]", d2, d)
		}
		// Every user has a budget of its own.
		if d := take("bob"); d != 0 {
			t.Fatalf("bob refused, wait %v", d)
		}
	})
}

func TestTakeSendRefills(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	r := directory.Rate{PerSecond: 20, Burst: 1}
	if d, err := s.TakeSend(ctx, "alice", r); err != nil || d != 0 {
		t.Fatalf("first = %v, %v", d, err)
	}
	d, err := s.TakeSend(ctx, "alice", r)
	if err != nil || d <= 0 || d > 50*time.Millisecond {
		t.Fatalf("second = %v, %v; want a wait within (0, 50ms]", d, err)
	}
	time.Sleep(d)
	if d, err := s.TakeSend(ctx, "alice", r); err != nil || d != 0 {
		t.Fatalf("after the wait = %v, %v; want allowed", d, err)
	}
}

func TestTakeSendConcurrently(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			d, err := s.TakeSend(context.Background(), "carol", directory.Rate{PerSecond: 0.01, Burst: 7})
			if err != nil {
				t.Error(err)
			}
			if d == 0 {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 7 {
		t.Fatalf("%d of 40 concurrent messages allowed, want the burst of 7", n)
	}
}

func TestTakeSendRefusesNoBudget(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for _, r := range []directory.Rate{{PerSecond: 0, Burst: 1}, {PerSecond: 1, Burst: 0}, {PerSecond: 0.0001, Burst: 1}, {PerSecond: -1, Burst: 1}} {
		if _, err := s.TakeSend(context.Background(), "alice", r); err == nil {
			t.Errorf("%+v: no error", r)
		}
	}
}

// TestOnlineOnEveryBackend: Online answers for many users at once, some
// online and some not, repeats included, on one server (one MGET) and on
// a Cluster (the users' flags in many slots).
func TestOnlineOnEveryBackend(t *testing.T) {
	t.Parallel()
	onBackends(t, func(t *testing.T, rdb redis.UniversalClient) {
		s := directory.New(rdb)
		ctx := context.Background()
		var users []string
		want := map[string]bool{}
		for i := range 40 {
			u := fmt.Sprint("u", i)
			users = append(users, u)
			if i%3 == 0 {
				if err := s.OpenSession(ctx, directory.Session{Comet: "c1", Conn: u, User: u}, time.Minute); err != nil {
					t.Fatal(err)
				}
				want[u] = true
			}
		}
		users = append(users, "u0", "u1") // repeats
		got, err := s.Online(ctx, users...)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			if got[u] != want[u] {
				t.Errorf("online[%s] = %v, want %v", u, got[u], want[u])
			}
		}
		if len(got) != 40 {
			t.Errorf("%d users answered, want 40", len(got))
		}
		if one, err := s.Online(ctx, "u3"); err != nil || !one["u3"] {
			t.Errorf("online of one online user = %v, %v", one, err)
		}
	})
}
