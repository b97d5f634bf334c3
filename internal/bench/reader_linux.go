//go:build linux

package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/laneim/laneim/internal/epollset"
)

// readers reads members' connections with a few pollers, each an epoll
// instance and its goroutine: a ready socket is read once, up to 64 KiB,
// and the whole frames it held are handed to the connection's feed. Each
// socket stays in the runtime's own poller's set too; an event there with
// no goroutine waiting is harmless. A connection a poller cannot read
// (TLS) gets a goroutine of its own.
type readers struct {
	pollers []*poller
	next    atomic.Uint64
	wg      sync.WaitGroup // goroutine readers
}

// newReaders starts one poller per processor, at most four.
func newReaders() (*readers, error) {
	r := &readers{}
	for range min(runtime.GOMAXPROCS(0), 4) {
		p, err := newPoller()
		if err != nil {
			r.close()
			return nil, err
		}
		r.pollers = append(r.pollers, p)
	}
	return r, nil
}

// add reads c until it ends; its end is c.end's.
func (r *readers) add(c *wsConn) {
	if _, ok := c.nc.(*net.TCPConn); !ok {
		goRead(c, &r.wg)
		return
	}
	p := r.pollers[r.next.Add(1)%uint64(len(r.pollers))]
	if err := p.add(c); err != nil {
		c.end(err)
	}
}

// close stops the pollers; the connections stay open. wait waits for the
// goroutine readers of connections closed since.
func (r *readers) close() {
	for _, p := range r.pollers {
		p.close()
	}
}

func (r *readers) wait() { r.wg.Wait() }

// poller is one epoll set and the goroutine that waits on it.
type poller struct {
	set *epollset.Set

	mu    sync.Mutex
	conns map[uint64]*wsConn // by token
	last  uint64
	buf   []byte // run's
	done  chan struct{}
}

func newPoller() (*poller, error) {
	set, err := epollset.New()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p := &poller{set: set, conns: map[uint64]*wsConn{}, buf: make([]byte, 64<<10), done: make(chan struct{})}
	go p.run() // owned: close waits for it
	return p, nil
}

// add watches c's socket (level-triggered).
func (p *poller) add(c *wsConn) error {
	raw, err := c.nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return fmt.Errorf("bench: socket: %w", err)
	}
	p.mu.Lock()
	p.last++ // from 1: epollset.WakeToken is 0
	c.raw, c.token = raw, p.last
	p.conns[c.token] = c
	p.mu.Unlock()
	var aerr error
	if err := raw.Control(func(fd uintptr) { aerr = p.set.Add(int(fd), unix.EPOLLIN|unix.EPOLLRDHUP, c.token) }); err != nil {
		aerr = err
	}
	if aerr != nil {
		p.forget(c)
		return fmt.Errorf("bench: %w", aerr)
	}
	return nil
}

// forget stops watching c.
func (p *poller) forget(c *wsConn) {
	p.mu.Lock()
	delete(p.conns, c.token)
	p.mu.Unlock()
	_ = c.raw.Control(func(fd uintptr) { _ = p.set.Remove(int(fd)) })
}

// run reads the sockets that are ready until close.
func (p *poller) run() {
	defer close(p.done)
	err := p.set.Serve(func(t uint64) {
		p.mu.Lock()
		c := p.conns[t]
		p.mu.Unlock()
		if c != nil {
			p.read(c)
		}
	})
	if err != nil {
		p.fail(fmt.Errorf("bench: %w", err))
	}
}

// read reads c once. The read happens inside RawConn.Read, which keeps
// the descriptor from being closed (and reused) meanwhile.
func (p *poller) read(c *wsConn) {
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), p.buf)
		return true
	})
	switch {
	case err != nil: // closed by its member
		p.forget(c)
		c.end(err)
	case n > 0:
		if ferr := c.feed(p.buf[:n]); ferr != nil {
			p.forget(c)
			c.end(ferr)
		}
	case n == 0 && rerr == nil:
		p.forget(c)
		c.end(io.EOF)
	case ended(rerr):
		p.forget(c)
		c.end(rerr)
	}
}

// fail ends every connection when epoll itself fails.
func (p *poller) fail(err error) {
	p.mu.Lock()
	conns := make([]*wsConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.conns = map[uint64]*wsConn{}
	p.mu.Unlock()
	for _, c := range conns {
		c.end(err)
	}
}

// close stops the poller and waits for its goroutine.
func (p *poller) close() {
	p.set.Wake()
	<-p.done
	p.set.Close()
}

// ended reports whether err, from reading, ends the connection.
func ended(err error) bool {
	return err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR)
}
