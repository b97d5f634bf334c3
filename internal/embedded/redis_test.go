package embedded_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/wiring/directory"
)

// startRedis starts an embedded Redis and returns a client of it with
// poolSize connections (0: go-redis's default) and a context of 30s, all
// stopped when the test ends.
func startRedis(t *testing.T, poolSize int) (context.Context, *redis.Client) {
	t.Helper()
	srv, err := embedded.StartRedis("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: poolSize})
	t.Cleanup(func() { rdb.Close() })
	return ctx, rdb
}

// TestRedisAnswersPipelines: the embedded Redis, whose replies wait
// while it answers a pipeline (replyConn), answers pipelines of every
// size, large replies, transactions, scripts, blocking commands and
// pub/sub right, from several clients at once.
func TestRedisAnswersPipelines(t *testing.T) {
	ctx, rdb := startRedis(t, 8)

	t.Run("pipelines", func(t *testing.T) {
		var g errgroup.Group
		for client := range 8 {
			g.Go(func() error {
				for _, n := range []int{1, 2, 3, 100, 1000} {
					val := strings.Repeat("v", 1+n*client%5000)
					p := rdb.Pipeline()
					sets := make([]*redis.StatusCmd, n)
					gets := make([]*redis.StringCmd, n)
					for i := range n {
						k := fmt.Sprint("k", client, ":", n, ":", i)
						sets[i] = p.Set(ctx, k, val+k, 0)
						gets[i] = p.Get(ctx, k)
					}
					if _, err := p.Exec(ctx); err != nil {
						return fmt.Errorf("pipeline of %d: %w", 2*n, err)
					}
					for i := range n {
						k := fmt.Sprint("k", client, ":", n, ":", i)
						if got := gets[i].Val(); sets[i].Val() != "OK" || got != val+k {
							return fmt.Errorf("pipeline of %d: %s = %.20q (%d bytes)", 2*n, k, got, len(got))
						}
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("large reply", func(t *testing.T) {
		big := strings.Repeat("x", 1<<20)
		if err := rdb.Set(ctx, "big", big, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if got, err := rdb.Get(ctx, "big").Result(); err != nil || got != big {
			t.Fatalf("get big: %d bytes, %v", len(got), err)
		}
	})

	t.Run("transaction and script", func(t *testing.T) {
		cmds, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, "h", "a", 1)
			p.HIncrBy(ctx, "h", "a", 2)
			return nil
		})
		if err != nil || cmds[1].(*redis.IntCmd).Val() != 3 {
			t.Fatalf("transaction: %v, %v", cmds, err)
		}
		n, err := redis.NewScript(`return redis.call('HINCRBY', KEYS[1], 'a', ARGV[1])`).Run(ctx, rdb, []string{"h"}, 4).Int()
		if err != nil || n != 7 {
			t.Fatalf("script = %d, %v", n, err)
		}
	})

	t.Run("blocking command", func(t *testing.T) {
		go func() { // ends after its push, bounded by ctx
			time.Sleep(50 * time.Millisecond)
			rdb.RPush(ctx, "queue", "job")
		}()
		if got, err := rdb.BLPop(ctx, 10*time.Second, "queue").Result(); err != nil || got[1] != "job" {
			t.Fatalf("blpop = %v, %v", got, err)
		}
	})

	t.Run("pubsub", func(t *testing.T) {
		sub := rdb.Subscribe(ctx, "news")
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := rdb.Publish(ctx, "news", fmt.Sprint("item ", i)).Err(); err != nil {
				t.Fatal(err)
			}
			msg, err := sub.ReceiveMessage(ctx)
			if err != nil || msg.Payload != fmt.Sprint("item ", i) {
				t.Fatalf("message %d: %v, %v", i, msg, err)
			}
		}
	})
}

// TestRedisScriptsFitItsLuaStates: the embedded Redis's Lua states are
// smaller than gopher-lua's defaults (shrinkLuaStates); a script deeper
// and wider than any of laneIM's still runs: calls nested 40 deep, 200
// arguments, a table of 10,000 values, 50 redis.call each way.
func TestRedisScriptsFitItsLuaStates(t *testing.T) {
	ctx, rdb := startRedis(t, 0)
	script := redis.NewScript(`
local function deep(n) if n == 0 then return 0 end return 1 + deep(n - 1) end
local t = {}
for i = 1, 10000 do t[i] = i end
for i = 1, 50 do redis.call('SADD', KEYS[1], ARGV[i]) end
return {deep(40), #t, #ARGV, redis.call('SCARD', KEYS[1])}`)
	args := make([]any, 200)
	for i := range args {
		args[i] = fmt.Sprint("m", i)
	}
	got, err := script.Run(ctx, rdb, []string{"s"}, args...).Int64Slice()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{40, 10000, 200, 50}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("script returned %v, want %v", got, want)
	}
}

// TestRedisAssignsLargeBatches: the directory's assign script, which
// reads a batch's dedup keys in chunks, runs in the embedded Redis's
// small Lua states for a batch far larger than routing makes: 1,000
// messages, every other one a repeat, get consecutive seqs, and the
// repeats their first one's.
func TestRedisAssignsLargeBatches(t *testing.T) {
	ctx, rdb := startRedis(t, 0)
	s := directory.New(rdb)
	subs := make([]directory.Submission, 1000)
	for i := range subs {
		subs[i] = directory.Submission{Sender: "u", ClientMsgID: fmt.Sprint("m", i/2)}
	}
	n := 0
	got, err := s.AssignMany(ctx, "room:big", subs, func() string { n++; return fmt.Sprint("id-", n) })
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range got {
		if want := uint64(i/2 + 1); a.Seq != want || a.Dup != (i%2 == 1) {
			t.Fatalf("submission %d: seq %d dup %v, want seq %d dup %v", i, a.Seq, a.Dup, want, i%2 == 1)
		}
	}
	again, err := s.AssignMany(ctx, "room:big", subs[:600], func() string { return "new" })
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range again {
		if !a.Dup || a.ID != got[i].ID {
			t.Fatalf("repeat %d = %+v, want a repeat of %+v", i, a, got[i])
		}
	}
}
