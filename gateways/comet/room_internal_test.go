package comet

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

func TestStripesFor(t *testing.T) {
	for _, tc := range []struct {
		members int
		window  time.Duration
		want    int
	}{
		{0, 10 * time.Millisecond, 1},
		{255, time.Second, 1},
		{511, time.Second, 1},
		{512, time.Second, 2},
		{10000, 200 * time.Millisecond, 39}, // 10,000 members at the default budget
		{10000, 10 * time.Millisecond, 2},   // phases at least minSlot apart
		{10000, 3 * time.Millisecond, 1},
		{100000, 500 * time.Millisecond, maxStripes},
	} {
		if got := stripesFor(tc.members, tc.window); got != tc.want {
			t.Errorf("stripesFor(%d, %v) = %d, want %d", tc.members, tc.window, got, tc.want)
		}
	}
}

func TestStripeDue(t *testing.T) {
	const w = 100 * time.Millisecond
	epoch := time.Now()
	at := func(d time.Duration) time.Time { return epoch.Add(d) }
	for _, tc := range []struct {
		name    string
		stripes int
		k       int
		last    time.Time
		want    time.Time
	}{
		{"one stripe: a window after its flush", 1, 0, at(37 * time.Millisecond), at(137 * time.Millisecond)},
		{"never flushed: its phase", 4, 1, time.Time{}, at(25 * time.Millisecond)},
		{"flushed on its phase: one window later", 4, 1, at(25 * time.Millisecond), at(125 * time.Millisecond)},
		{"flushed on its phase, many windows in", 4, 3, at(975 * time.Millisecond), at(1075 * time.Millisecond)},
		{"flushed off its phase: its next phase", 4, 1, at(60 * time.Millisecond), at(125 * time.Millisecond)},
		{"flushed just before its phase: half a window at least", 4, 1, at(90 * time.Millisecond), at(225 * time.Millisecond)},
		{"flushed just after its phase", 4, 2, at(51 * time.Millisecond), at(150 * time.Millisecond)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &room{epoch: epoch}
			for range tc.stripes {
				r.stripes = append(r.stripes, &stripe{})
			}
			r.stripes[tc.k].lastFlush = tc.last
			got := r.dueLocked(tc.k, w)
			if !got.Equal(tc.want) {
				t.Fatalf("due at %v, want %v", got.Sub(epoch), tc.want.Sub(epoch))
			}
			if !tc.last.IsZero() && (got.Sub(tc.last) < w/2 || got.Sub(tc.last) > 3*w/2) {
				t.Fatalf("due %v after the last flush, want between half a window and one and a half", got.Sub(tc.last))
			}
		})
	}
}

// stripedRoom returns a room of c with n members: member, if not nil,
// and members that take nothing (kicked).
func stripedRoom(t *testing.T, c *Comet, n int, member *conn) *room {
	t.Helper()
	r := newRoom(c, "big")
	t.Cleanup(r.stop)
	if member != nil {
		n--
	}
	for i := range n {
		cn := newConn(c, fmt.Sprint("k.", i), nil, nil, false)
		cn.kicked = true
		r.join(cn)
	}
	if member != nil {
		r.join(member)
	}
	return r
}

