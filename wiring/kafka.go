package wiring

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rcrowley/go-metrics"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/wiring/secure"
)

// KafkaConfig says how to reach the Kafka cluster.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID names this process to the brokers.
	ClientID string
	// NackResendSleep is how long a subscriber waits before handing a
	// nacked message to its handler again (100ms). The router's retries
	// back off on their own; this only paces the final resend.
	NackResendSleep time.Duration
	// TLS secures the connections to the brokers (zero: plain TCP).
	TLS secure.TLS
	// SASL authenticates this process to the brokers (zero: none).
	SASL KafkaSASL
}

// KafkaSASL is a SASL identity for the brokers.
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL.
	Mechanism string
	User      string
	Password  string
}

// String names the identity without its password.
func (s KafkaSASL) String() string {
	if s.Mechanism == "" {
		return "none"
	}
	return s.Mechanism + " user " + s.User + " (password redacted)"
}

// saslMechanisms are the mechanisms laneIM speaks.
var saslMechanisms = map[string]sarama.SASLMechanism{
	"PLAIN":         sarama.SASLTypePlaintext,
	"SCRAM-SHA-256": sarama.SASLTypeSCRAMSHA256,
	"SCRAM-SHA-512": sarama.SASLTypeSCRAMSHA512,
}

// Validate reports a configuration that cannot work.
func (c KafkaConfig) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka: no brokers configured (flag --kafka or LANEIM_KAFKA)")
	}
	if err := c.TLS.Validate("kafka"); err != nil {
		return err
	}
	if m := c.SASL.Mechanism; m != "" {
		if _, ok := saslMechanisms[strings.ToUpper(m)]; !ok {
			return fmt.Errorf("kafka: unknown SASL mechanism %q (flag --kafka-sasl-mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", m)
		}
		if c.SASL.User == "" || c.SASL.Password == "" {
			return errors.New("kafka: SASL needs a user and a password (flags --kafka-sasl-user and --kafka-sasl-password, or LANEIM_KAFKA_SASL_PASSWORD)")
		}
	} else if c.SASL.User != "" {
		return errors.New("kafka: a SASL user without a mechanism (flag --kafka-sasl-mechanism)")
	}
	return nil
}

// Sarama's own metrics (go-metrics meters and histograms updated on every
// request and message) are not read by anything here: laneIM exports its
// own to Prometheus. Turned off as Sarama's documentation says to, they
// no longer cost the dev cluster 2-4 % of its CPU (CPU profiles of
// `laneim bench`).
func init() { metrics.UseNilMetrics = true }

