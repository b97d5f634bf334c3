// Package binlogsync is the worker that keeps laneIM's Redis directory
// current with the system of record, MySQL or MariaDB: users, rooms,
// memberships and blocks. It reads the row-based binary log with
// go-mysql's canal, so no hot path ever queries MySQL.
//
// It writes only the directory, never presence. When a membership is
// removed or a room deleted it publishes MEMBERSHIP_REVOKED, and when a
// user is disabled or deleted USER_REVOKED, on topics.SessionEvents (keyed
// by user, so ordered with that user's other session events); the presence
// worker applies them as it applies a client's own leave or close.
//
// On first start it notes the current binlog position, copies the four
// tables, and then streams row events from that position: events that the
// copy already reflects are applied again, which is harmless because every
// change is idempotent. After each transaction it saves the position in
// Redis, after the rows, so a restart resumes where it left off and a crash
// in between only repeats work. It reconnects after a lost connection. If
// the saved position no longer exists on the server (binlogs purged), it
// stops with an error that says how to recover: reset the position and let
// it take a new snapshot.
package binlogsync

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/go-mysql-org/go-mysql/canal"
	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/laneim/laneim/wiring/directory"
)

// Schema is the DDL of the tables the worker follows (idempotent).
//
//go:embed schema.sql
var Schema string

// Config says where the system of record is and how to follow it.
type Config struct {
	// Addr is host:port of the MySQL or MariaDB server.
	Addr     string
	User     string
	Password string
	// Database holds the users, rooms, room_members and blocks tables.
	Database string
	// Flavor is "mysql" or "mariadb" (default).
	Flavor string
	// ServerID identifies the worker as a replica; it must differ from
	// the server's and from every other replica's (default 1001).
	ServerID uint32
	// PositionKey is the Redis key of the saved position.
	PositionKey string
	// RetryMin and RetryMax bound the backoff between reconnections (1s, 30s).
	RetryMin, RetryMax time.Duration
}

// ParseDSN reads "mysql://user:password@host:port/database?flavor=mariadb&server_id=1001".
// Its errors never contain the password: they show the DSN as RedactDSN
// does.
func ParseDSN(dsn string) (Config, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "mysql" && u.Scheme != "mariadb") || u.Host == "" {
		return Config{}, fmt.Errorf("binlogsync: DSN %s: want mysql://user:password@host:port/database", RedactDSN(dsn))
	}
	cfg := Config{Addr: u.Host, User: u.User.Username(), Database: strings.TrimPrefix(u.Path, "/"), Flavor: u.Scheme}
	cfg.Password, _ = u.User.Password()
	q := u.Query()
	if f := q.Get("flavor"); f != "" {
		cfg.Flavor = f
	}
	if s := q.Get("server_id"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return Config{}, fmt.Errorf("binlogsync: DSN server_id %q: %w", s, err)
		}
		cfg.ServerID = uint32(n)
	}
	return cfg, cfg.Validate()
}

// RedactDSN returns dsn fit for an error or a log line: the password of a
// URL replaced by "xxxxx" (url.URL.Redacted), and its query hidden when
// a parameter looks like a credential. A DSN that does not parse
// as a URL is not shown beyond its scheme, since where its password is
// cannot be told.
func RedactDSN(dsn string) string {
	if dsn == "" {
		return `""`
	}
	u, err := url.Parse(dsn)
	if err == nil && u.Opaque == "" {
		if q := u.Query(); len(q) > 0 {
			for k := range q {
				if k := strings.ToLower(k); strings.Contains(k, "pass") || strings.Contains(k, "secret") || strings.Contains(k, "token") || strings.Contains(k, "key") {
					u.RawQuery = "…"
					break
				}
			}
		}
		return strconv.Quote(u.Redacted())
	}
	if i := strings.Index(dsn, "://"); i > 0 && i < 16 && !strings.ContainsAny(dsn[:i], ":@/") {
		return strconv.Quote(dsn[:i]+"://…") + " (malformed; not shown, it may hold a password)"
	}
	return "(malformed; not shown, it may hold a password)"
}

func (c *Config) setDefaults() {
	if c.Flavor == "" {
		c.Flavor = mysql.MariaDBFlavor
	}
	if c.ServerID == 0 {
		c.ServerID = 1001
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 30 * time.Second
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("binlogsync: no MySQL address (flag --mysql)")
	case c.Database == "":
		return errors.New("binlogsync: no database in the MySQL DSN")
	case c.Flavor != "" && c.Flavor != mysql.MySQLFlavor && c.Flavor != mysql.MariaDBFlavor:
		return fmt.Errorf("binlogsync: flavor %q: want mysql or mariadb", c.Flavor)
	}
	return nil
}

// ErrPositionGone means the saved binlog position is no longer on the server.
var ErrPositionGone = errors.New("binlogsync: saved binlog position no longer exists on the server")

