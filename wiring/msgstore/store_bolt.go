package msgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

var (
	bucketMessages = []byte("messages") // conversation \x00 seq(8, big endian) -> Message
	bucketLatest   = []byte("latest")   // conversation -> seq(8)
	// bucketChanges indexes edits and recalls by the message they change:
	// conversation \x00 target seq(8) change seq(8) -> changeEdit or
	// changeRecall.
	bucketChanges = []byte("changes")
	// bucketReads holds read positions: user \x00 conversation -> seq(8).
	bucketReads = []byte("reads")
)

const (
	changeEdit   = 'e'
	changeRecall = 'r'
)

// Bolt is a Store in a bbolt file: embedded, durable, one process at a
// time. Concurrent Appends are committed together (bbolt's Batch).
type Bolt struct {
	db        *bolt.DB
	retention Retention
	stop      chan struct{}
	wg        sync.WaitGroup
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (or creates) the store at path. With a non-zero
// retention, a goroutine owned by the store deletes expired messages
// every sweep until Close.
func OpenBolt(path string, retention Retention, sweep time.Duration) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("history: open %s (another process may hold it): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		indexed := tx.Bucket(bucketChanges) != nil
		for _, b := range [][]byte{bucketMessages, bucketLatest, bucketChanges, bucketReads} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if !indexed {
			// A file from before the index: index what it holds.
			return indexChanges(tx)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("history: init %s: %w", path, err)
	}
	// Concurrent Appends share one commit (and one fsync); waiting 1ms for
	// company instead of bbolt's 10ms keeps a lone writer's latency low.
	db.MaxBatchDelay = time.Millisecond
	b := &Bolt{db: db, retention: retention, stop: make(chan struct{})}
	if retention != (Retention{}) {
		if sweep <= 0 {
			sweep = time.Minute
		}
		b.wg.Add(1)
		go b.sweeper(sweep)
	}
	return b, nil
}

func key(conversation string, seq uint64) []byte {
	k := make([]byte, len(conversation)+1+8)
	copy(k, conversation)
	binary.BigEndian.PutUint64(k[len(conversation)+1:], seq)
	return k
}

func prefix(conversation string) []byte { return append([]byte(conversation), 0) }

// changeKey is m's key in bucketChanges and its value's kind, or nil when
// m changes nothing.
func changeKey(m *clientpb.Message) ([]byte, byte) {
	t := target(m)
	if t == 0 {
		return nil, 0
	}
	kind := byte(changeEdit)
	if m.GetRecalls() != 0 {
		kind = changeRecall
	}
	return binary.BigEndian.AppendUint64(key(m.GetConversation(), t), m.GetSeq()), kind
}

// indexChanges puts every stored edit and recall in bucketChanges.
func indexChanges(tx *bolt.Tx) error {
	cb := tx.Bucket(bucketChanges)
	return tx.Bucket(bucketMessages).ForEach(func(_, v []byte) error {
		m, err := decode(v)
		if err != nil {
			return nil // unreadable either way; After reports it
		}
		if k, kind := changeKey(m); k != nil {
			return cb.Put(k, []byte{kind})
		}
		return nil
	})
}

// Append stores messages, skipping those stored already; see
// Store.Append for a stored one with another id.
func (b *Bolt) Append(_ context.Context, msgs []*clientpb.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	vals := make([][]byte, len(msgs))
	for i, m := range msgs {
		v, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("history: encode %s#%d: %w", m.GetConversation(), m.GetSeq(), err)
		}
		vals[i] = v
	}
	var conflicts []Conflict
	err := b.db.Batch(func(tx *bolt.Tx) error {
		conflicts = conflicts[:0] // Batch may run the function again
		mb, lb, cb := tx.Bucket(bucketMessages), tx.Bucket(bucketLatest), tx.Bucket(bucketChanges)
		for i, m := range msgs {
			k := key(m.GetConversation(), m.GetSeq())
			if v := mb.Get(k); v != nil {
				if stored, err := decode(v); err != nil || stored.GetId() != m.GetId() {
					conflicts = append(conflicts, Conflict{m.GetConversation(), m.GetSeq(), stored.GetId(), m.GetId()})
				}
				continue
			}
			if err := mb.Put(k, vals[i]); err != nil {
				return err
			}
			if ck, kind := changeKey(m); ck != nil {
				if err := cb.Put(ck, []byte{kind}); err != nil {
					return err
				}
			}
			conv := []byte(m.GetConversation())
			if cur := lb.Get(conv); cur == nil || binary.BigEndian.Uint64(cur) < m.GetSeq() {
				if err := lb.Put(conv, binary.BigEndian.AppendUint64(nil, m.GetSeq())); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: append %d messages: %w", len(msgs), err)
	}
	if len(conflicts) > 0 {
		return &ConflictError{Conflicts: conflicts}
	}
	return nil
}

func decode(v []byte) (*clientpb.Message, error) {
	m := new(clientpb.Message)
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("history: stored message does not decode: %w", err)
	}
	return m, nil
}

// After returns messages with seq > after, oldest first.
func (b *Bolt) After(_ context.Context, conversation string, after uint64, limit int) ([]*clientpb.Message, bool, error) {
	if after == math.MaxUint64 {
		return nil, false, nil // nothing comes after; after+1 would wrap
	}
	limit = PageSize(limit)
	var out []*clientpb.Message
	more := false
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMessages).Cursor()
		p := prefix(conversation)
		for k, v := c.Seek(key(conversation, after+1)); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if len(out) == limit {
				more = true
				return nil
			}
			m, err := decode(v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	return out, more, err
}

// Before returns the newest messages with seq < before (0: no bound).
func (b *Bolt) Before(_ context.Context, conversation string, before uint64, limit int) ([]*clientpb.Message, bool, error) {
	limit = PageSize(limit)
	var out []*clientpb.Message
	more := false
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMessages).Cursor()
		p := prefix(conversation)
		var k, v []byte
		if before == 0 {
			// Position after the conversation's last key.
			k, v = c.Seek(append(append([]byte{}, conversation...), 1))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		} else {
			k, v = c.Seek(key(conversation, before))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Prev() {
			if len(out) == limit {
				more = true
				break
			}
			m, err := decode(v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	// Newest first was convenient to read; return sequence order.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, more, err
}

// Changes returns the latest change of each message with seq in [from,
// to]: a range of the changes index, then each winner's message.
func (b *Bolt) Changes(_ context.Context, conversation string, from, to uint64) (map[uint64]*clientpb.Message, error) {
	out := map[uint64]*clientpb.Message{}
	if from > to {
		return out, nil
	}
	err := b.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMessages)
		c := tx.Bucket(bucketChanges).Cursor()
		p := prefix(conversation)
		for k, _ := c.Seek(key(conversation, from)); k != nil && bytes.HasPrefix(k, p) && len(k) == len(p)+16; k, _ = c.Next() {
			t := binary.BigEndian.Uint64(k[len(p):])
			if t > to {
				break
			}
			v := mb.Get(key(conversation, binary.BigEndian.Uint64(k[len(p)+8:])))
			if v == nil {
				continue // swept
			}
			m, err := decode(v)
			if err != nil {
				return err
			}
			if target(m) == t {
				out[t] = latestChange(out[t], m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: changes of %s#%d..%d: %w", conversation, from, to, err)
	}
	return out, nil
}

func readKey(user, conversation string) []byte {
	return append(append(append([]byte{}, user...), 0), conversation...)
}

// SaveRead raises user's read position in conversation to seq.
func (b *Bolt) SaveRead(_ context.Context, user, conversation string, seq uint64) error {
	k := readKey(user, conversation)
	err := b.db.Batch(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketReads)
		if cur := rb.Get(k); len(cur) == 8 && binary.BigEndian.Uint64(cur) >= seq {
			return nil
		}
		return rb.Put(k, binary.BigEndian.AppendUint64(nil, seq))
	})
	if err != nil {
		return fmt.Errorf("history: save read position of %s in %s: %w", user, conversation, err)
	}
	return nil
}

// ReadPositions returns user's saved read positions in conversations.
func (b *Bolt) ReadPositions(_ context.Context, user string, conversations ...string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(conversations))
	err := b.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketReads)
		for _, c := range conversations {
			if v := rb.Get(readKey(user, c)); len(v) == 8 {
				out[c] = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: read positions of %s: %w", user, err)
	}
	return out, nil
}

// Latest returns the highest stored seq of every conversation.
func (b *Bolt) Latest(_ context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLatest).ForEach(func(k, v []byte) error {
			out[string(k)] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return out, err
}

// Sweep deletes messages older than their conversation's retention and
// returns how many it deleted.
func (b *Bolt) Sweep(now time.Time) (int, error) {
	deleted := 0
	err := b.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMessages).Cursor()
		for k, v := c.First(); k != nil; {
			i := bytes.IndexByte(k, 0)
			var expired *clientpb.Message // decoded once, to drop its index entry too
			if i > 0 {
				if ttl := b.retention.For(string(k[:i])); ttl > 0 {
					m, err := decode(v)
					if err == nil && time.UnixMilli(m.GetServerTimeUnixMs()).Add(ttl).Before(now) {
						expired = m
					}
				}
			}
			if expired == nil {
				k, v = c.Next()
				continue
			}
			next := append([]byte(nil), k...)
			if ck, _ := changeKey(expired); ck != nil {
				if err := tx.Bucket(bucketChanges).Delete(ck); err != nil {
					return err
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
			deleted++
			k, v = c.Seek(next)
		}
		return nil
	})
	return deleted, err
}

func (b *Bolt) sweeper(every time.Duration) {
	defer b.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			_, _ = b.Sweep(now)
		}
	}
}

// Close stops the sweeper and closes the file.
func (b *Bolt) Close() error {
	select {
	case <-b.stop:
		return errors.New("history: closed twice")
	default:
	}
	close(b.stop)
	b.wg.Wait()
	return b.db.Close()
}
