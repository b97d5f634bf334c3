package app

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
)

// BenchmarkLoginPipeline measures the login path through the pipeline,
// without the WebSocket handshakes: the login and presence workers as
// `laneim worker login presence` runs them with its default flags, on the
// embedded broker and a real redis-server (redis=server) or dev mode's
// embedded Redis (redis=embedded), given b.N LoginRequests
// published at once, each joining one room of b.N members (Login.join),
// as a comet publishes them when all its clients come back after another
// comet died. It ends when every LoginResult is on the comet's delivery
// topic, and reports logins a second and the CPU they cost: this process
// (the workers, the broker, the publisher and reader standing in for the
// comet, and the embedded Redis) and redis-server.
//
// The bench command's storm (`laneim bench --dial-concurrency 10000`)
// measures the same with real clients, whose handshakes and the load
// generator share the cores; this is the pipeline's own ceiling (issue 9:
// 10,000 logins within 2 s through the pipeline).
//
//	go test ./internal/app -run '^$' -bench BenchmarkLoginPipeline -benchtime 10000x -count 3
func BenchmarkLoginPipeline(b *testing.B) {
	b.Run("redis=server", func(b *testing.B) { benchmarkLoginPipeline(b, testinfra.Redis(b)) })
	b.Run("redis=embedded", func(b *testing.B) {
		r, err := embedded.StartRedis("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(r.Close)
		benchmarkLoginPipeline(b, r.Addr())
	})
}

func benchmarkLoginPipeline(b *testing.B, redisAddr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var s Settings
	s.Register(fs)
	if err := fs.Parse(nil); err != nil {
		b.Fatal(err)
	}
	const comet = "c1"
	p := testinfra.KafkaPipeline(b, topics.Delivery(comet))
	s.Kafka, s.Redis, s.LogLevel, s.AdminAddr = strings.Join(p.Kafka.Brokers, ","), redisAddr, "error", ""
	roles := []Role{Login, Presence}
	if err := s.Validate(roles...); err != nil {
		b.Fatal(err)
	}
	rdb, err := wiring.NewRedis(ctx, s.Infra().Redis)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rdb.Close() })
	const room = "storm"
	if err := seedRoom(ctx, directory.New(rdb), room, b.N); err != nil {
		b.Fatal(err)
	}
	a := fx.New(s.Options(slog.New(slog.DiscardHandler), roles...))
	if err := a.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			b.Errorf("stop workers: %v", err)
		}
	})

	cpu0, redis0 := testinfra.ProcessCPU(), redisCPU(ctx, b, rdb)
	b.ResetTimer()
	var g errgroup.Group
	g.SetLimit(1024) // a comet publishes each login from a goroutine of its own
	for i := range b.N {
		g.Go(func() error {
			msg, err := topics.LoginRequests.Encode(&topicpb.LoginRequest{
				Session: &topicpb.Session{Comet: comet, Conn: strconv.Itoa(i)}, RequestId: 1,
				User: memberOf(i), TokenExpiresUnixMs: time.Now().Add(time.Hour).UnixMilli(),
				ReceivedUnixMs: time.Now().UnixMilli(), Join: []string{room},
			})
			if err != nil {
				return err
			}
			return p.Pub.Publish(topics.LoginRequests.Name, msg)
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	// The comet's delivery topic, as the comet reads it: a message may
	// carry several deliveries.
	for got := 0; got < b.N; {
		d, err := topics.Deliveries.Decode(p.Next(topics.Delivery(comet)))
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range append([]*topicpb.Delivery{d}, d.GetMore()...) {
			r := d.GetFrame().GetLoginResult()
			if r == nil {
				continue
			}
			if !r.GetOk() || len(r.GetJoined()) != 1 {
				b.Fatalf("login of %s: %v", r.GetUser(), d.GetFrame())
			}
			got++
		}
	}
	b.StopTimer()
	cpu, redis := testinfra.ProcessCPU()-cpu0, redisCPU(ctx, b, rdb)-redis0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "µs-cpu/login")
	b.ReportMetric(float64(redis.Microseconds())/float64(b.N), "µs-redis/login")
	b.ReportMetric(0, "ns/op") // logins/s says it; ns/op would repeat it
}

// memberOf names the benchmark's i-th user.
func memberOf(i int) string { return "storm-user-" + strconv.Itoa(i) }

// seedRoom writes room and n users, all members of it.
func seedRoom(ctx context.Context, store *directory.Store, room string, n int) error {
	if err := store.PutRoom(ctx, directory.Room{ID: room, Kind: "group"}); err != nil {
		return fmt.Errorf("room %s: %w", room, err)
	}
	var g errgroup.Group
	g.SetLimit(32)
	ms := make([]directory.Membership, n)
	for i := range n {
		ms[i] = directory.Membership{Room: room, User: memberOf(i)}
		g.Go(func() error { return store.PutUser(ctx, directory.User{ID: memberOf(i)}) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if err := store.AddMembers(ctx, ms); err != nil {
		return fmt.Errorf("members of %s: %w", room, err)
	}
	return nil
}

// redisCPU is the CPU the redis-server behind rdb has used (INFO cpu);
// 0 for the embedded Redis, which runs in this process.
func redisCPU(ctx context.Context, b *testing.B, rdb redis.UniversalClient) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0 // the embedded Redis has no INFO
	}
	var total time.Duration
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "used_cpu_sys" && k != "used_cpu_user" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("INFO cpu: %s: %v", line, err)
		}
		total += time.Duration(f * float64(time.Second))
	}
	return total
}