// Stats are the worker's counters.
type Stats struct {
	Snapshots   int64
	RowsApplied int64
	Reconnects  int64
	// RowsSkipped counts rows not applied because an id in them breaks
	// the id rule (topics.ValidID); RowsApplied counts them too.
	RowsSkipped int64
}

// Syncer follows the system of record. Run it once; it is safe to read
// Stats and Position from other goroutines.
type Syncer struct {
	cfg       Config
	apply     applier
	positions *Positions
	logger    *slog.Logger

	snapshots, rows, reconnects atomic.Int64
}

// New returns a Syncer writing into dir, saving positions with positions
// and publishing revocations (memberships or users the system of record
// took away) on topics.SessionEvents with pub.
func New(cfg Config, dir Directory, positions *Positions, pub message.Publisher, logger *slog.Logger) (*Syncer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Syncer{cfg: cfg, apply: applier{dir: dir, pub: pub, logger: logger}, positions: positions, logger: logger}, nil
}

// Stats returns the counters.
func (s *Syncer) Stats() Stats {
	return Stats{Snapshots: s.snapshots.Load(), RowsApplied: s.rows.Load(), Reconnects: s.reconnects.Load(), RowsSkipped: s.apply.skipped.Load()}
}

// Run follows the binlog until ctx ends (then it returns nil) or the
// saved position is gone (ErrPositionGone). Other failures are retried
// with backoff.
func (s *Syncer) Run(ctx context.Context) error {
	backoff := s.cfg.RetryMin
	for {
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrPositionGone) {
			return err
		}
		s.reconnects.Add(1)
		s.logger.Warn("binlog sync interrupted, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.cfg.RetryMax)
	}
}

func (s *Syncer) runOnce(ctx context.Context) error {
	pos, ok, err := s.positions.Load(ctx)
	if err != nil {
		return err
	}
	if !ok {
		if pos, err = s.snapshot(ctx); err != nil {
			return err
		}
		if err := s.positions.Save(ctx, pos); err != nil {
			return err
		}
	}
	return s.stream(ctx, pos)
}

func (s *Syncer) connect() (*client.Conn, error) {
	c, err := client.Connect(s.cfg.Addr, s.cfg.User, s.cfg.Password, s.cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("binlogsync: connect to %s: %w", s.cfg.Addr, err)
	}
	return c, nil
}

// snapshot copies the tables into the directory and returns the binlog
// position noted before the copy.
func (s *Syncer) snapshot(ctx context.Context) (mysql.Position, error) {
	s.snapshots.Add(1)
	c, err := s.connect()
	if err != nil {
		return mysql.Position{}, err
	}
	defer c.Close()
	res, err := c.Execute("SHOW MASTER STATUS")
	if err != nil {
		return mysql.Position{}, fmt.Errorf("binlogsync: binlog position (is log_bin on, and does the user have BINLOG MONITOR or REPLICATION CLIENT?): %w", err)
	}
	if res.RowNumber() == 0 {
		return mysql.Position{}, errors.New("binlogsync: the server has no binary log: enable log_bin with binlog_format=ROW")
	}
	name, _ := res.GetString(0, 0)
	off, _ := res.GetUint(0, 1)
	pos := mysql.Position{Name: name, Pos: uint32(off)}
	s.logger.Info("snapshot of the system of record", "position", pos)

	copyTable := func(table, query string, each func(row) error) error {
		r, err := c.Execute(query)
		if err != nil {
			return fmt.Errorf("binlogsync: snapshot of %s: %w", table, err)
		}
		cols := map[string]int{}
		for i, f := range r.Fields {
			cols[string(f.Name)] = i
		}
		for _, vals := range r.Values {
			if err := ctx.Err(); err != nil {
				return err
			}
			rv := make([]any, len(vals))
			for i, v := range vals {
				rv[i] = v.Value()
			}
			if err := each(row{cols: cols, vals: rv}); err != nil {
				return fmt.Errorf("binlogsync: snapshot of %s: %w", table, err)
			}
			s.rows.Add(1)
		}
		return nil
	}
	upsert := func(table string) func(row) error {
		return func(r row) error { return s.apply.upsert(ctx, table, r) }
	}
	if err := copyTable(tableUsers, "SELECT id, name, disabled FROM users", upsert(tableUsers)); err != nil {
		return pos, err
	}
	if err := copyTable(tableRooms, "SELECT id, name, kind FROM rooms", upsert(tableRooms)); err != nil {
		return pos, err
	}
	var batch []directory.Membership
	err = copyTable(tableMembers, "SELECT room_id, user_id FROM room_members", func(r row) error {
		if !s.apply.valid(tableMembers, r) {
			return nil
		}
		batch = append(batch, directory.Membership{Room: r.str("room_id"), User: r.str("user_id")})
		if len(batch) < 1000 {
			return nil
		}
		err := s.apply.dir.AddMembers(ctx, batch)
		batch = batch[:0]
		return err
	})
	if err != nil {
		return pos, err
	}
	if err := s.apply.dir.AddMembers(ctx, batch); err != nil {
		return pos, err
	}
	if err := copyTable(tableBlocks, "SELECT user_id, blocked_id FROM blocks", upsert(tableBlocks)); err != nil {
		return pos, err
	}
	return pos, nil
}

