package discovery_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/secure"
)

// TestEtcdTLSAndAuth reaches an etcd that serves clients over TLS and
// requires client certificates, then enables etcd's authentication:
// only the right user and password get through.
func TestEtcdTLSAndAuth(t *testing.T) {
	ca := testinfra.NewCA(t, "etcd")
	cert, key := ca.Issue("etcd")
	e, err := embedded.StartEtcd(embedded.EtcdConfig{
		Dir:        filepath.Join(t.TempDir(), "etcd"),
		ClientAddr: testinfra.FreeAddr(t),
		PeerAddr:   testinfra.FreeAddr(t),
		CertFile:   cert, KeyFile: key, ClientCAFile: ca.File,
		BcryptCost: uint(bcrypt.MinCost), // a loaded machine is slow enough
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	clientCert, clientKey := ca.Issue("laneim")
	tlsOK := secure.TLS{CA: ca.File, Cert: clientCert, Key: clientKey}
	cfg := discovery.Config{Endpoints: e.Endpoints(), TLS: tlsOK}

	c, err := discovery.Dial(cfg)
	if err != nil {
		t.Fatalf("etcd over mutual TLS: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.UserAdd(ctx, "root", "root-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()

	authed := cfg
	authed.Username, authed.Password = "root", "root-pw"
	c, err = discovery.Dial(authed)
	if err != nil {
		t.Fatalf("etcd with TLS and user: %v", err)
	}
	if _, err := discovery.Comets(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Close()

	wrong := authed
	wrong.Password = "nope"
	noCert := authed
	noCert.TLS = secure.TLS{CA: ca.File}
	for name, bad := range map[string]discovery.Config{
		"no user":        cfg,
		"wrong password": wrong,
		"no client cert": noCert,
		"plain":          {Endpoints: e.Endpoints(), Username: "root", Password: "root-pw"},
	} {
		// A refusal at the TLS handshake shows only when the check times
		// out (5s): the cases run at once.
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if c, err := discovery.Dial(bad); err == nil {
				c.Close()
				t.Errorf("%s: accepted", name)
			} else if strings.Contains(err.Error(), "root-pw") || strings.Contains(err.Error(), "nope") {
				t.Errorf("%s: error shows the password: %v", name, err)
			}
		})
	}
	if s := authed.String(); strings.Contains(s, "root-pw") {
		t.Errorf("Config.String shows the password: %s", s)
	}
}
