package persist_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/history"
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
	store, err := history.OpenBolt(filepath.Join(t.TempDir(), "h.db"), history.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := persist.New(store)
	for _, m := range []*message.Message{routed(t, 1, "one"), routed(t, 2, "two"), routed(t, 1, "one again"), routed(t, 2, "two")} {
		if err := h.Handle(m); err != nil {
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
	h := persist.New(failing{})
	if err := h.Handle(routed(t, 1, "x")); err == nil || wiring.IsPermanent(err) {
		t.Errorf("store failure = %v, want a retried error", err)
	}
	if err := h.Handle(message.NewMessage("x", []byte{0xff})); !wiring.IsPermanent(err) {
		t.Errorf("undecodable = %v, want permanent", err)
	}
	if err := h.Handle(routed(t, 0, "no seq")); !wiring.IsPermanent(err) {
		t.Errorf("no seq = %v, want permanent", err)
	}
}
