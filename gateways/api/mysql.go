package api

import (
	"context"
	"fmt"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/binlogsync"
)

// mysqlTimeout bounds the connection and each read or write of a MySQL
// directory change.
const mysqlTimeout = 10 * time.Second

// MySQLDirectory is a Directory on the system of record: the tables of
// binlogsync.Schema (users, rooms, room_members, blocks, deleted_users)
// in MySQL or MariaDB. Its changes reach the Redis directory through
// binlog sync, which also revokes what they take away. It connects once per call:
// directory changes are rare. It is safe for concurrent use.
type MySQLDirectory struct {
	cfg binlogsync.Config
}

var _ Directory = (*MySQLDirectory)(nil)

// NewMySQLDirectory returns a MySQLDirectory writing as the user of dsn
// ("mysql://user:password@host:port/database"), who needs SELECT, INSERT,
// UPDATE and DELETE on the four tables binlog sync follows, and SELECT and
// INSERT on deleted_users. Errors never show the password.
func NewMySQLDirectory(dsn string) (*MySQLDirectory, error) {
	cfg, err := binlogsync.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("api: --api-mysql: %w", err)
	}
	return &MySQLDirectory{cfg: cfg}, nil
}

// do runs fn on a fresh connection.
func (m *MySQLDirectory) do(ctx context.Context, fn func(c *client.Conn) error) error {
	c, err := client.ConnectWithContext(ctx, m.cfg.Addr, m.cfg.User, m.cfg.Password, m.cfg.Database, mysqlTimeout,
		func(c *client.Conn) error {
			c.ReadTimeout, c.WriteTimeout = mysqlTimeout, mysqlTimeout
			return nil
		})
	if err != nil {
		return fmt.Errorf("mysql %s: connect: %w", m.cfg.Addr, err)
	}
	defer c.Close()
	return fn(c)
}

// exec runs statements, in one transaction if there are several.
func (m *MySQLDirectory) exec(ctx context.Context, what string, stmts ...stmt) error {
	run := func(c *client.Conn) error {
		for _, s := range stmts {
			if _, err := c.Execute(s.sql, s.args...); err != nil {
				return fmt.Errorf("mysql: %s: %w", what, err)
			}
		}
		return nil
	}
	if len(stmts) == 1 {
		return m.do(ctx, run)
	}
	return m.tx(ctx, what, run)
}

// tx runs fn in one transaction on a fresh connection: rolled back if fn
// fails, committed otherwise.
func (m *MySQLDirectory) tx(ctx context.Context, what string, fn func(c *client.Conn) error) error {
	return m.do(ctx, func(c *client.Conn) error {
		if err := c.Begin(); err != nil {
			return fmt.Errorf("mysql: %s: %w", what, err)
		}
		if err := fn(c); err != nil {
			_ = c.Rollback()
			return err
		}
		if err := c.Commit(); err != nil {
			return fmt.Errorf("mysql: %s: %w", what, err)
		}
		return nil
	})
}

type stmt struct {
	sql  string
	args []any
}

// row returns the first row's string columns of a query; ok is false when
// it has none.
func (m *MySQLDirectory) row(ctx context.Context, what, query string, args ...any) (cols []string, ok bool, err error) {
	err = m.do(ctx, func(c *client.Conn) error {
		res, err := c.Execute(query, args...)
		if err != nil {
			return fmt.Errorf("mysql: %s: %w", what, err)
		}
		defer res.Close()
		if res.RowNumber() == 0 {
			return nil
		}
		ok = true
		for i := range res.ColumnNumber() {
			s, err := res.GetString(0, i)
			if err != nil {
				return fmt.Errorf("mysql: %s: %w", what, err)
			}
			cols = append(cols, s)
		}
		return nil
	})
	return cols, ok, err
}

// User reads a user from MySQL.
func (m *MySQLDirectory) User(ctx context.Context, id string) (directory.User, bool, error) {
	cols, ok, err := m.row(ctx, "user "+id, "SELECT name, CAST(disabled AS CHAR) FROM users WHERE id = ?", id)
	if err != nil || !ok {
		return directory.User{}, false, err
	}
	return directory.User{ID: id, Name: cols[0], Disabled: cols[1] != "0"}, true, nil
}

// Room reads a room from MySQL.
func (m *MySQLDirectory) Room(ctx context.Context, id string) (directory.Room, bool, error) {
	cols, ok, err := m.row(ctx, "room "+id, "SELECT name, kind FROM rooms WHERE id = ?", id)
	if err != nil || !ok {
		return directory.Room{}, false, err
	}
	return directory.Room{ID: id, Name: cols[0], Kind: cols[1]}, true, nil
}

