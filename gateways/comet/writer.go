package comet

import (
	"bytes"
	"context"
	"errors"
	"os"
	"time"

	"github.com/coder/websocket"
)

// The outbound side of a connection. Frames are appended to the
// connection's queue under qmu; the first frame queued to an idle
// connection starts a writer goroutine (owned by the comet's wg), which
// takes the whole queue at each wake-up, writes it, waits up to
// writerLinger for more, and exits. A connection therefore has at most
// one writer, frames go out in the order they were queued, a connection
// of a busy room keeps its writer (no goroutine is started per frame),
// and a connection with nothing to write has no writer goroutine.

// enqueue queues a frame without blocking; a queue already holding
// SendQueue frames, or one that would hold more than SendQueueBytes,
// closes the connection as a slow consumer. Safe for concurrent use.
func (cn *conn) enqueue(f *frame) {
	c := cn.comet
	cn.qmu.Lock()
	if cn.kicked {
		cn.qmu.Unlock()
		return
	}
	size := 0
	if cn.ws != nil {
		size = len(f.bytes(cn.enc()))
	}
	if len(cn.queue) >= c.cfg.SendQueue || cn.qbytes+size > c.cfg.SendQueueBytes && len(cn.queue) > 0 {
		cn.qmu.Unlock()
		if cn.kick(websocket.StatusPolicyViolation, "slow consumer", false) {
			c.slow.Add(1)
			c.logger.Info("slow consumer disconnected", "conn", cn.id)
		}
		return
	}
	cn.queue = append(cn.queue, f)
	cn.qbytes += size
	total := c.queued.Add(int64(size))
	var start, wake bool
	if !cn.claimed { // else the claim's resume hands it over
		start, wake = cn.wakeLocked()
	}
	cn.qmu.Unlock()
	cn.signal(start, wake)
	if total > c.cfg.maxQueuedBytes() {
		c.askShed()
	}
}

// wakeLocked decides how the writer learns of new work: started, or woken
// from its linger. cn.qmu is held.
func (cn *conn) wakeLocked() (start, wake bool) {
	if !cn.writing {
		cn.writing = true
		return true, false
	}
	if cn.parked {
		cn.parked = false
		return false, true
	}
	return false, false
}

func (cn *conn) signal(start, wake bool) {
	switch {
	case start:
		cn.startWriter()
	case wake:
		select {
		case cn.wake <- struct{}{}:
		default:
		}
	}
}

// claim reports whether the caller must put the connection on the
// comet's ready list (ready.go) for f: true when it was idle (no writer
// busy, nothing queued) and can be written to without blocking; f then
// waits for the connection's turn, and frames queued meanwhile go out
// with it (its writer goroutine, if parked, takes nothing while it is
// claimed). Otherwise f is queued as enqueue does. As before the ready
// list, the claimed frame itself is not counted in the queue's bounds:
// only what waits behind it.
func (cn *conn) claim(f *frame) bool {
	if cn.net == nil || cn.net.raw == nil {
		cn.enqueue(f)
		return false
	}
	cn.qmu.Lock()
	if cn.kicked || cn.claimed || len(cn.queue) > 0 || cn.writing && !cn.parked {
		cn.qmu.Unlock()
		cn.enqueue(f)
		return false
	}
	cn.claimed, cn.turn = true, f
	cn.qmu.Unlock()
	return true
}

