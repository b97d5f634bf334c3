package routing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

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

// recipients sets, for each item, the users it mentions (mentioned) and
// its recipients with no live connection now (offline, and those of them
// mentioned): the other party of a 1:1 message; the members of a room
// but the sender, when the room has at most Config.NotifyMembers
// members, and the mentioned members whatever its size; nobody for
// broadcasts. The items share one conversation: the room's members and
// who is online are asked once for them all.
func (h *Handler) recipients(ctx context.Context, items []*item) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, it := range items {
		if len(it.sub.GetMentions()) > 0 {
			g.Go(func() (err error) {
				it.mentioned, err = h.mentioned(gctx, it.sub)
				return err
			})
		}
	}
	var members []string // of a room small enough to notify
	if to, ok := items[0].sub.GetTo().(*topicpb.Submitted_Room); ok && h.cfg.NotifyMembers >= 0 {
		g.Go(func() error {
			n, err := h.sizes.get(gctx, h.store, to.Room)
			if err != nil || n > h.cfg.NotifyMembers || n == 0 {
				return err
			}
			members, err = h.store.Members(gctx, to.Room)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var all []string
	for _, it := range items {
		sub := it.sub
		switch to := sub.GetTo().(type) {
		case *topicpb.Submitted_User:
			if to.User != sub.GetSender() {
				it.offline = []string{to.User}
			}
		case *topicpb.Submitted_Room:
			users := slices.Clone(it.mentioned)
			for _, m := range members {
				if m != sub.GetSender() {
					users = append(users, m)
				}
			}
			slices.Sort(users)
			it.offline = slices.Compact(users)
		}
		all = append(all, it.offline...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	if len(all) == 0 {
		return nil
	}
	online, err := h.store.Online(ctx, all...)
	if err != nil {
		return err
	}
	for _, it := range items {
		it.offline = slices.DeleteFunc(it.offline, func(u string) bool { return online[u] })
		for _, u := range it.mentioned {
			if slices.Contains(it.offline, u) {
				it.offlineMentioned = append(it.offlineMentioned, u)
			}
		}
	}
	return nil
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
