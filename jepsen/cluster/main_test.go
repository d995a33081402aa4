package cluster

import (
	"os"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}
