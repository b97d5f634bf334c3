// Package replay reads a laneIM topic from an offset or a time, decodes
// its protobuf payloads by the topic's registered type (see topics) and
// prints them as JSON lines, or republishes them to another topic. It
// reads without a consumer group, so it never disturbs the workers.
//
// Dead letters carry the topic they were poisoned on in their metadata
// (topic_poisoned); replay decodes them with that topic's type, and
// republishing to "@original" sends them back where they came from.
package replay

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// Original is the Republish target that sends dead letters back to the
// topic they were poisoned on.
const Original = "@original"

// Options is one replay.
type Options struct {
	Brokers []string
	Topic   string
	// Partition to read; -1 reads all.
	Partition int32
	// From is "oldest" (default), an offset, or an RFC 3339 time.
	From string
	// Until is an offset or an RFC 3339 time (exclusive); empty reads to
	// the end the topic had when the replay started.
	Until string
	// Key keeps only messages with this partition key (e.g. a conversation).
	Key string
	// Limit stops after this many matching messages (0: no limit).
	Limit int
	// Republish sends matching messages to this topic (or Original)
	// instead of printing them.
	Republish string
	// Bodies is how bytes fields (a message's body) are printed: Base64
	// (protobuf's JSON mapping, the default) or Text (as a string when they
	// are valid UTF-8, base64 otherwise).
	Bodies string
	// Sarama, when set, is the client configuration to start from (TLS
	// and SASL to the brokers: wiring.KafkaConfig.Sarama); nil: plain.
	Sarama *sarama.Config
}

// The ways of printing bytes fields (Options.Bodies).
const (
	Base64 = "base64"
	Text   = "text"
)

