package msgstore

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// Changer finds the edits and recalls of stored messages; every Store is
// one.
type Changer interface {
	Changes(ctx context.Context, conversation string, from, to uint64) (map[uint64]*clientpb.Message, error)
}

// Current returns msgs, a page of one conversation in sequence order, as
// they are now: a message edited since carries its latest edit's body and
// content_type and EditedSeq; a message recalled carries no body,
// content_type nor mentions, and RecalledSeq. Edits and recalls stay as
// they are. msgs is not modified: changed messages are copies.
func Current(ctx context.Context, c Changer, conversation string, msgs []*clientpb.Message) ([]*clientpb.Message, error) {
	if len(msgs) == 0 {
		return msgs, nil
	}
	from, to := msgs[0].GetSeq(), msgs[len(msgs)-1].GetSeq()
	changes, err := c.Changes(ctx, conversation, from, to)
	if err != nil {
		return nil, fmt.Errorf("history: current state of %s#%d..%d: %w", conversation, from, to, err)
	}
	return Apply(msgs, changes), nil
}

// Apply returns msgs with changes (as Store.Changes returns them) applied;
// see Current.
func Apply(msgs []*clientpb.Message, changes map[uint64]*clientpb.Message) []*clientpb.Message {
	if len(changes) == 0 {
		return msgs
	}
	out := make([]*clientpb.Message, len(msgs))
	for i, m := range msgs {
		out[i] = m
		ch, ok := changes[m.GetSeq()]
		if !ok || m.GetEdits() != 0 || m.GetRecalls() != 0 {
			continue
		}
		c := proto.CloneOf(m)
		switch {
		case ch.GetRecalls() == m.GetSeq():
			c.Body, c.ContentType, c.Mentions = nil, "", nil
			c.RecalledSeq = ch.GetSeq()
		case ch.GetEdits() == m.GetSeq():
			c.Body, c.ContentType = ch.GetBody(), ch.GetContentType()
			c.EditedSeq = ch.GetSeq()
		default:
			continue
		}
		out[i] = c
	}
	return out
}

// latestChange keeps, of the changes of one message, the one that wins:
// a recall over any edit (the first recall, should there be two), else
// the latest edit.
func latestChange(cur *clientpb.Message, next *clientpb.Message) *clientpb.Message {
	switch {
	case cur == nil:
		return next
	case cur.GetRecalls() != 0 && next.GetRecalls() != 0:
		if next.GetSeq() < cur.GetSeq() {
			return next
		}
		return cur
	case cur.GetRecalls() != 0:
		return cur
	case next.GetRecalls() != 0:
		return next
	case next.GetSeq() > cur.GetSeq():
		return next
	}
	return cur
}

// target returns the seq a change applies to, 0 for a plain message.
func target(m *clientpb.Message) uint64 {
	if t := m.GetRecalls(); t != 0 {
		return t
	}
	return m.GetEdits()
}
