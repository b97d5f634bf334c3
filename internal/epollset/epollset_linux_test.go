//go:build linux

package epollset_test

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/laneim/laneim/internal/epollset"
)

// setAndPair returns a new set and the two ends of a socket pair, all
// closed when the test ends.
func setAndPair(t *testing.T) (*epollset.Set, [2]int) {
	t.Helper()
	s, err := epollset.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return s, [2]int(fds)
}

func TestSet(t *testing.T) {
	s, fds := setAndPair(t)
	events := make([]unix.EpollEvent, 8)
	tokens := make([]uint64, 0, 8)
	wait := func() []uint64 {
		t.Helper()
		var err error
		if tokens, err = s.Wait(tokens, events); err != nil {
			t.Fatal(err)
		}
		return tokens
	}

	const big = 1<<40 + 7 // a token wider than 32 bits
	if err := s.Add(fds[0], unix.EPOLLIN|unix.EPOLLONESHOT, big); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := wait(); !slices.Equal(got, []uint64{big}) {
		t.Fatalf("tokens %v, want [%d]", got, uint64(big))
	}
	// One-shot: re-armed, the unread byte is reported again.
	if err := s.Rearm(fds[0], unix.EPOLLIN|unix.EPOLLONESHOT, 9); err != nil {
		t.Fatal(err)
	}
	if got := wait(); !slices.Equal(got, []uint64{9}) {
		t.Fatalf("tokens %v after re-arming, want [9]", got)
	}
	if err := s.Remove(fds[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Rearm(fds[0], unix.EPOLLIN, 11); err != nil { // not in the set: added
		t.Fatal(err)
	}
	if got := wait(); !slices.Equal(got, []uint64{11}) {
		t.Fatalf("tokens %v after re-adding, want [11]", got)
	}
	if err := s.Remove(fds[0]); err != nil {
		t.Fatal(err)
	}
	s.Wake()
	if got := wait(); !slices.Equal(got, []uint64{epollset.WakeToken}) {
		t.Fatalf("tokens %v after Wake, want the wake token alone", got)
	}
	if err := s.Add(fds[1], unix.EPOLLIN, epollset.WakeToken+1); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(fds[1], unix.EPOLLIN, 3); err == nil {
		t.Fatal("adding a watched descriptor again succeeded")
	}
}

func TestServeHandsTokensUntilWake(t *testing.T) {
	s, fds := setAndPair(t)
	if err := s.Add(fds[0], unix.EPOLLIN|unix.EPOLLONESHOT, 5); err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 1)
	served := make(chan error, 1)
	go func() { served <- s.Serve(func(tok uint64) { got <- tok }) }()
	if _, err := unix.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	if tok := <-got; tok != 5 {
		t.Fatalf("handled token %d, want 5", tok)
	}
	s.Wake()
	if err := <-served; err != nil {
		t.Fatalf("Serve after Wake: %v", err)
	}
}
