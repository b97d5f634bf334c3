// Package pipeline is the contract between laneIM's workers and the
// process that runs them: a worker describes each of its stages as a
// Handler (a name, a topic and a function), and the process's Watermill
// router (package wiring) consumes the topic under the handler's consumer
// group and applies retries, timeouts and dead letters around it.
//
// The package knows no infrastructure: it imports Watermill's message
// package, fx and laneIM's topics and protobuf types, never a Kafka,
// Redis or metrics client, so a worker that imports it stays free of them.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// Handler is one stage of the pipeline: a function consuming a topic under
// its own consumer group. A Handler value is immutable; Handle must be safe
// for concurrent use, since a process may consume several partitions at once.
type Handler struct {
	// Name is the handler's contract with Kafka: its consumer group is
	// ConsumerGroup(Name). Renaming a handler makes it read its topic
	// afresh, so names are constants.
	Name string
	// Topic is the topic consumed.
	Topic string
	// Handle processes one message. Returning nil acks it. A returned
	// error is retried with backoff; a Permanent error, or one that
	// outlives its retries, sends the message to the dead-letter topic and
	// the handler moves on to the next message of the partition.
	Handle message.NoPublishHandlerFunc
}

// ConsumerGroup returns the Kafka consumer group of a handler name.
func ConsumerGroup(name string) string { return "laneim." + name }

// On returns a Handler named name consuming topic whose payloads are
// decoded once, here, before fn sees them. A payload that does not decode
// is a Permanent error (it goes to dead letters without retries). fn gets
// the message's context and the message itself, for its metadata.
func On[T proto.Message](name string, topic topics.Topic[T], fn func(ctx context.Context, v T, msg *message.Message) error) Handler {
	return Handler{Name: name, Topic: topic.Name, Handle: func(msg *message.Message) error {
		v, err := topic.Decode(msg)
		if err != nil {
			return Permanent(err)
		}
		return fn(msg.Context(), v, msg)
	}}
}

// StaleLogin is the age past which the login and presence workers skip a
// login instead of serving it: its comet has answered it UNAVAILABLE
// already (after its request timeout, 5 s by default) and its client has
// logged in again, on a new connection. Serving it anyway opened a
// session nobody used, and after a mass reconnect each such Login queued
// ahead of its own retry: a retry storm that fed itself (issue 9's
// overload runs: the two workers' lag reached 38,000 messages). The
// margin covers clocks that differ between hosts. Comets now stamp each
// request with its deadline, which Expired reads and which is tighter;
// this bound remains for requests without one.
const StaleLogin = 15 * time.Second

// IsStaleLogin reports whether a login the comet received, or the login
// worker accepted, at unixMs is past StaleLogin at now. Zero (not set) is
// never stale.
func IsStaleLogin(unixMs int64, now time.Time) bool {
	return unixMs > 0 && now.Sub(time.UnixMilli(unixMs)) > StaleLogin
}

// AnswerMargin is the most time a worker leaves itself to answer a
// request before its comet's deadline (a quarter of the comet's request
// timeout if that is less): its answer still has to reach the comet.
const AnswerMargin = time.Second

// Expired reports whether a request its comet received at receivedUnixMs
// and answers UNAVAILABLE itself at deadlineUnixMs, if no answer came, is
// not worth serving at now: its answer would come too late (within the
// margin, AnswerMargin, of the deadline or after it), and its client has
// retried or given up. A worker skips such a request without an answer.
//
// Under an overload (a big room's cut members all logging in and
// catching up at once, issue 9) the queues of requests grow past the
// comets' timeouts; a worker serving them in order then spends itself on
// answers nobody waits for, while the retries queue behind. Skipping them
// keeps its work on requests that can still be answered.
//
// It compares clocks of different hosts (the comet's and the worker's):
// they must agree within a fraction of the request timeout, as NTP keeps
// them. A deadline of 0 (a comet older than the field) never expires.
func Expired(receivedUnixMs, deadlineUnixMs int64, now time.Time) bool {
	if deadlineUnixMs <= 0 {
		return false
	}
	margin := AnswerMargin.Milliseconds()
	if receivedUnixMs > 0 && receivedUnixMs < deadlineUnixMs {
		margin = min(margin, (deadlineUnixMs-receivedUnixMs)/4)
	}
	return now.UnixMilli() > deadlineUnixMs-margin
}

