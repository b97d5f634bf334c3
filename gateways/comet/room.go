package comet

import (
	"cmp"
	"slices"
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
// so the writes per member adapt to its backlog.
//
// # Stripes
//
// A big room's members are dealt into stripes (at most one per
// stripeMembers members and per minSlot of the window, up to
// maxStripes), each with its own flushes. While the room is busy, stripe
// k of K flushes at phase k/K of each window: the room's members are
// written a stripe at a time, spread evenly over the window, instead of
// all at once, one window after another. A message then waits at most
// one window for its stripe, not a window and then the sweep of every
// member before it (issue 9). After a quiet window a stripe flushes at
// once, so a lone message still goes to every member straight away; a
// stripe flushed off its phase returns to it at its first phase at least
// half a window later, so a member gets at most two frames in a window.
// A room of one stripe flushes one window after its last flush.
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
	c     *Comet
	id    string
	conv  string    // the room's conversation
	epoch time.Time // the origin of the stripes' phases

	mu      sync.Mutex
	members map[*conn]*stripe
	stripes []*stripe
	// log holds the messages queued that some stripe has not flushed:
	// those numbered logEnd-len(log) to logEnd-1, counting every message
	// the room ever queued from 0.
	log     []*clientpb.Message
	arrived []time.Time // when each message of log was queued
	logEnd  uint64
	lastSeq uint64      // the highest seq of conv queued
	recent  recent      // the latest messages queued (recent.go)
	timer   *time.Timer // scheduled flush, or nil
	timerAt time.Time   // when timer fires
	stopped bool
}

// stripe is a share of a room's members that is flushed together.
type stripe struct {
	members   map[*conn]struct{}
	next      uint64    // the number of the first message of the log not flushed to the stripe
	lastFlush time.Time // zero before the first flush
}

const (
	stripeMembers = 256                  // the fewest members per stripe
	maxStripes    = 64                   // the most stripes of a room
	minSlot       = 5 * time.Millisecond // the least time between two stripes' phases
)

func newRoom(c *Comet, id string) *room {
	return &room{c: c, id: id, conv: topics.RoomConversation(id), epoch: time.Now(),
		members: map[*conn]*stripe{}}
}

// add queues messages for the room's members (see the type's doc), but
// repeats. Messages keep the order in which add is called.
func (r *room) add(msgs []*clientpb.Message) { r.addAt(msgs, time.Now()) }

// addAt is add at time now.
func (r *room) addAt(msgs []*clientpb.Message, now time.Time) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	if msgs = r.freshLocked(msgs); len(msgs) == 0 {
		r.mu.Unlock()
		return
	}
	r.keepLocked(msgs)
	if r.c.cfg.BatchWindow == 0 { // merging disabled: one frame per call
		r.broadcastLocked(msgs, r.stripes...)
		r.mu.Unlock()
		return
	}
	// A stripe with nothing queued that has not flushed for a window is
	// quiet: it flushes these at once (the leading edge).
	w := r.window()
	var quiet []*stripe
	for _, s := range r.stripes {
		if s.next == r.logEnd && !now.Before(s.lastFlush.Add(w)) {
			quiet = append(quiet, s)
		}
	}
	r.log = append(r.log, msgs...)
	for range msgs {
		r.arrived = append(r.arrived, now)
	}
	r.logEnd += uint64(len(msgs))
	if len(quiet) > 0 { // they had everything before msgs: one frame for all
		r.flushLocked(now, quiet...)
	}
	r.scheduleLocked(now)
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

