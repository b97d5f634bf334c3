package persist_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/persist"
)

func routed(t *testing.T, seq uint64, id, body string) *message.Message {
	t.Helper()
	m, err := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Id: id, Conversation: "room:a", Seq: seq, Body: []byte(body)}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// fixture is a persist handler on an embedded store and a real Redis.
func fixture(t *testing.T) (*persist.Handler, *msgstore.Bolt, *directory.Store) {
	t.Helper()
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	dir := directory.New(testinfra.RedisClient(t))
	return testinfra.Must(persist.New(store, dir, nil, nil))(t), store, dir
}

func TestRedeliveryStoresOnce(t *testing.T) {
	t.Parallel()
	h, store, _ := fixture(t)
	for _, m := range []*message.Message{routed(t, 1, "m1", "one"), routed(t, 2, "m2", "two"), routed(t, 1, "m1", "one again"), routed(t, 2, "m2", "two")} {
		if err := h.Pipeline().Handle(m); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := store.After(context.Background(), "room:a", 0, 10)
	if err != nil || len(got) != 2 || string(got[0].GetBody()) != "one" {
		t.Fatalf("stored %v, %v", got, err)
	}
}

// A seq issued twice (the directory lost its counters) is dead-lettered
// and the counters are marked for restoring; the guard then raises them
// past everything stored.
func TestSeqIssuedTwiceIsRefusedAndRestored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, _, dir := fixture(t)
	if restored, err := h.Restore(ctx); err != nil || !restored {
		t.Fatalf("first Restore = %v, %v; want a restore of the empty directory", restored, err)
	}
	if restored, err := h.Restore(ctx); err != nil || restored {
		t.Fatalf("second Restore = %v, %v; want nothing to do", restored, err)
	}
	for seq, id := range []string{"", "m1", "m2", "m3"} {
		if seq > 0 {
			if err := h.Pipeline().Handle(routed(t, uint64(seq), id, id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	err := h.Pipeline().Handle(routed(t, 2, "other", "a new message given a used seq"))
	var conflict *msgstore.ConflictError
	if !pipeline.IsPermanent(err) || !errors.As(err, &conflict) {
		t.Fatalf("a used seq = %v, want a permanent conflict (dead letter)", err)
	}
	if ok, err := dir.SequencesRestored(ctx); err != nil || ok {
		t.Fatalf("after a conflict, restored = %v, %v; want false", ok, err)
	}
	if restored, err := h.Restore(ctx); err != nil || !restored {
		t.Fatalf("Restore after a conflict = %v, %v", restored, err)
	}
	a, err := dir.Assign(ctx, "room:a", "u", "", func() string { return "next" })
	if err != nil || a.Seq != 4 {
		t.Fatalf("next seq after restore = %d, %v; want 4", a.Seq, err)
	}
}

type failing struct{}

func (failing) Append(context.Context, []*clientpb.Message) error { return errors.New("disk full") }
func (failing) Latest(context.Context) (map[string]uint64, error) {
	return nil, errors.New("disk full")
}

func TestErrors(t *testing.T) {
	t.Parallel()
	h := testinfra.Must(persist.New(failing{}, directory.New(testinfra.RedisClient(t)), nil, nil))(t)
	if err := h.Pipeline().Handle(routed(t, 1, "m1", "x")); err == nil || pipeline.IsPermanent(err) {
		t.Errorf("store failure = %v, want a retried error", err)
	}
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Errorf("undecodable = %v, want permanent", err)
	}
	if err := h.Pipeline().Handle(routed(t, 0, "m0", "no seq")); !pipeline.IsPermanent(err) {
		t.Errorf("no seq = %v, want permanent", err)
	}
	if _, err := h.Restore(context.Background()); err == nil {
		t.Errorf("Restore with an unreadable store succeeded")
	}
}

// TestBatchStoresEveryMessage: a Routed payload carrying several messages
// stores them all.
func TestBatchStoresEveryMessage(t *testing.T) {
	t.Parallel()
	h, store, _ := fixture(t)
	var rs []*topicpb.Routed
	for seq := uint64(1); seq <= 3; seq++ {
		rs = append(rs, &topicpb.Routed{Message: &clientpb.Message{Id: fmt.Sprint("m", seq), Conversation: "room:a", Seq: seq}})
	}
	msg, err := topics.Routed.Encode(topics.JoinRouted(rs))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	got, _, err := store.After(context.Background(), "room:a", 0, 10)
	if err != nil || len(got) != 3 || got[2].GetId() != "m3" {
		t.Fatalf("stored %v, %v; want m1..m3", got, err)
	}
}

// TestRestoreWaitsForRoutedMessagesToBeStored: counters lost while
// messages routed before the loss are still on messages.routed, not
// stored, are restored only once the worker has stored them, so their
// seqs are not issued again (fault check: a lost Redis shard and a
// restarted routing worker).
func TestRestoreWaitsForRoutedMessagesToBeStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := testinfra.KafkaPipeline(t)
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	dir := directory.New(testinfra.RedisClient(t))
	backlog := wiring.NewGroupProgress(p.Kafka, pipeline.ConsumerGroup(persist.Name), topics.Routed.Name)
	t.Cleanup(func() { backlog.Close() })
	h := testinfra.Must(persist.New(store, dir, backlog, nil))(t)

	if restored, err := h.Restore(ctx); err != nil || !restored {
		t.Fatalf("Restore with nothing routed = %v, %v; want a restore at once", restored, err)
	}
	if err := h.Pipeline().Handle(routed(t, 1, "m1", "stored")); err != nil {
		t.Fatal(err)
	}
	// Seqs 2 and 3 are routed, not yet stored, when the counters are lost.
	p.Publish(topics.Routed.Name, routed(t, 2, "m2", "routed"), routed(t, 3, "m3", "routed"))
	if err := dir.ForgetSequencesRestored(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if restored, err := h.Restore(ctx); err != nil || restored {
			t.Fatalf("Restore before the routed messages are stored = %v, %v; want a wait", restored, err)
		}
	}
	p.Run(h.Pipeline())
	deadline := time.Now().Add(30 * time.Second)
	for {
		restored, err := h.Restore(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if restored {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("counters not restored 30s after the worker started storing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a, err := dir.Assign(ctx, "room:a", "u", "", func() string { return "next" })
	if err != nil || a.Seq != 4 {
		t.Fatalf("next seq after the restore = %d, %v; want 4 (2 and 3 were routed before the loss)", a.Seq, err)
	}
}