// LateLogin reports whether the login and presence workers skip a login
// at now: past its comet's deadline (Expired), or, from a comet that
// sets none, received or accepted at receivedUnixMs more than StaleLogin
// ago (IsStaleLogin).
func LateLogin(receivedUnixMs, deadlineUnixMs int64, now time.Time) bool {
	return IsStaleLogin(receivedUnixMs, now) || Expired(receivedUnixMs, deadlineUnixMs, now)
}

// Group is the fx value group that handlers are contributed to, and that
// the process's router consumes.
const Group = `group:"handlers"`

// Provide contributes the Handler returned by constructor to the process's
// router. constructor is any fx constructor returning (Handler) or
// (Handler, error).
func Provide(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.ResultTags(Group)))
}

// Logger returns l, or a logger that discards everything when l is nil:
// the default of every worker constructor's logger.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// permanentError marks an error that no retry can fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix, such as a payload
// that does not decode; the router sends the message to dead letters at
// once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Reply sends frame, with ctl if it is not nil, to the connection of
// session s through its comet's delivery topic, and returns once the
// broker has it. A session without a comet (a submission of the api
// gateway, say) has nobody to answer: Reply does nothing.
func Reply(pub message.Publisher, s *topicpb.Session, frame *clientpb.ServerFrame, ctl *topicpb.Control) error {
	if s.GetComet() == "" {
		return nil
	}
	topic, out, err := topics.Reply(s, frame, ctl)
	if err != nil {
		return err
	}
	if err := pub.Publish(topic, out); err != nil {
		return fmt.Errorf("reply to %s: %w", topics.SessionKey(s), err)
	}
	return nil
}

// ReplyError answers request requestID of session s with an Error frame.
func ReplyError(pub message.Publisher, s *topicpb.Session, requestID uint64, code clientpb.Error_Code, text string) error {
	return Reply(pub, s, topics.ErrorFrame(requestID, code, text), nil)
}

// Answer is one reply of ReplyAll: frame, with ctl if it is not nil, to
// the connection of Session.
type Answer struct {
	Session *topicpb.Session
	Frame   *clientpb.ServerFrame
	Control *topicpb.Control
}

// ReplyAll sends each answer as Reply does, a comet's answers in one
// publish, in the order given (the comets' publishes at once), and
// returns once the broker has them all.
func ReplyAll(pub message.Publisher, answers []Answer) error {
	var out Outbox
	for _, a := range answers {
		if a.Session.GetComet() == "" {
			continue
		}
		topic, msg, err := topics.Reply(a.Session, a.Frame, a.Control)
		if err != nil {
			return err
		}
		out.Add(topic, msg)
	}
	return out.Send(pub)
}

// An Outbox gathers messages by topic, to publish each topic's in one
// call, in the order added, and the topics at once. The zero Outbox is
// empty and ready.
type Outbox struct {
	order   []string
	byTopic map[string][]*message.Message
}

// Add queues msgs to topic.
func (o *Outbox) Add(topic string, msgs ...*message.Message) {
	if o.byTopic == nil {
		o.byTopic = map[string][]*message.Message{}
	}
	if _, ok := o.byTopic[topic]; !ok {
		o.order = append(o.order, topic)
	}
	o.byTopic[topic] = append(o.byTopic[topic], msgs...)
}

// Send publishes what was queued, each topic's messages in one Publish
// and the topics concurrently, and returns when all are published or
// one failed.
func (o *Outbox) Send(pub message.Publisher) error {
	var g errgroup.Group
	for _, topic := range o.order {
		g.Go(func() error {
			if err := pub.Publish(topic, o.byTopic[topic]...); err != nil {
				return fmt.Errorf("publish %d messages to %s: %w", len(o.byTopic[topic]), topic, err)
			}
			return nil
		})
	}
	return g.Wait()
}
