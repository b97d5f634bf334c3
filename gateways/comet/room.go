package comet

import (
	"sync"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
)

// room is the local index of a room's members and its message batcher.
// Lock order: the comet's mu before a room's mu.
type room struct {
	id     string
	window time.Duration

	mu        sync.Mutex
	members   map[*conn]struct{}
	pending   []*clientpb.Message
	lastFlush time.Time
	timer     *time.Timer
	stopped   bool
}

func newRoom(id string, window time.Duration) *room {
	return &room{id: id, window: window, members: map[*conn]struct{}{}}
}

// add queues messages for the room's members. The first messages after a
// quiet window go out at once; later ones are merged and flushed one
// window after the previous flush, so a busy room sends at most one frame
// per window to each member, and a quiet one adds no latency.
func (r *room) add(c *Comet, msgs []*clientpb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	now := time.Now()
	if len(r.pending) == 0 && now.Sub(r.lastFlush) >= r.window {
		r.lastFlush = now
		r.broadcast(c, msgs)
		return
	}
	r.pending = append(r.pending, msgs...)
	if r.timer == nil {
		r.timer = time.AfterFunc(r.lastFlush.Add(r.window).Sub(now), func() { r.flush(c) })
	}
}

func (r *room) flush(c *Comet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if r.stopped || len(r.pending) == 0 {
		return
	}
	msgs := r.pending
	r.pending = nil
	r.lastFlush = time.Now()
	r.broadcast(c, msgs)
}

// broadcast queues one frame, encoded once, to every member. r.mu is held,
// so a room's batches are queued in order.
func (r *room) broadcast(c *Comet, msgs []*clientpb.Message) {
	f := newFrame(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	for cn := range r.members {
		cn.enqueue(c, f)
	}
}

// stop drops pending messages and the flush timer.
func (r *room) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.pending = nil
	if r.timer != nil {
		r.timer.Stop()
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