// scheduleLocked flushes the stripes that are due and schedules the
// next flush, if any stripe has messages queued. r.mu is held.
func (r *room) scheduleLocked(now time.Time) {
	w := r.window()
	var next time.Time
	for k, s := range r.stripes {
		if s.next == r.logEnd {
			continue
		}
		due := r.dueLocked(k, w)
		if !now.Before(due) {
			r.flushLocked(now, s)
			continue
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	r.trimLocked()
	if next.IsZero() {
		return
	}
	if r.timer != nil {
		if !r.timerAt.After(next) || !r.timer.Stop() {
			return // it fires in time, or is firing and will schedule
		}
		r.c.wg.Done() // the stopped flush will not run
	}
	// Not stopped, so Close has not stopped this room yet and is not
	// waiting: adding to wg is safe.
	r.c.wg.Add(1)
	r.timer = time.AfterFunc(next.Sub(now), r.onTimer)
	r.timerAt = next
}

// dueLocked is when stripe k, which has messages queued, flushes them: a
// window after its last flush if it is the room's only stripe, else at
// its first phase at least half a window after its last flush (see the
// type's doc). r.mu is held.
func (r *room) dueLocked(k int, w time.Duration) time.Time {
	s, n := r.stripes[k], len(r.stripes)
	if n == 1 {
		return s.lastFlush.Add(w)
	}
	phase := r.epoch.Add(time.Duration(k) * w / time.Duration(n))
	earliest := s.lastFlush.Add(w / 2)
	if !earliest.After(phase) {
		return phase
	}
	periods := (earliest.Sub(phase) + w - 1) / w
	return phase.Add(periods * w)
}

// window is the least time between two flushes of the room: BatchWindow,
// or the time FrameBudget gives the room's members, at most
// MaxBatchWindow. r.mu is held.
func (r *room) window() time.Duration {
	cfg := r.c.cfg
	w := time.Duration(len(r.members)) * time.Second / time.Duration(cfg.FrameBudget)
	return min(max(w, cfg.BatchWindow), cfg.MaxBatchWindow)
}

// stripesFor is how many stripes a room of n members whose window is w
// is dealt into.
func stripesFor(n int, w time.Duration) int {
	return max(1, min(n/stripeMembers, int(w/minSlot), maxStripes))
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

// flushLocked sends stripes, which have had the same messages of the log,
// those they have not had, as one frame. r.mu is held.
func (r *room) flushLocked(now time.Time, stripes ...*stripe) {
	first := len(r.log) - int(r.logEnd-stripes[0].next)
	msgs := r.log[first:len(r.log):len(r.log)]
	for _, s := range stripes {
		s.next, s.lastFlush = r.logEnd, now
		for _, t := range r.arrived[first:] {
			r.c.lat.roomWait.Observe(now.Sub(t).Seconds())
		}
	}
	r.broadcastLocked(msgs, stripes...)
}

// trimLocked drops the messages of the log every stripe has had. The
// frames that hold them keep their own slices of the log, which are
// never written again. r.mu is held.
func (r *room) trimLocked() {
	oldest := r.logEnd
	for _, s := range r.stripes {
		oldest = min(oldest, s.next)
	}
	if oldest == r.logEnd {
		r.log, r.arrived = nil, nil
		return
	}
	r.log = r.log[len(r.log)-int(r.logEnd-oldest):]
	r.arrived = r.arrived[len(r.arrived)-int(r.logEnd-oldest):]
}

// broadcastLocked queues one frame, encoded once per encoding, to every
// member of the stripes, and puts the idle ones on the comet's ready
// list; r.mu is held, so a room's frames are queued in order.
func (r *room) broadcastLocked(msgs []*clientpb.Message, stripes ...*stripe) {
	n := 0
	for _, s := range stripes {
		n += len(s.members)
	}
	if n == 0 || len(msgs) == 0 {
		return
	}
	f := newFrame(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	f.conv, f.flushed = r.conv, time.Now()
	claimed := make([]*conn, 0, n)
	for _, s := range stripes {
		for cn := range s.members {
			if cn.claim(f) {
				claimed = append(claimed, cn)
			}
		}
	}
	if len(claimed) > 0 {
		r.c.push(claimed)
	}
}

// stop drops queued messages and the scheduled flush; the room takes no
// more messages.
func (r *room) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.log, r.arrived = nil, nil
	r.forgetRecentLocked()
	for _, s := range r.stripes {
		s.next = r.logEnd
	}
	if r.timer != nil {
		if r.timer.Stop() {
			r.c.wg.Done() // the flush will not run
		}
		r.timer = nil
	}
}

// join adds a member to the room's smallest stripe, first adding a
// stripe if the room has grown enough for another. The member gets the
// messages queued for its stripe.
func (r *room) join(cn *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.members[cn]; ok {
		return
	}
	r.members[cn] = nil // counted in the window below
	if len(r.stripes) < stripesFor(len(r.members), r.window()) {
		r.stripes = append(r.stripes, &stripe{members: map[*conn]struct{}{}, next: r.logEnd - uint64(len(r.log))})
	}
	s := slices.MinFunc(r.stripes, func(a, b *stripe) int { return cmp.Compare(len(a.members), len(b.members)) })
	s.members[cn] = struct{}{}
	r.members[cn] = s
}

// leave removes a member and reports how many are left.
func (r *room) leave(cn *conn) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.members[cn]; ok {
		delete(s.members, cn)
		delete(r.members, cn)
	}
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
