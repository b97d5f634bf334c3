package testinfra

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

// pipelineWait bounds every wait of a Pipeline: starting and stopping the
// router, creating topics, reading a message.
const pipelineWait = 30 * time.Second

// Pipeline is a Kafka-protocol broker (kfake) for one test, with the
// pipeline's topics, a publisher on it and, once Run is called, laneIM's
// router running handlers on it. Everything stops when the test ends.
type Pipeline struct {
	// Kafka points at the broker.
	Kafka wiring.KafkaConfig
	// Pub publishes to the broker; handlers publish with it too.
	Pub message.Publisher

	t testing.TB

	// What Next reads with, started by its first call.
	mu     sync.Mutex
	reader sarama.Consumer
	pcs    []sarama.PartitionConsumer
	read   map[string]<-chan *message.Message // by topic
	// Logger is the router's logger (nil: none); set it before Run.
	Logger *slog.Logger
	done   chan struct{}  // closed to stop the forwarding goroutines
	wg     sync.WaitGroup // the forwarding goroutines
}

// KafkaPipeline starts a broker for the test with the pipeline's topics
// and extraTopics (one partition each: comets' delivery topics, say), and
// a publisher on it.
func KafkaPipeline(t testing.TB, extraTopics ...string) *Pipeline {
	t.Helper()
	kcfg := Kafka(t)
	if len(extraTopics) > 0 {
		specs := make([]wiring.TopicSpec, len(extraTopics))
		for i, name := range extraTopics {
			specs[i] = wiring.TopicSpec{Name: name, Partitions: 1}
		}
		ctx, cancel := context.WithTimeout(context.Background(), pipelineWait)
		defer cancel()
		if err := wiring.EnsureTopics(ctx, kcfg, specs...); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	return &Pipeline{Kafka: kcfg, Pub: pub, t: t, read: map[string]<-chan *message.Message{}}
}

// Run starts laneIM's router (wiring.NewRouter, run by wiring.RunRouter)
// with handlers, each in its consumer group, dead letters going to
// topics.DeadLetters, a first retry after a millisecond. It returns once
// the router runs; the router stops when the test ends.
func (p *Pipeline) Run(handlers ...pipeline.Handler) {
	t := p.t
	t.Helper()
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	subscribe := func(group string) (message.Subscriber, error) {
		return wiring.NewSubscriber(p.Kafka, group, logger)
	}
	r, err := wiring.NewRouter(wiring.RouterConfig{RetryInitial: time.Millisecond}, handlers, subscribe, p.Pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	lc := fxtest.NewLifecycle(t)
	wiring.RunRouter(lc, r)
	ctx, cancel := context.WithTimeout(context.Background(), pipelineWait)
	defer cancel()
	if err := lc.Start(ctx); err != nil {
		t.Fatalf("start router: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pipelineWait)
		defer cancel()
		if err := lc.Stop(ctx); err != nil {
			t.Errorf("stop router: %v", err)
		}
	})
}

// Publish publishes msgs to topic, failing the test on error.
func (p *Pipeline) Publish(topic string, msgs ...*message.Message) {
	p.t.Helper()
	if err := p.Pub.Publish(topic, msgs...); err != nil {
		p.t.Fatalf("publish to %s: %v", topic, err)
	}
}

// Next returns the next message of topic, reading it from the oldest
// message on, every partition, outside any consumer group (a message read
// here is still there for handlers). Within one partition messages come
// in order. Next fails the test if none comes within 30s.
func (p *Pipeline) Next(topic string) *message.Message {
	t := p.t
	t.Helper()
	ch := p.subscribe(topic)
	select {
	case m := <-ch:
		return m
	case <-time.After(pipelineWait):
		t.Fatalf("nothing more on %s after %v", topic, pipelineWait)
		return nil
	}
}

func (p *Pipeline) subscribe(topic string) <-chan *message.Message {
	t := p.t
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if ch, ok := p.read[topic]; ok {
		return ch
	}
	if p.reader == nil {
		sc := sarama.NewConfig()
		sc.Version = sarama.V3_0_0_0
		sc.ClientID = "laneim-test-reader"
		sc.Consumer.MaxWaitTime = 20 * time.Millisecond
		c, err := sarama.NewConsumer(p.Kafka.Brokers, sc)
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		p.reader, p.done = c, make(chan struct{})
		t.Cleanup(p.stopReader)
	}
	parts, err := p.reader.Partitions(topic)
	if err != nil {
		t.Fatalf("reader: partitions of %s: %v", topic, err)
	}
	out := make(chan *message.Message, 64)
	var unmarshaler kafka.DefaultMarshaler
	for _, part := range parts {
		pc, err := p.reader.ConsumePartition(topic, part, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("reader: %s/%d: %v", topic, part, err)
		}
		p.pcs = append(p.pcs, pc)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case cm := <-pc.Messages():
					m, err := unmarshaler.Unmarshal(cm)
					if err != nil {
						m = message.NewMessage(fmt.Sprintf("undecodable-%d-%d", cm.Partition, cm.Offset), cm.Value)
					}
					select {
					case out <- m:
					case <-p.done:
						return
					}
				case <-p.done:
					return
				}
			}
		}()
	}
	p.read[topic] = out
	return out
}

// stopReader ends what Next started: the forwarding goroutines, the
// partition consumers, the client.
func (p *Pipeline) stopReader() {
	close(p.done)
	p.wg.Wait()
	for _, pc := range p.pcs {
		pc.Close()
	}
	p.reader.Close()
}
