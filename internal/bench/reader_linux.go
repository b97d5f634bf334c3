//go:build linux

package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/laneim/laneim/internal/epollset"
)

// readers reads members' connections with a few pollers, each an epoll
// instance and its goroutine: a ready socket is read once, up to 64 KiB,
// and the whole frames it held are handed to the connection's feed. A
// poller takes the socket out of the runtime's own poller (rawSocket):
// there each frame woke a thread that found no goroutine waiting, on the
// cores the cluster measured shares. A connection a poller cannot read
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
	conns []*wsConn // by token - 1; nil once forgotten
	buf   []byte    // run's
	done  chan struct{}
}

func newPoller() (*poller, error) {
	set, err := epollset.New()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p := &poller{set: set, buf: make([]byte, 64<<10), done: make(chan struct{})}
	go p.run() // owned: close waits for it
	return p, nil
}

// add takes c's socket from its net.Conn (rawSocket) and watches it
// (level-triggered).
func (p *poller) add(c *wsConn) error {
	sock, err := takeSocket(c.nc.(*net.TCPConn))
	if err != nil {
		return err
	}
	c.sock.Store(sock)
	p.mu.Lock()
	p.conns = append(p.conns, c)
	c.token = uint64(len(p.conns)) // from 1: epollset.WakeToken is 0
	p.mu.Unlock()
	if err := sock.do(func(fd int) error { return p.set.Add(fd, unix.EPOLLIN|unix.EPOLLRDHUP, c.token) }); err != nil {
		p.forget(c)
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// forget stops watching c.
func (p *poller) forget(c *wsConn) {
	p.mu.Lock()
	p.conns[c.token-1] = nil
	p.mu.Unlock()
	_ = c.sock.Load().do(p.set.Remove)
}

// run reads the sockets that are ready until close.
func (p *poller) run() {
	defer close(p.done)
	err := p.set.Serve(func(t uint64) {
		var c *wsConn
		p.mu.Lock()
		if t-1 < uint64(len(p.conns)) {
			c = p.conns[t-1]
		}
		p.mu.Unlock()
		if c != nil {
			p.read(c)
		}
	})
	if err != nil {
		p.fail(fmt.Errorf("bench: %w", err))
	}
}

// read reads c once (rawSocket.do keeps the descriptor from being
// closed, and its number reused, meanwhile).
func (p *poller) read(c *wsConn) {
	var n int
	var rerr error
	err := c.sock.Load().do(func(fd int) error {
		n, rerr = unix.Read(fd, p.buf)
		return nil
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
	var conns []*wsConn
	for _, c := range p.conns {
		if c != nil {
			conns = append(conns, c)
		}
	}
	clear(p.conns) // tokens stay valid: forget may still come
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

// rawSocket is a member's socket owned by a poller: a duplicate of its
// net.Conn's descriptor, whose net.Conn is closed, so that the socket is
// in the poller's epoll set only. The duplicate shares the socket's
// open file description, non-blocking as the runtime made it. Reads,
// writes and epoll changes hold mu shared and close holds it alone, so
// a closed descriptor's number, which the next socket may get, is never
// used.
type rawSocket struct {
	mu sync.RWMutex
	fd int // -1 once closed
}

// takeSocket duplicates nc's descriptor and closes nc.
func takeSocket(nc *net.TCPConn) (*rawSocket, error) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("bench: socket: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		derr = err
	}
	if derr != nil {
		return nil, fmt.Errorf("bench: socket: dup: %w", derr)
	}
	nc.Close() // the runtime forgets it; the socket lives on in fd
	return &rawSocket{fd: fd}, nil
}

// do runs f on the descriptor, or fails with net.ErrClosed once closed.
func (s *rawSocket) do(f func(fd int) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	return f(s.fd)
}

// write writes all of b by deadline, waiting with poll(2) while the
// socket's buffer is full.
func (s *rawSocket) write(b []byte, deadline time.Time) error {
	return s.do(func(fd int) error {
		for len(b) > 0 {
			n, err := unix.Write(fd, b)
			if n > 0 {
				b = b[n:]
				continue
			}
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case !errors.Is(err, unix.EAGAIN):
				return err
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				return os.ErrDeadlineExceeded
			}
			if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(wait.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
				return err
			}
		}
		return nil
	})
}

// close shuts the socket down, which ends a write waiting in poll, and
// closes the descriptor.
func (s *rawSocket) close() {
	_ = s.do(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RDWR) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}
