package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/app"
	"github.com/laneim/laneim/internal/testinfra"
)

// buildLaneim builds the binary into a folder of t.
func buildLaneim(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "laneim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// result is how a run of the binary ended.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// lastJSON decodes the last line of r's standard output, where the
// load commands print their --json result, into v; run names the command.
func lastJSON(t *testing.T, run string, r result, v any) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("laneim %s exited %d\nstdout:\n%s\nstderr:\n%s", run, r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), v); err != nil {
		t.Fatalf("laneim %s: last line is not its JSON result: %v\n%s", run, err, r.stdout)
	}
}

// runLaneim runs the binary with args in an empty folder and an
// environment without LANEIM_ variables, killing it after limit;
// signal, when not nil, is sent to it after signalAfter.
func runLaneim(t *testing.T, bin string, limit time.Duration, signal os.Signal, signalAfter time.Duration, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LANEIM_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var sig <-chan time.Time
	if signal != nil {
		sig = time.After(signalAfter)
	}
	kill := time.After(limit)
	for {
		select {
		case <-sig:
			_ = cmd.Process.Signal(signal)
			sig = nil
			continue
		case <-kill:
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("laneim %s still ran after %s; stderr:\n%s", strings.Join(args, " "), limit, stderr.String())
		case err := <-done:
			r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				r.code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
}

// TestCommandLine runs the built binary: help of each command lists its
// own flags and exits 0, and a dependency that cannot be reached stops a
// process with one line naming it, its address and its flag, in time.
func TestCommandLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildLaneim(t)
	kafka := strings.Join(testinfra.Kafka(t).Brokers, ",")
	// A port that accepts connections and never answers: not Kafka.
	_, silent := testinfra.Listen(t)
	// A port nothing listens on.
	closed := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))

	t.Run("help", func(t *testing.T) {
		for _, c := range []struct {
			args     []string
			code     int
			has, not []string
		}{
			{[]string{"replay", "-h"}, 0, []string{"-topic", "-bodies", "-kafka"}, []string{"-redis", "-comet-addr", "-secret", "-mysql", "-admin-addr"}},
			{[]string{"replay", "--help"}, 0, []string{"-topic"}, []string{"-redis"}},
			{[]string{"comet", "-h"}, 0, []string{"-comet-id", "-kafka", "-etcd", "-session-ttl", "-secret", "-token-issuer"}, []string{"-mysql", "-api-token", "-history", "-redis"}},
			{[]string{"api", "-h"}, 0, []string{"-api-token", "-redis", "-history", "-api-http-addr", "-api-mysql"}, []string{"-comet-id", "-secret"}},
			{[]string{"worker", "-h"}, 0, []string{"-mysql", "-history", "-redis", "persist, history, binlogsync"}, []string{"-comet-addr", "-api-token", "-secret"}},
			{[]string{"topics", "-h"}, 0, []string{"-kafka"}, []string{"-redis", "-secret", "-recall-window", "-edit-window", "-presence-window", "-max-conns-per-address", "-max-queued-bytes", "-room-read-receipts"}},
			{[]string{"migrate", "-h"}, 0, []string{"-mysql"}, []string{"-kafka ", "-redis"}},
			{[]string{"seed", "-h"}, 0, []string{"-redis", "-seed"}, []string{"-kafka ", "-secret"}},
			{[]string{"dev", "-h"}, 0, []string{"-kafka-addr", "-redis-addr", "-mysql", "-secret"}, []string{"-kafka ", "-redis "}},
			{[]string{"--help"}, 0, []string{"replay", "worker"}, nil},
			{[]string{"help"}, 0, []string{"replay"}, nil},
			{nil, 2, []string{"usage: laneim COMMAND"}, nil},
			{[]string{"nope"}, 2, []string{`unknown command "nope"`}, nil},
			{[]string{"dev", "--redis", "127.0.0.1:6379"}, 2, []string{"flag provided but not defined: -redis", "belong to `laneim worker`"}, nil},
			{[]string{"worker"}, 2, []string{"login, presence, routing, fanout, persist, history, binlogsync, all"}, nil},
			{[]string{"replay", "--bodies"}, 2, []string{"flag needs an argument"}, nil},
		} {
			r := runLaneim(t, bin, 10*time.Second, nil, 0, c.args...)
			out := r.stdout + r.stderr
			if r.code != c.code {
				t.Errorf("laneim %s: exit %d, want %d\n%s", strings.Join(c.args, " "), r.code, c.code, out)
			}
			for _, h := range c.has {
				if !strings.Contains(out, h) {
					t.Errorf("laneim %s: no %q in\n%s", strings.Join(c.args, " "), h, out)
				}
			}
			for _, n := range c.not {
				if strings.Contains(out, n+" ") || strings.Contains(out, n+"\n") {
					t.Errorf("laneim %s: %q listed in\n%s", strings.Join(c.args, " "), n, out)
				}
			}
		}
	})

	t.Run("environment of flags not read", func(t *testing.T) {
		// The environment variables of flags a command does not read are
		// not read either: a garbage value in one is not an error.
		for _, args := range [][]string{
			{"worker", "login", "--kafka", closed, "--redis", closed},
			{"topics", "--kafka", closed},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(os.Environ(), "LANEIM_HISTORY="+filepath.Join(t.TempDir(), "no", "h.db"), "LANEIM_RECALL_WINDOW=garbage", "LANEIM_MAX_QUEUED_BYTES=garbage")
			out, _ := cmd.CombinedOutput()
			cancel()
			o := string(out)
			if strings.Contains(o, "garbage") || strings.Contains(o, "h.db") || strings.Contains(o, "WINDOW") || strings.Contains(o, "QUEUED") || !strings.Contains(o, closed) {
				t.Errorf("laneim %s: %s; want the unreachable broker, nothing of the other variables", strings.Join(args, " "), out)
			}
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nonexistent", "dir", "h.db")
		for _, c := range []struct {
			name string
			args []string
			want []string
		}{
			{"kafka refuses", []string{"worker", "routing", "--kafka", closed, "--redis", closed}, []string{"kafka at " + closed, "--kafka", "LANEIM_KAFKA"}},
			{"kafka is not Kafka", []string{"worker", "routing", "--kafka", silent, "--redis", closed, "--connect-timeout", "2s"}, []string{"kafka at " + silent, "--kafka", "within 2s"}},
			{"redis refuses", []string{"worker", "routing", "--kafka", kafka, "--redis", closed}, []string{"redis at " + closed, "--redis", "LANEIM_REDIS"}},
			{"redis is not Redis", []string{"worker", "routing", "--kafka", kafka, "--redis", silent, "--connect-timeout", "2s"}, []string{"redis at " + silent, "--redis"}},
			{"etcd refuses", []string{"comet", "--comet-id", "c1", "--secret", "a-secret-of-the-command-line-test-0123456789", "--kafka", kafka, "--etcd", closed, "--connect-timeout", "2s"}, []string{"etcd at " + closed, "--etcd"}},
			{"mysql refuses", []string{"worker", "binlogsync", "--kafka", kafka, "--redis", testinfra.Redis(t), "--mysql", "mysql://u:p@" + closed + "/db"}, []string{"mysql at " + closed, "--mysql"}},
			{"no history folder", []string{"worker", "persist", "--kafka", kafka, "--redis", closed, "--history", missing}, []string{"--history " + missing, "does not exist"}},
			// laneim worker takes every worker's flags; the named workers' only.
			{"a flag the workers named do not read", []string{"worker", "login", "presence", "--history", missing, "--recall-window", "1m", "--kafka", closed, "--redis", closed}, []string{"worker login presence does not read --history, --recall-window"}},
		} {
			r := runLaneim(t, bin, 20*time.Second, nil, 0, c.args...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code != 1 || len(lines) != 1 {
				t.Errorf("%s: exit %d with %d lines, want exit 1 and one line:\n%s", c.name, r.code, len(lines), r.stderr)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("%s: no %q in %q", c.name, w, lines[0])
				}
			}
			if strings.Contains(lines[0], ".go:") {
				t.Errorf("%s: Go source paths in %q", c.name, lines[0])
			}
			if r.took > 10*time.Second {
				t.Errorf("%s: took %s, past its connect timeout", c.name, r.took)
			}
		}
		if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
			t.Errorf("--history %s created its folder (%v)", missing, err)
		}
	})

	t.Run("seed outside the repository", func(t *testing.T) {
		// runLaneim runs in an empty folder: the demo seed is compiled in.
		r := runLaneim(t, bin, 20*time.Second, nil, 0, "seed", "--redis", testinfra.Redis(t))
		if r.code != 0 || !strings.Contains(r.stdout, "6 users, 3 rooms written") {
			t.Errorf("laneim seed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("SIGTERM while starting", func(t *testing.T) {
		// Kafka never answers and the timeout is long: only the signal ends it.
		r := runLaneim(t, bin, 15*time.Second, syscall.SIGTERM, time.Second,
			"worker", "routing", "--kafka", silent, "--redis", closed, "--connect-timeout", "60s")
		if r.code != 1 || !strings.Contains(r.stderr, "stopped by a signal while starting") {
			t.Errorf("exit %d after SIGTERM, stderr:\n%s", r.code, r.stderr)
		}
		if r.took > 6*time.Second {
			t.Errorf("exited %s after start, SIGTERM came after 1s", r.took)
		}
	})
}

// TestStopWhenTheBrokerIsGone: a worker whose broker stopped answering
// (SIGSTOP) still ends within stopWithin of SIGTERM, rather than waiting
// on Kafka requests that will not be answered.
func TestStopWhenTheBrokerIsGone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a broker and a worker")
	}
	bin := buildLaneim(t)
	redis := testinfra.StartRedis(t)
	kafka := testinfra.FreeAddr(t)
	admin := testinfra.FreeAddr(t)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Dir = t.TempDir()
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "LANEIM_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	broker := start("broker", "--addr", kafka, "--data", t.TempDir())
	t.Cleanup(func() {
		_ = broker.Process.Signal(syscall.SIGCONT)
		_ = broker.Process.Kill()
		_ = broker.Wait()
	})
	testinfra.Eventually(t, 30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", kafka, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	}, "broker not listening")
	worker := start("worker", "routing", "--kafka", kafka, "--redis", redis.Addr, "--admin-addr", admin)
	exited := make(chan error, 1)
	go func() { exited <- worker.Wait() }()
	t.Cleanup(func() {
		_ = worker.Process.Kill()
	})
	testinfra.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	}, "worker not ready")

	if err := broker.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	sent := time.Now()
	if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		took := time.Since(sent)
		t.Logf("stopped %s after SIGTERM", took)
		if took > stopWithin+5*time.Second {
			t.Errorf("the worker took %s to stop", took)
		}
	case <-time.After(stopWithin + 20*time.Second):
		t.Fatalf("the worker still runs %s after SIGTERM", stopWithin+20*time.Second)
	}
}

func TestCometOnly(t *testing.T) {
	tests := []struct {
		roles []app.Role
		want  bool
	}{
		{[]app.Role{app.Comet}, true},
		{[]app.Role{app.Comet, app.API}, true},
		{[]app.Role{app.API}, false},
		{[]app.Role{app.Comet, app.Routing}, false},
		{[]app.Role{app.Login, app.Presence}, false},
	}
	for _, tt := range tests {
		if got := cometOnly(tt.roles); got != tt.want {
			t.Errorf("cometOnly(%v) = %v, want %v", tt.roles, got, tt.want)
		}
	}
}
