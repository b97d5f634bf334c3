package testinfra

import (
	"context"
	"fmt"
	"os"
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
		addr, err := startClusterNode(t, bin)
		if err != nil {
			t.Fatalf("redis cluster node %d: %v", i, err)
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

// startClusterNode starts one cluster-enabled redis-server, killed when
// the test ends, and returns its address. A port drawn by FreePort may be
// taken by another test before the server binds it, and then the server
// exits at once: it tries again on other ports, up to five times, and
// the last error carries the server's log.
func startClusterNode(t testing.TB, bin string) (string, error) {
	t.Helper()
	var lastErr error
	for range 5 {
		dir := t.TempDir()
		// The cluster bus gets a free port of its own: by default it is
		// the client port + 10000, which nothing reserved.
		port, bus := FreePort(t), FreePort(t)
		if port == bus {
			lastErr = fmt.Errorf("the client and cluster bus ports drawn were both %d", port)
			continue
		}
		logFile := filepath.Join(dir, "redis.log")
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--cluster-port", strconv.Itoa(bus), "--bind", "127.0.0.1", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no", "--daemonize", "no",
			"--logfile", logFile)
		exited, stop, err := start(cmd)
		if err != nil {
			return "", fmt.Errorf("start redis-server: %w", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if lastErr = waitRedis(addr, exited); lastErr == nil {
			t.Cleanup(stop)
			return addr, nil
		}
		stop()
		if log, _ := os.ReadFile(logFile); len(log) > 0 {
			lastErr = fmt.Errorf("%w; its log:\n%s", lastErr, log)
		}
	}
	return "", lastErr
}
