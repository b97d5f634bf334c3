package api

import (
	"context"
	"errors"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/binlogsync"
)

// Directory is what the Directory service reads and changes: the Redis
// directory itself (*directory.Store) or the system of record
// (*MySQLDirectory).
type Directory interface {
	User(ctx context.Context, id string) (directory.User, bool, error)
	Room(ctx context.Context, id string) (directory.Room, bool, error)
	// SaveUser creates or replaces a user; an id that belonged to a
	// deleted user is refused with directory.ErrDeletedUser.
	SaveUser(ctx context.Context, u directory.User) error
	// RemoveUser deletes a user and keeps its id from being saved again;
	// removed is false when the user was not there (another call
	// deleted it first).
	RemoveUser(ctx context.Context, id string) (removed bool, err error)
	PutRoom(ctx context.Context, r directory.Room) error
	DeleteRoom(ctx context.Context, id string) error
	AddMember(ctx context.Context, room, user string) error
	RemoveMember(ctx context.Context, room, user string) error
	Members(ctx context.Context, room string) ([]string, error)
	Block(ctx context.Context, user, other string) error
	Unblock(ctx context.Context, user, other string) error
}

var _ Directory = (*directory.Store)(nil)

// DefaultRoomKind is the kind of a room put without one.
const DefaultRoomKind = "group"

// MaxNameBytes caps a user's or a room's display name, in bytes of
// UTF-8 (outside abuse check: 250 KB names were stored and sent on).
const MaxNameBytes = 256

// checkName refuses a display name over MaxNameBytes or not UTF-8.
func checkName(name string) error {
	if len(name) > MaxNameBytes {
		return status.Errorf(codes.InvalidArgument, "api: name of %d bytes, more than %d", len(name), MaxNameBytes)
	}
	if !utf8.ValidString(name) {
		return status.Error(codes.InvalidArgument, "api: name is not UTF-8")
	}
	return nil
}

// directory returns the Directory to change, or the status that refuses
// the call: FailedPrecondition when MySQL is the system of record and the
// gateway may not write it, Unavailable when it has no directory.
func (s *Server) directory() (Directory, error) {
	if s.dir != nil {
		return s.dir, nil
	}
	if s.cfg.DirectoryFollowsMySQL {
		return nil, status.Error(codes.FailedPrecondition,
			"api: the directory follows MySQL (--mysql): change users, rooms, memberships and blocks in MySQL, or give the gateway --api-mysql to write them there")
	}
	return nil, status.Error(codes.Unavailable, "api: this gateway has no directory")
}

// revokeUser tells presence that user was disabled or deleted, when the
// gateway wrote Redis itself.
func (s *Server) revokeUser(user, reason string) error {
	if !s.revoke {
		return nil
	}
	if err := binlogsync.RevokeUser(s.pub, user, reason); err != nil {
		return unavailable(err)
	}
	return nil
}

// revokeMemberships tells presence that users lost room, when the gateway
// wrote Redis itself.
func (s *Server) revokeMemberships(room string, users []string, reason string) error {
	if !s.revoke {
		return nil
	}
	if err := binlogsync.RevokeMemberships(s.pub, room, users, reason); err != nil {
		return unavailable(err)
	}
	return nil
}

// unavailable wraps a directory or pipeline failure.
func unavailable(err error) error { return status.Errorf(codes.Unavailable, "api: %v", err) }

// needUser returns NotFound unless user exists.
func needUser(ctx context.Context, d Directory, user string) error {
	_, ok, err := d.User(ctx, user)
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return status.Errorf(codes.NotFound, "api: unknown user %q", user)
	}
	return nil
}

// needRoom returns NotFound unless room exists.
func needRoom(ctx context.Context, d Directory, room string) error {
	_, ok, err := d.Room(ctx, room)
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return status.Errorf(codes.NotFound, "api: unknown room %q", room)
	}
	return nil
}

// PutUser creates a user or replaces its name and disabled flag; disabling
// closes the user's connections. The id of a deleted user is refused
// (FailedPrecondition): ids are not given again.
func (s *Server) PutUser(ctx context.Context, req *apipb.PutUserRequest) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	if err := checkIDs("user", req.GetUser()); err != nil {
		return nil, err
	}
	if err := checkName(req.GetName()); err != nil {
		return nil, err
	}
	u := directory.User{ID: req.GetUser(), Name: req.GetName(), Disabled: req.GetDisabled()}
	if err := d.SaveUser(ctx, u); err != nil {
		if errors.Is(err, directory.ErrDeletedUser) {
			return nil, status.Errorf(codes.FailedPrecondition,
				"api: user %q was deleted, and ids are not given again (a new account would see the old one's 1:1 conversations and log in with its tokens): choose another id; to keep an account out for a while, disable it instead", u.ID)
		}
		return nil, unavailable(err)
	}
	if u.Disabled {
		// After the directory has the flag, so a login racing with it is
		// refused or closed.
		if err := s.revokeUser(u.ID, binlogsync.ReasonDisabled); err != nil {
			return nil, err
		}
	}
	return &apipb.DirectoryReply{}, nil
}

