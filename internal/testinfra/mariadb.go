package testinfra

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
)

// MariaDB is a MariaDB server started for a test, with row-based binary
// logging, a database and two users: an admin (all privileges) and a
// sync user with exactly what the binlog worker needs.
type MariaDB struct {
	// Addr is host:port on loopback.
	Addr string
	// Socket is the server's unix socket (root, no password).
	Socket   string
	Database string
	// AdminUser/AdminPassword may do anything; SyncUser/SyncPassword has
	// SELECT, REPLICATION SLAVE and BINLOG MONITOR only.
	AdminUser, AdminPassword string
	SyncUser, SyncPassword   string

	cmd  *exec.Cmd
	kill func() // kills cmd and waits for its end
	dir  string
}

func findBinary(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, d := range []string{"/usr/sbin", "/usr/bin"} {
			if _, err := os.Stat(filepath.Join(d, n)); err == nil {
				return filepath.Join(d, n), nil
			}
		}
	}
	return "", fmt.Errorf("%s not found: run deploy/test.sh, which installs Debian's mariadb-server", names[0])
}

// StartMariaDB starts a MariaDB server in a temporary folder on a free
// port with binlog_format=ROW and binlog_row_image=FULL, creates database
// with the schema statements, and stops it when the test ends. It fails
// the test if MariaDB is not installed.
func StartMariaDB(t testing.TB, database string, schema []string) *MariaDB {
	t.Helper()
	installDB, err := findBinary("mariadb-install-db", "mysql_install_db")
	if err != nil {
		t.Fatal(err)
	}
	server, err := findBinary("mariadbd", "mysqld")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "laneim-mariadb-")
	if err != nil {
		t.Fatal(err)
	}
	m := &MariaDB{
		Socket: filepath.Join(dir, "mysql.sock"), Database: database, dir: dir,
		AdminUser: "admin", AdminPassword: "admin-pw", SyncUser: "laneim_sync", SyncPassword: "sync-pw",
	}
	t.Cleanup(m.stop)
	// Its own temporary folder: installs running at once (parallel tests)
	// otherwise collide on temporary table names in /tmp.
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	install := exec.Command(installDB, "--no-defaults", "--datadir="+filepath.Join(dir, "data"),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--user=root")
	install.Env = append(os.Environ(), "TMPDIR="+filepath.Join(dir, "tmp"))
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port := FreePort(t)
	m.Addr = "127.0.0.1:" + strconv.Itoa(port)
	cnf := filepath.Join(dir, "my.cnf")
	err = os.WriteFile(cnf, []byte(fmt.Sprintf(`[mysqld]
datadir=%[1]s/data
socket=%[1]s/mysql.sock
port=%[2]d
bind-address=127.0.0.1
server_id=1
log_bin=%[1]s/data/binlog
binlog_format=ROW
binlog_row_image=FULL
tmpdir=%[1]s/tmp
pid-file=%[1]s/mysqld.pid
skip-name-resolve
user=root
innodb_buffer_pool_size=64M
innodb_flush_log_at_trx_commit=2
sync_binlog=0
`, dir, port)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(server, "--defaults-file="+cnf)
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout, m.cmd.Stderr = log, log
	exited, stop, err := start(m.cmd)
	log.Close() // the server has its own descriptor
	if err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	m.kill = stop
	var root *client.Conn
	err = poll(30*time.Second, func() error {
		select {
		case <-exited:
			return giveUp{errors.New("mariadbd exited")}
		default:
		}
		var err error
		root, err = client.Connect(m.Socket, "root", "", "")
		return err
	})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("mariadbd did not start: %v\n%s", err, b)
	}
	defer root.Close()
	stmts := []string{
		"CREATE DATABASE " + database,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", m.AdminUser, m.AdminPassword),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'%%'", m.AdminUser),
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", m.SyncUser, m.SyncPassword),
		fmt.Sprintf("GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", m.SyncUser),
		"USE " + database,
	}
	stmts = append(stmts, schema...)
	for _, s := range stmts {
		if _, err := root.Execute(s); err != nil {
			t.Fatalf("mariadb: %s: %v", strings.TrimSpace(s), err)
		}
	}
	return m
}

// Admin connects as the admin user to the database.
func (m *MariaDB) Admin(t testing.TB) *client.Conn {
	t.Helper()
	c, err := client.Connect(m.Addr, m.AdminUser, m.AdminPassword, m.Database)
	if err != nil {
		t.Fatalf("mariadb admin: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Exec runs statements as the admin user, failing the test on error.
func (m *MariaDB) Exec(t testing.TB, c *client.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := c.Execute(s); err != nil {
			t.Fatalf("mariadb: %s: %v", s, err)
		}
	}
}

func (m *MariaDB) stop() {
	if m.kill != nil {
		m.kill()
	}
	_ = os.RemoveAll(m.dir)
}
