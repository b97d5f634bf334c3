// Package topics is the one place that names laneIM's Kafka topics, what
// each is partitioned by, and the protobuf type of its payload.
//
// Every message on a laneIM topic carries one protobuf payload and a
// partition key in its metadata (KeyMetadata). Messages with the same key
// land in the same partition and so keep their order: a conversation's
// messages stay in sequence order, a user's session events in the order
// they happened.
package topics

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/laneim/laneim/proto/topicpb"
)

// KeyMetadata is the Watermill metadata field holding a message's partition key.
const KeyMetadata = "partition_key"

// DeliveryPrefix starts the name of every per-comet delivery topic.
const DeliveryPrefix = "deliver."

// Topic describes one topic and its payload type T.
// A Topic value is immutable and safe for concurrent use.
type Topic[T proto.Message] struct {
	// Name is the topic's name. For per-comet delivery topics it is the prefix.
	Name string
	// KeyDoc says in words what the topic is partitioned by.
	KeyDoc string
	// Partitions is the number of partitions laneIM creates the topic with.
	Partitions int32
	// Retention, when not zero, is how long the broker keeps the topic's
	// messages (the broker's default otherwise).
	Retention time.Duration
	// RetentionBytes, when not zero, is the most bytes of messages the
	// broker keeps per partition of the topic, the oldest going first.
	RetentionBytes int64
	// SegmentBytes, when not zero, is the size of the topic's log
	// segments (the broker's default otherwise: Kafka's 1 GiB). A broker
	// deletes whole segments only, and never the one being written: a
	// byte bound needs segments well below it to hold.
	SegmentBytes int64
	// BatchField, when not zero, is the number of the payload's repeated
	// field of its own type ("more") that carries later payloads with
	// the same key. A consumer may then merge a run of same-key
	// messages into one (AppendBatch), and the handler takes it apart
	// again (SplitSubmitted, SplitRouted).
	BatchField protowire.Number
	// BatchAcrossKeys, with a BatchField, lets a consumer merge a run of
	// messages of one partition whatever their keys, and the runs of
	// several partitions into one message (wiring.BatchingSubscriber):
	// the handler must then keep the order of each key's payloads only,
	// as presence does. Without it only a run with one key is merged.
	BatchAcrossKeys bool
	// key returns the partition key of a payload.
	key func(T) string
	// new returns an empty payload to decode into.
	new func() T
}

// Encode turns a payload into a Watermill message with a fresh UUID and the
// payload's partition key.
func (t Topic[T]) Encode(v T) (*message.Message, error) {
	b, err := proto.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("topics: encode %s payload: %w", t.Name, err)
	}
	msg := message.NewMessage(watermill.NewUUID(), b)
	msg.Metadata.Set(KeyMetadata, t.key(v))
	return msg, nil
}

// Decode parses a message's payload. An error means the message is poison:
// no retry will make it decode.
func (t Topic[T]) Decode(msg *message.Message) (T, error) {
	v := t.new()
	if err := proto.Unmarshal(msg.Payload, v); err != nil {
		var zero T
		return zero, fmt.Errorf("topics: decode %s payload of message %s: %w", t.Name, msg.UUID, err)
	}
	return v, nil
}

// Key returns the partition key of a payload.
func (t Topic[T]) Key(v T) string { return t.key(v) }

