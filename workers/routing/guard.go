package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Sequence numbers never go backwards (issue 10). Redis holds the
// counters; if it loses them (restarted without its data, a failover
// that lost the last writes), INCR would issue numbers that stored
// messages already have. Two guards stand in the way:
//
//   - The directory's "restored" mark (directory.SequencesRestored) is
//     set by the persist worker once the counters are at or above the
//     store's latest seqs, and is lost with the counters. Routing issues
//     no seq while it is missing (checked at most every guardRecheck).
//   - Routing remembers the last seq it issued in each conversation; a
//     new seq at or below it means the counter went back. The counter is
//     raised again, the assignment undone, the mark removed (so persist
//     restores every counter) and the message retried.
//
// What is left is caught by persist, which refuses a (conversation, seq)
// stored under another message id loudly (dead letter, metric, log).

// guardRecheck is how long a "restored" answer is trusted.
const guardRecheck = 250 * time.Millisecond

// maxRemembered bounds the conversations whose last seq is remembered;
// past it the memory starts afresh.
const maxRemembered = 100_000

// errBreakerOpen refuses a message without trying, right after a failure.
var errBreakerOpen = errors.New("routing: a dependency failed a moment ago")

// errNotRestored is returned while the counters are not known restored.
var errNotRestored = errors.New("routing: sequence counters are being restored from the message store")

// guardedStore is a Store whose Assign never returns a seq at or below
// one it returned before for the same conversation.
type guardedStore struct {
	Store

	mu      sync.Mutex
	checked time.Time // when the mark was last seen
	last    map[string]uint64
}

func newGuardedStore(s Store) *guardedStore {
	return &guardedStore{Store: s, last: map[string]uint64{}}
}

// ready reports whether seqs may be issued.
func (g *guardedStore) ready(ctx context.Context) error {
	g.mu.Lock()
	fresh := time.Since(g.checked) < guardRecheck
	g.mu.Unlock()
	if fresh {
		return nil
	}
	ok, err := g.Store.SequencesRestored(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errNotRestored
	}
	g.mu.Lock()
	g.checked = time.Now()
	g.mu.Unlock()
	return nil
}

// Assign assigns as Store.Assign does, once the counters are known
// restored, and refuses a seq that went backwards.
func (g *guardedStore) Assign(ctx context.Context, conversation, sender, clientMsgID string, newID func() string) (directory.Assigned, error) {
	if err := g.ready(ctx); err != nil {
		return directory.Assigned{}, err
	}
	a, err := g.Store.Assign(ctx, conversation, sender, clientMsgID, newID)
	if err != nil || a.Dup {
		return a, err
	}
	g.mu.Lock()
	prev := g.last[conversation]
	if a.Seq > prev {
		if len(g.last) >= maxRemembered {
			clear(g.last)
		}
		g.last[conversation] = a.Seq
	}
	g.mu.Unlock()
	if a.Seq > prev {
		return a, nil
	}
	// The counter went back: put it where it was, undo this assignment
	// so that the retry gets a new seq, and have every counter restored.
	g.mu.Lock()
	g.checked = time.Time{}
	g.mu.Unlock()
	err = fmt.Errorf("routing: %s issued seq %d after %d: the directory lost its counters", conversation, a.Seq, prev)
	return directory.Assigned{}, errors.Join(err,
		g.Store.RaiseSeq(ctx, conversation, prev),
		g.Store.Unassign(ctx, conversation, sender, clientMsgID),
		g.Store.ForgetSequencesRestored(ctx))
}

// handle routes sub within the configured bound. When it fails and a
// client waits for the answer, the client is told UNAVAILABLE at once
// (it retries with the same client_msg_id) and the submission is acked,
// instead of being retried for seconds while the client hears nothing;
// a submission from the api gateway (no origin) is retried.
//
// After a failure, clients' messages are answered UNAVAILABLE without
// trying for a cool-down (pipeline.Breaker), so that the messages queued
// behind a hung directory are answered at once, not each after its own
// timeout.
func (h *Handler) handle(ctx context.Context, sub *topicpb.Submitted, msg *message.Message) error {
	waiting := sub.GetOrigin() != nil
	var err error
	if waiting && h.breaker.Open() {
		err = errBreakerOpen
	} else {
		ctx, cancel := context.WithTimeout(ctx, h.cfg.AnswerWithin)
		err = h.Handle(ctx, sub, msg)
		cancel()
		switch {
		case err == nil:
			h.breaker.Succeeded()
		case !pipeline.IsPermanent(err):
			h.breaker.Failed()
		}
	}
	if err == nil || pipeline.IsPermanent(err) || !waiting {
		return err
	}
	h.logger.Warn("send answered UNAVAILABLE", "sender", sub.GetSender(), "client_msg_id", sub.GetClientMsgId(), "err", err)
	text := "the server could not take the message now; retry with the same client_msg_id"
	if errors.Is(err, errNotRestored) {
		text = "sequence numbers are being restored; retry with the same client_msg_id"
	}
	if aerr := h.answer(sub, topics.ErrorFrame(sub.GetRequestId(), clientpb.Error_UNAVAILABLE, text)); aerr != nil {
		return errors.Join(err, aerr)
	}
	return nil
}
