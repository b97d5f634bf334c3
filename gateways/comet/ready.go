package comet

import (
	"runtime"
	"sync"
)

// Room frames reach idle connections through the comet's ready list: a
// broadcast queues its frame to each member and puts the members that
// were idle (no writer, nothing queued) at the tail of the list, and a
// few goroutines owned by the comet (GOMAXPROCS of them, started with
// the first broadcast) take connections from its head, in order, and
// write to each everything queued to it in one non-blocking write
// (writeClaimed). A connection waiting in the list keeps its place, and
// the frames queued to it meanwhile go out with it.
//
// So a big room's members are written in turn, each once per turn
// whatever the number of frames sent to it since its last one, and a
// message waits for at most one turn of the list once its frame is
// queued. Flushing a room's next frame does not wait for the previous
// one to reach every member (it did, issue 9): members not reached yet
// take both in one write. What the kernel does not take at once, a
// socket in use, or a frame for a connection that is not idle, goes to
// the connection's writer goroutine (writer.go).

// readyBatch is how many connections a ready writer takes at a time.
const readyBatch = 16

// readyList is the comet's list of connections claimed for a write, in
// the order they were claimed.
type readyList struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when conns grows or the list stops
	conns   []*conn   // conns[head:] wait, oldest first
	head    int
	started bool // the writers run
	stopped bool // no writer takes more; Close has begun
}

// push appends claimed connections to the ready list, starting its
// writers at the first push. The caller holds a room's mu with the room
// not stopped, so Close has not begun waiting for the comet's goroutines.
func (c *Comet) push(claimed []*conn) {
	start, ok := c.ready.add(claimed)
	if !ok { // Close has begun: their writers close them
		for _, cn := range claimed {
			cn.resume()
		}
		return
	}
	if start {
		n := runtime.GOMAXPROCS(0)
		c.wg.Add(n)
		for range n {
			go c.writeReady()
		}
	}
}

// add appends conns to the list and reports whether they were added (the
// list is not stopped) and whether the writers must be started (first
// add).
func (l *readyList) add(conns []*conn) (start, ok bool) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false, false
	}
	start = !l.started
	l.started = true
	l.conns = append(l.conns, conns...)
	l.mu.Unlock()
	if len(conns) == 1 {
		l.cond.Signal()
	} else {
		l.cond.Broadcast()
	}
	return start, true
}

// take moves up to readyBatch connections from the head of the list to
// batch, waiting for one if there is none; it returns nil once the list
// is stopped.
func (l *readyList) take(batch []*conn) []*conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.head == len(l.conns) && !l.stopped {
		l.cond.Wait()
	}
	if l.stopped {
		return nil
	}
	end := min(l.head+readyBatch, len(l.conns))
	batch = append(batch, l.conns[l.head:end]...)
	clear(l.conns[l.head:end])
	l.head = end
	switch {
	case l.head == len(l.conns):
		l.conns, l.head = l.conns[:0], 0
	case l.head >= 1024 && l.head > len(l.conns)/2:
		n := copy(l.conns, l.conns[l.head:])
		clear(l.conns[n:])
		l.conns, l.head = l.conns[:n], 0
	}
	return batch
}

// stopReady stops the writers and hands the connections still waiting to
// their writer goroutines, which close them. Close calls it once every
// room is stopped, so nothing is pushed any more.
func (c *Comet) stopReady() {
	for _, cn := range c.ready.stop() {
		cn.resume()
	}
}

// stop stops the list, wakes its writers to end, and returns the
// connections that were waiting.
func (l *readyList) stop() []*conn {
	l.mu.Lock()
	l.stopped = true
	waiting := l.conns[l.head:]
	l.conns, l.head = nil, 0
	l.mu.Unlock()
	l.cond.Broadcast()
	return waiting
}

// writeReady is one of the ready list's writers: it writes to the
// connections of the list in turn until the list stops.
func (c *Comet) writeReady() {
	defer c.wg.Done()
	var batch []*conn
	for {
		if batch = c.ready.take(batch[:0]); batch == nil {
			return
		}
		for i, cn := range batch {
			cn.writeClaimed()
			batch[i] = nil
		}
	}
}
