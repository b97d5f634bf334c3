package wiring_test

import (
	"context"
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
