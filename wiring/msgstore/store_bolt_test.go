package msgstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/msgstore/msgstoretest"
)

func openBolt(t testing.TB, path string, r msgstore.Retention) *msgstore.Bolt {
	t.Helper()
	b, err := msgstore.OpenBolt(path, r, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBoltContract(t *testing.T) {
	msgstoretest.Run(t, func(t *testing.T) msgstore.Store {
		b := openBolt(t, filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{})
		t.Cleanup(func() { b.Close() })
		return b
	})
}

func TestBoltSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	ctx := context.Background()
	b := openBolt(t, path, msgstore.Retention{})
	if err := b.Append(ctx, []*clientpb.Message{{Conversation: "room:a", Seq: 1, Body: []byte("kept")}, {Conversation: "dm:a:b", Seq: 7}}); err != nil {
		t.Fatal(err)
	}
	if err := b.SaveRead(ctx, "a", "dm:a:b", 6); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, msgstore.Retention{})
	defer b.Close()
	got, _, err := b.After(ctx, "room:a", 0, 10)
	if err != nil || len(got) != 1 || string(got[0].GetBody()) != "kept" {
		t.Fatalf("after reopen: %v, %v", got, err)
	}
	latest, err := b.Latest(ctx)
	if err != nil || latest["room:a"] != 1 || latest["dm:a:b"] != 7 {
		t.Fatalf("latest = %v, %v", latest, err)
	}
	if reads, err := b.ReadPositions(ctx, "a", "dm:a:b"); err != nil || reads["dm:a:b"] != 6 {
		t.Fatalf("read positions after reopen = %v, %v", reads, err)
	}
}

func TestBoltRetention(t *testing.T) {
	b := openBolt(t, filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{Room: time.Hour})
	defer b.Close()
	ctx := context.Background()
	now := time.Now()
	old, fresh := now.Add(-2*time.Hour).UnixMilli(), now.UnixMilli()
	var ms []*clientpb.Message
	for i := uint64(1); i <= 10; i++ {
		ts := fresh
		if i <= 6 {
			ts = old
		}
		ms = append(ms, &clientpb.Message{Conversation: "room:r", Seq: i, ServerTimeUnixMs: ts})
		ms = append(ms, &clientpb.Message{Conversation: "dm:a:b", Seq: i, ServerTimeUnixMs: old})
	}
	if err := b.Append(ctx, ms); err != nil {
		t.Fatal(err)
	}
	n, err := b.Sweep(now)
	if err != nil || n != 6 {
		t.Fatalf("swept %d, %v; want 6", n, err)
	}
	room, _, _ := b.After(ctx, "room:r", 0, 100)
	dm, _, _ := b.After(ctx, "dm:a:b", 0, 100)
	if len(room) != 4 || room[0].GetSeq() != 7 || len(dm) != 10 {
		t.Fatalf("after sweep: room %d (first %d), dm %d", len(room), room[0].GetSeq(), len(dm))
	}
}

// BenchmarkBoltAppend measures messages persisted per second, one
// message per Append from 8 concurrent writers (as the persist worker's
// partitions do).
func BenchmarkBoltAppend(b *testing.B) {
	s := openBolt(b, filepath.Join(b.TempDir(), "h.db"), msgstore.Retention{})
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(4)
	var n int64
	b.RunParallel(func(pb *testing.PB) {
		conv := fmt.Sprintf("room:%p", pb)
		seq := uint64(0)
		for pb.Next() {
			seq++
			if err := s.Append(ctx, []*clientpb.Message{{Conversation: conv, Seq: seq, Body: []byte("hello")}}); err != nil {
				b.Error(err)
				return
			}
		}
		_ = n
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func TestBoltFirstCopyWins(t *testing.T) {
	b := openBolt(t, filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{})
	defer b.Close()
	ctx := context.Background()
	for _, body := range []string{"first", "second"} {
		if err := b.Append(ctx, []*clientpb.Message{{Conversation: "room:a", Seq: 1, Body: []byte(body)}}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, _ := b.After(ctx, "room:a", 0, 1)
	if len(got) != 1 || string(got[0].GetBody()) != "first" {
		t.Fatalf("got %v", got)
	}
}
