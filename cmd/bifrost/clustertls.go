package main

import (
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
)

// clusterTLSFlags are the cluster's own mutual TLS: a node's (or the admin
// command's) certificate and key, and the CA that signs every member's. All
// three or none.
type clusterTLSFlags struct{ cert, key, ca string }

func (f *clusterTLSFlags) register(fs *flag.FlagSet, who string) {
	fs.StringVar(&f.cert, "cluster-tls-cert", "", "PEM certificate "+who+" presents to cluster members, signed by -cluster-tls-ca (with -cluster-tls-key and -cluster-tls-ca: mutual TLS for gRPC and Raft between nodes)")
	fs.StringVar(&f.key, "cluster-tls-key", "", "PEM private key of -cluster-tls-cert")
	fs.StringVar(&f.ca, "cluster-tls-ca", "", "PEM certificate of the CA that signs every cluster member's certificate; peers without one are refused")
}

// load reads the files; nil credentials (plaintext) when no flag is set.
func (f *clusterTLSFlags) load() (*clustertls.Credentials, error) {
	files := clustertls.Files{Cert: f.cert, Key: f.key, CA: f.ca}
	if missing := files.Missing(); len(missing) > 0 {
		for i, m := range missing {
			missing[i] = "-cluster-tls-" + m
		}
		return nil, fmt.Errorf("-cluster-tls-cert, -cluster-tls-key and -cluster-tls-ca go together; missing %s", strings.Join(missing, ", "))
	}
	creds, err := clustertls.Load(files)
	if err != nil {
		return nil, fmt.Errorf("invalid -cluster-tls-*: %v", err)
	}
	return creds, nil
}

// gossipKeyFlag is -gossip-key-file: a file holding the base64 of a 16, 24
// or 32 byte key (say, from `openssl rand -base64 32`) that encrypts gossip;
// members without it are ignored.
type gossipKeyFlag struct{ path string }

func (f *gossipKeyFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&f.path, "gossip-key-file", "", "file with the base64 of a 16, 24 or 32 byte key that encrypts and authenticates gossip; every member needs the same key (empty: plaintext gossip)")
}

// load reads the key; nil without the flag.
func (f *gossipKeyFlag) load() ([]byte, error) {
	if f.path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("invalid -gossip-key-file: %v", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("invalid -gossip-key-file %s: want base64: %v", f.path, err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("invalid -gossip-key-file %s: the key is %d bytes, want 16, 24 or 32", f.path, n)
	}
	return key, nil
}