// Sarama returns the Sarama configuration every laneIM Kafka client
// starts from: version, client id, and the TLS and SASL settings of c.
func (c KafkaConfig) Sarama() (*sarama.Config, error) {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.ClientID = c.ClientID
	if sc.ClientID == "" {
		sc.ClientID = "laneim"
	}
	sc.Metadata.Retry.Backoff = 250 * time.Millisecond
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if tc != nil {
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	if c.SASL.Mechanism != "" {
		mech := strings.ToUpper(c.SASL.Mechanism)
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Handshake = true
		sc.Net.SASL.Version = sarama.SASLHandshakeV1
		sc.Net.SASL.Mechanism = saslMechanisms[mech]
		sc.Net.SASL.User = c.SASL.User
		sc.Net.SASL.Password = c.SASL.Password
		if mech != "PLAIN" {
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient {
				s, _ := secure.NewSCRAM(mech) // mech checked by Validate
				return s
			}
		}
	}
	return sc, nil
}

// marshaler puts the topics.KeyMetadata field into the Kafka message key, so
// that messages with one key share a partition and keep their order.
var marshaler = kafka.NewWithPartitioningMarshaler(func(_ string, msg *message.Message) (string, error) {
	return msg.Metadata.Get(topics.KeyMetadata), nil
})

// Publisher publishes Watermill messages to Kafka through one Sarama
// AsyncProducer. Publish blocks until every message it was given is
// acknowledged by the broker, so a handler that publishes and then returns
// keeps at-least-once delivery; concurrent callers share produce requests,
// which is what makes the pipeline fast. It is safe for concurrent use.
type Publisher struct {
	producer sarama.AsyncProducer
	wg       sync.WaitGroup // the two result-reading goroutines
	closeMu  sync.RWMutex
	closed   bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher connects a Publisher to the brokers in cfg.
func NewPublisher(cfg KafkaConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, err := cfg.Sarama()
	if err != nil {
		return nil, err
	}
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Partitioner = Partitioner
	// No linger: a batch goes out as soon as the previous request to its
	// broker is answered, so batches grow with load and stay small when idle.
	sc.Producer.Flush.Frequency = 0
	sc.Producer.Retry.Max = 5
	// One request in flight per broker keeps a partition's messages in the
	// order they were published, across retries.
	sc.Net.MaxOpenRequests = 1
	p, err := sarama.NewAsyncProducer(cfg.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: connect producer to %v: %w", cfg.Brokers, err)
	}
	pub := &Publisher{producer: p}
	pub.wg.Add(2)
	go func() {
		defer pub.wg.Done()
		for m := range p.Successes() {
			m.Metadata.(chan error) <- nil
		}
	}()
	go func() {
		defer pub.wg.Done()
		for e := range p.Errors() {
			e.Msg.Metadata.(chan error) <- e.Err
		}
	}()
	return pub, nil
}

// Partitioner is the Sarama partitioner of laneIM's producers: a delivery
// topic's messages take their lane (topics.DeliveryPartition), those of
// every other topic the partition of their key's hash (Sarama's hash
// partitioner, as before the lanes: a key keeps its partition).
func Partitioner(topic string) sarama.Partitioner {
	if _, ok := topics.CometOf(topic); ok {
		return lanes{}
	}
	return sarama.NewHashPartitioner(topic)
}

// lanes places a delivery topic's messages in their lane.
type lanes struct{}

func (lanes) Partition(m *sarama.ProducerMessage, partitions int32) (int32, error) {
	var key string
	if m.Key != nil {
		b, err := m.Key.Encode()
		if err != nil {
			return -1, err
		}
		key = string(b)
	}
	return topics.DeliveryPartition(key, partitions), nil
}

func (lanes) RequiresConsistency() bool { return true }

// Publish sends msgs to topic and waits until the broker has them all.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	done := make(chan error, len(msgs))
	p.closeMu.RLock()
	if p.closed {
		p.closeMu.RUnlock()
		return errors.New("kafka: publish on closed publisher")
	}
	for _, msg := range msgs {
		pm, err := marshaler.Marshal(topic, msg)
		if err != nil {
			p.closeMu.RUnlock()
			return fmt.Errorf("kafka: marshal message %s for %s: %w", msg.UUID, topic, err)
		}
		pm.Metadata = done
		p.producer.Input() <- pm
	}
	p.closeMu.RUnlock()
	var errs []error
	for range msgs {
		if err := <-done; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		err := fmt.Errorf("kafka: publish %d of %d messages to %s: %w", len(errs), len(msgs), topic, errors.Join(errs...))
		if tooLarge(err) {
			// No retry makes it fit: dead-letter it at once rather than
			// hold the partition for seconds of retries.
			return pipeline.Permanent(err)
		}
		return err
	}
	return nil
}

// Close flushes what is buffered and disconnects.
func (p *Publisher) Close() error {
	p.closeMu.Lock()
	if p.closed {
		p.closeMu.Unlock()
		return nil
	}
	p.closed = true
	p.closeMu.Unlock()
	p.producer.AsyncClose()
	p.wg.Wait()
	return nil
}

// NewSubscriber returns a subscriber in the consumer group group. A group
// that has no committed offset starts at the oldest message, so a new
// handler or a replay sees the whole topic.
//
// On the topics whose payloads batch (topics.Spec.BatchField:
// messages.submitted and messages.routed) it is a BatchingSubscriber,
// which hands a partition's backlog on in merged messages; a handler of
// those topics takes each apart (topics.SplitSubmitted,
// topics.SplitRouted). On the others it is Watermill's Kafka subscriber.
func NewSubscriber(cfg KafkaConfig, group string, logger *slog.Logger) (message.Subscriber, error) {
	plain, err := newPlainSubscriber(cfg, group, logger)
	if err != nil {
		return nil, err
	}
	batching, err := NewBatchingSubscriber(cfg, group, logger, nil)
	if err != nil {
		_ = plain.Close()
		return nil, err
	}
	return &subscriber{plain: plain, batching: batching}, nil
}

// subscriber subscribes to each topic with the subscriber it needs.
type subscriber struct {
	plain    message.Subscriber
	batching *BatchingSubscriber
}

func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if spec, ok := topics.Lookup(topic); ok && spec.BatchField != 0 {
		return s.batching.Subscribe(ctx, topic)
	}
	return s.plain.Subscribe(ctx, topic)
}

