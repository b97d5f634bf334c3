package comet

import (
	"sync"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// room is the local index of a room's members and its message batcher.
// Lock order: the comet's mu before a room's mu. A scheduled flush holds
// one count of the comet's wg until it has run or been stopped, so Close
// waits for it.
//
// # Adaptive batching
//
// A room sends its members one frame at a time: the first messages after
// a quiet window go out at once; later ones are merged and flushed one
// window after the previous flush. The window is BatchWindow, or longer
// for a big room: N local members get at most FrameBudget/N frames a
// second (capped by MaxBatchWindow). And while a frame is still being
// written to the room's members (more than one in sixteen of them, and
// more than one, have not taken it yet), newer messages wait and are merged into the next
// frame, sent as soon as the previous one has gone out. So a quiet room
// adds no latency, and a busy one sends frames as fast as the comet can
// write them, never faster: the window grows by itself with the room's
// rate, its size and the comet's write backlog, and the number of
// messages per frame with it. A frame that takes longer than
// MaxBatchWindow to go out does not hold the next one back any longer:
// members that lag keep up or are closed as slow consumers.
//
// # Repeats
//
// The room remembers the highest seq of its conversation it has queued
// (lastSeq) and drops a message at or below it, before it is batched:
// the pipeline delivers a message more than once at times (a retry after
// a partial failure, a dead letter sent back), and every member present
// already has it. A message after a gap is queued at once, and one of the
// missing seqs arriving after it is dropped: a member that was present
// saw the gap and Syncs it, and a member that joined since Syncs up to
// its Joined.latest_seq (should that have been read before a message the
// room queued earlier, the member misses that message with or without
// this, and sees the gap at the room's next one). A room created anew
// (its first local member joined) remembers nothing and drops nothing.
type room struct {
	c    *Comet
	id   string
	conv string // the room's conversation

	mu        sync.Mutex
	members   map[*conn]struct{}
	pending   []*clientpb.Message
	lastSeq   uint64 // the highest seq of conv queued
	lastFlush time.Time
	timer     *time.Timer // scheduled flush, or nil
	inflight  *frame      // the last frame, until enough members took it
	stopped   bool
}

func newRoom(c *Comet, id string) *room {
	return &room{c: c, id: id, conv: topics.RoomConversation(id), members: map[*conn]struct{}{}}
}

// add queues messages for the room's members (see the type's doc), but
// repeats. Messages keep the order in which add is called.
func (r *room) add(msgs []*clientpb.Message) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	if msgs = r.freshLocked(msgs); len(msgs) == 0 {
		r.mu.Unlock()
		return
	}
	if r.c.cfg.BatchWindow == 0 { // merging disabled: one frame per call
		f := r.broadcastLocked(msgs, false)
		r.mu.Unlock()
		f.arm()
		return
	}
	r.pending = append(r.pending, msgs...)
	f := r.scheduleLocked(time.Now())
	r.mu.Unlock()
	f.arm()
}

// freshLocked returns msgs without the room's repeats (see the type's
// doc), counting them; msgs itself when none is a repeat. r.mu is held.
func (r *room) freshLocked(msgs []*clientpb.Message) []*clientpb.Message {
	var out []*clientpb.Message // made at the first repeat
	for i, m := range msgs {
		if r.repeatLocked(m) {
			r.c.repeats.Add(1)
			if out == nil {
				out = append(make([]*clientpb.Message, 0, len(msgs)-1), msgs[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, m)
		}
	}
	if out == nil {
		return msgs
	}
	return out
}

// repeatLocked reports whether m repeats a message the room queued, and
// otherwise records its seq. Messages of another conversation, or without
// a seq, are never repeats. r.mu is held.
func (r *room) repeatLocked(m *clientpb.Message) bool {
	seq := m.GetSeq()
	if seq == 0 || m.GetConversation() != r.conv {
		return false
	}
	if seq <= r.lastSeq {
		return true
	}
	r.lastSeq = seq
	return false
}

// scheduleLocked flushes the pending messages now if they are due, or
// schedules the flush; it returns the frame sent, if any, to be armed
// once r.mu is released.
func (r *room) scheduleLocked(now time.Time) *frame {
	if r.timer != nil || len(r.pending) == 0 {
		return nil
	}
	due := r.lastFlush.Add(r.window())
	if r.inflight != nil {
		due = r.lastFlush.Add(r.c.cfg.MaxBatchWindow)
	}
	if !now.Before(due) {
		return r.flushLocked(now)
	}
	// Not stopped, so Close has not stopped this room yet and is not
	// waiting: adding to wg is safe.
	r.c.wg.Add(1)
	r.timer = time.AfterFunc(due.Sub(now), r.onTimer)
	return nil
}

// window is the least time between two flushes of the room: BatchWindow,
// or the time FrameBudget gives the room's members, at most
// MaxBatchWindow. r.mu is held.
func (r *room) window() time.Duration {
	cfg := r.c.cfg
	w := time.Duration(len(r.members)) * time.Second / time.Duration(cfg.FrameBudget)
	return min(max(w, cfg.BatchWindow), cfg.MaxBatchWindow)
}

// onTimer runs a scheduled flush.
func (r *room) onTimer() {
	defer r.c.wg.Done()
	r.mu.Lock()
	r.timer = nil
	if r.stopped {
		r.mu.Unlock()
		return
	}
	f := r.scheduleLocked(time.Now())
	r.mu.Unlock()
	f.arm()
}

// drained is told by f when few enough members have yet to take it: the
// next frame may go.
func (r *room) drained(f *frame) {
	r.mu.Lock()
	if r.inflight != f || r.stopped {
		r.mu.Unlock()
		return
	}
	r.inflight = nil
	if r.timer != nil && r.timer.Stop() {
		r.timer = nil
		r.c.wg.Done() // the stopped flush will not run
	}
	var next *frame
	if r.timer == nil {
		next = r.scheduleLocked(time.Now())
	}
	r.mu.Unlock()
	next.arm()
}

// flushLocked sends the pending messages as one frame.
func (r *room) flushLocked(now time.Time) *frame {
	msgs := r.pending
	r.pending = nil
	r.lastFlush = now
	return r.broadcastLocked(msgs, true)
}

// broadcastLocked queues one frame, encoded once per encoding, to every
// member; r.mu is held, so a room's frames are queued in order. With
// track, the frame becomes the room's inflight one. The caller arms the
// returned frame after releasing r.mu.
func (r *room) broadcastLocked(msgs []*clientpb.Message, track bool) *frame {
	f := newFrame(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	n := int64(len(r.members))
	if n == 0 {
		return nil
	}
	if track {
		f.room = r
		f.threshold = max(1, n/16) // a straggler never holds a room back
		// Held until arm: a release made while r.mu is held (a member
		// refusing the frame) cannot call drained, which takes r.mu.
		f.pending.Store(n + armHold)
		r.inflight = f
	}
	var claimed []*conn
	for cn := range r.members {
		if cn.claim(f) {
			claimed = append(claimed, cn)
		}
	}
	if len(claimed) > 0 {
		r.c.writeAll(f, claimed)
	}
	return f
}

// stop drops pending messages and the scheduled flush; the room takes no
// more messages.
func (r *room) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.pending = nil
	r.inflight = nil
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
