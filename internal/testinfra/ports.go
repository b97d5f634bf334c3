package testinfra

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The range FreePort draws from.
const freePortLow, freePortHigh = 20000, 32700

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago
// and that no other test, in this process or another, has been given
// and still holds.
//
// It is drawn at random below the kernel's ephemeral range (32768 and
// up on Linux): a port the kernel handed out for :0 and that was closed
// again may be taken as the local port of any outgoing connection
// before the test binds it, which made a multi-process test fail with
// "address already in use". And it is claimed (see claimPort) until the
// test ends: go test runs packages in parallel processes, and two of
// them drawing the same free port, each to give it to a server it
// starts, made one server fail to bind.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := freePortLow + rand.IntN(freePortHigh-freePortLow)
		release, ok := claimPort(port)
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			release()
			continue
		}
		l.Close()
		t.Cleanup(release)
		return port
	}
	t.Fatal("free port: none free in 200 tries")
	return 0
}

// portClaims is the folder where FreePort claims ports: a file per port,
// named for it and holding the claiming process's pid, created only if
// it does not exist. All of this machine's test processes share it.
var portClaims = filepath.Join(os.TempDir(), "laneim-test-ports")

// claimStale is the age past which a claim is taken to be left over
// from a test that did not clean up, whatever its pid: no test run lasts
// as long.
const claimStale = 3 * time.Hour

// claimPort claims port for this process and returns the function that
// gives it back; false if another live claim holds it. A claim whose
// process is gone, or older than claimStale, is taken over. Claims are
// advice between laneIM's own tests: a claim folder that cannot be
// written claims nothing and refuses nothing.
func claimPort(port int) (release func(), ok bool) {
	name := filepath.Join(portClaims, strconv.Itoa(port))
	if err := os.MkdirAll(portClaims, 0o755); err != nil {
		return func() {}, true
	}
	for attempt := 0; attempt < 2; attempt++ {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			_, werr := fmt.Fprintf(f, "%d\n", os.Getpid())
			if cerr := f.Close(); werr == nil && cerr == nil {
				return func() { _ = os.Remove(name) }, true
			}
			_ = os.Remove(name)
			return func() {}, true
		}
		if !errors.Is(err, fs.ErrExist) {
			return func() {}, true
		}
		if !claimLeftOver(name) {
			return nil, false
		}
		_ = os.Remove(name)
	}
	return nil, false
}

// claimLeftOver reports whether the claim in file name belongs to no
// live test: its process is gone or it is older than claimStale.
func claimLeftOver(name string) bool {
	info, err := os.Stat(name)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	if time.Since(info.ModTime()) > claimStale {
		return true
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		// Being written at this moment, or torn: leave it to its owner.
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// FreeAddr is "127.0.0.1:" and a port FreePort drew.
func FreeAddr(t testing.TB) string { return "127.0.0.1:" + strconv.Itoa(FreePort(t)) }
