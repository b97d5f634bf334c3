//go:build !linux

package bench

import (
	"errors"
	"sync"
	"time"
)

// readers reads members' connections, each in a goroutine of its own
// (a poller, reader_linux.go, is Linux's).
type readers struct{ wg sync.WaitGroup }

func newReaders() (*readers, error) { return &readers{}, nil }

// add reads c until it ends; its end is c.end's.
func (r *readers) add(c *wsConn) { goRead(c, &r.wg) }

// close stops reading; wait waits for the readers of connections closed
// since.
func (r *readers) close() {}
func (r *readers) wait()  { r.wg.Wait() }

// rawSocket is the socket a poller owns on Linux; there is none here.
type rawSocket struct{}

func (*rawSocket) write([]byte, time.Time) error { return errors.New("bench: no poller on this OS") }
func (*rawSocket) close()                        {}
