package dbinit

import (
	"strings"
	"testing"
)

func TestReceiveQueueFromEnv(t *testing.T) {
	for _, c := range []struct {
		env, want string
		bad       bool
	}{
		{env: "16", want: `"ReceiveQueueLength": 16,`},
		{env: "4096", want: `"ReceiveQueueLength": 4096,`},
		{env: "3", want: `"ReceiveQueueLength": 256,`, bad: true},
		{env: "lots", want: `"ReceiveQueueLength": 256,`, bad: true},
		{env: "", want: `"ReceiveQueueLength": 256,`, bad: true},
	} {
		t.Setenv(ReceiveQueueEnv, c.env)
		js, err := settings()
		if (err != nil) != c.bad || !strings.Contains(js, c.want) {
			t.Errorf("%s=%q: settings %s, error %v; want %s, error %v", ReceiveQueueEnv, c.env, js, err, c.want, c.bad)
		}
	}
}
