// Package persist is the persistence worker: under its own consumer group
// it stores every routed message in the history store. The store keeps
// one copy per (conversation, seq), so Kafka delivering a message twice
// stores it once; concurrent partitions share the store's commits.
//
// As the owner of the store, it also keeps the directory's sequence
// counters at or above the stored messages (Guard), so that routing never
// issues a seq a stored message has.
package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.persist.
const Name = "persist"

// Store is where messages go; msgstore.Store implements it.
type Store interface {
	Append(ctx context.Context, msgs []*clientpb.Message) error
	Latest(ctx context.Context) (map[string]uint64, error)
}

// Sequences is the directory's side of the sequence guard;
// *directory.Store implements it.
type Sequences interface {
	SequencesRestored(ctx context.Context) (bool, error)
	RestoreSequences(ctx context.Context, latest map[string]uint64) error
	ForgetSequencesRestored(ctx context.Context) error
}

// Backlog tells when this worker's consumer group has stored the routed
// messages published up to a moment: Ends is that moment's end of each
// partition of topics.Routed, Reached whether the group has committed
// them. *wiring.GroupProgress implements it.
type Backlog interface {
	Ends(ctx context.Context) (map[int32]int64, error)
	Reached(ctx context.Context, ends map[int32]int64) (bool, error)
}

// Handler persists routed messages. It is safe for concurrent use.
type Handler struct {
	store   Store
	seqs    Sequences
	backlog Backlog
	logger  *slog.Logger

	mu sync.Mutex // serializes Restore
	// waitFor is the routed topic's end when Restore found the counters
	// lost, while it waits for the group to store what came before it.
	waitFor map[int32]int64
}

// New returns a Handler writing to store and guarding seqs. backlog is
// how far the worker's consumer group has stored messages.routed; nil
// restores the counters without waiting for it (for a store fed some
// other way). A nil logger discards.
func New(store Store, seqs Sequences, backlog Backlog, logger *slog.Logger) (*Handler, error) {
	if store == nil || seqs == nil {
		return nil, errors.New("persist: a store and the directory's sequences are required")
	}
	logger = pipeline.Logger(logger)
	return &Handler{store: store, seqs: seqs, backlog: backlog, logger: logger}, nil
}

// Pipeline returns the pipeline handler consuming topics.Routed with Handle.
func (h *Handler) Pipeline() pipeline.Handler { return pipeline.On(Name, topics.Routed, h.Handle) }

// Handle stores the routed messages of r (its message and its more) in
// one append; r is acked only once they are durable. A message whose (conversation, seq) is stored under another
// id means that sequence numbers went backwards: it is logged as an
// error and dead-lettered (a permanent error), and the directory's
// counters are marked for restoring, which stops routing until Guard has
// restored them.
func (h *Handler) Handle(ctx context.Context, r *topicpb.Routed, msg *message.Message) error {
	msgs := make([]*clientpb.Message, 0, 1+len(r.GetMore()))
	for _, m := range topics.SplitRouted(r) {
		if m.GetMessage().GetConversation() == "" || m.GetMessage().GetSeq() == 0 {
			return pipeline.Permanent(fmt.Errorf("persist: routed message %s without conversation or seq", msg.UUID))
		}
		msgs = append(msgs, m.GetMessage())
	}
	err := h.store.Append(ctx, msgs)
	var conflict *msgstore.ConflictError
	if errors.As(err, &conflict) {
		h.logger.Error("sequence number issued twice: message dead-lettered, counters to be restored",
			"conversation", msgs[0].GetConversation(), "seqs", fmt.Sprintf("%d..%d", msgs[0].GetSeq(), msgs[len(msgs)-1].GetSeq()), "err", err)
		if ferr := h.seqs.ForgetSequencesRestored(ctx); ferr != nil {
			return errors.Join(err, ferr) // retried: the mark must go
		}
		return pipeline.Permanent(fmt.Errorf("persist: %w", err))
	}
	if err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	return nil
}

// Restore makes one pass of the guard: if the directory does not say its
// counters are restored, it raises them to the store's latest seqs and
// marks them restored. It reports whether it restored.
//
// Messages routed before the counters were lost but not stored yet have
// seqs above the store's latest: restoring before they are stored would
// let routing issue their seqs again. So the first pass that finds the
// counters lost notes the routed topic's end (Backlog.Ends), and the
// counters are restored only once the worker's consumer group has
// committed that far (Reached); until then routing refuses to issue seqs
// in the slots that lost them.
func (h *Handler) Restore(ctx context.Context) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ok, err := h.seqs.SequencesRestored(ctx)
	if err != nil || ok {
		h.waitFor = nil
		return false, err
	}
	if h.backlog != nil {
		if h.waitFor == nil {
			ends, err := h.backlog.Ends(ctx)
			if err != nil {
				return false, fmt.Errorf("persist: read the end of %s: %w", topics.Routed.Name, err)
			}
			h.waitFor = ends
			h.logger.Info("sequence counters lost: restoring them once the messages routed so far are stored", "ends", fmt.Sprint(ends))
		}
		done, err := h.backlog.Reached(ctx, h.waitFor)
		if err != nil {
			return false, fmt.Errorf("persist: read how far %s is stored: %w", topics.Routed.Name, err)
		}
		if !done {
			return false, nil
		}
	}
	latest, err := h.store.Latest(ctx)
	if err != nil {
		return false, fmt.Errorf("persist: read latest seqs: %w", err)
	}
	if err := h.seqs.RestoreSequences(ctx, latest); err != nil {
		return false, fmt.Errorf("persist: restore sequence counters: %w", err)
	}
	h.waitFor = nil
	h.logger.Info("sequence counters restored from the message store", "conversations", len(latest))
	return true, nil
}

// Guard runs Restore now and then every interval until ctx ends: a
// directory that lost its counters (Redis restarted without its data) has
// them back within about an interval, during which routing refuses to
// issue seqs.
func (h *Handler) Guard(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := h.Restore(ctx); err != nil && ctx.Err() == nil {
			h.logger.Warn("sequence guard", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
