package topics

import (
	"errors"
	"fmt"
	"strings"
)

// MaxIDLen is the longest user or room id, in bytes (the schema's
// VARCHAR(64)).
const MaxIDLen = 64

// MaxClientMsgIDLen and MaxContentTypeLen bound a message's client_msg_id
// and content_type, in bytes, wherever it enters the cluster: a client's
// Send at a comet, a push at the api gateway.
const (
	MaxClientMsgIDLen = 128
	MaxContentTypeLen = 128
)

// SystemSender is the sender of messages the api gateway pushes without
// one (backend notices). It fails ValidID, so no user can be named so:
// no token, directory entry or client can take it.
const SystemSender = "~system"

// ValidID reports whether id may name a user or a room: 1 to MaxIDLen
// bytes of ASCII letters, digits, '.', '_', '@' and '-'. In particular an
// id holds no ':', which separates the parts of a conversation id, and
// no '{' or '}', which delimit Redis Cluster hash tags.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckID returns an error saying why id is not a valid id of the given
// kind ("user", "room"), or nil.
func CheckID(kind, id string) error {
	if ValidID(id) {
		return nil
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s id of %d bytes exceeds %d", kind, len(id), MaxIDLen)
	}
	return fmt.Errorf("%s id %q is not 1 to %d bytes of [A-Za-z0-9._@-]", kind, id, MaxIDLen)
}

// validParticipant reports whether id may be a party of a 1:1
// conversation: a user, or the SystemSender of backend notices.
func validParticipant(id string) bool { return id == SystemSender || ValidID(id) }

// Kind tells the kinds of conversations apart.
type Kind int

// The kinds of conversations.
const (
	Room Kind = iota + 1
	Direct
	Broadcast
)

// Conversation is a parsed conversation id.
type Conversation struct {
	Kind Kind
	// Room is the room of a Room conversation.
	Room string
	// A and B are the parties of a Direct conversation, A < B (or A == B
	// for a user's conversation with itself).
	A, B string
}

// String returns the conversation's id.
func (c Conversation) String() string {
	switch c.Kind {
	case Room:
		return RoomConversation(c.Room)
	case Direct:
		return DirectConversation(c.A, c.B)
	case Broadcast:
		return BroadcastConversation
	}
	return ""
}

// Has reports whether user is a party of a Direct conversation.
func (c Conversation) Has(user string) bool {
	return c.Kind == Direct && (user == c.A || user == c.B)
}

// ErrBadConversation is wrapped by ParseConversation's errors.
var ErrBadConversation = errors.New("not a conversation id")

// ParseConversation parses a conversation id; it is the one parser of
// conversation ids. The ids are "room:<room>", "dm:<a>:<b>" and
// "broadcast", where room, a and b are valid ids (ValidID; a or b may be
// SystemSender) and a < b, as DirectConversation makes them (a == b is a
// user's conversation with itself). Anything else, such as
// "dm:acme:alice:bob", is refused: a conversation has exactly one id.
func ParseConversation(id string) (Conversation, error) {
	if id == BroadcastConversation {
		return Conversation{Kind: Broadcast}, nil
	}
	if room, ok := strings.CutPrefix(id, "room:"); ok {
		if !ValidID(room) {
			return Conversation{}, fmt.Errorf("topics: %q: %w: bad room id", id, ErrBadConversation)
		}
		return Conversation{Kind: Room, Room: room}, nil
	}
	if rest, ok := strings.CutPrefix(id, "dm:"); ok {
		a, b, ok := strings.Cut(rest, ":")
		if !ok || !validParticipant(a) || !validParticipant(b) {
			return Conversation{}, fmt.Errorf("topics: %q: %w: want dm:<user>:<user>", id, ErrBadConversation)
		}
		if a > b {
			return Conversation{}, fmt.Errorf("topics: %q: %w: users out of order", id, ErrBadConversation)
		}
		return Conversation{Kind: Direct, A: a, B: b}, nil
	}
	return Conversation{}, fmt.Errorf("topics: %q: %w", id, ErrBadConversation)
}
