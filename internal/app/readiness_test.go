package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/internal/testinfra"
)

// TestReadyzFollowsRedis: /readyz answers 503 naming Redis within seconds
// of Redis hanging, and 200 again once it answers; /healthz stays 200.
func TestReadyzFollowsRedis(t *testing.T) {
	redis := testinfra.StartRedis(t)
	get, wait := startRouting(t, "--redis", redis.Addr)
	if body := wait(http.StatusOK, "at start"); !strings.Contains(body, "redis: ok") || !strings.Contains(body, "kafka: ok") {
		t.Fatalf("/readyz ready without its checks: %q", body)
	}

	redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			redis.Resume()
		}
	}()
	start := time.Now()
	body := wait(http.StatusServiceUnavailable, "with Redis hung")
	t.Logf("unready %s after Redis hung: %q", time.Since(start).Round(time.Millisecond), body)
	if !strings.Contains(body, "redis: ") || strings.Contains(body, "redis: ok") || !strings.Contains(body, "kafka: ok") {
		t.Fatalf("/readyz does not name Redis alone: %q", body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d while Redis hangs: it must not ask dependencies", code)
	}

	redis.Resume()
	resumed = true
	wait(http.StatusOK, "after Redis came back")
}

// TestReadyzWithEtcdAway: etcd going away leaves the process ready, with
// etcd reported degraded (fault check: an etcd outage made every process
// unready, which would take every comet out of its load balancer).
func TestReadyzWithEtcdAway(t *testing.T) {
	e := testinfra.Etcd(t)
	get, wait := startRouting(t, "--redis", testinfra.Redis(t), "--etcd", strings.Join(e.Endpoints(), ","))
	if body := wait(http.StatusOK, "at start"); !strings.Contains(body, "etcd: ok") {
		t.Fatalf("/readyz does not check etcd: %q", body)
	}
	e.Close()
	testinfra.Eventually(t, 10*time.Second, func() error {
		code, body := get("/readyz")
		if code != http.StatusOK || !strings.Contains(body, "etcd: degraded: ") {
			time.Sleep(100 * time.Millisecond)
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	}, "/readyz is not ready with etcd reported degraded")
}

// startRouting runs a routing worker with args (and a broker of its own)
// until the test ends. get asks its admin endpoint for a path; wait waits
// up to 10s for /readyz to answer want and returns the body.
func startRouting(t *testing.T, args ...string) (get func(path string) (int, string), wait func(want int, what string) string) {
	t.Helper()
	kcfg := testinfra.Kafka(t)
	admin := testinfra.FreeAddr(t)
	var s Settings
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	s.Register(fs)
	if err := fs.Parse(append([]string{"--kafka", strings.Join(kcfg.Brokers, ","), "--admin-addr", admin}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(Routing); err != nil {
		t.Fatal(err)
	}
	a := fx.New(s.Options(slog.New(slog.DiscardHandler), Routing))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })

	get = func(path string) (int, string) {
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wait = func(want int, what string) string {
		t.Helper()
		var body string
		testinfra.Eventually(t, 10*time.Second, func() error {
			var code int
			if code, body = get("/readyz"); code != want {
				time.Sleep(100 * time.Millisecond)
				return fmt.Errorf("%d %q", code, body)
			}
			return nil
		}, "/readyz is not %d %s", want, what)
		return body
	}
	return get, wait
}
