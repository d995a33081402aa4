package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFileOffsetClock: the jepsen clock-skew nemesis's offset file is read
// as a duration; absent or empty is no offset; anything else fails the start.
func TestFileOffsetClock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clock-offset")
	for _, tc := range []struct {
		content string // "-" : no file
		want    time.Duration
		bad     bool
	}{
		{content: "-", want: 0},
		{content: "", want: 0},
		{content: "11m\n", want: 11 * time.Minute},
		{content: "-10m", want: -10 * time.Minute},
		{content: "eleven", bad: true},
	} {
		_ = os.Remove(path)
		if tc.content != "-" {
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c, err := newFileOffsetClock(path)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), "want a duration") {
				t.Fatalf("%q: error %v, want a clear refusal", tc.content, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.content, err)
		}
		if got := time.Until(c.Now()); got < tc.want-time.Minute/2 || got > tc.want+time.Minute/2 {
			t.Fatalf("%q: the clock is off by %v, want %v", tc.content, got, tc.want)
		}
	}
}
