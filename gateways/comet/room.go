package comet

import (
	"sync"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
)

// room is the local index of a room's members and its message batcher.
// Lock order: the comet's mu before a room's mu. A scheduled flush holds
// one count of the comet's wg until it has run or been stopped, so Close
// waits for it.
type room struct {
	c  *Comet
	id string

	mu        sync.Mutex
	members   map[*conn]struct{}
	pending   []*clientpb.Message
	lastFlush time.Time
	timer     *time.Timer // scheduled flush, or nil
	stopped   bool
}

func newRoom(c *Comet, id string) *room {
	return &room{c: c, id: id, members: map[*conn]struct{}{}}
}

// add queues messages for the room's members. The first messages after a
// quiet window go out at once; later ones are merged and flushed one
// window after the previous flush, so a busy room sends at most one frame
// per window to each member, and a quiet one adds no latency. Messages
// keep the order in which add is called.
func (r *room) add(msgs []*clientpb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	now := time.Now()
	window := r.c.cfg.BatchWindow
	if len(r.pending) == 0 && now.Sub(r.lastFlush) >= window {
		r.lastFlush = now
		r.broadcast(msgs)
		return
	}
	r.pending = append(r.pending, msgs...)
	if r.timer == nil {
		// Not stopped, so Close has not stopped this room yet and is
		// not waiting: adding to wg is safe.
		r.c.wg.Add(1)
		r.timer = time.AfterFunc(r.lastFlush.Add(window).Sub(now), r.flush)
	}
}

// flush runs from the timer: it writes the pending batch.
func (r *room) flush() {
	defer r.c.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if r.stopped || len(r.pending) == 0 {
		return
	}
	msgs := r.pending
	r.pending = nil
	r.lastFlush = time.Now()
	r.broadcast(msgs)
}

// broadcast queues one frame, encoded once per encoding, to every member.
// r.mu is held, so a room's batches are queued in order.
func (r *room) broadcast(msgs []*clientpb.Message) {
	f := newFrame(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	for cn := range r.members {
		cn.enqueue(f)
	}
}

// stop drops pending messages and the scheduled flush; the room takes no
// more messages.
func (r *room) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.pending = nil
	if r.timer != nil {
		if r.timer.Stop() {
			r.c.wg.Done() // the flush will not run
		}
		r.timer = nil
	}
}

// join adds a member.
func (r *room) join(cn *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members[cn] = struct{}{}
}

// leave removes a member and reports how many are left.
func (r *room) leave(cn *conn) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.members, cn)
	return len(r.members)
}

// appendMembers appends the members to out.
func (r *room) appendMembers(out []*conn) []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	for cn := range r.members {
		out = append(out, cn)
	}
	return out
}
