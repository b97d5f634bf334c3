package msgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v2"
	"github.com/scylladb/gocqlx/v2/qb"

	"github.com/laneim/laneim/proto/clientpb"
)

// BucketSize is how many consecutive sequence numbers of a conversation
// share a Scylla partition, so a hot room makes many bounded partitions
// instead of one unbounded one.
const BucketSize = 10_000

// bucketOf returns the partition bucket of seq.
func bucketOf(seq uint64) int64 { return int64(seq / BucketSize) }

// ScyllaConfig configures the Scylla/Cassandra store.
type ScyllaConfig struct {
	// Hosts are contact points, host:port.
	Hosts []string
	// Keyspace holds the tables (default "laneim").
	Keyspace string
	// Consistency of reads and writes (default LOCAL_QUORUM).
	Consistency string
	// ReplicationFactor used when Migrate creates the keyspace (default 3).
	ReplicationFactor int
	// Retention per kind of conversation, applied as a write TTL.
	Retention Retention
	// Timeout per query (default 5s).
	Timeout time.Duration
}

func (c *ScyllaConfig) setDefaults() {
	if c.Keyspace == "" {
		c.Keyspace = "laneim"
	}
	if c.Consistency == "" {
		c.Consistency = "LOCAL_QUORUM"
	}
	if c.ReplicationFactor <= 0 {
		c.ReplicationFactor = 3
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
}

// Validate reports a configuration that cannot work.
func (c ScyllaConfig) Validate() error {
	if len(c.Hosts) == 0 {
		return errors.New("history: no Scylla hosts")
	}
	if _, err := gocql.ParseConsistencyWrapper(c.Consistency); c.Consistency != "" && err != nil {
		return fmt.Errorf("history: consistency %q: %w", c.Consistency, err)
	}
	return nil
}

// ScyllaSchema returns the CQL that creates the keyspace and tables.
// Messages are partitioned by (conversation, bucket) and clustered by seq.
func ScyllaSchema(keyspace string, replicationFactor int) []string {
	return []string{
		fmt.Sprintf(`CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': %d}`, keyspace, replicationFactor),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.messages (
  conversation text,
  bucket bigint,
  seq bigint,
  id text,
  sender text,
  body blob,
  content_type text,
  server_time_ms bigint,
  client_msg_id text,
  edits bigint,
  recalls bigint,
  mentions list<text>,
  PRIMARY KEY ((conversation, bucket), seq)
) WITH CLUSTERING ORDER BY (seq ASC)`, keyspace),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.conversations (
  conversation text PRIMARY KEY,
  latest bigint
)`, keyspace),
		// Edits and recalls by the message they change (target), in the
		// target's bucket.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.changes (
  conversation text,
  bucket bigint,
  target bigint,
  seq bigint,
  PRIMARY KEY ((conversation, bucket), target, seq)
)`, keyspace),
		// Read positions, one partition per user. Written with the
		// position as the write timestamp, so the highest wins whatever
		// the order writes arrive in.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.reads (
  reader text,
  conversation text,
  seq bigint,
  PRIMARY KEY (reader, conversation)
)`, keyspace),
	}
}

// scyllaUpgrades adds the columns a messages table made before them
// lacks; "already there" errors are expected and ignored.
func scyllaUpgrades(keyspace string) []string {
	return []string{
		fmt.Sprintf(`ALTER TABLE %s.messages ADD edits bigint`, keyspace),
		fmt.Sprintf(`ALTER TABLE %s.messages ADD recalls bigint`, keyspace),
		fmt.Sprintf(`ALTER TABLE %s.messages ADD mentions list<text>`, keyspace),
	}
}

// columnExists tells an ALTER TABLE ADD error saying the column is there
// already (Scylla and Cassandra word it differently).
func columnExists(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "conflicts with an existing column") || strings.Contains(msg, "already exist")
}

// Statements are the store's queries, built once with gocqlx's builder.
type scyllaStatements struct {
	insert, latest, after, before, readLatest, allLatest, insertChange, changes, one, saveRead, reads                                        string
	insertNames, latestNames, afterNames, beforeNames, readLatestNames, insertChangeNames, changesNames, oneNames, saveReadNames, readsNames []string
}

var messageColumns = []string{"conversation", "bucket", "seq", "id", "sender", "body", "content_type", "server_time_ms", "client_msg_id", "edits", "recalls", "mentions"}

