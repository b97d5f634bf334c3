package bench

import (
	"context"
	"errors"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeDevEnv names the counter file of a test binary run as a fake
// `laneim dev` (see init): the first fakeDevFailures runs exit at once, as
// a child whose port was taken does; the next ones listen on the comet
// and api addresses they are given until interrupted.
const fakeDevEnv = "LANEIM_TEST_FAKE_DEV"

const fakeDevFailures = 2

func init() {
	counter := os.Getenv(fakeDevEnv)
	if counter == "" {
		return
	}
	b, _ := os.ReadFile(counter)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	n++
	_ = os.WriteFile(counter, []byte(strconv.Itoa(n)), 0o600)
	if n <= fakeDevFailures {
		os.Exit(1)
	}
	for i, a := range os.Args {
		if (a == "--comet-addr" || a == "--api-addr") && i+1 < len(os.Args) {
			l, err := net.Listen("tcp", os.Args[i+1])
			if err != nil {
				os.Exit(1)
			}
			defer l.Close()
		}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt)
	select {
	case <-ch:
	case <-time.After(time.Minute):
	}
	os.Exit(0)
}

// TestDevProcessStartedAgain: a dev child that exits during its start
// (its port taken before it bound it) is started again on other ports,
// up to devStartAttempts times in all.
func TestDevProcessStartedAgain(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		attempts int // runs of the fake before this test starts
		wantErr  bool
	}{
		{"after two exits", 0, false},
		{"never", -devStartAttempts, true}, // fails devStartAttempts times more
	} {
		t.Run(tc.name, func(t *testing.T) {
			counter := filepath.Join(t.TempDir(), "runs")
			// The fake fails while its count is at most fakeDevFailures.
			if err := os.WriteFile(counter, []byte(strconv.Itoa(tc.attempts)), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv(fakeDevEnv, counter)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := startDevProcess(ctx, &Config{Executable: exe})
			b, _ := os.ReadFile(counter)
			runs, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if tc.wantErr {
				if !errors.Is(err, errDevExited) || runs != tc.attempts+devStartAttempts {
					t.Fatalf("err %v after %d runs, want errDevExited after %d", err, runs-tc.attempts, devStartAttempts)
				}
				return
			}
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			p.stop()
			if runs != fakeDevFailures+1 {
				t.Fatalf("%d runs, want %d", runs, fakeDevFailures+1)
			}
		})
	}
}
