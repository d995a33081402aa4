package retain_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// startRetainCluster starts stores with the retain coprocessor.
func startRetainCluster(t testing.TB, stores int) *rangestest.Cluster {
	t.Helper()
	return rangestest.Start(t, stores, rangestest.Options{
		Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{kvpb.Keyspace_KEYSPACE_RETAIN: retain.New},
	})
}
