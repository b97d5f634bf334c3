package binlogsync

import (
	"fmt"
	"strings"
)

// Statements returns Schema as separate statements, comments removed.
func Statements() []string {
	var lines []string
	for _, l := range strings.Split(Schema, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	var out []string
	for _, s := range strings.Split(strings.Join(lines, "\n"), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Migrate creates the tables the worker follows, if missing. It needs a
// user allowed to CREATE in the database (not the sync user).
func Migrate(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s := &Syncer{cfg: cfg}
	c, err := s.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	for _, stmt := range Statements() {
		if _, err := c.Execute(stmt); err != nil {
			return fmt.Errorf("binlogsync: migrate: %w", err)
		}
	}
	return nil
}
