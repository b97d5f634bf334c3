//go:build !linux

package comet

import "errors"

// parker is not available on this system: connections keep their reader
// goroutines (see park.go).
type parker struct{}

func newParker(func(*conn)) (*parker, error) {
	return nil, errors.New("comet: parking idle connections needs Linux epoll")
}

func (*parker) arm(*conn, int) bool { return false }
func (*parker) forget(*conn)        {}
func (*parker) close()              {}
