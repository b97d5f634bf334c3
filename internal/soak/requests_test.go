package soak

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
)

func TestClassify(t *testing.T) {
	unavailable := &client.Error{Code: clientpb.Error_UNAVAILABLE, Text: "retry"}
	notMember := &client.Error{Code: clientpb.Error_NOT_MEMBER, Text: "no"}
	timedOut := fmt.Errorf("send: %w", context.DeadlineExceeded)
	closed := errors.New("client: connection closed: failed to get reader: EOF")
	for _, tc := range []struct {
		name       string
		err, run   error
		connClosed bool
		want       Outcome
	}{
		{"answer", nil, nil, false, Answered},
		{"answer as the run ends", nil, context.Canceled, false, Answered},
		{"UNAVAILABLE", unavailable, nil, false, Unavailable},
		{"wrapped UNAVAILABLE", fmt.Errorf("send: %w", unavailable), nil, false, Unavailable},
		{"another error code", notMember, nil, false, Refused},
		{"an Error wins over a closed connection", notMember, nil, true, Refused},
		{"bound ran out on an open connection", timedOut, nil, false, Unanswered},
		{"bound ran out as the server closed the connection", timedOut, nil, true, Dropped},
		{"connection closed before the answer", closed, nil, true, Dropped},
		{"write failed, connection still closing", closed, nil, false, Dropped},
		{"run ended while waiting", context.Canceled, context.Canceled, false, Aborted},
		{"run deadline while waiting", timedOut, context.DeadlineExceeded, false, Aborted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err, tc.run, tc.connClosed); got != tc.want {
				t.Fatalf("Classify(%v, run %v, closed %v) = %s, want %s", tc.err, tc.run, tc.connClosed, got, tc.want)
			}
		})
	}
}

func TestTally(t *testing.T) {
	type add struct {
		kind string
		o    Outcome
		code string
	}
	for _, tc := range []struct {
		name           string
		adds           []add
		wantUnanswered int64
		wantByKind     map[string]int64
		wantRefused    map[string]int64
		wantSendOK     int64
	}{
		{name: "nothing", wantByKind: map[string]int64{}, wantRefused: map[string]int64{}},
		{
			name:       "all answered",
			adds:       []add{{KindLogin, Answered, ""}, {KindSend, Answered, ""}, {KindSend, Answered, ""}},
			wantByKind: map[string]int64{}, wantRefused: map[string]int64{}, wantSendOK: 2,
		},
		{
			name: "unanswered by kind, dropped not counted",
			adds: []add{
				{KindSend, Unanswered, ""}, {KindJoin, Unanswered, ""}, {KindSend, Unanswered, ""},
				{KindSync, Dropped, ""}, {KindLogin, Aborted, ""}, {KindSend, Unavailable, "UNAVAILABLE"},
			},
			wantUnanswered: 3,
			wantByKind:     map[string]int64{KindSend: 2, KindJoin: 1},
			wantRefused:    map[string]int64{},
		},
		{
			name:        "refusals by code",
			adds:        []add{{KindSend, Refused, "NOT_MEMBER"}, {KindSend, Refused, "NOT_MEMBER"}, {KindJoin, Refused, "UNKNOWN_ROOM"}},
			wantByKind:  map[string]int64{},
			wantRefused: map[string]int64{"send:NOT_MEMBER": 2, "join:UNKNOWN_ROOM": 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tl Tally
			for _, a := range tc.adds {
				tl.Add(a.kind, a.o, a.code)
			}
			if got := tl.Count("", Unanswered); got != tc.wantUnanswered {
				t.Errorf("unanswered = %d, want %d", got, tc.wantUnanswered)
			}
			if got := tl.Count(KindSend, Answered); got != tc.wantSendOK {
				t.Errorf("sends answered = %d, want %d", got, tc.wantSendOK)
			}
			if got := tl.ByKind(Unanswered); fmt.Sprint(got) != fmt.Sprint(tc.wantByKind) {
				t.Errorf("unanswered by kind = %v, want %v", got, tc.wantByKind)
			}
			if got := tl.Refusals(); fmt.Sprint(got) != fmt.Sprint(tc.wantRefused) {
				t.Errorf("refusals = %v, want %v", got, tc.wantRefused)
			}
		})
	}
}