// The pipeline's topics, in the order a client message travels them.
var (
	// LoginRequests carries Login frames from comets to the login worker.
	LoginRequests = Topic[*topicpb.LoginRequest]{
		Name:       "login.requests",
		KeyDoc:     "comet/conn",
		Partitions: 32,
		// Its payloads hold bearer tokens: kept no longer than a login
		// needs (docs/security.md).
		Retention:       time.Hour,
		BatchField:      8,
		BatchAcrossKeys: true,
		key:             func(v *topicpb.LoginRequest) string { return SessionKey(v.GetSession()) },
		new:             func() *topicpb.LoginRequest { return new(topicpb.LoginRequest) },
	}

	// SessionEvents carries the life of connections: opened (from the login
	// worker), joined, left, closed and heartbeats (from comets), and the
	// revocations of memberships and users (from binlogsync), all to the
	// presence worker. Keyed by user, so a user's events keep their order.
	SessionEvents = Topic[*topicpb.SessionEvent]{
		Name:            "session.events",
		KeyDoc:          "user (heartbeats: comet)",
		Partitions:      32,
		BatchField:      10,
		BatchAcrossKeys: true,
		key: func(v *topicpb.SessionEvent) string {
			if v.GetKind() == topicpb.SessionEvent_HEARTBEAT {
				return "comet/" + v.GetSession().GetComet()
			}
			return "user/" + v.GetUser()
		},
		new: func() *topicpb.SessionEvent { return new(topicpb.SessionEvent) },
	}

	// Submitted carries messages as senders submitted them, to the routing worker.
	Submitted = Topic[*topicpb.Submitted]{
		Name:       "messages.submitted",
		KeyDoc:     "conversation",
		Partitions: 8,
		BatchField: 15,
		key:        func(v *topicpb.Submitted) string { return SubmittedConversation(v) },
		new:        func() *topicpb.Submitted { return new(topicpb.Submitted) },
	}

	// Routed carries sequenced messages and their target comets, to fan-out
	// and to any handler that wants every message (persistence, webhooks).
	Routed = Topic[*topicpb.Routed]{
		Name:       "messages.routed",
		KeyDoc:     "conversation",
		Partitions: 8,
		BatchField: 7,
		key:        func(v *topicpb.Routed) string { return v.GetMessage().GetConversation() },
		new:        func() *topicpb.Routed { return new(topicpb.Routed) },
	}

	// HistoryRequests carries clients' Sync requests from comets to the
	// history worker, which answers on the comet's delivery topic.
	HistoryRequests = Topic[*topicpb.HistoryRequest]{
		Name:       "history.requests",
		KeyDoc:     "user",
		Partitions: 32,
		// A request is answered within seconds or given up on by its
		// client (docs/protocol.md): older ones are of no use.
		Retention: time.Hour,
		key:       func(v *topicpb.HistoryRequest) string { return "user/" + v.GetUser() },
		new:       func() *topicpb.HistoryRequest { return new(topicpb.HistoryRequest) },
	}

	// OfflineNotices carries, per routed message, its recipients that had
	// no live connection, to push-notification handlers (see
	// examples/pushnotify). Nothing in laneIM consumes it.
	OfflineNotices = Topic[*topicpb.OfflineNotice]{
		Name:       "notifications.offline",
		KeyDoc:     "conversation",
		Partitions: 8,
		key:        func(v *topicpb.OfflineNotice) string { return v.GetMessage().GetConversation() },
		new:        func() *topicpb.OfflineNotice { return new(topicpb.OfflineNotice) },
	}

	// Deliveries is the family of per-comet topics deliver.<comet>; use
	// Delivery(comet) for one comet's topic name. It has two lanes, one
	// partition each (DeliveryPartition): the live lane keeps a comet's
	// frames in order; the bulk lane carries the answers to reads (Sync,
	// Conversations: Delivery key DeliveryBulkKey), which may be large
	// and many at once. A comet consumes both lanes side by side, so a
	// catch-up's pages never queue ahead of live messages (issue 9,
	// twenty-second round). Answers and live messages are not ordered
	// with each other, as docs/protocol.md says.
	//
	// A comet reads its topic as frames go out; a frame older than its
	// connections is of no use (their clients Sync when they come back),
	// so the topic keeps an hour and at most 64 MiB per lane, in 16 MiB
	// segments (with Kafka's 1 GiB ones the byte bound would hold only
	// past 1 GiB): a client asking for page after page of large
	// messages (Sync) must not grow the broker without bound.
	Deliveries = Topic[*topicpb.Delivery]{
		Name:           DeliveryPrefix,
		KeyDoc:         "lane: live (partition 0) or bulk (partition 1: Sync and Conversations answers)",
		Partitions:     2,
		Retention:      time.Hour,
		RetentionBytes: 64 << 20,
		SegmentBytes:   16 << 20,
		BatchField:     12,
		key: func(v *topicpb.Delivery) string {
			if f := v.GetFrame(); f.GetSyncResult() != nil || f.GetConversationsResult() != nil {
				return DeliveryBulkKey
			}
			return ""
		},
		new: func() *topicpb.Delivery { return new(topicpb.Delivery) },
	}
)

// DeliveryBulkKey is the key of the deliveries that take a delivery
// topic's bulk lane: the answers to reads.
const DeliveryBulkKey = "bulk"

