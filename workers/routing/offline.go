package routing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// MaxMentions bounds the users one message may mention.
const MaxMentions = 50

// mentioned returns the users sub mentions, once each, sorted, without
// its sender: in a room, those who are members; in a 1:1 conversation,
// the other party if mentioned; nobody in a broadcast.
func (h *Handler) mentioned(ctx context.Context, sub *topicpb.Submitted) ([]string, error) {
	users := slices.Clone(sub.GetMentions())
	slices.Sort(users)
	users = slices.Compact(users)
	users = slices.DeleteFunc(users, func(u string) bool { return u == sub.GetSender() })
	if len(users) == 0 {
		return nil, nil
	}
	switch to := sub.GetTo().(type) {
	case *topicpb.Submitted_User:
		if slices.Contains(users, to.User) {
			return []string{to.User}, nil
		}
	case *topicpb.Submitted_Room:
		return h.store.MembersAmong(ctx, to.Room, users...)
	}
	return nil, nil
}

// offline returns the recipients of sub that have no live connection
// now (directory.Store.Online): the other party of a 1:1 message; the
// members of a room but the sender, when the room has at most
// Config.NotifyMembers members, and the mentioned members whatever its
// size; nobody for broadcasts. It returns those of them mentioned too.
func (h *Handler) offline(ctx context.Context, sub *topicpb.Submitted, mentioned []string) (users, offMentioned []string, err error) {
	switch to := sub.GetTo().(type) {
	case *topicpb.Submitted_User:
		if to.User == sub.GetSender() {
			return nil, nil, nil
		}
		users = []string{to.User}
	case *topicpb.Submitted_Room:
		users = slices.Clone(mentioned)
		if h.cfg.NotifyMembers >= 0 {
			n, err := h.sizes.get(ctx, h.store, to.Room)
			if err != nil {
				return nil, nil, err
			}
			if n <= h.cfg.NotifyMembers && n > 0 {
				members, err := h.store.Members(ctx, to.Room)
				if err != nil {
					return nil, nil, err
				}
				for _, m := range members {
					if m != sub.GetSender() {
						users = append(users, m)
					}
				}
			}
		}
	default:
		return nil, nil, nil
	}
	slices.Sort(users)
	users = slices.Compact(users)
	if len(users) == 0 {
		return nil, nil, nil
	}
	online, err := h.store.Online(ctx, users...)
	if err != nil {
		return nil, nil, err
	}
	users = slices.DeleteFunc(users, func(u string) bool { return online[u] })
	for _, u := range mentioned {
		if slices.Contains(users, u) {
			offMentioned = append(offMentioned, u)
		}
	}
	return users, offMentioned, nil
}

// notify publishes m's OfflineNotice for users.
func (h *Handler) notify(m *clientpb.Message, users, mentioned []string) error {
	out, err := topics.OfflineNotices.Encode(&topicpb.OfflineNotice{Message: m, Users: users, Mentioned: mentioned})
	if err != nil {
		return err
	}
	if err := h.pub.Publish(topics.OfflineNotices.Name, out); err != nil {
		return fmt.Errorf("routing: publish offline notice %s#%d: %w", m.GetConversation(), m.GetSeq(), err)
	}
	return nil
}

// roomSizes remembers rooms' member counts for roomSizeTTL, so that a
// busy room is not counted at every message: whether its members are
// notified follows a membership change within that time. Counting a
// set is O(1) in Redis but sorts the whole set in the embedded one, which
// made it most of the dev cluster's CPU in a 10,000-member room.
type roomSizes struct {
	mu sync.Mutex
	m  map[string]roomSize
}

type roomSize struct {
	n  int
	at time.Time
}

// roomSizeTTL is how long a room's member count is taken as current;
// maxRoomSizes bounds the rooms remembered.
const (
	roomSizeTTL  = 2 * time.Second
	maxRoomSizes = 10000
)

func (c *roomSizes) get(ctx context.Context, store Store, room string) (int, error) {
	now := time.Now()
	c.mu.Lock()
	if e, ok := c.m[room]; ok && now.Sub(e.at) < roomSizeTTL {
		c.mu.Unlock()
		return e.n, nil
	}
	c.mu.Unlock()
	n, err := store.MemberCount(ctx, room)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxRoomSizes {
		c.m = make(map[string]roomSize)
	}
	c.m[room] = roomSize{n: n, at: now}
	c.mu.Unlock()
	return n, nil
}
