package testinfra

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster starts a real Redis Cluster of three masters with one
// replica each (six redis-server processes on free loopback ports) and
// returns the nodes' addresses once the cluster reports cluster_state:ok.
func RedisCluster(t testing.TB) []string {
	t.Helper()
	bin, err := RedisServerPath()
	if err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(filepath.Dir(bin), "redis-cli")
	var addrs []string
	for i := range 6 {
		dir := t.TempDir()
		// The cluster bus gets a free port of its own: by default it is
		// the client port + 10000, which nothing reserved.
		port, bus := FreePort(t), FreePort(t)
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--cluster-port", strconv.Itoa(bus), "--bind", "127.0.0.1", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no", "--daemonize", "no",
			"--logfile", filepath.Join(dir, "redis.log"))
		exited, stop, err := start(cmd)
		if err != nil {
			t.Fatalf("redis cluster node %d: %v", i, err)
		}
		t.Cleanup(stop)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if err := waitRedis(addr, exited); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Ready when every node says so and a client can write to every master.
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, a := range addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			info, err := c.ClusterInfo(ctx).Result()
			c.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		for i := range 32 {
			if err := cc.Set(ctx, "laneim:probe:"+strconv.Itoa(i), "1", time.Minute).Err(); err != nil {
				return false
			}
		}
		return true
	}, "redis cluster not ok")
	return addrs
}