// DeliveryPartition returns the partition of a delivery topic with
// partitions partitions that a delivery with key takes: the last one
// for DeliveryBulkKey, 0 for any other key. A topic of one partition (a
// comet's topic made before the lanes, until the comet grows it) has a
// single lane.
func DeliveryPartition(key string, partitions int32) int32 {
	if key == DeliveryBulkKey && partitions > 1 {
		return partitions - 1
	}
	return 0
}

// DeadLetters is the topic that receives messages a handler could not
// process after its retries: the original payload, unchanged, with the
// error and the handler in its metadata (see wiring's poison middleware).
const DeadLetters = "deadletters"

// Delivery returns the name of the delivery topic of comet.
func Delivery(comet string) string { return DeliveryPrefix + comet }

// CometOf returns the comet whose delivery topic is topic.
func CometOf(topic string) (comet string, ok bool) {
	comet, ok = strings.CutPrefix(topic, DeliveryPrefix)
	return comet, ok && comet != ""
}

// Spec describes a topic without its payload type, for tools such as replay.
type Spec struct {
	Name       string
	KeyDoc     string
	Partitions int32
	Retention  time.Duration
	// RetentionBytes is the topic's Topic.RetentionBytes.
	RetentionBytes int64
	// SegmentBytes is the topic's Topic.SegmentBytes.
	SegmentBytes int64
	// BatchField is the topic's Topic.BatchField.
	BatchField protowire.Number
	// BatchAcrossKeys is the topic's Topic.BatchAcrossKeys.
	BatchAcrossKeys bool
	// Payload is the full name of the payload's protobuf message type.
	Payload protoreflect.FullName
	// New returns an empty payload to decode into.
	New func() proto.Message
}

func spec[T proto.Message](t Topic[T]) Spec {
	return Spec{
		Name:            t.Name,
		KeyDoc:          t.KeyDoc,
		Partitions:      t.Partitions,
		Retention:       t.Retention,
		RetentionBytes:  t.RetentionBytes,
		SegmentBytes:    t.SegmentBytes,
		BatchField:      t.BatchField,
		BatchAcrossKeys: t.BatchAcrossKeys,
		Payload:         t.new().ProtoReflect().Descriptor().FullName(),
		New:             func() proto.Message { return t.new() },
	}
}

// Pipeline lists the shared topics a cluster needs before any worker starts.
// Per-comet delivery topics are created by their comets, the dead-letter
// topic by the first worker.
func Pipeline() []Spec {
	return []Spec{spec(LoginRequests), spec(SessionEvents), spec(Submitted), spec(Routed), spec(HistoryRequests), spec(OfflineNotices)}
}

// Lookup returns the spec of a topic by name, including delivery topics.
// The dead-letter topic has no fixed payload type and is not found.
func Lookup(name string) (Spec, bool) {
	if _, ok := CometOf(name); ok {
		s := spec(Deliveries)
		s.Name = name
		return s, true
	}
	for _, s := range Pipeline() {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// SessionKey names a connection as "comet/conn".
func SessionKey(s *topicpb.Session) string { return s.GetComet() + "/" + s.GetConn() }

// RoomConversation is the conversation id of a room.
func RoomConversation(room string) string { return "room:" + room }

// DirectConversation is the conversation id of the 1:1 conversation between
// two users; it is the same whichever of them is a.
func DirectConversation(a, b string) string {
	u := []string{a, b}
	sort.Strings(u)
	return "dm:" + u[0] + ":" + u[1]
}

// BroadcastConversation is the conversation of messages to everyone.
const BroadcastConversation = "broadcast"

// SubmittedConversation returns the conversation a submitted message belongs to.
func SubmittedConversation(v *topicpb.Submitted) string {
	switch to := v.GetTo().(type) {
	case *topicpb.Submitted_Room:
		return RoomConversation(to.Room)
	case *topicpb.Submitted_User:
		return DirectConversation(v.GetSender(), to.User)
	case *topicpb.Submitted_Broadcast:
		return BroadcastConversation
	}
	return ""
}

// Participants returns the users of a 1:1 conversation; ok is false for
// other conversations and for ids ParseConversation refuses.
func Participants(conversation string) (a, b string, ok bool) {
	c, err := ParseConversation(conversation)
	if err != nil || c.Kind != Direct {
		return "", "", false
	}
	return c.A, c.B, true
}

// DeliveriesOf returns the delivery topic of comet, typed like Deliveries
// and named Delivery(comet).
func DeliveriesOf(comet string) Topic[*topicpb.Delivery] {
	t := Deliveries
	t.Name = Delivery(comet)
	return t
}
