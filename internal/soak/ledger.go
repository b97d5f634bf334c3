package soak

import (
	"sort"
	"sync"
)

// Ack is a SendResult the soak received: the server's promise that the
// message is in its conversation at Seq with id MessageID.
type Ack struct {
	Conversation string
	Seq          uint64
	MessageID    string
	ClientMsgID  string
}

// Stored is a message as Sync returned it from history.
type Stored struct {
	Seq         uint64
	MessageID   string
	ClientMsgID string
}

// Ledger is the set of acknowledged messages, by conversation and seq,
// with who can read each conversation back. It is safe for concurrent
// use.
type Ledger struct {
	mu         sync.Mutex
	acks       map[string]map[uint64]Ack // conversation -> seq -> ack
	byClient   map[string]Ack            // sender+client_msg_id -> first ack
	readers    map[string]int            // conversation -> a client that may Sync it
	conflicts  int64
	collisions int64
	count      int64
}

// Record adds an acknowledged message sent by client reader (which can
// Sync its conversation). A repeated ack of the same client_msg_id that
// names another seq or message id is a conflict (the server's idempotency
// failed): it is counted, and both are kept, so both must be found.
func (l *Ledger) Record(sender string, reader int, a Ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acks == nil {
		l.acks = map[string]map[uint64]Ack{}
		l.byClient = map[string]Ack{}
		l.readers = map[string]int{}
	}
	key := sender + "\x00" + a.ClientMsgID
	if first, ok := l.byClient[key]; ok {
		if first == a {
			return
		}
		l.conflicts++
	} else {
		l.byClient[key] = a
	}
	m := l.acks[a.Conversation]
	if m == nil {
		m = map[uint64]Ack{}
		l.acks[a.Conversation] = m
		l.readers[a.Conversation] = reader
	}
	if prev, ok := m[a.Seq]; ok && prev.MessageID != a.MessageID {
		// Two different messages acknowledged at one seq: one of them
		// cannot be in history. Keep the first; the other is lost.
		l.collisions++
		return
	}
	if _, ok := m[a.Seq]; !ok {
		l.count++
	}
	m[a.Seq] = a
}

// Acknowledged is the number of distinct acknowledged messages.
func (l *Ledger) Acknowledged() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// Conflicts counts acks that contradicted an earlier one.
func (l *Ledger) Conflicts() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conflicts
}

// Collisions counts acks that named a seq already acknowledged for
// another message: each is a lost message (history holds one message per
// seq).
func (l *Ledger) Collisions() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.collisions
}

// Conversation is what must be checked in one conversation's history.
type Conversation struct {
	ID string
	// Reader is the index of a client that may Sync it (a sender).
	Reader int
	// Min and Max bound the acknowledged seqs.
	Min, Max uint64
}

// Conversations lists the conversations holding acknowledged messages,
// sorted by id.
func (l *Ledger) Conversations() []Conversation {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Conversation, 0, len(l.acks))
	for id, m := range l.acks {
		c := Conversation{ID: id, Reader: l.readers[id]}
		for seq := range m {
			if c.Min == 0 || seq < c.Min {
				c.Min = seq
			}
			c.Max = max(c.Max, seq)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Missing is an acknowledged message not found as acknowledged in
// history.
type Missing struct {
	Ack Ack
	// Found is what history holds at that seq, if anything.
	Found *Stored
}

// Check compares a conversation's acknowledged messages with the history
// Sync returned for it (any order, repeats allowed) and returns those
// missing: no stored message at the seq, or another message there.
func (l *Ledger) Check(conversation string, history []Stored) []Missing {
	l.mu.Lock()
	acks := make([]Ack, 0, len(l.acks[conversation]))
	for _, a := range l.acks[conversation] {
		acks = append(acks, a)
	}
	l.mu.Unlock()
	stored := make(map[uint64]Stored, len(history))
	for _, s := range history {
		stored[s.Seq] = s
	}
	var missing []Missing
	for _, a := range acks {
		s, ok := stored[a.Seq]
		switch {
		case !ok:
			missing = append(missing, Missing{Ack: a})
		case s.MessageID != a.MessageID:
			missing = append(missing, Missing{Ack: a, Found: &s})
		}
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].Ack.Seq < missing[j].Ack.Seq })
	return missing
}

// Count returns the number of acknowledged messages in a conversation.
func (l *Ledger) Count(conversation string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks[conversation])
}