func (s *subscriber) Close() error { return errors.Join(s.plain.Close(), s.batching.Close()) }

// newPlainSubscriber returns Watermill's Kafka subscriber in group.
func newPlainSubscriber(cfg KafkaConfig, group string, logger *slog.Logger) (message.Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, err := subscriberSarama(cfg)
	if err != nil {
		return nil, err
	}
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               cfg.Brokers,
		Unmarshaler:           marshaler,
		OverwriteSaramaConfig: sc,
		ConsumerGroup:         group,
		NackResendSleep:       nackSleep(cfg),
		ReconnectRetrySleep:   time.Second,
	}, watermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("kafka: subscriber for group %s: %w", group, err)
	}
	return sub, nil
}

// subscriberSarama is the Sarama configuration of laneIM's subscribers.
func subscriberSarama(cfg KafkaConfig) (*sarama.Config, error) {
	sc, err := cfg.Sarama()
	if err != nil {
		return nil, err
	}
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	sc.Consumer.Fetch.Default = 4 << 20
	// How long the broker holds a fetch that finds nothing new: a
	// record that arrives meanwhile answers it at once (Fetch.Min is one
	// byte), so this bounds only how often an idle consumer asks again.
	// 500 ms (Kafka's own default) rather than 50 cut an idle dev
	// cluster from 0.08 to 0.02 cores (issue 9).
	sc.Consumer.MaxWaitTime = 500 * time.Millisecond
	sc.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	sc.Consumer.Group.Session.Timeout = 10 * time.Second
	sc.Consumer.Group.Heartbeat.Interval = time.Second
	return sc, nil
}

// nackSleep is cfg's NackResendSleep or its default.
func nackSleep(cfg KafkaConfig) time.Duration {
	return cmp.Or(cfg.NackResendSleep, 100*time.Millisecond)
}

// TopicSpec is a topic to create: name, partition count and, when not
// zero, retention.
type TopicSpec struct {
	Name       string
	Partitions int32
	// Retention and RetentionBytes, when not zero, set the topic's
	// retention.ms and retention.bytes (per partition).
	Retention      time.Duration
	RetentionBytes int64
	// SegmentBytes, when not zero, sets the topic's segment.bytes.
	SegmentBytes int64
	// Replicas is the replication factor the topic is created with; zero
	// means 1 (a single broker). A topic that exists keeps its own.
	Replicas int16
	// Grow lets EnsureTopics add partitions to a topic that exists with
	// fewer than Partitions: only for a topic whose messages do not go
	// by their key's hash (a delivery topic's lanes), since growing
	// would move keys to other partitions.
	Grow bool
}

// DeliveryTopic is the spec of comet's delivery topic, which the comet
// creates.
// A comet's topic made before it had lanes is grown to them.
func DeliveryTopic(comet string) TopicSpec {
	s, _ := topics.Lookup(topics.Delivery(comet))
	t := topicSpec(s)
	t.Grow = true
	return t
}

// topicSpec is what EnsureTopics needs of a topic's spec.
func topicSpec(s topics.Spec) TopicSpec {
	return TopicSpec{Name: s.Name, Partitions: s.Partitions, Retention: s.Retention, RetentionBytes: s.RetentionBytes, SegmentBytes: s.SegmentBytes}
}

