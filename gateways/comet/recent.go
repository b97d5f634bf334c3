package comet

import (
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
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
// Config.RecentBytes bounds the messages kept by all rooms together:
// when they pass it, every room trims its run to its share of four
// fifths of it (trimRecent), idle rooms as well as busy ones.

// defaultRecentBytes is Config.RecentBytes's default: a room alone at
// 1,000 messages of the bench a second (about 180 bytes each, counted
// as below) keeps the last few minutes.
const defaultRecentBytes = 64 << 20

// recentOverhead approximates the memory a kept message costs beyond its
// encoding: its slice's header and the allocation's rounding.
const recentOverhead = 48

// recent is a run of a conversation's messages with consecutive seqs,
// oldest first, each kept encoded (a Message in protobuf): a page of
// them is written to a client without encoding them again, and the
// garbage collector does not scan their bytes.
type recent struct {
	msgs  [][]byte // msgs[head:] are kept
	head  int
	first uint64 // the seq of msgs[head]
	bytes int    // what msgs[head:] count: their lengths and recentOverhead each
}

func (r *recent) len() int { return len(r.msgs) - r.head }

// add keeps m, encoded, after the run, or in a new run when m does not
// follow it. It returns the change in bytes kept.
func (r *recent) add(m *clientpb.Message) int {
	b, err := proto.Marshal(m)
	if err != nil {
		return r.reset() // a message that does not encode breaks the run
	}
	delta := len(b) + recentOverhead
	if r.len() > 0 && m.GetSeq() != r.first+uint64(r.len()) {
		delta += r.reset()
	}
	if r.len() == 0 {
		r.first = m.GetSeq()
	}
	r.msgs = append(r.msgs, b)
	r.bytes += len(b) + recentOverhead
	return delta
}

// reset forgets the run and returns minus the bytes it counted.
func (r *recent) reset() int {
	freed := r.bytes
	*r = recent{}
	return -freed
}

// trim drops the oldest messages until at most max bytes are kept and
// returns the bytes freed.
func (r *recent) trim(max int) int {
	freed := 0
	for r.head < len(r.msgs) && r.bytes > max {
		n := len(r.msgs[r.head]) + recentOverhead
		r.bytes -= n
		freed += n
		r.msgs[r.head] = nil
		r.head++
		r.first++
	}
	if r.head == len(r.msgs) {
		*r = recent{}
	} else if r.head > len(r.msgs)/2 {
		// Move the run to the front, so the array does not grow forever.
		n := copy(r.msgs, r.msgs[r.head:])
		clear(r.msgs[n:])
		r.msgs, r.head = r.msgs[:n], 0
	}
	return freed
}

// page returns the limit messages after seq after, encoded, bounded in
// bytes as the history worker bounds a page (msgstore.Bound: each
// message's msgstore.PageEntrySize, at least one message), in a new
// slice. It reports false unless they are all kept and at least one more
// follows them.
func (r *recent) page(after uint64, limit, maxBytes int) ([][]byte, bool) {
	kept, ok := r.pageOf(after, limit, maxBytes)
	return append([][]byte(nil), kept...), ok
}

// pageOf is page without the copy: the messages are those of the run,
// valid while it does not change.
func (r *recent) pageOf(after uint64, limit, maxBytes int) ([][]byte, bool) {
	n := r.len()
	if n == 0 || limit <= 0 {
		return nil, false
	}
	last := r.first + uint64(n) - 1
	if after+1 < r.first || after >= last {
		return nil, false
	}
	i := int(after + 1 - r.first)
	if i+limit >= n { // the page would end the run
		return nil, false
	}
	kept := r.msgs[r.head+i : r.head+i+limit]
	size := 0
	for j, b := range kept {
		size += msgstore.PageEntrySize(len(b))
		if size > maxBytes && j > 0 {
			kept = kept[:j]
			break
		}
	}
	return kept, true
}

// appendSyncResult appends to b the protobuf encoding of a ServerFrame
// answering request req with a SyncResult of conversation conv holding
// msgs, encoded Messages, with has_more: what proto.Marshal makes of it.
func appendSyncResult(b []byte, req uint64, conv string, msgs [][]byte) []byte {
	inner := protowire.SizeTag(syncConversation) + protowire.SizeBytes(len(conv)) +
		protowire.SizeTag(syncHasMore) + protowire.SizeVarint(1)
	for _, m := range msgs {
		inner += protowire.SizeTag(syncMessages) + protowire.SizeBytes(len(m))
	}
	b = slices.Grow(b, protowire.SizeTag(frameRequestID)+protowire.SizeVarint(req)+protowire.SizeTag(frameSyncResult)+protowire.SizeBytes(inner))
	if req != 0 {
		b = protowire.AppendTag(b, frameRequestID, protowire.VarintType)
		b = protowire.AppendVarint(b, req)
	}
	b = protowire.AppendTag(b, frameSyncResult, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = protowire.AppendTag(b, syncConversation, protowire.BytesType)
	b = protowire.AppendString(b, conv)
	for _, m := range msgs {
		b = protowire.AppendTag(b, syncMessages, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	b = protowire.AppendTag(b, syncHasMore, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// keepLocked adds msgs, the messages the room queued, to its recent
// messages; its caller then calls trimRecent. r.mu is held.
func (r *room) keepLocked(msgs []*clientpb.Message) {
	c := r.c
	if c.cfg.RecentBytes < 0 || r.stopped {
		return
	}
	had := r.recent.len() > 0
	delta := 0
	for _, m := range msgs {
		if m.GetSeq() != 0 && m.GetConversation() == r.conv {
			delta += r.recent.add(m)
		}
	}
	switch has := r.recent.len() > 0; {
	case has && !had:
		c.recentRooms.Add(1)
	case had && !has: // a message that did not encode
		c.recentRooms.Add(-1)
	}
	c.recentBytes.Add(int64(delta))
}

// trimRecent, when the messages the rooms keep have passed RecentBytes,
// trims every room's run to its share of four fifths of it, so that a
// pass frees a fifth of the budget at least and runs once per that many
// bytes kept. A room idle since it filled its share of a time when fewer
// rooms kept messages is trimmed too: were only the rooms adding trimmed,
// rooms filling one after another would keep many times the budget. One
// pass runs at a time; the others return at once.
func (c *Comet) trimRecent() {
	budget := int64(c.cfg.RecentBytes)
	if budget < 0 || c.recentBytes.Load() <= budget || !c.recentTrimming.CompareAndSwap(false, true) {
		return
	}
	defer c.recentTrimming.Store(false)
	c.mu.RLock()
	rooms := make([]*room, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.RUnlock()
	share := int(budget * 4 / 5 / max(1, c.recentRooms.Load()))
	for _, r := range rooms {
		r.mu.Lock()
		if r.recent.bytes > share {
			c.recentBytes.Add(-int64(r.recent.trim(share)))
			if r.recent.len() == 0 {
				c.recentRooms.Add(-1)
			}
		}
		r.mu.Unlock()
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
func (r *room) recentPage(after uint64, limit int) ([][]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recent.page(after, limit, msgstore.MaxPageBytes)
}

// recentFrame returns the frame answering request req, a Sync of the
// room's conversation conv after seq after of at most limit messages,
// encoded in a pooled buffer (pageBuffers) from the room's recent
// messages, or false (see recent.page). The writer gives the buffer back
// once the frame is written (frame.release).
func (r *room) recentFrame(req uint64, conv string, after uint64, limit int) (*frame, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs, ok := r.recent.pageOf(after, limit, msgstore.MaxPageBytes)
	if !ok {
		return nil, false
	}
	buf := pageBuffers.Get().(*[]byte)
	*buf = appendSyncResult((*buf)[:0], req, conv, msgs)
	answer := &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{Conversation: conv, HasMore: true}}}
	return newPooledFrame(answer, buf), true
}

// maxPooledPage is the largest page buffer kept for reuse: a page is
// bounded by msgstore.MaxPageBytes, plus the one message that crosses it.
const maxPooledPage = 2 * msgstore.MaxPageBytes

// pageBuffers holds the buffers of pages answered from memory: after a
// big room's mass cuts they were two thirds of the bytes a comet
// allocated, and most of its garbage collection.
var pageBuffers = sync.Pool{New: func() any { return new([]byte) }}

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
	after, limit := s.GetAfterSeq(), msgstore.PageSize(int(s.GetLimit()))
	var fr *frame
	if cn.enc().text() {
		// JSON is written from the messages: decode them.
		msgs, ok := rm.recentPage(after, limit)
		if !ok {
			return false
		}
		res := &clientpb.SyncResult{Conversation: s.GetConversation(), HasMore: true, Messages: make([]*clientpb.Message, len(msgs))}
		for i, b := range msgs {
			res.Messages[i] = &clientpb.Message{}
			if err := proto.Unmarshal(b, res.Messages[i]); err != nil {
				return false
			}
		}
		fr = newFrame(&clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_SyncResult{SyncResult: res}})
	} else {
		var ok bool
		if fr, ok = rm.recentFrame(req, s.GetConversation(), after, limit); !ok {
			return false
		}
	}
	c.recentSyncs.Add(1) // before the client can see the answer
	cn.enqueue(fr)
	return true
}
