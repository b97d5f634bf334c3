//go:build linux

package comet

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/laneim/laneim/internal/epollset"
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
	set *epollset.Set

	mu     sync.RWMutex // held for writing by close and fail; for reading around epoll_ctl
	closed bool
	broken bool             // epoll_wait failed: run has ended
	conns  map[uint64]*conn // by token; guarded by connsMu
	next   uint64

	connsMu sync.Mutex
	done    chan struct{} // closed when run returns
}

// newParker returns a running parker; resume is called, from the
// parker's goroutine, with each parked connection whose socket became
// readable (or closed). The caller stops it with close.
func newParker(resume func(*conn)) (*parker, error) {
	set, err := epollset.New()
	if err != nil {
		return nil, fmt.Errorf("comet: %w", err)
	}
	p := &parker{set: set, conns: map[uint64]*conn{}, done: make(chan struct{})}
	go p.run(resume) // owned: close waits for it
	return p, nil
}

// run waits for events until close and resumes the connections whose
// sockets they are about.
func (p *parker) run(resume func(*conn)) {
	defer close(p.done)
	err := p.set.Serve(func(t uint64) {
		p.connsMu.Lock()
		cn := p.conns[t]
		p.connsMu.Unlock()
		if cn != nil {
			resume(cn)
		}
	})
	if err != nil {
		p.fail(resume)
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
	if cn.parkToken == 0 {
		p.connsMu.Lock()
		p.next++
		cn.parkToken = p.next
		p.conns[cn.parkToken] = cn
		p.connsMu.Unlock()
	}
	err := p.set.Rearm(fd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLONESHOT, cn.parkToken)
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
	p.set.Wake()
	<-p.done
	p.set.Close()
}