// Record is one printed message.
type Record struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Time      time.Time         `json:"time"`
	Key       string            `json:"key,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Type      string            `json:"type,omitempty"`
	Payload   json.RawMessage   `json:"payload,omitempty"`
	Raw       string            `json:"raw_base64,omitempty"`
	Error     string            `json:"decode_error,omitempty"`
}

// Run replays per opts, writing JSON lines to out, and returns how many
// messages matched.
func Run(ctx context.Context, opts Options, out io.Writer) (int, error) {
	if opts.Topic == "" {
		return 0, errors.New("replay: no topic")
	}
	switch opts.Bodies {
	case "", Base64, Text:
	default:
		return 0, fmt.Errorf("replay: bodies %q: want %s or %s", opts.Bodies, Base64, Text)
	}
	sc := opts.Sarama
	if sc == nil {
		sc = sarama.NewConfig()
		sc.Version = sarama.V3_0_0_0
	}
	sc.ClientID = "laneim-replay"
	sc.Producer.Return.Successes = true
	// A message republished goes where laneIM's own producers put it:
	// a delivery topic's into its lane.
	sc.Producer.Partitioner = wiring.Partitioner
	client, err := sarama.NewClient(opts.Brokers, sc)
	if err != nil {
		return 0, fmt.Errorf("replay: connect to %v: %w", opts.Brokers, err)
	}
	defer client.Close()
	known, err := client.Topics()
	if err != nil {
		return 0, fmt.Errorf("replay: list topics: %w", err)
	}
	if !slices.Contains(known, opts.Topic) {
		slices.Sort(known)
		return 0, fmt.Errorf("replay: no topic %q on %v (there are: %s)", opts.Topic, opts.Brokers, strings.Join(known, ", "))
	}
	if t := opts.Republish; t != "" && t != Original && !slices.Contains(known, t) {
		// The producer would create it, with a name that may be a typo.
		slices.Sort(known)
		return 0, fmt.Errorf("replay: no topic %q to republish to on %v (there are: %s)", t, opts.Brokers, strings.Join(known, ", "))
	}
	partitions, err := client.Partitions(opts.Topic)
	if err != nil {
		return 0, fmt.Errorf("replay: topic %s: %w", opts.Topic, err)
	}
	if opts.Partition >= 0 {
		partitions = []int32{opts.Partition}
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	defer consumer.Close()
	var producer sarama.SyncProducer
	if opts.Republish != "" {
		if producer, err = sarama.NewSyncProducerFromClient(client); err != nil {
			return 0, fmt.Errorf("replay: %w", err)
		}
		defer producer.Close()
	}
	enc := json.NewEncoder(out)
	matched := 0
	for _, p := range partitions {
		start, err := position(client, opts.Topic, p, opts.From, sarama.OffsetOldest)
		if err != nil {
			return matched, err
		}
		end, err := position(client, opts.Topic, p, opts.Until, sarama.OffsetNewest)
		if err != nil {
			return matched, err
		}
		if start >= end {
			continue
		}
		pc, err := consumer.ConsumePartition(opts.Topic, p, start)
		if err != nil {
			return matched, fmt.Errorf("replay: %s/%d from %d: %w", opts.Topic, p, start, err)
		}
		for done := false; !done; {
			select {
			case <-ctx.Done():
				pc.Close()
				return matched, ctx.Err()
			case err := <-pc.Errors():
				pc.Close()
				return matched, fmt.Errorf("replay: %s/%d: %w", opts.Topic, p, err)
			case m := <-pc.Messages():
				if m.Offset >= end-1 {
					done = true
				}
				if m.Offset >= end || (opts.Key != "" && string(m.Key) != opts.Key) {
					continue
				}
				if producer != nil {
					err = republish(producer, opts.Republish, m)
				} else {
					err = enc.Encode(decode(m, opts.Bodies == Text))
				}
				if err != nil {
					pc.Close()
					return matched, err
				}
				matched++
				if opts.Limit > 0 && matched >= opts.Limit {
					pc.Close()
					return matched, nil
				}
			}
		}
		pc.Close()
	}
	return matched, nil
}

// position turns "oldest", "newest", an offset or a time into an offset;
// empty means def.
func position(client sarama.Client, topic string, p int32, spec string, def int64) (int64, error) {
	switch spec {
	case "":
		return client.GetOffset(topic, p, def)
	case "oldest":
		return client.GetOffset(topic, p, sarama.OffsetOldest)
	case "newest":
		return client.GetOffset(topic, p, sarama.OffsetNewest)
	}
	if n, err := strconv.ParseInt(spec, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339, spec)
	if err != nil {
		return 0, fmt.Errorf("replay: %q is neither oldest, newest, an offset nor an RFC 3339 time", spec)
	}
	off, err := client.GetOffset(topic, p, t.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("replay: offset of %s/%d at %s: %w", topic, p, spec, err)
	}
	if off < 0 { // no message at or after t
		return client.GetOffset(topic, p, sarama.OffsetNewest)
	}
	return off, nil
}

func headers(m *sarama.ConsumerMessage) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[string(h.Key)] = string(h.Value)
	}
	return out
}

// decode renders a message, its payload decoded when its type is known;
// text prints its valid UTF-8 bytes fields as strings.
func decode(m *sarama.ConsumerMessage, text bool) Record {
	r := Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Time: m.Timestamp, Key: string(m.Key), Metadata: headers(m)}
	typeTopic := m.Topic
	if orig := r.Metadata[middleware.PoisonedTopicKey]; orig != "" {
		typeTopic = orig
	}
	spec, ok := topics.Lookup(typeTopic)
	if !ok {
		r.Raw = base64.StdEncoding.EncodeToString(m.Value)
		return r
	}
	v := spec.New()
	r.Type = string(spec.Payload)
	if err := proto.Unmarshal(m.Value, v); err != nil {
		r.Error = err.Error()
		r.Raw = base64.StdEncoding.EncodeToString(m.Value)
		return r
	}
	b, err := protojson.Marshal(v)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Payload = b
	if text {
		var j map[string]any
		if err := json.Unmarshal(b, &j); err == nil {
			bytesAsText(v.ProtoReflect(), j)
			if b, err := json.Marshal(j); err == nil {
				r.Payload = b
			}
		}
	}
	return r
}

// bytesAsText replaces, in j (the JSON object of m), the base64 of every
// bytes field holding valid UTF-8 with the text itself, in m's nested
// messages too.
func bytesAsText(m protoreflect.Message, j map[string]any) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := fd.JSONName()
		switch {
		case fd.IsMap():
		case fd.Kind() == protoreflect.BytesKind && !fd.IsList():
			if utf8.Valid(v.Bytes()) {
				j[name] = string(v.Bytes())
			}
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			items, _ := j[name].([]any)
			for i := 0; i < v.List().Len() && i < len(items); i++ {
				if jm, ok := items[i].(map[string]any); ok {
					bytesAsText(v.List().Get(i).Message(), jm)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if jm, ok := j[name].(map[string]any); ok {
				bytesAsText(v.Message(), jm)
			}
		}
		return true
	})
}

// republish sends m to target (Original: back to its poisoned topic),
// keeping key, payload and metadata but the dead-letter marks.
func republish(p sarama.SyncProducer, target string, m *sarama.ConsumerMessage) error {
	h := headers(m)
	if target == Original {
		target = h[middleware.PoisonedTopicKey]
		if target == "" {
			return fmt.Errorf("replay: message %s/%d@%d has no original topic (not a dead letter)", m.Topic, m.Partition, m.Offset)
		}
	}
	// A payload goes only where its type is read: a laneIM topic's
	// payload to a topic of another type would be dead-lettered there.
	source := m.Topic
	if orig := h[middleware.PoisonedTopicKey]; orig != "" {
		source = orig
	}
	if from, ok := topics.Lookup(source); ok {
		if to, ok := topics.Lookup(target); ok && to.Payload != from.Payload {
			return fmt.Errorf("replay: message %s/%d@%d is a %s (from %s), and %s takes %s: not republished", m.Topic, m.Partition, m.Offset, from.Payload, source, target, to.Payload)
		}
	}
	var hs []sarama.RecordHeader
	for _, rh := range m.Headers {
		switch string(rh.Key) {
		case middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey, middleware.ReasonForPoisonedKey:
			continue
		}
		hs = append(hs, sarama.RecordHeader{Key: rh.Key, Value: rh.Value})
	}
	pm := &sarama.ProducerMessage{Topic: target, Value: sarama.ByteEncoder(m.Value), Headers: hs}
	if len(m.Key) > 0 {
		pm.Key = sarama.ByteEncoder(m.Key)
	}
	if _, _, err := p.SendMessage(pm); err != nil {
		return fmt.Errorf("replay: republish to %s: %w", target, err)
	}
	return nil
}