// writeClaimed writes the frame a connection was claimed for, and
// everything queued behind it since, in one non-blocking write, and gives
// up the writer's part: to a writer goroutine if anything is left to
// write, queued since or left over by the kernel, or if the connection
// was kicked.
func (cn *conn) writeClaimed() {
	c := cn.comet
	cn.qmu.Lock()
	if cn.kicked || cn.turn == nil {
		cn.turn = nil
		cn.qmu.Unlock()
		cn.resume()
		return
	}
	// Only whole frames were queued since the claim: claim found the
	// queue empty, and a remainder is put back only as a claim ends.
	frames := append(append(cn.spare[:0], cn.turn), cn.queue...)
	clear(cn.queue)
	cn.queue, cn.spare, cn.turn = cn.queue[:0], nil, nil
	cn.wbytes += cn.qbytes // the claim holds them now (a kick drops them)
	cn.qbytes = 0
	cn.qmu.Unlock()

	// One frame is written as it is; several are copied into one
	// buffer, a room's frames merged (appendMerged).
	var b []byte
	var endsArr [8]int
	ends := endsArr[:0] // where each WebSocket message of b ends
	var buf *[]byte     // b's pooled buffer, if any
	if len(frames) == 1 {
		b = frames[0].message(cn.enc())
		ends = append(ends, len(b))
	} else {
		buf = batchBuffers.Get().(*[]byte)
		*buf, ends = appendMerged(*buf, frames, cn.enc(), ends)
		b = *buf
	}
	n, err := cn.net.writeNow(b)
	var rest []*frame // what is left to write, in order
	if err != nil {
		rest = frames
	} else {
		whole := 0
		for whole < len(ends) && ends[whole] <= n {
			whole++
		}
		c.framesSent.Add(int64(whole))
		if t := frames[0].flushed; whole > 0 && !t.IsZero() {
			c.lat.writeLag.Observe(time.Since(t).Seconds())
		}
		if n < len(b) {
			// The rest as raw bytes: a merged message has no frame.
			raw := b[n:]
			if buf != nil {
				raw = bytes.Clone(raw)
			}
			rest = []*frame{{raw: raw}}
		}
	}
	if buf != nil {
		*buf = (*buf)[:0]
		if cap(*buf) <= maxPooledBatch {
			batchBuffers.Put(buf)
		}
	}
	cn.qmu.Lock()
	c.queued.Add(-int64(cn.wbytes)) // written, or queued again below
	cn.wbytes = 0
	cn.qmu.Unlock()
	if n > 0 {
		c.bytesSent.Add(int64(n))
	}
	if err != nil && !errors.Is(err, errBusy) {
		c.logger.Debug("write", "conn", cn.id, "err", err)
		cn.qmu.Lock()
		if !cn.kicked {
			cn.kicked = true
			cn.closeStatus, cn.closeReason, cn.closeFlush = websocket.StatusGoingAway, "write failed", false
		}
		cn.qmu.Unlock()
		rest = nil // the writer closes the connection
	}
	if len(rest) > 0 {
		cn.requeue(rest)
	}
	if err == nil { // copied into b, or into a remainder of its own
		for _, f := range frames {
			f.release()
		}
	}
	cn.spareAgain(frames)
	cn.resume()
}

// spareAgain clears frames, a queue taken by writeClaimed, and keeps it
// for reuse as the connection's spare queue.
func (cn *conn) spareAgain(frames []*frame) {
	clear(frames)
	cn.qmu.Lock()
	if cn.spare == nil {
		cn.spare = frames[:0]
	}
	cn.qmu.Unlock()
}

// requeue puts frames at the head of the queue, before anything queued
// since they were taken. The caller is the connection's writer.
func (cn *conn) requeue(frames []*frame) {
	size := 0
	for _, f := range frames {
		size += len(f.bytes(cn.enc()))
	}
	cn.qmu.Lock()
	q := make([]*frame, 0, len(frames)+len(cn.queue))
	cn.queue = append(append(q, frames...), cn.queue...)
	if !cn.kicked { // else the kick has let go of the connection's bytes
		cn.qbytes += size
		cn.comet.queued.Add(int64(size))
	}
	cn.qmu.Unlock()
}

// resume ends the claim and hands what was queued or a kick that came
// meanwhile to the writer goroutine, started or woken.
func (cn *conn) resume() {
	cn.qmu.Lock()
	cn.claimed = false
	if cn.turn != nil { // not written: the comet is closing (stopReady)
		cn.queue = append([]*frame{cn.turn}, cn.queue...)
		cn.turn = nil
	}
	var start, wake bool
	if len(cn.queue) > 0 || cn.kicked {
		start, wake = cn.wakeLocked()
	}
	cn.qmu.Unlock()
	cn.signal(start, wake)
}

// writerLinger is how long a writer with nothing to write waits for more
// before its goroutine exits.
const writerLinger = time.Second

// kick asks the writer to close the connection with status and reason;
// with flush, the frames already queued are written first. Safe to call
// many times from any goroutine; the first call wins and reports true.
func (cn *conn) kick(status websocket.StatusCode, reason string, flush bool) (first bool) {
	cn.qmu.Lock()
	if cn.kicked {
		cn.qmu.Unlock()
		return false
	}
	cn.kicked = true
	cn.closeStatus, cn.closeReason, cn.closeFlush = status, closeReason(reason), flush
	// What it holds no longer counts against the comet's byte budget:
	// nothing more is queued to it, and its writer is ending.
	cn.comet.queued.Add(-int64(cn.qbytes + cn.wbytes))
	cn.qbytes, cn.wbytes = 0, 0
	var start, wake bool
	if !cn.claimed { // else the claim's resume hands it over
		start, wake = cn.wakeLocked()
	}
	cn.qmu.Unlock()
	cn.signal(start, wake)
	return true
}

// startWriter runs the writer in a goroutine owned by the comet. The
// caller has set cn.writing. A connection's first writer starts while its
// reader (which holds a count of the comet's wg) is running or from a
// kick made before the reader's own, so the count never drops to zero
// under a Close that is waiting.
func (cn *conn) startWriter() {
	cn.comet.wg.Add(1)
	go func() {
		defer cn.comet.wg.Done()
		cn.write()
	}()
}

