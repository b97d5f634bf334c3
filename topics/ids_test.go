package topics_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/laneim/laneim/topics"
)

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"alice", true},
		{"a", true},
		{"Alice.Smith_2@example-corp.com", true},
		{strings.Repeat("x", topics.MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", topics.MaxIDLen+1), false},
		{"acme:alice", false},
		{"room:lobby", false},
		{"a b", false},
		{"{u:x}", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
		{topics.SystemSender, false},
		{"system", true}, // a user may be named so; backend notices use SystemSender
	}
	for _, tt := range tests {
		if got := topics.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
		if err := topics.CheckID("user", tt.id); (err == nil) != tt.want {
			t.Errorf("CheckID(%q) = %v, want valid %v", tt.id, err, tt.want)
		}
	}
}

func TestParseConversation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want topics.Conversation // zero: refused
	}{
		{"room:lobby", topics.Conversation{Kind: topics.Room, Room: "lobby"}},
		{"dm:alice:bob", topics.Conversation{Kind: topics.Direct, A: "alice", B: "bob"}},
		{"dm:alice:alice", topics.Conversation{Kind: topics.Direct, A: "alice", B: "alice"}},
		{"dm:" + topics.SystemSender + ":bob", topics.Conversation{Kind: topics.Direct, A: "bob", B: topics.SystemSender}}, // out of order: refused below
		{"dm:bob:" + topics.SystemSender, topics.Conversation{Kind: topics.Direct, A: "bob", B: topics.SystemSender}},
		{"broadcast", topics.Conversation{Kind: topics.Broadcast}},
		{"dm:acme:alice:bob", topics.Conversation{}},
		{"dm:acme:alice:acme:bob", topics.Conversation{}},
		{"dm:bob:alice", topics.Conversation{}}, // not sorted: not the conversation's id
		{"dm:alice", topics.Conversation{}},
		{"dm:alice:", topics.Conversation{}},
		{"dm::bob", topics.Conversation{}},
		{"dm:", topics.Conversation{}},
		{"room:", topics.Conversation{}},
		{"room:a:b", topics.Conversation{}},
		{"room:" + strings.Repeat("r", topics.MaxIDLen+1), topics.Conversation{}},
		{"Broadcast", topics.Conversation{}},
		{"broadcast:x", topics.Conversation{}},
		{"lobby", topics.Conversation{}},
		{"", topics.Conversation{}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := topics.ParseConversation(tt.id)
			if tt.want == (topics.Conversation{}) || tt.id != tt.want.String() {
				if err == nil || !errors.Is(err, topics.ErrBadConversation) {
					t.Fatalf("ParseConversation(%q) = %+v, %v; want ErrBadConversation", tt.id, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseConversation(%q) = %+v, %v; want %+v", tt.id, got, err, tt.want)
			}
			if got.String() != tt.id {
				t.Errorf("String() = %q, want %q", got.String(), tt.id)
			}
		})
	}
}

// TestParticipantsIsTheParser: 1:1 access is judged by the parser, so an
// id with more than two parts names no participants at all.
func TestParticipantsIsTheParser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		a, b string
		ok   bool
	}{
		{"dm:alice:bob", "alice", "bob", true},
		{"dm:acme:alice:bob", "", "", false},
		{"dm:acme:alice:acme:bob", "", "", false},
		{"room:lobby", "", "", false},
		{"broadcast", "", "", false},
	}
	for _, tt := range tests {
		a, b, ok := topics.Participants(tt.id)
		if a != tt.a || b != tt.b || ok != tt.ok {
			t.Errorf("Participants(%q) = %q, %q, %v; want %q, %q, %v", tt.id, a, b, ok, tt.a, tt.b, tt.ok)
		}
	}
	if c := topics.DirectConversation(topics.SystemSender, "bob"); !mustParse(t, c).Has("bob") || !mustParse(t, c).Has(topics.SystemSender) {
		t.Errorf("%s: bob and the system sender are not its parties", c)
	}
}

func mustParse(t *testing.T, id string) topics.Conversation {
	t.Helper()
	c, err := topics.ParseConversation(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
