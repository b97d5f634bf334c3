package binlogsync

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/redis/go-redis/v9"
)

// DefaultPositionKey is the Redis key that holds the synced binlog position.
const DefaultPositionKey = "binlogsync:position"

// Positions stores the binlog position the directory reflects. It lives
// in the same Redis as the directory, written after the rows it covers,
// so a crash can only make the worker apply events again (harmless: every
// change is idempotent), never skip them.
type Positions struct {
	rdb redis.UniversalClient
	key string
}

// NewPositions returns position storage under key in rdb.
func NewPositions(rdb redis.UniversalClient, key string) *Positions {
	if key == "" {
		key = DefaultPositionKey
	}
	return &Positions{rdb: rdb, key: key}
}

// Load returns the saved position; ok is false when none is saved.
func (p *Positions) Load(ctx context.Context) (pos mysql.Position, ok bool, err error) {
	v, err := p.rdb.Get(ctx, p.key).Result()
	if errors.Is(err, redis.Nil) {
		return mysql.Position{}, false, nil
	}
	if err != nil {
		return mysql.Position{}, false, fmt.Errorf("binlogsync: load position: %w", err)
	}
	name, off, found := strings.Cut(v, ":")
	n, perr := strconv.ParseUint(off, 10, 32)
	if !found || perr != nil {
		return mysql.Position{}, false, fmt.Errorf("binlogsync: bad saved position %q in %s", v, p.key)
	}
	return mysql.Position{Name: name, Pos: uint32(n)}, true, nil
}

// Save records pos.
func (p *Positions) Save(ctx context.Context, pos mysql.Position) error {
	if err := p.rdb.Set(ctx, p.key, pos.Name+":"+strconv.FormatUint(uint64(pos.Pos), 10), 0).Err(); err != nil {
		return fmt.Errorf("binlogsync: save position %s: %w", pos, err)
	}
	return nil
}

// Reset forgets the position, so the next start takes a new snapshot.
func (p *Positions) Reset(ctx context.Context) error {
	if err := p.rdb.Del(ctx, p.key).Err(); err != nil {
		return fmt.Errorf("binlogsync: reset position: %w", err)
	}
	return nil
}
