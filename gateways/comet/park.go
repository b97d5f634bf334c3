package comet

// Parking: a connection between two of its client's frames holds no
// goroutine. Its reader, finding nothing read ahead, hands the socket to
// the comet's parker (an epoll set, park_linux.go) and returns; when the
// client sends something, or the connection is closed, a new reader
// goroutine reads on. An idle connection then costs its state on the
// heap and no stack (issue 9: the reader's stack was about half of an
// idle connection's memory). Where there is no parker (not Linux, a TLS
// connection, a test member), readers keep their goroutine.
//
// The reader's count of the comet's WaitGroup passes from one reader
// goroutine to the next; a parked connection keeps it, so Close waits
// for every parked connection to be resumed by its kick and to end.

// The states of conn.parkState.
const (
	reading int32 = iota // a reader goroutine runs
	parked               // no reader goroutine: the parker or unpark starts one
)

// startParkerLocked starts the comet's parker once, with c.mu held; on a
// system without one, connections keep their reader goroutines.
func (c *Comet) startParkerLocked() {
	if c.parking || c.cfg.noParking {
		return
	}
	c.parking = true
	p, err := newParker(func(cn *conn) { cn.unpark() })
	if err != nil {
		c.logger.Info("idle connections keep a reader goroutine each", "reason", err)
		return
	}
	c.parker = p
}

// park parks the connection if nothing the client sent is waiting to be
// read. It reports true if the calling reader must return: the
// connection is parked, or another reader has already taken over.
func (cn *conn) park() bool {
	p, s := cn.comet.parker, cn.net
	if p == nil || s == nil || s.raw == nil {
		return false
	}
	// Under qmu, a kick has not begun: the writer's close handshake,
	// which reads through the library while it ends the connection,
	// cannot be reading the buffer unread looks at.
	cn.qmu.Lock()
	if cn.kicked || s.unread() {
		cn.qmu.Unlock()
		return false
	}
	cn.parkState.Store(parked)
	cn.comet.parkedNow.Add(1)
	cn.qmu.Unlock()
	armed := false
	if err := s.raw.Control(func(fd uintptr) { armed = p.arm(cn, int(fd)) }); err != nil {
		armed = false // closed: read on, and find the end
	}
	if armed {
		return true
	}
	// Not parked after all; unless the connection was resumed meanwhile,
	// by a kick's end, this reader reads on.
	if cn.parkState.CompareAndSwap(parked, reading) {
		cn.comet.parkedNow.Add(-1)
		return false
	}
	return true
}

// unpark starts a reader for a parked connection; it does nothing if a
// reader runs. The parker calls it when the client sent something, and
// the writer when it has closed the connection (finish), so that the
// reader finds the end and unregisters it.
func (cn *conn) unpark() {
	if !cn.parkState.CompareAndSwap(parked, reading) {
		return
	}
	cn.comet.parkedNow.Add(-1)
	go cn.read(true) // with the parked reader's count of the comet's WaitGroup
}
