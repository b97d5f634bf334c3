package wiring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Merging bounds: a merged message carries at most maxMergeMessages
// Kafka messages and maxMergeBytes of their payloads (a single larger
// message still goes alone). Routing turns a merged batch into one
// Routed payload of about the same size, which must stay below the
// broker's default limit of about 1 MB per message.
const (
	maxMergeMessages = 64
	maxMergeBytes    = 256 << 10
)

// mergers is how many merged messages of a topic that batches across
// keys are handed on at once: each takes the runs its topic's
// partitions have ready and merges them into one message, so that the
// handler gets what is queued on all the partitions in a few calls
// rather than one call per partition. More than one, so that one slow
// batch does not hold up every partition.
const mergers = 2

// BatchingSubscriber is a Watermill subscriber on a Kafka consumer group
// that merges, on topics that allow it, a run of messages with one key
// (or any keys, on a topic that batches across keys) already fetched
// into one message: it is how a handler gets its
// partition's backlog in one call. Watermill's Kafka subscriber hands a
// partition's messages one at a time, each after the previous one is
// acked, so a handler's round trips bound the partition's rate however
// far behind it is; merged, a handler pays them once per batch.
//
// On a topic that batches across keys, the runs of different partitions
// are merged too: a login storm spreads over the topic's 32 partitions,
// a few messages on each, and merged per partition alone the handler
// would still be called once or twice per login. There, at most mergers
// merged messages are out at once, each carrying the runs that the
// partitions had ready when it was made (within the same bounds). A
// partition still has one run out at a time, so each partition's, and
// so each key's, messages keep their order.
//
// Merging never waits: a message goes alone when nothing is queued
// behind it, so a quiet partition sees no added latency. Only payloads
// that decode are merged: a poison message goes alone, to dead letters
// without the good ones around it. A merged
// message is the first one's, with the others' payloads appended as
// elements of the topic's BatchField (topics.AppendBatch), its UUID and
// metadata; acked, it commits the offsets of all it carries; nacked, it
// is handed again whole. On a topic with no BatchField, every message
// goes alone.
type BatchingSubscriber struct {
	brokers []string
	sc      *sarama.Config
	group   string
	logger  *slog.Logger
	lookup  func(topic string) (topics.Spec, bool)
	nack    time.Duration

	// closed ends every subscription; closeAll cancels it.
	closed   context.Context
	closeAll context.CancelFunc
	wg       sync.WaitGroup // Subscribe's goroutines
}

var _ message.Subscriber = (*BatchingSubscriber)(nil)

// NewBatchingSubscriber returns a subscriber in the consumer group group,
// configured as NewSubscriber's, that merges messages on the topics whose
// spec, as lookup finds it, has a BatchField (nil: topics.Lookup). A nil
// logger discards.
func NewBatchingSubscriber(cfg KafkaConfig, group string, logger *slog.Logger, lookup func(topic string) (topics.Spec, bool)) (*BatchingSubscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, err := subscriberSarama(cfg)
	if err != nil {
		return nil, err
	}
	if lookup == nil {
		lookup = topics.Lookup
	}
	closed, closeAll := context.WithCancel(context.Background())
	return &BatchingSubscriber{
		brokers: cfg.Brokers, sc: sc, group: group, logger: pipeline.Logger(logger).With("group", group), lookup: lookup,
		nack: nackSleep(cfg), closed: closed, closeAll: closeAll,
	}, nil
}

