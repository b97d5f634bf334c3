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
//     On a Redis Cluster one shard may lose its keys while the mark
//     lives on another: each hash slot has a mark of its own, checked in
//     the step that takes the seqs (directory.AssignRestored); a slot
//     without it has the directory's mark removed, so that persist
//     restores every counter and marks every slot again.
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

// recheck makes the next assignment ask the directory's mark again.
func (g *guardedStore) recheck() {
	g.mu.Lock()
	g.checked = time.Time{}
	g.mu.Unlock()
}

// AssignMany assigns as Store.AssignRestored does, once the counters are
// known restored, and refuses seqs that went backwards.
func (g *guardedStore) AssignMany(ctx context.Context, conversation string, subs []directory.Submission, newID func() string) ([]directory.Assigned, error) {
	if err := g.ready(ctx); err != nil {
		return nil, err
	}
	as, err := g.Store.AssignRestored(ctx, conversation, subs, newID)
	if errors.Is(err, directory.ErrNotRestored) {
		// The directory's mark lives on, but the conversation's slot
		// lost its keys (a Redis Cluster shard lost): have every counter
		// restored, and every slot marked again.
		g.recheck()
		return nil, errors.Join(errNotRestored, err, g.Store.ForgetSequencesRestored(ctx))
	}
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	prev := g.last[conversation]
	last, back := prev, uint64(0)
	for _, a := range as {
		if a.Dup {
			continue
		}
		if a.Seq <= last {
			back = a.Seq
			break
		}
		last = a.Seq
	}
	if back == 0 && last > prev {
		if len(g.last) >= maxRemembered {
			clear(g.last)
		}
		g.last[conversation] = last
	}
	g.mu.Unlock()
	if back == 0 {
		return as, nil
	}
	// The counter went back: put it where it was, undo this batch's new
	// assignments so that the retry gets new seqs, and have every
	// counter restored.
	g.recheck()
	errs := []error{
		fmt.Errorf("routing: %s issued seq %d after %d: the directory lost its counters", conversation, back, last),
		g.Store.RaiseSeq(ctx, conversation, prev),
	}
	for i, a := range as {
		if !a.Dup {
			errs = append(errs, g.Store.Unassign(ctx, conversation, subs[i].Sender, subs[i].ClientMsgID))
		}
	}
	errs = append(errs, g.Store.ForgetSequencesRestored(ctx))
	return nil, errors.Join(errs...)
}

// handle routes the submissions sub carries within the configured
// bound. When it fails and clients wait for the answers (every
// submission has an origin), each is told UNAVAILABLE at once (it
// retries with the same client_msg_id) and the batch is acked, instead
// of being retried for seconds while the clients hear nothing; a batch
// with a submission from the api gateway (no origin) is retried.
//
// After a failure, clients' messages are answered UNAVAILABLE without
// trying for a cool-down (pipeline.Breaker), so that the messages queued
// behind a hung directory are answered at once, not each after its own
// timeout.
func (h *Handler) handle(ctx context.Context, sub *topicpb.Submitted, msg *message.Message) error {
	subs := h.submissions(sub)
	waiting := true
	for _, s := range subs {
		waiting = waiting && s.GetOrigin() != nil
	}
	var err error
	if waiting && h.breaker.Open() {
		err = errBreakerOpen
	} else {
		ctx, cancel := context.WithTimeout(ctx, h.cfg.AnswerWithin)
		err = h.route(ctx, subs)
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
	text := "the server could not take the message now; retry with the same client_msg_id"
	if errors.Is(err, errNotRestored) {
		text = "sequence numbers are being restored; retry with the same client_msg_id"
	}
	answers := make([]pipeline.Answer, len(subs))
	for i, s := range subs {
		h.logger.Warn("send answered UNAVAILABLE", "sender", s.GetSender(), "client_msg_id", s.GetClientMsgId(), "err", err)
		answers[i] = pipeline.Answer{Session: s.GetOrigin(), Frame: topics.ErrorFrame(s.GetRequestId(), clientpb.Error_UNAVAILABLE, text)}
	}
	if aerr := h.answer(answers); aerr != nil {
		return errors.Join(err, aerr)
	}
	return nil
}
