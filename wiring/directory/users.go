package directory

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ErrDeletedUser is SaveUser's answer for an id that belonged to a
// deleted user. Ids are not given again: a new account under an old id
// would see the old one's 1:1 conversations and log in with tokens
// minted for it.
var ErrDeletedUser = errors.New("the id belonged to a deleted user; ids are not given again")

// saveUserScript sets a user's fields unless the id is marked deleted.
// KEYS: the user, its deleted mark; ARGV: name, disabled. Returns 0 for a
// deleted id, else 1.
var saveUserScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'disabled', ARGV[2])
return 1
`)

// SaveUser creates or replaces a user, as a directory change made through
// the api: unlike PutUser, it refuses (ErrDeletedUser) an id DeleteUser
// deleted.
func (s *Store) SaveUser(ctx context.Context, u User) error {
	if u.ID == "" {
		return errors.New("directory: user without id")
	}
	ok, err := saveUserScript.Run(ctx, s.rdb, []string{userKey(u.ID), userDeletedKey(u.ID)}, u.Name, flag(u.Disabled)).Int()
	if err != nil {
		return fmt.Errorf("directory: save user %s: %w", u.ID, err)
	}
	if ok == 0 {
		return fmt.Errorf("directory: save user %s: %w", u.ID, ErrDeletedUser)
	}
	return nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// PutUser creates or replaces a user, whether or not its id was deleted
// before: binlog sync applies what the system of record holds.
func (s *Store) PutUser(ctx context.Context, u User) error {
	if u.ID == "" {
		return errors.New("directory: user without id")
	}
	if err := s.rdb.HSet(ctx, userKey(u.ID), "name", u.Name, "disabled", flag(u.Disabled)).Err(); err != nil {
		return fmt.Errorf("directory: put user %s: %w", u.ID, err)
	}
	return nil
}

// DeleteUser removes a user, its memberships and blocks, and marks its id
// deleted for SaveUser.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	_, err := s.RemoveUser(ctx, id)
	return err
}

// RemoveUser is DeleteUser, and reports whether this call deleted the
// user: of concurrent calls for one user, one reports true.
func (s *Store) RemoveUser(ctx context.Context, id string) (removed bool, err error) {
	// The mark and the user's record in one transaction (one slot): a
	// SaveUser racing with the rest finds the mark, and only one of
	// concurrent calls finds the record to delete.
	var del *redis.IntCmd
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, userDeletedKey(id), "1", 0)
		del = p.Del(ctx, userKey(id))
		return nil
	}); err != nil {
		return false, fmt.Errorf("directory: delete user %s: %w", id, err)
	}
	rooms, err := s.RoomsOf(ctx, id)
	if err != nil {
		return false, err
	}
	for _, r := range rooms {
		if err := s.RemoveMember(ctx, r, id); err != nil {
			return false, err
		}
	}
	if err := s.rdb.Del(ctx, userRoomsKey(id), userBlocksKey(id)).Err(); err != nil {
		return false, fmt.Errorf("directory: delete user %s: %w", id, err)
	}
	return del.Val() > 0, nil
}

// User returns a user; ok is false when it does not exist.
func (s *Store) User(ctx context.Context, id string) (u User, ok bool, err error) {
	m, err := s.rdb.HGetAll(ctx, userKey(id)).Result()
	if err != nil {
		return User{}, false, fmt.Errorf("directory: user %s: %w", id, err)
	}
	if len(m) == 0 {
		return User{}, false, nil
	}
	return User{ID: id, Name: m["name"], Disabled: m["disabled"] == "1"}, true, nil
}

// PutRoom creates or replaces a room.
func (s *Store) PutRoom(ctx context.Context, r Room) error {
	if r.ID == "" {
		return errors.New("directory: room without id")
	}
	if err := s.rdb.HSet(ctx, roomKey(r.ID), "name", r.Name, "kind", r.Kind).Err(); err != nil {
		return fmt.Errorf("directory: put room %s: %w", r.ID, err)
	}
	return nil
}

// DeleteRoom removes a room and its memberships.
func (s *Store) DeleteRoom(ctx context.Context, id string) error {
	members, err := s.rdb.SMembers(ctx, roomMembersKey(id)).Result()
	if err != nil {
		return fmt.Errorf("directory: delete room %s: %w", id, err)
	}
	for _, u := range members {
		if err := s.rdb.SRem(ctx, userRoomsKey(u), id).Err(); err != nil {
			return fmt.Errorf("directory: delete room %s: %w", id, err)
		}
	}
	if err := s.rdb.Del(ctx, roomKey(id), roomMembersKey(id)).Err(); err != nil {
		return fmt.Errorf("directory: delete room %s: %w", id, err)
	}
	return nil
}

// Room returns a room; ok is false when it does not exist.
func (s *Store) Room(ctx context.Context, id string) (r Room, ok bool, err error) {
	m, err := s.rdb.HGetAll(ctx, roomKey(id)).Result()
	if err != nil {
		return Room{}, false, fmt.Errorf("directory: room %s: %w", id, err)
	}
	if len(m) == 0 {
		return Room{}, false, nil
	}
	return Room{ID: id, Name: m["name"], Kind: m["kind"]}, true, nil
}

// AddMember makes user a member of room. Idempotent.
func (s *Store) AddMember(ctx context.Context, room, user string) error {
	// Two slots: the room's members, then the user's rooms. Each step is
	// idempotent, so a retry after a failure in between converges.
	if err := s.rdb.SAdd(ctx, roomMembersKey(room), user).Err(); err != nil {
		return fmt.Errorf("directory: add %s to %s: %w", user, room, err)
	}
	if err := s.rdb.SAdd(ctx, userRoomsKey(user), room).Err(); err != nil {
		return fmt.Errorf("directory: add %s to %s: %w", user, room, err)
	}
	return nil
}

// RemoveMember ends user's membership of room. Idempotent.
func (s *Store) RemoveMember(ctx context.Context, room, user string) error {
	if err := s.rdb.SRem(ctx, roomMembersKey(room), user).Err(); err != nil {
		return fmt.Errorf("directory: remove %s from %s: %w", user, room, err)
	}
	if err := s.rdb.SRem(ctx, userRoomsKey(user), room).Err(); err != nil {
		return fmt.Errorf("directory: remove %s from %s: %w", user, room, err)
	}
	return nil
}

// IsMember reports whether user is a member of room.
func (s *Store) IsMember(ctx context.Context, room, user string) (bool, error) {
	ok, err := s.rdb.SIsMember(ctx, roomMembersKey(room), user).Result()
	if err != nil {
		return false, fmt.Errorf("directory: is %s in %s: %w", user, room, err)
	}
	return ok, nil
}

// RoomsOf returns the rooms user is a member of.
func (s *Store) RoomsOf(ctx context.Context, user string) ([]string, error) {
	rooms, err := s.rdb.SMembers(ctx, userRoomsKey(user)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("directory: rooms of %s: %w", user, err)
	}
	return rooms, nil
}

// Block records that user blocks messages from other. Idempotent.
func (s *Store) Block(ctx context.Context, user, other string) error {
	if err := s.rdb.SAdd(ctx, userBlocksKey(user), other).Err(); err != nil {
		return fmt.Errorf("directory: %s blocks %s: %w", user, other, err)
	}
	return nil
}

// Unblock removes a block. Idempotent.
func (s *Store) Unblock(ctx context.Context, user, other string) error {
	if err := s.rdb.SRem(ctx, userBlocksKey(user), other).Err(); err != nil {
		return fmt.Errorf("directory: %s unblocks %s: %w", user, other, err)
	}
	return nil
}

// Blocks reports whether user blocks messages from other.
func (s *Store) Blocks(ctx context.Context, user, other string) (bool, error) {
	ok, err := s.rdb.SIsMember(ctx, userBlocksKey(user), other).Result()
	if err != nil {
		return false, fmt.Errorf("directory: does %s block %s: %w", user, other, err)
	}
	return ok, nil
}

// Membership is one user in one room.
type Membership struct{ Room, User string }

// AddMembers adds many memberships in one pipelined round trip. Idempotent.
func (s *Store) AddMembers(ctx context.Context, ms []Membership) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range ms {
			p.SAdd(ctx, roomMembersKey(m.Room), m.User)
			p.SAdd(ctx, userRoomsKey(m.User), m.Room)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("directory: add %d memberships: %w", len(ms), err)
	}
	return nil
}

// Members returns the members of room.
func (s *Store) Members(ctx context.Context, room string) ([]string, error) {
	m, err := s.rdb.SMembers(ctx, roomMembersKey(room)).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: members of %s: %w", room, err)
	}
	return m, nil
}

// MemberCount returns the number of members of room.
func (s *Store) MemberCount(ctx context.Context, room string) (int, error) {
	n, err := s.rdb.SCard(ctx, roomMembersKey(room)).Result()
	if err != nil {
		return 0, fmt.Errorf("directory: members of %s: %w", room, err)
	}
	return int(n), nil
}

// MembersAmong returns those of users who are members of room.
func (s *Store) MembersAmong(ctx context.Context, room string, users ...string) ([]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	ms := make([]any, len(users))
	for i, u := range users {
		ms[i] = u
	}
	is, err := s.rdb.SMIsMember(ctx, roomMembersKey(room), ms...).Result()
	if err != nil {
		return nil, fmt.Errorf("directory: members of %s: %w", room, err)
	}
	var out []string
	for i, u := range users {
		if is[i] {
			out = append(out, u)
		}
	}
	return out, nil
}