// stream applies row events from pos until ctx ends or canal fails.
func (s *Syncer) stream(ctx context.Context, pos mysql.Position) error {
	cc := canal.NewDefaultConfig()
	cc.Addr, cc.User, cc.Password = s.cfg.Addr, s.cfg.User, s.cfg.Password
	cc.Flavor, cc.ServerID = s.cfg.Flavor, s.cfg.ServerID
	cc.Dump.ExecutionPath = "" // no mysqldump: the snapshot is ours
	cc.IncludeTableRegex = []string{"^" + regexp.QuoteMeta(s.cfg.Database) + `\.(users|rooms|room_members|blocks)$`}
	cc.MaxReconnectAttempts = 3
	cc.Logger = s.logger.With("component", "canal")
	c, err := canal.NewCanal(cc)
	if err != nil {
		return fmt.Errorf("binlogsync: canal: %w", err)
	}
	h := &events{s: s, ctx: ctx}
	c.SetEventHandler(h)
	done := make(chan error, 1)
	go func() { done <- c.RunFrom(pos) }()
	s.logger.Info("following the binlog", "from", pos)
	select {
	case <-ctx.Done():
		c.Close()
		<-done
		return ctx.Err()
	case err := <-done:
		c.Close()
		if isPositionGone(err) {
			return fmt.Errorf("%w: position %s (binlogs purged?). Recover by resetting the position "+
				"(`laneim reset-position --redis ...`, or DEL %s in Redis) to take a new snapshot: %v",
				ErrPositionGone, pos, s.positions.key, err)
		}
		if err == nil {
			err = errors.New("binlogsync: canal stopped")
		}
		return err
	}
}

// isPositionGone reports whether the server refused to send its binlog
// from our position (ER_MASTER_FATAL_ERROR_READING_BINLOG, 1236: the file
// was purged, or never existed). Canal hands the server's error packet
// up as a *mysql.MyError wrapped by pingcap/errors.Trace, which unwraps,
// so the code is always there to read: no guess on the message text.
func isPositionGone(err error) bool {
	var me *mysql.MyError
	return errors.As(err, &me) && me.Code == mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG
}

// events is canal's event handler.
type events struct {
	canal.DummyEventHandler
	s   *Syncer
	ctx context.Context
}

func (h *events) String() string { return "laneim-binlogsync" }

// OnRow applies a row event. An error stops canal; Run resumes from the
// last saved position, so the event is applied again.
func (h *events) OnRow(e *canal.RowsEvent) error {
	cols := make(map[string]int, len(e.Table.Columns))
	for i, c := range e.Table.Columns {
		cols[c.Name] = i
	}
	table := e.Table.Name
	switch e.Action {
	case canal.InsertAction:
		if table == tableMembers {
			// A multi-row insert of memberships goes in one round trip.
			ms := make([]directory.Membership, len(e.Rows))
			for i, vals := range e.Rows {
				r := row{cols, vals}
				ms[i] = directory.Membership{Room: r.str("room_id"), User: r.str("user_id")}
			}
			if err := h.s.apply.dir.AddMembers(h.ctx, h.s.apply.validMemberships(ms)); err != nil {
				return err
			}
			break
		}
		for _, vals := range e.Rows {
			if err := h.s.apply.upsert(h.ctx, table, row{cols, vals}); err != nil {
				return err
			}
		}
	case canal.DeleteAction:
		for _, vals := range e.Rows {
			if err := h.s.apply.remove(h.ctx, table, row{cols, vals}); err != nil {
				return err
			}
		}
	case canal.UpdateAction:
		for i := 0; i+1 < len(e.Rows); i += 2 {
			before, after := row{cols, e.Rows[i]}, row{cols, e.Rows[i+1]}
			if keyOf(table, before) != keyOf(table, after) {
				if err := h.s.apply.remove(h.ctx, table, before); err != nil {
					return err
				}
			}
			if err := h.s.apply.upsert(h.ctx, table, after); err != nil {
				return err
			}
		}
	}
	h.s.rows.Add(int64(len(e.Rows)))
	return nil
}

// OnPosSynced saves the position after the rows it covers.
func (h *events) OnPosSynced(_ *replication.EventHeader, pos mysql.Position, _ mysql.GTIDSet, _ bool) error {
	return h.s.positions.Save(h.ctx, pos)
}

// OnDDL logs schema changes; they are not fatal.
func (h *events) OnDDL(_ *replication.EventHeader, _ mysql.Position, q *replication.QueryEvent) error {
	h.s.logger.Info("schema change in the system of record", "schema", string(q.Schema), "query", string(q.Query))
	return nil
}
