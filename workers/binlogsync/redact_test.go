package binlogsync_test

import (
	"strings"
	"testing"

	"github.com/laneim/laneim/workers/binlogsync"
)

// TestDSNPasswordNeverInErrors: whatever is wrong with a DSN, ParseDSN's
// error and RedactDSN never show its password.
func TestDSNPasswordNeverInErrors(t *testing.T) {
	const pw = "hunter2-Secret"
	bad := []string{
		"mysql://sync:" + pw + "@",                     // no host
		"mysql://sync:" + pw + "@db:3306/",             // no database
		"postgres://sync:" + pw + "@db:5432/app",       // wrong scheme
		"mysql://sync:" + pw + "@db:3306/app?flavor=x", // wrong flavor
		"mysql://sync:" + pw + "@db:3306/app?server_id=nope",
		"mysql://sync:" + pw + "%zz@db:3306/app", // bad escape: does not parse
		"mysql://sync:" + pw + "@db:port/app",    // bad port: does not parse
		"mysql://sync:" + pw + "@db:3306/app\x7f",
		"mysql:sync:" + pw + "@db:3306/app", // opaque
		"sync:" + pw + "@tcp(db:3306)/app",  // go-sql-driver form
		"sync:" + pw + "@db:3306/app",
		"//sync:" + pw + "@db:3306/app",
		" mysql://sync:" + pw + "@db:3306/app",
		"mysql://db:3306/app?password=" + pw + "&flavor=x",
	}
	for _, dsn := range bad {
		_, err := binlogsync.ParseDSN(dsn)
		if err == nil {
			t.Errorf("ParseDSN(%q) accepted", dsn)
			continue
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseDSN(%q) error shows the password: %v", dsn, err)
		}
		if r := binlogsync.RedactDSN(dsn); strings.Contains(r, "hunter2") {
			t.Errorf("RedactDSN(%q) = %s", dsn, r)
		}
	}
	if r := binlogsync.RedactDSN("mysql://sync:" + pw + "@db:3306/app"); !strings.Contains(r, "sync:xxxxx@db:3306/app") {
		t.Errorf("RedactDSN of a good DSN = %s, want the user, host and database kept", r)
	}
}
