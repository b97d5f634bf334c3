package presence

import (
	"fmt"
	"testing"

	"github.com/laneim/laneim/proto/topicpb"
)

func TestWaves(t *testing.T) {
	ev := func(user string, kind topicpb.SessionEvent_Kind) *topicpb.SessionEvent {
		return &topicpb.SessionEvent{Kind: kind, User: user, Session: &topicpb.Session{Comet: "c1", Conn: user}}
	}
	const (
		opened = topicpb.SessionEvent_OPENED
		joined = topicpb.SessionEvent_JOINED
		beat   = topicpb.SessionEvent_HEARTBEAT
	)
	tests := []struct {
		name string
		in   []*topicpb.SessionEvent
		want string // users (or "hb" for a heartbeat) per wave
	}{
		{"one", []*topicpb.SessionEvent{ev("a", opened)}, "[[a]]"},
		{"distinct users: one wave", []*topicpb.SessionEvent{ev("a", opened), ev("b", opened), ev("c", joined)}, "[[a b c]]"},
		{"a user's events in turn", []*topicpb.SessionEvent{ev("a", opened), ev("b", opened), ev("a", joined), ev("a", joined), ev("b", joined)}, "[[a b] [a b] [a]]"},
		{"heartbeats keyed by comet", []*topicpb.SessionEvent{ev("a", opened), {Kind: beat, Session: &topicpb.Session{Comet: "c1"}}, {Kind: beat, Session: &topicpb.Session{Comet: "c1"}}, ev("a", joined)}, "[[a hb] [hb a]]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [][]string
			for _, w := range waves(tt.in) {
				var users []string
				for _, e := range w {
					if e.GetKind() == beat {
						users = append(users, "hb")
					} else {
						users = append(users, e.GetUser())
					}
				}
				got = append(got, users)
			}
			if fmt.Sprint(got) != tt.want {
				t.Errorf("waves %v, want %s", got, tt.want)
			}
		})
	}
}
