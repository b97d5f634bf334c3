//go:build linux

// Package epollset is an epoll instance whose events carry 64-bit
// tokens, with an eventfd that wakes its waiter: the one piece that the
// comet's parker and the load tool's pollers share, each watching many
// sockets from one goroutine.
//
// A socket stays in the Go runtime's own poller's set too; an event there
// with no goroutine waiting is harmless.
package epollset

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// WakeToken is the token of the events Wake causes; sockets' tokens must
// differ from it.
const WakeToken = 0

// Set is an epoll instance and its wake-up eventfd.
type Set struct {
	epfd int
	wake int
}

// New creates a set.
func New() (*Set, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epollset: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epollset: eventfd: %w", err)
	}
	s := &Set{epfd: epfd, wake: wake}
	if err := s.ctl(unix.EPOLL_CTL_ADD, wake, unix.EPOLLIN, WakeToken); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, err
	}
	return s, nil
}

// Add watches fd for events, reported with token.
func (s *Set) Add(fd int, events uint32, token uint64) error {
	return s.ctl(unix.EPOLL_CTL_ADD, fd, events, token)
}

// Rearm changes (or, for a one-shot watch that fired, re-arms) fd's
// watch, adding it if fd is not in the set.
func (s *Set) Rearm(fd int, events uint32, token uint64) error {
	err := s.ctl(unix.EPOLL_CTL_MOD, fd, events, token)
	if errors.Is(err, unix.ENOENT) {
		err = s.ctl(unix.EPOLL_CTL_ADD, fd, events, token)
	}
	return err
}

// Remove stops watching fd. Closing fd's last descriptor removes it too.
func (s *Set) Remove(fd int) error {
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("epollset: remove: %w", err)
	}
	return nil
}

func (s *Set) ctl(op, fd int, events uint32, token uint64) error {
	ev := unix.EpollEvent{Events: events}
	ev.Fd, ev.Pad = int32(uint32(token)), int32(uint32(token>>32))
	if err := unix.EpollCtl(s.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epollset: watch: %w", err)
	}
	return nil
}

// Wait blocks until events are ready (retrying when interrupted) and
// appends their tokens to tokens[:0], at most cap(tokens); a Wake shows
// as WakeToken.
func (s *Set) Wait(tokens []uint64, events []unix.EpollEvent) ([]uint64, error) {
	for {
		n, err := unix.EpollWait(s.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return tokens[:0], fmt.Errorf("epollset: wait: %w", err)
		}
		tokens = tokens[:0]
		for i := range events[:n] {
			ev := &events[i]
			tokens = append(tokens, uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32)
		}
		return tokens, nil
	}
}

// Serve waits for events and calls handle with each token, in the
// caller's goroutine, until Wake (then it returns nil) or until waiting
// fails.
func (s *Set) Serve(handle func(token uint64)) error {
	events := make([]unix.EpollEvent, 256)
	tokens := make([]uint64, 0, len(events))
	for {
		var err error
		if tokens, err = s.Wait(tokens, events); err != nil {
			return err
		}
		for _, t := range tokens {
			if t == WakeToken {
				return nil
			}
			handle(t)
		}
	}
}

// Wake makes the waiter's Wait return WakeToken (and every Wait after,
// until Close).
func (s *Set) Wake() {
	var one [8]byte
	one[0] = 1 // eventfd counts in native byte order; any nonzero value wakes
	_, _ = unix.Write(s.wake, one[:])
}

// Close releases the set; no Wait may be running.
func (s *Set) Close() {
	unix.Close(s.wake)
	unix.Close(s.epfd)
}
