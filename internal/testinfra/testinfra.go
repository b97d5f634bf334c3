// Package testinfra starts the infrastructure laneIM's tests run against:
// a real redis-server in a temporary folder on a free loopback port, and a
// Kafka-protocol broker (kfake) in-process. Each test gets its own, so
// tests do not see each other's keys or topics.
//
// redis-server must be installed (deploy/test.sh installs it). A test that
// needs it and cannot find it fails: it is never skipped silently.
package testinfra

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/wiring"
)

// ProcessCPU is the user and system CPU time this process has used, for
// benchmarks that report CPU per operation.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail for RUSAGE_SELF
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// StartOnFreePorts starts the app build makes. A port FreePort drew can
// be taken by another package's test before the app binds it: then the
// app is stopped, redraw draws the ports again, and a new app is built
// and started, at most three times in all. It returns the started app.
func StartOnFreePorts(t testing.TB, ctx context.Context, build func() *fx.App, redraw func()) *fx.App {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a := build()
		err := a.Start(ctx)
		if err == nil {
			return a
		}
		if attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("start: %v", err)
		}
		t.Logf("start, attempt %d: %v; drawing other ports", attempt, err)
		if err := a.Stop(ctx); err != nil {
			t.Fatalf("stop what did not start: %v", err)
		}
		redraw()
	}
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
	return "", fmt.Errorf("redis-server not found: run deploy/test.sh, which installs Debian's redis-server, or set LANEIM_REDIS_SERVER")
}

// Redis starts a real redis-server for the test and returns its address.
// The server is killed when the test ends.
func Redis(t testing.TB) string {
	t.Helper()
	return StartRedis(t).Addr
}

// RedisServer is a redis-server process of a test, for fault injection:
// Pause and Resume freeze and thaw it (SIGSTOP, SIGCONT), Restart kills it
// and starts an empty one on the same address, as after a crash that lost
// its data.
type RedisServer struct {
	Addr string

	t    testing.TB
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	stop func()
}

// StartRedis starts a redis-server for the test, killed when it ends.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := RedisServerPath()
	if err != nil {
		t.Fatal(err)
	}
	r := &RedisServer{t: t, bin: bin, dir: t.TempDir()}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		r.port = FreePort(t)
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(func() { r.stop() })
			return r
		}
	}
	t.Fatalf("redis-server did not start: %v", lastErr)
	return nil
}

// start runs redis-server on r.port and waits until it answers.
func (r *RedisServer) start() error {
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	r.cmd = exec.Command(r.bin,
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--dir", r.dir, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	exited, stop, err := start(r.cmd)
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	if err := waitRedis(r.Addr, exited); err != nil {
		stop()
		return err
	}
	r.stop = stop
	return nil
}

// StartRedisTLS starts a redis-server for the test that speaks only TLS
// (no plain port), with a certificate ca issues, not asking clients for
// theirs, and an ACL: the default user is off, user "laneim" with password
// "laneim-pw" may do everything. It returns the address. It skips the test
// when this redis-server was built without TLS.
func StartRedisTLS(t testing.TB, ca *CA) string {
	t.Helper()
	bin, err := RedisServerPath()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := ca.Issue("redis")
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := strconv.Itoa(FreePort(t))
		cmd := exec.Command(bin,
			"--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
			"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", ca.File,
			"--tls-auth-clients", "no",
			"--user", "default", "off",
			"--user", "laneim", "on", ">laneim-pw", "~*", "&*", "+@all",
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--loglevel", "warning",
			"--logfile", filepath.Join(dir, "redis.log"))
		exited, stop, err := start(cmd)
		if err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		addr := "127.0.0.1:" + port
		c := redis.NewClient(&redis.Options{Addr: addr, Username: "laneim", Password: "laneim-pw", MaxRetries: -1, DialerRetries: 1,
			TLSConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}})
		lastErr = poll(5*time.Second, func() error {
			select {
			case <-exited:
				return giveUp{fmt.Errorf("redis-server (TLS) on %s exited", addr)}
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			return c.Ping(ctx).Err()
		})
		c.Close()
		if lastErr == nil {
			t.Cleanup(stop)
			return addr
		}
		stop()
		if log, _ := os.ReadFile(filepath.Join(dir, "redis.log")); strings.Contains(string(log), "not built with TLS") || strings.Contains(string(log), "Unrecognized option") {
			t.Skipf("redis-server %s has no TLS support (built without BUILD_TLS): %s", bin, log)
		}
	}
	t.Fatalf("redis-server with TLS did not start: %v", lastErr)
	return ""
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing is
// answered, as with a hung host.
func (r *RedisServer) Pause() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatalf("pause redis-server: %v", err)
	}
}

