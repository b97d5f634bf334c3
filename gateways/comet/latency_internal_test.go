package comet

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// histogramOf returns h's count and sum.
func histogramOf(t *testing.T, h prometheus.Histogram) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// TestLatencyHistograms: a live message's age is observed once when its
// Delivery arrives (an answer's messages are not live), and a room
// frame's write to a member is observed as a lag behind its flush.
func TestLatencyHistograms(t *testing.T) {
	s, client := loopback(t)
	member := claimedConn(t, s)
	c := member.comet
	c.mu.Lock()
	c.conns[member.id] = member
	c.mu.Unlock()
	r := newRoom(c, "a")
	t.Cleanup(r.stop)
	r.join(member)
	c.mu.Lock()
	c.rooms["a"] = r
	c.mu.Unlock()

	conv := topics.RoomConversation("a")
	sent := time.Now().Add(-250 * time.Millisecond).UnixMilli()
	live := &topicpb.Delivery{Room: "a", Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Id: "1", Conversation: conv, Seq: 1, Body: []byte("b"), ServerTimeUnixMs: sent}},
	}}}}
	answer := &topicpb.Delivery{Conns: []string{member.id}, Frame: &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Id: "0", Conversation: conv, Seq: 1, Body: []byte("old"), ServerTimeUnixMs: sent - 3_600_000}},
	}}}}
	c.Deliver(live)
	n, sum := histogramOf(t, c.lat.age)
	if n != 1 {
		t.Fatalf("%d ages observed, want 1", n)
	}
	if sum < 0.25 || sum > 10 {
		t.Fatalf("age %.3fs, want about 0.25s", sum)
	}

	// The live message was flushed at once (the room was quiet) and is
	// written to the member by the ready list.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := histogramOf(t, c.lat.writeLag); n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no write lag observed 10s after the room's flush")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n, sum = histogramOf(t, c.lat.writeLag)
	if n != 1 || sum < 0 || sum > 10 {
		t.Fatalf("%d write lags observed, %.3fs in all; want 1 of less than 10s", n, sum)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the member's socket got nothing: %v", err)
	}

	c.Deliver(answer)
	if n, _ := histogramOf(t, c.lat.age); n != 1 {
		t.Fatalf("%d ages observed after an answer, want still 1 (an answer's messages are not live)", n)
	}
}

// TestRoomWait: a room message's wait from its arrival to its flush is
// observed once per stripe flushed: none for a quiet room's message,
// the rest of the window for a busy one's.
func TestRoomWait(t *testing.T) {
	c, err := New(Config{ID: "t", Secret: "test-secret-of-the-comet-tests-0123456789", BatchWindow: 80 * time.Millisecond}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := stripedRoom(t, c, 10, nil) // one stripe, a window of 80ms
	if w := r.window(); w != 80*time.Millisecond || len(r.stripes) != 1 {
		t.Fatalf("window %v, %d stripes; want 80ms and 1", w, len(r.stripes))
	}
	conv := topics.RoomConversation("big")
	// A clock an hour ahead: the room's own timer, armed on real time,
	// does not fire while the test runs.
	start := time.Now().Add(time.Hour)
	r.addAt([]*clientpb.Message{{Id: "1", Conversation: conv, Seq: 1}}, start) // quiet: flushed at once
	r.addAt([]*clientpb.Message{{Id: "2", Conversation: conv, Seq: 2}}, start.Add(10*time.Millisecond))
	r.mu.Lock()
	r.scheduleLocked(start.Add(80 * time.Millisecond)) // a window after the first flush
	r.mu.Unlock()
	n, sum := histogramOf(t, c.lat.roomWait)
	if n != 2 || sum < 0.0699 || sum > 0.0701 {
		t.Fatalf("%d waits observed, %.4fs in all; want 2: 0 and 70ms", n, sum)
	}
	if len(r.log) != 0 || len(r.arrived) != 0 {
		t.Fatalf("%d messages and %d arrival times left once flushed", len(r.log), len(r.arrived))
	}
}