// DeleteUser removes a user, its memberships and blocks, and closes its
// connections. Its id cannot be given to a user again.
func (s *Server) DeleteUser(ctx context.Context, req *apipb.DeleteUserRequest) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	if err := checkIDs("user", req.GetUser()); err != nil {
		return nil, err
	}
	if err := needUser(ctx, d, req.GetUser()); err != nil {
		return nil, err
	}
	removed, err := d.RemoveUser(ctx, req.GetUser())
	if err != nil {
		return nil, unavailable(err)
	}
	if !removed { // another call deleted it since the check above
		return nil, status.Errorf(codes.NotFound, "api: unknown user %q", req.GetUser())
	}
	if err := s.revokeUser(req.GetUser(), binlogsync.ReasonDeleted); err != nil {
		return nil, err
	}
	return &apipb.DirectoryReply{}, nil
}

// PutRoom creates a room or replaces its name and kind.
func (s *Server) PutRoom(ctx context.Context, req *apipb.PutRoomRequest) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	if err := checkIDs("room", req.GetRoom()); err != nil {
		return nil, err
	}
	if err := checkName(req.GetName()); err != nil {
		return nil, err
	}
	kind := req.GetKind()
	if kind == "" {
		kind = DefaultRoomKind
	}
	if err := checkIDs("room kind", kind); err != nil {
		return nil, err
	}
	if err := d.PutRoom(ctx, directory.Room{ID: req.GetRoom(), Name: req.GetName(), Kind: kind}); err != nil {
		return nil, unavailable(err)
	}
	return &apipb.DirectoryReply{}, nil
}

// DeleteRoom removes a room and its memberships; its members' connections
// leave it.
func (s *Server) DeleteRoom(ctx context.Context, req *apipb.DeleteRoomRequest) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	room := req.GetRoom()
	if err := checkIDs("room", room); err != nil {
		return nil, err
	}
	if err := needRoom(ctx, d, room); err != nil {
		return nil, err
	}
	// As binlog sync does: the room goes before its members are told, so
	// a join racing with the revocation finds no room.
	var members []string
	if s.revoke {
		if members, err = d.Members(ctx, room); err != nil {
			return nil, unavailable(err)
		}
	}
	if err := d.DeleteRoom(ctx, room); err != nil {
		return nil, unavailable(err)
	}
	if err := s.revokeMemberships(room, members, binlogsync.ReasonRoomDeleted); err != nil {
		return nil, err
	}
	return &apipb.DirectoryReply{}, nil
}

// AddMember makes a user a member of a room; both must exist.
func (s *Server) AddMember(ctx context.Context, req *apipb.MemberRequest) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	if err := checkMember(req); err != nil {
		return nil, err
	}
	if err := needRoom(ctx, d, req.GetRoom()); err != nil {
		return nil, err
	}
	if err := needUser(ctx, d, req.GetUser()); err != nil {
		return nil, err
	}
	if err := d.AddMember(ctx, req.GetRoom(), req.GetUser()); err != nil {
		return nil, unavailable(err)
	}
	return &apipb.DirectoryReply{}, nil
}

// RemoveMember ends a membership and takes the user's connections out of
// the room; the room must exist.
func (s *Server) RemoveMember(ctx context.Context, req *apipb.MemberRequest) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	if err := checkMember(req); err != nil {
		return nil, err
	}
	if err := needRoom(ctx, d, req.GetRoom()); err != nil {
		return nil, err
	}
	if err := d.RemoveMember(ctx, req.GetRoom(), req.GetUser()); err != nil {
		return nil, unavailable(err)
	}
	if err := s.revokeMemberships(req.GetRoom(), []string{req.GetUser()}, binlogsync.ReasonMemberRemoved); err != nil {
		return nil, err
	}
	return &apipb.DirectoryReply{}, nil
}

func checkMember(req *apipb.MemberRequest) error {
	if err := checkIDs("room", req.GetRoom()); err != nil {
		return err
	}
	return checkIDs("user", req.GetUser())
}

// Block records that a user refuses 1:1 messages from another.
func (s *Server) Block(ctx context.Context, req *apipb.BlockRequest) (*apipb.DirectoryReply, error) {
	return s.block(ctx, req, true)
}

// Unblock removes a block.
func (s *Server) Unblock(ctx context.Context, req *apipb.BlockRequest) (*apipb.DirectoryReply, error) {
	return s.block(ctx, req, false)
}

func (s *Server) block(ctx context.Context, req *apipb.BlockRequest, block bool) (*apipb.DirectoryReply, error) {
	d, err := s.directory()
	if err != nil {
		return nil, err
	}
	if err := checkIDs("user", req.GetUser()); err != nil {
		return nil, err
	}
	if err := checkIDs("blocked user", req.GetBlocked()); err != nil {
		return nil, err
	}
	if block && req.GetBlocked() == req.GetUser() {
		return nil, status.Error(codes.InvalidArgument, "a user cannot block themselves")
	}
	if err := needUser(ctx, d, req.GetUser()); err != nil {
		return nil, err
	}
	if block {
		if err := needUser(ctx, d, req.GetBlocked()); err != nil {
			return nil, err
		}
	}
	change := d.Unblock
	if block {
		change = d.Block
	}
	if err := change(ctx, req.GetUser(), req.GetBlocked()); err != nil {
		return nil, unavailable(err)
	}
	return &apipb.DirectoryReply{}, nil
}