func buildStatements(keyspace string) scyllaStatements {
	var s scyllaStatements
	// IF NOT EXISTS: a (conversation, seq) keeps its first message, and a
	// different one is reported (Store.Append).
	s.insert, s.insertNames = qb.Insert(keyspace + ".messages").Columns(messageColumns...).Unique().TTLNamed("ttl").ToCql()
	s.latest, s.latestNames = qb.Update(keyspace + ".conversations").Set("latest").Where(qb.Eq("conversation")).ToCql()
	s.readLatest, s.readLatestNames = qb.Select(keyspace + ".conversations").Columns("latest").Where(qb.Eq("conversation")).ToCql()
	s.allLatest, _ = qb.Select(keyspace+".conversations").Columns("conversation", "latest").ToCql()
	s.after, s.afterNames = qb.Select(keyspace+".messages").Columns(messageColumns...).
		Where(qb.Eq("conversation"), qb.Eq("bucket"), qb.Gt("seq")).OrderBy("seq", qb.ASC).LimitNamed("lim").ToCql()
	s.before, s.beforeNames = qb.Select(keyspace+".messages").Columns(messageColumns...).
		Where(qb.Eq("conversation"), qb.Eq("bucket"), qb.Lt("seq")).OrderBy("seq", qb.DESC).LimitNamed("lim").ToCql()
	s.insertChange, s.insertChangeNames = qb.Insert(keyspace+".changes").Columns("conversation", "bucket", "target", "seq").TTLNamed("ttl").ToCql()
	s.changes, s.changesNames = qb.Select(keyspace+".changes").Columns("target", "seq").
		Where(qb.Eq("conversation"), qb.Eq("bucket"), qb.GtOrEqNamed("target", "from"), qb.LtOrEqNamed("target", "to")).ToCql()
	s.one, s.oneNames = qb.Select(keyspace+".messages").Columns(messageColumns...).
		Where(qb.Eq("conversation"), qb.Eq("bucket"), qb.Eq("seq")).ToCql()
	s.saveRead, s.saveReadNames = qb.Update(keyspace+".reads").TimestampNamed("ts").Set("seq").Where(qb.Eq("reader"), qb.Eq("conversation")).ToCql()
	s.reads, s.readsNames = qb.Select(keyspace+".reads").Columns("conversation", "seq").Where(qb.Eq("reader"), qb.In("conversation")).ToCql()
	return s
}

// row is a message as stored.
type scyllaRow struct {
	Conversation string
	Bucket       int64
	Seq          int64
	ID           string
	Sender       string
	Body         []byte
	ContentType  string
	ServerTimeMs int64
	ClientMsgID  string
	Edits        int64
	Recalls      int64
	Mentions     []string
}

func toRow(m *clientpb.Message) scyllaRow {
	return scyllaRow{
		Conversation: m.GetConversation(), Bucket: bucketOf(m.GetSeq()), Seq: int64(m.GetSeq()), ID: m.GetId(), Sender: m.GetSender(),
		Body: m.GetBody(), ContentType: m.GetContentType(), ServerTimeMs: m.GetServerTimeUnixMs(), ClientMsgID: m.GetClientMsgId(),
		Edits: int64(m.GetEdits()), Recalls: int64(m.GetRecalls()), Mentions: m.GetMentions(),
	}
}

func (r scyllaRow) message() *clientpb.Message {
	return &clientpb.Message{
		Id: r.ID, Conversation: r.Conversation, Seq: uint64(r.Seq), Sender: r.Sender, Body: r.Body,
		ContentType: r.ContentType, ServerTimeUnixMs: r.ServerTimeMs, ClientMsgId: r.ClientMsgID,
		Edits: uint64(r.Edits), Recalls: uint64(r.Recalls), Mentions: r.Mentions,
	}
}

// Scylla is a Store on Scylla or Cassandra. Writing a (conversation, seq)
// again overwrites it with the same message: routing gives a seq one
// message, so repeated deliveries store it once.
type Scylla struct {
	cfg     ScyllaConfig
	session gocqlx.Session
	stmt    scyllaStatements
}

var _ Store = (*Scylla)(nil)

