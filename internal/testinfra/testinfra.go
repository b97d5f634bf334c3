// Package testinfra starts the infrastructure laneIM's tests run against:
// a real redis-server in a temporary folder on a free loopback port, and a
// Kafka-protocol broker (kfake) in-process. Each test gets its own, so
// tests do not see each other's keys or topics.
//
// redis-server must be installed (scripts/test.sh installs it). A test that
// needs it and cannot find it fails: it is never skipped silently.
package testinfra

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/wiring"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RedisServerPath finds the redis-server binary: $LANEIM_REDIS_SERVER, PATH,
// then /usr/bin.
func RedisServerPath() (string, error) {
	if p := os.Getenv("LANEIM_REDIS_SERVER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", nil
	}
	return "", fmt.Errorf("redis-server not found: run scripts/test.sh, which installs Debian's redis-server, or set LANEIM_REDIS_SERVER")
}

// Redis starts a real redis-server for the test and returns its address.
// The server is killed when the test ends.
func Redis(t testing.TB) string {
	t.Helper()
	bin, err := RedisServerPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		cmd := exec.Command(bin,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--loglevel", "warning",
			"--logfile", filepath.Join(dir, "redis.log"))
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if lastErr = waitRedis(addr, cmd); lastErr == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			return addr
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatalf("redis-server did not start: %v", lastErr)
	return ""
}

func waitRedis(addr string, cmd *exec.Cmd) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if cmd.ProcessState != nil {
			return fmt.Errorf("redis-server exited")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s not answering after 5s", addr)
}

// RedisClient starts a redis-server for the test and returns a client to it.
func RedisClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	c, err := wiring.NewRedis(context.Background(), wiring.RedisConfig{Addrs: []string{Redis(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Kafka starts an in-memory Kafka-protocol broker for the test, creates the
// pipeline's topics, and returns a config pointing at it.
func Kafka(t testing.TB) wiring.KafkaConfig {
	t.Helper()
	b, err := embedded.StartBroker(embedded.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	cfg := wiring.KafkaConfig{Brokers: b.Addrs(), ClientID: "laneim-test"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wiring.EnsureTopics(ctx, cfg, wiring.PipelineTopics()...); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Eventually polls cond every 10ms until it returns true or timeout passes,
// then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Listen opens a TCP listener on a free loopback port, closed when the
// test ends, and returns it with its address.
func Listen(t testing.TB) (net.Listener, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().String()
}

// Must returns a function that fails t if err is not nil and returns v
// otherwise: testinfra.Must(routing.New(cfg, store, pub, nil))(t).
func Must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