func TestJoinDealsMembersIntoStripes(t *testing.T) {
	c, err := New(Config{ID: "t", Secret: "test-secret-of-the-comet-tests-0123456789", FrameBudget: 25000}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := stripedRoom(t, c, 3000, nil) // a window of 120ms
	if want := stripesFor(3000, r.window()); len(r.stripes) != want || want < 2 {
		t.Fatalf("%d stripes, want %d (more than one)", len(r.stripes), want)
	}
	total := 0
	for k, s := range r.stripes {
		if len(s.members) == 0 || len(s.members) > 2*stripeMembers {
			t.Errorf("stripe %d holds %d members, want 1 to %d", k, len(s.members), 2*stripeMembers)
		}
		for cn := range s.members {
			if r.members[cn] != s {
				t.Fatalf("member %s of stripe %d is indexed in another", cn.id, k)
			}
		}
		total += len(s.members)
	}
	if total != 3000 || len(r.members) != 3000 {
		t.Fatalf("stripes hold %d members, the room %d, want 3000", total, len(r.members))
	}
	for cn := range r.members {
		r.leave(cn)
	}
	for k, s := range r.stripes {
		if len(s.members) != 0 {
			t.Fatalf("stripe %d holds %d members after all left", k, len(s.members))
		}
	}
}

// TestBusyRoomFlushesStripesOnTheirPhases drives a big room's flushes
// on a clock of its own, a millisecond at a time, while a message comes
// every 5ms: after the first message, which every stripe sends at once,
// each stripe flushes on its phase, a window apart, and a member gets
// every message once, in order.
func TestBusyRoomFlushesStripesOnTheirPhases(t *testing.T) {
	s, _ := loopback(t)
	member := claimedConn(t, s)
	c := member.comet
	c.cfg.FrameBudget = 12800 // a window of 80ms for 1,024 members
	c.ready.started = true    // no writers: the member's frames stay queued
	c.cfg.SendQueue = 1 << 16 // and are not shed
	r := stripedRoom(t, c, 1024, member)
	w := r.window()
	k := len(r.stripes)
	if w != 80*time.Millisecond || k != 4 {
		t.Fatalf("window %v, %d stripes; want 80ms and 4", w, k)
	}
	conv := topics.RoomConversation("big")
	// A clock an hour ahead: the room's own timers, armed on real time,
	// do not fire while the test runs.
	start := time.Now().Add(time.Hour)
	flushes := make([][]time.Time, k)
	seen := func(now time.Time) {
		for i, s := range r.stripes {
			if n := len(flushes[i]); n == 0 || !flushes[i][n-1].Equal(s.lastFlush) {
				if !s.lastFlush.IsZero() {
					flushes[i] = append(flushes[i], s.lastFlush)
				}
			}
		}
	}
	var seq uint64
	const steps = 500 // ms
	for i := range steps {
		now := start.Add(time.Duration(i) * time.Millisecond)
		if i%5 == 0 && i < steps-2*int(w/time.Millisecond) {
			seq++
			r.addAt([]*clientpb.Message{{Id: fmt.Sprint(seq), Conversation: conv, Seq: seq, Body: []byte("b")}}, now)
		}
		r.mu.Lock()
		r.scheduleLocked(now)
		r.mu.Unlock()
		seen(now)
	}

	for i, fs := range flushes {
		if len(fs) < 4 || !fs[0].Equal(start) {
			t.Fatalf("stripe %d flushed at %v, want first at once", i, fs)
		}
		phase := time.Duration(i) * w / time.Duration(k)
		for j, f := range fs[1:] {
			if gap := f.Sub(fs[j]); gap < w/2 || gap > 3*w/2 {
				t.Errorf("stripe %d: %v between flushes %d and %d, want half a window to one and a half", i, gap, j, j+1)
			}
			if j == 0 {
				continue // the flush that brings it back to its phase
			}
			if off := (f.Sub(r.epoch) - phase) % w; off >= time.Millisecond {
				t.Errorf("stripe %d flush %d is %v past its phase", i, j+1, off)
			}
		}
	}
	if len(r.log) != 0 {
		t.Fatalf("%d messages left in the log once every stripe flushed", len(r.log))
	}

	member.qmu.Lock()
	frames := append([]*frame{member.turn}, member.queue...)
	member.qmu.Unlock()
	var want uint64 = 1
	for _, f := range frames {
		for _, m := range f.msg.GetMessages().GetMessages() {
			if m.GetSeq() != want {
				t.Fatalf("member got seq %d, want %d", m.GetSeq(), want)
			}
			want++
		}
	}
	if want != seq+1 {
		t.Fatalf("member got seqs up to %d of %d", want-1, seq)
	}
}