// Resume thaws a paused server (SIGCONT).
func (r *RedisServer) Resume() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatalf("resume redis-server: %v", err)
	}
}

// Restart kills the server (SIGKILL) and starts an empty one on the same
// address: everything it held is gone.
func (r *RedisServer) Restart() {
	r.t.Helper()
	r.stop()
	var err error
	for attempt := 0; attempt < 50; attempt++ { // the port may linger briefly
		if err = r.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("restart redis-server on %s: %v", r.Addr, err)
}

// start starts cmd (killed with the test binary, where the kernel can:
// dieWithTest) and returns a channel closed when it exits, and a
// function killing it and waiting for its end.
func start(cmd *exec.Cmd) (exited <-chan struct{}, stop func(), err error) {
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return done, func() {
		_ = cmd.Process.Kill()
		<-done
	}, nil
}

// waitRedis waits up to 5s for the redis-server on addr to answer, and
// gives up as soon as it exits (its port was taken, say).
func waitRedis(addr string, exited <-chan struct{}) error {
	// No retries of its own: poll retries every 10ms, go-redis would wait 100ms.
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	return poll(5*time.Second, func() error {
		select {
		case <-exited:
			return giveUp{fmt.Errorf("redis-server on %s exited", addr)}
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := c.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis-server on %s not answering: %w", addr, err)
		}
		return nil
	})
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

// Condition is what Eventually polls: a func() bool, met when it returns
// true, or a func() error, met when it returns nil and whose last error
// says what was still missing when time ran out.
type Condition interface {
	func() bool | func() error
}

// Eventually polls cond every 10ms until it is met or timeout passes, then
// fails the test with msg (formatted with args) and, for a func() error,
// the last error. Prefer the error form when the state matters: args are
// evaluated once, when Eventually is called, not when it gives up.
func Eventually[C Condition](t testing.TB, timeout time.Duration, cond C, msg string, args ...any) {
	t.Helper()
	var check func() error
	switch c := any(cond).(type) {
	case func() bool:
		check = func() error {
			if !c() {
				return errNotYet
			}
			return nil
		}
	case func() error:
		check = c
	}
	if err := poll(timeout, check); err != nil {
		if errors.Is(err, errNotYet) {
			t.Fatalf("after %v: "+msg, append([]any{timeout}, args...)...)
		}
		t.Fatalf("after %v: %s: %v", timeout, fmt.Sprintf(msg, args...), err)
	}
}

var errNotYet = errors.New("condition not met")

// giveUp makes poll return err at once instead of trying again.
type giveUp struct{ err error }

func (g giveUp) Error() string { return g.err.Error() }

// poll calls f every 10ms until it returns nil, a giveUp, or timeout
// passes, and returns f's last error. It is the one polling loop of the
// package: Eventually and the waits for servers to start use it.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if g, ok := err.(giveUp); ok {
			return g.err
		}
		if time.Now().After(deadline) {
			return err
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

// TCPPair returns the two ends of a loopback TCP connection, both closed
// when the test ends.
func TCPPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	l, addr := Listen(t)
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
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

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers:
// a logger's output that a test reads while the code under test writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
