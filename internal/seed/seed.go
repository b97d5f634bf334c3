// Package seed loads a demo directory (users, rooms, memberships, blocks)
// from a JSON file into the Redis directory. It serves `laneim dev` when no
// MySQL is configured; production follows MySQL through the binlog worker.
package seed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
)

// Seed is the content of a seed file.
type Seed struct {
	Users []struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Disabled bool   `json:"disabled"`
	} `json:"users"`
	Rooms []struct {
		ID      string   `json:"id"`
		Name    string   `json:"name"`
		Kind    string   `json:"kind"`
		Members []string `json:"members"`
	} `json:"rooms"`
	Blocks []struct {
		User   string `json:"user"`
		Blocks string `json:"blocks"`
	} `json:"blocks"`
}

// Load reads and checks a seed file: every user and room id must follow
// the id rule (topics.ValidID).
func Load(path string) (*Seed, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	return Parse(path, b)
}

// Parse reads and checks the content of a seed file; path names it in
// errors.
func Parse(path string, b []byte) (*Seed, error) {
	var s Seed
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("seed: parse %s: %w", path, err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("seed: %s: %w", path, err)
	}
	return &s, nil
}

// validate checks that every id follows the id rule (topics.ValidID) and
// that memberships and blocks name users of the seed.
func (s *Seed) validate() error {
	users := make(map[string]bool)
	for _, u := range s.Users {
		if err := topics.CheckID("user", u.ID); err != nil {
			return err
		}
		users[u.ID] = true
	}
	for _, r := range s.Rooms {
		if err := topics.CheckID("room", r.ID); err != nil {
			return err
		}
		for _, m := range r.Members {
			if !users[m] {
				return fmt.Errorf("room %s: unknown member %q", r.ID, m)
			}
		}
	}
	for _, b := range s.Blocks {
		if !users[b.User] || !users[b.Blocks] {
			return fmt.Errorf("block %s->%s: unknown user", b.User, b.Blocks)
		}
	}
	return nil
}

// Writer is the part of the directory a seed writes.
type Writer interface {
	PutUser(ctx context.Context, u directory.User) error
	PutRoom(ctx context.Context, r directory.Room) error
	AddMember(ctx context.Context, room, user string) error
	Block(ctx context.Context, user, other string) error
}

// Apply writes the seed into the directory. It is idempotent.
func (s *Seed) Apply(ctx context.Context, w Writer) error {
	for _, u := range s.Users {
		if err := w.PutUser(ctx, directory.User{ID: u.ID, Name: u.Name, Disabled: u.Disabled}); err != nil {
			return fmt.Errorf("seed: user %s: %w", u.ID, err)
		}
	}
	for _, r := range s.Rooms {
		if err := w.PutRoom(ctx, directory.Room{ID: r.ID, Name: r.Name, Kind: r.Kind}); err != nil {
			return fmt.Errorf("seed: room %s: %w", r.ID, err)
		}
		for _, m := range r.Members {
			if err := w.AddMember(ctx, r.ID, m); err != nil {
				return fmt.Errorf("seed: room %s member %s: %w", r.ID, m, err)
			}
		}
	}
	for _, b := range s.Blocks {
		if err := w.Block(ctx, b.User, b.Blocks); err != nil {
			return fmt.Errorf("seed: block %s->%s: %w", b.User, b.Blocks, err)
		}
	}
	return nil
}
