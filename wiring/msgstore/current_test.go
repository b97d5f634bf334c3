package msgstore_test

import (
	"context"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/wiring/msgstore"
)

func TestApply(t *testing.T) {
	orig := []*clientpb.Message{
		{Seq: 1, Body: []byte("one"), ContentType: "text/plain", Mentions: []string{"bob"}},
		{Seq: 2, Body: []byte("two"), ContentType: "text/plain", Mentions: []string{"bob"}},
		{Seq: 3, Body: []byte("three")},
		{Seq: 4, Body: []byte("new"), ContentType: "text/markdown", Edits: 1},
	}
	before := make([]*clientpb.Message, len(orig))
	for i, m := range orig {
		before[i] = proto.CloneOf(m)
	}
	changes := map[uint64]*clientpb.Message{
		1: {Seq: 9, Body: []byte("newer"), ContentType: "text/markdown", Edits: 1},
		2: {Seq: 7, Recalls: 2},
		4: {Seq: 8, Edits: 4, Body: []byte("no")}, // an edit of an edit: not applied
	}
	got := msgstore.Apply(orig, changes)
	want := []*clientpb.Message{
		{Seq: 1, Body: []byte("newer"), ContentType: "text/markdown", Mentions: []string{"bob"}, EditedSeq: 9},
		{Seq: 2, RecalledSeq: 7},
		{Seq: 3, Body: []byte("three")},
		{Seq: 4, Body: []byte("new"), ContentType: "text/markdown", Edits: 1},
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("message %d = %v, want %v", i, got[i], want[i])
		}
		if !proto.Equal(orig[i], before[i]) {
			t.Errorf("Apply changed its input %d: %v", i, orig[i])
		}
	}
}

// TestBoltIndexesOldFile: a file written before the changes index gets
// one when opened.
func TestBoltIndexesOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	ctx := context.Background()
	b := openBolt(t, path, msgstore.Retention{})
	err := b.Append(ctx, []*clientpb.Message{
		{Id: "1", Conversation: "dm:a:b", Seq: 1, Body: []byte("helo")},
		{Id: "2", Conversation: "dm:a:b", Seq: 2, Body: []byte("hello"), Edits: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("changes")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b = openBolt(t, path, msgstore.Retention{})
	defer b.Close()
	msgs, _, err := b.After(ctx, "dm:a:b", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := msgstore.Current(ctx, b, "dm:a:b", msgs)
	if err != nil || len(cur) != 2 || string(cur[0].GetBody()) != "hello" || cur[0].GetEditedSeq() != 2 {
		t.Fatalf("current state after reopening an old file: %v, %v", cur, err)
	}
}
