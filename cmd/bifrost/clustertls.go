package main

import (
	"flag"
	"fmt"
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
