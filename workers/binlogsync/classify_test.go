package binlogsync_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	pingcap "github.com/pingcap/errors"

	"github.com/laneim/laneim/workers/binlogsync"
)

// A position is gone when, and only when, the server's error code says so.
func TestIsPositionGone(t *testing.T) {
	purged := mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG,
		"Could not find first log file name in binary log index file")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"MyError 1236", purged, true},
		// How canal hands it up: pingcap/errors.Trace in runSyncBinlog and run.
		{"MyError 1236 traced by canal", pingcap.Trace(pingcap.Trace(purged)), true},
		{"MyError 1236 wrapped with %w", fmt.Errorf("binlogsync: %w", purged), true},
		{"another MyError code", pingcap.Trace(mysql.NewError(mysql.ER_ACCESS_DENIED_ERROR, "Access denied for user 'sync'")), false},
		{"text containing 1236", errors.New("read 1236 bytes: connection reset by peer"), false},
		{"the message without the code", errors.New("Could not find first log file name in binary log index file"), false},
		{"a code only mentioned with %v", fmt.Errorf("binlogsync: %v", purged), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := binlogsync.IsPositionGone(tt.err); got != tt.want {
				t.Errorf("IsPositionGone(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
