package testinfra

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestClaimPort(t *testing.T) {
	dir := t.TempDir()
	old := portClaims
	portClaims = dir
	t.Cleanup(func() { portClaims = old })

	// A process that has exited: its claims are left over.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		claim   string // the claim file's content beforehand; "" none
		age     time.Duration
		claimed bool
	}{
		{"free", "", 0, true},
		{"held by a live process", strconv.Itoa(os.Getppid()), 0, false},
		{"held by this process", strconv.Itoa(os.Getpid()), 0, false},
		{"left by a process that exited", strconv.Itoa(gone.Process.Pid), 0, true},
		{"torn", "12a", 0, false},
		{"live but older than any test", strconv.Itoa(os.Getppid()), claimStale + time.Minute, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := 20000 + i
			name := filepath.Join(dir, strconv.Itoa(port))
			if tt.claim != "" {
				if err := os.WriteFile(name, []byte(tt.claim+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				at := time.Now().Add(-tt.age)
				if err := os.Chtimes(name, at, at); err != nil {
					t.Fatal(err)
				}
			}
			release, ok := claimPort(port)
			if ok != tt.claimed {
				t.Fatalf("claimed %v, want %v", ok, tt.claimed)
			}
			if !ok {
				return
			}
			if _, again := claimPort(port); again {
				t.Fatal("claimed twice")
			}
			release()
			r, ok := claimPort(port)
			if !ok {
				t.Fatal("not claimed again once given back")
			}
			r()
		})
	}
}

func TestFreePortsDiffer(t *testing.T) {
	old := portClaims
	portClaims = t.TempDir()
	t.Cleanup(func() { portClaims = old })
	seen := map[int]bool{}
	for range 300 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d given twice within one test", p)
		}
		seen[p] = true
	}
}
