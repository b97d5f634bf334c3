package comet

import (
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/msgstore"
)

// # Recent messages
//
// Every room with members on the comet keeps the latest messages of its
// conversation it queued, a run of consecutive seqs, so that the comet
// answers most of a catch-up of the room itself: when thousands of a big
// room's members were cut as slow consumers and come back, they read the
// same few thousand messages, page by page, and each page through the
// history worker costs a request on a topic, a read of the store and an
// answer on another topic (issue 9: a 10,000-member room at 1,000
// messages a second took minutes to catch up).
//
// A Sync of a room's conversation, by a connection joined to that room
// on this comet and without current_state, is answered from the room's
// recent messages when every message of the page is there and at least
// one more follows it: that page is exactly what the history worker
// would answer (the same messages as routed, the same limit and byte
// bound, has_more set). Anything else, the last page of a catch-up
// included, goes to the history worker, which knows the conversation's
// latest seq and waits for its store to hold it. A gap in the seqs (a
// message the room never queued) starts the run again after it.
//
// Config.RecentBytes bounds the messages kept by all rooms together,
// about: a room adding messages beyond it trims its own run to its share
// of it (RecentBytes over the rooms keeping some).

// defaultRecentBytes is Config.RecentBytes's default: a 10,000-member
// room at 1,000 small messages a second keeps about the last minute.
const defaultRecentBytes = 64 << 20

// recentOverhead approximates the memory a kept message costs beyond its
// encoding: the decoded message's struct, strings and slice slot.
const recentOverhead = 128

// recent is a run of a conversation's messages with consecutive seqs,
// oldest first.
type recent struct {
	msgs  []*clientpb.Message // msgs[head:] are kept
	sizes []int               // the bytes each message of msgs counts
	head  int
	bytes int // the sum of sizes[head:]
}

func (r *recent) len() int { return len(r.msgs) - r.head }

// add keeps m after the run, or in a new run when m does not follow it.
// It returns the change in bytes kept.
func (r *recent) add(m *clientpb.Message) int {
	freed := 0
	if n := r.len(); n > 0 && m.GetSeq() != r.msgs[len(r.msgs)-1].GetSeq()+1 {
		freed = r.bytes
		*r = recent{}
	}
	size := proto.Size(m) + recentOverhead
	r.msgs = append(r.msgs, m)
	r.sizes = append(r.sizes, size)
	r.bytes += size
	return size - freed
}

// trim drops the oldest messages until at most max bytes are kept and
// returns the bytes freed.
func (r *recent) trim(max int) int {
	freed := 0
	for r.head < len(r.msgs) && r.bytes > max {
		r.bytes -= r.sizes[r.head]
		freed += r.sizes[r.head]
		r.msgs[r.head] = nil
		r.head++
	}
	if r.head == len(r.msgs) {
		*r = recent{}
	} else if r.head > len(r.msgs)/2 {
		// Move the run to the front, so the arrays do not grow forever.
		n := copy(r.msgs, r.msgs[r.head:])
		copy(r.sizes, r.sizes[r.head:])
		clear(r.msgs[n:])
		r.msgs, r.sizes, r.head = r.msgs[:n], r.sizes[:n], 0
	}
	return freed
}

// page returns the limit messages after seq after, bounded in bytes as
// the history worker bounds a page (msgstore.Bound), in a new slice. It
// reports false unless they are all kept and at least one more follows
// them.
func (r *recent) page(after uint64, limit, maxBytes int) ([]*clientpb.Message, bool) {
	if r.len() == 0 || limit <= 0 {
		return nil, false
	}
	first, last := r.msgs[r.head].GetSeq(), r.msgs[len(r.msgs)-1].GetSeq()
	if after+1 < first || after >= last {
		return nil, false
	}
	i := r.head + int(after+1-first)
	if i+limit >= len(r.msgs) { // the page would end the run
		return nil, false
	}
	msgs, _ := msgstore.Bound(r.msgs[i:i+limit], maxBytes)
	return append([]*clientpb.Message(nil), msgs...), true
}

// keepLocked adds msgs, the messages the room queued, to its recent
// messages, within the comet's budget. r.mu is held.
func (r *room) keepLocked(msgs []*clientpb.Message) {
	c := r.c
	budget := int64(c.cfg.RecentBytes)
	if budget < 0 || r.stopped {
		return
	}
	had := r.recent.len() > 0
	delta := 0
	for _, m := range msgs {
		if m.GetSeq() != 0 && m.GetConversation() == r.conv {
			delta += r.recent.add(m)
		}
	}
	if delta == 0 {
		return
	}
	if !had && r.recent.len() > 0 {
		c.recentRooms.Add(1)
	}
	if c.recentBytes.Add(int64(delta)) > budget {
		share := budget / max(1, c.recentRooms.Load())
		c.recentBytes.Add(-int64(r.recent.trim(int(share))))
		if r.recent.len() == 0 {
			c.recentRooms.Add(-1)
		}
	}
}

// forgetRecentLocked drops the room's recent messages (it stops). r.mu
// is held.
func (r *room) forgetRecentLocked() {
	if r.recent.len() > 0 {
		r.c.recentRooms.Add(-1)
	}
	r.c.recentBytes.Add(-int64(r.recent.bytes))
	r.recent = recent{}
}

// recentPage is recent.page of the room's recent messages.
func (r *room) recentPage(after uint64, limit int) ([]*clientpb.Message, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recent.page(after, limit, msgstore.MaxPageBytes)
}

// syncRecent answers s, a Sync without current_state, from the recent
// messages of its room when the connection is joined to it and the page
// is there (see Recent messages); it reports whether it answered.
func (cn *conn) syncRecent(req uint64, s *clientpb.Sync) bool {
	c := cn.comet
	if c.cfg.RecentBytes < 0 || s.GetCurrentState() {
		return false
	}
	conv, err := topics.ParseConversation(s.GetConversation())
	if err != nil || conv.Kind != topics.Room {
		return false
	}
	c.mu.RLock()
	rm := c.rooms[conv.Room]
	joined := cn.rooms.has(conv.Room)
	c.mu.RUnlock()
	if rm == nil || !joined {
		return false
	}
	msgs, ok := rm.recentPage(s.GetAfterSeq(), msgstore.PageSize(int(s.GetLimit())))
	if !ok {
		return false
	}
	c.recentSyncs.Add(1)
	cn.reply(&clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_SyncResult{
		SyncResult: &clientpb.SyncResult{Conversation: s.GetConversation(), Messages: msgs, HasMore: true},
	}})
	return true
}
