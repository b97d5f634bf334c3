package persist_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/persist"
)

func routed(t *testing.T, seq uint64, body string) *message.Message {
	t.Helper()
	m, err := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Conversation: "room:a", Seq: seq, Body: []byte(body)}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRedeliveryStoresOnce(t *testing.T) {
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := testinfra.Must(persist.New(store, nil))(t)
	for _, m := range []*message.Message{routed(t, 1, "one"), routed(t, 2, "two"), routed(t, 1, "one again"), routed(t, 2, "two")} {
		if err := h.Pipeline().Handle(m); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := store.After(context.Background(), "room:a", 0, 10)
	if err != nil || len(got) != 2 || string(got[0].GetBody()) != "one" {
		t.Fatalf("stored %v, %v", got, err)
	}
}

type failing struct{}

func (failing) Append(context.Context, []*clientpb.Message) error { return errors.New("disk full") }

func TestErrors(t *testing.T) {
	h := testinfra.Must(persist.New(failing{}, nil))(t)
	if err := h.Pipeline().Handle(routed(t, 1, "x")); err == nil || pipeline.IsPermanent(err) {
		t.Errorf("store failure = %v, want a retried error", err)
	}
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Errorf("undecodable = %v, want permanent", err)
	}
	if err := h.Pipeline().Handle(routed(t, 0, "no seq")); !pipeline.IsPermanent(err) {
		t.Errorf("no seq = %v, want permanent", err)
	}
}
