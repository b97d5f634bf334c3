package wiring

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/laneim/laneim/wiring/pipeline"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// fakeSubscriber counts its closes; its subscriptions end when it closes.
type fakeSubscriber struct {
	mu     sync.Mutex
	closes int
	out    []chan *message.Message
}

func (s *fakeSubscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closes > 0 {
		return nil, errors.New("closed")
	}
	ch := make(chan *message.Message)
	s.out = append(s.out, ch)
	// Like a real subscriber, a subscription also ends with its context.
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closes == 0 {
			s.closes = -1 // the channels are closed; Close must not close them again
			for _, c := range s.out {
				close(c)
			}
		}
	}()
	return ch, nil
}

func (s *fakeSubscriber) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closes < 0 { // the subscription ended with its context
		s.closes = 0
		s.out = nil
	}
	s.closes++
	if s.closes == 1 {
		for _, ch := range s.out {
			close(ch)
		}
	}
	return nil
}

func (s *fakeSubscriber) closed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closes
}

type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

// fakeFactory hands out fake subscribers, failing for group fail.
type fakeFactory struct {
	fail string
	subs []*fakeSubscriber
}

func (f *fakeFactory) subscribe(group string) (message.Subscriber, error) {
	if group == f.fail {
		return nil, errors.New("no subscriber for " + group)
	}
	s := &fakeSubscriber{}
	f.subs = append(f.subs, s)
	return s, nil
}

func testHandlers() []pipeline.Handler {
	nop := func(*message.Message) error { return nil }
	return []pipeline.Handler{{Name: "a", Topic: "ta", Handle: nop}, {Name: "b", Topic: "tb", Handle: nop}}
}

func buildRouter(t *testing.T, lc fx.Lifecycle, f *fakeFactory) *message.Router {
	t.Helper()
	r, err := newRouter(routerParams{
		Lifecycle: lc,
		Metrics:   NewMetrics(),
		Config:    Config{Kafka: KafkaConfig{Brokers: []string{"127.0.0.1:1"}}},
		Handlers:  testHandlers(),
		Subscribe: f.subscribe,
		Publisher: nopPublisher{},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func requireClosedOnce(t *testing.T, f *fakeFactory) {
	t.Helper()
	if len(f.subs) != 2 {
		t.Fatalf("%d subscribers, want 2", len(f.subs))
	}
	for i, s := range f.subs {
		if n := s.closed(); n != 1 {
			t.Errorf("subscriber %d closed %d times, want once", i, n)
		}
	}
}

// A router that runs closes its subscribers; nothing closes them again.
func TestRunningRouterClosesItsSubscribersOnce(t *testing.T) {
	f := &fakeFactory{}
	lc := fxtest.NewLifecycle(t)
	RunRouter(lc, buildRouter(t, lc, f))
	lc.RequireStart().RequireStop()
	requireClosedOnce(t, f)
}

// A router that never runs (the app stopped before RunRouter started it)
// does not leak its subscribers.
func TestRouterThatNeverRanClosesItsSubscribersOnce(t *testing.T) {
	f := &fakeFactory{}
	lc := fxtest.NewLifecycle(t)
	buildRouter(t, lc, f)
	lc.RequireStart().RequireStop()
	requireClosedOnce(t, f)
}

// NewRouter closes the subscribers it got before failing.
func TestNewRouterFailingClosesItsSubscribers(t *testing.T) {
	f := &fakeFactory{fail: pipeline.ConsumerGroup("b")}
	_, err := NewRouter(RouterConfig{}, testHandlers(), f.subscribe, nopPublisher{}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("NewRouter succeeded without a subscriber for b")
	}
	if len(f.subs) != 1 || f.subs[0].closed() != 1 {
		t.Fatalf("subscriber of a not closed once: %d subscribers", len(f.subs))
	}
}

// The bulk publisher is a producer of its own, not the process's shared
// one, and stops with the app.
func TestBulkPublisherIsItsOwnProducer(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := Config{Kafka: KafkaConfig{Brokers: c.ListenAddrs(), ClientID: "laneim-test"}}
	lc := fxtest.NewLifecycle(t)
	shared, err := newPublisher(lc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := newBulkPublisher(lc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if bulk.Publisher == shared {
		t.Fatal("the bulk publisher is the shared one")
	}
	lc.RequireStart()
	for _, p := range []message.Publisher{shared, bulk} {
		if err := p.Publish("t", message.NewMessage("1", []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	lc.RequireStop()
	if err := bulk.Publish("t", message.NewMessage("2", []byte("x"))); err == nil {
		t.Error("the bulk publisher still publishes after the app stopped")
	}
}
