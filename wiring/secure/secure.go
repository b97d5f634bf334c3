// Package secure turns laneIM's TLS settings (PEM files named by flags)
// into crypto/tls configurations, for the clients of Kafka, Redis, etcd
// and the api gateway, and for the servers laneIM runs itself (the api
// gateway, the comet). It also holds the SCRAM client Sarama needs for
// SASL/SCRAM, written on the standard library alone.
package secure

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLS is how a client reaches a server over TLS. The zero value is plain
// TCP. Naming a CA or a client certificate turns TLS on by itself.
type TLS struct {
	// Enabled turns TLS on, trusting the system's roots unless CA is set.
	Enabled bool
	// CA is a PEM file of the certificate authorities that sign the
	// server's certificate (empty: the system's roots).
	CA string
	// Cert and Key are a PEM client certificate and its key, presented
	// to servers that verify clients (mutual TLS). Both or neither.
	Cert, Key string
	// ServerName is the name the server's certificate must carry (empty:
	// the host the client dials).
	ServerName string
}

// On tells whether TLS is used.
func (t TLS) On() bool { return t.Enabled || t.CA != "" || t.Cert != "" || t.Key != "" }

// Validate reports settings that cannot work, naming the link (e.g.
// "kafka") in the message.
func (t TLS) Validate(link string) error {
	if (t.Cert == "") != (t.Key == "") {
		return fmt.Errorf("%s: TLS client certificate and key go together (give both or neither)", link)
	}
	return nil
}

// Client returns the client configuration, or nil when TLS is off.
func (t TLS) Client() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	if err := t.Validate("tls"); err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CA != "" {
		pool, err := LoadPool(t.CA)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: client certificate %s: %w", t.Cert, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Server returns the configuration of a TLS server presenting the PEM
// certificate cert with its key. With clientCA (a PEM file), clients
// must present a certificate signed by one of its authorities (mutual
// TLS); without it, no client certificate is asked for.
func Server(cert, key, clientCA string) (*tls.Config, error) {
	if cert == "" || key == "" {
		return nil, errors.New("tls: a server needs both a certificate and a key")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("tls: server certificate %s: %w", cert, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if clientCA != "" {
		pool, err := LoadPool(clientCA)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// LoadPool reads a PEM file of certificates into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}
