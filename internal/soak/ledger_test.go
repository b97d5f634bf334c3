package soak

import (
	"fmt"
	"testing"
)

func ack(conv string, seq uint64, id, cmid string) Ack {
	return Ack{Conversation: conv, Seq: seq, MessageID: id, ClientMsgID: cmid}
}

func TestLedgerCheck(t *testing.T) {
	const room = "room:r"
	type rec struct {
		sender string
		a      Ack
	}
	for _, tc := range []struct {
		name           string
		acks           []rec
		history        []Stored
		wantMissing    []uint64 // seqs
		wantFoundOther []uint64 // of them, seqs where history holds another message
		wantAcked      int64
		wantConflicts  int64
		wantCollisions int64
	}{
		{name: "nothing acknowledged", history: []Stored{{Seq: 1, MessageID: "x"}}},
		{
			name:      "all found, in any order, with repeats and extra messages",
			acks:      []rec{{"a", ack(room, 2, "m2", "a-1")}, {"b", ack(room, 3, "m3", "b-1")}},
			history:   []Stored{{Seq: 3, MessageID: "m3"}, {Seq: 1, MessageID: "m1"}, {Seq: 2, MessageID: "m2"}, {Seq: 3, MessageID: "m3"}},
			wantAcked: 2,
		},
		{
			name:        "a seq missing from history",
			acks:        []rec{{"a", ack(room, 1, "m1", "a-1")}, {"a", ack(room, 2, "m2", "a-2")}, {"a", ack(room, 3, "m3", "a-3")}},
			history:     []Stored{{Seq: 1, MessageID: "m1"}, {Seq: 3, MessageID: "m3"}},
			wantMissing: []uint64{2}, wantAcked: 3,
		},
		{
			name:        "empty history loses everything",
			acks:        []rec{{"a", ack(room, 5, "m5", "a-1")}, {"b", ack(room, 6, "m6", "b-1")}},
			wantMissing: []uint64{5, 6}, wantAcked: 2,
		},
		{
			name:           "another message at the acknowledged seq",
			acks:           []rec{{"a", ack(room, 4, "m4", "a-1")}},
			history:        []Stored{{Seq: 4, MessageID: "other"}},
			wantMissing:    []uint64{4},
			wantFoundOther: []uint64{4},
			wantAcked:      1,
		},
		{
			name:      "a retry answered with the same result counts once",
			acks:      []rec{{"a", ack(room, 7, "m7", "a-1")}, {"a", ack(room, 7, "m7", "a-1")}},
			history:   []Stored{{Seq: 7, MessageID: "m7"}},
			wantAcked: 1,
		},
		{
			name:          "a retry answered with another seq is a conflict; both must be found",
			acks:          []rec{{"a", ack(room, 7, "m7", "a-1")}, {"a", ack(room, 8, "m8", "a-1")}},
			history:       []Stored{{Seq: 7, MessageID: "m7"}},
			wantMissing:   []uint64{8},
			wantAcked:     2,
			wantConflicts: 1,
		},
		{
			name:           "two messages acknowledged at one seq: a collision",
			acks:           []rec{{"a", ack(room, 9, "m9", "a-1")}, {"b", ack(room, 9, "n9", "b-1")}},
			history:        []Stored{{Seq: 9, MessageID: "m9"}},
			wantAcked:      1,
			wantCollisions: 1,
		},
		{
			name:        "same client_msg_id from two senders is two messages",
			acks:        []rec{{"a", ack(room, 1, "m1", "x")}, {"b", ack(room, 2, "m2", "x")}},
			history:     []Stored{{Seq: 2, MessageID: "m2"}},
			wantMissing: []uint64{1}, wantAcked: 2,
		},
		{
			name:        "other conversations do not count",
			acks:        []rec{{"a", ack(room, 1, "m1", "a-1")}, {"a", ack("dm:a:b", 1, "d1", "a-2")}},
			history:     []Stored{{Seq: 1, MessageID: "d1"}},
			wantMissing: []uint64{1}, wantFoundOther: []uint64{1}, wantAcked: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l Ledger
			for i, r := range tc.acks {
				l.Record(r.sender, i, r.a)
			}
			miss := l.Check(room, tc.history)
			var seqs, other []uint64
			for _, m := range miss {
				seqs = append(seqs, m.Ack.Seq)
				if m.Found != nil {
					other = append(other, m.Ack.Seq)
				}
			}
			if fmt.Sprint(seqs) != fmt.Sprint(tc.wantMissing) {
				t.Errorf("missing seqs = %v, want %v", seqs, tc.wantMissing)
			}
			if fmt.Sprint(other) != fmt.Sprint(tc.wantFoundOther) {
				t.Errorf("seqs holding another message = %v, want %v", other, tc.wantFoundOther)
			}
			if got := l.Acknowledged(); got != tc.wantAcked {
				t.Errorf("acknowledged = %d, want %d", got, tc.wantAcked)
			}
			if got := l.Conflicts(); got != tc.wantConflicts {
				t.Errorf("conflicts = %d, want %d", got, tc.wantConflicts)
			}
			if got := l.Collisions(); got != tc.wantCollisions {
				t.Errorf("collisions = %d, want %d", got, tc.wantCollisions)
			}
		})
	}
}

func TestLedgerConversations(t *testing.T) {
	for _, tc := range []struct {
		name string
		acks []Ack
		want string
	}{
		{"none", nil, "[]"},
		{
			"bounds and first reader per conversation, sorted",
			[]Ack{ack("room:r", 5, "a", "1"), ack("dm:a:b", 2, "b", "2"), ack("room:r", 3, "c", "3"), ack("room:r", 9, "d", "4")},
			"[{dm:a:b 1 2 2} {room:r 0 3 9}]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l Ledger
			for i, a := range tc.acks {
				l.Record(fmt.Sprint("u", i), i, a)
			}
			if got := fmt.Sprint(l.Conversations()); got != tc.want {
				t.Fatalf("Conversations() = %s, want %s", got, tc.want)
			}
		})
	}
}
