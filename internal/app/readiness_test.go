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
	kcfg := testinfra.Kafka(t)
	redis := testinfra.StartRedis(t)
	admin := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	var s Settings
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	s.Register(fs)
	if err := fs.Parse([]string{"--kafka", strings.Join(kcfg.Brokers, ","), "--redis", redis.Addr, "--admin-addr", admin}); err != nil {
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
	defer a.Stop(context.Background())

	get := func(path string) (int, string) {
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wait := func(want int, what string) string {
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