// OpenScylla connects, creates the schema if missing and returns the store.
func OpenScylla(cfg ScyllaConfig) (*Scylla, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cluster := gocql.NewCluster(cfg.Hosts...)
	cluster.Consistency, _ = gocql.ParseConsistencyWrapper(cfg.Consistency)
	cluster.Timeout = cfg.Timeout
	session, err := gocqlx.WrapSession(cluster.CreateSession())
	if err != nil {
		return nil, fmt.Errorf("history: connect to Scylla %v: %w", cfg.Hosts, err)
	}
	for _, q := range ScyllaSchema(cfg.Keyspace, cfg.ReplicationFactor) {
		if err := session.ExecStmt(q); err != nil {
			session.Close()
			return nil, fmt.Errorf("history: Scylla schema: %w", err)
		}
	}
	for _, q := range scyllaUpgrades(cfg.Keyspace) {
		if err := session.ExecStmt(q); err != nil && !columnExists(err) {
			session.Close()
			return nil, fmt.Errorf("history: Scylla schema upgrade: %w", err)
		}
	}
	return &Scylla{cfg: cfg, session: session, stmt: buildStatements(cfg.Keyspace)}, nil
}

// Append writes messages with their kind's retention as TTL.
func (s *Scylla) Append(ctx context.Context, msgs []*clientpb.Message) error {
	latest := map[string]uint64{}
	var conflicts []Conflict
	for _, m := range msgs {
		r := toRow(m)
		ttl := int64(s.cfg.Retention.For(m.GetConversation()) / time.Second)
		q := s.session.ContextQuery(ctx, s.stmt.insert, s.stmt.insertNames).BindStructMap(r, map[string]any{"ttl": ttl})
		var stored scyllaRow
		applied, err := q.GetCASRelease(&stored)
		if err != nil {
			return fmt.Errorf("history: insert %s#%d: %w", m.GetConversation(), m.GetSeq(), err)
		}
		if !applied && stored.ID != m.GetId() {
			conflicts = append(conflicts, Conflict{m.GetConversation(), m.GetSeq(), stored.ID, m.GetId()})
			continue
		}
		if t := target(m); t != 0 {
			// Written again on a repeat: the same row.
			q := s.session.ContextQuery(ctx, s.stmt.insertChange, s.stmt.insertChangeNames).BindMap(map[string]any{
				"conversation": m.GetConversation(), "bucket": bucketOf(t), "target": int64(t), "seq": int64(m.GetSeq()), "ttl": ttl,
			})
			if err := q.ExecRelease(); err != nil {
				return fmt.Errorf("history: index change %s#%d: %w", m.GetConversation(), m.GetSeq(), err)
			}
		}
		if m.GetSeq() > latest[m.GetConversation()] {
			latest[m.GetConversation()] = m.GetSeq()
		}
	}
	for conv, seq := range latest {
		cur, err := s.latest(ctx, conv)
		if err != nil {
			return err
		}
		if seq <= cur {
			continue
		}
		q := s.session.ContextQuery(ctx, s.stmt.latest, s.stmt.latestNames).BindMap(map[string]any{"latest": int64(seq), "conversation": conv})
		if err := q.ExecRelease(); err != nil {
			return fmt.Errorf("history: latest of %s: %w", conv, err)
		}
	}
	if len(conflicts) > 0 {
		return &ConflictError{Conflicts: conflicts}
	}
	return nil
}

// Latest returns the highest stored seq of every conversation: a full
// scan of the conversations table, for restoring sequence counters.
func (s *Scylla) Latest(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	iter := s.session.ContextQuery(ctx, s.stmt.allLatest, nil).Iter()
	var conv string
	var latest int64
	for iter.Scan(&conv, &latest) {
		out[conv] = uint64(latest)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("history: latest of every conversation: %w", err)
	}
	return out, nil
}

func (s *Scylla) latest(ctx context.Context, conv string) (uint64, error) {
	var latest int64
	q := s.session.ContextQuery(ctx, s.stmt.readLatest, s.stmt.readLatestNames).BindMap(map[string]any{"conversation": conv})
	if err := q.GetRelease(&latest); err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return 0, fmt.Errorf("history: latest of %s: %w", conv, err)
	}
	return uint64(latest), nil
}

func (s *Scylla) page(ctx context.Context, stmt string, names []string, conv string, bucket int64, seq uint64, limit int) ([]scyllaRow, error) {
	var rows []scyllaRow
	q := s.session.ContextQuery(ctx, stmt, names).BindMap(map[string]any{"conversation": conv, "bucket": bucket, "seq": int64(seq), "lim": limit})
	if err := q.SelectRelease(&rows); err != nil {
		return nil, fmt.Errorf("history: read %s: %w", conv, err)
	}
	return rows, nil
}

