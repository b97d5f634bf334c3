package wiring_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring"
)

// TestRedisClusterRereadsItsSlots: against a Redis Cluster, NewRedis's
// client re-reads the map of slots to nodes every ClusterSlotsReload
// while it works, so that a replica promoted after its master died is
// found within that, not go-redis's 60 s; against one server it is a
// plain client.
func TestRedisClusterRereadsItsSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, err := wiring.NewRedis(ctx, wiring.RedisConfig{Addrs: testinfra.RedisCluster(t), Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cc, ok := cluster.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("a Cluster's client is a %T", cluster)
	}
	if got := cc.Options().ClusterStateReloadInterval; got != wiring.ClusterSlotsReload {
		t.Errorf("slots re-read every %v, want %v", got, wiring.ClusterSlotsReload)
	}
	if err := cluster.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	one, err := wiring.NewRedis(ctx, wiring.RedisConfig{Addrs: []string{testinfra.Redis(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if _, ok := one.(*redis.Client); !ok {
		t.Errorf("one server's client is a %T", one)
	}
}

// TestCheckRedisNamesTheMastersAway: against a Redis Cluster, CheckRedis
// pings every master; some not answering is Degraded, naming them, and
// all not answering is an error.
func TestCheckRedisNamesTheMastersAway(t *testing.T) {
	ctx := context.Background()
	addrs := testinfra.RedisCluster(t)
	check := func(seeds []string) error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return wiring.CheckRedis(cctx, wiring.RedisConfig{Addrs: seeds, Cluster: true})
	}
	if err := check(addrs); err != nil {
		t.Fatalf("every master up: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: addrs[0]})
	defer c.Close()
	nodes, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var masters []string
	for _, l := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(l)
		if len(f) > 8 && strings.Contains(f[2], "master") { // a master with slots
			masters = append(masters, strings.Split(f[1], "@")[0])
		}
	}
	if len(masters) != 3 {
		t.Fatalf("masters %q in\n%s", masters, nodes)
	}
	// A paused master answers nothing (its cluster bus still does, so no
	// replica takes over); the seeds leave it out, so that the map of
	// slots is read from the others.
	pause := func(addr string) {
		t.Helper()
		m := redis.NewClient(&redis.Options{Addr: addr})
		defer m.Close()
		if err := m.Do(ctx, "CLIENT", "PAUSE", 3000, "ALL").Err(); err != nil {
			t.Fatal(err)
		}
	}
	pause(masters[0])
	seeds := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return slices.Contains(masters, a) })
	err = check(seeds)
	if !wiring.IsDegraded(err) || !strings.Contains(err.Error(), "1 of 3 masters") || !strings.Contains(err.Error(), masters[0]) {
		t.Fatalf("one master paused: %v; want degraded, naming %s", err, masters[0])
	}
	pause(masters[1])
	pause(masters[2])
	if err := check(seeds); err == nil || wiring.IsDegraded(err) {
		t.Fatalf("every master paused: %v; want an error, not degraded", err)
	}
}