// write drains the queue until it is empty, or until the connection is
// kicked, in which case it writes what is queued if the kick asked for
// it, and closes the connection.
func (cn *conn) write() {
	broken, failed := false, false
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		cn.qmu.Lock()
		if cn.claimed || len(cn.queue) == 0 && !cn.kicked {
			// Nothing to write, or a broadcast writes now (claim) and
			// what is queued waits for it.
			cn.parked = true
			cn.qmu.Unlock()
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			} else {
				linger.Reset(writerLinger)
			}
			select {
			case <-cn.wake:
				continue
			case <-cn.comet.stop:
			case <-linger.C:
			}
			cn.qmu.Lock()
			if cn.parked && (cn.claimed || len(cn.queue) == 0 && !cn.kicked) {
				cn.parked, cn.writing = false, false
				cn.qmu.Unlock()
				return
			}
			cn.parked = false
			cn.qmu.Unlock()
			continue
		}
		batch := cn.queue
		cn.queue = cn.spare[:0]
		cn.wbytes += cn.qbytes // the writer holds them now
		cn.qbytes = 0
		kicked, flush := cn.kicked, cn.closeFlush
		cn.qmu.Unlock()

		if kicked && !flush {
			broken = true // nothing more is written
		}
		if !broken && len(batch) > 0 && !cn.writeBatch(batch) {
			broken, failed = true, true
		}
		for _, f := range batch { // written or dropped
			f.release()
		}
		clear(batch)
		cn.qmu.Lock()
		cn.spare = batch[:0]
		cn.comet.queued.Add(-int64(cn.wbytes)) // written or dropped
		cn.wbytes = 0
		cn.qmu.Unlock()
		if broken && !kicked {
			cn.kick(websocket.StatusGoingAway, "write failed", false)
			continue
		}
		if kicked {
			cn.qmu.Lock()
			more := len(cn.queue) > 0 && flush && !broken
			cn.qmu.Unlock()
			if more {
				continue
			}
			cn.finish(failed)
			return
		}
	}
}

// finish closes the connection after a kick and drops anything still
// queued. The writer stays marked as running, so no other starts.
func (cn *conn) finish(failed bool) {
	cn.qmu.Lock()
	cn.queue = nil
	cn.qbytes = 0
	status, reason := cn.closeStatus, cn.closeReason
	cn.qmu.Unlock()
	if cn.ws == nil {
		return
	}
	// A parked reader is resumed to find the end and unregister.
	defer cn.unpark()
	if failed {
		cn.ws.CloseNow()
		return
	}
	if cn.net != nil {
		// Bounds the close handshake's write as well.
		_ = cn.net.SetWriteDeadline(time.Now().Add(cn.comet.cfg.WriteTimeout))
	}
	cn.ws.Close(status, reason)
	cn.ws.CloseNow()
}

// writeBatch writes frames in order, each as one WebSocket message, in
// one write call bounded by one deadline (see socket). It reports false
// on failure.
func (cn *conn) writeBatch(batch []*frame) bool {
	c := cn.comet
	if cn.ws == nil { // a test member: encode, count and discard
		for _, f := range batch {
			c.framesSent.Add(1)
			c.bytesSent.Add(int64(len(f.bytes(cn.enc()))))
		}
		return true
	}
	typ := websocket.MessageBinary
	if cn.json {
		typ = websocket.MessageText
	}
	if cn.net != nil {
		// One deadline for the batch instead of a context per write: a
		// client that stops reading fails the write after WriteTimeout.
		_ = cn.net.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		cn.net.gather()
	}
	// Without a deadline of its own in ctx, Write sets up no per-write
	// timer; c.ctx is not used here for that reason. The socket's
	// deadline bounds the write.
	framed := 0
	var err error
	for _, f := range batch {
		if f.raw != nil {
			// The rest of a message a non-blocking write began: bytes
			// as they are, gathered with the others.
			_, err = cn.net.Write(f.raw)
		} else {
			err = cn.ws.Write(noDeadline, typ, f.bytes(cn.enc()))
		}
		if err != nil {
			break
		}
		framed++
	}
	var n int
	if cn.net != nil {
		// Frames framed before a failure are still sent: they are whole.
		var serr error
		if n, serr = cn.net.send(); err == nil {
			err = serr
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && cn.kick(websocket.StatusPolicyViolation, "slow consumer", false) {
			// The client read nothing for WriteTimeout.
			c.slow.Add(1)
			c.logger.Info("slow consumer disconnected", "conn", cn.id, "reason", "write timeout")
		}
		c.logger.Debug("write", "conn", cn.id, "err", err)
		return false
	}
	c.framesSent.Add(int64(framed))
	c.bytesSent.Add(int64(n))
	return true
}

// noDeadline is the context of writes: their deadline is the socket's.
var noDeadline = context.Background()