// PipelineTopics lists the topics every cluster needs, dead letters included.
func PipelineTopics() []TopicSpec {
	var out []TopicSpec
	for _, s := range topics.Pipeline() {
		out = append(out, topicSpec(s))
	}
	return append(out, TopicSpec{Name: topics.DeadLetters, Partitions: 1})
}

// EnsureTopics creates the topics that do not exist yet, and adds
// partitions to those marked Grow that have fewer. Creating topics
// explicitly, rather than relying on auto-creation, makes them survive a
// broker restart and gives them the partition counts ordering relies on.
func EnsureTopics(ctx context.Context, cfg KafkaConfig, specs ...TopicSpec) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	sc, err := cfg.Sarama()
	if err != nil {
		return err
	}
	admin, err := sarama.NewClusterAdmin(cfg.Brokers, sc)
	if err != nil {
		return fmt.Errorf("kafka: connect admin to %v: %w", cfg.Brokers, err)
	}
	defer admin.Close()
	existing, err := admin.ListTopics()
	if err != nil {
		return fmt.Errorf("kafka: list topics: %w", err)
	}
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if have, ok := existing[s.Name]; ok {
			if s.Grow && have.NumPartitions < s.Partitions {
				err := admin.CreatePartitions(s.Name, s.Partitions, nil, false)
				if err != nil && !errors.Is(err, sarama.ErrInvalidPartitions) { // grown meanwhile by another
					return fmt.Errorf("kafka: grow topic %s from %d to %d partitions: %w", s.Name, have.NumPartitions, s.Partitions, err)
				}
			}
			continue
		}
		replicas := s.Replicas
		if replicas <= 0 {
			replicas = 1
		}
		detail := &sarama.TopicDetail{NumPartitions: s.Partitions, ReplicationFactor: replicas}
		detail.ConfigEntries = map[string]*string{}
		if s.Retention > 0 {
			ms := strconv.FormatInt(s.Retention.Milliseconds(), 10)
			detail.ConfigEntries["retention.ms"] = &ms
		}
		if s.SegmentBytes > 0 {
			b := strconv.FormatInt(s.SegmentBytes, 10)
			detail.ConfigEntries["segment.bytes"] = &b
		}
		if s.RetentionBytes > 0 {
			b := strconv.FormatInt(s.RetentionBytes, 10)
			detail.ConfigEntries["retention.bytes"] = &b
		}
		err := admin.CreateTopic(s.Name, detail, false)
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", s.Name, err)
		}
	}
	return nil
}

// TopicReplicas returns the number of brokers in the cluster and the
// replication factor (the replicas of its first partition) of each of
// names that exists.
func TopicReplicas(ctx context.Context, cfg KafkaConfig, names ...string) (brokers int, replicas map[string]int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	sc, err := cfg.Sarama()
	if err != nil {
		return 0, nil, err
	}
	admin, err := sarama.NewClusterAdmin(cfg.Brokers, sc)
	if err != nil {
		return 0, nil, fmt.Errorf("kafka: connect admin to %v: %w", cfg.Brokers, err)
	}
	defer admin.Close()
	bs, _, err := admin.DescribeCluster()
	if err != nil {
		return 0, nil, fmt.Errorf("kafka: describe cluster: %w", err)
	}
	meta, err := admin.DescribeTopics(names)
	if err != nil {
		return 0, nil, fmt.Errorf("kafka: describe topics: %w", err)
	}
	replicas = make(map[string]int, len(meta))
	for _, m := range meta {
		if m.Err == sarama.ErrNoError && len(m.Partitions) > 0 {
			replicas[m.Name] = len(m.Partitions[0].Replicas)
		}
	}
	return len(bs), replicas, nil
}

// tooLarge reports an error of a message over the size limit, whether the
// broker said so or the producer refused to send it.
func tooLarge(err error) bool {
	var ce sarama.ConfigurationError
	return errors.Is(err, sarama.ErrMessageSizeTooLarge) ||
		errors.As(err, &ce) && strings.Contains(string(ce), "MaxMessageBytes")
}
