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
// second (capped by MaxBatchWindow). So a quiet room adds no latency,
// and a busy one's frames carry more messages as its rate grows, its
// members getting a bounded number of frames a second.
//
// A flush does not wait for the previous frame to reach every member:
// members are written in turn through the comet's ready list (ready.go),
// and one whose turn has not come when the next frame is queued takes
// both in one write. The comet's write rate sets how long a turn lasts,
// so the writes per member adapt to its backlog, and a message waits at
// most one window and one turn (issue 9).
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
		r.broadcastLocked(msgs)
		r.mu.Unlock()
		return
	}
	r.pending = append(r.pending, msgs...)
	r.scheduleLocked(time.Now())
	r.mu.Unlock()
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
// schedules the flush. r.mu is held.
func (r *room) scheduleLocked(now time.Time) {
	if r.timer != nil || len(r.pending) == 0 {
		return
	}
	due := r.lastFlush.Add(r.window())
	if !now.Before(due) {
		r.flushLocked(now)
		return
	}
	// Not stopped, so Close has not stopped this room yet and is not
	// waiting: adding to wg is safe.
	r.c.wg.Add(1)
	r.timer = time.AfterFunc(due.Sub(now), r.onTimer)
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
	defer r.mu.Unlock()
	r.timer = nil
	if !r.stopped {
		r.scheduleLocked(time.Now())
	}
}

// flushLocked sends the pending messages as one frame.
func (r *room) flushLocked(now time.Time) {
	msgs := r.pending
	r.pending = nil
	r.lastFlush = now
	r.broadcastLocked(msgs)
}

// broadcastLocked queues one frame, encoded once per encoding, to every
// member, and puts the idle ones on the comet's ready list; r.mu is
// held, so a room's frames are queued in order.
func (r *room) broadcastLocked(msgs []*clientpb.Message) {
	if len(r.members) == 0 {
		return
	}
	f := newFrame(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	f.conv = r.conv
	claimed := make([]*conn, 0, len(r.members))
	for cn := range r.members {
		if cn.claim(f) {
			claimed = append(claimed, cn)
		}
	}
	if len(claimed) > 0 {
		r.c.push(claimed)
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