// SaveUser inserts or updates a user, unless its id is in deleted_users
// (directory.ErrDeletedUser).
func (m *MySQLDirectory) SaveUser(ctx context.Context, u directory.User) error {
	disabled := 0
	if u.Disabled {
		disabled = 1
	}
	what := "put user " + u.ID
	return m.tx(ctx, what, func(c *client.Conn) error {
		// A shared lock on the id's entry, or on the gap where it would
		// be: a RemoveUser inserting it waits for this transaction, and
		// this one sees a committed deletion.
		res, err := c.Execute("SELECT id FROM deleted_users WHERE id = ? LOCK IN SHARE MODE", u.ID)
		if err != nil {
			return fmt.Errorf("mysql: %s: %w (is the schema current? run laneim migrate)", what, err)
		}
		deleted := res.RowNumber() > 0
		res.Close()
		if deleted {
			return fmt.Errorf("mysql: %s: %w", what, directory.ErrDeletedUser)
		}
		if _, err := c.Execute("INSERT INTO users (id, name, disabled) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name), disabled = VALUES(disabled)",
			u.ID, u.Name, disabled); err != nil {
			return fmt.Errorf("mysql: %s: %w", what, err)
		}
		return nil
	})
}

// RemoveUser deletes a user with its memberships and blocks, and records
// its id in deleted_users; removed is false when no user row was deleted
// (of concurrent calls, the row lock lets one delete it).
func (m *MySQLDirectory) RemoveUser(ctx context.Context, id string) (removed bool, err error) {
	what := "delete user " + id
	err = m.tx(ctx, what, func(c *client.Conn) error {
		if _, err := c.Execute("INSERT IGNORE INTO deleted_users (id) VALUES (?)", id); err != nil {
			return fmt.Errorf("mysql: %s: %w (is the schema current? run laneim migrate)", what, err)
		}
		res, err := c.Execute("DELETE FROM users WHERE id = ?", id)
		if err != nil {
			return fmt.Errorf("mysql: %s: %w", what, err)
		}
		removed = res.AffectedRows > 0
		res.Close()
		for _, q := range []string{"DELETE FROM room_members WHERE user_id = ?", "DELETE FROM blocks WHERE user_id = ?"} {
			if _, err := c.Execute(q, id); err != nil {
				return fmt.Errorf("mysql: %s: %w", what, err)
			}
		}
		return nil
	})
	return removed && err == nil, err
}

// PutRoom inserts or updates a room.
func (m *MySQLDirectory) PutRoom(ctx context.Context, r directory.Room) error {
	return m.exec(ctx, "put room "+r.ID, stmt{
		"INSERT INTO rooms (id, name, kind) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name), kind = VALUES(kind)",
		[]any{r.ID, r.Name, r.Kind},
	})
}

// DeleteRoom deletes a room, then its memberships (binlog sync applies
// them in that order, so a join racing with them finds no room).
func (m *MySQLDirectory) DeleteRoom(ctx context.Context, id string) error {
	return m.exec(ctx, "delete room "+id,
		stmt{"DELETE FROM rooms WHERE id = ?", []any{id}},
		stmt{"DELETE FROM room_members WHERE room_id = ?", []any{id}},
	)
}

// AddMember inserts a membership (idempotent).
func (m *MySQLDirectory) AddMember(ctx context.Context, room, user string) error {
	return m.exec(ctx, "add "+user+" to "+room, stmt{
		"INSERT IGNORE INTO room_members (room_id, user_id) VALUES (?, ?)", []any{room, user},
	})
}

// RemoveMember deletes a membership (idempotent).
func (m *MySQLDirectory) RemoveMember(ctx context.Context, room, user string) error {
	return m.exec(ctx, "remove "+user+" from "+room, stmt{
		"DELETE FROM room_members WHERE room_id = ? AND user_id = ?", []any{room, user},
	})
}

// Members lists a room's members.
func (m *MySQLDirectory) Members(ctx context.Context, room string) ([]string, error) {
	var out []string
	err := m.do(ctx, func(c *client.Conn) error {
		res, err := c.Execute("SELECT user_id FROM room_members WHERE room_id = ?", room)
		if err != nil {
			return fmt.Errorf("mysql: members of %s: %w", room, err)
		}
		defer res.Close()
		for i := range res.RowNumber() {
			u, err := res.GetString(i, 0)
			if err != nil {
				return fmt.Errorf("mysql: members of %s: %w", room, err)
			}
			out = append(out, u)
		}
		return nil
	})
	return out, err
}

// Block inserts a block (idempotent).
func (m *MySQLDirectory) Block(ctx context.Context, user, other string) error {
	return m.exec(ctx, user+" blocks "+other, stmt{
		"INSERT IGNORE INTO blocks (user_id, blocked_id) VALUES (?, ?)", []any{user, other},
	})
}

// Unblock deletes a block (idempotent).
func (m *MySQLDirectory) Unblock(ctx context.Context, user, other string) error {
	return m.exec(ctx, user+" unblocks "+other, stmt{
		"DELETE FROM blocks WHERE user_id = ? AND blocked_id = ?", []any{user, other},
	})
}