// After reads forward bucket by bucket up to the conversation's latest.
func (s *Scylla) After(ctx context.Context, conv string, after uint64, limit int) ([]*clientpb.Message, bool, error) {
	if after == math.MaxUint64 {
		return nil, false, nil // nothing comes after; after+1 would wrap
	}
	limit = PageSize(limit)
	latest, err := s.latest(ctx, conv)
	if err != nil {
		return nil, false, err
	}
	var out []*clientpb.Message
	for b := bucketOf(after + 1); b <= bucketOf(latest) && len(out) <= limit; b++ {
		rows, err := s.page(ctx, s.stmt.after, s.stmt.afterNames, conv, b, after, limit+1-len(out))
		if err != nil {
			return nil, false, err
		}
		for _, r := range rows {
			out = append(out, r.message())
		}
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// Before reads backward bucket by bucket from before (or the latest).
func (s *Scylla) Before(ctx context.Context, conv string, before uint64, limit int) ([]*clientpb.Message, bool, error) {
	limit = PageSize(limit)
	latest, err := s.latest(ctx, conv)
	if err != nil {
		return nil, false, err
	}
	if before == 0 || before > latest+1 {
		before = latest + 1
	}
	var out []*clientpb.Message
	for b := bucketOf(before); b >= 0 && len(out) <= limit && before > 1; b-- {
		rows, err := s.page(ctx, s.stmt.before, s.stmt.beforeNames, conv, b, before, limit+1-len(out))
		if err != nil {
			return nil, false, err
		}
		for _, r := range rows {
			out = append(out, r.message())
		}
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, more, nil
}

// Changes reads the changes index over the buckets of [from, to], then
// the message of each change (a few per changed message: edits are
// bounded by the edit window).
func (s *Scylla) Changes(ctx context.Context, conv string, from, to uint64) (map[uint64]*clientpb.Message, error) {
	out := map[uint64]*clientpb.Message{}
	if from > to {
		return out, nil
	}
	for b := bucketOf(from); b <= bucketOf(to); b++ {
		iter := s.session.ContextQuery(ctx, s.stmt.changes, s.stmt.changesNames).
			BindMap(map[string]any{"conversation": conv, "bucket": b, "from": int64(from), "to": int64(to)}).Iter()
		var t, seq int64
		var found [][2]int64
		for iter.Scan(&t, &seq) {
			found = append(found, [2]int64{t, seq})
		}
		if err := iter.Close(); err != nil {
			return nil, fmt.Errorf("history: changes of %s#%d..%d: %w", conv, from, to, err)
		}
		for _, f := range found {
			var r scyllaRow
			q := s.session.ContextQuery(ctx, s.stmt.one, s.stmt.oneNames).
				BindMap(map[string]any{"conversation": conv, "bucket": bucketOf(uint64(f[1])), "seq": f[1]})
			if err := q.GetRelease(&r); errors.Is(err, gocql.ErrNotFound) {
				continue // expired
			} else if err != nil {
				return nil, fmt.Errorf("history: change %s#%d: %w", conv, f[1], err)
			}
			if m := r.message(); target(m) == uint64(f[0]) {
				out[uint64(f[0])] = latestChange(out[uint64(f[0])], m)
			}
		}
	}
	return out, nil
}

// SaveRead writes user's read position with seq as the write timestamp:
// of two positions written, the higher wins.
func (s *Scylla) SaveRead(ctx context.Context, user, conversation string, seq uint64) error {
	q := s.session.ContextQuery(ctx, s.stmt.saveRead, s.stmt.saveReadNames).
		BindMap(map[string]any{"ts": int64(seq), "seq": int64(seq), "reader": user, "conversation": conversation})
	if err := q.ExecRelease(); err != nil {
		return fmt.Errorf("history: save read position of %s in %s: %w", user, conversation, err)
	}
	return nil
}

// ReadPositions reads user's positions in conversations (one partition).
func (s *Scylla) ReadPositions(ctx context.Context, user string, conversations ...string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(conversations))
	if len(conversations) == 0 {
		return out, nil
	}
	iter := s.session.ContextQuery(ctx, s.stmt.reads, s.stmt.readsNames).
		BindMap(map[string]any{"reader": user, "conversation": conversations}).Iter()
	var conv string
	var seq int64
	for iter.Scan(&conv, &seq) {
		out[conv] = uint64(seq)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("history: read positions of %s: %w", user, err)
	}
	return out, nil
}

// Close closes the session.
func (s *Scylla) Close() error {
	s.session.Close()
	return nil
}

// describe names the store for logs.
func (s *Scylla) String() string {
	return "scylla(" + strings.Join(s.cfg.Hosts, ",") + "/" + s.cfg.Keyspace + ")"
}