// Subscribe joins the consumer group on topic and returns its messages.
// The channel is closed once ctx ends or the subscriber is closed.
func (s *BatchingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.closed.Err() != nil {
		return nil, errors.New("kafka: subscribe on closed subscriber")
	}
	cg, err := sarama.NewConsumerGroup(s.brokers, s.group, s.sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer group %s for %s: %w", s.group, topic, err)
	}
	// The subscription ends with ctx or when the subscriber closes.
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closed, cancel)
	out := make(chan *message.Message)
	h := &claims{s: s, ctx: ctx, out: out}
	if spec, ok := s.lookup(topic); ok && spec.BatchField != 0 && spec.New != nil {
		h.field, h.newPayload, h.anyKey = spec.BatchField, spec.New, spec.BatchAcrossKeys
	}
	// The mergers hand on to out: they stop (with ctx) before out closes.
	var merging sync.WaitGroup
	if h.anyKey {
		h.ready = make(chan *pending)
		for range mergers {
			merging.Go(h.merge)
		}
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		for err := range cg.Errors() {
			s.logger.Warn("kafka consumer group", "topic", topic, "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer merging.Wait()
		defer cancel()
		defer stop()
		defer func() {
			if err := cg.Close(); err != nil {
				s.logger.Warn("close kafka consumer group", "topic", topic, "err", err)
			}
		}()
		for ctx.Err() == nil {
			err := cg.Consume(ctx, []string{topic}, h)
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("kafka consume, retrying", "topic", topic, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}()
	return out, nil
}

// Close ends every subscription and waits for their goroutines; the
// messages handed out and not yet acked are handed again to the group's
// next consumer.
func (s *BatchingSubscriber) Close() error {
	s.closeAll()
	s.wg.Wait()
	return nil
}

// claims consumes one subscription's partition claims.
type claims struct {
	s   *BatchingSubscriber
	ctx context.Context
	out chan<- *message.Message
	// field is the topic's BatchField, zero when nothing is merged;
	// newPayload returns a payload to check that a message decodes.
	field      protowire.Number
	newPayload func() proto.Message
	// anyKey merges a run whatever its keys (topics.Spec.BatchAcrossKeys),
	// and the runs of several partitions: claims put their runs on
	// ready, for merge to hand on.
	anyKey bool
	ready  chan *pending
}

// pending is a partition's run waiting on claims.ready to be handed on,
// merged with other partitions' runs.
type pending struct {
	run []*sarama.ConsumerMessage
	// acked receives whether the message carrying run was acked, once
	// it was acked or the subscription ended.
	acked chan bool
}

func (*claims) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*claims) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim hands the claim's messages on, merged where they may be,
// each after the previous one is acked, until the claim or the session
// ends.
func (h *claims) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	in := claim.Messages()
	var next *sarama.ConsumerMessage // taken from in, not yet handed on
	for {
		first := next
		next = nil
		if first == nil {
			select {
			case m, ok := <-in:
				if !ok {
					return nil
				}
				first = m
			case <-sess.Context().Done():
				return nil
			case <-h.ctx.Done():
				return nil
			}
		}
		run := []*sarama.ConsumerMessage{first}
		if h.field != 0 {
			run, next = h.gather(run, in)
		}
		var acked bool
		if h.ready != nil {
			acked = h.await(run)
		} else {
			acked = h.handOn(run)
		}
		if !acked {
			return nil
		}
		// Marked even when the session is ending (a rebalance, the
		// subscription's end): Sarama commits what is marked once every
		// claim returned, before the partition can have a new owner.
		sess.MarkMessage(run[len(run)-1], "")
	}
}

// await puts run on h.ready and waits until the message merge made of it
// is acked (true) or the subscription ends (false).
func (h *claims) await(run []*sarama.ConsumerMessage) bool {
	p := &pending{run: run, acked: make(chan bool, 1)}
	select {
	case h.ready <- p:
	case <-h.ctx.Done():
		return false
	}
	select {
	case ok := <-p.acked:
		return ok
	case <-h.ctx.Done():
		select {
		case ok := <-p.acked: // acked as the subscription ended
			return ok
		default:
			return false
		}
	}
}

// merge hands on, until the subscription ends, the runs the claims put on
// h.ready: each time the first run ready with those behind it that are
// ready too, within the merging bounds, as one message. A run of one
// message joins others only if its payload decodes. Several merge
// goroutines share h.ready.
func (h *claims) merge() {
	var next *pending // taken from h.ready, not yet handed on
	defer func() {
		if next != nil {
			next.acked <- false
		}
	}()
	for {
		first := next
		next = nil
		if first == nil {
			select {
			case first = <-h.ready:
			case <-h.ctx.Done():
				return
			}
		}
		batch := []*pending{first}
		run, size := first.run, runBytes(first.run)
	gather:
		for len(run) < maxMergeMessages {
			select {
			case p := <-h.ready:
				if len(run)+len(p.run) > maxMergeMessages || size+runBytes(p.run) > maxMergeBytes ||
					len(run) == 1 && !h.decodes(run[0]) || len(p.run) == 1 && !h.decodes(p.run[0]) {
					next = p
					break gather
				}
				batch = append(batch, p)
				run = append(slices.Clip(run), p.run...)
				size += runBytes(p.run)
			default:
				break gather
			}
		}
		acked := h.handOn(run)
		for _, p := range batch {
			p.acked <- acked
		}
		if !acked {
			return
		}
	}
}

// runBytes is the size of run's payloads.
func runBytes(run []*sarama.ConsumerMessage) int {
	n := 0
	for _, m := range run {
		n += len(m.Value)
	}
	return n
}

// gather adds to run the messages already queued in in with run's key
// (any key, on a topic that batches across keys), within the merging bounds; it returns the first message it took and
// could not add, if any. Payloads are checked to decode only when there
// is something to merge: a message that goes alone is decoded once, by
// its handler.
func (h *claims) gather(run []*sarama.ConsumerMessage, in <-chan *sarama.ConsumerMessage) ([]*sarama.ConsumerMessage, *sarama.ConsumerMessage) {
	size := len(run[0].Value)
	for len(run) < maxMergeMessages {
		select {
		case m, ok := <-in:
			if !ok {
				return run, nil
			}
			if !h.anyKey && !bytes.Equal(m.Key, run[0].Key) || size+len(m.Value) > maxMergeBytes ||
				len(run) == 1 && !h.decodes(run[0]) || !h.decodes(m) {
				return run, m
			}
			run = append(run, m)
			size += len(m.Value)
		default:
			return run, nil
		}
	}
	return run, nil
}

// decodes reports whether m's payload decodes as the topic's payload.
func (h *claims) decodes(m *sarama.ConsumerMessage) bool {
	return proto.Unmarshal(m.Value, h.newPayload()) == nil
}

// handOn hands run on as one message and waits for its ack, handing it
// again after each nack. It reports whether it was acked: false when the
// subscription ended first.
func (h *claims) handOn(run []*sarama.ConsumerMessage) bool {
	msg, err := marshaler.Unmarshal(run[0])
	if err != nil {
		// Only malformed headers get here. The record is handed on
		// with a new UUID and its key, for its handler to judge (and
		// dead-letter, if its payload is poison too), not dropped.
		h.s.logger.Warn("kafka: record with malformed headers", "topic", run[0].Topic, "partition", run[0].Partition, "offset", run[0].Offset, "err", err)
		msg = message.NewMessage(watermill.NewUUID(), run[0].Value)
		msg.Metadata.Set(topics.KeyMetadata, string(run[0].Key))
	}
	if len(run) > 1 {
		size := 0
		for _, m := range run {
			size += len(m.Value) + 2*binaryVarintLen
		}
		payload := append(make([]byte, 0, size), run[0].Value...)
		for _, m := range run[1:] {
			payload = topics.AppendBatch(payload, h.field, m.Value)
		}
		msg.Payload = payload
		msg.Metadata.Set(MergedMetadata, strconv.Itoa(len(run)))
	}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	msg.SetContext(ctx)
	for {
		select {
		case h.out <- msg:
		case <-h.ctx.Done():
			return false
		}
		select {
		case <-msg.Acked():
			return true
		case <-msg.Nacked():
			msg = msg.Copy()
			msg.SetContext(ctx)
			select {
			case <-time.After(h.s.nack):
			case <-h.ctx.Done():
				return false
			}
		case <-h.ctx.Done():
			select {
			case <-msg.Acked(): // acked as the subscription ended
				return true
			default:
				return false
			}
		}
	}
}

// MergedMetadata is the metadata field in which BatchingSubscriber
// writes how many payloads a merged message carries (absent: one).
const MergedMetadata = "laneim_merged"

// Merged returns how many payloads msg carries: more than one when
// BatchingSubscriber merged a run into it.
func Merged(msg *message.Message) int {
	if n, err := strconv.Atoi(msg.Metadata.Get(MergedMetadata)); err == nil && n > 1 {
		return n
	}
	return 1
}

// binaryVarintLen is the most bytes a tag or a length takes.
const binaryVarintLen = 10
