package webhook_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/examples/webhook"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

// TestWebhookBesideThePipeline runs the example as a process would (its
// own fx app on wiring.Module) against the Kafka protocol: messages
// routed before it started and after both reach the backend, and a
// backend failure is retried.
func TestWebhookBesideThePipeline(t *testing.T) {
	t.Parallel()
	kcfg := testinfra.Kafka(t)
	var mu sync.Mutex
	var got []map[string]any
	var failures atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(1) == 1 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || r.Header.Get("Idempotency-Key") == "" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	defer backend.Close()

	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	send := func(seq uint64) {
		m, _ := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Conversation: "room:lobby", Seq: seq, Sender: "alice", Body: []byte("hi")}})
		if err := pub.Publish(topics.Routed.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	send(1) // before the handler exists: a new consumer group reads from the oldest

	app := fxtest.New(t,
		fx.Supply(wiring.Config{Kafka: kcfg, Router: wiring.RouterConfig{RetryInitial: 10 * time.Millisecond}}, slog.New(slog.DiscardHandler), webhook.Config{URL: backend.URL}),
		wiring.Module,
		webhook.Module,
	)
	app.RequireStart()
	defer app.RequireStop()
	send(2)
	testinfra.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 2 {
			return fmt.Errorf("backend got %d", len(got))
		}
		return nil
	}, "2 messages posted to the backend")
	mu.Lock()
	defer mu.Unlock()
	if got[0]["seq"] != "1" || got[1]["seq"] != "2" || got[0]["conversation"] != "room:lobby" {
		t.Fatalf("posted %v", got)
	}
}

func TestPermanentAndTransientErrors(t *testing.T) {
	h, err := webhook.New(webhook.Config{URL: "http://127.0.0.1:1/unreachable", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Errorf("undecodable = %v", err)
	}
	m, _ := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Conversation: "c", Seq: 1}})
	if err := h.Pipeline().Handle(m); err == nil || pipeline.IsPermanent(err) {
		t.Errorf("unreachable backend = %v, want a retried error", err)
	}
	if _, err := webhook.New(webhook.Config{}); err == nil {
		t.Error("no URL accepted")
	}
}
