//go:build linux

package comet

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// parker watches the sockets of parked connections with one epoll
// instance, so that a connection waiting for its client's next frame
// holds no goroutine (issue 9: the reader's stack was most of an idle
// connection's memory). A connection whose client sends something is
// resumed: a new reader goroutine reads on where the last one stopped.
//
// Each socket is added to the epoll set once, one-shot, and re-armed at
// each park. The runtime's own poller keeps the same socket in its set;
// an event there with no goroutine waiting is harmless.
type parker struct {
	epfd int
	wake int // eventfd: written by close to end run

	mu     sync.RWMutex // held for writing by close and fail; for reading around epoll_ctl
	closed bool
	broken bool             // epoll_wait failed: run has ended
	conns  map[uint64]*conn // by token; guarded by connsMu
	next   uint64

	connsMu sync.Mutex
	done    chan struct{} // closed when run returns
}

// wakeToken is the epoll data of the parker's eventfd; connections'
// tokens start at 1.
const wakeToken = 0

// newParker returns a running parker; resume is called, from the
// parker's goroutine, with each parked connection whose socket became
// readable (or closed). The caller stops it with close.
func newParker(resume func(*conn)) (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("comet: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("comet: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("comet: epoll add eventfd: %w", err)
	}
	p := &parker{epfd: epfd, wake: wake, conns: map[uint64]*conn{}, done: make(chan struct{})}
	go p.run(resume) // owned: close waits for it
	return p, nil
}

func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd, ev.Pad = int32(uint32(t)), int32(uint32(t>>32))
}

func tokenOf(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// run waits for events until close and resumes the connections whose
// sockets they are about.
func (p *parker) run(resume func(*conn)) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			p.fail(resume)
			return
		}
		for i := range events[:n] {
			t := tokenOf(&events[i])
			if t == wakeToken {
				return
			}
			p.connsMu.Lock()
			cn := p.conns[t]
			p.connsMu.Unlock()
			if cn != nil {
				resume(cn)
			}
		}
	}
}

// fail is run's end when epoll itself fails: parks fail from then on (see
// arm), and every parked connection is resumed, to be read in a
// goroutine of its own again.
func (p *parker) fail(resume func(*conn)) {
	p.mu.Lock()
	p.broken = true
	p.mu.Unlock()
	p.connsMu.Lock()
	parked := make([]*conn, 0, len(p.conns))
	for _, cn := range p.conns {
		parked = append(parked, cn)
	}
	p.connsMu.Unlock()
	for _, cn := range parked {
		resume(cn) // does nothing to a connection being read
	}
}

// arm adds or re-arms the watch of cn's socket, whose file descriptor is
// fd, for one event. It reports false if the parker is closed or epoll
// refuses; the caller then reads on in its goroutine.
func (p *parker) arm(cn *conn, fd int) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed || p.broken {
		return false
	}
	op := unix.EPOLL_CTL_MOD
	if cn.parkToken == 0 {
		p.connsMu.Lock()
		p.next++
		cn.parkToken = p.next
		p.conns[cn.parkToken] = cn
		p.connsMu.Unlock()
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, cn.parkToken)
	err := unix.EpollCtl(p.epfd, op, fd, &ev)
	if errors.Is(err, unix.ENOENT) && op == unix.EPOLL_CTL_MOD {
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	}
	return err == nil
}

// forget drops cn, whose connection ended: its socket is closed, which
// takes it out of the epoll set.
func (p *parker) forget(cn *conn) {
	if cn.parkToken == 0 {
		return
	}
	p.connsMu.Lock()
	delete(p.conns, cn.parkToken)
	p.connsMu.Unlock()
}

// close stops the parker and waits for its goroutine. Connections still
// parked are not resumed by it: the comet's Close kicks every connection,
// and the end of a kick resumes a parked reader (conn.unpark).
func (p *parker) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1 // eventfd counts in native byte order; any nonzero value wakes
	_, _ = unix.Write(p.wake, one[:])
	<-p.done
	unix.Close(p.wake)
	unix.Close(p.epfd)
}
