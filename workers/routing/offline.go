package routing

import (
	"context"
	"fmt"
	"slices"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// offline returns the recipients of sub that have no live connection
// now (directory.Store.Online): the other party of a 1:1 message; the
// members of a room but the sender, when the room has at most
// Config.NotifyMembers members; nobody for broadcasts.
func (h *Handler) offline(ctx context.Context, sub *topicpb.Submitted) ([]string, error) {
	var users []string
	switch to := sub.GetTo().(type) {
	case *topicpb.Submitted_User:
		if to.User == sub.GetSender() {
			return nil, nil
		}
		users = []string{to.User}
	case *topicpb.Submitted_Room:
		if h.cfg.NotifyMembers < 0 {
			return nil, nil
		}
		n, err := h.store.MemberCount(ctx, to.Room)
		if err != nil || n > h.cfg.NotifyMembers || n == 0 {
			return nil, err
		}
		members, err := h.store.Members(ctx, to.Room)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			if m != sub.GetSender() {
				users = append(users, m)
			}
		}
	default:
		return nil, nil
	}
	if len(users) == 0 {
		return nil, nil
	}
	online, err := h.store.Online(ctx, users...)
	if err != nil {
		return nil, err
	}
	users = slices.DeleteFunc(users, func(u string) bool { return online[u] })
	slices.Sort(users)
	return users, nil
}

// notify publishes m's OfflineNotice for users.
func (h *Handler) notify(m *clientpb.Message, users []string) error {
	out, err := topics.OfflineNotices.Encode(&topicpb.OfflineNotice{Message: m, Users: users})
	if err != nil {
		return err
	}
	if err := h.pub.Publish(topics.OfflineNotices.Name, out); err != nil {
		return fmt.Errorf("routing: publish offline notice %s#%d: %w", m.GetConversation(), m.GetSeq(), err)
	}
	return nil
}
